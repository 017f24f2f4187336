-- http.robots under seeded random and mutated robots.txt files and random paths
-- (issue 16): parsing and matching never raise, always answer a boolean, and stay
-- within an instruction budget (a count hook, so the bound does not depend on the
-- machine's speed); and on small alphabets the matcher agrees with a reference built
-- on Lua patterns. .ci/test runs every spec under ASan too.
local http = require "luarun.http"

-- LUARUN_FUZZ_SEED picks another seed (a failure message names the one it ran with).
local SEED = tonumber(os.getenv("LUARUN_FUZZ_SEED") or "") or 16016
local FILES = 1500
local PATHS = 20

local rand = math.random

local pick, random_bytes = require("support.util").pick, require("support.util").random_bytes

local PIECES = {"/", "*", "$", "a", "b", "%", "%2", "%2f", "%7E", "?", "=", "&", "#", " ",
                "\t", "\xc3\xa9", "\0", "..", "**", "*$", "$*", "/robots.txt"}

local function random_pattern(n)
  local t = {}
  for i = 1, n do t[i] = pick(PIECES) end
  return table.concat(t)
end

local KEYS = {"User-agent", "user-agent", "USERAGENT", "Allow", "Disallow", "disalow",
              "Crawl-delay", "Sitemap", "Host", "", "Noindex", "User agent"}
local AGENTS = {"*", "FooBot", "foobot/1.0", "Bar-Bot", "", "* extra", "\xff"}
local ENDS = {"\n", "\r\n", "\r", "\n\n", ""}

local function random_line()
  local r = rand(10)
  local key = pick(KEYS)
  local value
  if r <= 2 then value = pick(AGENTS)
  elseif r <= 7 then value = random_pattern(rand(0, 12))
  elseif r == 8 then value = pick({"5", "0.5", "-1", "abc", "1e400", "", "nan"})
  elseif r == 9 then value = random_bytes(rand(0, 20))
  else return random_bytes(rand(0, 40)) .. pick(ENDS) end
  local sep = pick({":", " : ", ":", "", "::"})
  local comment = rand(5) == 1 and (" # " .. random_bytes(rand(0, 8))) or ""
  return key .. sep .. value .. comment .. pick(ENDS)
end

local function random_file()
  local t = {}
  if rand(10) == 1 then t[1] = "\239\187\191" end
  for _ = 1, rand(0, 30) do t[#t + 1] = random_line() end
  return table.concat(t)
end

-- Flips, inserts, deletes or duplicates a few bytes of s.
local function mutate(s)
  for _ = 1, rand(1, 8) do
    local n = #s
    local i = rand(1, n + 1)
    local op = rand(4)
    if op == 1 and n > 0 and i <= n then
      s = s:sub(1, i - 1) .. string.char(rand(0, 255)) .. s:sub(i + 1)
    elseif op == 2 then
      s = s:sub(1, i - 1) .. random_bytes(rand(1, 4)) .. s:sub(i)
    elseif op == 3 and n > 0 then
      s = s:sub(1, i - 1) .. s:sub(i + rand(1, 6))
    else
      s = s:sub(1, i - 1) .. s:sub(i, i + rand(0, 10)) .. s:sub(i)
    end
  end
  return s
end

local function random_path()
  local r = rand(6)
  if r == 1 then return "http://example.com" .. random_pattern(rand(0, 10)) end
  if r == 2 then return random_bytes(rand(0, 30)) end
  return "/" .. random_pattern(rand(0, 20))
end

-- Runs fn under an instruction budget; returns pcall's results.
local function bounded(budget, fn, ...)
  debug.sethook(function() error("instruction budget exceeded") end, "", budget)
  local res = table.pack(pcall(fn, ...))
  debug.sethook()
  return table.unpack(res, 1, res.n)
end

describe("http.robots fuzzed", function()
  it(("never raises, always answers, within a budget (seed %d)"):format(SEED), function()
    math.randomseed(SEED)
    local last
    for i = 1, FILES do
      local text = random_file()
      if i % 2 == 0 then text = mutate(text) end
      last = text
      local ok, err = bounded(5e6, function()
        local r = http.robots(text)
        assert(type(r.sitemaps) == "table")
        for _ = 1, PATHS do
          local agent = rand(3) == 1 and nil or pick(AGENTS)
          local a, e = r:allowed(random_path(), agent)
          assert(type(a) == "boolean", "allowed gave " .. tostring(a))
          assert(a or e == nil or e.kind == "invalid_url")
          local d = r:crawl_delay(agent)
          assert(d == nil or (type(d) == "number" and d >= 0 and d < math.huge))
        end
      end)
      assert(ok, ("seed %d, file %d: %s\n%q"):format(SEED, i, tostring(err), last))
    end
  end)

  it("stays fast on long hostile patterns and paths", function()
    math.randomseed(SEED + 1)
    for i = 1, 50 do
      local pat = "/" .. random_pattern(rand(50, 400))
      local text = "User-agent: *\nDisallow: " .. pat .. "\nAllow: " .. pat .. "x$\n"
      local path = "/" .. ("a"):rep(rand(1000, 20000)) .. random_pattern(rand(0, 50))
      local ok, err = bounded(2e6, function()
        local r = http.robots(text)
        assert(type(r:allowed(path)) == "boolean")
      end)
      assert(ok, ("seed %d, case %d: %s"):format(SEED + 1, i, tostring(err)))
    end
  end)

  -- The reference: a rule as a Lua pattern ('*' is ".-", '$' at the end anchors),
  -- longest pattern wins, Allow wins ties. Paths and patterns use only bytes that
  -- percent-normalisation leaves alone, so both sides see the same strings.
  local function ref_allowed(rules, path)
    local best, allow = -1, true
    for _, rule in ipairs(rules) do
      local p = rule.pat
      local anchored = p:sub(-1) == "$"
      if anchored then p = p:sub(1, -2) end
      local lp = "^" .. p:gsub("[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0"):gsub("%*", ".-")
      if anchored then lp = lp .. "$" end
      if path:find(lp) then
        local len = #rule.pat
        if len > best or (len == best and rule.allow) then best, allow = len, rule.allow end
      end
    end
    return allow
  end

  it(("agrees with a reference matcher on small alphabets (seed %d)"):format(SEED + 2), function()
    math.randomseed(SEED + 2)
    local alphabet = {"a", "b", "/", "*", "$", ".", "-"}
    local function word(n, chars)
      local t = {"/"}
      for i = 1, n do t[i + 1] = pick(chars) end
      return table.concat(t)
    end
    for i = 1, 2000 do
      local rules, lines = {}, {"User-agent: *"}
      for j = 1, rand(1, 5) do
        local pat = word(rand(0, 6), alphabet)
        local allow = rand(2) == 1
        rules[j] = {pat = pat, allow = allow}
        lines[#lines + 1] = (allow and "Allow: " or "Disallow: ") .. pat
      end
      local r = http.robots(table.concat(lines, "\n"))
      for _ = 1, 10 do
        local path = word(rand(0, 8), {"a", "b", "/", ".", "-", "$"})
        if path ~= "/robots.txt" then
          assert(ref_allowed(rules, path) == r:allowed(path),
                 ("seed %d, case %d: %s against\n%s"):format(SEED + 2, i, path,
                                                             table.concat(lines, "\n")))
        end
      end
    end
  end)
end)
