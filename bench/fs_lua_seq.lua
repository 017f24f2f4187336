-- Plain lua5.4, sequential io.open: the baseline of bench/fs.sh (same arguments as
-- fs_luarun.lua).
local mode, path = arg[1], arg[2]
-- A wall clock: luarun.so's lr.now (monotonic) when LUA_CPATH finds it; it is used
-- for nothing else. (os.clock is CPU time and would flatter blocking I/O.)
local ok, lr = pcall(require, "luarun")
local now = ok and lr.now or function()
  local p = io.popen("date +%s.%N")
  local s = tonumber(p:read("a"))
  p:close()
  return s
end
if mode == "small" then
  local data = ("x"):rep(4096)
  local t0 = now()
  for i = 1, 2000 do
    local f = assert(io.open(("%s/f%d"):format(path, i), "wb"))
    f:write(data)
    f:close()
  end
  local t1 = now()
  for i = 1, 2000 do
    local f = assert(io.open(("%s/f%d"):format(path, i), "rb"))
    assert(f:read("a") == data)
    f:close()
  end
  local t2 = now()
  print(("%.4f %.4f"):format(t1 - t0, t2 - t1))
else
  local t0 = now()
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  local t1 = now()
  assert(#s > 0)
  print(("%.4f"):format(t1 - t0))
end
