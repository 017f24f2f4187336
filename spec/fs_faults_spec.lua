-- luarun.fs against faults (issue 23): opens that block for good (a FIFO nobody
-- opens from the other end stands for a hung NFS or FUSE mount), and a full disk.
-- Each case runs a child luarun in a directory of its own, under `timeout`, so a
-- hang shows as exit status 124.
local util = require "support.util"

local q = util.quote

local new_dir, put = util.new_dir, util.put

local function ls(dir)
  local p = assert(io.popen("ls -A " .. q(dir)))
  local s = p:read("a")
  p:close()
  return s
end

-- Runs `script` (each %s in it stands for the directory) as dir/child.lua with a 20 s
-- limit; `shell` prefixes the command. Returns exit code, stdout, stderr, seconds.
local function run_child(dir, script, shell)
  put(dir .. "/child.lua", (script:gsub("%%s", function() return dir end)))
  local code, out, err = util.sh("(t0=$(date +%s%N); " .. (shell or "") .. " timeout 20 " ..
    q(util.bin) .. " " .. q(dir .. "/child.lua") .. "; rc=$?; t1=$(date +%s%N); " ..
    "echo \"elapsed $(( (t1 - t0) / 1000000 ))\" >&2; exit $rc)")
  local ms = tonumber(err:match("elapsed (%d+)\n$"))
  err = err:gsub("elapsed %d+\n$", "")
  return code, out, err, ms / 1000
end

describe("luarun.fs under faults", function()
  local dir

  before_each(function()
    dir = new_dir()
    assert(os.execute("mkfifo " .. q(dir .. "/fifo")))
    put(dir .. "/plain", "plain data")
  end)

  after_each(function()
    os.execute("rm -rf " .. q(dir))
  end)

  it("abandoned blocking opens starve no later call and keep no process alive", function()
    -- More abandoned opens than there are runners or cores, of every kind that
    -- opens: read_file, write_file (a FIFO without a reader blocks the writer too:
    -- another FIFO, or the readers stuck on the first would take its data) and
    -- fs.open.
    assert(os.execute("mkfifo " .. q(dir .. "/fifo_w")))
    local code, out, err, secs = run_child(dir, [[
local lr = require "luarun"
local fs = require "luarun.fs"
local fifo = "%s/fifo"
for i = 1, 3 do
  local ok, e = lr.timeout(0.1, fs.read_file, fifo)
  assert(ok == nil and e.kind == "timeout", tostring(e))
  ok, e = lr.timeout(0.1, fs.write_file, "%s/fifo_w", "x")
  assert(ok == nil and e.kind == "timeout", tostring(e))
  ok, e = lr.timeout(0.1, fs.open, fifo, "r")
  assert(ok == nil and e.kind == "timeout", tostring(e))
end
local t0 = lr.now()
print(lr.timeout(5, fs.read_file, "%s/plain"))
print(lr.timeout(5, fs.write_file, "%s/written", "new data"))
local f = assert(lr.timeout(5, fs.open, "%s/plain"))
print(f:read(5))
f:close()
print(lr.now() - t0 < 2)
]])
    assert.are.equal(0, code, err)
    assert.are.equal("plain data\ntrue\nplain\ntrue\n", out)
    assert.is_true(secs < 10, secs) -- the process exits with nine opens still stuck
  end)

  it("waiting opens that nobody cancels do not hold up the other calls", function()
    -- Three tasks block in open() of the FIFO with no timeout, as many as or more
    -- than the runners: a read of a plain file still goes through, and the blocked
    -- reads finish once a writer comes.
    local code, out, err = run_child(dir, [[
local lr = require "luarun"
local fs = require "luarun.fs"
local fifo = "%s/fifo"
local readers = {}
for i = 1, 3 do readers[i] = lr.spawn(fs.read_file, fifo) end
lr.sleep(0.05)
local t0 = lr.now()
print(lr.timeout(5, fs.read_file, "%s/plain"))
print(lr.now() - t0 < 2)
-- One writer opens the FIFO: every reader blocked in open() gets past it, reads to
-- the end of that write and returns.
assert(fs.write_file(fifo, "through the fifo"))
local got = {}
for i = 1, 3 do got[#got + 1] = readers[i]:wait() end
table.sort(got)
print(table.concat(got, "|"))
]])
    assert.are.equal(0, code, err)
    -- The first reader gets the data, the others the end of the file.
    assert.are.equal("plain data\ntrue\n||through the fifo\n", out)
  end)

  it("a read stuck in libuv's pool keeps no process alive", function()
    -- file:read of a FIFO opened read-write (so the open returns) waits for data
    -- that never comes; the runtime's close leaves it behind.
    local code, out, err, secs = run_child(dir, [[
local lr = require "luarun"
local fs = require "luarun.fs"
local f = assert(fs.open("%s/fifo", "r+"))
local ok, e = lr.timeout(0.1, f.read, f, 10)
print(ok, e.kind)
print(fs.read_file("%s/plain"))
]])
    assert.are.equal(0, code, err)
    assert.are.equal("nil\ttimeout\nplain data\n", out)
    assert.is_true(secs < 10, secs)
  end)

  describe("a full disk", function()
    local mnt

    -- A 64 KiB tmpfs at dir/full: mounted directly as root, else in a user and
    -- mount namespace of the child's own (shell prefix returned).
    local function full_fs()
      mnt = dir .. "/full"
      assert(os.execute("mkdir " .. q(mnt)))
      if os.execute("mount -t tmpfs -o size=64k tmpfs " .. q(mnt) .. " 2>/dev/null") then
        return ""
      end
      mnt = nil
      return "unshare -rm sh -c " .. q("mount -t tmpfs -o size=64k tmpfs " .. q(dir .. "/full") ..
                                       " && exec \"$0\" \"$@\"")
    end

    after_each(function()
      if mnt then os.execute("umount " .. q(mnt)) end
      mnt = nil
    end)

    it("a new file that does not fit leaves nothing under its name (ENOSPC)", function()
      local shell = full_fs()
      local code, out, err = run_child(dir, [[
local fs = require "luarun.fs"
local dir = "%s/full"
local big = ("x"):rep(256 * 1024)
for _, case in ipairs({ {"plain", nil}, {"append", {append = true}}, {"atomic", {atomic = true}} }) do
  local ok, e = fs.write_file(dir .. "/" .. case[1], big, case[2])
  print(case[1], ok, e and e.kind, e and e.code)
end
-- What fits is still written whole, and the space of the failed ones came back.
print(fs.write_file(dir .. "/small", ("y"):rep(1000)))
local names = {}
for _, e in ipairs(assert(fs.readdir(dir))) do names[#names + 1] = e.name end
print(table.concat(names, ","))
]], shell ~= "" and shell or nil)
      assert.are.equal(0, code, err)
      assert.are.equal("plain\tnil\tno_space\tENOSPC\nappend\tnil\tno_space\tENOSPC\n" ..
                       "atomic\tnil\tno_space\tENOSPC\ntrue\nsmall\n", out)
    end)

    it("the named and the unnamed create paths agree", function()
      for _, how in ipairs({ "named", "unnamed" }) do
        local shell = full_fs()
        local code, out, err = run_child(dir, [[
local fs = require "luarun.fs"
local ok, e = fs.write_file("%s/full/f", ("x"):rep(256 * 1024))
print(ok, e and e.kind)
print(#assert(fs.readdir("%s/full")))
]], "LUARUN_FS_CREATE=" .. how .. " " .. shell)
        assert.are.equal(0, code, how .. ": " .. err)
        assert.are.equal("nil\tno_space\n0\n", out, how)
        if mnt then os.execute("umount " .. q(mnt)) end
        mnt = nil
        os.execute("rmdir " .. q(dir .. "/full"))
      end
    end)
  end)
end)
