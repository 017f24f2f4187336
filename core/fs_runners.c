/* fs_runners.c: the file runners, threads of luarun's own that run the jobs of
 * fs_job.c (read_file, write_file, fs.open's open), and the queue that feeds them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "lr_subsys.h"

/* ---- the job queue: runner threads of our own ----
 *
 * Jobs are not handed to a thread one by one: each hand-over costs a wake-up of a
 * runner and one of the loop, and 2,000 small reads would spend more on those
 * (futexes, eventfd, epoll; worse on a loaded machine) than on their system calls.
 * Instead:
 * - start_job only stages a request (loop thread, no lock). Just before the loop
 *   polls (q->prep, after the scheduler has run every ready task), the staged ones
 *   join the queue in one go, and idle runners are woken (or started) for them:
 *   runners take requests from the queue until it is empty, at most max_runners()
 *   of them working at once.
 * - Runners hand finished requests back through the done list. The loop is told
 *   (q->async) when BATCH are waiting or the oldest has waited LATENCY_NS, before a
 *   job that may take long (a large file, an fsync), and when the queue runs dry.
 * 2,000 reads then cost about a hundred wake-ups instead of several per read.
 *
 * Why threads of our own, not uv_queue_work (issue 23): an open() can block for
 * good (a FIFO without a writer, a hung NFS or FUSE mount). On libuv's pool such a
 * job keeps one of its four threads, and at exit libuv joins its threads, so the
 * process never ends; with as many stuck jobs as runners, no file call ever ran
 * again. Here a runner whose job was abandoned (its task cancelled, as lr.timeout
 * does) or has run for STUCK_NS no longer counts toward max_runners(): another is
 * started beside it (up to MAX_THREADS in all), and nothing ever joins a runner, so
 * exit does not wait for one stuck in a system call. Runners idle for IDLE_NS end.
 * The queue is freed by the last of the loop (its handles closed) and the runners. */

#define MAX_RUNNERS 4
#define MAX_THREADS 64                  /* runner threads in all, stuck ones included */
#define BATCH 32
#define HANDOVER 64
#define LATENCY_NS 200000u
#define STUCK_NS 100000000u             /* a job this long no longer counts (100 ms) */
#define CHECK_MS 50                     /* how often waiting jobs look for stuck runners */
#define IDLE_NS 2000000000u             /* an idle runner ends after 2 s */

typedef struct runner {
  struct lr_fsq *q;
  lr_fs *job;                /* the job it runs now, or NULL (q->mu) */
  uint64_t since;            /* when it took that job (q->mu) */
  struct runner *next;       /* q->runners (q->mu) */
} runner;

typedef struct lr_fsq {
  lr_runtime *rt;
  struct lr_fsq *next;       /* queues of other runtimes */
  uv_async_t async;          /* runners -> loop: done requests to deliver */
  pthread_mutex_t mu;        /* guards the fields below up to `staged` */
  pthread_cond_t cv;         /* idle runners wait here for jobs */
  lr_fs *todo, *todo_tail;   /* waiting for a runner (step LR_STEP_PENDING) */
  int ntodo;
  lr_fs *done, *done_tail;   /* finished, not yet delivered */
  uint64_t done_since;       /* hrtime of the oldest in done */
  int ndone, notified;
  runner *runners;           /* every runner thread alive */
  int threads, idle;         /* runner threads alive, and of them waiting on cv */
  uint32_t wdir[MAX_THREADS]; /* directories that a runner writes a file in now */
  int nwdir;
  uint32_t open_us[4];       /* the last write jobs' open() times, in us (mu) */
  int open_i;
  int closing;               /* the runtime closes: no more async sends */
  int loop_done;             /* the loop side is done with the queue */
  /* Loop thread only: requests of this turn of the scheduler, handed over together
   * just before the loop polls (prep), so that a burst costs one hand-over. */
  lr_fs *staged, *staged_tail;
  int nstaged;
  uv_prepare_t prep;
  uv_timer_t check;          /* while jobs wait: look for stuck runners */
  int inflight;              /* jobs whose task waits: the async handle is ref'd */
  int nclosed;               /* handles (async, prep, check) closed */
} fsq;

static fsq *queues; /* touched by loop threads only, one runtime per loop thread */

/* Runners that work at once: one per core (file I/O from the page cache is CPU work,
 * and creating files in one directory serialises on its lock anyway), at least 2 so
 * that a slow disk read does not hold up everything else, at most MAX_RUNNERS. */
static int max_runners(void) {
  static int n;
  if (n == 0) {
    unsigned cores = uv_available_parallelism();
    n = cores < 2 ? 2 : cores > MAX_RUNNERS ? MAX_RUNNERS : (int)cores;
  }
  return n;
}

static void push_done(fsq *q, lr_fs *r) {
  r->next_job = NULL;
  if (q->done_tail) q->done_tail->next_job = r;
  else q->done = r, q->done_since = uv_hrtime();
  q->done_tail = r;
  q->ndone++;
}

/* Tells the loop about the done list (q->mu held). */
static void notify_locked(fsq *q) {
  if (q->ndone == 0 || q->notified || q->closing) return;
  q->notified = 1;
  uv_async_send(&q->async);
}

/* A job is about to do something that may take long: deliver what is done first. */
void lr_fs_job_flush(lr_fs *r) {
  fsq *q = r->jobq;
  pthread_mutex_lock(&q->mu);
  notify_locked(q);
  pthread_mutex_unlock(&q->mu);
}

static int dir_busy(fsq *q, uint32_t dir) {
  int i;
  for (i = 0; i < q->nwdir; i++)
    if (q->wdir[i] == dir) return 1;
  return 0;
}

/* The first request in the queue that may start now (q->mu held), or NULL.
 * Creating a file takes its directory's lock. Usually that is short, and runners
 * creating files in one directory side by side finish sooner than one after the
 * other (2,000 files of 4 KiB: 0.020 s against 0.023-0.026 s, medians). But when
 * creating is slow (ext4 skipping the inodes freed in the last minute after a mass
 * delete: ~150 us an open), the second runner only spins on the lock, twice the CPU
 * for the same time; then new files are created unnamed, which takes no lock until
 * the name goes in (see write_unnamed), and any other write into a directory where
 * another runner is creating a file waits while the runner does something else. */
#define SLOW_OPEN_US 50
static lr_fs *take(fsq *q) {
  lr_fs *r, *prev = NULL;
  int i, slow = 1;
  /* Slow: the last four opens all were. One slow open (the first file of a fresh
   * directory takes ~0.6 ms) says nothing. */
  for (i = 0; i < 4; i++) slow &= q->open_us[i] > SLOW_OPEN_US;
  for (r = q->todo; r; prev = r, r = r->next_job)
    if (r->op != LR_FS_WRITE_FILE || !slow || !dir_busy(q, r->dir) ||
        lr_fs_may_create_unnamed(r))
      break;
  if (r == NULL) return NULL;
  if (prev) prev->next_job = r->next_job;
  else q->todo = r->next_job;
  if (q->todo_tail == r) q->todo_tail = prev;
  q->ntodo--;
  if (r->op == LR_FS_WRITE_FILE) {
    /* Slow to create here: new files are created unnamed, side by side (above). */
    r->unnamed = (slow || lr_fs_unnamed_forced()) && lr_fs_may_create_unnamed(r);
    if (r->unnamed) r->dir_free = 1; /* does not take the directory's lock */
    else q->wdir[q->nwdir++] = r->dir;
  }
  r->step = LR_STEP_ONE; /* running: the cancel hook can no longer take it back */
  return r;
}

/* The write job r no longer needs its directory to itself (q->mu held). */
static void untake(fsq *q, lr_fs *r) {
  int i;
  if (r->op != LR_FS_WRITE_FILE || r->dir_free) return;
  for (i = 0; q->wdir[i] != r->dir; i++) {}
  q->wdir[i] = q->wdir[--q->nwdir];
  r->dir_free = 1;
}

/* write_file_job: the file is open (created), the rest does not take the directory
 * lock: another runner may create the next file meanwhile. */
void lr_fs_job_opened(lr_fs *r, uint64_t open_ns) {
  fsq *q = r->jobq;
  pthread_mutex_lock(&q->mu);
  q->open_us[q->open_i++ & 3] = (uint32_t)(open_ns / 1000);
  untake(q, r);
  pthread_mutex_unlock(&q->mu);
}

/* A request nobody will deliver: the runtime is gone (or going). */
static void discard(lr_fs *r) {
  if (r->fd >= 0) close(r->fd); /* an fs.open job's descriptor */
  r->fd = -1;
  lr_fs_free(r);
}

static void free_queue(fsq *q) {
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->cv);
  free(q);
}

/* Waits on q->cv for at most IDLE_NS (q->mu held). Returns 0 when woken. */
static int idle_wait(fsq *q) {
  struct timespec ts;
  int rc;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += (time_t)(IDLE_NS / 1000000000u);
  q->idle++;
  rc = pthread_cond_timedwait(&q->cv, &q->mu, &ts);
  q->idle--;
  return rc;
}

static void *runner_main(void *arg) {
  runner *w = arg, **pp;
  fsq *q = w->q;
  lr_fs *r;
  int last;
  lr_alloc_prime_thread(); /* read_file's buffers come from this thread's arena */
  pthread_mutex_lock(&q->mu);
  for (;;) {
    if (!q->closing && (r = take(q)) != NULL) {
      w->job = r;
      w->since = uv_hrtime();
      pthread_mutex_unlock(&q->mu);
      lr_fs_run_job(r);
      pthread_mutex_lock(&q->mu);
      w->job = NULL;
      untake(q, r);
      if (q->closing) {
        discard(r);
        continue;
      }
      push_done(q, r);
      if (q->todo && (q->ndone >= BATCH || uv_hrtime() - q->done_since > LATENCY_NS))
        notify_locked(q);
      continue;
    }
    notify_locked(q); /* nothing this runner may start: deliver what is done */
    if (q->closing) break;
    /* A write waiting for its directory is taken by the runner writing there. */
    if (idle_wait(q) != 0 && (q->todo == NULL || q->closing)) break;
  }
  for (pp = &q->runners; *pp != w; pp = &(*pp)->next) {}
  *pp = w->next;
  q->threads--;
  last = q->threads == 0 && q->loop_done;
  pthread_mutex_unlock(&q->mu);
  free(w);
  if (last) free_queue(q);
  return NULL;
}

/* How many runner threads to start now for the jobs that no idle runner will take
 * (q->mu held): runners that work count up to max_runners(); a runner whose job was
 * abandoned or has run for STUCK_NS does not. */
static int to_start(fsq *q) {
  uint64_t now = uv_hrtime();
  int stuck = 0, cap, want;
  runner *w;
  for (w = q->runners; w; w = w->next)
    if (w->job && (lr_fs_job_cancelled(w->job) || now - w->since > STUCK_NS)) stuck++;
  cap = max_runners() + stuck;
  if (cap > MAX_THREADS) cap = MAX_THREADS;
  want = q->ntodo - q->idle;
  if (want > cap - q->threads) want = cap - q->threads;
  return want > 0 ? want : 0;
}

/* Starts n runner threads (loop thread, q->mu not held). Returns how many started. */
static int start_runners(fsq *q, int n) {
  pthread_attr_t attr;
  int started = 0;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  while (started < n) {
    runner *w = calloc(1, sizeof *w);
    pthread_t th;
    if (w == NULL) break;
    w->q = q;
    pthread_mutex_lock(&q->mu);
    w->next = q->runners;
    q->runners = w;
    q->threads++;
    pthread_mutex_unlock(&q->mu);
    if (pthread_create(&th, &attr, runner_main, w) != 0) {
      runner **pp;
      pthread_mutex_lock(&q->mu);
      for (pp = &q->runners; *pp != w; pp = &(*pp)->next) {}
      *pp = w->next;
      q->threads--;
      pthread_mutex_unlock(&q->mu);
      free(w);
      break;
    }
    started++;
  }
  pthread_attr_destroy(&attr);
  return started;
}

static void check_cb(uv_timer_t *h);

/* Wakes idle runners for the queued jobs and starts more if some are stuck or none
 * idle; while jobs still wait for a runner, looks again every CHECK_MS. */
static void staff(fsq *q) {
  int n, wake, uncovered;
  pthread_mutex_lock(&q->mu);
  wake = q->ntodo < q->idle ? q->ntodo : q->idle;
  while (wake-- > 0) pthread_cond_signal(&q->cv);
  n = to_start(q);
  uncovered = q->ntodo - q->idle; /* jobs no idle runner will take */
  pthread_mutex_unlock(&q->mu);
  if (n > 0) uncovered -= start_runners(q, n); /* a runner that did not start: retry */
  if (uncovered <= 0) uv_timer_stop(&q->check);
  else if (!uv_is_active((uv_handle_t *)&q->check))
    uv_timer_start(&q->check, check_cb, CHECK_MS, CHECK_MS);
}

static void check_cb(uv_timer_t *h) {
  staff(h->data);
}

/* Jobs whose task waits keep the loop alive through the async handle; abandoned
 * ones (stuck in open(), say) do not. */
static void hold(fsq *q, int d) {
  if (q->inflight == 0 && d > 0) uv_ref((uv_handle_t *)&q->async);
  q->inflight += d;
  if (q->inflight == 0) uv_unref((uv_handle_t *)&q->async);
}

/* Hands the done requests to their tasks (loop thread). */
static void drain(fsq *q) {
  lr_fs *r;
  pthread_mutex_lock(&q->mu);
  r = q->done;
  q->done = q->done_tail = NULL;
  q->ndone = q->notified = 0;
  pthread_mutex_unlock(&q->mu);
  while (r) {
    lr_fs *next = r->next_job;
    if (q->rt->closing || r->task == NULL) {
      discard(r); /* nothing will resume a task, or it was cancelled meanwhile */
    } else {
      hold(q, -1);
      lr_fs_end(r);
    }
    r = next;
  }
}

static void async_cb(uv_async_t *a) {
  drain(container_of(a, fsq, async));
}

static void closed_cb(uv_handle_t *h) {
  fsq *q = h->data;
  int last;
  if (++q->nclosed < 3) return;
  pthread_mutex_lock(&q->mu);
  q->loop_done = 1;
  last = q->threads == 0;
  pthread_mutex_unlock(&q->mu);
  if (last) free_queue(q);
}

static fsq *find_queue(lr_runtime *rt) {
  fsq *q;
  for (q = queues; q; q = q->next)
    if (q->rt == rt) return q;
  return NULL;
}

/* The runtime closes (before its loop). Runners still in a job finish it on their
 * own and free it; none of them will read a task's string after this returns. */
static void close_queue(lr_runtime *rt) {
  fsq *q = find_queue(rt), **pp;
  runner *w;
  if (q == NULL) return;
  for (pp = &queues; *pp != q; pp = &(*pp)->next) {}
  *pp = q->next;
  pthread_mutex_lock(&q->mu);
  q->closing = 1;
  pthread_cond_broadcast(&q->cv);
  for (w = q->runners; w; w = w->next)
    if (w->job) {
      /* A task that never resumed (os.exit, say) may have lent its string: the
       * runner gives it back without needing q->mu (see take_data). */
      __atomic_store_n(&w->job->cancelled, 1, __ATOMIC_RELEASE);
      lr_fs_loan_revoke(w->job);
    }
  while (q->todo) { /* queued, never started */
    lr_fs *r = q->todo;
    q->todo = r->next_job;
    lr_fs_free(r);
  }
  q->todo_tail = NULL;
  q->ntodo = 0;
  pthread_mutex_unlock(&q->mu);
  drain(q);
  uv_close((uv_handle_t *)&q->async, closed_cb);
  uv_close((uv_handle_t *)&q->prep, closed_cb);
  uv_close((uv_handle_t *)&q->check, closed_cb);
  /* Staged requests never started: their tasks will not be resumed any more. */
  while (q->staged) {
    lr_fs *r = q->staged;
    q->staged = r->next_job;
    lr_fs_free(r);
  }
}

static fsq *get_queue(lr_runtime *rt) {
  fsq *q = find_queue(rt);
  pthread_condattr_t ca;
  if (q) return q;
  lr_alloc_prime_malloc(); /* runners fill blocks that the loop thread frees */
  lr_fs_job_setup();
  if ((q = calloc(1, sizeof *q)) == NULL) return NULL;
  if (uv_async_init(&rt->loop, &q->async, async_cb) < 0) {
    free(q);
    return NULL;
  }
  uv_unref((uv_handle_t *)&q->async); /* ref'd while a task waits for a job (hold) */
  uv_prepare_init(&rt->loop, &q->prep);
  uv_timer_init(&rt->loop, &q->check);
  uv_unref((uv_handle_t *)&q->check);
  q->async.data = q->prep.data = q->check.data = q;
  pthread_mutex_init(&q->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&q->cv, &ca);
  pthread_condattr_destroy(&ca);
  q->rt = rt;
  q->next = queues;
  queues = q;
  lr_runtime_on_close(rt, close_queue);
  return q;
}

/* Takes r back if no runner has started it (cancel hook). */
static int unqueue(lr_fs *r) {
  fsq *q = r->jobq;
  lr_fs **pp, **head, *prev = NULL;
  lr_fs **tail;
  int found = 0;
  if (r->step == LR_STEP_STAGED) {
    head = &q->staged, tail = &q->staged_tail;
  } else {
    pthread_mutex_lock(&q->mu);
    head = &q->todo, tail = &q->todo_tail;
  }
  if (r->step == LR_STEP_STAGED || r->step == LR_STEP_PENDING) {
    for (pp = head; *pp != r; pp = &(*pp)->next_job) prev = *pp;
    *pp = r->next_job;
    if (*tail == r) *tail = prev;
    if (r->step == LR_STEP_STAGED) q->nstaged--;
    else q->ntodo--;
    found = 1;
  }
  if (head == &q->todo) pthread_mutex_unlock(&q->mu);
  return found;
}

static void prep_cb(uv_prepare_t *h);

/* Hands the staged requests to the runners (just before the loop polls, or once
 * HANDOVER are staged). */
static void hand_over(fsq *q) {
  lr_fs *r;
  uv_prepare_stop(&q->prep);
  if (q->staged == NULL) return;
  for (r = q->staged; r; r = r->next_job) r->step = LR_STEP_PENDING;
  pthread_mutex_lock(&q->mu);
  if (q->todo_tail) q->todo_tail->next_job = q->staged;
  else q->todo = q->staged;
  q->todo_tail = q->staged_tail;
  q->ntodo += q->nstaged;
  pthread_mutex_unlock(&q->mu);
  q->staged = q->staged_tail = NULL;
  q->nstaged = 0;
  staff(q);
}

static void prep_cb(uv_prepare_t *h) {
  hand_over(h->data);
}

/* FNV-1a of the directory part of path ("" for a bare name). */
static uint32_t dir_hash(const char *path) {
  const char *end = strrchr(path, '/');
  uint32_t h = 2166136261u;
  for (; end && path < end; path++) h = (h ^ (unsigned char)*path) * 16777619u;
  return h;
}

/* Stages the job of a read_file, write_file or open (loop thread). */
int lr_fs_job_start(lr_fs *r) {
  fsq *q = get_queue(r->rt);
  if (q == NULL) return UV_ENOMEM;
  if (r->op == LR_FS_WRITE_FILE) {
    if (r->dlen > LR_FS_COPY_MAX) {
      r->borrowed = LR_LEND_OFFERED;
    } else if (r->dlen > 0) {
      if ((r->buf = malloc(r->dlen)) == NULL) return UV_ENOMEM;
      memcpy(r->buf, r->data, r->dlen);
    }
  }
  if (r->op == LR_FS_WRITE_FILE) r->dir = dir_hash(r->path);
  r->jobq = q;
  r->step = LR_STEP_STAGED;
  r->next_job = NULL;
  if (q->staged_tail) q->staged_tail->next_job = r;
  else q->staged = r, uv_prepare_start(&q->prep, prep_cb);
  q->staged_tail = r;
  hold(q, 1);
  /* A long burst goes in parts, so that the runners start while it is being made. */
  if (++q->nstaged >= HANDOVER) hand_over(q);
  return 0;
}

/* The cancel hook of a job's task (loop thread). Returns 1 if the job never started:
 * it is out of the queue and the caller frees it. Otherwise the runner finishes it
 * and frees it; when this returns the runner no longer reads the task's string. */
int lr_fs_job_cancel(lr_fs *r) {
  fsq *q = r->jobq;
  __atomic_store_n(&r->cancelled, 1, __ATOMIC_RELEASE);
  hold(q, -1);
  if (unqueue(r)) return 1;
  lr_fs_loan_revoke(r); /* the job may be reading this task's string */
  staff(q);             /* its runner may be stuck: it no longer counts */
  return 0;
}
