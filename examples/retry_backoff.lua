#!/usr/bin/env luarun
-- Timeouts with retries and exponential backoff.
--   luarun examples/retry_backoff.lua
-- Each attempt gets its own deadline (lr.timeout cancels an attempt that hangs);
-- failures are retried after 0.02, 0.04, 0.08 ... s, with jitter so that many
-- clients that failed together do not retry together. Programming errors (anything
-- that is not an expected failure) are not retried.
local lr = require "luarun"

-- Calls fn(attempt) until it returns a value; returns value, attempts or nil, err.
local function retry(fn, opts)
  local tries, base, per_try = opts.tries or 5, opts.base or 0.02, opts.timeout or 0.1
  local last
  for attempt = 1, tries do
    local value, err = lr.timeout(per_try, fn, attempt)
    if value ~= nil then return value, attempt end
    last = err
    print(("  attempt %d failed: %s: %s"):format(attempt, err.kind, err.message))
    if attempt < tries then
      local delay = base * 2 ^ (attempt - 1)
      lr.sleep(delay * (0.5 + math.random() / 2)) -- "equal jitter"
    end
  end
  return nil, last
end

-- A flaky service: hangs on the first call, refuses the second, answers the third.
local function flaky(attempt)
  if attempt == 1 then lr.sleep(10) end -- hangs: the per-attempt timeout cancels it
  if attempt == 2 then return nil, {kind = "connect", message = "connection refused"} end
  return "payload"
end

print("flaky service:")
local v, attempts = retry(flaky, {tries = 5})
print(("got %q after %d attempts"):format(v, attempts))

print("service that is down:")
local none, err = retry(function() return nil, {kind = "connect", message = "refused"} end,
                       {tries = 3})
print(("gave up: %s, last error kind %s"):format(tostring(none), err.kind))
