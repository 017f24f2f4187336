-- luarocks make (in the repository) builds luarun with CMake and installs the module
-- form (luarun.so, for require "luarun" in lua5.4), the luarun executable, the man
-- page and the annotation files into the rock tree. Needs the Debian packages that
-- .ci/setup lists: liblua5.4-dev libuv1-dev libcurl4-openssl-dev libjansson-dev
-- libhttp-parser-dev libnghttp2-dev libwslay-dev libssl-dev cmake.
rockspec_format = "3.0"
package = "luarun"
version = "scm-1"
source = {
  url = "git+file:///dev/null", -- built from a clone with `luarocks make`
}
description = {
  summary = "A Lua 5.4 async runtime on libuv: tasks, gather, timeouts, HTTP client and server, files",
  detailed = [[
luarun runs Lua code as tasks on a libuv event loop. Timers, file calls and HTTP
requests (libcurl's multi interface) suspend the calling task and resume it when the
result is ready, so that many waits overlap. http.serve serves HTTP/1.1, HTTP/2 and
WebSockets with each request's handler as a task. It is both an executable (luarun
script.lua) and a C module for lua5.4 (require "luarun"; lr.run(fn)).
]],
  license = "MIT",
  labels = { "async", "event-loop", "libuv", "http", "http-server", "websocket", "coroutines" },
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "RelWithDebInfo",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    LUARUN_INSTALL_BINDIR = "$(BINDIR)",
    LUARUN_INSTALL_CMODDIR = "$(LIBDIR)",
    LUARUN_INSTALL_LMODDIR = "$(LUADIR)",
    LUARUN_INSTALL_MANDIR = "$(PREFIX)/man",
    LUARUN_INSTALL_DOCDIR = "$(PREFIX)/doc",
  },
  copy_directories = {},
}
