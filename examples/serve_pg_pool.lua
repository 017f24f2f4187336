#!/usr/bin/env luarun
-- An HTTP API over PostgreSQL: each handler runs as its own task and borrows a
-- connection from a db.pool for its statements.
--   luarun examples/serve_pg_pool.lua [POSTGRES_URL] [PORT]   (default port 8080; 0 picks a free one)
-- The URL may come from the environment instead: LUARUN_PG_URL=postgresql://user@/db?host=/run/postgresql
--
--   GET  /notes              the latest notes (?limit=N, at most 100)
--   POST /notes              {"body": "..."} -> 201 and the note (id and time from the server)
--   GET  /notes/{id}         one note, or 404
--   GET  /slow               a 0.2 s query: ask many at once and watch /pool
--   GET  /pool               pool:stats(): size, idle, in_use, opened
--
--   curl -s localhost:8080/notes -d '{"body": "hello"}'
--   curl -s localhost:8080/notes
local http = require "luarun.http"
local db = require "luarun.db"
local json = require "luarun.json"

local url, port = os.getenv("LUARUN_PG_URL"), 8080
for _, a in ipairs(arg) do
  if a:match("^postgres") then url = a
  elseif math.tointeger(tonumber(a)) then port = math.tointeger(tonumber(a))
  else error("usage: serve_pg_pool.lua [POSTGRES_URL] [PORT]") end
end
assert(url, "serve_pg_pool.lua: give a postgresql:// URL as an argument or in LUARUN_PG_URL")

-- At most 5 connections, opened as they are needed. timeout: a call waiting longer
-- than 2 s for a free connection (or running longer) returns nil, err (kind "timeout").
local pool = db.pool(url, {size = 5, timeout = 2, statement_timeout = 5})

-- The table, once, before serving. A connection that cannot be opened fails here.
assert(pool:exec([[
  create table if not exists notes (
    id      bigserial primary key,
    body    text not null check (body <> ''),
    created timestamptz not null default now()
  )]]))

-- A failed statement: 503 when the database is out of reach or too slow, 500 else.
local function failed(err)
  local status = (err.kind == "timeout" or err.kind == "closed" or err.kind == "connect") and 503 or 500
  return {status = status, json = {error = err.kind, detail = err.pool and "no free connection" or err.message}}
end

local app = http.router()

app:get("/notes", function(req)
  local limit = math.min(tonumber(req.query.limit) or 20, 100) // 1
  local rows, err = pool:query("select id, body, created from notes order by id desc limit $1", limit)
  if not rows then return failed(err) end
  -- A row is {column = value}; rows.columns lists the names, and goes before the
  -- list is encoded as a JSON array (json.array: [] when empty).
  rows.columns = nil
  return {json = {notes = json.array(rows), count = #rows}}
end)

app:post("/notes", function(req)
  local v = assert(req:json())  -- not JSON: the server answers 400 itself
  if type(v) ~= "table" or type(v.body) ~= "string" or v.body == "" then
    return {status = 400, json = {error = "a note needs a non-empty \"body\""}}
  end
  -- Bound as $1: the text goes to the server as a value, never as SQL.
  local rows, err = pool:query("insert into notes (body) values ($1) returning id, body, created", v.body)
  if not rows then return failed(err) end
  return {status = 201, headers = {location = "/notes/" .. rows[1].id}, json = rows[1]}
end)

app:get("/notes/{id}", function(req)
  local id = math.tointeger(tonumber(req.params.id))
  if not id then return {status = 400, json = {error = "not an id: " .. req.params.id}} end
  local rows, err = pool:query("select id, body, created from notes where id = $1", id)
  if not rows then return failed(err) end
  if not rows[1] then return {status = 404, json = {error = "no note " .. id}} end
  return {json = rows[1]}
end)

app:get("/slow", function()
  local rows, err = pool:query("select pg_sleep(0.2), now() as at")
  if not rows then return failed(err) end
  return {json = {at = rows[1].at}}
end)

app:get("/pool", function() return {json = pool:stats()} end)

local server = assert(http.serve({port = port}, app))
print("listening on " .. server.url)
io.stdout:flush()
server:wait()
