/* em_lua_tensor.c — the tensor userdata: creation from C, argument checks,
 * and the metamethods (arithmetic, indexing, length, printing, GC). */
#include <dlfcn.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "em_autograd.h"
#include "em_lua.h"
#include "em_storage.h"

/* ---- push / check ---------------------------------------------------- */

/* The tensor metatable of the state that opened the module last: comparing
 * pointers is much cheaper than luaL_testudata's registry lookup, which stays
 * the fallback for any other state. Its address is also the registry key
 * under which the metatable is kept for em_lua_push. */
static const void *tensor_mt_cache;

/* Tensor bytes alive after the last full collection run below (tracked down
 * as storages are freed), and the growth over it that triggers the next. */
static size_t gc_base_bytes;
#define EM_GC_MIN_GROWTH ((size_t)64 << 20)
#define EM_GC_MAX_GROWTH ((size_t)256 << 20)

void em_lua_gc_account(lua_State *L, size_t bytes) {
    size_t kb = bytes >> 10;
    /* Incremental mode: the debt makes the collector work in step with the
     * tensors' real size. */
    if (kb > 0) lua_gc(L, LUA_GCSTEP, (int)(kb > 1000000 ? 1000000 : kb));
    /* Generational mode (lua5.4's default) ignores that debt for old objects,
     * and a tensor that lives across one allocation is already old: so once
     * live tensor bytes have grown well past what the last full collection
     * left, collect fully (cheap: the Lua heap itself is small). */
    size_t live = em_storage_cache_stats().live_bytes;
    if (live < gc_base_bytes) gc_base_bytes = live;
    /* growth = base / 2, kept within [64 MB, 256 MB]: the upper bound keeps what a
     * steady loop frees per collection inside the 512 MB block cache */
    size_t growth = gc_base_bytes / 2;
    if (growth < EM_GC_MIN_GROWTH) growth = EM_GC_MIN_GROWTH;
    if (growth > EM_GC_MAX_GROWTH) growth = EM_GC_MAX_GROWTH;
    if (live > gc_base_bytes + growth && lua_gc(L, LUA_GCISRUNNING)) {
        lua_gc(L, LUA_GCCOLLECT);
        gc_base_bytes = em_storage_cache_stats().live_bytes;
    }
}

/* Raises the core's message. The allocator cannot know which user-facing
 * function asked for the memory, so its "out of memory: ..." message is
 * prefixed here with the name the running function was called by (zeros,
 * randn, matmul, ...). */
int em_lua_core_error(lua_State *L) {
    const char *msg = em_error_message();
    lua_Debug ar;
    if (!strncmp(msg, "out of memory", 13) && lua_getstack(L, 0, &ar) &&
        lua_getinfo(L, "n", &ar) && ar.name)
        return luaL_error(L, "%s: %s", ar.name, msg);
    return luaL_error(L, "%s", msg);
}

void em_lua_push(lua_State *L, em_tensor *t) {
    if (!t) em_lua_core_error(L);
    em_lua_tensor *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->t = t;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &tensor_mt_cache) != LUA_TTABLE) {
        lua_pop(L, 1);
        luaL_getmetatable(L, EM_TENSOR_MT);
    }
    lua_setmetatable(L, -2);
    /* Tell the GC about each storage's bytes once (views share them). */
    if (!t->storage->accounted) {
        t->storage->accounted = true;
        em_lua_gc_account(L, em_tensor_storage_bytes(t));
    }
}

int em_lua_arg_error(lua_State *L, int arg, const char *fname, const char *expected) {
    const char *got = luaL_typename(L, arg);
    if (lua_type(L, arg) == LUA_TUSERDATA && luaL_testudata(L, arg, EM_TENSOR_MT)) {
        em_lua_tensor *u = lua_touserdata(L, arg);
        got = u->t ? "tensor" : "freed tensor";
    }
    return luaL_error(L, "%s: bad argument #%d (expected %s, got %s)", fname, arg, expected, got);
}


static em_lua_tensor *test_udata(lua_State *L, int arg) {
    void *p = lua_touserdata(L, arg);
    if (!p || !lua_getmetatable(L, arg)) return NULL;
    bool fast = lua_topointer(L, -1) == tensor_mt_cache;
    lua_pop(L, 1);
    if (fast) return p;
    return luaL_testudata(L, arg, EM_TENSOR_MT);
}

em_tensor *em_lua_test(lua_State *L, int arg) {
    em_lua_tensor *u = test_udata(L, arg);
    return u ? u->t : NULL;
}

em_tensor *em_lua_check(lua_State *L, int arg, const char *fname) {
    em_lua_tensor *u = test_udata(L, arg);
    if (!u) em_lua_arg_error(L, arg, fname, "tensor");
    if (!u->t)
        luaL_error(L, "%s: bad argument #%d (the tensor was freed with free() or <close>)", fname,
                   arg);
    return u->t;
}

em_tensor *em_lua_tensor_or_number(lua_State *L, int arg, const char *fname) {
    if (lua_type(L, arg) == LUA_TNUMBER) {
        em_tensor *t = em_tensor_scalar((float)lua_tonumber(L, arg));
        if (!t) em_lua_core_error(L);
        return t;
    }
    return em_tensor_retain(em_lua_check(L, arg, fname));
}

lua_Integer em_lua_check_integer(lua_State *L, int arg, const char *fname) {
    int isnum = 0;
    lua_Integer v = lua_tointegerx(L, arg, &isnum);
    if (!isnum) {
        if (lua_type(L, arg) == LUA_TNUMBER)
            luaL_error(L, "%s: bad argument #%d (expected an integer, got %s)", fname, arg,
                       lua_tostring(L, arg));
        em_lua_arg_error(L, arg, fname, "integer");
    }
    return v;
}

int em_lua_check_dim(lua_State *L, int arg, const char *fname) {
    lua_Integer d = em_lua_check_integer(L, arg, fname);
    if (d == 0)
        luaL_error(L, "%s: bad argument #%d (dim 0 is not valid: dims are 1-based, -1 is the last)",
                   fname, arg);
    if (d > 64 || d < -64) luaL_error(L, "%s: bad argument #%d (dim %d out of range)", fname, arg, (int)d);
    return d > 0 ? (int)d - 1 : (int)d;
}

int em_lua_opt_dim(lua_State *L, int arg, const char *fname, int def) {
    return lua_isnoneornil(L, arg) ? def : em_lua_check_dim(L, arg, fname);
}

int em_lua_check_shape(lua_State *L, int arg, const char *fname, int64_t *shape) {
    int n = 0;
    if (lua_istable(L, arg)) {
        lua_Integer len = luaL_len(L, arg);
        if (len > EM_MAX_DIMS)
            luaL_error(L, "%s: bad argument #%d (a shape has at most %d sizes, got %d)", fname, arg,
                       EM_MAX_DIMS, (int)len);
        for (int i = 1; i <= len; i++) {
            lua_geti(L, arg, i);
            int isnum = 0;
            lua_Integer v = lua_tointegerx(L, -1, &isnum);
            if (!isnum)
                luaL_error(L, "%s: bad argument #%d (size %d must be an integer, got %s)", fname,
                           arg, i, luaL_typename(L, -1));
            if (v < 0)
                luaL_error(L, "%s: bad argument #%d (size %d must be >= 0, got %I)", fname, arg,
                           i, (lua_Integer)v);
            shape[n++] = v;
            lua_pop(L, 1);
        }
        return n;
    }
    int top = lua_gettop(L);
    for (int i = arg; i <= top; i++) {
        if (lua_type(L, i) != LUA_TNUMBER) break;
        if (n == EM_MAX_DIMS)
            luaL_error(L, "%s: a shape has at most %d sizes", fname, EM_MAX_DIMS);
        lua_Integer v = em_lua_check_integer(L, i, fname);
        if (v < 0)
            luaL_error(L, "%s: bad argument #%d (size must be >= 0, got %I)", fname, i,
                       (lua_Integer)v);
        shape[n++] = v;
    }
    if (n == 0 && !lua_isnoneornil(L, arg))
        em_lua_arg_error(L, arg, fname, "a shape (table of sizes or sizes)");
    return n;
}

/* Builds a tensor from a (nested) table of numbers, checking it is regular. */
static int table_shape(lua_State *L, int idx, int depth, int64_t *shape, int *ndim) {
    if (depth >= EM_MAX_DIMS) return -1;
    lua_Integer len = luaL_len(L, idx);
    shape[depth] = len;
    if (depth + 1 > *ndim) *ndim = depth + 1;
    if (len > 0) {
        lua_geti(L, idx, 1);
        if (lua_istable(L, -1)) {
            int rc = table_shape(L, lua_gettop(L), depth + 1, shape, ndim);
            lua_pop(L, 1);
            return rc;
        }
        lua_pop(L, 1);
    }
    return 0;
}

static void table_fill(lua_State *L, int idx, int depth, int ndim, const int64_t *shape,
                       float **out, const char *fname) {
    lua_Integer len = luaL_len(L, idx);
    if (len != shape[depth])
        luaL_error(L, "%s: the nested table is not regular (a row at depth %d has %d entries, "
                   "expected %d)", fname, depth + 1, (int)len, (int)shape[depth]);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, idx, i);
        if (depth + 1 < ndim) {
            if (!lua_istable(L, -1))
                luaL_error(L, "%s: the nested table is not regular (expected a table at depth %d, "
                           "got %s)", fname, depth + 2, luaL_typename(L, -1));
            table_fill(L, lua_gettop(L), depth + 1, ndim, shape, out, fname);
        } else {
            int isnum = 0;
            lua_Number v = lua_tonumberx(L, -1, &isnum);
            if (!isnum)
                luaL_error(L, "%s: expected numbers in the table, got %s", fname,
                           luaL_typename(L, -1));
            *(*out)++ = (float)v;
        }
        lua_pop(L, 1);
    }
}

/* ember.tensor(table | number | tensor): a new tensor with a copy of the data. */
static int l_tensor(lua_State *L) {
    if (lua_type(L, 1) == LUA_TNUMBER) {
        em_lua_push(L, em_tensor_scalar((float)lua_tonumber(L, 1)));
        return 1;
    }
    em_tensor *src = em_lua_test(L, 1);
    if (src) {
        em_lua_push(L, em_clone(src));
        return 1;
    }
    if (!lua_istable(L, 1)) return em_lua_arg_error(L, 1, "tensor", "a table of numbers");
    int64_t shape[EM_MAX_DIMS];
    int ndim = 0;
    if (table_shape(L, 1, 0, shape, &ndim))
        return luaL_error(L, "tensor: the nested table is deeper than %d dims", EM_MAX_DIMS);
    em_tensor *t = em_tensor_empty(ndim, shape);
    if (!t) return em_lua_core_error(L);
    em_lua_push(L, t); /* owned by Lua before filling, so an error can't leak it */
    float *p = t->storage->data;
    table_fill(L, 1, 0, ndim, shape, &p, "tensor");
    return 1;
}

em_tensor *em_lua_index_tensor(lua_State *L, int arg, const char *fname) {
    em_tensor *idx = em_lua_test(L, arg);
    em_tensor *owned = NULL;
    if (!idx) {
        if (!lua_istable(L, arg)) em_lua_arg_error(L, arg, fname, "an index tensor or table");
        lua_pushcfunction(L, l_tensor);
        lua_pushvalue(L, arg);
        lua_call(L, 1, 1);
        idx = em_lua_test(L, -1);
        owned = em_tensor_retain(idx);
        lua_pop(L, 1);
    }
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    em_tensor *zero_based = em_binary_scalar(EM_BIN_SUB, idx, 1.0f);
    em_set_grad_enabled(was);
    em_tensor_release(owned);
    if (!zero_based) em_lua_core_error(L);
    return zero_based;
}

/* ---- metamethods ----------------------------------------------------- */

static int mm_gc(lua_State *L) {
    em_lua_tensor *u = luaL_checkudata(L, 1, EM_TENSOR_MT);
    em_tensor_release(u->t);
    u->t = NULL;
    return 0;
}

static int mm_tostring(lua_State *L) {
    em_lua_tensor *u = luaL_checkudata(L, 1, EM_TENSOR_MT);
    if (!u->t) {
        lua_pushstring(L, "ember.Tensor (freed)");
        return 1;
    }
    em_lua_push_tostring(L, u->t);
    return 1;
}

static int mm_len(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "#");
    lua_pushinteger(L, t->ndim ? t->shape[0] : 0);
    return 1;
}

/* a op b where either may be a number. */
static int arith(lua_State *L, em_binary_op op, const char *name) {
    em_tensor *a = em_lua_test(L, 1), *b = em_lua_test(L, 2);
    if (a && b) {
        em_lua_push(L, em_binary(op, a, b));
    } else if (a && lua_type(L, 2) == LUA_TNUMBER) {
        em_lua_push(L, em_binary_scalar(op, a, (float)lua_tonumber(L, 2)));
    } else if (b && lua_type(L, 1) == LUA_TNUMBER) {
        em_lua_push(L, em_scalar_binary(op, (float)lua_tonumber(L, 1), b));
    } else {
        int bad = (a || lua_type(L, 1) == LUA_TNUMBER) ? 2 : 1;
        return em_lua_arg_error(L, bad, name, "tensor or number");
    }
    return 1;
}

static int mm_add(lua_State *L) { return arith(L, EM_BIN_ADD, "add"); }
static int mm_sub(lua_State *L) { return arith(L, EM_BIN_SUB, "sub"); }
static int mm_mul(lua_State *L) { return arith(L, EM_BIN_MUL, "mul"); }
static int mm_div(lua_State *L) { return arith(L, EM_BIN_DIV, "div"); }
static int mm_pow(lua_State *L) { return arith(L, EM_BIN_POW, "pow"); }
static int mm_unm(lua_State *L) {
    em_lua_push(L, em_unary(EM_UN_NEG, em_lua_check(L, 1, "unm")));
    return 1;
}

/* t[i]: a number for a 1-D tensor, else a view of row i. */
static int index_int(lua_State *L, em_tensor *t, lua_Integer i) {
    if (t->ndim == 0) return luaL_error(L, "index: cannot index a 0-dim tensor (use :item())");
    int64_t n = t->shape[0];
    int64_t k = i > 0 ? i - 1 : n + i;
    if (i == 0 || k < 0 || k >= n)
        return luaL_error(L, "index: index %I out of range for dim 1 of size %I (expected 1..%I)",
                          (lua_Integer)i, (lua_Integer)n, (lua_Integer)n);
    if (t->ndim == 1) {
        lua_pushnumber(L, em_tensor_data(t)[k * t->strides[0]]);
        return 1;
    }
    em_lua_push(L, em_select(t, 0, k));
    return 1;
}

static int mm_index(lua_State *L) {
    em_lua_tensor *u = luaL_checkudata(L, 1, EM_TENSOR_MT);
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *key = lua_tostring(L, 2);
        /* methods first (upvalue 1 is the methods table) */
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
        lua_pop(L, 1);
        if (!u->t) return luaL_error(L, "tensor.%s: the tensor was freed", key);
        if (!strcmp(key, "grad")) {
            if (u->t->grad) em_lua_push(L, em_tensor_retain(u->t->grad));
            else lua_pushnil(L);
            return 1;
        }
        if (!strcmp(key, "is_leaf")) {
            lua_pushboolean(L, u->t->grad_fn == NULL);
            return 1;
        }
        if (!strcmp(key, "grad_fn")) {
            if (u->t->grad_fn) lua_pushstring(L, em_node_name(u->t->grad_fn));
            else lua_pushnil(L);
            return 1;
        }
        lua_pushnil(L);
        return 1;
    }
    em_tensor *t = em_lua_check(L, 1, "index");
    if (lua_isinteger(L, 2)) return index_int(L, t, lua_tointeger(L, 2));
    if (lua_type(L, 2) == LUA_TNUMBER)
        return luaL_error(L, "index: expected an integer index, got %s", lua_tostring(L, 2));
    return luaL_error(L, "index: expected an integer index or a method name, got %s",
                      luaL_typename(L, 2));
}

static int mm_newindex(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "newindex");
    if (lua_type(L, 2) == LUA_TSTRING && !strcmp(lua_tostring(L, 2), "grad")) {
        em_tensor *g = lua_isnil(L, 3) ? NULL : em_lua_check(L, 3, "grad");
        if (g && !em_same_shape(g, t)) return luaL_error(L, "grad: shape must match the tensor's");
        em_tensor_release(t->grad);
        t->grad = em_tensor_retain(g);
        return 0;
    }
    if (!lua_isinteger(L, 2))
        return luaL_error(L, "newindex: expected an integer index or 'grad', got %s",
                          luaL_typename(L, 2));
    lua_Integer i = lua_tointeger(L, 2);
    if (t->ndim == 0) return luaL_error(L, "newindex: cannot index a 0-dim tensor");
    int64_t n = t->shape[0], k = i > 0 ? i - 1 : n + i;
    if (i == 0 || k < 0 || k >= n)
        return luaL_error(L, "newindex: index %I out of range for dim 1 of size %I (expected 1..%I)",
                          (lua_Integer)i, (lua_Integer)n, (lua_Integer)n);
    em_tensor *row = em_select(t, 0, k);
    if (!row) return em_lua_core_error(L);
    int rc;
    if (lua_type(L, 3) == LUA_TNUMBER) {
        rc = em_fill_(row, (float)lua_tonumber(L, 3));
    } else {
        em_tensor *src = em_lua_test(L, 3);
        if (!src) {
            em_tensor_release(row);
            return em_lua_arg_error(L, 3, "newindex", "tensor or number");
        }
        rc = em_copy_(row, src);
    }
    em_tensor_release(row);
    if (rc) return em_lua_core_error(L);
    return 0;
}

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, luaL_testudata(L, 1, EM_TENSOR_MT) != NULL);
    return 1;
}

static int l_free(lua_State *L) {
    em_lua_tensor *u = luaL_testudata(L, 1, EM_TENSOR_MT);
    if (!u) return em_lua_arg_error(L, 1, "free", "tensor");
    em_tensor_release(u->t);
    u->t = NULL;
    return 0;
}

/* Keeps this library, and the libgomp and OpenBLAS it brings in, loaded until
 * the process ends: lua_close dlcloses C modules, and unloading libgomp under
 * its idle worker threads crashes the process on its way out. */
static void pin_library(void) {
    Dl_info info;
    if (dladdr((void *)pin_library, &info) && info.dli_fname)
        dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

void em_lua_open_tensor(lua_State *L) {
    /* module table at -2, methods table at -1 */
    int methods = lua_gettop(L);
    int module = methods - 1;
    pin_library();
    luaL_newmetatable(L, EM_TENSOR_MT);
    tensor_mt_cache = lua_topointer(L, -1);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &tensor_mt_cache);
    static const luaL_Reg meta[] = {
        {"__gc", mm_gc},     {"__close", mm_gc},   {"__tostring", mm_tostring},
        {"__len", mm_len},   {"__add", mm_add},    {"__sub", mm_sub},
        {"__mul", mm_mul},   {"__div", mm_div},    {"__pow", mm_pow},
        {"__unm", mm_unm},   {"__newindex", mm_newindex}, {NULL, NULL}};
    luaL_setfuncs(L, meta, 0);
    lua_pushvalue(L, methods);
    lua_pushcclosure(L, mm_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "ember.Tensor");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);

    lua_pushcfunction(L, l_free);
    lua_setfield(L, methods, "free");
    lua_pushcfunction(L, l_tensor);
    lua_setfield(L, module, "tensor");
    lua_pushcfunction(L, l_is_tensor);
    lua_setfield(L, module, "is_tensor");
}
