#!/usr/bin/env luarun
-- A polite crawler: follows links within one site, at most `rate` requests per second
-- (servers throttle scrapers) and `limit` at once, each page fetched once.
--   luarun examples/fetch_crawler.lua BASE_URL [pages] [rate]
-- BASE_URL is a server with httpbin's /links/N/I pages, e.g. spec/support/httpbin.py.
local lr = require "luarun"
local http = require "luarun.http"

local base = assert(arg[1], "usage: fetch_crawler.lua BASE_URL [pages] [rate]")
local pages = tonumber(arg[2]) or 30
local rate = tonumber(arg[3]) or 20
local limit = 4

local rl = lr.RateLimit(rate, 1)  -- at most `rate` requests in any second
local sem = lr.Semaphore(limit)   -- at most `limit` requests at once
local seen, fetched, failed = {}, 0, 0
local client = http.client()

local function crawl(s, path)
  if seen[path] then return end
  seen[path] = true
  rl:acquire()
  local res, err = sem:with(client.get, client, base .. path, {timeout = 10})
  if not res then
    failed = failed + 1
    print(("%s: %s"):format(path, tostring(err)))
    return
  end
  fetched = fetched + 1
  for link in res.body:gmatch('href="(/links/[^"]+)"') do
    if not seen[link] then s:spawn(crawl, s, link) end
  end
end

local t0 = lr.now()
lr.scope(function(s) crawl(s, ("/links/%d/0"):format(pages)) end)
local wall = lr.now() - t0
print(("crawled %d pages (%d failed) in %.2f s, at most %d per second and %d at once")
      :format(fetched, failed, wall, rate, limit))
