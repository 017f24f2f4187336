-- Installing (issue 22): `cmake --install` of the build under test into a temporary
-- prefix, and `luarocks make` of a copy of the source tree into a temporary rock tree;
-- then scripts that use only the installed files, through the executable and through
-- stock lua5.4.
local util = require "support.util"

local q = util.quote
local root = os.getenv("PWD")
local build = os.getenv("LUARUN_BUILD") or (root .. "/build")
local child_asan = os.getenv("LUARUN_CHILD_ASAN_OPTIONS")

local tmpdir = util.new_dir

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The environment a program under test runs in: under the sanitizer pass, the
-- installed files are the instrumented build's, run as util.bin's wrapper runs them.
local function env(extra)
  local e = "env -u LUA_PATH -u LUA_CPATH -u LUA_INIT "
  if child_asan then e = e .. "-u LD_PRELOAD ASAN_OPTIONS=" .. q(child_asan) .. " " end
  return e .. (extra or "")
end

-- A script that uses the runtime, HTTP and files.
local SCRIPT = [[
local lr = require "luarun"
local fs = require "luarun.fs"
local json = require "luarun.json"
require "luarun.http"
local dir = assert(fs.mkdtemp("/tmp/luarun-installed."))
local r = lr.gather(function() lr.sleep(0.01) return 1 end, function() return 2 end)
assert(fs.write_file(dir .. "/x", json.encode({a = r})))
print(json.decode(assert(fs.read_file(dir .. "/x"))).a)
assert(fs.remove(dir .. "/x") and fs.rmdir(dir))
]]

describe("installing", function()
  local dirs = {}
  local function fresh()
    local d = tmpdir()
    dirs[#dirs + 1] = d
    return d
  end

  teardown(function()
    for _, d in ipairs(dirs) do os.execute("rm -rf " .. q(d)) end
  end)

  it("cmake --install puts every part in place, and the installed files work alone", function()
    local prefix = fresh()
    local rc, out, err = util.sh("cmake --install " .. q(build) .. " --prefix " .. q(prefix))
    assert.are.equal(0, rc, out .. err)
    for _, f in ipairs({"bin/luarun", "lib/lua/5.4/luarun.so", "share/man/man1/luarun.1",
                        "share/lua/5.4/luarun/types/luarun.lua",
                        "share/lua/5.4/luarun/types/luarun/http.lua",
                        "share/lua/5.4/luarun/types/luarun/fs.lua",
                        "share/lua/5.4/luarun/types/luarun/json.lua",
                        "share/doc/luarun/guide.md"}) do
      assert.is_true(exists(prefix .. "/" .. f), "not installed: " .. f)
    end
    local script = prefix .. "/script.lua"
    util.put(script, SCRIPT)
    -- The executable, run from elsewhere (nothing of the source or build tree).
    rc, out, err = util.sh("cd / && " .. env() .. q(prefix .. "/bin/luarun") .. " " .. q(script))
    assert.are.equal(0, rc, err)
    assert.are.equal("1\n", out)
    -- The module form, found by stock lua5.4 through the installed path alone (under
    -- the sanitizer pass with busted's LD_PRELOAD of ASan, which the module needs).
    rc, out, err = util.sh("cd / && env -u LUA_PATH LUA_CPATH=" .. q(prefix .. "/lib/lua/5.4/?.so") ..
                           " lua5.4 -e " .. q("require('luarun').run(loadfile(" ..
                           ("%q"):format(script) .. "))"))
    assert.are.equal(0, rc, err)
    assert.are.equal("1\n", out)
    assert.matches("^%.TH LUARUN 1", (assert(io.open(prefix .. "/share/man/man1/luarun.1")):read("a")))
  end)

  it("luarocks make builds and installs the rock from a copy of the source tree", function()
    local work = fresh()
    local src, tree = work .. "/src", work .. "/tree"
    -- The files a clone would have: tracked ones, and new ones not ignored.
    local rc, _, err = util.sh("mkdir " .. q(src) .. " && cd " .. q(root) ..
      " && git ls-files -co --exclude-standard | grep -v '^build' | tar -cf - -T - | tar -xf - -C " .. q(src))
    assert.are.equal(0, rc, err)
    local out
    rc, out, err = util.sh("cd " .. q(src) .. " && env -u LD_PRELOAD -u CFLAGS timeout 600 " ..
                           "luarocks --lua-version 5.4 make --tree " .. q(tree) ..
                           " luarun-scm-1.rockspec")
    assert.are.equal(0, rc, out .. err)
    local script = work .. "/script.lua"
    util.put(script, SCRIPT)
    rc, out, err = util.sh("cd / && env -u LD_PRELOAD LUA_CPATH=" .. q(tree .. "/lib/lua/5.4/?.so") ..
                           " lua5.4 -e " .. q("require('luarun').run(loadfile(" ..
                           ("%q"):format(script) .. "))"))
    assert.are.equal(0, rc, err)
    assert.are.equal("1\n", out)
    rc, out, err = util.sh("cd / && env -u LD_PRELOAD " .. q(tree .. "/bin/luarun") .. " " .. q(script))
    assert.are.equal(0, rc, err)
    assert.are.equal("1\n", out)
  end)
end)
