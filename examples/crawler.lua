#!/usr/bin/env luarun
-- A polite crawler of one site: follows its links breadth first to a depth, asks
-- robots.txt before each request, spaces the requests to the host, retries what the
-- server asks to retry, pulls fields out of each page with CSS selectors, and writes
-- what it found (pages, broken links, redirects) to JSON and, if asked, to SQLite.
--   luarun examples/crawler.lua URL [--depth N] [--concurrency N] [--delay SECONDS]
--                                   [--out FILE.json] [--sqlite FILE.db]
-- Copy it and change FIELDS and extract() for the site you crawl.
local lr = require "luarun"
local http = require "luarun.http"
local html = require "luarun.html"
local json = require "luarun.json"
local fs = require "luarun.fs"

local AGENT = "luarun-crawler"            -- the name robots.txt groups are matched against

-- ---- the command line ----
local usage = "usage: crawler.lua URL [--depth N] [--concurrency N] [--delay SECONDS]" ..
              " [--out FILE.json] [--sqlite FILE.db]"
local opt = {depth = 3, concurrency = 16, delay = 0.5, out = "crawl.json"}
local start
local i = 1
while arg[i] do
  local a, v = arg[i], arg[i + 1]
  local name = a:match("^%-%-(%w+)$")
  if name and (opt[name] ~= nil or name == "sqlite") then
    if type(opt[name]) == "number" then v = tonumber(v) end
    if v == nil then io.stderr:write(a, " wants a value\n", usage, "\n") os.exit(2) end
    opt[name], i = v, i + 2
  elseif not start and not name then
    start, i = a, i + 1
  else
    io.stderr:write("unknown argument ", a, "\n", usage, "\n") os.exit(2)
  end
end
if not start then io.stderr:write(usage, "\n") os.exit(2) end
if not math.tointeger(opt.concurrency) or opt.concurrency < 1 or opt.depth < 0 or opt.delay < 0 then
  io.stderr:write("--concurrency must be a whole number >= 1; --depth and --delay >= 0\n") os.exit(2)
end

-- ---- URLs: one spelling per page, so that the frontier never holds one page twice ----
-- http.url.normalize lower-cases scheme and host, drops the default port, the
-- fragment and dot segments. Returns the URL and the host:port the crawl keeps to;
-- nil for what is not http(s).
local function normalise(u)
  local n = http.url.normalize(u)
  local p = n and http.url.parse(n)
  if not p or (p.scheme ~= "http" and p.scheme ~= "https") then return nil end
  return n, p.host .. (p.port and ":" .. p.port or "")
end

local start_url, site = normalise(start)
if not start_url then io.stderr:write("not an http(s) URL: ", start, "\n") os.exit(2) end

-- ---- robots.txt, fetched once: 4xx means no rules; 5xx, 429 or no answer, keep out ----
local t0 = lr.now()
local UA = AGENT .. "/1.0 (luarun examples/crawler.lua)"
local robots = assert(http.robots(http.url.join(start_url, "/robots.txt"), {user_agent = UA}))
local st, e = robots.status or 200, robots.error -- (too many redirects counts as a 4xx)
if (e and e.kind ~= "redirect") or st >= 500 or st == 429 then
  io.stderr:write("robots.txt unavailable (", tostring(robots.error or robots.status),
                  "): nothing may be crawled\n")
  os.exit(1)
end

-- ---- the client: cookies, spacing per host, retries on 429 and 5xx ----
-- The spacing is the larger of our own delay and the Crawl-delay the site asks for.
local delay = math.max(opt.delay, robots:crawl_delay(AGENT) or 0)
local client <close> = http.client({
  user_agent = UA,
  timeout = 30,
  cookies = true,                  -- a session cookie set by one page goes with the next
  delay_per_host = delay > 0 and delay or nil,
  retry = {attempts = 3, backoff = 0.2, on = {429, 500, 502, 503, 504}},
})

-- ---- what to pull out of a page: CSS selectors, as in a browser's devtools ----
local FIELDS = {name = ".product h1.name", price = ".product .price", sku = ".product .sku"}
local function extract(doc)
  local page = {title = doc.title, headings = json.array()}
  for _, h in ipairs(doc:select("h2")) do page.headings[#page.headings + 1] = h:text() end
  if doc:select_one(".product") then
    local p = {tags = json.array()}
    for field, css in pairs(FIELDS) do
      local el = doc:select_one(css)
      p[field] = el and el:text()
    end
    local price = doc:select_one(FIELDS.price)
    p.currency = price and price:attr("data-currency")
    for _, li in ipairs(doc:select(".product ul.tags > li")) do p.tags[#p.tags + 1] = li:text() end
    p.in_stock = doc:select_one(".product .stock:not(.out)") ~= nil
    page.product = p
  end
  return page
end

-- ---- one request: never raises for the site's failures; they are results ----
local function fetch(url)
  local res, err = client:get(url, {follow_redirects = false}) -- a Location is one more hop
  if not res then return {url = url, error = err.kind .. ": " .. err.message} end
  local r = {url = url, status = res.status}
  local ctype = res.headers["content-type"] or ""
  if res.status >= 300 and res.status < 400 and res.headers.location then
    r.redirect = http.url.join(url, res.headers.location)
    r.links = {r.redirect}
  elseif res.status == 200 and ctype:find("text/html", 1, true) then
    local doc = html.parse(res)  -- its URL is the base; its Content-Type says the charset
    r.page, r.links = extract(doc), doc:links()
  elseif res.status == 200 then
    r.type = ctype
  end
  return r
end

-- ---- the crawl: one level (depth) at a time, so each page is reached by its shortest path ----
local out = {start = start_url, depth = opt.depth, pages = json.array(), files = json.array(),
             broken = json.array(), redirects = json.array(), disallowed = json.array(),
             errors = json.array()}
local seen, spelled, found_on = {[start_url] = true}, {}, {}
local level = {}
if robots:allowed(start_url, AGENT) then level[1] = start_url else out.disallowed[1] = start_url end
for depth = 0, opt.depth do
  if #level == 0 then break end
  local results = lr.map(level, fetch, {limit = opt.concurrency, progress = "depth " .. depth})
  local next_level = {}
  for k = 1, results.n do
    local r = results[k]
    if r.error then
      out.errors[#out.errors + 1] = {url = r.url, error = r.error, found_on = found_on[r.url]}
    elseif r.redirect then
      out.redirects[#out.redirects + 1] = {url = r.url, status = r.status, to = r.redirect, depth = depth}
    elseif r.status >= 400 then
      out.broken[#out.broken + 1] = {url = r.url, status = r.status, found_on = found_on[r.url]}
    elseif r.page then
      r.page.url, r.page.depth = r.url, depth
      out.pages[#out.pages + 1] = r.page
    elseif r.type then
      out.files[#out.files + 1] = {url = r.url, type = r.type, depth = depth}
    end
    -- New links of this site go to the next level, once each; robots.txt decides here.
    -- Most links repeat word for word (menus, footers), so each spelling is looked at once.
    for _, link in ipairs(depth < opt.depth and r.links or {}) do
      if not spelled[link] then
        spelled[link] = true
        local u, host = normalise(link)
        if u and host == site and not seen[u] then
          seen[u], found_on[u] = true, r.url
          if robots:allowed(u, AGENT) then
            next_level[#next_level + 1] = u
          else
            out.disallowed[#out.disallowed + 1] = u
          end
        end
      end
    end
  end
  level = next_level
end
local took = lr.now() - t0

-- ---- results: JSON (written whole, then renamed: never half a file) ----
table.sort(out.pages, function(a, b) return a.url < b.url end)
table.sort(out.broken, function(a, b) return a.url < b.url end)
table.sort(out.disallowed)
out.seconds = took
assert(fs.write_file(opt.out, json.encode(out), {atomic = true}))

if opt.sqlite then -- luarun.db, loaded only when asked for
  local db = require "luarun.db"
  local conn <close> = assert(db.open("sqlite:" .. opt.sqlite))
  assert(conn:exec([[create table if not exists pages (url text primary key, depth integer,
    title text, name text, price text, currency text, sku text, tags text, in_stock integer)]]))
  assert(conn:exec("create table if not exists broken (url text primary key, status integer, found_on text)"))
  conn:transaction(function(c) -- all rows or none
    for _, p in ipairs(out.pages) do
      local pr = p.product or {}
      assert(c:exec("insert or replace into pages values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        p.url, p.depth, p.title or db.null, pr.name or db.null, pr.price or db.null,
        pr.currency or db.null, pr.sku or db.null, pr.tags and table.concat(pr.tags, ",") or db.null,
        pr.in_stock == nil and db.null or (pr.in_stock and 1 or 0)))
    end
    for _, b in ipairs(out.broken) do
      assert(c:exec("insert or replace into broken values (?, ?, ?)", b.url, b.status, b.found_on or db.null))
    end
  end)
end

print(("crawled %d pages and %d other files to depth %d in %.3f s (%.1f pages/s)")
      :format(#out.pages, #out.files, opt.depth, took, #out.pages / math.max(took, 1e-9)))
print(("%d broken links, %d redirects, %d links refused by robots.txt, %d errors; results in %s")
      :format(#out.broken, #out.redirects, #out.disallowed, #out.errors, opt.out))
for _, b in ipairs(out.broken) do print(("  broken: %s (%d), linked from %s"):format(b.url, b.status, b.found_on)) end
for _, e in ipairs(out.errors) do print(("  error: %s: %s"):format(e.url, e.error)) end
