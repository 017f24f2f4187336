/* luarun.h: the runtime's private header, shared by every file in core/ and bindings/.
 *
 * The runtime is one libuv loop, one main Lua state, and tasks: each task is a Lua
 * thread (coroutine) anchored in the registry while it is alive. A task that waits
 * "parks": it yields a sentinel value up to the scheduler, which resumes it once the
 * thing it waits for calls lr_task_wake. Nothing is resumed from inside a libuv or
 * libcurl callback: callbacks only move tasks to the ready queue, and the driver loop
 * (loop.c) resumes them between turns of the libuv loop.
 */
#ifndef LUARUN_H
#define LUARUN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <lua.h>
#include <lauxlib.h>
#include <uv.h>

#define LUARUN_VERSION "0.1.0"

/* The struct that embeds field, from a pointer to that field (a cancel hook finds
 * its request from the wait queue the task is parked in). */
#define container_of(p, type, field) ((type *)((char *)(p) - offsetof(type, field)))

typedef struct lr_runtime lr_runtime;
typedef struct lr_task lr_task;
typedef struct lr_owner lr_owner;

/* A FIFO of tasks: a circular list through their next/prev fields, head the oldest. */
typedef struct lr_waitq {
  lr_task *head;
} lr_waitq;

enum lr_state { LR_READY = 1, LR_RUNNING, LR_PARKED, LR_DONE };
enum lr_result { LR_RES_NONE = 0, LR_RES_OK, LR_RES_FAILED, LR_RES_CANCELLED };
/* Why a parked task was woken: its continuation reads this. */
enum lr_wake { LR_WAKE_NONE = 0, LR_WAKE_DONE, LR_WAKE_TIMEOUT, LR_WAKE_CANCELLED,
               LR_WAKE_CLOSED /* the queue it waited on was closed */ };

/* Task flags. */
#define LR_F_CANCEL 0x01   /* cancel requested: every wait from now on raises */
#define LR_F_SHIELD 0x02   /* current park ignores cancellation (cleanup waits) */
#define LR_F_WAITED 0x04   /* someone observes the outcome: no unhandled report */
#define LR_F_STARTED 0x08  /* the body has been entered */
#define LR_F_MAIN 0x10     /* the main task of lr.run / the CLI */
#define LR_F_NAMED 0x20    /* has a name in the runtime's names table (tasks.c) */

/* Called when a parked task is cancelled. It must detach the task from whatever
 * would wake it and wake it (or arrange for it to be woken later). */
typedef void (*lr_cancel_fn)(lr_task *t);

/* Pushes onto L a short text saying what parked task t waits on ("Queue:get, queue
 * empty"). Runs on the loop's thread, for reports and lr.tasks(). */
typedef void (*lr_describe_fn)(lua_State *L, lr_task *t);

/* Something that owns child tasks (gather, timeout) and hears when one ends. */
struct lr_owner {
  void (*child_done)(lr_owner *o, lr_task *child);
};

/* A task costs this struct in a plain userdata (no user values), a slot in the
 * live-task table and 8 bytes in the timer heap while it sleeps: every field counts,
 * since 100,000 suspended tasks must stay within 15 % of 100,000 bare coroutines.
 *
 * The thread's stack holds the task userdata at index 1, then the function and its
 * arguments. While the task is alive, its slot in the live-task table anchors the
 * thread (and so the userdata). Once done, the slot goes and the thread is freed (co
 * becomes NULL); an outcome to keep is kept with the userdata in a weak table. The
 * userdata has no __gc (sched.c says why). */
struct lr_task {
  lua_State *co;         /* the task's thread */
  lr_runtime *rt;
  lr_task *next, *prev;  /* links in the ready queue or in one wait queue */
  lr_waitq *inq;         /* the queue it is linked in, or NULL */
  lr_waitq waiters;      /* tasks parked in task:wait() on this one */
  lr_owner *owner;       /* gather/timeout that spawned it, or NULL */
  uint64_t deadline;     /* hrtime (ns) when in the timer heap */
  uint32_t heap_idx;     /* 1-based position in the timer heap, 0 when absent */
  uint32_t id;
  uint32_t owner_idx;    /* index of this child in its owner */
  int ref;               /* slot in the live-task table while not done, else 0 */
  uint16_t where;        /* interned "file:line:" it was spawned at (0: unknown) */
  uint8_t state, result, wake, flags;
  uint8_t hook;          /* cancel hook of the current park (sched.c's table) */
  uint8_t packed;        /* once done: how the results are kept (LR_PACK_*) */
};
enum { LR_PACK_NONE = 0, LR_PACK_ONE, LR_PACK_TABLE };

/* Stack layout of a task's thread (see above). */
#define LR_CO_SELF 1

typedef void (*lr_closer)(lr_runtime *rt);
#define LR_MAX_CLOSERS 8
#define LR_DEADLOCK 100 /* status of lr_runtime_run_main */

struct lr_runtime {
  uv_loop_t loop;
  lua_State *L;          /* main state: loop callbacks use this, never a task's thread */
  lua_State *from;       /* thread that called lr.run (for lua_resume's C-stack count) */
  lr_waitq ready;
  lr_waitq *batch;       /* tasks of the scheduler turn still to run (see lr_sched_busy) */
  lr_task *current;      /* the task being resumed, or NULL */
  int current_idx;       /* its userdata's index on L's stack while it runs */
  lr_task *main;         /* the main task of the current run */
  uint32_t next_id;
  size_t live;           /* tasks not yet done */
  /* Live tasks are anchored in a Lua table (tasks_ref) at slots handed out here. */
  int tasks_ref;
  uint32_t slot_max, free_n, free_cap;
  uint32_t *free_slots;
  int where_ref;         /* spawn locations: string <-> id */
  uint16_t where_hint;   /* spawn location for children started from C (gather) */
  uint16_t where_last_id; /* cache of the last spawn site (sched.c) */
  int where_last_line;
  const char *where_last_src;
  const void *task_mt;   /* the luarun.Task metatable, for lr_task_test_rt */
  int task_mt_ref;       /* registry[task_mt_ref]: the same table (0 until registered) */
  /* Timers: a binary min-heap of sleeping tasks driven by one uv_timer_t. */
  lr_task **heap;
  uint32_t heap_n, heap_cap;
  /* Sleeps whose deadlines come in order (the common case: the same sleep in many
   * tasks) skip the heap: a FIFO through the tasks' queue links (timer.c). */
  lr_waitq sleepq;
  uint32_t sleep_n;
  uv_timer_t timer;
  uint64_t last_deadline;
  uint64_t timer_due;    /* deadline the uv timer is armed for, 0 if stopped */
  int timer_busy;        /* inside the timer callback: re-arm once at its end */
  int running;           /* inside lr_runtime_drive */
  int failures;          /* unhandled errors reported during this run */
  int deadlocks;         /* deadlock reports during this run */
  volatile sig_atomic_t interrupted; /* SIGINT or SIGTERM seen: its number */
  int closing;
  int origin_ref;        /* registry: {err, report} of the last error relayed by wait */
  int names_ref;         /* registry: task names, keyed by task userdata, weak (tasks.c) */
  lua_State *running_co; /* the thread executing Lua right now (for SIGINT) */
  lr_closer closers[LR_MAX_CLOSERS]; /* subsystems to shut down, last first */
  int ncloser;
  /* observe: --trace and --debug (trace.c, watchdog.c); NULL/0 when off */
  struct lr_trace *trace;
  struct lr_watchdog *watchdog;
  uint8_t observe;       /* trace or watchdog on: the scheduler calls lr_observe_* */
};

/* The yield value that marks "parked by luarun" as opposed to a user coroutine.yield. */
extern char lr_park_sentinel;
#define LR_SENTINEL ((void *)&lr_park_sentinel)

/* ---- loop.c: runtime context and driver ---- */
/* Returns the runtime of this Lua state, creating it on first use. Never NULL. */
lr_runtime *lr_runtime_get(lua_State *L);
/* Set when a runtime closed while requests were still blocked in libuv's thread pool
 * (a read of a FIFO nobody writes to): the runtime is left behind for them, and the
 * executable then ends with _exit, since libuv joins its threads at exit(). */
extern int lr_runtime_abandoned;
/* Registers the metatable `name` once per state: the metamethods in meta and a table
 * of methods as its __index (either list may be NULL). Leaves the stack as it was. */
void lr_register_class(lua_State *L, const char *name, const luaL_Reg *methods,
                       const luaL_Reg *meta);
/* Runs the loop until every task is done. Returns 0, or -1 on deadlock. */
int lr_runtime_drive(lr_runtime *rt);
int lr_runtime_run_main(lua_State *L, lr_runtime *rt, int nargs, int *nres);
void lr_runtime_on_close(lr_runtime *rt, lr_closer fn);
void lr_runtime_each_task(lr_runtime *rt, void (*fn)(lr_task *t, void *arg), void *arg);
void lr_runtime_cancel_all(lr_runtime *rt);

/* ---- sched.c: tasks ---- */
/* Replaces the function and its nargs arguments at the top of L with a new task
 * userdata, queued to run. level: stack level whose position is recorded as the
 * spawn location, or 0 to use rt->where_hint. */
lr_task *lr_task_spawn(lua_State *L, lr_runtime *rt, int nargs, int level);
lr_task *lr_task_check(lua_State *L, int idx);
lr_task *lr_task_test(lua_State *L, int idx);
/* lr_task_test for hot loops (gather's children): compares the metatable's address
 * with rt's, without looking the metatable up in the registry. */
lr_task *lr_task_test_rt(lua_State *L, lr_runtime *rt, int idx);
/* Pushes t's userdata, live or done; nil for a done task that kept nothing (no
 * outcome, no name) and that nobody could be holding anyway. */
void lr_task_push_ud(lua_State *L, lr_task *t);
/* Lets lr_task_push_ud find t's userdata (at idx) once t is done, as long as the
 * userdata lives (a weak table: nothing to release). */
void lr_task_remember_ud(lua_State *L, lr_task *t, int idx);
/* Interns the position of stack level `level` of L; returns its id for t->where. */
uint16_t lr_task_where(lua_State *L, lr_runtime *rt, int level);
void lr_sched_register(lua_State *L);
/* The task running on L, or raises naming fname if L cannot park here. */
lr_task *lr_task_current(lua_State *L, const char *fname);
/* Parks the current task: yields to the scheduler with continuation k. */
int lr_task_park(lua_State *L, lr_task *t, lr_cancel_fn on_cancel, lua_KContext ctx,
                 lua_KFunction k);
/* As lr_task_park, and says what the task waits on for reports: describe is kept
 * beside the cancel hook (one pair per kind of wait). */
int lr_task_park_on(lua_State *L, lr_task *t, lr_cancel_fn on_cancel, lr_describe_fn describe,
                    lua_KContext ctx, lua_KFunction k);
/* The describe function of the hook t is parked with, or NULL. */
lr_describe_fn lr_task_describer(lr_task *t);
/* The task whose code runs on L (also inside its own coroutines, and in its <close>
 * handlers while it unwinds), or NULL. Never raises. */
lr_task *lr_task_self(lua_State *L);
/* Moves a parked task to the ready queue with the given wake reason. */
void lr_task_wake(lr_task *t, int why);
/* Requests cancellation; wakes the task if it is parked. */
void lr_task_cancel(lr_task *t);
/* Raises the cancellation error on L if t has a cancel pending (level-triggered). */
void lr_task_checkpoint(lua_State *L, lr_task *t);
/* The start of every call that may wait: lr_task_current, then lr_task_checkpoint. */
lr_task *lr_task_enter(lua_State *L, const char *fname);
/* Resumes every task that is ready now, once. */
void lr_sched_run_ready(lr_runtime *rt);
/* 1 if some other task will run before the loop polls again: one is ready, or the
 * current scheduler turn has tasks left (those are off rt->ready while it runs).
 * A task that would poll for a quick result must not, then. */
static inline int lr_sched_busy(const lr_runtime *rt) {
  return rt->ready.head != NULL || (rt->batch != NULL && rt->batch->head != NULL);
}
/* Pushes the task's outcome onto L: its results (returns count) or raises its error. */
int lr_task_push_results(lua_State *L, lr_task *t, int first_only);
/* Accessors of a done task's outcome. push_values pushes at most max results (all
 * if max < 0) and returns how many; push_report pushes the report or false. */
int lr_task_push_values(lua_State *L, lr_task *t, int max);
void lr_task_push_error(lua_State *L, lr_task *t);
void lr_task_push_report(lua_State *L, lr_task *t);
/* "ready", "running", "waiting", "done", "failed" or "cancelled". */
const char *lr_task_state_name(lr_task *t);
/* Raises the error under the report at the top of L's stack (popping the report),
 * first remembering the pair, so that if it reaches the top uncaught the report of
 * the task that failed is printed, not a traceback of where it was relayed. */
int lr_raise_relayed(lua_State *L, lr_runtime *rt);
/* Pushes the task's userdata. */
void lr_task_push_self(lua_State *L, lr_task *t);

void lr_waitq_push(lr_waitq *q, lr_task *t);
void lr_waitq_remove(lr_waitq *q, lr_task *t);
lr_task *lr_waitq_pop(lr_waitq *q);

/* ---- group.c: tasks owning tasks (the Lua functions lr.gather/map/timeout) ---- */
int lr_gather(lua_State *L);
int lr_map(lua_State *L);
int lr_timeout(lua_State *L);

/* True if the value at idx is a function or has __call. */
int lr_is_callable(lua_State *L, int idx);
/* Checks item i of a group (at idx): a function, or a task no group owns yet. Raises
 * naming fname (arg: as argument i, else as item i of a list). */
void lr_check_child(lua_State *L, lr_runtime *rt, int idx, const char *fname, lua_Integer i,
                    int arg);
/* Cancels every live task that o owns. */
void lr_owner_cancel_children(lr_runtime *rt, lr_owner *o);

/* ---- scope.c: structured groups (the Lua functions lr.scope/race/as_completed) ---- */
int lr_scope(lua_State *L);
int lr_race(lua_State *L);
int lr_as_completed(lua_State *L);
void lr_scope_register(lua_State *L);

/* ---- sync.c and queue.c: Semaphore, Lock, Event, RateLimit, Queue ---- */
/* Sets the constructors on the luarun module table at the top of L's stack. */
void lr_sync_install(lua_State *L);
void lr_queue_install(lua_State *L);

/* ---- tasks.c: names, lr.tasks(), and the task dump (SIGQUIT) ---- */
/* Pushes the name given with task:set_name, or nil. */
void lr_task_push_name(lua_State *L, lr_task *t);
/* Forgets t's name (its userdata is being collected). */
void lr_task_forget_name(lua_State *L, lr_task *t);
/* Pushes "file:line" where t was spawned, or nil. */
void lr_task_push_spawned_at(lua_State *L, lr_task *t);
/* Pushes what parked task t waits on ("sleep, 0.25 s left", "Queue:get, queue empty"). */
void lr_task_push_waiting(lua_State *L, lr_task *t);
/* Writes every live task (name, state, wait, spawn site, traceback) to stderr. */
void lr_tasks_dump(lr_runtime *rt);
int lr_tasks(lua_State *L);
int lr_task_name(lua_State *L);
int lr_task_set_name(lua_State *L);

/* ---- timer.c: sleeping tasks ---- */
void lr_timer_init(lr_runtime *rt);
void lr_timer_close(lr_runtime *rt);
/* Adds t to the heap to be woken with LR_WAKE_TIMEOUT at deadline (hrtime ns). */
int lr_timer_add(lr_runtime *rt, lr_task *t, uint64_t deadline);
void lr_timer_remove(lr_runtime *rt, lr_task *t);
/* The sleeper due first (heap top or FIFO head), or NULL. */
lr_task *lr_timer_earliest(lr_runtime *rt);
/* True while t sleeps in the timer (heap or in-order FIFO). */
#define lr_timer_has(rt, t) ((t)->heap_idx != 0 || (t)->inq == &(rt)->sleepq)
/* Seconds (non-negative, may be inf) to an absolute hrtime deadline; UINT64_MAX = never. */
uint64_t lr_timer_deadline(double seconds);

/* ---- report.c: error reports ---- */
/* Pushes onto L "message\ntraceback\n(in task ...)" for the error at the top of co
 * (left in place), co being task t's thread or a thread that ran for it. */
void lr_report_push_traceback(lua_State *L, lua_State *co, lr_task *t);
/* Prints an unhandled error of task t (the error value is on co's stack top). */
void lr_report_task_error(lr_runtime *rt, lr_task *t);
/* Pushes a readable string for any error value at idx. */
const char *lr_report_tostring(lua_State *L, int idx);
/* Pushes "task N" plus where it was spawned. */
void lr_report_push_taskname(lua_State *L, lr_task *t);

/* ---- signal.c: Ctrl-C (the executable only) ---- */
void lr_signal_install(lr_runtime *rt);

/* ---- error.c: error values ---- */
/* Pushes an error table {kind=, message=} with the luarun.Error metatable. */
void lr_error_push(lua_State *L, const char *kind, const char *message);
/* Pushes nil, err and returns 2: the shape of every expected I/O failure. */
int lr_error_fail(lua_State *L, const char *kind, const char *message);
/* True if the value at idx is a luarun error of the given kind. */
int lr_error_is(lua_State *L, int idx, const char *kind);
void lr_error_raise_cancelled(lua_State *L);

/* ---- fs.c: file requests on libuv's thread pool (luarun.fs) ---- */
/* An open file, shared by the luarun.File userdata and the requests that use its fd.
 * Freed when refs drops to 0 (the userdata holds one reference, each request one). */
typedef struct lr_file {
  lr_runtime *rt;
  uv_file fd;            /* -1 once its close has been issued */
  int refs;
  int busy;              /* requests using fd right now (not counting its close) */
  uint8_t closed;        /* close(), __close or __gc seen: no new requests */
  char *path;            /* owned: for error messages */
} lr_file;

enum lr_fs_op {
  LR_FS_OPEN = 1, LR_FS_CLOSE, LR_FS_READ, LR_FS_WRITE, LR_FS_FSYNC, LR_FS_FSTAT,
  LR_FS_STAT, LR_FS_LSTAT, LR_FS_SCANDIR, LR_FS_MKDIR, LR_FS_MKDIR_P, LR_FS_UNLINK,
  LR_FS_RMDIR, LR_FS_RENAME, LR_FS_COPYFILE, LR_FS_MKDTEMP, LR_FS_READ_FILE,
  LR_FS_WRITE_FILE, LR_FS_EXISTS
};
#define LR_FS_ATOMIC 0x1   /* write_file: temporary file, fsync, rename */
#define LR_FS_APPEND 0x2   /* write_file: append instead of truncating */

/* write_file data read in place by the job: offered when queued, taken once the file
 * is open, back to none when done; the cancel hook revokes an offer not yet taken. */
enum { LR_LEND_NONE, LR_LEND_OFFERED, LR_LEND_TAKEN, LR_LEND_REVOKED };

typedef struct lr_fs lr_fs;
/* Pushes the results of a request that succeeded; returns their count. */
typedef int (*lr_fs_result)(lua_State *L, lr_fs *r);

/* One file request: a uv_fs_t and everything a call keeps around it. Owned by the
 * parked task's continuation, or, once the task is cancelled (orphaned, task NULL),
 * by the libuv callback, which undoes what it must (closes a late fd, removes a
 * temporary file) and frees it. */
struct lr_fs {
  uv_fs_t req;
  lr_runtime *rt;
  lr_waitq q;            /* the task parks here: the cancel hook finds us from it */
  lr_task *task;         /* the waiting task; NULL once orphaned */
  lr_file *file;         /* the file used (one reference held), or NULL */
  lr_fs_result push;
  int op, step;
  int status;            /* 0, or the first libuv error */
  int flags, mode;       /* open flags and mode (mkdir: mode) */
  int opts;              /* write_file: LR_FS_ATOMIC | LR_FS_APPEND */
  uv_file fd;            /* fd opened by read_file/write_file, or -1 */
  int64_t offset;        /* read/write offset, -1 for the file position */
  char *path;            /* owned: the path the call is about */
  char *path2;           /* owned: rename/copy target, temporary file, mkdtemp result */
  char *buf;             /* owned: data read, or the chunk of data being written */
  size_t len, cap;       /* exists: len is 1 if the path exists, else 0 */
  const char *data;      /* write data: the Lua string on the parked task's stack; read
                            only while the task waits, copied into buf chunk by chunk */
  size_t dlen, dpos;
  size_t pos;            /* mkdir with parents: end of the prefix being created */
  uv_stat_t st;
  /* read_file and write_file: one thread-pool job each (fs.c) instead of uv_fs_t steps. */
  struct lr_fsq *jobq;   /* its runtime's job queue (fs.c) */
  int cancelled;         /* set by the cancel hook, read by the job (__atomic builtins) */
  int borrowed;          /* write_file: LR_LEND_*, under fs.c's lend_mu once queued */
  lr_fs *next_job;       /* in the queue of jobs waiting for a slot (fs.c) */
  size_t hdr;            /* read_file: room wanted before the data for a Lua string
                            header, so that the block can become the string (0: no) */
  size_t boff;           /* room actually left before buf: free(buf - boff) */
  uint32_t dir;          /* write_file: hash of the target's directory */
  int dir_free;          /* write_file: done with the directory's lock (fs.c) */
  int unnamed;           /* write_file: create it unnamed, link it once written (fs.c) */
};
/* The block under r->buf (its data starts boff bytes in). */
#define LR_FS_BLOCK(r) ((r)->buf ? (r)->buf - (r)->boff : NULL)

/* Allocates a request for task t (NULL: nobody waits). Copies the paths. NULL on
 * out-of-memory. */
lr_fs *lr_fs_new(lr_runtime *rt, lr_task *t, int op, const char *path, const char *path2);
/* Starts r and parks t until it ends; the continuation pushes push(L, r) or nil, err
 * and frees r. If libuv refuses at once, frees r and returns nil, err unparked. */
int lr_fs_start(lua_State *L, lr_fs *r, lr_fs_result push);
/* Frees a request that was never started. */
void lr_fs_free(lr_fs *r);
/* Pushes nil, err for a libuv error code about path; returns 2. */
int lr_fs_fail(lua_State *L, int status, const char *path);
/* Maps a libuv error code to an API.md kind ("not_found", ..., "io"). */
const char *lr_fs_kind(int status);
/* Drops one reference to f; frees it at 0. */
void lr_file_unref(lr_file *f);
/* Marks f closed; closes its fd once no request uses it, without waiting (the File's
 * __gc and __close). */
void lr_file_close_later(lr_file *f);

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
#define LR_COPY_REF_MIN 4096
void lr_copy_encode_refs(lua_State *L, int first, int n, lr_copybuf *b, const char *fname,
                         const char *root, int anchor);

/* ---- pool.c: worker threads with their own Lua states (lr.run_in_pool) ---- */
enum { LR_POOL_CODE = 1, LR_POOL_NAME = 2 };
/* Queues a job for task t and parks it: code is bytecode (LR_POOL_CODE) or a
 * "module.function" NUL-terminated name (LR_POOL_NAME); args is lr_copy_encode_refs'd.
 * Takes over both buffers' memory (they are left empty). Starts the pool on first use
 * (raises if it cannot). The continuation pushes the results or raises the worker's
 * error with its traceback; cancelling the task drops the result. */
int lr_pool_call(lua_State *L, lr_task *t, int kind, lr_copybuf *code, lr_copybuf *args);
/* The number of workers: actual once started, else what it will be. */
unsigned lr_pool_size(lr_runtime *rt);
/* Before the pool starts: size (0: default) and per-worker memory cap in bytes (0:
 * none). Returns 0, or -1 if the pool already runs with other settings. */
int lr_pool_configure(lr_runtime *rt, unsigned size, size_t mem_limit);

/* ---- observe: trace.c (--trace, LUARUN_TRACE) and watchdog.c (--debug) ----
 * Every hook is called behind one `if (rt->trace)` / `if (rt->observe)` test, so a
 * run without --trace or --debug pays one predictable branch per site. */
struct lr_http_req;
enum { LR_TRACE_WAIT = 0, LR_TRACE_SLEEP, LR_TRACE_POOL, LR_TRACE_FS, LR_TRACE_HTTP };
/* Reads LUARUN_TRACE, LUARUN_DEBUG and LUARUN_DEBUG_MS (lr_runtime_get). */
void lr_observe_init(lr_runtime *rt);
/* Around each resume of a task (sched.c run_task), when rt->observe. */
void lr_observe_resume(lr_runtime *rt, lr_task *t);
void lr_observe_yield(lr_runtime *rt, lr_task *t);
/* Starts tracing into path (.html: a waterfall page, else Chrome trace JSON). Returns
 * 0, or -1 if out of memory. */
int lr_trace_open(lr_runtime *rt, const char *path);
void lr_trace_spawn(lr_runtime *rt, lr_task *t);
void lr_trace_done(lr_runtime *rt, lr_task *t);
/* Opens a span of kind LR_TRACE_* for what t is about to wait on (strings copied,
 * may be NULL; x: sleep seconds). The span ends when t is next resumed, or at
 * lr_trace_end (a wait that ended without parking). */
void lr_trace_begin(lr_task *t, int kind, const char *s1, const char *s2, double x);
void lr_trace_end(lr_task *t);
/* A file request is about to park its task (fs.c). */
void lr_trace_fs(lr_fs *r);
/* An HTTP transfer of r->task ended (or was cancelled): url, status, times. */
void lr_trace_http(struct lr_http_req *r, int cancelled);
/* Writes the trace file with everything recorded so far (end of each run). */
void lr_trace_write(lr_runtime *rt);
/* Starts the blocked-loop watchdog: reports runs longer than ms without a yield.
 * Returns 0, or -1 if the thread cannot start. */
int lr_watchdog_start(lr_runtime *rt, unsigned ms);
void lr_watchdog_resume(lr_runtime *rt, lr_task *t);
void lr_watchdog_yield(lr_runtime *rt, lr_task *t);

/* ---- embedded Lua parts (generated at build time from lua/) ---- */
/* Sets package.preload entries for every embedded Lua module. */
void lr_embedded_preload(lua_State *L);

#endif
