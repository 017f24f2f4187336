-- Starts and stops spec/support/wsserver.py (Python's websockets package) for
-- spec/websocket_spec.lua. It binds 127.0.0.1, writes its pid to a file and is
-- stopped by that pid.
local util = require "support.util"
local httpserver = require "support.httpserver"
local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/support"

local q = util.quote

local read_file = util.read_file

local own_pid = httpserver.own_pid

--- Starts wsserver.py; opts.tls = {cert, key} adds its TLS port. Returns {ports =
-- {plain =, raw =, tls =}, pid =, stop =}.
function M.start(opts)
  opts = opts or {}
  local dir = httpserver.tmpdir()
  local portf, pidf = dir .. "/ports", dir .. "/pid"
  local cmd = q(httpserver.python) .. " " .. q(here .. "/wsserver.py") .. " --port-file " ..
              q(portf) .. " --pid-file " .. q(pidf) .. " --watch-pid " .. own_pid()
  if opts.tls then cmd = cmd .. " --tls " .. q(opts.tls[1]) .. " " .. q(opts.tls[2]) end
  assert(os.execute(cmd .. " >/dev/null 2>&1 &"))
  -- The port file is written (atomically) once every server listens.
  local ports = httpserver.wait_for(function()
    local s = read_file(portf)
    if not s then return nil end
    local found = {}
    for name, port in s:gmatch("(%S+) (%d+)") do found[name] = tonumber(port) end
    return found
  end, 15, "wsserver.py to listen")
  local srv = {ports = ports, pid = tonumber(assert(read_file(pidf)):match("%d+"))}
  function srv.stop()
    if srv.pid then os.execute("kill " .. srv.pid .. " 2>/dev/null") end
    srv.pid = nil
  end
  return srv
end

return M
