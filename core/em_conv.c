/* em_conv.c — 2-D convolution, its transpose, and the weight gradient, all
 * three autograd ops whose backwards are each other (so every gradient is
 * differentiable again):
 *   conv2d(x, w)            backward: x <- conv_transpose2d(g, w), w <- conv2d_weight(x, g)
 *   conv_transpose2d(x, w)  backward: x <- conv2d(g, w),           w <- conv2d_weight(g, x)
 *   conv2d_weight(x, gy)    backward: x <- conv_transpose2d(gy, G), gy <- conv2d(x, G)
 *
 * The work is im2col / col2im (OpenMP) around one cblas_sgemm per group over a
 * chunk of the batch: the columns of nb images sit side by side, so the
 * product is [O x K] @ [K x nb*P] rather than nb thin products.
 *
 * A causal mask (em_conv_mask) keeps a raster-order prefix of the kernel's
 * taps: im2col lowers only those T taps, the weight is packed to
 * [O x C*T], so a 3x3 mask-B conv costs 5/9 of a plain one and a 7x7 mask-A
 * one 24/49. Centre entries cut by channel groups are zero in the packed
 * weight (and in the weight gradient). */
#include <cblas.h>
#include <string.h>

#include "em_autograd.h"
#include "em_nn.h"

/* Floats of im2col buffer per chunk of the batch (64 MB). */
#define COL_BUDGET ((int64_t)1 << 24)
/* Elements below which a loop stays on one thread. */
#define PAR_MIN 32768
/* Image planes (OH OW) at least this large are multiplied one image at a
 * time, straight from/into NCHW; smaller ones are batched into one wide
 * product (and transposed into place), which keeps sgemm efficient. */
#define PER_IMAGE_MIN 256

em_conv2d_args em_conv2d_defaults(void) {
    return (em_conv2d_args){{1, 1}, {0, 0}, {1, 1}, {0, 0}, 1, EM_MASK_NONE, 1};
}

/* ---- helpers --------------------------------------------------------- */

/* C[M x N] = A[M x K] B[K x N] + beta C, A/B optionally transposed. */
static void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (beta == 0.0f)
            for (int64_t i = 0; i < M; i++) memset(C + i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* A scratch buffer of n floats from the storage cache (held by *holder). */
static float *scratch(em_tensor **holder, int64_t n) {
    int64_t size = n > 0 ? n : 1;
    *holder = em_tensor_empty(1, &size);
    return *holder ? em_tensor_data(*holder) : NULL;
}

/* Size of a convolution's output along one dim; < 1 when the kernel does not fit. */
static int64_t conv_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
    int64_t span = in + 2 * p - d * (k - 1) - 1;
    return span < 0 ? 0 : span / s + 1;
}

/* Size of a transposed convolution's output along one dim. */
static int64_t convt_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, int64_t op) {
    return (in - 1) * s - 2 * p + d * (k - 1) + op + 1;
}

/* The output_padding that makes conv_transpose2d map `out` back to `in`. */
static int64_t fit_padding(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, int64_t d) {
    return in - convt_out(out, k, s, p, d, 0);
}

static int check_args(const char *fn, const em_conv2d_args *a, bool transposed) {
    for (int i = 0; i < 2; i++) {
        if (a->stride[i] < 1)
            return em_error_set("%s: stride must be >= 1, got %lld", fn, (long long)a->stride[i]);
        if (a->padding[i] < 0)
            return em_error_set("%s: padding must be >= 0, got %lld", fn, (long long)a->padding[i]);
        if (a->dilation[i] < 1)
            return em_error_set("%s: dilation must be >= 1, got %lld", fn,
                                (long long)a->dilation[i]);
        if (transposed && (a->output_padding[i] < 0 || a->output_padding[i] >= a->stride[i]))
            return em_error_set("%s: output_padding must be >= 0 and smaller than the stride "
                                "%lld, got %lld", fn, (long long)a->stride[i],
                                (long long)a->output_padding[i]);
    }
    if (a->groups < 1) return em_error_set("%s: groups must be >= 1, got %lld", fn, (long long)a->groups);
    if (a->mask < EM_MASK_NONE || a->mask > EM_MASK_V)
        return em_error_set("%s: unknown mask %d", fn, (int)a->mask);
    if (a->mask != EM_MASK_NONE && a->groups != 1)
        return em_error_set("%s: a masked convolution needs groups = 1, got %lld", fn,
                            (long long)a->groups);
    if (a->mask_groups < 0)
        return em_error_set("%s: mask_groups must be >= 1, got %lld", fn,
                            (long long)a->mask_groups);
    if (a->mask_groups > 1 && a->mask != EM_MASK_A && a->mask != EM_MASK_B)
        return em_error_set("%s: mask_groups %lld needs mask A or B", fn,
                            (long long)a->mask_groups);
    return EM_OK;
}

/* Channel groups must divide both channel counts of the weight [D0 x D1 x ..]. */
static int check_mask_channels(const char *fn, const em_conv2d_args *a, int64_t D0, int64_t D1) {
    if (a->mask_groups <= 1 || (D0 % a->mask_groups == 0 && D1 % a->mask_groups == 0))
        return EM_OK;
    return em_error_set("%s: mask_groups %lld must divide both channel counts %lld and %lld", fn,
                        (long long)a->mask_groups, (long long)D0, (long long)D1);
}

/* ---- masks ----------------------------------------------------------- */

static bool centre_by_groups(const em_conv2d_args *a) {
    return (a->mask == EM_MASK_A || a->mask == EM_MASK_B) && a->mask_groups > 1;
}

/* How many taps of a kh x kw kernel the mask keeps (a prefix in raster order). */
static int64_t kept_taps(int64_t kh, int64_t kw, const em_conv2d_args *a) {
    const int64_t ch = kh / 2, cw = kw / 2;
    switch (a->mask) {
    case EM_MASK_A: return ch * kw + cw + (centre_by_groups(a) ? 1 : 0);
    case EM_MASK_B: return ch * kw + cw + 1;
    case EM_MASK_V: return (ch + 1) * kw;
    default: return kh * kw;
    }
}

/* Whether weight entry [i][j] (dim 0 of size D0, dim 1 of size D1) keeps its
 * centre tap under channel groups: group(j) < group(i) for A, <= for B. */
static bool centre_kept(const em_conv2d_args *a, int64_t i, int64_t D0, int64_t j, int64_t D1) {
    const int64_t gi = i * a->mask_groups / D0, gj = j * a->mask_groups / D1;
    return a->mask == EM_MASK_A ? gj < gi : gj <= gi;
}

/* packed [D0 x D1 T] = the T kept taps of w [D0 x D1 x kk], centre entries cut
 * by channel groups set to 0. */
static void pack_taps(const float *w, int64_t D0, int64_t D1, int64_t kk, int64_t T,
                      const em_conv2d_args *a, float *packed) {
    const bool groups = centre_by_groups(a);
    for (int64_t i = 0; i < D0; i++)
        for (int64_t j = 0; j < D1; j++) {
            const float *src = w + (i * D1 + j) * kk;
            float *dst = packed + (i * D1 + j) * T;
            for (int64_t t = 0; t < T; t++) dst[t] = src[t];
            if (groups && T > 0 && !centre_kept(a, i, D0, j, D1)) dst[T - 1] = 0.0f;
        }
}

/* w [D0 x D1 x kk] = packed [D0 x D1 T] spread back; 0 at every tap not kept. */
static void unpack_taps(const float *packed, int64_t D0, int64_t D1, int64_t kk, int64_t T,
                        const em_conv2d_args *a, float *w) {
    const bool groups = centre_by_groups(a);
    for (int64_t i = 0; i < D0; i++)
        for (int64_t j = 0; j < D1; j++) {
            const float *src = packed + (i * D1 + j) * T;
            float *dst = w + (i * D1 + j) * kk;
            for (int64_t t = 0; t < T; t++) dst[t] = src[t];
            for (int64_t t = T; t < kk; t++) dst[t] = 0.0f;
            if (groups && T > 0 && !centre_kept(a, i, D0, j, D1)) dst[T - 1] = 0.0f;
        }
}

static int check_4d(const char *fn, const char *what, const em_tensor *t, const char *layout) {
    if (t->ndim == 4) return EM_OK;
    char s[EM_SHAPE_STR_MAX];
    return em_error_set("%s: %s %s must be 4-D [%s]", fn, what,
                        em_shape_str(s, sizeof s, t->ndim, t->shape), layout);
}

static int check_bias(const char *fn, const em_tensor *b, int64_t channels) {
    if (!b || (b->ndim == 1 && b->shape[0] == channels)) return EM_OK;
    char s[EM_SHAPE_STR_MAX];
    return em_error_set("%s: bias %s must be [%lld] (one per output channel)", fn,
                        em_shape_str(s, sizeof s, b->ndim, b->shape), (long long)channels);
}

/* The argument slots on a node: stride, padding, dilation, output_padding, groups. */
static void save_args(em_node *n, const em_conv2d_args *a) {
    for (int i = 0; i < 2; i++) {
        n->iarg[0 + i] = a->stride[i];
        n->iarg[2 + i] = a->padding[i];
        n->iarg[4 + i] = a->dilation[i];
        n->iarg[6 + i] = a->output_padding[i];
    }
    n->iarg[8] = a->groups;
    n->iarg[11] = a->mask; /* 9, 10: kh, kw (record) */
    n->iarg[12] = a->mask_groups;
}

static em_conv2d_args load_args(const em_node *n) {
    em_conv2d_args a;
    for (int i = 0; i < 2; i++) {
        a.stride[i] = n->iarg[0 + i];
        a.padding[i] = n->iarg[2 + i];
        a.dilation[i] = n->iarg[4 + i];
        a.output_padding[i] = n->iarg[6 + i];
    }
    a.groups = n->iarg[8];
    a.mask = (em_conv_mask)n->iarg[11];
    a.mask_groups = n->iarg[12];
    return a;
}

/* ---- kernels (contiguous data, no autograd) --------------------------- */

/* Image geometry of one convolution: input planes H x W, output OH x OW,
 * the first T taps of the kh x kw kernel in raster order (all kh kw unmasked). */
typedef struct {
    int64_t H, W, OH, OW, kh, kw;
    const em_conv2d_args *a;
    int64_t T;
} geometry;

static geometry make_geometry(int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t kh,
                              int64_t kw, const em_conv2d_args *a) {
    return (geometry){H, W, OH, OW, kh, kw, a, kept_taps(kh, kw, a)};
}

/* A 1x1 kernel at stride 1 without padding: im2col would copy the input as it is
 * (and col2im copy back), so the per-image products read and write the images. */
static bool pointwise(const geometry *g) {
    return g->kh == 1 && g->kw == 1 && g->T == 1 && g->a->stride[0] == 1 &&
           g->a->stride[1] == 1 && g->a->padding[0] == 0 && g->a->padding[1] == 0;
}

/* Whether the weight must be packed to its kept taps before the product. */
static bool packs(const geometry *g) {
    return g->T < g->kh * g->kw || centre_by_groups(g->a);
}

/* col[c T + t][n P + oh OW + ow] = x[n][c][oh sh - ph + i dh][ow sw - pw + j dw]
 * for the kept taps t = i kw + j < T (zero outside the image), for nb images
 * x [nb x C x H x W]; P = OH OW. One (n, c) plane at a time, so its pixels
 * stay in L1 for all taps. */
static void im2col(const float *x, int64_t nb, int64_t C, const geometry *g, float *col) {
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, T = g->T, kw = g->kw;
    const int64_t sh = g->a->stride[0], sw = g->a->stride[1], ph = g->a->padding[0],
                  pw = g->a->padding[1], dh = g->a->dilation[0], dw = g->a->dilation[1];
    const int64_t P = OH * OW, ld = nb * P;
#pragma omp parallel for schedule(static) if (nb * C * T * P > PAR_MIN)
    for (int64_t plane = 0; plane < nb * C; plane++) {
        const int64_t n = plane / C, c = plane % C;
        const float *src = x + plane * H * W;
        for (int64_t t = 0; t < T; t++) {
            const int64_t i = t / kw, j = t % kw;
            {
                float *dst = col + (c * T + t) * ld + n * P;
                const int64_t iw0 = j * dw - pw;
                /* the ow range whose iw = iw0 + ow sw lies inside [0, W) */
                int64_t lo = iw0 >= 0 ? 0 : (-iw0 + sw - 1) / sw;
                int64_t hi = W - iw0 <= 0 ? 0 : (W - iw0 + sw - 1) / sw;
                if (hi > OW) hi = OW;
                if (lo > hi) lo = hi;
                for (int64_t oh = 0; oh < OH; oh++) {
                    const int64_t ih = oh * sh - ph + i * dh;
                    float *d = dst + oh * OW;
                    if (ih < 0 || ih >= H) {
                        memset(d, 0, (size_t)OW * sizeof(float));
                        continue;
                    }
                    const float *s = src + ih * W;
                    for (int64_t ow = 0; ow < lo; ow++) d[ow] = 0.0f;
                    if (sw == 1) {
                        memcpy(d + lo, s + iw0 + lo, (size_t)(hi - lo) * sizeof(float));
                    } else {
                        for (int64_t ow = lo; ow < hi; ow++) d[ow] = s[iw0 + ow * sw];
                    }
                    for (int64_t ow = hi; ow < OW; ow++) d[ow] = 0.0f;
                }
            }
        }
    }
}

/* The adjoint of im2col: img[n][c] = sum of the col entries that im2col read
 * from each pixel (img [nb x C x H x W] is overwritten). */
static void col2im(const float *col, int64_t nb, int64_t C, const geometry *g, float *img) {
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, T = g->T, kw = g->kw;
    const int64_t sh = g->a->stride[0], sw = g->a->stride[1], ph = g->a->padding[0],
                  pw = g->a->padding[1], dh = g->a->dilation[0], dw = g->a->dilation[1];
    const int64_t P = OH * OW, ld = nb * P;
#pragma omp parallel for schedule(static) if (nb * C * T * P > PAR_MIN)
    for (int64_t plane = 0; plane < nb * C; plane++) {
        const int64_t n = plane / C, c = plane % C;
        float *dst = img + plane * H * W;
        memset(dst, 0, (size_t)(H * W) * sizeof(float));
        for (int64_t t = 0; t < T; t++) {
            const int64_t i = t / kw, j = t % kw;
            {
                const float *src = col + (c * T + t) * ld + n * P;
                const int64_t iw0 = j * dw - pw;
                int64_t lo = iw0 >= 0 ? 0 : (-iw0 + sw - 1) / sw;
                int64_t hi = W - iw0 <= 0 ? 0 : (W - iw0 + sw - 1) / sw;
                if (hi > OW) hi = OW;
                if (lo > hi) lo = hi;
                for (int64_t oh = 0; oh < OH; oh++) {
                    const int64_t ih = oh * sh - ph + i * dh;
                    if (ih < 0 || ih >= H) continue;
                    float *d = dst + ih * W;
                    const float *s = src + oh * OW;
                    if (sw == 1) {
                        for (int64_t ow = lo; ow < hi; ow++) d[iw0 + ow] += s[ow];
                    } else {
                        for (int64_t ow = lo; ow < hi; ow++) d[iw0 + ow * sw] += s[ow];
                    }
                }
            }
        }
    }
}

/* dst[c][n P + p] = src[n][c][p]: nb images side by side, one row per channel. */
static void batch_to_rows(const float *src, int64_t nb, int64_t C, int64_t P, float *dst) {
#pragma omp parallel for collapse(2) schedule(static) if (nb * C * P > PAR_MIN)
    for (int64_t n = 0; n < nb; n++)
        for (int64_t c = 0; c < C; c++)
            memcpy(dst + c * nb * P + n * P, src + (n * C + c) * P, (size_t)P * sizeof(float));
}

/* dst[n][c][p] = src[c][n P + p] + bias[c] (bias may be NULL). */
static void rows_to_batch(const float *src, int64_t nb, int64_t C, int64_t P, const float *bias,
                          float *dst) {
#pragma omp parallel for collapse(2) schedule(static) if (nb * C * P > PAR_MIN)
    for (int64_t n = 0; n < nb; n++) {
        for (int64_t c = 0; c < C; c++) {
            const float *s = src + c * nb * P + n * P;
            float *d = dst + (n * C + c) * P;
            const float b = bias ? bias[c] : 0.0f;
            for (int64_t p = 0; p < P; p++) d[p] = s[p] + b;
        }
    }
}

/* out[n][c][p] += bias[c] for nb images. */
static void add_bias(float *out, int64_t nb, int64_t C, int64_t P, const float *bias) {
#pragma omp parallel for collapse(2) schedule(static) if (nb * C * P > PAR_MIN)
    for (int64_t n = 0; n < nb; n++)
        for (int64_t c = 0; c < C; c++) {
            float *d = out + (n * C + c) * P;
            for (int64_t p = 0; p < P; p++) d[p] += bias[c];
        }
}

/* Images per chunk so that a [rows x nb*P] buffer stays within COL_BUDGET. */
static int64_t chunk_size(int64_t N, int64_t rows, int64_t P) {
    int64_t per = rows * P > 0 ? rows * P : 1;
    int64_t nb = COL_BUDGET / per;
    if (nb < 1) nb = 1;
    return nb < N ? nb : (N > 0 ? N : 1);
}

/* y [N x O x OH x OW] = conv(x [N x C x H x W], w [O x C/G x kh x kw]) + b. */
static int conv2d_kernel(const float *x, const float *w, const float *b, float *y, int64_t N,
                         int64_t C, int64_t O, const geometry *g) {
    const int64_t G = g->a->groups, Cg = C / G, Og = O / G, T = g->T;
    const int64_t K = Cg * T, P = g->OH * g->OW;
    const int64_t chunk = chunk_size(N, C * T, P);
    const bool batched = chunk > 1 && P < PER_IMAGE_MIN, direct = !batched && pointwise(g);
    em_tensor *hc = NULL, *hy = NULL, *hw = NULL;
    float *col = scratch(&hc, direct ? 1 : C * T * chunk * P);
    float *buf = batched ? scratch(&hy, O * chunk * P) : NULL;
    float *wp = packs(g) ? scratch(&hw, O * K) : NULL;
    if (!col || (batched && !buf) || (packs(g) && !wp)) {
        em_tensor_release(hc);
        em_tensor_release(hy);
        em_tensor_release(hw);
        return EM_ERR;
    }
    if (wp) { /* w [O x C x kk] -> [O x C T] (groups = 1 under a mask) */
        pack_taps(w, O, Cg, g->kh * g->kw, T, g->a, wp);
        w = wp;
    }
    for (int64_t n0 = 0; n0 < N; n0 += chunk) {
        const int64_t nb = N - n0 < chunk ? N - n0 : chunk, ld = nb * P;
        float *out = y + n0 * O * P;
        /* the columns: im2col's, or the images themselves (direct: image n at n C P) */
        const float *cols = direct ? x + n0 * C * P : col;
        const int64_t cld = direct ? P : ld, cstride = direct ? C * P : P;
        if (!direct) im2col(x + n0 * C * g->H * g->W, nb, C, g, col);
        if (batched && nb > 1) { /* buf [O x nb P], then into NCHW */
            for (int64_t gi = 0; gi < G; gi++)
                sgemm(false, false, Og, ld, K, w + gi * Og * K, K, col + gi * K * ld, ld, 0.0f,
                      buf + gi * Og * ld, ld);
            rows_to_batch(buf, nb, O, P, b, out);
            continue;
        }
        /* out[n] [O x P] = w @ col[:, n P : (n + 1) P]; one image per thread (sgemm
         * runs single-threaded inside a parallel region) */
#pragma omp parallel for schedule(static) if (nb > 1)
        for (int64_t n = 0; n < nb; n++)
            for (int64_t gi = 0; gi < G; gi++)
                sgemm(false, false, Og, P, K, w + gi * Og * K, K, cols + gi * K * cld + n * cstride,
                      cld, 0.0f, out + n * O * P + gi * Og * P, P);
        if (b) add_bias(out, nb, O, P, b);
    }
    em_tensor_release(hc);
    em_tensor_release(hy);
    em_tensor_release(hw);
    return EM_OK;
}

/* y [N x O x OH x OW] = conv_transpose(x [N x C x H x W], w [C x O/G x kh x kw]) + b;
 * g describes the forward convolution y -> x (its input is y, its output x). */
static int convt_kernel(const float *x, const float *w, const float *b, float *y, int64_t N,
                        int64_t C, int64_t O, const geometry *g) {
    const int64_t G = g->a->groups, Cg = C / G, Og = O / G, T = g->T;
    const int64_t Q = g->OH * g->OW, Kc = Og * T;
    const int64_t chunk = chunk_size(N, O * T, Q);
    const bool batched = chunk > 1 && Q < PER_IMAGE_MIN, direct = !batched && pointwise(g);
    em_tensor *hc = NULL, *hx = NULL, *hw = NULL;
    float *col = scratch(&hc, direct ? 1 : O * T * chunk * Q);
    float *xrows = batched ? scratch(&hx, C * chunk * Q) : NULL;
    float *wp = packs(g) ? scratch(&hw, C * Kc) : NULL;
    if (!col || (batched && !xrows) || (packs(g) && !wp)) {
        em_tensor_release(hc);
        em_tensor_release(hx);
        em_tensor_release(hw);
        return EM_ERR;
    }
    if (wp) { /* w [C x O x kk] -> [C x O T] (groups = 1 under a mask) */
        pack_taps(w, C, Og, g->kh * g->kw, T, g->a, wp);
        w = wp;
    }
    for (int64_t n0 = 0; n0 < N; n0 += chunk) {
        const int64_t nb = N - n0 < chunk ? N - n0 : chunk, ld = nb * Q;
        const float *xs = x + n0 * C * Q;
        float *out = y + n0 * O * g->H * g->W;
        if (direct) { /* 1x1: the product lands in the output images (H W = Q) */
#pragma omp parallel for schedule(static) if (nb > 1)
            for (int64_t n = 0; n < nb; n++)
                for (int64_t gi = 0; gi < G; gi++)
                    sgemm(true, false, Kc, Q, Cg, w + gi * Cg * Kc, Kc, xs + n * C * Q + gi * Cg * Q,
                          Q, 0.0f, out + n * O * Q + gi * Kc * Q, Q);
            if (b) add_bias(out, nb, O, Q, b);
            continue;
        }
        if (batched && nb > 1) { /* col_g [Og kk x ld] = w_g^T [Og kk x Cg] @ x_g [Cg x ld] */
            batch_to_rows(xs, nb, C, Q, xrows);
            for (int64_t gi = 0; gi < G; gi++)
                sgemm(true, false, Kc, ld, Cg, w + gi * Cg * Kc, Kc, xrows + gi * Cg * ld, ld,
                      0.0f, col + gi * Kc * ld, ld);
        } else {
#pragma omp parallel for schedule(static) if (nb > 1)
            for (int64_t n = 0; n < nb; n++)
                for (int64_t gi = 0; gi < G; gi++)
                    sgemm(true, false, Kc, Q, Cg, w + gi * Cg * Kc, Kc, xs + n * C * Q + gi * Cg * Q,
                          Q, 0.0f, col + gi * Kc * ld + n * Q, ld);
        }
        col2im(col, nb, O, g, out);
        if (b) add_bias(out, nb, O, g->H * g->W, b);
    }
    em_tensor_release(hc);
    em_tensor_release(hx);
    em_tensor_release(hw);
    return EM_OK;
}

/* dw [O x C/G x kh x kw] = sum over the batch of gy (x) im2col(x). */
static int conv2d_weight_kernel(const float *x, const float *gy, float *dw, int64_t N, int64_t C,
                                int64_t O, const geometry *g) {
    const int64_t G = g->a->groups, Cg = C / G, Og = O / G, kk = g->kh * g->kw, T = g->T;
    const int64_t K = Cg * T, P = g->OH * g->OW;
    const int64_t chunk = chunk_size(N, C * T, P);
    if (N == 0 || K == 0) {
        memset(dw, 0, (size_t)(O * Cg * kk) * sizeof(float));
        return EM_OK;
    }
    const bool batched = chunk > 1 && P < PER_IMAGE_MIN, direct = !batched && pointwise(g);
    em_tensor *hc = NULL, *hg = NULL, *hw = NULL;
    float *col = scratch(&hc, direct ? 1 : C * T * chunk * P);
    float *grows = batched ? scratch(&hg, O * chunk * P) : NULL;
    float *full = dw; /* under a mask: the packed [O x C T] first, spread at the end */
    if (packs(g)) dw = scratch(&hw, O * K);
    if (!col || (batched && !grows) || !dw) {
        em_tensor_release(hc);
        em_tensor_release(hg);
        em_tensor_release(hw);
        return EM_ERR;
    }
    for (int64_t n0 = 0; n0 < N; n0 += chunk) {
        const int64_t nb = N - n0 < chunk ? N - n0 : chunk, ld = nb * P;
        const float *cols = direct ? x + n0 * C * P : col;
        const int64_t cld = direct ? P : ld, cstride = direct ? C * P : P;
        if (!direct) im2col(x + n0 * C * g->H * g->W, nb, C, g, col);
        const float *gs = gy + n0 * O * P;
        if (batched && nb > 1) { /* dw_g [Og x K] += gy_g [Og x ld] @ col_g^T */
            batch_to_rows(gs, nb, O, P, grows);
            for (int64_t gi = 0; gi < G; gi++)
                sgemm(false, true, Og, K, ld, grows + gi * Og * ld, ld, col + gi * K * ld, ld,
                      n0 == 0 ? 0.0f : 1.0f, dw + gi * Og * K, K);
            continue;
        }
        for (int64_t n = 0; n < nb; n++) /* dw_g += gy[n]_g [Og x P] @ col[:, n P : (n + 1) P]^T */
            for (int64_t gi = 0; gi < G; gi++)
                sgemm(false, true, Og, K, P, gs + n * O * P + gi * Og * P, P,
                      cols + gi * K * cld + n * cstride, cld, n0 + n == 0 ? 0.0f : 1.0f,
                      dw + gi * Og * K, K);
    }
    if (dw != full) unpack_taps(dw, O, Cg, kk, T, g->a, full);
    em_tensor_release(hc);
    em_tensor_release(hg);
    em_tensor_release(hw);
    return EM_OK;
}

/* ---- the ops --------------------------------------------------------- */

/* Contiguous versions of the inputs (recorded as clones when copied). */
typedef struct {
    em_tensor *x, *w, *b;
} contiguous_inputs;

static int make_contiguous(contiguous_inputs *c, em_tensor *x, em_tensor *w, em_tensor *b) {
    c->x = em_contiguous(x);
    c->w = em_contiguous(w);
    c->b = b ? em_contiguous(b) : NULL;
    return (c->x && c->w && (!b || c->b)) ? EM_OK : EM_ERR;
}

static void release_inputs(contiguous_inputs *c) {
    em_tensor_release(c->x);
    em_tensor_release(c->w);
    em_tensor_release(c->b);
}

/* Records the op on out (inputs x, w and, when given, b) with its arguments. */
static void record(em_op_id op, em_tensor *out, contiguous_inputs *c, const em_conv2d_args *a,
                   int64_t kh, int64_t kw) {
    em_tensor *in[3] = {c->x, c->w, c->b};
    em_node *node = em_record(op, out, c->b ? 3 : 2, in);
    if (!node) return;
    save_args(node, a);
    node->iarg[9] = kh;
    node->iarg[10] = kw;
    em_node_save(node, c->x);
    em_node_save(node, c->w);
}

em_tensor *em_conv2d(em_tensor *x, em_tensor *w, em_tensor *b, const em_conv2d_args *a) {
    if (!x || !w || !a) return NULL;
    const char *fn = "conv2d";
    char sx[EM_SHAPE_STR_MAX], sw[EM_SHAPE_STR_MAX];
    if (check_args(fn, a, false) || check_4d(fn, "input", x, "N x C x H x W") ||
        check_4d(fn, "weight", w, "out_channels x in_channels/groups x kh x kw"))
        return NULL;
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3], G = a->groups;
    em_shape_str(sx, sizeof sx, x->ndim, x->shape);
    em_shape_str(sw, sizeof sw, w->ndim, w->shape);
    if (O % G) {
        em_error_set("%s: weight %s: out_channels %lld is not divisible by groups %lld", fn, sw,
                     (long long)O, (long long)G);
        return NULL;
    }
    if (C != w->shape[1] * G) {
        em_error_set("%s: input %s has %lld channels, but weight %s expects %lld "
                     "(in_channels/groups %lld x groups %lld)", fn, sx, (long long)C, sw,
                     (long long)(w->shape[1] * G), (long long)w->shape[1], (long long)G);
        return NULL;
    }
    if (check_bias(fn, b, O) || check_mask_channels(fn, a, O, C)) return NULL;
    const int64_t OH = conv_out(H, kh, a->stride[0], a->padding[0], a->dilation[0]);
    const int64_t OW = conv_out(W, kw, a->stride[1], a->padding[1], a->dilation[1]);
    if (OH < 1 || OW < 1) {
        em_error_set("%s: input %s padded to %lld x %lld is smaller than the kernel %lld x %lld "
                     "(dilated: %lld x %lld)", fn, sx, (long long)(H + 2 * a->padding[0]),
                     (long long)(W + 2 * a->padding[1]), (long long)kh, (long long)kw,
                     (long long)(a->dilation[0] * (kh - 1) + 1),
                     (long long)(a->dilation[1] * (kw - 1) + 1));
        return NULL;
    }
    contiguous_inputs c;
    int64_t shape[4] = {N, O, OH, OW};
    em_tensor *out = NULL;
    if (make_contiguous(&c, x, w, b) == EM_OK && (out = em_tensor_empty(4, shape))) {
        geometry g = make_geometry(H, W, OH, OW, kh, kw, a);
        if (conv2d_kernel(em_tensor_data(c.x), em_tensor_data(c.w),
                          c.b ? em_tensor_data(c.b) : NULL, em_tensor_data(out), N, C, O, &g)) {
            em_tensor_release(out);
            out = NULL;
        } else {
            record(EM_OP_conv2d, out, &c, a, kh, kw);
        }
    }
    release_inputs(&c);
    return out;
}

em_tensor *em_conv_transpose2d(em_tensor *x, em_tensor *w, em_tensor *b,
                               const em_conv2d_args *a) {
    if (!x || !w || !a) return NULL;
    const char *fn = "conv_transpose2d";
    char sx[EM_SHAPE_STR_MAX], sw[EM_SHAPE_STR_MAX];
    if (check_args(fn, a, true) || check_4d(fn, "input", x, "N x C x H x W") ||
        check_4d(fn, "weight", w, "in_channels x out_channels/groups x kh x kw"))
        return NULL;
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t G = a->groups, O = w->shape[1] * G, kh = w->shape[2], kw = w->shape[3];
    em_shape_str(sx, sizeof sx, x->ndim, x->shape);
    em_shape_str(sw, sizeof sw, w->ndim, w->shape);
    if (C != w->shape[0]) {
        em_error_set("%s: input %s has %lld channels, but weight %s expects %lld "
                     "(weight is [in_channels x out_channels/groups x kh x kw])", fn, sx,
                     (long long)C, sw, (long long)w->shape[0]);
        return NULL;
    }
    if (C % G) {
        em_error_set("%s: in_channels %lld is not divisible by groups %lld", fn, (long long)C,
                     (long long)G);
        return NULL;
    }
    if (check_bias(fn, b, O) || check_mask_channels(fn, a, C, O)) return NULL;
    const int64_t OH = convt_out(H, kh, a->stride[0], a->padding[0], a->dilation[0],
                                 a->output_padding[0]);
    const int64_t OW = convt_out(W, kw, a->stride[1], a->padding[1], a->dilation[1],
                                 a->output_padding[1]);
    if (H < 1 || W < 1 || OH < 1 || OW < 1) {
        em_error_set("%s: input %s with kernel %lld x %lld gives an empty output %lld x %lld "
                     "(padding too large?)", fn, sx, (long long)kh, (long long)kw, (long long)OH,
                     (long long)OW);
        return NULL;
    }
    contiguous_inputs c;
    int64_t shape[4] = {N, O, OH, OW};
    em_tensor *out = NULL;
    if (make_contiguous(&c, x, w, b) == EM_OK && (out = em_tensor_empty(4, shape))) {
        geometry g = make_geometry(OH, OW, H, W, kh, kw, a); /* the conv that maps out -> x */
        if (convt_kernel(em_tensor_data(c.x), em_tensor_data(c.w),
                         c.b ? em_tensor_data(c.b) : NULL, em_tensor_data(out), N, C, O, &g)) {
            em_tensor_release(out);
            out = NULL;
        } else {
            record(EM_OP_conv_transpose2d, out, &c, a, kh, kw);
        }
    }
    release_inputs(&c);
    return out;
}

em_tensor *em_conv2d_weight(em_tensor *x, em_tensor *gy, int64_t kh, int64_t kw,
                            const em_conv2d_args *a) {
    if (!x || !gy || !a) return NULL;
    const char *fn = "conv2d_weight";
    char sx[EM_SHAPE_STR_MAX], sg[EM_SHAPE_STR_MAX];
    if (check_args(fn, a, false) || check_4d(fn, "input", x, "N x C x H x W") ||
        check_4d(fn, "output gradient", gy, "N x O x OH x OW"))
        return NULL;
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t O = gy->shape[1], G = a->groups;
    if (kh < 1 || kw < 1) {
        em_error_set("%s: kernel size must be >= 1, got %lld x %lld", fn, (long long)kh,
                     (long long)kw);
        return NULL;
    }
    if (C % G || O % G) {
        em_error_set("%s: channels %lld and %lld must both be divisible by groups %lld", fn,
                     (long long)C, (long long)O, (long long)G);
        return NULL;
    }
    if (check_mask_channels(fn, a, O, C / G)) return NULL;
    const int64_t OH = conv_out(H, kh, a->stride[0], a->padding[0], a->dilation[0]);
    const int64_t OW = conv_out(W, kw, a->stride[1], a->padding[1], a->dilation[1]);
    if (gy->shape[0] != N || gy->shape[2] != OH || gy->shape[3] != OW || OH < 1 || OW < 1) {
        em_error_set("%s: output gradient %s does not fit input %s (expected [%lld x %lld x "
                     "%lld x %lld])", fn, em_shape_str(sg, sizeof sg, gy->ndim, gy->shape),
                     em_shape_str(sx, sizeof sx, x->ndim, x->shape), (long long)N, (long long)O,
                     (long long)OH, (long long)OW);
        return NULL;
    }
    contiguous_inputs c;
    int64_t shape[4] = {O, C / G, kh, kw};
    em_tensor *out = NULL;
    if (make_contiguous(&c, x, gy, NULL) == EM_OK && (out = em_tensor_empty(4, shape))) {
        geometry g = make_geometry(H, W, OH, OW, kh, kw, a);
        if (conv2d_weight_kernel(em_tensor_data(c.x), em_tensor_data(c.w), em_tensor_data(out),
                                 N, C, O, &g)) {
            em_tensor_release(out);
            out = NULL;
        } else {
            record(EM_OP_conv2d_weight, out, &c, a, kh, kw);
        }
    }
    release_inputs(&c);
    return out;
}

em_tensor *em_conv_mask_tensor(int64_t D0, int64_t D1, int64_t kh, int64_t kw,
                               const em_conv2d_args *a) {
    const char *fn = "conv_mask";
    if (!a || check_args(fn, a, false) || check_mask_channels(fn, a, D0, D1)) return NULL;
    if (D0 < 1 || D1 < 1 || kh < 1 || kw < 1) {
        em_error_set("%s: sizes must be >= 1, got %lld x %lld x %lld x %lld", fn, (long long)D0,
                     (long long)D1, (long long)kh, (long long)kw);
        return NULL;
    }
    const int64_t T = kept_taps(kh, kw, a), shape[4] = {D0, D1, kh, kw};
    em_tensor *ones = NULL, *out = em_tensor_empty(4, shape);
    float *packed = out ? scratch(&ones, D0 * D1 * T) : NULL;
    if (!packed) {
        em_tensor_release(out);
        return NULL;
    }
    for (int64_t i = 0; i < D0 * D1 * T; i++) packed[i] = 1.0f;
    unpack_taps(packed, D0, D1, kh * kw, T, a, em_tensor_data(out));
    em_tensor_release(ones);
    return out;
}

/* ---- backward -------------------------------------------------------- */

/* The sum of g over batch and space: the bias gradient [O]. */
static em_tensor *bias_grad(em_tensor *g) {
    int dims[3] = {0, 2, 3};
    return em_reduce(EM_RED_SUM, g, 3, dims, false, 0);
}

/* conv_transpose2d(g, w) sized back to `target`'s H x W. */
static em_tensor *transpose_to(em_tensor *g, em_tensor *w, const int64_t *target,
                               em_conv2d_args a) {
    for (int i = 0; i < 2; i++)
        a.output_padding[i] = fit_padding(target[2 + i], g->shape[2 + i], w->shape[2 + i],
                                          a.stride[i], a.padding[i], a.dilation[i]);
    return em_conv_transpose2d(g, w, NULL, &a);
}

/* saved: x, w */
int em_backward_conv2d(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *x = n->saved[0], *w = n->saved[1];
    em_conv2d_args a = load_args(n);
    int rc = EM_OK;
    if (em_edge_needs_grad(n, 0) && !(gin[0] = transpose_to(g, w, x->shape, a))) rc = EM_ERR;
    if (rc == EM_OK && em_edge_needs_grad(n, 1) &&
        !(gin[1] = em_conv2d_weight(x, g, w->shape[2], w->shape[3], &a)))
        rc = EM_ERR;
    if (rc == EM_OK && n->n_edges > 2 && em_edge_needs_grad(n, 2) && !(gin[2] = bias_grad(g)))
        rc = EM_ERR;
    return rc;
}

/* saved: x, w */
int em_backward_conv_transpose2d(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *x = n->saved[0], *w = n->saved[1];
    em_conv2d_args a = load_args(n);
    int rc = EM_OK;
    if (em_edge_needs_grad(n, 0) && !(gin[0] = em_conv2d(g, w, NULL, &a))) rc = EM_ERR;
    if (rc == EM_OK && em_edge_needs_grad(n, 1) &&
        !(gin[1] = em_conv2d_weight(g, x, w->shape[2], w->shape[3], &a)))
        rc = EM_ERR;
    if (rc == EM_OK && n->n_edges > 2 && em_edge_needs_grad(n, 2) && !(gin[2] = bias_grad(g)))
        rc = EM_ERR;
    return rc;
}

/* saved: x, gy; g is the gradient of the weight gradient [O x C/G x kh x kw] */
int em_backward_conv2d_weight(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *x = n->saved[0], *gy = n->saved[1];
    em_conv2d_args a = load_args(n);
    int rc = EM_OK;
    if (em_edge_needs_grad(n, 0) && !(gin[0] = transpose_to(gy, g, x->shape, a))) rc = EM_ERR;
    if (rc == EM_OK && em_edge_needs_grad(n, 1) && !(gin[1] = em_conv2d(x, g, NULL, &a)))
        rc = EM_ERR;
    return rc;
}
