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

#include <omp.h>

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

/* The sum of row m of the permuted layout of a contiguous [A x M x B] block
 * (the elements (a, m, b) in a-major order, R = A B of them) without building
 * it: the same additions in the same order as chunked(row, R, 0): CHUNK-long
 * partial sums, each from 0, added in order. */
static double sum_middle_row(const float *x, int64_t A, int64_t M, int64_t B, int64_t m) {
    double total = 0, part = 0;
    int64_t count = 0;
    for (int64_t a = 0; a < A; a++) {
        const float *row = x + (a * M + m) * B;
        for (int64_t b = 0; b < B; b++) {
            part += row[b];
            if (++count == CHUNK) {
                total += part;
                part = 0;
                count = 0;
            }
        }
    }
    return count ? total + part : total;
}

/* sum_middle_row for the 8 rows m .. m + 7 at once: each row's additions in the
 * same order as alone (the chunk count is the same for all), interleaved, so the
 * latency of one double add per element no longer bounds the loop (perf: conv
 * bias gradients at 5% of B3's step, one chain per channel). */
static void sum_middle_rows8(const float *x, int64_t A, int64_t M, int64_t B, int64_t m, double *out) {
    double total[8] = {0}, part[8] = {0};
    int64_t count = 0;
    for (int64_t a = 0; a < A; a++) {
        const float *row = x + (a * M + m) * B;
        for (int64_t b = 0; b < B; b++) {
            for (int j = 0; j < 8; j++) part[j] += row[j * B + b];
            if (++count == CHUNK) {
                for (int j = 0; j < 8; j++) {
                    total[j] += part[j];
                    part[j] = 0;
                }
                count = 0;
            }
        }
    }
    for (int j = 0; j < 8; j++) out[j] = count ? total[j] + part[j] : total[j];
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
    /* kept dims a middle block between reduced leading and trailing ones (a conv
     * bias's gradient: [N x C x H x W] over 0, 2, 3) */
    int mid_end = leading;
    while (mid_end < a->ndim && !reduce[mid_end]) mid_end++;
    bool middle = leading > 0 && leading < mid_end && mid_end < a->ndim;
    for (int d = mid_end; d < a->ndim; d++) middle &= reduce[d];
    if ((op == EM_RED_SUM || op == EM_RED_MEAN) && prefix && leading > 0 && M > 1 &&
        em_tensor_is_contiguous(a)) {
        column_sums(em_tensor_data(a), R, M, o, op == EM_RED_MEAN ? 1.0 / (double)R : 1.0);
    } else if ((op == EM_RED_SUM || op == EM_RED_MEAN) && middle && em_tensor_is_contiguous(a)) {
        int64_t A = 1, B = 1;
        for (int d = 0; d < leading; d++) A *= a->shape[d];
        for (int d = mid_end; d < a->ndim; d++) B *= a->shape[d];
        const float *x = em_tensor_data(a);
        const int64_t groups = (M + 7) / 8; /* rows 8 at a time, the last 0..7 one by one */
#pragma omp parallel for schedule(static) if (M * R > 32768)
        for (int64_t gi = 0; gi < groups; gi++) {
            double sums[8];
            int64_t m0 = gi * 8, k = M - m0 < 8 ? M - m0 : 8;
            if (k == 8)
                sum_middle_rows8(x, A, M, B, m0, sums);
            else
                for (int64_t j = 0; j < k; j++) sums[j] = sum_middle_row(x, A, M, B, m0 + j);
            for (int64_t j = 0; j < k; j++)
                o[m0 + j] = op == EM_RED_MEAN ? (R ? (float)(sums[j] / (double)R) : NAN) : (float)sums[j];
        }
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

/* ---- prod's gradient without division ------------------------------- */
/* prod's gradient at x_i is the product of the other elements of its group,
 * prod_{j != i} x_j. Dividing the product by x_i gives NaN at zeros (0/0), so
 * it is computed from exclusive prefix and suffix products instead: exact with
 * one zero (the zero's position gets the product of the rest), two or more
 * zeros (all 0), and none. Both ops below work on the "rows" layout (kept dims
 * first, the R reduced elements of a group contiguous) and return a tensor of
 * x's shape. */

/* a's dims permuted kept-first (perm) and its inverse. */
static void rows_perm(const em_tensor *a, const bool *reduce, int *perm, int *inv) {
    int k = 0;
    for (int d = 0; d < a->ndim; d++)
        if (!reduce[d]) perm[k++] = d;
    for (int d = 0; d < a->ndim; d++)
        if (reduce[d]) perm[k++] = d;
    for (int d = 0; d < a->ndim; d++) inv[perm[d]] = d;
}

/* Rows of R back to the input's layout (contiguous, of the input's shape). */
static em_tensor *from_rows(em_tensor *rows, const em_tensor *like, const bool *reduce) {
    int perm[EM_MAX_DIMS], inv[EM_MAX_DIMS];
    rows_perm(like, reduce, perm, inv);
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    em_tensor *p = em_permute(rows, inv);
    em_tensor *c = p ? em_contiguous(p) : NULL;
    em_tensor_release(p);
    em_set_grad_enabled(was);
    return c;
}

static int reduce_mask(const char *fn, const em_tensor *x, int nd, const int *dims,
                       bool *reduce) {
    int norm[EM_MAX_DIMS];
    return parse_dims(fn, x, nd, dims, reduce, norm);
}

/* out[i] = prod_{j != i} x[j] over one row of n. */
static void prod_others_row(const float *x, int64_t n, float *out) {
    double left = 1;
    for (int64_t i = 0; i < n; i++) {
        out[i] = (float)left;
        left *= x[i];
    }
    double right = 1;
    for (int64_t i = n - 1; i >= 0; i--) {
        out[i] = (float)((double)out[i] * right);
        right *= x[i];
    }
}

/* out[k] = sum_{i != k} g[i] prod_{j != i, k} x[j] over one row of n: the
 * gradient of prod_others contracted with g (symmetric in i and k). With
 * L_k, S_k the exclusive prefix/suffix products, A_k = sum_{i<k} g_i
 * prod_{j<k, j!=i} x_j and B_k = sum_{i>k} g_i prod_{j>k, j!=i} x_j follow
 * A_{k+1} = A_k x_k + g_k L_k and B_{k-1} = B_k x_k + g_k S_k; then
 * out[k] = A_k S_k + L_k B_k. No division, so zeros are exact. */
static void prod_others_grad_row(const float *x, const float *g, int64_t n, float *out,
                                 double *scratch /* 2n */) {
    double *L = scratch, *A = scratch + n;
    double left = 1, acc = 0;
    for (int64_t k = 0; k < n; k++) {
        L[k] = left;
        A[k] = acc;
        acc = acc * x[k] + g[k] * left;
        left *= x[k];
    }
    double right = 1, b = 0;
    for (int64_t k = n - 1; k >= 0; k--) {
        out[k] = (float)(A[k] * right + L[k] * b);
        b = b * x[k] + g[k] * right;
        right *= x[k];
    }
}

static void save_dims(em_node *node, int nd, const int *dims) {
    node->iarg[0] = nd;
    for (int k = 0; k < nd; k++) node->iarg[1 + k] = dims[k];
}

/* The product of the other elements of each group (dims: the reduced dims,
 * 0-based; nd == 0: all). Shape of x. Differentiable (prod_others_grad). */
static em_tensor *prod_others(em_tensor *x, int nd, const int *dims) {
    if (!x) return NULL;
    bool reduce[EM_MAX_DIMS];
    if (reduce_mask("prod", x, nd, dims, reduce)) return NULL;
    int64_t M, R;
    em_tensor *c = rows_layout(x, reduce, &M, &R);
    em_tensor *o = c ? em_tensor_empty(c->ndim, c->shape) : NULL;
    if (!o) {
        em_tensor_release(c);
        return NULL;
    }
    const float *xs = em_tensor_data(c);
    float *os = o->storage->data;
#pragma omp parallel for schedule(static) if (M * R > 32768)
    for (int64_t i = 0; i < M; i++) prod_others_row(xs + i * R, R, os + i * R);
    em_tensor *out = from_rows(o, x, reduce);
    em_tensor_release(c);
    em_tensor_release(o);
    em_node *node = out ? em_record(EM_OP_prod_others, out, 1, &x) : NULL;
    if (node) {
        save_dims(node, nd, dims);
        em_node_save(node, x);
    }
    return out;
}

/* sum_{i != k} g_i prod_{j != i, k} x_j for each k of each group (g: x's shape,
 * or broadcast to it). Differentiable in g; its gradient in x (a third
 * derivative of prod) is not implemented and says so. */
static em_tensor *prod_others_grad(em_tensor *x, em_tensor *g, int nd, const int *dims) {
    if (!x || !g) return NULL;
    bool reduce[EM_MAX_DIMS];
    if (reduce_mask("prod", x, nd, dims, reduce)) return NULL;
    em_tensor *gx = NULL;
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    gx = em_expand(g, x->ndim, x->shape);
    em_set_grad_enabled(was);
    int64_t M, R;
    em_tensor *cx = rows_layout(x, reduce, &M, &R);
    em_tensor *cg = gx ? rows_layout(gx, reduce, &M, &R) : NULL;
    em_tensor_release(gx);
    em_tensor *o = cx && cg ? em_tensor_empty(cx->ndim, cx->shape) : NULL;
    double *scratch = o ? malloc((size_t)(2 * (R > 0 ? R : 1)) * sizeof *scratch *
                                 (size_t)em_get_num_threads())
                        : NULL;
    if (!scratch) {
        if (o) em_error_set("prod: out of memory for the gradient's scratch");
        em_tensor_release(cx);
        em_tensor_release(cg);
        em_tensor_release(o);
        return NULL;
    }
    const float *xs = em_tensor_data(cx), *gs = em_tensor_data(cg);
    float *os = o->storage->data;
    int nthreads = em_get_num_threads();
#pragma omp parallel for schedule(static) num_threads(nthreads) if (M * R > 32768)
    for (int64_t i = 0; i < M; i++)
        prod_others_grad_row(xs + i * R, gs + i * R, R, os + i * R,
                             scratch + 2 * R * omp_get_thread_num());
    free(scratch);
    em_tensor *out = from_rows(o, x, reduce);
    em_tensor_release(cx);
    em_tensor_release(cg);
    em_tensor_release(o);
    em_tensor *inputs[2] = {x, g};
    em_node *node = out ? em_record(EM_OP_prod_others_grad, out, 2, inputs) : NULL;
    if (node) {
        save_dims(node, nd, dims);
        em_node_save(node, x);
    }
    return out;
}

static void load_dims(const em_node *n, int *nd, int *dims) {
    *nd = (int)n->iarg[0];
    for (int k = 0; k < *nd; k++) dims[k] = (int)n->iarg[1 + k];
}

int em_backward_prod_others(em_node *n, em_tensor *g, em_tensor **gin) {
    int nd, dims[EM_MAX_DIMS];
    load_dims(n, &nd, dims);
    gin[0] = prod_others_grad(n->saved[0], g, nd, dims);
    return gin[0] ? EM_OK : EM_ERR;
}

int em_backward_prod_others_grad(em_node *n, em_tensor *g, em_tensor **gin) {
    int nd, dims[EM_MAX_DIMS];
    load_dims(n, &nd, dims);
    if (em_edge_needs_grad(n, 0))
        return em_error_set("prod: derivatives of third order and above are not implemented");
    if (em_edge_needs_grad(n, 1)) {
        em_tensor *r = prod_others_grad(n->saved[0], g, nd, dims);
        gin[1] = r ? em_sum_to_shape(r, n->edges[1].ndim, n->edges[1].shape) : NULL;
        em_tensor_release(r);
        if (!gin[1]) return EM_ERR;
    }
    return EM_OK;
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
    case EM_RED_STD: /* (x - mean) / ((R - c) std); 0 for a constant group (std 0: the
                      * subgradient, where the formula would be 0/0) */
        y = em_reduce(EM_RED_MEAN, x, nd, dims, true, 0);
        t1 = em_binary(EM_BIN_SUB, x, y);
        t2 = em_reduce(EM_RED_STD, x, nd, dims, true, correction);
        {
            em_tensor *pos = em_binary_scalar(EM_BIN_GT, t2, 0.0f);
            em_tensor *one = em_tensor_scalar(1.0f);
            em_tensor *safe = em_where(pos, t2, one);
            em_tensor_release(t2);
            em_tensor_release(pos);
            em_tensor_release(one);
            t2 = safe;
        }
        t3 = em_binary_scalar(EM_BIN_MUL, t2, (float)(R - correction));
        em_tensor_release(t2);
        t2 = em_binary(EM_BIN_DIV, t1, t3);
        r = em_binary(EM_BIN_MUL, ge, t2);
        break;
    case EM_RED_LOGSUMEXP: /* exp(x - y), the softmax. Where y is infinite (all -inf,
                            * or some +inf) exp(x - y) is NaN; the softmax's limit
                            * there is an even split between the entries equal to y. */
        y = em_reduce(op, x, nd, dims, true, 0);
        {
            em_tensor *above = em_binary_scalar(EM_BIN_GT, y, -INFINITY);
            em_tensor *below = em_binary_scalar(EM_BIN_LT, y, INFINITY);
            em_tensor *finite = em_binary(EM_BIN_MUL, above, below);
            em_tensor *zero = em_tensor_scalar(0.0f);
            em_tensor *ysafe = em_where(finite, y, zero);
            t1 = em_binary(EM_BIN_SUB, x, ysafe);
            em_tensor *soft = em_unary(EM_UN_EXP, t1);
            em_tensor *tied = em_binary(EM_BIN_EQ, x, y);
            em_tensor *count = em_reduce(EM_RED_SUM, tied, nd, dims, true, 0);
            em_tensor *share = em_binary(EM_BIN_DIV, tied, count);
            t2 = em_where(finite, soft, share);
            r = em_binary(EM_BIN_MUL, ge, t2);
            em_tensor *tmp[] = {above, below, finite, zero, ysafe, soft, tied, count, share};
            for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) em_tensor_release(tmp[i]);
        }
        break;
    case EM_RED_PROD: /* g times the product of the other elements (no division by x) */
        t1 = prod_others(x, nd, dims);
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
