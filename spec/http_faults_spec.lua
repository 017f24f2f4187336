-- luarun.http against a server that misbehaves on purpose (spec/support/badserver.py,
-- plain and TLS): every fault must come back as nil, err with a stable kind, within
-- its timeout, and leave the client able to make the next request.
local lr = require "luarun"
local http = require "luarun.http"
local srv = require "support.httpserver"

-- Generous for the sanitizer build; the faults that need no timeout fail at once. A
-- request that hung instead would end with kind "timeout" after FUSE seconds.
local QUICK, FUSE = 10, 20

local function assert_clean()
  local s = lr.stats()
  assert.are.equal(0, s.tasks)
  assert.are.equal(0, s.handles)
  assert.are.equal(0, http.stats().requests)
end

-- Requests url on client c and checks the failure: nil, err of that kind, within
-- [min_s, max_s] seconds. Returns err.
local function expect_failure(c, url, opts, kind, min_s, max_s)
  local t0 = lr.now()
  opts = opts or {timeout = FUSE}
  local res, err = c:get(url, opts)
  local took = lr.now() - t0
  assert.is_nil(res, url .. " gave a response: " .. tostring(res and res.status))
  assert.are.equal("table", type(err), url)
  assert.are.equal(kind, err.kind, url .. ": " .. tostring(err))
  assert.are.equal(url, err.url)
  assert.is_true(took >= min_s and took <= max_s,
                 url .. " took " .. took .. " s, not " .. min_s .. "-" .. max_s)
  return err
end

local function expect_ok(c, url, opts)
  local res = assert(c:get(url, opts))
  assert.are.equal(200, res.status)
  assert.are.equal("ok", res.body)
  return res
end

describe("luarun.http against a misbehaving server", function()
  local bad, cert, plain, tls

  setup(function()
    local key
    cert, key = srv.self_signed()
    bad = srv.badserver({tls = {cert, key}})
    plain = bad.base
    tls = "https://127.0.0.1:" .. bad.ports.tls
  end)

  teardown(function()
    bad.stop()
    srv.cleanup()
  end)

  after_each(assert_clean)

  -- path -> kind: faults that need no timeout to be noticed.
  local quick = {
    {"/cut/status", "protocol"},
    {"/cut/mid-header", "protocol"},
    {"/cut/after-header", "protocol"},
    {"/cut/no-blank-length", "protocol"},
    {"/garbage-status", "protocol"},
    {"/not-http", "protocol"},
    {"/chunk/non-hex", "protocol"},
    {"/chunk/huge", "protocol"},
    {"/chunk/negative", "protocol"},
    {"/chunk/truncated", "protocol"},
    {"/short-body", "protocol"},
    {"/reset/before-headers", "protocol"},
    {"/reset/after-headers", "protocol"},
    {"/big-line", "too_large"},
    {"/many-headers?n=4&size=100000", "too_large"},
  }

  describe("plain HTTP", function()
    for _, case in ipairs(quick) do
      local path, kind = case[1], case[2]
      it(path .. " fails with " .. kind .. " and the client goes on", function()
        lr.run(function()
          local c <close> = http.client()
          expect_ok(c, plain .. "/ok")
          expect_failure(c, plain .. path, nil, kind, 0, QUICK)
          expect_ok(c, plain .. "/ok")
        end)
      end)
    end

    it("the faults one after another on one client, twice", function()
      lr.run(function()
        local c <close> = http.client()
        for round = 1, 2 do
          for _, case in ipairs(quick) do
            expect_failure(c, plain .. case[1], nil, case[2], 0, QUICK)
            expect_ok(c, plain .. "/ok")
          end
          assert.is_true(c:stats().sockets <= 1, "round " .. round)
        end
      end)
    end)

    it("the faults all at once, each on its own task", function()
      lr.run(function()
        local c <close> = http.client()
        local fns = {}
        for i, case in ipairs(quick) do
          fns[i] = function() return expect_failure(c, plain .. case[1], nil, case[2], 0, QUICK) end
        end
        local errs = lr.gather(fns)
        assert.are.equal(#quick, errs.n)
        expect_ok(c, plain .. "/ok")
      end)
    end)

    -- path, timeout: faults that only the request's timeout ends.
    for _, case in ipairs({{"/drip/headers", 1.5}, {"/drip/body", 1.5}, {"/hang", 1}}) do
      local path, limit = case[1], case[2]
      it(path .. " ends with timeout on time", function()
        lr.run(function()
          local c <close> = http.client()
          expect_failure(c, plain .. path, {timeout = limit}, "timeout", limit * 0.9, limit + 3)
          expect_ok(c, plain .. "/ok")
        end)
      end)
    end

    it("a response header line over libcurl's limit says so (issue 23)", function()
      lr.run(function()
        local c <close> = http.client()
        local err = expect_failure(c, plain .. "/big-line", nil, "too_large", 0, QUICK)
        assert.matches("response header line is over libcurl's limit", err.message)
        err = expect_failure(c, plain .. "/many-headers?n=4&size=100000", nil, "too_large", 0, QUICK)
        assert.matches("response headers are over libcurl's limit", err.message)
        -- Just under both limits is a response (curl 7.88: 100 KiB a line, 300 KiB
        -- in all, lines counted with their CRLF).
        local res = assert(c:get(plain .. "/big-line?n=102399"))
        assert.are.equal(102399 - 9, #res.headers["x-big"])
        res = assert(c:get(plain .. "/many-headers?n=3&size=100000"))
        assert.are.equal(200, res.status)
      end)
    end)

    it("a header block cut off is an error, not a 200 with an empty body (issue 23)", function()
      lr.run(function()
        for _, path in ipairs({"/cut/status", "/cut/mid-header", "/cut/after-header"}) do
          local res, err = http.get(plain .. path)
          assert.is_nil(res, path)
          assert.are.equal("protocol", err.kind, path)
          assert.matches("header", err.message)
        end
        -- HEAD, and a body going to a file, the same.
        local res, err = http.request("HEAD", plain .. "/cut/mid-header")
        assert.is_nil(res)
        assert.are.equal("protocol", err.kind)
        res, err = http.get(plain .. "/cut/status", {output = srv.tmpdir() .. "/out"})
        assert.is_nil(res)
        assert.are.equal("protocol", err.kind)
      end)
    end)

    it("a complete header block still works: trailers, redirects, a body up to the close", function()
      lr.run(function()
        local c <close> = http.client()
        local res = assert(c:get(plain .. "/trailers"))
        assert.are.equal("hello", res.body)
        assert.are.equal(200, res.status)
        assert.are.equal("42", res.headers["x-sum"]) -- after the header block's end
        res = assert(c:get(plain .. "/close-delimited"))
        assert.are.equal("ok", res.body)
        res = assert(c:get(plain .. "/redirect"))
        assert.are.equal(plain .. "/ok", res.url)
        assert.are.equal("ok", res.body)
      end)
    end)
  end)

  describe("TLS", function()
    it("a server that stalls mid-handshake: timeout, on time", function()
      lr.run(function()
        local c <close> = http.client({ca_file = cert})
        local url = "https://127.0.0.1:" .. bad.ports.tls_stall .. "/ok"
        expect_failure(c, url, {timeout = 1}, "timeout", 0.9, 4)
        expect_failure(c, url, {connect_timeout = 1}, "timeout", 0.9, 4)
        expect_ok(c, tls .. "/ok")
      end)
    end)

    it("a server that closes or resets mid-handshake: tls", function()
      lr.run(function()
        local c <close> = http.client({ca_file = cert})
        for _, port in ipairs({bad.ports.tls_close, bad.ports.tls_reset}) do
          expect_failure(c, "https://127.0.0.1:" .. port .. "/ok", {timeout = 20}, "tls", 0, QUICK)
          expect_ok(c, tls .. "/ok")
        end
      end)
    end)

    for _, path in ipairs({"/cut/status", "/cut/mid-header", "/short-body",
                           "/reset/before-headers", "/chunk/non-hex"}) do
      it(path .. " over TLS fails with protocol and the client goes on", function()
        lr.run(function()
          local c <close> = http.client({ca_file = cert})
          expect_ok(c, tls .. "/ok")
          expect_failure(c, tls .. path, nil, "protocol", 0, QUICK)
          expect_ok(c, tls .. "/ok")
        end)
      end)
    end

    it("drip over TLS ends with timeout on time", function()
      lr.run(function()
        local c <close> = http.client({ca_file = cert})
        expect_failure(c, tls .. "/drip/body", {timeout = 1.5}, "timeout", 1.35, 4.5)
        expect_ok(c, tls .. "/ok")
      end)
    end)
  end)
end)
