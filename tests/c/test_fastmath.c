/* test_fastmath.c — em_fastmath's log(1 + exp(-|x|)) against double precision
 * (within 1 ulp, over a dense sweep of [-100, 100] and the special values), and
 * its AVX2 loop bit for bit equal to the scalar reference on every length and
 * alignment; the BCE-with-logits op (contiguous: the vector loop; a transposed
 * target: the scalar one) equal to the reference elementwise. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "em_autograd.h"
#include "em_fastmath.h"
#include "em_loss.h"
#include "em_rng.h"
#include "test.h"

/* |got - want| in units of want's float ulp */
static double ulps(float got, double want) {
    float w = (float)want;
    double ulp = nextafterf(fabsf(w), INFINITY) - fabsf(w);
    return fabs((double)got - want) / ulp;
}

static double exact(float x) { return log1p(exp(-fabs((double)x))); }

TEST(fastmath_log1p_exp_within_1_ulp) {
    double worst = 0;
    float worst_x = 0;
    for (int64_t i = -2000000; i <= 2000000; i++) {
        float x = (float)i * 5e-5f; /* [-100, 100] */
        double e = ulps(em_log1p_exp_neg_abs(x), exact(x));
        if (e > worst) worst = e, worst_x = x;
    }
    /* tiny, huge and denormal arguments, and the edge of the exp cut-off */
    float special[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-45f, 5e-39f, 1e-7f, 86.9f, 87.0f, 87.1f,
                       103.2f, 103.9f, 104.0f, 104.1f, 1e30f};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) {
        double e = ulps(em_log1p_exp_neg_abs(special[i]), exact(special[i]));
        if (e > worst) worst = e, worst_x = special[i];
    }
    if (worst > 1 || getenv("EMBER_TEST_VERBOSE")) printf("    worst %.2f ulp at x = %.9g\n", worst, worst_x);
    CHECK(worst <= 1);
    CHECK(em_log1p_exp_neg_abs(0.0f) == (float)log(2.0));
    CHECK(em_log1p_exp_neg_abs(1e4f) == 0.0f);
    CHECK(em_log1p_exp_neg_abs(-INFINITY) == 0.0f);
    CHECK(isnan(em_log1p_exp_neg_abs(NAN)));
}

/* the AVX2 loop and the scalar one: the same bits for lengths 0..67 at every
 * offset into the arrays, over values across the whole range */
TEST(fastmath_bce_simd_equals_scalar) {
    if (!em_fastmath_simd()) {
        printf("    (no AVX2+FMA on this CPU: the scalar loop runs alone)\n");
        return;
    }
    enum { N = 4096 };
    float *x = malloc(N * sizeof *x), *t = malloc(N * sizeof *t);
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    em_rng_seed(5);
    for (int i = 0; i < N; i++) {
        x[i] = (float)((em_rng_uniform() - 0.5) * 240.0); /* past the exp cut-off */
        if (i % 7 == 0) x[i] *= 1e-6f;
        t[i] = (float)em_rng_uniform();
    }
    x[3] = NAN;
    x[10] = INFINITY;
    x[11] = -INFINITY;
    x[12] = -0.0f;
    /* every vector level this CPU runs (AVX-512, AVX2) against the scalar loop */
    for (int level = em_fastmath_level(); level >= EM_FASTMATH_AVX2; level--) {
        bool same = true;
        for (int off = 0; off < 8; off++) {
            for (int n = 0; n <= 67; n++) {
                em_fastmath_cap_level(level);
                em_fast_bce_with_logits(n, a, x + off, t + off);
                em_fastmath_use_simd(false);
                em_fast_bce_with_logits(n, b, x + off, t + off);
                same = same && memcmp(a, b, (size_t)n * sizeof *a) == 0;
            }
        }
        em_fastmath_cap_level(level);
        em_fast_bce_with_logits(N, a, x, t);
        em_fastmath_use_simd(false);
        em_fast_bce_with_logits(N, b, x, t);
        em_fastmath_use_simd(true);
        if (!same) printf("    level %d differs from the scalar loop\n", level);
        CHECK(same);
        CHECK(memcmp(a, b, N * sizeof *a) == 0);
        CHECK(isnan(a[3]));
    }
    free(x);
    free(t);
    free(a);
    free(b);
}

/* the op: contiguous (vector loop) and with a transposed target (scalar loop),
 * each element equal to the reference formula with em_log1p_exp_neg_abs */
TEST(fastmath_bce_op_matches_reference) {
    em_rng_seed(9);
    int64_t s[2] = {300, 37}, st[2] = {37, 300};
    em_tensor *x = em_randn(2, s), *t = em_rand(2, s), *tt = em_rand(2, st);
    em_tensor *t1 = em_transpose(tt, 0, 1); /* [300 x 37], strides (1, 300) */
    em_tensor *xs = em_binary_scalar(EM_BIN_MUL, x, 8.0f);
    em_tensor *full = em_loss_bce_with_logits(xs, t, EM_REDUCTION_NONE);
    em_tensor *bcast = em_loss_bce_with_logits(xs, t1, EM_REDUCTION_NONE);
    CHECK(full && bcast);
    if (!full || !bcast) {
        printf("    %s\n", em_error_message());
        return;
    }
    const float *xv = em_tensor_data(xs), *tv = em_tensor_data(t), *t1v = em_tensor_data(tt);
    const float *fv = em_tensor_data(full), *bv = em_tensor_data(bcast);
    bool ok_full = true, ok_bcast = true;
    for (int64_t i = 0; i < xs->numel; i++) {
        float sp = em_log1p_exp_neg_abs(xv[i]);
        ok_full = ok_full && fv[i] == fmaxf(xv[i], 0.0f) - xv[i] * tv[i] + sp;
        ok_bcast = ok_bcast && bv[i] == fmaxf(xv[i], 0.0f) - xv[i] * t1v[(i % 37) * 300 + i / 37] + sp;
    }
    CHECK(ok_full);
    CHECK(ok_bcast);
    em_tensor_release(x);
    em_tensor_release(t);
    em_tensor_release(t1);
    em_tensor_release(tt);
    em_tensor_release(xs);
    em_tensor_release(full);
    em_tensor_release(bcast);
}

/* ---- Box-Muller --------------------------------------------------------- */

/* the reference expression of em_rng_normal for one word pair */
static float bm_reference(uint64_t w1, uint64_t w2, float mean, float std) {
    double u1 = 1.0 - (double)(w1 >> 11) * 0x1.0p-53;
    double u2 = (double)(w2 >> 11) * 0x1.0p-53;
    return (float)(mean + std * (sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2)));
}

/* n values from words: every one bit for bit the reference's; returns the lanes recomputed */
static int64_t bm_check(const uint64_t *w, int64_t n, float mean, float std, bool *same) {
    float *out = malloc((size_t)(n ? n : 1) * sizeof *out);
    int64_t before = em_box_muller_fallbacks();
    em_box_muller(n, out, w, mean, std);
    for (int64_t i = 0; i < n; i++) {
        float want = bm_reference(w[2 * i], w[2 * i + 1], mean, std);
        if (memcmp(&want, &out[i], sizeof want) != 0) {
            if (*same) printf("    value %lld (mean %g, std %g): %.9g, expected %.9g\n", (long long)i, mean, std,
                              out[i], want);
            *same = false;
        }
    }
    free(out);
    return em_box_muller_fallbacks() - before;
}

/* 2^23 generator pairs at four (mean, std): the same floats as glibc's log and cos */
TEST(fastmath_box_muller_equals_glibc_expression) {
    enum { N = 1 << 23 };
    uint64_t *w = malloc(2 * (size_t)N * sizeof *w);
    em_rng_seed(17);
    for (int64_t i = 0; i < 2 * (int64_t)N; i++) w[i] = em_rng_u64();
    float params[4][2] = {{0.0f, 1.0f}, {3.0f, 0.02f}, {-1e-3f, 1e-3f}, {0.5f, 0.0f}};
    /* every vector loop this CPU runs (AVX-512 and AVX2, or AVX2 alone); the scalar
     * loop is the reference expression itself */
    int top = em_fastmath_level();
    if (top < EM_FASTMATH_AVX512) printf("    (no AVX-512 F+DQ on this CPU: its loop is not tested here)\n");
    for (int level = top; level >= EM_FASTMATH_AVX2 || level == top; level--) {
        em_fastmath_cap_level(level);
        CHECK(em_fastmath_level() == level);
        bool same = true;
        int64_t fallbacks = 0;
        for (int k = 0; k < 4; k++) fallbacks += bm_check(w, N, params[k][0], params[k][1], &same);
        CHECK(same);
        /* recomputing is rare (the bound is ~1e-14 of a value against a float ulp of ~6e-8) */
        if (level >= EM_FASTMATH_AVX2) CHECK(fallbacks < N / 1000);
        if (getenv("EMBER_TEST_VERBOSE"))
            printf("    level %d: %lld of %d values recomputed\n", level, (long long)fallbacks, 4 * N);
    }
    em_fastmath_cap_level(EM_FASTMATH_AVX512);
    free(w);
}

/* the 8-lane form (lane j's words interleaved at iw[8 t + j], values to out[j
 * stride + i]) against the reference on 2^23 pairs and on the awkward words of
 * the next test at every lane, at every level */
static bool lanes_check(const uint64_t *iw, int64_t n, float mean, float std) {
    int64_t stride = n + 3; /* lanes' runs apart, as a fill's sub-stretches */
    float *out = malloc((size_t)(8 * stride) * sizeof *out);
    em_box_muller_lanes8(n, out, stride, iw, mean, std);
    bool same = true;
    for (int64_t i = 0; i < n; i++)
        for (int l = 0; l < 8; l++) {
            float want = bm_reference(iw[16 * i + l], iw[16 * i + 8 + l], mean, std);
            if (memcmp(&want, &out[l * stride + i], sizeof want) != 0) {
                if (same) printf("    lane %d value %lld: %.9g, expected %.9g\n", l, (long long)i,
                                 out[l * stride + i], want);
                same = false;
            }
        }
    free(out);
    return same;
}

TEST(fastmath_box_muller_lanes_equal_glibc_expression) {
    enum { N = 1 << 20 }; /* per lane: 2^23 values in all */
    uint64_t *w = malloc(16 * (size_t)N * sizeof *w);
    em_rng_seed(23);
    for (int64_t i = 0; i < 16 * (int64_t)N; i++) w[i] = em_rng_u64();
    /* the awkward pairs (u1 = 1, 2^-53, ...; u2 beside the zeros of cos) in every lane */
    uint64_t top = ((uint64_t)1 << 53) - 1, quarter = (uint64_t)1 << 51;
    uint64_t u1w[] = {0, 1ull << 11, top << 11, (top - 1) << 11};
    uint64_t u2w[] = {0, (quarter - 1) << 11, quarter << 11, (2 * quarter + 1) << 11, (3 * quarter) << 11, top << 11};
    int64_t i = 0;
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 6; b++, i++)
            for (int l = 0; l < 8; l++) {
                w[16 * i + l] = u1w[(a + l) % 4];
                w[16 * i + 8 + l] = u2w[(b + l) % 6];
            }
    for (int level = em_fastmath_level(); level >= EM_FASTMATH_SCALAR; level--) {
        em_fastmath_cap_level(level);
        int64_t before = em_box_muller_fallbacks();
        /* the scalar level is the reference expression itself: a short run suffices */
        int64_t n = level == EM_FASTMATH_SCALAR ? 64 : N;
        CHECK(lanes_check(w, n, 0.0f, 1.0f));
        CHECK(lanes_check(w, n < 1000 ? n : 1000, 3.0f, 0.02f));
        if (level == EM_FASTMATH_AVX512) CHECK(em_box_muller_fallbacks() - before < N / 1000);
    }
    em_fastmath_cap_level(EM_FASTMATH_AVX512);
    free(w);
}

/* the awkward words: u1 = 1 (log 0), the smallest u1 (2^-53), u2 beside 0, 1/4, 1/2,
 * 3/4 (theta beside the zeros of cos and its extremes), at every lane position */
TEST(fastmath_box_muller_edges) {
    uint64_t top = ((uint64_t)1 << 53) - 1;
    uint64_t u1w[] = {0, 1ull << 11, 2ull << 11, top << 11, (top - 1) << 11, 0x123456789abcdefull};
    uint64_t quarter = (uint64_t)1 << 51; /* u2 = 1/4 as the 53-bit integer */
    uint64_t u2i[] = {0, 1, quarter - 1, quarter, quarter + 1, 2 * quarter - 1, 2 * quarter, 2 * quarter + 1,
                      3 * quarter - 1, 3 * quarter, 3 * quarter + 1, top};
    enum { NU1 = 6, NU2 = 12, N = NU1 * NU2 };
    uint64_t w[2 * N];
    int64_t i = 0;
    for (int a = 0; a < NU1; a++)
        for (int b = 0; b < NU2; b++, i++) {
            w[2 * i] = u1w[a];
            w[2 * i + 1] = u2i[b] << 11 | 0x7ff; /* the low bits are dropped */
        }
    /* at every level (the scalar one too), every lane position of both vector widths */
    for (int level = em_fastmath_level(); level >= EM_FASTMATH_SCALAR; level--) {
        em_fastmath_cap_level(level);
        bool same = true;
        for (int off = 0; off < 8; off++) {
            bm_check(w + 2 * off, N - off, 0.0f, 1.0f, &same);
            bm_check(w + 2 * off, N - off, 1.0f, 2.0f, &same);
        }
        CHECK(same);
    }
    em_fastmath_cap_level(EM_FASTMATH_AVX512);
}
