/* test_css.c: the CSS selector engine (core/html_css_*.c) on documents from
 * libxml2's HTML parser. Each selector's matches, in document order, are compared
 * with the expected ids; every select on a whole document is also checked against
 * lr_css_matches on each element (select memoises, matches does not). Then the large
 * cases: a 5,000-row table, 100,000 nested divs, 20,000 siblings, and a 1 MB page
 * whose `a[href]` and `h2` rates are printed (not asserted: the machine is shared).
 * A path as argv[1] saves that page, to time other engines on the same bytes. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "luarun.h"

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", \
                                   __FILE__, __LINE__, #c); failures++; } } while (0)

static xmlDoc *parse(const char *html, size_t len) {
  xmlDoc *doc = htmlReadMemory(html, (int)len, "fixture.html", "UTF-8",
                               HTML_PARSE_RECOVER | HTML_PARSE_NOERROR |
                               HTML_PARSE_NOWARNING | HTML_PARSE_NONET | XML_PARSE_HUGE);
  if (!doc) {
    fprintf(stderr, "test_css: libxml2 did not parse a fixture\n");
    exit(1);
  }
  return doc;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- matches as "id id id" ---- */

typedef struct ids { char buf[4096]; size_t n; } ids;

static void add_id(ids *r, xmlNode *n) {
  const char *id = NULL;
  xmlAttr *a;
  for (a = n->properties; a; a = a->next)
    if (!strcmp((const char *)a->name, "id") && a->children)
      id = (const char *)a->children->content;
  if (!id) id = (const char *)n->name;
  r->n += (size_t)snprintf(r->buf + r->n, sizeof r->buf - r->n, "%s%s", r->n ? " " : "", id);
  if (r->n >= sizeof r->buf) r->n = sizeof r->buf - 1;
}

static int collect(void *ud, xmlNode *n) {
  add_id(ud, n);
  return 0;
}

/* Every element under root that lr_css_matches accepts, in document order. */
static void matches_walk(const lr_css *s, xmlNode *root, ids *r) {
  xmlNode *n;
  for (n = root->children; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE) {
      if (lr_css_matches(s, n)) add_id(r, n);
      matches_walk(s, n, r);
    }
}

/* Checks select(sel) under root against want ("" for nothing). cross: also check
 * lr_css_matches on every element (not for :scope, which only select knows). */
static void expect_at(xmlNode *root, const char *sel, const char *want, int cross, int line) {
  char err[256];
  ids got = {{0}, 0}, each = {{0}, 0};
  lr_css *s = lr_css_compile(sel, strlen(sel), err, sizeof err);
  if (!s) {
    fprintf(stderr, "line %d: '%s' did not compile: %s\n", line, sel, err);
    failures++;
    return;
  }
  size_t k = lr_css_select(s, root, collect, &got);
  if (strcmp(got.buf, want)) {
    fprintf(stderr, "line %d: '%s': got \"%s\", want \"%s\"\n", line, sel, got.buf, want);
    failures++;
  }
  size_t words = got.n ? 1 : 0, i;
  for (i = 0; i < got.n; i++) words += got.buf[i] == ' ';
  if (k != words) {
    fprintf(stderr, "line %d: '%s': select returned %zu for %zu matches\n", line, sel, k, words);
    failures++;
  }
  if (cross) {
    matches_walk(s, root, &each);
    if (strcmp(each.buf, got.buf)) {
      fprintf(stderr, "line %d: '%s': lr_css_matches gives \"%s\", select \"%s\"\n", line,
              sel, each.buf, got.buf);
      failures++;
    }
  }
  if (lr_css_size(s) == 0) {
    fprintf(stderr, "line %d: '%s': lr_css_size is 0\n", line, sel);
    failures++;
  }
  lr_css_free(s);
}

static xmlNode *by_id(xmlNode *root, const char *id) {
  xmlNode *n, *f;
  for (n = root->children; n; n = n->next) {
    if (n->type != XML_ELEMENT_NODE) continue;
    xmlAttr *a;
    for (a = n->properties; a; a = a->next)
      if (!strcmp((const char *)a->name, "id") && a->children &&
          !strcmp((const char *)a->children->content, id))
        return n;
    if ((f = by_id(n, id))) return f;
  }
  return NULL;
}

/* Compiling sel fails with a message containing each of the fragments. */
static void expect_error(const char *sel, size_t len, const char *frag1, const char *frag2,
                         int line) {
  char err[256];
  lr_css *s = lr_css_compile(sel, len, err, sizeof err);
  if (s) {
    fprintf(stderr, "line %d: '%s' compiled; want an error\n", line, sel);
    failures++;
    lr_css_free(s);
    return;
  }
  if (!strstr(err, frag1) || (frag2 && !strstr(err, frag2))) {
    fprintf(stderr, "line %d: error for '%s' is \"%s\"; want \"%s\"%s%s\n", line, sel, err,
            frag1, frag2 ? " and " : "", frag2 ? frag2 : "");
    failures++;
  }
}

#define EXPECT(sel, want) expect_at((xmlNode *)doc, sel, want, 1, __LINE__)
#define EXPECT_IN(id, sel, want) expect_at(by_id((xmlNode *)doc, id), sel, want, 0, __LINE__)
#define ERROR(sel, f1, f2) expect_error(sel, sizeof sel - 1, f1, f2, __LINE__)

static const char fixture[] =
  "<!DOCTYPE html>\n"
  "<html id=html><head id=head><title id=title>T</title></head>\n"
  "<body id=body>\n"
  "<div id=d1 class='a b' lang=en-US data-x='Hello World'>\n"
  "  <p id=p1 class=a>one</p>\n"
  "  <p id=p2 class='b\tc\nd\r\fe'>two</p>\n"
  "  <span id=s1></span>\n"
  "  <p id=p3><!-- only a comment --></p>\n"
  "  <ul id=ul>\n"
  "    <li id=li1>1</li><li id=li2>2</li><li id=li3>3</li><li id=li4>4</li><li id=li5>5</li>\n"
  "  </ul>\n"
  "</div>\n"
  "<div id=d2 title='x y z'>\n"
  "  <a id=a1 href='http://example.com/x.html'>x</a>\n"
  "  <a id=a2 href='/y.pdf' rel='nofollow noopener'>y</a>\n"
  "  <a id=a3>no href</a>\n"
  "  <em id=e1> </em>\n"
  "  <i id=123 class='a:b' data-e='&amp;&lt;' data-empty>x</i>\n"
  "</div>\n"
  "</body></html>\n";

static void selectors(void) {
  xmlDoc *doc = parse(fixture, sizeof fixture - 1);
  /* Types, universal, ids, classes. */
  EXPECT("p", "p1 p2 p3");
  EXPECT("P", "p1 p2 p3");
  EXPECT("li", "li1 li2 li3 li4 li5");
  EXPECT("#p2", "p2");
  EXPECT("#P2", "");
  EXPECT("p#p2", "p2");
  EXPECT("li#p2", "");
  EXPECT(".a", "d1 p1");
  EXPECT(".b", "d1 p2");
  EXPECT(".c", "p2");
  EXPECT(".d", "p2");
  EXPECT(".e", "p2");
  EXPECT(".A", "");
  EXPECT("p.b.c", "p2");
  EXPECT(".a.b", "d1");
  EXPECT("DIV#d1.a", "d1");
  EXPECT("#\\31 23", "123");
  EXPECT("#123", "123");
  EXPECT(".a\\:b", "123");
  EXPECT("i.a", "");
  EXPECT_IN("d2", "*", "a1 a2 a3 e1 123");
  /* Attributes. */
  EXPECT("[href]", "a1 a2");
  EXPECT("[HREF]", "a1 a2");
  EXPECT("a[href]", "a1 a2");
  EXPECT("[ href ]", "a1 a2");
  EXPECT("[class]", "d1 p1 p2 123");
  EXPECT("[data-empty]", "123");
  EXPECT("[data-empty='']", "123");
  EXPECT("[data-empty^='']", "");
  EXPECT("[data-e='&<']", "123");
  EXPECT("[lang=en-US]", "d1");
  EXPECT("[lang=en-us]", "");
  EXPECT("[lang=en-us i]", "d1");
  EXPECT("[lang=en-US s]", "d1");
  EXPECT("[lang|=en]", "d1");
  EXPECT("[lang|=en-US]", "d1");
  EXPECT("[lang|=EN]", "");
  EXPECT("[lang|=EN I]", "d1");
  EXPECT("[lang|=e]", "");
  EXPECT("[data-x='Hello World']", "d1");
  EXPECT("[data-x=\"hello world\" i]", "d1");
  EXPECT("[data-x=\"hello world\"]", "");
  EXPECT("[data-x='Hello\\20World']", "d1");
  EXPECT("[data-x^=Hello]", "d1");
  EXPECT("[data-x$=\"World\"]", "d1");
  EXPECT("[data-x$=\"WORLD\"i]", "d1");
  EXPECT("[data-x*='o W']", "d1");
  EXPECT("[data-x*='O w' i]", "d1");
  EXPECT("[data-x*='']", "");
  EXPECT("[data-x^='']", "");
  EXPECT("[data-x$='']", "");
  EXPECT("[data-x~='World']", "d1");
  EXPECT("[data-x~='']", "");
  EXPECT("[rel~=noopener]", "a2");
  EXPECT("[rel~=noop]", "");
  EXPECT("[rel~='nofollow noopener']", "");
  EXPECT("[title~=y]", "d2");
  EXPECT("[href$='.pdf']", "a2");
  EXPECT("[href^='http:']", "a1");
  EXPECT("a[href*=example]", "a1");
  EXPECT("[id=li3]", "li3");
  EXPECT("[id='123']", "123");
  EXPECT("[id=123]", "123"); /* unquoted: any run of name characters */
  EXPECT("[class~=a]", "d1 p1");
  /* Combinators, in every order. */
  EXPECT("div p", "p1 p2 p3");
  EXPECT("div > p", "p1 p2 p3");
  EXPECT("div>p", "p1 p2 p3");
  EXPECT("body > p", "");
  EXPECT("body p", "p1 p2 p3");
  EXPECT("html li", "li1 li2 li3 li4 li5");
  EXPECT("body > div > ul > li", "li1 li2 li3 li4 li5");
  EXPECT("body > ul > li", "");
  EXPECT("div ul > li", "li1 li2 li3 li4 li5");
  EXPECT("div > li", "");
  EXPECT("p + p", "p2");
  EXPECT("p ~ p", "p2 p3");
  EXPECT("p+span", "s1");
  EXPECT("span + p", "p3");
  EXPECT("span ~ p", "p3");
  EXPECT("li + li", "li2 li3 li4 li5");
  EXPECT("li ~ li", "li2 li3 li4 li5");
  EXPECT("li~li", "li2 li3 li4 li5");
  EXPECT("p ~ ul li", "li1 li2 li3 li4 li5");
  EXPECT("p ~ ul > li + li", "li2 li3 li4 li5");
  EXPECT("p + p ~ ul > li:nth-child(2)", "li2");
  EXPECT("p + p + p ~ ul", "");
  EXPECT("#d1 ~ div a", "a1 a2 a3");
  EXPECT("#d2 ~ div a", "");
  EXPECT("div ~ div", "d2");
  EXPECT("div + div", "d2");
  EXPECT("head + body", "body");
  EXPECT("title ~ *", "");
  EXPECT("head ~ body div", "d1 d2");
  EXPECT("div div", "");
  EXPECT("div > p ~ span + p", "p3");
  EXPECT("html > body > div + div > a ~ em", "e1");
  EXPECT("#d1 p ~ *", "p2 s1 p3 ul");
  EXPECT("* > #ul > *", "li1 li2 li3 li4 li5");
  EXPECT("div .a", "p1");
  EXPECT("div *.a", "p1");
  EXPECT("body *", "d1 p1 p2 s1 p3 ul li1 li2 li3 li4 li5 d2 a1 a2 a3 e1 123");
  EXPECT("  div\n\tp  ", "p1 p2 p3");
  EXPECT("div\r\n>\fp", "p1 p2 p3");
  EXPECT("ul\\>li", "");
  EXPECT("\\75 l > l\\69", "li1 li2 li3 li4 li5");
  /* Groups: document order, each element once. */
  EXPECT("li, p", "p1 p2 p3 li1 li2 li3 li4 li5");
  EXPECT("p, p", "p1 p2 p3");
  EXPECT("#li2 ,#p1", "p1 li2");
  EXPECT("p.a, .a, [class~=a]", "d1 p1");
  /* Structural pseudo-classes. */
  EXPECT("li:first-child", "li1");
  EXPECT("li:last-child", "li5");
  EXPECT("p:first-child", "p1");
  EXPECT("ul:last-child", "ul");
  EXPECT("p:last-child", "");
  EXPECT(":FIRST-CHILD", "html head title d1 p1 li1 a1");
  EXPECT("li:nth-child(2)", "li2");
  EXPECT("li:nth-child(odd)", "li1 li3 li5");
  EXPECT("li:nth-child(ODD)", "li1 li3 li5");
  EXPECT("li:nth-child(even)", "li2 li4");
  EXPECT("li:nth-child(2n+1)", "li1 li3 li5");
  EXPECT("li:nth-child(2N+1)", "li1 li3 li5");
  EXPECT("li:nth-child( 2n + 1 )", "li1 li3 li5");
  EXPECT("li:nth-child(2n- 1)", "li1 li3 li5");
  EXPECT("li:nth-child(2n -1)", "li1 li3 li5");
  EXPECT("li:nth-child(2n-1)", "li1 li3 li5");
  EXPECT("li:nth-child(-n+3)", "li1 li2 li3");
  EXPECT("li:nth-child(-n-1)", "");
  EXPECT("li:nth-child(+n+2)", "li2 li3 li4 li5");
  EXPECT("li:nth-child(n)", "li1 li2 li3 li4 li5");
  EXPECT("li:nth-child(3)", "li3");
  EXPECT("li:nth-child(+3)", "li3");
  EXPECT("li:nth-child(-3)", "");
  EXPECT("li:nth-child(0n+0)", "");
  EXPECT("li:nth-child(0)", "");
  EXPECT("li:nth-child(-2n+5)", "li1 li3 li5");
  EXPECT("li:nth-child(3n)", "li3");
  EXPECT("li:nth-child(99999999999999999999)", "");
  EXPECT("li:nth-last-child(2)", "li4");
  EXPECT("li:nth-last-child(odd)", "li1 li3 li5");
  EXPECT("li:nth-last-child(-n+2)", "li4 li5");
  EXPECT("p:nth-of-type(2)", "p2");
  EXPECT("p:nth-of-type(3)", "p3");
  EXPECT("p:nth-child(4)", "p3");
  EXPECT("p:nth-child(3)", "");
  EXPECT("p:nth-last-of-type(1)", "p3");
  EXPECT("p:nth-last-of-type(3)", "p1");
  EXPECT("p:last-of-type", "p3");
  EXPECT("p:first-of-type", "p1");
  EXPECT("span:only-of-type", "s1");
  EXPECT("span:only-child", "");
  EXPECT("title:only-child", "title");
  EXPECT("em:only-of-type", "e1");
  EXPECT("a:only-of-type", "");
  EXPECT("*:nth-of-type(2)", "p2 li2 d2 a2");
  EXPECT(":root", "html");
  EXPECT("html:root", "html");
  EXPECT("body:root", "");
  EXPECT(":root > body", "body");
  EXPECT(":empty", "s1 p3");
  EXPECT("p:empty", "p3");
  EXPECT("em:empty", "");
  /* nth after combinators: the position()-translation trap. */
  EXPECT("li:first-child ~ :nth-child(2)", "li2");
  EXPECT("#li1 ~ :nth-child(2)", "li2");
  EXPECT("#li1 ~ li:nth-child(3)", "li3");
  EXPECT("#li1 + :nth-child(2)", "li2");
  EXPECT("#li2 + :nth-child(2)", "");
  EXPECT("#li2 ~ :nth-child(2)", "");
  EXPECT("li:nth-child(2) ~ li", "li3 li4 li5");
  EXPECT("li:nth-child(2) + li", "li3");
  EXPECT("p ~ :nth-of-type(2)", "p2");
  EXPECT("#p1 ~ :nth-child(3)", "s1");
  EXPECT(":nth-child(2) > :nth-child(2)", "d2 a2");
  /* :not, :is, :where. */
  EXPECT("p:not(.a)", "p2 p3");
  EXPECT("p:not(.a):not(#p3)", "p2");
  EXPECT("p:not(.a, #p3)", "p2");
  EXPECT("li:not(:first-child):not(:last-child)", "li2 li3 li4");
  EXPECT("li:not(:nth-child(2n))", "li1 li3 li5");
  EXPECT("#d1 > :not(p)", "s1 ul");
  EXPECT("p:not(#d2 p)", "p1 p2 p3");
  EXPECT("p:not(#d1 > p)", "");
  EXPECT("a:not([href])", "a3");
  EXPECT("div :not(li):not(p)", "s1 ul a1 a2 a3 e1 123");
  EXPECT(":not(:not(p))", "p1 p2 p3");
  EXPECT(":is(p, li):first-child", "p1 li1");
  EXPECT(":is(#d1, #d2) > :is(span, em)", "s1 e1");
  EXPECT("div :where(.a)", "p1");
  EXPECT(":matches(ul) li:last-child", "li5");
  EXPECT(":is(p + p) ~ *", "s1 p3 ul");
  /* querySelectorAll semantics: ancestors above the root count, the root does not. */
  EXPECT_IN("d1", "body p", "p1 p2 p3");
  EXPECT_IN("ul", "div li", "li1 li2 li3 li4 li5");
  EXPECT_IN("ul", "html > body > div > ul > li:nth-child(3)", "li3");
  EXPECT_IN("ul", "li", "li1 li2 li3 li4 li5");
  EXPECT_IN("d1", "div", "");
  EXPECT_IN("d1", "div *:first-child", "p1 li1");
  EXPECT_IN("d1", ":scope > p", "p1 p2 p3");
  EXPECT_IN("d1", ":scope li:nth-child(2)", "li2");
  EXPECT_IN("d2", "#d1 ~ :scope > a", "a1 a2 a3");
  EXPECT_IN("ul", "p ~ ul li", "li1 li2 li3 li4 li5");
  expect_at((xmlNode *)doc, ":scope", "html", 0, __LINE__);
  expect_at((xmlNode *)doc, ":scope > body", "body", 0, __LINE__);
  {
    char err[128];
    lr_css *s = lr_css_compile("div", 3, err, sizeof err);
    xmlNode *d1 = by_id((xmlNode *)doc, "d1");
    CHECK(s && lr_css_matches(s, d1));
    CHECK(s && !lr_css_matches(s, d1->children)); /* a text node */
    CHECK(s && !lr_css_matches(s, by_id((xmlNode *)doc, "p1")));
    CHECK(lr_css_size(s) > sizeof(void *));
    /* Stopping early: the visitor's non-zero return. */
    lr_css_free(s);
    s = lr_css_compile("li", 2, err, sizeof err);
    CHECK(s && lr_css_select(s, (xmlNode *)doc, NULL, NULL) == 5);
    lr_css_free(s);
  }
  xmlFreeDoc(doc);
}

/* Where a wrong restart rule or a stale memo entry would show: an inner candidate
 * fails for a reason an outer one does not have, and elements at the same depth
 * under different parents. */
static const char restart_fixture[] =
  "<html><body>"
  "<div id=r1><em></em><span id=c1><span id=c2><i id=t1></i></span></span></div>"
  "<div id=r2><b></b><b></b><span id=c3><em></em><span id=c4><i id=t2></i></span></span></div>"
  "<div><p id=m1></p></div><section><p id=m2></p></section>"
  "<div><span><p id=m3></p></span></div><em><span><p id=m4></p></span></em>"
  "<ul><li id=w1 class=x></li><li id=w2></li></ul><ol><li id=w3></li><li id=w4></li></ol>"
  "</body></html>";

static void restarts(void) {
  xmlDoc *doc = parse(restart_fixture, sizeof restart_fixture - 1);
  EXPECT("em + span i", "t1 t2");
  EXPECT("em ~ span i", "t1 t2");
  EXPECT("b + span i", "t2");
  EXPECT("b + b + span > em + span > i", "t2");
  EXPECT("b ~ span em ~ span i", "t2");
  EXPECT("div > em ~ span i", "t1");
  EXPECT("div > b ~ span > span > i", "t2");
  EXPECT("#r1 span > i", "t1");
  EXPECT("div span span i", "t1 t2");
  EXPECT("div p", "m1 m3");
  EXPECT("div > p", "m1");
  EXPECT("span p", "m3 m4");
  EXPECT("div span p", "m3");
  EXPECT(".x ~ li", "w2");
  EXPECT("ul li ~ li", "w2");
  EXPECT("ol li ~ li", "w4");
  EXPECT("li:first-child ~ li", "w2 w4");
  xmlFreeDoc(doc);
}

static int stop_at_two(void *ud, xmlNode *n) {
  (void)n;
  return ++*(int *)ud == 2;
}

static void early_stop(void) {
  xmlDoc *doc = parse(fixture, sizeof fixture - 1);
  char err[128];
  int seen = 0;
  lr_css *s = lr_css_compile("li", 2, err, sizeof err);
  CHECK(s && lr_css_select(s, (xmlNode *)doc, stop_at_two, &seen) == 2 && seen == 2);
  lr_css_free(s);
  xmlFreeDoc(doc);
}

static void errors(void) {
  char err[256], small[12];
  lr_css *s;
  ERROR("", "empty selector in ''", NULL);
  ERROR("   ", "empty selector", NULL);
  ERROR("a,,b", "empty selector in the list", "in 'a,,b'");
  ERROR("a,", "empty selector in the list", NULL);
  ERROR(",a", "empty selector in the list", NULL);
  ERROR("a:hover", "unsupported pseudo-class ':hover' in 'a:hover'", NULL);
  ERROR("a:HOVER", "unsupported pseudo-class ':HOVER'", NULL);
  ERROR("p::before", "pseudo-elements are not supported: '::before'", "in 'p::before'");
  ERROR("p:before", "pseudo-elements are not supported: ':before'", NULL);
  ERROR("div:has(p)", "unsupported pseudo-class ':has('", "in 'div:has(p)'");
  ERROR("li:nth-child(2n of .a)", "unexpected 'of .a)'", NULL);
  ERROR("[a=b", "unclosed '['", "in '[a=b'");
  ERROR("[a", "unclosed '['", NULL);
  ERROR("[a='b]", "unclosed string", NULL);
  ERROR("[a=\"b\n\"]", "unclosed string", NULL);
  ERROR("a)", "unexpected ')'", "in 'a)'");
  ERROR("a]", "unexpected ']'", NULL);
  ERROR(":not(a", "unclosed '('", "in ':not(a'");
  ERROR(":not(a,", "unclosed '('", NULL);
  ERROR(":not()", "empty selector", "in ':not()'");
  ERROR(":nth-child(2", "unclosed '('", NULL);
  ERROR("a >", "ends with the combinator '>'", NULL);
  ERROR("a ~ ,b", "ends with the combinator '~'", NULL);
  ERROR("> a", "starts with the combinator '>'", NULL);
  ERROR("a > > b", "unexpected '> b'", NULL);
  ERROR("a $b", "unexpected '$b' at offset 2", "in 'a $b'");
  ERROR("ns|a", "namespaces are not supported", NULL);
  ERROR("*|a", "namespaces are not supported", NULL);
  ERROR("[xlink|href]", "namespaces are not supported", NULL);
  ERROR(":nth-child(2n+)", "unexpected ')'", NULL);
  ERROR(":nth-child(+ 2n)", "unexpected", NULL);
  ERROR(":nth-child(2 n)", "unexpected 'n)'", NULL);
  ERROR(":nth-child(2n+-1)", "unexpected", NULL);
  ERROR(":nth-child(odd2)", "unexpected", NULL);
  ERROR(":nth-child()", "unexpected ')'", NULL);
  ERROR(".1a", "expected a class name after '.'", NULL);
  ERROR(".", "expected a class name after '.' at 'end of selector'", NULL);
  ERROR("#", "expected an id after '#'", NULL);
  ERROR("[href=http://x]", "unexpected '://x]'", NULL);
  ERROR("[=a]", "expected an attribute name", NULL);
  ERROR("[a=]", "expected an attribute value", NULL);
  ERROR("[a==b]", "expected an attribute value", NULL);
  ERROR("[a!=b]", "unexpected '!=b]'", NULL);
  ERROR("[a=b x]", "unexpected 'x]'", NULL);
  ERROR("a\\", "unexpected '\\'", NULL);
  ERROR("a /* c */", "unexpected '/* c */'", NULL);
  ERROR("a:", "expected a pseudo-class name after ':'", NULL);
  ERROR("a!", "unexpected '!'", NULL);
  ERROR("a{", "unexpected '{'", NULL);
  /* NUL bytes: the length is given, and the message shows them as '?'. */
  expect_error("a\0b", 3, "unexpected NUL byte at offset 1", "in 'a?b'", __LINE__);
  expect_error("[a='\0']", 7, "unexpected NUL byte at offset 4", NULL, __LINE__);
  expect_error("\0", 1, "unexpected NUL byte at offset 0", NULL, __LINE__);
  /* Depth and length limits. */
  {
    char deep[400] = "";
    int i;
    for (i = 0; i < 20; i++) strcat(deep, ":not(");
    strcat(deep, "a");
    for (i = 0; i < 20; i++) strcat(deep, ")");
    expect_error(deep, strlen(deep), "nested more than 16 deep", NULL, __LINE__);
    char *longsel = malloc(300 * 2 + 1);
    for (i = 0; i < 300; i++) memcpy(longsel + 2 * i, "a ", 2);
    longsel[599] = '\0';
    expect_error(longsel, strlen(longsel), "more than 256 compound selectors", NULL, __LINE__);
    free(longsel);
  }
  /* A small or absent error buffer is safe. */
  s = lr_css_compile("a:hover", 7, small, sizeof small);
  CHECK(!s && strlen(small) == sizeof small - 1);
  s = lr_css_compile("a:hover", 7, NULL, 0);
  CHECK(!s);
  s = lr_css_compile("a", 1, NULL, 0);
  CHECK(s != NULL);
  lr_css_free(s);
  lr_css_free(NULL);
  CHECK(lr_css_size(NULL) == 0);
  /* A long selector is cut in the message. */
  {
    char sel[400];
    memset(sel, 'x', sizeof sel);
    memcpy(sel + 390, ":hover", 6);
    s = lr_css_compile(sel, 396, err, sizeof err);
    CHECK(!s && strstr(err, "...'") && strlen(err) < 200);
  }
}

/* ---- large documents ---- */

typedef struct sbuf { char *p; size_t n, cap; } sbuf;

static void put(sbuf *b, const char *s) {
  size_t k = strlen(s);
  if (b->n + k + 1 > b->cap) {
    b->cap = (b->n + k + 1) * 2;
    b->p = realloc(b->p, b->cap);
    if (!b->p) { fprintf(stderr, "test_css: out of memory\n"); exit(1); }
  }
  memcpy(b->p + b->n, s, k + 1);
  b->n += k;
}

static size_t count(xmlNode *root, const char *sel, double *secs) {
  char err[256];
  lr_css *s = lr_css_compile(sel, strlen(sel), err, sizeof err);
  if (!s) {
    fprintf(stderr, "'%s' did not compile: %s\n", sel, err);
    failures++;
    return (size_t)-1;
  }
  double t = now();
  size_t k = lr_css_select(s, root, NULL, NULL);
  if (secs) *secs = now() - t;
  lr_css_free(s);
  return k;
}

static void table(void) {
  sbuf b = {NULL, 0, 0};
  char row[200];
  double t;
  int i;
  put(&b, "<html><body><table id=tbl>");
  for (i = 1; i <= 5000; i++) {
    snprintf(row, sizeof row, "<tr><td>%d</td><td class=v>x</td><td>y</td></tr>\n", i);
    put(&b, row);
  }
  put(&b, "</table></body></html>");
  xmlDoc *doc = parse(b.p, b.n);
  xmlNode *root = (xmlNode *)doc;
  CHECK(count(root, "#tbl tr:nth-child(1) td", &t) == 3);
  printf("test_css: '#tbl tr:nth-child(1) td' on 5,000 rows: %.2f ms\n", t * 1e3);
  CHECK(count(root, "#tbl tr:nth-child(5000) td", NULL) == 3);
  CHECK(count(root, "#tbl tr:nth-last-child(1) td", &t) == 3);
  printf("test_css: '#tbl tr:nth-last-child(1) td': %.2f ms\n", t * 1e3);
  CHECK(count(root, "tr:nth-of-type(2500) td:last-child", NULL) == 1);
  CHECK(count(root, "tr:nth-last-of-type(2n) > td:nth-child(2)", NULL) == 2500);
  CHECK(count(root, "td:nth-child(2)", NULL) == 5000);
  CHECK(count(root, "tr:nth-child(n+4991)", NULL) == 10);
  CHECK(count(root, "tr ~ tr > .v", &t) == 4999);
  printf("test_css: 'tr ~ tr > .v': %.2f ms\n", t * 1e3);
  CHECK(count(root, "th ~ tr td", &t) == 0);
  printf("test_css: 'th ~ tr td' (no th): %.2f ms\n", t * 1e3);
  CHECK(count(root, "tr:first-child ~ tr td:first-child + td.v", NULL) == 4999);
  xmlFreeDoc(doc);
  free(b.p);
}

/* A visitor that raises (a Lua error is a longjmp) at the n-th match. */
static jmp_buf jump;
static int raise_at(void *ud, xmlNode *n) {
  (void)n;
  if (--*(int *)ud == 0) longjmp(jump, 1);
  return 0;
}

static void deep(void) {
  sbuf b = {NULL, 0, 0};
  int i;
  double t;
  put(&b, "<html><body>");
  for (i = 0; i < 100000; i++) put(&b, i % 1000 == 0 ? "<div class=k>" : "<div>");
  put(&b, "<p>deep</p></body></html>");
  xmlDoc *doc = parse(b.p, b.n);
  xmlNode *root = (xmlNode *)doc;
  size_t divs = count(root, "div", NULL);
  printf("test_css: %zu nested divs (libxml2 kept that many)\n", divs);
  CHECK(divs == 100000);
  CHECK(count(root, "div p", &t) == 1);
  printf("test_css: 'div p' 100,000 deep: %.2f ms\n", t * 1e3);
  CHECK(count(root, "body div", &t) == divs);
  printf("test_css: 'body div' 100,000 deep: %.2f ms\n", t * 1e3);
  CHECK(count(root, "span div", &t) == 0);
  printf("test_css: 'span div' 100,000 deep: %.2f ms\n", t * 1e3);
  CHECK(count(root, "div div", NULL) == divs - 1);
  CHECK(count(root, ".k div", NULL) == divs - 1);
  CHECK(count(root, ".k > div", NULL) == 100);
  CHECK(count(root, ".k .k", NULL) == 99);
  CHECK(count(root, ".k div div p", NULL) == 1);
  CHECK(count(root, "div:only-child", NULL) == divs);
  CHECK(count(root, ":not(span) > p:first-child:last-child", NULL) == 1);
  CHECK(count(root, "html > body > div > div > div > div > div > div > div > div > p", NULL) == 0);
  CHECK(count(root, "div > div > div > div > div > div > div > div > p", &t) == 1);
  printf("test_css: a chain of 8 '>' 100,000 deep: %.2f ms\n", t * 1e3);
  {
    /* Out of the select by longjmp deep down (its memo is past 64 KB by then):
     * nothing leaks (ASan's leak check), and the selector still works. */
    char err[128];
    volatile int left = 50000;
    lr_css *s = lr_css_compile("body div", 8, err, sizeof err);
    CHECK(s != NULL);
    if (s && !setjmp(jump)) {
      lr_css_select(s, root, raise_at, (void *)&left);
      CHECK(!"the visitor raised");
    }
    lr_css_select_raised(s);
    CHECK(left == 0);
    CHECK(s && lr_css_select(s, root, NULL, NULL) == divs);
    left = 3;
    if (s && !setjmp(jump)) lr_css_select(s, root, raise_at, (void *)&left);
    lr_css_select_raised(s);
    CHECK(s && lr_css_select(s, root, NULL, NULL) == divs);
    lr_css_free(s);
  }
  CHECK(count(root, "div:not(div div)", NULL) == 1);
  CHECK(count(root, "div:not(span div)", &t) == divs);
  printf("test_css: 'div:not(span div)' 100,000 deep: %.2f ms\n", t * 1e3);
  CHECK(count(root, ":is(.k div, em) p", NULL) == 1);
  {
    /* Selecting from an element deep down: its ancestors count. */
    xmlNode *n = xmlDocGetRootElement(doc), *c;
    char err[128];
    for (c = n; c; c = xmlFirstElementChild(c)) n = c; /* down to the p */
    n = n->parent;                                     /* the innermost div */
    CHECK(!strcmp((const char *)n->name, "div"));
    lr_css *s = lr_css_compile("body div p", 10, err, sizeof err);
    CHECK(s && lr_css_select(s, n, NULL, NULL) == 1);
    lr_css_free(s);
  }
  xmlFreeDoc(doc);
  b.n = 0;
  /* Alternating nesting for `a b a b ...`: backtracking must stay polynomial. */
  put(&b, "<html><body>");
  for (i = 0; i < 2000; i++) put(&b, i % 2 ? "<span>" : "<div>");
  put(&b, "<p>x</p></body></html>");
  doc = parse(b.p, b.n);
  CHECK(count((xmlNode *)doc, "div span div span div span div span div span em", &t) == 0);
  printf("test_css: 'div span ... em' (10 deep) on 2,000 alternating: %.2f ms\n", t * 1e3);
  CHECK(count((xmlNode *)doc, "div span div span div span div span div span p", NULL) == 1);
  CHECK(count((xmlNode *)doc, "div > span div > span div > span div > span > p", NULL) == 1);
  CHECK(count((xmlNode *)doc, "body > span div p", NULL) == 0);
  xmlFreeDoc(doc);
  free(b.p);
}

static void wide(void) {
  sbuf b = {NULL, 0, 0};
  int i;
  double t;
  put(&b, "<html><body><ul>");
  for (i = 0; i < 20000; i++) put(&b, i == 10000 ? "<li class=mid>x</li>" : "<li>x</li>");
  put(&b, "</ul></body></html>");
  xmlDoc *doc = parse(b.p, b.n);
  xmlNode *root = (xmlNode *)doc;
  CHECK(count(root, "li ~ li", NULL) == 19999);
  CHECK(count(root, "b ~ li", &t) == 0);
  printf("test_css: 'b ~ li' over 20,000 siblings: %.2f ms\n", t * 1e3);
  CHECK(count(root, ".mid ~ li", &t) == 9999);
  printf("test_css: '.mid ~ li' over 20,000 siblings: %.2f ms\n", t * 1e3);
  CHECK(count(root, ".mid + li ~ li", NULL) == 9998);
  CHECK(count(root, "li ~ .mid ~ li", NULL) == 9999);
  CHECK(count(root, "li:nth-last-child(1)", NULL) == 1);
  CHECK(count(root, "li:nth-child(10001).mid", NULL) == 1);
  CHECK(count(root, "ul > :nth-of-type(3n+1)", NULL) == 6667);
  xmlFreeDoc(doc);
  free(b.p);
}

/* A page like the benchmark's: ~1 MB, 6,000 links, nested tables, headings. */
static void bench(const char *save) {
  sbuf b = {NULL, 0, 0};
  char line[400];
  int i, reps = 20;
  double t_a = 0, t_h = 0, x_a = 0, x_h = 0, t;
  size_t na = 0, nh = 0, els;
  put(&b, "<!DOCTYPE html><html><head><title>Bench</title></head><body><div id=content>");
  for (i = 0; i < 6000; i++) {
    if (i % 50 == 0) {
      snprintf(line, sizeof line, "<h2 class=section id=s%d>Section %d</h2><table class=t>", i, i);
      put(&b, line);
    }
    snprintf(line, sizeof line,
             "<tr class=row><td class=c1><a href=\"/wiki/Page_%d\" title=\"Page %d\">Page "
             "%d</a></td><td><span class=n>%d</span> words, edited <b>today</b></td>"
             "<td><a name=x%d>anchor</a></td></tr>\n", i, i, i, i * 7, i);
    put(&b, line);
    if (i % 50 == 49) put(&b, "</table><p>Some text of the section, with <i>markup</i>.</p>");
  }
  put(&b, "</div></body></html>");
  if (save) {
    FILE *f = fopen(save, "wb");
    if (f) {
      fwrite(b.p, 1, b.n, f);
      fclose(f);
    }
  }
  xmlDoc *doc = parse(b.p, b.n);
  xmlNode *root = (xmlNode *)doc;
  char err[128];
  lr_css *sa = lr_css_compile("a[href]", 7, err, sizeof err);
  lr_css *sh = lr_css_compile("h2", 2, err, sizeof err);
  els = count(root, "*", NULL);
  xmlXPathCompExpr *xa = xmlXPathCompile((const xmlChar *)"//a[@href]");
  xmlXPathCompExpr *xh = xmlXPathCompile((const xmlChar *)"//h2");
  xmlXPathContext *ctx = xmlXPathNewContext(doc);
  CHECK(sa && sh && xa && xh && ctx);
  /* Best of reps (the machine is shared): ours, then libxml2's XPath (what lxml runs)
   * on the same tree. */
  for (i = 0; i < reps && sa && sh && xa && xh && ctx; i++) {
    t = now();
    na = lr_css_select(sa, root, NULL, NULL);
    t = now() - t;
    if (i == 0 || t < t_a) t_a = t;
    t = now();
    nh = lr_css_select(sh, root, NULL, NULL);
    t = now() - t;
    if (i == 0 || t < t_h) t_h = t;
    t = now();
    xmlXPathObject *o = xmlXPathCompiledEval(xa, ctx);
    t = now() - t;
    if (i == 0 || t < x_a) x_a = t;
    CHECK(o && o->nodesetval && o->nodesetval->nodeNr == 6000);
    xmlXPathFreeObject(o);
    t = now();
    o = xmlXPathCompiledEval(xh, ctx);
    t = now() - t;
    if (i == 0 || t < x_h) x_h = t;
    CHECK(o && o->nodesetval && o->nodesetval->nodeNr == 120);
    xmlXPathFreeObject(o);
  }
  CHECK(na == 6000 && nh == 120);
  printf("test_css: %.2f MB page, %zu elements: 'a[href]' %zu matches in %.3f ms "
         "(%.2f M matches/s, %.1f M elements/s), 'h2' %zu in %.3f ms; libxml2 XPath "
         "'//a[@href]' %.3f ms, '//h2' %.3f ms (best of %d)\n",
         b.n / 1e6, els, na, t_a * 1e3, na / t_a / 1e6, els / t_a / 1e6, nh, t_h * 1e3,
         x_a * 1e3, x_h * 1e3, reps);
  xmlXPathFreeContext(ctx);
  xmlXPathFreeCompExpr(xa);
  xmlXPathFreeCompExpr(xh);
  lr_css_free(sa);
  lr_css_free(sh);
  xmlFreeDoc(doc);
  free(b.p);
}

int main(int argc, char **argv) {
  xmlInitParser();
  selectors();
  restarts();
  early_stop();
  errors();
  table();
  deep();
  wide();
  bench(argc > 1 ? argv[1] : NULL);
  xmlCleanupParser();
  if (failures) {
    fprintf(stderr, "test_css: %d failures\n", failures);
    return 1;
  }
  printf("test_css: ok\n");
  return 0;
}
