/* trace.c: the timeline (--trace FILE, LUARUN_TRACE=FILE), an observer of the
 * scheduler (sched_hooks.c).
 *
 * While a trace is on, its hooks record spans into one array of events, and the file
 * is written at the end of each run: Chrome's trace-event JSON (Perfetto,
 * chrome://tracing), or, for a path ending in .html, a self-contained page drawing
 * the same events as a waterfall (lua/luarun/trace_html.lua).
 *
 * One track per task (tid = task id, named after the task). On it, properly nested:
 * the task's life [spawn, done]; "run" slices [resume, yield]; and between two runs
 * the wait, named and labelled by the description its subsystem gave (a sleep, an
 * HTTP request, a pool job, a file call: whatever lr_wait_describe said), or "wait"
 * for anything else (gather, task:wait, a queue...). A wait described inside a run
 * (the primitive describes it just before it parks) starts at the yield, so that it
 * never overlaps the run slice. Runs and unlabelled waits shorter than MIN_SLICE_NS
 * are left out, or a crawler's trace would be mostly noise. Nothing here knows any
 * subsystem: a new one is traced by describing its waits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "lr_observe.h"

#define MIN_SLICE_NS 100000 /* 0.1 ms */

typedef struct lr_trace lr_trace;

enum { EV_WAIT, EV_SPAN, EV_TASK, EV_RUN };

typedef struct ev {
  uint64_t start, end;   /* hrtime; end 0 while open */
  uint32_t tid;
  uint8_t kind;          /* EV_* */
  uint8_t result;        /* task: LR_RES_* */
  uint32_t parent;       /* task: spawned by (task id) */
  const char *cat;       /* span: the wait's kind (a static string) */
  char *name;            /* owned: task name, span name, what a wait is on, or NULL */
  lr_wait_arg *args;     /* owned (with their strings): a span's arguments */
  int nargs;
} ev;

/* Per task id: what is open on its track. */
typedef struct tstate {
  uint64_t spawn, run_start, wait_start;
  char *what;            /* owned: what the open unlabelled wait is on, or NULL */
  uint32_t open;         /* index + 1 of its open described span, or 0 */
  uint32_t parent;
  uint8_t waiting;       /* an unlabelled wait is open since wait_start */
  uint8_t spawned, done;
} tstate;

struct lr_trace {
  lr_runtime *rt;
  char *path;
  int html;
  uint64_t t0;
  ev *evs;
  size_t nev, capev;
  tstate *ts;
  uint32_t capts;
};

static const char trace_id = 't'; /* how the trace finds itself among the observers */

static char *dup_str(const char *s) {
  return s ? strdup(s) : NULL;
}

static tstate *task_state(lr_trace *tr, uint32_t id) {
  if (id >= tr->capts) {
    uint32_t cap = tr->capts ? tr->capts : 256;
    tstate *p;
    while (cap <= id) cap *= 2;
    p = realloc(tr->ts, cap * sizeof *p);
    if (p == NULL) return NULL;
    memset(p + tr->capts, 0, (cap - tr->capts) * sizeof *p);
    tr->ts = p;
    tr->capts = cap;
  }
  return &tr->ts[id];
}

/* Appends an event; returns its index, or -1 on out-of-memory (the event is lost). */
static long add_ev(lr_trace *tr, int kind, uint32_t tid, uint64_t start, uint64_t end) {
  ev *e;
  if (tr->nev == tr->capev) {
    size_t cap = tr->capev ? tr->capev * 2 : 1024;
    ev *p = realloc(tr->evs, cap * sizeof *p);
    if (p == NULL) return -1;
    tr->evs = p;
    tr->capev = cap;
  }
  e = &tr->evs[tr->nev];
  memset(e, 0, sizeof *e);
  e->kind = (uint8_t)kind;
  e->tid = tid;
  e->start = start;
  e->end = end;
  return (long)tr->nev++;
}

static void free_args(lr_wait_arg *a, int n) {
  int i;
  for (i = 0; i < n; i++) free((char *)a[i].s);
  free(a);
}

/* Gives event i the description d: its kind, name and a copy of its arguments. */
static void describe(lr_trace *tr, long i, const lr_wait_desc *d) {
  ev *e = &tr->evs[i];
  int k;
  e->cat = d->kind;
  free(e->name);
  e->name = dup_str(d->name); /* NULL: the kind names it (no copy for every sleep) */
  free_args(e->args, e->nargs);
  e->nargs = 0;
  if (d->nargs > 0 && (e->args = calloc((size_t)d->nargs, sizeof *e->args)) != NULL) {
    for (k = 0; k < d->nargs; k++) {
      e->args[k] = d->args[k];
      e->args[k].s = dup_str(d->args[k].s);
    }
    e->nargs = d->nargs;
  }
}

/* Ends whatever wait is open on the task's track at now. */
static void close_open(lr_trace *tr, tstate *s, uint32_t tid, uint64_t now) {
  if (s->open) {
    ev *e = &tr->evs[s->open - 1];
    if (e->end == 0) e->end = now;
    s->open = 0;
  }
  if (s->waiting) {
    long i = -1;
    s->waiting = 0;
    if (now - s->wait_start >= MIN_SLICE_NS) i = add_ev(tr, EV_WAIT, tid, s->wait_start, now);
    if (i >= 0) tr->evs[i].name = s->what;
    else free(s->what);
    s->what = NULL;
  }
}

/* ---- the hooks ---- */

static void on_resume(void *ud, lr_task *t) {
  lr_trace *tr = ud;
  tstate *s = task_state(tr, t->id);
  uint64_t now = uv_hrtime();
  if (s == NULL) return;
  close_open(tr, s, t->id, now);
  s->run_start = now;
}

static void on_yield(void *ud, lr_task *t) {
  lr_trace *tr = ud;
  tstate *s = task_state(tr, t->id);
  uint64_t now = uv_hrtime();
  if (s == NULL) return;
  if (now - s->run_start >= MIN_SLICE_NS) add_ev(tr, EV_RUN, t->id, s->run_start, now);
  if (lua_status(t->co) != LUA_YIELD) return; /* finished: no wait follows */
  if (s->open) {
    tr->evs[s->open - 1].start = now;
  } else {
    s->waiting = 1;
    s->wait_start = now;
    if (t->state == LR_PARKED) { /* say on what: "Queue:get, queue empty" */
      lr_runtime *rt = tr->rt;
      lr_task_push_waiting(rt->L, t);
      s->what = dup_str(lua_tostring(rt->L, -1));
      lua_pop(rt->L, 1);
    }
  }
}

static void on_spawn(void *ud, lr_task *t) {
  lr_trace *tr = ud;
  tstate *s = task_state(tr, t->id);
  if (s == NULL) return;
  s->spawn = uv_hrtime();
  s->spawned = 1;
  s->parent = tr->rt->current ? tr->rt->current->id : 0;
}

static void on_done(void *ud, lr_task *t) {
  lr_trace *tr = ud;
  tstate *s = task_state(tr, t->id);
  uint64_t now = uv_hrtime();
  long i;
  if (s == NULL || !s->spawned) return;
  close_open(tr, s, t->id, now);
  s->done = 1;
  if ((i = add_ev(tr, EV_TASK, t->id, s->spawn, now)) < 0) return;
  tr->evs[i].result = t->result;
  tr->evs[i].parent = s->parent;
  lr_report_push_taskname(tr->rt->L, t);
  tr->evs[i].name = dup_str(lua_tostring(tr->rt->L, -1));
  lua_pop(tr->rt->L, 1);
}

/* t is about to wait on d: a span opens (it starts at the yield that follows). */
static void on_wait(void *ud, lr_task *t, const lr_wait_desc *d) {
  lr_trace *tr = ud;
  tstate *s = task_state(tr, t->id);
  uint64_t now = uv_hrtime();
  long i;
  if (s == NULL) return;
  close_open(tr, s, t->id, now); /* one wait at a time: a stale one ends here */
  if ((i = add_ev(tr, EV_SPAN, t->id, now, 0)) < 0) return;
  s->open = (uint32_t)i + 1;
  describe(tr, i, d);
}

/* t's wait ended with an outcome. A description with its own times (an HTTP
 * transfer) becomes the span [start, end], taking the place of the unlabelled wait
 * it overlaps; one without only closes the open span (a wait that never parked). */
static void on_wait_end(void *ud, lr_task *t, const lr_wait_desc *d) {
  lr_trace *tr = ud;
  tstate *s = task_state(tr, t->id);
  uint64_t now = uv_hrtime(), start;
  long i;
  if (s == NULL) return;
  if (d->start == 0) {
    close_open(tr, s, t->id, now);
    return;
  }
  start = s->waiting && s->wait_start > d->start ? s->wait_start : d->start;
  s->waiting = 0;
  free(s->what);
  s->what = NULL;
  if (s->open) close_open(tr, s, t->id, now);
  if ((i = add_ev(tr, EV_SPAN, t->id, start, d->end ? d->end : now)) < 0) return;
  s->open = (uint32_t)i + 1;
  describe(tr, i, d);
}

static void write_file(lr_trace *tr);

static void on_run_end(void *ud, lr_runtime *rt) {
  (void)rt;
  write_file(ud);
}

static void on_close(void *ud, lr_runtime *rt) {
  lr_trace *tr = ud;
  size_t i;
  (void)rt;
  for (i = 0; i < tr->nev; i++) {
    free(tr->evs[i].name);
    free_args(tr->evs[i].args, tr->evs[i].nargs);
  }
  free(tr->evs);
  for (i = 0; i < tr->capts; i++) free(tr->ts[i].what);
  free(tr->ts);
  free(tr->path);
  free(tr);
}

int lr_trace_open(lr_runtime *rt, const char *path) {
  lr_trace *tr = lr_observer_ud(rt, &trace_id);
  size_t n = strlen(path);
  char *p = strdup(path);
  if (p == NULL) return -1;
  if (tr == NULL) {
    lr_observer o = {&trace_id, NULL, on_spawn, on_resume, on_yield, on_wait, on_wait_end,
                     on_done, on_run_end, on_close};
    if ((tr = calloc(1, sizeof *tr)) == NULL) {
      free(p);
      return -1;
    }
    tr->rt = rt;
    tr->t0 = uv_hrtime();
    o.ud = tr;
    if (lr_observer_add(rt, &o) != 0) {
      free(tr);
      free(p);
      return -1;
    }
  }
  free(tr->path);
  tr->path = p;
  tr->html = n >= 5 && strcasecmp(path + n - 5, ".html") == 0;
  return 0;
}

/* ---- writing ---- */

typedef struct sbuf {
  char *p;
  size_t n, cap;
  int oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 65536;
    char *p;
    while (cap < b->n + n + 1) cap *= 2;
    if ((p = realloc(b->p, cap)) == NULL) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

static void puts_(sbuf *b, const char *s) {
  put(b, s, strlen(s));
}

static void putf(sbuf *b, const char *fmt, double v) {
  char tmp[64];
  int n = snprintf(tmp, sizeof tmp, fmt, v);
  put(b, tmp, (size_t)n);
}

static void puti(sbuf *b, long long v) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%lld", v);
  put(b, tmp, (size_t)n);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static int utf8_len(const unsigned char *s) {
  unsigned c = s[0];
  int n, i;
  unsigned cp;
  if (c < 0xc2) return 0;
  if (c < 0xe0) n = 2, cp = c & 0x1f;
  else if (c < 0xf0) n = 3, cp = c & 0x0f;
  else if (c < 0xf5) n = 4, cp = c & 0x07;
  else return 0;
  for (i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
      (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
    return 0;
  return n;
}

/* A JSON string. <, > and & are escaped too, so the text can sit inside an HTML
 * <script> element; bytes that are not UTF-8 become U+FFFD. */
static void put_str(sbuf *b, const char *s) {
  const unsigned char *p = (const unsigned char *)(s ? s : "");
  char tmp[8];
  put(b, "\"", 1);
  while (*p) {
    unsigned c = *p;
    int n;
    if (c == '"') put(b, "\\\"", 2), p++;
    else if (c == '\\') put(b, "\\\\", 2), p++;
    else if (c == '\n') put(b, "\\n", 2), p++;
    else if (c == '\t') put(b, "\\t", 2), p++;
    else if (c < 0x20 || c == '<' || c == '>' || c == '&' || c == 0x7f) {
      snprintf(tmp, sizeof tmp, "\\u%04x", c);
      put(b, tmp, 6);
      p++;
    } else if (c < 0x80) {
      put(b, (const char *)p, 1);
      p++;
    } else if ((n = utf8_len(p)) > 0) {
      put(b, (const char *)p, (size_t)n);
      p += n;
    } else {
      put(b, "\\ufffd", 6);
      p++;
    }
  }
  put(b, "\"", 1);
}

static void put_key(sbuf *b, const char *k) {
  put(b, ",\"", 2);
  puts_(b, k);
  put(b, "\":", 2);
}

static const char *result_name(int r) {
  return r == LR_RES_OK ? "ok" : r == LR_RES_FAILED ? "failed" :
         r == LR_RES_CANCELLED ? "cancelled" : "unfinished";
}

static const char *cat_of(const ev *e) {
  switch (e->kind) {
    case EV_SPAN: return e->cat;
    case EV_TASK: return "task";
    case EV_RUN: return "run";
    default: return "wait";
  }
}

static void write_arg(sbuf *b, const lr_wait_arg *a) {
  put_key(b, a->key);
  if (a->s) put_str(b, a->s);
  else if (a->is_int == 2) puts_(b, a->n != 0 ? "true" : "false");
  else if (a->is_int) puti(b, (long long)a->n);
  else putf(b, "%.6g", a->n);
}

static void write_event(sbuf *b, lr_trace *tr, const ev *e, uint64_t now) {
  uint64_t end = e->end ? e->end : now;
  int i;
  put(b, ",\n{\"name\":", 10);
  put_str(b, e->kind == EV_SPAN || e->kind == EV_TASK ? (e->name ? e->name : cat_of(e))
                                                      : cat_of(e));
  puts_(b, ",\"cat\":");
  put_str(b, cat_of(e));
  puts_(b, ",\"ph\":\"X\",\"pid\":1,\"tid\":");
  puti(b, e->tid);
  putf(b, ",\"ts\":%.3f", (double)(e->start - tr->t0) / 1e3);
  putf(b, ",\"dur\":%.3f", end > e->start ? (double)(end - e->start) / 1e3 : 0.0);
  puts_(b, ",\"args\":{\"task\":");
  puti(b, e->tid);
  switch (e->kind) {
    case EV_TASK:
      put_key(b, "name");
      put_str(b, e->name);
      put_key(b, "result");
      put_str(b, result_name(e->result));
      if (e->parent) put_key(b, "spawned_by"), puti(b, e->parent);
      break;
    case EV_WAIT:
      if (e->name) put_key(b, "on"), put_str(b, e->name);
      break;
    case EV_SPAN:
      for (i = 0; i < e->nargs; i++) write_arg(b, &e->args[i]);
      break;
  }
  puts_(b, "}}");
}

static void write_meta(sbuf *b, uint32_t tid, const char *name) {
  puts_(b, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":");
  puti(b, tid);
  puts_(b, ",\"args\":{\"name\":");
  put_str(b, name);
  puts_(b, "}},\n{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":1,\"tid\":");
  puti(b, tid);
  puts_(b, ",\"args\":{\"sort_index\":");
  puti(b, tid);
  puts_(b, "}}");
}

static void trace_json(lr_trace *tr, sbuf *b) {
  uint64_t now = uv_hrtime();
  size_t i;
  uint32_t id;
  puts_(b, "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"generator\":\"luarun " LUARUN_VERSION
           "\"},\n\"traceEvents\":[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,"
           "\"tid\":0,\"args\":{\"name\":\"luarun\"}}");
  for (i = 0; i < tr->nev; i++) {
    const ev *e = &tr->evs[i];
    if (e->kind == EV_TASK) write_meta(b, e->tid, e->name);
    write_event(b, tr, e, now);
  }
  /* Tasks still alive (a deadlock, or a run that raised): their life so far. */
  for (id = 1; id < tr->capts; id++) {
    const tstate *s = &tr->ts[id];
    char name[48];
    ev e;
    if (!s->spawned || s->done) continue;
    snprintf(name, sizeof name, "task %u (unfinished)", (unsigned)id);
    memset(&e, 0, sizeof e);
    e.kind = EV_TASK;
    e.tid = id;
    e.start = s->spawn;
    e.name = name;
    e.parent = s->parent;
    write_meta(b, id, name);
    write_event(b, tr, &e, now);
  }
  puts_(b, "\n]}\n");
}

/* Stack: json text. Returns the page: require("luarun.trace_html")(json). */
static int html_page(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "luarun.trace_html");
  lua_call(L, 1, 1);
  lua_insert(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

static void write_file(lr_trace *tr) {
  lua_State *L = tr->rt->L;
  sbuf b = {NULL, 0, 0, 0};
  const char *out;
  size_t n;
  FILE *f;
  int top = lua_gettop(L);
  trace_json(tr, &b);
  if (b.oom) {
    fprintf(stderr, "luarun: trace: out of memory writing %s\n", tr->path);
    free(b.p);
    return;
  }
  out = b.p;
  n = b.n;
  if (tr->html) {
    lua_pushcfunction(L, html_page);
    lua_pushlstring(L, b.p, b.n);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
      fprintf(stderr, "luarun: trace: cannot make the page: %s\n",
              lua_isstring(L, -1) ? lua_tostring(L, -1) : "(no page)");
      lua_settop(L, top);
      free(b.p);
      return;
    }
    out = lua_tolstring(L, -1, &n);
  }
  f = fopen(tr->path, "wb");
  if (f != NULL) {
    int bad = fwrite(out, 1, n, f) != n;
    if (fclose(f) != 0) bad = 1;
    if (bad) f = NULL;
  }
  if (f == NULL)
    fprintf(stderr, "luarun: trace: cannot write %s: %s\n", tr->path, strerror(errno));
  lua_settop(L, top);
  free(b.p);
}

/* ---- setup from the environment ---- */

void lr_observe_init(lr_runtime *rt) {
  const char *trace = getenv("LUARUN_TRACE");
  const char *debug = getenv("LUARUN_DEBUG");
  const char *ms = getenv("LUARUN_DEBUG_MS");
  if (trace && *trace) lr_trace_open(rt, trace);
  if ((debug && *debug && strcmp(debug, "0") != 0) || (ms && *ms)) {
    long v = ms && *ms ? strtol(ms, NULL, 10) : 0;
    lr_watchdog_start(rt, v > 0 ? (unsigned)v : 0);
  }
}
