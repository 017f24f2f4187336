#!/usr/bin/env luarun
-- A WebSocket chat room: every message a client sends goes to all the others.
--   luarun examples/ws_chat.lua [PORT]            (default 8080; 0 picks a free port)
-- Open http://127.0.0.1:8080/ in two browser tabs, or connect any WebSocket client
-- to ws://127.0.0.1:8080/chat?name=ann.
--
-- Each connection is one handler task that reads its client's messages; sending to
-- the others happens from that task. A slow client makes ws:send wait (backpressure),
-- so each client gets its own outbox queue and its own writer task: one slow reader
-- then holds up only itself, never the room.
local lr = require "luarun"
local http = require "luarun.http"

local port = tonumber(arg[1] or "8080")
assert(port and math.type(port) == "integer", "usage: ws_chat.lua [PORT]")

local members = {} -- ws -> {name =, outbox = lr.Queue}

-- Puts text in every outbox but the sender's. A full outbox means that client reads
-- far slower than the room talks: it is dropped rather than let memory grow.
local function broadcast(from, text)
  for ws, m in pairs(members) do
    if ws ~= from and not m.outbox:is_closed() then
      if #m.outbox < 100 then m.outbox:put(text) else m.outbox:close() end
    end
  end
end

local PAGE = [[<!doctype html>
<meta charset="utf-8"><title>luarun chat</title>
<pre id="log"></pre><input id="say" autofocus placeholder="say something, press Enter">
<script>
const ws = new WebSocket(`ws://${location.host}/chat?name=` + (prompt("name?") || "guest"));
const log = (t) => document.getElementById("log").textContent += t + "\n";
ws.onmessage = (e) => log(e.data);
ws.onclose = () => log("(disconnected)");
document.getElementById("say").onkeydown = (e) => {
  if (e.key === "Enter" && e.target.value) { ws.send(e.target.value); log("me: " + e.target.value); e.target.value = ""; }
};
</script>
]]

local app = http.router()

app:get("/", function()
  return 200, {["content-type"] = "text/html; charset=utf-8"}, PAGE
end)

app:get("/chat", function(req)
  -- The WebSocket lives as long as this handler: the server closes it when the
  -- handler returns (or fails, or is cancelled).
  local ws, err = req:websocket()
  -- Not an upgrade request (a browser opening /chat as a page): err.status is 426.
  if not ws then return err.status, nil, "a WebSocket endpoint: open / instead\n" end
  local name = req.query.name or ("guest" .. req.remote_port)
  local me = {name = name, outbox = lr.Queue()}

  -- The writer: sends what is in the outbox, in order, until it is closed.
  local writer = lr.spawn(function()
    while true do
      local text = me.outbox:get()
      if text == nil or not ws:send(text) then break end
    end
  end)

  me.outbox:put("* welcome, " .. name)
  members[ws] = me
  -- Leaving the room happens however this handler ends (a cancelled handler too),
  -- and does nothing that waits: a cancelled task raises again at its next wait.
  local _ <close> = setmetatable({}, {__close = function()
    members[ws] = nil
    me.outbox:close()
    writer:cancel()
  end})
  broadcast(ws, "* " .. name .. " joined")
  -- The reader: this task. The loop ends when the client closes or goes away.
  for msg, kind in ws:messages() do
    if kind == "text" then broadcast(ws, name .. ": " .. msg) end
  end
  broadcast(ws, "* " .. name .. " left")
end)

local server = assert(http.serve({port = port}, app))
print("listening on " .. server.url)
io.stdout:flush()
server:wait()
