/* group.c: tasks that own child tasks: gather (and map) and timeout.
 *
 * The owner hears of each child's end through lr_owner.child_done, called by the
 * scheduler, so nothing polls. The parent parks in a wait queue embedded in the owner
 * struct: its cancel hook finds the owner from that queue, cancels the children, and
 * lets the parent go only once they have all unwound (their <close> handlers ran).
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include "lr_prims.h"

int lr_is_callable(lua_State *L, int idx) {
  if (lua_isfunction(L, idx)) return 1;
  if (luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return 1;
  }
  return 0;
}

/* ================= gather and map ================= */

enum { UV_INPUTS = 1, UV_RESULTS, UV_FN, UV_ERROR, UV_REPORT, GATHER_NUV = UV_REPORT };

typedef struct gather {
  lr_owner base;
  lr_waitq parentq;
  lr_runtime *rt;
  lr_task *parent;
  uint32_t n, next, running, limit;
  uint32_t where;        /* spawn location reported for the children */
  int ref;               /* registry anchor while children run */
  lr_progress *progress; /* the progress line this group draws, or NULL */
  uint8_t settle, failed, cancelled, map;
} gather;

/* What the options table of the list forms says. */
typedef struct group_opts {
  uint32_t limit;
  int settle, progress;
  char label[LR_PROGRESS_LABEL_MAX + 1];
} group_opts;


static void push_gather(lua_State *L, gather *g) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->ref);
}

static void cancel_if_mine(lr_task *t, void *g) {
  if (t->owner == (lr_owner *)g) lr_task_cancel(t);
}

/* Children are found through the live-task table rather than kept in a table of
 * our own: that would cost 16 bytes a child for the rare case of an error or a
 * cancel. */
void lr_owner_cancel_children(lr_runtime *rt, lr_owner *o) {
  lr_runtime_each_task(rt, cancel_if_mine, o);
}

/* Counts child c's end on the progress line, before record() has seen it: a failure
 * is an item that raised, or was cancelled by someone else; the siblings that a first
 * failure or a cancel of the group stops are not counted at all. */
static void count_end(gather *g, lr_task *c) {
  if (g->progress == NULL) return;
  if (c->result == LR_RES_OK) lr_progress_step(g->progress, 0);
  else if (c->result == LR_RES_FAILED || !(g->failed || g->cancelled))
    lr_progress_step(g->progress, 1);
}

/* Records the outcome of child i (task c, done) in the results table at results_idx. */
static void record(lua_State *L, gather *g, int gidx, uint32_t i, lr_task *c) {
  int ok = c->result == LR_RES_OK;
  lua_getiuservalue(L, gidx, UV_RESULTS);
  if (ok || g->settle) {
    if (g->settle) {
      lua_createtable(L, 0, 2);
      lua_pushboolean(L, ok);
      lua_setfield(L, -2, "ok");
    }
    if (!ok) lr_task_push_error(L, c);
    else if (lr_task_push_values(L, c, 1) == 0) lua_pushnil(L);
    if (g->settle) lua_setfield(L, -2, ok ? "value" : "error");
  } else {
    if (!g->failed && !g->cancelled) {
      /* The first error: keep it with its report, and stop the siblings. */
      g->failed = 1;
      lr_task_push_error(L, c);
      lua_setiuservalue(L, gidx, UV_ERROR);
      lr_task_push_report(L, c);
      lua_setiuservalue(L, gidx, UV_REPORT);
    }
    lua_pushnil(L);
  }
  lua_rawseti(L, -2, (lua_Integer)i);
  lua_pop(L, 1);
}

/* Starts child i. L: a usable thread with the gather userdata at gidx. */
static void start_child(lua_State *L, gather *g, int gidx, uint32_t i) {
  lr_task *c;
  g->rt->where_hint = g->where;
  lua_getiuservalue(L, gidx, UV_INPUTS);
  lua_rawgeti(L, -1, (lua_Integer)i);          /* inputs item */
  lua_remove(L, -2);                          /* item */
  g->running++;
  if (g->map) {
    lua_getiuservalue(L, gidx, UV_FN);
    lua_insert(L, -2);
    lua_pushinteger(L, (lua_Integer)i);       /* fn item i */
    c = lr_task_spawn(L, g->rt, 2, 0);
  } else if ((c = lr_task_test_rt(L, g->rt, -1)) == NULL) {
    c = lr_task_spawn(L, g->rt, 0, 0);
  } else { /* a task passed in: inputs[i] holds it already */
    c->flags |= LR_F_WAITED;
    lua_pop(L, 1);
    if (c->state == LR_DONE) { /* it has finished already */
      g->running--;
      count_end(g, c);
      record(L, g, gidx, i, c);
    } else {
      c->owner = &g->base;
      c->owner_idx = i;
    }
    return;
  }
  c->flags |= LR_F_WAITED;
  c->owner = &g->base;
  c->owner_idx = i;
  lua_pop(L, 1);
}

/* Starts children up to the limit; wakes the parent when everything has ended. */
static void refill(lua_State *L, gather *g, int gidx) {
  while (!g->failed && !g->cancelled && g->running < g->limit && g->next <= g->n)
    start_child(L, g, gidx, g->next++);
}

static int all_ended(gather *g) {
  return g->running == 0 && (g->next > g->n || g->failed || g->cancelled);
}

static void gather_child_done(lr_owner *o, lr_task *c) {
  gather *g = (gather *)o;
  lua_State *L = g->rt->L;
  int failed_before = g->failed;
  c->owner = NULL;
  g->running--;
  count_end(g, c);
  /* A child that ended well with nothing to return leaves its result nil, and once
   * every child has started there is nothing to refill: the gather's userdata and
   * results table need not be touched (100,000 children of lr.gather: 5 % fewer
   * instructions in all). */
  if (c->result != LR_RES_OK || c->packed != LR_PACK_NONE || g->settle || g->next <= g->n) {
    push_gather(L, g);
    record(L, g, lua_gettop(L), c->owner_idx, c);
    if (g->failed && !failed_before) lr_owner_cancel_children(g->rt, &g->base);
    refill(L, g, lua_gettop(L));
    lua_pop(L, 1);
  }
  if (all_ended(g) && g->parent && g->parent->inq == &g->parentq)
    lr_task_wake(g->parent, LR_WAKE_DONE);
}

static void gather_cancel(lr_task *t) {
  gather *g = container_of(t->inq, gather, parentq);
  g->cancelled = 1;
  lr_owner_cancel_children(g->rt, &g->base);
  if (g->running == 0) lr_task_wake(t, LR_WAKE_CANCELLED);
}

static int gather_results(lua_State *L, gather *g, int gidx, int varargs) {
  uint32_t i;
  int ridx;
  luaL_unref(L, LUA_REGISTRYINDEX, g->ref);
  g->ref = LUA_NOREF;
  g->parent = NULL;
  if (g->progress) { /* every path out goes here, raising or not */
    lr_progress_end(g->progress, g->cancelled ? LR_PROGRESS_CANCELLED
                                 : g->failed  ? LR_PROGRESS_FAILED
                                              : LR_PROGRESS_DONE);
    g->progress = NULL;
  }
  if (g->cancelled) lr_error_raise_cancelled(L);
  if (g->failed) {
    lua_getiuservalue(L, gidx, UV_ERROR);
    lua_getiuservalue(L, gidx, UV_REPORT);
    return lr_raise_relayed(L, g->rt);
  }
  lua_getiuservalue(L, gidx, UV_RESULTS);
  if (!varargs) {
    lua_pushinteger(L, (lua_Integer)g->n);
    lua_setfield(L, -2, "n");
    return 1;
  }
  ridx = lua_gettop(L);
  luaL_checkstack(L, (int)g->n, "too many results");
  for (i = 1; i <= g->n; i++) lua_rawgeti(L, ridx, (lua_Integer)i);
  return (int)g->n;
}

/* ctx packs the gather's stack index and whether the varargs form was used. */
static int gather_k(lua_State *L, int status, lua_KContext ctx) {
  int gidx = (int)(ctx >> 1);
  (void)status;
  return gather_results(L, lua_touserdata(L, gidx), gidx, (int)(ctx & 1));
}

static void default_opts(group_opts *o) {
  o->limit = UINT32_MAX;
  o->settle = o->progress = 0;
  o->label[0] = '\0';
}

static void read_opts(lua_State *L, int idx, const char *fname, group_opts *o) {
  lua_Integer limit = 0;
  default_opts(o);
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  if (lua_getfield(L, idx, "limit") != LUA_TNIL) {
    int isint;
    limit = lua_tointegerx(L, -1, &isint);
    if (!isint || limit < 1)
      luaL_error(L, "%s: opts.limit must be a positive integer", fname);
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "settle");
  o->settle = lua_toboolean(L, -1);
  lua_pop(L, 1);
  o->progress = lr_progress_opt(L, idx, fname, o->label);
  if (limit > 0 && limit < UINT32_MAX) o->limit = (uint32_t)limit;
}

void lr_check_child(lua_State *L, lr_runtime *rt, int idx, const char *fname, lua_Integer i,
                    int arg) {
  lr_task *c = lr_task_test_rt(L, rt, idx);
  if (c) {
    if (c->owner)
      luaL_error(L, "%s: task %d is already owned by a gather, scope, race or timeout",
                 fname, (int)c->id);
    return;
  }
  if (!lr_is_callable(L, idx)) {
    if (arg) luaL_typeerror(L, (int)i, "function or task");
    luaL_error(L, "%s: item %d is not a function or task (got %s)", fname, (int)i,
               luaL_typename(L, idx));
  }
}

/* The shared body of gather and map. Stack on entry: inputs table, [fn]. */
static int run_group(lua_State *L, lr_task *t, uint32_t n, const group_opts *o, int map,
                     int varargs) {
  lr_runtime *rt = t->rt;
  gather *g;
  int gidx;
  size_t size = sizeof *g;
  int has_fn = map;
  g = lua_newuserdatauv(L, size, GATHER_NUV);  /* inputs [fn] g */
  memset(g, 0, size);
  g->ref = LUA_NOREF;
  gidx = lua_gettop(L);
  if (has_fn) {
    lua_pushvalue(L, gidx - 1);
    lua_setiuservalue(L, gidx, UV_FN);
  }
  lua_pushvalue(L, gidx - 1 - has_fn);
  lua_setiuservalue(L, gidx, UV_INPUTS);
  /* Not presized: with tasks passed in whose results are nil it stays empty. */
  lua_createtable(L, 0, 1);
  lua_setiuservalue(L, gidx, UV_RESULTS);
  g->base.child_done = gather_child_done;
  g->rt = rt;
  g->n = n;
  g->next = 1;
  g->limit = o->limit;
  g->settle = (uint8_t)o->settle;
  g->map = (uint8_t)map;
  g->parent = t;
  g->where = lr_task_where(L, rt, 1);
  lua_pushvalue(L, gidx);
  g->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* Last, after everything that may raise: once drawn, only gather_results ends it. */
  if (o->progress) g->progress = lr_progress_start(rt, o->label, n);
  refill(L, g, gidx);
  if (all_ended(g)) return gather_results(L, g, gidx, varargs);
  lr_waitq_push(&g->parentq, t);
  return lr_task_park(L, t, gather_cancel, ((lua_KContext)gidx << 1) | varargs, gather_k);
}

int lr_gather(lua_State *L) {
  int nargs = lua_gettop(L), varargs;
  group_opts o;
  lua_Integer i, n;
  lr_task *t;
  lr_runtime *rt = lr_runtime_get(L);
  varargs = !(nargs >= 1 && lua_type(L, 1) == LUA_TTABLE && !lr_is_callable(L, 1));
  if (varargs) {
    for (i = 1; i <= nargs; i++) lr_check_child(L, rt, (int)i, "gather", i, 1);
    n = nargs;
    default_opts(&o); /* this form takes no options */
  } else {
    read_opts(L, 2, "gather", &o);
    n = (lua_Integer)lua_rawlen(L, 1);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, 1, i);
      lr_check_child(L, rt, -1, "gather", i, 0);
      lua_pop(L, 1);
    }
  }
  t = lr_task_enter(L, "gather");
  luaL_checkstack(L, 8, "gather");
  if (varargs) {
    lua_createtable(L, nargs, 0);
    for (i = 1; i <= nargs; i++) {
      lua_pushvalue(L, (int)i);
      lua_rawseti(L, -2, i);
    }
    lua_replace(L, 1);
    lua_settop(L, 1);
  } else {
    lua_settop(L, 1);
  }
  return run_group(L, t, (uint32_t)n, &o, 0, varargs);
}

int lr_map(lua_State *L) {
  group_opts o;
  lr_task *t;
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!lr_is_callable(L, 2)) luaL_typeerror(L, 2, "function");
  read_opts(L, 3, "map", &o);
  t = lr_task_enter(L, "map");
  lua_settop(L, 2);
  return run_group(L, t, (uint32_t)lua_rawlen(L, 1), &o, 1, 0);
}

/* ================= timeout ================= */

typedef struct timeout {
  lr_owner base;
  lr_waitq parentq;
  lr_task *parent, *child;
  double seconds;
  uint8_t child_done, expired, parent_cancelled;
} timeout;

static void timeout_child_done(lr_owner *o, lr_task *c) {
  timeout *m = (timeout *)o;
  (void)c;
  m->child_done = 1;
  if (m->parent && m->parent->inq == &m->parentq) lr_task_wake(m->parent, LR_WAKE_DONE);
}

static void timeout_cancel(lr_task *t) {
  timeout *m = container_of(t->inq, timeout, parentq);
  m->parent_cancelled = 1;
  if (lr_timer_has(t->rt, t)) lr_timer_remove(t->rt, t);
  t->flags |= LR_F_SHIELD; /* stay parked until the child has unwound */
  lr_task_cancel(m->child);
}

static int timeout_k(lua_State *L, int status, lua_KContext ctx) {
  timeout *m = (timeout *)ctx;
  lr_task *t = m->parent;
  (void)status;
  t->flags &= (uint8_t)~LR_F_SHIELD;
  if (!m->child_done) {
    /* The deadline passed: cancel the child and wait, shielded, for it to unwind. */
    m->expired = 1;
    lr_task_cancel(m->child);
    t->flags |= LR_F_SHIELD;
    lr_waitq_push(&m->parentq, t);
    return lr_task_park(L, t, timeout_cancel, ctx, timeout_k);
  }
  m->parent = NULL;
  if (m->parent_cancelled || (t->flags & LR_F_CANCEL)) lr_error_raise_cancelled(L);
  if (m->expired && m->child->result == LR_RES_CANCELLED) {
    char msg[64];
    snprintf(msg, sizeof msg, "timed out after %g s", m->seconds);
    lua_pushnil(L);
    lr_error_push(L, "timeout", msg);
    lua_pushnumber(L, m->seconds);
    lua_setfield(L, -2, "seconds");
    return 2;
  }
  return lr_task_push_results(L, m->child, 0);
}

int lr_timeout(lua_State *L) {
  double secs = luaL_checknumber(L, 1);
  int nargs;
  lr_task *t;
  timeout *m;
  uint64_t deadline;
  if (secs != secs) luaL_argerror(L, 1, "not a number (NaN)");
  if (!lr_is_callable(L, 2)) luaL_typeerror(L, 2, "function");
  t = lr_task_enter(L, "timeout");
  nargs = lua_gettop(L) - 2;
  m = lua_newuserdatauv(L, sizeof *m, 0);     /* secs fn args m */
  memset(m, 0, sizeof *m);
  lua_replace(L, 1);                           /* m fn args */
  m->base.child_done = timeout_child_done;
  m->seconds = secs < 0 ? 0 : secs;
  m->parent = t;
  m->child = lr_task_spawn(L, t->rt, nargs, 1); /* m task */
  m->child->owner = &m->base;
  m->child->flags |= LR_F_WAITED;
  deadline = lr_timer_deadline(m->seconds);
  lr_waitq_push(&m->parentq, t);
  if (deadline != UINT64_MAX && lr_timer_add(t->rt, t, deadline) != 0) {
    lr_waitq_remove(&m->parentq, t);
    return luaL_error(L, "timeout: out of memory");
  }
  return lr_task_park(L, t, timeout_cancel, (lua_KContext)m, timeout_k);
}
