/* test_optim.c — the fused losses (em_loss.c) and the optimizer updates and
 * clipping (em_optim.c) against naive double-precision references: odd sizes,
 * a batch of 1, one class, non-contiguous logits, tensors large enough for
 * the threaded path; both backward paths of cross-entropy; and the errors,
 * which must leave everything unchanged. */
#include <stdlib.h>

#include "em_autograd.h"
#include "em_fastmath.h"
#include "em_loss.h"
#include "em_optim.h"
#include "em_rng.h"
#include "test.h"

#define REL(t) em_tensor_release(t)

static em_tensor *randn_t(int ndim, int64_t a, int64_t b) {
    int64_t s[2] = {a, b};
    return em_randn(ndim, s);
}

/* Row-major copy of t's values as doubles (caller frees). */
static double *values(const em_tensor *t) {
    float *f = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *f);
    double *d = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *d);
    em_tensor_read(t, f);
    for (int64_t i = 0; i < t->numel; i++) d[i] = f[i];
    free(f);
    return d;
}

/* The value of a one-element tensor. */
static double item(const em_tensor *t) {
    float v = NAN;
    if (t && t->numel == 1) em_tensor_read(t, &v);
    return v;
}

/* ---- BCE with logits ------------------------------------------------------ */

static double naive_bce_logits(double x, double t) {
    double p = 1.0 / (1.0 + exp(-x));
    /* exact in double for |x| < 30; the stable form beyond */
    if (fabs(x) < 30) return -(t * log(p) + (1 - t) * log(1 - p));
    return (x > 0 ? x : 0) - x * t + log1p(exp(-fabs(x)));
}

TEST(bce_with_logits_matches_naive_on_odd_and_transposed_shapes) {
    em_rng_seed(1);
    em_tensor *x0 = randn_t(2, 7, 3), *t = em_rand(2, (int64_t[]){3, 7});
    em_tensor *x = em_transpose(x0, 0, 1); /* [3 x 7], non-contiguous */
    CHECK(!em_tensor_is_contiguous(x));
    em_tensor *l = em_loss_bce_with_logits(x, t, EM_REDUCTION_NONE);
    em_tensor *s = em_loss_bce_with_logits(x, t, EM_REDUCTION_SUM);
    em_tensor *m = em_loss_bce_with_logits(x, t, EM_REDUCTION_MEAN);
    CHECK(l && s && m && l->ndim == 2 && l->shape[0] == 3 && l->shape[1] == 7 && s->ndim == 0);
    double *xv = values(x), *tv = values(t), *lv = values(l), total = 0;
    for (int i = 0; i < 21; i++) {
        double want = naive_bce_logits(xv[i], tv[i]);
        CHECK_NEAR(lv[i], want, 1e-5);
        total += want;
    }
    CHECK_NEAR(item(s), total, 1e-5);
    CHECK_NEAR(item(m), total / 21, 1e-5);
    free(xv); free(tv); free(lv);
    REL(x0); REL(t); REL(x); REL(l); REL(s); REL(m);
}

TEST(bce_with_logits_is_finite_at_extreme_logits) {
    float xs[6] = {100, -100, 100, -100, 88, -104};
    float ts[6] = {1, 0, 0, 1, 0.5f, 0.25f};
    em_tensor *x = em_tensor_from_data(1, (int64_t[]){6}, xs);
    em_tensor *t = em_tensor_from_data(1, (int64_t[]){6}, ts);
    em_set_requires_grad(x, true);
    em_tensor *l = em_loss_bce_with_logits(x, t, EM_REDUCTION_NONE);
    double *lv = values(l);
    for (int i = 0; i < 6; i++) CHECK(isfinite(lv[i]));
    CHECK_NEAR(lv[0], 0, 1e-6);
    CHECK_NEAR(lv[1], 0, 1e-6);
    CHECK_NEAR(lv[2], 100, 1e-6);
    CHECK_NEAR(lv[3], 100, 1e-6);
    CHECK_NEAR(lv[4], 44, 1e-6);
    CHECK_NEAR(lv[5], 26, 1e-6);
    em_tensor *s = em_loss_bce_with_logits(x, t, EM_REDUCTION_SUM);
    CHECK(em_backward(s, NULL, false, false) == EM_OK);
    double *g = values(x->grad);
    /* d/dx = sigmoid(x) - t */
    CHECK_NEAR(g[0], 0, 1e-6);
    CHECK_NEAR(g[1], 0, 1e-6);
    CHECK_NEAR(g[2], 1, 1e-6);
    CHECK_NEAR(g[3], -1, 1e-6);
    CHECK_NEAR(g[4], 0.5, 1e-6);
    CHECK_NEAR(g[5], -0.25, 1e-6);
    free(lv); free(g);
    REL(x); REL(t); REL(l); REL(s);
}

TEST(bce_with_logits_rejects_mismatched_shapes) {
    em_tensor *x = randn_t(2, 2, 3), *t = randn_t(2, 3, 2);
    CHECK(em_loss_bce_with_logits(x, t, EM_REDUCTION_MEAN) == NULL);
    CHECK_ERROR("bce_with_logits: logits [2 x 3] and target [3 x 2] must have the same shape");
    REL(x); REL(t);
}

/* ---- cross-entropy and NLL -------------------------------------------------- */

/* loss_i of cross-entropy, the definition written out (double). */
static double naive_ce(const double *x, int64_t k, int64_t y, const double *w, double s) {
    double m = x[0], sum = 0;
    for (int64_t j = 1; j < k; j++) m = x[j] > m ? x[j] : m;
    for (int64_t j = 0; j < k; j++) sum += exp(x[j] - m);
    double lse = m + log(sum), smooth = 0;
    for (int64_t j = 0; j < k; j++) smooth += (w ? w[j] : 1) * (lse - x[j]);
    return (1 - s) * (w ? w[y] : 1) * (lse - x[y]) + s / (double)k * smooth;
}

static em_tensor *labels_of(int64_t n, const float *v) {
    return em_tensor_from_data(1, &n, v);
}

/* Checks forward (all reductions) and the fused gradient of cross-entropy for
 * logits [n x k] (transposed storage when `transposed`) against the naive
 * loss and its central differences. */
static void check_cross_entropy(int64_t n, int64_t k, bool transposed, bool weighted, float s) {
    em_tensor *x0 = transposed ? randn_t(2, k, n) : randn_t(2, n, k);
    em_tensor *x = transposed ? em_transpose(x0, 0, 1) : em_tensor_retain(x0);
    float *lab = malloc((size_t)n * sizeof *lab), *wf = malloc((size_t)k * sizeof *wf);
    double *w = malloc((size_t)k * sizeof *w);
    for (int64_t i = 0; i < n; i++) lab[i] = (float)em_rng_below((uint64_t)k);
    for (int64_t j = 0; j < k; j++) w[j] = wf[j] = 0.5f + (float)j / (float)k;
    em_tensor *y = labels_of(n, lab);
    em_tensor *wt = weighted ? em_tensor_from_data(1, &k, wf) : NULL;
    em_tensor *none = em_loss_cross_entropy(x, y, wt, s, EM_REDUCTION_NONE);
    em_tensor *sum = em_loss_cross_entropy(x, y, wt, s, EM_REDUCTION_SUM);
    em_tensor *mean = em_loss_cross_entropy(x, y, wt, s, EM_REDUCTION_MEAN);
    CHECK(none && sum && mean && none->ndim == 1 && none->shape[0] == n);
    double *xv = values(x), *lv = values(none), total = 0, wsum = 0;
    for (int64_t i = 0; i < n; i++) {
        double want = naive_ce(xv + i * k, k, (int64_t)lab[i], weighted ? w : NULL, s);
        CHECK_NEAR(lv[i], want, 1e-5);
        total += want;
        wsum += weighted ? w[(int64_t)lab[i]] : 1;
    }
    CHECK_NEAR(item(sum), total, 1e-5);
    CHECK_NEAR(item(mean), total / wsum, 1e-5);

    /* fused gradient of the sum against central differences of the naive loss */
    em_tensor *xl = em_contiguous(x);
    em_tensor *leaf = em_clone(xl);
    em_set_requires_grad(leaf, true);
    em_tensor *l = em_loss_cross_entropy(leaf, y, wt, s, EM_REDUCTION_SUM);
    CHECK(em_backward(l, NULL, false, false) == EM_OK);
    double *g = values(leaf->grad);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < k; j++) {
            double row[64];
            for (int64_t c = 0; c < k; c++) row[c] = xv[i * k + c];
            const double h = 1e-5;
            row[j] += h;
            double up = naive_ce(row, k, (int64_t)lab[i], weighted ? w : NULL, s);
            row[j] -= 2 * h;
            double down = naive_ce(row, k, (int64_t)lab[i], weighted ? w : NULL, s);
            CHECK_NEAR(g[i * k + j], (up - down) / (2 * h), 1e-4);
        }
    free(g); free(xv); free(lv); free(lab); free(wf); free(w);
    REL(x0); REL(x); REL(y); REL(wt); REL(none); REL(sum); REL(mean); REL(xl); REL(leaf); REL(l);
}

TEST(cross_entropy_matches_naive_on_awkward_shapes) {
    em_rng_seed(2);
    check_cross_entropy(1, 1, false, false, 0.0f);  /* one sample, one class */
    check_cross_entropy(1, 7, false, false, 0.0f);  /* batch of 1 */
    check_cross_entropy(5, 3, true, false, 0.0f);   /* non-contiguous logits */
    check_cross_entropy(9, 11, false, true, 0.0f);  /* class weights */
    check_cross_entropy(6, 5, true, false, 0.2f);   /* label smoothing */
    check_cross_entropy(7, 13, false, true, 0.35f); /* both */
}

TEST(cross_entropy_is_stable_for_huge_logits) {
    float xs[6] = {1000, -1000, 0, -1000, 1000, 999};
    float lab[2] = {0, 2};
    em_tensor *x = em_tensor_from_data(2, (int64_t[]){2, 3}, xs);
    em_tensor *y = labels_of(2, lab);
    em_tensor *l = em_loss_cross_entropy(x, y, NULL, 0, EM_REDUCTION_NONE);
    double *lv = values(l);
    CHECK_NEAR(lv[0], 0, 1e-6);
    CHECK_NEAR(lv[1], 1 + log1p(exp(-1.0)), 1e-5); /* lse - 999 */
    free(lv);
    REL(x); REL(y); REL(l);
}

/* The recorded (create_graph) gradient equals the fused one. */
TEST(cross_entropy_recorded_gradient_equals_fused_gradient) {
    em_rng_seed(3);
    const int64_t n = 4, k = 6;
    em_tensor *x = randn_t(2, n, k);
    em_set_requires_grad(x, true);
    float lab[4] = {5, 0, 2, 2}, wf[6] = {1, 2, 0.5f, 1, 3, 0.25f};
    em_tensor *y = labels_of(n, lab), *w = em_tensor_from_data(1, (int64_t[]){6}, wf);
    em_tensor *l = em_loss_cross_entropy(x, y, w, 0.15f, EM_REDUCTION_MEAN);
    em_tensor *fused = NULL, *recorded = NULL;
    CHECK(em_grad(l, NULL, 1, &x, &fused, true, false) == EM_OK);
    CHECK(em_grad(l, NULL, 1, &x, &recorded, true, true) == EM_OK);
    CHECK(fused && recorded && recorded->grad_fn != NULL);
    double *a = values(fused), *b = values(recorded);
    for (int64_t i = 0; i < n * k; i++) CHECK_NEAR(a[i], b[i], 1e-6);
    free(a); free(b);
    REL(x); REL(y); REL(w); REL(l); REL(fused); REL(recorded);
}

TEST(nll_matches_naive) {
    em_rng_seed(4);
    em_tensor *x = randn_t(2, 5, 4);
    float lab[5] = {3, 0, 1, 3, 2}, wf[4] = {0.5f, 1, 2, 4};
    em_tensor *y = labels_of(5, lab), *w = em_tensor_from_data(1, (int64_t[]){4}, wf);
    em_tensor *none = em_loss_nll(x, y, NULL, EM_REDUCTION_NONE);
    em_tensor *mean = em_loss_nll(x, y, w, EM_REDUCTION_MEAN);
    double *xv = values(x), *lv = values(none), num = 0, den = 0;
    for (int i = 0; i < 5; i++) {
        int c = (int)lab[i];
        CHECK_NEAR(lv[i], -xv[i * 4 + c], 1e-6);
        num += -wf[c] * xv[i * 4 + c];
        den += wf[c];
    }
    CHECK_NEAR(item(mean), num / den, 1e-6);
    free(xv); free(lv);
    REL(x); REL(y); REL(w); REL(none); REL(mean);
}

TEST(class_losses_reject_bad_arguments) {
    em_tensor *x = randn_t(2, 3, 4), *x1 = randn_t(1, 4, 1);
    float ok[3] = {0, 1, 3}, out_of_range[3] = {0, 4, 1}, neg[3] = {0, -1, 1};
    float frac[3] = {0, 1.5f, 1};
    em_tensor *y = labels_of(3, ok), *y2 = labels_of(2, ok), *yr = labels_of(3, out_of_range);
    em_tensor *yn = labels_of(3, neg), *yf = labels_of(3, frac);
    em_tensor *w3 = em_tensor_ones(1, (int64_t[]){3}), *w0 = em_tensor_zeros(1, (int64_t[]){4});
    CHECK(!em_loss_cross_entropy(x1, y, NULL, 0, EM_REDUCTION_MEAN));
    CHECK_ERROR("cross_entropy: logits [4] must be 2-D [N x K]");
    CHECK(!em_loss_cross_entropy(x, y2, NULL, 0, EM_REDUCTION_MEAN));
    CHECK_ERROR("cross_entropy: labels [2] must be [3], one per row of logits [3 x 4]");
    CHECK(!em_loss_cross_entropy(x, yr, NULL, 0, EM_REDUCTION_MEAN));
    CHECK_ERROR("cross_entropy: label 4 at position 1 is out of range 0..3 (0-based)");
    CHECK(!em_loss_cross_entropy(x, yn, NULL, 0, EM_REDUCTION_MEAN));
    CHECK_ERROR("label -1 at position 1 is out of range");
    CHECK(!em_loss_cross_entropy(x, yf, NULL, 0, EM_REDUCTION_MEAN));
    CHECK_ERROR("cross_entropy: label 1.5 at position 1 is not an integer");
    CHECK(!em_loss_cross_entropy(x, y, NULL, 1.5f, EM_REDUCTION_MEAN));
    CHECK_ERROR("cross_entropy: label_smoothing must be in [0, 1], got 1.5");
    CHECK(!em_loss_cross_entropy(x, y, w3, 0, EM_REDUCTION_MEAN));
    CHECK_ERROR("cross_entropy: weight [3] must be [4], one per class of logits [3 x 4]");
    CHECK(!em_loss_cross_entropy(x, y, w0, 0, EM_REDUCTION_MEAN));
    CHECK_ERROR("weighted mean is undefined");
    CHECK(!em_loss_nll(x, yr, NULL, EM_REDUCTION_SUM));
    CHECK_ERROR("nll: label 4 at position 1 is out of range");
    CHECK(!em_loss_nll(x1, y, NULL, EM_REDUCTION_SUM));
    CHECK_ERROR("nll: log-probabilities [4] must be 2-D [N x K]");
    REL(x); REL(x1); REL(y); REL(y2); REL(yr); REL(yn); REL(yf); REL(w3); REL(w0);
}

/* ---- optimizers ------------------------------------------------------------------ */

/* A parameter of m elements with a gradient, both N(0,1). */
static em_tensor *param_with_grad(int64_t m) {
    em_tensor *p = em_randn(1, &m);
    em_set_requires_grad(p, true);
    p->grad = em_randn(1, &m);
    return p;
}

/* Max |a - b| / (1 + |b|) over m elements. */
static double rel_err(const em_tensor *t, const double *ref, int64_t m) {
    double *v = values(t), worst = 0;
    for (int64_t i = 0; i < m; i++) {
        double e = fabs(v[i] - ref[i]) / (1 + fabs(ref[i]));
        if (!(e <= worst)) worst = e;
    }
    free(v);
    return worst;
}

/* Runs `steps` updates of each optimizer on parameters of sizes 1, 5 and
 * 40001 (threaded), with a fresh gradient each step, against the naive
 * reference in double. kind: 0 SGD, 1 Adam, 2 RMSprop. */
typedef struct {
    int kind;
    em_sgd_hparams sgd;
    em_adam_hparams adam;
    em_rmsprop_hparams rms;
} optim_case;

static void reference_step(const optim_case *c, double *p, const double *g, double *b0,
                           double *b1, double *b2, int64_t m, int64_t t) {
    for (int64_t i = 0; i < m; i++) {
        if (c->kind == 0) {
            const em_sgd_hparams *h = &c->sgd;
            double d = g[i] + h->weight_decay * p[i];
            if (h->momentum > 0) {
                b0[i] = t == 1 ? d : h->momentum * b0[i] + (1 - h->dampening) * d;
                d = h->nesterov ? d + h->momentum * b0[i] : b0[i];
            }
            p[i] -= h->lr * d;
        } else if (c->kind == 1) {
            const em_adam_hparams *h = &c->adam;
            double gi = g[i];
            if (h->decoupled) p[i] *= 1 - h->lr * h->weight_decay;
            else gi += h->weight_decay * p[i];
            b0[i] = h->beta1 * b0[i] + (1 - h->beta1) * gi;
            b1[i] = h->beta2 * b1[i] + (1 - h->beta2) * gi * gi;
            double v = b1[i];
            if (h->amsgrad) v = b2[i] = b2[i] > v ? b2[i] : v;
            double mhat = b0[i] / (1 - pow(h->beta1, (double)t));
            double vhat = v / (1 - pow(h->beta2, (double)t));
            p[i] -= h->lr * mhat / (sqrt(vhat) + h->eps);
        } else {
            const em_rmsprop_hparams *h = &c->rms;
            double gi = g[i] + h->weight_decay * p[i];
            b0[i] = h->alpha * b0[i] + (1 - h->alpha) * gi * gi;
            double avg;
            if (h->centered) {
                b2[i] = h->alpha * b2[i] + (1 - h->alpha) * gi;
                avg = sqrt(b0[i] - b2[i] * b2[i]) + h->eps;
            } else {
                avg = sqrt(b0[i]) + h->eps;
            }
            if (h->momentum > 0) {
                b1[i] = h->momentum * b1[i] + gi / avg;
                p[i] -= h->lr * b1[i];
            } else {
                p[i] -= h->lr * gi / avg;
            }
        }
    }
}

static void check_optimizer(const optim_case *c) {
    const int64_t sizes[3] = {1, 5, 40001};
    em_optim_slot slots[3];
    double *ref[3], *rb[3][3];
    for (int k = 0; k < 3; k++) {
        memset(&slots[k], 0, sizeof slots[k]);
        slots[k].param = param_with_grad(sizes[k]);
        for (int j = 0; j < 3; j++) {
            slots[k].buf[j] = em_tensor_zeros(1, &sizes[k]);
            rb[k][j] = calloc((size_t)sizes[k], sizeof(double));
        }
        ref[k] = values(slots[k].param);
    }
    for (int64_t t = 1; t <= 4; t++) {
        int rc = c->kind == 0 ? em_optim_sgd_step(&c->sgd, 3, slots)
                 : c->kind == 1 ? em_optim_adam_step(&c->adam, 3, slots)
                                : em_optim_rmsprop_step(&c->rms, 3, slots);
        CHECK(rc == EM_OK);
        for (int k = 0; k < 3; k++) {
            double *g = values(slots[k].param->grad);
            reference_step(c, ref[k], g, rb[k][0], rb[k][1], rb[k][2], sizes[k], t);
            free(g);
            double e = rel_err(slots[k].param, ref[k], sizes[k]);
            if (!(e < 2e-6)) printf("    kind %d size %lld step %lld: err %g\n", c->kind,
                                    (long long)sizes[k], (long long)t, e);
            CHECK(e < 2e-6);
            CHECK(slots[k].step == t);
            /* a fresh gradient for the next step */
            em_tensor_release(slots[k].param->grad);
            slots[k].param->grad = em_randn(1, &sizes[k]);
        }
    }
    for (int k = 0; k < 3; k++) {
        REL(slots[k].param);
        for (int j = 0; j < 3; j++) {
            REL(slots[k].buf[j]);
            free(rb[k][j]);
        }
        free(ref[k]);
    }
}

TEST(sgd_matches_naive_reference) {
    em_rng_seed(5);
    optim_case plain = {.kind = 0, .sgd = {.lr = 0.1}};
    optim_case momentum = {.kind = 0, .sgd = {.lr = 0.05, .momentum = 0.9, .dampening = 0.1,
                                              .weight_decay = 0.01}};
    optim_case nesterov = {.kind = 0, .sgd = {.lr = 0.05, .momentum = 0.8, .nesterov = true}};
    check_optimizer(&plain);
    check_optimizer(&momentum);
    check_optimizer(&nesterov);
}

TEST(adam_and_adamw_match_naive_reference) {
    em_rng_seed(6);
    optim_case adam = {.kind = 1, .adam = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8}};
    optim_case adam_l2 = {.kind = 1, .adam = {.lr = 1e-2, .beta1 = 0.5, .beta2 = 0.99, .eps = 1e-6,
                                              .weight_decay = 0.1, .amsgrad = true}};
    optim_case adamw = {.kind = 1, .adam = {.lr = 3e-2, .beta1 = 0.8, .beta2 = 0.9, .eps = 1e-8,
                                            .weight_decay = 0.05, .decoupled = true}};
    check_optimizer(&adam);
    check_optimizer(&adam_l2);
    check_optimizer(&adamw);
}

/* Adam's AVX-512 loop and the baseline loop: the same bits after 3 steps, on
 * sizes around the vector width and the threading threshold, with and without
 * amsgrad, L2 and decoupled decay (each step: the same gradients both ways). */
TEST(adam_avx512_loop_gives_the_baseline_bits) {
    if (em_fastmath_level() < EM_FASTMATH_AVX512) {
        printf("    (no AVX-512 on this CPU: one loop runs)\n");
        return;
    }
    const int64_t sizes[] = {1, 15, 17, 1000, 32769, 40001};
    em_adam_hparams hs[3] = {{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8},
                             {.lr = 1e-2, .beta1 = 0.5, .beta2 = 0.99, .eps = 1e-6, .weight_decay = 0.1,
                              .amsgrad = true},
                             {.lr = 3e-2, .beta1 = 0.8, .beta2 = 0.9, .eps = 1e-8, .weight_decay = 0.05,
                              .decoupled = true}};
    bool same = true;
    for (int hk = 0; hk < 3; hk++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            int64_t m = sizes[k];
            em_rng_seed(40 + (uint64_t)k);
            em_optim_slot slot[2];
            em_tensor *p0 = param_with_grad(m);
            for (int side = 0; side < 2; side++) {
                memset(&slot[side], 0, sizeof slot[side]);
                slot[side].param = em_clone(p0);
                em_set_requires_grad(slot[side].param, true);
                for (int j = 0; j < 3; j++) slot[side].buf[j] = em_tensor_zeros(1, &m);
            }
            for (int t = 0; t < 3; t++) {
                em_tensor *g = em_randn(1, &m);
                for (int side = 0; side < 2; side++) {
                    em_fastmath_cap_level(side == 0 ? EM_FASTMATH_AVX512 : EM_FASTMATH_AVX2);
                    em_tensor_release(slot[side].param->grad);
                    slot[side].param->grad = em_clone(g);
                    CHECK(em_optim_adam_step(&hs[hk], 1, &slot[side]) == EM_OK);
                }
                em_tensor_release(g);
            }
            em_fastmath_cap_level(EM_FASTMATH_AVX512);
            for (int j = -1; j < 3; j++) {
                const em_tensor *a = j < 0 ? slot[0].param : slot[0].buf[j];
                const em_tensor *b = j < 0 ? slot[1].param : slot[1].buf[j];
                if (memcmp(em_tensor_data(a), em_tensor_data(b), (size_t)m * sizeof(float)) != 0) {
                    if (same) printf("    hparams %d, size %lld: buffer %d differs\n", hk, (long long)m, j);
                    same = false;
                }
            }
            for (int side = 0; side < 2; side++) {
                REL(slot[side].param);
                for (int j = 0; j < 3; j++) REL(slot[side].buf[j]);
            }
            REL(p0);
        }
    CHECK(same);
}

TEST(rmsprop_matches_naive_reference) {
    em_rng_seed(7);
    optim_case plain = {.kind = 2, .rms = {.lr = 1e-2, .alpha = 0.99, .eps = 1e-8}};
    optim_case full = {.kind = 2, .rms = {.lr = 1e-2, .alpha = 0.9, .eps = 1e-6,
                                          .weight_decay = 0.01, .momentum = 0.5, .centered = true}};
    check_optimizer(&plain);
    check_optimizer(&full);
}

TEST(optimizer_skips_parameters_without_gradient) {
    em_rng_seed(8);
    int64_t m = 4;
    em_optim_slot s[2] = {{0}};
    s[0].param = param_with_grad(m);
    s[1].param = em_randn(1, &m);
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 2; j++) s[k].buf[j] = em_tensor_zeros(1, &m);
    double *before = values(s[1].param);
    em_adam_hparams h = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    CHECK(em_optim_adam_step(&h, 2, s) == EM_OK);
    CHECK(s[0].step == 1 && s[1].step == 0);
    CHECK(rel_err(s[1].param, before, m) == 0);
    free(before);
    for (int k = 0; k < 2; k++) {
        REL(s[k].param);
        for (int j = 0; j < 2; j++) REL(s[k].buf[j]);
    }
}

TEST(optimizer_errors_change_nothing) {
    em_rng_seed(9);
    int64_t m = 3, m2 = 2;
    em_optim_slot s[2] = {{0}};
    s[0].param = param_with_grad(m);
    s[1].param = param_with_grad(m);
    s[0].buf[0] = em_tensor_zeros(1, &m);
    s[0].buf[1] = em_tensor_zeros(1, &m);
    s[1].buf[0] = em_tensor_zeros(1, &m);
    s[1].buf[1] = em_tensor_zeros(1, &m2); /* wrong shape */
    double *before = values(s[0].param);
    em_adam_hparams h = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    CHECK(em_optim_adam_step(&h, 2, s) == EM_ERR);
    CHECK_ERROR("Adam: the exp_avg_sq buffer [2] of parameter 2 does not match its shape [3]");
    CHECK(rel_err(s[0].param, before, m) == 0 && s[0].step == 0);
    h.amsgrad = true;
    CHECK(em_optim_adam_step(&h, 1, s) == EM_ERR);
    CHECK_ERROR("Adam: parameter 1 has no max_exp_avg_sq buffer");
    h.amsgrad = false;
    h.lr = -1;
    CHECK(em_optim_adam_step(&h, 1, s) == EM_ERR);
    CHECK_ERROR("Adam: lr must be a finite number >= 0, got -1");
    h.lr = 0.1;
    h.beta2 = 1.0;
    h.decoupled = true;
    CHECK(em_optim_adam_step(&h, 1, s) == EM_ERR);
    CHECK_ERROR("AdamW: beta2 must be in [0, 1), got 1");
    em_sgd_hparams sg = {.lr = 0.1, .nesterov = true};
    CHECK(em_optim_sgd_step(&sg, 1, s) == EM_ERR);
    CHECK_ERROR("SGD: nesterov needs momentum > 0 and dampening 0");
    em_rmsprop_hparams rh = {.lr = 0.1, .alpha = 1.5};
    CHECK(em_optim_rmsprop_step(&rh, 1, s) == EM_ERR);
    CHECK_ERROR("RMSprop: alpha must be in [0, 1], got 1.5");
    CHECK(rel_err(s[0].param, before, m) == 0 && s[0].step == 0);
    /* a transposed (non-contiguous) parameter */
    em_tensor *base = randn_t(2, 2, 3);
    em_tensor *tp = em_transpose(base, 0, 1);
    em_optim_slot st = {.param = tp};
    em_sgd_hparams plain = {.lr = 0.1};
    CHECK(em_optim_sgd_step(&plain, 1, &st) == EM_ERR);
    CHECK_ERROR("SGD: parameter 1 [3 x 2] is not contiguous");
    free(before);
    REL(base); REL(tp);
    for (int k = 0; k < 2; k++) {
        REL(s[k].param);
        REL(s[k].buf[0]);
        REL(s[k].buf[1]);
    }
}

/* ---- clipping ------------------------------------------------------------------------ */

TEST(clip_grad_norm_scales_all_gradients_together) {
    float g1[2] = {3, 0}, g2[3] = {0, 4, 0};
    em_tensor *p[3] = {em_tensor_zeros(1, (int64_t[]){2}), em_tensor_zeros(1, (int64_t[]){3}),
                       em_tensor_zeros(1, (int64_t[]){1})};
    p[0]->grad = em_tensor_from_data(1, (int64_t[]){2}, g1);
    p[1]->grad = em_tensor_from_data(1, (int64_t[]){3}, g2); /* p[2] has none */
    double norm = 0;
    CHECK(em_optim_clip_grad_norm_(3, p, 10.0, 2.0, &norm) == EM_OK);
    CHECK_NEAR(norm, 5.0, 1e-9);
    double *unchanged = values(p[0]->grad); /* under the limit */
    CHECK_NEAR(unchanged[0], 3.0, 1e-9);
    free(unchanged);
    CHECK(em_optim_clip_grad_norm_(3, p, 1.0, 2.0, &norm) == EM_OK);
    CHECK_NEAR(norm, 5.0, 1e-9);
    double *a = values(p[0]->grad), *b = values(p[1]->grad);
    CHECK_NEAR(a[0], 0.6, 1e-5);
    CHECK_NEAR(b[1], 0.8, 1e-5);
    free(a); free(b);
    CHECK(em_optim_clip_grad_norm_(3, p, 100.0, INFINITY, &norm) == EM_OK);
    CHECK_NEAR(norm, 0.8, 1e-5);
    CHECK(em_optim_clip_grad_norm_(3, p, 100.0, 1.0, &norm) == EM_OK);
    CHECK_NEAR(norm, 1.4, 1e-5);
    CHECK(em_optim_clip_grad_norm_(3, p, -1.0, 2.0, &norm) == EM_ERR);
    CHECK_ERROR("clip_grad_norm_: max_norm must be >= 0, got -1");
    for (int i = 0; i < 3; i++) REL(p[i]);
}

TEST(clip_grad_norm_of_a_large_gradient_matches_naive) {
    em_rng_seed(10);
    em_tensor *p = param_with_grad(200003);
    double *g = values(p->grad), sq = 0;
    for (int64_t i = 0; i < 200003; i++) sq += g[i] * g[i];
    double norm = 0;
    CHECK(em_optim_clip_grad_norm_(1, &p, 1.0, 2.0, &norm) == EM_OK);
    CHECK_NEAR(norm, sqrt(sq), 1e-9);
    double *after = values(p->grad), sq2 = 0;
    for (int64_t i = 0; i < 200003; i++) sq2 += after[i] * after[i];
    CHECK_NEAR(sqrt(sq2), 1.0, 1e-4);
    free(g); free(after);
    REL(p);
}

TEST(clip_grad_value_and_clip_weights_clamp) {
    float v[4] = {-3, -0.5f, 0.5f, 3};
    em_tensor *p = em_tensor_from_data(1, (int64_t[]){4}, v);
    em_set_requires_grad(p, true);
    p->grad = em_tensor_from_data(1, (int64_t[]){4}, v);
    CHECK(em_optim_clip_grad_value_(1, &p, 1.0) == EM_OK);
    CHECK(em_optim_clip_weights_(1, &p, 0.25) == EM_OK);
    double *g = values(p->grad), *w = values(p);
    double want_g[4] = {-1, -0.5, 0.5, 1}, want_w[4] = {-0.25, -0.25, 0.25, 0.25};
    for (int i = 0; i < 4; i++) {
        CHECK_NEAR(g[i], want_g[i], 1e-7);
        CHECK_NEAR(w[i], want_w[i], 1e-7);
    }
    CHECK(em_optim_clip_weights_(1, &p, -1) == EM_ERR);
    CHECK_ERROR("clip_weights_: clip value must be >= 0, got -1");
    free(g); free(w);
    REL(p);
}
