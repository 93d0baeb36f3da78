/* em_lua_ops.c — the tensor functions Lua sees, each both a method
 * (t:sum(2)) and a module function (ember.sum(t, 2)). Dims and indices are
 * 1-based here; every argument is checked before anything is allocated. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "em_autograd.h"
#include "em_lua.h"
#include "em_rng.h"
#include "em_storage.h"

/* ---- creation -------------------------------------------------------- */

static int lf_zeros(lua_State *L) {
    int64_t s[EM_MAX_DIMS];
    int n = em_lua_check_shape(L, 1, "zeros", s);
    em_lua_push(L, em_tensor_zeros(n, s));
    return 1;
}
static int lf_ones(lua_State *L) {
    int64_t s[EM_MAX_DIMS];
    int n = em_lua_check_shape(L, 1, "ones", s);
    em_lua_push(L, em_tensor_ones(n, s));
    return 1;
}
static int lf_empty(lua_State *L) {
    int64_t s[EM_MAX_DIMS];
    int n = em_lua_check_shape(L, 1, "empty", s);
    em_lua_push(L, em_tensor_zeros(n, s));
    return 1;
}
/* full(shape, value) */
static int lf_full(lua_State *L) {
    int64_t s[EM_MAX_DIMS];
    if (!lua_istable(L, 1)) return em_lua_arg_error(L, 1, "full", "a shape table");
    int n = em_lua_check_shape(L, 1, "full", s);
    float v = (float)luaL_checknumber(L, 2);
    em_lua_push(L, em_tensor_full(n, s, v));
    return 1;
}
/* arange(end) | arange(start, end [, step]) */
static int lf_arange(lua_State *L) {
    double start = 0, end, step = 1;
    if (lua_isnoneornil(L, 2)) {
        end = luaL_checknumber(L, 1);
    } else {
        start = luaL_checknumber(L, 1);
        end = luaL_checknumber(L, 2);
        step = luaL_optnumber(L, 3, 1);
    }
    em_lua_push(L, em_tensor_arange(start, end, step));
    return 1;
}
static int lf_linspace(lua_State *L) {
    double a = luaL_checknumber(L, 1), b = luaL_checknumber(L, 2);
    lua_Integer n = em_lua_check_integer(L, 3, "linspace");
    em_lua_push(L, em_tensor_linspace(a, b, n));
    return 1;
}
static int lf_eye(lua_State *L) {
    lua_Integer r = em_lua_check_integer(L, 1, "eye");
    lua_Integer c = lua_isnoneornil(L, 2) ? r : em_lua_check_integer(L, 2, "eye");
    if (r < 0 || c < 0) return luaL_error(L, "eye: sizes must be >= 0, got %d x %d", (int)r, (int)c);
    em_lua_push(L, em_tensor_eye(r, c));
    return 1;
}
static int lf_rand(lua_State *L) {
    int64_t s[EM_MAX_DIMS];
    int n = em_lua_check_shape(L, 1, "rand", s);
    em_lua_push(L, em_rand(n, s));
    return 1;
}
static int lf_randn(lua_State *L) {
    int64_t s[EM_MAX_DIMS];
    int n = em_lua_check_shape(L, 1, "randn", s);
    em_lua_push(L, em_randn(n, s));
    return 1;
}
/* randint(low, high, shape): integers in [low, high) */
static int lf_randint(lua_State *L) {
    lua_Integer lo = em_lua_check_integer(L, 1, "randint");
    lua_Integer hi = em_lua_check_integer(L, 2, "randint");
    int64_t s[EM_MAX_DIMS];
    int n = em_lua_check_shape(L, 3, "randint", s);
    em_lua_push(L, em_randint(lo, hi, n, s));
    return 1;
}
/* normal(mean, std, shape) */
static int lf_normal(lua_State *L) {
    float mean = (float)luaL_checknumber(L, 1), std = (float)luaL_checknumber(L, 2);
    int64_t s[EM_MAX_DIMS];
    int n = em_lua_check_shape(L, 3, "normal", s);
    em_lua_push(L, em_normal(n, s, mean, std));
    return 1;
}
/* bernoulli(p_tensor) | bernoulli(p, shape) */
static int lf_bernoulli(lua_State *L) {
    if (lua_type(L, 1) == LUA_TNUMBER) {
        int64_t s[EM_MAX_DIMS];
        int n = em_lua_check_shape(L, 2, "bernoulli", s);
        em_tensor *p = em_tensor_full(n, s, (float)lua_tonumber(L, 1));
        if (!p) return em_lua_core_error(L);
        em_tensor *r = em_bernoulli(p);
        em_tensor_release(p);
        em_lua_push(L, r);
        return 1;
    }
    em_lua_push(L, em_bernoulli(em_lua_check(L, 1, "bernoulli")));
    return 1;
}
static int like(lua_State *L, const char *fname, int kind) {
    em_tensor *t = em_lua_check(L, 1, fname);
    switch (kind) {
    case 0: em_lua_push(L, em_tensor_zeros(t->ndim, t->shape)); break;
    case 1: em_lua_push(L, em_tensor_ones(t->ndim, t->shape)); break;
    case 2: em_lua_push(L, em_rand(t->ndim, t->shape)); break;
    case 3: em_lua_push(L, em_randn(t->ndim, t->shape)); break;
    default: em_lua_push(L, em_tensor_full(t->ndim, t->shape, (float)luaL_checknumber(L, 2)));
    }
    return 1;
}
static int lf_zeros_like(lua_State *L) { return like(L, "zeros_like", 0); }
static int lf_ones_like(lua_State *L) { return like(L, "ones_like", 1); }
static int lf_rand_like(lua_State *L) { return like(L, "rand_like", 2); }
static int lf_randn_like(lua_State *L) { return like(L, "randn_like", 3); }
static int lf_full_like(lua_State *L) { return like(L, "full_like", 4); }

/* ---- inspection ------------------------------------------------------ */

/* A shape table prints as {2, 3} (a plain table otherwise). */
static int shape_tostring(lua_State *L) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '{');
    lua_Integer n = luaL_len(L, 1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        luaL_addvalue(&b); /* luaL_addvalue converts the number to text */
        if (i < n) luaL_addstring(&b, ", ");
    }
    luaL_addchar(&b, '}');
    luaL_pushresult(&b);
    return 1;
}

static int lf_shape(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "shape");
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    if (luaL_newmetatable(L, "ember.Shape")) {
        lua_pushcfunction(L, shape_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    return 1;
}
static int lf_size(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "size");
    if (lua_isnoneornil(L, 2)) return lf_shape(L);
    int d = em_normalize_dim("size", em_lua_check_dim(L, 2, "size"), t->ndim);
    if (d < 0) return em_lua_core_error(L);
    lua_pushinteger(L, t->shape[d]);
    return 1;
}
static int lf_dim(lua_State *L) {
    lua_pushinteger(L, em_lua_check(L, 1, "dim")->ndim);
    return 1;
}
static int lf_numel(lua_State *L) {
    lua_pushinteger(L, em_lua_check(L, 1, "numel")->numel);
    return 1;
}
static int lf_item(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "item");
    if (t->numel != 1)
        return luaL_error(L, "item: expected a tensor with one element, got %d elements",
                          (int)t->numel);
    lua_pushnumber(L, em_tensor_data(t)[0]);
    return 1;
}
static void push_table(lua_State *L, const em_tensor *t, int dim, int64_t off) {
    const float *d = em_tensor_data(t);
    lua_createtable(L, (int)t->shape[dim], 0);
    for (int64_t i = 0; i < t->shape[dim]; i++) {
        int64_t o = off + i * t->strides[dim];
        if (dim == t->ndim - 1) lua_pushnumber(L, d[o]);
        else push_table(L, t, dim + 1, o);
        lua_rawseti(L, -2, i + 1);
    }
}
static int lf_totable(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "totable");
    if (t->ndim == 0) lua_pushnumber(L, em_tensor_data(t)[0]);
    else push_table(L, t, 0, 0);
    return 1;
}
static int lf_is_contiguous(lua_State *L) {
    lua_pushboolean(L, em_tensor_is_contiguous(em_lua_check(L, 1, "is_contiguous")));
    return 1;
}
/* t:stats(): {min, max, mean, std, nan, inf} over the finite values */
static int lf_stats(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "stats");
    em_tensor *c = em_contiguous(t);
    if (!c) return em_lua_core_error(L);
    const float *d = em_tensor_data(c);
    double mn = INFINITY, mx = -INFINITY, sum = 0, sq = 0;
    int64_t nan = 0, inf = 0, finite = 0;
    for (int64_t i = 0; i < c->numel; i++) {
        float v = d[i];
        if (isnan(v)) { nan++; continue; }
        if (isinf(v)) { inf++; continue; }
        finite++;
        sum += v;
        if (v < mn) mn = v;
        if (v > mx) mx = v;
    }
    double mean = finite ? sum / (double)finite : NAN;
    for (int64_t i = 0; i < c->numel; i++)
        if (isfinite(d[i])) sq += (d[i] - mean) * (d[i] - mean);
    em_tensor_release(c);
    lua_createtable(L, 0, 7);
    lua_pushnumber(L, finite ? mn : NAN); lua_setfield(L, -2, "min");
    lua_pushnumber(L, finite ? mx : NAN); lua_setfield(L, -2, "max");
    lua_pushnumber(L, mean); lua_setfield(L, -2, "mean");
    lua_pushnumber(L, finite > 1 ? sqrt(sq / (double)(finite - 1)) : NAN); lua_setfield(L, -2, "std");
    lua_pushinteger(L, nan); lua_setfield(L, -2, "nan");
    lua_pushinteger(L, inf); lua_setfield(L, -2, "inf");
    lua_pushinteger(L, t->numel); lua_setfield(L, -2, "numel");
    return 1;
}

/* ---- views ----------------------------------------------------------- */

static int lf_view(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "view");
    int64_t s[EM_MAX_DIMS];
    int n = 0;
    if (lua_istable(L, 2)) {
        lua_Integer len = luaL_len(L, 2);
        if (len > EM_MAX_DIMS) return luaL_error(L, "view: at most %d sizes", EM_MAX_DIMS);
        for (int i = 1; i <= len; i++) {
            lua_geti(L, 2, i);
            s[n++] = em_lua_check_integer(L, -1, "view");
            lua_pop(L, 1);
        }
    } else {
        if (lua_gettop(L) - 1 > EM_MAX_DIMS)
            return luaL_error(L, "view: at most %d sizes, got %d", EM_MAX_DIMS, lua_gettop(L) - 1);
        for (int i = 2; i <= lua_gettop(L); i++) s[n++] = em_lua_check_integer(L, i, "view");
    }
    em_lua_push(L, em_view(t, n, s));
    return 1;
}
static int lf_reshape(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "reshape");
    int64_t s[EM_MAX_DIMS];
    int n = 0;
    if (lua_istable(L, 2)) {
        lua_Integer len = luaL_len(L, 2);
        if (len > EM_MAX_DIMS) return luaL_error(L, "reshape: at most %d sizes", EM_MAX_DIMS);
        for (int i = 1; i <= len; i++) {
            lua_geti(L, 2, i);
            s[n++] = em_lua_check_integer(L, -1, "reshape");
            lua_pop(L, 1);
        }
    } else {
        if (lua_gettop(L) - 1 > EM_MAX_DIMS)
            return luaL_error(L, "reshape: at most %d sizes, got %d", EM_MAX_DIMS, lua_gettop(L) - 1);
        for (int i = 2; i <= lua_gettop(L); i++) s[n++] = em_lua_check_integer(L, i, "reshape");
    }
    em_lua_push(L, em_reshape(t, n, s));
    return 1;
}
static int lf_permute(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "permute");
    int dims[EM_MAX_DIMS], n = 0;
    if (lua_istable(L, 2)) {
        lua_Integer len = luaL_len(L, 2);
        if (len > EM_MAX_DIMS) return luaL_error(L, "permute: at most %d dims", EM_MAX_DIMS);
        for (int i = 1; i <= len; i++) {
            lua_geti(L, 2, i);
            dims[n++] = em_lua_check_dim(L, -1, "permute");
            lua_pop(L, 1);
        }
    } else {
        if (lua_gettop(L) - 1 > EM_MAX_DIMS)
            return luaL_error(L, "permute: at most %d dims, got %d", EM_MAX_DIMS, lua_gettop(L) - 1);
        for (int i = 2; i <= lua_gettop(L); i++) dims[n++] = em_lua_check_dim(L, i, "permute");
    }
    if (n != t->ndim)
        return luaL_error(L, "permute: expected %d dims for a tensor of %d dims, got %d", t->ndim,
                          t->ndim, n);
    em_lua_push(L, em_permute(t, dims));
    return 1;
}
static int lf_transpose(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "transpose");
    int a = em_lua_check_dim(L, 2, "transpose"), b = em_lua_check_dim(L, 3, "transpose");
    em_lua_push(L, em_transpose(t, a, b));
    return 1;
}
/* t:t(): transpose of a 2-D tensor (a 1-D one is returned as is) */
static int lf_t(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "t");
    if (t->ndim > 2) return luaL_error(L, "t: expected a tensor of at most 2 dims, got %d", t->ndim);
    if (t->ndim < 2) {
        em_lua_push(L, em_tensor_retain(t));
        return 1;
    }
    em_lua_push(L, em_transpose(t, 0, 1));
    return 1;
}
/* t:narrow(dim, start, length), start 1-based */
static int lf_narrow(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "narrow");
    int d = em_lua_check_dim(L, 2, "narrow");
    lua_Integer start = em_lua_check_integer(L, 3, "narrow");
    lua_Integer len = em_lua_check_integer(L, 4, "narrow");
    if (start < 1) return luaL_error(L, "narrow: start %d must be >= 1 (1-based)", (int)start);
    em_lua_push(L, em_narrow(t, d, start - 1, len));
    return 1;
}
static int lf_select(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "select");
    int d = em_lua_check_dim(L, 2, "select");
    lua_Integer i = em_lua_check_integer(L, 3, "select");
    int dd = em_normalize_dim("select", d, t->ndim);
    if (dd < 0) return em_lua_core_error(L);
    int64_t k = i > 0 ? i - 1 : t->shape[dd] + i;
    if (i == 0 || k < 0 || k >= t->shape[dd])
        return luaL_error(L, "select: index %d out of range for dim %d of size %d (expected 1..%d)",
                          (int)i, dd + 1, (int)t->shape[dd], (int)t->shape[dd]);
    em_lua_push(L, em_select(t, dd, k));
    return 1;
}
static int lf_expand(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "expand");
    int64_t s[EM_MAX_DIMS];
    int n = 0;
    if (lua_istable(L, 2)) {
        lua_Integer len = luaL_len(L, 2);
        if (len > EM_MAX_DIMS) return luaL_error(L, "expand: at most %d sizes", EM_MAX_DIMS);
        for (int i = 1; i <= len; i++) {
            lua_geti(L, 2, i);
            s[n++] = em_lua_check_integer(L, -1, "expand");
            lua_pop(L, 1);
        }
    } else {
        if (lua_gettop(L) - 1 > EM_MAX_DIMS)
            return luaL_error(L, "expand: at most %d sizes, got %d", EM_MAX_DIMS, lua_gettop(L) - 1);
        for (int i = 2; i <= lua_gettop(L); i++) s[n++] = em_lua_check_integer(L, i, "expand");
    }
    em_lua_push(L, em_expand(t, n, s));
    return 1;
}
static int lf_expand_as(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "expand_as"), *o = em_lua_check(L, 2, "expand_as");
    em_lua_push(L, em_expand(t, o->ndim, o->shape));
    return 1;
}
static int lf_squeeze(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "squeeze");
    if (lua_isnoneornil(L, 2)) em_lua_push(L, em_squeeze_all(t));
    else em_lua_push(L, em_squeeze(t, em_lua_check_dim(L, 2, "squeeze")));
    return 1;
}
static int lf_unsqueeze(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "unsqueeze");
    em_lua_push(L, em_unsqueeze(t, em_lua_check_dim(L, 2, "unsqueeze")));
    return 1;
}
/* t:flatten([start_dim=1 [, end_dim=-1]]) */
static int lf_flatten(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "flatten");
    if (t->ndim == 0) {
        int64_t one = 1;
        em_lua_push(L, em_reshape(t, 1, &one));
        return 1;
    }
    int s = em_normalize_dim("flatten", em_lua_opt_dim(L, 2, "flatten", 0), t->ndim);
    int e = s < 0 ? -1 : em_normalize_dim("flatten", em_lua_opt_dim(L, 3, "flatten", -1), t->ndim);
    if (s < 0 || e < 0) return em_lua_core_error(L);
    if (e < s) return luaL_error(L, "flatten: end dim %d is before start dim %d", e + 1, s + 1);
    int64_t shape[EM_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < s; i++) shape[n++] = t->shape[i];
    int64_t m = 1;
    for (int i = s; i <= e; i++) m *= t->shape[i];
    shape[n++] = m;
    for (int i = e + 1; i < t->ndim; i++) shape[n++] = t->shape[i];
    em_lua_push(L, em_reshape(t, n, shape));
    return 1;
}
static int lf_contiguous(lua_State *L) {
    em_lua_push(L, em_contiguous(em_lua_check(L, 1, "contiguous")));
    return 1;
}
static int lf_clone(lua_State *L) {
    em_lua_push(L, em_clone(em_lua_check(L, 1, "clone")));
    return 1;
}
static int lf_detach(lua_State *L) {
    em_lua_push(L, em_detach(em_lua_check(L, 1, "detach")));
    return 1;
}

/* ---- elementwise ----------------------------------------------------- */

#define UNARY_FN(NAME, OP)                                                  \
    static int lf_##NAME(lua_State *L) {                                     \
        em_lua_push(L, em_unary(OP, em_lua_check(L, 1, #NAME)));            \
        return 1;                                                           \
    }                                                                       \
    static int lf_##NAME##_(lua_State *L) {                                  \
        if (em_unary_(OP, em_lua_check(L, 1, #NAME "_"))) em_lua_core_error(L); \
        lua_settop(L, 1);                                                   \
        return 1;                                                           \
    }
#define UNARY_LIST(X)                                                                    \
    X(neg, EM_UN_NEG) X(abs, EM_UN_ABS) X(exp, EM_UN_EXP) X(log, EM_UN_LOG)              \
    X(log1p, EM_UN_LOG1P) X(sqrt, EM_UN_SQRT) X(rsqrt, EM_UN_RSQRT) X(tanh, EM_UN_TANH)  \
    X(sigmoid, EM_UN_SIGMOID) X(relu, EM_UN_RELU) X(sign, EM_UN_SIGN) X(sin, EM_UN_SIN)  \
    X(cos, EM_UN_COS) X(square, EM_UN_SQUARE) X(reciprocal, EM_UN_RECIPROCAL)            \
    X(floor, EM_UN_FLOOR) X(ceil, EM_UN_CEIL) X(round, EM_UN_ROUND)                      \
    X(softplus, EM_UN_SOFTPLUS)
UNARY_LIST(UNARY_FN)

/* a op b with a or b possibly a number. */
static int binary(lua_State *L, em_binary_op op, const char *name) {
    em_tensor *a = em_lua_test(L, 1), *b = em_lua_test(L, 2);
    if (a && b) em_lua_push(L, em_binary(op, a, b));
    else if (a && lua_type(L, 2) == LUA_TNUMBER)
        em_lua_push(L, em_binary_scalar(op, a, (float)lua_tonumber(L, 2)));
    else if (b && lua_type(L, 1) == LUA_TNUMBER)
        em_lua_push(L, em_scalar_binary(op, (float)lua_tonumber(L, 1), b));
    else return em_lua_arg_error(L, a || lua_type(L, 1) == LUA_TNUMBER ? 2 : 1, name, "tensor or number");
    return 1;
}
static int binary_(lua_State *L, em_binary_op op, const char *name) {
    em_tensor *a = em_lua_check(L, 1, name);
    int rc;
    if (lua_type(L, 2) == LUA_TNUMBER) rc = em_binary_scalar_(op, a, (float)lua_tonumber(L, 2));
    else rc = em_binary_(op, a, em_lua_check(L, 2, name));
    if (rc) return em_lua_core_error(L);
    lua_settop(L, 1);
    return 1;
}
#define BINARY_FN(NAME, OP)                                                     \
    static int lf_##NAME(lua_State *L) { return binary(L, OP, #NAME); }          \
    static int lf_##NAME##_(lua_State *L) { return binary_(L, OP, #NAME "_"); }
#define BINARY_LIST(X)                                                                     \
    X(add, EM_BIN_ADD) X(sub, EM_BIN_SUB) X(mul, EM_BIN_MUL) X(div, EM_BIN_DIV)            \
    X(pow, EM_BIN_POW) X(maximum, EM_BIN_MAXIMUM) X(minimum, EM_BIN_MINIMUM)               \
    X(eq, EM_BIN_EQ) X(ne, EM_BIN_NE) X(lt, EM_BIN_LT) X(le, EM_BIN_LE) X(gt, EM_BIN_GT)   \
    X(ge, EM_BIN_GE)
BINARY_LIST(BINARY_FN)

/* clamp(t, min, max): either bound may be nil */
static int lf_clamp(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "clamp");
    float lo = lua_isnoneornil(L, 2) ? -INFINITY : (float)luaL_checknumber(L, 2);
    float hi = lua_isnoneornil(L, 3) ? INFINITY : (float)luaL_checknumber(L, 3);
    em_lua_push(L, em_clamp(t, lo, hi));
    return 1;
}
static int lf_clamp_(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "clamp_");
    float lo = lua_isnoneornil(L, 2) ? -INFINITY : (float)luaL_checknumber(L, 2);
    float hi = lua_isnoneornil(L, 3) ? INFINITY : (float)luaL_checknumber(L, 3);
    if (em_clamp_(t, lo, hi)) return em_lua_core_error(L);
    lua_settop(L, 1);
    return 1;
}
/* where(cond, a, b): a and b tensors or numbers */
static int lf_where(lua_State *L) {
    em_tensor *c = em_lua_check(L, 1, "where");
    em_tensor *a = em_lua_tensor_or_number(L, 2, "where");
    em_tensor *b = lua_type(L, 3) == LUA_TNUMBER || em_lua_test(L, 3) ? em_lua_tensor_or_number(L, 3, "where") : NULL;
    if (!b) {
        em_tensor_release(a);
        return em_lua_arg_error(L, 3, "where", "tensor or number");
    }
    em_tensor *r = em_where(c, a, b);
    em_tensor_release(a);
    em_tensor_release(b);
    em_lua_push(L, r);
    return 1;
}
static int lf_masked_fill(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "masked_fill"), *m = em_lua_check(L, 2, "masked_fill");
    em_lua_push(L, em_masked_fill(t, m, (float)luaL_checknumber(L, 3)));
    return 1;
}
static int lf_masked_fill_(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "masked_fill_"), *m = em_lua_check(L, 2, "masked_fill_");
    if (em_masked_fill_(t, m, (float)luaL_checknumber(L, 3))) return em_lua_core_error(L);
    lua_settop(L, 1);
    return 1;
}
static int lf_leaky_relu(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "leaky_relu");
    em_lua_push(L, em_leaky_relu(t, (float)luaL_optnumber(L, 2, 0.01)));
    return 1;
}
static int lf_elu(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "elu");
    em_lua_push(L, em_elu(t, (float)luaL_optnumber(L, 2, 1.0)));
    return 1;
}
static int lf_fill_(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "fill_");
    if (em_fill_(t, (float)luaL_checknumber(L, 2))) return em_lua_core_error(L);
    lua_settop(L, 1);
    return 1;
}
static int lf_zero_(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "zero_");
    if (em_fill_(t, 0.0f)) return em_lua_core_error(L);
    lua_settop(L, 1);
    return 1;
}
static int lf_copy_(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "copy_"), *s = em_lua_check(L, 2, "copy_");
    if (em_copy_(t, s)) return em_lua_core_error(L);
    lua_settop(L, 1);
    return 1;
}
static int lf_uniform_(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "uniform_");
    if (em_uniform_(t, (float)luaL_optnumber(L, 2, 0), (float)luaL_optnumber(L, 3, 1)))
        return em_lua_core_error(L);
    lua_settop(L, 1);
    return 1;
}
static int lf_normal_(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "normal_");
    if (em_normal_(t, (float)luaL_optnumber(L, 2, 0), (float)luaL_optnumber(L, 3, 1)))
        return em_lua_core_error(L);
    lua_settop(L, 1);
    return 1;
}

/* ---- reductions ------------------------------------------------------ */

/* dims at arg: nil (all), an integer, or a table of integers. */
static int check_dims(lua_State *L, int arg, const char *fname, int *dims) {
    if (lua_isnoneornil(L, arg)) return 0;
    if (lua_istable(L, arg)) {
        lua_Integer len = luaL_len(L, arg);
        if (len > EM_MAX_DIMS) luaL_error(L, "%s: too many dims", fname);
        for (int i = 1; i <= len; i++) {
            lua_geti(L, arg, i);
            dims[i - 1] = em_lua_check_dim(L, lua_gettop(L), fname);
            lua_pop(L, 1);
        }
        if (len == 0) luaL_error(L, "%s: bad argument #%d (empty dim list)", fname, arg);
        return (int)len;
    }
    dims[0] = em_lua_check_dim(L, arg, fname);
    return 1;
}
static bool opt_bool(lua_State *L, int arg, const char *fname) {
    if (lua_isnoneornil(L, arg)) return false;
    if (!lua_isboolean(L, arg)) em_lua_arg_error(L, arg, fname, "boolean (keepdim)");
    return lua_toboolean(L, arg);
}
static int reduce(lua_State *L, em_reduce_op op, const char *name) {
    em_tensor *t = em_lua_check(L, 1, name);
    int dims[EM_MAX_DIMS];
    int n = check_dims(L, 2, name, dims);
    bool keep = opt_bool(L, 3, name);
    int correction = 1;
    if (!lua_isnoneornil(L, 4)) correction = (int)em_lua_check_integer(L, 4, name);
    em_lua_push(L, em_reduce(op, t, n, dims, keep, correction));
    return 1;
}
static int lf_sum(lua_State *L) { return reduce(L, EM_RED_SUM, "sum"); }
static int lf_mean(lua_State *L) { return reduce(L, EM_RED_MEAN, "mean"); }
static int lf_var(lua_State *L) { return reduce(L, EM_RED_VAR, "var"); }
static int lf_std(lua_State *L) { return reduce(L, EM_RED_STD, "std"); }
static int lf_logsumexp(lua_State *L) { return reduce(L, EM_RED_LOGSUMEXP, "logsumexp"); }
static int lf_prod(lua_State *L) { return reduce(L, EM_RED_PROD, "prod"); }

/* t:norm([p [, dim [, keepdim]]]): the vector p-norm (p = 2 by default, p >= 1 or
 * math.huge) over all elements or the given dims, as torch.norm. Built from
 * ops; the 2- and p-norms take the root of a safe argument so that the
 * gradient at an all-zero group is 0 (the subgradient PyTorch returns), not
 * the 0 * inf = NaN of sqrt(sum(x^2)). */
static int lf_norm(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "norm");
    double p = 2;
    if (!lua_isnoneornil(L, 2)) {
        if (!lua_isnumber(L, 2)) em_lua_arg_error(L, 2, "norm", "number p >= 1 or math.huge");
        p = lua_tonumber(L, 2);
        if (!(p >= 1)) em_lua_arg_error(L, 2, "norm", "number p >= 1 or math.huge");
    }
    int dims[EM_MAX_DIMS];
    int n = check_dims(L, 3, "norm", dims);
    bool keep = opt_bool(L, 4, "norm");
    em_tensor *a = em_unary(EM_UN_ABS, t), *r = NULL;
    if (p == 1) {
        r = em_reduce(EM_RED_SUM, a, n, dims, keep, 0);
    } else if (isinf(p)) {
        r = em_reduce(EM_RED_MAX, a, n, dims, keep, 0);
    } else {
        em_tensor *ap = p == 2 ? em_unary(EM_UN_SQUARE, t) : em_binary_scalar(EM_BIN_POW, a, (float)p);
        em_tensor *s = em_reduce(EM_RED_SUM, ap, n, dims, keep, 0);
        em_tensor *pos = em_binary_scalar(EM_BIN_GT, s, 0.0f);
        em_tensor *one = em_tensor_scalar(1.0f);
        em_tensor *safe = em_where(pos, s, one);
        em_tensor *root = p == 2 ? em_unary(EM_UN_SQRT, safe)
                                 : em_binary_scalar(EM_BIN_POW, safe, (float)(1.0 / p));
        r = em_binary(EM_BIN_MUL, root, pos);
        em_tensor_release(ap); em_tensor_release(s); em_tensor_release(pos);
        em_tensor_release(one); em_tensor_release(safe); em_tensor_release(root);
    }
    em_tensor_release(a);
    em_lua_push(L, r);
    return 1;
}

/* max(t) -> 0-dim; max(t, dim [, keepdim]) -> values, indices (1-based);
 * max(a, b) with a tensor b -> elementwise maximum */
static int extreme(lua_State *L, bool is_max) {
    const char *name = is_max ? "max" : "min";
    em_tensor *t = em_lua_check(L, 1, name);
    if (em_lua_test(L, 2)) return binary(L, is_max ? EM_BIN_MAXIMUM : EM_BIN_MINIMUM, name);
    em_reduce_op op = is_max ? EM_RED_MAX : EM_RED_MIN;
    if (lua_istable(L, 2)) return reduce(L, op, name); /* several dims: values only */
    if (lua_isnoneornil(L, 2)) {
        em_lua_push(L, em_reduce(op, t, 0, NULL, false, 0));
        return 1;
    }
    int d = em_lua_check_dim(L, 2, name);
    bool keep = opt_bool(L, 3, name);
    em_lua_push(L, em_reduce(op, t, 1, &d, keep, 0));
    em_tensor *idx = is_max ? em_argmax(t, d, keep) : em_argmin(t, d, keep);
    if (idx && em_binary_scalar_(EM_BIN_ADD, idx, 1.0f)) {
        em_tensor_release(idx);
        idx = NULL;
    }
    em_lua_push(L, idx);
    return 2;
}
static int lf_max(lua_State *L) { return extreme(L, true); }
static int lf_min(lua_State *L) { return extreme(L, false); }
/* argmax(t [, dim [, keepdim]]): 1-based indices; without dim, over the flattened tensor */
static int argext(lua_State *L, bool is_max) {
    const char *name = is_max ? "argmax" : "argmin";
    em_tensor *t = em_lua_check(L, 1, name);
    em_tensor *r;
    if (lua_isnoneornil(L, 2)) {
        int64_t n = t->numel;
        em_tensor *flat = em_reshape(t, 1, &n);
        r = flat ? (is_max ? em_argmax(flat, 0, false) : em_argmin(flat, 0, false)) : NULL;
        em_tensor_release(flat);
    } else {
        int d = em_lua_check_dim(L, 2, name);
        bool keep = opt_bool(L, 3, name);
        r = is_max ? em_argmax(t, d, keep) : em_argmin(t, d, keep);
    }
    if (r && em_binary_scalar_(EM_BIN_ADD, r, 1.0f)) {
        em_tensor_release(r);
        r = NULL;
    }
    em_lua_push(L, r);
    return 1;
}
static int lf_argmax(lua_State *L) { return argext(L, true); }
static int lf_argmin(lua_State *L) { return argext(L, false); }

/* ---- linear algebra, joining, indexing -------------------------------- */

static int lf_matmul(lua_State *L) {
    em_tensor *a = em_lua_check(L, 1, "matmul"), *b = em_lua_check(L, 2, "matmul");
    em_lua_push(L, em_matmul(a, b));
    return 1;
}
/* x:mm(y): matmul under its other PyTorch name. A function value of its own: Lua's
 * traceback names a C function by the first module field holding that value, and one
 * value under both names made tracebacks of x:matmul read 'ember.mm'. */
static int lf_mm(lua_State *L) {
    em_tensor *a = em_lua_check(L, 1, "mm"), *b = em_lua_check(L, 2, "mm");
    em_lua_push(L, em_matmul(a, b));
    return 1;
}
/* linear(x, w [, b]): x @ w^T + b */
static int lf_linear(lua_State *L) {
    em_tensor *x = em_lua_check(L, 1, "linear"), *w = em_lua_check(L, 2, "linear");
    em_tensor *b = lua_isnoneornil(L, 3) ? NULL : em_lua_check(L, 3, "linear");
    em_lua_push(L, em_linear(x, w, b));
    return 1;
}
/* Collects the tensors of the table at arg into a new array. */
static em_tensor **table_tensors(lua_State *L, int arg, const char *fname, int *n) {
    if (!lua_istable(L, arg)) em_lua_arg_error(L, arg, fname, "a table of tensors");
    lua_Integer len = luaL_len(L, arg);
    if (len == 0) luaL_error(L, "%s: bad argument #%d (expected a non-empty table of tensors)", fname, arg);
    em_tensor **ts = lua_newuserdatauv(L, (size_t)len * sizeof *ts, 0); /* freed by the GC */
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, arg, i);
        em_tensor *t = em_lua_test(L, -1);
        if (!t && luaL_testudata(L, -1, EM_TENSOR_MT))
            luaL_error(L, "%s: bad argument #%d (item %d: the tensor was freed with free() or "
                       "<close>)", fname, arg, (int)i);
        if (!t) luaL_error(L, "%s: bad argument #%d (item %d: expected tensor, got %s)", fname, arg,
                           (int)i, luaL_typename(L, -1));
        ts[i - 1] = t;
        lua_pop(L, 1);
    }
    *n = (int)len;
    return ts;
}
static int lf_cat(lua_State *L) {
    int n;
    /* the dim first: table_tensors pushes its array above the arguments */
    int d = em_lua_opt_dim(L, 2, "cat", 0);
    lua_settop(L, 2);
    em_tensor **ts = table_tensors(L, 1, "cat", &n);
    em_lua_push(L, em_cat(n, ts, d));
    return 1;
}
static int lf_stack(lua_State *L) {
    int n;
    /* the dim first: table_tensors pushes its array above the arguments */
    int d = em_lua_opt_dim(L, 2, "stack", 0);
    lua_settop(L, 2);
    em_tensor **ts = table_tensors(L, 1, "stack", &n);
    em_lua_push(L, em_stack(n, ts, d));
    return 1;
}
/* t:split(size [, dim=1]) -> table of views of `size` along dim (last smaller) */
static int lf_split(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "split");
    lua_Integer size = em_lua_check_integer(L, 2, "split");
    int d = em_normalize_dim("split", em_lua_opt_dim(L, 3, "split", 0), t->ndim);
    if (d < 0) return em_lua_core_error(L);
    if (size <= 0) return luaL_error(L, "split: size must be > 0, got %d", (int)size);
    lua_newtable(L);
    int k = 1;
    for (int64_t s = 0; s < t->shape[d]; s += size) {
        int64_t len = t->shape[d] - s < size ? t->shape[d] - s : size;
        em_lua_push(L, em_narrow(t, d, s, len));
        lua_rawseti(L, -2, k++);
    }
    return 1;
}
/* t:chunk(n [, dim=1]) -> at most n views of equal size (last smaller) */
static int lf_chunk(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "chunk");
    lua_Integer n = em_lua_check_integer(L, 2, "chunk");
    int d = em_normalize_dim("chunk", em_lua_opt_dim(L, 3, "chunk", 0), t->ndim);
    if (d < 0) return em_lua_core_error(L);
    if (n <= 0) return luaL_error(L, "chunk: the number of chunks must be > 0, got %d", (int)n);
    lua_Integer size = (t->shape[d] + n - 1) / n;
    if (size == 0) size = 1;
    lua_settop(L, 1);
    lua_pushinteger(L, size);
    lua_pushinteger(L, d + 1);
    return lf_split(L);
}
static int lf_index_select(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "index_select");
    int d = em_lua_check_dim(L, 2, "index_select");
    em_tensor *idx = em_lua_index_tensor(L, 3, "index_select");
    em_tensor *r = em_index_select(t, d, idx);
    em_tensor_release(idx);
    em_lua_push(L, r);
    return 1;
}
static int lf_gather(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "gather");
    int d = em_lua_check_dim(L, 2, "gather");
    em_tensor *idx = em_lua_index_tensor(L, 3, "gather");
    em_tensor *r = em_gather(t, d, idx);
    em_tensor_release(idx);
    em_lua_push(L, r);
    return 1;
}
static int lf_scatter_add(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "scatter_add");
    int d = em_lua_check_dim(L, 2, "scatter_add");
    em_tensor *src = em_lua_check(L, 4, "scatter_add");
    em_tensor *idx = em_lua_index_tensor(L, 3, "scatter_add");
    em_tensor *r = em_scatter_add(t, d, idx, src);
    em_tensor_release(idx);
    em_lua_push(L, r);
    return 1;
}
static int lf_scatter_add_(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "scatter_add_");
    int d = em_lua_check_dim(L, 2, "scatter_add_");
    em_tensor *src = em_lua_check(L, 4, "scatter_add_");
    em_tensor *idx = em_lua_index_tensor(L, 3, "scatter_add_");
    int rc = em_scatter_add_(t, d, idx, src);
    em_tensor_release(idx);
    if (rc) return em_lua_core_error(L);
    lua_settop(L, 1);
    return 1;
}

/* ---- autograd -------------------------------------------------------- */

/* t:requires_grad([on=true]) -> t */
static int lf_requires_grad(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "requires_grad");
    bool on = lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2);
    if (em_set_requires_grad(t, on)) return em_lua_core_error(L);
    lua_settop(L, 1);
    return 1;
}
static int lf_needs_grad(lua_State *L) {
    lua_pushboolean(L, em_lua_check(L, 1, "needs_grad")->requires_grad);
    return 1;
}
static bool opt_field(lua_State *L, int arg, const char *key) {
    if (!lua_istable(L, arg)) return false;
    lua_getfield(L, arg, key);
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}
/* t:backward([grad] [, {retain_graph=, create_graph=}]) */
static int lf_backward(lua_State *L) {
    em_tensor *t = em_lua_check(L, 1, "backward");
    em_tensor *g = NULL;
    int opts = 2;
    if (em_lua_test(L, 2)) {
        g = em_lua_test(L, 2);
        opts = 3;
    } else if (lua_isnil(L, 2) && lua_istable(L, 3)) { /* backward(nil, {options}) */
        opts = 3;
    } else if (!lua_isnoneornil(L, 2) && !lua_istable(L, 2)) {
        return em_lua_arg_error(L, 2, "backward", "gradient tensor or options table");
    }
    if (em_backward(t, g, opt_field(L, opts, "retain_graph"), opt_field(L, opts, "create_graph")))
        return em_lua_core_error(L);
    return 0;
}
/* ember.grad(output, inputs [, {grad=, retain_graph=, create_graph=}]) -> table of gradients */
static int lf_grad(lua_State *L) {
    em_tensor *out = em_lua_check(L, 1, "grad");
    int n;
    lua_settop(L, 3); /* the options stay at 3, whatever table_tensors pushes */
    em_tensor **ins = table_tensors(L, 2, "grad", &n);
    em_tensor *g = NULL;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "grad");
        g = em_lua_test(L, -1);
        if (!g && !lua_isnil(L, -1))
            return luaL_error(L, "grad: option 'grad' must be a tensor, got %s",
                              luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    em_tensor **grads = lua_newuserdatauv(L, (size_t)n * sizeof *grads, 0);
    if (em_grad(out, g, n, ins, grads, opt_field(L, 3, "retain_graph"), opt_field(L, 3, "create_graph")))
        return em_lua_core_error(L);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        if (grads[i]) em_lua_push(L, grads[i]);
        else lua_pushnil(L);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}
static int lf_set_grad_enabled(lua_State *L) {
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    em_set_grad_enabled(lua_toboolean(L, 1));
    return 0;
}
static int lf_is_grad_enabled(lua_State *L) {
    lua_pushboolean(L, em_grad_enabled());
    return 1;
}
/* ember.no_grad(fn, ...) -> fn's results, with recording off while fn runs */
static int lf_no_grad(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    int rc = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    em_set_grad_enabled(was);
    if (rc != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

/* ember._debug_break_backward(op_name | nil): the gradient-check's own test */
static int lf_debug_break_backward(lua_State *L) {
    if (em_autograd_debug_break(luaL_optstring(L, 1, NULL))) return em_lua_core_error(L);
    return 0;
}

/* ---- generator, threads, memory --------------------------------------- */

static int lf_manual_seed(lua_State *L) {
    lua_Integer s = em_lua_check_integer(L, 1, "manual_seed");
    em_rng_seed((uint64_t)s);
    return 0;
}
/* The generator state as a 64-character hex string (for checkpoints). */
static int lf_get_rng_state(lua_State *L) {
    uint64_t st[EM_RNG_STATE_WORDS];
    em_rng_get_state(st);
    char buf[EM_RNG_STATE_WORDS * 16 + 1];
    for (int i = 0; i < EM_RNG_STATE_WORDS; i++)
        snprintf(buf + 16 * i, 17, "%016llx", (unsigned long long)st[i]);
    lua_pushstring(L, buf);
    return 1;
}
static int lf_set_rng_state(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    uint64_t st[EM_RNG_STATE_WORDS];
    if (len != EM_RNG_STATE_WORDS * 16)
        return luaL_error(L, "set_rng_state: expected a %d-character hex string, got %d characters",
                          EM_RNG_STATE_WORDS * 16, (int)len);
    for (int i = 0; i < EM_RNG_STATE_WORDS; i++) {
        char part[17];
        memcpy(part, s + 16 * i, 16);
        part[16] = '\0';
        char *end;
        st[i] = strtoull(part, &end, 16);
        if (*end) return luaL_error(L, "set_rng_state: not a hex string");
    }
    if (em_rng_set_state(st)) return em_lua_core_error(L);
    return 0;
}
static int lf_set_num_threads(lua_State *L) {
    lua_Integer n = em_lua_check_integer(L, 1, "set_num_threads");
    if (n < 1) return luaL_error(L, "set_num_threads: bad argument #1 (expected >= 1, got %d)", (int)n);
    em_set_num_threads((int)n);
    return 0;
}
static int lf_get_num_threads(lua_State *L) {
    lua_pushinteger(L, em_get_num_threads());
    return 1;
}
/* ember.memory() -> {live=bytes, cached=bytes, hits=, misses=} */
static int lf_memory(lua_State *L) {
    em_cache_stats s = em_storage_cache_stats();
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)s.live_bytes); lua_setfield(L, -2, "live");
    lua_pushinteger(L, (lua_Integer)s.cached_bytes); lua_setfield(L, -2, "cached");
    lua_pushinteger(L, (lua_Integer)s.hits); lua_setfield(L, -2, "hits");
    lua_pushinteger(L, (lua_Integer)s.misses); lua_setfield(L, -2, "misses");
    return 1;
}

/* ---- registration ---------------------------------------------------- */

/* Functions that are both methods and module functions. */
static const luaL_Reg both[] = {
    {"shape", lf_shape}, {"size", lf_size}, {"dim", lf_dim}, {"numel", lf_numel},
    {"item", lf_item}, {"totable", lf_totable}, {"is_contiguous", lf_is_contiguous},
    {"stats", lf_stats}, {"view", lf_view}, {"reshape", lf_reshape}, {"permute", lf_permute},
    {"transpose", lf_transpose}, {"t", lf_t}, {"narrow", lf_narrow}, {"select", lf_select},
    {"expand", lf_expand}, {"expand_as", lf_expand_as}, {"squeeze", lf_squeeze},
    {"unsqueeze", lf_unsqueeze}, {"flatten", lf_flatten}, {"contiguous", lf_contiguous},
    {"clone", lf_clone}, {"detach", lf_detach},
#define REG_UNARY(NAME, OP) {#NAME, lf_##NAME}, {#NAME "_", lf_##NAME##_},
    UNARY_LIST(REG_UNARY)
#define REG_BINARY(NAME, OP) {#NAME, lf_##NAME}, {#NAME "_", lf_##NAME##_},
    BINARY_LIST(REG_BINARY)
    {"clamp", lf_clamp}, {"clamp_", lf_clamp_}, {"masked_fill", lf_masked_fill},
    {"masked_fill_", lf_masked_fill_}, {"leaky_relu", lf_leaky_relu}, {"elu", lf_elu},
    {"fill_", lf_fill_}, {"zero_", lf_zero_}, {"copy_", lf_copy_}, {"uniform_", lf_uniform_},
    {"normal_", lf_normal_}, {"sum", lf_sum}, {"mean", lf_mean}, {"var", lf_var}, {"std", lf_std},
    {"logsumexp", lf_logsumexp}, {"prod", lf_prod}, {"norm", lf_norm}, {"max", lf_max}, {"min", lf_min},
    {"argmax", lf_argmax}, {"argmin", lf_argmin}, {"matmul", lf_matmul}, {"mm", lf_mm},
    {"linear", lf_linear}, {"split", lf_split}, {"chunk", lf_chunk},
    {"index_select", lf_index_select}, {"gather", lf_gather}, {"scatter_add", lf_scatter_add},
    {"scatter_add_", lf_scatter_add_}, {"requires_grad", lf_requires_grad},
    {"needs_grad", lf_needs_grad}, {"backward", lf_backward}, {NULL, NULL}};

static const luaL_Reg module_only[] = {
    {"zeros", lf_zeros}, {"ones", lf_ones}, {"empty", lf_empty}, {"full", lf_full},
    {"arange", lf_arange}, {"linspace", lf_linspace}, {"eye", lf_eye}, {"rand", lf_rand},
    {"randn", lf_randn}, {"randint", lf_randint}, {"normal", lf_normal},
    {"bernoulli", lf_bernoulli}, {"zeros_like", lf_zeros_like}, {"ones_like", lf_ones_like},
    {"rand_like", lf_rand_like}, {"randn_like", lf_randn_like}, {"full_like", lf_full_like},
    {"where", lf_where}, {"cat", lf_cat}, {"stack", lf_stack}, {"grad", lf_grad},
    {"set_grad_enabled", lf_set_grad_enabled}, {"is_grad_enabled", lf_is_grad_enabled},
    {"no_grad", lf_no_grad}, {"manual_seed", lf_manual_seed},
    {"get_rng_state", lf_get_rng_state}, {"set_rng_state", lf_set_rng_state},
    {"set_num_threads", lf_set_num_threads}, {"get_num_threads", lf_get_num_threads},
    {"memory", lf_memory}, {"_debug_break_backward", lf_debug_break_backward}, {NULL, NULL}};

void em_lua_open_ops(lua_State *L, int module, int methods) {
    for (const luaL_Reg *r = both; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_pushvalue(L, -1);
        lua_setfield(L, module, r->name);
        lua_setfield(L, methods, r->name);
    }
    for (const luaL_Reg *r = module_only; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, module, r->name);
    }
}
