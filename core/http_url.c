/* http_url.c: URL references joined against a base parsed once (see curl_api.h).
 *
 * Each join duplicates the parsed base (curl_url_dup) and sets the reference on the
 * copy: a CURLU that is reused takes the next URL as relative to the one it holds
 * (curl/curl#5698), and reparsing the base for every link of a page would double the
 * cost. libcurl 7.88.1 (Debian 12) was checked against every example of RFC 3986
 * section 5.4: it gets `#s` and the empty reference wrong (the base loses its last
 * segment and query; fixed upstream in 2024-2026, curl/curl#13394, #21745) and
 * refuses `g:h` and `http:g` ("Unsupported number of slashes"), so references that
 * start with '#' or '?', the empty one and those with a scheme but no "//" are
 * joined here as strings (under http(s), "http:g" is first made relative as browsers
 * do: special_no_slashes). Most links of a page (plain bytes, an http(s) base, a
 * plain host) are joined here too, by fast_join, which gives the bytes curl would
 * give at a tenth of the cost (test/test_url_fast.c compares the two). */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "curl_api.h"

struct lr_url_base {
  CURLU *u;       /* the base, its fragment removed; only ever duplicated */
  char *str;      /* the base as curl writes it back, without fragment (malloc) */
  size_t len;
  size_t prefix;  /* bytes of str before its query: what a "?y" reference keeps */
  int special;    /* a scheme under which browsers read '\' as '/' */
  /* For fast_join, when the base is http(s) and plain (fast_base): str is
   * "scheme://authority" up to auth_end, then the path up to prefix, "?query" after. */
  size_t scheme;    /* length of the scheme, 0 when fast_join is not used */
  size_t auth_end;
};

/* Length of the scheme that starts s, ALPHA *(ALPHA / DIGIT / "+" / "-" / "."),
 * when a ':' follows it; else 0 (the reference is relative). */
static size_t scheme_len(const char *s, size_t n) {
  size_t i;
  if (n == 0 || !isalpha((unsigned char)s[0])) return 0;
  for (i = 1; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == ':') return i;
    if (!isalnum(c) && c != '+' && c != '-' && c != '.') return 0;
  }
  return 0;
}

static int special_scheme(const char *s, size_t n) {
  static const char *const names[] = {"http", "https", "ws", "wss", "ftp"};
  size_t i;
  for (i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strlen(names[i]) == n && strncasecmp(s, names[i], n) == 0) return 1;
  return 0;
}

/* Whether c is percent-encoded in the part (0 path, 1 query, 2 fragment) of a
 * reference: the WHATWG URL standard's encode sets for special schemes, which is what
 * a browser does to an href. '%' itself is never encoded, so "%20" stays "%20". */
static int must_encode(unsigned char c, int part) {
  if (c <= 0x20 || c >= 0x7f || c == '"' || c == '<' || c == '>') return 1;
  if (part == 0) return c == '`' || c == '{' || c == '}';
  if (part == 1) return c == '\'';
  return c == '`';
}

/* Cleans s[0..n) into out, which has room for 3 * n + 1 bytes, as browsers clean an
 * href: leading and trailing bytes <= 0x20 trimmed, tabs and newlines dropped, unsafe
 * bytes percent-encoded (upper-case hex), and, under a special scheme, '\' before the
 * query read as '/'. Returns the length written (out is NUL-terminated). */
static size_t clean(const char *s, size_t n, int special, char *out) {
  static const char hex[] = "0123456789ABCDEF";
  size_t i, o = 0;
  int part = 0;
  while (n > 0 && (unsigned char)s[0] <= 0x20) s++, n--;
  while (n > 0 && (unsigned char)s[n - 1] <= 0x20) n--;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\t' || c == '\n' || c == '\r') continue;
    if (c == '?' && part == 0) part = 1;
    else if (c == '#' && part < 2) part = 2;
    else if (c == '\\' && part == 0 && special) c = '/';
    if (must_encode(c, part)) {
      out[o++] = '%';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    } else {
      out[o++] = (char)c;
    }
  }
  out[o] = '\0';
  return o;
}

/* A malloc'd buffer for clean(), with two bytes to spare (lr_url_join may add "//"
 * or "./"), or NULL if n is absurd or memory is short. */
static char *clean_buf(size_t n) {
  if (n > (SIZE_MAX - 3) / 3) return NULL;
  return malloc(3 * n + 3);
}

static void set_err(char *err, size_t errlen, const char *what, CURLUcode rc) {
  if (err && errlen)
    snprintf(err, errlen, "%s%s%s", what, rc ? ": " : "", rc ? lr_curl.url_strerror(rc) : "");
}

/* Whether u's host is free of '%'. libcurl 7.88.1 stores a host percent-decoded and
 * writes a '%' in it back as "%25", once more at every join or reparse ("a%25" becomes
 * "a%2525"), so such a host (never a valid DNS name; an IPv6 zone id is the one
 * legitimate use, and no page links to one) is refused. */
static int host_ok(CURLU *u) {
  char *host = NULL;
  int ok;
  if (lr_curl.url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host == NULL) return 1;
  ok = strchr(host, '%') == NULL;
  lr_curl.free(host);
  return ok;
}

static void fast_base(lr_url_base *b);

/* lr_url_base_new, its errors starting with what ("invalid base URL"). */
static lr_url_base *base_new(const char *base, size_t len, const char *what, char *err,
                             size_t errlen) {
  lr_url_base *b;
  char *buf, *full = NULL, *query = NULL;
  size_t n;
  CURLUcode rc;
  if (lr_curl_load(err, errlen) != 0) return NULL;
  b = calloc(1, sizeof *b);
  buf = clean_buf(len);
  if (b == NULL || buf == NULL) goto oom;
  n = clean(base, len, 1, buf);
  b->special = special_scheme(buf, scheme_len(buf, n));
  if (!b->special) clean(base, len, 0, buf); /* '\' is only '/' under http(s) */
  b->u = lr_curl.url();
  if (b->u == NULL) goto oom;
  rc = lr_curl.url_set(b->u, CURLUPART_URL, buf, CURLU_NON_SUPPORT_SCHEME);
  if (rc != CURLUE_OK) {
    set_err(err, errlen, what, rc);
    goto fail;
  }
  if (!host_ok(b->u)) {
    if (err && errlen) snprintf(err, errlen, "%s: a '%%' in the host", what);
    goto fail;
  }
  lr_curl.url_set(b->u, CURLUPART_FRAGMENT, NULL, 0);
  if (lr_curl.url_get(b->u, CURLUPART_URL, &full, 0) != CURLUE_OK) goto oom;
  b->len = strlen(full);
  b->str = malloc(b->len + 1);
  if (b->str == NULL) goto oom;
  memcpy(b->str, full, b->len + 1);
  /* curl 7.88.1 reports an empty query ("page?") but writes the URL back without
   * its '?', so the query's start is looked for in what it wrote, not computed from
   * the query's length. Such a base is "page" to every join (as curl fetches it). */
  b->prefix = b->len;
  if (lr_curl.url_get(b->u, CURLUPART_QUERY, &query, 0) == CURLUE_OK && query &&
      query[0] != '\0' && strlen(query) < b->len &&
      b->str[b->len - strlen(query) - 1] == '?')
    b->prefix = b->len - strlen(query) - 1;
  fast_base(b);
  lr_curl.free(full);
  lr_curl.free(query);
  free(buf);
  return b;
oom:
  set_err(err, errlen, "out of memory", CURLUE_OK);
fail:
  lr_curl.free(full);
  lr_curl.free(query);
  free(buf);
  lr_url_base_free(b);
  return NULL;
}

lr_url_base *lr_url_base_new(const char *base, size_t len, char *err, size_t errlen) {
  return base_new(base, len, "invalid base URL", err, errlen);
}

void lr_url_base_free(lr_url_base *b) {
  if (b == NULL) return;
  if (b->u) lr_curl.url_cleanup(b->u);
  free(b->str);
  free(b);
}

const char *lr_url_base_str(const lr_url_base *b, size_t *len) {
  if (len) *len = b->len;
  return b->str;
}

/* a[0..an) followed by s[0..sn), the latter cut at its first '#' when asked to drop
 * fragments: a malloc'd string. */
static char *concat(const char *a, size_t an, const char *s, size_t sn, unsigned flags,
                    size_t *outlen) {
  char *out;
  const char *hash;
  if ((flags & LR_URL_NO_FRAGMENT) && (hash = memchr(s, '#', sn)) != NULL)
    sn = (size_t)(hash - s);
  out = malloc(an + sn + 1);
  if (out == NULL) return NULL;
  memcpy(out, a, an);
  memcpy(out + an, s, sn);
  out[an + sn] = '\0';
  *outlen = an + sn;
  return out;
}

/* The joins curl does right: ref (cleaned) set on a copy of the base, or on a fresh
 * handle when it is absolute (then the base does not matter). */
static char *curl_join(const lr_url_base *b, const char *ref, int absolute,
                       unsigned flags, size_t *outlen, char *err, size_t errlen) {
  CURLU *u = absolute ? lr_curl.url() : lr_curl.url_dup(b->u);
  CURLUcode rc;
  char *got = NULL, *out = NULL;
  if (u == NULL) {
    set_err(err, errlen, "out of memory", CURLUE_OK);
    return NULL;
  }
  rc = lr_curl.url_set(u, CURLUPART_URL, ref, CURLU_NON_SUPPORT_SCHEME);
  if (rc == CURLUE_OK && (absolute || (ref[0] == '/' && ref[1] == '/')) && !host_ok(u)) {
    set_err(err, errlen, "invalid URL reference: a '%' in the host", CURLUE_OK);
    lr_curl.url_cleanup(u);
    return NULL;
  }
  if (rc == CURLUE_OK && (flags & LR_URL_NO_FRAGMENT))
    lr_curl.url_set(u, CURLUPART_FRAGMENT, NULL, 0);
  if (rc == CURLUE_OK) rc = lr_curl.url_get(u, CURLUPART_URL, &got, 0);
  if (rc != CURLUE_OK) {
    set_err(err, errlen, "invalid URL reference", rc);
  } else {
    out = concat("", 0, got, strlen(got), 0, outlen);
    if (out == NULL) set_err(err, errlen, "out of memory", CURLUE_OK);
  }
  lr_curl.free(got);
  lr_curl.url_cleanup(u);
  return out;
}

/* Whether the base's scheme is s[0..sl), in any case. */
static int same_scheme(const lr_url_base *b, const char *s, size_t sl) {
  return strncasecmp(b->str, s, sl) == 0 && b->str[sl] == ':';
}

/* Rewrites buf (n bytes, room for n + 2) when it names a special scheme but has no
 * "//", as the WHATWG URL standard (and so every browser) reads it: with the base's
 * scheme it is a relative reference ("http:g" is "g", "http:/x" is "/x"; RFC 3986
 * 5.4.2 allows this "for backward compatibility"), with another one the slashes are
 * supplied ("https:/x" is "https://x"). Left as written, curl would take "http:/h/p"
 * for host h when fetching it, so a link could send a crawler to another host.
 * Returns the new length; *sl becomes 0 when the scheme was dropped. */
static size_t special_no_slashes(const lr_url_base *b, char *buf, size_t n, size_t *sl) {
  size_t s = *sl, i;
  if (b->special && same_scheme(b, buf, s)) {
    size_t rest = n - s - 1;
    /* "./" keeps a rest such as "g:h" from reading as a scheme of its own. */
    int dot = rest > 0 && buf[s + 1] != '/' && buf[s + 1] != '?' && buf[s + 1] != '#';
    memmove(buf + (dot ? 2 : 0), buf + s + 1, rest + 1);
    if (dot) buf[0] = '.', buf[1] = '/';
    *sl = 0;
    return rest + (dot ? 2 : 0);
  }
  for (i = s + 1; i < n && buf[i] == '/'; i++) {}
  memmove(buf + s + 3, buf + i, n - i + 1);
  buf[s + 1] = buf[s + 2] = '/';
  return s + 3 + (n - i);
}

/* A "%2e" (any case) is a '.' in the path segments that are "." or ".." once it is
 * decoded: browsers remove such dot segments, curl 7.88.1 would keep "%2e%2e" as a
 * name. Only the path (after an authority, before '?' and '#') is looked at; other
 * escapes are kept. Returns the new length of s. */
static size_t decode_dot_segments(char *s, size_t n) {
  size_t i = 0, o, end, sl = scheme_len(s, n);
  if (sl > 0) i = sl + 1;
  if (i + 1 < n && s[i] == '/' && s[i + 1] == '/')
    for (i += 2; i < n && s[i] != '/' && s[i] != '?' && s[i] != '#'; i++) {}
  for (end = i; end < n && s[end] != '?' && s[end] != '#'; end++) {}
  if (memchr(s + i, '%', end - i) == NULL) return n;
  o = i;
  while (i < end) {
    size_t j, k, dots = 0;
    int escaped = 0;
    for (j = i; j < end && s[j] != '/'; j++) {}
    for (k = i; k < j;) {
      if (s[k] == '.') {
        dots++, k++;
      } else if (s[k] == '%' && k + 2 < j && s[k + 1] == '2' && (s[k + 2] | 0x20) == 'e') {
        dots++, escaped = 1, k += 3;
      } else {
        break;
      }
    }
    if (k == j && escaped && dots <= 2) {
      while (dots--) s[o++] = '.';
    } else {
      memmove(s + o, s + i, j - i);
      o += j - i;
    }
    if (j < end) s[o++] = '/';
    i = j < end ? j + 1 : j;
  }
  memmove(s + o, s + end, n - end + 1);
  return o + (n - end);
}

/* ---- The fast path: joins curl would do, done here (issue 16: ~20,000 instructions
 * a link through curl_url, most of it curl's printf, a third of doc:links()). It takes
 * only references whose result is certain: plain bytes, an http(s) base, simple
 * shapes. Everything else goes to curl as before. test/test_url_fast.c checks it
 * against curl byte for byte on random references. ---- */

/* Longest reference and base taken (curl refuses URLs over 8 MB; stay far below). */
#define FAST_MAX 8192

/* Bytes that curl 7.88.1 keeps as they are in a path, query or fragment once clean()
 * has run: printable ASCII. '\' is left to curl (clean() keeps it after the query). */
static int fast_byte(unsigned char c) {
  return c > 0x20 && c < 0x7f && c != '\\';
}

static int ascii_alpha(unsigned char c) {
  return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

static int ascii_digit(unsigned char c) {
  return c >= '0' && c <= '9';
}

/* Whether s[0..n) is an IPv4 address as curl 7.88.1 writes one: four decimal numbers
 * up to 255 without leading zeros ("127.0.0.1"; curl rewrites "127.1" or "0x7f.1"). */
static int canonical_ipv4(const char *s, size_t n) {
  size_t i = 0;
  int parts;
  for (parts = 1;; parts++) {
    size_t start = i;
    unsigned v = 0;
    while (i < n && i - start < 3 && ascii_digit((unsigned char)s[i]))
      v = v * 10 + (unsigned)(s[i++] - '0');
    if (i == start || v > 255 || (s[start] == '0' && i - start > 1)) return 0;
    if (i == n) return parts == 4;
    if (s[i] != '.' || parts == 4) return 0;
    i++;
  }
}

/* Whether s[0..n) is host[:port] that curl writes back as it is: a host of letters,
 * digits, '-' and '.' that starts with a letter, or else an IPv4 address as curl
 * writes it (curl rewrites a host that starts with a digit when it reads as an IPv4
 * address: "127.1", "0x7f.1"), and a port of 1 to 5 digits, no leading zero, at most
 * 65535 (curl writes "080" as "80", drops "h:"'s ':' and refuses 99999). No userinfo,
 * no IPv6 literal. Case is kept, as curl keeps it. */
static int plain_authority(const char *s, size_t n) {
  size_t i, host;
  unsigned long port = 0;
  for (host = 0; host < n && s[host] != ':'; host++) {}
  if (host == 0) return 0;
  if (ascii_digit((unsigned char)s[0])) {
    if (!canonical_ipv4(s, host)) return 0;
  } else {
    if (!ascii_alpha((unsigned char)s[0])) return 0;
    for (i = 0; i < host; i++) {
      unsigned char c = (unsigned char)s[i];
      if (!ascii_alpha(c) && !ascii_digit(c) && c != '-' && c != '.') return 0;
    }
  }
  if (host == n) return 1;
  i = host + 1;
  if (i == n || s[i] == '0' || n - i > 5) return 0;
  for (; i < n; i++) {
    if (!ascii_digit((unsigned char)s[i])) return 0;
    port = port * 10 + (unsigned long)(s[i] - '0');
  }
  return port <= 65535;
}

/* Sets b->scheme and b->auth_end when the base suits fast_join: http or https (curl
 * writes the scheme lower-cased), a plain authority (curl reparses it at every join,
 * so only what it writes back unchanged is copied), and plain bytes throughout. */
static void fast_base(lr_url_base *b) {
  size_t sl = scheme_len(b->str, b->len), i;
  if (b->len > FAST_MAX || !(sl == 4 || sl == 5) || strncmp(b->str, "https", sl) != 0 ||
      strncmp(b->str + sl, "://", 3) != 0)
    return;
  for (i = 0; i < b->len; i++)
    if (!fast_byte((unsigned char)b->str[i])) return;
  for (i = sl + 3; i < b->len && b->str[i] != '/'; i++) {}
  if (i == b->len || i > b->prefix || !plain_authority(b->str + sl + 3, i - sl - 3)) return;
  b->scheme = sl;
  b->auth_end = i;
}

/* RFC 3986 5.2.4 remove_dot_segments, in place, on a path p[0..n) that starts with
 * '/' (the only kind fast_join makes). Returns the new length. */
static size_t remove_dots(char *p, size_t n) {
  size_t i = 0, o = 0;
  while (i < n) {
    size_t j = i + 1;
    while (j < n && p[j] != '/') j++;
    if (j - i == 2 && p[i + 1] == '.') { /* "/./" is "/", "/." at the end too */
      if (j == n) p[o++] = '/';
    } else if (j - i == 3 && p[i + 1] == '.' && p[i + 2] == '.') {
      while (o > 0 && p[o - 1] != '/') o--; /* the last segment and its '/' go */
      if (o > 0) o--;
      if (j == n) p[o++] = '/';
    } else {
      if (o != i) memmove(p + o, p + i, j - i); /* most paths have no dot segment */
      o += j - i;
    }
    i = j;
  }
  return o;
}

/* Where a relative-path reference r goes after the base's path bp[0..bpn) (which
 * starts with '/'): curl 7.88.1's concat_url, which fast_join must follow as it is,
 * RFC 3986 or not. It keeps bp up to its last '/' (excluded), skips one "./" of r and
 * for each "../" then cuts one more segment, never the first '/'; it puts a '/'
 * between the two unless r's rest starts with '/' or '?' or what is kept ends with
 * the first '/' ("http://a//" and "a" make "http://a/a"; "/b/c" and ".//x" make
 * "/b/x"). Sets *keep (bytes of bp kept), *slash, and returns the rest of r. */
static const char *concat_rule(const char *bp, size_t bpn, const char *r, size_t *keep,
                               int *slash) {
  size_t root = bpn, level = 0;
  int sep; /* whether what is kept has a '/' after which segments may be cut */
  while (bp[root - 1] != '/') root--;
  root--;
  sep = root > 0;
  if (r[0] == '.' && r[1] == '/') r += 2;
  while (r[0] == '.' && r[1] == '.' && r[2] == '/') level++, r += 3;
  while (sep && level-- > 0) {
    size_t k = root;
    while (k > 1 && bp[k - 1] != '/') k--;
    if (k > 1) {
      root = k - 1;
    } else {
      root = 1;
      break;
    }
  }
  *keep = root;
  *slash = !(r[0] == '/' || r[0] == '?' || (sep && root == 1));
  return r;
}

/* What fast_join writes: scheme "://" authority, then what curl parses after them:
 * keep bytes of the base's path, a '/' if slash, the rest of the reference. */
struct fast_parts {
  const char *scheme, *auth, *rest;
  size_t schemen, authn, keep, restn;
  int slash;
};

/* Splits r[0..n) (as fast_join takes it) into p; 0 if fast_join must leave it. */
static int fast_split(const lr_url_base *b, const char *r, size_t n, size_t sl,
                      struct fast_parts *p) {
  size_t i;
  for (i = 0; i < n; i++)
    if (!fast_byte((unsigned char)r[i])) return 0;
  p->scheme = b->str, p->schemen = b->scheme;
  p->auth = b->str + b->scheme + 3, p->authn = b->auth_end - b->scheme - 3;
  p->rest = r, p->keep = 0, p->slash = 0;
  if (sl > 0 || (r[0] == '/' && r[1] == '/')) {
    if (sl > 0 && !((sl == 4 && strncasecmp(r, "http", 4) == 0) ||
                    (sl == 5 && strncasecmp(r, "https", 5) == 0)))
      return 0;
    if (sl > 0) p->scheme = r, p->schemen = sl;
    i = sl > 0 ? sl + 3 : 2;
    p->auth = r + i;
    while (i < n && r[i] != '/' && r[i] != '?' && r[i] != '#') i++;
    p->authn = (size_t)(r + i - p->auth);
    if (!plain_authority(p->auth, p->authn)) return 0;
    p->rest = r + i;
  } else if (r[0] != '/') {
    /* A ':' in the first segment is left to curl 7.88.1, which takes "1a:b" for a
     * scheme and refuses it. */
    for (i = 0; i < n && r[i] != '/' && r[i] != '?' && r[i] != '#'; i++)
      if (r[i] == ':') return 0;
    p->rest = concat_rule(b->str + b->auth_end, b->prefix - b->auth_end, r, &p->keep,
                          &p->slash);
  }
  p->restn = (size_t)(r + n - p->rest);
  return 1;
}

/* s[start..end) is what follows the authority, as curl would parse it; s has a byte
 * to spare after end. Writes it back as curl does and returns the URL's new length:
 * an empty path is "/", dot segments removed from the path, an empty query's '?' and
 * an empty fragment's '#' dropped (curl 7.88.1 writes neither). */
static size_t fast_tail(char *s, size_t start, size_t end, unsigned flags) {
  size_t q, f, o;
  for (q = start; q < end && s[q] != '?' && s[q] != '#'; q++) {}
  if (q == start) {
    memmove(s + start + 1, s + start, end - start);
    s[start] = '/';
    q++, end++;
  }
  for (f = q; f < end && s[f] != '#'; f++) {}
  o = start + remove_dots(s + start, q - start);
  if (f - q > 1) memmove(s + o, s + q, f - q), o += f - q;
  if (end - f > 1 && !(flags & LR_URL_NO_FRAGMENT)) memmove(s + o, s + f, end - f), o += end - f;
  s[o] = '\0';
  return o;
}

/* ref r[0..n) (cleaned, dot escapes decoded, not "", "#..." or "?...", with a scheme
 * of sl bytes only if "//" follows it) joined against b as curl would join it: 1 with
 * *out set (malloc'd), 0 when the reference is not one this path takes (curl then
 * does it), -1 when memory is short. curl joins as strings (concat_rule), then parses
 * the result: fast_join does the same, for what curl writes back unchanged. */
static int fast_join(const lr_url_base *b, const char *r, size_t n, size_t sl,
                     unsigned flags, char **out, size_t *outlen) {
  struct fast_parts p;
  size_t o, start;
  char *s;
  if (b->scheme == 0 || n > FAST_MAX || !fast_split(b, r, n, sl, &p)) return 0;
  s = malloc(p.schemen + 3 + p.authn + p.keep + (size_t)p.slash + p.restn + 2);
  if (s == NULL) return -1;
  for (o = 0; o < p.schemen; o++) s[o] = (char)(p.scheme[o] | 0x20); /* "HTTP" too */
  memcpy(s + o, "://", 3), o += 3;
  memcpy(s + o, p.auth, p.authn), o += p.authn;
  start = o;
  memcpy(s + o, b->str + b->auth_end, p.keep), o += p.keep;
  if (p.slash) s[o++] = '/';
  memcpy(s + o, p.rest, p.restn), o += p.restn;
  *outlen = fast_tail(s, start, o, flags);
  *out = s;
  return 1;
}

char *lr_url_join(const lr_url_base *b, const char *ref, size_t reflen, unsigned flags,
                  size_t *outlen, char *err, size_t errlen) {
  char *buf = clean_buf(reflen), *out;
  size_t n, sl;
  if (buf == NULL) {
    set_err(err, errlen, "out of memory", CURLUE_OK);
    return NULL;
  }
  n = clean(ref, reflen, b->special, buf);
  sl = scheme_len(buf, n);
  if (sl > 0 && special_scheme(buf, sl) != b->special)
    n = clean(ref, reflen, !b->special, buf);
  if (sl > 0 && special_scheme(buf, sl) && !(buf[sl + 1] == '/' && buf[sl + 2] == '/'))
    n = special_no_slashes(b, buf, n, &sl);
  if (n == 0 || buf[0] == '#') {
    /* RFC 3986 5.2.2: the base, its query kept, the reference's fragment. */
    out = concat(b->str, b->len, buf, n, flags, outlen);
  } else if (buf[0] == '?') {
    out = concat(b->str, b->prefix, buf, n, flags, outlen);
  } else if (sl > 0 && !(buf[sl + 1] == '/' && buf[sl + 2] == '/')) {
    /* "mailto:x", "javascript:...", "g:h": no authority, nothing to join or for curl
     * to normalise; the scheme is lower-cased so that callers can compare it. */
    for (size_t i = 0; i < sl; i++) buf[i] = (char)tolower((unsigned char)buf[i]);
    out = concat("", 0, buf, n, flags, outlen);
  } else {
    int fast = 0;
    out = NULL;
    n = decode_dot_segments(buf, n);
    if (!(flags & LR_URL_SLOW)) fast = fast_join(b, buf, n, sl, flags, &out, outlen);
    if (fast < 0)
      set_err(err, errlen, "out of memory", CURLUE_OK);
    else if (fast == 0 && (flags & LR_URL_FAST_ONLY))
      set_err(err, errlen, "not taken by the fast path", CURLUE_OK);
    else if (fast == 0)
      out = curl_join(b, buf, sl > 0, flags, outlen, err, errlen);
    free(buf);
    return out;
  }
  if (out == NULL) set_err(err, errlen, "out of memory", CURLUE_OK);
  free(buf);
  return out;
}

static int unreserved(int c) {
  return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

size_t lr_url_pct_normalize(char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  size_t i, o = 0;
  for (i = 0; i < n; i++) {
    int h, l;
    if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
        isxdigit((unsigned char)s[i + 2])) {
      h = isdigit((unsigned char)s[i + 1]) ? s[i + 1] - '0' : (tolower(s[i + 1]) - 'a' + 10);
      l = isdigit((unsigned char)s[i + 2]) ? s[i + 2] - '0' : (tolower(s[i + 2]) - 'a' + 10);
      if (unreserved(h * 16 + l)) {
        s[o++] = (char)(h * 16 + l);
      } else {
        s[o++] = '%';
        s[o++] = hex[h];
        s[o++] = hex[l];
      }
      i += 2;
    } else {
      s[o++] = s[i];
    }
  }
  s[o] = '\0';
  return o;
}

char *lr_url_normalize(const char *url, size_t len, size_t *outlen, char *err,
                       size_t errlen) {
  lr_url_base *b;
  CURLU *u = NULL;
  char *buf = clean_buf(len), *host = NULL, *got = NULL, *out = NULL;
  size_t n;
  if (buf == NULL) {
    set_err(err, errlen, "out of memory", CURLUE_OK);
    return NULL;
  }
  /* Escapes are normalised before curl parses, so that "%2E%2E" segments are dot
   * segments by the time curl removes them, and normalising twice changes nothing. */
  n = clean(url, len, 1, buf);
  if (scheme_len(buf, n) == 0) {
    free(buf);
    set_err(err, errlen, "not an absolute URL", CURLUE_OK);
    return NULL;
  }
  if (!special_scheme(buf, scheme_len(buf, n))) n = clean(url, len, 0, buf);
  n = lr_url_pct_normalize(buf, n);
  b = base_new(buf, n, "invalid URL", err, errlen);
  free(buf);
  if (b == NULL) return NULL;
  u = lr_curl.url_dup(b->u);
  if (u == NULL) goto oom;
  if (lr_curl.url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host) {
    for (char *p = host; *p; p++) *p = (char)tolower((unsigned char)*p);
    lr_curl.url_set(u, CURLUPART_HOST, host, 0);
  }
  if (lr_curl.url_get(u, CURLUPART_URL, &got, CURLU_NO_DEFAULT_PORT) != CURLUE_OK) goto oom;
  out = concat("", 0, got, strlen(got), 0, outlen);
  if (out == NULL) goto oom;
  goto done;
oom:
  set_err(err, errlen, "out of memory", CURLUE_OK);
done:
  lr_curl.free(host);
  lr_curl.free(got);
  if (u) lr_curl.url_cleanup(u);
  lr_url_base_free(b);
  return out;
}
