-- bench/html.sh's loop-hold measurement:  luarun luarun_tick.lua FILE URL COUNT
-- A task ticks every 1 ms (lr.sleep(0.001)) and records the largest gap between two
-- of its wake-ups while another task works; the gap less 1 ms is the longest time the
-- loop was held. Three runs: idle (the ticker alone, the floor of the gap on this
-- machine), parse (COUNT html.parse of FILE, one after another, the task yielding
-- between them) and task (COUNT times parse + doc:links() + the text of each h2: the
-- selection and the text run on the loop). Prints
--   tick idle_gap_ms G parse_gap_ms G parse_ms M task_gap_ms G task_ms M
-- (the *_ms without "gap": the median wall time of one parse or one task).
local lr = require "luarun"
local html = require "luarun.html"

local FILE, URL, COUNT = arg[1], arg[2], math.tointeger(tonumber(arg[3]))
local f = assert(io.open(FILE, "rb"))
local data = f:read("a")
f:close()

local function loop_cpu() -- ns this (the loop) thread has run, or nil
  local f = io.open("/proc/thread-self/schedstat")
  if not f then return nil end
  local ns = tonumber(f:read("n"))
  f:close()
  return ns
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- Runs work() COUNT times beside the ticker: the worst gap (ms), the median work (ms),
-- the median CPU of the loop thread per work (ms).
local function beside_ticker(work)
  local done, worst = false, 0
  local ticker = lr.spawn(function()
    local last = lr.now()
    while not done do
      lr.sleep(0.001)
      local t = lr.now()
      if t - last > worst then worst = t - last end
      last = t
    end
  end)
  lr.sleep(0.02) -- the ticker is running
  local times, cpu = {}, {}
  for i = 1, COUNT do
    local c0 = loop_cpu()
    local t0 = lr.now()
    if work then work() else lr.sleep(0.01) end
    times[i] = (lr.now() - t0) * 1000
    cpu[i] = c0 and (loop_cpu() - c0) / 1e6 or 0 / 0
    lr.sleep(0.002) -- the loop turns: the next gap is the next call's, not a sum
  end
  done = true
  ticker:wait()
  return worst * 1000, median(times), median(cpu)
end

local function parse_only()
  local doc = html.parse(data, {url = URL})
  if doc.close then doc:close() end
end
local function whole()
  local doc = html.parse(data, {url = URL})
  local links = doc:links()
  for _, h in ipairs(doc:select("h2")) do h:text() end
  assert(#links > 0)
  if doc.close then doc:close() end
end

parse_only() -- warm-up (loads libxml2)
local igap, _, icpu = beside_ticker(nil)
local pgap, pms, pcpu = beside_ticker(parse_only)
local tgap, tms, tcpu = beside_ticker(whole)
print(("tick idle_gap_ms %.2f parse_gap_ms %.2f parse_ms %.2f parse_loop_cpu_ms %.2f task_gap_ms %.2f"
  .. " task_ms %.2f task_loop_cpu_ms %.2f idle_loop_cpu_ms %.2f")
  :format(igap, pgap, pms, pcpu, tgap, tms, tcpu, icpu))
