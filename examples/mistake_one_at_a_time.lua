#!/usr/bin/env luarun
-- mistake_one_at_a_time.lua: awaiting requests one by one instead of together.
--
-- Each fetch below takes 0.1 s of waiting (an HTTP request to BASE_URL/delay/0.1, or,
-- without a server, lr.sleep(0.1) standing in for it). Called in a loop, they run one
-- after another: 10 fetches, 1 s. With lr.gather they wait at the same time: 0.1 s.
-- The timeline shows it at a glance: one row of bars end to end, then ten rows of
-- bars side by side.
--
--   luarun --trace waterfall.html examples/mistake_one_at_a_time.lua [BASE_URL]
--   (open waterfall.html in a browser; --trace out.json opens in ui.perfetto.dev)
--
-- Any httpbin-like server works for BASE_URL (examples/demo.sh starts one).
local lr = require "luarun"

local base = arg[1]
local n = tonumber(arg[2]) or 10

local fetch
if base then
  local http = require "luarun.http"
  function fetch(i)
    local res = assert(http.get(("%s/delay/0.1?i=%d"):format(base, i)))
    return res.status
  end
else
  function fetch(i)
    lr.sleep(0.1) -- stands in for a request that takes 0.1 s
    return i
  end
end

-- The mistake: each call waits for the previous one to finish.
local t0 = lr.now()
local one_by_one = {}
for i = 1, n do one_by_one[i] = fetch(i) end
local sequential = lr.now() - t0

-- The fix: start them all, then wait for all of them.
t0 = lr.now()
local together = lr.map({table.unpack(one_by_one)}, function(_, i) return fetch(i) end)
local concurrent = lr.now() - t0
assert(together.n == n)

print(("%d fetches of 0.1 s: one at a time %.2f s, with lr.map/gather %.2f s")
      :format(n, sequential, concurrent))
