/* lr_pg.h: PostgreSQL through libpq's non-blocking API, driven by the loop (pg_conn.c),
 * with libpq opened at run time (pg_api.c).
 *
 * One connection is one PGconn in pipeline mode, watched by a uv_poll_t on its socket.
 * Every statement is an operation (lr_pg_op): its Parse (the first time a text is
 * seen, when statements are cached), Bind/Execute, and a Sync of its own, so that an
 * error aborts only that statement, never another task's. Operations go out as soon
 * as their task makes them, back to back with those of other tasks, and their results
 * come back in the same order: the connection keeps a FIFO of sent operations and
 * counts result sets to tell whose result is whose (libpq does not label them).
 * Nothing on the loop thread blocks: sends only queue into libpq's buffer, flushed
 * when the socket is writable; results are read only while PQisBusy says they are
 * complete. COPY and LISTEN leave the pipeline: a COPY waits for the FIFO to empty.
 */
#ifndef LR_PG_H
#define LR_PG_H

#include <libpq-fe.h>
#include "lr_sched.h"

/* ---- pg_api.c: libpq, opened at run time ----
 * Linking libpq would load libssl, libcrypto, GSSAPI, Kerberos and LDAP into every
 * start; lr_pg_load() dlopens libpq.so.5 the first time a script connects.
 * X(return type, name without "PQ", parameter list) */
#define LR_PG_FUNCTIONS(X)                                                              \
  X(PGconn *, connectStartParams, (const char *const *k, const char *const *v, int e)) \
  X(PostgresPollingStatusType, connectPoll, (PGconn *c))                                \
  X(ConnStatusType, status, (const PGconn *c))                                          \
  X(int, socket, (const PGconn *c))                                                     \
  X(char *, errorMessage, (const PGconn *c))                                            \
  X(void, finish, (PGconn *c))                                                          \
  X(int, setnonblocking, (PGconn *c, int arg))                                          \
  X(int, enterPipelineMode, (PGconn *c))                                                \
  X(int, exitPipelineMode, (PGconn *c))                                                 \
  X(int, pipelineSync, (PGconn *c))                                                     \
  X(int, sendQuery, (PGconn *c, const char *q))                                         \
  X(int, sendQueryParams, (PGconn *c, const char *q, int n, const Oid *t,               \
                           const char *const *v, const int *l, const int *f, int rf))   \
  X(int, sendPrepare, (PGconn *c, const char *name, const char *q, int n, const Oid *t)) \
  X(int, sendQueryPrepared, (PGconn *c, const char *name, int n, const char *const *v,  \
                             const int *l, const int *f, int rf))                       \
  X(int, flush, (PGconn *c))                                                            \
  X(int, consumeInput, (PGconn *c))                                                     \
  X(int, isBusy, (PGconn *c))                                                           \
  X(PGresult *, getResult, (PGconn *c))                                                 \
  X(ExecStatusType, resultStatus, (const PGresult *r))                                  \
  X(char *, resultErrorField, (const PGresult *r, int code))                            \
  X(char *, resultErrorMessage, (const PGresult *r))                                    \
  X(void, clear, (PGresult *r))                                                         \
  X(int, ntuples, (const PGresult *r))                                                  \
  X(int, nfields, (const PGresult *r))                                                  \
  X(char *, fname, (const PGresult *r, int col))                                        \
  X(Oid, ftype, (const PGresult *r, int col))                                           \
  X(char *, getvalue, (const PGresult *r, int row, int col))                            \
  X(int, getlength, (const PGresult *r, int row, int col))                              \
  X(int, getisnull, (const PGresult *r, int row, int col))                              \
  X(char *, cmdTuples, (PGresult *r))                                                   \
  X(int, setSingleRowMode, (PGconn *c))                                                 \
  X(PGcancel *, getCancel, (PGconn *c))                                                 \
  X(void, freeCancel, (PGcancel *c))                                                    \
  X(int, cancel, (PGcancel *c, char *buf, int len))                                     \
  X(PGnotify *, notifies, (PGconn *c))                                                  \
  X(void, freemem, (void *p))                                                           \
  X(int, putCopyData, (PGconn *c, const char *b, int n))                                \
  X(int, putCopyEnd, (PGconn *c, const char *msg))                                      \
  X(PQnoticeReceiver, setNoticeReceiver, (PGconn *c, PQnoticeReceiver f, void *arg))  \
  X(int, libVersion, (void))

typedef struct lr_pg_api {
#define LR_PG_MEMBER(ret, name, params) ret (*name) params;
  LR_PG_FUNCTIONS(LR_PG_MEMBER)
#undef LR_PG_MEMBER
} lr_pg_api;
extern lr_pg_api lr_pq;
/* Opens libpq once per process. 0, or -1 with the reason in err. */
int lr_pg_load(char *err, size_t errlen);

/* ---- pg_conn.c: connections and their operations ---- */
typedef struct lr_pg_conn lr_pg_conn;
typedef struct lr_pg_op lr_pg_op;

enum lr_pg_kind {
  LR_PG_QUERY = 1, /* a statement: its result (or error) is kept for the task */
  LR_PG_ROWS,      /* a statement in single-row mode: rows handed over in batches */
  LR_PG_DISCARD,   /* a statement nobody waits for (ROLLBACK after a failed transaction) */
  LR_PG_COPY       /* COPY ... FROM STDIN: leaves the pipeline, data from the task */
};

/* What became of an operation. */
enum lr_pg_end { LR_PG_PENDING = 0, LR_PG_OK, LR_PG_ERROR, LR_PG_LOST };

#define LR_PG_ROWS_BATCH 512  /* rows a streaming statement holds before reading stops */

struct lr_pg_op {
  lr_waitq q;              /* its task parks here (the cancel hook finds us from it) */
  lr_pg_op *next;          /* in the connection's FIFO (sent or waiting to be sent) */
  lr_pg_conn *c;
  lr_task *task;           /* the waiting task; NULL once it no longer cares (orphan) */
  int kind;
  int end;                 /* LR_PG_* end, once done */
  PGresult *res;           /* LR_PG_QUERY: the result; any kind: the first error */
  char lost[160];          /* LR_PG_LOST: why */
  /* LR_PG_ROWS: single-row results not yet taken by the task */
  PGresult **rows;
  int nrows, rows_cap;
  /* LR_PG_COPY: the data chunk the task lends until it is queued in libpq */
  const char *data;
  size_t dlen;
  int copy_state;
  /* private to pg_conn.c */
  struct lr_pg_stmt *stmt; /* the cached statement whose Parse this sent, or NULL */
  lr_pg_op *feeds;         /* a Parse sent on its own: the statement it is for */
  char *sql;               /* owned: text, for operations not sent yet */
  char *pbuf;              /* owned: the parameters, for operations not sent yet */
  int nparams;
  const char **values;
  int *lengths, *formats;
  int sets;                /* result sets still to end (a NULL from PQgetResult each) */
  uint8_t sent, parked, single_set, cancel_at_head, cancel_sent;
};

typedef struct lr_pg_opts {
  double connect_timeout;  /* seconds; 0: 10 */
  double statement_timeout;/* seconds; 0: none */
  int cache;               /* cache prepared statements by text (off for pgbouncer) */
} lr_pg_opts;

/* Starts connecting (task t parks until lr_pg_connected says it is done). Returns the
 * connection, or NULL with a reason in err (out of memory, libpq not found). */
lr_pg_conn *lr_pg_connect(lr_runtime *rt, const char *url, const lr_pg_opts *o, char *err,
                          size_t errlen);
/* The cancel hook and wait queue for a task connecting. */
lr_waitq *lr_pg_connect_queue(lr_pg_conn *c);
/* 1 connected, 0 still connecting, -1 failed (message in *why; kind "auth" when
 * *auth is set). */
int lr_pg_connected(lr_pg_conn *c, const char **why, int *auth);
/* The connection userdata let go of c: close it, free it once its handles closed. */
void lr_pg_release(lr_pg_conn *c);
/* Closes: every operation not done ends LR_PG_LOST ("closed"). Safe to call twice. */
void lr_pg_close(lr_pg_conn *c, const char *why);
int lr_pg_is_closed(const lr_pg_conn *c);
/* Why it is closed or broken ("" if it is open or no reason is known); c may be NULL. */
const char *lr_pg_why(const lr_pg_conn *c);

/* An operation for task t (NULL: nobody waits, LR_PG_DISCARD). sql and the
 * parameters (n values with lengths, NULL for SQL NULL; formats 0 text, 1 binary) are
 * copied if the operation cannot go out at once. Returns the operation, or NULL with
 * the reason in err. */
lr_pg_op *lr_pg_send(lr_pg_conn *c, lr_task *t, int kind, const char *sql, int n,
                     const char *const *values, const int *lengths, const int *formats,
                     char *err, size_t errlen);
/* The task took what it waited for: a query's end, or the rows buffered so far. For
 * LR_PG_ROWS, call after taking rows (op->nrows set to 0 by the caller once it
 * cleared them): reading resumes. */
void lr_pg_rows_taken(lr_pg_op *op);
/* Its task has just parked on op (op->parked set): the reading may have to go on. */
void lr_pg_op_parked(lr_pg_op *op);
/* The cancel hook of a task parked on an operation. */
void lr_pg_op_cancel(lr_task *t);
/* The task is done with op (it has read its result, or gives up on it: a query not
 * done yet is cancelled on the server if it runs, and its results discarded). */
void lr_pg_op_release(lr_pg_op *op);
/* Parks-ready check: 1 if the task must wait (nothing to hand it yet). */
int lr_pg_op_waits(const lr_pg_op *op);
/* LR_PG_COPY: lends the next chunk of data (len 0: the end). The task waits
 * (lr_pg_op_waits) until it is queued in libpq, or the COPY ended. */
void lr_pg_copy_put(lr_pg_op *op, const char *data, size_t len);

/* LISTEN: notifications are queued on the connection; a task waits for one. */
typedef struct lr_pg_note {
  struct lr_pg_note *next;
  char *channel, *payload; /* one malloc block with the struct */
} lr_pg_note;
/* Takes the oldest notification (the caller frees it with free), or NULL. */
lr_pg_note *lr_pg_note_take(lr_pg_conn *c);
/* Parks-to-be: queues task t for the next notification (its park's cancel hook may be
 * the default one: it unlinks t). */
void lr_pg_note_wait(lr_pg_conn *c, lr_task *t);

/* ---- internals shared by pg_conn.c (the connection) and pg_pipeline.c (its
 * operations); nothing else uses them ---- */
#define STMT_BUCKETS 128
#define STMT_MAX 256          /* statements cached per connection; beyond: unnamed */

enum { C_CONNECTING = 1, C_READY, C_BROKEN, C_CLOSED };
enum { COPY_START = 1, COPY_DATA, COPY_PUT, COPY_END };

typedef struct lr_pg_stmt {
  struct lr_pg_stmt *next;
  uint32_t hash;
  char name[16];
  char sql[];
} lr_pg_stmt;

typedef struct pollbox {
  uv_poll_t h;
  lr_pg_conn *c;             /* NULL once the connection let go of it */
} pollbox;

struct lr_pg_conn {
  lr_runtime *rt;
  PGconn *pg;
  pollbox *poll;
  int fd, events, reffed;
  int state;
  int want_write;
  int in_pipeline;           /* pipeline mode is on (off during a COPY) */
  int released;              /* the userdata let go */
  int auth;                  /* the connect failure was authentication */
  lr_pg_conn *next_all;
  lr_waitq connect_q;
  lr_pg_op *head, *tail;     /* FIFO: sent operations first, then those not sent */
  lr_pg_op *unsent;          /* the first operation not sent yet, or NULL */
  lr_pg_op *hold;            /* a cancel request is out for it: nothing is sent meanwhile;
                                LR_PG_HOLD_ENDED once it ended, until the request is in */
  int cancels;               /* cancel requests on libuv's pool, which use this struct */
  int free_pending;          /* freed by the last of them */
  lr_pg_opts o;
  lr_pg_stmt *stmts[STMT_BUCKETS];
  int nstmts;
  unsigned stmt_seq;
  lr_pg_note *notes, *notes_tail;
  lr_waitq note_q;
  char why[256];
};

#define LR_PG_HOLD_ENDED ((lr_pg_op *)1)
void lr_pgi_update_poll(lr_pg_conn *c);   /* pg_conn.c: what the poll watches, refs */
void lr_pgi_lose(lr_pg_conn *c, const char *what); /* pg_conn.c: broken: all end LOST */
void lr_pgi_request_cancel(lr_pg_conn *c, lr_pg_op *op); /* pg_conn.c: off the loop */
void lr_pgi_drain_notifies(lr_pg_conn *c); /* pg_conn.c */
void lr_pgi_pump(lr_pg_conn *c);          /* pg_pipeline.c: send what waits */
void lr_pgi_flush(lr_pg_conn *c);         /* pg_pipeline.c: write libpq's buffer */
void lr_pgi_read_results(lr_pg_conn *c);  /* pg_pipeline.c: hand results out */
void lr_pgi_copy_writable(lr_pg_conn *c); /* pg_pipeline.c */
void lr_pgi_op_end(lr_pg_op *op, int end);/* pg_pipeline.c: wake its task or free it */
void lr_pgi_fifo_pop(lr_pg_conn *c);      /* pg_pipeline.c */
int lr_pgi_waits_behind(lr_pg_conn *c, lr_pg_op *op); /* pg_pipeline.c */

#endif
