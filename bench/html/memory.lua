-- RSS over 10,000 parse-and-drop cycles of a 20 KB page, with and without close().
--   build/luarun bench/html/memory.lua [cycles]
-- Each mode runs in its own process (this script starts them), so one's heap does not
-- carry into the other's figures.
package.path = "bench/html/?.lua;" .. package.path
local mode, cycles = arg[1], tonumber(arg[2] or 10000)

local function rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

if mode == "close" or mode == "drop" then
  local html = require "luarun.html"
  local page = require("page")(20)
  local marks = {}
  local t0 = os.clock()
  for i = 1, cycles do
    local doc = html.parse(page, {url = "http://example.com/"})
    doc:select("h2")
    if mode == "close" then doc:close() end
    if i % (cycles // 5) == 0 then marks[#marks + 1] = ("%d: %d KB"):format(i, rss_kb()) end
  end
  print(("%-5s %s  (%.1f s)"):format(mode, table.concat(marks, ", "), os.clock() - t0))
  return
end

local self = arg[0]
local bin = arg[-1] or "luarun"
for _, m in ipairs({"close", "drop"}) do
  local p = assert(io.popen(("%q %q %s %d"):format(bin, self, m, cycles)))
  io.write(p:read("a"))
  p:close()
end
