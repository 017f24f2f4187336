/* http_cookies.c: the cookie jar of a luarun.http client, as Lua tables.
 *
 * The jar is libcurl's (core/http.c keeps it in a share). It is read through
 * CURLINFO_COOKIELIST and written through CURLOPT_COOKIELIST, both in the Netscape
 * cookie-file format: one line a cookie, seven fields apart by tabs,
 *   [#HttpOnly_]domain  subdomains(TRUE/FALSE)  path  secure(TRUE/FALSE)  expires  name  value
 * A domain written with a leading dot also matches its subdomains (a cookie that came
 * with a Domain attribute); expires is in seconds since the epoch, 0 for a session
 * cookie. A script sees {name, value, domain, path, secure, http_only, expires}.
 */
#include <stdlib.h>
#include <string.h>
#include "http_request.h"

/* ---- from the jar ---- */

/* A field of a cookie line: where it starts and how long it is. */
typedef struct field {
  const char *s;
  size_t n;
} field;

/* Finds the 7 fields of a cookie line. Returns how many it has. */
static int split_line(const char *line, field f[7]) {
  int n = 0;
  const char *p = line, *tab;
  while (n < 7) {
    tab = strchr(p, '\t');
    f[n].s = p;
    f[n].n = tab ? (size_t)(tab - p) : strlen(p);
    n++;
    if (tab == NULL) break;
    p = tab + 1;
  }
  return n;
}

static int field_is(const field *f, const char *s) {
  return f->n == strlen(s) && memcmp(f->s, s, f->n) == 0;
}

/* A lua_CFunction (called protected, so that a memory error cannot leak the list):
 * pushes the cookie of the line given as a light userdata as a table, or nothing for
 * a line that is not a cookie. */
static int push_cookie(lua_State *L) {
  const char *line = lua_touserdata(L, 1);
  field f[7];
  int http_only = 0;
  long long expires;
  if (split_line(line, f) < 7) return 0;
  if (f[0].n >= 10 && memcmp(f[0].s, "#HttpOnly_", 10) == 0) {
    http_only = 1;
    f[0].s += 10;
    f[0].n -= 10;
  }
  lua_createtable(L, 0, 7);
  lua_pushlstring(L, f[5].s, f[5].n);
  lua_setfield(L, -2, "name");
  lua_pushlstring(L, f[6].s, f[6].n);
  lua_setfield(L, -2, "value");
  lua_pushlstring(L, f[0].s, f[0].n);
  lua_setfield(L, -2, "domain");
  lua_pushlstring(L, f[2].s, f[2].n);
  lua_setfield(L, -2, "path");
  lua_pushboolean(L, field_is(&f[3], "TRUE"));
  lua_setfield(L, -2, "secure");
  lua_pushboolean(L, http_only);
  lua_setfield(L, -2, "http_only");
  expires = strtoll(f[4].s, NULL, 10); /* stops at the tab */
  if (expires > 0) {
    lua_pushinteger(L, (lua_Integer)expires);
    lua_setfield(L, -2, "expires");
  }
  return 1;
}

/* Pushes the jar as a list of cookie tables. */
static void push_jar(lua_State *L, lr_http_client *c) {
  struct curl_slist *list = NULL, *p;
  lua_Integer n = 0;
  if (lr_http_cookies_get(c, &list) != 0)
    luaL_error(L, "client:cookies: cannot read the cookie jar (out of memory)");
  lua_newtable(L);
  for (p = list; p; p = p->next) {
    /* The table is made in a protected way: an error would leak the list. */
    lua_pushcfunction(L, push_cookie);
    lua_pushlightuserdata(L, p->data);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      lr_curl.slist_free_all(list);
      lua_error(L);
    }
    if (lua_istable(L, -1)) lua_rawseti(L, -2, ++n);
    else lua_pop(L, 1);
  }
  lr_curl.slist_free_all(list);
}

/* ---- into the jar ---- */

/* The field `name` of the cookie table at idx, as a string that fits in a cookie
 * line (no tab, CR, LF or NUL; not empty unless empty_ok), or NULL if absent. */
static const char *cookie_field(lua_State *L, int idx, const char *name, int empty_ok,
                                const char *fname, lua_Integer i) {
  size_t n;
  const char *s;
  if (lua_getfield(L, idx, name) == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "%s: cookie %d: '%s' must be a string (got %s)", fname, (int)i, name,
               luaL_typename(L, -1));
  s = lua_tolstring(L, -1, &n);
  if (strlen(s) != n || strpbrk(s, "\t\r\n") || (n == 0 && !empty_ok))
    luaL_error(L, "%s: cookie %d: '%s' must be a%s string without tab, CR, LF or NUL",
               fname, (int)i, name, empty_ok ? "" : " non-empty");
  lua_pop(L, 1); /* anchored by the cookie table */
  return s;
}

static int cookie_flag(lua_State *L, int idx, const char *name, const char *fname,
                       lua_Integer i) {
  int t = lua_getfield(L, idx, name), v = lua_toboolean(L, -1);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    luaL_error(L, "%s: cookie %d: '%s' must be a boolean (got %s)", fname, (int)i, name,
               luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

/* Pushes the Netscape line of the cookie table at idx (the i-th of its list). */
static void cookie_line(lua_State *L, int idx, const char *fname, lua_Integer i) {
  const char *name, *value, *domain, *path;
  lua_Integer expires = 0;
  int secure, http_only, isint;
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: cookie %d must be a table (got %s)", fname, (int)i,
               luaL_typename(L, idx));
  name = cookie_field(L, idx, "name", 0, fname, i);
  value = cookie_field(L, idx, "value", 1, fname, i);
  domain = cookie_field(L, idx, "domain", 0, fname, i);
  path = cookie_field(L, idx, "path", 0, fname, i);
  if (name == NULL || domain == NULL)
    luaL_error(L, "%s: cookie %d needs a name and a domain", fname, (int)i);
  /* A line starting with '#' is a comment to curl, a '.' alone no domain. */
  if (domain[0] == '#' || strcmp(domain, ".") == 0)
    luaL_error(L, "%s: cookie %d: invalid domain '%s'", fname, (int)i, domain);
  secure = cookie_flag(L, idx, "secure", fname, i);
  http_only = cookie_flag(L, idx, "http_only", fname, i);
  if (lua_getfield(L, idx, "expires") != LUA_TNIL) {
    expires = lua_tointegerx(L, -1, &isint);
    if (!isint || expires < 0)
      luaL_error(L, "%s: cookie %d: 'expires' must be seconds since the epoch (an integer "
                 ">= 0)", fname, (int)i);
  }
  lua_pop(L, 1);
  lua_pushfstring(L, "%s%s\t%s\t%s\t%s\t%I\t%s\t%s", http_only ? "#HttpOnly_" : "", domain,
                  domain[0] == '.' ? "TRUE" : "FALSE", path ? path : "/",
                  secure ? "TRUE" : "FALSE", expires, name, value ? value : "");
}

void lr_http_cookies_load(lua_State *L, lr_http_client *c, int idx, const char *fname) {
  lua_Integer i, n;
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: the cookies must be a list of tables (got %s)", fname,
               luaL_typename(L, idx));
  n = (lua_Integer)lua_rawlen(L, idx);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    cookie_line(L, lua_gettop(L), fname, i);
    if (lr_http_cookies_set(c, lua_tostring(L, -1)) != 0)
      luaL_error(L, "%s: cannot add cookie %d (out of memory)", fname, (int)i);
    lua_pop(L, 2);
  }
}

/* client:cookies([{clear = true, add = {cookie, ...}}]) -> {cookie, ...} */
int lr_http_cookies_method(lua_State *L) {
  static const char F[] = "client:cookies";
  lr_http_client *c = lr_http_check_client(L, 1);
  int clear = 0, add = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
      lua_pop(L, 1);
      if (strcmp(k, "clear") != 0 && strcmp(k, "add") != 0)
        luaL_error(L, "%s: unknown option '%s'", F,
                   lua_type(L, -1) == LUA_TSTRING ? k : luaL_typename(L, -1));
    }
    lua_getfield(L, 2, "clear");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
      luaL_error(L, "%s: option 'clear' must be a boolean", F);
    clear = lua_toboolean(L, -1);
    if (lua_getfield(L, 2, "add") != LUA_TNIL) add = lua_gettop(L);
  }
  if (c == NULL) return luaL_error(L, "%s: the http client is closed", F);
  if (!lr_http_client_has_jar(c))
    return luaL_error(L, "%s: the client keeps no cookies (make it with cookies = true)", F);
  if (clear && lr_http_cookies_set(c, NULL) != 0)
    return luaL_error(L, "%s: cannot clear the cookie jar", F);
  if (add) lr_http_cookies_load(L, c, add, F);
  push_jar(L, c);
  return 1;
}
