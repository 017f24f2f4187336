-- The luarun executable, run as a subprocess: exit statuses, stderr, arg, stdin.
local util = require "support.util"
local bin = util.bin
local q = util.quote

describe("luarun CLI", function()
  it("runs a script with arguments, as lua(1) does", function()
    local code, out = util.luarun('print(arg[0] ~= nil, arg[1], arg[2], select("#", ...), ...)',
                                  "a 'b c'")
    assert.are.equal(0, code)
    assert.are.equal("true\ta\tb c\t2\ta\tb c\n", out)
  end)

  it("runs -e code and a script from standard input", function()
    local code, out = util.sh(q(bin) .. " -e 'print(1 + 1, ...)' x")
    assert.are.equal(0, code)
    assert.are.equal("2\tx\n", out)
    code, out = util.sh(q(bin) .. " -", 'local lr = require "luarun"; print(lr.gather(function() lr.sleep(0.01) return 1 end, function() return 2 end))')
    assert.are.equal(0, code)
    assert.are.equal("1\t2\n", out)
  end)

  it("accepts a shebang line", function()
    local code, out = util.luarun("#!/usr/bin/env luarun\nprint('ok')\n")
    assert.are.equal(0, code)
    assert.are.equal("ok\n", out)
  end)

  it("prints --version and --help", function()
    local code, out = util.sh(q(bin) .. " --version")
    assert.are.equal(0, code)
    assert.matches("^luarun %d+%.%d+%.%d+", out)
    code, out = util.sh(q(bin) .. " --help")
    assert.are.equal(0, code)
    assert.matches("usage:", out)
    code = util.sh(q(bin) .. " --bogus")
    assert.are.equal(1, code)
  end)

  it("runs standard input as the script when no script is named and it is not a terminal", function()
    local code, out = util.sh(q(bin) .. " < /dev/null")
    assert.are.equal(0, code) -- an empty script
    assert.are.equal("", out)
    code, out = util.sh(q(bin), 'local lr = require "luarun"\nlr.sleep(0.01)\nprint("from stdin", arg[0] ~= nil, select("#", ...))\n')
    assert.are.equal(0, code)
    assert.are.equal("from stdin\ttrue\t0\n", out)
    code, out = util.sh(q(bin) .. " --", "print(1)")
    assert.are.equal(0, code)
    assert.are.equal("1\n", out)
    -- A terminal still gets the help (there is no prompt yet): script(1), from
    -- Debian's essential bsdutils, gives it one.
    local _, tout = util.sh("script -qec " .. q(q(bin)) .. " /dev/null")
    assert.matches("usage:", tout)
  end)

  it("exits 1 with message, traceback and task on an uncaught error", function()
    local code, _, err = util.luarun('local function f() error("boom") end\nf()\n')
    assert.are.equal(1, code)
    assert.matches("boom", err)
    assert.matches("stack traceback", err)
    assert.matches("in local 'f'", err, 1, true)
    assert.matches("main task", err)
  end)

  it("reports an error relayed through wait with the failing task's traceback", function()
    local code, _, err = util.luarun([[
local lr = require "luarun"
local function deep() error({kind = "x", message = "from the child"}) end
local t = lr.spawn(function() lr.sleep(0.01) deep() end)
t:wait()
]])
    assert.are.equal(1, code)
    assert.matches("from the child", err)
    assert.matches("in upvalue 'deep'", err, 1, true)
    assert.matches("spawned at [^\n]*:3", err)
  end)

  it("reports an unwaited task's error when it happens and exits 1", function()
    local code, out, err = util.luarun([[
local lr = require "luarun"
lr.spawn(function() lr.sleep(0.01) error("lost") end)
lr.sleep(0.1)
print("main went on")
]])
    assert.are.equal(1, code)
    assert.are.equal("main went on\n", out)
    assert.matches("lost", err)
    assert.matches("spawned at", err)
  end)

  it("a cancelled task is not a failure", function()
    local code, _, err = util.luarun([[
local lr = require "luarun"
local t = lr.spawn(lr.sleep, 10)
lr.sleep(0.01)
t:cancel()
]])
    assert.are.equal(0, code)
    assert.are.equal("", err)
  end)

  it("exits when every task is done", function()
    local code, out = util.luarun([[
local lr = require "luarun"
lr.spawn(function() lr.sleep(0.05) print("late task") end)
print("main done")
]])
    assert.are.equal(0, code)
    assert.are.equal("main done\nlate task\n", out)
  end)

  it("os.exit works as in lua5.4", function()
    local code, out = util.luarun('io.write("x") os.exit(3)')
    assert.are.equal(3, code)
    assert.are.equal("x", out)
  end)

  it("warnings are off until warn('@on'), as in lua5.4, on either allocator", function()
    local script = [[
warn("hidden")
warn("@on")
warn("shown ", "in parts")
setmetatable({}, {__gc = function() error("from gc") end})
collectgarbage()
warn("@off")
warn("hidden again")
local t = {}
for i = 1, 30000 do t[i] = {i, ("x"):rep(i % 2000)} end
for i = 1, 30000, 997 do assert(t[i][1] == i and #t[i][2] == i % 2000) end
print("ok")
]]
    for _, env in ipairs({"", "LUARUN_ALLOC=system"}) do
      local code, out, err = util.luarun(script, nil, nil, env)
      assert.equal(0, code)
      assert.equal("ok\n", out)
      assert.equal("Lua warning: shown in parts\nLua warning: error in __gc (", err:sub(1, 56))
      assert.matches("from gc%)\n$", err)
      assert.not_matches("hidden", err)
    end
  end)

  it("reports a deadlock instead of hanging, and exits 1", function()
    local code, _, err = util.luarun([[
local lr = require "luarun"
local a
local b = lr.spawn(function() lr.sleep(0.01) a:wait() end)
a = lr.spawn(function() b:wait() end)
]])
    assert.are.equal(1, code)
    assert.matches("deadlock: 2 tasks can never resume", err, 1, true)
  end)

  it("Ctrl-C cancels the tasks, runs their cleanup and exits 130", function()
    local script = os.tmpname() .. ".lua"
    local f = assert(io.open(script, "w"))
    f:write([[
local lr = require "luarun"
local t = lr.spawn(function()
  local _ <close> = setmetatable({}, {__close = function() print("cleanup ran") end})
  lr.sleep(30)
end)
print("ready")
io.stdout:flush()
t:wait()
]])
    f:close()
    local code, out = util.sh(
      "(" .. q(bin) .. " " .. q(script) .. " & pid=$!; sleep 0.5; kill -INT $pid; wait $pid)")
    os.remove(script)
    assert.are.equal(130, code)
    assert.are.equal("ready\ncleanup ran\n", out)
  end)

  it("Ctrl-C interrupts a task that never waits", function()
    local code = util.sh("(" .. q(bin) .. " -e 'while true do end' & pid=$!; sleep 0.5; " ..
                         "kill -INT $pid; wait $pid)")
    assert.are.equal(130, code)
  end)

  it("runs 1,000,000 tiny tasks", function()
    local code, out = util.luarun([[
local lr = require "luarun"
local n = 0
local function work() n = n + 1 end
for i = 1, 1000000 do lr.spawn(work) end
lr.sleep(0)
while n < 1000000 do lr.sleep(0.01) end
print(n)
]])
    assert.are.equal(0, code)
    assert.are.equal("1000000\n", out)
  end)
end)
