/* pg_api.c: opens libpq.so.5 at run time (see lr_pg.h for why). */
#include <pthread.h>
#include "lr_pg.h"

lr_pg_api lr_pq;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int loaded;

#define LR_PG_NAME(ret, name, params) #name,
static const char *const names[] = {LR_PG_FUNCTIONS(LR_PG_NAME) NULL};
#undef LR_PG_NAME

int lr_pg_load(char *err, size_t errlen) {
  int rc = 0;
  pthread_mutex_lock(&load_lock);
  /* libpq 14 or newer: pipeline mode */
  if (!loaded && (rc = lr_dynlib_load("libpq.so.5", "PQ", names, (void **)&lr_pq, "libpq5 (14 or newer)",
                                      err, errlen)) == 0)
    loaded = 1;
  pthread_mutex_unlock(&load_lock);
  return rc;
}
