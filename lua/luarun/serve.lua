-- luarun.serve: the Lua half of http.serve (bindings/server.c calls this once with
-- its C parts): the driver each request's task runs, the request methods that are
-- plain Lua on top of req:body, and http.router.
local methods, respond, write, finish, chunk

local json = require "luarun.json"

-- The task body of every request: the handler's return values are the response. A
-- body function is called for chunks until it returns nil; write parks while the
-- client is slow. An error or a cancellation ends the task; core answers 500 (and
-- reports the error) or closes the connection.
local function driver(handler, req)
  local body, ws = respond(req, handler(req))
  if ws then ws:close() end -- the handler is done with its WebSocket: close it cleanly
  if body then
    while true do
      local piece = body()
      if piece == nil then break end
      if not write(req, piece) then return end -- the client went away
    end
    finish(req)
  end
end

-- An error a handler may raise, or return from a reader, that says which status to
-- answer: assert(req:json()) gives 400 for a malformed body, not 500.
local function status_error(kind, message, status)
  return setmetatable({kind = kind, message = message, status = status}, {
    __tostring = function(e) return e.kind .. ": " .. e.message end,
  })
end

-- ---- http.router ----

local Router = {}
Router.__index = Router

-- "/users/{id}/posts/{post}" -> Lua pattern and the names of its parameters.
local function compile(pattern)
  if type(pattern) ~= "string" or pattern:sub(1, 1) ~= "/" then
    error("router: a pattern must be a string starting with '/'", 3)
  end
  local names = {}
  local lua = pattern:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
  lua = lua:gsub("{([%w_]+)}", function(name)
    names[#names + 1] = name
    return "([^/]+)"
  end)
  if lua:find("[{}]") then error("router: bad parameter in pattern '" .. pattern .. "'", 3) end
  return "^" .. lua .. "$", names
end

function Router:route(method, pattern, fn)
  if type(method) ~= "string" then error("router:route: method must be a string", 2) end
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error("router:route: the handler must be a function", 2)
  end
  local lua, names = compile(pattern)
  local routes = self.routes
  local entry
  for _, e in ipairs(routes) do
    if e.pattern == pattern then entry = e end
  end
  if not entry then
    entry = {pattern = pattern, lua = lua, names = names, handlers = {}, static = #names == 0}
    routes[#routes + 1] = entry
    if entry.static then self.exact[pattern] = entry end
  end
  entry.handlers[method:upper()] = fn
  return self
end

for _, m in ipairs({"get", "post", "put", "delete", "patch", "head", "options"}) do
  local upper = m:upper()
  Router[m] = function(self, pattern, fn) return self:route(upper, pattern, fn) end
end

local function allow_of(entry)
  local list = {}
  for m in pairs(entry.handlers) do list[#list + 1] = m end
  if entry.handlers.GET and not entry.handlers.HEAD then list[#list + 1] = "HEAD" end
  table.sort(list)
  return table.concat(list, ", ")
end

local function dispatch(entry, req, captures)
  local method = req.method
  local fn = entry.handlers[method] or (method == "HEAD" and entry.handlers.GET)
  if not fn then
    return {status = 405, headers = {allow = allow_of(entry)}, body = "Method Not Allowed\n"}
  end
  local params = {}
  for i, name in ipairs(entry.names) do params[name] = captures[i] end
  req.params = params
  return fn(req)
end

function Router:__call(req)
  local path = req.path
  local entry = self.exact[path]
  if entry then return dispatch(entry, req, {}) end
  for _, e in ipairs(self.routes) do
    if not e.static then
      local caps = {path:match(e.lua)}
      if caps[1] ~= nil then return dispatch(e, req, caps) end
    end
  end
  return 404, {["content-type"] = "text/plain; charset=utf-8"}, "Not Found\n"
end

local function router()
  return setmetatable({routes = {}, exact = {}}, Router)
end

-- Called once by bindings/server.c with its C parts and the request methods table.
return function(request_methods, respond_fn, write_fn, finish_fn, chunk_fn)
  methods, respond, write, finish, chunk = request_methods, respond_fn, write_fn, finish_fn, chunk_fn

  function methods.json(req)
    local body, err = req:body()
    if not body then return nil, err end
    local ok, value = pcall(json.decode, body)
    if not ok then
      return nil, status_error("protocol", "req:json: " .. tostring(value), 400)
    end
    return value
  end

  local function unescape(s)
    s = s:gsub("+", " ")
    return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
  end

  function methods.form(req)
    local body, err = req:body()
    if not body then return nil, err end
    local form = {}
    for pair in body:gmatch("[^&]+") do
      local k, v = pair:match("^([^=]*)=?(.*)$")
      k, v = unescape(k), unescape(v)
      local old = form[k]
      if old == nil then
        form[k] = v
      elseif type(old) == "table" then
        old[#old + 1] = v
      else
        form[k] = {old, v}
      end
    end
    return form
  end

  -- for piece in req:body_chunks() do ... end: the body as it arrives. A body that
  -- never ends (the client went away, or it is too large) raises at the loop.
  function methods.body_chunks(req)
    return function()
      local piece, err = chunk(req)
      if piece == nil and err then error(err, 2) end
      return piece
    end
  end

  return driver, router
end
