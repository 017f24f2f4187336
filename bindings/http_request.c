/* http_request.c: a request's options for luarun.http, checked (misuse raises, naming
 * the function and the option), encoded (query, form, json) and set on curl's easy
 * handle. bindings/http.c makes the calls, parks the task and builds the response.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "http_request.h"


static const char DEFAULT_UA[] = "luarun/" LUARUN_VERSION; /* compared by address */

/* Options a request may take (and a client may hold as defaults). */
static const char *const request_opts[] = {
  "headers", "query", "body", "json", "form", "timeout", "connect_timeout",
  "follow_redirects", "max_redirects", "verify", "ca_file", "proxy", "http_version",
  "output", "max_body_size", "auth", "user_agent", "retry", NULL
};
/* Options only http.client takes. */
static const char *const client_opts[] = { "max_connections", "max_per_host", "cookies",
                                           "delay_per_host", NULL };

static int in_list(const char *const *list, const char *s) {
  for (; *list; list++)
    if (strcmp(*list, s) == 0) return 1;
  return 0;
}

/* ================= checking options ================= */

/* Raises unless every key of the table at idx is a known option. */
void lr_http_check_options(lua_State *L, int idx, const char *fname, int client) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k;
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "%s: option names must be strings (got a %s key)", fname,
                 luaL_typename(L, -1));
    k = lua_tostring(L, -1);
    if (!in_list(request_opts, k)) {
      if (in_list(client_opts, k) && !client)
        luaL_error(L, "%s: option '%s' is only for http.client", fname, k);
      if (!in_list(client_opts, k)) luaL_error(L, "%s: unknown option '%s'", fname, k);
    }
  }
}

/* Pushes the effective value of option `name`: the request's own, else the client
 * default. Returns its type. opts, defs: absolute indices or 0. */
static int get_opt(lua_State *L, int opts, int defs, const char *name) {
  if (opts && lua_getfield(L, opts, name) != LUA_TNIL) return lua_type(L, -1);
  if (opts) lua_pop(L, 1);
  if (defs) return lua_getfield(L, defs, name);
  lua_pushnil(L);
  return LUA_TNIL;
}

static void opt_type_error(lua_State *L, const char *fname, const char *name,
                           const char *want) {
  luaL_error(L, "%s: option '%s' must be %s (got %s)", fname, name, want,
             luaL_typename(L, -1));
}

static double opt_seconds(lua_State *L, const char *fname, const char *name) {
  double s;
  if (lua_type(L, -1) != LUA_TNUMBER) opt_type_error(L, fname, name, "a number of seconds");
  s = lua_tonumber(L, -1);
  if (!(s > 0)) luaL_error(L, "%s: option '%s' must be a positive number of seconds",
                           fname, name);
  return s;
}

long lr_http_opt_count(lua_State *L, const char *fname, const char *name, long min) {
  int isint;
  lua_Integer v = lua_tointegerx(L, -1, &isint);
  if (lua_type(L, -1) != LUA_TNUMBER || !isint || v < min || v > 0x7fffffffL)
    luaL_error(L, "%s: option '%s' must be an integer >= %d", fname, name, (int)min);
  return (long)v;
}

/* The string at idx, which goes to curl as a C string: raises if a NUL would cut it. */
static const char *c_string(lua_State *L, int idx, const char *fname, const char *name) {
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  if (strlen(s) != n) luaL_error(L, "%s: option '%s' contains a NUL byte", fname, name);
  return s;
}

static const char *opt_string(lua_State *L, const char *fname, const char *name) {
  if (lua_type(L, -1) != LUA_TSTRING) opt_type_error(L, fname, name, "a string");
  return c_string(L, -1, fname, name);
}

static int opt_bool(lua_State *L, const char *fname, const char *name) {
  if (lua_type(L, -1) != LUA_TBOOLEAN) opt_type_error(L, fname, name, "a boolean");
  return lua_toboolean(L, -1);
}

/* ================= encoding ================= */

static void add_escaped(luaL_Buffer *b, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  size_t i;
  for (i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
        ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      luaL_addchar(b, (char)ch);
    } else if (ch == ' ') {
      luaL_addchar(b, '+');
    } else {
      luaL_addchar(b, '%');
      luaL_addchar(b, hex[ch >> 4]);
      luaL_addchar(b, hex[ch & 15]);
    }
  }
}

static int scalar_ok(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  return t == LUA_TSTRING || t == LUA_TNUMBER || t == LUA_TBOOLEAN;
}

/* A key of a query or form table, with its length: keys are data, and may hold NUL. */
typedef struct form_key {
  const char *s;
  size_t n;
} form_key;

static int cmp_key(const void *a, const void *b) {
  const form_key *x = a, *y = b;
  int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
  return c ? c : (x->n > y->n) - (x->n < y->n);
}

static void form_value_error(lua_State *L, const char *fname, const char *name, int key,
                             const char *got) {
  luaL_error(L, "%s: option '%s': value of '%s' must be a string, number, boolean or an "
             "array of them (got %s)", fname, name, lua_tostring(L, key), got);
}

/* Raises unless the value at -1 (under the string key at -2) is a scalar or an array
 * of scalars: a table whose keys are exactly 1..n. A nested table, or a key besides
 * the sequence, used to be dropped without a word (issue 23). */
static void check_form_value(lua_State *L, const char *fname, const char *name) {
  int key = lua_gettop(L) - 1, v = key + 1;
  lua_Integer len, count = 0;
  if (scalar_ok(L, v)) return;
  if (!lua_istable(L, v)) form_value_error(L, fname, name, key, luaL_typename(L, v));
  len = (lua_Integer)lua_rawlen(L, v);
  lua_pushnil(L);
  while (lua_next(L, v)) {
    int isint = 0;
    lua_Integer i = lua_type(L, -2) == LUA_TNUMBER ? lua_tointegerx(L, -2, &isint) : 0;
    if (!isint || i < 1 || i > len)
      form_value_error(L, fname, name, key, "a table that is not an array");
    if (!scalar_ok(L, -1))
      form_value_error(L, fname, name, key, lua_pushfstring(L, "an array holding a %s",
                                                            luaL_typename(L, -1)));
    lua_pop(L, 1);
    count++;
  }
  /* Distinct keys, all within 1..len: as many as len means no hole. */
  if (count != len) form_value_error(L, fname, name, key, "an array with holes");
}

/* Checks the table at tbl (query or form) and returns its keys, in a userdata pushed
 * onto the stack, sorted so the encoding does not depend on table order. */
static form_key *form_keys(lua_State *L, int tbl, const char *fname, const char *name,
                           int *count) {
  int n = 0, i = 0;
  form_key *keys;
  lua_pushnil(L);
  while (lua_next(L, tbl)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "%s: option '%s' must have string keys", fname, name);
    check_form_value(L, fname, name);
    lua_pop(L, 1);
    n++;
  }
  keys = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *keys, 0);
  lua_pushnil(L);
  while (lua_next(L, tbl)) {
    lua_pop(L, 1);
    keys[i].s = lua_tolstring(L, -1, &keys[i].n); /* anchored by the table */
    i++;
  }
  qsort(keys, (size_t)n, sizeof *keys, cmp_key);
  *count = n;
  return keys;
}

/* Appends "key=value" for the scalar at -1 to the list at parts, and pops it. (A
 * luaL_Buffer may not have other values pushed above it between its calls, so each
 * pair is built on top of the stack and the pairs are joined at the end.) */
static void add_pair(lua_State *L, int parts, const form_key *k) {
  luaL_Buffer b;
  size_t vl;
  const char *v = luaL_tolstring(L, -1, &vl); /* "true"/"false" for a boolean */
  luaL_buffinit(L, &b);
  add_escaped(&b, k->s, k->n);
  luaL_addchar(&b, '=');
  add_escaped(&b, v, vl);
  luaL_pushresult(&b);
  lua_rawseti(L, parts, (lua_Integer)lua_rawlen(L, parts) + 1);
  lua_pop(L, 2);
}

/* Pushes the table at -1 (query or form) encoded as application/x-www-form-urlencoded,
 * keys sorted; an array value repeats its key. Replaces the table with the string.
 * Raises, naming the function, the option and the key, for a value it cannot send. */
static void encode_form(lua_State *L, const char *fname, const char *name) {
  int tbl = lua_gettop(L), n, i, parts;
  form_key *keys = form_keys(L, tbl, fname, name, &n);
  lua_Integer j, np;
  luaL_Buffer b;
  lua_newtable(L); /* tbl keys parts */
  parts = lua_gettop(L);
  for (i = 0; i < n; i++) {
    lua_pushlstring(L, keys[i].s, keys[i].n);
    if (lua_rawget(L, tbl) == LUA_TTABLE) {
      lua_Integer len = (lua_Integer)lua_rawlen(L, -1);
      for (j = 1; j <= len; j++) {
        lua_rawgeti(L, -1, j);
        add_pair(L, parts, &keys[i]);
      }
      lua_pop(L, 1);
    } else {
      add_pair(L, parts, &keys[i]);
    }
  }
  np = (lua_Integer)lua_rawlen(L, parts);
  luaL_buffinit(L, &b);
  for (j = 1; j <= np; j++) {
    if (j > 1) luaL_addchar(&b, '&');
    lua_rawgeti(L, parts, j);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  lua_replace(L, tbl);
  lua_settop(L, tbl);
}

/* Replaces the value at -1 with its JSON text, through luarun.json. */
static void encode_json(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "luarun.json");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "encode");
  lua_remove(L, -2);
  lua_insert(L, -2);
  lua_call(L, 1, 1);
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "luarun.json.encode returned no string");
}

/* ================= building the request ================= */


/* An HTTP token (RFC 9110) of n bytes: what a method or a header name may be. */
int lr_http_valid_token(const char *s, size_t n) {
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch <= 32 || ch >= 127 || strchr("\"(),/:;<=>?@[\\]{}", ch)) return 0;
  }
  return 1;
}

/* Adds the headers table at -1 into the merged table at merged (lower-case name ->
 * header line), checking names and values. Pops the table. */
static void merge_headers(lua_State *L, int merged, const char *fname, int *count) {
  int tbl = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, tbl)) {
    const char *name = NULL, *value;
    size_t vl, nl = 0;
    if (lua_type(L, -2) == LUA_TSTRING) name = lua_tolstring(L, -2, &nl);
    /* A NUL in the name used to cut it short in the line sent (issue 23). */
    if (name == NULL || !lr_http_valid_token(name, nl))
      luaL_error(L, "%s: option 'headers': invalid header name %s", fname,
                 name ? name : luaL_typename(L, -2));
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "%s: option 'headers': value of '%s' must be a string (got %s)", fname,
                 name, luaL_typename(L, -1));
    value = lua_tolstring(L, -1, &vl);
    if (strlen(value) != vl || strpbrk(value, "\r\n"))
      luaL_error(L, "%s: option 'headers': value of '%s' contains CR, LF or NUL", fname, name);
    /* "Name;" is how curl sends a header with an empty value. */
    if (vl == 0) lua_pushfstring(L, "%s;", name);
    else lua_pushfstring(L, "%s: %s", name, value);
    lua_pushstring(L, name);
    {
      luaL_Buffer b;
      size_t i, nl;
      const char *s = lua_tolstring(L, -1, &nl);
      char *p = luaL_buffinitsize(L, &b, nl);
      for (i = 0; i < nl; i++) p[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i]);
      luaL_pushresultsize(&b, nl);
    }
    lua_remove(L, -2);          /* key value line lname */
    lua_insert(L, -2);
    lua_rawset(L, merged);      /* key value */
    lua_pop(L, 1);
    ++*count;
  }
  lua_pop(L, 1);
}

static int has_header(lua_State *L, int merged, const char *lname) {
  int yes = lua_getfield(L, merged, lname) != LUA_TNIL;
  lua_pop(L, 1);
  return yes;
}

/* ================= retry ================= */

static const short default_on[] = {429, 500, 502, 503, 504};

/* The number at -1 of retry.name: finite, >= 0. */
static double retry_seconds(lua_State *L, const char *fname, const char *name) {
  double s = lua_tonumber(L, -1);
  if (lua_type(L, -1) != LUA_TNUMBER || !(s >= 0) || isinf(s))
    luaL_error(L, "%s: option 'retry': '%s' must be a number of seconds >= 0", fname, name);
  return s;
}

/* retry.on, at -1: statuses and "network". */
static void retry_on(lua_State *L, lr_http_retry *rt, const char *fname) {
  int tbl = lua_gettop(L);
  lua_Integer i, n;
  if (!lua_istable(L, tbl))
    luaL_error(L, "%s: option 'retry': 'on' must be a list of statuses (got %s)", fname,
               luaL_typename(L, tbl));
  n = (lua_Integer)lua_rawlen(L, tbl);
  rt->non = 0;
  rt->network = 0;
  for (i = 1; i <= n; i++) {
    int isint;
    lua_Integer v;
    lua_rawgeti(L, tbl, i);
    v = lua_tointegerx(L, -1, &isint);
    if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "network") == 0) {
      rt->network = 1;
    } else if (lua_type(L, -1) == LUA_TNUMBER && isint && v >= 100 && v <= 599) {
      if (rt->non == LR_HTTP_RETRY_MAX_ON)
        luaL_error(L, "%s: option 'retry': 'on' holds more than %d statuses", fname,
                   LR_HTTP_RETRY_MAX_ON);
      rt->on[rt->non++] = (short)v;
    } else {
      luaL_error(L, "%s: option 'retry': 'on' must hold statuses (integers 100 to 599) "
                 "and \"network\"", fname);
    }
    lua_pop(L, 1);
  }
}

/* The retry option at -1: true (the defaults), false (none) or a table. */
static void read_retry(lua_State *L, lr_http_retry *rt, const char *fname) {
  int tbl = lua_gettop(L);
  memset(rt, 0, sizeof *rt);
  if (lua_type(L, tbl) == LUA_TBOOLEAN) {
    if (!lua_toboolean(L, tbl)) return;
  } else if (!lua_istable(L, tbl)) {
    opt_type_error(L, fname, "retry", "true, false or a table");
  }
  rt->attempts = 3;
  rt->backoff = 1;
  rt->max_wait = 60;
  rt->non = (int)(sizeof default_on / sizeof default_on[0]);
  memcpy(rt->on, default_on, sizeof default_on);
  if (!lua_istable(L, tbl)) return;
  lua_pushnil(L);
  while (lua_next(L, tbl)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    if (strcmp(k, "attempts") == 0) {
      rt->attempts = (int)lr_http_opt_count(L, fname, "retry.attempts", 1);
    } else if (strcmp(k, "backoff") == 0) {
      rt->backoff = retry_seconds(L, fname, k);
    } else if (strcmp(k, "max_wait") == 0) {
      rt->max_wait = retry_seconds(L, fname, k);
    } else if (strcmp(k, "on") == 0) {
      retry_on(L, rt, fname);
    } else {
      lua_pop(L, 1);
      luaL_error(L, "%s: option 'retry': unknown field %s", fname,
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                : luaL_typename(L, -1));
    }
    lua_pop(L, 1);
  }
}

void lr_http_anchor_options(lua_State *L, reqspec *q) {
  luaL_checkstack(L, 4, NULL);
  if (q->ca_file) {
    lua_pushstring(L, q->ca_file);
    q->ca_file = lua_tostring(L, -1);
  }
  if (q->proxy) {
    lua_pushstring(L, q->proxy);
    q->proxy = lua_tostring(L, -1);
  }
  if (q->user_agent != DEFAULT_UA) {
    lua_pushstring(L, q->user_agent);
    q->user_agent = lua_tostring(L, -1);
  }
}

/* Reads and checks every option; leaves on the stack whatever must outlive the
 * call (merged headers, body string). Raises on misuse. */
void lr_http_read_options(lua_State *L, reqspec *q, int opts, int defs) {
  const char *f = q->fname;
  int nbody = 0;
  q->follow = 1;
  q->verify = 1;
  q->max_redirects = 30;
  q->max_body = -1;
  q->user_agent = DEFAULT_UA;
  /* headers: the client's, then the request's, merged by lower-case name */
  lua_newtable(L);
  q->headers_idx = lua_gettop(L);
  if (defs && lua_getfield(L, defs, "headers") != LUA_TNIL) {
    if (!lua_istable(L, -1)) opt_type_error(L, f, "headers", "a table");
    merge_headers(L, q->headers_idx, f, &q->nheaders);
  } else if (defs) lua_pop(L, 1);
  if (opts && lua_getfield(L, opts, "headers") != LUA_TNIL) {
    if (!lua_istable(L, -1)) opt_type_error(L, f, "headers", "a table");
    merge_headers(L, q->headers_idx, f, &q->nheaders);
  } else if (opts) lua_pop(L, 1);
  /* the body: at most one of body, json, form */
  if (get_opt(L, opts, defs, "body") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING) opt_type_error(L, f, "body", "a string");
    nbody++;
  } else lua_pop(L, 1);
  if (get_opt(L, opts, defs, "json") != LUA_TNIL) {
    encode_json(L);
    q->content_type = "Content-Type: application/json";
    nbody++;
  } else lua_pop(L, 1);
  if (get_opt(L, opts, defs, "form") != LUA_TNIL) {
    if (!lua_istable(L, -1)) opt_type_error(L, f, "form", "a table");
    encode_form(L, f, "form");
    q->content_type = "Content-Type: application/x-www-form-urlencoded";
    nbody++;
  } else lua_pop(L, 1);
  if (nbody > 1) luaL_error(L, "%s: give only one of the options 'body', 'json' and 'form'", f);
  if (nbody == 1) {
    q->has_body = 1;
    q->body = lua_tolstring(L, -1, &q->body_len); /* stays on the stack */
  }
  /* The query is encoded here, with the other options, so that its misuse raises
   * whatever the URL turns out to be. */
  if (get_opt(L, opts, defs, "query") != LUA_TNIL) {
    if (!lua_istable(L, -1)) opt_type_error(L, f, "query", "a table");
    encode_form(L, f, "query");
    q->query = lua_tostring(L, -1); /* stays on the stack */
  } else lua_pop(L, 1);
  if (get_opt(L, opts, defs, "timeout") != LUA_TNIL) {
    double s = opt_seconds(L, f, "timeout");
    q->timeout_ms = isinf(s) ? 0 : (long)ceil(s * 1000);
  }
  lua_pop(L, 1);
  if (get_opt(L, opts, defs, "connect_timeout") != LUA_TNIL) {
    double s = opt_seconds(L, f, "connect_timeout");
    q->connect_timeout_ms = isinf(s) ? 0 : (long)ceil(s * 1000);
  }
  lua_pop(L, 1);
  if (get_opt(L, opts, defs, "follow_redirects") != LUA_TNIL)
    q->follow = opt_bool(L, f, "follow_redirects");
  lua_pop(L, 1);
  if (get_opt(L, opts, defs, "max_redirects") != LUA_TNIL)
    q->max_redirects = lr_http_opt_count(L, f, "max_redirects", 0);
  lua_pop(L, 1);
  if (get_opt(L, opts, defs, "verify") != LUA_TNIL) q->verify = opt_bool(L, f, "verify");
  lua_pop(L, 1);
  if (get_opt(L, opts, defs, "ca_file") != LUA_TNIL) q->ca_file = opt_string(L, f, "ca_file");
  lua_pop(L, 1); /* still anchored by the opts table on the stack */
  if (get_opt(L, opts, defs, "proxy") != LUA_TNIL) q->proxy = opt_string(L, f, "proxy");
  lua_pop(L, 1);
  if (get_opt(L, opts, defs, "output") != LUA_TNIL) q->output = opt_string(L, f, "output");
  lua_pop(L, 1);
  if (get_opt(L, opts, defs, "user_agent") != LUA_TNIL)
    q->user_agent = opt_string(L, f, "user_agent");
  lua_pop(L, 1);
  if (get_opt(L, opts, defs, "retry") != LUA_TNIL) read_retry(L, &q->retry, f);
  lua_pop(L, 1);
  if (get_opt(L, opts, defs, "max_body_size") != LUA_TNIL)
    q->max_body = (curl_off_t)lr_http_opt_count(L, f, "max_body_size", 0);
  lua_pop(L, 1);
  if (get_opt(L, opts, defs, "http_version") != LUA_TNIL) {
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    if (strcmp(v, "1.0") == 0) q->http_version = CURL_HTTP_VERSION_1_0;
    else if (strcmp(v, "1.1") == 0) q->http_version = CURL_HTTP_VERSION_1_1;
    else if (strcmp(v, "2") == 0) q->http_version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
    else luaL_error(L, "%s: option 'http_version' must be \"1.0\", \"1.1\" or \"2\"", f);
  }
  lua_pop(L, 1);
  if (get_opt(L, opts, defs, "auth") != LUA_TNIL) {
    int t = lua_gettop(L);
    if (!lua_istable(L, t)) opt_type_error(L, f, "auth", "a table {user, password}");
    if (lua_getfield(L, t, "user") == LUA_TNIL) {
      lua_pop(L, 1);
      lua_rawgeti(L, t, 1);
    }
    if (lua_getfield(L, t, "password") == LUA_TNIL) {
      lua_pop(L, 1);
      lua_rawgeti(L, t, 2);
    }
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "%s: option 'auth' must be {user, password} (two strings)", f);
    q->user = c_string(L, -2, f, "auth");
    q->password = c_string(L, -1, f, "auth");
    /* leave auth, user, password on the stack: they must outlive setopt */
  } else lua_pop(L, 1);
  if (q->content_type && has_header(L, q->headers_idx, "content-type")) q->content_type = NULL;
}

/* Parses the URL with curl's URL API, appends the query option, and checks the
 * scheme. Pushes the final URL and returns 1, or returns 0 (nothing pushed) with a
 * reason in why when the URL is invalid. */
int lr_http_build_url(lua_State *L, reqspec *q, const char **why) {
  CURLU *u;
  CURLUcode rc;
  char *scheme = NULL, *full = NULL;
  int ok = 0;
  if (strlen(q->url) != q->url_len) {
    /* curl would take the URL up to the NUL and request that (issue 23). */
    *why = "the URL contains a NUL byte";
    return 0;
  }
  if (q->query == NULL &&
      (strncmp(q->url, "http://", 7) == 0 || strncmp(q->url, "https://", 8) == 0)) {
    /* The common case goes to curl as given: curl parses it anyway (with the scheme
     * written out, its parser and ours agree), and a URL that does not parse fails
     * the transfer with CURLE_URL_MALFORMAT, reported as invalid_url like here. */
    q->https = q->url[4] == 's';
    lua_pushvalue(L, q->url_arg);
    return 1;
  }
  u = lr_curl.url();
  if (u == NULL) luaL_error(L, "%s: out of memory", q->fname);
  rc = lr_curl.url_set(u, CURLUPART_URL, q->url, 0);
  if (rc != CURLUE_OK) {
    *why = rc == CURLUE_UNSUPPORTED_SCHEME ? "only http and https URLs are accepted"
                                           : "the URL does not parse";
    goto done;
  }
  if (lr_curl.url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
      (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
    *why = "only http and https URLs are accepted";
    goto done;
  }
  q->https = strcmp(scheme, "https") == 0;
  if (q->query && q->query[0])
    lr_curl.url_set(u, CURLUPART_QUERY, q->query, CURLU_APPENDQUERY);
  if (lr_curl.url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK) {
    *why = "the URL does not parse";
    goto done;
  }
  lua_pushstring(L, full);
  ok = 1;
done:
  lr_curl.free(full);
  lr_curl.free(scheme);
  lr_curl.url_cleanup(u);
  return ok;
}

/* Option setters for a reused handle: each sets the option only if the handle's
 * last request left another value (r->applied). */
static void set_long(lr_http_req *r, CURLoption opt, long *cur, long v) {
  if (*cur == v) return;
  lr_curl.easy_setopt(r->easy, opt, v);
  *cur = v;
}

static void set_flag(lr_http_req *r, CURLoption opt, uint8_t *cur, int v) {
  if (*cur == (uint8_t)v) return;
  lr_curl.easy_setopt(r->easy, opt, (long)v);
  *cur = (uint8_t)v;
}

/* The method: curl's request kind (GET, HEAD through NOBODY, POST through
 * POSTFIELDS) plus CUSTOMREQUEST for the other names. Returns -1 out of memory. */
static int apply_method(lr_http_req *r, const reqspec *q) {
  CURL *e = r->easy;
  lr_http_applied *a = &r->applied;
  const char *custom = NULL;
  int kind;
  if (strcmp(q->method, "GET") == 0 && !q->has_body) kind = LR_HTTP_GET;
  else if (strcmp(q->method, "HEAD") == 0) kind = LR_HTTP_HEAD;
  else {
    /* CURLOPT_POST(FIELDS), not a custom "POST", so 301/302/303 turn it into a GET
     * as browsers do, and 307/308 resend the body. */
    kind = strcmp(q->method, "POST") == 0 || q->has_body ? LR_HTTP_POST : LR_HTTP_GET;
    if (strcmp(q->method, "POST") != 0) custom = q->method;
  }
  /* HTTPGET clears both a POST and a NOBODY left by the last request. */
  if (a->method != kind && a->method != LR_HTTP_GET) lr_curl.easy_setopt(e, CURLOPT_HTTPGET, 1L);
  if (kind == LR_HTTP_HEAD && a->method != LR_HTTP_HEAD)
    lr_curl.easy_setopt(e, CURLOPT_NOBODY, 1L);
  if (kind == LR_HTTP_POST) { /* the body is new every time */
    lr_curl.easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
    lr_curl.easy_setopt(e, CURLOPT_POSTFIELDS, q->has_body ? q->body : "");
  }
  a->method = (uint8_t)kind;
  if (custom ? (a->custom == NULL || strcmp(a->custom, custom) != 0) : a->custom != NULL) {
    char *copy = NULL;
    if (custom && (copy = strdup(custom)) == NULL) return -1;
    lr_curl.easy_setopt(e, CURLOPT_CUSTOMREQUEST, custom);
    free(a->custom);
    a->custom = copy;
  }
  return 0;
}

/* Sets the options of the request on its easy handle: the URL, and whatever differs
 * from what the handle's last request left. Returns 0 or -1 (out of memory). */
int lr_http_apply(lua_State *L, lr_http_req *r, reqspec *q, const char *url) {
  CURL *e = r->easy;
  lr_http_applied *a = &r->applied;
  struct curl_slist *h = NULL, *n;
  lr_curl.easy_setopt(e, CURLOPT_URL, url);
  if (apply_method(r, q) != 0) return -1;
  if (q->nheaders) {
    lua_pushnil(L);
    while (lua_next(L, q->headers_idx)) {
      n = lr_curl.slist_append(h, lua_tostring(L, -1));
      lua_pop(L, 1);
      if (n == NULL) goto oom;
      h = n;
    }
  }
  if (q->content_type) {
    if ((n = lr_curl.slist_append(h, q->content_type)) == NULL) goto oom;
    h = n;
  }
  if (q->has_body && !(q->nheaders && has_header(L, q->headers_idx, "expect"))) {
    /* No "Expect: 100-continue" round trip for bodies we already hold. */
    if ((n = lr_curl.slist_append(h, "Expect:")) == NULL) goto oom;
    h = n;
  }
  r->headers = h; /* the release unsets it */
  if (h) lr_curl.easy_setopt(e, CURLOPT_HTTPHEADER, h);
  set_long(r, CURLOPT_TIMEOUT_MS, &a->timeout_ms, q->timeout_ms);
  set_long(r, CURLOPT_CONNECTTIMEOUT_MS, &a->connect_timeout_ms, q->connect_timeout_ms);
  set_flag(r, CURLOPT_FOLLOWLOCATION, &a->follow, q->follow);
  set_long(r, CURLOPT_MAXREDIRS, &a->max_redirects, q->max_redirects);
  set_long(r, CURLOPT_HTTP_VERSION, &a->http_version,
           q->http_version ? q->http_version : CURL_HTTP_VERSION_2TLS);
  /* Wait for a connection that may multiplex rather than open a second one. */
  set_flag(r, CURLOPT_PIPEWAIT, &a->pipewait,
           q->https || q->http_version == CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
  if (q->user_agent != DEFAULT_UA || !a->ua_default) {
    lr_curl.easy_setopt(e, CURLOPT_USERAGENT, q->user_agent);
    a->ua_default = q->user_agent == DEFAULT_UA;
  }
  r->max_body = q->max_body;
  if ((q->max_body >= 0 ? q->max_body : 0) != a->max_body) {
    a->max_body = q->max_body >= 0 ? q->max_body : 0;
    lr_curl.easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, a->max_body);
  }
  /* Rare options with no simple way back to curl's defaults: the handle is reset
   * when this request is released. */
  if (!q->verify) {
    lr_curl.easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    lr_curl.easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    r->tainted = 1;
  }
  if (q->ca_file) {
    lr_curl.easy_setopt(e, CURLOPT_CAINFO, q->ca_file);
    r->tainted = 1;
  }
  if (q->proxy) {
    lr_curl.easy_setopt(e, CURLOPT_PROXY, q->proxy);
    r->tainted = 1;
  }
  if (q->user) {
    lr_curl.easy_setopt(e, CURLOPT_USERNAME, q->user);
    lr_curl.easy_setopt(e, CURLOPT_PASSWORD, q->password);
    r->tainted = 1;
  }
  return 0;
oom:
  lr_curl.slist_free_all(h);
  return -1;
}


/* Whether name is an option only http.client takes. */
int lr_http_client_opt(const char *name) {
  return in_list(client_opts, name);
}

/* http.url.encode (bindings/http_url.c) encodes as the query option does. */
void lr_http_encode_form(lua_State *L, const char *fname, const char *name) {
  encode_form(L, fname, name);
}
