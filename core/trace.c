/* trace.c: the timeline (--trace FILE, LUARUN_TRACE=FILE).
 *
 * While a trace is on, the scheduler and the waits record spans into one array of
 * events, and the file is written at the end of the run: Chrome's trace-event JSON
 * (Perfetto, chrome://tracing), or, for a path ending in .html, a self-contained page
 * drawing the same events as a waterfall (lua/luarun/trace_html.lua).
 *
 * One track per task (tid = task id, named after the task). On it, properly nested:
 * the task's life [spawn, done]; "run" slices [resume, yield]; and between two runs
 * the wait, labelled by what the task waited on (sleep, HTTP, pool, file call) or
 * "wait" for anything else (gather, task:wait, a queue...). A wait opened inside a
 * run (the primitive records it just before it parks) starts at the yield, so that
 * it never overlaps the run slice. Runs and unlabelled waits shorter than
 * MIN_SLICE_NS are left out, or a crawler's trace would be mostly noise.
 *
 * Off, none of this runs: every hook site tests rt->trace (or rt->observe) first.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "luarun.h"
#include "curl_api.h"

#define MIN_SLICE_NS 100000 /* 0.1 ms */

typedef struct lr_trace lr_trace;

enum { EV_TASK = 16, EV_RUN };

typedef struct ev {
  uint64_t start, end;   /* hrtime; end 0 while open */
  uint32_t tid;
  uint8_t kind;          /* LR_TRACE_* or EV_* */
  uint8_t flag;          /* http: cancelled; task: result */
  int32_t status;        /* http status; task: spawned by (task id) */
  int64_t bytes;
  double x, y;           /* sleep: seconds; http: connect and first-byte (s) */
  char *s1, *s2, *s3;    /* owned: see write_event */
} ev;

/* Per task id: what is open on its track. */
typedef struct tstate {
  uint64_t spawn, run_start, wait_start;
  char *what;            /* owned: what the open unlabelled wait is on, or NULL */
  uint32_t open;         /* index + 1 of its open labelled span, or 0 */
  uint32_t parent;
  uint8_t waiting;       /* an unlabelled wait is open since wait_start */
  uint8_t spawned, done;
} tstate;

struct lr_trace {
  char *path;
  int html;
  uint64_t t0;
  ev *evs;
  size_t nev, capev;
  tstate *ts;
  uint32_t capts;
};

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
    if (now - s->wait_start >= MIN_SLICE_NS) i = add_ev(tr, LR_TRACE_WAIT, tid, s->wait_start, now);
    if (i >= 0) tr->evs[i].s1 = s->what;
    else free(s->what);
    s->what = NULL;
  }
}

/* ---- opening and closing ---- */

static void free_trace(lr_runtime *rt);

int lr_trace_open(lr_runtime *rt, const char *path) {
  lr_trace *tr = rt->trace;
  size_t n = strlen(path);
  char *p = strdup(path);
  if (p == NULL) return -1;
  if (tr == NULL) {
    if ((tr = calloc(1, sizeof *tr)) == NULL) {
      free(p);
      return -1;
    }
    tr->t0 = uv_hrtime();
    rt->trace = tr;
    lr_runtime_on_close(rt, free_trace);
  }
  free(tr->path);
  tr->path = p;
  tr->html = n >= 5 && strcasecmp(path + n - 5, ".html") == 0;
  rt->observe = 1;
  return 0;
}

static void free_trace(lr_runtime *rt) {
  lr_trace *tr = rt->trace;
  size_t i;
  if (tr == NULL) return;
  for (i = 0; i < tr->nev; i++) {
    free(tr->evs[i].s1);
    free(tr->evs[i].s2);
    free(tr->evs[i].s3);
  }
  free(tr->evs);
  for (i = 0; i < tr->capts; i++) free(tr->ts[i].what);
  free(tr->ts);
  free(tr->path);
  free(tr);
  rt->trace = NULL;
  rt->observe = rt->watchdog != NULL;
}

/* ---- the hooks ---- */

void lr_observe_resume(lr_runtime *rt, lr_task *t) {
  if (rt->watchdog) lr_watchdog_resume(rt, t);
  if (rt->trace) {
    lr_trace *tr = rt->trace;
    tstate *s = task_state(tr, t->id);
    uint64_t now = uv_hrtime();
    if (s == NULL) return;
    close_open(tr, s, t->id, now);
    s->run_start = now;
  }
}

void lr_observe_yield(lr_runtime *rt, lr_task *t) {
  if (rt->trace) {
    lr_trace *tr = rt->trace;
    tstate *s = task_state(tr, t->id);
    uint64_t now = uv_hrtime();
    if (s != NULL) {
      if (now - s->run_start >= MIN_SLICE_NS) add_ev(tr, EV_RUN, t->id, s->run_start, now);
      if (lua_status(t->co) == LUA_YIELD) { /* parked (not finished): a wait begins */
        if (s->open) {
          tr->evs[s->open - 1].start = now;
        } else {
          s->waiting = 1;
          s->wait_start = now;
          if (t->state == LR_PARKED) { /* say on what: "Queue:get, queue empty" */
            lr_task_push_waiting(rt->L, t);
            s->what = dup_str(lua_tostring(rt->L, -1));
            lua_pop(rt->L, 1);
          }
        }
      }
    }
  }
  if (rt->watchdog) lr_watchdog_yield(rt, t);
}

void lr_trace_spawn(lr_runtime *rt, lr_task *t) {
  tstate *s = task_state(rt->trace, t->id);
  if (s == NULL) return;
  s->spawn = uv_hrtime();
  s->spawned = 1;
  s->parent = rt->current ? rt->current->id : 0;
}

void lr_trace_done(lr_runtime *rt, lr_task *t) {
  lr_trace *tr = rt->trace;
  tstate *s = task_state(tr, t->id);
  uint64_t now = uv_hrtime();
  long i;
  if (s == NULL || !s->spawned) return;
  close_open(tr, s, t->id, now);
  s->done = 1;
  if ((i = add_ev(tr, EV_TASK, t->id, s->spawn, now)) < 0) return;
  tr->evs[i].flag = t->result;
  tr->evs[i].status = (int32_t)s->parent;
  lr_report_push_taskname(rt->L, t);
  tr->evs[i].s1 = dup_str(lua_tostring(rt->L, -1));
  lua_pop(rt->L, 1);
}

static long begin(lr_task *t, int kind) {
  lr_trace *tr = t->rt->trace;
  tstate *s = task_state(tr, t->id);
  uint64_t now = uv_hrtime();
  long i;
  if (s == NULL) return -1;
  close_open(tr, s, t->id, now); /* one wait at a time: a stale one ends here */
  if ((i = add_ev(tr, kind, t->id, now, 0)) >= 0) s->open = (uint32_t)i + 1;
  return i;
}

void lr_trace_begin(lr_task *t, int kind, const char *s1, const char *s2, double x) {
  long i = begin(t, kind);
  ev *e;
  if (i < 0) return;
  e = &t->rt->trace->evs[i];
  e->s1 = dup_str(s1);
  e->s2 = dup_str(s2);
  e->x = x;
}

void lr_trace_end(lr_task *t) {
  lr_trace *tr = t->rt->trace;
  tstate *s = task_state(tr, t->id);
  if (s) close_open(tr, s, t->id, uv_hrtime());
}

static const char *fs_op_name(int op) {
  static const char *const names[] = {
    "?", "open", "close", "read", "write", "sync", "fstat", "stat", "lstat", "readdir",
    "mkdir", "mkdir", "remove", "rmdir", "rename", "copyfile", "mkdtemp", "read_file",
    "write_file", "exists"
  };
  return op > 0 && op < (int)(sizeof names / sizeof names[0]) ? names[op] : "?";
}

void lr_trace_fs(lr_fs *r) {
  long i = begin(r->task, LR_TRACE_FS);
  ev *e;
  if (i < 0) return;
  e = &r->rt->trace->evs[i];
  e->s1 = dup_str(fs_op_name(r->op));
  e->s2 = dup_str(r->path ? r->path : (r->file ? r->file->path : NULL));
  if (r->op == LR_FS_RENAME || r->op == LR_FS_COPYFILE) e->s3 = dup_str(r->path2);
}

/* The task is parked on the request: its unlabelled wait becomes the request's span. */
void lr_trace_http(struct lr_http_req *r, int cancelled) {
  lr_task *t = r->task;
  lr_trace *tr;
  tstate *s;
  ev *e;
  char *url = NULL, *method = NULL;
  long code = 0, i;
  curl_off_t connect = 0, first = 0;
  uint64_t start;
  if (t == NULL || (s = task_state(tr = t->rt->trace, t->id)) == NULL) return;
  start = s->waiting && s->wait_start > r->started ? s->wait_start : r->started;
  s->waiting = 0;
  free(s->what);
  s->what = NULL;
  if (s->open) close_open(tr, s, t->id, uv_hrtime());
  if ((i = add_ev(tr, LR_TRACE_HTTP, t->id, start, r->finished ? r->finished : uv_hrtime())) < 0)
    return;
  s->open = (uint32_t)i + 1;
  e = &tr->evs[i];
  lr_curl.easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url);
  lr_curl.easy_getinfo(r->easy, CURLINFO_EFFECTIVE_METHOD, &method);
  lr_curl.easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
  lr_curl.easy_getinfo(r->easy, CURLINFO_CONNECT_TIME_T, &connect);
  lr_curl.easy_getinfo(r->easy, CURLINFO_STARTTRANSFER_TIME_T, &first);
  e->s1 = dup_str(method ? method : "GET");
  e->s2 = dup_str(url);
  e->status = (int32_t)code;
  e->bytes = (int64_t)r->received;
  e->x = (double)connect / 1e6;
  e->y = (double)first / 1e6;
  e->flag = (uint8_t)cancelled;
  if (!cancelled && r->done && r->result != CURLE_OK)
    e->s3 = dup_str(r->errbuf[0] ? r->errbuf : lr_curl.easy_strerror(r->result));
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

static const char *kind_name(int kind) {
  switch (kind) {
    case LR_TRACE_SLEEP: return "sleep";
    case LR_TRACE_POOL: return "pool";
    case LR_TRACE_FS: return "fs";
    case LR_TRACE_HTTP: return "http";
    case EV_TASK: return "task";
    case EV_RUN: return "run";
    default: return "wait";
  }
}

static const char *result_name(int r) {
  return r == LR_RES_OK ? "ok" : r == LR_RES_FAILED ? "failed" :
         r == LR_RES_CANCELLED ? "cancelled" : "unfinished";
}

static void write_event(sbuf *b, lr_trace *tr, const ev *e, uint64_t now) {
  uint64_t end = e->end ? e->end : now;
  put(b, ",\n{\"name\":", 10);
  switch (e->kind) {
    case LR_TRACE_SLEEP: puts_(b, "\"sleep\""); break;
    case LR_TRACE_POOL: puts_(b, "\"run_in_pool\""); break;
    case LR_TRACE_FS: put_str(b, e->s1); break;
    case LR_TRACE_HTTP: {
      size_t n = strlen(e->s1 ? e->s1 : "") + strlen(e->s2 ? e->s2 : "") + 2;
      char *name = malloc(n);
      if (name) snprintf(name, n, "%s %s", e->s1 ? e->s1 : "", e->s2 ? e->s2 : "");
      put_str(b, name ? name : "http");
      free(name);
      break;
    }
    default: put_str(b, kind_name(e->kind)); break;
  }
  puts_(b, ",\"cat\":");
  put_str(b, kind_name(e->kind));
  puts_(b, ",\"ph\":\"X\",\"pid\":1,\"tid\":");
  puti(b, e->tid);
  putf(b, ",\"ts\":%.3f", (double)(e->start - tr->t0) / 1e3);
  putf(b, ",\"dur\":%.3f", end > e->start ? (double)(end - e->start) / 1e3 : 0.0);
  puts_(b, ",\"args\":{\"task\":");
  puti(b, e->tid);
  switch (e->kind) {
    case EV_TASK:
      put_key(b, "name");
      put_str(b, e->s1);
      put_key(b, "result");
      put_str(b, result_name(e->flag));
      if (e->status) put_key(b, "spawned_by"), puti(b, e->status);
      break;
    case LR_TRACE_SLEEP:
      put_key(b, "seconds");
      putf(b, "%.6g", e->x);
      break;
    case LR_TRACE_WAIT:
      if (e->s1) put_key(b, "on"), put_str(b, e->s1);
      break;
    case LR_TRACE_POOL:
      put_key(b, "function");
      put_str(b, e->s1 ? e->s1 : "(function)");
      break;
    case LR_TRACE_FS:
      put_key(b, "op");
      put_str(b, e->s1);
      if (e->s2) put_key(b, "path"), put_str(b, e->s2);
      if (e->s3) put_key(b, "to"), put_str(b, e->s3);
      break;
    case LR_TRACE_HTTP:
      put_key(b, "method");
      put_str(b, e->s1);
      put_key(b, "url");
      put_str(b, e->s2);
      put_key(b, "status");
      puti(b, e->status);
      put_key(b, "bytes");
      puti(b, e->bytes);
      put_key(b, "connect_ms");
      putf(b, "%.3f", e->x * 1e3);
      put_key(b, "first_byte_ms");
      putf(b, "%.3f", e->y * 1e3);
      if (e->flag) put_key(b, "cancelled"), puts_(b, "true");
      if (e->s3) put_key(b, "error"), put_str(b, e->s3);
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
    if (e->kind == EV_TASK) write_meta(b, e->tid, e->s1);
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
    e.s1 = name;
    e.status = (int32_t)s->parent;
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

void lr_trace_write(lr_runtime *rt) {
  lr_trace *tr = rt->trace;
  lua_State *L = rt->L;
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
