/* A small client for the callgrind count (bench/serve/floors.sh --callgrind):
 *   reqclient PORT N [BODY_BYTES]
 * One keep-alive connection to 127.0.0.1:PORT, N requests one after the other, each
 * response read whole (head, then Content-Length bytes) before the next is sent:
 * GET / or, with BODY_BYTES, a POST of that many bytes. N = 0 connects and closes,
 * so the baseline run pays the same accept and close as the measured one.
 * Exits 0 when every answer was a 200; gives up after 60 s without a byte.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* The buffer keeps bytes read past one response for the next (there are none with
 * one request in flight, but a server may split or join its writes). */
static char buf[1 << 16];
static size_t have;

static int read_response(int fd) {
  for (;;) {
    char *end = NULL;
    if (have >= 4) {
      buf[have] = 0;
      end = strstr(buf, "\r\n\r\n");
    }
    if (end) {
      size_t head = (size_t)(end - buf) + 4;
      long clen = -1;
      int status = atoi(buf + 9);
      for (char *line = strstr(buf, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "content-length:", 15) == 0) clen = strtol(line + 17, NULL, 10);
      }
      if (clen < 0) return -1; /* every server here answers with a length */
      while (have < head + (size_t)clen) {
        ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
        if (r <= 0) return -1;
        have += (size_t)r;
      }
      memmove(buf, buf + head + clen, have - head - (size_t)clen);
      have -= head + (size_t)clen;
      return status == 200 ? 0 : -1;
    }
    if (have >= sizeof buf - 1) return -1;
    ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
    if (r <= 0) return -1;
    have += (size_t)r;
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: reqclient PORT N [BODY_BYTES]\n");
    return 2;
  }
  int port = atoi(argv[1]);
  long n = atol(argv[2]);
  long body = argc > 3 ? atol(argv[3]) : 0;

  char *req;
  size_t req_len;
  if (body > 0) {
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                      "Content-Length: %ld\r\n\r\n", body);
    req_len = (size_t)hl + (size_t)body;
    req = malloc(req_len);
    memcpy(req, head, (size_t)hl);
    memset(req + hl, 'x', (size_t)body);
  } else {
    static char get[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    req = get;
    req_len = sizeof get - 1;
  }

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  struct timeval tv = {.tv_sec = 60};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    perror("reqclient: connect");
    return 1;
  }
  for (long i = 0; i < n; i++) {
    if (write_all(fd, req, req_len) != 0 || read_response(fd) != 0) {
      fprintf(stderr, "reqclient: request %ld failed\n", i + 1);
      return 1;
    }
  }
  close(fd);
  return 0;
}
