/* modules.h: every C module of luarun, as LR_MODULE(name, luaopen function).
 * luaopen_luarun puts each in package.preload, so `require "luarun.fs"` works in the
 * executable; in stock lua5.4, luarun.so exports the same luaopen_ functions, which
 * Lua's all-in-one loader finds. Add one line per module. */
LR_MODULE("luarun.json", luaopen_luarun_json)
LR_MODULE("luarun.fs", luaopen_luarun_fs)
LR_MODULE("luarun.http", luaopen_luarun_http)
LR_MODULE("luarun.db", luaopen_luarun_db)
LR_MODULE("luarun.db.pg", luaopen_luarun_db_pg)
LR_MODULE("luarun.db.sqlite", luaopen_luarun_db_sqlite)
LR_MODULE("luarun.html", luaopen_luarun_html)
