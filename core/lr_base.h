/* lr_base.h: the bottom layer of core/: what knows no tasks. Error values (error.c),
 * the executable's Lua allocator (alloc.c), and copying Lua values between states
 * (copy.c). Files of this layer include this header only.
 */
#ifndef LR_BASE_H
#define LR_BASE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <lua.h>
#include <lauxlib.h>
#include <uv.h>


#define LUARUN_VERSION "0.1.0"

/* The struct that embeds field, from a pointer to that field (a cancel hook finds
 * its request from the wait queue the task is parked in). */
#define container_of(p, type, field) ((type *)((char *)(p) - offsetof(type, field)))

/* ---- error.c: error values ---- */
/* Pushes an error table {kind=, message=} with the luarun.Error metatable. */
void lr_error_push(lua_State *L, const char *kind, const char *message);
/* Pushes nil, err and returns 2: the shape of every expected I/O failure. */
int lr_error_fail(lua_State *L, const char *kind, const char *message);
/* True if the value at idx is a luarun error of the given kind. */
int lr_error_is(lua_State *L, int idx, const char *kind);
void lr_error_raise_cancelled(lua_State *L);

/* ---- alloc.c: the executable's Lua allocator (small blocks from free lists) ---- */
#define LR_ALLOC_SMALL_MAX 4096
/* A new state on luarun's allocator (luaL_newstate's with LUARUN_ALLOC=system), with
 * luaL_newstate's panic and warning behaviour. NULL if out of memory. */
lua_State *lr_alloc_newstate(void);
/* Closes a state from lr_alloc_newstate and frees the allocator's memory. */
void lr_alloc_close(lua_State *L);
/* 1 if L allocates with luarun's allocator. */
int lr_alloc_is_ours(lua_State *L);
/* 1 if L's allocator frees a block of this size with free(): a malloc'd block of it
 * may be handed to Lua (fs.read_file's in-place strings). */
int lr_alloc_takes_block(lua_State *L, size_t size);
/* Raises glibc's mmap and trim thresholds the way freeing a 4 MB block does, once per
 * process: for subsystems whose blocks are freed by another thread (pool, files). */
void lr_alloc_prime_malloc(void);
void lr_alloc_prime_thread(void); /* once per thread that mallocs for the loop */

/* ---- copy.c: Lua values between states, through a flat byte buffer (the pool) ---- */
/* Where a buffer's bytes live. Only LR_BUF_HEAP blocks are freed by lr_copybuf_free;
 * the others never are, and growing one moves it (LR_BUF_BORROWED to the heap). */
enum {
  LR_BUF_HEAP = 0,       /* malloc'd, owned by whoever holds the struct */
  LR_BUF_BORROWED,       /* someone else's memory (a job's inline area, a Lua string) */
  LR_BUF_LUA             /* a plain userdata at stack slot `slot` of the encoding state:
                          * the collector frees it, so a raise loses nothing */
};
typedef struct lr_copybuf {
  char *p;
  size_t n, cap;
  int where;             /* LR_BUF_* */
  int slot;              /* LR_BUF_LUA: absolute stack index of the userdata */
} lr_copybuf;
void lr_copybuf_free(lr_copybuf *b);
/* Pushes a userdata holding an empty buffer that its __gc frees (for raising paths). */
lr_copybuf *lr_copybuf_push(lua_State *L);
/* Makes b an empty LR_BUF_LUA buffer of cap bytes, its userdata pushed on L: no
 * finalizer, no malloc, and nothing to free if encoding raises. */
void lr_copybuf_lua(lua_State *L, lr_copybuf *b, size_t cap);
/* Pushes the values encoded in p[0..len) and returns their count. Raises on memory
 * errors (or a corrupt buffer). */
int lr_copy_decode(lua_State *L, const char *p, size_t len);
/* Appends the n values at first.. of L to b. Raises "<fname>: cannot copy a function
 * at <root>[2].x.y" for what cannot cross (functions, userdata, threads), or on
 * out-of-memory; b keeps what was written (its holder frees it). With anchor != 0,
 * strings of LR_COPY_REF_MIN bytes or more are written by address and anchored in a
 * table stored at stack slot `anchor` (a slot the caller reserved, e.g. with nil;
 * left untouched if no string qualified); the slot's owner keeps it alive until
 * lr_copy_decode of the buffer has returned. */
/* Makes the malloc'd buffer *buf (of *cap bytes) hold at least need bytes, doubling
 * from first when empty. 0, or -1 when out of memory (the buffer is left as it was).
 * The growing byte buffers of the network code (request heads and bodies, pipelined
 * input, TLS and HTTP/2 output, WebSocket frames) all go through it. */
static inline int lr_reserve(char **buf, size_t *cap, size_t need, size_t first) {
  size_t c = *cap ? *cap : first;
  char *nb;
  if (need <= *cap) return 0;
  while (c < need) c *= 2;
  if ((nb = realloc(*buf, c)) == NULL) return -1;
  *buf = nb;
  *cap = c;
  return 0;
}

/* ---- stderr_hook.c: writing to stderr beside a line kept drawn there ----
 * Whoever writes to stderr on the loop's thread (reports, warnings) calls
 * lr_stderr_begin() before and lr_stderr_end() after; a part that keeps a line drawn
 * on stderr (the progress line of gather and map) sets the hook, called with after = 0
 * to clear its line and after = 1 to have it redrawn. NULL (the default): nothing is
 * drawn, nothing happens. Not for other threads: the hook touches the drawer's state. */
typedef void (*lr_stderr_hook)(int after);
void lr_stderr_set_hook(lr_stderr_hook fn);
void lr_stderr_begin(void);
void lr_stderr_end(void);

/* ---- dynlib.c: libraries opened at run time (libpq, libsqlite3) ----
 * Opens soname and fills slots[i] with its function prefix+names[i] (names ends with
 * NULL; slots is a struct of function pointers in the same order, generated with the
 * list). 0, or -1 with the reason in err (package: what to install). */
int lr_dynlib_load(const char *soname, const char *prefix, const char *const *names,
                   void **slots, const char *package, char *err, size_t errlen);

#define LR_COPY_REF_MIN 4096
void lr_copy_encode_refs(lua_State *L, int first, int n, lr_copybuf *b, const char *fname,
                         const char *root, int anchor);

#endif
