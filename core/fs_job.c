/* fs_job.c: read_file, write_file and fs.open's open as plain system calls, run by the
 * file runners (fs_runners.c) on threads of their own; the job touches only its
 * request, never Lua, and ends with r->status.
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
#include "lr_subsys.h"

#define READ_CHUNK ((size_t)32 << 20)  /* largest single read of read_file */
#define FIRST_CAP ((size_t)64 << 10)   /* read_file's buffer when the size is unknown */
#define TEMP_TRIES 8
#define POPULATE_MIN ((size_t)8 << 20) /* reads whose buffer is faulted in first */
#define PAR_MIN ((size_t)16 << 20)     /* files read in parallel slices */
#define PAR_MAX 4                      /* at most this many slices */

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

/* ---- read_file and write_file: one job each ----
 *
 * The whole call (open, fstat, read... or open, write..., fsync, rename, close) runs
 * as plain system calls on one runner: one queue round trip and one loop wakeup per
 * call instead of one per step. The job touches only the request (never Lua) and
 * ends with r->status (0 or a negative errno, which is libuv's code on Unix).
 *
 * Cancellation sets r->cancelled: the job stops at its next chunk boundary, and an
 * atomic write removes its temporary file instead of renaming it. The task does not
 * wait for that (the job is orphaned and frees the request when it ends) except while
 * a write job still reads a borrowed Lua string (below).
 *
 * Write data: up to LR_FS_COPY_MAX bytes are copied into r->buf before the job is
 * queued. A longer string is read in place (r->borrowed): it is anchored on the parked
 * task's stack, so the cancel hook waits (lend_mu) until the job is done with it.
 * The job takes the loan only once its file is open (take_data): until then the
 * cancel hook revokes it instead of waiting, since open() itself may block for good
 * (a FIFO without a reader). Only regular files are written from the string
 * directly; for anything else (a pipe could block forever) the job first copies it,
 * so that the wait stays short. */

#define LONG_JOB ((size_t)1 << 20)     /* bytes after which a job tells the loop first */

static pthread_mutex_t lend_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t lend_cv = PTHREAD_COND_INITIALIZER;

static int is_cancelled(lr_fs *r) {
  return __atomic_load_n(&r->cancelled, __ATOMIC_ACQUIRE);
}

int lr_fs_job_cancelled(lr_fs *r) {
  return is_cancelled(r);
}

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
void lr_fs_loan_revoke(lr_fs *r) {
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
  if (want > LONG_JOB) lr_fs_job_flush(r);
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
    if (n > LR_FS_WRITE_CHUNK) n = LR_FS_WRITE_CHUNK;
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
int lr_fs_may_create_unnamed(const lr_fs *r) {
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
  lr_fs_job_opened(r, uv_hrtime() - t0);
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
  if (atomic || r->dlen > LONG_JOB) lr_fs_job_flush(r); /* an fsync, or much to write */
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
  lr_fs_job_opened(r, uv_hrtime() - t0);
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


/* Whether every new file is to be created unnamed (LUARUN_FS_CREATE=unnamed). */
int lr_fs_unnamed_forced(void) {
  return create_choice == CREATE_UNNAMED;
}

/* Reads the creation choice once, before the first job (loop thread). */
void lr_fs_job_setup(void) {
  pthread_once(&create_once, read_create_choice);
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

void lr_fs_run_job(lr_fs *r) {
  switch (r->op) {
    case LR_FS_READ_FILE: read_file_job(r); break;
    case LR_FS_WRITE_FILE: write_file_job(r); break;
    default: open_job(r); break;
  }
}
