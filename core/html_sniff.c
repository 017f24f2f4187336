/* html_sniff.c: which encoding a page is in (the WHATWG order), and the page turned
 * into clean UTF-8 before libxml2 sees it.
 *
 * Why not let libxml2 2.9.14 decide: it looks only for the http-equiv form of <meta>,
 * switches to ISO-8859-1 at the first invalid UTF-8 byte (mojibake from there on),
 * truncates text at a NUL, and decodes "latin1" as true ISO-8859-1 (C1 controls where
 * pages mean curly quotes). So everything is decoded here, NULs and invalid sequences
 * become U+FFFD, and libxml2 is always told "UTF-8". A clean UTF-8 page (the usual
 * case) is passed through without a copy; windows-1252 and UTF-16 are decoded by
 * hand (glibc's CP1252 rejects the five bytes WHATWG maps to C1 controls), the rest
 * through iconv(3), an invalid byte becoming U+FFFD.
 */
#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include "lr_html.h"

/* ---- labels ---- */

/* WHATWG encoding labels, by encoding; each name's iconv name after it ("" for the
 * ones decoded by hand). A label list ends with NULL. */
typedef struct {
  const char *name, *iconv_name;
  const char *labels[20];
} enc_entry;

static const enc_entry encodings[] = {
  {"utf-8", "", {"unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "utf-8", "utf8",
                 "x-unicode20utf8", NULL}},
  {"windows-1252", "", {"ansi_x3.4-1968", "ascii", "cp1252", "cp819", "csisolatin1", "ibm819",
                        "iso-8859-1", "iso-ir-100", "iso8859-1", "iso88591", "iso_8859-1",
                        "iso_8859-1:1987", "l1", "latin1", "us-ascii", "windows-1252",
                        "x-cp1252", "x-user-defined", NULL}},
  {"utf-16le", "", {"csunicode", "iso-10646-ucs-2", "ucs-2", "unicode", "unicodefeff",
                    "utf-16", "utf-16le", NULL}},
  {"utf-16be", "", {"unicodefffe", "utf-16be", NULL}},
  {"iso-8859-2", "ISO-8859-2", {"csisolatin2", "iso-8859-2", "iso-ir-101", "iso8859-2",
                                "iso88592", "iso_8859-2", "l2", "latin2", NULL}},
  {"iso-8859-5", "ISO-8859-5", {"csisolatincyrillic", "cyrillic", "iso-8859-5", "iso8859-5",
                                "iso88595", "iso_8859-5", NULL}},
  {"iso-8859-7", "ISO-8859-7", {"greek", "greek8", "iso-8859-7", "iso8859-7", "iso88597",
                                "iso_8859-7", "sun_eu_greek", NULL}},
  {"iso-8859-8", "ISO-8859-8", {"hebrew", "iso-8859-8", "iso-8859-8-i", "iso8859-8",
                                "iso88598", "iso_8859-8", "visual", "logical", NULL}},
  {"iso-8859-15", "ISO-8859-15", {"csisolatin9", "iso-8859-15", "iso8859-15", "iso885915",
                                  "iso_8859-15", "l9", NULL}},
  {"koi8-r", "KOI8-R", {"cskoi8r", "koi", "koi8", "koi8-r", "koi8_r", NULL}},
  {"koi8-u", "KOI8-U", {"koi8-ru", "koi8-u", NULL}},
  {"ibm866", "IBM866", {"866", "cp866", "csibm866", "ibm866", NULL}},
  {"windows-1250", "WINDOWS-1250", {"cp1250", "windows-1250", "x-cp1250", NULL}},
  {"windows-1251", "WINDOWS-1251", {"cp1251", "windows-1251", "x-cp1251", NULL}},
  {"windows-1253", "WINDOWS-1253", {"cp1253", "windows-1253", "x-cp1253", NULL}},
  {"windows-1254", "WINDOWS-1254", {"cp1254", "iso-8859-9", "iso8859-9", "iso88599",
                                    "iso_8859-9", "latin5", "l5", "windows-1254",
                                    "x-cp1254", NULL}},
  {"windows-1255", "WINDOWS-1255", {"cp1255", "windows-1255", "x-cp1255", NULL}},
  {"windows-1256", "WINDOWS-1256", {"cp1256", "windows-1256", "x-cp1256", NULL}},
  {"windows-1257", "WINDOWS-1257", {"cp1257", "windows-1257", "x-cp1257", NULL}},
  {"windows-1258", "WINDOWS-1258", {"cp1258", "windows-1258", "x-cp1258", NULL}},
  {"windows-874", "CP874", {"dos-874", "iso-8859-11", "iso8859-11", "iso885911", "tis-620",
                            "windows-874", NULL}},
  {"macintosh", "MACINTOSH", {"csmacintosh", "mac", "macintosh", "x-mac-roman", NULL}},
  {"gbk", "GB18030", {"chinese", "csgb2312", "csiso58gb231280", "gb2312", "gb_2312",
                      "gb_2312-80", "gbk", "iso-ir-58", "x-gbk", NULL}},
  {"gb18030", "GB18030", {"gb18030", NULL}},
  {"big5", "BIG5-HKSCS", {"big5", "big5-hkscs", "cn-big5", "csbig5", "x-x-big5", NULL}},
  {"euc-jp", "EUC-JP", {"cseucpkdfmtjapanese", "euc-jp", "x-euc-jp", NULL}},
  {"iso-2022-jp", "ISO-2022-JP", {"csiso2022jp", "iso-2022-jp", NULL}},
  {"shift_jis", "WINDOWS-31J", {"csshiftjis", "ms932", "ms_kanji", "shift-jis", "shift_jis",
                                "sjis", "windows-31j", "x-sjis", NULL}},
  {"euc-kr", "CP949", {"cseuckr", "csksc56011987", "euc-kr", "iso-ir-149", "korean",
                       "ks_c_5601-1987", "ks_c_5601-1989", "ksc5601", "ksc_5601",
                       "windows-949", NULL}},
};

static int is_space(int c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}
static int lower(int c) {
  return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static const enc_entry *find_label(const char *label, size_t len) {
  char buf[32];
  size_t i, j;
  while (len && is_space((unsigned char)*label)) label++, len--;
  while (len && is_space((unsigned char)label[len - 1])) len--;
  if (len == 0 || len >= sizeof buf) return NULL;
  for (i = 0; i < len; i++) buf[i] = (char)lower((unsigned char)label[i]);
  buf[len] = '\0';
  for (i = 0; i < sizeof encodings / sizeof encodings[0]; i++)
    for (j = 0; encodings[i].labels[j]; j++)
      if (strcmp(encodings[i].labels[j], buf) == 0) return &encodings[i];
  return NULL;
}

const char *lr_html_encoding_name(const char *label, size_t len) {
  const enc_entry *e = find_label(label, len);
  return e ? e->name : NULL;
}

/* ---- finding a charset in a Content-Type value or a <meta content> ---- */

/* WHATWG "extract a character encoding from a meta element", which also reads the
 * charset parameter of a Content-Type header. */
static const enc_entry *charset_in(const char *s, size_t n) {
  size_t i = 0, start;
  for (;;) {
    while (i + 7 <= n) {
      size_t k;
      for (k = 0; k < 7 && lower((unsigned char)s[i + k]) == "charset"[k]; k++) {}
      if (k == 7) break;
      i++;
    }
    if (i + 7 > n) return NULL;
    i += 7;
    while (i < n && is_space((unsigned char)s[i])) i++;
    if (i >= n || s[i] != '=') continue;
    i++;
    while (i < n && is_space((unsigned char)s[i])) i++;
    if (i >= n) return NULL;
    if (s[i] == '"' || s[i] == '\'') {
      char q = s[i++];
      start = i;
      while (i < n && s[i] != q) i++;
      if (i >= n) return NULL;
      return find_label(s + start, i - start);
    }
    start = i;
    /* ',' too: a repeated header joined by ',' ("...charset=koi8-r, text/html"); no
     * label has one */
    while (i < n && !is_space((unsigned char)s[i]) && s[i] != ';' && s[i] != ',') i++;
    return find_label(s + start, i - start);
  }
}

/* One attribute of a tag, for the prescan (WHATWG "get an attribute"): names and
 * values lowercased, cut to fit (a charset label is short). 0 when none is left. */
typedef struct {
  char name[16], value[256];
  size_t nlen, vlen;
} attr;

static void put(char *b, size_t *len, size_t cap, int c) {
  if (*len + 1 < cap) b[(*len)++] = (char)lower(c);
  b[*len] = '\0';
}

static int get_attr(const unsigned char *s, size_t n, size_t *pos, attr *a) {
  size_t i = *pos;
  a->nlen = a->vlen = 0;
  a->name[0] = a->value[0] = '\0';
  while (i < n && (is_space(s[i]) || s[i] == '/')) i++;
  if (i >= n || s[i] == '>') return *pos = i, 0;
  for (;;) { /* the name */
    if (i >= n) return *pos = i, 0;
    if (s[i] == '=' && a->nlen > 0) { i++; goto value; }
    if (is_space(s[i])) break;
    if (s[i] == '/' || s[i] == '>') return *pos = i, 1;
    put(a->name, &a->nlen, sizeof a->name, s[i++]);
  }
  while (i < n && is_space(s[i])) i++;
  if (i >= n || s[i] != '=') return *pos = i, 1;
  i++;
value:
  while (i < n && is_space(s[i])) i++;
  if (i >= n) return *pos = i, 0;
  if (s[i] == '"' || s[i] == '\'') {
    unsigned char q = s[i++];
    while (i < n && s[i] != q) put(a->value, &a->vlen, sizeof a->value, s[i++]);
    if (i >= n) return *pos = i, 0;
    return *pos = i + 1, 1;
  }
  if (s[i] == '>') return *pos = i, 1;
  while (i < n && !is_space(s[i]) && s[i] != '>') put(a->value, &a->vlen, sizeof a->value, s[i++]);
  return *pos = i, i < n;
}

static int starts_ci(const unsigned char *s, size_t n, size_t i, const char *w) {
  for (; *w; w++, i++)
    if (i >= n || lower(s[i]) != *w) return 0;
  return 1;
}

/* WHATWG "prescan a byte stream to determine its encoding", on the first 1024 bytes. */
static const enc_entry *prescan(const unsigned char *s, size_t n) {
  size_t i = 0;
  if (n > 1024) n = 1024;
  while (i < n) {
    if (starts_ci(s, n, i, "<!--")) {
      i += 2; /* "<!-->" ends the comment too */
      while (i + 2 < n && !(s[i] == '-' && s[i + 1] == '-' && s[i + 2] == '>')) i++;
      if (i + 2 >= n) return NULL;
      i += 3;
      continue;
    }
    if (starts_ci(s, n, i, "<meta") && i + 5 < n && (is_space(s[i + 5]) || s[i + 5] == '/')) {
      attr a;
      int got_pragma = 0, need_pragma = -1, seen = 0, failed = 0;
      const enc_entry *cs = NULL;
      i += 5;
      while (get_attr(s, n, &i, &a)) {
        if (strcmp(a.name, "http-equiv") == 0 && !(seen & 1)) {
          seen |= 1;
          if (strcmp(a.value, "content-type") == 0) got_pragma = 1;
        } else if (strcmp(a.name, "content") == 0 && !(seen & 2)) {
          seen |= 2;
          if (cs == NULL && !failed && (cs = charset_in(a.value, a.vlen)) != NULL)
            need_pragma = 1;
        } else if (strcmp(a.name, "charset") == 0 && !(seen & 4)) {
          seen |= 4;
          cs = find_label(a.value, a.vlen);
          failed = cs == NULL; /* WHATWG: a charset that fails skips the meta */
          need_pragma = 0;
        }
      }
      if (cs && need_pragma >= 0 && (need_pragma == 0 || got_pragma)) {
        if (strncmp(cs->name, "utf-16", 6) == 0) return &encodings[0]; /* as WHATWG says */
        return cs;
      }
      continue;
    }
    if (s[i] == '<' && i + 1 < n &&
        (((s[i + 1] | 32) >= 'a' && (s[i + 1] | 32) <= 'z') ||
         (s[i + 1] == '/' && i + 2 < n && (s[i + 2] | 32) >= 'a' && (s[i + 2] | 32) <= 'z'))) {
      attr a;
      while (i < n && !is_space(s[i]) && s[i] != '>') i++;
      while (get_attr(s, n, &i, &a)) {}
      i++;
      continue;
    }
    if (s[i] == '<' && i + 1 < n && (s[i + 1] == '!' || s[i + 1] == '/' || s[i + 1] == '?')) {
      while (i < n && s[i] != '>') i++;
    }
    i++;
  }
  return NULL;
}

/* ---- decoding ---- */

/* The length of the valid UTF-8 sequence at s (n > 0 bytes left), or 0 with *bad set
 * to the length of its maximal invalid subpart (what one U+FFFD replaces). */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad) {
  unsigned c = s[0];
  size_t need, i;
  unsigned lo = 0x80, hi = 0xBF;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  for (i = 1; i <= need; i++) {
    if (i >= n || s[i] < lo || s[i] > hi) {
      *bad = i;
      return 0;
    }
    lo = 0x80, hi = 0xBF;
  }
  return need + 1;
}

/* Counts the replacements clean UTF-8 needs (NULs, invalid subparts); 0: clean. */
static size_t utf8_faults(const unsigned char *s, size_t n) {
  size_t i = 0, faults = 0, k, bad;
  uint64_t w;
  while (i < n) {
    /* Eight bytes at a time while they are ASCII and none is NUL: most of a page is
     * markup, and this check was 2 % of parsing a 1 MB page byte by byte (perf). */
    while (n - i >= 8) {
      memcpy(&w, s + i, 8);
      if ((w & 0x8080808080808080ull) != 0 ||
          ((w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull) != 0)
        break;
      i += 8;
    }
    if (i >= n) break;
    if (s[i] < 0x80) {
      if (s[i] == 0) faults++;
      i++;
      continue;
    }
    if ((k = utf8_seq(s + i, n - i, &bad)) == 0) faults++, k = bad;
    i += k;
  }
  return faults;
}

static const char FFFD[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

/* s with NULs and invalid subparts replaced; the output is n + 2 * faults bytes. */
static void utf8_clean(const unsigned char *s, size_t n, char *o) {
  size_t i = 0, k, bad;
  while (i < n) {
    if (s[i] < 0x80) {
      if (s[i] == 0) memcpy(o, FFFD, 3), o += 3;
      else *o++ = (char)s[i];
      i++;
      continue;
    }
    if ((k = utf8_seq(s + i, n - i, &bad)) == 0) {
      memcpy(o, FFFD, 3), o += 3;
      i += bad;
    } else {
      memcpy(o, s + i, k), o += k;
      i += k;
    }
  }
}

static char *put_cp(char *o, unsigned cp) {
  if (cp < 0x80) *o++ = (char)cp;
  else if (cp < 0x800) {
    *o++ = (char)(0xC0 | cp >> 6);
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *o++ = (char)(0xE0 | cp >> 12);
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *o++ = (char)(0xF0 | cp >> 18);
    *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  }
  return o;
}

/* windows-1252's 0x80-0x9F (WHATWG's index: the five unassigned bytes map to the C1
 * controls of the same value). */
static const unsigned short cp1252_c1[32] = {
  0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
  0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
  0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};

static size_t from_1252(const unsigned char *s, size_t n, char *o) {
  char *start = o;
  size_t i;
  for (i = 0; i < n; i++) {
    unsigned c = s[i];
    if (c == 0) c = 0xFFFD;
    else if (c >= 0x80 && c < 0xA0) c = cp1252_c1[c - 0x80];
    o = put_cp(o, c);
  }
  return (size_t)(o - start);
}

static size_t from_utf16(const unsigned char *s, size_t n, int be, char *o) {
  char *start = o;
  size_t i;
  for (i = 0; i + 1 < n; i += 2) {
    unsigned u = be ? (unsigned)s[i] << 8 | s[i + 1] : (unsigned)s[i + 1] << 8 | s[i];
    if (u >= 0xD800 && u <= 0xDBFF && i + 3 < n) {
      unsigned v = be ? (unsigned)s[i + 2] << 8 | s[i + 3] : (unsigned)s[i + 3] << 8 | s[i + 2];
      if (v >= 0xDC00 && v <= 0xDFFF) {
        o = put_cp(o, 0x10000 + ((u - 0xD800) << 10) + (v - 0xDC00));
        i += 2;
        continue;
      }
    }
    if (u == 0 || (u >= 0xD800 && u <= 0xDFFF)) u = 0xFFFD;
    o = put_cp(o, u);
  }
  if (i < n) o = put_cp(o, 0xFFFD); /* an odd byte at the end */
  return (size_t)(o - start);
}

/* Through iconv into a UTF-8 buffer (each invalid byte becomes U+FFFD); then the
 * output goes through utf8_clean for the NULs. -1: iconv lacks the encoding. */
static int from_iconv(const char *name, const unsigned char *s, size_t n, lr_html_utf8 *out) {
  iconv_t cd = iconv_open("UTF-8", name);
  size_t cap, left_in = n, left_out, faults;
  char *in = (char *)s, *buf, *o;
  if (cd == (iconv_t)-1) return -1;
  cap = n * 4 + 16; /* no encoding here takes fewer than 1 byte for 4 of UTF-8 */
  if ((buf = malloc(cap)) == NULL) {
    iconv_close(cd);
    return -2;
  }
  o = buf, left_out = cap;
  while (left_in > 0) {
    if (iconv(cd, &in, &left_in, &o, &left_out) != (size_t)-1) break;
    if (errno == E2BIG || left_out < 3) break; /* cannot happen with cap; stop safely */
    memcpy(o, FFFD, 3), o += 3, left_out -= 3;
    if (errno == EINVAL) break; /* an incomplete sequence at the end */
    in++, left_in--;
  }
  iconv(cd, NULL, NULL, &o, &left_out); /* the shift state's end (ISO-2022-JP) */
  iconv_close(cd);
  out->len = (size_t)(o - buf);
  if ((faults = utf8_faults((unsigned char *)buf, out->len)) != 0) {
    char *clean = malloc(out->len + 2 * faults);
    if (clean == NULL) {
      free(buf);
      return -2;
    }
    utf8_clean((unsigned char *)buf, out->len, clean);
    free(buf);
    buf = clean;
    out->len += 2 * faults;
  }
  out->p = out->buf = buf;
  return 0;
}

void lr_html_utf8_free(lr_html_utf8 *u) {
  free(u->buf);
  u->buf = NULL;
}

int lr_html_to_utf8(const lr_html_src *src, lr_html_utf8 *out, char *err, size_t errlen) {
  const unsigned char *s = (const unsigned char *)src->p;
  size_t n = src->len, faults;
  const enc_entry *e = NULL;
  out->buf = NULL;
  /* 1. a byte order mark */
  if (n >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF) e = &encodings[0], s += 3, n -= 3;
  else if (n >= 2 && s[0] == 0xFE && s[1] == 0xFF) e = &encodings[3], s += 2, n -= 2;
  else if (n >= 2 && s[0] == 0xFF && s[1] == 0xFE) e = &encodings[2], s += 2, n -= 2;
  /* 2. the caller's choice, 3. the transport's, 4. the page's own <meta> */
  if (e == NULL && src->forced && (e = find_label(src->forced, strlen(src->forced))) == NULL) {
    snprintf(err, errlen, "unknown encoding '%.40s'", src->forced);
    return -1;
  }
  if (e == NULL && src->content_type) e = charset_in(src->content_type, strlen(src->content_type));
  if (e == NULL) e = prescan(s, n);
  /* 5. UTF-8 if it is valid, else windows-1252 */
  faults = (size_t)-1; /* not counted yet */
  if (e == NULL) {
    /* NULs alone do not make a page invalid UTF-8 (they are replaced either way) */
    size_t i, nul = 0;
    if ((faults = utf8_faults(s, n)) != 0)
      for (i = 0; i < n; i++) nul += s[i] == 0;
    e = faults == nul ? &encodings[0] : &encodings[1];
  }
  snprintf(out->encoding, sizeof out->encoding, "%s", e->name);
  if (e == &encodings[0]) {
    if (faults == (size_t)-1) faults = utf8_faults(s, n);
    out->p = (const char *)s, out->len = n;
    if (faults == 0) return 0;
    if ((out->buf = malloc(n + 2 * faults)) == NULL) goto oom;
    utf8_clean(s, n, out->buf);
    out->p = out->buf, out->len = n + 2 * faults;
    return 0;
  }
  if (e == &encodings[1] || e == &encodings[2] || e == &encodings[3]) {
    if ((out->buf = malloc(n * 3 + 4)) == NULL) goto oom; /* 1 byte -> 3 at most */
    out->len = e == &encodings[1] ? from_1252(s, n, out->buf)
                                  : from_utf16(s, n, e == &encodings[3], out->buf);
    out->p = out->buf;
    return 0;
  }
  switch (from_iconv(e->iconv_name, s, n, out)) {
    case 0:
      return 0;
    case -1: /* this libc lacks it: the nearest we have */
      snprintf(out->encoding, sizeof out->encoding, "%s", encodings[1].name);
      if ((out->buf = malloc(n * 3 + 4)) == NULL) goto oom;
      out->len = from_1252(s, n, out->buf);
      out->p = out->buf;
      return 0;
    default:
      break;
  }
oom:
  snprintf(err, errlen, "out of memory");
  return -1;
}
