/* bindings.h: private header of bindings/, the Lua modules built on core/. */
#ifndef LUARUN_BINDINGS_H
#define LUARUN_BINDINGS_H

#include "../core/luarun.h"

/* coroutine.c: makes luarun waits work inside the script's own coroutines. */
void lr_coroutine_patch(lua_State *L);

/* One luaopen_ per module: the shape of every Lua library. */
int luaopen_luarun(lua_State *L);


/* ---- json.c (luarun.json), callable from any Lua state, pool workers included ---- */
/* JSON null: json.null is a light userdata pointing here, the same in every state. */
extern char lr_json_null_sentinel;
#define LR_JSON_NULL ((void *)&lr_json_null_sentinel)
/* Pushes the JSON text of the value at idx. Raises a Lua error (naming the path of
 * the offending value) on cycles, NaN/inf, invalid UTF-8, bad keys, or no memory. */
void lr_json_encode(lua_State *L, int idx);
/* Pushes the value decoded from s[0..n). Raises "json.decode: <why> at line L,
 * column C (byte B)" on invalid JSON. Needs no runtime: works in any lua_State. */
void lr_json_decode(lua_State *L, const char *s, size_t n);
int luaopen_luarun_json(lua_State *L);
/* Length of the valid UTF-8 sequence at s (at most n bytes, n > 0), or 0 if invalid
 * (overlong forms, surrogates, past U+10FFFF). */
size_t lr_utf8_len(const unsigned char *s, size_t n);

/* The value of hex digit c, or -1. */
static inline int lr_hex_digit(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* ---- pool.c: lr.run_in_pool and lr.pool_size ---- */
/* Sets run_in_pool and pool_size on the table at the top of the stack (the luarun
 * module table, from luaopen_luarun). */
int lr_pool_install(lua_State *L);

/* ---- websocket.c: the luarun.WebSocket class ---- */
/* Registers the class and sets `websocket` on the table at the top of the stack (the
 * luarun.http module table, from luaopen_luarun_http). */
void lr_websocket_install(lua_State *L);

/* ---- http_url.c: http.url and http.robots ---- */
/* Sets url (parse, join, encode, decode, normalize) and robots on the table at the top
 * of the stack (luarun.http's). */
void lr_http_url_install(lua_State *L);
/* Replaces the table at -1 with its application/x-www-form-urlencoded encoding, keys
 * sorted, array values repeating their key (http_request.c, for the query and form
 * options); raises naming fname and the option name on a value it cannot encode. */
void lr_http_encode_form(lua_State *L, const char *fname, const char *name);
/* Pushes the table decoded from a=1&b=2&a=3 ('+' is a space, malformed escapes kept,
 * repeated keys give a list in order) (server_request.c, for req.query). */
void lr_http_push_form(lua_State *L, const char *s, size_t n);

/* ---- server.c: http.serve, http.router ---- */
/* Sets serve and router on the table at the top of the stack (luarun.http's). */
void lr_server_install(lua_State *L);

#endif
