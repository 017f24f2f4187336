-- http.robots (issue 16): robots.txt parsed and matched as RFC 9309 says (groups,
-- Allow/Disallow with '*' and '$', the longest match, percent-encoding), with
-- google/robotstxt-style cases, Crawl-delay and Sitemap, and fetched over HTTP from a
-- server run in this process (2xx, 4xx, 429, 5xx, redirects, no server).
local lr = require "luarun"
local http = require "luarun.http"
local util = require "support.util"

local function robots(text) return http.robots(text) end

-- Each case {path, expected} against the rules r for agent.
local function check(r, agent, cases)
  for _, c in ipairs(cases) do
    assert.are.equal(c[2], r:allowed(c[1], agent), ("%s as %s"):format(c[1], tostring(agent)))
  end
end

local function raises(fn, text)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  assert.is_truthy(tostring(err):find(text, 1, true), tostring(err))
end

describe("http.robots, the rules", function()
  it("disallows by prefix and allows the rest", function()
    local r = robots("User-agent: *\nDisallow: /private\n")
    check(r, nil, {{"/private", false}, {"/private/x", false}, {"/privateer", false},
                   {"/public", true}, {"/", true}, {"/Private", true}})
  end)

  it("lets the longest match win, and Allow win a tie (google/robotstxt ID_LongestMatch)", function()
    local A = "FooBot"
    check(robots("user-agent: FooBot\ndisallow: /x/page.html\nallow: /x/\n"), A,
          {{"/x/page.html", false}, {"/x/other", true}})
    check(robots("user-agent: FooBot\nallow: /x/page.html\ndisallow: /x/\n"), A,
          {{"/x/page.html", true}, {"/x/", false}})
    check(robots("user-agent: FooBot\ndisallow: \nallow: \n"), A, {{"/x/page.html", true}})
    check(robots("user-agent: FooBot\ndisallow: /\nallow: /\n"), A, {{"/x/page.html", true}})
    check(robots("user-agent: FooBot\ndisallow: /x\nallow: /x/\n"), A,
          {{"/x", false}, {"/x/", true}})
    check(robots("user-agent: FooBot\ndisallow: /x/page.html\nallow: /x/page.html\n"), A,
          {{"/x/page.html", true}})
    check(robots("user-agent: FooBot\nallow: /page\ndisallow: /*.html\n"), A,
          {{"/page.html", false}, {"/page", true}})
    check(robots("user-agent: FooBot\nallow: /x/page.\ndisallow: /*.html\n"), A,
          {{"/x/page.html", true}, {"/x/y.html", false}})
  end)

  it("reads '$' as the end of the path and '*' as any run of bytes", function()
    local r = robots("User-agent: *\nDisallow: /*.php$\nDisallow: /exact$\n" ..
                     "Disallow: /*/private/\nDisallow: /*?sessionid=\nDisallow: /a*b*c$\n" ..
                     "Allow: /*.php$x\n")
    check(r, nil, {
      {"/index.php", false}, {"/dir/index.php", false}, {"/index.php?x=1", true},
      {"/index.phpx", true}, {"/exact", false}, {"/exact/", true}, {"/exactly", true},
      {"/a/private/x", false}, {"/a/b/private/", false}, {"/private/", true},
      {"/page?sessionid=1", false}, {"/page?id=1&sessionid=1", true}, {"/page?id=1", true},
      {"/abc", false}, {"/a-b-c", false}, {"/a-c-b", true}, {"/abcd", true}, {"/acbc", false},
    })
    -- '$' before the end is an ordinary byte; '**' is '*'
    check(robots("User-agent: *\nDisallow: /a$b\nDisallow: /x**y\n"), nil,
          {{"/a$b", false}, {"/ab", true}, {"/x-y", false}, {"/xy", false}})
  end)

  it("compares paths and patterns after normalising their percent-encoding", function()
    local r = robots("User-agent: *\nDisallow: /%7Ejoe\nDisallow: /~ann\nDisallow: /a%2fb\n" ..
                     "Disallow: /caf\xc3\xa9\nDisallow: /sp ace\n")
    check(r, nil, {{"/~joe/x", false}, {"/%7ejoe", false}, {"/%7Eann", false},
                   {"/a%2Fb", false}, {"/a/b", true}, {"/caf%C3%A9", false},
                   {"/caf%c3%a9/menu", false}, {"/sp%20ace", false}, {"/cafe", true}})
  end)

  it("matches the path and query of a URL", function()
    local r = robots("User-agent: *\nDisallow: /*?s=\nDisallow: /admin\n")
    check(r, nil, {{"http://example.com/search?s=x", false}, {"https://example.com/search", true},
                   {"http://example.com/admin/x#frag", false}, {"http://example.com", true}})
    local ok, err = r:allowed("not a url")
    assert.is_false(ok)
    assert.are.equal("invalid_url", err.kind)
  end)

  it("always allows /robots.txt", function()
    check(robots("User-agent: *\nDisallow: /\n"), nil, {{"/robots.txt", true}, {"/", false},
          {"http://h/robots.txt", true}, {"/robots.txt.bak", false}})
  end)

  it("matches the agent's product token, case-insensitively, never as a substring", function()
    local r = robots("User-agent: FooBot\nDisallow: /foo\n\nUser-agent: *\nDisallow: /star\n")
    check(r, "foobot", {{"/foo", false}, {"/star", true}})
    check(r, "FOOBOT/2.1 (+http://foo.example/bot)", {{"/foo", false}, {"/star", true}})
    check(r, "Foo", {{"/foo", true}, {"/star", false}})
    check(r, "FooBotX", {{"/foo", true}, {"/star", false}})
    check(r, nil, {{"/foo", true}, {"/star", false}})
    -- the token of a User-agent line is its leading letters, '_' and '-'
    check(robots("User-agent: Foo-Bot/1.0 extra\nDisallow: /x\n"), "foo-bot", {{"/x", false}})
    -- no group for the agent and no '*': everything allowed
    check(robots("User-agent: Other\nDisallow: /\n"), "FooBot", {{"/x", true}})
  end)

  it("starts one group with several User-agent lines, and merges groups of one agent", function()
    local r = robots("User-agent: a\nUser-agent: b\nDisallow: /ab\n" ..
                     "User-agent: c\nDisallow: /c\n" ..
                     "User-agent: A\nDisallow: /a2\n")
    check(r, "a", {{"/ab", false}, {"/a2", false}, {"/c", true}})
    check(r, "b", {{"/ab", false}, {"/a2", true}, {"/c", true}})
    check(r, "c", {{"/ab", true}, {"/c", false}})
  end)

  it("keeps Crawl-delay per group, without ending the group", function()
    local r = robots("User-agent: a\nCrawl-delay: 5\nDisallow: /x\n" ..
                     "User-agent: b\nCrawl-delay: 0.5\n" ..
                     "User-agent: c\nCrawl-delay: soon\nCrawl-delay: -1\nCrawl-delay: 1e9\n" ..
                     "User-agent: a\nCrawl-delay: 3\n")
    assert.are.equal(5, r:crawl_delay("a"))      -- the longer of a's two groups
    assert.is_false(r:allowed("/x", "a"))
    assert.are.equal(0.5, r:crawl_delay("B/1.0"))
    assert.is_nil(r:crawl_delay("c"))
    assert.is_nil(r:crawl_delay("d"))
    assert.is_nil(r:crawl_delay())
    assert.are.equal(7, robots("User-agent: *\nCrawl-delay: 7\n"):crawl_delay("anybot"))
  end)

  it("skips comments, a BOM, blank and unknown lines, and any line ending", function()
    local text = "\239\187\191# hello\r\nUser-agent: * # everyone\r\n\r\nFoo: bar\r" ..
                 "Disallow: /a # not /b\rno colon here\n  DISALLOW :  /c  \n" ..
                 "Sitemap: http://example.com/s1.xml\nsitemap:http://example.com/s2.xml # 2\n"
    local r = robots(text)
    check(r, nil, {{"/a", false}, {"/b", true}, {"/c", false}, {"/d", true}})
    assert.are.same({"http://example.com/s1.xml", "http://example.com/s2.xml"}, r.sitemaps)
    assert.are.same({}, robots("").sitemaps)
  end)

  it("ignores rules before any User-agent line, and an empty Disallow", function()
    check(robots("Disallow: /\nUser-agent: *\nDisallow:\n"), nil, {{"/x", true}})
    check(robots("Disallow: /x"), nil, {{"/x", true}})
  end)

  it("parses the first 500 KiB", function()
    local filler = ("# " .. ("x"):rep(98) .. "\n"):rep(5120) -- 500 KiB of comments
    local r = robots("User-agent: *\nDisallow: /early\n" .. filler .. "Disallow: /late\n")
    check(r, nil, {{"/early", false}, {"/late", true}})
  end)

  it("matches a hostile pattern without backtracking", function()
    local pat = "/" .. ("*a"):rep(200) .. "b$"
    local r = robots("User-agent: *\nDisallow: " .. pat .. "\n")
    local path = "/" .. ("a"):rep(20000)
    -- A count hook makes the bound deterministic: a backtracking matcher would run for
    -- ages; this one makes a few hundred plain string.find calls.
    debug.sethook(function() error("too many instructions") end, "", 1000000)
    local ok, res = pcall(r.allowed, r, path)
    debug.sethook()
    assert.is_true(ok, tostring(res))
    assert.is_true(res)
    assert.is_false(r:allowed(path .. "b"))
  end)

  it("raises, naming the function, on misuse", function()
    local r = robots("")
    raises(function() http.robots(nil) end, "http.robots: the argument must be a URL or robots.txt text (got nil)")
    raises(function() r:allowed(nil) end, "robots:allowed: the URL must be a string (got nil)")
    raises(function() r:allowed("/", 5) end, "robots:allowed: the agent must be a string (got number)")
    raises(function() r:crawl_delay({}) end, "robots:crawl_delay: the agent must be a string (got table)")
  end)
end)

describe("http.robots, fetched", function()
  local ROBOTS = "User-agent: *\nDisallow: /private\nCrawl-delay: 2\n"

  -- Runs fn(base_url, seen) with a server on 127.0.0.1 answering the paths below;
  -- seen records the user-agent of each request.
  local function with_server(fn)
    return util.run(lr, function()
      local seen = {}
      local server = assert(http.serve({}, function(req)
        seen[#seen + 1] = req.headers["user-agent"]
        local p = req.path
        local n = tonumber(p:match("^/hops/(%d+)/robots%.txt$"))
        if n then
          if n == 0 then return ROBOTS end
          return 301, {location = ("/hops/%d/robots.txt"):format(n - 1)}, ""
        end
        if p == "/ok/robots.txt" then return ROBOTS end
        local status = tonumber(p:match("^/status/(%d+)/"))
        if status then return status, {}, "Disallow: /\n" end
        return 404, {}, "not found"
      end))
      local ok, err = pcall(fn, server.url, seen)
      server:close()
      server:wait()
      assert(ok, err)
    end)
  end

  it("parses a 2xx answer", function()
    with_server(function(base, seen)
      local r = assert(http.robots(base .. "/ok/robots.txt", {user_agent = "FooBot/1.0"}))
      assert.are.equal(200, r.status)
      assert.is_false(r:allowed("/private/x"))
      assert.is_true(r:allowed(base .. "/public"))
      assert.are.equal(2, r:crawl_delay("FooBot"))
      assert.are.equal("FooBot/1.0", seen[#seen])
    end)
  end)

  it("allows everything on a 4xx, disallows everything on a 5xx or 429", function()
    with_server(function(base)
      for status, all in pairs({[404] = true, [410] = true, [403] = true, [429] = false,
                                [500] = false, [503] = false}) do
        local r = assert(http.robots(("%s/status/%d/robots.txt"):format(base, status)))
        assert.are.equal(status, r.status)
        assert.are.equal(all, r:allowed("/anything"), tostring(status))
        assert.is_true(r:allowed("/robots.txt"))
      end
    end)
  end)

  it("follows up to five redirects; more mean no robots.txt (everything allowed)", function()
    with_server(function(base)
      local r = assert(http.robots(base .. "/hops/5/robots.txt"))
      assert.are.equal(200, r.status)
      assert.is_false(r:allowed("/private"))
      r = assert(http.robots(base .. "/hops/6/robots.txt"))
      assert.is_nil(r.status)
      assert.are.equal("redirect", r.error.kind)
      assert.is_true(r:allowed("/private"))
    end)
  end)

  it("uses a client given as an option", function()
    with_server(function(base, seen)
      local client = http.client({user_agent = "ClientBot/2"})
      local r = assert(http.robots(base .. "/ok/robots.txt", {client = client}))
      client:close()
      assert.is_false(r:allowed("/private"))
      assert.are.equal("ClientBot/2", seen[#seen])
    end)
  end)

  it("disallows everything when the server cannot be reached", function()
    util.run(lr, function()
      local server = assert(http.serve({}, function() return "" end))
      local url = server.url .. "/robots.txt"
      server:close()
      server:wait()
      local r = assert(http.robots(url, {timeout = 5}))
      assert.is_nil(r.status)
      assert.are.equal("connect", r.error.kind)
      assert.is_false(r:allowed("/x"))
      assert.is_true(r:allowed("/robots.txt"))
    end)
  end)

  it("returns nil, err for a URL that does not parse, raises on bad options", function()
    util.run(lr, function()
      local r, err = http.robots("http://bad host/robots.txt")
      assert.is_nil(r)
      assert.are.equal("invalid_url", err.kind)
      raises(function() http.robots("http://127.0.0.1:1/robots.txt", 5) end,
             "http.robots: the options must be a table (got number)")
      raises(function() http.robots("http://127.0.0.1:1/robots.txt", {timout = 1}) end,
             "unknown option 'timout'")
    end)
  end)
end)
