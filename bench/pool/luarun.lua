-- bench/pool/luarun.lua: lr.run_in_pool, (a) speedup, (b) per-call cost, (c) copy cost.
--   luarun bench/pool/luarun.lua [job_iterations]
local lr = require "luarun"
local ITER = tonumber(arg[1]) or 20000000
local ROUNDS = 3

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

-- The job of (a) in the pool: cpu's loop, and which worker ran it.
local function cpu_job(n)
  local x = 0
  for i = 1, n do x = (x + i * i) % 1000003 end
  local f = io.open("/proc/thread-self/comm")
  local who = f and f:read("l") or "?"
  if f then f:close() end
  return x, who
end

-- (a) 8 equal CPU-bound jobs: one after another in the main thread vs pooled.
-- ROUNDS rounds of both, one after the other, so a change in the machine's load
-- hits both; medians. a_cpu_used: CPU seconds the process used per wall second
-- while pooled (2.0 on 2 cores: every core ran our threads; less: the machine's
-- other processes had them). a_jobs_per_worker: how the last round's jobs spread.
local seqs, pools, speedups, cpus = {}, {}, {}, {}
local per_worker
local fns = {}
for i = 1, 8 do
  fns[i] = function()
    local _, who = lr.run_in_pool(cpu_job, ITER)
    return who
  end
end
local t0
for r = 1, ROUNDS do
  t0 = lr.now()
  for _ = 1, 8 do cpu(ITER) end
  seqs[r] = lr.now() - t0
  local c0 = os.clock()
  t0 = lr.now()
  local who = lr.gather(fns)
  pools[r] = lr.now() - t0
  cpus[r] = (os.clock() - c0) / pools[r]
  speedups[r] = seqs[r] / pools[r]
  per_worker = {}
  for i = 1, 8 do per_worker[who[i]] = (per_worker[who[i]] or 0) + 1 end
end
local counts = {}
for _, n in pairs(per_worker) do counts[#counts + 1] = n end
table.sort(counts, function(a, b) return a > b end)
local each = {}
for i, v in ipairs(speedups) do each[i] = string.format("%.2f", v) end
print(string.format("a_sequential_s %.3f", median(seqs)))
print(string.format("a_pooled_s %.3f", median(pools)))
print(string.format("a_speedup %.2f", median(speedups)))
print(string.format("a_speedups %s", table.concat(each, ",")))
print(string.format("a_workers %d", lr.pool_size()))
local cpu_used = median(cpus)
print(string.format("a_cpu_used %.2f", cpu_used))
-- Speedup per core we actually got: 1.0 when the pool wastes nothing.
print(string.format("a_efficiency %.2f", median(speedups) / cpu_used))
print(string.format("a_jobs_per_worker %s", table.concat(counts, ",")))

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
