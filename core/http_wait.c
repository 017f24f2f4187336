/* http_wait.c: waits before an HTTP request starts.
 *
 * delay_per_host: a client keeps one gate per host key (scheme, host and port of the
 * request URL). A gate lets a request start once the last start at that key is at
 * least the delay ago; the others queue in arrival order. Only the task at the head
 * (`due`) has a timer, armed for the last start plus the delay; when it has started
 * (lr_http_gate_pass) the next one becomes due. The gap is measured from the actual
 * start of the previous request, so a late wake-up (a busy loop) never lets two
 * requests start closer together than the delay. Idle gates (nobody waiting, the
 * last start older than the delay) are swept as the table grows, so a crawl of many
 * hosts keeps only the hosts it is busy with.
 *
 * Retries: a task waiting before its next try sits in the client's retry queue and in
 * the timer heap at once; the timer or a cancel wakes it (lr_task_wake takes it out
 * of both), and the client's close wakes it with LR_WAKE_CLOSED.
 *
 * Only the loop's thread calls in here.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "curl_api.h"

struct lr_http_gate {
  lr_waitq q;               /* tasks waiting for their turn, oldest first */
  lr_task *due;             /* the waiter whose turn is armed or has come, or NULL */
  lr_http_waits *w;
  lr_http_gate *next;       /* hash chain */
  uint64_t last;            /* hrtime of the last start, 0 = none yet */
  uint32_t hash;
  char key[];
};

static uint32_t hash_key(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

static int gate_idle(const lr_http_gate *g, uint64_t now) {
  return g->q.head == NULL && g->due == NULL && now >= g->last + g->w->delay;
}

/* Frees the idle gates; the next sweep comes when the table has doubled again. */
static void sweep(lr_http_waits *w, uint64_t now) {
  uint32_t i;
  for (i = 0; i < w->cap; i++) {
    lr_http_gate **pp = &w->gates[i];
    while (*pp) {
      lr_http_gate *g = *pp;
      if (gate_idle(g, now)) {
        *pp = g->next;
        free(g);
        w->ngates--;
      } else {
        pp = &g->next;
      }
    }
  }
  w->sweep_at = w->ngates * 2 > 64 ? w->ngates * 2 : 64;
}

static int grow(lr_http_waits *w) {
  uint32_t cap = w->cap ? w->cap * 2 : 16, i;
  lr_http_gate **t = calloc(cap, sizeof *t);
  if (t == NULL) return -1;
  for (i = 0; i < w->cap; i++) {
    lr_http_gate *g = w->gates[i], *next;
    for (; g; g = next) {
      next = g->next;
      g->next = t[g->hash & (cap - 1)];
      t[g->hash & (cap - 1)] = g;
    }
  }
  free(w->gates);
  w->gates = t;
  w->cap = cap;
  return 0;
}

static lr_http_gate *gate_get(lr_http_waits *w, const char *key, uint64_t now) {
  uint32_t h = hash_key(key);
  size_t n;
  lr_http_gate *g;
  if (w->cap) {
    for (g = w->gates[h & (w->cap - 1)]; g; g = g->next)
      if (g->hash == h && strcmp(g->key, key) == 0) return g;
  }
  if (w->ngates >= w->sweep_at) sweep(w, now);
  if (w->ngates >= w->cap && grow(w) != 0) return NULL;
  n = strlen(key) + 1;
  if ((g = calloc(1, sizeof *g + n)) == NULL) return NULL;
  memcpy(g->key, key, n);
  g->w = w;
  g->hash = h;
  g->next = w->gates[h & (w->cap - 1)];
  w->gates[h & (w->cap - 1)] = g;
  w->ngates++;
  return g;
}

/* Makes the oldest waiter due: woken now if its turn has come, else at it. */
static void promote(lr_http_gate *g) {
  lr_task *t = g->q.head;
  uint64_t at;
  g->due = t;
  if (t == NULL) return;
  at = g->last + g->w->delay;
  if (uv_hrtime() >= at || lr_timer_add(t->rt, t, at) != 0)
    lr_task_wake(t, LR_WAKE_DONE); /* a wake without a timer: pass finds it early */
}

int lr_http_gate_enter(lr_http_waits *w, const char *key, lr_task *t, lr_http_gate **gp) {
  uint64_t now = uv_hrtime();
  lr_http_gate *g = gate_get(w, key, now);
  *gp = g;
  if (g == NULL) return -1;
  if (g->q.head == NULL && g->due == NULL && (g->last == 0 || now >= g->last + w->delay)) {
    g->last = now;
    return 0;
  }
  lr_waitq_push(&g->q, t);
  if (g->due == NULL) promote(g);
  return 1;
}

void lr_http_gate_cancel(lr_task *t) {
  lr_http_gate *g = container_of(t->inq, lr_http_gate, q);
  lr_task_wake(t, LR_WAKE_CANCELLED); /* out of the queue and the timer heap */
  if (g->due == t) promote(g);
}

void lr_http_gate_describe(lua_State *L, lr_task *t) {
  lr_http_gate *g = container_of(t->inq, lr_http_gate, q);
  lua_pushfstring(L, "http delay_per_host, waiting for its turn at %s", g->key);
}

int lr_http_gate_pass(lr_http_gate *g, lr_task *t) {
  uint64_t now = uv_hrtime();
  if (g->due == t) g->due = NULL;
  if (g->last != 0 && now < g->last + g->w->delay) {
    /* Woken early: promote could not arm the timer (out of memory). */
    if (g->due == NULL) promote(g);
    return -1;
  }
  g->last = now;
  if (g->due == NULL) promote(g);
  return 0;
}

void lr_http_gate_leave(lr_http_gate *g, lr_task *t) {
  if (g->due == t) promote(g);
}

static void wake_all(lr_waitq *q) {
  lr_task *t;
  while ((t = q->head) != NULL) lr_task_wake(t, LR_WAKE_CLOSED); /* leaves q */
}

void lr_http_waits_close(lr_http_waits *w) {
  uint32_t i;
  for (i = 0; i < w->cap; i++) {
    lr_http_gate *g = w->gates[i], *next;
    for (; g; g = next) {
      next = g->next;
      wake_all(&g->q);
      free(g);
    }
  }
  free(w->gates);
  w->gates = NULL;
  w->ngates = w->cap = 0;
  wake_all(&w->retry_q);
}

int lr_http_retry_wait(lr_http_waits *w, lr_task *t, double seconds) {
  uint64_t deadline = lr_timer_deadline(seconds);
  lr_waitq_push(&w->retry_q, t);
  if (deadline != UINT64_MAX && lr_timer_add(t->rt, t, deadline) != 0) {
    lr_waitq_remove(&w->retry_q, t);
    return -1;
  }
  return 0;
}

int lr_http_host_key(const char *url, char *out, size_t outlen) {
  CURLU *u = lr_curl.url();
  char *scheme = NULL, *host = NULL, *port = NULL;
  int rc = -1;
  if (u == NULL) return -1;
  if (lr_curl.url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
      lr_curl.url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
      lr_curl.url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      lr_curl.url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
    int n = snprintf(out, outlen, "%s://%s:%s", scheme, host, port);
    if (n > 0 && (size_t)n < outlen) {
      char *p;
      for (p = out; *p; p++) *p = (char)tolower((unsigned char)*p);
      rc = 0;
    }
  }
  lr_curl.free(scheme);
  lr_curl.free(host);
  lr_curl.free(port);
  lr_curl.url_cleanup(u);
  return rc;
}
