-- cpu_pool.lua: "Mistake 1" -- CPU-bound work called directly in tasks stalls the loop.
--
-- The same jobs run twice while a 10 ms ticker counts its ticks: first called directly
-- in tasks (they never yield, so the ticker starves and they run on one core, one after
-- another), then through lr.run_in_pool (the loop stays free, the ticker keeps time,
-- and the jobs run in parallel on the worker threads).
--
--   luarun examples/cpu_pool.lua [jobs [size]]
local lr = require "luarun"

local njobs = tonumber(arg and arg[1]) or lr.pool_size() * 2
local size = tonumber(arg and arg[2]) or 500000

-- The CPU work: counts the primes below n by trial division. It uses no upvalues, so
-- it can be copied to a worker as it is.
local function count_primes(n)
  local count = 0
  for i = 2, n do
    local prime = true
    for d = 2, math.floor(math.sqrt(i)) do
      if i % d == 0 then prime = false; break end
    end
    if prime then count = count + 1 end
  end
  return count
end

-- Runs the jobs with `call` while a ticker ticks every 10 ms; returns wall time, ticks.
local function measure(call)
  local ticks, stop = 0, false
  local ticker = lr.spawn(function()
    while not stop do
      lr.sleep(0.01)
      ticks = ticks + 1
    end
  end)
  lr.sleep(0) -- let the ticker start
  local fns = {}
  for i = 1, njobs do fns[i] = function() return call(size) end end
  local t0 = lr.now()
  local results = lr.gather(fns)
  local wall = lr.now() - t0
  stop = true
  ticker:wait()
  for i = 2, njobs do assert(results[i] == results[1]) end
  return wall, ticks, results[1]
end

local direct_wall, direct_ticks, primes = measure(count_primes)
local pool_wall, pool_ticks = measure(function(n) return lr.run_in_pool(count_primes, n) end)

print(string.format("%d jobs, each counting the primes below %d (%d of them), %d pool workers",
                    njobs, size, primes, lr.pool_size()))
print(string.format("  called directly in tasks: %6.3f s, ticker ticked %4d times (~%d expected)",
                    direct_wall, direct_ticks, math.floor(direct_wall / 0.01)))
print(string.format("  through lr.run_in_pool:   %6.3f s, ticker ticked %4d times (~%d expected)",
                    pool_wall, pool_ticks, math.floor(pool_wall / 0.01)))
print(string.format("run_in_pool: %.1fx faster, and the loop kept serving other tasks.",
                    direct_wall / pool_wall))
