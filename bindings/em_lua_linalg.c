/* em_lua_linalg.c — the Lua face of core/em_linalg.c: the symmetric
 * eigendecomposition, mean/covariance of feature rows and the Fréchet distance
 * (what ember.quality builds on). None of them record autograd. */
#include "em_linalg.h"
#include "em_lua.h"

/* ember.eigh(a [n x n]) -> values [n] (ascending), vectors [n x n]
 * (column j is the unit eigenvector of values[j]); a must be symmetric (its
 * lower triangle is read). */
static int lf_eigh(lua_State *L) {
    em_tensor *a = em_lua_check(L, 1, "eigh");
    em_tensor *values, *vectors;
    if (em_linalg_eigh(a, &values, &vectors) != EM_OK) return em_lua_core_error(L);
    em_lua_push(L, values);
    em_lua_push(L, vectors);
    return 2;
}

/* ember.mean_cov(x [n x d] [, correction=1]) -> mean [d], covariance [d x d]
 * (divided by n - correction: 1 unbiased, 0 the maximum-likelihood estimate). */
static int lf_mean_cov(lua_State *L) {
    em_tensor *x = em_lua_check(L, 1, "mean_cov");
    lua_Integer correction = 1;
    if (!lua_isnoneornil(L, 2)) {
        correction = em_lua_check_integer(L, 2, "mean_cov");
        if (correction < 0 || correction > 1)
            return em_lua_arg_error(L, 2, "mean_cov", "correction 0 or 1");
    }
    em_tensor *mean, *cov;
    if (em_linalg_mean_cov(x, (int)correction, &mean, &cov) != EM_OK) return em_lua_core_error(L);
    em_lua_push(L, mean);
    em_lua_push(L, cov);
    return 2;
}

/* ember.frechet_distance(mu1 [d], sigma1 [d x d], mu2 [d], sigma2 [d x d]) -> number:
 * |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1^1/2 sigma2 sigma1^1/2)^1/2). */
static int lf_frechet_distance(lua_State *L) {
    em_tensor *mu1 = em_lua_check(L, 1, "frechet_distance");
    em_tensor *s1 = em_lua_check(L, 2, "frechet_distance");
    em_tensor *mu2 = em_lua_check(L, 3, "frechet_distance");
    em_tensor *s2 = em_lua_check(L, 4, "frechet_distance");
    double d;
    if (em_linalg_frechet(mu1, s1, mu2, s2, &d) != EM_OK) return em_lua_core_error(L);
    lua_pushnumber(L, d);
    return 1;
}

void em_lua_open_linalg(lua_State *L, int module, int methods) {
    static const luaL_Reg fns[] = {
        {"eigh", lf_eigh},
        {"mean_cov", lf_mean_cov},
        {"frechet_distance", lf_frechet_distance},
        {NULL, NULL},
    };
    for (const luaL_Reg *r = fns; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, module, r->name);
    }
    (void)methods;
}
