#!/usr/bin/env luarun
-- A worker pool: a fixed number of long-lived worker tasks take jobs from a queue
-- and report into a results table, with a scope that owns them all.
--   luarun examples/worker_pool.lua [jobs] [workers]
-- If one job fails, the scope cancels the other workers and raises that error, so a
-- broken job cannot leave workers running forever. Jobs here are CPU-bound, so each
-- worker hands its job to lr.run_in_pool (worker threads, every core) and waits.
local lr = require "luarun"

local njobs = tonumber(arg[1]) or 24
local nworkers = tonumber(arg[2]) or 4

local function digits_of_pi_sum(n) -- CPU work, copied to a pool thread as bytecode
  local s = 0
  for k = 0, n do s = s + (k % 2 == 0 and 1 or -1) / (2 * k + 1) end
  return 4 * s
end

local jobs = lr.Queue()
for i = 1, njobs do jobs:put(20000 + i) end
jobs:close()

local results, by = {}, {}
local t0 = lr.now()
lr.scope(function(s)
  for w = 1, nworkers do
    s:spawn(function()
      lr.current():set_name("worker " .. w)
      while true do
        local n = jobs:get()
        if not n then return end -- queue drained and closed
        results[n] = lr.run_in_pool(digits_of_pi_sum, n)
        by[w] = (by[w] or 0) + 1
      end
    end)
  end
end)

local done = 0
for _ in pairs(results) do done = done + 1 end
local shares = {}
for w = 1, nworkers do shares[w] = by[w] or 0 end
print(("%d jobs done by %d workers (%s), pi ~ %.6f, %.2f s")
      :format(done, nworkers, table.concat(shares, " + "), results[20000 + njobs],
              lr.now() - t0))
