/* em_gate.c — the gated activation unit of Gated PixelCNN and WaveNet:
 *   y = tanh(a) * sigmoid(b)   for x = [a, b], the halves of dim 1 (channels)
 * x [N x 2C x ...] -> y [N x C x ...]. One pass forward (keeping tanh(a) and
 * sigmoid(b) for the backward), one pass backward when nothing records:
 *   ga = (g s) (1 - t t),  gb = (g t) (s (1 - s))
 * the same products in the same order as the op-built path (narrow, tanh,
 * sigmoid, mul and their backwards), so the same bits; when recording, the
 * backward is built of those ops, so gradients of gradients work. */
#include <math.h>

#include "em_autograd.h"
#include "em_fastmath.h"
#include "em_iter.h"
#include "em_nn.h"


em_tensor *em_gated_tanh(em_tensor *x) {
    if (!x) return NULL;
    const char *fn = "gated_tanh";
    char sx[EM_SHAPE_STR_MAX];
    if (x->ndim < 2 || x->shape[1] % 2) {
        em_error_set("%s: input %s must have an even number of channels (dim 2) to split into "
                     "the tanh and sigmoid halves", fn, em_shape_str(sx, sizeof sx, x->ndim, x->shape));
        return NULL;
    }
    const int64_t N = x->shape[0], C = x->shape[1] / 2, S = N && C ? x->numel / (N * 2 * C) : 0;
    int64_t shape[EM_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[1] = C;
    em_tensor *xc = em_contiguous(x);
    em_tensor *out = xc ? em_tensor_empty(x->ndim, shape) : NULL;
    /* [t, s] as x's halves, kept for the backward only when a node is recorded */
    const bool recording = out && em_grad_enabled() && xc->requires_grad;
    em_tensor *ts = recording ? em_tensor_empty(x->ndim, x->shape) : NULL;
    if (!out || (recording && !ts)) {
        em_tensor_release(xc);
        em_tensor_release(out);
        return NULL;
    }
    const float *xd = em_tensor_data(xc);
    float *yd = em_tensor_data(out), *td = ts ? em_tensor_data(ts) : NULL;
    const int64_t half = C * S;
#pragma omp parallel for schedule(static) if (N * half > EM_PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++) {
        const float *a = xd + n * 2 * half, *b = a + half;
        float *y = yd + n * half;
        if (td) {
            float *t = td + n * 2 * half, *s = t + half;
            for (int64_t i = 0; i < half; i++) {
                t[i] = tanhf(a[i]);
                s[i] = em_sigmoidf(b[i]);
                y[i] = t[i] * s[i];
            }
        } else {
            for (int64_t i = 0; i < half; i++) y[i] = tanhf(a[i]) * em_sigmoidf(b[i]);
        }
    }
    em_node *node = ts ? em_record(EM_OP_gated_tanh, out, 1, &xc) : NULL;
    if (node) {
        em_node_save(node, xc);
        em_node_save(node, ts);
    }
    em_tensor_release(xc);
    em_tensor_release(ts);
    return out;
}

/* saved: x (contiguous), [tanh(a), sigmoid(b)] (graph-free) */
int em_backward_gated_tanh(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *x = n->saved[0], *ts = n->saved[1];
    const int64_t N = x->shape[0], C = x->shape[1] / 2, half = N ? x->numel / (2 * N) : 0;
    if (!em_grad_enabled() && em_tensor_is_contiguous(g)) {
        em_tensor *r = em_tensor_empty(x->ndim, x->shape);
        if (!r) return EM_ERR;
        const float *gd = em_tensor_data(g), *td = em_tensor_data(ts);
        float *rd = em_tensor_data(r);
#pragma omp parallel for schedule(static) if (N * half > EM_PARALLEL_MIN)
        for (int64_t k = 0; k < N; k++) {
            const float *t = td + k * 2 * half, *s = t + half, *gk = gd + k * half;
            float *ga = rd + k * 2 * half, *gb = ga + half;
#pragma omp simd
            for (int64_t i = 0; i < half; i++) {
                ga[i] = (gk[i] * s[i]) * (1.0f - t[i] * t[i]);
                gb[i] = (gk[i] * t[i]) * (s[i] * (1.0f - s[i]));
            }
        }
        gin[0] = r;
        return EM_OK;
    }
    /* op-built (recorded when creating a graph): t = tanh(a), s = sigmoid(b) */
    em_tensor *a = em_narrow(x, 1, 0, C), *b = em_narrow(x, 1, C, C);
    em_tensor *t = em_unary(EM_UN_TANH, a), *s = em_unary(EM_UN_SIGMOID, b);
    em_tensor *gt = em_binary(EM_BIN_MUL, g, s), *gs = em_binary(EM_BIN_MUL, g, t);
    em_tensor *ga = NULL, *gb = NULL;
    if (t && s && gt && gs) { /* through tanh's and sigmoid's own backward formulas */
        em_tensor *tt = em_binary(EM_BIN_MUL, t, t);
        em_tensor *dt = em_scalar_binary(EM_BIN_SUB, 1.0f, tt);
        em_tensor *one_s = em_scalar_binary(EM_BIN_SUB, 1.0f, s);
        em_tensor *ds = em_binary(EM_BIN_MUL, s, one_s);
        ga = em_binary(EM_BIN_MUL, gt, dt);
        gb = em_binary(EM_BIN_MUL, gs, ds);
        em_tensor_release(tt);
        em_tensor_release(dt);
        em_tensor_release(one_s);
        em_tensor_release(ds);
    }
    em_tensor *parts[2] = {ga, gb};
    gin[0] = ga && gb ? em_cat(2, parts, 1) : NULL;
    em_tensor_release(a);
    em_tensor_release(b);
    em_tensor_release(t);
    em_tensor_release(s);
    em_tensor_release(gt);
    em_tensor_release(gs);
    em_tensor_release(ga);
    em_tensor_release(gb);
    return gin[0] ? EM_OK : EM_ERR;
}
