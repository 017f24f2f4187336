/* db_common.h: what the two drivers of luarun.db share (bindings/db_sqlite.c for
 * SQLite, bindings/db_pg.c for PostgreSQL), and the front (bindings/db.c with
 * lua/luarun/db_front.lua), which adds transactions and pools to both.
 *
 * A driver module ("luarun.db.sqlite", "luarun.db.pg") returns a table with
 *   open(target, opts) -> conn | nil, err   (target: what follows "sqlite:", or the URL)
 *   methods                                  the connection class's method table, to
 *                                            which the front adds transaction
 *   begin_sql                                how a transaction begins ("BEGIN IMMEDIATE")
 * and its connection's methods include, besides the public ones, the gate that
 * transactions use:
 *   conn:_pin()          the calling task takes the connection for a transaction:
 *                        parks while another task's transaction holds it; returns
 *                        true, or false and a message if this task holds it already
 *                        (a nested transaction: the front raises it)
 *   conn:_unpin([sql])   gives it back; sql (ROLLBACK) is queued first, not awaited
 */
#ifndef LUARUN_DB_COMMON_H
#define LUARUN_DB_COMMON_H

#include "bindings.h"

/* A connection's transaction gate: while owner is set, statements of other tasks wait
 * in q, so that none of them lands inside the owner's transaction. */
typedef struct lr_db_gate {
  lr_task *owner;
  lr_waitq q;
} lr_db_gate;

/* 1 if task t may send a statement on the connection now. */
static inline int lr_db_gate_open(const lr_db_gate *g, const lr_task *t) {
  return g->owner == NULL || g->owner == t;
}
/* Parks t until the gate opens; then k runs, with the stack as it was, and should
 * start the call over (it checks the gate again). A cancelled wait raises. */
int lr_db_gate_wait(lua_State *L, lr_task *t, lr_db_gate *g, lua_KFunction k);
/* The body of conn:_pin() for the gate g: call it with the connection at index 1. */
int lr_db_gate_pin(lua_State *L, lr_db_gate *g);
/* Releases the gate and wakes every task waiting at it (conn:_unpin, conn:close). */
void lr_db_gate_release(lr_db_gate *g);

/* Pushes nil and an error table {kind, message, code = sqlstate (or SQLite's name),
 * constraint} (code and constraint only when not NULL); returns 2. */
int lr_db_fail(lua_State *L, const char *kind, const char *message, const char *code,
               const char *constraint);
/* As lr_db_fail, but pushes only the error table. */
void lr_db_push_error(lua_State *L, const char *kind, const char *message, const char *code,
                      const char *constraint);

/* db.null: the same light userdata as json.null, so a NULL in a row and a null in a
 * decoded json column are one value. */
#define LR_DB_NULL LR_JSON_NULL
static inline int lr_db_is_null(lua_State *L, int idx) {
  return lua_islightuserdata(L, idx) && lua_touserdata(L, idx) == LR_DB_NULL;
}

/* db.json(value): a table {value} with this metatable (registered by bindings/db.c). */
#define LR_DB_JSON_MT "luarun.db.json"
/* 1 if the value at idx is a db.json(value) wrapper. */
int lr_db_is_json(lua_State *L, int idx);

/* 1 if p[0..n) is valid UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF; a zero byte only with nul_ok): such a string is text, any other bytes. */
int lr_db_utf8_valid(const char *p, size_t n, int nul_ok);

/* Pushes a driver module's table: {open =, methods = the class conn_mt's method
 * table, begin_sql =} (the class must be registered). */
void lr_db_push_driver(lua_State *L, lua_CFunction open, const char *conn_mt,
                       const char *begin_sql);

int luaopen_luarun_db(lua_State *L);
int luaopen_luarun_db_sqlite(lua_State *L);
int luaopen_luarun_db_pg(lua_State *L);

#endif
