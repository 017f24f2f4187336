/* http_url.c: http.url (parse, join, encode, decode, normalize) and http.robots.
 *
 * URLs go through libcurl's URL API, the parser that fetches them (see
 * core/http_url.c for the joins curl 7.88.1 gets wrong). The robots.txt parser is Lua
 * (lua/luarun/robots.lua): it reads untrusted bytes, and in Lua a mistake costs an
 * error, never memory safety; a file is parsed once per host, so speed hardly
 * matters there. */
#include <stdlib.h>
#include <string.h>
#include "bindings.h"
#include "curl_api.h"

#define BOX_MT "luarun.http.url_box"

/* What a call holds across Lua calls that may raise (out of memory): freed by the
 * box's __gc if the call never gets to free it. http.url.join keeps one box for the
 * life of the module, caching the last base it parsed. */
typedef struct box {
  CURLU *u;
  char *tmp;              /* a malloc'd result not yet pushed */
  char *curl_tmp;         /* a string from curl not yet pushed */
  lr_url_base *base;      /* join's cached base, parsed from key */
  char *key;
  size_t keylen;
} box;

static int box_gc(lua_State *L) {
  box *x = luaL_checkudata(L, 1, BOX_MT);
  if (x->u) lr_curl.url_cleanup(x->u);
  lr_curl.free(x->curl_tmp);
  free(x->tmp);
  lr_url_base_free(x->base);
  free(x->key);
  memset(x, 0, sizeof *x);
  return 0;
}

static box *new_box(lua_State *L) {
  box *x = lua_newuserdatauv(L, sizeof *x, 0);
  memset(x, 0, sizeof *x);
  luaL_setmetatable(L, BOX_MT);
  return x;
}

/* Pushes x->tmp (n bytes), then frees it. */
static void push_tmp(lua_State *L, box *x, size_t n) {
  lua_pushlstring(L, x->tmp, n);
  free(x->tmp);
  x->tmp = NULL;
}

static const char *check_url(lua_State *L, int i, const char *fname, const char *what,
                             size_t *n) {
  if (lua_type(L, i) != LUA_TSTRING)
    luaL_error(L, "%s: %s must be a string (got %s)", fname, what, luaL_typename(L, i));
  return lua_tolstring(L, i, n);
}

/* nil, err (kind "invalid_url", err.url = the string at idx). */
static int fail_url(lua_State *L, const char *why, int idx) {
  lr_error_fail(L, "invalid_url", why);
  lua_pushvalue(L, idx);
  lua_setfield(L, -2, "url");
  return 2;
}

/* Sets field name of the table at -1 to part of x->u, if the URL has it. */
static void set_part(lua_State *L, box *x, CURLUPart part, const char *name) {
  if (lr_curl.url_get(x->u, part, &x->curl_tmp, 0) != CURLUE_OK) return;
  if (part == CURLUPART_PORT)
    lua_pushinteger(L, strtol(x->curl_tmp, NULL, 10));
  else
    lua_pushstring(L, x->curl_tmp);
  lr_curl.free(x->curl_tmp);
  x->curl_tmp = NULL;
  lua_setfield(L, -2, name);
}

/* http.url.parse(s): the parts of an absolute URL as curl reads it, not decoded. */
static int url_parse(lua_State *L) {
  size_t n;
  const char *s = check_url(L, 1, "http.url.parse", "the URL", &n);
  CURLUcode rc;
  box *x;
  if (strlen(s) != n) return fail_url(L, "the URL contains a NUL byte", 1);
  x = new_box(L);
  x->u = lr_curl.url();
  if (x->u == NULL) return luaL_error(L, "http.url.parse: out of memory");
  rc = lr_curl.url_set(x->u, CURLUPART_URL, s, CURLU_NON_SUPPORT_SCHEME);
  if (rc != CURLUE_OK) return fail_url(L, lr_curl.url_strerror(rc), 1);
  lua_createtable(L, 0, 8);
  set_part(L, x, CURLUPART_SCHEME, "scheme");
  set_part(L, x, CURLUPART_USER, "user");
  set_part(L, x, CURLUPART_PASSWORD, "password");
  set_part(L, x, CURLUPART_HOST, "host");
  set_part(L, x, CURLUPART_PORT, "port");
  set_part(L, x, CURLUPART_PATH, "path");
  set_part(L, x, CURLUPART_QUERY, "query");
  set_part(L, x, CURLUPART_FRAGMENT, "fragment");
  lr_curl.url_cleanup(x->u);
  x->u = NULL;
  return 1;
}

/* http.url.join(base, ref): the base is parsed once and kept (the box, upvalue 1)
 * while the calls give the same base, as a loop over a page's links does. */
static int url_join(lua_State *L) {
  size_t bn, rn, n;
  const char *base = check_url(L, 1, "http.url.join", "the base URL", &bn);
  const char *ref = check_url(L, 2, "http.url.join", "the reference", &rn);
  box *x = lua_touserdata(L, lua_upvalueindex(1));
  char err[256];
  if (x->base == NULL || x->keylen != bn || memcmp(x->key, base, bn) != 0) {
    lr_url_base_free(x->base);
    free(x->key);
    x->base = NULL;
    x->key = malloc(bn ? bn : 1);
    if (x->key == NULL) return luaL_error(L, "http.url.join: out of memory");
    memcpy(x->key, base, bn);
    x->keylen = bn;
    x->base = lr_url_base_new(base, bn, err, sizeof err);
    if (x->base == NULL) return fail_url(L, err, 1);
  }
  x->tmp = lr_url_join(x->base, ref, rn, 0, &n, err, sizeof err);
  if (x->tmp == NULL) return fail_url(L, err, 2);
  push_tmp(L, x, n);
  return 1;
}

/* http.url.normalize(url): a form of the URL for comparing (core/http_url.c). */
static int url_normalize(lua_State *L) {
  size_t len, n;
  const char *s = check_url(L, 1, "http.url.normalize", "the URL", &len);
  box *x = new_box(L);
  char err[256];
  x->tmp = lr_url_normalize(s, len, &n, err, sizeof err);
  if (x->tmp == NULL) return fail_url(L, err, 1);
  push_tmp(L, x, n);
  return 1;
}

/* http.url.encode(t): as the query option is encoded. */
static int url_encode(lua_State *L) {
  if (!lua_istable(L, 1))
    return luaL_error(L, "http.url.encode: the fields must be a table (got %s)",
                      luaL_typename(L, 1));
  lua_settop(L, 1);
  lr_http_encode_form(L, "http.url.encode", "fields");
  return 1;
}

/* http.url.decode(query): as req.query is decoded; a leading '?' is skipped. */
static int url_decode(lua_State *L) {
  size_t n;
  const char *s = check_url(L, 1, "http.url.decode", "the query", &n);
  if (n > 0 && s[0] == '?') s++, n--;
  lr_http_push_form(L, s, n);
  return 1;
}

static const luaL_Reg url_funcs[] = {
  {"parse", url_parse},
  {"join", url_join},
  {"normalize", url_normalize},
  {"encode", url_encode},
  {"decode", url_decode},
  {NULL, NULL}
};

/* http.robots is lua/luarun/robots.lua's: its chunk is called with the http table
 * (it fetches with http.get) and returns the function and the metatable of what it
 * returns, registered as luarun.Robots as C classes are. */
static void add_robots(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_getfield(L, -1, "luarun.robots");
  lua_remove(L, -2);
  lua_pushliteral(L, "luarun.robots");
  lua_call(L, 1, 1);           /* http make_robots */
  lua_pushvalue(L, -2);
  lua_call(L, 1, 2);           /* http robots Robots */
  lua_setfield(L, LUA_REGISTRYINDEX, "luarun.Robots");
  lua_setfield(L, -2, "robots");
}

void lr_http_url_install(lua_State *L) {
  if (luaL_newmetatable(L, BOX_MT)) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlibtable(L, url_funcs);
  new_box(L); /* join's cache, upvalue of every function (only join uses it) */
  luaL_setfuncs(L, url_funcs, 1);
  lua_setfield(L, -2, "url");
  add_robots(L);
}
