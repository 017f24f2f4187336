/* scope.c: structured groups of tasks: lr.scope, lr.race and lr.as_completed.
 *
 * Like gather (group.c), each is an owner: its children tell it when they end, and
 * the task that waits on it parks in a queue inside it. Each keeps itself anchored in
 * the registry while it has children, so a child never reports to freed memory, and
 * cancels its children when it is cancelled or gives up on them, waiting for them to
 * unwind (their <close> handlers run) before it returns.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "lr_prims.h"

#define SCOPE_MT "luarun.Scope"
#define COMPLETED_MT "luarun.AsCompleted"

/* The fields every group here shares. */
typedef struct group {
  lr_owner base;
  lr_waitq parentq;      /* the waiting task parks here */
  lr_runtime *rt;
  uint32_t running;      /* children not yet ended */
  int ref;               /* registry anchor while children run, else LUA_NOREF */
  uint8_t cancelled;     /* the waiting task was cancelled */
  uint8_t failed;        /* a child failed: its error and report are in user values */
  uint8_t stopped;       /* the group cancelled its children (done, or s:cancel()) */
} group;

enum { UV_ERROR = 1, UV_REPORT, UV_ITEMS, GROUP_NUV = UV_ITEMS };

static void cancel_children(group *g) {
  lr_owner_cancel_children(g->rt, &g->base);
}

static void anchor(lua_State *L, group *g, int idx) {
  lua_pushvalue(L, idx);
  g->ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void unanchor(lua_State *L, group *g) {
  luaL_unref(L, LUA_REGISTRYINDEX, g->ref);
  g->ref = LUA_NOREF;
}

/* Adopts task c (just spawned, or passed in) as a child. */
static void adopt(group *g, lr_task *c, uint32_t idx) {
  c->owner = &g->base;
  c->owner_idx = idx;
  c->flags |= LR_F_WAITED;
  g->running++;
}

/* Keeps the first failure of child c (error and report) in g's user values. L has
 * the group's userdata at gidx. */
static void keep_failure(lua_State *L, group *g, int gidx, lr_task *c) {
  if (g->failed) return;
  g->failed = 1;
  lr_task_push_error(L, c);
  lua_setiuservalue(L, gidx, UV_ERROR);
  lr_task_push_report(L, c);
  lua_setiuservalue(L, gidx, UV_REPORT);
}

/* Raises the kept failure unchanged, with its report. */
static int raise_failure(lua_State *L, group *g, int gidx) {
  lua_getiuservalue(L, gidx, UV_ERROR);
  lua_getiuservalue(L, gidx, UV_REPORT);
  return lr_raise_relayed(L, g->rt);
}

static void wake_waiter(group *g) {
  if (g->parentq.head) lr_task_wake(g->parentq.head, LR_WAKE_DONE);
}

/* Cancel hook of a task waiting on a group: the children go first, and the task is
 * let go once they have all unwound. */
static void group_cancel(lr_task *t) {
  group *g = container_of(t->inq, group, parentq);
  g->cancelled = 1;
  cancel_children(g);
  if (g->running == 0) lr_task_wake(t, LR_WAKE_CANCELLED);
}

static group *new_group(lua_State *L, size_t size, const char *mt, void (*done)(lr_owner *,
                        lr_task *), lr_runtime *rt) {
  group *g = lua_newuserdatauv(L, size, GROUP_NUV);
  memset(g, 0, size);
  g->base.child_done = done;
  g->rt = rt;
  g->ref = LUA_NOREF;
  if (mt) luaL_setmetatable(L, mt);
  return g;
}

/* ================= scope ================= */

/* lr.scope(fn, ...): fn(s, ...) runs as a child task; s:spawn adds more children.
 * The scope returns fn's results once every child has ended. The first child that
 * fails cancels the others, and its error is raised. */
typedef struct scope {
  group g;
  uint8_t ended;         /* the scope has returned: s:spawn raises */
} scope;

static void scope_child_done(lr_owner *o, lr_task *c) {
  scope *s = (scope *)o;
  lua_State *L = s->g.rt->L;
  c->owner = NULL;
  s->g.running--;
  if (c->result == LR_RES_FAILED && !s->g.failed && !s->g.cancelled) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->g.ref);
    keep_failure(L, &s->g, lua_gettop(L), c);
    lua_pop(L, 1);
    cancel_children(&s->g);
  }
  if (s->g.running == 0) wake_waiter(&s->g);
}

static int scope_k(lua_State *L, int status, lua_KContext ctx) {
  int sidx = (int)ctx;
  scope *s = luaL_checkudata(L, sidx, SCOPE_MT);
  lr_task *body = lr_task_check(L, sidx + 1);
  (void)status;
  s->ended = 1;
  unanchor(L, &s->g);
  if (s->g.cancelled) lr_error_raise_cancelled(L);
  if (s->g.failed) return raise_failure(L, &s->g, sidx);
  if (body->result != LR_RES_OK) return 0; /* the body was cancelled (s:cancel()) */
  return lr_task_push_values(L, body, -1);
}

int lr_scope(lua_State *L) {
  lr_task *t, *body;
  scope *s;
  int nargs = lua_gettop(L) - 1, sidx;
  if (!lr_is_callable(L, 1)) luaL_typeerror(L, 1, "function");
  t = lr_task_enter(L, "scope");
  s = (scope *)new_group(L, sizeof *s, SCOPE_MT, scope_child_done, t->rt);
  lua_insert(L, 1);                        /* s fn args */
  sidx = 1;
  anchor(L, &s->g, sidx);
  lua_pushvalue(L, 2);                     /* s fn args fn */
  lua_pushvalue(L, sidx);                  /* s fn args fn s */
  lua_rotate(L, 3, 2);                     /* s fn fn s args */
  body = lr_task_spawn(L, t->rt, nargs + 1, 1); /* s fn body */
  lua_remove(L, 2);                        /* s body */
  adopt(&s->g, body, 0);
  lr_waitq_push(&s->g.parentq, t);
  return lr_task_park_on(L, t, group_cancel, NULL, sidx, scope_k);
}

static scope *check_scope(lua_State *L) {
  return luaL_checkudata(L, 1, SCOPE_MT);
}

/* s:spawn(fn, ...) -> task: a child of the scope. */
static int scope_spawn(lua_State *L) {
  scope *s = check_scope(L);
  lr_task *c;
  if (!lr_is_callable(L, 2)) luaL_typeerror(L, 2, "function");
  if (s->ended) return luaL_error(L, "spawn: this scope has ended (spawn inside it)");
  c = lr_task_spawn(L, s->g.rt, lua_gettop(L) - 2, 1);
  adopt(&s->g, c, 0);
  /* Spawned into a scope that is unwinding: it starts cancelled and never runs. */
  if (s->g.failed || s->g.cancelled || s->g.stopped) lr_task_cancel(c);
  return 1;
}

/* s:cancel(): cancels every child (the body too); the scope then returns normally. */
static int scope_cancel(lua_State *L) {
  scope *s = check_scope(L);
  if (!s->ended) {
    s->g.stopped = 1;
    cancel_children(&s->g);
  }
  return 0;
}

/* ================= race ================= */

/* lr.race(f1, f2, ...) or lr.race(list): the results of whichever ends first (or its
 * error); the others are cancelled, and race returns once they have unwound. A
 * contender that is cancelled from outside does not win. */
typedef struct race {
  group g;
  uint32_t winner;       /* index of the first to end, 0 while none */
} race;

static void race_child_done(lr_owner *o, lr_task *c) {
  race *r = (race *)o;
  c->owner = NULL;
  r->g.running--;
  if (r->winner == 0 && c->result != LR_RES_CANCELLED) {
    r->winner = c->owner_idx;
    r->g.stopped = 1;
    cancel_children(&r->g);
  }
  if (r->g.running == 0) wake_waiter(&r->g);
}

static int race_k(lua_State *L, int status, lua_KContext ctx) {
  int ridx = (int)ctx;
  race *r = lua_touserdata(L, ridx);
  lr_task *w;
  (void)status;
  unanchor(L, &r->g);
  if (r->g.cancelled) lr_error_raise_cancelled(L);
  if (r->winner == 0) lr_error_raise_cancelled(L); /* every contender was cancelled */
  lua_getiuservalue(L, ridx, UV_ITEMS);
  lua_rawgeti(L, -1, (lua_Integer)r->winner);
  w = lr_task_check(L, -1);
  return lr_task_push_results(L, w, 0);
}

/* Replaces the items of the table at tidx by tasks: functions are spawned, tasks
 * adopted (one already done is handed to done()). */
static void start_items(lua_State *L, group *g, int tidx, uint32_t n) {
  uint32_t i;
  for (i = 1; i <= n; i++) {
    lr_task *c;
    lua_rawgeti(L, tidx, (lua_Integer)i);
    if ((c = lr_task_test(L, -1)) == NULL) {
      c = lr_task_spawn(L, g->rt, 0, 0);
      lua_pushvalue(L, -1);
      lua_rawseti(L, tidx, (lua_Integer)i);
    }
    lua_pop(L, 1);
    adopt(g, c, i);
    if (c->state == LR_DONE) g->base.child_done(&g->base, c);
    else if (g->stopped) lr_task_cancel(c); /* race: a task passed in had won already */
  }
}

/* Reads the items: the varargs from 1, or the one array at 1. Leaves a fresh array
 * of them at 1 (and nothing else) and returns its length. */
static uint32_t collect_items(lua_State *L, const char *fname) {
  int nargs = lua_gettop(L), i;
  lua_Integer n;
  lr_runtime *rt = lr_runtime_get(L);
  if (nargs == 1 && lua_type(L, 1) == LUA_TTABLE && !lr_is_callable(L, 1)) {
    n = (lua_Integer)lua_rawlen(L, 1);
    lua_createtable(L, (int)n, 0);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, 1, i);
      lr_check_child(L, rt, -1, fname, i, 0);
      lua_rawseti(L, -2, i);
    }
    lua_replace(L, 1);
    lua_settop(L, 1);
  } else {
    n = nargs;
    for (i = 1; i <= nargs; i++) lr_check_child(L, rt, i, fname, i, 0);
    lua_createtable(L, nargs, 0);
    lua_insert(L, 1);
    for (i = nargs; i >= 1; i--) lua_rawseti(L, 1, i);
  }
  if (n > (lua_Integer)UINT32_MAX - 1) luaL_error(L, "%s: too many items", fname);
  return (uint32_t)n;
}

int lr_race(lua_State *L) {
  lr_task *t;
  race *r;
  uint32_t n = collect_items(L, "race");
  if (n == 0) return luaL_error(L, "race: nothing to race (give functions or tasks)");
  t = lr_task_enter(L, "race");
  r = (race *)new_group(L, sizeof *r, NULL, race_child_done, t->rt); /* items r */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 2, UV_ITEMS);
  anchor(L, &r->g, 2);
  t->rt->where_hint = lr_task_where(L, t->rt, 1);
  start_items(L, &r->g, 1, n);
  if (r->g.running == 0) return race_k(L, LUA_OK, 2);
  lr_waitq_push(&r->g.parentq, t);
  return lr_task_park_on(L, t, group_cancel, NULL, 2, race_k);
}

/* ================= as_completed ================= */

/* for i, value in lr.as_completed(list [, {settle = true}]) do ... end
 * Starts every item, then yields (index, first result) in the order they end. An
 * error is raised from the loop (unless settle: then value is {ok =, value|error =}),
 * and leaving the loop early, by break or error, cancels the items still running. */
typedef struct completed {
  group g;
  uint32_t n, handed;    /* items, and how many the loop has had */
  uint32_t head, tail;   /* ring of ended indexes, not yet handed */
  uint8_t settle;
  uint32_t ring[];
} completed;

static void completed_child_done(lr_owner *o, lr_task *c) {
  completed *a = (completed *)o;
  c->owner = NULL;
  a->g.running--;
  a->ring[a->tail++ % a->n] = c->owner_idx;
  wake_waiter(&a->g);
  if (a->g.running == 0) unanchor(a->g.rt->L, &a->g);
}

static void completed_describe(lua_State *L, lr_task *t) {
  completed *a = container_of(t->inq, completed, g.parentq);
  lua_pushfstring(L, "as_completed, %d of %d still running", (int)a->g.running, (int)a->n);
}

static int completed_next(lua_State *L);

static int completed_next_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = (lr_task *)ctx;
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  return completed_next(L);
}

static int completed_next(lua_State *L) {
  completed *a = luaL_checkudata(L, 1, COMPLETED_MT);
  lr_task *t, *c;
  uint32_t i;
  if (a->handed == a->n) return 0; /* every item handed out: the loop ends */
  if (a->head == a->tail) {
    t = lr_task_enter(L, "as_completed");
    if (a->g.parentq.head)
      return luaL_error(L, "as_completed: another task is already waiting on this loop");
    lua_settop(L, 1);
    lr_waitq_push(&a->g.parentq, t);
    /* A cancel just wakes the loop: leaving it, its <close> cancels the items. */
    return lr_task_park_on(L, t, NULL, completed_describe, (lua_KContext)t,
                           completed_next_k);
  }
  i = a->ring[a->head++ % a->n];
  a->handed++;
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, UV_ITEMS);
  lua_rawgeti(L, 2, (lua_Integer)i);
  c = lr_task_check(L, 3);
  lua_pushnil(L);
  lua_rawseti(L, 2, (lua_Integer)i); /* handed out: its outcome can be freed */
  lua_pushinteger(L, (lua_Integer)i);
  if (a->settle) {
    int ok = c->result == LR_RES_OK;
    lua_createtable(L, 0, 2);
    lua_pushboolean(L, ok);
    lua_setfield(L, -2, "ok");
    if (ok) {
      if (lr_task_push_values(L, c, 1) == 0) lua_pushnil(L);
    } else {
      lr_task_push_error(L, c);
    }
    lua_setfield(L, -2, ok ? "value" : "error");
    return 2;
  }
  if (c->result != LR_RES_OK) return lr_task_push_results(L, c, 1); /* raises */
  if (lr_task_push_values(L, c, 1) == 0) lua_pushnil(L);
  return 2;
}

/* The loop's closing value: leaving the loop cancels what still runs. */
static int completed_close(lua_State *L) {
  completed *a = luaL_checkudata(L, 1, COMPLETED_MT);
  if (a->g.running > 0) cancel_children(&a->g);
  return 0;
}

int lr_as_completed(lua_State *L) {
  lr_runtime *rt = lr_runtime_get(L);
  completed *a;
  uint32_t n;
  int settle = 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "settle");
    settle = lua_toboolean(L, -1);
  }
  if (!rt->running)
    return luaL_error(L, "as_completed: the luarun loop is not running (call it inside "
                      "lr.run)");
  lua_settop(L, 1);
  n = collect_items(L, "as_completed");
  a = (completed *)new_group(L, sizeof *a + (n ? n : 1) * sizeof a->ring[0], COMPLETED_MT,
                             completed_child_done, rt);
  a->n = n;
  a->settle = (uint8_t)settle;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 2, UV_ITEMS);
  rt->where_hint = lr_task_where(L, rt, 1);
  if (n > 0) anchor(L, &a->g, 2);
  start_items(L, &a->g, 1, n);
  lua_pushcfunction(L, completed_next);
  lua_pushvalue(L, 2);
  lua_pushnil(L);
  lua_pushvalue(L, 2);
  return 4; /* iterator, state, initial value, closing value */
}

void lr_scope_register(lua_State *L) {
  static const luaL_Reg scope_methods[] = {
    {"spawn", scope_spawn}, {"cancel", scope_cancel}, {NULL, NULL}};
  static const luaL_Reg completed_meta[] = {{"__close", completed_close}, {NULL, NULL}};
  lr_register_class(L, SCOPE_MT, scope_methods, NULL);
  lr_register_class(L, COMPLETED_MT, NULL, completed_meta);
}
