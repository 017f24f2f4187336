-- nginx serving a directory on 127.0.0.1, for the specs that need a real web server
-- (the crawler's: spec/examples_spec.lua). One process (`master_process off`), so it
-- runs the same as root and as anyone else (no worker switches to `nobody`, who could
-- not read a mktemp directory), in the foreground (`daemon off`), stopped by its pid.
--
--   local nginx = require "support.nginx"
--   local srv = nginx.start(root, {include = "locations.conf"})
--   srv.url          -- "http://127.0.0.1:PORT" (no trailing slash)
--   srv.pid, srv.dir -- the process and its directory (config, logs)
--   srv:log()        -- the access log: {{time =, status =, method =, uri =, agent =,
--                    --                    cookie = the Cookie header or nil}, ...}
--   srv:stop()
--
-- `include` is a file of nginx directives for the server block (a site's redirects).
-- In served text/html, "@ORIGIN@" becomes the server's own "http://127.0.0.1:PORT" (as
-- the request named it) and "@PORT@" its port, so that a generated site can hold
-- absolute links to itself. The access log has one line per request with $msec, the
-- request's time in milliseconds, so that a spec can check how requests were spaced.
-- A watchdog shell stops the server should the busted process die first.
local util = require "support.util"

local M = {}
local q = util.quote
local read_file = util.read_file

M.bin = "/usr/sbin/nginx"

local sh = require("support.util").sh_clean -- without the ASan runtime

local alive = require("support.util").alive

local function own_pid()
  return assert(read_file("/proc/self/stat")):match("^(%d+)")
end

local function config(dir, root, port, include)
  local tmp = dir .. "/tmp"
  return ([[
daemon off;
master_process off;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 1024; }
http {
  types { text/html html; text/plain txt; text/css css; application/pdf pdf; }
  default_type application/octet-stream;
  log_format timed '$msec $status $request_method "$request_uri" "$http_user_agent" "$http_cookie"';
  access_log %s/access.log timed;
  client_body_temp_path %s/body;
  proxy_temp_path %s/proxy;
  fastcgi_temp_path %s/fastcgi;
  uwsgi_temp_path %s/uwsgi;
  scgi_temp_path %s/scgi;
  keepalive_requests 100000;
  absolute_redirect off;
  server {
    listen 127.0.0.1:%d;
    root %s;
    index index.html;
    sub_filter '@ORIGIN@' '$scheme://$http_host';
    sub_filter '@PORT@' '$server_port';
    sub_filter_once off;
    %s
  }
}
]]):format(dir, dir, dir, tmp, tmp, tmp, tmp, tmp, port, root,
           include and ("include " .. include .. ";") or "")
end

local Server = {}
Server.__index = Server

--- The access log as a list of {time = seconds (float), status =, method =, uri =, agent =,
-- cookie =}.
function Server:log()
  local out = {}
  for line in (read_file(self.dir .. "/access.log") or ""):gmatch("[^\n]+") do
    local t, status, method, uri, agent, cookie =
      line:match('^(%S+) (%d+) (%S+) "([^"]*)" "([^"]*)" "([^"]*)"$')
    if t then
      out[#out + 1] = {time = tonumber(t), status = tonumber(status), method = method,
                       uri = uri, agent = agent, cookie = cookie ~= "-" and cookie or nil}
    end
  end
  return out
end

--- Stops the server by its pid (TERM, then KILL after 5 s) and removes its directory.
function Server:stop()
  if self.watchdog then
    os.execute("kill " .. self.watchdog .. " 2>/dev/null")
    self.watchdog = nil
  end
  local pid = self.pid
  if pid then
    for _, sig in ipairs({"TERM", "KILL"}) do
      if not alive(pid) then break end
      os.execute("kill -" .. sig .. " " .. pid .. " 2>/dev/null")
      for _ = 1, 50 do
        if not alive(pid) then break end
        os.execute("sleep 0.1")
      end
    end
    self.pid = nil
  end
  if self.dir then
    os.execute("rm -rf " .. q(self.dir))
    self.dir = nil
  end
end

-- One attempt on one port: returns the pid once nginx listens, or nil and its error log.
local function try_port(dir, root, port, include)
  util.put(dir .. "/nginx.conf", config(dir, root, port, include))
  os.remove(dir .. "/nginx.pid")
  os.remove(dir .. "/error.log")
  -- exec in a background shell: $! is nginx itself. -e catches errors before the
  -- config's error_log applies.
  local ok, out = sh("sh -c " .. q("exec " .. q(M.bin) .. " -p " .. q(dir) .. " -c " ..
                     q(dir .. "/nginx.conf") .. " -e " .. q(dir .. "/error.log")) ..
                     " </dev/null >/dev/null 2>&1 & echo $!")
  local pid = ok and out:match("(%d+)")
  assert(pid, "could not run nginx: " .. out)
  -- nginx writes its pid file after it has bound its listening socket.
  for _ = 1, 100 do
    if not alive(pid) then break end
    if read_file(dir .. "/nginx.pid") then return pid end
    os.execute("sleep 0.05")
  end
  if alive(pid) then os.execute("kill -KILL " .. pid) end
  return nil, read_file(dir .. "/error.log") or "(no error log)"
end

--- Starts nginx serving the directory `root` on 127.0.0.1 and a free port.
-- @param opts table|nil: {include = path of a file of server-block directives}
-- @return the server handle (see the top of this file); raises if nginx cannot start
function M.start(root, opts)
  opts = opts or {}
  local ok, out = sh("mktemp -d /tmp/luarun-nginx.XXXXXX")
  local dir = assert(ok and out:match("^(%S+)"), "mktemp failed: " .. out)
  assert(os.execute("mkdir " .. q(dir .. "/tmp")))
  -- A port picked at random: nginx cannot be asked for port 0 and tell which it got.
  -- Another process may hold it, so a failure to bind means trying the next.
  math.randomseed(os.time() + tonumber(own_pid()))
  local pid, err
  for _ = 1, 20 do
    local port = math.random(20000, 59999)
    pid, err = try_port(dir, root, port, opts.include)
    if pid then
      local srv = setmetatable({pid = pid, dir = dir, port = port,
                                url = "http://127.0.0.1:" .. port}, Server)
      -- The watchdog: stops nginx should this process die without calling stop().
      ok, out = sh("(while kill -0 " .. own_pid() .. " && kill -0 " .. pid .. "; do sleep 1; done;" ..
                   " kill -TERM " .. pid .. "; for i in $(seq 50); do kill -0 " .. pid .. " || break; sleep 0.1;" ..
                   " done; kill -0 " .. pid .. " && kill -KILL " .. pid .. "; rm -rf " .. q(dir) ..
                   ") >/dev/null 2>&1 </dev/null & echo $!")
      srv.watchdog = ok and out:match("(%d+)")
      return srv
    end
    if not err:find("Address already in use", 1, true) then break end
  end
  os.execute("rm -rf " .. q(dir))
  error("nginx did not start: " .. tostring(err))
end

return M
