/* db_sqlite.c: SQLite connections, each with a thread of its own, and the hand-over of
 * statements between tasks and those threads (db_sqlite_run.c says what a thread does
 * with one).
 *
 * Why a thread per connection: SQLite blocks (disk, locks, busy waits), and a
 * connection with its statements must be used by one thread at a time; opened
 * NOMUTEX and only ever touched by its thread, it needs no lock of SQLite's.
 *
 * A job's life:
 *   loop thread: the caller fills the job and sends it. While other tasks are ready
 *   it is staged on its connection and goes with theirs in one push, at the end of
 *   the scheduler's turn (prepare_cb) or by STAGE_MAX. Otherwise it is pushed at once
 *   and, if the connection had nothing else to do, the caller polls for the result
 *   (a trip through the loop costs more than a short statement).
 *   thread: takes everything queued in one exchange, runs it in order, and marks each
 *   job done. A job the caller polls for is then the caller's again; any other goes
 *   onto the hub's done stack, and uv_async_send wakes the loop.
 *   loop thread (async_cb): wakes each job's task, whose continuation reads the
 *   result and gives the job back; a job nobody waits for is given back there.
 *
 * The queues between the threads are stacks pushed with compare-and-swap and taken
 * whole with an exchange (then reversed): a statement costs no lock in the common
 * case. The thread polls its queue for THREAD_SPIN_NS after its last job before it
 * sleeps on its condition variable (a futex wake-up costs 40-100 us on a VM, 50 times
 * a point select); the loop thread, about to block in epoll while tasks wait for
 * short statements, polls the done stack for LOOP_SPIN_NS. Polls offer the core to
 * other threads every few microseconds, and none happens on a single core.
 *
 * Jobs are reused (FREE_JOBS_MAX kept), with inline buffers for small parameters and
 * results: no malloc per statement in the common case.
 *
 * Cancelling a task whose job runs stops the statement: orphaning it instead would
 * leave a slow query (a runaway recursive CTE) holding the connection for as long as
 * it runs, and every later statement behind it. The cancel hook only sets the job's
 * cancelled flag; the thread's own progress handler (every 1000 virtual machine
 * steps) and busy handler (between waits for a lock) read it and stop that statement,
 * which fails with SQLITE_INTERRUPT. sqlite3_interrupt from the loop thread would do
 * the same but needs a lock around every job (the connection must not close under
 * it, and it must not hit the next job), and its flag outlives the statement while
 * another (a cursor's) is active. An interrupted write inside a transaction rolls
 * the transaction back (SQLite's rule); the transaction's owner is the task being
 * cancelled, whose <close> sends ROLLBACK anyway. A job cancelled before it runs is
 * skipped.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include "lr_sqlite.h"

/* job->flag: who takes the result. */
enum { F_SPIN = 0,   /* the caller polls for it */
       F_PARKED,     /* the loop gets it through the done stack */
       F_DONE };     /* finished */

#define STAGE_MAX 64         /* staged jobs pushed early, by this many */
#define FREE_JOBS_MAX 256    /* jobs kept for reuse */
#define BUF_KEEP (16 * 1024) /* heap buffers a reused job keeps (256 jobs: 8 MB at most) */
#define THREAD_SPIN_NS 60000 /* the thread polls for its next job this long */
#define CALLER_SPIN_NS 30000 /* a caller polls for its result at most this long */
#define LOOP_SPIN_NS 20000   /* the loop polls before blocking, at most this long */
#define BACKOFF_MAX 64       /* a poll that came back empty pauses polling this many
                              * sends at most (doubling from 1) */

struct lr_sqlite_hub {
  lr_sqlite_hub *next_hub;
  lr_runtime *rt;
  uv_async_t async;          /* referenced while a task waits (waiting > 0) */
  uv_prepare_t prepare;      /* flushes the staged jobs; active while any exist or a
                              * task waits */
  int prepare_on;
  lr_sqlite_job *done;       /* atomic: finished jobs for the loop, newest first */
  lr_sqlite_job *all;        /* every job allocated, for the runtime's close */
  lr_sqlite_job *free_jobs;
  int nfree;
  lr_sqlite *conns;          /* every connection not yet freed */
  lr_sqlite *dirty;          /* connections that have staged jobs */
  size_t waiting;            /* jobs whose task is parked */
  int loop_skip, loop_backoff; /* prepare_cb's polls, paused as a caller's are */
  int spin_ok;               /* more than one core: polling can pay */
  int nclosing;
};

/* Hubs by runtime (usually one): touched only on loop threads. */
static lr_sqlite_hub *hubs;

static void async_cb(uv_async_t *a);
static void prepare_cb(uv_prepare_t *p);
static void hub_close(lr_runtime *rt);

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* One step of a polling loop that may last ns; 1 once the time is up. Every 64 pauses
 * it reads the clock (the first time, to start counting: a result that comes within
 * those costs no clock read) and offers the core to another runnable thread (pool.c's
 * poll_step: on a busy machine the thread we wait for may be queued behind us). */
static int poll_step(int *i, uint64_t *until, uint64_t ns) {
  cpu_relax();
  if ((++*i & 63) != 0) return 0;
  if (*until == 0) *until = uv_hrtime() + ns;
  else if (uv_hrtime() > *until) return 1;
  sched_yield();
  return 0;
}

/* After a poll that came back empty, the next ones wait: 1, 2, 4... sends. */
static void backoff(int *skip, int *pause) {
  *pause = *pause ? (*pause * 2 > BACKOFF_MAX ? BACKOFF_MAX : *pause * 2) : 1;
  *skip = *pause;
}

/* ================= buffers and jobs ================= */

int lr_sqbuf_grow(lr_sqbuf *b, size_t need) {
  size_t cap = b->cap * 2;
  char *np;
  if (need > SIZE_MAX / 2 - b->n) return -1;
  if (cap < b->n + need) cap = b->n + need;
  if (b->p == b->inl) {
    if ((np = malloc(cap)) == NULL) return -1;
    memcpy(np, b->p, b->n);
  } else if ((np = realloc(b->p, cap)) == NULL) {
    return -1;
  }
  b->p = np;
  b->cap = cap;
  return 0;
}

static void buf_init(lr_sqbuf *b, char *inl, size_t cap) {
  b->p = b->inl = inl;
  b->cap = b->inl_cap = cap;
  b->n = 0;
}

static void buf_free(lr_sqbuf *b) {
  if (b->p != b->inl) free(b->p);
  b->p = b->inl;
  b->cap = b->inl_cap;
  b->n = 0;
}

/* Empties b, keeping a heap block unless it is large. */
static void buf_reset(lr_sqbuf *b) {
  if (b->p != b->inl && b->cap > BUF_KEEP) buf_free(b);
  b->n = 0;
}

static void job_clear(lr_sqlite_job *j, lr_sqlite *c, int op, const char *fname) {
  j->next = NULL;
  j->q.head = NULL;
  j->task = NULL;
  j->c = c;
  j->fname = fname;
  j->owner = NULL;
  j->op = op;
  j->flag = F_PARKED;
  j->cancelled = 0;
  j->staged = 0;
  j->in.n = j->out.n = 0;
  j->stmt = NULL;
  j->rc = 0;
  j->kind = NULL;
  j->code[0] = '\0';
  j->constraint_off = j->constraint_len = 0;
  j->changes = j->last_id = 0;
  j->nrows = 0;
  j->more = 0;
}

static void conn_free(lr_sqlite *c) {
  lr_sqlite_hub *h = c->hub;
  if (h) {
    if (c->prev) c->prev->next = c->next;
    else h->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->dirty) { /* staged once, flushed since (by a direct send) */
      lr_sqlite **pp;
      for (pp = &h->dirty; *pp != c; pp = &(*pp)->next_dirty) {}
      *pp = c->next_dirty;
    }
  }
  buf_free(&c->closejob.in);
  buf_free(&c->closejob.out);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c->path);
  free(c);
}

/* Frees c once neither its Lua object nor any job refers to it. */
static void maybe_free(lr_sqlite *c) {
  if (c->ud || c->njobs > 0 || (c->started && !c->joined)) return;
  conn_free(c);
}

static void join(lr_sqlite *c) {
  if (c->started && !c->joined) {
    pthread_join(c->th, NULL);
    c->joined = 1;
  }
}

lr_sqlite_job *lr_sqlite_job_get(lr_sqlite *c, int op, const char *fname) {
  lr_sqlite_hub *h = c->hub;
  lr_sqlite_job *j;
  if (h == NULL) return NULL;
  if ((j = h->free_jobs) != NULL) {
    h->free_jobs = j->next;
    h->nfree--;
  } else {
    if ((j = aligned_alloc(64, sizeof *j)) == NULL) return NULL;
    memset(j, 0, sizeof *j);
    buf_init(&j->in, j->inl_in, sizeof j->inl_in);
    buf_init(&j->out, j->inl_out, sizeof j->inl_out);
    j->all_next = h->all;
    if (h->all) h->all->all_prev = j;
    h->all = j;
  }
  job_clear(j, c, op, fname);
  c->njobs++;
  return j;
}

void lr_sqlite_job_put(lr_sqlite_job *j) {
  lr_sqlite *c = j->c;
  lr_sqlite_hub *h = c->hub;
  /* The close job is done when the thread has closed the database and is returning:
   * the join waits microseconds at most. */
  if (j->op == LR_SQ_CLOSE) join(c);
  c->njobs--;
  if (!j->embedded) {
    buf_reset(&j->in);
    buf_reset(&j->out);
    if (h->nfree < FREE_JOBS_MAX) {
      j->next = h->free_jobs;
      h->free_jobs = j;
      h->nfree++;
    } else {
      if (j->all_prev) j->all_prev->all_next = j->all_next;
      else h->all = j->all_next;
      if (j->all_next) j->all_next->all_prev = j->all_prev;
      buf_free(&j->in);
      buf_free(&j->out);
      free(j);
    }
  }
  maybe_free(c);
}

/* ================= the connection's thread ================= */

/* Waits for jobs (polling first when spin) and takes them all, oldest first. */
static lr_sqlite_job *take_jobs(lr_sqlite *c, int spin) {
  lr_sqlite_job *list, *rev = NULL, *next;
  uint64_t until = 0;
  int i = 0;
  if (spin)
    while (__atomic_load_n(&c->head, __ATOMIC_RELAXED) == NULL)
      if (poll_step(&i, &until, THREAD_SPIN_NS)) break;
  if (__atomic_load_n(&c->head, __ATOMIC_RELAXED) == NULL) {
    /* sleeping, then head: push_chain writes them in the other order, and one of
     * the two sides sees the other's write (both sequentially consistent). */
    pthread_mutex_lock(&c->mu);
    __atomic_store_n(&c->sleeping, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&c->head, __ATOMIC_SEQ_CST) == NULL)
      pthread_cond_wait(&c->cv, &c->mu);
    __atomic_store_n(&c->sleeping, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&c->mu);
  }
  list = __atomic_exchange_n(&c->head, NULL, __ATOMIC_ACQUIRE);
  for (; list; list = next) {
    next = list->next;
    list->next = rev;
    rev = list;
  }
  return rev;
}

/* Hands finished job j to whoever takes it. j is not the thread's after this. */
static void complete(lr_sqlite_hub *h, lr_sqlite *c, lr_sqlite_job *j) {
  lr_sqlite_job *old;
  (void)c;
  if (__atomic_exchange_n(&j->flag, F_DONE, __ATOMIC_ACQ_REL) == F_SPIN) return;
  old = __atomic_load_n(&h->done, __ATOMIC_RELAXED);
  do {
    j->next = old;
  } while (!__atomic_compare_exchange_n(&h->done, &old, j, 1, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED));
  uv_async_send(&h->async); /* coalesced by libuv while one is pending */
}

static void run_one(lr_sqlite *c, lr_sqlite_job *j) {
  if (__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
    lr_sqlite_set_error(j, LR_SQ_CLOSED, "closed", "the connection is closed");
    return;
  }
  if (__atomic_load_n(&j->cancelled, __ATOMIC_RELAXED)) {
    j->rc = LR_SQ_SKIPPED;
    return;
  }
  c->running = j;
  lr_sqlite_run(c, j);
  c->running = NULL;
  /* A cursor's batch whose task was cancelled meanwhile: reset its statement now
   * rather than when the loop finds the orphan (its read transaction pins the WAL). */
  if (j->more && __atomic_load_n(&j->cancelled, __ATOMIC_RELAXED)) {
    j->op = LR_SQ_RESET;
    lr_sqlite_run(c, j);
    j->more = 0;
  }
}

static void *conn_main(void *arg) {
  lr_sqlite *c = arg;
  lr_sqlite_hub *h = c->hub; /* stays until the runtime has joined us */
  int spin = h->spin_ok, closing = 0;
  pthread_setname_np(pthread_self(), "luarun-sqlite");
  while (!closing) {
    lr_sqlite_job *j = take_jobs(c, spin), *next;
    for (; j; j = next) {
      next = j->next;
      if (j->op == LR_SQ_CLOSE) {
        /* The last job: the loop sends nothing after it. */
        lr_sqlite_run_close(c);
        closing = 1;
      } else {
        run_one(c, j);
      }
      complete(h, c, j);
    }
  }
  return NULL;
}

/* ================= the loop side ================= */

static void waiting_add(lr_sqlite_hub *h) {
  if (h->waiting++ == 0) uv_ref((uv_handle_t *)&h->async);
  if (!h->prepare_on) {
    uv_prepare_start(&h->prepare, prepare_cb);
    h->prepare_on = 1;
  }
}

static void waiting_done(lr_sqlite_hub *h) {
  if (--h->waiting == 0) uv_unref((uv_handle_t *)&h->async);
}

/* Gives the thread the chain newest..oldest of n jobs. */
static void push_chain(lr_sqlite *c, lr_sqlite_job *newest, lr_sqlite_job *oldest, int n) {
  lr_sqlite_job *old;
  c->inflight += n;
  old = __atomic_load_n(&c->head, __ATOMIC_RELAXED);
  do {
    oldest->next = old;
  } while (!__atomic_compare_exchange_n(&c->head, &old, newest, 1, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED));
  if (__atomic_load_n(&c->sleeping, __ATOMIC_SEQ_CST)) {
    pthread_mutex_lock(&c->mu);
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
  }
}

static void flush(lr_sqlite *c) {
  lr_sqlite_job *j;
  if (c->shead == NULL) return;
  for (j = c->shead; j; j = j->next) j->staged = 0;
  push_chain(c, c->shead, c->stail, c->nstaged);
  c->shead = c->stail = NULL;
  c->nstaged = 0;
}

static void stage(lr_sqlite *c, lr_sqlite_job *j) {
  lr_sqlite_hub *h = c->hub;
  j->staged = 1;
  j->next = c->shead;
  c->shead = j;
  if (c->stail == NULL) c->stail = j;
  c->nstaged++;
  if (!c->dirty) {
    c->dirty = 1;
    c->next_dirty = h->dirty;
    h->dirty = c;
  }
  if (!h->prepare_on) {
    uv_prepare_start(&h->prepare, prepare_cb);
    h->prepare_on = 1;
  }
}

static void unstage(lr_sqlite *c, lr_sqlite_job *j) {
  lr_sqlite_job **pp, *prev = NULL;
  for (pp = &c->shead; *pp != j; pp = &(*pp)->next) prev = *pp;
  *pp = j->next;
  if (c->stail == j) c->stail = prev;
  c->nstaged--;
  j->staged = 0;
  j->next = NULL;
}

/* Polls for j's result; 1 if it came (j is the caller's), 0 if the caller must park
 * (the thread will put j on the done stack). */
static int spin_for(lr_sqlite_job *j) {
  uint64_t until = 0;
  int i = 0, old = F_SPIN;
  while (__atomic_load_n(&j->flag, __ATOMIC_ACQUIRE) != F_DONE) {
    if (poll_step(&i, &until, CALLER_SPIN_NS)) {
      if (__atomic_compare_exchange_n(&j->flag, &old, F_PARKED, 0, __ATOMIC_ACQ_REL,
                                      __ATOMIC_ACQUIRE))
        return 0;
      return 1; /* done meanwhile */
    }
  }
  return 1;
}

int lr_sqlite_send(lr_sqlite_job *j, lr_task *t) {
  lr_sqlite *c = j->c;
  lr_sqlite_hub *h = c->hub;
  int spin;
  j->task = t;
  j->inp = j->in.p;
  if (j->op == LR_SQ_CLOSE) __atomic_store_n(&c->stop, 1, __ATOMIC_SEQ_CST);
  if (t == NULL || lr_sched_busy(h->rt)) {
    /* Other tasks run before the loop polls: the job goes with theirs. A job nobody
     * waits for goes at once when nothing else will run (the loop may be about to
     * end, and a cursor's reset must not wait for the next run). */
    j->flag = F_PARKED;
    stage(c, j);
    if (c->nstaged >= STAGE_MAX || j->op == LR_SQ_CLOSE || !lr_sched_busy(h->rt)) flush(c);
    return 0;
  }
  /* Poll only for a job that runs at once (nothing queued before it) and is likely
   * short (the last poll was not in vain, or enough sends have passed since). */
  spin = h->spin_ok && c->shead == NULL && c->inflight == 0;
  if (spin && c->spin_skip > 0) {
    c->spin_skip--;
    spin = 0;
  }
  j->flag = spin ? F_SPIN : F_PARKED;
  stage(c, j);
  flush(c);
  if (!spin) return 0;
  if (spin_for(j)) {
    c->inflight--;
    c->spin_backoff = 0;
    return 1;
  }
  backoff(&c->spin_skip, &c->spin_backoff);
  return 0;
}

static lr_sqlite_job *job_of(lr_task *t) {
  return container_of(t->inq, lr_sqlite_job, q);
}

static void describe(lua_State *L, lr_task *t) {
  lr_sqlite_job *j = job_of(t);
  lua_pushfstring(L, "SQLite %s", j->fname);
}

static void cancel(lr_task *t) {
  lr_sqlite_job *j = job_of(t);
  lr_sqlite *c = j->c;
  j->task = NULL;
  waiting_done(c->hub);
  if (j->staged && j->op == LR_SQ_FETCH) {
    /* the cursor's statement came with it and holds a read transaction: it goes to
     * the thread to be reset instead (finish_orphan then gives the job back) */
    j->op = LR_SQ_RESET;
    j->more = 0;
    lr_task_wake(t, LR_WAKE_CANCELLED);
    return;
  }
  if (j->staged && j->op != LR_SQ_CLOSE) { /* the thread never saw it */
    unstage(c, j);
    lr_task_wake(t, LR_WAKE_CANCELLED);
    lr_sqlite_job_put(j);
    return;
  }
  /* Skipped if not started; stopped by the thread's handlers if running. */
  __atomic_store_n(&j->cancelled, 1, __ATOMIC_RELAXED);
  lr_task_wake(t, LR_WAKE_CANCELLED); /* the result goes to async_cb, which drops it */
}

int lr_sqlite_park(lua_State *L, lr_task *t, lr_sqlite_job *j, lua_KFunction k) {
  if (lr_observed(t->rt)) {
    lr_wait_desc d = {"sqlite", j->fname, 0, 0, 0, {{0}}};
    if (j->in.n > 4) lr_wait_str(&d, "sql", j->in.p + 4);
    lr_hooks_wait(t->rt, t, &d);
  }
  lr_waitq_push(&j->q, t);
  waiting_add(j->c->hub);
  return lr_task_park_on(L, t, cancel, describe, (lua_KContext)j, k);
}

/* A finished job nobody waits for: dropped, except that a cursor's statement left
 * open by a cancelled fetch is reset (it would hold a read transaction, pinning the
 * WAL, for as long as the connection lives). */
static void finish_orphan(lr_sqlite_job *j) {
  lr_sqlite *c = j->c;
  if (!c->closed && ((j->op == LR_SQ_CURSOR && j->more) ||
                     (j->op == LR_SQ_FETCH && (j->more || j->rc == LR_SQ_SKIPPED)))) {
    j->op = LR_SQ_RESET;
    j->more = 0;
    j->rc = 0;
    j->cancelled = 0;
    lr_sqlite_send(j, NULL);
    return;
  }
  lr_sqlite_job_put(j);
}

static void async_cb(uv_async_t *a) {
  lr_sqlite_hub *h = a->data;
  lr_sqlite_job *list = __atomic_exchange_n(&h->done, NULL, __ATOMIC_ACQUIRE), *rev = NULL;
  lr_sqlite_job *j, *next;
  for (j = list; j; j = next) {
    next = j->next;
    j->next = rev;
    rev = j;
  }
  for (j = rev; j; j = next) {
    lr_task *t = j->task;
    next = j->next;
    j->next = NULL;
    j->c->inflight--;
    if (t) {
      j->task = NULL;
      waiting_done(h);
      lr_task_wake(t, LR_WAKE_DONE);
    } else {
      finish_orphan(j);
    }
  }
}

/* End of the scheduler's turn (the loop is about to poll): push the staged jobs, and
 * if tasks wait for short statements and none is ready, poll briefly for a result
 * before the loop blocks: the thread's uv_async_send then finds the loop awake. */
static void prepare_cb(uv_prepare_t *p) {
  lr_sqlite_hub *h = p->data;
  lr_sqlite *c;
  uint64_t until = 0;
  int i = 0;
  while ((c = h->dirty) != NULL) {
    h->dirty = c->next_dirty;
    c->dirty = 0;
    flush(c);
  }
  if (h->waiting == 0) {
    uv_prepare_stop(p);
    h->prepare_on = 0;
    return;
  }
  if (!h->spin_ok || h->rt->ready.head || __atomic_load_n(&h->done, __ATOMIC_RELAXED))
    return;
  if (h->loop_skip > 0) {
    h->loop_skip--;
    return;
  }
  while (__atomic_load_n(&h->done, __ATOMIC_RELAXED) == NULL) {
    if (poll_step(&i, &until, LOOP_SPIN_NS)) {
      backoff(&h->loop_skip, &h->loop_backoff);
      return;
    }
  }
  h->loop_backoff = 0;
}

static lr_sqlite_hub *hub_get(lr_runtime *rt) {
  lr_sqlite_hub *h;
  for (h = hubs; h; h = h->next_hub)
    if (h->rt == rt) return h;
  if ((h = calloc(1, sizeof *h)) == NULL) return NULL;
  h->rt = rt;
  h->spin_ok = uv_available_parallelism() > 1;
  uv_async_init(&rt->loop, &h->async, async_cb);
  h->async.data = h;
  uv_unref((uv_handle_t *)&h->async);
  uv_prepare_init(&rt->loop, &h->prepare);
  h->prepare.data = h;
  uv_unref((uv_handle_t *)&h->prepare);
  h->next_hub = hubs;
  hubs = h;
  lr_runtime_on_close(rt, hub_close);
  return h;
}

lr_sqlite *lr_sqlite_new(lr_runtime *rt, const char *path, int readonly, int busy_ms,
                         lr_sqlite_job **open, const char **err) {
  static char load_err[256]; /* the loop thread's only: one message at a time */
  lr_sqlite_hub *h;
  lr_sqlite *c;
  int rc;
  if (lr_sqlite_load(load_err, sizeof load_err) != 0) {
    *err = load_err;
    return NULL;
  }
  h = hub_get(rt);
  *err = "out of memory";
  if (h == NULL || (c = aligned_alloc(64, sizeof *c)) == NULL) return NULL;
  memset(c, 0, sizeof *c);
  if ((c->path = strdup(path)) == NULL) {
    free(c);
    return NULL;
  }
  c->hub = h;
  c->readonly = readonly;
  c->busy_ms = busy_ms;
  c->ud = 1;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  buf_init(&c->closejob.in, c->closejob.inl_in, sizeof c->closejob.inl_in);
  buf_init(&c->closejob.out, c->closejob.inl_out, sizeof c->closejob.inl_out);
  c->closejob.embedded = 1;
  c->next = h->conns;
  if (h->conns) h->conns->prev = c;
  h->conns = c;
  if ((*open = lr_sqlite_job_get(c, LR_SQ_OPEN, "open")) == NULL) {
    c->ud = 0;
    conn_free(c);
    return NULL;
  }
  if ((rc = pthread_create(&c->th, NULL, conn_main, c)) != 0) {
    *err = rc == EAGAIN ? "cannot start a thread for the connection (out of memory, or too many "
                          "threads)"
                        : "cannot start a thread for the connection";
    c->ud = 0;
    lr_sqlite_job_put(*open); /* frees c */
    *open = NULL;
    return NULL;
  }
  c->started = 1;
  return c;
}

lr_sqlite_job *lr_sqlite_close_job(lr_sqlite *c) {
  lr_sqlite_job *j = &c->closejob;
  if (c->closed) return NULL;
  c->closed = 1;
  job_clear(j, c, LR_SQ_CLOSE, "close");
  c->njobs++;
  return j;
}

void lr_sqlite_close_now(lr_sqlite *c) {
  lr_sqlite_job *j = lr_sqlite_close_job(c);
  if (j) lr_sqlite_send(j, NULL);
  join(c); /* async_cb gives the close job back later */
}

void lr_sqlite_drop(lr_sqlite *c) {
  if (c->hub) lr_sqlite_close_now(c);
  c->ud = 0;
  maybe_free(c);
}

static void free_hub_cb(uv_handle_t *handle) {
  lr_sqlite_hub *h = handle->data;
  if (--h->nclosing == 0) free(h);
}

/* The runtime closes: stop and join every thread, free every job. Tasks are not
 * touched (they go with the runtime); Lua objects still holding a connection keep
 * it, closed, until their __gc. */
static void hub_close(lr_runtime *rt) {
  lr_sqlite_hub *h, **hp;
  lr_sqlite *c, *next;
  lr_sqlite_job *j;
  for (hp = &hubs; *hp && (*hp)->rt != rt; hp = &(*hp)->next_hub) {}
  if ((h = *hp) == NULL) return;
  *hp = h->next_hub;
  for (c = h->conns; c; c = c->next) {
    if (!c->started || c->joined) continue;
    __atomic_store_n(&c->stop, 1, __ATOMIC_SEQ_CST);
    if (!c->closed) {
      c->closed = 1;
      job_clear(&c->closejob, c, LR_SQ_CLOSE, "close");
      stage(c, &c->closejob);
    }
    flush(c);
  }
  for (c = h->conns; c; c = c->next) join(c);
  while ((j = h->all) != NULL) {
    h->all = j->all_next;
    buf_free(&j->in);
    buf_free(&j->out);
    free(j);
  }
  for (c = h->conns; c; c = next) {
    next = c->next;
    c->hub = NULL;
    c->njobs = 0;
    c->shead = c->stail = NULL;
    c->next = c->prev = NULL;
    if (!c->ud) conn_free(c);
  }
  h->nclosing = 2;
  uv_close((uv_handle_t *)&h->async, free_hub_cb);
  uv_close((uv_handle_t *)&h->prepare, free_hub_cb);
}
