#!/usr/bin/env luarun
-- A pipeline of stages joined by bounded queues:
--   read lines -> parse (2 tasks) -> enrich (3 tasks, "I/O") -> write
--   luarun examples/pipeline.lua [records]
-- Each stage closes its output queue when its input is drained, so the end of the
-- input flows down the pipeline and every stage stops on its own. Bounded queues
-- keep a slow stage from letting the others run ahead.
local lr = require "luarun"

local nrecords = tonumber(arg[1]) or 50

-- Runs n copies of fn(input, output); closes output once all of them are done.
local function stage(name, n, input, output, fn)
  return lr.spawn(function()
    local workers = {}
    for i = 1, n do
      workers[i] = lr.spawn(function()
        while true do
          local item = input:get()
          if item == nil then return end
          fn(item, output)
        end
      end):set_name(("%s %d"):format(name, i))
    end
    lr.gather(workers)
    if output then output:close() end
  end):set_name(name)
end

local lines, records, enriched = lr.Queue(4), lr.Queue(4), lr.Queue(4)

local source = lr.spawn(function()
  for i = 1, nrecords do lines:put(("%d,item-%d,%d"):format(i, i, i * 3)) end
  lines:close()
end)

stage("parse", 2, lines, records, function(line, out)
  local id, name, qty = line:match("^(%d+),([^,]+),(%d+)$")
  out:put({id = tonumber(id), name = name, qty = tonumber(qty)})
end)

stage("enrich", 3, records, enriched, function(rec, out)
  lr.sleep(0.003) -- a lookup in some service
  rec.price = rec.qty * 2
  out:put(rec)
end)

local total, count = 0, 0
local sink = stage("write", 1, enriched, nil, function(rec)
  total = total + rec.price
  count = count + 1
end)

local t0 = lr.now()
source:wait()
sink:wait()
print(("%d records through 4 stages, total price %d, %.2f s"):format(count, total, lr.now() - t0))
