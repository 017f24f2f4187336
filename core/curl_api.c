/* curl_api.c: opens libcurl.so.4 at run time (see curl_api.h for why). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "curl_api.h"

lr_curl_api lr_curl;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int loaded;

static int load_locked(char *err, size_t errlen) {
  void *lib;
  const char *why;
  curl_version_info_data *v;
  if (loaded) return 0;
  /* RTLD_LAZY, not RTLD_NOW (issue 20). The dlopen is most of what a fetch script's
   * startup costs (~5 of ~7 ms), and half of that is the dynamic linker's symbol
   * lookups: some 10,700 over libcurl and the ~31 libraries it pulls in. RTLD_NOW
   * also binds, up front, every PLT slot of the libraries built without -z now
   * (libcurl itself, krb5, gssapi, gmp, rtmp, nghttp2, zlib: ~2,300 of the lookups),
   * most of which a run never calls; lazily each is bound at its first call.
   * Measured on Debian 12 (bench/startup.sh): 0.5-0.8 ms less per fetch script. The
   * big ones (libcrypto, libssl, gnutls, p11-kit) are linked -z now and are bound
   * in full either way. A symbol missing from a library would now abort at its
   * first call instead of failing the dlopen; our own calls into libcurl still go
   * through dlsym below and are checked. */
  lib = dlopen("libcurl.so.4", RTLD_LAZY | RTLD_LOCAL);
  if (lib == NULL) {
    why = dlerror();
    snprintf(err, errlen, "cannot load libcurl (libcurl.so.4): %s; install libcurl4",
             why ? why : "unknown error");
    return -1;
  }
#define LR_CURL_SYM(ret, name, params)                                             \
  *(void **)&lr_curl.name = dlsym(lib, "curl_" #name);                             \
  if (lr_curl.name == NULL) {                                                      \
    snprintf(err, errlen, "libcurl.so.4 lacks curl_%s: it is too old (7.85 or "    \
             "newer is needed)", #name);                                           \
    return -1;                                                                     \
  }
  LR_CURL_FUNCTIONS(LR_CURL_SYM)
#undef LR_CURL_SYM
  v = lr_curl.version_info(CURLVERSION_NOW);
  if (v == NULL || v->version_num < 0x075500) {
    snprintf(err, errlen, "libcurl %s is too old: 7.85 or newer is needed",
             v ? v->version : "?");
    return -1;
  }
  /* This initialises OpenSSL too (~0.9 ms, most of it reading openssl.cnf), plain
   * HTTP or not: libcurl 7.57 and later ignore CURL_GLOBAL_SSL and always set up the
   * TLS back end here, and curl_easy_init would do it if we did not. Deferring it to
   * the first https request would mean skipping OpenSSL's config, i.e. the system's
   * TLS policy (issue 20; bench/RESULTS.md). */
  if (lr_curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(err, errlen, "curl_global_init failed");
    return -1;
  }
  /* The library stays loaded for the life of the process: curl keeps global state
   * (TLS back end) that must not be unmapped under live handles. */
  loaded = 1;
  return 0;
}

int lr_curl_load(char *err, size_t errlen) {
  int rc;
  pthread_mutex_lock(&load_lock);
  rc = load_locked(err, errlen);
  pthread_mutex_unlock(&load_lock);
  return rc;
}
