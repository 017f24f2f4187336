-- (a) plaintext: luarun bench/serve/luarun_a.lua PORT
local http = require "luarun.http"
local s = http.serve({port = tonumber(arg[1])}, function(req)
  return 200, {["content-type"] = "text/plain"}, "Hello, World!"
end)
s:wait()
