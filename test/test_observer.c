/* test_observer.c: a new observer hooks into the scheduler without touching it, and a
 * new kind of wait is observed because it describes itself. An observer that counts
 * events is registered on a fresh runtime; a script spawns tasks that sleep and one
 * C function parks on a wait of a kind nobody has heard of ("ticket"). Every spawn
 * must be seen once, resumes and yields must pair, every task must be seen done, and
 * the ticket wait must arrive with its kind, name and arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "luarun.h"
#include "bindings.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", \
                                   __FILE__, __LINE__, #c); exit(1); } } while (0)

typedef struct counts {
  int spawn, resume, yield, done, waits, sleeps, tickets, wait_ends, run_ends, closed;
  int running;           /* resumed and not yet yielded */
  char ticket_name[64];
  double ticket_number;
} counts;

static const char id = 'c';

static void on_spawn(void *ud, lr_task *t) { (void)t; ((counts *)ud)->spawn++; }
static void on_done(void *ud, lr_task *t) { (void)t; ((counts *)ud)->done++; }

static void on_resume(void *ud, lr_task *t) {
  counts *c = ud;
  (void)t;
  CHECK(c->running == 0); /* one task runs at a time */
  c->running = 1;
  c->resume++;
}

static void on_yield(void *ud, lr_task *t) {
  counts *c = ud;
  (void)t;
  CHECK(c->running == 1);
  c->running = 0;
  c->yield++;
}

static void on_wait(void *ud, lr_task *t, const lr_wait_desc *d) {
  counts *c = ud;
  CHECK(t != NULL && d->kind != NULL);
  c->waits++;
  if (strcmp(d->kind, "sleep") == 0) c->sleeps++;
  if (strcmp(d->kind, "ticket") == 0) {
    c->tickets++;
    snprintf(c->ticket_name, sizeof c->ticket_name, "%s", d->name);
    CHECK(d->nargs == 2);
    CHECK(strcmp(d->args[0].key, "counter") == 0 && strcmp(d->args[0].s, "window 3") == 0);
    c->ticket_number = d->args[1].n;
  }
}

static void on_wait_end(void *ud, lr_task *t, const lr_wait_desc *d) {
  (void)t;
  CHECK(strcmp(d->kind, "ticket") == 0);
  ((counts *)ud)->wait_ends++;
}

static void on_run_end(void *ud, lr_runtime *rt) { (void)rt; ((counts *)ud)->run_ends++; }
static void on_close(void *ud, lr_runtime *rt) { (void)rt; ((counts *)ud)->closed++; }

/* take_ticket(): a made-up subsystem's wait. It describes itself, parks, and is
 * woken (here at once, through the ready queue) with an outcome. */
static int ticket_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = (lr_task *)ctx;
  lr_wait_desc d = {"ticket", "take a ticket", 0, 0, 0, {{0}}};
  (void)status;
  d.start = 1; /* it has an outcome to tell */
  d.end = uv_hrtime();
  LR_HOOK(t->rt, wait_end, t, &d);
  lua_pushinteger(L, 42);
  return 1;
}

static int take_ticket(lua_State *L) {
  lr_task *t = lr_task_enter(L, "take_ticket");
  if (lr_observed(t->rt)) {
    lr_wait_desc d = {"ticket", "take a ticket", 0, 0, 0, {{0}}};
    lr_wait_str(&d, "counter", "window 3");
    lr_wait_num(&d, "number", 17, 1);
    lr_hooks_wait(t->rt, t, &d);
  }
  lr_task_wake(t, LR_WAKE_DONE);
  return lr_task_park(L, t, NULL, (lua_KContext)t, ticket_k);
}

static const char SCRIPT[] =
  "local lr = require 'luarun'\n"
  "local got = lr.gather(function() lr.sleep(0.01) return 1 end,\n"
  "                      function() lr.sleep(0.02) return 2 end,\n"
  "                      function() return take_ticket() end)\n"
  "assert(got == 1)\n"
  "return take_ticket()\n";

int main(void) {
  counts c;
  lr_observer o = {&id, NULL, on_spawn, on_resume, on_yield, on_wait, on_wait_end, on_done,
                   on_run_end, on_close};
  lua_State *L = luaL_newstate();
  lr_runtime *rt;
  int nres = 0;
  memset(&c, 0, sizeof c);
  o.ud = &c;
  CHECK(L != NULL);
  luaL_openlibs(L);
  luaL_requiref(L, "luarun", luaopen_luarun, 0);
  lua_pop(L, 1);
  rt = lr_runtime_get(L);
  CHECK(rt->nobs == 0);
  CHECK(lr_observer_add(rt, &o) == 0);
  CHECK(lr_observer_ud(rt, &id) == &c);
  lua_register(L, "take_ticket", take_ticket);
  CHECK(luaL_loadstring(L, SCRIPT) == LUA_OK);
  CHECK(lr_runtime_run_main(L, rt, 0, &nres) == LUA_OK);
  CHECK(nres == 1 && lua_tointeger(L, -1) == 42);
  lua_pop(L, 1);
  /* The main task and gather's three children. */
  CHECK(c.spawn == 4);
  CHECK(c.done == 4);
  CHECK(c.resume == c.yield && c.resume >= 4 && c.running == 0);
  CHECK(c.sleeps == 2);
  CHECK(c.tickets == 2 && c.wait_ends == 2);
  CHECK(strcmp(c.ticket_name, "take a ticket") == 0 && c.ticket_number == 17);
  CHECK(c.run_ends == 1);
  /* Removed, it hears nothing more. */
  lr_observer_remove(rt, &id);
  CHECK(rt->nobs == 0 && lr_observer_ud(rt, &id) == NULL);
  CHECK(luaL_loadstring(L, "require('luarun').sleep(0.001)") == LUA_OK);
  CHECK(lr_runtime_run_main(L, rt, 0, &nres) == LUA_OK);
  CHECK(c.spawn == 4 && c.run_ends == 1);
  CHECK(lr_observer_add(rt, &o) == 0);
  lua_close(L); /* the runtime closes: its observers hear it once */
  CHECK(c.closed == 1);
  printf("test_observer: ok\n");
  return 0;
}
