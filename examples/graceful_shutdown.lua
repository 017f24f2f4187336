#!/usr/bin/env luarun
-- Graceful shutdown on Ctrl-C.
--   luarun examples/graceful_shutdown.lua     (then press Ctrl-C)
-- Ctrl-C cancels every task: each worker's current wait raises `cancelled`, its
-- <close> handlers run (flush what it holds, say goodbye), and luarun exits with
-- status 130 once all of them have unwound. Nothing here handles the signal itself.
local lr = require "luarun"

local function worker(id)
  local batch = {}
  local _ <close> = setmetatable({}, {__close = function()
    print(("worker %d: flushing %d items and stopping"):format(id, #batch))
    io.stdout:flush()
  end})
  while true do
    batch[#batch + 1] = id
    lr.sleep(0.05)
  end
end

for i = 1, 3 do lr.spawn(worker, i):set_name("worker " .. i) end
print("running; press Ctrl-C to stop")
io.stdout:flush()
