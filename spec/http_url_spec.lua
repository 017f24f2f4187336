-- http.url (issue 16): parse, join, normalize, encode and decode. join is checked on
-- every example of RFC 3986 section 5.4 against its base "http://a/b/c/d;p?q": on
-- libcurl 7.88.1 some of them (#s, the empty reference, g:h, http:g) are joined by
-- core/http_url.c itself rather than by curl_url.
local http = require "luarun.http"
local url = http.url

local BASE = "http://a/b/c/d;p?q"

-- RFC 3986 5.4.1 (normal) and 5.4.2 (abnormal). "//g" is "http://g/": curl writes an
-- empty http path as "/", the same URL by RFC 3986 6.2.3 (and what browsers give).
local NORMAL = {
  {"g:h", "g:h"}, {"g", "http://a/b/c/g"}, {"./g", "http://a/b/c/g"},
  {"g/", "http://a/b/c/g/"}, {"/g", "http://a/g"}, {"//g", "http://g/"},
  {"?y", "http://a/b/c/d;p?y"}, {"g?y", "http://a/b/c/g?y"},
  {"#s", "http://a/b/c/d;p?q#s"}, {"g#s", "http://a/b/c/g#s"},
  {"g?y#s", "http://a/b/c/g?y#s"}, {";x", "http://a/b/c/;x"},
  {"g;x", "http://a/b/c/g;x"}, {"g;x?y#s", "http://a/b/c/g;x?y#s"},
  {"", "http://a/b/c/d;p?q"}, {".", "http://a/b/c/"}, {"./", "http://a/b/c/"},
  {"..", "http://a/b/"}, {"../", "http://a/b/"}, {"../g", "http://a/b/g"},
  {"../..", "http://a/"}, {"../../", "http://a/"}, {"../../g", "http://a/g"},
}
local ABNORMAL = {
  {"../../../g", "http://a/g"}, {"../../../../g", "http://a/g"},
  {"/./g", "http://a/g"}, {"/../g", "http://a/g"}, {"g.", "http://a/b/c/g."},
  {".g", "http://a/b/c/.g"}, {"g..", "http://a/b/c/g.."}, {"..g", "http://a/b/c/..g"},
  {"./../g", "http://a/b/g"}, {"./g/.", "http://a/b/c/g/"},
  {"g/./h", "http://a/b/c/g/h"}, {"g/../h", "http://a/b/c/h"},
  {"g;x=1/./y", "http://a/b/c/g;x=1/y"}, {"g;x=1/../y", "http://a/b/c/y"},
  {"g?y/./x", "http://a/b/c/g?y/./x"}, {"g?y/../x", "http://a/b/c/g?y/../x"},
  {"g#s/./x", "http://a/b/c/g#s/./x"}, {"g#s/../x", "http://a/b/c/g#s/../x"},
  {"http:g", "http:g"},
}

local function raises(fn, text)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  assert.is_truthy(tostring(err):find(text, 1, true), tostring(err))
end

describe("http.url.join", function()
  describe("RFC 3986 5.4.1, normal examples", function()
    for _, c in ipairs(NORMAL) do
      it(("%q -> %s"):format(c[1], c[2]), function()
        assert.are.equal(c[2], url.join(BASE, c[1]))
      end)
    end
  end)

  describe("RFC 3986 5.4.2, abnormal examples", function()
    for _, c in ipairs(ABNORMAL) do
      it(("%q -> %s"):format(c[1], c[2]), function()
        assert.are.equal(c[2], url.join(BASE, c[1]))
      end)
    end
  end)

  it("cleans a reference as a browser cleans an href", function()
    local cases = {
      {"  g\n ", "http://a/b/c/g"},              -- surrounding whitespace
      {"g\th\r\ni", "http://a/b/c/ghi"},          -- tabs and newlines inside
      {"a b", "http://a/b/c/a%20b"},
      {"a%20b", "http://a/b/c/a%20b"},           -- no double encoding
      {"caf\xc3\xa9", "http://a/b/c/caf%C3%A9"},  -- non-ASCII, as UTF-8 bytes
      {"?a b", "http://a/b/c/d;p?a%20b"},
      {"#a b", "http://a/b/c/d;p?q#a%20b"},
      {"g\\h", "http://a/b/c/g/h"},              -- '\' is '/' under http
      {"g?x\\y", "http://a/b/c/g?x\\y"},          -- but not in the query
      {"?", "http://a/b/c/d;p?"},
    }
    for _, c in ipairs(cases) do assert.are.equal(c[2], url.join(BASE, c[1]), c[1]) end
  end)

  it("returns references with a scheme of their own as they are", function()
    assert.are.equal("https://other/x", url.join(BASE, "https://other/x"))
    assert.are.equal("https://Other/y", url.join(BASE, "HTTPS://Other/x/../y"))
    assert.are.equal("mailto:ann@example.com", url.join(BASE, "mailto:ann@example.com"))
    assert.are.equal("javascript:void(0)", url.join(BASE, " JavaScript:void(0)"))
    assert.are.equal("http://h:81/y", url.join(BASE, "//h:81/x/../y"))
  end)

  it("keeps host names as written: UTF-8 stays UTF-8, punycode stays punycode", function()
    -- libcurl 7.88.1 has CURLU_PUNYCODE only, and it fails outside a UTF-8 locale.
    assert.are.equal("http://b\xc3\xbccher.example/x", url.join(BASE, "//b\xc3\xbccher.example/x"))
    assert.are.equal("http://b\xc3\xbccher.example/x", url.join(BASE, "//b%C3%BCcher.example/x"))
    assert.are.equal("http://xn--bcher-kva.example/x", url.join(BASE, "//xn--bcher-kva.example/x"))
  end)

  it("keeps working when the base changes between calls", function()
    assert.are.equal("http://a/b/c/g", url.join(BASE, "g"))
    assert.are.equal("https://x/y/g", url.join("https://x/y/z", "g"))
    assert.are.equal("http://a/b/c/g", url.join(BASE, "g"))
    assert.are.equal("http://a/b/c/d;p?q", url.join(BASE .. "#frag", ""))
  end)

  it("returns nil, err (invalid_url) for a base or reference that does not parse", function()
    local r, err = url.join("not a url", "g")
    assert.is_nil(r)
    assert.are.equal("invalid_url", err.kind)
    assert.are.equal("not a url", err.url)
    assert.is_truthy(err.message:find("base", 1, true))
    for _, ref in ipairs({"//a b/", "//h:99999/", "https://:80/", "//[::1/"}) do
      r, err = url.join(BASE, ref)
      assert.is_nil(r, ref)
      assert.are.equal("invalid_url", err.kind)
      assert.are.equal(ref, err.url)
    end
    -- a good base after a bad one
    assert.are.equal("http://a/b/c/g", url.join(BASE, "g"))
  end)

  it("raises, naming the function, for arguments that are not strings", function()
    raises(function() url.join(nil, "g") end, "http.url.join: the base URL must be a string (got nil)")
    raises(function() url.join(BASE, 5) end, "http.url.join: the reference must be a string (got number)")
  end)
end)

describe("http.url.parse", function()
  it("returns every part, as written (not decoded), the port as a number", function()
    local u = assert(url.parse("HTTP://ann:s%40cret@Example.COM:8080/a/../b%20c?x=1&y=%41#frag"))
    assert.are.same({scheme = "http", user = "ann", password = "s%40cret", host = "Example.COM",
                     port = 8080, path = "/b%20c", query = "x=1&y=%41", fragment = "frag"}, u)
    assert.are.equal("integer", math.type(u.port))
  end)

  it("leaves out the parts a URL does not have", function()
    assert.are.same({scheme = "https", host = "example.com", path = "/"},
                    url.parse("https://example.com"))
    assert.are.same({scheme = "http", host = "[::1]", port = 80, path = "/x"},
                    url.parse("http://[::1]:80/x"))
  end)

  it("returns nil, err (invalid_url) for what is not an absolute URL", function()
    for _, s in ipairs({"", "relative/path", "http://", "http://a b/", "http://h:70000/",
                        "mailto:x@y", "http://h/\0x"}) do
      local u, err = url.parse(s)
      assert.is_nil(u, s)
      assert.are.equal("invalid_url", err.kind)
      assert.are.equal(s, err.url)
      assert.are.equal("string", type(err.message))
    end
  end)

  it("raises, naming the function, for a URL that is not a string", function()
    raises(function() url.parse({}) end, "http.url.parse: the URL must be a string (got table)")
  end)
end)

describe("http.url.normalize", function()
  it("puts equal URLs in one form", function()
    local same = {"HTTP://Example.COM:80/a/./b/../c?q=%7e#frag", "http://example.com/a/c?q=~",
                  " http://example.com:80/a/c?q=%7E", "http://example.COM/a/x/../c?q=~#"}
    for _, s in ipairs(same) do
      assert.are.equal("http://example.com/a/c?q=~", url.normalize(s), s)
    end
    assert.are.equal("https://example.com/", url.normalize("https://EXAMPLE.com:443"))
    assert.are.equal("https://example.com:8443/%2F%AA", url.normalize("https://example.com:8443/%2f%aa"))
    assert.are.equal("http://user:PW@h/", url.normalize("http://user:PW@H/"))
  end)

  it("returns nil, err for a URL that does not parse, raises on a non-string", function()
    local r, err = url.normalize("://x")
    assert.is_nil(r)
    assert.are.equal("invalid_url", err.kind)
    raises(function() url.normalize(1) end, "http.url.normalize: the URL must be a string")
  end)
end)

describe("http.url.encode and http.url.decode", function()
  it("encodes as a form: keys sorted, arrays repeat their key, space as +", function()
    assert.are.equal("a=1&a=2&b=x+y&c=true&d=%26%3D%2B%25%C3%A9&e=1.5",
                     url.encode({e = 1.5, d = "&=+%\xc3\xa9", c = true, b = "x y", a = {"1", 2}}))
    assert.are.equal("", url.encode({}))
  end)

  it("decodes: + is a space, escapes decoded, malformed escapes kept, repeated keys a list", function()
    assert.are.same({a = {"1", "2", "3"}, b = "x y z", c = "%zz%4", d = "", [""] = "v"},
                    url.decode("a=1&b=x+y%20z&a=2&c=%zz%4&d&=v&a=3"))
    assert.are.same({q = "1"}, url.decode("?q=1"))
    assert.are.same({}, url.decode(""))
  end)

  it("round-trips", function()
    local t = {name = "Ann & Bob", tags = {"a b", "c+d", "\xe2\x82\xac"}, empty = "", ["k y"] = "v=w"}
    assert.are.same(t, url.decode(url.encode(t)))
    local q = "a=1&b=x+y&c=%2F"
    assert.are.equal(q, url.encode(url.decode(q)))
  end)

  it("raises, naming the function, on misuse", function()
    raises(function() url.encode("a=1") end, "http.url.encode: the fields must be a table (got string)")
    raises(function() url.encode({a = {x = 1}}) end, "http.url.encode")
    raises(function() url.encode({[1] = "x"}) end, "http.url.encode")
    raises(function() url.decode(nil) end, "http.url.decode: the query must be a string (got nil)")
  end)
end)
