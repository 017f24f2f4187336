-- Runs luarun HTTP servers (http.serve) as child processes for the server specs, and
-- the raw-socket clients of rawclient.py against them.
--
-- M.start(body) writes a script: a prelude (lr, http, json as locals), body (which sets
-- the global `server` to what http.serve returned), then prints server.url as the first
-- line of stdout and waits in server:wait(). The child runs the binary under test
-- (util.bin: under the sanitizer pass, the leak-checking wrapper, which execs, so the
-- pid is luarun's). It binds 127.0.0.1 on a port it picks and is stopped by its pid.
local util = require "support.util"
local json = require "luarun.json"

local M = {}
local q = util.quote
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/support"
M.python = "/usr/bin/python3"
M.rawclient = here .. "/rawclient.py"
-- Commands run without the ASan runtime the sanitizer pass preloads into busted's
-- process (curl under it can hang in its resolver thread).
M.py = "env -u LD_PRELOAD " .. q(M.python)
M.curl_cmd = "env -u LD_PRELOAD curl"

local PRELUDE = [[
local lr = require "luarun"
local http = require "luarun.http"
local json = require "luarun.json"
local function say(...) io.stdout:write(table.concat({...}, " "), "\n") io.stdout:flush() end
]]
local EPILOGUE = [[

io.stdout:write(server.url, "\n")
io.stdout:flush()
server:wait()
say("server closed")
]]

local read_file = util.read_file

local function sleep(s) os.execute("sleep " .. s) end

local function alive(pid)
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

--- Starts a server script. opts.env: VAR=value assignments (shell syntax) for it;
-- opts.small_quarantine: under the sanitizer pass, a 4 MB ASan quarantine (for RSS bounds).
-- Returns {url, port, pid, out(), err(), lines(), rss_kb(), stop([signal]) -> rc, err}.
function M.start(body, opts)
  opts = opts or {}
  local base = os.tmpname()
  local script, out, err, pidf, rcf = base .. ".lua", base .. ".out", base .. ".err",
                                      base .. ".pid", base .. ".rc"
  util.put(script, PRELUDE .. body .. EPILOGUE)
  local bin = q(util.bin)
  local child_asan = os.getenv("LUARUN_CHILD_ASAN_OPTIONS")
  if opts.small_quarantine and child_asan then
    -- ASan keeps freed blocks (256 MB by default) before reusing them, which an RSS
    -- bound cannot tell from a leak: the executable itself, as util's wrapper runs
    -- it, with a 4 MB quarantine (as resources_spec does).
    bin = "env -u LD_PRELOAD ASAN_OPTIONS=" .. q(child_asan .. ":quarantine_size_mb=4") .. " " ..
          q(util.exe)
  end
  local inner = (opts.env or "") .. " " .. bin .. " " .. q(script) .. " >" .. q(out) ..
                " 2>" .. q(err) .. " & echo $! >" .. q(pidf) .. "; wait $!; echo $? >" .. q(rcf)
  assert(os.execute("sh -c " .. q(inner) .. " >/dev/null 2>&1 </dev/null &"))
  local s = {script = script}
  local deadline = os.time() + 20
  while os.time() <= deadline do
    local o = read_file(out) or ""
    s.url = o:match("^(http://[^\n]+)\n")
    local rc = read_file(rcf)
    if s.url or (rc and rc:match("%d")) then break end
    sleep(0.05)
  end
  s.pid = tonumber((read_file(pidf) or ""):match("%d+"))
  function s.out() return read_file(out) or "" end
  function s.err() return read_file(err) or "" end
  function s.lines()
    local t = {}
    for l in s.out():gmatch("[^\n]+") do t[#t + 1] = l end
    return t
  end
  function s.alive() return s.pid ~= nil and alive(s.pid) and not read_file(rcf) end
  function s.rss_kb()
    local st = read_file("/proc/" .. s.pid .. "/status") or ""
    return tonumber(st:match("VmRSS:%s*(%d+) kB"))
  end
  -- The exit status once the process has ended (waits up to `seconds`), or nil.
  function s.wait_exit(seconds)
    local t_end = os.time() + (seconds or 10)
    repeat
      local rc = read_file(rcf)
      if rc and rc:match("%d") then return tonumber(rc:match("%d+")) end
      sleep(0.05)
    until os.time() > t_end
    return nil
  end
  -- Signals the server (SIGINT by default: luarun cancels its tasks and exits 130),
  -- waits for it to end (SIGKILL after 15 s) and returns its exit status and stderr.
  function s.stop(sig)
    if s.stopped then return s.rc, s.err() end
    s.stopped = true
    if s.pid then os.execute("kill -" .. (sig or "INT") .. " " .. s.pid .. " 2>/dev/null") end
    s.rc = s.wait_exit(15)
    if s.rc == nil and s.pid then
      os.execute("kill -KILL " .. s.pid .. " 2>/dev/null")
      s.rc = s.wait_exit(5) or -1
    end
    local e = s.err()
    for _, p in ipairs({script, out, err, pidf, rcf}) do os.remove(p) end
    return s.rc, e
  end
  if not s.url then
    local e = s.err()
    s.stop("KILL")
    error("the server did not start:\n" .. e)
  end
  s.port = tonumber(s.url:match(":(%d+)$"))
  return s
end

-- rawclient.py's strings are bytes as latin-1 text, which JSON carries as code points:
-- back to bytes; JSON null back to nil.
local function unlatin(v)
  if type(v) == "string" then
    if not v:find("[\128-\255]") then return v end
    local t = {}
    for _, c in utf8.codes(v) do t[#t + 1] = string.char(c) end
    return table.concat(t)
  elseif type(v) == "table" then
    local out = {}
    for k, x in pairs(v) do
      if x ~= json.null then out[unlatin(k)] = unlatin(x) end
    end
    return out
  end
  return v
end

--- Runs rawclient.py MODE against port with arg (a table, sent as JSON); returns its
-- decoded result (raises with its stderr if it failed).
function M.raw(mode, port, arg, timeout)
  local code, out, err = util.sh("timeout " .. (timeout or 120) .. " " .. M.py .. " " ..
                                 q(M.rawclient) .. " " .. mode .. " " .. port,
                                 json.encode(arg == nil and json.null or arg))
  assert(code == 0, "rawclient " .. mode .. " failed (" .. tostring(code) .. "):\n" .. err .. out)
  return unlatin(json.decode(out))
end

--- One raw exchange on a fresh connection: parts (a string or a list of strings)
-- written in turn; opts as rawclient's cases (gap, shut, timeout, responses, head).
function M.exchange(port, parts, opts)
  local case = {}
  for k, v in pairs(opts or {}) do case[k] = v end
  case.send = type(parts) == "string" and {parts} or parts
  return M.raw("cases", port, {case})[1]
end

--- curl with arguments (shell syntax); returns exit code, stdout, stderr.
function M.curl(args)
  return util.sh(M.curl_cmd .. " -sS --max-time 30 " .. args)
end

--- A GET on a fresh connection (Connection: close); returns status, body, headers.
function M.get(port, target, headers)
  local req = "GET " .. target .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" ..
              (headers or "") .. "\r\n"
  local r = M.exchange(port, req, {timeout = 10})
  local res = r.responses[1]
  if not res then return nil, r end
  return res.status, res.body, res.headers, r
end

return M
