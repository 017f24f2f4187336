/* db_pg_values.c: Lua values to PostgreSQL parameters and results back to Lua values,
 * for bindings/db_pg.c. Everything travels in text format: the server parses it as
 * the parameter's type (inferred from the statement), and results are read by their
 * column's type OID. Text costs little here and works for every type, where binary
 * needs a codec per type and fails on types without a binary form (see
 * ../shared/notes/databases.md). The exceptions: a string that is not valid UTF-8 (or
 * holds a NUL byte) is bytes, sent in binary format, which a bytea parameter takes
 * as is.
 *
 * Results: int2/int4/int8/oid as integers, float4/float8 as floats, bool as
 * booleans, bytea as the bytes, json/jsonb decoded (luarun.json), arrays of these as
 * Lua arrays (NULL elements as db.null), NULL as db.null, everything else (numeric,
 * dates and timestamps in ISO form, uuid, text) as the server's text.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "db_pg.h"

/* ---- parameters ---- */


/* A growing byte buffer in C: an array literal is built outside Lua's stack, since
 * its nested tables must be pushed while it grows (luaL_Buffer wants the top). */
typedef struct sbuf {
  char *p;
  size_t n, cap;
  int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t len) {
  if (b->oom) return;
  if (lr_reserve(&b->p, &b->cap, b->n + len + 1, 256) != 0) {
    b->oom = 1;
    return;
  }
  memcpy(b->p + b->n, s, len);
  b->n += len;
}

/* Appends the array literal of the table at idx ({1,2,"a b",NULL,{3}}). Returns NULL,
 * or what is wrong with an element (the caller raises after freeing the buffer). */
static const char *add_array(lua_State *L, sbuf *b, int idx, int depth) {
  lua_Integer i, n = (lua_Integer)lua_rawlen(L, idx);
  const char *bad = NULL;
  if (depth > 32) return "arrays nested too deeply";
  sb_add(b, "{", 1);
  for (i = 1; i <= n && bad == NULL; i++) {
    char tmp[64];
    int t;
    if (i > 1) sb_add(b, ",", 1);
    t = lua_rawgeti(L, idx, i);
    if (t == LUA_TNUMBER) {
      if (lua_isinteger(L, -1)) snprintf(tmp, sizeof tmp, "%lld", (long long)lua_tointeger(L, -1));
      else snprintf(tmp, sizeof tmp, "%.17g", lua_tonumber(L, -1));
      sb_add(b, tmp, strlen(tmp));
    } else if (t == LUA_TBOOLEAN) {
      sb_add(b, lua_toboolean(L, -1) ? "t" : "f", 1);
    } else if (t == LUA_TSTRING) {
      size_t len, k, from = 0;
      const char *s = lua_tolstring(L, -1, &len);
      sb_add(b, "\"", 1);
      for (k = 0; k < len; k++)
        if (s[k] == '"' || s[k] == '\\') {
          sb_add(b, s + from, k - from);
          sb_add(b, "\\", 1);
          from = k;
        }
      sb_add(b, s + from, len - from);
      sb_add(b, "\"", 1);
    } else if (t == LUA_TTABLE) {
      bad = add_array(L, b, lua_gettop(L), depth + 1);
    } else if (lr_db_is_null(L, -1)) {
      sb_add(b, "NULL", 4);
    } else {
      bad = "an array element cannot be bound";
    }
    lua_pop(L, 1);
  }
  sb_add(b, "}", 1);
  return bad;
}


void lr_pg_params(lua_State *L, int first, int n, lr_pg_params_t *p, const char *fname) {
  int i;
  if (n > LR_PG_MAX_PARAMS) luaL_error(L, "%s: too many parameters (%d; at most %d)", fname, n,
                                      LR_PG_MAX_PARAMS);
  p->n = n;
  if (n <= LR_PG_SMALL) {
    p->values = p->v_s, p->lengths = p->l_s, p->formats = p->f_s, p->nums = p->n_s;
  } else {
    char *m = lua_newuserdatauv(L, (size_t)n * (sizeof(char *) + 2 * sizeof(int) + 32), 0);
    p->values = (const char **)m;
    p->lengths = (int *)(m + n * sizeof(char *));
    p->formats = p->lengths + n;
    p->nums = (char (*)[32])(p->formats + n);
  }
  for (i = 0; i < n; i++) {
    int idx = first + i, argn = i + 1;
    size_t len;
    p->formats[i] = 0;
    switch (lua_type(L, idx)) {
      case LUA_TNIL:
        p->values[i] = NULL, p->lengths[i] = 0;
        break;
      case LUA_TBOOLEAN:
        p->values[i] = lua_toboolean(L, idx) ? "t" : "f", p->lengths[i] = 1;
        break;
      case LUA_TNUMBER: {
        char *o = p->nums[i];
        if (lua_isinteger(L, idx)) {
          p->lengths[i] = snprintf(o, sizeof p->nums[i], "%lld", (long long)lua_tointeger(L, idx));
        } else {
          double d = lua_tonumber(L, idx);
          if (isnan(d)) p->lengths[i] = snprintf(o, sizeof p->nums[i], "NaN");
          else if (isinf(d)) p->lengths[i] = snprintf(o, sizeof p->nums[i], d > 0 ? "Infinity" : "-Infinity");
          else p->lengths[i] = snprintf(o, sizeof p->nums[i], "%.17g", d);
        }
        p->values[i] = o;
        break;
      }
      case LUA_TSTRING: {
        const char *s = lua_tolstring(L, idx, &len);
        if (len > 0x7fffffff) luaL_error(L, "%s: bad parameter #%d (string too long)", fname, argn);
        p->values[i] = s, p->lengths[i] = (int)len;
        p->formats[i] = lr_db_utf8_valid(s, len, 0) ? 0 : 1;
        break;
      }
      case LUA_TTABLE: {
        if (lr_db_is_json(L, idx)) {
          lua_rawgeti(L, idx, 1);
          lr_json_encode(L, lua_gettop(L));
          lua_replace(L, idx); /* the text takes the wrapper's slot: it stays alive */
          lua_pop(L, 1);
        } else {
          sbuf b = {NULL, 0, 0, 0};
          const char *bad = add_array(L, &b, idx, 0);
          if (bad == NULL && !b.oom) lua_pushlstring(L, b.p, b.n);
          free(b.p);
          if (bad) luaL_error(L, "%s: bad parameter #%d (%s)", fname, argn, bad);
          if (b.oom) luaL_error(L, "%s: not enough memory", fname);
          lua_replace(L, idx);
        }
        p->values[i] = lua_tolstring(L, idx, &len), p->lengths[i] = (int)len;
        break;
      }
      default:
        if (lr_db_is_null(L, idx)) {
          p->values[i] = NULL, p->lengths[i] = 0;
          break;
        }
        luaL_error(L, "%s: bad parameter #%d (%s cannot be bound)", fname, argn,
                   luaL_typename(L, idx));
    }
  }
}

/* ---- results ---- */

enum {
  T_TEXT = 0, T_INT, T_FLOAT, T_BOOL, T_BYTEA, T_JSON
};

/* The element kind of a type OID, and for arrays (*array = 1) of their elements. */
static int kind_of(Oid oid, int *array) {
  *array = 0;
  switch (oid) {
    case 20: case 21: case 23: case 26: return T_INT;
    case 700: case 701: return T_FLOAT;
    case 16: return T_BOOL;
    case 17: return T_BYTEA;
    case 114: case 3802: return T_JSON;
    case 1016: case 1005: case 1007: case 1028: *array = 1; return T_INT;
    case 1021: case 1022: *array = 1; return T_FLOAT;
    case 1000: *array = 1; return T_BOOL;
    case 1001: *array = 1; return T_BYTEA;
    case 199: case 3807: *array = 1; return T_JSON;
    /* arrays of text-like types: text, varchar, bpchar, name, numeric, date,
     * timestamp(tz), time, uuid, interval */
    case 1009: case 1015: case 1014: case 1003: case 1231: case 1182: case 1115:
    case 1185: case 1183: case 2951: case 1187:
      *array = 1; return T_TEXT;
    default: return T_TEXT;
  }
}

static void push_bytea(lua_State *L, const char *s, size_t len) {
  luaL_Buffer b;
  size_t i;
  if (len >= 2 && s[0] == '\\' && s[1] == 'x') {
    char *o = luaL_buffinitsize(L, &b, (len - 2) / 2);
    size_t n = 0;
    for (i = 2; i + 1 < len; i += 2) {
      int hi = lr_hex_digit((unsigned char)s[i]), lo = lr_hex_digit((unsigned char)s[i + 1]);
      if (hi < 0 || lo < 0) break;
      o[n++] = (char)(hi * 16 + lo);
    }
    luaL_pushresultsize(&b, n);
    return;
  }
  lua_pushlstring(L, s, len); /* escape format (bytea_output = escape): as text */
}

/* The decoder under lua_pcall: a raise in the middle of a result would leak it. */
static int decode_json(lua_State *L) {
  size_t len;
  const char *s = lua_tolstring(L, 1, &len);
  lr_json_decode(L, s, len);
  return 1;
}

static void push_scalar(lua_State *L, int kind, const char *s, size_t len) {
  switch (kind) {
    case T_INT: {
      char *end;
      long long v = strtoll(s, &end, 10);
      if (*end == '\0') lua_pushinteger(L, (lua_Integer)v);
      else lua_pushlstring(L, s, len);
      return;
    }
    case T_FLOAT:
      if (strcmp(s, "NaN") == 0) lua_pushnumber(L, NAN);
      else if (strcmp(s, "Infinity") == 0) lua_pushnumber(L, HUGE_VAL);
      else if (strcmp(s, "-Infinity") == 0) lua_pushnumber(L, -HUGE_VAL);
      else lua_pushnumber(L, strtod(s, NULL));
      return;
    case T_BOOL:
      lua_pushboolean(L, s[0] == 't');
      return;
    case T_BYTEA:
      push_bytea(L, s, len);
      return;
    case T_JSON: /* JSON luarun.json cannot hold (a number past 64 bits) comes as its text */
      lua_pushcfunction(L, decode_json);
      lua_pushlstring(L, s, len);
      if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_pop(L, 1);
        lua_pushlstring(L, s, len);
      }
      return;
    default:
      lua_pushlstring(L, s, len);
  }
}

/* Parses an array literal at *pp (its '{'), pushing a Lua array. */
static void push_array(lua_State *L, int kind, const char **pp, const char *end, int depth) {
  const char *p = *pp;
  lua_Integer n = 0;
  luaL_Buffer b;
  if (depth > 32) luaL_error(L, "array nested too deeply");
  luaL_checkstack(L, 8, "array");
  if (*p == '[') { /* explicit bounds "[0:1]={...}": skip them */
    while (p < end && *p != '=') p++;
    if (p < end) p++;
  }
  if (p >= end || *p != '{') {
    *pp = end;
    lua_pushnil(L);
    return;
  }
  p++;
  lua_newtable(L);
  while (p < end && *p != '}') {
    if (*p == '{') {
      push_array(L, kind, &p, end, depth + 1);
    } else if (*p == '"') {
      p++;
      luaL_buffinit(L, &b);
      while (p < end && *p != '"') {
        if (*p == '\\' && p + 1 < end) p++;
        luaL_addchar(&b, *p++);
      }
      p++;
      luaL_pushresult(&b);
      {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        push_scalar(L, kind, s, len);
        lua_remove(L, -2);
      }
    } else {
      const char *s = p;
      while (p < end && *p != ',' && *p != '}') p++;
      if (p - s == 4 && memcmp(s, "NULL", 4) == 0) {
        lua_pushlightuserdata(L, LR_DB_NULL);
      } else {
        lua_pushlstring(L, s, p - s);
        {
          size_t len;
          const char *t = lua_tolstring(L, -1, &len);
          push_scalar(L, kind, t, len);
          lua_remove(L, -2);
        }
      }
    }
    lua_rawseti(L, -2, ++n);
    if (p < end && *p == ',') p++;
  }
  if (p < end) p++; /* '}' */
  *pp = p;
}

/* _decode(oid, text): the value a column of type oid holding text becomes (for the
 * fuzz spec: these parsers read bytes that come from the network). */
int lr_pg_decode_text(lua_State *L) {
  Oid oid = (Oid)luaL_checkinteger(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  int array, kind = kind_of(oid, &array);
  if (kind == T_JSON) return luaL_error(L, "_decode: json is luarun.json's to fuzz");
  if (array) push_array(L, kind, &s, s + len, 0);
  else push_scalar(L, kind, s, len);
  return 1;
}

void lr_pg_push_value(lua_State *L, const PGresult *r, int row, int col, Oid type) {
  const char *s;
  size_t len;
  int array, kind;
  if (lr_pq.getisnull(r, row, col)) {
    lua_pushlightuserdata(L, LR_DB_NULL);
    return;
  }
  s = lr_pq.getvalue(r, row, col);
  len = (size_t)lr_pq.getlength(r, row, col);
  kind = kind_of(type, &array);
  if (array) push_array(L, kind, &s, s + len, 0);
  else push_scalar(L, kind, s, len);
}

/* Pushes the column names of r as a Lua array, and leaves them also on the stack
 * (nf strings) below it for the row builder. Returns the index of the first name. */
int lr_pg_push_columns(lua_State *L, const PGresult *r) {
  int nf = lr_pq.nfields(r), i, first;
  luaL_checkstack(L, nf + 8, "too many columns");
  first = lua_gettop(L) + 1;
  for (i = 0; i < nf; i++) lua_pushstring(L, lr_pq.fname(r, i));
  lua_createtable(L, nf, 0);
  for (i = 0; i < nf; i++) {
    lua_pushvalue(L, first + i);
    lua_rawseti(L, -2, i + 1);
  }
  return first;
}

/* Appends rows of r to the table at tidx (from index *n + 1), names at names.. */
void lr_pg_add_rows(lua_State *L, const PGresult *r, int tidx, lua_Integer *n, int names) {
  int nt = lr_pq.ntuples(r), nf = lr_pq.nfields(r), i, j;
  Oid types[256];
  for (j = 0; j < nf && j < 256; j++) types[j] = lr_pq.ftype(r, j);
  for (i = 0; i < nt; i++) {
    lua_createtable(L, 0, nf);
    for (j = 0; j < nf; j++) {
      lua_pushvalue(L, names + j);
      lr_pg_push_value(L, r, i, j, j < 256 ? types[j] : lr_pq.ftype(r, j));
      lua_rawset(L, -3);
    }
    lua_rawseti(L, tidx, ++*n);
  }
}
