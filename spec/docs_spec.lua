-- The manual against the code (issue 22): every `lua run` block in docs/ runs, every
-- public name of every module and class has a reference entry (and every entry names
-- something that exists), and the command line page and man page list every option
-- of `luarun --help` and every LUARUN_* variable the sources read.
local lr = require "luarun"
local http = require "luarun.http"
local fs = require "luarun.fs"
local json = require "luarun.json"
local db = require "luarun.db"
local html = require "luarun.html"
local util = require "support.util"
local srv = require "support.httpserver"

local q = util.quote

local slurp, lines_of = util.slurp, util.lines_of

local pages = lines_of("find docs -name '*.md' | sort")

-- Every ```lua run block: {file =, line =, code =}.
local function runnable_blocks()
  local blocks = {}
  for _, page in ipairs(pages) do
    local n, cur = 0, nil
    for l in (slurp(page) .. "\n"):gmatch("([^\n]*)\n") do
      n = n + 1
      if cur then
        if l:match("^```%s*$") then
          blocks[#blocks + 1] = cur
          cur = nil
        else
          cur.code[#cur.code + 1] = l
        end
      elseif l:match("^```lua run%s*$") then
        cur = {file = page, line = n, code = {}}
      end
    end
    assert(cur == nil, page .. ": a `lua run` block is not closed")
  end
  return blocks
end

-- The names that reference entries give: "lr.sleep", "task:wait", ...
local function entries()
  local names = {}
  for _, page in ipairs(pages) do
    if page:match("^docs/reference/") then
      for l in slurp(page):gmatch("[^\n]+") do
        local text = l:match("^#+%s+`([^`]+)`")
        local name = text and text:match("^([%w_]+[.:][%w_]+)")
        if name then names[name] = page end
      end
    end
  end
  return names
end

-- Module tables by the prefix the docs use.
local modules = {lr = lr, http = http, fs = fs, json = json, db = db, html = html}

-- luarun.db: db.pool loads a driver through the front, which adds transaction,
-- prepare, copy_in and listen to its connections' methods (a pool opens nothing
-- until it is used). `conn` is PostgreSQL's connection, whose methods include SQLite's.
db.pool("postgresql://localhost/none")
local db_pool_class = getmetatable(db.pool("sqlite::memory:"))
-- http.robots's class is registered by its Lua module on first use.
http.robots("User-agent: *")

-- Classes by the object name the docs use for their methods: a registry name, or
-- the metatable itself for a class written in Lua that is not registered (the
-- router: a table whose metatable is its own __index).
local classes = {
  task = "luarun.Task", semaphore = "luarun.Semaphore", lock = "luarun.Lock",
  event = "luarun.Event", ratelimit = "luarun.RateLimit", queue = "luarun.Queue",
  scope = "luarun.Scope", file = "luarun.File", client = "luarun.http.Client",
  res = "luarun.http.Response", server = "luarun.Server", req = "luarun.Request",
  ws = "luarun.WebSocket", app = getmetatable(http.router()),
  pool = db_pool_class, conn = "luarun.db.PgConnection", stmt = "luarun.db.SqliteStmt",
  robots = "luarun.Robots", doc = "luarun.html.Document", el = "luarun.html.Element",
}

-- The sorted method names of a class (it must exist).
local function methods_of(class)
  local methods
  if type(class) == "table" then
    methods = {}
    for k, v in pairs(type(class.__index) == "table" and class.__index or {}) do
      if type(k) == "string" and not k:match("^_") and type(v) == "function" then
        methods[k] = v
      end
    end
  else
    methods = assert(util.methods_of(class), "no class " .. class)
  end
  local names = {}
  for k in pairs(methods) do names[#names + 1] = k end
  table.sort(names)
  return names
end

describe("docs/", function()
  describe("runnable examples", function()
    local bin
    setup(function()
      bin = srv.httpbin()
    end)
    teardown(function()
      bin.stop()
      srv.cleanup()
    end)

    local blocks = runnable_blocks()
    it("exist in the guide and in every reference page", function()
      local seen = {}
      for _, b in ipairs(blocks) do seen[b.file] = (seen[b.file] or 0) + 1 end
      for _, page in ipairs({"docs/guide.md", "docs/reference/luarun.md",
                             "docs/reference/http.md", "docs/reference/fs.md",
                             "docs/reference/json.md", "docs/reference/db.md",
                             "docs/reference/html.md"}) do
        assert.is_true((seen[page] or 0) > 0, page .. " has no runnable block")
      end
    end)

    for _, b in ipairs(blocks) do
      it(("%s:%d runs"):format(b.file, b.line), function()
        local code = table.concat(b.code, "\n"):gsub("http://127%.0%.0%.1:8080", bin.base)
        local path = os.tmpname() .. ".lua"
        local f = assert(io.open(path, "wb"))
        f:write(code, "\n")
        f:close()
        local rc, out, err = util.sh("timeout 30 " .. q(util.bin) .. " " .. q(path))
        os.remove(path)
        assert.are.equal(0, rc, ("%s:%d exited %d\n%s%s"):format(b.file, b.line, rc, out, err))
      end)
    end
  end)

  describe("the reference", function()
    local documented = entries()

    it("has an entry for every public name of every module", function()
      local missing = {}
      for prefix, mod in pairs(modules) do
        for k in pairs(mod) do
          if type(k) == "string" and not k:match("^_") and not documented[prefix .. "." .. k] then
            missing[#missing + 1] = prefix .. "." .. k
          end
        end
      end
      table.sort(missing)
      assert.are.same({}, missing)
    end)

    it("has an entry for every method of every class", function()
      local missing = {}
      for obj, mtname in pairs(classes) do
        for _, m in ipairs(methods_of(mtname)) do
          if not documented[obj .. ":" .. m] then missing[#missing + 1] = obj .. ":" .. m end
        end
      end
      table.sort(missing)
      assert.are.same({}, missing)
    end)

    it("names nothing that does not exist", function()
      local stale = {}
      for name, page in pairs(documented) do
        local prefix, sep, k = name:match("^([%w_]+)([.:])([%w_]+)$")
        if sep == "." and modules[prefix] and modules[prefix][k] == nil then
          stale[#stale + 1] = page .. ": " .. name
        elseif sep == ":" and classes[prefix] then
          local found = false
          for _, m in ipairs(methods_of(classes[prefix])) do found = found or m == k end
          if not found then stale[#stale + 1] = page .. ": " .. name end
        end
      end
      table.sort(stale)
      assert.are.same({}, stale)
    end)
  end)

  describe("the command line", function()
    local cli = slurp("docs/cli.md")
    local man = slurp("docs/luarun.1")

    it("documents every option of luarun --help, in docs/cli.md and the man page", function()
      local _, help = util.sh(q(util.bin) .. " --help")
      local opts = {}
      for o in help:gmatch("%s(%-%-?[%w][%w-]*)") do opts[o] = true end
      assert.is_true(opts["--trace"] and opts["--debug"] and opts["-e"], help)
      for o in pairs(opts) do
        assert.truthy(cli:find(o, 1, true), "docs/cli.md does not mention " .. o)
        assert.truthy(man:find(o:gsub("%-", "\\-"), 1, true), "luarun.1 does not mention " .. o)
      end
    end)

    it("documents every LUARUN_* variable the sources read", function()
      local vars = {}
      for _, l in ipairs(lines_of("grep -rhoE 'getenv\\(\"LUARUN_[A-Z_]+' core bindings lua")) do
        vars[l:match("LUARUN_[A-Z_]+")] = true
      end
      assert.is_true(next(vars) ~= nil)
      for v in pairs(vars) do
        assert.truthy(cli:find(v, 1, true), "docs/cli.md does not mention " .. v)
        assert.truthy(man:find((v:gsub("_", "\\_")), 1, true) or man:find(v, 1, true),
                      "luarun.1 does not mention " .. v)
      end
    end)

    it("--help says where the manual is and lists the modules", function()
      local rc, help = util.sh(q(util.bin) .. " --help")
      assert.are.equal(0, rc)
      for _, m in ipairs({"luarun.http", "luarun.fs", "luarun.json", "docs/", "man luarun"}) do
        assert.truthy(help:find(m, 1, true), "--help does not mention " .. m)
      end
    end)
  end)

  it("the README points to docs/ and to nothing outside the repository", function()
    local readme = slurp("README.md")
    assert.truthy(readme:find("docs/", 1, true))
    assert.falsy(readme:find("shared notes", 1, true))
    assert.falsy(readme:find("API.md", 1, true))
    -- Every relative link in the README and in docs/ leads to a file that exists.
    local files = {"README.md"}
    for _, p in ipairs(pages) do files[#files + 1] = p end
    for _, page in ipairs(files) do
      local dir = page:match("^(.*)/[^/]*$") or "."
      for target in slurp(page):gmatch("%]%(([^)#]+)[^)]*%)") do
        if not target:match("^%a+:") then
          local f = io.open(dir .. "/" .. target, "rb")
          assert.truthy(f, page .. " links to a missing " .. target)
          if f then f:close() end
        end
      end
    end
  end)
end)
