-- (e) POST body, answer its length: luarun bench/serve/luarun_e.lua PORT
local http = require "luarun.http"
local s = http.serve({port = tonumber(arg[1])}, function(req)
  return 200, {["content-type"] = "text/plain"}, tostring(#req:body())
end)
s:wait()
