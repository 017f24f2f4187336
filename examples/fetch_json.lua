#!/usr/bin/env luarun
-- The everyday calls: GET with a query, POST JSON, and an error that is a value.
--   luarun examples/fetch_json.lua http://127.0.0.1:PORT
local http = require "luarun.http"

local base = assert(arg[1], "usage: fetch_json.lua BASE_URL")

local res = assert(http.get(base .. "/anything", {query = {q = "lua async", page = 2}}))
print(res.status, res:json().args.q)

res = assert(http.post(base .. "/anything", {json = {name = "luarun", tags = {"lua", "uv"}}}))
print(res.status, res:json().json.name)

local _, err = http.get(base .. "/delay/5", {timeout = 0.2})
print(err.kind, tostring(err))
