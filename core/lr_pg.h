/* lr_pg.h: PostgreSQL through libpq's non-blocking API, driven by the loop (pg_conn.c),
 * with libpq opened at run time (pg_api.c).
 */
#ifndef LR_PG_H
#define LR_PG_H

#include "lr_sched.h"

#endif
