-- luv: N coroutines that each sleep 1 s on a uv timer of their own, started one by
-- one, then waited for by the main coroutine (resumed when the last one ends): what a
-- luarun task does, written by hand on lua5.4 + luv (Debian's lua-luv).
-- Usage: lua5.4 luv_timers.lua N        Prints "spawn=<s> wall=<s>" (uv.hrtime).
local uv = require "luv"
local N = assert(math.tointeger(tonumber(arg[1])), "usage: luv_timers.lua N")

local function now() return uv.hrtime() / 1e9 end

local function sleep(s)
  local co = coroutine.running()
  local timer = uv.new_timer()
  timer:start(math.floor(s * 1000), 0, function()
    timer:close()
    assert(coroutine.resume(co))
  end)
  coroutine.yield()
end

local pending, main_co = 0, nil
local function spawn(fn)
  local co = coroutine.create(function()
    fn()
    pending = pending - 1
    if pending == 0 and main_co then assert(coroutine.resume(main_co)) end
  end)
  pending = pending + 1
  -- Started from the loop, as a luarun task is: one idle-free way is a 0 ms timer;
  -- a queue drained by a prepare/check handle would do the same. Keep it simple and
  -- cheap: run the body at once up to its first yield.
  assert(coroutine.resume(co))
  return co
end

local function work() sleep(1) end

main_co = coroutine.create(function()
  local t0 = now()
  local tasks = {}
  for i = 1, N do tasks[i] = spawn(work) end
  local t1 = now()
  if pending > 0 then coroutine.yield() end -- resumed by the last task to end
  local t2 = now()
  print(string.format("spawn=%.3f wall=%.3f", t1 - t0, t2 - t0))
end)
assert(coroutine.resume(main_co))
uv.run()
