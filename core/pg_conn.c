/* pg_conn.c: PostgreSQL connections on the loop: connecting, the pipeline of
 * operations, COPY, notifications, cancel requests, a lost server (lr_pg.h says how
 * the pipeline is laid out).
 *
 * The poll handle watches for readability whenever the connection is open (a
 * notification, or the server going away, arrives outside any query), and for
 * writability only while libpq holds bytes it could not write. It keeps the loop
 * alive only while something is owed to a task: an idle pooled connection never
 * keeps lr.run from returning.
 *
 * A poll handle is allocated apart from its connection: during connect, libpq may
 * change sockets (the next address or host), and one fd may have one uv_poll_t, so
 * the old handle is closed (and freed in its callback) and a new one made.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lr_pg.h"

#define STMT_BUCKETS 128
#define STMT_MAX 256          /* statements cached per connection; beyond: unnamed */
#define COPY_HIGH (256 << 10) /* COPY data queued in libpq before the task waits */

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
  int server_version;
  lr_pg_conn *next_all;
  lr_waitq connect_q;
  lr_pg_op *head, *tail;     /* FIFO: sent operations first, then those not sent */
  lr_pg_op *unsent;          /* the first operation not sent yet, or NULL */
  lr_pg_opts o;
  lr_pg_stmt *stmts[STMT_BUCKETS];
  int nstmts;
  unsigned stmt_seq;
  lr_pg_note *notes, *notes_tail;
  lr_waitq note_q;
  char why[256];
};

static lr_pg_conn *all_conns;
static lr_runtime *closer_rt;

static void update_poll(lr_pg_conn *c);
static void pump(lr_pg_conn *c);
static void connect_step(lr_pg_conn *c);
static void stmt_forget(lr_pg_conn *c, lr_pg_stmt *st);

/* ---- operations ---- */

static void op_free(lr_pg_op *op) {
  int i;
  if (op->res) lr_pq.clear(op->res);
  for (i = 0; i < op->nrows; i++) lr_pq.clear(op->rows[i]);
  free(op->rows);
  free(op->sql);
  free(op->pbuf);
  free(op);
}

/* The operation ended: wake its task, or free it if nobody waits. */
static void op_end(lr_pg_op *op, int end) {
  op->end = end;
  if (op->task == NULL) {
    op_free(op);
    return;
  }
  if (op->parked) {
    op->parked = 0;
    lr_task_wake(op->task, LR_WAKE_DONE);
  }
}

static void op_wake(lr_pg_op *op) {
  if (op->task && op->parked) {
    op->parked = 0;
    lr_task_wake(op->task, LR_WAKE_DONE);
  }
}

static void fifo_pop(lr_pg_conn *c) {
  lr_pg_op *op = c->head;
  c->head = op->next;
  if (c->head == NULL) c->tail = NULL;
  op->next = NULL;
  op->c = NULL;
}

/* ---- cancel requests: PQcancel blocks (libpq 15), so it runs on libuv's pool ---- */

typedef struct cancel_work {
  uv_work_t w;
  PGcancel *cn;
} cancel_work;

static void cancel_run(uv_work_t *w) {
  cancel_work *cw = container_of(w, cancel_work, w);
  char buf[256];
  lr_pq.cancel(cw->cn, buf, sizeof buf); /* best effort: the result says what happened */
}

static void cancel_after(uv_work_t *w, int status) {
  cancel_work *cw = container_of(w, cancel_work, w);
  (void)status;
  lr_pq.freeCancel(cw->cn);
  free(cw);
}

/* Asks the server to cancel what it runs now: the head of the FIFO. */
static void request_cancel(lr_pg_conn *c, lr_pg_op *op) {
  cancel_work *cw;
  if (op->cancel_sent || c->state != C_READY) return;
  op->cancel_sent = 1;
  if ((cw = calloc(1, sizeof *cw)) == NULL) return;
  if ((cw->cn = lr_pq.getCancel(c->pg)) == NULL ||
      uv_queue_work(&c->rt->loop, &cw->w, cancel_run, cancel_after) != 0) {
    if (cw->cn) lr_pq.freeCancel(cw->cn);
    free(cw);
  }
}

/* ---- the connection breaks or closes ---- */

/* Every operation not done ends LR_PG_LOST with why; tasks waiting for
 * notifications wake. The PGconn and the poll handle go. */
static void shut(lr_pg_conn *c, int state, const char *why) {
  lr_pg_op *op;
  lr_task *t;
  if (c->state == C_CLOSED || c->state == C_BROKEN) {
    if (state == C_CLOSED) c->state = C_CLOSED;
    return;
  }
  c->state = state;
  snprintf(c->why, sizeof c->why, "%s", why);
  while ((op = c->head) != NULL) {
    fifo_pop(c);
    snprintf(op->lost, sizeof op->lost, "%s", why);
    op_end(op, LR_PG_LOST);
  }
  c->unsent = NULL;
  while ((t = lr_waitq_pop(&c->connect_q)) != NULL) lr_task_wake(t, LR_WAKE_DONE);
  while ((t = lr_waitq_pop(&c->note_q)) != NULL) lr_task_wake(t, LR_WAKE_DONE);
  if (c->poll) {
    c->poll->c = NULL;
    uv_poll_stop(&c->poll->h); /* before PQfinish closes the fd */
    uv_close((uv_handle_t *)&c->poll->h, (uv_close_cb)free);
    c->poll = NULL;
  }
  if (c->pg) {
    lr_pq.finish(c->pg);
    c->pg = NULL;
  }
}

static void conn_free(lr_pg_conn *c) {
  lr_pg_conn **p;
  lr_pg_note *n;
  int i;
  for (p = &all_conns; *p; p = &(*p)->next_all)
    if (*p == c) {
      *p = c->next_all;
      break;
    }
  for (i = 0; i < STMT_BUCKETS; i++) {
    lr_pg_stmt *s = c->stmts[i], *next;
    for (; s; s = next) {
      next = s->next;
      free(s);
    }
  }
  while ((n = c->notes) != NULL) {
    c->notes = n->next;
    free(n);
  }
  free(c);
}

static void lose(lr_pg_conn *c, const char *what) {
  char why[256];
  const char *m = c->pg ? lr_pq.errorMessage(c->pg) : "";
  size_t n;
  snprintf(why, sizeof why, "%s%s%s", what, *m ? ": " : "", m);
  n = strlen(why);
  while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == ' ')) why[--n] = '\0';
  shut(c, C_BROKEN, why);
}

/* The runtime closes: every connection of it shuts (the userdata's __gc may come
 * after the runtime is gone, so it must find nothing left to do with the loop). */
static void close_all(lr_runtime *rt) {
  lr_pg_conn *c, *next;
  for (c = all_conns; c; c = next) {
    next = c->next_all;
    if (c->rt != rt) continue;
    shut(c, C_CLOSED, "the runtime closed");
    if (c->released) conn_free(c);
    else c->rt = NULL;
  }
  closer_rt = NULL;
}

/* ---- notifications ---- */

static void drain_notifies(lr_pg_conn *c) {
  PGnotify *n;
  while (c->pg && (n = lr_pq.notifies(c->pg)) != NULL) {
    size_t lc = strlen(n->relname), lp = strlen(n->extra);
    lr_pg_note *note = malloc(sizeof *note + lc + lp + 2);
    if (note) {
      note->next = NULL;
      note->channel = (char *)(note + 1);
      note->payload = note->channel + lc + 1;
      memcpy(note->channel, n->relname, lc + 1);
      memcpy(note->payload, n->extra, lp + 1);
      if (c->notes_tail) c->notes_tail->next = note;
      else c->notes = note;
      c->notes_tail = note;
    }
    lr_pq.freemem(n);
  }
  if (c->notes) {
    lr_task *t;
    while ((t = lr_waitq_pop(&c->note_q)) != NULL) lr_task_wake(t, LR_WAKE_DONE);
  }
}

lr_pg_note *lr_pg_note_take(lr_pg_conn *c) {
  lr_pg_note *n = c->notes;
  if (n) {
    c->notes = n->next;
    if (c->notes == NULL) c->notes_tail = NULL;
  }
  return n;
}

void lr_pg_note_wait(lr_pg_conn *c, lr_task *t) {
  lr_waitq_push(&c->note_q, t);
  update_poll(c); /* a task waits: the poll keeps the loop alive meanwhile */
}

/* ---- results ---- */

/* One result (or the NULL that ends a result set) for the operation at the head. */
static void take_result(lr_pg_conn *c, lr_pg_op *op, PGresult *res) {
  ExecStatusType st;
  if (res == NULL) {
    if (op->sets > 0) op->sets--;
    if (op->kind == LR_PG_COPY && op->sets == 0) { /* COPY is outside the pipeline */
      fifo_pop(c);
      op_end(op, op->res && lr_pq.resultStatus(op->res) == PGRES_FATAL_ERROR ? LR_PG_ERROR
                                                                           : LR_PG_OK);
      if (lr_pq.enterPipelineMode(c->pg)) c->in_pipeline = 1;
      else lose(c, "cannot return to pipeline mode");
    }
    return;
  }
  st = lr_pq.resultStatus(res);
  switch (st) {
    case PGRES_PIPELINE_SYNC:
      lr_pq.clear(res);
      fifo_pop(c);
      op_end(op, op->res && lr_pq.resultStatus(op->res) == PGRES_FATAL_ERROR ? LR_PG_ERROR
                                                                           : LR_PG_OK);
      if (c->head && c->head->sent && c->head->cancel_at_head) request_cancel(c, c->head);
      return;
    case PGRES_SINGLE_TUPLE:
      if (op->task == NULL || (op->res && lr_pq.resultStatus(op->res) == PGRES_FATAL_ERROR)) {
        lr_pq.clear(res);
        return;
      }
      if (op->nrows == op->rows_cap) {
        int cap = op->rows_cap ? op->rows_cap * 2 : 64;
        PGresult **nr = realloc(op->rows, cap * sizeof *nr);
        if (nr == NULL) { /* drop the row: the statement ends with an error */
          lr_pq.clear(res);
          snprintf(op->lost, sizeof op->lost, "out of memory");
          return;
        }
        op->rows = nr, op->rows_cap = cap;
      }
      op->rows[op->nrows++] = res;
      if (op->nrows >= LR_PG_ROWS_BATCH) op_wake(op);
      return;
    case PGRES_COPY_IN:
      lr_pq.clear(res);
      op->copy_state = COPY_DATA;
      op_wake(op);
      return;
    case PGRES_FATAL_ERROR:
      if (op->stmt && op->sets == 2) { /* its Parse failed: forget the statement */
        stmt_forget(c, op->stmt);
        op->stmt = NULL;
        if (op->feeds && op->feeds->res == NULL) { /* the statement's own error */
          op->feeds->res = res;
          return;
        }
      }
      if (op->res && lr_pq.resultStatus(op->res) == PGRES_FATAL_ERROR) {
        lr_pq.clear(res); /* the first error is the one to tell */
        return;
      }
      if (op->res) lr_pq.clear(op->res);
      op->res = res;
      return;
    case PGRES_PIPELINE_ABORTED:
      lr_pq.clear(res); /* after our own first error: nothing new */
      return;
    default:
      if (op->sets == 2 && op->stmt) { /* the Parse's own result */
        lr_pq.clear(res);
        return;
      }
      if (op->res && lr_pq.resultStatus(op->res) == PGRES_FATAL_ERROR) {
        lr_pq.clear(res);
        return;
      }
      if (op->res) lr_pq.clear(op->res);
      op->res = res;
      return;
  }
}

/* Reads every complete result there is, hands each to the operation it belongs to. */
static void read_results(lr_pg_conn *c) {
  lr_pg_op *op;
  while (c->state == C_READY && (op = c->head) != NULL && op->sent) {
    PGresult *res;
    if (op->kind == LR_PG_ROWS && op->nrows >= LR_PG_ROWS_BATCH && op->task) break;
    if (op->kind == LR_PG_COPY && (op->copy_state == COPY_DATA || op->copy_state == COPY_PUT))
      break;
    if (op->kind == LR_PG_ROWS && !op->single_set && op->sets == 1) {
      op->single_set = 1;
      lr_pq.setSingleRowMode(c->pg); /* 0 if it cannot: then the rows come at once */
    }
    if (lr_pq.isBusy(c->pg)) break;
    res = lr_pq.getResult(c->pg);
    take_result(c, op, res);
    drain_notifies(c);
    if (lr_pq.status(c->pg) == CONNECTION_BAD) {
      lose(c, "the connection to the server was lost");
      return;
    }
  }
  drain_notifies(c);
  if (c->state == C_READY && c->unsent) { /* a COPY ended: what waited behind it goes */
    pump(c);
    c->want_write = 1;
  }
}

/* ---- sending ---- */

static uint32_t hash_sql(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

/* The cached statement for sql: found (*fresh 0), made (*fresh 1), or NULL when the
 * cache is off or full. */
static lr_pg_stmt *stmt_for(lr_pg_conn *c, const char *sql, int *fresh) {
  uint32_t h = hash_sql(sql);
  lr_pg_stmt *s;
  size_t n;
  *fresh = 0;
  if (!c->o.cache) return NULL;
  for (s = c->stmts[h % STMT_BUCKETS]; s; s = s->next)
    if (s->hash == h && strcmp(s->sql, sql) == 0) return s;
  if (c->nstmts >= STMT_MAX) return NULL;
  n = strlen(sql);
  if ((s = malloc(sizeof *s + n + 1)) == NULL) return NULL;
  s->hash = h;
  snprintf(s->name, sizeof s->name, "lr%u", ++c->stmt_seq);
  memcpy(s->sql, sql, n + 1);
  s->next = c->stmts[h % STMT_BUCKETS];
  c->stmts[h % STMT_BUCKETS] = s;
  c->nstmts++;
  *fresh = 1;
  return s;
}

/* Forgets a cached statement (its Parse failed, or was never sent). */
static void stmt_forget(lr_pg_conn *c, lr_pg_stmt *st) {
  lr_pg_stmt **p = &c->stmts[st->hash % STMT_BUCKETS];
  for (; *p; p = &(*p)->next)
    if (*p == st) {
      *p = st->next;
      free(st);
      c->nstmts--;
      return;
    }
}

/* Queues op's messages in libpq. 0, or -1 (the connection is then lost). */
static int send_op(lr_pg_conn *c, lr_pg_op *op, const char *sql, int n, const char *const *v,
                   const int *l, const int *f) {
  int fresh, ok;
  lr_pg_stmt *s;
  if (op->kind == LR_PG_COPY) {
    if (c->in_pipeline) {
      if (!lr_pq.exitPipelineMode(c->pg)) return -1;
      c->in_pipeline = 0;
    }
    op->sets = 1;
    op->copy_state = COPY_START;
    op->sent = 1;
    return lr_pq.sendQuery(c->pg, sql) ? 0 : -1;
  }
  s = stmt_for(c, sql, &fresh);
  op->sets = 1;
  if (s && fresh && op->kind == LR_PG_ROWS) {
    /* A streamed statement's Parse goes with a Sync of its own, as an operation
     * before op: libpq 15 refuses single-row mode for a statement whose Parse shares
     * its Sync (measured: the rows then all came at once). A failed Parse hands its
     * error on to op (feeds), whose own error ("does not exist") is then dropped. */
    lr_pg_op *prep = calloc(1, sizeof *prep), **pp;
    if (prep == NULL) {
      stmt_forget(c, s);
      s = NULL;
    } else {
      prep->c = c;
      prep->kind = LR_PG_DISCARD;
      prep->stmt = s;
      prep->feeds = op;
      prep->sets = 2;
      for (pp = &c->head; *pp != op; pp = &(*pp)->next) {}
      prep->next = op;
      *pp = prep;
      if (!lr_pq.sendPrepare(c->pg, s->name, sql, n, NULL) || !lr_pq.pipelineSync(c->pg))
        return -1;
      prep->sent = 1;
    }
  } else if (s && fresh) {
    if (!lr_pq.sendPrepare(c->pg, s->name, sql, n, NULL)) return -1;
    op->stmt = s;
    op->sets = 2;
  }
  ok = s ? lr_pq.sendQueryPrepared(c->pg, s->name, n, v, l, f, 0)
         : lr_pq.sendQueryParams(c->pg, sql, n, NULL, v, l, f, 0);
  if (!ok || !lr_pq.pipelineSync(c->pg)) return -1;
  op->sent = 1;
  return 0;
}

/* Writes what libpq holds; watches for writability while some is left. */
static void flush(lr_pg_conn *c) {
  int r;
  if (c->state != C_READY) return;
  r = lr_pq.flush(c->pg);
  if (r < 0) {
    lose(c, "cannot send to the server");
    return;
  }
  c->want_write = r == 1;
}

/* Sends the operations that wait, as far as the connection can take them now. */
static void pump(lr_pg_conn *c) {
  while (c->state == C_READY && c->unsent) {
    lr_pg_op *op = c->unsent;
    if (op->kind == LR_PG_COPY && c->head != op) break; /* waits for the pipeline to empty */
    if (!c->in_pipeline) {
      if (c->head != op) break; /* a COPY runs */
      if (!lr_pq.enterPipelineMode(c->pg)) {
        lose(c, "cannot enter pipeline mode");
        return;
      }
      c->in_pipeline = 1;
    }
    if (send_op(c, op, op->sql, op->nparams, op->values, op->lengths, op->formats) != 0) {
      lose(c, "cannot send the statement");
      return;
    }
    free(op->sql), op->sql = NULL;
    free(op->pbuf), op->pbuf = NULL;
    c->unsent = op->next;
    if (op->kind == LR_PG_COPY) break;
  }
}

/* Copies sql and the parameters into op, for an operation that must wait its turn. */
static int keep_copy(lr_pg_op *op, const char *sql, int n, const char *const *v, const int *l,
                     const int *f) {
  size_t need = 0, off;
  int i;
  if ((op->sql = strdup(sql)) == NULL) return -1;
  for (i = 0; i < n; i++) need += v[i] ? (size_t)l[i] + 1 : 0;
  need += n * (sizeof(char *) + 2 * sizeof(int));
  if (n > 0 && (op->pbuf = malloc(need)) == NULL) return -1;
  op->nparams = n;
  op->values = (const char **)op->pbuf;
  op->lengths = (int *)(op->pbuf + n * sizeof(char *));
  op->formats = op->lengths + n;
  off = n * (sizeof(char *) + 2 * sizeof(int));
  for (i = 0; i < n; i++) {
    op->lengths[i] = l[i];
    op->formats[i] = f ? f[i] : 0;
    if (v[i]) {
      memcpy(op->pbuf + off, v[i], l[i]);
      op->pbuf[off + l[i]] = '\0';
      op->values[i] = op->pbuf + off;
      off += l[i] + 1;
    } else {
      op->values[i] = NULL;
    }
  }
  return 0;
}

lr_pg_op *lr_pg_send(lr_pg_conn *c, lr_task *t, int kind, const char *sql, int n,
                     const char *const *values, const int *lengths, const int *formats,
                     char *err, size_t errlen) {
  lr_pg_op *op;
  int now;
  if (c->state != C_READY) {
    snprintf(err, errlen, "%s", c->why[0] ? c->why : "the connection is closed");
    return NULL;
  }
  if ((op = calloc(1, sizeof *op)) == NULL) {
    snprintf(err, errlen, "not enough memory");
    return NULL;
  }
  op->c = c;
  op->task = t;
  op->kind = kind;
  /* Straight out unless something waits before it (a COPY, or others queued). */
  now = c->unsent == NULL && c->in_pipeline && kind != LR_PG_COPY;
  if (kind == LR_PG_COPY && c->head == NULL) now = 1;
  if (c->tail) c->tail->next = op;
  else c->head = op;
  c->tail = op;
  if (now) {
    if (send_op(c, op, sql, n, values, lengths, formats) != 0) {
      lose(c, "cannot send the statement");
      if (op->task == NULL) { /* nobody to tell: lose freed it */
        snprintf(err, errlen, "%s", c->why);
        return NULL;
      }
      return op; /* ended LR_PG_LOST: the caller reads why */
    }
  } else {
    if (keep_copy(op, sql, n, values, lengths, formats) != 0) {
      /* unlink op: it is the tail */
      lr_pg_op **p = &c->head, *prev = NULL;
      while (*p != op) prev = *p, p = &(*p)->next;
      *p = NULL;
      c->tail = prev;
      op->task = NULL;
      op_free(op);
      snprintf(err, errlen, "not enough memory");
      return NULL;
    }
    if (c->unsent == NULL) c->unsent = op;
    pump(c);
  }
  /* Several tasks in one turn of the scheduler: their statements leave together
   * (the poll's writability fires once they all queued). Else now. */
  if (lr_sched_busy(c->rt)) c->want_write = 1;
  else flush(c);
  update_poll(c);
  if (op->end && op->task == NULL) return NULL; /* a DISCARD the connection lost */
  return op;
}

int lr_pg_op_waits(const lr_pg_op *op) {
  if (op->end) return 0;
  if (op->kind == LR_PG_ROWS) return op->nrows == 0;
  if (op->kind == LR_PG_COPY) return op->copy_state != COPY_DATA;
  return 1;
}

void lr_pg_rows_taken(lr_pg_op *op) {
  lr_pg_conn *c = op->c;
  if (c == NULL || op->end) return;
  read_results(c); /* reading had stopped at a full batch */
  update_poll(c);
}

void lr_pg_copy_put(lr_pg_op *op, const char *data, size_t len) {
  lr_pg_conn *c = op->c;
  int r;
  if (c == NULL || op->end || c->state != C_READY) return;
  if (len == 0) {
    r = lr_pq.putCopyEnd(c->pg, NULL);
    op->copy_state = COPY_END;
  } else {
    r = lr_pq.putCopyData(c->pg, data, (int)len);
    op->copy_state = COPY_PUT;
    if (r == 0) { /* libpq's buffer is full: keep the chunk, try when writable */
      op->data = data, op->dlen = len;
      c->want_write = 1;
      update_poll(c);
      return;
    }
  }
  if (r < 0) {
    lose(c, "cannot send COPY data");
    return;
  }
  flush(c);
  if (op->copy_state == COPY_PUT && !c->want_write) op->copy_state = COPY_DATA;
  if (op->copy_state == COPY_END) read_results(c);
  update_poll(c);
}

/* Writable during a COPY: the chunk that did not fit, then more data. */
static void copy_writable(lr_pg_conn *c) {
  lr_pg_op *op = c->head;
  if (op == NULL || op->kind != LR_PG_COPY || !op->sent) return;
  if (op->copy_state == COPY_PUT && op->data) {
    int r = lr_pq.putCopyData(c->pg, op->data, (int)op->dlen);
    if (r < 0) {
      lose(c, "cannot send COPY data");
      return;
    }
    if (r == 0) return;
    op->data = NULL;
  }
  if (op->copy_state == COPY_PUT && !c->want_write) {
    op->copy_state = COPY_DATA;
    op_wake(op);
  }
}

/* ---- the poll handle ---- */

static void on_poll(uv_poll_t *h, int status, int events) {
  pollbox *pb = container_of(h, pollbox, h);
  lr_pg_conn *c = pb->c;
  if (c == NULL) return;
  if (c->state == C_CONNECTING) {
    connect_step(c);
    return;
  }
  if (c->state != C_READY) return;
  if (status < 0) {
    lose(c, uv_strerror(status));
    return;
  }
  if (events & UV_WRITABLE) {
    flush(c);
    if (c->state == C_READY) copy_writable(c);
  }
  if (c->state == C_READY && (events & UV_READABLE)) {
    if (!lr_pq.consumeInput(c->pg)) {
      lose(c, "the connection to the server was lost");
      return;
    }
    read_results(c);
    if (c->state == C_READY && c->want_write) flush(c); /* input may unblock output */
  }
  if (c->state == C_READY) pump(c), update_poll(c);
}

static int head_stalled(lr_pg_conn *c) {
  lr_pg_op *op = c->head;
  return op && op->task &&
         ((op->kind == LR_PG_ROWS && op->nrows >= LR_PG_ROWS_BATCH) ||
          (op->kind == LR_PG_COPY && op->copy_state == COPY_DATA));
}

static void update_poll(lr_pg_conn *c) {
  int ev, ref;
  if (c->poll == NULL || (c->state != C_READY && c->state != C_CONNECTING)) return;
  if (c->state == C_CONNECTING) return; /* connect_step manages it */
  ev = (head_stalled(c) ? 0 : UV_READABLE) | (c->want_write ? UV_WRITABLE : 0);
  if (ev != c->events) {
    if (ev) uv_poll_start(&c->poll->h, ev, on_poll);
    else uv_poll_stop(&c->poll->h);
    c->events = ev;
  }
  ref = c->head != NULL || c->note_q.head != NULL;
  if (ref != c->reffed) {
    if (ref) uv_ref((uv_handle_t *)&c->poll->h);
    else uv_unref((uv_handle_t *)&c->poll->h);
    c->reffed = ref;
  }
}

/* Watches fd for ev (0: stop), making a new handle if the fd changed. */
static int watch(lr_pg_conn *c, int fd, int ev) {
  if (c->poll && c->fd != fd) {
    c->poll->c = NULL;
    uv_poll_stop(&c->poll->h);
    uv_close((uv_handle_t *)&c->poll->h, (uv_close_cb)free);
    c->poll = NULL;
  }
  if (c->poll == NULL) {
    pollbox *pb = calloc(1, sizeof *pb);
    if (pb == NULL) return -1;
    if (uv_poll_init(&c->rt->loop, &pb->h, fd) != 0) {
      free(pb);
      return -1;
    }
    pb->c = c;
    c->poll = pb;
    c->fd = fd;
    c->events = 0;
    c->reffed = 1;
  }
  if (ev != c->events) {
    if (ev) uv_poll_start(&c->poll->h, ev, on_poll);
    else uv_poll_stop(&c->poll->h);
    c->events = ev;
  }
  return 0;
}

/* ---- connecting ---- */

static void connect_done(lr_pg_conn *c) {
  lr_task *t;
  while ((t = lr_waitq_pop(&c->connect_q)) != NULL) lr_task_wake(t, LR_WAKE_DONE);
}

static void connect_step(lr_pg_conn *c) {
  PostgresPollingStatusType ps = lr_pq.connectPoll(c->pg);
  int fd = lr_pq.socket(c->pg);
  if (ps == PGRES_POLLING_FAILED || fd < 0) {
    const char *m = lr_pq.errorMessage(c->pg);
    size_t n;
    c->auth = strstr(m, "authentication failed") != NULL || strstr(m, "password") != NULL ||
              strstr(m, "pg_hba.conf") != NULL ||
              (strstr(m, "role \"") != NULL && strstr(m, "does not exist") != NULL);
    snprintf(c->why, sizeof c->why, "%s", *m ? m : "cannot connect");
    n = strlen(c->why);
    while (n > 0 && (c->why[n - 1] == '\n' || c->why[n - 1] == ' ')) c->why[--n] = '\0';
    shut(c, C_BROKEN, c->why);
    return;
  }
  if (ps == PGRES_POLLING_OK) {
    if (lr_pq.setnonblocking(c->pg, 1) != 0 || !lr_pq.enterPipelineMode(c->pg)) {
      lose(c, "cannot enter pipeline mode");
      return;
    }
    c->in_pipeline = 1;
    c->state = C_READY;
    c->events = -1; /* update_poll starts it over */
    if (watch(c, fd, 0) != 0) {
      lose(c, "cannot watch the socket");
      return;
    }
    c->events = 0;
    update_poll(c);
    connect_done(c);
    return;
  }
  if (watch(c, fd, ps == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE) != 0)
    shut(c, C_BROKEN, "cannot watch the socket");
}

static void ignore_notice(void *arg, const PGresult *res) {
  (void)arg, (void)res;
}

lr_pg_conn *lr_pg_connect(lr_runtime *rt, const char *url, const lr_pg_opts *o, char *err,
                          size_t errlen) {
  const char *keys[8], *vals[8];
  char options[128];
  int k = 0;
  lr_pg_conn *c;
  if (lr_pg_load(err, errlen) != 0) return NULL;
  if ((c = calloc(1, sizeof *c)) == NULL) {
    snprintf(err, errlen, "not enough memory");
    return NULL;
  }
  c->rt = rt;
  c->o = *o;
  c->fd = -1;
  /* Dates in ISO form whatever the server's setting; the URL may still override. */
  if (o->statement_timeout > 0)
    snprintf(options, sizeof options, "-c DateStyle=ISO,YMD -c statement_timeout=%.0f",
             o->statement_timeout * 1000);
  else
    snprintf(options, sizeof options, "-c DateStyle=ISO,YMD");
  keys[k] = "options", vals[k++] = options;
  keys[k] = "client_encoding", vals[k++] = "UTF8";
  keys[k] = "application_name", vals[k++] = "luarun";
  keys[k] = "dbname", vals[k++] = url;
  keys[k] = NULL, vals[k] = NULL;
  c->pg = lr_pq.connectStartParams(keys, vals, 1);
  if (c->pg == NULL) {
    free(c);
    snprintf(err, errlen, "not enough memory");
    return NULL;
  }
  /* libpq prints the server's notices (and a FATAL that ends a session) on stderr by
   * default: a script's output is its own, so they are dropped. */
  lr_pq.setNoticeReceiver(c->pg, ignore_notice, NULL);
  c->next_all = all_conns;
  all_conns = c;
  if (closer_rt != rt) {
    closer_rt = rt;
    lr_runtime_on_close(rt, close_all);
  }
  c->state = C_CONNECTING;
  if (lr_pq.status(c->pg) == CONNECTION_BAD) {
    connect_step(c); /* fails with libpq's reason (a bad URL) */
    return c;
  }
  if (watch(c, lr_pq.socket(c->pg), UV_WRITABLE) != 0) shut(c, C_BROKEN, "cannot watch the socket");
  return c;
}

lr_waitq *lr_pg_connect_queue(lr_pg_conn *c) {
  return &c->connect_q;
}

int lr_pg_connected(lr_pg_conn *c, const char **why, int *auth) {
  *why = c->why;
  *auth = c->auth;
  if (c->state == C_CONNECTING) return 0;
  return c->state == C_READY ? 1 : -1;
}

void lr_pg_close(lr_pg_conn *c, const char *why) {
  shut(c, C_CLOSED, why ? why : "the connection is closed");
}

void lr_pg_release(lr_pg_conn *c) {
  c->released = 1;
  if (c->rt == NULL) { /* its runtime closed first */
    conn_free(c);
    return;
  }
  shut(c, C_CLOSED, "the connection is closed");
  conn_free(c);
}

int lr_pg_is_closed(const lr_pg_conn *c) {
  return c->state != C_READY;
}

int lr_pg_server_version(lr_pg_conn *c) {
  (void)c;
  return lr_pq.libVersion();
}

/* ---- the task lets go ---- */

void lr_pg_op_cancel(lr_task *t) {
  lr_pg_op *op = container_of(t->inq, lr_pg_op, q);
  op->parked = 0;
  lr_task_wake(t, LR_WAKE_CANCELLED); /* the continuation releases op */
}

void lr_pg_op_release(lr_pg_op *op) {
  lr_pg_conn *c = op->c;
  op->task = NULL;
  if (op->end || c == NULL) { /* done: out of the FIFO */
    op_free(op);
    return;
  }
  if (!op->sent) { /* never went out: it just leaves the FIFO */
    lr_pg_op **p = &c->head, *prev = NULL;
    while (*p != op) prev = *p, p = &(*p)->next;
    *p = op->next;
    if (c->tail == op) c->tail = prev;
    if (c->unsent == op) c->unsent = op->next;
    op_free(op);
    pump(c);
    update_poll(c);
    return;
  }
  /* Still to come: its results will be dropped. A COPY still waiting for data ends
   * it with an error (which rolls it back); a statement the server runs is cancelled. */
  if (op->kind == LR_PG_COPY && op->sent && c->state == C_READY &&
      (op->copy_state == COPY_DATA || op->copy_state == COPY_PUT)) {
    if (op->copy_state == COPY_PUT && op->data) op->data = NULL;
    lr_pq.putCopyEnd(c->pg, "cancelled by the client");
    op->copy_state = COPY_END;
    flush(c);
  }
  if (op->sent && op->kind != LR_PG_COPY) {
    if (c->head == op) request_cancel(c, op);
    else op->cancel_at_head = 1;
  }
  if (op->kind == LR_PG_ROWS) {
    int i;
    for (i = 0; i < op->nrows; i++) lr_pq.clear(op->rows[i]);
    op->nrows = 0;
  }
  if (c->state == C_READY) {
    read_results(c);
    update_poll(c);
  }
}
