/* report.c: what an uncaught error looks like.
 *
 * A report is the error message, the traceback of the task where it was raised, and
 * which task that was and where it was spawned. It is built when a task fails (its
 * stack is still intact then), kept beside the error value, and printed if nobody
 * handles the error.
 */
#include <stdio.h>
#include "luarun.h"

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
  fprintf(stderr, "luarun: %s\n", report ? report : "(an error with no report)");
  fflush(stderr);
  lua_pop(rt->L, 1);
}
