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
#include <stdint.h>
#include <lua.h>
#include <lauxlib.h>
#include <uv.h>

#define LUARUN_VERSION "0.1.0"

typedef struct lr_runtime lr_runtime;
typedef struct lr_task lr_task;
typedef struct lr_owner lr_owner;

/* A FIFO of tasks linked through their next/prev fields. */
typedef struct lr_waitq {
  lr_task *head, *tail;
} lr_waitq;

enum lr_state { LR_READY = 1, LR_RUNNING, LR_PARKED, LR_DONE };
enum lr_result { LR_RES_NONE = 0, LR_RES_OK, LR_RES_FAILED, LR_RES_CANCELLED };
/* Why a parked task was woken: its continuation reads this. */
enum lr_wake { LR_WAKE_NONE = 0, LR_WAKE_DONE, LR_WAKE_TIMEOUT, LR_WAKE_CANCELLED };

/* Task flags. */
#define LR_F_CANCEL 0x01   /* cancel requested: every wait from now on raises */
#define LR_F_SHIELD 0x02   /* current park ignores cancellation (cleanup waits) */
#define LR_F_WAITED 0x04   /* someone observes the outcome: no unhandled report */
#define LR_F_STARTED 0x08  /* the body has been entered */
#define LR_F_MAIN 0x10     /* the main task of lr.run / the CLI */

/* Called when a parked task is cancelled. It must detach the task from whatever
 * would wake it and wake it (or arrange for it to be woken later). */
typedef void (*lr_cancel_fn)(lr_task *t);

/* Something that owns child tasks (gather, timeout) and hears when one ends. */
struct lr_owner {
  void (*child_done)(lr_owner *o, lr_task *child);
};

struct lr_task {
  lua_State *co;         /* the task's thread; also the userdata's user value 1 */
  lr_runtime *rt;
  lr_task *next, *prev;  /* links in the ready queue or in one wait queue */
  lr_waitq *inq;         /* the wait queue it is parked in, or NULL */
  lr_waitq waiters;      /* tasks parked in task:wait() on this one */
  lr_cancel_fn on_cancel;
  lr_owner *owner;       /* gather/timeout that spawned it, or NULL */
  uint64_t deadline;     /* hrtime (ns) when in the timer heap */
  uint32_t heap_idx;     /* 1-based position in the timer heap, 0 when absent */
  uint32_t seq;          /* tie-break for equal deadlines: FIFO wake-ups */
  uint32_t id;
  uint32_t owner_idx;    /* index of this child in its owner */
  uint32_t where;        /* interned "file:line:" it was spawned at (report.c) */
  int ref;               /* registry anchor while not done, else LUA_NOREF */
  int nres;              /* number of results on co's stack once done */
  uint8_t state, result, wake, flags;
};

typedef void (*lr_closer)(lr_runtime *rt);
#define LR_MAX_CLOSERS 8
#define LR_DEADLOCK 100 /* status of lr_runtime_run_main */

struct lr_runtime {
  uv_loop_t loop;
  lua_State *L;          /* main state: loop callbacks use this, never a task's thread */
  lua_State *from;       /* thread that called lr.run (for lua_resume's C-stack count) */
  lr_waitq ready;
  lr_task *current;      /* the task being resumed, or NULL */
  lr_task *main;         /* the main task of the current run */
  uint32_t next_id;
  uint32_t seq;
  size_t live;           /* tasks not yet done */
  /* Live tasks are anchored in a Lua table (tasks_ref) at slots handed out here. */
  int tasks_ref;
  uint32_t slot_max, free_n, free_cap;
  uint32_t *free_slots;
  int where_ref;         /* spawn locations: string <-> id */
  uint32_t where_hint;   /* spawn location for children started from C (gather) */
  /* Timers: a binary min-heap of sleeping tasks driven by one uv_timer_t. */
  lr_task **heap;
  uint32_t heap_n, heap_cap;
  uv_timer_t timer;
  uint64_t timer_due;    /* deadline the uv timer is armed for, 0 if stopped */
  int timer_busy;        /* inside the timer callback: re-arm once at its end */
  int running;           /* inside lr_runtime_drive */
  int failures;          /* unhandled errors reported during this run */
  int deadlocks;         /* deadlock reports during this run */
  volatile sig_atomic_t interrupted; /* SIGINT seen */
  int closing;
  int origin_ref;        /* registry: {err, report} of the last error relayed by wait */
  lua_State *running_co; /* the thread executing Lua right now (for SIGINT) */
  lr_closer closers[LR_MAX_CLOSERS]; /* subsystems to shut down, last first */
  int ncloser;
};

/* The yield value that marks "parked by luarun" as opposed to a user coroutine.yield. */
extern char lr_park_sentinel;
#define LR_SENTINEL ((void *)&lr_park_sentinel)

/* ---- loop.c: runtime context and driver ---- */
/* Returns the runtime of this Lua state, creating it on first use. Never NULL. */
lr_runtime *lr_runtime_get(lua_State *L);
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
/* Interns the position of stack level `level` of L; returns its id for t->where. */
uint32_t lr_task_where(lua_State *L, lr_runtime *rt, int level);
void lr_sched_register(lua_State *L);
/* The task running on L, or raises naming fname if L cannot park here. */
lr_task *lr_task_current(lua_State *L, const char *fname);
/* Parks the current task: yields to the scheduler with continuation k. */
int lr_task_park(lua_State *L, lr_task *t, lr_cancel_fn on_cancel, lua_KContext ctx,
                 lua_KFunction k);
/* Moves a parked task to the ready queue with the given wake reason. */
void lr_task_wake(lr_task *t, int why);
/* Requests cancellation; wakes the task if it is parked. */
void lr_task_cancel(lr_task *t);
/* Raises the cancellation error on L if t has a cancel pending (level-triggered). */
void lr_task_checkpoint(lua_State *L, lr_task *t);
/* Resumes every task that is ready now, once. */
void lr_sched_run_ready(lr_runtime *rt);
/* Pushes the task's outcome onto L: its results (returns count) or raises its error. */
int lr_task_push_results(lua_State *L, lr_task *t, int first_only);
void lr_task_push_error(lua_State *L, lr_task *t);

void lr_waitq_push(lr_waitq *q, lr_task *t);
void lr_waitq_remove(lr_waitq *q, lr_task *t);
lr_task *lr_waitq_pop(lr_waitq *q);
/* Cancel hook for a task parked in a wait queue: unlink and wake it. */
void lr_waitq_cancel(lr_task *t);

/* ---- group.c: tasks owning tasks (the Lua functions lr.gather/map/timeout) ---- */
int lr_gather(lua_State *L);
int lr_map(lua_State *L);
int lr_timeout(lua_State *L);

/* ---- timer.c: sleeping tasks ---- */
void lr_timer_init(lr_runtime *rt);
void lr_timer_close(lr_runtime *rt);
/* Adds t to the heap to be woken with LR_WAKE_TIMEOUT at deadline (hrtime ns). */
int lr_timer_add(lr_runtime *rt, lr_task *t, uint64_t deadline);
void lr_timer_remove(lr_runtime *rt, lr_task *t);
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

/* ---- embedded Lua parts (generated at build time from lua/) ---- */
/* Sets package.preload entries for every embedded Lua module. */
void lr_embedded_preload(lua_State *L);

#endif
