-- luarun.http clients' cookies, delay_per_host and retry, against spec/support/httpbin.py.
-- Times are the server's (/stamps: when each request arrived) and only bounded below:
-- the machine is shared, and a slow run must not fail a test.
local lr = require "luarun"
local http = require "luarun.http"
local srv = require "support.httpserver"

local function assert_clean()
  local s = lr.stats()
  assert.are.equal(0, s.tasks)
  assert.are.equal(0, s.handles)
  assert.are.equal(0, http.stats().requests)
end

local ids = 0
-- A key of its own for each use of /flaky and /stamp.
local function new_id()
  ids = ids + 1
  return "t" .. ids .. "-" .. math.random(1, 1e9)
end

describe("luarun.http client options", function()
  local bin, base, other

  setup(function()
    bin = srv.httpbin()
    base = bin.base
    other = "http://localhost:" .. bin.port -- the same server under another host name
  end)

  teardown(function()
    bin.stop()
    srv.cleanup()
  end)

  after_each(assert_clean)

  -- The arrival times the server recorded for id.
  local function stamps(id)
    return assert(http.get(base .. "/stamps?id=" .. id)):json().times
  end

  local function flaky(id, args)
    return base .. "/flaky?id=" .. id .. (args and ("&" .. args) or "")
  end

  local function jar_of(res)
    return res:json().cookies
  end

  describe("cookies", function()
    it("keeps a Set-Cookie of a 302 across the redirect and for the next request", function()
      lr.run(function()
        local c <close> = http.client({cookies = true})
        local res = assert(c:get(base .. "/cookies/set?a=1&b=2"))
        assert.are.equal(base .. "/cookies", res.url)
        assert.are.same({a = "1", b = "2"}, jar_of(res))
        assert.are.same({a = "1", b = "2"}, jar_of(assert(c:get(base .. "/cookies"))))
      end)
    end)

    it("sends a cookie only to its host and under its path", function()
      lr.run(function()
        local c <close> = http.client({cookies = true})
        assert(c:get(base .. "/response-headers",
                     {query = {["Set-Cookie"] = {"h=1; Path=/", "p=2; Path=/cookies"}}}))
        assert.are.same({h = "1", p = "2"}, jar_of(assert(c:get(base .. "/cookies"))))
        local echo = assert(c:get(base .. "/anything/x")):json()
        assert.are.equal("h=1", echo.headers.Cookie)
        assert.are.same({}, jar_of(assert(c:get(other .. "/cookies"))))
      end)
    end)

    it("gives each client its own jar, and the default client none", function()
      lr.run(function()
        local a <close> = http.client({cookies = true})
        local b <close> = http.client({cookies = true})
        local plain <close> = http.client()
        assert(a:get(base .. "/cookies/set?who=a"))
        assert(b:get(base .. "/cookies/set?who=b"))
        assert.are.same({who = "a"}, jar_of(assert(a:get(base .. "/cookies"))))
        assert.are.same({who = "b"}, jar_of(assert(b:get(base .. "/cookies"))))
        assert.are.same({}, jar_of(assert(plain:get(base .. "/cookies/set?x=1"))))
        assert.are.same({}, jar_of(assert(http.get(base .. "/cookies/set?x=1"))))
        assert.are.same({}, jar_of(assert(http.get(base .. "/cookies"))))
        assert.has_error(function() plain:cookies() end,
                         "client:cookies: the client keeps no cookies (make it with cookies = true)")
      end)
    end)

    it("lists the jar with every field", function()
      lr.run(function()
        local c <close> = http.client({cookies = true})
        local before = os.time()
        assert(c:get(base .. "/response-headers", {query = {["Set-Cookie"] = {
          "s=v1; Path=/", "h=v2; HttpOnly; Path=/cookies; Max-Age=1000"}}}))
        local jar = {}
        for _, k in ipairs(c:cookies()) do jar[k.name] = k end
        assert.are.same({name = "s", value = "v1", domain = "127.0.0.1", path = "/",
                         secure = false, http_only = false}, jar.s)
        local h = jar.h
        assert.are.equal("v2", h.value)
        assert.are.equal("/cookies", h.path)
        assert.is_true(h.http_only)
        assert.is_true(math.type(h.expires) == "integer" and h.expires >= before + 990)
      end)
    end)

    it("starts from a list of cookies, clears and adds", function()
      lr.run(function()
        local c <close> = http.client({cookies = {
          {name = "sid", value = "abc", domain = "127.0.0.1"},
          {name = "deep", value = "1", domain = "127.0.0.1", path = "/anything"},
          {name = "sub", value = "2", domain = ".example.com", secure = true,
           http_only = true, expires = 4102444800},
        }})
        assert.are.same({sid = "abc"}, jar_of(assert(c:get(base .. "/cookies"))))
        local echo = assert(c:get(base .. "/anything/x")):json()
        assert.are.equal("deep=1; sid=abc", echo.headers.Cookie)
        -- the list round-trips: a second client made from it holds the same cookies
        local copy <close> = http.client({cookies = c:cookies()})
        local function sorted(list)
          table.sort(list, function(x, y) return x.name < y.name end)
          return list
        end
        assert.are.same(sorted(c:cookies()), sorted(copy:cookies()))
        local sub = sorted(copy:cookies())[3]
        assert.are.same({name = "sub", value = "2", domain = ".example.com", path = "/",
                         secure = true, http_only = true, expires = 4102444800}, sub)
        assert.are.same({}, c:cookies({clear = true}))
        assert.are.same({}, jar_of(assert(c:get(base .. "/cookies"))))
        local now = c:cookies({add = {{name = "n", value = "", domain = "127.0.0.1"}}})
        assert.are.equal(1, #now)
        assert.are.equal("", now[1].value)
      end)
    end)

    it("keeps the jar on a handle that was reset (an option that taints it)", function()
      lr.run(function()
        local c <close> = http.client({cookies = true, max_connections = 1})
        -- verify = false makes the handle reset at its release; the next request
        -- takes the same handle from the free list.
        assert(c:get(base .. "/cookies/set?a=1", {verify = false}))
        assert(c:get(base .. "/response-headers", {query = {["Set-Cookie"] = "b=2; Path=/"}}))
        assert.are.same({a = "1", b = "2"}, jar_of(assert(c:get(base .. "/cookies"))))
      end)
    end)

    it("raises on a bad cookies option, naming the function", function()
      local cases = {
        {function() http.client({cookies = 1}) end, "http.client: option 'cookies' must be"},
        {function() http.client({cookies = {1}}) end, "http.client: cookie 1 must be a table"},
        {function() http.client({cookies = {{name = "a"}}}) end, "needs a name and a domain"},
        {function() http.client({cookies = {{name = "a\tb", domain = "x"}}}) end,
         "without tab, CR, LF or NUL"},
        {function() http.client({cookies = {{name = "a", domain = "x", expires = -1}}}) end,
         "'expires' must be"},
        {function() http.client({cookies = {{name = "a", domain = "#x"}}}) end, "invalid domain"},
        {function() http.client({cookies = {{name = "a", domain = "x", secure = 1}}}) end,
         "'secure' must be a boolean"},
        {function() http.client({cookies = true}):cookies({nope = true}) end,
         "client:cookies: unknown option 'nope'"},
        {function() http.get(base, {cookies = true}) end, "only for http.client"},
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(case[1])
        assert.is_false(ok)
        assert.is_truthy(tostring(err):find(case[2], 1, true), tostring(err))
      end
      local c = http.client({cookies = true})
      c:close()
      assert.has_error(function() c:cookies() end, "client:cookies: the http client is closed")
    end)
  end)

  describe("delay_per_host", function()
    it("spaces the starts of requests to one host, in arrival order", function()
      lr.run(function()
        local id = new_id()
        local c <close> = http.client({delay_per_host = 0.1})
        local order = {}
        lr.map({1, 2, 3, 4, 5}, function(i)
          local res = assert(c:get(base .. "/stamp?id=" .. id))
          order[i] = res:json().n
        end)
        assert.are.same({1, 2, 3, 4, 5}, order)
        local t = stamps(id)
        assert.are.equal(5, #t)
        assert.is_true(t[5] - t[1] >= 0.35, "span " .. (t[5] - t[1]))
      end)
    end)

    it("keeps hosts apart: one host's queue does not hold up another's", function()
      lr.run(function()
        local a, b = new_id(), new_id()
        local c <close> = http.client({delay_per_host = 1})
        local tasks = {
          lr.spawn(function() return assert(c:get(base .. "/stamp?id=" .. a)) end),
          lr.spawn(function() return assert(c:get(base .. "/stamp?id=" .. a)) end),
          lr.spawn(function() return assert(c:get(other .. "/stamp?id=" .. b)) end),
        }
        for _, t in ipairs(tasks) do t:wait() end
        local ta, tb = stamps(a), stamps(b)
        assert.is_true(ta[2] - ta[1] >= 0.9)
        assert.is_true(tb[1] < ta[2], "the other host waited for this one's turn")
      end)
    end)

    it("a cancelled waiter hands its turn on", function()
      lr.run(function()
        local id = new_id()
        local c <close> = http.client({delay_per_host = 0.3})
        local url = base .. "/stamp?id=" .. id
        local first = lr.spawn(function() return assert(c:get(url)) end)
        local second = lr.spawn(function() return c:get(url) end)
        local third = lr.spawn(function() return assert(c:get(url)) end)
        local fourth = lr.spawn(function() return c:get(url) end)
        lr.sleep(0.05)
        second:cancel() -- the waiter whose turn is next
        fourth:cancel() -- one further back
        assert.are.equal(200, first:wait().status)
        assert.are.equal(200, third:wait().status)
        local ok, err = pcall(second.wait, second)
        assert.is_false(ok)
        assert.are.equal("cancelled", err.kind)
        assert.is_false(pcall(fourth.wait, fourth))
        local t = stamps(id)
        assert.are.equal(2, #t)
        assert.is_true(t[2] - t[1] >= 0.25)
      end)
    end)

    it("closing the client ends the waits with kind cancelled", function()
      lr.run(function()
        local id = new_id()
        local c = http.client({delay_per_host = 30})
        local url = base .. "/stamp?id=" .. id
        assert(c:get(url))
        local waiting = lr.spawn(function() return c:get(url) end)
        lr.sleep(0.05)
        c:close()
        local res, err = waiting:wait()
        assert.is_nil(res)
        assert.are.equal("cancelled", err.kind)
        assert.are.equal(1, #stamps(id))
      end)
    end)

    it("raises on a bad delay_per_host", function()
      assert.has_error(function() http.client({delay_per_host = -1}) end)
      assert.has_error(function() http.client({delay_per_host = "1"}) end)
      local ok, err = pcall(http.get, base, {delay_per_host = 1})
      assert.is_false(ok)
      assert.is_truthy(err:find("only for http.client", 1, true))
    end)
  end)

  describe("retry", function()

    it("retries a 503 until a 200, and counts the tries", function()
      lr.run(function()
        local id = new_id()
        local res = assert(http.get(flaky(id, "fail=2"), {retry = {attempts = 4, backoff = 0.01}}))
        assert.are.equal(200, res.status)
        assert.are.equal(3, res.attempts)
        assert.are.equal(3, res:json().attempt)
        assert.are.equal(3, #stamps(id))
      end)
    end)

    it("gives up after attempts and returns the last response as a response", function()
      lr.run(function()
        local id = new_id()
        local res, err = http.get(flaky(id, "fail=10"), {retry = {attempts = 3, backoff = 0.01}})
        assert.is_nil(err)
        assert.are.equal(503, res.status)
        assert.is_false(res.ok)
        assert.are.equal(3, res.attempts)
        assert.are.equal(3, res:json().attempt)
      end)
    end)

    it("honours Retry-After in seconds", function()
      lr.run(function()
        local id = new_id()
        local res = assert(http.get(flaky(id, "fail=1&retry_after=1"),
                                    {retry = {backoff = 0.01}}))
        assert.are.equal(2, res.attempts)
        local t = stamps(id)
        assert.is_true(t[2] - t[1] >= 0.9, "waited " .. (t[2] - t[1]))
      end)
    end)

    it("honours Retry-After as an HTTP date", function()
      lr.run(function()
        local id = new_id()
        -- Two seconds ahead at a whole second's precision: one second at least.
        local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 2)
        local res = assert(http.get(flaky(id, "fail=1"), {
          query = {retry_after = date}, retry = {backoff = 0.01}}))
        assert.are.equal(200, res.status)
        local t = stamps(id)
        assert.is_true(t[2] - t[1] >= 0.9, "waited " .. (t[2] - t[1]))
      end)
    end)

    it("takes a date in the past as no Retry-After (no negative wait)", function()
      lr.run(function()
        local id = new_id()
        -- libcurl 7.88 reports a past date as a negative number of seconds.
        local res, err = lr.timeout(30, http.get, flaky(id, "fail=1"), {
          query = {retry_after = "Wed, 21 Oct 2015 07:28:00 GMT"}, retry = {backoff = 0.01}})
        assert.is_nil(err)
        assert.are.equal(200, res.status)
        assert.are.equal(2, res.attempts)
      end)
    end)

    it("caps a long Retry-After at max_wait", function()
      lr.run(function()
        local id = new_id()
        local res, err = lr.timeout(30, http.get, flaky(id, "fail=1&retry_after=3600"),
                                    {retry = {max_wait = 0.2}})
        assert.is_nil(err)
        assert.are.equal(200, res.status)
        local t = stamps(id)
        assert.is_true(t[2] - t[1] >= 0.19)
      end)
    end)

    it("backs off exponentially without Retry-After", function()
      lr.run(function()
        local id = new_id()
        local res = assert(http.get(flaky(id, "fail=3"), {retry = {attempts = 4, backoff = 0.1}}))
        assert.are.equal(4, res.attempts)
        local t = stamps(id)
        -- waits of a random half to all of 0.1, 0.2 and 0.4 s: the third at least
        -- 0.2 s, which a backoff that did not grow could not reach
        assert.is_true(t[2] - t[1] >= 0.045)
        assert.is_true(t[3] - t[2] >= 0.095)
        assert.is_true(t[4] - t[3] >= 0.195, "third wait " .. (t[4] - t[3]))
      end)
    end)

    it("retries only the statuses in on", function()
      lr.run(function()
        local id = new_id()
        local res = assert(http.get(flaky(id, "fail=1&status=500"),
                                    {retry = {on = {503}, backoff = 0.01}}))
        assert.are.equal(500, res.status)
        assert.are.equal(1, res.attempts)
        res = assert(http.get(flaky(new_id(), "fail=1&status=429"), {retry = {backoff = 0.01}}))
        assert.are.equal(200, res.status)
        assert.are.equal(2, res.attempts)
      end)
    end)

    it("retries a POST on 503 with its body whole, but not on 500", function()
      lr.run(function()
        local body = string.rep("0123456789", 5000)
        local res = assert(http.post(flaky(new_id(), "fail=1"),
                                     {body = body, retry = {backoff = 0.01}}))
        assert.are.equal(200, res.status)
        assert.are.equal(2, res.attempts)
        assert.are.equal(body, res:json().body)
        res = assert(http.post(flaky(new_id(), "fail=1&status=500"),
                               {body = "x", retry = {backoff = 0.01}}))
        assert.are.equal(500, res.status)
        assert.are.equal(1, res.attempts)
        res = assert(http.request("PUT", flaky(new_id(), "fail=1&status=500"),
                                  {body = "x", retry = {backoff = 0.01}}))
        assert.are.equal(200, res.status)
      end)
    end)

    it("retries connection failures only when on has \"network\"", function()
      lr.run(function()
        -- a port nobody listens on (1: tcpmux, unused on any machine we run on)
        local url = "http://127.0.0.1:1/get"
        local _, err = http.get(url, {retry = {backoff = 0.01}})
        assert.are.equal("connect", err.kind)
        assert.are.equal(1, err.attempts)
        _, err = http.get(url, {retry = {attempts = 3, backoff = 0.01, on = {"network"}}})
        assert.are.equal("connect", err.kind)
        assert.are.equal(3, err.attempts)
      end)
    end)

    it("truncates the output file for each try", function()
      lr.run(function()
        local dir = srv.tmpdir()
        local path = dir .. "/out.json"
        local res = assert(http.get(flaky(new_id(), "fail=2"),
                                    {output = path, retry = {backoff = 0.01}}))
        assert.are.equal(3, res.attempts)
        local f = assert(io.open(path))
        local text = f:read("a")
        f:close()
        assert.are.equal(3, require("luarun.json").decode(text).attempt)
      end)
    end)

    it("a request's retry option replaces the client's", function()
      lr.run(function()
        local c <close> = http.client({retry = {attempts = 5, backoff = 0.01}})
        local res = assert(c:get(flaky(new_id(), "fail=1")))
        assert.are.equal(2, res.attempts)
        res = assert(c:get(flaky(new_id(), "fail=1"), {retry = false}))
        assert.are.equal(503, res.status)
        assert.is_nil(res.attempts)
        res = assert(c:get(flaky(new_id(), "fail=9"), {retry = {attempts = 2, backoff = 0.01}}))
        assert.are.equal(503, res.status)
        assert.are.equal(2, res.attempts)
      end)
    end)

    it("cancelling a task in a retry wait raises in it at once", function()
      lr.run(function()
        local id = new_id()
        local t = lr.spawn(function()
          return http.get(flaky(id, "fail=1&retry_after=30"), {retry = true})
        end)
        for _ = 1, 200 do
          if #stamps(id) == 1 then break end
          lr.sleep(0.02)
        end
        lr.sleep(0.05)
        t:cancel()
        local ok, err = pcall(t.wait, t)
        assert.is_false(ok)
        assert.are.equal("cancelled", err.kind)
        assert.are.equal(1, #stamps(id))
      end)
    end)

    it("closing the client ends a retry wait with kind cancelled", function()
      lr.run(function()
        local id = new_id()
        local c = http.client({retry = {max_wait = 30}})
        local t = lr.spawn(function() return c:get(flaky(id, "fail=1&retry_after=30")) end)
        for _ = 1, 200 do
          if #stamps(id) == 1 then break end
          lr.sleep(0.02)
        end
        lr.sleep(0.05)
        c:close()
        local res, err = t:wait()
        assert.is_nil(res)
        assert.are.equal("cancelled", err.kind)
        assert.are.equal(1, err.attempts)
      end)
    end)

    it("goes through delay_per_host on every try", function()
      lr.run(function()
        local id = new_id()
        local c <close> = http.client({delay_per_host = 0.2, retry = {backoff = 0.001}})
        local res = assert(c:get(flaky(id, "fail=2")))
        assert.are.equal(3, res.attempts)
        local t = stamps(id)
        assert.is_true(t[2] - t[1] >= 0.15 and t[3] - t[2] >= 0.15)
      end)
    end)

    it("raises on a bad retry option, naming the function", function()
      local cases = {
        {{retry = "yes"}, "http.get: option 'retry' must be true, false or a table"},
        {{retry = {attempts = 0}}, "option 'retry.attempts' must be an integer >= 1"},
        {{retry = {backoff = -1}}, "'backoff' must be a number of seconds >= 0"},
        {{retry = {max_wait = math.huge}}, "'max_wait' must be a number of seconds >= 0"},
        {{retry = {on = 503}}, "'on' must be a list of statuses"},
        {{retry = {on = {99}}}, "'on' must hold statuses"},
        {{retry = {on = {"dns"}}}, "'on' must hold statuses"},
        {{retry = {tries = 3}}, "option 'retry': unknown field tries"},
      }
      lr.run(function()
        for _, case in ipairs(cases) do
          local ok, err = pcall(http.get, base .. "/get", case[1])
          assert.is_false(ok)
          assert.is_truthy(tostring(err):find(case[2], 1, true), tostring(err))
        end
      end)
      assert.has_error(function() http.client({retry = {attempts = 1.5}}) end,
                       "http.client: option 'retry.attempts' must be an integer >= 1")
    end)
  end)

  -- Bytes from the network reach the jar through libcurl's cookie parser and come back
  -- through ours (client:cookies() reads curl's cookie lines); a retry's wait comes from
  -- a Retry-After header. Random inputs, seeded, a bounded count.
  describe("fuzz", function()
    local rand
    local pieces = {"a", "=", ";", " ", ",", "Path=/", "Path=", "Domain=", "domain=127.0.0.1",
                    "Domain=.0.0.1", "Expires=", "Max-Age=", "Max-Age=-1", "HttpOnly", "Secure",
                    "SameSite=Lax", "__Host-", "__Secure-", "\t", "\"", "Thu, 01 Jan 1970 00:00:00 GMT",
                    "Fri, 31 Dec 9999 23:59:59 GMT", "#HttpOnly_", "%", "\\", "é", "0", "99999999999"}

    local function random_text(max)
      local out = {}
      for i = 1, rand(0, max) do
        if rand(1, 3) == 1 then
          out[i] = pieces[rand(1, #pieces)]
        else
          out[i] = string.char(rand(32, 126))
        end
      end
      return table.concat(out)
    end

    local function check_cookie(k)
      assert.are.equal("string", type(k.name))
      assert.are.equal("string", type(k.value))
      assert.are.equal("string", type(k.domain))
      assert.are.equal("string", type(k.path))
      assert.are.equal("boolean", type(k.secure))
      assert.are.equal("boolean", type(k.http_only))
      assert.is_true(k.expires == nil or math.type(k.expires) == "integer")
    end

    before_each(function()
      math.randomseed(16)
      rand = math.random
    end)

    it("random Set-Cookie headers: the jar lists them, whatever they hold", function()
      lr.run(function()
        local c <close> = http.client({cookies = true})
        for i = 1, 150 do
          local header = random_text(12)
          if i % 3 == 0 then header = "n" .. i .. "=" .. header end
          local res = assert(c:get(base .. "/response-headers", {query = {["Set-Cookie"] = header}}))
          assert.are.equal(200, res.status)
          if i % 10 == 0 then
            for _, k in ipairs(c:cookies()) do check_cookie(k) end
            assert(c:get(base .. "/cookies")) -- and they can be sent
          end
        end
        for _, k in ipairs(c:cookies()) do check_cookie(k) end
      end)
    end)

    it("random cookie tables: added, or refused with a message", function()
      lr.run(function()
        local c <close> = http.client({cookies = true})
        for i = 1, 300 do
          local function field()
            local pick = rand(1, 6)
            if pick == 1 then return nil end
            if pick == 2 then return rand(-5, 5) end
            if pick == 3 then return string.char(rand(0, 255), rand(0, 255)) end
            return random_text(6)
          end
          local cookie = {name = field(), value = field(), domain = field(), path = field(),
                          secure = rand(1, 3) == 1 or nil, expires = rand(1, 4) == 1 and rand(-2, 2^40) or nil}
          local ok, err = pcall(c.cookies, c, {add = {cookie}})
          if ok then
            for _, k in ipairs(err) do check_cookie(k) end
          else
            assert.is_truthy(tostring(err):find("client:cookies: cookie 1", 1, true), tostring(err))
          end
          if i % 50 == 0 then assert(c:get(base .. "/cookies")) end
        end
      end)
    end)

    it("random Retry-After values: never a wait past max_wait", function()
      lr.run(function()
        local values = {"-1", "-99999999999", "99999999999999999999", "1e9", "0x10", " 3 ",
                        "Thu, 01 Jan 1970 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", ""}
        for i = 1, 40 do values[#values + 1] = random_text(8) end
        for _, v in ipairs(values) do
          local res, err = lr.timeout(30, http.get, flaky(new_id(), "fail=1"),
            {query = {retry_after = v}, retry = {attempts = 2, backoff = 0.01, max_wait = 0.05}})
          assert.is_nil(err)
          assert.are.equal(200, res.status)
          assert.are.equal(2, res.attempts)
        end
      end)
    end)
  end)
end)
