/* cli.c: the luarun executable.
 *
 *   luarun script.lua [args...] | luarun -e CODE [args...] | luarun - [args...]
 *
 * The chunk runs as the main task; the process exits when it and every task it
 * spawned are done: 0, or 1 after an uncaught or unhandled error, 130 after Ctrl-C,
 * 143 after SIGTERM.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lualib.h>
#include "luarun.h"
#include "../bindings/bindings.h"

static const char *progname = "luarun";

/* LeakSanitizer's check, when the executable is built with it (it runs at exit(),
 * which an abandoned runtime skips). */
extern void __lsan_do_leak_check(void) __attribute__((weak));

static void usage(FILE *f) {
  fprintf(f,
    "usage: %s [options] [script.lua [args...]]\n"
    "Runs a Lua 5.4 script as a task on an event loop (luarun %s).\n"
    "  script.lua   the script to run ('-', or no script with standard input not a\n"
    "               terminal: read it from standard input)\n"
    "  -e CODE      run CODE instead of a script\n"
    "  --debug[=MS] report tasks that run longer than MS (default 100) without\n"
    "               yielding, with where they are stuck (also LUARUN_DEBUG=1,\n"
    "               LUARUN_DEBUG_MS=MS)\n"
    "  --trace FILE write a timeline of the tasks at exit: Chrome trace JSON for\n"
    "               Perfetto, or a waterfall page if FILE ends in .html (also\n"
    "               LUARUN_TRACE=FILE)\n"
    "  -v, --version  print the version\n"
    "  -h, --help     print this help\n"
    "Modules: luarun (tasks, sleep, gather, map, timeout, scope, locks, queues,\n"
    "run_in_pool), luarun.http (HTTP client and server), luarun.db (SQLite,\n"
    "PostgreSQL), luarun.fs (files), luarun.html (HTML, CSS, XPath), luarun.json.\n"
    "Exit status: 0; 1 after an uncaught error; 130 after Ctrl-C; 143 after SIGTERM\n"
    "(both cancel the tasks first, so their cleanup runs).\n"
    "Manual: docs/ in the source tree (docs/README.md), and man luarun.\n",
    progname, LUARUN_VERSION);
}

struct opts {
  const char *code;   /* -e */
  int script;         /* index in argv of the script (or "-"), 0 if none */
  int first_arg;      /* index in argv of the first script argument */
  int debug;          /* --debug: 1 + threshold in ms (0: off) */
  const char *trace;  /* --trace FILE */
  int stdin_script;   /* no script named: standard input is the script */
};

/* Returns 0 to run, 1 when done (help/version), -1 on a usage error. */
static int parse(int argc, char **argv, struct opts *o) {
  int i;
  memset(o, 0, sizeof *o);
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 1;
    } else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
      printf("luarun %s (%s, libuv %s)\n", LUARUN_VERSION, LUA_RELEASE, uv_version_string());
      return 1;
    } else if (strcmp(a, "-e") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "%s: '-e' needs an argument\n", progname);
        return -1;
      }
      o->code = argv[++i];
      o->first_arg = i + 1;
      return 0;
    } else if (strcmp(a, "--debug") == 0 || strncmp(a, "--debug=", 8) == 0) {
      char *end = NULL;
      long ms = a[7] ? strtol(a + 8, &end, 10) : 0;
      if (a[7] && (end == a + 8 || *end || ms < 1 || ms > 3600000)) {
        fprintf(stderr, "%s: '--debug=MS' needs a number of milliseconds\n", progname);
        return -1;
      }
      o->debug = 1 + (int)ms;
    } else if (strcmp(a, "--trace") == 0 || strncmp(a, "--trace=", 8) == 0) {
      if (a[7] == '\0' && i + 1 >= argc) {
        fprintf(stderr, "%s: '--trace' needs a file name\n", progname);
        return -1;
      }
      o->trace = a[7] ? a + 8 : argv[++i];
    } else if (strcmp(a, "--") == 0) {
      if (i + 1 < argc) o->script = i + 1;
      break;
    } else if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "%s: unknown option '%s'\n", progname, a);
      usage(stderr);
      return -1;
    } else {
      o->script = i;
      break;
    }
  }
  if (!o->code && !o->script) {
    /* No script: standard input is the script, as with lua(1), unless it is a
     * terminal (the help, until there is a prompt). */
    if (isatty(STDIN_FILENO)) {
      usage(stderr);
      return -1;
    }
    o->stdin_script = 1;
    o->first_arg = argc;
    return 0;
  }
  o->first_arg = o->script + 1;
  return 0;
}

/* The global `arg`, as lua(1) builds it: arg[0] the script, arg[-1] the program. */
static void make_arg_table(lua_State *L, int argc, char **argv, const struct opts *o) {
  int zero = o->code ? o->first_arg - 1 : o->script;
  int i;
  lua_createtable(L, argc - zero, zero + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - zero);
  }
  lua_setglobal(L, "arg");
}

static int load_chunk(lua_State *L, const struct opts *o, char **argv) {
  if (o->code) return luaL_loadbuffer(L, o->code, strlen(o->code), "=(command line)");
  if (o->stdin_script || strcmp(argv[o->script], "-") == 0) return luaL_loadfile(L, NULL);
  return luaL_loadfile(L, argv[o->script]); /* skips a #! first line */
}

/* --trace: fail now, not after the run, if the file cannot be written. */
static int start_trace(lr_runtime *rt, const char *path) {
  FILE *f = fopen(path, "wb");
  if (f == NULL) {
    fprintf(stderr, "%s: --trace: cannot write %s: %s\n", progname, path, strerror(errno));
    return -1;
  }
  fclose(f);
  if (lr_trace_open(rt, path) != 0) {
    fprintf(stderr, "%s: --trace: out of memory\n", progname);
    return -1;
  }
  return 0;
}

struct run {
  int argc;
  char **argv;
  struct opts o;
  int status;
};

static int pmain(lua_State *L) {
  struct run *r = lua_touserdata(L, 1);
  lr_runtime *rt;
  int i, nres = 0, st;
  lua_settop(L, 0);
  luaL_openlibs(L);
  luaL_requiref(L, "luarun", luaopen_luarun, 0);
  lua_pop(L, 1);
  rt = lr_runtime_get(L);
  if (r->o.trace && start_trace(rt, r->o.trace) != 0) {
    r->status = 1;
    return 0;
  }
  if (r->o.debug && lr_watchdog_start(rt, (unsigned)(r->o.debug - 1)) != 0)
    fprintf(stderr, "%s: --debug: cannot start the watchdog thread\n", progname);
  make_arg_table(L, r->argc, r->argv, &r->o);
  if (load_chunk(L, &r->o, r->argv) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
    r->status = 1;
    return 0;
  }
  for (i = r->o.first_arg; i < r->argc; i++) lua_pushstring(L, r->argv[i]);
  lr_signal_install(rt);
  lr_tasks_watch_quit(rt);
  st = lr_runtime_run_main(L, rt, r->argc - r->o.first_arg, &nres);
  if (st == LR_DEADLOCK) {
    fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
    r->status = 1;
  } else if (st != LUA_OK) {
    if (!lr_error_is(L, -1, "cancelled")) {
      fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -2));
      r->status = 1;
    }
  } else if (rt->failures > 0) {
    r->status = 1;
  }
  if (rt->interrupted) r->status = 128 + rt->interrupted; /* 130, 143 */
  return 0;
}

int main(int argc, char **argv) {
  struct run r;
  lua_State *L;
  int rc;
  r.argc = argc;
  r.argv = argv;
  r.status = 0;
  rc = parse(argc, argv, &r.o);
  if (rc != 0) return rc > 0 ? 0 : 1;
  L = lr_alloc_newstate();
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create the Lua state: out of memory\n", progname);
    return 1;
  }
  lua_pushcfunction(L, pmain);
  lua_pushlightuserdata(L, &r);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
    r.status = 1;
  }
  fflush(stdout);
  lr_alloc_close(L);
  if (lr_runtime_abandoned) {
    /* A request is still blocked in libuv's thread pool, and exit() would wait for
     * it forever (libuv joins its threads in a destructor): end here. */
    if (__lsan_do_leak_check) __lsan_do_leak_check();
    fflush(NULL);
    _exit(r.status);
  }
  return r.status;
}
