/* failmalloc.c: an LD_PRELOAD shim that fails one allocation, as curl's torture
 * tests do, so a sweep can check that every allocation a script makes fails cleanly.
 *
 *   FAILMALLOC_NTH=N     fail the N-th allocation of the process (1 is the first) and
 *                        no other; 0 or unset: fail none, only count
 *   FAILMALLOC_COUNT=F   at exit, write the number of allocations made to file F
 *                        (with N = 0 this measures the sweep's length)
 *   FAILMALLOC_TRACE=F   when the N-th allocation fails, write its number, size and
 *                        backtrace to file F (the spec tells libraries that abort on
 *                        out-of-memory by design from our own bugs this way), and
 *                        where a later SIGSEGV or SIGBUS hit, unless the program has
 *                        a handler of its own for them (ASan has)
 *
 * Allocations are malloc, calloc, realloc (except realloc(p, 0), a free),
 * posix_memalign, aligned_alloc, memalign, valloc and pvalloc; strdup and the like
 * reach malloc through the PLT, so they count too. Every thread shares the count, so
 * with threads the N-th allocation can differ from run to run; the sweep still fails
 * each allocation the single-threaded part makes. Allocations made before the shim's
 * constructor runs (the loader's, libc's, ASan's start-up) are counted, never failed.
 *
 * The real functions come from dlsym(RTLD_NEXT), which may itself call calloc (glibc
 * allocates its dlerror buffer that way) before we know where the real calloc is:
 * those calls are served from a static buffer, never counted, and free() ignores
 * blocks in it. Under an ASan build, RTLD_NEXT reaches ASan's allocator (the shim
 * comes first in the search order, so ASAN_OPTIONS needs verify_asan_link_order=0).
 */
#include <dlfcn.h>
#include <execinfo.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <unwind.h>

typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void (*free_fn)(void *);
typedef int (*posix_memalign_fn)(void **, size_t, size_t);
typedef void *(*aligned_alloc_fn)(size_t, size_t);
typedef void *(*valloc_fn)(size_t);

static malloc_fn real_malloc;
static calloc_fn real_calloc;
static realloc_fn real_realloc;
static free_fn real_free;
static posix_memalign_fn real_posix_memalign;
static aligned_alloc_fn real_aligned_alloc, real_memalign;
static valloc_fn real_valloc, real_pvalloc;

/* The bootstrap buffer: what dlsym allocates while we resolve the real functions. */
static _Alignas(max_align_t) char boot[8192];
static size_t boot_used;
static int resolving;

static atomic_ulong count;
static unsigned long nth;
static const char *trace_path;
/* Inside the shim's own setup: pass through. Initial-exec TLS (we are preloaded, so
 * static TLS has room): the default model calls __tls_get_addr, which ASan intercepts
 * and which is not ready yet when ASan's own start-up allocates. */
static __thread int uncounted __attribute__((tls_model("initial-exec")));

static int in_boot(const void *p) {
  return (const char *)p >= boot && (const char *)p < boot + sizeof boot;
}

static void *boot_alloc(size_t n) {
  size_t at = (boot_used + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
  if (n > sizeof boot - at) return NULL;
  boot_used = at + n;
  return boot + at; /* static storage: already zero, as calloc promises */
}

static void resolve(void) {
  if (real_malloc != NULL || resolving) return;
  resolving = 1;
  real_calloc = (calloc_fn)dlsym(RTLD_NEXT, "calloc");
  real_malloc = (malloc_fn)dlsym(RTLD_NEXT, "malloc");
  real_realloc = (realloc_fn)dlsym(RTLD_NEXT, "realloc");
  real_free = (free_fn)dlsym(RTLD_NEXT, "free");
  real_posix_memalign = (posix_memalign_fn)dlsym(RTLD_NEXT, "posix_memalign");
  real_aligned_alloc = (aligned_alloc_fn)dlsym(RTLD_NEXT, "aligned_alloc");
  real_memalign = (aligned_alloc_fn)dlsym(RTLD_NEXT, "memalign");
  real_valloc = (valloc_fn)dlsym(RTLD_NEXT, "valloc");
  real_pvalloc = (valloc_fn)dlsym(RTLD_NEXT, "pvalloc");
  resolving = 0;
}

static void say(int fd, const char *msg) {
  ssize_t r = write(fd, msg, strlen(msg));
  (void)r;
}

/* The stack, from libgcc's unwinder directly: glibc's backtrace() would dlopen
 * libgcc_s at its first call, and the loader keeps a block of that for good, which
 * LeakSanitizer reports. */
struct walk {
  void **frame;
  int n, max;
};

static _Unwind_Reason_Code step(struct _Unwind_Context *ctx, void *arg) {
  struct walk *w = arg;
  if (w->n == w->max) return _URC_END_OF_STACK;
  w->frame[w->n++] = (void *)_Unwind_GetIP(ctx);
  return _URC_NO_REASON;
}

/* No allocation here: open, write, and backtrace_symbols_fd, which writes directly. */
static void trace(unsigned long n, size_t size) {
  void *frame[64];
  struct walk w = {frame, 0, 64};
  char buf[96];
  int fd = open(trace_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  snprintf(buf, sizeof buf, "failmalloc: failing allocation %lu (%zu bytes)\n", n, size);
  say(fd, buf);
  _Unwind_Backtrace(step, &w);
  backtrace_symbols_fd(frame, w.n, fd);
  close(fd);
}

/* SIGSEGV or SIGBUS after the failure: where, then die of the signal as before (the
 * handler was reset by SA_RESETHAND, and returning re-runs the faulting access). */
static void crash(int sig) {
  void *frame[64];
  struct walk w = {frame, 0, 64};
  char buf[64];
  int fd = open(trace_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  snprintf(buf, sizeof buf, "failmalloc: then signal %d at\n", sig);
  say(fd, buf);
  _Unwind_Backtrace(step, &w);
  backtrace_symbols_fd(frame, w.n, fd);
  close(fd);
}

static void catch_crashes(void) {
  static const int sigs[] = {SIGSEGV, SIGBUS};
  static char altstack[64 * 1024]; /* the crash may be a stack overflow */
  struct sigaction sa, old;
  stack_t st;
  unsigned i;
  /* Only where the program has no handler of its own: ASan has one, and an
   * alternate stack it unmaps when the thread ends (ours is static). */
  for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    if (sigaction(sigs[i], NULL, &old) != 0 || old.sa_handler != SIG_DFL) return;
  if (sigaltstack(NULL, &st) == 0 && (st.ss_flags & SS_DISABLE)) {
    st.ss_sp = altstack;
    st.ss_size = sizeof altstack;
    st.ss_flags = 0;
    sigaltstack(&st, NULL);
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = crash;
  sa.sa_flags = SA_RESETHAND | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
}

/* Counts one allocation; returns 1 if this one is to fail. */
static int should_fail(size_t size) {
  unsigned long n;
  if (uncounted) return 0;
  n = atomic_fetch_add(&count, 1) + 1;
  if (nth == 0 || n != nth) return 0;
  if (trace_path != NULL) {
    trace(n, size);
    catch_crashes();
  }
  return 1;
}

void *malloc(size_t n) {
  if (real_malloc == NULL) {
    resolve();
    if (real_malloc == NULL) return boot_alloc(n);
  }
  if (should_fail(n)) {
    errno = ENOMEM;
    return NULL;
  }
  return real_malloc(n);
}

void *calloc(size_t k, size_t n) {
  if (real_calloc == NULL) {
    resolve();
    if (real_calloc == NULL) return n && k > (size_t)-1 / n ? NULL : boot_alloc(k * n);
  }
  if (should_fail(k * n)) {
    errno = ENOMEM;
    return NULL;
  }
  return real_calloc(k, n);
}

void *realloc(void *p, size_t n) {
  if (in_boot(p)) { /* never happens in practice: move it to the real heap */
    size_t have = (size_t)(boot + sizeof boot - (char *)p);
    void *q = malloc(n);
    if (q != NULL) memcpy(q, p, n < have ? n : have);
    return q;
  }
  resolve();
  if (p != NULL && n == 0) return real_realloc(p, n);
  if (should_fail(n)) {
    errno = ENOMEM;
    return NULL;
  }
  return real_realloc(p, n);
}

void free(void *p) {
  if (p == NULL || in_boot(p)) return;
  resolve();
  real_free(p);
}

int posix_memalign(void **out, size_t align, size_t n) {
  resolve();
  if (should_fail(n)) return ENOMEM;
  return real_posix_memalign(out, align, n);
}

void *aligned_alloc(size_t align, size_t n) {
  resolve();
  if (should_fail(n)) {
    errno = ENOMEM;
    return NULL;
  }
  return real_aligned_alloc(align, n);
}

void *memalign(size_t align, size_t n) {
  resolve();
  if (should_fail(n)) {
    errno = ENOMEM;
    return NULL;
  }
  return real_memalign(align, n);
}

void *valloc(size_t n) {
  resolve();
  if (should_fail(n)) {
    errno = ENOMEM;
    return NULL;
  }
  return real_valloc(n);
}

void *pvalloc(size_t n) {
  resolve();
  if (should_fail(n)) {
    errno = ENOMEM;
    return NULL;
  }
  return real_pvalloc(n);
}

/* The settings are read here, not at the first allocation: under ASan, the
 * executable's preinit code allocates before libc has set up the environment.
 * Allocations before this point are counted but never fail. getenv and strtoul do
 * not allocate. */
__attribute__((constructor)) static void failmalloc_init(void) {
  const char *s = getenv("FAILMALLOC_NTH");
  resolve();
  trace_path = getenv("FAILMALLOC_TRACE");
  if (trace_path != NULL && trace_path[0] == '\0') trace_path = NULL;
  if (trace_path != NULL) {
    /* Should the unwinder allocate at its first call, let it do so now, uncounted,
     * so the counts match those of runs without a trace. */
    void *frame[2];
    struct walk w = {frame, 0, 2};
    uncounted = 1;
    _Unwind_Backtrace(step, &w);
    uncounted = 0;
  }
  nth = s != NULL ? strtoul(s, NULL, 10) : 0;
}

/* Written with open/write: stdio would allocate, and count, while we report. */
__attribute__((destructor)) static void failmalloc_fini(void) {
  const char *path = getenv("FAILMALLOC_COUNT");
  char buf[32];
  int fd, len;
  if (path == NULL || path[0] == '\0') return;
  len = snprintf(buf, sizeof buf, "%lu\n", (unsigned long)atomic_load(&count));
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (write(fd, buf, (size_t)len) != len) say(2, "failmalloc: cannot write the count\n");
  close(fd);
}
