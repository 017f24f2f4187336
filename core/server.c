/* server.c: the HTTP server's listener and connections: accepting (within
 * max_connections), each connection's phase timer (header_timeout, request_timeout,
 * idle_timeout), picking the protocol (HTTP/1.1, or HTTP/2 by prior knowledge or
 * ALPN), the requests' common part, and closing with a grace period.
 *
 * The protocols parse and write (server_h1.c, server_h2.c); the bindings run handlers
 * (bindings/server.c, through lr_srv_app). A connection is freed once its stream and
 * its timer are closed; a request lives as long as its handler task (it is the task's
 * owner), so a request may outlive its connection, which then sets r->conn to NULL.
 */
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include "lr_net.h"

/* ---- Date, once a second ---- */

const char *lr_server_date(lr_runtime *rt) {
  static char date[40];
  static uint64_t second = 0;
  uint64_t now = uv_now(&rt->loop) / 1000;
  if (now != second || date[0] == '\0') {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    second = now;
  }
  return date;
}

const char *lr_http_reason(int status) {
  switch (status) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 206: return "Partial Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 417: return "Expectation Failed";
  case 422: return "Unprocessable Content";
  case 426: return "Upgrade Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  default: return "";
  }
}

/* ---- requests ---- */

static void req_task_done(lr_owner *o, lr_task *t);

lr_srv_req *lr_srv_req_new(lr_conn *c, const lr_srv_proto *proto) {
  lr_srv_req *r;
  if (c->spare) { /* the last request's struct and buffers (keep-alive) */
    lr_srv_req keep = *c->spare;
    r = c->spare;
    c->spare = NULL;
    memset(r, 0, sizeof *r);
    r->head = keep.head, r->head_cap = keep.head_cap;
    r->hdrs = keep.hdrs, r->hdr_cap = keep.hdr_cap;
  } else if ((r = calloc(1, sizeof *r)) == NULL) {
    return NULL;
  }
  r->owner.child_done = req_task_done;
  r->srv = c->srv;
  r->conn = c;
  r->proto = proto;
  r->keep_alive = 1;
  c->srv->refs++;
  memcpy(r->peer, c->peer, sizeof r->peer);
  return r;
}

int64_t lr_srv_req_append(lr_srv_req *r, const char *p, size_t n) {
  size_t at = r->head_len;
  if (lr_reserve(&r->head, &r->head_cap, r->head_len + n + 1, 512) < 0) return -1;
  memcpy(r->head + at, p, n);
  r->head_len += n;
  r->head[r->head_len] = '\0';
  return (int64_t)at;
}

static void wake_reader(lr_srv_req *r) {
  lr_task *t;
  while ((t = lr_waitq_pop(&r->waiters)) != NULL) lr_task_wake(t, LR_WAKE_DONE);
}

int lr_srv_req_body(lr_srv_req *r, const char *p, size_t n) {
  size_t max = r->srv->o.max_body_size;
  if (max && r->body_total + n > max) {
    lr_srv_req_body_end(r, LR_BODY_TOO_LARGE);
    return -1;
  }
  if (r->body_pos > 0 && r->body_pos == r->body_len) r->body_pos = r->body_len = 0;
  if (r->body_len + n > r->body_cap && r->body_pos > 0) { /* drop what was read first */
    memmove(r->body, r->body + r->body_pos, r->body_len - r->body_pos);
    r->body_len -= r->body_pos;
    r->body_pos = 0;
  }
  /* A body of known length gets its whole buffer at once (no growing copies). */
  if (lr_reserve(&r->body, &r->body_cap, r->body_len + n,
                 r->body_expected > 4096 ? r->body_expected : 4096) < 0) {
    lr_srv_req_body_end(r, LR_BODY_CLOSED);
    return -1;
  }
  memcpy(r->body + r->body_len, p, n);
  r->body_len += n;
  r->body_total += n;
  wake_reader(r);
  return 0;
}

void lr_srv_req_body_end(lr_srv_req *r, int err) {
  if (r->body_done) return;
  r->body_done = 1;
  r->body_error = (uint8_t)err;
  wake_reader(r);
}

int lr_srv_req_add_header(lr_srv_req *r, uint32_t name, uint32_t nl, uint32_t value,
                          uint32_t vl) {
  if (r->nhdrs == r->hdr_cap) {
    uint32_t cap = r->hdr_cap ? r->hdr_cap * 2 : 16;
    lr_srv_hdr *nh = realloc(r->hdrs, cap * sizeof *nh);
    if (nh == NULL) return -1;
    r->hdrs = nh;
    r->hdr_cap = cap;
  }
  r->hdrs[r->nhdrs].name = name;
  r->hdrs[r->nhdrs].name_len = nl;
  r->hdrs[r->nhdrs].value = value;
  r->hdrs[r->nhdrs].value_len = vl;
  r->nhdrs++;
  return 0;
}

const char *lr_srv_req_header(const lr_srv_req *r, const char *name, size_t *len) {
  size_t nl = strlen(name);
  uint32_t i;
  for (i = 0; i < r->nhdrs; i++)
    if (r->hdrs[i].name_len == nl && memcmp(r->head + r->hdrs[i].name, name, nl) == 0) {
      *len = r->hdrs[i].value_len;
      return r->head + r->hdrs[i].value;
    }
  return NULL;
}

int lr_srv_req_dispatch(lua_State *L, lr_srv_req *r) {
  return r->srv->app->dispatch(L, r);
}

void lr_srv_req_abandon(lr_srv_req *r) {
  r->conn = NULL;
  if (!r->body_done) lr_srv_req_body_end(r, LR_BODY_CLOSED);
  wake_reader(r);
  if (r->task) lr_task_cancel(r->task);
}

/* Frees r, or keeps it (and its head buffers) for c's next request. */
static void req_recycle(lr_conn *c, lr_srv_req *r) {
  lr_server *srv = r->srv;
  if (c->spare || c->closing || r->head_cap > 16384 || r->hdr_cap > 64) {
    lr_srv_req_free(r);
    return;
  }
  if (r->proto && r->proto->done) r->proto->done(r);
  if (srv->app->forget) srv->app->forget(r);
  free(r->body);
  r->body = NULL;
  c->spare = r;
  lr_server_unref(srv);
}

void lr_srv_req_free(lr_srv_req *r) {
  lr_server *srv = r->srv;
  if (r->proto && r->proto->done) r->proto->done(r);
  if (srv->app->forget) srv->app->forget(r);
  free(r->head);
  free(r->hdrs);
  free(r->body);
  free(r);
  lr_server_unref(srv);
}

void lr_srv_req_reply(lr_srv_req *r, int status, const char *text, int close) {
  static const char *const hdrs[] = {"content-type", "text/plain; charset=utf-8"};
  static const size_t lens[] = {12, 25};
  size_t n = strlen(text);
  if (r->responded || r->finished || r->conn == NULL) return;
  if (close) r->keep_alive = 0;
  r->proto->respond(r, status, hdrs, lens, 1, text, n, (int64_t)n, 1);
}

/* The handler task ended: answer if it did not (500 when it failed), then free r. */
static void req_task_done(lr_owner *o, lr_task *t) {
  lr_srv_req *r = (lr_srv_req *)o;
  lr_runtime *rt = t->rt;
  r->task = NULL;
  if (t->result == LR_RES_FAILED) {
    /* An error table with a 4xx status (assert(req:json()) on a malformed body) is
     * the client's fault: answered with that status, not reported. Anything else is
     * reported with the task's traceback, answered 500, and the server keeps going. */
    lua_State *L = rt->L;
    int status = 500, top = lua_gettop(L);
    lr_task_push_error(L, t);
    if (lua_istable(L, -1) && lua_getfield(L, -1, "status") == LUA_TNUMBER &&
        lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 400 && lua_tointeger(L, -1) <= 599)
      status = (int)lua_tointeger(L, -1);
    lua_settop(L, top);
    if (status >= 500) {
      lr_task_push_report(L, t);
      if (lua_isstring(L, -1)) {
        lr_stderr_begin(); /* clears a progress line drawn there (lr_base.h) */
        fprintf(stderr, "luarun: http.serve handler failed: %s\n", lua_tostring(L, -1));
        fflush(stderr);
        lr_stderr_end();
      }
      lua_pop(L, 1);
    }
    if (!r->responded) {
      char text[64];
      snprintf(text, sizeof text, "%s\n", lr_http_reason(status)[0] ? lr_http_reason(status) : "Error");
      lr_srv_req_reply(r, status, text, 0);
    } else if (!r->finished && r->conn) {
      /* Mid-body: the client must see a failure, not a clean short body. HTTP/2
       * resets just this stream (server_h2.c's done, below); HTTP/1 has only the
       * connection to cut. */
      r->keep_alive = 0;
      r->finished = 1;
      if (!r->conn->is_h2) lr_conn_close(r->conn, 1);
    }
  } else if (!r->responded && !r->upgraded) {
    /* Cancelled (shutdown, or the client went away): nothing to say, or 503. */
    if (r->conn) lr_srv_req_reply(r, 503, "Service Unavailable\n", 1);
  } else if (!r->finished && r->conn && !r->upgraded) {
    r->keep_alive = 0;
    r->finished = 1;
    if (!r->conn->is_h2) lr_conn_close(r->conn, 1);
  }
  if (r->conn && !r->upgraded && r->conn->req == r) {
    lr_conn *c = r->conn;
    c->req = NULL;
    r->conn = NULL;
    req_recycle(c, r);
    if (!c->closing && !c->is_h2) lr_h1_next(rt->L, c);
    return;
  }
  lr_srv_req_free(r);
}

/* ---- connections ---- */

static void server_maybe_done(lr_server *srv);

void lr_server_unref(lr_server *srv) {
  if (--srv->refs > 0) return;
  lr_tls_ctx_free(srv->o.tls);
  free(srv);
}

static void conn_start(lr_server *srv);

static void conn_handle_closed(lr_conn *c) {
  lr_server *srv = c->srv;
  if (--c->handles > 0) return;
  if (c->spare) {
    free(c->spare->head);
    free(c->spare->hdrs);
    free(c->spare);
  }
  if (c->next) c->next->prev = c->prev;
  if (c->prev) c->prev->next = c->next;
  else srv->conns = c->next;
  srv->nconns--;
  free(c);
  /* A connection left: let one waiting in the backlog in. */
  if (srv->backlogged > 0 && srv->listening && !srv->closing) {
    srv->backlogged--;
    conn_start(srv);
  }
  server_maybe_done(srv);
  lr_server_unref(srv);
}

static void on_timer_closed(uv_handle_t *h) {
  conn_handle_closed(h->data);
}

static void on_stream_closed(lr_stream *s) {
  lr_conn *c = s->ud;
  lr_srv_req *r = c->req;
  c->req = NULL;
  if (c->is_h2) lr_h2_free(c);
  else lr_h1_free(c);
  if (r) {
    /* Its handler task still runs: it learns the connection is gone. While the
     * runtime closes, no task runs again, so the request goes now. */
    if (c->srv->rt->closing) {
      r->conn = NULL;
      lr_srv_req_free(r);
    } else {
      lr_srv_req_abandon(r);
    }
  }
  conn_handle_closed(c);
}

void lr_conn_close(lr_conn *c, int abort) {
  if (c->closing) return;
  c->closing = 1;
  c->phase = LR_PHASE_DONE;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
  if (abort) lr_stream_close(&c->s);
  else lr_stream_finish(&c->s);
}

/* Each connection has one deadline, moved at every phase change, and one timer that
 * is re-armed only when the deadline comes before it: a keep-alive connection moves
 * its deadline a few times per request, and uv_timer_start/stop (a heap operation
 * each) were 6 % of a small request's instructions. When the timer fires early it
 * re-arms for the deadline. */
static void timeout_now(lr_conn *c) {
  switch (c->phase) {
  case LR_PHASE_HEAD:
    /* A request head that never finished (slowloris): 408, close. */
    lr_h1_error(c, 408, "Request Timeout\n");
    break;
  case LR_PHASE_HANDLER:
    if (c->req) {
      lr_srv_req *r = c->req;
      r->timed_out = 1;
      lr_srv_req_reply(r, 503, "Service Unavailable: the request took too long\n", 1);
      if (r->task) lr_task_cancel(r->task);
    }
    break;
  default:
    lr_conn_close(c, 1); /* idle keep-alive connection */
  }
}

static void on_timeout(uv_timer_t *tm) {
  lr_conn *c = tm->data;
  uint64_t now = uv_now(tm->loop);
  c->timer_due = 0;
  if (c->deadline == 0 || c->closing) return;
  if (now < c->deadline) {
    c->timer_due = c->deadline;
    uv_timer_start(&c->timer, on_timeout, c->deadline - now, 0);
    return;
  }
  c->deadline = 0;
  timeout_now(c);
}

void lr_conn_phase(lr_conn *c, int phase) {
  const lr_srv_opts *o = &c->srv->o;
  uint64_t ms = 0, now;
  if (c->closing) return;
  c->phase = phase;
  switch (phase) {
  case LR_PHASE_IDLE: ms = c->srv->closing ? 1 : o->idle_timeout; break;
  case LR_PHASE_HEAD: ms = o->header_timeout; break;
  case LR_PHASE_HANDLER: ms = o->request_timeout; break;
  default: break;
  }
  if (ms == 0) {
    c->deadline = 0; /* the timer, if armed, finds nothing to do */
    return;
  }
  now = uv_now(&c->srv->rt->loop);
  c->deadline = now + ms;
  if (c->timer_due == 0 || c->timer_due > c->deadline) {
    c->timer_due = c->deadline;
    uv_timer_start(&c->timer, on_timeout, ms, 0);
  }
}

static int h2_preface_prefix(const char *p, size_t n) {
  static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  return memcmp(p, preface, n < 24 ? n : 24) == 0;
}

static void on_conn_data(lr_stream *s, const char *p, size_t n) {
  lr_conn *c = s->ud;
  c->L = c->srv->rt->L;
  if (c->is_h2) {
    lr_h2_data(c, p, n);
    return;
  }
  if (!c->started) {
    const char *alpn = s->tls ? lr_tls_alpn(s) : NULL;
    c->started = 1;
    if ((alpn && strcmp(alpn, "h2") == 0) ||
        (!s->tls && c->srv->o.http2 && h2_preface_prefix(p, n))) {
      c->is_h2 = 1;
      lr_h1_free(c);
      uv_timer_stop(&c->timer);
      c->timer_due = c->deadline = 0;
      lr_h2_start(c, p, n);
      return;
    }
  }
  lr_h1_data(c, p, n);
}

static void on_conn_end(lr_stream *s, int status) {
  lr_conn *c = s->ud;
  lr_srv_req *r = c->req;
  /* EOF while a handler runs: the client went away (unless half_close says a shut
   * write side is not a disconnect, and the answer is still wanted). */
  if (r && status == UV_EOF && c->srv->o.half_close && !r->finished) {
    r->keep_alive = 0;
    return;
  }
  lr_conn_close(c, 1);
}

static void on_conn_drain(lr_stream *s) {
  lr_conn *c = s->ud;
  if (c->is_h2) { lr_h2_drain(c); return; } /* server_h2.c drains its own streams */
  if (c->req) wake_reader(c->req);
}

static void conn_start(lr_server *srv) {
  lr_conn *c = calloc(1, sizeof *c);
  if (c == NULL) {
    srv->backlogged++; /* retried when a connection leaves */
    return;
  }
  c->srv = srv;
  srv->refs++;
  lr_stream_init(srv->rt, &c->s, c);
  c->s.on_data = on_conn_data;
  c->s.on_end = on_conn_end;
  c->s.on_drain = on_conn_drain;
  c->s.on_closed = on_stream_closed;
  uv_timer_init(&srv->rt->loop, &c->timer);
  c->timer.data = c;
  c->handles = 2;
  c->next = srv->conns;
  if (srv->conns) srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;
  lr_h1_start(c);
  if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&c->s.tcp) < 0) {
    lr_conn_close(c, 1);
    return;
  }
  uv_tcp_nodelay(&c->s.tcp, 1);
  lr_stream_peer(&c->s, c->peer, sizeof c->peer);
  if (srv->o.tls && lr_tls_attach(&c->s, srv->o.tls, 1, NULL) < 0) {
    lr_conn_close(c, 1);
    return;
  }
  lr_conn_phase(c, LR_PHASE_HEAD);
  if (lr_stream_read(&c->s) < 0) lr_conn_close(c, 1);
}

static void on_connection(uv_stream_t *l, int status) {
  lr_server *srv = l->data;
  if (status < 0 || srv->closing) return; /* EMFILE and the like: libuv retries */
  if (srv->o.max_connections && srv->nconns >= srv->o.max_connections) {
    /* Leave it in the kernel's backlog: libuv stops watching the listener until
     * the next uv_accept, which a closing connection makes. */
    srv->backlogged++;
    return;
  }
  conn_start(srv);
}

/* ---- listening ---- */

static lr_server *all_servers;

static void close_all(lr_runtime *rt) {
  lr_server *srv, *next;
  for (srv = all_servers; srv; srv = next) {
    next = srv->next;
    if (srv->rt == rt) lr_server_abort(srv);
  }
}

static void on_server_handle_closed(uv_handle_t *h) {
  lr_server_unref(h->data);
}

lr_server *lr_server_listen(lr_runtime *rt, const lr_srv_opts *o, const lr_srv_app *app,
                            void *ud, char *err, size_t errlen) {
  static lr_runtime *closer_rt;
  lr_server *srv = calloc(1, sizeof *srv);
  struct sockaddr_storage ss;
  struct addrinfo hints, *res = NULL;
  char service[16];
  int rc, len = sizeof ss;
  if (srv == NULL) {
    snprintf(err, errlen, "not enough memory");
    lr_tls_ctx_free(o->tls);
    return NULL;
  }
  srv->rt = rt;
  srv->o = *o;
  srv->app = app;
  srv->ud = ud;
  srv->refs = 1; /* the box */
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  snprintf(service, sizeof service, "%d", o->port);
  /* A name (localhost) is looked up once, at start: blocking is fine here. */
  if (getaddrinfo(o->host, service, &hints, &res) != 0 || res == NULL) {
    snprintf(err, errlen, "cannot resolve host %s", o->host);
    lr_server_unref(srv);
    return NULL;
  }
  memcpy(&ss, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if ((rc = uv_tcp_init_ex(&rt->loop, &srv->listener, ss.ss_family)) < 0) {
    snprintf(err, errlen, "cannot make a socket: %s", uv_strerror(rc));
    lr_server_unref(srv);
    return NULL;
  }
  srv->listener.data = srv;
  srv->refs++;
  if (o->reuse_port) {
    uv_os_fd_t fd;
    int one = 1;
    if (uv_fileno((uv_handle_t *)&srv->listener, &fd) == 0)
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  }
  if ((rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0)) < 0 ||
      (rc = uv_listen((uv_stream_t *)&srv->listener, o->backlog > 0 ? o->backlog : 511,
                      on_connection)) < 0) {
    snprintf(err, errlen, "cannot listen on %s port %d: %s", o->host, o->port, uv_strerror(rc));
    srv->o.tls = NULL; /* the caller's error path frees nothing else; we free tls */
    lr_tls_ctx_free(o->tls);
    uv_close((uv_handle_t *)&srv->listener, on_server_handle_closed);
    lr_server_unref(srv);
    return NULL;
  }
  uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len);
  srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
  snprintf(srv->host, sizeof srv->host, "%s", o->host);
  srv->listening = 1;
  uv_timer_init(&rt->loop, &srv->grace);
  srv->grace.data = srv;
  srv->refs++;
  srv->next = all_servers;
  all_servers = srv;
  if (closer_rt != rt) { /* once per runtime (there is one per Lua state) */
    closer_rt = rt;
    lr_runtime_on_close(rt, close_all);
  }
  return srv;
}

static void unlink_server(lr_server *srv) {
  lr_server **p;
  for (p = &all_servers; *p; p = &(*p)->next)
    if (*p == srv) {
      *p = srv->next;
      return;
    }
}

static void server_maybe_done(lr_server *srv) {
  lr_task *t;
  if (!srv->closing || srv->nconns > 0 || srv->closed) return;
  srv->closed = 1;
  if (!uv_is_closing((uv_handle_t *)&srv->grace)) {
    uv_timer_stop(&srv->grace);
    uv_close((uv_handle_t *)&srv->grace, on_server_handle_closed);
  }
  unlink_server(srv);
  while ((t = lr_waitq_pop(&srv->waiters)) != NULL) lr_task_wake(t, LR_WAKE_DONE);
  if (srv->app->closed) srv->app->closed(srv);
}

/* Cancels a connection's request and closes it, now. */
static void cut_conn(lr_conn *c) {
  if (c->req && c->req->task) {
    if (!c->req->responded) lr_srv_req_reply(c->req, 503, "Service Unavailable\n", 1);
    lr_task_cancel(c->req->task);
  }
  lr_conn_close(c, 1);
}

static void on_grace(uv_timer_t *tm) {
  lr_server *srv = tm->data;
  lr_conn *c, *next;
  for (c = srv->conns; c; c = next) {
    next = c->next;
    if (!c->closing) cut_conn(c);
  }
}

void lr_server_close(lr_server *srv, double grace) {
  lr_conn *c, *next;
  if (srv->closing) return;
  srv->closing = 1;
  if (srv->listening) {
    srv->listening = 0;
    uv_close((uv_handle_t *)&srv->listener, on_server_handle_closed);
  }
  for (c = srv->conns; c; c = next) {
    next = c->next;
    if (c->ws) { /* a WebSocket: 1001, going away */
      lr_ws_close_now(c->ws, 1001, "server shutting down", 20);
      continue;
    }
    if (c->closing) continue;
    if (c->is_h2) lr_h2_shutdown(c);
    else if (c->req) c->req->keep_alive = 0; /* answer it, then close */
    else lr_conn_close(c, 0);                /* idle: nothing in flight */
  }
  if (grace >= 0 && srv->nconns > 0 && !srv->closed)
    uv_timer_start(&srv->grace, on_grace, (uint64_t)(grace * 1000), 0);
  server_maybe_done(srv);
}

void lr_server_abort(lr_server *srv) {
  lr_conn *c, *next;
  lr_server_close(srv, -1);
  for (c = srv->conns; c; c = next) {
    next = c->next;
    if (!c->closing) cut_conn(c);
  }
}

void lr_conn_upgrade(lr_conn *c, struct lr_ws *ws) {
  lr_srv_req *r = c->req;
  c->ws = ws;
  if (r) {
    r->upgraded = r->responded = r->finished = 1;
    r->conn = NULL;
    c->req = NULL;
  }
  lr_h1_free(c);
  c->closing = 1;
  c->phase = LR_PHASE_DONE;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

void lr_conn_released(lr_stream *s) {
  conn_handle_closed((lr_conn *)s);
}
