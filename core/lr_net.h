/* lr_net.h: the network subsystems, on the scheduler like lr_subsys.h: connected byte
 * streams over TCP, plain or TLS (stream.c, tls.c), the HTTP server (server.c for
 * listening and connections, server_h1.c for HTTP/1.1 on http-parser, server_h2.c for
 * HTTP/2 on nghttp2) and WebSocket framing on wslay (ws.c, ws_client.c).
 *
 * Everything here runs on the loop's thread. Callbacks never resume a task: they wake
 * it (lr_task_wake) or spawn one (lr_task_spawn), and the driver runs it.
 */
#ifndef LR_NET_H
#define LR_NET_H

#include "lr_sched.h"

/* ---- stream.c: a connected byte stream ----
 * One TCP connection, optionally under TLS (s->tls, tls.c), that hands its owner
 * plaintext and takes plaintext to send. Writes never block: they queue, and
 * s->queued counts the bytes handed to the kernel and not yet confirmed, so the owner
 * can stop producing (and stop reading) above a watermark and resume in on_drain. */
typedef struct lr_stream lr_stream;
typedef struct lr_tls lr_tls;
struct lr_stream {
  uv_tcp_t tcp;          /* tcp.data == this stream */
  lr_runtime *rt;
  void *ud;              /* the owner */
  /* Plaintext arrived (n > 0). The owner may pause, write or close from here. */
  void (*on_data)(lr_stream *s, const char *p, size_t n);
  /* The peer closed (UV_EOF) or the connection failed (a libuv error). Called once;
   * no on_data follows. The owner closes the stream (now or once it is done). */
  void (*on_end)(lr_stream *s, int status);
  /* s->queued fell to LR_STREAM_LOW or below after being above it (optional). */
  void (*on_drain)(lr_stream *s);
  /* The handle is closed: free the owner here (optional). */
  void (*on_closed)(lr_stream *s);
  lr_tls *tls;           /* NULL: plain TCP */
  size_t queued;         /* bytes written and not yet confirmed by libuv */
  int error;             /* the first write or read error, or 0 */
  uint8_t reading;       /* reads are started (and not paused by the owner) */
  uint8_t ended;         /* on_end was called */
  uint8_t closing;       /* lr_stream_close was called */
  uint8_t was_high;      /* queued went above LR_STREAM_LOW since the last drain */
};
#define LR_STREAM_HIGH ((size_t)256 << 10) /* owners stop producing above this */
#define LR_STREAM_LOW ((size_t)64 << 10)

/* Initialises s (uv_tcp_init on rt's loop) for accepting or connecting into. */
int lr_stream_init(lr_runtime *rt, lr_stream *s, void *ud);
/* Starts (or resumes) delivering data; 0 or a libuv error. */
int lr_stream_read(lr_stream *s);
/* Stops delivering data until lr_stream_read. */
void lr_stream_pause(lr_stream *s);
/* Sends the n buffers (copied: the caller keeps its memory). 0 or a libuv error. */
int lr_stream_write(lr_stream *s, const uv_buf_t *bufs, unsigned n);
/* A block of cap bytes to fill and pass to lr_stream_send (which frees it), or to
 * lr_stream_block_free. NULL when out of memory. One allocation holds the write
 * request and the data, so a response costs one malloc. */
char *lr_stream_block(size_t cap);
void lr_stream_block_free(char *data);
/* Sends the first len bytes of a block from lr_stream_block, taking it over (also on
 * failure). 0 or a libuv error. */
int lr_stream_send(lr_stream *s, char *data, size_t len);
/* Closes once the queued writes are sent (shutdown, then close); on_closed follows.
 * Without a TLS close_notify when the peer already failed. */
void lr_stream_finish(lr_stream *s);
/* Closes now: queued writes are dropped. on_closed follows. */
void lr_stream_close(lr_stream *s);
/* "1.2.3.4:5678" of the peer into buf (at least 64 bytes); "" if unknown. */
void lr_stream_peer(lr_stream *s, char *buf, size_t len);

/* ---- tls.c: TLS on a stream (OpenSSL memory BIOs) ---- */
typedef struct lr_tls_ctx lr_tls_ctx;   /* an SSL_CTX and its settings */
/* A server context from PEM files; ALPN offers h2 (if http2) and http/1.1. NULL and
 * a message in err (of errlen bytes) on failure. */
lr_tls_ctx *lr_tls_server_ctx(const char *cert, const char *key, int http2, char *err,
                              size_t errlen);
/* A client context: verify the peer (and its name) unless verify is 0; ca_file may
 * be NULL (the system's store). */
lr_tls_ctx *lr_tls_client_ctx(int verify, const char *ca_file, char *err, size_t errlen);
void lr_tls_ctx_free(lr_tls_ctx *c);
/* Puts s under TLS as a server (accepted) or a client (host for SNI and the name
 * check). 0 or -1. The handshake runs as data flows; on_data sees plaintext only. */
int lr_tls_attach(lr_stream *s, lr_tls_ctx *c, int server, const char *host);
/* The protocol ALPN chose ("h2", "http/1.1") or "" once the handshake is done; NULL
 * while it runs. */
const char *lr_tls_alpn(lr_stream *s);
/* For stream.c: ciphertext arrived / plaintext to send / teardown. */
void lr_tls_feed(lr_stream *s, const char *p, size_t n);
int lr_tls_write(lr_stream *s, const uv_buf_t *bufs, unsigned n);
void lr_tls_close_notify(lr_stream *s);
void lr_tls_free(lr_stream *s);
/* Why the TLS layer failed the stream (its on_end had status UV_EPROTO): a message
 * such as "certificate verify failed: ...", or NULL if TLS did not fail. */
const char *lr_tls_error(lr_stream *s);
/* For lr_stream_read: plaintext held in the SSL while the owner paused is delivered
 * now (so under TLS, lr_stream_read may call on_data before it returns). */
void lr_tls_pump(lr_stream *s);
/* OpenSSL is loaded on first use (tls.c), so the rest of the runtime reaches it only
 * through these. lr_tls_random: n random bytes, 0 or -1 (OpenSSL cannot be loaded).
 * lr_tls_ws_key: a fresh Sec-WebSocket-Key (24 characters and a NUL) and the
 * Sec-WebSocket-Accept a server must answer it with (28 and a NUL); 0 or -1.
 * (bindings/server.c should use lr_tls_ws_accept rather than SHA1 itself, so
 * that OpenSSL stays unmapped until used.) */
int lr_tls_random(void *buf, size_t n);
int lr_tls_ws_key(char key[25], char accept[29]);
/* The Sec-WebSocket-Accept (28 characters and a NUL) for a client's key[0..n) (at
 * most 128 bytes); 0 or -1. */
int lr_tls_ws_accept(const char *key, size_t n, char accept[29]);
/* For tls.c: ciphertext out, plaintext in, a fatal TLS error (status < 0). */
int lr_stream_raw_send(lr_stream *s, char *data, size_t len); /* a block, as lr_stream_send */
void lr_stream_deliver(lr_stream *s, const char *p, size_t n);
void lr_stream_fail(lr_stream *s, int status);

/* ---- server.c, server_h1.c, server_h2.c: the HTTP server ----
 * server.c listens, accepts, keeps the connections and their timers, and closes.
 * A request, whatever its protocol, is an lr_srv_req: its head and body come in from
 * the protocol (server_h1.c on http-parser, server_h2.c on nghttp2), and its response
 * goes out through the protocol's lr_srv_proto. Each request runs the script's
 * handler as a task (bindings/server.c), spawned once its head is in; the task is
 * the request's owner: when it ends (lr_owner.child_done), the request is answered
 * if it was not (500 on an error) and freed. */
typedef struct lr_server lr_server;
typedef struct lr_conn lr_conn;
typedef struct lr_srv_req lr_srv_req;

typedef struct lr_srv_opts {
  char host[256];
  int port, backlog, http2, reuse_port, half_close;
  size_t max_connections, max_header_size, max_body_size, max_headers;
  uint64_t header_timeout, idle_timeout, request_timeout; /* ms; 0: none */
  lr_tls_ctx *tls;       /* owned by the server, or NULL */
} lr_srv_opts;

/* What the bindings give the server: how to start a request's handler task. */
typedef struct lr_srv_app {
  /* Spawns the handler task for r (on L, with r->srv's handler), sets r->task and
   * returns 0, or returns -1 (the request is answered 500 and closed). */
  int (*dispatch)(lua_State *L, lr_srv_req *r);
  /* The request is being freed: forget the Lua side's pointer to it. */
  void (*forget)(lr_srv_req *r);
  /* The server has closed: every connection is gone (server:wait returns). */
  void (*closed)(lr_server *srv);
} lr_srv_app;

struct lr_server {
  lr_runtime *rt;
  uv_tcp_t listener;
  lr_srv_opts o;
  const lr_srv_app *app;
  void *ud;              /* the bindings' Server userdata box */
  lr_conn *conns;        /* every open connection (a list through conn->next) */
  size_t nconns;
  int backlogged;        /* connections left in the kernel's backlog (max_connections) */
  int port;
  char host[256];
  uint8_t listening, closing, closed;
  lr_waitq waiters;      /* tasks in server:wait() */
  uv_timer_t grace;      /* close(grace): cancels what still runs when it fires */
  /* The box (until collected), the two handles (until closed), each connection and
   * each request hold a reference: the last lr_server_unref frees it. */
  int refs;
  lr_server *next;       /* the runtime's servers (closed with the runtime) */
};

/* A header: name (lower-case for requests) and value, not NUL-terminated. */
typedef struct lr_srv_hdr {
  uint32_t name, name_len, value, value_len; /* offsets into r->head */
} lr_srv_hdr;

/* How a protocol sends a request's response. Every call returns 0 or a libuv error
 * (UV_EPIPE once the connection is gone). */
typedef struct lr_srv_proto {
  /* The status line and headers (hdrs[2i] a name, hdrs[2i+1] its value, lens their
   * lengths; checked already), then body[0..len) and, if last, the end of the
   * response. The protocol sets r->responded, r->status and (if last) r->finished. content_length: the body's
   * total (for HEAD too), or -1 for a body of unknown length that follows in
   * write calls (chunked in HTTP/1.1). */
  int (*respond)(lr_srv_req *r, int status, const char *const *hdrs, const size_t *lens,
                 int nhdrs, const char *body, size_t len, int64_t content_length, int last);
  /* More body, and maybe its end. */
  int (*write)(lr_srv_req *r, const char *p, size_t n, int last);
  /* 1 while the writer should wait for the peer (the task parks in r->waiters and
   * is woken when it drains). */
  int (*congested)(lr_srv_req *r);
  /* The handler asked for the body: send 100 Continue if the client expects it. */
  void (*want_body)(lr_srv_req *r);
  /* The handler consumed n body bytes (flow control). */
  void (*consumed)(lr_srv_req *r, size_t n);
  /* The request is finished with (answered or given up): free the protocol's part. */
  void (*done)(lr_srv_req *r);
} lr_srv_proto;

struct lr_srv_req {
  lr_owner owner;        /* the handler task's owner: first, so child_done finds r */
  lr_server *srv;
  lr_conn *conn;         /* NULL once the connection is gone */
  const lr_srv_proto *proto;
  lr_task *task;         /* the handler task while it runs */
  void *box;             /* the Lua userdata's pointer to r (bindings), or NULL */
  /* Head: method, target and headers in one buffer. */
  char *head;
  size_t head_len, head_cap;
  uint32_t method_off, method_len, target, target_len;
  lr_srv_hdr *hdrs;
  uint32_t nhdrs, hdr_cap;
  uint8_t http_major, http_minor;
  uint8_t is_head;       /* HEAD: the response has no body */
  uint8_t keep_alive;
  uint8_t expect_continue, continue_sent;
  uint8_t upgrade;       /* an Upgrade request (WebSocket) */
  uint8_t upgraded;      /* answered 101: the connection belongs to the WebSocket */
  /* Body, as it arrives: [body_pos, body_len) not yet read by the handler. */
  char *body;
  size_t body_len, body_cap, body_pos, body_total;
  size_t body_expected;  /* Content-Length when given (the buffer's first size), or 0 */
  uint8_t body_done;     /* the whole body is in */
  uint8_t want_whole;    /* req:body() waits for all of it (no read pause for it) */
  uint8_t body_error;    /* LR_BODY_* why it never will be */
  /* Response. */
  uint8_t responded;     /* the head went out */
  uint8_t finished;      /* the whole response went out (or never will) */
  uint8_t timed_out;     /* request_timeout fired: 503 sent, task cancelled */
  uint8_t streaming;     /* a body of unknown length is being written */
  int status;
  lr_waitq waiters;      /* the handler task waiting for body data or a drain */
  int32_t stream_id;     /* HTTP/2 */
  void *proto_data;      /* the protocol's own state for this request */
  char peer[64];
};
enum { LR_BODY_OK = 0, LR_BODY_TOO_LARGE, LR_BODY_CLOSED, LR_BODY_BAD };

struct lr_conn {
  lr_stream s;           /* first */
  lr_server *srv;
  lr_conn *next, *prev;
  uv_timer_t timer;      /* fires at or before the deadline (server.c says why) */
  uint64_t deadline;     /* loop time (ms) the phase ends, or 0 */
  uint64_t timer_due;    /* when the timer is armed for, or 0 */
  int phase;             /* LR_PHASE_* */
  int handles;           /* stream and timer not yet closed */
  lua_State *L;          /* the state to spawn from while feeding the parser */
  void *proto;           /* server_h1.c's or server_h2.c's connection state */
  lr_srv_req *req;       /* HTTP/1: the request in progress */
  lr_srv_req *spare;     /* the last one, kept with its buffers for the next */
  struct lr_ws *ws;      /* after an upgrade: the WebSocket that owns the stream */
  uint8_t is_h2, started, closing;
  char peer[64];
};
enum { LR_PHASE_IDLE = 0, LR_PHASE_HEAD, LR_PHASE_HANDLER, LR_PHASE_DONE };

/* server.c */
/* Listens as o says (o->tls is taken over). Returns the server, or NULL with a
 * message in err. */
lr_server *lr_server_listen(lr_runtime *rt, const lr_srv_opts *o, const lr_srv_app *app,
                            void *ud, char *err, size_t errlen);
/* Stops accepting; requests in flight get grace seconds (negative: wait forever),
 * then their tasks are cancelled and their connections closed. */
void lr_server_close(lr_server *srv, double grace);
/* Closes at once, without waiting (the runtime closes, or __gc). */
void lr_server_abort(lr_server *srv);
/* Drops a reference (the box's, when collected). */
void lr_server_unref(lr_server *srv);
/* The connection's phase and its timer. */
void lr_conn_phase(lr_conn *c, int phase);
/* Closes the connection (now if abort, else after queued writes). */
void lr_conn_close(lr_conn *c, int abort);
/* Hands the connection's stream to a WebSocket (answered 101 already): its timer
 * and protocol state go, c->req lets go of r; lr_conn_released must be the stream's
 * on_closed (or be called from it) once the WebSocket is done with it. */
void lr_conn_upgrade(lr_conn *c, struct lr_ws *ws);
void lr_conn_released(lr_stream *s);
/* Bytes read past the request head and not parsed (the start of WebSocket frames);
 * they are taken: the caller frees *p with free(). */
void lr_h1_take_tail(lr_conn *c, char **p, size_t *n);
/* The Date header's value, formatted at most once a second. */
const char *lr_server_date(lr_runtime *rt);
/* A request for conn c (head empty). NULL when out of memory. */
lr_srv_req *lr_srv_req_new(lr_conn *c, const lr_srv_proto *proto);
/* Appends to the head buffer; returns the offset, or -1 when out of memory. */
int64_t lr_srv_req_append(lr_srv_req *r, const char *p, size_t n);
/* Adds body bytes; -1 when past max_body_size or out of memory. Wakes the reader. */
int lr_srv_req_body(lr_srv_req *r, const char *p, size_t n);
/* The body is complete (err LR_BODY_OK) or never will be. Wakes the reader. */
void lr_srv_req_body_end(lr_srv_req *r, int err);
/* Adds a header entry (offsets into r->head). 0, or -1 when out of memory. */
int lr_srv_req_add_header(lr_srv_req *r, uint32_t name, uint32_t nl, uint32_t value,
                          uint32_t vl);
/* The value of the first header called name (lower-case) and its length, or NULL. */
const char *lr_srv_req_header(const lr_srv_req *r, const char *name, size_t *len);
/* The head is in: runs the handler (through srv->app). -1: not started. */
int lr_srv_req_dispatch(lua_State *L, lr_srv_req *r);
/* Protocol side: the connection is gone; cancels the handler task. */
void lr_srv_req_abandon(lr_srv_req *r);
/* Frees r (its task has ended, or never started). */
void lr_srv_req_free(lr_srv_req *r);
/* A simple response (status with a short text body), or nothing if the head went out. */
void lr_srv_req_reply(lr_srv_req *r, int status, const char *text, int close);
/* The reason phrase of a status ("Not Found"), or "" */
const char *lr_http_reason(int status);

/* server_h1.c: HTTP/1.1 on a connection (the default). */
void lr_h1_start(lr_conn *c);
/* Bytes from the stream; L is the state to spawn handler tasks from. */
void lr_h1_data(lr_conn *c, const char *p, size_t n);
/* The handler's response ended: read and serve the next request (pipelining). */
void lr_h1_next(lua_State *L, lr_conn *c);
void lr_h1_free(lr_conn *c);
/* Writes a whole error response straight to the connection and closes it. */
void lr_h1_error(lr_conn *c, int status, const char *text);

/* server_h2.c: HTTP/2 on a connection (prior knowledge or ALPN h2). Takes over c with
 * the bytes read so far (the client's preface included). */
void lr_h2_start(lr_conn *c, const char *p, size_t n);
void lr_h2_data(lr_conn *c, const char *p, size_t n);
void lr_h2_free(lr_conn *c);
/* The server is shutting down: GOAWAY, finish the open streams. */
void lr_h2_shutdown(lr_conn *c);
/* The stream's queue drained: send what waits, wake the writers. */
void lr_h2_drain(lr_conn *c);

/* ---- ws.c, ws_client.c: WebSocket on a stream (wslay) ----
 * A WebSocket owns its stream from adoption on: it replaces the stream's callbacks
 * and ud, and closes it once the close handshake is through (or the peer is gone, or
 * LR_WS_CLOSE_TIMEOUT_MS after our close frame went unanswered). The script holds it
 * as a luarun.WebSocket userdata (bindings/websocket.c). */
typedef struct lr_ws lr_ws;
#define LR_WS_MT "luarun.WebSocket"
#define LR_WS_MAX_MESSAGE ((size_t)16 << 20) /* max_message_size's default */
#define LR_WS_CLOSE_TIMEOUT_MS 5000
/* Makes the stream s, already upgraded (the server answered 101, or the client read
 * that answer), a WebSocket: server is 1 for the server's end (unmasked frames out),
 * 0 for a client's. tail[0..n) are bytes read after the handshake's head (copied).
 * max_message: the largest message received (0: LR_WS_MAX_MESSAGE); a larger one
 * closes with 1009. Pushes the luarun.WebSocket userdata and returns 1. release
 * (may be NULL) is called once with s after the stream is closed, when the WebSocket
 * is done with it: it frees the memory s lives in. Raises on out-of-memory (s is
 * then untouched and still the caller's). */
int lr_ws_adopt(lua_State *L, lr_stream *s, int server, const char *tail, size_t n,
                size_t max_message, void (*release)(lr_stream *s));
/* lr_ws_adopt in two steps (ws_client.c sets the close timeout in between):
 * lr_ws_new returns NULL when out of memory; lr_ws_start pushes the userdata. */
lr_ws *lr_ws_new(lua_State *L, lr_stream *s, int server, size_t max_message,
                 void (*release)(lr_stream *s));
void lr_ws_set_close_timeout(lr_ws *ws, uint64_t ms);
int lr_ws_start(lua_State *L, lr_ws *ws, const char *tail, size_t n);
/* The script's calls. Stack index 1 is the userdata; send's data is at index 2. Each
 * waits (a cancellation point) and returns its Lua results. */
int lr_ws_send(lua_State *L, lr_ws *ws, int binary);
int lr_ws_receive(lua_State *L, lr_ws *ws);
int lr_ws_ping(lua_State *L, lr_ws *ws, const char *p, size_t n);
int lr_ws_close(lua_State *L, lr_ws *ws, int code, const char *reason, size_t n);
/* Starts the close handshake without waiting (code 0: a close frame without code). */
void lr_ws_close_now(lr_ws *ws, int code, const char *reason, size_t n);
/* The userdata is collected: starts closing and lets go of ws. */
void lr_ws_drop(lr_ws *ws);
int lr_ws_is_open(lr_ws *ws);
/* Pushes nil, err (kind "closed", with code and reason). */
void lr_ws_push_closed(lua_State *L, lr_ws *ws);
/* ws_client.c: http.websocket(url [, opts]); the url at index 1, opts at 2. */
int lr_ws_connect(lua_State *L);

#endif
