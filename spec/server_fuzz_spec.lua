-- http.serve under a few thousand seeded random and mutated requests (issue 14):
-- valid requests with bytes flipped, inserted, deleted and duplicated, tokens spliced
-- in (CRLFs, colons, framing headers, huge numbers), random chunk encodings, long
-- lines, pure noise, each split at random points across writes (rawclient.py's fuzz
-- mode). The server process must never crash; every connection must get well-formed
-- responses or be closed; a normal request works after; under the sanitizer pass
-- (.ci/test runs every spec there too) the child is built with ASan and UBSan and
-- checked for leaks when it exits (util.bin's wrapper passes LUARUN_CHILD_ASAN_OPTIONS).
local util = require "support.util"
local sp = require "support.serveproc"

local asan = os.getenv("LUARUN_CHILD_ASAN_OPTIONS") ~= nil
-- LUARUN_FUZZ_SEED picks another seed (a failure message names the one it ran with).
local SEED = tonumber(os.getenv("LUARUN_FUZZ_SEED") or "") or 14014
-- ~10 s in the plain build, about the same in the sanitizer pass (the client is the slower end).
local COUNT = 4000

-- Handlers for the paths the base requests use, reading bodies every way there is.
local SERVER = [==[
local function handler(req)
  local p = req.path
  if p == "/body" then
    local body = assert(req:body())
    return 200, {["x-len"] = tostring(#body)}, body
  elseif p == "/chunks" then
    local n = 0
    for piece in req:body_chunks() do n = n + #piece end
    return "chunks " .. n
  elseif p == "/json" then
    return {json = {got = assert(req:json())}}
  elseif p == "/form" then
    return {json = assert(req:form())}
  elseif p == "/stream" then
    local i = 0
    return 200, {["x-q"] = req.query_string}, function()
      i = i + 1
      if i <= 3 then return "piece " .. i .. "\n" end
    end
  elseif p == "/echo" then
    return {json = {method = req.method, target = req.target, query = req.query,
                    headers = req.header_list, version = req.http_version}}
  elseif p == "/upgrade" then
    local ws = req:websocket()
    if ws then ws:close() return end
    return 400, {}, "not an upgrade\n"
  end
  return "ok " .. req.method .. " " .. #req.target
end
server = http.serve({header_timeout = 1, request_timeout = 2, idle_timeout = 2,
                     max_body_size = 100000}, handler)
]==]

describe("http.serve fuzzed", function()
  it(COUNT .. " seeded random and mutated requests (seed " .. SEED .. "): no crash, " ..
     "every connection answered or closed, no leak", function()
    local s = sp.start(SERVER)
    finally(function() s.stop() end)
    local r = sp.raw("fuzz", s.port, {seed = SEED, count = COUNT, concurrency = 64, deadline = 8}, 600)
    local msg = "seed " .. SEED .. "\n"
    for _, b in ipairs(r.bad) do
      msg = msg .. string.format("case %d: %s\n  sent: %q\n", b.case, tostring(b.why), b.sent)
    end
    assert.is_true(s.alive(), "the server died: " .. msg .. s.err():sub(-3000))
    assert.are.equal(0, r.nbad, msg)
    assert.are.equal(COUNT, r.answered + r.closed)
    -- the fuzz reached both the handlers and the parser's errors
    assert.is_true((r.statuses["200"] or 0) > COUNT // 10, msg)
    assert.is_true((r.statuses["400"] or 0) > COUNT // 10, msg)
    -- and the server still serves
    local st, body = sp.get(s.port, "/echo?after=1")
    assert.are.equal(200, st)
    assert.truthy(body:find('"after":"1"', 1, true), body)
    if os.getenv("LUARUN_FUZZ_VERBOSE") then
      local parts = {}
      for k, v in pairs(r.statuses) do parts[#parts + 1] = k .. "=" .. v end
      table.sort(parts)
      io.stderr:write(string.format("fuzz: %d cases in %.1f s, %d answered, %d closed; %s\n",
                                    r.cases, r.elapsed, r.answered, r.closed, table.concat(parts, " ")))
    end
    local rc, err = s.stop()
    -- SIGINT: tasks cancelled, exit 130; a leak or a sanitizer report would change both
    assert.are.equal(130, rc, err:sub(-5000))
    assert.is_nil(err:find("Sanitizer"), err:sub(-5000))
    assert.is_nil(err:find("runtime error"), err:sub(-5000))
  end)

  it("random bytes on many connections at once, then a normal request", function()
    local s = sp.start(SERVER)
    finally(function() s.stop() end)
    local py = [[
import random, socket, sys, time
rng = random.Random(int(sys.argv[2]))
port = int(sys.argv[1])
socks = []
for i in range(200):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(bytes(rng.randrange(256) for _ in range(rng.randint(1, 3000))))
    socks.append(s)
closed = 0
for s in socks:
    s.settimeout(5)
    try:
        while s.recv(65536):
            pass
        closed += 1
    except ConnectionResetError:
        closed += 1
    except socket.timeout:
        pass
    s.close()
print(closed)
]]
    local code, out, err = util.sh("timeout 60 " .. sp.py .. " -c " .. util.quote(py) ..
                                   " " .. s.port .. " " .. SEED)
    assert.are.equal(0, code, err)
    assert.are.equal("200", out:match("%d+"), out) -- every one closed by the server
    assert.is_true(s.alive())
    local st = sp.get(s.port, "/")
    assert.are.equal(200, st)
    local rc, e = s.stop()
    assert.are.equal(130, rc, e:sub(-5000))
    assert.is_nil(e:find("Sanitizer"), e:sub(-5000))
  end)
end)
