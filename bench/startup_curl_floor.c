/* startup_curl_floor.c: the least a process that fetches one URL with libcurl can
 * take to start and finish, for bench/startup.sh (issue 20). It opens libcurl the way
 * luarun does (dlopen at run time, not linked), initialises it, makes one easy
 * request and exits: no Lua, no event loop. A luarun fetch script cannot start
 * faster than this with the same library.
 *
 *   gcc -O2 -o floor bench/startup_curl_floor.c -ldl
 *   ./floor URL [now|lazy [LIB]]
 *
 * now or lazy: dlopen's RTLD_NOW (default) or RTLD_LAZY. LIB is the library to open
 * (default libcurl.so.4; Debian also has libcurl-gnutls.so.4 and libcurl-nss.so.4).
 * curl_global_init gets CURL_GLOBAL_DEFAULT: libcurl 7.57 and later ignore the
 * flag for TLS and initialise the TLS library whatever the flags say. Exits 0 if
 * the request got a response, else 1.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
#define GLOBAL_DEFAULT 3 /* CURL_GLOBAL_SSL | CURL_GLOBAL_WIN32 */

static size_t sink(char *p, size_t size, size_t n, void *ud) {
  (void)p;
  (void)ud;
  return size * n;
}

int main(int argc, char **argv) {
  int mode = argc > 2 && strcmp(argv[2], "lazy") == 0 ? RTLD_LAZY : RTLD_NOW;
  const char *lib = argc > 3 ? argv[3] : "libcurl.so.4";
  void *h;
  CURL *e;
  int rc;
  if (argc < 2) {
    fprintf(stderr, "usage: %s URL [now|lazy [LIB]]\n", argv[0]);
    return 2;
  }
  h = dlopen(lib, mode | RTLD_LOCAL);
  if (h == NULL) {
    fprintf(stderr, "%s\n", dlerror());
    return 1;
  }
  if (((global_init_fn)dlsym(h, "curl_global_init"))(GLOBAL_DEFAULT) != 0) return 1;
  e = ((easy_init_fn)dlsym(h, "curl_easy_init"))();
  if (e == NULL) return 1;
  ((easy_setopt_fn)dlsym(h, "curl_easy_setopt"))(e, OPT_URL, argv[1]);
  ((easy_setopt_fn)dlsym(h, "curl_easy_setopt"))(e, OPT_WRITEFUNCTION, sink);
  rc = ((easy_perform_fn)dlsym(h, "curl_easy_perform"))(e);
  ((easy_cleanup_fn)dlsym(h, "curl_easy_cleanup"))(e);
  if (rc != 0) fprintf(stderr, "curl_easy_perform: %d\n", rc);
  return rc == 0 ? 0 : 1;
}
