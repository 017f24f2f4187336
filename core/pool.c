/* pool.c: worker threads, each with its own long-lived Lua state (lr.run_in_pool).
 *
 * Why our own threads and not uv_queue_work: libuv's threadpool (4 threads by
 * default, UV_THREADPOOL_SIZE) also runs every file operation and getaddrinfo. CPU-
 * bound Lua jobs there would queue fs and DNS requests behind them for as long as the
 * jobs run, and a job could run on any of its threads, so it could not keep a warm
 * Lua state (with its loaded modules and bytecode cache) per thread. A fixed set of
 * pthreads sharing one job queue (mutex + condition variable) gives each worker its
 * own state for its whole life, and leaves libuv's pool to I/O.
 *
 * A job's life:
 *   loop thread: the caller serialises the function and arguments (copy.c) into the
 *   job, queues it, parks its task in the job's wait queue;
 *   worker: takes it, runs it in its state inside lua_pcall (errors, out-of-memory
 *   and copy errors all become an error result), serialises the results, moves the
 *   job to the done list and calls uv_async_send;
 *   loop thread (async callback): wakes each job's task, or frees the job if its task
 *   was cancelled meanwhile (orphaned); the task's continuation deserialises.
 * Workers never touch the runtime, the loop (except uv_async_send) or curl.
 *
 * The async handle is referenced only while some task waits on the pool, so an idle
 * pool never keeps lr.run from returning, and an orphaned job never delays exit.
 *
 * Short jobs: waking a sleeping thread costs 40-100 us on a VM, more than a short
 * job, so the three threads involved poll for a while before they sleep: a worker
 * for the next job (wait_for_job), a caller for a small job's result
 * (spin_for_result) and the loop, about to block in epoll, for a result due soon
 * (prepare_cb). How long comes from the jobs just before (pool.job_ns). They poll
 * only when a core is free for it by our own count (busy workers, the loop thread,
 * the poller), and offer the core to other threads every few microseconds
 * (poll_step), so a loaded machine is not made worse.
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "lr_subsys.h"
#include "../bindings/bindings.h"

#define MAX_WORKERS 1024
#define CACHE_MAX 64    /* compiled functions kept per worker before the cache resets */
/* Results up to this size are written into the job itself: with 10,000 small jobs in
 * flight, a malloc by the worker and a free by the loop thread for each (different
 * malloc arenas, so each free takes the worker's arena lock) were a fifth of the
 * loop thread's time. */
#define JOB_INLINE 192
#define FREE_JOBS_MAX 256 /* finished jobs kept for reuse (loop thread) */
/* Jobs sent while other tasks are ready wait on the loop thread and go to the
 * workers together, at the end of the scheduler's turn or by this many: one lock and
 * one wake-up for a batch instead of each job's (10,000 at once: the futex calls of
 * waking workers were a fifth of the loop thread's time). */
#define STAGE_MAX 64

enum { J_STAGED = 1, J_QUEUED, J_RUNNING, J_DONE };
enum { J_OK = 0, J_ERROR };

typedef struct job job;
typedef struct pool pool;

struct job {
  job *next, *prev;     /* queue links (under the mutex), then the done list */
  lr_waitq q;           /* the waiting task parks here; the cancel hook finds us */
  lr_task *task;        /* loop thread: the waiting task, NULL once orphaned */
  pool *p;
  int kind;             /* LR_POOL_CODE or LR_POOL_NAME */
  int state;            /* J_*, under the mutex */
  int status;           /* J_OK or J_ERROR (out holds the message) */
  int orphaned;         /* loop thread: result to be dropped */
  int reading;          /* the worker may still read the caller's strings (mutex) */
  int caller_spinning;  /* the caller polls for the result: no async wake (mutex) */
  int delivered;        /* loop thread: on p->delivered, its task woken */
  int out_anchor;       /* worker registry ref anchoring long result strings, or 0 */
  struct worker *w;     /* the worker holding out_anchor */
  uint64_t ns;          /* how long the worker took (set before J_DONE) */
  lr_copybuf code, in, out;
  char small[JOB_INLINE]; /* out's first home */
};

typedef struct worker {
  pool *p;
  lua_State *L;
  pthread_t th;
  unsigned id;
  int cache_ref, cache_n;
  int busy;             /* running a job (under the mutex) */
  size_t used, limit;   /* bytes allocated by L, and the cap (0: none) */
  int *rel;             /* out_anchor refs the loop is done with (mutex) */
  int nrel, caprel;
  jmp_buf panic;
} worker;

struct pool {
  pool *next_pool;
  lr_runtime *rt;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_cond_t rcv;   /* signalled when a job's arguments have been read */
  int closing;          /* shutting down: anchors die with the worker states */
  job *qhead, *qtail;   /* queued jobs, under the mutex */
  job *dhead, *dtail;   /* finished jobs, under the mutex */
  int stop;             /* under the mutex */
  int started;
  unsigned size;        /* wanted (0: default) until started, then actual */
  size_t mem_limit;
  unsigned nworkers;
  worker *workers;
  int nspinning;        /* workers polling the queue before they sleep (mutex) */
  int nqueued;          /* jobs in the queue (mutex) */
  unsigned spin_gen;    /* bumped when a worker starts polling (atomic; under the mutex) */
  int nbusy;            /* workers running a job (mutex) */
  int ncores;           /* uv_available_parallelism() at start */
  size_t waiting;       /* loop thread: jobs whose task waits (async ref'd if > 0) */
  job *free_jobs;       /* loop thread: finished jobs to reuse, linked by next */
  int nfree_jobs;
  job *shead, *stail;   /* loop thread: staged jobs (J_STAGED), not yet queued */
  job *delivered;       /* loop thread: done jobs whose task is woken but has not
                         * resumed yet (freed by pool_close if it never does) */
  int nstaged;
  uint64_t job_ns;      /* loop thread: moving average of recent jobs' durations */
  unsigned done_seq;    /* bumped when a job is done (atomic; written under the mutex) */
  int nclosing;         /* handles still to close at shutdown */
  uv_prepare_t prepare; /* active (unref'd) while a task waits: see prepare_cb */
  uv_async_t async;
};

/* Pools by runtime (usually one): touched only on loop threads. */
static pool *pools;

static pool *find_pool(lr_runtime *rt) {
  pool *p;
  for (p = pools; p; p = p->next_pool)
    if (p->rt == rt) return p;
  return NULL;
}

static void pool_close(lr_runtime *rt);

/* The pool of rt, created (not started) on first use. NULL on out-of-memory. */
static pool *get_pool(lr_runtime *rt) {
  pool *p = find_pool(rt);
  if (p) return p;
  p = calloc(1, sizeof *p);
  if (p == NULL) return NULL;
  p->rt = rt;
  p->next_pool = pools;
  pools = p;
  lr_runtime_on_close(rt, pool_close);
  return p;
}

static unsigned default_size(void) {
  const char *env = getenv("LUARUN_POOL_SIZE");
  if (env && *env) {
    char *end;
    long n = strtol(env, &end, 10);
    if (*end == '\0' && n >= 1 && n <= MAX_WORKERS) return (unsigned)n;
  }
  return uv_available_parallelism();
}

unsigned lr_pool_size(lr_runtime *rt) {
  pool *p = find_pool(rt);
  if (p && p->started) return p->nworkers;
  if (p && p->size) return p->size;
  return default_size();
}

int lr_pool_configure(lr_runtime *rt, unsigned size, size_t mem_limit) {
  pool *p = get_pool(rt);
  if (p == NULL) return -1;
  if (p->started) return (size == 0 || size == p->nworkers) && mem_limit == p->mem_limit ? 0 : -1;
  if (size > MAX_WORKERS) size = MAX_WORKERS;
  if (size) p->size = size;
  p->mem_limit = mem_limit;
  return 0;
}

/* Hands a result anchor back to its worker, which unrefs it before its next job. */
static void give_anchor_back(pool *p, worker *w, int anchor) {
  if (anchor == 0 || p->closing) return;
  pthread_mutex_lock(&p->mu);
  if (w->nrel == w->caprel) {
    int cap = w->caprel ? w->caprel * 2 : 16;
    int *np = realloc(w->rel, (size_t)cap * sizeof *np);
    if (np == NULL) { /* the strings stay anchored: a leak, not a crash */
      pthread_mutex_unlock(&p->mu);
      return;
    }
    w->rel = np;
    w->caprel = cap;
  }
  w->rel[w->nrel++] = anchor;
  pthread_mutex_unlock(&p->mu);
}

static void release_anchor(job *j) {
  give_anchor_back(j->p, j->w, j->out_anchor);
  j->out_anchor = 0;
}

/* Loop thread only, like job_free. */
static job *job_new(pool *p) {
  job *j = p->free_jobs;
  if (j == NULL) return calloc(1, sizeof *j);
  p->free_jobs = j->next;
  p->nfree_jobs--;
  memset(j, 0, offsetof(job, small));
  return j;
}

static void job_free(job *j) {
  pool *p = j->p;
  release_anchor(j);
  lr_copybuf_free(&j->code);
  lr_copybuf_free(&j->in);
  lr_copybuf_free(&j->out);
  if (p->nfree_jobs < FREE_JOBS_MAX && !p->closing) {
    j->next = p->free_jobs;
    p->free_jobs = j;
    p->nfree_jobs++;
  } else {
    free(j);
  }
}

/* ================= the worker side ================= */

/* Counts what the state allocates and refuses to pass the cap: the worker then gets
 * a memory error in its protected call, never a crash. */
static void *worker_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  worker *w = ud;
  void *np;
  if (ptr == NULL) osize = 0;
  if (nsize == 0) {
    free(ptr);
    w->used -= osize;
    return NULL;
  }
  if (w->limit && nsize > osize && w->used + (nsize - osize) > w->limit) return NULL;
  np = realloc(ptr, nsize);
  if (np == NULL) return NULL;
  w->used = w->used - osize + nsize;
  return np;
}

/* Everything runs under lua_pcall, so this is a last resort: give up the state
 * (it may be inconsistent, so it is not closed) and let the worker build a new one. */
static int worker_panic(lua_State *L) {
  void *ud;
  lua_getallocf(L, &ud);
  longjmp(((worker *)ud)->panic, 1);
  return 0;
}

static int no_runtime(lua_State *L) {
  return luaL_error(L, "require \"luarun\": the runtime is not available in a pool "
                    "worker (luarun.json is)");
}

/* Stack: path, cpath (the caller's package.path and cpath). */
static int worker_setup(lua_State *L) {
  worker *w = lua_touserdata(L, 3);
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "path");
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "cpath");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_luarun_json);
  lua_setfield(L, -2, "luarun.json");
  lua_pushcfunction(L, no_runtime);
  lua_setfield(L, -2, "luarun");
  lua_newtable(L);
  w->cache_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  w->cache_n = 0;
  return 0;
}

static lua_State *worker_state(worker *w, const char *path, const char *cpath) {
  lua_State *L = lua_newstate(worker_alloc, w);
  if (L == NULL) return NULL;
  lua_atpanic(L, worker_panic);
  lua_pushcfunction(L, worker_setup);
  lua_pushstring(L, path);
  lua_pushstring(L, cpath);
  lua_pushlightuserdata(L, w);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
    lua_close(L);
    return NULL;
  }
  return L;
}

/* The message handler of the job's call: the message plus the worker's traceback. */
static int worker_msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, NULL, 1);
  luaL_gsub(L, lua_tostring(L, -1), "stack traceback:", "pool worker traceback:");
  lua_pushfstring(L, "%s\n%s", msg, lua_tostring(L, -1));
  return 1;
}

/* Pushes the job's function: compiled once per worker for each distinct bytecode,
 * or module.function through require. */
static void push_function(lua_State *L, worker *w, job *j) {
  if (j->kind == LR_POOL_CODE) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->cache_ref);      /* cache */
    lua_pushlstring(L, j->code.p, j->code.n);              /* cache code */
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TFUNCTION) {              /* cache code fn */
      lua_replace(L, -3);
      lua_pop(L, 1);
      return;
    }
    lua_pop(L, 1);
    if (luaL_loadbufferx(L, j->code.p, j->code.n, "=run_in_pool", "b") != LUA_OK)
      lua_error(L);
    if (++w->cache_n > CACHE_MAX) {  /* many distinct functions: start over */
      lua_newtable(L);
      lua_replace(L, -4);
      lua_pushvalue(L, -3);
      lua_rawseti(L, LUA_REGISTRYINDEX, w->cache_ref);
      w->cache_n = 1;
    }
    lua_pushvalue(L, -1);
    lua_insert(L, -4);                                     /* fn cache code fn */
    lua_rawset(L, -3);
    lua_pop(L, 1);                                         /* fn */
  } else {
    const char *name = j->code.p, *dot = strrchr(name, '.');
    lua_getglobal(L, "require");
    lua_pushlstring(L, name, (size_t)(dot - name));
    lua_call(L, 1, 1);                                     /* module */
    if (lua_getfield(L, -1, dot + 1) != LUA_TFUNCTION &&
        luaL_getmetafield(L, -1, "__call") == LUA_TNIL)
      luaL_error(L, "run_in_pool: module '%s' has no function '%s'",
                 lua_pushlstring(L, name, (size_t)(dot - name)), dot + 1);
    lua_remove(L, -2);
  }
}

/* The caller's strings are no longer needed: a cancel may now unwind its stack. */
static void args_done(job *j) {
  pool *p = j->p;
  pthread_mutex_lock(&p->mu);
  j->reading = 0;
  pthread_cond_broadcast(&p->rcv);
  pthread_mutex_unlock(&p->mu);
}

/* Unrefs the result anchors the loop thread has finished with. */
static void drain_releases(worker *w) {
  pool *p = w->p;
  int *rel, n, i;
  pthread_mutex_lock(&p->mu);
  rel = w->rel;
  n = w->nrel;
  w->rel = NULL;
  w->nrel = w->caprel = 0;
  pthread_mutex_unlock(&p->mu);
  for (i = 0; i < n; i++) luaL_unref(w->L, LUA_REGISTRYINDEX, rel[i]);
  free(rel);
}

/* Runs in the worker under lua_pcall. Stack: job, worker. */
static int job_main(lua_State *L) {
  job *j = lua_touserdata(L, 1);
  worker *w = lua_touserdata(L, 2);
  int nargs, nres;
  lua_settop(L, 0);
  lua_pushcfunction(L, worker_msgh);                       /* 1: msgh */
  push_function(L, w, j);                                  /* 2: fn */
  nargs = lr_copy_decode(L, j->in.p, j->in.n);
  args_done(j);
  lr_copybuf_free(&j->in);
  if (lua_pcall(L, nargs, LUA_MULTRET, 1) != LUA_OK) return lua_error(L);
  nres = lua_gettop(L) - 1;
  j->out.p = j->small;
  j->out.n = 0;
  j->out.cap = sizeof j->small;
  j->out.where = LR_BUF_BORROWED;
  lua_pushnil(L);
  lua_insert(L, 2);                                        /* msgh anchor results... */
  lr_copy_encode_refs(L, 3, nres, &j->out, "run_in_pool", "results", 2);
  if (lua_istable(L, 2)) {
    lua_pushvalue(L, 2);
    j->out_anchor = luaL_ref(L, LUA_REGISTRYINDEX);
    j->w = w;
  }
  return 0;
}

static void set_error(job *j, const char *msg, size_t n) {
  lr_copybuf_free(&j->out);
  j->status = J_ERROR;
  j->out.p = malloc(n + 1);
  if (j->out.p == NULL) return; /* the caller reports "out of memory" */
  memcpy(j->out.p, msg, n);
  j->out.p[n] = '\0';
  j->out.n = j->out.cap = n;
}

static void run_job(worker *w, job *j) {
  lua_State *L = w->L;
  uint64_t t0 = uv_hrtime();
  int st;
  drain_releases(w);
  lua_settop(L, 0);
  lua_pushcfunction(L, job_main);
  lua_pushlightuserdata(L, j);
  lua_pushlightuserdata(L, w);
  st = lua_pcall(L, 2, 0, 0);
  j->status = J_OK;
  if (st != LUA_OK) {
    size_t n = 0;
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (st == LUA_ERRMEM) {
      msg = "not enough memory in the pool worker";
      n = strlen(msg);
    } else if (msg == NULL) {
      msg = "(error object is not a string)";
      n = strlen(msg);
    }
    set_error(j, msg, n);
  }
  lua_settop(L, 0);
  j->ns = uv_hrtime() - t0;
}

/* After a job, a worker polls the queue before it sleeps on the condition variable:
 * a caller that sends one job after another then finds it awake, and skips a futex
 * wake-up (40-50 us on this 2-core VM) per call. It polls WORKER_SPIN_NS, plus twice
 * the job's duration when that stays under SPIN_MAX_NS: while it waits, the caller
 * copies the results, which takes about as long as the worker took to copy the
 * arguments (1 MB each way: the caller's next job came ~100 us after the last result
 * and found every worker asleep). A worker polls only when no job is queued. */
#define WORKER_SPIN_NS 50000
/* A caller polls for its job's result at most this long, and only if recent jobs
 * took less (spin_for_result). */
#define CALLER_SPIN_NS 20000
/* The loop, about to block, polls for a result due soon (prepare_cb): twice the
 * recent jobs' duration plus this, when that stays under SPIN_MAX_NS. */
#define LOOP_SPIN_NS 20000
#define SPIN_MAX_NS 250000

/* base plus twice the duration of recent jobs, or base if that passes SPIN_MAX_NS. */
static uint64_t spin_ns(uint64_t base, uint64_t job_ns) {
  uint64_t spin = base + 2 * job_ns;
  return spin <= SPIN_MAX_NS ? spin : base;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* One step of a polling loop; returns 1 once the time is up. Every 64 pauses (a few
 * microseconds) it checks the clock and offers its core to any other runnable thread
 * of this CPU: on a loaded machine the thread we wait for (a worker copying the job's
 * data, or the caller) may be queued behind us on the same core, and a poll that
 * kept the core for its whole budget would only delay what it waits for. On an idle
 * core sched_yield returns at once. */
static int poll_step(int *i, uint64_t until) {
  cpu_relax();
  if ((++*i & 63) != 0) return 0;
  if (uv_hrtime() > until) return 1;
  sched_yield();
  return 0;
}

/* Called and returns with the mutex held. Returns once the queue has a job or stop;
 * polls for spin nanoseconds before it sleeps. Only the worker that finished last
 * polls: an earlier poller stops when a newer one starts (spin_gen). One poller is
 * enough to catch the next job, and with as many workers as cores a second one takes
 * the core of the thread doing the work (seen in bench/pool.sh (c): both workers and
 * the caller polling on 2 cores, every copy slowed down). The newest one polls
 * because its poll lasts longest from now, so the next job most likely finds a
 * poller (letting the older one poll on instead left every worker asleep when the
 * next job came, and each call paid a futex wake-up). */
static void wait_for_job(pool *p, uint64_t spin) {
  uint64_t until;
  unsigned gen;
  int i = 0;
  if (p->qhead || p->stop) return;
  /* Poll only if a core is free for it: the busy workers, the loop thread and this
   * one. Otherwise polling takes a core from a worker or the loop (bench/pool (b),
   * 10,000 jobs at once on 2 cores: 8-13 thousand context switches, 4-7 thousand
   * with this rule); sleep at once, a signal wakes it. */
  if (p->nbusy + 2 > p->ncores) {
    while (!p->stop && p->qhead == NULL) pthread_cond_wait(&p->cv, &p->mu);
    return;
  }
  p->nspinning++;
  gen = __atomic_add_fetch(&p->spin_gen, 1, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&p->mu);
  until = uv_hrtime() + spin;
  while (__atomic_load_n(&p->qhead, __ATOMIC_RELAXED) == NULL &&
         !__atomic_load_n(&p->stop, __ATOMIC_RELAXED) &&
         __atomic_load_n(&p->spin_gen, __ATOMIC_RELAXED) == gen) {
    if (poll_step(&i, until)) break;
  }
  pthread_mutex_lock(&p->mu);
  p->nspinning--;
  while (!p->stop && p->qhead == NULL) pthread_cond_wait(&p->cv, &p->mu);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  pool *p = w->p;
  job *volatile j = NULL;
  volatile uint64_t spin = WORKER_SPIN_NS;
  int notify;
  char name[16];
  snprintf(name, sizeof name, "luarun-pool-%u", w->id % 1000);
  pthread_setname_np(pthread_self(), name); /* top -H, perf and gdb name the workers */
  if (setjmp(w->panic)) {
    /* Lua panicked in a job: fail it, abandon the state, build a fresh one. */
    static const char msg[] = "pool worker: Lua panic (the worker was restarted)";
    set_error(j, msg, sizeof msg - 1);
    w->L = worker_state(w, "", "");
    pthread_mutex_lock(&p->mu);
    goto finished;
  }
  pthread_mutex_lock(&p->mu);
  for (;;) {
    wait_for_job(p, spin);
    if (p->stop || w->L == NULL) break;
    j = p->qhead;
    p->nqueued--;
    __atomic_store_n(&p->qhead, j->next, __ATOMIC_RELAXED);
    if (p->qhead) p->qhead->prev = NULL;
    else p->qtail = NULL;
    j->next = j->prev = NULL;
    __atomic_store_n(&j->state, J_RUNNING, __ATOMIC_RELAXED);
    j->reading = 1;
    w->busy = 1;
    p->nbusy++;
    pthread_mutex_unlock(&p->mu);
    run_job(w, j);
    pthread_mutex_lock(&p->mu);
  finished:
    spin = spin_ns(WORKER_SPIN_NS, j->ns);
    if (j->reading) { /* decoding failed before args_done */
      j->reading = 0;
      pthread_cond_broadcast(&p->rcv);
    }
    w->busy = 0;
    p->nbusy--;
    /* The done list is doubly linked: a polling caller takes its job out of the
     * middle (spin_for_result), and with 10,000 jobs in flight a walk from the head
     * made that quadratic. */
    j->next = NULL;
    j->prev = p->dtail;
    if (p->dtail) p->dtail->next = j;
    else p->dhead = j;
    p->dtail = j;
    /* Release: a caller polling the state sees the results written before it. */
    __atomic_store_n(&j->state, J_DONE, __ATOMIC_RELEASE);
    __atomic_add_fetch(&p->done_seq, 1, __ATOMIC_RELEASE);
    /* A caller polling for this result takes it itself (spin_for_result), so the
     * loop needs no wake-up. */
    notify = !j->caller_spinning;
    j = NULL;
    if (notify) {
      /* Outside the mutex: the write(2) on the eventfd would keep a polling caller
       * waiting for the mutex. Coalesced: one wake-up for a batch of results. */
      pthread_mutex_unlock(&p->mu);
      uv_async_send(&p->async);
      pthread_mutex_lock(&p->mu);
    }
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* ================= the loop side ================= */

static void prepare_cb(uv_prepare_t *h);
static void flush_staged(pool *p);

static void waiting_done(pool *p) {
  if (--p->waiting == 0) {
    uv_unref((uv_handle_t *)&p->async);
    uv_prepare_stop(&p->prepare);
  }
}

static void waiting_add(pool *p) {
  if (p->waiting++ == 0) {
    uv_ref((uv_handle_t *)&p->async);
    uv_prepare_start(&p->prepare, prepare_cb);
  }
}

static void async_cb(uv_async_t *a) {
  pool *p = a->data;
  job *list, *j;
  pthread_mutex_lock(&p->mu);
  list = p->dhead;
  p->dhead = p->dtail = NULL;
  pthread_mutex_unlock(&p->mu);
  while ((j = list) != NULL) {
    list = j->next;
    j->next = NULL;
    if (j->orphaned) {
      job_free(j);
    } else {
      lr_task *t = j->task;
      j->task = NULL;
      j->delivered = 1;
      j->prev = NULL;
      j->next = p->delivered;
      if (p->delivered) p->delivered->prev = j;
      p->delivered = j;
      waiting_done(p);
      lr_task_wake(t, LR_WAKE_DONE);
    }
  }
}

/* Stops a job still running at shutdown at its next Lua instruction. */
static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "the pool is shutting down");
}

static void free_pool_cb(uv_handle_t *h) {
  pool *p = h->data;
  if (--p->nclosing == 0) free(p);
}

static void free_list(job *j) {
  while (j) {
    job *next = j->next;
    job_free(j);
    j = next;
  }
}

/* Shutdown (the runtime's close): stop the workers, interrupting jobs that still
 * run, join them, close their states and free every job left. Tasks are not touched:
 * the runtime is going away with them. */
static void pool_close(lr_runtime *rt) {
  pool *p = find_pool(rt), **pp;
  unsigned i;
  if (p == NULL) return;
  for (pp = &pools; *pp != p; pp = &(*pp)->next_pool) {}
  *pp = p->next_pool;
  if (!p->started) {
    free(p);
    return;
  }
  pthread_mutex_lock(&p->mu);
  __atomic_store_n(&p->stop, 1, __ATOMIC_RELAXED);
  for (i = 0; i < p->nworkers; i++)
    if (p->workers[i].busy)
      lua_sethook(p->workers[i].L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  p->closing = 1;
  for (i = 0; i < p->nworkers; i++) {
    pthread_join(p->workers[i].th, NULL);
    if (p->workers[i].L) lua_close(p->workers[i].L);
    free(p->workers[i].rel);
  }
  free(p->workers);
  free_list(p->qhead);
  free_list(p->dhead);
  free_list(p->shead);
  free_list(p->delivered);
  while (p->free_jobs) {
    job *j = p->free_jobs;
    p->free_jobs = j->next;
    free(j);
  }
  pthread_cond_destroy(&p->cv);
  pthread_cond_destroy(&p->rcv);
  pthread_mutex_destroy(&p->mu);
  p->async.data = p;
  p->prepare.data = p;
  p->nclosing = 2;
  uv_close((uv_handle_t *)&p->async, free_pool_cb);
  uv_close((uv_handle_t *)&p->prepare, free_pool_cb);
}

/* Starts the workers on first use. Raises if not even one can start. */
static pool *pool_start(lua_State *L, lr_runtime *rt) {
  pool *p = get_pool(rt);
  const char *path, *cpath;
  unsigned i, n;
  int err = 0;
  pthread_attr_t attr;
  if (p == NULL) luaL_error(L, "run_in_pool: out of memory");
  if (p->started && p->nworkers == 0) /* an earlier start failed: see below */
    luaL_error(L, "run_in_pool: no worker thread could be started (out of memory?)");
  if (p->started) return p;
  lr_alloc_prime_malloc(); /* results come back as fresh strings: see alloc.c */
  p->ncores = (int)uv_available_parallelism();
  n = p->size ? p->size : default_size();
  /* Workers see the caller's module search paths. */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_getfield(L, -2, "cpath");
  path = lua_tostring(L, -2);
  cpath = lua_tostring(L, -1);
  p->workers = calloc(n, sizeof *p->workers);
  if (p->workers == NULL) luaL_error(L, "run_in_pool: out of memory");
  for (i = 0; i < n; i++) {
    worker *w = &p->workers[p->nworkers];
    w->p = p;
    w->id = p->nworkers + 1;
    w->limit = p->mem_limit;
    w->L = worker_state(w, path ? path : "", cpath ? cpath : "");
    if (w->L) p->nworkers++;
  }
  lua_pop(L, 3);
  if (p->nworkers == 0) {
    free(p->workers);
    p->workers = NULL;
    luaL_error(L, "run_in_pool: cannot create a Lua state for any worker (not enough memory)");
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  pthread_cond_init(&p->rcv, NULL);
  uv_async_init(&rt->loop, &p->async, async_cb);
  p->async.data = p;
  uv_unref((uv_handle_t *)&p->async);
  uv_prepare_init(&rt->loop, &p->prepare);
  p->prepare.data = p;
  uv_unref((uv_handle_t *)&p->prepare);
  p->started = 1;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 8u << 20); /* deep recursion in jobs, as in main */
  for (i = 0, n = p->nworkers; i < n; i++) {
    if ((err = pthread_create(&p->workers[i].th, &attr, worker_main, &p->workers[i])) != 0) {
      /* Keep the ones that started (they come first). */
      unsigned k;
      for (k = i; k < n; k++) lua_close(p->workers[k].L);
      p->nworkers = i;
      break;
    }
  }
  pthread_attr_destroy(&attr);
  if (p->nworkers == 0) {
    /* The pool stays started with no worker (its handles are live and closing them
     * is asynchronous), so later calls raise at once instead of queueing jobs that
     * nothing would run. glibc says EAGAIN when it cannot allocate the thread. */
    __atomic_store_n(&p->stop, 1, __ATOMIC_RELAXED);
    luaL_error(L, "run_in_pool: cannot start any worker thread: %s (out of memory or "
               "threads)", strerror(err));
  }
  return p;
}

/* Pushes the results of finished job j (or raises its error) and frees j. */
static int finish_job(lua_State *L, job *j) {
  lr_copybuf *box;
  int ok, top, n;
  pool *p = j->p;
  worker *w = j->w;
  if (j->delivered) {
    if (j->prev) j->prev->next = j->next;
    else p->delivered = j->next;
    if (j->next) j->next->prev = j->prev;
    j->next = j->prev = NULL;
    j->delivered = 0;
  }
  /* Long result strings are read where they are, in the worker's state: the anchor
   * that keeps them alive goes back to the worker only once they are decoded (the
   * worker unrefs it before its next job, and a collection there frees them). A
   * raise while decoding leaves it anchored until the pool closes. */
  int anchor = j->out_anchor;
  j->out_anchor = 0;
  p->job_ns = (3 * p->job_ns + j->ns) / 4;
  ok = j->status == J_OK;
  if (ok && j->out.where == LR_BUF_BORROWED) {
    /* Small results, in the job: decode a copy on the C stack, so a raise while
     * decoding (out of memory) leaves nothing to free. */
    char tmp[JOB_INLINE];
    size_t len = j->out.n;
    memcpy(tmp, j->out.p, len);
    job_free(j);
    n = lr_copy_decode(L, tmp, len);
    give_anchor_back(p, w, anchor);
    return n;
  }
  /* Move the output into a box the collector frees, should decoding raise. */
  box = lr_copybuf_push(L);
  top = lua_gettop(L);
  *box = j->out;
  memset(&j->out, 0, sizeof j->out);
  job_free(j);
  if (!ok) {
    give_anchor_back(p, w, anchor);
    if (box->p == NULL) return luaL_error(L, "run_in_pool: out of memory in the worker");
    lua_pushlstring(L, box->p, box->n);
    lr_copybuf_free(box);
    return lua_error(L);
  }
  n = lr_copy_decode(L, box->p, box->n);
  give_anchor_back(p, w, anchor);
  lr_copybuf_free(box);
  lua_remove(L, top);
  return n;
}

static int pool_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = (lr_task *)ctx;
  job *j;
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L); /* job handled */
  j = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return finish_job(L, j);
}

/* When a worker is free and recent jobs were short, wait a few microseconds for the
 * result instead of parking: a park costs a trip through the loop, more than a
 * trivial job. Only when no other task is ready (lr_sched_busy), and kept short
 * (longer waits are left to prepare_cb, which runs only when the loop has nothing
 * else to do). Returns 1 if j is done (and taken
 * off the done list), 0 to park as usual. */
static int spin_for_result(pool *p, job *j) {
  uint64_t until = uv_hrtime() + CALLER_SPIN_NS;
  int i = 0, done;
  while (__atomic_load_n(&j->state, __ATOMIC_ACQUIRE) != J_DONE) {
    if (poll_step(&i, until)) break;
  }
  /* Under the mutex, the worker either has finished (and skipped the wake-up, since
   * caller_spinning was set: take the job here) or will see caller_spinning == 0. */
  pthread_mutex_lock(&p->mu);
  j->caller_spinning = 0;
  done = j->state == J_DONE;
  if (done) {
    if (j->prev) j->prev->next = j->next;
    else p->dhead = j->next;
    if (j->next) j->next->prev = j->prev;
    else p->dtail = j->prev;
    j->next = j->prev = NULL;
  }
  pthread_mutex_unlock(&p->mu);
  return done;
}

/* Runs when the loop is about to block in epoll while some task waits on the pool.
 * If no task is ready and recent jobs were short, poll for the next result instead:
 * the worker's uv_async_send then finds the loop thread awake, and epoll returns at
 * once instead of after a sleeping thread's wake-up (50-100 us on a VM, as long as
 * copying 1 MB twice). Timers and I/O wait at most SPIN_MAX_NS for it. */
static void prepare_cb(uv_prepare_t *h) {
  pool *p = h->data;
  lr_runtime *rt = p->rt;
  uint64_t until;
  unsigned seq;
  int i = 0, any;
  flush_staged(p); /* the scheduler's turn is over */
  if (rt->ready.head || p->job_ns * 2 + LOOP_SPIN_NS > SPIN_MAX_NS) return;
  pthread_mutex_lock(&p->mu);
  /* Done already (the async handle is pending), or no core free for polling. */
  any = p->dhead != NULL || p->nbusy + 1 > p->ncores;
  seq = p->done_seq;
  pthread_mutex_unlock(&p->mu);
  if (any) return;
  until = uv_hrtime() + spin_ns(LOOP_SPIN_NS, p->job_ns);
  while (__atomic_load_n(&p->done_seq, __ATOMIC_ACQUIRE) == seq) {
    if (poll_step(&i, until)) break;
  }
}

/* Stages job j (loop thread): it waits with the others for flush_staged. */
static void stage(pool *p, job *j) {
  j->state = J_STAGED;
  j->next = NULL;
  j->prev = p->stail;
  if (p->stail) p->stail->next = j;
  else p->shead = j;
  p->stail = j;
  p->nstaged++;
}

/* Moves every staged job to the queue and wakes the workers they need (p->mu held,
 * loop thread). */
static void queue_staged_locked(pool *p) {
  job *j, *first = p->shead;
  int n = 0;
  if (first == NULL) return;
  for (j = first; j; j = j->next) {
    j->state = J_QUEUED;
    n++;
  }
  first->prev = p->qtail;
  if (p->qtail) p->qtail->next = first;
  else __atomic_store_n(&p->qhead, first, __ATOMIC_RELAXED);
  p->qtail = p->stail;
  p->shead = p->stail = NULL;
  p->nstaged = 0;
  /* Each polling worker takes one queued job before it can sleep; wake a sleeping
   * worker for every job beyond those. (Signalling only when no worker polled left
   * a race: jobs queued together while one worker polled, and it was descheduled,
   * would all wait for that one worker.) */
  p->nqueued += n;
  if (p->nqueued <= p->nspinning) return;
  if (p->nqueued - p->nspinning == 1) pthread_cond_signal(&p->cv);
  else pthread_cond_broadcast(&p->cv);
}

/* Hands the staged jobs to the workers (loop thread). */
static void flush_staged(pool *p) {
  if (p->shead == NULL) return;
  pthread_mutex_lock(&p->mu);
  queue_staged_locked(p);
  pthread_mutex_unlock(&p->mu);
}

static void pool_cancel(lr_task *t) {
  job *j = container_of(t->inq, job, q);
  pool *p = j->p;
  int dequeued = 0;
  if (__atomic_load_n(&j->state, __ATOMIC_RELAXED) == J_STAGED) { /* ours alone */
    if (j->prev) j->prev->next = j->next;
    else p->shead = j->next;
    if (j->next) j->next->prev = j->prev;
    else p->stail = j->prev;
    p->nstaged--;
    j->task = NULL;
    waiting_done(p);
    lr_task_wake(t, LR_WAKE_CANCELLED);
    job_free(j);
    return;
  }
  pthread_mutex_lock(&p->mu);
  /* The worker may be reading strings on this task's stack: let it finish (one copy). */
  while (j->reading) pthread_cond_wait(&p->rcv, &p->mu);
  if (j->state == J_QUEUED) {
    if (j->prev) j->prev->next = j->next;
    else __atomic_store_n(&p->qhead, j->next, __ATOMIC_RELAXED);
    if (j->next) j->next->prev = j->prev;
    else p->qtail = j->prev;
    p->nqueued--;
    dequeued = 1;
  }
  pthread_mutex_unlock(&p->mu);
  j->task = NULL;
  waiting_done(p);
  lr_task_wake(t, LR_WAKE_CANCELLED); /* unlinks t from j->q: before any free */
  if (dequeued) job_free(j);          /* never started */
  else j->orphaned = 1;               /* running or done: async_cb frees it */
}

int lr_pool_call(lua_State *L, lr_task *t, int kind, lr_copybuf *code, lr_copybuf *args) {
  pool *p = pool_start(L, t->rt);
  job *j = job_new(p);
  int spin;
  if (j == NULL) return luaL_error(L, "run_in_pool: out of memory");
  if (lr_observed(t->rt)) {
    lr_wait_desc d = {"pool", "run_in_pool", 0, 0, 0, {{0}}};
    lr_wait_str(&d, "function", kind == LR_POOL_NAME ? code->p : "(function)");
    lr_hooks_wait(t->rt, t, &d);
  }
  j->p = p;
  j->kind = kind;
  j->task = t;
  j->code = *code;
  j->in = *args;
  memset(code, 0, sizeof *code);
  memset(args, 0, sizeof *args);
  stage(p, j);
  if (lr_sched_busy(t->rt)) {
    /* Other tasks run before the loop polls: the job goes with theirs. */
    if (p->nstaged >= STAGE_MAX) flush_staged(p);
    lua_pushlightuserdata(L, j);         /* for the continuation */
    lr_waitq_push(&j->q, t);
    waiting_add(p);
    return lr_task_park(L, t, pool_cancel, (lua_KContext)t, pool_k);
  }
  pthread_mutex_lock(&p->mu);
  queue_staged_locked(p);
  /* Poll only if a worker and a core are free for the job (see wait_for_job). */
  spin = p->qhead == j && p->nbusy < (int)p->nworkers && p->nbusy + 2 <= p->ncores &&
         p->job_ns < CALLER_SPIN_NS;
  j->caller_spinning = spin;
  pthread_mutex_unlock(&p->mu);
  if (spin && spin_for_result(p, j)) {
    if (lr_observed(t->rt)) { /* the wait ended without parking */
      lr_wait_desc d = {"pool", "run_in_pool", 0, 0, 0, {{0}}};
      lr_hooks_wait_end(t->rt, t, &d);
    }
    j->task = NULL;
    return finish_job(L, j);
  }
  lua_pushlightuserdata(L, j);         /* for the continuation */
  lr_waitq_push(&j->q, t);
  waiting_add(p);
  return lr_task_park(L, t, pool_cancel, (lua_KContext)t, pool_k);
}
