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
 * joined here as strings. */
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

/* A malloc'd buffer for clean(), or NULL if n is absurd or memory is short. */
static char *clean_buf(size_t n) {
  if (n > (SIZE_MAX - 1) / 3) return NULL;
  return malloc(3 * n + 1);
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

lr_url_base *lr_url_base_new(const char *base, size_t len, char *err, size_t errlen) {
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
    set_err(err, errlen, "invalid base URL", rc);
    goto fail;
  }
  if (!host_ok(b->u)) {
    set_err(err, errlen, "invalid base URL: a '%' in the host", CURLUE_OK);
    goto fail;
  }
  lr_curl.url_set(b->u, CURLUPART_FRAGMENT, NULL, 0);
  if (lr_curl.url_get(b->u, CURLUPART_URL, &full, 0) != CURLUE_OK) goto oom;
  b->len = strlen(full);
  b->str = malloc(b->len + 1);
  if (b->str == NULL) goto oom;
  memcpy(b->str, full, b->len + 1);
  b->prefix = b->len;
  if (lr_curl.url_get(b->u, CURLUPART_QUERY, &query, 0) == CURLUE_OK && query &&
      strlen(query) < b->len)
    b->prefix = b->len - strlen(query) - 1;
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
  if (!special_scheme(buf, scheme_len(buf, n))) n = clean(url, len, 0, buf);
  n = lr_url_pct_normalize(buf, n);
  b = lr_url_base_new(buf, n, err, errlen);
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
