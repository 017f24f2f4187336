/* luarun.c: the `luarun` module: tasks, sleep, gather, timeout, run. */
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include "bindings.h"

#define LR_MODULE(name, fn) int fn(lua_State *L);
#include "modules.h"
#undef LR_MODULE

#define RT(L) ((lr_runtime *)lua_touserdata(L, lua_upvalueindex(1)))

static int check_callable(lua_State *L, int idx) {
  return lr_is_callable(L, idx) ? 1 : luaL_typeerror(L, idx, "function");
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = (lr_task *)ctx;
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  return 0;
}

/* lr.sleep(seconds): parks the task in the timer heap; sleep(0) lets the others run. */
static int l_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  lr_task *t;
  if (s != s) return luaL_argerror(L, 1, "not a number (NaN)");
  t = lr_task_enter(L, "sleep");
  if (s <= 0) {
    lr_task_wake(t, LR_WAKE_DONE); /* straight to the back of the ready queue */
  } else {
    uint64_t deadline = lr_timer_deadline(s);
    if (deadline != UINT64_MAX && lr_timer_add(t->rt, t, deadline) != 0)
      return luaL_error(L, "sleep: out of memory");
  }
  if (lr_observed(t->rt) && s > 0) {
    lr_wait_desc d = {"sleep", NULL, 0, 0, 0, {{0}}};
    lr_wait_num(&d, "seconds", s, 0);
    lr_hooks_wait(t->rt, t, &d);
  }
  return lr_task_park(L, t, NULL, (lua_KContext)t, sleep_k);
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

static int l_spawn(lua_State *L) {
  lr_runtime *rt = RT(L);
  check_callable(L, 1);
  if (!rt->running)
    return luaL_error(L, "spawn: the luarun loop is not running (call it inside lr.run)");
  lr_task_spawn(L, rt, lua_gettop(L) - 1, 1);
  return 1;
}

/* lr.current() -> the running task, or nil outside tasks. */
static int l_current(lua_State *L) {
  lr_task *t = lr_task_self(L);
  if (t == NULL) return 0;
  lr_task_push_self(L, t);
  return 1;
}

/* lr.run(fn, ...): drives the loop until fn and every task it spawned finish. */
static int l_run(lua_State *L) {
  lr_runtime *rt = RT(L);
  int nres = 0, status;
  check_callable(L, 1);
  if (rt->running)
    return luaL_error(L, "run: the loop is already running (inside a task, call the "
                      "function directly or use lr.spawn)");
  status = lr_runtime_run_main(L, rt, lua_gettop(L) - 1, &nres);
  if (status == LR_DEADLOCK) return lua_error(L);
  if (status != LUA_OK) return lua_error(L); /* the main task's error, unchanged */
  if (rt->failures > 0)
    return luaL_error(L, "run: %d task%s failed with an unhandled error (reported above)",
                      rt->failures, rt->failures == 1 ? "" : "s");
  return nres;
}

static void count_active(uv_handle_t *h, void *arg) {
  if (uv_is_active(h) && uv_has_ref(h)) ++*(int *)arg;
}

/* lr.stats() -> {tasks =, sleeping =, handles =}: what is alive, for leak checks. */
static int l_stats(lua_State *L) {
  lr_runtime *rt = RT(L);
  int handles = 0;
  uv_walk(&rt->loop, count_active, &handles);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)rt->live);
  lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, (lua_Integer)(rt->heap_n + rt->sleep_n));
  lua_setfield(L, -2, "sleeping");
  lua_pushinteger(L, handles);
  lua_setfield(L, -2, "handles");
  return 1;
}

static const luaL_Reg funcs[] = {
  {"stats", l_stats},
  {"sleep", l_sleep},
  {"now", l_now},
  {"spawn", l_spawn},
  {"current", l_current},
  {"gather", lr_gather},
  {"map", lr_map},
  {"timeout", lr_timeout},
  {"scope", lr_scope},
  {"race", lr_race},
  {"as_completed", lr_as_completed},
  {"tasks", lr_tasks},
  {"run", l_run},
  {NULL, NULL}
};

static void preload_c_modules(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
#define LR_MODULE(name, fn) lua_pushcfunction(L, fn), lua_setfield(L, -2, name);
#include "modules.h"
#undef LR_MODULE
  lua_pop(L, 1);
}

/* luarun.so stays mapped until the process ends. Its file runners (core/fs.c) are
 * never joined, so one may still be on its way out through our code when lua5.4
 * closes its state at exit and dlcloses the module: about 1 run in 100 of a script
 * using fs then died of SIGSEGV in a thread whose code had been unmapped (issue 23;
 * seen by the malloc-failure sweep of the module form). RTLD_NODELETE keeps the
 * code; in the executable this finds the program itself and does nothing. */
static void pin_module(void) {
  Dl_info info;
  if (dladdr((void *)luaopen_luarun, &info) != 0 && info.dli_fname != NULL)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

int luaopen_luarun(lua_State *L) {
  static pthread_once_t pinned = PTHREAD_ONCE_INIT;
  lr_runtime *rt;
  pthread_once(&pinned, pin_module);
  rt = lr_runtime_get(L);
  lr_observe_init(rt); /* LUARUN_TRACE, LUARUN_DEBUG */
  lr_sched_register(L);
  lr_coroutine_patch(L);
  lr_embedded_preload(L);
  preload_c_modules(L);
  luaL_newlibtable(L, funcs);
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, funcs, 1);
  lua_pushliteral(L, LUARUN_VERSION);
  lua_setfield(L, -2, "version");
  lr_pool_install(L);
  lr_sync_install(L);
  lr_queue_install(L);
  lr_scope_register(L);
  return 1;
}
