/* sqlite_api.c: opens libsqlite3.so.0 at run time (see lr_sqlite.h for why). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "lr_sqlite.h"

lr_sqlite_api lr_sq;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int loaded;

static int load_locked(char *err, size_t errlen) {
  void *lib;
  const char *why;
  if (loaded) return 0;
  lib = dlopen("libsqlite3.so.0", RTLD_LAZY | RTLD_LOCAL);
  if (lib == NULL) {
    why = dlerror();
    /* dlopen says "cannot create shared object descriptor" when malloc fails */
    snprintf(err, errlen, "cannot load SQLite (libsqlite3.so.0): %s; install libsqlite3-0%s",
             why ? why : "unknown error",
             why && strstr(why, "cannot create shared object") ? " (out of memory?)" : "");
    return -1;
  }
#define LR_SQ_SYM(ret, name, params)                                                 \
  *(void **)&lr_sq.name = dlsym(lib, "sqlite3_" #name);                              \
  if (lr_sq.name == NULL) {                                                          \
    snprintf(err, errlen, "libsqlite3.so.0 lacks sqlite3_%s: SQLite 3.37 or newer is " \
             "needed", #name);                                                       \
    return -1;                                                                       \
  }
  LR_SQLITE_FUNCTIONS(LR_SQ_SYM)
#undef LR_SQ_SYM
  /* SQLite's global memory statistics take a mutex on every allocation, for
   * sqlite3_memory_used, which nothing here reads. Only possible before SQLite
   * initializes itself, which no call of ours has made yet. */
  lr_sq.config(SQLITE_CONFIG_MEMSTATUS, 0);
  loaded = 1; /* kept for the life of the process */
  return 0;
}

int lr_sqlite_load(char *err, size_t errlen) {
  int rc;
  pthread_mutex_lock(&load_lock);
  rc = load_locked(err, errlen);
  pthread_mutex_unlock(&load_lock);
  return rc;
}
