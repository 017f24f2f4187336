/* startup_curl_floor.c: the least a process that fetches one URL with libcurl can
 * take to start and finish, for bench/startup.sh (issue 20). It opens libcurl the way
 * luarun does (dlopen at run time, not linked), initialises it, makes one easy
 * request and exits: no Lua, no event loop. A luarun fetch script cannot start
 * faster than this with the same library.
 *
 *   gcc -O2 -o floor bench/startup_curl_floor.c -ldl
 *   ./floor URL [LIB [FLAGS]]
 *
 * LIB is the library to open (default libcurl.so.4); FLAGS the curl_global_init
 * flags as a number (default 3, CURL_GLOBAL_DEFAULT). Exits 0 if the request got a
 * response, else 1.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef void CURL;
typedef int (*global_init_fn)(long);
typedef CURL *(*easy_init_fn)(void);
typedef int (*easy_setopt_fn)(CURL *, int, ...);
typedef int (*easy_perform_fn)(CURL *);
typedef void (*easy_cleanup_fn)(CURL *);

/* The option numbers from curl/curl.h (stable ABI), so that the floor needs no
 * development headers. */
#define OPT_URL 10002
#define OPT_WRITEFUNCTION 20011

static size_t sink(char *p, size_t size, size_t n, void *ud) {
  (void)p;
  (void)ud;
  return size * n;
}

int main(int argc, char **argv) {
  const char *lib = argc > 2 ? argv[2] : "libcurl.so.4";
  long flags = argc > 3 ? strtol(argv[3], NULL, 0) : 3;
  void *h;
  CURL *e;
  int rc;
  if (argc < 2) {
    fprintf(stderr, "usage: %s URL [LIB [FLAGS]]\n", argv[0]);
    return 2;
  }
  h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    fprintf(stderr, "%s\n", dlerror());
    return 1;
  }
  if (((global_init_fn)dlsym(h, "curl_global_init"))(flags) != 0) return 1;
  e = ((easy_init_fn)dlsym(h, "curl_easy_init"))();
  if (e == NULL) return 1;
  ((easy_setopt_fn)dlsym(h, "curl_easy_setopt"))(e, OPT_URL, argv[1]);
  ((easy_setopt_fn)dlsym(h, "curl_easy_setopt"))(e, OPT_WRITEFUNCTION, sink);
  rc = ((easy_perform_fn)dlsym(h, "curl_easy_perform"))(e);
  ((easy_cleanup_fn)dlsym(h, "curl_easy_cleanup"))(e);
  if (rc != 0) fprintf(stderr, "curl_easy_perform: %d\n", rc);
  return rc == 0 ? 0 : 1;
}
