/* db_pg_copy.c: COPY ... FROM STDIN for the PostgreSQL driver (conn:copy_in, whose
 * loop over the rows is in lua/luarun/db_front.lua).
 *
 * Rows are encoded here in chunks (one copy:put per batch of rows) and lent to libpq;
 * the task waits while libpq holds more than it could send, so a large COPY moves at
 * the server's pace in bounded memory. Two formats:
 *   - binary, when the front knows the target columns' types and each is one we can
 *     write (integers, floats, booleans, text, bytea, json, jsonb): the server then
 *     parses nothing, about half its work per row (bench/RESULTS.md, issue 15 (d));
 *   - text (tab-separated, \N for NULL) for anything else.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "db_pg.h"

#define COPY_MT "luarun.db.PgCopy"

typedef struct copybox {
  lr_pg_op *op;
  char *buf;           /* the chunk being sent: reused, lent to libpq until taken */
  size_t n, cap;
  Oid *types;          /* binary format: the columns' types (malloc'd), else NULL */
  int ncols;
  int header_sent, trailer_sent;
} copybox;

static int copy_gc(lua_State *L) {
  copybox *cb = luaL_checkudata(L, 1, COPY_MT);
  if (cb->op) {
    lr_pg_op_release(cb->op);
    cb->op = NULL;
  }
  free(cb->buf);
  free(cb->types);
  cb->buf = NULL;
  cb->types = NULL;
  cb->n = cb->cap = 0;
  return 0;
}

/* Waits while the COPY cannot take data (or has not ended); then copy_k's result. */
static int copy_k(lua_State *L, int status, lua_KContext ctx);
static int copy_wait(lua_State *L, copybox *cb, lr_task *t, int what) {
  lr_pg_op *op = cb->op;
  if (!lr_pg_op_waits(op)) return copy_k(L, LUA_OK, what);
  return lr_pg_park(L, t, op, "copy_in", what, copy_k);
}

/* what: 1 started (stack: conn, sql, types, copybox), 2 put (copybox first), 3 finish */
static int copy_k(lua_State *L, int status, lua_KContext what) {
  lr_task *t = lr_task_self(L);
  copybox *cb = lua_touserdata(L, what == 1 ? 4 : 1);
  lr_pg_op *op = cb->op;
  int n;
  if (t->wake == LR_WAKE_CANCELLED && status == LUA_YIELD) {
    lua_pushvalue(L, what == 1 ? 4 : 1);
    lua_replace(L, 1);
    copy_gc(L);
    lr_error_raise_cancelled(L);
  }
  if (what == 3 || op->end) {
    n = lr_pg_push_failure(L, op);
    if (n == 0 && op->end == LR_PG_OK) {
      const char *ct = op->res ? lr_pq.cmdTuples(op->res) : "";
      lua_pushinteger(L, *ct ? strtoll(ct, NULL, 10) : 0);
      n = 1;
    } else if (n == 0) {
      n = lr_db_fail(L, "closed", "the COPY ended early", NULL, NULL);
    }
    lr_pg_op_release(op);
    cb->op = NULL;
    return n;
  }
  if (what == 1) lua_settop(L, 4);
  else lua_pushboolean(L, 1);
  return 1;
}

static int copy_start_k(lua_State *L, int s, lua_KContext c) {
  (void)s, (void)c;
  return lr_pg_copy_start(L);
}

int lr_pg_copy_start(lua_State *L) {
  lr_pgbox *b = lr_pg_check_box(L, "copy_in");
  const char *sql = lr_pg_check_sql(L, 2, "copy_in");
  lr_task *t = lr_task_enter(L, "copy_in");
  copybox *cb;
  char err[256];
  int i, n;
  lua_settop(L, 3);
  if (!lr_db_gate_open(&b->gate, t)) return lr_db_gate_wait(L, t, &b->gate, copy_start_k);
  if (b->c == NULL || lr_pg_is_closed(b->c)) return lr_pg_fail_closed(L, lr_pg_why(b->c));
  cb = lua_newuserdatauv(L, sizeof *cb, 0);
  memset(cb, 0, sizeof *cb);
  luaL_setmetatable(L, COPY_MT);
  if (lua_istable(L, 3) && (n = (int)lua_rawlen(L, 3)) > 0) {
    if ((cb->types = malloc(n * sizeof *cb->types)) == NULL)
      return luaL_error(L, "copy_in: not enough memory");
    for (i = 0; i < n; i++) {
      lua_rawgeti(L, 3, i + 1);
      cb->types[i] = (Oid)lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
    cb->ncols = n;
  }
  if ((cb->op = lr_pg_send(b->c, t, LR_PG_COPY, sql, 0, NULL, NULL, NULL, err, sizeof err)) == NULL)
    return lr_pg_fail_closed(L, err);
  return copy_wait(L, cb, t, 1);
}

static void cb_add(lua_State *L, copybox *cb, const void *s, size_t len) {
  if (lr_reserve(&cb->buf, &cb->cap, cb->n + len, 64 << 10) != 0)
    luaL_error(L, "copy_in: not enough memory");
  memcpy(cb->buf + cb->n, s, len);
  cb->n += len;
}

static void cb_be(lua_State *L, copybox *cb, uint64_t v, int bytes) {
  unsigned char b[8];
  int i;
  for (i = bytes - 1; i >= 0; i--, v >>= 8) b[i] = (unsigned char)(v & 0xff);
  cb_add(L, cb, b, bytes);
}

/* ---- the text format ---- */

static void add_text_field(lua_State *L, copybox *cb, int idx, lua_Integer row, int col) {
  char tmp[64];
  switch (lua_type(L, idx)) {
    case LUA_TNIL: cb_add(L, cb, "\\N", 2); return;
    case LUA_TBOOLEAN: cb_add(L, cb, lua_toboolean(L, idx) ? "t" : "f", 1); return;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) snprintf(tmp, sizeof tmp, "%lld", (long long)lua_tointeger(L, idx));
      else snprintf(tmp, sizeof tmp, "%.17g", lua_tonumber(L, idx));
      cb_add(L, cb, tmp, strlen(tmp));
      return;
    case LUA_TSTRING: {
      size_t len, k, from = 0;
      const char *s = lua_tolstring(L, idx, &len);
      for (k = 0; k < len; k++) {
        const char *esc = NULL;
        switch (s[k]) {
          case '\\': esc = "\\\\"; break;
          case '\t': esc = "\\t"; break;
          case '\n': esc = "\\n"; break;
          case '\r': esc = "\\r"; break;
        }
        if (esc) {
          cb_add(L, cb, s + from, k - from);
          cb_add(L, cb, esc, 2);
          from = k + 1;
        }
      }
      cb_add(L, cb, s + from, len - from);
      return;
    }
    default:
      if (lr_db_is_null(L, idx)) {
        cb_add(L, cb, "\\N", 2);
        return;
      }
      luaL_error(L, "copy_in: row %I, column %d is a %s (numbers, strings, booleans and "
                 "db.null can be copied)", (LUAI_UACINT)row, col, luaL_typename(L, idx));
  }
}

/* ---- the binary format ---- */

static const char *type_name(Oid t) {
  switch (t) {
    case 16: return "boolean";
    case 20: return "bigint";
    case 21: return "smallint";
    case 23: return "integer";
    case 700: return "real";
    case 701: return "double precision";
    case 17: return "bytea";
    case 114: return "json";
    case 3802: return "jsonb";
    default: return "text";
  }
}

static void bad_value(lua_State *L, lua_Integer row, int col, Oid t, int idx, const char *want) {
  luaL_error(L, "copy_in: row %I, column %d: %s expected (the column is %s), got %s%s%s%s",
             (LUAI_UACINT)row, col, want, type_name(t), luaL_typename(L, idx),
             lua_type(L, idx) == LUA_TSTRING ? " '" : "",
             lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : "",
             lua_type(L, idx) == LUA_TSTRING ? "'" : "");
}

static void add_binary_field(lua_State *L, copybox *cb, int idx, lua_Integer row, int col, Oid t) {
  int isint;
  lua_Integer iv;
  if (lua_isnil(L, idx) || lr_db_is_null(L, idx)) {
    cb_be(L, cb, 0xffffffffu, 4); /* -1: NULL */
    return;
  }
  switch (t) {
    case 16:
      if (!lua_isboolean(L, idx)) bad_value(L, row, col, t, idx, "a boolean");
      cb_be(L, cb, 1, 4);
      cb_be(L, cb, lua_toboolean(L, idx) ? 1 : 0, 1);
      return;
    case 20: case 21: case 23: {
      int bytes = t == 20 ? 8 : t == 23 ? 4 : 2;
      iv = lua_tointegerx(L, idx, &isint); /* "12" too, as in the text format */
      if (!isint) bad_value(L, row, col, t, idx, "an integer");
      if ((bytes == 4 && (iv < INT32_MIN || iv > INT32_MAX)) ||
          (bytes == 2 && (iv < INT16_MIN || iv > INT16_MAX)))
        luaL_error(L, "copy_in: row %I, column %d: %I is out of range for the column (%s)",
                   (LUAI_UACINT)row, col, (LUAI_UACINT)iv, type_name(t));
      cb_be(L, cb, (uint64_t)bytes, 4);
      cb_be(L, cb, (uint64_t)iv, bytes);
      return;
    }
    case 700: case 701: {
      int isnum;
      double d = lua_tonumberx(L, idx, &isnum);
      if (!isnum) bad_value(L, row, col, t, idx, "a number");
      if (t == 700) {
        float f = (float)d;
        uint32_t u;
        memcpy(&u, &f, 4);
        cb_be(L, cb, 4, 4);
        cb_be(L, cb, u, 4);
      } else {
        uint64_t u;
        memcpy(&u, &d, 8);
        cb_be(L, cb, 8, 4);
        cb_be(L, cb, u, 8);
      }
      return;
    }
    default: { /* text, varchar, bpchar, name, bytea, json, jsonb: the bytes */
      size_t len;
      const char *s;
      int jsonb = t == 3802;
      if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER)
        bad_value(L, row, col, t, idx, "a string");
      s = lua_tolstring(L, idx, &len); /* a number becomes its text (in place: a copy) */
      if (len + jsonb > 0x7fffffff) luaL_error(L, "copy_in: row %I, column %d: value too long",
                                               (LUAI_UACINT)row, col);
      cb_be(L, cb, (uint64_t)(len + jsonb), 4);
      if (jsonb) cb_be(L, cb, 1, 1); /* jsonb's version */
      cb_add(L, cb, s, len);
    }
  }
}

/* copy:put(list, i, j): rows i..j of list (each an array of column values). */
static int l_copy_put(lua_State *L) {
  copybox *cb = luaL_checkudata(L, 1, COPY_MT);
  lua_Integer i = luaL_checkinteger(L, 3), j = luaL_checkinteger(L, 4), r;
  lr_task *t = lr_task_enter(L, "copy_in");
  int ncol, c;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 4);
  if (cb->op == NULL || cb->op->end) return lr_pg_fail_closed(L, "the COPY has ended");
  cb->n = 0;
  if (cb->types && !cb->header_sent) {
    static const char sig[] = "PGCOPY\n\377\r\n";
    cb_add(L, cb, sig, 11);
    cb_be(L, cb, 0, 4); /* flags */
    cb_be(L, cb, 0, 4); /* header extension */
    cb->header_sent = 1;
  }
  for (r = i; r <= j; r++) {
    if (lua_rawgeti(L, 2, r) != LUA_TTABLE)
      luaL_error(L, "copy_in: row %I is a %s (an array of column values expected)",
                 (LUAI_UACINT)r, luaL_typename(L, -1));
    if (cb->types) {
      if ((int)lua_rawlen(L, 5) > cb->ncols)
        luaL_error(L, "copy_in: row %I has %d values for %d columns", (LUAI_UACINT)r,
                   (int)lua_rawlen(L, 5), cb->ncols);
      cb_be(L, cb, (uint64_t)cb->ncols, 2);
      for (c = 1; c <= cb->ncols; c++) {
        lua_rawgeti(L, 5, c);
        add_binary_field(L, cb, 6, r, c, cb->types[c - 1]);
        lua_pop(L, 1);
      }
    } else {
      ncol = (int)lua_rawlen(L, 5);
      for (c = 1; c <= ncol; c++) {
        if (c > 1) cb_add(L, cb, "\t", 1);
        lua_rawgeti(L, 5, c);
        add_text_field(L, cb, 6, r, c);
        lua_pop(L, 1);
      }
      cb_add(L, cb, "\n", 1);
    }
    lua_pop(L, 1);
  }
  if (cb->n > 0) lr_pg_copy_put(cb->op, cb->buf, cb->n);
  return copy_wait(L, cb, t, 2);
}

static int l_copy_finish(lua_State *L);
static int finish_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status, (void)ctx;
  if (lr_task_self(L)->wake == LR_WAKE_CANCELLED) {
    copy_gc(L);
    lr_error_raise_cancelled(L);
  }
  return l_copy_finish(L);
}

/* copy:finish() -> rows copied | nil, err */
static int l_copy_finish(lua_State *L) {
  copybox *cb = luaL_checkudata(L, 1, COPY_MT);
  lr_task *t = lr_task_enter(L, "copy_in");
  lua_settop(L, 1);
  if (cb->op == NULL) return lr_pg_fail_closed(L, "the COPY has ended");
  if (cb->types && !cb->trailer_sent && !cb->op->end) {
    /* the trailer (and the header, for a COPY of no rows); the op has the previous
     * chunk already (the task waited for that), so the buffer is free */
    cb->trailer_sent = 1;
    cb->n = 0;
    if (!cb->header_sent) {
      static const char sig[] = "PGCOPY\n\377\r\n";
      cb_add(L, cb, sig, 11);
      cb_be(L, cb, 0, 8);
      cb->header_sent = 1;
    }
    cb_be(L, cb, 0xffff, 2);
    lr_pg_copy_put(cb->op, cb->buf, cb->n);
    if (lr_pg_op_waits(cb->op)) { /* libpq's buffer was full: when it takes the trailer */
      return lr_pg_park(L, t, cb->op, "copy_in", 0, finish_k);
    }
  }
  if (!cb->op->end) lr_pg_copy_put(cb->op, NULL, 0);
  if (!cb->op->end) return lr_pg_park(L, t, cb->op, "copy_in", 3, copy_k);
  return copy_k(L, LUA_OK, 3);
}

static const luaL_Reg copy_methods[] = {
  {"put", l_copy_put},
  {"finish", l_copy_finish},
  {NULL, NULL}
};

static const luaL_Reg copy_meta[] = {
  {"__gc", copy_gc},
  {"__close", copy_gc},
  {NULL, NULL}
};

void lr_pg_copy_register(lua_State *L) {
  lr_register_class(L, COPY_MT, copy_methods, copy_meta);
}
