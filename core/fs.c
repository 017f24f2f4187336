/* fs.c: file requests for luarun.fs: the calls, their parking and their ends.
 *
 * Most calls are one lr_fs request around a uv_fs_t: stat, rename, file:read... are
 * one uv_fs_* request each; mkdir with parents and file:write of a large string
 * chain several inside the libuv callback, without touching Lua, and the task is
 * woken once, when the whole call has ended.
 *
 * read_file, write_file and fs.open's open are instead one job each (open, fstat,
 * read..., close; open, write..., fsync, close, rename), run with plain system calls
 * (fs_job.c) by runner threads of luarun's own (fs_runners.c): an open may block for
 * good, and libuv's pool would then keep the thread, and the process, forever.
 *
 * Cancellation: the cancel hook marks the request orphaned (task = NULL), asks libuv
 * to drop it if it is still queued (or takes a job back from the queue), and wakes
 * the task at once. The request lives on until libuv or the runner is done with it:
 * then it undoes what it must (closes an fd that arrived late, removes a temporary
 * file) and is freed. Memory handed to libuv (buffers, paths) is ours again only in
 * that callback.
 *
 * Write data is never handed to libuv straight from the Lua string: the string is
 * alive only while its task waits, so each chunk is first copied into the request's
 * own buffer, and an orphaned write never reads memory the collector may free
 * (write_file jobs: see write_file_job).
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "lr_subsys.h"

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
  free(LR_FS_BLOCK(r));
  free(r);
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
  if (n > LR_FS_WRITE_CHUNK) n = LR_FS_WRITE_CHUNK;
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
  r->step = LR_STEP_WRITE;
  return uv_fs_write(&r->rt->loop, &r->req, fd, &b, 1, off, fs_cb);
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
  r->step = LR_STEP_MKDIR;
  rc = uv_fs_mkdir(&r->rt->loop, &r->req, r->path, r->mode, fs_cb);
  r->path[end] = c;
  return rc;
}

/* Starts the first step of r. Returns 0, or a libuv error with nothing in flight. */
static int begin(lr_fs *r) {
  uv_loop_t *lp = &r->rt->loop;
  uv_fs_t *q = &r->req;
  uv_buf_t b;
  r->step = LR_STEP_ONE;
  switch (r->op) {
    case LR_FS_OPEN: case LR_FS_READ_FILE: case LR_FS_WRITE_FILE:
      return lr_fs_job_start(r); /* opens that may block for good: our runners */
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
      r->step = LR_STEP_STAT; /* "/" or "": nothing to create, only to check */
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

/* mkdir with parents. */
static int next_mkdir_step(lr_fs *r, ssize_t res) {
  size_t end;
  if (r->step == LR_STEP_STAT) { /* the path existed already: fine if it is a directory */
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
    r->step = LR_STEP_STAT;
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
    case LR_FS_MKDIR_P:
      return next_mkdir_step(r, res);
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
void lr_fs_end(lr_fs *r) {
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
  if (!advance(r, res)) lr_fs_end(r);
}

/* ---- parking ---- */

static void fs_cancel(lr_task *t) {
  lr_fs *r = container_of(t->inq, lr_fs, q);
  r->task = NULL; /* orphaned: the callback undoes and frees */
  if (r->jobq) {
    if (lr_fs_job_cancel(r)) { /* never started */
      lr_task_wake(t, LR_WAKE_CANCELLED);
      lr_fs_free(r);
      return;
    }
  } else {
    uv_cancel((uv_req_t *)&r->req); /* drops it if still queued in the thread pool */
  }
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

static const char *op_name(int op) {
  static const char *const names[] = {
    "?", "open", "close", "read", "write", "sync", "fstat", "stat", "lstat", "readdir",
    "mkdir", "mkdir", "remove", "rmdir", "rename", "copyfile", "mkdtemp", "read_file",
    "write_file", "exists"
  };
  return op > 0 && op < (int)(sizeof names / sizeof names[0]) ? names[op] : "?";
}

/* For the observers (--trace): the call, its path and its target. */
static void describe_wait(lr_fs *r) {
  lr_wait_desc d = {"fs", op_name(r->op), 0, 0, 0, {{0}}};
  lr_wait_str(&d, "op", op_name(r->op));
  lr_wait_str(&d, "path", r->path ? r->path : (r->file ? r->file->path : NULL));
  if (r->op == LR_FS_RENAME || r->op == LR_FS_COPYFILE) lr_wait_str(&d, "to", r->path2);
  lr_hooks_wait(r->rt, r->task, &d);
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
  if (lr_observed(r->rt)) describe_wait(r);
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
