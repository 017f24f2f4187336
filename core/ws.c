/* ws.c: WebSocket framing on wslay 1.1.1 (its event API) over an lr_stream, for
 * both ends: a server adopts a stream it has answered with 101 (lr_ws_adopt from
 * req:websocket()), the client (ws_client.c) a stream whose handshake it did itself.
 * The stream may be plain TCP or TLS: this file never asks.
 *
 * wslay pulls bytes (recv_cb) while libuv pushes them (on_data): what arrives is
 * kept in ws->in, and recv_cb hands it out until it is empty, then says
 * WSLAY_ERR_WOULDBLOCK. What wslay sends comes in pieces (a frame's header, then its
 * payload in chunks): send_cb gathers them in ws->out and writes a frame with one
 * lr_stream_write. Above the stream's high watermark send_cb says WOULDBLOCK, so
 * the rest waits in wslay's queue until on_drain.
 *
 * wslay checks the protocol (masking, opcodes, fragmentation, UTF-8 of text, close
 * codes), answers pings and closes, and closes with 1009 over max_message_size.
 * Received messages wait in a list (ws->head) for ws:receive; reading pauses while
 * that list holds more than WS_UNREAD_MAX bytes or WS_UNREAD_COUNT messages.
 * Senders park while wslay's queue plus the stream's queued bytes are above
 * LR_STREAM_HIGH.
 *
 * Lifetime: an lr_ws is freed when its three holders are done: the Lua userdata
 * (until __gc), the stream (until on_closed, where the stream's own memory is given
 * back through `release`) and the close timer (until its close callback).
 */
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>
#include "lr_net.h"

#define WS_UNREAD_MAX ((size_t)1 << 20)
#define WS_UNREAD_COUNT 256
#define WS_OUT_FLUSH ((size_t)256 << 10)

typedef struct ws_msg {
  struct ws_msg *next;
  size_t len;
  uint8_t binary;
  char data[];
} ws_msg;

struct lr_ws {
  lr_runtime *rt;
  lr_stream *s;              /* NULL once the stream is closed */
  void (*release)(lr_stream *s);
  wslay_event_context_ptr ctx;
  char *in;                  /* received, not yet taken by wslay: in[in_pos..in_len) */
  size_t in_pos, in_len, in_cap;
  char *out;                 /* the frame being gathered by send_cb */
  size_t out_len, out_cap;
  ws_msg *head, *tail;       /* messages not yet received by the script */
  size_t nmsg, msg_bytes;
  lr_waitq readers, writers, closers;
  uv_timer_t timer;          /* closes the stream if the peer never answers our close */
  uint64_t close_timeout;    /* ms */
  int refs;
  uint16_t code;             /* of the close frame received (got_close) */
  char reason[124];
  uint8_t server, got_close, lost, timer_on, pumping, again, failed;
  uint8_t timed_out;         /* our close went unanswered: the close is abnormal (1006) */
  uint8_t bad_frame;         /* a frame wslay could not parse: we closed with 1002 */
  lr_ws *next, **pprev;      /* the live WebSockets (closed with their runtime) */
};

static lr_ws *live;          /* loop thread only */

/* ---- lifetime ---- */

static void ws_free(lr_ws *ws) {
  ws_msg *m;
  while ((m = ws->head) != NULL) {
    ws->head = m->next;
    free(m);
  }
  if (ws->ctx) wslay_event_context_free(ws->ctx);
  if (ws->pprev) {
    *ws->pprev = ws->next;
    if (ws->next) ws->next->pprev = ws->pprev;
  }
  free(ws->in);
  free(ws->out);
  free(ws);
}

static void ws_unref(lr_ws *ws) {
  if (--ws->refs == 0) ws_free(ws);
}

static void wake_all(lr_waitq *q) {
  lr_task *t;
  while ((t = lr_waitq_pop(q)) != NULL) lr_task_wake(t, LR_WAKE_DONE);
}

static void wake_everyone(lr_ws *ws) {
  wake_all(&ws->readers);
  wake_all(&ws->writers);
  wake_all(&ws->closers);
}

/* The runtime closes: streams still open are closed now, so that their close
 * callbacks (which free them) run while the loop settles. */
static void close_all(lr_runtime *rt) {
  lr_ws *ws;
  for (ws = live; ws; ws = ws->next)
    if (ws->rt == rt && ws->s && !ws->s->closing) lr_stream_close(ws->s);
}

/* ---- state ---- */

static int can_read_more(lr_ws *ws) {
  return ws->s && !ws->s->closing && !ws->s->ended && !ws->lost &&
         wslay_event_get_read_enabled(ws->ctx);
}

static int can_send(lr_ws *ws) {
  return ws->s && !ws->s->closing && !ws->s->ended && !ws->lost &&
         !wslay_event_get_close_sent(ws->ctx) && wslay_event_get_write_enabled(ws->ctx);
}

/* Too much received and unread: stop reading (not once we closed: the peer's
 * answer must get through). */
static int full(lr_ws *ws) {
  if (wslay_event_get_close_sent(ws->ctx)) return 0;
  return ws->msg_bytes >= WS_UNREAD_MAX || ws->nmsg >= WS_UNREAD_COUNT;
}

static size_t backlog(lr_ws *ws) {
  return wslay_event_get_queued_msg_length(ws->ctx) + (ws->s ? ws->s->queued : 0);
}

/* ---- wslay callbacks ---- */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *ud) {
  lr_ws *ws = ud;
  size_t n = ws->in_len - ws->in_pos;
  (void)flags;
  if (n == 0 || full(ws)) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (n > len) n = len;
  memcpy(buf, ws->in + ws->in_pos, n);
  ws->in_pos += n;
  if (ws->in_pos == ws->in_len) ws->in_pos = ws->in_len = 0;
  return (ssize_t)n;
}

static int flush_out(lr_ws *ws) {
  uv_buf_t b = uv_buf_init(ws->out, (unsigned)ws->out_len);
  int rc = ws->out_len ? lr_stream_write(ws->s, &b, 1) : 0;
  ws->out_len = 0;
  return rc;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                       int flags, void *ud) {
  lr_ws *ws = ud;
  if (ws->s == NULL || ws->s->closing || ws->s->error) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  /* Between frames, above the watermark: the rest waits in wslay until on_drain. */
  if (ws->out_len == 0 && ws->s->queued > LR_STREAM_HIGH) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (lr_reserve(&ws->out, &ws->out_cap, ws->out_len + len, 4096) < 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  memcpy(ws->out + ws->out_len, data, len);
  ws->out_len += len;
  if ((!(flags & WSLAY_MSG_MORE) || ws->out_len >= WS_OUT_FLUSH) && flush_out(ws) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

static int genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud) {
  (void)ctx, (void)ud;
  return lr_tls_random(buf, len);
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                   void *ud) {
  lr_ws *ws = ud;
  ws_msg *m;
  (void)ctx;
  if (a->opcode == WSLAY_CONNECTION_CLOSE) {
    size_t n = a->msg_length > 2 ? a->msg_length - 2 : 0;
    ws->got_close = 1;
    ws->code = a->status_code ? a->status_code : 1005;
    if (n >= sizeof ws->reason) n = sizeof ws->reason - 1;
    if (n) memcpy(ws->reason, a->msg + 2, n);
    ws->reason[n] = '\0';
    return;
  }
  if (a->opcode != WSLAY_TEXT_FRAME && a->opcode != WSLAY_BINARY_FRAME) return;
  if ((m = malloc(sizeof *m + a->msg_length)) == NULL) {
    wslay_event_queue_close(ctx, 1011, NULL, 0); /* out of memory: give up */
    wslay_event_shutdown_read(ctx);
    return;
  }
  m->next = NULL;
  m->len = a->msg_length;
  m->binary = a->opcode == WSLAY_BINARY_FRAME;
  if (a->msg_length) memcpy(m->data, a->msg, a->msg_length);
  if (ws->tail) ws->tail->next = m;
  else ws->head = m;
  ws->tail = m;
  ws->nmsg++;
  ws->msg_bytes += m->len;
}

/* ---- moving bytes ---- */

static void timer_cb(uv_timer_t *h) {
  lr_ws *ws = h->data;
  /* The peer never answered our close (or never read it): drop the connection. */
  if (ws->s && !ws->s->closing) {
    ws->timed_out = 1;
    lr_stream_close(ws->s);
  }
}

/* wslay_event_recv failed on a frame it cannot parse (a fragmented control frame, one
 * over 125 bytes, a 64-bit length with the top bit set): it queued a close without a
 * code and stopped. When nothing else is queued (no frame half sent), send a 1002
 * close in its place and end the connection; 1 if so. */
static int send_bad_frame_close(lr_ws *ws) {
  uint8_t f[8] = {0x88, 0x02, 0x03, 0xea}, k[4] = {0, 0, 0, 0};
  uv_buf_t b;
  if (ws->s->error || wslay_event_get_close_sent(ws->ctx) ||
      wslay_event_get_queued_msg_count(ws->ctx) != 1)
    return 0;
  b = uv_buf_init((char *)f, 4);
  if (!ws->server) { /* a client's frames are masked */
    (void)lr_tls_random(k, 4);
    f[1] = 0x82;
    memcpy(f + 2, k, 4);
    f[6] = 0x03 ^ k[0];
    f[7] = 0xea ^ k[1];
    b.len = 8;
  }
  wslay_event_shutdown_write(ws->ctx);
  if (lr_stream_write(ws->s, &b, 1) != 0) return 0;
  ws->bad_frame = 1;
  lr_stream_finish(ws->s);
  return 1;
}

/* Runs wslay until it has nothing to do: takes what was received, sends what is
 * queued, closes the stream once both directions are done, and pauses or resumes
 * reading. May be re-entered from lr_stream_read (TLS delivers held data there):
 * the inner call only asks for one more round. */
static void pump(lr_ws *ws) {
  if (ws->pumping) {
    ws->again = 1;
    return;
  }
  ws->pumping = 1;
  do {
    lr_stream *s = ws->s;
    ws->again = 0;
    if (s == NULL || s->closing) break;
    if (ws->in_len > ws->in_pos && wslay_event_want_read(ws->ctx) && !full(ws) &&
        wslay_event_recv(ws->ctx) < 0) {
      ws->failed = 1;
      if (!send_bad_frame_close(ws)) lr_stream_close(s);
      break;
    }
    if (wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx) < 0) {
      ws->failed = 1;
      lr_stream_close(s);
      break;
    }
    if (s->closing) break;
    if (wslay_event_get_close_sent(ws->ctx) && !ws->timer_on) {
      ws->timer_on = 1;
      uv_timer_start(&ws->timer, timer_cb, ws->close_timeout, 0);
    }
    if (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx)) {
      /* Both closes are through (or reading stopped with our close sent). */
      lr_stream_finish(s);
      break;
    }
    if (s->ended) break;
    if (full(ws) || !wslay_event_want_read(ws->ctx)) lr_stream_pause(s);
    else if (!s->reading && lr_stream_read(s) != 0) lr_stream_close(s);
  } while (ws->again);
  ws->pumping = 0;
  if (ws->head || !can_read_more(ws)) wake_all(&ws->readers);
  if (backlog(ws) <= LR_STREAM_HIGH || !can_send(ws)) wake_all(&ws->writers);
}

static void on_data(lr_stream *s, const char *p, size_t n) {
  lr_ws *ws = s->ud;
  if (ws->in_pos > 0 && ws->in_len + n > ws->in_cap) { /* compact first */
    memmove(ws->in, ws->in + ws->in_pos, ws->in_len - ws->in_pos);
    ws->in_len -= ws->in_pos;
    ws->in_pos = 0;
  }
  if (lr_reserve(&ws->in, &ws->in_cap, ws->in_len + n, 16384) < 0) {
    ws->failed = 1;
    lr_stream_close(s);
    return;
  }
  memcpy(ws->in + ws->in_len, p, n);
  ws->in_len += n;
  pump(ws);
}

static void on_end(lr_stream *s, int status) {
  lr_ws *ws = s->ud;
  (void)status;
  ws->lost = 1;
  /* What the peer sent before it went is still processed (its close frame). */
  if (!ws->pumping && ws->in_len > ws->in_pos && wslay_event_want_read(ws->ctx) && !full(ws))
    wslay_event_recv(ws->ctx);
  lr_stream_finish(s);
  wake_everyone(ws);
}

static void on_drain(lr_stream *s) {
  pump(s->ud);
}

static void timer_closed(uv_handle_t *h) {
  ws_unref(h->data);
}

static void on_closed(lr_stream *s) {
  lr_ws *ws = s->ud;
  ws->s = NULL;
  ws->lost = ws->lost || !wslay_event_get_close_received(ws->ctx);
  uv_close((uv_handle_t *)&ws->timer, timer_closed);
  wake_everyone(ws);
  if (ws->release) ws->release(s);
  ws_unref(ws);
}

/* ---- creation ---- */

static const char CLOSER_KEY = 'w';

lr_ws *lr_ws_new(lua_State *L, lr_stream *s, int server, size_t max_message,
                 void (*release)(lr_stream *s)) {
  static const struct wslay_event_callbacks cbs = {recv_cb, send_cb, genmask_cb, NULL,
                                                   NULL, NULL, on_msg};
  lr_runtime *rt = s->rt;
  lr_ws *ws = calloc(1, sizeof *ws);
  int rc;
  if (ws == NULL) return NULL;
  rc = server ? wslay_event_context_server_init(&ws->ctx, &cbs, ws)
              : wslay_event_context_client_init(&ws->ctx, &cbs, ws);
  if (rc != 0) {
    free(ws);
    return NULL;
  }
  wslay_event_config_set_max_recv_msg_length(ws->ctx, max_message ? max_message
                                                                   : LR_WS_MAX_MESSAGE);
  /* Registered once per state: closes what is left open when the runtime goes. */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CLOSER_KEY) == LUA_TNIL) {
    lua_pushboolean(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CLOSER_KEY);
    lr_runtime_on_close(rt, close_all);
  }
  lua_pop(L, 1);
  ws->rt = rt;
  ws->s = s;
  ws->release = release;
  ws->server = (uint8_t)server;
  ws->close_timeout = LR_WS_CLOSE_TIMEOUT_MS;
  ws->refs = 3; /* the userdata, the stream, the timer */
  uv_timer_init(&rt->loop, &ws->timer);
  ws->timer.data = ws;
  if ((ws->next = live) != NULL) live->pprev = &ws->next;
  live = ws;
  ws->pprev = &live;
  s->ud = ws;
  s->on_data = on_data;
  s->on_end = on_end;
  s->on_drain = on_drain;
  s->on_closed = on_closed;
  return ws;
}

void lr_ws_set_close_timeout(lr_ws *ws, uint64_t ms) {
  ws->close_timeout = ms;
}

/* Pushes a userdata box for ws (the luarun.WebSocket class of bindings/websocket.c). */
static void push_box(lua_State *L, lr_ws *ws) {
  lr_ws **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = ws;
  luaL_setmetatable(L, LR_WS_MT);
}

int lr_ws_start(lua_State *L, lr_ws *ws, const char *tail, size_t n) {
  push_box(L, ws);
  if (n > 0) on_data(ws->s, tail, n); /* bytes that came with the handshake */
  else pump(ws);
  return 1;
}

int lr_ws_adopt(lua_State *L, lr_stream *s, int server, const char *tail, size_t n,
                size_t max_message, void (*release)(lr_stream *s)) {
  lr_ws *ws;
  luaL_checkstack(L, 4, NULL);
  if (luaL_getmetatable(L, LR_WS_MT) != LUA_TTABLE)
    luaL_error(L, "websocket: the luarun.WebSocket class is not registered");
  lua_pop(L, 1);
  if ((ws = lr_ws_new(L, s, server, max_message, release)) == NULL)
    luaL_error(L, "websocket: not enough memory");
  return lr_ws_start(L, ws, tail, n);
}

/* ---- what the script calls (bindings/websocket.c checks the arguments) ---- */

void lr_ws_push_closed(lua_State *L, lr_ws *ws) {
  int code = 1006;
  const char *reason = "";
  if (ws->got_close) {
    code = ws->code;
    reason = ws->reason;
  } else if (ws->bad_frame) {
    code = 1002;
  } else if (wslay_event_get_close_sent(ws->ctx) && !ws->failed && !ws->timed_out) {
    code = wslay_event_get_status_code_sent(ws->ctx);
    if (code == 0) code = 1005;
  }
  lua_pushnil(L);
  lr_error_push(L, "closed", lua_pushfstring(L, "the WebSocket is closed (code %d%s%s)",
                                              code, *reason ? ": " : "", reason));
  lua_remove(L, -2);
  lua_pushinteger(L, code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, reason);
  lua_setfield(L, -2, "reason");
}

static void describe_receive(lua_State *L, lr_task *t) {
  (void)t;
  lua_pushliteral(L, "WebSocket:receive, no message yet");
}

static void describe_send(lua_State *L, lr_task *t) {
  (void)t;
  lua_pushliteral(L, "WebSocket:send, waiting for the peer to read");
}

static void describe_close(lua_State *L, lr_task *t) {
  (void)t;
  lua_pushliteral(L, "WebSocket:close, waiting for the close handshake");
}

static int receive_k(lua_State *L, int status, lua_KContext ctx) {
  lr_ws *ws = (lr_ws *)ctx;
  lr_task *t = lr_task_self(L);
  ws_msg *m;
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  if ((m = ws->head) != NULL) {
    int was_full = full(ws);
    lua_pushlstring(L, m->data, m->len); /* may raise: m stays queued until it is in */
    lua_pushstring(L, m->binary ? "binary" : "text");
    if ((ws->head = m->next) == NULL) ws->tail = NULL;
    ws->nmsg--;
    ws->msg_bytes -= m->len;
    free(m);
    if (was_full && !full(ws)) pump(ws);
    return 2;
  }
  if (!can_read_more(ws)) {
    lr_ws_push_closed(L, ws);
    return 2;
  }
  lr_waitq_push(&ws->readers, t);
  pump(ws); /* reading may have been paused */
  return lr_task_park_on(L, t, NULL, describe_receive, ctx, receive_k);
}

int lr_ws_receive(lua_State *L, lr_ws *ws) {
  lr_task *t = lr_task_enter(L, "WebSocket:receive");
  t->wake = LR_WAKE_NONE;
  return receive_k(L, LUA_OK, (lua_KContext)ws);
}

/* Stack: the data to send at index 2, the opcode in the continuation's context. */
static int send_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = lr_task_self(L);
  lr_ws *ws = *(lr_ws **)lua_touserdata(L, 1);
  struct wslay_event_msg msg;
  size_t len;
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  if (ws == NULL || !can_send(ws)) {
    if (ws == NULL) return lr_error_fail(L, "closed", "the WebSocket is closed");
    lr_ws_push_closed(L, ws);
    return 2;
  }
  if (backlog(ws) > LR_STREAM_HIGH) {
    lr_waitq_push(&ws->writers, t);
    return lr_task_park_on(L, t, NULL, describe_send, ctx, send_k);
  }
  msg.opcode = (uint8_t)ctx;
  msg.msg = (const uint8_t *)lua_tolstring(L, 2, &len);
  msg.msg_length = len;
  if (wslay_event_queue_msg(ws->ctx, &msg) != 0) {
    lr_ws_push_closed(L, ws);
    return 2;
  }
  pump(ws);
  lua_pushboolean(L, 1);
  return 1;
}

int lr_ws_send(lua_State *L, lr_ws *ws, int binary) {
  lr_task *t = lr_task_enter(L, binary ? "WebSocket:send_binary" : "WebSocket:send");
  (void)ws;
  t->wake = LR_WAKE_NONE;
  return send_k(L, LUA_OK, binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME);
}

int lr_ws_ping(lua_State *L, lr_ws *ws, const char *p, size_t n) {
  struct wslay_event_msg msg = {WSLAY_PING, (const uint8_t *)p, n};
  if (!can_send(ws) || wslay_event_queue_msg(ws->ctx, &msg) != 0) {
    lr_ws_push_closed(L, ws);
    return 2;
  }
  pump(ws);
  lua_pushboolean(L, 1);
  return 1;
}

static int close_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = lr_task_self(L);
  lr_ws *ws = (lr_ws *)ctx;
  (void)status;
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  if (ws->s) {
    lr_waitq_push(&ws->closers, t);
    return lr_task_park_on(L, t, NULL, describe_close, ctx, close_k);
  }
  lua_pushboolean(L, 1);
  return 1;
}

int lr_ws_close(lua_State *L, lr_ws *ws, int code, const char *reason, size_t n) {
  lr_task *t = lr_task_enter(L, "WebSocket:close");
  lr_ws_close_now(ws, code, reason, n);
  t->wake = LR_WAKE_NONE;
  return close_k(L, LUA_OK, (lua_KContext)ws);
}

void lr_ws_close_now(lr_ws *ws, int code, const char *reason, size_t n) {
  if (ws->s == NULL || ws->s->closing) return;
  if (ws->lost || ws->s->ended) {
    lr_stream_finish(ws->s);
    return;
  }
  if (!wslay_event_get_close_sent(ws->ctx))
    wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)reason, n);
  pump(ws);
}

void lr_ws_drop(lr_ws *ws) {
  /* The userdata is collected: close without waiting (a close frame if we can). */
  lr_ws_close_now(ws, 1001, NULL, 0);
  if (ws->s && !ws->s->closing) lr_stream_finish(ws->s);
  ws_unref(ws);
}

int lr_ws_is_open(lr_ws *ws) {
  return can_send(ws);
}
