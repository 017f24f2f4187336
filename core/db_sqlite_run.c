/* db_sqlite_run.c: what a connection's thread does with a job (lr_sqlite.h lists the
 * operations and the byte layouts of job->in and job->out). Nothing here knows about
 * threads, tasks or Lua: it is SQLite's C API between two flat buffers.
 *
 * Statements are prepared with sqlite3_prepare_v3 and kept per connection by their
 * text (LR_SQ_CACHE of them, least recently used evicted): the v3 interface
 * recompiles a statement transparently after a schema change. Every statement is
 * reset as soon as its job is done, so no read transaction outlives a job, except a
 * cursor's (conn:rows), whose statement is taken out of the cache until its last
 * batch, or until the caller resets it (LR_SQ_RESET).
 *
 * Parameters are bound SQLITE_STATIC, straight from job->in: every step follows a
 * bind of every parameter (their count is checked), so a stale pointer left bound
 * after the job is never read. A cursor's are SQLITE_TRANSIENT (copied), since its
 * statement is stepped again by later jobs.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "lr_sqlite.h"

#define BATCH_ROWS 256           /* rows per hand-over of a cursor */
#define BATCH_BYTES (512 * 1024) /* ... or fewer, once their encoding passes this */

struct lr_sqstmt {
  sqlite3_stmt *st;   /* NULL for text with no statement (empty, only comments) */
  lr_sqstmt *prev, *next; /* while a cursor holds it: the connection's list of those */
  uint64_t used;      /* c->tick when last used (LRU) */
  uint32_t hash;
  int single;         /* the text is one statement (only spaces or comments after it) */
  size_t len;
  char sql[];
};

/* ================= reading job->in ================= */

typedef struct rd {
  const char *p;
} rd;

static uint32_t rd_u32(rd *r) {
  uint32_t v;
  memcpy(&v, r->p, 4);
  r->p += 4;
  return v;
}

/* Skips one encoded value. */
static void rd_skip(rd *r) {
  char t = *r->p++;
  if (t == LR_SQ_INT || t == LR_SQ_FLOAT) r->p += 8;
  else if (t == LR_SQ_TEXT || t == LR_SQ_BLOB) r->p += rd_u32(r);
}

/* ================= errors ================= */

static const struct { int rc; const char *name; } codes[] = {
  {SQLITE_CONSTRAINT_UNIQUE, "SQLITE_CONSTRAINT_UNIQUE"},
  {SQLITE_CONSTRAINT_PRIMARYKEY, "SQLITE_CONSTRAINT_PRIMARYKEY"},
  {SQLITE_CONSTRAINT_NOTNULL, "SQLITE_CONSTRAINT_NOTNULL"},
  {SQLITE_CONSTRAINT_CHECK, "SQLITE_CONSTRAINT_CHECK"},
  {SQLITE_CONSTRAINT_FOREIGNKEY, "SQLITE_CONSTRAINT_FOREIGNKEY"},
  {SQLITE_CONSTRAINT_TRIGGER, "SQLITE_CONSTRAINT_TRIGGER"},
  {SQLITE_CONSTRAINT_ROWID, "SQLITE_CONSTRAINT_ROWID"},
#ifdef SQLITE_CONSTRAINT_DATATYPE
  {SQLITE_CONSTRAINT_DATATYPE, "SQLITE_CONSTRAINT_DATATYPE"},
#endif
  {SQLITE_BUSY_SNAPSHOT, "SQLITE_BUSY_SNAPSHOT"},
  {SQLITE_BUSY_RECOVERY, "SQLITE_BUSY_RECOVERY"},
  {SQLITE_LOCKED_SHAREDCACHE, "SQLITE_LOCKED_SHAREDCACHE"},
  {SQLITE_READONLY_DBMOVED, "SQLITE_READONLY_DBMOVED"},
  {SQLITE_CANTOPEN_ISDIR, "SQLITE_CANTOPEN_ISDIR"},
  {SQLITE_ERROR, "SQLITE_ERROR"}, {SQLITE_INTERNAL, "SQLITE_INTERNAL"},
  {SQLITE_PERM, "SQLITE_PERM"}, {SQLITE_ABORT, "SQLITE_ABORT"},
  {SQLITE_BUSY, "SQLITE_BUSY"}, {SQLITE_LOCKED, "SQLITE_LOCKED"},
  {SQLITE_NOMEM, "SQLITE_NOMEM"}, {SQLITE_READONLY, "SQLITE_READONLY"},
  {SQLITE_INTERRUPT, "SQLITE_INTERRUPT"}, {SQLITE_IOERR, "SQLITE_IOERR"},
  {SQLITE_CORRUPT, "SQLITE_CORRUPT"}, {SQLITE_FULL, "SQLITE_FULL"},
  {SQLITE_CANTOPEN, "SQLITE_CANTOPEN"}, {SQLITE_PROTOCOL, "SQLITE_PROTOCOL"},
  {SQLITE_SCHEMA, "SQLITE_SCHEMA"}, {SQLITE_TOOBIG, "SQLITE_TOOBIG"},
  {SQLITE_CONSTRAINT, "SQLITE_CONSTRAINT"}, {SQLITE_MISMATCH, "SQLITE_MISMATCH"},
  {SQLITE_MISUSE, "SQLITE_MISUSE"}, {SQLITE_AUTH, "SQLITE_AUTH"},
  {SQLITE_RANGE, "SQLITE_RANGE"}, {SQLITE_NOTADB, "SQLITE_NOTADB"},
};

/* The kind of an error, from its primary result code: the storage's failures are
 * "io"; any other refusal of a statement is "query", as with PostgreSQL. */
static const char *kind_of(int rc) {
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: return "constraint";
    case SQLITE_BUSY: return "busy";
    case SQLITE_LOCKED: return "locked";
    case SQLITE_IOERR: case SQLITE_FULL: case SQLITE_CORRUPT: case SQLITE_CANTOPEN:
    case SQLITE_NOTADB: case SQLITE_READONLY: case SQLITE_NOMEM: case SQLITE_PROTOCOL:
    case SQLITE_NOLFS: case SQLITE_PERM:
      return "io";
    default: return "query";
  }
}

void lr_sqlite_set_error(lr_sqlite_job *j, int rc, const char *kind, const char *msg) {
  static const char marker[] = "constraint failed: ";
  size_t i, n;
  const char *name;
  j->rc = rc;
  j->kind = kind ? kind : kind_of(rc);
  j->code[0] = '\0';
  if (rc > 0) {
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
      if (codes[i].rc == rc) break;
    if (i < sizeof codes / sizeof codes[0]) snprintf(j->code, sizeof j->code, "%s", codes[i].name);
    else snprintf(j->code, sizeof j->code, "%d", rc);
  }
  if (msg == NULL) msg = rc > 0 ? lr_sq.errstr(rc) : "error";
  /* Truncated to what out holds already: no allocation on the error path. */
  n = strlen(msg);
  if (n >= j->out.cap) n = j->out.cap - 1;
  memcpy(j->out.p, msg, n);
  j->out.p[n] = '\0';
  j->out.n = n + 1;
  j->constraint_len = 0;
  /* "UNIQUE constraint failed: t.id" names t.id; "FOREIGN KEY constraint failed"
   * names nothing. */
  if ((rc & 0xff) == SQLITE_CONSTRAINT && (name = strstr(j->out.p, marker)) != NULL) {
    j->constraint_off = (size_t)(name - j->out.p) + sizeof marker - 1;
    j->constraint_len = n - j->constraint_off;
  }
}

static void db_error(lr_sqlite *c, lr_sqlite_job *j, int rc, const char *kind) {
  lr_sqlite_set_error(j, rc, kind, c->db ? lr_sq.errmsg(c->db) : NULL);
}

static void misuse(lr_sqlite_job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void misuse(lr_sqlite_job *j, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lr_sqlite_set_error(j, LR_SQ_MISUSE, "misuse", msg);
}

static void oom(lr_sqlite_job *j) {
  lr_sqlite_set_error(j, SQLITE_NOMEM, "io", "out of memory for the results");
}

/* ================= the statement cache ================= */

static uint32_t hash_sql(const char *s, size_t n) {
  uint32_t h = 2166136261u;
  while (n--) h = (h ^ (unsigned char)*s++) * 16777619u;
  return h;
}

static void stmt_free(lr_sqlite *c, lr_sqstmt *e) {
  if (c->mru == e) c->mru = NULL;
  lr_sq.finalize(e->st);
  free(e);
}

static int cache_find(lr_sqlite *c, const char *sql, size_t len, uint32_t h) {
  int i;
  for (i = 0; i < c->ncache; i++) {
    lr_sqstmt *e = c->cache[i];
    if (e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0) return i;
  }
  return -1;
}

/* Puts e in the cache, evicting the least recently used when full (or finalizes e if
 * the cache has that text already: a cursor gives back a duplicate). */
static void cache_put(lr_sqlite *c, lr_sqstmt *e) {
  int i, lru = 0;
  if (cache_find(c, e->sql, e->len, e->hash) >= 0) {
    stmt_free(c, e);
    return;
  }
  e->used = ++c->tick;
  if (c->ncache < LR_SQ_CACHE) {
    c->cache[c->ncache++] = e;
    return;
  }
  for (i = 1; i < c->ncache; i++)
    if (c->cache[i]->used < c->cache[lru]->used) lru = i;
  stmt_free(c, c->cache[lru]);
  c->cache[lru] = e;
}

/* 1 if text holds a statement (not just spaces and comments). */
static int has_statement(sqlite3 *db, const char *text) {
  sqlite3_stmt *st = NULL;
  const char *tail;
  while (*text == ' ' || *text == '\n' || *text == '\t' || *text == '\r') text++;
  if (*text == '\0') return 0;
  if (lr_sq.prepare_v2(db, text, -1, &st, &tail) != SQLITE_OK) return 1;
  lr_sq.finalize(st);
  return st != NULL;
}

/* The statement for sql (NUL-terminated, len bytes), from the cache or prepared into
 * it; NULL with j's error set. */
static lr_sqstmt *get_stmt(lr_sqlite *c, lr_sqlite_job *j, const char *sql, size_t len) {
  uint32_t h;
  int i, rc;
  lr_sqstmt *e = c->mru;
  const char *tail = NULL;
  if (e && e->len == len && memcmp(e->sql, sql, len) == 0) { /* a loop of one statement */
    e->used = ++c->tick;
    return e;
  }
  h = hash_sql(sql, len);
  if ((i = cache_find(c, sql, len, h)) >= 0) {
    c->cache[i]->used = ++c->tick;
    return c->mru = c->cache[i];
  }
  if ((e = malloc(sizeof *e + len + 1)) == NULL) {
    oom(j);
    return NULL;
  }
  rc = lr_sq.prepare_v3(c->db, sql, (int)len + 1, SQLITE_PREPARE_PERSISTENT, &e->st, &tail);
  if (rc != SQLITE_OK) {
    /* An error at prepare is the text's: unknown table or column, bad syntax. */
    db_error(c, j, rc, (rc & 0xff) == SQLITE_ERROR ? "syntax" : NULL);
    free(e);
    return NULL;
  }
  e->hash = h;
  e->len = len;
  memcpy(e->sql, sql, len + 1);
  e->prev = e->next = NULL;
  e->single = tail == NULL || !has_statement(c->db, tail);
  cache_put(c, e);
  return c->mru = e;
}

/* Takes e out of the cache for a cursor. */
static void cache_take(lr_sqlite *c, lr_sqstmt *e) {
  int i;
  if (c->mru == e) c->mru = NULL;
  for (i = 0; i < c->ncache && c->cache[i] != e; i++) {}
  if (i < c->ncache) c->cache[i] = c->cache[--c->ncache];
  e->prev = NULL;
  e->next = c->taken;
  if (c->taken) c->taken->prev = e;
  c->taken = e;
}

/* A cursor is done with e: reset it and put it back in the cache. */
static void cache_give_back(lr_sqlite *c, lr_sqstmt *e) {
  if (e->prev) e->prev->next = e->next;
  else c->taken = e->next;
  if (e->next) e->next->prev = e->prev;
  e->prev = e->next = NULL;
  lr_sq.reset(e->st);
  lr_sq.clear_bindings(e->st); /* transient copies: free them now */
  cache_put(c, e);
}

/* ================= binding ================= */

static int bind_value(sqlite3_stmt *st, int i, rd *r, sqlite3_destructor_type how) {
  char t = *r->p++;
  int64_t iv;
  double dv;
  uint32_t n;
  switch (t) {
    case LR_SQ_INT:
      memcpy(&iv, r->p, 8);
      r->p += 8;
      return lr_sq.bind_int64(st, i, iv);
    case LR_SQ_FLOAT:
      memcpy(&dv, r->p, 8);
      r->p += 8;
      return lr_sq.bind_double(st, i, dv);
    case LR_SQ_TEXT:
      n = rd_u32(r);
      r->p += n;
      return lr_sq.bind_text64(st, i, r->p - n, n, how, SQLITE_UTF8);
    case LR_SQ_BLOB:
      n = rd_u32(r);
      r->p += n;
      return lr_sq.bind_blob64(st, i, r->p - n, n, how);
    default:
      return lr_sq.bind_null(st, i);
  }
}

/* Binds the parameters at r (mode, count, values) to st. 0, or -1 with j's error set
 * (LR_SQ_MISUSE for the caller's mistakes). */
static int bind_all(lr_sqlite *c, lr_sqlite_job *j, sqlite3_stmt *st, rd *r,
                    sqlite3_destructor_type how) {
  char mode = *r->p++;
  uint32_t n = rd_u32(r), k;
  int want = st ? lr_sq.bind_parameter_count(st) : 0, i, rc = SQLITE_OK;
  if (mode == 'P') {
    if ((int)n != want) {
      misuse(j, "%u parameter%s given, the statement takes %d", n, n == 1 ? "" : "s", want);
      return -1;
    }
    for (i = 1; i <= want && rc == SQLITE_OK; i++) rc = bind_value(st, i, r, how);
  } else {
    const char *first = r->p;
    for (i = 1; i <= want && rc == SQLITE_OK; i++) {
      const char *name = lr_sq.bind_parameter_name(st, i);
      size_t nlen;
      rd q = {first};
      if (name == NULL || name[0] == '?') {
        misuse(j, "bad parameter #1 (table cannot be bound: the statement's parameter %d "
               "is positional, give the values as arguments)", i);
        return -1;
      }
      nlen = strlen(name + 1);
      for (k = 0; k < n; k++) {
        uint32_t len = rd_u32(&q);
        q.p += len;
        if (len == nlen && memcmp(q.p - len, name + 1, len) == 0) break;
        rd_skip(&q);
      }
      if (k == n) {
        misuse(j, "missing named parameter '%s' in the table", name);
        return -1;
      }
      rc = bind_value(st, i, &q, how);
    }
  }
  if (rc != SQLITE_OK) {
    db_error(c, j, rc, NULL);
    return -1;
  }
  return 0;
}

/* ================= results ================= */

static int put_u32(lr_sqbuf *b, uint32_t v) {
  return lr_sqbuf_put(b, &v, 4);
}

static int put_names(lr_sqbuf *b, sqlite3_stmt *st) {
  int n = st ? lr_sq.column_count(st) : 0, i;
  if (put_u32(b, (uint32_t)n) != 0) return -1;
  for (i = 0; i < n; i++) {
    const char *name = lr_sq.column_name(st, i);
    size_t len = name ? strlen(name) : 0;
    if (put_u32(b, (uint32_t)len) != 0 || lr_sqbuf_put(b, name, len) != 0) return -1;
  }
  return 0;
}

static int put_row(lr_sqbuf *b, sqlite3_stmt *st, int ncols) {
  int i;
  for (i = 0; i < ncols; i++) {
    char rec[9];
    int64_t iv;
    double dv;
    const void *p;
    uint32_t n;
    switch (lr_sq.column_type(st, i)) {
      case SQLITE_INTEGER:
        rec[0] = LR_SQ_INT;
        iv = lr_sq.column_int64(st, i);
        memcpy(rec + 1, &iv, 8);
        if (lr_sqbuf_put(b, rec, 9) != 0) return -1;
        break;
      case SQLITE_FLOAT:
        rec[0] = LR_SQ_FLOAT;
        dv = lr_sq.column_double(st, i);
        memcpy(rec + 1, &dv, 8);
        if (lr_sqbuf_put(b, rec, 9) != 0) return -1;
        break;
      case SQLITE_TEXT:
      case SQLITE_BLOB:
        if (lr_sq.column_type(st, i) == SQLITE_TEXT) {
          rec[0] = LR_SQ_TEXT;
          p = lr_sq.column_text(st, i);
        } else {
          rec[0] = LR_SQ_BLOB;
          p = lr_sq.column_blob(st, i);
        }
        n = (uint32_t)lr_sq.column_bytes(st, i);
        memcpy(rec + 1, &n, 4);
        if (lr_sqbuf_put(b, rec, 5) != 0 || lr_sqbuf_put(b, p, n) != 0) return -1;
        break;
      default:
        rec[0] = LR_SQ_NULL;
        if (lr_sqbuf_put(b, rec, 1) != 0) return -1;
    }
  }
  return 0;
}

/* Steps st into j->out: every row, or (batch) up to a batch's worth, leaving st open
 * if more may come. Returns SQLITE_DONE, SQLITE_ROW (batch full), or an error code
 * (j's error set). */
static int step_rows(lr_sqlite *c, lr_sqlite_job *j, sqlite3_stmt *st, int batch) {
  int ncols, rc;
  j->out.n = 0;
  j->nrows = 0;
  /* The names after the first step: a statement recompiled there after a schema
   * change (ALTER TABLE under a cached SELECT *) may have other columns. */
  rc = lr_sq.step(st);
  ncols = lr_sq.column_count(st);
  if (put_names(&j->out, st) != 0) {
    oom(j);
    return SQLITE_NOMEM;
  }
  for (;;) {
    if (rc == SQLITE_DONE) return rc;
    if (rc != SQLITE_ROW) {
      db_error(c, j, rc, NULL);
      return rc;
    }
    if (put_row(&j->out, st, ncols) != 0) {
      oom(j);
      return SQLITE_NOMEM;
    }
    j->nrows++;
    if (batch && (j->nrows >= BATCH_ROWS || j->out.n >= BATCH_BYTES)) return SQLITE_ROW;
    rc = lr_sq.step(st);
  }
}

/* ================= the operations ================= */

static int stopped(lr_sqlite *c) {
  return c->running && __atomic_load_n(&c->running->cancelled, __ATOMIC_RELAXED);
}

/* SQLite calls it every 1000 steps of a statement: non-zero stops the statement. A
 * closing connection stops it too: a close outside a task, or the runtime's, joins
 * this thread, and a runaway statement would hold the loop. */
static int progress_cb(void *arg) {
  lr_sqlite *c = arg;
  return stopped(c) || __atomic_load_n(&c->stop, __ATOMIC_RELAXED);
}

/* Waits for a lock as sqlite3_busy_timeout does (short sleeps growing to 25 ms, up
 * to busy_ms in all); 0 gives up (SQLITE_BUSY). */
static int busy_cb(void *arg, int count) {
  static const int delays[] = {1, 2, 5, 10, 15, 20, 25};
  lr_sqlite *c = arg;
  int d = count < 7 ? delays[count] : 25;
  if (count == 0) c->busy_slept = 0;
  if (stopped(c) || __atomic_load_n(&c->stop, __ATOMIC_RELAXED) || c->busy_slept >= c->busy_ms)
    return 0;
  if (d > c->busy_ms - c->busy_slept) d = c->busy_ms - c->busy_slept;
  lr_sq.sleep(d);
  c->busy_slept += d;
  return 1;
}

static void run_open(lr_sqlite *c, lr_sqlite_job *j) {
  int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI, rc;
  const char *file;
  sqlite3 *db = NULL;
  char msg[512];
  flags |= c->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  rc = lr_sq.open_v2(c->path, &db, flags, NULL);
  if (rc == SQLITE_OK) {
    lr_sq.extended_result_codes(db, 1);
    lr_sq.busy_timeout(db, c->busy_ms); /* for the pragmas below */
    file = lr_sq.db_filename(db, "main");
    /* A file database: WAL (readers and a writer at once) and NORMAL sync (safe in
     * WAL: a power cut can lose the last commits, never corrupt). The schema read
     * also finds a file that is not a database now rather than at the first query. */
    if (file && *file && !c->readonly)
      rc = lr_sq.exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    if (rc == SQLITE_OK) rc = lr_sq.exec(db, "PRAGMA schema_version", NULL, NULL, NULL);
  }
  if (rc != SQLITE_OK) {
    snprintf(msg, sizeof msg, "cannot open database %s: %s", c->path,
             db ? lr_sq.errmsg(db) : lr_sq.errstr(rc));
    lr_sqlite_set_error(j, db ? lr_sq.extended_errcode(db) : rc, "connect", msg);
    lr_sq.close(db);
    return;
  }
  /* Our busy handler replaces sqlite3_busy_timeout's: the same waits, and it also
   * gives up for a cancelled job or a closing connection. */
  lr_sq.busy_handler(db, busy_cb, c);
  lr_sq.progress_handler(db, 1000, progress_cb, c);
  c->db = db;
}

/* Several statements in one text, without parameters (exec of a script). */
static void run_script(lr_sqlite *c, lr_sqlite_job *j, const char *sql) {
  sqlite3_stmt *st;
  const char *tail;
  int rc;
  j->changes = 0;
  while (*sql) {
    int64_t before = lr_sq.total_changes64(c->db);
    rc = lr_sq.prepare_v2(c->db, sql, -1, &st, &tail);
    if (rc != SQLITE_OK) {
      db_error(c, j, rc, (rc & 0xff) == SQLITE_ERROR ? "syntax" : NULL);
      return;
    }
    if (st == NULL) break; /* only spaces or comments left */
    while ((rc = lr_sq.step(st)) == SQLITE_ROW) {}
    if (rc != SQLITE_DONE) {
      db_error(c, j, rc, NULL);
      lr_sq.finalize(st);
      return;
    }
    lr_sq.finalize(st);
    j->changes = lr_sq.total_changes64(c->db) != before ? lr_sq.changes64(c->db) : 0;
    sql = tail;
  }
  j->last_id = lr_sq.last_insert_rowid(c->db);
}

/* The SQL at the start of j->in; r is left at the parameters. */
static const char *read_sql(lr_sqlite_job *j, rd *r, size_t *len) {
  r->p = j->inp;
  *len = rd_u32(r);
  r->p += *len + 1;
  return j->inp + 4;
}

static void run_exec(lr_sqlite *c, lr_sqlite_job *j) {
  rd r;
  size_t len;
  const char *sql = read_sql(j, &r, &len);
  lr_sqstmt *e = get_stmt(c, j, sql, len);
  sqlite3_stmt *st;
  int64_t before;
  int rc;
  if (e == NULL) return;
  if (!e->single) {
    rd q = {r.p + 1}; /* past the mode, at the count of parameters */
    if (rd_u32(&q) != 0)
      misuse(j, "several statements in one text take no parameters");
    else
      run_script(c, j, sql);
    return;
  }
  st = e->st;
  if (bind_all(c, j, st, &r, SQLITE_STATIC) != 0) return;
  if (st == NULL) {
    j->last_id = lr_sq.last_insert_rowid(c->db);
    return;
  }
  before = lr_sq.total_changes64(c->db);
  while ((rc = lr_sq.step(st)) == SQLITE_ROW) {}
  if (rc != SQLITE_DONE) {
    db_error(c, j, rc, NULL);
    lr_sq.reset(st);
    return;
  }
  /* sqlite3_changes counts the last INSERT, UPDATE or DELETE, whichever statement ran
   * it: a CREATE TABLE would report the INSERT before it. */
  j->changes = lr_sq.total_changes64(c->db) != before ? lr_sq.changes64(c->db) : 0;
  j->last_id = lr_sq.last_insert_rowid(c->db);
  lr_sq.reset(st);
}

/* query and the first batch of a cursor. */
static void run_query(lr_sqlite *c, lr_sqlite_job *j, int cursor) {
  rd r;
  size_t len;
  const char *sql = read_sql(j, &r, &len);
  lr_sqstmt *e = get_stmt(c, j, sql, len);
  int rc;
  if (e == NULL) return;
  if (!e->single) {
    misuse(j, "the text holds several statements (exec runs those, without rows)");
    return;
  }
  if (bind_all(c, j, e->st, &r, cursor ? SQLITE_TRANSIENT : SQLITE_STATIC) != 0) return;
  if (e->st == NULL) {
    j->out.n = 0;
    put_u32(&j->out, 0);
    return;
  }
  if (cursor) cache_take(c, e);
  rc = step_rows(c, j, e->st, cursor);
  if (cursor && rc == SQLITE_ROW) {
    j->stmt = e;
    j->more = 1;
  } else if (cursor) {
    cache_give_back(c, e);
  } else {
    lr_sq.reset(e->st);
  }
}

static void run_fetch(lr_sqlite *c, lr_sqlite_job *j) {
  lr_sqstmt *e = j->stmt;
  if (step_rows(c, j, e->st, 1) == SQLITE_ROW) {
    j->more = 1;
    return;
  }
  j->more = 0;
  cache_give_back(c, e);
}

void lr_sqlite_run(lr_sqlite *c, lr_sqlite_job *j) {
  rd r;
  size_t len;
  const char *sql;
  if (j->op == LR_SQ_OPEN) {
    run_open(c, j);
    return;
  }
  if (c->db == NULL) { /* never opened: the loop closes it right away */
    lr_sqlite_set_error(j, LR_SQ_CLOSED, "closed", "the connection is not open");
    return;
  }
  switch (j->op) {
    case LR_SQ_EXEC: run_exec(c, j); break;
    case LR_SQ_QUERY: run_query(c, j, 0); break;
    case LR_SQ_CURSOR: run_query(c, j, 1); break;
    case LR_SQ_FETCH: run_fetch(c, j); break;
    case LR_SQ_RESET: cache_give_back(c, j->stmt); break;
    case LR_SQ_PREPARE:
      sql = read_sql(j, &r, &len);
      get_stmt(c, j, sql, len);
      break;
  }
}

void lr_sqlite_run_close(lr_sqlite *c) {
  sqlite3_stmt *st;
  lr_sqstmt *e;
  int i;
  if (c->db == NULL) return;
  c->mru = NULL;
  for (i = 0; i < c->ncache; i++) stmt_free(c, c->cache[i]);
  c->ncache = 0;
  while ((e = c->taken) != NULL) {
    c->taken = e->next;
    stmt_free(c, e);
  }
  while ((st = lr_sq.next_stmt(c->db, NULL)) != NULL) lr_sq.finalize(st);
  lr_sq.close(c->db); /* rolls back an open transaction */
  c->db = NULL;
}
