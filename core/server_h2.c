/* server_h2.c: HTTP/2 on a server connection, on nghttp2's server session (1.52:
 * nghttp2_session_mem_recv / mem_send).
 *
 * Each stream that carries a request is an lr_srv_req, dispatched when its header
 * block is in; its response goes out through h2_proto. A stream's state (h2s) lives
 * as long as nghttp2's stream (until on_stream_close) or the connection, whichever
 * ends first; the request may outlive both (its handler task still runs): it is then
 * abandoned (r->conn = NULL, the task cancelled) unless its response was complete.
 *
 * Output: the protocol calls (respond, write, consumed) only queue frames in the
 * session and mark the connection; a uv_prepare handle runs mem_send once per loop
 * turn, before the loop polls, so what the handlers of one turn answered leaves in
 * one block (one write). Input handling flushes right after mem_recv. The output is
 * capped: above LR_STREAM_HIGH bytes queued on the stream, frames stay in the session
 * and reading pauses until the stream drains (lr_h2_drain).
 *
 * Inbound flow control is manual (no_auto_window_update): request body bytes are
 * consumed when the handler reads them, so a slow handler backpressures an upload.
 *
 * The connection's timer (c->timer) is ours once HTTP/2 starts: the idle timeout
 * while no request runs, the earliest request_timeout deadline while some do, and the
 * wait for the PING that follows the shutdown notice.
 */
#include <stdlib.h>
#include <string.h>
#include <nghttp2/nghttp2.h>
#include "lr_net.h"

#define H2_MAX_STREAMS 100
#define H2_CONN_WINDOW (1 << 20)   /* the connection's receive window */
#define H2_SHUTDOWN_WAIT_MS 1000   /* at most this long for the shutdown PING's ack */
#define H2_SCRATCH (64 * 1024)     /* mem_send output is gathered in blocks of this */

typedef struct h2conn h2conn;
typedef struct h2s h2s;

struct h2s {
  h2conn *h;
  lr_srv_req *r;         /* NULL once the request is freed (or never was) */
  int32_t id;
  char *out;             /* response body not yet taken by nghttp2: [out_pos, out_len) */
  size_t out_len, out_pos, out_cap;
  size_t head_bytes;     /* request head so far (max_header_size) */
  size_t unconsumed;     /* body bytes received and not yet given back (flow control) */
  uint64_t deadline;     /* uv_now when request_timeout ends for the handler (dispatched) */
  int fail;              /* a status to answer instead of dispatching (431, 503) */
  uint32_t authority, authority_len; /* :authority in r->head (host) */
  uint8_t has_authority, has_host;
  uint8_t dispatched;    /* the handler was started */
  uint8_t submitted;     /* the response's HEADERS are submitted */
  uint8_t out_last;      /* no more body after out */
  uint8_t deferred;      /* the data provider returned DEFERRED */
  uint8_t rst_after;     /* reset (NO_ERROR) once our END_STREAM is out: the body is unwanted */
  uint8_t drop_body;     /* DATA is consumed and thrown away */
  h2s *next, *prev;
};

struct h2conn {
  uv_prepare_t prep;     /* the flush of a loop turn (closed and freed with the conn) */
  lr_conn *c;
  nghttp2_session *ses;
  h2s *streams;          /* every stream state (a list) */
  size_t busy;           /* dispatched streams not yet closed */
  uint8_t scheduled;     /* prep is started */
  uint8_t in_recv;       /* inside mem_recv: no mem_send now */
  uint8_t blocked;       /* output capped: reading paused until the stream drains */
  uint8_t shutting;      /* the shutdown notice went out */
  uint8_t goaway;        /* the final GOAWAY is submitted */
  uint8_t dead;          /* a fatal session error: the connection is closing */
};

static const lr_srv_proto h2_proto;

static h2conn *HC(lr_conn *c) { return c->proto; }

/* ---- small helpers ---- */

static void schedule(h2conn *h);
static void flush(h2conn *h);

static void wake_all(lr_srv_req *r) {
  lr_task *t;
  while ((t = lr_waitq_pop(&r->waiters)) != NULL) lr_task_wake(t, LR_WAKE_DONE);
}

static int out_append(h2s *s, const char *p, size_t n) {
  if (n == 0) return 0;
  if (s->out_pos > 0 && s->out_pos == s->out_len) s->out_pos = s->out_len = 0;
  if (s->out_len + n > s->out_cap && s->out_pos > 0) { /* drop what nghttp2 took */
    memmove(s->out, s->out + s->out_pos, s->out_len - s->out_pos);
    s->out_len -= s->out_pos;
    s->out_pos = 0;
  }
  if (lr_reserve(&s->out, &s->out_cap, s->out_len + n, 1024) < 0) return UV_ENOMEM;
  memcpy(s->out + s->out_len, p, n);
  s->out_len += n;
  return 0;
}

/* Gives body bytes back to the peer's windows (they were read, or are dropped). */
static void give_back(h2s *s, size_t n) {
  if (n > s->unconsumed) n = s->unconsumed;
  if (n == 0 || s->h == NULL) return;
  s->unconsumed -= n;
  nghttp2_session_consume(s->h->ses, s->id, n);
  schedule(s->h);
}

static void stream_free(h2s *s) {
  h2conn *h = s->h;
  if (h) {
    if (s->next) s->next->prev = s->prev;
    if (s->prev) s->prev->next = s->next;
    else h->streams = s->next;
  }
  if (s->r) s->r->proto_data = NULL;
  free(s->out);
  free(s);
}

static void timer_arm(h2conn *h);

/* ---- responses ---- */

static ssize_t read_body(nghttp2_session *ses, int32_t id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *ud) {
  h2s *s = src->ptr;
  size_t avail = s->out_len - s->out_pos, n = avail < len ? avail : len;
  (void)ses, (void)id, (void)ud;
  if (n == 0 && !s->out_last) {
    s->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  if (n) memcpy(buf, s->out + s->out_pos, n);
  s->out_pos += n;
  if (s->out_pos == s->out_len) {
    s->out_pos = s->out_len = 0;
    if (s->out_last) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      free(s->out); /* the whole body is out: its memory goes now */
      s->out = NULL;
      s->out_cap = 0;
    }
  }
  /* A writer parked on this stream may go on once its bytes are leaving. */
  if (s->r && s->out_len - s->out_pos <= LR_STREAM_LOW) wake_all(s->r);
  return (ssize_t)n;
}

static int is_conn_header(const char *n, size_t l) {
  return (l == 10 && strncasecmp(n, "connection", 10) == 0) ||
         (l == 10 && strncasecmp(n, "keep-alive", 10) == 0) ||
         (l == 16 && strncasecmp(n, "proxy-connection", 16) == 0) ||
         (l == 17 && strncasecmp(n, "transfer-encoding", 17) == 0) ||
         (l == 7 && strncasecmp(n, "upgrade", 7) == 0) ||
         (l == 14 && strncasecmp(n, "content-length", 14) == 0);
}

#define NV_STACK 48

/* Submits s's response: status, Date, the headers (names lower-cased; the
 * connection-specific ones dropped), content-length when known, then body[0..len)
 * and, if last, the end. no_body: HEADERS only (HEAD, 204, 304). */
static int submit(h2s *s, int status, const char *const *hdrs, const size_t *lens, int nhdrs,
                  const char *body, size_t len, int64_t content_length, int last, int no_body) {
  h2conn *h = s->h;
  nghttp2_nv stackv[NV_STACK], *nv = stackv;
  char lowstack[2048], *low = lowstack, *lp;
  char st[8], cl[24];
  size_t namebytes = 0, i;
  int n = 0, has_date = 0, rc;
  nghttp2_data_provider prd, *pp = NULL;
  for (i = 0; i < (size_t)nhdrs; i++) namebytes += lens[2 * i];
  if ((size_t)nhdrs + 3 > NV_STACK && (nv = malloc(((size_t)nhdrs + 3) * sizeof *nv)) == NULL)
    return UV_ENOMEM;
  if (namebytes > sizeof lowstack && (low = malloc(namebytes)) == NULL) {
    if (nv != stackv) free(nv);
    return UV_ENOMEM;
  }
  snprintf(st, sizeof st, "%03d", status % 1000);
#define NV(nm, nl, v, vl)                                                               \
  do {                                                                                  \
    nv[n].name = (uint8_t *)(nm), nv[n].namelen = (nl), nv[n].value = (uint8_t *)(v);  \
    nv[n].valuelen = (vl), nv[n].flags = NGHTTP2_NV_FLAG_NONE, n++;                    \
  } while (0)
  NV(":status", 7, st, 3);
  lp = low;
  for (i = 0; i < (size_t)nhdrs; i++) {
    const char *nm = hdrs[2 * i];
    size_t nl = lens[2 * i], k;
    if (is_conn_header(nm, nl)) continue;
    for (k = 0; k < nl; k++) lp[k] = (char)(nm[k] >= 'A' && nm[k] <= 'Z' ? nm[k] + 32 : nm[k]);
    if (nl == 4 && memcmp(lp, "date", 4) == 0) has_date = 1;
    NV(lp, nl, hdrs[2 * i + 1], lens[2 * i + 1]);
    lp += nl;
  }
  if (!has_date) NV("date", 4, lr_server_date(h->c->srv->rt), 29);
  if (content_length >= 0 && status != 204 && status != 304 && status >= 200) {
    int cn = snprintf(cl, sizeof cl, "%lld", (long long)content_length);
    NV("content-length", 14, cl, (size_t)cn);
  }
#undef NV
  rc = 0;
  if (!no_body && len > 0) rc = out_append(s, body, len);
  if (rc == 0) {
    if (no_body) last = 1;
    s->out_last = (uint8_t)last;
    if (!(last && s->out_len == s->out_pos)) { /* there is (or will be) a body */
      prd.source.ptr = s;
      prd.read_callback = read_body;
      pp = &prd;
    }
    rc = nghttp2_submit_response(h->ses, s->id, nv, (size_t)n, pp);
    rc = rc < 0 ? (rc == NGHTTP2_ERR_NOMEM ? UV_ENOMEM : UV_EPIPE) : 0;
  }
  if (nv != stackv) free(nv);
  if (low != lowstack) free(low);
  if (rc == 0) {
    s->submitted = 1;
    schedule(h);
  }
  return rc;
}

/* A short text answer on a stream no handler answers (431, 413, 503, 400). */
static void reply_plain(h2s *s, int status, const char *text) {
  static const char *const hdrs[] = {"content-type", "text/plain; charset=utf-8"};
  static const size_t lens[] = {12, 25};
  size_t n = strlen(text);
  if (s->submitted) return;
  if (submit(s, status, hdrs, lens, 1, text, n, (int64_t)n, 1, 0) < 0)
    nghttp2_submit_rst_stream(s->h->ses, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
}

/* The h2s of a request still on an open stream, or NULL. */
static h2s *live(lr_srv_req *r) {
  h2s *s = r->proto_data;
  if (s == NULL || s->h == NULL || r->conn == NULL || s->h->c->closing || s->h->dead) return NULL;
  return s;
}

static int h2_respond(lr_srv_req *r, int status, const char *const *hdrs, const size_t *lens,
                      int nhdrs, const char *body, size_t len, int64_t content_length,
                      int last) {
  h2s *s = live(r);
  int no_body = r->is_head || status == 204 || status == 304 || status < 200, rc;
  if (s == NULL || s->submitted) return UV_EPIPE;
  rc = submit(s, status, hdrs, lens, nhdrs, body, len, content_length, last, no_body);
  if (rc < 0) return rc;
  r->responded = 1;
  r->status = status;
  if (last || no_body) r->finished = 1;
  else r->streaming = 1;
  return 0;
}

static int h2_write(lr_srv_req *r, const char *p, size_t n, int last) {
  h2s *s = live(r);
  int rc;
  if (s == NULL) return UV_EPIPE;
  if (r->finished || s->out_last) return 0;
  if ((rc = out_append(s, p, n)) < 0) return rc;
  if (last) {
    s->out_last = 1;
    r->finished = 1;
  }
  if (s->deferred && (n > 0 || last)) {
    s->deferred = 0;
    if (nghttp2_session_resume_data(s->h->ses, s->id) == NGHTTP2_ERR_NOMEM) return UV_ENOMEM;
  }
  schedule(s->h);
  return 0;
}

static int h2_congested(lr_srv_req *r) {
  h2s *s = live(r);
  if (s == NULL) return 0;
  return s->out_len - s->out_pos > LR_STREAM_HIGH || s->h->c->s.queued > LR_STREAM_HIGH;
}

static void h2_consumed(lr_srv_req *r, size_t n) {
  h2s *s = live(r);
  if (s) give_back(s, n);
}

/* The handler waits for body bytes: what it holds back is given back, so the client
 * may send on (a handler that never reads stops the upload at the stream's window). */
static void h2_want_body(lr_srv_req *r) {
  h2s *s = live(r);
  if (s) give_back(s, s->unconsumed);
}

/* The request is being freed: the stream may still be sending its response. */
static void h2_done(lr_srv_req *r) {
  h2s *s = r->proto_data;
  r->proto_data = NULL;
  if (s == NULL) return;
  s->r = NULL;
  if (s->h == NULL) {
    stream_free(s);
    return;
  }
  give_back(s, s->unconsumed);
  s->drop_body = 1;
  if (!s->submitted || !s->out_last) {
    /* Never answered, or the body stopped halfway: the client must not take what
     * it got for a whole response. */
    nghttp2_submit_rst_stream(s->h->ses, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    schedule(s->h);
  }
}

static const lr_srv_proto h2_proto = {
  h2_respond, h2_write, h2_congested, h2_want_body, h2_consumed, h2_done,
};

/* ---- nghttp2 callbacks: requests in ---- */

static int on_begin_headers(nghttp2_session *ses, const nghttp2_frame *f, void *ud) {
  h2conn *h = ud;
  h2s *s;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  if ((s = calloc(1, sizeof *s)) == NULL) return NGHTTP2_ERR_CALLBACK_FAILURE;
  s->h = h;
  s->id = f->hd.stream_id;
  s->next = h->streams;
  if (h->streams) h->streams->prev = s;
  h->streams = s;
  if ((s->r = lr_srv_req_new(h->c, &h2_proto)) == NULL) {
    s->fail = 503;
  } else {
    s->r->proto_data = s;
    s->r->stream_id = s->id;
    s->r->http_major = 2;
    s->r->http_minor = 0;
  }
  nghttp2_session_set_stream_user_data(ses, s->id, s);
  return 0;
}

static int on_header(nghttp2_session *ses, const nghttp2_frame *f, const uint8_t *name,
                     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *ud) {
  h2s *s;
  lr_srv_req *r;
  lr_server *srv = ((h2conn *)ud)->c->srv;
  int64_t off, voff;
  (void)flags;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0; /* trailers */
  s = nghttp2_session_get_stream_user_data(ses, f->hd.stream_id);
  if (s == NULL || (r = s->r) == NULL || s->fail) return 0;
  s->head_bytes += nl + vl;
  if (srv->o.max_header_size && s->head_bytes > srv->o.max_header_size) {
    s->fail = 431;
    return 0;
  }
  if (nl > 0 && name[0] == ':') { /* nghttp2 checked the pseudo-headers already */
    if ((off = lr_srv_req_append(r, (const char *)value, vl)) < 0) return s->fail = 503, 0;
    if (nl == 7 && memcmp(name, ":method", 7) == 0) {
      r->method_off = (uint32_t)off;
      r->method_len = (uint32_t)vl;
      r->head_len++; /* the method stays a C string */
      r->is_head = vl == 4 && memcmp(value, "HEAD", 4) == 0;
    } else if (nl == 5 && memcmp(name, ":path", 5) == 0) {
      r->target = (uint32_t)off;
      r->target_len = (uint32_t)vl;
    } else if (nl == 10 && memcmp(name, ":authority", 10) == 0) {
      s->authority = (uint32_t)off;
      s->authority_len = (uint32_t)vl;
      s->has_authority = 1;
    }
    return 0;
  }
  if (r->nhdrs >= srv->o.max_headers) {
    s->fail = 431;
    return 0;
  }
  if ((off = lr_srv_req_append(r, (const char *)name, nl)) < 0 ||
      (voff = lr_srv_req_append(r, (const char *)value, vl)) < 0 ||
      lr_srv_req_add_header(r, (uint32_t)off, (uint32_t)nl, (uint32_t)voff, (uint32_t)vl) < 0)
    return s->fail = 503, 0;
  if (nl == 4 && memcmp(name, "host", 4) == 0) s->has_host = 1;
  return 0;
}

/* The value of header name (lower-case) as a number, or -1. */
static int64_t header_number(lr_srv_req *r, const char *name) {
  size_t nl = strlen(name);
  uint32_t i;
  for (i = 0; i < r->nhdrs; i++)
    if (r->hdrs[i].name_len == nl && memcmp(r->head + r->hdrs[i].name, name, nl) == 0) {
      const char *v = r->head + r->hdrs[i].value;
      uint32_t k;
      int64_t x = 0;
      if (r->hdrs[i].value_len == 0 || r->hdrs[i].value_len > 18) return -1;
      for (k = 0; k < r->hdrs[i].value_len; k++) {
        if (v[k] < '0' || v[k] > '9') return -1;
        x = x * 10 + (v[k] - '0');
      }
      return x;
    }
  return -1;
}

/* The request's head is in: run its handler, or answer what is wrong with it. */
static void headers_done(h2conn *h, h2s *s, int end_stream) {
  lr_srv_req *r = s->r;
  lr_server *srv = h->c->srv;
  int64_t cl;
  if (r && !s->fail && r->target_len == 0) s->fail = 400; /* CONNECT has no :path */
  if (r && !s->fail && s->has_authority && !s->has_host) {
    int64_t off = lr_srv_req_append(r, "host", 4);
    if (off < 0 || lr_srv_req_add_header(r, (uint32_t)off, 4, s->authority, s->authority_len) < 0) s->fail = 503;
  }
  if (r && !s->fail && srv->o.max_body_size && (cl = header_number(r, "content-length")) >= 0 &&
      (size_t)cl > srv->o.max_body_size)
    s->fail = 413;
  if (r && !s->fail && h->goaway) s->fail = 503;
  if (r && !s->fail) {
    if (end_stream) lr_srv_req_body_end(r, LR_BODY_OK);
    s->dispatched = 1;
    s->deadline = uv_now(&srv->rt->loop) + srv->o.request_timeout;
    h->busy++;
    if (h->busy == 1 || !uv_is_active((uv_handle_t *)&h->c->timer)) timer_arm(h);
    if (lr_srv_req_dispatch(h->c->L, r) == 0) return;
    s->fail = 503;
  }
  /* Not run: the request goes now and the stream gets a short answer. */
  if (r) {
    s->r = NULL;
    r->proto_data = NULL;
    r->conn = NULL;
    lr_srv_req_free(r);
  }
  s->drop_body = 1;
  if (!end_stream) s->rst_after = 1;
  reply_plain(s, s->fail,
              s->fail == 431   ? "Request Header Fields Too Large\n"
              : s->fail == 413 ? "Content Too Large\n"
              : s->fail == 400 ? "Bad Request\n"
                               : "Service Unavailable\n");
}

static int on_frame_recv(nghttp2_session *ses, const nghttp2_frame *f, void *ud) {
  h2conn *h = ud;
  h2s *s;
  int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (f->hd.type) {
  case NGHTTP2_HEADERS:
    if ((s = nghttp2_session_get_stream_user_data(ses, f->hd.stream_id)) == NULL) break;
    if (f->headers.cat == NGHTTP2_HCAT_REQUEST) headers_done(h, s, end);
    else if (end && s->r) lr_srv_req_body_end(s->r, LR_BODY_OK); /* after trailers */
    break;
  case NGHTTP2_DATA:
    if (end && (s = nghttp2_session_get_stream_user_data(ses, f->hd.stream_id)) && s->r)
      lr_srv_req_body_end(s->r, LR_BODY_OK);
    break;
  case NGHTTP2_PING:
    /* The ack of the PING after the shutdown notice: the client has seen the notice,
     * so the streams it opens from now on are the ones it sent before. */
    if ((f->hd.flags & NGHTTP2_FLAG_ACK) && h->shutting && !h->goaway) {
      h->goaway = 1;
      nghttp2_submit_goaway(ses, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(ses),
                            NGHTTP2_NO_ERROR, NULL, 0);
      timer_arm(h);
    }
    break;
  default:
    break;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *ses, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud) {
  h2s *s = nghttp2_session_get_stream_user_data(ses, id);
  lr_srv_req *r;
  (void)flags, (void)ud;
  if (s == NULL) {
    nghttp2_session_consume(ses, id, len);
    return 0;
  }
  s->unconsumed += len;
  if ((r = s->r) == NULL || s->drop_body || r->body_done) {
    give_back(s, len);
    return 0;
  }
  if (lr_srv_req_body(r, (const char *)data, len) < 0) {
    /* Past max_body_size (or out of memory): the handler learns it from its reader;
     * if it has not answered, 413 and the rest of the body is refused. */
    s->drop_body = 1;
    give_back(s, s->unconsumed);
    if (!r->responded) {
      s->rst_after = 1;
      lr_srv_req_reply(r, r->body_error == LR_BODY_TOO_LARGE ? 413 : 503,
                       r->body_error == LR_BODY_TOO_LARGE ? "Content Too Large\n"
                                                           : "Service Unavailable\n", 0);
    }
  }
  return 0;
}

static int on_frame_send(nghttp2_session *ses, const nghttp2_frame *f, void *ud) {
  h2s *s;
  (void)ud;
  if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
      (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
      (s = nghttp2_session_get_stream_user_data(ses, f->hd.stream_id)) && s->rst_after) {
    /* The answer is out while the client still sends a body nobody wants. */
    s->rst_after = 0;
    if (nghttp2_session_get_stream_remote_close(ses, s->id) == 0)
      nghttp2_submit_rst_stream(ses, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

static int on_stream_close(nghttp2_session *ses, int32_t id, uint32_t error_code, void *ud) {
  h2conn *h = ud;
  h2s *s = nghttp2_session_get_stream_user_data(ses, id);
  lr_srv_req *r;
  if (s == NULL) return 0;
  nghttp2_session_set_stream_user_data(ses, id, NULL);
  if (s->unconsumed) { /* the stream takes no more: its bytes go back to the connection */
    nghttp2_session_consume_connection(ses, s->unconsumed);
    s->unconsumed = 0;
  }
  if ((r = s->r) != NULL) {
    s->r = NULL;
    r->proto_data = NULL;
    if (!s->dispatched) {
      r->conn = NULL; /* its head never finished: no handler holds it */
      lr_srv_req_free(r);
    } else if (r->finished && error_code == NGHTTP2_NO_ERROR) {
      r->conn = NULL; /* answered: its task ends on its own */
      if (!r->body_done) lr_srv_req_body_end(r, LR_BODY_CLOSED);
    } else {
      lr_srv_req_abandon(r); /* reset by the client, or cut: cancel the handler */
    }
  }
  if (s->dispatched && --h->busy == 0) timer_arm(h);
  stream_free(s);
  return 0;
}

/* ---- output ---- */

static void maybe_close(h2conn *h) {
  if (h->c->closing) return;
  if (!nghttp2_session_want_read(h->ses) && !nghttp2_session_want_write(h->ses))
    lr_conn_close(h->c, 0); /* after the queued writes */
}

static int send_block(lr_conn *c, const char *p, size_t n) {
  char *b = lr_stream_block(n);
  if (b == NULL) return UV_ENOMEM;
  memcpy(b, p, n);
  return lr_stream_send(&c->s, b, n);
}

/* Serializes what the session has to send, in blocks of up to H2_SCRATCH bytes, while
 * the stream's queue is below LR_STREAM_HIGH. */
static void flush(h2conn *h) {
  static char scratch[H2_SCRATCH]; /* the loop thread only; a 64 KiB thread-local would not fit lua5.4's static TLS when luarun.so is loaded */
  lr_conn *c = h->c;
  size_t used = 0;
  if (c->closing || h->in_recv) return;
  for (;;) {
    const uint8_t *p;
    ssize_t n;
    if (c->s.queued + used > LR_STREAM_HIGH) {
      if (!h->blocked) {
        h->blocked = 1;
        lr_stream_pause(&c->s);
      }
      break;
    }
    n = nghttp2_session_mem_send(h->ses, &p);
    if (n < 0) {
      h->dead = 1;
      lr_conn_close(c, 1);
      return;
    }
    if (n == 0) break;
    if (used + (size_t)n > sizeof scratch) {
      if (used && send_block(c, scratch, used) < 0) break;
      used = 0;
      if ((size_t)n > sizeof scratch) { /* a large frame: a block of its own */
        if (send_block(c, (const char *)p, (size_t)n) < 0) break;
        continue;
      }
    }
    memcpy(scratch + used, p, (size_t)n);
    used += (size_t)n;
  }
  if (used && !c->closing) send_block(c, scratch, used);
  if (!c->closing) maybe_close(h);
}

static void on_prepare(uv_prepare_t *p) {
  h2conn *h = p->data;
  uv_prepare_stop(p);
  h->scheduled = 0;
  if (h->c) flush(h);
}

static void schedule(h2conn *h) {
  if (h->scheduled || h->c == NULL) return;
  h->scheduled = 1;
  uv_prepare_start(&h->prep, on_prepare);
}

/* ---- the connection's timer ---- */

/* request_timeout: a handler still running past its deadline gets 503 (or, if its
 * response began, its stream is reset) and its task is cancelled. */
static void expire(h2conn *h) {
  uint64_t now = uv_now(&h->c->srv->rt->loop);
  h2s *s;
  for (s = h->streams; s; s = s->next) {
    lr_srv_req *r = s->r;
    if (!s->dispatched || r == NULL || r->finished || r->timed_out || now < s->deadline) continue;
    r->timed_out = 1;
    if (!r->responded) {
      if (!r->body_done) s->rst_after = 1;
      lr_srv_req_reply(r, 503, "Service Unavailable: the request took too long\n", 1);
    } else {
      nghttp2_submit_rst_stream(h->ses, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    }
    if (r->task) lr_task_cancel(r->task);
  }
  schedule(h);
}

static void on_timer(uv_timer_t *tm) {
  lr_conn *c = tm->data;
  h2conn *h = HC(c);
  if (h == NULL || c->closing) return;
  if (!h->goaway && (h->busy == 0 || h->shutting)) {
    /* Idle for idle_timeout, or the shutdown PING went unanswered: GOAWAY; the
     * connection closes once the streams it let finish are done. */
    h->goaway = 1;
    nghttp2_submit_goaway(h->ses, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h->ses), NGHTTP2_NO_ERROR,
                          NULL, 0);
    flush(h);
    timer_arm(h);
  } else if (h->goaway && h->busy == 0) {
    lr_conn_close(c, 1); /* GOAWAY went out a while ago and the client stays: enough */
  } else if (h->busy > 0) {
    expire(h);
    timer_arm(h);
  }
}

/* Idle (no request runs): the idle timeout; while requests run, the earliest
 * request_timeout deadline (the server's grace bounds a shutdown). Waiting for the
 * shutdown PING's ack: H2_SHUTDOWN_WAIT_MS. */
static void timer_arm(h2conn *h) {
  lr_conn *c = h->c;
  uint64_t ms = 0;
  if (c->closing) return;
  if (h->shutting && !h->goaway) ms = H2_SHUTDOWN_WAIT_MS;
  else if (h->busy == 0) ms = c->srv->o.idle_timeout ? c->srv->o.idle_timeout
                            : h->goaway ? H2_SHUTDOWN_WAIT_MS : 0;
  else if (c->srv->o.request_timeout) { /* the earliest handler deadline */
    uint64_t now = uv_now(&c->srv->rt->loop), first = UINT64_MAX;
    h2s *s;
    for (s = h->streams; s; s = s->next)
      if (s->dispatched && s->r && !s->r->finished && !s->r->timed_out && s->deadline < first)
        first = s->deadline;
    if (first != UINT64_MAX) ms = first > now ? first - now : 1;
  }
  if (ms) uv_timer_start(&c->timer, on_timer, ms, 0);
  else uv_timer_stop(&c->timer);
}

/* ---- the connection ---- */

void lr_h2_data(lr_conn *c, const char *p, size_t n) {
  h2conn *h = HC(c);
  ssize_t rv;
  if (h == NULL || h->dead) {
    lr_conn_close(c, 1);
    return;
  }
  h->in_recv = 1;
  rv = nghttp2_session_mem_recv(h->ses, (const uint8_t *)p, n);
  h->in_recv = 0;
  if (c->closing) return;
  if (rv < 0) {
    /* Bad preface, flood, a fatal protocol error: nghttp2 may have queued a GOAWAY. */
    if (rv != NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
      nghttp2_session_terminate_session(h->ses, NGHTTP2_PROTOCOL_ERROR);
      flush(h);
    }
    h->dead = 1;
    if (!c->closing) lr_conn_close(c, 0);
    return;
  }
  flush(h);
}

static void on_prep_closed(uv_handle_t *hd) {
  free(hd->data);
}

void lr_h2_start(lr_conn *c, const char *p, size_t n) {
  nghttp2_session_callbacks *cb = NULL;
  nghttp2_option *opt = NULL;
  nghttp2_settings_entry iv[2];
  h2conn *h = calloc(1, sizeof *h);
  int rc = -1;
  if (h == NULL) {
    lr_conn_close(c, 1);
    return;
  }
  h->c = c;
  uv_prepare_init(&c->srv->rt->loop, &h->prep);
  h->prep.data = h;
  uv_unref((uv_handle_t *)&h->prep);
  c->proto = h;
  if (nghttp2_session_callbacks_new(&cb) == 0 && nghttp2_option_new(&opt) == 0) {
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* Rapid Reset (CVE-2023-44487): a burst of 1000 resets, then 33 a second. */
    nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
    rc = nghttp2_session_server_new2(&h->ses, cb, h, opt);
  }
  if (cb) nghttp2_session_callbacks_del(cb);
  if (opt) nghttp2_option_del(opt);
  if (rc == 0) {
    iv[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
    iv[0].value = H2_MAX_STREAMS;
    iv[1].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE;
    iv[1].value = c->srv->o.max_header_size ? (uint32_t)c->srv->o.max_header_size : 0xffffffffu;
    rc = nghttp2_submit_settings(h->ses, NGHTTP2_FLAG_NONE, iv, 2);
    if (rc == 0)
      rc = nghttp2_session_set_local_window_size(h->ses, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
  }
  if (rc != 0) {
    h->dead = 1;
    lr_conn_close(c, 1);
    return;
  }
  timer_arm(h);
  if (c->srv->closing) lr_h2_shutdown(c);
  lr_h2_data(c, p, n);
}

void lr_h2_free(lr_conn *c) {
  h2conn *h = HC(c);
  lr_runtime *rt = c->srv->rt;
  h2s *s, *next;
  if (h == NULL) return;
  c->proto = NULL;
  for (s = h->streams; s; s = next) {
    lr_srv_req *r = s->r;
    next = s->next;
    s->h = NULL;
    s->r = NULL;
    if (r) {
      r->proto_data = NULL;
      if (rt->closing || !s->dispatched) { /* no task runs again, or none started */
        r->conn = NULL;
        lr_srv_req_free(r);
      } else {
        lr_srv_req_abandon(r);
      }
    }
    free(s->out);
    free(s);
  }
  h->streams = NULL;
  if (h->ses) nghttp2_session_del(h->ses);
  h->ses = NULL;
  h->c = NULL;
  uv_close((uv_handle_t *)&h->prep, on_prep_closed);
}

void lr_h2_shutdown(lr_conn *c) {
  h2conn *h = HC(c);
  if (h == NULL || c->closing) return;
  if (h->shutting) return;
  h->shutting = 1;
  /* A GOAWAY with the largest stream id, and a PING: once its ack comes back (or
   * H2_SHUTDOWN_WAIT_MS passed), the real GOAWAY names the last stream we took. */
  nghttp2_submit_shutdown_notice(h->ses);
  nghttp2_submit_ping(h->ses, NGHTTP2_FLAG_NONE, NULL);
  timer_arm(h);
  if (!h->in_recv) flush(h);
}

void lr_h2_drain(lr_conn *c) {
  h2conn *h = HC(c);
  h2s *s;
  if (h == NULL || c->closing) return;
  if (h->blocked) {
    h->blocked = 0;
    flush(h);
    if (c->closing) return;
    if (!h->blocked && lr_stream_read(&c->s) < 0) {
      lr_conn_close(c, 1);
      return;
    }
  }
  for (s = h->streams; s; s = s->next)
    if (s->r) wake_all(s->r);
}
