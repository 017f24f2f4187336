/* db_common.c: the transaction gate and the error values both database drivers use
 * (db_common.h says what each is for). */
#include "db_common.h"

static int gate_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = (lr_task *)ctx;
  lua_KFunction k;
  (void)status;
  k = (lua_KFunction)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  return k(L, LUA_YIELD, 0);
}

static void gate_describe(lua_State *L, lr_task *t) {
  (void)t;
  lua_pushliteral(L, "database connection, held by another task's transaction");
}

int lr_db_gate_wait(lua_State *L, lr_task *t, lr_db_gate *g, lua_KFunction k) {
  lua_pushlightuserdata(L, (void *)k);
  lr_waitq_push(&g->q, t);
  return lr_task_park_on(L, t, NULL, gate_describe, (lua_KContext)t, gate_k);
}

static int pin_k(lua_State *L, int status, lua_KContext ctx);

/* conn:_pin(): the connection is at index 1, the gate found by the caller. */
int lr_db_gate_pin(lua_State *L, lr_db_gate *g) {
  lr_task *t = lr_task_enter(L, "transaction");
  if (g->owner == t) { /* the front raises it at its caller's line */
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "transaction: this task is already in a transaction on this "
                    "connection (transactions do not nest: use a SAVEPOINT inside it)");
    return 2;
  }
  if (g->owner != NULL) {
    lua_pushlightuserdata(L, g);
    lua_pushlightuserdata(L, (void *)pin_k);
    lr_waitq_push(&g->q, t);
    return lr_task_park_on(L, t, NULL, gate_describe, (lua_KContext)t, gate_k);
  }
  g->owner = t;
  lua_pushboolean(L, 1);
  return 1;
}

static int pin_k(lua_State *L, int status, lua_KContext ctx) {
  lr_db_gate *g = lua_touserdata(L, -1);
  (void)status, (void)ctx;
  lua_pop(L, 1);
  return lr_db_gate_pin(L, g);
}

void lr_db_gate_release(lr_db_gate *g) {
  lr_task *t;
  g->owner = NULL;
  while ((t = lr_waitq_pop(&g->q)) != NULL) lr_task_wake(t, LR_WAKE_DONE);
}

void lr_db_push_error(lua_State *L, const char *kind, const char *message, const char *code,
                      const char *constraint) {
  lr_error_push(L, kind, message);
  if (code) {
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
  }
  if (constraint) {
    lua_pushstring(L, constraint);
    lua_setfield(L, -2, "constraint");
  }
}

int lr_db_fail(lua_State *L, const char *kind, const char *message, const char *code,
               const char *constraint) {
  lua_pushnil(L);
  lr_db_push_error(L, kind, message, code, constraint);
  return 2;
}

int lr_db_is_json(lua_State *L, int idx) {
  int is;
  if (!lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, LR_DB_JSON_MT);
  is = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return is;
}

int lr_db_utf8_valid(const char *p, size_t n, int nul_ok) {
  const unsigned char *s = (const unsigned char *)p;
  size_t i = 0, k;
  while (i < n) {
    if (s[i] == 0 && !nul_ok) return 0;
    if ((k = lr_utf8_len(s + i, n - i)) == 0) return 0;
    i += k;
  }
  return 1;
}

void lr_db_push_driver(lua_State *L, lua_CFunction open, const char *conn_mt,
                       const char *begin_sql) {
  lua_createtable(L, 0, 4);
  lua_pushcfunction(L, open);
  lua_setfield(L, -2, "open");
  luaL_getmetatable(L, conn_mt);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "methods");
  lua_pop(L, 1);
  lua_pushstring(L, begin_sql);
  lua_setfield(L, -2, "begin_sql");
}
