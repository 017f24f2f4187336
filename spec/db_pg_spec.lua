-- luarun.db on PostgreSQL 15: a real server (spec/support/pgserver.lua) on a Unix socket.
local lr = require "luarun"
local util = require "support.util"
local pgserver = require "support.pgserver"

local function run(fn) return util.run(lr, fn) end

local url
local db

local function open(opts)
  local conn, err = db.open(url, opts)
  assert(conn, tostring(err))
  return conn
end

describe("luarun.db on PostgreSQL", function()
  setup(function()
    url = pgserver.start()
    db = require "luarun.db"
  end)

  it("returns every type as the matching Lua value", function()
    run(function()
      local conn = open()
      local rows = assert(conn:query([[select 1::int2 as i2, 2147483647::int4 as i4,
        9223372036854775807::int8 as i8, '-9223372036854775808'::int8 as i8min,
        2.5::float4 as f4, 1e300::float8 as f8, 'Infinity'::float8 as inf, 'NaN'::float8 as nan,
        true as t, false as f, 'héllo "q"'::text as s, '\x00ff41'::bytea as b,
        '{"a":[1,null,"x"]}'::jsonb as jb, '[1,2]'::json as j, 12.50::numeric as n,
        '2024-02-03 04:05:06+00'::timestamptz as ts, '2024-02-03'::date as d,
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid as u, null::int as nul,
        '{1,NULL,3}'::int[] as ia, '{"a b","c\"d",NULL}'::text[] as ta,
        '{{1,2},{3,4}}'::int[][] as nested, '{t,f}'::bool[] as ba]]))
      local r = rows[1]
      assert.equal(1, #rows)
      assert.same({"i2", "i4", "i8", "i8min", "f4", "f8", "inf", "nan", "t", "f", "s", "b", "jb",
        "j", "n", "ts", "d", "u", "nul", "ia", "ta", "nested", "ba"}, rows.columns)
      assert.equal(math.type(r.i2), "integer")
      assert.equal(2147483647, r.i4)
      assert.equal(math.maxinteger, r.i8)
      assert.equal(math.mininteger, r.i8min)
      assert.equal(2.5, r.f4)
      assert.equal(1e300, r.f8)
      assert.equal(math.huge, r.inf)
      assert.is_true(r.nan ~= r.nan)
      assert.equal(true, r.t)
      assert.equal(false, r.f)
      assert.equal('héllo "q"', r.s)
      assert.equal("\0\255A", r.b)
      assert.same({a = {1, db.null, "x"}}, r.jb)
      assert.same({1, 2}, r.j)
      assert.equal("12.50", r.n)
      assert.equal("2024-02-03 04:05:06+00", r.ts)
      assert.equal("2024-02-03", r.d)
      assert.equal("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", r.u)
      assert.equal(db.null, r.nul)
      assert.same({1, db.null, 3}, r.ia)
      assert.same({"a b", 'c"d', db.null}, r.ta)
      assert.same({{1, 2}, {3, 4}}, r.nested)
      assert.same({true, false}, r.ba)
      conn:close()
    end)
  end)

  it("binds every kind of parameter, never splicing it into the text", function()
    run(function()
      local conn = open()
      local function echo(sql, ...) return assert(conn:query(sql, ...))[1].v end
      assert.equal(42, echo("select $1::int8 as v", 42))
      assert.equal(math.mininteger, echo("select $1::int8 as v", math.mininteger))
      assert.equal(0.1, echo("select $1::float8 as v", 0.1))
      assert.equal(true, echo("select $1::bool as v", true))
      assert.equal("x'); drop table nothing; --", echo("select $1::text as v", "x'); drop table nothing; --"))
      assert.equal("\0\1\2\255", echo("select $1::bytea as v", "\0\1\2\255"))
      assert.equal(db.null, echo("select $1::int as v", db.null))
      assert.equal(db.null, echo("select $1::int as v", nil))
      assert.same({1, 2, db.null}, echo("select $1::int[] as v", {1, 2, db.null}))
      assert.same({'a"b', "c\\d"}, echo("select $1::text[] as v", {'a"b', "c\\d"}))
      assert.same({a = {1, 2}}, echo("select $1::jsonb as v", db.json({a = {1, 2}})))
      assert.same({1, 2}, echo("select $1::json as v", db.json({1, 2})))
      assert.equal(7, echo("select $1::int + $2::int as v", 3, 4))
      conn:close()
    end)
  end)

  it("raises on wrong arguments, naming the function", function()
    run(function()
      local conn = open()
      assert.matches("bad argument #1 to 'query'", tostring(util.raises(conn.query, conn, 42)))
      assert.matches("query: bad parameter #1 %(function cannot be bound%)",
        tostring(util.raises(conn.query, conn, "select $1", print)))
      assert.matches("bad argument #1 to 'open'", tostring(util.raises(db.open, 42)))
      assert.matches("'transaction'", tostring(util.raises(conn.transaction, conn, 5)))
      local ok, err = db.open("mysql://x")
      assert.is_nil(ok)
      assert.equal("invalid_url", err.kind)
      conn:close()
    end)
  end)

  it("returns server errors by kind, with the SQLSTATE and the constraint's name", function()
    run(function()
      local conn = open()
      assert(conn:exec("create table kinds (id int primary key, name text unique)"))
      assert.equal(1, (conn:exec("insert into kinds values ($1, $2)", 1, "a")))
      local ok, err = conn:exec("insert into kinds values ($1, $2)", 2, "a")
      assert.is_nil(ok)
      assert.equal("constraint", err.kind)
      assert.equal("23505", err.code)
      assert.equal("kinds_name_key", err.constraint)
      assert.matches("duplicate key", tostring(err))
      ok, err = conn:query("selec 1")
      assert.equal("syntax", err.kind)
      assert.equal("42601", err.code)
      ok, err = conn:query("select * from no_such_table")
      assert.equal("syntax", err.kind)
      assert.equal("42P01", err.code)
      ok, err = conn:query("select 1/0")
      assert.equal("query", err.kind)
      assert.equal("22012", err.code)
      -- the connection goes on after each
      assert.equal(1, conn:query("select count(*)::int as n from kinds")[1].n)
      conn:close()
      ok, err = conn:query("select 1")
      assert.is_nil(ok)
      assert.equal("closed", err.kind)
      assert.is_true(conn:is_closed())
    end)
  end)

  it("exec returns the affected rows and the id a RETURNING gives", function()
    run(function()
      local conn = open()
      assert(conn:exec("create table ex (id serial primary key, v int)"))
      local n, id = conn:exec("insert into ex (v) values (1), (2), (3) returning id")
      assert.equal(3, n)
      assert.equal(3, id)
      n, id = conn:exec("update ex set v = v + 1 where v > 1")
      assert.equal(2, n)
      assert.is_nil(id)
      conn:close()
    end)
  end)

  it("fails to connect with kind connect, and auth for an unknown role", function()
    run(function()
      local ok, err = db.open("postgresql://luarun@/luarun?host=/nonexistent-dir")
      assert.is_nil(ok)
      assert.equal("connect", err.kind)
      assert.matches("No such file or directory", err.message) -- libpq's own words
      ok, err = db.open((url:gsub("luarun@", "nobody_here@")))
      assert.is_nil(ok)
      assert.equal("auth", err.kind)
    end)
  end)

  it("pipelines 100 tasks on one connection; one task's error touches no other", function()
    run(function()
      local conn = open()
      local fns = {}
      for i = 1, 100 do
        fns[i] = function()
          if i == 50 then return select(2, conn:query("select 1/0")).kind end
          return conn:query("select $1::int + 1 as x", i)[1].x
        end
      end
      local res = lr.gather(fns)
      for i = 1, 100 do
        if i == 50 then assert.equal("query", res[i]) else assert.equal(i + 1, res[i]) end
      end
      conn:close()
    end)
  end)

  it("cancels a running statement when its task is cancelled; the connection goes on", function()
    run(function()
      local conn = open()
      local t0 = lr.now()
      local task = lr.spawn(function() return conn:query("select pg_sleep(10)") end)
      lr.sleep(0.1)
      task:cancel()
      local ok, err = pcall(task.wait, task)
      assert.is_false(ok)
      assert.equal("cancelled", err.kind)
      assert.equal(5, conn:query("select 5 as x")[1].x)
      assert.is_true(lr.now() - t0 < 1)
      -- lr.timeout cancels the same way
      ok, err = lr.timeout(0.1, conn.query, conn, "select pg_sleep(10)")
      assert.is_nil(ok)
      assert.equal("timeout", err.kind)
      assert.equal(6, conn:query("select 6 as x")[1].x)
      assert.is_true(lr.now() - t0 < 2)
      conn:close()
    end)
  end)

  it("statement_timeout ends a long statement with kind timeout", function()
    run(function()
      local conn = open({statement_timeout = 0.1})
      local ok, err = conn:query("select pg_sleep(5)")
      assert.is_nil(ok)
      assert.equal("timeout", err.kind)
      assert.equal("57014", err.code)
      assert.equal(1, conn:query("select 1 as x")[1].x)
      conn:close()
    end)
  end)

  it("runs transactions: commit, rollback on error, no nesting, others wait", function()
    run(function()
      local conn = open()
      assert(conn:exec("create table tx (v int)"))
      assert.same({7, "x"}, {conn:transaction(function(c, a) c:exec("insert into tx values (1)") return a, "x" end, 7)})
      local ok, err = pcall(conn.transaction, conn, function(c)
        c:exec("insert into tx values (2)")
        error({kind = "mine"})
      end)
      assert.is_false(ok)
      assert.equal("mine", err.kind)
      assert.equal(1, conn:query("select count(*)::int as n from tx")[1].n)
      err = util.raises(conn.transaction, conn, function(c)
        return c:transaction(function() end)
      end)
      assert.matches("do not nest", tostring(err))
      -- another task's statement waits for the commit, so it sees both rows
      local seen
      conn:transaction(function(c)
        c:exec("insert into tx values (3)")
        lr.spawn(function() seen = conn:query("select count(*)::int as n from tx")[1].n end)
        lr.sleep(0.05)
        assert.is_nil(seen)
        c:exec("insert into tx values (4)")
      end)
      lr.sleep(0.05)
      assert.equal(3, seen)
      conn:close()
    end)
  end)

  it("streams a large result with rows(), in batches, and can stop early", function()
    run(function()
      local conn = open()
      local n, sum = 0, 0
      for row in conn:rows("select g from generate_series(1, 10000) g") do
        n = n + 1
        sum = sum + row.g
      end
      assert.equal(10000, n)
      assert.equal(50005000, sum)
      for row in conn:rows("select g from generate_series(1, 1000000) g") do
        if row.g == 10 then break end
      end
      assert.equal(2, conn:query("select 2 as x")[1].x)
      local ok, err = pcall(function()
        for _ in conn:rows("select 1/(g - 600) from generate_series(1, 1000) g") do end
      end)
      assert.is_false(ok)
      assert.equal("query", err.kind)
      assert.equal(3, conn:query("select 3 as x")[1].x)
      -- a statement that does not parse, streamed on its first use
      ok, err = pcall(function() for _ in conn:rows("selec 1") do end end)
      assert.is_false(ok)
      assert.equal("syntax", err.kind)
      conn:close()
    end)
  end)

  it("builds a large result whole, with the collector running again after it", function()
    run(function()
      local conn = open()
      local rows = assert(conn:query("select g as id, (g * 2)::text as t from generate_series(1, 20000) g"))
      assert.equal(20000, #rows)
      assert.same({id = 20000, t = "40000"}, rows[20000])
      assert.same({"id", "t"}, rows.columns)
      assert.is_true(collectgarbage("isrunning"))
      collectgarbage("stop") -- a script's own stop is left as it was
      assert.equal(20000, #assert(conn:query("select g from generate_series(1, 20000) g")))
      assert.is_false(collectgarbage("isrunning"))
      collectgarbage("restart")
      conn:close()
    end)
  end)

  it("streams 1,000,000 rows with rows() in little memory, its statement cached", function()
    local function hwm()
      for l in io.lines("/proc/self/status") do
        local kb = l:match("^VmHWM:%s+(%d+)")
        if kb then return tonumber(kb) / 1024 end
      end
    end
    run(function()
      local conn = open()
      local sql = "select g, 'some text beside it, row ' || g as t from generate_series(1, $1) g"
      for _ in conn:rows(sql, 10) do end -- the statement is now cached (named)
      collectgarbage()
      local before, n = hwm(), 0
      for row in conn:rows(sql, 1000000) do n = n + row.g % 2 end
      assert.equal(500000, n)
      local grew = hwm() - before
      -- Under ASan, freed blocks wait in its quarantine (256 MB by default), so peak
      -- memory tells nothing there: the plain build's run checks the bound.
      if not os.getenv("LUARUN_CHILD_ASAN_OPTIONS") then
        assert.is_true(grew < 40, ("peak memory grew by %.0f MB"):format(grew))
      end
      conn:close()
    end)
  end)

  it("copies 10,000 rows with copy_in, from a list or an iterator", function()
    run(function()
      local conn = open()
      assert(conn:exec("create table cp (id int, name text, score float8)"))
      local list = {}
      for i = 1, 10000 do list[i] = {i, "name\t" .. i, i / 2} end
      assert.equal(10000, conn:copy_in("copy cp (id, name, score) from stdin", list))
      local i = 0
      assert.equal(500, conn:copy_in("copy cp (id, name, score) from stdin", function()
        i = i + 1
        if i <= 500 then return {-i, db.null, 0} end
      end))
      local r = conn:query("select count(*)::int as n, sum(id)::int8 as s from cp where id > 0")[1]
      assert.equal(10000, r.n)
      assert.equal(50005000, r.s)
      assert.equal("name\t77", conn:query("select name from cp where id = 77")[1].name)
      assert.equal(500, conn:query("select count(*)::int as n from cp where name is null")[1].n)
      -- plain "COPY t (cols) FROM STDIN" goes in the binary format: a value that does
      -- not fit its column raises; any other COPY goes as text, checked by the server
      local err = util.raises(conn.copy_in, conn, "copy cp (id) from stdin", {{"777777"}, {"not a number"}})
      assert.matches("copy_in: row 2, column 1: an integer expected %(the column is integer%), " ..
        "got string 'not a number'", tostring(err))
      assert.equal(0, conn:query("select count(*)::int as n from cp where id = 777777")[1].n)
      local ok
      ok, err = conn:copy_in("copy cp (id) from stdin with (format text)", {{"not a number"}})
      assert.is_nil(ok)
      assert.equal("22P02", err.code)
      assert.equal(1, conn:query("select 1 as x")[1].x)
      -- every type the binary form writes, and NULLs
      assert(conn:exec([[create table cpb (b bool, i2 int2, i4 int4, i8 int8, f4 float4,
        f8 float8, t text, v varchar(9), by bytea, j json, jb jsonb)]]))
      assert.equal(2, conn:copy_in("copy cpb (b, i2, i4, i8, f4, f8, t, v, by, j, jb) from stdin", {
        {true, -2, 2147483647, math.mininteger, 1.5, 0.1, "tëxt\t\n", "v", "\0\255", '{"a":1}', '[1,null]'},
        {false, db.null, nil, 5},
      }))
      local rows = conn:query("select * from cpb order by b desc")
      assert.same({b = true, i2 = -2, i4 = 2147483647, i8 = math.mininteger, f4 = 1.5, f8 = 0.1,
        t = "tëxt\t\n", v = "v", by = "\0\255", j = {a = 1}, jb = {1, db.null}}, rows[1])
      assert.same({b = false, i2 = db.null, i4 = db.null, i8 = 5, f4 = db.null, f8 = db.null,
        t = db.null, v = db.null, by = db.null, j = db.null, jb = db.null}, rows[2])
      err = util.raises(conn.copy_in, conn, "copy cpb (i2) from stdin", {{70000}})
      assert.matches("70000 is out of range", tostring(err))
      assert.equal(0, conn:copy_in("copy cpb (i2) from stdin", {}))
      conn:close()
    end)
  end)

  it("delivers NOTIFY to a listener on a connection of its own", function()
    run(function()
      local conn = open()
      local listener = assert(conn:listen("news"))
      local got = {}
      local reader = lr.spawn(function()
        for note in listener do
          got[#got + 1] = note
          if #got == 3 then break end
        end
      end)
      for i = 1, 3 do assert(conn:exec("select pg_notify('news', $1)", "item " .. i)) end
      lr.timeout(5, reader.wait, reader)
      assert.equal(3, #got)
      assert.same({channel = "news", payload = "item 3"}, got[3])
      listener:close()
      local ok, err = listener:next()
      assert.is_nil(ok)
      assert.equal("closed", err.kind)
      conn:close()
    end)
  end)

  it("keeps a script alive while it only waits for notifications", function()
    local psql = ("psql %s -qc \"notify only_listen, 'from outside'\" >/dev/null"):format(util.quote(url))
    local code, out, err = util.luarun([[
      local db = require "luarun.db"
      local conn = assert(db.open(arg[1]))
      local l = assert(conn:listen("only_listen"))
      os.execute("(sleep 0.3; " .. arg[2] .. ") &")
      for note in l do print(note.payload) break end
      l:close()
      conn:close()
    ]], util.quote(url) .. " " .. util.quote(psql))
    assert.equal(0, code, err)
    assert.equal("from outside\n", out)
  end)

  it("gives every waiting task 'closed' when the server goes away, and never hangs", function()
    local own = pgserver.new()
    local own_url = own:start()
    run(function()
      local conn = assert(db.open(own_url))
      local tasks = {}
      for i = 1, 5 do
        tasks[i] = lr.spawn(function() return conn:query("select pg_sleep(30), $1::int", i) end)
      end
      lr.sleep(0.2)
      os.execute("kill -9 " .. own:pid())
      for i = 1, 5 do
        local ok, err = lr.timeout(10, tasks[i].wait, tasks[i])
        assert.is_nil(ok)
        assert.equal("closed", err.kind)
      end
      assert.is_true(conn:is_closed())
      local ok, err = conn:query("select 1")
      assert.equal("closed", err.kind)
    end)
    own:stop()
  end)

  it("pools connections: borrowed per call, a lost one replaced, waits reported apart", function()
    run(function()
      local pool = assert(db.pool(url, {size = 3}))
      local fns = {}
      for i = 1, 30 do fns[i] = function() return pool:query("select $1::int as v", i)[1].v end end
      local res = lr.gather(fns)
      for i = 1, 30 do assert.equal(i, res[i]) end
      local st = pool:stats()
      assert.equal(3, st.size)
      assert.is_true(st.opened <= 3)
      assert.equal(0, st.in_use)
      -- kill the backend of the next connection to be borrowed: the pool replaces it
      local pid = pool:with(function(c) return c:query("select pg_backend_pid() as p")[1].p end)
      local killer = open()
      for _ = 1, 3 do
        pool:with(function(c) c:query("select 1") end)
      end
      killer:query("select pg_terminate_backend(pid) from pg_stat_activity where pid = $1", pid)
      killer:close()
      lr.sleep(0.1)
      local failures = 0
      for _ = 1, 6 do
        local r, err = pool:query("select 1 as x")
        if not r then
          failures = failures + 1
          assert.equal("closed", err.kind)
        end
      end
      assert.is_true(failures <= 1)
      assert.equal(1, pool:query("select 1 as x")[1].x)
      -- a pool whose connections are all busy: the wait times out, told apart
      local small = assert(db.pool(url, {size = 1, timeout = 0.2}))
      local hog = lr.spawn(function() return small:with(function(c) lr.sleep(0.5) end) end)
      lr.sleep(0.05)
      local ok, err = small:query("select 1")
      assert.is_nil(ok)
      assert.equal("timeout", err.kind)
      assert.is_true(err.pool)
      hog:wait()
      ok, err = small:query("select pg_sleep(1)")
      assert.is_nil(ok)
      assert.equal("timeout", err.kind)
      assert.is_nil(err.pool)
      assert.equal(1, small:query("select 1 as x")[1].x)
      assert.equal(5, pool:transaction(function(c) return c:query("select 5 as x")[1].x end))
      pool:close()
      small:close()
    end)
  end)

  it("works without the statement cache (pgbouncer's transaction mode)", function()
    run(function()
      local conn = open({statement_cache = false})
      for i = 1, 3 do assert.equal(i, conn:query("select $1::int as v", i)[1].v) end
      local stmt = conn:prepare("select $1::int * 2 as v")
      assert.equal(8, stmt:query(4)[1].v)
      assert.equal(0, conn:query("select count(*)::int as n from pg_prepared_statements")[1].n)
      conn:close()
    end)
  end)

  it("closes an unclosed connection when it is collected", function()
    run(function()
      local before = open()
      local n0 = before:query("select count(*)::int as n from pg_stat_activity where application_name = 'luarun'")[1].n
      do
        local c = open()
        c:query("select 1")
      end
      collectgarbage()
      collectgarbage()
      lr.sleep(0.2)
      local n1 = before:query("select count(*)::int as n from pg_stat_activity where application_name = 'luarun'")[1].n
      assert.is_true(n1 <= n0, ("%d connections before, %d after"):format(n0, n1))
      before:close()
    end)
  end)
end)
