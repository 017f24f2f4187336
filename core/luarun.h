/* luarun.h: all of core/, for bindings/ and the executable.
 *
 * core/ is in layers; each points one way (down), and each file includes the header
 * of its own layer:
 *   lr_base.h     error.c alloc.c copy.c dynlib.c         knows no tasks
 *                 stderr_hook.c
 *   lr_sched.h    loop.c sched.c timer.c report.c          the scheduler
 *                 sched_hooks.c
 *   lr_prims.h    group.c scope.c sync.c queue.c           primitives on the scheduler
 *                 progress.c
 *   lr_subsys.h   fs.c fs_job.c fs_runners.c pool.c        subsystems on the scheduler
 *                 signal.c; http.c http_wait.c http_url.c with curl_api.h
 *   lr_net.h      stream.c tls.c server.c server_h1.c       the network subsystems
 *                 server_h2.c ws.c ws_client.c
 *   lr_sqlite.h   sqlite_api.c db_sqlite.c db_sqlite_run.c              SQLite connections, each on a thread
 *   lr_pg.h       pg_api.c pg_conn.c pg_pipeline.c          PostgreSQL through libpq on the loop
 *   lr_html.h     html_api.c html_sniff.c html_parse.c     HTML documents through libxml2
 *                 html_css_parse.c html_css_match.c
 *   lr_observe.h  trace.c watchdog.c tasks.c               observers, hooked in
 *   cli.c         the executable, on top of everything (with bindings/)
 * spec/layers_spec.lua checks the includes.
 */
#ifndef LUARUN_H
#define LUARUN_H

#include "lr_base.h"
#include "lr_sched.h"
#include "lr_prims.h"
#include "lr_subsys.h"
#include "lr_net.h"
#include "lr_sqlite.h"
#include "lr_pg.h"
#include "lr_html.h"
#include "lr_observe.h"

/* ---- embedded Lua parts (generated at build time from lua/) ---- */
/* Sets package.preload entries for every embedded Lua module. */
void lr_embedded_preload(lua_State *L);

#endif
