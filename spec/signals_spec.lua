-- SIGTERM and SIGINT on the executable (issue 23): without a handler, SIGTERM cancels
-- the tasks as Ctrl-C does, so their <close> variables run, and the process exits 143;
-- a second signal ends it at once. Each case runs luarun in the background, waits for
-- the script to say "ready", then signals it by its pid.
local util = require "support.util"

local q = util.quote

-- Runs `script`; once it printed "ready", sends each of `signals` (a pause between
-- them). Returns the exit code, the script's output, its stderr and the milliseconds
-- from the first signal to the exit.
local function signalled(script, signals)
  local dir = util.new_dir()
  local path, out, err = dir .. "/s.lua", dir .. "/out", dir .. "/err"
  util.put(path, script)
  local kills = {}
  for i, sig in ipairs(signals) do
    kills[#kills + 1] = (i > 1 and "sleep 0.3; " or "") .. "kill -" .. sig .. " $pid 2>/dev/null;"
  end
  local cmd = "(" .. q(util.bin) .. " " .. q(path) .. " >" .. q(out) .. " 2>" .. q(err) ..
              " & pid=$!; for i in $(seq 400); do grep -q ready " .. q(out) ..
              " && break; sleep 0.025; done; t0=$(date +%s%N); " .. table.concat(kills, " ") ..
              " wait $pid; rc=$?; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); exit $rc)"
  local code, ms = util.sh(cmd)
  local o, e = util.slurp(out), util.slurp(err)
  os.execute("rm -rf " .. q(dir))
  return code, o, e, tonumber(ms)
end

-- A script whose cleanup spins for 30 s once it is cancelled.
local STUCK_CLEANUP = [[local lr = require "luarun"
local _ <close> = setmetatable({}, {__close = function()
  print("stuck cleanup")
  io.stdout:flush()
  local t0 = os.time()
  while os.time() - t0 < 30 do end
end})
print("ready")
io.stdout:flush()
lr.sleep(30)
]]

describe("signals", function()
  it("SIGTERM cancels every task, runs their cleanup and exits 143", function()
    local code, out, err = signalled([[
local lr = require "luarun"
local function guard(name)
  return setmetatable({}, {__close = function() print(name .. " cleanup") io.stdout:flush() end})
end
local child = lr.spawn(function()
  local _ <close> = guard("child")
  lr.sleep(30)
end)
local _ <close> = guard("main")
print("ready")
io.stdout:flush()
child:wait()
]], {"TERM"})
    assert.are.equal(143, code, err)
    assert.matches("ready\n", out, 1, true)
    assert.matches("child cleanup\n", out, 1, true)
    assert.matches("main cleanup\n", out, 1, true)
    assert.are.equal("", err) -- a cancelled task is not a failure: nothing reported
  end)

  it("SIGTERM interrupts a task that never waits", function()
    local code, out = signalled([[
local _ <close> = setmetatable({}, {__close = function() print("cleanup") end})
print("ready")
io.stdout:flush()
while true do end
]], {"TERM"})
    assert.are.equal(143, code)
    assert.are.equal("ready\ncleanup\n", out)
  end)

  -- A second signal of either kind, while the first one's cleanup spins, ends the
  -- process at once (the cleanup alone would spin for 30 s).
  for _, signals in ipairs({{"TERM", "TERM"}, {"INT", "TERM"}}) do
    it(("SIG%s then SIG%s ends the process at once while cleanup is stuck"):format(
         signals[1], signals[2]), function()
      local code, out, _, ms = signalled(STUCK_CLEANUP, signals)
      assert.are.equal(143, code)
      assert.are.equal("ready\nstuck cleanup\n", out)
      assert.is_true(ms < 10000, ms)
    end)
  end

  it("SIGTERM while a file job is stuck in open(): cleanup runs, the process exits", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. q(dir) .. " && mkfifo " .. q(dir .. "/fifo")))
    local code, out, err, ms = signalled(([[
local lr = require "luarun"
local fs = require "luarun.fs"
local _ <close> = setmetatable({}, {__close = function() print("cleanup") end})
lr.spawn(function() return fs.read_file(%q) end)
lr.sleep(0.05)
print("ready")
io.stdout:flush()
lr.sleep(30)
]]):format(dir .. "/fifo"), {"TERM"})
    os.execute("rm -rf " .. q(dir))
    assert.are.equal(143, code, err)
    assert.are.equal("ready\ncleanup\n", out)
    assert.is_true(ms < 10000, ms)
  end)
end)
