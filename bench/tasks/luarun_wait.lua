-- luarun: N tasks that each lr.sleep(1), spawned one by one with lr.spawn, then
-- waited for one by one with task:wait().
-- Usage: luarun luarun_wait.lua N       Prints "spawn=<s> wall=<s>" (lr.now(): monotonic).
local lr = require "luarun"
local N = assert(math.tointeger(tonumber(arg[1])), "usage: luarun_wait.lua N")

local function work() lr.sleep(1) end

local t0 = lr.now()
local tasks = {}
for i = 1, N do tasks[i] = lr.spawn(work) end
local t1 = lr.now()
for i = 1, N do tasks[i]:wait() end
local t2 = lr.now()
print(string.format("spawn=%.3f wall=%.3f", t1 - t0, t2 - t0))
