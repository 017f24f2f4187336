--- luarun.db_front: the body of `luarun.db` (bindings/db.c calls this chunk's function
-- with {null =, error =} and returns what it returns). db.open picks a driver by the
-- URL; transactions and pools are written here once, on top of either driver's
-- connections (bindings/db_common.h lists what a driver provides).
local lr = require "luarun"

local pack, unpack, remove = table.pack, table.unpack, table.remove
local fmt = string.format

return function(c)
  local db = {null = c.null, json = c.json}
  local new_error = c.error
  local drivers = {}

  local function argerror(fname, n, want, v)
    error(fmt("bad argument #%d to '%s' (%s expected, got %s)", n, fname, want, type(v)), 3)
  end

  --- Runs fn(conn, ...) inside BEGIN ... COMMIT on conn, which belongs to the calling
  -- task meanwhile: other tasks' statements on it wait until the transaction ends.
  -- Returns fn's results; if fn raises, ROLLBACK and the error is raised again; if
  -- COMMIT fails, nil, err (the transaction was rolled back).
  local Pin = {__close = function(pin)
    if not pin.done then pin.conn:_unpin("ROLLBACK") end
  end}
  local function transaction(conn, fn, ...)
    if type(fn) ~= "function" then argerror("transaction", 1, "function", fn) end
    local pinned, nested = conn:_pin()
    if not pinned then error(nested, 2) end
    local pin <close> = setmetatable({conn = conn, done = false}, Pin)
    local ok, err = conn:exec(conn._begin_sql)
    if not ok then
      pin.done = true
      conn:_unpin()
      return nil, err
    end
    local r = pack(pcall(fn, conn, ...))
    if not r[1] then
      error(r[2], 0) -- the <close> handler queues the ROLLBACK first
    end
    ok, err = conn:exec("COMMIT")
    if not ok then return nil, err end -- <close>: ROLLBACK (PostgreSQL may still be in it)
    pin.done = true
    conn:_unpin()
    return unpack(r, 2, r.n)
  end

  -- Where each connection came from (for listen's connection of its own).
  local origin = setmetatable({}, {__mode = "k"})

  --- conn:prepare(sql) for a driver that caches statements by text itself (pg): a
  -- statement object whose calls are the connection's.
  local function prepare(conn, sql)
    if type(sql) ~= "string" then argerror("prepare", 1, "string", sql) end
    return {
      query = function(_, ...) return conn:query(sql, ...) end,
      exec = function(_, ...) return conn:exec(sql, ...) end,
      rows = function(_, ...) return conn:rows(sql, ...) end,
      close = function() end,
    }
  end

  --- conn:copy_in(sql, rows) -> count | nil, err: COPY ... FROM STDIN, with rows a
  -- list of arrays or an iterator returning one array per call (nil at the end).
  local COPY_BATCH = 2000
  -- "COPY table (columns) FROM STDIN" with nothing after it: the form whose column
  -- types can be asked for, and which can then go in the binary format.
  local COPY_PLAIN = "^%s*[Cc][Oo][Pp][Yy]%s+([%w_%.\"]+)%s*(%b())%s+[Ff][Rr][Oo][Mm]%s+" ..
    "[Ss][Tt][Dd][Ii][Nn]%s*;?%s*$"
  -- Types the binary encoder writes (db_pg_copy.c): bool, int8/2/4, float4/8, text,
  -- varchar, bpchar, name, bytea, json, jsonb.
  local BINARY_OK = {[16] = true, [20] = true, [21] = true, [23] = true, [700] = true,
    [701] = true, [25] = true, [1043] = true, [1042] = true, [19] = true, [17] = true,
    [114] = true, [3802] = true}
  local copy_types = setmetatable({}, {__mode = "k"}) -- conn -> {sql -> types | false}
  local function binary_types(conn, sql)
    local tbl, cols = sql:match(COPY_PLAIN)
    if not tbl or not conn._types then return nil end
    local cache = copy_types[conn]
    if not cache then
      cache = {}
      copy_types[conn] = cache
    end
    local types = cache[sql]
    if types == nil then
      types = conn:_types("SELECT " .. cols:sub(2, -2) .. " FROM " .. tbl .. " LIMIT 0") or false
      for _, oid in ipairs(types or {}) do
        if not BINARY_OK[oid] then types = false break end
      end
      cache[sql] = types
    end
    return types or nil
  end

  local function copy_in(conn, sql, src)
    if type(sql) ~= "string" then argerror("copy_in", 1, "string", sql) end
    local ts = type(src)
    if ts ~= "table" and ts ~= "function" then argerror("copy_in", 2, "table or function", src) end
    local types = binary_types(conn, sql)
    if types then sql = sql:gsub("%s*;?%s*$", "") .. " WITH (FORMAT binary)" end
    -- <close>: a COPY left by an error or a cancellation (in the iterator, say) ends
    -- at once with an error, rolling it back, and the connection goes on.
    local cp <close>, err = conn:_copy_start(sql, types)
    if not cp then return nil, err end
    local ok, perr
    if ts == "table" then
      local n = #src
      for i = 1, n, COPY_BATCH do
        ok, perr = cp:put(src, i, math.min(i + COPY_BATCH - 1, n))
        if not ok then return nil, perr end
      end
    else
      local batch, n = {}, 0
      while true do
        local row = src()
        if row == nil then break end
        n = n + 1
        batch[n] = row
        if n == COPY_BATCH then
          ok, perr = cp:put(batch, 1, n)
          if not ok then return nil, perr end
          n = 0
        end
      end
      if n > 0 then
        ok, perr = cp:put(batch, 1, n)
        if not ok then return nil, perr end
      end
    end
    return cp:finish()
  end

  --- conn:listen(channel) -> listener | nil, err: LISTEN on a connection of its own;
  -- the listener is an iterator of {channel =, payload =} (a for loop ends when the
  -- connection closes), with listener:next() -> note | nil, err and listener:close().
  local Listener = {}
  Listener.__index = Listener
  Listener.__name = "luarun.db.Listener"
  function Listener:next() return self.conn:_notification() end
  function Listener:close()
    self.closed = true
    self.conn:close()
  end
  -- In a for loop: the next note; nil once listener:close() was called; any other
  -- end (the server went away) raises, since a for loop cannot see nil, err.
  Listener.__call = function(self)
    local note, err = self.conn:_notification()
    if note == nil and not self.closed then error(err, 2) end
    return note
  end
  Listener.__close = Listener.close
  local function listen_on(d, target, opts, channel)
    local lc, err = d.open(target, opts)
    if not lc then return nil, err end
    local ok, lerr = lc:exec('LISTEN "' .. channel:gsub('"', '""') .. '"')
    if not ok then
      lc:close()
      return nil, lerr
    end
    return setmetatable({conn = lc, channel = channel, closed = false}, Listener)
  end
  local function listen(conn, channel)
    if type(channel) ~= "string" then argerror("listen", 1, "string", channel) end
    local o = origin[conn]
    if not o then error("listen: the connection's origin is unknown", 2) end
    return listen_on(o.driver, o.target, o.opts, channel)
  end

  local function driver(name)
    local d = drivers[name]
    if not d then
      d = require("luarun.db." .. name)
      local m = d.methods
      m.transaction = transaction
      m._begin_sql = d.begin_sql
      if m._copy_start then m.copy_in = copy_in end
      if m._notification then m.listen = listen end
      if not m.prepare then m.prepare = prepare end
      local open = d.open
      d.open = function(target, opts)
        local conn, err = open(target, opts)
        if conn then origin[conn] = {driver = d, target = target, opts = opts} end
        return conn, err
      end
      drivers[name] = d
    end
    return d
  end

  -- "sqlite:path", "sqlite::memory:", "postgresql://..." or "postgres://...": the
  -- driver and what it is given.
  local function parse(fname, url)
    if type(url) ~= "string" then argerror(fname, 1, "string", url) end
    local rest = url:match("^sqlite:(.*)$")
    if rest then
      if rest:sub(1, 2) == "//" then rest = rest:sub(3) end
      return driver("sqlite"), rest
    end
    if url:match("^postgres://") or url:match("^postgresql://") then return driver("pg"), url end
    return nil, new_error("invalid_url", fmt("db.open: unsupported database URL %q " ..
      "(sqlite:path, sqlite::memory: or postgresql://...)", url), {url = url})
  end

  --- db.open(url [, opts]) -> conn | nil, err
  function db.open(url, opts)
    if opts ~= nil and type(opts) ~= "table" then argerror("open", 2, "table", opts) end
    local d, target = parse("open", url)
    if not d then return nil, target end
    return d.open(target, opts)
  end

  ------------------------------------------------------------------------------
  -- Pools: at most size connections, opened when first needed. A call borrows one
  -- for itself (pool:query) or for a function (pool:with); a connection that failed
  -- (closed, lost) is dropped and a new one opened by the next borrower.

  local Pool = {}
  Pool.__index = Pool
  Pool.__name = "luarun.db.Pool"

  local function lost(err)
    return type(err) == "table" and (err.kind == "closed" or err.kind == "connect")
  end

  -- Waits for a free slot (counting toward the pool's timeout), then takes an idle
  -- connection or opens one. Returns conn, or nil, err.
  local function borrow(p, deadline)
    if p.closed then return nil, new_error("closed", "pool: the pool is closed") end
    local t0 = lr.now()
    if deadline then
      local ok, err = lr.timeout(deadline - t0, p.slots.acquire, p.slots)
      if not ok then
        if type(err) == "table" and err.kind == "timeout" then
          err = new_error("timeout", fmt("pool: no connection came free within %.3g s " ..
            "(all %d in use)", lr.now() - t0, p.size), {waited = lr.now() - t0, pool = true})
        end
        return nil, err
      end
    else
      p.slots:acquire()
    end
    local conn = remove(p.idle)
    if conn then return conn end
    local err
    conn, err = p.driver.open(p.target, p.opts)
    if not conn then
      p.slots:release()
      return nil, err
    end
    p.opened = p.opened + 1
    return conn
  end

  local function give_back(p, conn, err)
    if p.closed or lost(err) or conn:is_closed() then
      conn:close()
    else
      p.idle[#p.idle + 1] = conn
    end
    p.slots:release()
  end

  local function deadline_of(p)
    return p.timeout and lr.now() + p.timeout or nil
  end

  -- Borrows a connection, runs conn[method](conn, ...) within what is left of the
  -- pool's timeout, gives the connection back, returns the results.
  local function call(p, method, ...)
    local deadline = deadline_of(p)
    local conn, err = borrow(p, deadline)
    if not conn then return nil, err end
    local r
    if deadline then
      r = pack(pcall(lr.timeout, deadline - lr.now(), conn[method], conn, ...))
    else
      r = pack(pcall(conn[method], conn, ...))
    end
    if not r[1] then
      give_back(p, conn, r[2])
      error(r[2], 0)
    end
    give_back(p, conn, r[2] == nil and r[3] or nil)
    return unpack(r, 2, r.n)
  end

  for _, m in ipairs({"query", "exec", "copy_in"}) do
    Pool[m] = function(p, sql, ...)
      if getmetatable(p) ~= Pool then
        error(("bad self to '%s' (pool expected, got %s): call it as pool:%s(...)"):format(m, type(p), m), 2)
      end
      if type(sql) ~= "string" then argerror(m, 1, "string", sql) end
      return call(p, m, sql, ...)
    end
  end

  --- pool:with(fn, ...) -> fn(conn, ...)'s results: one connection for several statements.
  function Pool:with(fn, ...)
    if type(fn) ~= "function" then argerror("with", 1, "function", fn) end
    local conn, err = borrow(self, deadline_of(self))
    if not conn then return nil, err end
    local r = pack(pcall(fn, conn, ...))
    if not r[1] then
      give_back(self, conn, r[2])
      error(r[2], 0)
    end
    give_back(self, conn)
    return unpack(r, 2, r.n)
  end

  --- pool:transaction(fn, ...): conn:transaction on a borrowed connection.
  function Pool:transaction(fn, ...)
    if type(fn) ~= "function" then argerror("transaction", 1, "function", fn) end
    return self:with(function(conn, ...) return conn:transaction(fn, ...) end, ...)
  end

  --- pool:rows(sql, ...): conn:rows on a connection borrowed until the loop ends.
  function Pool:rows(sql, ...)
    if type(sql) ~= "string" then argerror("rows", 1, "string", sql) end
    local conn, err = borrow(self, deadline_of(self))
    if not conn then error(err, 2) end
    local ok, it, st, ctl, closer = pcall(conn.rows, conn, sql, ...)
    if not ok then
      give_back(self, conn, it)
      error(it, 2)
    end
    local p, given = self, false
    local function back(e)
      if given then return end
      given = true
      if closer then
        local cm = getmetatable(closer)
        if cm and cm.__close then cm.__close(closer) end
      end
      give_back(p, conn, e)
    end
    local guard = setmetatable({}, {__close = function() back() end})
    return function(s, c2)
      local okr, row = pcall(it, s, c2)
      if not okr then
        back(row)
        error(row, 0)
      end
      if row == nil then back() end
      return row
    end, st, ctl, guard
  end

  --- pool:prepare(sql): a statement whose calls borrow a connection each (the
  -- drivers cache prepared statements per connection, by text).
  function Pool:prepare(sql)
    if type(sql) ~= "string" then argerror("prepare", 1, "string", sql) end
    local p = self
    return {
      query = function(_, ...) return call(p, "query", sql, ...) end,
      exec = function(_, ...) return call(p, "exec", sql, ...) end,
      rows = function(_, ...) return p:rows(sql, ...) end,
      close = function() end,
    }
  end

  --- pool:listen(channel): LISTEN on a connection of its own (PostgreSQL).
  function Pool:listen(channel)
    if not self.driver.methods.listen then
      error("listen: LISTEN/NOTIFY needs a PostgreSQL pool", 2)
    end
    if type(channel) ~= "string" then argerror("listen", 1, "string", channel) end
    return listen_on(self.driver, self.target, self.opts, channel)
  end

  --- pool:close(): closes the idle connections now, the borrowed ones when returned.
  function Pool:close()
    self.closed = true
    for i = #self.idle, 1, -1 do
      self.idle[i]:close()
      self.idle[i] = nil
    end
  end
  Pool.__close = Pool.close

  --- pool:stats() -> {size =, idle =, in_use =, opened =}
  function Pool:stats()
    local free = self.slots:available()
    return {size = self.size, idle = #self.idle, in_use = self.size - free, opened = self.opened}
  end

  --- db.pool(url, {size = 10, timeout = seconds, ...driver options}) -> pool | nil, err
  function db.pool(url, opts)
    if opts ~= nil and type(opts) ~= "table" then argerror("pool", 2, "table", opts) end
    opts = opts or {}
    local size = opts.size or 10
    if math.type(size) ~= "integer" or size < 1 then
      error("bad argument #2 to 'pool' (size must be a positive integer)", 2)
    end
    local timeout = opts.timeout
    if timeout ~= nil and (type(timeout) ~= "number" or timeout <= 0) then
      error("bad argument #2 to 'pool' (timeout must be a positive number of seconds)", 2)
    end
    local d, target = parse("pool", url)
    if not d then return nil, target end
    return setmetatable({driver = d, target = target, opts = opts, size = size,
      timeout = timeout, idle = {}, opened = 0, slots = lr.Semaphore(size)}, Pool)
  end

  return db
end
