-- The memory floor: N bare coroutines in stock lua5.4, each resumed once up to a
-- coroutine.yield and kept alive (suspended) in a table.
-- Usage: lua5.4 lua_coroutines.lua N    Prints "spawn=<s> wall=<s>" (os.clock: CPU s).
local N = assert(math.tointeger(tonumber(arg[1])), "usage: lua_coroutines.lua N")

local t = {}
local f = function() coroutine.yield() end
local t0 = os.clock()
for i = 1, N do
  local co = coroutine.create(f)
  coroutine.resume(co)
  t[i] = co
end
local t1 = os.clock()
assert(#t == N)
print(string.format("spawn=%.3f wall=%.3f", t1 - t0, t1 - t0))
