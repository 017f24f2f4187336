/* test_css_fuzz.c: seeded random selectors through the CSS compiler and matcher.
 * Selectors come from a grammar of selector pieces, from mutations of valid ones
 * and from random bytes (NULs included). One that compiles is run on random
 * documents; its matches must agree three ways: lr_css_select (memoised), and on
 * each element lr_css_matches (unmemoised) and a naive reference matcher here that
 * backtracks exhaustively over the compiled program. One that fails must say why,
 * naming the selector. Under ASan this is where out-of-bounds reads would show.
 * LUARUN_FUZZ_SEED and LUARUN_FUZZ_N change the run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "luarun.h"

static unsigned long long rng = 0x9e3779b97f4a7c15ull;
static unsigned rnd(unsigned n) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return n ? (unsigned)(rng % n) : 0;
}

static int failures;

/* ---- random documents ---- */

/* Few names, so that selectors match often and the restart cases come up. */
static const char *const tags[] = {"div", "span", "em", "b", "div", "span", "a", "p"};
static const char *const words[] = {"a", "b", "c", "a b", "b\tc", "x-y", "en-US", "", "A"};

static void gen(char *out, size_t cap, size_t *n, int depth) {
  int k = 1 + (int)rnd(4), i;
  for (i = 0; i < k && *n + 200 < cap; i++) {
    const char *t = tags[rnd(8)];
    unsigned r = rnd(10);
    *n += (size_t)snprintf(out + *n, cap - *n, "<%s", t);
    if (r < 4) *n += (size_t)snprintf(out + *n, cap - *n, " class='%s'", words[rnd(9)]);
    if (r == 4) *n += (size_t)snprintf(out + *n, cap - *n, " id=i%u", rnd(5));
    if (r == 5 || r == 6) *n += (size_t)snprintf(out + *n, cap - *n, " href='%s'", words[rnd(9)]);
    if (r == 7) *n += (size_t)snprintf(out + *n, cap - *n, " lang='%s' data-x", words[rnd(9)]);
    *n += (size_t)snprintf(out + *n, cap - *n, ">");
    if (rnd(3) == 0) *n += (size_t)snprintf(out + *n, cap - *n, "%s", rnd(2) ? "t" : "<!--c-->");
    if (depth < 6 && rnd(3)) gen(out, cap, n, depth + 1);
    *n += (size_t)snprintf(out + *n, cap - *n, "</%s>", t);
  }
}

static xmlDoc *random_doc(void) {
  static char html[60000];
  size_t n = (size_t)snprintf(html, sizeof html, "<html><body>");
  while (n < 3000) gen(html, sizeof html - 40, &n, 0);
  n += (size_t)snprintf(html + n, sizeof html - n, "</body></html>");
  return htmlReadMemory(html, (int)n, "fuzz.html", "UTF-8",
                        HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                        HTML_PARSE_NONET);
}

/* ---- random selectors ---- */

static const char *const pieces[] = {
  "div", "p", "a", "li", "ul", "span", "*", "DIV", "#i1", "#i2", ".a", ".b", ".c", ".x-y",
  "[href]", "[href=a]", "[href='a b']", "[class~=b]", "[lang|=en]", "[lang^=en i]",
  "[href$=b]", "[href*=' ']", "[data-x]", "[class='']", ":first-child", ":last-child",
  ":only-child", ":first-of-type", ":last-of-type", ":only-of-type", ":nth-child(2n+1)",
  ":nth-child(odd)", ":nth-child(-n+2)", ":nth-last-child(2)", ":nth-of-type(2)",
  ":nth-last-of-type(even)", ":empty", ":root", ":scope", ":not(", ":is(", ":where(", ")",
  ",", " ", " ", " > ", " + ", " ~ ", ">", "+", "~", "[", "]", "'", "\"", "\\", ":", "::",
  "(", "#", ".", "n", "-", "2", "|", "\\31 ", ":nth-child(", "2n", "+1", " of ", "\t",
};
#define NPIECES (sizeof pieces / sizeof *pieces)

static const char *const types[] = {"div", "span", "em", "b", "*", "B", "DIV", "p", "a"};
static const char *const simple[] = {
  "#i1", "#i2", ".a", ".b", ".c", ".x-y", ".A", "[href]", "[href=a]", "[href='a b']",
  "[class~=b]", "[lang|=en]", "[lang^=EN i]", "[href$=b]", "[href*=' ']", "[data-x]",
  "[class='']", "[class=\"b\tc\"]", ":first-child", ":last-child", ":only-child",
  ":first-of-type", ":last-of-type", ":only-of-type", ":nth-child(2n+1)", ":nth-child(even)",
  ":nth-child(-n+2)", ":nth-child(3)", ":nth-last-child(2)", ":nth-of-type(2)",
  ":nth-last-of-type(odd)", ":nth-last-child(n+2)", ":empty", ":root", ":scope",
};
static const char *const combs[] = {" ", " > ", " + ", " ~ ", ">", "~"};

static void out(char *s, size_t cap, size_t *n, const char *p) {
  size_t l = strlen(p);
  if (*n + l + 1 < cap) memcpy(s + *n, p, l), *n += l;
}

/* A valid selector list: compounds of the pieces above, :not/:is nesting. */
static void valid_list(char *s, size_t cap, size_t *n, int depth);
static void valid_compound(char *s, size_t cap, size_t *n, int depth) {
  unsigned k = rnd(3) ? rnd(2) : rnd(4), i;
  if (k == 0 || rnd(4)) out(s, cap, n, types[rnd(9)]);
  for (i = 0; i < k; i++) {
    if (depth < 3 && rnd(8) == 0) {
      out(s, cap, n, rnd(2) ? ":not(" : ":is(");
      valid_list(s, cap, n, depth + 1);
      out(s, cap, n, ")");
    } else out(s, cap, n, simple[rnd(sizeof simple / sizeof *simple)]);
  }
}
static void valid_list(char *s, size_t cap, size_t *n, int depth) {
  unsigned groups = 1 + (rnd(4) == 0), g, c, k;
  for (g = 0; g < groups; g++) {
    if (g) out(s, cap, n, ", ");
    k = 1 + rnd(depth ? 2 : 5);
    for (c = 0; c < k; c++) {
      if (c) out(s, cap, n, combs[rnd(6)]);
      valid_compound(s, cap, n, depth);
    }
  }
}

static size_t random_selector(char *s, size_t cap) {
  size_t n = 0;
  unsigned k = 1 + rnd(8), i, mode = rnd(10);
  if (mode >= 4) { /* valid, sometimes mutated */
    valid_list(s, cap, &n, 0);
    if (mode == 9 && n) {
      unsigned at = rnd((unsigned)n);
      if (rnd(2)) s[at] = (char)rnd(256);
      else memmove(s + at, s + at + 1, n - at - 1), n--;
    }
    return n;
  }
  if (mode == 0) { /* random bytes, NULs and high bytes included */
    k = rnd(24);
    for (i = 0; i < k; i++) s[n++] = (char)rnd(256);
    return n;
  }
  for (i = 0; i < k; i++) {
    const char *p = pieces[rnd(NPIECES)];
    size_t l = strlen(p);
    if (n + l + 2 >= cap) break;
    memcpy(s + n, p, l);
    n += l;
  }
  if (mode == 1 && n) { /* a mutation */
    unsigned m = rnd(3), at = rnd((unsigned)n);
    if (m == 0) s[at] = (char)rnd(256);
    else if (m == 1) memmove(s + at, s + at + 1, n - at - 1), n--;
    else if (n + 1 < cap) memmove(s + at + 1, s + at, n - at), s[at] = (char)rnd(128), n++;
  }
  return n;
}

/* ---- the reference: exhaustive backtracking over the compiled program ---- */

static int ref_list(const lr_css_list *l, xmlNode *n, xmlNode *scope);

static int is_el(xmlNode *n) { return n && n->type == XML_ELEMENT_NODE; }

static const char *attr(xmlNode *n, const char *name) {
  xmlAttr *a;
  for (a = n->properties; a; a = a->next)
    if (!strcasecmp((const char *)a->name, name))
      return a->children && a->children->content ? (const char *)a->children->content : "";
  return NULL;
}

static int eq(const char *a, const char *b, size_t n, int icase) {
  return icase ? strncasecmp(a, b, n) == 0 : strncmp(a, b, n) == 0;
}

static int ref_value(const lr_css_test *t, const char *v) {
  size_t n = strlen(v), i;
  if (memchr(t->s, 0, t->n)) return 0;
  switch (t->op) {
  case LR_CSS_EXISTS: return 1;
  case LR_CSS_EQ: return n == t->n && eq(v, t->s, n, t->icase);
  case LR_CSS_DASH: return n >= t->n && eq(v, t->s, t->n, t->icase) && (n == t->n || v[t->n] == '-');
  case LR_CSS_PREFIX: return t->n && n >= t->n && eq(v, t->s, t->n, t->icase);
  case LR_CSS_SUFFIX: return t->n && n >= t->n && eq(v + n - t->n, t->s, t->n, t->icase);
  case LR_CSS_SUBSTR:
    for (i = 0; t->n && i + t->n <= n; i++)
      if (eq(v + i, t->s, t->n, t->icase)) return 1;
    return 0;
  case LR_CSS_TOKEN: {
    char buf[256], *tok, *save;
    snprintf(buf, sizeof buf, "%s", v);
    for (tok = strtok_r(buf, " \t\r\n\f", &save); tok; tok = strtok_r(NULL, " \t\r\n\f", &save))
      if (strlen(tok) == t->n && eq(tok, t->s, t->n, t->icase)) return 1;
    return 0;
  }
  }
  return 0;
}

static long long ref_pos(xmlNode *n, int of_type, int last) {
  long long k = 1;
  xmlNode *x;
  for (x = last ? n->next : n->prev; x; x = last ? x->next : x->prev)
    if (is_el(x) && (!of_type || !strcmp((const char *)x->name, (const char *)n->name))) k++;
  return k;
}

static int ref_test(const lr_css_test *t, xmlNode *n, xmlNode *scope) {
  const char *v;
  xmlNode *c;
  int root = n->parent && n->parent->type == XML_HTML_DOCUMENT_NODE;
  long long i;
  switch (t->kind) {
  case LR_CSS_TYPE: return !strcasecmp((const char *)n->name, t->s);
  case LR_CSS_ATTR: return (v = attr(n, t->name)) && ref_value(t, v);
  case LR_CSS_NTH:
    i = ref_pos(n, t->of_type, t->last);
    if (t->a > 0) return i >= t->b && (i - t->b) % t->a == 0;
    if (t->a < 0) return i <= t->b && (t->b - i) % -t->a == 0;
    return i == t->b;
  case LR_CSS_EMPTY:
    for (c = n->children; c; c = c->next)
      if (is_el(c) || (c->type == XML_TEXT_NODE && c->content && *c->content)) return 0;
    return 1;
  case LR_CSS_ROOT: return root;
  case LR_CSS_SCOPE: return scope ? n == scope : root;
  case LR_CSS_NOT: return !ref_list(t->sub, n, scope);
  case LR_CSS_IS: return ref_list(t->sub, n, scope);
  }
  return 0;
}

static int ref_complex(const lr_css_complex *cx, unsigned i, xmlNode *n, xmlNode *scope) {
  const lr_css_compound *c = &cx->c[i];
  xmlNode *x;
  unsigned k;
  for (k = 0; k < c->nt; k++)
    if (!ref_test(&c->t[k], n, scope)) return 0;
  if (i == 0) return 1;
  for (x = c->comb == LR_CSS_NEXT || c->comb == LR_CSS_LATER ? n->prev : n->parent; x;
       x = c->comb == LR_CSS_NEXT || c->comb == LR_CSS_LATER ? x->prev : x->parent) {
    if (!is_el(x)) {
      if (c->comb == LR_CSS_CHILD || c->comb == LR_CSS_DESC) return 0; /* the document */
      continue;
    }
    if (ref_complex(cx, i - 1, x, scope)) return 1;
    if (c->comb == LR_CSS_CHILD || c->comb == LR_CSS_NEXT) return 0;
  }
  return 0;
}

static int ref_list(const lr_css_list *l, xmlNode *n, xmlNode *scope) {
  unsigned i;
  for (i = 0; i < l->n; i++)
    if (ref_complex(&l->sel[i], l->sel[i].nc - 1, n, scope)) return 1;
  return 0;
}

/* ---- the comparison ---- */

typedef struct seen { xmlNode *list[4096]; size_t n; } seen;

static int collect(void *ud, xmlNode *n) {
  seen *s = ud;
  if (s->n < 4096) s->list[s->n++] = n;
  return 0;
}

/* Walks root's descendants in document order, checking each against the select
 * result (seen, in order) and the two other matchers. */
static void compare(const lr_css *css, xmlNode *root, const seen *s, const char *sel, size_t len) {
  xmlNode *n = root->children;
  xmlNode *scope = root->type == XML_ELEMENT_NODE ? root : NULL;
  size_t at = 0;
  int bad = 0;
  while (n && !bad) {
    if (n->type == XML_ELEMENT_NODE) {
      int by_select = at < s->n && s->list[at] == n;
      int by_ref = ref_list(&css->list, n, scope);
      at += (size_t)by_select;
      if (by_select != by_ref) bad = 1;
      if (!scope && lr_css_matches(css, n) != by_ref) bad = 2;
      if (n->children) { n = n->children; continue; }
    }
    while (n && !n->next) n = n->parent == root ? NULL : n->parent;
    if (n) n = n->next;
  }
  if (!bad && at != s->n) bad = 3;
  if (bad) {
    fprintf(stderr, "test_css_fuzz: '%.*s' (%zu bytes): %s disagrees with the reference\n",
            (int)len, sel, len, bad == 2 ? "lr_css_matches" : "lr_css_select");
    failures++;
  }
}

int main(void) {
  const char *e = getenv("LUARUN_FUZZ_SEED");
  long iters = getenv("LUARUN_FUZZ_N") ? atol(getenv("LUARUN_FUZZ_N")) : 60000;
  char sel[256], err[200];
  long i, compiled = 0, matched = 0;
  xmlDoc *docs[4];
  static seen s;
  int d;
  if (e) rng = strtoull(e, NULL, 10) | 1;
  xmlInitParser();
  for (d = 0; d < 4; d++) {
    if (!(docs[d] = random_doc())) {
      fprintf(stderr, "test_css_fuzz: libxml2 did not parse a document\n");
      return 1;
    }
    lr_css *all = lr_css_compile("*", 1, NULL, 0);
    printf("test_css_fuzz: document %d has %zu elements\n", d, lr_css_select(all, (xmlNode *)docs[d], NULL, NULL));
    lr_css_free(all);
  }
  for (i = 0; i < iters; i++) {
    size_t len = random_selector(sel, sizeof sel);
    lr_css *css = lr_css_compile(sel, len, err, sizeof err);
    if (!css) {
      /* A failure names the selector: "... in '<selector>'". */
      if (!strstr(err, " in '") && strcmp(err, "out of memory")) {
        fprintf(stderr, "test_css_fuzz: '%.*s': error without the selector: %s\n", (int)len,
                sel, err);
        failures++;
      }
      continue;
    }
    compiled++;
    if (lr_css_size(css) == 0) failures++;
    xmlDoc *doc = docs[rnd(4)];
    xmlNode *root = (xmlNode *)doc;
    if (rnd(3) == 0) { /* a subtree: some element of the document */
      xmlNode *n = xmlDocGetRootElement(doc);
      while (n && rnd(4)) n = xmlFirstElementChild(n) ? xmlFirstElementChild(n) : n;
      if (n) root = n;
    }
    s.n = 0;
    size_t k = lr_css_select(css, root, collect, &s);
    if (k != s.n) failures++;
    matched += (long)k > 0;
    compare(css, root, &s, sel, len);
    lr_css_free(css);
    if (failures > 20) break;
  }
  for (d = 0; d < 4; d++) xmlFreeDoc(docs[d]);
  xmlCleanupParser();
  printf("test_css_fuzz: %ld selectors, %ld compiled, %ld matched something\n", i, compiled,
         matched);
  if (failures) {
    fprintf(stderr, "test_css_fuzz: %d failures\n", failures);
    return 1;
  }
  printf("test_css_fuzz: ok\n");
  return 0;
}
