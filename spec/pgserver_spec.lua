-- spec/support/pgserver.lua: the real PostgreSQL 15 that the database specs run against.
local pg = require "support.pgserver"
local util = require "support.util"

local function alive(pid)
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

local function gone_within(pid, seconds)
  for _ = 1, seconds * 10 do
    if not alive(pid) then return true end
    os.execute("sleep 0.1")
  end
  return not alive(pid)
end

describe("support.pgserver", function()
  it("starts one shared server, on a Unix socket only, and runs psql against it", function()
    local url = pg.start()
    assert.matches("^postgresql://luarun@/luarun%?host=/tmp/", url)
    assert.are.equal(url, pg.start())
    assert.are.equal("1\n", pg.psql("select 1"))
    assert.are.equal("luarun|luarun|\n",
      pg.psql("select current_user, current_database(), current_setting('listen_addresses')"))
    local code = util.sh("test -S " .. util.quote(pg.dir() .. "/.s.PGSQL.5432"))
    assert.are.equal(0, code)
    assert.is_true(alive(pg.pid()))
  end)

  it("raises psql's error", function()
    pg.start()
    assert.has_error(function() pg.psql("select nope") end)
  end)

  it("stops a server by its pid and removes its directory", function()
    local s = pg.new()
    local url = s:start()
    assert.are_not.equal(pg.url(), url) -- a server of its own
    assert.are.equal("2\n", s:psql("select 1 + 1"))
    local pid, dir = s:pid(), s:dir_path()
    s:stop()
    assert.is_true(gone_within(pid, 2))
    assert.is_nil(util.read_file(dir .. "/.s.PGSQL.5432.lock"))
    assert.are.equal(0, (util.sh("test ! -e " .. util.quote(dir))))
    assert.are.equal("1\n", pg.psql("select 1")) -- the shared one still runs
  end)

  -- The end of a process that started one stops it: by __gc when the process exits,
  -- by the watchdog when it is killed.
  local function child(tail)
    local out = os.tmpname()
    local script = "package.path = 'spec/?.lua;' .. package.path; " ..
      "local pg = require 'support.pgserver'; pg.start(); " ..
      "print(pg.pid(), pg.dir()); io.stdout:flush(); " .. tail
    local lines = util.lines_of("lua5.4 -e " .. util.quote(script) .. " >" .. out ..
                                " 2>&1 </dev/null & echo $!")
    local lua_pid = lines[1]
    local pid, dir
    for _ = 1, 200 do
      pid, dir = (util.read_file(out) or ""):match("^(%d+)%s+(%S+)")
      if pid then break end
      os.execute("sleep 0.1")
    end
    assert(pid, util.read_file(out))
    os.remove(out)
    return lua_pid, pid, dir
  end

  it("stops the server when the process exits", function()
    local lua_pid, pid, dir = child("os.exit(0, true)")
    assert.is_true(gone_within(lua_pid, 15)) -- its __gc stops the server, then it exits
    assert.is_false(alive(pid))
    assert.are.equal(0, (util.sh("test ! -e " .. util.quote(dir))))
  end)

  it("stops the server when the process is killed", function()
    -- The child blocks opening a FIFO that nobody writes (no process of its own).
    local fifo = os.tmpname()
    os.remove(fifo)
    assert(os.execute("mkfifo " .. util.quote(fifo)))
    local lua_pid, pid, dir = child("io.open('" .. fifo .. "')")
    assert.is_true(alive(pid))
    os.execute("kill -KILL " .. lua_pid)
    os.remove(fifo)
    assert.is_true(gone_within(pid, 15))
    for _ = 1, 50 do -- the watchdog removes the directory once the server is gone
      if util.sh("test ! -e " .. util.quote(dir)) == 0 then break end
      os.execute("sleep 0.1")
    end
    assert.are.equal(0, (util.sh("test ! -e " .. util.quote(dir))))
  end)
end)
