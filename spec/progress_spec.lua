-- The progress line of lr.map and lr.gather (issue 16, item 5): drawn on stderr only
-- when it is a terminal. luarun runs here as a subprocess with its stderr on a
-- pseudo-terminal (spec/support/ptyrun.py, output processing off so "\n" stays "\n"),
-- and again with stderr on a file, where it must write nothing at all.
local util = require "support.util"
local lr = require "luarun"
local q = util.quote

local ESC_K = "\27[K"
local ESC_K_PAT = "\27%[K" -- as a pattern

-- Runs script with stderr on a terminal of cols columns: code, stdout, stderr.
local function on_pty(script, cols)
  local path = os.tmpname() .. ".lua"
  local errf, outf = os.tmpname(), os.tmpname()
  util.put(path, script)
  local code = util.sh("/usr/bin/python3 spec/support/ptyrun.py " .. (cols or 60) ..
                       " 60 " .. q(errf) .. " " .. q(outf) .. " -- " .. q(util.bin) .. " " ..
                       q(path))
  local out, err = util.slurp(outf), util.slurp(errf)
  os.remove(path)
  os.remove(errf)
  os.remove(outf)
  return code, out, err
end

-- The texts drawn: every piece between "\r"s and "\n"s, ESC[K taken out.
local function drawn(err)
  local list = {}
  for piece in err:gsub(ESC_K_PAT, ""):gmatch("[^\r\n]+") do list[#list + 1] = piece end
  return list
end

local function count(s, pat)
  local n = 0
  for _ in s:gmatch(pat) do n = n + 1 end
  return n
end

-- The last line drawn: the final one, which a newline keeps.
local function final(err)
  local d = drawn(err)
  return d[#d]
end

-- 1000 items, 20 at a time, each a few milliseconds, every 50th failing: many
-- completions over about a second. Prints the results and how long the map took.
-- busy(p): the script with opts.progress = p (Lua source).
local busy_text = [[
local lr = require "luarun"
local list = {}
for i = 1, 1000 do list[i] = i end
local function work(x)
  lr.sleep(0.004 * (x % 10))
  if x % 50 == 0 then error("item " .. x, 0) end
  if x == 501 then print("printed by item 501") end
  return x * 2
end
local t0 = lr.now()
local r = lr.map(list, work, {limit = 20, settle = true, progress = PROGRESS})
local elapsed = lr.now() - t0
local ok, sum = 0, 0
for i = 1, r.n do
  if r[i].ok then ok, sum = ok + 1, sum + r[i].value else assert(r[i].error == "item " .. i) end
end
print("results", r.n, ok, sum)
print("elapsed", elapsed)
]]
local function busy(p)
  return (busy_text:gsub("PROGRESS", p))
end

describe("progress line", function()
  it("counts to total/total with the failures, in one row shorter than the terminal", function()
    local code, out, err = on_pty(busy('"pages"'), 60)
    assert.are.equal(0, code, err)
    assert.matches("results\t1000\t980\t980000\n", out, 1, true)
    assert.matches("printed by item 501\n", out, 1, true) -- print still works
    local last = final(err)
    assert.matches("^pages 1000/1000  20 failed  .*/s  in [%d.]+s$", last)
    -- the final line ends the output, with one newline; nothing else has one
    assert.are.equal(ESC_K .. "\n", err:sub(-#ESC_K - 1))
    assert.are.equal(1, count(err, "\n"))
    -- every redraw starts with "\r" and ends with ESC[K, and fits in 59 columns
    assert.are.equal(count(err, "\r"), count(err, ESC_K_PAT))
    local seen_partial = false
    for _, text in ipairs(drawn(err)) do
      assert.is_true(utf8.len(text) <= 59, text)
      assert.matches("^pages %d+/1000", text)
      local done = tonumber(text:match("^pages (%d+)/"))
      if done > 0 and done < 1000 then seen_partial = true end
    end
    assert.is_true(seen_partial, err)
    assert.matches("ETA", err, 1, true)
  end)

  it("redraws at most about ten times a second", function()
    local _, out, err = on_pty(busy("true"), 60)
    local elapsed = tonumber(out:match("elapsed\t([%d.e-]+)"))
    local redraws = count(err, "\r")
    -- the first draw, one every 100 ms at most, the final line; a loose bound
    assert.is_true(redraws >= 2, err)
    assert.is_true(redraws <= 10 * elapsed + 4,
                   ("%d redraws in %.2f s"):format(redraws, elapsed))
  end)

  it("writes nothing when stderr is not a terminal, and the results are the same", function()
    local _, tty_out = on_pty(busy("true"), 60)
    local code, out, err = util.luarun(busy("true"))
    assert.are.equal(0, code)
    assert.are.equal("", err) -- byte for byte
    assert.are.equal(tty_out:match("results[^\n]*"), out:match("results[^\n]*"))
    -- a pipe as stderr: the same
    local path = os.tmpname() .. ".lua"
    util.put(path, busy('"x"'))
    local p = assert(io.popen(q(util.bin) .. " " .. q(path) .. " 2>&1 >/dev/null | od -c"))
    local piped = p:read("a")
    p:close()
    os.remove(path)
    assert.are.equal("0000000\n", piped) -- od's offset alone: not one byte
  end)

  it("reads the width again at each redraw", function()
    local script = [[
local lr = require "luarun"
local list = {}
for i = 1, 40 do list[i] = i end
lr.map(list, function(x) lr.sleep(0.02 * x) end, {limit = 40, progress = "resized"})
]]
    -- 70 columns, then 24 after 0.3 s: the map takes 0.8 s
    local code, _, err = on_pty(script, "70:24:0.3")
    assert.are.equal(0, code, err)
    local texts, wide = drawn(err), 0
    for _, text in ipairs(texts) do
      assert.is_true(#text <= 69, text)
      if #text > 23 then wide = wide + 1 end
    end
    assert.is_true(wide >= 1, err) -- drawn whole before the resize
    assert.matches("^resized 40/40", texts[#texts])
    assert.is_true(#texts[#texts] <= 23, texts[#texts])
  end)

  it("cuts a long label to the width, and a label cannot break the row", function()
    local script = [[
local lr = require "luarun"
local r = lr.map({1, 2, 3}, function(x) lr.sleep(0.01) return x end,
                 {progress = "a\nb\rc\27d " .. string.rep("é", 80)})
print(r.n)
]]
    local code, out, err = on_pty(script, 30)
    assert.are.equal(0, code, err)
    assert.are.equal("3\n", out)
    assert.are.equal(1, count(err, "\n"))
    assert.are.equal(count(err, "\r"), count(err, "\27")) -- no escape but ESC[K
    for _, text in ipairs(drawn(err)) do
      assert.is_true(utf8.len(text) ~= nil, "cut inside a character")
      assert.is_true(utf8.len(text) <= 29, text)
      assert.matches("^a b c d éé", text)
    end
  end)

  it("ends with a line saying it stopped when an item raises", function()
    local script = [[
local lr = require "luarun"
local list = {}
for i = 1, 50 do list[i] = i end
local ok, err = pcall(lr.map, list, function(x)
  lr.sleep(0.01)
  if x == 20 then error("bad", 0) end
  lr.sleep(0.05)
  return x
end, {limit = 5, progress = true})
print(ok, err)
]]
    local code, out, err = on_pty(script)
    assert.are.equal(0, code, err)
    assert.are.equal("false\tbad\n", out)
    assert.matches("^%d+/50  1 failed  .*stopped after [%d.]+s$", final(err))
    assert.are.equal(ESC_K .. "\n", err:sub(-#ESC_K - 1))
  end)

  it("ends with a line saying it was cancelled", function()
    local script = [[
local lr = require "luarun"
local list = {}
for i = 1, 10 do list[i] = i end
print(lr.timeout(0.2, lr.map, list, function(x)
  if x <= 3 then return x end
  lr.sleep(30)
end, {progress = "slow"}))
]]
    local code, out, err = on_pty(script)
    assert.are.equal(0, code, err)
    assert.matches("^nil\t", out)
    assert.matches("^slow 3/10  .*cancelled after [%d.]+s$", final(err))
    assert.are.equal(ESC_K .. "\n", err:sub(-#ESC_K - 1))
  end)

  it("draws only the outer line of nested maps, and works for gather's list form", function()
    local script = [[
local lr = require "luarun"
local r = lr.map({1, 2, 3, 4}, function(x)
  local inner = lr.map({1, 2, 3, 4, 5}, function(y) lr.sleep(0.01) return x * y end,
                       {progress = "inner"})
  return inner[5]
end, {progress = "outer"})
local fns = {}
for i = 1, 6 do fns[i] = function() lr.sleep(0.01) return i end end
local g = lr.gather(fns, {limit = 2, progress = "gather"})
local e = lr.map({}, print, {progress = "empty"})
local t1 = lr.spawn(function() return "t1" end)
lr.sleep(0.01) -- t1 has ended: gather counts it at once
local t2 = lr.spawn(function() lr.sleep(0.01) return "t2" end)
local t = lr.gather({t1, t2}, {progress = "tasks"})
print(r[4], g.n, g[6], e.n, t[1], t[2])
]]
    local code, out, err = on_pty(script)
    assert.are.equal(0, code, err)
    assert.are.equal("20\t6\t6\t0\tt1\tt2\n", out)
    assert.is_nil(err:find("inner", 1, true))
    local finals = {}
    for l in err:gmatch("([^\r]*)\n") do finals[#finals + 1] = (l:gsub(ESC_K_PAT, "")) end
    assert.are.equal(4, #finals)
    assert.matches("^outer 4/4  .*in [%d.]+s$", finals[1])
    assert.matches("^gather 6/6  .*in [%d.]+s$", finals[2])
    assert.matches("^empty 0/0  .*in [%d.]+s$", finals[3])
    assert.matches("^tasks 2/2  .*in [%d.]+s$", finals[4])
  end)

  it("is cleared before a report, then drawn again", function()
    local script = [[
local lr = require "luarun"
local ok = pcall(lr.map, {1, 2, 3}, function(x)
  if x == 1 then lr.spawn(function() lr.sleep(0.05) error("stray", 0) end) end
  lr.sleep(0.4)
  return x
end, {progress = true})
print(ok)
]]
    local code, out, err = on_pty(script)
    assert.are.equal(1, code) -- the stray task's error fails the run
    assert.are.equal("true\n", out)
    local at = err:find("\r" .. ESC_K .. "luarun: ", 1, true)
    assert.is_truthy(at, err) -- the report starts on a cleared row
    local after = err:sub(at + 1)
    -- the report's own lines end, then the line comes back before its final form
    assert.matches("stray", after)
    assert.matches("\n\r0/3", after)
    assert.matches("3/3  .*in [%d.]+s" .. ESC_K_PAT .. "\n$", after)
  end)

  it("is ended, not left open, when the script exits in the middle", function()
    local script = [[
local lr = require "luarun"
lr.map({1, 2, 3}, function(x)
  if x == 2 then lr.sleep(0.05) os.exit(3) end
  lr.sleep(5)
end, {progress = "exit"})
]]
    local code, _, err = on_pty(script)
    assert.are.equal(3, code)
    assert.matches("^exit 0/3  .*stopped after [%d.]+s$", final(err))
    assert.are.equal(ESC_K .. "\n", err:sub(-#ESC_K - 1))
  end)

  it("never keeps the loop alive: a deadlock is still found", function()
    local script = [[
local lr = require "luarun"
local ev = lr.Event()
lr.map({1, 2}, function() ev:wait() end, {progress = true})
]]
    local code, _, err = on_pty(script)
    assert.are_not.equal(0, code)
    assert.are_not.equal(124, code) -- ended by itself, not by the time bound
    assert.matches("deadlock", err)
    assert.matches("0/2  .*cancelled after [%d.]+s" .. ESC_K_PAT .. "\n", err)
  end)
end)

describe("opts.progress", function()
  it("must be a boolean or a string", function()
    util.run(lr, function()
      local f = function(x) return x end
      assert.matches("map: opts.progress must be a boolean or a string %(got number%)",
                     util.raises(lr.map, {1}, f, {progress = 1}))
      assert.matches("gather: opts.progress must be a boolean or a string %(got table%)",
                     util.raises(lr.gather, {f}, {progress = {}}))
    end)
  end)

  it("leaves the results and errors of map and gather as they were", function()
    util.run(lr, function()
      local list = {}
      for i = 1, 30 do list[i] = i end
      local function f(x)
        lr.sleep(0.001 * (x % 3))
        if x % 7 == 0 then error("seven " .. x, 0) end
        return x, "second value dropped"
      end
      for _, p in ipairs({false, true, "label"}) do
        local r = lr.map(list, f, {limit = 4, settle = true, progress = p})
        assert.are.equal(30, r.n)
        for i = 1, 30 do
          if i % 7 == 0 then
            assert.are.same({ok = false, error = "seven " .. i}, r[i])
          else
            assert.are.same({ok = true, value = i}, r[i])
          end
        end
        local ok, err = pcall(lr.map, list, f, {limit = 4, progress = p})
        assert.is_false(ok)
        assert.are.equal("seven 7", err)
        local g = lr.gather({function() return 1 end, function() return nil end,
                             function() return 3 end}, {progress = p})
        assert.are.equal(3, g.n)
        assert.are.same({1, nil, 3}, {g[1], g[2], g[3]})
      end
    end)
  end)
end)
