#!/usr/bin/env luarun
-- The seed's async web server: a handler that asks several upstream services at
-- once and answers when the slowest of them has, not after the sum of them all.
-- The "upstream services" are a second http.serve in this same script, whose answers
-- each take 0.2 s, so the fan-out is visible from a shell:
--   luarun examples/serve_fan_out.lua [PORT]      (default 8080; 0 picks a free port)
--   curl -s localhost:8080/dashboard/7            three calls at once: ~0.2 s, not 0.6
--   curl -s 'localhost:8080/basket?item=tea&item=cup&item=pot'   one call per item
--   curl -s localhost:8080/dashboard/0            an upstream fails: 502
local lr = require "luarun"
local http = require "luarun.http"

local port = tonumber(arg[1] or "8080")
assert(port and math.type(port) == "integer", "usage: serve_fan_out.lua [PORT]")
local DELAY = tonumber(os.getenv("UPSTREAM_DELAY") or "0.2")

-- ---- the upstream: a slow service (in real life, another machine) ----
local up = http.router()
up:get("/users/{id}", function(req)
  lr.sleep(DELAY)
  if req.params.id == "0" then return 503, nil, "user service is down\n" end
  return {json = {id = req.params.id, name = "user " .. req.params.id}}
end)
up:get("/orders/{id}", function(req)
  lr.sleep(DELAY)
  return {json = {{order = 1, total = 12.5}, {order = 2, total = 3}}}
end)
up:get("/recommended/{id}", function(req)
  lr.sleep(DELAY)
  return {json = {"teapot", "kettle"}}
end)
up:get("/prices/{item}", function(req)
  lr.sleep(DELAY)
  return {json = {item = req.params.item, price = #req.params.item * 1.5}}
end)
local upstream = assert(http.serve({port = 0}, up))

-- One shared client for the upstream calls: its connections are kept and reused,
-- and every call has a time limit, so a stuck upstream cannot hold a request forever.
local client = http.client({timeout = 5, max_per_host = 50})

-- GET upstream path -> decoded JSON; a failure raises, with a message for the log.
local function fetch(path)
  local res = assert(client:get(upstream.url .. path))
  if not res.ok then error(("upstream %s answered %d"):format(path, res.status), 0) end
  return res:json()
end

-- ---- the front: what clients call ----
local app = http.router()

app:get("/dashboard/{id}", function(req)
  local id = req.params.id
  local t0 = lr.now()
  -- Three different calls, waited for together. Without settle, the first one that
  -- fails cancels the other two (they stop waiting at once) and gather raises it.
  local ok, user, orders, recommended = pcall(lr.gather,
    function() return fetch("/users/" .. id) end,
    function() return fetch("/orders/" .. id) end,
    function() return fetch("/recommended/" .. id) end)
  if not ok then
    return {status = 502, json = {error = tostring(user)}}
  end
  return {json = {user = user, orders = orders, recommended = recommended,
                  elapsed = lr.now() - t0}}
end)

app:get("/basket", function(req)
  local items = req.query.item or {}
  if type(items) == "string" then items = {items} end -- one ?item= is a string
  local t0 = lr.now()
  local calls = {}
  for i, item in ipairs(items) do
    calls[i] = function() return fetch("/prices/" .. item) end
  end
  -- N upstream calls, at most 10 in flight: a guest does not flood its host.
  local ok, prices = pcall(lr.gather, calls, {limit = 10})
  if not ok then return {status = 502, json = {error = tostring(prices)}} end
  local total = 0
  for i = 1, prices.n do total = total + prices[i].price end
  return {json = {items = #items, total = total, elapsed = lr.now() - t0}}
end)

local server = assert(http.serve({port = port}, app))
print("listening on " .. server.url .. " (upstream on " .. upstream.url .. ")")
io.stdout:flush()
server:wait()
