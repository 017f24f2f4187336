-- luarun.html: parsing (libxml2 2.9.14's HTML parser, trees as it builds them),
-- encodings, CSS and XPath queries, text and attributes, links, lifetimes, parsing
-- large pages off the loop, and memory over many parses.
local lr = require "luarun"
local html = require "luarun.html"
local http = require "luarun.http"
local util = require "support.util"
local srv = require "support.httpserver"

local function parse(s, opts)
  return html.parse(s, opts)
end

local function texts(list)
  local out = {}
  for i, el in ipairs(list) do out[i] = el:text() end
  return out
end

local function tags(list)
  local out = {}
  for i, el in ipairs(list) do out[i] = el.tag end
  return out
end

-- The body's inner markup as libxml2 serialises it.
local function body_of(doc)
  return doc:select_one("body"):html():match("^<body>(.*)</body>$")
end

-- A page of about kb KB with h2 headings and links.
local function big_page(kb)
  local parts = {"<html><head><title>big</title></head><body>"}
  local i = 0
  while #parts * 120 < kb * 1024 do
    i = i + 1
    parts[#parts + 1] = ('<div class="s"><h2>Heading %d</h2><p>text <a href="/p/%d">link %d</a></p></div>\n')
                          :format(i, i, i)
  end
  parts[#parts + 1] = "</body></html>"
  return table.concat(parts), i
end

describe("luarun.html", function()
  describe("broken markup", function()
    it("never raises and gives the tree libxml2 2.9.14 builds", function()
      local cases = {
        {"<div><p>one<p>two</div>", "<div><p>one</p><p>two</p></div>"},
        -- text with no open element gets an implied <p>
        {"hello <b>world", "<p>hello <b>world</b></p>"},
        {"text only", "<p>text only</p>"},
        -- stray closers are dropped; unclosed <li> closes at the next
        {"<ul><li>a<li>b</ul></span></div>tail", "<ul><li>a</li><li>b</li></ul>tail"},
        {"<p>x</p></p></p><div>y", "<p>x</p><div>y</div>"},
        {"<table><tr><td>1<td>2</table>", "<table><tr><td>1</td><td>2</td></tr></table>"},
        -- unquoted attribute values
        {"<a href=foo/bar.html class=x>u</a>", '<a href="foo/bar.html" class="x">u</a>'},
        -- HTML5 tags are unknown to 2.9.14 but stay in the tree
        {"<nav><section><p>h5</section></nav>", "<nav><section><p>h5</p></section></nav>"},
        {"<b>&amp;&lt;&eacute;&bogus;&#x41;&#65</b>", "<b>&amp;&lt;\u{e9}&amp;bogus;AA</b>"},
      }
      for _, c in ipairs(cases) do
        assert.are.equal(c[2], body_of(parse(c[1])), c[1])
      end
    end)

    it("selects in what libxml2 built", function()
      local doc = parse("<div id=a><p>one<p>two<span>three</div><p>four")
      assert.are.same({"one", "twothree"}, texts(doc:select("#a > p")))
      assert.are.same({"p", "p", "p"}, tags(doc:select("p")))
      assert.are.equal("three", doc:select_one("p > span"):text())
    end)

    it("gives an empty document for an empty or blank string", function()
      for _, s in ipairs({"", "   \n\t  "}) do
        local doc = parse(s)
        assert.are.same({}, doc:select("a"))
        assert.is_nil(doc:select_one("*"))
        assert.is_nil(doc.root)
        assert.is_nil(doc.title)
        assert.are.same({}, doc:links())
        assert.are.same({}, doc:xpath("//a"))
      end
    end)
  end)

  describe("encodings", function()
    local function p_text(s, opts)
      local doc = parse(s, opts)
      return doc:select_one("p"):text(), doc.encoding
    end

    it("UTF-8 when the bytes are valid UTF-8 and nothing is declared", function()
      assert.are.same({"caf\u{e9} \u{201c}q\u{201d}", "utf-8"},
                      {p_text("<p>caf\xc3\xa9 \xe2\x80\x9cq\xe2\x80\x9d</p>")})
    end)

    it("windows-1252 for undeclared invalid UTF-8, 0x80-0x9F as curly quotes", function()
      assert.are.same({"caf\u{e9} \u{201c}q\u{201d} \u{2014}", "windows-1252"},
                      {p_text("<p>caf\xe9 \x93q\x94 \x97</p>")})
    end)

    it("maps latin1 and iso-8859-1 to windows-1252", function()
      for _, label in ipairs({"latin1", "ISO-8859-1", "us-ascii"}) do
        assert.are.same({"\u{201c}\u{e9}\u{201d}", "windows-1252"},
                        {p_text("<meta charset=" .. label .. "><p>\x93\xe9\x94</p>")})
      end
    end)

    it("finds <meta charset> after a non-ASCII title", function()
      local doc = parse("<title>caf\xe9</title><meta charset=windows-1252><p>na\xefve</p>")
      assert.are.equal("caf\u{e9}", doc.title)
      assert.are.equal("na\u{ef}ve", doc:select_one("p"):text())
    end)

    it("reads the http-equiv form", function()
      assert.are.same({"\u{e9}", "windows-1252"},
                      {p_text("<meta http-equiv='Content-Type' content='text/html; charset=iso-8859-1'><p>\xe9</p>")})
    end)

    it("lets the Content-Type beat the page's <meta>", function()
      local page = "<meta charset=utf-8><p>\xe9t\xe9</p>"
      assert.are.same({"\u{e9}t\u{e9}", "windows-1252"},
                      {p_text(page, {content_type = "text/html; charset=ISO-8859-1"})})
      assert.are.same({"\u{fffd}t\u{fffd}", "utf-8"}, {p_text(page)})
    end)

    it("lets a byte order mark beat everything", function()
      assert.are.same({"caf\u{e9}", "utf-8"},
                      {p_text("\xef\xbb\xbf<p>caf\xc3\xa9</p>", {content_type = "text/html; charset=latin1"})})
      assert.are.same({"\u{e9}x", "utf-16le"}, {p_text("\xff\xfe<\0p\0>\0\xe9\0x\0<\0/\0p\0>\0")})
      assert.are.same({"\u{e9}x", "utf-16be"}, {p_text("\xfe\xff\0<\0p\0>\0\xe9\0x\0<\0/\0p\0>")})
    end)

    it("takes a forced encoding over the page's", function()
      assert.are.same({"\u{e9}", "windows-1252"},
                      {p_text("<meta charset=utf-8><p>\xe9</p>", {encoding = "cp1252"})})
    end)

    it("decodes other encodings through iconv", function()
      assert.are.same({"\u{3042}", "shift_jis"}, {p_text("<meta charset=shift_jis><p>\x82\xa0</p>")})
      assert.are.same({"\u{416}", "koi8-r"}, {p_text("<p>\xf6</p>", {content_type = "text/html;charset=\"KOI8-R\""})})
    end)

    it("ignores an unknown label and goes on down the order", function()
      assert.are.same({"\u{e9}", "utf-8"}, {p_text("<meta charset=klingon><p>\xc3\xa9</p>")})
      -- WHATWG prescan: a charset attribute that fails skips the whole meta
      assert.are.same({"\u{e9}", "utf-8"}, {p_text("<meta charset=bogus http-equiv=content-type " ..
        "content='text/html; charset=koi8-r'><p>\xc3\xa9</p>")})
      -- a repeated Content-Type joined with ','
      assert.are.same({"\u{416}", "koi8-r"},
                      {p_text("<p>\xf6</p>", {content_type = "text/html; charset=koi8-r, text/html"})})
    end)

    it("replaces invalid UTF-8 in a UTF-8 page with U+FFFD", function()
      assert.are.same({"a\u{fffd}\u{fffd}b\u{fffd}", "utf-8"},
                      {p_text("<meta charset=utf-8><p>a\xff\xfeb\xe2\x82</p>")})
    end)

    it("replaces NUL with U+FFFD in text and attributes", function()
      local doc = parse("<p>a\0b</p><a href='x\0y' title=\"\0\">z</a>")
      assert.are.equal("a\u{fffd}b", doc:select_one("p"):text())
      assert.are.equal("x\u{fffd}y", doc:select_one("a"):attr("href"))
      assert.are.equal("\u{fffd}", doc:select_one("a"):attr("title"))
      doc = parse("<p>\xe9\0</p>") -- windows-1252 with a NUL
      assert.are.equal("\u{e9}\u{fffd}", doc:select_one("p"):text())
    end)
  end)

  describe("CSS", function()
    local doc = parse([[<html><body>
      <div id="outer" class="box main"><section><p class="lead">one</p><p>two</p></section>
        <ul><li>a</li><li class="x">b</li><li>c</li></ul></div>
      <div class="box"><p>three</p></div></body></html>]])

    it("selects from the document in document order", function()
      assert.are.same({"one", "two", "three"}, texts(doc:select("p")))
      assert.are.same({"one"}, texts(doc:select("div.main p.lead")))
      assert.are.same({"b"}, texts(doc:select("ul > li:nth-child(2)")))
      assert.are.same({"a", "c"}, texts(doc:select("li:not(.x)")))
      assert.are.same({"one", "two", "three"}, texts(doc:select("section p, .box > p")))
      assert.are.same({}, doc:select("table"))
    end)

    it("select_one gives the first or nil", function()
      assert.are.equal("one", doc:select_one("p"):text())
      assert.is_nil(doc:select_one("table"))
    end)

    it("el:select matches as querySelectorAll does, ancestors included", function()
      local section = doc:select_one("section")
      -- div#outer is above section, yet "div p" matches the p under section
      assert.are.same({"one", "two"}, texts(section:select("div p")))
      assert.are.same({"one", "two"}, texts(section:select("#outer section > p")))
      assert.are.equal("two", section:select_one("p + p"):text())
      assert.are.same({}, section:select("li"))
      -- only strictly below: section is not in its own result
      assert.are.same({}, section:select("section"))
    end)

    it("raises on an invalid selector, naming it", function()
      local err = util.raises(doc.select, doc, "a:hover")
      assert.truthy(tostring(err):find("html: invalid selector 'a:hover'", 1, true), err)
      err = util.raises(doc.select_one, doc, "p[")
      assert.truthy(tostring(err):find("invalid selector", 1, true), err)
      err = util.raises(doc.select, doc, 42)
      assert.truthy(tostring(err):find("string expected", 1, true), err)
    end)

    it("caches compiled selectors, and many distinct ones stay bounded", function()
      for i = 1, 2000 do
        assert.are.equal(0, #doc:select(("p.n%d"):format(i)))
      end
      assert.are.same({"one"}, texts(doc:select("p.lead")))
    end)
  end)

  describe("XPath", function()
    local doc = parse([[<div id="d"><a href="/1" title="t1">one</a> <a href="/2">two</a><!-- c --></div>
                        <p>x</p>]])

    it("gives elements, attribute values and text for node-sets", function()
      assert.are.same({"one", "two"}, texts(doc:xpath("//a")))
      assert.are.same({"/1", "/2"}, doc:xpath("//a/@href"))
      assert.are.same({"one", "two"}, doc:xpath("//a/text()"))
      assert.are.same({" c "}, doc:xpath("//comment()"))
      assert.are.same({}, doc:xpath("//table"))
    end)

    it("gives numbers, strings and booleans", function()
      local n = doc:xpath("count(//a)")
      assert.are.equal(2, n)
      assert.are.equal("integer", math.type(n))
      assert.are.equal(0.5, doc:xpath("1 div 2"))
      assert.are.equal("one", doc:xpath("string(//a)"))
      assert.are.equal("t1", doc:xpath("string(//a/@title)"))
      assert.is_true(doc:xpath("count(//a) = 2"))
      assert.is_false(doc:xpath("boolean(//table)"))
      assert.are.equal("onetwo", doc:xpath("concat(//a[1], //a[2])"))
    end)

    it("evaluates relative to an element", function()
      local div = doc:select_one("#d")
      assert.are.same({"one", "two"}, texts(div:xpath("a")))
      assert.are.same({"/2"}, div:xpath("a[2]/@href"))
      assert.are.equal("body", div:xpath("..")[1].tag)
      assert.are.equal(2, div:xpath("count(.//a)"))
      assert.are.same({}, div:xpath("p"))
    end)

    it("raises on an invalid expression or a failed evaluation", function()
      local err = util.raises(doc.xpath, doc, "//a[")
      assert.truthy(tostring(err):find("html: invalid XPath '//a['", 1, true), err)
      err = util.raises(doc.xpath, doc, "nosuchfunction(1)")
      assert.truthy(tostring(err):find("html: ", 1, true), err)
      err = util.raises(doc.xpath, doc, "//a[$undefined]")
      assert.truthy(tostring(err):find("html: ", 1, true), err)
      err = util.raises(doc.xpath, doc, {})
      assert.truthy(tostring(err):find("string expected", 1, true), err)
    end)
  end)

  describe("elements and documents", function()
    local doc = parse([[<html><head><title>  The
       Title </title></head><body>
      <h2 class="t" data-x=1>Hello <b>big</b>
        world</h2><img src=a.png alt="">
      <ul><li>one</li><li>two</li></ul><input disabled>
      <div>before<script>var x = 1;</script><style>p{}</style>after<br>next</div>
      </body></html>]], {url = "http://example.com/"})

    it("has tag, attr and attrs", function()
      local h2 = doc:select_one("h2")
      assert.are.equal("h2", h2.tag)
      assert.are.equal("t", h2:attr("class"))
      assert.are.equal("t", h2:attr("CLASS"))
      assert.is_nil(h2:attr("id"))
      assert.are.same({class = "t", ["data-x"] = "1"}, h2:attrs())
      assert.are.equal("", doc:select_one("img"):attr("alt"))
      -- a valueless attribute is empty, but for HTML 4's boolean ones, which
      -- libxml2 2.9 gives their own name as value
      assert.are.equal("", parse("<p foo>x"):select_one("p"):attr("foo"))
      assert.are.equal("disabled", doc:select_one("input"):attr("disabled"))
    end)

    it("text collapses whitespace, skips script and style, breaks at blocks", function()
      assert.are.equal("Hello big world", doc:select_one("h2"):text())
      assert.are.equal("one two", doc:select_one("ul"):text())
      -- as a browser's innerText: the script leaves no gap, <br> does
      assert.are.equal("beforeafter next", doc:select_one("div"):text())
      assert.are.equal("beforevar x = 1;p{}afternext", doc:select_one("div"):text{raw = true})
      assert.are.equal("Hello big\n        world", doc:select_one("h2"):text{raw = true})
    end)

    it("html gives the outer HTML", function()
      assert.are.equal("<li>one</li>", doc:select_one("li"):html())
      assert.are.equal('<h2 class="t" data-x="1">Hello <b>big</b>\n        world</h2>',
                       doc:select_one("h2"):html())
    end)

    it("parent and children", function()
      local ul = doc:select_one("ul")
      assert.are.same({"li", "li"}, tags(ul:children()))
      assert.are.equal(ul, ul:children()[1]:parent())
      assert.are.equal("body", ul:parent().tag)
      assert.is_nil(doc.root:parent())
    end)

    it("== compares nodes", function()
      assert.is_true(doc:select_one("li") == doc:xpath("//li")[1])
      assert.is_false(doc:select_one("li") == doc:xpath("//li")[2])
    end)

    it("has title, url, encoding and root", function()
      assert.are.equal("The Title", doc.title)
      assert.are.equal("http://example.com/", doc.url)
      assert.are.equal("utf-8", doc.encoding)
      assert.are.equal("html", doc.root.tag)
      assert.is_nil(parse("<p>x").title)
      assert.is_nil(parse("<p>x").url)
    end)

    it("raises on wrong arguments, naming the method", function()
      local h2 = doc:select_one("h2")
      for _, c in ipairs({
        {function() return h2.attr(h2) end, "bad argument #1 to 'attr' (string expected, got no value)"},
        {function() return h2:attr(1) end, "bad argument #1 to 'attr' (string expected, got number)"},
        {function() return doc:xpath("//h2\0[1]") end, "html: invalid XPath: the expression contains a NUL byte (at offset 4)"},
        {function() return h2.text(h2, 5) end, "bad argument #1 to 'text' (table expected, got number)"},
        {function() return h2.html(doc) end, "calling 'html' on bad self (luarun.html.Element expected"},
        {function() return doc.links(h2) end, "calling 'links' on bad self (luarun.html.Document expected"},
        {function() return doc.close(5) end, "calling 'close' on bad self"},
        {function() return h2.select(h2) end, "bad argument #1 to 'select' (string expected"},
      }) do
        local err = tostring(util.raises(c[1]))
        assert.truthy(err:find(c[2], 1, true), err .. " / " .. c[2])
      end
    end)
  end)

  describe("links", function()
    it("resolves against <base href>, itself against the document's URL", function()
      local doc = parse([[<head><base href="../other/"></head>
        <a href="a.html">1</a><a href="/abs">2</a><a href="//cdn.example.org/x">3</a>
        <a href="#top">4</a><a href="a.html#frag">5</a><a href="mailto:x@y.z">6</a>
        <a href="javascript:void(0)">7</a><a href="ftp://f.example/">8</a>
        <a href=" spaced.html ">9</a><area href="map.html"><a>no href</a>
        <a href="?q=1">10</a><a href="https://secure.example/p#f">11</a>]],
        {url = "http://example.com/dir/page.html?x=1#h"})
      assert.are.same({
        "http://example.com/other/a.html",
        "http://example.com/abs",
        "http://cdn.example.org/x",
        "http://example.com/other/",
        "http://example.com/other/spaced.html",
        "http://example.com/other/map.html",
        "http://example.com/other/?q=1",
        "https://secure.example/p",
      }, doc:links())
    end)

    it("resolves against the document's URL without <base>", function()
      local doc = parse('<a href="b.html">b</a><a href="../up">u</a><a href="b.html">again</a>',
                        {url = "https://example.com/x/y/z.html"})
      assert.are.same({"https://example.com/x/y/b.html", "https://example.com/x/up"}, doc:links())
    end)

    it("keeps only absolute links when there is no base", function()
      local doc = parse('<a href="rel.html">r</a><a href="http://abs.example/p#f">a</a>' ..
                        '<a href="//sr.example/">s</a>')
      assert.are.same({"http://abs.example/p"}, doc:links())
      doc = parse('<base href="http://b.example/x/"><a href="rel.html">r</a>')
      assert.are.same({"http://b.example/x/rel.html"}, doc:links())
      -- WHATWG: the first <base> that has an href, not the first <base>
      doc = parse('<base target="_top"><base href="http://c.example/y/"><a href="r">r</a>')
      assert.are.same({"http://c.example/y/r"}, doc:links())
    end)
  end)

  describe("lifetimes", function()
    it("close frees the document; using it or its elements then raises", function()
      local doc = parse("<p>x</p>")
      local p = doc:select_one("p")
      doc:close()
      doc:close() -- twice is fine
      for _, f in ipairs({
        function() return doc:select("p") end, function() return doc.title end,
        function() return doc:links() end, function() return doc:xpath("//p") end,
        function() return p:text() end, function() return p.tag end,
        function() return p:html() end, function() return p:select("b") end,
      }) do
        assert.truthy(tostring(util.raises(f)):find("html: the document is closed", 1, true))
      end
      assert.truthy(tostring(doc):find("closed", 1, true))
    end)

    it("closes with <close>", function()
      local kept
      do
        local doc <close> = parse("<p>x</p>")
        kept = doc
      end
      assert.truthy(tostring(util.raises(function() return kept.root end)):find("closed", 1, true))
    end)

    it("an element keeps its document alive after a full collection", function()
      local el, weak = nil, setmetatable({}, {__mode = "v"})
      do
        local doc = parse("<div><p>kept</p></div>")
        weak[1] = doc
        el = doc:select_one("p")
      end
      collectgarbage()
      collectgarbage()
      assert.is_not_nil(weak[1])
      assert.are.equal("kept", el:text())
      assert.are.equal("div", el:parent().tag)
      el = nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      assert.is_nil(weak[1])
    end)
  end)

  -- Finalizers run wherever Lua allocates, so in the middle of a query turning nodes
  -- into elements: what they do must not free what the query is reading.
  describe("finalizers during a query", function()
    local function garbage(n, fn)
      local mt = {__gc = fn}
      collectgarbage("stop") -- none finalized before the query starts
      for _ = 1, n do setmetatable({}, mt) end
      collectgarbage("restart")
    end

    it("an xpath call from a finalizer leaves the outer xpath result alone", function()
      local doc = parse(string.rep("<p><b>x</b></p>", 20000))
      local other = parse("<i>1</i><i>2</i>")
      local fired = 0
      garbage(2000, function() fired = fired + 1; assert(#other:xpath("//i") == 2) end)
      local r = doc:xpath("//p")
      assert.are.equal(20000, #r)
      assert.are.equal("p", r[20000].tag)
      collectgarbage()
      assert.is_true(fired > 0)
    end)

    it("the same selector from a finalizer does not share the outer select's memo", function()
      local deep = parse(string.rep("<div>", 5000) .. "<span>x</span>")
      local doc = parse(string.rep("<div><span>x</span></div>", 3000))
      local inner = {}
      garbage(500, function() inner[#inner + 1] = #deep:select("div span") end)
      assert.are.equal(3000, #doc:select("div span"))
      collectgarbage()
      assert.is_true(#inner > 0)
      for _, n in ipairs(inner) do assert.are.equal(1, n) end
      assert.are.equal(3000, #doc:select("div span")) -- the memo still works after
    end)

    it("close from a finalizer waits for the walk, then the document is closed", function()
      for _, q in ipairs({
        function(d) return #d:select("p b") end,
        function(d) return #d:xpath("//b") end,
        function(d) return #d:links() end,
        function(d) return #d.root:select_one("body"):children() end,
        function(d) return #d.root:text() end,
      }) do
        local doc = parse(string.rep('<p><b><a href="http://h.example/x">x</a></b></p>', 20000))
        garbage(200, function() doc:close() end)
        local ok, n = pcall(q, doc)
        collectgarbage()
        if ok then -- closed mid-walk: the walk finished first
          assert.is_true(n > 0)
        else -- closed as the query started (its first allocation): it raises
          assert.truthy(tostring(n):find("html: the document is closed", 1, true))
        end
        assert.truthy(tostring(util.raises(function() return doc:select("p") end)):find("closed", 1, true))
        assert.truthy(tostring(doc):find("closed", 1, true))
      end
    end)
  end)

  describe("html.parse of a response", function()
    local bin
    setup(function() bin = srv.httpbin() end)
    teardown(function()
      bin.stop()
      srv.cleanup()
    end)

    it("takes body, url and the Content-Type from http.get", function()
      util.run(lr, function()
        local res = assert(http.get(bin.base .. "/links/4/1"))
        local doc = html.parse(res)
        assert.are.equal("Links", doc.title)
        assert.are.equal(bin.base .. "/links/4/1", doc.url)
        assert.are.same({bin.base .. "/links/4/0", bin.base .. "/links/4/2", bin.base .. "/links/4/3"},
                        doc:links())
      end)
    end)

    it("takes a table shaped like a response", function()
      local doc = html.parse({body = "<p>\xe9</p><a href='x'>x</a>", url = "http://h.example/a/",
                              headers = {["content-type"] = "text/html; charset=latin1"}})
      assert.are.equal("\u{e9}", doc:select_one("p"):text())
      assert.are.equal("windows-1252", doc.encoding)
      assert.are.same({"http://h.example/a/x"}, doc:links())
      -- options override the response's
      doc = html.parse({body = "<a href='x'>x</a>", url = "http://h.example/a/"}, {url = "http://o.example/"})
      assert.are.same({"http://o.example/x"}, doc:links())
    end)
  end)

  describe("large pages", function()
    it("parse on the pool from several tasks at once", function()
      local page, n = big_page(300)
      local results = {util.run(lr, function()
        return table.unpack(lr.gather({
          function() return #html.parse(page):select("h2") end,
          function() return #html.parse(page):select("a") end,
          function() return html.parse(page):xpath("count(//div)") end,
          function() return html.parse("<h2>small</h2>"):select_one("h2"):text() end,
        }), 1, 4)
      end)}
      assert.are.same({n, n, n, "small"}, results)
    end)

    it("a cancelled parse raises cancelled; its document is freed when done", function()
      local page = big_page(300)
      util.run(lr, function()
        local v, err = lr.timeout(0.0001, html.parse, page)
        assert.is_nil(v)
        assert.are.equal("timeout", err.kind)
        local t = lr.spawn(html.parse, page)
        lr.sleep(0)
        t:cancel()
        local ok, e = pcall(t.wait, t)
        assert.is_false(ok)
        assert.are.equal("cancelled", e.kind)
        -- the runtime goes on parsing
        assert.are.equal("big", html.parse(page).title)
      end)
    end)

    it("in a separate process too, leaking nothing (checked under ASan)", function()
      local rc, out, err = util.luarun([[
        local lr = require "luarun"
        local html = require "luarun.html"
        local parts = {}
        for i = 1, 3000 do parts[i] = ("<div><h2>h%d</h2><a href='/%d'>x</a></div>"):format(i, i) end
        local page = table.concat(parts)
        local tasks = {}
        for i = 1, 6 do
          tasks[i] = lr.spawn(function() return #html.parse(page, {url = "http://e.x/"}):links() end)
        end
        tasks[2]:cancel()
        lr.timeout(0.0001, html.parse, page)
        print(tasks[1]:wait(), select(2, pcall(tasks[2].wait, tasks[2])).kind, tasks[6]:wait())
        local doc = html.parse(page)
        doc:close()
      ]])
      assert.are.equal(0, rc, err)
      assert.are.equal("3000\tcancelled\t3000\n", out)
    end)
  end)

  describe("arguments", function()
    it("raise, naming html.parse", function()
      for _, c in ipairs({
        {function() return html.parse() end, "bad argument #1 to 'html.parse'"},
        {function() return html.parse(42) end, "string or response expected, got number"},
        {function() return html.parse("x", 5) end, "bad argument #2 to 'html.parse'"},
        {function() return html.parse("x", {url = 5}) end, "html.parse: option 'url' must be a string"},
        {function() return html.parse("x", {max_size = -1}) end, "html.parse: option 'max_size'"},
        {function() return html.parse("x", {encoding = "klingon"}) end, "html.parse: unknown encoding 'klingon'"},
        {function() return html.parse({}) end, "html.parse: the response has no body string"},
      }) do
        local err = tostring(util.raises(c[1]))
        assert.truthy(err:find(c[2], 1, true), err .. " / " .. c[2])
      end
    end)

    it("a page over max_size is an error value, not a raise", function()
      local doc, err = html.parse(("x"):rep(100), {max_size = 99})
      assert.is_nil(doc)
      assert.are.equal("too_large", err.kind)
      assert.truthy(tostring(err):find("100 bytes", 1, true))
      assert.is_not_nil(html.parse(("x"):rep(100), {max_size = 100}))
    end)
  end)

  describe("memory", function()
    it("stays bounded over 10,000 parses dropped without close", function()
      local rc, out, err = util.luarun([[
        local html = require "luarun.html"
        local parts = {}
        for i = 1, 40 do parts[i] = ("<div class=c><h2>t%d</h2><p>text <a href='/%d'>l</a></p></div>"):format(i, i) end
        local page = table.concat(parts)
        local function rss_kb()
          local f = assert(io.open("/proc/self/status"))
          local s = f:read("a")
          f:close()
          return tonumber(s:match("VmRSS:%s*(%d+)"))
        end
        local base
        for i = 1, 10000 do
          local doc = html.parse(page, {url = "http://e.x/"})
          doc:select("h2")
          if i == 1000 then base = rss_kb() end
        end
        print(base, rss_kb())
      ]])
      assert.are.equal(0, rc, err)
      local base, final = out:match("(%d+)%s+(%d+)")
      base, final = tonumber(base), tonumber(final)
      -- Without collection, 9,000 more trees of ~60 KB each would add ~500 MB. ASan's
      -- quarantine holds up to 256 MB of freed memory, hence the loose bound there.
      local bound = os.getenv("LUARUN_CHILD_ASAN_OPTIONS") and 300 * 1024 or 64 * 1024
      assert.truthy(final - base < bound, ("RSS grew from %d to %d KB"):format(base, final))
    end)
  end)

  it("refuses XPath on a document nested deeper than 1,024 levels, and only there", function()
    local shallow = html.parse(("<div><span>"):rep(500) .. "<b>x</b>")
    assert.are.equal(500, #shallow:xpath("//div//span"))
    assert.are.equal(500, #shallow:xpath("//div/descendant::span"))
    local deep = html.parse(("<div><span>"):rep(600) .. "<b>x</b>")
    local ok, err = pcall(deep.xpath, deep, "//b")
    assert.is_false(ok)
    assert.matches("XPath refused: the document is nested 1203 levels deep %(over 1024%)", err)
    -- from an element too, and CSS still answers
    ok = pcall(deep.root.xpath, deep.root, "string(.)")
    assert.is_false(ok)
    assert.are.equal(600, #deep:select("div span"))
    assert.are.equal("x", deep:select_one("b"):text())
  end)

  it("gives each link in one spelling: scheme and host lowercased, default port dropped", function()
    local d = html.parse([[<a href="http://h.example:80/x">1</a><a href="http://h.example/x">2</a>
      <a href="HTTP://UP.Example/">3</a><a href="https://s.example:443/y?q#f">4</a>
      <a href="https://s.example:4430/z">5</a><a href="http://User:PW@Host.example:8080/p">6</a>
      <a href="http://[::1]:80/v6">7</a><a href="/rel">8</a><a href="//Other.EXAMPLE:80">9</a>]],
      {url = "http://Base.example:80/dir/"})
    assert.are.same({"http://h.example/x", "http://up.example/", "https://s.example/y?q",
                     "https://s.example:4430/z", "http://User:PW@host.example:8080/p",
                     "http://[::1]/v6", "http://base.example/rel", "http://other.example/"},
                    d:links())
  end)
end)
