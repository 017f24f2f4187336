-- luarun.html against random and mutated pages (seeded, bounded in count and time):
-- parse, then select, xpath, text, html, attrs and links on what comes out. Nothing
-- may raise (but for the documented script mistakes, which these never make), crash
-- or leak; run under ASan by the sanitizer build's test command.
local lr = require "luarun"
local html = require "luarun.html"

local SEED = tonumber(os.getenv("HTML_FUZZ_SEED") or 16016)
local ASAN = os.getenv("LUARUN_CHILD_ASAN_OPTIONS") ~= nil
local COUNT = ASAN and 150 or 600
local SECONDS = ASAN and 60 or 30

-- The generators and the exercise, as source: run here and in a child process
-- (whose leaks ASan checks at exit).
local GEN = [==[
local html = require "luarun.html"
local rnd = math.random
local TAGS = {"html", "head", "body", "title", "base", "meta", "div", "p", "span", "a", "area",
              "table", "tr", "td", "th", "ul", "li", "h2", "script", "style", "br", "img",
              "form", "input", "select", "option", "nav", "section", "template", "svg", "math",
              "textarea", "pre", "iframe", "noscript", "b", "i", "frameset", "xmp", "plaintext"}
local ATTRS = {"href", "class", "id", "src", "charset", "http-equiv", "content", "title", "x:y",
               "data-a", "HREF", "style", "on\0click"}
local VALUES = {"", "a.html", "/abs", "//cdn.example/x", "#f", "http://e.example/p?q#f",
                "mailto:x", "javascript:1", "../../..", "http://[::1]:80/", "http://%zz/",
                "\0", "a b c", "\xff\xfe", "\u{1F600}", "&amp;&#0;&#x110000;&#xD800;"}
local ENTITIES = {"&amp;", "&lt;", "&nbsp;", "&eacute;", "&#0;", "&#x41;", "&#99999999;",
                  "&bogus;", "&", "&#", "&#x;", "&amp"}
local SELECTORS = {"a", "div p", "div > p", "p + p", "li ~ li", "*", "a[href]", "[class~=x]",
                   "li:nth-child(2n+1)", "p:not(.x)", "h2, a", ":root", "td:last-child",
                   "span:empty", "div *:first-child", "[href^=http]", "[id$=\"1\"]"}
local XPATHS = {"//a", "//a/@href", "//text()", "count(//*)", "string(//title)", "//p[1]",
                "boolean(//table)", "//*[@class]", "name(/*)", "//comment()", "sum(//li)",
                "normalize-space(//body)", "//node()[3]"}
local CONTENT_TYPES = {nil, "text/html; charset=utf-8", "text/html; charset=latin1",
                       "text/html; charset=shift_jis", "text/html; charset=utf-16",
                       "text/html; charset=\"koi8-r\"", "text/html; charset=bogus", "text/html; charset="}


local function pick(t)
  return t[rnd(#t)]
end

local function random_bytes(n)
  local b = {}
  for i = 1, n do b[i] = string.char(rnd(0, 255)) end
  return table.concat(b)
end

-- Tag soup: open and close tags in any order, attributes quoted or not, entities,
-- comments, NULs, stray bytes.
local function soup(n)
  local out = {}
  for _ = 1, n do
    local r = rnd(12)
    if r <= 4 then
      local attrs = {}
      for k = 1, rnd(0, 3) do
        local q = pick({'"', "'", ""})
        attrs[k] = (" %s=%s%s%s"):format(pick(ATTRS), q, pick(VALUES), q)
      end
      if rnd(5) == 1 then attrs[#attrs + 1] = " " .. pick(ATTRS) end
      out[#out + 1] = "<" .. pick(TAGS) .. table.concat(attrs) .. (rnd(8) == 1 and "/>" or ">")
    elseif r <= 6 then
      out[#out + 1] = "</" .. pick(TAGS) .. ">"
    elseif r == 7 then
      out[#out + 1] = pick(ENTITIES)
    elseif r == 8 then
      out[#out + 1] = pick({"<!--", "-->", "<!-- c -->", "<!DOCTYPE html>", "<?xml?>", "<![CDATA[x]]>", "<", ">", "</"})
    elseif r == 9 then
      out[#out + 1] = random_bytes(rnd(1, 8))
    elseif r == 10 then
      out[#out + 1] = '<meta charset="' .. pick({"utf-8", "latin1", "shift_jis", "utf-16", "x"}) .. '">'
    else
      out[#out + 1] = pick({"text ", "  \n\t", "caf\xc3\xa9", "\0", "\x93q\x94", "\xe2\x82"})
    end
  end
  return table.concat(out)
end

-- A valid page changed in a few places: bytes flipped, inserted, deleted, cut.
local BASE = [[<!DOCTYPE html><html><head><title>Base</title><base href="/b/"></head><body>
<div id="main" class="x y"><h2>Title &amp; more</h2><p>Text <a href="one.html#x">one</a>
<a href="http://other.example/">two</a></p><table><tr><td>1</td><td>2</td></tr></table>
<ul><li>a</li><li class="x">b</li></ul><script>if (a < b) {}</script></div></body></html>]]

local function mutate(s)
  for _ = 1, rnd(1, 8) do
    if #s == 0 then return s end
    local i = rnd(1, #s)
    local r = rnd(4)
    if r == 1 then
      s = s:sub(1, i - 1) .. string.char(rnd(0, 255)) .. s:sub(i + 1)
    elseif r == 2 then
      s = s:sub(1, i) .. pick({"<", ">", "\"", "'", "\0", "&", "</div>", "<div>", soup(3)}) .. s:sub(i + 1)
    elseif r == 3 then
      s = s:sub(1, i - 1) .. s:sub(i + rnd(1, 20))
    else
      s = s:sub(1, i)
    end
  end
  return s
end

-- Everything a script may do with a document; nothing may raise.
local function exercise(doc)
  assert(type(doc.encoding) == "string")
  local _ = doc.title, doc.url
  for _ = 1, 3 do
    for _, el in ipairs(doc:select(pick(SELECTORS))) do
      assert(type(el.tag) == "string")
      el:text()
      el:text{raw = true}
      el:attrs()
      el:attr("href")
      el:parent()
      el:children()
      assert(type(el:html()) == "string")
      el:select(pick(SELECTORS))
      el:xpath(pick(XPATHS))
    end
    doc:select_one(pick(SELECTORS))
    local r = doc:xpath(pick(XPATHS))
    assert(r ~= nil)
  end
  for _, u in ipairs(doc:links()) do assert(u:match("^https?://"), u) end
  if doc.root then
    doc.root:text()
    doc.root:html()
  end
end

return {soup = soup, mutate = mutate, exercise = exercise, BASE = BASE, pick = pick,
        CONTENT_TYPES = CONTENT_TYPES}
]==]
local G = assert(load(GEN, "=html_fuzz_gen"))()
local soup, mutate, exercise, BASE, pick = G.soup, G.mutate, G.exercise, G.BASE, G.pick
local CONTENT_TYPES = G.CONTENT_TYPES
local rnd = math.random
local util = require "support.util"

describe("luarun.html fuzz", function()
  it(("parses random and mutated pages (seed %d)"):format(SEED), function()
    math.randomseed(SEED)
    local deadline = os.clock() + SECONDS
    local n = 0
    while n < COUNT and os.clock() < deadline do
      n = n + 1
      local page = rnd(2) == 1 and soup(rnd(1, 300)) or mutate(BASE)
      local ok, err = pcall(function()
        local doc = html.parse(page, {url = rnd(3) > 1 and "http://fuzz.example/d/p.html" or nil,
                                      content_type = pick(CONTENT_TYPES)})
        exercise(doc)
        if rnd(2) == 1 then doc:close() end
      end)
      assert(ok, ("case %d (seed %d): %s\npage: %q"):format(n, SEED, tostring(err), page))
    end
    assert.truthy(n >= 50, "too few cases ran: " .. n)
  end)

  it("leaks nothing over random pages, some never closed (a child process)", function()
    local rc, out, err = util.luarun("local G = (function()\n" .. GEN .. "\nend)()\n" .. ([[
      local html, rnd = require "luarun.html", math.random
      local soup, mutate, exercise, BASE, pick = G.soup, G.mutate, G.exercise, G.BASE, G.pick
      local CONTENT_TYPES = G.CONTENT_TYPES
      math.randomseed(%d)
      local n = 0
      for i = 1, %d do
        local page = rnd(2) == 1 and soup(rnd(1, 200)) or mutate(BASE)
        local doc = html.parse(page, {url = "http://fuzz.example/", content_type = pick(CONTENT_TYPES)})
        exercise(doc)
        if rnd(2) == 1 then doc:close() end
        n = n + 1
      end
      print(n)
    ]]):format(SEED + 2, ASAN and 60 or 200))
    assert.are.equal(0, rc, err)
    assert.are.equal(tostring(ASAN and 60 or 200), out:match("%d+"))
  end)

  it("survives 100,000 levels of nesting", function()
    local doc = html.parse(("<div><span>"):rep(50000) .. "<a href=x>deep</a>", {url = "http://e.example/"})
    local spans = doc:select("span")
    assert.are.equal(50000, #spans)
    assert.are.equal(50000, #doc:select("div > span"))
    assert.are.equal("deep", doc:select_one("div span a"):text())
    assert.are.equal("deep", spans[1]:text())
    -- XPath is refused there (libxml2's is cubic and loses nodes that deep)
    local ok, err = pcall(doc.xpath, doc, "count(//div)")
    assert.is_false(ok)
    assert.matches("XPath refused: the document is nested 100003 levels deep", err)
    assert.truthy(#doc.root:html() > 1000000)
    assert.are.same({"http://e.example/x"}, doc:links())
    assert.are.equal("div", spans[#spans]:parent().tag)
    doc:close()
  end)

  it("takes a huge attribute and a huge text node", function()
    local doc = html.parse("<p title='" .. ("x"):rep(4000000) .. "'>" .. ("y"):rep(11000000) .. "</p><i>after</i>")
    assert.are.equal(4000000, #doc:select_one("p"):attr("title"))
    assert.are.equal(11000000, #doc:select_one("p"):text())
    -- a text node over 10,000,000 bytes does not cut the document short (XML_PARSE_HUGE)
    assert.are.equal("after", doc:select_one("i"):text())
    doc:close()
  end)

  it("parses random pages on the pool from many tasks", function()
    math.randomseed(SEED + 1)
    local pages = {}
    for i = 1, 6 do pages[i] = soup(4000) .. ("<p>" .. ("z"):rep(100)):rep(700) end
    lr.run(function()
      local tasks = {}
      for i, p in ipairs(pages) do
        tasks[i] = lr.spawn(function() exercise(html.parse(p)) end)
      end
      tasks[3]:cancel()
      for i, t in ipairs(tasks) do
        local ok, err = pcall(t.wait, t)
        assert(ok or (i == 3 and err.kind == "cancelled"), tostring(err))
      end
    end)
  end)
end)
