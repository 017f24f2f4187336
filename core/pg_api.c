/* pg_api.c: opens libpq.so.5 at run time (see lr_pg.h for why). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "lr_pg.h"

lr_pg_api lr_pq;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int loaded;

static int load_locked(char *err, size_t errlen) {
  void *lib;
  const char *why;
  if (loaded) return 0;
  lib = dlopen("libpq.so.5", RTLD_LAZY | RTLD_LOCAL);
  if (lib == NULL) {
    why = dlerror();
    /* dlopen says "cannot create shared object descriptor" when malloc fails */
    snprintf(err, errlen, "cannot load libpq (libpq.so.5): %s; install libpq5%s",
             why ? why : "unknown error",
             why && strstr(why, "cannot create shared object") ? " (out of memory?)" : "");
    return -1;
  }
#define LR_PG_SYM(ret, name, params)                                                 \
  *(void **)&lr_pq.name = dlsym(lib, "PQ" #name);                                    \
  if (lr_pq.name == NULL) {                                                          \
    snprintf(err, errlen, "libpq.so.5 lacks PQ%s: libpq 14 or newer is needed "      \
             "(pipeline mode)", #name);                                              \
    return -1;                                                                       \
  }
  LR_PG_FUNCTIONS(LR_PG_SYM)
#undef LR_PG_SYM
  loaded = 1; /* kept for the life of the process, as libcurl */
  return 0;
}

int lr_pg_load(char *err, size_t errlen) {
  int rc;
  pthread_mutex_lock(&load_lock);
  rc = load_locked(err, errlen);
  pthread_mutex_unlock(&load_lock);
  return rc;
}
