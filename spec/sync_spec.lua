-- Specs of the synchronisation primitives: Semaphore, Lock, Event, Queue, RateLimit.
local lr = require "luarun"

local util = require "support.util"
local function run(fn, ...) return util.run(lr, fn, ...) end
local raises = util.raises

-- Lets every ready task run until it waits again.
local function settle()
  for _ = 1, 3 do lr.sleep(0) end
end

describe("lr.Semaphore", function()
  it("refuses sizes that are not positive integers, naming the call", function()
    for _, bad in ipairs({0, -1, 1.5, "x", false}) do
      assert.matches("Semaphore: n must be a positive integer", raises(lr.Semaphore, bad))
    end
    assert.matches("Semaphore: n must be a positive integer %(got nothing%)",
                   raises(lr.Semaphore))
  end)

  it("lets at most n tasks in at once", function()
    run(function()
      local sem = lr.Semaphore(2)
      local inside, most = 0, 0
      lr.map({1, 2, 3, 4, 5, 6}, function()
        sem:acquire()
        inside = inside + 1
        most = math.max(most, inside)
        lr.sleep(0.005)
        inside = inside - 1
        sem:release()
      end)
      assert.are.equal(2, most)
      assert.are.equal(2, sem:available())
    end)
  end)

  it("serves waiters first come, first served", function()
    run(function()
      local sem = lr.Semaphore(1)
      sem:acquire()
      local order = {}
      local tasks = {}
      for i = 1, 5 do
        tasks[i] = lr.spawn(function()
          sem:acquire()
          order[#order + 1] = i
          sem:release()
        end)
        settle() -- task i is queued before task i + 1 is spawned
      end
      -- a newcomer while others wait queues behind them
      tasks[6] = lr.spawn(function() sem:acquire() order[#order + 1] = 6 sem:release() end)
      sem:release()
      lr.gather(tasks)
      assert.are.same({1, 2, 3, 4, 5, 6}, order)
    end)
  end)

  it("a waiter cancelled while it waits takes no permit", function()
    run(function()
      local sem = lr.Semaphore(1)
      sem:acquire()
      local b = lr.spawn(function() sem:acquire() return "b got it" end)
      local c = lr.spawn(function() sem:acquire() sem:release() return "c got it" end)
      settle()
      b:cancel()
      local ok, err = pcall(b.wait, b)
      assert.is_false(ok)
      assert.are.equal("cancelled", err.kind)
      sem:release()
      assert.are.equal("c got it", c:wait())
      assert.are.equal(1, sem:available())
    end)
  end)

  it("a waiter handed a permit and then cancelled keeps it until it unwinds", function()
    run(function()
      local sem = lr.Semaphore(1)
      sem:acquire()
      local got = false
      local b = lr.spawn(function()
        sem:with(function()
          got = true
          lr.sleep(10) -- the cancellation is raised here; with releases on the way out
        end)
      end)
      settle()
      sem:release()  -- hands the permit to b
      b:cancel()     -- before b has run
      pcall(b.wait, b)
      assert.is_true(got)
      assert.are.equal(1, sem:available())
    end)
  end)

  it("with returns every result and releases on error", function()
    run(function()
      local sem = lr.Semaphore(1)
      assert.are.same({1, 2, 3}, {sem:with(function(a, b) return a, b, 3 end, 1, 2)})
      local e = {}
      local ok, err = pcall(sem.with, sem, function() error(e) end)
      assert.is_false(ok)
      assert.are.equal(e, err)
      assert.are.equal(1, sem:available())
      assert.matches("with: bad argument #1 %(function expected, got number%)",
                     raises(sem.with, sem, 42))
    end)
  end)

  it("refuses a release with nothing acquired", function()
    run(function()
      local sem = lr.Semaphore(2)
      assert.matches("release: released more times than acquired", raises(sem.release, sem))
    end)
  end)

  it("acquire outside a task raises clearly", function()
    assert.matches("acquire: not inside a luarun task", raises(lr.Semaphore(1).acquire,
                                                                lr.Semaphore(1)))
  end)
end)

describe("lr.Lock", function()
  it("lets one holder in at a time, and <close> releases it", function()
    run(function()
      local lock = lr.Lock()
      local inside, most = 0, 0
      lr.map({1, 2, 3, 4}, function()
        local _ <close> = lock:acquire()
        inside = inside + 1
        most = math.max(most, inside)
        lr.sleep(0.002)
        inside = inside - 1
      end)
      assert.are.equal(1, most)
      assert.is_false(lock:locked())
    end)
  end)

  it("raises on release when not held, by another task, and on re-acquire", function()
    run(function()
      local lock = lr.Lock()
      assert.matches("release: the lock is not held", raises(lock.release, lock))
      lock:acquire()
      assert.matches("acquire: this task holds the lock already", raises(lock.acquire, lock))
      local other = lr.spawn(function() return pcall(lock.release, lock) end)
      local ok, err = other:wait()
      assert.is_false(ok)
      assert.matches("release: the lock is held by another task", err)
      lock:release()
      assert.is_false(lock:locked())
    end)
  end)

  it("hands the lock to the oldest waiter; a cancelled waiter never gets it", function()
    run(function()
      local lock = lr.Lock()
      lock:acquire()
      local order = {}
      local a = lr.spawn(function() lock:with(function() order[#order + 1] = "a" end) end)
      settle()
      local b = lr.spawn(function() lock:with(function() order[#order + 1] = "b" end) end)
      settle()
      local c = lr.spawn(function() lock:with(function() order[#order + 1] = "c" end) end)
      settle()
      b:cancel()
      lock:release()
      lr.gather(a, c)
      assert.are.same({"a", "c"}, order)
      assert.is_false(lock:locked())
    end)
  end)
end)

describe("lr.Lock, forgotten", function()
  it("a lock its holder never released shows in the deadlock report", function()
    local code, _, err = util.luarun([[
local lr = require "luarun"
local lock = lr.Lock()
local holder = lr.spawn(function() lock:acquire() end)
holder:wait()
collectgarbage()
lr.spawn(function() lock:acquire() end):set_name("second")
]])
    assert.are.equal(1, code)
    assert.matches('"second"', err, 1, true)
    assert.matches("waits on Lock:acquire, held by task 2", err, 1, true)
  end)
end)

describe("lr.Event", function()
  it("wakes every waiter when set; waits after that return at once", function()
    run(function()
      local ev = lr.Event()
      local woke = 0
      local tasks = {}
      for i = 1, 3 do tasks[i] = lr.spawn(function() assert.is_true(ev:wait()) woke = woke + 1 end) end
      settle()
      assert.are.equal(0, woke)
      assert.is_false(ev:is_set())
      ev:set()
      lr.gather(tasks)
      assert.are.equal(3, woke)
      assert.is_true(ev:wait())
      ev:clear()
      assert.is_false(ev:is_set())
    end)
  end)

  it("a waiter can be cancelled", function()
    run(function()
      local ev = lr.Event()
      local t = lr.spawn(function() ev:wait() end)
      settle()
      t:cancel()
      local ok, err = pcall(t.wait, t)
      assert.is_false(ok)
      assert.are.equal("cancelled", err.kind)
      ev:set() -- nobody left to wake: nothing breaks
    end)
  end)
end)

describe("lr.Queue", function()
  it("refuses sizes that are not positive integers", function()
    for _, bad in ipairs({0, -3, 2.5, "x"}) do
      assert.matches("Queue: maxsize must be a positive integer, or nil", raises(lr.Queue, bad))
    end
  end)

  it("is first in, first out, with #q the number of items", function()
    run(function()
      local q = lr.Queue()
      for i = 1, 100 do q:put(i) end
      assert.are.equal(100, #q)
      for i = 1, 100 do assert.are.equal(i, q:get()) end
      assert.are.equal(0, #q)
      local huge = lr.Queue(math.huge)
      for i = 1, 10 do huge:put(i) end
      assert.are.equal(10, #huge)
    end)
  end)

  it("put waits while full and get waits while empty", function()
    run(function()
      local q = lr.Queue(2)
      local log = {}
      local producer = lr.spawn(function()
        for i = 1, 4 do q:put(i) log[#log + 1] = "put " .. i end
      end)
      settle()
      assert.are.same({"put 1", "put 2"}, log) -- the third put waits
      assert.are.equal(2, #q)
      assert.are.equal(1, q:get())
      settle()
      assert.are.same({"put 1", "put 2", "put 3"}, log)
      assert.are.same({2, 3}, {q:get(), q:get()})
      producer:wait()
      assert.are.equal(4, q:get())
      local consumer = lr.spawn(function() return q:get() end)
      settle()
      assert.is_false(consumer:done())
      q:put("late")
      assert.are.equal("late", consumer:wait())
    end)
  end)

  it("close: get drains, then returns nil, err; waiting getters are woken", function()
    run(function()
      local q = lr.Queue(5)
      local waiting = lr.spawn(function() return q:get() end)
      settle()
      q:close()
      local v, err = waiting:wait()
      assert.is_nil(v)
      assert.are.equal("closed", err.kind)
      assert.matches("closed", tostring(err))

      q = lr.Queue(5)
      q:put("a")
      q:put("b")
      q:close()
      assert.is_true(q:is_closed())
      assert.matches("put: the queue is closed", raises(q.put, q, "c"))
      assert.are.equal("a", q:get())
      assert.are.equal("b", q:get())
      v, err = q:get()
      assert.is_nil(v)
      assert.are.equal("closed", err.kind)
    end)
  end)

  it("close wakes a waiting putter with an error, its item not added", function()
    run(function()
      local q = lr.Queue(1)
      q:put(1)
      local p = lr.spawn(function() q:put(2) end)
      settle()
      q:close()
      local ok, err = pcall(p.wait, p)
      assert.is_false(ok)
      assert.matches("put: the queue was closed while waiting", err)
      assert.are.equal(1, q:get())
      assert.is_nil((q:get()))
    end)
  end)

  it("refuses nil items", function()
    run(function()
      assert.matches("nil cannot be put in a queue", raises(lr.Queue().put, lr.Queue(), nil))
    end)
  end)

  it("serves getters in arrival order", function()
    run(function()
      local q = lr.Queue()
      local got = {}
      local tasks = {}
      for i = 1, 4 do
        tasks[i] = lr.spawn(function() got[i] = q:get() end)
        settle()
      end
      for i = 1, 4 do q:put("item " .. i) end
      lr.gather(tasks)
      assert.are.same({"item 1", "item 2", "item 3", "item 4"}, got)
    end)
  end)

  it("a cancelled getter loses no item: the next getter gets it", function()
    run(function()
      local q = lr.Queue()
      local a = lr.spawn(function() return q:get() end)
      settle()
      local b = lr.spawn(function() return q:get() end)
      settle()
      a:cancel()
      q:put("x")
      assert.are.equal("x", b:wait())
      assert.is_false(pcall(a.wait, a))
    end)
  end)

  it("a getter handed an item and then cancelled still returns it", function()
    run(function()
      local q = lr.Queue()
      local seen
      local a = lr.spawn(function()
        seen = q:get()
        lr.sleep(10)
      end)
      settle()
      q:put("kept")
      a:cancel() -- a was handed the item but has not run yet
      pcall(a.wait, a)
      assert.are.equal("kept", seen)
      assert.are.equal(0, #q)
    end)
  end)

  it("a cancelled putter's item never appears; the others keep their order", function()
    run(function()
      local q = lr.Queue(1)
      q:put(1)
      local p2 = lr.spawn(function() q:put(2) end)
      settle()
      local p3 = lr.spawn(function() q:put(3) end)
      settle()
      p2:cancel()
      assert.is_false(pcall(p2.wait, p2))
      assert.are.same({1, 3}, {q:get(), q:get()})
      p3:wait()
      assert.are.equal(0, #q)
    end)
  end)

  it("a cancelled task stops at get even when items are there", function()
    run(function()
      local q = lr.Queue()
      for i = 1, 3 do q:put(i) end
      local taken = 0
      local t = lr.spawn(function()
        while true do q:get() taken = taken + 1 end
      end)
      t:cancel()
      assert.is_false(pcall(t.wait, t))
      assert.are.equal(0, taken)
      assert.are.equal(3, #q)
    end)
  end)

  it("a queue nobody fills is reported as a deadlock naming the task", function()
    local code, _, err = util.luarun([[
local lr = require "luarun"
local q = lr.Queue(1)
lr.spawn(function() q:get() end):set_name("consumer")
]])
    assert.are.equal(1, code)
    assert.matches("deadlock: 1 task can never resume", err, 1, true)
    assert.matches('task %d+ "consumer" %(spawned at [^)]+:3%)', err)
    assert.matches("waits on Queue:get, queue empty", err, 1, true)
    assert.matches("in method 'get'", err, 1, true)
  end)
end)

describe("lr.RateLimit", function()
  it("refuses bad sizes and periods", function()
    assert.matches("RateLimit: n must be a positive integer", raises(lr.RateLimit, 0, 1))
    assert.matches("RateLimit: per_seconds must be a positive", raises(lr.RateLimit, 1, 0))
    assert.matches("RateLimit: per_seconds must be a positive", raises(lr.RateLimit, 1, -1))
    assert.matches("number expected", raises(lr.RateLimit, 1, "x"))
  end)

  it("never lets more than n through in any window of per seconds", function()
    run(function()
      local rl = lr.RateLimit(3, 0.05)
      local at = {}
      lr.map({1, 2, 3, 4, 5, 6, 7, 8, 9}, function(i)
        rl:acquire()
        at[#at + 1] = lr.now()
      end)
      assert.are.equal(9, #at)
      for i = 1, #at - 3 do
        -- the (i+3)-th acquisition comes at least one window after the i-th
        assert.is_true(at[i + 3] - at[i] >= 0.05 - 1e-6,
                       string.format("window %d: %.4f s", i, at[i + 3] - at[i]))
      end
    end)
  end)

  it("serves in arrival order, and a cancelled waiter's slot goes to the next", function()
    run(function()
      local rl = lr.RateLimit(1, 0.05)
      rl:acquire()
      local order = {}
      local a = lr.spawn(function() rl:acquire() order[#order + 1] = "a" end)
      settle()
      local b = lr.spawn(function() rl:acquire() order[#order + 1] = "b" end)
      settle()
      local c = lr.spawn(function() rl:acquire() order[#order + 1] = "c" end)
      settle()
      a:cancel()
      lr.gather(b, c)
      assert.is_false(pcall(a.wait, a))
      assert.are.same({"b", "c"}, order)
    end)
  end)
end)

describe("task names and lr.tasks()", function()
  it("set_name with a name that is not a string raises naming the call", function()
    run(function()
      local t = lr.spawn(function() end)
      local err = util.raises(t.set_name, t, 5)
      assert.matches("task:set_name: the name must be a string or nil (got number)", err, 1, true)
      t:wait()
    end)
  end)

  it("names a task and lists what every live task does", function()
    run(function()
      local q = lr.Queue()
      local t = lr.spawn(function() q:get() end):set_name("consumer")
      local s = lr.spawn(function() lr.sleep(5) end)
      settle()
      assert.are.equal("consumer", t:name())
      assert.are.equal("task " .. s:id(), s:name())
      local byid = {}
      for _, r in ipairs(lr.tasks()) do byid[r.id] = r end
      local r = byid[t:id()]
      assert.are.equal("consumer", r.name)
      assert.are.equal("waiting", r.state)
      assert.are.equal("Queue:get, queue empty", r.waiting)
      assert.matches("sync_spec.lua:%d+$", r.spawned_at)
      assert.matches("in method 'get'", r.traceback, 1, true)
      assert.are.equal(t, r.task)
      assert.matches("^sleep, %d", byid[s:id()].waiting)
      local me = byid[lr.current():id()]
      assert.are.equal("running", me.state)
      assert.is_true(me.main)
      q:put(1)
      s:cancel()
    end)
  end)

  it("puts the name in error reports", function()
    local code, _, err = util.luarun([[
local lr = require "luarun"
lr.spawn(function() lr.sleep(0.01) error("bad page") end):set_name("fetcher")
]])
    assert.are.equal(1, code)
    assert.matches('bad page', err, 1, true)
    assert.matches('task %d+ "fetcher" %(spawned at', err)
  end)

  it("SIGQUIT prints every live task and the script carries on", function()
    local code, out, err = util.luarun([[
local lr = require "luarun"
local ev = lr.Event()
lr.spawn(function() ev:wait() end):set_name("waiter")
local pid = io.open("/proc/self/stat"):read("n")
-- system() ignores SIGQUIT while it waits, so the signal comes from the background
os.execute("(sleep 0.2; kill -QUIT " .. pid .. ") &")
for _ = 1, 100 do lr.sleep(0.02) end
print("still running")
ev:set()
]])
    assert.are.equal(0, code)
    assert.are.equal("still running\n", out)
    assert.matches("live tasks", err, 1, true)
    assert.matches('"waiter"', err, 1, true)
    assert.matches("on Event:wait, not set\n    stack traceback:", err, 1, true)
  end)
end)
