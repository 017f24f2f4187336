/* server_request.c (bindings): the Request object of http.serve: its fields,
 * computed from the request's head when first read and kept in its user value, the
 * body readers (req:body, the chunks under req:body_chunks), and req:websocket.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "server_req.h"

const void *lr_request_mt;
int lr_request_mt_ref = LUA_NOREF;

req_box *lr_req_to(lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  if (p && lua_getmetatable(L, idx)) {
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt == lr_request_mt) return p;
  }
  return luaL_checkudata(L, idx, REQUEST_MT); /* raises the usual message */
}

/* ---- requests ---- */

lr_srv_req *lr_req_check(lua_State *L, const char *fname) {
  req_box *b = lr_req_to(L, 1);
  if (b->r == NULL) luaL_error(L, "%s: the request is over (its handler returned)", fname);
  return b->r;
}

/* Pushes the request's field cache (its user value), made on first use. */
void lr_req_push_cache(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_getiuservalue(L, idx, 1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, idx, 1);
  }
}

/* Pushes s[0..n) percent-decoded ('+' is a space when plus). */
static void push_decoded(lua_State *L, const char *s, size_t n, int plus) {
  luaL_Buffer b;
  size_t i;
  luaL_buffinit(L, &b);
  for (i = 0; i < n; i++) {
    int c = (unsigned char)s[i], h, l;
    if (c == '%' && i + 2 < n + 0 + 1 && i + 2 <= n - 1 + 0 &&
        (h = lr_hex_digit(s[i + 1])) >= 0 && (l = lr_hex_digit(s[i + 2])) >= 0) {
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

/* Pushes a table of a=1&b=2&a=3 (repeated keys give a list, in order). Also
 * http.url.decode's (bindings/http_url.c). */
void lr_http_push_form(lua_State *L, const char *s, size_t n) {
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
    if (q) lr_http_push_form(L, q + 1, r->target_len - plen - 1);
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
int lr_req_index(lua_State *L) {
  req_box *b = lr_req_to(L, 1);
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
  lr_req_push_cache(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return 1;
}

/* req.params = ... (the router) and any field a script adds. */
int lr_req_newindex(lua_State *L) {
  lr_req_to(L, 1);
  lua_settop(L, 3);
  lr_req_push_cache(L, 1);
  lua_insert(L, 2);
  lua_rawset(L, 2);
  return 0;
}

int lr_req_gc(lua_State *L) {
  req_box *b = lua_touserdata(L, 1);
  if (b->r) b->r->box = NULL;
  b->r = NULL;
  return 0;
}

int lr_req_tostring(lua_State *L) {
  req_box *b = lr_req_to(L, 1);
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
  lr_srv_req *r = lr_req_check(L, "req:body");
  lr_req_push_cache(L, 1);
  if (lua_getfield(L, -1, BODY_KEY) == LUA_TSTRING) return 1;
  lua_pop(L, 2);
  if (!r->body_done) {
    r->want_whole = 1;
    return wait_body(L, r, body_k, 0);
  }
  if (r->body_error) return body_failed(L, r);
  lua_pushlstring(L, r->body ? r->body + r->body_pos : "", r->body_len - r->body_pos);
  if (r->proto->consumed) r->proto->consumed(r, r->body_len - r->body_pos);
  r->body_pos = r->body_len;
  free(r->body); /* kept as the Lua string from now on */
  r->body = NULL;
  r->body_len = r->body_pos = r->body_cap = 0;
  lr_req_push_cache(L, 1);
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

int lr_req_body(lua_State *L) {
  lua_settop(L, 1);
  return req_body_now(L);
}

/* The next piece of the body, or nil at its end (nil, err if it never ends). */
static int chunk_k(lua_State *L, int status, lua_KContext ctx);
static int req_chunk_now(lua_State *L) {
  lr_srv_req *r = lr_req_check(L, "req:body_chunks");
  size_t n = r->body_len - r->body_pos;
  lr_req_push_cache(L, 1);
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

int lr_req_chunk(lua_State *L) {
  lua_settop(L, 1);
  return req_chunk_now(L);
}

/* ---- req:websocket ---- */

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
int lr_req_websocket(lua_State *L) {
  lr_srv_req *r = lr_req_check(L, "req:websocket");
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
  if (!r->upgrade || (v = lr_srv_req_header(r, "upgrade", &vl)) == NULL || !list_has(v, vl, "websocket"))
    return not_upgrade(L, "req:websocket: the request is not a WebSocket upgrade");
  if ((v = lr_srv_req_header(r, "sec-websocket-version", &vl)) == NULL || vl != 2 || memcmp(v, "13", 2))
    return not_upgrade(L, "req:websocket: unsupported Sec-WebSocket-Version (13 expected)");
  if ((key = lr_srv_req_header(r, "sec-websocket-key", &kl)) == NULL || kl != 24)
    return not_upgrade(L, "req:websocket: missing or malformed Sec-WebSocket-Key");
  /* The first of our protocols that the client offers. */
  if (!lua_isnoneornil(L, 2) && lua_getfield(L, 2, "protocols") == LUA_TTABLE &&
      (v = lr_srv_req_header(r, "sec-websocket-protocol", &vl)) != NULL) {
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
  lr_req_push_cache(L, 1); /* for respond(), which hands it to the driver to close */
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "_websocket");
  lua_pop(L, 1);
  if (chosen) lua_pushlstring(L, chosen, chosen_len);
  else lua_pushnil(L);
  return 2;
}
