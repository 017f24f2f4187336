/* watchdog.c: the blocked-loop report (--debug, LUARUN_DEBUG=1).
 *
 * A task that runs a long time without yielding freezes every other task: the
 * "time.sleep in an async server" mistake. With --debug, a watchdog thread looks at
 * the scheduler a few times per threshold. The scheduler publishes each resume as a
 * generation number (odd while a task runs) and its start time; when the watchdog
 * sees the same run going on past the threshold it sends a signal to the loop thread,
 * whose handler sets a count hook on the running Lua thread (lua_sethook is safe in a
 * signal handler, as lua.c's Ctrl-C shows; calling it from the watchdog thread itself
 * would race with the interpreter). The hook then runs inside the stuck task, on the
 * loop thread, prints where it is (luaL_traceback) and removes itself: the report
 * appears while the task is still stuck.
 *
 * A task blocked inside a C function (os.execute, io.read) runs no Lua code, so the
 * hook cannot fire: after one more poll the watchdog thread prints what it may read
 * safely (which task, for how long), and the hook prints the traceback as soon as Lua
 * code runs again. When the run finally ends, one more line gives its total.
 *
 * An observer of the scheduler (sched_hooks.c): off (no --debug), nothing here runs.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "lr_observe.h"

#define DEFAULT_MS 100
#define WD_SIGNAL (SIGRTMIN + 4)

typedef struct lr_watchdog lr_watchdog;

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

struct lr_watchdog {
  lr_runtime *rt;
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;               /* under mu */
  uint64_t threshold;     /* ns */
  uint64_t poll;          /* ns between two looks */
  /* Published by the loop thread at each resume (read by the watchdog). */
  uint64_t gen;           /* odd while a task runs */
  uint64_t start;         /* hrtime of the current resume */
  pthread_t loop;
  /* One report's handshake, by generation. */
  uint64_t signalled;     /* the watchdog asked for a traceback */
  uint64_t armed;         /* the signal handler set the hook */
  uint64_t printed;       /* the hook printed the traceback */
  uint64_t c_noted;       /* the watchdog printed the "inside a C function" note */
  lua_State *hooked;      /* loop thread: the thread carrying our hook, or NULL */
  lr_task *task;          /* loop thread: the task running now */
  /* The running task's name ("task 3 \"fetch\" (spawned at x.lua:5)"), for the
   * watchdog's own note, which cannot use Lua. Under mu. */
  lr_task *named;         /* the task name[] belongs to */
  uint32_t named_id;
  char name[256];
};

/* The watchdog the signal handler serves (one per process). */
static lr_watchdog *active;

static unsigned ms_of(uint64_t ns) {
  return (unsigned)((ns + 500000) / 1000000);
}

/* ---- the report from inside the task (loop thread) ---- */

static void block_hook(lua_State *L, lua_Debug *ar) {
  lr_watchdog *wd = active;
  uint64_t g;
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  if (wd == NULL) return;
  wd->hooked = NULL;
  g = wd->gen;
  if (!(g & 1) || wd->task == NULL) return;
  lua_pushliteral(L, "luarun: blocked loop: ");
  lr_report_push_taskname(L, wd->task);
  lua_pushfstring(L, " has been running for %d ms without yielding (threshold %d ms)%s; "
                  "it is at:\n", (int)ms_of(uv_hrtime() - wd->start),
                  (int)ms_of(wd->threshold),
                  LOAD(&wd->c_noted) == g ? ", inside a C function until now" : "");
  luaL_traceback(L, L, NULL, 0);
  lua_pushliteral(L, "\n");
  lua_concat(L, 5);
  fputs(lua_tostring(L, -1), stderr);
  fflush(stderr);
  lua_pop(L, 1);
  STORE(&wd->printed, g);
}

static void on_signal(int sig) {
  lr_watchdog *wd = active;
  int saved = errno;
  (void)sig;
  if (wd) {
    uint64_t g = __atomic_load_n(&wd->gen, __ATOMIC_SEQ_CST);
    lua_State *co = wd->rt->running_co;
    /* Never replace another hook (Ctrl-C's interrupt, the script's debug.sethook). */
    if ((g & 1) && g == LOAD(&wd->signalled) && co && lua_gethook(co) == NULL) {
      wd->hooked = co;
      lua_sethook(co, block_hook, LUA_MASKCALL | LUA_MASKCOUNT, 1);
      STORE(&wd->armed, g);
    }
  }
  errno = saved;
}

/* ---- the scheduler's side (loop thread) ---- */

/* Copies the task's name for the watchdog thread (a task resumed again and again
 * keeps its copy). */
static void remember_name(lr_watchdog *wd, lr_runtime *rt, lr_task *t) {
  lua_State *L = rt->L;
  lr_report_push_taskname(L, t);
  pthread_mutex_lock(&wd->mu);
  snprintf(wd->name, sizeof wd->name, "%s", lua_tostring(L, -1));
  wd->named = t;
  wd->named_id = t->id;
  pthread_mutex_unlock(&wd->mu);
  lua_pop(L, 1);
}

static const char watchdog_id = 'w'; /* how it finds itself among the observers */

static void on_resume(void *ud, lr_task *t) {
  lr_watchdog *wd = ud;
  if (wd->named != t || wd->named_id != t->id) remember_name(wd, wd->rt, t);
  wd->task = t;
  __atomic_store_n(&wd->loop, pthread_self(), __ATOMIC_RELAXED);
  __atomic_store_n(&wd->start, uv_hrtime(), __ATOMIC_RELAXED);
  __atomic_fetch_add(&wd->gen, 1, __ATOMIC_SEQ_CST); /* odd: running */
}

static void on_yield(void *ud, lr_task *t) {
  lr_watchdog *wd = ud;
  uint64_t g = wd->gen;
  uint64_t ran = uv_hrtime() - wd->start;
  lua_State *L = wd->rt->L;
  __atomic_fetch_add(&wd->gen, 1, __ATOMIC_SEQ_CST); /* even: the handler stands down */
  if (wd->hooked) {
    if (lua_gethook(wd->hooked) == block_hook) lua_sethook(wd->hooked, NULL, 0, 0);
    wd->hooked = NULL;
  }
  wd->task = NULL;
  if (ran < wd->threshold) return;
  lua_pushliteral(L, "luarun: blocked loop: ");
  lr_report_push_taskname(L, t);
  if (LOAD(&wd->printed) == g || LOAD(&wd->c_noted) == g) {
    lua_pushfstring(L, " ran %d ms without yielding, in total, before it %s\n", (int)ms_of(ran),
                    lua_status(t->co) == LUA_YIELD ? "yielded" : "finished");
  } else if (lua_status(t->co) == LUA_YIELD) {
    /* Over the threshold, but it yielded before the watchdog looked: say where. */
    lua_pushfstring(L, " ran %d ms without yielding (threshold %d ms); it yielded at:\n",
                    (int)ms_of(ran), (int)ms_of(wd->threshold));
    luaL_traceback(L, t->co, NULL, 0);
    lua_pushliteral(L, "\n");
    lua_concat(L, 3);
  } else {
    lua_pushfstring(L, " ran %d ms without yielding (threshold %d ms) before it finished\n",
                    (int)ms_of(ran), (int)ms_of(wd->threshold));
  }
  lua_concat(L, 3);
  fputs(lua_tostring(L, -1), stderr);
  fflush(stderr);
  lua_pop(L, 1);
}

/* ---- the watchdog thread ---- */

/* Prints the note for a task stuck where no hook can run. Called with mu held. */
static void note_stuck(lr_watchdog *wd, uint64_t g, uint64_t ran) {
  const char *name = wd->name; /* set before this run began (mu held) */
  if (LOAD(&wd->armed) == g)
    fprintf(stderr, "luarun: blocked loop: %s has been running for %u ms without yielding "
            "(threshold %u ms), inside a C function that blocks (os.execute, io.read, a C "
            "library call...); its traceback follows when Lua code runs again\n",
            name, ms_of(ran), ms_of(wd->threshold));
  else
    fprintf(stderr, "luarun: blocked loop: %s has been running for %u ms without yielding "
            "(threshold %u ms); no traceback (the thread has a debug hook of its own)\n",
            name, ms_of(ran), ms_of(wd->threshold));
  fflush(stderr);
  STORE(&wd->c_noted, g);
}

/* One look at the scheduler. Called with mu held. */
static void look(lr_watchdog *wd, uint64_t *sent_at) {
  uint64_t g = LOAD(&wd->gen), start, now, ran;
  if (!(g & 1)) return;
  start = __atomic_load_n(&wd->start, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  if (__atomic_load_n(&wd->gen, __ATOMIC_RELAXED) != g) return; /* a new run began */
  now = uv_hrtime();
  if (now < start || (ran = now - start) < wd->threshold) return;
  if (LOAD(&wd->signalled) != g) {
    STORE(&wd->signalled, g);
    *sent_at = now;
    pthread_kill(__atomic_load_n(&wd->loop, __ATOMIC_RELAXED), WD_SIGNAL);
    return;
  }
  if (LOAD(&wd->printed) == g || LOAD(&wd->c_noted) == g) return;
  if (now - *sent_at >= wd->poll) note_stuck(wd, g, ran);
}

static void *wd_main(void *arg) {
  lr_watchdog *wd = arg;
  uint64_t sent_at = 0;
  pthread_mutex_lock(&wd->mu);
  while (!wd->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += (long)(wd->poll % 1000000000u);
    ts.tv_sec += (time_t)(wd->poll / 1000000000u) + ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&wd->cv, &wd->mu, &ts);
    if (!wd->stop) look(wd, &sent_at);
  }
  pthread_mutex_unlock(&wd->mu);
  return NULL;
}

static void on_close(void *ud, lr_runtime *rt) {
  lr_watchdog *wd = ud;
  (void)rt;
  pthread_mutex_lock(&wd->mu);
  wd->stop = 1;
  pthread_cond_signal(&wd->cv);
  pthread_mutex_unlock(&wd->mu);
  pthread_join(wd->th, NULL);
  if (active == wd) active = NULL; /* the handler stays installed and does nothing */
  pthread_cond_destroy(&wd->cv);
  pthread_mutex_destroy(&wd->mu);
  free(wd);
}

static void set_threshold(lr_watchdog *wd, unsigned ms) {
  uint64_t ns = (uint64_t)(ms ? ms : DEFAULT_MS) * 1000000u;
  uint64_t poll = ns / 4;
  if (poll < 2000000u) poll = 2000000u;
  if (poll > 50000000u) poll = 50000000u;
  wd->threshold = ns;
  wd->poll = poll;
}

int lr_watchdog_start(lr_runtime *rt, unsigned ms) {
  lr_watchdog *wd = lr_observer_ud(rt, &watchdog_id);
  lr_observer o = {&watchdog_id, NULL, NULL, on_resume, on_yield, NULL, NULL, NULL, NULL,
                   on_close};
  pthread_condattr_t ca;
  struct sigaction sa;
  sigset_t all, old;
  int rc;
  if (wd) { /* a second setting (the CLI's option after the environment): a bare
             * --debug (ms 0) keeps the threshold LUARUN_DEBUG_MS gave */
    if (ms == 0) return 0;
    pthread_mutex_lock(&wd->mu);
    set_threshold(wd, ms);
    pthread_mutex_unlock(&wd->mu);
    return 0;
  }
  if (active) return -1; /* one per process: the signal handler serves one */
  if ((wd = calloc(1, sizeof *wd)) == NULL) return -1;
  wd->rt = rt;
  set_threshold(wd, ms);
  pthread_mutex_init(&wd->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&wd->cv, &ca);
  pthread_condattr_destroy(&ca);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART; /* a blocking read or waitpid carries on */
  sigemptyset(&sa.sa_mask);
  sigaction(WD_SIGNAL, &sa, NULL);
  /* The thread takes no signals: Ctrl-C's handler must run on the loop thread. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = pthread_create(&wd->th, NULL, wd_main, wd);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    pthread_cond_destroy(&wd->cv);
    pthread_mutex_destroy(&wd->mu);
    free(wd);
    return -1;
  }
  o.ud = wd;
  if (lr_observer_add(rt, &o) != 0) {
    on_close(wd, rt);
    return -1;
  }
  active = wd;
  return 0;
}
