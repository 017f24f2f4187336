-- Every example in examples/ that needs no server runs here, so none of them rots.
-- (The fetch examples run in http_spec.lua, against its test server.) The serve_*
-- examples are servers: each is started on a free port, asked what its comments
-- promise, and stopped with SIGTERM, which must end it cleanly (status 143).
local lr = require "luarun"
local http = require "luarun.http"
local json = require "luarun.json"
local util = require "support.util"

local run_example = util.example
local q = util.quote

-- Starts `luarun examples/<name> 0` in the background. Returns {url =, line =,
-- stop = fn}: line is what it printed first ("listening on <url> ..."), and stop()
-- sends SIGTERM and returns the exit status and stderr.
local function start_server(name, env)
  local dir = util.new_dir()
  -- sh -c 'echo $$; exec ...': the pid file holds luarun's own pid, and the outer
  -- shell writes luarun's exit status once it ends.
  local inner = "echo $$ > " .. q(dir .. "/pid") .. "; exec " .. q(util.bin) .. " examples/" .. name .. " 0"
  assert(os.execute(("( %s sh -c %s > %s 2> %s; echo $? > %s ) &"):format(env or "", q(inner),
    q(dir .. "/out"), q(dir .. "/err"), q(dir .. "/rc"))))
  local line
  for _ = 1, 200 do
    local f = io.open(dir .. "/out", "rb")
    line = f and f:read("l")
    if f then f:close() end
    if line or io.open(dir .. "/rc") then break end
    os.execute("sleep 0.05")
  end
  local srv = {line = line, url = line and line:match("^listening on (%S+)")}
  function srv.stop()
    local pid = util.slurp(dir .. "/pid"):match("%d+")
    os.execute("kill -TERM " .. pid .. " 2>/dev/null")
    local rc
    for _ = 1, 200 do
      local f = io.open(dir .. "/rc", "rb")
      rc = f and tonumber(f:read("a"))
      if f then f:close() end
      if rc then break end
      os.execute("sleep 0.05")
    end
    if not rc then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
    local err = util.slurp(dir .. "/err")
    os.execute("rm -rf " .. q(dir))
    return rc, err
  end
  assert(srv.url, name .. " did not say where it listens: " .. tostring(line) ..
         util.slurp(dir .. "/err"))
  return srv
end

-- Runs fn(srv) against a started example, then stops it: it must exit as SIGTERM
-- asks (143) with nothing on stderr.
local function with_server(name, fn, env)
  local srv = start_server(name, env)
  local ok, e = pcall(lr.run, fn, srv)
  local rc, err = srv.stop()
  assert(ok, e)
  assert.are.equal(143, rc, err)
  assert.are.equal("", err)
end

describe("examples", function()
  it("sleeps.lua shows concurrent sleeps taking about as long as one", function()
    local code, out, err = run_example("sleeps.lua", "20 0.05")
    assert.are.equal(0, code, err)
    local seq = tonumber(out:match("one after another:%s+([%d.]+)"))
    local conc = tonumber(out:match("all at once:%s+([%d.]+)"))
    assert.is_true(seq >= 1.0)          -- 20 × 0.05 s
    assert.is_true(conc < seq / 4)      -- loose: the machine may be loaded
  end)

  -- The three mistakes, each with the tool that shows it.
  it("mistake_cpu_in_task.lua: --debug names the line, run_in_pool fixes it", function()
    local code, out, err = run_example("mistake_cpu_in_task.lua", "x 1500000", "--debug=300")
    assert.are.equal(0, code, err)
    assert.is_truthy(out:find("^in the task:"), out)
    assert.is_truthy(err:find("blocked loop: main task has been running for %d+ ms"), err)
    assert.is_truthy(err:find("mistake_cpu_in_task%.lua:%d+: in local 'count_primes'"), err)
    local stuck_gap = tonumber(out:match("longest gap: (%d+) ms"))
    code, out, err = run_example("mistake_cpu_in_task.lua", "fixed 1500000", "--debug=300")
    assert.are.equal(0, code, err)
    assert.is_truthy(out:find("^run_in_pool:"), out)
    assert.are.equal("", err)
    assert.is_true(tonumber(out:match("longest gap: (%d+) ms")) < stuck_gap, out)
  end)

  it("mistake_blocking_call.lua: --debug catches os.execute and a busy wait, not lr.sleep", function()
    local code, out, err = run_example("mistake_blocking_call.lua", "blocking", "--debug=200")
    assert.are.equal(0, code, err)
    assert.is_truthy(err:find("blocked loop: task %d+ %(spawned at examples/mistake_blocking_call%.lua:%d+%) " ..
                              "has been running for %d+ ms without yielding %(threshold 200 ms%), inside a C function"), err)
    assert.is_truthy(err:find("mistake_blocking_call%.lua:%d+: in upvalue 'pause'"), err)
    code, out, err = run_example("mistake_blocking_call.lua", "busy", "--debug=200")
    assert.are.equal(0, code, err)
    assert.is_truthy(err:find("has been running for %d+ ms without yielding %(threshold 200 ms%); it is at:"), err)
    assert.is_truthy(err:find("mistake_blocking_call%.lua:%d+: in upvalue 'pause'"), err)
    code, out, err = run_example("mistake_blocking_call.lua", "fixed", "--debug=200")
    assert.are.equal(0, code, err)
    assert.are.equal("", err)
    assert.is_truthy(out:find("^fixed: the heartbeat's longest gap was %d+ ms"), out)
  end)

  it("mistake_one_at_a_time.lua: --trace shows one row end to end, then rows side by side", function()
    local trace = os.tmpname() .. ".json"
    local code, out, err = run_example("mistake_one_at_a_time.lua", "", "--trace " .. util.quote(trace))
    assert.are.equal(0, code, err)
    local seq, conc = out:match("one at a time ([%d.]+) s, with lr.map/gather ([%d.]+) s")
    assert.is_true(tonumber(seq) >= 1.0 and tonumber(conc) < tonumber(seq) / 3, out)
    local f = assert(io.open(trace, "rb"))
    local t = json.decode(f:read("a"))
    f:close()
    os.remove(trace)
    local main, others = {}, {}
    for _, e in ipairs(t.traceEvents) do
      if e.ph == "X" and e.cat == "sleep" then
        table.insert(e.tid == 1 and main or others, e)
      end
    end
    -- One at a time: ten sleeps on the main task's row, each after the previous.
    assert.are.equal(10, #main)
    table.sort(main, function(a, b) return a.ts < b.ts end)
    for i = 2, 10 do assert.is_true(main[i].ts >= main[i - 1].ts + main[i - 1].dur) end
    -- Together: ten rows, every sleep started before the first one ended.
    assert.are.equal(10, #others)
    local first_end, seen = math.huge, {}
    for _, e in ipairs(others) do first_end = math.min(first_end, e.ts + e.dur); seen[e.tid] = true end
    for _, e in ipairs(others) do assert.is_true(e.ts < first_end) end
    local rows = 0
    for _ in pairs(seen) do rows = rows + 1 end
    assert.are.equal(10, rows)
    -- The same as a page.
    local page = os.tmpname() .. ".html"
    code, out, err = run_example("mistake_one_at_a_time.lua", "", "--trace " .. util.quote(page))
    assert.are.equal(0, code, err)
    f = assert(io.open(page, "rb"))
    local html = f:read("a")
    f:close()
    os.remove(page)
    assert.is_truthy(html:find('"cat":"sleep"', 1, true))
  end)

  it("db_scraper_sqlite.lua scrapes its own site into SQLite, in one transaction", function()
    local dir = util.new_dir()
    local file = dir .. "/pages.db"
    for run = 1, 2 do -- the second run refreshes its pages (new port, new URLs: 24 rows)
      local code, out, err = run_example("db_scraper_sqlite.lua", "'' " .. q(file))
      assert.are.equal(0, code, err)
      assert.are.equal("", err)
      assert.matches(("fetched 12 pages in [%%d.]+ s, stored 12: %d in the table, %d with a body")
                     :format(12 * run, 11 * run), out)
      assert.matches("no body: http://127%.0%.0%.1:%d+/get%?page=7 %(503%)", out)
    end
    os.execute("rm -rf " .. q(dir))
  end)

  describe("servers", function()
    it("serve_delay.lua answers /delay/N after N seconds, many at once", function()
      with_server("serve_delay.lua", function(srv)
        local t0 = lr.now()
        local urls = {}
        for i = 1, 20 do urls[i] = srv.url .. "/delay/0.3?page=" .. i end
        local pages = lr.map(urls, function(u) return assert(http.get(u)):json() end)
        local took = lr.now() - t0
        assert.is_true(took >= 0.3 and took < 1.5, took)  -- together, not 20 × 0.3 s
        assert.are.equal("20", pages[20].args.page)
        local echo = assert(http.post(srv.url .. "/anything", {json = {a = 1}})):json()
        assert.are.equal("POST", echo.method)
        assert.are.equal(1, echo.json.a)
        assert.are.equal(400, assert(http.get(srv.url .. "/delay/soon")).status)
      end)
    end)

    it("the fetch examples work against serve_delay.lua, as the README's demo runs them", function()
      local srv = start_server("serve_delay.lua")
      local code, out, err = util.sh("LUARUN_DEMO_SMALL=1 timeout 60 " .. q(util.bin) ..
                                     " examples/fetch_sequential_vs_gather.lua " .. q(srv.url))
      local code2, out2, err2 = util.sh("LUARUN_DEMO_SMALL=1 timeout 60 " .. q(util.bin) ..
                                        " examples/fetch_json.lua " .. q(srv.url))
      local rc, serr = srv.stop()
      assert.are.equal(0, code, err)
      local seq = tonumber(out:match("one after another%s*|%s*([%d.]+)s"))
      local par = tonumber(out:match("all at once %(gather%)%s*|%s*([%d.]+)s"))
      assert.is_true(seq >= 0.5 and par < seq / 2, out)
      assert.are.equal(0, code2, err2)
      assert.matches("200\tlua async", out2)
      assert.matches("timeout\ttimeout: ", out2)
      assert.are.equal(143, rc, serr)
    end)

    it("serve_json_api.lua: create, list, get, replace, delete, and the 4xx answers", function()
      with_server("serve_json_api.lua", function(srv)
        local base = srv.url .. "/items"
        assert.are.same({items = {}, count = 0}, assert(http.get(base)):json())
        local res = assert(http.post(base, {json = {name = "kettle", tags = {"kitchen"}}}))
        assert.are.equal(201, res.status)
        assert.are.equal("/items/1", res.headers.location)
        assert(http.post(base, {json = {name = "lamp"}}))
        local list = assert(http.get(base, {query = {tag = "kitchen"}})):json()
        assert.are.equal(1, list.count)
        assert.are.equal("kettle", list.items[1].name)
        assert.are.equal("lamp", assert(http.get(base .. "/2")):json().name)
        res = assert(http.request("PUT", base .. "/2", {json = {name = "desk lamp"}}))
        assert.are.equal("desk lamp", res:json().name)
        assert.are.equal(204, assert(http.request("DELETE", base .. "/1")).status)
        res = assert(http.get(base .. "/1"))
        assert.are.equal(404, res.status)
        assert.are.equal("no item 1", res:json().error)
        assert.are.equal(400, assert(http.post(base, {json = {tags = {}}})).status)
        assert.are.equal(400, assert(http.post(base, {body = "{not json"})).status)
        res = assert(http.request("PATCH", base .. "/2"))
        assert.are.equal(405, res.status)
        assert.are.equal("DELETE, GET, HEAD, PUT", res.headers.allow)
        assert.are.equal(404, assert(http.get(srv.url .. "/nothing")).status)
      end)
    end)

    it("serve_fan_out.lua: a handler's upstream calls overlap; a failing one gives 502", function()
      with_server("serve_fan_out.lua", function(srv)
        assert.matches("%(upstream on http://", srv.line)
        local t0 = lr.now()
        local d = assert(http.get(srv.url .. "/dashboard/7")):json()
        assert.are.equal("user 7", d.user.name)
        assert.are.equal(2, #d.orders)
        assert.is_true(d.elapsed < 0.55 and lr.now() - t0 < 1.5, d.elapsed) -- 3 × 0.2 in a row is 0.6
        local items = {}
        for i = 1, 12 do items[i] = "item" .. i end
        local b = assert(http.get(srv.url .. "/basket", {query = {item = items}})):json()
        assert.are.equal(12, b.items)
        assert.is_true(b.elapsed < 1.2, b.elapsed)  -- 10 at once, then 2: ~0.4 s, not 2.4
        local res = assert(http.get(srv.url .. "/dashboard/0"))
        assert.are.equal(502, res.status)
        assert.matches("answered 503", res:json().error)
      end)
    end)

    it("serve_pg_pool.lua: notes in PostgreSQL through a pool of 5", function()
      local url = require("support.pgserver").start()
      with_server("serve_pg_pool.lua", function(srv)
        local base = srv.url .. "/notes"
        local res = assert(http.post(base, {json = {body = "hello"}}))
        assert.are.equal(201, res.status, res.body)
        local note = res:json()
        assert.are.equal("hello", note.body)
        assert.are.equal("/notes/" .. note.id, res.headers.location)
        assert.matches("^%d%d%d%d%-%d%d%-%d%d ", note.created)
        assert.are.same(note, assert(http.get(base .. "/" .. note.id)):json())
        local list = assert(http.get(base, {query = {limit = 1}})):json()
        assert.are.equal(1, list.count)
        assert.are.equal(note.id, list.notes[1].id)
        assert.are.equal(404, assert(http.get(base .. "/999999")).status)
        assert.are.equal(400, assert(http.get(base .. "/abc")).status)
        assert.are.equal(400, assert(http.post(base, {json = {body = ""}})).status)
        -- 10 slow queries at once on 5 connections: two rounds of 0.2 s, not ten
        local t0 = lr.now()
        local urls = {}
        for i = 1, 10 do urls[i] = srv.url .. "/slow?i=" .. i end
        lr.map(urls, function(u) assert.are.equal(200, assert(http.get(u)).status) end)
        assert.is_true(lr.now() - t0 < 1.5)
        local st = assert(http.get(srv.url .. "/pool")):json()
        assert.are.same({size = 5, idle = 5, in_use = 0, opened = 5}, st)
      end, "LUARUN_PG_URL=" .. q(url))
    end)

    it("ws_chat.lua: what one client says, the others hear", function()
      with_server("ws_chat.lua", function(srv)
        local url = srv.url:gsub("^http", "ws") .. "/chat"
        local ann = assert(http.websocket(url .. "?name=ann"))
        assert.are.equal("* welcome, ann", ann:receive())
        local bob = assert(http.websocket(url .. "?name=bob"))
        assert.are.equal("* welcome, bob", bob:receive())
        assert.are.equal("* bob joined", ann:receive())
        assert(bob:send("hello"))
        assert.are.same({"bob: hello", "text"}, {ann:receive()})
        assert(ann:send("hi bob"))
        assert.are.equal("ann: hi bob", bob:receive())
        bob:close()
        assert.are.equal("* bob left", ann:receive())
        ann:close()
      end)
    end)
  end)
end)
