-- (d) one upstream GET per request: luarun bench/serve/luarun_d.lua PORT UPSTREAM_URL
local http = require "luarun.http"
local upstream = arg[2]
local s = http.serve({port = tonumber(arg[1])}, function(req)
  local res, err = http.get(upstream)
  if not res then return 502, {["content-type"] = "text/plain"}, tostring(err) end
  return 200, {["content-type"] = "text/plain"}, res.body
end)
s:wait()
