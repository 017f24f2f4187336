-- luarun peer of bench/http_options.sh: N GETs of URL, LIMIT at once, on a client
-- with one of the options of issue 16 (or none).
--   luarun bench/http_options_luarun.lua URL N LIMIT plain|retry|cookies|delay
-- retry: every request goes through the retry job (none is retried: nginx says 200);
-- cookies: the client keeps a jar (empty: nginx sets no cookie); delay: a
-- delay_per_host gate with a delay of 1 ns, so every request passes through it.
local lr = require "luarun"
local http = require "luarun.http"

local url, n, limit, mode = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4] or "plain"
local opts = ({plain = {}, retry = {retry = true}, cookies = {cookies = true},
               delay = {delay_per_host = 1e-9}})[mode]
local client = http.client(opts)
local failures = 0
local items = {}
for i = 1, n do items[i] = i end
local t0 = lr.now()
lr.map(items, function()
  local res = client:get(url)
  if not res or res.status ~= 200 then failures = failures + 1 end
end, {limit = limit})
print(("%.3f %d"):format(lr.now() - t0, failures))
