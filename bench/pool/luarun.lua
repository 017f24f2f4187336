-- bench/pool/luarun.lua: lr.run_in_pool, (a) speedup, (b) per-call cost, (c) copy cost.
--   luarun bench/pool/luarun.lua [job_iterations]
local lr = require "luarun"
local ITER = tonumber(arg[1]) or 20000000

local function cpu(n)
  local x = 0
  for i = 1, n do x = (x + i * i) % 1000003 end
  return x
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

lr.run_in_pool(function() end) -- start the pool (not part of any figure)

-- (a) 8 equal CPU-bound jobs: one after another in the main thread vs pooled.
local t0 = lr.now()
for _ = 1, 8 do cpu(ITER) end
local seq = lr.now() - t0
local fns = {}
for i = 1, 8 do fns[i] = function() return lr.run_in_pool(cpu, ITER) end end
t0 = lr.now()
lr.gather(fns)
local pooled = lr.now() - t0
print(string.format("a_sequential_s %.3f", seq))
print(string.format("a_pooled_s %.3f", pooled))
print(string.format("a_speedup %.2f", seq / pooled))
print(string.format("a_workers %d", lr.pool_size()))

-- (b) 10,000 trivial calls: awaited one after another, and all submitted at once.
local N = 10000
local function trivial(x) return x end
local runs = {}
for r = 1, 3 do
  t0 = lr.now()
  for i = 1, N do lr.run_in_pool(trivial, i) end
  runs[r] = (lr.now() - t0) / N * 1e6
end
print(string.format("b_sequential_us %.2f", median(runs)))
local items = {}
for i = 1, N do items[i] = i end
runs = {}
for r = 1, 3 do
  t0 = lr.now()
  lr.map(items, function(i) return lr.run_in_pool(trivial, i) end)
  runs[r] = (lr.now() - t0) / N * 1e6
end
print(string.format("b_concurrent_us %.2f", median(runs)))

-- (c) a 1 MB string argument, returned as the result (1 MB each way).
local big = string.rep("x", 1024 * 1024 - 1) .. "y"
local M = 200
for _ = 1, 10 do lr.run_in_pool(trivial, big) end -- warm up
runs = {}
for r = 1, 3 do
  t0 = lr.now()
  for _ = 1, M do assert(#lr.run_in_pool(trivial, big) == #big) end
  runs[r] = (lr.now() - t0) / M * 1e6
end
print(string.format("c_1mb_roundtrip_us %.1f", median(runs)))
