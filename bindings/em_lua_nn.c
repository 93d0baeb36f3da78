/* em_lua_nn.c — the layers' functional API: ember.conv2d, conv_transpose2d,
 * max_pool2d, avg_pool2d, upsample_nearest, batch_norm, softmax,
 * log_softmax, dropout, embedding, lstm_cell, lstm_pointwise. Options come in a table
 * ({stride=2, padding={1, 0}}); a size is a number or {h, w}; unknown
 * options are errors (a misspelt "strides" must not be silently ignored).
 * Every function but embedding and the LSTM's is also a tensor method
 * (x:softmax(2)). */
#include <math.h>
#include <string.h>

#include "em_autograd.h"
#include "em_lstm.h"
#include "em_lua.h"
#include "em_nn.h"

/* ---- option tables --------------------------------------------------- */

/* The options table at arg (0 when absent); anything else is an error. */
static int check_options(lua_State *L, int arg, const char *fname, const char *const *known) {
    if (lua_isnoneornil(L, arg)) return 0;
    if (!lua_istable(L, arg)) em_lua_arg_error(L, arg, fname, "an options table");
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        lua_pop(L, 1);
        bool ok = false;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (int i = 0; known[i] && !ok; i++) ok = !strcmp(known[i], lua_tostring(L, -1));
        if (!ok) {
            const char *key = luaL_tolstring(L, -1, NULL);
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (int i = 0; known[i]; i++) {
                if (i) luaL_addstring(&b, ", ");
                luaL_addstring(&b, known[i]);
            }
            luaL_pushresult(&b);
            luaL_error(L, "%s: unknown option '%s' (expected one of: %s)", fname, key,
                       lua_tostring(L, -1));
        }
    }
    return arg;
}

/* An integer >= min at idx, or the error naming `what`. */
static int64_t pair_item(lua_State *L, int idx, const char *fname, const char *what, int64_t min) {
    int isint = 0;
    lua_Integer v = lua_tointegerx(L, idx, &isint);
    if (!isint || v < min)
        luaL_error(L, "%s: %s must be an integer >= %d or a table {h, w} of them, got %s", fname,
                   what, (int)min,
                   lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : luaL_typename(L, idx));
    return v;
}

/* opts[key] as an integer >= min, when present. */
static void opt_integer(lua_State *L, int opts, const char *fname, const char *key, int64_t min,
                        int64_t *out) {
    if (!opts) return;
    if (lua_getfield(L, opts, key) != LUA_TNIL) {
        int isint = 0;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint || v < min)
            luaL_error(L, "%s: option '%s' must be an integer >= %d, got %s", fname, key, (int)min,
                       lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
        *out = v;
    }
    lua_pop(L, 1);
}

/* A size at idx: a number (both dims) or {h, w}. */
static void check_pair(lua_State *L, int idx, const char *fname, const char *what, int64_t min,
                       int64_t out[2]) {
    idx = lua_absindex(L, idx);
    if (lua_istable(L, idx)) {
        if (luaL_len(L, idx) != 2)
            luaL_error(L, "%s: %s must be a number or a table {h, w} of 2 numbers, got a table of %d",
                       fname, what, (int)luaL_len(L, idx));
        for (int i = 0; i < 2; i++) {
            lua_geti(L, idx, i + 1);
            out[i] = pair_item(L, -1, fname, what, min);
            lua_pop(L, 1);
        }
        return;
    }
    out[0] = out[1] = pair_item(L, idx, fname, what, min);
}

/* opts[key] as a size, when present. */
static bool opt_pair(lua_State *L, int opts, const char *fname, const char *key, int64_t min,
                     int64_t out[2]) {
    if (!opts) return false;
    bool present = lua_getfield(L, opts, key) != LUA_TNIL;
    if (present) check_pair(L, -1, fname, key, min, out);
    lua_pop(L, 1);
    return present;
}

static bool opt_boolean(lua_State *L, int opts, const char *fname, const char *key, bool def) {
    if (!opts) return def;
    int t = lua_getfield(L, opts, key);
    bool v = def;
    if (t == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "%s: option '%s' must be a boolean, got %s", fname, key, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

static double opt_number(lua_State *L, int opts, const char *fname, const char *key, double def) {
    if (!opts) return def;
    int t = lua_getfield(L, opts, key);
    double v = def;
    if (t == LUA_TNUMBER) v = lua_tonumber(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "%s: option '%s' must be a number, got %s", fname, key, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

/* A tensor or nil at arg. */
static em_tensor *opt_tensor(lua_State *L, int arg, const char *fname, const char *what) {
    if (lua_isnoneornil(L, arg)) return NULL;
    em_tensor *t = em_lua_test(L, arg);
    if (!t) {
        char expected[64];
        snprintf(expected, sizeof expected, "%s tensor or nil", what);
        em_lua_arg_error(L, arg, fname, expected);
    }
    return t;
}

/* ---- convolution ----------------------------------------------------- */

/* opts.mask ('A', 'B', 'V' or nil) and opts.mask_groups into a. */
static void opt_mask(lua_State *L, int opts, const char *fname, em_conv2d_args *a) {
    if (!opts) return;
    int t = lua_getfield(L, opts, "mask");
    if (t != LUA_TNIL) {
        const char *m = t == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (m && !strcmp(m, "A")) a->mask = EM_MASK_A;
        else if (m && !strcmp(m, "B")) a->mask = EM_MASK_B;
        else if (m && !strcmp(m, "V")) a->mask = EM_MASK_V;
        else
            luaL_error(L, "%s: option 'mask' must be 'A', 'B' or 'V', got %s", fname,
                       m ? luaL_tolstring(L, -1, NULL) : luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    opt_integer(L, opts, fname, "mask_groups", 1, &a->mask_groups);
}

/* conv2d(x, w [, b [, {stride=, padding=, dilation=, groups=, mask=, mask_groups=}]]) */
static int lf_conv2d(lua_State *L) {
    static const char *const known[] = {"stride",      "padding", "dilation", "groups", "mask",
                                        "mask_groups", NULL};
    em_tensor *x = em_lua_check(L, 1, "conv2d"), *w = em_lua_check(L, 2, "conv2d");
    em_tensor *b = opt_tensor(L, 3, "conv2d", "a bias");
    int opts = check_options(L, 4, "conv2d", known);
    em_conv2d_args a = em_conv2d_defaults();
    opt_pair(L, opts, "conv2d", "stride", 1, a.stride);
    opt_pair(L, opts, "conv2d", "padding", 0, a.padding);
    opt_pair(L, opts, "conv2d", "dilation", 1, a.dilation);
    opt_integer(L, opts, "conv2d", "groups", 1, &a.groups);
    opt_mask(L, opts, "conv2d", &a);
    em_lua_push(L, em_conv2d(x, w, b, &a));
    return 1;
}

/* conv_transpose2d(x, w [, b [, {stride=, padding=, output_padding=, dilation=, groups=,
 * mask=, mask_groups=}]]) */
static int lf_conv_transpose2d(lua_State *L) {
    static const char *const known[] = {"stride", "padding", "output_padding", "dilation",
                                        "groups", "mask",    "mask_groups",    NULL};
    const char *fn = "conv_transpose2d";
    em_tensor *x = em_lua_check(L, 1, fn), *w = em_lua_check(L, 2, fn);
    em_tensor *b = opt_tensor(L, 3, fn, "a bias");
    int opts = check_options(L, 4, fn, known);
    em_conv2d_args a = em_conv2d_defaults();
    opt_pair(L, opts, fn, "stride", 1, a.stride);
    opt_pair(L, opts, fn, "padding", 0, a.padding);
    opt_pair(L, opts, fn, "output_padding", 0, a.output_padding);
    opt_pair(L, opts, fn, "dilation", 1, a.dilation);
    opt_integer(L, opts, fn, "groups", 1, &a.groups);
    opt_mask(L, opts, fn, &a);
    em_lua_push(L, em_conv_transpose2d(x, w, b, &a));
    return 1;
}

/* gated_tanh(x): tanh of the first half of dim 2 times sigmoid of the second */
static int lf_gated_tanh(lua_State *L) {
    em_lua_push(L, em_gated_tanh(em_lua_check(L, 1, "gated_tanh")));
    return 1;
}

/* conv_mask(d0, d1, kernel, {mask=, mask_groups=}): the 0/1 weight mask */
static int lf_conv_mask(lua_State *L) {
    static const char *const known[] = {"mask", "mask_groups", NULL};
    const char *fn = "conv_mask";
    int64_t d[2], k[2];
    for (int i = 0; i < 2; i++) {
        int isint = 0;
        d[i] = lua_tointegerx(L, i + 1, &isint);
        if (!isint || d[i] < 1) em_lua_arg_error(L, i + 1, fn, "a channel count >= 1");
    }
    if (lua_isnoneornil(L, 3)) em_lua_arg_error(L, 3, fn, "a kernel size (number or {h, w})");
    check_pair(L, 3, fn, "kernel size", 1, k);
    int opts = check_options(L, 4, fn, known);
    em_conv2d_args a = em_conv2d_defaults();
    opt_mask(L, opts, fn, &a);
    em_lua_push(L, em_conv_mask_tensor(d[0], d[1], k[0], k[1], &a));
    return 1;
}

/* ---- pooling, upsampling --------------------------------------------- */

/* max_pool2d / avg_pool2d (x, kernel [, {stride=kernel, padding=0 [, count_include_pad=true]}]) */
static int pool(lua_State *L, bool is_max) {
    static const char *const known_max[] = {"stride", "padding", NULL};
    static const char *const known_avg[] = {"stride", "padding", "count_include_pad", NULL};
    const char *fn = is_max ? "max_pool2d" : "avg_pool2d";
    em_tensor *x = em_lua_check(L, 1, fn);
    if (lua_isnoneornil(L, 2)) em_lua_arg_error(L, 2, fn, "a kernel size (number or {h, w})");
    em_pool2d_args a = {{1, 1}, {1, 1}, {0, 0}, true};
    check_pair(L, 2, fn, "kernel size", 1, a.kernel);
    int opts = check_options(L, 3, fn, is_max ? known_max : known_avg);
    a.stride[0] = a.kernel[0];
    a.stride[1] = a.kernel[1];
    opt_pair(L, opts, fn, "stride", 1, a.stride);
    opt_pair(L, opts, fn, "padding", 0, a.padding);
    if (!is_max) a.count_include_pad = opt_boolean(L, opts, fn, "count_include_pad", true);
    em_lua_push(L, is_max ? em_max_pool2d(x, &a) : em_avg_pool2d(x, &a));
    return 1;
}
static int lf_max_pool2d(lua_State *L) { return pool(L, true); }
static int lf_avg_pool2d(lua_State *L) { return pool(L, false); }

/* upsample_nearest(x, scale): scale an integer or {h, w} */
static int lf_upsample_nearest(lua_State *L) {
    em_tensor *x = em_lua_check(L, 1, "upsample_nearest");
    if (lua_isnoneornil(L, 2))
        em_lua_arg_error(L, 2, "upsample_nearest", "a scale factor (integer or {h, w})");
    int64_t s[2];
    check_pair(L, 2, "upsample_nearest", "scale factor", 1, s);
    em_lua_push(L, em_upsample_nearest2d(x, s[0], s[1]));
    return 1;
}

/* ---- normalization, softmax, dropout, embedding ----------------------- */

/* batch_norm(x, running_mean, running_var [, weight [, bias [, {training=false, momentum=0.1, eps=1e-5}]]]) */
static int lf_batch_norm(lua_State *L) {
    static const char *const known[] = {"training", "momentum", "eps", NULL};
    const char *fn = "batch_norm";
    em_tensor *x = em_lua_check(L, 1, fn);
    em_tensor *rm = opt_tensor(L, 2, fn, "a running_mean");
    em_tensor *rv = opt_tensor(L, 3, fn, "a running_var");
    em_tensor *w = opt_tensor(L, 4, fn, "a weight");
    em_tensor *b = opt_tensor(L, 5, fn, "a bias");
    int opts = check_options(L, 6, fn, known);
    bool training = opt_boolean(L, opts, fn, "training", false);
    double momentum = opt_number(L, opts, fn, "momentum", 0.1);
    double eps = opt_number(L, opts, fn, "eps", 1e-5);
    if (!(momentum >= 0 && momentum <= 1))
        return luaL_error(L, "%s: option 'momentum' must be in [0, 1], got %f", fn, (lua_Number)momentum);
    if (!(eps >= 0) || !isfinite(eps))
        return luaL_error(L, "%s: option 'eps' must be a finite number >= 0, got %f", fn, (lua_Number)eps);
    em_lua_push(L, em_batch_norm(x, rm, rv, w, b, training, (float)momentum, (float)eps));
    return 1;
}

/* softmax(x [, dim=-1]) */
static int lf_softmax(lua_State *L) {
    em_tensor *x = em_lua_check(L, 1, "softmax");
    em_lua_push(L, em_softmax(x, em_lua_opt_dim(L, 2, "softmax", -1)));
    return 1;
}

/* log_softmax(x [, dim=-1]) */
static int lf_log_softmax(lua_State *L) {
    em_tensor *x = em_lua_check(L, 1, "log_softmax");
    em_lua_push(L, em_log_softmax(x, em_lua_opt_dim(L, 2, "log_softmax", -1)));
    return 1;
}

/* dropout(x [, p=0.5 [, training=true]]): zeroes each element with
 * probability p (mask from the shared generator) and scales the rest by
 * 1/(1-p); the identity when not training. */
static int lf_dropout(lua_State *L) {
    em_tensor *x = em_lua_check(L, 1, "dropout");
    double p = 0.5;
    if (!lua_isnoneornil(L, 2)) {
        if (lua_type(L, 2) != LUA_TNUMBER) em_lua_arg_error(L, 2, "dropout", "a probability p");
        p = lua_tonumber(L, 2);
        if (!(p >= 0 && p <= 1))
            return luaL_error(L, "dropout: bad argument #2 'p' (expected a probability in [0, 1], got %f)", (lua_Number)p);
    }
    bool training = true;
    if (!lua_isnoneornil(L, 3)) {
        if (!lua_isboolean(L, 3)) em_lua_arg_error(L, 3, "dropout", "boolean 'training'");
        training = lua_toboolean(L, 3);
    }
    if (!training || p == 0) {
        lua_settop(L, 1);
        return 1;
    }
    if (p == 1) { /* everything dropped; still a function of x for autograd */
        em_lua_push(L, em_binary_scalar(EM_BIN_MUL, x, 0.0f));
        return 1;
    }
    em_tensor *keep = em_tensor_full(x->ndim, x->shape, (float)(1 - p));
    em_tensor *mask = keep ? em_bernoulli(keep) : NULL;
    em_tensor_release(keep);
    if (!mask || em_binary_scalar_(EM_BIN_MUL, mask, (float)(1 / (1 - p)))) {
        em_tensor_release(mask);
        return em_lua_core_error(L);
    }
    em_tensor *y = em_binary(EM_BIN_MUL, x, mask);
    em_tensor_release(mask);
    em_lua_push(L, y);
    return 1;
}

/* embedding(indices, weight): rows of weight [num x dim] picked by 1-based
 * indices (a tensor of any shape, or a table) -> indices.shape + [dim]. */
static int lf_embedding(lua_State *L) {
    em_tensor *w = em_lua_check(L, 2, "embedding");
    char s[EM_SHAPE_STR_MAX];
    if (w->ndim != 2)
        return luaL_error(L, "embedding: weight %s must be 2-D [num_embeddings x embedding_dim]",
                          em_shape_str(s, sizeof s, w->ndim, w->shape));
    em_tensor *idx = em_lua_index_tensor(L, 1, "embedding"); /* 0-based, owned */
    int64_t flat = idx->numel, num = w->shape[0];
    em_tensor *ic = em_contiguous(idx);
    em_tensor_release(idx);
    if (!ic) return em_lua_core_error(L);
    const float *v = em_tensor_data(ic);
    for (int64_t i = 0; i < flat; i++) {
        if (v[i] != floorf(v[i]) || v[i] < 0 || v[i] >= (float)num) {
            lua_Number bad = (lua_Number)v[i] + 1;
            em_tensor_release(ic);
            if (bad == floor(bad) && fabs(bad) < 1e15)
                lua_pushinteger(L, (lua_Integer)bad);
            else
                lua_pushnumber(L, bad);
            return luaL_error(L, "embedding: index %s out of range for %I embeddings "
                              "(expected integers 1..%I)", lua_tostring(L, -1), (lua_Integer)num,
                              (lua_Integer)num);
        }
    }
    int64_t shape[EM_MAX_DIMS];
    int nd = ic->ndim;
    if (nd >= EM_MAX_DIMS) {
        em_tensor_release(ic);
        return luaL_error(L, "embedding: indices have too many dims (%d)", nd);
    }
    memcpy(shape, ic->shape, (size_t)nd * sizeof(int64_t));
    shape[nd] = w->shape[1];
    em_tensor *flat_idx = em_reshape(ic, 1, &flat);
    em_tensor *rows = flat_idx ? em_index_select(w, 0, flat_idx) : NULL;
    em_tensor *out = rows ? em_reshape(rows, nd + 1, shape) : NULL;
    em_tensor_release(ic);
    em_tensor_release(flat_idx);
    em_tensor_release(rows);
    em_lua_push(L, out);
    return 1;
}

/* ---- LSTM ------------------------------------------------------------ */

/* lstm_cell(x, h, c, w_ih, w_hh [, b_ih [, b_hh]]) -> h', c': one step of
 * PyTorch's LSTMCell (gates = x w_ih^T + b_ih + h w_hh^T + b_hh, order i, f,
 * g, o); h' and c' are [N x H] views of the one fused result. */
static int lf_lstm_cell(lua_State *L) {
    const char *fn = "lstm_cell";
    em_tensor *x = em_lua_check(L, 1, fn), *h = em_lua_check(L, 2, fn);
    em_tensor *c = em_lua_check(L, 3, fn), *w_ih = em_lua_check(L, 4, fn);
    em_tensor *w_hh = em_lua_check(L, 5, fn);
    em_tensor *b_ih = opt_tensor(L, 6, fn, "a b_ih");
    em_tensor *b_hh = opt_tensor(L, 7, fn, "a b_hh");
    em_tensor *out = em_lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh);
    if (!out) return em_lua_core_error(L);
    em_tensor *h2 = em_select(out, 0, 0);
    em_tensor *c2 = h2 ? em_select(out, 0, 1) : NULL;
    em_tensor_release(out);
    if (!c2) {
        em_tensor_release(h2);
        return em_lua_core_error(L);
    }
    em_lua_push(L, h2);
    em_lua_push(L, c2);
    return 2;
}

/* lstm_pointwise(gates, c) -> [2 x N x H]: the fused cell on precomputed gate
 * pre-activations [N x 4H]; out[1] is h', out[2] is c'. */
static int lf_lstm_pointwise(lua_State *L) {
    em_tensor *gates = em_lua_check(L, 1, "lstm_pointwise");
    em_tensor *c = em_lua_check(L, 2, "lstm_pointwise");
    em_lua_push(L, em_lstm_pointwise(gates, c));
    return 1;
}

/* ---- registration ---------------------------------------------------- */

static const luaL_Reg both[] = {
    {"conv2d", lf_conv2d}, {"conv_transpose2d", lf_conv_transpose2d},
    {"max_pool2d", lf_max_pool2d}, {"avg_pool2d", lf_avg_pool2d},
    {"upsample_nearest", lf_upsample_nearest}, {"batch_norm", lf_batch_norm},
    {"softmax", lf_softmax}, {"log_softmax", lf_log_softmax}, {"dropout", lf_dropout},
    {"gated_tanh", lf_gated_tanh},
    {NULL, NULL}};

void em_lua_open_nn(lua_State *L, int module, int methods) {
    for (const luaL_Reg *r = both; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_pushvalue(L, -1);
        lua_setfield(L, module, r->name);
        lua_setfield(L, methods, r->name);
    }
    lua_pushcfunction(L, lf_embedding);
    lua_setfield(L, module, "embedding");
    lua_pushcfunction(L, lf_conv_mask);
    lua_setfield(L, module, "conv_mask");
    lua_pushcfunction(L, lf_lstm_cell);
    lua_setfield(L, module, "lstm_cell");
    lua_pushcfunction(L, lf_lstm_pointwise);
    lua_setfield(L, module, "lstm_pointwise");
}
