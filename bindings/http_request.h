/* http_request.h: between bindings/http.c (calls, responses, clients) and
 * bindings/http_request.c (checking a request's options and building it on curl). */
#ifndef LUARUN_HTTP_REQUEST_H
#define LUARUN_HTTP_REQUEST_H

#include "bindings.h"
#include "curl_api.h"

/* A request's options, read and checked (lr_http_read_options); the strings point
 * into Lua values that stay on the task's stack until the continuation runs. */
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

/* Raises, naming fname, if the table at idx has a key that is not an option
 * (client: http.client's own options allowed too). */
void lr_http_check_options(lua_State *L, int idx, const char *fname, int client);
/* Reads every option from the request's opts (index, or 0) over the client's
 * defaults (defs, or 0) into q; raises on misuse. May push values it keeps. */
void lr_http_read_options(lua_State *L, reqspec *q, int opts, int defs);
/* Pushes the URL to request and returns 1, or returns 0 with *why set. */
int lr_http_build_url(lua_State *L, reqspec *q, const char **why);
/* Sets q on r's easy handle. Returns 0, or -1 when out of memory. */
int lr_http_apply(lua_State *L, lr_http_req *r, reqspec *q, const char *url);
/* An HTTP token (RFC 9110) of n bytes: what a method or a header name may be. */
int lr_http_valid_token(const char *s, size_t n);
/* The option at -1 as a whole number >= min; raises naming fname and name. */
long lr_http_opt_count(lua_State *L, const char *fname, const char *name, long min);
/* Whether name is an option only http.client takes. */
int lr_http_client_opt(const char *name);

#endif
