/* curl_api.h: libcurl, opened at run time, and the HTTP engine built on it.
 *
 * The luarun executable does not link libcurl: loading it pulls in some 36 shared
 * libraries and costs ~5 ms at every start, which scripts that never do HTTP should
 * not pay. lr_curl_load() dlopens libcurl.so.4 the first time luarun.http is required
 * and fills lr_curl, a table of function pointers, from the list below. Code calls
 * curl as lr_curl.easy_setopt(...) (the names without their "curl_" prefix, since
 * curl's headers define some of the prefixed names as macros).
 */
#ifndef LUARUN_CURL_API_H
#define LUARUN_CURL_API_H

#include <curl/curl.h>
#include "lr_subsys.h"

/* X(return type, name without "curl_", parameter list) */
#define LR_CURL_FUNCTIONS(X)                                                        \
  X(CURLcode, global_init, (long flags))                                            \
  X(curl_version_info_data *, version_info, (CURLversion v))                        \
  X(CURL *, easy_init, (void))                                                      \
  X(void, easy_cleanup, (CURL *h))                                                  \
  X(void, easy_reset, (CURL *h))                                                    \
  X(CURLcode, easy_setopt, (CURL *h, CURLoption opt, ...))                          \
  X(CURLcode, easy_getinfo, (CURL *h, CURLINFO info, ...))                          \
  X(const char *, easy_strerror, (CURLcode code))                                   \
  X(CURLM *, multi_init, (void))                                                    \
  X(CURLMcode, multi_cleanup, (CURLM *m))                                           \
  X(CURLMcode, multi_setopt, (CURLM *m, CURLMoption opt, ...))                      \
  X(CURLMcode, multi_add_handle, (CURLM *m, CURL *h))                               \
  X(CURLMcode, multi_remove_handle, (CURLM *m, CURL *h))                            \
  X(CURLMcode, multi_socket_action, (CURLM *m, curl_socket_t s, int ev, int *run))  \
  X(CURLMsg *, multi_info_read, (CURLM *m, int *left))                              \
  X(const char *, multi_strerror, (CURLMcode code))                                 \
  X(struct curl_slist *, slist_append, (struct curl_slist *l, const char *s))       \
  X(void, slist_free_all, (struct curl_slist *l))                                   \
  X(CURLU *, url, (void))                                                           \
  X(void, url_cleanup, (CURLU *u))                                                  \
  X(CURLUcode, url_set, (CURLU *u, CURLUPart what, const char *part, unsigned int f)) \
  X(CURLUcode, url_get, (const CURLU *u, CURLUPart what, char **part, unsigned int f)) \
  X(void, free, (void *p))                                                          \
  X(CURLSH *, share_init, (void))                                                   \
  X(CURLSHcode, share_setopt, (CURLSH *s, CURLSHoption opt, ...))                   \
  X(CURLSHcode, share_cleanup, (CURLSH *s))                                         \
  /* http_url.c: joining references against a base parsed once */                  \
  X(CURLU *, url_dup, (CURLU *u))                                                   \
  X(const char *, url_strerror, (CURLUcode code))

typedef struct lr_curl_api {
#define LR_CURL_MEMBER(ret, name, params) ret (*name) params;
  LR_CURL_FUNCTIONS(LR_CURL_MEMBER)
#undef LR_CURL_MEMBER
} lr_curl_api;

extern lr_curl_api lr_curl;

/* Opens libcurl once per process and initialises it. Returns 0, or -1 with a reason
 * in err (the dlopen/dlsym message). Safe to call again: a success is remembered. */
int lr_curl_load(char *err, size_t errlen);

/* ======== http_url.c: URL references joined against a base ========
 *
 * For doc:links() and http.url.join. libcurl 7.88.1's curl_url gets some RFC 3986
 * references wrong (`#s` and the empty reference lose the base's last segment and
 * query, `g:h` and `http:g` are refused), so those shapes are joined here as strings;
 * the rest goes through curl_url so that joined URLs are normalised as curl, which
 * will fetch them, does. Loads libcurl itself when needed; callable from any thread
 * (each join works on its own copy of the parsed base). */

/* A base URL parsed once, for joining many references against it. */
typedef struct lr_url_base lr_url_base;
/* NULL: invalid (err says why), libcurl missing, or out of memory. */
lr_url_base *lr_url_base_new(const char *base, size_t len, char *err, size_t errlen);
void lr_url_base_free(lr_url_base *b);
/* The base as curl normalised it, without its fragment (owned by b). */
const char *lr_url_base_str(const lr_url_base *b, size_t *len);
enum { LR_URL_NO_FRAGMENT = 1 };
/* ref joined against b (RFC 3986 section 5.2), normalised as curl does; malloc'd,
 * NUL-terminated (free()), *outlen set; NULL with err if ref is invalid (or out of
 * memory). Before joining, ref is cleaned as browsers clean an href: leading and
 * trailing bytes <= 0x20 trimmed, tabs and newlines inside removed, spaces, control
 * bytes, non-ASCII bytes and a few unsafe characters percent-encoded (an existing
 * "%20" is left alone), and under http(s) a backslash before the query is '/'. A
 * ref with a scheme of its own and no "//" after it ("mailto:x", "javascript:...",
 * "g:h") is returned as cleaned, unjoined: the caller filters schemes. */
char *lr_url_join(const lr_url_base *b, const char *ref, size_t reflen, unsigned flags,
                  size_t *outlen, char *err, size_t errlen);
/* url cleaned as lr_url_join cleans a reference, then put in a form that compares
 * equal for URLs that are the same (RFC 3986 6.2.2, for de-duplicating a crawl
 * frontier): scheme and host lower-cased, the scheme's default port dropped, dot
 * segments removed, percent-encoding normalised (unreserved bytes decoded, hex
 * upper-cased), fragment dropped. malloc'd as lr_url_join's result; NULL with err if
 * url is not an absolute URL. */
char *lr_url_normalize(const char *url, size_t len, size_t *outlen, char *err,
                       size_t errlen);
/* Normalises the percent-encoding of s[0..n) in place (%7e -> ~, %2f -> %2F); returns
 * the new length. */
size_t lr_url_pct_normalize(char *s, size_t n);

/* ======== http.c: the engine, one CURLM per client driven by libuv ======== */

typedef struct lr_http_client lr_http_client;
typedef struct lr_http_req lr_http_req;

/* A growable byte buffer. */
typedef struct lr_buf {
  char *p;
  size_t n, cap;
} lr_buf;

/* The options a reused easy handle carries over from its last request, so that the
 * next one sets only what differs (curl keeps options between transfers). Options
 * that are awkward to put back to curl's defaults (verify, ca_file, proxy, auth)
 * mark the request `tainted` instead: its handle is reset when it is released. */
enum { LR_HTTP_GET = 0, LR_HTTP_HEAD, LR_HTTP_POST };
typedef struct lr_http_applied {
  long timeout_ms, connect_timeout_ms, max_redirects, http_version;
  curl_off_t max_body;      /* CURLOPT_MAXFILESIZE_LARGE, 0 = none */
  char *custom;             /* CURLOPT_CUSTOMREQUEST (a copy), or NULL */
  uint8_t method;           /* LR_HTTP_GET/HEAD/POST: the request kind set */
  uint8_t follow, pipewait, ua_default;
} lr_http_applied;

/* One transfer. Owned by its client from lr_http_req_new to lr_http_req_release;
 * then kept, with its easy handle and buffers, on the client's free list for the
 * next request (the fields from `task` on are cleared for each request). */
struct lr_http_req {
  lr_waitq q;               /* the task parks here (cancel finds us via t->inq) */
  lr_http_client *client;
  CURL *easy;
  lr_http_req *prev, *next; /* the client's list of live requests, or free list */
  lr_buf body;              /* response body (unless streamed to out_fd) */
  lr_buf head;              /* header lines of the last response */
  lr_http_applied applied;  /* options set on easy (kept across reuse) */
  /* ---- per request ---- */
  lr_task *task;            /* the task waiting, or NULL */
  struct curl_slist *headers;
  int out_fd;               /* output file, or -1 */
  curl_off_t max_body;      /* max_body_size, or -1 */
  curl_off_t received;      /* body bytes seen */
  uint64_t started;         /* uv_hrtime at submit */
  uint64_t finished;
  CURLcode result;
  uint8_t in_multi, done, too_large, write_failed, aborted;
  uint8_t tainted;          /* options set that only a reset of the handle undoes */
  uint8_t head_ended;       /* the blank line after the last response's headers came */
  uint32_t closes_at_submit; /* the client's count of closed sockets at submit */
  int write_errno;
  int url_idx, output_idx;  /* the binding's stack slots for its continuation */
  int job_idx;              /* the binding's retry/delay state on the stack, or 0 */
  char errbuf[CURL_ERROR_SIZE];
};

/* The options of a client itself (not its requests'). */
typedef struct lr_http_limits {
  long max_connections;     /* CURLMOPT_MAX_TOTAL_CONNECTIONS, 0 = none */
  long max_per_host;        /* CURLMOPT_MAX_HOST_CONNECTIONS, 0 = none */
  double delay_per_host;    /* seconds between request starts to one host, 0 = none */
  int cookies;              /* keep a cookie jar (libcurl's cookie engine) */
} lr_http_limits;

/* Creates a client (its own multi handle, timer and sockets). NULL on failure. The
 * first client of a runtime registers the runtime closer that shuts them all down. */
lr_http_client *lr_http_client_new(lr_runtime *rt, const lr_http_limits *lim);
/* Stops every live request (their tasks wake with req->aborted set), closes the multi
 * handle and the uv handles; the memory goes once the last close callback has run.
 * Safe to call twice. */
void lr_http_client_close(lr_http_client *c);
int lr_http_client_closed(const lr_http_client *c);
/* The Lua object that owned the client was collected: close it, and free it once
 * its handles have closed. */
void lr_http_client_unown(lr_http_client *c);
/* A request with an easy handle (from the free list, or new) with the options every
 * request has (callbacks, NOSIGNAL, protocols) already set and r->applied telling
 * what else its last request left set. NULL if out of memory. The caller sets the
 * rest, then lr_http_req_submit. */
lr_http_req *lr_http_req_new(lr_http_client *c);
/* Adds the request to the multi handle. Returns 0, or -1 (then release it). */
int lr_http_req_submit(lr_http_req *r, lr_task *t);
/* The cancel hook for a task parked on a request: removes the transfer from curl at
 * once and wakes the task with LR_WAKE_CANCELLED. */
void lr_http_req_cancel(lr_task *t);
/* Gives the request, with its easy handle and buffers, back to the free list (a
 * tainted handle is reset first); frees it if the list is full or the client closed. */
void lr_http_req_release(lr_http_req *r);

/* What became of the last response's header block, which curl does not always say
 * (issue 23). */
typedef enum lr_http_head_fault {
  LR_HTTP_HEAD_OK = 0,
  LR_HTTP_HEAD_CUT,         /* the connection closed inside it, yet curl says CURLE_OK */
  LR_HTTP_HEAD_LINE_LIMIT,  /* a line over libcurl's limit (curl says out of memory) */
  LR_HTTP_HEAD_TOTAL_LIMIT  /* all lines together over libcurl's limit */
} lr_http_head_fault;

/* Tells, for a finished request, whether its failure (or success) is one of the
 * above. Only meaningful once the request is done and not aborted. */
lr_http_head_fault lr_http_req_head_fault(const lr_http_req *r);

/* Counters for specs: live requests, sockets curl has open, poll handles. */
void lr_http_client_counts(const lr_http_client *c, int *reqs, int *sockets, int *polls);

/* ---- cookies (a client made with lim->cookies) ----
 * One CURLSH per client holds the jar; every easy handle of the client is attached to
 * it and has the cookie engine on. The cookie functions return -1 for a client with
 * no jar (or closed). */
int lr_http_client_has_jar(const lr_http_client *c);
/* The jar in Netscape cookie-file lines (curl_slist: free with lr_curl.slist_free_all);
 * *list is NULL for an empty jar. Returns 0 or -1. */
int lr_http_cookies_get(lr_http_client *c, struct curl_slist **list);
/* Adds one cookie given as a Netscape cookie-file line; line NULL empties the jar. */
int lr_http_cookies_set(lr_http_client *c, const char *line);

/* ======== http_wait.c: waits before a request starts ======== */

/* Tasks that wait before a request starts: in a per-host gate (delay_per_host) or
 * between the tries of a retried request. Embedded in the client; the client's close
 * wakes every waiter with LR_WAKE_CLOSED (a continuation must then not touch the
 * gate it waited at) and frees the gates. */
typedef struct lr_http_gate lr_http_gate;
typedef struct lr_http_waits {
  uint64_t delay;           /* delay_per_host in ns, 0 = none */
  lr_http_gate **gates;     /* hash table by host key, chained */
  uint32_t ngates, cap;     /* entries, buckets (a power of two, or 0) */
  uint32_t sweep_at;        /* ngates at which idle gates are swept next */
  lr_waitq retry_q;         /* tasks waiting before their next try */
} lr_http_waits;

lr_http_waits *lr_http_client_waits(lr_http_client *c);
/* Wakes every waiter with LR_WAKE_CLOSED and frees the gates. */
void lr_http_waits_close(lr_http_waits *w);
/* Writes the gate key of url, "scheme://host:port" lower-cased, into out. Returns 0,
 * or -1 if the URL does not parse (the request then fails on its own). */
int lr_http_host_key(const char *url, char *out, size_t outlen);
/* Asks to start a request to the host `key`. Returns 0: go now (the start is
 * recorded); 1: t is queued, in arrival order: park it with lr_http_gate_cancel and
 * call lr_http_gate_pass when it wakes; -1: out of memory. *gp: the gate. */
int lr_http_gate_enter(lr_http_waits *w, const char *key, lr_task *t, lr_http_gate **gp);
/* The cancel hook of a task parked at a gate: wakes it and hands the turn on. */
void lr_http_gate_cancel(lr_task *t);
/* Describes a task parked at a gate (lr.tasks(), reports). */
void lr_http_gate_describe(lua_State *L, lr_task *t);
/* In the continuation of a woken gate waiter: records its start and hands the turn
 * on. Returns 0, or -1 if it woke early (no memory for its timer): it is then
 * out of the gate. */
int lr_http_gate_pass(lr_http_gate *g, lr_task *t);
/* A woken waiter that will not start after all (cancelled before it ran): hands the
 * turn on. */
void lr_http_gate_leave(lr_http_gate *g, lr_task *t);
/* Parks-to-be t until `seconds` from now, or until the client closes; the caller
 * then parks with no cancel hook (the default wake removes it from both). Returns 0
 * or -1 (out of memory). */
int lr_http_retry_wait(lr_http_waits *w, lr_task *t, double seconds);

#endif
