/* html.h: private header of luarun.html (bindings/html*.c).
 *
 *   html.c        the module: html.parse, documents (properties, close, links)
 *   html_el.c     elements: properties and methods, text, outer HTML
 *   html_query.c  doc/el:select and :xpath, with the compiled selectors and XPath
 *                 expressions cached per Lua state
 *
 * A document is a userdata owning the xmlDoc; an element is a userdata holding a node
 * pointer, its first user value the document's userdata, so an element keeps its
 * document alive and sees it closed. Elements are made only for what the script gets
 * back; nothing else of the tree ever becomes a Lua value.
 */
#ifndef LR_HTML_BINDING_H
#define LR_HTML_BINDING_H

#include "bindings.h"
#include "curl_api.h"

#define HTML_DOC_MT "luarun.html.Document"
#define HTML_EL_MT "luarun.html.Element"

typedef struct html_doc {
  xmlDoc *doc;                /* NULL once closed */
  xmlXPathContext *xp;        /* made on the first xpath call */
  lr_url_base *base;          /* links(): made on first use */
  int base_done;              /* base computed (it may be NULL: no base) */
  size_t bytes;               /* the page's size, for the collector's nudge */
  int busy;                   /* walks under way (html_doc_hold) */
  int closed;                 /* closed while busy: the free waits for busy == 0 */
  size_t depth;               /* deepest element nesting, measured on the first xpath */
} html_doc;

typedef struct html_el {
  xmlNode *n;
} html_el;

/* Document user values: 1 the URL given (string or nil), 2 the encoding name. */
enum { HTML_UV_URL = 1, HTML_UV_ENCODING = 2 };

/* The open document at idx, or raises ("html: the document is closed"; a wrong
 * self names method fname). */
html_doc *html_doc_check(lua_State *L, int idx, const char *fname);
/* The node of the element at idx, or raises if it is not one or its document is
 * closed. html_el_doc pushes the element's document and returns its index. */
xmlNode *html_el_check(lua_State *L, int idx, const char *fname);
int html_el_doc(lua_State *L, int idx);
/* Pushes an element for n, a node of the document whose userdata is at doc_idx. */
void html_push_el(lua_State *L, int doc_idx, xmlNode *n);
/* Frees what a document owns (its __gc and close); while a walk holds the document
 * it is only marked closed, and freed when the last walk ends. */
void html_doc_release(lua_State *L, html_doc *d);
/* Holds the document at doc_idx for a walk that allocates (so runs finalizers, which
 * may close it): pushes a to-be-closed guard that lets go when the calling C
 * function returns or raises. Call it before any other to-be-closed slot. */
void html_doc_hold(lua_State *L, int doc_idx);

/* html_el.c */
void html_el_register(lua_State *L);
/* Pushes the text of n's subtree: raw (every text node, as is) or readable (script
 * and style skipped, block boundaries and <br> as spaces, whitespace collapsed). */
void html_push_text(lua_State *L, xmlNode *n, int raw);
/* Pushes the value of attribute a (its text children joined). */
void html_push_attr_value(lua_State *L, xmlAttr *a);
/* The attribute of element n named name (ASCII case-insensitive), or NULL. */
xmlAttr *html_find_attr(xmlNode *n, const char *name);

/* html_query.c: each reads the selector/expression at index 2 of method fname; the
 * document's userdata is at doc_idx, the context node is root. */
int html_select(lua_State *L, int doc_idx, xmlNode *root, int one);
int html_xpath(lua_State *L, int doc_idx, xmlNode *node);

#endif
