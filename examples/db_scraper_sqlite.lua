#!/usr/bin/env luarun
-- Fetch pages, several at once, and store them in SQLite in one transaction.
--   luarun examples/db_scraper_sqlite.lua [BASE_URL [DB_FILE]]
-- With BASE_URL (e.g. examples/serve_delay.lua's address) it fetches BASE_URL/get?page=N;
-- without, it starts a small site of its own in this same script and scrapes that.
-- DB_FILE defaults to a temporary file, removed at the end; give one to keep it and
-- look inside with `sqlite3 DB_FILE 'select url, status from pages'`.
local lr = require "luarun"
local http = require "luarun.http"
local db = require "luarun.db"

local N = 12

-- ---- the site to scrape: BASE_URL, or a local server of our own ----
local base, site = arg[1], nil
if base == nil or base == "" then
  site = assert(http.serve({port = 0}, function(req)
    local page = tonumber(req.query.page)
    if page == 7 then return 503, nil, "try again later\n" end  -- one page fails
    lr.sleep(0.05)                                                -- a site takes its time
    return {json = {page = page, title = "page " .. tostring(page)}}
  end))
  base = site.url
end

-- ---- fetch: 4 at a time; a failed page is recorded, not fatal ----
local urls = {}
for i = 1, N do urls[i] = ("%s/get?page=%d"):format(base, i) end

local client <close> = http.client({timeout = 10})
local t0 = lr.now()
local pages = lr.map(urls, function(url)
  local res, err = client:get(url)
  if not res then return {url = url, error = err.kind} end
  return {url = url, status = res.status, body = res.ok and res.body or nil}
end, {limit = 4})
local fetched = lr.now() - t0

-- ---- store: one transaction, so the table holds all of this run or none of it ----
local keep = arg[2] ~= nil and arg[2] ~= ""
local path = keep and arg[2] or os.tmpname()
local conn <close> = assert(db.open("sqlite:" .. path))
assert(conn:exec([[
  create table if not exists pages (
    url        text primary key,
    status     integer,          -- NULL when the request itself failed
    error      text,             -- the error kind then
    body       text,
    fetched_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
  )]]))

local stored = conn:transaction(function(c)
  local n = 0
  for i = 1, pages.n do
    local p = pages[i]
    -- Parameters are bound (?), never spliced; db.null is SQL NULL. An upsert, so
    -- that running the script again on the same file refreshes the pages.
    assert(c:exec([[insert into pages (url, status, error, body) values (?, ?, ?, ?)
                    on conflict (url) do update set status = excluded.status,
                      error = excluded.error, body = excluded.body,
                      fetched_at = excluded.fetched_at]],
                  p.url, p.status or db.null, p.error or db.null, p.body or db.null))
    n = n + 1
  end
  return n
end)

-- ---- read back ----
local sum = assert(conn:query([[
  select count(*) as pages,
         count(body) as with_body,
         coalesce(sum(length(body)), 0) as bytes
  from pages]]))[1]
print(("fetched %d pages in %.2f s, stored %d: %d in the table, %d with a body (%d bytes)")
      :format(pages.n, fetched, stored, sum.pages, sum.with_body, sum.bytes))
for row in conn:rows("select url, status, error from pages where body is null order by url") do
  print(("  no body: %s (%s)"):format(row.url, row.status ~= db.null and row.status or row.error))
end

conn:close()
if not keep then
  for _, suffix in ipairs({"", "-wal", "-shm"}) do os.remove(path .. suffix) end
end
if site then site:close() end
