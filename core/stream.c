/* stream.c: a connected TCP byte stream, plain or under TLS (tls.c), for the HTTP
 * server and the WebSocket client.
 *
 * Reads land in one buffer shared by every stream of the loop: an owner consumes (or
 * copies) data inside on_data, so nothing needs a buffer of its own per connection,
 * and 10,000 idle connections cost no read memory. Writes are single blocks holding
 * the uv_write_t and the bytes, so a response costs one allocation and one writev.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include "lr_net.h"

typedef struct wblock {
  uv_write_t req;
  lr_stream *s;
  size_t len;
  char data[];
} wblock;

#define BLOCK_OF(p) ((wblock *)((char *)(p) - offsetof(wblock, data)))

/* The loop's read buffer. Only the loop's thread reads, and on_data never reads
 * again before it returns. */
static char readbuf[64 * 1024];
static int readbuf_busy;

static void on_alloc(uv_handle_t *h, size_t want, uv_buf_t *buf) {
  (void)want;
  if (readbuf_busy) { /* a second loop on another thread (two lr.run states): its own */
    buf->base = malloc(16 * 1024);
    buf->len = buf->base ? 16 * 1024 : 0;
  } else {
    readbuf_busy = 1;
    buf->base = readbuf;
    buf->len = sizeof readbuf;
  }
  (void)h;
}

static void release(const uv_buf_t *buf) {
  if (buf->base == readbuf) readbuf_busy = 0;
  else free(buf->base);
}

void lr_stream_deliver(lr_stream *s, const char *p, size_t n) {
  if (!s->closing && !s->ended && n > 0) s->on_data(s, p, n);
}

void lr_stream_fail(lr_stream *s, int status) {
  if (!s->error) s->error = status;
  if (s->reading) {
    uv_read_stop((uv_stream_t *)&s->tcp);
    s->reading = 0;
  }
  if (s->ended || s->closing) return;
  s->ended = 1;
  s->on_end(s, status);
}

static void on_read(uv_stream_t *h, ssize_t n, const uv_buf_t *buf) {
  lr_stream *s = h->data;
  if (n > 0) {
    if (s->tls) lr_tls_feed(s, buf->base, (size_t)n);
    else lr_stream_deliver(s, buf->base, (size_t)n);
  }
  release(buf);
  if (n < 0) lr_stream_fail(s, (int)n);
}

int lr_stream_init(lr_runtime *rt, lr_stream *s, void *ud) {
  static int sigpipe_done;
  if (!sigpipe_done) {
    /* A write to a connection the peer reset must fail with EPIPE, not kill the
     * process: ignore SIGPIPE unless the host program handles it itself. */
    struct sigaction sa;
    sigpipe_done = 1;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  }
  memset(s, 0, sizeof *s);
  s->rt = rt;
  s->ud = ud;
  s->tcp.data = s;
  return uv_tcp_init(&rt->loop, &s->tcp);
}

int lr_stream_read(lr_stream *s) {
  int rc;
  if (s->reading || s->ended || s->closing) return 0;
  rc = uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
  if (rc == 0) s->reading = 1;
  if (rc == 0 && s->tls) lr_tls_pump(s); /* what TLS held while paused (tls.c) */
  return rc;
}

void lr_stream_pause(lr_stream *s) {
  if (!s->reading) return;
  uv_read_stop((uv_stream_t *)&s->tcp);
  s->reading = 0;
}

char *lr_stream_block(size_t cap) {
  wblock *b = malloc(sizeof *b + cap);
  return b ? b->data : NULL;
}

void lr_stream_block_free(char *data) {
  if (data) free(BLOCK_OF(data));
}

static void on_written(uv_write_t *req, int status) {
  wblock *b = (wblock *)req;
  lr_stream *s = b->s;
  s->queued -= b->len;
  free(b);
  if (status < 0) {
    lr_stream_fail(s, status);
    return;
  }
  if (s->was_high && s->queued <= LR_STREAM_LOW && !s->closing) {
    s->was_high = 0;
    if (s->on_drain) s->on_drain(s);
  }
}

/* Writes what the kernel takes now, when nothing is queued before it: a whole
 * response usually goes this way, with no write request, no callback and no
 * epoll_ctl (libuv 1.44 re-registers the socket with epoll after every queued write
 * completes, one more system call per response). Returns how much was written, or
 * a libuv error other than EAGAIN. */
static ssize_t write_now(lr_stream *s, const uv_buf_t *bufs, unsigned n) {
  int rc;
  if (s->queued > 0 || s->closing || s->error) return 0;
  rc = uv_try_write((uv_stream_t *)&s->tcp, bufs, n);
  if (rc == UV_EAGAIN) return 0;
  return rc;
}

int lr_stream_raw_send(lr_stream *s, char *data, size_t len) {
  wblock *b = BLOCK_OF(data);
  uv_buf_t buf;
  ssize_t done;
  int rc;
  if (s->closing || s->error) {
    free(b);
    return s->error ? s->error : UV_ECANCELED;
  }
  buf = uv_buf_init(data, (unsigned)len);
  if ((done = write_now(s, &buf, 1)) < 0) {
    free(b);
    lr_stream_fail(s, (int)done);
    return (int)done;
  }
  if ((size_t)done == len) {
    free(b);
    return 0;
  }
  if (done > 0) { /* the rest waits in the same block */
    memmove(b->data, b->data + done, len - (size_t)done);
    len -= (size_t)done;
  }
  b->s = s;
  b->len = len;
  buf = uv_buf_init(b->data, (unsigned)len);
  rc = uv_write(&b->req, (uv_stream_t *)&s->tcp, &buf, 1, on_written);
  if (rc < 0) {
    free(b);
    return rc;
  }
  s->queued += len;
  if (s->queued > LR_STREAM_LOW) s->was_high = 1;
  return 0;
}

int lr_stream_send(lr_stream *s, char *data, size_t len) {
  if (s->tls) {
    uv_buf_t buf = uv_buf_init(data, (unsigned)len);
    int rc = lr_tls_write(s, &buf, 1);
    lr_stream_block_free(data);
    return rc;
  }
  return lr_stream_raw_send(s, data, len);
}

int lr_stream_write(lr_stream *s, const uv_buf_t *bufs, unsigned n) {
  size_t len = 0, skip;
  ssize_t done;
  unsigned i;
  char *data, *p;
  if (s->tls) return lr_tls_write(s, bufs, n);
  for (i = 0; i < n; i++) len += bufs[i].len;
  /* Straight from the caller's memory when the kernel takes it all (no copy). */
  if ((done = write_now(s, bufs, n)) < 0) {
    lr_stream_fail(s, (int)done);
    return (int)done;
  }
  if ((size_t)done == len) return 0;
  skip = (size_t)done;
  if ((data = lr_stream_block(len - skip)) == NULL) return UV_ENOMEM;
  for (p = data, i = 0; i < n; i++) {
    size_t l = bufs[i].len;
    const char *q = bufs[i].base;
    if (skip >= l) {
      skip -= l;
      continue;
    }
    memcpy(p, q + skip, l - skip);
    p += l - skip;
    skip = 0;
  }
  return lr_stream_raw_send(s, data, (size_t)(p - data));
}

static void on_closed(uv_handle_t *h) {
  lr_stream *s = h->data;
  if (s->tls) lr_tls_free(s);
  if (s->on_closed) s->on_closed(s);
}

void lr_stream_close(lr_stream *s) {
  if (s->closing) return;
  s->closing = 1;
  s->reading = 0;
  uv_close((uv_handle_t *)&s->tcp, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  lr_stream *s = req->data;
  (void)status;
  free(req);
  if (uv_is_closing((uv_handle_t *)&s->tcp)) return; /* the runtime's close got there first */
  s->closing = 0; /* lr_stream_close sets it again */
  lr_stream_close(s);
}

void lr_stream_finish(lr_stream *s) {
  uv_shutdown_t *req;
  if (s->closing) return;
  if (s->tls && !s->error) lr_tls_close_notify(s);
  lr_stream_pause(s);
  req = malloc(sizeof *req);
  if (req == NULL || s->error) {
    free(req);
    lr_stream_close(s);
    return;
  }
  req->data = s;
  if (uv_shutdown(req, (uv_stream_t *)&s->tcp, on_shutdown) < 0) {
    free(req);
    lr_stream_close(s);
    return;
  }
  s->closing = 1; /* no more writes or owner callbacks; the close follows */
}

void lr_stream_peer(lr_stream *s, char *buf, size_t len) {
  struct sockaddr_storage ss;
  int n = sizeof ss;
  buf[0] = '\0';
  if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &n) < 0) return;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    char ip[INET_ADDRSTRLEN];
    uv_ip4_name(a, ip, sizeof ip);
    snprintf(buf, len, "%s:%d", ip, ntohs(a->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    char ip[INET6_ADDRSTRLEN];
    uv_ip6_name(a, ip, sizeof ip);
    snprintf(buf, len, "[%s]:%d", ip, ntohs(a->sin6_port));
  }
}
