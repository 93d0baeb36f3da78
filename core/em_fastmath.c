/* em_fastmath.c — polynomial kernels with an AVX2+FMA loop chosen at run time:
 * BCE-with-logits' softplus term (below) and the Box-Muller transform (the
 * second half of the file, bit for bit glibc's; also as an AVX-512 loop).
 *
 * log(1 + exp(-|x|)) by polynomials in double precision: a scalar loop of fma() and an AVX2+FMA
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

static int level_cap = EM_FASTMATH_AVX512;

static int cpu_level(void) {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return EM_FASTMATH_SCALAR;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) return EM_FASTMATH_AVX512;
    return EM_FASTMATH_AVX2;
}

int em_fastmath_level(void) {
    int cpu = cpu_level();
    return cpu < level_cap ? cpu : level_cap;
}

void em_fastmath_cap_level(int level) { level_cap = level; }

bool em_fastmath_simd(void) { return em_fastmath_level() >= EM_FASTMATH_AVX2; }

void em_fastmath_use_simd(bool on) { level_cap = on ? EM_FASTMATH_AVX512 : EM_FASTMATH_SCALAR; }

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

/* eight floats' log(1 + exp(-|x|)) on AVX-512 (F + DQ): operation for operation
 * log1p_exp_neg_abs4's, so the same bits (perf: BCE's forward at 4% of B1) */
__attribute__((target("avx512f,avx512dq,avx2,fma"))) static inline __m256 log1p_exp_neg_abs8(__m256 xf) {
    const __m512d sign = _mm512_set1_pd(-0.0), one = _mm512_set1_pd(1.0);
    __m512d a = _mm512_abs_pd(_mm512_cvtps_pd(xf));
    __m512d y = _mm512_max_pd(_mm512_xor_pd(a, sign), _mm512_set1_pd(-EXP_CUT));
    __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(y, _mm512_set1_pd(LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fmadd_pd(n, _mm512_set1_pd(-LN2), y);
    __m512d p = _mm512_set1_pd(EXP_C[0]);
    for (int k = 1; k < 7; k++) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(EXP_C[k]));
    p = _mm512_fmadd_pd(p, r, one);
    p = _mm512_fmadd_pd(p, r, one);
    __m512i e = _mm512_cvtpd_epi64(n); /* an integer in [-151, 0]: exact */
    __m512d scale = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(e, _mm512_set1_epi64(1023)), 52));
    __m512d u = _mm512_mul_pd(p, scale);
    u = _mm512_maskz_mov_pd(~_mm512_cmp_pd_mask(a, _mm512_set1_pd(EXP_CUT), _CMP_GT_OQ), u);
    __m512d s = _mm512_div_pd(u, _mm512_add_pd(_mm512_set1_pd(2.0), u));
    __m512d z = _mm512_mul_pd(s, s);
    __m512d q = _mm512_set1_pd(ATANH_C[0]);
    for (int k = 1; k < 8; k++) q = _mm512_fmadd_pd(q, z, _mm512_set1_pd(ATANH_C[k]));
    q = _mm512_fmadd_pd(q, z, one);
    return _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_add_pd(s, s), q));
}

__attribute__((target("avx512f,avx512dq,avx2,fma"))) static void bce_avx512(int64_t n, float *out,
                                                                            const float *x, const float *t) {
    int64_t i = 0;
    const __m256 zero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i), tv = _mm256_loadu_ps(t + i);
        __m256 sp = log1p_exp_neg_abs8(xv);
        sp = _mm256_blendv_ps(sp, xv, _mm256_cmp_ps(xv, xv, _CMP_UNORD_Q)); /* NaN stays NaN */
        __m256 v = _mm256_sub_ps(_mm256_max_ps(xv, zero), _mm256_mul_ps(xv, tv));
        _mm256_storeu_ps(out + i, _mm256_add_ps(v, sp));
    }
    bce_scalar(n - i, out + i, x + i, t + i);
}

void em_fast_bce_with_logits(int64_t n, float *out, const float *x, const float *t) {
    int level = em_fastmath_level();
    if (level >= EM_FASTMATH_AVX512)
        bce_avx512(n, out, x, t);
    else if (level >= EM_FASTMATH_AVX2)
        bce_avx2(n, out, x, t);
    else
        bce_scalar(n, out, x, t);
}

/* ---- Box-Muller, bit for bit glibc's ------------------------------------
 *
 * The reference is the double expression V = mean + std * (sqrt(-2 log u1) *
 * cos(theta)), theta = 2 pi u2 as C rounds it, then (float)V. The vector
 * loop computes V' with its own log and cos:
 *   log u1 (u1 in [2^-53, 1]): u1 = 2^e m, m in [sqrt(2)/2, sqrt(2)); log m =
 *     2 atanh(f / (2 + f)), f = m - 1 exact, by the series to s^21 (truncation
 *     6e-19); + e ln 2 (ln 2 split, two fma). A few ulp.
 *   cos theta (theta in [0, 2 pi)): k = nearest(theta 2/pi), r = theta - k pi/2
 *     with pi/2 in two parts (theta - k P1 is exact for k >= 1: both are
 *     multiples of 2^-52 and closer than 1), so r is accurate relative to
 *     itself even beside a zero of cos; then +-cos r or +-sin r by Taylor
 *     polynomials to r^16 / r^17 on |r| <= pi/4 (truncation 2e-18). A few ulp.
 * glibc's log and cos are within 1 ulp (its documented maxima for double);
 * both Z = sqrt(-2L) cos and Z' are within RHO = 64 ulp of the exact product,
 * a wide margin over the ~12 ulp the two chains can add up to, so
 * |V - V'| <= E = |std Z'| RHO + |V'| 2^-51. When V' - E and V' + E round to
 * the same float, so does V, which lies between them (rounding is monotone):
 * the lane is kept. Otherwise (about 1 in 10^7: E against a float ulp) the
 * lane is recomputed by the reference expression, as are non-finite ones. */

#define TWO_PI (2.0 * M_PI)
#define BM_RHO (64.0 * 0x1.0p-52)
#define PIO2_1 1.5707963267948966          /* fl(pi / 2) */
#define PIO2_2 6.123233995736766e-17       /* fl(pi / 2 - PIO2_1) */
#define TWO_OVER_PI 0.6366197723675814
#define LN2_HI_D 6.93147180369123816490e-01 /* 0x3fe62e42fee00000: e LN2_HI_D is exact */
#define LN2_LO_D 1.90821492927058770002e-10
#define SQRT2 1.4142135623730951

double em_box_muller_z(uint64_t w1, uint64_t w2) {
    double u1 = 1.0 - (double)(w1 >> 11) * 0x1.0p-53;
    double u2 = (double)(w2 >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static float box_muller_reference(uint64_t w1, uint64_t w2, float mean, float std) {
    return (float)(mean + std * em_box_muller_z(w1, w2));
}

static _Thread_local int64_t bm_fallbacks;

int64_t em_box_muller_fallbacks(void) { return bm_fallbacks; }

/* The lanes of out[0 .. lanes) that the vector loop did not keep (keep: a bit per
 * lane), recomputed by the reference from their word pairs w[2 l], w[2 l + 1]. */
static void recompute_unkept(float *out, const uint64_t *w, int lanes, int keep, float mean, float std) {
    for (int l = 0; l < lanes; l++) {
        if (keep & (1 << l)) continue;
        out[l] = box_muller_reference(w[2 * l], w[2 * l + 1], mean, std);
        bm_fallbacks++;
    }
}

/* 1/(2k+1), k = 10 .. 1 (then 1) */
static const double LOG_C[10] = {1.0 / 21, 1.0 / 19, 1.0 / 17, 1.0 / 15, 1.0 / 13,
                                 1.0 / 11, 1.0 / 9,  1.0 / 7,  1.0 / 5,  1.0 / 3};
/* cos: (-1)^k / (2k)!, k = 8 .. 1 (then 1); sin: (-1)^k / (2k+1)!, k = 8 .. 1 */
static const double COS_C[8] = {1.0 / 20922789888000.0, -1.0 / 87178291200.0, 1.0 / 479001600.0,
                                -1.0 / 3628800.0,       1.0 / 40320.0,        -1.0 / 720.0,
                                1.0 / 24.0,             -0.5};
static const double SIN_C[8] = {1.0 / 355687428096000.0, -1.0 / 1307674368000.0, 1.0 / 6227020800.0,
                                -1.0 / 39916800.0,       1.0 / 362880.0,         -1.0 / 5040.0,
                                1.0 / 120.0,             -1.0 / 6.0};

/* (double)(x) for 64-bit integers below 2^52: the exponent-bits trick */
__attribute__((target("avx2,fma"))) static inline __m256d u52_to_pd(__m256i x) {
    const __m256d magic = _mm256_set1_pd(0x1.0p52);
    return _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(x, _mm256_castpd_si256(magic))), magic);
}

/* the uniform (w >> 11) 2^-53 of four words: the 53-bit integer as 2 (w >> 12) + bit */
__attribute__((target("avx2,fma"))) static inline __m256d words_to_uniform(__m256i w) {
    __m256d hi = u52_to_pd(_mm256_srli_epi64(w, 12));
    __m256d lo = u52_to_pd(_mm256_and_si256(_mm256_srli_epi64(w, 11), _mm256_set1_epi64x(1)));
    return _mm256_mul_pd(_mm256_fmadd_pd(hi, _mm256_set1_pd(2.0), lo), _mm256_set1_pd(0x1.0p-53));
}

/* the low 32 bits of each 64-bit lane, as four int32 */
__attribute__((target("avx2,fma"))) static inline __m128i low_halves(__m256i x) {
    return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0)));
}

/* log u for u in [2^-53, 1] */
__attribute__((target("avx2,fma"))) static inline __m256d log_unit(__m256d u) {
    __m256i bits = _mm256_castpd_si256(u);
    __m256i e = _mm256_sub_epi64(_mm256_srli_epi64(bits, 52), _mm256_set1_epi64x(1023));
    __m256d m = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000fffffffffffffLL)),
                                                    _mm256_set1_epi64x(0x3ff0000000000000LL)));
    __m256d big = _mm256_cmp_pd(m, _mm256_set1_pd(SQRT2), _CMP_GE_OQ);
    m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(0.5)), big);
    e = _mm256_sub_epi64(e, _mm256_castpd_si256(big)); /* the mask is -1 where m was halved */
    __m256d ed = _mm256_cvtepi32_pd(low_halves(e));
    __m256d f = _mm256_sub_pd(m, _mm256_set1_pd(1.0));
    __m256d s = _mm256_div_pd(f, _mm256_add_pd(_mm256_set1_pd(2.0), f));
    __m256d z = _mm256_mul_pd(s, s);
    __m256d q = _mm256_set1_pd(LOG_C[0]);
    for (int k = 1; k < 10; k++) q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(LOG_C[k]));
    q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(1.0));
    __m256d logm = _mm256_mul_pd(_mm256_add_pd(s, s), q);
    return _mm256_fmadd_pd(ed, _mm256_set1_pd(LN2_HI_D), _mm256_fmadd_pd(ed, _mm256_set1_pd(LN2_LO_D), logm));
}

/* cos theta for theta in [0, 2 pi) */
__attribute__((target("avx2,fma"))) static inline __m256d cos_turn(__m256d theta) {
    __m256d k = _mm256_round_pd(_mm256_mul_pd(theta, _mm256_set1_pd(TWO_OVER_PI)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fmadd_pd(k, _mm256_set1_pd(-PIO2_1), theta);
    r = _mm256_fmadd_pd(k, _mm256_set1_pd(-PIO2_2), r);
    __m256d z = _mm256_mul_pd(r, r);
    __m256d c = _mm256_set1_pd(COS_C[0]), s = _mm256_set1_pd(SIN_C[0]);
    for (int i = 1; i < 8; i++) {
        c = _mm256_fmadd_pd(c, z, _mm256_set1_pd(COS_C[i]));
        s = _mm256_fmadd_pd(s, z, _mm256_set1_pd(SIN_C[i]));
    }
    c = _mm256_fmadd_pd(c, z, _mm256_set1_pd(1.0));       /* cos r */
    s = _mm256_fmadd_pd(_mm256_mul_pd(s, z), r, r);         /* sin r = r + r z P(z) */
    __m256i ki = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(k));
    __m256i one = _mm256_set1_epi64x(1), two = _mm256_set1_epi64x(2);
    __m256d odd = _mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_and_si256(ki, one), one));
    __m256i neg = _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_add_epi64(ki, one), two), two);
    __m256d v = _mm256_blendv_pd(c, s, odd); /* k = 0, 4: cos r; 1: -sin r; 2: -cos r; 3: sin r */
    return _mm256_xor_pd(v, _mm256_and_pd(_mm256_castsi256_pd(neg), _mm256_set1_pd(-0.0)));
}

/* four values from the word pairs at w; a lane mask (bit per lane) of the kept ones */
__attribute__((target("avx2,fma"))) static inline int box_muller4(const uint64_t *w, float mean, float std,
                                                                  __m128 *res) {
    __m256i a = _mm256_loadu_si256((const __m256i *)w), b = _mm256_loadu_si256((const __m256i *)(w + 4));
    /* words 0..7 -> u1 words (even) and u2 words (odd), in lane order 0..3 */
    __m256i lo = _mm256_unpacklo_epi64(a, b), hi = _mm256_unpackhi_epi64(a, b); /* (0,4,2,6), (1,5,3,7) */
    __m256i w1 = _mm256_permute4x64_epi64(lo, 0xD8), w2 = _mm256_permute4x64_epi64(hi, 0xD8);
    __m256d u1 = _mm256_sub_pd(_mm256_set1_pd(1.0), words_to_uniform(w1));
    __m256d theta = _mm256_mul_pd(_mm256_set1_pd(TWO_PI), words_to_uniform(w2));
    __m256d rad = _mm256_sqrt_pd(_mm256_mul_pd(_mm256_set1_pd(-2.0), log_unit(u1)));
    __m256d z = _mm256_mul_pd(rad, cos_turn(theta));
    __m256d sz = _mm256_mul_pd(_mm256_set1_pd((double)std), z);
    __m256d v = _mm256_add_pd(_mm256_set1_pd((double)mean), sz);
    const __m256d sign = _mm256_set1_pd(-0.0);
    __m256d err = _mm256_fmadd_pd(_mm256_andnot_pd(sign, sz), _mm256_set1_pd(BM_RHO),
                                  _mm256_mul_pd(_mm256_andnot_pd(sign, v), _mm256_set1_pd(0x1.0p-51)));
    __m128 flo = _mm256_cvtpd_ps(_mm256_sub_pd(v, err)), fhi = _mm256_cvtpd_ps(_mm256_add_pd(v, err));
    __m128i same = _mm_cmpeq_epi32(_mm_castps_si128(flo), _mm_castps_si128(fhi));
    __m128 ordered = _mm_cmpord_ps(flo, flo); /* NaN bounds: not kept */
    *res = flo;
    return _mm_movemask_ps(_mm_and_ps(_mm_castsi128_ps(same), ordered));
}

__attribute__((target("avx2,fma"))) static void box_muller_avx2(int64_t n, float *out, const uint64_t *w,
                                                                float mean, float std) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128 r;
        int keep = box_muller4(w + 2 * i, mean, std, &r);
        _mm_storeu_ps(out + i, r);
        if (keep != 0xF) recompute_unkept(out + i, w + 2 * i, 4, keep, mean, std);
    }
    for (; i < n; i++) out[i] = box_muller_reference(w[2 * i], w[2 * i + 1], mean, std);
}

/* ---- the same transform, eight lanes of AVX-512 (F + DQ) ---------------
 * Operation for operation the AVX2 loop's (the same polynomials, the same
 * fma chains, the same error bound), so a lane keeps exactly when the AVX2
 * loop would keep it and holds the same float; perf on B4 (batch-512 noise,
 * 262k normals a step) put the AVX2 transform at 22% of the step. */
#define AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma")))

AVX512 static inline __m512d u52_to_pd8(__m512i x) {
    const __m512d magic = _mm512_set1_pd(0x1.0p52);
    return _mm512_sub_pd(_mm512_castsi512_pd(_mm512_or_si512(x, _mm512_castpd_si512(magic))), magic);
}

AVX512 static inline __m512d words_to_uniform8(__m512i w) {
    __m512d hi = u52_to_pd8(_mm512_srli_epi64(w, 12));
    __m512d lo = u52_to_pd8(_mm512_and_si512(_mm512_srli_epi64(w, 11), _mm512_set1_epi64(1)));
    return _mm512_mul_pd(_mm512_fmadd_pd(hi, _mm512_set1_pd(2.0), lo), _mm512_set1_pd(0x1.0p-53));
}

AVX512 static inline __m512d log_unit8(__m512d u) {
    __m512i bits = _mm512_castpd_si512(u);
    __m512i e = _mm512_sub_epi64(_mm512_srli_epi64(bits, 52), _mm512_set1_epi64(1023));
    __m512d m = _mm512_castsi512_pd(_mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi64(0x000fffffffffffffLL)),
                                                    _mm512_set1_epi64(0x3ff0000000000000LL)));
    __mmask8 big = _mm512_cmp_pd_mask(m, _mm512_set1_pd(SQRT2), _CMP_GE_OQ);
    m = _mm512_mask_mul_pd(m, big, m, _mm512_set1_pd(0.5));
    e = _mm512_mask_add_epi64(e, big, e, _mm512_set1_epi64(1));
    __m512d ed = _mm512_cvtepi64_pd(e); /* |e| <= 1075: exact, as the AVX2 loop's int32 conversion */
    __m512d f = _mm512_sub_pd(m, _mm512_set1_pd(1.0));
    __m512d s = _mm512_div_pd(f, _mm512_add_pd(_mm512_set1_pd(2.0), f));
    __m512d z = _mm512_mul_pd(s, s);
    __m512d q = _mm512_set1_pd(LOG_C[0]);
    for (int k = 1; k < 10; k++) q = _mm512_fmadd_pd(q, z, _mm512_set1_pd(LOG_C[k]));
    q = _mm512_fmadd_pd(q, z, _mm512_set1_pd(1.0));
    __m512d logm = _mm512_mul_pd(_mm512_add_pd(s, s), q);
    return _mm512_fmadd_pd(ed, _mm512_set1_pd(LN2_HI_D), _mm512_fmadd_pd(ed, _mm512_set1_pd(LN2_LO_D), logm));
}

AVX512 static inline __m512d cos_turn8(__m512d theta) {
    __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(theta, _mm512_set1_pd(TWO_OVER_PI)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fmadd_pd(k, _mm512_set1_pd(-PIO2_1), theta);
    r = _mm512_fmadd_pd(k, _mm512_set1_pd(-PIO2_2), r);
    __m512d z = _mm512_mul_pd(r, r);
    __m512d c = _mm512_set1_pd(COS_C[0]), s = _mm512_set1_pd(SIN_C[0]);
    for (int i = 1; i < 8; i++) {
        c = _mm512_fmadd_pd(c, z, _mm512_set1_pd(COS_C[i]));
        s = _mm512_fmadd_pd(s, z, _mm512_set1_pd(SIN_C[i]));
    }
    c = _mm512_fmadd_pd(c, z, _mm512_set1_pd(1.0));
    s = _mm512_fmadd_pd(_mm512_mul_pd(s, z), r, r);
    __m512i ki = _mm512_cvtpd_epi64(k); /* k is an integer in [0, 4]: exact */
    __mmask8 odd = _mm512_test_epi64_mask(ki, _mm512_set1_epi64(1));
    __mmask8 neg = _mm512_test_epi64_mask(_mm512_add_epi64(ki, _mm512_set1_epi64(1)), _mm512_set1_epi64(2));
    __m512d v = _mm512_mask_blend_pd(odd, c, s); /* k = 0, 4: cos r; 1: -sin r; 2: -cos r; 3: sin r */
    return _mm512_mask_xor_pd(v, neg, v, _mm512_set1_pd(-0.0));
}

/* eight values from eight (u1 word, u2 word) pairs; a lane mask (bit per lane) of the kept ones */
AVX512 static inline int box_muller8_words(__m512i w1, __m512i w2, float mean, float std, __m256 *res) {
    __m512d u1 = _mm512_sub_pd(_mm512_set1_pd(1.0), words_to_uniform8(w1));
    __m512d theta = _mm512_mul_pd(_mm512_set1_pd(TWO_PI), words_to_uniform8(w2));
    __m512d rad = _mm512_sqrt_pd(_mm512_mul_pd(_mm512_set1_pd(-2.0), log_unit8(u1)));
    __m512d z = _mm512_mul_pd(rad, cos_turn8(theta));
    __m512d sz = _mm512_mul_pd(_mm512_set1_pd((double)std), z);
    __m512d v = _mm512_add_pd(_mm512_set1_pd((double)mean), sz);
    __m512d err = _mm512_fmadd_pd(_mm512_abs_pd(sz), _mm512_set1_pd(BM_RHO),
                                  _mm512_mul_pd(_mm512_abs_pd(v), _mm512_set1_pd(0x1.0p-51)));
    __m256 flo = _mm512_cvtpd_ps(_mm512_sub_pd(v, err)), fhi = _mm512_cvtpd_ps(_mm512_add_pd(v, err));
    __m256i same = _mm256_cmpeq_epi32(_mm256_castps_si256(flo), _mm256_castps_si256(fhi));
    __m256 ordered = _mm256_cmp_ps(flo, flo, _CMP_ORD_Q); /* NaN bounds: not kept */
    *res = flo;
    return _mm256_movemask_ps(_mm256_and_ps(_mm256_castsi256_ps(same), ordered));
}

/* eight values from the word pairs at w (w[2i], w[2i + 1]) */
AVX512 static inline int box_muller8(const uint64_t *w, float mean, float std, __m256 *res) {
    __m512i a = _mm512_loadu_si512(w), b = _mm512_loadu_si512(w + 8);
    __m512i w1 = _mm512_permutex2var_epi64(a, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), b);
    __m512i w2 = _mm512_permutex2var_epi64(a, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), b);
    return box_muller8_words(w1, w2, mean, std, res);
}

AVX512 static void box_muller_avx512(int64_t n, float *out, const uint64_t *w, float mean, float std) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 r;
        int keep = box_muller8(w + 2 * i, mean, std, &r);
        _mm256_storeu_ps(out + i, r);
        if (keep != 0xFF) recompute_unkept(out + i, w + 2 * i, 8, keep, mean, std);
    }
    box_muller_avx2(n - i, out + i, w + 2 * i, mean, std); /* the last 0..7 */
}

/* Box-Muller over eight lanes' interleaved words (lane j's word t at iw[8 t + j]):
 * lane j's value i from its words 2i and 2i + 1, into out[j stride + i]. */
AVX512 static void box_muller_lanes_avx512(int64_t n, float *out, int64_t stride, const uint64_t *iw,
                                           float mean, float std) {
    /* values i of the 8 lanes, then a lane's run of values out in one go (the
     * transform's chains are long: a whole batch in flight keeps the units busy) */
    float v[8 * 256];
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        const int64_t len = n - i0 < 256 ? n - i0 : 256;
        for (int64_t i = 0; i < len; i++) {
            __m256 r;
            const uint64_t *w = iw + 16 * (i0 + i);
            int keep = box_muller8_words(_mm512_loadu_si512(w), _mm512_loadu_si512(w + 8), mean, std, &r);
            _mm256_storeu_ps(v + 8 * i, r);
            if (keep != 0xFF)
                for (int l = 0; l < 8; l++)
                    if (!(keep & (1 << l))) {
                        v[8 * i + l] = box_muller_reference(w[l], w[8 + l], mean, std);
                        bm_fallbacks++;
                    }
        }
        for (int l = 0; l < 8; l++)
            for (int64_t i = 0; i < len; i++) out[l * stride + i0 + i] = v[8 * i + l];
    }
}

void em_box_muller_lanes8(int64_t n, float *out, int64_t stride, const uint64_t *iw, float mean,
                          float std) {
    if (em_fastmath_level() >= EM_FASTMATH_AVX512) {
        box_muller_lanes_avx512(n, out, stride, iw, mean, std);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        for (int l = 0; l < 8; l++)
            out[l * stride + i] = box_muller_reference(iw[16 * i + l], iw[16 * i + 8 + l], mean, std);
}

void em_box_muller(int64_t n, float *out, const uint64_t *words, float mean, float std) {
    int level = em_fastmath_level();
    if (level >= EM_FASTMATH_AVX512) {
        box_muller_avx512(n, out, words, mean, std);
        return;
    }
    if (level >= EM_FASTMATH_AVX2) {
        box_muller_avx2(n, out, words, mean, std);
        return;
    }
    for (int64_t i = 0; i < n; i++) out[i] = box_muller_reference(words[2 * i], words[2 * i + 1], mean, std);
}
