#!/usr/bin/env luarun
-- mistake_blocking_call.lua: a blocking call inside a task blocks every task.
--
-- os.execute("sleep 0.3"), a busy wait, a blocking read: the task does not wait
-- through the loop, so nothing else runs meanwhile. Here a heartbeat should tick every
-- 20 ms; the blocking "sleep" freezes it. `--debug` says which task blocks and where:
--
--   luarun --debug examples/mistake_blocking_call.lua          os.execute("sleep 0.3")
--   luarun --debug examples/mistake_blocking_call.lua busy     a busy wait of 0.3 s
--   luarun --debug examples/mistake_blocking_call.lua fixed    the fix: lr.sleep(0.3)
--
-- For the os.execute case the report says the task is inside a C function, then
-- shows the traceback as soon as it returns to Lua code.
local lr = require "luarun"

local mode = arg[1] or "blocking"

local function pause(seconds)
  if mode == "fixed" then
    lr.sleep(seconds)                              -- the fix: other tasks run meanwhile
  elseif mode == "busy" then
    local t = lr.now()
    while lr.now() - t < seconds do end            -- the mistake: spins on the loop
  else
    os.execute(("sleep %g"):format(seconds))       -- the mistake: blocks the loop
  end
end

local stop, longest = false, 0
local heartbeat = lr.spawn(function()
  local last = lr.now()
  while not stop do
    lr.sleep(0.02)
    local now = lr.now()
    longest = math.max(longest, now - last)
    last = now
  end
end)

lr.sleep(0.05) -- the heartbeat ticks a little first
local worker = lr.spawn(function()
  for _ = 1, 2 do pause(0.3) end
end)
worker:wait()
stop = true
heartbeat:wait()
print(("%s: the heartbeat's longest gap was %.0f ms (should be ~20)"):format(mode, longest * 1000))
