-- The PostgreSQL driver's parsers of values from the server (array literals, bytea hex,
-- numbers) fed seeded random bytes: under ASan (the test command's second run) any
-- read past a buffer fails the run. luarun.db.pg's _decode(oid, text) is the entry
-- point a result column goes through.
require "luarun"
local pg = require "luarun.db.pg"

local ARRAY_OIDS = {1007, 1016, 1009, 1022, 1000, 1001, 1231}
local SCALAR_OIDS = {17, 20, 23, 701, 16, 25}
local PIECES = {"{", "}", ",", '"', "\\", "NULL", "1", "-2", "x", " ", "[0:1]=", "=", "\\x",
  "ff", "0", "{{", "}}", '\\"', "NaN", "Infinity", "\0", "é"}

local function random_text(rng_n)
  local parts = {}
  for i = 1, rng_n do
    if math.random() < 0.2 then
      parts[i] = string.char(math.random(0, 255))
    else
      parts[i] = PIECES[math.random(#PIECES)]
    end
  end
  return table.concat(parts)
end

describe("the PostgreSQL value parsers", function()
  it("decode well-formed values", function()
    assert.same({1, {2, 3}, require("luarun.db").null}, pg._decode(1007, "{1,{2,3},NULL}"))
    assert.same({'a"b', "c,d", "NULL"}, pg._decode(1009, '{"a\\"b","c,d","NULL"}'))
    assert.equal("\1\2\255", pg._decode(17, "\\x0102ff"))
    assert.equal(-5, pg._decode(20, "-5"))
    assert.same({10, 20}, pg._decode(1007, "[0:1]={10,20}"))
  end)

  it("survive 4,000 seeded random inputs", function()
    math.randomseed(15)
    local n = 0
    for _ = 1, 4000 do
      local text = random_text(math.random(0, 40))
      local array = math.random() < 0.7
      local oid = array and ARRAY_OIDS[math.random(#ARRAY_OIDS)] or SCALAR_OIDS[math.random(#SCALAR_OIDS)]
      local ok, v = pcall(pg._decode, oid, text)
      assert.is_true(ok, tostring(v))
      if array then assert.is_true(v == nil or type(v) == "table") end
      n = n + 1
    end
    assert.equal(4000, n)
  end)
end)
