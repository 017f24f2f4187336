/* db_pg.h: private to the PostgreSQL driver's bindings (db_pg.c, db_pg_values.c). */
#ifndef LUARUN_DB_PG_H
#define LUARUN_DB_PG_H

#include "db_common.h"

#define LR_PG_MAX_PARAMS 65535 /* the protocol's limit */
#define LR_PG_SMALL 32         /* parameters kept on the C stack; more: a userdata */

/* The parameters of one statement, as libpq takes them. Strings point into Lua
 * strings on the calling task's stack (lr_pg_params keeps them there). */
typedef struct lr_pg_params_t {
  int n;
  const char **values;
  int *lengths, *formats;
  char (*nums)[32];
  const char *v_s[LR_PG_SMALL];
  int l_s[LR_PG_SMALL], f_s[LR_PG_SMALL];
  char n_s[LR_PG_SMALL][32];
} lr_pg_params_t;

/* Converts the n values at first.. into p (raising "fname: bad parameter #i (...)").
 * May replace table arguments on the stack by their text, and push one userdata
 * (more than LR_PG_SMALL parameters): leave the stack as it is until sent. */
void lr_pg_params(lua_State *L, int first, int n, lr_pg_params_t *p, const char *fname);
/* Pushes column (row, col) of r as a Lua value (its type OID given). */
void lr_pg_push_value(lua_State *L, const PGresult *r, int row, int col, Oid type);
/* Pushes r's column names (nf strings, then an array of them); returns the index of
 * the first string. */
int lr_pg_push_columns(lua_State *L, const PGresult *r);
/* Appends r's rows as tables to the table at tidx, counting in *n; names at names. */
void lr_pg_add_rows(lua_State *L, const PGresult *r, int tidx, lua_Integer *n, int names);

/* _decode(oid, text) of the driver module, for the fuzz spec. */
int lr_pg_decode_text(lua_State *L);


/* ---- db_pg.c: the connection object, shared with db_pg_copy.c ---- */
typedef struct lr_pgbox {
  lr_pg_conn *c;          /* NULL once collected */
  lr_db_gate gate;
  double connect_timeout;
} lr_pgbox;
/* The connection at index 1, or raises naming fname. */
lr_pgbox *lr_pg_check_box(lua_State *L, const char *fname);
/* The SQL text at idx, or raises naming fname. */
const char *lr_pg_check_sql(lua_State *L, int idx, const char *fname);
/* Pushes nil, {kind = "closed"} (why, or "the connection is closed"); returns 2. */
int lr_pg_fail_closed(lua_State *L, const char *why);
/* Pushes nil, err for an operation that failed and returns 2; 0 if it succeeded. */
int lr_pg_push_failure(lua_State *L, lr_pg_op *op);
/* What a task parked on an operation waits on, for reports. */
void lr_pg_op_describe(lua_State *L, lr_task *t);
/* Parks t on op until the core wakes it (k then runs); raises naming fname if another
 * task waits on op already (one rows or copy object shared between tasks). */
int lr_pg_park(lua_State *L, lr_task *t, lr_pg_op *op, const char *fname, lua_KContext ctx,
               lua_KFunction k);

/* ---- db_pg_copy.c: COPY ... FROM STDIN ---- */
/* conn:_copy_start(sql [, types]) -> copy | nil, err; types: the target columns' type
 * OIDs, for the binary format (the SQL then asks for it). */
int lr_pg_copy_start(lua_State *L);
/* Registers the copy object's class. */
void lr_pg_copy_register(lua_State *L);

#endif
