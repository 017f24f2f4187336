-- Specs of luarun.fs: every call, every error kind, cancellation, large offsets.
local lr = require "luarun"
local fs = require "luarun.fs"
local util = require "support.util"

local q = util.quote

-- Runs fn(dir) in a task with a fresh temporary directory, removed afterwards; then
-- checks that nothing is left running.
local function with_dir(fn)
  local dir
  local ok, err = pcall(lr.run, function()
    dir = assert(fs.mkdtemp("/tmp/luarun-fs-spec-"))
    fn(dir)
  end)
  if dir then os.execute("rm -rf " .. q(dir)) end
  if not ok then error(err, 0) end
  local st = lr.stats()
  assert.are.equal(0, st.tasks)
  assert.are.equal(0, st.handles)
end

-- Lets orphaned requests finish: a few turns of the loop with real I/O in between.
local function settle()
  for _ = 1, 20 do
    assert(fs.stat("/"))
    lr.sleep(0.005)
  end
end

-- Open descriptors of this process (read inside a task).
local function fd_count()
  collectgarbage()
  settle()
  return #assert(fs.readdir("/proc/self/fd"))
end

-- Waits (a bounded number of turns) until the descriptor count is back to `want`:
-- orphaned jobs finish on the thread pool in their own time.
local function fd_count_back_to(want)
  local n
  for _ = 1, 200 do
    n = fd_count()
    if n == want then break end
  end
  return n
end

local function temp_files(dir)
  local left = {}
  for _, e in ipairs(assert(fs.readdir(dir))) do
    if e.name:find("%.tmp$") then left[#left + 1] = e.name end
  end
  return left
end

-- For specs that run luarun as a child process: a fresh directory under /tmp (removed
-- by the spec), and writing a file in one go.
local function new_dir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. q(dir)))
  return dir
end

-- Linux's major version: luarun creates no unnamed files before 6.0 (see core/fs.c).
local function kernel_major()
  local p = assert(io.popen("uname -r"))
  local v = tonumber(p:read("a"):match("^(%d+)"))
  p:close()
  return v
end

local function put(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Writes `script` as dir/child.lua and runs it with luarun (at most 30 s); `shell`:
-- what the command line starts with (variables, ulimit), `args`: the script's
-- arguments, shell syntax. Returns exit code, stdout, stderr.
local function run_child(dir, script, shell, args)
  put(dir .. "/child.lua", script)
  return util.sh((shell or "") .. " timeout 30 " .. q(util.bin) .. " " .. q(dir .. "/child.lua") ..
                 " " .. (args or ""))
end

local function expect_err(kind, v, err)
  assert.is_nil(v)
  assert.are.equal("table", type(err))
  assert.are.equal(kind, err.kind, tostring(err))
  assert.is_string(err.message)
  assert.is_string(err.code)
  return err
end

describe("luarun.fs", function()
  describe("read_file and write_file", function()
    it("round-trips text, binary data and the empty string", function()
      with_dir(function(dir)
        local bin = {}
        for i = 0, 255 do bin[#bin + 1] = string.char(i) end
        bin = table.concat(bin):rep(300)
        for _, data in ipairs({ "hello\n", "", bin }) do
          assert.is_true(fs.write_file(dir .. "/f", data))
          assert.are.equal(data, fs.read_file(dir .. "/f"))
        end
      end)
    end)

    it("truncates by default and appends with opts.append", function()
      with_dir(function(dir)
        local p = dir .. "/f"
        assert(fs.write_file(p, "first line\n"))
        assert(fs.write_file(p, "short"))
        assert.are.equal("short", fs.read_file(p))
        assert(fs.write_file(p, "+more", { append = true }))
        assert(fs.write_file(p .. "2", "new", { append = true }))
        assert.are.equal("short+more", fs.read_file(p))
        assert.are.equal("new", fs.read_file(p .. "2"))
      end)
    end)

    it("creates files with opts.mode", function()
      with_dir(function(dir)
        assert(fs.write_file(dir .. "/secret", "x", { mode = tonumber("600", 8) }))
        assert.are.equal(tonumber("600", 8), fs.stat(dir .. "/secret").mode)
        assert(fs.write_file(dir .. "/a", "x", { mode = tonumber("640", 8), atomic = true }))
        assert.are.equal(tonumber("640", 8), fs.stat(dir .. "/a").mode)
      end)
    end)

    it("reads a file larger than its first chunk, and files of /proc (size 0)", function()
      with_dir(function(dir)
        local big = ("0123456789abcdef"):rep(300000) -- 4.8 MB
        assert(fs.write_file(dir .. "/big", big))
        assert.are.equal(big, fs.read_file(dir .. "/big"))
        local status = fs.read_file("/proc/self/status")
        assert.truthy(status:find("Pid:", 1, true))
      end)
    end)

    it("replaces a file atomically and leaves no temporary file", function()
      with_dir(function(dir)
        local p = dir .. "/config.json"
        assert(fs.write_file(p, "old"))
        assert.is_true(fs.write_file(p, "new content", { atomic = true }))
        assert.are.equal("new content", fs.read_file(p))
        local names = {}
        for _, e in ipairs(fs.readdir(dir)) do names[#names + 1] = e.name end
        assert.are.same({ "config.json" }, names)
      end)
    end)

    it("keeps the old content when an atomic write fails half-way (RLIMIT_FSIZE)", function()
      -- The child may write at most one block (512 bytes for sh's ulimit -f) per file:
      -- the temporary file takes that much of the 8 KiB, then write fails with EFBIG.
      -- SIGXFSZ is ignored so that the write returns the error instead of killing it.
      local dir = new_dir()
      local p = dir .. "/data"
      put(p, "old content")
      put(dir .. "/plain", "old plain content")
      local code, out = run_child(dir, ([[
        local fs = require "luarun.fs"
        local ok, err = fs.write_file(%q, ("x"):rep(8192), { atomic = true })
        print(ok, err and err.kind, err and err.code, err and err.path)
        local ok2, err2 = fs.write_file(%q, ("y"):rep(8192))
        print(ok2, err2 and err2.code)
        local ok3, err3 = fs.write_file(%q, ("z"):rep(8192))
        print(ok3, err3 and err3.code)
      ]]):format(p, dir .. "/plain", dir .. "/new"), "trap '' XFSZ; ulimit -f 1;")
      assert.are.equal(0, code, out)
      assert.are.equal("nil\tio\tEFBIG\t" .. p .. "\nnil\tEFBIG\nnil\tEFBIG\n", out)
      local f = assert(io.open(p, "rb"))
      assert.are.equal("old content", f:read("a"))
      f:close()
      -- The plain (non-atomic) write of an existing file was truncated in place and
      -- kept its first block: what atomic prevents.
      f = assert(io.open(dir .. "/plain", "rb"))
      local got = f:read("a")
      assert.truthy(#got > 0 and #got < 8192 and not got:find("old"), #got)
      f:close()
      -- A new file appears whole or not at all: the failed one is gone (issue 23).
      local ls = io.popen("ls -A " .. q(dir)):read("a")
      assert.are.equal("child.lua\ndata\nplain\n", ls)
      os.execute("rm -rf " .. q(dir))
    end)

    it("creates new files unnamed where creating is slow: whole or not at all", function()
      -- core/fs.c creates a new file unnamed (O_TMPFILE, linked under its name once
      -- written) only in a directory where creating files has been slow; the variable
      -- LUARUN_FS_CREATE=unnamed asks for it everywhere, so a child process runs each case.
      local dir = new_dir()
      local code, out, err = run_child(dir, [=[
        local lr = require "luarun"
        local fs = require "luarun.fs"
        local dir = arg[1]
        local fds = #fs.readdir("/proc/self/fd")
        -- A new file, with the mode the named path gives it.
        assert(fs.write_file(dir .. "/new", "content"))
        print("new", fs.read_file(dir .. "/new"))
        assert(fs.write_file(dir .. "/secret", "x", { mode = tonumber("600", 8) }))
        print("mode", ("%o"):format(fs.stat(dir .. "/secret").mode))
        io.open(dir .. "/by-io", "w"):close()
        print("default mode", fs.stat(dir .. "/new").mode == fs.stat(dir .. "/by-io").mode)
        -- An existing file is truncated in place; a dangling link is followed.
        local ino = fs.stat(dir .. "/new").ino
        assert(fs.write_file(dir .. "/new", "short"))
        print("overwritten", fs.read_file(dir .. "/new"), fs.stat(dir .. "/new").ino == ino)
        assert(os.execute("ln -s target " .. dir .. "/link"))
        assert(fs.write_file(dir .. "/link", "via the link"))
        print("link", fs.read_file(dir .. "/target"), fs.lstat(dir .. "/link").type)
        -- Errors are the named path's.
        local ok, err = fs.write_file(dir .. "/missing/f", "x")
        print("missing", ok, err.kind, err.path == dir .. "/missing/f")
        ok, err = fs.write_file(dir, "x")
        print("a directory", ok, err.kind)
        -- A large file is not there until it is whole, and not at all if cancelled.
        local big = ("z"):rep(128 << 20)
        local t = lr.spawn(fs.write_file, dir .. "/big", big)
        lr.sleep(0.005)
        print("while written", fs.exists(dir .. "/big"))
        print("written", t:wait(), fs.stat(dir .. "/big").size == #big)
        t = lr.spawn(fs.write_file, dir .. "/cancelled", big)
        lr.sleep(0.005)
        t:cancel()
        local done, e = pcall(t.wait, t)
        print("cancelled", done, e.kind)
        for _ = 1, 100 do
          if #fs.readdir("/proc/self/fd") == fds then break end
          lr.sleep(0.01)
        end
        print("after cancel", fs.exists(dir .. "/cancelled"), #fs.readdir("/proc/self/fd") == fds)
        -- Many at once, and two tasks racing for each of 200 new names.
        local names, good = {}, 0
        for i = 1, 500 do names[i] = dir .. "/m" .. i end
        lr.map(names, function(p, i) assert(fs.write_file(p, ("%d\n"):format(i):rep(i % 50 + 1))) end)
        for i, p in ipairs(names) do
          if fs.read_file(p) == ("%d\n"):format(i):rep(i % 50 + 1) then good = good + 1 end
        end
        print("many", good)
        good = 0
        lr.map(table.move(names, 1, 200, 1, {}), function(p, i)
          lr.gather(function() assert(fs.write_file(p .. "r", "a" .. i)) end,
                    function() assert(fs.write_file(p .. "r", "b" .. i)) end)
          local got = fs.read_file(p .. "r")
          if got == "a" .. i or got == "b" .. i then good = good + 1 end
        end)
        print("raced", good, #fs.readdir(dir))
      ]=], "LUARUN_FS_CREATE=unnamed", q(dir))
      assert.are.equal(0, code, err)
      if kernel_major() < 6 then
        -- Refused there (O_TMPFILE ignored the umask on filesystems without ACLs), even
        -- when asked for: the large file is visible while it is written.
        assert.truthy(out:find("while written\ttrue", 1, true), out)
      else
        assert.are.equal(table.concat({
          "new\tcontent", "mode\t600", "default mode\ttrue", "overwritten\tshort\ttrue",
          "link\tvia the link\tlink", "missing\tnil\tnot_found\ttrue", "a directory\tnil\tis_dir",
          "while written\tfalse", "written\ttrue\ttrue", "cancelled\tfalse\tcancelled",
          "after cancel\tfalse\ttrue", "many\t500", "raced\t200\t707", ""
        }, "\n"), out)
        -- A write that fails half-way (RLIMIT_FSIZE, as in the atomic case above) leaves
        -- no file at all, where the named path leaves its first block.
        code, out = run_child(dir, ([[
          local fs = require "luarun.fs"
          local ok, err = fs.write_file(%q, ("y"):rep(8192))
          print(ok, err.code, fs.exists(%q))
        ]]):format(dir .. "/limited", dir .. "/limited"),
          "trap '' XFSZ; ulimit -f 1; LUARUN_FS_CREATE=unnamed")
        assert.are.equal(0, code, out)
        assert.are.equal("nil\tEFBIG\tfalse\n", out)
      end
      os.execute("rm -rf " .. q(dir))
    end)

    it("reads large files (parallel slices, string built in place) and files that change", function()
      with_dir(function(dir)
        -- 20 MB of varied bytes: above the size read in parallel slices.
        local parts = {}
        for i = 1, 20 * 1024 do parts[i] = ("%07d"):format(i):rep(147) .. ("\0\255\n"):rep(5) end
        local big = table.concat(parts)
        assert.is_true(#big > 16 * 1024 * 1024)
        assert(fs.write_file(dir .. "/big", big))
        local got = assert(fs.read_file(dir .. "/big"))
        assert.are.equal(#big, #got)
        assert.is_true(big == got)
        -- The string behaves as any other: used as a key, concatenated, collected.
        local t = { [got] = 1 }
        assert.are.equal(1, t[big])
        assert.are.equal(#big + 1, #(got .. "x"))
        got, t = nil, nil
        collectgarbage()
        -- Just above and below the small buffers, and sizes around a huge page.
        for _, n in ipairs({ 8191, 8192, 8193, 65537, 2 * 1024 * 1024 + 3 }) do
          local data = ("ab\0"):rep(n // 3 + 1):sub(1, n)
          assert(fs.write_file(dir .. "/n", data))
          assert.is_true(fs.read_file(dir .. "/n") == data, n)
        end
        -- A file rewritten shorter and longer between reads.
        assert(fs.write_file(dir .. "/big", big:sub(1, 17 * 1024 * 1024)))
        assert.is_true(fs.read_file(dir .. "/big") == big:sub(1, 17 * 1024 * 1024))
        assert(fs.write_file(dir .. "/big", big .. "tail"))
        assert.is_true(fs.read_file(dir .. "/big") == big .. "tail")
      end)
    end)

    it("writes large strings to regular files and to devices", function()
      with_dir(function(dir)
        local data = ("0123456789"):rep(100000) -- 1 MB: written from the string itself
        assert.is_true(fs.write_file(dir .. "/a", data))
        assert.is_true(fs.write_file(dir .. "/a", data, { append = true }))
        assert.is_true(fs.read_file(dir .. "/a") == data .. data)
        assert.is_true(fs.write_file(dir .. "/b", data, { atomic = true }))
        assert.is_true(fs.read_file(dir .. "/b") == data)
        assert.is_true(fs.write_file("/dev/null", data)) -- not a regular file: copied first
        assert.are.same({}, temp_files(dir))
      end)
    end)

    it("reads 1,000 files concurrently", function()
      with_dir(function(dir)
        local names = {}
        for i = 1, 1000 do names[i] = ("%s/f%04d"):format(dir, i) end
        lr.map(names, function(p, i) assert(fs.write_file(p, ("%d\n"):format(i):rep(i % 50 + 1))) end)
        local before = fd_count()
        local got = lr.map(names, function(p) return assert(fs.read_file(p)) end)
        assert.are.equal(1000, got.n)
        for i = 1, 1000 do assert.are.equal(("%d\n"):format(i):rep(i % 50 + 1), got[i]) end
        assert.are.equal(before, fd_count())
      end)
    end)
  end)

  describe("errors", function()
    it("returns nil, err with kind, message, path and the libuv code", function()
      with_dir(function(dir)
        local err = expect_err("not_found", fs.read_file(dir .. "/missing"))
        assert.are.equal("ENOENT", err.code)
        assert.are.equal(dir .. "/missing", err.path)
        assert.are.equal("not_found: no such file or directory (" .. dir .. "/missing)",
                         tostring(err))
        local ok, raised = pcall(function() assert(fs.read_file(dir .. "/missing")) end)
        assert.is_false(ok)
        assert.truthy(tostring(raised):find("not_found", 1, true))
      end)
    end)

    it("maps every errno kind", function()
      with_dir(function(dir)
        assert(fs.write_file(dir .. "/file", "x"))
        assert(fs.mkdir(dir .. "/full"))
        assert(fs.write_file(dir .. "/full/x", "x"))
        expect_err("not_found", fs.stat(dir .. "/nope"))
        expect_err("exists", fs.mkdir(dir .. "/full"))
        expect_err("permission", fs.remove("/proc/version"))
        expect_err("is_dir", fs.read_file(dir))
        expect_err("is_dir", fs.remove(dir .. "/full"))
        expect_err("not_dir", fs.stat(dir .. "/file/x"))
        expect_err("not_dir", fs.rmdir(dir .. "/file"))
        expect_err("not_empty", fs.rmdir(dir .. "/full"))
        expect_err("busy", fs.rmdir("/proc"))
        expect_err("no_space", fs.write_file("/dev/full", "x"))
        assert(os.execute(("ln -s loop2 %s/loop1 && ln -s loop1 %s/loop2"):format(q(dir), q(dir))))
        local err = expect_err("io", fs.read_file(dir .. "/loop1"))
        assert.are.equal("ELOOP", err.code)
      end)
    end)

    it("reports too_many_files when descriptors run out", function()
      local path = os.tmpname()
      local f = assert(io.open(path, "wb"))
      f:write([[
        local fs = require "luarun.fs"
        local files, result = {}, "never ran out"
        for i = 1, 100 do
          local f, err = fs.open("/dev/null")
          if not f then
            result = err.kind .. "\t" .. err.code
            break
          end
          files[i] = f
        end
        print(result)
      ]])
      f:close()
      local code, out = util.sh("ulimit -n 30; " .. q(util.bin) .. " " .. q(path))
      os.remove(path)
      assert.are.equal(0, code)
      assert.are.equal("too_many_files\tEMFILE\n", out)
    end)

    it("raises on misuse, naming the function and the argument", function()
      lr.run(function()
        local function raises(pattern, fn)
          local ok, err = pcall(fn)
          assert.is_false(ok)
          assert.truthy(tostring(err):find(pattern, 1, true), tostring(err))
        end
        -- (calls not in tail position, so that Lua knows the function's name)
        raises("bad argument #1 to 'read_file' (string expected, got number)",
               function() local _ = fs.read_file(1) end)
        raises("bad argument #2 to 'write_file' (string expected, got table)",
               function() local _ = fs.write_file("/tmp/x", {}) end)
        raises("bad argument #3 to 'write_file' (table expected, got number)",
               function() local _ = fs.write_file("/tmp/x", "", 5) end)
        raises("exclude each other",
               function() local _ = fs.write_file("/tmp/x", "", { append = true, atomic = true }) end)
        raises("opts.mode must be an integer",
               function() local _ = fs.write_file("/tmp/x", "", { mode = "rw" }) end)
        raises("bad argument #2 to 'open' (invalid mode)",
               function() local _ = fs.open("/tmp/x", "rw") end)
        raises("zero byte", function() local _ = fs.stat("/tmp\0x") end)
        raises("bad argument #2 to 'rename' (string expected, got no value)",
               function() local _ = fs.rename("/tmp/x") end)
        raises("bad argument #2 to 'mkdir' (table expected, got boolean)",
               function() local _ = fs.mkdir("/x", true) end)
        raises("bad argument #1 to 'lines' (string expected, got nil)",
               function() local _ = fs.lines() end)
      end)
      -- Outside any task it raises too. (The exact message depends on the main
      -- thread's extra space, which Lua leaves uninitialised: reported to the core.)
      local ok, err = pcall(fs.read_file, "/etc/hostname")
      assert.is_false(ok)
      assert.truthy(err:find("read_file: ", 1, true))
    end)
  end)

  describe("open and luarun.File", function()
    it("reads, writes at offsets, syncs, stats and closes", function()
      with_dir(function(dir)
        local f = assert(fs.open(dir .. "/f", "w+"))
        assert.are.equal("luarun.File", getmetatable(f).__name)
        assert.is_true(f:write("hello world"))
        assert.is_true(f:write("J", 6))
        assert.are.equal("hello", f:read(5, 0))
        assert.are.equal("Jorld", f:read(100, 6))
        assert.is_nil(f:read(10, 11)) -- end of file
        assert.are.equal("", f:read(0))
        assert.is_true(f:sync())
        local st = f:stat()
        assert.are.equal(11, st.size)
        assert.are.equal("file", st.type)
        assert.is_true(f:close())
        assert.are.equal("luarun.File (closed)", tostring(f))
        assert.are.equal("hello Jorld", fs.read_file(dir .. "/f"))
      end)
    end)

    it("reads sequentially from the file position, and appends in 'a' mode", function()
      with_dir(function(dir)
        assert(fs.write_file(dir .. "/f", "abcdef"))
        local f = assert(fs.open(dir .. "/f"))
        assert.are.equal("abc", f:read(3))
        assert.are.equal("def", f:read(3))
        assert.is_nil(f:read(3))
        local err = expect_err("io", f:write("x")) -- opened read-only
        assert.are.equal("EBADF", err.code)
        f:close()
        local a = assert(fs.open(dir .. "/f", "a"))
        assert(a:write("gh"))
        a:close()
        assert.are.equal("abcdefgh", fs.read_file(dir .. "/f"))
        expect_err("not_found", fs.open(dir .. "/missing"))
        expect_err("is_dir", fs.open(dir, "w"))
      end)
    end)

    it("raises when a closed file is used", function()
      with_dir(function(dir)
        local f = assert(fs.open(dir .. "/f", "w"))
        f:close()
        for _, call in ipairs({ function() f:read(1) end, function() f:write("x") end,
                                function() f:sync() end, function() f:close() end }) do
          local ok, err = pcall(call)
          assert.is_false(ok)
          assert.truthy(err:find("attempt to use a closed file", 1, true))
        end
      end)
    end)

    it("closes on <close> and on collection, without leaking descriptors", function()
      with_dir(function(dir)
        assert(fs.write_file(dir .. "/f", "x"))
        local before = fd_count()
        do
          local f <close> = assert(fs.open(dir .. "/f"))
          assert.are.equal("x", f:read(1))
        end
        for _ = 1, 50 do fs.open(dir .. "/f") end -- forgotten files
        collectgarbage()
        collectgarbage()
        settle()
        assert.are.equal(before, fd_count())
      end)
    end)

    it("works past 2 GiB offsets (a sparse file)", function()
      with_dir(function(dir)
        local off = 3 * 1024 * 1024 * 1024
        local f = assert(fs.open(dir .. "/sparse", "w+"))
        assert.is_true(f:write("Z", off))
        assert.are.equal("Z", f:read(1, off))
        assert.are.equal(off + 1, f:stat().size)
        f:close()
        assert.are.equal(off + 1, fs.stat(dir .. "/sparse").size)
        local g = assert(fs.open(dir .. "/sparse", "r"))
        assert.are.equal("\0\0Z", g:read(10, off - 2))
        g:close()
      end)
    end)
  end)

  describe("stat, lstat, readdir", function()
    it("describes files, directories, links, fifos", function()
      with_dir(function(dir)
        assert(fs.write_file(dir .. "/b-file", "12345"))
        assert(fs.mkdir(dir .. "/c-dir"))
        assert(os.execute(("ln -s b-file %s/a-link && mkfifo %s/d-fifo"):format(q(dir), q(dir))))
        local st = assert(fs.stat(dir .. "/b-file"))
        assert.are.equal(5, st.size)
        assert.are.equal("file", st.type)
        assert.is_number(st.mtime)
        assert.truthy(math.abs(st.mtime - os.time()) < 60)
        assert.are.equal("file", fs.stat(dir .. "/a-link").type)
        assert.are.equal("link", fs.lstat(dir .. "/a-link").type)
        assert.are.equal("directory", fs.stat(dir .. "/c-dir").type)
        assert.are.equal("fifo", fs.stat(dir .. "/d-fifo").type)
        assert.are.equal("char", fs.stat("/dev/null").type)
        assert.are.same({
          { name = "a-link", type = "link" }, { name = "b-file", type = "file" },
          { name = "c-dir", type = "directory" }, { name = "d-fifo", type = "fifo" },
        }, fs.readdir(dir))
        expect_err("not_found", fs.readdir(dir .. "/nope"))
        expect_err("not_dir", fs.readdir(dir .. "/b-file"))
      end)
    end)

    it("sorts readdir by name", function()
      with_dir(function(dir)
        local want = {}
        for i = 1, 40 do
          local name = ("n%03d"):format((i * 17) % 41)
          want[#want + 1] = name
          assert(fs.write_file(dir .. "/" .. name, ""))
        end
        table.sort(want)
        local got = {}
        for i, e in ipairs(fs.readdir(dir)) do got[i] = e.name end
        assert.are.same(want, got)
      end)
    end)
  end)

  describe("directories and paths", function()
    it("mkdir, with parents, and rmdir", function()
      with_dir(function(dir)
        expect_err("not_found", fs.mkdir(dir .. "/a/b/c"))
        assert.is_true(fs.mkdir(dir .. "/a/b/c", { parents = true }))
        assert.is_true(fs.mkdir(dir .. "/a/b/c", { parents = true })) -- exists: fine
        assert.is_true(fs.mkdir(dir .. "//a/./b/d/", { parents = true }))
        assert.are.equal("directory", fs.stat(dir .. "/a/b/d").type)
        assert(fs.write_file(dir .. "/file", ""))
        expect_err("exists", fs.mkdir(dir .. "/file", { parents = true }))
        expect_err("not_dir", fs.mkdir(dir .. "/file/x", { parents = true }))
        assert.is_true(fs.rmdir(dir .. "/a/b/c"))
        assert.is_false(fs.exists(dir .. "/a/b/c"))
        assert.is_true(fs.mkdir(dir .. "/m", { mode = tonumber("700", 8) }))
        assert.are.equal(tonumber("700", 8), fs.stat(dir .. "/m").mode)
      end)
    end)

    it("remove, rename, copyfile, exists", function()
      with_dir(function(dir)
        assert(fs.write_file(dir .. "/a", "data"))
        assert.is_true(fs.exists(dir .. "/a"))
        assert.is_true(fs.exists(dir))
        assert.is_false(fs.exists(dir .. "/zz"))
        assert.is_false(fs.exists(dir .. "/a/zz"))
        assert.is_true(fs.copyfile(dir .. "/a", dir .. "/b"))
        assert.are.equal("data", fs.read_file(dir .. "/b"))
        assert.is_true(fs.rename(dir .. "/b", dir .. "/c"))
        assert.is_false(fs.exists(dir .. "/b"))
        assert.are.equal("data", fs.read_file(dir .. "/c"))
        local err = expect_err("not_found", fs.rename(dir .. "/b", dir .. "/d"))
        assert.are.equal(dir .. "/b", err.path)
        assert.are.equal(dir .. "/d", err.dest)
        expect_err("not_found", fs.copyfile(dir .. "/b", dir .. "/d"))
        assert.is_true(fs.remove(dir .. "/c"))
        expect_err("not_found", fs.remove(dir .. "/c"))
      end)
    end)

    it("mkdtemp appends six random characters", function()
      with_dir(function(dir)
        local a = assert(fs.mkdtemp(dir .. "/tmp-"))
        local b = assert(fs.mkdtemp(dir .. "/tmp-"))
        assert.are_not.equal(a, b)
        assert.truthy(a:match("/tmp%-[%w]+$"))
        assert.are.equal(#dir + 5 + 6, #a)
        assert.are.equal("directory", fs.stat(a).type)
        expect_err("not_found", fs.mkdtemp(dir .. "/nope/tmp-"))
      end)
    end)
  end)

  describe("lines", function()
    it("iterates lines, with a last line without newline and lines longer than a chunk", function()
      with_dir(function(dir)
        local long = ("x"):rep(200000)
        assert(fs.write_file(dir .. "/f", "one\n\nthree\n" .. long .. "\nlast"))
        local got = {}
        for line in fs.lines(dir .. "/f") do got[#got + 1] = line end
        assert.are.same({ "one", "", "three", long, "last" }, got)
        assert(fs.write_file(dir .. "/g", "a\nb\n"))
        got = {}
        for line in fs.lines(dir .. "/g") do got[#got + 1] = line end
        assert.are.same({ "a", "b" }, got)
        assert(fs.write_file(dir .. "/e", ""))
        for _ in fs.lines(dir .. "/e") do error("no lines expected") end
      end)
    end)

    it("closes the file at the end and when the loop breaks", function()
      with_dir(function(dir)
        local lines = {}
        for i = 1, 30000 do lines[i] = "line " .. i end
        assert(fs.write_file(dir .. "/f", table.concat(lines, "\n")))
        local before = fd_count()
        local n = 0
        for _ in fs.lines(dir .. "/f") do n = n + 1 end
        assert.are.equal(30000, n)
        for line in fs.lines(dir .. "/f") do
          if line == "line 10" then break end
        end
        local ok = pcall(function()
          for _ in fs.lines(dir .. "/f") do error("stop") end
        end)
        assert.is_false(ok)
        settle()
        assert.are.equal(before, fd_count())
      end)
    end)

    it("raises the open error", function()
      with_dir(function(dir)
        local ok, err = pcall(function()
          for _ in fs.lines(dir .. "/missing") do end
        end)
        assert.is_false(ok)
        assert.are.equal("not_found", err.kind)
      end)
    end)
  end)

  describe("cancellation", function()
    it("of read_file and write_file jobs, at every stage, leaks no descriptor or temporary file", function()
      with_dir(function(dir)
        local small = ("s"):rep(3000)
        local large = ("L"):rep(3 * 1024 * 1024) -- borrowed by the job, not copied
        assert(fs.write_file(dir .. "/src", large))
        local before = fd_count()
        -- Cancelled before the jobs are handed over (same turn), while they wait for a
        -- runner or run (after 0 or more turns), and after they ended.
        for round = 1, 12 do
          local tasks = {}
          for i = 1, 40 do
            local k = i % 4
            if k == 0 then
              tasks[i] = lr.spawn(fs.write_file, ("%s/a%d"):format(dir, i), small, { atomic = true })
            elseif k == 1 then
              tasks[i] = lr.spawn(fs.write_file, ("%s/b%d"):format(dir, i), large, { atomic = true })
            elseif k == 2 then
              tasks[i] = lr.spawn(fs.write_file, ("%s/c%d"):format(dir, i), large)
            else
              tasks[i] = lr.spawn(fs.read_file, dir .. "/src")
            end
          end
          for _ = 1, round % 4 do lr.sleep(0) end
          if round > 8 then lr.sleep(0.002 * round) end
          for _, t in ipairs(tasks) do t:cancel() end
          for i, t in ipairs(tasks) do
            local ok, v = pcall(t.wait, t)
            if ok then
              assert.truthy(v, i)
            else
              assert.are.equal("cancelled", v.kind)
            end
          end
        end
        assert.are.equal(before, fd_count_back_to(before))
        assert.are.same({}, temp_files(dir))
        -- An atomic write happened wholly or not at all.
        for _, e in ipairs(assert(fs.readdir(dir))) do
          local data = fs.read_file(dir .. "/" .. e.name)
          if e.name:sub(1, 1) == "a" then assert.is_true(data == small, e.name) end
          if e.name:sub(1, 1) == "b" then assert.is_true(data == large, e.name) end
        end
      end)
    end)

    it("cancels at once a large write_file still waiting to open a FIFO", function()
      -- The job is blocked in open() (no reader) and has not touched the task's string
      -- yet: the cancel takes the loan back instead of waiting for the job.
      local dir = new_dir()
      assert(os.execute("mkfifo " .. q(dir .. "/fifo")))
      local code, out, err = run_child(dir, [[
        local lr = require "luarun"
        local fs = require "luarun.fs"
        local fifo = arg[1]
        local t = lr.spawn(fs.write_file, fifo, ("x"):rep(300000)) -- borrowed, not copied
        lr.sleep(0.05)
        t:cancel()
        local ok, e = pcall(t.wait, t)
        print("cancelled", ok, e.kind)
        -- A reader lets the job's open() return; it then writes nothing.
        print("reader", os.execute("timeout 5 cat " .. fifo .. " | wc -c"))
      ]], nil, q(dir .. "/fifo"))
      os.execute("rm -rf " .. q(dir))
      assert.are.equal(0, code, err)
      assert.are.equal("cancelled\tfalse\tcancelled\n0\nreader\ttrue\texit\t0\n", out)
    end)

    it("cancels at once an unnamed write whose name became a FIFO meanwhile", function()
      -- The link finds the name taken, the job goes on to the named path and blocks in
      -- open(): the loan of the task's string is on offer again, so the cancel revokes it.
      local dir = new_dir()
      local code, out, err = run_child(dir, [[
        local lr = require "luarun"
        local fs = require "luarun.fs"
        local fds = "/proc/" .. fs.read_file("/proc/self/stat"):match("^%d+") .. "/fd"
        local function unnamed_open() -- the unnamed file shows as "#<inode> (deleted)"
          local p = io.popen("ls -l " .. fds)
          local l = p:read("a")
          p:close()
          return l:find("(deleted)", 1, true) ~= nil
        end
        local big = ("z"):rep(256 << 20)
        local caught = false
        for attempt = 1, 20 do -- until the name is taken while the file is written
          local path = arg[1] .. "/target" .. attempt
          local t = lr.spawn(fs.write_file, path, big)
          local taken = false
          for _ = 1, 500 do
            if unnamed_open() then
              taken = os.execute("mkfifo " .. path .. " 2>/dev/null")
              break
            end
            lr.sleep(0.001)
          end
          if taken then
            for _ = 1, 500 do -- written, link refused, unnamed file closed
              if not unnamed_open() then break end
              lr.sleep(0.002)
            end
            lr.sleep(0.05) -- the named open() now waits for a reader
            t:cancel()
            local ok, e = pcall(t.wait, t)
            print("cancelled", ok, e.kind)
            os.execute("timeout 5 cat " .. path .. " > /dev/null") -- lets open() return
            caught = true
            break
          end
          t:wait()
        end
        if not caught then print("the write always ended first") end
      ]], "LUARUN_FS_CREATE=unnamed", q(dir))
      os.execute("rm -rf " .. q(dir))
      assert.are.equal(0, code, err)
      assert.are.equal("cancelled\tfalse\tcancelled\n", out)
    end)

    it("names the file for inotify when it closes after an unnamed create", function()
      -- Watchers waiting for IN_CLOSE_WRITE on a name (build tools, incron) must see it.
      local dir = new_dir()
      put(dir .. "/child.lua", [[
        local lr = require "luarun"
        local fs = require "luarun.fs"
        lr.map({ "a", "b", "c" }, function(n) assert(fs.write_file(arg[1] .. "/" .. n, n)) end)
      ]])
      put(dir .. "/watch.py", [[
import ctypes, os, select, struct, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
libc.inotify_add_watch(fd, sys.argv[1].encode(), 0x8)  # IN_CLOSE_WRITE
subprocess.run(sys.argv[2:], check=True)
names, buf = set(), b""
while select.select([fd], [], [], 0.5)[0]:
    buf += os.read(fd, 65536)
while buf:
    _, _, _, n = struct.unpack_from("iIII", buf)
    name = buf[16:16 + n].rstrip(b"\0").decode()
    if not name.startswith("#"): names.add(name)
    buf = buf[16 + n:]
print(" ".join(sorted(names)))
]])
      local code, out, err = util.sh("LUARUN_FS_CREATE=unnamed timeout 30 python3 " ..
                                     q(dir .. "/watch.py") .. " " .. q(dir) .. " " .. q(util.bin) ..
                                     " " .. q(dir .. "/child.lua") .. " " .. q(dir))
      os.execute("rm -rf " .. q(dir))
      assert.are.equal(0, code, err)
      assert.are.equal("a b c\n", out)
    end)

    it("raises cancelled and lets the in-flight request finish on its own", function()
      with_dir(function(dir)
        local big = ("z"):rep(8 * 1024 * 1024)
        assert(fs.write_file(dir .. "/big", big))
        local before = fd_count()
        for _ = 1, 20 do
          local tasks = {
            lr.spawn(fs.read_file, dir .. "/big"),
            lr.spawn(fs.open, dir .. "/big"),
            lr.spawn(fs.write_file, dir .. "/out", big, { atomic = true }),
            lr.spawn(fs.write_file, dir .. "/out2", big),
            lr.spawn(fs.readdir, dir),
            lr.spawn(fs.mkdtemp, dir .. "/t-"),
          }
          lr.sleep(0) -- they start and wait on their requests
          for _, t in ipairs(tasks) do t:cancel() end
          for _, t in ipairs(tasks) do
            local ok, err = pcall(t.wait, t)
            if not ok then assert.are.equal("cancelled", err.kind) end
          end
        end
        settle()
        assert.are.equal(before, fd_count())
        for _, e in ipairs(fs.readdir(dir)) do
          assert.is_nil(e.name:find("%.tmp$"), "temporary file left: " .. e.name)
        end
        -- A timeout cancels a read the same way.
        local v, err = lr.timeout(0, fs.read_file, dir .. "/big")
        assert.is_nil(v)
        assert.are.equal("timeout", err.kind)
        assert.are.equal(big, fs.read_file(dir .. "/big"))
      end)
    end)
  end)
end)
