-- The LuaCATS annotation files in types/ (issue 22) against what the modules export:
-- the same names, the same classes and methods, and the same arity where it can be
-- read (functions written in Lua; a C function does not say how many arguments it
-- takes). Each file must also load in plain Lua.
local util = require "support.util"

-- Parses one annotation file: {meta =, module = {name = params}, values = {name},
-- classes = {registry name = {method = params}}}; params is a list, "..." included.
local function parse(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  local res = {meta = text:match("^%-%-%-@meta ([%w_.]+)"), module = {}, values = {},
               classes = {}}
  assert(res.meta, path .. ": the first line must be ---@meta <module>")
  local modvar = text:match("\nlocal ([%w_]+) = {}")
  local locals, pending = {}, nil
  for l in text:gmatch("[^\n]+") do
    local cls = l:match("^%-%-%-@class ([%w_.]+)")
    if cls then pending = cls end
    local var = l:match("^local ([%w_]+) = {}")
    if var and var ~= modvar and pending then
      locals[var] = pending
      res.classes[pending] = res.classes[pending] or {}
    end
    if var then pending = nil end
    local owner, sep, name, params = l:match("^function ([%w_]+)([.:])([%w_]+)%((.-)%)")
    if owner then
      local list = {}
      for p in params:gmatch("[^,%s]+") do list[#list + 1] = p end
      if owner == modvar and sep == "." then
        res.module[name] = list
      elseif locals[owner] and sep == ":" then
        res.classes[locals[owner]][name] = list
      else
        error(path .. ": " .. l .. ": not a function of the module or of a class")
      end
    end
    local value = modvar and l:match("^" .. modvar .. "%.([%w_]+) =")
    if value then res.values[value] = true end
  end
  return res
end

local files = {
  ["luarun"] = "types/luarun.lua", ["luarun.http"] = "types/luarun/http.lua",
  ["luarun.fs"] = "types/luarun/fs.lua", ["luarun.json"] = "types/luarun/json.lua",
  ["luarun.db"] = "types/luarun/db.lua",
  ["luarun.html"] = "types/luarun/html.lua",
}

-- Classes written in Lua that are not in the registry: their metatable, by the
-- annotations' class name.
local lua_classes = {
  ["luarun.Router"] = function() return getmetatable(require("luarun.http").router()) end,
  ["luarun.db.Pool"] = function() return getmetatable(require("luarun.db").pool("sqlite::memory:")) end,
  -- Registered by the drivers; db.pool loads a driver through the front, which adds
  -- transaction, prepare, copy_in and listen (a pool opens nothing until used).
  ["luarun.db.PgConnection"] = function()
    require("luarun.db").pool("postgresql://localhost/none")
    return debug.getregistry()["luarun.db.PgConnection"]
  end,
  ["luarun.db.SqliteConn"] = function()
    require("luarun.db").pool("sqlite::memory:")
    return debug.getregistry()["luarun.db.SqliteConn"]
  end,
}

-- {name = function} of a class, or nil for a table class (options, results).
local function methods_of(cls)
  if lua_classes[cls] then
    local names = {}
    for k, v in pairs(lua_classes[cls]().__index) do
      if type(k) == "string" and not k:match("^_") and type(v) == "function" then names[k] = v end
    end
    return names
  end
  return util.methods_of(cls)
end

-- "1 + vararg" for a parameter list of the annotations or a Lua function.
local function shape(nparams, vararg)
  return ("%d%s"):format(nparams, vararg and " + ..." or "")
end

local function listed_shape(list, method)
  local n, va = method and 1 or 0, false
  for _, p in ipairs(list) do
    if p == "..." then va = true else n = n + 1 end
  end
  return shape(n, va)
end

local function real_shape(fn)
  local info = debug.getinfo(fn, "Su")
  return info.what ~= "C" and shape(info.nparams, info.isvararg) or nil
end

describe("types/", function()
  for modname, path in pairs(files) do
    describe(path, function()
      local mod = require(modname)
      local ann = parse(path)

      it("loads in plain Lua and names its module", function()
        local rc, _, err = util.sh("lua5.4 " .. util.quote(path))
        assert.are.equal(0, rc, err)
        assert.are.equal(modname, ann.meta)
      end)

      it("annotates exactly the module's public names", function()
        local missing, extra = {}, {}
        for k, v in pairs(mod) do
          if type(k) == "string" and not k:match("^_") then
            local known = type(v) == "function" and ann.module[k] or ann.values[k]
            if not known then missing[#missing + 1] = k end
          end
        end
        for k in pairs(ann.module) do
          if type(mod[k]) ~= "function" then extra[#extra + 1] = k end
        end
        for k in pairs(ann.values) do
          if mod[k] == nil then extra[#extra + 1] = k end
        end
        table.sort(missing)
        table.sort(extra)
        assert.are.same({}, missing)
        assert.are.same({}, extra)
      end)

      it("gives functions written in Lua their real arity", function()
        for k, list in pairs(ann.module) do
          local real = type(mod[k]) == "function" and real_shape(mod[k])
          if real then assert.are.equal(real, listed_shape(list, false), modname .. "." .. k) end
        end
      end)

      it("annotates exactly the methods of its classes", function()
        for cls, methods in pairs(ann.classes) do
          local real = methods_of(cls)
          if real then -- an options or result table class has no metatable
            local missing, extra = {}, {}
            for k, fn in pairs(real) do
              if not methods[k] then missing[#missing + 1] = k end
              local s = methods[k] and type(fn) == "function" and real_shape(fn)
              if s then assert.are.equal(s, listed_shape(methods[k], true), cls .. ":" .. k) end
            end
            for k in pairs(methods) do
              if not real[k] then extra[#extra + 1] = k end
            end
            table.sort(missing)
            table.sort(extra)
            assert.are.same({}, missing, cls)
            assert.are.same({}, extra, cls)
          end
        end
      end)
    end)
  end

  it("covers every class the modules register", function()
    local annotated = {}
    for _, path in pairs(files) do
      for cls in pairs(parse(path).classes) do annotated[cls] = true end
    end
    for _, m in ipairs({"luarun", "luarun.http", "luarun.fs", "luarun.json", "luarun.db", "luarun.html"}) do require(m) end
    local missing = {}
    for k, v in pairs(debug.getregistry()) do
      if type(k) == "string" and k:match("^luarun%.") and type(v) == "table" and
         next(methods_of(k)) and not annotated[k] then
        missing[#missing + 1] = k
      end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)
end)
