# cmake --install build [--prefix DIR]: the executable, the module where Debian's lua5.4
# looks for C modules (<prefix>/lib/lua/5.4, in its package.cpath for /usr/local and
# /usr), the man page, the annotation files for lua-language-server (in a folder that
# `require` never searches, so they cannot shadow the module) and the manual.
# luarocks (luarun-scm-1.rockspec) sets the directories to the rock's own.
set(LUARUN_INSTALL_BINDIR "bin" CACHE STRING "where luarun goes")
set(LUARUN_INSTALL_CMODDIR "lib/lua/5.4" CACHE STRING "where the module luarun.so goes")
set(LUARUN_INSTALL_LMODDIR "share/lua/5.4" CACHE STRING "Lua files: luarun/types goes here")
set(LUARUN_INSTALL_MANDIR "share/man" CACHE STRING "man pages (man1/luarun.1)")
set(LUARUN_INSTALL_DOCDIR "share/doc/luarun" CACHE STRING "the manual (docs/)")

install(TARGETS luarun RUNTIME DESTINATION ${LUARUN_INSTALL_BINDIR})
install(TARGETS luarun_module LIBRARY DESTINATION ${LUARUN_INSTALL_CMODDIR})
install(FILES ${CMAKE_SOURCE_DIR}/docs/luarun.1 DESTINATION ${LUARUN_INSTALL_MANDIR}/man1)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/types/ DESTINATION ${LUARUN_INSTALL_LMODDIR}/luarun/types
        FILES_MATCHING PATTERN "*.lua")
install(DIRECTORY ${CMAKE_SOURCE_DIR}/docs/ DESTINATION ${LUARUN_INSTALL_DOCDIR}
        FILES_MATCHING PATTERN "*.md")
