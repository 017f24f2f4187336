/* server_h2.c: HTTP/2 on a server connection. Placeholder until the nghttp2 session
 * lands: a connection that speaks HTTP/2 is closed. */
#include "lr_net.h"

void lr_h2_start(lr_conn *c, const char *p, size_t n) {
  (void)p, (void)n;
  lr_conn_close(c, 1);
}
void lr_h2_data(lr_conn *c, const char *p, size_t n) {
  (void)p, (void)n;
  lr_conn_close(c, 1);
}
void lr_h2_free(lr_conn *c) { (void)c; }
void lr_h2_shutdown(lr_conn *c) { lr_conn_close(c, 0); }
