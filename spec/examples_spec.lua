-- Every example in examples/ that needs no server runs here, so none of them rots.
-- (The HTTP examples run in http_spec.lua, against its test server.)
local json = require "luarun.json"
local util = require "support.util"

local run_example = util.example

describe("examples", function()
  it("sleeps.lua shows concurrent sleeps taking about as long as one", function()
    local code, out, err = run_example("sleeps.lua", "20 0.05")
    assert.are.equal(0, code, err)
    local seq = tonumber(out:match("one after another:%s+([%d.]+)"))
    local conc = tonumber(out:match("all at once:%s+([%d.]+)"))
    assert.is_true(seq >= 1.0)          -- 20 × 0.05 s
    assert.is_true(conc < seq / 4)      -- loose: the machine may be loaded
  end)

  -- The three mistakes, each with the tool that shows it.
  it("mistake_cpu_in_task.lua: --debug names the line, run_in_pool fixes it", function()
    local code, out, err = run_example("mistake_cpu_in_task.lua", "x 1500000", "--debug=300")
    assert.are.equal(0, code, err)
    assert.is_truthy(out:find("^in the task:"), out)
    assert.is_truthy(err:find("blocked loop: main task has been running for %d+ ms"), err)
    assert.is_truthy(err:find("mistake_cpu_in_task%.lua:%d+: in local 'count_primes'"), err)
    local stuck_gap = tonumber(out:match("longest gap: (%d+) ms"))
    code, out, err = run_example("mistake_cpu_in_task.lua", "fixed 1500000", "--debug=300")
    assert.are.equal(0, code, err)
    assert.is_truthy(out:find("^run_in_pool:"), out)
    assert.are.equal("", err)
    assert.is_true(tonumber(out:match("longest gap: (%d+) ms")) < stuck_gap, out)
  end)

  it("mistake_blocking_call.lua: --debug catches os.execute and a busy wait, not lr.sleep", function()
    local code, out, err = run_example("mistake_blocking_call.lua", "blocking", "--debug=200")
    assert.are.equal(0, code, err)
    assert.is_truthy(err:find("blocked loop: task %d+ %(spawned at examples/mistake_blocking_call%.lua:%d+%) " ..
                              "has been running for %d+ ms without yielding %(threshold 200 ms%), inside a C function"), err)
    assert.is_truthy(err:find("mistake_blocking_call%.lua:%d+: in upvalue 'pause'"), err)
    code, out, err = run_example("mistake_blocking_call.lua", "busy", "--debug=200")
    assert.are.equal(0, code, err)
    assert.is_truthy(err:find("has been running for %d+ ms without yielding %(threshold 200 ms%); it is at:"), err)
    assert.is_truthy(err:find("mistake_blocking_call%.lua:%d+: in upvalue 'pause'"), err)
    code, out, err = run_example("mistake_blocking_call.lua", "fixed", "--debug=200")
    assert.are.equal(0, code, err)
    assert.are.equal("", err)
    assert.is_truthy(out:find("^fixed: the heartbeat's longest gap was %d+ ms"), out)
  end)

  it("mistake_one_at_a_time.lua: --trace shows one row end to end, then rows side by side", function()
    local trace = os.tmpname() .. ".json"
    local code, out, err = run_example("mistake_one_at_a_time.lua", "", "--trace " .. util.quote(trace))
    assert.are.equal(0, code, err)
    local seq, conc = out:match("one at a time ([%d.]+) s, with lr.map/gather ([%d.]+) s")
    assert.is_true(tonumber(seq) >= 1.0 and tonumber(conc) < tonumber(seq) / 3, out)
    local f = assert(io.open(trace, "rb"))
    local t = json.decode(f:read("a"))
    f:close()
    os.remove(trace)
    local main, others = {}, {}
    for _, e in ipairs(t.traceEvents) do
      if e.ph == "X" and e.cat == "sleep" then
        table.insert(e.tid == 1 and main or others, e)
      end
    end
    -- One at a time: ten sleeps on the main task's row, each after the previous.
    assert.are.equal(10, #main)
    table.sort(main, function(a, b) return a.ts < b.ts end)
    for i = 2, 10 do assert.is_true(main[i].ts >= main[i - 1].ts + main[i - 1].dur) end
    -- Together: ten rows, every sleep started before the first one ended.
    assert.are.equal(10, #others)
    local first_end, seen = math.huge, {}
    for _, e in ipairs(others) do first_end = math.min(first_end, e.ts + e.dur); seen[e.tid] = true end
    for _, e in ipairs(others) do assert.is_true(e.ts < first_end) end
    local rows = 0
    for _ in pairs(seen) do rows = rows + 1 end
    assert.are.equal(10, rows)
    -- The same as a page.
    local page = os.tmpname() .. ".html"
    code, out, err = run_example("mistake_one_at_a_time.lua", "", "--trace " .. util.quote(page))
    assert.are.equal(0, code, err)
    f = assert(io.open(page, "rb"))
    local html = f:read("a")
    f:close()
    os.remove(page)
    assert.is_truthy(html:find('"cat":"sleep"', 1, true))
  end)
end)
