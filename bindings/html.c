/* html.c: luarun.html, HTML documents through libxml2 2.9's HTML parser: html.parse
 * and the document object (its properties, links, close). Elements are in html_el.c,
 * selectors and XPath in html_query.c (html.h says how the objects hang together).
 */
#include <string.h>
#include "html.h"

#define DEFAULT_MAX_SIZE ((size_t)64 << 20)
/* Pages from this size up are parsed on libuv's pool when called from a task.
 * libxml2 takes 65-200 us per KB of a tag-dense page on the shared, loaded 2-core
 * test machine (1 MB: 80-210 ms; bench/html/loop.lua under stock lua5.4, where the
 * parse is inline), all of it holding the loop if done there; 64 KB keeps a parse on
 * the loop near 5 ms, and smaller pages would not gain from the hand-over (a copy
 * of the bytes and two thread switches, ~0.1 ms). */
#define OFF_LOOP_BYTES ((size_t)64 << 10)
/* libxml2's tree is 22 times a tag-dense page (a node is 120 bytes before malloc's
 * overhead; bench/html/page.lua's pages, mallinfo2 around htmlReadMemory), less for
 * text-heavy ones. Lua's collector cannot see it: it is told of 8 times the page,
 * so that a loop parsing and dropping pages collects them at a pace like the
 * memory's, without running the collector all the time on text-heavy pages. */
#define TREE_FACTOR 8

/* ---- documents ---- */

void html_doc_release(lua_State *L, html_doc *d) {
  lr_task *t;
  if (d->busy > 0) { /* a walk is reading the tree (a finalizer closes it) */
    d->closed = 1;
    return;
  }
  if (d->xp) lr_xml.xmlXPathFreeContext(d->xp);
  d->xp = NULL;
  if (d->base) lr_url_base_free(d->base);
  d->base = NULL;
  if (d->doc == NULL) return;
  /* A large tree takes a while to free (1 MB page: ~10 ms): off the loop too, when
   * a task of a running runtime is at hand (the runtime is alive then). */
  if (d->bytes >= OFF_LOOP_BYTES && (t = lr_task_self(L)) != NULL)
    lr_html_free_later(t->rt, d->doc);
  else
    lr_xml.xmlFreeDoc(d->doc);
  d->doc = NULL;
}

html_doc *html_doc_check(lua_State *L, int idx, const char *fname) {
  html_doc *d = luaL_testudata(L, idx, HTML_DOC_MT);
  if (d == NULL)
    luaL_error(L, "calling '%s' on bad self (%s expected, got %s)", fname, HTML_DOC_MT,
               luaL_typename(L, idx));
  if (d->doc == NULL || d->closed) luaL_error(L, "html: the document is closed");
  return d;
}

static char HOLD_MT;

static int hold_close(lua_State *L) {
  html_doc **h = lua_touserdata(L, 1);
  html_doc *d = *h;
  if (d == NULL) return 0;
  *h = NULL;
  if (--d->busy == 0 && d->closed) html_doc_release(L, d);
  return 0;
}

void html_doc_hold(lua_State *L, int doc_idx) {
  html_doc *d = lua_touserdata(L, doc_idx);
  html_doc **h;
  doc_idx = lua_absindex(L, doc_idx);
  h = lua_newuserdatauv(L, sizeof *h, 1);
  *h = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &HOLD_MT) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, hold_close);
    lua_setfield(L, -2, "__close");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &HOLD_MT);
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, doc_idx); /* kept alive while held */
  lua_setiuservalue(L, -2, 1);
  lua_toclose(L, -1);
  *h = d, d->busy++; /* after every allocation: a raise above leaves busy as it was */
  /* those allocations may have run a finalizer that closed it: the caller's nodes
   * are then gone */
  if (d->doc == NULL || d->closed) luaL_error(L, "html: the document is closed");
}

static int doc_gc(lua_State *L) {
  html_doc_release(L, luaL_checkudata(L, 1, HTML_DOC_MT));
  return 0;
}

static int doc_close(lua_State *L) {
  html_doc *d = luaL_testudata(L, 1, HTML_DOC_MT);
  if (d == NULL)
    return luaL_error(L, "calling 'close' on bad self (%s expected, got %s)", HTML_DOC_MT,
                      luaL_typename(L, 1));
  html_doc_release(L, d);
  return 0;
}

/* Pushes a document for doc (taking it), its URL at url_idx (string or nil). */
static int push_doc(lua_State *L, xmlDoc *doc, const char *encoding, int url_idx, size_t bytes) {
  html_doc *d = lua_newuserdatauv(L, sizeof *d, 2);
  memset(d, 0, sizeof *d);
  d->doc = doc; /* owned from here: __gc frees it, even if what follows raises */
  d->bytes = bytes;
  luaL_setmetatable(L, HTML_DOC_MT);
  lua_pushvalue(L, url_idx);
  lua_setiuservalue(L, -2, HTML_UV_URL);
  lua_pushstring(L, encoding);
  lua_setiuservalue(L, -2, HTML_UV_ENCODING);
  /* Lua sees a small userdata; the tree behind it is the size of several pages.
   * Without this, a loop parsing pages and dropping them grows for a long while
   * before the collector runs. */
  lua_gc(L, LUA_GCSTEP, (int)(bytes * TREE_FACTOR >> 10) + 1);
  return 1;
}

/* The next node after n in document order within root's subtree; descend: whether
 * n's children come first. Only elements and the document are descended into (a
 * DTD's children are declarations, not content). */
static xmlNode *next_node(xmlNode *n, xmlNode *root, int descend) {
  if (descend && n->children &&
      (n->type == XML_ELEMENT_NODE || n->type == XML_HTML_DOCUMENT_NODE ||
       n->type == XML_DOCUMENT_NODE))
    return n->children;
  while (n != root) {
    if (n->next) return n->next;
    n = n->parent;
  }
  return NULL;
}

/* The first element named name (lowercase) in document order, having attribute attr
 * when attr is not NULL, or NULL. */
static xmlNode *first_named(xmlDoc *doc, const char *name, const char *attr) {
  xmlNode *root = (xmlNode *)doc, *n = root;
  while ((n = next_node(n, root, 1)) != NULL)
    if (n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0 &&
        (attr == NULL || html_find_attr(n, attr) != NULL))
      return n;
  return NULL;
}

static xmlNode *root_element(xmlDoc *doc) {
  xmlNode *n;
  for (n = doc->children; n; n = n->next)
    if (n->type == XML_ELEMENT_NODE) return n;
  return NULL;
}

/* doc.title, doc.url, doc.encoding, doc.root, then the methods (upvalue 1). */
static int doc_index(lua_State *L) {
  const char *k;
  html_doc *d;
  xmlNode *n;
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  if ((k = lua_tostring(L, 2)) == NULL) return 1;
  if (strcmp(k, "title") == 0) {
    d = html_doc_check(L, 1, "title");
    if ((n = first_named(d->doc, "title", NULL)) == NULL) return 1;
    html_push_text(L, n, 0);
    return 1;
  }
  if (strcmp(k, "url") == 0) {
    html_doc_check(L, 1, "url");
    lua_getiuservalue(L, 1, HTML_UV_URL);
    return 1;
  }
  if (strcmp(k, "encoding") == 0) {
    html_doc_check(L, 1, "encoding");
    lua_getiuservalue(L, 1, HTML_UV_ENCODING);
    return 1;
  }
  if (strcmp(k, "root") == 0) {
    d = html_doc_check(L, 1, "root");
    if ((n = root_element(d->doc)) != NULL) html_push_el(L, 1, n);
    return 1;
  }
  return 1;
}

static int doc_tostring(lua_State *L) {
  html_doc *d = luaL_checkudata(L, 1, HTML_DOC_MT);
  lua_pushfstring(L, "%s (%s, %I bytes)", HTML_DOC_MT, d->doc && !d->closed ? "open" : "closed",
                  (lua_Integer)d->bytes);
  return 1;
}

static int doc_select(lua_State *L) {
  html_doc *d = html_doc_check(L, 1, "select");
  return html_select(L, 1, (xmlNode *)d->doc, 0);
}

static int doc_select_one(lua_State *L) {
  html_doc *d = html_doc_check(L, 1, "select_one");
  return html_select(L, 1, (xmlNode *)d->doc, 1);
}

static int doc_xpath(lua_State *L) {
  html_doc *d = html_doc_check(L, 1, "xpath");
  return html_xpath(L, 1, (xmlNode *)d->doc);
}

/* ---- links ---- */

/* A base for links: <base href> (itself against the document's URL), else the
 * document's URL; NULL when neither gives an absolute URL. */
static lr_url_base *links_base(lua_State *L, html_doc *d) {
  char err[256];
  lr_url_base *page = NULL, *b = NULL;
  xmlNode *base = first_named(d->doc, "base", "href"); /* WHATWG: the first with href */
  xmlAttr *href = base ? html_find_attr(base, "href") : NULL;
  size_t len;
  const char *url;
  lua_getiuservalue(L, 1, HTML_UV_URL);
  if ((url = lua_tolstring(L, -1, &len)) != NULL) page = lr_url_base_new(url, len, err, sizeof err);
  lua_pop(L, 1);
  if (href) {
    const char *h;
    html_push_attr_value(L, href);
    h = lua_tolstring(L, -1, &len);
    if (page) {
      size_t jl;
      char *joined = lr_url_join(page, h, len, LR_URL_NO_FRAGMENT, &jl, err, sizeof err);
      if (joined) b = lr_url_base_new(joined, jl, err, sizeof err);
      free(joined);
    } else {
      b = lr_url_base_new(h, len, err, sizeof err);
    }
    lua_pop(L, 1);
  }
  if (b) {
    if (page) lr_url_base_free(page);
    return b;
  }
  return page;
}

static int is_http(const char *s, size_t n) {
  return (n >= 7 && strncasecmp(s, "http://", 7) == 0) ||
         (n >= 8 && strncasecmp(s, "https://", 8) == 0);
}

/* The scheme of ref is http or https (after the leading spaces browsers trim). */
static int ref_is_http(const char *s, size_t n) {
  while (n && (unsigned char)*s <= 0x20) s++, n--;
  return (n >= 5 && strncasecmp(s, "http:", 5) == 0) ||
         (n >= 6 && strncasecmp(s, "https:", 6) == 0);
}

/* An http(s) URL's host lowercased and its scheme's default port dropped, in place,
 * so that links() gives one spelling per address (HTTP://Up.example:80/x and
 * http://up.example/x are the same link). The scheme is lowercase already. */
static void normalize_origin(char *u, size_t *len) {
  int tls = u[4] == 's' || u[4] == 'S';
  size_t skip = tls ? 8 : 7, i, end, at = 0;
  const char *port = tls ? ":443" : ":80";
  size_t plen = strlen(port);
  for (end = skip; end < *len && u[end] != '/' && u[end] != '?' && u[end] != '#'; end++)
    if (u[end] == '@') at = end + 1;
  for (i = 0; i < end; i++) /* the scheme, and the host (not a user name) */
    if ((i < skip || i >= (at ? at : skip)) && u[i] >= 'A' && u[i] <= 'Z')
      u[i] = (char)(u[i] - 'A' + 'a');
  if (end - skip > plen && memcmp(u + end - plen, port, plen) == 0) {
    memmove(u + end - plen, u + end, *len - end + 1);
    *len -= plen;
  }
}

static int doc_links(lua_State *L) {
  html_doc *d = html_doc_check(L, 1, "links");
  xmlNode *root = (xmlNode *)d->doc, *n = root;
  char err[256];
  lua_Integer count = 0;
  lua_settop(L, 1);
  html_doc_hold(L, 1); /* 2 */
  if (!d->base_done) {
    if (lr_curl_load(err, sizeof err) != 0) return luaL_error(L, "doc:links: %s", err);
    d->base = links_base(L, d);
    d->base_done = 1;
  }
  lua_newtable(L); /* 3: the result */
  lua_newtable(L); /* 4: URLs seen */
  lua_newtable(L); /* 5: hrefs seen (a page repeats its links: join each once) */
  while ((n = next_node(n, root, 1)) != NULL) {
    xmlAttr *href;
    const char *ref;
    char *abs = NULL;
    size_t len, alen = 0;
    if (n->type != XML_ELEMENT_NODE) continue;
    if (strcmp((const char *)n->name, "a") != 0 && strcmp((const char *)n->name, "area") != 0)
      continue;
    if ((href = html_find_attr(n, "href")) == NULL) continue;
    html_push_attr_value(L, href);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, 5) != LUA_TNIL) {
      lua_pop(L, 2);
      continue;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushboolean(L, 1);
    lua_rawset(L, 5);
    ref = lua_tolstring(L, -1, &len);
    if (d->base) {
      abs = lr_url_join(d->base, ref, len, LR_URL_NO_FRAGMENT, &alen, err, sizeof err);
    } else if (ref_is_http(ref, len)) { /* no base: only absolute links are usable */
      lr_url_base *b = lr_url_base_new(ref, len, err, sizeof err);
      if (b) {
        const char *s = lr_url_base_str(b, &alen);
        if ((abs = malloc(alen + 1)) != NULL) memcpy(abs, s, alen + 1);
        lr_url_base_free(b);
      }
    }
    lua_pop(L, 1);
    if (abs == NULL) continue; /* invalid, or relative without a base */
    if (is_http(abs, alen)) {
      normalize_origin(abs, &alen);
      lua_pushlstring(L, abs, alen);
      lua_pushvalue(L, -1);
      if (lua_rawget(L, 4) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, 4);
        lua_rawseti(L, 3, ++count);
      } else {
        lua_pop(L, 2);
      }
    }
    free(abs);
  }
  lua_settop(L, 3);
  return 1;
}

/* ---- html.parse ---- */

static const char *opt_string(lua_State *L, int opts, const char *key, int into) {
  int t = lua_getfield(L, opts, key);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  if (t != LUA_TSTRING)
    luaL_error(L, "html.parse: option '%s' must be a string (got %s)", key, luaL_typename(L, -1));
  lua_replace(L, into);
  return lua_tostring(L, into);
}

/* The stack of parse, once its arguments are read: */
enum { P_BODY = 3, P_URL, P_CTYPE, P_ENC, P_TOP = P_ENC };

static int parse_k(lua_State *L, int status, lua_KContext ctx) {
  lr_html_job *j = (lr_html_job *)ctx;
  xmlDoc *doc;
  (void)status;
  if (lr_task_self(L)->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  doc = j->doc;
  j->doc = NULL;
  if (doc == NULL) {
    lua_pushstring(L, j->err);
    lr_html_job_free(j);
    return luaL_error(L, "html.parse: %s", lua_tostring(L, -1));
  }
  lua_pushstring(L, j->encoding);
  lua_replace(L, P_ENC);
  lr_html_job_free(j);
  return push_doc(L, doc, lua_tostring(L, P_ENC), P_URL, lua_rawlen(L, P_BODY));
}

static int l_parse(lua_State *L) {
  size_t len, max = DEFAULT_MAX_SIZE;
  const char *body, *ctype, *forced;
  char enc[24], err[160];
  lr_html_src src;
  xmlDoc *doc;
  lr_task *t;
  lua_settop(L, 2);
  lua_settop(L, P_TOP);
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_pushvalue(L, 1);
    lua_replace(L, P_BODY);
  } else if (lua_type(L, 1) == LUA_TTABLE) { /* an http response: body, url, headers */
    if (lua_getfield(L, 1, "body") != LUA_TSTRING)
      return luaL_error(L, "html.parse: the response has no body string (got %s)",
                        luaL_typename(L, -1));
    lua_replace(L, P_BODY);
    if (lua_getfield(L, 1, "url") == LUA_TSTRING) lua_replace(L, P_URL);
    else lua_pop(L, 1);
    if (lua_getfield(L, 1, "headers") == LUA_TTABLE &&
        lua_getfield(L, -1, "content-type") == LUA_TSTRING)
      lua_replace(L, P_CTYPE);
    lua_settop(L, P_TOP);
  } else {
    return luaL_error(L, "bad argument #1 to 'html.parse' (string or response expected, got %s)",
                      luaL_typename(L, 1));
  }
  if (!lua_isnil(L, 2)) {
    if (!lua_istable(L, 2))
      return luaL_error(L, "bad argument #2 to 'html.parse' (table expected, got %s)",
                        luaL_typename(L, 2));
    opt_string(L, 2, "url", P_URL);
    opt_string(L, 2, "content_type", P_CTYPE);
    opt_string(L, 2, "encoding", P_ENC);
    if (lua_getfield(L, 2, "max_size") != LUA_TNIL) {
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
        return luaL_error(L, "html.parse: option 'max_size' must be a non-negative integer");
      max = (size_t)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
  }
  body = lua_tolstring(L, P_BODY, &len);
  ctype = lua_tostring(L, P_CTYPE);
  forced = lua_tostring(L, P_ENC);
  if (forced && lr_html_encoding_name(forced, strlen(forced)) == NULL)
    return luaL_error(L, "html.parse: unknown encoding '%s'", forced);
  if (len > max) {
    lua_pushfstring(L, "the document is %I bytes, over max_size (%I)", (lua_Integer)len,
                    (lua_Integer)max);
    return lr_error_fail(L, "too_large", lua_tostring(L, -1));
  }
  if (len >= OFF_LOOP_BYTES && (t = lr_task_can_park(L)) != NULL) {
    lr_html_job *j;
    lr_task_checkpoint(L, t); /* as every wait: a cancelled task stops here */
    j = lr_html_job_new(body, len, forced, ctype);
    if (j == NULL) return luaL_error(L, "html.parse: out of memory");
    return lr_html_park(L, t, j, parse_k);
  }
  src.p = body, src.len = len, src.forced = forced, src.content_type = ctype;
  if ((doc = lr_html_parse(&src, enc, err, sizeof err)) == NULL)
    return luaL_error(L, "html.parse: %s", err);
  return push_doc(L, doc, enc, P_URL, len);
}

static const luaL_Reg doc_methods[] = {
  {"select", doc_select},
  {"select_one", doc_select_one},
  {"xpath", doc_xpath},
  {"links", doc_links},
  {"close", doc_close},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"parse", l_parse},
  {NULL, NULL}
};

int luaopen_luarun_html(lua_State *L) {
  char err[512];
  luaL_requiref(L, "luarun", luaopen_luarun, 0);
  lua_pop(L, 1);
  if (lr_xml_load(err, sizeof err) != 0) return luaL_error(L, "luarun.html: %s", err);
  if (luaL_newmetatable(L, HTML_DOC_MT)) {
    lua_pushcfunction(L, doc_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, doc_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, doc_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, doc_methods);
    lua_pushcclosure(L, doc_index, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  html_el_register(L);
  luaL_newlib(L, funcs);
  return 1;
}
