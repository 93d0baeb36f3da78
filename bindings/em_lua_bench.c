/* em_lua_bench.c — a timing probe for `make bench`: the machine's
 * cblas_sgemm rate, so every benchmark can report itself as a fraction of the
 * practical ceiling measured in the same run. Not part of the modelling API. */
#include <cblas.h>
#include <stdlib.h>
#include <time.h>

#include "em_lua.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ember._sgemm_gflops(m, n, k [, reps=5]) -> median GFLOP/s of C[m x n] = A[m x k] B[k x n] */
static int lf_sgemm_gflops(lua_State *L) {
    lua_Integer m = em_lua_check_integer(L, 1, "_sgemm_gflops");
    lua_Integer n = em_lua_check_integer(L, 2, "_sgemm_gflops");
    lua_Integer k = em_lua_check_integer(L, 3, "_sgemm_gflops");
    lua_Integer reps = luaL_optinteger(L, 4, 5);
    if (m < 1 || n < 1 || k < 1 || m * k > (1 << 28) || k * n > (1 << 28) || m * n > (1 << 28) ||
        reps < 1 || reps > 1000)
        return luaL_error(L, "_sgemm_gflops: sizes must be in 1..2^28 elements, reps in 1..1000");
    float *a = calloc((size_t)(m * k), sizeof(float)), *b = calloc((size_t)(k * n), sizeof(float));
    float *c = calloc((size_t)(m * n), sizeof(float));
    double *t = calloc((size_t)reps, sizeof(double));
    if (!a || !b || !c || !t) {
        free(a); free(b); free(c); free(t);
        return luaL_error(L, "_sgemm_gflops: out of memory");
    }
    for (lua_Integer i = 0; i < m * k; i++) a[i] = (float)((i * 7) % 13) * 0.1f;
    for (lua_Integer i = 0; i < k * n; i++) b[i] = (float)((i * 5) % 11) * 0.1f;
    for (lua_Integer r = -1; r < reps; r++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, a,
                    (int)k, b, (int)n, 0.0f, c, (int)n);
        if (r >= 0) t[r] = now_seconds() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    lua_pushnumber(L, 2.0 * (double)m * (double)n * (double)k / t[reps / 2] / 1e9);
    free(a); free(b); free(c); free(t);
    return 1;
}

void em_lua_open_bench(lua_State *L, int module, int methods) {
    (void)methods;
    lua_pushcfunction(L, lf_sgemm_gflops);
    lua_setfield(L, module, "_sgemm_gflops");
}
