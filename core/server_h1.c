/* server_h1.c: HTTP/1.1 on a server connection, parsed by http-parser 2.9.4.
 *
 * One request at a time: on_message_complete pauses the parser, and what was read
 * past that request (pipelined requests) waits in `pending` until the response has
 * gone out (lr_h1_next), so responses leave in order whatever the handlers do. Reads
 * go on while a handler runs, so a client that goes away is seen (and its handler
 * cancelled), up to PENDING_MAX bytes read ahead.
 *
 * A response head is built in one block with the body (one allocation, one write):
 * status line, Date (formatted once a second), the handler's headers, the framing
 * (Content-Length, or chunked for a streamed body) and Connection.
 */
#include <ctype.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include "lr_net.h"

#define PENDING_MAX (64 * 1024)
/* A body nobody has read yet, or read in chunks (req:body_chunks) slower than it
 * comes, stops the reads above this many unread bytes; the reader's next wait starts
 * them again. req:body() wants it all (up to max_body_size) and is never paused. */
#define BODY_HIGH ((size_t)1 << 20)

typedef struct h1 {
  http_parser p;
  lr_srv_req *r;         /* the request being parsed, from message begin */
  char *pending;         /* read, not yet parsed */
  size_t plen, pcap;
  size_t head_bytes;     /* of r's head so far (max_header_size) */
  int fail;              /* status to answer when a callback stopped the parser */
  uint8_t in_value;      /* the last header callback was a value */
  uint8_t paused;        /* a whole request was parsed; the rest waits */
  uint8_t broken;        /* no more parsing: an error was answered */
  uint8_t body_paused;   /* reads stopped: BODY_HIGH bytes of body unread */
  size_t dropped;        /* body bytes read and dropped after the handler answered */
  uint8_t chunked;       /* the response in progress is chunked */
  /* Chunk framing, checked here: http-parser as Debian builds it (not strict) takes
   * any two bytes for the CRLF after a chunk's data and any byte for the LF of a
   * size line ("3\r\nabcXY0\r\n\r\n" passed: smuggling). Positions are offsets
   * in the connection's byte stream; the last two bytes parsed before the current
   * buffer are kept, so a check may look back across a read. */
  const char *buf;       /* the buffer being parsed */
  uint64_t base;         /* stream offset of buf[0] */
  char tail[2];          /* the two bytes parsed before buf */
  uint8_t tail_n;
  uint8_t size_end;      /* the next body byte must follow "\r\n" */
  uint8_t crlf_due;      /* "\r\n" must sit at crlf_at */
  uint64_t chunk_left, crlf_at;
} h1;

static const lr_srv_proto h1_proto;

static h1 *H(lr_conn *c) { return c->proto; }

/* ---- parsing ---- */

static int count_head(h1 *h, lr_server *srv, size_t n) {
  h->head_bytes += n;
  if (srv->o.max_header_size && h->head_bytes > srv->o.max_header_size) {
    h->fail = 431;
    return -1;
  }
  return 0;
}

static int on_message_begin(http_parser *p) {
  lr_conn *c = p->data;
  h1 *h = H(c);
  h->r = lr_srv_req_new(c, &h1_proto);
  h->head_bytes = 0;
  h->dropped = 0;
  h->in_value = 0;
  if (h->r == NULL) {
    h->fail = 503;
    return -1;
  }
  if (c->phase != LR_PHASE_HEAD) lr_conn_phase(c, LR_PHASE_HEAD);
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  lr_conn *c = p->data;
  h1 *h = H(c);
  lr_srv_req *r = h->r;
  int64_t off;
  if (count_head(h, c->srv, n) < 0) return -1;
  if ((off = lr_srv_req_append(r, at, n)) < 0) return h->fail = 503, -1;
  if (r->target_len == 0) r->target = (uint32_t)off;
  r->target_len += (uint32_t)n;
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  lr_conn *c = p->data;
  h1 *h = H(c);
  lr_srv_req *r = h->r;
  int64_t off;
  size_t i;
  if (count_head(h, c->srv, n) < 0) return -1;
  if (r == NULL) return 0; /* a trailer after a chunked body (h->r is gone): dropped */
  if (h->in_value || r->nhdrs == 0) { /* a new header */
    if (r->nhdrs >= c->srv->o.max_headers) return h->fail = 431, -1;
    if (lr_srv_req_add_header(r, (uint32_t)r->head_len, 0, 0, 0) < 0) return h->fail = 503, -1;
    h->in_value = 0;
  }
  /* http-parser (not built strict) lets spaces into a name ("Content-Length : 5"),
   * which it then does not take for the header it names: a smuggling vector. */
  if (memchr(at, ' ', n) || memchr(at, '\t', n)) return h->fail = 400, -1;
  if ((off = lr_srv_req_append(r, at, n)) < 0) return h->fail = 503, -1;
  for (i = 0; i < n; i++) { /* lower-case: ASCII letters only (a token has no others) */
    char ch = r->head[off + i];
    if (ch >= 'A' && ch <= 'Z') r->head[off + i] = (char)(ch | 0x20);
  }
  r->hdrs[r->nhdrs - 1].name_len += (uint32_t)n;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  lr_conn *c = p->data;
  h1 *h = H(c);
  lr_srv_req *r = h->r;
  int64_t off;
  if (count_head(h, c->srv, n) < 0) return -1;
  if (r == NULL) return 0; /* a trailer's value: dropped */
  if ((off = lr_srv_req_append(r, at, n)) < 0) return h->fail = 503, -1;
  if (!h->in_value) {
    r->hdrs[r->nhdrs - 1].value = (uint32_t)off;
    h->in_value = 1;
  }
  r->hdrs[r->nhdrs - 1].value_len += (uint32_t)n;
  return 0;
}

static int on_headers_complete(http_parser *p) {
  lr_conn *c = p->data;
  h1 *h = H(c);
  lr_srv_req *r = h->r;
  const char *method = http_method_str((enum http_method)p->method), *v;
  size_t vl, max = c->srv->o.max_body_size;
  int64_t off;
  /* The method goes after the target: both stay where they are in the buffer. */
  if ((off = lr_srv_req_append(r, method, strlen(method))) < 0) return h->fail = 503, -1;
  r->method_len = (uint32_t)strlen(method);
  r->head_len++; /* keep the NUL after the method: head + off is a C string */
  r->method_off = (uint32_t)off;
  r->http_major = (uint8_t)p->http_major;
  r->http_minor = (uint8_t)p->http_minor;
  r->keep_alive = (uint8_t)http_should_keep_alive(p);
  r->is_head = p->method == HTTP_HEAD;
  r->upgrade = (uint8_t)p->upgrade;
  if (r->target_len == 0) return h->fail = 400, -1;
  /* HTTP/0.9 ("GET /") and 2.x or later framed as 1.x: answered as HTTP/1.1 they were. */
  if (p->http_major != 1) return h->fail = 505, -1;
  if ((v = lr_srv_req_header(r, "expect", &vl)) != NULL) {
    if (vl == 12 && strncasecmp(v, "100-continue", 12) == 0) {
      /* Never a 1xx to an HTTP/1.0 client. */
      r->expect_continue = p->http_major == 1 && p->http_minor >= 1;
    } else {
      return h->fail = 417, -1;
    }
  }
  if (max && (p->flags & F_CONTENTLENGTH) && p->content_length > max) return h->fail = 413, -1;
  /* The body buffer's first size: the announced length, up to 256 KiB (a client that
   * announces more and sends nothing must not make the server hold it). */
  if (p->flags & F_CONTENTLENGTH)
    r->body_expected = p->content_length < ((size_t)256 << 10) ? (size_t)p->content_length
                                                                : (size_t)256 << 10;
  h->r = NULL;
  c->req = r;
  lr_conn_phase(c, LR_PHASE_HANDLER);
  if (lr_srv_req_dispatch(c->L, r) < 0) {
    c->req = NULL;
    lr_srv_req_free(r);
    return h->fail = 503, -1;
  }
  return 0;
}

/* The byte at stream offset x, already parsed (-1 if no longer known). */
static int byte_at(h1 *h, uint64_t x) {
  if (x >= h->base) return (unsigned char)h->buf[x - h->base];
  if (h->base - x <= h->tail_n) return (unsigned char)h->tail[h->tail_n - (h->base - x)];
  return -1;
}

/* The CRLF after the last chunk's data (parsed by now) must be one. */
static int check_crlf(h1 *h) {
  if (!h->crlf_due) return 0;
  h->crlf_due = 0;
  if (byte_at(h, h->crlf_at) != '\r' || byte_at(h, h->crlf_at + 1) != '\n') {
    h->fail = 400;
    return -1;
  }
  return 0;
}

static int on_chunk_header(http_parser *p) {
  h1 *h = H((lr_conn *)p->data);
  if (check_crlf(h) < 0) return -1;
  h->chunk_left = p->content_length;
  h->size_end = h->chunk_left > 0;
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  lr_conn *c = p->data;
  lr_srv_req *r = c->req;
  h1 *h = H(c);
  if (p->flags & F_CHUNKED) {
    uint64_t x = h->base + (uint64_t)(at - h->buf);
    if (h->size_end) { /* the size line ended with CRLF */
      h->size_end = 0;
      if (byte_at(h, x - 1) != '\n' || byte_at(h, x - 2) != '\r') return h->fail = 400, -1;
    }
    h->chunk_left -= n < h->chunk_left ? n : h->chunk_left;
    if (h->chunk_left == 0) {
      h->crlf_due = 1;
      h->crlf_at = x + n;
    }
  }
  if (r == NULL) {
    /* Its handler answered before the body was in: read on and drop it, but no more
     * than max_body_size of it (then the connection goes, without a word). */
    size_t max = c->srv->o.max_body_size;
    h->dropped += n;
    if (max && h->dropped > max) return h->fail = -1, -1;
    return 0;
  }
  if (lr_srv_req_body(r, at, n) < 0) {
    H(c)->fail = r->body_error == LR_BODY_TOO_LARGE ? 413 : 503;
    return -1;
  }
  if (!r->want_whole && r->body_len - r->body_pos > BODY_HIGH) {
    lr_stream_pause(&c->s);
    h->body_paused = 1;
  }
  return 0;
}

static int on_message_complete(http_parser *p) {
  lr_conn *c = p->data;
  h1 *h = H(c);
  if (check_crlf(h) < 0) return -1;
  /* The handler answered before the body was all in (and did not read it): the
   * rest of the body was read and dropped, and the next request may follow. */
  if (c->req == NULL) return 0;
  lr_srv_req_body_end(c->req, LR_BODY_OK);
  h->paused = 1;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
  .on_message_begin = on_message_begin,
  .on_url = on_url,
  .on_header_field = on_header_field,
  .on_header_value = on_header_value,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
  .on_chunk_header = on_chunk_header,
};

/* ---- writing ---- */

static char *put(char *q, const char *s, size_t n) {
  memcpy(q, s, n);
  return q + n;
}

/* Decimal or hex digits of v at q (snprintf was 7 % of a small response's cost). */
static char *put_num(char *q, uint64_t v, unsigned base) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  while (n) *q++ = tmp[--n];
  return q;
}

static int h1_respond(lr_srv_req *r, int status, const char *const *hdrs, const size_t *lens,
                      int nhdrs, const char *body, size_t len, int64_t content_length,
                      int last) {
  lr_conn *c = r->conn;
  h1 *h;
  size_t size = 128 + 64, i;
  int has_date = 0, no_body = status == 204 || status == 304 || status < 200;
  int chunked = 0;
  char *block, *q;
  if (c == NULL || c->closing) return UV_EPIPE;
  h = H(c);
  r->responded = 1;
  r->status = status;
  /* It expected 100-continue and got its answer without one: it may send the body
   * or not, so the connection cannot be trusted for another request (as h2o does). */
  if (r->expect_continue && !r->continue_sent && !r->body_done) r->keep_alive = 0;
  if (content_length < 0 && !no_body) {
    if (r->http_minor >= 1) chunked = 1;
    else r->keep_alive = 0; /* HTTP/1.0: the end of the body is the end of the connection */
  }
  if (c->srv->closing) r->keep_alive = 0;
  for (i = 0; i < (size_t)nhdrs; i++) {
    size += lens[2 * i] + lens[2 * i + 1] + 4;
    if (lens[2 * i] == 4 && strncasecmp(hdrs[2 * i], "date", 4) == 0) has_date = 1;
  }
  if (!r->is_head && !no_body) size += len + (chunked ? 32 : 0);
  if ((block = lr_stream_block(size)) == NULL) return UV_ENOMEM;
  {
    const char *reason = lr_http_reason(status);
    q = put(block, r->http_minor >= 1 ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
    q = put_num(q, (uint64_t)status, 10);
    *q++ = ' ';
    q = put(q, reason, strlen(reason));
    q = put(q, "\r\n", 2);
  }
  if (!has_date) {
    q = put(q, "date: ", 6);
    q = put(q, lr_server_date(c->srv->rt), 29);
    q = put(q, "\r\n", 2);
  }
  for (i = 0; i < (size_t)nhdrs; i++) {
    q = put(q, hdrs[2 * i], lens[2 * i]);
    q = put(q, ": ", 2);
    q = put(q, hdrs[2 * i + 1], lens[2 * i + 1]);
    q = put(q, "\r\n", 2);
  }
  if (chunked) q = put(q, "transfer-encoding: chunked\r\n", 28);
  else if (content_length >= 0 && !(no_body && status != 304)) {
    q = put(q, "content-length: ", 16);
    q = put_num(q, (uint64_t)content_length, 10);
    q = put(q, "\r\n", 2);
  }
  if (!r->keep_alive) q = put(q, "connection: close\r\n", 19);
  else if (r->http_minor == 0) q = put(q, "connection: keep-alive\r\n", 24);
  q = put(q, "\r\n", 2);
  h->chunked = (uint8_t)chunked;
  if (!r->is_head && !no_body && len > 0) {
    if (chunked) q = put(put_num(q, len, 16), "\r\n", 2);
    q = put(q, body, len);
    if (chunked) q = put(q, "\r\n", 2);
  }
  if (last && chunked && !r->is_head) q = put(q, "0\r\n\r\n", 5);
  if (last) r->finished = 1;
  else r->streaming = 1;
  i = (size_t)lr_stream_send(&c->s, block, (size_t)(q - block));
  if (last && !r->keep_alive) lr_conn_close(c, 0);
  return (int)i;
}

static int h1_write(lr_srv_req *r, const char *p, size_t n, int last) {
  lr_conn *c = r->conn;
  char *block, *q;
  int rc;
  if (c == NULL || c->closing) return UV_EPIPE;
  if (r->finished) return 0;
  if (r->is_head) n = 0;
  if ((block = lr_stream_block(n + 32)) == NULL) return UV_ENOMEM;
  q = block;
  if (H(c)->chunked && n > 0) q = put(put_num(q, n, 16), "\r\n", 2);
  if (n) q = put(q, p, n);
  if (H(c)->chunked && n > 0) q = put(q, "\r\n", 2);
  if (last && H(c)->chunked && !r->is_head) q = put(q, "0\r\n\r\n", 5);
  if (last) r->finished = 1;
  if (q == block) {
    lr_stream_block_free(block);
    rc = 0;
  } else {
    rc = lr_stream_send(&c->s, block, (size_t)(q - block));
  }
  if (last && !r->keep_alive) lr_conn_close(c, 0);
  return rc;
}

static int h1_congested(lr_srv_req *r) {
  return r->conn && !r->conn->closing && r->conn->s.queued > LR_STREAM_HIGH;
}

static void h1_want_body(lr_srv_req *r) {
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  uv_buf_t b;
  if (r->conn && H(r->conn) && H(r->conn)->body_paused && !r->conn->closing) {
    H(r->conn)->body_paused = 0; /* its reader waits: read on */
    if (lr_stream_read(&r->conn->s) < 0) lr_conn_close(r->conn, 1);
  }
  if (!r->expect_continue || r->continue_sent || r->body_done || r->conn == NULL) return;
  r->continue_sent = 1;
  b = uv_buf_init((char *)cont, sizeof cont - 1);
  lr_stream_write(&r->conn->s, &b, 1);
}

static const lr_srv_proto h1_proto = {
  h1_respond, h1_write, h1_congested, h1_want_body, NULL, NULL,
};

/* ---- the connection ---- */

void lr_h1_start(lr_conn *c) {
  h1 *h = calloc(1, sizeof *h);
  c->proto = h;
  if (h == NULL) return; /* lr_h1_data closes it */
  http_parser_init(&h->p, HTTP_REQUEST);
  h->p.data = c;
}

void lr_h1_free(lr_conn *c) {
  h1 *h = H(c);
  if (h == NULL) return;
  if (h->r) lr_srv_req_free(h->r);
  free(h->pending);
  free(h);
  c->proto = NULL;
}

void lr_h1_error(lr_conn *c, int status, const char *text) {
  h1 *h = H(c);
  char head[256];
  uv_buf_t b[2];
  if (c->closing) return;
  if (c->req) { /* a handler runs: answer through its request */
    lr_srv_req_reply(c->req, status, text, 1);
    if (h) h->broken = 1;
    lr_stream_pause(&c->s);
    return;
  }
  if (h && h->r == NULL && status == 408) { /* nothing of a request came: just close */
    lr_conn_close(c, 1);
    return;
  }
  if (h) h->broken = 1;
  snprintf(head, sizeof head,
           "HTTP/1.1 %d %s\r\ndate: %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
           "content-length: %zu\r\nconnection: close\r\n\r\n",
           status, lr_http_reason(status), lr_server_date(c->srv->rt), strlen(text));
  b[0] = uv_buf_init(head, (unsigned)strlen(head));
  b[1] = uv_buf_init((char *)text, (unsigned)strlen(text));
  lr_stream_write(&c->s, b, h && h->r && h->p.method == HTTP_HEAD ? 1 : 2); /* HEAD: no body */
  lr_conn_close(c, 0);
}

static int keep(h1 *h, const char *p, size_t n) {
  if (lr_reserve(&h->pending, &h->pcap, h->plen + n, 4096) < 0) return -1;
  memcpy(h->pending + h->plen, p, n);
  h->plen += n;
  return 0;
}

static void feed(lr_conn *c, const char *p, size_t n) {
  h1 *h = H(c);
  size_t used;
  enum http_errno e;
  h->buf = p;
  used = http_parser_execute(&h->p, &settings, p, n);
  e = HTTP_PARSER_ERRNO(&h->p);
  if (c->closing || H(c) != h) return;
  /* A chunk's CRLF parsed whole in this buffer is checked now: by the next callback
   * it may lie further back than the two bytes kept. */
  if (e == HPE_OK && h->crlf_due && h->crlf_at + 2 <= h->base + used && check_crlf(h) < 0) {
    lr_h1_error(c, 400, "Bad Request\n");
    return;
  }
  /* Remember the last two bytes parsed, for checks that look back (above). */
  if (used >= 2) {
    memcpy(h->tail, p + used - 2, 2);
    h->tail_n = 2;
  } else if (used == 1) {
    h->tail[0] = h->tail_n ? h->tail[1] : 0;
    h->tail[1] = p[0];
    h->tail_n = h->tail_n ? 2 : 1;
  }
  h->base += used;
  if (e == HPE_PAUSED || (e == HPE_OK && h->p.upgrade)) {
    /* A whole request is in: keep the rest for later (pipelined requests, or the
     * first WebSocket frames after an upgrade). */
    if (used < n && keep(h, p + used, n - used) < 0) lr_conn_close(c, 1);
    if (h->plen > PENDING_MAX) lr_stream_pause(&c->s);
    if (h->p.upgrade) h->paused = 1;
    return;
  }
  if (e != HPE_OK && h->fail < 0) { /* nothing to answer: just close */
    lr_conn_close(c, 1);
    return;
  }
  if (e != HPE_OK) {
    int status = h->fail ? h->fail : e == HPE_HEADER_OVERFLOW ? 431 : 400;
    const char *text = status == 431   ? "Request Header Fields Too Large\n"
                       : status == 413 ? "Content Too Large\n"
                       : status == 417 ? "Expectation Failed\n"
                       : status == 505 ? "HTTP Version Not Supported\n"
                       : status == 503 ? "Service Unavailable\n"
                                       : "Bad Request\n";
    if (c->req && !c->req->body_done)
      lr_srv_req_body_end(c->req, status == 413 ? LR_BODY_TOO_LARGE : LR_BODY_BAD);
    lr_h1_error(c, status, text);
  }
}

void lr_h1_data(lr_conn *c, const char *p, size_t n) {
  h1 *h = H(c);
  if (h == NULL) {
    lr_conn_close(c, 1);
    return;
  }
  if (h->broken) return;
  if (h->paused) { /* a request is in flight: read ahead, but not without bound */
    if (keep(h, p, n) < 0) lr_conn_close(c, 1);
    else if (h->plen > PENDING_MAX) lr_stream_pause(&c->s);
    return;
  }
  feed(c, p, n);
}

void lr_h1_take_tail(lr_conn *c, char **p, size_t *n) {
  h1 *h = H(c);
  *p = NULL;
  *n = 0;
  if (h == NULL) return;
  *p = h->pending;
  *n = h->plen;
  h->pending = NULL;
  h->plen = h->pcap = 0;
}

void lr_h1_next(lua_State *L, lr_conn *c) {
  h1 *h = H(c);
  char *buf;
  size_t n;
  if (h == NULL || c->closing) return;
  if (h->broken || h->p.upgrade) { /* an upgrade nobody took: the rest is not HTTP */
    lr_conn_close(c, 0);
    return;
  }
  c->L = L;
  h->paused = 0;
  h->body_paused = 0;
  http_parser_pause(&h->p, 0);
  lr_conn_phase(c, LR_PHASE_IDLE);
  if (lr_stream_read(&c->s) < 0) {
    lr_conn_close(c, 1);
    return;
  }
  if (h->plen == 0) return;
  buf = h->pending;
  n = h->plen;
  h->pending = NULL;
  h->plen = h->pcap = 0;
  feed(c, buf, n);
  free(buf);
}
