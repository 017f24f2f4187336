---@meta luarun.fs
-- LuaCATS annotations for `require "luarun.fs"`, read by lua-language-server.
-- The manual: docs/reference/fs.md.

local fs = {}

---What a failed call returns as its second value.
---@class luarun.fs.Error
---@field kind "not_found"|"exists"|"permission"|"is_dir"|"not_dir"|"not_empty"|"busy"|"no_space"|"too_many_files"|"io"
---@field message string
---@field code string libuv's name for the error, such as "ENOENT"
---@field path string the (first) path of the call
---@field dest? string the second path of rename and copyfile

---@class luarun.fs.WriteOptions
---@field append? boolean add to the end instead of replacing
---@field atomic? boolean write a temporary file, fsync it, rename it over the path
---@field mode? integer permission bits of a new file (default 0x1b6, i.e. octal 666, less the umask)

---@class luarun.fs.MkdirOptions
---@field parents? boolean create missing parents; an existing directory is fine
---@field mode? integer permission bits (default octal 777, less the umask)

---@class luarun.fs.Stat
---@field size integer bytes
---@field mode integer permission bits only (`& 0x1ff`)
---@field type "file"|"directory"|"link"|"fifo"|"socket"|"char"|"block"|"unknown"
---@field mtime number seconds since the epoch, with fractions
---@field atime number
---@field ctime number
---@field birthtime number 0 where the filesystem does not say
---@field ino integer
---@field dev integer
---@field nlink integer
---@field uid integer
---@field gid integer
---@field blocks integer 512-byte blocks allocated
---@field blksize integer

---@class luarun.fs.DirEntry
---@field name string
---@field type "file"|"directory"|"link"|"fifo"|"socket"|"char"|"block"|"unknown"

---Reads a whole file.
---@async
---@param path string
---@return string? data
---@return luarun.fs.Error? err
function fs.read_file(path) end

---Writes a whole file (replacing it unless `opts.append`).
---@async
---@param path string
---@param data string
---@param opts? luarun.fs.WriteOptions
---@return true? ok
---@return luarun.fs.Error? err
function fs.write_file(path, data, opts) end

---Opens a file: flags as io.open's ("r", "w", "a", each with "+" and "b").
---@async
---@param path string
---@param flags? string default "r"
---@param mode? integer permission bits of a new file (default octal 666, less the umask)
---@return luarun.File? file
---@return luarun.fs.Error? err
function fs.open(path, flags, mode) end

---Information about a file, following symbolic links.
---@async
---@param path string
---@return luarun.fs.Stat? st
---@return luarun.fs.Error? err
function fs.stat(path) end

---Information about a file; a symbolic link is described itself.
---@async
---@param path string
---@return luarun.fs.Stat? st
---@return luarun.fs.Error? err
function fs.lstat(path) end

---The entries of a directory, sorted by name, without "." and "..".
---@async
---@param path string
---@return luarun.fs.DirEntry[]? entries
---@return luarun.fs.Error? err
function fs.readdir(path) end

---@async
---@param path string
---@param opts? luarun.fs.MkdirOptions
---@return true? ok
---@return luarun.fs.Error? err
function fs.mkdir(path, opts) end

---Removes a file or a symbolic link (not a directory: see fs.rmdir).
---@async
---@param path string
---@return true? ok
---@return luarun.fs.Error? err
function fs.remove(path) end

---Removes an empty directory.
---@async
---@param path string
---@return true? ok
---@return luarun.fs.Error? err
function fs.rmdir(path) end

---Renames (moves) a file or directory, replacing a file at `to`.
---@async
---@param from string
---@param to string
---@return true? ok
---@return luarun.fs.Error? err
function fs.rename(from, to) end

---Copies a file's contents, replacing a file at `to`.
---@async
---@param from string
---@param to string
---@return true? ok
---@return luarun.fs.Error? err
function fs.copyfile(from, to) end

---Whether the path exists (following symbolic links).
---@async
---@param path string
---@return boolean? exists
---@return luarun.fs.Error? err
function fs.exists(path) end

---Creates a new directory named `prefix` and six random characters.
---@async
---@param prefix string
---@return string? path
---@return luarun.fs.Error? err
function fs.mkdtemp(prefix) end

---The lines of a file, without their "\n", for a generic for; raises the error
---of fs.open or file:read.
---@async
---@param path string
---@return fun(): string? iterator
---@return nil
---@return nil
---@return luarun.File file closed when the loop ends
function fs.lines(path) end

---An open file. Close it with `file:close()` or a `<close>` variable.
---@class luarun.File
local File = {}

---Reads up to n bytes, at offset or from the file position; nil at the end of the file.
---@async
---@param n integer
---@param offset? integer
---@return string? data
---@return luarun.fs.Error? err
function File:read(n, offset) end

---Writes all of data, at offset or at the file position.
---@async
---@param data string
---@param offset? integer
---@return true? ok
---@return luarun.fs.Error? err
function File:write(data, offset) end

---Flushes the file's data to the disk (fsync).
---@async
---@return true? ok
---@return luarun.fs.Error? err
function File:sync() end

---@async
---@return luarun.fs.Stat? st
---@return luarun.fs.Error? err
function File:stat() end

---@async
---@return true? ok
---@return luarun.fs.Error? err
function File:close() end

return fs
