/* pg_pipeline.c: a PostgreSQL connection's operations (lr_pg.h says how they are laid
 * out in the pipeline): sending them, cached statements, matching results to them,
 * streamed rows and COPY data, and what happens when their task lets go.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lr_pg.h"

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
void lr_pgi_op_end(lr_pg_op *op, int end) {
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

void lr_pgi_fifo_pop(lr_pg_conn *c) {
  lr_pg_op *op = c->head;
  if (c->hold == op) /* statements go out again once the server has the request too */
    c->hold = c->cancels > 0 ? LR_PG_HOLD_ENDED : NULL;
  c->head = op->next;
  if (c->head == NULL) c->tail = NULL;
  op->next = NULL;
  op->c = NULL;
}

/* ---- results ---- */

/* One result (or the NULL that ends a result set) for the operation at the head. */
static void take_result(lr_pg_conn *c, lr_pg_op *op, PGresult *res) {
  ExecStatusType st;
  if (res == NULL) {
    if (op->sets > 0) op->sets--;
    if (op->kind == LR_PG_COPY && op->sets == 0) { /* COPY is outside the pipeline */
      lr_pgi_fifo_pop(c);
      lr_pgi_op_end(op, op->res && lr_pq.resultStatus(op->res) == PGRES_FATAL_ERROR ? LR_PG_ERROR
                                                                           : LR_PG_OK);
      if (lr_pq.enterPipelineMode(c->pg)) c->in_pipeline = 1;
      else lr_pgi_lose(c, "cannot return to pipeline mode");
    }
    return;
  }
  st = lr_pq.resultStatus(res);
  switch (st) {
    case PGRES_PIPELINE_SYNC:
      lr_pq.clear(res);
      lr_pgi_fifo_pop(c);
      lr_pgi_op_end(op, op->res && lr_pq.resultStatus(op->res) == PGRES_FATAL_ERROR ? LR_PG_ERROR
                                                                           : LR_PG_OK);
      if (c->head && c->head->sent && c->head->cancel_at_head) lr_pgi_request_cancel(c, c->head);
      return;
    case PGRES_SINGLE_TUPLE:
      if (op->task == NULL || (op->res && lr_pq.resultStatus(op->res) == PGRES_FATAL_ERROR)) {
        lr_pq.clear(res);
        return;
      }
      if (op->nrows == op->rows_cap) {
        int cap = op->rows_cap ? op->rows_cap * 2 : 64;
        PGresult **nr = realloc(op->rows, cap * sizeof *nr);
        if (nr == NULL) { /* a row lost: the results can no longer be trusted */
          lr_pq.clear(res);
          lr_pgi_lose(c, "out of memory for a row");
          return;
        }
        op->rows = nr, op->rows_cap = cap;
      }
      op->rows[op->nrows++] = res;
      if (op->nrows >= LR_PG_ROWS_BATCH) op_wake(op);
      return;
    case PGRES_COPY_IN:
      lr_pq.clear(res);
      if (op->kind != LR_PG_COPY) { /* COPY sent as a statement: libpq would wait for data */
        lr_pgi_lose(c, "COPY ... FROM STDIN goes through conn:copy_in (the connection was "
                       "reset)");
        return;
      }
      if (op->task == NULL) { /* cancelled before the server answered: end the COPY */
        lr_pq.putCopyEnd(c->pg, "cancelled by the client");
        op->copy_state = COPY_END;
        lr_pgi_flush(c);
        return;
      }
      op->copy_state = COPY_DATA;
      op_wake(op);
      return;
    case PGRES_COPY_OUT: case PGRES_COPY_BOTH:
      lr_pq.clear(res);
      lr_pgi_lose(c, "COPY ... TO STDOUT is not supported (the connection was reset)");
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

/* libpq out of memory while it parsed a message (a result, the end of a Sync) says so
 * in its error message, or in a result it makes up, and may drop that message: a Sync
 * that never comes would leave its task waiting for ever. Its state can no longer be
 * trusted, so the connection ends and its tasks get "closed" (found by
 * malloc_faults_spec). The message must be read at once: libpq clears it as the
 * pipeline moves on to the next statement. Returns 1 if the connection ended. */
static int libpq_oom(lr_pg_conn *c) {
  if (strstr(lr_pq.errorMessage(c->pg), "out of memory") == NULL) return 0;
  lr_pgi_lose(c, "libpq ran out of memory");
  return 1;
}

/* A failed result with no SQLSTATE was made up by libpq, not sent by the server: its
 * own trouble (out of memory, a protocol violation, the server gone). Every one of
 * these leaves the connection in doubt, so it ends. A server's message without its
 * SQLSTATE is the sign that libpq could not allocate the result for it. Returns 1 if
 * the connection ended. */
static int libpq_failed(lr_pg_conn *c, const PGresult *res) {
  const char *m;
  char why[200];
  if (lr_pq.resultStatus(res) != PGRES_FATAL_ERROR ||
      lr_pq.resultErrorField(res, PG_DIAG_SQLSTATE) != NULL)
    return 0;
  m = lr_pq.resultErrorMessage(res);
  if (strstr(m, "out of memory")) snprintf(why, sizeof why, "libpq ran out of memory");
  else if (strncmp(m, "ERROR:", 6) == 0 || strncmp(m, "FATAL:", 6) == 0)
    snprintf(why, sizeof why, "libpq could not keep the server's error (out of memory?): %.120s", m);
  else snprintf(why, sizeof why, "libpq: %.180s", m);
  lr_pgi_lose(c, why);
  return 1;
}

/* 1 if op's task waits for a later statement on the same connection (a statement in
 * the body of a rows() loop): op's rows must then keep coming, or neither ends. */
int lr_pgi_waits_behind(lr_pg_conn *c, lr_pg_op *op) {
  lr_pg_op *o;
  (void)c;
  for (o = op->next; o; o = o->next)
    if (o->task == op->task && o->parked) return 1;
  return 0;
}

/* Reads every complete result there is, hands each to the operation it belongs to. */
void lr_pgi_read_results(lr_pg_conn *c) {
  lr_pg_op *op;
  while (c->state == C_READY && (op = c->head) != NULL && op->sent) {
    PGresult *res;
    int busy;
    if (op->kind == LR_PG_ROWS && op->nrows >= LR_PG_ROWS_BATCH && op->task &&
        !lr_pgi_waits_behind(c, op))
      break;
    if (op->kind == LR_PG_COPY && (op->copy_state == COPY_DATA || op->copy_state == COPY_PUT))
      break;
    if (op->kind == LR_PG_ROWS && !op->single_set && op->sets == 1) {
      op->single_set = 1;
      lr_pq.setSingleRowMode(c->pg); /* 0 if it cannot: then the rows come at once */
    }
    busy = lr_pq.isBusy(c->pg);
    if (libpq_oom(c)) return;
    if (busy) break;
    res = lr_pq.getResult(c->pg);
    if (res && libpq_failed(c, res)) {
      lr_pq.clear(res);
      return;
    }
    take_result(c, op, res);
    if (c->state != C_READY) return; /* take_result gave up on it */
    lr_pgi_drain_notifies(c);
    if (libpq_oom(c)) return;
    if (lr_pq.status(c->pg) == CONNECTION_BAD) {
      lr_pgi_lose(c, "the connection to the server was lost");
      return;
    }
  }
  lr_pgi_drain_notifies(c);
  if (c->state == C_READY && libpq_oom(c)) return;
  if (c->state == C_READY && c->unsent) { /* a COPY ended: what waited behind it goes */
    lr_pgi_pump(c);
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
void lr_pgi_flush(lr_pg_conn *c) {
  int r;
  if (c->state != C_READY) return;
  r = lr_pq.flush(c->pg);
  if (r < 0) {
    lr_pgi_lose(c, "cannot send to the server");
    return;
  }
  c->want_write = r == 1;
}

/* Sends the operations that wait, as far as the connection can take them now. */
void lr_pgi_pump(lr_pg_conn *c) {
  while (c->state == C_READY && c->unsent && c->hold == NULL) {
    lr_pg_op *op = c->unsent;
    if (op->kind == LR_PG_COPY && c->head != op) break; /* waits for the pipeline to empty */
    if (!c->in_pipeline) {
      if (c->head != op) break; /* a COPY runs */
      if (!lr_pq.enterPipelineMode(c->pg)) {
        lr_pgi_lose(c, "cannot enter pipeline mode");
        return;
      }
      c->in_pipeline = 1;
    }
    if (send_op(c, op, op->sql, op->nparams, op->values, op->lengths, op->formats) != 0) {
      lr_pgi_lose(c, "cannot send the statement");
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
  now = c->unsent == NULL && c->in_pipeline && kind != LR_PG_COPY && c->hold == NULL;
  if (kind == LR_PG_COPY && c->head == NULL) now = 1;
  if (c->tail) c->tail->next = op;
  else c->head = op;
  c->tail = op;
  if (now) {
    if (send_op(c, op, sql, n, values, lengths, formats) != 0) {
      lr_pgi_lose(c, "cannot send the statement");
      if (t == NULL) { /* nobody to tell: lose freed it */
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
    lr_pgi_pump(c);
  }
  /* Several tasks in one turn of the scheduler: their statements leave together
   * (the poll's writability fires once they all queued). Else now. */
  if (lr_sched_busy(c->rt)) c->want_write = 1;
  else lr_pgi_flush(c);
  lr_pgi_update_poll(c);
  if (t == NULL && c->state != C_READY) return NULL; /* a DISCARD the connection lost (freed) */
  return op;
}

void lr_pg_op_parked(lr_pg_op *op) {
  lr_pg_conn *c = op->c;
  /* A rows() batch at the head stopped the reading; a statement its own task now
   * waits for behind it (lr_pgi_waits_behind) needs the reading to go on. */
  if (c && c->state == C_READY && c->head && c->head != op && c->head->kind == LR_PG_ROWS &&
      c->head->task == op->task) {
    lr_pgi_read_results(c);
    lr_pgi_update_poll(c);
  }
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
  lr_pgi_read_results(c); /* reading had stopped at a full batch */
  lr_pgi_update_poll(c);
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
      lr_pgi_update_poll(c);
      return;
    }
  }
  if (r < 0) {
    lr_pgi_lose(c, "cannot send COPY data");
    return;
  }
  lr_pgi_flush(c);
  if (op->copy_state == COPY_PUT && !c->want_write) op->copy_state = COPY_DATA;
  if (op->copy_state == COPY_END) lr_pgi_read_results(c);
  lr_pgi_update_poll(c);
}

/* Writable during a COPY: the chunk that did not fit, then more data. */
void lr_pgi_copy_writable(lr_pg_conn *c) {
  lr_pg_op *op = c->head;
  if (op == NULL || op->kind != LR_PG_COPY || !op->sent) return;
  if (op->copy_state == COPY_PUT && op->data) {
    int r = lr_pq.putCopyData(c->pg, op->data, (int)op->dlen);
    if (r < 0) {
      lr_pgi_lose(c, "cannot send COPY data");
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
    lr_pgi_pump(c);
    lr_pgi_update_poll(c);
    return;
  }
  /* Still to come: its results will be dropped. A COPY still waiting for data ends
   * it with an error (which rolls it back); a statement the server runs is cancelled. */
  if (op->kind == LR_PG_COPY && op->sent && c->state == C_READY &&
      (op->copy_state == COPY_DATA || op->copy_state == COPY_PUT)) {
    if (op->copy_state == COPY_PUT && op->data) op->data = NULL;
    lr_pq.putCopyEnd(c->pg, "cancelled by the client");
    op->copy_state = COPY_END;
    lr_pgi_flush(c);
  }
  if (op->sent && op->kind != LR_PG_COPY) {
    if (c->head == op) lr_pgi_request_cancel(c, op);
    else op->cancel_at_head = 1;
  }
  if (op->kind == LR_PG_ROWS) {
    int i;
    for (i = 0; i < op->nrows; i++) lr_pq.clear(op->rows[i]);
    op->nrows = 0;
  }
  if (c->state == C_READY) {
    lr_pgi_read_results(c);
    lr_pgi_update_poll(c);
  }
}
