/* lr_observe.h: the observers, on top of the scheduler and registered with it:
 * the timeline (trace.c, --trace), the blocked-loop watchdog (watchdog.c, --debug),
 * and lr.tasks() with the SIGQUIT task dump (tasks.c). Nothing below includes this.
 */
#ifndef LR_OBSERVE_H
#define LR_OBSERVE_H

#include "lr_sched.h"

/* ---- observers: trace.c (--trace, LUARUN_TRACE) and watchdog.c (--debug) ---- */
/* Reads LUARUN_TRACE, LUARUN_DEBUG and LUARUN_DEBUG_MS (luaopen_luarun). */
void lr_observe_init(lr_runtime *rt);
/* Starts tracing into path (.html: a waterfall page, else Chrome trace JSON). Returns
 * 0, or -1 if out of memory. The file is written at the end of each run. */
int lr_trace_open(lr_runtime *rt, const char *path);
/* Starts the blocked-loop watchdog: reports runs longer than ms without a yield.
 * Returns 0, or -1 if the thread cannot start. */
int lr_watchdog_start(lr_runtime *rt, unsigned ms);

/* ---- tasks.c: lr.tasks() and the task dump (SIGQUIT) ---- */
/* Writes every live task (name, state, wait, spawn site, traceback) to stderr. */
void lr_tasks_dump(lr_runtime *rt);
/* The executable: SIGQUIT prints the dump (the process goes on). */
void lr_tasks_watch_quit(lr_runtime *rt);
int lr_tasks(lua_State *L);

#endif
