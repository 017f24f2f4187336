-- luarun peer of bench/http_bench.sh: N GETs of URL, at most LIMIT at once.
--   luarun bench/http_luarun.lua URL N LIMIT [workers]   -> prints "wall_seconds failures"
-- With "workers", LIMIT long-lived tasks take the requests in turn instead of lr.map's
-- task per request: the difference is what spawning a task per item costs.
local lr = require "luarun"
local http = require "luarun.http"

local url, n, limit, mode = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4]
local client = http.client()
local failures = 0
local function one()
  local res = client:get(url)
  if not res or res.status ~= 200 then failures = failures + 1 end
end
local t0 = lr.now()
if mode == "workers" then
  local left = n
  local workers = {}
  for w = 1, math.min(limit, n) do
    workers[w] = function()
      while left > 0 do
        left = left - 1
        one()
      end
    end
  end
  lr.gather(workers)
else
  local items = {}
  for i = 1, n do items[i] = i end
  lr.map(items, one, {limit = limit})
end
print(("%.3f %d"):format(lr.now() - t0, failures))
