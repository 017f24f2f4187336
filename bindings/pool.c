/* pool.c: lr.run_in_pool and lr.pool_size, the Lua face of core/pool.c.
 *
 * Everything the caller can get wrong is checked here, on the caller's thread, before
 * the job exists: the function (a Lua function whose only upvalue may be _ENV, or a
 * "module.function" name) and every argument (copy.c names the path of one that
 * cannot cross). The bytecode of each function is dumped once and kept in a weak
 * table, so calling the same function 10,000 times dumps it once; each worker in turn
 * compiles each distinct bytecode once (core/pool.c).
 */
#include <stdlib.h>
#include <string.h>
#include "bindings.h"

#define RT(L) ((lr_runtime *)lua_touserdata(L, lua_upvalueindex(1)))

static const char DUMPS_KEY = 'd';

typedef struct dumpstate {
  int init;
  luaL_Buffer b;
} dumpstate;

/* As lstrlib's str_dump: the buffer starts at the first write, since luaL_buffinit
 * pushes a placeholder and lua_dump wants the function on top when it starts. */
static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  dumpstate *d = ud;
  if (!d->init) {
    d->init = 1;
    luaL_buffinit(L, &d->b);
  }
  luaL_addlstring(&d->b, p, n);
  return 0;
}

/* Refuses upvalues other than _ENV, naming the first one found. */
static void check_upvalues(lua_State *L, int idx) {
  const char *name;
  int i;
  for (i = 1; (name = lua_getupvalue(L, idx, i)) != NULL; i++) {
    lua_pop(L, 1);
    if (strcmp(name, "_ENV") == 0) continue;
    if (*name == '\0' || *name == '(')
      luaL_error(L, "run_in_pool: the function has upvalue %d (its name was stripped): a "
                 "pooled function may use only globals and its arguments", i);
    luaL_error(L, "run_in_pool: the function uses upvalue '%s' (a local of an enclosing "
               "function): pass it as an argument instead, only globals (_ENV) cross "
               "to the worker", name);
  }
}

/* Pushes the bytecode of the Lua function at idx, dumped once per function. */
static void push_bytecode(lua_State *L, int idx) {
  dumpstate d;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &DUMPS_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &DUMPS_KEY);
  }                                                 /* dumps */
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TSTRING) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  check_upvalues(L, idx);
  lua_pushvalue(L, idx);                            /* dumps fn */
  d.init = 0;
  /* Debug information is kept, so errors in the worker name lines. */
  if (lua_dump(L, dump_writer, &d, 0) != 0 || !d.init)
    luaL_error(L, "run_in_pool: cannot dump the function");
  luaL_pushresult(&d.b);                            /* dumps fn code */
  lua_pushvalue(L, -1);
  lua_insert(L, -3);                                /* dumps code fn code */
  lua_rawset(L, -4);
  lua_remove(L, -2);                                /* code */
}

/* lr.run_in_pool(fn | "module.function", ...) -> fn(...)'s results, from a worker. */
static int l_run_in_pool(lua_State *L) {
  int nargs = lua_gettop(L) - 1, kind;
  lr_task *t;
  lr_copybuf code, args;
  size_t n;
  const char *s;
  if (lua_type(L, 1) == LUA_TSTRING) {
    const char *dot;
    s = lua_tolstring(L, 1, &n);
    dot = strrchr(s, '.');
    if (dot == NULL || dot == s || dot[1] == '\0' || strlen(s) != n)
      return luaL_argerror(L, 1, "expected a function or a \"module.function\" name");
    kind = LR_POOL_NAME;
  } else if (lua_type(L, 1) == LUA_TFUNCTION) {
    if (lua_iscfunction(L, 1))
      return luaL_argerror(L, 1, "a C function cannot be copied to a worker (pass a Lua "
                           "function, or a \"module.function\" name)");
    kind = LR_POOL_CODE;
  } else {
    return luaL_typeerror(L, 1, "function or \"module.function\" name");
  }
  if (nargs < 0) nargs = 0;
  t = lr_task_enter(L, "run_in_pool");
  luaL_checkstack(L, 8, "run_in_pool");
  /* The worker reads the code, the arguments and long string arguments where they
   * are: this frame's slots keep them alive while the task is parked, and a cancel
   * waits until the worker has read them. Nothing here needs freeing if a raise
   * (a function among the arguments) unwinds the frame. */
  if (kind == LR_POOL_CODE) push_bytecode(L, 1);     /* fn args... code */
  else lua_pushvalue(L, 1);
  s = lua_tolstring(L, -1, &n);
  code.p = (char *)s;
  code.n = code.cap = n;
  code.where = LR_BUF_BORROWED;
  lua_pushnil(L);                                    /* fn args... code anchor */
  lr_copybuf_lua(L, &args, 64);                      /* fn args... code anchor buf */
  lr_copy_encode_refs(L, 2, nargs, &args, "run_in_pool", "args", lua_gettop(L) - 1);
  return lr_pool_call(L, t, kind, &code, &args);
}

/* lr.pool_size([n [, opts]]) -> n: sets the number of workers (and opts.memory_limit,
 * bytes per worker state) before the pool's first use; returns the size. */
static int l_pool_size(lua_State *L) {
  lr_runtime *rt = RT(L);
  lua_Integer n = 0;
  lua_Number mem = 0;
  if (!lua_isnoneornil(L, 1)) {
    n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 1024, 1, "must be between 1 and 1024");
  }
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "memory_limit") != LUA_TNIL) {
      mem = luaL_checknumber(L, -1);
      luaL_argcheck(L, mem >= 0, 2, "memory_limit must be a number of bytes");
    }
    lua_pop(L, 1);
  }
  if ((n || mem > 0) && lr_pool_configure(rt, (unsigned)n, (size_t)mem) != 0)
    return luaL_error(L, "pool_size: the pool has already started with %d workers; set "
                      "its size before the first run_in_pool", (int)lr_pool_size(rt));
  lua_pushinteger(L, (lua_Integer)lr_pool_size(rt));
  return 1;
}

static const luaL_Reg funcs[] = {
  {"run_in_pool", l_run_in_pool},
  {"pool_size", l_pool_size},
  {NULL, NULL}
};

int lr_pool_install(lua_State *L) {
  lua_pushlightuserdata(L, lr_runtime_get(L));
  luaL_setfuncs(L, funcs, 1);
  return 0;
}
