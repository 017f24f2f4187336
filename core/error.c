/* error.c: the error values of API.md.
 *
 * Every expected failure is a table {kind =, message =, ...} whose metatable
 * (luarun.Error) gives it a readable tostring, so assert(http.get(url)) reports
 * "connect: Connection refused (http://...)" rather than "table: 0x...".
 */
#include <string.h>
#include "lr_base.h"

#define ERROR_MT "luarun.Error"

static int error_tostring(lua_State *L) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_getfield(L, 1, "kind");
  luaL_addvalue(&b);
  luaL_addstring(&b, ": ");
  lua_getfield(L, 1, "message");
  luaL_addvalue(&b);
  if (lua_getfield(L, 1, "url") == LUA_TSTRING ||
      (lua_pop(L, 1), lua_getfield(L, 1, "path") == LUA_TSTRING)) {
    luaL_addstring(&b, " (");
    luaL_addvalue(&b);
    luaL_addstring(&b, ")");
  } else {
    lua_pop(L, 1);
  }
  luaL_pushresult(&b);
  return 1;
}

static void push_metatable(lua_State *L) {
  if (luaL_newmetatable(L, ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
}

void lr_error_push(lua_State *L, const char *kind, const char *message) {
  lua_createtable(L, 0, 3);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, message);
  lua_setfield(L, -2, "message");
  push_metatable(L);
  lua_setmetatable(L, -2);
}

int lr_error_fail(lua_State *L, const char *kind, const char *message) {
  lua_pushnil(L);
  lr_error_push(L, kind, message);
  return 2;
}

int lr_error_is(lua_State *L, int idx, const char *kind) {
  int yes;
  if (lua_type(L, idx) != LUA_TTABLE) return 0;
  lua_getfield(L, idx, "kind");
  yes = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), kind) == 0;
  lua_pop(L, 1);
  return yes;
}

void lr_error_raise_cancelled(lua_State *L) {
  lr_error_push(L, "cancelled", "task cancelled");
  lua_error(L);
}
