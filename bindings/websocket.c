/* websocket.c: the luarun.WebSocket class (both ends: http.websocket on the client,
 * req:websocket() in a server's handler) and http.websocket itself.
 *
 * The userdata is a box holding a pointer to the lr_ws of core/ws.c, which outlives
 * it while its stream closes. Each method checks its arguments (misuse raises naming
 * the method), then core/ws.c does the work and the waiting.
 */
#include <string.h>
#include "bindings.h"
#include "lr_net.h"

/* The class's metatable, compared by address: luaL_checkudata looks the name up in
 * the registry at every call, which was 9 % of an echoed message's instructions. */
static const void *ws_mt;

static lr_ws **to_box(lua_State *L) {
  void *p = lua_touserdata(L, 1);
  if (p && ws_mt && lua_getmetatable(L, 1)) {
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt == ws_mt) return p;
  }
  return luaL_checkudata(L, 1, LR_WS_MT);
}

static lr_ws *check_ws(lua_State *L, const char *fname) {
  lr_ws **box = to_box(L);
  if (*box == NULL) luaL_error(L, "%s: the WebSocket was collected", fname);
  return *box;
}

static int ws_send_any(lua_State *L, int binary) {
  const char *fname = binary ? "WebSocket:send_binary" : "WebSocket:send";
  lr_ws *ws = check_ws(L, fname);
  if (lua_type(L, 2) != LUA_TSTRING)
    return luaL_error(L, "%s: the message must be a string (got %s)", fname,
                      luaL_typename(L, 2));
  lua_settop(L, 2);
  return lr_ws_send(L, ws, binary);
}

/* ws:send(text) -> true | nil, err (kind "closed") */
static int ws_send(lua_State *L) {
  return ws_send_any(L, 0);
}

/* ws:send_binary(bytes) -> true | nil, err */
static int ws_send_binary(lua_State *L) {
  return ws_send_any(L, 1);
}

/* ws:receive() -> message, "text"|"binary" | nil, err (kind "closed", code, reason).
 * Also the iterator of ws:messages() (called with the ws and the last message). */
static int ws_receive(lua_State *L) {
  lr_ws *ws = check_ws(L, "WebSocket:receive");
  lua_settop(L, 1);
  return lr_ws_receive(L, ws);
}

/* for msg, kind in ws:messages() do ... end: ends when the WebSocket closes. */
static int ws_messages(lua_State *L) {
  check_ws(L, "WebSocket:messages");
  lua_pushcfunction(L, ws_receive);
  lua_pushvalue(L, 1);
  return 2;
}

/* ws:ping([data]) -> true | nil, err. The pong is not waited for. */
static int ws_ping(lua_State *L) {
  lr_ws *ws = check_ws(L, "WebSocket:ping");
  size_t n = 0;
  const char *p = "";
  if (!lua_isnoneornil(L, 2)) {
    if (lua_type(L, 2) != LUA_TSTRING)
      return luaL_error(L, "WebSocket:ping: data must be a string (got %s)", luaL_typename(L, 2));
    p = lua_tolstring(L, 2, &n);
    if (n > 125) return luaL_error(L, "WebSocket:ping: data is limited to 125 bytes");
  }
  return lr_ws_ping(L, ws, p, n);
}

static int valid_code(lua_Integer c) {
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

/* ws:close([code [, reason]]) -> true: sends the close frame and waits for the
 * handshake to end (at most the close timeout, 5 s by default). */
static int ws_close(lua_State *L) {
  lr_ws *ws = check_ws(L, "WebSocket:close");
  lua_Integer code = 1000;
  size_t n = 0;
  const char *reason = NULL;
  if (!lua_isnoneornil(L, 2)) {
    if (!lua_isinteger(L, 2) || !valid_code(code = lua_tointeger(L, 2)))
      return luaL_error(L, "WebSocket:close: code must be 1000-1003, 1007-1014 or "
                        "3000-4999 (got %s)", luaL_tolstring(L, 2, NULL));
  }
  if (!lua_isnoneornil(L, 3)) {
    if (lua_type(L, 3) != LUA_TSTRING)
      return luaL_error(L, "WebSocket:close: reason must be a string (got %s)",
                        luaL_typename(L, 3));
    reason = lua_tolstring(L, 3, &n);
    if (n > 123) return luaL_error(L, "WebSocket:close: reason is limited to 123 bytes");
  }
  lua_settop(L, 1);
  return lr_ws_close(L, ws, (int)code, reason, n);
}

/* __close: starts the close handshake and does not wait. */
static int ws_closevar(lua_State *L) {
  lr_ws **box = luaL_checkudata(L, 1, LR_WS_MT);
  if (*box) lr_ws_close_now(*box, 1000, NULL, 0);
  return 0;
}

static int ws_gc(lua_State *L) {
  lr_ws **box = luaL_checkudata(L, 1, LR_WS_MT);
  if (*box) lr_ws_drop(*box);
  *box = NULL;
  return 0;
}

static int ws_tostring(lua_State *L) {
  lr_ws **box = luaL_checkudata(L, 1, LR_WS_MT);
  lua_pushfstring(L, "luarun.WebSocket (%s)", *box && lr_ws_is_open(*box) ? "open" : "closed");
  return 1;
}

void lr_websocket_install(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"send", ws_send}, {"send_binary", ws_send_binary}, {"receive", ws_receive},
    {"messages", ws_messages}, {"ping", ws_ping}, {"close", ws_close}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
    {"__close", ws_closevar}, {"__gc", ws_gc}, {"__tostring", ws_tostring}, {NULL, NULL}};
  lr_register_class(L, LR_WS_MT, methods, meta);
  luaL_getmetatable(L, LR_WS_MT);
  ws_mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  lua_pushcfunction(L, lr_ws_connect);
  lua_setfield(L, -2, "websocket");
}
