--- luarun.fs_lines: fs.lines, written in Lua on top of fs.open and file:read.
-- bindings/fs.c calls this chunk's function with the fs module and stores the
-- result as fs.lines. The iterator suspends the task while it reads: a generic for
-- calls it as an ordinary Lua function, so the yield inside file:read is allowed.
local find, sub, concat = string.find, string.sub, table.concat

local CHUNK = 64 * 1024

return function(fs)
  --- Iterates over the lines of a file, newline stripped, reading 64 KiB at a time.
  -- The last line may lack its newline; a line may be longer than a chunk.
  -- @param path string
  -- @return iterator, nil, nil, file: the file is the generic for's closing value, so
  --   it is closed when the loop ends, breaks or raises.
  -- @raise the error table of fs.open (e.g. kind "not_found") if the file cannot be
  --   opened, and that of file:read on a read error: a for loop cannot take nil, err.
  return function(path)
    if type(path) ~= "string" then
      error(("bad argument #1 to 'lines' (string expected, got %s)"):format(type(path)), 2)
    end
    local f, err = fs.open(path, "r")
    if not f then error(err, 2) end
    local buf, pos, done = "", 1, false

    -- Reads chunks until one holds a newline or the file ends; returns them joined.
    local function fill(rest)
      local parts = { rest }
      repeat
        local chunk, rerr = f:read(CHUNK)
        if chunk == nil then
          if rerr then error(rerr, 0) end
          done = true
          f:close()
          break
        end
        parts[#parts + 1] = chunk
      until find(chunk, "\n", 1, true)
      return concat(parts)
    end

    local function iter()
      while true do
        local nl = find(buf, "\n", pos, true)
        if nl then
          local line = sub(buf, pos, nl - 1)
          pos = nl + 1
          return line
        end
        if done then
          if pos <= #buf then
            local line = sub(buf, pos)
            buf, pos = "", 1
            return line
          end
          return nil
        end
        buf, pos = fill(sub(buf, pos)), 1
      end
    end

    return iter, nil, nil, f
  end
end
