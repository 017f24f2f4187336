-- luarun.json: encode/decode, round trips, errors with positions and paths.
local json = require "luarun.json"

local function roundtrip(v)
  return json.decode(json.encode(v))
end

local same = require("support.util").same

describe("luarun.json", function()
  describe("encode", function()
    it("encodes scalars", function()
      assert.equal("null", json.encode(nil))
      assert.equal("null", json.encode(json.null))
      assert.equal("true", json.encode(true))
      assert.equal("false", json.encode(false))
      assert.equal("42", json.encode(42))
      assert.equal("-7", json.encode(-7))
      assert.equal("9223372036854775807", json.encode(math.maxinteger))
      assert.equal("-9223372036854775808", json.encode(math.mininteger))
      assert.equal("1.5", json.encode(1.5))
      assert.equal("3.0", json.encode(3.0))
      assert.equal("-0.0", json.encode(-0.0))
      assert.equal("0.1", json.encode(0.1))
      assert.equal('"hi"', json.encode("hi"))
    end)

    it("escapes control characters, quotes and backslashes", function()
      assert.equal([["a\"b\\c\n\r\t\b\f\u0000\u001f/"]], json.encode('a"b\\c\n\r\t\b\f\0\31/'))
    end)

    it("keeps valid UTF-8 as it is", function()
      local s = "héllo \u{20AC} \u{1F600}"
      assert.equal('"' .. s .. '"', json.encode(s))
    end)

    it("encodes a table with keys 1..n as an array", function()
      assert.equal("[1,2,3]", json.encode({1, 2, 3}))
      assert.equal('[[],{}]', json.encode({json.array(), {}}))
    end)

    it("encodes other tables as objects, integer keys as strings", function()
      assert.equal('{"a":1}', json.encode({a = 1}))
      assert.equal('{"2":"x"}', json.encode({[2] = "x"}))
      local t = json.decode(json.encode({1, 2, x = 3}))
      assert.same({["1"] = 1, ["2"] = 2, x = 3}, t)
      -- a sparse array is an object
      local s = json.decode(json.encode({1, nil, 3}))
      assert.same({["1"] = 1, ["3"] = 3}, s)
    end)

    it("encodes an empty table as {} and json.array() as []", function()
      assert.equal("{}", json.encode({}))
      assert.equal("[]", json.encode(json.array()))
      assert.equal("[]", json.encode(json.array({})))
      local t = {1, 2}
      assert.equal(t, json.array(t))
      assert.equal("[1,2]", json.encode(t))
    end)

    it("honours any metatable with __jsontype = 'array'", function()
      assert.equal("[]", json.encode(setmetatable({}, {__jsontype = "array"})))
    end)

    it("json.array refuses a table with another metatable", function()
      assert.has_error(function() json.array(setmetatable({}, {})) end)
    end)

    it("raises on a marked array with other keys", function()
      local t = json.array({1, x = 2})
      assert.has_error(function() json.encode(t) end,
        "json.encode: table marked as an array has keys other than 1..n at value")
    end)

    it("encodes a shared (non-cyclic) table twice", function()
      local shared = {1}
      assert.equal('[[1],[1]]', json.encode({shared, shared}))
    end)

    it("names the path of a value it cannot encode", function()
      assert.has_error(function() json.encode({a = {b = {1, 2, print}}}) end,
        "json.encode: cannot encode a function at value.a.b[3]")
      assert.has_error(function() json.encode({["not ident"] = {coroutine.create(print)}}) end,
        'json.encode: cannot encode a thread at value["not ident"][1]')
      assert.has_error(function() json.encode(io.stdout) end,
        "json.encode: cannot encode a userdata at value")
    end)

    it("raises on keys that are neither strings nor integers", function()
      local ok, err = pcall(json.encode, {x = {[1.5] = true}})
      assert.is_false(ok)
      assert.matches("key of type number %(1.5%) is not a string or integer at value.x", err)
      ok, err = pcall(json.encode, {[true] = 1})
      assert.is_false(ok)
      assert.matches("key of type boolean", err)
    end)

    it("raises on cycles", function()
      local t = {a = {}}
      t.a.back = t
      assert.has_error(function() json.encode(t) end,
        "json.encode: cycle: a table contains itself at value.a.back")
    end)

    it("raises on NaN and infinities", function()
      assert.has_error(function() json.encode({0 / 0}) end, "json.encode: cannot encode NaN at value[1]")
      assert.has_error(function() json.encode({x = math.huge}) end,
        "json.encode: cannot encode infinity at value.x")
      assert.has_error(function() json.encode(-math.huge) end)
    end)

    it("raises on invalid UTF-8, naming the byte and path", function()
      assert.has_error(function() json.encode({s = "ab\xff"}) end,
        "json.encode: invalid UTF-8 in string (byte 3) at value.s")
      assert.has_error(function() json.encode("\xc0\x80") end) -- overlong NUL
      assert.has_error(function() json.encode("\xed\xa0\x80") end) -- surrogate
      assert.has_error(function() json.encode("\xf4\x90\x80\x80") end) -- > U+10FFFF
      assert.has_error(function() json.encode("\xe2\x82") end) -- truncated
      assert.has_error(function() json.encode({["\xff"] = 1}) end)
    end)

    it("raises on nesting deeper than 2048", function()
      local t = {}
      local cur = t
      for _ = 1, 3000 do cur[1] = {}; cur = cur[1] end
      assert.has_error(function() json.encode(t) end)
      local ok = pcall(json.encode, t)
      assert.is_false(ok)
    end)
  end)

  describe("decode", function()
    it("decodes scalars at the top level", function()
      assert.equal(1, json.decode("1"))
      assert.equal("integer", math.type(json.decode("1")))
      assert.equal("float", math.type(json.decode("1.0")))
      assert.equal("float", math.type(json.decode("1e2")))
      assert.equal(json.null, json.decode("null"))
      assert.equal(true, json.decode(" true "))
      assert.equal("x", json.decode('"x"'))
    end)

    it("decodes objects and arrays to tables, null to json.null", function()
      local v = json.decode('{"a": [1, null, {"b": false}], "c": {}}')
      assert.equal(1, v.a[1])
      assert.equal(json.null, v.a[2])
      assert.equal(false, v.a[3].b)
      assert.equal(3, #v.a)
      assert.same({}, v.c)
    end)

    it("decodes \\u escapes including NUL and surrogate pairs", function()
      assert.equal("a\0b", json.decode('"a\\u0000b"'))
      assert.equal("\u{1F600}", json.decode('"\\ud83d\\ude00"'))
      -- jansson refuses NUL in object keys (values are fine)
      assert.has_error(function() json.decode('{"\\u0000": 1}') end)
    end)

    it("keeps empty arrays as arrays when re-encoded", function()
      assert.equal('{"a":[]}', json.encode(json.decode('{"a":[]}')))
    end)

    it("raises with line, column and byte offset", function()
      local ok, err = pcall(json.decode, '{"a": [1, 2,\n  x]}')
      assert.is_false(ok)
      assert.matches("^json.decode: .* at line 2, column 3 %(byte 16%)$", err)
    end)

    it("raises on empty and truncated input", function()
      assert.has_error(function() json.decode("") end)
      assert.has_error(function() json.decode("[1, 2") end)
      assert.has_error(function() json.decode('{"a" 1}') end)
      assert.has_error(function() json.decode("[1] x") end)
    end)

    it("raises on invalid UTF-8 in the input", function()
      local ok, err = pcall(json.decode, '"\xff"')
      assert.is_false(ok)
      assert.matches("json.decode: .*line 1", err)
    end)

    it("raises clearly on very deep nesting instead of overflowing the stack", function()
      local ok, err = pcall(json.decode, string.rep("[", 100000) .. string.rep("]", 100000))
      assert.is_false(ok)
      assert.matches("maximum parsing depth", err)
      -- 2000 levels are fine
      local v = json.decode(string.rep("[", 2000) .. string.rep("]", 2000))
      assert.equal("table", type(v))
    end)

    it("raises on a non-string argument", function()
      assert.has_error(function() json.decode({}) end)
    end)

    -- Issue 23: jansson 2.14 reports a failed allocation as a syntax error with a
    -- made-up position (or "line -1, column -1"), and its lexer drops a byte when its
    -- token buffer cannot grow: a long number decoded to another value, and a string
    -- of 14 bytes that lost its closing quote was copied past its buffer (SIGSEGV).
    -- Here a luarun process decodes and encodes valid JSON once for each allocation
    -- it makes, with that allocation failing (test/failmalloc.c, preloaded).
    it("under allocation failure raises 'not enough memory', never a syntax error", function()
      local util = require "support.util"
      local build = os.getenv("LUARUN_BUILD") or "./build"
      local q = util.quote
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. q(dir)))
      local script = [==[
        local json = require "luarun.json"
        local text = '{"title":"hello, world!!","n":12345678901234567890.5,' ..
                     '"f":0.12345678901234567,"l":[1,2,{"x":"]==] .. ("y"):rep(30) .. [==["}]}'
        local ok, v = pcall(json.decode, text)
        if not ok then io.write("decode: ", tostring(v)) return end
        if v.title ~= "hello, world!!" or v.n ~= 12345678901234567890.5 or
           v.f ~= 0.12345678901234567 or v.l[3].x ~= ("y"):rep(30) then
          io.write("decoded wrong")
          return
        end
        local ok2, s = pcall(json.encode, v)
        if not ok2 then io.write("encode: ", tostring(s)) return end
        io.write("ok")
      ]==]
      local f = assert(io.open(dir .. "/script.lua", "wb"))
      f:write(script)
      f:close()
      local function slurp(name)
        local h = io.open(dir .. "/" .. name, "rb")
        if not h then return "" end
        local s = h:read("a")
        h:close()
        return s
      end
      -- Under the sanitizer build the shim comes ahead of the ASan runtime.
      local asan = os.getenv("LUARUN_CHILD_ASAN_OPTIONS")
      local env = "env -u LD_PRELOAD " .. (asan and "ASAN_OPTIONS=" .. q(asan .. ":verify_asan_link_order=0") or "") ..
                  " LD_PRELOAD=" .. q(build .. "/failmalloc.so") .. " "
      local code, out = util.sh(env .. "FAILMALLOC_COUNT=" .. q(dir .. "/count") .. " " ..
                                q(util.exe) .. " " .. q(dir .. "/script.lua"))
      assert.are.equal(0, code)
      assert.are.equal("ok", out)
      local count = assert(tonumber(slurp("count")), "the shim wrote no count")
      -- Every run in one shell: N, exit status, then its output and stderr files.
      local loop = ("for n in $(seq 1 %d); do " ..
                    "timeout 60 %s FAILMALLOC_NTH=$n FAILMALLOC_TRACE=%s/$n.tr %s %s " ..
                    ">%s/$n.out 2>%s/$n.err; echo $? >%s/$n.rc; done"):format(
                    count + 5, env, q(dir), q(util.exe), q(dir .. "/script.lua"),
                    q(dir), q(dir), q(dir))
      assert.are.equal(0, (util.sh(loop)))
      local bad, seen = {}, {}
      for n = 1, count + 5 do
        local rc, o, e = tonumber(slurp(n .. ".rc")), slurp(n .. ".out"), slurp(n .. ".err")
        local fine
        if e:find("Sanitizer") or e:find("runtime error:") then
          fine = false
        elseif o ~= "" then -- the script ran: each outcome it can write
          fine = o == "ok" or o == "decode: not enough memory" or o == "encode: not enough memory"
          seen[o] = true
        elseif rc == 1 then -- luarun could not start: it must say memory ran out
          fine = e:lower():find("memory") ~= nil
        else -- libuv aborts when some of its own allocations fail (malloc_faults_spec)
          fine = rc == 134 and slurp(n .. ".tr"):find("libuv%.so") ~= nil
        end
        if not fine then bad[#bad + 1] = ("N=%d: exit %s, %s %s"):format(n, rc, o, e) end
      end
      os.execute("rm -rf " .. q(dir))
      assert.are.equal("", table.concat(bad, "\n"))
      assert.is_true(seen["decode: not enough memory"], "no decode ran out of memory")
      assert.is_true(seen["ok"], "no run got through")
    end)
  end)

  describe("round trips", function()
    it("keeps integers, floats and their subtypes", function()
      for _, v in ipairs({0, 1, -1, math.maxinteger, math.mininteger, 0.5, -0.0, 1e300,
                          5e-324, 2^53, 1 / 3, 123456789.125, 3.0}) do
        assert.is_true(same(v, roundtrip(v)), tostring(v))
      end
    end)

    it("keeps strings with any valid UTF-8 and all control bytes", function()
      local b = {}
      for i = 0, 127 do b[#b + 1] = string.char(i) end
      local s = table.concat(b) .. "\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}"
      assert.equal(s, roundtrip(s))
      assert.equal("", roundtrip(""))
    end)

    it("keeps nested structures", function()
      local v = {name = "x", list = {1, 2.5, "three", {deep = {true, false}}}, empty = {},
                 n = json.null}
      assert.is_true(same(v, roundtrip(v)))
    end)

    it("handles a large document", function()
      local t = {}
      for i = 1, 10000 do t[i] = {id = i, name = "item" .. i, score = i / 7} end
      local back = roundtrip(t)
      assert.equal(10000, #back)
      assert.is_true(same(t[9999], back[9999]))
    end)
  end)

  it("is available inside the luarun executable", function()
    local util = require "support.util"
    local code, out = util.luarun([[
      local json = require "luarun.json"
      io.write(json.encode(json.decode('{"a":[1,2.0,null]}').a))
    ]])
    assert.equal(0, code)
    assert.equal("[1,2.0,null]", out)
  end)
end)
