---@meta luarun.html
-- LuaCATS annotations for `require "luarun.html"`, read by lua-language-server.
-- The manual: docs/reference/html.md.

local html = {}

---What `html.parse` returns as its second value for a page over `max_size`.
---@class luarun.html.Error
---@field kind "too_large"
---@field message string

---Options of `html.parse`.
---@class luarun.html.Options
---@field url? string the page's URL: the base of `doc:links()` (after `<base href>`), and `doc.url`
---@field content_type? string a Content-Type header value; its charset beats the page's `<meta>`
---@field encoding? string an encoding label that overrides everything but a byte order mark
---@field max_size? integer bytes at most (default 64 MiB); a larger page gives nil, err (kind "too_large")

---What `html.parse` reads of an HTTP response (a `luarun.http.Response` or a table like one).
---@class luarun.html.ResponseLike
---@field body string
---@field url? string
---@field headers? table<string, string>

---Parses a page (never raises on bad markup). From a task, pages of 64 KiB or more
---are parsed on libuv's thread pool while the task waits.
---@param text string|luarun.html.ResponseLike the page, or a response whose body, url and Content-Type are used
---@param opts? luarun.html.Options
---@return luarun.html.Document? doc
---@return luarun.html.Error? err
function html.parse(text, opts) end

---A parsed page. Freed by the collector, or at once by `close` (or `<close>`).
---@class luarun.html.Document
---@field title string? the text of the first `<title>`, whitespace collapsed
---@field url string? the URL given to `html.parse`
---@field encoding string the encoding the page was decoded from ("utf-8", "windows-1252", ...)
---@field root luarun.html.Element? the `<html>` element (nil for an empty page)
local Document = {}

---Every element matching a CSS selector, in document order.
---@param css string
---@return luarun.html.Element[]
function Document:select(css) end

---The first element matching a CSS selector, or nil.
---@param css string
---@return luarun.html.Element?
function Document:select_one(css) end

---Evaluates an XPath 1.0 expression: a node-set gives a list of elements and strings
---(attribute and text values); other results a number, string or boolean.
---@param expr string
---@return (luarun.html.Element|string)[]|number|string|boolean
function Document:xpath(expr) end

---Absolute http(s) URLs of every `a[href]` and `area[href]`, resolved against the base,
---fragments dropped, each once, in document order.
---@return string[]
function Document:links() end

---Frees the document now; using it or its elements afterwards raises.
function Document:close() end

---An element of a document; it keeps its document alive.
---@class luarun.html.Element
---@field tag string the lowercase tag name
local Element = {}

---The value of an attribute, or nil.
---@param name string
---@return string?
function Element:attr(name) end

---Every attribute, name to value.
---@return table<string, string>
function Element:attrs() end

---The readable text (script and style skipped, whitespace collapsed, blocks and `<br>`
---as spaces), or with `{raw = true}` every text node as it is.
---@param opts? {raw?: boolean}
---@return string
function Element:text(opts) end

---The element's outer HTML.
---@return string
function Element:html() end

---The parent element, or nil.
---@return luarun.html.Element?
function Element:parent() end

---The child elements.
---@return luarun.html.Element[]
function Element:children() end

---Elements under this one matching a CSS selector (ancestors count, as in querySelectorAll).
---@param css string
---@return luarun.html.Element[]
function Element:select(css) end

---The first element under this one matching a CSS selector, or nil.
---@param css string
---@return luarun.html.Element?
function Element:select_one(css) end

---Evaluates an XPath 1.0 expression with this element as the context node.
---@param expr string
---@return (luarun.html.Element|string)[]|number|string|boolean
function Element:xpath(expr) end

return html
