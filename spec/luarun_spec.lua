-- Specs of the core: tasks, sleep, gather, map, timeout, cancellation, coroutines.
local lr = require "luarun"

local util = require "support.util"
local function run(fn, ...) return util.run(lr, fn, ...) end

describe("lr.run", function()
  it("returns the function's results", function()
    assert.are.equal(1, (run(function(x) return x end, 1)))
    assert.are.same({5, 10}, {run(function(x) return x, x * 2 end, 5)})
    assert.are.equal(0, select("#", run(function() end)))
  end)

  it("raises the main function's error unchanged", function()
    local e = {kind = "mine"}
    local ok, err = pcall(lr.run, function() error(e) end)
    assert.is_false(ok)
    assert.are.equal(e, err)
  end)

  it("waits for tasks that the main function spawned", function()
    local done = false
    run(function() lr.spawn(function() lr.sleep(0.02) done = true end) end)
    assert.is_true(done)
  end)

  it("cancels the other tasks when the main function fails", function()
    local cleaned = false
    local e = {}
    local t0 = lr.now()
    local ok, err = pcall(lr.run, function()
      lr.spawn(function()
        local _ <close> = setmetatable({}, {__close = function() cleaned = true end})
        lr.sleep(30)
      end)
      lr.sleep(0)
      error(e)
    end)
    assert.is_false(ok)
    assert.are.equal(e, err)
    assert.is_true(cleaned)
    assert.is_true(lr.now() - t0 < 10)
    assert.are.equal(0, lr.stats().tasks)
  end)

  it("lr.current() is the running task, also after it waited", function()
    run(function()
      local t
      t = lr.spawn(function()
        assert.are.equal(t, lr.current())
        lr.sleep(0.001)
        assert.are.equal(t, lr.current())
        local inner = coroutine.wrap(function() lr.sleep(0) return lr.current() end)
        assert.are.equal(t, inner())
        return "ok"
      end)
      assert.are.equal("ok", t:wait())
      local me = lr.current()
      lr.sleep(0)
      assert.are.equal(me, lr.current())
    end)
  end)

  it("refuses to nest", function()
    run(function()
      local ok, err = pcall(lr.run, function() end)
      assert.is_false(ok)
      assert.matches("already running", err)
    end)
  end)

  it("raises when a spawned task failed and nobody waited for it", function()
    local ok, err = pcall(lr.run, function() lr.spawn(function() error("lost") end) end)
    assert.is_false(ok)
    assert.matches("1 task failed", err)
  end)
end)

describe("sleep", function()
  it("wakes tasks in deadline order", function()
    local order = {}
    run(function()
      for _, d in ipairs({0.03, 0.01, 0.02}) do
        lr.spawn(function() lr.sleep(d) order[#order + 1] = d end)
      end
    end)
    assert.are.same({0.01, 0.02, 0.03}, order)
  end)

  it("wakes equal sleeps in the order they were called", function()
    local order = {}
    run(function()
      for i = 1, 20 do lr.spawn(function() lr.sleep(0.01) order[#order + 1] = i end) end
    end)
    for i = 1, 20 do assert.are.equal(i, order[i]) end
  end)

  it("sleeps at least as long as asked", function()
    run(function()
      local t0 = lr.now()
      lr.sleep(0.05)
      assert.is_true(lr.now() - t0 >= 0.05)
    end)
  end)

  it("sleep(0) lets every other ready task run (round robin)", function()
    local trace = {}
    run(function()
      for name in ("ab"):gmatch(".") do
        lr.spawn(function()
          for i = 1, 3 do trace[#trace + 1] = name .. i; lr.sleep(0) end
        end)
      end
    end)
    assert.are.equal("a1 b1 a2 b2 a3 b3", table.concat(trace, " "))
  end)

  it("raises on bad arguments, naming the function", function()
    run(function()
      local ok, err = pcall(lr.sleep, "soon")
      assert.is_false(ok)
      assert.matches("sleep", err)
      assert.matches("number expected", err)
      ok, err = pcall(lr.sleep, 0 / 0)
      assert.is_false(ok)
      assert.matches("NaN", err)
    end)
  end)

  it("treats negative durations as zero", function()
    run(function()
      local t0 = lr.now()
      lr.sleep(-5)
      assert.is_true(lr.now() - t0 < 1)
    end)
  end)

  it("refuses to run outside a task", function()
    local ok, err = pcall(lr.sleep, 0)
    assert.is_false(ok)
    assert.matches("not inside a luarun task", err)
  end)

  it("names the C function that prevents a yield", function()
    run(function()
      local ok, err = pcall(table.sort, {3, 2, 1}, function(a, b) lr.sleep(0) return a < b end)
      assert.is_false(ok)
      assert.matches("inside C function 'table.sort'", err, 1, true)
    end)
  end)
end)

describe("tasks", function()
  it("wait returns every result", function()
    run(function()
      local t = lr.spawn(function(a, b) lr.sleep(0.01) return a + b, "x", nil end, 2, 3)
      local r = table.pack(t:wait())
      assert.are.equal(3, r.n)
      assert.are.same({5, "x"}, {r[1], r[2]})
      assert.is_true(t:done())
      assert.are.same({5, "x"}, {t:wait()}) -- again, after it is done
    end)
  end)

  it("wait raises the task's error unchanged", function()
    run(function()
      local e = setmetatable({}, {__tostring = function() return "custom" end})
      local t = lr.spawn(function() lr.sleep(0.01) error(e) end)
      local ok, err = pcall(t.wait, t)
      assert.is_false(ok)
      assert.are.equal(e, err)
      assert.are.equal("failed", t:status())
    end)
  end)

  it("cancel raises 'cancelled' at the wait point and runs <close> handlers", function()
    local closed, caught
    run(function()
      local t = lr.spawn(function()
        local _ <close> = setmetatable({}, {__close = function() closed = true end})
        local ok, err = pcall(lr.sleep, 10)
        caught = err
        error(err)
      end)
      lr.sleep(0.01)
      t:cancel()
      local ok, err = pcall(t.wait, t)
      assert.is_false(ok)
      assert.are.equal("cancelled", err.kind)
      assert.are.equal("cancelled", t:status())
    end)
    assert.is_true(closed)
    assert.are.equal("cancelled", caught.kind)
    assert.matches("cancelled", tostring(caught))
  end)

  it("cancellation stays in force: ignoring it does not keep the task going", function()
    local waits = 0
    run(function()
      local t = lr.spawn(function()
        for _ = 1, 5 do
          pcall(lr.sleep, 10) -- swallows the error
          waits = waits + 1
        end
        return "finished"
      end)
      lr.sleep(0.01)
      t:cancel()
      assert.are.equal("finished", t:wait())
    end)
    assert.are.equal(5, waits) -- every later wait raised at once instead of sleeping
  end)

  it("a task cancelled before it starts never runs", function()
    local ran = false
    run(function()
      local t = lr.spawn(function() ran = true end)
      t:cancel()
      assert.are.equal("cancelled", select(2, pcall(t.wait, t)).kind)
    end)
    assert.is_false(ran)
  end)

  it("spawn raises on a non-function", function()
    run(function()
      local ok, err = pcall(lr.spawn, 42)
      assert.is_false(ok)
      assert.matches("function expected", err)
    end)
  end)

  it("a task cannot wait for itself", function()
    run(function()
      local me = lr.current()
      local ok, err = pcall(me.wait, me)
      assert.is_false(ok)
      assert.matches("itself", err)
    end)
  end)

  it("tasks nobody references still run to the end, and are collected after", function()
    local n = 0
    run(function()
      for _ = 1, 200 do lr.spawn(function() lr.sleep(0.005); n = n + 1 end) end
      collectgarbage()
      collectgarbage()
    end)
    assert.are.equal(200, n)
  end)
end)

describe("gather", function()
  it("returns first results in argument order", function()
    run(function()
      local a, b, c = lr.gather(
        function() lr.sleep(0.03) return 1, "ignored" end,
        function() return 2 end,
        lr.spawn(function() lr.sleep(0.01) return 3 end))
      assert.are.same({1, 2, 3}, {a, b, c})
    end)
  end)

  it("runs concurrently", function()
    run(function()
      local t0 = lr.now()
      local fns = {}
      for i = 1, 50 do fns[i] = function() lr.sleep(0.1) return i end end
      local r = lr.gather(fns)
      assert.are.equal(50, r.n)
      assert.are.equal(50, r[50])
      assert.is_true(lr.now() - t0 < 2.5) -- 50 × 0.1 s one after another would be 5 s
    end)
  end)

  it("the first error cancels the siblings and is raised unchanged", function()
    local sibling_cleanup = false
    local e = {kind = "boom"}
    run(function()
      local ok, err = pcall(lr.gather,
        function() lr.sleep(0.01) error(e) end,
        function()
          local _ <close> = setmetatable({}, {__close = function() sibling_cleanup = true end})
          lr.sleep(30)
        end)
      assert.is_false(ok)
      assert.are.equal(e, err)
      assert.is_true(sibling_cleanup) -- the sibling has unwound before gather returns
    end)
  end)

  it("settle collects every outcome and never raises", function()
    run(function()
      local r = lr.gather({
        function() return "a" end,
        function() error("b", 0) end,
        function() lr.sleep(0.01) return "c" end,
      }, {settle = true})
      assert.are.equal(3, r.n)
      assert.are.same({ok = true, value = "a"}, r[1])
      assert.are.same({ok = false, error = "b"}, r[2])
      assert.are.same({ok = true, value = "c"}, r[3])
    end)
  end)

  it("keeps every child's result when the collector runs while they are recorded", function()
    -- A finished child is held only by its outcome slot until gather records it; an
    -- eager collector once freed the slot first and a result went missing.
    local pause = collectgarbage("setpause", 10)
    local lost
    for k = 1, 300 do
      run(function()
        local r = lr.gather({
          function() return "a" end,
          function() error("b", 0) end,
          function() lr.sleep(0) return "c" end,
        }, {settle = true})
        if r[1].value ~= "a" or r[3].value ~= "c" then lost = lost or k end
      end)
    end
    collectgarbage("setpause", pause)
    assert.is_nil(lost)
  end)

  it("limit bounds how many run at once", function()
    local running, peak = 0, 0
    run(function()
      local fns = {}
      for i = 1, 30 do
        fns[i] = function()
          running = running + 1
          if running > peak then peak = running end
          lr.sleep(0.002 * (i % 4))
          running = running - 1
          return i
        end
      end
      local r = lr.gather(fns, {limit = 4})
      for i = 1, 30 do assert.are.equal(i, r[i]) end
    end)
    assert.are.equal(4, peak)
  end)

  it("of nothing returns nothing", function()
    run(function()
      assert.are.equal(0, select("#", lr.gather()))
      assert.are.equal(0, lr.gather({}).n)
    end)
  end)

  it("raises on bad items and options", function()
    run(function()
      assert.has_error(function() lr.gather(function() end, 5) end)
      local ok, err = pcall(lr.gather, {function() end, "x"})
      assert.is_false(ok)
      assert.matches("item 2", err)
      ok, err = pcall(lr.gather, {}, {limit = 0})
      assert.is_false(ok)
      assert.matches("limit", err)
    end)
  end)

  it("cancelling the gathering task cancels its children", function()
    local cleaned = 0
    run(function()
      local t = lr.spawn(function()
        local fns = {}
        for i = 1, 5 do
          fns[i] = function()
            local _ <close> = setmetatable({}, {__close = function() cleaned = cleaned + 1 end})
            lr.sleep(30)
          end
        end
        lr.gather(fns)
      end)
      lr.sleep(0.01)
      t:cancel()
      assert.are.equal("cancelled", select(2, pcall(t.wait, t)).kind)
    end)
    assert.are.equal(5, cleaned)
  end)
end)

describe("map", function()
  it("calls fn(item, i) for every item, with a limit", function()
    run(function()
      local r = lr.map({"a", "b", "c"}, function(item, i) lr.sleep(0.001) return item .. i end,
                       {limit = 2})
      assert.are.same({"a1", "b2", "c3", n = 3}, r)
    end)
  end)

  it("raises on a missing function", function()
    run(function()
      assert.has_error(function() lr.map({1}, nil) end)
    end)
  end)
end)

describe("timeout", function()
  it("returns the results when the function finishes in time", function()
    run(function()
      assert.are.same({1, 2}, {lr.timeout(1, function(a) lr.sleep(0.01) return a, 2 end, 1)})
    end)
  end)

  it("returns nil, timeout after cancelling a slow function", function()
    local cleaned = false
    run(function()
      local t0 = lr.now()
      local v, err = lr.timeout(0.05, function()
        local _ <close> = setmetatable({}, {__close = function() cleaned = true end})
        lr.sleep(30)
      end)
      assert.is_nil(v)
      assert.are.equal("timeout", err.kind)
      assert.matches("timed out after 0.05 s", tostring(err))
      assert.is_true(lr.now() - t0 < 5)
    end)
    assert.is_true(cleaned)
  end)

  it("raises the function's error", function()
    run(function()
      local ok, err = pcall(lr.timeout, 1, function() error("inner", 0) end)
      assert.is_false(ok)
      assert.are.equal("inner", err)
    end)
  end)

  it("cancelling the caller cancels the function", function()
    local cleaned = false
    run(function()
      local t = lr.spawn(lr.timeout, 30, function()
        local _ <close> = setmetatable({}, {__close = function() cleaned = true end})
        lr.sleep(30)
      end)
      lr.sleep(0.01)
      t:cancel()
      assert.are.equal("cancelled", select(2, pcall(t.wait, t)).kind)
    end)
    assert.is_true(cleaned)
  end)
end)

describe("coroutines inside tasks", function()
  it("a coroutine.wrap generator can wait between its yields", function()
    run(function()
      local gen = coroutine.wrap(function()
        for i = 1, 3 do lr.sleep(0.005); coroutine.yield(i) end
      end)
      local other_ran = false
      lr.spawn(function() other_ran = true end)
      assert.are.same({1, 2, 3}, {gen(), gen(), gen()})
      assert.is_true(other_ran) -- the task really suspended, others ran meanwhile
    end)
  end)

  it("coroutine.resume passes waits through and returns normal yields", function()
    run(function()
      local co = coroutine.create(function(a)
        lr.sleep(0.001)
        local b = coroutine.yield(a + 1)
        lr.gather(function() lr.sleep(0.001) end)
        return b * 2
      end)
      assert.are.same({true, 2}, {coroutine.resume(co, 1)})
      assert.are.same({true, 20}, {coroutine.resume(co, 10)})
      assert.are.equal("dead", coroutine.status(co))
    end)
  end)

  it("nested generators work at any depth", function()
    run(function()
      local function gen(n)
        return coroutine.wrap(function()
          for i = 1, n do lr.sleep(0) coroutine.yield(i) end
        end)
      end
      local outer = coroutine.wrap(function()
        for v in gen(3) do coroutine.yield(v * 10) end
      end)
      assert.are.same({10, 20, 30}, {outer(), outer(), outer()})
    end)
  end)

  it("cancellation reaches a task waiting inside a generator", function()
    run(function()
      local t = lr.spawn(function()
        local gen = coroutine.wrap(function() lr.sleep(30) coroutine.yield(1) end)
        return gen()
      end)
      lr.sleep(0.01)
      t:cancel()
      assert.are.equal("cancelled", select(2, pcall(t.wait, t)).kind)
    end)
  end)

  it("plain coroutines keep working as in lua5.4", function()
    run(function()
      local co = coroutine.wrap(function(...) local x = coroutine.yield(...) return x end)
      assert.are.same({1, 2}, {co(1, 2)})
      assert.are.equal(3, co(3))
      local ok, err = coroutine.resume(coroutine.create(function() error("e", 0) end))
      assert.are.same({false, "e"}, {ok, err})
    end)
  end)

  it("coroutine.yield in a task's own function raises a clear error", function()
    run(function()
      local t = lr.spawn(function() coroutine.yield() end)
      local ok, err = pcall(t.wait, t)
      assert.is_false(ok)
      assert.matches("lr.sleep%(0%)", err)
    end)
  end)

  it("yields through pcall and metamethods", function()
    run(function()
      local obj = setmetatable({}, {__index = function(_, k) lr.sleep(0.001) return k .. "!" end})
      assert.are.equal("x!", obj.x)
      assert.are.same({true, 7}, {pcall(function() lr.sleep(0.001) return 7 end)})
    end)
  end)
end)
