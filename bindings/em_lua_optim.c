/* em_lua_optim.c — the C half of ember.losses and ember.optim: the fused
 * losses (labels 1..K here, 0-based in core/), the optimizer step over a
 * parameter list, and gradient / weight clipping. They live in the table
 * ember._optim_kernels; users call them through the Lua modules, which pass
 * their own arguments straight on, so messages name the public function.
 * The mixture-of-logistics sampler, not a loss, is ember's own function
 * (ember.sample_discretized_logistic_mixture), registered here beside its loss. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "em_autograd.h"
#include "em_loss.h"
#include "em_lua.h"
#include "em_optim.h"

/* ---- options ------------------------------------------------------------ */

/* Checks that the options table at arg (nil is fine) has only the keys in
 * `allowed` (a NULL-terminated list). */
static void check_options(lua_State *L, int arg, const char *fname, const char *const *allowed) {
    if (lua_isnoneornil(L, arg)) return;
    if (!lua_istable(L, arg)) em_lua_arg_error(L, arg, fname, "an options table");
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        lua_pop(L, 1);
        bool ok = false;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (int i = 0; allowed[i]; i++) ok |= !strcmp(lua_tostring(L, -1), allowed[i]);
        if (!ok) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (int i = 0; allowed[i]; i++) {
                if (i) luaL_addstring(&b, ", ");
                luaL_addstring(&b, allowed[i]);
            }
            luaL_pushresult(&b);
            lua_pushvalue(L, -2);
            const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                              : luaL_typename(L, -1);
            luaL_error(L, "%s: unknown option '%s' (expected %s)", fname, key, lua_tostring(L, -2));
        }
    }
}

/* opts.reduction: 'mean' (default), 'sum' or 'none'. */
static em_reduction opt_reduction(lua_State *L, int arg, const char *fname) {
    if (lua_isnoneornil(L, arg)) return EM_REDUCTION_MEAN;
    lua_getfield(L, arg, "reduction");
    em_reduction r = EM_REDUCTION_MEAN;
    if (!lua_isnil(L, -1)) {
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (s && !strcmp(s, "mean")) r = EM_REDUCTION_MEAN;
        else if (s && !strcmp(s, "sum")) r = EM_REDUCTION_SUM;
        else if (s && !strcmp(s, "none")) r = EM_REDUCTION_NONE;
        else
            luaL_error(L, "%s: bad reduction '%s' (expected 'mean', 'sum', 'batchmean' or 'none')", fname,
                       s ? s : luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return r;
}

/* opts[key] as a number in [lo, hi], or def when absent. */
static double opt_number_in(lua_State *L, int arg, const char *fname, const char *key, double def,
                            double lo, double hi) {
    if (lua_isnoneornil(L, arg)) return def;
    lua_getfield(L, arg, key);
    double v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: option '%s' must be a number, got %s", fname, key,
                       luaL_typename(L, -1));
        v = lua_tonumber(L, -1);
        if (!(v >= lo && v <= hi)) {
            char msg[200];
            snprintf(msg, sizeof msg, "%s: option '%s' must be in [%g, %g], got %g", fname, key, lo,
                     hi, v);
            luaL_error(L, "%s", msg);
        }
    }
    lua_pop(L, 1);
    return v;
}

/* opts[key] as an integer in [lo, hi], or def when absent. */
static int opt_integer_in(lua_State *L, int arg, const char *fname, const char *key, int def,
                          int lo, int hi) {
    if (lua_isnoneornil(L, arg)) return def;
    lua_getfield(L, arg, key);
    int v = def;
    if (!lua_isnil(L, -1)) {
        int exact = 0;
        lua_Integer i = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &exact) : 0;
        if (!exact)
            luaL_error(L, "%s: option '%s' must be an integer, got %s", fname, key,
                       lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
        if (i < lo || i > hi)
            luaL_error(L, "%s: option '%s' must be in [%d, %d], got %d", fname, key, lo, hi,
                       (int)(i < INT32_MIN ? INT32_MIN : i > INT32_MAX ? INT32_MAX : i));
        v = (int)i;
    }
    lua_pop(L, 1);
    return v;
}

/* opts[key] as a boolean (false when absent). */
static bool opt_boolean(lua_State *L, int arg, const char *fname, const char *key) {
    if (lua_isnoneornil(L, arg)) return false;
    lua_getfield(L, arg, key);
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
        luaL_error(L, "%s: option '%s' must be a boolean, got %s", fname, key, luaL_typename(L, -1));
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* opts.weight: a tensor or nil (borrowed; the options table keeps it alive). */
static em_tensor *opt_weight(lua_State *L, int arg, const char *fname) {
    if (lua_isnoneornil(L, arg)) return NULL;
    lua_getfield(L, arg, "weight");
    em_tensor *w = NULL;
    if (!lua_isnil(L, -1)) {
        w = em_lua_test(L, -1);
        if (!w) luaL_error(L, "%s: option 'weight' must be a tensor of class weights, got %s",
                           fname, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return w;
}

/* ---- labels -------------------------------------------------------------- */

/* Labels at arg (a tensor or a table of integers, 1..k) as a new 0-based
 * tensor, pushed on the stack (so an error cannot leak it) and returned.
 * k <= 0 skips the range check (the core reports the shape problem). */
static em_tensor *push_labels(lua_State *L, int arg, const char *fname, int64_t k) {
    em_tensor *src = em_lua_test(L, arg);
    int64_t n;
    float *v;
    em_tensor *out;
    if (src) {
        out = em_tensor_empty(src->ndim, src->shape);
        em_lua_push(L, out);
        em_tensor_read(src, out->storage->data);
        n = out->numel;
        v = out->storage->data;
    } else {
        if (!lua_istable(L, arg))
            em_lua_arg_error(L, arg, fname, "a tensor or table of class labels 1..K");
        n = (int64_t)luaL_len(L, arg);
        out = em_tensor_empty(1, &n);
        em_lua_push(L, out);
        v = out->storage->data;
        for (int64_t i = 0; i < n; i++) {
            lua_geti(L, arg, i + 1);
            if (lua_type(L, -1) != LUA_TNUMBER)
                luaL_error(L, "%s: label at position %d must be a number, got %s", fname,
                           (int)i + 1, luaL_typename(L, -1));
            v[i] = (float)lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
    }
    char msg[200];
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(v[i]) || v[i] != floorf(v[i])) {
            snprintf(msg, sizeof msg, "%s: label %g at position %lld is not an integer", fname,
                     (double)v[i], (long long)i + 1);
            luaL_error(L, "%s", msg);
        }
        if (k > 0 && (v[i] < 1 || v[i] > (float)k)) {
            snprintf(msg, sizeof msg, "%s: label %g at position %lld is out of range 1..%lld",
                     fname, (double)v[i], (long long)i + 1, (long long)k);
            luaL_error(L, "%s", msg);
        }
        v[i] -= 1.0f;
    }
    return out;
}

/* ---- losses ---------------------------------------------------------------- */

/* bce_with_logits(logits, target [, {reduction=}]) */
static int lk_bce_with_logits(lua_State *L) {
    static const char *const allowed[] = {"reduction", NULL};
    const char *fn = "bce_with_logits";
    em_tensor *x = em_lua_check(L, 1, fn), *t = em_lua_check(L, 2, fn);
    check_options(L, 3, fn, allowed);
    em_reduction r = opt_reduction(L, 3, fn);
    em_lua_push(L, em_loss_bce_with_logits(x, t, r));
    return 1;
}

/* cross_entropy(logits [N x K], labels [N] 1..K [, {reduction=, label_smoothing=, weight=}]) */
static int lk_cross_entropy(lua_State *L) {
    static const char *const allowed[] = {"reduction", "label_smoothing", "weight", NULL};
    const char *fn = "cross_entropy";
    em_tensor *x = em_lua_check(L, 1, fn);
    check_options(L, 3, fn, allowed);
    em_reduction r = opt_reduction(L, 3, fn);
    double s = opt_number_in(L, 3, fn, "label_smoothing", 0.0, 0.0, 1.0);
    em_tensor *w = opt_weight(L, 3, fn);
    em_tensor *labels = push_labels(L, 2, fn, x->ndim == 2 ? x->shape[1] : 0);
    em_lua_push(L, em_loss_cross_entropy(x, labels, w, (float)s, r));
    return 1;
}

/* nll(logprobs [N x K], labels [N] 1..K [, {reduction=, weight=}]) */
static int lk_nll(lua_State *L) {
    static const char *const allowed[] = {"reduction", "weight", NULL};
    const char *fn = "nll";
    em_tensor *x = em_lua_check(L, 1, fn);
    check_options(L, 3, fn, allowed);
    em_reduction r = opt_reduction(L, 3, fn);
    em_tensor *w = opt_weight(L, 3, fn);
    em_tensor *labels = push_labels(L, 2, fn, x->ndim == 2 ? x->shape[1] : 0);
    em_lua_push(L, em_loss_nll(x, labels, w, r));
    return 1;
}

/* discretized_logistic_mixture(params [N x P x H x W], x [N x C x H x W] in [-1, 1]
 *                              [, {reduction=, nr_mix=, bins=}]) -> NLL in nats */
static int lk_discretized_logistic_mixture(lua_State *L) {
    static const char *const allowed[] = {"reduction", "nr_mix", "bins", NULL};
    const char *fn = "discretized_logistic_mixture";
    em_tensor *p = em_lua_check(L, 1, fn), *x = em_lua_check(L, 2, fn);
    check_options(L, 3, fn, allowed);
    em_reduction r = opt_reduction(L, 3, fn);
    int nr_mix = opt_integer_in(L, 3, fn, "nr_mix", 0, 1, 1 << 20);
    int bins = opt_integer_in(L, 3, fn, "bins", 256, 2, 65536);
    em_lua_push(L, em_loss_dmol(p, x, nr_mix, bins, r));
    return 1;
}

/* ember.sample_discretized_logistic_mixture(params [N x P x H x W]
 *     [, {channels=, nr_mix=, quantize=, bins=}]) -> x [N x C x H x W] in [-1, 1].
 * One of channels / nr_mix is needed when P alone does not tell C (P = 30:
 * 10 grey components or 3 RGB ones); each is checked against P. */
static int lf_sample_discretized_logistic_mixture(lua_State *L) {
    static const char *const allowed[] = {"channels", "nr_mix", "quantize", "bins", NULL};
    const char *fn = "sample_discretized_logistic_mixture";
    em_tensor *p = em_lua_check(L, 1, fn);
    check_options(L, 2, fn, allowed);
    int channels = opt_integer_in(L, 2, fn, "channels", 0, 1, 3);
    int nr_mix = opt_integer_in(L, 2, fn, "nr_mix", 0, 1, 1 << 20);
    bool quantize = opt_boolean(L, 2, fn, "quantize");
    int bins = opt_integer_in(L, 2, fn, "bins", 256, 2, 65536);
    if (channels == 0) {
        int64_t P = p->ndim == 4 ? p->shape[1] : 0;
        bool grey = P > 0 && P % 3 == 0 && (!nr_mix || P == 3 * (int64_t)nr_mix);
        bool rgb = P > 0 && P % 10 == 0 && (!nr_mix || P == 10 * (int64_t)nr_mix);
        if (grey && rgb)
            return luaL_error(L, "%s: params with P = %d channels fit both C = 1 and C = 3: give "
                              "channels (or nr_mix)", fn, (int)P);
        if (p->ndim == 4 && !grey && !rgb)
            return luaL_error(L, "%s: params with P = %d channels fit neither 3*nr_mix (C = 1) "
                              "nor 10*nr_mix (C = 3)%s", fn, (int)P,
                              nr_mix ? " for the nr_mix given" : "");
        channels = rgb ? 3 : 1; /* params not 4-D: the core names the shape */
    }
    em_lua_push(L, em_sample_dmol(p, nr_mix, channels, bins, quantize));
    return 1;
}

/* ---- parameter lists -------------------------------------------------------- */

/* The tensors of a list at arg (or a single tensor) in a scratch array owned
 * by the GC; *n their count. */
static em_tensor **check_tensor_list(lua_State *L, int arg, const char *fname, int *n) {
    em_tensor *one = em_lua_test(L, arg);
    if (one) {
        em_tensor **ts = lua_newuserdatauv(L, sizeof *ts, 0);
        ts[0] = one;
        *n = 1;
        return ts;
    }
    if (!lua_istable(L, arg)) em_lua_arg_error(L, arg, fname, "a tensor or a list of tensors");
    lua_Integer len = luaL_len(L, arg);
    em_tensor **ts = lua_newuserdatauv(L, (size_t)(len > 0 ? len : 1) * sizeof *ts, 0);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, arg, i);
        ts[i - 1] = em_lua_test(L, -1);
        if (!ts[i - 1])
            luaL_error(L, "%s: bad argument #%d (item %d: expected tensor, got %s)", fname, arg,
                       (int)i, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    *n = (int)len;
    return ts;
}

/* clip_grad_norm(params, max_norm [, norm_type=2]) -> the total norm before clipping */
static int lk_clip_grad_norm(lua_State *L) {
    const char *fn = "clip_grad_norm_";
    int n;
    em_tensor **ps = check_tensor_list(L, 1, fn, &n);
    double max_norm = luaL_checknumber(L, 2);
    double norm_type = luaL_optnumber(L, 3, 2.0);
    double total = 0;
    if (em_optim_clip_grad_norm_(n, ps, max_norm, norm_type, &total)) return em_lua_core_error(L);
    lua_pushnumber(L, total);
    return 1;
}

static int lk_clip_grad_value(lua_State *L) {
    int n;
    em_tensor **ps = check_tensor_list(L, 1, "clip_grad_value_", &n);
    if (em_optim_clip_grad_value_(n, ps, luaL_checknumber(L, 2))) return em_lua_core_error(L);
    return 0;
}

static int lk_clip_weights(lua_State *L) {
    int n;
    em_tensor **ps = check_tensor_list(L, 1, "clip_weights_", &n);
    if (em_optim_clip_weights_(n, ps, luaL_checknumber(L, 2))) return em_lua_core_error(L);
    return 0;
}

/* first_nonfinite_grad(params) -> nil when every gradient is finite, or the
 * position (1-based) of the first parameter whose gradient is not, and how
 * many of its elements are NaN or infinite. */
static int lk_first_nonfinite_grad(lua_State *L) {
    int n;
    em_tensor **ps = check_tensor_list(L, 1, "optimizer step", &n);
    int64_t count = 0;
    int i = em_optim_first_nonfinite_grad(n, ps, &count);
    if (i == -2) return em_lua_core_error(L);
    if (i < 0) return 0;
    lua_pushinteger(L, (lua_Integer)i + 1);
    lua_pushinteger(L, (lua_Integer)count);
    return 2;
}

/* tensor_key(t): a light userdata naming the tensor itself (two Lua values
 * wrapping one tensor give the same key), for finding repeated parameters. */
static int lk_tensor_key(lua_State *L) {
    lua_pushlightuserdata(L, em_lua_check(L, 1, "tensor_key"));
    return 1;
}

/* ---- the optimizer step -------------------------------------------------------- */

/* hp[key] as a number (the Lua class always sets it). */
static double hp_number(lua_State *L, int hp, const char *fname, const char *key) {
    lua_getfield(L, hp, key);
    if (lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "%s: option '%s' must be a number, got %s", fname, key, luaL_typename(L, -1));
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}
static bool hp_bool(lua_State *L, int hp, const char *key) {
    lua_getfield(L, hp, key);
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}
/* hp.betas = {beta1, beta2} */
static void hp_betas(lua_State *L, int hp, const char *fname, double *b1, double *b2) {
    if (lua_getfield(L, hp, "betas") != LUA_TTABLE)
        luaL_error(L, "%s: option 'betas' must be a table {beta1, beta2}, got %s", fname,
                   luaL_typename(L, -1));
    lua_geti(L, -1, 1);
    lua_geti(L, -2, 2);
    if (lua_type(L, -2) != LUA_TNUMBER || lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "%s: option 'betas' must hold two numbers {beta1, beta2}", fname);
    *b1 = lua_tonumber(L, -2);
    *b2 = lua_tonumber(L, -1);
    lua_pop(L, 3);
}

/* step(kind, params, states, hp): one update of every parameter with a
 * gradient. kind: 'SGD', 'Adam', 'AdamW' or 'RMSprop'; states[i] is the
 * table of parameter i's buffers and step count (updated); hp holds the
 * hyper-parameters (the optimizer object itself). */
static int lk_step(lua_State *L) {
    static const char *const buffers[3][EM_OPTIM_MAX_BUFFERS] = {
        {"momentum_buffer", NULL, NULL},
        {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
        {"square_avg", "momentum_buffer", "grad_avg"},
    };
    const char *kind = luaL_checkstring(L, 1);
    int family = !strcmp(kind, "SGD") ? 0
                 : (!strcmp(kind, "Adam") || !strcmp(kind, "AdamW")) ? 1
                 : !strcmp(kind, "RMSprop") ? 2 : -1;
    if (family < 0) return luaL_error(L, "optimizer step: unknown optimizer '%s'", kind);
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TTABLE);
    int n;
    em_tensor **ps = check_tensor_list(L, 2, kind, &n);
    em_optim_slot *slots = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *slots, 0);
    for (int i = 0; i < n; i++) {
        memset(&slots[i], 0, sizeof slots[i]);
        slots[i].param = ps[i];
        if (lua_geti(L, 3, i + 1) != LUA_TTABLE)
            return luaL_error(L, "%s: no state for parameter %d", kind, i + 1);
        for (int j = 0; j < EM_OPTIM_MAX_BUFFERS; j++) {
            if (!buffers[family][j]) continue;
            lua_getfield(L, -1, buffers[family][j]);
            slots[i].buf[j] = em_lua_test(L, -1); /* kept alive by the state table */
            lua_pop(L, 1);
        }
        lua_getfield(L, -1, "step");
        int isnum = 0;
        slots[i].step = (int64_t)lua_tointegerx(L, -1, &isnum);
        if (!isnum) return luaL_error(L, "%s: the step count of parameter %d must be an integer", kind, i + 1);
        lua_pop(L, 2);
    }
    int rc;
    if (family == 0) {
        em_sgd_hparams h = {hp_number(L, 4, kind, "lr"), hp_number(L, 4, kind, "momentum"),
                            hp_number(L, 4, kind, "dampening"), hp_number(L, 4, kind, "weight_decay"),
                            hp_bool(L, 4, "nesterov")};
        rc = em_optim_sgd_step(&h, n, slots);
    } else if (family == 1) {
        em_adam_hparams h = {.lr = hp_number(L, 4, kind, "lr"), .eps = hp_number(L, 4, kind, "eps"),
                             .weight_decay = hp_number(L, 4, kind, "weight_decay"),
                             .amsgrad = hp_bool(L, 4, "amsgrad"), .decoupled = !strcmp(kind, "AdamW")};
        hp_betas(L, 4, kind, &h.beta1, &h.beta2);
        rc = em_optim_adam_step(&h, n, slots);
    } else {
        em_rmsprop_hparams h = {hp_number(L, 4, kind, "lr"), hp_number(L, 4, kind, "alpha"),
                                hp_number(L, 4, kind, "eps"), hp_number(L, 4, kind, "weight_decay"),
                                hp_number(L, 4, kind, "momentum"), hp_bool(L, 4, "centered")};
        rc = em_optim_rmsprop_step(&h, n, slots);
    }
    if (rc) return em_lua_core_error(L);
    for (int i = 0; i < n; i++) {
        lua_geti(L, 3, i + 1);
        lua_pushinteger(L, (lua_Integer)slots[i].step);
        lua_setfield(L, -2, "step");
        lua_pop(L, 1);
    }
    return 0;
}

void em_lua_open_optim(lua_State *L, int module, int methods) {
    (void)methods;
    static const luaL_Reg kernels[] = {
        {"bce_with_logits", lk_bce_with_logits}, {"cross_entropy", lk_cross_entropy},
        {"nll", lk_nll}, {"discretized_logistic_mixture", lk_discretized_logistic_mixture},
        {"step", lk_step}, {"clip_grad_norm", lk_clip_grad_norm},
        {"clip_grad_value", lk_clip_grad_value}, {"clip_weights", lk_clip_weights},
        {"tensor_key", lk_tensor_key}, {"first_nonfinite_grad", lk_first_nonfinite_grad},
        {NULL, NULL}};
    luaL_newlib(L, kernels);
    lua_setfield(L, module, "_optim_kernels");
    lua_pushcfunction(L, lf_sample_discretized_logistic_mixture);
    lua_setfield(L, module, "sample_discretized_logistic_mixture");
}
