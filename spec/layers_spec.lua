-- The layers of core/ (issue 20): each file includes the header of its layer, layers
-- point one way (down), and neither the scheduler nor a subsystem names an observer.
-- The layer of each file is the table in core/luarun.h's opening comment, so a new
-- file must be placed in it.
local util = require "support.util"

local slurp = util.slurp

local function core_files(ext)
  local p = assert(io.popen("ls core/*." .. ext))
  local list = {}
  for l in p:lines() do list[#list + 1] = l:match("core/(.*)") end
  p:close()
  return list
end

-- Layer rank of each header, and the header each layer's files include.
local rank = {["lr_base.h"] = 0, ["lr_sched.h"] = 1, ["lr_prims.h"] = 2, ["lr_subsys.h"] = 2,
              ["curl_api.h"] = 2, ["lr_net.h"] = 2,
              ["lr_sqlite.h"] = 2, ["lr_pg.h"] = 2, ["lr_html.h"] = 2, ["lr_observe.h"] = 3, ["luarun.h"] = 4}

-- {file = header} from the table in luarun.h: lines "  lr_x.h   a.c b.c   words".
local function layer_table()
  local text = slurp("core/luarun.h"):match("^/%*(.-)%*/")
  local owner, map = nil, {}
  for line in text:gmatch("[^\n]+") do
    local h = line:match("^%s*%*%s+(lr_%w+%.h)%s")
    if h then owner = h end
    if line:match("^%s*%*%s+cli%.c") then owner = "luarun.h" end
    if owner then
      for f in line:gmatch("([%w_]+%.c)") do map[f] = map[f] or owner end
      if line:match("with curl_api%.h") then
        map["http.c"], map["curl_api.c"] = "curl_api.h", "curl_api.h"
      end
    end
  end
  return map
end

local function includes(path)
  local list = {}
  for h in slurp(path):gmatch('#include "([^"]+)"') do list[#list + 1] = h:match("[^/]+$") end
  return list
end

describe("core/ layers", function()
  local map = layer_table()

  it("places every file of core/ in a layer", function()
    local missing = {}
    for _, f in ipairs(core_files("c")) do
      if not map[f] then missing[#missing + 1] = f end
    end
    assert.are.same({}, missing)
  end)

  it("each file includes its layer's header and nothing above it", function()
    local bad = {}
    for _, f in ipairs(core_files("c")) do
      local mine = map[f]
      for _, h in ipairs(includes("core/" .. f)) do
        if rank[h] and rank[h] > rank[mine] then
          bad[#bad + 1] = f .. " (" .. mine .. ") includes " .. h
        end
      end
    end
    table.sort(bad)
    assert.are.same({}, bad)
  end)

  it("headers include only their layer and the layers below", function()
    local bad = {}
    for _, h in ipairs(core_files("h")) do
      for _, inc in ipairs(includes("core/" .. h)) do
        if rank[h] and rank[inc] and rank[inc] > rank[h] then
          bad[#bad + 1] = h .. " includes " .. inc
        end
      end
    end
    assert.are.same({}, bad)
  end)

  it("the scheduler and the subsystems name no observer", function()
    local bad = {}
    for _, f in ipairs(core_files("c")) do
      local r = rank[map[f]]
      if r and r <= 2 then
        local text = slurp("core/" .. f)
        for _, name in ipairs({"lr_trace_", "lr_watchdog_", "lr_tasks_", "rt%->trace",
                               "rt%->watchdog"}) do
          if text:find(name) then bad[#bad + 1] = f .. " names " .. name:gsub("%%", "") end
        end
      end
    end
    assert.are.same({}, bad)
  end)
end)
