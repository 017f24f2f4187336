/* tls.c: TLS on a stream. Placeholder until the OpenSSL memory-BIO engine lands:
 * every context fails to build, so no stream is ever put under TLS. */
#include <stdio.h>
#include "lr_net.h"

lr_tls_ctx *lr_tls_server_ctx(const char *cert, const char *key, int http2, char *err,
                              size_t errlen) {
  (void)cert, (void)key, (void)http2;
  snprintf(err, errlen, "TLS is not built in yet");
  return NULL;
}
lr_tls_ctx *lr_tls_client_ctx(int verify, const char *ca_file, char *err, size_t errlen) {
  (void)verify, (void)ca_file;
  snprintf(err, errlen, "TLS is not built in yet");
  return NULL;
}
void lr_tls_ctx_free(lr_tls_ctx *c) { (void)c; }
int lr_tls_attach(lr_stream *s, lr_tls_ctx *c, int server, const char *host) {
  (void)s, (void)c, (void)server, (void)host;
  return -1;
}
const char *lr_tls_alpn(lr_stream *s) { (void)s; return ""; }
void lr_tls_feed(lr_stream *s, const char *p, size_t n) { lr_stream_deliver(s, p, n); }
int lr_tls_write(lr_stream *s, const uv_buf_t *bufs, unsigned n) { (void)s, (void)bufs, (void)n; return UV_ENOTSUP; }
void lr_tls_close_notify(lr_stream *s) { (void)s; }
void lr_tls_free(lr_stream *s) { (void)s; }
