/* sched.c: tasks, the ready queue, parking and waking, cancellation.
 *
 * A task is a full userdata (luarun.Task) holding struct lr_task. While a task is not
 * done its thread is anchored in the runtime's live-task table (slot t->ref), so a task
 * nobody references still runs to the end; the thread's stack holds the userdata.
 *
 * The userdata has no finalizer. What outlives the thread hangs off the userdata in
 * tables with weak keys, which the collector clears with it: the outcome (results or
 * error, below) and the name (tasks.c). A finalizable object costs the collector a
 * pass over the finalizer list each cycle, a call of __gc and a second cycle before
 * its memory is freed, and lua_close calls each __gc left: for 100,000 tasks that was
 * 7 % of the instructions of spawning, sleeping and gathering them (issue 20). Giving
 * the finalizer only to tasks that keep something was tried and dropped: Lua finds an
 * object it must move to its finalizer list by walking every object made after it,
 * so cancelling 100,000 old tasks took minutes.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "lr_sched.h"

char lr_park_sentinel;

#define TASK_MT "luarun.Task"
/* registry[&outcomes_key]: task userdata -> outcome (weak keys).
 * registry[&selves_key]: lightuserdata(t) -> task userdata (weak values), the way from
 * a done task's struct back to its userdata, for tasks that keep something. */
static const char outcomes_key = 'o';
static const char selves_key = 's';

/* ---- wait queues ---- */

void lr_waitq_push(lr_waitq *q, lr_task *t) {
  lr_task *h = q->head;
  if (h == NULL) {
    t->next = t->prev = t;
    q->head = t;
  } else {
    t->next = h;
    t->prev = h->prev;
    h->prev->next = t;
    h->prev = t;
  }
  t->inq = q;
}

void lr_waitq_remove(lr_waitq *q, lr_task *t) {
  if (t->next == t) {
    q->head = NULL;
  } else {
    t->prev->next = t->next;
    t->next->prev = t->prev;
    if (q->head == t) q->head = t->next;
  }
  t->next = t->prev = NULL;
  t->inq = NULL;
}

lr_task *lr_waitq_pop(lr_waitq *q) {
  lr_task *t = q->head;
  if (t) lr_waitq_remove(q, t);
  return t;
}

/* ---- the live-task table: slot allocation without luaL_ref (whose free-list
 * header in 5.4.4 sits at index 3 and confuses the length of a plain table) ---- */

static int live_anchor(lua_State *L, lr_runtime *rt) {
  /* stack: the task's thread on top (left there) */
  int slot;
  if (rt->free_n > 0) {
    slot = (int)rt->free_slots[--rt->free_n];
  } else {
    slot = (int)++rt->slot_max;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->tasks_ref);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  return slot;
}

static void live_release(lua_State *L, lr_runtime *rt, lr_task *t) {
  int slot = t->ref;
  if (slot <= 0) return;
  t->ref = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->tasks_ref);
  lua_pushnil(L);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  if (rt->free_n == rt->free_cap) {
    uint32_t cap = rt->free_cap ? rt->free_cap * 2 : 256;
    void *p = realloc(rt->free_slots, cap * sizeof *rt->free_slots);
    if (p == NULL) return; /* the slot is never reused: harmless */
    rt->free_slots = p;
    rt->free_cap = cap;
  }
  rt->free_slots[rt->free_n++] = (uint32_t)slot;
}

/* ---- creating tasks ---- */

/* The source string of a live function's prototype stays put: a pointer compare is
 * enough to know the last spawn site is the same one. */
static void remember_where(lr_runtime *rt, lua_State *L, int level, uint16_t id) {
  lua_Debug ar;
  if (lua_getstack(L, level, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
    rt->where_last_src = ar.source;
    rt->where_last_line = ar.currentline;
    rt->where_last_id = id;
  }
}

/* Interns the spawn location so a task stores 2 bytes instead of a string. */
uint16_t lr_task_where(lua_State *L, lr_runtime *rt, int level) {
  lua_Integer id;
  lua_Debug ar;
  /* Spawns in a loop come from one place: skip formatting and lookup then. */
  if (lua_getstack(L, level, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0 &&
      ar.source == rt->where_last_src && ar.currentline == rt->where_last_line)
    return rt->where_last_id;
  rt->where_last_src = NULL;
  luaL_where(L, level);                      /* where */
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->where_ref); /* where, tbl */
  lua_pushvalue(L, -2);
  if (lua_rawget(L, -2) == LUA_TNUMBER) {
    id = lua_tointeger(L, -1);
    lua_pop(L, 3);
    remember_where(rt, L, level, (uint16_t)id);
    return (uint16_t)id;
  }
  lua_pop(L, 1);
  id = (lua_Integer)lua_rawlen(L, -1) + 1;
  if (id > UINT16_MAX) { /* a script generating code at will: stop recording */
    lua_pop(L, 2);
    return 0;
  }
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, id);                    /* tbl[id] = where */
  lua_pushvalue(L, -2);
  lua_pushinteger(L, id);
  lua_rawset(L, -3);                         /* tbl[where] = id */
  lua_pop(L, 2);
  remember_where(rt, L, level, (uint16_t)id);
  return (uint16_t)id;
}

lr_task *lr_task_spawn(lua_State *L, lr_runtime *rt, int nargs, int level) {
  /* stack: fn, args... */
  lr_task *t = lua_newuserdatauv(L, sizeof *t, 0); /* fn args ud */
  lua_State *co;
  memset(t, 0, sizeof *t);
  /* By integer ref: luaL_setmetatable hashes and compares the name every spawn. */
  if (rt->task_mt_ref > 0) lua_rawgeti(L, LUA_REGISTRYINDEX, rt->task_mt_ref);
  else luaL_getmetatable(L, TASK_MT);
  lua_setmetatable(L, -2);
  co = lua_newthread(L);                     /* fn args ud co */
  lua_pushvalue(L, -2);
  lua_xmove(L, co, 1);                       /* co: ud */
  t->co = co;
  t->rt = rt;
  t->id = ++rt->next_id;
  t->where = level > 0 ? lr_task_where(L, rt, level) : rt->where_hint;
  *(lr_task **)lua_getextraspace(co) = t;
  t->ref = live_anchor(L, rt);
  lua_pop(L, 1);                             /* fn args ud */
  lua_rotate(L, -(nargs + 2), 1);            /* ud fn args */
  lua_xmove(L, co, nargs + 1);               /* ud; co: ud fn args */
  rt->live++;
  t->state = LR_READY;
  lr_waitq_push(&rt->ready, t);
  LR_HOOK(rt, spawn, t);
  return t;
}

lr_task *lr_task_check(lua_State *L, int idx) {
  return (lr_task *)luaL_checkudata(L, idx, TASK_MT);
}

lr_task *lr_task_test(lua_State *L, int idx) {
  return (lr_task *)luaL_testudata(L, idx, TASK_MT);
}

lr_task *lr_task_test_rt(lua_State *L, lr_runtime *rt, int idx) {
  const void *mt;
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
  mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  return mt == rt->task_mt ? (lr_task *)lua_touserdata(L, idx) : NULL;
}

/* ---- which task is running here ---- */

/* Pushes "table.sort" for a function found in a loaded module, else "?". */
static void push_global_name(lua_State *L, int fidx) {
  fidx = lua_absindex(L, fidx);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (lua_rawequal(L, -1, fidx) && lua_type(L, -2) == LUA_TSTRING) {
          const char *mod = lua_tostring(L, -4);
          if (strcmp(mod, "_G") == 0) lua_pushstring(L, lua_tostring(L, -2));
          else lua_pushfstring(L, "%s.%s", mod, lua_tostring(L, -2));
          lua_replace(L, -6);
          lua_pop(L, 4);
          return;
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushliteral(L, "?");
}

/* Names the C function that stops a yield, so the user can move the call. */
static int boundary_error(lua_State *L, const char *fname) {
  lua_Debug ar;
  int level;
  for (level = 1; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Snf", &ar);
    if (ar.what[0] == 'C') {
      push_global_name(L, -1);
      return luaL_error(L,
          "%s: cannot suspend the task inside C function '%s', which does not "
          "allow yields (move the call out of it)", fname, lua_tostring(L, -1));
    }
    lua_pop(L, 1);
  }
  return luaL_error(L,
      "%s: cannot suspend the task here: a C function that does not allow yields "
      "is in the way (a coroutine resumed from a metamethod, iterator or C callback)",
      fname);
}

lr_task *lr_task_can_park(lua_State *L) {
  uintptr_t v = *(uintptr_t *)lua_getextraspace(L);
  return v != 0 && !(v & 1) && lua_isyieldable(L) ? (lr_task *)v : NULL;
}

lr_task *lr_task_current(lua_State *L, const char *fname) {
  uintptr_t v = *(uintptr_t *)lua_getextraspace(L);
  if (v == 0)
    luaL_error(L, "%s: not inside a luarun task (run the script with luarun, or "
               "call it inside lr.run)", fname);
  if ((v & 1) || !lua_isyieldable(L)) boundary_error(L, fname);
  return (lr_task *)v;
}

/* ---- parking and waking ---- */

static void cancel_default(lr_task *t) {
  lr_task_wake(t, LR_WAKE_CANCELLED);
}

/* Cancel hooks are kept in one table and a task stores a byte: 7 bytes a task saved.
 * Beside each hook, what a task parked with it waits on, for reports. Only the loop's
 * thread parks tasks, so the table needs no lock. */
#define MAX_HOOKS 64
static lr_cancel_fn hooks[MAX_HOOKS] = {cancel_default};
static lr_describe_fn describers[MAX_HOOKS];
static int nhooks = 1;

static uint8_t hook_index(lua_State *L, lr_cancel_fn fn, lr_describe_fn describe) {
  int i;
  if (fn == NULL) fn = cancel_default;
  for (i = 0; i < nhooks; i++)
    if (hooks[i] == fn && describers[i] == describe) return (uint8_t)i;
  if (nhooks == MAX_HOOKS) luaL_error(L, "luarun: too many kinds of cancel hook");
  hooks[nhooks] = fn;
  describers[nhooks] = describe;
  return (uint8_t)nhooks++;
}

int lr_task_park_on(lua_State *L, lr_task *t, lr_cancel_fn on_cancel, lr_describe_fn describe,
                    lua_KContext ctx, lua_KFunction k) {
  t->hook = hook_index(L, on_cancel, describe);
  /* A task woken before it parks (sleep(0), a result already there) stays ready. */
  if (t->state == LR_RUNNING) {
    t->state = LR_PARKED;
    t->wake = LR_WAKE_NONE;
  }
  lua_pushlightuserdata(L, LR_SENTINEL);
  return lua_yieldk(L, 1, ctx, k);
}

int lr_task_park(lua_State *L, lr_task *t, lr_cancel_fn on_cancel, lua_KContext ctx,
                 lua_KFunction k) {
  return lr_task_park_on(L, t, on_cancel, NULL, ctx, k);
}

lr_describe_fn lr_task_describer(lr_task *t) {
  return describers[t->hook];
}

lr_task *lr_task_self(lua_State *L) {
  return (lr_task *)(*(uintptr_t *)lua_getextraspace(L) & ~(uintptr_t)1);
}

void lr_task_wake(lr_task *t, int why) {
  lr_runtime *rt = t->rt;
  if (t->state == LR_DONE || t->state == LR_READY) return;
  if (lr_timer_has(rt, t)) lr_timer_remove(rt, t);
  if (t->inq) lr_waitq_remove(t->inq, t);
  t->wake = (uint8_t)why;
  t->state = LR_READY;
  lr_waitq_push(&rt->ready, t);
  /* A wake outside a scheduler turn comes from a libuv callback. If that callback
   * runs before the loop polls (a timer already due when uv_run began, because tasks
   * ran past its deadline), uv_run(UV_RUN_ONCE) would go on to block in epoll until
   * the next event, and the task with it: lr.timeout(0.001, lr.sleep, 10) beside a
   * busy task returned after the 10 s sleep, with the sleep's results (issue 23; seen
   * in the malloc-failure sweep under load). uv_stop makes that poll return at once,
   * and uv_run clears it as it returns. */
  if (rt->batch == NULL) uv_stop(&rt->loop);
}

void lr_task_cancel(lr_task *t) {
  if (t->state == LR_DONE) return;
  t->flags |= LR_F_CANCEL;
  if (t->state == LR_PARKED && !(t->flags & LR_F_SHIELD)) hooks[t->hook](t);
}

void lr_task_checkpoint(lua_State *L, lr_task *t) {
  if (t->flags & LR_F_CANCEL) lr_error_raise_cancelled(L);
}

lr_task *lr_task_enter(lua_State *L, const char *fname) {
  lr_task *t = lr_task_current(L, fname);
  lr_task_checkpoint(L, t);
  return t;
}

/* ---- outcomes ---- */

/* Pushes registry[key], a table with weak keys or values (mode), made on first use. */
static void push_weak(lua_State *L, const char *key, const char *mode) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) != LUA_TNIL) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

void lr_task_remember_ud(lua_State *L, lr_task *t, int idx) {
  idx = lua_absindex(L, idx);
  push_weak(L, &selves_key, "v");
  lua_pushvalue(L, idx);
  lua_rawsetp(L, -2, t);
  lua_pop(L, 1);
}

void lr_task_push_ud(lua_State *L, lr_task *t) {
  lr_task_push_self(L, t);
  if (!lua_isnil(L, -1)) return;
  lua_pop(L, 1);
  push_weak(L, &selves_key, "v");
  lua_rawgetp(L, -1, t);
  lua_remove(L, -2);
}

/* A done task's thread is freed, and so is its live-table slot. Its outcome, if any,
 * is kept with its userdata: the one result, or a table {n =, ...} of them; for a
 * failure, {report or false, error}. A task that ended with no results keeps nothing
 * (LR_PACK_NONE). Whoever asks holds the userdata, so the weak entries are there. */
static void push_slot(lua_State *L, lr_task *t) {
  push_weak(L, &outcomes_key, "k");     /* outcomes */
  lr_task_push_ud(L, t);                /* outcomes ud */
  lua_rawget(L, -2);                    /* outcomes outcome */
  lua_remove(L, -2);
}

int lr_task_push_values(lua_State *L, lr_task *t, int max) {
  int i, n, tidx;
  if (t->packed == LR_PACK_NONE || max == 0) return 0;
  push_slot(L, t);
  if (t->packed == LR_PACK_ONE) return 1;
  tidx = lua_gettop(L);
  lua_getfield(L, tidx, "n");
  n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (max > 0 && n > max) n = max;
  luaL_checkstack(L, n, "too many results");
  for (i = 1; i <= n; i++) lua_rawgeti(L, tidx, i);
  lua_remove(L, tidx);
  return n;
}

void lr_task_push_error(lua_State *L, lr_task *t) {
  push_slot(L, t);
  lua_rawgeti(L, -1, 2);
  lua_remove(L, -2);
}

void lr_task_push_report(lua_State *L, lr_task *t) {
  push_slot(L, t);
  lua_rawgeti(L, -1, 1);
  lua_remove(L, -2);
}

int lr_raise_relayed(lua_State *L, lr_runtime *rt) {
  /* Remember where this error came from, so a report at the top can show the
   * failing task's traceback even after the value was re-raised elsewhere. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->origin_ref); /* err report origin */
  lua_insert(L, -3);                                  /* origin err report */
  lua_rawseti(L, -3, 2);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, 1);                              /* origin err */
  return lua_error(L);
}

int lr_task_push_results(lua_State *L, lr_task *t, int first_only) {
  if (t->result != LR_RES_OK) {
    lr_task_push_error(L, t);
    lr_task_push_report(L, t);
    return lr_raise_relayed(L, t->rt);
  }
  return lr_task_push_values(L, t, first_only ? 1 : -1);
}

/* Builds the failure report for t: its own traceback, or that of the task whose error
 * it relayed. Leaves the stack of co as: report, error. */
static void make_report(lr_runtime *rt, lr_task *t) {
  lua_State *co = t->co;
  lua_State *L = rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->origin_ref);     /* origin */
  lua_rawgeti(L, -1, 1);                                 /* origin err */
  lua_pushvalue(co, -1);
  lua_xmove(co, L, 1);                                   /* origin err myerr */
  if (!lua_isnil(L, -1) && lua_rawequal(L, -1, -2)) {
    lua_rawgeti(L, -3, 2);                               /* ... report */
    lua_xmove(L, co, 1);
    lua_pop(L, 3);
  } else {
    lua_pop(L, 3);
    lr_report_push_traceback(L, co, t);                  /* L: report */
    lua_xmove(L, co, 1);                                 /* co: err report */
  }
  lua_insert(co, -2);                                    /* report err */
}

/* Pushes the task's userdata onto L: index 1 of the task's thread while it is
 * suspended, or the driver's copy while it runs. */
void lr_task_push_self(lua_State *L, lr_task *t) {
  lr_runtime *rt = t->rt;
  if (t == rt->current && rt->current_idx) {
    lua_pushvalue(rt->L, rt->current_idx);
    lua_xmove(rt->L, L, 1);
  } else if (t->co && t->state != LR_RUNNING) {
    /* see run_task: index 1 before the first run, the top afterwards */
    lua_pushvalue(t->co, (t->flags & LR_F_STARTED) ? -1 : LR_CO_SELF);
    lua_xmove(t->co, L, 1);
  } else {
    lua_pushnil(L);
  }
}

#define LR_NEVER_RAN (-1) /* status for finish: the body never ran */

/* self: the task's userdata on rt->L's stack (absolute index). */
static void finish(lr_runtime *rt, lr_task *t, int self, int status, int nres) {
  lua_State *co = t->co;
  lr_task *w;
  lua_State *L = rt->L;
  if (status == LUA_OK) {
    /* lua_resume counts every value on the stack, our self slot included */
    nres = lua_gettop(co) - LR_CO_SELF;
    t->result = LR_RES_OK;
    if (nres == 0) {
      t->packed = LR_PACK_NONE;
      lua_pushnil(L);
    } else if (nres == 1) {
      t->packed = LR_PACK_ONE;
      lua_xmove(co, L, 1);
    } else {
      int i;
      t->packed = LR_PACK_TABLE;
      lua_createtable(L, nres, 1);
      for (i = nres; i >= 1; i--) {
        lua_xmove(co, L, 1);
        lua_rawseti(L, -2, i);
      }
      lua_pushinteger(L, nres);
      lua_setfield(L, -2, "n");
    }
  } else {
    int cancelled = lr_error_is(co, -1, "cancelled");
    if (cancelled) lua_pushnil(L);
    else make_report(rt, t), lua_pushvalue(co, -2), lua_xmove(co, L, 1);
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1);                       /* L: report|nil, err */
    /* Run pending <close> handlers. The error stays on co's top: lua_resetthread
     * leaves there the same error, or the one a failing handler raised instead. */
    if (status != LR_NEVER_RAN) lua_resetthread(co); /* co: err or err2 */
    lua_xmove(co, L, 1);                       /* L: report, err, err2 */
    if (!lua_rawequal(L, -1, -2)) {
      cancelled = lr_error_is(L, -1, "cancelled");
      lua_pushstring(L, cancelled ? "" : lr_report_tostring(L, -1));
      lua_remove(L, -2);
      lua_pushliteral(L, "\n(raised by a <close> handler in ");
      lr_report_push_taskname(L, t);
      lua_pushliteral(L, ")");
      lua_concat(L, 4);                        /* L: report, err, err2, newreport */
      lua_replace(L, -4);
      lua_remove(L, -2);
      if (cancelled) {
        lua_pushnil(L);
        lua_replace(L, -3);
      }
    } else {
      lua_pop(L, 1);
    }
    /* L: report|nil, err */
    lua_createtable(L, 2, 0);
    lua_insert(L, -3);
    lua_rawseti(L, -3, 2);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushboolean(L, 0);
    }
    lua_rawseti(L, -2, 1);                     /* L: {report, err} */
    t->result = cancelled ? LR_RES_CANCELLED : LR_RES_FAILED;
  }
  /* L: outcome. Kept with the userdata (these tables allocate: a GC step may run,
   * so the thread keeps its anchor until it is no longer touched). */
  if (t->result == LR_RES_OK && t->packed == LR_PACK_NONE) {
    lua_pop(L, 1);
  } else {
    push_weak(L, &outcomes_key, "k");          /* outcome outcomes */
    lua_pushvalue(L, self);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);                         /* outcomes[ud] = outcome */
    lua_pop(L, 2);
    lr_task_remember_ud(L, t, self);
  }
  t->state = LR_DONE;
  *(lr_task **)lua_getextraspace(co) = NULL;
  lua_settop(co, 0);
  t->co = NULL;
  live_release(L, rt, t);                      /* the thread can be collected now */
  rt->live--;
  if (t->result == LR_RES_FAILED && !(t->flags & LR_F_WAITED) && !t->waiters.head &&
      !t->owner) {
    rt->failures++;
    lr_report_task_error(rt, t);
  }
  LR_HOOK(rt, done, t);
  while ((w = t->waiters.head) != NULL) lr_task_wake(w, LR_WAKE_DONE);
  if (t->owner) t->owner->child_done(t->owner, t);
  /* The main task failed: the run is over, so the others are cancelled (their
   * cleanup runs) rather than waited for. */
  if ((t->flags & LR_F_MAIN) && t->result == LR_RES_FAILED) lr_runtime_cancel_all(rt);
}

/* A task cancelled before it ever ran ends without running its body. */
static void finish_unstarted(lr_runtime *rt, lr_task *t) {
  lua_settop(t->co, LR_CO_SELF);
  lua_pushvalue(t->co, LR_CO_SELF);
  lua_xmove(t->co, rt->L, 1); /* anchors the task through finish (see run_task) */
  lr_error_push(t->co, "cancelled", "task cancelled");
  finish(rt, t, lua_gettop(rt->L), LR_NEVER_RAN, 1);
  lua_pop(rt->L, 1);
}

/* Where a task's userdata is while the task does not run: at index 1 of its thread
 * until it first runs (the base frame); afterwards, index 1 names the first argument
 * of whatever C function it is suspended in, so the driver keeps the userdata on top
 * of the suspended thread's stack instead, and takes it off before resuming it (the
 * stack a continuation sees is exactly what it left). This costs no memory: a
 * thread's stack has room to spare. */
static void run_task(lr_runtime *rt, lr_task *t) {
  lua_State *co = t->co;
  int nargs = 0, nres = 0, status;
  if (!(t->flags & LR_F_STARTED)) {
    t->flags |= LR_F_STARTED;
    if (t->flags & LR_F_CANCEL) {
      finish_unstarted(rt, t);
      return;
    }
    nargs = lua_gettop(co) - 2; /* self, fn, args */
    lua_pushvalue(co, LR_CO_SELF);
  }
  t->state = LR_RUNNING;
  rt->current = t;
  rt->running_co = co;
  /* The running task's userdata waits on the driver's stack for lr.current(). */
  lua_xmove(co, rt->L, 1);
  rt->current_idx = lua_gettop(rt->L);
  LR_HOOK(rt, resume, t);
  status = lua_resume(co, rt->from, nargs, &nres);
  rt->running_co = NULL;
  rt->current = NULL;
  if (status == LUA_YIELD) {
    if (nres == 1 && lua_touserdata(co, -1) == LR_SENTINEL) {
      lua_pop(co, 1); /* parked (or already woken) by a luarun call */
    } else {
      /* A bare coroutine.yield from C code reached the scheduler: let the others
       * run and resume it next turn with no values. */
      lua_pop(co, nres);
      t->state = LR_PARKED;
      lr_task_wake(t, LR_WAKE_DONE);
    }
    lua_checkstack(co, 1);
    lua_pushvalue(rt->L, rt->current_idx);
    lua_xmove(rt->L, co, 1); /* the userdata, kept on top while suspended */
    lua_settop(rt->L, rt->current_idx - 1);
    rt->current_idx = 0;
    LR_HOOK(rt, yield, t);
    return;
  }
  {
    /* The userdata stays on the driver's stack through finish: once the thread's
     * slot is released, nothing else may hold the task, and a GC step while the
     * outcome is handed to an owner (a table for gather's record) would collect it,
     * and the outcome kept with it. */
    int self_idx = rt->current_idx;
    rt->current_idx = 0;
    LR_HOOK(rt, yield, t);
    finish(rt, t, self_idx, status, nres);
    lua_settop(rt->L, self_idx - 1);
  }
}

void lr_sched_run_ready(lr_runtime *rt) {
  /* Run only the tasks that are ready now; those woken meanwhile wait for the next
   * turn, after libuv has polled for I/O: this is what makes sleep(0) fair. */
  lr_waitq batch = rt->ready, *outer = rt->batch;
  lr_task *t;
  rt->ready.head = NULL;
  rt->batch = &batch;
  while ((t = lr_waitq_pop(&batch)) != NULL) run_task(rt, t);
  rt->batch = outer;
}

/* ---- the luarun.Task methods ---- */

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *target = (lr_task *)ctx;
  lr_task *self = lr_task_self(L);
  (void)status;
  if (self->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  return lr_task_push_results(L, target, 0);
}

static void wait_describe(lua_State *L, lr_task *t) {
  lr_task *target = container_of(t->inq, lr_task, waiters);
  if (t->inq == NULL) {
    lua_pushliteral(L, "task:wait()");
    return;
  }
  lua_pushliteral(L, "task:wait() on ");
  lr_report_push_taskname(L, target);
  lua_concat(L, 2);
}

static int task_wait(lua_State *L) {
  lr_task *target = lr_task_check(L, 1);
  lr_task *self;
  target->flags |= LR_F_WAITED;
  if (target->state == LR_DONE) return lr_task_push_results(L, target, 0);
  self = lr_task_current(L, "wait");
  if (self == target) return luaL_error(L, "wait: a task cannot wait for itself");
  lr_task_checkpoint(L, self);
  lr_waitq_push(&target->waiters, self);
  return lr_task_park_on(L, self, NULL, wait_describe, (lua_KContext)target, wait_k);
}

static int task_cancel(lua_State *L) {
  lr_task_cancel(lr_task_check(L, 1));
  return 0;
}

static int task_done(lua_State *L) {
  lua_pushboolean(L, lr_task_check(L, 1)->state == LR_DONE);
  return 1;
}

const char *lr_task_state_name(lr_task *t) {
  switch (t->state) {
    case LR_READY: return "ready";
    case LR_RUNNING: return "running";
    case LR_PARKED: return "waiting";
    default:
      return t->result == LR_RES_OK ? "done" :
             t->result == LR_RES_CANCELLED ? "cancelled" : "failed";
  }
}

static int task_status(lua_State *L) {
  lua_pushstring(L, lr_task_state_name(lr_task_check(L, 1)));
  return 1;
}

static int task_id(lua_State *L) {
  lua_pushinteger(L, lr_task_check(L, 1)->id);
  return 1;
}

static int task_tostring(lua_State *L) {
  lr_task *t = lr_task_check(L, 1);
  lua_pushfstring(L, "luarun.Task %d (%s)", (int)t->id, lr_task_state_name(t));
  return 1;
}

static const luaL_Reg task_methods[] = {
  {"wait", task_wait},
  {"cancel", task_cancel},
  {"done", task_done},
  {"status", task_status},
  {"id", task_id},
  {"name", lr_task_name},
  {"set_name", lr_task_set_name},
  {NULL, NULL}
};

void lr_sched_register(lua_State *L) {
  lr_runtime *rt;
  static const luaL_Reg meta[] = {
    {"__tostring", task_tostring}, {NULL, NULL}};
  lr_register_class(L, TASK_MT, task_methods, meta);
  /* The registry keeps the metatable, and so this address, for the state's life. */
  luaL_getmetatable(L, TASK_MT);
  rt = lr_runtime_get(L);
  rt->task_mt = lua_topointer(L, -1);
  if (rt->task_mt_ref > 0) lua_pop(L, 1);
  else rt->task_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}
