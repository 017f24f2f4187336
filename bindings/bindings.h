/* bindings.h: private header of bindings/, the Lua modules built on core/. */
#ifndef LUARUN_BINDINGS_H
#define LUARUN_BINDINGS_H

#include "../core/luarun.h"

/* coroutine.c: makes luarun waits work inside the script's own coroutines. */
void lr_coroutine_patch(lua_State *L);

/* One luaopen_ per module: the shape of every Lua library. */
int luaopen_luarun(lua_State *L);

#endif
