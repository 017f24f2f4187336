---@meta luarun.http
-- LuaCATS annotations for `require "luarun.http"`, read by lua-language-server.
-- The manual: docs/reference/http.md.

local http = {}

---What a failed request returns as its second value. `kind` is stable; `message`
---is for people. A failure to open the `output` file has the file kinds of
---luarun.fs and a `path` instead of a `url`.
---@class luarun.http.Error
---@field kind "invalid_url"|"dns"|"connect"|"tls"|"timeout"|"too_large"|"protocol"|"redirect"|"cancelled"|"not_found"|"permission"|"is_dir"|"not_dir"|"no_space"|"too_many_files"|"io"
---@field message string
---@field url? string the URL as given (after `query` was appended)
---@field path? string the `output` file, when it could not be opened
---@field code? string|integer libcurl's name for its error, such as "CURLE_COULDNT_CONNECT"
---@field attempts? integer with the `retry` option: the tries made before giving up

---Options of one request; given to `http.client`, they are its defaults.
---@class luarun.http.Options
---@field headers? table<string, string|number> request headers; a client's and a request's are merged by lower-case name
---@field query? table<string, string|number|boolean|(string|number|boolean)[]> encoded and appended to the URL's query; keys sorted
---@field body? string the request body, sent as it is
---@field json? any encoded with luarun.json and sent as application/json
---@field form? table<string, string|number|boolean|(string|number|boolean)[]> sent as application/x-www-form-urlencoded
---@field timeout? number seconds for the whole request (default: none)
---@field connect_timeout? number seconds to connect (default: libcurl's 300)
---@field follow_redirects? boolean default true
---@field max_redirects? integer redirects allowed (default 30)
---@field verify? boolean check the server's TLS certificate (default true)
---@field ca_file? string a PEM file of certificates to trust instead of the system's
---@field proxy? string a proxy URL, such as "http://proxy:3128"
---@field http_version? "1.0"|"1.1"|"2" "2" speaks HTTP/2 without asking first (h2c on http:// URLs)
---@field output? string a path: the body is written to this file, truncated first
---@field max_body_size? integer largest body accepted, in bytes
---@field auth? {user: string, password: string}|string[] HTTP Basic credentials, `{user, password}`
---@field user_agent? string default "luarun/<version>"
---@field retry? boolean|luarun.http.Retry try again on 429/5xx (and, if asked, failed connections); `true`: the defaults

---The `retry` option: how often, how long to wait, on what.
---@class luarun.http.Retry
---@field attempts? integer tries in all, the first included (default 3)
---@field backoff? number seconds before the second try without Retry-After, doubling after (default 1)
---@field max_wait? number seconds: no wait is longer, Retry-After included (default 60)
---@field on? (integer|"network")[] statuses to retry (default {429, 500, 502, 503, 504}); "network": failed connections too

---A cookie of a client's jar (`client:cookies()`, the `cookies` option).
---@class luarun.http.Cookie
---@field name string
---@field value string
---@field domain string the host; a leading dot: its subdomains too
---@field path? string default "/"
---@field secure? boolean sent over https only
---@field http_only? boolean it came with HttpOnly
---@field expires? integer seconds since the epoch; nil for a session cookie

---Options of `http.client`: request defaults plus connection limits.
---@class luarun.http.ClientOptions: luarun.http.Options
---@field max_connections? integer open connections at most, all hosts together
---@field max_per_host? integer open connections at most to one host
---@field cookies? boolean|luarun.http.Cookie[] keep a cookie jar (`true`), or start one with these cookies
---@field delay_per_host? number seconds between the starts of two requests to one host (scheme, host, port)

---Counters of a client, for leak checks.
---@class luarun.http.Stats
---@field requests integer requests in flight
---@field sockets integer open sockets, idle keep-alive connections included
---@field polls integer socket watchers not yet closed

---Sends a GET request with the default client.
---@async
---@param url string
---@param opts? luarun.http.Options
---@return luarun.http.Response? res
---@return luarun.http.Error? err
function http.get(url, opts) end

---Sends a POST request with the default client.
---@async
---@param url string
---@param opts? luarun.http.Options
---@return luarun.http.Response? res
---@return luarun.http.Error? err
function http.post(url, opts) end

---Sends a request with any method ("PUT", "DELETE", "HEAD"...) with the default client.
---@async
---@param method string
---@param url string
---@param opts? luarun.http.Options
---@return luarun.http.Response? res
---@return luarun.http.Error? err
function http.request(method, url, opts) end

---Makes a client with its own connection pool; its options are defaults for its requests.
---@param opts? luarun.http.ClientOptions
---@return luarun.http.Client
function http.client(opts) end

---Counters of the default client.
---@return luarun.http.Stats
function http.stats() end

---A client: its own connections, limits and default options. Close it with
---`client:close()` or a `<close>` variable.
---@class luarun.http.Client
local Client = {}

---@async
---@param url string
---@param opts? luarun.http.Options
---@return luarun.http.Response? res
---@return luarun.http.Error? err
function Client:get(url, opts) end

---@async
---@param url string
---@param opts? luarun.http.Options
---@return luarun.http.Response? res
---@return luarun.http.Error? err
function Client:post(url, opts) end

---@async
---@param method string
---@param url string
---@param opts? luarun.http.Options
---@return luarun.http.Response? res
---@return luarun.http.Error? err
function Client:request(method, url, opts) end

---Closes the connections; requests in flight return nil, err (kind "cancelled").
function Client:close() end

---@return luarun.http.Stats
function Client:stats() end

---The cookie jar of a client made with `cookies`; `clear` empties it first, then `add` adds.
---@param opts? {clear?: boolean, add?: luarun.http.Cookie[]}
---@return luarun.http.Cookie[]
function Client:cookies(opts) end

---A response: any status, 404 and 500 included.
---@class luarun.http.Response
---@field status integer
---@field ok boolean status is 2xx
---@field headers table<string, string> lower-case names; repeated headers joined with ", "
---@field header_list {[1]: string, [2]: string}[] every header line in order, as {name, value}
---@field body string decompressed; "" with `output`
---@field url string the URL after redirects
---@field http_version "1.0"|"1.1"|"2"
---@field elapsed number seconds from start to end
---@field reused boolean the request went over a connection opened before
---@field output? string the `output` option's path
---@field attempts? integer with the `retry` option: the tries it took
local Response = {}

---The body decoded as JSON; raises if it is not valid JSON.
---@return any
function Response:json() end

-- ---- serving ----

---Options of `http.serve`. Sizes and timeouts take `false` for "no limit".
---@class luarun.http.ServeOptions
---@field host? string address to listen on (default "127.0.0.1")
---@field port? integer 0 (the default) picks a free port: read it from `server.port`
---@field backlog? integer|false the kernel's queue of connections not yet accepted (default 511)
---@field max_connections? integer|false open at once (default 10000); more wait in the backlog
---@field max_header_size? integer|false bytes of a request head (default 16384), else 431
---@field max_headers? integer|false header lines (default 100), else 431
---@field max_body_size? integer|false bytes of a request body (default 16 MiB), else 413
---@field header_timeout? number|false seconds to receive a request head (default 10), else 408
---@field idle_timeout? number|false seconds a keep-alive connection may idle (default 30)
---@field request_timeout? number|false seconds a handler may run (default 60), else 503 and the handler is cancelled
---@field http2? boolean also accept HTTP/2 by prior knowledge (h2c)
---@field tls? {cert: string, key: string} PEM file paths: serve HTTPS (ALPN h2 and http/1.1)
---@field reuse_port? boolean SO_REUSEPORT
---@field half_close? boolean an EOF from the client while a handler runs is not a disconnect

---A response as a table. With `json`, the value is encoded and sent as application/json.
---@class luarun.http.ResponseTable
---@field status? integer default 200
---@field headers? table<string, string|number|(string|number)[]> a list sends one line per item
---@field body? string|fun(): string? a function is called for chunks until it returns nil
---@field json? any

---What a handler returns: a string (200, text/plain), a ResponseTable, nothing (204),
---or `status, headers, body`.
---@alias luarun.http.Handler fun(req: luarun.Request): (string|luarun.http.ResponseTable|integer|nil), table<string, string|number|(string|number)[]>?, (string|fun(): string?)?

---Starts an HTTP server: each request runs `handler(req)` as its own task. Returns at
---once, listening; nil, err (kind "connect" or "tls") if it cannot listen. Unknown
---options raise.
---@param opts? luarun.http.ServeOptions
---@param handler luarun.http.Handler|luarun.Router
---@return luarun.Server? server
---@return luarun.http.Error? err
function http.serve(opts, handler) end

---A new router: a handler that dispatches by method and path. `{name}` in a
---pattern matches one path segment into `req.params.name`; an unknown path is 404,
---a known path with another method 405 with Allow.
---@return luarun.Router
function http.router() end

---Options of `http.websocket`.
---@class luarun.http.WebSocketOptions
---@field headers? table<string, string|number> extra headers of the upgrade request
---@field protocols? string|string[] subprotocols to offer
---@field timeout? number seconds for the opening handshake (default 30)
---@field verify? boolean check the server's TLS certificate (default true)
---@field ca_file? string PEM certificates to trust instead of the system's
---@field max_message_size? integer largest message accepted (default 16 MiB), else close 1009
---@field close_timeout? number seconds ws:close() waits for the peer's answer (default 5)

---Connects to a WebSocket server (ws:// or wss://); returns the WebSocket and the
---subprotocol the server chose (nil if none), or nil, err.
---@async
---@param url string
---@param opts? luarun.http.WebSocketOptions
---@return luarun.WebSocket? ws
---@return string|luarun.http.Error|nil protocol_or_err
function http.websocket(url, opts) end

---An HTTP server from `http.serve`. The fields stay readable after close.
---@class luarun.Server
---@field port integer the port it listens on
---@field host string
---@field url string "http://127.0.0.1:PORT" ("https://" with tls)
local Server = {}

---Stops accepting and returns at once; requests in flight get `grace` seconds
---(default 5), then get 503 and their handlers are cancelled.
---@param grace? number
function Server:close(grace) end

---Waits until the server is closed and all its connections are gone.
---@async
function Server:wait() end

---What a failed body read returns: the status the handler should answer.
---@class luarun.http.BodyError: luarun.http.Error
---@field kind "too_large"|"protocol"|"closed"
---@field status 413|400|426

---A request, as a handler gets it.
---@class luarun.Request
---@field method string
---@field path string decoded, without the query
---@field raw_path string as sent
---@field target string path and query as sent
---@field query table<string, string|string[]> repeated keys give a list
---@field query_string string without "?"
---@field headers table<string, string> lower-case names; repeated ones joined with ", " (cookie "; ")
---@field header_list {[1]: string, [2]: string}[] every header line in order, as {name, value}
---@field remote_addr string
---@field remote_port integer
---@field http_version "1.0"|"1.1"|"2"
---@field params table<string, string> the router's {name} captures
local Request = {}

---The whole body.
---@async
---@return string? body
---@return luarun.http.BodyError? err
function Request:body() end

---The body decoded as JSON; nil, err (status 400) if it is not JSON.
---@async
---@return any value
---@return luarun.http.BodyError? err
function Request:json() end

---The body decoded as application/x-www-form-urlencoded.
---@async
---@return table<string, string|string[]>? form
---@return luarun.http.BodyError? err
function Request:form() end

---An iterator over the body as it arrives; raises if the body never completes.
---@return fun(): string?
function Request:body_chunks() end

---Switches the connection to WebSocket (101) and returns it with the subprotocol
---chosen; nil, err (kind "protocol", status 426) if the request is not an upgrade.
---The WebSocket closes when the handler returns.
---@param opts? {protocols?: string[], max_message_size?: integer}
---@return luarun.WebSocket|nil ws
---@return string|luarun.http.BodyError|nil protocol_or_err
function Request:websocket(opts) end

---A router from `http.router()`; call it as a handler, or give it to `http.serve`.
---@class luarun.Router
---@overload fun(req: luarun.Request): any
local Router = {}

---Registers `fn` for `method` and `pattern` ("/users/{id}"). Returns the router.
---@param method string
---@param pattern string
---@param fn luarun.http.Handler
---@return luarun.Router
function Router:route(method, pattern, fn) end

---GET (and HEAD) routes.
---@param pattern string
---@param fn luarun.http.Handler
---@return luarun.Router
function Router:get(pattern, fn) end

---@param pattern string
---@param fn luarun.http.Handler
---@return luarun.Router
function Router:post(pattern, fn) end

---@param pattern string
---@param fn luarun.http.Handler
---@return luarun.Router
function Router:put(pattern, fn) end

---@param pattern string
---@param fn luarun.http.Handler
---@return luarun.Router
function Router:delete(pattern, fn) end

---@param pattern string
---@param fn luarun.http.Handler
---@return luarun.Router
function Router:patch(pattern, fn) end

---@param pattern string
---@param fn luarun.http.Handler
---@return luarun.Router
function Router:head(pattern, fn) end

---@param pattern string
---@param fn luarun.http.Handler
---@return luarun.Router
function Router:options(pattern, fn) end

---What a WebSocket call returns once the connection is closed.
---@class luarun.http.ClosedError: luarun.http.Error
---@field kind "closed"
---@field code integer the close code: 1000 normal, 1006 broken without a close
---@field reason string the peer's reason, often ""

---A WebSocket, from `http.websocket` or `req:websocket()`. Close it with
---`ws:close()` or a `<close>` variable.
---@class luarun.WebSocket
local WebSocket = {}

---Sends a text message; waits while the peer reads slowly.
---@async
---@param text string
---@return true? ok
---@return luarun.http.ClosedError? err
function WebSocket:send(text) end

---Sends a binary message.
---@async
---@param bytes string
---@return true? ok
---@return luarun.http.ClosedError? err
function WebSocket:send_binary(bytes) end

---The next message and its type; nil, err once closed.
---@async
---@return string|nil message
---@return "text"|"binary"|luarun.http.ClosedError kind
function WebSocket:receive() end

---`for msg, kind in ws:messages() do`: receives until the connection closes.
---@return fun(ws: luarun.WebSocket): (string?, "text"|"binary"|luarun.http.ClosedError)
---@return luarun.WebSocket
function WebSocket:messages() end

---Sends a ping (up to 125 bytes of data); the pong is not waited for.
---@param data? string
---@return true? ok
---@return luarun.http.ClosedError? err
function WebSocket:ping(data) end

---Starts the close handshake and waits for it (at most close_timeout).
---@async
---@param code? integer default 1000
---@param reason? string up to 123 bytes
---@return true
function WebSocket:close(code, reason) end

---The parts of a URL from `http.url.parse`, as written (not percent-decoded).
---@class luarun.http.UrlParts
---@field scheme string lower-cased
---@field user? string
---@field password? string
---@field host? string
---@field port? integer only when the URL writes one
---@field path string dot segments removed; "/" for an empty http path
---@field query? string the raw query string, without "?"
---@field fragment? string without "#"

---Functions on URL strings, through libcurl's URL parser.
http.url = {}

---The parts of an absolute URL; nil, err (kind "invalid_url") if it is not one.
---@param url string
---@return luarun.http.UrlParts? parts
---@return luarun.http.Error? err
function http.url.parse(url) end

---`ref` resolved against `base` (RFC 3986 5.2), cleaned first as browsers clean an
---href; references with a scheme of their own come back as they are.
---@param base string an absolute URL
---@param ref string
---@return string? url
---@return luarun.http.Error? err
function http.url.join(base, ref) end

---A form of `url` that compares equal for equal URLs: scheme and host lower-cased,
---default port, dot segments and fragment dropped, escapes normalised.
---@param url string
---@return string? url
---@return luarun.http.Error? err
function http.url.normalize(url) end

---`fields` as application/x-www-form-urlencoded: keys sorted, arrays repeat their key.
---@param fields table<string, string|number|boolean|(string|number|boolean)[]>
---@return string
function http.url.encode(fields) end

---A query string or form body decoded: '+' is a space; a repeated key gives a list.
---@param query string with or without its leading "?"
---@return table<string, string|string[]>
function http.url.decode(query) end

---Options of `http.robots` when it fetches: request options, and a client to use.
---@class luarun.http.RobotsOptions: luarun.http.Options
---@field client? luarun.http.Client fetch with this client instead of the default one

---The rules of a robots.txt file (RFC 9309). Given an http(s) URL, fetches it in the
---calling task (2xx: parsed; 4xx: allow all; 5xx, 429 or no answer: disallow all);
---given anything else, parses it as robots.txt text. nil, err only for a URL that
---does not parse.
---@async
---@param url_or_text string
---@param opts? luarun.http.RobotsOptions
---@return luarun.Robots? robots
---@return luarun.http.Error? err
function http.robots(url_or_text, opts) end

---Rules from `http.robots`.
---@class luarun.Robots
---@field sitemaps string[] the Sitemap lines, in order
---@field url? string the URL fetched
---@field status? integer its HTTP status, or nil when no response came
---@field error? luarun.http.Error the fetch's error, when there was one
local Robots = {}

---Whether `agent` ("*" when nil) may fetch `url` (a URL, or a path starting with "/"):
---the longest matching pattern of the agent's group decides, Allow wins ties.
---@param url string
---@param agent? string a user-agent string; its product token picks the group
---@return boolean allowed
---@return luarun.http.Error? err for a URL that does not parse
function Robots:allowed(url, agent) end

---The Crawl-delay of the agent's group, in seconds, or nil.
---@param agent? string
---@return number? seconds
function Robots:crawl_delay(agent) end

return http
