-- Async is about waiting efficiently: N sleeps one after another take N times as
-- long as one; the same N sleeps waiting at once take about as long as one.
--   luarun examples/sleeps.lua [n=100] [seconds=0.1]
local lr = require "luarun"

local n = tonumber(arg[1]) or 100
local seconds = tonumber(arg[2]) or 0.1

local function work(i)
  lr.sleep(seconds) -- stands for a request that takes `seconds` to answer
  return i
end

local t0 = lr.now()
for i = 1, n do work(i) end
local sequential = lr.now() - t0

t0 = lr.now()
local tasks = {}
for i = 1, n do tasks[i] = function() return work(i) end end
local results = lr.gather(tasks)
local concurrent = lr.now() - t0
assert(results.n == n and results[n] == n)

print(string.format("%d sleeps of %g s, one after another: %6.2f s", n, seconds, sequential))
print(string.format("%d sleeps of %g s, all at once:       %6.2f s", n, seconds, concurrent))
print(string.format("speed-up: %.0fx", sequential / concurrent))
