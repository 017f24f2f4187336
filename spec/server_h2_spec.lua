-- http.serve over HTTP/2 (core/server_h2.c): h2c with prior knowledge, h2 over TLS
-- with ALPN, against real clients (curl, nghttp, h2load from nghttp2-client) and a
-- small raw-frame client in Python (for RST_STREAM, GOAWAY and fuzzing). Every server
-- binds 127.0.0.1 on a port it picks, and is stopped by its pid.
local util = require "support.util"

local BIN = os.getenv("LUARUN_BIN") or "./build/luarun"
-- Under the ASan run, LD_PRELOAD holds libasan for busted's lua5.4: the clients do not
-- get it.
local CLIENT = "env -u LD_PRELOAD "
local q = util.quote

local function have(cmd)
  return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end

local tmp = util.new_dir()

-- Starts `luarun script args...`; waits (bounded) for its "PORT n" line on stderr.
local function start(name, script, args, env)
  local path = tmp .. "/" .. name .. ".lua"
  local errf = tmp .. "/" .. name .. ".err"
  util.put(path, script)
  local p = assert(io.popen("sh -c " .. q("exec " .. (env or "") .. q(BIN) .. " " .. q(path) .. " " ..
                                         (args or "") .. " >/dev/null 2>" .. q(errf) ..
                                         " & echo $!")))
  local pid = assert(tonumber(p:read("l")))
  p:close()
  local srv = {pid = pid, err = errf}
  for _ = 1, 200 do
    local f = io.open(errf, "rb")
    local text = f and f:read("a") or ""
    if f then f:close() end
    local port = text:match("PORT (%d+)")
    if port then
      srv.port = tonumber(port)
      break
    end
    os.execute("sleep 0.05")
  end
  assert(srv.port, "the server did not start: " .. util.slurp(errf))
  srv.url = "http://127.0.0.1:" .. srv.port
  function srv.stderr() return util.slurp(errf) end
  function srv.alive() return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true end
  function srv.stop(sig)
    if srv.pid then os.execute("kill " .. (sig or "") .. " " .. srv.pid .. " 2>/dev/null") end
    if not sig then srv.pid = nil end
  end
  -- Waits (bounded) for the process to end by itself; true if it did.
  function srv.wait_exit(seconds)
    for _ = 1, seconds * 20 do
      if not srv.alive() then
        srv.pid = nil
        return true
      end
      os.execute("sleep 0.05")
    end
    return false
  end
  return srv
end

local function sh(cmd, input)
  return util.sh(CLIENT .. cmd, input)
end

local function curl(args)
  return sh("curl -s --max-time 20 " .. args)
end

-- A raw HTTP/2 client for what curl and nghttp cannot do on demand.
local RAW = [=[
import random, select, socket, struct, sys, time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

def frame(t, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + \
        struct.pack(">I", sid & 0x7fffffff) + payload

def lit(name, value):
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v

def request(sid, path, method="GET", end_stream=True):
    block = lit(":method", method) + lit(":scheme", "http") + lit(":path", path) + \
        lit(":authority", "127.0.0.1")
    return frame(1, 4 | (1 if end_stream else 0), sid, block)

def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(PREFACE + frame(4, 0, 0))
    return s

class Reader:
    def __init__(self, s):
        self.s, self.buf, self.eof = s, b"", False
    def frames(self, timeout):
        # Frames that arrive within timeout (PING and SETTINGS are acknowledged).
        out, end = [], time.time() + timeout
        while not self.eof and time.time() < end:
            r, _, _ = select.select([self.s], [], [], max(0, end - time.time()))
            if not r:
                break
            try:
                d = self.s.recv(65536)
            except OSError:
                d = b""
            if not d:
                self.eof = True
                break
            self.buf += d
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[0:3], "big")
                if len(self.buf) < 9 + n:
                    break
                t, fl = self.buf[3], self.buf[4]
                sid = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
                p = self.buf[9:9 + n]
                self.buf = self.buf[9 + n:]
                out.append((t, fl, sid, p))
                try:
                    if t == 6 and not fl & 1:
                        self.s.sendall(frame(6, 1, 0, p))
                    if t == 4 and not fl & 1:
                        self.s.sendall(frame(4, 1, 0))
                except OSError:
                    pass
            if out and self.until(out):
                break
        return out
    until = staticmethod(lambda out: False)

def show(fr):
    for t, fl, sid, p in fr:
        if t == 0 and p:
            print("DATA %d %s" % (sid, p.decode("latin-1")))
        elif t == 1:
            print("HEADERS %d" % sid)
        elif t == 3:
            print("RST %d %d" % (sid, int.from_bytes(p[0:4], "big")))
        elif t == 6 and not fl & 1:
            print("PING")
        elif t == 7:
            print("GOAWAY last=%d code=%d" % (int.from_bytes(p[0:4], "big") & 0x7fffffff,
                                              int.from_bytes(p[4:8], "big")))
    sys.stdout.flush()

mode, port = sys.argv[1], int(sys.argv[2])

if mode == "rst":
    # A slow request, reset by us; then another request on the same connection.
    s = connect(port)
    rd = Reader(s)
    s.sendall(request(1, "/slow"))
    show(rd.frames(0.3))
    s.sendall(frame(3, 0, 1, struct.pack(">I", 8)))  # RST_STREAM CANCEL
    s.sendall(request(3, "/"))
    rd.until = staticmethod(lambda out: any(f[0] == 0 and f[2] == 3 and f[1] & 1 for f in out))
    show(rd.frames(5))
    print("EOF" if rd.eof else "OPEN")

elif mode == "goaway":
    # A request in flight while the server closes: it is answered, GOAWAY names it.
    s = connect(port)
    rd = Reader(s)
    s.sendall(request(1, "/inflight"))
    fr = rd.frames(10)
    while not rd.eof:
        more = rd.frames(10)
        if not more:
            break
        fr += more
    show(fr)
    if rd.eof:
        print("EOF")

elif mode == "flood":
    # Streams opened and reset at once, far past the Rapid Reset budget.
    s = connect(port)
    rd = Reader(s)
    sid, sent = 1, b""
    try:
        for i in range(3000):
            s.sendall(request(sid, "/slow") + frame(3, 0, sid, struct.pack(">I", 8)))
            sid += 2
    except OSError:
        pass
    fr = rd.frames(3)
    while not rd.eof:
        more = rd.frames(3)
        if not more:
            break
        fr += more
    show([f for f in fr if f[0] == 7])
    print("EOF" if rd.eof else "OPEN")

elif mode == "idle":
    # No request: the server says GOAWAY after idle_timeout and closes.
    s = connect(port)
    rd = Reader(s)
    t0 = time.time()
    fr = rd.frames(5)
    while not rd.eof:
        more = rd.frames(5)
        if not more:
            break
        fr += more
    show(fr)
    print("EOF after %.1f s" % (time.time() - t0) if rd.eof else "OPEN")

elif mode == "fuzz":
    n, seed = int(sys.argv[3]), int(sys.argv[4])
    rnd = random.Random(seed)
    paths = ["/", "/echo", "/slow", "/stream", "/headers", "/nope"]
    def rbytes(k):
        return bytes(rnd.getrandbits(8) for _ in range(k))
    def rframe():
        t = rnd.choice([0, 0, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 10, rnd.randrange(256)])
        sid = rnd.choice([0, 1, 1, 3, 5, 7, rnd.randrange(1 << 31)])
        flags = rnd.choice([0, 1, 4, 5, 8, 0x20, 0x25, rnd.randrange(256)])
        if t in (1, 9) and rnd.random() < 0.6:
            block = b""
            for _ in range(rnd.randrange(8)):
                name = rnd.choice([":method", ":path", ":scheme", ":authority", ":status",
                                   "content-length", "te", "connection", "host", "x-a",
                                   "cookie", "Upper", ""])
                value = rnd.choice(["GET", "POST", "HEAD", "CONNECT", rnd.choice(paths), "http",
                                    "5", "-1", "99999999999999999999", "trailers", "",
                                    rbytes(rnd.randrange(8)).decode("latin-1")])
                try:
                    block += lit(name, value)
                except Exception:
                    pass
            if rnd.random() < 0.3:
                block += rbytes(rnd.randrange(16))
            p = block
        else:
            p = rbytes(rnd.choice([0, 1, 4, 5, 6, 8, rnd.randrange(70)]))
        f = frame(t, flags, sid, p)
        if rnd.random() < 0.1:  # a lying length
            f = rbytes(3) + f[3:]
        return f
    for case in range(n):
        try:
            s = connect(port)
            if rnd.random() < 0.2:
                data = rbytes(rnd.randrange(1, 400))
            else:
                data = b""
                if rnd.random() < 0.5:  # something valid first
                    sid = 1
                    for _ in range(rnd.randrange(1, 4)):
                        body = rnd.random() < 0.5
                        data += request(sid, rnd.choice(paths), "POST" if body else "GET",
                                        end_stream=not body)
                        if body:
                            data += frame(0, rnd.choice([0, 1]), sid, rbytes(rnd.randrange(64)))
                        sid += 2
                for _ in range(rnd.randrange(1, 10)):
                    data += rframe()
            s.sendall(data)
            if rnd.random() < 0.7:
                Reader(s).frames(rnd.choice([0, 0.01, 0.05]))
            s.close()
        except OSError:
            pass
    print("FUZZ DONE %d" % n)
]=]
local raw_path = tmp .. "/h2raw.py"
util.put(raw_path, RAW)
local function raw(...)
  return sh("timeout 60 python3 " .. q(raw_path) .. " " .. table.concat({...}, " "))
end

local APP = [[
local http = require "luarun.http"
local lr = require "luarun"
local app = http.router()
app:get("/", function() return "hello" end)
app:get("/version", function(req) return req.http_version end)
app:post("/echo", function(req)
  local body = assert(req:body())
  return 200, {["X-Len"] = tostring(#body), ["X-Mixed-Case"] = "yes"}, body
end)
app:post("/chunks", function(req)
  local n, pieces = 0, 0
  for piece in req:body_chunks() do
    n, pieces = n + #piece, pieces + 1
    lr.sleep(0.001)
  end
  return string.format("%d bytes", n)
end)
app:get("/stream", function()
  local i = 0
  return 200, {["content-type"] = "text/plain"}, function()
    i = i + 1
    if i > 5 then return nil end
    lr.sleep(0.01)
    return "chunk" .. i .. "\n"
  end
end)
app:get("/big", function()
  local piece, i = string.rep("z", 65536), 0
  return 200, {}, function()
    i = i + 1
    if i > 64 then return nil end
    return piece
  end
end)
app:get("/headers", function(req)
  local n = 0
  for _ in pairs(req.headers) do n = n + 1 end
  return string.format("%d %s %s", n, req.headers.host or "-", req.headers["x-h60"] or "-")
end)
app:get("/failmid", function()
  local n = 0
  return 200, {}, function()
    n = n + 1
    if n == 3 then error("FAILMID on purpose") end
    lr.sleep(0.05)
    return "part" .. n .. "\n"
  end
end)
app:get("/sleep/{ms}", function(req)
  lr.sleep(tonumber(req.params.ms) / 1000)
  return "slept " .. req.params.ms
end)
app:get("/slow", function()
  local ok, err = pcall(lr.sleep, 10)
  io.stderr:write("SLOW " .. (ok and "finished" or "cancelled") .. "\n")
  error(err)
end)
local server = http.serve({port = 0, http2 = true, max_header_size = 8192,
                           max_body_size = 4 * 1024 * 1024}, app)
io.stderr:write("PORT " .. server.port .. "\n")
server:wait()
]]

describe("http.serve over HTTP/2", function()
  local srv

  setup(function()
    srv = start("app", APP)
  end)

  teardown(function()
    if srv then srv.stop() end
  end)

  describe("with curl --http2-prior-knowledge", function()
    it("answers a GET as HTTP/2", function()
      local code, out = curl("--http2-prior-knowledge -i " .. srv.url .. "/")
      assert.equal(0, code)
      assert.matches("^HTTP/2 200", out)
      assert.matches("content%-length: 5\r\n", out)
      assert.matches("date: ", out)
      assert.matches("\r\n\r\nhello$", out)
      code, out = curl("--http2-prior-knowledge " .. srv.url .. "/version")
      assert.equal("2", out)
    end)

    it("reads a POST body and lower-cases response header names", function()
      local code, out = curl("--http2-prior-knowledge -i -d abcdef " .. srv.url .. "/echo")
      assert.equal(0, code)
      assert.matches("x%-len: 6\r\n", out)
      assert.matches("x%-mixed%-case: yes\r\n", out)
      assert.matches("\r\n\r\nabcdef$", out)
    end)

    it("reads a body larger than the stream's window (flow control)", function()
      local f = tmp .. "/big.bin"
      assert(os.execute("head -c 3000000 /dev/urandom > " .. q(f)))
      local code = curl("--http2-prior-knowledge --data-binary @" .. q(f) .. " -o " ..
                        q(f .. ".out") .. " " .. srv.url .. "/echo")
      assert.equal(0, code)
      assert.is_true(util.slurp(f) == util.slurp(f .. ".out"))
      local out
      code, out = curl("--http2-prior-knowledge --data-binary @" .. q(f) .. " " .. srv.url .. "/chunks")
      assert.equal("3000000 bytes", out)
    end)

    it("streams a body of unknown length", function()
      local code, out = curl("--http2-prior-knowledge -i " .. srv.url .. "/stream")
      assert.equal(0, code)
      assert.matches("^HTTP/2 200", out)
      assert.not_matches("content%-length", out)
      assert.matches("\r\n\r\nchunk1\nchunk2\nchunk3\nchunk4\nchunk5\n$", out)
      code, out = curl("--http2-prior-knowledge -o /dev/null -w '%{size_download}' " .. srv.url .. "/big")
      assert.equal(tostring(64 * 65536), out)
    end)

    it("answers HEAD with the length and no body", function()
      local code, out = curl("--http2-prior-knowledge -I " .. srv.url .. "/")
      assert.equal(0, code)
      assert.matches("^HTTP/2 200", out)
      assert.matches("content%-length: 5\r\n", out)
      assert.matches("\r\n\r\n$", out)
    end)

    it("gives the router's 404", function()
      local code, out = curl("--http2-prior-knowledge -i " .. srv.url .. "/nope")
      assert.equal(0, code)
      assert.matches("^HTTP/2 404", out)
      assert.matches("Not Found\n$", out)
    end)

    it("passes many headers, and :authority as host", function()
      local hs = {}
      for i = 1, 60 do hs[#hs + 1] = "-H " .. q("X-H" .. i .. ": v" .. i) end
      local code, out = curl("--http2-prior-knowledge " .. table.concat(hs, " ") .. " " ..
                             srv.url .. "/headers")
      assert.equal(0, code)
      -- 60 + user-agent, accept, host
      assert.equal("63 127.0.0.1:" .. srv.port .. " v60", out)
    end)

    it("answers 431 to a head past max_header_size", function()
      local code, out = curl("--http2-prior-knowledge -i -H " .. q("X-Big: " .. string.rep("a", 9000)) ..
                             " " .. srv.url .. "/")
      assert.equal(0, code)
      assert.matches("^HTTP/2 431", out)
    end)
  end)

  it("answers 413 to a body past max_body_size and resets the upload (nghttp)", function()
    assert(have("nghttp"), "nghttp (Debian nghttp2-client) is needed")
    local f = tmp .. "/huge.bin"
    assert(os.execute("head -c 6000000 /dev/zero > " .. q(f)))
    local code, out = sh("timeout 20 nghttp -v -d " .. q(f) .. " " .. srv.url .. "/echo")
    assert.matches(":status: 413", out)
    assert.matches("recv RST_STREAM", out)
  end)

  it("serves h2load: 10000 requests, 10 connections, 10 streams each, no errors", function()
    assert(have("h2load"), "h2load (Debian nghttp2-client) is needed")
    local code, out = sh("timeout 60 h2load -n 10000 -c 10 -m 10 " .. srv.url .. "/")
    assert.equal(0, code)
    assert.matches("requests: 10000 total, 10000 started, 10000 done, 10000 succeeded, 0 failed, 0 errored", out)
    assert.matches("status codes: 10000 2xx", out)
  end)

  it("multiplexes: streams whose handlers sleep finish out of order on one connection", function()
    assert(have("nghttp"), "nghttp (Debian nghttp2-client) is needed")
    local t0 = os.time()
    local code, out = sh("timeout 20 nghttp -n -s " .. srv.url .. "/sleep/600 " .. srv.url ..
                         "/sleep/100 " .. srv.url .. "/sleep/300")
    assert.equal(0, code)
    local order = {}
    for ms in out:gmatch("/sleep/(%d+)") do order[#order + 1] = ms end
    assert.same({"100", "300", "600"}, order) -- by responseEnd
    assert.is_true(os.time() - t0 <= 2)
  end)

  it("cancels the handler of a stream the client resets, and keeps the connection", function()
    local code, out = raw("rst", srv.port)
    assert.equal(0, code)
    assert.matches("DATA 3 hello", out)
    assert.matches("OPEN", out)
    local ok = false
    for _ = 1, 40 do
      if srv.stderr():find("SLOW cancelled") then ok = true break end
      os.execute("sleep 0.05")
    end
    assert.is_true(ok)
    assert.not_matches("SLOW finished", srv.stderr())
  end)

  it("tears down a connection that resets streams past the Rapid Reset budget", function()
    local code, out = raw("flood", srv.port)
    assert.equal(0, code)
    assert.matches("GOAWAY", out)
    assert.matches("EOF", out)
    local code2, out2 = curl("--http2-prior-knowledge " .. srv.url .. "/")
    assert.equal("hello", out2)
  end)

  it("survives random frames after a valid preface (ASan and LSan clean under the sanitizer build)", function()
    -- A server of its own, stopped by SIGTERM so that the sanitizer's leak check runs
    -- as it exits (the option does nothing in a plain build).
    local fz = start("fuzz", APP, nil, "env ASAN_OPTIONS=detect_leaks=1 ")
    local ok, err = pcall(function()
      for _, seed in ipairs({14, 15, 16}) do
        local code, out = raw("fuzz", fz.port, 200, seed)
        assert.equal(0, code)
        assert.matches("FUZZ DONE 200", out)
        assert.is_true(fz.alive())
      end
      local _, out = curl("--http2-prior-knowledge " .. fz.url .. "/")
      assert.equal("hello", out)
      fz.stop("-TERM")
      assert.is_true(fz.wait_exit(10))
      assert.not_matches("Sanitizer", fz.stderr())
      assert.not_matches("runtime error", fz.stderr())
    end)
    fz.stop()
    assert(ok, err)
  end)

  it("says GOAWAY to a connection idle for idle_timeout, and closes it", function()
    local idle = start("idle", [[
      local http = require "luarun.http"
      local server = http.serve({port = 0, http2 = true, idle_timeout = 0.3}, function() return "x" end)
      io.stderr:write("PORT " .. server.port .. "\n")
      server:wait()
    ]])
    local ok, err = pcall(function()
      local code, out = raw("idle", idle.port)
      assert.equal(0, code)
      assert.matches("GOAWAY last=0 code=0", out)
      local secs = tonumber(out:match("EOF after ([%d.]+) s"))
      assert.is_true(secs ~= nil and secs >= 0.2 and secs < 3)
    end)
    idle.stop()
    assert(ok, err)
  end)

  it("answers 503 to a handler past request_timeout, leaving the other streams be", function()
    assert(have("nghttp"), "nghttp (Debian nghttp2-client) is needed")
    local rt = start("reqtimeout", [[
      local http = require "luarun.http"
      local lr = require "luarun"
      local server = http.serve({port = 0, http2 = true, request_timeout = 0.3}, function(req)
        if req.path == "/slow" then
          local ok = pcall(lr.sleep, 5)
          io.stderr:write(ok and "SLOW finished\n" or "SLOW cancelled\n")
          return "late"
        end
        lr.sleep(0.1)
        return "quick"
      end)
      io.stderr:write("PORT " .. server.port .. "\n")
      server:wait()
    ]])
    local ok, err = pcall(function()
      local t0 = os.time()
      local code, out = sh("timeout 20 nghttp -n -s " .. rt.url .. "/slow " .. rt.url .. "/quick")
      assert.equal(0, code)
      assert.matches("503 +%d+ /slow", out)
      assert.matches("200 +%d+ /quick", out)
      assert.is_true(os.time() - t0 <= 3)
      for _ = 1, 40 do
        if rt.stderr():find("SLOW") then break end
        os.execute("sleep 0.05")
      end
      assert.matches("SLOW cancelled", rt.stderr())
    end)
    rt.stop()
    assert(ok, err)
  end)

  -- Under HTTP/1.1 a handler failing mid-body can only cut the connection; under
  -- HTTP/2 just its stream is reset, and the other streams of the connection go on.
  it("resets only the stream whose handler fails mid-body", function()
    local code, out = sh("timeout 20 nghttp -n -v " .. srv.url .. "/failmid " .. srv.url .. "/sleep/300")
    -- nghttp numbers its streams after its PRIORITY frames: find them by path.
    local ids = {}
    for id, block in out:gmatch("send HEADERS frame <[^>]*stream_id=(%d+)>(.-)%[") do
      local path = block:match(":path: (%S+)")
      if path then ids[path] = id end
    end
    local failing, other = ids["/failmid"], ids["/sleep/300"]
    assert.is_truthy(failing and other, out)
    assert.matches("recv RST_STREAM frame <[^>]*stream_id=" .. failing .. ">", out)
    assert.matches("recv DATA frame <length=%d+, flags=0x01, stream_id=" .. other .. ">", out)
    assert.not_matches("recv GOAWAY", out)
    assert.matches("FAILMID on purpose", srv.stderr())
  end)
end)

describe("server:close with HTTP/2 connections open", function()
  it("sends GOAWAY naming the last stream, finishes it, then closes", function()
    local srv = start("closing", [[
      local http = require "luarun.http"
      local lr = require "luarun"
      local started = false
      local server = http.serve({port = 0, http2 = true}, function(req)
        started = true
        lr.sleep(0.4)
        return "finished " .. req.path
      end)
      io.stderr:write("PORT " .. server.port .. "\n")
      for _ = 1, 1000 do
        if started then break end
        lr.sleep(0.01)
      end
      server:close(5)
      server:wait()
      io.stderr:write("CLOSED\n")
    ]])
    local ok, err = pcall(function()
      local code, out = raw("goaway", srv.port)
      assert.equal(0, code)
      -- the shutdown notice (2^31-1), its PING, then the GOAWAY naming stream 1
      assert.matches("GOAWAY last=2147483647 code=0", out)
      assert.matches("PING", out)
      assert.matches("GOAWAY last=1 code=0", out)
      assert.matches("DATA 1 finished /inflight", out)
      assert.matches("EOF", out)
      assert.is_true(srv.wait_exit(5))
      assert.matches("CLOSED", srv.stderr())
    end)
    srv.stop()
    assert(ok, err)
  end)

  it("cuts streams still running when the grace period ends", function()
    assert(have("nghttp"), "nghttp (Debian nghttp2-client) is needed")
    local srv = start("cut", [[
      local http = require "luarun.http"
      local lr = require "luarun"
      local started = false
      local server = http.serve({port = 0, http2 = true}, function(req)
        started = true
        local ok = pcall(lr.sleep, 30)
        io.stderr:write(ok and "NOT CUT\n" or "CUT\n")
        return "late"
      end)
      io.stderr:write("PORT " .. server.port .. "\n")
      for _ = 1, 1000 do
        if started then break end
        lr.sleep(0.01)
      end
      server:close(0.3)
      server:wait()
      io.stderr:write("CLOSED\n")
    ]])
    local ok, err = pcall(function()
      local t0 = os.time()
      sh("timeout 20 nghttp " .. srv.url .. "/")
      assert.is_true(os.time() - t0 <= 3)
      assert.is_true(srv.wait_exit(5))
      assert.matches("CUT\n", srv.stderr())
      assert.matches("CLOSED", srv.stderr())
    end)
    srv.stop()
    assert(ok, err)
  end)
end)

describe("HTTP/2 over TLS", function()
  local srv, cert, key
  setup(function()
    cert, key = tmp .. "/cert.pem", tmp .. "/key.pem"
    local code, _, err = sh("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost " ..
                            "-addext subjectAltName=DNS:localhost -days 2 -keyout " .. q(key) ..
                            " -out " .. q(cert))
    assert(code == 0, err)
    srv = start("tls", [[
      local http = require "luarun.http"
      local server = http.serve({port = 0, http2 = true, tls = {cert = arg[1], key = arg[2]}},
                                function(req)
        if req.method == "POST" then return req:body() end
        return "hello " .. req.http_version
      end)
      io.stderr:write("PORT " .. server.port .. "\n")
      server:wait()
    ]], q(cert) .. " " .. q(key))
  end)
  teardown(function()
    if srv then srv.stop() end
  end)

  it("picks h2 by ALPN", function()
    local code, out = curl("-k --http2 -w ' %{http_version}' https://127.0.0.1:" .. srv.port .. "/")
    assert.equal(0, code)
    assert.equal("hello 2 2", out)
    code, out = curl("--cacert " .. q(cert) .. " --http2 -w ' %{http_version}' https://localhost:" ..
                     srv.port .. "/")
    assert.equal(0, code)
    assert.equal("hello 2 2", out)
  end)

  it("falls back to HTTP/1.1 for a client that offers only that", function()
    local code, out = curl("-k --http1.1 https://127.0.0.1:" .. srv.port .. "/")
    assert.equal(0, code)
    assert.equal("hello 1.1", out)
  end)

  it("carries a large body both ways", function()
    local f = tmp .. "/tls.bin"
    assert(os.execute("head -c 2000000 /dev/urandom > " .. q(f)))
    local code = curl("-k --http2 --data-binary @" .. q(f) .. " -o " .. q(f .. ".out") ..
                      " https://127.0.0.1:" .. srv.port .. "/")
    assert.equal(0, code)
    assert.is_true(util.slurp(f) == util.slurp(f .. ".out"))
  end)

  it("serves h2load over TLS without errors", function()
    assert(have("h2load"), "h2load (Debian nghttp2-client) is needed")
    local code, out = sh("timeout 60 h2load -n 2000 -c 4 -m 10 https://127.0.0.1:" .. srv.port .. "/")
    assert.equal(0, code)
    assert.matches("Application protocol: h2", out)
    assert.matches("2000 succeeded, 0 failed, 0 errored", out)
  end)
end)

-- Removes the temporary directory once every test above has run.
describe("cleanup", function()
  it("removes the temporary files", function()
    os.execute("rm -rf " .. q(tmp))
  end)
end)
