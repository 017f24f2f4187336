/* sync.c: Semaphore, Lock, Event and RateLimit: tasks waiting for one another.
 *
 * Each keeps its waiters in a lr_waitq, so they are served first come, first served.
 * A permit is handed straight to the oldest waiter when it is released (the count
 * never goes up while someone waits), so a task arriving later cannot overtake, and a
 * waiter that is cancelled before it was handed one simply leaves the queue: no
 * permit is lost. A waiter handed a permit and cancelled before it ran keeps the
 * permit: its acquire returns, and the cancellation is raised at its next wait.
 *
 * Misuse raises (a release with nothing acquired, a task taking a lock it holds);
 * the messages name the call.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lr_prims.h"

#define SEMAPHORE_MT "luarun.Semaphore"
#define LOCK_MT "luarun.Lock"
#define EVENT_MT "luarun.Event"
#define RATELIMIT_MT "luarun.RateLimit"

/* Reads a count argument: a positive integer, or raises naming the function. */
static lua_Integer check_size(lua_State *L, int idx, const char *fname, const char *what) {
  int isint;
  lua_Integer n = lua_tointegerx(L, idx, &isint);
  if (!isint || n < 1)
    luaL_error(L, "%s: %s must be a positive integer (got %s)", fname, what,
               lua_isnoneornil(L, idx) ? "nothing" : luaL_tolstring(L, idx, NULL));
  return n;
}

/* Every call that may wait starts with lr_task_enter, waiting or not: a loop of
 * calls that happen never to wait still stops when its task is cancelled. */

/* ================= Semaphore and Lock ================= */

/* A Lock is a semaphore of one permit that remembers its holder. */
typedef struct permits {
  lr_waitq q;
  lua_Integer count, max;
  uint32_t owner;        /* Lock: the holder's task id, or 0 (an id, not a pointer:
                            a holder may end, and be collected, holding the lock) */
  uint8_t lock;
} permits;

static permits *check_permits(lua_State *L, int idx) {
  permits *p = luaL_testudata(L, idx, SEMAPHORE_MT);
  if (p == NULL) p = luaL_testudata(L, idx, LOCK_MT);
  if (p == NULL) luaL_typeerror(L, idx, "Semaphore or Lock");
  return p;
}

static void permits_describe(lua_State *L, lr_task *t) {
  permits *p = container_of(t->inq, permits, q);
  if (p->lock) {
    if (p->owner) lua_pushfstring(L, "Lock:acquire, held by task %d", (int)p->owner);
    else lua_pushliteral(L, "Lock:acquire");
  } else {
    lua_pushfstring(L, "Semaphore:acquire, 0 of %d permits free", (int)p->max);
  }
}

static int acquire_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = (lr_task *)ctx;
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  /* woken by release: the permit (and for a Lock, the ownership) is ours already */
  lua_settop(L, 1);
  return 1;
}

/* Takes a permit for t if one is free and nobody waits (returns 1); else queues t
 * (returns 0: park it). Raises if t would wait for a lock it holds. */
static int take_or_queue(lua_State *L, permits *p, lr_task *t, const char *fname) {
  if (p->lock && p->owner == t->id)
    luaL_error(L, "%s: this task holds the lock already (acquiring it again would wait "
               "forever)", fname);
  if (p->count > 0 && p->q.head == NULL) {
    p->count--;
    if (p->lock) p->owner = t->id;
    return 1;
  }
  lr_waitq_push(&p->q, t);
  return 0;
}

/* s:acquire() -> s: waits for a permit. Returning the object lets a script write
 * `local _ <close> = lock:acquire()`. */
static int permits_acquire(lua_State *L) {
  permits *p = check_permits(L, 1);
  lr_task *t = lr_task_enter(L, "acquire");
  lua_settop(L, 1);
  if (take_or_queue(L, p, t, "acquire")) return 1;
  return lr_task_park_on(L, t, NULL, permits_describe, (lua_KContext)t, acquire_k);
}

/* Gives a permit back: to the oldest waiter if there is one. Returns NULL, or the
 * reason it cannot. */
static const char *permits_give(permits *p, lr_task *self) {
  lr_task *w;
  if (p->lock) {
    if (p->owner == 0) return "release: the lock is not held";
    if (self == NULL || p->owner != self->id)
      return "release: the lock is held by another task";
  } else if (p->count >= p->max) {
    return "release: released more times than acquired";
  }
  w = lr_waitq_pop(&p->q);
  if (w) {
    if (p->lock) p->owner = w->id;
    lr_task_wake(w, LR_WAKE_DONE);
  } else {
    p->count++;
    if (p->lock) p->owner = 0;
  }
  return NULL;
}

static int permits_release(lua_State *L) {
  permits *p = check_permits(L, 1);
  const char *err = permits_give(p, lr_task_self(L));
  if (err) return luaL_error(L, "%s", err);
  return 0;
}

/* __close: `local _ <close> = s:acquire()` and s:with release on the way out, error
 * or not. Runs also while a cancelled task unwinds. */
static int permits_close(lua_State *L) {
  return permits_release(L);
}

static int with_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return lua_gettop(L) - (int)ctx;
}

/* ctx: nargs << 1 | whether the task parked for the permit. */
static int with_acquired_k(lua_State *L, int status, lua_KContext ctx) {
  int nargs = (int)(ctx >> 1), base, i;
  (void)status;
  if ((ctx & 1) && lr_task_self(L)->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  /* stack: s fn args... */
  lua_pushvalue(L, 1);
  lua_toclose(L, -1);
  base = lua_gettop(L);
  luaL_checkstack(L, nargs + 1, "with");
  lua_pushvalue(L, 2);
  for (i = 0; i < nargs; i++) lua_pushvalue(L, 3 + i);
  lua_callk(L, nargs, LUA_MULTRET, base, with_k);
  return with_k(L, LUA_OK, base);
}

/* s:with(fn, ...) -> fn(...): acquires, calls, releases (also on error or cancel). */
static int permits_with(lua_State *L) {
  permits *p = check_permits(L, 1);
  int nargs = lua_gettop(L) - 2;
  lr_task *t;
  if (!lr_is_callable(L, 2))
    return luaL_error(L, "with: bad argument #1 (function expected, got %s)",
                      luaL_typename(L, 2));
  t = lr_task_enter(L, "with");
  if (take_or_queue(L, p, t, "with"))
    return with_acquired_k(L, LUA_OK, (lua_KContext)nargs << 1);
  return lr_task_park_on(L, t, NULL, permits_describe,
                         ((lua_KContext)nargs << 1) | 1, with_acquired_k);
}

static int permits_locked(lua_State *L) {
  permits *p = check_permits(L, 1);
  lua_pushboolean(L, p->count == 0);
  return 1;
}

static int permits_available(lua_State *L) {
  lua_pushinteger(L, check_permits(L, 1)->count);
  return 1;
}

static int permits_tostring(lua_State *L) {
  permits *p = check_permits(L, 1);
  if (p->lock) lua_pushfstring(L, "luarun.Lock (%s)", p->count ? "free" : "held");
  else lua_pushfstring(L, "luarun.Semaphore (%d of %d free)", (int)p->count, (int)p->max);
  return 1;
}

static permits *new_permits(lua_State *L, lua_Integer n, int lock) {
  permits *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  p->count = p->max = n;
  p->lock = (uint8_t)lock;
  luaL_setmetatable(L, lock ? LOCK_MT : SEMAPHORE_MT);
  return p;
}

/* lr.Semaphore(n): n permits, n >= 1. */
static int l_semaphore(lua_State *L) {
  new_permits(L, check_size(L, 1, "Semaphore", "n"), 0);
  return 1;
}

/* lr.Lock(): one holder at a time; only the holder may release it. */
static int l_lock(lua_State *L) {
  new_permits(L, 1, 1);
  return 1;
}

/* ================= Event ================= */

typedef struct event {
  lr_waitq q;
  int set;
} event;

static void event_describe(lua_State *L, lr_task *t) {
  (void)t;
  lua_pushliteral(L, "Event:wait, not set");
}

static int event_wait_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = (lr_task *)ctx;
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  lua_pushboolean(L, 1);
  return 1;
}

/* e:wait() -> true, once the event is set (at once if it is). */
static int event_wait(lua_State *L) {
  event *e = luaL_checkudata(L, 1, EVENT_MT);
  lr_task *t = lr_task_enter(L, "wait");
  if (e->set) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lr_waitq_push(&e->q, t);
  return lr_task_park_on(L, t, NULL, event_describe, (lua_KContext)t, event_wait_k);
}

/* e:set(): wakes every waiter; later waits return at once until e:clear(). */
static int event_set(lua_State *L) {
  event *e = luaL_checkudata(L, 1, EVENT_MT);
  lr_task *w;
  e->set = 1;
  while ((w = lr_waitq_pop(&e->q)) != NULL) lr_task_wake(w, LR_WAKE_DONE);
  return 0;
}

static int event_clear(lua_State *L) {
  ((event *)luaL_checkudata(L, 1, EVENT_MT))->set = 0;
  return 0;
}

static int event_is_set(lua_State *L) {
  lua_pushboolean(L, ((event *)luaL_checkudata(L, 1, EVENT_MT))->set);
  return 1;
}

static int event_tostring(lua_State *L) {
  event *e = luaL_checkudata(L, 1, EVENT_MT);
  lua_pushfstring(L, "luarun.Event (%s)", e->set ? "set" : "not set");
  return 1;
}

static int l_event(lua_State *L) {
  event *e = lua_newuserdatauv(L, sizeof *e, 0);
  memset(e, 0, sizeof *e);
  luaL_setmetatable(L, EVENT_MT);
  return 1;
}

/* ================= RateLimit ================= */

/* At most n acquisitions in any window of `per` seconds (a sliding log of the last n
 * times), not a token bucket: a bucket of n lets almost 2n through in one window
 * (a full burst just before a refill), and that is what gets a scraper banned.
 * Only the oldest waiter sleeps, until the moment its slot frees; it is `due` from
 * then until it has taken the slot, so that no newcomer takes it meanwhile. */
typedef struct ratelimit {
  lr_waitq q;
  lr_task *due;          /* the first waiter, whose slot time is armed or has come */
  uint64_t per;          /* window, ns */
  uint32_t n, used, pos; /* times[pos] is the oldest once used == n */
  double per_s;
  uint64_t times[];
} ratelimit;

static int slot_free(ratelimit *r, uint64_t now) {
  return r->used < r->n || now >= r->times[r->pos] + r->per;
}

static void take_slot(ratelimit *r, uint64_t now) {
  r->times[r->pos] = now;
  r->pos = (r->pos + 1) % r->n;
  if (r->used < r->n) r->used++;
}

/* Makes the oldest waiter `due`: now if its slot is free, else when it frees. */
static void promote(ratelimit *r) {
  lr_task *w = r->q.head;
  r->due = w;
  if (w == NULL) return;
  if (slot_free(r, uv_hrtime())) {
    lr_task_wake(w, LR_WAKE_DONE);
  } else if (lr_timer_add(w->rt, w, r->times[r->pos] + r->per) != 0) {
    lr_task_wake(w, LR_WAKE_DONE); /* no memory for the timer: it re-queues itself */
  }
}

static void ratelimit_describe(lua_State *L, lr_task *t) {
  ratelimit *r = container_of(t->inq, ratelimit, q);
  char buf[96];
  snprintf(buf, sizeof buf, "RateLimit:acquire, %u per %g s used up", r->n, r->per_s);
  lua_pushstring(L, buf);
}

static void ratelimit_cancel(lr_task *t) {
  ratelimit *r = container_of(t->inq, ratelimit, q);
  lr_task_wake(t, LR_WAKE_CANCELLED); /* leaves the queue and the timer heap */
  if (r->due == t) promote(r);
}

static int ratelimit_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = (lr_task *)ctx;
  ratelimit *r = luaL_checkudata(L, 1, RATELIMIT_MT);
  uint64_t now = uv_hrtime();
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  if (!slot_free(r, now)) { /* woken early: promote could not arm the timer */
    promote(r);
    return luaL_error(L, "acquire: out of memory");
  }
  take_slot(r, now);
  promote(r);
  return 0;
}

/* r:acquire(): returns once this call is within the limit, in arrival order. */
static int ratelimit_acquire(lua_State *L) {
  ratelimit *r = luaL_checkudata(L, 1, RATELIMIT_MT);
  lr_task *t = lr_task_enter(L, "acquire");
  uint64_t now = uv_hrtime();
  lua_settop(L, 1);
  if (r->q.head == NULL && r->due == NULL && slot_free(r, now)) {
    take_slot(r, now);
    return 0;
  }
  lr_waitq_push(&r->q, t);
  if (r->due == NULL) promote(r);
  return lr_task_park_on(L, t, ratelimit_cancel, ratelimit_describe, (lua_KContext)t,
                         ratelimit_k);
}

static int ratelimit_tostring(lua_State *L) {
  ratelimit *r = luaL_checkudata(L, 1, RATELIMIT_MT);
  char buf[80];
  snprintf(buf, sizeof buf, "luarun.RateLimit (%u per %g s)", r->n, r->per_s);
  lua_pushstring(L, buf);
  return 1;
}

/* lr.RateLimit(n, per_seconds). */
static int l_ratelimit(lua_State *L) {
  lua_Integer n = check_size(L, 1, "RateLimit", "n");
  double per = luaL_checknumber(L, 2);
  ratelimit *r;
  if (!(per > 0) || per > 1e9)
    return luaL_error(L, "RateLimit: per_seconds must be a positive number of seconds");
  if (n > 100000000)
    return luaL_error(L, "RateLimit: n must be at most 100000000");
  r = lua_newuserdatauv(L, sizeof *r + (size_t)n * sizeof r->times[0], 0);
  memset(r, 0, sizeof *r);
  r->n = (uint32_t)n;
  r->per_s = per;
  r->per = (uint64_t)(per * 1e9);
  luaL_setmetatable(L, RATELIMIT_MT);
  return 1;
}

/* ================= registration ================= */

void lr_sync_install(lua_State *L) {
  static const luaL_Reg permit_methods[] = {
    {"acquire", permits_acquire}, {"release", permits_release}, {"with", permits_with},
    {"locked", permits_locked}, {"available", permits_available}, {NULL, NULL}};
  static const luaL_Reg event_methods[] = {
    {"wait", event_wait}, {"set", event_set}, {"clear", event_clear},
    {"is_set", event_is_set}, {NULL, NULL}};
  static const luaL_Reg ratelimit_methods[] = {{"acquire", ratelimit_acquire}, {NULL, NULL}};
  static const luaL_Reg ctors[] = {
    {"Semaphore", l_semaphore}, {"Lock", l_lock}, {"Event", l_event},
    {"RateLimit", l_ratelimit}, {NULL, NULL}};
  static const luaL_Reg permit_meta[] = {
    {"__tostring", permits_tostring}, {"__close", permits_close}, {NULL, NULL}};
  static const luaL_Reg event_meta[] = {{"__tostring", event_tostring}, {NULL, NULL}};
  static const luaL_Reg ratelimit_meta[] = {{"__tostring", ratelimit_tostring}, {NULL, NULL}};
  lr_register_class(L, SEMAPHORE_MT, permit_methods, permit_meta);
  lr_register_class(L, LOCK_MT, permit_methods, permit_meta);
  lr_register_class(L, EVENT_MT, event_methods, event_meta);
  lr_register_class(L, RATELIMIT_MT, ratelimit_methods, ratelimit_meta);
  luaL_setfuncs(L, ctors, 0);
}
