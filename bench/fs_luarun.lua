-- luarun side of bench/fs.sh.
--   luarun fs_luarun.lua small DIR   -> "write_s read_s" for 2,000 files of 4 KiB
--   luarun fs_luarun.lua large FILE  -> "read_s" for one read_file of FILE
local lr = require "luarun"
local fs = require "luarun.fs"
local mode, path = arg[1], arg[2]
if mode == "small" then
  local data = ("x"):rep(4096)
  local names = {}
  for i = 1, 2000 do names[i] = ("%s/f%d"):format(path, i) end
  local t0 = lr.now()
  lr.map(names, function(p) assert(fs.write_file(p, data)) end)
  local t1 = lr.now()
  -- Each file is checked as it arrives and then dropped, as fs_lua_seq.lua does
  -- (keeping all 2,000 strings costs ~2,000 page faults that the baseline never pays).
  local same = 0
  lr.map(names, function(p)
    if assert(fs.read_file(p)) == data then same = same + 1 end
  end)
  local t2 = lr.now()
  assert(same == 2000)
  print(("%.4f %.4f"):format(t1 - t0, t2 - t1))
else
  local t0 = lr.now()
  local s = assert(fs.read_file(path))
  local t1 = lr.now()
  assert(#s > 0)
  print(("%.4f"):format(t1 - t0))
end
