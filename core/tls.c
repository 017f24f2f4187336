/* tls.c: TLS on a stream, with OpenSSL 3 memory BIOs.
 *
 * The socket stays libuv's: ciphertext read from it is written into the SSL's read
 * BIO (lr_tls_feed), and whatever the SSL writes into its write BIO is drained into
 * one write block and sent with lr_stream_raw_send. The rules of the notes
 * (serving.md, "TLS with OpenSSL memory BIOs"):
 * - drain the write BIO after every SSL call (a handshake step, SSL_read and
 *   SSL_shutdown write too), and drain it whole, since a memory BIO memmoves unread
 *   data on every write after a partial read;
 * - ERR_clear_error before each call: SSL_get_error reads a queue that every
 *   connection on the loop thread shares;
 * - a peer that closes without close_notify is seen by stream.c as UV_EOF, never by
 *   OpenSSL (the read BIO just runs dry), so it reads as a close at a boundary;
 * - never SSL_shutdown after a fatal error (t->failed).
 * Plaintext written before the handshake is done (a client's request right after
 * connect) waits in t->pending and goes out once it is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "lr_net.h"

struct lr_tls_ctx {
  SSL_CTX *ctx;
};

struct lr_tls {
  SSL *ssl;
  BIO *rbio, *wbio;      /* network side: ciphertext in, ciphertext out */
  char *pending;         /* plaintext written before the handshake completed */
  size_t plen, pcap;
  uint8_t done;          /* handshake complete */
  uint8_t failed;        /* a fatal error: no more SSL calls but SSL_free */
  uint8_t pumping;       /* inside pump (lr_stream_read may call it again) */
  char alpn[16];
  char err[160];         /* why the connection failed, for the owner */
};

/* ALPN protocol lists, in wire format. */
static const unsigned char alpn_h2[] = "\x02h2\x08http/1.1";
static const unsigned char alpn_h1[] = "\x08http/1.1";

/* Appends OpenSSL's reason for the last error (or fallback) to buf. */
static void ssl_reason(char *buf, size_t len, const char *what, const char *fallback) {
  unsigned long e = ERR_peek_last_error();
  char r[120];
  if (e) ERR_error_string_n(e, r, sizeof r);
  snprintf(buf, len, "%s: %s", what, e ? r : fallback);
}

/* ---- contexts ---- */

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg) {
  lr_tls_ctx *c = arg;
  unsigned char *o;
  int http2 = SSL_CTX_get_ex_data(c->ctx, 0) != NULL;
  const unsigned char *ours = http2 ? alpn_h2 : alpn_h1;
  unsigned ourlen = http2 ? sizeof alpn_h2 - 1 : sizeof alpn_h1 - 1;
  (void)ssl;
  /* SSL_select_next_proto fills out even when nothing matches (with the client's
   * first protocol, CVE-2024-5535's doc follow-up): only its return value says. */
  if (SSL_select_next_proto(&o, outlen, ours, ourlen, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK; /* no overlap: go on without ALPN (http/1.1) */
  *out = o; /* points into ours (static) */
  return SSL_TLSEXT_ERR_OK;
}

lr_tls_ctx *lr_tls_server_ctx(const char *cert, const char *key, int http2, char *err,
                              size_t errlen) {
  lr_tls_ctx *c = calloc(1, sizeof *c);
  ERR_clear_error();
  if (c == NULL || (c->ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
    snprintf(err, errlen, "not enough memory for a TLS context");
    free(c);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(c->ctx, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_use_certificate_chain_file(c->ctx, cert) != 1) {
    ssl_reason(err, errlen, cert, "cannot load the certificate");
    goto fail;
  }
  if (SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM) != 1) {
    ssl_reason(err, errlen, key, "cannot load the key");
    goto fail;
  }
  if (SSL_CTX_check_private_key(c->ctx) != 1) {
    ssl_reason(err, errlen, key, "the key does not match the certificate");
    goto fail;
  }
  /* ex_data slot 0 says whether h2 is offered (non-NULL). */
  SSL_CTX_set_ex_data(c->ctx, 0, http2 ? (void *)c : NULL);
  SSL_CTX_set_alpn_select_cb(c->ctx, alpn_select_cb, c);
  return c;
fail:
  lr_tls_ctx_free(c);
  return NULL;
}

lr_tls_ctx *lr_tls_client_ctx(int verify, const char *ca_file, char *err, size_t errlen) {
  lr_tls_ctx *c = calloc(1, sizeof *c);
  ERR_clear_error();
  if (c == NULL || (c->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
    snprintf(err, errlen, "not enough memory for a TLS context");
    free(c);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(c->ctx, SSL_MODE_RELEASE_BUFFERS);
  if (verify) {
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    /* ca_file replaces the system's store, as curl's --cacert does. */
    if (ca_file ? SSL_CTX_load_verify_locations(c->ctx, ca_file, NULL) != 1
                : SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
      ssl_reason(err, errlen, ca_file ? ca_file : "the system's certificates",
                 "cannot load the CA certificates");
      lr_tls_ctx_free(c);
      return NULL;
    }
  } else {
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
  }
  return c;
}

void lr_tls_ctx_free(lr_tls_ctx *c) {
  if (c == NULL) return;
  SSL_CTX_free(c->ctx); /* each SSL made from it holds its own reference */
  free(c);
}

/* ---- one connection ---- */

static void fail(lr_stream *s, int sslerr) {
  lr_tls *t = s->tls;
  t->failed = 1;
  if (sslerr == SSL_ERROR_SSL) {
    long vr = SSL_get_verify_result(t->ssl);
    if (vr != X509_V_OK)
      snprintf(t->err, sizeof t->err, "certificate verify failed: %s",
               X509_verify_cert_error_string(vr));
    else
      ssl_reason(t->err, sizeof t->err, "TLS error", "protocol error");
  } else {
    snprintf(t->err, sizeof t->err, "TLS error (SSL_get_error %d)", sslerr);
  }
  ERR_clear_error();
  lr_stream_fail(s, UV_EPROTO);
}

/* Sends everything in the write BIO as one block. 0 or a libuv error. */
static int drain(lr_stream *s) {
  lr_tls *t = s->tls;
  size_t n = BIO_ctrl_pending(t->wbio);
  char *block;
  int got;
  if (n == 0) return 0;
  if ((block = lr_stream_block(n)) == NULL) return UV_ENOMEM;
  got = BIO_read(t->wbio, block, (int)n);
  if (got <= 0) {
    lr_stream_block_free(block);
    return 0;
  }
  return lr_stream_raw_send(s, block, (size_t)got);
}

/* Encrypts n bytes (the handshake is done). 0 or a libuv error. */
static int encrypt(lr_stream *s, const char *p, size_t n) {
  lr_tls *t = s->tls;
  while (n > 0) {
    int chunk = n > (64 << 10) ? (64 << 10) : (int)n, r, rc;
    ERR_clear_error();
    r = SSL_write(t->ssl, p, chunk);
    if ((rc = drain(s)) != 0) return rc;
    if (r <= 0) {
      fail(s, SSL_get_error(t->ssl, r));
      return UV_EPROTO;
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* Runs the handshake and then SSL_read until the SSL wants more ciphertext, while
 * the owner reads (a paused stream keeps the rest in the SSL for lr_tls_pump). */
static void pump(lr_stream *s) {
  lr_tls *t = s->tls;
  char buf[16 * 1024];
  int r, e;
  if (t->failed || t->pumping) return;
  t->pumping = 1;
  if (!t->done) {
    ERR_clear_error();
    r = SSL_do_handshake(t->ssl);
    if (drain(s) != 0) goto out;
    if (r != 1) {
      e = SSL_get_error(t->ssl, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) fail(s, e);
      goto out;
    }
    t->done = 1;
    if (t->plen > 0) {
      int rc = encrypt(s, t->pending, t->plen);
      free(t->pending);
      t->pending = NULL;
      t->plen = t->pcap = 0;
      if (rc != 0) {
        if (!t->failed) lr_stream_fail(s, rc);
        goto out;
      }
    }
  }
  while (s->reading && !s->closing && !s->ended && !t->failed) {
    ERR_clear_error();
    r = SSL_read(t->ssl, buf, sizeof buf);
    if (drain(s) != 0) break;
    if (r > 0) {
      lr_stream_deliver(s, buf, (size_t)r);
      continue;
    }
    e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
    if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: a clean end */
      lr_stream_fail(s, UV_EOF);
      break;
    }
    fail(s, e);
    break;
  }
out:
  t->pumping = 0;
}

int lr_tls_attach(lr_stream *s, lr_tls_ctx *c, int server, const char *host) {
  lr_tls *t = calloc(1, sizeof *t);
  if (t == NULL) return -1;
  ERR_clear_error();
  if ((t->ssl = SSL_new(c->ctx)) == NULL) goto fail;
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (t->rbio == NULL || t->wbio == NULL) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    goto fail;
  }
  BIO_set_mem_eof_return(t->rbio, -1); /* empty means "wait", not EOF */
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  if (server) {
    SSL_set_accept_state(t->ssl);
  } else {
    struct in6_addr a6;
    struct in_addr a4;
    int is_ip = host && (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1);
    SSL_set_connect_state(t->ssl);
    if (host && !is_ip && SSL_set_tlsext_host_name(t->ssl, host) != 1) goto fail;
    if (host && SSL_get_verify_mode(t->ssl) != SSL_VERIFY_NONE) {
      int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host)
                     : SSL_set1_host(t->ssl, host);
      if (ok != 1) goto fail;
    }
    static const unsigned char h1[] = "\x08http/1.1";
    SSL_set_alpn_protos(t->ssl, h1, sizeof h1 - 1);
  }
  s->tls = t;
  if (!server) {
    /* The client speaks first: its ClientHello goes out now. */
    pump(s);
  }
  return 0;
fail:
  ERR_clear_error();
  if (t->ssl) SSL_free(t->ssl);
  free(t);
  return -1;
}

const char *lr_tls_alpn(lr_stream *s) {
  lr_tls *t = s->tls;
  const unsigned char *p;
  unsigned n;
  if (t == NULL || !t->done) return NULL;
  if (t->alpn[0] == '\0') {
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    if (n == 0 || n >= sizeof t->alpn) return "";
    memcpy(t->alpn, p, n);
    t->alpn[n] = '\0';
  }
  return t->alpn;
}

const char *lr_tls_error(lr_stream *s) {
  return s->tls && s->tls->err[0] ? s->tls->err : NULL;
}

void lr_tls_feed(lr_stream *s, const char *p, size_t n) {
  lr_tls *t = s->tls;
  if (t->failed) return;
  if (BIO_write(t->rbio, p, (int)n) != (int)n) {
    t->failed = 1;
    snprintf(t->err, sizeof t->err, "TLS: out of memory");
    lr_stream_fail(s, UV_ENOMEM);
    return;
  }
  pump(s);
}

void lr_tls_pump(lr_stream *s) {
  if (s->tls && s->reading) pump(s);
}

int lr_tls_write(lr_stream *s, const uv_buf_t *bufs, unsigned n) {
  lr_tls *t = s->tls;
  unsigned i;
  int rc;
  if (t->failed) return s->error ? s->error : UV_EPROTO;
  if (s->closing) return UV_ECANCELED;
  if (!t->done) {
    for (i = 0; i < n; i++) {
      if (t->plen + bufs[i].len > t->pcap) {
        size_t cap = t->pcap ? t->pcap : 1024;
        char *p;
        while (cap < t->plen + bufs[i].len) cap *= 2;
        if ((p = realloc(t->pending, cap)) == NULL) return UV_ENOMEM;
        t->pending = p;
        t->pcap = cap;
      }
      memcpy(t->pending + t->plen, bufs[i].base, bufs[i].len);
      t->plen += bufs[i].len;
    }
    return 0;
  }
  for (i = 0; i < n; i++)
    if ((rc = encrypt(s, bufs[i].base, bufs[i].len)) != 0) return rc;
  return 0;
}

void lr_tls_close_notify(lr_stream *s) {
  lr_tls *t = s->tls;
  if (t == NULL || t->failed || !t->done) return;
  ERR_clear_error();
  SSL_shutdown(t->ssl);
  drain(s);
  ERR_clear_error();
}

void lr_tls_free(lr_stream *s) {
  lr_tls *t = s->tls;
  if (t == NULL) return;
  SSL_free(t->ssl); /* frees both BIOs */
  free(t->pending);
  free(t);
  s->tls = NULL;
}
