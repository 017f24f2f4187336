#!/usr/bin/env luarun
-- The scraper table: 1,000 URLs of /delay/0.1 fetched with 10, 50 and 100 at once.
--   luarun examples/fetch_scraper.lua http://127.0.0.1:PORT
-- LUARUN_DEMO_SMALL=1 fetches 40 URLs with 2, 5 and 10 at once, for the specs.
local lr = require "luarun"
local http = require "luarun.http"

local base = assert(arg[1], "usage: fetch_scraper.lua BASE_URL")
local small = os.getenv("LUARUN_DEMO_SMALL") == "1"
local n = small and 40 or 1000
local limits = small and {2, 5, 10} or {10, 50, 100}

local urls = {}
for i = 1, n do urls[i] = ("%s/delay/0.1?page=%d"):format(base, i) end

-- One page: its size, or the error kind (a scraper keeps going when a page fails).
local function scrape(url)
  local res, err = http.get(url, {timeout = 30})
  if not res then return err.kind end
  return #res.body
end

print(("%d URLs of /delay/0.1"):format(n))
print("| at once | wall time | pages/s | failed | ideal  |")
print("|---------|-----------|---------|--------|--------|")
for _, limit in ipairs(limits) do
  local t0 = lr.now()
  local sizes = lr.map(urls, scrape, {limit = limit})
  local wall = lr.now() - t0
  local failed = 0
  for i = 1, sizes.n do
    if type(sizes[i]) ~= "number" then failed = failed + 1 end
  end
  print(("| %7d | %8.2fs | %7.0f | %6d | %5.2fs |"):format(limit, wall, n / wall, failed,
        n / limit * 0.1))
end
