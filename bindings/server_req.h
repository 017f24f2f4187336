/* server_req.h: private to bindings/server*.c: the Request object between http.serve
 * (server.c), its fields and body readers (server_request.c) and the response forms
 * (server_respond.c). */
#ifndef LR_SERVER_REQ_H
#define LR_SERVER_REQ_H

#include "bindings.h"

#define REQUEST_MT "luarun.Request"

/* The Request userdata: a pointer that core clears when the request is freed. Its
 * user value caches the fields once computed. */
typedef struct req_box {
  lr_srv_req *r;
} req_box;

/* The Request metatable: its address for a quick check (luaL_checkudata looks the
 * name up in the registry at every call: 700 instructions a request) and a registry
 * reference to set it with (server.c sets both when it registers the class). */
extern const void *lr_request_mt;
extern int lr_request_mt_ref;

/* The Request at idx (raises as luaL_checkudata if it is not one). */
req_box *lr_req_to(lua_State *L, int idx);
/* The live request at index 1, or raises naming fname once it is over. */
lr_srv_req *lr_req_check(lua_State *L, const char *fname);
/* Pushes the request's field cache, made on first use. */
void lr_req_push_cache(lua_State *L, int idx);

/* server_request.c: the metamethods and the readers. */
int lr_req_index(lua_State *L);
int lr_req_newindex(lua_State *L);
int lr_req_gc(lua_State *L);
int lr_req_tostring(lua_State *L);
int lr_req_body(lua_State *L);
int lr_req_chunk(lua_State *L);
int lr_req_websocket(lua_State *L);

/* server_respond.c: what serve.lua's driver calls with the handler's results. */
int lr_req_respond(lua_State *L);
int lr_req_write(lua_State *L);
int lr_req_finish(lua_State *L);

#endif
