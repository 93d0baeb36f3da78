/* test_conv.c — the layer kernels (em_nn.h) against naive direct loops:
 * conv2d, conv_transpose2d and their gradients, conv2d_weight, max/avg
 * pooling, nearest upsampling, batch norm, softmax / log_softmax — on odd
 * sizes, strides 1-3, paddings 0-2, dilation 2, groups 2, batch 1, kernel 1,
 * non-contiguous inputs and a batch split into chunks. */
#include <math.h>
#include <stdlib.h>

#include "em_autograd.h"
#include "em_nn.h"
#include "em_rng.h"
#include "test.h"

/* ---- helpers --------------------------------------------------------- */

/* The elements of t in row-major order (malloc'd). */
static float *values(const em_tensor *t) {
    float *v = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    em_tensor_read(t, v);
    return v;
}

/* Max |a - b| / (1 + |b|) over n elements. */
static double max_rel_diff(const float *a, const float *b, int64_t n) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / (1.0 + fabs((double)b[i]));
        if (!(d <= worst)) worst = d; /* NaN counts as worst */
    }
    return worst;
}

static double max_rel_diff_d(const float *a, const double *b, int64_t n) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / (1.0 + fabs(b[i]));
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

/* The same against a double-precision reference. */
#define CHECK_VALUES_D(t, ref, n, tol)                                      \
    do {                                                                    \
        CHECK((t) != NULL);                                                 \
        if (t) {                                                            \
            CHECK((t)->numel == (n));                                       \
            float *v_ = values(t);                                          \
            CHECK_NEAR(max_rel_diff_d(v_, (ref), (n)), 0.0, (tol));         \
            free(v_);                                                       \
        }                                                                   \
    } while (0)

/* t (any layout) equals ref (row-major, n elements) within tol. */
#define CHECK_VALUES(t, ref, n, tol)                                        \
    do {                                                                    \
        CHECK((t) != NULL);                                                 \
        if (t) {                                                            \
            CHECK((t)->numel == (n));                                       \
            float *v_ = values(t);                                          \
            CHECK_NEAR(max_rel_diff(v_, (ref), (n)), 0.0, (tol));           \
            free(v_);                                                       \
        }                                                                   \
    } while (0)

static em_tensor *randn4(int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t s[4] = {a, b, c, d};
    return em_randn(4, s);
}

/* A [a x b x c x d] tensor that is a transposed (non-contiguous) view. */
static em_tensor *randn4_strided(int64_t a, int64_t b, int64_t c, int64_t d) {
    em_tensor *base = randn4(a, b, d, c);
    em_tensor *t = em_transpose(base, 2, 3);
    em_tensor_release(base);
    return t;
}

static em_conv2d_args conv_args(int64_t s, int64_t p, int64_t d, int64_t g) {
    em_conv2d_args a = em_conv2d_defaults();
    a.stride[0] = a.stride[1] = s;
    a.padding[0] = a.padding[1] = p;
    a.dilation[0] = a.dilation[1] = d;
    a.groups = g;
    return a;
}

/* ---- naive references ------------------------------------------------ */

typedef struct {
    int64_t N, C, H, W, O, kh, kw, OH, OW;
} conv_dims;

/* y = conv2d(x, w) + b, and if gy is given the gradients of sum(y gy):
 * gx, gw, gb (all zeroed here), by the definition's loop. */
static void naive_conv2d(const float *x, const float *w, const float *b, float *y,
                         const float *gy, double *gx, double *gw, double *gb, conv_dims d,
                         const em_conv2d_args *a) {
    const int64_t G = a->groups, Cg = d.C / G, Og = d.O / G;
    if (gy) {
        for (int64_t i = 0; i < d.N * d.C * d.H * d.W; i++) gx[i] = 0;
        for (int64_t i = 0; i < d.O * Cg * d.kh * d.kw; i++) gw[i] = 0;
        for (int64_t i = 0; i < d.O; i++) gb[i] = 0;
    }
    for (int64_t n = 0; n < d.N; n++)
        for (int64_t o = 0; o < d.O; o++)
            for (int64_t oh = 0; oh < d.OH; oh++)
                for (int64_t ow = 0; ow < d.OW; ow++) {
                    const int64_t yi = ((n * d.O + o) * d.OH + oh) * d.OW + ow;
                    double s = b ? b[o] : 0;
                    for (int64_t c = 0; c < Cg; c++) {
                        const int64_t ci = (o / Og) * Cg + c;
                        for (int64_t i = 0; i < d.kh; i++)
                            for (int64_t j = 0; j < d.kw; j++) {
                                int64_t ih = oh * a->stride[0] - a->padding[0] + i * a->dilation[0];
                                int64_t iw = ow * a->stride[1] - a->padding[1] + j * a->dilation[1];
                                if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) continue;
                                const int64_t xi = ((n * d.C + ci) * d.H + ih) * d.W + iw;
                                const int64_t wi = ((o * Cg + c) * d.kh + i) * d.kw + j;
                                s += (double)x[xi] * w[wi];
                                if (gy) {
                                    gx[xi] += (double)gy[yi] * w[wi];
                                    gw[wi] += (double)gy[yi] * x[xi];
                                }
                            }
                    }
                    if (y) y[yi] = (float)s;
                    if (gy && gb) gb[o] += gy[yi];
                }
}

/* y = conv_transpose2d(x, w) + b with x [N x C x H x W], w [C x O/G x kh x kw],
 * y [N x O x OH x OW], and the gradients of sum(y gy) when gy is given. */
static void naive_convt(const float *x, const float *w, const float *b, float *y,
                        const float *gy, double *gx, double *gw, conv_dims d,
                        const em_conv2d_args *a) {
    const int64_t G = a->groups, Cg = d.C / G, Og = d.O / G;
    for (int64_t i = 0; i < d.N * d.O * d.OH * d.OW; i++) y[i] = 0;
    if (gy) {
        for (int64_t i = 0; i < d.N * d.C * d.H * d.W; i++) gx[i] = 0;
        for (int64_t i = 0; i < d.C * Og * d.kh * d.kw; i++) gw[i] = 0;
    }
    for (int64_t n = 0; n < d.N; n++)
        for (int64_t c = 0; c < d.C; c++)
            for (int64_t h = 0; h < d.H; h++)
                for (int64_t v = 0; v < d.W; v++) {
                    const int64_t xi = ((n * d.C + c) * d.H + h) * d.W + v;
                    for (int64_t ol = 0; ol < Og; ol++) {
                        const int64_t o = (c / Cg) * Og + ol;
                        for (int64_t i = 0; i < d.kh; i++)
                            for (int64_t j = 0; j < d.kw; j++) {
                                int64_t oh = h * a->stride[0] - a->padding[0] + i * a->dilation[0];
                                int64_t ow = v * a->stride[1] - a->padding[1] + j * a->dilation[1];
                                if (oh < 0 || oh >= d.OH || ow < 0 || ow >= d.OW) continue;
                                const int64_t yi = ((n * d.O + o) * d.OH + oh) * d.OW + ow;
                                const int64_t wi = ((c * Og + ol) * d.kh + i) * d.kw + j;
                                y[yi] += x[xi] * w[wi];
                                if (gy) {
                                    gx[xi] += (double)gy[yi] * w[wi];
                                    gw[wi] += (double)gy[yi] * x[xi];
                                }
                            }
                    }
                }
    if (b)
        for (int64_t n = 0; n < d.N; n++)
            for (int64_t o = 0; o < d.O; o++)
                for (int64_t p = 0; p < d.OH * d.OW; p++) y[(n * d.O + o) * d.OH * d.OW + p] += b[o];
}

/* ---- conv2d ---------------------------------------------------------- */

/* Runs conv2d on one configuration and compares output and all three
 * gradients (through em_backward) with the naive loop. */
static void check_conv2d(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t kh,
                         int64_t kw, em_conv2d_args a, bool strided_input, bool with_bias) {
    em_rng_seed((uint64_t)(N * 131 + C * 17 + H * 7 + W + O * 3 + kh + a.stride[0]));
    em_tensor *x = strided_input ? randn4_strided(N, C, H, W) : randn4(N, C, H, W);
    em_tensor *w = randn4(O, C / a.groups, kh, kw);
    int64_t osz = O;
    em_tensor *b = with_bias ? em_randn(1, &osz) : NULL;
    em_set_requires_grad(x, true);
    em_set_requires_grad(w, true);
    if (b) em_set_requires_grad(b, true);
    em_tensor *y = em_conv2d(x, w, b, &a);
    CHECK(y != NULL);
    if (!y) {
        printf("    %s\n", em_error_message());
        em_tensor_release(x);
        em_tensor_release(w);
        em_tensor_release(b);
        return;
    }
    conv_dims d = {N, C, H, W, O, kh, kw, y->shape[2], y->shape[3]};
    CHECK(y->shape[0] == N && y->shape[1] == O);
    CHECK(d.OH == (H + 2 * a.padding[0] - a.dilation[0] * (kh - 1) - 1) / a.stride[0] + 1);
    em_tensor *gy = em_randn(4, y->shape);
    float *xv = values(x), *wv = values(w), *bv = b ? values(b) : NULL, *gyv = values(gy);
    float *ref = malloc((size_t)y->numel * sizeof(float));
    double *gx = malloc((size_t)x->numel * sizeof(double)), *gw = malloc((size_t)w->numel * sizeof(double));
    double *gb = malloc((size_t)O * sizeof(double));
    naive_conv2d(xv, wv, bv, ref, gyv, gx, gw, gb, d, &a);
    CHECK_VALUES(y, ref, y->numel, 1e-4);
    CHECK(em_backward(y, gy, false, false) == EM_OK);
    CHECK_VALUES_D(x->grad, gx, x->numel, 1e-4);
    CHECK_VALUES_D(w->grad, gw, w->numel, 1e-4);
    if (b) CHECK_VALUES_D(b->grad, gb, O, 1e-4);
    free(xv); free(wv); free(bv); free(gyv); free(ref); free(gx); free(gw); free(gb);
    em_tensor_release(gy);
    em_tensor_release(y);
    em_tensor_release(x);
    em_tensor_release(w);
    em_tensor_release(b);
}

TEST(conv2d_matches_naive_loop) {
    check_conv2d(2, 3, 7, 9, 4, 3, 3, conv_args(1, 1, 1, 1), false, true);
    check_conv2d(1, 3, 7, 9, 4, 3, 3, conv_args(1, 1, 1, 1), false, true);  /* batch 1 */
    check_conv2d(3, 2, 8, 8, 5, 1, 1, conv_args(1, 0, 1, 1), false, true);  /* kernel 1 */
    check_conv2d(2, 3, 11, 10, 2, 3, 2, conv_args(2, 0, 1, 1), false, false);
    check_conv2d(2, 2, 13, 9, 3, 4, 4, conv_args(3, 2, 1, 1), false, true); /* stride 3 pad 2 */
    check_conv2d(2, 3, 9, 11, 2, 3, 3, conv_args(1, 2, 2, 1), false, true); /* dilation 2 */
    check_conv2d(2, 4, 7, 7, 6, 3, 3, conv_args(1, 1, 1, 2), false, true); /* groups 2 */
    check_conv2d(2, 4, 9, 8, 4, 3, 3, conv_args(2, 1, 2, 2), true, true);  /* all + strided */
    check_conv2d(2, 3, 28, 28, 4, 4, 4, conv_args(2, 1, 1, 1), false, true); /* DCGAN: k4 s2 p1 */
    check_conv2d(1, 2, 14, 15, 3, 4, 4, conv_args(2, 1, 1, 1), true, true);  /* odd width, strided */
    check_conv2d(3, 3, 5, 6, 2, 5, 6, conv_args(1, 0, 1, 1), true, false); /* kernel = image */
    /* planes of >= 256 pixels: multiplied one image at a time */
    check_conv2d(3, 4, 18, 17, 4, 3, 3, conv_args(1, 1, 1, 2), true, true);
    check_conv2d(2, 1, 28, 28, 3, 3, 3, conv_args(1, 1, 1, 1), false, true);
}

TEST(conv2d_asymmetric_geometry) {
    em_conv2d_args a = em_conv2d_defaults();
    a.stride[0] = 1; a.stride[1] = 2;
    a.padding[0] = 2; a.padding[1] = 0;
    a.dilation[0] = 1; a.dilation[1] = 2;
    check_conv2d(2, 2, 6, 13, 3, 3, 2, a, false, true);
}

/* A batch whose columns exceed the chunk budget: 3 images in chunks of 2 + 1. */
TEST(conv2d_batch_in_chunks) {
    check_conv2d(3, 1, 120, 120, 1, 21, 21, conv_args(1, 10, 1, 1), false, true);
}

/* ---- conv_transpose2d -------------------------------------------------- */

static void check_convt(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t k,
                        em_conv2d_args a, int64_t out_pad, bool strided_input) {
    a.output_padding[0] = a.output_padding[1] = out_pad;
    em_rng_seed((uint64_t)(N * 11 + C * 5 + H + O + k + a.stride[0] * 100 + out_pad));
    em_tensor *x = strided_input ? randn4_strided(N, C, H, W) : randn4(N, C, H, W);
    em_tensor *w = randn4(C, O / a.groups, k, k);
    int64_t osz = O;
    em_tensor *b = em_randn(1, &osz);
    em_set_requires_grad(x, true);
    em_set_requires_grad(w, true);
    em_tensor *y = em_conv_transpose2d(x, w, b, &a);
    CHECK(y != NULL);
    if (!y) {
        printf("    %s\n", em_error_message());
        em_tensor_release(x);
        em_tensor_release(w);
        em_tensor_release(b);
        return;
    }
    conv_dims d = {N, C, H, W, O, k, k, y->shape[2], y->shape[3]};
    CHECK(d.OH == (H - 1) * a.stride[0] - 2 * a.padding[0] + a.dilation[0] * (k - 1) + out_pad + 1);
    em_tensor *gy = em_randn(4, y->shape);
    float *xv = values(x), *wv = values(w), *bv = values(b), *gyv = values(gy);
    float *ref = malloc((size_t)y->numel * sizeof(float));
    double *gx = malloc((size_t)x->numel * sizeof(double)), *gw = malloc((size_t)w->numel * sizeof(double));
    naive_convt(xv, wv, bv, ref, gyv, gx, gw, d, &a);
    CHECK_VALUES(y, ref, y->numel, 1e-4);
    CHECK(em_backward(y, gy, false, false) == EM_OK);
    CHECK_VALUES_D(x->grad, gx, x->numel, 1e-4);
    CHECK_VALUES_D(w->grad, gw, w->numel, 1e-4);
    free(xv); free(wv); free(bv); free(gyv); free(ref); free(gx); free(gw);
    em_tensor_release(gy);
    em_tensor_release(y);
    em_tensor_release(x);
    em_tensor_release(w);
    em_tensor_release(b);
}

TEST(conv_transpose2d_matches_naive_loop) {
    check_convt(2, 3, 5, 6, 4, 3, conv_args(1, 0, 1, 1), 0, false);
    check_convt(1, 3, 5, 6, 4, 3, conv_args(1, 1, 1, 1), 0, false);  /* batch 1 */
    check_convt(2, 4, 4, 4, 3, 4, conv_args(2, 1, 1, 1), 0, false);  /* the DCGAN layer */
    check_convt(2, 4, 4, 5, 3, 4, conv_args(2, 1, 1, 1), 1, false);  /* output_padding */
    check_convt(2, 2, 3, 4, 2, 3, conv_args(3, 2, 1, 1), 2, false);  /* stride 3 pad 2 */
    check_convt(2, 3, 5, 5, 2, 3, conv_args(1, 1, 2, 1), 0, false);  /* dilation 2 */
    check_convt(2, 4, 5, 4, 6, 3, conv_args(2, 1, 1, 2), 1, true);   /* groups 2, strided */
    check_convt(3, 5, 1, 1, 4, 7, conv_args(1, 0, 1, 1), 0, false);  /* 1x1 -> 7x7 (G's first) */
    check_convt(2, 3, 6, 5, 2, 1, conv_args(1, 0, 1, 1), 0, false);  /* kernel 1 */
    check_convt(3, 4, 16, 17, 2, 3, conv_args(1, 0, 1, 2), 0, true); /* per-image planes */
}

TEST(conv_transpose2d_batch_in_chunks) {
    check_convt(3, 1, 120, 120, 1, 21, conv_args(1, 0, 1, 1), 0, false);
}

/* conv2d_weight on its own: the weight gradient of conv2d. */
TEST(conv2d_weight_matches_naive_loop) {
    em_rng_seed(7);
    em_conv2d_args a = conv_args(2, 1, 1, 2);
    em_tensor *x = randn4_strided(3, 4, 9, 7);
    int64_t kh = 3, kw = 2;
    conv_dims d = {3, 4, 9, 7, 6, kh, kw, (9 + 2 - 2 - 1) / 2 + 1, (7 + 2 - 1 - 1) / 2 + 1};
    em_tensor *gy = randn4(3, 6, d.OH, d.OW);
    em_tensor *dw = em_conv2d_weight(x, gy, kh, kw, &a);
    float *xv = values(x), *gyv = values(gy);
    float *w0 = calloc((size_t)(6 * 2 * kh * kw), sizeof(float));
    double *gx = malloc((size_t)x->numel * sizeof(double)), *gw = malloc((size_t)(6 * 2 * kh * kw) * sizeof(double));
    double gb[6];
    naive_conv2d(xv, w0, NULL, NULL, gyv, gx, gw, gb, d, &a);
    CHECK(dw && dw->ndim == 4 && dw->shape[0] == 6 && dw->shape[1] == 2 && dw->shape[2] == kh);
    CHECK_VALUES_D(dw, gw, 6 * 2 * kh * kw, 1e-4);
    free(xv); free(gyv); free(w0); free(gx); free(gw);
    em_tensor_release(dw);
    em_tensor_release(x);
    em_tensor_release(gy);
}

/* conv2d_weight: the same bits at 1, 2 and 3 threads, on planes large enough
 * for the per-image path, odd channel counts, groups, a 1x1 kernel (the images
 * themselves as columns), one output channel, and B3's first layer. (Splitting
 * the per-image sum by rows of the gradient among the threads failed this:
 * OpenBLAS's result for a row depends on the matrix's row count.) */
TEST(conv2d_weight_same_bits_at_any_thread_count) {
    struct { int64_t N, C, H, W, O, k, groups; } cases[] = {
        {5, 1, 28, 28, 32, 3, 1}, {3, 4, 17, 19, 7, 3, 1}, {4, 6, 16, 16, 10, 2, 2},
        {2, 3, 20, 16, 1, 3, 1}, {6, 2, 16, 17, 3, 1, 1},
    };
    int before = em_get_num_threads();
    bool same = true;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        em_rng_seed(30 + (uint64_t)c);
        em_conv2d_args a = conv_args(1, cases[c].k / 2, 1, cases[c].groups);
        em_tensor *x = randn4(cases[c].N, cases[c].C, cases[c].H, cases[c].W);
        int64_t OH = cases[c].H + 2 * (cases[c].k / 2) - cases[c].k + 1;
        int64_t OW = cases[c].W + 2 * (cases[c].k / 2) - cases[c].k + 1;
        em_tensor *gy = randn4(cases[c].N, cases[c].O, OH, OW);
        em_tensor *ref = NULL;
        for (int threads = 1; threads <= 3; threads++) {
            em_set_num_threads(threads);
            em_tensor *dw = em_conv2d_weight(x, gy, cases[c].k, cases[c].k, &a);
            CHECK(dw != NULL);
            if (!ref) {
                ref = dw;
                continue;
            }
            if (dw && memcmp(em_tensor_data(dw), em_tensor_data(ref), (size_t)ref->numel * sizeof(float))) {
                if (same) printf("    case %zu: %d threads differ from 1\n", c, threads);
                same = false;
            }
            em_tensor_release(dw);
        }
        em_tensor_release(ref);
        em_tensor_release(x);
        em_tensor_release(gy);
    }
    em_set_num_threads(before);
    CHECK(same);
}

TEST(conv_bad_arguments) {
    em_rng_seed(1);
    em_conv2d_args a = em_conv2d_defaults();
    int64_t s3[3] = {2, 3, 8};
    em_tensor *x3 = em_randn(3, s3);
    em_tensor *x = randn4(2, 3, 8, 8), *w = randn4(4, 3, 3, 3), *w2 = randn4(4, 2, 3, 3);
    int64_t five = 5;
    em_tensor *b5 = em_randn(1, &five);
    CHECK(!em_conv2d(x3, w, NULL, &a));
    CHECK_ERROR("conv2d: input [2 x 3 x 8] must be 4-D [N x C x H x W]");
    CHECK(!em_conv2d(x, w2, NULL, &a));
    CHECK_ERROR("input [2 x 3 x 8 x 8] has 3 channels, but weight [4 x 2 x 3 x 3] expects 2");
    CHECK(!em_conv2d(x, w, b5, &a));
    CHECK_ERROR("conv2d: bias [5] must be [4]");
    a.groups = 3;
    em_tensor *w1 = randn4(4, 1, 3, 3), *wt = randn4(3, 2, 3, 3);
    CHECK(!em_conv2d(x, w1, NULL, &a));
    CHECK_ERROR("out_channels 4 is not divisible by groups 3");
    a = em_conv2d_defaults();
    a.stride[0] = 0;
    CHECK(!em_conv2d(x, w, NULL, &a));
    CHECK_ERROR("conv2d: stride must be >= 1, got 0");
    a = em_conv2d_defaults();
    a.dilation[1] = 4;
    em_tensor *small = randn4(1, 3, 8, 8);
    CHECK(!em_conv2d(small, w, NULL, &a));
    CHECK_ERROR("padded to 8 x 8 is smaller than the kernel 3 x 3 (dilated: 3 x 9)");
    a = em_conv2d_defaults();
    a.stride[0] = a.stride[1] = 2;
    a.output_padding[0] = 2;
    CHECK(!em_conv_transpose2d(x, wt, NULL, &a));
    CHECK_ERROR("output_padding must be >= 0 and smaller than the stride 2, got 2");
    a.output_padding[0] = 0;
    CHECK(!em_conv_transpose2d(x, w, NULL, &a));
    CHECK_ERROR("conv_transpose2d: input [2 x 3 x 8 x 8] has 3 channels, but weight [4 x 3 x 3 x 3] expects 4");
    em_tensor_release(x3);
    em_tensor_release(x);
    em_tensor_release(w);
    em_tensor_release(w2);
    em_tensor_release(b5);
    em_tensor_release(small);
    em_tensor_release(w1);
    em_tensor_release(wt);
}

/* ---- pooling and upsampling ------------------------------------------ */

static em_pool2d_args pool_args(int64_t k, int64_t s, int64_t p, bool include_pad) {
    return (em_pool2d_args){{k, k}, {s, s}, {p, p}, include_pad};
}

/* Naive max/avg pool of x [planes x H x W]; argmax positions for max. */
static void naive_pool(const float *x, float *y, int64_t *arg, int64_t planes, int64_t H,
                       int64_t W, int64_t OH, int64_t OW, const em_pool2d_args *a, bool is_max) {
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                double sum = 0, best = -INFINITY;
                int64_t count = 0, where = -1;
                for (int64_t i = 0; i < a->kernel[0]; i++)
                    for (int64_t j = 0; j < a->kernel[1]; j++) {
                        int64_t h = oh * a->stride[0] - a->padding[0] + i;
                        int64_t w = ow * a->stride[1] - a->padding[1] + j;
                        if (h < 0 || h >= H || w < 0 || w >= W) continue;
                        float v = x[(p * H + h) * W + w];
                        sum += v;
                        count++;
                        if (v > best) {
                            best = v;
                            where = h * W + w;
                        }
                    }
                int64_t o = (p * OH + oh) * OW + ow;
                if (is_max) {
                    y[o] = (float)best;
                    arg[o] = where;
                } else {
                    y[o] = (float)(sum / (a->count_include_pad ? a->kernel[0] * a->kernel[1] : count));
                }
            }
}

static void check_pool(int64_t N, int64_t C, int64_t H, int64_t W, em_pool2d_args a, bool is_max,
                       bool strided) {
    em_rng_seed((uint64_t)(H * 31 + W + a.kernel[0] * 7 + a.stride[0] * 3 + a.padding[0]));
    em_tensor *x = strided ? randn4_strided(N, C, H, W) : randn4(N, C, H, W);
    if (!strided) em_set_requires_grad(x, true);
    em_tensor *y = is_max ? em_max_pool2d(x, &a) : em_avg_pool2d(x, &a);
    CHECK(y != NULL);
    if (!y) {
        printf("    %s\n", em_error_message());
        em_tensor_release(x);
        return;
    }
    const int64_t OH = y->shape[2], OW = y->shape[3], planes = N * C;
    CHECK(OH == (H + 2 * a.padding[0] - a.kernel[0]) / a.stride[0] + 1);
    float *xv = values(x), *ref = malloc((size_t)y->numel * sizeof(float));
    int64_t *arg = malloc((size_t)y->numel * sizeof(int64_t));
    naive_pool(xv, ref, arg, planes, H, W, OH, OW, &a, is_max);
    CHECK_VALUES(y, ref, y->numel, 1e-5);
    if (!strided) { /* gradient: scatter to the argmax, or spread over the window */
        em_tensor *gy = em_randn(4, y->shape);
        float *gyv = values(gy), *gx = calloc((size_t)x->numel, sizeof(float));
        for (int64_t p = 0; p < planes; p++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    int64_t o = (p * OH + oh) * OW + ow;
                    if (is_max) {
                        gx[p * H * W + arg[o]] += gyv[o];
                        continue;
                    }
                    int64_t count = 0;
                    for (int pass = 0; pass < 2; pass++)
                        for (int64_t i = 0; i < a.kernel[0]; i++)
                            for (int64_t j = 0; j < a.kernel[1]; j++) {
                                int64_t h = oh * a.stride[0] - a.padding[0] + i;
                                int64_t w = ow * a.stride[1] - a.padding[1] + j;
                                if (h < 0 || h >= H || w < 0 || w >= W) continue;
                                if (pass == 0) count++;
                                else gx[(p * H + h) * W + w] +=
                                         gyv[o] / (a.count_include_pad ? a.kernel[0] * a.kernel[1] : count);
                            }
                }
        CHECK(em_backward(y, gy, false, false) == EM_OK);
        CHECK_VALUES(x->grad, gx, x->numel, 1e-5);
        free(gyv);
        free(gx);
        em_tensor_release(gy);
    }
    free(xv);
    free(ref);
    free(arg);
    em_tensor_release(y);
    em_tensor_release(x);
}

TEST(max_pool2d_matches_naive_loop) {
    check_pool(2, 3, 8, 8, pool_args(2, 2, 0, true), true, false);
    check_pool(1, 2, 7, 9, pool_args(3, 2, 1, true), true, false);
    check_pool(2, 1, 9, 7, pool_args(3, 3, 1, true), true, true);
    check_pool(2, 2, 5, 6, pool_args(1, 1, 0, true), true, false);
    check_pool(1, 1, 10, 11, pool_args(5, 1, 2, true), true, false);
}

TEST(avg_pool2d_matches_naive_loop) {
    check_pool(2, 3, 8, 8, pool_args(2, 2, 0, true), false, false);
    check_pool(1, 2, 7, 9, pool_args(3, 2, 1, true), false, false);
    check_pool(1, 2, 7, 9, pool_args(3, 2, 1, false), false, false);
    check_pool(2, 1, 9, 7, pool_args(3, 3, 1, false), false, true);
    check_pool(1, 1, 10, 11, pool_args(4, 3, 2, true), false, false);
}

TEST(max_pool2d_nan_and_ties) {
    int64_t s[4] = {1, 1, 2, 2};
    float d[4] = {1, NAN, 3, 2};
    em_tensor *x = em_tensor_from_data(4, s, d);
    em_pool2d_args a = pool_args(2, 2, 0, true);
    em_tensor *y = em_max_pool2d(x, &a);
    CHECK(y && isnan(em_tensor_data(y)[0]));
    em_tensor_release(y);
    float e[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    em_tensor *z = em_tensor_from_data(4, s, e);
    y = em_max_pool2d(z, &a);
    CHECK(y && em_tensor_data(y)[0] == -INFINITY);
    em_tensor_release(y);
    em_tensor_release(x);
    em_tensor_release(z);
}

TEST(pool_bad_arguments) {
    em_tensor *x = randn4(1, 1, 4, 4);
    em_pool2d_args a = pool_args(2, 2, 2, true);
    CHECK(!em_max_pool2d(x, &a));
    CHECK_ERROR("max_pool2d: padding must be between 0 and half the kernel size 2, got 2");
    a = pool_args(6, 1, 0, true);
    CHECK(!em_avg_pool2d(x, &a));
    CHECK_ERROR("avg_pool2d: input [1 x 1 x 4 x 4] padded to 4 x 4 is smaller than the kernel 6 x 6");
    CHECK(!em_upsample_nearest2d(x, 0, 2));
    CHECK_ERROR("upsample_nearest2d: scale factors must be integers >= 1, got 0 x 2");
    em_tensor_release(x);
}

TEST(upsample_nearest2d_matches_naive_loop) {
    em_rng_seed(3);
    em_tensor *x = randn4(2, 3, 3, 5);
    em_set_requires_grad(x, true);
    em_tensor *y = em_upsample_nearest2d(x, 2, 3);
    CHECK(y && y->shape[2] == 6 && y->shape[3] == 15);
    float *xv = values(x), ref[2 * 3 * 6 * 15], gx[2 * 3 * 3 * 5] = {0};
    em_tensor *gy = em_randn(4, y->shape);
    float *gyv = values(gy);
    for (int p = 0; p < 6; p++)
        for (int h = 0; h < 6; h++)
            for (int w = 0; w < 15; w++) {
                ref[(p * 6 + h) * 15 + w] = xv[(p * 3 + h / 2) * 5 + w / 3];
                gx[(p * 3 + h / 2) * 5 + w / 3] += gyv[(p * 6 + h) * 15 + w];
            }
    CHECK_VALUES(y, ref, 2 * 3 * 6 * 15, 1e-6);
    CHECK(em_backward(y, gy, false, false) == EM_OK);
    CHECK_VALUES(x->grad, gx, 2 * 3 * 3 * 5, 1e-5);
    free(xv);
    free(gyv);
    em_tensor_release(gy);
    em_tensor_release(y);
    em_tensor_release(x);
}

/* ---- batch norm ------------------------------------------------------ */

/* Naive batch norm of x [N x C x S] with batch statistics (or given ones). */
static void naive_bn(const float *x, float *y, int64_t N, int64_t C, int64_t S, const float *w,
                     const float *b, const float *mean_in, const float *var_in, float eps,
                     double *mean_out, double *var_out) {
    for (int64_t c = 0; c < C; c++) {
        double m = 0, v = 0;
        if (mean_in) {
            m = mean_in[c];
            v = var_in[c];
        } else {
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) m += x[(n * C + c) * S + s];
            m /= (double)(N * S);
            for (int64_t n = 0; n < N; n++)
                for (int64_t s = 0; s < S; s++) {
                    double d = x[(n * C + c) * S + s] - m;
                    v += d * d;
                }
            v /= (double)(N * S);
        }
        if (mean_out) {
            mean_out[c] = m;
            var_out[c] = v;
        }
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                int64_t i = (n * C + c) * S + s;
                y[i] = (float)((x[i] - m) / sqrt(v + eps) * w[c] + b[c]);
            }
    }
}

static void check_batch_norm(int ndim, const int64_t *shape, bool strided) {
    em_rng_seed(11);
    int64_t C = shape[1], S = 1;
    for (int i = 2; i < ndim; i++) S *= shape[i];
    em_tensor *x;
    if (strided) { /* dims 0 and 1 swapped in memory */
        int64_t sw[EM_MAX_DIMS];
        for (int i = 0; i < ndim; i++) sw[i] = shape[i];
        sw[0] = shape[1];
        sw[1] = shape[0];
        em_tensor *base = em_randn(ndim, sw);
        x = em_transpose(base, 0, 1);
        em_tensor_release(base);
    } else {
        x = em_randn(ndim, shape);
    }
    em_tensor *w = em_randn(1, &C), *b = em_randn(1, &C);
    em_tensor *rm = em_randn(1, &C), *rv = em_rand(1, &C);
    float *xv = values(x), *wv = values(w), *bv = values(b), *rm0 = values(rm), *rv0 = values(rv);
    float *ref = malloc((size_t)x->numel * sizeof(float));
    double *bm = malloc((size_t)C * sizeof(double)), *bvar = malloc((size_t)C * sizeof(double));
    /* training: batch statistics, running stats updated with the unbiased var */
    em_tensor *y = em_batch_norm(x, rm, rv, w, b, true, 0.1f, 1e-5f);
    naive_bn(xv, ref, shape[0], C, S, wv, bv, NULL, NULL, 1e-5f, bm, bvar);
    CHECK_VALUES(y, ref, x->numel, 1e-4);
    int64_t M = shape[0] * S;
    float *rm1 = values(rm), *rv1 = values(rv);
    for (int64_t c = 0; c < C; c++) {
        CHECK_NEAR(rm1[c], 0.9 * rm0[c] + 0.1 * bm[c], 1e-5);
        CHECK_NEAR(rv1[c], 0.9 * rv0[c] + 0.1 * bvar[c] * M / (M - 1), 1e-5);
    }
    em_tensor_release(y);
    /* eval: running statistics */
    y = em_batch_norm(x, rm, rv, w, b, false, 0.1f, 1e-5f);
    naive_bn(xv, ref, shape[0], C, S, wv, bv, rm1, rv1, 1e-5f, NULL, NULL);
    CHECK_VALUES(y, ref, x->numel, 1e-4);
    em_tensor_release(y);
    free(xv); free(wv); free(bv); free(rm0); free(rv0); free(rm1); free(rv1); free(ref);
    free(bm); free(bvar);
    em_tensor_release(x); em_tensor_release(w); em_tensor_release(b);
    em_tensor_release(rm); em_tensor_release(rv);
}

TEST(batch_norm_matches_naive_loop) {
    int64_t s2[2] = {7, 5}, s4[4] = {3, 4, 5, 3}, s3[3] = {2, 3, 9};
    check_batch_norm(2, s2, false);
    check_batch_norm(4, s4, false);
    check_batch_norm(4, s4, true);
    check_batch_norm(3, s3, false);
}

/* The fused backward (no graph) and the composed one (create_graph) agree. */
TEST(batch_norm_fused_and_composed_backward_agree) {
    em_rng_seed(5);
    int64_t s[4] = {4, 3, 5, 2}, C = 3;
    for (int training = 0; training < 2; training++) {
        em_tensor *x = em_randn(4, s), *w = em_randn(1, &C), *b = em_randn(1, &C);
        em_tensor *rm = em_randn(1, &C), *rv = em_rand(1, &C);
        em_set_requires_grad(x, true);
        em_set_requires_grad(w, true);
        em_set_requires_grad(b, true);
        em_tensor *gy = em_randn(4, s);
        em_tensor *grads[2][3];
        for (int composed = 0; composed < 2; composed++) {
            em_tensor *y = em_batch_norm(x, rm, rv, w, b, training, 0.0f, 1e-5f);
            em_tensor *in[3] = {x, w, b};
            CHECK(em_grad(y, gy, 3, in, grads[composed], false, composed) == EM_OK);
            em_tensor_release(y);
        }
        for (int k = 0; k < 3; k++) {
            float *ref = values(grads[0][k]);
            CHECK_VALUES(grads[1][k], ref, grads[0][k]->numel, 1e-4);
            free(ref);
            em_tensor_release(grads[0][k]);
            em_tensor_release(grads[1][k]);
        }
        em_tensor_release(x); em_tensor_release(w); em_tensor_release(b);
        em_tensor_release(rm); em_tensor_release(rv); em_tensor_release(gy);
    }
}

TEST(batch_norm_bad_arguments) {
    int64_t s[2] = {1, 3}, c4 = 4, s1 = 3;
    em_tensor *x = em_randn(2, s), *w = em_randn(1, &c4), *v = em_randn(1, &s1);
    CHECK(!em_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f));
    CHECK_ERROR("batch_norm: expected more than 1 value per channel");
    CHECK(!em_batch_norm(x, NULL, NULL, w, NULL, false, 0.1f, 1e-5f));
    CHECK_ERROR("batch_norm: weight [4] must be [3] (one per channel of input [1 x 3])");
    CHECK(!em_batch_norm(x, v, NULL, NULL, NULL, false, 0.1f, 1e-5f));
    CHECK_ERROR("give both running_mean and running_var");
    CHECK(!em_batch_norm(v, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f));
    CHECK_ERROR("batch_norm: input [3] must be at least 2-D");
    em_tensor_release(x);
    em_tensor_release(w);
    em_tensor_release(v);
}

/* ---- softmax --------------------------------------------------------- */

static void check_softmax(int ndim, const int64_t *shape, int dim, bool strided, float shift) {
    em_rng_seed(9);
    em_tensor *x = em_randn(ndim, shape);
    if (strided) {
        em_tensor *t = em_transpose(x, 0, ndim - 1);
        em_tensor_release(x);
        x = t;
    }
    em_tensor *big = em_binary_scalar(EM_BIN_ADD, x, shift); /* large logits stay finite */
    int d = dim < 0 ? dim + ndim : dim;
    float *xv = values(big);
    float *ref_s = malloc((size_t)x->numel * sizeof(float)), *ref_l = malloc((size_t)x->numel * sizeof(float));
    int64_t outer = 1, inner = 1, n = big->shape[d];
    for (int i = 0; i < d; i++) outer *= big->shape[i];
    for (int i = d + 1; i < ndim; i++) inner *= big->shape[i];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double m = -INFINITY, sum = 0;
            for (int64_t k = 0; k < n; k++) m = fmax(m, xv[(o * n + k) * inner + i]);
            for (int64_t k = 0; k < n; k++) sum += exp(xv[(o * n + k) * inner + i] - m);
            for (int64_t k = 0; k < n; k++) {
                int64_t j = (o * n + k) * inner + i;
                ref_s[j] = (float)(exp(xv[j] - m) / sum);
                ref_l[j] = (float)(xv[j] - m - log(sum));
            }
        }
    em_tensor *s = em_softmax(big, dim), *l = em_log_softmax(big, dim);
    CHECK_VALUES(s, ref_s, x->numel, 1e-5);
    CHECK_VALUES(l, ref_l, x->numel, 1e-5);
    free(xv); free(ref_s); free(ref_l);
    em_tensor_release(s); em_tensor_release(l); em_tensor_release(big); em_tensor_release(x);
}

TEST(softmax_matches_naive_loop) {
    int64_t s2[2] = {5, 7}, s3[3] = {3, 4, 5}, s1[1] = {1};
    check_softmax(2, s2, -1, false, 0.0f);
    check_softmax(2, s2, 0, false, 0.0f);
    check_softmax(3, s3, 1, false, 0.0f);
    check_softmax(3, s3, 1, true, 0.0f);
    check_softmax(3, s3, -1, true, 1000.0f);
    check_softmax(1, s1, 0, false, 0.0f);
    em_tensor *x = em_randn(2, s2);
    CHECK(!em_softmax(x, 2));
    CHECK_ERROR("softmax");
    em_tensor_release(x);
}

/* The 2x2 stride-2 fast path against the general kernel (em_pool_force_reference):
 * the same maxima and the same positions (seen through the gradient), with ties,
 * NaNs, -inf and odd sizes (the last row/column dropped), across the parallel
 * threshold. */
TEST(max_pool2d_2x2_fast_path_matches_reference) {
    const int64_t sizes[][4] = {{1, 1, 2, 2}, {2, 3, 7, 9}, {16, 32, 28, 28}, {3, 2, 5, 4}};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        const int64_t *sh = sizes[k];
        em_rng_seed(900 + k);
        em_tensor *base = randn4(sh[0], sh[1], sh[2], sh[3]);
        float *d = base->storage->data;
        for (int64_t i = 0; i < base->numel; i++) { /* ties, NaNs, infinities */
            if (i % 7 == 0) d[i] = 0.5f;
            if (i % 53 == 3) d[i] = NAN;
            if (i % 31 == 5) d[i] = -INFINITY;
            if (i % 97 == 11) d[i] = INFINITY;
        }
        em_pool2d_args a = pool_args(2, 2, 0, true);
        em_tensor *outs[2], *grads[2];
        for (int ref = 0; ref < 2; ref++) {
            em_pool_force_reference = ref;
            em_tensor *x = em_clone(base);
            em_tensor *xd = em_detach(x);
            em_set_requires_grad(xd, true);
            outs[ref] = em_max_pool2d(xd, &a);
            em_tensor *gy = em_tensor_full(4, outs[ref]->shape, 1.0f);
            CHECK(em_backward(outs[ref], gy, false, false) == EM_OK);
            grads[ref] = em_tensor_retain(xd->grad);
            em_tensor_release(gy);
            em_tensor_release(xd);
            em_tensor_release(x);
        }
        em_pool_force_reference = false;
        CHECK(outs[0]->numel == outs[1]->numel);
        CHECK(!memcmp(outs[0]->storage->data, outs[1]->storage->data, (size_t)outs[0]->numel * 4));
        CHECK(!memcmp(grads[0]->storage->data, grads[1]->storage->data, (size_t)grads[0]->numel * 4));
        for (int ref = 0; ref < 2; ref++) {
            em_tensor_release(outs[ref]);
            em_tensor_release(grads[ref]);
        }
        em_tensor_release(base);
    }
}
