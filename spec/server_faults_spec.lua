-- http.serve's defences (issue 14), with raw sockets (support/rawclient.py and small
-- Python scripts): slowloris against header_timeout, 431, 413, 503 from
-- request_timeout, idle_timeout, max_connections through the backlog, 400 for
-- malformed requests, 417. After every case a normal request still works.
local util = require "support.util"
local sp = require "support.serveproc"

local q = util.quote
local asan = os.getenv("LUARUN_CHILD_ASAN_OPTIONS") ~= nil

-- A handler for every server here: /drip and /probe answer at once, /read reads the
-- body (as a whole or in pieces), /sleep sleeps, saying on stdout when it is cancelled.
local HANDLER = [==[
local function handler(req)
  if req.path == "/probe" then return "probe " .. req.query.i end
  if req.path == "/read" then
    local body, err = req:body()
    if not body then say("body error", err.kind, err.status) error(err) end
    return "read " .. #body
  end
  if req.path == "/pieces" then
    local n = 0
    for piece in req:body_chunks() do n = n + #piece end
    return "pieces " .. n
  end
  if req.path == "/sleep" then
    local id = req.query.id or "?"
    local guard <close> = setmetatable({}, {__close = function(_, e)
      if type(e) == "table" and e.kind == "cancelled" then say("cancelled", id) end
    end})
    lr.sleep(tonumber(req.query.t))
    return "slept " .. id
  end
  return "ok " .. req.method
end
]==]

local function start(opts_lua)
  return sp.start(HANDLER .. "server = http.serve(" .. opts_lua .. ", handler)\n")
end

-- A normal request on a fresh connection works.
local function still_works(s)
  local st, body = sp.get(s.port, "/probe?i=1")
  assert.are.equal(200, st, "a normal request after the fault")
  assert.are.equal("probe 1", body)
end

local function stop(s)
  assert.is_true(s.alive(), "the server is still running")
  local rc, err = s.stop()
  assert.are.equal(130, rc, err)
  assert.is_nil(err:find("Sanitizer"), err)
  return err
end

local function wait_said(s, pattern, seconds)
  local t_end = os.time() + (seconds or 5)
  repeat
    for _, l in ipairs(s.lines()) do if l:find(pattern) then return true end end
    os.execute("sleep 0.05")
  until os.time() > t_end
  return false
end

-- The one response of an exchange, and whether the server closed.
local function answer(port, parts, opts)
  opts = opts or {}
  opts.timeout = opts.timeout or 5
  local r = sp.exchange(port, parts, opts)
  return r.responses[#r.responses] or {}, r
end

describe("http.serve defences", function()
  describe("slowloris", function()
    it("500 connections dripping a byte a second do not slow a normal client; they get 408", function()
      local s = start("{header_timeout = 2}")
      finally(function() s.stop() end)
      local r = sp.raw("slowloris", s.port, {n = 500, silent = 20, duration = 1.2, probes = 12, wait = 20})
      -- the drippers were all still open while the probes ran
      assert.are.equal(520, r.open_during_probes)
      local worst = 0
      for i, p in ipairs(r.probes) do
        assert.is_true(p.ok, "probe " .. i .. ": " .. p.data)
        worst = math.max(worst, p.ms)
      end
      assert.is_true(worst < (asan and 300 or 100), "slowest probe took " .. worst .. " ms")
      local n408, nclosed = 0, 0
      for i, d in ipairs(r.drippers) do
        if i <= 500 then
          -- part of a head came: 408, then close, once header_timeout passed (it covers
          -- the whole head, however the bytes trickle)
          assert.are.equal("answered", d.how, "dripper " .. i .. ": " .. tostring(d.how))
          assert.truthy(d.data:find("^HTTP/1.1 408 Request Timeout\r\n"), d.data)
          assert.truthy(d.data:find("\r\nconnection: close\r\n"), d.data)
          assert.is_true(d.at >= 1.8 and d.at < 6, "408 after " .. d.at .. " s")
          n408 = n408 + 1
        else
          -- nothing came: closed without a word
          assert.are.equal("closed", d.how, "silent " .. i .. ": " .. tostring(d.how))
          assert.are.equal("", d.data)
          assert.is_true(d.at >= 1.8 and d.at < 6, "closed after " .. d.at .. " s")
          nclosed = nclosed + 1
        end
      end
      assert.are.equal(500, n408)
      assert.are.equal(20, nclosed)
      still_works(s)
      stop(s)
    end)
  end)

  describe("limits", function()
    local s

    setup(function()
      s = start("{request_timeout = 0.5, max_body_size = 1000}")
    end)

    teardown(function()
      stop(s)
    end)

    after_each(function()
      still_works(s)
    end)

    it("431 for a header over max_header_size (16 KiB by default), and closes", function()
      local res, r = answer(s.port, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("v", 17000) .. "\r\n\r\n")
      assert.are.equal(431, res.status)
      assert.is_true(r.closed)
      assert.are.equal("close", res.headers.connection)
      -- under the limit: fine
      res = answer(s.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " ..
                   string.rep("v", 15000) .. "\r\n\r\n")
      assert.are.equal(200, res.status)
      -- a huge request line counts too
      res, r = answer(s.port, "GET /" .. string.rep("a", 20000) .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.are.equal(431, res.status)
      assert.is_true(r.closed)
    end)

    it("431 for a header sent in many small writes", function()
      local parts = {"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "}
      for i = 1, 20 do parts[#parts + 1] = string.rep("w", 1000) end
      parts[#parts + 1] = "\r\n\r\n"
      local res, r = answer(s.port, parts, {gap = 0.005})
      assert.are.equal(431, res.status)
      assert.is_true(r.closed)
    end)

    it("431 for more than max_headers (100) headers", function()
      local h = {}
      for i = 1, 101 do h[i] = "X-H" .. i .. ": v\r\n" end
      local res, r = answer(s.port, "GET / HTTP/1.1\r\n" .. table.concat(h) .. "\r\n")
      assert.are.equal(431, res.status)
      assert.is_true(r.closed)
      h[100], h[101] = "Connection: close\r\n", nil
      res = answer(s.port, "GET / HTTP/1.1\r\n" .. table.concat(h) .. "\r\n")
      assert.are.equal(200, res.status)
    end)

    it("413 from a Content-Length over max_body_size, before any body is sent", function()
      local res, r = answer(s.port, "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
      assert.are.equal(413, res.status)
      assert.is_true(r.closed)
      assert.is_true(r.elapsed < 2)
      -- at the limit: read
      res = answer(s.port, "POST /read HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n" ..
                   string.rep("b", 1000))
      assert.are.equal(200, res.status)
      assert.are.equal("read 1000", res.body)
    end)

    it("413 when a chunked body passes max_body_size, to a reader and to a non-reader", function()
      local chunks = {"POST /pieces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"}
      for i = 1, 12 do chunks[#chunks + 1] = "64\r\n" .. string.rep("c", 100) .. "\r\n" end
      chunks[#chunks + 1] = "0\r\n\r\n"
      local res, r = answer(s.port, chunks, {gap = 0.01})
      assert.are.equal(413, res.status, r.data)
      assert.is_true(r.closed)
      chunks[1] = "POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      res, r = answer(s.port, table.concat(chunks))
      assert.are.equal(413, res.status, r.data)
      assert.is_true(r.closed)
    end)

    it("a handler that answers before its body is in: the rest is dropped, the next request served", function()
      -- (the connection used to stay paused for good after such a body)
      local chunks = {"POST /probe?i=5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"}
      for i = 1, 8 do chunks[#chunks + 1] = "64\r\n" .. string.rep("c", 100) .. "\r\n" end
      chunks[#chunks + 1] = "0\r\n\r\nGET /probe?i=6 HTTP/1.1\r\nHost: x\r\n\r\n"
      local r = sp.exchange(s.port, chunks, {gap = 0.01, responses = 2, timeout = 5})
      assert.are.equal(2, #r.responses, r.data)
      assert.are.equal("probe 5", r.responses[1].body)
      assert.are.equal("probe 6", r.responses[2].body)
      r = sp.exchange(s.port, {"POST /probe?i=7 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
                               "0123456789GET /probe?i=8 HTTP/1.1\r\nHost: x\r\n\r\n"},
                      {gap = 0.2, responses = 2, timeout = 5})
      assert.are.equal(2, #r.responses, r.data)
      assert.are.equal("probe 8", r.responses[2].body)
      -- Dropped, but not without end: past max_body_size (1000 here) the connection goes.
      chunks = {"POST /probe?i=9 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"}
      for i = 1, 12 do chunks[#chunks + 1] = "64\r\n" .. string.rep("c", 100) .. "\r\n" end
      chunks[#chunks + 1] = "0\r\n\r\nGET /probe?i=10 HTTP/1.1\r\nHost: x\r\n\r\n"
      r = sp.exchange(s.port, chunks, {gap = 0.01, responses = 2, timeout = 3})
      assert.are.equal(1, #r.responses, r.data)
      assert.are.equal("probe 9", r.responses[1].body)
      assert.is_true(r.closed)
    end)

    it("503 after request_timeout, the handler cancelled", function()
      local res, r = answer(s.port, "GET /sleep?t=10&id=rt1 HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.are.equal(503, res.status)
      assert.is_true(r.closed)
      assert.is_true(r.elapsed >= 0.4 and r.elapsed < 3, "after " .. r.elapsed .. " s")
      assert.is_true(wait_said(s, "^cancelled rt1$"), s.out())
      -- under the timeout: answered
      res = answer(s.port, "GET /sleep?t=0.1&id=rt2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      assert.are.equal("slept rt2", res.body)
    end)

    it("503 after request_timeout while a streamed upload never ends", function()
      local res, r = answer(s.port, {"POST /pieces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                                     "5\r\nhello\r\n"})
      assert.are.equal(503, res.status, r.data)
      assert.is_true(r.closed)
    end)
  end)

  describe("timeouts and connections", function()
    it("idle_timeout closes a keep-alive connection; header_timeout a silent one", function()
      local s = start("{idle_timeout = 0.5, header_timeout = 1}")
      finally(function() s.stop() end)
      local res, r = answer(s.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", {timeout = 5})
      assert.are.equal(200, res.status)
      assert.is_true(r.closed)
      assert.is_true(r.elapsed >= 0.4 and r.elapsed < 2.5, "closed after " .. r.elapsed .. " s")
      -- requests within idle_timeout of each other keep it open
      r = sp.exchange(s.port, {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                               "GET / HTTP/1.1\r\nHost: x\r\n\r\n"}, {gap = 0.3, timeout = 5})
      assert.are.equal(3, #r.responses)
      assert.is_true(r.closed)
      -- a connection that sends nothing: closed after header_timeout, no 408
      r = sp.exchange(s.port, {}, {timeout = 5})
      assert.is_true(r.closed)
      assert.are.equal("", r.data)
      assert.is_true(r.elapsed >= 0.4 and r.elapsed < 2.5, "closed after " .. r.elapsed .. " s")
      still_works(s)
      stop(s)
    end)

    it("max_connections: excess connections wait in the backlog and are served once others close", function()
      local s = start("{max_connections = 3}")
      finally(function() s.stop() end)
      local py = [[
import socket, sys, time
port = int(sys.argv[1])
def conn():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s
def ask(s, close=False):
    s.sendall(b"GET /probe?i=7 HTTP/1.1\r\nHost: x\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n")
held = [conn() for _ in range(3)]
for h in held:
    ask(h)
    assert b"probe 7" in h.recv(4096)
waiting = conn()          # the kernel accepts it; the server does not yet
ask(waiting, close=True)
waiting.settimeout(0.7)
try:
    early = waiting.recv(4096)
except socket.timeout:
    early = None
held.pop().close()        # one leaves: the waiting one is let in
waiting.settimeout(5)
t = time.monotonic()
late = waiting.recv(4096)
print("early", early is None)
print("late", b"probe 7" in late, round(time.monotonic() - t, 1) < 2)
# a burst of 100 clients through 3 slots: every one answered
ok = 0
for s in held:
    s.close()
burst = [conn() for _ in range(100)]
for s in burst:
    ask(s, close=True)
for s in burst:
    s.settimeout(10)
    data = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
    ok += b"probe 7" in data
    s.close()
print("burst", ok)
]]
      local code, out, err = util.sh("timeout 60 " .. sp.py .. " -c " .. q(py) .. " " .. s.port)
      assert.are.equal(0, code, err .. out)
      assert.are.equal("early True\nlate True True\nburst 100\n", out)
      still_works(s)
      stop(s)
    end)
  end)

  describe("malformed requests", function()
    local s

    setup(function()
      s = start("{}")
    end)

    teardown(function()
      stop(s)
    end)

    local CASES = {
      {"a bad request line", "GARBAGE\r\n\r\n"},
      {"a request line with no version", "GET /\r\nHost: x\r\n\r\n", 505}, -- HTTP/0.9
      {"a bad method", "G@T / HTTP/1.1\r\nHost: x\r\n\r\n"},
      {"an invalid version", "GET / HTTP/1.x\r\nHost: x\r\n\r\n"},
      {"an absurd version", "GET / HTTP/12.1\r\nHost: x\r\n\r\n"},
      {"a header with no colon", "GET / HTTP/1.1\r\nHost x\r\n\r\n"},
      {"HTTP/2.0 framed as HTTP/1", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
      {"a space before the colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n"},
      {"Content-Length with a space before the colon (smuggling)",
       "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length : 40\r\n\r\nGET /probe?i=9 HTTP/1.1\r\nHost: x\r\n\r\n"},
      {"Transfer-Encoding with a tab before the colon",
       "POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n"},
      {"a control byte in a header name", "GET / HTTP/1.1\r\nX-\1A: y\r\n\r\n"},
      {"Transfer-Encoding with Content-Length (smuggling)",
       "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /probe?i=9 HTTP/1.1\r\n\r\n"},
      {"two different Content-Lengths", "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"},
      {"a non-numeric Content-Length", "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 4x\r\n\r\nabcd"},
      {"a Transfer-Encoding that does not end in chunked", "POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"},
      {"a bad chunk size", "POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"},
      {"a chunk size that overflows", "POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc\r\n"},
      {"a NUL in the target", "GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n"},
    }

    for _, c in ipairs(CASES) do
      it(c[1] .. ": " .. (c[3] or 400) .. " and the connection closed", function()
        local res, r = answer(s.port, c[2])
        assert.are.equal(c[3] or 400, res.status, r.data)
        assert.is_true(r.closed, r.data)
        assert.are.equal(1, #r.responses, r.data) -- nothing smuggled after it
        still_works(s)
      end)
    end

    it("the same, split into one-byte writes", function()
      local parts = {}
      local text
      for _, c in ipairs(CASES) do
        if c[1]:find("^Transfer%-Encoding with Content%-Length") then text = c[2] end
      end
      for i = 1, #text do parts[i] = text:sub(i, i) end
      local res, r = answer(s.port, parts)
      assert.are.equal(400, res.status, r.data)
      assert.are.equal(1, #r.responses, r.data)
      assert.is_true(r.closed)
    end)

    it("an expectation other than 100-continue: 417 and closed", function()
      local res, r = answer(s.port, "POST /read HTTP/1.1\r\nHost: x\r\nExpect: something\r\nContent-Length: 3\r\n\r\nabc")
      assert.are.equal(417, res.status, r.data)
      assert.is_true(r.closed)
      still_works(s)
    end)

    it("a bad request after good pipelined ones: they are answered, then 400", function()
      local r = sp.exchange(s.port, "GET /probe?i=1 HTTP/1.1\r\nHost: x\r\n\r\n" ..
                            "GET /probe?i=2 HTTP/1.1\r\nHost: x\r\n\r\nBAD STUFF\r\n\r\n", {timeout = 5})
      assert.are.equal(3, #r.responses, r.data)
      assert.are.equal("probe 1", r.responses[1].body)
      assert.are.equal("probe 2", r.responses[2].body)
      assert.are.equal(400, r.responses[3].status)
      assert.is_true(r.closed)
      still_works(s)
    end)

    it("a client that resets mid-head, mid-body, and mid-response leaves the server serving", function()
      sp.exchange(s.port, "GET /probe?i=1 HTTP/1.1\r\nHost: x\r\nX-Half", {timeout = 0.1, reset = true})
      sp.exchange(s.port, "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
                  {timeout = 0.1, reset = true})
      sp.exchange(s.port, "GET /sleep?t=0.2&id=rs HTTP/1.1\r\nHost: x\r\n\r\n", {timeout = 0.1, reset = true})
      still_works(s)
      assert.is_true(wait_said(s, "^cancelled rs$"), s.out())
    end)
  end)
end)
