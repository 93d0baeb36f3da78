/* em_fastmath.c — log(1 + exp(-|x|)) (BCE-with-logits' softplus term) by
 * polynomials in double precision: a scalar loop of fma() and an AVX2+FMA
 * loop (4 doubles a vector) doing the same operations in the same order, so
 * both give the same bits; the float result is within 0.52 ulp (tested: 1).
 *
 * perf on benchmark B1 showed glibc's scalar log1pf(expf(.)) at 15% of the
 * step. The loss's backward does not read the forward's values (it is
 * g (sigmoid(x) - t)), so this changes reported loss values in their last
 * bits (glibc's float functions are within an ulp, these within half of one
 * and a bit) and no training trajectory.
 *
 * exp(-a), a = |x| in [0, 104]: n = nearest(-a log2 e), r = -a - n ln2 (one
 * fma: |r| <= ln2 / 2 with an error of 150 ulp(ln2) = 2e-14 at most), exp(r)
 * by its Taylor polynomial of degree 8 (truncation 2e-10 relative), times
 * 2^n (n >= -151: a normal double). a > 104: exp(-a) is below half the
 * smallest float subnormal, and the term is 0.
 * log1p(u), u in [0, 1]: s = u / (2 + u) in [0, 1/3], log1p(u) = 2 atanh(s)
 * = 2 s (1 + s^2/3 + s^4/5 + ... + s^16/17) (truncation (1/9)^9 / 19 = 1.4e-10
 * relative), exact in relative terms down to the smallest u. */
#include "em_fastmath.h"

#include <math.h>

#include <immintrin.h>

#define EXP_CUT 104.0
#define LOG2E 1.4426950408889634
#define LN2 0.6931471805599453

/* exp Taylor coefficients 1/k!, k = 8 .. 2 (then 1 and 1) */
static const double EXP_C[7] = {1.0 / 40320, 1.0 / 5040, 1.0 / 720, 1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5};
/* atanh series 1/(2k+1), k = 8 .. 1 (then 1) */
static const double ATANH_C[8] = {1.0 / 17, 1.0 / 15, 1.0 / 13, 1.0 / 11, 1.0 / 9, 1.0 / 7, 1.0 / 5, 1.0 / 3};

static bool simd_off;

bool em_fastmath_simd(void) {
    return !simd_off && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

void em_fastmath_use_simd(bool on) { simd_off = !on; }

float em_log1p_exp_neg_abs(float x) {
    double a = fabs((double)x);
    double y = -a > -EXP_CUT ? -a : -EXP_CUT; /* as _mm256_max_pd(-a, -cut): NaN -> -cut */
    double n = nearbyint(y * LOG2E);
    double r = fma(n, -LN2, y);
    double p = EXP_C[0];
    for (int k = 1; k < 7; k++) p = fma(p, r, EXP_C[k]);
    p = fma(p, r, 1.0);
    p = fma(p, r, 1.0);
    double u = a > EXP_CUT ? 0.0 : p * ldexp(1.0, (int)n); /* ldexp of 1: exact, as the exponent bits */
    double s = u / (2.0 + u);
    double z = s * s;
    double q = ATANH_C[0];
    for (int k = 1; k < 8; k++) q = fma(q, z, ATANH_C[k]);
    q = fma(q, z, 1.0);
    return isnan(x) ? x : (float)((s + s) * q);
}

static void bce_scalar(int64_t n, float *out, const float *x, const float *t) {
    for (int64_t i = 0; i < n; i++)
        out[i] = fmaxf(x[i], 0.0f) - x[i] * t[i] + em_log1p_exp_neg_abs(x[i]);
}

/* four floats' log(1 + exp(-|x|)), as em_log1p_exp_neg_abs (without the NaN case) */
__attribute__((target("avx2,fma"))) static inline __m128 log1p_exp_neg_abs4(__m128 xf) {
    const __m256d sign = _mm256_set1_pd(-0.0), one = _mm256_set1_pd(1.0);
    __m256d a = _mm256_andnot_pd(sign, _mm256_cvtps_pd(xf));
    __m256d y = _mm256_max_pd(_mm256_xor_pd(a, sign), _mm256_set1_pd(-EXP_CUT));
    __m256d n = _mm256_round_pd(_mm256_mul_pd(y, _mm256_set1_pd(LOG2E)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fmadd_pd(n, _mm256_set1_pd(-LN2), y);
    __m256d p = _mm256_set1_pd(EXP_C[0]);
    for (int k = 1; k < 7; k++) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(EXP_C[k]));
    p = _mm256_fmadd_pd(p, r, one);
    p = _mm256_fmadd_pd(p, r, one);
    __m256i e = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n));
    __m256d scale = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(e, _mm256_set1_epi64x(1023)), 52));
    __m256d u = _mm256_mul_pd(p, scale);
    u = _mm256_andnot_pd(_mm256_cmp_pd(a, _mm256_set1_pd(EXP_CUT), _CMP_GT_OQ), u);
    __m256d s = _mm256_div_pd(u, _mm256_add_pd(_mm256_set1_pd(2.0), u));
    __m256d z = _mm256_mul_pd(s, s);
    __m256d q = _mm256_set1_pd(ATANH_C[0]);
    for (int k = 1; k < 8; k++) q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(ATANH_C[k]));
    q = _mm256_fmadd_pd(q, z, one);
    return _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_add_pd(s, s), q));
}

__attribute__((target("avx2,fma"))) static void bce_avx2(int64_t n, float *out, const float *x,
                                                         const float *t) {
    int64_t i = 0;
    const __m256 zero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i), tv = _mm256_loadu_ps(t + i);
        __m256 sp = _mm256_set_m128(log1p_exp_neg_abs4(_mm256_extractf128_ps(xv, 1)),
                                    log1p_exp_neg_abs4(_mm256_castps256_ps128(xv)));
        sp = _mm256_blendv_ps(sp, xv, _mm256_cmp_ps(xv, xv, _CMP_UNORD_Q)); /* NaN stays NaN */
        /* fmaxf(x, 0): 0 for NaN x, as _mm256_max_ps(x, 0) */
        __m256 v = _mm256_sub_ps(_mm256_max_ps(xv, zero), _mm256_mul_ps(xv, tv));
        _mm256_storeu_ps(out + i, _mm256_add_ps(v, sp));
    }
    bce_scalar(n - i, out + i, x + i, t + i);
}

void em_fast_bce_with_logits(int64_t n, float *out, const float *x, const float *t) {
    if (em_fastmath_simd())
        bce_avx2(n, out, x, t);
    else
        bce_scalar(n, out, x, t);
}
