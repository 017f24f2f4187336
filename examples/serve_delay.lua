#!/usr/bin/env luarun
-- The seed's experiment, served by luarun itself: an httpbin-like server whose
-- /delay/N answers after N seconds. The README's main job (examples/demo.sh) fetches
-- from it, so the demo needs nothing but luarun.
--   luarun examples/serve_delay.lua [PORT]        (default 8080; 0 picks a free port)
--
--   GET /delay/N      sleeps N seconds (at most 10, as httpbin), then answers JSON
--   ANY /anything     echoes the request: method, args, headers, json, data
--   GET /get          the same, for GET only
-- It prints "listening on <url>" once it accepts connections, and serves until
-- Ctrl-C or SIGTERM.
local lr = require "luarun"
local http = require "luarun.http"
local json = require "luarun.json"

local port = tonumber(arg[1] or "8080")
assert(port and math.type(port) == "integer", "usage: serve_delay.lua [PORT]")

-- What httpbin answers: the request, echoed back as JSON.
local function echo(req)
  local body = req:body() or ""
  local ok, value = pcall(json.decode, body)
  return {
    method = req.method,
    url = "http://" .. (req.headers.host or "localhost") .. req.target,
    args = req.query,
    headers = req.headers,
    origin = req.remote_addr,
    data = body,
    json = ok and value or nil,
  }
end

local app = http.router()

app:get("/delay/{seconds}", function(req)
  local seconds = tonumber(req.params.seconds)
  if not seconds or seconds < 0 then
    return 400, nil, "the delay must be a number of seconds\n"
  end
  -- The sleep is the whole point: while this request waits, the task is parked and
  -- the server goes on accepting and answering the others.
  lr.sleep(math.min(seconds, 10))
  return {json = echo(req)}
end)

app:get("/get", function(req) return {json = echo(req)} end)

for _, method in ipairs({"GET", "POST", "PUT", "PATCH", "DELETE"}) do
  app:route(method, "/anything", function(req) return {json = echo(req)} end)
end

-- The demo opens a few hundred connections at once; keep-alive ones that sit idle
-- are dropped after idle_timeout (30 s by default), which is plenty.
local server = assert(http.serve({port = port}, app))
print("listening on " .. server.url)
io.stdout:flush() -- a script reading our output (demo.sh) waits for this line
server:wait()     -- the main task waits here; Ctrl-C or SIGTERM cancels it
