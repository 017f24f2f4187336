/* ws_client.c: http.websocket(url [, opts]): the client's opening handshake.
 *
 * The steps, each a libuv callback: resolve the host (uv_getaddrinfo), connect to
 * each address in turn until one answers (uv_tcp_connect into an lr_stream), put
 * the stream under TLS for wss://, send the upgrade request (under TLS it waits in
 * tls.c until the handshake is done), read the answer with http-parser in
 * HTTP_RESPONSE mode and check it (101, Upgrade, Connection, Sec-WebSocket-Accept).
 * Then the stream, with the bytes that came after the answer's head, goes to ws.c.
 *
 * The task parks once for all of it, with opts.timeout on the scheduler's timer.
 * The continuation owns the outcome: on success it hands the stream to ws.c; on
 * failure, timeout or cancellation it "orphans" the handshake (c->task = NULL) and
 * closes what is open; the last callback to come back frees it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <http_parser.h>
#include "lr_net.h"

#define DEFAULT_TIMEOUT 30.0
#define MAX_VALUE 8192

typedef struct wsc {
  lr_stream s;             /* first: ws.c gives it back through wsc_release */
  lr_runtime *rt;
  lr_task *task;           /* the waiting task; NULL once orphaned */
  lr_waitq q;              /* where the task parks */
  uv_getaddrinfo_t gai;
  uv_connect_t conn;
  struct addrinfo *ai, *next_ai;
  lr_tls_ctx *tls;
  char *host;              /* for SNI and the name check */
  char *req;               /* the upgrade request */
  size_t req_len;
  char accept[32];         /* the Sec-WebSocket-Accept we expect */
  http_parser parser;
  char field[32];          /* the header being read (truncated: we need short ones) */
  char protocol[128];      /* the subprotocol the server chose, or "" */
  size_t field_len;
  char *val;
  size_t val_len;
  uint8_t in_value, head_done, upgrade_ok, conn_ok, accept_ok, val_over;
  int status;              /* the answer's status code */
  char *tail;              /* bytes after the answer's head */
  size_t tail_len;
  size_t max_message;
  uint64_t close_timeout;
  int last_err;            /* the last connect error, for the message */
  int result;              /* 0 pending, 1 ready, -1 failed (kind, msg) */
  const char *kind;
  char msg[320];
  uint8_t gai_busy, conn_busy, stream_open, retry;
} wsc;

/* ---- teardown ---- */

static void free_parts(wsc *c) {
  if (c->ai) uv_freeaddrinfo(c->ai);
  c->ai = NULL;
  lr_tls_ctx_free(c->tls);
  c->tls = NULL;
  free(c->host);
  free(c->req);
  free(c->val);
  free(c->tail);
  c->host = c->req = c->val = c->tail = NULL;
}

static void maybe_free(wsc *c) {
  if (c->task || c->gai_busy || c->conn_busy || c->stream_open) return;
  free_parts(c);
  free(c);
}

/* The task no longer waits: close what is open; the last callback frees c. */
static void orphan(wsc *c) {
  c->task = NULL;
  if (c->gai_busy) uv_cancel((uv_req_t *)&c->gai);
  if (c->stream_open && !c->s.closing) lr_stream_close(&c->s);
  maybe_free(c);
}

/* ws.c is done with the stream: the handshake's memory goes with it. */
static void wsc_release(lr_stream *s) {
  wsc *c = (wsc *)s;
  free_parts(c);
  free(c);
}

static void finish(wsc *c, int result, const char *kind, const char *msg) {
  if (c->result != 0 || c->task == NULL) return;
  c->result = result;
  c->kind = kind;
  if (msg) snprintf(c->msg, sizeof c->msg, "%s", msg);
  if (c->stream_open) lr_stream_pause(&c->s);
  lr_task_wake(c->task, LR_WAKE_DONE);
}

/* ---- the answer ---- */

static int has_token(const char *v, const char *tok) {
  size_t n = strlen(tok);
  const char *p = v;
  while ((p = strcasestr(p, tok)) != NULL) {
    int start = p == v || p[-1] == ',' || p[-1] == ' ' || p[-1] == '\t';
    char e = p[n];
    if (start && (e == '\0' || e == ',' || e == ' ' || e == '\t')) return 1;
    p += n;
  }
  return 0;
}

static void header_done(wsc *c) {
  char *v = c->val ? c->val : "";
  size_t n = c->val_len;
  if (!c->in_value) return;
  c->in_value = 0;
  while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
  while (n > 0 && (*v == ' ' || *v == '\t')) v++, n--;
  if (c->val) v[n] = '\0';
  if (strcasecmp(c->field, "upgrade") == 0) c->upgrade_ok = strcasecmp(v, "websocket") == 0;
  else if (strcasecmp(c->field, "connection") == 0) c->conn_ok = has_token(v, "upgrade");
  else if (strcasecmp(c->field, "sec-websocket-accept") == 0)
    c->accept_ok = strcmp(v, c->accept) == 0;
  else if (strcasecmp(c->field, "sec-websocket-protocol") == 0)
    snprintf(c->protocol, sizeof c->protocol, "%.*s", (int)n, v);
  c->field_len = 0;
  c->field[0] = '\0';
  c->val_len = 0;
}

static int on_field(http_parser *p, const char *at, size_t n) {
  wsc *c = p->data;
  size_t room;
  header_done(c);
  room = sizeof c->field - 1 - c->field_len;
  if (n > room) n = room;
  memcpy(c->field + c->field_len, at, n);
  c->field_len += n;
  c->field[c->field_len] = '\0';
  return 0;
}

static int on_value(http_parser *p, const char *at, size_t n) {
  wsc *c = p->data;
  c->in_value = 1;
  if (c->val == NULL && (c->val = malloc(MAX_VALUE + 1)) == NULL) return -1;
  if (c->val_len + n > MAX_VALUE) n = MAX_VALUE - c->val_len; /* long values: cut */
  memcpy(c->val + c->val_len, at, n);
  c->val_len += n;
  return 0;
}

static int on_headers_complete(http_parser *p) {
  wsc *c = p->data;
  header_done(c);
  c->status = p->status_code;
  c->head_done = 1;
  return 1; /* no body: an upgrade ends here, anything else fails */
}

static const http_parser_settings parser_settings = {
  .on_header_field = on_field,
  .on_header_value = on_value,
  .on_headers_complete = on_headers_complete,
};

static void hs_on_data(lr_stream *s, const char *p, size_t n) {
  wsc *c = (wsc *)s;
  size_t used;
  char m[160];
  if (c->result != 0 || c->task == NULL) return;
  used = http_parser_execute(&c->parser, &parser_settings, p, n);
  if (!c->head_done) {
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
      snprintf(m, sizeof m, "malformed answer to the upgrade request: %s",
               http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
      finish(c, -1, "protocol", m);
    }
    return;
  }
  if (c->status != 101) {
    snprintf(m, sizeof m, "the server answered %d instead of 101 Switching Protocols",
             c->status);
    finish(c, -1, "protocol", m);
  } else if (!c->upgrade_ok || !c->conn_ok) {
    finish(c, -1, "protocol", "the 101 answer lacks Upgrade: websocket or Connection: Upgrade");
  } else if (!c->accept_ok) {
    finish(c, -1, "protocol", "Sec-WebSocket-Accept does not match the key sent");
  } else {
    if (used > n) used = n;
    if (used < n) {
      if ((c->tail = malloc(n - used)) == NULL) {
        finish(c, -1, "protocol", "not enough memory");
        return;
      }
      memcpy(c->tail, p + used, n - used);
      c->tail_len = n - used;
    }
    finish(c, 1, NULL, NULL);
  }
}

static void hs_on_end(lr_stream *s, int status) {
  wsc *c = (wsc *)s;
  const char *tls = lr_tls_error(s);
  char m[200];
  if (tls) {
    finish(c, -1, "tls", tls);
  } else if (status == UV_EOF) {
    finish(c, -1, "protocol", "the server closed the connection during the handshake");
  } else {
    snprintf(m, sizeof m, "connection lost during the handshake: %s", uv_strerror(status));
    finish(c, -1, "connect", m);
  }
}

/* ---- connecting ---- */

static void try_connect(wsc *c);

static void hs_on_closed(lr_stream *s) {
  wsc *c = (wsc *)s;
  c->stream_open = 0;
  if (c->task && c->retry) {
    c->retry = 0;
    try_connect(c);
    return;
  }
  maybe_free(c);
}

static void connect_failed(wsc *c, int status) {
  c->last_err = status;
  c->retry = 1; /* hs_on_closed tries the next address */
  lr_stream_close(&c->s);
}

static void conn_cb(uv_connect_t *req, int status) {
  wsc *c = req->data;
  uv_buf_t b;
  c->conn_busy = 0;
  if (c->task == NULL) {
    maybe_free(c);
    return;
  }
  if (status < 0) {
    connect_failed(c, status);
    return;
  }
  if (c->tls) {
    if (lr_tls_attach(&c->s, c->tls, 0, c->host) != 0) {
      finish(c, -1, "tls", "cannot set up TLS (out of memory?)");
      return;
    }
    lr_tls_ctx_free(c->tls); /* the connection holds its own reference */
    c->tls = NULL;
  }
  b = uv_buf_init(c->req, (unsigned)c->req_len);
  if ((status = lr_stream_read(&c->s)) != 0 || (status = lr_stream_write(&c->s, &b, 1)) != 0) {
    const char *tls = lr_tls_error(&c->s);
    finish(c, -1, tls ? "tls" : "connect", tls ? tls : uv_strerror(status));
  }
}

static void try_connect(wsc *c) {
  struct addrinfo *a = c->next_ai;
  int rc;
  char m[200];
  while (a && a->ai_family != AF_INET && a->ai_family != AF_INET6) a = a->ai_next;
  if (a == NULL) {
    snprintf(m, sizeof m, "cannot connect to %s: %s", c->host,
             uv_strerror(c->last_err ? c->last_err : UV_EADDRNOTAVAIL));
    finish(c, -1, "connect", m);
    return;
  }
  c->next_ai = a->ai_next;
  if ((rc = lr_stream_init(c->rt, &c->s, c)) != 0) {
    c->last_err = rc;
    snprintf(m, sizeof m, "cannot connect to %s: %s", c->host, uv_strerror(rc));
    finish(c, -1, "connect", m);
    return;
  }
  c->stream_open = 1;
  c->s.on_data = hs_on_data;
  c->s.on_end = hs_on_end;
  c->s.on_closed = hs_on_closed;
  c->conn.data = c;
  if ((rc = uv_tcp_connect(&c->conn, &c->s.tcp, a->ai_addr, conn_cb)) != 0) {
    connect_failed(c, rc);
    return;
  }
  c->conn_busy = 1;
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  wsc *c = req->data;
  char m[300];
  c->gai_busy = 0;
  if (c->task == NULL) {
    if (res) uv_freeaddrinfo(res);
    maybe_free(c);
    return;
  }
  if (status < 0) {
    snprintf(m, sizeof m, "cannot resolve %s: %s", c->host, uv_strerror(status));
    finish(c, -1, "dns", m);
    return;
  }
  c->ai = c->next_ai = res;
  try_connect(c);
}

/* ---- the call ---- */

static int fail_url(lua_State *L, const char *kind, const char *msg) {
  lua_pushnil(L);
  lr_error_push(L, kind, msg);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "url");
  return 2;
}

static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  wsc *c = (wsc *)ctx;
  lr_task *t = lr_task_self(L);
  lr_ws *ws;
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) {
    orphan(c);
    lr_error_raise_cancelled(L);
  }
  if (t->wake == LR_WAKE_TIMEOUT) {
    orphan(c);
    return fail_url(L, "timeout", "the connection and WebSocket handshake took too long");
  }
  if (c->result < 0) {
    const char *kind = c->kind; /* a static string */
    lua_pushstring(L, c->msg);
    orphan(c);
    return fail_url(L, kind, lua_tostring(L, -1));
  }
  if ((ws = lr_ws_new(L, &c->s, 0, c->max_message, wsc_release)) == NULL) {
    orphan(c);
    return luaL_error(L, "http.websocket: not enough memory");
  }
  if (c->close_timeout) lr_ws_set_close_timeout(ws, c->close_timeout);
  {
    char *tail = c->tail;
    size_t n = c->tail_len;
    c->tail = NULL;
    if (c->ai) uv_freeaddrinfo(c->ai);
    c->ai = NULL;
    free(c->req);
    free(c->val);
    c->req = c->val = NULL;
    /* The ws owns the stream (and so c) from here: read the protocol first. */
    if (c->protocol[0]) lua_pushstring(L, c->protocol);
    else lua_pushnil(L);
    lr_ws_start(L, ws, tail, n);
    free(tail);
    lua_insert(L, -2); /* ws, protocol (as req:websocket returns them) */
    return 2;
  }
}

/* Appends "name: value\r\n" after checking neither has CR, LF or NUL. */
static void add_header(lua_State *L, luaL_Buffer *b, int arg, const char *name, size_t nl,
                       const char *value, size_t vl) {
  size_t i;
  for (i = 0; i < nl; i++)
    if (name[i] == '\r' || name[i] == '\n' || name[i] == '\0' || name[i] == ':' || name[i] == ' ')
      luaL_argerror(L, arg, "opts.headers: a header name with a space, colon, CR, LF or NUL");
  for (i = 0; i < vl; i++)
    if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
      luaL_argerror(L, arg, "opts.headers: a header value with CR, LF or NUL");
  luaL_addlstring(b, name, nl);
  luaL_addstring(b, ": ");
  luaL_addlstring(b, value, vl);
  luaL_addstring(b, "\r\n");
}

/* opts.protocols: a string or a list of strings, joined with ", ". */
static void add_protocols(lua_State *L, luaL_Buffer *b, int opts) {
  int ty = lua_getfield(L, opts, "protocols");
  if (ty == LUA_TSTRING) {
    luaL_addstring(b, "Sec-WebSocket-Protocol: ");
    luaL_addvalue(b);
    luaL_addstring(b, "\r\n");
    return;
  }
  if (ty == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  if (ty != LUA_TTABLE) luaL_argerror(L, opts, "opts.protocols must be a string or a list");
  {
    lua_Integer i, n = luaL_len(L, -1);
    int list = lua_gettop(L);
    for (i = 1; i <= n; i++) {
      if (lua_rawgeti(L, list, i) != LUA_TSTRING)
        luaL_argerror(L, opts, "opts.protocols must hold strings");
      if (strpbrk(lua_tostring(L, -1), "\r\n,") != NULL)
        luaL_argerror(L, opts, "opts.protocols: a name with CR, LF or a comma");
      lua_pop(L, 1);
    }
    if (n > 0) {
      luaL_addstring(b, "Sec-WebSocket-Protocol: ");
      for (i = 1; i <= n; i++) {
        if (i > 1) luaL_addstring(b, ", ");
        lua_rawgeti(L, list, i);
        luaL_addvalue(b);
      }
      luaL_addstring(b, "\r\n");
    }
  }
  lua_pop(L, 1);
}

static double opt_number(lua_State *L, int opts, const char *field, double def) {
  double v = def;
  int ty = lua_getfield(L, opts, field);
  if (ty == LUA_TNUMBER) v = lua_tonumber(L, -1);
  else if (ty != LUA_TNIL)
    luaL_argerror(L, opts, lua_pushfstring(L, "opts.%s must be a number", field));
  if (!(v >= 0)) luaL_argerror(L, opts, lua_pushfstring(L, "opts.%s must be >= 0", field));
  lua_pop(L, 1);
  return v;
}

typedef struct conn_opts {
  double timeout, close_timeout;
  int verify;
  const char *ca_file;
  lua_Integer max_message;
} conn_opts;

static void check_opts(lua_State *L, conn_opts *o) {
  int ty;
  o->timeout = DEFAULT_TIMEOUT;
  o->close_timeout = 0;
  o->verify = 1;
  o->ca_file = NULL;
  o->max_message = 0;
  if (lua_isnoneornil(L, 2)) return;
  luaL_checktype(L, 2, LUA_TTABLE);
  o->timeout = opt_number(L, 2, "timeout", DEFAULT_TIMEOUT);
  o->close_timeout = opt_number(L, 2, "close_timeout", 0);
  ty = lua_getfield(L, 2, "verify");
  if (ty != LUA_TNIL && ty != LUA_TBOOLEAN) luaL_argerror(L, 2, "opts.verify must be a boolean");
  if (ty == LUA_TBOOLEAN) o->verify = lua_toboolean(L, -1);
  lua_pop(L, 1);
  ty = lua_getfield(L, 2, "ca_file");
  if (ty != LUA_TNIL && ty != LUA_TSTRING) luaL_argerror(L, 2, "opts.ca_file must be a string");
  o->ca_file = lua_tostring(L, -1); /* kept alive by opts */
  lua_pop(L, 1);
  ty = lua_getfield(L, 2, "max_message_size");
  if (ty != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || (o->max_message = lua_tointeger(L, -1)) < 1)
      luaL_argerror(L, 2, "opts.max_message_size must be a positive integer");
  }
  lua_pop(L, 1);
  ty = lua_getfield(L, 2, "headers");
  if (ty != LUA_TNIL && ty != LUA_TTABLE) luaL_argerror(L, 2, "opts.headers must be a table");
  lua_pop(L, 1);
}

/* Pushes the upgrade request for the parsed url (string at index 1). */
static void push_request(lua_State *L, const char *url, const struct http_parser_url *u,
                         const char *key, int default_port) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "GET ");
  if (u->field_set & (1 << UF_PATH))
    luaL_addlstring(&b, url + u->field_data[UF_PATH].off, u->field_data[UF_PATH].len);
  else
    luaL_addchar(&b, '/');
  if (u->field_set & (1 << UF_QUERY)) {
    luaL_addchar(&b, '?');
    luaL_addlstring(&b, url + u->field_data[UF_QUERY].off, u->field_data[UF_QUERY].len);
  }
  luaL_addstring(&b, " HTTP/1.1\r\nHost: ");
  {
    const char *h = url + u->field_data[UF_HOST].off;
    size_t hl = u->field_data[UF_HOST].len;
    int v6 = memchr(h, ':', hl) != NULL;
    if (v6) luaL_addchar(&b, '[');
    luaL_addlstring(&b, h, hl);
    if (v6) luaL_addchar(&b, ']');
    if (u->port != default_port) {
      char p[16];
      snprintf(p, sizeof p, ":%u", u->port);
      luaL_addstring(&b, p);
    }
  }
  luaL_addstring(&b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
  luaL_addstring(&b, key);
  luaL_addstring(&b, "\r\nSec-WebSocket-Version: 13\r\n");
  if (lua_istable(L, 2)) {
    add_protocols(L, &b, 2);
    if (lua_getfield(L, 2, "headers") == LUA_TTABLE) {
      int h = lua_gettop(L);
      lua_pushnil(L);
      while (lua_next(L, h)) {
        size_t nl, vl;
        const char *n, *v;
        if (lua_type(L, -2) != LUA_TSTRING ||
            (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
          luaL_argerror(L, 2, "opts.headers must map names to strings");
        lua_pushvalue(L, -1);
        v = lua_tolstring(L, -1, &vl); /* a copy: never convert the key in place */
        n = lua_tolstring(L, -3, &nl);
        add_header(L, &b, 2, n, nl, v, vl);
        lua_pop(L, 2);
      }
    }
    lua_pop(L, 1);
  }
  luaL_addstring(&b, "\r\n");
  luaL_pushresult(&b);
}

/* Makes a key, pushes the request for it and writes the accept to expect. Raises
 * (a bad header) before anything is allocated. 0, or -1 without OpenSSL. */
static int push_handshake(lua_State *L, const char *url, const struct http_parser_url *u,
                          int default_port, char *accept) {
  char key[25];
  if (lr_tls_ws_key(key, accept) != 0) return -1;
  push_request(L, url, u, key, default_port);
  return 0;
}

int lr_ws_connect(lua_State *L) {
  size_t len;
  const char *url;
  struct http_parser_url u;
  conn_opts o;
  int tls, rc, default_port;
  lr_task *t;
  wsc *c;
  char port[8], err[256], accept[32];
  struct addrinfo hints;
  if (lua_type(L, 1) != LUA_TSTRING)
    return luaL_error(L, "http.websocket: the url must be a string (got %s)", luaL_typename(L, 1));
  url = lua_tolstring(L, 1, &len);
  check_opts(L, &o);
  lua_settop(L, 2);
  t = lr_task_enter(L, "http.websocket");
  http_parser_url_init(&u);
  if (http_parser_parse_url(url, len, 0, &u) != 0 || !(u.field_set & (1 << UF_SCHEMA)) ||
      !(u.field_set & (1 << UF_HOST)) || u.field_data[UF_HOST].len == 0)
    return fail_url(L, "invalid_url", "not a ws:// or wss:// URL");
  if (u.field_data[UF_SCHEMA].len == 2 && strncasecmp(url + u.field_data[UF_SCHEMA].off, "ws", 2) == 0)
    tls = 0;
  else if (u.field_data[UF_SCHEMA].len == 3 &&
           strncasecmp(url + u.field_data[UF_SCHEMA].off, "wss", 3) == 0)
    tls = 1;
  else
    return fail_url(L, "invalid_url", "only ws:// and wss:// URLs are accepted");
  default_port = tls ? 443 : 80;
  if (!(u.field_set & (1 << UF_PORT))) u.port = (uint16_t)default_port;
  if (push_handshake(L, url, &u, default_port, accept) != 0)
    return fail_url(L, "tls", "cannot load OpenSSL for the WebSocket key");
  if ((c = calloc(1, sizeof *c)) == NULL ||
      (c->host = strndup(url + u.field_data[UF_HOST].off, u.field_data[UF_HOST].len)) == NULL ||
      (c->req = malloc(lua_rawlen(L, -1))) == NULL) {
    if (c) free_parts(c);
    free(c);
    return luaL_error(L, "http.websocket: not enough memory");
  }
  c->req_len = lua_rawlen(L, -1);
  memcpy(c->req, lua_tostring(L, -1), c->req_len);
  lua_pop(L, 1);
  memcpy(c->accept, accept, sizeof c->accept);
  c->rt = t->rt;
  c->max_message = (size_t)o.max_message;
  c->close_timeout = (uint64_t)(o.close_timeout * 1000);
  if (tls && (c->tls = lr_tls_client_ctx(o.verify, o.ca_file, err, sizeof err)) == NULL) {
    free_parts(c);
    free(c);
    return fail_url(L, "tls", err);
  }
  http_parser_init(&c->parser, HTTP_RESPONSE);
  c->parser.data = c;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  snprintf(port, sizeof port, "%u", u.port);
  c->gai.data = c;
  if ((rc = uv_getaddrinfo(&t->rt->loop, &c->gai, gai_cb, c->host, port, &hints)) != 0) {
    snprintf(err, sizeof err, "cannot resolve %s: %s", c->host, uv_strerror(rc));
    free_parts(c);
    free(c);
    return fail_url(L, "dns", err);
  }
  c->gai_busy = 1;
  c->task = t;
  lr_waitq_push(&c->q, t);
  if (o.timeout > 0) {
    uint64_t deadline = lr_timer_deadline(o.timeout);
    if (deadline != UINT64_MAX && lr_timer_add(t->rt, t, deadline) != 0) {
      lr_waitq_remove(&c->q, t);
      orphan(c);
      return luaL_error(L, "http.websocket: not enough memory");
    }
  }
  return lr_task_park(L, t, NULL, (lua_KContext)c, connect_k);
}
