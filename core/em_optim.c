/* em_optim.c — SGD, Adam/AdamW and RMSprop updates over a parameter list,
 * and gradient / weight clipping. Each update is one elementwise pass per
 * parameter (OpenMP over the elements of large tensors), written straight
 * into the parameter's and the buffers' storage with nothing recorded. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "em_autograd.h"
#include "em_fastmath.h"
#include "em_iter.h"
#include "em_optim.h"

/* ---- checks ------------------------------------------------------------ */

static int check_nonneg(const char *fn, const char *name, double v) {
    if (!(v >= 0.0) || isinf(v))
        return em_error_set("%s: %s must be a finite number >= 0, got %g", fn, name, v);
    return EM_OK;
}

static int check_unit(const char *fn, const char *name, double v) {
    if (!(v >= 0.0 && v < 1.0))
        return em_error_set("%s: %s must be in [0, 1), got %g", fn, name, v);
    return EM_OK;
}

static const char *const buffer_names[3][EM_OPTIM_MAX_BUFFERS] = {
    {"momentum_buffer", "", ""},
    {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    {"square_avg", "momentum_buffer", "grad_avg"},
};
enum { NAMES_SGD, NAMES_ADAM, NAMES_RMSPROP };

/* Checks every slot before anything is written: contiguous parameters,
 * gradients of the parameter's shape, the buffers `need` asks for present,
 * shaped like the parameter and contiguous. Fills grads[i] with a contiguous
 * gradient (a new reference, NULL when the parameter has none). */
static int check_slots(const char *fn, int names, int n, const em_optim_slot *slots,
                       const bool need[EM_OPTIM_MAX_BUFFERS], em_tensor **grads) {
    char a[EM_SHAPE_STR_MAX], b[EM_SHAPE_STR_MAX];
    for (int i = 0; i < n; i++) grads[i] = NULL;
    for (int i = 0; i < n; i++) {
        em_tensor *p = slots[i].param;
        if (!p) return em_error_set("%s: parameter %d is missing", fn, i + 1);
        if (!em_tensor_is_contiguous(p))
            return em_error_set("%s: parameter %d %s is not contiguous", fn, i + 1,
                                em_shape_str(a, sizeof a, p->ndim, p->shape));
        if (slots[i].step < 0)
            return em_error_set("%s: parameter %d has a negative step count %lld", fn, i + 1,
                                (long long)slots[i].step);
        if (p->grad && !em_same_shape(p->grad, p))
            return em_error_set("%s: the gradient %s of parameter %d does not match its shape %s",
                                fn, em_shape_str(a, sizeof a, p->grad->ndim, p->grad->shape),
                                i + 1, em_shape_str(b, sizeof b, p->ndim, p->shape));
        for (int j = 0; j < EM_OPTIM_MAX_BUFFERS; j++) {
            if (!need[j]) continue;
            em_tensor *s = slots[i].buf[j];
            const char *bn = buffer_names[names][j];
            if (!s) return em_error_set("%s: parameter %d has no %s buffer", fn, i + 1, bn);
            if (!em_same_shape(s, p))
                return em_error_set("%s: the %s buffer %s of parameter %d does not match its "
                                    "shape %s", fn, bn, em_shape_str(a, sizeof a, s->ndim, s->shape),
                                    i + 1, em_shape_str(b, sizeof b, p->ndim, p->shape));
            if (!em_tensor_is_contiguous(s))
                return em_error_set("%s: the %s buffer of parameter %d is not contiguous", fn, bn,
                                    i + 1);
            if (s->storage == p->storage)
                return em_error_set("%s: the %s buffer of parameter %d shares the parameter's "
                                    "storage", fn, bn, i + 1);
        }
    }
    for (int i = 0; i < n; i++) {
        if (!slots[i].param->grad) continue;
        grads[i] = em_contiguous(slots[i].param->grad);
        if (!grads[i]) {
            for (int k = 0; k < i; k++) em_tensor_release(grads[k]);
            return EM_ERR;
        }
    }
    return EM_OK;
}

/* Marks the parameter and its buffers as written (autograd's version check). */
static void bump_versions(em_optim_slot *s) {
    s->param->storage->version++;
    for (int j = 0; j < EM_OPTIM_MAX_BUFFERS; j++)
        if (s->buf[j]) s->buf[j]->storage->version++;
}

static em_tensor **grad_array(const char *fn, int n) {
    em_tensor **g = calloc((size_t)(n > 0 ? n : 1), sizeof *g);
    if (!g) em_error_set("%s: out of memory", fn);
    return g;
}

static void release_grads(int n, em_tensor **grads) {
    for (int i = 0; i < n; i++) em_tensor_release(grads[i]);
    free(grads);
}

/* ---- SGD ---------------------------------------------------------------- */

static void sgd_update(float *p, const float *g, float *buf,
                       int64_t m, const em_sgd_hparams *h, bool first) {
    const float lr = (float)h->lr, wd = (float)h->weight_decay, mom = (float)h->momentum;
    const float keep = (float)(1.0 - h->dampening);
    const bool nesterov = h->nesterov;
#pragma omp parallel for schedule(static) if (m > EM_PARALLEL_MIN)
    for (int64_t i = 0; i < m; i++) {
        float d = g[i] + wd * p[i];
        if (buf) {
            float b = first ? d : mom * buf[i] + keep * d;
            buf[i] = b;
            d = nesterov ? d + mom * b : b;
        }
        p[i] -= lr * d;
    }
}

int em_optim_sgd_step(const em_sgd_hparams *h, int n, em_optim_slot *slots) {
    const char *fn = "SGD";
    if (check_nonneg(fn, "lr", h->lr) || check_nonneg(fn, "momentum", h->momentum) ||
        check_nonneg(fn, "weight_decay", h->weight_decay))
        return EM_ERR;
    if (!(h->dampening >= 0.0 && h->dampening <= 1.0))
        return em_error_set("%s: dampening must be in [0, 1], got %g", fn, h->dampening);
    if (h->nesterov && (h->momentum <= 0.0 || h->dampening != 0.0))
        return em_error_set("%s: nesterov needs momentum > 0 and dampening 0, got momentum %g "
                            "and dampening %g", fn, h->momentum, h->dampening);
    bool need[EM_OPTIM_MAX_BUFFERS] = {h->momentum > 0.0, false, false};
    em_tensor **grads = grad_array(fn, n);
    if (!grads || check_slots(fn, NAMES_SGD, n, slots, need, grads)) {
        free(grads);
        return EM_ERR;
    }
    for (int i = 0; i < n; i++) {
        if (!grads[i]) continue;
        em_optim_slot *s = &slots[i];
        sgd_update(em_tensor_data(s->param), em_tensor_data(grads[i]),
                   need[0] ? em_tensor_data(s->buf[0]) : NULL, s->param->numel, h, s->step == 0);
        s->step++;
        bump_versions(s);
    }
    release_grads(n, grads);
    return EM_OK;
}

/* ---- Adam / AdamW ---------------------------------------------------------- */

/* One Adam update of elements [lo, hi): ADAM_RANGE is compiled twice, for the
 * build's baseline (SSE: 4 lanes) and for AVX-512F (16 lanes), chosen at run
 * time. Both do the same IEEE operations (products, sums, sqrt and quotient,
 * each correctly rounded in any lane width; -std=c11 contracts no a * b + c
 * into an fma), so they give the same bits (tested). perf put the update at
 * 10% of B1's step. */
typedef struct {
    float *p, *m1, *m2, *vmax;
    const float *g;
    float b1, b2, eps, step_size, inv_sqrt_bc2, decay, l2;
} adam_args;

#define ADAM_RANGE(name, attr)                                                                    \
    attr static void name(const adam_args *a, int64_t lo, int64_t hi) {                        \
        float *restrict p = a->p, *restrict m1 = a->m1, *restrict m2 = a->m2;                     \
        float *restrict vmax = a->vmax; /* amsgrad's running max, or NULL (GCC unswitches) */     \
        const float *restrict g = a->g;                                                           \
        const float b1 = a->b1, b2 = a->b2, eps = a->eps, step_size = a->step_size;               \
        const float inv_sqrt_bc2 = a->inv_sqrt_bc2, decay = a->decay, l2 = a->l2;                 \
        for (int64_t i = lo; i < hi; i++) {                                                       \
            float pi = p[i] * decay;                                                              \
            float gi = g[i] + l2 * pi;                                                            \
            float m = b1 * m1[i] + (1.0f - b1) * gi;                                              \
            float v = b2 * m2[i] + (1.0f - b2) * gi * gi;                                         \
            m1[i] = m;                                                                            \
            m2[i] = v;                                                                            \
            if (vmax) {                                                                           \
                v = vmax[i] > v ? vmax[i] : v;                                                    \
                vmax[i] = v;                                                                      \
            }                                                                                     \
            p[i] = pi - step_size * m / (sqrtf(v) * inv_sqrt_bc2 + eps);                          \
        }                                                                                         \
    }
ADAM_RANGE(adam_range, )
ADAM_RANGE(adam_range_avx512, __attribute__((target("avx512f"))))

static void adam_update(float *p, const float *g, float *m1,
                        float *m2, float *vmax, int64_t m,
                        const em_adam_hparams *h, int64_t t) {
    const double bc1 = 1.0 - pow(h->beta1, (double)t), bc2 = 1.0 - pow(h->beta2, (double)t);
    adam_args a = {
        .p = p, .m1 = m1, .m2 = m2, .vmax = vmax, .g = g,
        .b1 = (float)h->beta1, .b2 = (float)h->beta2, .eps = (float)h->eps,
        .step_size = (float)(h->lr / bc1), .inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2)),
        .decay = h->decoupled ? (float)(1.0 - h->lr * h->weight_decay) : 1.0f,
        .l2 = h->decoupled ? 0.0f : (float)h->weight_decay,
    };
    void (*range)(const adam_args *, int64_t, int64_t) =
        em_fastmath_level() >= EM_FASTMATH_AVX512 ? adam_range_avx512 : adam_range;
    if (m <= EM_PARALLEL_MIN) {
        range(&a, 0, m);
        return;
    }
#pragma omp parallel
    {
        /* static split in multiples of 16 elements (whole vectors) */
        int64_t nt = omp_get_num_threads(), t_id = omp_get_thread_num(), blocks = (m + 15) / 16;
        int64_t lo = blocks * t_id / nt * 16, hi = blocks * (t_id + 1) / nt * 16;
        range(&a, lo, hi < m ? hi : m);
    }
}

int em_optim_adam_step(const em_adam_hparams *h, int n, em_optim_slot *slots) {
    const char *fn = h->decoupled ? "AdamW" : "Adam";
    if (check_nonneg(fn, "lr", h->lr) || check_unit(fn, "beta1", h->beta1) ||
        check_unit(fn, "beta2", h->beta2) || check_nonneg(fn, "eps", h->eps) ||
        check_nonneg(fn, "weight_decay", h->weight_decay))
        return EM_ERR;
    bool need[EM_OPTIM_MAX_BUFFERS] = {true, true, h->amsgrad};
    em_tensor **grads = grad_array(fn, n);
    if (!grads || check_slots(fn, NAMES_ADAM, n, slots, need, grads)) {
        free(grads);
        return EM_ERR;
    }
    for (int i = 0; i < n; i++) {
        if (!grads[i]) continue;
        em_optim_slot *s = &slots[i];
        adam_update(em_tensor_data(s->param), em_tensor_data(grads[i]), em_tensor_data(s->buf[0]),
                    em_tensor_data(s->buf[1]), h->amsgrad ? em_tensor_data(s->buf[2]) : NULL,
                    s->param->numel, h, s->step + 1);
        s->step++;
        bump_versions(s);
    }
    release_grads(n, grads);
    return EM_OK;
}

/* ---- RMSprop ---------------------------------------------------------------- */

static void rmsprop_update(float *p, const float *g, float *sq,
                           float *buf, float *ga, int64_t m,
                           const em_rmsprop_hparams *h) {
    const float lr = (float)h->lr, alpha = (float)h->alpha, eps = (float)h->eps;
    const float wd = (float)h->weight_decay, mom = (float)h->momentum;
#pragma omp parallel for schedule(static) if (m > EM_PARALLEL_MIN)
    for (int64_t i = 0; i < m; i++) {
        float gi = g[i] + wd * p[i];
        float s = alpha * sq[i] + (1.0f - alpha) * gi * gi;
        sq[i] = s;
        float avg;
        if (ga) {
            float a = alpha * ga[i] + (1.0f - alpha) * gi;
            ga[i] = a;
            avg = sqrtf(s - a * a) + eps;
        } else {
            avg = sqrtf(s) + eps;
        }
        if (buf) {
            float b = mom * buf[i] + gi / avg;
            buf[i] = b;
            p[i] -= lr * b;
        } else {
            p[i] -= lr * gi / avg;
        }
    }
}

int em_optim_rmsprop_step(const em_rmsprop_hparams *h, int n, em_optim_slot *slots) {
    const char *fn = "RMSprop";
    if (check_nonneg(fn, "lr", h->lr) || check_nonneg(fn, "eps", h->eps) ||
        check_nonneg(fn, "weight_decay", h->weight_decay) ||
        check_nonneg(fn, "momentum", h->momentum))
        return EM_ERR;
    if (!(h->alpha >= 0.0 && h->alpha <= 1.0))
        return em_error_set("%s: alpha must be in [0, 1], got %g", fn, h->alpha);
    bool need[EM_OPTIM_MAX_BUFFERS] = {true, h->momentum > 0.0, h->centered};
    em_tensor **grads = grad_array(fn, n);
    if (!grads || check_slots(fn, NAMES_RMSPROP, n, slots, need, grads)) {
        free(grads);
        return EM_ERR;
    }
    for (int i = 0; i < n; i++) {
        if (!grads[i]) continue;
        em_optim_slot *s = &slots[i];
        rmsprop_update(em_tensor_data(s->param), em_tensor_data(grads[i]),
                       em_tensor_data(s->buf[0]), need[1] ? em_tensor_data(s->buf[1]) : NULL,
                       need[2] ? em_tensor_data(s->buf[2]) : NULL, s->param->numel, h);
        s->step++;
        bump_versions(s);
    }
    release_grads(n, grads);
    return EM_OK;
}

/* ---- clipping ---------------------------------------------------------------- */

#define NORM_CHUNK 65536

/* sum |g|^q (q finite) or max |g| (q infinite) over m floats, in double, in
 * fixed chunks combined in order, so the result does not depend on threads. */
static double pow_sum(const float *g, int64_t m, double q) {
    int64_t nchunks = (m + NORM_CHUNK - 1) / NORM_CHUNK;
    double *part = malloc((size_t)(nchunks > 0 ? nchunks : 1) * sizeof *part);
    if (!part) return NAN;
#pragma omp parallel for schedule(static) if (m > EM_PARALLEL_MIN)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t lo = c * NORM_CHUNK, hi = lo + NORM_CHUNK < m ? lo + NORM_CHUNK : m;
        double acc = 0;
        if (isinf(q)) {
            for (int64_t i = lo; i < hi; i++) {
                double a = fabs((double)g[i]);
                if (a > acc || a != a) acc = a;
            }
        } else if (q == 2.0) {
            for (int64_t i = lo; i < hi; i++) acc += (double)g[i] * g[i];
        } else {
            for (int64_t i = lo; i < hi; i++) acc += pow(fabs((double)g[i]), q);
        }
        part[c] = acc;
    }
    double total = 0;
    for (int64_t c = 0; c < nchunks; c++) {
        if (isinf(q)) total = (part[c] > total || part[c] != part[c]) ? part[c] : total;
        else total += part[c];
    }
    free(part);
    return total;
}

static int check_param_list(const char *fn, int n, em_tensor *const *params) {
    for (int i = 0; i < n; i++)
        if (!params[i]) return em_error_set("%s: parameter %d is missing", fn, i + 1);
    return EM_OK;
}

int em_optim_clip_grad_norm_(int n, em_tensor *const *params, double max_norm, double norm_type,
                             double *total_norm) {
    const char *fn = "clip_grad_norm_";
    if (check_param_list(fn, n, params)) return EM_ERR;
    if (!(max_norm >= 0.0))
        return em_error_set("%s: max_norm must be >= 0, got %g", fn, max_norm);
    if (!(norm_type > 0.0))
        return em_error_set("%s: norm_type must be > 0 (or inf), got %g", fn, norm_type);
    double acc = 0;
    for (int i = 0; i < n; i++) {
        em_tensor *g = params[i]->grad;
        if (!g) continue;
        em_tensor *gc = em_contiguous(g);
        if (!gc) return EM_ERR;
        double part = pow_sum(em_tensor_data(gc), gc->numel, norm_type);
        em_tensor_release(gc);
        if (isinf(norm_type)) acc = (part > acc || part != part) ? part : acc;
        else acc += part;
    }
    double norm = isinf(norm_type) ? acc : pow(acc, 1.0 / norm_type);
    *total_norm = norm;
    double coef = max_norm / (norm + 1e-6);
    if (!isfinite(norm) || coef >= 1.0) return EM_OK;
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    int rc = EM_OK;
    for (int i = 0; i < n && rc == EM_OK; i++)
        if (params[i]->grad) rc = em_binary_scalar_(EM_BIN_MUL, params[i]->grad, (float)coef);
    em_set_grad_enabled(was);
    return rc;
}

int em_optim_clip_grad_value_(int n, em_tensor *const *params, double clip) {
    const char *fn = "clip_grad_value_";
    if (check_param_list(fn, n, params)) return EM_ERR;
    if (!(clip >= 0.0)) return em_error_set("%s: clip value must be >= 0, got %g", fn, clip);
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    int rc = EM_OK;
    for (int i = 0; i < n && rc == EM_OK; i++)
        if (params[i]->grad) rc = em_clamp_(params[i]->grad, (float)-clip, (float)clip);
    em_set_grad_enabled(was);
    return rc;
}

int em_optim_clip_weights_(int n, em_tensor *const *params, double c) {
    const char *fn = "clip_weights_";
    if (check_param_list(fn, n, params)) return EM_ERR;
    if (!(c >= 0.0)) return em_error_set("%s: clip value must be >= 0, got %g", fn, c);
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    int rc = EM_OK;
    for (int i = 0; i < n && rc == EM_OK; i++) rc = em_clamp_(params[i], (float)-c, (float)c);
    em_set_grad_enabled(was);
    return rc;
}

/* Counts the NaN / infinite values of x[0..m): the sum of x * 0 is NaN exactly
 * when one is (inf * 0 = NaN), a vectorisable pass; only then are they counted. */
static int64_t count_nonfinite(const float *x, int64_t m) {
    float probe = 0.0f;
#pragma omp parallel for simd schedule(static) reduction(+ : probe) if (m > EM_PARALLEL_MIN)
    for (int64_t i = 0; i < m; i++) probe += x[i] * 0.0f;
    if (probe == 0.0f) return 0;
    int64_t count = 0;
    for (int64_t i = 0; i < m; i++) count += !isfinite(x[i]);
    return count;
}

int em_optim_first_nonfinite_grad(int n, em_tensor *const *params, int64_t *count) {
    *count = 0;
    if (check_param_list("optimizer step", n, params)) return -2;
    for (int i = 0; i < n; i++) {
        em_tensor *g = params[i]->grad;
        if (!g) continue;
        em_tensor *gc = em_contiguous(g);
        if (!gc) return -2;
        int64_t bad = count_nonfinite(em_tensor_data(gc), gc->numel);
        em_tensor_release(gc);
        if (bad) {
            *count = bad;
            return i;
        }
    }
    return -1;
}
