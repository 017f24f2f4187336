/* lr_subsys.h: the subsystems, each on the scheduler and never under it: files (fs.c,
 * fs_job.c, fs_runners.c), the worker pool (pool.c), signals for the executable
 * (signal.c). The HTTP engine (http.c on libcurl) has its own header, curl_api.h.
 * A subsystem parks tasks, wakes them from its callbacks, and describes its waits
 * for the observers; it never names an observer.
 */
#ifndef LR_SUBSYS_H
#define LR_SUBSYS_H

#include "lr_sched.h"

/* ---- fs.c, fs_job.c, fs_runners.c: file requests (luarun.fs) ---- */
/* An open file, shared by the luarun.File userdata and the requests that use its fd.
 * Freed when refs drops to 0 (the userdata holds one reference, each request one). */
typedef struct lr_file {
  lr_runtime *rt;
  uv_file fd;            /* -1 once its close has been issued */
  int refs;
  int busy;              /* requests using fd right now (not counting its close) */
  uint8_t closed;        /* close(), __close or __gc seen: no new requests */
  char *path;            /* owned: for error messages */
} lr_file;

enum lr_fs_op {
  LR_FS_OPEN = 1, LR_FS_CLOSE, LR_FS_READ, LR_FS_WRITE, LR_FS_FSYNC, LR_FS_FSTAT,
  LR_FS_STAT, LR_FS_LSTAT, LR_FS_SCANDIR, LR_FS_MKDIR, LR_FS_MKDIR_P, LR_FS_UNLINK,
  LR_FS_RMDIR, LR_FS_RENAME, LR_FS_COPYFILE, LR_FS_MKDTEMP, LR_FS_READ_FILE,
  LR_FS_WRITE_FILE, LR_FS_EXISTS
};
#define LR_FS_ATOMIC 0x1   /* write_file: temporary file, fsync, rename */
#define LR_FS_APPEND 0x2   /* write_file: append instead of truncating */

/* write_file data read in place by the job: offered when queued, taken once the file
 * is open, back to none when done; the cancel hook revokes an offer not yet taken. */
enum { LR_LEND_NONE, LR_LEND_OFFERED, LR_LEND_TAKEN, LR_LEND_REVOKED };

typedef struct lr_fs lr_fs;
/* Pushes the results of a request that succeeded; returns their count. */
typedef int (*lr_fs_result)(lua_State *L, lr_fs *r);

/* One file request: a uv_fs_t and everything a call keeps around it. Owned by the
 * parked task's continuation, or, once the task is cancelled (orphaned, task NULL),
 * by the libuv callback, which undoes what it must (closes a late fd, removes a
 * temporary file) and frees it. */
struct lr_fs {
  uv_fs_t req;
  lr_runtime *rt;
  lr_waitq q;            /* the task parks here: the cancel hook finds us from it */
  lr_task *task;         /* the waiting task; NULL once orphaned */
  lr_file *file;         /* the file used (one reference held), or NULL */
  lr_fs_result push;
  int op, step;
  int status;            /* 0, or the first libuv error */
  int flags, mode;       /* open flags and mode (mkdir: mode) */
  int opts;              /* write_file: LR_FS_ATOMIC | LR_FS_APPEND */
  uv_file fd;            /* fd opened by read_file/write_file, or -1 */
  int64_t offset;        /* read/write offset, -1 for the file position */
  char *path;            /* owned: the path the call is about */
  char *path2;           /* owned: rename/copy target, temporary file, mkdtemp result */
  char *buf;             /* owned: data read, or the chunk of data being written */
  size_t len, cap;       /* exists: len is 1 if the path exists, else 0 */
  const char *data;      /* write data: the Lua string on the parked task's stack; read
                            only while the task waits, copied into buf chunk by chunk */
  size_t dlen, dpos;
  size_t pos;            /* mkdir with parents: end of the prefix being created */
  uv_stat_t st;
  /* read_file and write_file: one thread-pool job each (fs.c) instead of uv_fs_t steps. */
  struct lr_fsq *jobq;   /* its runtime's job queue (fs.c) */
  int cancelled;         /* set by the cancel hook, read by the job (__atomic builtins) */
  int borrowed;          /* write_file: LR_LEND_*, under fs.c's lend_mu once queued */
  lr_fs *next_job;       /* in the queue of jobs waiting for a slot (fs.c) */
  size_t hdr;            /* read_file: room wanted before the data for a Lua string
                            header, so that the block can become the string (0: no) */
  size_t boff;           /* room actually left before buf: free(buf - boff) */
  uint32_t dir;          /* write_file: hash of the target's directory */
  int dir_free;          /* write_file: done with the directory's lock (fs.c) */
  int unnamed;           /* write_file: create it unnamed, link it once written (fs.c) */
};
/* The block under r->buf (its data starts boff bytes in). */
#define LR_FS_BLOCK(r) ((r)->buf ? (r)->buf - (r)->boff : NULL)

/* Allocates a request for task t (NULL: nobody waits). Copies the paths. NULL on
 * out-of-memory. */
lr_fs *lr_fs_new(lr_runtime *rt, lr_task *t, int op, const char *path, const char *path2);
/* Starts r and parks t until it ends; the continuation pushes push(L, r) or nil, err
 * and frees r. If libuv refuses at once, frees r and returns nil, err unparked. */
int lr_fs_start(lua_State *L, lr_fs *r, lr_fs_result push);
/* Frees a request that was never started. */
void lr_fs_free(lr_fs *r);
/* Pushes nil, err for a libuv error code about path; returns 2. */
int lr_fs_fail(lua_State *L, int status, const char *path);
/* Maps a libuv error code to an API.md kind ("not_found", ..., "io"). */
const char *lr_fs_kind(int status);
/* Drops one reference to f; frees it at 0. */
void lr_file_unref(lr_file *f);
/* Marks f closed; closes its fd once no request uses it, without waiting (the File's
 * __gc and __close). */
void lr_file_close_later(lr_file *f);

/* Between fs.c (the calls), fs_job.c (the jobs' system calls) and fs_runners.c (the
 * runner threads and their queue). A request's step: */
enum {
  LR_STEP_ONE = 1,  /* a single call in flight, or a job taken by a runner */
  LR_STEP_WRITE,    /* file:write: a chunk in flight */
  LR_STEP_MKDIR,    /* mkdir with parents: one prefix in flight */
  LR_STEP_STAT,     /* mkdir with parents: checking what exists */
  LR_STEP_STAGED,   /* a job staged this turn of the scheduler (loop thread only) */
  LR_STEP_PENDING   /* a job queued for the runners */
};
#define LR_FS_WRITE_CHUNK ((size_t)4 << 20) /* write data copied and written per step */
#define LR_FS_COPY_MAX ((size_t)256 << 10)  /* write_file data copied before the job */
void lr_fs_end(lr_fs *r);                    /* fs.c: the call is over (loop thread) */
int lr_fs_job_start(lr_fs *r);               /* fs_runners.c: 0 or a libuv error */
int lr_fs_job_cancel(lr_fs *r);              /* 1: never started, the caller frees r */
void lr_fs_job_flush(lr_fs *r);              /* runner: deliver what is done first */
void lr_fs_job_opened(lr_fs *r, uint64_t open_ns); /* runner: the target is open */
void lr_fs_run_job(lr_fs *r);                /* fs_job.c: runs r on this thread */
int lr_fs_job_cancelled(lr_fs *r);
void lr_fs_loan_revoke(lr_fs *r);            /* the job will not read the task's string */
int lr_fs_may_create_unnamed(const lr_fs *r);
int lr_fs_unnamed_forced(void);              /* LUARUN_FS_CREATE=unnamed */
void lr_fs_job_setup(void);                  /* once, before the first job */

/* ---- pool.c: worker threads with their own Lua states (lr.run_in_pool) ---- */
enum { LR_POOL_CODE = 1, LR_POOL_NAME = 2 };
/* Queues a job for task t and parks it: code is bytecode (LR_POOL_CODE) or a
 * "module.function" NUL-terminated name (LR_POOL_NAME); args is lr_copy_encode_refs'd.
 * Takes over both buffers' memory (they are left empty). Starts the pool on first use
 * (raises if it cannot). The continuation pushes the results or raises the worker's
 * error with its traceback; cancelling the task drops the result. */
int lr_pool_call(lua_State *L, lr_task *t, int kind, lr_copybuf *code, lr_copybuf *args);
/* The number of workers: actual once started, else what it will be. */
unsigned lr_pool_size(lr_runtime *rt);
/* Before the pool starts: size (0: default) and per-worker memory cap in bytes (0:
 * none). Returns 0, or -1 if the pool already runs with other settings. */
int lr_pool_configure(lr_runtime *rt, unsigned size, size_t mem_limit);

/* ---- signal.c: Ctrl-C (the executable only) ---- */
void lr_signal_install(lr_runtime *rt);

#endif
