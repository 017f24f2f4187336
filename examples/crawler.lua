#!/usr/bin/env luarun
-- A polite crawler of one site: follows its links breadth first to a depth, asks
-- robots.txt before each request, spaces the requests to the host, retries what the
-- server asks to retry, pulls fields out of each page with CSS selectors, and writes
-- what it found (pages, broken links, redirects, errors) to JSON and, if asked, SQLite.
-- Copy it and change FIELDS and extract() for the site you crawl.
local lr = require "luarun"
local http = require "luarun.http"
local html = require "luarun.html"
local json = require "luarun.json"

local AGENT = "luarun-crawler"            -- the name robots.txt groups are matched against

-- ---- the command line: --name value or --name=value ----
local usage = [[
usage: crawler.lua URL [--depth N] [--concurrency N] [--delay SECONDS] [--timeout SECONDS]
                       [--max-size MB] [--out FILE.json] [--sqlite FILE.db] [--help]
  --depth 3         levels of links to follow from URL
  --concurrency 16  requests at once
  --delay 0.5       seconds between requests (or the site's Crawl-delay, if longer)
  --timeout 15      seconds for one request (a level waits for its slowest page)
  --max-size 20     megabytes: a larger answer is recorded as an error, not read
  --out crawl.json  the results; --sqlite also writes pages and broken links there]]
local function die(code, msg) io.stderr:write(msg, "\n") os.exit(code) end
local opt = {depth = 3, concurrency = 16, delay = 0.5, timeout = 15, ["max-size"] = 20, out = "crawl.json"}
local function valid(name, n) -- the numeric options' ranges
  if name == "depth" then return math.tointeger(n) and n >= 0, "a whole number >= 0" end
  if name == "concurrency" then return math.tointeger(n) and n >= 1, "a whole number >= 1" end
  if name == "delay" then return n >= 0, "a number >= 0" end
  return n > 0, "a number > 0"              -- timeout, max-size
end
local start, i = nil, 1
while arg[i] do
  local name, v = arg[i]:match("^%-%-([%w-]+)=(.*)$")
  if not name then name, v = arg[i]:match("^%-%-([%w-]+)$"), arg[i + 1] end
  if name == "help" then print(usage) os.exit(0)
  elseif name and (opt[name] ~= nil or name == "sqlite") then
    if v == nil then die(2, "--" .. name .. " wants a value\n" .. usage) end
    if type(opt[name]) == "number" then
      local n = tonumber(v)
      local ok, what = valid(name, n or -1)
      if not ok then die(2, ("--%s wants %s, not %q\n%s"):format(name, what, v, usage)) end
      v = math.tointeger(n) or n
    end
    opt[name], i = v, i + (arg[i]:find("=") and 1 or 2)
  elseif not start and not name then
    start, i = arg[i], i + 1
  else
    die(2, "unknown argument " .. arg[i] .. "\n" .. usage)
  end
end
if not start then die(2, usage) end
local max_size = math.max(1, math.floor(opt["max-size"] * 1e6))

-- ---- URLs: one spelling per page, so that the frontier never holds one page twice ----
-- http.url.normalize lower-cases scheme and host, drops the default port, the fragment
-- and dot segments. Returns the URL and its site, scheme://host:port: robots.txt and
-- cookies are per site, so https links met while crawling http (or the reverse) are
-- another site and not followed. nil for what is not http(s), or carries a user name
-- or password (not ours to use, and never to be printed).
local function normalise(u)
  local n = http.url.normalize(u)
  local p = n and http.url.parse(n)
  if not p or (p.scheme ~= "http" and p.scheme ~= "https") or p.user or p.password then return nil end
  return n, p.scheme .. "://" .. p.host .. (p.port and ":" .. p.port or "")
end

local start_url, site = normalise(start)
if not start_url then die(2, "not an http(s) URL without credentials: " .. start:gsub("//[^/]*@", "//")) end

-- ---- where the results go, checked now rather than after a long crawl ----
local part = opt.out .. ".part"  -- written whole, then renamed: never half a file
local function need(what, ok, err) -- ok, or stop with what and err
  if not ok then os.remove(part) die(1, what .. ": " .. tostring(err)) end
  return ok
end
local outf = need("cannot write the results", io.open(part, "wb"))
local db = opt.sqlite and require "luarun.db"
local conn <close> = db and need("cannot use " .. opt.sqlite .. " as SQLite", db.open("sqlite:" .. opt.sqlite))
for _, sql in ipairs(conn and {[[create table if not exists pages (url text primary key, depth integer,
    title text, name text, price text, currency text, sku text, tags text, in_stock integer)]],
    "create table if not exists broken (url text primary key, status integer, found_on text)",
    "delete from pages", "delete from broken"} or {}) do -- this crawl's rows only
  need("cannot use " .. opt.sqlite .. " as SQLite", conn:exec(sql))
end

-- ---- robots.txt of a site: 4xx means no rules; 5xx, 429 or no answer, keep out ----
local UA = AGENT .. "/1.0 (luarun examples/crawler.lua)"
local function robots_of(url)
  local robots = assert(http.robots(http.url.join(url, "/robots.txt"), {user_agent = UA}))
  local st, e = robots.status or 200, robots.error -- (too many redirects counts as a 4xx)
  need("robots.txt unavailable, nothing may be crawled",
       (not e or e.kind == "redirect") and st < 500 and st ~= 429, e or st)
  return robots
end
local t0 = lr.now()
local robots = robots_of(start_url)

-- A start URL that redirects (http to https, to www.) makes its target the site: it is
-- asked for once on its own to learn where it leads, then crawled from there.
local out = {requested = start, depth = opt.depth, pages = json.array(), files = json.array(),
             broken = json.array(), redirects = json.array(), disallowed = json.array(),
             errors = json.array()}
if robots:allowed(start_url, AGENT) then
  local res = http.get(start_url, {user_agent = UA, timeout = opt.timeout, max_body_size = max_size})
  local u, s = normalise(res and res.url or start_url)
  if u and u ~= start_url then
    if s ~= site then robots = robots_of(u) end
    start_url, site = u, s
  end
end
out.start = start_url

-- ---- the client: cookies, spacing per host, retries on 429 and 5xx ----
-- The spacing is the larger of our own delay and the Crawl-delay the site asks for.
local delay = math.max(opt.delay, robots:crawl_delay(AGENT) or 0)
local client <close> = http.client({
  user_agent = UA,
  timeout = opt.timeout,           -- short: each level waits for its slowest page
  max_body_size = max_size,        -- a larger answer fails with kind "too_large"
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

-- ---- one request: the site's failures are results, raised (marked `failed`) so that
-- lr.map with `settle` counts them as failures on the progress line ----
local function fetch(url)
  local res, err = client:get(url, {follow_redirects = false}) -- a Location is one more hop
  local r = {url = url, status = res and res.status}
  if not res then
    r.error = err.kind .. ": " .. err.message
  elseif res.status >= 400 then
    r.broken = true
  elseif res.status >= 300 and res.status < 400 then
    local loc = res.headers.location ~= "" and res.headers.location or nil
    r.redirect = loc and http.url.join(url, loc)
    if not r.redirect then r.error = loc and "unusable Location" or "no Location" end
    r.links = {r.redirect}
  elseif res.status ~= 200 then
    r.error = "nothing to read" -- 204, 206...: a 2xx that is not a page
  elseif (res.headers["content-type"] or ""):lower():find("text/html", 1, true) then
    local doc, perr = html.parse(res, {max_size = max_size}) -- its URL is the base, its type the charset
    if doc then r.page, r.links = extract(doc), doc:links() else r.error = perr.kind .. ": " .. perr.message end
  else
    r.type = res.headers["content-type"] or "" -- a file: only its type is kept, not its body
  end
  if r.error or r.broken then r.failed = true error(r, 0) end -- not a bug: see crawl()
  return r
end

-- ---- the crawl: one level (depth) at a time, so each page is reached by its shortest path ----
local seen, spelled, found_on = {[start_url] = true}, {}, {}
local level = {}
if robots:allowed(start_url, AGENT) then level[1] = start_url else out.disallowed[1] = start_url end

local function save(from_page, from_broken) -- a level's rows go to SQLite as it ends
  if not conn then return end
  assert(conn:transaction(function(c) -- all of the level's rows or none
    for k = from_page, #out.pages do
      local p = out.pages[k]
      local pr = p.product or {}
      assert(c:exec("insert or replace into pages values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        p.url, p.depth, p.title or db.null, pr.name or db.null, pr.price or db.null,
        pr.currency or db.null, pr.sku or db.null, pr.tags and table.concat(pr.tags, ",") or db.null,
        pr.in_stock == nil and db.null or (pr.in_stock and 1 or 0)))
    end
    for k = from_broken, #out.broken do
      local b = out.broken[k]
      assert(c:exec("insert or replace into broken values (?, ?, ?)", b.url, b.status, b.found_on or db.null))
    end
    return true
  end))
end

local function crawl()
  for depth = 0, opt.depth do
    if #level == 0 then break end
    local results = lr.map(level, fetch, {limit = opt.concurrency, progress = "depth " .. depth, settle = true})
    local next_level, from_page, from_broken = {}, #out.pages + 1, #out.broken + 1
    for k = 1, results.n do
      local res = results[k]
      local r = res.ok and res.value or res.error
      if not res.ok and not (type(r) == "table" and r.failed) then error(r, 0) end -- a bug
      -- each answer is recorded as one of: errors, broken (4xx, 5xx), redirects, pages, files
      local list = out[r.error and "errors" or r.broken and "broken" or r.redirect and "redirects" or
                       r.page and "pages" or "files"]
      local e = r.page or {error = r.error, to = r.redirect, type = r.type}
      e.url, e.status, e.depth, e.found_on = r.url, r.status, depth, found_on[r.url]
      list[#list + 1] = e
      -- New links of this site go to the next level, once each; robots.txt decides here.
      -- Most links repeat word for word (menus, footers), so each spelling is looked at once.
      for _, link in ipairs(depth < opt.depth and r.links or {}) do
        if not spelled[link] then
          spelled[link] = true
          local u, s = normalise(link)
          if u and s == site and not seen[u] then
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
    save(from_page, from_broken)
    level = next_level
  end
end

-- Ctrl-C or SIGTERM cancels the crawl: what it found so far is still written, marked
-- partial, then the cancellation goes on. Every later wait of a cancelled task raises
-- again, so the results are written with io, which does not wait.
local ok, err = pcall(crawl)
local took = lr.now() - t0
table.sort(out.pages, function(a, b) return a.url < b.url end)
table.sort(out.broken, function(a, b) return a.url < b.url end)
table.sort(out.disallowed)
out.seconds, out.partial = took, not ok or nil
assert(outf:write(json.encode(out)))
assert(outf:close())
assert(os.rename(part, opt.out))
if not ok then io.stderr:write("crawl stopped: partial results in ", opt.out, "\n") error(err, 0) end

print(("crawled %d pages and %d other files to depth %d in %.3f s (%.1f pages/s)")
      :format(#out.pages, #out.files, opt.depth, took, #out.pages / math.max(took, 1e-9)))
print(("%d broken links, %d redirects, %d links refused by robots.txt, %d errors; results in %s")
      :format(#out.broken, #out.redirects, #out.disallowed, #out.errors, opt.out))
for _, b in ipairs(out.broken) do print(("  broken: %s (%d), linked from %s"):format(b.url, b.status, b.found_on)) end
for _, e in ipairs(out.errors) do print(("  error: %s: %s"):format(e.url, e.error)) end
