/* http_curl_floor.c: what libcurl alone costs a request, with nothing around it.
 * The (c) workload of bench/http_bench.sh (N GETs of URL, LIMIT at once) driven the
 * way luarun drives libcurl (the multi socket interface on epoll, easy handles
 * reused, keep-alive), but with no Lua, no tasks, no response objects: the body is
 * counted and dropped. Its rate is the ceiling of any client built on this
 * libcurl on this machine.
 *
 *   gcc -O2 -o floor bench/http_curl_floor.c -lcurl
 *   ./floor URL N LIMIT      -> prints "wall_seconds failures"
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>

static int ep;
static long timeout_ms = -1;

static size_t sink(char *p, size_t size, size_t n, void *ud) {
  (void)p;
  *(size_t *)ud += size * n;
  return size * n;
}

/* curl says which sockets to watch; epoll holds them (the fd as the key). */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *u, void *sp) {
  struct epoll_event ev = {0};
  (void)e;
  (void)u;
  (void)sp;
  ev.data.fd = fd;
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    return 0;
  }
  ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
  if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) != 0) epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  return 0;
}

static int on_timer(CURLM *m, long ms, void *u) {
  (void)m;
  (void)u;
  timeout_ms = ms;
  return 0;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  const char *url;
  long n, limit, started = 0, finished = 0, failures = 0, i;
  CURLM *m;
  CURL **h;
  size_t bytes = 0;
  int running;
  double t0;
  if (argc < 4) {
    fprintf(stderr, "usage: %s URL N LIMIT\n", argv[0]);
    return 2;
  }
  url = argv[1];
  n = atol(argv[2]);
  limit = atol(argv[3]);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  ep = epoll_create1(0);
  m = curl_multi_init();
  curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer);
  h = calloc((size_t)limit, sizeof *h);
  t0 = now();
  for (i = 0; i < limit && started < n; i++, started++) {
    h[i] = curl_easy_init();
    curl_easy_setopt(h[i], CURLOPT_URL, url);
    curl_easy_setopt(h[i], CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h[i], CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h[i], CURLOPT_WRITEDATA, &bytes);
    curl_easy_setopt(h[i], CURLOPT_PROXY, "");
    curl_multi_add_handle(m, h[i]);
  }
  curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &running);
  while (finished < n) {
    struct epoll_event evs[256];
    int k, ne = epoll_wait(ep, evs, 256, timeout_ms < 0 ? 1000 : (int)timeout_ms);
    CURLMsg *msg;
    int left;
    if (ne == 0) curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &running);
    for (k = 0; k < ne; k++) {
      int flags = (evs[k].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                  (evs[k].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                  (evs[k].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
      curl_multi_socket_action(m, evs[k].data.fd, flags, &running);
    }
    while ((msg = curl_multi_info_read(m, &left)) != NULL) {
      long code = 0;
      CURL *e = msg->easy_handle;
      if (msg->msg != CURLMSG_DONE) continue;
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
      if (msg->data.result != CURLE_OK || code != 200) failures++;
      finished++;
      curl_multi_remove_handle(m, e);
      if (started < n) { /* the same handle, the same options: the next request */
        started++;
        curl_multi_add_handle(m, e);
      }
    }
    if (timeout_ms == 0) curl_multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &running);
  }
  printf("%.3f %ld\n", now() - t0, failures);
  for (i = 0; i < limit; i++)
    if (h[i]) curl_easy_cleanup(h[i]);
  curl_multi_cleanup(m);
  curl_global_cleanup();
  return bytes > 0 ? 0 : 1;
}
