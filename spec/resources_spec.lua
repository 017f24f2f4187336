-- Resources held after many operations (issue 23): for each kind of operation, a child
-- luarun process runs a warm-up, counts its open descriptors, RSS, Lua heap and live
-- tasks/handles, runs 10,000 more operations of that kind (fewer where each one costs a
-- connection or a wait, see KINDS), counts again and prints both. The spec asserts the
-- descriptors and live objects are unchanged and the memory growth under a bound. A
-- leak of descriptors shows at once; a leak of memory shows once it passes the bound
-- (about 200 bytes an operation over 10,000 operations in the plain build); under the
-- sanitizer pass LeakSanitizer also checks each child at exit.
local util = require "support.util"
local srv = require "support.httpserver"

local q = util.quote

-- The sanitizer pass (.ci/test sets LUARUN_CHILD_ASAN_OPTIONS for it).
local child_asan = os.getenv("LUARUN_CHILD_ASAN_OPTIONS")

-- Bounds, from three runs of this spec in each build (LUARUN_RESOURCES_VERBOSE=1 prints
-- every child's figures on stderr).
-- Plain build: RSS grew by 0-244 kB over the counted operations of each kind after the
-- warm-up (the most: the 200 HTTP timeouts), the Lua heap by at most 1 kB; 100,000
-- operations of each kind (5,000 fresh clients) grew no more. 2 MB leaves ~8x margin for allocator noise and
-- still catches a leak of 200 bytes an operation.
-- Sanitizer pass: ASan keeps freed blocks in a quarantine (256 MB by default) before
-- reusing them, so without any leak RSS grew by up to 207 MB (open+read+close). The
-- children here run with a 4 MB quarantine (quarantine_size_mb=4 added to the leak
-- checker's options) and a warm-up 5 times longer, which fills it; RSS then grew by at
-- most 716 kB, but for run_in_pool: 3.76 MB in every run. That one levels off (8.3 MB
-- at 80,000 calls and at 160,000) and the plain build stays flat at 100,000, so it is
-- ASan's allocator (likely its per-thread caches: pool results are made on a worker
-- and freed on the loop thread), not a leak. 8 MB: twice that. LeakSanitizer checks
-- each child at exit for any block lost for good.
local RSS_BOUND_KB = child_asan and 8192 or 2048
local WARM_FACTOR = child_asan and 5 or 1
local HEAP_BOUND_KB = 64 -- collectgarbage("count") after a full collection

-- The child: arg = kind, count, warm-up count, httpbin base URL, a closed port.
local CHILD = [==[
local lr = require "luarun"
local fs = require "luarun.fs"
local json = require "luarun.json"
local kind, n, warm, base, closed_port = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4], arg[5]

local function check(cond, what)
  if not cond then error(kind .. ": " .. tostring(what), 2) end
end

-- Open descriptors (the count includes the one readdir holds while it reads).
local function fds() return #assert(fs.readdir("/proc/self/fd")) end

local function rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return assert(tonumber(s:match("VmRSS:%s*(%d+) kB")))
end

local http, client, q, dir, server, served
local data = string.rep("0123456789abcdef", 256) -- 4 KiB
local ops, i = {}, 0

function ops.sleep0() lr.sleep(0) end

function ops.spawn_wait()
  local t = lr.spawn(function(x) lr.sleep(0) return x + 1 end, 1)
  check(t:wait() == 2, "spawn/wait result")
end

function ops.gather()
  local a, b = lr.gather(function() lr.sleep(0) return 1 end, function() return 2 end)
  check(a == 1 and b == 2, "gather results")
end

-- A timeout that fires cancels its child's sleep; then a task cancelled directly.
function ops.cancel()
  local r, err = lr.timeout(0, lr.sleep, 10)
  check(r == nil and err.kind == "timeout", "lr.timeout did not fire")
  local t = lr.spawn(lr.sleep, 10)
  lr.sleep(0)
  t:cancel()
  local ok, e = pcall(t.wait, t)
  check(not ok and e.kind == "cancelled", "task:cancel")
end

-- The consumer waits in get (handed the first item), the producer in put (maxsize 1).
function ops.queue()
  local got
  local c = lr.spawn(function() got = q:get() end)
  lr.sleep(0)
  q:put("x")
  q:put("y")
  c:wait()
  check(got == "x" and q:get() == "y" and #q == 0, "queue order")
end

local doc = {name = "luarun", list = {1, 2.5, "three", true, json.null},
             nested = {a = {b = {c = "d"}}}, text = data}
function ops.json()
  local t = json.decode(json.encode(doc))
  check(t.nested.a.b.c == "d" and t.list[2] == 2.5 and t.text == data, "json round trip")
end

-- Half the writes create their file (the one before was removed), half truncate it.
function ops.write_read()
  i = i + 1
  local p = dir .. "/w" .. (i % 8)
  check(fs.write_file(p, data), "write_file")
  check(fs.read_file(p) == data, "read_file")
  if i % 2 == 0 then check(fs.remove(p), "remove") end
end

function ops.open_read()
  local f = assert(fs.open(dir .. "/r"))
  check(f:read(4096) == data, "file:read")
  f:close()
end

function ops.stat() check(assert(fs.stat(dir .. "/r")).size == #data, "stat size") end

function ops.readdir() check(#assert(fs.readdir(dir)) == 4, "readdir entries") end

function ops.pool()
  check(lr.run_in_pool(function(x) return x * 2 end, 21) == 42, "run_in_pool result")
end

function ops.http_keepalive()
  local res = assert(client:get(base .. "/get"))
  check(res.status == 200, res.status)
end

function ops.http_fresh()
  local c <close> = http.client()
  local res = assert(c:get(base .. "/get"))
  check(res.status == 200, res.status)
end

function ops.http_refused()
  local res, err = client:get("http://127.0.0.1:" .. closed_port .. "/")
  check(res == nil and err.kind == "connect", err)
end

-- The server answers after 1 s; the request gives up after 0.05 s.
function ops.http_timeout()
  local res, err = client:get(base .. "/delay/1", {timeout = 0.05})
  check(res == nil and err.kind == "timeout", err)
end

-- The same against luarun's own server (http.serve in this process): both ends' fds,
-- tasks and memory are counted.
function ops.serve_keepalive()
  local res = assert(client:get(served .. "/r?x=1"))
  check(res.status == 200 and res.body == "served 1", res.status)
end

function ops.serve_fresh()
  local c <close> = http.client()
  local res = assert(c:post(served .. "/r?x=2", {body = data}))
  check(res.status == 200 and res.body == "served 2 " .. #data, res.status)
end

local op = assert(ops[kind], "unknown kind")
-- Timeouts run 20 at a time (each waits 0.05 s); the rest one after another.
local batch = kind == "http_timeout" and 20 or 1

local function run_ops(count)
  if batch == 1 then
    for _ = 1, count do op() end
  else
    local fns = {}
    for j = 1, batch do fns[j] = op end
    for _ = 1, count // batch do lr.gather(fns) end
  end
end

-- Everything that should not grow: descriptors, RSS, Lua heap, tasks, handles, and
-- the HTTP client's requests and sockets.
local function snapshot()
  if server then lr.sleep(0.1) end -- the server sees the last clients' closes
  collectgarbage()
  collectgarbage()
  local st = lr.stats()
  local s = {fds = fds(), rss = rss_kb(), heap = collectgarbage("count"),
             tasks = st.tasks, sleeping = st.sleeping, handles = st.handles,
             requests = 0, sockets = 0}
  if client then
    local cs = client:stats()
    s.requests, s.sockets = cs.requests, cs.sockets
  end
  return s
end

if kind:find("^http_") or kind:find("^serve_") then
  http = require "luarun.http"
  client = http.client()
  if kind:find("^serve_") then
    server = http.serve({}, function(req)
      if req.method == "POST" then return "served " .. req.query.x .. " " .. #req:body() end
      return "served " .. req.query.x
    end)
    served = server.url
  end
elseif kind == "queue" then
  q = lr.Queue(1)
elseif kind == "write_read" or kind == "open_read" or kind == "stat" or kind == "readdir" then
  dir = assert(fs.mkdtemp("/tmp/luarun-resources-"))
  print("dir " .. dir) -- the spec removes it if this child dies
  for _, name in ipairs({"r", "a", "b", "c"}) do
    assert(fs.write_file(dir .. "/" .. name, data))
  end
end

local t0 = lr.now()
run_ops(warm)
local before = snapshot()
local t1 = lr.now()
run_ops(n)
local t2 = lr.now()
local after = snapshot()
if client then client:close() end
if server then
  server:close()
  server:wait()
end
if dir then
  for _, e in ipairs(assert(fs.readdir(dir))) do assert(fs.remove(dir .. "/" .. e.name)) end
  assert(fs.rmdir(dir))
end
for _, s in ipairs({before, after}) do
  print(string.format("fds=%d rss=%d heap=%.1f tasks=%d sleeping=%d handles=%d requests=%d sockets=%d",
                      s.fds, s.rss, s.heap, s.tasks, s.sleeping, s.handles, s.requests, s.sockets))
end
print(string.format("time warm=%.3f ops=%.3f", t1 - t0, t2 - t1))
]==]

-- Writes the child script once; returns its path.
local child_path
local function child_script()
  if not child_path then
    child_path = os.tmpname() .. ".lua"
    local f = assert(io.open(child_path, "wb"))
    f:write(CHILD)
    f:close()
  end
  return child_path
end

-- The command that runs luarun: the binary under test, or under the sanitizer pass the
-- executable itself as util's leak-checking wrapper runs it (no preloaded ASan runtime,
-- the child ASan options), with the quarantine capped as explained above.
local function luarun_cmd()
  if child_asan then
    return "env -u LD_PRELOAD ASAN_OPTIONS=" .. q(child_asan .. ":quarantine_size_mb=4") ..
           " " .. q(util.exe)
  end
  return q(util.bin)
end

local function parse(line)
  local s = {}
  for k, v in line:gmatch("(%a+)=(%-?[%d.]+)") do s[k] = tonumber(v) end
  return s
end

-- Runs one kind in a child; returns before, after, the timing line and the output.
local function measure(kind, n, warm, base, closed_port)
  local code, out, err = util.sh("timeout 120 " .. luarun_cmd() .. " " .. q(child_script()) ..
                                 " " .. kind .. " " .. n .. " " .. warm .. " " ..
                                 q(base) .. " " .. closed_port)
  local dir = out:match("^dir (%S+)")
  if dir and dir:find("^/tmp/luarun%-resources%-") then os.execute("rm -rf " .. q(dir)) end
  assert.are.equal(0, code, kind .. " child failed:\n" .. out .. err)
  local lines = {}
  for line in out:gmatch("[^\n]+") do
    if line:find("^fds=") then lines[#lines + 1] = line end
  end
  assert.are.equal(2, #lines, "child output:\n" .. out .. err)
  local timing = out:match("time [^\n]*")
  if os.getenv("LUARUN_RESOURCES_VERBOSE") then
    io.stderr:write(string.format("%-15s n=%-6d %s\n%-24s%s\n%-24s%s\n", kind, n, timing,
                                  "", lines[1], "", lines[2]))
  end
  return parse(lines[1]), parse(lines[2]), out .. err
end

-- kind, operations, warm-up operations (times WARM_FACTOR). The whole file takes ~6 s
-- in the plain build and ~15 s in the sanitizer pass, so every kind does its full
-- count in both.
local KINDS = {
  {"sleep0", 10000, 1000, "lr.sleep(0)"},
  {"spawn_wait", 10000, 1000, "lr.spawn + task:wait"},
  {"gather", 10000, 1000, "lr.gather of two functions"},
  {"cancel", 10000, 1000, "lr.timeout that fires, and task:cancel"},
  {"queue", 10000, 1000, "Queue put/get with both sides waiting"},
  {"json", 10000, 1000, "json.encode + json.decode"},
  {"write_read", 10000, 1000, "fs.write_file + fs.read_file (half of them new files)"},
  {"open_read", 10000, 1000, "fs.open + file:read + file:close"},
  {"stat", 10000, 1000, "fs.stat"},
  {"readdir", 10000, 1000, "fs.readdir"},
  {"pool", 10000, 1000, "lr.run_in_pool"},
  {"http_keepalive", 10000, 1000, "http GET on one keep-alive client"},
  -- Each of these opens (and leaves in TIME_WAIT) a connection of its own.
  {"http_fresh", 500, 100, "http GET with a fresh client each, closed"},
  {"http_refused", 10000, 1000, "http GET refused (closed port)"},
  -- Each of these holds a server thread for 1 s; 20 run at a time, 10 batches a second.
  {"http_timeout", 200, 40, "http GET timing out (0.05 s against /delay/1)"},
  {"serve_keepalive", 10000, 1000, "http.serve: GET from one keep-alive client"},
  -- Each of these is a connection of its own at both ends, with a 4 KiB body.
  {"serve_fresh", 500, 100, "http.serve: POST from a fresh client each, closed"},
}

describe("resources after many operations", function()
  local bin
  -- Port 1 (tcpmux): only root may bind it and nothing serves it, so connecting is
  -- refused; an ephemeral port released by free_port() could be taken meanwhile.
  local closed_port = 1

  setup(function()
    bin = srv.httpbin()
  end)

  teardown(function()
    bin.stop()
    srv.cleanup()
    if child_path then os.remove(child_path) end
  end)

  for _, k in ipairs(KINDS) do
    local kind, n, warm, what = k[1], k[2], k[3] * WARM_FACTOR, k[4]
    it(what .. ": " .. n .. " operations leave fds, tasks and memory as they were", function()
      local b, a, out = measure(kind, n, warm, bin.base, closed_port)
      local msg = kind .. ":\n" .. out
      assert.are.equal(b.fds, a.fds, "open fds " .. msg)
      assert.are.equal(b.tasks, a.tasks, "tasks " .. msg)
      assert.are.equal(0, a.sleeping, "sleeping " .. msg)
      assert.are.equal(b.handles, a.handles, "handles " .. msg)
      assert.are.equal(0, a.requests, "requests " .. msg)
      assert.is_true(a.sockets <= 20, "sockets " .. msg) -- at most one per request at once
      assert.is_true(a.rss - b.rss <= RSS_BOUND_KB,
                     "RSS grew by " .. (a.rss - b.rss) .. " kB (bound " .. RSS_BOUND_KB ..
                     " kB) " .. msg)
      assert.is_true(a.heap - b.heap <= HEAP_BOUND_KB,
                     "Lua heap grew by " .. (a.heap - b.heap) .. " kB " .. msg)
    end)
  end
end)
