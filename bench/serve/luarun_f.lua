-- (f) WebSocket echo: luarun bench/serve/luarun_f.lua PORT
local http = require "luarun.http"
local s = http.serve({port = tonumber(arg[1]), backlog = 4096}, function(req)
  local ws = assert(req:websocket())
  for msg, kind in ws:messages() do
    if kind == "binary" then ws:send_binary(msg) else ws:send(msg) end
  end
end)
s:wait()
