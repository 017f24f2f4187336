/* db_sqlite.c: the `luarun.db.sqlite` driver of luarun.db (db_common.h says what a
 * driver gives the front). Statements run on the connection's thread (core/
 * db_sqlite.c); this file checks arguments, encodes parameters into the job, and
 * turns the job's flat result into Lua values, on the loop thread, in the task's
 * continuation (or at once when the caller polled for a quick result).
 *
 * Values: integers <-> INTEGER, floats <-> REAL, strings <-> TEXT (a string that is
 * not valid UTF-8 is bound as a BLOB; a BLOB comes back as a string), booleans -> 1/0,
 * db.null <-> NULL. Parameters: ?, ?NNN from the arguments; :name, @name, $name from
 * a single table argument (its other keys are ignored).
 */
#include <string.h>
#include "db_common.h"

#define CONN_MT "luarun.db.SqliteConn"
#define STMT_MT "luarun.db.SqliteStmt"
#define ROWS_MT "luarun.db.SqliteRows"

typedef struct sqconn {
  lr_sqlite *c;        /* NULL once dropped (collected, or the open failed) */
  lr_db_gate gate;
} sqconn;

/* A prepared statement: its connection and text are its user values 1 and 2. */
typedef struct sqstmt {
  int closed;
} sqstmt;

/* conn:rows()'s iterator state and to-be-closed value. User values: 1 the connection
 * object (kept alive while rows are read), 2 the column names. */
enum { CUR_OPEN = 1, CUR_FETCHING, CUR_DONE };
typedef struct cursor {
  lr_sqlite *c;
  lr_sqstmt *stmt;     /* open on the thread while more rows may come, or NULL */
  int state;
  int closed;          /* closed while a fetch was out: reset when it comes back */
  char *buf;           /* the current batch (its rows only) */
  size_t cap, pos;
  uint32_t left, ncols;
} cursor;

static int l_query(lua_State *L);
static int l_exec(lua_State *L);
static int l_rows(lua_State *L);
static int rows_next(lua_State *L);

/* ================= parameters ================= */

/* nil and db.null are NULL, as with PostgreSQL; db.json(v) is v's JSON text. */
static void check_value(lua_State *L, int idx, const char *fname, int n, const char *name) {
  int t = lua_type(L, idx);
  if (t == LUA_TNUMBER || t == LUA_TSTRING || t == LUA_TBOOLEAN || t == LUA_TNIL ||
      lr_db_is_null(L, idx))
    return;
  if (name) luaL_error(L, "%s: bad parameter '%s' (%s cannot be bound)", fname, name,
                       luaL_typename(L, idx));
  luaL_error(L, "%s: bad parameter #%d (%s cannot be bound)", fname, n, luaL_typename(L, idx));
}

/* Checks the parameters first..last (raising, naming fname); returns 'N' for a single
 * table of named parameters, else 'P'. */
static int check_params(lua_State *L, const char *fname, int first, int last) {
  int i;
  if (first == last && lua_type(L, first) == LUA_TTABLE && !lr_db_is_json(L, first)) {
    int any = 0;
    lua_pushnil(L);
    while (lua_next(L, first)) {
      any = any || lr_db_is_json(L, -1);
      lua_pop(L, 1);
    }
    if (any) { /* a copy with each JSON value as its text (the script's table is its own) */
      lua_newtable(L);
      lua_pushnil(L);
      while (lua_next(L, first)) {
        if (lr_db_is_json(L, -1)) {
          lua_rawgeti(L, -1, 1);
          lr_json_encode(L, lua_gettop(L));
          lua_remove(L, -2);
          lua_remove(L, -2);
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
      }
      lua_replace(L, first);
    }
    lua_pushnil(L);
    while (lua_next(L, first)) {
      if (lua_type(L, -2) == LUA_TSTRING) check_value(L, -1, fname, 0, lua_tostring(L, -2));
      lua_pop(L, 1);
    }
    return 'N';
  }
  for (i = first; i <= last; i++) {
    if (lr_db_is_json(L, i)) { /* its JSON text takes its place */
      lua_rawgeti(L, i, 1);
      lr_json_encode(L, lua_gettop(L));
      lua_replace(L, i);
      lua_pop(L, 1);
    }
    check_value(L, i, fname, i - first + 1, NULL);
  }
  return 'P';
}

static int put_value(lua_State *L, lr_sqbuf *b, int idx) {
  char rec[9];
  size_t n;
  const char *s;
  lua_Integer iv;
  double dv;
  uint32_t len;
  switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        rec[0] = LR_SQ_INT;
        iv = lua_tointeger(L, idx);
        memcpy(rec + 1, &iv, 8);
      } else {
        rec[0] = LR_SQ_FLOAT;
        dv = lua_tonumber(L, idx);
        memcpy(rec + 1, &dv, 8);
      }
      return lr_sqbuf_put(b, rec, 9);
    case LUA_TBOOLEAN:
      rec[0] = LR_SQ_INT;
      iv = lua_toboolean(L, idx);
      memcpy(rec + 1, &iv, 8);
      return lr_sqbuf_put(b, rec, 9);
    case LUA_TSTRING:
      s = lua_tolstring(L, idx, &n);
      if (n > UINT32_MAX) return -1;
      rec[0] = lr_db_utf8_valid(s, n, 1) ? LR_SQ_TEXT : LR_SQ_BLOB;
      len = (uint32_t)n;
      memcpy(rec + 1, &len, 4);
      if (lr_sqbuf_put(b, rec, 5) != 0) return -1;
      return lr_sqbuf_put(b, s, n);
    default:
      rec[0] = LR_SQ_NULL;
      return lr_sqbuf_put(b, rec, 1);
  }
}

/* Writes the SQL and the parameters into j->in (lr_sqlite.h has the layout). 0, or -1
 * when out of memory. */
static int encode(lua_State *L, lr_sqlite_job *j, const char *sql, size_t len, int mode,
                  int first, int last) {
  lr_sqbuf *b = &j->in;
  uint32_t n32 = (uint32_t)len, count = 0;
  size_t at;
  char m = (char)mode;
  if (len > UINT32_MAX || lr_sqbuf_put(b, &n32, 4) != 0 || lr_sqbuf_put(b, sql, len + 1) != 0 ||
      lr_sqbuf_put(b, &m, 1) != 0)
    return -1;
  at = b->n;
  if (lr_sqbuf_put(b, &count, 4) != 0) return -1;
  if (mode == 'P') {
    int i;
    for (i = first; i <= last; i++)
      if (put_value(L, b, i) != 0) return -1;
    count = (uint32_t)(last >= first ? last - first + 1 : 0);
  } else {
    lua_pushnil(L);
    while (lua_next(L, first)) {
      size_t kn;
      const char *k;
      if (lua_type(L, -2) == LUA_TSTRING) {
        k = lua_tolstring(L, -2, &kn);
        n32 = (uint32_t)kn;
        if (lr_sqbuf_put(b, &n32, 4) != 0 || lr_sqbuf_put(b, k, kn) != 0 ||
            put_value(L, b, -1) != 0) {
          lua_pop(L, 2);
          return -1;
        }
        count++;
      }
      lua_pop(L, 1);
    }
  }
  memcpy(b->p + at, &count, 4);
  return 0;
}

/* ================= results ================= */

static uint32_t get_u32(const char **p) {
  uint32_t v;
  memcpy(&v, *p, 4);
  *p += 4;
  return v;
}

static const char *push_value(lua_State *L, const char *p) {
  lua_Integer iv;
  double dv;
  uint32_t n;
  switch (*p++) {
    case LR_SQ_INT:
      memcpy(&iv, p, 8);
      lua_pushinteger(L, iv);
      return p + 8;
    case LR_SQ_FLOAT:
      memcpy(&dv, p, 8);
      lua_pushnumber(L, dv);
      return p + 8;
    case LR_SQ_TEXT:
    case LR_SQ_BLOB:
      n = get_u32(&p);
      lua_pushlstring(L, p, n);
      return p + n;
    default:
      lua_pushlightuserdata(L, LR_DB_NULL);
      return p;
  }
}

/* Pushes a table of the column names at *p (moved past them); returns their count. */
static uint32_t push_columns(lua_State *L, const char **p) {
  uint32_t n = get_u32(p), i;
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    uint32_t len = get_u32(p);
    lua_pushlstring(L, *p, len);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
    *p += len;
  }
  return n;
}

/* Pushes a row {name = value} read at *p; the names are at names..names+ncols-1. */
static void push_row(lua_State *L, const char **p, int names, uint32_t ncols) {
  uint32_t i;
  lua_createtable(L, 0, (int)ncols);
  for (i = 0; i < ncols; i++) {
    lua_pushvalue(L, names + (int)i);
    *p = push_value(L, *p);
    lua_rawset(L, -3);
  }
}

/* Pushes nil and the job's error (or raises it: misuse), and gives the job back. */
static int job_fail(lua_State *L, lr_sqlite_job *j, int raise) {
  const char *fname = j->fname;
  lua_pushnil(L);
  if (j->rc == LR_SQ_MISUSE) {
    lua_pushfstring(L, "%s: %s", fname, j->out.p);
    lr_sqlite_job_put(j);
    return lua_error(L);
  }
  if (j->rc == LR_SQ_CLOSED) {
    lua_pushfstring(L, "%s: the connection is closed", fname);
    lr_db_push_error(L, "closed", lua_tostring(L, -1), NULL, NULL);
    lua_remove(L, -2);
  } else {
    lr_db_push_error(L, j->kind, j->out.p, j->code[0] ? j->code : NULL, NULL);
    if (j->constraint_len) {
      lua_pushlstring(L, j->out.p + j->constraint_off, j->constraint_len);
      lua_setfield(L, -2, "constraint");
    }
  }
  lr_sqlite_job_put(j);
  if (raise) return lua_error(L);
  return 2;
}

static int closed_error(lua_State *L, const char *fname, int raise) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: the connection is closed", fname);
  lr_db_push_error(L, "closed", lua_tostring(L, -1), NULL, NULL);
  lua_remove(L, -2);
  if (raise) return lua_error(L);
  return 2;
}

static int finish_query(lua_State *L, lr_sqlite_job *j) {
  const char *p = j->out.p;
  uint32_t ncols, r, i;
  int rows, names;
  lua_createtable(L, (int)j->nrows, 1);                 /* rows */
  rows = lua_gettop(L);
  ncols = push_columns(L, &p);                          /* rows columns */
  luaL_checkstack(L, (int)ncols + 8, "query: too many columns");
  names = lua_gettop(L) + 1;
  for (i = 1; i <= ncols; i++) lua_rawgeti(L, rows + 1, i);
  for (r = 1; r <= j->nrows; r++) {
    push_row(L, &p, names, ncols);
    lua_rawseti(L, rows, r);
  }
  lua_settop(L, rows + 1);
  lua_setfield(L, rows, "columns");
  lr_sqlite_job_put(j);
  return 1;
}

/* The first batch of a cursor (at the stack's top) or the next one: keeps its rows
 * in the cursor. */
static void take_batch(lua_State *L, cursor *cur, lr_sqlite_job *j, int cidx) {
  const char *p = j->out.p;
  size_t n;
  if (lua_getiuservalue(L, cidx, 2) != LUA_TTABLE) {
    lua_pop(L, 1);
    cur->ncols = push_columns(L, &p);
    lua_setiuservalue(L, cidx, 2);
  } else {
    lua_pop(L, 1);
    p += 4;
    for (uint32_t i = 0; i < cur->ncols; i++) p += get_u32(&p);
  }
  n = j->out.n - (size_t)(p - j->out.p);
  if (n > cur->cap) {
    char *nb = realloc(cur->buf, n);
    if (nb == NULL) {
      lr_sqlite_job_put(j);
      luaL_error(L, "rows: out of memory");
    }
    cur->buf = nb;
    cur->cap = n;
  }
  if (n) memcpy(cur->buf, p, n);
  cur->pos = 0;
  cur->left = j->nrows;
  cur->stmt = j->more ? j->stmt : NULL;
  cur->state = j->more ? CUR_OPEN : CUR_DONE;
}

/* Gives the cursor's open statement back to the cache, without waiting. */
static void cursor_reset(cursor *cur) {
  if (cur->stmt && !lr_sqlite_is_closed(cur->c)) {
    lr_sqlite_job *j = lr_sqlite_job_get(cur->c, LR_SQ_RESET, "rows");
    if (j) { /* out of memory: the statement stays open until the connection closes */
      j->stmt = cur->stmt;
      lr_sqlite_send(j, NULL);
    }
  }
  cur->stmt = NULL;
}

static int push_next_row(lua_State *L, cursor *cur, int cidx) {
  const char *p = cur->buf + cur->pos;
  int names;
  uint32_t i;
  lua_getiuservalue(L, cidx, 2);
  luaL_checkstack(L, (int)cur->ncols + 8, "rows: too many columns");
  names = lua_gettop(L) + 1;
  for (i = 1; i <= cur->ncols; i++) lua_rawgeti(L, names - 1, i);
  push_row(L, &p, names, cur->ncols);
  cur->pos = (size_t)(p - cur->buf);
  cur->left--;
  return 1;
}

/* Reads the result of a finished job: what the call returns. */
static int finish(lua_State *L, lr_sqlite_job *j) {
  cursor *cur;
  sqconn *u;
  if (j->op == LR_SQ_OPEN) {
    u = j->owner;
    if (j->rc != 0) {
      lr_sqlite_drop(u->c); /* the thread is told to end, and joined */
      u->c = NULL;
      return job_fail(L, j, 0);
    }
    lr_sqlite_job_put(j);
    return 1; /* the connection object, at the top */
  }
  if (j->op == LR_SQ_CLOSE) {
    lr_sqlite_job_put(j); /* joins the thread */
    lua_pushboolean(L, 1);
    return 1;
  }
  if (j->op == LR_SQ_CURSOR || j->op == LR_SQ_FETCH) {
    int cidx = lua_gettop(L); /* the cursor: at the top, or the iterator's state */
    cur = j->owner;
    if (j->op == LR_SQ_FETCH) cidx = 1;
    cur->state = CUR_DONE;
    if (j->rc != 0) return job_fail(L, j, 1);
    take_batch(L, cur, j, cidx);
    lr_sqlite_job_put(j);
    if (cur->closed) cursor_reset(cur); /* closed while the batch was coming */
    if (j->op == LR_SQ_CURSOR) {
      lua_pushcfunction(L, rows_next);
      lua_insert(L, -2);
      lua_pushnil(L);
      lua_pushvalue(L, -2);
      return 4; /* iterator, state, nil, closing value */
    }
    if (cur->left == 0 || cur->closed) return 0;
    return push_next_row(L, cur, cidx);
  }
  if (j->rc != 0) return job_fail(L, j, 0);
  switch (j->op) {
    case LR_SQ_EXEC:
      lua_pushinteger(L, j->changes);
      lua_pushinteger(L, j->last_id);
      lr_sqlite_job_put(j);
      return 2;
    case LR_SQ_QUERY:
      return finish_query(L, j);
    default: /* LR_SQ_PREPARE: conn and sql at 1 and 2 */
      lr_sqlite_job_put(j);
      lua_newuserdatauv(L, sizeof(sqstmt), 2);
      ((sqstmt *)lua_touserdata(L, -1))->closed = 0;
      luaL_setmetatable(L, STMT_MT);
      lua_pushvalue(L, 1);
      lua_setiuservalue(L, -2, 1);
      lua_pushvalue(L, 2);
      lua_setiuservalue(L, -2, 2);
      return 1;
  }
}

static int job_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (lr_task_self(L)->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  return finish(L, (lr_sqlite_job *)ctx);
}

/* Sends j for the calling task t: its result at once, or after a park. */
static int send_job(lua_State *L, lr_task *t, lr_sqlite_job *j) {
  if (lr_sqlite_send(j, t)) return finish(L, j);
  return lr_sqlite_park(L, t, j, job_k);
}

/* ================= statements ================= */

/* The connection at index 1 of method fname, or raises (named: the method is called
 * through pcall and the pools as often as with a colon, so Lua cannot name it). */
static sqconn *conn_arg(lua_State *L, const char *fname) {
  sqconn *u = luaL_testudata(L, 1, CONN_MT);
  if (u == NULL)
    luaL_error(L, "calling '%s' on bad self (%s expected, got %s)", fname, CONN_MT,
               luaL_typename(L, 1));
  return u;
}

static const char *sql_arg(lua_State *L, const char *fname, size_t *len) {
  const char *sql = lua_tolstring(L, 2, len);
  if (lua_type(L, 2) != LUA_TSTRING)
    luaL_error(L, "bad argument #1 to '%s' (string expected, got %s)", fname,
               luaL_typename(L, 2));
  return sql;
}

static sqconn *check_conn(lua_State *L) {
  return luaL_checkudata(L, 1, CONN_MT);
}

/* The body of query, exec, rows and prepare: conn at 1, SQL at 2, parameters after.
 * restart: the Lua function's continuation after a wait at the transaction gate. */
static int statement(lua_State *L, int op, const char *fname, lua_KFunction restart) {
  sqconn *u = conn_arg(L, fname);
  size_t len;
  const char *sql = sql_arg(L, fname, &len);
  int top = lua_gettop(L), mode = 'P';
  lr_task *t = lr_task_enter(L, fname);
  lr_sqlite_job *j;
  cursor *cur = NULL;
  if (op != LR_SQ_PREPARE) mode = check_params(L, fname, 3, top);
  if (lr_sqlite_is_closed(u->c)) return closed_error(L, fname, op == LR_SQ_CURSOR);
  if (!lr_db_gate_open(&u->gate, t)) return lr_db_gate_wait(L, t, &u->gate, restart);
  if (op == LR_SQ_CURSOR) { /* built closed, so that a raise leaves nothing open */
    cur = lua_newuserdatauv(L, sizeof *cur, 2);
    memset(cur, 0, sizeof *cur);
    cur->state = CUR_DONE;
    luaL_setmetatable(L, ROWS_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
  }
  if ((j = lr_sqlite_job_get(u->c, op, fname)) == NULL)
    return luaL_error(L, "%s: out of memory", fname);
  if (encode(L, j, sql, len, mode, 3, top) != 0) {
    lr_sqlite_job_put(j);
    return luaL_error(L, "%s: out of memory", fname);
  }
  if (cur) {
    cur->c = u->c;
    cur->state = CUR_FETCHING;
    j->owner = cur;
  }
  return send_job(L, t, j);
}

static int query_k(lua_State *L, int s, lua_KContext k) { (void)s, (void)k; return l_query(L); }
static int exec_k(lua_State *L, int s, lua_KContext k) { (void)s, (void)k; return l_exec(L); }
static int rows_k(lua_State *L, int s, lua_KContext k) { (void)s, (void)k; return l_rows(L); }

/* conn:query(sql, ...) -> rows | nil, err */
static int l_query(lua_State *L) {
  return statement(L, LR_SQ_QUERY, "query", query_k);
}

/* conn:exec(sql, ...) -> affected_rows, last_insert_id | nil, err */
static int l_exec(lua_State *L) {
  return statement(L, LR_SQ_EXEC, "exec", exec_k);
}

/* conn:rows(sql, ...) -> iterator, state, nil, closing value (raises on errors) */
static int l_rows(lua_State *L) {
  return statement(L, LR_SQ_CURSOR, "rows", rows_k);
}

static int prepare_k(lua_State *L, int s, lua_KContext k);
/* conn:prepare(sql) -> stmt | nil, err: compiled now (errors now), cached by text. */
static int l_prepare(lua_State *L) {
  lua_settop(L, 2);
  return statement(L, LR_SQ_PREPARE, "prepare", prepare_k);
}
static int prepare_k(lua_State *L, int s, lua_KContext k) { (void)s, (void)k; return l_prepare(L); }

/* ================= the iterator of conn:rows ================= */

static int next_k(lua_State *L, int s, lua_KContext k) { (void)s, (void)k; return rows_next(L); }

/* iterator(cursor) -> the next row, or nil at the end; raises errors. */
static int rows_next(lua_State *L) {
  cursor *cur = luaL_checkudata(L, 1, ROWS_MT);
  sqconn *u;
  lr_task *t;
  lr_sqlite_job *j;
  lua_settop(L, 1);
  if (cur->left > 0) return push_next_row(L, cur, 1);
  if (cur->state == CUR_FETCHING)
    return luaL_error(L, "rows: another task is reading this iterator (or its read was "
                      "cancelled)");
  if (cur->stmt == NULL || cur->closed) {
    free(cur->buf);
    cur->buf = NULL;
    cur->cap = 0;
    return 0;
  }
  t = lr_task_enter(L, "rows");
  lua_getiuservalue(L, 1, 1);
  u = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (lr_sqlite_is_closed(u->c)) {
    cur->stmt = NULL;
    cur->state = CUR_DONE;
    return closed_error(L, "rows", 1);
  }
  if (!lr_db_gate_open(&u->gate, t)) return lr_db_gate_wait(L, t, &u->gate, next_k);
  if ((j = lr_sqlite_job_get(u->c, LR_SQ_FETCH, "rows")) == NULL)
    return luaL_error(L, "rows: out of memory");
  j->stmt = cur->stmt;
  j->owner = cur;
  cur->stmt = NULL; /* the job's until it comes back */
  cur->state = CUR_FETCHING;
  return send_job(L, t, j);
}

/* __close and __gc: reset the statement if rows are left unread. */
static int rows_close(lua_State *L) {
  cursor *cur = luaL_checkudata(L, 1, ROWS_MT);
  if (cur->state == CUR_FETCHING) {
    cur->closed = 1; /* the batch's continuation resets it, or the orphaned job does */
  } else {
    cursor_reset(cur);
    cur->state = CUR_DONE;
  }
  cur->left = 0;
  free(cur->buf);
  cur->buf = NULL;
  cur->cap = 0;
  return 0;
}

/* ================= prepared statements ================= */

/* Rewrites the stack (stmt, args...) as (conn, sql, args...) for the connection's
 * method; returns the statement or raises. */
static int stmt_call(lua_State *L, lua_CFunction method, const char *fname) {
  sqstmt *s = luaL_checkudata(L, 1, STMT_MT);
  lua_getiuservalue(L, 1, 2);                /* stmt args... sql */
  lua_insert(L, 2);                          /* stmt sql args... */
  lua_getiuservalue(L, 1, 1);
  lua_replace(L, 1);                         /* conn sql args... */
  if (s->closed) return closed_error(L, fname, method == l_rows);
  return method(L);
}

static int l_stmt_query(lua_State *L) { return stmt_call(L, l_query, "query"); }
static int l_stmt_exec(lua_State *L) { return stmt_call(L, l_exec, "exec"); }
static int l_stmt_rows(lua_State *L) { return stmt_call(L, l_rows, "rows"); }

static int l_stmt_close(lua_State *L) {
  luaL_checkudata(L, 1, STMT_MT);
  ((sqstmt *)lua_touserdata(L, 1))->closed = 1;
  return 0;
}

/* ================= the connection ================= */

/* 1 if the code on L may park (a task's own body, not a coroutine inside it, and not
 * being cancelled). */
static int can_park(lua_State *L) {
  lr_task *t = lr_task_can_park(L);
  return t != NULL && !(t->flags & LR_F_CANCEL);
}

/* conn:close() -> true. Statements still queued get `closed`; the running one ends
 * first. Idempotent. Outside a task (or from __gc) it waits for the thread there. */
static int l_close(lua_State *L) {
  sqconn *u = check_conn(L);
  lr_sqlite_job *j;
  if (u->c == NULL || lr_sqlite_is_closed(u->c)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lr_db_gate_release(&u->gate); /* its waiters see the connection closed */
  if (!can_park(L)) {
    lr_sqlite_close_now(u->c);
    lua_pushboolean(L, 1);
    return 1;
  }
  j = lr_sqlite_close_job(u->c);
  lua_settop(L, 1);
  return send_job(L, lr_task_self(L), j);
}

static int l_gc(lua_State *L) {
  sqconn *u = lua_touserdata(L, 1);
  if (u->c) {
    lr_sqlite_drop(u->c);
    u->c = NULL;
  }
  return 0;
}

static int l_is_closed(lua_State *L) {
  sqconn *u = check_conn(L);
  lua_pushboolean(L, lr_sqlite_is_closed(u->c));
  return 1;
}

static int l_pin(lua_State *L) {
  return lr_db_gate_pin(L, &check_conn(L)->gate);
}

/* conn:_unpin([sql]): sql (ROLLBACK) goes first, unawaited; then the gate opens. */
static int l_unpin(lua_State *L) {
  sqconn *u = check_conn(L);
  size_t len;
  const char *sql = luaL_optlstring(L, 2, NULL, &len);
  if (sql && !lr_sqlite_is_closed(u->c)) {
    lr_sqlite_job *j = lr_sqlite_job_get(u->c, LR_SQ_EXEC, "transaction");
    if (j && encode(L, j, sql, len, 'P', 3, 2) == 0) lr_sqlite_send(j, NULL);
    else if (j) lr_sqlite_job_put(j);
  }
  lr_db_gate_release(&u->gate);
  return 0;
}

/* open(target, opts) -> conn | nil, err */
static int l_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1), *err;
  int readonly = 0;
  double busy = 5;
  lr_task *t;
  sqconn *u;
  lr_sqlite_job *j;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "busy_timeout") != LUA_TNIL) {
      busy = luaL_checknumber(L, -1);
      luaL_argcheck(L, busy >= 0 && busy <= 86400, 2, "busy_timeout must be seconds, >= 0");
    }
    if (lua_getfield(L, 2, "readonly") != LUA_TNIL) {
      luaL_argcheck(L, lua_isboolean(L, -1), 2, "readonly must be a boolean");
      readonly = lua_toboolean(L, -1);
    }
    lua_pop(L, 2);
  }
  t = lr_task_enter(L, "open");
  lua_settop(L, 2);
  u = lua_newuserdatauv(L, sizeof *u, 0);
  u->c = NULL;
  u->gate.owner = NULL;
  u->gate.q.head = NULL;
  luaL_setmetatable(L, CONN_MT);
  if ((u->c = lr_sqlite_new(t->rt, path, readonly, (int)(busy * 1000), &j, &err)) == NULL)
    return lr_db_fail(L, "connect", err, NULL, NULL);
  j->owner = u;
  return send_job(L, t, j);
}

static const luaL_Reg conn_methods[] = {
  {"query", l_query}, {"exec", l_exec}, {"rows", l_rows}, {"prepare", l_prepare},
  {"close", l_close}, {"is_closed", l_is_closed}, {"_pin", l_pin}, {"_unpin", l_unpin},
  {NULL, NULL}
};
static const luaL_Reg conn_meta[] = {{"__gc", l_gc}, {"__close", l_close}, {NULL, NULL}};
static const luaL_Reg stmt_methods[] = {
  {"query", l_stmt_query}, {"exec", l_stmt_exec}, {"rows", l_stmt_rows},
  {"close", l_stmt_close}, {NULL, NULL}
};
static const luaL_Reg rows_meta[] = {{"__gc", rows_close}, {"__close", rows_close}, {NULL, NULL}};

int luaopen_luarun_db_sqlite(lua_State *L) {
  luaL_requiref(L, "luarun", luaopen_luarun, 0);
  lua_pop(L, 1);
  lr_register_class(L, CONN_MT, conn_methods, conn_meta);
  lr_register_class(L, STMT_MT, stmt_methods, NULL);
  lr_register_class(L, ROWS_MT, NULL, rows_meta);
  lr_db_push_driver(L, l_open, CONN_MT, "BEGIN IMMEDIATE");
  return 1;
}
