/* lr_sqlite.h: SQLite connections, each running its statements on a thread of its
 * own, so that the loop never waits on the disk or on a lock.
 *
 *   db_sqlite.c      the hand-over: jobs from tasks to a connection's thread and back
 *                    (staging, spinning, parking, cancelling, closing)
 *   db_sqlite_run.c  what the thread does with a job: open, the statement cache,
 *                    binding, stepping into a flat result buffer, error codes
 *
 * A statement call (bindings/db_sqlite.c) takes a job (lr_sqlite_job_get), writes the
 * SQL and its parameters into job->in (the encoding below), and sends it
 * (lr_sqlite_send). The job comes back either at once (the caller polled for a quick
 * result) or through the task's continuation after lr_sqlite_park; the caller reads
 * the result fields and job->out, then gives the job back (lr_sqlite_job_put).
 *
 * Encodings (integers in host order, unaligned: read them with memcpy):
 *   in:  u32 sql_len, sql bytes, '\0', u8 mode ('P' positional | 'N' named), u32 n,
 *        then n values; in 'N' mode each value is preceded by u32 name_len, name.
 *   value: u8 type, then LR_SQ_INT: int64; LR_SQ_FLOAT: double; LR_SQ_TEXT,
 *        LR_SQ_BLOB: u32 len, bytes; LR_SQ_NULL: nothing.
 *   out (rows): u32 ncols, ncols times (u32 len, name bytes), then nrows rows of
 *        ncols values each. On an error, out holds the message instead.
 */
#ifndef LR_SQLITE_H
#define LR_SQLITE_H

#include <pthread.h>
#include <string.h>
#include <sqlite3.h>
#include "lr_sched.h"

/* ---- sqlite_api.c: libsqlite3, opened at run time ----
 * Linked, it cost every start 0.2 ms (1.1 -> 1.3 ms for `luarun -e ''`, hyperfine),
 * for scripts that never open a database: lr_sqlite_load() dlopens libsqlite3.so.0
 * the first time a script opens one. Code calls SQLite as lr_sq.step(...) (the names
 * without "sqlite3_"). X(return type, name, parameter list) */
#define LR_SQLITE_FUNCTIONS(X) \
  X(int, open_v2, (const char *f, sqlite3 **db, int flags, const char *vfs))                                             \
  X(int, close, (sqlite3 *db))                                                                                           \
  X(int, exec, (sqlite3 *db, const char *sql, int (*cb)(void *, int, char **, char **), void *arg, char **err))          \
  X(int, prepare_v2, (sqlite3 *db, const char *sql, int n, sqlite3_stmt **st, const char **tail))                        \
  X(int, prepare_v3, (sqlite3 *db, const char *sql, int n, unsigned int f, sqlite3_stmt **st, const char **tail))        \
  X(int, step, (sqlite3_stmt *st))                                                                                       \
  X(int, reset, (sqlite3_stmt *st))                                                                                      \
  X(int, finalize, (sqlite3_stmt *st))                                                                                   \
  X(int, clear_bindings, (sqlite3_stmt *st))                                                                             \
  X(sqlite3_stmt *, next_stmt, (sqlite3 *db, sqlite3_stmt *st))                                                          \
  X(int, bind_null, (sqlite3_stmt *st, int i))                                                                           \
  X(int, bind_int64, (sqlite3_stmt *st, int i, sqlite3_int64 v))                                                         \
  X(int, bind_double, (sqlite3_stmt *st, int i, double v))                                                               \
  X(int, bind_text64, (sqlite3_stmt *st, int i, const char *s, sqlite3_uint64 n, void (*d)(void *), unsigned char enc))  \
  X(int, bind_blob64, (sqlite3_stmt *st, int i, const void *p, sqlite3_uint64 n, void (*d)(void *)))                     \
  X(int, bind_parameter_count, (sqlite3_stmt *st))                                                                       \
  X(const char *, bind_parameter_name, (sqlite3_stmt *st, int i))                                                        \
  X(int, column_count, (sqlite3_stmt *st))                                                                               \
  X(int, column_type, (sqlite3_stmt *st, int i))                                                                         \
  X(const char *, column_name, (sqlite3_stmt *st, int i))                                                                \
  X(sqlite3_int64, column_int64, (sqlite3_stmt *st, int i))                                                              \
  X(double, column_double, (sqlite3_stmt *st, int i))                                                                    \
  X(const unsigned char *, column_text, (sqlite3_stmt *st, int i))                                                       \
  X(const void *, column_blob, (sqlite3_stmt *st, int i))                                                                \
  X(int, column_bytes, (sqlite3_stmt *st, int i))                                                                        \
  X(sqlite3_int64, changes64, (sqlite3 *db))                                                                             \
  X(sqlite3_int64, total_changes64, (sqlite3 *db))                                                                       \
  X(sqlite3_int64, last_insert_rowid, (sqlite3 *db))                                                                     \
  X(const char *, errmsg, (sqlite3 *db))                                                                                 \
  X(const char *, errstr, (int rc))                                                                                      \
  X(int, extended_errcode, (sqlite3 *db))                                                                                \
  X(int, extended_result_codes, (sqlite3 *db, int on))                                                                   \
  X(int, busy_timeout, (sqlite3 *db, int ms))                                                                            \
  X(int, busy_handler, (sqlite3 *db, int (*h)(void *, int), void *arg))                                                  \
  X(void, progress_handler, (sqlite3 *db, int n, int (*h)(void *), void *arg))                                           \
  X(int, sleep, (int ms))                                                                                                \
  X(const char *, db_filename, (sqlite3 *db, const char *name))                                                          \
  X(int, config, (int op, ...))                                                                                          \
  X(const char *, libversion, (void))                                                                                   

typedef struct lr_sqlite_api {
#define LR_SQ_MEMBER(ret, name, params) ret (*name) params;
  LR_SQLITE_FUNCTIONS(LR_SQ_MEMBER)
#undef LR_SQ_MEMBER
} lr_sqlite_api;
extern lr_sqlite_api lr_sq;
/* Opens libsqlite3 once per process (and turns its memory statistics off). 0, or -1
 * with the reason in err. */
int lr_sqlite_load(char *err, size_t errlen);

struct sqlite3;
typedef struct lr_sqlite lr_sqlite;
typedef struct lr_sqlite_job lr_sqlite_job;
typedef struct lr_sqlite_hub lr_sqlite_hub;
typedef struct lr_sqstmt lr_sqstmt;

enum lr_sqlite_op {
  LR_SQ_OPEN = 1,  /* the first job of every connection */
  LR_SQ_EXEC,      /* step to the end: changes, last_id */
  LR_SQ_QUERY,     /* every row into out */
  LR_SQ_PREPARE,   /* compile into the cache (errors only) */
  LR_SQ_CURSOR,    /* take the statement out of the cache, bind, first batch */
  LR_SQ_FETCH,     /* the next batch of job->stmt */
  LR_SQ_RESET,     /* reset job->stmt and give it back to the cache */
  LR_SQ_CLOSE      /* finalize everything, close, end the thread */
};

enum { LR_SQ_NULL = 'n', LR_SQ_INT = 'i', LR_SQ_FLOAT = 'f', LR_SQ_TEXT = 't', LR_SQ_BLOB = 'b' };

/* job->rc beyond SQLite's own (extended) result codes. */
#define LR_SQ_MISUSE (-1)   /* the caller's mistake (parameters): raise the message */
#define LR_SQ_CLOSED (-2)   /* the connection closed before the job ran */
#define LR_SQ_SKIPPED (-3)  /* cancelled before it ran */

#define LR_SQ_INLINE_IN 256
#define LR_SQ_INLINE_OUT 512

/* A byte buffer starting in a job's inline area (inl), moved to the heap to grow. */
typedef struct lr_sqbuf {
  char *p;
  size_t n, cap;
  char *inl;
  size_t inl_cap;
} lr_sqbuf;
/* Makes room for need more bytes: 0, or -1 when out of memory. */
int lr_sqbuf_grow(lr_sqbuf *b, size_t need);
static inline int lr_sqbuf_put(lr_sqbuf *b, const void *p, size_t n) {
  if (b->cap - b->n < n && lr_sqbuf_grow(b, n) != 0) return -1;
  memcpy(b->p + b->n, p, n);
  b->n += n;
  return 0;
}

struct lr_sqlite_job {
  /* First, in two cache lines with the start of the inline input: what the threads
   * hand each other on every statement (each line crossing costs ~100 ns on a VM). */
  lr_sqlite_job *next;      /* staged list, the thread's queue, done stack, free list */
  const char *inp;          /* in.p, set when sent: in itself is the loop's */
  int op;                   /* LR_SQ_* */
  int flag;                 /* atomic: who takes the result (db_sqlite.c) */
  int cancelled;            /* atomic: skip it, or stop it while it runs */
  int rc;                   /* out: 0, SQLite's extended result code, or LR_SQ_* */
  int64_t changes, last_id; /* out, EXEC */
  uint32_t nrows;           /* out: QUERY, CURSOR, FETCH */
  int more;                 /* out, CURSOR and FETCH: stmt stays open for the next batch */
  lr_sqstmt *stmt;          /* FETCH, RESET: the cursor's statement (thread's) */
  char inl_in[LR_SQ_INLINE_IN]; /* from the second line on */
  /* the loop thread's */
  lr_sqbuf in;              /* the SQL and its parameters */
  lr_sqlite_job *all_prev, *all_next; /* the hub's list of every job */
  lr_waitq q;               /* the waiting task parks here: the cancel hook finds us */
  lr_task *task;            /* the waiting task; NULL: nobody waits */
  lr_sqlite *c;
  const char *fname;        /* the Lua function, for messages */
  void *owner;              /* the caller's: the cursor of a CURSOR/FETCH job */
  int staged;               /* on c's staged list */
  int embedded;             /* the close job inside lr_sqlite: never freed alone */
  /* out, on errors and with rows */
  const char *kind;         /* the error kind */
  char code[40];            /* "SQLITE_CONSTRAINT_UNIQUE", or the number */
  size_t constraint_off, constraint_len; /* the constraint's name in out, len 0: none */
  lr_sqbuf out;
  char inl_out[LR_SQ_INLINE_OUT];
} __attribute__((aligned(64)));

#define LR_SQ_CACHE 64      /* prepared statements kept per connection */

struct lr_sqlite {
  lr_sqlite_hub *hub;       /* NULL once the runtime has closed */
  lr_sqlite *next, *prev;   /* the hub's connections */
  lr_sqlite *next_dirty;    /* the hub's connections with staged jobs */
  int dirty;
  pthread_t th;
  int started, joined;      /* loop thread */
  int closed;               /* loop thread: closing, no new job */
  int ud;                   /* loop thread: the Lua object still holds it */
  int njobs;                /* loop thread: jobs taken and not given back */
  int inflight;             /* loop thread: jobs pushed whose result it has not seen */
  int spin_skip, spin_backoff; /* loop thread: sends left without polling, and the next
                              * such pause (doubled each time a poll comes back empty) */
  lr_sqlite_job *shead, *stail; /* loop thread: staged jobs, newest first */
  int nstaged;
  /* shared, on a line of their own */
  lr_sqlite_job *head __attribute__((aligned(64))); /* atomic: jobs for the thread,
                                                      * newest first */
  int sleeping;             /* atomic: the thread waits on cv */
  int stop;                 /* atomic: closing: jobs still queued get LR_SQ_CLOSED */
  pthread_mutex_t mu __attribute__((aligned(64)));
  pthread_cond_t cv;
  /* the thread's own */
  struct sqlite3 *db;
  lr_sqlite_job *running;   /* the job being run (the progress and busy handlers) */
  lr_sqstmt *mru;           /* the statement used last (the cache's fast path) */
  int busy_slept;           /* ms waited for a lock so far by the running statement */
  lr_sqstmt *cache[LR_SQ_CACHE];
  int ncache;
  lr_sqstmt *taken;         /* statements cursors hold, out of the cache */
  uint64_t tick;
  char *path;
  int readonly, busy_ms;
  lr_sqlite_job closejob;   /* kept ready so that closing needs no memory */
};

/* ---- db_sqlite.c: connections and the hand-over (loop thread unless noted) ---- */
/* A connection to path (SQLite's file name or URI, ":memory:"), its thread started
 * with an LR_SQ_OPEN job waiting for it: *open is that job, to send and wait for like
 * any other. NULL on failure (out of memory or threads), with *err saying which. The
 * caller holds the connection (c->ud) until lr_sqlite_drop. */
lr_sqlite *lr_sqlite_new(lr_runtime *rt, const char *path, int readonly, int busy_ms,
                         lr_sqlite_job **open, const char **err);
/* A job for c (reused, or allocated), with empty buffers; NULL when out of memory. */
lr_sqlite_job *lr_sqlite_job_get(lr_sqlite *c, int op, const char *fname);
/* Gives back a job whose result has been read (or that was never sent). */
void lr_sqlite_job_put(lr_sqlite_job *j);
/* Sends j for task t (NULL: nobody waits, the result is dropped). Returns 1 when the
 * result is there already (polled for), 0 when t must park (lr_sqlite_park). */
int lr_sqlite_send(lr_sqlite_job *j, lr_task *t);
/* Parks t until j is done; k then runs with ctx = j (check t->wake for a cancel
 * first: the job is not the caller's any more then). */
int lr_sqlite_park(lua_State *L, lr_task *t, lr_sqlite_job *j, lua_KFunction k);
/* 1 if c takes no more jobs. */
static inline int lr_sqlite_is_closed(const lr_sqlite *c) {
  return c == NULL || c->closed;
}
/* Starts closing c: jobs still queued will get LR_SQ_CLOSED, the running one
 * finishes. Returns the close job to send and wait for (the thread is joined when it
 * is done), or NULL if c was closing already. */
lr_sqlite_job *lr_sqlite_close_job(lr_sqlite *c);
/* Closes c now: as lr_sqlite_close_job, then joins the thread, which first finishes
 * its running statement. For __gc and callers outside a task. */
void lr_sqlite_close_now(lr_sqlite *c);
/* The Lua object lets go of c (closing it now if it is not closed); c is freed once
 * no job refers to it. */
void lr_sqlite_drop(lr_sqlite *c);

/* ---- db_sqlite_run.c: on the connection's thread ---- */
/* Runs job j on c's thread, filling its result fields. */
void lr_sqlite_run(lr_sqlite *c, lr_sqlite_job *j);
/* Finalizes every statement and closes the database (the LR_SQ_CLOSE job). */
void lr_sqlite_run_close(lr_sqlite *c);
/* Sets j's error fields for rc with message msg (NULL: SQLite's text for rc). */
void lr_sqlite_set_error(lr_sqlite_job *j, int rc, const char *kind, const char *msg);

#endif
