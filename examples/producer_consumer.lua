#!/usr/bin/env luarun
-- Producer/consumer over a bounded queue.
--   luarun examples/producer_consumer.lua [items] [maxsize]
-- Two fast producers and three slow consumers share a Queue of `maxsize` items:
-- put waits while the queue is full (back-pressure: the producers slow down to the
-- consumers' pace instead of piling up memory), get waits while it is empty, and
-- close() tells the consumers there is nothing more once both producers are done.
local lr = require "luarun"

local items = tonumber(arg[1]) or 60
local maxsize = tonumber(arg[2]) or 5
local q = lr.Queue(maxsize)
local longest = 0

local function producer(name, count)
  for i = 1, count do
    q:put(("%s-%d"):format(name, i))
    longest = math.max(longest, #q)
  end
end

local function consumer(name)
  local handled = 0
  while true do
    local item, err = q:get()
    if not item then
      assert(err.kind == "closed")
      return handled
    end
    lr.sleep(0.002) -- slow work on the item
    handled = handled + 1
  end
end

local t0 = lr.now()
local consumers = {}
for i = 1, 3 do consumers[i] = lr.spawn(consumer, "c" .. i):set_name("consumer " .. i) end
lr.gather(function() producer("a", items // 2) end,
          function() producer("b", items - items // 2) end)
q:close() -- both producers are done: consumers drain what is left, then stop
local counts = lr.gather(consumers)
local total = 0
for i = 1, counts.n do total = total + counts[i] end
print(("%d items through a queue of %d: consumers handled %d + %d + %d = %d; " ..
       "queue never held more than %d; %.2f s")
      :format(items, maxsize, counts[1], counts[2], counts[3], total, longest, lr.now() - t0))
