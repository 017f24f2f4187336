-- (b) JSON: luarun bench/serve/luarun_b.lua PORT
local http = require "luarun.http"
local s = http.serve({port = tonumber(arg[1])}, function(req)
  return {status = 200, json = {message = "Hello, World!"}}
end)
s:wait()
