-- (g) = (a), run while slowloris connections drip: luarun bench/serve/luarun_g.lua PORT
local http = require "luarun.http"
local s = http.serve({port = tonumber(arg[1])}, function(req)
  return 200, {["content-type"] = "text/plain"}, "Hello, World!"
end)
s:wait()
