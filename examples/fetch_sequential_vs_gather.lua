#!/usr/bin/env luarun
-- 100 requests to /delay/1, first one after another, then all at once with gather.
--   luarun examples/fetch_sequential_vs_gather.lua http://127.0.0.1:PORT
-- Any httpbin-like server works (examples/demo.sh starts spec/support/httpbin.py).
-- LUARUN_DEMO_SMALL=1 runs 5 requests to /delay/0.1 instead, for the specs.
local lr = require "luarun"
local http = require "luarun.http"

local base = assert(arg[1], "usage: fetch_sequential_vs_gather.lua BASE_URL")
local small = os.getenv("LUARUN_DEMO_SMALL") == "1"
local n = small and 5 or 100
local delay = small and 0.1 or 1
local url = ("%s/delay/%g"):format(base, delay)

local function fetch()
  local res = assert(http.get(url, {timeout = 60}))
  assert(res.status == 200, "unexpected status " .. res.status)
  return res.status
end

local t0 = lr.now()
for _ = 1, n do fetch() end
local sequential = lr.now() - t0

local fns = {}
for i = 1, n do fns[i] = fetch end
t0 = lr.now()
local results = lr.gather(fns)
local together = lr.now() - t0
assert(results.n == n)

print(("%d requests to /delay/%g"):format(n, delay))
print("| how                  | wall time |")
print("|----------------------|-----------|")
print(("| one after another    | %8.2fs |"):format(sequential))
print(("| all at once (gather) | %8.2fs |"):format(together))
