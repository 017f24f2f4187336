/* lr_sqlite.h: SQLite connections, each running its statements on a thread of its
 * own (db_sqlite.c), so that the loop never waits on the disk or on a lock.
 */
#ifndef LR_SQLITE_H
#define LR_SQLITE_H

#include "lr_sched.h"

#endif
