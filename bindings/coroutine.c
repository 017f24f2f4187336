/* coroutine.c: luarun waits inside coroutines that the script creates itself.
 *
 * A luarun wait yields a sentinel value. The replacements of coroutine.resume and
 * coroutine.wrap installed here look at what the inner coroutine yielded: a normal
 * value goes back to the caller as usual, while the sentinel is passed further up,
 * so the whole task parks; when the scheduler resumes the task, the continuation
 * resumes the inner coroutine again, right where it waited. This is how a generator
 * written with coroutine.wrap can sleep or fetch between its own yields (OpenResty
 * wraps coroutines for the same reason).
 *
 * While an inner coroutine runs for a task, its extra space points to that task (the
 * low bit set when the resumer itself cannot yield), and it is cleared again when the
 * coroutine yields normally, returns or fails: a pointer there is never stale.
 */
#include "bindings.h"

#define SLOT(co) (*(uintptr_t *)lua_getextraspace(co))

/* Resumes co with the narg values on top of L, passing luarun parks through.
 * base: stack size of L that is not the caller's arguments; wrap: wrap semantics. */
static int resume_loop(lua_State *L, lua_State *co, int narg, int wrap);

static int resume_k(lua_State *L, int status, lua_KContext ctx) {
  int wrap = (int)(ctx & 1);
  int base = wrap ? 0 : 1;
  lua_State *co = wrap ? lua_tothread(L, lua_upvalueindex(1)) : lua_tothread(L, 1);
  (void)status;
  return resume_loop(L, co, lua_gettop(L) - base, wrap);
}

static int resume_loop(lua_State *L, lua_State *co, int narg, int wrap) {
  uintptr_t task = SLOT(L) & ~(uintptr_t)1;
  int yieldable = task && lua_isyieldable(L) && !(SLOT(L) & 1);
  lr_runtime *rt = task ? ((lr_task *)task)->rt : NULL;
  lua_State *outer = NULL;
  int status, nres;
  if (!lua_checkstack(co, narg)) {
    lua_pushliteral(L, "too many arguments to resume");
    goto fail;
  }
  lua_xmove(L, co, narg);
  SLOT(co) = task ? (yieldable ? task : task | 1) : 0;
  if (rt) {
    outer = rt->running_co;
    rt->running_co = co;
  }
  status = lua_resume(co, L, narg, &nres);
  if (rt) rt->running_co = outer;
  if (status == LUA_YIELD && nres == 1 && lua_touserdata(co, -1) == LR_SENTINEL &&
      yieldable) {
    lua_pop(co, 1); /* the task parks, with co still marked as running for it */
    lua_pushlightuserdata(L, LR_SENTINEL);
    return lua_yieldk(L, 1, wrap, resume_k);
  }
  SLOT(co) = 0;
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushliteral(L, "too many results to resume");
      goto fail;
    }
    if (!wrap) lua_pushboolean(L, 1);
    lua_xmove(co, L, nres);
    return nres + !wrap;
  }
  /* The coroutine failed. */
  if (wrap) {
    int st = lua_resetthread(co); /* close its pending <close> variables */
    lua_xmove(co, L, 1);
    if (st != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    return lua_error(L);
  }
  lua_xmove(co, L, 1);
fail:
  if (wrap) return lua_error(L);
  lua_pushboolean(L, 0);
  lua_insert(L, -2);
  return 2;
}

static lua_State *check_free(lua_State *L, lua_State *co, const char *fname) {
  if (SLOT(co) != 0 && co != L)
    luaL_error(L, "%s: cannot resume a coroutine that is a luarun task or is waiting "
               "inside a luarun call", fname);
  return co;
}

static int co_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  check_free(L, co, "resume");
  return resume_loop(L, co, lua_gettop(L) - 1, 0);
}

static int co_wrapped(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  check_free(L, co, "wrap");
  return resume_loop(L, co, lua_gettop(L), 1);
}

static int co_wrap(lua_State *L) {
  lua_State *co;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = lua_newthread(L);
  SLOT(co) = 0;
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, co_wrapped, 1);
  return 1;
}

static int co_create(lua_State *L) {
  lua_State *co;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = lua_newthread(L);
  SLOT(co) = 0; /* new threads copy the main thread's slot: start clean */
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  return 1;
}

static int co_yield(lua_State *L) {
  uintptr_t v = SLOT(L);
  if (v && !(v & 1) && ((lr_task *)v)->co == L)
    return luaL_error(L, "yield: a task's own function cannot coroutine.yield (there is "
                      "no caller to yield to); use lr.sleep(0) to let other tasks run");
  return lua_yield(L, lua_gettop(L));
}

static int co_close(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine");
  check_free(L, co, "close");
  lua_pushvalue(L, lua_upvalueindex(1)); /* the original coroutine.close */
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

void lr_coroutine_patch(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"resume", co_resume}, {"wrap", co_wrap}, {"create", co_create},
    {"yield", co_yield}, {NULL, NULL}
  };
  lua_getglobal(L, "coroutine");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "resume");
  if (lua_tocfunction(L, -1) == co_resume) { /* already patched */
    lua_pop(L, 2);
    return;
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, fns, 0);
  lua_getfield(L, -1, "close");
  lua_pushcclosure(L, co_close, 1);
  lua_setfield(L, -2, "close");
  lua_pop(L, 1);
}
