/* test_timer.c: the timer alone, without Lua. Sleepers live in a heap, or in a FIFO
 * when their deadlines come in order; either way, random deadlines and removals must
 * come out in deadline order, the uv timer must be armed for the earliest, and equal
 * deadlines must come out in the order they went in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "luarun.h"

#define N 5000
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", \
                                   __FILE__, __LINE__, #c); exit(1); } } while (0)

static lr_task tasks[N];

/* Pops every sleeper through lr_timer_earliest; checks order and the armed timer. */
static int drain(lr_runtime *rt) {
  uint64_t last = 0;
  int popped = 0;
  lr_task *t;
  while ((t = lr_timer_earliest(rt)) != NULL) {
    CHECK(t->deadline >= last);
    CHECK(rt->timer_due == t->deadline);
    last = t->deadline;
    lr_timer_remove(rt, t);
    CHECK(!lr_timer_has(rt, t));
    popped++;
  }
  CHECK(rt->heap_n == 0 && rt->sleep_n == 0);
  CHECK(!uv_is_active((uv_handle_t *)&rt->timer)); /* nothing left: the timer stops */
  return popped;
}

int main(void) {
  lr_runtime rt;
  uint64_t base = uv_hrtime() + 3600ull * 1000000000ull;
  int i, removed = 0;
  memset(&rt, 0, sizeof rt);
  CHECK(uv_loop_init(&rt.loop) == 0);
  lr_timer_init(&rt);
  srand(12345);

  /* Random deadlines: most go to the heap, the in-order ones to the FIFO. */
  for (i = 0; i < N; i++) {
    tasks[i].rt = &rt;
    CHECK(lr_timer_add(&rt, &tasks[i], base + (uint64_t)(rand() % 100000) * 1000) == 0);
    CHECK(lr_timer_has(&rt, &tasks[i]));
  }
  CHECK(rt.heap_n + rt.sleep_n == N);
  CHECK(rt.heap_n > 0 && rt.sleep_n > 0);
  CHECK(uv_is_active((uv_handle_t *)&rt.timer));
  CHECK(rt.timer_due == lr_timer_earliest(&rt)->deadline);
  for (i = 0; i < N; i += 3) { /* remove a third, from anywhere */
    lr_timer_remove(&rt, &tasks[i]);
    CHECK(!lr_timer_has(&rt, &tasks[i]));
    removed++;
  }
  CHECK(rt.heap_n + rt.sleep_n == (uint32_t)(N - removed));
  CHECK(drain(&rt) == N - removed);

  /* Deadlines in order all take the FIFO, and removing its head re-arms the timer. */
  for (i = 0; i < N; i++) CHECK(lr_timer_add(&rt, &tasks[i], base + (uint64_t)i * 1000) == 0);
  CHECK(rt.sleep_n == N && rt.heap_n == 0);
  lr_timer_remove(&rt, &tasks[0]);
  CHECK(rt.timer_due == tasks[1].deadline);
  CHECK(drain(&rt) == N - 1);

  /* Equal deadlines come out in the order they went in. */
  for (i = 0; i < 10; i++) CHECK(lr_timer_add(&rt, &tasks[i], base) == 0);
  for (i = 0; i < 10; i++) {
    CHECK(lr_timer_earliest(&rt) == &tasks[i]);
    lr_timer_remove(&rt, &tasks[i]);
  }
  lr_timer_close(&rt);
  uv_run(&rt.loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&rt.loop) == 0);
  printf("test_timer: ok\n");
  return 0;
}
