/* test_alloc.c: the executable's Lua allocator (alloc.c). Blocks of every size, grown
 * and shrunk across the small classes and into malloc's sizes and back, must keep
 * their bytes and never overlap; a Lua state on it must run a garbage-heavy script
 * and give everything back when it closes (the ASan run checks for leaks). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <lualib.h>
#include "luarun.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", \
                                   __FILE__, __LINE__, #c); exit(1); } } while (0)
#define NB 3000

static unsigned rng = 12345;
static unsigned next_rand(void) {
  rng = rng * 1103515245u + 12345u;
  return rng >> 8;
}

/* A size: mostly small, some at the class edges, some past LR_ALLOC_SMALL_MAX. */
static size_t some_size(void) {
  unsigned r = next_rand() % 10;
  if (r < 6) return 1 + next_rand() % 200;
  if (r < 8) return LR_ALLOC_SMALL_MAX - 16 + next_rand() % 33; /* 1008..1040 */
  return 1 + next_rand() % (3 * LR_ALLOC_SMALL_MAX);
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
  size_t i;
  for (i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 7);
}

static int holds(const unsigned char *p, size_t n, unsigned seed) {
  size_t i;
  for (i = 0; i < n; i++)
    if (p[i] != (unsigned char)(seed + i * 7)) return 0;
  return 1;
}

int main(void) {
  static unsigned char *blk[NB];
  static size_t len[NB];
  lua_State *L = lr_alloc_newstate();
  lua_Alloc f;
  void *ud;
  int i, round;
  CHECK(L != NULL);
  CHECK(lr_alloc_is_ours(L));
  CHECK(!lr_alloc_takes_block(L, LR_ALLOC_SMALL_MAX));
  CHECK(lr_alloc_takes_block(L, LR_ALLOC_SMALL_MAX + 1));
  f = lua_getallocf(L, &ud);

  /* Random allocations, resizes (the bytes kept, up to the smaller size) and frees. */
  for (round = 0; round < 40; round++) {
    for (i = 0; i < NB; i++) {
      unsigned op = next_rand() % 3;
      if (blk[i] == NULL) {
        len[i] = some_size();
        blk[i] = f(ud, NULL, LUA_TTABLE, len[i]);
        CHECK(blk[i] != NULL);
        fill(blk[i], len[i], (unsigned)i);
      } else if (op == 0) {
        size_t n = some_size(), keep = n < len[i] ? n : len[i];
        unsigned char *p = f(ud, blk[i], len[i], n);
        CHECK(p != NULL);
        CHECK(holds(p, keep, (unsigned)i));
        blk[i] = p;
        len[i] = n;
        fill(blk[i], len[i], (unsigned)i);
      } else if (op == 1) {
        CHECK(holds(blk[i], len[i], (unsigned)i)); /* nobody else wrote over it */
        CHECK(f(ud, blk[i], len[i], 0) == NULL);
        blk[i] = NULL;
      }
    }
  }
  for (i = 0; i < NB; i++) {
    if (blk[i] == NULL) continue;
    CHECK(holds(blk[i], len[i], (unsigned)i));
    f(ud, blk[i], len[i], 0);
  }

  /* A freed block of a class comes back for the next request of that class. */
  {
    void *a = f(ud, NULL, 0, 100), *b;
    f(ud, a, 100, 0);
    b = f(ud, NULL, 0, 97);
    CHECK(a == b);
    f(ud, b, 97, 0);
  }

  /* A Lua program on it: garbage of every size, strings crossing SMALL_MAX. */
  luaL_openlibs(L);
  CHECK(luaL_dostring(L,
    "local keep = {}\n"
    "for i = 1, 20000 do\n"
    "  local t = {i, tostring(i), string.rep('x', i % 1500)}\n"
    "  local co = coroutine.wrap(function(a) coroutine.yield(a * 2) return a end)\n"
    "  assert(co(i) == i * 2)\n"
    "  if i % 100 == 0 then keep[#keep + 1] = t end\n"
    "end\n"
    "collectgarbage()\n"
    "for k, t in ipairs(keep) do\n"
    "  assert(t[1] == k * 100 and t[2] == tostring(k * 100) and #t[3] == (k * 100) % 1500)\n"
    "end\n"
    "return #keep") == LUA_OK);
  CHECK(lua_tointeger(L, -1) == 200);
  lr_alloc_close(L);
  printf("alloc: ok\n");
  return 0;
}
