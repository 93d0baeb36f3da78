/* em_reduce.c — sum mean max min var std logsumexp prod over dims, argmax /
 * argmin, and sum_to_shape (the broadcasting gradient's reduction).
 *
 * Layout: the kept dims are moved first and the reduced dims last, so the
 * work is M rows of R elements. Sums accumulate in double; a full reduction
 * splits its row into fixed-size chunks combined in order, so results do not
 * depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "em_autograd.h"

static const char *const reduce_names[EM_RED_COUNT] = {
    "sum", "mean", "max", "min", "var", "std", "logsumexp", "prod"};
const char *em_reduce_name(em_reduce_op op) { return reduce_names[op]; }

#define CHUNK 65536

/* ---- one row --------------------------------------------------------- */

static double sum_row(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return s;
}
static double sumsq_dev_row(const float *x, int64_t n, double mean) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - mean;
        s += d * d;
    }
    return s;
}
static float max_row(const float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (x[i] != x[i]) return x[i];
        if (x[i] > m) m = x[i];
    }
    return m;
}
static float min_row(const float *x, int64_t n) {
    float m = INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (x[i] != x[i]) return x[i];
        if (x[i] < m) m = x[i];
    }
    return m;
}
static double sumexp_row(const float *x, int64_t n, float m) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += exp((double)x[i] - m);
    return s;
}

/* Chunked full-row versions (deterministic, parallel). kind: 0 sum, 1 sumsq
 * dev around p, 2 sumexp around p, 3 max, 4 min. */
static double chunked(const float *x, int64_t n, int kind, double p) {
    int64_t nchunks = (n + CHUNK - 1) / CHUNK;
    if (nchunks <= 1) {
        switch (kind) {
        case 0: return sum_row(x, n);
        case 1: return sumsq_dev_row(x, n, p);
        case 2: return sumexp_row(x, n, (float)p);
        case 3: return max_row(x, n);
        default: return min_row(x, n);
        }
    }
    double *part = malloc((size_t)nchunks * sizeof *part);
    if (!part) return NAN;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nchunks; c++) {
        const float *xc = x + c * CHUNK;
        int64_t len = c == nchunks - 1 ? n - c * CHUNK : CHUNK;
        switch (kind) {
        case 0: part[c] = sum_row(xc, len); break;
        case 1: part[c] = sumsq_dev_row(xc, len, p); break;
        case 2: part[c] = sumexp_row(xc, len, (float)p); break;
        case 3: part[c] = max_row(xc, len); break;
        default: part[c] = min_row(xc, len); break;
        }
    }
    double r = part[0];
    for (int64_t c = 1; c < nchunks; c++) {
        if (kind <= 2) r += part[c];
        else if (part[c] != part[c] || (kind == 3 ? part[c] > r : part[c] < r)) r = part[c];
        if (r != r) break;
    }
    free(part);
    return r;
}

static float reduce_one(em_reduce_op op, const float *x, int64_t n, int correction) {
    switch (op) {
    case EM_RED_SUM: return (float)chunked(x, n, 0, 0);
    case EM_RED_MEAN: return n ? (float)(chunked(x, n, 0, 0) / (double)n) : NAN;
    case EM_RED_MAX: return n ? (float)chunked(x, n, 3, 0) : NAN;
    case EM_RED_MIN: return n ? (float)chunked(x, n, 4, 0) : NAN;
    case EM_RED_VAR:
    case EM_RED_STD: {
        double mean = chunked(x, n, 0, 0) / (double)n;
        double v = chunked(x, n, 1, mean) / (double)(n - correction);
        if (n - correction <= 0) v = NAN;
        return (float)(op == EM_RED_STD ? sqrt(v) : v);
    }
    case EM_RED_LOGSUMEXP: {
        float m = n ? (float)chunked(x, n, 3, 0) : -INFINITY;
        if (m == -INFINITY || m == INFINITY || m != m) return m;
        return (float)(log(chunked(x, n, 2, m)) + m);
    }
    case EM_RED_PROD: {
        double p = 1;
        for (int64_t i = 0; i < n; i++) p *= x[i];
        return (float)p;
    }
    default: return NAN;
    }
}

/* ---- dims ------------------------------------------------------------ */

/* Fills reduce[d] from a dim list (all dims when ndims == 0). */
static int parse_dims(const char *fn, const em_tensor *a, int ndims, const int *dims,
                      bool *reduce, int *norm) {
    memset(reduce, 0, EM_MAX_DIMS * sizeof *reduce);
    if (ndims == 0) {
        for (int d = 0; d < a->ndim; d++) reduce[d] = true;
        return EM_OK;
    }
    for (int i = 0; i < ndims; i++) {
        int d = em_normalize_dim(fn, dims[i], a->ndim);
        if (d < 0) return EM_ERR;
        if (reduce[d]) return em_error_set("%s: dim %d appears twice", fn, d + 1);
        reduce[d] = true;
        norm[i] = d;
    }
    return EM_OK;
}

static void out_shape(const em_tensor *a, const bool *reduce, bool keepdim, int *ndim,
                      int64_t *shape) {
    int k = 0;
    for (int d = 0; d < a->ndim; d++) {
        if (!reduce[d]) shape[k++] = a->shape[d];
        else if (keepdim) shape[k++] = 1;
    }
    *ndim = k;
}

/* a permuted (kept dims first) and made contiguous: M rows of R. */
static em_tensor *rows_layout(em_tensor *a, const bool *reduce, int64_t *M, int64_t *R) {
    int perm[EM_MAX_DIMS], k = 0;
    *M = 1;
    *R = 1;
    for (int d = 0; d < a->ndim; d++)
        if (!reduce[d]) { perm[k++] = d; *M *= a->shape[d]; }
    for (int d = 0; d < a->ndim; d++)
        if (reduce[d]) { perm[k++] = d; *R *= a->shape[d]; }
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    em_tensor *p = em_permute(a, perm);
    em_tensor *c = p ? em_contiguous(p) : NULL;
    em_tensor_release(p);
    em_set_grad_enabled(was);
    return c;
}

/* Column sums of a contiguous [R x M] block: reduced dims leading. */
static void column_sums(const float *x, int64_t R, int64_t M, float *out, double scale) {
    const int64_t block = 256;
#pragma omp parallel for schedule(static) if (R * M > 65536)
    for (int64_t j0 = 0; j0 < M; j0 += block) {
        int64_t jn = j0 + block < M ? block : M - j0;
        double acc[256] = {0};
        for (int64_t i = 0; i < R; i++) {
            const float *row = x + i * M + j0;
            for (int64_t j = 0; j < jn; j++) acc[j] += row[j];
        }
        for (int64_t j = 0; j < jn; j++) out[j0 + j] = (float)(acc[j] * scale);
    }
}

em_tensor *em_reduce(em_reduce_op op, em_tensor *a, int ndims, const int *dims, bool keepdim,
                     int correction) {
    if (!a) return NULL;
    const char *fn = reduce_names[op];
    bool reduce[EM_MAX_DIMS];
    int norm[EM_MAX_DIMS];
    if (ndims > EM_MAX_DIMS) {
        em_error_set("%s: too many dims (%d)", fn, ndims);
        return NULL;
    }
    if (parse_dims(fn, a, ndims, dims, reduce, norm)) return NULL;
    int ond;
    int64_t osh[EM_MAX_DIMS];
    out_shape(a, reduce, keepdim, &ond, osh);
    int64_t R = 1, M = 1;
    for (int d = 0; d < a->ndim; d++) {
        if (reduce[d]) R *= a->shape[d];
        else M *= a->shape[d];
    }
    if (R == 0 && (op == EM_RED_MAX || op == EM_RED_MIN)) {
        em_error_set("%s: cannot reduce over an empty dim", fn);
        return NULL;
    }
    em_tensor *out = em_tensor_empty(ond, osh);
    if (!out) return NULL;
    float *o = out->storage->data;

    /* Fast path: sum/mean over leading dims of a contiguous tensor. */
    int leading = 0;
    while (leading < a->ndim && reduce[leading]) leading++;
    bool prefix = true;
    for (int d = leading; d < a->ndim; d++) prefix &= !reduce[d];
    if ((op == EM_RED_SUM || op == EM_RED_MEAN) && prefix && leading > 0 && M > 1 &&
        em_tensor_is_contiguous(a)) {
        column_sums(em_tensor_data(a), R, M, o, op == EM_RED_MEAN ? 1.0 / (double)R : 1.0);
    } else {
        int64_t m_, r_;
        em_tensor *c = rows_layout(a, reduce, &m_, &r_);
        if (!c) {
            em_tensor_release(out);
            return NULL;
        }
        const float *x = em_tensor_data(c);
        if (M == 1) {
            o[0] = reduce_one(op, x, R, correction);
        } else {
#pragma omp parallel for schedule(static) if (M * R > 32768)
            for (int64_t i = 0; i < M; i++) o[i] = reduce_one(op, x + i * R, R, correction);
        }
        em_tensor_release(c);
    }
    em_node *node = em_record(EM_OP_reduce, out, 1, &a);
    if (node) {
        node->iarg[0] = op;
        node->iarg[1] = keepdim;
        node->iarg[2] = correction;
        int k = 0;
        for (int d = 0; d < a->ndim; d++)
            if (reduce[d]) node->iarg[4 + k++] = d;
        node->iarg[3] = k;
        if (op != EM_RED_SUM && op != EM_RED_MEAN) em_node_save(node, a);
    }
    return out;
}

static em_tensor *arg_extreme(const char *fn, em_tensor *a, int dim, bool keepdim, bool is_max) {
    if (!a) return NULL;
    int d = em_normalize_dim(fn, dim, a->ndim);
    if (d < 0) return NULL;
    if (a->shape[d] == 0) {
        em_error_set("%s: cannot reduce over an empty dim", fn);
        return NULL;
    }
    bool reduce[EM_MAX_DIMS] = {false};
    reduce[d] = true;
    int ond;
    int64_t osh[EM_MAX_DIMS], M, R;
    out_shape(a, reduce, keepdim, &ond, osh);
    em_tensor *c = rows_layout(a, reduce, &M, &R);
    if (!c) return NULL;
    em_tensor *out = em_tensor_empty(ond, osh);
    if (!out) {
        em_tensor_release(c);
        return NULL;
    }
    const float *x = em_tensor_data(c);
    float *o = out->storage->data;
    for (int64_t i = 0; i < M; i++) {
        const float *row = x + i * R;
        int64_t best = 0;
        for (int64_t j = 1; j < R; j++) {
            if (row[best] != row[best]) break;
            if (row[j] != row[j] || (is_max ? row[j] > row[best] : row[j] < row[best])) best = j;
        }
        o[i] = (float)best;
    }
    em_tensor_release(c);
    return out;
}

em_tensor *em_argmax(em_tensor *a, int dim, bool keepdim) {
    return arg_extreme("argmax", a, dim, keepdim, true);
}
em_tensor *em_argmin(em_tensor *a, int dim, bool keepdim) {
    return arg_extreme("argmin", a, dim, keepdim, false);
}

em_tensor *em_sum_to_shape(em_tensor *g, int ndim, const int64_t *shape) {
    if (!g) return NULL;
    if (g->ndim == ndim && !memcmp(g->shape, shape, (size_t)ndim * sizeof(int64_t)))
        return em_tensor_retain(g);
    int dims[EM_MAX_DIMS], k = 0, lead = g->ndim - ndim;
    if (lead < 0) {
        em_error_set("sum_to_shape: cannot reduce %d dims to %d", g->ndim, ndim);
        return NULL;
    }
    for (int d = 0; d < g->ndim; d++)
        if (d < lead || (shape[d - lead] == 1 && g->shape[d] != 1)) dims[k++] = d;
    em_tensor *s = k ? em_reduce(EM_RED_SUM, g, k, dims, true, 0) : em_tensor_retain(g);
    if (!s) return NULL;
    em_tensor *r = em_reshape(s, ndim, shape);
    em_tensor_release(s);
    return r;
}

/* ---- backward -------------------------------------------------------- */

/* g (the output's gradient) with the reduced dims put back as size 1. */
static em_tensor *keep_dims(em_node *n, em_tensor *g) {
    if (n->iarg[1]) return em_tensor_retain(g);
    int64_t shape[EM_MAX_DIMS];
    const em_edge *e = &n->edges[0];
    memcpy(shape, e->shape, sizeof shape);
    for (int k = 0; k < n->iarg[3]; k++) shape[n->iarg[4 + k]] = 1;
    return em_reshape(g, e->ndim, shape);
}

int em_backward_reduce(em_node *n, em_tensor *g, em_tensor **gin) {
    const em_edge *e = &n->edges[0];
    em_reduce_op op = (em_reduce_op)n->iarg[0];
    int nd = (int)n->iarg[3];
    int dims[EM_MAX_DIMS];
    int64_t R = 1;
    for (int k = 0; k < nd; k++) {
        dims[k] = (int)n->iarg[4 + k];
        R *= e->shape[dims[k]];
    }
    int correction = (int)n->iarg[2];
    em_tensor *x = n->n_saved ? n->saved[0] : NULL;
    em_tensor *gk = keep_dims(n, g);
    em_tensor *ge = em_expand(gk, e->ndim, e->shape);
    em_tensor *r = NULL, *y = NULL, *t1 = NULL, *t2 = NULL, *t3 = NULL;
    switch (op) {
    case EM_RED_SUM: r = em_tensor_retain(ge); break;
    case EM_RED_MEAN: r = em_binary_scalar(EM_BIN_MUL, ge, 1.0f / (float)R); break;
    case EM_RED_MAX:
    case EM_RED_MIN: /* split evenly between tied extremes */
        y = em_reduce(op, x, nd, dims, true, 0);
        t1 = em_binary(EM_BIN_EQ, x, y);
        t2 = em_reduce(EM_RED_SUM, t1, nd, dims, true, 0);
        t3 = em_binary(EM_BIN_DIV, t1, t2);
        r = em_binary(EM_BIN_MUL, ge, t3);
        break;
    case EM_RED_VAR: /* 2 (x - mean) / (R - c) */
        y = em_reduce(EM_RED_MEAN, x, nd, dims, true, 0);
        t1 = em_binary(EM_BIN_SUB, x, y);
        t2 = em_binary_scalar(EM_BIN_MUL, t1, 2.0f / (float)(R - correction));
        r = em_binary(EM_BIN_MUL, ge, t2);
        break;
    case EM_RED_STD: /* (x - mean) / ((R - c) std) */
        y = em_reduce(EM_RED_MEAN, x, nd, dims, true, 0);
        t1 = em_binary(EM_BIN_SUB, x, y);
        t2 = em_reduce(EM_RED_STD, x, nd, dims, true, correction);
        t3 = em_binary_scalar(EM_BIN_MUL, t2, (float)(R - correction));
        em_tensor_release(t2);
        t2 = em_binary(EM_BIN_DIV, t1, t3);
        r = em_binary(EM_BIN_MUL, ge, t2);
        break;
    case EM_RED_LOGSUMEXP: /* exp(x - y) */
        y = em_reduce(op, x, nd, dims, true, 0);
        t1 = em_binary(EM_BIN_SUB, x, y);
        t2 = em_unary(EM_UN_EXP, t1);
        r = em_binary(EM_BIN_MUL, ge, t2);
        break;
    case EM_RED_PROD: /* y / x */
        y = em_reduce(op, x, nd, dims, true, 0);
        t1 = em_binary(EM_BIN_DIV, y, x);
        r = em_binary(EM_BIN_MUL, ge, t1);
        break;
    default: em_error_set("no gradient"); break;
    }
    em_tensor_release(gk);
    em_tensor_release(ge);
    em_tensor_release(y);
    em_tensor_release(t1);
    em_tensor_release(t2);
    em_tensor_release(t3);
    gin[0] = r;
    return r ? EM_OK : EM_ERR;
}
