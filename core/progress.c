/* progress.c: the progress line of gather and map, on stderr when it is a terminal.
 *
 * One row, redrawn in place: "\r", the text, then ESC[K to erase what a longer text
 * before it left (erasing after writing does not flicker). The text is cut to the
 * terminal's width minus one column, read again at every redraw since windows are
 * resized while a crawl runs: a line that wraps makes "\r" repaint only its last row,
 * and the screen fills with copies. Completions redraw at most once every REDRAW_NS;
 * a repeating timer redraws what they skipped, and every IDLE_NS moves the rate and
 * the ETA while nothing completes. The timer is unref'd, so it never keeps the loop
 * alive (nor hides a deadlock). When stderr is not a terminal nothing is written at
 * all: "\r" redraws in a log file or a CI log come out as thousands of lines.
 *
 * stderr is one per process, and so is the line (a static, which also lets the timer
 * outlive a group whose task is never resumed: the runtime's close closes it). While
 * one group draws, another one (a map inside a map's function, or beside it) draws
 * nothing. Everything here runs on the thread of the loop that started the line;
 * reports written to stderr meanwhile clear it first, through lr_stderr_begin.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "lr_prims.h"

#define REDRAW_NS 100000000ull /* at most ten redraws a second */
#define IDLE_NS 500000000ull   /* with nothing new, redraw for the clock twice a second */
#define TICK_MS 50             /* half the redraw interval: a skipped redraw waits < 150 ms */

struct lr_progress {
  int active;          /* a group owns the line */
  int drawn;           /* its text is on the terminal's row now (not cleared) */
  int dirty;           /* something changed since the last redraw */
  int timer_init;      /* timer was initialised on loop (a runtime's close may close it) */
  int exit_hook;       /* at_exit is registered */
  uv_loop_t *loop;
  uv_timer_t timer;
  uint32_t total, done, failed;
  uint64_t t0, last;   /* uv_hrtime() at the start and at the last redraw */
  char label[LR_PROGRESS_LABEL_MAX + 1];
};

static lr_progress line;

typedef struct text {
  char p[256];
  size_t n;
} text;

static void add(text *t, const char *fmt, ...) {
  va_list ap;
  int k;
  if (t->n >= sizeof t->p - 1) return;
  va_start(ap, fmt);
  k = vsnprintf(t->p + t->n, sizeof t->p - t->n, fmt, ap);
  va_end(ap);
  if (k > 0) t->n += (size_t)k < sizeof t->p - t->n ? (size_t)k : sizeof t->p - t->n - 1;
}

/* "45s", "3m05s", "2h07m"; tenths: "4.2s" under a minute (for the elapsed time; an ETA
 * in tenths only flickers). */
static void add_duration(text *t, double s, int tenths) {
  unsigned long u;
  if (s < 0) s = 0;
  if (s >= 360000) {
    add(t, ">99h");
    return;
  }
  if (tenths && s < 59.95) {
    add(t, "%.1fs", s);
    return;
  }
  u = (unsigned long)(s + 0.999);
  if (u < 60) add(t, "%lus", u);
  else if (u < 3600) add(t, "%lum%02lus", u / 60, u % 60);
  else add(t, "%luh%02lum", u / 3600, u / 60 % 60);
}

/* The line's text: label, counts and failures first, so a narrow terminal keeps them.
 *   running:  "pages 37/100  2 failed  12.3/s  ETA 5s"
 *   at the end: "pages 100/100  2 failed  12.3/s  in 8.1s" (or "stopped after",
 *   "cancelled after") */
static void compose(text *t, int outcome) {
  double elapsed = (double)(uv_hrtime() - line.t0) / 1e9;
  double rate = elapsed > 0 ? line.done / elapsed : 0;
  t->n = 0;
  t->p[0] = '\0';
  if (line.label[0]) add(t, "%s ", line.label);
  add(t, "%lu/%lu", (unsigned long)line.done, (unsigned long)line.total);
  if (line.failed) add(t, "  %lu failed", (unsigned long)line.failed);
  add(t, rate < 100 ? "  %.1f/s  " : "  %.0f/s  ", rate);
  if (outcome < 0) {
    add(t, "ETA ");
    if (line.done >= line.total) add(t, "0s");
    else if (line.done == 0 || rate <= 0) add(t, "?");
    else add_duration(t, (line.total - line.done) / rate, 0);
  } else {
    add(t, outcome == LR_PROGRESS_DONE     ? "in "
           : outcome == LR_PROGRESS_FAILED ? "stopped after "
                                           : "cancelled after ");
    add_duration(t, elapsed, 1);
  }
}

static int width(void) {
  struct winsize ws;
  /* ioctl rather than uv_tty_get_winsize: a uv_tty_t on fd 2 would be a second handle
   * to keep, and libuv may reopen the terminal or change the descriptor's mode. */
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

/* The length of s's longest prefix of at most cols characters, not cutting a UTF-8
 * sequence (each character is taken as one column: wide characters may overrun). */
static size_t fit(const char *s, size_t len, int cols) {
  size_t i;
  int c = 0;
  for (i = 0; i < len; i++) {
    if (((unsigned char)s[i] & 0xC0) != 0x80) {
      if (c == cols) break;
      c++;
    }
  }
  return i;
}

/* outcome < 0: the running line, left on the row; else the final line and a newline. */
static void draw(int outcome) {
  text t;
  size_t n;
  compose(&t, outcome);
  n = fit(t.p, t.n, width() - 1);
  fputs("\r", stderr);
  fwrite(t.p, 1, n, stderr);
  fputs(outcome < 0 ? "\033[K" : "\033[K\n", stderr);
  fflush(stderr);
  line.last = uv_hrtime();
  line.dirty = 0;
  line.drawn = outcome < 0;
}

static void tick_cb(uv_timer_t *h) {
  uint64_t since = uv_hrtime() - line.last;
  (void)h;
  if (line.active && since >= REDRAW_NS && (line.dirty || !line.drawn || since >= IDLE_NS))
    draw(-1);
}

/* lr_stderr_begin/end around a report: clear the line, then let the timer redraw it
 * (not at once: a burst of reports would redraw it once each). */
static void on_stderr(int after) {
  if (!line.active) return;
  if (after) {
    line.dirty = 1;
  } else if (line.drawn) {
    fputs("\r\033[K", stderr);
    fflush(stderr);
    line.drawn = 0;
  }
}

/* The process exits while a line is drawn (os.exit in a task): end it as stopped, so the
 * shell's prompt does not land on its row. */
static void at_exit(void) {
  if (line.active) {
    draw(LR_PROGRESS_FAILED);
    line.active = 0;
  }
}

int lr_progress_opt(lua_State *L, int idx, const char *fname, char *label) {
  int type = lua_getfield(L, idx, "progress"), on = 0;
  label[0] = '\0';
  if (type == LUA_TSTRING) {
    size_t n, i;
    const char *s = lua_tolstring(L, -1, &n);
    if (n > LR_PROGRESS_LABEL_MAX) { /* cut before a character, not inside one */
      n = LR_PROGRESS_LABEL_MAX;
      while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    }
    /* Control characters (a newline, an escape) would break the one-row line. */
    for (i = 0; i < n; i++) label[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? ' ' : s[i];
    label[n] = '\0';
    on = 1;
  } else if (type == LUA_TBOOLEAN) {
    on = lua_toboolean(L, -1);
  } else if (type != LUA_TNIL) {
    luaL_error(L, "%s: opts.progress must be a boolean or a string (got %s)", fname,
               luaL_typename(L, -1));
  }
  lua_pop(L, 1);
  return on;
}

lr_progress *lr_progress_start(lr_runtime *rt, const char *label, uint32_t total) {
  if (uv_guess_handle(STDERR_FILENO) != UV_TTY) return NULL;
  /* A timer closed by its runtime's close: the runtime is gone, and with it a group
   * that held the line and never ended. */
  if (line.timer_init && uv_is_closing((uv_handle_t *)&line.timer)) {
    line.timer_init = 0;
    line.active = 0;
  }
  if (line.active) return NULL; /* another group's line is drawn */
  if (!line.exit_hook) line.exit_hook = atexit(at_exit) == 0;
  if (line.timer_init && line.loop != &rt->loop) return NULL; /* another runtime's, open */
  if (!line.timer_init) {
    if (uv_timer_init(&rt->loop, &line.timer) != 0) return NULL;
    uv_unref((uv_handle_t *)&line.timer);
    line.loop = &rt->loop;
    line.timer_init = 1;
  }
  if (uv_timer_start(&line.timer, tick_cb, TICK_MS, TICK_MS) != 0) return NULL;
  snprintf(line.label, sizeof line.label, "%s", label ? label : "");
  line.total = total;
  line.done = line.failed = 0;
  line.t0 = uv_hrtime();
  line.active = 1;
  lr_stderr_set_hook(on_stderr);
  draw(-1);
  return &line;
}

void lr_progress_step(lr_progress *p, int failed) {
  if (p != &line || !line.active) return;
  line.done++;
  if (failed) line.failed++;
  if (uv_hrtime() - line.last >= REDRAW_NS) draw(-1);
  else line.dirty = 1;
}

void lr_progress_end(lr_progress *p, int outcome) {
  if (p != &line || !line.active) return;
  uv_timer_stop(&line.timer); /* kept, stopped, for the next line on this loop */
  draw(outcome);
  line.active = 0;
}
