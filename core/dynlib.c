/* dynlib.c: a shared library opened at run time, its functions looked up by name into
 * a table of pointers (libpq and libsqlite3; see lr_base.h). */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "lr_base.h"

int lr_dynlib_load(const char *soname, const char *prefix, const char *const *names,
                   void **slots, const char *package, char *err, size_t errlen) {
  void *lib;
  const char *why;
  char sym[96];
  int i;
  /* RTLD_LAZY as for libcurl (core/curl_api.c says why); RTLD_LOCAL: our calls go
   * through the table, and the library's symbols stay out of the process's scope. */
  lib = dlopen(soname, RTLD_LAZY | RTLD_LOCAL);
  if (lib == NULL) {
    why = dlerror();
    /* dlopen says "cannot create shared object descriptor" when malloc fails */
    snprintf(err, errlen, "cannot load %s: %s; install %s%s", soname,
             why ? why : "unknown error", package,
             why && strstr(why, "cannot create shared object") ? " (out of memory?)" : "");
    return -1;
  }
  for (i = 0; names[i]; i++) {
    snprintf(sym, sizeof sym, "%s%s", prefix, names[i]);
    if ((slots[i] = dlsym(lib, sym)) == NULL) {
      snprintf(err, errlen, "%s lacks %s: install a newer %s", soname, sym, package);
      dlclose(lib);
      return -1;
    }
  }
  return 0; /* the library stays loaded for the life of the process */
}
