/* http.c: the `luarun.http` module: http.get/post/request/client (API.md).
 *
 * A call checks every option first (misuse raises, naming the function and the
 * option), builds a request on the client's engine (core/http.c), parks the task and
 * resumes in request_k, which turns the finished transfer into a response table or
 * nil, err. Strings curl does not copy (the request body) stay on the task's stack
 * until the continuation runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "bindings.h"
#include "curl_api.h"

#define CLIENT_MT "luarun.http.Client"
#define RESPONSE_MT "luarun.http.Response"
static const char DEFAULT_UA[] = "luarun/" LUARUN_VERSION; /* compared by address */

static const char DEFAULT_KEY = 'd';

typedef struct client_ud {
  lr_http_client *c; /* NULL once closed */
} client_ud;

/* Options a request may take (and a client may hold as defaults). */
static const char *const request_opts[] = {
  "headers", "query", "body", "json", "form", "timeout", "connect_timeout",
  "follow_redirects", "max_redirects", "verify", "ca_file", "proxy", "http_version",
  "output", "max_body_size", "auth", "user_agent", NULL
};
/* Options only http.client takes. */
static const char *const client_opts[] = { "max_connections", "max_per_host", NULL };

static int in_list(const char *const *list, const char *s) {
  for (; *list; list++)
    if (strcmp(*list, s) == 0) return 1;
  return 0;
}

/* ================= checking options ================= */

/* Raises unless every key of the table at idx is a known option. */
static void check_option_names(lua_State *L, int idx, const char *fname, int client) {
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

static long opt_count(lua_State *L, const char *fname, const char *name, long min) {
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

typedef struct reqspec {
  const char *fname, *method, *url;
  size_t url_len;
  int url_arg;                /* the URL's stack index */
  const char *query;          /* the query option encoded (on the stack), or NULL */
  const char *body;           /* on the stack until the continuation */
  size_t body_len;
  const char *content_type;   /* for json/form, unless the script set one */
  int has_body, https, want_h2, http_version;
  long timeout_ms, connect_timeout_ms, max_redirects;
  int follow, verify;
  const char *ca_file, *proxy, *output, *user_agent, *user, *password;
  curl_off_t max_body;
  int headers_idx;            /* a table name_lower -> "Name: value", or 0 */
  int nheaders;               /* headers merged into it (0: the table is empty) */
} reqspec;

/* An HTTP token (RFC 9110) of n bytes: what a method or a header name may be. */
static int valid_token(const char *s, size_t n) {
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
    if (name == NULL || !valid_token(name, nl))
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

/* Reads and checks every option; leaves on the stack whatever must outlive the
 * call (merged headers, body string). Raises on misuse. */
static void read_options(lua_State *L, reqspec *q, int opts, int defs) {
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
    q->max_redirects = opt_count(L, f, "max_redirects", 0);
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
  if (get_opt(L, opts, defs, "max_body_size") != LUA_TNIL)
    q->max_body = (curl_off_t)opt_count(L, f, "max_body_size", 0);
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
static int build_url(lua_State *L, reqspec *q, const char **why) {
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
static int apply(lua_State *L, lr_http_req *r, reqspec *q, const char *url) {
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

/* ================= results ================= */

static const char *fs_kind(int err) {
  switch (err) {
    case ENOENT: return "not_found";
    case EACCES: case EPERM: case EROFS: return "permission";
    case EISDIR: return "is_dir";
    case ENOTDIR: return "not_dir";
    case ENOSPC: case EDQUOT: return "no_space";
    case EMFILE: case ENFILE: return "too_many_files";
    default: return "io";
  }
}

static const char *curl_kind(const lr_http_req *r, lr_http_head_fault head) {
  long status = 0;
  if (r->too_large) return "too_large";
  if (r->write_failed) return fs_kind(r->write_errno);
  if (head == LR_HTTP_HEAD_CUT) return "protocol";
  if (head != LR_HTTP_HEAD_OK) return "too_large";
  switch (r->result) {
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY: return "dns";
    case CURLE_COULDNT_CONNECT: case CURLE_SEND_ERROR: return "connect";
    case CURLE_OPERATION_TIMEDOUT: return "timeout";
    case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM: case CURLE_SSL_CIPHER: case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND: case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED: case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE: case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH: case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT: case CURLE_USE_SSL_FAILED:
      return "tls";
    case CURLE_FILESIZE_EXCEEDED: return "too_large";
    case CURLE_TOO_MANY_REDIRECTS: return "redirect";
    case CURLE_UNSUPPORTED_PROTOCOL:
      /* The first URL was checked, so this is a redirect's scheme, or a reply that
       * is not HTTP at all (curl calls that HTTP/0.9). */
      lr_curl.easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
      return status >= 300 && status < 400 ? "redirect" : "protocol";
    case CURLE_URL_MALFORMAT: return "invalid_url";
    default: return "protocol"; /* partial body, nothing received, bad framing... */
  }
}

static const char *curl_code_name(CURLcode c) {
  switch (c) {
#define N(x) case x: return #x;
    N(CURLE_UNSUPPORTED_PROTOCOL) N(CURLE_URL_MALFORMAT) N(CURLE_COULDNT_RESOLVE_PROXY)
    N(CURLE_COULDNT_RESOLVE_HOST) N(CURLE_COULDNT_CONNECT) N(CURLE_WEIRD_SERVER_REPLY)
    N(CURLE_HTTP2) N(CURLE_PARTIAL_FILE) N(CURLE_WRITE_ERROR) N(CURLE_OUT_OF_MEMORY)
    N(CURLE_OPERATION_TIMEDOUT) N(CURLE_SSL_CONNECT_ERROR) N(CURLE_TOO_MANY_REDIRECTS)
    N(CURLE_GOT_NOTHING) N(CURLE_SEND_ERROR) N(CURLE_RECV_ERROR) N(CURLE_SSL_CERTPROBLEM)
    N(CURLE_SSL_CIPHER) N(CURLE_PEER_FAILED_VERIFICATION) N(CURLE_BAD_CONTENT_ENCODING)
    N(CURLE_FILESIZE_EXCEEDED) N(CURLE_SSL_CACERT_BADFILE) N(CURLE_HTTP2_STREAM)
    N(CURLE_ABORTED_BY_CALLBACK) N(CURLE_HTTP_RETURNED_ERROR) N(CURLE_PROXY)
#undef N
    default: return NULL;
  }
}

static long redirects(lr_http_req *r) {
  long n = 0;
  lr_curl.easy_getinfo(r->easy, CURLINFO_REDIRECT_COUNT, &n);
  return n;
}

/* The message for a header fault, whose curl message is missing or misleading. */
static void push_head_fault(lua_State *L, const lr_http_req *r, lr_http_head_fault head) {
  switch (head) {
    case LR_HTTP_HEAD_CUT:
      lua_pushliteral(L, "the connection closed inside the response's header block "
                         "(no blank line ended the headers)");
      break;
    case LR_HTTP_HEAD_LINE_LIMIT: /* curl says only "Out of memory" */
      lua_pushliteral(L, "a response header line is over libcurl's limit "
                         "(100 KiB a line in libcurl 7.88)");
      break;
    default:
      lua_pushfstring(L, "the response headers are over libcurl's limit "
                         "(300 KiB in all in libcurl 7.88): %s", r->errbuf);
      break;
  }
}

static int push_failure(lua_State *L, lr_http_req *r, const char *url,
                        lr_http_head_fault head) {
  const char *kind = curl_kind(r, head);
  const char *name = head == LR_HTTP_HEAD_CUT ? NULL : curl_code_name(r->result);
  if (r->too_large) {
    lua_pushfstring(L, "the response body is larger than max_body_size (%I bytes)",
                    (lua_Integer)r->max_body);
  } else if (r->write_failed) {
    lua_pushfstring(L, "cannot write the output file: %s", strerror(r->write_errno));
  } else if (head != LR_HTTP_HEAD_OK) {
    push_head_fault(L, r, head);
  } else if (r->result == CURLE_URL_MALFORMAT && redirects(r) == 0) {
    lua_pushliteral(L, "the URL does not parse"); /* the URL as given (build_url) */
  } else if (r->result == CURLE_FILESIZE_EXCEEDED) {
    lua_pushfstring(L, "the response body is larger than max_body_size (%I bytes)",
                    (lua_Integer)r->max_body);
  } else {
    lua_pushstring(L, r->errbuf[0] ? r->errbuf : lr_curl.easy_strerror(r->result));
  }
  lua_pushnil(L);
  lr_error_push(L, kind, lua_tostring(L, -2));
  lua_remove(L, -3);
  lua_pushstring(L, url);
  lua_setfield(L, -2, "url");
  /* A cut header block has no curl code: curl said CURLE_OK. */
  if (name) lua_pushstring(L, name);
  else if (head != LR_HTTP_HEAD_CUT) lua_pushinteger(L, (lua_Integer)r->result);
  else lua_pushnil(L);
  lua_setfield(L, -2, "code");
  return 2;
}

/* Response headers are parsed when the script first reads res.headers or
 * res.header_list: until then the raw header block waits in a weak-keyed table
 * (response -> string), and most responses of a crawl are never asked for them.
 * The response table gets both fields at once, as plain fields. */
static const char RAW_HEADERS_KEY = 'h';

/* Sets headers and header_list on the response table at res from the raw block
 * (the lines of the last response, status line first). */
static void parse_headers(lua_State *L, int res, const char *p, size_t len) {
  const char *end = p + len;
  int hdrs, list, n = 0, first = 1;
  lua_newtable(L);
  hdrs = lua_gettop(L);
  lua_newtable(L);
  list = lua_gettop(L);
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *line = p, *colon, *v, *ve;
    if (eol == NULL) eol = end;
    p = eol + 1;
    ve = eol;
    if (ve > line && ve[-1] == '\r') ve--;
    if (first) { first = 0; continue; } /* the status line */
    colon = memchr(line, ':', (size_t)(ve - line));
    if (colon == NULL || colon == line) continue;
    for (v = colon + 1; v < ve && (*v == ' ' || *v == '\t'); v++) {}
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, line, (size_t)(colon - line));
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, v, (size_t)(ve - v));
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, list, ++n);
    {
      luaL_Buffer b;
      size_t i, nl = (size_t)(colon - line);
      char *s = luaL_buffinitsize(L, &b, nl);
      for (i = 0; i < nl; i++)
        s[i] = (char)((line[i] >= 'A' && line[i] <= 'Z') ? line[i] + 32 : line[i]);
      luaL_pushresultsize(&b, nl);          /* lname */
    }
    lua_pushvalue(L, -1);
    if (lua_rawget(L, hdrs) == LUA_TSTRING) { /* lname old */
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, v, (size_t)(ve - v));
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, v, (size_t)(ve - v));
    }
    lua_rawset(L, hdrs);
  }
  lua_setfield(L, res, "header_list");
  lua_setfield(L, res, "headers");
}

/* Response.__index: the headers on first use, and the methods (upvalue 1). */
static int res_index(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  if (k && (strcmp(k, "headers") == 0 || strcmp(k, "header_list") == 0)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &RAW_HEADERS_KEY);
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) == LUA_TSTRING) { /* stack: res key raw_table raw */
      size_t len;
      const char *p = lua_tolstring(L, -1, &len);
      parse_headers(L, 1, p, len);
      lua_pushvalue(L, 1);
      lua_pushnil(L);
      lua_rawset(L, 3);
    }
    lua_settop(L, 2);
    lua_rawget(L, 1);
    return 1;
  }
  lua_settop(L, 2);
  lua_gettable(L, lua_upvalueindex(1));
  return 1;
}

static void push_response(lua_State *L, lr_http_req *r, int url_idx, const char *output) {
  long status = 0, ver = 0, nconn = 0;
  char *eff = NULL;
  int res;
  CURL *e = r->easy;
  lr_curl.easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  lr_curl.easy_getinfo(e, CURLINFO_HTTP_VERSION, &ver);
  lr_curl.easy_getinfo(e, CURLINFO_NUM_CONNECTS, &nconn);
  lr_curl.easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &eff);
  lua_createtable(L, 0, 12);
  res = lua_gettop(L);
  lua_pushinteger(L, status);
  lua_setfield(L, res, "status");
  lua_pushboolean(L, status >= 200 && status < 300);
  lua_setfield(L, res, "ok");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &RAW_HEADERS_KEY);
  lua_pushvalue(L, res);
  lua_pushlstring(L, r->head.p ? r->head.p : "", r->head.n);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_pushlstring(L, r->body.p ? r->body.p : "", r->body.n);
  lua_setfield(L, res, "body");
  if (eff && strcmp(eff, lua_tostring(L, url_idx)) == 0) lua_pushvalue(L, url_idx);
  else lua_pushstring(L, eff ? eff : ""); /* after redirects, or as curl wrote it */
  lua_setfield(L, res, "url");
  lua_pushstring(L, ver == CURL_HTTP_VERSION_1_0 ? "1.0" : ver == CURL_HTTP_VERSION_2_0 ? "2"
                    : ver == CURL_HTTP_VERSION_3 ? "3" : "1.1");
  lua_setfield(L, res, "http_version");
  lua_pushnumber(L, (double)(r->finished - r->started) / 1e9);
  lua_setfield(L, res, "elapsed");
  lua_pushboolean(L, nconn == 0); /* no new connection was made: one was reused */
  lua_setfield(L, res, "reused");
  if (output) {
    lua_pushstring(L, output);
    lua_setfield(L, res, "output");
  }
  luaL_setmetatable(L, RESPONSE_MT);
}

/* The continuation finds the request in ctx, and the final URL and the output path
 * on the task's stack, at the slots the request recorded. */
static int request_k(lua_State *L, int status, lua_KContext ctx) {
  lr_http_req *r = (lr_http_req *)ctx;
  lr_task *t = r->task;
  int url_idx = r->url_idx;
  const char *url = lua_tostring(L, url_idx);
  const char *output = r->output_idx ? lua_tostring(L, r->output_idx) : NULL;
  lr_http_head_fault head;
  int n;
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) {
    lr_http_req_release(r);
    lr_error_raise_cancelled(L);
  }
  if (r->aborted) {
    lr_http_req_release(r);
    n = lr_error_fail(L, "cancelled", "the http client was closed");
    lua_pushstring(L, url);
    lua_setfield(L, -2, "url");
    return n;
  }
  head = r->too_large || r->write_failed ? LR_HTTP_HEAD_OK : lr_http_req_head_fault(r);
  if (r->result != CURLE_OK || r->too_large || r->write_failed || head != LR_HTTP_HEAD_OK) {
    n = push_failure(L, r, url, head);
    lr_http_req_release(r);
    return n;
  }
  push_response(L, r, url_idx, output);
  lr_http_req_release(r);
  return 1;
}

/* The shared body of every request function. Stack: client_ud at cidx, then the
 * method (or not), URL and opts at the given indices. */
static int do_request(lua_State *L, int cidx, const char *method, int urlarg, int optarg,
                      const char *fname) {
  client_ud *cu = luaL_checkudata(L, cidx, CLIENT_MT);
  reqspec q;
  int opts = 0, defs = 0, url_idx, output_idx = 0;
  const char *why = NULL;
  lr_task *t;
  lr_http_req *r;
  memset(&q, 0, sizeof q);
  q.fname = fname;
  q.method = method;
  if (lua_type(L, urlarg) != LUA_TSTRING)
    return luaL_error(L, "%s: the URL must be a string (got %s)", fname,
                      luaL_typename(L, urlarg));
  q.url = lua_tolstring(L, urlarg, &q.url_len);
  q.url_arg = urlarg;
  if (!lua_isnoneornil(L, optarg)) {
    if (!lua_istable(L, optarg))
      return luaL_error(L, "%s: the options must be a table (got %s)", fname,
                        luaL_typename(L, optarg));
    opts = optarg;
    check_option_names(L, opts, fname, 0);
  }
  if (cu->c == NULL) return luaL_error(L, "%s: the http client is closed", fname);
  t = lr_task_enter(L, fname);
  lua_settop(L, optarg > urlarg ? optarg : urlarg);
  lua_getiuservalue(L, cidx, 1);
  if (lua_istable(L, -1)) defs = lua_gettop(L);
  read_options(L, &q, opts, defs);
  if (!build_url(L, &q, &why)) {
    lr_error_fail(L, "invalid_url", why);
    lua_pushvalue(L, urlarg);
    lua_setfield(L, -2, "url");
    return 2;
  }
  url_idx = lua_gettop(L);
  if (q.output) {
    int fd = open(q.output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
      int err = errno;
      lr_error_fail(L, fs_kind(err), strerror(err));
      lua_pushstring(L, q.output);
      lua_setfield(L, -2, "path");
      return 2;
    }
    lua_pushstring(L, q.output);
    output_idx = lua_gettop(L);
    r = lr_http_req_new(cu->c);
    if (r == NULL) {
      close(fd);
      return luaL_error(L, "%s: out of memory", fname);
    }
    r->out_fd = fd;
  } else if ((r = lr_http_req_new(cu->c)) == NULL) {
    return luaL_error(L, "%s: out of memory", fname);
  }
  r->url_idx = url_idx;
  r->output_idx = output_idx;
  if (apply(L, r, &q, lua_tostring(L, url_idx)) != 0 || lr_http_req_submit(r, t) != 0) {
    lr_http_req_release(r);
    return luaL_error(L, "%s: cannot start the request (out of memory)", fname);
  }
  /* A request whose task never resumes (the state closes meanwhile) is released
   * when the runtime closes (close_all in core/http.c). */
  return lr_task_park(L, t, lr_http_req_cancel, (lua_KContext)r, request_k);
}

/* ================= clients ================= */

static lr_curl_api *need_curl(lua_State *L) {
  char err[512];
  if (lr_curl_load(err, sizeof err) != 0) luaL_error(L, "luarun.http: %s", err);
  return &lr_curl;
}

/* Pushes a new client object for the defaults table at didx (or 0). */
static client_ud *new_client(lua_State *L, int didx, const lr_http_limits *lim) {
  lr_runtime *rt = lr_runtime_get(L);
  client_ud *cu = lua_newuserdatauv(L, sizeof *cu, 1);
  cu->c = NULL; /* closed until the engine exists */
  luaL_setmetatable(L, CLIENT_MT);
  if (didx) {
    lua_pushvalue(L, didx);
    lua_setiuservalue(L, -2, 1);
  }
  cu->c = lr_http_client_new(rt, lim);
  if (cu->c == NULL) luaL_error(L, "http.client: cannot create the client (out of memory)");
  return cu;
}

static void push_default_client(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &DEFAULT_KEY) == LUA_TUSERDATA) {
    client_ud *cu = lua_touserdata(L, -1);
    if (cu->c) return;
  }
  lua_pop(L, 1);
  {
    lr_http_limits lim = {0, 0};
    new_client(L, 0, &lim);
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &DEFAULT_KEY);
}

static int client_close(lua_State *L) {
  client_ud *cu = luaL_checkudata(L, 1, CLIENT_MT);
  if (cu->c) {
    lr_http_client_unown(cu->c);
    cu->c = NULL;
  }
  return 0;
}

static int client_get(lua_State *L) {
  return do_request(L, 1, "GET", 2, 3, "client:get");
}

static int client_post(lua_State *L) {
  return do_request(L, 1, "POST", 2, 3, "client:post");
}

/* The method at idx, checked: a method with CR, LF or NUL was refused as "bad
 * argument #2 to '?'", which names neither the call nor the fault (issue 23). */
static const char *check_method(lua_State *L, int idx, const char *fname) {
  size_t n;
  const char *m;
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "%s: the method must be a string (got %s)", fname, luaL_typename(L, idx));
  m = lua_tolstring(L, idx, &n);
  if (!valid_token(m, n))
    luaL_error(L, "%s: the method is not a valid HTTP method (a token such as \"PUT\", "
               "with no space, CR, LF or NUL)", fname);
  return m;
}

static int client_request(lua_State *L) {
  luaL_checkudata(L, 1, CLIENT_MT); /* before the method, which is argument 2 */
  return do_request(L, 1, check_method(L, 2, "client:request"), 3, 4, "client:request");
}

static int client_stats(lua_State *L) {
  client_ud *cu = luaL_checkudata(L, 1, CLIENT_MT);
  int reqs = 0, socks = 0, polls = 0;
  if (cu->c) lr_http_client_counts(cu->c, &reqs, &socks, &polls);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, reqs);
  lua_setfield(L, -2, "requests");
  lua_pushinteger(L, socks);
  lua_setfield(L, -2, "sockets");
  lua_pushinteger(L, polls);
  lua_setfield(L, -2, "polls");
  return 1;
}

static int client_tostring(lua_State *L) {
  client_ud *cu = luaL_checkudata(L, 1, CLIENT_MT);
  lua_pushfstring(L, "luarun.http.Client (%s): %p", cu->c ? "open" : "closed", (void *)cu);
  return 1;
}

/* http.client(opts): request defaults plus max_connections / max_per_host. */
static int l_client(lua_State *L) {
  lr_http_limits lim = {0, 0};
  int defs = 0;
  need_curl(L);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    check_option_names(L, 1, "http.client", 1);
    if (lua_getfield(L, 1, "max_connections") != LUA_TNIL)
      lim.max_connections = opt_count(L, "http.client", "max_connections", 1);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "max_per_host") != LUA_TNIL)
      lim.max_per_host = opt_count(L, "http.client", "max_per_host", 1);
    lua_pop(L, 1);
    /* Check the request defaults now, so a mistake shows here, not at first use:
     * a shallow copy without the client-only keys. */
    lua_newtable(L);
    defs = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
      if (!in_list(client_opts, lua_tostring(L, -2))) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, defs);
      } else {
        lua_pop(L, 1);
      }
    }
    {
      reqspec q;
      int top = lua_gettop(L);
      memset(&q, 0, sizeof q);
      q.fname = "http.client";
      read_options(L, &q, 0, defs);
      lua_settop(L, top);
    }
  }
  new_client(L, defs, &lim);
  return 1;
}

/* ================= module functions ================= */

static int l_get(lua_State *L) {
  lua_settop(L, 2);
  push_default_client(L);
  lua_insert(L, 1);
  return do_request(L, 1, "GET", 2, 3, "http.get");
}

static int l_post(lua_State *L) {
  lua_settop(L, 2);
  push_default_client(L);
  lua_insert(L, 1);
  return do_request(L, 1, "POST", 2, 3, "http.post");
}

static int l_request(lua_State *L) {
  check_method(L, 1, "http.request");
  lua_settop(L, 3);
  push_default_client(L);
  lua_insert(L, 1);
  return do_request(L, 1, lua_tostring(L, 2), 3, 4, "http.request");
}

static int l_stats(lua_State *L) {
  lua_settop(L, 0);
  push_default_client(L);
  return client_stats(L);
}

/* res:json(): the body decoded by luarun.json; raises on invalid JSON. */
static int res_json(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "body");
  if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "res:json: the response has no body");
  lua_getglobal(L, "require");
  lua_pushliteral(L, "luarun.json");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "decode");
  lua_pushvalue(L, -3);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    /* Both strings first: lr_report_tostring pushes, and C leaves the order in
     * which arguments are evaluated open. */
    const char *why = lr_report_tostring(L, -1), *url;
    lua_getfield(L, 1, "url");
    url = lua_isstring(L, -1) ? lua_tostring(L, -1) : "the response";
    return luaL_error(L, "res:json: the body of %s is not valid JSON: %s", url, why);
  }
  return 1;
}

static const luaL_Reg client_methods[] = {
  {"get", client_get},
  {"post", client_post},
  {"request", client_request},
  {"close", client_close},
  {"stats", client_stats},
  {NULL, NULL}
};

static const luaL_Reg client_meta[] = {
  {"__close", client_close},
  {"__gc", client_close},
  {"__tostring", client_tostring},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"get", l_get},
  {"post", l_post},
  {"request", l_request},
  {"client", l_client},
  {"stats", l_stats},
  {NULL, NULL}
};

int luaopen_luarun_http(lua_State *L) {
  luaL_requiref(L, "luarun", luaopen_luarun, 0);
  lua_pop(L, 1);
  need_curl(L);
  lr_register_class(L, CLIENT_MT, client_methods, client_meta);
  if (luaL_newmetatable(L, RESPONSE_MT)) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, res_json);
    lua_setfield(L, -2, "json");
    lua_pushcclosure(L, res_index, 1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &RAW_HEADERS_KEY) != LUA_TTABLE) {
    lua_newtable(L); /* response -> raw header block, until parsed */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &RAW_HEADERS_KEY);
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
