/* lr_html.h: HTML documents through libxml2 (issue 16: luarun.html).
 *
 *   html_api.c    libxml2, opened at run time (lr_xml.xxx): linked, it would pull
 *                 ICU and libstdc++ into every start
 *   html_parse.c  bytes to a document: the encoding sniffed in the WHATWG order,
 *                 NULs replaced, parsed on the loop or, for a large page, on libuv's
 *                 pool so the loop keeps its pace
 *   html_css.c    CSS selectors: compiled once to a small program, matched right to
 *                 left over libxml2's tree (no XPath translation)
 *
 * A document is touched only on the loop thread once parsed; libxml2 may parse
 * different documents on several threads at once (lr_xml_load initialises it on the
 * loop thread first).
 */
#ifndef LR_HTML_H
#define LR_HTML_H

#include <stddef.h>
#include <libxml/HTMLparser.h>
#include <libxml/HTMLtree.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>
#include "lr_sched.h"

/* ---- html_api.c: libxml2, opened at run time (owned by html_api.c's author) ---- */

/* ---- html_parse.c: bytes to a document (owned by html_parse.c's author) ---- */

/* ---- html_css.c: CSS selectors ----
 * Supported (API.md "Scraping" and the common rest): type and `*`, #id, .class,
 * [attr], [attr=v], [attr~=v], [attr|=v], [attr^=v], [attr$=v], [attr*=v] (values
 * quoted or not), compound selectors, the combinators descendant, `>`, `+`, `~`,
 * groups `a, b`, :first-child, :last-child, :only-child, :nth-child(an+b | odd |
 * even), :nth-last-child(), :first-of-type, :last-of-type, :nth-of-type(),
 * :empty, :root, :not(compound). Type and attribute names are matched without
 * regard to case (libxml2 lowercases them when parsing HTML); values, ids and
 * classes exactly. Anything else (pseudo-elements, :hover...) fails to compile with
 * a message naming the selector and the offending part.
 *
 * html_css.c may keep per-node data in xmlNode._private (e.g. the index of an
 * element among its element siblings, for :nth-child in O(1)); nothing else in
 * luarun uses _private. */
typedef struct lr_css lr_css;

/* Compiles a selector group. NULL with a message in err (e.g. "unsupported
 * pseudo-class ':hover' in 'a:hover'") or "out of memory". */
lr_css *lr_css_compile(const char *sel, size_t len, char *err, size_t errlen);
void lr_css_free(lr_css *s);
/* Bytes held by the compiled selector (for the binding's bounded cache). */
size_t lr_css_size(const lr_css *s);
/* Whether element n matches any selector of the group. Ancestors and siblings
 * anywhere in n's document count (as querySelectorAll does). */
int lr_css_matches(const lr_css *s, xmlNode *n);
/* Visits, in document order, each element strictly under root (root's descendants)
 * that matches; stops early when fn returns non-zero. Returns the number visited. */
typedef int (*lr_css_visit)(void *ud, xmlNode *n);
size_t lr_css_select(const lr_css *s, xmlNode *root, lr_css_visit fn, void *ud);

#endif
