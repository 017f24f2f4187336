/* http.c: the `luarun.http` module: http.get/post/request/client (API.md).
 *
 * A call checks every option first (misuse raises, naming the function and the
 * option: http_request.c), builds a request on the client's engine (core/http.c),
 * parks the task and resumes in lr_http_request_k, which turns the finished transfer
 * into a response table or nil, err. A request with the retry option, or on a client
 * with delay_per_host, goes through http_job.c instead, which may wait before a try.
 * Strings curl does not copy (the request body) stay on the task's stack until the
 * continuation runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "http_request.h"

#define CLIENT_MT "luarun.http.Client"
#define RESPONSE_MT "luarun.http.Response"

static const char DEFAULT_KEY = 'd';

typedef struct client_ud {
  lr_http_client *c; /* NULL once closed */
} client_ud;

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

int lr_http_fail_closed(lua_State *L, int url_idx) {
  int n = lr_error_fail(L, "cancelled", "the http client was closed");
  lua_pushvalue(L, url_idx);
  lua_setfield(L, -2, "url");
  return n;
}

/* The continuation finds the request in ctx, and the final URL and the output path
 * on the task's stack, at the slots the request recorded. A request with a job
 * (retry, delay_per_host: http_job.c) may go round again from here. */
int lr_http_request_k(lua_State *L, int status, lua_KContext ctx) {
  lr_http_req *r = (lr_http_req *)ctx;
  lr_task *t = r->task;
  int url_idx = r->url_idx, job_idx = r->job_idx;
  const char *url = lua_tostring(L, url_idx);
  const char *output = r->output_idx ? lua_tostring(L, r->output_idx) : NULL;
  lr_http_head_fault head;
  int n, failed;
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) {
    lr_http_req_release(r);
    lr_error_raise_cancelled(L);
  }
  if (r->aborted) {
    lr_http_req_release(r);
    n = lr_http_fail_closed(L, url_idx);
    if (job_idx) lr_http_job_note(L, job_idx);
    return n;
  }
  head = r->too_large || r->write_failed ? LR_HTTP_HEAD_OK : lr_http_req_head_fault(r);
  failed = r->result != CURLE_OK || r->too_large || r->write_failed || head != LR_HTTP_HEAD_OK;
  if (job_idx && lr_http_job_should_retry(L, r, failed)) return lr_http_job_retry(L, r);
  if (failed) {
    n = push_failure(L, r, url, head);
  } else {
    push_response(L, r, url_idx, output);
    n = 1;
  }
  lr_http_req_release(r);
  if (job_idx) lr_http_job_note(L, job_idx);
  return n;
}

int lr_http_open_output(lua_State *L, const char *path, int url_idx) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    int err = errno;
    lr_error_fail(L, fs_kind(err), strerror(err));
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
    lua_pushvalue(L, url_idx); /* as every other HTTP error has */
    lua_setfield(L, -2, "url");
  }
  return fd;
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
    lr_http_check_options(L, opts, fname, 0);
  }
  if (cu->c == NULL) return luaL_error(L, "%s: the http client is closed", fname);
  t = lr_task_enter(L, fname);
  lua_settop(L, optarg > urlarg ? optarg : urlarg);
  lua_getiuservalue(L, cidx, 1);
  if (lua_istable(L, -1)) defs = lua_gettop(L);
  lr_http_read_options(L, &q, opts, defs);
  if (!lr_http_build_url(L, &q, &why)) {
    lr_error_fail(L, "invalid_url", why);
    lua_pushvalue(L, urlarg);
    lua_setfield(L, -2, "url");
    return 2;
  }
  url_idx = lua_gettop(L);
  if (q.output) {
    int fd;
    lua_pushstring(L, q.output);
    output_idx = lua_gettop(L);
    q.output = lua_tostring(L, output_idx);
    if (lr_http_job_wanted(cu->c, &q))
      return lr_http_job_start(L, &q, t, cidx, url_idx, output_idx);
    if ((fd = lr_http_open_output(L, q.output, url_idx)) < 0) return 2;
    r = lr_http_req_new(cu->c);
    if (r == NULL) {
      close(fd);
      return luaL_error(L, "%s: out of memory", fname);
    }
    r->out_fd = fd;
  } else if (lr_http_job_wanted(cu->c, &q)) {
    return lr_http_job_start(L, &q, t, cidx, url_idx, 0);
  } else if ((r = lr_http_req_new(cu->c)) == NULL) {
    return luaL_error(L, "%s: out of memory", fname);
  }
  r->url_idx = url_idx;
  r->output_idx = output_idx;
  if (lr_http_apply(L, r, &q, lua_tostring(L, url_idx)) != 0 || lr_http_req_submit(r, t) != 0) {
    lr_http_req_release(r);
    return luaL_error(L, "%s: cannot start the request (out of memory)", fname);
  }
  /* A request whose task never resumes (the state closes meanwhile) is released
   * when the runtime closes (close_all in core/http.c). */
  return lr_task_park(L, t, lr_http_req_cancel, (lua_KContext)r, lr_http_request_k);
}

/* ================= clients ================= */

lr_http_client *lr_http_client_at(lua_State *L, int idx) {
  client_ud *cu = lua_touserdata(L, idx);
  return cu->c;
}

lr_http_client *lr_http_check_client(lua_State *L, int idx) {
  client_ud *cu = luaL_checkudata(L, idx, CLIENT_MT);
  return cu->c;
}

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
    lr_http_limits lim = {0, 0, 0, 0};
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
  if (!lr_http_valid_token(m, n))
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

/* http.client's own options at 1 into lim; the cookies option's list (to load
 * once the client exists) is left at *jar_idx, or 0. */
static void client_limits(lua_State *L, lr_http_limits *lim, int *jar_idx) {
  const char *f = "http.client";
  if (lua_getfield(L, 1, "max_connections") != LUA_TNIL)
    lim->max_connections = lr_http_opt_count(L, f, "max_connections", 1);
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "max_per_host") != LUA_TNIL)
    lim->max_per_host = lr_http_opt_count(L, f, "max_per_host", 1);
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "delay_per_host") != LUA_TNIL) {
    double d = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || !(d >= 0) || d > 86400)
      luaL_error(L, "%s: option 'delay_per_host' must be a number of seconds from 0 to "
                 "86400", f);
    lim->delay_per_host = d;
  }
  lua_pop(L, 1);
  switch (lua_getfield(L, 1, "cookies")) {
    case LUA_TNIL: lua_pop(L, 1); break;
    case LUA_TBOOLEAN: lim->cookies = lua_toboolean(L, -1); lua_pop(L, 1); break;
    case LUA_TTABLE: lim->cookies = 1; *jar_idx = lua_gettop(L); break;
    default:
      luaL_error(L, "%s: option 'cookies' must be a boolean or a list of cookies (got %s)",
                 f, luaL_typename(L, -1));
  }
}

/* http.client(opts): request defaults plus the client's own options. */
static int l_client(lua_State *L) {
  lr_http_limits lim = {0, 0, 0, 0};
  int defs = 0, jar_idx = 0;
  client_ud *cu;
  need_curl(L);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lr_http_check_options(L, 1, "http.client", 1);
    client_limits(L, &lim, &jar_idx);
    /* Check the request defaults now, so a mistake shows here, not at first use:
     * a shallow copy without the client-only keys. */
    lua_newtable(L);
    defs = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
      if (!lr_http_client_opt(lua_tostring(L, -2))) {
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
      lr_http_read_options(L, &q, 0, defs);
      lua_settop(L, top);
    }
  }
  cu = new_client(L, defs, &lim);
  if (jar_idx) lr_http_cookies_load(L, cu->c, jar_idx, "http.client");
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
  {"cookies", lr_http_cookies_method},
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
  lr_server_install(L);
  lr_websocket_install(L);
  lr_http_url_install(L);
  return 1;
}
