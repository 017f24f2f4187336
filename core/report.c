/* report.c: how a task is named, and what an uncaught error looks like.
 *
 * Names live in a registry table with weak keys, keyed by the task's userdata, not in
 * the task: most tasks never get one, and a task's struct is kept small on purpose
 * (see lr_sched.h). The collector drops a name with its task; tasks have no __gc.
 *
 * A report is the error message, the traceback of the task where it was raised, and
 * which task that was and where it was spawned. It is built when a task fails (its
 * stack is still intact then), kept beside the error value, and printed if nobody
 * handles the error. Both are the scheduler's: they know tasks, and nothing above.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lr_sched.h"

static void push_names(lua_State *L, lr_runtime *rt) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->names_ref);
}

void lr_task_push_name(lua_State *L, lr_task *t) {
  if (!(t->flags & LR_F_NAMED)) {
    lua_pushnil(L);
    return;
  }
  push_names(L, t->rt);
  lr_task_push_ud(L, t);
  lua_rawget(L, -2);
  lua_remove(L, -2);
}

void lr_task_forget_name(lua_State *L, lr_task *t) {
  push_names(L, t->rt);
  lr_task_push_ud(L, t);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 2); /* not found: nothing to forget (a nil key would raise) */
  } else {
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  t->flags &= (uint8_t)~LR_F_NAMED;
}

/* task:name() -> the name given with set_name, or "task N" ("main task" for the main
 * task, as error reports and lr.tasks() say). */
int lr_task_name(lua_State *L) {
  lr_task *t = lr_task_check(L, 1);
  lr_task_push_name(L, t);
  if (!lua_isnil(L, -1)) return 1;
  if (t->flags & LR_F_MAIN) lua_pushliteral(L, "main task"); /* as reports call it */
  else lua_pushfstring(L, "task %d", (int)t->id);
  return 1;
}

/* task:set_name(name) -> task: the name shows in error reports, the deadlock report,
 * the task dump and lr.tasks(). nil removes it. */
int lr_task_set_name(lua_State *L) {
  lr_task *t = lr_task_check(L, 1);
  if (lua_isnoneornil(L, 2)) {
    if (t->flags & LR_F_NAMED) lr_task_forget_name(L, t);
  } else {
    if (lua_type(L, 2) != LUA_TSTRING) /* (as a method, luaL's messages say '?') */
      return luaL_error(L, "task:set_name: the name must be a string or nil (got %s)",
                        luaL_typename(L, 2));
    push_names(L, t->rt);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    t->flags |= LR_F_NAMED;
    lr_task_remember_ud(L, t, 1); /* for the name once the task is done */
  }
  lua_settop(L, 1);
  return 1;
}

void lr_task_push_spawned_at(lua_State *L, lr_task *t) {
  size_t n;
  const char *w;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->rt->where_ref);
  lua_rawgeti(L, -1, (lua_Integer)t->where);
  lua_remove(L, -2);
  w = lua_tolstring(L, -1, &n);
  if (w == NULL || n <= 2) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return;
  }
  lua_pushlstring(L, w, n - 2); /* luaL_where's "file:line: " without ": " */
  lua_remove(L, -2);
}

void lr_task_push_waiting(lua_State *L, lr_task *t) {
  lr_describe_fn describe;
  lua_Debug ar;
  if (t->state != LR_PARKED) {
    lua_pushnil(L);
    return;
  }
  describe = lr_task_describer(t);
  if (describe) {
    describe(L, t);
  } else if (lr_timer_has(t->rt, t)) {
    uint64_t now = uv_hrtime();
    double left = t->deadline > now ? (double)(t->deadline - now) / 1e9 : 0.0;
    char buf[48];
    snprintf(buf, sizeof buf, "sleep, %.3f s left", left);
    lua_pushstring(L, buf);
  } else if (t->co && lua_getstack(t->co, 0, &ar) && lua_getinfo(t->co, "n", &ar) &&
             ar.name) {
    /* Parked by a call that does not describe itself: name the call. */
    lua_pushfstring(L, "%s()", ar.name);
  } else {
    lua_pushliteral(L, "a luarun call");
  }
}

const char *lr_report_tostring(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING) {
    lua_pushvalue(L, idx);
  } else if (luaL_callmeta(L, idx, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
    /* the metamethod's string is on the stack */
  } else {
    if (lua_gettop(L) > idx) lua_settop(L, idx);
    if (lua_type(L, idx) == LUA_TTABLE && lua_getfield(L, idx, "message") == LUA_TSTRING)
      return lua_tostring(L, -1); /* an error table without __tostring */
    if (lua_gettop(L) > idx) lua_settop(L, idx);
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
  }
  return lua_tostring(L, -1);
}

/* "task 7", "task 7 \"fetcher\"" with a name, then " (spawned at file:line)". */
void lr_report_push_taskname(lua_State *L, lr_task *t) {
  int top = lua_gettop(L);
  if (t->flags & LR_F_MAIN) lua_pushliteral(L, "main task");
  else lua_pushfstring(L, "task %d", (int)t->id);
  if (t->flags & LR_F_NAMED) {
    lr_task_push_name(L, t);
    lua_pushfstring(L, " \"%s\"", lua_tostring(L, -1));
    lua_remove(L, -2);
  }
  if (!(t->flags & LR_F_MAIN)) {
    lr_task_push_spawned_at(L, t);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
    } else {
      lua_pushliteral(L, " (spawned at ");
      lua_insert(L, -2);
      lua_pushliteral(L, ")");
    }
  }
  lua_concat(L, lua_gettop(L) - top);
}

void lr_report_push_traceback(lua_State *L, lua_State *co, lr_task *t) {
  const char *msg;
  lua_pushvalue(co, -1);
  lua_xmove(co, L, 1);                  /* L: err */
  msg = lr_report_tostring(L, -1);      /* L: err msg */
  luaL_traceback(L, co, msg, 0);        /* L: err msg tb */
  lua_pushliteral(L, "\n(in ");
  lr_report_push_taskname(L, t);
  lua_pushliteral(L, ")");
  lua_concat(L, 4);                     /* L: err msg report */
  lua_replace(L, -3);
  lua_pop(L, 1);                        /* L: report */
}

void lr_report_task_error(lr_runtime *rt, lr_task *t) {
  const char *report;
  lr_task_push_report(rt->L, t);
  report = lua_tostring(rt->L, -1);
  lr_stderr_begin(); /* clears a progress line drawn there (lr_base.h) */
  fprintf(stderr, "luarun: %s\n", report ? report : "(an error with no report)");
  fflush(stderr);
  lr_stderr_end();
  lua_pop(rt->L, 1);
}
