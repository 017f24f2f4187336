/* A precise delay server for bench/http_bench.sh: one thread, epoll, HTTP/1.1
 * keep-alive, delays timed to the nanosecond.
 *
 *     server PORT_FILE PID_FILE
 *
 * GET /delay/S (S seconds, e.g. 0.1 or 1) answers {"delay": S} after S seconds; any
 * other GET answers {"ok": true} at once. Listens on 127.0.0.1 only, on a port the
 * kernel picks, written to PORT_FILE. SIGTERM ends it.
 *
 * nginx's echo_sleep rounds its timers to whole milliseconds and sleeps in epoll_wait
 * with a millisecond timeout, which adds ~1-2.5 ms to every delay: as much as the
 * client under test may take. Here a timerfd set to the absolute earliest deadline
 * wakes the loop, so a response leaves as soon as the kernel delivers the expiry.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* A head must fit the input buffer whole; one that does not is refused. */
#define IN_CAP 8192
#define OUT_CAP 256
/* How long a connection we refused may keep sending before we close it: closing
 * with its bytes unread would make the kernel send a reset, which can destroy our
 * 400 before the client reads it. */
#define LINGER_NS 2000000000ull

enum state {
  READING, /* parsing whatever is buffered, no request in hand */
  WAITING, /* a delayed response is ready in out[], deadline in the heap */
  WRITING, /* out[] is (partly) unsent; EPOLLOUT continues it */
  LINGER,  /* our side shut down; discarding input until EOF or the deadline */
  DEAD,    /* closed; memory reused once the current batch of events is done */
};

struct conn {
  int fd;
  enum state state;
  size_t heap_idx;
  uint64_t deadline;
  unsigned close_after : 1; /* close once out[] is sent */
  unsigned peer_eof : 1;    /* the client shut its side: no more requests */
  unsigned starved : 1;     /* in[] filled before EAGAIN: the kernel may hold more */
  size_t len, scanned;      /* bytes in in[]; prefix already searched for the end */
  size_t out_len, out_off;
  struct conn *next; /* on the dead or free list */
  char out[OUT_CAP];
  char in[IN_CAP];
};

static int ep, tfd, lfd, spare_fd;
static struct conn **heap;
static size_t heap_len, heap_cap;
static uint64_t armed; /* deadline the timerfd is set for, 0 when unarmed */
static struct conn *dead_list, *free_list;
/* Tags for epoll's data.ptr: distinct addresses that are not connections. */
static char listen_tag, timer_tag;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- min-heap of deadlines; each connection is in it at most once ---- */

static void heap_set(size_t i, struct conn *c) {
  heap[i] = c;
  c->heap_idx = i;
}

static void heap_up(size_t i) {
  struct conn *c = heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (heap[p]->deadline <= c->deadline) break;
    heap_set(i, heap[p]);
    i = p;
  }
  heap_set(i, c);
}

static void heap_down(size_t i) {
  struct conn *c = heap[i];
  for (;;) {
    size_t l = 2 * i + 1, m;
    if (l >= heap_len) break;
    m = (l + 1 < heap_len && heap[l + 1]->deadline < heap[l]->deadline) ? l + 1 : l;
    if (c->deadline <= heap[m]->deadline) break;
    heap_set(i, heap[m]);
    i = m;
  }
  heap_set(i, c);
}

static int heap_push(struct conn *c) {
  if (heap_len == heap_cap) {
    size_t cap = heap_cap ? 2 * heap_cap : 1024;
    struct conn **h = realloc(heap, cap * sizeof *h);
    if (!h) return -1;
    heap = h;
    heap_cap = cap;
  }
  heap_set(heap_len++, c);
  heap_up(heap_len - 1);
  return 0;
}

static void heap_remove(struct conn *c) {
  size_t i = c->heap_idx;
  struct conn *last = heap[--heap_len];
  if (i == heap_len) return;
  heap_set(i, last);
  if (i > 0 && heap[(i - 1) / 2]->deadline > last->deadline) heap_up(i);
  else heap_down(i);
}

/* ---- connections ---- */

static struct conn *conn_new(int fd) {
  struct conn *c = free_list;
  if (c) free_list = c->next;
  else if (!(c = malloc(sizeof *c))) return NULL;
  c->fd = fd;
  c->state = READING;
  c->close_after = c->peer_eof = c->starved = 0;
  c->len = c->scanned = c->out_len = c->out_off = 0;
  return c;
}

/* The memory stays untouched until the batch of events that may still name it is
 * done: a connection's events can follow the timer's in the same batch. */
static void conn_close(struct conn *c) {
  if (c->state == WAITING || c->state == LINGER) heap_remove(c);
  close(c->fd);
  c->state = DEAD;
  c->next = dead_list;
  dead_list = c;
}

/* Reads until EAGAIN, EOF or a full buffer. -1: the connection is gone. */
static int fill(struct conn *c) {
  c->starved = 0;
  while (c->len < IN_CAP) {
    ssize_t n = read(c->fd, c->in + c->len, IN_CAP - c->len);
    if (n > 0) {
      c->len += (size_t)n;
    } else if (n == 0) {
      c->peer_eof = 1;
      return 0;
    } else if (errno == EAGAIN) {
      return 0;
    } else if (errno != EINTR) {
      conn_close(c);
      return -1;
    }
  }
  c->starved = 1;
  return 0;
}

/* Discards input of a connection we are done with; closes it at EOF or error. */
static void drain(struct conn *c) {
  char buf[4096];
  for (;;) {
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    conn_close(c);
    return;
  }
}

static void start_close(struct conn *c) {
  if (c->peer_eof) {
    conn_close(c);
    return;
  }
  shutdown(c->fd, SHUT_WR);
  c->state = LINGER;
  c->deadline = mono_ns() + LINGER_NS;
  if (heap_push(c) < 0) {
    c->state = READING; /* not in the heap */
    conn_close(c);
    return;
  }
  drain(c);
}

/* Sends out[] (one write() unless the socket buffer is full). 1: sent and the
 * connection is ready for its next request; 0: not (waiting for EPOLLOUT, or
 * closing, or closed). */
static int flush(struct conn *c) {
  c->state = WRITING;
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n > 0) {
      c->out_off += (size_t)n;
    } else if (n < 0 && errno == EAGAIN) {
      return 0;
    } else if (!(n < 0 && errno == EINTR)) {
      conn_close(c);
      return 0;
    }
  }
  if (c->close_after) {
    start_close(c);
    return 0;
  }
  c->state = READING;
  if (c->starved && fill(c) < 0) return 0;
  return 1;
}

static void respond(struct conn *c, const char *status, const char *body, int keep_alive_hdr) {
  int n = snprintf(c->out, OUT_CAP,
                   "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n%s",
                   status, strlen(body),
                   c->close_after ? "Connection: close\r\n"
                   : keep_alive_hdr ? "Connection: keep-alive\r\n"
                                    : "",
                   body);
  c->out_len = (size_t)n; /* OUT_CAP holds the longest: bodies are bounded */
  c->out_off = 0;
}

static void bad_request(struct conn *c) {
  c->close_after = 1;
  respond(c, "400 Bad Request", "{\"error\": \"bad request\"}", 0);
  flush(c);
}

/* ---- request parsing ---- */

static int lower(int ch) { return (ch >= 'A' && ch <= 'Z') ? ch + 32 : ch; }

static int name_is(const char *p, size_t n, const char *name) {
  size_t i;
  if (strlen(name) != n) return 0;
  for (i = 0; i < n; i++)
    if (lower((unsigned char)p[i]) != name[i]) return 0;
  return 1;
}

static int is_tchar(int ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Scans a comma-separated Connection value for close / keep-alive. */
static void connection_tokens(const char *p, const char *end, int *close, int *keep) {
  while (p < end) {
    const char *t, *e;
    while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
    t = p;
    while (p < end && *p != ',') p++;
    e = p;
    while (e > t && (e[-1] == ' ' || e[-1] == '\t')) e--;
    if (name_is(t, (size_t)(e - t), "close")) *close = 1;
    else if (name_is(t, (size_t)(e - t), "keep-alive")) *keep = 1;
  }
}

/* "0.1" -> 100000000 ns and, for the body, the number as JSON writes it. At most 9
 * digits each side of the point so the nanoseconds fit 64 bits exactly: a float
 * would turn 0.1 into 99999999 ns. -1: not such a number. */
static int parse_secs(const char *p, size_t n, uint64_t *ns, char *json, size_t json_cap) {
  uint64_t whole = 0, frac = 0;
  size_t i = 0, iw, fd = 0;
  while (i < n && p[i] >= '0' && p[i] <= '9') whole = whole * 10 + (uint64_t)(p[i++] - '0');
  iw = i;
  if (iw == 0 || iw > 9) return -1;
  if (i < n) {
    if (p[i++] != '.') return -1;
    while (i < n && p[i] >= '0' && p[i] <= '9' && fd < 9) frac = frac * 10 + (uint64_t)(p[i++] - '0'), fd++;
    if (fd == 0 || i != n) return -1;
  }
  {
    uint64_t scaled = frac;
    size_t k;
    for (k = fd; k < 9; k++) scaled *= 10;
    *ns = whole * 1000000000ull + scaled;
    /* trailing zeros dropped: 0.100 and 0.1 read the same */
    while (fd > 0 && frac % 10 == 0) frac /= 10, fd--;
    if (fd) snprintf(json, json_cap, "%llu.%0*llu", (unsigned long long)whole, (int)fd, (unsigned long long)frac);
    else snprintf(json, json_cap, "%llu", (unsigned long long)whole);
  }
  return 0;
}

/* Handles the head in in[0, head_len) (ending in the blank line). 1: answered or
 * scheduled; 0: refused (400 sent, connection closing). */
static int handle_head(struct conn *c, size_t head_len) {
  const char *p = c->in, *end = c->in + head_len - 2; /* end: the blank line's CRLF */
  const char *line_end, *sp1, *sp2, *target, *path_end;
  int http10, conn_close_tok = 0, conn_keep_tok = 0;
  size_t i;
  uint64_t delay_ns = 0;
  char secs[32];
  int delayed = 0;

  /* control characters other than tab have no place in a head; this also rules out
   * bare CR and LF, so lines are exactly what lies between CRLFs */
  for (i = 0; i < head_len; i++) {
    unsigned char ch = (unsigned char)c->in[i];
    if ((ch < 32 && ch != '\t' && ch != '\r' && ch != '\n') || ch == 127) return 0;
    if (ch == '\r' && (i + 1 >= head_len || c->in[i + 1] != '\n')) return 0;
    if (ch == '\n' && (i == 0 || c->in[i - 1] != '\r')) return 0;
  }

  /* request line: GET SP target SP HTTP/1.x */
  line_end = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
  sp1 = memchr(p, ' ', (size_t)(line_end - p));
  if (!sp1) return 0;
  sp2 = memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1));
  if (!sp2 || line_end - sp2 - 1 != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) return 0;
  if (sp2[8] != '0' && sp2[8] != '1') return 0;
  http10 = sp2[8] == '0';
  if (sp1 - p != 3 || memcmp(p, "GET", 3) != 0) return 0;
  target = sp1 + 1;
  if (target == sp2 || *target != '/' || memchr(target, ' ', (size_t)(sp2 - target))) return 0;
  path_end = memchr(target, '?', (size_t)(sp2 - target));
  if (!path_end) path_end = sp2;

  /* headers: name ":" OWS value OWS */
  for (p = line_end + 2; p < end; p = line_end + 2) {
    const char *colon, *v, *ve;
    line_end = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
    colon = memchr(p, ':', (size_t)(line_end - p));
    if (!colon || colon == p) return 0;
    for (v = p; v < colon; v++)
      if (!is_tchar((unsigned char)*v)) return 0; /* also a folded line's leading space */
    v = colon + 1;
    ve = line_end;
    while (v < ve && (*v == ' ' || *v == '\t')) v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    if (name_is(p, (size_t)(colon - p), "connection")) {
      connection_tokens(v, ve, &conn_close_tok, &conn_keep_tok);
    } else if (name_is(p, (size_t)(colon - p), "content-length")) {
      /* a body would have to be read past; GETs here have none */
      if (v == ve) return 0;
      for (; v < ve; v++)
        if (*v != '0') return 0;
    } else if (name_is(p, (size_t)(colon - p), "transfer-encoding")) {
      return 0;
    }
  }

  c->close_after = http10 ? (conn_close_tok || !conn_keep_tok) : conn_close_tok;
  if (path_end - target >= 7 && memcmp(target, "/delay/", 7) == 0) {
    if (parse_secs(target + 7, (size_t)(path_end - target - 7), &delay_ns, secs, sizeof secs) < 0) return 0;
    delayed = 1;
  }
  if (delayed) {
    char body[64];
    snprintf(body, sizeof body, "{\"delay\": %s}", secs);
    respond(c, "200 OK", body, http10 && !c->close_after);
  } else {
    respond(c, "200 OK", "{\"ok\": true}", http10 && !c->close_after);
  }

  /* the head is no longer needed: what follows is the next request */
  memmove(c->in, c->in + head_len, c->len - head_len);
  c->len -= head_len;
  c->scanned = 0;

  if (delay_ns > 0) {
    c->deadline = mono_ns() + delay_ns;
    if (heap_push(c) < 0) {
      conn_close(c);
      return 1;
    }
    c->state = WAITING;
    return 1;
  }
  c->state = WRITING;
  return 1;
}

/* Answers the buffered requests in turn until one must wait, or the buffer holds no
 * whole head. */
static void process(struct conn *c) {
  while (c->state == READING) {
    size_t from = c->scanned >= 3 ? c->scanned - 3 : 0;
    const char *hit;
    /* RFC 9112 2.2: blank lines before a request line are to be ignored */
    while (c->len >= 2 && c->in[0] == '\r' && c->in[1] == '\n') {
      memmove(c->in, c->in + 2, c->len - 2);
      c->len -= 2;
      from = 0;
    }
    hit = c->len > from ? memmem(c->in + from, c->len - from, "\r\n\r\n", 4) : NULL;
    if (!hit) {
      c->scanned = c->len;
      if (c->len == IN_CAP) {
        bad_request(c);
        return;
      }
      if (c->starved) {
        if (fill(c) < 0) return;
        continue;
      }
      if (c->peer_eof) conn_close(c); /* nothing more can come; a partial head is dropped */
      return;
    }
    if (!handle_head(c, (size_t)(hit + 4 - c->in))) {
      bad_request(c);
      return;
    }
    if (c->state == WRITING && !flush(c)) return;
  }
}

/* ---- timers ---- */

static void arm(void) {
  uint64_t want = heap_len ? heap[0]->deadline : 0;
  struct itimerspec its;
  if (want == armed) return;
  memset(&its, 0, sizeof its);
  its.it_value.tv_sec = (time_t)(want / 1000000000ull);
  its.it_value.tv_nsec = (long)(want % 1000000000ull);
  if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
  armed = want;
}

/* Answers every request whose deadline has passed, looking at the clock again after
 * each round: the writes take time, and a deadline that passed meanwhile is better
 * met now than after another trip through epoll_wait. */
static void expire(void) {
  for (;;) {
    uint64_t now = mono_ns();
    if (!heap_len || heap[0]->deadline > now) break;
    while (heap_len && heap[0]->deadline <= now) {
      struct conn *c = heap[0];
      heap_remove(c);
      if (c->state == LINGER) {
        c->state = READING; /* out of the heap now */
        conn_close(c);
      } else if (flush(c)) {
        process(c);
      }
    }
  }
  arm();
}

/* ---- listening ---- */

static void accept_all(void) {
  for (;;) {
    int one = 1;
    struct conn *c;
    struct epoll_event ev;
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN) return;
      if (errno == EMFILE || errno == ENFILE) {
        /* out of descriptors: take the connection off the queue and drop it, or
         * the level-triggered listener would wake us forever */
        close(spare_fd);
        fd = accept(lfd, NULL, NULL);
        if (fd >= 0) close(fd);
        spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) return;
        continue;
      }
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      return; /* ENOBUFS, ENOMEM: try again on the next wakeup */
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!(c = conn_new(fd))) {
      close(fd);
      continue;
    }
    /* edge-triggered: EPOLLOUT then only reports a full send buffer draining, so it
     * costs nothing while every response fits in one write() */
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
      close(fd);
      c->next = free_list;
      free_list = c;
    }
  }
}

static void write_file(const char *path, long value) {
  char tmp[4096], text[32];
  int fd, n = snprintf(text, sizeof text, "%ld\n", value);
  /* a reader polling for the file never sees it half written */
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
    fprintf(stderr, "path too long: %s\n", path);
    exit(1);
  }
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die(tmp);
  if (write(fd, text, (size_t)n) != n) die(tmp);
  if (close(fd) < 0) die(tmp);
  if (rename(tmp, path) < 0) die(path);
}

int main(int argc, char **argv) {
  struct sockaddr_in addr;
  socklen_t alen = sizeof addr;
  struct epoll_event ev, events[256];
  struct rlimit rl;
  int one = 1;

  if (argc != 3) {
    fprintf(stderr, "usage: %s PORT_FILE PID_FILE\n", argv[0]);
    return 2;
  }
  /* the kernel's default 50 us of slack would be added to every wakeup */
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  signal(SIGPIPE, SIG_IGN); /* a client gone before its response: write() says EPIPE */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

  lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  if (listen(lfd, 4096) < 0) die("listen");
  if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) die("getsockname");

  tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (tfd < 0) die("timerfd_create");
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  ev.events = EPOLLIN;
  ev.data.ptr = &listen_tag;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl");
  ev.events = EPOLLIN;
  ev.data.ptr = &timer_tag;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) < 0) die("epoll_ctl");

  write_file(argv[1], ntohs(addr.sin_port));
  write_file(argv[2], (long)getpid());

  for (;;) {
    int i, n = epoll_wait(ep, events, (int)(sizeof events / sizeof events[0]), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (i = 0; i < n; i++) {
      void *tag = events[i].data.ptr;
      uint32_t e = events[i].events;
      struct conn *c;
      if (tag == &listen_tag) {
        accept_all();
        continue;
      }
      if (tag == &timer_tag) {
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) > 0) armed = 0; /* one-shot: spent */
        continue; /* expire() below answers */
      }
      c = tag;
      if (c->state == DEAD) continue;
      if (e & (EPOLLERR | EPOLLHUP)) {
        conn_close(c);
        continue;
      }
      if (e & (EPOLLIN | EPOLLRDHUP)) {
        if (c->state == LINGER) {
          drain(c);
          continue;
        }
        if (fill(c) < 0) continue;
        if (c->state == READING) process(c);
      }
      if ((e & EPOLLOUT) && c->state == WRITING && flush(c)) process(c);
    }
    expire();
    /* nothing can name these any more */
    while (dead_list) {
      struct conn *c = dead_list;
      dead_list = c->next;
      c->next = free_list;
      free_list = c;
    }
  }
}
