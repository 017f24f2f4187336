#!/usr/bin/env luarun
-- mistake_cpu_in_task.lua: CPU-bound work called directly in a task freezes the loop.
--
-- A task that computes without waiting never gives the loop back: every other task
-- (here a heartbeat that should tick every 20 ms) stands still until it is done.
-- `--debug` names the culprit while it runs, with the line it is busy on:
--
--   luarun --debug examples/mistake_cpu_in_task.lua          the mistake
--   luarun --debug examples/mistake_cpu_in_task.lua fixed    the fix: lr.run_in_pool
--
-- The fix moves the computation to a pool worker (its own thread and Lua state): the
-- task waits for the result like it waits for I/O, and the heartbeat keeps time.
-- Optional second argument: the size of the job (default 800000).
local lr = require "luarun"

local fixed = arg[1] == "fixed"
local size = tonumber(arg[2]) or 800000

-- Counts the primes below n by trial division. No upvalues, so lr.run_in_pool can
-- copy it to a worker as it is.
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

-- The heartbeat: ticks every 20 ms and remembers the longest gap between two ticks.
local stop, longest = false, 0
local heartbeat = lr.spawn(function()
  local last = lr.now()
  while not stop do
    lr.sleep(0.02)
    local now = lr.now()
    longest = math.max(longest, now - last)
    last = now
  end
end)

lr.sleep(0.05) -- the heartbeat ticks a little first
local t0 = lr.now()
local primes
if fixed then
  primes = lr.run_in_pool(count_primes, size)   -- the fix: off the loop
else
  primes = count_primes(size)                   -- the mistake: on the loop
end
local took = lr.now() - t0
stop = true
heartbeat:wait()

print(("%s: %d primes below %d in %.2f s; the heartbeat's longest gap: %.0f ms (should be ~20)")
      :format(fixed and "run_in_pool" or "in the task", primes, size, took, longest * 1000))
