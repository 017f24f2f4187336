/* http_job.c: requests of luarun.http that may wait before they start: the client's
 * delay_per_host gate, and the retry option's tries.
 *
 * A plain request goes straight from do_request (http.c) to its transfer. A request
 * with retry, or on a client with delay_per_host, becomes a job: a userdata on the
 * task's stack holding its options (every string they point to anchored on the same
 * stack, so they can be set on a fresh easy handle after a wait) and its count of
 * tries. The loop, all in continuations of the one task:
 *
 *   job_go --(gate busy)--> gate_k --> job_submit --> lr_http_request_k
 *      ^                                                   |
 *      +------------- retry_k <--(a try to retry)-----------+
 *
 * Between tries the request is released (its handle goes back to the client, reset
 * if it must be: http.c's tainted rule) and a new one is made for the next try, so a
 * retry is a request like any other: the output file truncated again, the body sent
 * whole, the limits the same. The waits park on the timer and in a queue of the
 * client (core/http_wait.c), so a cancel or the client's close ends them.
 */
#include <math.h>
#include <string.h>
#include <unistd.h>
#include "http_request.h"

typedef struct http_job {
  reqspec q;                /* the options (strings anchored on the task's stack) */
  lr_task *t;
  lr_http_gate *gate;       /* the gate waited at, until its turn is taken */
  const char *key;          /* the gate's host key (on the stack), or NULL: no gate */
  int cidx, url_idx, output_idx, self_idx;
  int tries;                /* tries made */
  double wait;              /* seconds before the next try */
} http_job;

static int job_go(lua_State *L, http_job *j);

int lr_http_job_wanted(lr_http_client *c, const reqspec *q) {
  return q->retry.attempts > 0 || lr_http_client_waits(c)->delay != 0;
}

/* The client, or NULL once it is closed (then a waiting task must not touch it). */
static lr_http_client *job_client(lua_State *L, const http_job *j) {
  lr_http_client *c = lr_http_client_at(L, j->cidx);
  return c && !lr_http_client_closed(c) ? c : NULL;
}

static int job_closed(lua_State *L, http_job *j) {
  int n = lr_http_fail_closed(L, j->url_idx);
  lr_http_job_note(L, j->self_idx);
  return n;
}

/* One try: a request on a handle of the client, its options set afresh. */
static int job_submit(lua_State *L, http_job *j, lr_http_client *c) {
  lr_http_req *r;
  int fd = -1;
  if (j->q.output && (fd = lr_http_open_output(L, j->q.output, j->url_idx)) < 0) {
    lr_http_job_note(L, j->self_idx);
    return 2;
  }
  if ((r = lr_http_req_new(c)) == NULL) {
    if (fd >= 0) close(fd);
    return luaL_error(L, "%s: out of memory", j->q.fname);
  }
  r->out_fd = fd;
  r->url_idx = j->url_idx;
  r->output_idx = j->output_idx;
  r->job_idx = j->self_idx;
  j->tries++;
  if (lr_http_apply(L, r, &j->q, lua_tostring(L, j->url_idx)) != 0 ||
      lr_http_req_submit(r, j->t) != 0) {
    lr_http_req_release(r);
    return luaL_error(L, "%s: cannot start the request (out of memory)", j->q.fname);
  }
  return lr_task_park(L, j->t, lr_http_req_cancel, (lua_KContext)r, lr_http_request_k);
}

/* Woken at the gate: its turn, a cancel, or the client's close. */
static int gate_k(lua_State *L, int status, lua_KContext ctx) {
  http_job *j = (http_job *)ctx;
  lr_http_client *c = job_client(L, j);
  lr_http_gate *g = j->gate;
  (void)status;
  if (j->t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L); /* the hook moved on */
  if (c == NULL) return job_closed(L, j);  /* the gate is gone with the client */
  j->gate = NULL;
  if (j->t->flags & LR_F_CANCEL) {
    /* Cancelled after its turn came, before it ran: the turn passes on. */
    lr_http_gate_leave(g, j->t);
    lr_error_raise_cancelled(L);
  }
  if (lr_http_gate_pass(g, j->t) != 0) return luaL_error(L, "%s: out of memory", j->q.fname);
  return job_submit(L, j, c);
}

/* The next try: through the gate if the client has one, then the transfer. */
static int job_go(lua_State *L, http_job *j) {
  lr_http_client *c = job_client(L, j);
  int rc;
  if (c == NULL) return job_closed(L, j);
  if (j->key) {
    rc = lr_http_gate_enter(lr_http_client_waits(c), j->key, j->t, &j->gate);
    if (rc < 0) return luaL_error(L, "%s: out of memory", j->q.fname);
    if (rc > 0)
      return lr_task_park_on(L, j->t, lr_http_gate_cancel, lr_http_gate_describe,
                             (lua_KContext)j, gate_k);
  }
  return job_submit(L, j, c);
}

int lr_http_job_start(lua_State *L, reqspec *q, lr_task *t, int cidx, int url_idx,
                      int output_idx) {
  http_job *j;
  lr_http_client *c = lr_http_client_at(L, cidx);
  luaL_checkstack(L, 8, NULL);
  j = lua_newuserdatauv(L, sizeof *j, 0);
  memset(j, 0, sizeof *j);
  j->self_idx = lua_gettop(L);
  j->q = *q;
  j->t = t;
  j->cidx = cidx;
  j->url_idx = url_idx;
  j->output_idx = output_idx;
  lr_http_anchor_options(L, &j->q);
  if (lr_http_client_waits(c)->delay != 0) {
    char key[1024];
    /* A URL that does not parse has no gate: its transfer fails at once. */
    if (lr_http_host_key(lua_tostring(L, url_idx), key, sizeof key) == 0) {
      lua_pushstring(L, key);
      j->key = lua_tostring(L, -1);
    }
  }
  return job_go(L, j);
}

/* ---- retries ---- */

static void retry_describe(lua_State *L, lr_task *t) {
  (void)t;
  lua_pushliteral(L, "http retry, waiting before the next try");
}

static int retry_k(lua_State *L, int status, lua_KContext ctx) {
  http_job *j = (http_job *)ctx;
  (void)status;
  if (j->t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  lr_task_checkpoint(L, j->t); /* cancelled after the timer woke it */
  return job_go(L, j);         /* says so if the client was closed meanwhile */
}

/* Methods that may be sent twice (RFC 9110 9.2.2). */
static int idempotent(const char *m) {
  static const char *const names[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE",
                                      NULL};
  int i;
  for (i = 0; names[i]; i++)
    if (strcmp(m, names[i]) == 0) return 1;
  return 0;
}

/* Whether a failed transfer is worth another try: the connection could not be made
 * (nothing was sent, whatever the method), or, for a method that may be sent twice,
 * it broke or timed out. */
static int network_retry(const lr_http_req *r, int idem) {
  if (r->too_large || r->write_failed || r->result == CURLE_OK) return 0;
  switch (r->result) {
    case CURLE_COULDNT_CONNECT:
      return 1;
    case CURLE_OPERATION_TIMEDOUT: case CURLE_SEND_ERROR: case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE:
      return idem;
    default:
      return 0;
  }
}

/* A number in [0, 1) from the clock and the job's address: jitter needs no quality,
 * only tasks that failed together not to come back together. */
static double jitter(const void *p) {
  uint64_t x = uv_hrtime() ^ (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (double)(x >> 11) / 9007199254740992.0;
}

/* The wait before try number j->tries + 1: the server's Retry-After when it gave a
 * positive one (libcurl reads both forms; it says 0 for a value it cannot read and,
 * in 7.88, a negative number for a date in the past: those fall to the backoff),
 * else backoff * 2^(tries-1), of which a random half; both capped at max_wait. */
static double retry_delay(const http_job *j, const lr_http_req *r) {
  const lr_http_retry *rt = &j->q.retry;
  curl_off_t after = 0;
  double b;
  if (r->result == CURLE_OK &&
      lr_curl.easy_getinfo(r->easy, CURLINFO_RETRY_AFTER, &after) == CURLE_OK && after > 0)
    return (double)after < rt->max_wait ? (double)after : rt->max_wait;
  /* 2^60 seconds is past any max_wait; a larger power could make 0 * inf a NaN. */
  b = rt->backoff * pow(2, j->tries - 1 < 60 ? j->tries - 1 : 60);
  b = b / 2 + b / 2 * jitter(j);
  return b < rt->max_wait ? b : rt->max_wait;
}

int lr_http_job_should_retry(lua_State *L, lr_http_req *r, int failed) {
  http_job *j = lua_touserdata(L, r->job_idx);
  const lr_http_retry *rt = &j->q.retry;
  int idem = idempotent(j->q.method), i;
  long status = 0;
  if (j->tries >= rt->attempts || r->aborted) return 0;
  if (failed) {
    if (!rt->network || !network_retry(r, idem)) return 0;
  } else {
    lr_curl.easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    for (i = 0; i < rt->non && rt->on[i] != status; i++) {}
    if (i == rt->non) return 0;
    /* A method that must not be sent twice only on the statuses that say the
     * request was not processed. */
    if (!idem && status != 429 && status != 503) return 0;
  }
  j->wait = retry_delay(j, r);
  return 1;
}

int lr_http_job_retry(lua_State *L, lr_http_req *r) {
  http_job *j = lua_touserdata(L, r->job_idx);
  lr_http_client *c;
  lr_http_req_release(r);
  /* Through the client object: a client closed by the script may be freed by the
   * release above. */
  if ((c = job_client(L, j)) == NULL) return job_closed(L, j);
  if (lr_http_retry_wait(lr_http_client_waits(c), j->t, j->wait) != 0)
    return luaL_error(L, "%s: out of memory", j->q.fname);
  if (lr_observed(j->t->rt)) {
    lr_wait_desc d = {"sleep", "http retry", 0, 0, 0, {{0}}};
    lr_wait_num(&d, "seconds", j->wait, 0);
    lr_wait_num(&d, "attempt", j->tries + 1, 1);
    lr_hooks_wait(j->t->rt, j->t, &d);
  }
  return lr_task_park_on(L, j->t, NULL, retry_describe, (lua_KContext)j, retry_k);
}

void lr_http_job_note(lua_State *L, int job_idx) {
  http_job *j = lua_touserdata(L, job_idx);
  if (j->q.retry.attempts == 0) return; /* no retry option: delay_per_host only */
  lua_pushinteger(L, j->tries);
  lua_setfield(L, -2, "attempts");
}
