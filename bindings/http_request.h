/* http_request.h: between bindings/http.c (calls, responses, clients) and
 * bindings/http_request.c (checking a request's options and building it on curl). */
#ifndef LUARUN_HTTP_REQUEST_H
#define LUARUN_HTTP_REQUEST_H

#include "bindings.h"
#include "curl_api.h"

/* The retry option, read: attempts == 0 when it is not given (or false). */
#define LR_HTTP_RETRY_MAX_ON 16
typedef struct lr_http_retry {
  int attempts;               /* tries in all */
  double backoff, max_wait;   /* seconds */
  int network;                /* retry connection failures too ("network" in on) */
  int non;
  short on[LR_HTTP_RETRY_MAX_ON]; /* statuses that are retried */
} lr_http_retry;

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
  lr_http_retry retry;
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
/* Pushes copies of the option strings that only the opts tables anchor, and points
 * q at them: for a request whose options are set again after a wait (a retry),
 * when the script may have changed the tables. */
void lr_http_anchor_options(lua_State *L, reqspec *q);

/* ---- bindings/http.c, for http_job.c and http_cookies.c ---- */
/* The engine of the client object at idx, or NULL once closed. */
lr_http_client *lr_http_client_at(lua_State *L, int idx);
/* The client object at idx (raises unless it is one), or NULL once closed. */
lr_http_client *lr_http_check_client(lua_State *L, int idx);
/* The continuation of a request parked on its transfer (ctx: the lr_http_req). */
int lr_http_request_k(lua_State *L, int status, lua_KContext ctx);
/* Opens the output file (truncated). Returns its descriptor, or -1 with nil, err
 * pushed (a file kind, err.path, err.url from url_idx). */
int lr_http_open_output(lua_State *L, const char *path, int url_idx);
/* Pushes nil, err (kind "cancelled": the client was closed), err.url from url_idx. */
int lr_http_fail_closed(lua_State *L, int url_idx);

/* ---- bindings/http_job.c: requests that wait before they start (retry,
 * delay_per_host) ---- */
/* Whether a request of client c with options q goes through a job. */
int lr_http_job_wanted(lr_http_client *c, const reqspec *q);
/* Starts the request as a job (gate, transfer, retries), parking the task. The
 * client object is at cidx; the URL and output path (or 0) at their slots. */
int lr_http_job_start(lua_State *L, reqspec *q, lr_task *t, int cidx, int url_idx,
                      int output_idx);
/* After a try of a job's request: 1 if it is to be tried again (counts the try). */
int lr_http_job_should_retry(lua_State *L, lr_http_req *r, int failed);
/* Releases r and parks the task until its next try. */
int lr_http_job_retry(lua_State *L, lr_http_req *r);
/* Sets `attempts` on the response or error at the top of the stack. */
void lr_http_job_note(lua_State *L, int job_idx);

/* ---- bindings/http_cookies.c ---- */
/* Loads the list of cookie tables at idx into c's jar; raises naming fname. */
void lr_http_cookies_load(lua_State *L, lr_http_client *c, int idx, const char *fname);
/* client:cookies([opts]) */
int lr_http_cookies_method(lua_State *L);

#endif
