-- luarun.db on PostgreSQL when things go wrong: servers that misbehave (pgbad.py), a
-- connection closed under waiting tasks, cancellation at every wait, and resources
-- over thousands of statements and connections.
local lr = require "luarun"
local util = require "support.util"
local hs = require "support.httpserver"
local pgserver = require "support.pgserver"

local function run(fn) return util.run(lr, fn) end
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Starts pgbad.py; returns {ports = {name = port}, stop = fn}.
local function pgbad()
  local dir = hs.tmpdir()
  local portf, pidf = dir .. "/ports", dir .. "/pid"
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") .. "/support"
  assert(os.execute(q(hs.python) .. " " .. q(here .. "/pgbad.py") .. " --port-file " .. q(portf) ..
    " --pid-file " .. q(pidf) .. " --watch-pid " .. hs.own_pid() .. " >/dev/null 2>&1 &"))
  local ports = hs.wait_for(function()
    local s = util.read_file(portf)
    if not s then return nil end
    local t = {}
    for name, port in s:gmatch("(%S+) (%d+)") do t[name] = tonumber(port) end
    return t
  end, 15, "pgbad.py to start")
  local pid = tonumber(util.read_file(pidf):match("%d+"))
  return {ports = ports, stop = function() os.execute("kill " .. pid .. " 2>/dev/null") end}
end

local function bad_url(port)
  return ("postgresql://luarun@127.0.0.1:%d/luarun?sslmode=disable&gssencmode=disable"):format(port)
end

describe("luarun.db on PostgreSQL, under faults", function()
  local db, url, bad

  setup(function()
    url = pgserver.start()
    db = require "luarun.db"
    bad = pgbad()
  end)

  teardown(function()
    bad.stop()
  end)

  it("gives up on a server that never answers, after connect_timeout", function()
    run(function()
      local t0 = lr.now()
      local ok, err = db.open(bad_url(bad.ports.silent), {connect_timeout = 0.3})
      assert.is_nil(ok)
      assert.equal("connect", err.kind)
      assert.is_true(lr.now() - t0 < 2)
    end)
  end)

  it("fails to connect to a server that closes or speaks garbage, without crashing", function()
    run(function()
      for _, name in ipairs({"close", "garbage"}) do
        local ok, err = db.open(bad_url(bad.ports[name]), {connect_timeout = 2})
        assert.is_nil(ok, name)
        assert.equal("connect", err.kind, name)
      end
    end)
  end)

  it("ends queries with 'closed' when a server answers them with garbage or half a message", function()
    run(function()
      for _, name in ipairs({"ready_garbage", "ready_cut"}) do
        local conn = assert(db.open(bad_url(bad.ports[name]), {statement_cache = false}))
        local tasks = {}
        for i = 1, 3 do
          tasks[i] = lr.spawn(function() return conn:query("select $1::int as x", i) end)
        end
        for i = 1, 3 do
          local ok, err = lr.timeout(5, tasks[i].wait, tasks[i])
          assert.is_nil(ok, name)
          assert.equal("closed", err.kind, name)
        end
        assert.is_true(conn:is_closed())
      end
    end)
  end)

  it("lets lr.timeout end a query that a server never answers", function()
    run(function()
      local conn = assert(db.open(bad_url(bad.ports.ready_silent)))
      local t0 = lr.now()
      local ok, err = lr.timeout(0.3, conn.query, conn, "select 1")
      assert.is_nil(ok)
      assert.equal("timeout", err.kind)
      assert.is_true(lr.now() - t0 < 2)
      conn:close()
    end)
  end)

  it("ends every waiting task with 'closed' when the connection is closed under them", function()
    run(function()
      local conn = assert(db.open(url))
      local tasks = {}
      for i = 1, 20 do
        tasks[i] = lr.spawn(function() return conn:query("select pg_sleep(0.5), $1::int", i) end)
      end
      lr.sleep(0.05)
      conn:close()
      for i = 1, 20 do
        local ok, err = tasks[i]:wait()
        assert.is_nil(ok)
        assert.equal("closed", err.kind)
      end
      conn:close() -- twice is fine
    end)
  end)

  it("cancels a task waiting for another task's transaction, leaving the gate working", function()
    run(function()
      local conn = assert(db.open(url))
      local release = lr.Event()
      local holder = lr.spawn(function()
        return conn:transaction(function(c)
          release:wait()
          return c:query("select 1 as x")[1].x
        end)
      end)
      lr.sleep(0.02)
      local waiter = lr.spawn(function() return conn:query("select 2 as x") end)
      lr.sleep(0.02)
      waiter:cancel()
      local ok, err = pcall(waiter.wait, waiter)
      assert.is_false(ok)
      assert.equal("cancelled", err.kind)
      release:set()
      assert.equal(1, holder:wait())
      assert.equal(3, conn:query("select 3 as x")[1].x)
      conn:close()
    end)
  end)

  it("cancels a task mid-COPY and mid-rows; the connection goes on", function()
    run(function()
      local conn = assert(db.open(url))
      assert(conn:exec("create table faults_cp (v int)"))
      local copier = lr.spawn(function()
        local i = 0
        return conn:copy_in("copy faults_cp from stdin", function()
          i = i + 1
          if i % 500 == 0 then lr.sleep(0.01) end
          if i <= 100000 then return {i} end
        end)
      end)
      lr.sleep(0.05)
      copier:cancel()
      assert.is_false((pcall(copier.wait, copier)))
      assert.equal(0, conn:query("select count(*)::int as n from faults_cp")[1].n)
      local reader = lr.spawn(function()
        for _ in conn:rows("select g from generate_series(1, 1000000) g") do lr.sleep(0) end
      end)
      lr.sleep(0.05)
      reader:cancel()
      assert.is_false((pcall(reader.wait, reader)))
      assert.equal(4, conn:query("select 4 as x")[1].x)
      conn:close()
    end)
  end)

  it("runs a statement inside a rows() loop on the same connection (the rows keep coming)", function()
    run(function()
      local conn = assert(db.open(url))
      assert(conn:exec("create table faults_loop (id int primary key, seen bool)"))
      assert(conn:exec("insert into faults_loop select g, false from generate_series(1, 3000) g"))
      local n = 0
      for row in conn:rows("select id from faults_loop order by id") do
        assert(conn:exec("update faults_loop set seen = true where id = $1", row.id))
        n = n + 1
      end
      assert.equal(3000, n)
      assert.equal(3000, conn:query("select count(*)::int as n from faults_loop where seen")[1].n)
      conn:close()
    end)
  end)

  it("refuses COPY through query or exec with a clear error, and ends a COPY cancelled before the server answered", function()
    run(function()
      local conn = assert(db.open(url))
      assert(conn:exec("create table faults_cp2 (v int)"))
      local ok, err = lr.timeout(5, conn.exec, conn, "copy faults_cp2 from stdin")
      assert.is_nil(ok)
      assert.equal("closed", err.kind)
      assert.matches("copy_in", err.message)
      conn = assert(db.open(url))
      ok, err = lr.timeout(5, conn.query, conn, "copy faults_cp2 to stdout")
      assert.is_nil(ok)
      assert.equal("closed", err.kind)
      conn = assert(db.open(url))
      -- cancelled at once: its CopyInResponse comes to nobody, and the COPY must end
      local t = lr.spawn(function() return conn:copy_in("copy faults_cp2 (v) from stdin", {{1}}) end)
      lr.sleep(0)
      t:cancel()
      assert.is_false((pcall(t.wait, t)))
      local r, qerr = lr.timeout(5, conn.query, conn, "select count(*)::int as n from faults_cp2")
      assert(r, tostring(qerr))
      assert.equal(0, r[1].n)
      conn:close()
    end)
  end)

  it("gives a json value luarun.json cannot hold as its text, losing nothing", function()
    run(function()
      local conn = assert(db.open(url))
      local r = assert(conn:query([[select '{"n":18446744073709551616}'::json as j]]))
      assert.equal('{"n":18446744073709551616}', r[1].j)
      conn:close()
    end)
  end)

  it("keeps no descriptor, task or memory over 5,000 statements and 200 connections", function()
    run(function()
      collectgarbage() -- connections the tests before left to the collector
      collectgarbage()
      lr.sleep(0.05)
      local fd0 = hs.fd_count()
      local conn = assert(db.open(url))
      local function batch()
        local fns = {}
        for i = 1, 100 do fns[i] = function() return conn:query("select $1::int as v, $2::text as s", i, "x") end end
        lr.gather(fns)
      end
      for _ = 1, 5 do batch() end
      collectgarbage()
      local mem0 = collectgarbage("count")
      for _ = 1, 45 do batch() end
      collectgarbage()
      local mem1 = collectgarbage("count")
      assert.is_true(mem1 < mem0 + 512, ("Lua heap %.0f KB -> %.0f KB"):format(mem0, mem1))
      for _ = 1, 200 do
        local c = assert(db.open(url))
        c:query("select 1")
        c:close()
      end
      conn:close()
      collectgarbage()
      lr.sleep(0.05)
      assert.equal(fd0, hs.fd_count())
      assert.equal(1, #lr.tasks())
    end)
  end)
end)
