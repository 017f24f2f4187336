/* lr_prims.h: the primitives, built on the scheduler: gather, map and timeout
 * (group.c), scope, race and as_completed (scope.c), Semaphore, Lock, Event,
 * RateLimit (sync.c) and Queue (queue.c); the progress line of gather and map
 * (progress.c).
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

/* ---- progress.c: the progress line of gather and map (opts.progress) ----
 * One line on stderr, drawn only when stderr is a terminal, one per process: while a
 * group draws it, the others get NULL and draw nothing. Loop thread only. */
typedef struct lr_progress lr_progress;
#define LR_PROGRESS_LABEL_MAX 64 /* bytes of a label kept; longer ones are cut */
enum { LR_PROGRESS_DONE = 0, LR_PROGRESS_FAILED, LR_PROGRESS_CANCELLED };
/* Reads opts.progress of the table at idx into *label (LR_PROGRESS_LABEL_MAX + 1 bytes,
 * "" unless a string was given). 1 if wanted (true or a string), 0 if absent or false;
 * raises naming fname for any other type. */
int lr_progress_opt(lua_State *L, int idx, const char *fname, char *label);
/* Draws the line for a group of total items, or returns NULL when not drawing (stderr
 * not a terminal, the line taken). Never raises. */
lr_progress *lr_progress_start(lr_runtime *rt, const char *label, uint32_t total);
/* One item ended (failed: it raised). p may be NULL. */
void lr_progress_step(lr_progress *p, int failed);
/* Draws the final line (totals, elapsed time, how it ended: LR_PROGRESS_*), a newline,
 * and gives the line up. p may be NULL. */
void lr_progress_end(lr_progress *p, int outcome);

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
