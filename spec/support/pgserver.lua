-- A real PostgreSQL 15 server for the specs: initdb into a fresh directory under /tmp,
-- listening on a Unix socket in that directory only (no TCP), stopped by its pid.
--
--   local pg = require "support.pgserver"
--   local url = pg.start()   -- "postgresql://luarun@/luarun?host=/tmp/luarun-pg.XXXXXX"
--   pg.psql("create table t (id int)")   -- runs psql against it, returns its output
--   pg.pid(), pg.dir()
--
-- pg.start() starts one server per busted process, on its first call; later calls (from
-- any spec file) return the same URL. Specs need not stop it: it is stopped when the
-- process exits (a __gc sentinel in the registry, which busted's os.exit(code, true)
-- and a normal end both run), and a watchdog shell stops it if the process is killed.
-- pg.stop() stops it earlier; a later pg.start() then starts a new one.
-- pg.new() makes a server of its own, with the same methods (s:start(), s:stop(), ...).
--
-- As root, initdb and postgres run as the user postgres (runuser), which owns the
-- directory; otherwise they run as the current user.
local M = {}

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local sh = require("support.util").sh_clean -- without the ASan runtime

local read_file = require("support.util").read_file

local alive = require("support.util").alive

local function sleep(s) os.execute("sleep " .. s) end

-- Polls pred every 0.1 s for about `seconds`; returns its first true value or nil.
local function poll(pred, seconds)
  for _ = 1, math.ceil(seconds * 10) do
    local v = pred()
    if v then return v end
    sleep(0.1)
  end
  return pred()
end

local function own_pid()
  return assert(read_file("/proc/self/stat")):match("^(%d+)")
end

local bindir = "/usr/lib/postgresql/15/bin"
if not read_file(bindir .. "/postgres") then
  local ok, out = sh("pg_config --bindir")
  bindir = ok and out:match("^%s*(.-)%s*$") or nil
end
local function bin(name) return bindir and (bindir .. "/" .. name) or name end
M.bin = bin

local is_root = sh("test \"$(id -u)\" = 0")

-- Runs a command as the server's owner (postgres when we are root).
local function as_owner(dir, cmd)
  return "cd " .. q(dir) .. " && " .. (is_root and "runuser -u postgres -- " or "") .. cmd
end

local Server = {}
Server.__index = Server

--- A server of its own (not started).
function M.new() return setmetatable({}, Server) end

function Server:url() return self.dir and ("postgresql://luarun@/luarun?host=" .. self.dir) end
function Server:pid() return self.pg_pid end

--- Starts the server (once): returns its URL.
function Server:start()
  if self.dir and alive(self.pg_pid) then return self:url() end
  local ok, out = sh("mktemp -d /tmp/luarun-pg.XXXXXX")
  local dir = assert(ok and out:match("^(%S+)"), "mktemp failed: " .. out)
  self.dir = dir
  if is_root then
    ok, out = sh("chown postgres: " .. q(dir) .. " && chmod 755 " .. q(dir))
    if not ok then self:stop(); error("chown postgres failed (is postgresql-15 installed?): " .. out) end
  end
  local data = dir .. "/data"
  ok, out = sh(as_owner(dir, q(bin("initdb")) .. " -D " .. q(data) ..
                        " -A trust -U luarun --no-sync -E UTF8 --locale=C"))
  if not ok then self:stop(); error("initdb failed:\n" .. out) end
  -- `exec` in a background subshell: postgres (or runuser, which waits for it) detaches.
  ok, out = sh(as_owner(dir, q(bin("postgres")) .. " -D " .. q(data) .. " -k " .. q(dir) ..
               " -c listen_addresses= -c fsync=off -c synchronous_commit=off" ..
               " -c full_page_writes=off -c max_connections=200") ..
               " >" .. q(dir .. "/log") .. " 2>&1 </dev/null &")
  if not ok then self:stop(); error("could not run postgres: " .. out) end
  -- The postmaster's own pid (not runuser's) is the first line of postmaster.pid.
  self.pg_pid = poll(function()
    local s = read_file(data .. "/postmaster.pid")
    return s and s:match("^(%d+)\n")
  end, 20)
  local ready = self.pg_pid and poll(function()
    return (sh(q(bin("pg_isready")) .. " -q -h " .. q(dir) .. " -U luarun -d postgres"))
  end, 20)
  if not ready then
    local log = read_file(dir .. "/log") or ""
    self:stop()
    error("postgres did not start within 20 s:\n" .. log)
  end
  ok, out = sh(q(bin("createdb")) .. " -h " .. q(dir) .. " -U luarun -O luarun luarun")
  if not ok then self:stop(); error("createdb failed: " .. out) end
  -- The watchdog: stops the server should this process die without running __gc.
  local p = self.pg_pid
  ok, out = sh("(while kill -0 " .. own_pid() .. " && kill -0 " .. p .. "; do sleep 1; done;" ..
               " kill -INT " .. p .. "; for i in $(seq 100); do kill -0 " .. p .. " || break;" ..
               " sleep 0.1; done; kill -0 " .. p .. " && kill -KILL " .. p .. "; rm -rf " .. q(dir) ..
               ") >/dev/null 2>&1 </dev/null & echo $!")
  self.watchdog = ok and out:match("(%d+)")
  return self:url()
end

--- Stops the server by its pid and removes its directory. Fast shutdown (SIGINT, which
-- ends open sessions; SIGTERM's smart shutdown would wait for them), then immediate
-- shutdown (SIGQUIT), then SIGKILL, each given a few seconds.
function Server:stop()
  if self.watchdog then
    os.execute("kill " .. self.watchdog .. " 2>/dev/null")
    self.watchdog = nil
  end
  local pid = self.pg_pid
  if pid then
    for _, sig in ipairs{"INT", "QUIT", "KILL"} do
      if not alive(pid) then break end
      os.execute("kill -" .. sig .. " " .. pid .. " 2>/dev/null")
      poll(function() return not alive(pid) end, sig == "KILL" and 5 or 10)
    end
    self.pg_pid = nil
  end
  if self.dir then
    os.execute("rm -rf " .. q(self.dir))
    self.dir = nil
  end
end

--- Runs sql (one or more statements) with psql in database `db` (default luarun);
-- returns psql's output, unaligned and tuples only ("1\n" for "select 1"). Raises on
-- an error.
function Server:psql(sql, db)
  assert(self.dir, "the server is not started")
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(sql)
  f:close()
  local ok, out = sh(q(bin("psql")) .. " -X -q -A -t -v ON_ERROR_STOP=1 -h " .. q(self.dir) ..
                     " -U luarun -d " .. q(db or "luarun") .. " -f " .. q(tmp))
  os.remove(tmp)
  if not ok then error("psql failed: " .. out, 2) end
  return out
end

function Server:dir_path() return self.dir end

-- The process's shared server lives in the registry, as busted reloads this module
-- (and restores package.loaded) for each spec file.
local key = "spec.support.pgserver" -- not "luarun.": types_spec reads those as classes
local reg = debug.getregistry()
local shared = reg[key]
if not shared then
  shared = M.new()
  -- Stopped when the Lua state closes (os.exit(code, true) or the end of the script).
  shared.sentinel = setmetatable({}, {__gc = function() shared:stop() end})
  reg[key] = shared
end

function M.start() return shared:start() end
function M.stop() return shared:stop() end
function M.psql(sql, db) return shared:psql(sql, db) end
function M.pid() return shared:pid() end
function M.url() return shared:url() end
function M.dir() return shared:dir_path() end

return M
