-- req:websocket (http.serve's WebSocket upgrade) against Python's websockets package
-- (Debian's 10.4) through spec/support/wsclient.py, and a raw socket for the frames a
-- well-behaved client never sends: echo both kinds, 1 MiB, fragments from the client,
-- ping/pong, close codes and reasons both ways, max_message_size (1009), subprotocols,
-- a plain GET (426), the handler's return (1000), server:close() (1001), 100 clients
-- at once, a client that vanishes (1006, the handler still finishes), invalid frames
-- (1002/1007) with the server still serving the next client.
-- Servers are child luarun processes (support/serveproc.lua) on 127.0.0.1.
local util = require "support.util"
local sp = require "support.serveproc"
local json = require "luarun.json"

local q = util.quote
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
local CLIENT = here .. "/support/wsclient.py"

-- The server: each WebSocket handler counts itself in `started` once upgraded and, once it ends
-- (after its loop, never by an error), in `finished`, keeping what ended it in
-- ends[id] ("CODE REASON"); /stats serves them. Handlers say "end <id> <code>".
local APP = [==[
local started, finished, ends = 0, 0, {}
local function track(req, fn)
  local ws, proto = req:websocket(req._opts)
  if not ws then return proto.status, {["x-kind"] = proto.kind}, proto.message end
  started = started + 1
  local how = fn(ws, proto) or "-"
  finished = finished + 1
  ends[req.query.id or "?"] = how
  say("end", req.query.id or "?", how)
end
-- until the peer closes: echo; the close (or its absence) as "CODE REASON"
local function echo(ws)
  for msg, kind in ws:messages() do
    if kind == "binary" then ws:send_binary(msg) else ws:send(msg) end
  end
  local msg, err = ws:receive()
  assert(msg == nil and err.kind == "closed", "receive after the loop")
  return err.code .. " " .. (err.reason or "")
end

server = http.serve({}, function(req)
  local p = req.path
  if p == "/stats" then
    return {json = {started = started, finished = finished,
                    ends = req.query.id and ends[req.query.id] or nil}}
  elseif p == "/echo" then
    return track(req, echo)
  elseif p == "/small" then
    req._opts = {max_message_size = 1000}
    return track(req, echo)
  elseif p == "/proto" then
    req._opts = {protocols = {"chat", "superchat"}}
    return track(req, function(ws, proto)
      ws:send("protocol=" .. tostring(proto))
      return echo(ws)
    end)
  elseif p == "/recv" then -- receive() by hand: what the client's close looks like
    return track(req, function(ws)
      local msgs = {}
      while true do
        local msg, err = ws:receive()
        if msg == nil then
          ws:send("late") -- nil, err after the close: no raise
          return err.kind .. " " .. err.code .. " " .. (err.reason or "") .. " after " ..
                 table.concat(msgs, ",")
        end
        msgs[#msgs + 1] = msg
      end
    end)
  elseif p == "/close4002" then -- the handler closes after the first message
    return track(req, function(ws)
      local msg = ws:receive()
      assert(ws:close(4002, "server says " .. msg))
      local m2, err = ws:receive()
      return tostring(m2) .. " " .. err.kind .. " " .. err.code
    end)
  elseif p == "/return" then -- the handler just returns: the runtime closes with 1000
    return track(req, function(ws)
      ws:send("hello")
      ws:send_binary("\0\1")
      return "returned"
    end)
  elseif p == "/hold" then -- until server:close()
    return track(req, function(ws)
      ws:send("holding")
      return echo(ws)
    end)
  elseif p == "/shutdown" then
    lr.spawn(function() server:close(2) end)
    return "closing"
  elseif p == "/strict" then -- raises when the request is no upgrade
    local ws = assert(req:websocket())
    ws:send("strict")
    return
  end
  return 404, {}, "no such path"
end)
]==]

-- Runs wsclient.py steps against url with spec (a table); returns its JSON lines.
local function client(url, spec, timeout)
  local code, out, err = util.sh("timeout " .. (timeout or 60) .. " " .. q(sp.python) .. " " ..
                                 q(CLIENT) .. " steps " .. q(url), json.encode(spec))
  assert(code == 0, "wsclient failed (" .. tostring(code) .. "):\n" .. err .. out)
  local lines = {}
  for l in out:gmatch("[^\n]+") do lines[#lines + 1] = json.decode(l) end
  return lines, err
end

local function pyrun(mode, args, spec, timeout)
  local code, out, err = util.sh("timeout " .. (timeout or 120) .. " " .. q(sp.python) .. " " ..
                                 q(CLIENT) .. " " .. mode .. " " .. args, json.encode(spec))
  assert(code == 0, "wsclient " .. mode .. " failed (" .. tostring(code) .. "):\n" .. err .. out)
  return json.decode(out:match("[^\n]+"))
end

-- The server's /stats (id: one handler's end) through curl.
local function stats(s, id)
  local code, out = sp.curl(q(s.url .. "/stats" .. (id and ("?id=" .. id) or "")))
  assert(code == 0, "curl /stats failed")
  return json.decode(out)
end

-- Polls /stats until the handler of id has ended (up to seconds); returns its end.
local function ended(s, id, seconds)
  local t_end = os.time() + (seconds or 10)
  repeat
    local st = stats(s, id)
    if st.ends ~= nil and st.ends ~= json.null then return st.ends, st end
    os.execute("sleep 0.05")
  until os.time() > t_end
  return nil, stats(s, id)
end

local function ws_url(s, path) return (s.url:gsub("^http", "ws")) .. path end

-- A client frame: fin + opcode, payload masked (unless mask == false) with a fixed key.
local function frame(opcode, payload, opts)
  opts = opts or {}
  local b0 = (opts.fin == false and 0 or 0x80) | (opts.rsv or 0) | opcode
  local n = #payload
  local masked = opts.mask ~= false
  local head = string.char(b0)
  local mbit = masked and 0x80 or 0
  if n < 126 then
    head = head .. string.char(mbit | n)
  elseif n < 65536 then
    head = head .. string.char(mbit | 126) .. string.pack(">I2", n)
  else
    head = head .. string.char(mbit | 127) .. string.pack(">I8", n)
  end
  if not masked then return head .. payload end
  local key = {0x37, 0xfa, 0x21, 0x3d}
  local out = {}
  for i = 1, n do out[i] = string.char(payload:byte(i) ~ key[(i - 1) % 4 + 1]) end
  return head .. string.char(table.unpack(key)) .. table.concat(out)
end

local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local function unhex(h) return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end)) end

-- Sends frames on a raw upgraded connection to path; returns wsclient's raw result.
-- gap: seconds between the frames (so that the server answers one before the next).
local function raw(s, path, frames, gap)
  local hx = {}
  for i, f in ipairs(frames) do hx[i] = hex(f) end
  return pyrun("raw", s.port .. " " .. q(path), {frames_hex = hx, gap = gap}, 30)
end

local function no_sanitizer_report(s)
  local _, err = s.stop()
  assert.is_nil(err:find("Sanitizer", 1, true), err)
  assert.is_nil(err:find("runtime error", 1, true), err)
end

describe("req:websocket", function()
  local s

  setup(function() s = sp.start(APP) end)
  teardown(function() if s then no_sanitizer_report(s) end end)

  describe("messages", function()
    it("echoes text as text and binary as binary, the empty message too", function()
      local r = client(ws_url(s, "/echo?id=echo1"), {steps = {
        {send = "hello"}, {recv = true},
        {send_hex = "0001ff80"}, {recv = true},
        {send = "h\u{e9}llo \u{1F600}"}, {recv = true},
        {send = ""}, {recv = true},
        {send_hex = ""}, {recv = true},
        {close = {1000, "done"}},
      }})
      assert.are.same({event = "open", subprotocol = json.null}, r[1])
      assert.are.same({msg = "hello", kind = "text"}, r[3])
      assert.are.same({msg = "0001ff80", kind = "binary"}, r[5])
      assert.are.same({msg = "h\u{e9}llo \u{1F600}", kind = "text"}, r[7])
      assert.are.same({msg = "", kind = "text"}, r[9])
      assert.are.same({msg = "", kind = "binary"}, r[11])
      assert.are.same({code = 1000, reason = "done"}, r[12])
      assert.are.equal("1000 done", ended(s, "echo1"))
    end)

    it("takes and sends a 1 MiB message of each kind", function()
      local r = client(ws_url(s, "/echo?id=big1"), {steps = {
        {send_pattern = 1048576, binary = true}, {recv_pattern = 1048576},
        {send_pattern = 1048576}, {recv_pattern = 1048576},
        {close = {1000, ""}},
      }})
      assert.are.same({ok = true, len = 1048576, kind = "binary"}, r[3])
      assert.are.same({ok = true, len = 1048576, kind = "text"}, r[5])
      assert.are.equal(1000, r[6].code)
      assert.are.equal("1000 ", ended(s, "big1"))
    end)

    it("joins a fragmented message from the client into one", function()
      local frags = {}
      for i = 1, 50 do frags[i] = string.rep(string.char(96 + i % 26 + 1), i) end
      local r = client(ws_url(s, "/echo?id=frag1"), {steps = {
        {send_frags = {"ab", "cd", "\u{e9}f"}}, {recv = true},
        {send_frags = frags}, {recv = true},
        {send = "after"}, {recv = true},
        {close = {1000, ""}},
      }})
      assert.are.same({msg = "abcd\u{e9}f", kind = "text"}, r[3])
      assert.are.same({msg = table.concat(frags), kind = "text"}, r[5])
      assert.are.same({msg = "after", kind = "text"}, r[7])
    end)

    it("answers the client's ping with a pong, between messages", function()
      local r = client(ws_url(s, "/echo?id=ping1"), {steps = {
        {ping = "p1"}, {send = "x"}, {ping = "p2"}, {recv = true}, {ping = ""},
        {close = {1000, ""}},
      }})
      assert.are.same({pong = true}, r[2])
      assert.are.same({pong = true}, r[4])
      assert.are.same({msg = "x", kind = "text"}, r[5])
      assert.are.same({pong = true}, r[6])
    end)
  end)

  describe("closing", function()
    it("gives the client's close code and reason to the handler's receive", function()
      local r = client(ws_url(s, "/recv?id=cc1"), {steps = {
        {send = "m1"}, {send = "m2"}, {sleep = 0.1}, {close = {4001, "bye"}},
      }})
      assert.are.same({code = 4001, reason = "bye"}, r[5])
      assert.are.equal("closed 4001 bye after m1,m2", ended(s, "cc1"))
    end)

    it("gives the handler's close code and reason to the client", function()
      local r = client(ws_url(s, "/close4002?id=sc1"), {steps = {
        {send = "hi"}, {recv = true}, {wait_closed = true},
      }})
      assert.are.equal(true, r[3].closed)
      assert.are.equal(4002, r[3].code)
      assert.are.equal("server says hi", r[3].reason)
      assert.are.same({code = 4002, reason = "server says hi"}, r[4])
      -- the handler's receive after its own close: nil, closed
      assert.are.equal("nil closed 4002", ended(s, "sc1"))
    end)

    it("closes with 1000 when the handler returns, after what it sent", function()
      local r = client(ws_url(s, "/return?id=ret1"), {steps = {
        {recv = true}, {recv = true}, {recv = true}, {wait_closed = true},
      }})
      assert.are.same({msg = "hello", kind = "text"}, r[2])
      assert.are.same({msg = "0001", kind = "binary"}, r[3])
      assert.are.equal(true, r[4].closed)
      assert.are.equal(1000, r[4].code)
      assert.are.equal(1000, r[5].code)
      assert.are.equal("returned", ended(s, "ret1"))
    end)

    it("closes with 1009 when a message is over max_message_size, and keeps smaller ones", function()
      local r = client(ws_url(s, "/small?id=max1"), {steps = {
        {send_pattern = 1000}, {recv_pattern = 1000},
        {send_pattern = 1001, binary = true}, {recv = true},
      }})
      assert.are.same({ok = true, len = 1000, kind = "text"}, r[3])
      assert.are.equal(true, r[5].closed, json.encode(r))
      assert.are.equal(1009, r[5].code)
      assert.are.equal(1009, r[6].close_code)
      assert.are.equal(1009, tonumber(ended(s, "max1"):match("^%d+")))
      -- in fragments: the total counts
      r = client(ws_url(s, "/small?id=max2"), {steps = {
        {send_frags = {string.rep("a", 600), string.rep("b", 600)}}, {recv = true},
      }})
      assert.are.equal(1009, r[3].code, json.encode(r))
      assert.are.equal(1009, tonumber(ended(s, "max2"):match("^%d+")))
    end)

    it("ends the handler's loop with 1006 when the client vanishes, and the handler finishes", function()
      local before = stats(s)
      for _, how in ipairs({"abort", "close"}) do
        local id = "gone_" .. how
        local r = client(ws_url(s, "/echo?id=" .. id), {steps = {
          {send = "one"}, {recv = true}, {vanish = how},
        }})
        assert.are.same({msg = "one", kind = "text"}, r[3])
        assert.are.same({vanished = true}, r[4])
        assert.are.equal("1006 ", ended(s, id))
      end
      local after = stats(s)
      assert.are.equal(before.started + 2, after.started)
      assert.are.equal(before.finished + 2, after.finished)
      assert.are.equal(after.started, after.finished)
    end)
  end)

  describe("subprotocols", function()
    it("agrees on the first of the server's that the client offers", function()
      local r = client(ws_url(s, "/proto?id=pr1"), {subprotocols = {"a", "chat"}, steps = {
        {recv = true}, {send = "x"}, {recv = true}, {close = {1000, ""}},
      }})
      assert.are.same({event = "open", subprotocol = "chat"}, r[1])
      assert.are.same({msg = "protocol=chat", kind = "text"}, r[2])
      assert.are.same({msg = "x", kind = "text"}, r[4])
      -- the server's order decides
      r = client(ws_url(s, "/proto?id=pr2"), {subprotocols = {"superchat", "chat"}, steps = {
        {recv = true}, {close = {1000, ""}},
      }})
      assert.are.same({event = "open", subprotocol = "chat"}, r[1])
      assert.are.same({msg = "protocol=chat", kind = "text"}, r[2])
    end)

    it("sends no protocol header without overlap (websockets connects with none)", function()
      local r = client(ws_url(s, "/proto?id=pr3"), {subprotocols = {"a", "b"}, steps = {
        {recv = true}, {close = {1000, ""}},
      }})
      assert.are.same({event = "open", subprotocol = json.null}, r[1])
      assert.are.same({msg = "protocol=nil", kind = "text"}, r[2])
      -- no offer at all
      r = client(ws_url(s, "/proto?id=pr4"), {steps = {{recv = true}, {close = {1000, ""}}}})
      assert.are.same({event = "open", subprotocol = json.null}, r[1])
      assert.are.same({msg = "protocol=nil", kind = "text"}, r[2])
      -- and the raw answer has no Sec-WebSocket-Protocol line
      local res = sp.exchange(s.port, "GET /proto?id=pr5 HTTP/1.1\r\nHost: x\r\n" ..
                              "Upgrade: websocket\r\nConnection: Upgrade\r\n" ..
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" ..
                              "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: x, y\r\n\r\n",
                              {timeout = 1, head = true})
      local r1 = res.responses[1]
      assert.are.equal(101, r1 and r1.status, res.data)
      assert.are.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", r1.headers["sec-websocket-accept"])
      assert.is_nil(r1.headers["sec-websocket-protocol"])
    end)
  end)

  describe("requests that are not upgrades", function()
    it("gives nil, err (protocol, 426) to the handler for a plain GET", function()
      local status, body, headers = sp.get(s.port, "/echo?id=plain1")
      assert.are.equal(426, status)
      assert.are.equal("protocol", headers["x-kind"])
      assert.is_truthy(body:find("not a WebSocket upgrade", 1, true), body)
      -- a bad version and a missing key too
      local code, out = sp.curl("-i " .. q(s.url .. "/echo") .. " -H 'Upgrade: websocket' " ..
                                "-H 'Connection: Upgrade' -H 'Sec-WebSocket-Version: 8' " ..
                                "-H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='")
      assert.are.equal(0, code)
      assert.is_truthy(out:find("^HTTP/1.1 426"), out)
      assert.is_truthy(out:find("Version", 1, true), out)
      code, out = sp.curl("-i " .. q(s.url .. "/echo") .. " -H 'Upgrade: websocket' " ..
                          "-H 'Connection: Upgrade' -H 'Sec-WebSocket-Version: 13'")
      assert.are.equal(0, code)
      assert.is_truthy(out:find("^HTTP/1.1 426"), out)
      assert.is_truthy(out:find("Key", 1, true), out)
      -- assert(req:websocket()) raises an error with status 426: the answer
      status = sp.get(s.port, "/strict")
      assert.are.equal(426, status)
      -- and the server still upgrades the next one on the same path
      local r = client(ws_url(s, "/strict"), {steps = {{recv = true}, {wait_closed = true}}})
      assert.are.same({msg = "strict", kind = "text"}, r[2])
      assert.are.equal(1000, r[3].code)
    end)
  end)

  describe("invalid frames from a raw socket", function()
    local function check_next_client()
      local r = client(ws_url(s, "/echo?id=next"), {steps = {
        {send = "still up"}, {recv = true}, {close = {1000, ""}},
      }})
      assert.are.same({msg = "still up", kind = "text"}, r[3])
    end

    it("closes with 1002 on an unmasked client frame", function()
      local r = raw(s, "/echo?id=unmasked", {frame(1, "hi", {mask = false})})
      assert.are.equal(101, r.status)
      assert.are.equal(1002, r.close_code, json.encode(r))
      assert.is_false(r.frames[#r.frames].masked) -- the server's frames are not masked
      assert.is_true(r.eof)
      assert.are.equal(1002, tonumber(ended(s, "unmasked"):match("^%d+")))
      check_next_client()
    end)

    it("closes with 1002 on a reserved opcode and on RSV bits without an extension", function()
      local r = raw(s, "/echo?id=badop", {frame(3, "x")})
      assert.are.equal(1002, r.close_code, json.encode(r))
      assert.is_true(r.eof)
      r = raw(s, "/echo?id=rsv", {frame(1, "x", {rsv = 0x40})})
      assert.are.equal(1002, r.close_code, json.encode(r))
      -- a continuation with nothing to continue, a fragmented ping
      r = raw(s, "/echo?id=cont", {frame(0, "x")})
      assert.are.equal(1002, r.close_code, json.encode(r))
      -- control frames wslay's frame parser rejects (a fragmented ping, a ping over 125
      -- bytes): a 1002 close too, and the handler sees 1002, not 1006
      r = raw(s, "/echo?id=fragping", {frame(9, "x", {fin = false})})
      assert.are.equal(1002, r.close_code, json.encode(r))
      assert.is_true(r.eof)
      assert.are.equal("1002 ", ended(s, "fragping"))
      r = raw(s, "/echo?id=bigping", {frame(1, "first"), frame(9, string.rep("p", 126))}, 0.3)
      assert.are.equal("first", unhex(r.frames[1].payload_hex))
      assert.are.equal(1002, r.close_code, json.encode(r))
      assert.are.equal("1002 ", ended(s, "bigping"))
      check_next_client()
    end)

    it("closes with 1007 on invalid UTF-8 in a text message, whole or fragmented", function()
      local r = raw(s, "/echo?id=utf1", {frame(1, "ok"), frame(1, "a\xff\xfeb")}, 0.3)
      assert.are.equal(1007, r.close_code, json.encode(r))
      -- the valid message before it was echoed
      assert.are.equal(1, r.frames[1].opcode)
      assert.are.equal("ok", unhex(r.frames[1].payload_hex))
      assert.are.equal(1007, tonumber(ended(s, "utf1"):match("^%d+")))
      -- a sequence split across fragments is fine; a bad one across them is not
      r = raw(s, "/echo?id=utf2", {frame(1, "\xc3", {fin = false}), frame(0, "\xa9"),
                                   frame(8, string.pack(">I2", 1000))}, 0.3)
      assert.are.equal("\xc3\xa9", unhex(r.frames[1].payload_hex))
      assert.are.equal(1000, r.close_code)
      r = raw(s, "/echo?id=utf3", {frame(1, "\xc3", {fin = false}), frame(0, "A")})
      assert.are.equal(1007, r.close_code, json.encode(r))
      -- a close frame whose reason is not UTF-8
      r = raw(s, "/echo?id=utf4", {frame(8, string.pack(">I2", 1000) .. "\xff")})
      assert.is_truthy(r.close_code == 1007 or r.close_code == 1002, json.encode(r))
      check_next_client()
    end)

    it("keeps a handler count that matches: every handler has finished", function()
      local st = stats(s)
      assert.is_true(st.started > 10)
      local t_end = os.time() + 5
      while st.finished ~= st.started and os.time() <= t_end do
        os.execute("sleep 0.05")
        st = stats(s)
      end
      assert.are.equal(st.started, st.finished)
    end)
  end)

  describe("load", function()
    it("serves 100 concurrent clients each echoing 100 messages", function()
      local before = stats(s)
      local t0 = os.time()
      local r = pyrun("many", q(ws_url(s, "/echo")), {clients = 100, messages = 100}, 120)
      assert.are.equal(100, r.ok, json.encode(r.errors))
      assert.are.same({}, r.errors)
      assert.is_true(os.time() - t0 < 60)
      local st
      local t_end = os.time() + 10
      repeat
        st = stats(s)
        if st.finished == before.finished + 100 then break end
        os.execute("sleep 0.05")
      until os.time() > t_end
      assert.are.equal(before.started + 100, st.started)
      assert.are.equal(before.finished + 100, st.finished)
    end)
  end)
end)

describe("server:close() with open WebSockets", function()
  it("closes them with 1001, lets their handlers finish and exits", function()
    local s = sp.start(APP)
    local f = os.tmpname()
    local spec = json.encode({steps = {{recv = true}, {recv = true}, {wait_closed = true}}})
    local pids = {}
    for i = 1, 3 do
      util.put(f .. i .. ".in", spec)
      os.execute("timeout 30 " .. q(sp.python) .. " " .. q(CLIENT) .. " steps " ..
                 q(ws_url(s, "/hold?id=h" .. i)) .. " < " .. q(f .. i .. ".in") .. " > " ..
                 q(f .. i) .. " 2>&1 &")
      pids[i] = i
    end
    -- wait until all three hold their WebSocket
    local t_end = os.time() + 10
    repeat
      os.execute("sleep 0.05")
    until stats(s).started == 3 or os.time() > t_end
    assert.are.equal(3, stats(s).started)
    os.execute("sleep 0.2")
    local code, out = sp.curl(q(s.url .. "/shutdown"))
    assert.are.equal(0, code)
    assert.are.equal("closing", out)
    local rc = s.wait_exit(10)
    assert.are.equal(0, rc, s.err())
    for i = 1, 3 do
      local t2 = os.time() + 10
      local text
      repeat
        text = util.slurp(f .. i)
        if text:find("\"event\": \"end\"", 1, true) then break end
        os.execute("sleep 0.05")
      until os.time() > t2
      local lines = {}
      for l in text:gmatch("[^\n]+") do lines[#lines + 1] = json.decode(l) end
      assert.are.same({msg = "holding", kind = "text"}, lines[2], text)
      assert.are.equal(true, lines[3].closed, text)
      assert.are.equal(1001, lines[3].code, text)
      assert.are.equal(1001, lines[4].code, text)
      os.remove(f .. i)
      os.remove(f .. i .. ".in")
    end
    os.remove(f)
    -- each handler saw the 1001 it sent and ended before the script did
    local ends = 0
    for _, l in ipairs(s.lines()) do
      if l:match("^end h%d 1001 ") then ends = ends + 1 end
    end
    assert.are.equal(3, ends, s.out())
    assert.are.equal("server closed", s.lines()[#s.lines()])
    no_sanitizer_report(s)
  end)
end)
