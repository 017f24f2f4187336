/* The floor of luarun's HTTP/1.1 stack: libuv + http-parser 2.9.4, one thread, no Lua.
 *   floor_h1 PORT [DELAY_MS]
 * With DELAY_MS, each answer waits that long on a libuv timer of its connection first
 * (workload (c), "the handler sleeps 10 ms", with no handler: the floor of what one
 * thread on this loop can do with 1,000 connections waiting at once).
 * Listens on 127.0.0.1:PORT. Every request is answered "Hello, World!" (text/plain),
 * except one with a body, which is answered with the body's length in decimal (the
 * 16 KiB POST workload: the body is counted as it streams through, never buffered).
 * Keep-alive and pipelining: the responses to all requests parsed from one read are
 * gathered in one buffer and written with uv_try_write; what the kernel did not take
 * goes out with uv_write (libuv keeps order: try_write refuses while a write is queued).
 * Reads stop while more than 1 MiB of responses waits to be written.
 * SIGINT/SIGTERM stop the loop and return 0 (for valgrind's final dump).
 */
#include <http_parser.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define READ_BUF 65536
#define HIGH_WATER (1 << 20)

static const char hello[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 13\r\n"
    "\r\n"
    "Hello, World!";
static const char bad_request[] =
    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

static http_parser_settings settings;
static uv_loop_t *loop;
static uint64_t delay_ms;

typedef struct {
  uv_tcp_t tcp;
  http_parser parser;
  char in[READ_BUF];
  char *out; /* responses gathered during one read */
  size_t out_len, out_cap;
  size_t body_len; /* bytes of the current request's body */
  int has_body;
  int close_after; /* the last response said goodbye */
  int closing;
  uv_timer_t timer; /* DELAY_MS: answers wait on it */
  int held;         /* answers waiting for the timer */
} conn_t;

typedef struct {
  uv_write_t req;
  char data[]; /* copy of the bytes uv_try_write left */
} wreq_t;

static void out_append(conn_t *c, const char *p, size_t n) {
  if (c->out_len + n > c->out_cap) {
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + n) cap *= 2;
    c->out = realloc(c->out, cap);
    if (!c->out) abort();
    c->out_cap = cap;
  }
  memcpy(c->out + c->out_len, p, n);
  c->out_len += n;
}

static void on_timer_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  free(c->out);
  free(c);
}

static void on_closed(uv_handle_t *h) {
  conn_t *c = (conn_t *)h;
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  conn_t *c = (conn_t *)h;
  *buf = uv_buf_init(c->in, sizeof c->in);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_written(uv_write_t *req, int status) {
  conn_t *c = (conn_t *)req->handle;
  free(req);
  if (status < 0) { conn_close(c); return; }
  if (c->closing) return;
  if (c->close_after) {
    if (c->tcp.write_queue_size == 0) conn_close(c);
    return;
  }
  /* resume reading once the queue drained below the mark */
  if (c->tcp.write_queue_size < HIGH_WATER / 2) uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void flush(conn_t *c) {
  if (c->out_len == 0) return;
  uv_buf_t b = uv_buf_init(c->out, (unsigned)c->out_len);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (n == UV_EAGAIN) n = 0;
  if (n < 0) { c->out_len = 0; conn_close(c); return; }
  size_t left = c->out_len - (size_t)n;
  c->out_len = 0;
  if (left == 0) {
    if (c->close_after) conn_close(c);
    return;
  }
  wreq_t *w = malloc(sizeof *w + left);
  if (!w) abort();
  memcpy(w->data, c->out + n, left);
  b = uv_buf_init(w->data, (unsigned)left);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
    free(w);
    conn_close(c);
    return;
  }
  if (c->tcp.write_queue_size > HIGH_WATER) uv_read_stop((uv_stream_t *)&c->tcp);
}

static int on_message_begin(http_parser *p) {
  conn_t *c = p->data;
  c->body_len = 0;
  c->has_body = 0;
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  (void)at;
  conn_t *c = p->data;
  c->has_body = 1;
  c->body_len += len;
  return 0;
}

static void flush(conn_t *c);

static void on_delay(uv_timer_t *t) {
  conn_t *c = t->data;
  for (; c->held > 0; c->held--) out_append(c, hello, sizeof hello - 1);
  flush(c);
}

static int on_message_complete(http_parser *p) {
  conn_t *c = p->data;
  if (delay_ms && !c->has_body) {
    if (c->held++ == 0) uv_timer_start(&c->timer, on_delay, delay_ms, 0);
  } else if (c->has_body) {
    char head[128], num[24];
    int nl = snprintf(num, sizeof num, "%zu", c->body_len);
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", nl);
    out_append(c, head, (size_t)hl);
    out_append(c, num, (size_t)nl);
  } else {
    out_append(c, hello, sizeof hello - 1);
  }
  if (!http_should_keep_alive(p)) {
    c->close_after = 1;
    return 1; /* stop parsing: nothing after a closing request is answered */
  }
  return 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = (conn_t *)s;
  if (nread < 0) { conn_close(c); return; }
  if (nread == 0) return;
  size_t done = http_parser_execute(&c->parser, &settings, buf->base, (size_t)nread);
  if (c->parser.upgrade || (done != (size_t)nread && !c->close_after)) {
    out_append(c, bad_request, sizeof bad_request - 1);
    c->close_after = 1;
  }
  if (c->close_after) uv_read_stop(s);
  flush(c);
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  conn_t *c = calloc(1, sizeof *c);
  if (!c) abort();
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_signal(uv_signal_t *h, int sig) {
  (void)sig;
  uv_stop(h->loop);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: floor_h1 PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (argc > 2) delay_ms = (uint64_t)atoi(argv[2]);
  loop = uv_default_loop();
  http_parser_settings_init(&settings);
  settings.on_message_begin = on_message_begin;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;

  uv_tcp_t server;
  struct sockaddr_in addr;
  uv_tcp_init(loop, &server);
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
  int r = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (r == 0) r = uv_listen((uv_stream_t *)&server, 4096, on_connection);
  if (r != 0) {
    fprintf(stderr, "floor_h1: listen: %s\n", uv_strerror(r));
    return 1;
  }
  uv_signal_t sigint, sigterm;
  uv_signal_init(loop, &sigint);
  uv_signal_init(loop, &sigterm);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
