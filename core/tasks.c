/* tasks.c: what the live tasks are doing, for people: lr.tasks(), and the task dump
 * that SIGQUIT (Ctrl-\) prints while the process keeps running. It reads the
 * scheduler (names, spawn sites, what each waits on: report.c) and sits above it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lr_observe.h"

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
  lr_stderr_begin(); /* clears a progress line drawn there (lr_base.h) */
  fprintf(stderr, "luarun: %zu live task%s\n", rt->live, rt->live == 1 ? "" : "s");
  list_tasks(rt, &l);
  for (i = 0; i < l.n; i++) dump_one(L, l.v[i]);
  free(l.v);
  fflush(stderr);
  lr_stderr_end();
}

/* SIGQUIT (Ctrl-\): print every live task and carry on. libuv's signal handle runs
 * the callback on the loop, between tasks, where the task stacks can be read. */
static uv_signal_t quit_signal;

static void sigquit_cb(uv_signal_t *h, int sig) {
  (void)sig;
  lr_tasks_dump(h->data);
}

void lr_tasks_watch_quit(lr_runtime *rt) {
  uv_signal_init(&rt->loop, &quit_signal);
  quit_signal.data = rt;
  uv_signal_start(&quit_signal, sigquit_cb, SIGQUIT);
  uv_unref((uv_handle_t *)&quit_signal); /* waiting for it keeps nothing alive */
}
