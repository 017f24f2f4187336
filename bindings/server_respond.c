/* server_respond.c (bindings): the response forms a handler may return, checked
 * and handed to the request's protocol (core/server_h1.c or server_h2.c), and the
 * writes of a streamed body, which park while the client is slow.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "server_req.h"

/* ---- responding ---- */

#define MAX_RESPONSE_HEADERS 256

/* 1 if s[0..n) is an HTTP token (a header name). */
static int is_token(const char *s, size_t n) {
  static const char extra[] = "!#$%&'*+-.^_`|~";
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          (c && strchr(extra, c))))
      return 0;
  }
  return 1;
}

static int is_field_value(const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 0;
  return 1;
}

typedef struct hdrset {
  const char *p[2 * MAX_RESPONSE_HEADERS];
  size_t len[2 * MAX_RESPONSE_HEADERS];
  int n;
  int has_type;
} hdrset;

static void add_header(lua_State *L, hdrset *h, int nidx, int vidx) {
  size_t nl, vl;
  const char *name = lua_tolstring(L, nidx, &nl), *value;
  if (lua_type(L, vidx) != LUA_TSTRING && lua_type(L, vidx) != LUA_TNUMBER)
    luaL_error(L, "http.serve: the value of response header '%s' is a %s (a string or a "
               "list of strings expected)", name, luaL_typename(L, vidx));
  value = lua_tolstring(L, vidx, &vl); /* a number becomes a string in place: fine */
  if (!is_token(name, nl)) luaL_error(L, "http.serve: invalid response header name '%s'", name);
  if (!is_field_value(value, vl))
    luaL_error(L, "http.serve: response header '%s' has a line break or NUL in its value", name);
  /* The server frames the body itself. */
  if ((nl == 14 && strncasecmp(name, "content-length", 14) == 0) ||
      (nl == 17 && strncasecmp(name, "transfer-encoding", 17) == 0) ||
      (nl == 10 && strncasecmp(name, "connection", 10) == 0))
    return;
  if (nl == 12 && strncasecmp(name, "content-type", 12) == 0) h->has_type = 1;
  if (h->n >= MAX_RESPONSE_HEADERS) luaL_error(L, "http.serve: more than %d response headers",
                                               MAX_RESPONSE_HEADERS);
  h->p[2 * h->n] = name;
  h->len[2 * h->n] = nl;
  h->p[2 * h->n + 1] = value;
  h->len[2 * h->n + 1] = vl;
  h->n++;
}

/* Collects the headers table at idx (values: strings, numbers or lists of them). The
 * strings stay alive in the table, which is on the stack until the response is sent. */
static void collect_headers(lua_State *L, int idx, hdrset *h) {
  if (lua_isnoneornil(L, idx)) return;
  if (!lua_istable(L, idx))
    luaL_error(L, "http.serve: response headers must be a table, not a %s", luaL_typename(L, idx));
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "http.serve: response header names must be strings");
    if (lua_istable(L, -1)) {
      lua_Integer i, n = (lua_Integer)lua_rawlen(L, -1);
      for (i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        add_header(L, h, -3, -1);
        lua_pop(L, 1); /* a string: still referenced by the list */
      }
    } else {
      add_header(L, h, -2, -1);
    }
    lua_pop(L, 1);
  }
}

/* respond(req, ...): what the handler returned. Returns the body function when the
 * body is streamed (the driver pumps it), else nothing. */
int lr_req_respond(lua_State *L) {
  req_box *b = lr_req_to(L, 1);
  lr_srv_req *r = b->r;
  static hdrset h; /* the loop's thread only; filled and used before returning */
  int status = 200, hidx = 0, bidx = 0;
  const char *type = "text/plain; charset=utf-8";
  if (r && r->upgraded) { /* the driver closes the handler's WebSocket */
    lua_pushnil(L);
    lr_req_push_cache(L, 1);
    lua_getfield(L, -1, "_websocket");
    lua_remove(L, -2);
    return 2;
  }
  if (r == NULL || r->responded || r->conn == NULL) return 0;
  h.n = 0;
  h.has_type = 0;
  switch (lua_type(L, 2)) {
  case LUA_TNUMBER:
    if (!lua_isinteger(L, 2) || lua_tointeger(L, 2) < 100 || lua_tointeger(L, 2) > 999)
      return luaL_error(L, "http.serve: status %s is not an integer from 100 to 999",
                        lua_tostring(L, 2));
    status = (int)lua_tointeger(L, 2);
    lua_settop(L, 4);
    hidx = 3;
    bidx = 4;
    break;
  case LUA_TSTRING:
    lua_settop(L, 2);
    bidx = 2;
    break;
  case LUA_TTABLE:
    lua_settop(L, 2);
    if (lua_getfield(L, 2, "status") != LUA_TNIL) { /* 3 */
      if (!lua_isinteger(L, 3) || lua_tointeger(L, 3) < 100 || lua_tointeger(L, 3) > 999)
        return luaL_error(L, "http.serve: response status must be an integer from 100 to 999");
      status = (int)lua_tointeger(L, 3);
    }
    lua_getfield(L, 2, "headers"); /* 4 */
    hidx = 4;
    if (lua_getfield(L, 2, "json") != LUA_TNIL) { /* 5 */
      lr_json_encode(L, 5);                       /* 6 */
      type = "application/json";
    } else {
      lua_getfield(L, 2, "body"); /* 6 */
    }
    bidx = 6;
    break;
  case LUA_TNIL:
  case LUA_TNONE:
    status = 204;
    lua_settop(L, 1);
    break;
  default:
    return luaL_error(L, "http.serve: a handler returned a %s (expected a string, a status "
                      "with headers and body, or a table)", luaL_typename(L, 2));
  }
  if (bidx && !lua_isnil(L, bidx) && !lua_isstring(L, bidx) && !lua_isfunction(L, bidx))
    return luaL_error(L, "http.serve: a response body must be a string or a function, not a %s",
                      luaL_typename(L, bidx));
  if (hidx) collect_headers(L, hidx, &h);
  if (!h.has_type && bidx && lua_isstring(L, bidx) && h.n < MAX_RESPONSE_HEADERS) {
    h.p[2 * h.n] = "content-type";
    h.len[2 * h.n] = 12;
    h.p[2 * h.n + 1] = type;
    h.len[2 * h.n + 1] = strlen(type);
    h.n++;
  }
  if (bidx && lua_isfunction(L, bidx)) {
    r->proto->respond(r, status, h.p, h.len, h.n, NULL, 0, -1, 0);
    lua_pushvalue(L, bidx);
    return 1;
  } else {
    size_t len = 0;
    const char *body = bidx && lua_isstring(L, bidx) ? lua_tolstring(L, bidx, &len) : "";
    r->proto->respond(r, status, h.p, h.len, h.n, body, len, (int64_t)len, 1);
  }
  return 0;
}

/* write(req, chunk): more of a streamed body; parks while the client is slow. */
static int write_k(lua_State *L, int status, lua_KContext ctx);
static int write_now(lua_State *L) {
  req_box *b = lr_req_to(L, 1);
  lr_srv_req *r = b->r;
  size_t n;
  const char *p;
  lr_task *t = lr_task_enter(L, "http.serve body writer");
  if (lua_type(L, 2) != LUA_TSTRING && lua_type(L, 2) != LUA_TNUMBER)
    return luaL_error(L, "http.serve: a body function returned a %s (a string, or nil at the "
                      "end, expected)", luaL_typename(L, 2));
  if (r == NULL || r->finished || r->conn == NULL)
    return lr_error_fail(L, "closed", "the client is gone");
  if (r->proto->congested(r)) {
    lr_waitq_push(&r->waiters, t);
    return lr_task_park(L, t, NULL, 0, write_k);
  }
  p = lua_tolstring(L, 2, &n);
  if (n > 0 && r->proto->write(r, p, n, 0) < 0)
    return lr_error_fail(L, "closed", "the client is gone");
  lua_pushboolean(L, 1);
  return 1;
}

static int write_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = lr_task_self(L);
  (void)status, (void)ctx;
  if (t && t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  lua_settop(L, 2);
  return write_now(L);
}

int lr_req_write(lua_State *L) {
  lua_settop(L, 2);
  return write_now(L);
}

int lr_req_finish(lua_State *L) {
  req_box *b = lr_req_to(L, 1);
  if (b->r && !b->r->finished && b->r->conn) b->r->proto->write(b->r, NULL, 0, 1);
  return 0;
}
