/* em_norm.c — batch normalization: a fused forward (per-channel statistics in
 * double, one pass to normalize, the running statistics updated in place), a
 * fused backward when the gradient is not being recorded, and the same
 * gradient composed of ordinary ops when it is (create_graph), so that
 * gradient penalties through BatchNorm work. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "em_autograd.h"
#include "em_nn.h"

#define PAR_MIN 32768

/* x viewed as [N x C x S]: S is the product of the dims after the channels. */
typedef struct {
    int64_t N, C, S;
} bn_layout;

static bn_layout layout_of(const em_tensor *x) {
    bn_layout l = {x->shape[0], x->shape[1], 1};
    for (int i = 2; i < x->ndim; i++) l.S *= x->shape[i];
    return l;
}

/* A per-channel tensor given to batch_norm must be [C]. */
static int check_channel(const char *what, const em_tensor *t, const em_tensor *x) {
    if (!t || (t->ndim == 1 && t->shape[0] == x->shape[1])) return EM_OK;
    char s[EM_SHAPE_STR_MAX], sx[EM_SHAPE_STR_MAX];
    return em_error_set("batch_norm: %s %s must be [%lld] (one per channel of input %s)", what,
                        em_shape_str(s, sizeof s, t->ndim, t->shape), (long long)x->shape[1],
                        em_shape_str(sx, sizeof sx, x->ndim, x->shape));
}

/* The values of a 1-D tensor (any stride) into out, or `fill` when t is NULL. */
static void read_channels(const em_tensor *t, int64_t C, float fill, float *out) {
    if (!t) {
        for (int64_t c = 0; c < C; c++) out[c] = fill;
        return;
    }
    const float *d = em_tensor_data(t);
    for (int64_t c = 0; c < C; c++) out[c] = d[c * t->strides[0]];
}

/* mean[c] and biased var[c] of x [N x C x S] over N and S, in double. */
static void channel_stats(const float *x, bn_layout l, double *mean, double *var) {
    const int64_t M = l.N * l.S;
#pragma omp parallel for schedule(static) if (l.N * l.C * l.S > PAR_MIN)
    for (int64_t c = 0; c < l.C; c++) {
        double sum = 0, sq = 0;
        for (int64_t n = 0; n < l.N; n++) {
            const float *p = x + (n * l.C + c) * l.S;
            for (int64_t s = 0; s < l.S; s++) sum += p[s];
        }
        const double mu = sum / (double)M;
        for (int64_t n = 0; n < l.N; n++) {
            const float *p = x + (n * l.C + c) * l.S;
            for (int64_t s = 0; s < l.S; s++) sq += (p[s] - mu) * (p[s] - mu);
        }
        mean[c] = mu;
        var[c] = sq / (double)M;
    }
}

/* y = x scale[c] + shift[c]. */
static void affine_channels(const float *x, float *y, bn_layout l, const float *scale,
                            const float *shift) {
#pragma omp parallel for collapse(2) schedule(static) if (l.N * l.C * l.S > PAR_MIN)
    for (int64_t n = 0; n < l.N; n++)
        for (int64_t c = 0; c < l.C; c++) {
            const float *p = x + (n * l.C + c) * l.S;
            float *q = y + (n * l.C + c) * l.S;
            const float a = scale[c], b = shift[c];
            for (int64_t s = 0; s < l.S; s++) q[s] = p[s] * a + b;
        }
}

em_tensor *em_batch_norm(em_tensor *x, em_tensor *running_mean, em_tensor *running_var,
                         em_tensor *weight, em_tensor *bias, bool training, float momentum,
                         float eps) {
    if (!x) return NULL;
    char sx[EM_SHAPE_STR_MAX];
    if (x->ndim < 2) {
        em_error_set("batch_norm: input %s must be at least 2-D [N x C x ...]",
                     em_shape_str(sx, sizeof sx, x->ndim, x->shape));
        return NULL;
    }
    if (check_channel("running_mean", running_mean, x) ||
        check_channel("running_var", running_var, x) || check_channel("weight", weight, x) ||
        check_channel("bias", bias, x))
        return NULL;
    if (!running_mean != !running_var) {
        em_error_set("batch_norm: give both running_mean and running_var, or neither");
        return NULL;
    }
    if ((running_mean && running_mean->requires_grad) || (running_var && running_var->requires_grad)) {
        em_error_set("batch_norm: running_mean and running_var must not require grad");
        return NULL;
    }
    if (!(eps >= 0.0f) || !isfinite(eps)) {
        em_error_set("batch_norm: eps must be >= 0, got %g", eps);
        return NULL;
    }
    const bn_layout l = layout_of(x);
    const bool batch_stats = training || !running_mean;
    const int64_t M = l.N * l.S;
    if (batch_stats && M <= 1) {
        em_error_set("batch_norm: expected more than 1 value per channel when using batch "
                     "statistics, got input %s",
                     em_shape_str(sx, sizeof sx, x->ndim, x->shape));
        return NULL;
    }
    int64_t C = l.C;
    em_tensor *xc = em_contiguous(x);
    em_tensor *out = xc ? em_tensor_empty(x->ndim, x->shape) : NULL;
    em_tensor *mean = out ? em_tensor_empty(1, &C) : NULL;
    em_tensor *invstd = mean ? em_tensor_empty(1, &C) : NULL;
    double *stats = invstd ? malloc((size_t)(2 * C + 1) * sizeof(double)) : NULL;
    float *aff = stats ? malloc((size_t)(4 * C + 1) * sizeof(float)) : NULL;
    if (!aff) {
        if (invstd) em_error_set("batch_norm: out of memory");
        em_tensor_release(xc);
        em_tensor_release(out);
        em_tensor_release(mean);
        em_tensor_release(invstd);
        free(stats);
        return NULL;
    }
    float *mu = em_tensor_data(mean), *is = em_tensor_data(invstd);
    float *w = aff, *b = aff + C, *scale = aff + 2 * C, *shift = aff + 3 * C;
    if (batch_stats) {
        double *m = stats, *v = stats + C;
        channel_stats(em_tensor_data(xc), l, m, v);
        for (int64_t c = 0; c < C; c++) {
            mu[c] = (float)m[c];
            is[c] = (float)(1.0 / sqrt(v[c] + eps));
        }
        if (training && running_mean) { /* PyTorch: the running var is unbiased */
            float *rm = em_tensor_data(running_mean), *rv = em_tensor_data(running_var);
            const int64_t sm = running_mean->strides[0], sv = running_var->strides[0];
            for (int64_t c = 0; c < C; c++) {
                rm[c * sm] = (1.0f - momentum) * rm[c * sm] + momentum * (float)m[c];
                rv[c * sv] = (1.0f - momentum) * rv[c * sv] +
                             momentum * (float)(v[c] * (double)M / (double)(M - 1));
            }
            running_mean->storage->version++;
            running_var->storage->version++;
        }
    } else {
        read_channels(running_mean, C, 0.0f, mu);
        read_channels(running_var, C, 1.0f, is);
        for (int64_t c = 0; c < C; c++) is[c] = 1.0f / sqrtf(is[c] + eps);
    }
    read_channels(weight, C, 1.0f, w);
    read_channels(bias, C, 0.0f, b);
    for (int64_t c = 0; c < C; c++) {
        scale[c] = is[c] * w[c];
        shift[c] = b[c] - mu[c] * scale[c];
    }
    affine_channels(em_tensor_data(xc), em_tensor_data(out), l, scale, shift);
    free(stats);
    free(aff);

    em_tensor *in[3] = {xc, weight, bias};
    em_node *node = em_record(EM_OP_batch_norm, out, 3, in);
    if (node) {
        node->iarg[0] = batch_stats;
        node->farg[0] = eps;
        em_node_save(node, xc);
        em_node_save(node, weight);
        em_node_save(node, mean);
        em_node_save(node, invstd);
    }
    em_tensor_release(xc);
    em_tensor_release(mean);
    em_tensor_release(invstd);
    return out;
}

/* ---- backward -------------------------------------------------------- */

/* The gradient in one fused pass (used when it is not being recorded):
 * gx = w istd (g - [batch stats] (mean(g) + xhat mean(g xhat))),
 * gw = sum(g xhat), gb = sum(g), over N and S per channel. */
static int fused_backward(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *x = n->saved[0], *weight = n->saved[1];
    const float *mu = em_tensor_data(n->saved[2]), *is = em_tensor_data(n->saved[3]);
    const bool batch_stats = n->iarg[0] != 0;
    const bn_layout l = layout_of(x);
    const int64_t C = l.C, M = l.N * l.S;
    em_tensor *gc = em_contiguous(g);
    double *sums = gc ? malloc((size_t)(2 * C + 1) * sizeof(double)) : NULL;
    float *coef = sums ? malloc((size_t)(3 * C + 1) * sizeof(float)) : NULL;
    if (!coef) {
        if (gc) em_error_set("batch_norm backward: out of memory");
        em_tensor_release(gc);
        free(sums);
        return EM_ERR;
    }
    const float *xd = em_tensor_data(x), *gd = em_tensor_data(gc);
    double *sum_g = sums, *sum_gx = sums + C;
#pragma omp parallel for schedule(static) if (l.N * C * l.S > PAR_MIN)
    for (int64_t c = 0; c < C; c++) {
        double sg = 0, sgx = 0;
        for (int64_t i = 0; i < l.N; i++) {
            const float *xp = xd + (i * C + c) * l.S, *gp = gd + (i * C + c) * l.S;
            for (int64_t s = 0; s < l.S; s++) {
                sg += gp[s];
                sgx += gp[s] * (xp[s] - mu[c]);
            }
        }
        sum_g[c] = sg;
        sum_gx[c] = sgx * is[c]; /* sum of g xhat */
    }
    int rc = EM_OK;
    if (em_edge_needs_grad(n, 0)) {
        /* gx = a g + b x + d per channel, with a = w istd,
         * b = -a istd^2 sum(g xc)/M = -a istd sum(g xhat)/M, d = -a sum(g)/M - b mu */
        float *w = coef, *a = coef + C, *bb = coef + 2 * C;
        read_channels(weight, C, 1.0f, w);
        em_tensor *gx = em_tensor_empty(x->ndim, x->shape);
        if (gx) {
            float *shift = malloc((size_t)(C + 1) * sizeof(float));
            if (shift) {
                for (int64_t c = 0; c < C; c++) {
                    a[c] = w[c] * is[c];
                    bb[c] = batch_stats ? (float)(-a[c] * is[c] * sum_gx[c] / (double)M) : 0.0f;
                    shift[c] = batch_stats ? (float)(-a[c] * sum_g[c] / (double)M) - bb[c] * mu[c]
                                           : 0.0f;
                }
                float *o = em_tensor_data(gx);
#pragma omp parallel for collapse(2) schedule(static) if (l.N * C * l.S > PAR_MIN)
                for (int64_t i = 0; i < l.N; i++)
                    for (int64_t c = 0; c < C; c++) {
                        const int64_t base = (i * C + c) * l.S;
                        for (int64_t s = 0; s < l.S; s++)
                            o[base + s] = a[c] * gd[base + s] + bb[c] * xd[base + s] + shift[c];
                    }
                free(shift);
            } else {
                em_tensor_release(gx);
                gx = NULL;
                em_error_set("batch_norm backward: out of memory");
            }
        }
        if (!(gin[0] = gx)) rc = EM_ERR;
    }
    for (int k = 1; k <= 2 && rc == EM_OK; k++) {
        if (!em_edge_needs_grad(n, k)) continue;
        em_tensor *t = em_tensor_empty(1, &C);
        if (!t) {
            rc = EM_ERR;
            break;
        }
        float *o = em_tensor_data(t);
        for (int64_t c = 0; c < C; c++) o[c] = (float)(k == 1 ? sum_gx[c] : sum_g[c]);
        gin[k] = t;
    }
    em_tensor_release(gc);
    free(sums);
    free(coef);
    return rc;
}

/* Temporaries of the composed backward, released together. */
typedef struct {
    em_tensor *items[24];
    int n;
} temps;

static em_tensor *keep(temps *t, em_tensor *x) {
    t->items[t->n++] = x;
    return x;
}

/* The same gradient written with recording ops (create_graph): with batch
 * statistics, mean and istd are recomputed from x so that their dependence
 * on x is part of the recorded graph. */
static int composed_backward(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *x = n->saved[0], *weight = n->saved[1];
    const bool batch_stats = n->iarg[0] != 0;
    int dims[EM_MAX_DIMS], nd = 0;
    int64_t cshape[EM_MAX_DIMS]; /* [1 x C x 1 ...] */
    for (int i = 0; i < x->ndim; i++) {
        cshape[i] = i == 1 ? x->shape[1] : 1;
        if (i != 1) dims[nd++] = i;
    }
    temps t = {{0}, 0};
    em_tensor *mean, *istd, *xc;
    if (batch_stats) {
        mean = keep(&t, em_reduce(EM_RED_MEAN, x, nd, dims, true, 0));
        xc = keep(&t, em_binary(EM_BIN_SUB, x, mean));
        em_tensor *sq = keep(&t, em_binary(EM_BIN_MUL, xc, xc));
        em_tensor *var = keep(&t, em_reduce(EM_RED_MEAN, sq, nd, dims, true, 0));
        em_tensor *ve = keep(&t, em_binary_scalar(EM_BIN_ADD, var, n->farg[0]));
        istd = keep(&t, em_unary(EM_UN_RSQRT, ve));
    } else {
        mean = keep(&t, em_reshape(n->saved[2], x->ndim, cshape));
        istd = keep(&t, em_reshape(n->saved[3], x->ndim, cshape));
        xc = keep(&t, em_binary(EM_BIN_SUB, x, mean));
    }
    em_tensor *xhat = keep(&t, em_binary(EM_BIN_MUL, xc, istd));
    int rc = xhat ? EM_OK : EM_ERR;
    if (rc == EM_OK && em_edge_needs_grad(n, 0)) {
        em_tensor *gxhat = g;
        if (weight) {
            em_tensor *wc = keep(&t, em_reshape(weight, x->ndim, cshape));
            gxhat = keep(&t, em_binary(EM_BIN_MUL, g, wc));
        }
        if (batch_stats) {
            em_tensor *m1 = keep(&t, em_reduce(EM_RED_MEAN, gxhat, nd, dims, true, 0));
            em_tensor *gx_ = keep(&t, em_binary(EM_BIN_MUL, gxhat, xhat));
            em_tensor *m2 = keep(&t, em_reduce(EM_RED_MEAN, gx_, nd, dims, true, 0));
            em_tensor *d1 = keep(&t, em_binary(EM_BIN_SUB, gxhat, m1));
            em_tensor *xm = keep(&t, em_binary(EM_BIN_MUL, xhat, m2));
            em_tensor *d2 = keep(&t, em_binary(EM_BIN_SUB, d1, xm));
            gin[0] = em_binary(EM_BIN_MUL, d2, istd);
        } else {
            gin[0] = em_binary(EM_BIN_MUL, gxhat, istd);
        }
        if (!gin[0]) rc = EM_ERR;
    }
    if (rc == EM_OK && em_edge_needs_grad(n, 1)) {
        em_tensor *gx_ = keep(&t, em_binary(EM_BIN_MUL, g, xhat));
        if (!(gin[1] = em_reduce(EM_RED_SUM, gx_, nd, dims, false, 0))) rc = EM_ERR;
    }
    if (rc == EM_OK && em_edge_needs_grad(n, 2))
        if (!(gin[2] = em_reduce(EM_RED_SUM, g, nd, dims, false, 0))) rc = EM_ERR;
    for (int i = 0; i < t.n; i++) em_tensor_release(t.items[i]);
    return rc;
}

/* saved: x (contiguous), weight or NULL, mean [C], istd [C] */
int em_backward_batch_norm(em_node *n, em_tensor *g, em_tensor **gin) {
    return em_grad_enabled() ? composed_backward(n, g, gin) : fused_backward(n, g, gin);
}
