--- luarun.robots: http.robots, robots.txt fetched, parsed and matched (RFC 9309).
-- bindings/http_url.c calls this chunk's function with the luarun.http module and
-- stores the result as http.robots. It is Lua, not C, because it parses bytes from
-- the network: here a mistake costs an error, never memory safety, and a file is
-- parsed once per host. Matching never backtracks: a pattern is cut at its '*'s and
-- each piece is found, leftmost, with a plain string.find after the last (the greedy
-- wildcard algorithm, O(path * pattern) at worst), so a hostile "/*a*a*a...b$" cannot
-- hang a crawler as a regular expression would (scrapy/protego's lesson).
local byte, char, find, format, gmatch, gsub, lower, match, sub, upper =
  string.byte, string.char, string.find, string.format, string.gmatch, string.gsub,
  string.lower, string.match, string.sub, string.upper
local tonumber, type, setmetatable, error = tonumber, type, setmetatable, error

-- RFC 9309 2.5: a parser must read at least 500 KiB; what follows is ignored.
local MAX_PARSE = 500 * 1024
-- A larger body than this is not downloaded at all (the fetch fails as too_large).
local MAX_FETCH = 4 * 1024 * 1024

-- Record names, with the misspellings Google's parser also accepts.
local KEYS = {
  ["user-agent"] = "agent", ["useragent"] = "agent", ["user agent"] = "agent",
  ["allow"] = "allow",
  ["disallow"] = "disallow", ["dissallow"] = "disallow", ["dissalow"] = "disallow",
  ["disalow"] = "disallow", ["diasllow"] = "disallow", ["disallaw"] = "disallow",
  ["crawl-delay"] = "delay", ["crawldelay"] = "delay", ["crawl delay"] = "delay",
  ["sitemap"] = "sitemap", ["site-map"] = "sitemap",
}

local function unreserved(c)
  return (c >= 48 and c <= 57) or (c >= 65 and c <= 90) or (c >= 97 and c <= 122)
    or c == 45 or c == 46 or c == 95 or c == 126
end

local function escape_pair(h)
  local c = tonumber(h, 16)
  if unreserved(c) then return char(c) end
  return "%" .. upper(h)
end

local function escape_byte(c) return format("%%%02X", byte(c)) end

-- RFC 9309 2.2.2: paths and patterns are compared with the same percent-encoding:
-- bytes outside printable ASCII encoded, escapes of unreserved characters decoded,
-- the hex of the others upper-cased.
local function normalize(s)
  s = gsub(s, "[%z\1-\32\127-\255]", escape_byte)
  return (gsub(s, "%%(%x%x)", escape_pair))
end

-- A rule from an Allow or Disallow value (not empty). len, the pattern's octets as
-- written (after normalising), decides between rules that match.
local function compile(value, allow)
  local c = byte(value)
  if c ~= 47 and c ~= 42 then value = "/" .. value end -- not '/' or '*'
  local pat = normalize(value)
  local rule = {allow = allow, len = #pat}
  if sub(pat, -1) == "$" then
    rule.anchored = true
    pat = sub(pat, 1, -2)
  end
  pat = gsub(pat, "%*%*+", "*")
  if not find(pat, "*", 1, true) then
    rule.plain = pat
    return rule
  end
  local segs, n = {}, 0
  for seg in gmatch(pat .. "*", "([^*]*)%*") do
    n = n + 1
    segs[n] = seg
  end
  rule.segs, rule.nsegs = segs, n
  return rule
end

local function matches(rule, path)
  local plain = rule.plain
  if plain then
    if rule.anchored then return path == plain end
    return sub(path, 1, #plain) == plain
  end
  local segs, n = rule.segs, rule.nsegs
  local first = segs[1]
  if sub(path, 1, #first) ~= first then return false end
  local pos = #first + 1
  for i = 2, n - 1 do
    local _, e = find(path, segs[i], pos, true)
    if not e then return false end
    pos = e + 1
  end
  local tail = segs[n]
  if rule.anchored then
    local start = #path - #tail + 1
    return start >= pos and sub(path, start) == tail
  end
  return find(path, tail, pos, true) ~= nil
end

-- The product token of a user-agent, lower-cased: "MyBot/1.0 (+http://x)" -> "mybot".
-- The same for the agent a crawler gives and a User-agent line: the letters, digits,
-- '_' and '-' it begins with (RFC 9309 2.2.1).
local function token(agent)
  return lower(match(agent, "^%s*([%w_%-]*)"))
end

-- Parses robots.txt text into {_groups = {token = group}, sitemaps = {...}}. A group
-- is {rules = {...}, delay = seconds or nil}; every group naming the same token is
-- merged into one.
local function parse(text)
  text = sub(text, 1, MAX_PARSE)
  if sub(text, 1, 3) == "\239\187\191" then text = sub(text, 4) end
  local groups, sitemaps = {}, {}
  local current, in_agents = nil, false -- the groups the lines now apply to
  for line in gmatch(text, "[^\r\n]+") do
    local key, value = match(match(line, "^[^#]*"), "^%s*([^:]-)%s*:%s*(.-)%s*$")
    local kind = key and KEYS[lower(key)]
    if kind == "agent" then
      -- Several User-agent lines in a row start one group; one after a rule starts
      -- the next.
      if not in_agents then current, in_agents = {}, true end
      local tok = sub(value, 1, 1) == "*" and "*" or token(value)
      if tok ~= "" and not current[tok] then
        local g = groups[tok]
        if not g then
          g = {rules = {}}
          groups[tok] = g
        end
        current[tok] = g
      end
    elseif kind == "allow" or kind == "disallow" then
      in_agents = false
      if current and value ~= "" then -- an empty Disallow allows everything
        for _, g in pairs(current) do
          local rule = compile(value, kind == "allow")
          rule.index = #g.rules + 1
          g.rules[rule.index] = rule
        end
      end
    elseif kind == "delay" then
      -- Not in RFC 9309; an "other record", which must not end a group. The longest
      -- delay wins when merged groups disagree.
      in_agents = false
      local d = (match(value, "^%d+%.?%d*$") or match(value, "^%.%d+$")) and tonumber(value)
      if d and current then
        for _, g in pairs(current) do
          if not g.delay or d > g.delay then g.delay = d end
        end
      end
    elseif kind == "sitemap" and value ~= "" then
      sitemaps[#sitemaps + 1] = value
    end
  end
  return {_groups = groups, sitemaps = sitemaps}
end

-- The order in which rules are tried (RFC 9309 2.2.2: the most octets win, Allow wins
-- a tie); the index where they are equal keeps the sort deterministic.
local function by_precedence(a, b)
  if a.len ~= b.len then return a.len > b.len end
  if a.allow ~= b.allow then return a.allow end
  return a.index < b.index
end

local Robots = {}
Robots.__index = Robots
Robots.__name = "luarun.Robots"

local function group_for(r, agent, fname)
  if agent ~= nil and type(agent) ~= "string" then
    error(format("%s: the agent must be a string (got %s)", fname, type(agent)), 3)
  end
  local groups = r._groups
  return groups[token(agent or "*")] or groups["*"]
end

return function(http)
  local parse_url = http.url.parse

  --- Whether the rules let agent fetch the URL (or path, starting with "/").
  -- @return boolean, or false, err (kind "invalid_url") for a string that is
  --   neither a path nor a URL that parses.
  function Robots.allowed(r, target, agent)
    if type(target) ~= "string" then
      error(format("robots:allowed: the URL must be a string (got %s)", type(target)), 2)
    end
    local group = group_for(r, agent, "robots:allowed")
    local path = target
    if byte(target) ~= 47 then
      local u, err = parse_url(target)
      if not u then return false, err end
      path = (u.path or "/") .. (u.query and "?" .. u.query or "")
    end
    if path == "/robots.txt" then return true end
    if r._all ~= nil then return r._all end
    if not group then return true end
    path = normalize(path)
    local rules = group.rules
    if not group.sorted then
      -- Longest first, Allow before Disallow of the same length: the first rule that
      -- matches decides.
      table.sort(rules, by_precedence)
      group.sorted = true
    end
    for i = 1, #rules do
      local rule = rules[i]
      if matches(rule, path) then return rule.allow end
    end
    return true
  end

  --- The Crawl-delay of agent's group, in seconds, or nil.
  function Robots.crawl_delay(r, agent)
    local group = group_for(r, agent, "robots:crawl_delay")
    return group and group.delay or nil
  end

  local function new(text)
    return setmetatable(parse(text), Robots)
  end

  -- A Robots that allows (all true) or disallows (all false) everything.
  local function blanket(all, fields)
    local r = new("")
    r._all = all
    for k, v in pairs(fields) do r[k] = v end
    return r
  end

  -- RFC 9309 2.3.1: fetched in the calling task; up to 5 redirects; 2xx is parsed,
  -- 4xx means no rules, 5xx (and 429, as Google treats it) or no answer means
  -- nothing may be fetched.
  local function fetch(url, opts)
    local req = {max_redirects = 5, max_body_size = MAX_FETCH, timeout = 30}
    local client = http
    if opts ~= nil then
      if type(opts) ~= "table" then
        error(format("http.robots: the options must be a table (got %s)", type(opts)), 3)
      end
      for k, v in pairs(opts) do
        if k == "client" then client = v else req[k] = v end
      end
    end
    local res, err
    if client == http then res, err = http.get(url, req) else res, err = client:get(url, req) end
    if not res then
      if err.kind == "invalid_url" then return nil, err end
      -- More redirects than allowed: RFC 9309 says "unavailable", as a 4xx.
      return blanket(err.kind == "redirect", {url = url, error = err})
    end
    local status = res.status
    local fields = {url = url, status = status}
    if status >= 200 and status < 300 then
      local r = new(res.body or "")
      for k, v in pairs(fields) do r[k] = v end
      return r
    end
    return blanket(status < 500 and status ~= 429, fields)
  end

  --- http.robots(url [, opts]) fetches and parses; http.robots(text) parses.
  local function robots(source, opts)
    if type(source) ~= "string" then
      error(format("http.robots: the argument must be a URL or robots.txt text (got %s)",
                   type(source)), 2)
    end
    if find(source, "^%s*[Hh][Tt][Tt][Pp][Ss]?://") and not find(source, "[\r\n]") then
      return fetch(source, opts)
    end
    return new(source)
  end
  return robots, Robots
end
