-- Shared helpers for the specs.
local assert = require "luassert" -- busted's assert lives in the spec files' environment
local M = {}

--- Path of the luarun executable under test (set by .ci/test); M.bin is what specs
-- run (a wrapper under the sanitizer build, below), M.exe the executable itself.
M.bin = os.getenv("LUARUN_BIN") or "./build/luarun"
M.exe = M.bin

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = shell_quote

-- Under the sanitizer build, busted's own lua5.4 runs with leak detection off (it is
-- not instrumented); the luarun processes that specs start check for leaks with
-- LUARUN_CHILD_ASAN_OPTIONS (set by .ci/test) through a wrapper in the build directory,
-- which also drops the preloaded ASan runtime for the programs luarun runs in turn.
local child_asan, build = os.getenv("LUARUN_CHILD_ASAN_OPTIONS"), os.getenv("LUARUN_BUILD")
if child_asan and build then
  local wrapper = build .. "/luarun-leak-checked"
  local text = "#!/bin/sh\nunset LD_PRELOAD\nASAN_OPTIONS=" .. shell_quote(child_asan) ..
               " exec " .. shell_quote(M.bin) .. ' "$@"\n'
  local f = io.open(wrapper, "rb")
  local old = f and f:read("a")
  if f then f:close() end
  if old ~= text then -- written once: each spec file loads this module again
    f = assert(io.open(wrapper .. ".new", "wb"))
    f:write(text)
    f:close()
    assert(os.execute("chmod +x " .. shell_quote(wrapper .. ".new") .. " && mv " ..
                      shell_quote(wrapper .. ".new") .. " " .. shell_quote(wrapper)))
  end
  M.bin = wrapper
end

--- The whole content of a file (raises if it cannot be read).
function M.slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

--- The contents of path, or nil if it cannot be read (yet): for files a process
-- writes as it goes (a pid file, a server's output).
function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- Writes text to path in one go (raises on failure).
function M.put(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

--- A fresh directory under /tmp (the caller removes it).
function M.new_dir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. M.quote(dir)))
  return dir
end

--- The lines a shell command prints.
function M.lines_of(cmd)
  local p = assert(io.popen(cmd))
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

--- The public methods of the class registered as mtname: {name = function}, or nil
-- if there is no such class. A function __index looks them up in its first upvalue.
function M.methods_of(mtname)
  local mt = debug.getregistry()[mtname]
  if type(mt) ~= "table" then return nil end
  local idx = mt.__index
  if type(idx) == "function" then
    local _, up = debug.getupvalue(idx, 1)
    idx = up
  end
  local names = {}
  if type(idx) == "table" then
    for k, v in pairs(idx) do
      if type(k) == "string" and not k:match("^_") then names[k] = v end
    end
  end
  return names
end

--- Runs a command; returns exit code, stdout, stderr.
-- @param cmd string: a shell command
-- @param input string|nil: fed to standard input
function M.sh(cmd, input)
  local tmp = os.tmpname()
  local errf = os.tmpname()
  local inf
  if input then
    inf = os.tmpname()
    local f = assert(io.open(inf, "wb"))
    f:write(input)
    f:close()
    cmd = cmd .. " < " .. shell_quote(inf)
  end
  local ok, how, code = os.execute(cmd .. " > " .. shell_quote(tmp) .. " 2> " .. shell_quote(errf))
  local function slurp(p)
    local f = assert(io.open(p, "rb"))
    local s = f:read("a")
    f:close()
    os.remove(p)
    return s
  end
  local out, err = slurp(tmp), slurp(errf)
  if inf then os.remove(inf) end
  if how == "signal" then code = 128 + code end
  return code, out, err
end

--- Runs a command without the ASan runtime that the sanitizer run preloads into
-- busted (for servers the specs start: nginx, PostgreSQL); returns ok and its
-- stdout and stderr together.
function M.sh_clean(cmd)
  local p = assert(io.popen("unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS; ( " .. cmd .. " ) 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

--- Whether the process pid exists (kill -0).
function M.alive(pid)
  return pid ~= nil and os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

--- For fuzz specs: a random element of list, and n random bytes (math.random, which
-- the spec seeds).
function M.pick(list) return list[math.random(#list)] end

function M.random_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

--- Runs luarun on a script given as a string; returns exit code, stdout, stderr.
-- @param args string|nil: the script's arguments, shell syntax
-- @param flags string|nil: luarun's own options (before the script), shell syntax
-- @param env string|nil: VAR=value assignments for the command, shell syntax
function M.luarun(script, args, flags, env)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "wb"))
  f:write(script)
  f:close()
  local code, out, err = M.sh((env or "") .. " timeout 60 " .. shell_quote(M.bin) .. " " ..
                              (flags or "") .. " " .. shell_quote(path) .. " " .. (args or ""))
  os.remove(path)
  return code, out, err, path
end

--- Runs examples/<name> with luarun; returns exit code, stdout, stderr.
function M.example(name, args, flags)
  return M.sh("timeout 60 " .. shell_quote(M.bin) .. " " .. (flags or "") .. " examples/" ..
              name .. " " .. (args or ""))
end

--- lr.run(fn, ...) that then checks nothing was left behind: no task, no sleeper,
-- no active libuv handle. Returns fn's results.
function M.run(lr, fn, ...)
  local results = table.pack(lr.run(fn, ...))
  local st = lr.stats()
  assert.are.equal(0, st.tasks)
  assert.are.equal(0, st.sleeping)
  assert.are.equal(0, st.handles)
  return table.unpack(results, 1, results.n)
end

--- Calls fn and returns the error it raised (the test fails if it did not raise).
function M.raises(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

--- Deep equality that also tells integers from floats, NaN, -0.0 and shared
-- references (cycles included) apart.
function M.same(a, b, seen)
  seen = seen or {}
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false end
    if a ~= a then return b ~= b end
    return a == b and (a ~= 0 or 1 / a == 1 / b)
  end
  if type(a) ~= "table" then return a == b end
  if seen[a] then return seen[a] == b end
  seen[a] = b
  for k, v in pairs(a) do
    if type(k) ~= "table" and not M.same(v, b[k], seen) then return false end
  end
  for k in pairs(b) do if type(k) ~= "table" and a[k] == nil then return false end end
  return true
end

return M
