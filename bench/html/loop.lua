-- How long html.parse holds the event loop, and where a page's time goes.
--   build/luarun bench/html/loop.lua
-- 1. Per page size: parse / select("a") / links() / text of every h2, medians of
--    N runs, each part timed on its own (os.clock: CPU time of this thread). Pages
--    under the off-loop threshold are parsed on the loop, so their parse time is how
--    long they hold it; the larger ones go to libuv's pool, and their "parse" is
--    the wait (the loop runs meanwhile).
-- 2. A ticker task that wakes every millisecond while other tasks parse 1 MB pages:
--    the longest gap between its ticks is how long the loop was held.
package.path = "bench/html/?.lua;" .. package.path
local lr = require "luarun"
local html = require "luarun.html"
local page = require "page"

local clock = lr.now or os.clock
local N = tonumber(os.getenv("N") or 15)

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

print(("%8s %10s %10s %10s %10s %10s"):format("page", "parse ms", "select ms", "links ms", "h2 text ms", "links"))
for _, kb in ipairs({20, 60, 120, 400, 1024}) do
  local s = page(kb)
  local tp, ts, tl, tt, nl = {}, {}, {}, {}, 0
  for i = 1, N do
    local a = clock()
    local doc = html.parse(s, {url = "http://example.com/dir/"})
    local b = clock()
    local as = doc:select("a")
    local c = clock()
    local links = doc:links()
    local d = clock()
    for _, h in ipairs(doc:select("h2")) do h:text() end
    local e = clock()
    tp[i], ts[i], tl[i], tt[i], nl = b - a, c - b, d - c, e - d, #links
    assert(#as > 0)
    doc:close()
  end
  print(("%6dKB %10.2f %10.2f %10.2f %10.2f %10d"):format(kb, median(tp) * 1e3, median(ts) * 1e3,
        median(tl) * 1e3, median(tt) * 1e3, nl))
end

if lr.spawn then
  local big = page(1024)
  local worst, ticks, running = 0, 0, true
  local ticker = lr.spawn(function()
    local last = clock()
    while running do
      lr.sleep(0.001)
      local now = clock()
      if now - last > worst then worst = now - last end
      last = now
      ticks = ticks + 1
    end
  end)
  local t0 = clock()
  local tasks = {}
  for i = 1, 4 do
    tasks[i] = lr.spawn(function()
      for _ = 1, 3 do html.parse(big):close() end
    end)
  end
  for _, t in ipairs(tasks) do t:wait() end
  running = false
  ticker:wait()
  print(("12 parses of a 1 MB page in 4 tasks: %.0f ms; the loop's longest gap %.1f ms (%d ticks)")
        :format((clock() - t0) * 1e3, worst * 1e3, ticks))
end
