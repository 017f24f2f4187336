-- Every example in examples/ that needs no server runs here, so none of them rots.
-- (The HTTP examples run in http_spec.lua, against its test server.)
local util = require "support.util"

local function run_example(name, args)
  local code, out, err = util.sh("timeout 60 " .. util.quote(util.bin) .. " examples/" .. name
                                 .. " " .. (args or ""))
  return code, out, err
end

describe("examples", function()
  it("sleeps.lua shows concurrent sleeps taking about as long as one", function()
    local code, out, err = run_example("sleeps.lua", "20 0.05")
    assert.are.equal(0, code, err)
    local seq = tonumber(out:match("one after another:%s+([%d.]+)"))
    local conc = tonumber(out:match("all at once:%s+([%d.]+)"))
    assert.is_true(seq >= 1.0)          -- 20 × 0.05 s
    assert.is_true(conc < seq / 4)      -- loose: the machine may be loaded
  end)
end)
