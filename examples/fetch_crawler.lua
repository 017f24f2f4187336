#!/usr/bin/env luarun
-- A polite crawler: follows links within one site, at most `rate` requests per second
-- (servers throttle scrapers) and `limit` at once, each page fetched once.
--   luarun examples/fetch_crawler.lua BASE_URL [pages] [rate]
-- BASE_URL is a server with httpbin's /links/N/I pages, e.g. spec/support/httpbin.py.
local lr = require "luarun"
local http = require "luarun.http"
local html = require "luarun.html"

local base = assert(arg[1], "usage: fetch_crawler.lua BASE_URL [pages] [rate]")
local pages = tonumber(arg[2]) or 30
local rate = tonumber(arg[3]) or 20
local limit = 4

local rl = lr.RateLimit(rate, 1)  -- at most `rate` requests in any second
local sem = lr.Semaphore(limit)   -- at most `limit` requests at once
local seen, fetched, failed = {}, 0, 0
local client = http.client()
local prefix = http.url.normalize(base .. "/links/")  -- the pages this crawl stays within

-- Links are read by an HTML parser (doc:links() resolves each href against the page's
-- URL and <base>), never by matching `href="..."` in the text: that misses single
-- quotes, unquoted values, entities and relative references, and finds hrefs in comments.
local function crawl(s, url)
  if seen[url] then return end
  seen[url] = true
  rl:acquire()
  local res, err = sem:with(client.get, client, url, {timeout = 10})
  local doc, perr
  if res then doc, perr = html.parse(res) end
  if not doc then
    failed = failed + 1
    print(("%s: %s"):format(url, tostring(err or perr)))
    return
  end
  fetched = fetched + 1
  for _, link in ipairs(doc:links()) do
    local u = http.url.normalize(link)    -- one spelling per page; no #fragment
    if u and u:sub(1, #prefix) == prefix and not seen[u] then s:spawn(crawl, s, u) end
  end
end

local t0 = lr.now()
lr.scope(function(s) crawl(s, http.url.normalize(("%s/links/%d/0"):format(base, pages))) end)
local wall = lr.now() - t0
print(("crawled %d pages (%d failed) in %.2f s, at most %d per second and %d at once")
      :format(fetched, failed, wall, rate, limit))
