-- http.url under seeded random and mutated URLs (issue 16): core/http_url.c cleans and
-- joins hrefs taken from pages off the network, so join, parse, normalize, encode and
-- decode get random bytes and mutations of real-looking URLs. None may raise or
-- crash (.ci/test runs every spec under ASan too); each answers a string or nil, err
-- (kind invalid_url); a joined URL holds no space or control byte; normalising twice
-- changes nothing.
local http = require "luarun.http"
local url = http.url

-- LUARUN_FUZZ_SEED picks another seed (a failure message names the one it ran with).
local SEED = tonumber(os.getenv("LUARUN_FUZZ_SEED") or "") or 16017
local COUNT = 6000

local rand = math.random
local pick, random_bytes = require("support.util").pick, require("support.util").random_bytes

local SEEDS = {
  "http://a/b/c/d;p?q", "https://user:pw@Example.COM:8443/x/../y/./z?a=1&b#frag",
  "//cdn.example/x.js", "../up/../../x", "?only=query", "#only-frag", "", " \t\n ",
  "mailto:x@y", "javascript:alert(1)", "g:h", "http:g", "HTTP://[::1]:80/", "//[fe80::1%25eth0]/",
  "/%2e%2E/%41%zz%", "caf\xc3\xa9/\xff", "\\\\evil.com/x", "http://h:99999/", "http://a b/",
  "data:text/html,<b>x</b>", "//xn--caf-dma.example/", "http://h/" .. ("a/"):rep(200),
}
local PIECES = {"/", "//", "..", ".", "?", "#", "%", "%2", "%2e", ":", "@", "[", "]", "\\",
                " ", "\t", "\n", "\0", "\xc3\xa9", "\xff", "http:", "https://", "&", "=", "+"}

local function mutate(s)
  for _ = 1, rand(1, 6) do
    local i = rand(1, #s + 1)
    local op = rand(4)
    if op == 1 then s = s:sub(1, i - 1) .. pick(PIECES) .. s:sub(i)
    elseif op == 2 then s = s:sub(1, i - 1) .. s:sub(i + rand(1, 5))
    elseif op == 3 then s = s:sub(1, i - 1) .. random_bytes(rand(1, 3)) .. s:sub(i)
    else s = s:sub(1, i - 1) .. s:sub(i, i + rand(0, 8)) .. s:sub(i) end
  end
  return s
end

local function random_url()
  local r = rand(4)
  if r == 1 then return random_bytes(rand(0, 60)) end
  local t = {}
  if r == 2 then
    for i = 1, rand(1, 20) do t[i] = pick(PIECES) end
    return table.concat(t)
  end
  return mutate(pick(SEEDS))
end

local function answers(fn, ...)
  local ok, v, err = pcall(fn, ...)
  assert(ok, v)
  if v == nil then
    assert(type(err) == "table" and err.kind == "invalid_url", tostring(err))
    return nil
  end
  return v
end

describe("http.url fuzzed", function()
  it(("never raises, answers a string or nil, err (seed %d)"):format(SEED), function()
    math.randomseed(SEED)
    for i = 1, COUNT do
      local base, ref = rand(3) == 1 and random_url() or pick(SEEDS), random_url()
      local where = ("seed %d, case %d: %q %q"):format(SEED, i, base, ref)
      local j = answers(url.join, base, ref)
      if j then
        assert(type(j) == "string", where)
        assert(not j:find("[%z\1-\32]"), where .. " -> " .. j)
      end
      local p = answers(url.parse, ref)
      if p then assert(type(p.scheme) == "string", where) end
      local n = answers(url.normalize, ref)
      if n then assert(url.normalize(n) == n, where .. " -> " .. n) end
      local d = url.decode(ref)
      assert(type(d) == "table", where)
      assert(type(url.encode(d)) == "string", where)
    end
  end)
end)
