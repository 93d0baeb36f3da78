/* em_softmax.c — softmax and log_softmax along one dim: one fused, stable
 * kernel (max subtracted, sum in double), backward composed of ops:
 *   softmax:     gx = y (g - sum(g y))
 *   log_softmax: gx = g - softmax(x) sum(g)                 (sums along dim) */
#include <math.h>

#include "em_autograd.h"
#include "em_nn.h"

#define PAR_MIN 32768

/* x viewed as [outer x n x inner] around the softmax dim. */
static void softmax_kernel(const float *x, float *y, int64_t outer, int64_t n, int64_t inner,
                           bool log_out) {
#pragma omp parallel for collapse(2) schedule(static) if (outer * n * inner > PAR_MIN)
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++) {
            const float *p = x + o * n * inner + i;
            float *q = y + o * n * inner + i;
            float m = -INFINITY;
            for (int64_t k = 0; k < n; k++)
                if (p[k * inner] > m) m = p[k * inner];
            double sum = 0;
            for (int64_t k = 0; k < n; k++) sum += exp((double)p[k * inner] - m);
            if (log_out) {
                const float ls = (float)log(sum);
                for (int64_t k = 0; k < n; k++) q[k * inner] = (p[k * inner] - m) - ls;
            } else {
                const double inv = 1.0 / sum;
                for (int64_t k = 0; k < n; k++)
                    q[k * inner] = (float)(exp((double)p[k * inner] - m) * inv);
            }
        }
    }
}

static em_tensor *softmax_op(em_tensor *x, int dim, bool log_out) {
    if (!x) return NULL;
    const char *fn = log_out ? "log_softmax" : "softmax";
    if (x->ndim == 0) {
        em_error_set("%s: expected a tensor with at least 1 dim, got a 0-dim tensor", fn);
        return NULL;
    }
    int d = em_normalize_dim(fn, dim, x->ndim);
    if (d < 0) return NULL;
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < d; i++) outer *= x->shape[i];
    for (int i = d + 1; i < x->ndim; i++) inner *= x->shape[i];
    em_tensor *xc = em_contiguous(x);
    em_tensor *out = xc ? em_tensor_empty(x->ndim, x->shape) : NULL;
    if (!out) {
        em_tensor_release(xc);
        return NULL;
    }
    softmax_kernel(em_tensor_data(xc), em_tensor_data(out), outer, x->shape[d], inner, log_out);
    em_node *node = em_record(log_out ? EM_OP_log_softmax : EM_OP_softmax, out, 1, &xc);
    if (node) {
        node->iarg[0] = d;
        em_node_save(node, xc);
        if (!log_out) { /* the output, without its graph, for the backward */
            em_tensor *alias = em_detach(out);
            em_node_save(node, alias);
            em_tensor_release(alias);
        }
    }
    em_tensor_release(xc);
    return out;
}

em_tensor *em_softmax(em_tensor *x, int dim) { return softmax_op(x, dim, false); }
em_tensor *em_log_softmax(em_tensor *x, int dim) { return softmax_op(x, dim, true); }

/* saved: x, y (graph-free); y is recomputed (recorded) when creating a graph */
int em_backward_softmax(em_node *n, em_tensor *g, em_tensor **gin) {
    int d = (int)n->iarg[0];
    em_tensor *y = em_grad_enabled() ? em_softmax(n->saved[0], d) : em_tensor_retain(n->saved[1]);
    em_tensor *gy = em_binary(EM_BIN_MUL, g, y);
    em_tensor *s = em_reduce(EM_RED_SUM, gy, 1, &d, true, 0);
    em_tensor *ys = em_binary(EM_BIN_MUL, y, s);
    gin[0] = em_binary(EM_BIN_SUB, gy, ys);
    em_tensor_release(y);
    em_tensor_release(gy);
    em_tensor_release(s);
    em_tensor_release(ys);
    return gin[0] ? EM_OK : EM_ERR;
}

/* saved: x */
int em_backward_log_softmax(em_node *n, em_tensor *g, em_tensor **gin) {
    int d = (int)n->iarg[0];
    em_tensor *p = em_softmax(n->saved[0], d);
    em_tensor *s = em_reduce(EM_RED_SUM, g, 1, &d, true, 0);
    em_tensor *ps = em_binary(EM_BIN_MUL, p, s);
    gin[0] = em_binary(EM_BIN_SUB, g, ps);
    em_tensor_release(p);
    em_tensor_release(s);
    em_tensor_release(ps);
    return gin[0] ? EM_OK : EM_ERR;
}
