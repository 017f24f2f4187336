/* WebSocket echo load generator for bench/serve.sh (f).
 *   wsload HOST PORT CONNECTIONS SECONDS [WINDOW [WARMUP_SECONDS]]
 * Opens CONNECTIONS connections, does the HTTP/1.1 upgrade handshake on each, then keeps
 * WINDOW (default 1) masked 64-byte text frames in flight per connection: every echo
 * received is counted and answered with the next message. The first WARMUP_SECONDS
 * (default 1) are not counted. Prints one line:
 *   messages=N seconds=S rate=R p50_us=X p99_us=Y connections=C errors=E
 * (rate: echoes per second over all connections; p50/p99: round trip of one message). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64
#define FRAME (2 + 4 + MSG)
#define MAXWIN 64
#define HIST_US 1000000

struct conn {
  int fd;
  unsigned char in[65536];
  size_t in_len;
  unsigned char out[FRAME * MAXWIN + 256];
  size_t out_len;
  double sent_at[MAXWIN]; /* ring of send times, oldest first */
  int head, inflight;
  int dead;
};

static unsigned hist[HIST_US + 1];
static long counted, errors;
static int window = 1;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void frame(unsigned char *f, unsigned char opcode, const unsigned char *payload, size_t n) {
  static uint32_t seed = 2463534242u;
  unsigned char mask[4];
  for (int i = 0; i < 4; i++) {
    seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
    mask[i] = (unsigned char)seed;
  }
  f[0] = 0x80 | opcode;
  f[1] = 0x80 | (unsigned char)n; /* n < 126 here */
  memcpy(f + 2, mask, 4);
  for (size_t i = 0; i < n; i++) f[6 + i] = payload[i] ^ mask[i & 3];
}

static int flush(struct conn *c) {
  while (c->out_len > 0) {
    ssize_t w = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EAGAIN) return 0;
      return -1;
    }
    memmove(c->out, c->out + w, c->out_len - (size_t)w);
    c->out_len -= (size_t)w;
  }
  return 0;
}

static void queue_message(struct conn *c, double t) {
  static const unsigned char payload[MSG] =
      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  if (c->out_len + FRAME > sizeof c->out) return;
  frame(c->out + c->out_len, 0x1, payload, MSG);
  c->out_len += FRAME;
  c->sent_at[(c->head + c->inflight) % MAXWIN] = t;
  c->inflight++;
}

static int handshake(int fd, const char *host, int port) {
  char req[512], resp[4096];
  int n = snprintf(req, sizeof req,
                   "GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                   host, port);
  if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) return -1;
  size_t got = 0;
  /* read byte-wise up to the end of the head so no frame bytes are swallowed */
  while (got < sizeof resp - 1) {
    ssize_t r = recv(fd, resp + got, 1, 0);
    if (r <= 0) return -1;
    got++;
    if (got >= 4 && memcmp(resp + got - 4, "\r\n\r\n", 4) == 0) break;
  }
  resp[got] = 0;
  if (strncmp(resp, "HTTP/1.1 101", 12) != 0) {
    fprintf(stderr, "wsload: upgrade refused: %.80s\n", resp);
    return -1;
  }
  return 0;
}

/* Parse whole frames out of c->in; returns -1 when the connection must go. */
static int on_input(struct conn *c, double t, int counting) {
  size_t off = 0;
  while (c->in_len - off >= 2) {
    unsigned char *p = c->in + off;
    unsigned op = p[0] & 0x0f;
    size_t hl = 2, len = p[1] & 0x7f;
    if (p[1] & 0x80) return -1; /* servers do not mask */
    if (len == 126) {
      if (c->in_len - off < 4) break;
      len = (size_t)p[2] << 8 | p[3];
      hl = 4;
    } else if (len == 127) {
      if (c->in_len - off < 10) break;
      len = 0;
      for (int i = 2; i < 10; i++) len = len << 8 | p[i];
      hl = 10;
    }
    if (c->in_len - off < hl + len) break;
    if (op == 0x1 || op == 0x2) {
      if (len != MSG || c->inflight == 0) return -1;
      double rtt = t - c->sent_at[c->head];
      c->head = (c->head + 1) % MAXWIN;
      c->inflight--;
      if (counting) {
        long us = (long)(rtt * 1e6);
        hist[us > HIST_US ? HIST_US : (us < 0 ? 0 : us)]++;
        counted++;
      }
      queue_message(c, t);
    } else if (op == 0x9) { /* ping: pong with the same payload */
      if (len < 126 && c->out_len + 6 + len <= sizeof c->out) {
        frame(c->out + c->out_len, 0xA, p + hl, len);
        c->out_len += 6 + len;
      }
    } else if (op == 0x8) {
      return -1;
    }
    off += hl + len;
  }
  memmove(c->in, c->in + off, c->in_len - off);
  c->in_len -= off;
  return flush(c);
}

static long percentile(double q) {
  long want = (long)(q * counted), seen = 0;
  for (long i = 0; i <= HIST_US; i++) {
    seen += hist[i];
    if (seen > want) return i;
  }
  return HIST_US;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: wsload HOST PORT CONNECTIONS SECONDS [WINDOW [WARMUP]]\n");
    return 2;
  }
  const char *host = argv[1];
  int port = atoi(argv[2]), nconn = atoi(argv[3]);
  double seconds = atof(argv[4]), warmup = argc > 6 ? atof(argv[6]) : 1.0;
  if (argc > 5) window = atoi(argv[5]);
  if (window < 1 || window > MAXWIN || nconn < 1) {
    fprintf(stderr, "wsload: window 1-%d, at least one connection\n", MAXWIN);
    return 2;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    fprintf(stderr, "wsload: HOST must be an IPv4 address\n");
    return 2;
  }
  struct conn *conns = calloc((size_t)nconn, sizeof *conns);
  int ep = epoll_create1(0);
  if (!conns || ep < 0) die("setup");
  int live = 0;
  for (int i = 0; i < nconn; i++) {
    struct conn *c = &conns[i];
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket");
    struct timeval tv = {5, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 || handshake(c->fd, host, port) < 0) {
      if (errors < 3) fprintf(stderr, "wsload: connection %d failed\n", i);
      close(c->fd);
      c->dead = 1;
      errors++;
      continue;
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    live++;
  }
  if (live == 0) {
    printf("messages=0 seconds=0 rate=0 p50_us=0 p99_us=0 connections=0 errors=%ld\n", errors);
    return 1;
  }
  double t0 = now();
  for (int i = 0; i < nconn; i++) {
    if (conns[i].dead) continue;
    for (int w = 0; w < window; w++) queue_message(&conns[i], t0);
    if (flush(&conns[i]) < 0) conns[i].dead = 1, errors++, live--;
  }
  double start = t0 + warmup, end = start + seconds;
  struct epoll_event evs[256];
  for (;;) {
    double t = now();
    if (t >= end || live == 0) break;
    int timeout_ms = (int)((end - t) * 1000) + 1;
    int n = epoll_wait(ep, evs, 256, timeout_ms > 100 ? 100 : timeout_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    t = now();
    int counting = t >= start && t < end;
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (c->dead) continue;
      int bad = 0;
      if (evs[i].events & EPOLLIN) {
        for (;;) {
          ssize_t r = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
          if (r > 0) {
            c->in_len += (size_t)r;
            if (on_input(c, t, counting) < 0) { bad = 1; break; }
            continue;
          }
          if (r < 0 && errno == EAGAIN) break;
          bad = 1;
          break;
        }
      }
      if (!bad && (evs[i].events & EPOLLOUT) && flush(c) < 0) bad = 1;
      if (!bad && (evs[i].events & (EPOLLERR | EPOLLHUP))) bad = 1;
      if (bad) {
        c->dead = 1;
        errors++;
        live--;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
      }
    }
  }
  double took = now() - start;
  if (took > seconds) took = seconds;
  int open_conns = 0;
  for (int i = 0; i < nconn; i++)
    if (!conns[i].dead) open_conns++, close(conns[i].fd);
  printf("messages=%ld seconds=%.3f rate=%.0f p50_us=%ld p99_us=%ld connections=%d errors=%ld\n", counted,
         took, took > 0 ? counted / took : 0.0, percentile(0.50), percentile(0.99), open_conns, errors);
  return 0;
}
