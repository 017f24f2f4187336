-- Out of memory, one allocation at a time (issue 23), as curl's torture tests do: a
-- short script runs once per allocation it makes, with that allocation failing
-- (test/failmalloc.c, built as failmalloc.so and preloaded). Every run must either
-- finish or exit 1 with a message that says memory ran out: no crash, no sanitizer
-- report, no hang, no misleading error.
--
-- libuv aborts by design when some of its own allocations fail (the watcher array of
-- uv__io_start, the signal pipe's pthread_atfork, the threads of its pool): there it
-- has no way to report an error. A run that dies of SIGABRT is excused only when the
-- failed allocation was made by libuv, as the shim's backtrace of it shows.
local util = require "support.util"

local build = os.getenv("LUARUN_BUILD") or "./build"
local shim = build .. "/failmalloc.so"
local child_asan = os.getenv("LUARUN_CHILD_ASAN_OPTIONS")
local q = util.quote

-- The script: the core (spawn, sleep, gather, timeout, a Queue), luarun.json,
-- luarun.fs and one run_in_pool call. Each assert passes on the error it checks, so
-- an out-of-memory error inside a call shows in the message.
local SCRIPT = [[
local lr = require "luarun"
local json = require "luarun.json"
local fs = require "luarun.fs"
local dir = assert(arg[1], "usage: script.lua DIR")

local q = lr.Queue(2)
local producer = lr.spawn(function()
  for i = 1, 4 do q:put({i = i, name = "item number " .. i}) end
  q:close()
end)
local got = {}
while true do
  local v, err = q:get()
  if v == nil then
    assert(err.kind == "closed", tostring(err))
    break
  end
  got[#got + 1] = v
end
producer:wait()
local a, b = lr.gather(function() lr.sleep(0.001) return 1 end,
                       function() lr.sleep(0) return 2 end)
assert(a == 1 and b == 2, "gather")
local r, err = lr.timeout(0.001, lr.sleep, 10)
assert(r == nil and err.kind == "timeout", tostring(err))
local text = json.encode({items = got, pi = 0.1, ok = true, none = json.null,
                          list = json.array({})})
local back = json.decode(text)
assert(#back.items == 4 and back.items[4].name == "item number 4", "decoded wrong")
local path = dir .. "/data.json"
assert(fs.write_file(path, text))
local data = assert(fs.read_file(path))
assert(data == text, "read_file gave back other bytes")
local function total(t)
  local s = 0
  for _, x in ipairs(t) do s = s + x end
  return s
end
local ok, sum = pcall(lr.run_in_pool, total, {1, 2, 3})
if not ok then
  -- Out of memory in the first call: a second call works or raises again, at once.
  assert(tostring(sum):find("memory"), tostring(sum))
  sum = lr.run_in_pool(total, {1, 2, 3})
end
assert(sum == 6, "run_in_pool")
print("ok")
]]

-- A server and its clients in one process (issue 14): http.serve with a router-less
-- handler, a POST through libcurl, a WebSocket echo through luarun's own client, and
-- a graceful close. An allocation that fails on the server's side may end a
-- connection instead of raising: the client then sees an error of another kind
-- (closed, protocol), which is right, so the script notes it and goes on; what must
-- never happen is a crash, a hang or a sanitizer report.
local SERVER = [[
local lr = require "luarun"
local http = require "luarun.http"
local s = assert(http.serve({port = 0}, function(req)
  if req.path == "/ws" then
    local ws = req:websocket()
    if not ws then return 400 end
    for m in ws:messages() do ws:send(m) end
    return
  end
  return {json = {path = req.path, n = #(req:body() or "")}}
end))
local res, err = http.post(s.url .. "/x", {body = "hello", timeout = 5})
if res then
  assert(res.status == 200 or res.status == 500 or res.status == 503, res.status)
else
  io.stderr:write("post: ", tostring(err), "\n")
end
local ws, werr = http.websocket("ws://127.0.0.1:" .. s.port .. "/ws", {timeout = 5})
if ws then
  if ws:send("ping") then
    local m = ws:receive()
    assert(m == nil or m == "ping", m)
  end
  ws:close()
else
  io.stderr:write("websocket: ", tostring(werr), "\n")
end
s:close(1)
s:wait()
print("ok")
]]

-- Databases (issue 15): SQLite on its thread (a file, a transaction, rows, a query)
-- and PostgreSQL (statements pipelined from 10 tasks, COPY, streamed rows, a cancelled
-- statement) against the specs' server, whose URL comes in LUARUN_PG_URL.
local DB = [[
local lr = require "luarun"
local db = require "luarun.db"
local dir = assert(arg[1], "usage: script.lua DIR")
local s = assert(db.open("sqlite:" .. dir .. "/t.db"))
assert(s:exec("create table t (id integer primary key, v text)"))
assert(s:transaction(function(c)
  for i = 1, 20 do assert(c:exec("insert into t (v) values (?)", "v" .. i)) end
  return true
end))
local n = 0
for _ in s:rows("select id, v from t") do n = n + 1 end
assert(n == 20, "sqlite rows")
assert(#assert(s:query("select * from t where id > ?", 10)) == 10, "sqlite query")
s:close()
local pg = assert(db.open(assert(os.getenv("LUARUN_PG_URL"))))
local fns = {}
for i = 1, 10 do
  fns[i] = function() return assert(pg:query("select $1::int + 1 as x, '{1,2}'::int[] as a", i))[1].x end
end
assert(lr.gather(fns)[10] == 11, "pipelined")
assert(pg:exec("create temp table c (id int, name text)"))
assert(assert(pg:copy_in("copy c (id, name) from stdin", {{1, "a"}, {2, "b"}})) == 2, "copy")
n = 0
for _ in pg:rows("select g from generate_series(1, 600) g") do n = n + 1 end
assert(n == 600, "pg rows")
local t = lr.spawn(function() return pg:query("select pg_sleep(5)") end)
lr.sleep(0.01)
t:cancel()
assert(not pcall(t.wait, t), "cancelled")
assert(assert(pg:query("select 7 as x"))[1].x == 7, "after the cancel")
pg:close()
print("ok")
]]

-- The module form: the same script as lr.run's function in stock lua5.4, which loads
-- luarun.so with require (LUA_CPATH points at the build).
local MODULE = [[
local lr = require "luarun"
local body = assert(loadfile((arg[0]:gsub("module%.lua$", "script.lua"))))
lr.run(body, ...)
]]

-- Runs one N (a child of this shell script, in its own directory): DIR/N.rc holds
-- the exit status, DIR/N.out and DIR/N.err the output, DIR/N.tr the backtrace of the
-- failed allocation. $LIMIT bounds a run; 124 means it hung.
local ONE = [[
n=$1
mkdir -p "$DIR/w$n"
timeout -k 5 "$LIMIT" env LD_PRELOAD="$SHIM" FAILMALLOC_NTH="$n" FAILMALLOC_TRACE="$DIR/$n.tr" \
  "$EXE" "$DIR/$SCRIPT" "$DIR/w$n" >"$DIR/$n.out" 2>"$DIR/$n.err"
echo $? >"$DIR/$n.rc"
rm -rf "$DIR/w$n"
]]

local slurp = util.read_file

-- The environment of the runs. Under the sanitizer build, leak checks are on as for
-- every luarun the specs start, and the shim comes ahead of the ASan runtime (its
-- dlsym(RTLD_NEXT) then reaches ASan's malloc, so ASan still checks every block).
-- The module form runs lua5.4, which is not instrumented: the ASan runtime is
-- preloaded after the shim, and leak checks are off as for busted's own lua5.4 (the
-- loader's blocks for luarun.so, allocated through the shim, look leaked to it).
local function run_env(mode)
  -- -u: the shell and xargs run without the ASan runtime busted's lua5.4 preloads.
  local env = "-u LD_PRELOAD LIMIT=" .. (child_asan and 60 or 20)
  if mode.module then
    -- .ci/test preloads the ASan runtime into busted's lua5.4: the same for ours.
    local asan_rt = child_asan and os.getenv("LD_PRELOAD")
    local preload = shim .. (asan_rt and ":" .. asan_rt or "")
    env = env .. " SHIM=" .. q(preload) .. " EXE=lua5.4 SCRIPT=module.lua"
    if child_asan then
      env = env .. " ASAN_OPTIONS=" .. q(child_asan .. ":verify_asan_link_order=0:detect_leaks=0")
    end
  else
    env = env .. " SHIM=" .. q(shim) .. " EXE=" .. q(util.exe) .. " SCRIPT=script.lua"
    if child_asan then
      env = env .. " ASAN_OPTIONS=" .. q(child_asan .. ":verify_asan_link_order=0")
    end
  end
  return env .. " " .. (mode.env or "")
end

-- Writes the script and the runner into a new directory; returns its path.
local function setup(script)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. q(dir)))
  local f = assert(io.open(dir .. "/script.lua", "wb"))
  f:write(script or SCRIPT)
  f:close()
  f = assert(io.open(dir .. "/module.lua", "wb"))
  f:write(MODULE)
  f:close()
  f = assert(io.open(dir .. "/one.sh", "wb"))
  f:write(ONE)
  f:close()
  return dir
end

-- How many allocations the script makes when none fails.
local function count_allocations(dir, mode)
  local code, out, err = util.sh("env " .. run_env(mode) .. " DIR=" .. q(dir) ..
                                 " FAILMALLOC_COUNT=" .. q(dir .. "/count") ..
                                 " sh -c 'LD_PRELOAD=\"$SHIM\" \"$EXE\" \"$DIR/$SCRIPT\" \"$DIR\"'")
  assert.are.equal(0, code, err)
  assert.are.equal("ok\n", out)
  return assert(tonumber(slurp(dir .. "/count")), "the shim wrote no count")
end

-- The modules on the stack of the failed allocation, innermost first, without the
-- shim's own frames, the C library's, the loader's and the ASan runtime's (which
-- allocate on behalf of their callers: pthread_create, strdup, interceptors).
local function makers(trace)
  local list = {}
  for line in (trace or ""):gmatch("[^\n]+") do
    -- "path/lib.so(symbol+offset)[address]"; the first line is the shim's header
    local module = not line:find("^failmalloc:") and line:match("^([^%[(]+)%(")
    if module and not module:find("failmalloc%.so") and not module:find("libc%.so") and
       not module:find("ld%-linux") and not module:find("libasan%.so") then
      list[#list + 1] = module
    end
  end
  return list
end

-- Judges run n; returns nil if it is acceptable, else why not.
local function judge(dir, n, mode)
  local rc = tonumber(slurp(dir .. "/" .. n .. ".rc"))
  local out = slurp(dir .. "/" .. n .. ".out") or ""
  local err = slurp(dir .. "/" .. n .. ".err") or ""
  local trace = slurp(dir .. "/" .. n .. ".tr")
  local function bad(why)
    return ("N=%d: %s\n  stderr: %s\n  failed allocation: %s"):format(
      n, why, err:sub(1, 600), (trace or "(not reached)"):sub(1, 1500))
  end
  if rc == nil then return bad("no exit status") end
  -- In the module form, an allocation with no luarun.so frame on its stack was made
  -- before lr.run began, by lua5.4 or by the loader as require opened luarun.so:
  -- not our code. dlopen's failures there say "cannot create shared object
  -- descriptor" or even "No such file or directory"; the exit status must still be 1.
  if mode.module and rc == 1 and trace and not trace:find("luarun%.so") then return nil end
  local by = makers(trace)
  -- ASan's runtime, starting a thread, asks glibc for the thread's attributes, which
  -- allocates; when that fails ASan stops with "CHECK failed". Nothing of ours is on
  -- that stack (only libc and libasan frames), and the plain build has no such step.
  if err:find("AddressSanitizer: CHECK failed", 1, true) and trace and #by == 0 then
    return nil
  end
  -- OpenSSL 3.0's one-time setup reports success when an allocation inside it failed
  -- (its default context is left with a NULL lock), and its next call (RAND_bytes
  -- for a WebSocket key) crashes on that lock: OpenSSL's defect, not ours, excused
  -- only when the failed allocation was made inside that setup and the crash is in
  -- libcrypto (SIGSEGV, or ASan's report of it).
  if trace and trace:find("OPENSSL_init_crypto", 1, true) and
     (rc == 139 or (err:find("SEGV", 1, true) and err:find("libcrypto", 1, true))) then
    return nil
  end
  -- libpq 15, out of memory while it parses a CopyInResponse (getCopyStart, under
  -- PQisBusy), returns as if the message were incomplete and waits for the rest of
  -- it for ever: from outside it looks like a server that has not answered yet. Such
  -- a wait is excused only when the failed allocation was libpq's, inside PQisBusy,
  -- with no frame of ours between them. (Its other out-of-memory paths leave "out of
  -- memory" in its error message or a result of its own: core/pg_pipeline.c then
  -- ends the connection.) A script bounds such a wait with lr.timeout.
  if rc == 124 and trace then
    local frames = {}
    for line in trace:gmatch("[^\n]+") do
      if not line:find("^failmalloc:") and not line:find("failmalloc%.so") then frames[#frames + 1] = line end
    end
    local i = 1
    while frames[i] and frames[i]:find("libpq%.so") and not frames[i]:find("PQisBusy") do i = i + 1 end
    if i > 1 and frames[i] and frames[i]:find("libpq%.so%.5%(PQisBusy") then return nil end
  end
  if err:find("Sanitizer") or err:find("runtime error:") then return bad("sanitizer report") end
  if rc == 124 or rc == 137 then return bad("hung") end
  if rc == 0 then
    if out ~= "ok\n" then return bad("exit 0 without finishing: " .. out) end
    return nil
  end
  if rc == 1 then
    if err:lower():find("memory") then return nil end
    return bad("exit 1 without saying memory ran out")
  end
  if rc == 134 and by[1] and by[1]:find("libuv%.so") then return nil end
  return bad("exit status " .. rc)
end

-- Runs the sweep over the given N (in parallel: most of a run is waiting) and
-- returns the number of runs that failed cleanly and the list of bad runs.
local function sweep(dir, list, mode)
  local f = assert(io.open(dir .. "/list", "wb"))
  f:write(table.concat(list, "\n"), "\n")
  f:close()
  local code, _, err = util.sh("env " .. run_env(mode) .. " DIR=" .. q(dir) ..
                               " xargs -P 4 -n 1 sh " .. q(dir .. "/one.sh") .. " < " ..
                               q(dir .. "/list"))
  assert.are.equal(0, code, err)
  local problems, memory = {}, 0
  for _, n in ipairs(list) do
    local why = judge(dir, n, mode)
    if why then problems[#problems + 1] = why end
    if tonumber(slurp(dir .. "/" .. n .. ".rc")) == 1 then memory = memory + 1 end
  end
  return memory, problems
end

-- Every N from 1 to count in the plain build (~770 runs with luarun's allocator,
-- ~1,700 with the system's: ~15 s for both, 4 at a time). A run of the sanitizer
-- build takes ~10 times as long, so there each sweep takes an evenly spaced sample
-- of about `budget` N (the same sample every time).
local function plan(count, budget, always_sample)
  local list = {}
  local step = (child_asan or always_sample) and math.max(1, math.ceil(count / budget)) or 1
  for n = 1, count + 5, step do list[#list + 1] = n end -- + 5: thread-order slack
  return list
end

-- Found by the sweep (under load, not by a failed allocation), kept here beside it:
-- a task woken by a timer that was already due when the loop turned waited for the
-- loop's next event (core/sched.c, lr_task_wake).
describe("a timer already due when the loop turns", function()
  it("wakes its task at once, not at the loop's next event", function()
    local code, out, err = util.luarun([[
      local lr = require "luarun"
      -- The busy task runs past the timeout's deadline, so the timer is due by the
      -- time the loop turns; the only other event is the child's 5 s sleep.
      lr.spawn(function() local t = lr.now() while lr.now() - t < 0.02 do end end)
      local t0 = lr.now()
      local r, e = lr.timeout(0.001, lr.sleep, 5)
      io.write(tostring(r), " ", tostring(e and e.kind), " ", lr.now() - t0 < 1 and "soon" or "late")
    ]])
    assert.are.equal(0, code, err)
    assert.are.equal("nil timeout soon", out)
  end)
end)

describe("out of memory, one allocation at a time", function()
  it("the shim counts allocations and fails the one asked for", function()
    local dir = setup()
    local count = count_allocations(dir, {})
    assert.is_true(count > 100, "only " .. count .. " allocations counted")
    -- Allocation 1 of the process happens before the shim reads its settings, so
    -- ask for one well inside the run and check it failed.
    local n = count // 2
    util.sh("env " .. run_env({}) .. " DIR=" .. q(dir) .. " sh " .. q(dir .. "/one.sh") .. " " .. n)
    assert.matches("failing allocation " .. n .. " ", slurp(dir .. "/" .. n .. ".tr"))
    os.execute("rm -rf " .. q(dir))
  end)

  -- Each way of running the script, with how many evenly spaced N the sanitizer build
  -- samples (the plain build tries every N).
  --  * LUARUN_ALLOC=system: with malloc under every Lua allocation, a failure can hit
  --    Lua inside any API call of the runtime's C code, not only when its allocator
  --    takes a new 64 KiB chunk.
  --  * luarun.so in stock lua5.4 (lr.run). Dlopen'ed, it differs: its thread-local
  --    variables were allocated at their first access (a failure there ended the
  --    process with "cannot allocate memory for thread-local data: ABORT", status 127),
  --    and lua5.4 unmapped it at exit while a file runner thread could still be in it
  --    (SIGSEGV in ~1% of runs, failure or not: bindings/luarun.c now pins it).
  for _, way in ipairs({
    {"luarun's allocator", {}, 400},
    {"LUARUN_ALLOC=system", {env = "LUARUN_ALLOC=system"}, 200},
    {"luarun.so in lua5.4", {module = true}, 200},
    -- libcurl and OpenSSL make most of this one's allocations: a sample in both builds.
    -- Both are opened with dlopen, and the loader's blocks for them, allocated through
    -- the shim, look leaked to LeakSanitizer: spec/support/lsan_dlopen.supp.
    {"a server and its clients", {script = SERVER, sample = true,
      env = "LSAN_OPTIONS=suppressions=" .. q(os.getenv("PWD") .. "/spec/support/lsan_dlopen.supp")}, 300},
    -- libpq (opened with dlopen too) and SQLite make most of this one's allocations.
    {"SQLite and PostgreSQL", {script = DB, sample = true,
      env = "LSAN_OPTIONS=suppressions=" .. q(os.getenv("PWD") .. "/spec/support/lsan_dlopen.supp")}, 300,
      pg = true},
  }) do
    it("every allocation of the script fails cleanly (" .. way[1] .. ")", function()
      if way.pg then way[2].env = way[2].env .. " LUARUN_PG_URL=" .. q(require("support.pgserver").start()) end
      local dir = setup(way[2].script)
      local count = count_allocations(dir, way[2])
      local memory, problems = sweep(dir, plan(count, way[3], way[2].sample), way[2])
      assert.are.equal("", table.concat(problems, "\n"))
      assert.is_true(memory > 0, "no run reported running out of memory")
      os.execute("rm -rf " .. q(dir))
    end)
  end
end)
