/* test_matmul.c — em_matmul and em_linear against a naive triple loop: odd and
 * degenerate sizes (1, 7, 129 in every position, k = 0), transposed and
 * narrowed (non-contiguous) operands, expanded (stride-0) operands, batched
 * products with broadcast batch dims, and 1-D operands. */
#include <stdlib.h>

#include "em_autograd.h"
#include "em_rng.h"
#include "test.h"

/* A [rows x cols] tensor of N(0,1) numbers. */
static em_tensor *randn2(int64_t rows, int64_t cols) {
    int64_t s[2] = {rows, cols};
    return em_randn(2, s);
}

/* Naive C[i][j] = sum_k A[i][k] B[k][j] for 2-D views of any strides, in double. */
static double naive_dot(const em_tensor *a, const em_tensor *b, int64_t i, int64_t j) {
    double s = 0;
    for (int64_t k = 0; k < a->shape[1]; k++) {
        int64_t ia[2] = {i, k}, ib[2] = {k, j};
        s += (double)em_tensor_get(a, ia) * (double)em_tensor_get(b, ib);
    }
    return s;
}

/* Largest |got - naive| over all elements of a 2-D product; -1 on a shape mismatch. */
static double max_err_2d(const em_tensor *got, const em_tensor *a, const em_tensor *b) {
    if (!got || got->ndim != 2 || got->shape[0] != a->shape[0] || got->shape[1] != b->shape[1])
        return -1;
    double worst = 0;
    for (int64_t i = 0; i < got->shape[0]; i++)
        for (int64_t j = 0; j < got->shape[1]; j++) {
            int64_t idx[2] = {i, j};
            double e = fabs((double)em_tensor_get(got, idx) - naive_dot(a, b, i, j));
            if (!(e <= worst)) worst = e; /* NaN counts as worst */
        }
    return worst;
}

/* Tolerance for a float32 dot product of length k of N(0,1) values. */
static double tol_for(int64_t k) { return 1e-5 * (double)(k + 1) + 1e-4; }

TEST(matmul_every_odd_and_degenerate_size) {
    const int64_t sizes[] = {1, 7, 129};
    em_rng_seed(11);
    for (int im = 0; im < 3; im++)
        for (int ik = 0; ik < 3; ik++)
            for (int in = 0; in < 3; in++) {
                int64_t m = sizes[im], k = sizes[ik], n = sizes[in];
                em_tensor *a = randn2(m, k), *b = randn2(k, n);
                em_tensor *c = em_matmul(a, b);
                double err = max_err_2d(c, a, b);
                if (!(err >= 0 && err < tol_for(k)))
                    printf("    m=%lld k=%lld n=%lld: err %g\n", (long long)m, (long long)k,
                           (long long)n, err);
                CHECK(err >= 0 && err < tol_for(k));
                em_tensor_release(a);
                em_tensor_release(b);
                em_tensor_release(c);
            }
}

TEST(matmul_inner_size_zero_gives_zeros) {
    em_tensor *a = randn2(3, 0), *b = randn2(0, 5);
    em_tensor *c = em_matmul(a, b);
    CHECK(c && c->ndim == 2 && c->shape[0] == 3 && c->shape[1] == 5);
    if (c)
        for (int64_t i = 0; i < c->numel; i++) CHECK(c->storage->data[i] == 0.0f);
    em_tensor_release(c);
    /* batched k = 0 too, into a reused (dirty) buffer */
    int64_t sa[3] = {2, 4, 0}, sb[3] = {2, 0, 6};
    em_tensor *ba = em_tensor_empty(3, sa), *bb = em_tensor_empty(3, sb);
    em_tensor *bc = em_matmul(ba, bb);
    CHECK(bc && bc->numel == 48);
    if (bc)
        for (int64_t i = 0; i < bc->numel; i++) CHECK(bc->storage->data[i] == 0.0f);
    em_tensor_release(a);
    em_tensor_release(b);
    em_tensor_release(ba);
    em_tensor_release(bb);
    em_tensor_release(bc);
}

TEST(matmul_empty_rows_or_columns) {
    em_tensor *a = randn2(0, 7), *b = randn2(7, 3);
    em_tensor *c = em_matmul(a, b);
    CHECK(c && c->shape[0] == 0 && c->shape[1] == 3 && c->numel == 0);
    em_tensor *d = randn2(4, 7), *e = randn2(7, 0);
    em_tensor *f = em_matmul(d, e);
    CHECK(f && f->shape[0] == 4 && f->shape[1] == 0);
    em_tensor_release(a);
    em_tensor_release(b);
    em_tensor_release(c);
    em_tensor_release(d);
    em_tensor_release(e);
    em_tensor_release(f);
}

/* Builds each kind of awkward 2-D [rows x cols] operand over fresh storage. */
enum { LAYOUT_CONTIG, LAYOUT_TRANSPOSED, LAYOUT_NARROW_COLS, LAYOUT_NARROW_ROWS,
       LAYOUT_STRIDED_BOTH, LAYOUT_EXPANDED_ROWS, LAYOUT_EXPANDED_COLS, LAYOUT_COUNT };

static em_tensor *make_layout(int layout, int64_t rows, int64_t cols) {
    switch (layout) {
    case LAYOUT_CONTIG: return randn2(rows, cols);
    case LAYOUT_TRANSPOSED: { /* unit stride down the rows */
        em_tensor *t = randn2(cols, rows), *v = em_transpose(t, 0, 1);
        em_tensor_release(t);
        return v;
    }
    case LAYOUT_NARROW_COLS: { /* row stride cols + 3 */
        em_tensor *t = randn2(rows, cols + 5), *v = em_narrow(t, 1, 2, cols);
        em_tensor_release(t);
        return v;
    }
    case LAYOUT_NARROW_ROWS: { /* transposed and narrowed: column stride rows + 4 */
        em_tensor *t = randn2(cols, rows + 4), *n = em_narrow(t, 1, 1, rows);
        em_tensor *v = em_transpose(n, 0, 1);
        em_tensor_release(t);
        em_tensor_release(n);
        return v;
    }
    case LAYOUT_STRIDED_BOTH: { /* no unit stride at all: BLAS cannot take it as is */
        int64_t s[3] = {rows, cols, 2};
        em_tensor *t = em_randn(3, s), *v = em_select(t, 2, 1);
        em_tensor_release(t);
        return v;
    }
    case LAYOUT_EXPANDED_ROWS: { /* every row the same: row stride 0 */
        em_tensor *t = randn2(1, cols);
        int64_t s[2] = {rows, cols};
        em_tensor *v = em_expand(t, 2, s);
        em_tensor_release(t);
        return v;
    }
    default: { /* every column the same: column stride 0 */
        em_tensor *t = randn2(rows, 1);
        int64_t s[2] = {rows, cols};
        em_tensor *v = em_expand(t, 2, s);
        em_tensor_release(t);
        return v;
    }
    }
}

TEST(matmul_non_contiguous_operands_every_layout_pair) {
    const int64_t sizes[][3] = {{7, 129, 1}, {1, 7, 129}, {129, 1, 7}, {7, 7, 7}, {1, 1, 1},
                                {33, 17, 9}};
    em_rng_seed(12);
    for (int s = 0; s < 6; s++) {
        int64_t m = sizes[s][0], k = sizes[s][1], n = sizes[s][2];
        for (int la = 0; la < LAYOUT_COUNT; la++)
            for (int lb = 0; lb < LAYOUT_COUNT; lb++) {
                em_tensor *a = make_layout(la, m, k), *b = make_layout(lb, k, n);
                CHECK(a && b && a->shape[0] == m && a->shape[1] == k && b->shape[1] == n);
                em_tensor *c = em_matmul(a, b);
                double err = max_err_2d(c, a, b);
                if (!(err >= 0 && err < tol_for(k)))
                    printf("    m=%lld k=%lld n=%lld layouts %d,%d: err %g\n", (long long)m,
                           (long long)k, (long long)n, la, lb, err);
                CHECK(err >= 0 && err < tol_for(k));
                em_tensor_release(a);
                em_tensor_release(b);
                em_tensor_release(c);
            }
    }
}

/* Naive batched product: out[..., i, j] with broadcast batch dims, compared
 * over every element; a and b may be any views. */
static double max_err_batched(const em_tensor *got, const em_tensor *a, const em_tensor *b) {
    int nb = got->ndim - 2;
    int64_t m = got->shape[nb], n = got->shape[nb + 1], k = a->shape[a->ndim - 1];
    double worst = 0;
    int64_t idx[EM_MAX_DIMS] = {0};
    for (int64_t e = 0; e < got->numel; e++) {
        int64_t ia[EM_MAX_DIMS] = {0}, ib[EM_MAX_DIMS] = {0};
        for (int d = 0; d < nb; d++) {
            int da = d - (nb - (a->ndim - 2)), db = d - (nb - (b->ndim - 2));
            if (da >= 0) ia[da] = a->shape[da] == 1 ? 0 : idx[d];
            if (db >= 0) ib[db] = b->shape[db] == 1 ? 0 : idx[d];
        }
        double s = 0;
        for (int64_t kk = 0; kk < k; kk++) {
            ia[a->ndim - 2] = idx[nb];
            ia[a->ndim - 1] = kk;
            ib[b->ndim - 2] = kk;
            ib[b->ndim - 1] = idx[nb + 1];
            s += (double)em_tensor_get(a, ia) * (double)em_tensor_get(b, ib);
        }
        double err = fabs((double)em_tensor_get(got, idx) - s);
        if (!(err <= worst)) worst = err;
        for (int d = got->ndim - 1; d >= 0; d--) {
            if (++idx[d] < got->shape[d]) break;
            idx[d] = 0;
        }
    }
    (void)m;
    (void)n;
    return worst;
}

static bool shape_is(const em_tensor *t, int ndim, const int64_t *shape) {
    if (!t || t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

TEST(matmul_batched_with_broadcast_batch_dims) {
    em_rng_seed(13);
    struct {
        int an, bn, on;
        int64_t as[4], bs[4], os[4];
    } cases[] = {
        {3, 3, 3, {4, 7, 5}, {4, 5, 3}, {4, 7, 3}},          /* plain batch */
        {3, 2, 3, {2, 7, 129}, {129, 1}, {2, 7, 1}},          /* 2-D right operand */
        {2, 3, 3, {1, 7}, {5, 7, 3}, {5, 1, 3}},              /* 2-D left operand */
        {3, 3, 3, {1, 3, 4}, {6, 4, 2}, {6, 3, 2}},           /* batch 1 broadcasts */
        {4, 3, 4, {2, 1, 3, 4}, {5, 4, 7}, {2, 5, 3, 7}},     /* both sides broadcast */
        {4, 4, 4, {1, 3, 1, 7}, {2, 1, 7, 1}, {2, 3, 1, 1}},  /* sizes 1 everywhere */
        {3, 3, 3, {3, 0, 4}, {3, 4, 2}, {3, 0, 2}},           /* empty rows */
        {3, 3, 3, {0, 2, 4}, {1, 4, 2}, {0, 2, 2}},           /* empty batch */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        em_tensor *a = em_randn(cases[c].an, cases[c].as), *b = em_randn(cases[c].bn, cases[c].bs);
        em_tensor *o = em_matmul(a, b);
        CHECK(shape_is(o, cases[c].on, cases[c].os));
        if (shape_is(o, cases[c].on, cases[c].os)) {
            double err = max_err_batched(o, a, b);
            if (!(err < 1e-3)) printf("    case %zu: err %g\n", c, err);
            CHECK(err < 1e-3);
        }
        em_tensor_release(a);
        em_tensor_release(b);
        em_tensor_release(o);
    }
}

TEST(matmul_batched_non_contiguous_and_expanded_batches) {
    em_rng_seed(14);
    /* a: [3 x 7 x 5] as the transpose of [3 x 5 x 7]; b: [3 x 5 x 4] permuted from [5 x 3 x 4] */
    int64_t s1[3] = {3, 5, 7}, s2[3] = {5, 3, 4};
    em_tensor *a0 = em_randn(3, s1), *b0 = em_randn(3, s2);
    em_tensor *a = em_transpose(a0, 1, 2);
    int perm[3] = {1, 0, 2};
    em_tensor *b = em_permute(b0, perm);
    em_tensor *o = em_matmul(a, b);
    int64_t want[3] = {3, 7, 4};
    CHECK(shape_is(o, 3, want));
    if (o) CHECK(max_err_batched(o, a, b) < 1e-3);
    /* expanded batch dim (stride 0, size > 1) on the right */
    int64_t s3[3] = {1, 4, 6}, s4[3] = {3, 4, 6};
    em_tensor *c0 = em_randn(3, s3), *c = em_expand(c0, 3, s4);
    em_tensor *o2 = em_matmul(o, c);
    int64_t want2[3] = {3, 7, 6};
    CHECK(shape_is(o2, 3, want2));
    if (o2) CHECK(max_err_batched(o2, o, c) < 1e-3);
    /* narrowed batch */
    em_tensor *an = em_narrow(a, 0, 1, 2), *bn = em_narrow(b, 0, 0, 2);
    em_tensor *o3 = em_matmul(an, bn);
    if (o3) CHECK(max_err_batched(o3, an, bn) < 1e-3);
    CHECK(o3 && o3->shape[0] == 2);
    em_tensor *ts[] = {a0, b0, a, b, o, c0, c, o2, an, bn, o3};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) em_tensor_release(ts[i]);
}

TEST(matmul_one_dimensional_operands) {
    em_rng_seed(15);
    int64_t n7 = 7;
    em_tensor *v = em_randn(1, &n7), *w = em_randn(1, &n7);
    em_tensor *M = randn2(7, 129), *N = randn2(129, 7);
    /* v @ w -> 0-dim */
    em_tensor *d = em_matmul(v, w);
    CHECK(d && d->ndim == 0);
    double s = 0;
    for (int i = 0; i < 7; i++) s += (double)v->storage->data[i] * w->storage->data[i];
    if (d) CHECK_NEAR(d->storage->data[0], s, 1e-5);
    /* v @ M -> [129] and N @ v -> [129] */
    em_tensor *vm = em_matmul(v, M), *nv = em_matmul(N, v);
    CHECK(vm && vm->ndim == 1 && vm->shape[0] == 129);
    CHECK(nv && nv->ndim == 1 && nv->shape[0] == 129);
    em_tensor *v2 = em_unsqueeze(v, 0), *v3 = em_unsqueeze(v, 1);
    em_tensor *vm_ref = em_matmul(v2, M), *nv_ref = em_matmul(N, v3);
    if (vm && nv)
        for (int j = 0; j < 129; j++) {
            CHECK_NEAR(em_tensor_data(vm)[j], naive_dot(v2, M, 0, j), 1e-4);
            CHECK_NEAR(em_tensor_data(nv)[j], naive_dot(N, v3, j, 0), 1e-4);
        }
    /* batched @ 1-D and 1-D @ batched */
    int64_t sb[3] = {2, 3, 7}, sc[3] = {2, 7, 3};
    em_tensor *B = em_randn(3, sb), *C = em_randn(3, sc);
    em_tensor *Bv = em_matmul(B, v), *vC = em_matmul(v, C);
    int64_t want1[2] = {2, 3};
    CHECK(shape_is(Bv, 2, want1));
    CHECK(shape_is(vC, 2, want1));
    if (Bv && vC)
        for (int64_t bi = 0; bi < 2; bi++)
            for (int64_t j = 0; j < 3; j++) {
                double r1 = 0, r2 = 0;
                for (int64_t k = 0; k < 7; k++) {
                    int64_t ib[3] = {bi, j, k}, ic[3] = {bi, k, j};
                    r1 += (double)em_tensor_get(B, ib) * v->storage->data[k];
                    r2 += (double)v->storage->data[k] * em_tensor_get(C, ic);
                }
                int64_t io[2] = {bi, j};
                CHECK_NEAR(em_tensor_get(Bv, io), r1, 1e-4);
                CHECK_NEAR(em_tensor_get(vC, io), r2, 1e-4);
            }
    /* a non-contiguous 1-D operand (a column of a matrix) */
    em_tensor *col = em_select(N, 1, 3); /* [129], stride 7 */
    em_tensor *cm = em_matmul(col, N);
    CHECK(cm && cm->ndim == 1 && cm->shape[0] == 7);
    if (cm)
        for (int64_t j = 0; j < 7; j++) {
            double r = 0;
            for (int64_t k = 0; k < 129; k++) {
                int64_t i1[2] = {k, 3}, i2[2] = {k, j};
                r += (double)em_tensor_get(N, i1) * em_tensor_get(N, i2);
            }
            CHECK_NEAR(em_tensor_data(cm)[j], r, 1e-4);
        }
    /* 0-length vectors: a dot product of nothing is 0 */
    int64_t zero = 0;
    em_tensor *e1 = em_tensor_empty(1, &zero), *e2 = em_tensor_empty(1, &zero);
    em_tensor *ed = em_matmul(e1, e2);
    CHECK(ed && ed->ndim == 0 && ed->storage->data[0] == 0.0f);
    em_tensor *ts[] = {v, w, M, N, d, vm, nv, v2, v3, vm_ref, nv_ref, B, C, Bv, vC, col, cm, e1, e2, ed};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) em_tensor_release(ts[i]);
}

TEST(matmul_errors_name_both_shapes) {
    em_tensor *a = randn2(128, 784), *b = randn2(400, 784);
    CHECK(em_matmul(a, b) == NULL);
    CHECK_ERROR("matmul: [128 x 784] @ [400 x 784]: inner sizes 784 and 400 differ");
    int64_t s1[3] = {2, 3, 4}, s2[3] = {3, 4, 5};
    em_tensor *c = em_tensor_zeros(3, s1), *d = em_tensor_zeros(3, s2);
    CHECK(em_matmul(c, d) == NULL);
    CHECK_ERROR("matmul: [2 x 3 x 4] @ [3 x 4 x 5]: batch dims do not broadcast");
    em_tensor *s = em_tensor_scalar(2.0f);
    CHECK(em_matmul(s, a) == NULL);
    CHECK_ERROR("matmul: both operands need at least 1 dim, got [] @ [128 x 784]");
    int64_t n3 = 3, n4 = 4;
    em_tensor *v3 = em_tensor_zeros(1, &n3), *v4 = em_tensor_zeros(1, &n4);
    CHECK(em_matmul(v3, v4) == NULL);
    CHECK_ERROR("matmul: [3] @ [4]: inner sizes 3 and 4 differ");
    CHECK(em_matmul(v3, b) == NULL);
    CHECK_ERROR("matmul: [3] @ [400 x 784]: inner sizes 3 and 400 differ");
    CHECK(em_matmul(a, v3) == NULL);
    CHECK_ERROR("matmul: [128 x 784] @ [3]: inner sizes 784 and 3 differ");
    em_tensor *ts[] = {a, b, c, d, s, v3, v4};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) em_tensor_release(ts[i]);
}

/* Naive linear: out[r][o] = sum_i x[r][i] w[o][i] + bias[o]. */
static double linear_err(const em_tensor *out, const em_tensor *x2, const em_tensor *w,
                         const em_tensor *bias) {
    double worst = 0;
    for (int64_t r = 0; r < x2->shape[0]; r++)
        for (int64_t o = 0; o < w->shape[0]; o++) {
            double s = 0;
            for (int64_t i = 0; i < w->shape[1]; i++) {
                int64_t ix[2] = {r, i}, iw[2] = {o, i};
                s += (double)em_tensor_get(x2, ix) * em_tensor_get(w, iw);
            }
            if (bias) {
                int64_t ib[1] = {o};
                s += em_tensor_get(bias, ib);
            }
            double got = out->storage->data[out->offset + r * w->shape[0] + o];
            double e = fabs(got - s);
            if (!(e <= worst)) worst = e;
        }
    return worst;
}

TEST(linear_matches_naive_with_and_without_bias) {
    em_rng_seed(16);
    const int64_t sizes[] = {1, 7, 129};
    for (int ir = 0; ir < 3; ir++)
        for (int ii = 0; ii < 3; ii++)
            for (int io = 0; io < 3; io++) {
                int64_t rows = sizes[ir], in = sizes[ii], outf = sizes[io];
                em_tensor *x = randn2(rows, in), *w = randn2(outf, in);
                em_tensor *bias = em_randn(1, &outf);
                em_tensor *y = em_linear(x, w, bias), *y0 = em_linear(x, w, NULL);
                CHECK(y && y->shape[0] == rows && y->shape[1] == outf);
                CHECK(y0 && y0->shape[0] == rows && y0->shape[1] == outf);
                if (y) CHECK(linear_err(y, x, w, bias) < tol_for(in));
                if (y0) CHECK(linear_err(y0, x, w, NULL) < tol_for(in));
                em_tensor *ts[] = {x, w, bias, y, y0};
                for (size_t i = 0; i < 5; i++) em_tensor_release(ts[i]);
            }
}

TEST(linear_non_contiguous_inputs_and_3d_input) {
    em_rng_seed(17);
    /* x: [7 x 5] transposed view; w: [3 x 5] as the transpose of [5 x 3]; bias narrowed */
    em_tensor *x0 = randn2(5, 7), *x = em_transpose(x0, 0, 1);
    em_tensor *w0 = randn2(5, 3), *w = em_transpose(w0, 0, 1);
    int64_t n6 = 6;
    em_tensor *b0 = em_randn(1, &n6), *b = em_narrow(b0, 0, 2, 3);
    em_tensor *y = em_linear(x, w, b);
    CHECK(y && y->shape[0] == 7 && y->shape[1] == 3);
    if (y) CHECK(linear_err(y, x, w, b) < 1e-4);
    /* 3-D input [2 x 4 x 5] */
    int64_t s3[3] = {2, 4, 5};
    em_tensor *x3 = em_randn(3, s3);
    em_tensor *y3 = em_linear(x3, w, b);
    int64_t want[3] = {2, 4, 3};
    CHECK(shape_is(y3, 3, want));
    int64_t flat[2] = {8, 5};
    em_tensor *x3f = em_reshape(x3, 2, flat);
    if (y3) CHECK(linear_err(y3, x3f, w, b) < 1e-4);
    /* 1-D input [5] -> [3] */
    int64_t n5 = 5;
    em_tensor *x1 = em_randn(1, &n5);
    em_tensor *y1 = em_linear(x1, w, NULL);
    CHECK(y1 && y1->ndim == 1 && y1->shape[0] == 3);
    em_tensor *x1r = em_unsqueeze(x1, 0);
    if (y1) CHECK(linear_err(y1, x1r, w, NULL) < 1e-4);
    em_tensor *ts[] = {x0, x, w0, w, b0, b, y, x3, y3, x3f, x1, y1, x1r};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) em_tensor_release(ts[i]);
}

TEST(linear_zero_input_features_gives_bias) {
    /* x [4 x 0] @ w[3 x 0]^T + b = b broadcast over 4 rows */
    em_tensor *x = randn2(4, 0), *w = randn2(3, 0);
    int64_t n3 = 3;
    em_tensor *b = em_randn(1, &n3);
    em_tensor *y = em_linear(x, w, b), *y0 = em_linear(x, w, NULL);
    CHECK(y && y->shape[0] == 4 && y->shape[1] == 3);
    CHECK(y0 && y0->shape[0] == 4 && y0->shape[1] == 3);
    if (y && y0)
        for (int64_t r = 0; r < 4; r++)
            for (int64_t o = 0; o < 3; o++) {
                CHECK(y->storage->data[r * 3 + o] == b->storage->data[o]);
                CHECK(y0->storage->data[r * 3 + o] == 0.0f);
            }
    em_tensor *ts[] = {x, w, b, y, y0};
    for (size_t i = 0; i < 5; i++) em_tensor_release(ts[i]);
}

TEST(linear_errors) {
    em_tensor *x = randn2(4, 5), *w = randn2(3, 6);
    CHECK(em_linear(x, w, NULL) == NULL);
    CHECK_ERROR("linear: input [4 x 5] does not fit weight [3 x 6] (expected [... x 6])");
    em_tensor *w2 = randn2(3, 5);
    int64_t n4 = 4;
    em_tensor *b = em_tensor_zeros(1, &n4);
    CHECK(em_linear(x, w2, b) == NULL);
    CHECK_ERROR("linear: bias [4] does not fit weight [3 x 5] (expected [3])");
    em_tensor *ts[] = {x, w, w2, b};
    for (size_t i = 0; i < 4; i++) em_tensor_release(ts[i]);
}

TEST(matmul_gradient_matches_naive_formulas) {
    /* d/dA sum(A @ B * G) = G @ B^T, d/dB = A^T @ G, with a broadcast batch on A */
    em_rng_seed(18);
    int64_t sa[3] = {1, 3, 4}, sb[3] = {2, 4, 5}, sg[3] = {2, 3, 5};
    em_tensor *a = em_randn(3, sa), *b = em_randn(3, sb), *g = em_randn(3, sg);
    em_set_requires_grad(a, true);
    em_set_requires_grad(b, true);
    em_tensor *c = em_matmul(a, b);
    CHECK(em_backward(c, g, false, false) == EM_OK);
    CHECK(a->grad && b->grad);
    if (a->grad && b->grad) {
        for (int64_t i = 0; i < 3; i++)
            for (int64_t k = 0; k < 4; k++) {
                double s = 0;
                for (int64_t bi = 0; bi < 2; bi++)
                    for (int64_t j = 0; j < 5; j++) {
                        int64_t ig[3] = {bi, i, j}, ib[3] = {bi, k, j};
                        s += (double)em_tensor_get(g, ig) * em_tensor_get(b, ib);
                    }
                int64_t ia[3] = {0, i, k};
                CHECK_NEAR(em_tensor_get(a->grad, ia), s, 1e-4);
            }
        for (int64_t bi = 0; bi < 2; bi++)
            for (int64_t k = 0; k < 4; k++)
                for (int64_t j = 0; j < 5; j++) {
                    double s = 0;
                    for (int64_t i = 0; i < 3; i++) {
                        int64_t ia[3] = {0, i, k}, ig[3] = {bi, i, j};
                        s += (double)em_tensor_get(a, ia) * em_tensor_get(g, ig);
                    }
                    int64_t ib[3] = {bi, k, j};
                    CHECK_NEAR(em_tensor_get(b->grad, ib), s, 1e-4);
                }
    }
    em_tensor_release(a);
    em_tensor_release(b);
    em_tensor_release(g);
    em_tensor_release(c);
}
