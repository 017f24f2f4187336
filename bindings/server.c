/* server.c (bindings): http.serve and the Server object; the Request object is in
 * server_request.c and the response forms in server_respond.c.
 *
 * Each request runs lua/luarun/serve.lua's driver as a task: driver(handler, req)
 * calls the handler and passes what it returned to respond() (server_respond.c),
 * which checks it and hands status, headers and body to the request's protocol
 * (core/server_h1.c or server_h2.c). A streamed body (a function) is pumped by the driver through write(),
 * which parks while the client is slow. The request (core's lr_srv_req) is the task's
 * owner: if the task fails or is cancelled, core answers 500 or gives up the
 * connection, and frees it.
 *
 * The Request userdata holds a pointer that core clears when the request is freed
 * (app.forget); fields are computed when first read and kept in its user value.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "server_req.h"

#define SERVER_MT "luarun.Server"

typedef struct server_box {
  lr_server *srv;
  lr_runtime *rt;
  int handler_ref, driver_ref, anchor_ref;
  uint16_t where;
} server_box;

/* ---- dispatch: a request's head is in ---- */

static int spawn_handler(lua_State *L) {
  lr_srv_req *r = lua_touserdata(L, 1);
  server_box *sb = r->srv->ud;
  req_box *b;
  lr_task *t;
  lua_rawgeti(L, LUA_REGISTRYINDEX, sb->driver_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, sb->handler_ref);
  b = lua_newuserdatauv(L, sizeof *b, 1);
  b->r = NULL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lr_request_mt_ref);
  lua_setmetatable(L, -2);
  sb->rt->where_hint = sb->where;
  t = lr_task_spawn(L, sb->rt, 2, 0);
  b->r = r;
  r->box = b;
  t->owner = &r->owner;
  r->task = t;
  return 0;
}

static int app_dispatch(lua_State *L, lr_srv_req *r) {
  int top = lua_gettop(L);
  server_box *sb = r->srv->ud;
  if (sb == NULL) return -1;
  lua_pushcfunction(L, spawn_handler);
  lua_pushlightuserdata(L, r);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_settop(L, top);
    return -1;
  }
  lua_settop(L, top);
  return r->task ? 0 : -1;
}

static void app_forget(lr_srv_req *r) {
  if (r->box) ((req_box *)r->box)->r = NULL;
  r->box = NULL;
}

static void app_closed(lr_server *srv) {
  server_box *sb = srv->ud;
  /* Nothing of it runs any more: the box may be collected once the script drops it. */
  if (sb && sb->anchor_ref != LUA_NOREF) {
    luaL_unref(sb->rt->L, LUA_REGISTRYINDEX, sb->anchor_ref);
    sb->anchor_ref = LUA_NOREF;
  }
}

static const lr_srv_app app = {app_dispatch, app_forget, app_closed};

/* ---- http.serve ---- */

static server_box *check_server(lua_State *L, const char *fname) {
  server_box *sb = luaL_checkudata(L, 1, SERVER_MT);
  if (sb->srv == NULL) luaL_error(L, "%s: the server is gone", fname);
  return sb;
}

static double opt_seconds(lua_State *L, int idx, const char *name, double def) {
  double v = 0;
  if (lua_getfield(L, idx, name) == LUA_TNIL) {
    lua_pop(L, 1);
    return def;
  }
  if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    return 0; /* false: no limit */
  }
  if (!lua_isnumber(L, -1) || (v = lua_tonumber(L, -1)) < 0 || v != v)
    luaL_error(L, "http.serve: option '%s' must be a number of seconds (or false)", name);
  lua_pop(L, 1);
  return v;
}

static size_t opt_size(lua_State *L, int idx, const char *name, size_t def) {
  lua_Integer v = 0;
  if (lua_getfield(L, idx, name) == LUA_TNIL) {
    lua_pop(L, 1);
    return def;
  }
  if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  if (!lua_isinteger(L, -1) || (v = lua_tointeger(L, -1)) < 0)
    luaL_error(L, "http.serve: option '%s' must be a non-negative integer (or false)", name);
  lua_pop(L, 1);
  return (size_t)v;
}

static int opt_bool(lua_State *L, int idx, const char *name) {
  int v;
  lua_getfield(L, idx, name);
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
    luaL_error(L, "http.serve: option '%s' must be a boolean", name);
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static const char *const serve_options[] = {
  "host", "port", "backlog", "tls", "http2", "max_connections", "max_header_size",
  "max_headers", "max_body_size", "header_timeout", "idle_timeout", "request_timeout",
  "reuse_port", "half_close", NULL
};

static void check_options(lua_State *L, int idx) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int i, ok = 0;
    if (lua_type(L, -2) == LUA_TSTRING)
      for (i = 0; serve_options[i]; i++)
        if (strcmp(lua_tostring(L, -2), serve_options[i]) == 0) ok = 1;
    if (!ok) luaL_error(L, "http.serve: unknown option '%s'", luaL_tolstring(L, -2, NULL));
    lua_pop(L, 1);
  }
}

/* http.serve(opts, handler) -> server, listening. */
static int http_serve(lua_State *L) {
  lr_runtime *rt = lr_runtime_get(L);
  lr_srv_opts o;
  server_box *sb;
  char err[300];
  memset(&o, 0, sizeof o);
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 2);
    lua_newtable(L);
    lua_replace(L, 1);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isfunction(L, 2) && !(luaL_getmetafield(L, 2, "__call") != LUA_TNIL && (lua_pop(L, 1), 1)))
    return luaL_error(L, "http.serve: the handler (argument 2) must be a function or a router, "
                      "not a %s", luaL_typename(L, 2));
  lua_settop(L, 2);
  check_options(L, 1);
  lua_getfield(L, 1, "host");
  snprintf(o.host, sizeof o.host, "%s", lua_isnil(L, -1) ? "127.0.0.1" : luaL_checkstring(L, -1));
  lua_pop(L, 1);
  lua_getfield(L, 1, "port");
  if (!lua_isnil(L, -1) && (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 ||
                            lua_tointeger(L, -1) > 65535))
    return luaL_error(L, "http.serve: option 'port' must be an integer from 0 to 65535");
  o.port = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  o.backlog = (int)opt_size(L, 1, "backlog", 511);
  o.max_connections = opt_size(L, 1, "max_connections", 10000);
  o.max_header_size = opt_size(L, 1, "max_header_size", 16 * 1024);
  o.max_headers = opt_size(L, 1, "max_headers", 100);
  o.max_body_size = opt_size(L, 1, "max_body_size", (size_t)16 << 20);
  o.header_timeout = (uint64_t)(opt_seconds(L, 1, "header_timeout", 10) * 1000);
  o.idle_timeout = (uint64_t)(opt_seconds(L, 1, "idle_timeout", 30) * 1000);
  o.request_timeout = (uint64_t)(opt_seconds(L, 1, "request_timeout", 60) * 1000);
  o.http2 = opt_bool(L, 1, "http2");
  o.reuse_port = opt_bool(L, 1, "reuse_port");
  o.half_close = opt_bool(L, 1, "half_close");
  if (o.max_headers == 0) o.max_headers = 100000;
  if (lua_getfield(L, 1, "tls") != LUA_TNIL) {
    const char *cert, *key;
    if (!lua_istable(L, -1)) return luaL_error(L, "http.serve: option 'tls' must be {cert =, key =}");
    lua_getfield(L, -1, "cert");
    lua_getfield(L, -2, "key");
    cert = lua_tostring(L, -2);
    key = lua_tostring(L, -1);
    if (cert == NULL || key == NULL)
      return luaL_error(L, "http.serve: option 'tls' needs cert and key (PEM file paths)");
    if ((o.tls = lr_tls_server_ctx(cert, key, o.http2 || 1, err, sizeof err)) == NULL) {
      lr_error_push(L, "tls", err);
      lua_pushnil(L);
      lua_insert(L, -2);
      return 2;
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  sb = lua_newuserdatauv(L, sizeof *sb, 0); /* 3 */
  memset(sb, 0, sizeof *sb);
  sb->rt = rt;
  sb->handler_ref = sb->driver_ref = sb->anchor_ref = LUA_NOREF;
  luaL_setmetatable(L, SERVER_MT);
  lua_pushvalue(L, 2);
  sb->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, lua_upvalueindex(1));
  sb->driver_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  sb->where = lr_task_where(L, rt, 1);
  if ((sb->srv = lr_server_listen(rt, &o, &app, sb, err, sizeof err)) == NULL) {
    lr_error_push(L, "connect", err);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushvalue(L, 3);
  sb->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* alive while it serves */
  return 1;
}

static int server_index(lua_State *L) {
  server_box *sb = luaL_checkudata(L, 1, SERVER_MT);
  const char *k = luaL_checkstring(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)), !lua_isnil(L, -1)) return 1;
  if (sb->srv == NULL) return 0;
  if (strcmp(k, "port") == 0) lua_pushinteger(L, sb->srv->port);
  else if (strcmp(k, "host") == 0) lua_pushstring(L, sb->srv->host);
  else if (strcmp(k, "url") == 0)
    lua_pushfstring(L, strchr(sb->srv->host, ':') ? "%s://[%s]:%d" : "%s://%s:%d",
                    sb->srv->o.tls ? "https" : "http", sb->srv->host, sb->srv->port);
  else return 0;
  return 1;
}

static int server_close(lua_State *L) {
  server_box *sb = check_server(L, "server:close");
  double grace = luaL_optnumber(L, 2, 5);
  if (grace < 0 || grace != grace) return luaL_argerror(L, 2, "grace must be >= 0 seconds");
  lr_server_close(sb->srv, grace);
  return 0;
}

/* __close: the second argument is the error passing through (or nil), not a grace. */
static int server_close_scope(lua_State *L) {
  server_box *sb = luaL_checkudata(L, 1, SERVER_MT);
  if (sb->srv) lr_server_close(sb->srv, 5);
  return 0;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = lr_task_self(L);
  (void)status, (void)ctx;
  if (t && t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  return 0;
}

static int server_wait(lua_State *L) {
  server_box *sb = check_server(L, "server:wait");
  lr_task *t = lr_task_enter(L, "server:wait");
  if (sb->srv->closed) return 0;
  lr_waitq_push(&sb->srv->waiters, t);
  return lr_task_park(L, t, NULL, 0, wait_k);
}

static int server_gc(lua_State *L) {
  server_box *sb = lua_touserdata(L, 1);
  if (sb->srv) {
    lr_server *srv = sb->srv;
    sb->srv = NULL;
    if (!srv->closed) lr_server_abort(srv);
    srv->ud = NULL;
    lr_server_unref(srv);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, sb->handler_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, sb->driver_ref);
  sb->handler_ref = sb->driver_ref = LUA_NOREF;
  return 0;
}

static int server_tostring(lua_State *L) {
  server_box *sb = luaL_checkudata(L, 1, SERVER_MT);
  if (sb->srv == NULL) lua_pushliteral(L, "http server (gone)");
  else lua_pushfstring(L, "http server %s:%d%s", sb->srv->host, sb->srv->port,
                       sb->srv->closing ? " (closed)" : "");
  return 1;
}

void lr_server_install(lua_State *L) {
  static const luaL_Reg req_methods[] = {
    {"body", lr_req_body},
    {"websocket", lr_req_websocket},
    {NULL, NULL}
  };
  static const luaL_Reg server_methods[] = {
    {"close", server_close},
    {"wait", server_wait},
    {NULL, NULL}
  };
  int mod = lua_gettop(L);
  /* Request: methods (C here, more added by serve.lua) as __index's upvalue. */
  if (luaL_newmetatable(L, REQUEST_MT)) {
    lr_request_mt = lua_topointer(L, -1);
    lua_pushvalue(L, -1);
    lr_request_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_newlib(L, req_methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "methods"); /* for serve.lua */
    lua_pushcclosure(L, lr_req_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, lr_req_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, lr_req_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, lr_req_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  if (luaL_newmetatable(L, SERVER_MT)) {
    luaL_newlib(L, server_methods);
    lua_pushcclosure(L, server_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, server_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, server_close_scope);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, server_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  /* serve.lua's installer(methods, respond, write, finish, chunk) -> driver, router */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_getfield(L, -1, "luarun.serve");
  lua_remove(L, -2);
  lua_pushliteral(L, "luarun.serve");
  lua_call(L, 1, 1);               /* REQUEST_MT installer */
  lua_getfield(L, -2, "methods");
  lua_pushcfunction(L, lr_req_respond);
  lua_pushcfunction(L, lr_req_write);
  lua_pushcfunction(L, lr_req_finish);
  lua_pushcfunction(L, lr_req_chunk);
  lua_call(L, 5, 2);               /* REQUEST_MT driver router */
  lua_setfield(L, mod, "router");
  lua_pushcclosure(L, http_serve, 1);
  lua_setfield(L, mod, "serve");
  lua_pop(L, 1);
}
