/* html_el.c: elements of luarun.html: el.tag, attributes, text, outer HTML, parent
 * and children (selectors and XPath from an element are in html_query.c).
 *
 * Every walk over a subtree is a loop, never a recursion: a page may nest 100,000
 * elements deep, and libxml2 builds such trees. */
#include <stdlib.h>
#include <string.h>
#include "html.h"

xmlNode *html_el_check(lua_State *L, int idx, const char *fname) {
  html_el *e = luaL_testudata(L, idx, HTML_EL_MT);
  html_doc *d;
  if (e == NULL)
    luaL_error(L, "calling '%s' on bad self (%s expected, got %s)", fname, HTML_EL_MT,
               luaL_typename(L, idx));
  lua_getiuservalue(L, idx, 1);
  d = lua_touserdata(L, -1);
  lua_pop(L, 1); /* the element's user value keeps it */
  if (d->doc == NULL || d->closed) luaL_error(L, "html: the document is closed");
  return e->n;
}

int html_el_doc(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, 1);
  return lua_gettop(L);
}

void html_push_el(lua_State *L, int doc_idx, xmlNode *n) {
  html_el *e = lua_newuserdatauv(L, sizeof *e, 1);
  e->n = n;
  luaL_setmetatable(L, HTML_EL_MT);
  lua_pushvalue(L, doc_idx);
  lua_setiuservalue(L, -2, 1);
}

/* ---- attributes ---- */

xmlAttr *html_find_attr(xmlNode *n, const char *name) {
  xmlAttr *a;
  for (a = n->properties; a; a = a->next)
    if (a->type == XML_ATTRIBUTE_NODE && strcasecmp((const char *)a->name, name) == 0) return a;
  return NULL;
}

void html_push_attr_value(lua_State *L, xmlAttr *a) {
  xmlNode *c = a->children;
  luaL_Buffer b;
  if (c == NULL) { /* <input disabled>: present, empty */
    lua_pushliteral(L, "");
    return;
  }
  if (c->next == NULL && c->content) { /* the usual case: one text node */
    lua_pushstring(L, (const char *)c->content);
    return;
  }
  luaL_buffinit(L, &b);
  for (; c; c = c->next)
    if (c->content) luaL_addstring(&b, (const char *)c->content);
  luaL_pushresult(&b);
}

static int el_attr(lua_State *L) {
  xmlNode *n = html_el_check(L, 1, "attr");
  const char *name;
  if (lua_type(L, 2) != LUA_TSTRING) /* checked first: lua_tostring converts a number */
    return luaL_error(L, "bad argument #1 to 'attr' (string expected, got %s)",
                      luaL_typename(L, 2));
  name = lua_tostring(L, 2);
  xmlAttr *a = n->type == XML_ELEMENT_NODE ? html_find_attr(n, name) : NULL;
  if (a == NULL) return 0;
  html_push_attr_value(L, a);
  return 1;
}

static int el_attrs(lua_State *L) {
  xmlNode *n = html_el_check(L, 1, "attrs");
  xmlAttr *a;
  lua_settop(L, 1);
  html_doc_hold(L, html_el_doc(L, 1));
  lua_newtable(L);
  for (a = n->properties; a; a = a->next) {
    if (a->type != XML_ATTRIBUTE_NODE || a->name == NULL) continue;
    html_push_attr_value(L, a);
    lua_setfield(L, -2, (const char *)a->name);
  }
  return 1;
}

/* ---- text ---- */

/* Elements whose start and end break a line in a browser: the readable text puts a
 * space there, so "<li>a</li><li>b</li>" reads "a b", not "ab". Sorted (bsearch). */
static const char *const blocks[] = {
  "address", "article", "aside", "blockquote", "body", "br", "caption", "center", "dd",
  "details", "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure",
  "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "head", "header", "hgroup", "hr",
  "html", "legend", "li", "main", "menu", "nav", "ol", "option", "p", "pre", "section",
  "summary", "table", "tbody", "td", "tfoot", "th", "thead", "title", "tr", "ul"};

static int cmp_name(const void *k, const void *e) {
  return strcmp(k, *(const char *const *)e);
}

static int is_block(const xmlChar *name) {
  return bsearch(name, blocks, sizeof blocks / sizeof blocks[0], sizeof blocks[0], cmp_name) != NULL;
}

static int skipped(const xmlChar *name) {
  return strcmp((const char *)name, "script") == 0 || strcmp((const char *)name, "style") == 0;
}

static int is_ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

typedef struct {
  luaL_Buffer b;
  int space;  /* a space is due before the next word */
  int any;    /* a word was written (no space at the start) */
} text_out;

static void add_collapsed(text_out *o, const unsigned char *s) {
  while (*s) {
    const unsigned char *w;
    if (is_ws(*s)) {
      o->space = 1;
      while (is_ws(*s)) s++;
      continue;
    }
    for (w = s; *s && !is_ws(*s); s++) {}
    if (o->space && o->any) luaL_addchar(&o->b, ' ');
    o->space = 0;
    o->any = 1;
    luaL_addlstring(&o->b, (const char *)w, (size_t)(s - w));
  }
}

static int is_text(xmlNode *n) {
  return n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE;
}

void html_push_text(lua_State *L, xmlNode *root, int raw) {
  text_out o;
  xmlNode *n = root;
  luaL_buffinit(L, &o.b);
  o.space = o.any = 0;
  if (is_text(root)) {
    if (root->content) {
      if (raw) luaL_addstring(&o.b, (const char *)root->content);
      else add_collapsed(&o, root->content);
    }
    luaL_pushresult(&o.b);
    return;
  }
  for (;;) {
    int descend = 1;
    if (is_text(n)) {
      if (n->content) {
        if (raw) luaL_addstring(&o.b, (const char *)n->content);
        else add_collapsed(&o, n->content);
      }
    } else if (n->type == XML_ELEMENT_NODE && !raw) {
      if (n != root && skipped(n->name)) descend = 0;
      else if (is_block(n->name)) o.space = 1;
    } else if (n->type != XML_ELEMENT_NODE && n->type != XML_HTML_DOCUMENT_NODE &&
               n->type != XML_DOCUMENT_NODE) {
      descend = 0; /* comments, processing instructions, the DTD */
    }
    if (descend && n->children) {
      n = n->children;
      continue;
    }
    /* up to the next sibling, closing blocks on the way */
    while (n != root && n->next == NULL) {
      n = n->parent;
      if (!raw && n->type == XML_ELEMENT_NODE && is_block(n->name)) o.space = 1;
    }
    if (n == root) break;
    if (!raw && n->type == XML_ELEMENT_NODE && is_block(n->name)) o.space = 1;
    n = n->next;
  }
  luaL_pushresult(&o.b);
}

/* el:text() or el:text{raw = true} */
static int el_text(lua_State *L) {
  xmlNode *n = html_el_check(L, 1, "text");
  int raw = 0;
  if (!lua_isnoneornil(L, 2)) {
    if (!lua_istable(L, 2))
      return luaL_error(L, "bad argument #1 to 'text' (table expected, got %s)",
                        luaL_typename(L, 2));
    lua_getfield(L, 2, "raw");
    raw = lua_toboolean(L, -1);
  }
  html_doc_hold(L, html_el_doc(L, 1));
  html_push_text(L, n, raw);
  return 1;
}

/* ---- markup, family ---- */

/* Outer HTML as libxml2 serialises it, unformatted (format 1 would add newlines
 * after block elements, which the page did not have). */
static int el_html(lua_State *L) {
  xmlNode *n = html_el_check(L, 1, "html");
  html_doc *d = lua_touserdata(L, html_el_doc(L, 1));
  xmlOutputBuffer *out = lr_xml.xmlAllocOutputBuffer(NULL);
  size_t len;
  char *p;
  if (out == NULL) return luaL_error(L, "html: out of memory");
  lr_xml.htmlNodeDumpFormatOutput(out, d->doc, n, "UTF-8", 0);
  /* copied into memory the collector owns before the buffer goes, so that a raise
   * (out of memory) cannot leak it */
  len = out->error ? 0 : lr_xml.xmlOutputBufferGetSize(out);
  p = len ? lua_newuserdatauv(L, len, 0) : NULL;
  if (p) memcpy(p, lr_xml.xmlOutputBufferGetContent(out), len);
  lr_xml.xmlOutputBufferClose(out);
  lua_pushlstring(L, p ? p : "", len);
  return 1;
}

static int el_parent(lua_State *L) {
  xmlNode *n = html_el_check(L, 1, "parent");
  int doc = html_el_doc(L, 1);
  if (n->parent == NULL || n->parent->type != XML_ELEMENT_NODE) return 0;
  html_push_el(L, doc, n->parent);
  return 1;
}

static int el_children(lua_State *L) {
  xmlNode *n = html_el_check(L, 1, "children"), *c;
  int doc = html_el_doc(L, 1);
  lua_Integer i = 0;
  html_doc_hold(L, doc);
  lua_newtable(L);
  for (c = n->children; c; c = c->next) {
    if (c->type != XML_ELEMENT_NODE) continue;
    html_push_el(L, doc, c);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

static int el_select(lua_State *L) {
  xmlNode *n = html_el_check(L, 1, "select");
  return html_select(L, html_el_doc(L, 1), n, 0);
}

static int el_select_one(lua_State *L) {
  xmlNode *n = html_el_check(L, 1, "select_one");
  return html_select(L, html_el_doc(L, 1), n, 1);
}

static int el_xpath(lua_State *L) {
  xmlNode *n = html_el_check(L, 1, "xpath");
  return html_xpath(L, html_el_doc(L, 1), n);
}

/* ---- metamethods ---- */

/* el.tag, then the methods (upvalue 1). */
static int el_index(lua_State *L) {
  const char *k;
  xmlNode *n;
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  k = lua_tostring(L, 2);
  if (k && strcmp(k, "tag") == 0) {
    n = html_el_check(L, 1, "tag");
    lua_pushstring(L, n->name ? (const char *)n->name : "");
    return 1;
  }
  lua_pushnil(L);
  return 1;
}

static int el_eq(lua_State *L) {
  html_el *a = luaL_testudata(L, 1, HTML_EL_MT), *b = luaL_testudata(L, 2, HTML_EL_MT);
  lua_pushboolean(L, a && b && a->n == b->n);
  return 1;
}

static int el_tostring(lua_State *L) {
  html_el *e = luaL_checkudata(L, 1, HTML_EL_MT);
  lua_getiuservalue(L, 1, 1);
  if (((html_doc *)lua_touserdata(L, -1))->doc == NULL)
    lua_pushfstring(L, "%s (closed document)", HTML_EL_MT);
  else
    lua_pushfstring(L, "%s <%s>", HTML_EL_MT, e->n->name ? (const char *)e->n->name : "?");
  return 1;
}

static const luaL_Reg el_methods[] = {
  {"attr", el_attr},
  {"attrs", el_attrs},
  {"text", el_text},
  {"html", el_html},
  {"parent", el_parent},
  {"children", el_children},
  {"select", el_select},
  {"select_one", el_select_one},
  {"xpath", el_xpath},
  {NULL, NULL}
};

void html_el_register(lua_State *L) {
  if (luaL_newmetatable(L, HTML_EL_MT)) {
    lua_pushcfunction(L, el_eq);
    lua_setfield(L, -2, "__eq");
    lua_pushcfunction(L, el_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, el_methods);
    lua_pushcclosure(L, el_index, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}
