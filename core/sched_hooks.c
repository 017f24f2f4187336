/* sched_hooks.c: the scheduler's observers.
 *
 * The scheduler (sched.c), the timers and the subsystems never call the tracer or the
 * watchdog: they call these dispatchers through LR_HOOK, which tests rt->nobs first,
 * so a run that nobody observes pays one predictable branch per event. Observers
 * (trace.c, watchdog.c) register a table of hooks with lr_observer_add; a new
 * subsystem is traced by describing its waits (lr_wait_describe in luarun.h), with
 * no edit to any observer. Observers are called in the order they registered.
 */
#include <stdlib.h>
#include <string.h>
#include "lr_sched.h"

int lr_observer_add(lr_runtime *rt, const lr_observer *o) {
  if (rt->nobs == LR_MAX_OBSERVERS) return -1;
  if (rt->observers == NULL &&
      (rt->observers = calloc(LR_MAX_OBSERVERS, sizeof *rt->observers)) == NULL)
    return -1;
  rt->observers[rt->nobs++] = *o;
  return 0;
}

void *lr_observer_ud(lr_runtime *rt, const void *id) {
  int i;
  for (i = 0; i < rt->nobs; i++)
    if (rt->observers[i].id == id) return rt->observers[i].ud;
  return NULL;
}

void lr_observer_remove(lr_runtime *rt, const void *id) {
  int i;
  for (i = 0; i < rt->nobs; i++)
    if (rt->observers[i].id == id) {
      memmove(&rt->observers[i], &rt->observers[i + 1],
              (size_t)(rt->nobs - i - 1) * sizeof *rt->observers);
      rt->nobs--;
      return;
    }
}

/* Each dispatcher walks the observers that set the hook. */
#define EACH(hook, call)                                    \
  do {                                                      \
    int i_;                                                 \
    for (i_ = 0; i_ < rt->nobs; i_++) {                     \
      lr_observer *o = &rt->observers[i_];                  \
      if (o->hook) call;                                    \
    }                                                       \
  } while (0)

void lr_hooks_spawn(lr_runtime *rt, lr_task *t) {
  EACH(spawn, o->spawn(o->ud, t));
}

void lr_hooks_resume(lr_runtime *rt, lr_task *t) {
  EACH(resume, o->resume(o->ud, t));
}

void lr_hooks_yield(lr_runtime *rt, lr_task *t) {
  EACH(yield, o->yield(o->ud, t));
}

void lr_hooks_done(lr_runtime *rt, lr_task *t) {
  EACH(done, o->done(o->ud, t));
}

void lr_hooks_run_end(lr_runtime *rt) {
  EACH(run_end, o->run_end(o->ud, rt));
}

void lr_hooks_wait(lr_runtime *rt, lr_task *t, const lr_wait_desc *d) {
  EACH(wait, o->wait(o->ud, t, d));
}

void lr_hooks_wait_end(lr_runtime *rt, lr_task *t, const lr_wait_desc *d) {
  EACH(wait_end, o->wait_end(o->ud, t, d));
}

/* The runtime closes: every observer frees what it holds; none is called again. */
void lr_hooks_close(lr_runtime *rt) {
  int n = rt->nobs;
  rt->nobs = 0;
  while (n-- > 0) {
    lr_observer *o = &rt->observers[n];
    if (o->close) o->close(o->ud, rt);
  }
  free(rt->observers);
  rt->observers = NULL;
}
