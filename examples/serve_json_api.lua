#!/usr/bin/env luarun
-- A small JSON API with http.router: a list of items kept in memory.
--   luarun examples/serve_json_api.lua [PORT]     (default 8080; 0 picks a free port)
--
--   GET    /items          the list, ?tag=x to filter
--   POST   /items          {"name": ..., "tags": [...]} -> 201 and the new item
--   GET    /items/{id}     one item, or 404
--   PUT    /items/{id}     replaces name and tags
--   DELETE /items/{id}     204
--   GET    /health         "ok"
--
--   curl -s localhost:8080/items -d '{"name": "kettle", "tags": ["kitchen"]}'
--   curl -s localhost:8080/items/1
local http = require "luarun.http"
local json = require "luarun.json"

local port = tonumber(arg[1] or "8080")
assert(port and math.type(port) == "integer", "usage: serve_json_api.lua [PORT]")

local items, next_id = {}, 1

-- A 400 answer that says what is wrong, as JSON.
local function bad(message)
  return {status = 400, json = {error = message}}
end

-- The body as a valid item, or nil and a 400 answer. For a body that is not JSON at
-- all, assert(req:json()) raises an error that carries status 400: the server
-- answers 400 itself (not 500) and reports nothing.
local function item_from(req)
  local v = assert(req:json())
  if type(v) ~= "table" or type(v.name) ~= "string" or v.name == "" then
    return nil, bad("an item needs a non-empty \"name\"")
  end
  local tags = v.tags or {}
  if type(tags) ~= "table" then return nil, bad("\"tags\" must be a list of strings") end
  for _, t in ipairs(tags) do
    if type(t) ~= "string" then return nil, bad("\"tags\" must be a list of strings") end
  end
  -- json.array: an empty list must still be encoded as [], not as {}.
  return {name = v.name, tags = json.array(tags)}
end

local function find(req)
  local item = items[tonumber(req.params.id)]
  if not item then
    -- A table answer: a status with a JSON body, so clients can read the reason.
    return nil, {status = 404, json = {error = "no item " .. req.params.id}}
  end
  return item
end

local app = http.router()

app:get("/health", function() return "ok\n" end)

app:get("/items", function(req)
  local list = {}
  for id = 1, next_id - 1 do
    local item = items[id]
    local wanted = item and (req.query.tag == nil)
    for _, t in ipairs(item and item.tags or {}) do wanted = wanted or t == req.query.tag end
    if wanted then list[#list + 1] = item end
  end
  return {json = {items = json.array(list), count = #list}}
end)

app:post("/items", function(req)
  local item, answer = item_from(req)
  if not item then return answer end
  item.id = next_id
  items[next_id], next_id = item, next_id + 1
  return {status = 201, headers = {location = "/items/" .. item.id}, json = item}
end)

app:get("/items/{id}", function(req)
  local item, missing = find(req)
  return item and {json = item} or missing
end)

app:put("/items/{id}", function(req)
  local item, missing = find(req)
  if not item then return missing end
  local new, answer = item_from(req)
  if not new then return answer end
  item.name, item.tags = new.name, new.tags
  return {json = item}
end)

app:delete("/items/{id}", function(req)
  local item, missing = find(req)
  if not item then return missing end
  items[item.id] = nil
  -- Returning nothing answers 204 No Content.
end)

local server = assert(http.serve({port = port}, app))
print("listening on " .. server.url)
io.stdout:flush()
server:wait()
