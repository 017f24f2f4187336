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
    -- The watchdog's look usually lands inside os.execute ("inside a C function"); on a
    -- loaded machine it can land just after one returns, with the task still in pause.
    local first = "blocked loop: task %d+ %(spawned at examples/mistake_blocking_call%.lua:%d+%) " ..
                  "has been running for %d+ ms without yielding %(threshold 200 ms%)"
    assert.is_truthy(err:find(first .. ", inside a C function") or err:find(first .. "; it is at:"), err)
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

  -- The crawler against nginx serving a generated shop (spec/support/site_gen.py, which
  -- also writes what a crawl must find): the same pages, broken links, redirects and
  -- refusals, nothing robots.txt forbids requested, and the requests spaced by the
  -- site's Crawl-delay (nginx's access log has each request's time).
  describe("crawler.lua", function()
    local dir, srv, exp
    local DEPTH, CRAWL_DELAY = 3, 0.01
    setup(function()
      dir = util.new_dir()
      local code, _, err = util.sh("/usr/bin/python3 spec/support/site_gen.py " .. q(dir) ..
                                   " --crawl-delay " .. CRAWL_DELAY)
      assert(code == 0, err)
      srv = require("support.nginx").start(dir .. "/root", {include = dir .. "/locations.conf"})
      exp = json.decode(util.slurp(dir .. "/expected.json"))
    end)
    teardown(function()
      if srv then srv:stop() end
      os.execute("rm -rf " .. q(dir))
    end)

    -- {url = depth} of the expected entries of a kind within the depth limit.
    local function within(kind)
      local out = {}
      for path, v in pairs(exp[kind]) do
        local d = type(v) == "table" and v.depth or v
        if d <= DEPTH then out[srv.url .. path] = d end
      end
      return out
    end
    local function keyed(list, field)
      local out = {}
      for _, e in ipairs(list) do
        assert.is_nil(out[e.url], "listed twice: " .. e.url)
        out[e.url] = field and e[field] or true
      end
      return out
    end

    it("finds exactly the site's pages to depth 3, its broken links and redirects", function()
      local out, sqlite = dir .. "/crawl.json", dir .. "/crawl.db"
      local code, stdout, err = util.sh("timeout 120 " .. q(util.bin) .. " examples/crawler.lua " ..
        q(srv.url .. "/") .. " --depth " .. DEPTH .. " --concurrency 8 --delay 0 --out " .. q(out) ..
        " --sqlite " .. q(sqlite))
      assert.are.equal(0, code, err .. stdout)
      assert.are.equal("", err)       -- no progress line: stderr is not a terminal here
      local got = json.decode(util.slurp(out))

      local pages = within("pages")
      assert.are.same(pages, keyed(got.pages, "depth"))
      local files = within("files")
      assert.are.same(files, keyed(got.files, "depth"))
      local redirects = {}
      for url in pairs(within("redirects")) do redirects[url] = srv.url .. exp.redirects[url:sub(#srv.url + 1)].to end
      assert.are.same(redirects, keyed(got.redirects, "to"))
      local disallowed = {}
      for _, u in ipairs(got.disallowed) do disallowed[u] = true end
      local want_disallowed = within("disallowed")
      for u in pairs(want_disallowed) do want_disallowed[u] = true end
      assert.are.same(want_disallowed, disallowed)
      assert.are.same({}, got.errors)
      assert.are.equal(srv.url .. "/", got.start)
      assert.is_nil(got.partial)
      -- Broken links, each with its status and a page that links to it.
      local broken = within("broken")
      for u in pairs(broken) do broken[u] = true end
      assert.are.same(broken, keyed(got.broken))
      for _, b in ipairs(got.broken) do
        local e = exp.broken[b.url:sub(#srv.url + 1)]
        assert.are.equal(e.status, b.status)
        local linkers = {}
        for _, p in ipairs(e.linked_from) do linkers[srv.url .. p] = true end
        assert.is_truthy(linkers[b.found_on], b.url .. " found on " .. tostring(b.found_on))
      end
      assert.matches(("crawled %d pages and 1 other files to depth 3"):format(#got.pages), stdout)
      assert.matches("broken: " .. (srv.url .. "/status/flaky.html"):gsub("%p", "%%%0") .. " %(503%)", stdout)

      -- The fields the CSS selectors pulled out, against what the generator put in.
      local by_url = {}
      for _, p in ipairs(got.pages) do by_url[p.url] = p end
      local checked = 0
      for path, prod in pairs(exp.products) do
        local p = by_url[srv.url .. path]
        if p then
          assert.are.same(prod, p.product)
          assert.are.equal(exp.titles[path], p.title)
          assert.are.same({"Description", "Related"}, p.headings)
          checked = checked + 1
        end
      end
      assert.is_true(checked > 150, checked)
      assert.is_nil(by_url[srv.url .. "/"].product)
      assert.are.same({"Featured", "From the blog"}, by_url[srv.url .. "/"].headings)

      -- What nginx saw: robots.txt, then only what robots.txt allows, each page once,
      -- the page that answers 503 three times (the client's retries).
      -- The home page sets a session cookie: every request after it sends it back.
      local counts, times, cookies = {}, {}, 0
      for _, l in ipairs(srv:log()) do
        if l.agent:find("^luarun%-crawler/") then
          counts[l.uri] = (counts[l.uri] or 0) + 1
          if l.uri ~= "/robots.txt" then times[#times + 1] = l.time end
          if l.uri ~= "/robots.txt" and l.uri ~= "/" then
            assert.are.equal("shop_session=s16", l.cookie, l.uri)
            cookies = cookies + 1
          end
        end
      end
      assert.is_true(cookies > 250, cookies)
      assert.are.equal(1, counts["/robots.txt"])
      counts["/robots.txt"] = nil
      for u in pairs(disallowed) do assert.is_nil(counts[u:sub(#srv.url + 1)], u) end
      local fetched = {}
      for _, set in ipairs({pages, files, redirects, broken}) do
        for u in pairs(set) do fetched[u:sub(#srv.url + 1)] = u:find("/status/flaky", 1, true) and 3 or 1 end
      end
      fetched["/"] = 2 -- once on its own, to learn where the start URL leads, then crawled
      assert.are.same(fetched, counts)
      -- Spaced by Crawl-delay (the crawler's own --delay is 0): the requests' span,
      -- taken by the server, is at least (n - 1) gaps, less some slack for jitter.
      table.sort(times)
      assert.is_true(times[#times] - times[1] >= 0.9 * (#times - 1) * CRAWL_DELAY,
                     ("%d requests in %.3f s"):format(#times, times[#times] - times[1]))

      -- SQLite holds the same rows.
      lr.run(function()
        local db = require "luarun.db"
        local conn <close> = assert(db.open("sqlite:" .. sqlite))
        local rows = assert(conn:query("select * from pages order by url"))
        assert.are.equal(#got.pages, #rows)
        for i, row in ipairs(rows) do
          local p = got.pages[i]
          assert.are.equal(p.url, row.url)
          assert.are.equal(p.depth, row.depth)
          assert.are.equal(p.title, row.title)
          if p.product then
            assert.are.same({p.product.name, p.product.price, p.product.currency, p.product.sku,
                             table.concat(p.product.tags, ","), p.product.in_stock and 1 or 0},
                            {row.name, row.price, row.currency, row.sku, row.tags, row.in_stock})
          else
            assert.are.equal(db.null, row.sku)
          end
        end
        local b = assert(conn:query("select url, status, found_on from broken order by url"))
        assert.are.equal(#got.broken, #b)
        for i, row in ipairs(b) do
          assert.are.same({got.broken[i].url, got.broken[i].status, got.broken[i].found_on},
                          {row.url, row.status, row.found_on})
        end
      end)
    end)

    -- A second, small site of what goes wrong: a start URL that redirects to another
    -- host name, a page over --max-size, a binary file, a 204, redirects without a
    -- usable Location, a content type in capitals, links with credentials and to https.
    it("records what is not a page, and follows a start URL that redirects", function()
      local sdir = util.new_dir()
      assert(os.execute("mkdir " .. q(sdir .. "/root")))
      util.put(sdir .. "/root/robots.txt", "User-agent: *\nAllow: /\n")
      util.put(sdir .. "/root/index.html", table.concat({
        "<title>Odd site</title>", '<a href="/page.html">p</a>', '<a href="big.html">big</a>',
        '<a href="/data.bin">bin</a>', '<a href="/nocontent">204</a>', '<a href="/noloc">302</a>',
        '<a href="/badloc">303</a>', '<a href="/upper">caps</a>',
        '<a href="http://ann:secret@localhost:@PORT@/secret.html">creds</a>',
        '<a href="https://localhost:@PORT@/tls.html">https</a>'}, "\n"))
      util.put(sdir .. "/root/page.html", "<title>Page</title><h2>Plain</h2>")
      util.put(sdir .. "/root/upper", "<title>Upper</title>")
      util.put(sdir .. "/root/secret.html", "<title>Secret</title>")
      util.put(sdir .. "/root/big.html", "<title>Big</title>" .. ("<p>filler</p>\n"):rep(20000))
      local bin = {}
      for k = 0, 2047 do bin[#bin + 1] = string.char(k % 256) end
      util.put(sdir .. "/root/data.bin", table.concat(bin))
      util.put(sdir .. "/locations.conf", table.concat({
        "location = /start { return 301 http://localhost:$server_port/; }",
        "location = /nocontent { return 204; }",
        "location = /noloc { return 302; }",
        'location = /badloc { return 303 "http://bad host:99999/"; }',
        'location = /upper { types { } default_type "Text/HTML; charset=UTF-8"; }'}, "\n"))
      local odd = require("support.nginx").start(sdir .. "/root", {include = sdir .. "/locations.conf"})
      local ok, e = pcall(function()
        local site = "http://localhost:" .. odd.port
        local out, sqlite = sdir .. "/crawl.json", sdir .. "/crawl.db"
        lr.run(function() -- a database with an earlier crawl's row, which must go
          local db = require "luarun.db"
          local conn <close> = assert(db.open("sqlite:" .. sqlite))
          assert(conn:exec("create table pages (url text primary key, depth integer, title text, name text," ..
                           " price text, currency text, sku text, tags text, in_stock integer)"))
          assert(conn:exec("insert into pages (url, depth) values ('http://old.test/', 0)"))
        end)
        local code, stdout, err = util.sh("timeout 60 " .. q(util.bin) .. " examples/crawler.lua " ..
          q(odd.url .. "/start") .. " --depth=2 --delay 0 --max-size 0.1 --out=" .. q(out) .. " --sqlite " .. q(sqlite))
        assert.are.equal(0, code, err .. stdout)
        assert.is_nil((stdout .. err):find("secret", 1, true)) -- credentials are never printed
        local got = json.decode(util.slurp(out))
        assert.are.equal(odd.url .. "/start", got.requested)
        assert.are.equal(site .. "/", got.start)
        assert.are.same({[site .. "/"] = 0, [site .. "/page.html"] = 1, [site .. "/upper"] = 1},
                        keyed(got.pages, "depth"))
        assert.are.same({{url = site .. "/data.bin", type = "application/octet-stream", depth = 1, status = 200,
                          found_on = site .. "/"}}, got.files)
        local errors = {}
        for _, x in ipairs(got.errors) do
          assert.are.equal(site .. "/", x.found_on)
          errors[x.url] = (x.status or "-") .. " " .. x.error:match("^[^:]*")
        end
        assert.are.same({[site .. "/big.html"] = "- too_large", [site .. "/nocontent"] = "204 nothing to read",
                         [site .. "/noloc"] = "302 no Location", [site .. "/badloc"] = "303 unusable Location"},
                        errors)
        assert.are.same({}, got.broken)
        assert.are.same({}, got.redirects)
        -- nothing requested with the credentials, nor over https (another site)
        for _, l in ipairs(odd:log()) do assert.are_not.equal("/secret.html", l.uri) end
        assert.matches("crawled 3 pages and 1 other files to depth 2", stdout)
        assert.matches("error: " .. (site .. "/noloc"):gsub("%p", "%%%0") .. ": no Location", stdout)
        lr.run(function()
          local db = require "luarun.db"
          local conn <close> = assert(db.open("sqlite:" .. sqlite))
          local rows = assert(conn:query("select url, title from pages order by url"))
          assert.are.same({site .. "/", site .. "/page.html", site .. "/upper"},
                          {rows[1].url, rows[2].url, rows[3].url})
          assert.are.equal(3, #rows)
          assert.are.equal("Upper", rows[3].title)
        end)
      end)
      odd:stop()
      os.execute("rm -rf " .. q(sdir))
      assert(ok, e)
    end)

    it("writes what it has, marked partial, when stopped by SIGTERM", function()
      local out = dir .. "/partial.json"
      -- --delay 0.2: the crawl takes a minute; it is stopped once it has asked for a few pages
      local inner = "echo $$ > " .. q(dir .. "/pid") .. "; exec " .. q(util.bin) .. " examples/crawler.lua " ..
                    q(srv.url .. "/") .. " --delay 0.2 --out " .. q(out)
      assert(os.execute(("( sh -c %s > %s 2> %s; echo $? > %s ) &"):format(q(inner), q(dir .. "/pout"),
                        q(dir .. "/perr"), q(dir .. "/prc"))))
      local before = #srv:log()
      for _ = 1, 200 do
        if #srv:log() >= before + 6 then break end
        os.execute("sleep 0.05")
      end
      os.execute("kill -TERM " .. util.slurp(dir .. "/pid"):match("%d+"))
      local rc
      for _ = 1, 200 do
        local f = io.open(dir .. "/prc", "rb")
        rc = f and tonumber(f:read("a"))
        if f then f:close() end
        if rc then break end
        os.execute("sleep 0.05")
      end
      assert.are.equal(143, rc, util.slurp(dir .. "/perr"))
      assert.matches("partial results in", util.slurp(dir .. "/perr"))
      local got = json.decode(util.slurp(out))
      assert.is_true(got.partial)
      assert.is_true(#got.pages >= 1)
      assert.are.equal(srv.url .. "/", got.pages[1].url)
    end)

    it("refuses bad arguments with its usage", function()
      local code, stdout, err = run_example("crawler.lua", "")
      assert.are.equal(2, code)
      assert.matches("usage: crawler%.lua URL", err)
      code, stdout = run_example("crawler.lua", "--help")
      assert.are.equal(0, code)
      assert.matches("usage: crawler%.lua URL", stdout)
      for args, msg in pairs({["--depth many"] = "%-%-depth wants a whole number >= 0",
                              ["--depth=1.5"] = "%-%-depth wants a whole number >= 0",
                              ["--concurrency 0"] = "%-%-concurrency wants a whole number >= 1",
                              ["--max-size=0"] = "%-%-max%-size wants a number",
                              ["--out"] = "%-%-out wants a value", ["--colour red"] = "unknown argument %-%-colour"}) do
        code, _, err = run_example("crawler.lua", "http://127.0.0.1:1/ " .. args)
        assert.are.equal(2, code, args)
        assert.matches(msg, err)
      end
      code, _, err = run_example("crawler.lua", "ftp://example.com/")
      assert.are.equal(2, code)
      assert.matches("not an http%(s%) URL", err)
      code, _, err = run_example("crawler.lua", "http://ann:secret@example.com/")
      assert.are.equal(2, code)
      assert.is_nil(err:find("secret", 1, true))
      -- Where the results go is checked before anything is fetched.
      code, _, err = run_example("crawler.lua", "http://127.0.0.1:1/ --out /nonexistent/dir/x.json")
      assert.are.equal(1, code)
      assert.matches("cannot write the results", err)
      code, _, err = run_example("crawler.lua", "http://127.0.0.1:1/ --out " .. q(dir .. "/x.json") ..
                                 " --sqlite /nonexistent/dir/x.db")
      assert.are.equal(1, code)
      assert.matches("cannot use /nonexistent/dir/x%.db as SQLite", err)
      -- robots.txt that cannot be fetched means nothing may be crawled (RFC 9309)
      code, stdout, err = run_example("crawler.lua", "http://127.0.0.1:1/ --out " .. q(dir .. "/x.json"))
      assert.are.equal(1, code)
      assert.matches("robots%.txt unavailable, nothing may be crawled: connect: ", err)
      assert.are.equal("", stdout)
      assert.is_nil(io.open(dir .. "/x.json.part"))
    end)
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
