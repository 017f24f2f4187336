/* html_query.c: doc/el:select, :select_one (CSS, html_css.c) and :xpath (libxml2).
 *
 * Compiled selectors and XPath expressions are cached per Lua state, keyed by their
 * text: a scraper runs the same few queries on every page, and compiling is most of
 * the cost of a query on a small page (lxml: 12.7 ms with a string against 1.4 ms
 * precompiled). XPath expressions are not tied to a document (compiled without a
 * dictionary), so one cache serves every page. Each cache is a table from the text
 * to a boxed compiled form (freed by its __gc); it is bounded by count and bytes and
 * simply dropped whole when full, which keeps it trivially correct (a query in use
 * holds its box on the stack) and costs one recompile per query after a reset.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "html.h"

#define CSS_MAX_ENTRIES 256
#define CSS_MAX_BYTES ((size_t)1 << 20)
#define XPATH_MAX_ENTRIES 256
#define XPATH_OP_LIMIT 50000000ul /* ~1 s of libxml2's steps here */

/* The cache's running totals, a userdata whose user value is the table. */
typedef struct {
  int n;
  size_t bytes;
} cache;

static char CSS_CACHE, XPATH_CACHE, CSS_BOX_MT, XPATH_BOX_MT, PENDING, CSS_GUARD_MT;


typedef struct { lr_css *c; } css_box;
typedef struct { xmlXPathCompExpr *c; } xpath_box;

static int css_box_gc(lua_State *L) {
  css_box *b = lua_touserdata(L, 1);
  if (b->c) lr_css_free(b->c);
  b->c = NULL;
  return 0;
}

static int xpath_box_gc(lua_State *L) {
  xpath_box *b = lua_touserdata(L, 1);
  if (b->c) lr_xml.xmlXPathFreeCompExpr(b->c);
  b->c = NULL;
  return 0;
}

/* Pushes the holder of the cache at key (made on first use). */
static cache *holder(lua_State *L, void *key) {
  cache *c;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TUSERDATA) return lua_touserdata(L, -1);
  lua_pop(L, 1);
  c = lua_newuserdatauv(L, sizeof *c, 1);
  c->n = 0, c->bytes = 0;
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  return c;
}

/* Pushes the box cached for the text at text_idx and returns it, or returns NULL
 * (pushing nothing). */
static void *cache_get(lua_State *L, void *key, int text_idx) {
  holder(L, key);
  lua_getiuservalue(L, -1, 1);
  lua_pushvalue(L, text_idx);
  if (lua_rawget(L, -2) == LUA_TUSERDATA) {
    lua_replace(L, -3);
    lua_pop(L, 1);
    return lua_touserdata(L, -1);
  }
  lua_pop(L, 3);
  return NULL;
}

/* Caches the box at the top under the text at text_idx (left on the stack), after
 * emptying the cache if it is full. */
static void cache_add(lua_State *L, void *key, int text_idx, size_t size, int max_n,
                      size_t max_bytes) {
  cache *c = holder(L, key);
  if (c->n >= max_n || c->bytes + size > max_bytes) {
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    c->n = 0, c->bytes = 0;
  }
  lua_getiuservalue(L, -1, 1);
  lua_pushvalue(L, text_idx);
  lua_pushvalue(L, -4);
  lua_rawset(L, -3);
  lua_pop(L, 2);
  c->n++, c->bytes += size;
}

/* Pushes a new box of size bytes with a metatable whose event (__gc or __close) is gc. */
static void *new_box_ev(lua_State *L, size_t size, void *mt_key, lua_CFunction gc,
                        const char *event) {
  void *b = lua_newuserdatauv(L, size, 0);
  memset(b, 0, size);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, mt_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, event);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, mt_key);
  }
  lua_setmetatable(L, -2);
  return b;
}

static void *new_box(lua_State *L, size_t size, void *mt_key, lua_CFunction gc) {
  return new_box_ev(L, size, mt_key, gc, "__gc");
}

/* ---- CSS ---- */

/* The compiled selector for the string at sel_idx; its box is pushed (it holds it). */
static lr_css *compiled_css(lua_State *L, int sel_idx) {
  size_t len;
  const char *sel = lua_tolstring(L, sel_idx, &len);
  char err[256];
  css_box *b = cache_get(L, &CSS_CACHE, sel_idx);
  if (b) return b->c;
  b = new_box(L, sizeof *b, &CSS_BOX_MT, css_box_gc);
  if ((b->c = lr_css_compile(sel, len, err, sizeof err)) == NULL)
    luaL_error(L, "html: invalid selector '%s': %s", sel, err);
  cache_add(L, &CSS_CACHE, sel_idx, lr_css_size(b->c) + len, CSS_MAX_ENTRIES, CSS_MAX_BYTES);
  return b->c;
}

typedef struct {
  lua_State *L;
  int doc_idx;
  lua_Integer n;
  int one;
} select_ctx;

static int visit(void *ud, xmlNode *n) {
  select_ctx *s = ud;
  html_push_el(s->L, s->doc_idx, n);
  if (s->one) return 1;
  lua_rawseti(s->L, -2, ++s->n);
  return 0;
}

/* Clears the memo's busy mark a select left set by raising (to-be-closed). */
typedef struct { const lr_css *css; } css_guard;

static int css_guard_close(lua_State *L) {
  css_guard *g = lua_touserdata(L, 1);
  if (g->css) lr_css_select_raised(g->css);
  g->css = NULL;
  return 0;
}

int html_select(lua_State *L, int doc_idx, xmlNode *root, int one) {
  select_ctx s;
  lr_css *css;
  css_guard *g;
  if (lua_type(L, 2) != LUA_TSTRING)
    return luaL_error(L, "bad argument #1 to '%s' (string expected, got %s)",
                      one ? "select_one" : "select", luaL_typename(L, 2));
  html_doc_hold(L, doc_idx);
  css = compiled_css(L, 2); /* its box stays on the stack: the selector lives */
  g = new_box_ev(L, sizeof *g, &CSS_GUARD_MT, css_guard_close, "__close");
  lua_toclose(L, -1);
  /* only the select that marks the memo busy clears it: a nested one leaves it */
  if (lr_css_memo_free(css)) g->css = css;
  s.L = L, s.doc_idx = doc_idx, s.n = 0, s.one = one;
  if (one) {
    int top = lua_gettop(L);
    lr_css_select(css, root, visit, &s);
    return lua_gettop(L) > top ? 1 : 0;
  }
  lua_newtable(L);
  lr_css_select(css, root, visit, &s);
  return 1;
}

/* ---- XPath ---- */

/* An XPath result not yet turned into Lua values: freed at the end of the call, or by
 * the box's __gc if turning it into values raised (out of memory). One box per call,
 * never shared: turning nodes into elements allocates, so finalizers run mid-way, and
 * a finalizer's own xpath call must not free the result this call is still reading. */
typedef struct { xmlXPathObject *o; } pending;

static int pending_gc(lua_State *L) {
  pending *p = lua_touserdata(L, 1);
  if (p->o) lr_xml.xmlXPathFreeObject(p->o);
  p->o = NULL;
  return 0;
}

/* libxml2's last error on this thread (XPath reports there, its channels being
 * silenced by lr_xml_quiet_thread): "Invalid expression at offset 3". */
static void last_error(char *msg, size_t len, const char *dflt) {
  xmlErrorPtr e = lr_xml.xmlGetLastError();
  size_t n;
  if (e == NULL || e->message == NULL) {
    snprintf(msg, len, "%s", dflt);
    return;
  }
  snprintf(msg, len, "%s", e->message);
  n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = '\0';
  if (e->domain == XML_FROM_XPATH && e->str1) snprintf(msg + n, len - n, " at offset %d", e->int1);
}

/* The compiled expression for the string at expr_idx; its box is pushed. */
static xmlXPathCompExpr *compiled_xpath(lua_State *L, xmlXPathContext *xp, int expr_idx) {
  size_t len;
  const char *expr = lua_tolstring(L, expr_idx, &len);
  xpath_box *b = cache_get(L, &XPATH_CACHE, expr_idx);
  if (b) return b->c;
  if (strlen(expr) != len)
    luaL_error(L, "html: invalid XPath: the expression contains a NUL byte (at offset %d)",
               (int)strlen(expr));
  b = new_box(L, sizeof *b, &XPATH_BOX_MT, xpath_box_gc);
  lr_xml.xmlResetLastError();
  if (strlen(expr) != len || (b->c = lr_xml.xmlXPathCtxtCompile(xp, (const xmlChar *)expr)) == NULL) {
    char msg[160];
    last_error(msg, sizeof msg, "not an expression");
    luaL_error(L, "html: invalid XPath '%s': %s", expr, msg);
  }
  cache_add(L, &XPATH_CACHE, expr_idx, len + 64, XPATH_MAX_ENTRIES, (size_t)-1);
  return b->c;
}


static void push_number(lua_State *L, double v) {
  if (v == floor(v) && v >= -9007199254740992.0 && v <= 9007199254740992.0)
    lua_pushinteger(L, (lua_Integer)v);
  else
    lua_pushnumber(L, v);
}

/* libxml2 2.9.14's XPath merges node-sets in time that grows as the cube of the
 * nesting on pages like ("<div><span>"):rep(n): //div//span/ancestor::div took 47 ms
 * at 1,024 levels, 0.43 s at 2,048 and minutes beyond, where opLimit does not count
 * the merging and the loop cannot even be stopped by a signal; past ~5,000 levels it
 * also returns node-sets short without an error (lxml, on the same library, too).
 * CSS selectors (html_css_match.c) stay linear there. */
#define XPATH_MAX_DEPTH 1024

/* The deepest nesting of elements under doc, walking iteratively (a broken page can
 * nest 100,000 levels). */
static size_t max_depth(xmlDoc *doc) {
  xmlNode *n = doc->children;
  size_t depth = 0, max = 0;
  while (n) {
    if (n->type == XML_ELEMENT_NODE && depth + 1 > max) max = depth + 1;
    if (n->type == XML_ELEMENT_NODE && n->children) {
      n = n->children;
      depth++;
      continue;
    }
    while (n && n->next == NULL) {
      n = n->parent;
      if (n == NULL || n == (xmlNode *)doc) return max;
      depth--;
    }
    if (n) n = n->next;
  }
  return max;
}

int html_xpath(lua_State *L, int doc_idx, xmlNode *node) {
  html_doc *d = lua_touserdata(L, doc_idx);
  xmlXPathCompExpr *comp;
  xmlXPathObject *o;
  pending *p;
  char msg[200];
  int i;
  lua_Integer k = 0;
  if (lua_type(L, 2) != LUA_TSTRING)
    return luaL_error(L, "bad argument #1 to 'xpath' (string expected, got %s)",
                      luaL_typename(L, 2));
  if (d->xp == NULL) {
    if ((d->xp = lr_xml.xmlXPathNewContext(d->doc)) == NULL)
      return luaL_error(L, "html: out of memory");
    /* Numbers the elements in document order (in their unused content field), so
     * that sorting a node-set compares two numbers instead of walking both nodes'
     * ancestors: on a deep page (50,000 levels) the walks made //span take minutes. */
    lr_xml.xmlXPathOrderDocElems(d->doc);
    d->depth = max_depth(d->doc);
  }
  if (d->depth > XPATH_MAX_DEPTH)
    return luaL_error(L, "html: XPath refused: the document is nested %d levels deep (over %d), "
                      "where libxml2's XPath is slow and loses nodes; use CSS selectors "
                      "(doc:select)", (int)d->depth, XPATH_MAX_DEPTH);
  html_doc_hold(L, doc_idx);
  comp = compiled_xpath(L, d->xp, 2);
  p = new_box(L, sizeof *p, &PENDING, pending_gc);
  d->xp->node = node;
  /* A bound on the work of one evaluation: on a hostile page (50,000 nested divs),
   * //div//span is quadratic in libxml2 and would hold the loop for minutes. */
  d->xp->opLimit = XPATH_OP_LIMIT;
  d->xp->opCount = 0;
  lr_xml.xmlResetLastError();
  if ((o = lr_xml.xmlXPathCompiledEval(comp, d->xp)) == NULL) {
    last_error(msg, sizeof msg, "failed");
    return luaL_error(L, "html: XPath '%s' failed: %s", lua_tostring(L, 2), msg);
  }
  p->o = o;
  switch (o->type) {
    case XPATH_NODESET:
      lua_createtable(L, o->nodesetval ? o->nodesetval->nodeNr : 0, 0);
      for (i = 0; o->nodesetval && i < o->nodesetval->nodeNr; i++) {
        xmlNode *n = o->nodesetval->nodeTab[i];
        switch (n->type) {
          case XML_ELEMENT_NODE:
            html_push_el(L, doc_idx, n);
            break;
          case XML_ATTRIBUTE_NODE:
            html_push_attr_value(L, (xmlAttr *)n);
            break;
          case XML_TEXT_NODE:
          case XML_CDATA_SECTION_NODE:
          case XML_COMMENT_NODE:
          case XML_PI_NODE:
            lua_pushstring(L, n->content ? (const char *)n->content : "");
            break;
          default: /* the document node, namespace nodes: nothing to give */
            continue;
        }
        lua_rawseti(L, -2, ++k);
      }
      break;
    case XPATH_BOOLEAN:
      lua_pushboolean(L, o->boolval);
      break;
    case XPATH_NUMBER:
      push_number(L, o->floatval);
      break;
    case XPATH_STRING:
      lua_pushstring(L, o->stringval ? (const char *)o->stringval : "");
      break;
    default:
      lua_pushnil(L);
      break;
  }
  p->o = NULL;
  lr_xml.xmlXPathFreeObject(o);
  return 1;
}
