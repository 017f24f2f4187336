/* copy.c: copying Lua values between states through a flat byte buffer.
 *
 * The pool serialises arguments on the caller's thread (so a value that cannot be
 * copied raises there, naming its path) and deserialises them in the worker's state;
 * results travel back the same way. The format is private to this file:
 *
 *   values := count:varint value*
 *   value  := NIL | FALSE | TRUE | INT i64 | FLT f64 | NULL (json.null)
 *           | STR len:varint bytes
 *           | TABLE narr:u32 npairs:u32 (key value)* END   -- gets the next table id
 *           | REF id:varint                                -- a table seen before
 *           | STRREF ptr len:varint   -- a long string read in place (see below)
 *
 * Numbers are copied bit for bit (NaN payloads, -0.0, integer/float subtype). Tables
 * get ids in the order they are first met, so shared references and cycles come out
 * the same on the other side. Metatables are not copied.
 *
 * Long strings (LR_COPY_REF_MIN bytes and more) can be passed by reference instead:
 * the buffer holds their address, the writer anchors them in a table at a stack slot
 * it is given, and whoever holds that slot keeps it alive until the reader has pushed
 * its own copy. A 1 MB string then costs one copy per crossing instead of two, and no
 * 1 MB buffer. Lua strings never move, and the reader only reads them.
 */
#include <stdlib.h>
#include <string.h>
#include "lr_base.h"
#include "../bindings/bindings.h"

enum { T_NIL, T_FALSE, T_TRUE, T_INT, T_FLT, T_STR, T_TABLE, T_REF, T_NULL, T_END, T_STRREF };

#define MAX_DEPTH 1000

/* One level of the path to the value being copied (linked through the C stack). */
typedef struct seg {
  struct seg *up;
  int key_idx;         /* stack index of the key */
} seg;

typedef struct wr {
  lua_State *L;
  lr_copybuf *b;
  const char *fname;   /* for messages: "run_in_pool" */
  const char *root;    /* "args" or "results" */
  int root_i;          /* 1-based position of the top-level value */
  int seen;            /* stack index of the table -> id map, 0 until needed */
  int anchor;          /* stack slot for the anchor table of long strings, or 0 */
  lua_Integer nanchored;
  lua_Integer ntables;
  int depth;
  seg *top;
} wr;

void lr_copybuf_free(lr_copybuf *b) {
  if (b->where == LR_BUF_HEAP) free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
  b->where = LR_BUF_HEAP;
}

void lr_copybuf_lua(lua_State *L, lr_copybuf *b, size_t cap) {
  b->p = lua_newuserdatauv(L, cap, 0);
  b->n = 0;
  b->cap = cap;
  b->where = LR_BUF_LUA;
  b->slot = lua_gettop(L);
}

static int copybuf_gc(lua_State *L) {
  lr_copybuf_free(lua_touserdata(L, 1));
  return 0;
}

lr_copybuf *lr_copybuf_push(lua_State *L) {
  lr_copybuf *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, "luarun.CopyBuffer")) {
    lua_pushcfunction(L, copybuf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

static void grow(wr *w, size_t extra) {
  lr_copybuf *b = w->b;
  size_t cap = b->cap ? b->cap : 256;
  char *p;
  if (extra > ((size_t)-1 >> 2) - b->n) luaL_error(w->L, "not enough memory");
  while (cap - b->n < extra) cap *= 2;
  if (b->where == LR_BUF_LUA) {
    /* A bigger userdata takes the slot; the old one is garbage. */
    p = lua_newuserdatauv(w->L, cap, 0);
    memcpy(p, b->p, b->n);
    lua_replace(w->L, b->slot);
  } else if (b->where == LR_BUF_BORROWED) {
    p = malloc(cap);
    if (p == NULL) luaL_error(w->L, "not enough memory");
    memcpy(p, b->p, b->n);
    b->where = LR_BUF_HEAP;
  } else {
    p = realloc(b->p, cap);
    if (p == NULL) luaL_error(w->L, "not enough memory");
  }
  b->p = p;
  b->cap = cap;
}

static inline void put(wr *w, const void *s, size_t n) {
  if (w->b->cap - w->b->n < n) grow(w, n);
  memcpy(w->b->p + w->b->n, s, n);
  w->b->n += n;
}

static inline void put1(wr *w, int c) {
  if (w->b->cap == w->b->n) grow(w, 1);
  w->b->p[w->b->n++] = (char)c;
}

static void put_varint(wr *w, size_t v) {
  unsigned char tmp[10];
  int n = 0;
  do {
    tmp[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  put(w, tmp, (size_t)n);
}

/* Adds one path step for the key at idx: .name, [3], ["odd key"], [<table>]. */
static void add_key(lua_State *L, luaL_Buffer *pb, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t n, k;
    const char *s = lua_tolstring(L, idx, &n);
    int ident = n > 0 && !(s[0] >= '0' && s[0] <= '9');
    for (k = 0; k < n && ident; k++) {
      unsigned char c = (unsigned char)s[k];
      ident = c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9');
    }
    if (ident) {
      luaL_addchar(pb, '.');
      luaL_addlstring(pb, s, n);
    } else {
      luaL_addstring(pb, "[\"");
      luaL_addlstring(pb, s, n > 40 ? 40 : n);
      luaL_addstring(pb, n > 40 ? "...\"]" : "\"]");
    }
  } else if (lua_isinteger(L, idx)) {
    lua_pushfstring(L, "[%I]", (LUAI_UACINT)lua_tointeger(L, idx));
    luaL_addvalue(pb);
  } else if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_pushfstring(L, "[%f]", lua_tonumber(L, idx));
    luaL_addvalue(pb);
  } else if (lua_type(L, idx) == LUA_TBOOLEAN) {
    luaL_addstring(pb, lua_toboolean(L, idx) ? "[true]" : "[false]");
  } else {
    luaL_addstring(pb, "[<");
    luaL_addstring(pb, luaL_typename(L, idx));
    luaL_addstring(pb, ">]");
  }
}

static void add_path(lua_State *L, luaL_Buffer *pb, seg *s) {
  if (s == NULL) return;
  add_path(L, pb, s->up);
  add_key(L, pb, s->key_idx);
}

static int wr_error(wr *w, const char *what) {
  lua_State *L = w->L;
  luaL_Buffer pb;
  char head[64];
  snprintf(head, sizeof head, "%s[%d]", w->root, w->root_i);
  luaL_buffinit(L, &pb);
  luaL_addstring(&pb, head);
  add_path(L, &pb, w->top);
  luaL_pushresult(&pb);
  return luaL_error(L, "%s: cannot copy %s at %s", w->fname, what, lua_tostring(L, -1));
}

static void wr_value(wr *w, int idx, int is_key);

static void wr_table(wr *w, int idx) {
  lua_State *L = w->L;
  size_t at;
  uint32_t narr, npairs = 0;
  seg s;
  if (w->seen == 0) {
    lua_newtable(L);
    w->seen = lua_gettop(L);
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, w->seen) == LUA_TNUMBER) {
    put1(w, T_REF);
    put_varint(w, (size_t)lua_tointeger(L, -1));
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  if (w->depth >= MAX_DEPTH) wr_error(w, "a table nested too deeply (more than 1000 levels)");
  luaL_checkstack(L, 6, "copy: nesting too deep");
  lua_pushvalue(L, idx);
  lua_pushinteger(L, ++w->ntables);
  lua_rawset(L, w->seen);
  {
    lua_Unsigned len = lua_rawlen(L, idx);
    narr = len > 0x7fffffff ? 0x7fffffff : (uint32_t)len;
  }
  put1(w, T_TABLE);
  put(w, &narr, 4);
  at = w->b->n;
  put(w, &npairs, 4);               /* patched below */
  w->depth++;
  s.up = w->top;
  lua_pushnil(L);
  while (lua_next(L, idx)) {        /* key value */
    int kidx = lua_gettop(L) - 1;
    s.key_idx = kidx;
    w->top = &s;
    wr_value(w, kidx, 1);           /* a bad key: the path ends at the key itself */
    wr_value(w, kidx + 1, 0);
    w->top = s.up;
    lua_pop(L, 1);
    npairs++;
  }
  w->depth--;
  memcpy(w->b->p + at, &npairs, 4);
  put1(w, T_END);
}

static void wr_value(wr *w, int idx, int is_key) {
  lua_State *L = w->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: put1(w, T_NIL); break;
    case LUA_TBOOLEAN: put1(w, lua_toboolean(L, idx) ? T_TRUE : T_FALSE); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        put1(w, T_INT);
        put(w, &i, sizeof i);
      } else {
        lua_Number d = lua_tonumber(L, idx);
        put1(w, T_FLT);
        put(w, &d, sizeof d);
      }
      break;
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      if (w->anchor && n >= LR_COPY_REF_MIN) {
        if (w->nanchored == 0) {
          lua_newtable(L);
          lua_replace(L, w->anchor);
        }
        lua_pushvalue(L, idx);
        lua_rawseti(L, w->anchor, ++w->nanchored);
        put1(w, T_STRREF);
        put(w, &s, sizeof s);
        put_varint(w, n);
        break;
      }
      put1(w, T_STR);
      put_varint(w, n);
      put(w, s, n);
      break;
    }
    case LUA_TTABLE: wr_table(w, idx); break;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == LR_JSON_NULL) {
        put1(w, T_NULL);
        break;
      }
      /* fall through */
    default: {
      const char *tn = luaL_typename(L, idx);
      if (lua_type(L, idx) == LUA_TUSERDATA && luaL_getmetafield(L, idx, "__name") == LUA_TSTRING)
        tn = lua_tostring(L, -1);
      lua_pushfstring(L, "a %s%s (only nil, booleans, numbers, strings and tables of "
                      "them cross to the pool)", tn, is_key ? " used as a table key" : "");
      wr_error(w, lua_tostring(L, -1));
    }
  }
}

void lr_copy_encode_refs(lua_State *L, int first, int n, lr_copybuf *b, const char *fname,
                         const char *root, int anchor) {
  wr w;
  int i, top = lua_gettop(L);
  first = lua_absindex(L, first);
  memset(&w, 0, sizeof w);
  w.L = L;
  w.anchor = anchor ? lua_absindex(L, anchor) : 0;
  w.b = b;
  w.fname = fname;
  w.root = root;
  put_varint(&w, (size_t)n);
  for (i = 0; i < n; i++) {
    w.root_i = i + 1;
    wr_value(&w, first + i, 0);
  }
  lua_settop(L, top);
}

/* ---- reading ---- */

typedef struct rd {
  lua_State *L;
  const unsigned char *p, *end;
  int tables;          /* stack index of the id -> table array */
  lua_Integer ntables;
} rd;

static void rd_bad(rd *r) {
  luaL_error(r->L, "copy: corrupt value buffer");
}

static size_t get_varint(rd *r) {
  size_t v = 0;
  int shift = 0;
  for (;;) {
    unsigned c;
    if (r->p >= r->end || shift > 63) rd_bad(r);
    c = *r->p++;
    v |= (size_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return v;
    shift += 7;
  }
}

static void get(rd *r, void *dst, size_t n) {
  if ((size_t)(r->end - r->p) < n) rd_bad(r);
  memcpy(dst, r->p, n);
  r->p += n;
}

/* Pushes the next value; returns its tag (T_END pushes nothing). */
static int rd_value(rd *r) {
  lua_State *L = r->L;
  int tag;
  if (r->p >= r->end) rd_bad(r);
  tag = *r->p++;
  switch (tag) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_NULL: lua_pushlightuserdata(L, LR_JSON_NULL); break;
    case T_INT: {
      lua_Integer i;
      get(r, &i, sizeof i);
      lua_pushinteger(L, i);
      break;
    }
    case T_FLT: {
      lua_Number d;
      get(r, &d, sizeof d);
      lua_pushnumber(L, d);
      break;
    }
    case T_STR: {
      size_t n = get_varint(r);
      if ((size_t)(r->end - r->p) < n) rd_bad(r);
      lua_pushlstring(L, (const char *)r->p, n);
      r->p += n;
      break;
    }
    case T_STRREF: {
      const char *s;
      size_t n;
      get(r, &s, sizeof s);
      n = get_varint(r);
      lua_pushlstring(L, s, n);
      break;
    }
    case T_REF: {
      size_t id = get_varint(r);
      if (r->tables == 0 || id < 1 || id > (size_t)r->ntables) rd_bad(r);
      lua_rawgeti(L, r->tables, (lua_Integer)id);
      break;
    }
    case T_TABLE: {
      uint32_t narr, npairs;
      get(r, &narr, 4);
      get(r, &npairs, 4);
      luaL_checkstack(L, 6, "copy: nesting too deep");
      if (r->tables == 0) {
        lua_newtable(L);
        r->tables = lua_gettop(L);
      }
      if (narr > npairs) narr = npairs;
      lua_createtable(L, (int)(narr < (1u << 26) ? narr : 0),
                      (int)(npairs - narr < (1u << 26) ? npairs - narr : 0));
      lua_pushvalue(L, -1);
      lua_rawseti(L, r->tables, ++r->ntables);
      for (;;) {
        if (rd_value(r) == T_END) break;
        if (lua_isnil(L, -1)) rd_bad(r);
        if (rd_value(r) == T_END) rd_bad(r);
        lua_rawset(L, -3);
      }
      break;
    }
    case T_END: break;
    default: rd_bad(r);
  }
  return tag;
}

int lr_copy_decode(lua_State *L, const char *p, size_t len) {
  rd r;
  size_t n, i;
  int base = lua_gettop(L);
  r.L = L;
  r.p = (const unsigned char *)p;
  r.end = r.p + len;
  r.tables = 0;
  r.ntables = 0;
  n = get_varint(&r);
  if (n > 250000) rd_bad(&r);
  /* The id -> table array goes below the values once they are pushed. */
  lua_newtable(L);
  r.tables = lua_gettop(L);
  luaL_checkstack(L, (int)n + 8, "copy: too many values");
  for (i = 0; i < n; i++)
    if (rd_value(&r) == T_END) rd_bad(&r);
  lua_remove(L, base + 1);
  return (int)n;
}
