/* alloc.c: the Lua allocator of the luarun executable.
 *
 * Why not realloc/free (luaL_newstate's allocator): a task is a Lua thread, its
 * stack, a CallInfo and a userdata, four blocks of 80-720 bytes, and a script that
 * spawns 10,000 tasks frees 40,000 of them in one collection. glibc takes blocks over
 * its small-bin sizes through the unsorted bin, coalescing them with their neighbours
 * and splitting them again at the next burst: in perf, _int_malloc, _int_free,
 * unlink_chunk and malloc_consolidate were a quarter of the loop thread's time in
 * 10,000 concurrent run_in_pool calls, and lr.map of 10,000 empty items took 0.8 us a
 * item against 0.54 with jemalloc preloaded.
 *
 * So blocks up to LR_ALLOC_SMALL_MAX bytes (4 KiB: a task's stack once it has grown
 * for a call such as an HTTP request's is 1-2 KiB) come from per-size free lists
 * (16-byte classes), carved from 64 KiB chunks (2 MiB huge-page chunks past 4 MiB, see
 * HUGE_CHUNK): a free is a push, an allocation a pop, and no block has
 * a header, since Lua passes every block's size back when it frees or resizes it.
 * Larger blocks go to malloc, realloc and free as before (the in-place strings of
 * fs.read_file rely on that: lr_alloc_takes_block).
 *
 * The cost: small blocks, once freed, stay in their class for the state's life (a
 * burst of 1,000,000 tasks keeps its ~1 GB of stacks ready for the next burst, where
 * glibc would give some back). The chunks go when the state closes.
 * LUARUN_ALLOC=system selects luaL_newstate's allocator instead (valgrind sees each
 * block then). ASan builds poison free blocks, so a use after free is still caught.
 *
 * One thread only: the main state belongs to the loop thread (pool workers have
 * states and allocators of their own). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <lauxlib.h>
#include "lr_base.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define GRAIN 16
#define NCLASS (LR_ALLOC_SMALL_MAX / GRAIN)
#define CHUNK (64 * 1024)

/* Huge chunks. 100,000 tasks are ~120 MB of fresh memory, ~30,000 page faults of 4 KiB
 * at 1-2 us each in the kernel (a third of spawning them: issue 20's profile). Once a
 * heap has HUGE_AFTER bytes of chunks, it takes HUGE_CHUNK bytes at a time, aligned
 * to and advised as transparent huge pages (THP "madvise" mode, Debian's default):
 * one fault then maps 2 MiB, and the kernel zeroes it in one go. A small script never
 * gets there and keeps its RSS; a big one keeps at most one huge page it has not
 * filled yet. Where THP is off, the advice does nothing and the pages fault as
 * before. */
#define HUGE_PAGE ((size_t)2 << 20)
#define HUGE_CHUNK HUGE_PAGE
#define HUGE_AFTER ((size_t)4 << 20)

typedef struct chunk {
  struct chunk *next;
  size_t size;         /* CHUNK (malloc'd) or HUGE_CHUNK (mmap'd) */
  max_align_t align[]; /* the blocks, from here */
} chunk;

typedef struct heap {
  void *free[NCLASS + 1]; /* by class (size / GRAIN, rounded up); 0 unused */
  char *bump, *end;       /* the unused rest of the newest chunk */
  chunk *chunks;
  size_t chunk_bytes;     /* in all chunks */
  int closing;            /* in lr_alloc_close: small frees are left to the chunks' */
  int warn;               /* warnings: 0 off, 1 on, 2 inside a multi-part message */
} heap;

/* An mmap'd HUGE_CHUNK aligned to HUGE_PAGE, advised as huge pages; NULL if the
 * mapping fails (the caller falls back to a malloc'd chunk). */
static chunk *map_huge(void) {
  size_t len = HUGE_CHUNK + HUGE_PAGE;
  char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  char *a;
  if (p == MAP_FAILED) return NULL;
  a = (char *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
  if (a > p) munmap(p, (size_t)(a - p));
  if (a + HUGE_CHUNK < p + len) munmap(a + HUGE_CHUNK, (size_t)(p + len - (a + HUGE_CHUNK)));
#ifdef MADV_HUGEPAGE
  madvise(a, HUGE_CHUNK, MADV_HUGEPAGE);
#endif
  ((chunk *)a)->size = HUGE_CHUNK;
  return (chunk *)a;
}

static chunk *new_chunk(heap *h) {
  chunk *c = h->chunk_bytes >= HUGE_AFTER ? map_huge() : NULL;
  if (c == NULL) {
    if ((c = malloc(CHUNK)) == NULL) return NULL;
    c->size = CHUNK;
  }
  h->chunk_bytes += c->size;
  return c;
}

static void free_chunk(chunk *c) {
  UNPOISON(c, c->size);
  if (c->size == HUGE_CHUNK) munmap(c, HUGE_CHUNK);
  else free(c);
}

static void *small_alloc(heap *h, unsigned cls) {
  void *p = h->free[cls];
  size_t size = (size_t)cls * GRAIN;
  if (p != NULL) {
    UNPOISON(p, size);
    h->free[cls] = *(void **)p;
    return p;
  }
  if ((size_t)(h->end - h->bump) < size) {
    chunk *c = new_chunk(h);
    if (c == NULL) return NULL;
    c->next = h->chunks;
    h->chunks = c;
    h->bump = (char *)c->align;
    h->end = (char *)c + c->size;
    POISON(h->bump, (size_t)(h->end - h->bump));
  }
  p = h->bump;
  h->bump += size;
  UNPOISON(p, size);
  return p;
}

static void small_free(heap *h, void *p, unsigned cls) {
#if !defined(__SANITIZE_ADDRESS__)
  /* lua_close frees every object, and the chunks go right after: pushing each block
   * on its free list would write to every one of them (closing the state after
   * 100,000 finished tasks: 16.4 -> 14.0 ms, medians of 8). ASan builds still poison
   * them. */
  if (h->closing) return;
#endif
  *(void **)p = h->free[cls];
  h->free[cls] = p;
  POISON(p, (size_t)cls * GRAIN);
}

static inline unsigned class_of(size_t n) {
  return (unsigned)((n + GRAIN - 1) / GRAIN);
}

static void *heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  heap *h = ud;
  unsigned oc, nc;
  void *np;
  if (ptr == NULL) osize = 0; /* osize is then the type of the new object */
  oc = osize <= LR_ALLOC_SMALL_MAX ? class_of(osize) : 0;
  if (nsize == 0) {
    if (ptr != NULL) {
      if (oc) small_free(h, ptr, oc);
      else free(ptr);
    }
    return NULL;
  }
  nc = nsize <= LR_ALLOC_SMALL_MAX ? class_of(nsize) : 0;
  if (ptr != NULL && oc == 0 && nc == 0) return realloc(ptr, nsize);
  if (ptr != NULL && oc == nc) return ptr; /* same class: the block fits already */
  np = nc ? small_alloc(h, nc) : malloc(nsize);
  if (np == NULL || ptr == NULL) return np; /* on failure Lua keeps the old block */
  memcpy(np, ptr, osize < nsize ? osize : nsize);
  if (oc) small_free(h, ptr, oc);
  else free(ptr);
  return np;
}

/* luaL_newstate's behaviour for the rest: a panic message, and warnings that start
 * off and are switched by the "@on" and "@off" control messages. */
static int panic(lua_State *L) {
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                   : "error object is not a string";
  fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n", msg);
  fflush(stderr);
  return 0;
}

static void warnf(void *ud, const char *msg, int tocont) {
  heap *h = ud;
  if (h->warn != 2 && !tocont && msg[0] == '@') { /* a control message */
    if (strcmp(msg + 1, "on") == 0) h->warn = 1;
    else if (strcmp(msg + 1, "off") == 0) h->warn = 0;
    return;
  }
  if (h->warn == 0) return;
  if (h->warn == 1) fputs("Lua warning: ", stderr);
  fputs(msg, stderr);
  if (tocont) {
    h->warn = 2;
  } else {
    fputs("\n", stderr);
    h->warn = 1;
  }
  fflush(stderr);
}

/* The heap of the executable's state, also kept here: os.exit(code, true) closes the
 * state and exits without coming back to lr_alloc_close, and the heap then is only
 * still reachable, not leaked (LeakSanitizer). */
static heap *last_heap;

lua_State *lr_alloc_newstate(void) {
  const char *env = getenv("LUARUN_ALLOC");
  heap *h;
  lua_State *L;
  if (env != NULL && strcmp(env, "system") == 0) return luaL_newstate();
  h = calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  L = lua_newstate(heap_alloc, h);
  if (L == NULL) {
    free(h);
    return NULL;
  }
  lua_atpanic(L, panic);
  lua_setwarnf(L, warnf, h);
  last_heap = h;
  return L;
}

void lr_alloc_close(lua_State *L) {
  void *ud;
  heap *h;
  chunk *c;
  if (lua_getallocf(L, &ud) != heap_alloc) {
    lua_close(L);
    return;
  }
  h = ud;
  h->closing = 1;
  lua_close(L);
  while ((c = h->chunks) != NULL) {
    h->chunks = c->next;
    free_chunk(c);
  }
  if (last_heap == h) last_heap = NULL;
  free(h);
}

int lr_alloc_takes_block(lua_State *L, size_t size) {
  return lua_getallocf(L, NULL) == heap_alloc && size > LR_ALLOC_SMALL_MAX;
}

int lr_alloc_is_ours(lua_State *L) {
  return lua_getallocf(L, NULL) == heap_alloc;
}

/* Blocks made by one thread and freed by another (read_file's buffers, filled by a
 * runner and freed by the collector; strings copied across the pool) go back to the
 * maker's malloc arena. glibc returns free memory at the top of an arena to the
 * kernel once it exceeds its trim threshold, which it keeps at twice its mmap
 * threshold: about 256 KB at first, 2 MB once a 1 MB block has been freed. So each
 * collection handed the memory back and the next burst page-faulted it in again:
 * 1 MB strings to and from the pool took ~70 faults a call (bench/pool.sh (c): 285 ->
 * 215 us a call without them), and reading 2,000 files of 4 KiB at once spent a fifth
 * of its time in page faults and the TLB shootdowns of the trims (6-9 ms -> 5.2-5.8
 * ms a pass once primed).
 *
 * glibc raises both thresholds by itself whenever the program frees an mmap'd block
 * larger than the current mmap threshold (up to 32 MB). Freeing one 4 MB block here
 * moves them where glibc would move them after the first 4 MB string was collected:
 * the mmap threshold to 4 MB and the trim threshold to 8 MB. Unlike mallopt, this
 * keeps glibc's adaptive thresholds working (larger blocks still raise them), never
 * lowers them, and does nothing if the user fixed them (mallopt, GLIBC_TUNABLES) or
 * under another allocator (ASan's malloc does not adapt). The cost: a process may
 * keep up to 8 MB of freed memory at the top of each malloc arena instead of the
 * ~2 MB it keeps once it has used 1 MB blocks; nothing more is allocated. */
#define MALLOC_PRIME_BYTES (4u << 20)

static void prime_once(void) {
#ifdef __GLIBC__
  void *b = malloc(MALLOC_PRIME_BYTES);
  /* The pages are never touched; the barrier keeps the compiler from eliding the
   * malloc/free pair. */
  __asm__ volatile("" : : "r"(b) : "memory");
  free(b);
#endif
}

void lr_alloc_prime_malloc(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, prime_once);
}

/* A thread that fills blocks for the loop thread (the file runners) has a malloc arena
 * of its own, which glibc grows a few pages at a time, one mprotect each: 2,000 reads
 * of 4 KiB made ~680 mprotect calls, each taking the address-space lock that every
 * other thread's page faults need. Growing it once, by a block under the mmap
 * threshold whose freed space stays (under the trim threshold), makes that one call. */
#define ARENA_PRIME_BYTES (3u << 20)

void lr_alloc_prime_thread(void) {
#ifdef __GLIBC__
  /* Initial-exec: see json.c's `parsing` (dlopen'ed, the default model allocates at
   * the first access, and exits the process if that fails). */
  static __thread int primed __attribute__((tls_model("initial-exec")));
  void *b;
  if (primed) return;
  primed = 1;
  lr_alloc_prime_malloc(); /* the thresholds first */
  b = malloc(ARENA_PRIME_BYTES);
  __asm__ volatile("" : : "r"(b) : "memory");
  free(b);
#endif
}
