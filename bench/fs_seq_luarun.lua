-- bench/fs_runners.sh's sequential case: one call at a time, so each pays the whole
-- hand-over to a file runner and back.
--   luarun fs_seq_luarun.lua PATH   -> "read_s write_s": 2,000 read_file, 500 write_file
local lr = require "luarun"
local fs = require "luarun.fs"
local p = assert(arg[1], "usage: fs_seq_luarun.lua PATH")
assert(fs.write_file(p, ("x"):rep(4096)))
local t0 = lr.now()
for _ = 1, 2000 do assert(fs.read_file(p)) end
local t1 = lr.now()
for _ = 1, 500 do assert(fs.write_file(p, "y")) end
print(("%.4f %.4f"):format(t1 - t0, lr.now() - t1))
