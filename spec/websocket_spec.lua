-- http.websocket and the luarun.WebSocket class, against spec/support/wsserver.py
-- (Python's websockets package, plain and TLS with a certificate made here by
-- openssl, and a raw server for the misbehaving cases).
local lr = require "luarun"
local http = require "luarun.http"
local httpserver = require "support.httpserver"
local wsserver = require "support.wsserver"
local util = require "support.util"

local function run(fn)
  return util.run(lr, fn)
end

describe("http.websocket", function()
  local srv, cert, plain, raw, secure

  setup(function()
    local key
    cert, key = httpserver.self_signed()
    srv = wsserver.start({tls = {cert, key}})
    plain = "ws://127.0.0.1:" .. srv.ports.plain
    raw = "ws://127.0.0.1:" .. srv.ports.raw
    secure = "wss://127.0.0.1:" .. srv.ports.tls
  end)

  teardown(function()
    srv.stop()
    httpserver.cleanup()
  end)

  describe("messages", function()
    it("echoes text as text and binary as binary", function()
      run(function()
        local ws = assert(http.websocket(plain .. "/echo"))
        assert.is_true(ws:send("hello"))
        local msg, kind = ws:receive()
        assert.are.equal("hello", msg)
        assert.are.equal("text", kind)
        assert.is_true(ws:send_binary("\0\1\2\255"))
        msg, kind = ws:receive()
        assert.are.equal("\0\1\2\255", msg)
        assert.are.equal("binary", kind)
        assert.is_true(ws:send(""))
        assert.are.equal("", ws:receive())
        assert.is_true(ws:close())
      end)
    end)

    it("sends and receives a 1 MiB message, and many in a row", function()
      run(function()
        local ws = assert(http.websocket(plain .. "/echo"))
        local big = string.rep("0123456789abcdef", 65536)
        assert.is_true(ws:send_binary(big))
        local msg, kind = ws:receive()
        assert.are.equal(#big, #msg)
        assert.is_true(msg == big)
        assert.are.equal("binary", kind)
        -- a writer that runs ahead of the reader parks on the watermark
        local writer = lr.spawn(function()
          for i = 1, 40 do assert(ws:send(i .. ":" .. big)) end
        end)
        for i = 1, 40 do
          msg = ws:receive()
          assert.are.equal(i .. ":", msg:sub(1, #tostring(i) + 1))
        end
        writer:wait()
        ws:close()
      end)
    end)

    it("joins the fragments of a message from the server", function()
      run(function()
        local ws = assert(http.websocket(plain .. "/fragments"))
        ws:send("5,3")
        assert.are.equal("000111222333444", ws:receive())
        ws:send("200,1000")
        local msg, kind = ws:receive()
        assert.are.equal(200000, #msg)
        assert.are.equal("text", kind)
        assert.are.equal(string.rep("9", 1000), msg:sub(-1000))
        ws:close()
      end)
    end)

    it("iterates with messages() until the close", function()
      run(function()
        local ws = assert(http.websocket(plain .. "/echo"))
        for _, m in ipairs({"a", "b", "c"}) do ws:send(m) end
        local got = {}
        for msg, kind in ws:messages() do
          got[#got + 1] = msg .. "/" .. kind
          if #got == 3 then ws:close(1000, "done") end
        end
        assert.are.same({"a/text", "b/text", "c/text"}, got)
        local msg, err = ws:receive()
        assert.is_nil(msg)
        assert.are.equal("closed", err.kind)
      end)
    end)

    it("pings, and answers the server's pings", function()
      run(function()
        local ws = assert(http.websocket(plain .. "/echo"))
        assert.is_true(ws:ping())
        assert.is_true(ws:ping("data"))
        ws:send("after ping")
        assert.are.equal("after ping", ws:receive())
        ws:close()
        ws = assert(http.websocket(plain .. "/serverping"))
        assert.are.equal("pong received", ws:receive())
        ws:close()
      end)
    end)
  end)

  describe("subprotocols", function()
    it("returns the one the server chose, or nil", function()
      run(function()
        local server = assert(http.serve({}, function(req)
          local ws = assert(req:websocket({protocols = {"chat", "v2"}}))
          for m in ws:messages() do ws:send(m) end
        end))
        local url = "ws://127.0.0.1:" .. server.port .. "/"
        local ws, protocol = assert(http.websocket(url, {protocols = {"v2", "chat"}}))
        assert.are.equal("chat", protocol) -- the server's order decides
        assert.is_true(ws:send("x"))
        assert.are.equal("x", (ws:receive()))
        ws:close()
        local plain, none = assert(http.websocket(url))
        assert.is_nil(none)
        plain:close()
        server:close()
      end)
    end)
  end)

  describe("closing", function()
    it("sends a close code and reason, and the server's answer ends receive", function()
      run(function()
        local ws = assert(http.websocket(plain .. "/echo/close4000"))
        assert.is_true(ws:close(4000, "bye now"))
        local msg, err = ws:receive()
        assert.is_nil(msg)
        assert.are.equal("closed", err.kind)
        assert.are.equal(4000, err.code)
        assert.are.equal("bye now", err.reason)
        assert.is_nil(ws:send("late"))
        assert.is_true(ws:close()) -- again: nothing to do
        assert.is_truthy(tostring(ws):find("closed", 1, true))
        -- what the server saw (its handler records it once it has finished)
        local seen
        for _ = 1, 100 do
          local w = assert(http.websocket(plain .. "/lastclose/close4000"))
          seen = w:receive()
          w:close()
          if seen ~= "none" then break end
          lr.sleep(0.02)
        end
        assert.are.equal("4000 bye now", seen)
      end)
    end)

    it("reports the server's close code and reason", function()
      run(function()
        local ws = assert(http.websocket(plain .. "/close/4001/go_away"))
        local msg, err = ws:receive()
        assert.is_nil(msg)
        assert.are.equal("closed", err.kind)
        assert.are.equal(4001, err.code)
        assert.are.equal("go_away", err.reason)
        assert.is_truthy(tostring(err):find("4001", 1, true))
        ws:close()
      end)
    end)

    it("closes with 1009 on a message over max_message_size", function()
      run(function()
        local ws = assert(http.websocket(plain .. "/big/2000000", {max_message_size = 1000000}))
        local msg, err = ws:receive()
        assert.is_nil(msg)
        assert.are.equal(1009, err.code)
        ws:close()
        ws = assert(http.websocket(plain .. "/big/2000000", {max_message_size = 2000000}))
        assert.are.equal(2000000, #ws:receive())
        ws:close()
      end)
    end)

    it("gives up on a peer that never answers the close (1006)", function()
      run(function()
        local ws = assert(http.websocket(raw .. "/noclose", {close_timeout = 0.3}))
        local t0 = lr.now()
        assert.is_true(ws:close())
        local took = lr.now() - t0
        assert.is_true(took >= 0.25 and took < 2, "took " .. took)
        local _, err = ws:receive()
        assert.are.equal(1006, err.code)
        -- the default wait is 5 s
        ws = assert(http.websocket(raw .. "/noclose"))
        t0 = lr.now()
        ws:close()
        took = lr.now() - t0
        assert.is_true(took >= 4.5 and took < 7, "took " .. took)
      end)
    end)

    it("starts the close handshake from <close> without waiting", function()
      run(function()
        local ws
        do
          local w <close> = assert(http.websocket(plain .. "/echo"))
          ws = w
          w:send("x")
          assert.are.equal("x", w:receive())
        end
        local _, err = ws:receive()
        assert.are.equal("closed", err.kind)
        ws:close() -- waits for the end of the handshake
      end)
    end)
  end)

  describe("failures", function()
    it("returns protocol when the server does not answer 101", function()
      run(function()
        local ws, err = http.websocket(raw .. "/status/404")
        assert.is_nil(ws)
        assert.are.equal("protocol", err.kind)
        assert.is_truthy(err.message:find("404", 1, true))
        assert.are.equal(raw .. "/status/404", err.url)
        ws, err = http.websocket(raw .. "/badaccept")
        assert.is_nil(ws)
        assert.are.equal("protocol", err.kind)
        assert.is_truthy(err.message:find("Accept", 1, true))
      end)
    end)

    it("returns connect for a refused connection and dns for an unknown host", function()
      run(function()
        local port = httpserver.free_port()
        local ws, err = http.websocket("ws://127.0.0.1:" .. port .. "/")
        assert.is_nil(ws)
        assert.are.equal("connect", err.kind)
        ws, err = http.websocket("ws://no-such-host.invalid/")
        assert.is_nil(ws)
        assert.are.equal("dns", err.kind)
      end)
    end)

    it("returns invalid_url for what is not a ws:// or wss:// URL", function()
      run(function()
        for _, url in ipairs({"http://127.0.0.1/", "nonsense", "ws://", "", "ftp://x/"}) do
          local ws, err = http.websocket(url)
          assert.is_nil(ws)
          assert.are.equal("invalid_url", err.kind, url)
          assert.are.equal(url, err.url)
        end
      end)
    end)

    it("raises on misuse, naming the call", function()
      run(function()
        local cases = {
          {function() http.websocket(42) end, "websocket"},
          {function() http.websocket(plain, {timeout = "x"}) end, "timeout"},
          {function() http.websocket(plain, {headers = {["a\nb"] = "c"}}) end, "header"},
          {function() http.websocket(plain, {max_message_size = 0}) end, "max_message_size"},
        }
        local ws = assert(http.websocket(plain .. "/echo"))
        cases[#cases + 1] = {function() ws:send(42) end, "WebSocket:send"}
        cases[#cases + 1] = {function() ws:close(999) end, "WebSocket:close"}
        cases[#cases + 1] = {function() ws:close(1000, string.rep("x", 200)) end, "123"}
        cases[#cases + 1] = {function() ws:ping(string.rep("x", 200)) end, "WebSocket:ping"}
        for _, c in ipairs(cases) do
          local ok, err = pcall(c[1])
          assert.is_false(ok, c[2])
          assert.is_truthy(tostring(err):find(c[2], 1, true), tostring(err) .. " / " .. c[2])
        end
        ws:close()
      end)
    end)

    it("times out a server that never answers the upgrade", function()
      run(function()
        local t0 = lr.now()
        local ws, err = http.websocket(raw .. "/silent", {timeout = 0.2})
        assert.is_nil(ws)
        assert.are.equal("timeout", err.kind)
        assert.is_true(lr.now() - t0 < 2)
      end)
    end)
  end)

  describe("wss://", function()
    it("verifies the server with ca_file, by IP and by name", function()
      run(function()
        for _, url in ipairs({secure, "wss://localhost:" .. srv.ports.tls}) do
          local ws = assert(http.websocket(url .. "/echo", {ca_file = cert}))
          ws:send("over tls")
          assert.are.equal("over tls", ws:receive())
          local big = string.rep("z", 1 << 20)
          ws:send_binary(big)
          assert.is_true(ws:receive() == big)
          ws:close(4002, "tls bye")
          local _, err = ws:receive()
          assert.are.equal(4002, err.code)
        end
      end)
    end)

    it("fails with tls on an unknown certificate, unless verify = false", function()
      run(function()
        local ws, err = http.websocket(secure .. "/echo")
        assert.is_nil(ws)
        assert.are.equal("tls", err.kind)
        assert.is_truthy(err.message:find("verify", 1, true))
        ws = assert(http.websocket(secure .. "/echo", {verify = false}))
        ws:send("unverified")
        assert.are.equal("unverified", ws:receive())
        ws:close()
      end)
    end)

    it("fails with tls when speaking TLS to a plain server", function()
      run(function()
        local ws, err = http.websocket("wss://127.0.0.1:" .. srv.ports.plain .. "/echo",
                                       {verify = false, timeout = 5})
        assert.is_nil(ws)
        assert.is_truthy(err.kind == "tls" or err.kind == "protocol", err.kind)
      end)
    end)
  end)

  describe("cancellation", function()
    it("leaves the WebSocket usable after a parked receive is cancelled", function()
      run(function()
        local ws = assert(http.websocket(plain .. "/echo"))
        local t = lr.spawn(function() return ws:receive() end)
        lr.sleep(0.05)
        t:cancel()
        local ok, err = pcall(t.wait, t)
        assert.is_false(ok)
        assert.are.equal("cancelled", err.kind)
        ws:send("still here")
        assert.are.equal("still here", ws:receive())
        local r = table.pack(lr.timeout(0.05, ws.receive, ws))
        assert.is_nil(r[1])
        assert.are.equal("timeout", r[2].kind)
        ws:send("and again")
        assert.are.equal("and again", ws:receive())
        ws:close()
      end)
    end)

    it("frees everything when a connecting task is cancelled", function()
      run(function()
        -- parked on a server that never answers, then at once (before anything has
        -- resolved), plain and TLS
        for i, url in ipairs({raw .. "/silent", plain .. "/echo", secure .. "/echo"}) do
          local t = lr.spawn(function() return http.websocket(url, {ca_file = cert}) end)
          lr.sleep(i == 1 and 0.05 or 0)
          t:cancel()
          local ok, err = pcall(t.wait, t)
          assert.is_false(ok)
          assert.are.equal("cancelled", err.kind)
        end
        lr.sleep(0.05) -- the closes complete
      end)
    end)
  end)
end)
