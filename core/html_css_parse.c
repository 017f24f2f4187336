/* html_css_parse.c: a CSS selector group compiled to the program html_css_match.c
 * runs (the structs at the end of lr_html.h). A hand-written recursive descent over
 * the bytes: selectors are short, and the grammar (Selectors Level 4 minus what
 * scraping does not need) is small enough that a tokenizer pass would only add
 * copies. Every read is bounds-checked against the given length, so any byte string
 * (NULs included) either compiles or fails with a message naming the selector and
 * the offending part.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "lr_html.h"

/* ---- the arena: every piece of a compiled selector, freed at once ---- */

typedef struct block {
  struct block *next;
  size_t cap, used;
  max_align_t data[];
} block;

static void *arena_alloc(lr_css *css, size_t n) {
  block *b = css->blocks;
  n = (n + 15) & ~(size_t)15;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > 1024 ? n : 1024;
    block *nb = malloc(sizeof *nb + cap);
    if (!nb) return NULL;
    nb->next = b, nb->cap = cap, nb->used = 0;
    css->blocks = b = nb;
    css->size += sizeof *nb + cap;
  }
  void *p = (char *)b->data + b->used;
  b->used += n;
  return p;
}

void lr_css_free(lr_css *s) {
  if (!s) return;
  if (s->memo) free(s->memo->p);
  block *b = s->blocks;
  while (b) {
    block *next = b->next;
    free(b);
    b = next;
  }
  free(s);
}

size_t lr_css_size(const lr_css *s) { return s ? s->size : 0; }

/* ---- the parser's state and its errors ---- */

typedef struct parser {
  const unsigned char *src;
  size_t len, pos;
  lr_css *css;
  char *scratch;         /* 2*len+8 bytes: one unescaped name or string at a time */
  char *err;
  size_t errlen;
  int failed, depth;
} parser;

/* Copies up to max bytes of s into out, control bytes as '?' (the message may be
 * printed; the selector may hold anything). */
static void quote(char *out, size_t outlen, const unsigned char *s, size_t n, size_t max) {
  size_t i, o = 0;
  for (i = 0; i < n && i < max && o + 4 < outlen; i++)
    out[o++] = (s[i] < 0x20 || s[i] == 0x7f) ? '?' : (char)s[i];
  if (i < n && o + 4 < outlen) out[o++] = '.', out[o++] = '.', out[o++] = '.';
  out[o] = '\0';
}

/* Records the first error: "<what> in '<selector>'". */
static int fail(parser *P, const char *fmt, ...) {
  char what[160], sel[100];
  va_list ap;
  if (P->failed) return 0;
  P->failed = 1;
  if (!P->err || P->errlen == 0) return 0;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  quote(sel, sizeof sel, P->src, P->len, 80);
  snprintf(P->err, P->errlen, "%s in '%s'", what, sel);
  return 0;
}

static int oom(parser *P) {
  if (!P->failed && P->err && P->errlen) snprintf(P->err, P->errlen, "out of memory");
  P->failed = 1;
  return 0;
}

/* The source from position at, quoted for a message (at most a few bytes). */
static const char *near(parser *P, size_t at, char *buf, size_t buflen) {
  if (at >= P->len) return "end of selector";
  quote(buf, buflen, P->src + at, P->len - at, 12);
  return buf;
}

static int unexpected(parser *P) {
  char buf[32];
  if (P->pos >= P->len) return fail(P, "unexpected end of selector");
  if (P->src[P->pos] == 0) return fail(P, "unexpected NUL byte at offset %zu", P->pos);
  return fail(P, "unexpected '%s' at offset %zu", near(P, P->pos, buf, sizeof buf), P->pos);
}

/* ---- characters ---- */

static int peek(parser *P) { return P->pos < P->len ? P->src[P->pos] : -1; }
static int peek_at(parser *P, size_t off) {
  return P->pos + off < P->len ? P->src[P->pos + off] : -1;
}
static int is_ws(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }
static int is_hex(int c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
static int name_start(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}
static int name_char(int c) { return name_start(c) || (c >= '0' && c <= '9') || c == '-'; }
/* A backslash at off that starts an escape (not before a newline or the end). */
static int escape_at(parser *P, size_t off) {
  int c = peek_at(P, off + 1);
  return peek_at(P, off) == '\\' && c != -1 && c != '\n' && c != '\r' && c != '\f';
}
static int skip_ws(parser *P) {
  size_t at = P->pos;
  while (is_ws(peek(P))) P->pos++;
  return P->pos > at;
}
/* Whether an identifier starts here (CSS Syntax 4.3.9). */
static int ident_starts(parser *P) {
  int c = peek(P);
  if (c == '-') {
    int d = peek_at(P, 1);
    return name_start(d) || d == '-' || escape_at(P, 1);
  }
  return name_start(c) || escape_at(P, 0);
}

static size_t put_utf8(char *o, unsigned long cp) {
  if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) cp = 0xfffd;
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) { o[0] = (char)(0xc0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* Consumes an escape (P->pos at the backslash, escape_at true) into o. At most 3
 * bytes out for 2 in ("\0" is U+FFFD), so the 2*len scratch always has room. */
static size_t escape(parser *P, char *o) {
  unsigned long cp = 0;
  int k = 0;
  P->pos++;
  while (k < 6 && is_hex(peek(P))) {
    int c = P->src[P->pos++];
    cp = cp * 16 + (unsigned long)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    k++;
  }
  if (k == 0) { o[0] = (char)P->src[P->pos++]; return 1; }
  if (peek(P) == '\r' && peek_at(P, 1) == '\n') P->pos += 2;
  else if (is_ws(peek(P))) P->pos++;
  return put_utf8(o, cp);
}

/* Copies a scratch string of n bytes into the arena, NUL-terminated. */
static const char *keep(parser *P, const char *s, size_t n) {
  char *p = arena_alloc(P->css, n + 1);
  if (!p) { oom(P); return NULL; }
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

/* Reads a run of name characters and escapes (none is an error); lowercased for
 * names that HTML compares without case. */
static const char *name(parser *P, int lower, size_t *n, const char *what) {
  size_t o = 0, i;
  for (;;) {
    int c = peek(P);
    if (c == '\\' && escape_at(P, 0)) o += escape(P, P->scratch + o);
    else if (c != -1 && name_char(c)) P->scratch[o++] = (char)c, P->pos++;
    else break;
  }
  if (o == 0) {
    char buf[32];
    if (peek(P) == '\\') return fail(P, "bad escape at offset %zu", P->pos), NULL;
    return fail(P, "expected %s at '%s'", what, near(P, P->pos, buf, sizeof buf)), NULL;
  }
  if (lower)
    for (i = 0; i < o; i++)
      if (P->scratch[i] >= 'A' && P->scratch[i] <= 'Z') P->scratch[i] |= 0x20;
  *n = o;
  return keep(P, P->scratch, o);
}

static const char *ident(parser *P, int lower, size_t *n, const char *what) {
  char buf[32];
  if (!ident_starts(P))
    return fail(P, "expected %s at '%s'", what, near(P, P->pos, buf, sizeof buf)), NULL;
  return name(P, lower, n, what);
}

/* A quoted string (P->pos at the quote), escapes resolved. */
static const char *string(parser *P, size_t *n) {
  int q = P->src[P->pos++];
  size_t o = 0, at = P->pos - 1;
  for (;;) {
    int c = peek(P);
    if (c == -1 || c == '\n' || c == '\r' || c == '\f')
      return fail(P, "unclosed string at offset %zu", at), NULL;
    if (c == q) { P->pos++; break; }
    if (c == 0) return unexpected(P), NULL; /* libxml2's values never hold one */
    if (c == '\\') {
      int d = peek_at(P, 1);
      if (d == -1) { P->pos++; continue; }              /* spec: nothing */
      if (d == '\n' || d == '\f') { P->pos += 2; continue; } /* a continued line */
      if (d == '\r') { P->pos += peek_at(P, 2) == '\n' ? 3 : 2; continue; }
      o += escape(P, P->scratch + o);
      continue;
    }
    P->scratch[o++] = (char)c;
    P->pos++;
  }
  *n = o;
  return keep(P, P->scratch, o);
}

/* ---- growable arrays in the arena (the old copy stays there: selectors are small) ---- */

static int grow(parser *P, void **arr, unsigned *cap, unsigned n, size_t elem) {
  if (n < *cap) return 1;
  unsigned ncap = *cap ? *cap * 2 : 4;
  void *p = arena_alloc(P->css, ncap * elem);
  if (!p) return oom(P);
  if (n) memcpy(p, *arr, n * elem);
  *arr = p, *cap = ncap;
  return 1;
}

/* ---- :nth-*(an+b) ---- */

#define NTH_MAX 1000000000000LL

static long long digits(parser *P, int *any) {
  long long v = 0;
  *any = 0;
  while (peek(P) >= '0' && peek(P) <= '9') {
    v = v * 10 + (P->src[P->pos++] - '0');
    if (v > NTH_MAX) v = NTH_MAX;
    *any = 1;
  }
  return v;
}

static int word(parser *P, const char *w) {
  size_t n = strlen(w), i;
  for (i = 0; i < n; i++)
    if ((peek_at(P, i) | 0x20) != w[i]) return 0;
  if (name_char(peek_at(P, n)) || peek_at(P, n) == '\\') return 0;
  P->pos += n;
  return 1;
}

/* an+b in every form of CSS Syntax 6 (odd, even, 5, -n+3, +n, 2n- 1, 2n + 1...),
 * whitespace around it; P->pos after the '('. Leaves P->pos at the ')'. */
static int anb(parser *P, lr_css_test *t) {
  int any, sign = 1;
  long long v;
  skip_ws(P);
  if (word(P, "odd")) t->a = 2, t->b = 1;
  else if (word(P, "even")) t->a = 2, t->b = 0;
  else {
    if (peek(P) == '+' || peek(P) == '-') sign = P->src[P->pos++] == '-' ? -1 : 1;
    v = digits(P, &any);
    if (peek(P) == 'n' || peek(P) == 'N') {
      P->pos++;
      t->a = sign * (any ? v : 1);
      t->b = 0;
      skip_ws(P);
      if (peek(P) == '+' || peek(P) == '-') {
        int bsign = P->src[P->pos++] == '-' ? -1 : 1;
        skip_ws(P);
        v = digits(P, &any);
        if (!any) return unexpected(P);
        t->b = bsign * v;
      }
    } else {
      if (!any) return unexpected(P);
      t->a = 0, t->b = sign * v;
    }
  }
  skip_ws(P);
  if (peek(P) != ')') {
    if (peek(P) == -1) return fail(P, "unclosed '('");
    return unexpected(P);
  }
  return 1;
}

/* ---- compounds ---- */

static lr_css_list *list(parser *P, int nested);

typedef struct tests { lr_css_test *t; unsigned n, cap; } tests;

static lr_css_test *add(parser *P, tests *ts, int kind) {
  if (!grow(P, (void **)&ts->t, &ts->cap, ts->n, sizeof *ts->t)) return NULL;
  lr_css_test *t = &ts->t[ts->n++];
  memset(t, 0, sizeof *t);
  t->kind = (unsigned char)kind;
  return t;
}

static int nth(parser *P, tests *ts, int of_type, int last, long long a, long long b) {
  lr_css_test *t = add(P, ts, LR_CSS_NTH);
  if (!t) return 0;
  t->of_type = (unsigned char)of_type, t->last = (unsigned char)last, t->a = a, t->b = b;
  return 1;
}

static int attr_test(parser *P, tests *ts, const char *attr, int op, const char *v, size_t n) {
  lr_css_test *t = add(P, ts, LR_CSS_ATTR);
  if (!t) return 0;
  t->name = attr, t->op = (unsigned char)op, t->s = v, t->n = n;
  return 1;
}

/* [name], [name op value flag]; P->pos at the '['. */
static int attribute(parser *P, tests *ts) {
  static const char ops[] = "=~|^$*";
  static const unsigned char kinds[] = {LR_CSS_EQ, LR_CSS_TOKEN, LR_CSS_DASH,
                                        LR_CSS_PREFIX, LR_CSS_SUFFIX, LR_CSS_SUBSTR};
  size_t at = P->pos, n, vn = 0;
  const char *nm, *v = "", *op;
  int c, kind = LR_CSS_EXISTS, icase = 0;
  P->pos++;
  skip_ws(P);
  if (peek(P) == '|' || peek(P) == '*')
    return fail(P, "namespaces are not supported (at offset %zu)", P->pos);
  if (!(nm = ident(P, 1, &n, "an attribute name"))) return 0;
  if (peek(P) == '|' && peek_at(P, 1) != '=')
    return fail(P, "namespaces are not supported (at offset %zu)", P->pos);
  skip_ws(P);
  c = peek(P);
  if (c != ']' && c != -1) {
    if (c == 0 || !(op = strchr(ops, c)) || (c != '=' && peek_at(P, 1) != '='))
      return unexpected(P);
    kind = kinds[op - ops];
    P->pos += c == '=' ? 1 : 2;
    skip_ws(P);
    c = peek(P);
    if (c == '"' || c == '\'') v = string(P, &vn);
    else v = name(P, 0, &vn, "an attribute value (quote values that are not names)");
    if (!v) return 0;
    /* The flag: [a="v"i] needs no space, [a=v i] does. */
    if ((skip_ws(P) || c == '"' || c == '\'') && (word(P, "i") || word(P, "s"))) {
      icase = (P->src[P->pos - 1] | 0x20) == 'i';
      skip_ws(P);
    }
  }
  if (peek(P) != ']') {
    if (peek(P) == -1) return fail(P, "unclosed '[' at offset %zu", at);
    return unexpected(P);
  }
  P->pos++;
  if (!attr_test(P, ts, nm, kind, v, vn)) return 0;
  ts->t[ts->n - 1].icase = (unsigned char)icase;
  return 1;
}

typedef struct pseudo { const char *name; int of_type, last; long long a, b; } pseudo;
static const pseudo simple_nth[] = {
  {"first-child", 0, 0, 0, 1}, {"last-child", 0, 1, 0, 1},
  {"first-of-type", 1, 0, 0, 1}, {"last-of-type", 1, 1, 0, 1},
};
static const pseudo func_nth[] = {
  {"nth-child", 0, 0, 0, 0}, {"nth-last-child", 0, 1, 0, 0},
  {"nth-of-type", 1, 0, 0, 0}, {"nth-last-of-type", 1, 1, 0, 0},
};
static const char *const elements[] = {"before", "after", "first-line", "first-letter",
                                       "selection", "placeholder", "marker", NULL};

/* A functional pseudo-class; P->pos after the '('. */
static int pseudo_func(parser *P, tests *ts, const char *nm, size_t at) {
  size_t i;
  char buf[40];
  for (i = 0; i < sizeof func_nth / sizeof *func_nth; i++)
    if (!strcmp(nm, func_nth[i].name)) {
      lr_css_test t;
      memset(&t, 0, sizeof t);
      if (!anb(P, &t)) return 0;
      P->pos++;
      return nth(P, ts, func_nth[i].of_type, func_nth[i].last, t.a, t.b);
    }
  if (!strcmp(nm, "not") || !strcmp(nm, "is") || !strcmp(nm, "where") ||
      !strcmp(nm, "matches")) {
    lr_css_test *t;
    const lr_css_list *sub;
    if (++P->depth > LR_CSS_MAX_NESTING)
      return fail(P, "selectors nested more than %d deep", LR_CSS_MAX_NESTING);
    sub = list(P, 1);
    P->depth--;
    if (!sub) return 0;
    P->pos++; /* the ')' list() stopped at */
    if (!(t = add(P, ts, nm[0] == 'n' ? LR_CSS_NOT : LR_CSS_IS))) return 0;
    t->sub = sub;
    return 1;
  }
  quote(buf, sizeof buf, P->src + at, P->pos - at, 30);
  return fail(P, "unsupported pseudo-class '%s'", buf);
}

/* :name or :name(...); P->pos at the ':'. */
static int pseudo_class(parser *P, tests *ts) {
  size_t at = P->pos, n, i;
  const char *nm;
  char buf[40];
  P->pos++;
  if (peek(P) == ':') {
    P->pos++;
    while (name_char(peek(P))) P->pos++;
    quote(buf, sizeof buf, P->src + at, P->pos - at, 30);
    return fail(P, "pseudo-elements are not supported: '%s'", buf);
  }
  if (!(nm = ident(P, 1, &n, "a pseudo-class name after ':'"))) return 0;
  if (peek(P) == '(') {
    P->pos++;
    return pseudo_func(P, ts, nm, at);
  }
  for (i = 0; i < sizeof simple_nth / sizeof *simple_nth; i++)
    if (!strcmp(nm, simple_nth[i].name))
      return nth(P, ts, simple_nth[i].of_type, simple_nth[i].last, 0, 1);
  if (!strcmp(nm, "only-child")) return nth(P, ts, 0, 0, 0, 1) && nth(P, ts, 0, 1, 0, 1);
  if (!strcmp(nm, "only-of-type")) return nth(P, ts, 1, 0, 0, 1) && nth(P, ts, 1, 1, 0, 1);
  if (!strcmp(nm, "root")) return add(P, ts, LR_CSS_ROOT) != NULL;
  if (!strcmp(nm, "empty")) return add(P, ts, LR_CSS_EMPTY) != NULL;
  if (!strcmp(nm, "scope")) return add(P, ts, LR_CSS_SCOPE) != NULL;
  quote(buf, sizeof buf, P->src + at, P->pos - at, 30);
  for (i = 0; elements[i]; i++)
    if (!strcmp(nm, elements[i])) return fail(P, "pseudo-elements are not supported: '%s'", buf);
  return fail(P, "unsupported pseudo-class '%s'", buf);
}

/* Cheap tests first: a compound fails at its first false test. */
static int cost(const lr_css_test *t) {
  switch (t->kind) {
  case LR_CSS_TYPE: return 0;
  case LR_CSS_ROOT: case LR_CSS_SCOPE: return 1;
  case LR_CSS_ATTR: return t->op == LR_CSS_EXISTS ? 2 : 3;
  case LR_CSS_EMPTY: return 4;
  case LR_CSS_NTH: return 5;
  default: return 6;
  }
}

/* A compound selector: [type|*] then #id .class [attr] :pseudo in any order. Returns
 * 1 and the tests in ts, or 0 if there was nothing (ts->n == 0 and no '*' either)
 * or an error (P->failed). */
static int compound(parser *P, tests *ts) {
  size_t n, start = P->pos;
  unsigned i, j;
  const char *s;
  if (peek(P) == '*') P->pos++;
  else if (ident_starts(P)) {
    if (!(s = ident(P, 1, &n, "an element name"))) return 0;
    lr_css_test *t = add(P, ts, LR_CSS_TYPE);
    if (!t) return 0;
    t->s = s, t->n = n;
  }
  if (peek(P) == '|') return fail(P, "namespaces are not supported (at offset %zu)", P->pos);
  for (;;) {
    int c = peek(P), ok;
    if (c == '#') {
      P->pos++;
      ok = (s = name(P, 0, &n, "an id after '#'")) && attr_test(P, ts, "id", LR_CSS_EQ, s, n);
    } else if (c == '.') {
      P->pos++;
      ok = (s = ident(P, 0, &n, "a class name after '.'")) &&
           attr_test(P, ts, "class", LR_CSS_TOKEN, s, n);
    } else if (c == '[') ok = attribute(P, ts);
    else if (c == ':') ok = pseudo_class(P, ts);
    else break;
    if (!ok) return 0;
  }
  /* Stable insertion sort by cost (a handful of tests). */
  for (i = 1; i < ts->n; i++) {
    lr_css_test t = ts->t[i];
    for (j = i; j > 0 && cost(&ts->t[j - 1]) > cost(&t); j--) ts->t[j] = ts->t[j - 1];
    ts->t[j] = t;
  }
  return P->pos > start;
}

/* ---- complex selectors and lists ---- */

static int at_end(parser *P, int nested) {
  int c = peek(P);
  return c == -1 || c == ',' || (nested && c == ')');
}

static int complex_sel(parser *P, lr_css_complex *out, int nested) {
  lr_css_compound *cs = NULL;
  unsigned n = 0, cap = 0;
  int comb = LR_CSS_FIRST;
  for (;;) {
    tests ts = {NULL, 0, 0};
    int c = peek(P);
    if (n == 0 && (c == '>' || c == '+' || c == '~'))
      return fail(P, "selector starts with the combinator '%c'", c);
    if (!compound(P, &ts)) return P->failed ? 0 : unexpected(P);
    if (n == LR_CSS_MAX_COMPOUNDS)
      return fail(P, "more than %d compound selectors in one selector", LR_CSS_MAX_COMPOUNDS);
    if (!grow(P, (void **)&cs, &cap, n, sizeof *cs)) return 0;
    cs[n].t = ts.t, cs[n].nt = ts.n, cs[n].comb = (unsigned char)comb;
    cs[n].memo = comb == LR_CSS_DESC || comb == LR_CSS_LATER ? P->css->nmemo++ : LR_CSS_NO_MEMO;
    n++;
    int ws = skip_ws(P);
    c = peek(P);
    if (c == '>' || c == '+' || c == '~') {
      P->pos++;
      skip_ws(P);
      comb = c == '>' ? LR_CSS_CHILD : c == '+' ? LR_CSS_NEXT : LR_CSS_LATER;
      if (at_end(P, nested)) return fail(P, "selector ends with the combinator '%c'", c);
    } else if (ws && !at_end(P, nested)) comb = LR_CSS_DESC;
    else break;
  }
  out->c = cs, out->nc = n;
  return 1;
}

/* A comma-separated list, up to the end or (nested) the ')' left at P->pos. */
static lr_css_list *list(parser *P, int nested) {
  lr_css_complex *sel = NULL;
  unsigned n = 0, cap = 0;
  lr_css_list *l;
  for (;;) {
    skip_ws(P);
    if (at_end(P, nested)) {
      if (peek(P) == -1 && nested) return fail(P, "unclosed '('"), NULL;
      if (n == 0 && peek(P) != ',') return fail(P, "empty selector"), NULL;
      return fail(P, "empty selector in the list at offset %zu", P->pos), NULL;
    }
    if (!grow(P, (void **)&sel, &cap, n, sizeof *sel)) return NULL;
    if (!complex_sel(P, &sel[n], nested)) return NULL;
    n++;
    skip_ws(P);
    if (peek(P) == ',') { P->pos++; continue; }
    if (peek(P) == -1) {
      if (nested) return fail(P, "unclosed '('"), NULL;
      break;
    }
    if (nested && peek(P) == ')') break;
    return unexpected(P), NULL;
  }
  if (!(l = arena_alloc(P->css, sizeof *l))) return oom(P), NULL;
  l->sel = sel, l->n = n;
  return l;
}

lr_css *lr_css_compile(const char *sel, size_t len, char *err, size_t errlen) {
  parser P;
  lr_css *css = NULL;
  const lr_css_list *l;
  if (err && errlen) err[0] = '\0';
  if (!sel) sel = "", len = 0;
  memset(&P, 0, sizeof P);
  P.src = (const unsigned char *)sel, P.len = len, P.err = err, P.errlen = errlen;
  if (len > ((size_t)-1 - 8) / 2 || !(css = calloc(1, sizeof *css)) ||
      !(P.scratch = malloc(2 * len + 8))) {
    free(css);
    oom(&P);
    return NULL;
  }
  css->size = sizeof *css;
  P.css = css;
  l = list(&P, 0);
  free(P.scratch);
  if (!l) {
    lr_css_free(css);
    return NULL;
  }
  css->list = *l;
  if (css->nmemo && !(css->memo = arena_alloc(css, sizeof *css->memo))) {
    lr_css_free(css);
    oom(&P);
    return NULL;
  }
  if (css->memo) css->memo->p = NULL, css->memo->cap = 0, css->memo->busy = 0;
  return css;
}
