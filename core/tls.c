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
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "lr_net.h"

#define LR_STR_(x) #x
#define LR_STR(x) LR_STR_(x)

/* ---- OpenSSL, loaded on first use ----
 * A script that never speaks TLS must not map libssl and libcrypto at start (issue
 * 20: startup as fast as lua5.4's; http_spec checks /proc/self/maps). So, as
 * curl_api.c does for libcurl, this file reaches OpenSSL through pointers filled by
 * dlopen/dlsym the first time a TLS context or randomness is wanted, and nothing
 * else in the runtime calls OpenSSL directly (ws.c and ws_client.c use the helpers
 * at the end of this file). The macros below point the calls at the table. */
#define OSSL_FUNCS(X) \
  X(crypto, BIO_ctrl_pending) \
  X(crypto, BIO_free) \
  X(crypto, BIO_new) \
  X(crypto, BIO_read) \
  X(crypto, BIO_s_mem) \
  X(crypto, BIO_ctrl) \
  X(crypto, BIO_write) \
  X(crypto, ERR_clear_error) \
  X(crypto, ERR_error_string_n) \
  X(crypto, ERR_peek_last_error) \
  X(crypto, EVP_EncodeBlock) \
  X(crypto, RAND_bytes) \
  X(crypto, SHA1) \
  X(crypto, X509_VERIFY_PARAM_set1_ip_asc) \
  X(crypto, X509_verify_cert_error_string) \
  X(ssl, SSL_CTX_check_private_key) \
  X(ssl, SSL_CTX_free) \
  X(ssl, SSL_CTX_load_verify_locations) \
  X(ssl, SSL_CTX_new) \
  X(ssl, SSL_CTX_set_alpn_select_cb) \
  X(ssl, SSL_CTX_set_default_verify_paths) \
  X(ssl, SSL_CTX_ctrl) \
  X(ssl, SSL_CTX_set_verify) \
  X(ssl, SSL_CTX_use_PrivateKey_file) \
  X(ssl, SSL_CTX_use_certificate_chain_file) \
  X(ssl, SSL_do_handshake) \
  X(ssl, SSL_free) \
  X(ssl, SSL_get0_alpn_selected) \
  X(ssl, SSL_get0_param) \
  X(ssl, SSL_get_error) \
  X(ssl, SSL_get_verify_mode) \
  X(ssl, SSL_get_verify_result) \
  X(ssl, SSL_new) \
  X(ssl, SSL_read) \
  X(ssl, SSL_select_next_proto) \
  X(ssl, SSL_set1_host) \
  X(ssl, SSL_set_accept_state) \
  X(ssl, SSL_set_alpn_protos) \
  X(ssl, SSL_set_bio) \
  X(ssl, SSL_set_connect_state) \
  X(ssl, SSL_ctrl) \
  X(ssl, SSL_shutdown) \
  X(ssl, SSL_write) \
  X(ssl, OPENSSL_init_ssl) \
  X(ssl, TLS_client_method) \
  X(ssl, TLS_server_method)

static struct {
#define X(lib, f) __typeof__(&f) f;
  OSSL_FUNCS(X)
#undef X
} ossl;

static pthread_once_t ossl_once = PTHREAD_ONCE_INIT;
static int ossl_ok;
static char ossl_err[128];

static void ossl_open(void) {
  void *crypto = dlopen("libcrypto.so." LR_STR(OPENSSL_VERSION_MAJOR), RTLD_LAZY | RTLD_LOCAL);
  void *ssl = crypto ? dlopen("libssl.so." LR_STR(OPENSSL_VERSION_MAJOR), RTLD_LAZY | RTLD_LOCAL)
                     : NULL;
  if (ssl == NULL) {
    snprintf(ossl_err, sizeof ossl_err, "cannot load OpenSSL: %s", dlerror());
    return;
  }
#define X(lib, f)                                                          \
  if ((*(void **)&ossl.f = dlsym(lib, #f)) == NULL) {                      \
    snprintf(ossl_err, sizeof ossl_err, "cannot load OpenSSL: no %s", #f); \
    return;                                                                \
  }
  OSSL_FUNCS(X)
#undef X
  /* OpenSSL's one-time setup may have failed already (libcurl runs it too): out of
   * memory there leaves its global locks NULL, and the next RAND_bytes crashed
   * (found by the malloc-failure sweep). Its result says whether it can be used. */
  if (!ossl.OPENSSL_init_ssl(0, NULL)) {
    snprintf(ossl_err, sizeof ossl_err, "OpenSSL could not initialise (out of memory?)");
    return;
  }
  ossl_ok = 1;
}

/* 0 once OpenSSL is loaded, else -1 and the reason in err. */
static int ossl_load(char *err, size_t errlen) {
  pthread_once(&ossl_once, ossl_open);
  if (!ossl_ok && err) snprintf(err, errlen, "%s", ossl_err);
  return ossl_ok ? 0 : -1;
}

#define BIO_ctrl_pending (ossl.BIO_ctrl_pending)
#define BIO_free (ossl.BIO_free)
#define BIO_new (ossl.BIO_new)
#define BIO_read (ossl.BIO_read)
#define BIO_s_mem (ossl.BIO_s_mem)
#define BIO_ctrl (ossl.BIO_ctrl)
#define BIO_write (ossl.BIO_write)
#define ERR_clear_error (ossl.ERR_clear_error)
#define ERR_error_string_n (ossl.ERR_error_string_n)
#define ERR_peek_last_error (ossl.ERR_peek_last_error)
#define EVP_EncodeBlock (ossl.EVP_EncodeBlock)
#define RAND_bytes (ossl.RAND_bytes)
#define SHA1 (ossl.SHA1)
#define X509_VERIFY_PARAM_set1_ip_asc (ossl.X509_VERIFY_PARAM_set1_ip_asc)
#define X509_verify_cert_error_string (ossl.X509_verify_cert_error_string)
#define SSL_CTX_check_private_key (ossl.SSL_CTX_check_private_key)
#define SSL_CTX_free (ossl.SSL_CTX_free)
#define SSL_CTX_load_verify_locations (ossl.SSL_CTX_load_verify_locations)
#define SSL_CTX_new (ossl.SSL_CTX_new)
#define SSL_CTX_set_alpn_select_cb (ossl.SSL_CTX_set_alpn_select_cb)
#define SSL_CTX_set_default_verify_paths (ossl.SSL_CTX_set_default_verify_paths)
#define SSL_CTX_ctrl (ossl.SSL_CTX_ctrl)
#define SSL_CTX_set_verify (ossl.SSL_CTX_set_verify)
#define SSL_CTX_use_PrivateKey_file (ossl.SSL_CTX_use_PrivateKey_file)
#define SSL_CTX_use_certificate_chain_file (ossl.SSL_CTX_use_certificate_chain_file)
#define SSL_do_handshake (ossl.SSL_do_handshake)
#define SSL_free (ossl.SSL_free)
#define SSL_get0_alpn_selected (ossl.SSL_get0_alpn_selected)
#define SSL_get0_param (ossl.SSL_get0_param)
#define SSL_get_error (ossl.SSL_get_error)
#define SSL_get_verify_mode (ossl.SSL_get_verify_mode)
#define SSL_get_verify_result (ossl.SSL_get_verify_result)
#define SSL_new (ossl.SSL_new)
#define SSL_read (ossl.SSL_read)
#define SSL_select_next_proto (ossl.SSL_select_next_proto)
#define SSL_set1_host (ossl.SSL_set1_host)
#define SSL_set_accept_state (ossl.SSL_set_accept_state)
#define SSL_set_alpn_protos (ossl.SSL_set_alpn_protos)
#define SSL_set_bio (ossl.SSL_set_bio)
#define SSL_set_connect_state (ossl.SSL_set_connect_state)
#define SSL_ctrl (ossl.SSL_ctrl)
#define SSL_shutdown (ossl.SSL_shutdown)
#define SSL_write (ossl.SSL_write)
#define TLS_client_method (ossl.TLS_client_method)
#define TLS_server_method (ossl.TLS_server_method)

struct lr_tls_ctx {
  SSL_CTX *ctx;
  int http2;             /* ALPN offers h2 */
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
  int http2 = c->http2;
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
  lr_tls_ctx *c;
  if (ossl_load(err, errlen) != 0) return NULL;
  c = calloc(1, sizeof *c);
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
  c->http2 = http2;
  SSL_CTX_set_alpn_select_cb(c->ctx, alpn_select_cb, c);
  return c;
fail:
  lr_tls_ctx_free(c);
  return NULL;
}

lr_tls_ctx *lr_tls_client_ctx(int verify, const char *ca_file, char *err, size_t errlen) {
  lr_tls_ctx *c;
  if (ossl_load(err, errlen) != 0) return NULL;
  c = calloc(1, sizeof *c);
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
      if (lr_reserve(&t->pending, &t->pcap, t->plen + bufs[i].len, 1024) < 0) return UV_ENOMEM;
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

/* ---- OpenSSL's helpers for ws.c and ws_client.c ---- */

int lr_tls_random(void *buf, size_t n) {
  if (ossl_load(NULL, 0) != 0) return -1;
  return RAND_bytes(buf, (int)n) == 1 ? 0 : -1;
}

static void lr_tls_base64(const void *in, size_t n, char *out) {
  EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

int lr_tls_ws_accept(const char *key, size_t n, char accept[29]) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[20];
  char both[128 + sizeof guid];
  if (n > 128 || ossl_load(NULL, 0) != 0) return -1;
  memcpy(both, key, n);
  memcpy(both + n, guid, sizeof guid);
  SHA1((const unsigned char *)both, n + sizeof guid - 1, digest);
  lr_tls_base64(digest, sizeof digest, accept);
  return 0;
}

int lr_tls_ws_key(char key[25], char accept[29]) {
  unsigned char raw[16];
  if (lr_tls_random(raw, sizeof raw) != 0) return -1;
  lr_tls_base64(raw, sizeof raw, key);
  return lr_tls_ws_accept(key, 24, accept);
}
