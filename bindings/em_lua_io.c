/* em_lua_io.c — checkpoints from Lua: ember.save(path, tbl) and ember.load(path).
 *
 * A nested table whose leaves are tensors, numbers, strings and booleans is
 * flattened into a core checkpoint (em_safetensors.h: one leaf per key path)
 * and written as a safetensors file; loading rebuilds the same nesting. The
 * file layout is documented at the top of core/em_safetensors.c. */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "em_file.h"
#include "em_lua.h"
#include "em_safetensors.h"

#define CHECKPOINT_BOX_MT "ember.CheckpointBox"

/* A userdata owning a core checkpoint while Lua code may raise errors, so an
 * error half way through a save or load never leaks it. */
typedef struct {
    em_checkpoint *ck;
} checkpoint_box;

static int box_gc(lua_State *L) {
    checkpoint_box *b = luaL_checkudata(L, 1, CHECKPOINT_BOX_MT);
    em_checkpoint_free(b->ck);
    b->ck = NULL;
    return 0;
}

static checkpoint_box *push_box(lua_State *L) {
    checkpoint_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->ck = NULL;
    if (luaL_newmetatable(L, CHECKPOINT_BOX_MT)) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return b;
}

/* ---- save ------------------------------------------------------------------ */

/* The walk's state: the checkpoint being filled, the key path so far, and a
 * table (at stack index `visiting`) of the tables being walked, to catch cycles. */
typedef struct {
    em_checkpoint *ck;
    int visiting;
    em_ckpt_key path[EM_CKPT_MAX_DEPTH];
} save_walk;

static const char *path_text(save_walk *w, int depth, char *buf, size_t size) {
    return depth ? em_ckpt_path_str(buf, size, depth, w->path) : "the top-level table";
}

/* Adds a leaf, raising the core's message on failure. */
static void add_leaf(lua_State *L, save_walk *w, int depth, const em_ckpt_value *v) {
    if (em_checkpoint_add(w->ck, depth, w->path, v)) em_lua_core_error(L);
}

/* Walks the table at stack index idx, whose keys are at depth+1 of the path. */
static void walk_table(lua_State *L, save_walk *w, int idx, int depth) {
    char where[256];
    luaL_checkstack(L, 8, "save: the table is nested too deeply");
    lua_pushvalue(L, idx);
    if (lua_rawget(L, w->visiting) != LUA_TNIL)
        luaL_error(L, "save: the table contains itself (a cycle) at key path %s",
                   path_text(w, depth, where, sizeof where));
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, w->visiting);

    bool empty = true;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        empty = false;
        if (depth == EM_CKPT_MAX_DEPTH)
            luaL_error(L, "save: key path %s is nested more than %d tables deep",
                       path_text(w, depth, where, sizeof where), EM_CKPT_MAX_DEPTH);
        em_ckpt_key *key = &w->path[depth];
        int kt = lua_type(L, -2);
        if (kt == LUA_TNUMBER && lua_isinteger(L, -2)) {
            key->is_index = true;
            key->index = (int64_t)lua_tointeger(L, -2);
            key->name = NULL;
        } else if (kt == LUA_TSTRING) {
            size_t len;
            key->is_index = false;
            key->name = lua_tolstring(L, -2, &len);
            if (strlen(key->name) != len)
                luaL_error(L, "save: a key under %s contains a NUL byte (keys must be text)",
                           path_text(w, depth, where, sizeof where));
        } else {
            luaL_error(L, "save: a key under %s is %s %s (keys must be strings or integers)",
                       path_text(w, depth, where, sizeof where),
                       kt == LUA_TNUMBER ? "the non-integer number" : "a",
                       kt == LUA_TNUMBER ? lua_tostring(L, -2) : luaL_typename(L, -2));
        }
        em_ckpt_value v = {0};
        int vt = lua_type(L, -1);
        int top = lua_gettop(L);
        switch (vt) {
        case LUA_TNUMBER:
            if (lua_isinteger(L, -1)) {
                v.kind = EM_CKPT_INTEGER;
                v.integer = (int64_t)lua_tointeger(L, -1);
            } else {
                v.kind = EM_CKPT_FLOAT;
                v.number = (double)lua_tonumber(L, -1);
            }
            add_leaf(L, w, depth + 1, &v);
            break;
        case LUA_TSTRING:
            v.kind = EM_CKPT_STRING;
            v.string = (char *)lua_tolstring(L, -1, &v.string_len);
            add_leaf(L, w, depth + 1, &v);
            break;
        case LUA_TBOOLEAN:
            v.kind = EM_CKPT_BOOLEAN;
            v.boolean = lua_toboolean(L, -1);
            add_leaf(L, w, depth + 1, &v);
            break;
        case LUA_TTABLE:
            walk_table(L, w, top, depth + 1);
            break;
        case LUA_TUSERDATA:
            if (luaL_testudata(L, -1, EM_TENSOR_MT)) {
                v.kind = EM_CKPT_TENSOR;
                v.tensor = em_lua_test(L, -1);
                if (!v.tensor)
                    luaL_error(L, "save: the tensor at key path %s was freed",
                               path_text(w, depth + 1, where, sizeof where));
                add_leaf(L, w, depth + 1, &v);
                break;
            }
            /* fall through */
        default:
            luaL_error(L, "save: the value at key path %s is a %s (expected a tensor, number, "
                       "string, boolean or table)", path_text(w, depth + 1, where, sizeof where),
                       luaL_typename(L, -1));
        }
        lua_settop(L, top - 1); /* keep the key for lua_next */
    }
    if (empty && depth > 0) {
        em_ckpt_value v = {.kind = EM_CKPT_EMPTY_TABLE};
        add_leaf(L, w, depth, &v);
    }
    lua_pushvalue(L, idx);
    lua_pushnil(L);
    lua_rawset(L, w->visiting);
}

/* ember.save(path, tbl): writes the (nested) table tbl to path atomically. */
static int l_save(lua_State *L) {
    if (lua_type(L, 1) != LUA_TSTRING) return em_lua_arg_error(L, 1, "save", "a file path string");
    if (!lua_istable(L, 2)) {
        if (em_lua_test(L, 2))
            return luaL_error(L, "save: bad argument #2 (expected a table, got tensor: wrap it, "
                              "e.g. ember.save(path, {weight = t}))");
        return em_lua_arg_error(L, 2, "save", "a table");
    }
    const char *path = lua_tostring(L, 1);
    lua_settop(L, 2);
    checkpoint_box *box = push_box(L); /* 3 */
    if (!(box->ck = em_checkpoint_new())) return em_lua_core_error(L);
    lua_newtable(L); /* 4: tables being walked */
    save_walk w = {.ck = box->ck, .visiting = 4};
    walk_table(L, &w, 2, 0);
    if (em_safetensors_save(path, box->ck)) return em_lua_core_error(L);
    em_checkpoint_free(box->ck);
    box->ck = NULL;
    return 0;
}

/* ---- load ------------------------------------------------------------------ */

static void push_key(lua_State *L, const em_ckpt_key *k) {
    if (k->is_index) lua_pushinteger(L, (lua_Integer)k->index);
    else lua_pushstring(L, k->name);
}

static void push_value(lua_State *L, const em_ckpt_value *v) {
    switch (v->kind) {
    case EM_CKPT_TENSOR: em_lua_push(L, em_tensor_retain(v->tensor)); break;
    case EM_CKPT_INTEGER: lua_pushinteger(L, (lua_Integer)v->integer); break;
    case EM_CKPT_FLOAT: lua_pushnumber(L, (lua_Number)v->number); break;
    case EM_CKPT_STRING: lua_pushlstring(L, v->string, v->string_len); break;
    case EM_CKPT_BOOLEAN: lua_pushboolean(L, v->boolean); break;
    case EM_CKPT_EMPTY_TABLE: lua_newtable(L); break;
    }
}

/* ember.load(path) -> the table that ember.save wrote (or, for another tool's
 * file, a flat table of name -> tensor plus its metadata strings). */
static int l_load(lua_State *L) {
    if (lua_type(L, 1) != LUA_TSTRING) return em_lua_arg_error(L, 1, "load", "a file path string");
    const char *path = lua_tostring(L, 1);
    lua_settop(L, 1);
    checkpoint_box *box = push_box(L); /* 2 */
    if (!(box->ck = em_safetensors_load_file(path))) return em_lua_core_error(L);
    const em_checkpoint *ck = box->ck;
    lua_newtable(L); /* 3: the result */
    for (int i = 0; i < ck->n_leaves; i++) {
        const em_ckpt_leaf *l = &ck->leaves[i];
        lua_pushvalue(L, 3);
        for (int d = 0; d + 1 < l->depth; d++) { /* find or make the tables on the way */
            push_key(L, &l->path[d]);
            if (lua_rawget(L, -2) == LUA_TNIL) {
                lua_pop(L, 1);
                lua_newtable(L);
                push_key(L, &l->path[d]);
                lua_pushvalue(L, -2);
                lua_rawset(L, -4);
            } else if (!lua_istable(L, -1)) { /* the core rules this out; be safe anyway */
                char where[256];
                return luaL_error(L, "load: %s: key path %s is both a value and a table", path,
                                  em_ckpt_path_str(where, sizeof where, d + 1, l->path));
            }
            lua_remove(L, -2);
        }
        push_key(L, &l->path[l->depth - 1]);
        push_value(L, &l->value);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    em_checkpoint_free(box->ck);
    box->ck = NULL;
    return 1;
}

/* ember._file_kind(path) -> 'file', 'directory', 'fifo', 'socket', 'device' or
 * 'other'; or nil, message when path cannot be stat'ed. stat(2) never blocks,
 * unlike opening a named pipe, so the Lua modules ask this before io.open. */
static int l_file_kind(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushstring(L, S_ISREG(st.st_mode)    ? "file"
                      : S_ISDIR(st.st_mode)  ? "directory"
                      : S_ISFIFO(st.st_mode) ? "fifo"
                      : S_ISSOCK(st.st_mode) ? "socket"
                      : (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) ? "device"
                                                                      : "other");
    lua_pushstring(L, em_file_kind(st.st_mode));
    return 2;
}

/* ember._list_dir(path) -> the entry names in directory order (no . and ..), or nil, message. */
static int l_list_dir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_newtable(L);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(d);
    return 1;
}

void em_lua_open_io(lua_State *L, int module, int methods) {
    (void)methods;
    static const luaL_Reg fns[] = {
        {"save", l_save}, {"load", l_load}, {"_file_kind", l_file_kind},
        {"_list_dir", l_list_dir}, {NULL, NULL}};
    lua_pushvalue(L, module);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
