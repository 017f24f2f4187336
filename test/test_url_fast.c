/* test_url_fast.c: lr_url_join's fast path (core/http_url.c fast_join) against the
 * curl_url path it stands in for, byte for byte: seeded random references built from
 * pieces of URLs (schemes, hosts, ports, segments, dot segments, escapes, queries,
 * fragments, and bytes that must send the join to curl) against bases of every kind.
 * Also checks that the links a page typically has do take the fast path.
 *   test_url_fast [count [seed]]   (default 300000 references, seed 16) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "luarun.h"
#include "curl_api.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", \
                                   __FILE__, __LINE__, #c); exit(1); } } while (0)
#define COUNT(a) (sizeof(a) / sizeof(a)[0])

static const char *const bases[] = {
  "http://a/b/c/d;p?q", "http://a/b/c/d;p?", "http://a/b/c/d;p?q#f", "http://a",
  "http://a/", "https://Ex.COM/dir/", "https://Ex.COM/dir/page.html?x=1&y=2",
  "http://h:8080/a/b", "https://h:443/a/b/", "http://h:80/", "HTTP://H/A/B?Q",
  "https://en.wikipedia.org/wiki/Lua_(programming_language)",
  "http://a/b//c//", "http://a//", "http://a/b/c/d/e/f/g/h/i/j/k", "http://a/.x/..y/",
  "http://a/b/%2e%2e/c", "http://a/%41%zz/x?%2e#%", "http://a/b;c=d/e;f?g=h;i",
  "http://u:p@h/x/y", "http://[::1]:8/x/", "http://127.1/x/y", "http://1a.b/x",
  "http://a_b/x/", "http://a/~-._!$&'()*+,;=:@/x", "http://a/b?c?d", "http://a/?",
  "https://a.b.c.d.e/f/", "ftp://a/b/c", "ws://a/b/c", "file:///a/b/c", "g:h/i",
  "http://a/b\\c/d", "http://a/b c/d", "http://a/\xc3\xa9/x", "http://h:65535/x",
  "http://127.0.0.1:8080/a/b?x", "http://10.0.0.1", "http://1.2.3.4/", "http://1.2.3/x/",
};

static const char *const schemes[] = {"http", "https", "HTTP", "hTTpS", "ftp", "ws",
                                      "mailto", "x-y", "1a", "javascript"};
static const char *const hosts[] = {
  "h", "Ex.COM", "a.b.c", "a-b", "xn--d", "1a.b", "127.1", "0x7f.1", "1234", "a..b",
  ".a", "a.", "-a", "", "a_b", "u@h", "u:p@h", "@h", "[::1]", "[::1", "h%41", "H",
  "h h", "h\\x", "\xc3\xa9", "a.example", "LOCALHOST", "h!", "h~", "127.0.0.1",
  "1.2.3.4", "01.2.3.4", "1.2.3.256", "1.2.3", "255.255.255.255", "1.2.3.4.5", "0.0.0.0",
  "1.2.3.4.", "1.2.3.04", "1234.1.1.1", "1.2.3.0x4", "1.2.3.4a"};
static const char *const ports[] = {"", "", "", ":", ":80", ":080", ":0", ":443",
                                    ":65535", ":65536", ":99999", ":8a", ":1", ":00"};
static const char *const segs[] = {
  "", ".", "..", "g", "a;b", "x=1", "%2e", "%2E%2e", ".%2e", "%2e%2e%2e", "%41", "%",
  "%zz", "...", ".a", "a.", "~-._", "!$&'()*+,;=:@", "a:b", ":", "[x]", "|^", "{}", "`",
  "\"", "<>", " ", "\\", "\xc3\xa9", "\t", "index.html", "Main_Page", "a b", "..;", ".;",
  ";", "=", "@", "%2f", "%5C", "'", "\x7f", "\x01", "A", "g.", "..g"};
static const char *const qparts[] = {
  "", "a=1", "&b", "?", "/./", "/../", "%2e", "'", "{}", "x y", "=", ";", "/", "//",
  "\\", "`", "#", "%", "a=%41", "\xc3\xa9", "..", "[]"};

static unsigned long long rng_state;

static unsigned rnd(unsigned n) {
  rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (unsigned)((rng_state >> 33) % n);
}

static void add(char *s, size_t *n, size_t cap, const char *piece) {
  size_t l = strlen(piece);
  if (*n + l < cap) memcpy(s + *n, piece, l), *n += l;
  s[*n] = '\0';
}

/* A path of up to 7 segments, sometimes with "./" and "../" in front. */
static void add_path(char *s, size_t *n, size_t cap, int absolute) {
  unsigned i, k = rnd(8);
  if (!absolute) {
    for (i = rnd(4); i > 0; i--) add(s, n, cap, rnd(2) ? "../" : "./");
  }
  for (i = 0; i < k; i++) {
    if (i > 0 || absolute) add(s, n, cap, rnd(8) ? "/" : "//");
    add(s, n, cap, segs[rnd(COUNT(segs))]);
    if (rnd(6) == 0) add(s, n, cap, segs[rnd(COUNT(segs))]);
  }
  if (rnd(5) == 0) add(s, n, cap, "/");
}

static void add_tail(char *s, size_t *n, size_t cap) {
  unsigned i;
  if (rnd(3) == 0) {
    add(s, n, cap, "?");
    for (i = rnd(4); i > 0; i--) add(s, n, cap, qparts[rnd(COUNT(qparts))]);
  }
  if (rnd(4) == 0) {
    add(s, n, cap, "#");
    for (i = rnd(4); i > 0; i--) add(s, n, cap, qparts[rnd(COUNT(qparts))]);
  }
}

static void add_authority(char *s, size_t *n, size_t cap) {
  add(s, n, cap, hosts[rnd(COUNT(hosts))]);
  add(s, n, cap, ports[rnd(COUNT(ports))]);
}

/* One random reference, NUL-terminated in s (cap bytes); returns its length. */
static size_t make_ref(char *s, size_t cap) {
  size_t n = 0;
  s[0] = '\0';
  if (rnd(10) == 0) add(s, &n, cap, rnd(2) ? " " : "\n");
  switch (rnd(9)) {
  case 0: case 1: /* absolute */
    add(s, &n, cap, schemes[rnd(COUNT(schemes))]);
    add(s, &n, cap, rnd(8) ? "://" : rnd(2) ? ":/" : ":");
    add_authority(s, &n, cap);
    add_path(s, &n, cap, 1);
    break;
  case 2: /* network-path */
    add(s, &n, cap, "//");
    add_authority(s, &n, cap);
    add_path(s, &n, cap, 1);
    break;
  case 3: case 4: /* absolute-path */
    add(s, &n, cap, "/");
    add_path(s, &n, cap, 0);
    break;
  case 5: case 6: case 7: /* relative-path */
    add_path(s, &n, cap, 0);
    break;
  default: /* query, fragment or empty: the tail alone */
    break;
  }
  add_tail(s, &n, cap);
  if (rnd(10) == 0) add(s, &n, cap, rnd(2) ? " " : "\t");
  return n;
}

static int compare(const lr_url_base *b, const char *base, const char *ref, size_t len,
                   unsigned flags) {
  char e1[256] = "", e2[256] = "";
  size_t n1 = 0, n2 = 0;
  char *fast = lr_url_join(b, ref, len, flags, &n1, e1, sizeof e1);
  char *slow = lr_url_join(b, ref, len, flags | LR_URL_SLOW, &n2, e2, sizeof e2);
  int same = (fast == NULL && slow == NULL && strcmp(e1, e2) == 0) ||
             (fast && slow && n1 == n2 && memcmp(fast, slow, n1) == 0);
  if (!same)
    fprintf(stderr, "base \"%s\" ref \"%s\" flags %u:\n  fast %s (%s)\n  slow %s (%s)\n",
            base, ref, flags, fast ? fast : "NULL", e1, slow ? slow : "NULL", e2);
  free(fast);
  free(slow);
  return same;
}

/* Links as pages have them, each of which must take the fast path. */
static void typical(void) {
  static const char *const refs[] = {
    "/wiki/Main_Page", "../b/c.html", "x.html?y=1#z", "https://other.example/a",
    "//cdn.example/x.js", "/w/index.php?title=Lua&action=edit", "page2.html",
    "https://Example.COM:8443/a/./b/../c?q", "/wiki/Lua_(programming_language)#History",
    "/wiki/%C3%89cole", "./", "..", "http://127.0.0.1:8080/x"};
  const char *base = "https://en.wikipedia.org/wiki/Lua_(programming_language)";
  char err[256];
  size_t i, n;
  lr_url_base *b = lr_url_base_new(base, strlen(base), err, sizeof err);
  CHECK(b);
  for (i = 0; i < COUNT(refs); i++) {
    char *s = lr_url_join(b, refs[i], strlen(refs[i]), LR_URL_FAST_ONLY, &n, err, sizeof err);
    if (s == NULL) fprintf(stderr, "\"%s\" not taken by the fast path\n", refs[i]);
    CHECK(s != NULL);
    free(s);
    CHECK(compare(b, base, refs[i], strlen(refs[i]), 0));
  }
  /* What it must leave to curl. */
  {
    static const char *const slow[] = {"http://127.1/", "//1.2.3.04/", "//u@h/", "g?\\h",
                                       "1a:b", "//h:080/"};
    for (i = 0; i < COUNT(slow); i++) {
      char *s = lr_url_join(b, slow[i], strlen(slow[i]), LR_URL_FAST_ONLY, &n, err, sizeof err);
      CHECK(s == NULL && strstr(err, "fast path") != NULL);
    }
  }
  lr_url_base_free(b);
}

int main(int argc, char **argv) {
  unsigned long count = argc > 1 ? strtoul(argv[1], NULL, 10) : 300000;
  unsigned long i, fails = 0, taken = 0;
  lr_url_base *b[COUNT(bases)];
  char err[256], ref[512];
  size_t k, usable = 0;
  rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) : 16;
  typical();
  for (k = 0; k < COUNT(bases); k++) {
    b[k] = lr_url_base_new(bases[k], strlen(bases[k]), err, sizeof err);
    if (b[k]) usable++;
  }
  CHECK(usable >= COUNT(bases) - 4);
  for (i = 0; i < count && fails < 20; i++) {
    size_t n = make_ref(ref, sizeof ref), out;
    unsigned flags = rnd(2) ? LR_URL_NO_FRAGMENT : 0;
    char *s;
    k = rnd(COUNT(bases));
    if (b[k] == NULL) continue;
    if (!compare(b[k], bases[k], ref, n, flags)) fails++;
    s = lr_url_join(b[k], ref, n, flags | LR_URL_FAST_ONLY, &out, err, sizeof err);
    if (s) taken++;
    free(s);
  }
  for (k = 0; k < COUNT(bases); k++) lr_url_base_free(b[k]);
  printf("%lu references, %lu taken by the fast path, %lu differences\n", i, taken, fails);
  /* The grammar is built to hit both paths; a fast path that took nothing would pass
   * the comparison vacuously. */
  CHECK(count < 1000 || (taken > i / 10 && taken < i - i / 10));
  if (fails) return 1;
  printf("ok\n");
  return 0;
}
