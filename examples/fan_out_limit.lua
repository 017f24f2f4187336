#!/usr/bin/env luarun
-- Fan-out with a limit: 40 jobs, at most 8 at once, two ways.
--   luarun examples/fan_out_limit.lua [jobs] [limit]
-- lr.map with {limit = N} when the jobs are a list; a Semaphore when tasks are
-- started from many places and must share one budget (say, connections to a host).
-- lr.sleep stands in for the I/O each job waits on.
local lr = require "luarun"

local jobs = tonumber(arg[1]) or 40
local limit = tonumber(arg[2]) or 8

local inside, most = 0, 0
local function job(i)
  inside = inside + 1
  most = math.max(most, inside)
  lr.sleep(0.01 + (i % 5) * 0.002) -- the "request"
  inside = inside - 1
  return i * i
end

local items = {}
for i = 1, jobs do items[i] = i end

-- 1. lr.map: results in input order, never more than `limit` running.
local t0 = lr.now()
local squares = lr.map(items, job, {limit = limit})
print(("map:       %d jobs, at most %d at once, %.2f s, last result %d")
      :format(squares.n, most, lr.now() - t0, squares[jobs]))

-- 2. A Semaphore: every task is spawned at once, the semaphore keeps the budget.
inside, most = 0, 0
local sem = lr.Semaphore(limit)
t0 = lr.now()
local tasks = {}
for i = 1, jobs do
  tasks[i] = lr.spawn(function() return sem:with(job, i) end)
end
local results = lr.gather(tasks)
print(("semaphore: %d jobs, at most %d at once, %.2f s, last result %d")
      :format(results.n, most, lr.now() - t0, results[jobs]))
