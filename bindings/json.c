/* json.c: the `luarun.json` module: json.encode, json.decode, json.null, json.array.
 *
 * Decoding uses jansson's parser: it validates UTF-8, reports errors with line,
 * column and byte offset, and bounds nesting at JSON_PARSER_MAX_DEPTH (2048), so
 * deep input raises instead of overflowing the C stack. The json_t tree is then
 * turned into Lua values. When memory runs out, encode and decode raise "not enough
 * memory", the message of Lua's own memory errors, and never a syntax error: jansson
 * itself cannot tell the two apart (see jalloc).
 *
 * Encoding writes JSON text directly from the Lua values instead of building a
 * json_t tree first: that saves one allocation per value, lets an error name the
 * path of the value that caused it (value.items[3].name), and lets floats use the
 * shortest form that reads back to the same double (jansson prints %.17g, so 0.1
 * would come out as 0.10000000000000001).
 *
 * Choices, as API.md leaves them open:
 * - Integers stay integers and floats stay floats: 3 encodes as `3`, 3.0 as `3.0`;
 *   decoding `3` gives an integer, `3.0` or `3e0` a float. Integers beyond 64 bits
 *   fail to decode (jansson: "too big integer"). NaN and infinities raise.
 * - Strings are bytes. Any valid UTF-8 string round-trips, NUL and control bytes
 *   included (escaped as \u0000 etc.). A string that is NOT valid UTF-8 raises an
 *   error naming its path: JSON text is Unicode, and silently replacing bytes with
 *   U+FFFD would corrupt data. Encode binary data yourself (hex, base64) first.
 *   Decoding accepts \u0000 in strings, but jansson refuses it in object keys.
 * - A table whose keys are exactly 1..n (n >= 1) encodes as an array; any other
 *   table as an object, whose keys must be strings or integers (integers become
 *   "1", "2"...); other keys raise with the path. An empty table is `{}`, unless it
 *   is marked as an array: json.array(t) sets a metatable with __jsontype = "array"
 *   on t (any metatable with that field works), so json.array({}) encodes as `[]`.
 *   Decoded arrays carry that metatable, so `[]` decodes and re-encodes as `[]`.
 * - JSON null decodes to json.null (a light userdata, the same in every Lua state
 *   of the process, so it also crosses into pool workers); json.null and nil encode
 *   as null. Object members whose value is null are kept as json.null.
 * - Cycles raise; a table reached twice without a cycle is encoded twice.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "bindings.h"

char lr_json_null_sentinel;

#define ARRAY_MT "luarun.json.array"
#define ENC_MAX_DEPTH JSON_PARSER_MAX_DEPTH

/* ================= encoding ================= */

static int memory_error(lua_State *L);

/* The output buffer lives in a userdata so an error mid-way frees it (its __gc). */
typedef struct encbuf {
  char *p;
  size_t n, cap;
} encbuf;

/* One level of the path to the value being encoded, for error messages. The
 * levels are linked through the C stack, from the innermost up to the root. */
typedef struct seg {
  struct seg *up;
  int key_idx;        /* stack index of a string key, or 0 */
  lua_Integer i;      /* integer key when key_idx == 0 */
} seg;

typedef struct enc {
  lua_State *L;
  encbuf *b;
  int seen;           /* stack index of the table of tables being encoded (cycles) */
  int depth;
  seg *top;           /* the innermost level, or NULL at the root */
} enc;

static int encbuf_gc(lua_State *L) {
  encbuf *b = lua_touserdata(L, 1);
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
  return 0;
}

static void grow(enc *e, size_t extra) {
  encbuf *b = e->b;
  size_t cap = b->cap ? b->cap : 256;
  char *p;
  if (extra > (size_t)-1 / 4 - b->n) memory_error(e->L);
  while (cap - b->n < extra) cap *= 2;
  p = realloc(b->p, cap);
  if (p == NULL) memory_error(e->L);
  b->p = p;
  b->cap = cap;
}

static inline void put(enc *e, const char *s, size_t n) {
  if (e->b->cap - e->b->n < n) grow(e, n);
  memcpy(e->b->p + e->b->n, s, n);
  e->b->n += n;
}

static inline void putc_(enc *e, char c) {
  if (e->b->cap == e->b->n) grow(e, 1);
  e->b->p[e->b->n++] = c;
}

static void add_seg(lua_State *L, luaL_Buffer *pb, seg *s) {
  size_t n, k;
  const char *key;
  int ident;
  if (s->up) add_seg(L, pb, s->up);
  if (s->key_idx == 0) {
    char buf[40];
    snprintf(buf, sizeof buf, "[" LUA_INTEGER_FMT "]", (LUAI_UACINT)s->i);
    luaL_addstring(pb, buf);
    return;
  }
  key = lua_tolstring(L, s->key_idx, &n);
  ident = n > 0 && !(key[0] >= '0' && key[0] <= '9');
  for (k = 0; k < n && ident; k++) {
    unsigned char c = (unsigned char)key[k];
    ident = c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9');
  }
  if (ident) {
    luaL_addchar(pb, '.');
    luaL_addlstring(pb, key, n);
  } else {
    luaL_addstring(pb, "[\"");
    luaL_addlstring(pb, key, n > 40 ? 40 : n);
    luaL_addstring(pb, n > 40 ? "...\"]" : "\"]");
  }
}

/* Pushes the path of the current value: value.a[3]["not an ident"]. */
static void push_path(enc *e) {
  luaL_Buffer pb;
  /* The buffer box must not sit between the keys and the top: build it above. */
  luaL_buffinit(e->L, &pb);
  luaL_addstring(&pb, "value");
  if (e->top) add_seg(e->L, &pb, e->top);
  luaL_pushresult(&pb);
}

static int enc_error(enc *e, const char *what) {
  push_path(e);
  return luaL_error(e->L, "json.encode: %s at %s", what, lua_tostring(e->L, -1));
}

size_t lr_utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0; /* continuation byte or overlong 2-byte form */
  if (c < 0xE0) return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c < 0xF0) {
    if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0;   /* overlong */
    if (c == 0xED && s[1] >= 0xA0) return 0;  /* UTF-16 surrogate */
    return 3;
  }
  if (c < 0xF5) {
    if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
      return 0;
    if (c == 0xF0 && s[1] < 0x90) return 0;   /* overlong */
    if (c == 0xF4 && s[1] >= 0x90) return 0;  /* above U+10FFFF */
    return 4;
  }
  return 0;
}

static void enc_string(enc *e, const char *str, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0, run = 0;
  grow(e, n + 2);
  putc_(e, '"');
  while (i < n) {
    unsigned char c = s[i];
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0x80) {
      size_t k = lr_utf8_len(s + i, n - i);
      if (k == 0) {
        char msg[80];
        snprintf(msg, sizeof msg, "invalid UTF-8 in string (byte %zu)", i + 1);
        enc_error(e, msg);
      }
      i += k;
      continue;
    }
    put(e, str + run, i - run);
    switch (c) {
      case '"': put(e, "\\\"", 2); break;
      case '\\': put(e, "\\\\", 2); break;
      case '\n': put(e, "\\n", 2); break;
      case '\r': put(e, "\\r", 2); break;
      case '\t': put(e, "\\t", 2); break;
      case '\b': put(e, "\\b", 2); break;
      case '\f': put(e, "\\f", 2); break;
      default: {
        char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        put(e, u, 6);
      }
    }
    run = ++i;
  }
  put(e, str + run, n - run);
  putc_(e, '"');
}

/* The shortest of %.15g..%.17g that reads back as the same double; always has a
 * '.' or an exponent, so it decodes as a float again. */
static void enc_float(enc *e, double d) {
  char s[40];
  int prec, n = 0, k, plain = 1;
  if (isnan(d) || isinf(d)) enc_error(e, isnan(d) ? "cannot encode NaN" : "cannot encode infinity");
  for (prec = 15; prec <= 17; prec++) {
    n = snprintf(s, sizeof s - 2, "%.*g", prec, d);
    if (strtod(s, NULL) == d) break;
  }
  for (k = 0; k < n; k++) {
    if (s[k] == ',') s[k] = '.'; /* a locale with a decimal comma */
    if (s[k] == '.' || s[k] == 'e') plain = 0;
  }
  if (plain) {
    s[n++] = '.';
    s[n++] = '0';
  }
  put(e, s, (size_t)n);
}

static void enc_value(enc *e, int idx);

/* Decides array or object: returns n (>= 1) if the keys are exactly 1..n, 0 for an
 * object, -1 for an empty table marked as an array. */
static lua_Integer array_len(enc *e, int idx, int marked) {
  lua_State *L = e->L;
  lua_Integer count = 0, max = 0;
  int isarr = 1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (isarr && lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k < 1) isarr = 0;
      else if (k > max) max = k;
      count++;
    } else {
      isarr = 0;
    }
  }
  if (count == 0) return marked ? -1 : 0;
  return isarr && max == count ? count : 0;
}

static void enc_array(enc *e, int idx, lua_Integer n) {
  lua_State *L = e->L;
  lua_Integer i;
  seg s = {e->top, 0, 0};
  e->top = &s;
  putc_(e, '[');
  for (i = 1; i <= n; i++) {
    if (i > 1) putc_(e, ',');
    s.i = i;
    lua_rawgeti(L, idx, i);
    enc_value(e, lua_gettop(L));
    lua_pop(L, 1);
  }
  putc_(e, ']');
  e->top = s.up;
}

static void enc_object(enc *e, int idx) {
  lua_State *L = e->L;
  int first = 1;
  seg seg_ = {e->top, 0, 0}, *s = &seg_;
  putc_(e, '{');
  lua_pushnil(L);
  while (lua_next(L, idx)) {          /* key value */
    int kidx = lua_gettop(L) - 1;
    if (!first) putc_(e, ',');
    first = 0;
    if (lua_type(L, kidx) == LUA_TSTRING) {
      size_t n;
      const char *k = lua_tolstring(L, kidx, &n);
      s->key_idx = kidx;
      enc_string(e, k, n);
    } else if (lua_isinteger(L, kidx)) {
      char buf[32];
      s->key_idx = 0;
      s->i = lua_tointeger(L, kidx);
      snprintf(buf, sizeof buf, "\"" LUA_INTEGER_FMT "\"", (LUAI_UACINT)s->i);
      put(e, buf, strlen(buf));
    } else { /* the error names the table holding the key */
      lua_pushfstring(L, "table key of type %s (%s) is not a string or integer",
                      luaL_typename(L, kidx), luaL_tolstring(L, kidx, NULL));
      enc_error(e, lua_tostring(L, -1));
    }
    putc_(e, ':');
    e->top = s;
    enc_value(e, kidx + 1);
    e->top = s->up;
    lua_pop(L, 1);
  }
  putc_(e, '}');
}

static int is_marked_array(lua_State *L, int idx) {
  int marked = 0;
  if (luaL_getmetafield(L, idx, "__jsontype") != LUA_TNIL) {
    marked = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "array") == 0;
    lua_pop(L, 1);
  }
  return marked;
}

static void enc_table(enc *e, int idx) {
  lua_State *L = e->L;
  int marked;
  lua_Integer n;
  if (e->depth >= ENC_MAX_DEPTH) enc_error(e, "nesting too deep");
  luaL_checkstack(L, 8, "json.encode: nesting too deep");
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->seen) != LUA_TNIL) enc_error(e, "cycle: a table contains itself");
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, e->seen);
  marked = is_marked_array(L, idx);
  n = array_len(e, idx, marked);
  e->depth++;
  if (n == -1) put(e, "[]", 2);
  else if (n > 0) enc_array(e, idx, n);
  else if (marked) {
    enc_error(e, "table marked as an array has keys other than 1..n");
  } else enc_object(e, idx);
  e->depth--;
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, e->seen);
}

static void enc_value(enc *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: put(e, "null", 4); break;
    case LUA_TBOOLEAN:
      if (lua_toboolean(L, idx)) put(e, "true", 4);
      else put(e, "false", 5);
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        char buf[32];
        int n = snprintf(buf, sizeof buf, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, idx));
        put(e, buf, (size_t)n);
      } else {
        enc_float(e, (double)lua_tonumber(L, idx));
      }
      break;
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      enc_string(e, s, n);
      break;
    }
    case LUA_TTABLE: enc_table(e, idx); break;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == LR_JSON_NULL) {
        put(e, "null", 4);
        break;
      }
      /* fall through */
    default:
      lua_pushfstring(L, "cannot encode a %s", luaL_typename(L, idx));
      enc_error(e, lua_tostring(L, -1));
  }
}

void lr_json_encode(lua_State *L, int idx) {
  enc ev, *e = &ev;
  encbuf *b;
  idx = lua_absindex(L, idx);
  b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, "luarun.json.Buffer")) {
    lua_pushcfunction(L, encbuf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_newtable(L);                             /* b seen */
  e->L = L;
  e->b = b;
  e->seen = lua_gettop(L);
  e->depth = 0;
  e->top = NULL;
  enc_value(e, idx);
  lua_pushlstring(L, b->p ? b->p : "", b->n);  /* b seen json */
  free(b->p);
  b->p = NULL;
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* ================= decoding ================= */

/* Pushes (creating it once per state) the metatable of decoded arrays. */
static void push_array_mt(lua_State *L) {
  if (luaL_newmetatable(L, ARRAY_MT)) {
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__jsontype");
  }
}

/* Converts j to a Lua value; arr_mt is the stack index of the array metatable.
 * Depth is bounded by the parser (JSON_PARSER_MAX_DEPTH). */
static void push_json(lua_State *L, json_t *j, int arr_mt) {
  switch (json_typeof(j)) {
    case JSON_OBJECT: {
      void *it;
      luaL_checkstack(L, 4, "json.decode: nesting too deep");
      lua_createtable(L, 0, (int)json_object_size(j));
      for (it = json_object_iter(j); it; it = json_object_iter_next(j, it)) {
        lua_pushlstring(L, json_object_iter_key(it), json_object_iter_key_len(it));
        push_json(L, json_object_iter_value(it), arr_mt);
        lua_rawset(L, -3);
      }
      break;
    }
    case JSON_ARRAY: {
      size_t i, n = json_array_size(j);
      luaL_checkstack(L, 4, "json.decode: nesting too deep");
      lua_createtable(L, n < (size_t)INT32_MAX ? (int)n : 0, 0);
      for (i = 0; i < n; i++) {
        push_json(L, json_array_get(j, i), arr_mt);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
      }
      lua_pushvalue(L, arr_mt);
      lua_setmetatable(L, -2);
      break;
    }
    case JSON_STRING:
      lua_pushlstring(L, json_string_value(j), json_string_length(j));
      break;
    case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(j)); break;
    case JSON_REAL: lua_pushnumber(L, (lua_Number)json_real_value(j)); break;
    case JSON_TRUE: lua_pushboolean(L, 1); break;
    case JSON_FALSE: lua_pushboolean(L, 0); break;
    case JSON_NULL: lua_pushlightuserdata(L, LR_JSON_NULL); break;
  }
}

/* Out of memory inside jansson (issue 23). jansson 2.14's parser never reports
 * json_error_out_of_memory: a failed allocation comes back as a syntax error with a
 * made-up position, or with an empty message at "line -1, column -1". Worse, its
 * lexer ignores a failed growth of the token buffer and drops the byte: a long number
 * then decodes to another value, and a string token that loses its closing quote is
 * copied past the end of its buffer. So jansson's allocations never fail here: during
 * a parse, our allocator jumps out of json_loadb instead of returning NULL, and every
 * block jansson allocated since the parse began is freed from a list, parsed tree
 * included. Blocks carry a 16-byte header with the links (malloc's alignment kept).
 *
 * The list (a parse) belongs to one thread; other threads' parses (pool workers)
 * have lists of their own. Outside a parse, the hooks are plain malloc and free: the
 * tree of a parse is never given to json_decref, only freed with its list. The hooks
 * are process-wide (json_set_alloc_funcs): another module in the same process that
 * sets its own would break this one. */
typedef struct jblock {
  struct jblock *prev, *next;
} jblock;

/* A parse in progress: its blocks, and where a failed allocation jumps to. */
typedef struct jparse {
  jblock head;        /* circular list of the blocks allocated by this parse */
  jmp_buf oom;
} jparse;

/* Initial-exec: in luarun.so, loaded by dlopen, a thread's block of the default TLS
 * model is allocated at its first access, and glibc ends the process ("cannot
 * allocate memory for thread-local data: ABORT") when that fails. Initial-exec TLS
 * sits in the static block every thread gets when it is created. */
static _Thread_local jparse *parsing __attribute__((tls_model("initial-exec")));

static void *jalloc(size_t n) {
  jparse *jp = parsing;
  jblock *b;
  if (jp == NULL) return malloc(n);
  b = n <= (size_t)-1 - sizeof *b ? malloc(sizeof *b + n) : NULL;
  if (b == NULL) longjmp(jp->oom, 1);
  b->prev = &jp->head;
  b->next = jp->head.next;
  b->next->prev = b;
  jp->head.next = b;
  return b + 1;
}

static void jfree(void *p) {
  jblock *b;
  if (p == NULL) return;
  if (parsing == NULL) {
    free(p);
    return;
  }
  b = (jblock *)p - 1;
  b->prev->next = b->next;
  b->next->prev = b->prev;
  free(b);
}

static void jparse_free_all(jparse *jp) {
  jblock *b = jp->head.next, *next;
  for (; b != &jp->head; b = next) {
    next = b->next;
    free(b);
  }
  jp->head.prev = jp->head.next = &jp->head;
}

static void install_hooks(void) {
  json_set_alloc_funcs(jalloc, jfree);
}

static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

/* Parses s into a tree whose blocks are on jp's list. Returns NULL with err set on
 * invalid JSON, and sets *oom (and frees what the parse had allocated) when an
 * allocation failed. Kept apart so that no local of the caller lives across the
 * longjmp. */
static json_t *parse(jparse *jp, const char *s, size_t n, json_error_t *err, int *oom) {
  json_t *root;
  pthread_once(&hooks_once, install_hooks); /* before jansson's first allocation */
  *oom = 0;
  if (setjmp(jp->oom) != 0) {
    parsing = NULL;
    jparse_free_all(jp);
    *oom = 1;
    return NULL;
  }
  parsing = jp;
  root = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, err);
  parsing = NULL;
  /* Newer jansson versions may say so themselves. */
  if (root == NULL && json_error_code(err) == json_error_out_of_memory) {
    jparse_free_all(jp);
    *oom = 1;
  }
  return root;
}

/* Holds the parse's blocks so a Lua error during conversion still frees them. */
typedef struct jbox {
  jparse jp;
} jbox;

static int jbox_gc(lua_State *L) {
  jbox *b = lua_touserdata(L, 1);
  jparse_free_all(&b->jp);
  return 0;
}

/* What Lua itself raises when an allocation fails, so a caller can tell it from
 * invalid input by the same test either way. */
static int memory_error(lua_State *L) {
  lua_pushliteral(L, "not enough memory");
  return lua_error(L);
}

void lr_json_decode(lua_State *L, const char *s, size_t n) {
  json_error_t err;
  json_t *root;
  int oom;
  jbox *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->jp.head.prev = box->jp.head.next = &box->jp.head;
  if (luaL_newmetatable(L, "luarun.json.Tree")) {
    lua_pushcfunction(L, jbox_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  push_array_mt(L);                            /* box mt */
  root = parse(&box->jp, s, n, &err, &oom);
  if (oom) memory_error(L);
  if (root == NULL)
    luaL_error(L, "json.decode: %s at line %d, column %d (byte %d)", err.text, err.line,
               err.column, err.position);
  push_json(L, root, lua_gettop(L));           /* box mt value */
  jparse_free_all(&box->jp);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* ================= the module ================= */

static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  lr_json_encode(L, 1);
  return 1;
}

static int l_decode(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lr_json_decode(L, s, n);
  return 1;
}

/* json.array([t]) -> t marked as a JSON array (a new empty one without t). */
static int l_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, ARRAY_MT);
    if (!lua_rawequal(L, -1, -2) && !is_marked_array(L, 1))
      return luaL_argerror(L, 1, "table already has a metatable");
    lua_settop(L, 1);
    return 1;
  }
  push_array_mt(L);
  lua_setmetatable(L, 1);
  return 1;
}

static const luaL_Reg funcs[] = {
  {"encode", l_encode},
  {"decode", l_decode},
  {"array", l_array},
  {NULL, NULL}
};

/* Unlike the other modules this one does not require "luarun" first: it needs no
 * runtime, and pool workers load it into states that must not create one. */
int luaopen_luarun_json(lua_State *L) {
  luaL_newlib(L, funcs);
  lua_pushlightuserdata(L, LR_JSON_NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
