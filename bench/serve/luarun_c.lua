-- (c) the handler sleeps 10 ms: luarun bench/serve/luarun_c.lua PORT
local lr = require "luarun"
local http = require "luarun.http"
local s = http.serve({port = tonumber(arg[1]), backlog = 4096}, function(req)
  lr.sleep(0.01)
  return 200, {["content-type"] = "text/plain"}, "Hello, World!"
end)
s:wait()
