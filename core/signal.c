/* signal.c: Ctrl-C and SIGTERM for the luarun executable.
 *
 * SIGINT cancels every task, so their <close> variables and cleanup run, and the
 * process exits 130 once they have unwound; SIGTERM (how containers and service
 * managers stop a program) does the same and exits 143. The handler itself only
 * does what is safe in a signal handler: it sets a Lua hook on the thread running
 * now (so a task spinning in a loop that never waits is interrupted too, as lua.c
 * does) and wakes the loop through uv_async_send. A second SIGINT or SIGTERM kills
 * the process at once (the default action of either, restored by the first).
 * SIGQUIT's task dump belongs to tasks.c, an observer.
 */
#include <signal.h>
#include <string.h>
#include "lr_subsys.h"

static lr_runtime *sig_rt;
static uv_async_t sig_async;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  lr_error_push(L, "cancelled", "interrupted");
  lua_error(L);
}

static void on_stop_signal(int sig) {
  lua_State *co = sig_rt->running_co;
  sig_rt->interrupted = sig;
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (co) lua_sethook(co, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  uv_async_send(&sig_async);
}

static void sigint_async_cb(uv_async_t *h) {
  lr_runtime *rt = h->data;
  lr_runtime_cancel_all(rt);
}

void lr_signal_install(lr_runtime *rt) {
  struct sigaction sa;
  sig_rt = rt;
  uv_async_init(&rt->loop, &sig_async, sigint_async_cb);
  sig_async.data = rt;
  uv_unref((uv_handle_t *)&sig_async); /* waiting for Ctrl-C keeps nothing alive */
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT); /* one handler at a time */
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}
