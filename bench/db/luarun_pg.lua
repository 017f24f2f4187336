-- bench/db.sh's luarun side on PostgreSQL:  luarun luarun_pg.lua WORKLOAD URL N
-- Prints "result SECONDS" for the timed part; raises (exit 1) when a check fails.
local lr = require "luarun"
local db = require "luarun.db"
local W, URL, N = arg[1], arg[2], math.tointeger(tonumber(arg[3]))
local POINT = "SELECT id, name, score, created FROM items WHERE id = $1"
local BIG = "SELECT id, name, score, created FROM big"

-- ntasks functions for lr.gather: the w-th calls fn(k) for k = w, w + ntasks, ... < N.
local function tasks(ntasks, fn)
  local fns = {}
  for w = 0, ntasks - 1 do
    fns[#fns + 1] = function() for k = w, N - 1, ntasks do fn(k) end end
  end
  return fns
end

local function timed(fn)
  local t0 = lr.now()
  fn()
  return lr.now() - t0
end

local dt
if W == "a" then -- N point selects from 50 tasks over a pool of 10
  local pool = assert(db.pool(URL, {size = 10}))
  lr.gather(tasks(10, function() -- open the 10 connections before the clock starts
    pool:with(function(conn) assert(conn:query("SELECT 1")); lr.sleep(0.05) end)
  end))
  dt = timed(function()
    lr.gather(tasks(50, function(k)
      local rows = assert(pool:query(POINT, k % 10000 + 1))
      assert(rows[1].id == k % 10000 + 1)
    end))
  end)
else
  local conn = assert(db.open(URL))
  if W == "b" or W == "b_seq" then -- one connection: 100 tasks (pipelined) or one
    dt = timed(function()
      lr.gather(tasks(W == "b" and 100 or 1, function(i)
        assert(assert(conn:query("SELECT $1::int + 1 AS v", i))[1].v == i + 1)
      end))
    end)
  elseif W == "c_full" then
    local rows
    local s = 0
    dt = timed(function()
      rows = assert(conn:query(BIG))
      for _, r in ipairs(rows) do s = s + r.id end
    end)
    assert(#rows == N and s == N * (N + 1) // 2)
  elseif W == "c_cursor" then
    local n, s = 0, 0
    dt = timed(function()
      for r in conn:rows(BIG) do n = n + 1; s = s + r.id end
    end)
    assert(n == N and s == N * (N + 1) // 2)
  elseif W == "d" then -- COPY FROM STDIN
    local rows = {}
    for i = 0, N - 1 do rows[#rows + 1] = {i, "name " .. i, i * 0.5} end
    dt = timed(function()
      assert(conn:copy_in("COPY ins (id, name, score) FROM STDIN", rows))
    end)
    assert(assert(conn:query("SELECT count(*) AS n FROM ins"))[1].n == N)
  else
    error("unknown workload " .. W)
  end
  conn:close()
end
print(string.format("result %.4f", dt))
