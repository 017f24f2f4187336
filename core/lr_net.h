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
/* For tls.c: ciphertext out, plaintext in, a fatal TLS error (status < 0). */
int lr_stream_raw_send(lr_stream *s, char *data, size_t len); /* a block, as lr_stream_send */
void lr_stream_deliver(lr_stream *s, const char *p, size_t n);
void lr_stream_fail(lr_stream *s, int status);

#endif
