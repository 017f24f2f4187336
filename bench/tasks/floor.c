/* floor.c: the same work as luarun_gather.lua with nothing but lua5.4 and libuv, the
 * least a runtime built on them can cost. A Lua loop spawns N coroutines with a C
 * function (lua_newthread, the function moved onto it, queued in a C array); the
 * tasks table the script keeps anchors them. Then each is resumed once: `sleep(1)` is
 * a C function that appends the coroutine and its deadline (uv_hrtime() + 1 s, as
 * precise as luarun's) to a FIFO and yields. One uv_timer_t wakes the FIFO's due
 * head; each due coroutine is resumed to its end. The run ends when all have ended.
 * No task objects, no scheduler, no error handling beyond asserting success.
 *
 *   cc -O2 floor.c $(pkg-config --cflags --libs lua5.4 libuv) -o floor
 *   ./floor N [system|stop]   prints "spawn=<s> wall=<s>"
 *
 * "stop" stops Lua's collector for the whole run (what GC costs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <lualib.h>
#include <uv.h>

typedef struct sleeper {
  lua_State *co;
  uint64_t deadline;
} sleeper;

static lua_State **ready;
static size_t nready;
static sleeper *fifo;
static size_t fhead, ftail, done, total;
static uv_loop_t *loop;
static uv_timer_t timer;
static lua_State *mainL;

static int l_spawn(lua_State *L) {
  lua_State *co = lua_newthread(L); /* fn co */
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  ready[nready++] = co;
  return 1;                         /* the thread is the task handle */
}

static void arm(void);

static int l_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  fifo[ftail].co = L;
  fifo[ftail].deadline = uv_hrtime() + (uint64_t)(s * 1e9);
  if (ftail++ == fhead) arm();
  return lua_yield(L, 0);
}

static void resume(lua_State *co) {
  int nres, st = lua_resume(co, mainL, 0, &nres);
  if (st == LUA_OK) {
    done++;
    if (done == total) uv_stop(loop);
  } else if (st != LUA_YIELD) {
    fprintf(stderr, "error: %s\n", lua_tostring(co, -1));
    exit(1);
  }
}

static void timer_cb(uv_timer_t *h) {
  uint64_t now = uv_hrtime();
  (void)h;
  while (fhead < ftail && fifo[fhead].deadline <= now) resume(fifo[fhead++].co);
  if (fhead < ftail) arm();
}

static void arm(void) {
  uint64_t now = uv_hrtime(), due = fifo[fhead].deadline;
  uv_update_time(loop);
  uv_timer_start(&timer, timer_cb, due > now ? (due - now + 999999) / 1000000 : 0, 0);
}

static const char script[] =
  "local spawn, sleep, now, N = ...\n"
  "local function work() sleep(1) end\n"
  "local t0 = now()\n"
  "local tasks = {}\n"
  "for i = 1, N do tasks[i] = spawn(work) end\n"
  "return tasks, t0, now()\n";

static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000;
  double t0, t1, t2;
  size_t i;
  lua_State *L = luaL_newstate();
  if (argc > 2 && strcmp(argv[2], "stop") == 0) lua_gc(L, LUA_GCSTOP);
  luaL_openlibs(L);
  mainL = L;
  total = (size_t)n;
  ready = malloc(sizeof *ready * total);
  fifo = malloc(sizeof *fifo * total);
  loop = uv_default_loop();
  uv_timer_init(loop, &timer);
  if (luaL_loadstring(L, script) != LUA_OK) return 1;
  lua_pushcfunction(L, l_spawn);
  lua_pushcfunction(L, l_sleep);
  lua_pushcfunction(L, l_now);
  lua_pushinteger(L, n);
  if (lua_pcall(L, 4, 3, 0) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  t0 = lua_tonumber(L, -2);
  t1 = lua_tonumber(L, -1);
  lua_pop(L, 2);                     /* the tasks table stays on the stack */
  for (i = 0; i < nready; i++) resume(ready[i]);
  uv_run(loop, UV_RUN_DEFAULT);
  t2 = (double)uv_hrtime() / 1e9;
  printf("spawn=%.3f wall=%.3f\n", t1 - t0, t2 - t0);
  uv_close((uv_handle_t *)&timer, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  lua_close(L);
  free(ready);
  free(fifo);
  return 0;
}
