/* tasks.c: what the live tasks are doing, for people: names, lr.tasks(), and the
 * task dump that SIGQUIT (Ctrl-\) prints while the process keeps running.
 *
 * Names live in a registry table with weak keys, keyed by the task's userdata, not in
 * the task: most tasks never get one, and a task's struct is kept small on purpose
 * (see luarun.h). The collector drops a name with its task; tasks have no __gc.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "luarun.h"

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

/* task:name() -> the name given with set_name, or "task N". */
int lr_task_name(lua_State *L) {
  lr_task *t = lr_task_check(L, 1);
  lr_task_push_name(L, t);
  if (lua_isnil(L, -1)) lua_pushfstring(L, "task %d", (int)t->id);
  return 1;
}

/* task:set_name(name) -> task: the name shows in error reports, the deadlock report,
 * the task dump and lr.tasks(). nil removes it. */
int lr_task_set_name(lua_State *L) {
  lr_task *t = lr_task_check(L, 1);
  if (lua_isnoneornil(L, 2)) {
    if (t->flags & LR_F_NAMED) lr_task_forget_name(L, t);
  } else {
    luaL_checktype(L, 2, LUA_TSTRING);
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

/* Pushes the record of one task: {id, name, state, waiting, spawned_at, traceback,
 * main, task}. */
static void push_record(lua_State *L, lr_task *t) {
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, (lua_Integer)t->id);
  lua_setfield(L, -2, "id");
  lr_task_push_name(L, t);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    if (t->flags & LR_F_MAIN) lua_pushliteral(L, "main task");
    else lua_pushfstring(L, "task %d", (int)t->id);
  }
  lua_setfield(L, -2, "name");
  lua_pushstring(L, lr_task_state_name(t));
  lua_setfield(L, -2, "state");
  lr_task_push_waiting(L, t);
  lua_setfield(L, -2, "waiting");
  lr_task_push_spawned_at(L, t);
  lua_setfield(L, -2, "spawned_at");
  if (t->co) {
    luaL_traceback(L, t->co, NULL, 0);
    lua_setfield(L, -2, "traceback");
  }
  lua_pushboolean(L, (t->flags & LR_F_MAIN) != 0);
  lua_setfield(L, -2, "main");
  lr_task_push_self(L, t);
  lua_setfield(L, -2, "task");
}

typedef struct listing {
  lr_task **v;
  size_t n, cap;
} listing;

static void list_one(lr_task *t, void *arg) {
  listing *l = arg;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    lr_task **v = realloc(l->v, cap * sizeof *v);
    if (v == NULL) return; /* out of memory: the listing is cut short */
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = t;
}

static int by_id(const void *a, const void *b) {
  uint32_t x = (*(lr_task *const *)a)->id, y = (*(lr_task *const *)b)->id;
  return (x > y) - (x < y);
}

/* The live tasks in spawn order (live-table slots are reused, so slot order is not
 * spawn order). Live tasks are anchored, so the pointers stay good while the caller
 * runs Lua code. The caller frees l->v. */
static void list_tasks(lr_runtime *rt, listing *l) {
  memset(l, 0, sizeof *l);
  lr_runtime_each_task(rt, list_one, l);
  if (l->n > 1) qsort(l->v, l->n, sizeof *l->v, by_id);
}

/* lr.tasks() -> an array of records of every live task, in spawn order. */
int lr_tasks(lua_State *L) {
  listing l;
  size_t i;
  luaL_checkstack(L, 10, "tasks");
  list_tasks(lr_runtime_get(L), &l);
  lua_createtable(L, (int)l.n, 0);
  for (i = 0; i < l.n; i++) {
    push_record(L, l.v[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  free(l.v);
  return 1;
}

static void dump_one(lua_State *L, lr_task *t) {
  int top = lua_gettop(L), rec;
  push_record(L, t);
  rec = lua_gettop(L);
  lua_pushliteral(L, "  ");
  lr_report_push_taskname(L, t);
  lua_pushfstring(L, ": %s", lr_task_state_name(t));
  if (lua_getfield(L, rec, "waiting") == LUA_TSTRING) {
    lua_pushliteral(L, " on ");
    lua_insert(L, -2);
  } else {
    lua_pop(L, 1);
  }
  if (lua_getfield(L, rec, "traceback") == LUA_TSTRING) {
    luaL_gsub(L, lua_tostring(L, -1), "\n", "\n    ");
    lua_remove(L, -2);
    lua_pushliteral(L, "\n    ");
    lua_insert(L, -2);
  } else {
    lua_pop(L, 1);
  }
  lua_pushliteral(L, "\n");
  lua_concat(L, lua_gettop(L) - rec);
  fputs(lua_tostring(L, -1), stderr);
  lua_settop(L, top);
}

void lr_tasks_dump(lr_runtime *rt) {
  lua_State *L = rt->L;
  listing l;
  size_t i;
  if (!lua_checkstack(L, 20)) return;
  fprintf(stderr, "luarun: %zu live task%s\n", rt->live, rt->live == 1 ? "" : "s");
  list_tasks(rt, &l);
  for (i = 0; i < l.n; i++) dump_one(L, l.v[i]);
  free(l.v);
  fflush(stderr);
}
