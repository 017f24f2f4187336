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

---Options of `http.client`: request defaults plus connection limits.
---@class luarun.http.ClientOptions: luarun.http.Options
---@field max_connections? integer open connections at most, all hosts together
---@field max_per_host? integer open connections at most to one host

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
local Response = {}

---The body decoded as JSON; raises if it is not valid JSON.
---@return any
function Response:json() end

return http
