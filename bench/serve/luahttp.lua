-- lua-http's server (on cqueues), one process: lua5.4 luahttp.lua WORKLOAD PORT [UPSTREAM_URL]
-- Debian's lua-http installs its own modules for 5.1-5.3 only and some pure-Lua
-- dependencies for 5.1/5.2 only; lua-http 0.4 supports 5.4, so bench/serve.sh runs it
-- on lua5.4 with LUA_PATH pointing at those directories (cqueues, luaossl, lpeg and
-- cjson have 5.4 builds).
local cqueues = require "cqueues"
local http_server = require "http.server"
local http_headers = require "http.headers"
local http_request = require "http.request"
local cjson = require "cjson"

local workload, port, upstream = arg[1], tonumber(arg[2]), arg[3]
local HELLO = "Hello, World!"

local function reply(stream, ctype, body)
  local h = http_headers.new()
  h:append(":status", "200")
  h:append("content-type", ctype)
  h:append("content-length", tostring(#body))
  stream:write_headers(h, false)
  stream:write_chunk(body, true)
end

local handlers = {
  a = function(stream) reply(stream, "text/plain", HELLO) end,
  b = function(stream) reply(stream, "application/json", cjson.encode({message = HELLO})) end,
  c = function(stream) cqueues.sleep(0.01); reply(stream, "text/plain", HELLO) end,
  d = function(stream)
    -- lua-http's client has no connection pool: a new connection per request
    local headers, s = http_request.new_from_uri(upstream):go(10)
    if not headers then error(s) end
    reply(stream, "text/plain", s:get_body_as_string())
  end,
  e = function(stream) reply(stream, "text/plain", tostring(#stream:get_body_as_string())) end,
}
handlers.g = handlers.a
local handler = assert(handlers[workload], "no workload " .. tostring(workload))

local server = assert(http_server.listen {
  host = "127.0.0.1",
  port = port,
  reuseaddr = true,
  onstream = function(_, stream)
    stream:get_headers()
    handler(stream)
  end,
  onerror = function(_, context, op, err)
    io.stderr:write(string.format("luahttp: %s on %s failed: %s\n", op, tostring(context), tostring(err)))
  end,
})
assert(server:listen())
assert(server:loop())
