/* http.c: the HTTP engine: one libcurl multi handle per client, driven by libuv.
 *
 * curl tells us which sockets to watch (socket callback) and when to call it back
 * (timer callback); libuv tells us when a socket is ready. Both paths end in
 * curl_multi_socket_action, after which finished transfers are drained with
 * curl_multi_info_read and their tasks woken (lr_task_wake only queues: no Lua runs
 * here, so nothing can call back into curl from inside its own callbacks, which curl
 * refuses with CURLM_RECURSIVE_API_CALL: curl #3177, #5354).
 *
 * Sockets: we open and close every connection socket ourselves
 * (CURLOPT_OPENSOCKETFUNCTION / CLOSESOCKETFUNCTION), so a poll handle is always
 * stopped before its descriptor is closed, and a descriptor number that the kernel
 * hands out again gets a fresh context instead of a stale poll handle (libuv PR #2686,
 * pyuv #54). CURL_POLL_REMOVE is taken as a hint only (curl #3597, #14976, #17949,
 * #16026). Sockets curl opens without us (the threaded resolver's wake-up pipe) get
 * an unowned context that REMOVE, or a new socket on the same number, retires.
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "curl_api.h"

#define FREE_REQ_MAX 256     /* requests (with their easy handles) kept for reuse */
#define BUF_KEEP (16 * 1024) /* a recycled request keeps buffers up to this size */

typedef struct sockctx {
  uv_poll_t poll;            /* data points back here */
  lr_http_client *c;
  curl_socket_t fd;
  int events;                /* CURL_CSELECT_IN/OUT that curl asked us to watch */
  int polled;                /* UV_READABLE/WRITABLE the poll handle is started for */
  uint8_t inited, owned;
} sockctx;

struct lr_http_client {
  lr_runtime *rt;
  CURLM *multi;
  uv_timer_t timer;
  sockctx **socks;           /* by descriptor number */
  int nsocks;                /* capacity of socks */
  int nsockets;              /* sockets we opened for curl and it has not closed */
  int npolls;                /* poll handles not yet through their close callback */
  int pending_closes;        /* uv handles whose close callback has not run */
  int cancel_pending;        /* cancels deferred while inside curl */
  int active;                /* transfers in the multi handle */
  uint32_t closes;           /* sockets closed so far (see lr_http_req_release) */
  lr_http_req *live;
  lr_http_req *free_reqs;    /* released requests, linked through next */
  int nfree;
  lr_http_client *next_client;
  /* The cookie jar (lim->cookies): shared by every easy handle of the client, plus
   * one handle that never transfers, through which the jar is read and written.
   * No lock callbacks: only the loop's thread runs this client's transfers. */
  CURLSH *share;
  CURL *jar;
  lr_http_waits waits;       /* delay_per_host gates and retry waits (http_wait.c) */
  uint8_t closed, in_curl, lua_owned;
  uint8_t env_proxy;         /* a proxy variable was set when the client was made */
};

static void req_free(lr_http_req *r);

/* Every client, so the runtime closer can find those of its runtime. */
static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static lr_http_client *clients;

/* ---- byte buffers ---- */

static int buf_add(lr_buf *b, const char *p, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    char *q;
    while (cap < b->n + n) cap *= 2;
    q = realloc(b->p, cap);
    if (q == NULL) return -1;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
  return 0;
}

static void buf_free(lr_buf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

/* ---- freeing the client once nothing refers to it ---- */

static void maybe_free(lr_http_client *c) {
  lr_http_client **pp;
  /* A live request belongs to a task that may still resume and read it: the
   * request's release (its continuation, or the client's close when the runtime
   * closes) comes back here. */
  if (!c->closed || c->pending_closes > 0 || c->lua_owned || c->live) return;
  pthread_mutex_lock(&clients_lock);
  for (pp = &clients; *pp; pp = &(*pp)->next_client)
    if (*pp == c) {
      *pp = c->next_client;
      break;
    }
  pthread_mutex_unlock(&clients_lock);
  /* Every easy handle attached to the share is gone by now (curl refuses to free a
   * share in use): the requests' went at close or at their release. */
  if (c->jar) lr_curl.easy_cleanup(c->jar);
  if (c->share) lr_curl.share_cleanup(c->share);
  free(c->socks);
  free(c);
}

static void handle_closed_cb(uv_handle_t *h) {
  lr_http_client *c = h->data;
  c->pending_closes--;
  maybe_free(c);
}

static void poll_closed_cb(uv_handle_t *h) {
  sockctx *ctx = (sockctx *)h;
  lr_http_client *c = ctx->c;
  free(ctx);
  c->npolls--;
  c->pending_closes--;
  maybe_free(c);
}

/* ---- socket contexts, one per descriptor ---- */

static sockctx *sock_get(lr_http_client *c, curl_socket_t fd) {
  return fd >= 0 && fd < c->nsocks ? c->socks[fd] : NULL;
}

static int sock_put(lr_http_client *c, curl_socket_t fd, sockctx *ctx) {
  if (fd >= c->nsocks) {
    int n = c->nsocks ? c->nsocks : 64;
    sockctx **p;
    while (n <= fd) n *= 2;
    p = realloc(c->socks, (size_t)n * sizeof *p);
    if (p == NULL) return -1;
    memset(p + c->nsocks, 0, (size_t)(n - c->nsocks) * sizeof *p);
    c->socks = p;
    c->nsocks = n;
  }
  c->socks[fd] = ctx;
  return 0;
}

static sockctx *sock_new(lr_http_client *c, curl_socket_t fd, int owned) {
  sockctx *ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL) return NULL;
  ctx->c = c;
  ctx->fd = fd;
  ctx->owned = (uint8_t)owned;
  if (sock_put(c, fd, ctx) != 0) {
    free(ctx);
    return NULL;
  }
  return ctx;
}

/* Forgets the context: stops polling now (before anyone closes the descriptor) and
 * frees it once libuv is done with the handle. */
static void sock_retire(lr_http_client *c, sockctx *ctx) {
  if (c->socks[ctx->fd] == ctx) c->socks[ctx->fd] = NULL;
  if (ctx->inited) {
    uv_poll_stop(&ctx->poll);
    uv_close((uv_handle_t *)&ctx->poll, poll_closed_cb);
  } else {
    free(ctx);
  }
}

static curl_socket_t opensocket_cb(void *clientp, curlsocktype purpose,
                                   struct curl_sockaddr *a) {
  lr_http_client *c = clientp;
  curl_socket_t fd;
  sockctx *old;
  (void)purpose;
  fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
  if (fd < 0) return CURL_SOCKET_BAD;
  /* A context still on this number belongs to a socket closed behind our back (an
   * unowned one whose REMOVE never came): retire it, never reuse its poll handle. */
  if ((old = sock_get(c, fd)) != NULL) sock_retire(c, old);
  if (sock_new(c, fd, 1) == NULL) {
    close(fd);
    return CURL_SOCKET_BAD;
  }
  c->nsockets++;
  return fd;
}

static int closesocket_cb(void *clientp, curl_socket_t fd) {
  lr_http_client *c = clientp;
  sockctx *ctx = sock_get(c, fd);
  c->closes++;
  if (ctx) {
    if (ctx->owned) c->nsockets--;
    sock_retire(c, ctx);
  }
  return close(fd);
}

/* ---- driving curl ---- */

/* The timer is ref'd only while transfers run: it is what keeps the loop alive
 * while curl resolves a name or waits for a connection slot with no socket polled,
 * and an idle client must not keep the loop alive. */
static void req_added(lr_http_client *c, lr_http_req *r) {
  r->in_multi = 1;
  if (c->active++ == 0) uv_ref((uv_handle_t *)&c->timer);
}

static void req_removed(lr_http_client *c, lr_http_req *r) {
  if (!r->in_multi) return;
  lr_curl.multi_remove_handle(c->multi, r->easy);
  r->in_multi = 0;
  if (--c->active == 0) uv_unref((uv_handle_t *)&c->timer);
}

/* For the observers (--trace): the transfer of r->task ended (or was cancelled), with
 * its method, URL, status, size and times; the wait spans [started, finished]. */
static void describe_outcome(lr_http_req *r, int cancelled) {
  lr_wait_desc d = {"http", NULL, r->started, r->finished, 0, {{0}}};
  char *url = NULL, *method = NULL, name[2048];
  long code = 0;
  curl_off_t connect = 0, first = 0;
  if (r->task == NULL) return;
  lr_curl.easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url);
  lr_curl.easy_getinfo(r->easy, CURLINFO_EFFECTIVE_METHOD, &method);
  lr_curl.easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
  lr_curl.easy_getinfo(r->easy, CURLINFO_CONNECT_TIME_T, &connect);
  lr_curl.easy_getinfo(r->easy, CURLINFO_STARTTRANSFER_TIME_T, &first);
  if (method == NULL) method = "GET";
  snprintf(name, sizeof name, "%s %s", method, url ? url : "");
  d.name = name;
  lr_wait_str(&d, "method", method);
  lr_wait_str(&d, "url", url ? url : "");
  lr_wait_num(&d, "status", (double)code, 1);
  lr_wait_num(&d, "bytes", (double)r->received, 1);
  lr_wait_num(&d, "connect_ms", (double)connect / 1e3, 0);
  lr_wait_num(&d, "first_byte_ms", (double)first / 1e3, 0);
  if (cancelled) lr_wait_num(&d, "cancelled", 1, 2);
  if (!cancelled && r->done && r->result != CURLE_OK)
    lr_wait_str(&d, "error", r->errbuf[0] ? r->errbuf : lr_curl.easy_strerror(r->result));
  lr_hooks_wait_end(r->client->rt, r->task, &d);
}

static void drain(lr_http_client *c) {
  CURLMsg *m;
  int left;
  while ((m = lr_curl.multi_info_read(c->multi, &left)) != NULL) {
    lr_http_req *r = NULL;
    CURL *easy;
    CURLcode res;
    if (m->msg != CURLMSG_DONE) continue;
    easy = m->easy_handle;
    res = m->data.result;
    /* m is not touched after remove_handle. */
    lr_curl.easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
    if (r == NULL) {
      lr_curl.multi_remove_handle(c->multi, easy);
      continue;
    }
    req_removed(c, r);
    r->result = res;
    r->done = 1;
    r->finished = uv_hrtime();
    if (lr_observed(c->rt)) describe_outcome(r, 0);
    if (r->task) lr_task_wake(r->task, LR_WAKE_DONE);
  }
}

static void finish_deferred_cancels(lr_http_client *c) {
  lr_http_req *r;
  c->cancel_pending = 0;
  for (r = c->live; r; r = r->next)
    if (r->aborted) req_removed(c, r);
}

/* Every call of socket_action is followed by a drain (a finished transfer that is
 * not drained waits for the next event: the "hangs until the timeout" bug,
 * tarantool #3452). */
static void timer_fire_cb(uv_timer_t *t);

static void action(lr_http_client *c, curl_socket_t fd, int flags) {
  int running, rc;
  if (c->closed) return;
  c->in_curl = 1;
  rc = lr_curl.multi_socket_action(c->multi, fd, flags, &running);
  c->in_curl = 0;
  /* Out of memory inside curl can leave a transfer without its next timeout (it
   * then waited forever: the malloc-failure sweep's server script). Ask curl again
   * shortly: its timeout pass finds the transfers whose time is up. */
  if (rc != CURLM_OK && !c->closed) uv_timer_start(&c->timer, timer_fire_cb, 10, 0);
  if (c->cancel_pending) finish_deferred_cancels(c);
  drain(c);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  sockctx *ctx = (sockctx *)h;
  int flags = 0;
  if (ctx->events == 0) {
    /* An idle connection curl stopped watching (see socket_cb) became readable:
     * the server closed it, most likely. Stop polling; curl finds out when it next
     * checks the connection. */
    uv_poll_stop(&ctx->poll);
    ctx->polled = 0;
    return;
  }
  if (status == UV_EAGAIN) return; /* a spurious wake-up */
  if (status < 0) {
    /* libuv reports POLLERR as UV_EBADF and nothing else. curl must hear of it, or
     * the transfer stalls; with the events it waits for as well, it reads or
     * writes and meets the real error: a reset on a reused keep-alive connection
     * is then CURLE_RECV_ERROR, which curl retries on a fresh connection, where a
     * bare CURL_CSELECT_ERR fails the request ("select/poll returned error"). */
    flags = CURL_CSELECT_ERR | ctx->events;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  action(ctx->c, ctx->fd, flags);
}

static void timer_fire_cb(uv_timer_t *t) {
  action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_TIMERFUNCTION: -1 stops the timer; 0 arms it to fire on the next loop
 * turn, so socket_action is never called from inside this callback. */
static int timer_cb(CURLM *m, long timeout_ms, void *userp) {
  lr_http_client *c = userp;
  (void)m;
  if (timeout_ms < 0 || c->closed) uv_timer_stop(&c->timer);
  else uv_timer_start(&c->timer, timer_fire_cb, (uint64_t)timeout_ms, 0);
  return 0;
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop polling one descriptor.
 *
 * curl stops watching a keep-alive connection between two requests and watches it
 * again for the next one; with libuv, each stop and start is an epoll_ctl call
 * (uv_poll_start re-adds the descriptor even for the same events). So a REMOVE of a
 * socket we own leaves the poll handle started, only unref'd (an idle connection
 * must not keep the loop alive), and a start for the events already polled does
 * nothing. The poll handle is stopped for real before its descriptor is closed
 * (closesocket_cb) or when the idle socket turns readable (poll_cb). */
static int socket_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
  lr_http_client *c = userp;
  sockctx *ctx = sock_get(c, fd);
  int events = 0;
  (void)e;
  (void)socketp;
  if (what == CURL_POLL_REMOVE) {
    if (ctx == NULL) return 0;        /* already closed, or never seen: fine */
    if (ctx->owned) {
      if (ctx->inited) uv_unref((uv_handle_t *)&ctx->poll);
      ctx->events = 0;                /* closesocket_cb retires it */
    } else {
      sock_retire(c, ctx);
    }
    return 0;
  }
  if (c->closed) return 0;
  if (ctx == NULL && (ctx = sock_new(c, fd, 0)) == NULL) return -1;
  if (!ctx->inited) {
    if (uv_poll_init_socket(&c->rt->loop, &ctx->poll, fd) != 0) return -1;
    ctx->inited = 1;
    ctx->poll.data = ctx;
    c->npolls++;
    c->pending_closes++;
  }
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  uv_ref((uv_handle_t *)&ctx->poll);
  ctx->events = ((what & CURL_POLL_IN) ? CURL_CSELECT_IN : 0) |
                ((what & CURL_POLL_OUT) ? CURL_CSELECT_OUT : 0);
  if (events != ctx->polled) {
    uv_poll_start(&ctx->poll, events, poll_cb);
    ctx->polled = events;
  }
  return 0;
}

/* ---- transfers' own callbacks (data only: no curl or Lua calls in here) ---- */

static size_t write_cb(char *p, size_t size, size_t n, void *ud) {
  lr_http_req *r = ud;
  size_t len = size * n;
  r->received += (curl_off_t)len;
  if (r->max_body >= 0 && r->received > r->max_body) {
    r->too_large = 1;
    return 0;
  }
  if (r->out_fd >= 0) {
    size_t off = 0;
    while (off < len) {
      ssize_t w = write(r->out_fd, p + off, len - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        r->write_failed = 1;
        r->write_errno = errno;
        return 0;
      }
      off += (size_t)w;
    }
    return len;
  }
  return buf_add(&r->body, p, len) == 0 ? len : 0;
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud) {
  lr_http_req *r = ud;
  size_t len = size * n;
  /* A status line starts a new response (a redirect, a 100 Continue): keep only the
   * headers of the last one. */
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    r->head.n = 0;
    r->head_ended = 0;
  }
  /* The blank line that ends a header block (HTTP/2's too: curl writes one). libcurl
   * 7.88 ends a transfer whose connection closes before it with CURLE_OK, as if the
   * headers were the whole response (issue 23); its absence is how we tell. */
  if ((len == 2 && p[0] == '\r' && p[1] == '\n') || (len == 1 && p[0] == '\n'))
    r->head_ended = 1;
  return buf_add(&r->head, p, len) == 0 ? len : 0;
}

/* libcurl 7.88's limits on response headers, as measured against a local server
 * (spec/http_faults_spec.lua): a line of 100 KiB or more, CRLF included, fails with
 * CURLE_OUT_OF_MEMORY and no message; more than 300 KiB of lines in all, with
 * CURLE_RECV_ERROR and "Too large response headers: N > 307200". */
#define TOTAL_LIMIT_MSG "Too large response headers"

lr_http_head_fault lr_http_req_head_fault(const lr_http_req *r) {
  long sent = 0;
  if (r->head_ended) return LR_HTTP_HEAD_OK;
  switch (r->result) {
    case CURLE_OK:
      return LR_HTTP_HEAD_CUT;
    case CURLE_OUT_OF_MEMORY:
      /* Once the request is out and before the headers end, the header buffer is
       * what fails: a real allocation failure there reads the same, and is rare. */
      lr_curl.easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &sent);
      return sent > 0 ? LR_HTTP_HEAD_LINE_LIMIT : LR_HTTP_HEAD_OK;
    case CURLE_RECV_ERROR:
      return strncmp(r->errbuf, TOTAL_LIMIT_MSG, sizeof TOTAL_LIMIT_MSG - 1) == 0
                 ? LR_HTTP_HEAD_TOTAL_LIMIT : LR_HTTP_HEAD_OK;
    default:
      return LR_HTTP_HEAD_OK;
  }
}

/* ---- the runtime closer ---- */

/* The runtime is going away: close its clients, and release the requests of tasks
 * that will never resume to do it themselves (a client closed earlier may still
 * have some). */
static void close_all(lr_runtime *rt) {
  for (;;) {
    lr_http_client *c;
    pthread_mutex_lock(&clients_lock);
    for (c = clients; c; c = c->next_client)
      if (c->rt == rt && (!c->closed || c->live)) break;
    pthread_mutex_unlock(&clients_lock);
    if (c == NULL) break;
    lr_http_client_close(c);
    for (;;) {
      lr_http_req *r = c->live;
      int last = r == NULL || r->next == NULL;
      if (r) lr_http_req_release(r); /* releasing the last one may free c */
      if (last) break;
    }
  }
}

static void register_closer(lr_runtime *rt) {
  int i;
  for (i = 0; i < rt->ncloser; i++)
    if (rt->closers[i] == close_all) return;
  lr_runtime_on_close(rt, close_all);
}

/* ---- clients ---- */

/* Whether libcurl would find a proxy setting in the environment. */
static int env_has_proxy(void) {
  static const char *const names[] = {
    "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
    "no_proxy", "NO_PROXY", NULL
  };
  int i;
  for (i = 0; names[i]; i++)
    if (getenv(names[i])) return 1;
  return 0;
}

/* The jar: a share holding cookies, and the handle that reads and writes it. */
static int jar_new(lr_http_client *c) {
  if ((c->share = lr_curl.share_init()) == NULL) return -1;
  if (lr_curl.share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_COOKIE) != CURLSHE_OK ||
      (c->jar = lr_curl.easy_init()) == NULL) {
    lr_curl.share_cleanup(c->share);
    c->share = NULL;
    return -1;
  }
  lr_curl.easy_setopt(c->jar, CURLOPT_SHARE, c->share);
  return 0;
}

lr_http_client *lr_http_client_new(lr_runtime *rt, const lr_http_limits *lim) {
  lr_http_client *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->rt = rt;
  c->env_proxy = (uint8_t)env_has_proxy();
  c->lua_owned = 1;
  c->waits.delay = lim->delay_per_host > 0 ? (uint64_t)(lim->delay_per_host * 1e9) : 0;
  if (lim->cookies && jar_new(c) != 0) {
    free(c);
    return NULL;
  }
  c->multi = lr_curl.multi_init();
  if (c->multi == NULL) goto fail;
  uv_timer_init(&rt->loop, &c->timer);
  c->timer.data = c;
  uv_unref((uv_handle_t *)&c->timer); /* an idle client does not keep the loop alive */
  lr_curl.multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
  lr_curl.multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  lr_curl.multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
  lr_curl.multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  /* Idle connections kept for reuse. A cache smaller than the connection limit
   * closes connections it could reuse (seen in Tarantool's client), so keep at
   * least as many as may be open; without a limit, 100 (curl's default, 4 per
   * transfer added, would keep 4000 idle sockets after a burst of 1000). */
  lr_curl.multi_setopt(c->multi, CURLMOPT_MAXCONNECTS,
                       lim->max_connections > 100 ? lim->max_connections : 100L);
  if (lim->max_connections > 0)
    lr_curl.multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, lim->max_connections);
  if (lim->max_per_host > 0)
    lr_curl.multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, lim->max_per_host);
  pthread_mutex_lock(&clients_lock);
  c->next_client = clients;
  clients = c;
  pthread_mutex_unlock(&clients_lock);
  register_closer(rt);
  return c;
fail:
  if (c->jar) lr_curl.easy_cleanup(c->jar);
  if (c->share) lr_curl.share_cleanup(c->share);
  free(c);
  return NULL;
}

int lr_http_client_closed(const lr_http_client *c) {
  return c->closed;
}

void lr_http_client_close(lr_http_client *c) {
  lr_http_req *r;
  int fd;
  if (c->closed) return;
  c->closed = 1;
  lr_http_waits_close(&c->waits);
  /* Order (NOTES.md): requests out of the multi, multi cleanup (curl closes its
   * cached connections through closesocket_cb), then every remaining poll handle
   * and the timer; memory goes in the last close callback. */
  for (r = c->live; r; r = r->next) {
    req_removed(c, r);
    if (!r->done) {
      r->done = 1;
      r->aborted = 1;
      if (r->task) lr_task_wake(r->task, LR_WAKE_DONE);
    }
  }
  while ((r = c->free_reqs) != NULL) {
    c->free_reqs = r->next;
    req_free(r);
  }
  c->nfree = 0;
  lr_curl.multi_cleanup(c->multi);
  c->multi = NULL;
  for (fd = 0; fd < c->nsocks; fd++)
    if (c->socks[fd]) sock_retire(c, c->socks[fd]);
  c->pending_closes++;
  uv_close((uv_handle_t *)&c->timer, handle_closed_cb);
}

void lr_http_client_unown(lr_http_client *c) {
  lr_http_client_close(c);
  c->lua_owned = 0;
  maybe_free(c);
}

lr_http_waits *lr_http_client_waits(lr_http_client *c) {
  return &c->waits;
}

int lr_http_client_has_jar(const lr_http_client *c) {
  return c->jar != NULL;
}

int lr_http_cookies_get(lr_http_client *c, struct curl_slist **list) {
  *list = NULL;
  if (c->jar == NULL) return -1;
  return lr_curl.easy_getinfo(c->jar, CURLINFO_COOKIELIST, list) == CURLE_OK ? 0 : -1;
}

int lr_http_cookies_set(lr_http_client *c, const char *line) {
  if (c->jar == NULL) return -1;
  return lr_curl.easy_setopt(c->jar, CURLOPT_COOKIELIST, line ? line : "ALL") == CURLE_OK
             ? 0 : -1;
}

void lr_http_client_counts(const lr_http_client *c, int *reqs, int *sockets, int *polls) {
  const lr_http_req *r;
  int n = 0;
  for (r = c->live; r; r = r->next) n++;
  *reqs = n;
  *sockets = c->nsockets;
  *polls = c->npolls;
}

/* ---- requests ---- */

static void req_free(lr_http_req *r) {
  lr_curl.easy_cleanup(r->easy);
  buf_free(&r->body);
  buf_free(&r->head);
  free(r->applied.custom);
  free(r);
}

/* The options every request has; r->applied as curl's defaults for the rest. */
static void easy_base(lr_http_req *r) {
  lr_http_client *c = r->client;
  CURL *e = r->easy;
  lr_curl.easy_setopt(e, CURLOPT_PRIVATE, r);
  lr_curl.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  lr_curl.easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  lr_curl.easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
  lr_curl.easy_setopt(e, CURLOPT_WRITEDATA, r);
  lr_curl.easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
  lr_curl.easy_setopt(e, CURLOPT_HEADERDATA, r);
  lr_curl.easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
  lr_curl.easy_setopt(e, CURLOPT_OPENSOCKETDATA, c);
  lr_curl.easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, closesocket_cb);
  lr_curl.easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c);
  lr_curl.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  lr_curl.easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  lr_curl.easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* every decoder curl has */
  if (c->share) {
    /* The jar. Since libcurl 7.67 a share only supplies it: the handle's cookie
     * engine is off until COOKIEFILE is set ("" reads no file). curl_easy_reset
     * drops both, and every reset handle comes back here. */
    lr_curl.easy_setopt(e, CURLOPT_SHARE, c->share);
    lr_curl.easy_setopt(e, CURLOPT_COOKIEFILE, "");
  }
  if (!c->env_proxy) {
    /* No proxy variables: say so, or libcurl looks up five of them in the
     * environment for every request. */
    lr_curl.easy_setopt(e, CURLOPT_PROXY, "");
    lr_curl.easy_setopt(e, CURLOPT_NOPROXY, "");
  }
  free(r->applied.custom);
  memset(&r->applied, 0, sizeof r->applied);
  r->applied.max_redirects = -1; /* libcurl 7.x's default: no limit */
  r->applied.http_version = CURL_HTTP_VERSION_2TLS; /* the default since 7.62 */
}

lr_http_req *lr_http_req_new(lr_http_client *c) {
  lr_http_req *r;
  if (c->closed) return NULL;
  if ((r = c->free_reqs) != NULL) {
    c->free_reqs = r->next;
    c->nfree--;
    /* Clear the per-request part; the handle, buffers and r->applied stay. */
    memset(&r->task, 0, sizeof *r - offsetof(lr_http_req, task));
    r->body.n = r->head.n = 0;
  } else {
    r = calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    r->client = c;
    if ((r->easy = lr_curl.easy_init()) == NULL) {
      free(r);
      return NULL;
    }
    easy_base(r);
  }
  r->out_fd = -1;
  r->max_body = -1;
  r->prev = NULL;
  r->next = c->live;
  if (c->live) c->live->prev = r;
  c->live = r;
  return r;
}

int lr_http_req_submit(lr_http_req *r, lr_task *t) {
  lr_http_client *c = r->client;
  if (c->closed || lr_curl.multi_add_handle(c->multi, r->easy) != CURLM_OK) return -1;
  req_added(c, r);
  r->task = t;
  r->closes_at_submit = c->closes;
  r->started = uv_hrtime();
  lr_waitq_push(&r->q, t);
  return 0;
}

void lr_http_req_cancel(lr_task *t) {
  lr_http_req *r = container_of(t->inq, lr_http_req, q);
  lr_http_client *c = r->client;
  r->aborted = 1;
  if (r->in_multi) {
    if (c->in_curl) {
      /* Never reached today (no Lua runs inside curl), but if a cancel ever comes
       * from inside a curl callback, curl would refuse the removal: defer it. */
      c->cancel_pending = 1;
    } else {
      req_removed(c, r);
    }
  }
  if (lr_observed(c->rt)) describe_outcome(r, 1);
  lr_task_wake(t, LR_WAKE_CANCELLED);
}

/* A buffer kept for the next request, unless it grew large. */
static void buf_recycle(lr_buf *b) {
  if (b->cap > BUF_KEEP) buf_free(b);
  b->n = 0;
}

void lr_http_req_release(lr_http_req *r) {
  lr_http_client *c = r->client;
  if (c->multi) req_removed(c, r);
  if (r->task && r->q.head) lr_waitq_remove(&r->q, r->task);
  if (r->prev) r->prev->next = r->next;
  else c->live = r->next;
  if (r->next) r->next->prev = r->prev;
  if (r->out_fd >= 0) close(r->out_fd);
  r->out_fd = -1;
  if (c->closed || c->nfree >= FREE_REQ_MAX) {
    lr_curl.slist_free_all(r->headers);
    req_free(r);
    if (c->closed) maybe_free(c);
    return;
  }
  if (!r->tainted) {
    /* libcurl before 8.17 counts "connection died, retrying a fresh connect" per
     * handle, not per request, and only curl_easy_reset clears the count: after five
     * retries over a handle's life, a request fails with "Connection died, tried 5
     * times" (curl #18926). A retry closes the dead connection and opens or takes
     * another, so a request that saw a socket closed or a connection made resets
     * its handle; steady keep-alive traffic does neither. */
    long nconn = 0;
    lr_curl.easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &nconn);
    if (nconn > 0 || c->closes != r->closes_at_submit) r->tainted = 1;
  }
  if (r->tainted) {
    /* libcurl 7.88 keeps the COOKIEFILE list in the handle's options, and
     * curl_easy_reset clears them without freeing it (later versions moved it):
     * free it first. NULL also detaches the handle from the jar, which a shared
     * jar survives; easy_base attaches it again. */
    if (c->share) lr_curl.easy_setopt(r->easy, CURLOPT_COOKIEFILE, (char *)NULL);
    lr_curl.easy_reset(r->easy);
    easy_base(r);
  } else if (r->headers) {
    /* curl must not keep a pointer to the list freed below. */
    lr_curl.easy_setopt(r->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
  }
  lr_curl.slist_free_all(r->headers);
  r->headers = NULL;
  buf_recycle(&r->body);
  buf_recycle(&r->head);
  r->task = NULL;
  r->next = c->free_reqs;
  c->free_reqs = r;
  c->nfree++;
}
