/* test_http_url.c: lr_url_join against every example of RFC 3986 section 5.4 (normal
 * and abnormal), base "http://a/b/c/d;p?q", plus the cleaning a browser does to an
 * href. With the argument "bench", prints the time per join instead (bench/url.sh). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "luarun.h"
#include "curl_api.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", \
                                   __FILE__, __LINE__, #c); exit(1); } } while (0)

/* RFC 3986 5.4.1 and 5.4.2. Empty paths under http are written "/" by curl (RFC 3986
 * 6.2.3 makes "http://g" and "http://g/" the same URL), hence "//g". */
static const char *const rfc[][2] = {
  {"g:h", "g:h"}, {"g", "http://a/b/c/g"}, {"./g", "http://a/b/c/g"},
  {"g/", "http://a/b/c/g/"}, {"/g", "http://a/g"}, {"//g", "http://g/"},
  {"?y", "http://a/b/c/d;p?y"}, {"g?y", "http://a/b/c/g?y"},
  {"#s", "http://a/b/c/d;p?q#s"}, {"g#s", "http://a/b/c/g#s"},
  {"g?y#s", "http://a/b/c/g?y#s"}, {";x", "http://a/b/c/;x"},
  {"g;x", "http://a/b/c/g;x"}, {"g;x?y#s", "http://a/b/c/g;x?y#s"},
  {"", "http://a/b/c/d;p?q"}, {".", "http://a/b/c/"}, {"./", "http://a/b/c/"},
  {"..", "http://a/b/"}, {"../", "http://a/b/"}, {"../g", "http://a/b/g"},
  {"../..", "http://a/"}, {"../../", "http://a/"}, {"../../g", "http://a/g"},
  /* 5.4.2 */
  {"../../../g", "http://a/g"}, {"../../../../g", "http://a/g"},
  {"/./g", "http://a/g"}, {"/../g", "http://a/g"}, {"g.", "http://a/b/c/g."},
  {".g", "http://a/b/c/.g"}, {"g..", "http://a/b/c/g.."}, {"..g", "http://a/b/c/..g"},
  {"./../g", "http://a/b/g"}, {"./g/.", "http://a/b/c/g/"},
  {"g/./h", "http://a/b/c/g/h"}, {"g/../h", "http://a/b/c/h"},
  {"g;x=1/./y", "http://a/b/c/g;x=1/y"}, {"g;x=1/../y", "http://a/b/c/y"},
  {"g?y/./x", "http://a/b/c/g?y/./x"}, {"g?y/../x", "http://a/b/c/g?y/../x"},
  {"g#s/./x", "http://a/b/c/g#s/./x"}, {"g#s/../x", "http://a/b/c/g#s/../x"},
  {"http:g", "http:g"},
  /* what browsers do to an href */
  {"  g\n ", "http://a/b/c/g"}, {"g\th", "http://a/b/c/gh"},
  {"a b", "http://a/b/c/a%20b"}, {"a%20b", "http://a/b/c/a%20b"},
  {"\xc3\xbc", "http://a/b/c/%C3%BC"}, {"?a b", "http://a/b/c/d;p?a%20b"},
  {"#a b", "http://a/b/c/d;p?q#a%20b"}, {"g\\h", "http://a/b/c/g/h"},
  {"g?\\h", "http://a/b/c/g?\\h"}, {"HTTPS://Other/x", "https://Other/x"},
  {"MAILTO:x@y", "mailto:x@y"}, {"javascript:void(0)", "javascript:void(0)"},
  {"//h:81/x/../y", "http://h:81/y"}, {"?", "http://a/b/c/d;p?"},
};

static const char *const bad[] = {"//a b/", "//h:99999/", "https://:80/", "//[::1/"};

static char *join(const lr_url_base *b, const char *ref, unsigned flags) {
  char err[256];
  size_t n;
  char *s = lr_url_join(b, ref, strlen(ref), flags, &n, err, sizeof err);
  if (s) CHECK(strlen(s) == n);
  return s;
}

static void bench(void) {
  static const char *const refs[] = {"/wiki/Main_Page", "../b/c.html", "x.html?y=1#z",
                                     "https://other.example/a", "#top", "//cdn.example/x.js"};
  char err[256];
  const char *base = "https://en.wikipedia.org/wiki/Lua_(programming_language)";
  lr_url_base *b = lr_url_base_new(base, strlen(base), err, sizeof err);
  struct timespec t0, t1;
  int i, n = 200000;
  CHECK(b);
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0); /* CPU time: the machine is shared */
  for (i = 0; i < n; i++) free(join(b, refs[i % 6], LR_URL_NO_FRAGMENT));
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
  printf("lr_url_join: %.2f us of CPU per join (%d joins, mixed references)\n",
         ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / n, n);
  lr_url_base_free(b);
}

int main(int argc, char **argv) {
  char err[256];
  const char *base = "http://a/b/c/d;p?q";
  lr_url_base *b = lr_url_base_new(base, strlen(base), err, sizeof err);
  size_t i, n;
  int fails = 0;
  CHECK(b);
  if (argc > 1 && strcmp(argv[1], "bench") == 0) {
    lr_url_base_free(b);
    bench();
    return 0;
  }
  for (i = 0; i < sizeof rfc / sizeof rfc[0]; i++) {
    char *s = join(b, rfc[i][0], 0);
    if (s == NULL || strcmp(s, rfc[i][1]) != 0) {
      fprintf(stderr, "join(\"%s\") = %s, want %s\n", rfc[i][0], s ? s : "NULL", rfc[i][1]);
      fails++;
    }
    free(s);
  }
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *s = lr_url_join(b, bad[i], strlen(bad[i]), 0, &n, err, sizeof err);
    if (s != NULL) fprintf(stderr, "join(\"%s\") = %s, want an error\n", bad[i], s), fails++;
    else CHECK(strstr(err, "invalid URL reference") != NULL);
    free(s);
  }
  /* Dropping fragments, and a base with a fragment of its own. */
  lr_url_base_free(b);
  base = " http://a/b/c/d;p?q#base\n";
  b = lr_url_base_new(base, strlen(base), err, sizeof err);
  CHECK(b);
  {
    char *s1 = join(b, "#s", LR_URL_NO_FRAGMENT), *s2 = join(b, "g#s", LR_URL_NO_FRAGMENT),
         *s3 = join(b, "?y#s", LR_URL_NO_FRAGMENT), *s4 = join(b, "", 0);
    CHECK(s1 && strcmp(s1, "http://a/b/c/d;p?q") == 0);
    CHECK(s2 && strcmp(s2, "http://a/b/c/g") == 0);
    CHECK(s3 && strcmp(s3, "http://a/b/c/d;p?y") == 0);
    CHECK(s4 && strcmp(s4, "http://a/b/c/d;p?q") == 0);
    free(s1), free(s2), free(s3), free(s4);
  }
  lr_url_base_free(b);
  CHECK(lr_url_base_new("g/h", 3, err, sizeof err) == NULL);
  CHECK(strstr(err, "invalid base URL") != NULL);
  if (fails) return 1;
  printf("ok\n");
  return 0;
}
