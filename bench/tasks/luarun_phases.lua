-- Where the time of luarun_gather.lua goes, phase by phase (issue 20): the spawn loop;
-- gather's setup (its call to the first child running); the children's first run
-- (first to last child starting); and, after the sleep, the spread of the wake-ups
-- plus the finishing (first child waking to gather returning). The sleeps are
-- counted from each child's own call, so the critical path is
-- spawn + setup + run + 1 s + whatever of the wake-up lags behind the deadlines.
-- Usage: luarun luarun_phases.lua N      Prints one line to stderr.
local lr = require "luarun"
local N = assert(math.tointeger(tonumber(arg[1])), "usage: luarun_phases.lua N")

local started, ran, woke
local function work() lr.sleep(1) end
local function first() started = lr.now(); lr.sleep(1); woke = lr.now() end
local function last() ran = lr.now(); lr.sleep(1) end

local t0 = lr.now()
local tasks = {lr.spawn(first)}
for i = 2, N - 1 do tasks[i] = lr.spawn(work) end
tasks[N] = lr.spawn(last)
local t1 = lr.now()
lr.gather(tasks)
local t2 = lr.now()
io.stderr:write(string.format(
  "spawn %.3f  gather-setup %.3f  run %.3f  wake+finish %.3f  total %.3f\n",
  t1 - t0, started - t1, ran - started, t2 - woke, t2 - t0))
