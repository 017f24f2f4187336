/* test_timer.c: the timer heap alone, without Lua: random deadlines and removals must
 * always come out in deadline order, and the uv timer must be armed for the earliest. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "luarun.h"

#define N 5000
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", \
                                   __FILE__, __LINE__, #c); exit(1); } } while (0)

static lr_task tasks[N];

int main(void) {
  lr_runtime rt;
  uint64_t base = uv_hrtime() + 3600ull * 1000000000ull, last = 0;
  int i, removed = 0, popped = 0;
  memset(&rt, 0, sizeof rt);
  CHECK(uv_loop_init(&rt.loop) == 0);
  lr_timer_init(&rt);
  srand(12345);
  for (i = 0; i < N; i++) {
    tasks[i].rt = &rt;
    CHECK(lr_timer_add(&rt, &tasks[i], base + (uint64_t)(rand() % 100000) * 1000) == 0);
    CHECK(tasks[i].heap_idx != 0);
  }
  CHECK(rt.heap_n == N);
  CHECK(uv_is_active((uv_handle_t *)&rt.timer));
  CHECK(rt.timer_due == rt.heap[0]->deadline);
  for (i = 0; i < N; i += 3) { /* remove a third, from anywhere in the heap */
    lr_timer_remove(&rt, &tasks[i]);
    CHECK(tasks[i].heap_idx == 0);
    removed++;
  }
  CHECK(rt.heap_n == (uint32_t)(N - removed));
  while (rt.heap_n > 0) {
    lr_task *t = rt.heap[0];
    CHECK(t->deadline >= last);
    CHECK(rt.timer_due == t->deadline);
    last = t->deadline;
    lr_timer_remove(&rt, t);
    popped++;
  }
  CHECK(popped == N - removed);
  CHECK(!uv_is_active((uv_handle_t *)&rt.timer)); /* nothing left: the timer stops */
  /* Equal deadlines come out in the order they went in. */
  for (i = 0; i < 10; i++) CHECK(lr_timer_add(&rt, &tasks[i], base) == 0);
  for (i = 0; i < 10; i++) {
    CHECK(rt.heap[0] == &tasks[i]);
    lr_timer_remove(&rt, rt.heap[0]);
  }
  lr_timer_close(&rt);
  uv_run(&rt.loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&rt.loop) == 0);
  printf("test_timer: ok\n");
  return 0;
}
