-- luarun.db on SQLite: a thread per connection (core/db_sqlite.c), the driver
-- (bindings/db_sqlite.c) under the front's transactions and pools.
local lr = require "luarun"
local db = require "luarun.db"
local util = require "support.util"

local function run(fn) return util.run(lr, fn) end

local function open(target, opts)
  local conn, err = db.open(target or "sqlite::memory:", opts)
  assert(conn, tostring(err))
  return conn
end

local dir
local function path(name) return dir .. "/" .. name end

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end

describe("luarun.db on SQLite", function()
  setup(function() dir = util.new_dir() end)
  teardown(function() os.execute("rm -rf " .. util.quote(dir)) end)

  it("gives every type back as the Lua value it was", function()
    run(function()
      local conn = open()
      assert(conn:exec("CREATE TABLE t(i, f, s, b, n, yes, no)"))
      local blob = "a\0b\255\254z"
      assert(conn:exec("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)", math.maxinteger, 2.5,
                       "héllo", blob, db.null, true, false))
      assert(conn:exec("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)", math.mininteger, -0.0,
                       "", "", db.null, 1, 0))
      local rows = assert(conn:query([[SELECT i, f, s, b, n, yes, no, typeof(s) AS ts,
        typeof(b) AS tb, typeof(f) AS tf FROM t ORDER BY rowid]]))
      assert.same({"i", "f", "s", "b", "n", "yes", "no", "ts", "tb", "tf"}, rows.columns)
      local r = rows[1]
      assert.equal(2, #rows)
      assert.equal("integer", math.type(r.i))
      assert.equal(math.maxinteger, r.i)
      assert.equal("float", math.type(r.f))
      assert.equal(2.5, r.f)
      assert.equal("héllo", r.s)
      assert.equal("text", r.ts)
      assert.equal(blob, r.b)
      assert.equal("blob", r.tb)     -- not UTF-8: bound as a blob
      assert.equal(db.null, r.n)
      assert.equal(1, r.yes)
      assert.equal(0, r.no)
      r = rows[2]
      assert.equal(math.mininteger, r.i)
      assert.equal("real", r.tf)
      assert.equal("", r.s)
      assert.equal("text", r.tb)
      -- literals of every storage class
      r = assert(conn:query("SELECT 1 AS a, 1.0 AS b, 'x' AS c, x'00ff' AS d, NULL AS e"))[1]
      assert.equal("integer", math.type(r.a))
      assert.equal("float", math.type(r.b))
      assert.equal("x", r.c)
      assert.equal("\0\255", r.d)
      assert.equal(db.null, r.e)
      -- a blob of a megabyte with NUL bytes, both ways
      local big = ("\0\1\2\255"):rep(256 * 1024)
      assert(conn:exec("INSERT INTO t(b) VALUES (?)", big))
      r = assert(conn:query("SELECT b, length(b) AS n FROM t WHERE length(b) > 100"))[1]
      assert.equal(#big, r.n)
      assert.equal(big, r.b)
      conn:close()
    end)
  end)

  it("binds ?, ?NNN and named parameters", function()
    run(function()
      local conn = open()
      local r = assert(conn:query("SELECT ? AS a, ? AS b", 1, "x"))[1]
      assert.same({a = 1, b = "x"}, r)
      r = assert(conn:query("SELECT ?2 AS a, ?1 AS b, ?2 AS c", "one", "two"))[1]
      assert.same({a = "two", b = "one", c = "two"}, r)
      r = assert(conn:query("SELECT :x AS a, @y AS b, $z AS c, :x + 1 AS d",
                            {x = 41, y = "why", z = db.null, unused = true}))[1]
      assert.same({a = 41, b = "why", c = db.null, d = 42}, r)
      -- a statement without parameters, and one with no statement at all
      assert.same({n = 3}, assert(conn:query("SELECT 3 AS n"))[1])
      assert.equal(0, #assert(conn:query("-- nothing")))
      conn:close()
    end)
  end)

  it("raises on arguments it cannot use, naming the function", function()
    run(function()
      local conn = open()
      local function msg(...) return tostring(util.raises(...)) end
      assert.matches("query: bad parameter #2 %(table cannot be bound%)",
                     msg(conn.query, conn, "SELECT ?, ?", 1, {}))
      assert.matches("exec: bad parameter #1 %(function cannot be bound%)",
                     msg(conn.exec, conn, "SELECT ?", print))
      assert.matches("query: bad parameter 'k' %(table cannot be bound%)",
                     msg(conn.query, conn, "SELECT :k", {k = {}}))
      assert.matches("query: 1 parameter given, the statement takes 2",
                     msg(conn.query, conn, "SELECT ?, ?", 1))
      assert.matches("exec: 3 parameters given, the statement takes 0",
                     msg(conn.exec, conn, "SELECT 1", 1, 2, 3))
      assert.matches("query: missing named parameter ':b'",
                     msg(conn.query, conn, "SELECT :a, :b", {a = 1}))
      assert.matches("query: bad parameter #1 %(table cannot be bound",
                     msg(conn.query, conn, "SELECT ?", {1}))
      assert.matches("bad argument #1 to 'query' %(string expected, got table%)",
                     msg(conn.query, conn, {}))
      assert.matches("bad argument #1 to 'rows' %(string expected, got nil%)", msg(conn.rows, conn, nil))
      assert.matches("calling 'exec' on bad self", msg(conn.exec, "nope", "SELECT 1"))
      assert.matches("rows: bad parameter #1", msg(conn.rows, conn, "SELECT ?", {}))
      assert.matches("several statements", msg(conn.query, conn, "SELECT 1; SELECT 2"))
      -- the connection is still fine
      assert.equal(1, assert(conn:query("SELECT 1 AS x"))[1].x)
      conn:close()
    end)
  end)

  it("returns errors by kind, with SQLite's code and the constraint", function()
    run(function()
      local conn = open()
      assert(conn:exec("CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, nn TEXT NOT NULL)"))
      assert(conn:exec("INSERT INTO t VALUES (1, 'a', 'x')"))
      local ok, err = conn:exec("INSERT INTO t VALUES (2, 'a', 'x')")
      assert.is_nil(ok)
      assert.equal("constraint", err.kind)
      assert.equal("SQLITE_CONSTRAINT_UNIQUE", err.code)
      assert.equal("t.u", err.constraint)
      assert.matches("UNIQUE constraint failed: t.u", err.message)
      ok, err = conn:exec("INSERT INTO t VALUES (1, 'b', 'x')")
      assert.equal("constraint", err.kind)
      assert.equal("SQLITE_CONSTRAINT_PRIMARYKEY", err.code)
      assert.equal("t.id", err.constraint)
      ok, err = conn:exec("INSERT INTO t(id, u) VALUES (3, 'c')")
      assert.equal("SQLITE_CONSTRAINT_NOTNULL", err.code)
      assert.equal("t.nn", err.constraint)
      ok, err = conn:query("SELEC 1")
      assert.is_nil(ok)
      assert.equal("syntax", err.kind)
      assert.equal("SQLITE_ERROR", err.code)
      ok, err = conn:query("SELECT * FROM no_such_table")
      assert.equal("syntax", err.kind)
      assert.matches("no such table", err.message)
      conn:close()
      ok, err = conn:query("SELECT 1")
      assert.is_nil(ok)
      assert.equal("closed", err.kind)
      ok, err = conn:exec("SELECT 1")
      assert.equal("closed", err.kind)
      assert.is_true(conn:is_closed())
      assert.is_true(conn:close()) -- idempotent
      -- opening what cannot be opened
      ok, err = db.open("sqlite:" .. path("no/such/dir/x.db"))
      assert.is_nil(ok)
      assert.equal("connect", err.kind)
      util.put(path("notadb"), ("this is not a database file\n"):rep(100))
      ok, err = db.open("sqlite:" .. path("notadb"))
      assert.is_nil(ok)
      assert.equal("connect", err.kind)
      assert.equal("SQLITE_NOTADB", err.code)
      ok, err = db.open("sqlite:" .. path("missing.db"), {readonly = true})
      assert.equal("connect", err.kind)
      assert.is_false(exists(path("missing.db")))
    end)
  end)

  it("reports busy between two connections to one file", function()
    run(function()
      local file = "sqlite:" .. path("busy.db")
      local a = open(file)
      local b = open(file, {busy_timeout = 0.05})
      assert(a:exec("CREATE TABLE t(x)"))
      local t0 = lr.now()
      local r, err = a:transaction(function()
        assert(a:exec("INSERT INTO t VALUES (1)"))
        return b:exec("INSERT INTO t VALUES (2)")
      end)
      assert.is_nil(r)
      assert.equal("busy", err.kind)
      assert.matches("^SQLITE_BUSY", err.code)
      assert.is_true(lr.now() - t0 >= 0.04)
      -- the writer's transaction committed; b can write now
      assert(b:exec("INSERT INTO t VALUES (3)"))
      assert.same({{x = 1}, {x = 3}}, {table.unpack(assert(b:query("SELECT x FROM t ORDER BY x")))})
      -- a readonly connection reads, and cannot write
      local ro = open(file, {readonly = true})
      assert.equal(2, #assert(ro:query("SELECT x FROM t")))
      local ok, werr = ro:exec("INSERT INTO t VALUES (4)")
      assert.is_nil(ok)
      assert.equal("SQLITE_READONLY", werr.code)
      a:close(); b:close(); ro:close()
    end)
  end)

  it("exec returns the rows changed and the last id; runs scripts", function()
    run(function()
      local conn = open()
      assert.same({0, 0}, {conn:exec([[CREATE TABLE t(id INTEGER PRIMARY KEY, v);
        CREATE INDEX tv ON t(v)]])})
      assert.same({1, 1}, {conn:exec("INSERT INTO t(v) VALUES (?)", "a")})
      assert.same({1, 7}, {conn:exec("INSERT INTO t(id, v) VALUES (7, 'b')")})
      assert.same({3, 10}, {conn:exec("INSERT INTO t(v) VALUES ('c'), ('d'), (NULL)")})
      local n = conn:exec("UPDATE t SET v = 'z' WHERE id > 1")
      assert.equal(4, n)
      assert.equal(0, (conn:exec("DELETE FROM t WHERE id = 1000")))
      assert.equal(0, (conn:exec("CREATE TABLE u(x)"))) -- not the UPDATE's count
      assert.equal(2, (conn:exec("DELETE FROM t WHERE id <= 7")))
      assert.equal(3, #assert(conn:query("SELECT * FROM t")))
      -- RETURNING through query
      local rows = assert(conn:query("INSERT INTO u VALUES (5), (6) RETURNING x"))
      assert.same({5, 6}, {rows[1].x, rows[2].x})
      conn:close()
    end)
  end)

  describe("transactions through the front", function()
    it("commit, and roll back when the function raises", function()
      run(function()
        local conn = open("sqlite:" .. path("tx.db"))
        assert(conn:exec("CREATE TABLE t(x)"))
        local a, b = conn:transaction(function(c, v)
          assert(c:exec("INSERT INTO t VALUES (?)", v))
          return "done", v
        end, 1)
        assert.same({"done", 1}, {a, b})
        local err = util.raises(conn.transaction, conn, function(c)
          assert(c:exec("INSERT INTO t VALUES (2)"))
          error({mine = true})
        end)
        assert.is_true(err.mine)
        assert.same({{x = 1}}, {table.unpack(assert(conn:query("SELECT x FROM t")))})
        -- a constraint error inside, raised by assert, rolls back too
        assert(conn:exec("CREATE UNIQUE INDEX tx ON t(x)"))
        err = util.raises(conn.transaction, conn, function(c)
          assert(c:exec("INSERT INTO t VALUES (3)"))
          assert(c:exec("INSERT INTO t VALUES (1)"))
        end)
        assert.matches("UNIQUE", tostring(err))
        assert.equal(1, #assert(conn:query("SELECT x FROM t")))
        conn:close()
      end)
    end)

    it("raises clearly on a nested transaction", function()
      run(function()
        local conn = open()
        assert(conn:exec("CREATE TABLE t(x)"))
        local err = util.raises(conn.transaction, conn, function(c)
          assert(c:exec("INSERT INTO t VALUES (1)"))
          c:transaction(function() end)
        end)
        assert.matches("already in a transaction", tostring(err))
        assert.equal(0, #assert(conn:query("SELECT x FROM t")))
        -- and the connection is free again
        assert(conn:transaction(function(c) return c:exec("INSERT INTO t VALUES (2)") end))
        assert.equal(1, #assert(conn:query("SELECT x FROM t")))
        conn:close()
      end)
    end)

    it("makes another task's statements wait until the commit", function()
      run(function()
        local conn = open()
        assert(conn:exec("CREATE TABLE t(x)"))
        local seen
        local inside = lr.Event()
        local tx = lr.spawn(function()
          return conn:transaction(function(c)
            assert(c:exec("INSERT INTO t VALUES (1)"))
            inside:set()
            lr.sleep(0.05)
            assert(c:exec("INSERT INTO t VALUES (2)"))
            return "committed"
          end)
        end)
        local reader = lr.spawn(function()
          inside:wait()
          local t0 = lr.now()
          seen = #assert(conn:query("SELECT x FROM t"))
          return lr.now() - t0
        end)
        assert.equal("committed", tx:wait())
        local waited = reader:wait()
        assert.equal(2, seen) -- not 1: it did not run inside the transaction
        assert.is_true(waited >= 0.03)
        conn:close()
      end)
    end)
  end)

  describe("rows()", function()
    it("streams 10,000 rows in batches", function()
      run(function()
        local conn = open()
        assert(conn:exec([[CREATE TABLE t AS WITH RECURSIVE r(i) AS
          (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 10000) SELECT i, 'v' || i AS s FROM r]]))
        local n, sum = 0, 0
        for row in conn:rows("SELECT i, s FROM t WHERE i > ? ORDER BY i", 0) do
          n = n + 1
          sum = sum + row.i
          assert.equal("v" .. row.i, row.s)
        end
        assert.equal(10000, n)
        assert.equal(10000 * 10001 // 2, sum)
        -- other statements interleave with the cursor's batches
        local m = 0
        for row in conn:rows("SELECT i FROM t") do
          m = m + 1
          if row.i % 1000 == 0 then assert(conn:query("SELECT count(*) AS c FROM t")) end
        end
        assert.equal(10000, m)
        -- empty result
        for _ in conn:rows("SELECT i FROM t WHERE i < 0") do error("no rows expected") end
        -- errors while iterating raise; a bad statement raises at rows()
        local err = util.raises(conn.rows, conn, "SELECT nope FROM t")
        assert.equal("syntax", err.kind)
        err = util.raises(function()
          for _ in conn:rows("SELECT CASE WHEN i = 5000 THEN json('{bad') ELSE i END FROM t") do end
        end)
        assert.matches("JSON", tostring(err.message))
        conn:close()
      end)
    end)

    it("resets the statement when its task is cancelled with the next batch still staged", function()
      run(function()
        local file = "sqlite:" .. path("walcancel.db")
        local a, b = open(file), open(file)
        assert(a:exec([[CREATE TABLE t AS WITH RECURSIVE r(i) AS
          (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 10000) SELECT i FROM r]]))
        local n = 0
        local reader = lr.spawn(function()
          for _ in a:rows("SELECT i FROM t") do n = n + 1 end
        end)
        -- ready every turn, so the reader's next fetch is staged, not sent, when it
        -- parks after its first batch; then cancelled in that same turn
        local canceller = lr.spawn(function()
          while n == 0 do lr.sleep(0) end
          reader:cancel()
        end)
        canceller:wait()
        assert.is_false((pcall(reader.wait, reader)))
        assert.is_true(n > 0 and n < 10000)
        lr.sleep(0.05)
        assert(b:exec("INSERT INTO t VALUES (-1)"))
        local r = assert(b:query("PRAGMA wal_checkpoint(TRUNCATE)"))[1]
        assert.equal(0, r.busy) -- no read transaction of a's left open
        a:close()
        b:close()
      end)
    end)

    it("stops a runaway statement when the runtime closes under it", function()
      -- os.exit(0, true) closes the state, and with it the runtime, which joins the
      -- connection's thread on the loop: the statement must stop for that to return
      local script = os.tmpname() .. ".lua"
      util.put(script, [[
        local lr = require "luarun"
        local db = require "luarun.db"
        local conn = assert(db.open("sqlite::memory:"))
        lr.spawn(function()
          conn:query("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r")
        end)
        lr.sleep(0.1)
        io.write("closing\n")
        os.exit(0, true)
      ]])
      local code, out, err = util.sh("timeout -k 2 10 " .. util.quote(util.bin) .. " " .. util.quote(script))
      os.remove(script)
      assert.equal(0, code, err)
      assert.equal("closing\n", out)
    end)

    it("resets the statement when the loop breaks, so the WAL is not pinned", function()
      run(function()
        local file = "sqlite:" .. path("wal.db")
        local a, b = open(file), open(file)
        assert(a:exec([[CREATE TABLE t AS WITH RECURSIVE r(i) AS
          (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 10000) SELECT i FROM r]]))
        local function checkpoint()
          local r = assert(b:query("PRAGMA wal_checkpoint(TRUNCATE)"))[1]
          return r.busy
        end
        local n = 0
        for _ in a:rows("SELECT i FROM t") do
          n = n + 1
          if n == 300 then -- the second batch is open
            assert(b:exec("INSERT INTO t VALUES (-1)"))
            assert.equal(1, checkpoint()) -- a's read transaction holds the WAL
            break
          end
        end
        assert(a:query("SELECT 1")) -- a's queue has run the reset by now
        assert(b:exec("INSERT INTO t VALUES (-2)"))
        assert.equal(0, checkpoint())
        -- a to-be-closed value also closes it when the loop exits by an error
        pcall(function()
          for _ in a:rows("SELECT i FROM t") do error("stop") end
        end)
        assert(a:query("SELECT 1"))
        assert.equal(0, checkpoint())
        -- and so does the collector, for an iterator dropped halfway
        do
          local it, st = a:rows("SELECT i FROM t")
          assert(it(st))
        end
        collectgarbage()
        collectgarbage()
        assert(a:query("SELECT 1"))
        assert(b:exec("INSERT INTO t VALUES (-3)"))
        assert.equal(0, checkpoint())
        a:close(); b:close()
      end)
    end)
  end)

  it("prepares statements, and keeps them across a schema change", function()
    run(function()
      local conn = open()
      assert(conn:exec("CREATE TABLE t(a)"))
      local ins = assert(conn:prepare("INSERT INTO t(a) VALUES (?)"))
      local sel = assert(conn:prepare("SELECT * FROM t ORDER BY a"))
      for i = 1, 5 do assert.equal(i, select(2, ins:exec(i))) end
      assert.same({"a"}, assert(sel:query()).columns)
      assert(conn:exec("ALTER TABLE t ADD COLUMN b DEFAULT 'bee'"))
      local rows = assert(sel:query())
      assert.same({"a", "b"}, rows.columns)
      assert.equal("bee", rows[5].b)
      local n = 0
      for row in sel:rows() do n = n + row.a end
      assert.equal(15, n)
      -- more statements than the cache holds, then the first ones again
      for i = 1, 100 do assert(conn:query("SELECT " .. i .. " AS n")) end
      assert.equal(5, #assert(sel:query()))
      local ok, err = conn:prepare("SELECT FROM")
      assert.is_nil(ok)
      assert.equal("syntax", err.kind)
      sel:close()
      ok, err = sel:query()
      assert.equal("closed", err.kind)
      conn:close()
    end)
  end)

  it("serves 200 tasks on one connection while a 10 ms ticker keeps its pace", function()
    run(function()
      local conn = open("sqlite:" .. path("busy200.db"))
      assert(conn:exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v)"))
      assert(conn:transaction(function(c)
        for i = 1, 1000 do assert(c:exec("INSERT INTO t VALUES (?, ?)", i, "v" .. i)) end
        return true
      end))
      local stop, worst, ticks = false, 0, 0
      local ticker = lr.spawn(function()
        local last = lr.now()
        while not stop do
          lr.sleep(0.01)
          local now = lr.now()
          worst = math.max(worst, now - last - 0.01)
          last = now
          ticks = ticks + 1
        end
      end)
      local fns, done = {}, 0
      for k = 1, 200 do
        fns[k] = function()
          for i = 1, 50 do
            local id = (k * 50 + i) % 1000 + 1
            local r = assert(conn:query("SELECT v FROM t WHERE id = ?", id))
            assert.equal("v" .. id, r[1].v)
            if i % 10 == 0 then assert(conn:exec("UPDATE t SET v = v WHERE id = ?", id)) end
          end
          done = done + 1
        end
      end
      local t0 = lr.now()
      lr.gather(fns)
      local took = lr.now() - t0
      if took < 0.2 then lr.sleep(0.2 - took) end -- a few ticks at least
      stop = true
      ticker:wait()
      assert.equal(200, done)
      assert.is_true(ticks >= 10)
      -- ASan with the collector at every step (the test command's second run) is
      -- several times slower: its bound is looser, the plain build's is the goal's
      local bound = os.getenv("LUARUN_CHILD_ASAN_OPTIONS") and 0.25 or 0.05
      assert.is_true(worst < bound, ("a tick came %.1f ms late"):format(worst * 1000))
      conn:close()
    end)
  end)

  it("interrupts a cancelled statement, and the connection goes on", function()
    run(function()
      local conn = open()
      local endless = [[WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r)
        SELECT count(*) AS n FROM r]]
      local t0 = lr.now()
      local r0, err = lr.timeout(0.1, conn.query, conn, endless)
      assert.is_nil(r0)
      assert.equal("timeout", err.kind)
      local r = assert(conn:query("SELECT 42 AS x"))
      assert.equal(42, r[1].x)
      assert.is_true(lr.now() - t0 < 2)
      -- cancelled while queued behind another: skipped, never run
      assert(conn:exec("CREATE TABLE t(x)"))
      local slow = lr.spawn(function() return conn:query(
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 300000) " ..
        "SELECT count(*) AS n FROM r") end)
      local victim = lr.spawn(function() return conn:exec("INSERT INTO t VALUES (1)") end)
      lr.sleep(0)
      victim:cancel()
      assert.equal(300000, slow:wait()[1].n)
      assert.equal(0, #assert(conn:query("SELECT * FROM t")))
      -- a cursor whose batch read was cancelled does not keep its statement open
      for i = 1, 2000 do assert(conn:exec("INSERT INTO t VALUES (?)", i)) end
      local reader = lr.spawn(function()
        for _ in conn:rows("SELECT x FROM t") do lr.sleep(0) end
      end)
      lr.sleep(0.001)
      reader:cancel()
      assert(conn:query("SELECT 1"))
      conn:close()
    end)
  end)

  it("gives the statements queued at close `closed`", function()
    run(function()
      local conn = open()
      local results = {}
      local tasks = {}
      for i = 1, 20 do
        tasks[i] = lr.spawn(function()
          local r, err = conn:query(
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 20000) " ..
            "SELECT count(*) AS n FROM r")
          results[i] = r and "ok" or err.kind
        end)
      end
      lr.sleep(0) -- every task has sent its statement
      assert.is_true(conn:close())
      for i = 1, 20 do tasks[i]:wait() end
      local closed, ok = 0, 0
      for i = 1, 20 do
        if results[i] == "closed" then closed = closed + 1 elseif results[i] == "ok" then ok = ok + 1 end
      end
      assert.equal(20, closed + ok)
      assert.is_true(closed >= 15, closed .. " closed")
      assert.is_true(conn:is_closed())
      -- a task waiting at the gate of a transaction gets closed too
      local c2 = open()
      local entered = lr.Event()
      local holder = lr.spawn(function()
        return pcall(c2.transaction, c2, function() entered:set() lr.sleep(0.05) end)
      end)
      local waiter = lr.spawn(function()
        entered:wait()
        local r, err = c2:query("SELECT 1")
        return r, err
      end)
      entered:wait()
      lr.sleep(0.01)
      c2:close()
      local r, err = waiter:wait()
      assert.is_nil(r)
      assert.equal("closed", err.kind)
      holder:wait()
    end)
  end)

  it("closes a connection the collector takes", function()
    run(function()
      local file = path("gc.db")
      do
        local conn = open("sqlite:" .. file)
        assert(conn:exec("CREATE TABLE t(x)"))
        assert(conn:exec("INSERT INTO t VALUES (1)"))
        assert.is_true(exists(file .. "-wal"))
      end
      collectgarbage()
      collectgarbage()
      -- the last connection to close checkpoints and removes the WAL
      assert.is_false(exists(file .. "-wal"))
      -- and one a task used: collectable once the task is done with it (waited for:
      -- a sleep of 10 ms was not always enough on a loaded machine, and the
      -- connection then outlived the test, keeping the WAL)
      local writer
      do
        local conn = open("sqlite:" .. file)
        writer = lr.spawn(function() assert(conn:exec("INSERT INTO t VALUES (2)")) end)
      end
      writer:wait()
      collectgarbage()
      collectgarbage()
      local conn = open("sqlite:" .. file)
      assert.equal(2, #assert(conn:query("SELECT x FROM t")))
      -- <close> closes too
      do
        local c <close> = open("sqlite:" .. file)
        assert(c:query("SELECT 1"))
      end
      conn:close()
      assert.is_false(exists(file .. "-wal"))
    end)
  end)

  it("leaves nothing behind when a script ends with connections open", function()
    -- under the sanitizer build this luarun process checks for leaks
    local code, out, err = util.luarun([[
      local lr = require "luarun"
      local db = require "luarun.db"
      local a = assert(db.open("sqlite::memory:"))
      local b = assert(db.open("sqlite:" .. arg[1]))
      assert(a:exec("CREATE TABLE t AS WITH RECURSIVE r(i) AS " ..
        "(SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1000) SELECT i FROM r"))
      local it, st = a:rows("SELECT i FROM t") -- a cursor left open
      assert(it(st))
      local stmt = assert(b:prepare("SELECT 1 AS one"))
      assert(stmt:query())
      b:_pin() -- and a transaction never ended
      assert(b:exec("BEGIN IMMEDIATE"))
      assert(b:exec("CREATE TABLE IF NOT EXISTS u(x)"))
      lr.spawn(function() return a:query("SELECT count(*) AS n FROM t") end)
      print("done", #assert(a:query("SELECT i FROM t")))
    ]], util.quote(path("left.db")))
    assert.equal("", err)
    assert.equal(0, code)
    assert.equal("done\t1000\n", out)
  end)

  it("works under db.pool", function()
    run(function()
      local url = "sqlite:" .. path("pool.db")
      local pool = db.pool(url, {size = 2})
      assert(pool:exec("CREATE TABLE t(id INTEGER PRIMARY KEY, task)"))
      local fns = {}
      for k = 1, 20 do
        fns[k] = function()
          for i = 1, 10 do
            assert(pool:exec("INSERT INTO t(task) VALUES (?)", k))
            assert(pool:query("SELECT count(*) AS n FROM t"))
            if i == 5 then
              pool:transaction(function(conn) assert(conn:exec("INSERT INTO t(task) VALUES (?)", -k)) end)
            end
          end
          return true
        end
      end
      lr.gather(fns)
      local r = assert(pool:query("SELECT count(*) AS n FROM t"))[1]
      assert.equal(220, r.n)
      local st = pool:stats()
      assert.equal(2, st.opened)
      local n = 0
      for _ in pool:rows("SELECT id FROM t") do n = n + 1 end
      assert.equal(220, n)
      pool:close()
    end)
  end)

  it("takes nil as NULL and db.json as JSON text, and calls other refusals 'query', as on PostgreSQL", function()
    run(function()
      local conn = open("sqlite::memory:")
      assert(conn:exec("CREATE TABLE t(a, b, j)"))
      assert(conn:exec("INSERT INTO t VALUES (?, ?, ?)", 1, nil, db.json({x = {1, 2}})))
      local named = {a = 2, b = db.null, j = db.json({y = true})}
      assert(conn:exec("INSERT INTO t VALUES (:a, :b, :j)", named))
      assert.is_table(named.j) -- the script's table keeps its wrapper
      local rows = assert(conn:query("SELECT a, b, j, json_extract(j, '$.x[1]') AS x1 FROM t ORDER BY a"))
      assert.equal(db.null, rows[1].b)
      assert.equal('{"x":[1,2]}', rows[1].j)
      assert.equal(2, rows[1].x1)
      assert.equal('{"y":true}', rows[2].j)
      local ok, err = conn:exec("INSERT INTO t VALUES (json('not json'), 1, 1)")
      assert.is_nil(ok)
      assert.equal("query", err.kind)
      conn:close()
    end)
  end)
end)
