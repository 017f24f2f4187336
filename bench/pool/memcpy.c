/* memcpy.c: the baselines for bench/pool.sh (c), a job taking a 1 MB string and
 * returning it. Prints microseconds.
 *
 *   c_memcpy_us   THE baseline of the goal ("within 2 x a plain memcpy of the data"):
 *                 one thread copies the 1 MB argument into a buffer (where the
 *                 worker's copy of the argument lives) and that buffer into another
 *                 (the caller's copy of the result): the 2 MB that cross, copied with
 *                 memcpy between three buffers allocated once, no threads, no
 *                 allocation. Median of 5 runs of 500.
 *   memcpy_1mb_us one memcpy of 1 MB between the same two buffers (both stay in
 *                 this CPU's L2: the fastest a 1 MB copy gets here).
 *   c_xthread_us  the same two copies done as the pool must do them: a second thread
 *                 copies the argument, hands its buffer back through a flag it polls,
 *                 and the first copies that: no Lua, no allocation, no sleeping. The
 *                 least that copying on both sides can cost on this machine (the
 *                 second copy reads what another core just wrote). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N (1u << 20)
#define REPS 500

static char *src, *wbuf, *cbuf;
static volatile char sink;
static int turn; /* 1: the worker copies, 2: the caller copies; 0: stop */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median5(double *r) {
  qsort(r, 5, sizeof *r, cmp);
  return r[2];
}

static double one_copy(void) {
  double t0 = now();
  int i;
  for (i = 0; i < REPS; i++) {
    src[i] = (char)i;
    memcpy(cbuf, src, N);
    sink += cbuf[i];
  }
  return (now() - t0) / REPS * 1e6;
}

static double two_copies(void) {
  double t0 = now();
  int i;
  for (i = 0; i < REPS; i++) {
    src[i] = (char)i;
    memcpy(wbuf, src, N);   /* argument -> worker */
    memcpy(cbuf, wbuf, N);  /* result -> caller */
    sink += cbuf[i];
  }
  return (now() - t0) / REPS * 1e6;
}

static void *worker(void *arg) {
  int t;
  (void)arg;
  for (;;) {
    while ((t = __atomic_load_n(&turn, __ATOMIC_ACQUIRE)) == 2) {}
    if (t == 0) return NULL;
    memcpy(wbuf, src, N);
    __atomic_store_n(&turn, 2, __ATOMIC_RELEASE);
  }
}

static double two_threads(void) {
  double t0 = now();
  int i;
  for (i = 0; i < REPS; i++) {
    src[i] = (char)i;
    __atomic_store_n(&turn, 1, __ATOMIC_RELEASE);
    while (__atomic_load_n(&turn, __ATOMIC_ACQUIRE) != 2) {}
    memcpy(cbuf, wbuf, N);
    sink += cbuf[i];
  }
  return (now() - t0) / REPS * 1e6;
}

int main(void) {
  double r[5];
  pthread_t th;
  int k;
  src = malloc(N);
  wbuf = malloc(N);
  cbuf = malloc(N);
  if (!src || !wbuf || !cbuf) return 1;
  memset(src, 'x', N);
  memset(wbuf, 0, N);
  memset(cbuf, 0, N);
  for (k = 0; k < 5; k++) r[k] = two_copies();
  printf("c_memcpy_us %.1f\n", median5(r));
  for (k = 0; k < 5; k++) r[k] = one_copy();
  printf("memcpy_1mb_us %.1f\n", median5(r));
  __atomic_store_n(&turn, 2, __ATOMIC_RELEASE);
  if (pthread_create(&th, NULL, worker, NULL) != 0) return 1;
  for (k = 0; k < 5; k++) r[k] = two_threads();
  __atomic_store_n(&turn, 0, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  printf("c_xthread_us %.1f\n", median5(r));
  return 0;
}
