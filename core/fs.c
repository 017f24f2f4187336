/* fs.c: file requests on libuv's thread pool, for luarun.fs.
 *
 * Every call is one lr_fs request that drives one or more uv_fs_* requests in turn:
 * read_file is open, fstat, read..., close; an atomic write_file is open (a temporary
 * file), write..., fsync, close, rename. The steps chain inside the libuv callback,
 * without touching Lua, and the task is woken once, when the whole call has ended.
 *
 * Cancellation: the cancel hook marks the request orphaned (task = NULL), asks libuv
 * to drop it if it is still queued, and wakes the task at once. The request lives on
 * until libuv calls back: then the step machine stops, undoes what it must (closes an
 * fd that arrived late, removes a temporary file) and frees the request. Memory
 * handed to libuv (buffers, paths) is ours again only in that callback.
 *
 * Write data is never handed to libuv straight from the Lua string: the string is
 * alive only while its task waits, so each chunk is first copied into the request's
 * own buffer, and an orphaned write never reads memory the collector may free.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "luarun.h"

#define container_of(p, type, field) ((type *)((char *)(p) - offsetof(type, field)))

#define READ_CHUNK ((size_t)32 << 20)  /* largest single read of read_file */
#define WRITE_CHUNK ((size_t)4 << 20)  /* write data copied and written per step */
#define FIRST_CAP ((size_t)64 << 10)   /* read_file's buffer when the size is unknown */
#define TEMP_TRIES 8
#define HUGE_MIN ((size_t)8 << 20)     /* blocks worth huge pages */

/* The steps of a request. Single calls (stat, rename...) have one step: S_ONE. */
enum { S_ONE = 1, S_OPEN, S_FSTAT, S_READ, S_WRITE, S_FSYNC, S_CLOSE, S_RENAME,
       S_UNLINK, S_MKDIR, S_STAT };

static void fs_cb(uv_fs_t *req);

const char *lr_fs_kind(int status) {
  switch (status) {
    case UV_ENOENT: return "not_found";
    case UV_EEXIST: return "exists";
    case UV_EACCES: case UV_EPERM: case UV_EROFS: return "permission";
    case UV_EISDIR: return "is_dir";
    case UV_ENOTDIR: return "not_dir";
    case UV_ENOTEMPTY: return "not_empty";
    case UV_EBUSY: case UV_ETXTBSY: return "busy";
    case UV_ENOSPC: case -EDQUOT: return "no_space";
    case UV_EMFILE: case UV_ENFILE: return "too_many_files";
    default: return "io";
  }
}

int lr_fs_fail(lua_State *L, int status, const char *path) {
  lua_pushnil(L);
  lr_error_push(L, lr_fs_kind(status), uv_strerror(status));
  lua_pushstring(L, uv_err_name(status));
  lua_setfield(L, -2, "code");
  if (path) {
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
  }
  return 2;
}

/* ---- requests: allocation and release ---- */

lr_fs *lr_fs_new(lr_runtime *rt, lr_task *t, int op, const char *path, const char *path2) {
  lr_fs *r = calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  r->rt = rt;
  r->task = t;
  r->op = op;
  r->fd = -1;
  r->offset = -1;
  if ((path && (r->path = strdup(path)) == NULL) ||
      (path2 && (r->path2 = strdup(path2)) == NULL)) {
    free(r->path);
    free(r);
    return NULL;
  }
  return r;
}

void lr_fs_free(lr_fs *r) {
  uv_fs_req_cleanup(&r->req);
  if (r->file) lr_file_unref(r->file);
  free(r->path);
  free(r->path2);
  free(r->buf);
  free(r);
}

/* Asks for transparent huge pages over the 2 MiB-aligned inside of a large block:
 * filling 200 MB of fresh 4 KiB pages costs more than the copy itself (50,000 page
 * faults), while with 2 MiB pages read_file's buffer costs about what the read does. */
void lr_fs_advise_huge(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
  const uintptr_t huge = (uintptr_t)2 << 20;
  uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
  uintptr_t b = ((uintptr_t)p + n) & ~(huge - 1);
  if (n >= HUGE_MIN && b > a) madvise((void *)a, b - a, MADV_HUGEPAGE);
#else
  (void)p, (void)n;
#endif
}

void lr_file_unref(lr_file *f) {
  if (--f->refs > 0) return;
  free(f->path);
  free(f);
}

/* ---- the steps ---- */

/* Copies the next chunk of the write data into r->buf and writes it to fd. */
static int write_chunk(lr_fs *r, uv_file fd) {
  size_t n = r->dlen - r->dpos;
  int64_t off;
  uv_buf_t b;
  if (n > WRITE_CHUNK) n = WRITE_CHUNK;
  if (r->cap < n) {
    char *p = realloc(r->buf, n);
    if (p == NULL) return UV_ENOMEM;
    r->buf = p;
    r->cap = n;
  }
  memcpy(r->buf, r->data + r->dpos, n);
  r->len = n;
  b = uv_buf_init(r->buf, (unsigned int)n);
  off = r->offset < 0 ? -1 : r->offset + (int64_t)r->dpos;
  r->step = S_WRITE;
  return uv_fs_write(&r->rt->loop, &r->req, fd, &b, 1, off, fs_cb);
}

/* read_file: reads the next chunk at the end of the data so far, growing the buffer. */
static int read_chunk(lr_fs *r) {
  size_t n;
  uv_buf_t b;
  if (r->len == r->cap) {
    size_t cap = r->cap < FIRST_CAP ? FIRST_CAP : r->cap * 2;
    char *p = realloc(r->buf, cap);
    if (p == NULL) return UV_ENOMEM;
    r->buf = p;
    r->cap = cap;
  }
  n = r->cap - r->len;
  if (n > READ_CHUNK) n = READ_CHUNK;
  r->pos = n;
  b = uv_buf_init(r->buf + r->len, (unsigned int)n);
  r->step = S_READ;
  return uv_fs_read(&r->rt->loop, &r->req, r->fd, &b, 1, (int64_t)r->len, fs_cb);
}

static int close_fd(lr_fs *r) {
  uv_file fd = r->fd;
  r->fd = -1;
  r->step = S_CLOSE;
  return uv_fs_close(&r->rt->loop, &r->req, fd, fs_cb);
}

/* write_file atomic: a new name for the temporary file beside the target. */
static int temp_name(lr_fs *r) {
  static atomic_uint counter;
  static const char set[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const char *slash = strrchr(r->path, '/');
  size_t dirlen = slash ? (size_t)(slash - r->path) + 1 : 0;
  uint64_t x = uv_hrtime() ^ ((uint64_t)atomic_fetch_add(&counter, 1) << 40) ^
               (uint64_t)(uintptr_t)r;
  char rnd[7];
  int i;
  for (i = 0; i < 6; i++) {
    x = x * 6364136223846793005u + 1442695040888963407u;
    rnd[i] = set[(x >> 33) % (sizeof set - 1)];
  }
  rnd[6] = 0;
  free(r->path2);
  r->path2 = malloc(strlen(r->path) + 16);
  if (r->path2 == NULL) return UV_ENOMEM;
  /* "dir/.name.XXXXXX.tmp": hidden, and in the same directory so rename is atomic. */
  sprintf(r->path2, "%.*s.%s.%s.tmp", (int)dirlen, r->path, r->path + dirlen, rnd);
  return 0;
}

static int open_target(lr_fs *r) {
  const char *p = r->path;
  int rc;
  if (r->op == LR_FS_WRITE_FILE && (r->opts & LR_FS_ATOMIC)) {
    if ((rc = temp_name(r)) < 0) return rc;
    p = r->path2;
  }
  r->step = S_OPEN;
  return uv_fs_open(&r->rt->loop, &r->req, p, r->flags, r->mode, fs_cb);
}

/* mkdir with parents: moves r->pos to the end of the next prefix; 0 if none is left. */
static int next_prefix(lr_fs *r, size_t *end) {
  size_t i = r->pos;
  while (r->path[i] == '/') i++;
  if (r->path[i] == 0) return 0;
  while (r->path[i] && r->path[i] != '/') i++;
  *end = i;
  return 1;
}

static int mkdir_prefix(lr_fs *r) {
  size_t end;
  char c;
  int rc;
  if (!next_prefix(r, &end)) return 1; /* nothing left: caller ends */
  r->pos = end;
  c = r->path[end];
  r->path[end] = 0; /* libuv copies the path */
  r->step = S_MKDIR;
  rc = uv_fs_mkdir(&r->rt->loop, &r->req, r->path, r->mode, fs_cb);
  r->path[end] = c;
  return rc;
}

/* Starts the first step of r. Returns 0, or a libuv error with nothing in flight. */
static int begin(lr_fs *r) {
  uv_loop_t *lp = &r->rt->loop;
  uv_fs_t *q = &r->req;
  uv_buf_t b;
  r->step = S_ONE;
  switch (r->op) {
    case LR_FS_OPEN: case LR_FS_READ_FILE: case LR_FS_WRITE_FILE:
      return open_target(r);
    case LR_FS_CLOSE: return uv_fs_close(lp, q, r->fd, fs_cb);
    case LR_FS_READ:
      b = uv_buf_init(r->buf, (unsigned int)r->cap);
      return uv_fs_read(lp, q, r->file->fd, &b, 1, r->offset, fs_cb);
    case LR_FS_WRITE: return write_chunk(r, r->file->fd);
    case LR_FS_FSYNC: return uv_fs_fsync(lp, q, r->file->fd, fs_cb);
    case LR_FS_FSTAT: return uv_fs_fstat(lp, q, r->file->fd, fs_cb);
    case LR_FS_STAT: case LR_FS_EXISTS: return uv_fs_stat(lp, q, r->path, fs_cb);
    case LR_FS_LSTAT: return uv_fs_lstat(lp, q, r->path, fs_cb);
    case LR_FS_SCANDIR: return uv_fs_scandir(lp, q, r->path, 0, fs_cb);
    case LR_FS_MKDIR: return uv_fs_mkdir(lp, q, r->path, r->mode, fs_cb);
    case LR_FS_MKDIR_P: {
      int rc = mkdir_prefix(r);
      if (rc != 1) return rc;
      r->step = S_STAT; /* "/" or "": nothing to create, only to check */
      return uv_fs_stat(lp, q, r->path, fs_cb);
    }
    case LR_FS_UNLINK: return uv_fs_unlink(lp, q, r->path, fs_cb);
    case LR_FS_RMDIR: return uv_fs_rmdir(lp, q, r->path, fs_cb);
    case LR_FS_RENAME: return uv_fs_rename(lp, q, r->path, r->path2, fs_cb);
    case LR_FS_COPYFILE: return uv_fs_copyfile(lp, q, r->path, r->path2, 0, fs_cb);
    case LR_FS_MKDTEMP: return uv_fs_mkdtemp(lp, q, r->path, fs_cb);
    default: return UV_EINVAL;
  }
}

/* A step failed or the task went away: undo, keeping the first error. Returns 1 if
 * a cleanup step is in flight. */
static int unwind(lr_fs *r, int status) {
  if (r->status == 0) r->status = status;
  if (r->fd >= 0) return close_fd(r) == 0;
  if (r->op == LR_FS_WRITE_FILE && (r->opts & LR_FS_ATOMIC) && r->path2 &&
      r->step != S_UNLINK && r->step != S_OPEN) {
    r->step = S_UNLINK;
    return uv_fs_unlink(&r->rt->loop, &r->req, r->path2, fs_cb) == 0;
  }
  return 0;
}

/* read_file and write_file: the step after `step` ended with res. Returns 1 if the
 * next step is in flight, 0 when the call has ended. */
static int next_file_step(lr_fs *r, ssize_t res) {
  int rc = 0, orphan = r->task == NULL;
  switch (r->step) {
    case S_OPEN:
      if (res == UV_EEXIST && (r->opts & LR_FS_ATOMIC) && ++r->tries < TEMP_TRIES && !orphan)
        return open_target(r) == 0 || unwind(r, UV_EIO);
      if (res < 0) return unwind(r, (int)res);
      r->fd = (uv_file)res;
      if (orphan) return unwind(r, UV_ECANCELED);
      if (r->op == LR_FS_READ_FILE) {
        r->step = S_FSTAT;
        rc = uv_fs_fstat(&r->rt->loop, &r->req, r->fd, fs_cb);
      } else if (r->dlen > 0) {
        rc = write_chunk(r, r->fd);
      } else {
        goto after_write;
      }
      break;
    case S_FSTAT:
      if (res < 0 || orphan) return unwind(r, res < 0 ? (int)res : UV_ECANCELED);
      r->regular = S_ISREG(r->req.statbuf.st_mode) && r->req.statbuf.st_size > 0;
      if (r->regular) {
        /* One byte more than the size, so that an unchanged file ends in a short read. */
        r->cap = (size_t)r->req.statbuf.st_size + 1;
        if ((r->buf = malloc(r->cap)) == NULL) return unwind(r, UV_ENOMEM);
        lr_fs_advise_huge(r->buf, r->cap);
      }
      rc = read_chunk(r);
      break;
    case S_READ:
      if (res < 0 || orphan) return unwind(r, res < 0 ? (int)res : UV_ECANCELED);
      r->len += (size_t)res;
      if (res == 0 || (r->regular && (size_t)res < r->pos)) return close_fd(r) == 0 ||
                                                                    unwind(r, UV_EIO);
      rc = read_chunk(r);
      break;
    case S_WRITE:
      if (res < 0 || orphan) return unwind(r, res < 0 ? (int)res : UV_ECANCELED);
      if (res == 0) return unwind(r, UV_EIO);
      r->dpos += (size_t)res;
      if (r->dpos < r->dlen) {
        rc = write_chunk(r, r->fd);
        break;
      }
    after_write:
      if (r->opts & LR_FS_ATOMIC) {
        r->step = S_FSYNC;
        rc = uv_fs_fsync(&r->rt->loop, &r->req, r->fd, fs_cb);
      } else {
        rc = close_fd(r);
      }
      break;
    case S_FSYNC:
      if (res < 0 || orphan) return unwind(r, res < 0 ? (int)res : UV_ECANCELED);
      rc = close_fd(r);
      break;
    case S_CLOSE:
      if (res < 0 && r->status == 0 && r->op == LR_FS_WRITE_FILE) r->status = (int)res;
      if (r->status != 0 || orphan) return unwind(r, orphan ? UV_ECANCELED : r->status);
      if (r->op == LR_FS_WRITE_FILE && (r->opts & LR_FS_ATOMIC)) {
        r->step = S_RENAME;
        rc = uv_fs_rename(&r->rt->loop, &r->req, r->path2, r->path, fs_cb);
        break;
      }
      return 0;
    case S_RENAME:
      if (res < 0) return unwind(r, (int)res);
      return 0;
    case S_UNLINK:
      return 0;
  }
  if (rc < 0) return unwind(r, rc);
  return 1;
}

/* mkdir with parents. */
static int next_mkdir_step(lr_fs *r, ssize_t res) {
  size_t end;
  if (r->step == S_STAT) { /* the path existed already: fine if it is a directory */
    if (res < 0) r->status = (int)res;
    else if (!S_ISDIR(r->req.statbuf.st_mode)) r->status = UV_EEXIST;
    return 0;
  }
  if (res < 0 && res != UV_EEXIST) {
    r->status = (int)res;
    return 0;
  }
  if (r->task == NULL) return 0;
  if (next_prefix(r, &end)) {
    int rc = mkdir_prefix(r);
    if (rc < 0) r->status = rc;
    return rc == 0;
  }
  if (res == UV_EEXIST) {
    int rc;
    r->step = S_STAT;
    rc = uv_fs_stat(&r->rt->loop, &r->req, r->path, fs_cb);
    if (rc < 0) r->status = rc;
    return rc == 0;
  }
  return 0;
}

/* Single calls: keep what the continuation needs. Returns 1 if a step is in flight. */
static int end_single(lr_fs *r, ssize_t res) {
  if (r->op == LR_FS_EXISTS) {
    r->len = res >= 0;
    if (res == UV_ENOENT || res == UV_ENOTDIR) res = 0; /* an answer, not a failure */
  }
  if (res < 0) {
    r->status = (int)res;
    return 0;
  }
  switch (r->op) {
    case LR_FS_OPEN: /* (opened through S_OPEN) */
      break;
    case LR_FS_READ: r->len = (size_t)res; break;
    case LR_FS_STAT: case LR_FS_LSTAT: case LR_FS_FSTAT:
      r->st = r->req.statbuf;
      break;
  }
  return 0;
}

/* Returns 1 if another step of r is in flight. */
static int advance(lr_fs *r, ssize_t res) {
  switch (r->op) {
    case LR_FS_READ_FILE: case LR_FS_WRITE_FILE:
      return next_file_step(r, res);
    case LR_FS_MKDIR_P:
      return next_mkdir_step(r, res);
    case LR_FS_OPEN:
      if (res >= 0 && r->step == S_OPEN) {
        r->fd = (uv_file)res;
        if (r->task == NULL) return close_fd(r) == 0; /* opened too late: close it */
        return 0;
      }
      if (r->step == S_CLOSE) return 0;
      return end_single(r, res);
    case LR_FS_WRITE:
      if (res > 0 && r->task && r->dpos + (size_t)res < r->dlen) {
        int rc;
        r->dpos += (size_t)res;
        if ((rc = write_chunk(r, r->file->fd)) == 0) return 1;
        res = rc;
      } else if (res == 0 && r->dlen > 0) {
        res = UV_EIO;
      }
      return end_single(r, res);
    default:
      return end_single(r, res);
  }
}

/* The call has ended: hand r to its task, or free it if nobody waits. */
static void end(lr_fs *r) {
  lr_file *f = r->file;
  if (f && r->op != LR_FS_CLOSE && --f->busy == 0 && f->closed) lr_file_close_later(f);
  if (r->task) lr_task_wake(r->task, LR_WAKE_DONE);
  else lr_fs_free(r);
}

static void fs_cb(uv_fs_t *req) {
  lr_fs *r = container_of(req, lr_fs, req);
  ssize_t res = req->result;
  if (r->op == LR_FS_MKDTEMP && res >= 0 && (r->path2 = strdup(req->path)) == NULL)
    r->status = UV_ENOMEM; /* (an orphaned mkdtemp leaves its empty directory) */
  if (r->op != LR_FS_SCANDIR) uv_fs_req_cleanup(req); /* scandir: entries read later */
  if (!advance(r, res)) end(r);
}

/* ---- parking ---- */

static void fs_cancel(lr_task *t) {
  lr_fs *r = container_of(t->inq, lr_fs, q);
  r->task = NULL; /* orphaned: the callback undoes and frees */
  uv_cancel((uv_req_t *)&r->req); /* drops it if still queued in the thread pool */
  lr_task_wake(t, LR_WAKE_CANCELLED);
}

static int finish(lua_State *L, lr_fs *r) {
  int n;
  if (r->status < 0) {
    n = lr_fs_fail(L, r->status, r->path);
    if (r->path2 && (r->op == LR_FS_RENAME || r->op == LR_FS_COPYFILE)) {
      lua_pushstring(L, r->path2);
      lua_setfield(L, -2, "dest");
    }
  } else {
    n = r->push(L, r);
  }
  lr_fs_free(r);
  return n;
}

static int fs_k(lua_State *L, int status, lua_KContext ctx) {
  lr_task *t = (lr_task *)(*(uintptr_t *)lua_getextraspace(L) & ~(uintptr_t)1);
  (void)status;
  /* Cancelled: the request belongs to its callback now (it may be freed already). */
  if (t->wake == LR_WAKE_CANCELLED) lr_error_raise_cancelled(L);
  return finish(L, (lr_fs *)ctx);
}

int lr_fs_start(lua_State *L, lr_fs *r, lr_fs_result push) {
  int rc;
  lr_task *t = r->task;
  r->push = push;
  if (r->file && r->op != LR_FS_CLOSE) r->file->busy++;
  if ((rc = begin(r)) < 0) {
    if (r->file && r->op != LR_FS_CLOSE) r->file->busy--;
    r->status = rc;
    return finish(L, r);
  }
  if (r->rt->trace) lr_trace_fs(r);
  lr_waitq_push(&r->q, t);
  return lr_task_park(L, t, fs_cancel, (lua_KContext)r, fs_k);
}

/* ---- closing files nobody waits for ---- */

void lr_file_close_later(lr_file *f) {
  lr_runtime *rt = f->rt;
  lr_fs *r;
  uv_file fd = f->fd;
  f->closed = 1;
  if (fd < 0 || f->busy > 0) return; /* closed already, or by the last request */
  f->fd = -1;
  /* The loop is not running (between lr.run calls) or is being torn down: a plain
   * close is the only way left, and blocks nobody. */
  if (!rt->closing && rt->running &&
      (r = lr_fs_new(rt, NULL, LR_FS_CLOSE, NULL, NULL)) != NULL) {
    r->fd = fd;
    r->file = f;
    f->refs++;
    if (begin(r) == 0) return;
    lr_fs_free(r);
  }
  close(fd);
}
