/* html_css_match.c: runs the program html_css_parse.c compiles, right to left over
 * libxml2's element tree: the rightmost compound is tested on the candidate, then
 * the combinators walk to parents and previous siblings.
 *
 * Backtracking for ` ` and `~` follows the rule browser engines use (WebKit's
 * SelectorChecker, Servo's selectors crate): a failed search reports how far back
 * to restart, so a failure that no other ancestor or sibling could mend stops the
 * whole match, and `a b a b a b ...` stays polynomial. On top of that, lr_css_select
 * memoises each ` ` and `~` search per (depth, combinator), those inside :not() and
 * :is() included: a search from an element gives the same answer for every candidate
 * below it, so `body div` over 100,000 nested divs is linear instead of quadratic.
 *
 * The hot path (a type or attribute test per element) allocates nothing: attribute
 * values are read in place from their single text child.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include "lr_html.h"

/* What a failed match tells the search that asked for it (Servo's
 * SelectorMatchingResult): try the next sibling or ancestor, give up on the siblings
 * and try the next ancestor of the nearest ` ` search, or give up altogether. */
enum { M_OK, M_SIBLING, M_ANCESTOR, M_NEVER };

typedef struct memo_entry {
  xmlNode *n;            /* the element the search started from (NULL: empty) */
  int r;
} memo_entry;

typedef struct mstate {
  xmlNode *scope;        /* what :scope matches; NULL: the root element */
  memo_entry *memo;      /* [depth * nmemo + slot], or NULL (lr_css_matches, no memory) */
  size_t cap;            /* depths the memo holds */
  unsigned nmemo;
  int full;              /* the memo may not grow further */
  lr_css_memo *keep;     /* where the memo lives between selects (the selector's) */
} mstate;

/* ---- elements and their names ---- */

static int is_ws(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }
static int lower(int c) { return c >= 'A' && c <= 'Z' ? c | 0x20 : c; }

static xmlNode *parent_el(xmlNode *n) {
  n = n->parent;
  return n && n->type == XML_ELEMENT_NODE ? n : NULL;
}

static xmlNode *prev_el(xmlNode *n) {
  for (n = n->prev; n; n = n->prev)
    if (n->type == XML_ELEMENT_NODE) return n;
  return NULL;
}

static int is_root(xmlNode *n) {
  return n->parent && (n->parent->type == XML_DOCUMENT_NODE ||
                       n->parent->type == XML_HTML_DOCUMENT_NODE);
}

/* A name from the tree against a lowercase name from the selector. */
static int name_is(const xmlChar *a, const char *b) {
  if (!a) return 0;
  for (;; a++, b++) {
    int c = lower(*a);
    if (c != (unsigned char)*b) return 0;
    if (!c) return 1;
  }
}

/* ---- attributes ---- */

typedef struct aval {
  const char *p;
  size_t n;
  char *heap;            /* set when the value was joined on the heap */
  char buf[256];
} aval;

/* The text of one child of an attribute node (libxml2 splits a value in several
 * only around entity references, which its HTML parser resolves itself). */
static const char *piece(xmlNode *c) {
  if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE)
    return c->content ? (const char *)c->content : "";
  if (c->type == XML_ENTITY_REF_NODE && c->children && c->children->type == XML_ENTITY_DECL) {
    const xmlEntity *e = (const xmlEntity *)c->children;
    return e->content ? (const char *)e->content : "";
  }
  return "";
}

/* The value in place when it is one text node (always, for HTML); joined in buf or,
 * if long, on the heap otherwise. 0 without memory. */
static int value(xmlAttr *a, aval *v) {
  xmlNode *c = a->children;
  size_t total = 0;
  char *o;
  v->heap = NULL;
  if (!c || !c->next) {
    v->p = c ? piece(c) : "";
    v->n = strlen(v->p);
    return 1;
  }
  for (; c; c = c->next) total += strlen(piece(c));
  o = total < sizeof v->buf ? v->buf : (v->heap = malloc(total + 1));
  if (!o) return 0;
  v->p = o, v->n = total;
  for (c = a->children; c; c = c->next) {
    size_t k = strlen(piece(c));
    memcpy(o, piece(c), k);
    o += k;
  }
  *o = '\0';
  return 1;
}

static xmlAttr *find_attr(xmlNode *n, const char *name) {
  xmlAttr *a;
  for (a = n->properties; a; a = a->next)
    if (name_is(a->name, name)) return a;
  return NULL;
}

static int same(const char *a, const char *b, size_t n, int icase) {
  size_t i;
  if (!icase) return memcmp(a, b, n) == 0;
  for (i = 0; i < n; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
  return 1;
}

static int contains(const char *h, size_t hn, const char *s, size_t sn, int icase) {
  size_t i;
  if (!icase) return memmem(h, hn, s, sn) != NULL;
  for (i = 0; i + sn <= hn; i++)
    if (same(h + i, s, sn, 1)) return 1;
  return 0;
}

/* s is one of v's whitespace-separated tokens (a token never holds whitespace, so an
 * s that does never matches, nor does an empty one). */
static int has_token(const char *v, size_t n, const char *s, size_t sn, int icase) {
  size_t i = 0, start;
  while (i < n) {
    while (i < n && is_ws((unsigned char)v[i])) i++;
    start = i;
    while (i < n && !is_ws((unsigned char)v[i])) i++;
    if (i - start == sn && sn > 0 && same(v + start, s, sn, icase)) return 1;
  }
  return 0;
}

static int value_ok(const lr_css_test *t, const char *v, size_t n) {
  switch (t->op) {
  case LR_CSS_EQ: return n == t->n && same(v, t->s, n, t->icase);
  case LR_CSS_TOKEN: return has_token(v, n, t->s, t->n, t->icase);
  case LR_CSS_DASH:
    return n >= t->n && same(v, t->s, t->n, t->icase) && (n == t->n || v[t->n] == '-');
  case LR_CSS_PREFIX: return t->n > 0 && n >= t->n && same(v, t->s, t->n, t->icase);
  case LR_CSS_SUFFIX:
    return t->n > 0 && n >= t->n && same(v + n - t->n, t->s, t->n, t->icase);
  case LR_CSS_SUBSTR: return t->n > 0 && contains(v, n, t->s, t->n, t->icase);
  default: return 1;
  }
}

static int attr_ok(const lr_css_test *t, xmlNode *n) {
  xmlAttr *a = find_attr(n, t->name);
  aval v;
  int r;
  if (!a) return 0;
  if (t->op == LR_CSS_EXISTS) return 1;
  if (!value(a, &v)) return 0;
  r = value_ok(t, v.p, v.n);
  free(v.heap);
  return r;
}

/* ---- positions among siblings, cached in _private ----
 * One word per element: a set low bit (so 0 means "not numbered yet"), then the
 * index among element siblings, the index among siblings of the same name, and the
 * count of those, BITS bits each (21 on 64-bit). A family too large for that gets
 * UNNUMBERED and is counted by walking. */
#define BITS ((sizeof(uintptr_t) * CHAR_BIT - 1) / 3)
#define FMAX (((uintptr_t)1 << BITS) - 1)
#define PACK(i, ti, tt) ((uintptr_t)1 | (uintptr_t)(i) << 1 | (uintptr_t)(ti) << (1 + BITS) | \
                         (uintptr_t)(tt) << (1 + 2 * BITS))
#define IDX(v) (((v) >> 1) & FMAX)
#define TIDX(v) (((v) >> (1 + BITS)) & FMAX)
#define TTOT(v) (((v) >> (1 + 2 * BITS)) & FMAX)
#define UNNUMBERED ((uintptr_t)1)

typedef struct slot { const xmlChar *name; uintptr_t count; } slot;

static const xmlChar *el_name(xmlNode *n) { return n->name ? n->name : (const xmlChar *)""; }

/* The slot of name in an open-addressing table (cap a power of two, never full). */
static slot *find_slot(slot *tab, size_t cap, const xmlChar *name) {
  size_t h = 2166136261u;
  const xmlChar *p;
  for (p = name; *p; p++) h = (h ^ *p) * 16777619u;
  for (h &= cap - 1; tab[h].name; h = (h + 1) & (cap - 1))
    if (tab[h].name == name || !strcmp((const char *)tab[h].name, (const char *)name))
      break;
  return &tab[h];
}

/* Doubles the table; 0 without memory. */
static int rehash(slot **tab, size_t *cap, slot *stack_tab) {
  size_t i, ncap = *cap * 2;
  slot *nt = calloc(ncap, sizeof *nt);
  if (!nt) return 0;
  for (i = 0; i < *cap; i++)
    if ((*tab)[i].name) *find_slot(nt, ncap, (*tab)[i].name) = (*tab)[i];
  if (*tab != stack_tab) free(*tab);
  *tab = nt, *cap = ncap;
  return 1;
}

/* Numbers every element in the sibling list that starts at first. */
static void number(xmlNode *first) {
  slot stack_tab[64], *tab = stack_tab, *s;
  size_t cap = 64, used = 0;
  uintptr_t idx = 0;
  int over = 0;
  xmlNode *c;
  memset(stack_tab, 0, sizeof stack_tab);
  for (c = first; c && !over; c = c->next) {
    if (c->type != XML_ELEMENT_NODE) continue;
    s = find_slot(tab, cap, el_name(c));
    if (!s->name) {
      if ((used + 1) * 2 > cap) {
        if (!rehash(&tab, &cap, stack_tab)) { over = 1; break; }
        s = find_slot(tab, cap, el_name(c));
      }
      s->name = el_name(c);
      used++;
    }
    s->count++, idx++;
    if (idx > FMAX || s->count > FMAX) over = 1;
    else c->_private = (void *)PACK(idx, s->count, 0);
  }
  for (c = first; c; c = c->next) {
    if (c->type != XML_ELEMENT_NODE) continue;
    uintptr_t v = (uintptr_t)c->_private;
    c->_private = (void *)(over ? UNNUMBERED
                                : PACK(IDX(v), TIDX(v), find_slot(tab, cap, el_name(c))->count));
  }
  if (tab != stack_tab) free(tab);
}

static xmlNode *first_sibling(xmlNode *n) {
  if (n->parent) return n->parent->children;
  while (n->prev) n = n->prev;
  return n;
}

static xmlNode *last_el_sibling(xmlNode *n) {
  xmlNode *l = n->parent ? n->parent->last : n;
  while (l->next) l = l->next;
  while (l->type != XML_ELEMENT_NODE) l = l->prev; /* stops at n at the latest */
  return l;
}

/* The slow way, for families too large to number. */
static long long count(xmlNode *n, int of_type, int last) {
  long long k = 1;
  xmlNode *x;
  for (x = last ? n->next : n->prev; x; x = last ? x->next : x->prev)
    if (x->type == XML_ELEMENT_NODE &&
        (!of_type || !strcmp((const char *)el_name(x), (const char *)el_name(n))))
      k++;
  return k;
}

/* n's 1-based position among its element siblings (of its type; from the end). */
static long long position(xmlNode *n, int of_type, int last) {
  uintptr_t v = (uintptr_t)n->_private, lv;
  if (v == 0) {
    number(first_sibling(n));
    v = (uintptr_t)n->_private;
  }
  if (v != UNNUMBERED) {
    if (!last) return (long long)(of_type ? TIDX(v) : IDX(v));
    if (of_type) return (long long)(TTOT(v) - TIDX(v) + 1);
    lv = (uintptr_t)last_el_sibling(n)->_private;
    if (lv != UNNUMBERED) return (long long)(IDX(lv) - IDX(v) + 1);
  }
  return count(n, of_type, last);
}

/* Some k >= 0 with a*k + b == i. */
static int nth_ok(long long a, long long b, long long i) {
  long long d = i - b;
  if (a == 0) return d == 0;
  return d % a == 0 && d / a >= 0;
}

/* :empty: no element children and no text; comments and processing instructions
 * allowed. */
static int empty(xmlNode *n) {
  xmlNode *c;
  for (c = n->children; c; c = c->next) {
    if (c->type == XML_ELEMENT_NODE || c->type == XML_ENTITY_REF_NODE) return 0;
    if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content &&
        c->content[0])
      return 0;
  }
  return 1;
}

/* ---- compounds, complex selectors, lists ---- */

static int list_ok(const lr_css_list *l, xmlNode *n, long d, mstate *m);

static int test_ok(const lr_css_test *t, xmlNode *n, long d, mstate *m) {
  switch (t->kind) {
  case LR_CSS_TYPE: return name_is(n->name, t->s);
  case LR_CSS_ATTR: return attr_ok(t, n);
  case LR_CSS_NTH: return nth_ok(t->a, t->b, position(n, t->of_type, t->last));
  case LR_CSS_EMPTY: return empty(n);
  case LR_CSS_ROOT: return is_root(n);
  case LR_CSS_SCOPE: return m->scope ? n == m->scope : is_root(n);
  case LR_CSS_NOT: return !list_ok(t->sub, n, d, m);
  case LR_CSS_IS: return list_ok(t->sub, n, d, m);
  default: return 0;
  }
}

static memo_entry *memo_at(mstate *m, long d, unsigned slot) {
  if (!m->memo || slot == LR_CSS_NO_MEMO || d < 0 || (size_t)d >= m->cap) return NULL;
  return &m->memo[(size_t)d * m->nmemo + slot];
}

static int match_from(const lr_css_complex *cx, unsigned i, xmlNode *n, long d, mstate *m);

/* The ` ` (up) or `~` search for compound j, from x (at depth d) through its
 * ancestors or previous siblings. Every element it passes would give the same answer
 * as a search starting there: going up, each is memoised at its own depth; going
 * left, the siblings share one entry, which keeps the start (the next sibling's
 * search passes it first). */
static int search(const lr_css_complex *cx, unsigned j, xmlNode *x, long d, int up,
                  unsigned slot, mstate *m) {
  xmlNode *start = x, *y;
  long d0 = d;
  int r = up ? M_NEVER : M_ANCESTOR, hit = 0;
  memo_entry *e;
  for (; x; x = up ? parent_el(x) : prev_el(x), d -= up) {
    if ((e = memo_at(m, d, slot)) && e->n == x) {
      r = e->r, hit = 1;
      break;
    }
    int q = match_from(cx, j, x, d, m);
    if (q == M_OK || q == M_NEVER || (!up && q == M_ANCESTOR)) {
      r = q;
      break;
    }
  }
  if (!m->memo || slot == LR_CSS_NO_MEMO || start == NULL || (hit && x == start)) return r;
  if (!up) { /* one entry per depth: the start, which the next sibling's search meets */
    if ((e = memo_at(m, d0, slot))) e->n = start, e->r = r;
    return r;
  }
  for (y = start, d = d0; y && !(hit && y == x); y = parent_el(y), d--) {
    if ((e = memo_at(m, d, slot))) e->n = y, e->r = r;
    if (y == x) break;
  }
  return r;
}

/* Whether compound i (and, through the combinators, those left of it) matches n,
 * at depth d. */
static int match_from(const lr_css_complex *cx, unsigned i, xmlNode *n, long d, mstate *m) {
  const lr_css_compound *c = &cx->c[i];
  xmlNode *x;
  unsigned k;
  int r;
  for (k = 0; k < c->nt; k++)
    if (!test_ok(&c->t[k], n, d, m)) return M_SIBLING;
  if (i == 0) return M_OK;
  switch (c->comb) {
  case LR_CSS_CHILD:
    if (!(x = parent_el(n))) return M_NEVER;
    r = match_from(cx, i - 1, x, d - 1, m);
    return r == M_OK || r == M_NEVER ? r : M_ANCESTOR;
  case LR_CSS_NEXT:
    if (!(x = prev_el(n))) return M_ANCESTOR;
    return match_from(cx, i - 1, x, d, m);
  case LR_CSS_LATER: return search(cx, i - 1, prev_el(n), d, 0, c->memo, m);
  default: return search(cx, i - 1, parent_el(n), d - 1, 1, c->memo, m);
  }
}

static int list_ok(const lr_css_list *l, xmlNode *n, long d, mstate *m) {
  unsigned i;
  for (i = 0; i < l->n; i++)
    if (match_from(&l->sel[i], l->sel[i].nc - 1, n, d, m) == M_OK) return 1;
  return 0;
}

int lr_css_matches(const lr_css *s, xmlNode *n) {
  mstate m;
  if (!s || !n || n->type != XML_ELEMENT_NODE) return 0;
  memset(&m, 0, sizeof m);
  return list_ok(&s->list, n, 0, &m);
}

/* Room in the memo for depth d. Past MEMO_MAX bytes, or without memory, the memo
 * stops growing: deeper elements are matched without it (slower, as correct). */
#define MEMO_MAX ((size_t)32 << 20)
#define MEMO_KEEP ((size_t)64 << 10) /* kept by the selector for the next select */
static void memo_fit(mstate *m, long d) {
  size_t ncap;
  memo_entry *p;
  if (!m->nmemo || (size_t)d < m->cap || m->full) return;
  ncap = m->cap ? m->cap * 2 : 64;
  if (ncap <= (size_t)d) ncap = (size_t)d + 64;
  p = ncap > MEMO_MAX / sizeof *p / m->nmemo ? NULL
                                             : realloc(m->memo, ncap * m->nmemo * sizeof *p);
  if (!p) {
    m->full = 1;
    return;
  }
  memset(p + m->cap * m->nmemo, 0, (ncap - m->cap) * m->nmemo * sizeof *p);
  m->memo = p, m->cap = ncap;
  m->keep->p = p, m->keep->cap = ncap; /* at once: fn may raise */
}

int lr_css_memo_free(const lr_css *s) {
  return s && s->memo && !s->memo->busy;
}

void lr_css_select_raised(const lr_css *s) {
  if (s && s->memo) s->memo->busy = 0;
}

size_t lr_css_select(const lr_css *s, xmlNode *root, lr_css_visit fn, void *ud) {
  mstate m;
  size_t found = 0;
  long d = 0;
  xmlNode *n, *x;
  if (!s || !root) return 0;
  memset(&m, 0, sizeof m);
  if (s->memo && !s->memo->busy) { /* the last select's memo, emptied */
    m.keep = s->memo, m.nmemo = s->nmemo;
    m.keep->busy = 1;
    if (m.keep->p && m.keep->cap * m.nmemo * sizeof *m.memo > MEMO_KEEP) {
      free(m.keep->p); /* a select that raised kept a big one */
      m.keep->p = NULL, m.keep->cap = 0;
    }
    m.memo = m.keep->p, m.cap = m.keep->cap;
    if (m.memo) memset(m.memo, 0, m.cap * m.nmemo * sizeof *m.memo);
  } /* else nested in a select with the same selector: no memo (slower, as correct) */
  if (root->type == XML_ELEMENT_NODE) {
    m.scope = root;
    for (x = root; x; x = parent_el(x)) d++; /* the depth of root's children */
  }
  memo_fit(&m, d);
  /* Pre-order, iteratively: broken markup nests 100,000 deep. */
  for (n = root->children; n;) {
    if (n->type == XML_ELEMENT_NODE) {
      if (list_ok(&s->list, n, d, &m)) {
        found++;
        if (fn && fn(ud, n)) break;
      }
      if (n->children) {
        n = n->children;
        memo_fit(&m, ++d);
        continue;
      }
    }
    while (!n->next) {
      n = n->parent, d--;
      if (!n || n == root) goto done;
    }
    n = n->next;
  }
done:
  if (m.memo && m.cap * m.nmemo * sizeof *m.memo > MEMO_KEEP) {
    free(m.memo);
    m.keep->p = NULL, m.keep->cap = 0;
  }
  if (m.keep) m.keep->busy = 0;
  return found;
}
