-- The concurrency-pattern examples in examples/, each run through the CLI and its
-- output checked, so none of them rots.
local util = require "support.util"
local srv = require "support.httpserver"

-- Runs an example that must succeed; returns its output.
local function run_example(name, args)
  local code, out, err = util.example(name, args)
  assert.are.equal(0, code, err)
  return out
end

describe("pattern examples", function()
  it("fan_out_limit.lua never runs more than the limit", function()
    local out = run_example("fan_out_limit.lua", "30 5")
    assert.matches("map:%s+30 jobs, at most 5 at once, [%d.]+ s, last result 900", out)
    assert.matches("semaphore: 30 jobs, at most 5 at once, [%d.]+ s, last result 900", out)
  end)

  it("producer_consumer.lua moves every item and respects the bound", function()
    local out = run_example("producer_consumer.lua", "45 4")
    local a, b, c, total, longest = out:match(
      "consumers handled (%d+) %+ (%d+) %+ (%d+) = (%d+); queue never held more than (%d+)")
    assert.are.equal(45, tonumber(total), out)
    assert.are.equal(45, tonumber(a) + tonumber(b) + tonumber(c))
    assert.is_true(tonumber(longest) <= 4, out)
  end)

  it("worker_pool.lua shares the jobs between the workers", function()
    local out = run_example("worker_pool.lua", "12 3")
    local done, shares, pi = out:match("(%d+) jobs done by 3 workers %(([%d +]+)%), pi ~ ([%d.]+)")
    assert.are.equal(12, tonumber(done), out)
    local sum = 0
    for n in shares:gmatch("%d+") do sum = sum + tonumber(n) end
    assert.are.equal(12, sum)
    assert.is_true(math.abs(tonumber(pi) - math.pi) < 1e-3)
  end)

  it("pipeline.lua carries every record through and stops by itself", function()
    local out = run_example("pipeline.lua", "20")
    -- price = qty * 2 = i * 6, summed over 1..20
    assert.matches("20 records through 4 stages, total price 1260", out)
  end)

  it("retry_backoff.lua times out, retries, and gives up", function()
    local out = run_example("retry_backoff.lua")
    assert.matches("attempt 1 failed: timeout: timed out after 0.1 s", out, 1, true)
    assert.matches("attempt 2 failed: connect: connection refused", out, 1, true)
    assert.matches('got "payload" after 3 attempts', out, 1, true)
    assert.matches("gave up: nil, last error kind connect", out, 1, true)
  end)

  it("graceful_shutdown.lua: Ctrl-C runs every worker's cleanup and exits 130", function()
    local outf = os.tmpname()
    local code = util.sh("(" .. util.quote(util.bin) .. " examples/graceful_shutdown.lua > " ..
      util.quote(outf) .. " & pid=$!; for i in $(seq 200); do grep -q running " ..
      util.quote(outf) .. " && break; sleep 0.05; done; sleep 0.1; kill -INT $pid; wait $pid)")
    local f = assert(io.open(outf))
    local out = f:read("a")
    f:close()
    os.remove(outf)
    assert.are.equal(130, code)
    for i = 1, 3 do
      assert.matches(("worker %d: flushing %%d+ items and stopping"):format(i), out)
    end
  end)

  describe("with a local server", function()
    local bin
    setup(function() bin = srv.httpbin() end)
    teardown(function()
      bin.stop()
      srv.cleanup()
    end)

    it("fetch_crawler.lua visits every page once, within its rate", function()
      local t0 = os.time()
      local out = run_example("fetch_crawler.lua", util.quote(bin.base) .. " 12 5")
      local pages, failed, wall = out:match("crawled (%d+) pages %((%d+) failed%) in ([%d.]+) s")
      assert.are.equal(12, tonumber(pages), out)
      assert.are.equal(0, tonumber(failed))
      -- 12 requests at 5 per second: the last 7 wait for at least one more second
      assert.is_true(tonumber(wall) >= 1.0, out)
      assert.is_true(os.time() - t0 < 60)
    end)
  end)
end)
