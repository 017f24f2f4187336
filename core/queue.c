/* queue.c: lr.Queue(maxsize), a FIFO between tasks (producer/consumer).
 *
 * Items wait in a Lua table (the userdata's user value) used as a ring of maxsize
 * slots. Getters and putters that must wait are parked in FIFO queues. Nothing is
 * ever lost to a cancellation:
 * - put into a waiting getter hands the item over at once (it is stored under the
 *   getter's address in the same table), so a getter woken with an item returns it
 *   even if it is cancelled before it runs; it is not left in the buffer for a faster
 *   task to take.
 * - a putter that waits keeps its item under its own address; a get that frees a
 *   slot moves the oldest putter's item into the buffer and wakes it. A putter that
 *   is cancelled while it waits leaves the queue with its item never added, and its
 *   put raises `cancelled`.
 * close() wakes every waiter: getters get nil, err (kind "closed") once the buffer is
 * drained, putters raise.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>
#include "lr_prims.h"

#define QUEUE_MT "luarun.Queue"

typedef struct queue {
  lr_waitq getters, putters;
  lua_Integer first, count, maxsize; /* maxsize: LUA_MAXINTEGER when unbounded */
  uint8_t closed;
} queue;

static queue *check_queue(lua_State *L) {
  return luaL_checkudata(L, 1, QUEUE_MT);
}

/* The table slot of the i-th buffered item (0-based from the oldest). */
static lua_Integer slot(queue *q, lua_Integer i) {
  lua_Integer k = q->first + i;
  if (q->maxsize != LUA_MAXINTEGER) k %= q->maxsize;
  return k + 1;
}

/* Appends the value on top of L (popped) to the buffer; the items table is at tidx. */
static void append(lua_State *L, queue *q, int tidx) {
  lua_rawseti(L, tidx, slot(q, q->count));
  q->count++;
}

/* Pushes the oldest buffered item and removes it from the buffer. */
static void take(lua_State *L, queue *q, int tidx) {
  lua_Integer k = slot(q, 0);
  lua_rawgeti(L, tidx, k);
  lua_pushnil(L);
  lua_rawseti(L, tidx, k);
  q->first++;
  if (q->maxsize != LUA_MAXINTEGER) q->first %= q->maxsize;
  q->count--;
}

static void push_closed(lua_State *L) {
  lua_pushnil(L);
  lr_error_push(L, "closed", "the queue is closed");
}

/* Getters and putters park with different describers: that is how a report tells
 * them apart (the default cancel hook suits both). */
static void get_describe(lua_State *L, lr_task *t) {
  (void)t;
  lua_pushliteral(L, "Queue:get, queue empty");
}

static void put_describe(lua_State *L, lr_task *t) {
  queue *q = container_of(t->inq, queue, putters);
  lua_pushfstring(L, "Queue:put, queue full (%d item%s)", (int)q->count,
                  q->count == 1 ? "" : "s");
}

static int get_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = (lr_task *)ctx;
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  if (t->wake == LR_WAKE_CLOSED) {
    push_closed(L);
    return 2;
  }
  /* handed over by put: the item waits under our address */
  lua_getiuservalue(L, 1, 1);
  lua_rawgetp(L, -1, t);
  lua_pushnil(L);
  lua_rawsetp(L, -3, t);
  return 1;
}

/* q:get() -> item, or nil, err (kind "closed") once closed and drained. */
static int queue_get(lua_State *L) {
  queue *q = check_queue(L);
  lr_task *t = lr_task_self(L), *p;
  int tidx;
  if (t) lr_task_checkpoint(L, t);
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1);
  tidx = lua_gettop(L);
  if (q->count > 0) {
    take(L, q, tidx);
    if ((p = lr_waitq_pop(&q->putters)) != NULL) {
      /* a slot is free: the oldest waiting putter's item goes in */
      lua_rawgetp(L, tidx, p);
      append(L, q, tidx);
      lua_pushnil(L);
      lua_rawsetp(L, tidx, p);
      lr_task_wake(p, LR_WAKE_DONE);
    }
    return 1;
  }
  if (q->closed) {
    push_closed(L);
    return 2;
  }
  t = lr_task_current(L, "get");
  lua_settop(L, 1);
  lr_waitq_push(&q->getters, t);
  return lr_task_park_on(L, t, NULL, get_describe, (lua_KContext)t, get_k);
}

static int put_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = (lr_task *)ctx;
  (void)status;
  if (t->wake != LR_WAKE_DONE) { /* the item was not added: forget it */
    lua_getiuservalue(L, 1, 1);
    lua_pushnil(L);
    lua_rawsetp(L, -2, t);
    if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
    return luaL_error(L, "put: the queue was closed while waiting (the item was not added)");
  }
  return 0;
}

/* q:put(item): waits while the queue is full. Raises if the queue is closed. */
static int queue_put(lua_State *L) {
  queue *q = check_queue(L);
  lr_task *t = lr_task_self(L), *g;
  int tidx;
  luaL_checkany(L, 2);
  if (lua_isnil(L, 2))
    return luaL_argerror(L, 2, "nil cannot be put in a queue (get returns nil when closed)");
  if (t) lr_task_checkpoint(L, t);
  if (q->closed) return luaL_error(L, "put: the queue is closed");
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, 1);
  tidx = lua_gettop(L);
  lua_pushvalue(L, 2);
  if ((g = lr_waitq_pop(&q->getters)) != NULL) {
    lua_rawsetp(L, tidx, g);
    lr_task_wake(g, LR_WAKE_DONE);
    return 0;
  }
  if (q->count < q->maxsize) {
    append(L, q, tidx);
    return 0;
  }
  t = lr_task_current(L, "put");
  lua_rawsetp(L, tidx, t);
  lua_settop(L, 1);
  lr_waitq_push(&q->putters, t);
  return lr_task_park_on(L, t, NULL, put_describe, (lua_KContext)t, put_k);
}

/* q:close(): no more puts; waiting getters get nil, err and waiting putters raise. */
static int queue_close(lua_State *L) {
  queue *q = check_queue(L);
  lr_task *w;
  q->closed = 1;
  while ((w = lr_waitq_pop(&q->getters)) != NULL) lr_task_wake(w, LR_WAKE_CLOSED);
  while ((w = lr_waitq_pop(&q->putters)) != NULL) lr_task_wake(w, LR_WAKE_CLOSED);
  return 0;
}

static int queue_is_closed(lua_State *L) {
  lua_pushboolean(L, check_queue(L)->closed);
  return 1;
}

static int queue_len(lua_State *L) {
  lua_pushinteger(L, check_queue(L)->count);
  return 1;
}

static int queue_tostring(lua_State *L) {
  queue *q = check_queue(L);
  if (q->maxsize == LUA_MAXINTEGER)
    lua_pushfstring(L, "luarun.Queue (%d items%s)", (int)q->count, q->closed ? ", closed" : "");
  else
    lua_pushfstring(L, "luarun.Queue (%d of %d items%s)", (int)q->count, (int)q->maxsize,
                    q->closed ? ", closed" : "");
  return 1;
}

/* lr.Queue([maxsize]): maxsize a positive integer, or nil (or math.huge) for no
 * bound. */
static int l_queue(lua_State *L) {
  lua_Integer maxsize = LUA_MAXINTEGER;
  queue *q;
  if (!lua_isnoneornil(L, 1) &&
      !(lua_type(L, 1) == LUA_TNUMBER && lua_tonumber(L, 1) == HUGE_VAL)) {
    int isint;
    maxsize = lua_tointegerx(L, 1, &isint);
    if (!isint || maxsize < 1)
      return luaL_error(L, "Queue: maxsize must be a positive integer, or nil for no "
                        "limit (got %s)", luaL_tolstring(L, 1, NULL));
  }
  q = lua_newuserdatauv(L, sizeof *q, 1);
  memset(q, 0, sizeof *q);
  q->maxsize = maxsize;
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, QUEUE_MT);
  return 1;
}

void lr_queue_install(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"get", queue_get}, {"put", queue_put}, {"close", queue_close},
    {"is_closed", queue_is_closed}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
    {"__len", queue_len}, {"__tostring", queue_tostring}, {NULL, NULL}};
  lr_register_class(L, QUEUE_MT, methods, meta);
  lua_pushcfunction(L, l_queue);
  lua_setfield(L, -2, "Queue");
}
