/* timer.c: sleeping tasks.
 *
 * One uv_timer_t drives a binary min-heap of tasks ordered by deadline. A
 * timer handle per sleep would cost ~150 bytes a task and a heap operation inside
 * libuv anyway; the heap here costs 8 bytes a sleeping task. Deadlines are made
 * unique (a nanosecond later than the last one handed out if equal), so sleeps of the
 * same length wake in the order they were called.
 *
 * Most sleeps arrive in deadline order (many tasks sleeping the same time): those go
 * to a FIFO instead, linked through the task's own queue links, so that adding and
 * waking one is O(1) and touches no other task. With 100,000 tasks waking together,
 * the heap's sift-downs (a cache miss per level, into tasks all over memory) were a
 * quarter of the run. A task that waits in another queue as well (RateLimit, timeout)
 * always goes to the heap, as does any deadline earlier than the FIFO's last.
 */
#include <math.h>
#include <stdlib.h>
#include "lr_sched.h"

static int earlier(const lr_task *a, const lr_task *b) {
  return a->deadline < b->deadline;
}

static void place(lr_runtime *rt, uint32_t i, lr_task *t) {
  rt->heap[i - 1] = t;
  t->heap_idx = i;
}

static void sift_up(lr_runtime *rt, uint32_t i, lr_task *t) {
  while (i > 1) {
    lr_task *parent = rt->heap[i / 2 - 1];
    if (!earlier(t, parent)) break;
    place(rt, i, parent);
    i /= 2;
  }
  place(rt, i, t);
}

static void sift_down(lr_runtime *rt, uint32_t i, lr_task *t) {
  uint32_t n = rt->heap_n;
  for (;;) {
    uint32_t c = 2 * i;
    if (c > n) break;
    if (c < n && earlier(rt->heap[c], rt->heap[c - 1])) c++;
    if (!earlier(rt->heap[c - 1], t)) break;
    place(rt, i, rt->heap[c - 1]);
    i = c;
  }
  place(rt, i, t);
}

static void timer_cb(uv_timer_t *h);

lr_task *lr_timer_earliest(lr_runtime *rt) {
  lr_task *h = rt->heap_n ? rt->heap[0] : NULL, *f = rt->sleepq.head;
  if (h == NULL) return f;
  if (f == NULL) return h;
  return f->deadline < h->deadline ? f : h;
}

/* Arms the uv timer for the earliest deadline, if it changed. */
static void rearm(lr_runtime *rt) {
  uint64_t due, now, ms;
  lr_task *first;
  if (rt->timer_busy) return; /* timer_cb re-arms once after its wake-ups */
  if ((first = lr_timer_earliest(rt)) == NULL) {
    if (rt->timer_due) uv_timer_stop(&rt->timer);
    rt->timer_due = 0;
    return;
  }
  due = first->deadline;
  if (due == rt->timer_due) return;
  rt->timer_due = due;
  now = uv_hrtime();
  /* Round up: libuv counts whole milliseconds, and waking early would only re-arm. */
  ms = due > now ? (due - now + 999999) / 1000000 : 0;
  uv_update_time(&rt->loop);
  uv_timer_start(&rt->timer, timer_cb, ms, 0);
}

static void timer_cb(uv_timer_t *h) {
  lr_runtime *rt = h->data;
  uint64_t now = uv_hrtime();
  lr_task *t;
  rt->timer_due = 0;
  rt->timer_busy = 1;
  while ((t = lr_timer_earliest(rt)) != NULL && t->deadline <= now)
    lr_task_wake(t, LR_WAKE_TIMEOUT); /* wake removes it from the heap or FIFO */
  rt->timer_busy = 0;
  rearm(rt);
}

void lr_timer_init(lr_runtime *rt) {
  uv_timer_init(&rt->loop, &rt->timer);
  rt->timer.data = rt;
}

void lr_timer_close(lr_runtime *rt) {
  uv_close((uv_handle_t *)&rt->timer, NULL);
  free(rt->heap);
  rt->heap = NULL;
  rt->heap_n = rt->heap_cap = 0;
  rt->sleepq.head = NULL;
  rt->sleep_n = 0;
}

int lr_timer_add(lr_runtime *rt, lr_task *t, uint64_t deadline) {
  if (rt->heap_n == rt->heap_cap) {
    uint32_t cap = rt->heap_cap ? rt->heap_cap * 2 : 64;
    lr_task **p = realloc(rt->heap, cap * sizeof *p);
    if (p == NULL) return UV_ENOMEM;
    rt->heap = p;
    rt->heap_cap = cap;
  }
  if (deadline <= rt->last_deadline && rt->last_deadline - deadline < 1000)
    deadline = rt->last_deadline + 1; /* same instant: keep call order */
  rt->last_deadline = deadline;
  t->deadline = deadline;
  if (t->inq == NULL &&
      (rt->sleepq.head == NULL || deadline >= rt->sleepq.head->prev->deadline)) {
    int first = rt->sleepq.head == NULL;
    lr_waitq_push(&rt->sleepq, t);
    rt->sleep_n++;
    if (first) rearm(rt);
    return 0;
  }
  sift_up(rt, ++rt->heap_n, t);
  if (t->heap_idx == 1) rearm(rt);
  return 0;
}

void lr_timer_remove(lr_runtime *rt, lr_task *t) {
  uint32_t i = t->heap_idx;
  lr_task *last;
  if (t->inq == &rt->sleepq) {
    int head = rt->sleepq.head == t;
    lr_waitq_remove(&rt->sleepq, t);
    rt->sleep_n--;
    if (head) rearm(rt);
    return;
  }
  if (i == 0) return;
  t->heap_idx = 0;
  last = rt->heap[--rt->heap_n];
  if (i <= rt->heap_n) {
    if (i > 1 && earlier(last, rt->heap[i / 2 - 1])) sift_up(rt, i, last);
    else sift_down(rt, i, last);
  }
  if (i == 1) rearm(rt);
}

uint64_t lr_timer_deadline(double seconds) {
  uint64_t now = uv_hrtime();
  double ns = seconds * 1e9;
  if (!(ns < (double)(UINT64_MAX - now) / 2)) return UINT64_MAX;
  return now + (uint64_t)ns;
}
