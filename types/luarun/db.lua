---@meta luarun.db
-- LuaCATS annotations for `require "luarun.db"`, read by lua-language-server.
-- The manual: docs/reference/db.md.

local db = {}

---What a failed statement returns as its second value. `kind` is stable; `message`
---is the database's.
---@class luarun.db.Error
---@field kind "connect"|"auth"|"syntax"|"constraint"|"timeout"|"closed"|"busy"|"locked"|"query"|"io"|"invalid_url"|"cancelled"
---@field message string
---@field code? string PostgreSQL: the SQLSTATE ("23505"); SQLite: its result code's name ("SQLITE_CONSTRAINT_UNIQUE")
---@field constraint? string kind "constraint": the constraint's name, where the database gives it
---@field detail? string PostgreSQL: the server's detail line
---@field pool? true a pool's wait for a free connection ran out (kind "timeout")
---@field waited? number with `pool`: seconds waited
---@field url? string kind "invalid_url": the URL as given

---Options of `db.open`; each applies to one database and the other ignores it.
---@class luarun.db.Options
---@field busy_timeout? number SQLite: seconds to wait for another connection's lock (default 5), else kind "busy"
---@field readonly? boolean SQLite: open the file read-only
---@field connect_timeout? number PostgreSQL: seconds to connect and log in (default 10)
---@field statement_timeout? number PostgreSQL: seconds a statement may run; the server cancels it (kind "timeout", code "57014")
---@field statement_cache? boolean PostgreSQL: prepare each SQL text once per connection (default true); false for PgBouncer in transaction mode

---Options of `db.pool`: the pool's own, and `db.open`'s for each connection.
---@class luarun.db.PoolOptions: luarun.db.Options
---@field size? integer connections at most (default 10)
---@field timeout? number seconds for a whole call, waiting for a free connection included

---The counters of `pool:stats()`.
---@class luarun.db.PoolStats
---@field size integer connections at most
---@field idle integer open and free
---@field in_use integer borrowed now
---@field opened integer opened over the pool's life

---A LISTEN notification.
---@class luarun.db.Notification
---@field channel string
---@field payload string

---A parameter: integers, floats, strings (text; bytes where they are not UTF-8),
---booleans, `db.null` for NULL (nil too on PostgreSQL), and on PostgreSQL arrays
---and `db.json(v)`.
---@alias luarun.db.Value integer|number|string|boolean|lightuserdata|luarun.db.Value[]|luarun.db.Json|nil

---A row: column name -> value; NULL is `db.null`.
---@alias luarun.db.Row table<string, any>

---What `query` returns: the rows in order, and the column names.
---@class luarun.db.Rows
---@field [integer] luarun.db.Row
---@field columns string[]

---A value marked by `db.json` to be sent as JSON text.
---@class luarun.db.Json

---A connection from `db.open`: SQLite or PostgreSQL.
---@alias luarun.db.Connection luarun.db.SqliteConn|luarun.db.PgConnection

---SQL NULL, in results and as a parameter: the same value as `json.null`.
---@type lightuserdata
db.null = {}

---Opens a connection: "sqlite:path.db", "sqlite::memory:", or
---"postgresql://user:password@host:port/dbname" (also postgres://, and
---"?host=/run/postgresql" for a Unix socket). nil, err (kind "connect", "auth" or
---"invalid_url") if it cannot.
---@async
---@param url string
---@param opts? luarun.db.Options
---@return luarun.db.Connection? conn
---@return luarun.db.Error? err
function db.open(url, opts) end

---A pool of at most `opts.size` connections, opened when first needed; each call
---borrows one. nil, err only for a URL of no supported database.
---@param url string
---@param opts? luarun.db.PoolOptions
---@return luarun.db.Pool? pool
---@return luarun.db.Error? err
function db.pool(url, opts) end

---Marks `value` to be sent as JSON text (for json and jsonb parameters).
---@param value any
---@return luarun.db.Json
function db.json(value) end

---A PostgreSQL connection. Statements from several tasks are pipelined on it.
---@class luarun.db.PgConnection
local PgConnection = {}

---Runs a statement (parameters $1, $2...); returns its rows, or nil, err.
---@async
---@param sql string
---@param ... luarun.db.Value
---@return luarun.db.Rows? rows
---@return luarun.db.Error? err
function PgConnection:query(sql, ...) end

---Runs a statement for its effect: the rows it changed and the first column of the
---last row it returned (use RETURNING id), or nil, err.
---@async
---@param sql string
---@param ... luarun.db.Value
---@return integer|nil affected_rows
---@return any last_insert_id_or_err
function PgConnection:exec(sql, ...) end

---For a generic for: the rows, fetched 512 at a time. Errors raise; leaving the loop
---early stops the statement.
---@async
---@param sql string
---@param ... luarun.db.Value
---@return fun(): luarun.db.Row? iterator
---@return nil
---@return nil
---@return any closer
function PgConnection:rows(sql, ...) end

---A statement object for `sql` (statements are cached by text anyway).
---@param sql string
---@return luarun.db.Statement
function PgConnection:prepare(sql) end

---Runs fn(conn, ...) between BEGIN and COMMIT and returns its results; rolls back
---and raises again if fn raises; nil, err if COMMIT fails. Does not nest.
---@async
---@generic R
---@param fn fun(conn: luarun.db.PgConnection, ...): R
---@param ... any
---@return R|nil
---@return any
function PgConnection:transaction(fn, ...) end

---COPY ... FROM STDIN: rows is a list of arrays, or a function returning one array per
---call and nil at the end (db.null for NULL). The rows copied, or nil, err.
---@async
---@param sql string
---@param rows (luarun.db.Value[])[]|fun(): luarun.db.Value[]?
---@return integer? count
---@return luarun.db.Error? err
function PgConnection:copy_in(sql, rows) end

---LISTEN on a connection of its own: an iterator of notifications.
---@async
---@param channel string
---@return luarun.db.Listener? listener
---@return luarun.db.Error? err
function PgConnection:listen(channel) end

---Closes the connection; waiting statements get kind "closed".
function PgConnection:close() end

---true once closed, or lost.
---@return boolean
function PgConnection:is_closed() end

---A SQLite connection, with a thread of its own. Parameters: ?, ?NNN, or :name with
---one table argument.
---@class luarun.db.SqliteConn
local SqliteConn = {}

---Runs a statement; returns its rows, or nil, err.
---@async
---@param sql string
---@param ... luarun.db.Value|table<string, luarun.db.Value>
---@return luarun.db.Rows? rows
---@return luarun.db.Error? err
function SqliteConn:query(sql, ...) end

---Runs a statement for its effect: the rows it changed and the last rowid inserted,
---or nil, err.
---@async
---@param sql string
---@param ... luarun.db.Value|table<string, luarun.db.Value>
---@return integer|nil affected_rows
---@return integer|luarun.db.Error|nil last_insert_id_or_err
function SqliteConn:exec(sql, ...) end

---For a generic for: the rows, fetched in batches. Errors raise; leaving the loop
---early stops the statement.
---@async
---@param sql string
---@param ... luarun.db.Value|table<string, luarun.db.Value>
---@return fun(): luarun.db.Row? iterator
---@return nil
---@return nil
---@return any closer
function SqliteConn:rows(sql, ...) end

---Compiles `sql` into a statement object; nil, err if it does not compile.
---@async
---@param sql string
---@return luarun.db.Statement? stmt
---@return luarun.db.Error? err
function SqliteConn:prepare(sql) end

---Runs fn(conn, ...) between BEGIN IMMEDIATE and COMMIT and returns its results;
---rolls back and raises again if fn raises; nil, err if COMMIT fails. Does not nest.
---@async
---@generic R
---@param fn fun(conn: luarun.db.SqliteConn, ...): R
---@param ... any
---@return R|nil
---@return any
function SqliteConn:transaction(fn, ...) end

---Closes the connection (after its running statement); waiting ones get kind "closed".
---@async
function SqliteConn:close() end

---true once closed.
---@return boolean
function SqliteConn:is_closed() end

---A prepared statement of SQLite, from `conn:prepare`. PostgreSQL's and a pool's
---statements have the same methods (a pool's has no `rows`).
---@class luarun.db.SqliteStmt
local SqliteStmt = {}

---`conn:query(sql, ...)` with the statement's SQL.
---@async
---@param ... luarun.db.Value|table<string, luarun.db.Value>
---@return luarun.db.Rows? rows
---@return luarun.db.Error? err
function SqliteStmt:query(...) end

---`conn:exec(sql, ...)` with the statement's SQL.
---@async
---@param ... luarun.db.Value|table<string, luarun.db.Value>
---@return integer|nil affected_rows
---@return any last_insert_id_or_err
function SqliteStmt:exec(...) end

---`conn:rows(sql, ...)` with the statement's SQL.
---@async
---@param ... luarun.db.Value|table<string, luarun.db.Value>
---@return fun(): luarun.db.Row? iterator
---@return nil
---@return nil
---@return any closer
function SqliteStmt:rows(...) end

---Lets the statement go (also when its connection closes).
function SqliteStmt:close() end

---What `conn:prepare` and `pool:prepare` return.
---@alias luarun.db.Statement luarun.db.SqliteStmt

---A pool from `db.pool`: the methods of a connection, each call on a borrowed one.
---@class luarun.db.Pool
local Pool = {}

---@async
---@param sql string
---@param ... luarun.db.Value
---@return luarun.db.Rows? rows
---@return luarun.db.Error? err
function Pool:query(sql, ...) end

---@async
---@param sql string
---@param ... luarun.db.Value
---@return integer|nil affected_rows
---@return any last_insert_id_or_err
function Pool:exec(sql, ...) end

---A for-loop over the rows on a connection borrowed until the loop ends.
---@async
---@param sql string
---@param ... luarun.db.Value
---@return fun(): luarun.db.Row? iterator
---@return nil
---@return nil
---@return any closer
function Pool:rows(sql, ...) end

---COPY ... FROM STDIN on a borrowed connection (PostgreSQL); `...` is the rows.
---@async
---@param sql string
---@param ... (luarun.db.Value[])[]|fun(): luarun.db.Value[]?
---@return integer? count
---@return luarun.db.Error? err
function Pool:copy_in(sql, ...) end

---Runs fn(conn, ...) on one borrowed connection and returns its results.
---@async
---@generic R
---@param fn fun(conn: luarun.db.Connection, ...): R
---@param ... any
---@return R|nil
---@return any
function Pool:with(fn, ...) end

---conn:transaction(fn, ...) on a borrowed connection.
---@async
---@generic R
---@param fn fun(conn: luarun.db.Connection, ...): R
---@param ... any
---@return R|nil
---@return any
function Pool:transaction(fn, ...) end

---A statement whose query and exec each borrow a connection.
---@param sql string
---@return luarun.db.Statement
function Pool:prepare(sql) end

---A listener with a connection of its own (PostgreSQL).
---@async
---@param channel string
---@return luarun.db.Listener? listener
---@return luarun.db.Error? err
function Pool:listen(channel) end

---@return luarun.db.PoolStats
function Pool:stats() end

---Closes idle connections now, borrowed ones when given back.
function Pool:close() end

---LISTEN notifications: `for note in listener do ... end` ends when its connection
---closes.
---@class luarun.db.Listener
---@overload fun(): luarun.db.Notification?
local Listener = {}

---The next notification, or nil, err (kind "closed").
---@async
---@return luarun.db.Notification? note
---@return luarun.db.Error? err
function Listener:next() end

---Closes the listener's connection.
function Listener:close() end

---A COPY in progress (conn:copy_in's own; not for direct use).
---@class luarun.db.PgCopy
local PgCopy = {}

---@async
---@param rows (luarun.db.Value[])[]
---@param i integer
---@param j integer
---@return true|nil
---@return luarun.db.Error? err
function PgCopy:put(rows, i, j) end

---@async
---@return integer? count
---@return luarun.db.Error? err
function PgCopy:finish() end

return db
