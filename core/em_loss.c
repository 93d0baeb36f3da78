/* em_loss.c — fused losses: BCE-with-logits, cross-entropy (log-softmax +
 * NLL in one pass over each row) and NLL, with their backward.
 *
 * Each forward computes per-element (per-sample) values in one kernel and
 * records one node; the reduction is an ordinary differentiable sum/mean on
 * top. Backwards are written with ordinary ops when the gradient is being
 * recorded (create_graph), and cross-entropy's also has a fused kernel for
 * the usual first-order case. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "em_autograd.h"
#include "em_fastmath.h"
#include "em_iter.h"
#include "em_loss.h"

#define REL(t) em_tensor_release(t)

em_tensor *em_loss_reduce(em_tensor *per, em_reduction red, double divisor) {
    if (!per || red == EM_REDUCTION_NONE) return per;
    em_tensor *r;
    if (red == EM_REDUCTION_SUM) {
        r = em_reduce(EM_RED_SUM, per, 0, NULL, false, 0);
    } else if (divisor > 0) {
        em_tensor *s = em_reduce(EM_RED_SUM, per, 0, NULL, false, 0);
        r = em_binary_scalar(EM_BIN_DIV, s, (float)divisor);
        REL(s);
    } else {
        r = em_reduce(EM_RED_MEAN, per, 0, NULL, false, 0);
    }
    REL(per);
    return r;
}

int em_loss_check_reduction(const char *fn, em_reduction red) {
    if (red != EM_REDUCTION_NONE && red != EM_REDUCTION_MEAN && red != EM_REDUCTION_SUM)
        return em_error_set("%s: unknown reduction %d", fn, (int)red);
    return EM_OK;
}

/* ---- BCE with logits -------------------------------------------------- */

/* p = {out, logits, target}; max(x, 0) - x t + log(1 + exp(-|x|)), the last
 * term from em_fastmath (the vector loop for contiguous rows, its scalar
 * reference for strided or broadcast ones: the same bits either way). */
static void row_bce_with_logits(int64_t n, float *const *p, const int64_t *s, const void *c) {
    if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
        em_fast_bce_with_logits(n, p[0], p[1], p[2]);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float x = p[1][i * s[1]], t = p[2][i * s[2]];
        p[0][i * s[0]] = fmaxf(x, 0.0f) - x * t + em_log1p_exp_neg_abs(x);
    }
}

em_tensor *em_loss_bce_with_logits(em_tensor *logits, em_tensor *target, em_reduction red) {
    if (!logits || !target) return NULL;
    if (em_loss_check_reduction("bce_with_logits", red)) return NULL;
    if (!em_same_shape(logits, target)) {
        char a[EM_SHAPE_STR_MAX], b[EM_SHAPE_STR_MAX];
        em_error_set("bce_with_logits: logits %s and target %s must have the same shape",
                     em_shape_str(a, sizeof a, logits->ndim, logits->shape),
                     em_shape_str(b, sizeof b, target->ndim, target->shape));
        return NULL;
    }
    em_tensor *out = em_tensor_empty(logits->ndim, logits->shape);
    if (!out) return NULL;
    em_tensor *in[2] = {logits, target};
    em_iter_run(out, 2, in, row_bce_with_logits, NULL);
    em_node *node = em_record(EM_OP_bce_with_logits, out, 2, in);
    if (node) {
        em_node_save(node, logits);
        em_node_save(node, target);
    }
    return em_loss_reduce(out, red, 0);
}

/* p = {out, g, x, t}: g (sigmoid(x) - t), the products of the op-built form
 * (sigmoid, sub, mul) in one pass and without its two temporaries */
static void row_bce_with_logits_grad(int64_t n, float *const *p, const int64_t *s, const void *c) {
    for (int64_t i = 0; i < n; i++)
        p[0][i * s[0]] = p[1][i * s[1]] * (em_sigmoidf(p[2][i * s[2]]) - p[3][i * s[3]]);
}

/* d/dx = g (sigmoid(x) - t), d/dt = -g x */
int em_backward_bce_with_logits(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *x = n->saved[0], *t = n->saved[1];
    int rc = EM_OK;
    if (em_edge_needs_grad(n, 0) && !em_grad_enabled()) {
        /* first order: fused (g broadcasts, as it does in the mul below) */
        gin[0] = em_tensor_empty(x->ndim, x->shape);
        if (gin[0]) {
            em_tensor *in[3] = {g, x, t};
            em_iter_run(gin[0], 3, in, row_bce_with_logits_grad, NULL);
        } else {
            rc = EM_ERR;
        }
    } else if (em_edge_needs_grad(n, 0)) {
        em_tensor *sig = em_unary(EM_UN_SIGMOID, x);
        em_tensor *d = em_binary(EM_BIN_SUB, sig, t);
        gin[0] = em_binary(EM_BIN_MUL, g, d);
        REL(sig);
        REL(d);
        if (!gin[0]) rc = EM_ERR;
    }
    if (em_edge_needs_grad(n, 1)) {
        em_tensor *gx = em_binary(EM_BIN_MUL, g, x);
        gin[1] = em_unary(EM_UN_NEG, gx);
        REL(gx);
        if (!gin[1]) rc = EM_ERR;
    }
    return rc;
}

/* ---- class-indexed losses: shared checks ------------------------------ */

/* The labels and class weights of a batch, read once into plain arrays. */
typedef struct {
    int64_t n, k;
    int64_t *label; /* [n], 0-based */
    float *weight;  /* [k], or NULL for all ones */
    double weight_sum; /* sum_i weight[label[i]] (n without weights) */
} class_batch;

static void class_batch_free(class_batch *b) {
    free(b->label);
    free(b->weight);
    b->label = NULL;
    b->weight = NULL;
}

/* Checks x [N x K] (`what` names it in messages), labels [N] with integer
 * values in 0..K-1, and weight [K] (or NULL); fills b. */
static int class_batch_read(const char *fn, const char *what, em_tensor *x, em_tensor *labels,
                            em_tensor *weight, class_batch *b) {
    char sx[EM_SHAPE_STR_MAX], sl[EM_SHAPE_STR_MAX];
    memset(b, 0, sizeof *b);
    if (x->ndim != 2)
        return em_error_set("%s: %s %s must be 2-D [N x K]", fn, what,
                            em_shape_str(sx, sizeof sx, x->ndim, x->shape));
    b->n = x->shape[0];
    b->k = x->shape[1];
    if (b->k == 0)
        return em_error_set("%s: %s %s has no classes", fn, what,
                            em_shape_str(sx, sizeof sx, x->ndim, x->shape));
    if (labels->ndim != 1 || labels->shape[0] != b->n)
        return em_error_set("%s: labels %s must be [%lld], one per row of %s %s", fn,
                            em_shape_str(sl, sizeof sl, labels->ndim, labels->shape),
                            (long long)b->n, what, em_shape_str(sx, sizeof sx, x->ndim, x->shape));
    if (weight && (weight->ndim != 1 || weight->shape[0] != b->k))
        return em_error_set("%s: weight %s must be [%lld], one per class of %s %s", fn,
                            em_shape_str(sl, sizeof sl, weight->ndim, weight->shape),
                            (long long)b->k, what, em_shape_str(sx, sizeof sx, x->ndim, x->shape));
    float *lf = malloc((size_t)(b->n ? b->n : 1) * sizeof *lf);
    b->label = malloc((size_t)(b->n ? b->n : 1) * sizeof *b->label);
    if (weight) b->weight = malloc((size_t)b->k * sizeof *b->weight);
    if (!lf || !b->label || (weight && !b->weight)) {
        free(lf);
        class_batch_free(b);
        return em_error_set("%s: out of memory", fn);
    }
    em_tensor_read(labels, lf);
    if (weight) em_tensor_read(weight, b->weight);
    b->weight_sum = 0;
    for (int64_t i = 0; i < b->n; i++) {
        float v = lf[i];
        if (v != floorf(v) || !isfinite(v)) {
            free(lf);
            class_batch_free(b);
            return em_error_set("%s: label %g at position %lld is not an integer", fn, v,
                                (long long)i);
        }
        if (v < 0 || v >= (float)b->k) {
            free(lf);
            class_batch_free(b);
            return em_error_set("%s: label %g at position %lld is out of range 0..%lld (0-based)",
                                fn, v, (long long)i, (long long)b->k - 1);
        }
        b->label[i] = (int64_t)v;
        b->weight_sum += b->weight ? b->weight[b->label[i]] : 1.0;
    }
    free(lf);
    return EM_OK;
}

/* The divisor of a weighted mean, with an error when it is not positive. */
static int check_mean_divisor(const char *fn, const class_batch *b, em_reduction red) {
    if (red != EM_REDUCTION_MEAN) return EM_OK;
    if (b->n == 0) return em_error_set("%s: the mean over an empty batch is undefined", fn);
    if (!(b->weight_sum > 0))
        return em_error_set("%s: the class weights of the batch's labels sum to %g, so the "
                            "weighted mean is undefined", fn, b->weight_sum);
    return EM_OK;
}

/* ---- cross-entropy ---------------------------------------------------- */

em_tensor *em_loss_cross_entropy(em_tensor *logits, em_tensor *labels, em_tensor *weight,
                                 float label_smoothing, em_reduction red) {
    const char *fn = "cross_entropy";
    if (!logits || !labels) return NULL;
    if (em_loss_check_reduction(fn, red)) return NULL;
    if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f)) {
        em_error_set("%s: label_smoothing must be in [0, 1], got %g", fn, label_smoothing);
        return NULL;
    }
    class_batch b;
    if (class_batch_read(fn, "logits", logits, labels, weight, &b)) return NULL;
    if (check_mean_divisor(fn, &b, red)) {
        class_batch_free(&b);
        return NULL;
    }
    em_tensor *xc = em_contiguous(logits);
    em_tensor *out = em_tensor_empty(1, &b.n);
    em_tensor *lse = em_tensor_empty(1, &b.n);
    if (!xc || !out || !lse) {
        REL(xc); REL(out); REL(lse);
        class_batch_free(&b);
        return NULL;
    }
    const float *x = em_tensor_data(xc);
    float *o = out->storage->data, *l = lse->storage->data;
    const int64_t n = b.n, k = b.k;
    const float *w = b.weight;
    const int64_t *y = b.label;
    const double s = label_smoothing;
#pragma omp parallel for schedule(static) if (n * k > EM_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *row = x + i * k;
        float m = row[0];
        for (int64_t j = 1; j < k; j++) m = row[j] > m ? row[j] : m;
        double sum = 0;
        for (int64_t j = 0; j < k; j++) sum += exp((double)row[j] - m);
        double lse_i = isinf(m) ? (double)m : m + log(sum);
        double wy = w ? w[y[i]] : 1.0;
        double loss = (1.0 - s) * wy * (lse_i - row[y[i]]);
        if (s > 0) {
            double smooth = 0;
            for (int64_t j = 0; j < k; j++) smooth += (w ? w[j] : 1.0) * (lse_i - row[j]);
            loss += s / (double)k * smooth;
        }
        o[i] = (float)loss;
        l[i] = (float)lse_i;
    }
    REL(xc);
    em_node *node = em_record(EM_OP_cross_entropy, out, 1, &logits);
    if (node) {
        node->farg[0] = label_smoothing;
        em_node_save(node, logits);
        em_node_save(node, lse);
        em_node_save(node, labels);
        em_node_save(node, weight);
    }
    REL(lse);
    double divisor = b.weight_sum;
    class_batch_free(&b);
    return em_loss_reduce(out, red, divisor);
}

/* The gradient of loss_i with respect to x[i, :] is
 *   coef_i softmax(x_i) - q_i,
 *   coef_i = (1 - s) w[y_i] + (s / K) sum_k w[k],
 *   q_i[k] = (1 - s) w[y_i] [k == y_i] + (s / K) w[k];
 * both coef and q are constants of the logits. */
int em_backward_cross_entropy(em_node *nd, em_tensor *g, em_tensor **gin) {
    em_tensor *x = nd->saved[0], *lse = nd->saved[1], *labels = nd->saved[2];
    em_tensor *weight = nd->saved[3];
    const double s = nd->farg[0];
    class_batch b;
    if (class_batch_read("cross_entropy", "logits", x, labels, weight, &b)) return EM_ERR;
    const int64_t n = b.n, k = b.k;
    double wtotal = 0;
    for (int64_t j = 0; j < k; j++) wtotal += b.weight ? b.weight[j] : 1.0;
    int64_t qshape[2] = {n, k}, cshape[2] = {n, 1};
    em_tensor *result = NULL;

    if (!em_grad_enabled()) {
        /* fused: one pass, nothing recorded */
        em_tensor *xc = em_contiguous(x), *gc = em_contiguous(g), *lc = em_contiguous(lse);
        result = xc && gc && lc ? em_tensor_empty(2, qshape) : NULL;
        if (result) {
            const float *xd = em_tensor_data(xc), *gd = em_tensor_data(gc);
            const float *ld = em_tensor_data(lc);
            float *r = result->storage->data;
            const float *w = b.weight;
            const int64_t *y = b.label;
#pragma omp parallel for schedule(static) if (n * k > EM_PARALLEL_MIN)
            for (int64_t i = 0; i < n; i++) {
                double wy = w ? w[y[i]] : 1.0;
                double coef = (1.0 - s) * wy + s / (double)k * wtotal;
                for (int64_t j = 0; j < k; j++) {
                    double p = exp((double)xd[i * k + j] - ld[i]);
                    double q = s / (double)k * (w ? w[j] : 1.0) + (j == y[i] ? (1.0 - s) * wy : 0.0);
                    r[i * k + j] = (float)(gd[i] * (coef * p - q));
                }
            }
        }
        REL(xc); REL(gc); REL(lc);
    } else {
        /* recorded: softmax and the products as ops, so this is differentiable */
        em_tensor *coef = em_tensor_empty(2, cshape), *q = em_tensor_empty(2, qshape);
        if (coef && q) {
            float *c = coef->storage->data, *qd = q->storage->data;
            for (int64_t i = 0; i < n; i++) {
                double wy = b.weight ? b.weight[b.label[i]] : 1.0;
                c[i] = (float)((1.0 - s) * wy + s / (double)k * wtotal);
                for (int64_t j = 0; j < k; j++)
                    qd[i * k + j] = (float)(s / (double)k * (b.weight ? b.weight[j] : 1.0) +
                                            (j == b.label[i] ? (1.0 - s) * wy : 0.0));
            }
            int dim1 = 1;
            em_tensor *lse_r = em_reduce(EM_RED_LOGSUMEXP, x, 1, &dim1, true, 0);
            em_tensor *shifted = em_binary(EM_BIN_SUB, x, lse_r);
            em_tensor *p = em_unary(EM_UN_EXP, shifted);
            em_tensor *cp = em_binary(EM_BIN_MUL, p, coef);
            em_tensor *d = em_binary(EM_BIN_SUB, cp, q);
            em_tensor *gcol = em_reshape(g, 2, cshape);
            result = em_binary(EM_BIN_MUL, d, gcol);
            REL(lse_r); REL(shifted); REL(p); REL(cp); REL(d); REL(gcol);
        }
        REL(coef);
        REL(q);
    }
    class_batch_free(&b);
    gin[0] = result;
    return result ? EM_OK : EM_ERR;
}

/* ---- NLL ---------------------------------------------------------------- */

em_tensor *em_loss_nll(em_tensor *logprobs, em_tensor *labels, em_tensor *weight,
                       em_reduction red) {
    const char *fn = "nll";
    if (!logprobs || !labels) return NULL;
    if (em_loss_check_reduction(fn, red)) return NULL;
    class_batch b;
    if (class_batch_read(fn, "log-probabilities", logprobs, labels, weight, &b)) return NULL;
    if (check_mean_divisor(fn, &b, red)) {
        class_batch_free(&b);
        return NULL;
    }
    /* -w[y_i] x[i, y_i], by gather (whose gradient is a scatter) */
    int64_t col[2] = {b.n, 1};
    em_tensor *idx = em_tensor_empty(2, col);
    em_tensor *wy = em_tensor_empty(1, &b.n);
    em_tensor *per = NULL;
    if (idx && wy) {
        for (int64_t i = 0; i < b.n; i++) {
            idx->storage->data[i] = (float)b.label[i];
            wy->storage->data[i] = -(b.weight ? b.weight[b.label[i]] : 1.0f);
        }
        em_tensor *picked = em_gather(logprobs, 1, idx);
        em_tensor *flat = em_reshape(picked, 1, &b.n);
        per = em_binary(EM_BIN_MUL, flat, wy);
        REL(picked);
        REL(flat);
    }
    REL(idx);
    REL(wy);
    double divisor = b.weight_sum;
    class_batch_free(&b);
    return em_loss_reduce(per, red, divisor);
}
