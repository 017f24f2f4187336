---@meta luarun.json
-- LuaCATS annotations for `require "luarun.json"`, read by lua-language-server.
-- The manual: docs/reference/json.md.

local json = {}

---JSON null: decoding gives it, encoding writes it as null. A light userdata,
---the same value in every Lua state of the process.
---@type lightuserdata
json.null = {}

---JSON text for a value; raises on a value it cannot encode, naming its path.
---@param value any
---@return string
function json.encode(value) end

---The value of a JSON text; raises with the line, column and byte of an error.
---@param text string
---@return any
function json.decode(text) end

---Marks t (or a new empty table) as a JSON array, so that {} encodes as [].
---@generic T: table
---@param t? T
---@return T
function json.array(t) end

return json
