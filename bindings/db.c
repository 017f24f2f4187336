/* db.c: the `luarun.db` module. Its body is written in Lua (lua/luarun/db_front.lua):
 * db.open picks a driver by the URL's scheme, and transactions and pools are built on
 * the drivers' connections the same way for both. The drivers are C modules of their
 * own (db_sqlite.c, db_pg.c), loaded the first time a URL needs one, so a script that
 * stores in SQLite never opens libpq. This file gives the Lua part what it cannot
 * make itself: db.null and error values with luarun's error metatable. */
#include "db_common.h"

/* _error(kind, message [, fields]) -> an error table (fields copied into it). */
static int l_error(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *message = luaL_checkstring(L, 2);
  lr_error_push(L, kind, message);
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_settable(L, -4);
    }
  }
  return 1;
}

/* db.json(value): a parameter sent as JSON text (a Lua array would go as an array). */
static int l_json(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  lua_createtable(L, 1, 0);
  lua_insert(L, 1);
  lua_rawseti(L, 1, 1);
  luaL_setmetatable(L, LR_DB_JSON_MT);
  return 1;
}

int luaopen_luarun_db(lua_State *L) {
  luaL_requiref(L, "luarun", luaopen_luarun, 0);
  lua_pop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_getfield(L, -1, "luarun.db_front");
  lua_remove(L, -2);
  lua_pushliteral(L, "luarun.db_front");
  lua_call(L, 1, 1);
  lua_createtable(L, 0, 2);
  lua_pushlightuserdata(L, LR_DB_NULL);
  lua_setfield(L, -2, "null");
  lua_pushcfunction(L, l_error);
  lua_setfield(L, -2, "error");
  luaL_newmetatable(L, LR_DB_JSON_MT);
  lua_pop(L, 1);
  lua_pushcfunction(L, l_json);
  lua_setfield(L, -2, "json");
  lua_call(L, 1, 1);
  return 1;
}
