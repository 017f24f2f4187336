/* pg_conn.c: a PostgreSQL connection on the loop: connecting, its poll handle,
 * notifications, cancel requests, and its end (closed, lost, or its runtime gone).
 * Its operations are pg_pipeline.c's.
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

static lr_pg_conn *all_conns;   /* every connection, for the runtime closer */
static lr_runtime *closer_rt;

static void connect_step(lr_pg_conn *c);

/* ---- cancel requests: PQcancel blocks (libpq 15), so it runs on libuv's pool ---- */

typedef struct cancel_work {
  uv_work_t w;
  PGcancel *cn;
  lr_pg_conn *c;         /* kept alive until this is over (c->cancels) */
} cancel_work;

static void conn_free(lr_pg_conn *c);

static void cancel_run(uv_work_t *w) {
  cancel_work *cw = container_of(w, cancel_work, w);
  char buf[256];
  lr_pq.cancel(cw->cn, buf, sizeof buf); /* best effort: the result says what happened */
}

/* The server has the cancel request: once the cancelled statement has ended too, the
 * statements held back go out (a request still on its way would stop one of them). */
static void cancel_after(uv_work_t *w, int status) {
  cancel_work *cw = container_of(w, cancel_work, w);
  lr_pg_conn *c = cw->c;
  (void)status;
  lr_pq.freeCancel(cw->cn);
  free(cw);
  if (--c->cancels > 0) return;
  if (c->free_pending) {
    conn_free(c);
    return;
  }
  if (c->hold == LR_PG_HOLD_ENDED) {
    c->hold = NULL;
    if (c->state == C_READY) {
      lr_pgi_pump(c);
      lr_pgi_flush(c);
      lr_pgi_update_poll(c);
    }
  }
}

/* A cancel request stops whatever the server runs when it arrives, so it is sent only
 * when op is the last statement sent (anything behind it would be at risk), and
 * nothing more goes out until op has ended and the server has the request (c->hold).
 * Otherwise op runs to its end and its results are dropped. */
void lr_pgi_request_cancel(lr_pg_conn *c, lr_pg_op *op) {
  cancel_work *cw;
  if (op->cancel_sent || c->state != C_READY || c->hold) return;
  if (op->next && op->next->sent) return;
  op->cancel_sent = 1;
  if ((cw = calloc(1, sizeof *cw)) == NULL) return;
  cw->c = c;
  if ((cw->cn = lr_pq.getCancel(c->pg)) == NULL ||
      uv_queue_work(&c->rt->loop, &cw->w, cancel_run, cancel_after) != 0) {
    if (cw->cn) lr_pq.freeCancel(cw->cn);
    free(cw);
    return;
  }
  c->cancels++;
  c->hold = op;
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
  if (why != c->why) snprintf(c->why, sizeof c->why, "%s", why); /* may be c->why */
  while ((op = c->head) != NULL) {
    lr_pgi_fifo_pop(c);
    snprintf(op->lost, sizeof op->lost, "%s", why);
    lr_pgi_op_end(op, LR_PG_LOST);
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
  if (c->cancels > 0) { /* a cancel request still uses it: freed when it is over */
    c->free_pending = 1;
    return;
  }
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

void lr_pgi_lose(lr_pg_conn *c, const char *what) {
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

void lr_pgi_drain_notifies(lr_pg_conn *c) {
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
  lr_pgi_update_poll(c); /* a task waits: the poll keeps the loop alive meanwhile */
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
    lr_pgi_lose(c, uv_strerror(status));
    return;
  }
  if (events & UV_WRITABLE) {
    lr_pgi_flush(c);
    if (c->state == C_READY) lr_pgi_copy_writable(c);
  }
  if (c->state == C_READY && (events & UV_READABLE)) {
    if (!lr_pq.consumeInput(c->pg)) {
      lr_pgi_lose(c, "the connection to the server was lost");
      return;
    }
    lr_pgi_read_results(c);
    if (c->state == C_READY && c->want_write) lr_pgi_flush(c); /* input may unblock output */
  }
  if (c->state == C_READY) lr_pgi_pump(c), lr_pgi_update_poll(c);
}

static int head_stalled(lr_pg_conn *c) {
  lr_pg_op *op = c->head;
  return op && op->task &&
         ((op->kind == LR_PG_ROWS && op->nrows >= LR_PG_ROWS_BATCH && !lr_pgi_waits_behind(c, op)) ||
          (op->kind == LR_PG_COPY && op->copy_state == COPY_DATA));
}

void lr_pgi_update_poll(lr_pg_conn *c) {
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
/* Watches fd for ev (0: stop), making a new handle if the fd changed. 0, or a libuv
 * error (UV_ENOMEM when the handle cannot be allocated). */
static int watch(lr_pg_conn *c, int fd, int ev) {
  int rc;
  /* While connecting, libpq may close its socket and open the next (another address
   * or host) under the same number: the old one left epoll as it closed, so the
   * handle is started over at every step. */
  if (c->state == C_CONNECTING && c->poll && c->events > 0) {
    uv_poll_stop(&c->poll->h); /* a start with the same events would change nothing */
    c->events = 0;
  }
  if (c->poll && c->fd != fd) {
    c->poll->c = NULL;
    uv_poll_stop(&c->poll->h);
    uv_close((uv_handle_t *)&c->poll->h, (uv_close_cb)free);
    c->poll = NULL;
  }
  if (c->poll == NULL) {
    pollbox *pb = calloc(1, sizeof *pb);
    if (pb == NULL) return UV_ENOMEM;
    if ((rc = uv_poll_init(&c->rt->loop, &pb->h, fd)) != 0) {
      free(pb);
      return rc;
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
  int fd = lr_pq.socket(c->pg), rc;
  if (ps == PGRES_POLLING_FAILED || fd < 0) {
    const char *m = lr_pq.errorMessage(c->pg);
    size_t n;
    c->auth = strstr(m, "authentication failed") != NULL || strstr(m, "password") != NULL ||
              strstr(m, "pg_hba.conf") != NULL ||
              (strstr(m, "role \"") != NULL && strstr(m, "does not exist") != NULL);
    snprintf(c->why, sizeof c->why, "%s", m);
    n = strlen(c->why);
    while (n > 0 && (c->why[n - 1] == '\n' || c->why[n - 1] == ' ')) c->why[--n] = '\0';
    if (n == 0) /* libpq out of memory in PQconnectStartParams leaves no message */
      snprintf(c->why, sizeof c->why, "cannot connect: libpq gave no reason (out of memory?)");
    shut(c, C_BROKEN, c->why);
    return;
  }
  if (ps == PGRES_POLLING_OK) {
    if (lr_pq.setnonblocking(c->pg, 1) != 0 || !lr_pq.enterPipelineMode(c->pg)) {
      lr_pgi_lose(c, "cannot enter pipeline mode");
      return;
    }
    c->in_pipeline = 1;
    c->state = C_READY;
    c->events = -1; /* update_poll starts it over */
    if ((rc = watch(c, fd, 0)) != 0) {
      lr_pgi_lose(c, uv_strerror(rc));
      return;
    }
    c->events = 0;
    lr_pgi_update_poll(c);
    connect_done(c);
    return;
  }
  if ((rc = watch(c, fd, ps == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE)) != 0)
    shut(c, C_BROKEN, uv_strerror(rc));
}

static void ignore_notice(void *arg, const PGresult *res) {
  (void)arg, (void)res;
}

lr_pg_conn *lr_pg_connect(lr_runtime *rt, const char *url, const lr_pg_opts *o, char *err,
                          size_t errlen) {
  const char *keys[8], *vals[8];
  char options[128];
  int k = 0, rc;
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
  if ((rc = watch(c, lr_pq.socket(c->pg), UV_WRITABLE)) != 0) shut(c, C_BROKEN, uv_strerror(rc));
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

const char *lr_pg_why(const lr_pg_conn *c) {
  return c ? c->why : "";
}

int lr_pg_is_closed(const lr_pg_conn *c) {
  return c->state != C_READY;
}
