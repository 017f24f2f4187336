/* loop.c: the runtime context and the driver loop.
 *
 * One runtime per Lua state, kept as a userdata in the registry and closed by its
 * __gc when the state closes. The driver alternates two steps: resume every task that
 * is ready, then let libuv run once (without blocking while tasks are ready). All Lua
 * code runs in the first step, outside any libuv or libcurl callback.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "lr_sched.h"

static const char RT_KEY = 'r';

static void raise_nofile_limit(void) {
  /* A scraper holds many sockets at once: use all the descriptors we may. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static void close_walk_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

int lr_runtime_abandoned;

static void count_walk_cb(uv_handle_t *h, void *arg) {
  (void)h;
  ++*(int *)arg;
}

static void grace_cb(uv_timer_t *h) {
  (void)h;
}

/* Lets the close callbacks run, then waits for requests still in libuv's thread
 * pool, but at most CLOSE_GRACE_MS: a request blocked in a system call for good (a
 * file:read on a FIFO nobody writes to) would hold the runtime's close, and so the
 * process, forever. Returns 0, or -1 if requests were left running. */
#define CLOSE_GRACE_MS 200
static int settle_loop(uv_loop_t *loop) {
  uv_timer_t grace;
  uint64_t deadline;
  int handles = 0, rc = 0;
  uv_run(loop, UV_RUN_NOWAIT); /* the close callbacks of the first pass */
  uv_walk(loop, count_walk_cb, &handles);
  if (handles == 0 && !uv_loop_alive(loop)) return 0;
  uv_timer_init(loop, &grace);
  deadline = uv_now(loop) + CLOSE_GRACE_MS;
  for (;;) {
    handles = 0;
    uv_walk(loop, count_walk_cb, &handles); /* the grace timer counts itself */
    if (handles <= 1 && !uv_loop_alive(loop)) break;
    uv_update_time(loop);
    if (uv_now(loop) >= deadline) {
      rc = -1;
      break;
    }
    uv_timer_start(&grace, grace_cb, deadline - uv_now(loop), 0);
    uv_run(loop, UV_RUN_ONCE);
  }
  uv_close((uv_handle_t *)&grace, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return rc;
}

/* The runtime lives outside Lua's heap (the userdata holds a pointer), so that a
 * runtime whose loop still has requests in libuv's threads can be left behind: they
 * write into the loop when they end, however late. */
static int rt_gc(lua_State *L) {
  lr_runtime **box = lua_touserdata(L, 1), *rt = *box;
  int i;
  if (rt == NULL || rt->closing) return 0;
  rt->closing = 1;
  for (i = rt->ncloser - 1; i >= 0; i--) rt->closers[i](rt);
  lr_hooks_close(rt);
  lr_timer_close(rt);
  uv_walk(&rt->loop, close_walk_cb, NULL);
  free(rt->free_slots);
  rt->free_slots = NULL;
  *box = NULL;
  if (settle_loop(&rt->loop) != 0) {
    lr_runtime_abandoned = 1; /* see luarun.h */
    return 0;
  }
  uv_loop_close(&rt->loop);
  free(rt);
  return 0;
}

static int new_table_ref(lua_State *L, const char *mode) {
  lua_newtable(L);
  if (mode) {
    lua_newtable(L);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
  }
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

void lr_register_class(lua_State *L, const char *name, const luaL_Reg *methods,
                       const luaL_Reg *meta) {
  if (luaL_newmetatable(L, name)) {
    if (meta) luaL_setfuncs(L, meta, 0);
    if (methods) {
      lua_newtable(L);
      luaL_setfuncs(L, methods, 0);
      lua_setfield(L, -2, "__index");
    }
  }
  lua_pop(L, 1);
}

lr_runtime *lr_runtime_get(lua_State *L) {
  lr_runtime *rt, **box;
  int refs[4], i, rc;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &RT_KEY) == LUA_TUSERDATA) {
    rt = *(lr_runtime **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (rt == NULL) luaL_error(L, "luarun: the runtime is closed");
    return rt;
  }
  lua_pop(L, 1);
  /* Everything that may raise (out of memory) comes before the runtime exists, or
   * after the box that frees it holds it whole. */
  /* refs[3], the task names, has weak keys: task userdata (tasks.c). */
  for (i = 0; i < 4; i++) refs[i] = new_table_ref(L, i == 3 ? "k" : NULL);
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  lua_newtable(L);
  lua_pushcfunction(L, rt_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  if ((rt = calloc(1, sizeof *rt)) == NULL) luaL_error(L, "not enough memory");
  if ((rc = uv_loop_init(&rt->loop)) != 0) {
    free(rt);
    luaL_error(L, "cannot create the event loop: %s", uv_strerror(rc));
  }
  rt->loop.data = rt;
  rt->L = L;
  rt->tasks_ref = refs[0];
  rt->where_ref = refs[1];
  rt->origin_ref = refs[2];
  rt->names_ref = refs[3];
  /* Lua never initialises the main thread's extra space, and every new thread starts
   * with a copy of it; luarun keeps the running task there, so start from NULL. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  *(void **)lua_getextraspace(lua_tothread(L, -1)) = NULL;
  lua_pop(L, 1);
  *(void **)lua_getextraspace(L) = NULL;
  lr_timer_init(rt);
  *box = rt;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &RT_KEY);
  raise_nofile_limit();
  return rt;
}

void lr_runtime_on_close(lr_runtime *rt, lr_closer fn) {
  if (rt->ncloser < LR_MAX_CLOSERS) rt->closers[rt->ncloser++] = fn;
}

/* Calls fn on every live task (the table is read through rt->L). */
void lr_runtime_each_task(lr_runtime *rt, void (*fn)(lr_task *t, void *arg), void *arg) {
  lua_State *L = rt->L;
  uint32_t i;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->tasks_ref);
  for (i = 1; i <= rt->slot_max; i++) {
    if (lua_rawgeti(L, -1, (lua_Integer)i) == LUA_TTHREAD) {
      lr_task *t = *(lr_task **)lua_getextraspace(lua_tothread(L, -1));
      lua_pop(L, 1);
      if (t) fn(t, arg);
    } else {
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

static void cancel_one(lr_task *t, void *arg) {
  (void)arg;
  lr_task_cancel(t);
}

void lr_runtime_cancel_all(lr_runtime *rt) {
  lr_runtime_each_task(rt, cancel_one, NULL);
}

static void describe_parked(lr_task *t, void *arg) {
  luaL_Buffer *b = arg;
  lua_State *L = b->L;
  if (t->state != LR_PARKED) return;
  /* The buffer sits on L's stack: build each entry on the side, then add it.
   *   task 7 "consumer" (spawned at x.lua:12)
   *     waits on Queue:get, queue empty
   *     stack traceback: ... (indented) */
  lua_pushliteral(L, "\n  ");
  lr_report_push_taskname(L, t);
  lua_pushliteral(L, "\n    waits on ");
  lr_task_push_waiting(L, t);
  lua_pushliteral(L, "\n    ");
  luaL_traceback(L, t->co, NULL, 0);
  luaL_gsub(L, lua_tostring(L, -1), "\n", "\n    ");
  lua_remove(L, -2);
  lua_concat(L, 6);
  luaL_addvalue(b);
}

static void count_parked(lr_task *t, void *arg) {
  if (t->state == LR_PARKED) ++*(int *)arg;
}

/* Nothing can wake the parked tasks: say which they are, then cancel them so that
 * their cleanup runs. The report is left on rt->L's stack. */
static void deadlock(lr_runtime *rt) {
  lua_State *L = rt->L;
  luaL_Buffer b;
  int n = 0;
  lr_runtime_each_task(rt, count_parked, &n);
  luaL_buffinit(L, &b);
  lua_pushfstring(L, "deadlock: %d task%s can never resume", n, n == 1 ? "" : "s");
  luaL_addvalue(&b);
  lr_runtime_each_task(rt, describe_parked, &b);
  luaL_pushresult(&b);
  rt->deadlocks++;
  lr_runtime_cancel_all(rt);
}

int lr_runtime_drive(lr_runtime *rt) {
  int top = lua_gettop(rt->L);
  for (;;) {
    int more;
    if (rt->ready.head) lr_sched_run_ready(rt);
    if (rt->live == 0) break;
    more = uv_run(&rt->loop, rt->ready.head ? UV_RUN_NOWAIT : UV_RUN_ONCE);
    if (!more && !rt->ready.head && rt->live > 0) {
      if (rt->deadlocks > 0) {
        /* Cancelling did not unwind them (a shielded wait on one another): give up. */
        return -1;
      }
      deadlock(rt);
      lua_insert(rt->L, top + 1); /* keep the first report at the bottom */
    }
  }
  return rt->deadlocks ? -1 : 0;
}

/* Runs the function under its nargs arguments on L's stack as the main task, until
 * it and every task it spawned are done. On return the stack holds, in place of the
 * function and arguments: the results (LUA_OK, *nres set), or a report string and the
 * error value (LUA_ERRRUN), or one report string (LR_DEADLOCK). */
int lr_runtime_run_main(lua_State *L, lr_runtime *rt, int nargs, int *nres) {
  lr_task *t;
  int base = lua_gettop(L) - nargs - 1;
  int rc;
  /* No task runs yet, so whatever the calling thread's extra space holds is not ours
   * (see lr_runtime_get): clear it, or the thread would pass for a task. */
  *(void **)lua_getextraspace(L) = NULL;
  rt->L = rt->from = L;
  rt->running = 1;
  rt->batch = NULL; /* a raise out of an earlier run's turn may have left it set */
  rt->failures = 0;
  rt->deadlocks = 0;
  t = lr_task_spawn(L, rt, nargs, 1); /* the task stays on L's stack while it runs */
  t->flags |= LR_F_MAIN | LR_F_WAITED;
  rt->main = t;
  rc = lr_runtime_drive(rt);
  if (rt->nobs) lr_hooks_run_end(rt);
  rt->running = 0;
  rt->main = NULL;
  if (rc < 0) {
    /* stack: task, report(s)...: keep the first report */
    lua_settop(L, base + 2);
    lua_remove(L, base + 1);
    return LR_DEADLOCK;
  }
  lua_settop(L, base + 1);
  if (t->result == LR_RES_OK) {
    lua_settop(L, base);
    *nres = lr_task_push_values(L, t, -1);
    return LUA_OK;
  }
  lua_settop(L, base);
  lr_task_push_report(L, t);
  lr_task_push_error(L, t);
  if (!lua_toboolean(L, -2)) { /* cancelled: no report was made */
    lua_pop(L, 2);
    lr_error_push(L, "cancelled", "task cancelled");
    lua_pushstring(L, "main task cancelled");
    lua_insert(L, -2);
  }
  return LUA_ERRRUN;
}
