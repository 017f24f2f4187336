-- lr.run_in_pool: worker threads with their own Lua states.
local lr = require "luarun"
local json = require "luarun.json"
local util = require "support.util"

local same = util.same

local function run(fn) return util.run(lr, fn) end

local function errmsg(fn, ...) return tostring(util.raises(fn, ...)) end

describe("lr.run_in_pool", function()
  it("runs a function on a worker and returns all its results", function()
    run(function()
      local a, b, c = lr.run_in_pool(function(x, y) return x + y, x * y, _VERSION end, 6, 7)
      assert.equal(13, a)
      assert.equal(42, b)
      assert.equal("Lua 5.4", c)
      assert.equal(0, select("#", lr.run_in_pool(function() end)))
    end)
  end)

  it("calls 'module.function' through the worker's require", function()
    run(function()
      assert.equal("ababab", lr.run_in_pool("string.rep", "ab", 3))
      assert.equal('{"a":[1,2]}', lr.run_in_pool("luarun.json.encode", {a = {1, 2}}))
      local err = errmsg(lr.run_in_pool, "string.nope")
      assert.matches("module 'string' has no function 'nope'", err)
      err = errmsg(lr.run_in_pool, "no_such_module_xyz.f")
      assert.matches("module 'no_such_module_xyz' not found", err)
    end)
  end)

  it("gives workers the standard libraries and luarun.json, not the runtime", function()
    run(function()
      local r = lr.run_in_pool(function()
        local j = require "luarun.json"
        return j.encode({math.sqrt(16), string.upper("x"), j.null}), pcall(require, "luarun")
      end)
      assert.equal('[4.0,"X",null]', r)
      local ok, err = lr.run_in_pool(function() return pcall(require, "luarun") end)
      assert.is_false(ok)
      assert.matches("not available in a pool worker", err)
    end)
  end)

  describe("refuses what cannot cross", function()
    it("names an upvalue other than _ENV", function()
      run(function()
        local secret = 1
        local err = errmsg(lr.run_in_pool, function() return secret end)
        assert.matches("upvalue 'secret'", err)
        -- globals are fine
        assert.equal("table", lr.run_in_pool(function() return type(string) end))
      end)
    end)

    it("refuses C functions and bad names", function()
      run(function()
        assert.matches("C function", errmsg(lr.run_in_pool, print))
        assert.matches("module.function", errmsg(lr.run_in_pool, "nodot"))
        assert.matches("function or", errmsg(lr.run_in_pool, 42))
      end)
    end)

    it("names the path of an argument that cannot be copied", function()
      run(function()
        local err = errmsg(lr.run_in_pool, function() end, 1, {x = {y = print}})
        assert.matches("cannot copy a function .* at args%[2%]%.x%.y$", err)
        err = errmsg(lr.run_in_pool, function() end, {coroutine.create(print)})
        assert.matches("cannot copy a thread .* at args%[1%]%[1%]$", err)
        err = errmsg(lr.run_in_pool, function() end, {io.stdout})
        assert.matches("cannot copy a FILE%* .* at args%[1%]%[1%]$", err)
        err = errmsg(lr.run_in_pool, function() end, {[print] = 1})
        assert.matches("function used as a table key", err)
      end)
    end)

    it("raises in the caller when a result cannot be copied", function()
      run(function()
        local err = errmsg(lr.run_in_pool, function() return 1, {f = print} end)
        assert.matches("cannot copy a function .* at results%[2%]%.f", err)
        -- the worker is fine afterwards
        assert.equal(2, lr.run_in_pool(function() return 2 end))
      end)
    end)
  end)

  describe("copies values exactly", function()
    it("round-trips special numbers and strings with any bytes", function()
      run(function()
        local bytes = {}
        for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
        local values = {0 / 0, -0.0, 0.0, math.maxinteger, math.mininteger, math.huge,
                        -math.huge, 1 / 3, 2^53, 3.0, 3, "", "a\0b\0", table.concat(bytes),
                        true, false, json.null}
        local back = table.pack(lr.run_in_pool(function(...) return ... end,
                                               table.unpack(values)))
        assert.equal(#values, back.n)
        for i, v in ipairs(values) do
          assert.is_true(same(v, back[i]), "value " .. i .. " " .. tostring(v))
        end
        -- nil in the middle of the arguments and results
        local n, a, b, c = (function(...) return select("#", ...), ... end)(
          lr.run_in_pool(function(...) return ... end, nil, 2, nil))
        assert.equal(3, n)
        assert.is_nil(a); assert.equal(2, b); assert.is_nil(c)
      end)
    end)

    it("round-trips values of every size around the buffers' first capacities", function()
      -- Arguments start in a small buffer that grows; results start inside the job
      -- and move to the heap when they outgrow it: every size across both edges.
      run(function()
        local echo = function(...) return ... end
        for len = 1, 600, 7 do
          local s = string.rep("ab", len // 2) .. (len % 2 == 1 and "\0" or "")
          local t = {s, {len, s:sub(1, len // 3)}, len + 0.5}
          local a, b, c = lr.run_in_pool(echo, s, t, len)
          assert.equal(s, a)
          assert.is_true(same(t, b), "table of length " .. len)
          assert.equal(len, c)
          assert.is_true(math.type(c) == "integer")
        end
        -- several at once, so finished jobs are reused with other sizes
        local lens = {}
        for i = 1, 200 do lens[i] = (i * 37) % 500 end
        local back = lr.map(lens, function(n) return lr.run_in_pool(echo, ("x"):rep(n)) end)
        for i, n in ipairs(lens) do assert.equal(("x"):rep(n), back[i]) end
      end)
    end)

    it("keeps shared references and cycles in nested tables", function()
      run(function()
        local shared = {v = 1}
        local t = {a = shared, b = shared, list = {1, 2, {3}}, [10] = "ten", [2.5] = "f"}
        t.self = t
        t[shared] = "table key"
        local r = lr.run_in_pool(function(x)
          assert(x.a == x.b and x.self == x, "identity lost in the worker")
          x.a.v = x.a.v + 1 -- seen through both references
          return x
        end, t)
        assert.is_true(r.self == r)
        assert.is_true(r.a == r.b)
        assert.equal(2, r.b.v)
        assert.equal("table key", r[r.a])
        assert.equal("ten", r[10])
        assert.equal("f", r[2.5])
        assert.is_true(same({1, 2, {3}}, r.list))
        -- the caller's table is untouched (it was copied)
        assert.equal(1, shared.v)
      end)
    end)

    it("passes long strings (read in place) intact, alone and inside tables", function()
      run(function()
        local parts = {}
        for i = 0, 255 do parts[#parts + 1] = string.char(i) end
        local long = string.rep(table.concat(parts), 4096) -- 1 MB, every byte value
        local r1, r2 = lr.run_in_pool(function(s, t)
          return s .. "!", {body = t.body, again = t.body, n = #t.body}
        end, long, {body = long})
        assert.equal(long .. "!", r1)
        assert.equal(long, r2.body)
        assert.equal(#long, r2.n)
      end)
    end)

    it("a cancel while a worker reads the caller's long strings is safe", function()
      run(function()
        for _ = 1, 20 do
          local t = {s = string.rep("z", 3 * 1024 * 1024)}
          local task = lr.spawn(lr.run_in_pool, function(x) return #x.s end, t)
          lr.sleep(0)
          t.s = nil
          task:cancel()
          collectgarbage()
          pcall(task.wait, task)
        end
        assert.equal(5, lr.run_in_pool(function(s) return #s end, string.rep("q", 5)))
      end)
    end)

    it("keeps a long result string alive until it is copied, while the worker moves on", function()
      -- A long result string is read in the worker's state; the worker must not
      -- collect it before the loop thread has copied it, even when it has taken
      -- the next jobs meanwhile (one worker: the next job starts at once).
      local code, out, err = util.luarun([[
        local lr = require "luarun"
        lr.pool_size(1)
        for round = 1, 6 do
          local a = lr.spawn(function()
            local s = lr.run_in_pool(function() return string.rep("x", 32 << 20) .. "y" end)
            assert(#s == (32 << 20) + 1 and s:sub(-2) == "xy")
          end)
          local b = lr.spawn(function()
            lr.run_in_pool(function()
              local t = os.clock() + 0.002
              while os.clock() < t do end
            end)
          end)
          local c = lr.spawn(function()
            lr.run_in_pool(function() collectgarbage() collectgarbage() return 1 end)
          end)
          lr.gather(a, b, c)
        end
        print("intact")
      ]])
      assert.equal("", err)
      assert.equal(0, code)
      assert.equal("intact\n", out)
    end)

    it("keeps long strings intact over many calls in a row, both ways", function()
      -- One call after another: the caller polls for each result, the worker polls
      -- for the next job, and long strings cross by address in both directions.
      run(function()
        local chunk = {}
        for i = 0, 255 do chunk[#chunk + 1] = string.char(i) end
        chunk = table.concat(chunk)
        for i = 1, 40 do
          local s = string.rep(chunk, 1024 * (1 + i % 3)) .. i -- 256 KB to 768 KB
          local r, n = lr.run_in_pool(function(x) return x:reverse(), #x end, s)
          assert.equal(#s, n)
          assert.is_true(r == s:reverse(), "call " .. i)
        end
      end)
    end)

    it("copies a large nested structure", function()
      run(function()
        local big = {}
        for i = 1, 2000 do big[i] = {id = i, name = "n" .. i, tags = {"a", "b"}} end
        local r = lr.run_in_pool(function(t)
          local sum = 0
          for _, v in ipairs(t) do sum = sum + v.id end
          return sum, t
        end, big)
        assert.equal(2000 * 2001 // 2, r)
      end)
    end)
  end)

  describe("errors", function()
    it("raises the worker's error in the caller with the worker's traceback", function()
      run(function()
        local err = errmsg(lr.run_in_pool, function()
          local function inner() error("boom in worker") end
          inner()
        end)
        assert.matches("boom in worker", err)
        assert.matches("pool worker traceback:", err)
        assert.matches("in %a* ?%a* ?'?inner'?", err)
      end)
    end)

    it("describes a non-string error value", function()
      run(function()
        local err = errmsg(lr.run_in_pool, function() error({code = 1}) end)
        assert.matches("error object is a table value", err)
        err = errmsg(lr.run_in_pool, function()
          error(setmetatable({}, {__tostring = function() return "custom" end}))
        end)
        assert.matches("custom", err)
      end)
    end)

    it("an error can be caught with pcall and the pool keeps working", function()
      run(function()
        for _ = 1, 20 do
          assert.is_false((pcall(lr.run_in_pool, function() error("x") end)))
        end
        assert.equal(5, lr.run_in_pool(function(x) return x end, 5))
      end)
    end)

    it("raises when called outside a task", function()
      -- (the ASan build says "cannot suspend the task inside C function 'pcall'" here:
      -- reported to the scheduler's owner; either way it must name run_in_pool)
      assert.matches("^run_in_pool: ", errmsg(lr.run_in_pool, function() end))
    end)
  end)

  describe("cancellation", function()
    it("task:cancel returns at once; the running job's result is dropped", function()
      run(function()
        local t0 = lr.now()
        local task = lr.spawn(function()
          return lr.run_in_pool(function()
            local t = os.clock()
            while os.clock() - t < 1.5 do end
            return "late"
          end)
        end)
        lr.sleep(0.05)
        task:cancel()
        local ok, err = pcall(task.wait, task)
        assert.is_false(ok)
        assert.equal("cancelled", err.kind)
        assert.is_true(lr.now() - t0 < 1.2, "cancel waited for the job")
        -- the other workers still serve calls meanwhile
        assert.equal(1, lr.run_in_pool(function() return 1 end))
      end)
    end)

    it("lr.timeout around run_in_pool returns timeout", function()
      run(function()
        local r, err = lr.timeout(0.05, lr.run_in_pool, function()
          local t = os.clock()
          while os.clock() - t < 1.0 do end
          return "late"
        end)
        assert.is_nil(r)
        assert.equal("timeout", err.kind)
      end)
    end)

    it("cancelling many queued jobs leaves the pool usable", function()
      run(function()
        local tasks = {}
        for i = 1, 50 do
          tasks[i] = lr.spawn(lr.run_in_pool, function(x)
            local t = os.clock()
            while os.clock() - t < 0.01 do end
            return x
          end, i)
        end
        lr.sleep(0)
        for _, t in ipairs(tasks) do t:cancel() end
        for _, t in ipairs(tasks) do
          local ok, err = pcall(t.wait, t)
          assert.is_true(ok or err.kind == "cancelled")
        end
        assert.equal("ok", lr.run_in_pool(function() return "ok" end))
      end)
    end)

    it("cancels jobs sent in the same turn before any worker saw them", function()
      -- Jobs sent while other tasks are ready wait on the loop thread until the
      -- turn ends: cancelling some of them there must drop exactly those.
      run(function()
        local ran = {}
        local tasks = {}
        for i = 1, 300 do
          tasks[i] = lr.spawn(function() return lr.run_in_pool(function(x) return x * 2 end, i) end)
        end
        local canceller = lr.spawn(function()
          for i = 1, 300, 3 do tasks[i]:cancel() end
        end)
        canceller:wait()
        for i, t in ipairs(tasks) do
          local ok, v = pcall(t.wait, t)
          if i % 3 == 1 then
            assert.is_false(ok)
            assert.equal("cancelled", v.kind)
          else
            assert.is_true(ok)
            assert.equal(i * 2, v)
            ran[#ran + 1] = i
          end
        end
        assert.equal(200, #ran)
        assert.equal("ok", lr.run_in_pool(function() return "ok" end))
      end)
    end)
  end)

  describe("throughput", function()
    it("runs 10,000 small jobs with correct results", function()
      run(function()
        local items = {}
        for i = 1, 10000 do items[i] = i end
        local results = lr.map(items, function(i)
          return lr.run_in_pool(function(x) return x * 2 end, i)
        end, {limit = 100})
        assert.equal(10000, results.n)
        for i = 1, 10000 do assert.equal(i * 2, results[i]) end
        -- and one after another
        local sum = 0
        for i = 1, 2000 do sum = sum + lr.run_in_pool(function(x) return x end, i) end
        assert.equal(2000 * 2001 // 2, sum)
      end)
    end)

    it("compiles each function once per worker, not once per call", function()
      run(function()
        local seen, n = {}, 0
        for _ = 1, 1000 do
          local id = lr.run_in_pool(function() return tostring(debug.getinfo(1, "f").func) end)
          if not seen[id] then seen[id] = true; n = n + 1 end
        end
        assert.is_true(n <= lr.pool_size(), n .. " distinct closures for " .. lr.pool_size() .. " workers")
      end)
    end)

    it("runs jobs queued together on every worker at once", function()
      -- Each job waits (up to 5 s) until all have started; it can only see them all
      -- if every worker took one. Right after a short job, so that a worker is
      -- polling the queue when they are queued: it must not take them all alone.
      local code, out, err = util.luarun([[
        local lr = require "luarun"
        local N = 3
        lr.pool_size(N)
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir " .. dir))
        local function rendezvous(d, i, n)
          io.open(d .. "/" .. i, "w"):close()
          local deadline = os.time() + 5
          repeat
            local all = true
            for k = 1, n do
              local f = io.open(d .. "/" .. k)
              if f then f:close() else all = false end
            end
            if all then return true end
          until os.time() > deadline
          return false
        end
        for round = 1, 3 do
          for k = 1, N do os.remove(dir .. "/" .. k) end
          lr.run_in_pool(function() end)
          local fns = {}
          for i = 1, N do
            fns[i] = function() return lr.run_in_pool(rendezvous, dir, i, N) end
          end
          local r = lr.gather(fns)
          for i = 1, N do io.write(tostring(r[i]), " ") end
        end
        for k = 1, N do os.remove(dir .. "/" .. k) end
        os.remove(dir)
      ]])
      assert.equal(0, code, err)
      assert.equal(string.rep("true ", 9), out)
    end)

    it("keeps the loop responsive while every worker is busy", function()
      run(function()
        local ticks, stop = 0, false
        local ticker = lr.spawn(function()
          while not stop do
            lr.sleep(0.01)
            ticks = ticks + 1
          end
        end)
        local jobs = {}
        for i = 1, lr.pool_size() * 2 do
          jobs[i] = function()
            return lr.run_in_pool(function()
              local t = os.clock()
              while os.clock() - t < 0.25 do end
              return true
            end)
          end
        end
        local t0 = lr.now()
        lr.gather(jobs)
        local elapsed = lr.now() - t0
        stop = true
        ticker:wait()
        -- At 10 ms a tick, elapsed/0.01 ticks would be perfect; a loaded machine
        -- loses many, a stalled loop would get about none.
        assert.is_true(ticks >= math.max(3, elapsed / 0.01 / 4),
                       ticks .. " ticks in " .. elapsed .. " s")
      end)
    end)
  end)

  describe("lr.pool_size", function()
    it("returns the size and refuses a change once started", function()
      run(function()
        lr.run_in_pool(function() end)
        local n = lr.pool_size()
        assert.is_true(math.type(n) == "integer" and n >= 1)
        assert.equal(n, lr.pool_size(n))
        assert.matches("already started", errmsg(lr.pool_size, n + 1))
      end)
      assert.has_error(function() lr.pool_size(0) end)
    end)

    it("honours LUARUN_POOL_SIZE and lr.pool_size before first use", function()
      local code, out = util.sh("LUARUN_POOL_SIZE=3 " .. util.bin
                                .. [[ -e 'print(require("luarun").pool_size())']])
      assert.equal(0, code)
      assert.equal("3\n", out)
      local code2, out2 = util.luarun([[
        local lr = require "luarun"
        lr.pool_size(5)
        local ids = {}
        lr.run_in_pool(function() end)
        print(lr.pool_size())
      ]])
      assert.equal(0, code2)
      assert.equal("5\n", out2)
    end)
  end)

  describe("robustness", function()
    it("a worker out of memory raises in the caller and keeps working", function()
      local code, out, err = util.luarun([[
        local lr = require "luarun"
        lr.pool_size(1, {memory_limit = 16 * 1024 * 1024})
        local ok, e = pcall(lr.run_in_pool, function()
          local t = {}
          for i = 1, 1e9 do t[i] = string.rep("x", 100) .. i end
        end)
        print(ok, e)
        print(lr.run_in_pool(function(s) return #string.rep(s, 1000) end, "abc"))
      ]])
      assert.equal(0, code, err)
      assert.matches("^false\tnot enough memory", out)
      assert.matches("\n3000\n$", out)
    end)

    it("exits promptly with an orphaned job still looping in a worker", function()
      local code, out, err = util.luarun([[
        local lr = require "luarun"
        local r, e = lr.timeout(0.05, lr.run_in_pool, function() while true do end end)
        print(e.kind)
      ]])
      assert.equal(0, code, err)
      assert.equal("timeout\n", out)
    end)

    it("names the worker threads", function()
      run(function()
        local name = lr.run_in_pool(function()
          local f = assert(io.open("/proc/thread-self/comm"))
          local s = f:read("l")
          f:close()
          return s
        end)
        assert.matches("^luarun%-pool%-%d+$", name)
      end)
    end)

    it("works from the luarun executable", function()
      local code, out, err = util.luarun([[
        local lr = require "luarun"
        print(lr.run_in_pool(function(a) return a .. "!" end, "hi"))
      ]])
      assert.equal(0, code, err)
      assert.equal("hi!\n", out)
    end)
  end)
end)

describe("examples/cpu_pool.lua", function()
  it("shows the ticker starving with direct calls and keeping time with the pool", function()
    local code, out, err = util.sh("timeout 120 " .. util.quote(util.bin)
                                   .. " examples/cpu_pool.lua 4 200000")
    assert.equal(0, code, err)
    local dwall, dticks = out:match("directly in tasks:%s+([%d.]+) s, ticker ticked%s+(%d+)")
    local pwall, pticks = out:match("run_in_pool:%s+([%d.]+) s, ticker ticked%s+(%d+)")
    assert.is_truthy(dwall, out)
    assert.is_truthy(pwall, out)
    -- Loose: the direct run lets the ticker in at most once per job boundary.
    assert.is_true(tonumber(dticks) <= 5, out)
    assert.is_true(tonumber(pticks) >= math.max(2, tonumber(pwall) / 0.01 / 4), out)
  end)
end)
