/* server.c (bindings): http.serve, the Server and Request objects, and the response
 * forms a handler may return.
 *
 * Each request runs lua/luarun/serve.lua's driver as a task: driver(handler, req)
 * calls the handler and passes what it returned to respond() here, which checks it
 * and hands status, headers and body to the request's protocol (core/server_h1.c or
 * server_h2.c). A streamed body (a function) is pumped by the driver through write(),
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
#include "bindings.h"

#define SERVER_MT "luarun.Server"
#define REQUEST_MT "luarun.Request"

typedef struct server_box {
  lr_server *srv;
  lr_runtime *rt;
  int handler_ref, driver_ref, anchor_ref;
  uint16_t where;
} server_box;

typedef struct req_box {
  lr_srv_req *r;
} req_box;

/* The Request metatable: its address for a quick check (luaL_checkudata looks the
 * name up in the registry at every call: 700 instructions a request) and a registry
 * reference to set it with. One per process is enough: luarun.http is loaded into
 * one Lua state per runtime, and a second state gets its own on install. */
static const void *request_mt;
static int request_mt_ref = LUA_NOREF;

static req_box *to_req(lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  if (p && lua_getmetatable(L, idx)) {
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt == request_mt) return p;
  }
  return luaL_checkudata(L, idx, REQUEST_MT); /* raises the usual message */
}

/* ---- requests ---- */

static lr_srv_req *check_req(lua_State *L, const char *fname) {
  req_box *b = to_req(L, 1);
  if (b->r == NULL) luaL_error(L, "%s: the request is over (its handler returned)", fname);
  return b->r;
}

/* Pushes the request's field cache (its user value), made on first use. */
static void push_cache(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_getiuservalue(L, idx, 1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, idx, 1);
  }
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Pushes s[0..n) percent-decoded ('+' is a space when plus). */
static void push_decoded(lua_State *L, const char *s, size_t n, int plus) {
  luaL_Buffer b;
  size_t i;
  luaL_buffinit(L, &b);
  for (i = 0; i < n; i++) {
    int c = (unsigned char)s[i], h, l;
    if (c == '%' && i + 2 < n + 0 + 1 && i + 2 <= n - 1 + 0 &&
        (h = hexval(s[i + 1])) >= 0 && (l = hexval(s[i + 2])) >= 0) {
      luaL_addchar(&b, (char)(h * 16 + l));
      i += 2;
    } else if (c == '+' && plus) {
      luaL_addchar(&b, ' ');
    } else {
      luaL_addchar(&b, (char)c);
    }
  }
  luaL_pushresult(&b);
}

/* Pushes a table of a=1&b=2&a=3 (repeated keys give a list, in order). */
static void push_urlencoded(lua_State *L, const char *s, size_t n) {
  const char *end = s + n;
  lua_newtable(L);
  while (s < end) {
    const char *amp = memchr(s, '&', (size_t)(end - s)), *eq;
    size_t len;
    if (amp == NULL) amp = end;
    len = (size_t)(amp - s);
    if (len > 0) {
      eq = memchr(s, '=', len);
      push_decoded(L, s, eq ? (size_t)(eq - s) : len, 1);
      if (eq) push_decoded(L, eq + 1, (size_t)(amp - eq - 1), 1);
      else lua_pushliteral(L, "");
      lua_pushvalue(L, -2);
      switch (lua_rawget(L, -4)) {
      case LUA_TNIL:
        lua_pop(L, 1);
        lua_rawset(L, -3);
        break;
      case LUA_TTABLE:
        lua_insert(L, -2);
        lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
        lua_pop(L, 2);
        break;
      default: /* a second value: make a list */
        lua_createtable(L, 2, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 2);
        lua_rawset(L, -3);
        break;
      }
    }
    s = amp + 1;
  }
}

static void push_target_part(lua_State *L, lr_srv_req *r, int want_query) {
  const char *t = r->head + r->target;
  const char *q = memchr(t, '?', r->target_len);
  size_t plen = q ? (size_t)(q - t) : r->target_len;
  if (want_query) {
    if (q) push_urlencoded(L, q + 1, r->target_len - plen - 1);
    else lua_newtable(L);
  } else {
    lua_pushlstring(L, t, plen);
  }
}

static void push_headers(lua_State *L, lr_srv_req *r) {
  uint32_t i;
  lua_createtable(L, 0, (int)r->nhdrs);
  for (i = 0; i < r->nhdrs; i++) {
    const lr_srv_hdr *h = &r->hdrs[i];
    lua_pushlstring(L, r->head + h->name, h->name_len);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) { /* repeated: join as RFC 9110 says */
      int cookie = h->name_len == 6 && memcmp(r->head + h->name, "cookie", 6) == 0;
      lua_pushstring(L, cookie ? "; " : ", ");
      lua_pushlstring(L, r->head + h->value, h->value_len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, r->head + h->value, h->value_len);
    }
    lua_rawset(L, -3);
  }
}

static void push_header_list(lua_State *L, lr_srv_req *r) {
  uint32_t i;
  lua_createtable(L, (int)r->nhdrs, 0);
  for (i = 0; i < r->nhdrs; i++) {
    const lr_srv_hdr *h = &r->hdrs[i];
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, r->head + h->name, h->name_len);
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, r->head + h->value, h->value_len);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* req.field: methods, then the cache, then computed from the request's head. */
static int req_index(lua_State *L) {
  req_box *b = to_req(L, 1);
  lr_srv_req *r = b->r;
  const char *k;
  size_t kl;
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  lua_pop(L, 1);
  if (lua_getiuservalue(L, 1, 1) == LUA_TTABLE) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL) return 1;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (r == NULL || (k = lua_tolstring(L, 2, &kl)) == NULL) return 0;
  switch (k[0]) {
  case 'm':
    if (strcmp(k, "method") == 0) {
      lua_pushlstring(L, r->head + r->method_off, r->method_len);
      return 1;
    }
    break;
  case 'p':
    if (strcmp(k, "path") == 0) {
      const char *t = r->head + r->target, *q = memchr(t, '?', r->target_len);
      push_decoded(L, t, q ? (size_t)(q - t) : r->target_len, 0);
      goto cache;
    }
    break;
  case 'r':
    if (strcmp(k, "raw_path") == 0) {
      push_target_part(L, r, 0);
      return 1;
    }
    if (strcmp(k, "remote_addr") == 0 || strcmp(k, "remote_port") == 0) {
      const char *colon = strrchr(r->peer, ':');
      if (colon == NULL) return 0;
      if (k[7] == 'p') {
        lua_pushinteger(L, atoi(colon + 1));
      } else if (r->peer[0] == '[') {
        lua_pushlstring(L, r->peer + 1, (size_t)(colon - r->peer - 2));
      } else {
        lua_pushlstring(L, r->peer, (size_t)(colon - r->peer));
      }
      return 1;
    }
    break;
  case 'q':
    if (strcmp(k, "query") == 0) {
      push_target_part(L, r, 1);
      goto cache;
    }
    if (strcmp(k, "query_string") == 0) {
      const char *t = r->head + r->target, *q = memchr(t, '?', r->target_len);
      if (q) lua_pushlstring(L, q + 1, r->target_len - (size_t)(q + 1 - t));
      else lua_pushliteral(L, "");
      return 1;
    }
    break;
  case 't':
    if (strcmp(k, "target") == 0) {
      lua_pushlstring(L, r->head + r->target, r->target_len);
      return 1;
    }
    break;
  case 'h':
    if (strcmp(k, "headers") == 0) {
      push_headers(L, r);
      goto cache;
    }
    if (strcmp(k, "header_list") == 0) {
      push_header_list(L, r);
      goto cache;
    }
    if (strcmp(k, "http_version") == 0) {
      if (r->http_major == 2) lua_pushliteral(L, "2");
      else lua_pushfstring(L, "%d.%d", r->http_major, r->http_minor);
      return 1;
    }
    break;
  }
  return 0;
cache:
  push_cache(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return 1;
}

/* req.params = ... (the router) and any field a script adds. */
static int req_newindex(lua_State *L) {
  to_req(L, 1);
  lua_settop(L, 3);
  push_cache(L, 1);
  lua_insert(L, 2);
  lua_rawset(L, 2);
  return 0;
}

static int req_gc(lua_State *L) {
  req_box *b = lua_touserdata(L, 1);
  if (b->r) b->r->box = NULL;
  b->r = NULL;
  return 0;
}

static int req_tostring(lua_State *L) {
  req_box *b = to_req(L, 1);
  if (b->r == NULL) {
    lua_pushliteral(L, "http request (over)");
  } else {
    lua_pushliteral(L, "http request ");
    lua_pushlstring(L, b->r->head + b->r->method_off, b->r->method_len);
    lua_pushliteral(L, " ");
    lua_pushlstring(L, b->r->head + b->r->target, b->r->target_len);
    lua_concat(L, 4);
  }
  return 1;
}

/* ---- reading the body ---- */

static int body_failed(lua_State *L, lr_srv_req *r) {
  switch (r->body_error) {
  case LR_BODY_TOO_LARGE:
    lr_error_push(L, "too_large", "the request body is larger than max_body_size");
    lua_pushinteger(L, 413);
    break;
  case LR_BODY_BAD:
    lr_error_push(L, "protocol", "the request body is malformed");
    lua_pushinteger(L, 400);
    break;
  default:
    lr_error_push(L, "closed", "the client closed the connection before the body ended");
    lua_pushinteger(L, 400);
    break;
  }
  lua_setfield(L, -2, "status");
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

static const char BODY_KEY[] = "\0body";

static int body_k(lua_State *L, int status, lua_KContext ctx);

/* Parks until more of the body is in (k checks again). */
static int wait_body(lua_State *L, lr_srv_req *r, lua_KFunction k, lua_KContext ctx) {
  lr_task *t = lr_task_enter(L, "req:body");
  if (r->proto->want_body) r->proto->want_body(r);
  lr_waitq_push(&r->waiters, t);
  return lr_task_park(L, t, NULL, ctx, k);
}

static int req_body_now(lua_State *L) {
  lr_srv_req *r = check_req(L, "req:body");
  push_cache(L, 1);
  if (lua_getfield(L, -1, BODY_KEY) == LUA_TSTRING) return 1;
  lua_pop(L, 2);
  if (!r->body_done) return wait_body(L, r, body_k, 0);
  if (r->body_error) return body_failed(L, r);
  lua_pushlstring(L, r->body ? r->body + r->body_pos : "", r->body_len - r->body_pos);
  if (r->proto->consumed) r->proto->consumed(r, r->body_len - r->body_pos);
  r->body_pos = r->body_len;
  free(r->body); /* kept as the Lua string from now on */
  r->body = NULL;
  r->body_len = r->body_pos = r->body_cap = 0;
  push_cache(L, 1);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, BODY_KEY);
  lua_pop(L, 1);
  return 1;
}

static int body_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = lr_task_self(L);
  (void)status, (void)ctx;
  if (t && t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  lua_settop(L, 1);
  return req_body_now(L);
}

static int req_body(lua_State *L) {
  lua_settop(L, 1);
  return req_body_now(L);
}

/* The next piece of the body, or nil at its end (nil, err if it never ends). */
static int chunk_k(lua_State *L, int status, lua_KContext ctx);
static int req_chunk_now(lua_State *L) {
  lr_srv_req *r = check_req(L, "req:body_chunks");
  size_t n = r->body_len - r->body_pos;
  push_cache(L, 1);
  if (lua_getfield(L, -1, BODY_KEY) == LUA_TSTRING) return 0; /* body() took it all */
  lua_pop(L, 2);
  if (n > 0) {
    lua_pushlstring(L, r->body + r->body_pos, n);
    r->body_pos = r->body_len;
    if (r->proto->consumed) r->proto->consumed(r, n);
    return 1;
  }
  if (!r->body_done) return wait_body(L, r, chunk_k, 0);
  if (r->body_error) return body_failed(L, r);
  return 0;
}

static int chunk_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = lr_task_self(L);
  (void)status, (void)ctx;
  if (t && t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  lua_settop(L, 1);
  return req_chunk_now(L);
}

static int req_chunk(lua_State *L) {
  lua_settop(L, 1);
  return req_chunk_now(L);
}

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
static int respond(lua_State *L) {
  req_box *b = to_req(L, 1);
  lr_srv_req *r = b->r;
  static hdrset h; /* the loop's thread only; filled and used before returning */
  int status = 200, hidx = 0, bidx = 0;
  const char *type = "text/plain; charset=utf-8";
  if (r && r->upgraded) { /* the driver closes the handler's WebSocket */
    lua_pushnil(L);
    push_cache(L, 1);
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
  req_box *b = to_req(L, 1);
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

static int body_write(lua_State *L) {
  lua_settop(L, 2);
  return write_now(L);
}

static int body_finish(lua_State *L) {
  req_box *b = to_req(L, 1);
  if (b->r && !b->r->finished && b->r->conn) b->r->proto->write(b->r, NULL, 0, 1);
  return 0;
}

/* ---- req:websocket ---- */

/* The value of request header name (lower-case), or NULL. */
static const char *header_of(lr_srv_req *r, const char *name, size_t *len) {
  size_t nl = strlen(name);
  uint32_t i;
  for (i = 0; i < r->nhdrs; i++)
    if (r->hdrs[i].name_len == nl && memcmp(r->head + r->hdrs[i].name, name, nl) == 0) {
      *len = r->hdrs[i].value_len;
      return r->head + r->hdrs[i].value;
    }
  return NULL;
}

/* 1 if the comma-separated list v[0..n) has token t (case-insensitive). */
static int list_has(const char *v, size_t n, const char *t) {
  size_t tl = strlen(t), i = 0;
  while (i < n) {
    size_t j = i, e;
    while (j < n && v[j] != ',') j++;
    e = j;
    while (i < e && (v[i] == ' ' || v[i] == '\t')) i++;
    while (e > i && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
    if (e - i == tl && strncasecmp(v + i, t, tl) == 0) return 1;
    i = j + 1;
  }
  return 0;
}

static int not_upgrade(lua_State *L, const char *why) {
  lr_error_push(L, "protocol", why);
  lua_pushinteger(L, 426);
  lua_setfield(L, -2, "status");
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

/* req:websocket([{protocols =, max_message_size =}]) -> ws, protocol | nil, err */
static int req_websocket(lua_State *L) {
  lr_srv_req *r = check_req(L, "req:websocket");
  lr_conn *c = r->conn;
  const char *v, *key, *chosen = NULL;
  size_t vl, kl, max = 0, chosen_len = 0, tail_n;
  char buf[512], *tail;
  char accept[29];
  uv_buf_t out;
  lr_ws *ws;
  int n;
  lr_task_enter(L, "req:websocket");
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "max_message_size") != LUA_TNIL) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) <= 0)
        return luaL_error(L, "req:websocket: max_message_size must be a positive integer");
      max = (size_t)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
  }
  if (c == NULL || c->is_h2 || r->responded)
    return not_upgrade(L, "req:websocket: the request cannot be upgraded (answered, or not HTTP/1.1)");
  if (!r->upgrade || (v = header_of(r, "upgrade", &vl)) == NULL || !list_has(v, vl, "websocket"))
    return not_upgrade(L, "req:websocket: the request is not a WebSocket upgrade");
  if ((v = header_of(r, "sec-websocket-version", &vl)) == NULL || vl != 2 || memcmp(v, "13", 2))
    return not_upgrade(L, "req:websocket: unsupported Sec-WebSocket-Version (13 expected)");
  if ((key = header_of(r, "sec-websocket-key", &kl)) == NULL || kl != 24)
    return not_upgrade(L, "req:websocket: missing or malformed Sec-WebSocket-Key");
  /* The first of our protocols that the client offers. */
  if (!lua_isnoneornil(L, 2) && lua_getfield(L, 2, "protocols") == LUA_TTABLE &&
      (v = header_of(r, "sec-websocket-protocol", &vl)) != NULL) {
    lua_Integer i, np = (lua_Integer)lua_rawlen(L, -1);
    for (i = 1; i <= np && chosen == NULL; i++) {
      lua_rawgeti(L, -1, i);
      if (lua_type(L, -1) == LUA_TSTRING && list_has(v, vl, lua_tostring(L, -1)))
        chosen = lua_tolstring(L, -1, &chosen_len); /* stays in the table */
      lua_pop(L, 1);
    }
  }
  if (lr_tls_ws_accept(key, kl, accept) < 0)
    return not_upgrade(L, "req:websocket: OpenSSL cannot be loaded for the handshake's SHA-1");
  if ((ws = lr_ws_new(L, &c->s, 1, max, lr_conn_released)) == NULL)
    return luaL_error(L, "req:websocket: not enough memory");
  n = snprintf(buf, sizeof buf,
               "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
               "sec-websocket-accept: %s\r\n%s%.*s%s\r\n",
               accept, chosen ? "sec-websocket-protocol: " : "", (int)chosen_len,
               chosen ? chosen : "", chosen ? "\r\n" : "");
  out = uv_buf_init(buf, (unsigned)n);
  lr_stream_write(&c->s, &out, 1);
  lr_h1_take_tail(c, &tail, &tail_n);
  lr_conn_upgrade(c, ws);
  lr_ws_start(L, ws, tail, tail_n);
  free(tail);
  push_cache(L, 1); /* for respond(), which hands it to the driver to close */
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "_websocket");
  lua_pop(L, 1);
  if (chosen) lua_pushlstring(L, chosen, chosen_len);
  else lua_pushnil(L);
  return 2;
}

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
  lua_rawgeti(L, LUA_REGISTRYINDEX, request_mt_ref);
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
    {"body", req_body},
    {"websocket", req_websocket},
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
    request_mt = lua_topointer(L, -1);
    lua_pushvalue(L, -1);
    request_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_newlib(L, req_methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "methods"); /* for serve.lua */
    lua_pushcclosure(L, req_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, req_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, req_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, req_tostring);
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
  lua_pushcfunction(L, respond);
  lua_pushcfunction(L, body_write);
  lua_pushcfunction(L, body_finish);
  lua_pushcfunction(L, req_chunk);
  lua_call(L, 5, 2);               /* REQUEST_MT driver router */
  lua_setfield(L, mod, "router");
  lua_pushcclosure(L, http_serve, 1);
  lua_setfield(L, mod, "serve");
  lua_pop(L, 1);
}
