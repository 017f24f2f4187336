-- bench/html.sh's luarun peer:  luarun luarun_html.lua VARIANT MANIFEST REPS [DUMPDIR]
-- The task, the warm-up, the clock and the output are py_peers.py's (see there).
--   links   html.parse(bytes, {url = page}) + doc:links() + the text of each h2 (the
--           way API.md "Scraping" means it to be written)
--   join    the same links by hand: doc:select("a[href]"), el:attr("href"), and
--           http.url.join per link (shows what doc:links() saves)
--   phases  where the time of "links" goes: per page, the median CPU ms of parse alone,
--           links() alone, select("h2") alone, text() of the h2s, select("a[href]")
--           alone, attr("href") of each, http.url.join of each (on one parsed doc)
-- The clock (lr.now, uv_hrtime) runs around the task alone. A document is closed on
-- the clock when the module offers doc:close() (lxml frees its tree by reference
-- count when the task returns, also on its clock); otherwise the collector frees it.
local lr = require "luarun"
local html = require "luarun.html"
local http = require "luarun.http"

local VARIANT, MANIFEST, REPS, DUMP = arg[1], arg[2], math.tointeger(tonumber(arg[3])), arg[4]

local function strip(s) -- ASCII whitespace, as WHATWG URL parsing strips it
  return (s:gsub("^[ \t\n\r\f]+", ""):gsub("[ \t\n\r\f]+$", ""))
end

local function close(doc)
  if doc.close then doc:close() end
end

local function heads_of(doc)
  local heads = {}
  for i, h in ipairs(doc:select("h2")) do heads[i] = h:text() end
  return heads
end

local function task_links(data, url)
  local doc = html.parse(data, {url = url})
  local links, heads = doc:links(), heads_of(doc)
  close(doc)
  return links, heads
end

local join = http.url and http.url.join
local function links_by_hand(doc, url)
  local base = url
  local b = doc:select_one("base[href]")
  if b then base = join(url, strip(b:attr("href"))) or url end
  local seen, links = {}, {}
  for _, a in ipairs(doc:select("a[href]")) do
    local u = join(base, strip(a:attr("href")))
    if u then
      u = u:match("^[^#]*")
      local scheme = (u:match("^(%a[%w+.-]*):") or ""):lower()
      if (scheme == "http" or scheme == "https") and not seen[u] then
        seen[u] = true
        links[#links + 1] = u
      end
    end
  end
  return links
end

local function task_join(data, url)
  local doc = html.parse(data, {url = url})
  local links, heads = links_by_hand(doc, url), heads_of(doc)
  close(doc)
  return links, heads
end

local function fnv(text)
  local h = 0x811C9DC5
  for i = 1, #text do h = ((h ~ text:byte(i)) * 0x01000193) & 0xFFFFFFFF end
  return ("%08x"):format(h)
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- Median ms of n calls of fn(setup()), setup off the clock; then the median CPU ms
-- (os.clock: the process's CPU time, the pool thread's parse included).
local function clock(n, fn, setup)
  local times, cpu = {}, {}
  for i = 1, n do
    local x = setup and setup()
    local c0 = os.clock()
    local t0 = lr.now()
    fn(x)
    times[i] = (lr.now() - t0) * 1000
    cpu[i] = (os.clock() - c0) * 1000
    if setup then close(x) end
  end
  return median(times), median(cpu)
end

-- phases: each part of the task alone, on a document parsed outside the clock
local function phases(name, data, url, n)
  local doc = html.parse(data, {url = url})
  local as, hs = doc:select("a[href]"), doc:select("h2")
  local hrefs = {}
  for i, a in ipairs(as) do hrefs[i] = strip(a:attr("href")) end
  local f = {}
  local function cpu(...) return select(2, clock(...)) end -- the CPU median
  f.parse = cpu(n, function() close(html.parse(data, {url = url})) end)
  local function fresh() return html.parse(data, {url = url}) end
  f.links = cpu(n, function(d) d:links() end, fresh) -- a fresh document: no cache helps
  f.select_h2 = cpu(n, function() doc:select("h2") end)
  f.text_h2 = cpu(n, function() for _, h in ipairs(hs) do h:text() end end)
  f.select_a = cpu(n, function() doc:select("a[href]") end)
  f.attr_href = cpu(n, function() for _, a in ipairs(as) do a:attr("href") end end)
  if join then
    f.url_join = cpu(n, function() for _, h in ipairs(hrefs) do join(url, h) end end)
  end
  local out = {("phase %s a %d h2 %d"):format(name, #as, #hs)}
  for _, k in ipairs({"parse", "links", "select_h2", "text_h2", "select_a", "attr_href", "url_join"}) do
    if f[k] then out[#out + 1] = ("%s %.3f"):format(k, f[k]) end
  end
  print(table.concat(out, " "))
end

local task = ({links = task_links, join = task_join})[VARIANT]
assert(task or VARIANT == "phases", "variant: links | join | phases")
assert(VARIANT ~= "join" or join, "join: http.url.join is not there yet")
for line in io.lines(MANIFEST) do
  local name, url, path, mult = line:match("^(%S+) (%S+) (%S+) (%d+)$")
  mult = math.tointeger(tonumber(mult))
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  if VARIANT == "phases" then
    phases(name, data, url, REPS * mult)
  else
    for _ = 1, math.max(2, mult) do task(data, url) end
    local links, heads
    local ms, cpu = clock(REPS * mult, function() links, heads = task(data, url) end)
    local all = {}
    for _, x in ipairs(links) do all[#all + 1] = x .. "\n" end
    for _, x in ipairs(heads) do all[#all + 1] = x .. "\n" end
    local text = table.concat(all)
    if DUMP then
      local peer = VARIANT == "links" and "luarun" or "luarun-" .. VARIANT -- html.sh's peer name
      local o = assert(io.open(("%s/%s.%s.txt"):format(DUMP, peer, name), "wb"))
      o:write(text)
      o:close()
    end
    print(("page %s links %d h2 %d fnv %s ms %.3f cpu %.3f"):format(name, #links, #heads, fnv(text), ms, cpu))
    io.stdout:flush()
  end
end
