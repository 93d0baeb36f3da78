/* test_reduce.c — every reduction (sum mean max min var std logsumexp prod,
 * argmax argmin) against a naive loop in double: over every subset of dims and
 * over all dims, keepdim true and false, negative dims, non-contiguous input,
 * large inputs that take the chunked and the parallel paths, NaN propagation,
 * empty dims, and independence from the thread count. */
#include <stdlib.h>

#include "em_autograd.h"
#include "em_rng.h"
#include "test.h"

/* ---- the naive reference --------------------------------------------- */

static double naive_op(em_reduce_op op, const double *v, int64_t n, int correction) {
    double s = 0, m;
    switch (op) {
    case EM_RED_SUM:
        for (int64_t i = 0; i < n; i++) s += v[i];
        return s;
    case EM_RED_MEAN:
        for (int64_t i = 0; i < n; i++) s += v[i];
        return s / (double)n;
    case EM_RED_MAX:
    case EM_RED_MIN:
        m = op == EM_RED_MAX ? -INFINITY : INFINITY;
        for (int64_t i = 0; i < n; i++) {
            if (isnan(v[i])) return NAN;
            if (op == EM_RED_MAX ? v[i] > m : v[i] < m) m = v[i];
        }
        return m;
    case EM_RED_VAR:
    case EM_RED_STD: {
        double mean = 0;
        for (int64_t i = 0; i < n; i++) mean += v[i];
        mean /= (double)n;
        for (int64_t i = 0; i < n; i++) s += (v[i] - mean) * (v[i] - mean);
        if (n - correction <= 0) return NAN;
        s /= (double)(n - correction);
        return op == EM_RED_STD ? sqrt(s) : s;
    }
    case EM_RED_LOGSUMEXP:
        m = -INFINITY;
        for (int64_t i = 0; i < n; i++) {
            if (isnan(v[i])) return NAN;
            if (v[i] > m) m = v[i];
        }
        if (isinf(m)) return m;
        for (int64_t i = 0; i < n; i++) s += exp(v[i] - m);
        return m + log(s);
    case EM_RED_PROD:
        s = 1;
        for (int64_t i = 0; i < n; i++) s *= v[i];
        return s;
    default: return NAN;
    }
}

/* Reduces `a` over the dims flagged in `reduce` the slow way: for each kept
 * position (row-major), collects the reduced elements and applies naive_op.
 * Returns a malloc'd array of the output's elements. */
static double *naive_reduce(em_reduce_op op, const em_tensor *a, const bool *reduce,
                            int correction, int64_t *out_n) {
    int64_t M = 1, R = 1;
    for (int d = 0; d < a->ndim; d++) {
        if (reduce[d]) R *= a->shape[d];
        else M *= a->shape[d];
    }
    double *out = malloc((size_t)(M ? M : 1) * sizeof *out);
    double *vals = malloc((size_t)(R ? R : 1) * sizeof *vals);
    /* walk every element of a in row-major order; its output slot and its
     * rank within the slot follow from the kept and reduced coordinates */
    int64_t *fill = calloc((size_t)(M ? M : 1), sizeof *fill);
    double **groups = malloc((size_t)(M ? M : 1) * sizeof *groups);
    for (int64_t i = 0; i < M; i++) groups[i] = malloc((size_t)(R ? R : 1) * sizeof(double));
    int64_t idx[EM_MAX_DIMS] = {0};
    for (int64_t e = 0; e < a->numel; e++) {
        int64_t slot = 0;
        for (int d = 0; d < a->ndim; d++)
            if (!reduce[d]) slot = slot * a->shape[d] + idx[d];
        groups[slot][fill[slot]++] = em_tensor_get(a, idx);
        for (int d = a->ndim - 1; d >= 0; d--) {
            if (++idx[d] < a->shape[d]) break;
            idx[d] = 0;
        }
    }
    for (int64_t i = 0; i < M; i++) {
        out[i] = naive_op(op, groups[i], R, correction);
        free(groups[i]);
    }
    free(groups);
    free(fill);
    free(vals);
    *out_n = M;
    return out;
}

/* Whether got (float) matches want (double): NaN with NaN, inf with inf,
 * otherwise within rel * (1 + |want|). */
static bool close_to(float got, double want, double rel) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == (float)want;
    return fabs((double)got - want) <= rel * (1.0 + fabs(want));
}

/* Compares em_reduce(op, a, dims, keepdim) with the naive loop; prints the
 * first mismatch. Returns true when everything matches. */
static bool reduce_matches(em_reduce_op op, em_tensor *a, int ndims, const int *dims,
                           bool keepdim, int correction, double rel) {
    bool reduce[EM_MAX_DIMS] = {false};
    if (ndims == 0)
        for (int d = 0; d < a->ndim; d++) reduce[d] = true;
    for (int i = 0; i < ndims; i++) reduce[dims[i] < 0 ? dims[i] + a->ndim : dims[i]] = true;
    em_tensor *r = em_reduce(op, a, ndims, dims, keepdim, correction);
    if (!r) {
        printf("    %s failed: %s\n", em_reduce_name(op), em_error_message());
        return false;
    }
    /* the output shape */
    int k = 0;
    bool ok = true;
    for (int d = 0; d < a->ndim; d++) {
        if (!reduce[d]) ok &= k < r->ndim && r->shape[k++] == a->shape[d];
        else if (keepdim) ok &= k < r->ndim && r->shape[k++] == 1;
    }
    ok &= k == r->ndim;
    if (!ok) printf("    %s: wrong output shape (%d dims)\n", em_reduce_name(op), r->ndim);
    int64_t n;
    double *want = naive_reduce(op, a, reduce, correction, &n);
    ok &= r->numel == n;
    float *got = malloc((size_t)(n ? n : 1) * sizeof *got);
    if (ok) em_tensor_read(r, got);
    for (int64_t i = 0; ok && i < n; i++)
        if (!close_to(got[i], want[i], rel)) {
            printf("    %s (ndims %d, keepdim %d) element %lld: got %.8g, want %.8g\n",
                   em_reduce_name(op), ndims, keepdim, (long long)i, got[i], want[i]);
            ok = false;
        }
    free(got);
    free(want);
    em_tensor_release(r);
    return ok;
}

static const em_reduce_op all_ops[] = {EM_RED_SUM, EM_RED_MEAN, EM_RED_MAX, EM_RED_MIN,
                                       EM_RED_VAR, EM_RED_STD, EM_RED_LOGSUMEXP, EM_RED_PROD};

/* Values for prod that neither overflow nor vanish: +-U[0.8, 1.25]. */
static em_tensor *prod_friendly(int ndim, const int64_t *shape) {
    em_tensor *t = em_rand(ndim, shape);
    for (int64_t i = 0; i < t->numel; i++) {
        float u = t->storage->data[i];
        t->storage->data[i] = (0.8f + 0.45f * u) * (i % 3 == 0 ? -1.0f : 1.0f);
    }
    return t;
}

/* Every subset of dims (as a list, also with negative dims), and all dims,
 * keepdim true and false, for every op. */
static void check_every_dim_subset(em_tensor *a, em_tensor *pa, const char *what) {
    int nd = a->ndim;
    for (size_t o = 0; o < sizeof all_ops / sizeof all_ops[0]; o++) {
        em_reduce_op op = all_ops[o];
        em_tensor *x = op == EM_RED_PROD ? pa : a;
        for (int keep = 0; keep <= 1; keep++) {
            if (!reduce_matches(op, x, 0, NULL, keep, 1, 1e-4)) {
                printf("    (%s, all dims)\n", what);
                em_test_failures++;
            }
            for (int mask = 1; mask < (1 << nd); mask++) {
                int dims[EM_MAX_DIMS], n = 0;
                for (int d = 0; d < nd; d++)
                    if (mask & (1 << d)) dims[n++] = (mask & 1) ? d - nd : d; /* mix in negatives */
                if (!reduce_matches(op, x, n, dims, keep, 1, 1e-4)) {
                    printf("    (%s, dim mask %d)\n", what, mask);
                    em_test_failures++;
                }
            }
        }
    }
}

TEST(reduce_every_op_every_dim_subset_contiguous) {
    em_rng_seed(21);
    int64_t s3[3] = {3, 4, 5};
    em_tensor *a = em_randn(3, s3), *pa = prod_friendly(3, s3);
    check_every_dim_subset(a, pa, "[3 x 4 x 5]");
    int64_t s4[4] = {2, 3, 1, 7};
    em_tensor *b = em_randn(4, s4), *pb = prod_friendly(4, s4);
    check_every_dim_subset(b, pb, "[2 x 3 x 1 x 7]");
    em_tensor *ts[] = {a, pa, b, pb};
    for (int i = 0; i < 4; i++) em_tensor_release(ts[i]);
}

TEST(reduce_every_op_non_contiguous_input) {
    em_rng_seed(22);
    /* a permuted, narrowed view: [3 x 4 x 5] out of [6 x 5 x 3] */
    int64_t s[3] = {6, 5, 3};
    em_tensor *base = em_randn(3, s), *pbase = prod_friendly(3, s);
    int perm[3] = {2, 0, 1};
    em_tensor *p = em_permute(base, perm), *pp = em_permute(pbase, perm); /* [3 x 6 x 5] */
    em_tensor *a = em_narrow(p, 1, 1, 4), *pa = em_narrow(pp, 1, 1, 4);  /* [3 x 4 x 5] */
    CHECK(!em_tensor_is_contiguous(a));
    check_every_dim_subset(a, pa, "permuted+narrowed");
    /* an expanded (stride-0) input */
    int64_t s1[3] = {3, 1, 5}, se[3] = {3, 4, 5};
    em_tensor *e0 = em_randn(3, s1), *e = em_expand(e0, 3, se);
    em_tensor *pe0 = prod_friendly(3, s1), *pe = em_expand(pe0, 3, se);
    check_every_dim_subset(e, pe, "expanded");
    em_tensor *ts[] = {base, pbase, p, pp, a, pa, e0, e, pe0, pe};
    for (int i = 0; i < 10; i++) em_tensor_release(ts[i]);
}

TEST(reduce_var_std_corrections) {
    em_rng_seed(23);
    int64_t s[2] = {4, 9};
    em_tensor *a = em_randn(2, s);
    int d1 = 1, d0 = 0;
    for (int c = 0; c <= 2; c++) {
        CHECK(reduce_matches(EM_RED_VAR, a, 1, &d1, false, c, 1e-4));
        CHECK(reduce_matches(EM_RED_STD, a, 1, &d0, true, c, 1e-4));
        CHECK(reduce_matches(EM_RED_VAR, a, 0, NULL, false, c, 1e-4));
    }
    /* one element with correction 1: nan, like PyTorch */
    int64_t s1[2] = {4, 1};
    em_tensor *b = em_randn(2, s1);
    em_tensor *v = em_reduce(EM_RED_VAR, b, 1, &d1, false, 1);
    CHECK(v && isnan(v->storage->data[0]));
    em_tensor_release(a);
    em_tensor_release(b);
    em_tensor_release(v);
}

TEST(reduce_zero_dim_tensor) {
    em_tensor *s = em_tensor_scalar(2.5f);
    for (size_t o = 0; o < sizeof all_ops / sizeof all_ops[0]; o++) {
        if (all_ops[o] == EM_RED_VAR || all_ops[o] == EM_RED_STD) continue;
        em_tensor *r = em_reduce(all_ops[o], s, 0, NULL, false, 1);
        CHECK(r && r->ndim == 0 && r->storage->data[0] == 2.5f);
        em_tensor_release(r);
    }
    int d = 0;
    CHECK(em_reduce(EM_RED_SUM, s, 1, &d, false, 1) == NULL);
    CHECK_ERROR("sum: dim 1 out of range for a tensor of 0 dims");
    em_tensor_release(s);
}

TEST(reduce_large_inputs_take_chunked_and_parallel_paths) {
    em_rng_seed(24);
    int threads = em_get_num_threads();
    em_set_num_threads(2);
    /* full reductions over 5 chunks and a bit (chunk = 65536) */
    int64_t n = 5 * 65536 + 77;
    em_tensor *a = em_randn(1, &n);
    for (size_t o = 0; o < sizeof all_ops / sizeof all_ops[0]; o++) {
        if (all_ops[o] == EM_RED_PROD) continue;
        if (!reduce_matches(all_ops[o], a, 0, NULL, false, 1, 2e-5)) em_test_failures++;
    }
    /* rows in parallel: [100 x 1000] over each dim; [400 x 300] over dim 0 is
     * the column-sum path for sum and mean */
    int64_t s2[2] = {100, 1000}, s3[2] = {400, 300};
    em_tensor *b = em_randn(2, s2), *c = em_randn(2, s3);
    for (size_t o = 0; o < sizeof all_ops / sizeof all_ops[0]; o++) {
        if (all_ops[o] == EM_RED_PROD) continue;
        for (int d = 0; d < 2; d++) {
            CHECK(reduce_matches(all_ops[o], b, 1, &d, false, 1, 1e-4));
            CHECK(reduce_matches(all_ops[o], c, 1, &d, true, 1, 1e-4));
        }
    }
    /* a non-contiguous large input: the transpose of c */
    em_tensor *ct = em_transpose(c, 0, 1);
    int d0 = 0, d1 = 1;
    CHECK(reduce_matches(EM_RED_SUM, ct, 1, &d0, false, 1, 1e-4));
    CHECK(reduce_matches(EM_RED_MAX, ct, 1, &d1, false, 1, 1e-4));
    CHECK(reduce_matches(EM_RED_LOGSUMEXP, ct, 0, NULL, false, 1, 1e-5));
    /* prod over a long row of values near 1 */
    int64_t np = 3 * 65536;
    em_tensor *p = em_tensor_full(1, &np, 1.0f);
    p->storage->data[5] = 2.0f;
    p->storage->data[np - 1] = 0.25f;
    em_tensor *pr = em_reduce(EM_RED_PROD, p, 0, NULL, false, 0);
    CHECK(pr && pr->storage->data[0] == 0.5f);
    em_set_num_threads(threads);
    em_tensor *ts[] = {a, b, c, ct, p, pr};
    for (int i = 0; i < 6; i++) em_tensor_release(ts[i]);
}

TEST(reduce_results_do_not_depend_on_thread_count) {
    em_rng_seed(25);
    int threads = em_get_num_threads();
    int64_t n = 1000003;
    em_tensor *a = em_randn(1, &n);
    int64_t s2[2] = {1000, 1000};
    em_tensor *b = em_randn(2, s2);
    float r1[EM_RED_COUNT], r2[EM_RED_COUNT], c1[3], c2[3];
    for (int pass = 0; pass < 2; pass++) {
        em_set_num_threads(pass == 0 ? 1 : 2);
        for (int op = 0; op < EM_RED_COUNT; op++) {
            em_tensor *r = em_reduce((em_reduce_op)op, a, 0, NULL, false, 1);
            (pass == 0 ? r1 : r2)[op] = r ? r->storage->data[0] : -1;
            em_tensor_release(r);
        }
        int d = 0;
        em_tensor *cs = em_reduce(EM_RED_SUM, b, 1, &d, false, 0);
        d = 1;
        em_tensor *rs = em_reduce(EM_RED_VAR, b, 1, &d, false, 1);
        float *dst = pass == 0 ? c1 : c2;
        dst[0] = cs ? cs->storage->data[17] : -1;
        dst[1] = rs ? rs->storage->data[999] : -1;
        dst[2] = cs ? cs->storage->data[999] : -1;
        em_tensor_release(cs);
        em_tensor_release(rs);
    }
    for (int op = 0; op < EM_RED_COUNT; op++) {
        if (!(memcmp(&r1[op], &r2[op], sizeof(float)) == 0))
            printf("    %s: %.9g with 1 thread, %.9g with 2\n", em_reduce_name((em_reduce_op)op),
                   r1[op], r2[op]);
        CHECK(memcmp(&r1[op], &r2[op], sizeof(float)) == 0);
    }
    CHECK(memcmp(c1, c2, sizeof c1) == 0);
    em_set_num_threads(threads);
    em_tensor_release(a);
    em_tensor_release(b);
}

TEST(reduce_max_min_propagate_nan) {
    /* a NaN in any chunk of a long row makes the full max/min NaN */
    int64_t n = 4 * 65536 + 3;
    for (int where = 0; where < 3; where++) {
        int64_t pos = where == 0 ? 0 : (where == 1 ? 2 * 65536 + 5 : n - 1);
        em_tensor *a = em_randn(1, &n);
        a->storage->data[pos] = NAN;
        for (int op = EM_RED_MAX; op <= EM_RED_MIN; op++) {
            em_tensor *r = em_reduce((em_reduce_op)op, a, 0, NULL, false, 0);
            CHECK(r && isnan(r->storage->data[0]));
            em_tensor_release(r);
        }
        em_tensor *lse = em_reduce(EM_RED_LOGSUMEXP, a, 0, NULL, false, 0);
        CHECK(lse && isnan(lse->storage->data[0]));
        em_tensor *am = em_argmax(a, 0, false), *an = em_argmin(a, 0, false);
        CHECK(am && am->storage->data[0] == (float)pos);
        CHECK(an && an->storage->data[0] == (float)pos);
        em_tensor_release(lse);
        em_tensor_release(am);
        em_tensor_release(an);
        em_tensor_release(a);
    }
    /* per row: only rows holding a NaN become NaN, in every layout */
    int64_t s[2] = {4, 6};
    em_tensor *b = em_randn(2, s);
    b->storage->data[1 * 6 + 0] = NAN; /* row 1, first */
    b->storage->data[3 * 6 + 5] = NAN; /* row 3, last */
    for (int op = EM_RED_MAX; op <= EM_RED_MIN; op++)
        for (int d = 0; d < 2; d++)
            for (int keep = 0; keep < 2; keep++)
                CHECK(reduce_matches((em_reduce_op)op, b, 1, &d, keep, 0, 0));
    em_tensor *bt = em_transpose(b, 0, 1);
    int d0 = 0;
    CHECK(reduce_matches(EM_RED_MAX, bt, 1, &d0, false, 0, 0));
    CHECK(reduce_matches(EM_RED_MIN, bt, 1, &d0, false, 0, 0));
    em_tensor_release(bt);
    em_tensor_release(b);
}

TEST(reduce_infinities) {
    float v[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int64_t n = 4;
    em_tensor *a = em_tensor_from_data(1, &n, v);
    em_tensor *l = em_reduce(EM_RED_LOGSUMEXP, a, 0, NULL, false, 0);
    CHECK(l && l->storage->data[0] == -INFINITY);
    a->storage->data[2] = INFINITY;
    em_tensor *l2 = em_reduce(EM_RED_LOGSUMEXP, a, 0, NULL, false, 0);
    CHECK(l2 && l2->storage->data[0] == INFINITY);
    em_tensor *mx = em_reduce(EM_RED_MAX, a, 0, NULL, false, 0);
    CHECK(mx && mx->storage->data[0] == INFINITY);
    /* logsumexp of large values does not overflow */
    float big[3] = {1000.0f, 1000.0f, 999.0f};
    int64_t n3 = 3;
    em_tensor *b = em_tensor_from_data(1, &n3, big);
    em_tensor *lb = em_reduce(EM_RED_LOGSUMEXP, b, 0, NULL, false, 0);
    CHECK(lb && close_to(lb->storage->data[0], 1000.0 + log(2.0 + exp(-1.0)), 1e-6));
    em_tensor *ts[] = {a, l, l2, mx, b, lb};
    for (int i = 0; i < 6; i++) em_tensor_release(ts[i]);
}

TEST(reduce_over_empty_dims) {
    int64_t s[2] = {3, 0};
    em_tensor *a = em_tensor_zeros(2, s);
    int d1 = 1, d0 = 0;
    em_tensor *sum = em_reduce(EM_RED_SUM, a, 1, &d1, false, 0);
    CHECK(sum && sum->numel == 3 && sum->storage->data[0] == 0.0f && sum->storage->data[2] == 0.0f);
    em_tensor *prod = em_reduce(EM_RED_PROD, a, 1, &d1, false, 0);
    CHECK(prod && prod->numel == 3 && prod->storage->data[1] == 1.0f);
    em_tensor *mean = em_reduce(EM_RED_MEAN, a, 0, NULL, false, 0);
    CHECK(mean && isnan(mean->storage->data[0]));
    em_tensor *sum0 = em_reduce(EM_RED_SUM, a, 1, &d0, false, 0); /* [0]: nothing to reduce into */
    CHECK(sum0 && sum0->ndim == 1 && sum0->shape[0] == 0);
    CHECK(em_reduce(EM_RED_MAX, a, 1, &d1, false, 0) == NULL);
    CHECK_ERROR("max: cannot reduce over an empty dim");
    CHECK(em_reduce(EM_RED_MIN, a, 0, NULL, false, 0) == NULL);
    CHECK_ERROR("min: cannot reduce over an empty dim");
    CHECK(em_argmax(a, 1, false) == NULL);
    CHECK_ERROR("argmax: cannot reduce over an empty dim");
    em_tensor *ts[] = {a, sum, prod, mean, sum0};
    for (int i = 0; i < 5; i++) em_tensor_release(ts[i]);
}

/* Naive argmax/argmin along dim d: first index of the extreme (NaN wins). */
static bool arg_matches(em_tensor *a, int d, bool keepdim, bool is_max) {
    em_tensor *r = is_max ? em_argmax(a, d, keepdim) : em_argmin(a, d, keepdim);
    if (!r) return false;
    int dd = d < 0 ? d + a->ndim : d;
    bool ok = r->ndim == (keepdim ? a->ndim : a->ndim - 1);
    int64_t idx[EM_MAX_DIMS] = {0}, k = 0;
    int64_t outer = a->numel / (a->shape[dd] ? a->shape[dd] : 1);
    float *got = malloc((size_t)(r->numel ? r->numel : 1) * sizeof *got);
    em_tensor_read(r, got);
    ok &= r->numel == outer;
    /* iterate over every position with idx[dd] = 0 in row-major order */
    for (int64_t e = 0; ok && e < outer; e++) {
        int64_t best = 0;
        float bv = NAN;
        for (int64_t j = 0; j < a->shape[dd]; j++) {
            idx[dd] = j;
            float v = em_tensor_get(a, idx);
            if (j == 0) { bv = v; continue; }
            if (isnan(bv)) break;
            if (isnan(v) || (is_max ? v > bv : v < bv)) { best = j; bv = v; }
        }
        idx[dd] = 0;
        if (got[k] != (float)best) {
            printf("    arg%s dim %d position %lld: got %g, want %lld\n", is_max ? "max" : "min",
                   d, (long long)k, got[k], (long long)best);
            ok = false;
        }
        k++;
        for (int q = a->ndim - 1; q >= 0; q--) {
            if (q == dd) continue;
            if (++idx[q] < a->shape[q]) break;
            idx[q] = 0;
        }
    }
    free(got);
    em_tensor_release(r);
    return ok;
}

TEST(argmax_argmin_every_dim) {
    em_rng_seed(26);
    int64_t s[3] = {3, 4, 5};
    em_tensor *a = em_randint(-2, 3, 3, s); /* many ties: the first index wins */
    for (int d = -3; d < 3; d++)
        for (int keep = 0; keep < 2; keep++) {
            CHECK(arg_matches(a, d, keep, true));
            CHECK(arg_matches(a, d, keep, false));
        }
    int perm[3] = {2, 0, 1};
    em_tensor *p = em_permute(a, perm);
    for (int d = 0; d < 3; d++) {
        CHECK(arg_matches(p, d, false, true));
        CHECK(arg_matches(p, d, true, false));
    }
    a->storage->data[7] = NAN;
    for (int d = 0; d < 3; d++) {
        CHECK(arg_matches(a, d, false, true));
        CHECK(arg_matches(a, d, false, false));
    }
    int64_t big[2] = {70, 900};
    em_tensor *b = em_randn(2, big);
    CHECK(arg_matches(b, 0, false, true));
    CHECK(arg_matches(b, 1, false, false));
    CHECK(em_argmax(a, 3, false) == NULL);
    CHECK_ERROR("argmax: dim 4 out of range for a tensor of 3 dims (expected -3..3)");
    em_tensor_release(a);
    em_tensor_release(p);
    em_tensor_release(b);
}

TEST(reduce_dim_errors) {
    int64_t s[2] = {2, 3};
    em_tensor *a = em_tensor_zeros(2, s);
    int bad = 2;
    CHECK(em_reduce(EM_RED_SUM, a, 1, &bad, false, 0) == NULL);
    CHECK_ERROR("sum: dim 3 out of range for a tensor of 2 dims (expected -2..2)");
    int neg = -3;
    CHECK(em_reduce(EM_RED_MEAN, a, 1, &neg, false, 0) == NULL);
    CHECK_ERROR("mean: dim -3 out of range for a tensor of 2 dims (expected -2..2)");
    int twice[2] = {1, -1};
    CHECK(em_reduce(EM_RED_VAR, a, 2, twice, false, 0) == NULL);
    CHECK_ERROR("var: dim 2 appears twice");
    em_tensor_release(a);
}

TEST(sum_to_shape_reduces_broadcast_dims) {
    em_rng_seed(27);
    int64_t s[4] = {2, 3, 4, 5};
    em_tensor *g = em_randn(4, s);
    int64_t target[3] = {3, 1, 5};
    em_tensor *r = em_sum_to_shape(g, 3, target);
    CHECK(r && r->ndim == 3 && r->shape[0] == 3 && r->shape[1] == 1 && r->shape[2] == 5);
    if (r)
        for (int64_t i = 0; i < 3; i++)
            for (int64_t k = 0; k < 5; k++) {
                double want = 0;
                for (int64_t a = 0; a < 2; a++)
                    for (int64_t j = 0; j < 4; j++) {
                        int64_t idx[4] = {a, i, j, k};
                        want += em_tensor_get(g, idx);
                    }
                int64_t o[3] = {i, 0, k};
                CHECK_NEAR(em_tensor_get(r, o), want, 1e-5);
            }
    em_tensor *same = em_sum_to_shape(g, 4, s);
    CHECK(same == g);
    em_tensor_release(same);
    em_tensor *all = em_sum_to_shape(g, 0, NULL);
    CHECK(all && all->ndim == 0);
    em_tensor_release(all);
    em_tensor_release(r);
    em_tensor_release(g);
}
