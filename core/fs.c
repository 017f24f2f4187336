/* fs.c: file requests on libuv's thread pool, for luarun.fs.
 *
 * Most calls are one lr_fs request around a uv_fs_t: stat, rename, file:read... are
 * one uv_fs_* request each; mkdir with parents and file:write of a large string
 * chain several inside the libuv callback, without touching Lua, and the task is
 * woken once, when the whole call has ended.
 *
 * read_file and write_file are instead one job each (open, fstat, read..., close;
 * open, write..., fsync, close, rename), run with plain system calls by this file's
 * own runners on the thread pool (see "the job queue" below).
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
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include "luarun.h"

#define READ_CHUNK ((size_t)32 << 20)  /* largest single read of read_file */
#define WRITE_CHUNK ((size_t)4 << 20)  /* write data copied and written per step */
#define FIRST_CAP ((size_t)64 << 10)   /* read_file's buffer when the size is unknown */
#define TEMP_TRIES 8
#define POPULATE_MIN ((size_t)8 << 20) /* reads whose buffer is faulted in first */
#define PAR_MIN ((size_t)16 << 20)     /* files read in parallel slices */
#define PAR_MAX 4                      /* at most this many slices */

/* The steps of a request. Single calls (stat, rename...) have one step: S_ONE. */
enum { S_ONE = 1, S_WRITE, S_MKDIR, S_STAT, S_STAGED, S_PENDING };

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

/* Faults in the buffer of a large read just ahead of the copy, a step at a time: one
 * madvise(MADV_POPULATE_WRITE) costs about 30 % less than letting the copy take the
 * same 4 KiB page faults one by one (200 MB: 0.050 s against 0.073-0.085 in a plain C
 * loop), and a step small enough to stay in the cache (512 KiB) lets the copy write
 * into pages that were just zeroed. Huge pages (MADV_HUGEPAGE, used before) cost less
 * while the memory is warm, but in a VM that hands free memory back to its host (free
 * page reporting, as here) a huge page from those blocks costs the host 512 faults:
 * 200 MB of huge pages took 0.3-0.5 s after a second or two of idle, and a rule that
 * switched to 4 KiB pages after a slow step still paid for the slow steps. read_file
 * of 200 MB as a whole process (hyperfine), cat 34.5 ms: huge pages 52-73 ms with a
 * spread of 15-63 (up to 251), 4 KiB pages in 8 MiB steps 59-61 +- 1-3, in 512 KiB
 * steps 52.3 +- 2.5; after 2 s idle: cat 40-45 ms, huge pages 210-320, 512 KiB steps
 * 57-72. */
#define POPULATE_STEP ((size_t)512 << 10)
static void populate(char *p, size_t n) {
#ifdef MADV_POPULATE_WRITE
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a, b; /* glibc: no system call */
  a = ((uintptr_t)p + page - 1) & ~(page - 1);
  b = ((uintptr_t)p + n) & ~(page - 1);
  if (b > a) madvise((void *)a, b - a, MADV_POPULATE_WRITE); /* a hint: errors ignored */
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

/* ---- read_file and write_file: one thread-pool job each ----
 *
 * The whole call (open, fstat, read... or open, write..., fsync, rename, close) runs
 * as plain system calls on one libuv worker: one queue round trip and one loop wakeup
 * per call instead of one per step. The job touches only the request (never Lua)
 * and ends with r->status (0 or a negative errno, which is libuv's code on Unix).
 *
 * Cancellation sets r->cancelled: the job stops at its next chunk boundary, and an
 * atomic write removes its temporary file instead of renaming it. The task does not
 * wait for that (the job is orphaned and frees the request when it ends) except while
 * a write job still reads a borrowed Lua string (below).
 *
 * Write data: up to COPY_MAX bytes are copied into r->buf before the job is queued.
 * A longer string is read in place (r->borrowed): it is anchored on the parked
 * task's stack, so the cancel hook waits (lend_mu) until the job is done with it.
 * The job takes the loan only once its file is open (take_data): until then the
 * cancel hook revokes it instead of waiting, since open() itself may block for good
 * (a FIFO without a reader). Only regular files are written from the string
 * directly; for anything else (a pipe could block forever) the job first copies it,
 * so that the wait stays short. */

#define COPY_MAX ((size_t)256 << 10)  /* write data copied before the job starts */
#define LONG_JOB ((size_t)1 << 20)     /* bytes after which a job tells the loop first */

static pthread_mutex_t lend_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t lend_cv = PTHREAD_COND_INITIALIZER;

static void dir_done(lr_fs *r, uint64_t open_ns);

static int is_cancelled(lr_fs *r) {
  return __atomic_load_n(&r->cancelled, __ATOMIC_ACQUIRE);
}

static void flush(lr_fs *r);

/* The job starts reading the borrowed write data (worker thread). Returns 0, or
 * UV_ECANCELED if the cancel hook took the loan back first: the string may be gone. */
static int take_loan(lr_fs *r) {
  int rc = 0;
  if (__atomic_load_n(&r->borrowed, __ATOMIC_RELAXED) == LR_LEND_NONE) return 0;
  pthread_mutex_lock(&lend_mu);
  if (r->borrowed == LR_LEND_REVOKED) rc = UV_ECANCELED;
  else if (r->borrowed == LR_LEND_OFFERED) __atomic_store_n(&r->borrowed, LR_LEND_TAKEN, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&lend_mu);
  return rc;
}

/* The job is done with the borrowed write data (worker thread). */
static void give_back(lr_fs *r) {
  if (__atomic_load_n(&r->borrowed, __ATOMIC_RELAXED) == LR_LEND_NONE) return;
  pthread_mutex_lock(&lend_mu);
  if (r->borrowed == LR_LEND_TAKEN) {
    __atomic_store_n(&r->borrowed, LR_LEND_NONE, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&lend_cv);
  }
  pthread_mutex_unlock(&lend_mu);
}

/* The job puts the loan back on offer (worker thread): it goes on with another file
 * that is not open yet (write_unnamed falling back to the named path). */
static void offer_again(lr_fs *r) {
  pthread_mutex_lock(&lend_mu);
  if (r->borrowed == LR_LEND_TAKEN) {
    __atomic_store_n(&r->borrowed, LR_LEND_OFFERED, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&lend_cv);
  }
  pthread_mutex_unlock(&lend_mu);
}

/* The cancel hook: the job will not read the task's string after this returns. */
static void wait_given_back(lr_fs *r) {
  pthread_mutex_lock(&lend_mu);
  for (;;) {
    if (r->borrowed == LR_LEND_OFFERED)
      __atomic_store_n(&r->borrowed, LR_LEND_REVOKED, __ATOMIC_RELAXED);
    if (r->borrowed != LR_LEND_TAKEN) break;
    pthread_cond_wait(&lend_cv, &lend_mu);
  }
  pthread_mutex_unlock(&lend_mu);
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

/* Reads fd to its end into r->buf (r->len bytes). Returns 0 or a negative errno. */
/* Reads [off, off + n) of fd into p with pread. Returns the count read (short at the
 * end of the file) or a negative errno. */
static ssize_t pread_all(lr_fs *r, int fd, char *p, size_t n, off_t off) {
  size_t done = 0;
  while (done < n) {
    size_t k = n - done;
    ssize_t got;
    if (k > POPULATE_STEP) k = POPULATE_STEP;
    if (is_cancelled(r)) return UV_ECANCELED;
    populate(p + done, k);
    got = pread(fd, p + done, k, off + (off_t)done);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return -errno;
    if (got == 0) break;
    done += (size_t)got;
  }
  return (ssize_t)done;
}

/* One slice of a parallel read (parallel_read). */
struct slice {
  lr_fs *r;
  int fd;
  char *p;
  size_t n;
  off_t off;
  ssize_t got;
  pthread_t th;
};

static void *slice_main(void *arg) {
  struct slice *s = arg;
  s->got = pread_all(s->r, s->fd, s->p, s->n, s->off);
  return NULL;
}

/* Reads the first `size` bytes of a large regular file in PAR_MAX slices at once, on
 * helper threads beside this one: copying out of the page cache and faulting in the
 * fresh buffer are what a large read costs, and both go as fast as there are cores.
 * Returns 1 if all of it was read, 0 if the file turned out shorter (the caller then
 * reads it from the start again), or a negative errno. */
static int parallel_read(lr_fs *r, int fd, size_t size) {
  struct slice sl[PAR_MAX];
  unsigned n = uv_available_parallelism(), i, started;
  size_t per;
  int rc = 1;
  if (n > PAR_MAX) n = PAR_MAX;
  if (n < 2) return 0;
  per = (size / n + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1); /* 2 MiB-aligned slices */
  for (i = 0; i < n; i++) {
    size_t off = per * i;
    sl[i].r = r;
    sl[i].fd = fd;
    sl[i].p = r->buf + (off < size ? off : size);
    sl[i].n = off >= size ? 0 : size - off < per ? size - off : per;
    sl[i].off = (off_t)(off < size ? off : size);
  }
  for (started = 1; started < n; started++) /* slice 0 is ours */
    if (pthread_create(&sl[started].th, NULL, slice_main, &sl[started]) != 0) break;
  for (i = started; i < n; i++) slice_main(&sl[i]); /* no thread: read it here */
  slice_main(&sl[0]);
  for (i = 1; i < started; i++) pthread_join(sl[i].th, NULL);
  for (i = 0; i < n; i++) {
    if (sl[i].got < 0) return (int)sl[i].got;
    if ((size_t)sl[i].got < sl[i].n) rc = 0;
  }
  return rc;
}

/* Allocates r->buf for cap bytes of data, with r->hdr bytes of room before it. */
static int alloc_buf(lr_fs *r, size_t cap) {
  size_t room = r->hdr;
  char *p;
  if ((p = malloc(room + cap)) == NULL) return UV_ENOMEM;
  r->buf = p + room;
  r->boff = room;
  r->cap = cap;
  return 0;
}

/* Reads fd to its end into r->buf (r->len bytes). Returns 0 or a negative errno. */
static int read_all(lr_fs *r, int fd, const struct stat *st) {
  /* A regular file's size, plus one byte so that an unchanged file ends in a short
   * read; /proc files say 0, so they start small and grow. */
  int regular = S_ISREG(st->st_mode) && st->st_size > 0, rc;
  size_t want = regular ? (size_t)st->st_size + 1 : FIRST_CAP;
  if (want > LONG_JOB) flush(r);
  if ((rc = alloc_buf(r, want)) < 0) return rc;
  if (regular && want > PAR_MIN) {
    if ((rc = parallel_read(r, fd, want - 1)) < 0) return rc;
    /* All read: go on from there (the file may have grown). Else start again. */
    r->len = rc ? want - 1 : 0;
    if (lseek(fd, (off_t)r->len, SEEK_SET) < 0) return -errno;
  }
  for (;;) {
    size_t n = r->cap - r->len;
    ssize_t got;
    if (n == 0) {
      char *p = realloc(LR_FS_BLOCK(r), r->boff + r->cap * 2);
      if (p == NULL) return UV_ENOMEM;
      r->buf = p + r->boff;
      r->cap *= 2;
      continue;
    }
    if (n > READ_CHUNK) n = READ_CHUNK;
    if (is_cancelled(r)) return UV_ECANCELED;
    if (regular && r->cap >= POPULATE_MIN) {
      if (n > POPULATE_STEP) n = POPULATE_STEP;
      populate(r->buf + r->len, n);
    }
    got = read(fd, r->buf + r->len, n);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return -errno;
    r->len += (size_t)got;
    if (got == 0 || (regular && (size_t)got < n)) return 0;
  }
}

static void read_file_job(lr_fs *r) {
  struct stat st;
  int fd = open(r->path, O_RDONLY | O_CLOEXEC), rc;
  if (fd < 0) {
    r->status = -errno;
    return;
  }
  rc = fstat(fd, &st) < 0 ? -errno : read_all(r, fd, &st);
  close(fd);
  r->status = rc;
}

/* Writes all of the data to fd, chunk by chunk. Returns 0 or a negative errno. */
static int write_all(lr_fs *r, int fd) {
  const char *p = r->buf ? r->buf : r->data;
  size_t pos = 0;
  while (pos < r->dlen) {
    size_t n = r->dlen - pos;
    ssize_t put;
    if (n > WRITE_CHUNK) n = WRITE_CHUNK;
    if (is_cancelled(r)) return UV_ECANCELED;
    put = write(fd, p + pos, n);
    if (put < 0 && errno == EINTR) continue;
    if (put < 0) return -errno;
    if (put == 0) return UV_EIO;
    pos += (size_t)put;
  }
  return 0;
}

/* Borrowed data goes to a regular file straight from the string; to anything else
 * through a copy, so that the cancel hook never waits on a blocked pipe. */
static int take_data(lr_fs *r, int fd) {
  struct stat st;
  int rc = take_loan(r);
  if (rc < 0 || __atomic_load_n(&r->borrowed, __ATOMIC_RELAXED) == LR_LEND_NONE) return rc;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) return 0;
  if ((r->buf = malloc(r->dlen)) == NULL) return UV_ENOMEM;
  memcpy(r->buf, r->data, r->dlen);
  give_back(r);
  return 0;
}

/* ---- creating a file without holding its directory's lock ----
 *
 * open(O_CREAT) picks the new inode while it holds the directory's lock. That is
 * short, except on ext4 without a journal after mass deletes: for a minute or so it
 * skips every recently freed inode one by one, ~150 us a file, and two runners
 * creating files in one directory only queue on the lock (2,000 files: 0.30 s one
 * at a time, 0.37 s side by side). An unnamed file (O_TMPFILE) gets its inode without
 * that lock and is linked under its name once written, so two runners pick inodes
 * side by side (0.21-0.25 s). take() asks for it only where creating has been slow,
 * and only for a plain write_file (no append, no atomic) of a path that does not
 * exist: anything else, a filesystem without O_TMPFILE, or a name that appeared in
 * the meantime takes the named path. The file then appears whole, and a write that
 * is cancelled or fails half-way leaves nothing behind.
 * LUARUN_FS_CREATE=named or =unnamed fixes the choice (tests, comparisons). */
enum { CREATE_AUTO, CREATE_NAMED, CREATE_UNNAMED };
static int create_choice;   /* set once (create_once), before any job is queued */
static int unnamed_refused; /* O_TMPFILE or linking it is not supported here */
static pthread_once_t create_once = PTHREAD_ONCE_INIT;

/* LUARUN_FS_CREATE, and the kernel: before Linux 6.0, O_TMPFILE did not apply the
 * umask on filesystems without POSIX ACLs (ext4 mounted noacl, tmpfs, ZFS), so new
 * files would have been world-writable there. */
static void read_create_choice(void) {
  const char *env = getenv("LUARUN_FS_CREATE");
  struct utsname u;
  int major = 0;
  create_choice = env && strcmp(env, "named") == 0     ? CREATE_NAMED
                  : env && strcmp(env, "unnamed") == 0 ? CREATE_UNNAMED
                                                       : CREATE_AUTO;
  if (uname(&u) == 0) major = atoi(u.release);
  if (major < 6) unnamed_refused = 1;
}

/* Not for a mode without the owner's write bit: the close by name that tells inotify
 * (write_unnamed) could not open such a file without privileges. */
static int may_create_unnamed(const lr_fs *r) {
  return create_choice != CREATE_NAMED &&
         !__atomic_load_n(&unnamed_refused, __ATOMIC_RELAXED) &&
         (r->opts & (LR_FS_ATOMIC | LR_FS_APPEND)) == 0 && (r->mode & S_IWUSR);
}

/* errno says that this filesystem or kernel cannot do it (not that this call failed):
 * stop asking, for the rest of the process. */
static void refuse_if_unsupported(int err) {
  if (err == EOPNOTSUPP || err == EISDIR || err == EINVAL || err == ENOSYS || err == EPERM)
    __atomic_store_n(&unnamed_refused, 1, __ATOMIC_RELAXED);
}

/* An unnamed file in r->path's directory, or -1 to take the named path: the path
 * exists (even as a dangling link), or O_TMPFILE is refused. */
static int open_unnamed(lr_fs *r) {
  char dir[4096];
  const char *slash = strrchr(r->path, '/');
  size_t n = slash == NULL ? 0 : slash == r->path ? 1 : (size_t)(slash - r->path);
  struct stat st;
  int fd;
  if (fstatat(AT_FDCWD, r->path, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
    return -1;
  if (n >= sizeof dir) return -1;
  if (n == 0) dir[n++] = '.';
  else memcpy(dir, r->path, n);
  dir[n] = 0;
  fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, r->mode);
  if (fd < 0) refuse_if_unsupported(errno);
  return fd;
}

/* Gives the unnamed file fd its name. linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH
 * before Linux 6.10; otherwise the file's /proc/self/fd link works. 0 or -errno. */
static int link_unnamed(int fd, const char *path) {
  char proc[40];
  if (linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH) == 0) return 0;
  if (errno != ENOENT && errno != EPERM) return -errno;
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0) return 0;
  if (errno == ENOENT && access("/proc/self/fd", F_OK) != 0) return UV_ENOSYS; /* no /proc */
  return -errno;
}

/* write_file as an unnamed file, linked when written. Returns 0, a negative errno
 * (reported: nothing was created), or 1: take the named path. */
static int write_unnamed(lr_fs *r, uint64_t t0) {
  int fd = open_unnamed(r), rc, wfd;
  if (fd < 0) return 1;
  dir_done(r, uv_hrtime() - t0);
  if ((rc = take_data(r, fd)) == 0 && (rc = write_all(r, fd)) == 0 &&
      (rc = is_cancelled(r) ? UV_ECANCELED : link_unnamed(fd, r->path)) < 0 &&
      rc != UV_ECANCELED) {
    /* Not linked: the name appeared meanwhile (the named path overwrites it, as
     * open(O_TRUNC) does), or linking fails here (the named path says why). */
    refuse_if_unsupported(-rc);
    rc = 1;
  }
  /* Done with the task's string, or on to the named path, which takes it again once
   * its file is open: until then a cancel must not wait (that open may block). */
  if (rc == 1) offer_again(r);
  else give_back(r);
  if (close(fd) < 0 && rc == 0 && errno != EINTR) rc = -errno; /* linked all the same */
  wfd = rc == 0 ? open(r->path, O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC) : -1;
  if (wfd >= 0) {
    /* inotify named the writes and the close after "#<inode>" (the file had no name
     * yet): one more close under its name, for watchers waiting for IN_CLOSE_WRITE. */
    close(wfd);
  }
  return rc;
}

/* Opens the target of a plain (not atomic) write_file; *created says whether this
 * open made the file, so that a write that fails removes it (a new file appears
 * whole or not at all: a full disk left an empty file under the name, issue 23).
 * O_EXCL first tells creating apart from truncating an existing file. */
static int open_target(lr_fs *r, int *created) {
  int fd;
  *created = 0;
  if (!(r->flags & O_CREAT)) return open(r->path, r->flags | O_CLOEXEC, r->mode);
  fd = open(r->path, (r->flags & ~O_TRUNC) | O_EXCL | O_CLOEXEC, r->mode);
  if (fd >= 0) *created = 1;
  else if (errno == EEXIST) fd = open(r->path, r->flags | O_CLOEXEC, r->mode);
  return fd;
}

static void write_file_job(lr_fs *r) {
  int atomic = (r->opts & LR_FS_ATOMIC) != 0, tries = 0, fd, rc, created = 0;
  uint64_t t0;
  if (atomic || r->dlen > LONG_JOB) flush(r); /* an fsync, or much to write */
  t0 = uv_hrtime();
  if (r->unnamed) {
    if ((rc = write_unnamed(r, t0)) <= 0) goto done;
    t0 = uv_hrtime(); /* the named path after all: time its own open */
  }
  if (is_cancelled(r)) { /* taken by a runner just before the cancel came */
    rc = UV_ECANCELED;
    goto done;
  }
  if (!atomic) fd = open_target(r, &created);
  for (; atomic;) {
    if ((rc = temp_name(r)) < 0) goto done;
    fd = open(r->path2, r->flags | O_CLOEXEC, r->mode);
    if (fd >= 0 || errno != EEXIST || ++tries >= TEMP_TRIES) break;
  }
  if (fd < 0) {
    rc = -errno;
    goto done;
  }
  dir_done(r, uv_hrtime() - t0);
  if ((rc = take_data(r, fd)) == 0) rc = write_all(r, fd);
  give_back(r);
  if (rc == 0 && atomic && fsync(fd) < 0) rc = -errno;
  if (close(fd) < 0 && rc == 0 && errno != EINTR) rc = -errno;
  if (atomic) {
    if (rc == 0 && is_cancelled(r)) rc = UV_ECANCELED;
    if (rc == 0 && rename(r->path2, r->path) < 0) rc = -errno;
    if (rc < 0) unlink(r->path2);
  } else if (rc < 0 && created) {
    unlink(r->path); /* failed or cancelled: the new file goes */
  }
done:
  give_back(r);
  r->status = rc;
}

/* ---- the job queue: runner threads of our own ----
 *
 * Jobs are not handed to a thread one by one: each hand-over costs a wake-up of a
 * runner and one of the loop, and 2,000 small reads would spend more on those
 * (futexes, eventfd, epoll; worse on a loaded machine) than on their system calls.
 * Instead:
 * - start_job only stages a request (loop thread, no lock). Just before the loop
 *   polls (q->prep, after the scheduler has run every ready task), the staged ones
 *   join the queue in one go, and idle runners are woken (or started) for them:
 *   runners take requests from the queue until it is empty, at most max_runners()
 *   of them working at once.
 * - Runners hand finished requests back through the done list. The loop is told
 *   (q->async) when BATCH are waiting or the oldest has waited LATENCY_NS, before a
 *   job that may take long (a large file, an fsync), and when the queue runs dry.
 * 2,000 reads then cost about a hundred wake-ups instead of several per read.
 *
 * Why threads of our own, not uv_queue_work (issue 23): an open() can block for
 * good (a FIFO without a writer, a hung NFS or FUSE mount). On libuv's pool such a
 * job keeps one of its four threads, and at exit libuv joins its threads, so the
 * process never ends; with as many stuck jobs as runners, no file call ever ran
 * again. Here a runner whose job was abandoned (its task cancelled, as lr.timeout
 * does) or has run for STUCK_NS no longer counts toward max_runners(): another is
 * started beside it (up to MAX_THREADS in all), and nothing ever joins a runner, so
 * exit does not wait for one stuck in a system call. Runners idle for IDLE_NS end.
 * The queue is freed by the last of the loop (its handles closed) and the runners. */

#define MAX_RUNNERS 4
#define MAX_THREADS 64                  /* runner threads in all, stuck ones included */
#define BATCH 32
#define HANDOVER 64
#define LATENCY_NS 200000u
#define STUCK_NS 100000000u             /* a job this long no longer counts (100 ms) */
#define CHECK_MS 50                     /* how often waiting jobs look for stuck runners */
#define IDLE_NS 2000000000u             /* an idle runner ends after 2 s */

typedef struct runner {
  struct lr_fsq *q;
  lr_fs *job;                /* the job it runs now, or NULL (q->mu) */
  uint64_t since;            /* when it took that job (q->mu) */
  struct runner *next;       /* q->runners (q->mu) */
} runner;

typedef struct lr_fsq {
  lr_runtime *rt;
  struct lr_fsq *next;       /* queues of other runtimes */
  uv_async_t async;          /* runners -> loop: done requests to deliver */
  pthread_mutex_t mu;        /* guards the fields below up to `staged` */
  pthread_cond_t cv;         /* idle runners wait here for jobs */
  lr_fs *todo, *todo_tail;   /* waiting for a runner (step S_PENDING) */
  int ntodo;
  lr_fs *done, *done_tail;   /* finished, not yet delivered */
  uint64_t done_since;       /* hrtime of the oldest in done */
  int ndone, notified;
  runner *runners;           /* every runner thread alive */
  int threads, idle;         /* runner threads alive, and of them waiting on cv */
  uint32_t wdir[MAX_THREADS]; /* directories that a runner writes a file in now */
  int nwdir;
  uint32_t open_us[4];       /* the last write jobs' open() times, in us (mu) */
  int open_i;
  int closing;               /* the runtime closes: no more async sends */
  int loop_done;             /* the loop side is done with the queue */
  /* Loop thread only: requests of this turn of the scheduler, handed over together
   * just before the loop polls (prep), so that a burst costs one hand-over. */
  lr_fs *staged, *staged_tail;
  int nstaged;
  uv_prepare_t prep;
  uv_timer_t check;          /* while jobs wait: look for stuck runners */
  int inflight;              /* jobs whose task waits: the async handle is ref'd */
  int nclosed;               /* handles (async, prep, check) closed */
} fsq;

static fsq *queues; /* touched by loop threads only, one runtime per loop thread */

/* Runners that work at once: one per core (file I/O from the page cache is CPU work,
 * and creating files in one directory serialises on its lock anyway), at least 2 so
 * that a slow disk read does not hold up everything else, at most MAX_RUNNERS. */
static int max_runners(void) {
  static int n;
  if (n == 0) {
    unsigned cores = uv_available_parallelism();
    n = cores < 2 ? 2 : cores > MAX_RUNNERS ? MAX_RUNNERS : (int)cores;
  }
  return n;
}

static void push_done(fsq *q, lr_fs *r) {
  r->next_job = NULL;
  if (q->done_tail) q->done_tail->next_job = r;
  else q->done = r, q->done_since = uv_hrtime();
  q->done_tail = r;
  q->ndone++;
}

/* Tells the loop about the done list (q->mu held). */
static void notify_locked(fsq *q) {
  if (q->ndone == 0 || q->notified || q->closing) return;
  q->notified = 1;
  uv_async_send(&q->async);
}

/* A job is about to do something that may take long: deliver what is done first. */
static void flush(lr_fs *r) {
  fsq *q = r->jobq;
  pthread_mutex_lock(&q->mu);
  notify_locked(q);
  pthread_mutex_unlock(&q->mu);
}

static int dir_busy(fsq *q, uint32_t dir) {
  int i;
  for (i = 0; i < q->nwdir; i++)
    if (q->wdir[i] == dir) return 1;
  return 0;
}

/* The first request in the queue that may start now (q->mu held), or NULL.
 * Creating a file takes its directory's lock. Usually that is short, and runners
 * creating files in one directory side by side finish sooner than one after the
 * other (2,000 files of 4 KiB: 0.020 s against 0.023-0.026 s, medians). But when
 * creating is slow (ext4 skipping the inodes freed in the last minute after a mass
 * delete: ~150 us an open), the second runner only spins on the lock, twice the CPU
 * for the same time; then new files are created unnamed, which takes no lock until
 * the name goes in (see write_unnamed), and any other write into a directory where
 * another runner is creating a file waits while the runner does something else. */
#define SLOW_OPEN_US 50
static lr_fs *take(fsq *q) {
  lr_fs *r, *prev = NULL;
  int i, slow = 1;
  /* Slow: the last four opens all were. One slow open (the first file of a fresh
   * directory takes ~0.6 ms) says nothing. */
  for (i = 0; i < 4; i++) slow &= q->open_us[i] > SLOW_OPEN_US;
  for (r = q->todo; r; prev = r, r = r->next_job)
    if (r->op != LR_FS_WRITE_FILE || !slow || !dir_busy(q, r->dir) ||
        may_create_unnamed(r))
      break;
  if (r == NULL) return NULL;
  if (prev) prev->next_job = r->next_job;
  else q->todo = r->next_job;
  if (q->todo_tail == r) q->todo_tail = prev;
  q->ntodo--;
  if (r->op == LR_FS_WRITE_FILE) {
    /* Slow to create here: new files are created unnamed, side by side (above). */
    r->unnamed = (slow || create_choice == CREATE_UNNAMED) && may_create_unnamed(r);
    if (r->unnamed) r->dir_free = 1; /* does not take the directory's lock */
    else q->wdir[q->nwdir++] = r->dir;
  }
  r->step = S_ONE; /* running: the cancel hook can no longer take it back */
  return r;
}

/* The write job r no longer needs its directory to itself (q->mu held). */
static void untake(fsq *q, lr_fs *r) {
  int i;
  if (r->op != LR_FS_WRITE_FILE || r->dir_free) return;
  for (i = 0; q->wdir[i] != r->dir; i++) {}
  q->wdir[i] = q->wdir[--q->nwdir];
  r->dir_free = 1;
}

/* write_file_job: the file is open (created), the rest does not take the directory
 * lock: another runner may create the next file meanwhile. */
static void dir_done(lr_fs *r, uint64_t open_ns) {
  fsq *q = r->jobq;
  pthread_mutex_lock(&q->mu);
  q->open_us[q->open_i++ & 3] = (uint32_t)(open_ns / 1000);
  untake(q, r);
  pthread_mutex_unlock(&q->mu);
}

/* fs.open: the open(2) alone, here rather than on libuv's pool, since it may block
 * for good (a FIFO). A descriptor that arrives after the cancel is closed. */
static void open_job(lr_fs *r) {
  int fd = open(r->path, r->flags | O_CLOEXEC, r->mode);
  if (fd < 0) {
    r->status = -errno;
  } else if (is_cancelled(r)) {
    close(fd);
    r->status = UV_ECANCELED;
  } else {
    r->fd = fd;
  }
}

static void run_job(lr_fs *r) {
  switch (r->op) {
    case LR_FS_READ_FILE: read_file_job(r); break;
    case LR_FS_WRITE_FILE: write_file_job(r); break;
    default: open_job(r); break;
  }
}

/* A request nobody will deliver: the runtime is gone (or going). */
static void discard(lr_fs *r) {
  if (r->fd >= 0) close(r->fd); /* an fs.open job's descriptor */
  r->fd = -1;
  lr_fs_free(r);
}

static void free_queue(fsq *q) {
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->cv);
  free(q);
}

/* Waits on q->cv for at most IDLE_NS (q->mu held). Returns 0 when woken. */
static int idle_wait(fsq *q) {
  struct timespec ts;
  int rc;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += (time_t)(IDLE_NS / 1000000000u);
  q->idle++;
  rc = pthread_cond_timedwait(&q->cv, &q->mu, &ts);
  q->idle--;
  return rc;
}

static void *runner_main(void *arg) {
  runner *w = arg, **pp;
  fsq *q = w->q;
  lr_fs *r;
  int last;
  lr_alloc_prime_thread(); /* read_file's buffers come from this thread's arena */
  pthread_mutex_lock(&q->mu);
  for (;;) {
    if (!q->closing && (r = take(q)) != NULL) {
      w->job = r;
      w->since = uv_hrtime();
      pthread_mutex_unlock(&q->mu);
      run_job(r);
      pthread_mutex_lock(&q->mu);
      w->job = NULL;
      untake(q, r);
      if (q->closing) {
        discard(r);
        continue;
      }
      push_done(q, r);
      if (q->todo && (q->ndone >= BATCH || uv_hrtime() - q->done_since > LATENCY_NS))
        notify_locked(q);
      continue;
    }
    notify_locked(q); /* nothing this runner may start: deliver what is done */
    if (q->closing) break;
    /* A write waiting for its directory is taken by the runner writing there. */
    if (idle_wait(q) != 0 && (q->todo == NULL || q->closing)) break;
  }
  for (pp = &q->runners; *pp != w; pp = &(*pp)->next) {}
  *pp = w->next;
  q->threads--;
  last = q->threads == 0 && q->loop_done;
  pthread_mutex_unlock(&q->mu);
  free(w);
  if (last) free_queue(q);
  return NULL;
}

/* How many runner threads to start now for the jobs that no idle runner will take
 * (q->mu held): runners that work count up to max_runners(); a runner whose job was
 * abandoned or has run for STUCK_NS does not. */
static int to_start(fsq *q) {
  uint64_t now = uv_hrtime();
  int stuck = 0, cap, want;
  runner *w;
  for (w = q->runners; w; w = w->next)
    if (w->job && (is_cancelled(w->job) || now - w->since > STUCK_NS)) stuck++;
  cap = max_runners() + stuck;
  if (cap > MAX_THREADS) cap = MAX_THREADS;
  want = q->ntodo - q->idle;
  if (want > cap - q->threads) want = cap - q->threads;
  return want > 0 ? want : 0;
}

/* Starts n runner threads (loop thread, q->mu not held). Returns how many started. */
static int start_runners(fsq *q, int n) {
  pthread_attr_t attr;
  int started = 0;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  while (started < n) {
    runner *w = calloc(1, sizeof *w);
    pthread_t th;
    if (w == NULL) break;
    w->q = q;
    pthread_mutex_lock(&q->mu);
    w->next = q->runners;
    q->runners = w;
    q->threads++;
    pthread_mutex_unlock(&q->mu);
    if (pthread_create(&th, &attr, runner_main, w) != 0) {
      runner **pp;
      pthread_mutex_lock(&q->mu);
      for (pp = &q->runners; *pp != w; pp = &(*pp)->next) {}
      *pp = w->next;
      q->threads--;
      pthread_mutex_unlock(&q->mu);
      free(w);
      break;
    }
    started++;
  }
  pthread_attr_destroy(&attr);
  return started;
}

static void check_cb(uv_timer_t *h);

/* Wakes idle runners for the queued jobs and starts more if some are stuck or none
 * idle; while jobs still wait for a runner, looks again every CHECK_MS. */
static void staff(fsq *q) {
  int n, wake;
  pthread_mutex_lock(&q->mu);
  wake = q->ntodo < q->idle ? q->ntodo : q->idle;
  while (wake-- > 0) pthread_cond_signal(&q->cv);
  n = to_start(q);
  pthread_mutex_unlock(&q->mu);
  if (n > 0) start_runners(q, n);
  pthread_mutex_lock(&q->mu);
  n = q->ntodo > q->idle;
  pthread_mutex_unlock(&q->mu);
  if (n && !uv_is_active((uv_handle_t *)&q->check))
    uv_timer_start(&q->check, check_cb, CHECK_MS, CHECK_MS);
  else if (!n)
    uv_timer_stop(&q->check);
}

static void check_cb(uv_timer_t *h) {
  staff(h->data);
}

/* Jobs whose task waits keep the loop alive through the async handle; abandoned
 * ones (stuck in open(), say) do not. */
static void hold(fsq *q, int d) {
  if (q->inflight == 0 && d > 0) uv_ref((uv_handle_t *)&q->async);
  q->inflight += d;
  if (q->inflight == 0) uv_unref((uv_handle_t *)&q->async);
}

static void end(lr_fs *r);

/* Hands the done requests to their tasks (loop thread). */
static void drain(fsq *q) {
  lr_fs *r;
  pthread_mutex_lock(&q->mu);
  r = q->done;
  q->done = q->done_tail = NULL;
  q->ndone = q->notified = 0;
  pthread_mutex_unlock(&q->mu);
  while (r) {
    lr_fs *next = r->next_job;
    if (q->rt->closing || r->task == NULL) {
      discard(r); /* nothing will resume a task, or it was cancelled meanwhile */
    } else {
      hold(q, -1);
      end(r);
    }
    r = next;
  }
}

static void async_cb(uv_async_t *a) {
  drain(container_of(a, fsq, async));
}

static void closed_cb(uv_handle_t *h) {
  fsq *q = h->data;
  int last;
  if (++q->nclosed < 3) return;
  pthread_mutex_lock(&q->mu);
  q->loop_done = 1;
  last = q->threads == 0;
  pthread_mutex_unlock(&q->mu);
  if (last) free_queue(q);
}

static fsq *find_queue(lr_runtime *rt) {
  fsq *q;
  for (q = queues; q; q = q->next)
    if (q->rt == rt) return q;
  return NULL;
}

/* The runtime closes (before its loop). Runners still in a job finish it on their
 * own and free it; none of them will read a task's string after this returns. */
static void close_queue(lr_runtime *rt) {
  fsq *q = find_queue(rt), **pp;
  runner *w;
  if (q == NULL) return;
  for (pp = &queues; *pp != q; pp = &(*pp)->next) {}
  *pp = q->next;
  pthread_mutex_lock(&q->mu);
  q->closing = 1;
  pthread_cond_broadcast(&q->cv);
  for (w = q->runners; w; w = w->next)
    if (w->job) {
      /* A task that never resumed (os.exit, say) may have lent its string: the
       * runner gives it back without needing q->mu (see take_data). */
      __atomic_store_n(&w->job->cancelled, 1, __ATOMIC_RELEASE);
      wait_given_back(w->job);
    }
  while (q->todo) { /* queued, never started */
    lr_fs *r = q->todo;
    q->todo = r->next_job;
    lr_fs_free(r);
  }
  q->todo_tail = NULL;
  q->ntodo = 0;
  pthread_mutex_unlock(&q->mu);
  drain(q);
  uv_close((uv_handle_t *)&q->async, closed_cb);
  uv_close((uv_handle_t *)&q->prep, closed_cb);
  uv_close((uv_handle_t *)&q->check, closed_cb);
  /* Staged requests never started: their tasks will not be resumed any more. */
  while (q->staged) {
    lr_fs *r = q->staged;
    q->staged = r->next_job;
    lr_fs_free(r);
  }
}

static fsq *get_queue(lr_runtime *rt) {
  fsq *q = find_queue(rt);
  pthread_condattr_t ca;
  if (q) return q;
  lr_alloc_prime_malloc(); /* runners fill blocks that the loop thread frees */
  pthread_once(&create_once, read_create_choice);
  if ((q = calloc(1, sizeof *q)) == NULL) return NULL;
  if (uv_async_init(&rt->loop, &q->async, async_cb) < 0) {
    free(q);
    return NULL;
  }
  uv_unref((uv_handle_t *)&q->async); /* ref'd while a task waits for a job (hold) */
  uv_prepare_init(&rt->loop, &q->prep);
  uv_timer_init(&rt->loop, &q->check);
  uv_unref((uv_handle_t *)&q->check);
  q->async.data = q->prep.data = q->check.data = q;
  pthread_mutex_init(&q->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&q->cv, &ca);
  pthread_condattr_destroy(&ca);
  q->rt = rt;
  q->next = queues;
  queues = q;
  lr_runtime_on_close(rt, close_queue);
  return q;
}

/* Takes r back if no runner has started it (cancel hook). */
static int unqueue(lr_fs *r) {
  fsq *q = r->jobq;
  lr_fs **pp, **head, *prev = NULL;
  lr_fs **tail;
  int found = 0;
  if (r->step == S_STAGED) {
    head = &q->staged, tail = &q->staged_tail;
  } else {
    pthread_mutex_lock(&q->mu);
    head = &q->todo, tail = &q->todo_tail;
  }
  if (r->step == S_STAGED || r->step == S_PENDING) {
    for (pp = head; *pp != r; pp = &(*pp)->next_job) prev = *pp;
    *pp = r->next_job;
    if (*tail == r) *tail = prev;
    if (r->step == S_STAGED) q->nstaged--;
    else q->ntodo--;
    found = 1;
  }
  if (head == &q->todo) pthread_mutex_unlock(&q->mu);
  return found;
}

static void prep_cb(uv_prepare_t *h);

/* Hands the staged requests to the runners (just before the loop polls, or once
 * HANDOVER are staged). */
static void hand_over(fsq *q) {
  lr_fs *r;
  uv_prepare_stop(&q->prep);
  if (q->staged == NULL) return;
  for (r = q->staged; r; r = r->next_job) r->step = S_PENDING;
  pthread_mutex_lock(&q->mu);
  if (q->todo_tail) q->todo_tail->next_job = q->staged;
  else q->todo = q->staged;
  q->todo_tail = q->staged_tail;
  q->ntodo += q->nstaged;
  pthread_mutex_unlock(&q->mu);
  q->staged = q->staged_tail = NULL;
  q->nstaged = 0;
  staff(q);
}

static void prep_cb(uv_prepare_t *h) {
  hand_over(h->data);
}

/* FNV-1a of the directory part of path ("" for a bare name). */
static uint32_t dir_hash(const char *path) {
  const char *end = strrchr(path, '/');
  uint32_t h = 2166136261u;
  for (; end && path < end; path++) h = (h ^ (unsigned char)*path) * 16777619u;
  return h;
}

/* Stages the job of a read_file or write_file (loop thread). */
static int start_job(lr_fs *r) {
  fsq *q = get_queue(r->rt);
  if (q == NULL) return UV_ENOMEM;
  if (r->op == LR_FS_WRITE_FILE) {
    if (r->dlen > COPY_MAX) {
      r->borrowed = LR_LEND_OFFERED;
    } else if (r->dlen > 0) {
      if ((r->buf = malloc(r->dlen)) == NULL) return UV_ENOMEM;
      memcpy(r->buf, r->data, r->dlen);
    }
  }
  if (r->op == LR_FS_WRITE_FILE) r->dir = dir_hash(r->path);
  r->jobq = q;
  r->step = S_STAGED;
  r->next_job = NULL;
  if (q->staged_tail) q->staged_tail->next_job = r;
  else q->staged = r, uv_prepare_start(&q->prep, prep_cb);
  q->staged_tail = r;
  hold(q, 1);
  /* A long burst goes in parts, so that the runners start while it is being made. */
  if (++q->nstaged >= HANDOVER) hand_over(q);
  return 0;
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
      return start_job(r); /* opens that may block for good: our own runners */
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
  if (r->jobq) {
    fsq *q = r->jobq;
    __atomic_store_n(&r->cancelled, 1, __ATOMIC_RELEASE);
    hold(q, -1);
    if (unqueue(r)) { /* never started */
      lr_task_wake(t, LR_WAKE_CANCELLED);
      lr_fs_free(r);
      return;
    }
    wait_given_back(r); /* the job may be reading this task's string */
    staff(q);           /* its runner may be stuck: it no longer counts */
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
