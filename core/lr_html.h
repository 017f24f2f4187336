/* lr_html.h: HTML documents through libxml2 (issue 16: luarun.html).
 *
 *   html_api.c    libxml2, opened at run time (lr_xml.xxx): linked, it would pull
 *                 ICU and libstdc++ into every start
 *   html_sniff.c  the encoding, sniffed in the WHATWG order, and the bytes turned
 *                 into clean UTF-8 (NULs and invalid sequences become U+FFFD)
 *   html_parse.c  bytes to a document, parsed on the loop or, for a large page, on
 *                 libuv's pool so the loop keeps its pace
 *   html_css_parse.c  CSS selectors compiled once to a small program
 *   html_css_match.c  ... matched right to left over libxml2's tree (no XPath)
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

/* ---- html_api.c: libxml2, opened at run time ----
 * Code calls libxml2 as lr_xml.htmlReadMemory(...) (the full names). Not in the list,
 * on purpose: xmlFree (a variable, not a function) and anything returning memory to
 * free with it; attribute values and text are read from the tree in place.
 * X(return type, name, parameter list) */
#define LR_XML_FUNCTIONS(X) \
  X(void, xmlInitParser, (void))                                                          \
  X(void, xmlSetGenericErrorFunc, (void *ctx, xmlGenericErrorFunc handler))              \
  X(void, xmlSetStructuredErrorFunc, (void *ctx, xmlStructuredErrorFunc handler))        \
  X(htmlDocPtr, htmlReadMemory, (const char *buf, int size, const char *url, const char *enc, int options)) \
  X(htmlDocPtr, htmlNewDocNoDtD, (const xmlChar *uri, const xmlChar *external_id))       \
  X(void, xmlFreeDoc, (xmlDocPtr doc))                                                    \
  X(xmlXPathContextPtr, xmlXPathNewContext, (xmlDocPtr doc))                              \
  X(void, xmlXPathFreeContext, (xmlXPathContextPtr ctx))                                  \
  X(long, xmlXPathOrderDocElems, (xmlDocPtr doc))                                         \
  X(xmlXPathCompExprPtr, xmlXPathCtxtCompile, (xmlXPathContextPtr ctx, const xmlChar *s)) \
  X(xmlXPathObjectPtr, xmlXPathCompiledEval, (xmlXPathCompExprPtr comp, xmlXPathContextPtr ctx)) \
  X(void, xmlXPathFreeCompExpr, (xmlXPathCompExprPtr comp))                               \
  X(void, xmlXPathFreeObject, (xmlXPathObjectPtr obj))                                    \
  X(void, xmlResetLastError, (void))                                                      \
  X(xmlErrorPtr, xmlGetLastError, (void))                                                 \
  X(xmlOutputBufferPtr, xmlAllocOutputBuffer, (xmlCharEncodingHandlerPtr encoder))       \
  X(void, htmlNodeDumpFormatOutput, (xmlOutputBufferPtr out, xmlDocPtr doc, xmlNodePtr cur, const char *enc, int format)) \
  X(const xmlChar *, xmlOutputBufferGetContent, (xmlOutputBufferPtr out))                 \
  X(size_t, xmlOutputBufferGetSize, (xmlOutputBufferPtr out))                             \
  X(int, xmlOutputBufferClose, (xmlOutputBufferPtr out))

typedef struct lr_xml_api {
#define LR_XML_MEMBER(ret, name, params) ret (*name) params;
  LR_XML_FUNCTIONS(LR_XML_MEMBER)
#undef LR_XML_MEMBER
} lr_xml_api;

extern lr_xml_api lr_xml;

/* Opens libxml2 once per process and initialises it (xmlInitParser, on the calling
 * thread: call it from a loop thread before any document is parsed anywhere).
 * Returns 0, or -1 with a reason in err. */
int lr_xml_load(char *err, size_t errlen);
/* Silences libxml2's error channels on the calling thread (they are per-thread
 * globals: every thread that parses or compiles calls this first). */
void lr_xml_quiet_thread(void);

/* ---- html_sniff.c: the encoding and clean UTF-8 ---- */
/* What decides the encoding, strongest first (WHATWG "encoding sniffing"): a BOM,
 * then `forced` (the caller's choice), then the charset of `content_type` (an HTTP
 * header value), then a <meta> in the first 1024 bytes, then UTF-8 if the bytes are
 * valid UTF-8, else windows-1252. Labels are the WHATWG ones ("latin1", "ascii" and
 * "iso-8859-1" mean windows-1252); an unknown label counts as absent. */
typedef struct lr_html_src {
  const char *p;              /* the bytes */
  size_t len;
  const char *forced;         /* NUL-terminated label, or NULL */
  const char *content_type;   /* NUL-terminated header value, or NULL */
} lr_html_src;

/* The input as UTF-8 with no NUL and no invalid sequence (each becomes U+FFFD). */
typedef struct lr_html_utf8 {
  const char *p;              /* src->p itself (after a BOM) when it was clean, else buf */
  size_t len;
  char *buf;                  /* malloc'd, or NULL */
  char encoding[24];          /* the WHATWG name of the encoding used ("utf-8") */
} lr_html_utf8;

/* 0, or -1 when out of memory (or the forced label is unknown: err says which). */
int lr_html_to_utf8(const lr_html_src *src, lr_html_utf8 *out, char *err, size_t errlen);
void lr_html_utf8_free(lr_html_utf8 *u);
/* The WHATWG name for a label ("Latin1" -> "windows-1252"), or NULL if unknown. */
const char *lr_html_encoding_name(const char *label, size_t len);

/* ---- html_parse.c: bytes to a document ---- */
#define LR_HTML_OPTIONS (HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | \
                         HTML_PARSE_NONET | HTML_PARSE_COMPACT | XML_PARSE_HUGE)
/* Parses src on the calling thread (any thread). Never NULL for bad markup: an empty
 * or unparsable input gives an empty document. NULL only on out-of-memory (or an
 * unknown forced encoding), with err set. encoding receives the name used. */
xmlDoc *lr_html_parse(const lr_html_src *src, char encoding[24], char *err, size_t errlen);

/* A parse on libuv's pool while the calling task waits. lr_html_job_new copies the
 * bytes and the labels (a cancelled task's strings may be collected while the pool
 * still reads; a copy of 1 MB costs 0.1 ms against a parse of 30). The continuation
 * finds the job in its context: on LR_WAKE_DONE it takes doc (NULL: err says why)
 * and encoding (setting doc to NULL) and calls lr_html_job_free; a task cancelled
 * meanwhile leaves the job behind, freed (document included) when the pool is done. */
typedef struct lr_html_job {
  uv_work_t work;
  lr_waitq q;                 /* the waiting task */
  lr_task *task;              /* NULL once the task has gone (cancelled) */
  lr_html_src src;            /* pointing into the copies below */
  char *bytes;
  char forced[48], content_type[256];
  xmlDoc *doc;
  char encoding[24];
  char err[128];
} lr_html_job;

/* NULL when out of memory. forced and content_type may be NULL. */
lr_html_job *lr_html_job_new(const char *p, size_t len, const char *forced,
                             const char *content_type);
void lr_html_job_free(lr_html_job *j);      /* frees doc too unless taken (set NULL) */
/* Frees doc on libuv's pool (freeing a 1 MB page's tree takes ~10 ms): nobody
 * waits for it. Frees it at once if the pool refuses. */
void lr_html_free_later(lr_runtime *rt, xmlDoc *doc);
/* Queues j on libuv's pool and parks t; k runs when it is done or cancelled. Raises
 * (freeing j) if the pool refuses the job. */
int lr_html_park(lua_State *L, lr_task *t, lr_html_job *j, lua_KFunction k);

/* ---- html_css_parse.c, html_css_match.c: CSS selectors ----
 * Supported (API.md "Scraping" and the common rest): type and `*`, #id, .class,
 * [attr], [attr=v], [attr~=v], [attr|=v], [attr^=v], [attr$=v], [attr*=v] (values
 * quoted, or unquoted runs of name characters such as [width=100]; an ` i` or ` s`
 * flag before `]`), compound selectors, the combinators descendant, `>`, `+`, `~`,
 * groups `a, b`, :first-child, :last-child, :only-child, :nth-child(an+b | odd |
 * even), :nth-last-child(), :first-of-type, :last-of-type, :only-of-type,
 * :nth-of-type(), :nth-last-of-type(), :empty (no element or text child; comments
 * allowed, whitespace is text, as in browsers), :root, :scope (the root of the
 * select, else :root), :not(), :is() and :where() (each taking a list of complex
 * selectors).
 * CSS escapes work in names and strings. Type and attribute names are matched
 * without regard to case (libxml2 lowercases them when parsing HTML); values, ids
 * and classes exactly (a class is one of the class attribute's tokens split on
 * space, tab, CR, LF and FF). #id accepts any run of name characters (#123, as
 * cssselect does). Anything else (pseudo-elements, :hover, :has(), namespaces,
 * comments, `of S` in :nth-child) fails to compile with a message naming the
 * selector and the offending part.
 *
 * Matching runs right to left over the element tree (no XPath translation); text,
 * comments and other nodes are neither siblings nor parents for it. lr_css_select
 * memoises the descendant and `~` searches per select, so deep or wide documents
 * stay linear (up to a 32 MB memo: 100,000 levels with 20 such combinators).
 *
 * html_css_match.c keeps in xmlNode._private of elements their index among their
 * element siblings (and among those of their type, and that type's count), filled
 * for all children of a parent the first time one needs it: :nth-child is O(1).
 * Nothing else in luarun uses _private. The numbers assume a tree that does not
 * change once selected on (documents are read-only in luarun). */
typedef struct lr_css lr_css;

/* Compiles a selector group. NULL with a message in err (e.g. "unsupported
 * pseudo-class ':hover' in 'a:hover'") or "out of memory". Any bytes (NULs
 * included) are safe; err may be NULL. */
lr_css *lr_css_compile(const char *sel, size_t len, char *err, size_t errlen);
void lr_css_free(lr_css *s);
/* Bytes held by the compiled selector (for the binding's bounded cache), not
 * counting the select memo it keeps (at most 64 KB). */
size_t lr_css_size(const lr_css *s);
/* Whether element n matches any selector of the group. Ancestors and siblings
 * anywhere in n's document count (as querySelectorAll does). 0 for a non-element. */
int lr_css_matches(const lr_css *s, xmlNode *n);
/* Visits, in document order, each element strictly under root (root's descendants)
 * that matches; stops early when fn returns non-zero (fn may be NULL: counting).
 * Returns the number visited.
 * root may be a document or an element; walks iteratively (any depth). fn may
 * raise (longjmp out): the one allocation that lives across calls of fn, the memo
 * for selectors with ` ` or `~`, belongs to s (without memory, matching goes on
 * unmemoised, as exactly). fn must not select with the same s while the select runs
 * (the memo is s's). */
typedef int (*lr_css_visit)(void *ud, xmlNode *n);
size_t lr_css_select(const lr_css *s, xmlNode *root, lr_css_visit fn, void *ud);
/* Whether a select with s would use (and mark busy) its memo: one already under way
 * (a visitor selecting with the same s) has it. After a visitor raised out of a
 * select that had it, lr_css_select_raised(s) lets it go (else later selects with s
 * go without a memo: slow on deep pages). */
int lr_css_memo_free(const lr_css *s);
void lr_css_select_raised(const lr_css *s);

/* The compiled program: internal to html_css_parse.c (which builds it) and
 * html_css_match.c (which runs it). A group is a list of complex selectors; a
 * complex selector is compounds from left to right, each saying how it relates to
 * the one on its left; a compound is simple tests, all of which must hold. Strings
 * are unescaped and NUL-terminated, names lowercased. All of it lives in one arena
 * owned by the lr_css. */
enum {
  LR_CSS_ATTR,    /* name; op, s/n, icase (#id and .class compile to this) */
  LR_CSS_TYPE,    /* s: the lowercase element name */
  LR_CSS_NTH,     /* a, b; of_type; last (counted from the end) */
  LR_CSS_EMPTY, LR_CSS_ROOT, LR_CSS_SCOPE,
  LR_CSS_NOT, LR_CSS_IS  /* sub */
};
enum { LR_CSS_EXISTS, LR_CSS_EQ, LR_CSS_TOKEN, LR_CSS_DASH, LR_CSS_PREFIX,
       LR_CSS_SUFFIX, LR_CSS_SUBSTR };
enum { LR_CSS_FIRST, LR_CSS_DESC, LR_CSS_CHILD, LR_CSS_NEXT, LR_CSS_LATER };
#define LR_CSS_NO_MEMO 0xffffffffu
#define LR_CSS_MAX_COMPOUNDS 256 /* per complex selector: the matcher recurses on them */
#define LR_CSS_MAX_NESTING 16    /* :not(:is(...)) depth */

typedef struct lr_css_list lr_css_list;
typedef struct lr_css_test {
  unsigned char kind, op, icase, of_type, last;
  long long a, b;                /* :nth-*: a*k + b, clamped to +-1e12 */
  const char *name;              /* attribute name */
  const char *s;                 /* value or element name */
  size_t n;                      /* strlen(s) */
  const lr_css_list *sub;        /* :not(), :is() */
} lr_css_test;
typedef struct lr_css_compound {
  const lr_css_test *t;
  unsigned nt;
  unsigned char comb;            /* LR_CSS_FIRST for the leftmost */
  unsigned memo;                 /* memo slot of a ` ` or `~` search, or LR_CSS_NO_MEMO */
} lr_css_compound;
typedef struct lr_css_complex {
  const lr_css_compound *c;
  unsigned nc;
} lr_css_complex;
struct lr_css_list {
  const lr_css_complex *sel;
  unsigned n;
};
/* lr_css_select's memo, kept by the selector between selects (up to 64 KB) so that a
 * visitor that raises (longjmp) leaks nothing: lr_css_free frees it. busy is set while
 * a select uses it: a select with the same selector from inside the visitor (a Lua
 * finalizer) then goes without a memo rather than share it. A visitor that raises
 * leaves busy set: the caller clears it (if it was clear before the select). */
typedef struct lr_css_memo {
  void *p;
  size_t cap;                    /* depths it holds */
  int busy;
} lr_css_memo;
struct lr_css {
  lr_css_list list;
  unsigned nmemo;                /* memo slots: one per ` ` and `~` */
  lr_css_memo *memo;             /* in the arena; NULL when nmemo is 0 */
  size_t size;                   /* bytes malloc'd, this struct included */
  void *blocks;                  /* the arena's blocks, linked */
};

#endif
