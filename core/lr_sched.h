/* lr_sched.h: the scheduler layer: the runtime and its loop (loop.c), tasks, parking
 * and waking (sched.c), sleeping tasks (timer.c), task names and error reports
 * (report.c), and the hooks its observers register (sched_hooks.c).
 *
 * The runtime is one libuv loop, one main Lua state, and tasks: each task is a Lua
 * thread (coroutine) anchored in the registry while it is alive. A task that waits
 * "parks": it yields a sentinel value up to the scheduler, which resumes it once the
 * thing it waits for calls lr_task_wake. Nothing is resumed from inside a libuv or
 * libcurl callback: callbacks only move tasks to the ready queue, and the driver loop
 * (loop.c) resumes them between turns of the libuv loop.
 *
 * This layer knows only lr_base.h: no primitive, subsystem or observer. A subsystem
 * describes its waits (lr_wait_describe) and observers hook in (lr_observer_add).
 */
#ifndef LR_SCHED_H
#define LR_SCHED_H

#include "lr_base.h"

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
  int names_ref;         /* registry: task names, keyed by task userdata, weak (report.c) */
  lua_State *running_co; /* the thread executing Lua right now (for SIGINT) */
  lr_closer closers[LR_MAX_CLOSERS]; /* subsystems to shut down, last first */
  int ncloser;
  /* Observers registered with the scheduler (sched_hooks.c); none: nobs == 0. */
  struct lr_observer *observers;
  uint8_t nobs;
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
/* The task running on L if L may park here (lr_task_current would not raise), else
 * NULL: for a call that waits when it can and does its work in place when not. */
lr_task *lr_task_can_park(lua_State *L);
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

/* ---- report.c: task names, spawn sites, what a task waits on ---- */
/* Pushes the name given with task:set_name, or nil. */
void lr_task_push_name(lua_State *L, lr_task *t);
/* Forgets t's name (its userdata is being collected). */
void lr_task_forget_name(lua_State *L, lr_task *t);
/* Pushes "file:line" where t was spawned, or nil. */
void lr_task_push_spawned_at(lua_State *L, lr_task *t);
/* Pushes what parked task t waits on ("sleep, 0.25 s left", "Queue:get, queue empty"). */
void lr_task_push_waiting(lua_State *L, lr_task *t);
int lr_task_name(lua_State *L);
int lr_task_set_name(lua_State *L);
/* ---- sched_hooks.c: the scheduler's observers ----
 * An observer (trace.c, watchdog.c, any later one) registers hooks; the scheduler and
 * the subsystems call them through LR_HOOK, which costs one predictable branch per
 * event while none is registered, and none of them names an observer. A subsystem
 * is traced by describing its waits: lr_wait_describe when its task parks (or is
 * about to), lr_wait_finish when the outcome is known (a status, a byte count). */
#define LR_MAX_OBSERVERS 4
#define LR_WAIT_MAX_ARGS 8
typedef struct lr_wait_arg {
  const char *key;       /* static */
  const char *s;         /* a string (observers copy what they keep), or NULL: n */
  double n;
  int is_int;            /* 1: n is a count or a status (an integer); 2: a boolean */
} lr_wait_arg;
typedef struct lr_wait_desc {
  const char *kind;      /* static: "sleep", "http", "fs", "pool"... (the category) */
  const char *name;      /* what the wait is called (copied), or NULL: the kind */
  uint64_t start, end;   /* lr_wait_finish: when it began and ended (hrtime), or 0 */
  int nargs;
  lr_wait_arg args[LR_WAIT_MAX_ARGS];
} lr_wait_desc;
typedef struct lr_observer {
  const void *id;        /* the observer's own address, to find its ud again */
  void *ud;
  void (*spawn)(void *ud, lr_task *t);      /* t was created; rt->current spawned it */
  void (*resume)(void *ud, lr_task *t);     /* t is about to run */
  void (*yield)(void *ud, lr_task *t);      /* t stopped: parked, or ended (lua_status) */
  void (*wait)(void *ud, lr_task *t, const lr_wait_desc *d);     /* t parks on d */
  void (*wait_end)(void *ud, lr_task *t, const lr_wait_desc *d); /* its outcome */
  void (*done)(void *ud, lr_task *t);       /* t finished: t->result is set */
  void (*run_end)(void *ud, lr_runtime *rt); /* lr_runtime_run_main returns */
  void (*close)(void *ud, lr_runtime *rt);  /* the runtime closes: free ud */
} lr_observer;
/* Registers a copy of o (hooks may be NULL). Returns 0, or -1 when full or out of
 * memory. */
int lr_observer_add(lr_runtime *rt, const lr_observer *o);
/* The ud of the observer registered with this id, or NULL. */
void *lr_observer_ud(lr_runtime *rt, const void *id);
/* Unregisters it (its close hook is not called). */
void lr_observer_remove(lr_runtime *rt, const void *id);
void lr_hooks_spawn(lr_runtime *rt, lr_task *t);
void lr_hooks_resume(lr_runtime *rt, lr_task *t);
void lr_hooks_yield(lr_runtime *rt, lr_task *t);
void lr_hooks_done(lr_runtime *rt, lr_task *t);
void lr_hooks_run_end(lr_runtime *rt);
void lr_hooks_close(lr_runtime *rt);
void lr_hooks_wait(lr_runtime *rt, lr_task *t, const lr_wait_desc *d);
void lr_hooks_wait_end(lr_runtime *rt, lr_task *t, const lr_wait_desc *d);
#define LR_HOOK(rt, ev, ...) do { if ((rt)->nobs) lr_hooks_##ev((rt), __VA_ARGS__); } while (0)
/* Whether anyone observes: build a wait's description only then. */
#define lr_observed(rt) ((rt)->nobs != 0)
/* Adds an argument to a wait's description (beyond LR_WAIT_MAX_ARGS: dropped). */
static inline void lr_wait_str(lr_wait_desc *d, const char *key, const char *s) {
  if (d->nargs < LR_WAIT_MAX_ARGS && s) {
    d->args[d->nargs].key = key, d->args[d->nargs].s = s, d->args[d->nargs].is_int = 0;
    d->nargs++;
  }
}
static inline void lr_wait_num(lr_wait_desc *d, const char *key, double n, int is_int) {
  if (d->nargs < LR_WAIT_MAX_ARGS) {
    d->args[d->nargs].key = key, d->args[d->nargs].s = NULL;
    d->args[d->nargs].n = n, d->args[d->nargs].is_int = is_int;
    d->nargs++;
  }
}

#endif
