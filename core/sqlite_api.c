/* sqlite_api.c: opens libsqlite3.so.0 at run time (see lr_sqlite.h for why). */
#include <pthread.h>
#include "lr_sqlite.h"

lr_sqlite_api lr_sq;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int loaded;

#define LR_SQ_NAME(ret, name, params) #name,
static const char *const names[] = {LR_SQLITE_FUNCTIONS(LR_SQ_NAME) NULL};
#undef LR_SQ_NAME

int lr_sqlite_load(char *err, size_t errlen) {
  int rc = 0;
  pthread_mutex_lock(&load_lock);
  if (!loaded && (rc = lr_dynlib_load("libsqlite3.so.0", "sqlite3_", names, (void **)&lr_sq,
                                      "libsqlite3-0 (3.37 or newer)", err, errlen)) == 0) {
    /* SQLite's global memory statistics take a mutex on every allocation, for
     * sqlite3_memory_used, which nothing here reads. Only possible before SQLite
     * initializes itself, which no call of ours has made yet. */
    lr_sq.config(SQLITE_CONFIG_MEMSTATUS, 0);
    loaded = 1;
  }
  pthread_mutex_unlock(&load_lock);
  return rc;
}
