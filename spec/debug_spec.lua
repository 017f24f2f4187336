-- luarun --debug / LUARUN_DEBUG: the blocked-loop report. Every script runs in a
-- subprocess; timings are generous (a stuck task runs well past the threshold), so a
-- loaded machine cannot make the report come late.
local util = require "support.util"

-- Runs `script` with `luarun <opts> script`; returns code, stdout, stderr, path.
local function run(script, opts, env) return util.luarun(script, nil, opts, env) end

-- A task that spins 1.5 s without yielding, then a marker on stderr.
local BUSY = [[
local lr = require "luarun"
local function spin(seconds)
  local t = lr.now()
  while lr.now() - t < seconds do end   -- line 4
end
local t = lr.spawn(function()
  spin(1.5)
  lr.sleep(0.01)
end)
t:wait()
io.stderr:write("MARKER: the task has yielded\n")
]]

local function find(s, pat)
  return (s:find(pat, 1, true))
end

describe("--debug", function()
  it("reports a task stuck in Lua code with its traceback while it is stuck", function()
    local code, _, err = run(BUSY, "--debug=50")
    assert.are.equal(0, code, err)
    local report = find(err, "luarun: blocked loop: task 2 (spawned at ")
    local marker = find(err, "MARKER: the task has yielded")
    assert.is_truthy(report, err)
    assert.is_truthy(marker, err)
    assert.is_true(report < marker, err)
    -- The report names the line the task spins on, and was printed during the run.
    local head = err:sub(report, marker - 1)
    assert.is_truthy(head:find("has been running for %d+ ms without yielding %(threshold 50 ms%)"), err)
    assert.is_truthy(head:find("%.lua:4: in upvalue 'spin'"), err)
    -- Then, once it yields, the total.
    local total = tonumber(head:match("ran (%d+) ms without yielding, in total, before it yielded"))
    assert.is_truthy(total, err)
    assert.is_true(total >= 1400, err)
  end)

  it("prints nothing without --debug", function()
    local code, _, err = run((BUSY:gsub("spin%(1%.5%)", "spin(0.3)")))
    assert.are.equal(0, code, err)
    assert.is_nil(find(err, "blocked loop"), err)
    assert.is_truthy(find(err, "MARKER"), err)
  end)

  it("prints nothing for tasks that yield within the threshold", function()
    local code, out, err = run([[
      local lr = require "luarun"
      local n = 0
      lr.gather(function() for _ = 1, 20 do lr.sleep(0.005); n = n + 1 end end,
                function() for _ = 1, 20 do lr.sleep(0) ; n = n + 1 end end)
      print(n)
    ]], "--debug=2000")
    assert.are.equal(0, code, err)
    assert.are.equal("40\n", out)
    assert.are.equal("", err)
  end)

  it("says when the task is stuck inside a C function, then shows where once it returns", function()
    local code, _, err = run([[
      local lr = require "luarun"
      lr.sleep(0.01)
      os.execute("sleep 1")                        -- line 3
      io.stderr:write("MARKER: back in Lua\n")
      lr.sleep(0.01)
    ]], "--debug=50")
    assert.are.equal(0, code, err)
    local note = find(err, "luarun: blocked loop: main task has been running for")
    local c = find(err, "inside a C function that blocks")
    local back = find(err, "inside a C function until now; it is at:")
    local marker = find(err, "MARKER: back in Lua")
    assert.is_truthy(note and c and back and marker, err)
    assert.is_true(c < back and back < marker, err)
    assert.is_truthy(err:sub(back, marker - 1):find("%.lua:[34]: in main chunk"), err)
    assert.is_truthy(err:find("main task ran %d+ ms without yielding, in total, before it yielded"), err)
  end)

  it("follows a task into its own coroutines", function()
    local code, out, err = run([[
      local lr = require "luarun"
      local gen = coroutine.wrap(function()
        local t = lr.now()
        while lr.now() - t < 1.2 do end           -- line 4
        coroutine.yield(1)
      end)
      lr.spawn(function() print(gen()) end):wait()
      io.stderr:write("MARKER\n")
    ]], "--debug=50")
    assert.are.equal(0, code, err)
    assert.are.equal("1\n", out)
    local report, marker = find(err, "has been running for"), find(err, "MARKER")
    assert.is_truthy(report and marker and report < marker, err)
    assert.is_truthy(err:sub(report, marker):find("%.lua:4: in function <"), err)
  end)

  it("is turned on by LUARUN_DEBUG and LUARUN_DEBUG_MS, in the CLI and under lr.run", function()
    local code, _, err = run(BUSY, "", "LUARUN_DEBUG=1 LUARUN_DEBUG_MS=50")
    assert.are.equal(0, code, err)
    assert.is_truthy(find(err, "(threshold 50 ms); it is at:"), err)
    assert.is_truthy(err:find("%.lua:4: in upvalue 'spin'"), err)
    -- Module form: stock lua5.4 with the luarun module.
    local cpath = os.getenv("LUA_CPATH") or ""
    code, _, err = util.sh("LUARUN_DEBUG=1 LUARUN_DEBUG_MS=50 LUA_CPATH=" .. util.quote(cpath) ..
      " timeout 60 lua5.4 -e " .. util.quote([[
        local lr = require "luarun"
        lr.run(function()
          local t = lr.now()
          while lr.now() - t < 1.2 do end
          lr.sleep(0.01)
        end)
        io.stderr:write("MARKER\n")]]))
    assert.are.equal(0, code, err)
    local report, marker = find(err, "luarun: blocked loop: main task has been running for"),
                           find(err, "MARKER")
    assert.is_truthy(report and marker and report < marker, err)
    assert.is_truthy(err:find("%(command line%):4: in function <"), err)
  end)

  it("refuses a bad threshold, and --help mentions it", function()
    local code, _, err = util.sh(util.quote(util.bin) .. " --debug=abc -e 'print(1)'")
    assert.are.equal(1, code)
    assert.is_truthy(find(err, "'--debug=MS' needs a number of milliseconds"), err)
    local out
    code, out = util.sh(util.quote(util.bin) .. " --help")
    assert.are.equal(0, code)
    assert.is_truthy(find(out, "--debug[=MS]"), out)
    assert.is_truthy(find(out, "--trace FILE"), out)
  end)
end)
