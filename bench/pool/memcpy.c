/* memcpy.c: the baseline for (c): copying 1 MB, into a warm buffer and into a fresh
 * malloc'd one (as a new Lua string would be). Prints microseconds per copy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void) {
  size_t n = 1 << 20;
  int i, reps = 2000;
  char *src = malloc(n), *dst = malloc(n);
  double t0;
  volatile char sink = 0;
  memset(src, 'x', n);
  memset(dst, 0, n);
  t0 = now();
  for (i = 0; i < reps; i++) {
    src[i % n] = (char)i;
    memcpy(dst, src, n);
    sink += dst[i % n];
  }
  printf("memcpy_warm_us %.1f\n", (now() - t0) / reps * 1e6);
  t0 = now();
  for (i = 0; i < reps; i++) {
    char *d = malloc(n);
    memcpy(d, src, n);
    sink += d[i % n];
    free(d);
  }
  printf("memcpy_fresh_us %.1f\n", (now() - t0) / reps * 1e6);
  return 0;
}
