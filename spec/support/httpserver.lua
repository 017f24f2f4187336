-- Starts and stops the local servers that spec/http_spec.lua and the examples' spec
-- use: spec/support/httpbin.py (plain or TLS) and nghttpd (HTTP/2). Every server binds
-- 127.0.0.1, writes its pid to a file and is stopped by that pid.
local util = require "support.util"
local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/support"
M.httpbin_py = here .. "/httpbin.py"
M.python = "/usr/bin/python3"

local q = util.quote

local read_file = util.read_file

local function wait_for(pred, seconds, what)
  local deadline = os.time() + seconds
  while os.time() <= deadline do
    local v = pred()
    if v then return v end
    os.execute("sleep 0.05")
  end
  error("timed out waiting for " .. what)
end
M.wait_for = wait_for

-- This process's pid, for the servers' --watch-pid.
local function own_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("a"):match("^(%d+)")
  f:close()
  return pid
end
M.own_pid = own_pid

local tmpdirs = {} -- made by M.tmpdir, removed by M.cleanup
-- A started server: its port, pid and base URL, and stop(), which kills it by pid.
local function server(port, pid, tls)
  local srv = {port = port, pid = pid,
               base = (tls and "https" or "http") .. "://127.0.0.1:" .. port}
  function srv.stop()
    if srv.pid then os.execute("kill " .. srv.pid .. " 2>/dev/null") end
    srv.pid = nil
  end
  return srv
end

--- A fresh temporary directory (removed by M.cleanup).
function M.tmpdir()
  local p = io.popen("mktemp -d /tmp/luarun-http.XXXXXX")
  local d = p:read("l")
  p:close()
  tmpdirs[#tmpdirs + 1] = d
  return d
end

--- Starts httpbin.py. opts.tls = {cert, key}. Returns {base=, port=, pid=, stop=}.
function M.httpbin(opts)
  opts = opts or {}
  local dir = M.tmpdir()
  local portf, pidf = dir .. "/port", dir .. "/pid"
  local cmd = q(M.python) .. " " .. q(M.httpbin_py) .. " --port-file " .. q(portf) ..
              " --pid-file " .. q(pidf)
  cmd = cmd .. " --watch-pid " .. own_pid()
  if opts.tls then cmd = cmd .. " --tls " .. q(opts.tls[1]) .. " " .. q(opts.tls[2]) end
  assert(os.execute(cmd .. " >/dev/null 2>&1 &"))
  local port = wait_for(function()
    local s = read_file(portf)
    return s and tonumber(s:match("%d+"))
  end, 15, "httpbin.py to start")
  local pid = wait_for(function()
    local s = read_file(pidf)
    return s and tonumber(s:match("%d+"))
  end, 5, "httpbin.py's pid")
  return server(port, pid, opts.tls)
end

--- Starts badserver.py, the misbehaving server of spec/http_faults_spec.lua.
-- opts.tls = {cert, key} adds its TLS ports. Returns {ports = {name = port}, base=,
-- pid=, stop=}, base being the plain port's URL.
function M.badserver(opts)
  opts = opts or {}
  local dir = M.tmpdir()
  local portf, pidf = dir .. "/ports", dir .. "/pid"
  local cmd = q(M.python) .. " " .. q(here .. "/badserver.py") .. " --port-file " .. q(portf) ..
              " --pid-file " .. q(pidf) .. " --watch-pid " .. own_pid()
  if opts.tls then cmd = cmd .. " --tls " .. q(opts.tls[1]) .. " " .. q(opts.tls[2]) end
  assert(os.execute(cmd .. " >/dev/null 2>&1 &"))
  -- The pid file is written first and the port file (atomically) once all listen.
  local ports = wait_for(function()
    local s = read_file(portf)
    if not s then return nil end
    local t = {}
    for name, port in s:gmatch("(%S+) (%d+)") do t[name] = tonumber(port) end
    return t
  end, 15, "badserver.py to start")
  local pid = tonumber(assert(read_file(pidf)):match("%d+"))
  local s = server(ports.plain, pid, false)
  s.ports = ports
  return s
end

--- A self-signed certificate for 127.0.0.1 and localhost: returns cert, key paths.
function M.self_signed()
  local dir = M.tmpdir()
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  assert(os.execute("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost" ..
    " -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " .. q(key) ..
    " -out " .. q(cert) .. " >/dev/null 2>&1"), "openssl failed")
  return cert, key
end

--- A free TCP port on 127.0.0.1 (for servers that cannot pick their own).
function M.free_port()
  local p = io.popen(q(M.python) .. [[ -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])']])
  local port = tonumber(p:read("l"))
  p:close()
  return port
end

--- Starts nghttpd serving docroot (h2c, or TLS with ALPN when cert and key given).
-- flags: more of nghttpd's options, shell syntax (such as --trailer).
function M.nghttpd(docroot, cert, key, flags)
  local dir = M.tmpdir()
  local pidf = dir .. "/pid"
  local port = M.free_port()
  local cmd = "nghttpd -a 127.0.0.1 -d " .. q(docroot) .. " " .. (flags or "") .. " "
  if cert then cmd = cmd .. port .. " " .. q(key) .. " " .. q(cert)
  else cmd = cmd .. "--no-tls " .. port end
  assert(os.execute(cmd .. " >/dev/null 2>&1 & echo $! > " .. q(pidf)))
  local pid = tonumber(read_file(pidf):match("%d+"))
  wait_for(function()
    return os.execute("bash -c \"exec 3<>/dev/tcp/127.0.0.1/" .. port .. "\" 2>/dev/null")
  end, 10, "nghttpd to listen")
  return server(port, pid, cert)
end

function M.cleanup()
  for _, d in ipairs(tmpdirs) do os.execute("rm -rf " .. q(d)) end
  tmpdirs = {}
end

--- Number of open descriptors of this process (pipes aside), and their listing.
function M.fd_count()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("a"):match("^(%d+)")
  f:close()
  local p = io.popen("ls -l /proc/" .. pid .. "/fd | tail -n +2")
  local s = p:read("a")
  p:close()
  -- Pipes are left out: popen's own pipe shows up with one end or two, depending
  -- on when ls reads the list.
  local n, kept = 0, {}
  for line in s:gmatch("[^\n]+") do
    if not line:find("-> pipe:", 1, true) then
      n = n + 1
      kept[#kept + 1] = line:match("%d+ %-> .*$") or line
    end
  end
  return n, table.concat(kept, "\n")
end

return M
