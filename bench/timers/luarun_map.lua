-- luarun: lr.map over N items, each sleeping 1 s.
-- Usage: luarun luarun_map.lua N         Prints "spawn=<s> wall=<s>" (measured inside);
-- "spawn" here is the time until the N-th task's body starts (lr.map spawns inside).
local lr = require "luarun"
local N = assert(math.tointeger(tonumber(arg[1])), "usage: luarun_map.lua N")

local items = {}
for i = 1, N do items[i] = i end

local started
local function work(_, i)
  if i == N then started = lr.now() end
  lr.sleep(1)
end

local t0 = lr.now()
local results = lr.map(items, work)
local t2 = lr.now()
assert(results.n == N)
print(string.format("spawn=%.3f wall=%.3f", started - t0, t2 - t0))
