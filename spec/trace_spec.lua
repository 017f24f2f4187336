-- luarun --trace / LUARUN_TRACE: the timeline, as Chrome trace-event JSON and as an
-- HTML waterfall. Scripts run in a subprocess; the file is parsed back with
-- luarun.json and checked for its tracks, spans and their arguments.
local json = require "luarun.json"
local util = require "support.util"
local srv = require "support.httpserver"

local function tmpfile(ext)
  local p = os.tmpname()
  os.remove(p)
  return p .. ext
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Runs script with `luarun --trace <out> script args`; returns code, stdout, stderr.
local function run(script, out, args, env)
  local path = tmpfile(".lua")
  local f = assert(io.open(path, "wb"))
  f:write(script)
  f:close()
  local code, o, e = util.sh((env or "") .. " timeout 60 " .. util.quote(util.bin) ..
                             (out and (" --trace " .. util.quote(out)) or "") .. " " ..
                             util.quote(path) .. " " .. (args or ""))
  os.remove(path)
  return code, o, e
end

-- The trace's events: spans ("X") by category, task lives by tid, names by tid.
local function parse_trace(text)
  local t = json.decode(text)
  local r = {spans = {}, tasks = {}, names = {}, all = {}}
  for _, e in ipairs(t.traceEvents) do
    if e.ph == "M" and e.name == "thread_name" then
      r.names[e.tid] = e.args.name
    elseif e.ph == "X" then
      r.all[#r.all + 1] = e
      if e.cat == "task" then r.tasks[e.tid] = e
      else
        r.spans[e.cat] = r.spans[e.cat] or {}
        table.insert(r.spans[e.cat], e)
      end
    end
  end
  return r
end

local function load_trace(path)
  return parse_trace(slurp(path))
end

-- Every span lies inside its task's life, and the spans of one track do not overlap
-- (Perfetto needs them nested).
local function assert_nested(tr)
  local by_tid = {}
  for _, e in ipairs(tr.all) do
    if e.cat ~= "task" then
      local life = tr.tasks[e.tid]
      assert.is_truthy(life, "span on a track with no task: " .. e.tid)
      assert.is_true(e.ts >= life.ts - 0.01 and e.ts + e.dur <= life.ts + life.dur + 0.01,
                     ("%s at %f+%f outside task %d"):format(e.name, e.ts, e.dur, e.tid))
      by_tid[e.tid] = by_tid[e.tid] or {}
      table.insert(by_tid[e.tid], e)
    end
  end
  for _, list in pairs(by_tid) do
    table.sort(list, function(a, b) return a.ts < b.ts end)
    for i = 2, #list do
      local prev, e = list[i - 1], list[i]
      -- inside the previous one (a pool job that ended without parking), or after it
      local inside = e.ts + e.dur <= prev.ts + prev.dur + 0.01
      assert.is_true(inside or e.ts >= prev.ts + prev.dur - 0.01,
                     ("%s overlaps %s on track %d"):format(e.name, prev.name, e.tid))
    end
  end
end

describe("--trace", function()
  it("writes Chrome trace JSON: a track per task, sleeps, pool jobs, file calls", function()
    local out, dir = tmpfile(".json"), tmpfile(".d")
    local code, o, err = run([[
      local lr = require "luarun"
      local fs = require "luarun.fs"
      local dir = ...
      assert(fs.mkdir(dir))
      local function sum(n) local s = 0 for i = 1, n do s = s + i end return s end
      local r = lr.gather(
        function() lr.sleep(0.05) return "slept" end,
        function()
          assert(fs.write_file(dir .. "/a.txt", "hello"))
          return assert(fs.read_file(dir .. "/a.txt"))
        end,
        function() return lr.run_in_pool(sum, 1000) end)
      fs.remove(dir .. "/a.txt")
      fs.rmdir(dir)
      print(r, lr.timeout(0.01, lr.sleep, 1))
      lr.spawn(error, "boom"):cancel()
    ]], out, util.quote(dir))
    assert.are.equal(0, code, err)
    assert.is_truthy(o:find("^slept"), o)
    local tr = load_trace(out)
    os.remove(out)
    -- Tracks: the main task and the three gather children, the timeout's child and
    -- the cancelled task, each named.
    assert.are.equal("main task", tr.names[1])
    for tid = 2, 4 do
      assert.is_truthy(tr.names[tid]:find("^task " .. tid .. " %(spawned at .*%.lua:%d+%)$"), tr.names[tid])
      assert.are.equal("ok", tr.tasks[tid].args.result)
      assert.are.equal(1, tr.tasks[tid].args.spawned_by)
    end
    assert.are.equal("ok", tr.tasks[1].args.result)
    assert.are.equal("cancelled", tr.tasks[5].args.result) -- the timeout's child
    assert.are.equal("cancelled", tr.tasks[6].args.result)
    -- Sleeps: the 0.05 s one, and the 1 s one cut short by the timeout.
    local sleeps = {}
    for _, e in ipairs(tr.spans.sleep) do sleeps[e.args.seconds] = e end
    assert.is_true(sleeps[0.05].dur >= 45000 and sleeps[0.05].dur < 5e6, sleeps[0.05].dur)
    assert.are.equal(2, sleeps[0.05].tid)
    assert.is_true(sleeps[1].dur < 900000, sleeps[1].dur)
    -- The pool job, on the track of the task that waited for it.
    assert.are.equal(1, #tr.spans.pool)
    assert.are.equal(4, tr.spans.pool[1].tid)
    assert.are.equal("run_in_pool", tr.spans.pool[1].name)
    -- File calls: op and path.
    local ops = {}
    for _, e in ipairs(tr.spans.fs) do ops[#ops + 1] = e.args.op .. " " .. e.args.path end
    table.sort(ops)
    assert.are.same({"mkdir " .. dir, "read_file " .. dir .. "/a.txt", "remove " .. dir .. "/a.txt",
                     "rmdir " .. dir, "write_file " .. dir .. "/a.txt"}, ops)
    assert_nested(tr)
  end)

  it("records an HTTP request: url, method, status, bytes, connect and first-byte times", function()
    local bin = srv.httpbin()
    local out = tmpfile(".json")
    local ok, e = pcall(function()
      local code, o, err = run([[
        local http = require "luarun.http"
        local base = ...
        local res = assert(http.get(base .. "/bytes/1234"))
        local res2 = assert(http.post(base .. "/post", {body = "x"}))
        print(res.status, #res.body, res2.status)
      ]], out, bin.base)
      assert.are.equal(0, code, err)
      assert.are.equal("200\t1234\t200\n", o)
      -- The "one at a time" example with real requests: 3 in a row, then 3 at once.
      local ex = tmpfile(".json")
      code, o, err = util.sh("timeout 60 " .. util.quote(util.bin) .. " --trace " .. util.quote(ex) ..
                             " examples/mistake_one_at_a_time.lua " .. bin.base .. " 3")
      assert.are.equal(0, code, err)
      assert.is_truthy(o:find("3 fetches of 0.1 s: one at a time", 1, true), o)
      local ext = load_trace(ex)
      os.remove(ex)
      assert.are.equal(6, #ext.spans.http)
      local on_main = 0
      for _, r in ipairs(ext.spans.http) do
        assert.are.equal(200, r.args.status)
        assert.is_truthy(r.args.url:find("/delay/0.1?i=", 1, true))
        if r.tid == 1 then on_main = on_main + 1 end
      end
      assert.are.equal(3, on_main)
    end)
    bin.stop()
    srv.cleanup()
    assert(ok, e)
    local tr = load_trace(out)
    os.remove(out)
    local reqs = tr.spans.http
    assert.are.equal(2, #reqs)
    table.sort(reqs, function(a, b) return a.ts < b.ts end)
    local a = reqs[1].args
    assert.are.equal("GET " .. bin.base .. "/bytes/1234", reqs[1].name)
    assert.are.equal(bin.base .. "/bytes/1234", a.url)
    assert.are.equal("GET", a.method)
    assert.are.equal(200, a.status)
    assert.are.equal(1234, a.bytes)
    assert.is_true(a.connect_ms > 0 and a.first_byte_ms >= a.connect_ms, json.encode(a))
    assert.is_true(reqs[1].dur >= a.first_byte_ms * 1000 * 0.9, json.encode(reqs[1]))
    assert.are.equal(1, reqs[1].tid)
    assert.are.equal("POST", reqs[2].args.method)
    assert.are.equal(200, reqs[2].args.status)
    assert_nested(tr)
  end)

  it("names tracks after the tasks' names and says what other waits were on", function()
    local out = tmpfile(".json")
    local code, o, err = run([[
      local lr = require "luarun"
      local q = lr.Queue(1)
      local c = lr.spawn(function() return q:get() end)
      c:set_name("consumer")
      lr.sleep(0.02)
      q:put(42)
      print(c:wait())
    ]], out)
    assert.are.equal(0, code, err)
    assert.are.equal("42\n", o)
    local tr = load_trace(out)
    os.remove(out)
    assert.is_truthy(tr.names[2]:find('^task 2 "consumer" %(spawned at '), tr.names[2])
    local on
    for _, e in ipairs(tr.spans.wait) do if e.tid == 2 then on = e.args.on end end
    assert.are.equal("Queue:get, queue empty", on)
    assert_nested(tr)
  end)

  it("escapes strings so any path reads back (and cannot end the HTML's script)", function()
    local out = tmpfile(".json")
    local weird = "/nonexistent/q\"b\\s\n</script><b>&\1\xff"
    local code, _, err = run([[
      local fs = require "luarun.fs"
      assert(not fs.stat(...))
    ]], out, util.quote(weird))
    assert.are.equal(0, code, err)
    local text = slurp(out)
    os.remove(out)
    assert.is_nil(text:find("</script>", 1, true))
    local tr = parse_trace(text)
    assert.are.equal((weird:gsub("\xff", "\u{FFFD}")), tr.spans.fs[1].args.path)
  end)

  it("writes a self-contained HTML waterfall with the same data", function()
    local out = tmpfile(".html")
    local code, _, err = run([[
      local lr = require "luarun"
      local fs = require "luarun.fs"
      lr.gather(function() lr.sleep(0.02) end, function() fs.stat("/nonexistent/traced-path") end)
    ]], out)
    assert.are.equal(0, code, err)
    local page = slurp(out)
    os.remove(out)
    assert.is_truthy(page:find("^<!doctype html>"))
    assert.is_truthy(page:find("</html>%s*$"))
    -- No external resources: every script and style is inline.
    assert.is_nil(page:lower():find("src%s*=%s*[\"']?%s*https?:"), "external src")
    assert.is_nil(page:lower():find("href%s*=%s*[\"']?%s*https?:"), "external href")
    assert.is_nil(page:lower():find("<link", 1, true))
    -- The trace itself, embedded as JSON.
    local data = page:match('<script id="trace%-data" type="application/json">(.-)</script>')
    assert.is_truthy(data)
    local t = json.decode(data)
    local cats, path = {}, nil
    for _, e in ipairs(t.traceEvents) do
      if e.ph == "X" then cats[e.cat] = true end
      if e.cat == "fs" then path = e.args.path end
    end
    assert.is_true(cats.task and cats.sleep and cats.fs)
    assert.are.equal("/nonexistent/traced-path", path)
    assert.is_truthy(page:find("waterfall", 1, true) or page:find("canvas", 1, true))
  end)

  it("is turned on by LUARUN_TRACE under lr.run, rewritten after each run", function()
    local out = tmpfile(".json")
    local cpath = os.getenv("LUA_CPATH") or ""
    local code, _, err = util.sh("LUARUN_TRACE=" .. util.quote(out) .. " LUA_CPATH=" ..
      util.quote(cpath) .. " timeout 60 lua5.4 -e " .. util.quote([[
        local lr = require "luarun"
        lr.run(function() lr.sleep(0.01) end)
        lr.run(function() lr.spawn(lr.sleep, 0.02):wait() end)]]))
    assert.are.equal(0, code, err)
    local tr = load_trace(out)
    os.remove(out)
    assert.are.equal(2, #tr.spans.sleep)
    assert.is_truthy(tr.tasks[1] and tr.tasks[2] and tr.tasks[3])
  end)

  it("fails at once when the file cannot be written", function()
    local code, _, err = run("print('never')", "/nonexistent/dir/out.json")
    assert.are.equal(1, code)
    assert.is_truthy(err:find("--trace: cannot write /nonexistent/dir/out.json", 1, true), err)
  end)
end)
