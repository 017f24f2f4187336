-- Specs of the structured groups: lr.scope, lr.race, lr.as_completed.
local lr = require "luarun"

local util = require "support.util"
local function run(fn, ...) return util.run(lr, fn, ...) end
local raises = util.raises

-- A task body that records its cleanup in log under name.
local function sleeper(log, name, seconds, result)
  return function()
    local _ <close> = setmetatable({}, {__close = function() log[#log + 1] = name .. " closed" end})
    lr.sleep(seconds)
    log[#log + 1] = name .. " done"
    return result
  end
end

describe("lr.scope", function()
  it("waits for every child and returns the body's results", function()
    run(function()
      local log = {}
      local a, b = lr.scope(function(s, x)
        s:spawn(sleeper(log, "child", 0.02))
        return x, "second"
      end, "first")
      assert.are.equal("first", a)
      assert.are.equal("second", b)
      assert.are.same({"child done", "child closed"}, log)
    end)
  end)

  it("a failing child cancels its siblings and the body, and its error is raised unchanged", function()
    run(function()
      local log = {}
      local e = {kind = "mine"}
      local err = raises(lr.scope, function(s)
        s:spawn(sleeper(log, "sibling", 10))
        s:spawn(function() lr.sleep(0.01) error(e) end)
        lr.sleep(10)
        log[#log + 1] = "body went on"
      end)
      assert.are.equal(e, err)
      assert.are.same({"sibling closed"}, log) -- it unwound before scope returned
    end)
  end)

  it("cancelling the task running the scope cancels the children", function()
    run(function()
      local log = {}
      local t = lr.spawn(function()
        lr.scope(function(s)
          s:spawn(sleeper(log, "a", 10))
          s:spawn(sleeper(log, "b", 10))
        end)
        log[#log + 1] = "after scope"
      end)
      lr.sleep(0.01)
      t:cancel()
      local ok, err = pcall(t.wait, t)
      assert.is_false(ok)
      assert.are.equal("cancelled", err.kind)
      table.sort(log)
      assert.are.same({"a closed", "b closed"}, log)
    end)
  end)

  it("s:cancel() stops every child and the scope returns normally", function()
    run(function()
      local log = {}
      local r = table.pack(lr.scope(function(s)
        s:spawn(sleeper(log, "worker", 10))
        s:spawn(function() lr.sleep(0.01) s:cancel() end)
        lr.sleep(10)
        return "not reached"
      end))
      assert.are.equal(0, r.n)
      assert.are.same({"worker closed"}, log)
    end)
  end)

  it("refuses to spawn once it has ended, and bad arguments", function()
    run(function()
      local kept
      lr.scope(function(s) kept = s end)
      assert.matches("spawn: this scope has ended", raises(kept.spawn, kept, function() end))
      assert.matches("bad argument #1 to '[%w.]*scope' %(function expected", raises(lr.scope, 42))
    end)
    assert.matches("scope: not inside a luarun task", raises(lr.scope, function() end))
  end)

  it("a child cancelled on its own is not a failure", function()
    run(function()
      local r = lr.scope(function(s)
        local c = s:spawn(function() lr.sleep(10) end)
        lr.sleep(0)
        c:cancel()
        return "fine"
      end)
      assert.are.equal("fine", r)
    end)
  end)
end)

describe("lr.race", function()
  it("returns the first to finish and cancels the rest before returning", function()
    run(function()
      local log = {}
      local a, b = lr.race(sleeper(log, "slow", 10, "slow"),
                           function() lr.sleep(0.01) return "fast", 2 end)
      assert.are.equal("fast", a)
      assert.are.equal(2, b)
      assert.are.same({"slow closed"}, log)
    end)
  end)

  it("takes a list of functions and tasks", function()
    run(function()
      local t = lr.spawn(function() lr.sleep(0.005) return "task" end)
      assert.are.equal("task", lr.race({function() lr.sleep(10) end, t}))
    end)
  end)

  it("raises the error of the first to end", function()
    run(function()
      local e = {}
      local log = {}
      assert.are.equal(e, raises(lr.race, sleeper(log, "other", 10), function() error(e) end))
      assert.are.same({"other closed"}, log)
    end)
  end)

  it("a contender cancelled from outside does not win", function()
    run(function()
      local loser = lr.spawn(function() lr.sleep(10) end)
      local racer = lr.spawn(function()
        return lr.race(loser, function() lr.sleep(0.03) return "winner" end)
      end)
      lr.sleep(0.005)
      loser:cancel()
      assert.are.equal("winner", racer:wait())
    end)
  end)

  it("refuses nothing to race and wrong items", function()
    run(function()
      assert.matches("race: nothing to race", raises(lr.race))
      assert.matches("race: item 2 is not a function or task %(got number%)",
                     raises(lr.race, function() end, 5))
    end)
  end)

  it("cancelling the racing task cancels every contender", function()
    run(function()
      local log = {}
      local t = lr.spawn(function() lr.race(sleeper(log, "a", 10), sleeper(log, "b", 10)) end)
      lr.sleep(0.01)
      t:cancel()
      assert.is_false(pcall(t.wait, t))
      table.sort(log)
      assert.are.same({"a closed", "b closed"}, log)
    end)
  end)
end)

describe("lr.as_completed", function()
  it("yields index and first result in the order they finish", function()
    run(function()
      local seen = {}
      for i, v in lr.as_completed({
        function() lr.sleep(0.03) return "c" end,
        function() lr.sleep(0.01) return "a" end,
        function() lr.sleep(0.02) return "b" end,
      }) do
        seen[#seen + 1] = i .. v
      end
      assert.are.same({"2a", "3b", "1c"}, seen)
    end)
  end)

  it("leaving the loop early cancels what still runs", function()
    run(function()
      local log = {}
      for i in lr.as_completed({
        sleeper(log, "x", 10), function() return "quick" end, sleeper(log, "y", 10),
      }) do
        assert.are.equal(2, i)
        break
      end
      lr.sleep(0.01) -- the cancelled items unwind on their own
      table.sort(log)
      assert.are.same({"x closed", "y closed"}, log)
    end)
  end)

  it("raises an item's error from the loop; settle gives records instead", function()
    run(function()
      local e = {}
      local ok, err = pcall(function()
        for _ in lr.as_completed({function() error(e) end, function() lr.sleep(10) end}) do end
      end)
      assert.is_false(ok)
      assert.are.equal(e, err)
      lr.sleep(0.01)

      local got = {}
      for i, r in lr.as_completed({function() error(e) end, function() return 7 end},
                                  {settle = true}) do
        got[i] = r
      end
      assert.are.same({ok = false, error = e}, got[1])
      assert.are.same({ok = true, value = 7}, got[2])
    end)
  end)

  it("handles an empty list and tasks that have finished already", function()
    run(function()
      for _ in lr.as_completed({}) do error("not reached") end
      local t = lr.spawn(function() return "early" end)
      t:wait()
      local n = 0
      for i, v in lr.as_completed({t}) do
        n = n + 1
        assert.are.equal(1, i)
        assert.are.equal("early", v)
      end
      assert.are.equal(1, n)
    end)
  end)
end)
