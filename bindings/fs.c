/* fs.c: the `luarun.fs` module: file I/O that suspends the calling task.
 *
 * Each function checks its arguments (misuse raises, naming the function and the
 * argument), builds an lr_fs request (core/fs.c) and parks the task until libuv has
 * done the work; then a result function below pushes what the call returns. I/O
 * failures return nil, err (kind, message, path, code).
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "bindings.h"

#define FILE_MT "luarun.File"
#define MAX_READ ((lua_Integer)0x7ffff000) /* Linux's largest single read */

/* ---- argument checks ---- */

static const char *check_path(lua_State *L, int arg) {
  size_t len;
  const char *s;
  if (lua_type(L, arg) != LUA_TSTRING) luaL_typeerror(L, arg, "string");
  s = lua_tolstring(L, arg, &len);
  if (strlen(s) != len) luaL_argerror(L, arg, "path contains a zero byte");
  return s;
}

static const char *check_data(lua_State *L, int arg, size_t *len) {
  if (lua_type(L, arg) != LUA_TSTRING) luaL_typeerror(L, arg, "string");
  return lua_tolstring(L, arg, len);
}

/* An optional non-negative integer argument; def when absent. */
static lua_Integer opt_count(lua_State *L, int arg, lua_Integer def, const char *what) {
  lua_Integer v;
  if (lua_isnoneornil(L, arg)) return def;
  if (!lua_isinteger(L, arg)) luaL_typeerror(L, arg, "integer");
  v = lua_tointeger(L, arg);
  if (v < 0) luaL_argerror(L, arg, what);
  return v;
}

/* opts.<field>: a boolean (nil is false). opts is at arg (a table or nil). */
static int opt_flag(lua_State *L, int arg, const char *field) {
  int v;
  if (lua_isnoneornil(L, arg)) return 0;
  lua_getfield(L, arg, field);
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
    luaL_argerror(L, arg, lua_pushfstring(L, "opts.%s must be a boolean", field));
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static int opt_mode(lua_State *L, int arg, int def) {
  lua_Integer v;
  if (lua_isnoneornil(L, arg)) return def;
  lua_getfield(L, arg, "mode");
  if (lua_isnil(L, -1)) v = def;
  else if (!lua_isinteger(L, -1) || (v = lua_tointeger(L, -1)) < 0 || v > 07777)
    return luaL_argerror(L, arg, "opts.mode must be an integer from 0 to 0x0fff");
  lua_pop(L, 1);
  return (int)v;
}

static void check_opts(lua_State *L, int arg) {
  if (!lua_isnoneornil(L, arg)) luaL_checktype(L, arg, LUA_TTABLE);
}

static lr_fs *new_req(lua_State *L, lr_task *t, int op, const char *p, const char *p2) {
  lr_fs *r = lr_fs_new(t->rt, t, op, p, p2);
  if (r == NULL) luaL_error(L, "not enough memory");
  return r;
}

/* ---- results ---- */

static int push_true(lua_State *L, lr_fs *r) {
  (void)r;
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- read_file's string, built where the data was read ----
 *
 * A Lua 5.4 string cannot be made from memory we already hold: lua_pushlstring
 * allocates a block (header, then the bytes) and copies into it, and for a large
 * file that copy into fresh memory costs more than the read (200 MB: ~110 ms vs
 * ~35 ms). So the job reads into a block with room for the header in front
 * (r->hdr), and while lua_pushlstring runs, a wrapper around the state's allocator
 * hands exactly that block out for the string. Lua then writes its header into the
 * room, and its copy has the same source and destination: glibc returns at once, and
 * ASan's memcpy check exempts that case (compilers emit it for x = x themselves).
 *
 * This is done only when Lua will later free the block with free(): under
 * luaL_newstate's allocator (a realloc/free wrapper: stock lua5.4), or under the
 * executable's (alloc.c) for blocks above its small sizes; and only if the header
 * size could be measured (probe_header). */

static pthread_once_t probed = PTHREAD_ONCE_INIT;
static lua_Alloc std_alloc; /* luaL_newstate's allocator */
static size_t str_header;   /* bytes before a long string's contents, 0 if unknown */

struct in_place {
  lua_Alloc f;          /* the state's own allocator */
  void *ud;
  char *block;          /* the block to hand out, or NULL once handed out */
  size_t size;          /* the size the string's allocation asks for */
  size_t seen;          /* probe_header: size of the first string allocation */
};

static void *in_place_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  struct in_place *h = ud;
  if (ptr == NULL && osize == LUA_TSTRING) {
    if (h->block && nsize == h->size) {
      void *p = h->block;
      h->block = NULL;
      return p;
    }
    if (h->seen == 0) h->seen = nsize;
  }
  return h->f(h->ud, ptr, osize, nsize);
}

/* Runs lua_pushlstring under the wrapper; the allocator is restored on every path
 * (an error is caught and raised again after). */
static int pushlstring(lua_State *L) {
  lua_pushlstring(L, lua_touserdata(L, 1), (size_t)lua_tointeger(L, 2));
  return 1;
}

static int push_wrapped(lua_State *L, struct in_place *h, const char *s, size_t len) {
  int rc;
  lua_pushcfunction(L, pushlstring);
  lua_pushlightuserdata(L, (void *)s);
  lua_pushinteger(L, (lua_Integer)len);
  h->f = lua_getallocf(L, &h->ud);
  lua_setallocf(L, in_place_alloc, h);
  rc = lua_pcall(L, 2, 1, 0);
  lua_setallocf(L, h->f, h->ud);
  return rc;
}

/* Measures the string header, once per process (pthread_once: pool workers may load
 * this module too), on a state of its own: the size of a long string's allocation
 * minus its length and terminating zero. Leaves str_header 0 if that looks wrong. */
static void probe_header(void) {
  static const char text[] = "a string long enough not to be interned by Lua 5.4, 64 bytes.";
  struct in_place h = {0};
  lua_State *tmp = luaL_newstate();
  if (tmp == NULL) return;
  if (push_wrapped(tmp, &h, text, sizeof text - 1) == LUA_OK &&
      h.seen > sizeof text && h.seen - sizeof text <= 64) {
    str_header = h.seen - sizeof text;
    std_alloc = h.f;
  }
  lua_close(tmp);
}

/* Room to ask the read_file job for: the header, if this state can take the block. */
static size_t header_room(lua_State *L) {
  return str_header && (lua_getallocf(L, NULL) == std_alloc || lr_alloc_is_ours(L))
             ? str_header : 0;
}

static int push_data(lua_State *L, lr_fs *r) {
  struct in_place h = {0};
  int rc;
  /* In place only for a block the string nearly fills (a file of /proc grows its
   * buffer by doubling), and never for a short (interned) string. */
  if (r->boff == 0 || r->boff != str_header || r->len <= 64 || r->cap - r->len > r->len / 4) {
    lua_pushlstring(L, r->buf ? r->buf : "", r->len);
    return 1;
  }
  h.block = r->buf - r->boff;
  h.size = r->boff + r->len + 1;
  if (lua_getallocf(L, NULL) != std_alloc && !lr_alloc_takes_block(L, h.size)) {
    lua_pushlstring(L, r->buf, r->len);
    return 1;
  }
  rc = push_wrapped(L, &h, r->buf, r->len);
  if (h.block == NULL) r->buf = NULL; /* a string owns the block now */
  if (rc != LUA_OK) {
    lr_fs_free(r); /* finish() does not get to it: this raises */
    lua_error(L);
  }
  return 1;
}

static const char *type_name(uint64_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "link";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "char";
    case S_IFBLK: return "block";
    default: return "unknown";
  }
}

static void set_time(lua_State *L, const char *k, uv_timespec_t ts) {
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static int push_stat(lua_State *L, lr_fs *r) {
  const uv_stat_t *s = &r->st;
  lua_createtable(L, 0, 14);
  set_int(L, "size", s->st_size);
  set_int(L, "mode", s->st_mode & 0x1ff);
  lua_pushstring(L, type_name(s->st_mode));
  lua_setfield(L, -2, "type");
  set_time(L, "mtime", s->st_mtim);
  set_time(L, "atime", s->st_atim);
  set_time(L, "ctime", s->st_ctim);
  set_time(L, "birthtime", s->st_birthtim);
  set_int(L, "ino", s->st_ino);
  set_int(L, "dev", s->st_dev);
  set_int(L, "nlink", s->st_nlink);
  set_int(L, "uid", s->st_uid);
  set_int(L, "gid", s->st_gid);
  set_int(L, "blocks", s->st_blocks);
  set_int(L, "blksize", s->st_blksize);
  return 1;
}

static const char *dirent_type(uv_dirent_type_t t) {
  switch (t) {
    case UV_DIRENT_FILE: return "file";
    case UV_DIRENT_DIR: return "directory";
    case UV_DIRENT_LINK: return "link";
    case UV_DIRENT_FIFO: return "fifo";
    case UV_DIRENT_SOCKET: return "socket";
    case UV_DIRENT_CHAR: return "char";
    case UV_DIRENT_BLOCK: return "block";
    default: return "unknown";
  }
}

static int cmp_dirent(const void *a, const void *b) {
  return strcmp(((const uv_dirent_t *)a)->name, ((const uv_dirent_t *)b)->name);
}

/* {{name =, type =}, ...} sorted by name (byte order). uv_fs_scandir_next frees each
 * entry when it returns the next one: the names are copied before sorting, and the
 * loop goes on to UV_EOF, since libuv 1.44's cleanup misses the last entry otherwise. */
static int push_dirents(lua_State *L, lr_fs *r) {
  size_t n = r->req.result > 0 ? (size_t)r->req.result : 0, i = 0, k;
  uv_dirent_t *ents = malloc((n ? n : 1) * sizeof *ents), e;
  int oom = ents == NULL;
  while (uv_fs_scandir_next(&r->req, &e) == 0) {
    if (oom || i == n) continue; /* drained to the end all the same */
    if ((ents[i].name = strdup(e.name)) == NULL) oom = 1;
    else ents[i++].type = e.type;
  }
  if (oom) {
    for (k = 0; k < i; k++) free((char *)ents[k].name);
    free(ents);
    return luaL_error(L, "not enough memory");
  }
  qsort(ents, i, sizeof *ents, cmp_dirent);
  lua_createtable(L, (int)i, 0);
  for (k = 0; k < i; k++) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, ents[k].name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, dirent_type(ents[k].type));
    lua_setfield(L, -2, "type");
    lua_rawseti(L, -2, (lua_Integer)k + 1);
  }
  for (k = 0; k < i; k++) free((char *)ents[k].name);
  free(ents);
  return 1;
}

static int push_path2(lua_State *L, lr_fs *r) {
  lua_pushstring(L, r->path2);
  return 1;
}

static int push_exists(lua_State *L, lr_fs *r) {
  lua_pushboolean(L, r->len != 0);
  return 1;
}

/* ---- fs.* ---- */

static int fs_read_file(lua_State *L) {
  const char *path = check_path(L, 1);
  lr_task *t = lr_task_enter(L, "read_file");
  lr_fs *r = new_req(L, t, LR_FS_READ_FILE, path, NULL);
  r->flags = O_RDONLY;
  r->hdr = header_room(L);
  return lr_fs_start(L, r, push_data);
}

static int fs_write_file(lua_State *L) {
  const char *path = check_path(L, 1);
  size_t len;
  const char *data = check_data(L, 2, &len);
  int append, atomic, mode;
  lr_task *t;
  lr_fs *r;
  check_opts(L, 3);
  append = opt_flag(L, 3, "append");
  atomic = opt_flag(L, 3, "atomic");
  mode = opt_mode(L, 3, 0666);
  if (append && atomic) luaL_argerror(L, 3, "opts.append and opts.atomic exclude each other");
  t = lr_task_enter(L, "write_file");
  r = new_req(L, t, LR_FS_WRITE_FILE, path, NULL);
  r->opts = (atomic ? LR_FS_ATOMIC : 0) | (append ? LR_FS_APPEND : 0);
  r->flags = O_WRONLY | O_CREAT | (atomic ? O_EXCL : append ? O_APPEND : O_TRUNC);
  r->mode = mode;
  r->data = data; /* argument 2 stays on this task's stack while it waits */
  r->dlen = len;
  return lr_fs_start(L, r, push_true);
}

static int stat_common(lua_State *L, int op, const char *fname) {
  const char *path = check_path(L, 1);
  lr_task *t = lr_task_enter(L, fname);
  return lr_fs_start(L, new_req(L, t, op, path, NULL), push_stat);
}

static int fs_stat(lua_State *L) { return stat_common(L, LR_FS_STAT, "stat"); }
static int fs_lstat(lua_State *L) { return stat_common(L, LR_FS_LSTAT, "lstat"); }

static int fs_exists(lua_State *L) {
  const char *path = check_path(L, 1);
  lr_task *t = lr_task_enter(L, "exists");
  return lr_fs_start(L, new_req(L, t, LR_FS_EXISTS, path, NULL), push_exists);
}

static int fs_readdir(lua_State *L) {
  const char *path = check_path(L, 1);
  lr_task *t = lr_task_enter(L, "readdir");
  return lr_fs_start(L, new_req(L, t, LR_FS_SCANDIR, path, NULL), push_dirents);
}

static int fs_mkdir(lua_State *L) {
  const char *path = check_path(L, 1);
  int parents, mode;
  lr_task *t;
  lr_fs *r;
  check_opts(L, 2);
  parents = opt_flag(L, 2, "parents");
  mode = opt_mode(L, 2, 0777);
  t = lr_task_enter(L, "mkdir");
  r = new_req(L, t, parents ? LR_FS_MKDIR_P : LR_FS_MKDIR, path, NULL);
  r->mode = mode;
  return lr_fs_start(L, r, push_true);
}

static int path_call(lua_State *L, int op, const char *fname) {
  const char *path = check_path(L, 1);
  lr_task *t = lr_task_enter(L, fname);
  return lr_fs_start(L, new_req(L, t, op, path, NULL), push_true);
}

static int fs_remove(lua_State *L) { return path_call(L, LR_FS_UNLINK, "remove"); }
static int fs_rmdir(lua_State *L) { return path_call(L, LR_FS_RMDIR, "rmdir"); }

static int two_paths(lua_State *L, int op, const char *fname) {
  const char *from = check_path(L, 1), *to = check_path(L, 2);
  lr_task *t = lr_task_enter(L, fname);
  return lr_fs_start(L, new_req(L, t, op, from, to), push_true);
}

static int fs_rename(lua_State *L) { return two_paths(L, LR_FS_RENAME, "rename"); }
static int fs_copyfile(lua_State *L) { return two_paths(L, LR_FS_COPYFILE, "copyfile"); }

/* fs.mkdtemp(prefix): prefix .. six random characters, created as a directory. */
static int fs_mkdtemp(lua_State *L) {
  const char *prefix = check_path(L, 1);
  lr_task *t = lr_task_enter(L, "mkdtemp");
  lr_fs *r;
  lua_pushfstring(L, "%sXXXXXX", prefix);
  r = new_req(L, t, LR_FS_MKDTEMP, lua_tostring(L, -1), NULL);
  lua_pop(L, 1);
  return lr_fs_start(L, r, push_path2);
}

/* ---- luarun.File ---- */

/* The userdata holds a pointer, NULL once closed: the lr_file itself may outlive it
 * while a request still uses its descriptor. */
static lr_file **file_box(lua_State *L) {
  return (lr_file **)luaL_checkudata(L, 1, FILE_MT);
}

static lr_file *check_open(lua_State *L, const char *fname) {
  lr_file *f = *file_box(L);
  if (f == NULL || f->closed)
    luaL_error(L, "%s: attempt to use a closed file", fname);
  return f;
}

static lr_fs *file_req(lua_State *L, lr_file *f, lr_task *t, int op) {
  lr_fs *r = lr_fs_new(t->rt, t, op, f->path, NULL);
  if (r == NULL) luaL_error(L, "not enough memory");
  r->file = f;
  f->refs++;
  return r;
}

/* The shape of io.open's mode: "r", "w", "a", each with an optional "+" then "b". */
static int parse_flags(const char *m) {
  int fl;
  switch (*m++) {
    case 'r': fl = O_RDONLY; break;
    case 'w': fl = O_WRONLY | O_CREAT | O_TRUNC; break;
    case 'a': fl = O_WRONLY | O_CREAT | O_APPEND; break;
    default: return -1;
  }
  if (*m == '+') {
    m++;
    fl = (fl & ~O_WRONLY) | O_RDWR;
  }
  if (*m == 'b') m++;
  return *m ? -1 : fl;
}

static int push_file(lua_State *L, lr_fs *r) {
  lr_file **box = lua_newuserdatauv(L, sizeof *box, 0);
  lr_file *f;
  *box = NULL; /* a closed file until the descriptor is attached */
  luaL_setmetatable(L, FILE_MT);
  f = calloc(1, sizeof *f);
  if (f == NULL || (f->path = strdup(r->path)) == NULL) {
    free(f);
    close(r->fd);
    return luaL_error(L, "not enough memory");
  }
  f->rt = r->rt;
  f->fd = r->fd;
  f->refs = 1;
  r->fd = -1;
  *box = f;
  return 1;
}

static int fs_open(lua_State *L) {
  const char *path = check_path(L, 1);
  const char *mode = luaL_optstring(L, 2, "r");
  lua_Integer perm = opt_count(L, 3, 0666, "mode must not be negative");
  int flags = parse_flags(mode);
  lr_task *t;
  lr_fs *r;
  luaL_argcheck(L, flags >= 0, 2, "invalid mode");
  luaL_argcheck(L, perm <= 07777, 3, "mode must be at most 0x0fff");
  t = lr_task_enter(L, "open");
  r = new_req(L, t, LR_FS_OPEN, path, NULL);
  r->flags = flags;
  r->mode = (int)perm;
  return lr_fs_start(L, r, push_file);
}

/* Returns nil at the end of the file, as io.read does; file:read(0) returns "". */
static int push_read(lua_State *L, lr_fs *r) {
  if (r->len == 0) lua_pushnil(L);
  else lua_pushlstring(L, r->buf, r->len);
  return 1;
}

/* file:read(n [, offset]): up to n bytes, at offset or at the file position. */
static int file_read(lua_State *L) {
  lr_file *f = check_open(L, "read");
  lua_Integer n, off;
  lr_task *t;
  lr_fs *r;
  if (!lua_isinteger(L, 2)) luaL_typeerror(L, 2, "integer");
  n = lua_tointeger(L, 2);
  luaL_argcheck(L, n >= 0 && n <= MAX_READ, 2, "count out of range");
  off = opt_count(L, 3, -1, "offset must not be negative");
  t = lr_task_enter(L, "read");
  if (n == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  r = file_req(L, f, t, LR_FS_READ);
  r->offset = off;
  if ((r->buf = malloc((size_t)n)) == NULL) {
    lr_fs_free(r);
    return luaL_error(L, "not enough memory");
  }
  r->cap = (size_t)n;
  return lr_fs_start(L, r, push_read);
}

/* file:write(data [, offset]) -> true | nil, err */
static int file_write(lua_State *L) {
  lr_file *f = check_open(L, "write");
  size_t len;
  const char *data = check_data(L, 2, &len);
  lua_Integer off = opt_count(L, 3, -1, "offset must not be negative");
  lr_task *t = lr_task_enter(L, "write");
  lr_fs *r;
  if (len == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  r = file_req(L, f, t, LR_FS_WRITE);
  r->offset = off;
  r->data = data; /* argument 2 stays on this task's stack while it waits */
  r->dlen = len;
  return lr_fs_start(L, r, push_true);
}

static int file_sync(lua_State *L) {
  lr_file *f = check_open(L, "sync");
  lr_task *t = lr_task_enter(L, "sync");
  return lr_fs_start(L, file_req(L, f, t, LR_FS_FSYNC), push_true);
}

static int file_stat(lua_State *L) {
  lr_file *f = check_open(L, "stat");
  lr_task *t = lr_task_enter(L, "stat");
  return lr_fs_start(L, file_req(L, f, t, LR_FS_FSTAT), push_stat);
}

/* file:close() -> true | nil, err. If another task still reads or writes the file,
 * the descriptor is closed as soon as that request ends, and close returns true. */
static int file_close(lua_State *L) {
  lr_file **box = file_box(L);
  lr_file *f = check_open(L, "close");
  lr_task *t = lr_task_enter(L, "close");
  lr_fs *r;
  *box = NULL;
  f->closed = 1;
  if (f->busy > 0) {
    lr_file_close_later(f);
    lr_file_unref(f);
    lua_pushboolean(L, 1);
    return 1;
  }
  r = lr_fs_new(t->rt, t, LR_FS_CLOSE, f->path, NULL);
  if (r == NULL) {
    lr_file_close_later(f);
    lr_file_unref(f);
    return luaL_error(L, "not enough memory");
  }
  r->fd = f->fd;
  f->fd = -1;
  r->file = f; /* takes over the userdata's reference */
  return lr_fs_start(L, r, push_true);
}

/* __gc and __close: closes a file that is still open without waiting for it. */
static int file_gc(lua_State *L) {
  lr_file **box = luaL_testudata(L, 1, FILE_MT);
  if (box && *box) {
    lr_file *f = *box;
    *box = NULL;
    lr_file_close_later(f);
    lr_file_unref(f);
  }
  return 0;
}

static int file_tostring(lua_State *L) {
  lr_file *f = *file_box(L);
  if (f == NULL || f->closed) lua_pushliteral(L, "luarun.File (closed)");
  else lua_pushfstring(L, "luarun.File (%s)", f->path);
  return 1;
}

static const luaL_Reg file_methods[] = {
  {"read", file_read},
  {"write", file_write},
  {"sync", file_sync},
  {"stat", file_stat},
  {"close", file_close},
  {NULL, NULL}
};

static const luaL_Reg file_meta[] = {
  {"__gc", file_gc},
  {"__close", file_gc},
  {"__tostring", file_tostring},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"read_file", fs_read_file},
  {"write_file", fs_write_file},
  {"open", fs_open},
  {"stat", fs_stat},
  {"lstat", fs_lstat},
  {"readdir", fs_readdir},
  {"mkdir", fs_mkdir},
  {"remove", fs_remove},
  {"rmdir", fs_rmdir},
  {"rename", fs_rename},
  {"copyfile", fs_copyfile},
  {"exists", fs_exists},
  {"mkdtemp", fs_mkdtemp},
  {NULL, NULL}
};

/* fs.lines is written in Lua (lua/luarun/fs_lines.lua) on top of fs.open. */
static void add_lines(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_getfield(L, -1, "luarun.fs_lines");
  lua_remove(L, -2);
  lua_pushliteral(L, "luarun.fs_lines");
  lua_call(L, 1, 1);           /* fs make_lines */
  lua_pushvalue(L, -2);
  lua_call(L, 1, 1);           /* fs lines */
  lua_setfield(L, -2, "lines");
}

int luaopen_luarun_fs(lua_State *L) {
  luaL_requiref(L, "luarun", luaopen_luarun, 0);
  lua_pop(L, 1);
  lr_register_class(L, FILE_MT, file_methods, file_meta);
  pthread_once(&probed, probe_header);
  luaL_newlib(L, funcs);
  add_lines(L);
  return 1;
}
