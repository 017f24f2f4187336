/* lr_prims.h: the primitives, built on the scheduler: gather, map and timeout
 * (group.c), scope, race and as_completed (scope.c), Semaphore, Lock, Event,
 * RateLimit (sync.c) and Queue (queue.c).
 */
#ifndef LR_PRIMS_H
#define LR_PRIMS_H

#include "lr_sched.h"

/* ---- group.c: tasks owning tasks (the Lua functions lr.gather/map/timeout) ---- */
int lr_gather(lua_State *L);
int lr_map(lua_State *L);
int lr_timeout(lua_State *L);

/* True if the value at idx is a function or has __call. */
int lr_is_callable(lua_State *L, int idx);
/* Checks item i of a group (at idx): a function, or a task no group owns yet. Raises
 * naming fname (arg: as argument i, else as item i of a list). */
void lr_check_child(lua_State *L, lr_runtime *rt, int idx, const char *fname, lua_Integer i,
                    int arg);
/* Cancels every live task that o owns. */
void lr_owner_cancel_children(lr_runtime *rt, lr_owner *o);

/* ---- scope.c: structured groups (the Lua functions lr.scope/race/as_completed) ---- */
int lr_scope(lua_State *L);
int lr_race(lua_State *L);
int lr_as_completed(lua_State *L);
void lr_scope_register(lua_State *L);

/* ---- sync.c and queue.c: Semaphore, Lock, Event, RateLimit, Queue ---- */
/* Sets the constructors on the luarun module table at the top of L's stack. */
void lr_sync_install(lua_State *L);
void lr_queue_install(lua_State *L);

#endif
