/* db_pg.c: "luarun.db.pg", the PostgreSQL driver of luarun.db: connections, their
 * statements, streamed rows and COPY, on core/pg_conn.c. Values are converted in
 * db_pg_values.c, COPY is in db_pg_copy.c; transactions, pools and LISTEN's iterator are in
 * lua/luarun/db_front.lua.
 *
 * A statement call sends at once (other tasks' statements go out back to back with
 * it: the pipeline) and parks its task on the operation until the result is in.
 * Cancelling the task cancels the statement on the server if it is running and drops
 * its result; the connection stays usable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "db_pg.h"

#define CONN_MT "luarun.db.PgConnection"
#define ROWS_MT "luarun.db.PgRows"

typedef lr_pgbox pgbox;

enum { K_QUERY = 1, K_EXEC, K_TYPES };

pgbox *lr_pg_check_box(lua_State *L, const char *fname) {
  pgbox *b = luaL_testudata(L, 1, CONN_MT);
  if (b == NULL)
    luaL_error(L, "bad argument #1 to '%s' (PostgreSQL connection expected, got %s)", fname,
               luaL_typename(L, 1));
  return b;
}

#define check_box lr_pg_check_box

const char *lr_pg_check_sql(lua_State *L, int idx, const char *fname) {
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "bad argument #1 to '%s' (string expected, got %s)", fname,
               luaL_typename(L, idx));
  return lua_tostring(L, idx);
}

#define check_sql lr_pg_check_sql

int lr_pg_fail_closed(lua_State *L, const char *why) {
  return lr_db_fail(L, "closed", why && *why ? why : "the connection is closed", NULL, NULL);
}

/* The kind of a server error, from its SQLSTATE's class. */
static const char *kind_of_state(const char *st) {
  if (st == NULL) return "query";
  if (strncmp(st, "23", 2) == 0) return "constraint";
  if (strcmp(st, "57014") == 0) return "timeout"; /* statement_timeout (or a cancel) */
  if (strncmp(st, "42", 2) == 0) return "syntax";
  if (strncmp(st, "28", 2) == 0) return "auth";
  if (strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0) return "closed";
  return "query";
}

static void push_result_error(lua_State *L, const PGresult *r) {
  const char *st = lr_pq.resultErrorField(r, PG_DIAG_SQLSTATE);
  const char *msg = lr_pq.resultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  const char *detail = lr_pq.resultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
  lr_db_push_error(L, kind_of_state(st), msg ? msg : lr_pq.resultErrorMessage(r), st,
                   lr_pq.resultErrorField(r, PG_DIAG_CONSTRAINT_NAME));
  if (detail) {
    lua_pushstring(L, detail);
    lua_setfield(L, -2, "detail");
  }
}

#define fail_closed lr_pg_fail_closed

int lr_pg_push_failure(lua_State *L, lr_pg_op *op) {
  if (op->end == LR_PG_LOST) {
    lua_pushnil(L);
    lr_db_push_error(L, "closed", op->lost[0] ? op->lost : "the connection was lost", NULL, NULL);
    return 2;
  }
  if (op->end == LR_PG_ERROR && op->res) {
    lua_pushnil(L);
    push_result_error(L, op->res);
    return 2;
  }
  return 0;
}

/* ---- db.open ---- */

static int open_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = lr_task_self(L);
  pgbox *b = lua_touserdata(L, 3);
  const char *why;
  int auth, st;
  (void)status, (void)ctx;
  if (t->wake == LR_WAKE_CANCELLED) {
    lr_pg_close(b->c, NULL);
    lr_error_raise_cancelled(L);
  }
  if (t->wake == LR_WAKE_TIMEOUT) {
    char m[96];
    lr_pg_close(b->c, NULL);
    snprintf(m, sizeof m, "no connection within %g s", b->connect_timeout);
    return lr_db_fail(L, "connect", m, NULL, NULL);
  }
  st = lr_pg_connected(b->c, &why, &auth);
  if (st < 0) return lr_db_fail(L, auth ? "auth" : "connect", why, NULL, NULL);
  lua_settop(L, 3);
  return 1;
}

static double opt_number(lua_State *L, int idx, const char *key, double dflt) {
  double v = dflt;
  if (lua_getfield(L, idx, key) != LUA_TNIL) {
    if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) < 0)
      luaL_error(L, "bad argument #2 to 'open' (%s must be a non-negative number)", key);
    v = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static int l_open(lua_State *L) {
  const char *url = check_sql(L, 1, "open");
  lr_task *t = lr_task_enter(L, "open");
  lr_pg_opts o = {10, 0, 1};
  char err[256];
  pgbox *b;
  const char *why;
  int auth, st;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    o.connect_timeout = opt_number(L, 2, "connect_timeout", 10);
    o.statement_timeout = opt_number(L, 2, "statement_timeout", 0);
    if (lua_getfield(L, 2, "statement_cache") != LUA_TNIL) o.cache = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, CONN_MT);
  b->connect_timeout = o.connect_timeout;
  if ((b->c = lr_pg_connect(t->rt, url, &o, err, sizeof err)) == NULL)
    return lr_db_fail(L, "connect", err, NULL, NULL);
  st = lr_pg_connected(b->c, &why, &auth);
  if (st < 0) return lr_db_fail(L, auth ? "auth" : "connect", why, NULL, NULL);
  if (st > 0) return 1;
  lr_waitq_push(lr_pg_connect_queue(b->c), t);
  if (o.connect_timeout > 0) {
    uint64_t deadline = lr_timer_deadline(o.connect_timeout);
    if (deadline != UINT64_MAX && lr_timer_add(t->rt, t, deadline) != 0) {
      lr_waitq_remove(lr_pg_connect_queue(b->c), t);
      return luaL_error(L, "open: not enough memory");
    }
  }
  return lr_task_park(L, t, NULL, 0, open_k);
}

/* ---- statements ---- */

#define push_failure lr_pg_push_failure

void lr_pg_op_describe(lua_State *L, lr_task *t) {
  (void)t;
  lua_pushliteral(L, "PostgreSQL statement");
}

#define op_describe lr_pg_op_describe

int lr_pg_park(lua_State *L, lr_task *t, lr_pg_op *op, const char *fname, lua_KContext ctx,
               lua_KFunction k) {
  if (op->parked) return luaL_error(L, "%s: another task is waiting on it", fname);
  op->task = t;
  op->parked = 1;
  lr_waitq_push(&op->q, t);
  lr_pg_op_parked(op);
  return lr_task_park_on(L, t, lr_pg_op_cancel, lr_pg_op_describe, ctx, k);
}

/* lr_pg_add_rows under lua_pcall: (result, table). The column names are pushed again
 * in this frame (the same interned strings as the caller's). */
static int add_rows_protected(lua_State *L) {
  const PGresult *r = lua_touserdata(L, 1);
  lua_Integer count = 0;
  int nf = lr_pq.nfields(r), i;
  lua_settop(L, 2);
  luaL_checkstack(L, nf + 8, "too many columns");
  for (i = 0; i < nf; i++) lua_pushstring(L, lr_pq.fname(r, i));
  lr_pg_add_rows(L, r, 2, &count, 3);
  return 0;
}

static int finish(lua_State *L, lr_pg_op *op, int k) {
  int n = push_failure(L, op);
  PGresult *r = op->res;
  if (n) {
    lr_pg_op_release(op);
    return n;
  }
  if (k == K_TYPES) {
    int i, nf = r ? lr_pq.nfields(r) : 0;
    lua_createtable(L, nf, 0);
    for (i = 0; i < nf; i++) {
      lua_pushinteger(L, (lua_Integer)lr_pq.ftype(r, i));
      lua_rawseti(L, -2, i + 1);
    }
    lr_pg_op_release(op);
    return 1;
  }
  if (k == K_EXEC) {
    const char *ct = r ? lr_pq.cmdTuples(r) : "";
    lua_pushinteger(L, *ct ? strtoll(ct, NULL, 10) : 0);
    if (r && lr_pq.ntuples(r) > 0 && lr_pq.nfields(r) > 0)
      lr_pg_push_value(L, r, lr_pq.ntuples(r) - 1, 0, lr_pq.ftype(r, 0));
    else
      lua_pushnil(L);
    lr_pg_op_release(op);
    return 2;
  } else {
    lua_Integer count = 0;
    int names, tidx;
    if (r == NULL || lr_pq.nfields(r) == 0) {
      lua_newtable(L);
      lua_newtable(L);
      lua_setfield(L, -2, "columns");
      lr_pg_op_release(op);
      return 1;
    }
    names = lr_pg_push_columns(L, r); /* names..., columns */
    lua_createtable(L, lr_pq.ntuples(r), 1);
    lua_insert(L, -2);
    lua_setfield(L, -2, "columns");
    tidx = lua_gettop(L);
    if (lr_pq.ntuples(r) > 4096 && lua_gc(L, LUA_GCISRUNNING)) {
      /* A large result: the collector would walk the growing table again and again
       * to free nothing, so it waits until the rows are built (measured: 1,000,000
       * rows of 4 columns, 10-20 % less time). Protected, so that a memory error
       * cannot leave it stopped. */
      int rc;
      lua_pushcfunction(L, add_rows_protected);
      lua_pushlightuserdata(L, r);
      lua_pushvalue(L, tidx);
      lua_gc(L, LUA_GCSTOP);
      rc = lua_pcall(L, 2, 0, 0);
      lua_gc(L, LUA_GCRESTART);
      if (rc != LUA_OK) {
        lr_pg_op_release(op);
        return lua_error(L);
      }
    } else {
      lr_pg_add_rows(L, r, tidx, &count, names);
    }
    lr_pg_op_release(op);
    lua_settop(L, tidx);
    return 1;
  }
}

static int op_k(lua_State *L, int status, lua_KContext ctx) {
  lr_pg_op *op = lua_touserdata(L, -1);
  lr_task *t = lr_task_self(L);
  (void)status;
  lua_pop(L, 1);
  if (t->wake == LR_WAKE_CANCELLED) {
    lr_pg_op_release(op);
    lr_error_raise_cancelled(L);
  }
  return finish(L, op, (int)ctx);
}

static int statement(lua_State *L, int k);
static int query_k(lua_State *L, int s, lua_KContext c) { (void)s, (void)c; return statement(L, K_QUERY); }
static int exec_k(lua_State *L, int s, lua_KContext c) { (void)s, (void)c; return statement(L, K_EXEC); }
static int types_k(lua_State *L, int s, lua_KContext c) { (void)s, (void)c; return statement(L, K_TYPES); }

/* conn:query / conn:exec: the stack is conn, sql, params... */
static int statement(lua_State *L, int k) {
  const char *fname = k == K_EXEC ? "exec" : k == K_TYPES ? "copy_in" : "query";
  pgbox *b = check_box(L, fname);
  const char *sql = check_sql(L, 2, fname);
  lr_task *t = lr_task_enter(L, fname);
  lr_pg_params_t p;
  lr_pg_op *op;
  char err[256];
  int n = lua_gettop(L) - 2;
  if (!lr_db_gate_open(&b->gate, t))
    return lr_db_gate_wait(L, t, &b->gate, k == K_EXEC ? exec_k : k == K_TYPES ? types_k : query_k);
  if (b->c == NULL || lr_pg_is_closed(b->c)) return fail_closed(L, lr_pg_why(b->c));
  lr_pg_params(L, 3, n, &p, fname);
  op = lr_pg_send(b->c, t, LR_PG_QUERY, sql, n, p.values, p.lengths, p.formats, err, sizeof err);
  if (op == NULL) return fail_closed(L, err);
  if (!lr_pg_op_waits(op)) return finish(L, op, k);
  lua_pushlightuserdata(L, op);
  return lr_pg_park(L, t, op, fname, (lua_KContext)k, op_k);
}

static int l_query(lua_State *L) { return statement(L, K_QUERY); }
static int l_exec(lua_State *L) { return statement(L, K_EXEC); }
/* conn:_types(sql) -> the type OIDs of sql's result columns (copy_in's binary form) */
static int l_types(lua_State *L) { return statement(L, K_TYPES); }

/* ---- conn:rows: single-row mode, handed over in batches ---- */

typedef struct rowsbox {
  lr_pg_op *op;
  lua_Integer pos, count;  /* in the current batch (user value 1; 2: the connection) */
} rowsbox;

static void rows_release(rowsbox *rb) {
  if (rb->op) {
    lr_pg_op_release(rb->op);
    rb->op = NULL;
  }
}

static int rows_gc(lua_State *L) {
  rows_release(luaL_checkudata(L, 1, ROWS_MT));
  return 0;
}

/* Turns the rows op holds into a new batch (user value 1). */
static void take_batch(lua_State *L, rowsbox *rb, int rbidx) {
  lr_pg_op *op = rb->op;
  lua_Integer n = 0;
  int i, names, top = lua_gettop(L);
  if (op->nrows > 0) {
    lua_createtable(L, op->nrows, 0);
    names = lr_pg_push_columns(L, op->rows[0]);
    lua_pop(L, 1); /* the columns array */
    for (i = 0; i < op->nrows; i++) lr_pg_add_rows(L, op->rows[i], names - 1, &n, names);
    for (i = 0; i < op->nrows; i++) lr_pq.clear(op->rows[i]);
    op->nrows = 0;
    lua_settop(L, names - 1);
    lr_pg_rows_taken(op);
  } else if (op->res && lr_pq.ntuples(op->res) > 0) { /* single-row mode refused */
    lua_createtable(L, lr_pq.ntuples(op->res), 0);
    names = lr_pg_push_columns(L, op->res);
    lua_pop(L, 1);
    lr_pg_add_rows(L, op->res, names - 1, &n, names);
    lua_settop(L, names - 1);
    lr_pq.clear(op->res);
    op->res = NULL;
  } else {
    lua_newtable(L);
  }
  lua_setiuservalue(L, rbidx, 1);
  rb->pos = 0, rb->count = n;
  lua_settop(L, top);
}

static int rows_next(lua_State *L);
static int rows_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = lr_task_self(L);
  (void)status, (void)ctx;
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  return rows_next(L);
}

static int rows_next(lua_State *L) {
  rowsbox *rb = lua_touserdata(L, lua_upvalueindex(1));
  lr_pg_op *op;
  lr_task *t;
  for (;;) {
    if (rb->pos < rb->count) {
      lua_getiuservalue(L, lua_upvalueindex(1), 1);
      lua_rawgeti(L, -1, ++rb->pos);
      return 1;
    }
    if ((op = rb->op) == NULL) return 0;
    if (op->nrows > 0 || (op->end == LR_PG_OK && op->res && lr_pq.ntuples(op->res) > 0)) {
      lua_pushvalue(L, lua_upvalueindex(1));
      take_batch(L, rb, lua_gettop(L));
      lua_pop(L, 1);
      continue;
    }
    if (op->end) {
      int n = push_failure(L, op);
      rows_release(rb);
      if (n) return lua_error(L); /* a for loop cannot take nil, err: raise it */
      return 0;
    }
    t = lr_task_enter(L, "rows");
    return lr_pg_park(L, t, op, "rows", 0, rows_k);
  }
}

static int rows_k2(lua_State *L, int s, lua_KContext c);
static int l_rows(lua_State *L) {
  pgbox *b = check_box(L, "rows");
  const char *sql = check_sql(L, 2, "rows");
  lr_task *t = lr_task_enter(L, "rows");
  lr_pg_params_t p;
  rowsbox *rb;
  char err[256];
  int n = lua_gettop(L) - 2;
  if (!lr_db_gate_open(&b->gate, t)) return lr_db_gate_wait(L, t, &b->gate, rows_k2);
  if (b->c == NULL || lr_pg_is_closed(b->c))
    return lr_db_push_error(L, "closed", b->c && *lr_pg_why(b->c) ? lr_pg_why(b->c)
                            : "the connection is closed", NULL, NULL), lua_error(L);
  lr_pg_params(L, 3, n, &p, "rows");
  rb = lua_newuserdatauv(L, sizeof *rb, 2);
  memset(rb, 0, sizeof *rb);
  luaL_setmetatable(L, ROWS_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 2); /* the connection lives as long as its rows */
  rb->op = lr_pg_send(b->c, t, LR_PG_ROWS, sql, n, p.values, p.lengths, p.formats, err,
                      sizeof err);
  if (rb->op == NULL) return lr_db_push_error(L, "closed", err, NULL, NULL), lua_error(L);
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, rows_next, 1); /* rb, iterator */
  lua_insert(L, -2);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_rotate(L, -3, -1);             /* iterator, nil, nil, rb (the closing value) */
  return 4;
}
static int rows_k2(lua_State *L, int s, lua_KContext c) { (void)s, (void)c; return l_rows(L); }

/* ---- the rest of a connection ---- */

static int l_close(lua_State *L) {
  pgbox *b = check_box(L, "close");
  if (b->c) lr_pg_close(b->c, NULL);
  lr_db_gate_release(&b->gate);
  return 0;
}

static int l_gc(lua_State *L) {
  pgbox *b = luaL_checkudata(L, 1, CONN_MT);
  if (b->c) {
    lr_pg_release(b->c);
    b->c = NULL;
  }
  return 0;
}

static int l_is_closed(lua_State *L) {
  pgbox *b = check_box(L, "is_closed");
  lua_pushboolean(L, b->c == NULL || lr_pg_is_closed(b->c));
  return 1;
}

static int l_pin(lua_State *L) {
  pgbox *b = check_box(L, "transaction");
  return lr_db_gate_pin(L, &b->gate);
}

static int l_unpin(lua_State *L) {
  pgbox *b = check_box(L, "transaction");
  if (lua_type(L, 2) == LUA_TSTRING && b->c && !lr_pg_is_closed(b->c)) {
    char err[128];
    lr_pg_send(b->c, NULL, LR_PG_DISCARD, lua_tostring(L, 2), 0, NULL, NULL, NULL, err,
               sizeof err);
  }
  lr_db_gate_release(&b->gate);
  return 0;
}

/* conn:_notification() -> {channel =, payload =} | nil, err (the connection closed) */
static int note_k(lua_State *L, int status, lua_KContext ctx);
static int l_notification(lua_State *L) {
  pgbox *b = check_box(L, "listen");
  lr_task *t = lr_task_enter(L, "listen");
  lr_pg_note *n;
  if (b->c == NULL) return fail_closed(L, NULL);
  if ((n = lr_pg_note_take(b->c)) != NULL) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, n->channel);
    lua_setfield(L, -2, "channel");
    lua_pushstring(L, n->payload);
    lua_setfield(L, -2, "payload");
    free(n);
    return 1;
  }
  if (lr_pg_is_closed(b->c)) return fail_closed(L, lr_pg_why(b->c));
  lr_pg_note_wait(b->c, t);
  return lr_task_park(L, t, NULL, 0, note_k);
}
static int note_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = lr_task_self(L);
  (void)status, (void)ctx;
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  return l_notification(L);
}

static int l_tostring(lua_State *L) {
  pgbox *b = luaL_checkudata(L, 1, CONN_MT);
  lua_pushfstring(L, "PostgreSQL connection (%s): %p",
                  b->c && !lr_pg_is_closed(b->c) ? "open" : "closed", (void *)b);
  return 1;
}

static const luaL_Reg methods[] = {
  {"query", l_query},
  {"exec", l_exec},
  {"rows", l_rows},
  {"close", l_close},
  {"is_closed", l_is_closed},
  {"_pin", l_pin},
  {"_unpin", l_unpin},
  {"_copy_start", lr_pg_copy_start},
  {"_types", l_types},
  {"_notification", l_notification},
  {NULL, NULL}
};

static const luaL_Reg meta[] = {
  {"__gc", l_gc},
  {"__close", l_close},
  {"__tostring", l_tostring},
  {NULL, NULL}
};

static const luaL_Reg rows_meta[] = {
  {"__gc", rows_gc},
  {"__close", rows_gc},
  {NULL, NULL}
};

int luaopen_luarun_db_pg(lua_State *L) {
  luaL_requiref(L, "luarun", luaopen_luarun, 0);
  lua_pop(L, 1);
  lr_register_class(L, CONN_MT, methods, meta);
  lr_register_class(L, ROWS_MT, NULL, rows_meta);
  lr_pg_copy_register(L);
  luaL_newmetatable(L, LR_DB_JSON_MT);
  lua_pop(L, 1);
  lr_db_push_driver(L, l_open, CONN_MT, "BEGIN");
  lua_pushcfunction(L, lr_pg_decode_text);
  lua_setfield(L, -2, "_decode");
  return 1;
}
