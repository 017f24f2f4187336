-- luarun peer of bench/http_bench.sh: N GETs of URL, at most LIMIT at once.
--   luarun bench/http_luarun.lua URL N LIMIT   -> prints "wall_seconds failures"
local lr = require "luarun"
local http = require "luarun.http"

local url, n, limit = arg[1], tonumber(arg[2]), tonumber(arg[3])
local client = http.client()
local failures = 0
local items = {}
for i = 1, n do items[i] = i end
local t0 = lr.now()
lr.map(items, function()
  local res = client:get(url)
  if not res or res.status ~= 200 then failures = failures + 1 end
end, {limit = limit})
print(("%.3f %d"):format(lr.now() - t0, failures))
