-- bench/db.sh's luarun side on SQLite:  luarun luarun_sqlite.lua WORKLOAD PATH N
-- e_insert: N inserts in one transaction; e_select: N point selects; one statement a
-- call from one task. e_tick: 100 tasks share the N selects while a 10 ms ticker runs:
-- prints the worst tick lateness in ms.
local lr = require "luarun"
local db = require "luarun.db"
local W, PATH, N = arg[1], arg[2], math.tointeger(tonumber(arg[3]))
local INSERT = "INSERT INTO kv (id, name, score) VALUES (?, ?, ?)"
local SELECT = "SELECT name, score FROM kv WHERE id = ?"

local conn = assert(db.open("sqlite:" .. PATH))
assert(conn:exec("CREATE TABLE kv (id INTEGER PRIMARY KEY, name TEXT, score REAL)"))
local function insert_all(c)
  for i = 1, N do assert(c:exec(INSERT, i, "name " .. i, i * 0.5)) end
end
local function selects(w, step)
  for k = w, N - 1, step do
    local i = k * 7919 % N + 1
    assert(assert(conn:query(SELECT, i))[1].score == i * 0.5)
  end
end

local result
if W == "e_insert" then
  local t0 = lr.now()
  conn:transaction(insert_all)
  result = lr.now() - t0
  assert(assert(conn:query("SELECT count(*) AS n FROM kv"))[1].n == N)
else
  conn:transaction(insert_all)
  if W == "e_select" then
    local t0 = lr.now()
    selects(0, 1)
    result = lr.now() - t0
  elseif W == "e_tick" then
    local worst, done = 0, false
    local ticker = lr.spawn(function()
      local due = lr.now()
      while not done do
        due = due + 0.01
        lr.sleep(math.max(0, due - lr.now()))
        worst = math.max(worst, lr.now() - due)
      end
    end)
    local fns = {}
    for w = 0, 99 do fns[#fns + 1] = function() selects(w, 100) end end
    lr.gather(fns)
    done = true
    ticker:wait()
    result = worst * 1000
  else
    error("unknown workload " .. W)
  end
end
conn:close()
print(string.format("result %.4f", result))
