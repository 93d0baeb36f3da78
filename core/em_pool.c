/* em_pool.c — max and average pooling over 2-D windows, nearest upsampling,
 * and their gradients as ops of their own, so that they are differentiable
 * too:
 *   max_pool2d       keeps the position of each maximum; backward scatters g
 *                    there (max_unpool2d), whose backward gathers again (a
 *                    max_pool2d node with the same positions);
 *   avg_pool2d       backward spreads g over each window (avg_pool2d_backward),
 *                    whose backward is avg_pool2d again;
 *   upsample_nearest2d  backward is an average pool times the block size.
 * Images are NCHW; each (n, c) plane is independent, so loops run over
 * planes in parallel. */
#include <math.h>
#include <string.h>

#include "em_autograd.h"
#include "em_nn.h"

#define PAR_MIN 32768

/* Test hook: true makes max pooling use its general (reference) kernel only. */
bool em_pool_force_reference;

/* ---- arguments ------------------------------------------------------- */

/* Validates x and the window, and computes the output size. */
static int check_pool(const char *fn, const em_tensor *x, const em_pool2d_args *a, int64_t *OH,
                      int64_t *OW) {
    char s[EM_SHAPE_STR_MAX];
    if (x->ndim != 4)
        return em_error_set("%s: input %s must be 4-D [N x C x H x W]", fn,
                            em_shape_str(s, sizeof s, x->ndim, x->shape));
    int64_t out[2];
    for (int i = 0; i < 2; i++) {
        if (a->kernel[i] < 1)
            return em_error_set("%s: kernel size must be >= 1, got %lld", fn,
                                (long long)a->kernel[i]);
        if (a->stride[i] < 1)
            return em_error_set("%s: stride must be >= 1, got %lld", fn, (long long)a->stride[i]);
        if (a->padding[i] < 0 || a->padding[i] > a->kernel[i] / 2)
            return em_error_set("%s: padding must be between 0 and half the kernel size %lld, "
                                "got %lld", fn, (long long)a->kernel[i], (long long)a->padding[i]);
        int64_t span = x->shape[2 + i] + 2 * a->padding[i] - a->kernel[i];
        if (span < 0)
            return em_error_set("%s: input %s padded to %lld x %lld is smaller than the kernel "
                                "%lld x %lld", fn, em_shape_str(s, sizeof s, x->ndim, x->shape),
                                (long long)(x->shape[2] + 2 * a->padding[0]),
                                (long long)(x->shape[3] + 2 * a->padding[1]),
                                (long long)a->kernel[0], (long long)a->kernel[1]);
        out[i] = span / a->stride[i] + 1;
    }
    *OH = out[0];
    *OW = out[1];
    return EM_OK;
}

static void save_pool(em_node *n, const em_pool2d_args *a) {
    for (int i = 0; i < 2; i++) {
        n->iarg[0 + i] = a->kernel[i];
        n->iarg[2 + i] = a->stride[i];
        n->iarg[4 + i] = a->padding[i];
    }
    n->iarg[6] = a->count_include_pad;
}

static em_pool2d_args load_pool(const em_node *n) {
    em_pool2d_args a;
    for (int i = 0; i < 2; i++) {
        a.kernel[i] = n->iarg[0 + i];
        a.stride[i] = n->iarg[2 + i];
        a.padding[i] = n->iarg[4 + i];
    }
    a.count_include_pad = n->iarg[6] != 0;
    return a;
}

/* The window of output (oh, ow) clipped to the image: rows [h0, h1), cols [w0, w1). */
typedef struct {
    int64_t h0, h1, w0, w1;
} window;

static inline window window_at(const em_pool2d_args *a, int64_t oh, int64_t ow, int64_t H,
                               int64_t W) {
    window w;
    w.h0 = oh * a->stride[0] - a->padding[0];
    w.w0 = ow * a->stride[1] - a->padding[1];
    w.h1 = w.h0 + a->kernel[0] < H ? w.h0 + a->kernel[0] : H;
    w.w1 = w.w0 + a->kernel[1] < W ? w.w0 + a->kernel[1] : W;
    if (w.h0 < 0) w.h0 = 0;
    if (w.w0 < 0) w.w0 = 0;
    return w;
}

/* ---- max pooling ----------------------------------------------------- */

/* One step of the scan below: v replaces the running best m (position k, a
 * float as the kernel stores it) when m is not NaN and v is greater or NaN —
 * the first NaN, else the first maximum, in row-major window order. */
#define POOL_PICK(m, k, v, kv)                                              \
    do {                                                                    \
        float v_ = (v);                                                     \
        if (m == m && (v_ > m || v_ != v_)) {                               \
            k = (kv);                                                       \
            m = v_;                                                         \
        }                                                                   \
    } while (0)

#ifdef __SSE4_1__
#include <smmintrin.h>
/* The same step on 4 lanes: blends, no branches (a max pool's comparisons are
 * data-dependent; mispredicted branches were its cost, and GCC does not turn
 * the scalar form into selects: with trapping math, `>` on a NaN may raise). */
static inline void pool_pick4(__m128 *m, __m128 *k, __m128 v, __m128 kv) {
    __m128 m_nan = _mm_cmpunord_ps(*m, *m), v_nan = _mm_cmpunord_ps(v, v);
    __m128 take = _mm_andnot_ps(m_nan, _mm_or_ps(_mm_cmpgt_ps(v, *m), v_nan));
    *m = _mm_blendv_ps(*m, v, take);
    *k = _mm_blendv_ps(*k, kv, take);
}
#endif

/* 2x2 windows, stride 2, no padding (the common case): the same maxima and
 * positions as the general kernel below (the reference; tests compare them).
 * Positions are exact as floats below 2^24 elements per plane. With SSE4.1,
 * 4 windows at a time: two rows of 8 inputs, split into even and odd columns. */
static void max_pool_2x2(const float *x, float *y, float *idx, int64_t planes, int64_t H,
                         int64_t W, int64_t OH, int64_t OW) {
#pragma omp parallel for schedule(static) if (planes * OH * OW * 4 > PAR_MIN)
    for (int64_t p = 0; p < planes; p++) {
        const float *src = x + p * H * W;
        float *yp = y + p * OH * OW, *ip = idx + p * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            const float *r0 = src + 2 * oh * W, *r1 = r0 + W;
            const float base = (float)(2 * oh * W), fw = (float)W;
            float *yr = yp + oh * OW, *ir = ip + oh * OW;
            int64_t ow = 0;
#ifdef __SSE4_1__
            const __m128 step = _mm_set_ps(6.0f, 4.0f, 2.0f, 0.0f);
            const __m128 one = _mm_set1_ps(1.0f), width = _mm_set1_ps(fw);
            for (; ow + 4 <= OW; ow += 4) {
                __m128 a0 = _mm_loadu_ps(r0 + 2 * ow), a1 = _mm_loadu_ps(r0 + 2 * ow + 4);
                __m128 b0 = _mm_loadu_ps(r1 + 2 * ow), b1 = _mm_loadu_ps(r1 + 2 * ow + 4);
                __m128 top_l = _mm_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0));
                __m128 top_r = _mm_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1));
                __m128 bot_l = _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0));
                __m128 bot_r = _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1));
                __m128 c0 = _mm_add_ps(_mm_set1_ps(base + (float)(2 * ow)), step);
                __m128 m = top_l, k = c0;
                pool_pick4(&m, &k, top_r, _mm_add_ps(c0, one));
                pool_pick4(&m, &k, bot_l, _mm_add_ps(c0, width));
                pool_pick4(&m, &k, bot_r, _mm_add_ps(_mm_add_ps(c0, width), one));
                _mm_storeu_ps(yr + ow, m);
                _mm_storeu_ps(ir + ow, k);
            }
#endif
            for (; ow < OW; ow++) {
                float m = r0[2 * ow];
                float c0 = base + (float)(2 * ow);
                float k = c0;
                POOL_PICK(m, k, r0[2 * ow + 1], c0 + 1.0f);
                POOL_PICK(m, k, r1[2 * ow], c0 + fw);
                POOL_PICK(m, k, r1[2 * ow + 1], c0 + fw + 1.0f);
                yr[ow] = m;
                ir[ow] = k;
            }
        }
    }
}

/* The max of each window and its position (h W + w, as a float) in its plane. */
static void max_pool_kernel(const float *x, float *y, float *idx, int64_t planes, int64_t H,
                            int64_t W, int64_t OH, int64_t OW, const em_pool2d_args *a) {
    if (a->kernel[0] == 2 && a->kernel[1] == 2 && a->stride[0] == 2 && a->stride[1] == 2 &&
        a->padding[0] == 0 && a->padding[1] == 0 && H * W < (1 << 24) && !em_pool_force_reference) {
        max_pool_2x2(x, y, idx, planes, H, W, OH, OW);
        return;
    }
#pragma omp parallel for schedule(static) if (planes * OH * OW * a->kernel[0] * a->kernel[1] > PAR_MIN)
    for (int64_t p = 0; p < planes; p++) {
        const float *src = x + p * H * W;
        for (int64_t oh = 0; oh < OH; oh++) {
            for (int64_t ow = 0; ow < OW; ow++) {
                window w = window_at(a, oh, ow, H, W);
                int64_t best_i = w.h0 * W + w.w0; /* padding <= kernel / 2: never empty */
                float best = src[best_i];
                for (int64_t h = w.h0; h < w.h1 && best == best; h++)
                    for (int64_t c = w.w0; c < w.w1; c++) {
                        float v = src[h * W + c];
                        if (v > best || v != v) { /* NaN wins, as in PyTorch */
                            best = v;
                            best_i = h * W + c;
                            if (v != v) break;
                        }
                    }
                y[(p * OH + oh) * OW + ow] = best;
                idx[(p * OH + oh) * OW + ow] = (float)best_i;
            }
        }
    }
}

/* out [N x C x OH x OW] = src[n][c][idx[n][c][oh][ow]] (src [N x C x H x W]),
 * recorded as a max_pool2d node (its backward scatters back). */
static em_tensor *pool_gather(em_tensor *src, em_tensor *idx) {
    em_tensor *sc = em_contiguous(src);
    em_tensor *out = sc ? em_tensor_empty(idx->ndim, idx->shape) : NULL;
    if (!out) {
        em_tensor_release(sc);
        return NULL;
    }
    const int64_t planes = idx->shape[0] * idx->shape[1];
    const int64_t HW = sc->shape[2] * sc->shape[3], Q = idx->shape[2] * idx->shape[3];
    const float *s = em_tensor_data(sc), *ix = em_tensor_data(idx);
    float *o = em_tensor_data(out);
#pragma omp parallel for schedule(static) if (planes * Q > PAR_MIN)
    for (int64_t p = 0; p < planes; p++)
        for (int64_t q = 0; q < Q; q++) o[p * Q + q] = s[p * HW + (int64_t)ix[p * Q + q]];
    em_node *node = em_record(EM_OP_max_pool2d, out, 1, &sc);
    if (node) em_node_save(node, idx);
    em_tensor_release(sc);
    return out;
}

/* zeros(shape) with g [N x C x OH x OW] added at the positions idx: the
 * gradient of max_pool2d, recorded as max_unpool2d. */
static em_tensor *pool_scatter(em_tensor *g, em_tensor *idx, const int64_t *shape) {
    em_tensor *gc = em_contiguous(g);
    em_tensor *out = gc ? em_tensor_empty(4, shape) : NULL;
    if (!out) {
        em_tensor_release(gc);
        return NULL;
    }
    const int64_t planes = shape[0] * shape[1];
    const int64_t HW = shape[2] * shape[3], Q = idx->shape[2] * idx->shape[3];
    const float *s = em_tensor_data(gc), *ix = em_tensor_data(idx);
    float *o = em_tensor_data(out);
    /* each plane cleared by the thread that scatters into it, just before (a
     * zeros tensor was one thread's memset of the whole input while the other
     * waited: perf on B3) */
#pragma omp parallel for schedule(static) if (planes * HW > PAR_MIN)
    for (int64_t p = 0; p < planes; p++) {
        memset(o + p * HW, 0, (size_t)HW * sizeof(float));
        for (int64_t q = 0; q < Q; q++) o[p * HW + (int64_t)ix[p * Q + q]] += s[p * Q + q];
    }
    em_node *node = em_record(EM_OP_max_unpool2d, out, 1, &gc);
    if (node) em_node_save(node, idx);
    em_tensor_release(gc);
    return out;
}

em_tensor *em_max_pool2d(em_tensor *x, const em_pool2d_args *a) {
    if (!x || !a) return NULL;
    int64_t OH, OW;
    if (check_pool("max_pool2d", x, a, &OH, &OW)) return NULL;
    if (x->shape[2] * x->shape[3] > (1 << 24)) {
        em_error_set("max_pool2d: planes of more than 2^24 pixels are not supported");
        return NULL;
    }
    int64_t shape[4] = {x->shape[0], x->shape[1], OH, OW};
    em_tensor *xc = em_contiguous(x);
    em_tensor *out = xc ? em_tensor_empty(4, shape) : NULL;
    em_tensor *idx = out ? em_tensor_empty(4, shape) : NULL;
    if (!idx) {
        em_tensor_release(xc);
        em_tensor_release(out);
        return NULL;
    }
    max_pool_kernel(em_tensor_data(xc), em_tensor_data(out), em_tensor_data(idx),
                    shape[0] * shape[1], x->shape[2], x->shape[3], OH, OW, a);
    em_node *node = em_record(EM_OP_max_pool2d, out, 1, &xc);
    if (node) em_node_save(node, idx);
    em_tensor_release(idx);
    em_tensor_release(xc);
    return out;
}

/* saved: the positions of the maxima */
int em_backward_max_pool2d(em_node *n, em_tensor *g, em_tensor **gin) {
    gin[0] = pool_scatter(g, n->saved[0], n->edges[0].shape);
    return gin[0] ? EM_OK : EM_ERR;
}

int em_backward_max_unpool2d(em_node *n, em_tensor *g, em_tensor **gin) {
    gin[0] = pool_gather(g, n->saved[0]);
    return gin[0] ? EM_OK : EM_ERR;
}

/* ---- average pooling ------------------------------------------------- */

static inline float window_divisor(const em_pool2d_args *a, const window *w) {
    return a->count_include_pad ? (float)(a->kernel[0] * a->kernel[1])
                                : (float)((w->h1 - w->h0) * (w->w1 - w->w0));
}

static void avg_pool_kernel(const float *x, float *y, int64_t planes, int64_t H, int64_t W,
                            int64_t OH, int64_t OW, const em_pool2d_args *a) {
#pragma omp parallel for schedule(static) if (planes * OH * OW * a->kernel[0] * a->kernel[1] > PAR_MIN)
    for (int64_t p = 0; p < planes; p++) {
        const float *src = x + p * H * W;
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                window w = window_at(a, oh, ow, H, W);
                float sum = 0.0f;
                for (int64_t h = w.h0; h < w.h1; h++)
                    for (int64_t c = w.w0; c < w.w1; c++) sum += src[h * W + c];
                y[(p * OH + oh) * OW + ow] = sum / window_divisor(a, &w);
            }
    }
}

/* The adjoint of avg_pool_kernel: each g[oh][ow] / divisor spread over its window. */
static void avg_spread_kernel(const float *g, float *x, int64_t planes, int64_t H, int64_t W,
                              int64_t OH, int64_t OW, const em_pool2d_args *a) {
#pragma omp parallel for schedule(static) if (planes * OH * OW * a->kernel[0] * a->kernel[1] > PAR_MIN)
    for (int64_t p = 0; p < planes; p++) {
        float *dst = x + p * H * W;
        memset(dst, 0, (size_t)(H * W) * sizeof(float));
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                window w = window_at(a, oh, ow, H, W);
                float v = g[(p * OH + oh) * OW + ow] / window_divisor(a, &w);
                for (int64_t h = w.h0; h < w.h1; h++)
                    for (int64_t c = w.w0; c < w.w1; c++) dst[h * W + c] += v;
            }
    }
}

em_tensor *em_avg_pool2d(em_tensor *x, const em_pool2d_args *a) {
    if (!x || !a) return NULL;
    int64_t OH, OW;
    if (check_pool("avg_pool2d", x, a, &OH, &OW)) return NULL;
    int64_t shape[4] = {x->shape[0], x->shape[1], OH, OW};
    em_tensor *xc = em_contiguous(x);
    em_tensor *out = xc ? em_tensor_empty(4, shape) : NULL;
    if (!out) {
        em_tensor_release(xc);
        return NULL;
    }
    avg_pool_kernel(em_tensor_data(xc), em_tensor_data(out), shape[0] * shape[1], x->shape[2],
                    x->shape[3], OH, OW, a);
    em_node *node = em_record(EM_OP_avg_pool2d, out, 1, &xc);
    if (node) save_pool(node, a);
    em_tensor_release(xc);
    return out;
}

/* The gradient of avg_pool2d: g [N x C x OH x OW] -> [N x C x H x W] (shape). */
static em_tensor *avg_pool2d_backward(em_tensor *g, const em_pool2d_args *a,
                                      const int64_t *shape) {
    em_tensor *gc = em_contiguous(g);
    em_tensor *out = gc ? em_tensor_empty(4, shape) : NULL;
    if (!out) {
        em_tensor_release(gc);
        return NULL;
    }
    avg_spread_kernel(em_tensor_data(gc), em_tensor_data(out), shape[0] * shape[1], shape[2],
                      shape[3], g->shape[2], g->shape[3], a);
    em_node *node = em_record(EM_OP_avg_pool2d_backward, out, 1, &gc);
    if (node) save_pool(node, a);
    em_tensor_release(gc);
    return out;
}

int em_backward_avg_pool2d(em_node *n, em_tensor *g, em_tensor **gin) {
    em_pool2d_args a = load_pool(n);
    gin[0] = avg_pool2d_backward(g, &a, n->edges[0].shape);
    return gin[0] ? EM_OK : EM_ERR;
}

int em_backward_avg_pool2d_backward(em_node *n, em_tensor *g, em_tensor **gin) {
    em_pool2d_args a = load_pool(n);
    gin[0] = em_avg_pool2d(g, &a);
    return gin[0] ? EM_OK : EM_ERR;
}

/* ---- nearest upsampling ---------------------------------------------- */

em_tensor *em_upsample_nearest2d(em_tensor *x, int64_t sh, int64_t sw) {
    if (!x) return NULL;
    char s[EM_SHAPE_STR_MAX];
    if (x->ndim != 4) {
        em_error_set("upsample_nearest2d: input %s must be 4-D [N x C x H x W]",
                     em_shape_str(s, sizeof s, x->ndim, x->shape));
        return NULL;
    }
    if (sh < 1 || sw < 1) {
        em_error_set("upsample_nearest2d: scale factors must be integers >= 1, got %lld x %lld",
                     (long long)sh, (long long)sw);
        return NULL;
    }
    const int64_t H = x->shape[2], W = x->shape[3], OH = H * sh, OW = W * sw;
    int64_t shape[4] = {x->shape[0], x->shape[1], OH, OW};
    em_tensor *xc = em_contiguous(x);
    em_tensor *out = xc ? em_tensor_empty(4, shape) : NULL;
    if (!out) {
        em_tensor_release(xc);
        return NULL;
    }
    const int64_t planes = shape[0] * shape[1];
    const float *src = em_tensor_data(xc);
    float *dst = em_tensor_data(out);
#pragma omp parallel for schedule(static) if (planes * OH * OW > PAR_MIN)
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oh = 0; oh < OH; oh++) {
            const float *row = src + (p * H + oh / sh) * W;
            float *d = dst + (p * OH + oh) * OW;
            for (int64_t ow = 0; ow < OW; ow++) d[ow] = row[ow / sw];
        }
    em_node *node = em_record(EM_OP_upsample_nearest2d, out, 1, &xc);
    if (node) {
        node->iarg[0] = sh;
        node->iarg[1] = sw;
    }
    em_tensor_release(xc);
    return out;
}

/* Each block's gradient is the sum over the block: an average pool times its size. */
int em_backward_upsample_nearest2d(em_node *n, em_tensor *g, em_tensor **gin) {
    const int64_t sh = n->iarg[0], sw = n->iarg[1];
    em_pool2d_args a = {{sh, sw}, {sh, sw}, {0, 0}, true};
    em_tensor *mean = em_avg_pool2d(g, &a);
    gin[0] = em_binary_scalar(EM_BIN_MUL, mean, (float)(sh * sw));
    em_tensor_release(mean);
    return gin[0] ? EM_OK : EM_ERR;
}
