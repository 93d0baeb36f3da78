/* em_loss_dmol.c — PixelCNN++'s discretized mixture of logistics: the
 * per-position negative log-likelihood of images with `bins` levels, its fused
 * gradient in the parameters, and sampling. The parameter layout and the
 * formulas are in em_loss.h.
 *
 * Each position (n, h, w) is independent: the forward and the backward run one
 * position per loop step (in parallel over N*H*W when large), in double, with
 * a per-thread scratch of K*(1 + 2C) doubles; the result does not depend on
 * the thread count. The reduction is em_loss_reduce's, as for the other
 * losses. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "em_autograd.h"
#include "em_loss.h"

#define FN "discretized_logistic_mixture"
#define SAMPLE_FN "sample_discretized_logistic_mixture"
#define PAR_MIN 32768        /* parallel above this many (position x component x channel) steps */
#define LOG_SCALE_MIN (-7.0) /* log-scales are clamped below here */
#define TINY_PROB 1e-5       /* bin masses at or below this use the density at the centre */
#define BINS_MAX 65536
#define U_MIN 1e-5           /* the sampler's uniforms are clamped to [U_MIN, 1 - U_MIN] */

#define REL(t) em_tensor_release(t)

typedef struct {
    int64_t n, c, h, w, hw, k, p;
    double half;            /* half a bin: 1 / (bins - 1) */
    double lo, hi;          /* x < lo is the lowest level, x > hi the highest */
    double log_half_levels; /* log((bins - 1) / 2): minus the log of the bin width */
} dmol_geom;

/* Where each parameter of component k (channel c; coefficient i) sits along P. */
static inline int64_t at_logit(const dmol_geom *q, int64_t k) { return k; }
static inline int64_t at_mean(const dmol_geom *q, int64_t c, int64_t k) { return q->k + c * q->k + k; }
static inline int64_t at_log_scale(const dmol_geom *q, int64_t c, int64_t k) {
    return q->k + q->c * q->k + c * q->k + k;
}
static inline int64_t at_coef(const dmol_geom *q, int64_t i, int64_t k) {
    return q->k + 2 * q->c * q->k + i * q->k + k;
}

static inline double softplus(double z) { return z > 0 ? z + log1p(exp(-z)) : log1p(exp(z)); }
static inline double sigmoid(double z) {
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

/* Fills q from params' shape for `channels` (1 or 3) and nr_mix (<= 0:
 * inferred from P). `fn` names the caller. */
static int geometry(const char *fn, em_tensor *params, int64_t channels, int nr_mix, int bins,
                    dmol_geom *q) {
    char sp[EM_SHAPE_STR_MAX];
    em_shape_str(sp, sizeof sp, params->ndim, params->shape);
    if (params->ndim != 4)
        return em_error_set("%s: params %s must be 4-D [N x P x H x W]", fn, sp);
    if (channels != 1 && channels != 3)
        return em_error_set("%s: %lld channels; the mixture models 1 (grey) or 3 (RGB)", fn,
                            (long long)channels);
    if (bins < 2 || bins > BINS_MAX)
        return em_error_set("%s: bins must be in [2, %d], got %d", fn, BINS_MAX, bins);
    const int64_t per = channels == 1 ? 3 : 10, P = params->shape[1];
    if (nr_mix <= 0) {
        if (P == 0 || P % per)
            return em_error_set("%s: params %s has P = %lld channels, not a positive multiple of "
                                "%lld (%lld*nr_mix for C = %lld)", fn, sp, (long long)P,
                                (long long)per, (long long)per, (long long)channels);
        nr_mix = (int)(P / per);
    } else if (P != per * nr_mix) {
        return em_error_set("%s: params %s has P = %lld channels, but nr_mix = %d with C = %lld "
                            "needs %lld*nr_mix = %lld", fn, sp, (long long)P, nr_mix,
                            (long long)channels, (long long)per, (long long)(per * nr_mix));
    }
    q->n = params->shape[0];
    q->p = P;
    q->h = params->shape[2];
    q->w = params->shape[3];
    q->hw = q->h * q->w;
    q->c = channels;
    q->k = nr_mix;
    q->half = 1.0 / (bins - 1);
    q->lo = -1.0 + q->half;
    q->hi = 1.0 - q->half;
    q->log_half_levels = log((bins - 1) / 2.0);
    return EM_OK;
}

/* The log-probability of one sub-pixel x (its bin) under a logistic with
 * x - mean = `centered` and (clamped) log-scale ls, with its derivatives in
 * `centered` (*dc) and in ls (*dls). */
static double sub_logp(const dmol_geom *q, double x, double centered, double ls, double *dc,
                       double *dls) {
    const double inv_s = exp(-ls);
    const double plus = inv_s * (centered + q->half), minus = inv_s * (centered - q->half);
    double L;
    if (x < q->lo) { /* lowest level: the mass below the upper edge */
        L = -softplus(-plus);
        double a = sigmoid(-plus); /* dL/dplus */
        *dc = inv_s * a;
        *dls = -a * plus;
    } else if (x > q->hi) { /* highest level: the mass above the lower edge */
        L = -softplus(minus);
        double a = -sigmoid(minus); /* dL/dminus */
        *dc = inv_s * a;
        *dls = -a * minus;
    } else {
        /* the bin's mass, from the side of the mean where the two CDFs are not both near 1 */
        double delta = minus > 0 ? sigmoid(-minus) - sigmoid(-plus) : sigmoid(plus) - sigmoid(minus);
        if (delta > TINY_PROB) {
            L = log(delta);
            double ap = sigmoid(plus) * sigmoid(-plus) / delta;    /* dL/dplus */
            double am = -sigmoid(minus) * sigmoid(-minus) / delta; /* dL/dminus */
            *dc = inv_s * (ap + am);
            *dls = -(ap * plus + am * minus);
        } else { /* the density at the centre times the bin width */
            double mid = inv_s * centered;
            L = mid - ls - 2.0 * softplus(mid) - q->log_half_levels;
            double a = 1.0 - 2.0 * sigmoid(mid); /* dL/dmid */
            *dc = inv_s * a;
            *dls = -a * mid - 1.0;
        }
    }
    return L;
}

/* The NLL at one position: pp points at params[n, 0, h, w], xp at x[n, 0, h, w]
 * (both with stride hw along their channel dim). With gp (params' layout) the
 * gradient of gscale * NLL is written there. scratch: K*(1 + 2C) doubles. */
static double position(const dmol_geom *q, const float *pp, const float *xp, double gscale,
                       float *gp, double *scratch) {
    const int64_t K = q->k, C = q->c, hw = q->hw;
    double *lp = scratch, *dc = scratch + K, *dls = scratch + K + C * K;
    double x[3] = {0, 0, 0};
    for (int64_t c = 0; c < C; c++) x[c] = xp[c * hw];
    double m = -INFINITY;
    for (int64_t k = 0; k < K; k++) m = fmax(m, pp[at_logit(q, k) * hw]);
    double s = 0;
    for (int64_t k = 0; k < K; k++) s += exp(pp[at_logit(q, k) * hw] - m);
    const double lse_w = m + log(s);
    for (int64_t k = 0; k < K; k++) {
        double t = pp[at_logit(q, k) * hw] - lse_w;
        double coef[3] = {0, 0, 0};
        if (C == 3)
            for (int i = 0; i < 3; i++) coef[i] = tanh(pp[at_coef(q, i, k) * hw]);
        for (int64_t c = 0; c < C; c++) {
            double mean = pp[at_mean(q, c, k) * hw];
            if (c == 1) mean += coef[0] * x[0];
            if (c == 2) mean += coef[1] * x[0] + coef[2] * x[1];
            double raw = pp[at_log_scale(q, c, k) * hw];
            double ls = raw < LOG_SCALE_MIN ? LOG_SCALE_MIN : raw;
            double d_c, d_ls;
            t += sub_logp(q, x[c], x[c] - mean, ls, &d_c, &d_ls);
            dc[c * K + k] = d_c;
            dls[c * K + k] = raw < LOG_SCALE_MIN ? 0.0 : d_ls; /* the clamp is flat below -7 */
        }
        lp[k] = t;
    }
    double mx = -INFINITY;
    for (int64_t k = 0; k < K; k++) mx = fmax(mx, lp[k]);
    double se = 0;
    for (int64_t k = 0; k < K; k++) se += exp(lp[k] - mx);
    const double lse = mx + log(se);
    if (!gp) return -lse;
    /* d NLL / d lp_k = -r_k (the responsibilities); d NLL / d w_k = pi_k - r_k */
    for (int64_t k = 0; k < K; k++) {
        const double r = exp(lp[k] - lse), g = gscale * r;
        const double pi = exp(pp[at_logit(q, k) * hw] - lse_w);
        gp[at_logit(q, k) * hw] = (float)(gscale * (pi - r));
        for (int64_t c = 0; c < C; c++) {
            gp[at_mean(q, c, k) * hw] = (float)(g * dc[c * K + k]);
            gp[at_log_scale(q, c, k) * hw] = (float)(-g * dls[c * K + k]);
        }
        if (C == 3) {
            double c0 = tanh(pp[at_coef(q, 0, k) * hw]), c1 = tanh(pp[at_coef(q, 1, k) * hw]);
            double c2 = tanh(pp[at_coef(q, 2, k) * hw]);
            gp[at_coef(q, 0, k) * hw] = (float)(g * dc[1 * K + k] * x[0] * (1.0 - c0 * c0));
            gp[at_coef(q, 1, k) * hw] = (float)(g * dc[2 * K + k] * x[0] * (1.0 - c1 * c1));
            gp[at_coef(q, 2, k) * hw] = (float)(g * dc[2 * K + k] * x[1] * (1.0 - c2 * c2));
        }
    }
    return -lse;
}

/* One scratch block of `per` doubles for each thread of the loops below. */
static double *thread_scratch(const char *fn, int64_t per, int nthreads) {
    double *s = malloc((size_t)per * (size_t)nthreads * sizeof *s);
    if (!s) em_error_set("%s: out of memory for the per-thread scratch", fn);
    return s;
}

/* Runs position() over every (n, h, w): into out [N x H x W] (forward) or, with
 * g, the gradient into grad (params' shape, contiguous). */
static int run_positions(const dmol_geom *q, const float *pd, const float *xd, const float *gd,
                         float *out, float *grad) {
    const int64_t npos = q->n * q->hw, per = q->k * (1 + 2 * q->c);
    const int nthreads = em_get_num_threads();
    double *scratch = thread_scratch(FN, per, nthreads);
    if (!scratch) return EM_ERR;
    const int64_t P = q->p, C = q->c, hw = q->hw;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (npos * q->k * q->c > PAR_MIN)
    for (int64_t i = 0; i < npos; i++) {
        const int64_t n = i / hw, s = i % hw;
        double *scr = scratch + per * omp_get_thread_num();
        const float *pp = pd + n * P * hw + s, *xp = xd + n * C * hw + s;
        if (grad)
            position(q, pp, xp, gd[i], grad + n * P * hw + s, scr);
        else
            out[i] = (float)position(q, pp, xp, 0, NULL, scr);
    }
    free(scratch);
    return EM_OK;
}

em_tensor *em_loss_dmol(em_tensor *params, em_tensor *x, int nr_mix, int bins, em_reduction red) {
    if (!params || !x) return NULL;
    if (em_loss_check_reduction(FN, red)) return NULL;
    char sp[EM_SHAPE_STR_MAX], sx[EM_SHAPE_STR_MAX];
    em_shape_str(sp, sizeof sp, params->ndim, params->shape);
    em_shape_str(sx, sizeof sx, x->ndim, x->shape);
    if (x->ndim != 4) {
        em_error_set("%s: x %s must be 4-D [N x C x H x W]", FN, sx);
        return NULL;
    }
    if (x->shape[1] != 1 && x->shape[1] != 3) {
        em_error_set("%s: x %s has C = %lld channels; the mixture models 1 (grey) or 3 (RGB)", FN,
                     sx, (long long)x->shape[1]);
        return NULL;
    }
    dmol_geom q;
    if (geometry(FN, params, x->shape[1], nr_mix, bins, &q)) return NULL;
    if (x->shape[0] != q.n || x->shape[2] != q.h || x->shape[3] != q.w) {
        em_error_set("%s: params %s and x %s must agree in N, H and W", FN, sp, sx);
        return NULL;
    }
    if (x->requires_grad && em_grad_enabled()) {
        em_error_set("%s: x %s requires grad, but the loss has no gradient in x (it is data: "
                     "pass x:detach())", FN, sx);
        return NULL;
    }
    em_tensor *pc = em_contiguous(params), *xc = em_contiguous(x);
    int64_t oshape[3] = {q.n, q.h, q.w};
    em_tensor *out = pc && xc ? em_tensor_empty(3, oshape) : NULL;
    if (!out) {
        REL(pc); REL(xc);
        return NULL;
    }
    const float *xd = em_tensor_data(xc);
    float lo = INFINITY, hi = -INFINITY;
    bool nan = false;
    for (int64_t i = 0; i < xc->numel; i++) {
        nan |= isnan(xd[i]);
        lo = fminf(lo, xd[i]); /* fminf and fmaxf skip NaN */
        hi = fmaxf(hi, xd[i]);
    }
    if (nan || lo < -1.0f || hi > 1.0f) {
        em_error_set("%s: x %s must hold values in [-1, 1] (pixels p as p / %g - 1), got %s "
                     "in [%g, %g]", FN, sx, (bins - 1) / 2.0, nan ? "NaN and values" : "values",
                     lo, hi);
        REL(pc); REL(xc); REL(out);
        return NULL;
    }
    int rc = run_positions(&q, em_tensor_data(pc), xd, NULL, out->storage->data, NULL);
    REL(pc); REL(xc);
    if (rc) {
        REL(out);
        return NULL;
    }
    em_node *node = em_record(EM_OP_discretized_logistic_mixture, out, 1, &params);
    if (node) {
        node->iarg[0] = q.k;
        node->iarg[1] = bins;
        em_node_save(node, params);
        em_node_save(node, x);
    }
    return em_loss_reduce(out, red, 0);
}

/* The gradient in params of sum(g * NLL), by the fused kernel. Under
 * create_graph it is recorded as discretized_logistic_mixture_grad, whose own
 * backward refuses: the second derivative is not implemented. */
int em_backward_discretized_logistic_mixture(em_node *nd, em_tensor *g, em_tensor **gin) {
    em_tensor *params = nd->saved[0], *x = nd->saved[1];
    dmol_geom q;
    if (geometry(FN, params, x->shape[1], (int)nd->iarg[0], (int)nd->iarg[1], &q)) return EM_ERR;
    em_tensor *pc = em_contiguous(params), *xc = em_contiguous(x), *gc = em_contiguous(g);
    em_tensor *grad = pc && xc && gc ? em_tensor_empty(params->ndim, params->shape) : NULL;
    int rc = grad ? run_positions(&q, em_tensor_data(pc), em_tensor_data(xc), em_tensor_data(gc),
                                  NULL, grad->storage->data)
                  : EM_ERR;
    REL(pc); REL(xc); REL(gc);
    if (rc) {
        REL(grad);
        return EM_ERR;
    }
    em_tensor *inputs[2] = {params, g};
    em_record(EM_OP_discretized_logistic_mixture_grad, grad, 2, inputs);
    gin[0] = grad;
    return EM_OK;
}

int em_backward_discretized_logistic_mixture_grad(em_node *nd, em_tensor *g, em_tensor **gin) {
    return em_error_set("%s: second derivatives are not implemented (its gradient is a fused "
                        "kernel, so a gradient penalty through this loss cannot be taken)", FN);
}

/* ---- sampling ------------------------------------------------------------ */

static inline double clamp_u(float u) {
    double v = u;
    return v < U_MIN ? U_MIN : v > 1.0 - U_MIN ? 1.0 - U_MIN : v;
}

em_tensor *em_sample_dmol(em_tensor *params, int nr_mix, int channels, int bins, bool quantize) {
    if (!params) return NULL;
    dmol_geom q;
    if (geometry(SAMPLE_FN, params, channels, nr_mix, bins, &q)) return NULL;
    int64_t ushape[4] = {q.n, q.k + q.c, q.h, q.w}, oshape[4] = {q.n, q.c, q.h, q.w};
    em_tensor *pc = em_contiguous(params);
    if (!pc) return NULL;
    const float *pd = em_tensor_data(pc);
    for (int64_t i = 0; i < pc->numel; i++)
        if (!isfinite(pd[i])) {
            char sp[EM_SHAPE_STR_MAX];
            em_error_set("%s: params %s hold a non-finite value (%g)", SAMPLE_FN,
                         em_shape_str(sp, sizeof sp, params->ndim, params->shape), pd[i]);
            REL(pc);
            return NULL;
        }
    em_tensor *u = em_rand(4, ushape); /* every draw first, in one fixed order */
    em_tensor *out = u ? em_tensor_empty(4, oshape) : NULL;
    if (!out) {
        REL(u); REL(pc);
        return NULL;
    }
    const float *ud = u->storage->data;
    float *od = out->storage->data;
    const int64_t npos = q.n * q.hw, hw = q.hw, K = q.k, C = q.c, P = q.p;
    const double levels = bins - 1;
#pragma omp parallel for schedule(static) if (npos * (K + C) > PAR_MIN)
    for (int64_t i = 0; i < npos; i++) {
        const int64_t n = i / hw, s = i % hw;
        const float *pp = pd + n * P * hw + s, *up = ud + n * (K + C) * hw + s;
        /* the component: argmax of logit + Gumbel noise (ties: the first) */
        int64_t kb = 0;
        double best = -INFINITY;
        for (int64_t k = 0; k < K; k++) {
            double v = pp[at_logit(&q, k) * hw] - log(-log(clamp_u(up[k * hw])));
            if (v > best) {
                best = v;
                kb = k;
            }
        }
        double xs[3] = {0, 0, 0};
        for (int64_t c = 0; c < C; c++) {
            double mean = pp[at_mean(&q, c, kb) * hw];
            if (c == 1) mean += tanh(pp[at_coef(&q, 0, kb) * hw]) * xs[0];
            if (c == 2)
                mean += tanh(pp[at_coef(&q, 1, kb) * hw]) * xs[0] +
                        tanh(pp[at_coef(&q, 2, kb) * hw]) * xs[1];
            double raw = pp[at_log_scale(&q, c, kb) * hw];
            double ls = raw < LOG_SCALE_MIN ? LOG_SCALE_MIN : raw;
            double uu = clamp_u(up[(K + c) * hw]);
            double v = mean + exp(ls) * (log(uu) - log1p(-uu));
            v = v < -1.0 ? -1.0 : v > 1.0 ? 1.0 : v;
            if (quantize) v = floor((v + 1.0) * levels / 2.0 + 0.5) * 2.0 / levels - 1.0;
            xs[c] = v;
            od[n * C * hw + c * hw + s] = (float)v;
        }
    }
    REL(u);
    REL(pc);
    return out;
}
