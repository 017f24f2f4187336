/* The same floor on libh2o 2.2 (Debian libh2o-dev), with its libuv backend
 * (libh2o.so links libuv; libh2o-evloop.so is h2o's own epoll loop). One thread.
 *   floor_h2o PORT
 * Listens on 127.0.0.1:PORT. A request without a body is answered "Hello, World!"
 * (text/plain); one with a body, its length in decimal. h2o 2.2 gathers the whole body
 * into req->entity before it calls the handler: that is the behaviour issue 14 names.
 * SIGINT/SIGTERM stop the loop and return 0 (for valgrind's final dump).
 */
#define H2O_USE_LIBUV 1
#include <h2o.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

static h2o_globalconf_t config;
static h2o_context_t ctx;
static h2o_accept_ctx_t accept_ctx;

static int on_req(h2o_handler_t *self, h2o_req_t *req) {
  (void)self;
  req->res.status = 200;
  req->res.reason = "OK";
  h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/plain"));
  if (req->entity.base != NULL) {
    char *num = h2o_mem_alloc_pool(&req->pool, 24);
    int n = snprintf(num, 24, "%zu", req->entity.len);
    req->res.content_length = (size_t)n;
    h2o_send_inline(req, num, (size_t)n);
  } else {
    req->res.content_length = 13;
    h2o_send_inline(req, H2O_STRLIT("Hello, World!"));
  }
  return 0;
}

static void on_accept(uv_stream_t *listener, int status) {
  if (status != 0) return;
  uv_tcp_t *conn = h2o_mem_alloc(sizeof *conn);
  uv_tcp_init(listener->loop, conn);
  if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
    uv_close((uv_handle_t *)conn, (uv_close_cb)free);
    return;
  }
  uv_tcp_nodelay(conn, 1);
  h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)conn, (uv_close_cb)free);
  h2o_accept(&accept_ctx, sock);
}

static void on_signal(uv_signal_t *h, int sig) {
  (void)sig;
  uv_stop(h->loop);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: floor_h2o PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  h2o_config_init(&config);
  h2o_hostconf_t *host = h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
  h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
  h2o_handler_t *handler = h2o_create_handler(path, sizeof *handler);
  handler->on_req = on_req;

  uv_loop_t *loop = uv_default_loop();
  h2o_context_init(&ctx, loop, &config);
  accept_ctx.ctx = &ctx;
  accept_ctx.hosts = config.hosts;

  uv_tcp_t listener;
  struct sockaddr_in addr;
  uv_tcp_init(loop, &listener);
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
  int r = uv_tcp_bind(&listener, (const struct sockaddr *)&addr, 0);
  if (r == 0) r = uv_listen((uv_stream_t *)&listener, 4096, on_accept);
  if (r != 0) {
    fprintf(stderr, "floor_h2o: listen: %s\n", uv_strerror(r));
    return 1;
  }
  uv_signal_t sigint, sigterm;
  uv_signal_init(loop, &sigint);
  uv_signal_init(loop, &sigterm);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
