/* test_broadcast.c — every binary op with broadcasting, compared with explicit
 * expansion (expand + contiguous) and with the op applied element by element
 * in plain C; 0-dim and size-0 dims included; scalar variants on both sides;
 * where, masked_fill, copy_ and the in-place ops; every unary op against libm
 * on non-contiguous input; and inputs large enough for the threaded loops. */
#include <stdlib.h>

#include "em_autograd.h"
#include "em_rng.h"
#include "test.h"

/* The op on one pair of numbers, as the core documents it. */
static float ref_binary(em_binary_op op, float x, float y) {
    switch (op) {
    case EM_BIN_ADD: return x + y;
    case EM_BIN_SUB: return x - y;
    case EM_BIN_MUL: return x * y;
    case EM_BIN_DIV: return x / y;
    case EM_BIN_POW: return powf(x, y);
    case EM_BIN_MAXIMUM: return (isnan(x) || isnan(y)) ? NAN : (x > y ? x : y);
    case EM_BIN_MINIMUM: return (isnan(x) || isnan(y)) ? NAN : (x < y ? x : y);
    case EM_BIN_EQ: return x == y;
    case EM_BIN_NE: return x != y;
    case EM_BIN_LT: return x < y;
    case EM_BIN_LE: return x <= y;
    case EM_BIN_GT: return x > y;
    case EM_BIN_GE: return x >= y;
    default: return NAN;
    }
}

/* Equal as numbers, NaN equal to NaN, with a little slack for pow. */
static bool same_value(float got, float want) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabsf(got - want) <= 1e-6f * (1.0f + fabsf(want));
}

/* Values with ties, zeros, negatives and fractions: {-2, -1.5, ..., 2}. */
static em_tensor *awkward(int ndim, const int64_t *shape) {
    em_tensor *t = em_randint(-4, 5, ndim, shape);
    for (int64_t i = 0; i < t->numel; i++) t->storage->data[i] *= 0.5f;
    return t;
}

static em_tensor *expanded_copy(em_tensor *t, int ndim, const int64_t *shape) {
    em_tensor *e = em_expand(t, ndim, shape);
    em_tensor *c = e ? em_clone(e) : NULL;
    em_tensor_release(e);
    return c;
}

/* op(a, b) against (1) the op on the expanded, contiguous copies and (2) the
 * scalar reference on those copies, element by element. */
static bool broadcast_matches(em_binary_op op, em_tensor *a, em_tensor *b, int ndim,
                              const int64_t *want_shape) {
    em_tensor *r = em_binary(op, a, b);
    if (!r) {
        printf("    %s failed: %s\n", em_binary_name(op), em_error_message());
        return false;
    }
    bool ok = r->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = r->shape[i] == want_shape[i];
    if (!ok) {
        printf("    %s: wrong result shape\n", em_binary_name(op));
        em_tensor_release(r);
        return false;
    }
    em_tensor *ae = expanded_copy(a, ndim, want_shape), *be = expanded_copy(b, ndim, want_shape);
    em_tensor *re = em_binary(op, ae, be);
    ok = ae && be && re && em_same_shape(re, r);
    float *got = malloc((size_t)(r->numel + 1) * sizeof(float));
    float *viaexp = malloc((size_t)(r->numel + 1) * sizeof(float));
    if (ok) {
        em_tensor_read(r, got);
        em_tensor_read(re, viaexp);
    }
    for (int64_t i = 0; ok && i < r->numel; i++) {
        float want = ref_binary(op, ae->storage->data[i], be->storage->data[i]);
        if (!same_value(got[i], want) || !same_value(viaexp[i], want)) {
            printf("    %s element %lld: got %g, via expand %g, want %g (%g op %g)\n",
                   em_binary_name(op), (long long)i, got[i], viaexp[i], want,
                   ae->storage->data[i], be->storage->data[i]);
            ok = false;
        }
    }
    free(got);
    free(viaexp);
    em_tensor_release(r);
    em_tensor_release(re);
    em_tensor_release(ae);
    em_tensor_release(be);
    return ok;
}

typedef struct {
    int an, bn, on;
    int64_t as[4], bs[4], os[4];
} shape_case;

static const shape_case cases[] = {
    {2, 2, 2, {3, 4}, {3, 4}, {3, 4}},             /* same shape */
    {3, 2, 3, {3, 1, 5}, {4, 1}, {3, 4, 5}},       /* both sides broadcast */
    {2, 1, 2, {3, 4}, {4}, {3, 4}},                /* row vector */
    {1, 2, 2, {4}, {3, 4}, {3, 4}},                /* row vector on the left */
    {2, 2, 2, {3, 1}, {1, 4}, {3, 4}},             /* outer */
    {0, 2, 2, {0}, {2, 3}, {2, 3}},                /* 0-dim left */
    {2, 0, 2, {2, 3}, {0}, {2, 3}},                /* 0-dim right */
    {0, 0, 0, {0}, {0}, {0}},                      /* both 0-dim */
    {1, 1, 1, {1}, {7}, {7}},                      /* size 1 against 7 */
    {2, 2, 2, {0, 3}, {1, 3}, {0, 3}},             /* size-0 dim */
    {3, 1, 3, {2, 0, 1}, {3}, {2, 0, 3}},          /* size-0 dim broadcast with 3 */
    {1, 0, 1, {0}, {0}, {0}},                      /* [0] with a 0-dim: as[0] = 0 elements */
    {4, 4, 4, {2, 1, 3, 1}, {1, 4, 1, 5}, {2, 4, 3, 5}},
    {1, 4, 4, {5}, {2, 1, 3, 1}, {2, 1, 3, 5}},
};

TEST(broadcast_every_binary_op_matches_explicit_expansion) {
    em_rng_seed(31);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const shape_case *k = &cases[c];
        em_tensor *a = awkward(k->an, k->as), *b = awkward(k->bn, k->bs);
        for (int op = 0; op < EM_BIN_COUNT; op++) {
            if (!broadcast_matches((em_binary_op)op, a, b, k->on, k->os)) {
                printf("    (shape case %zu)\n", c);
                em_test_failures++;
            }
        }
        em_tensor_release(a);
        em_tensor_release(b);
    }
}

TEST(binary_ops_with_nan_and_infinities_match_reference) {
    /* every pair of special values, both ways, through broadcasting */
    float vals[7] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1.5f, -2.0f};
    int64_t sa[2] = {7, 1}, sb[1] = {7}, so[2] = {7, 7};
    em_tensor *a = em_tensor_from_data(2, sa, vals), *b = em_tensor_from_data(1, sb, vals);
    for (int op = 0; op < EM_BIN_COUNT; op++) {
        CHECK(broadcast_matches((em_binary_op)op, a, b, 2, so));
        for (int k = 0; k < 7; k++) {
            em_tensor *r1 = em_binary_scalar((em_binary_op)op, b, vals[k]);
            em_tensor *r2 = em_scalar_binary((em_binary_op)op, vals[k], b);
            for (int i = 0; r1 && r2 && i < 7; i++) {
                CHECK(same_value(r1->storage->data[i], ref_binary((em_binary_op)op, vals[i], vals[k])));
                CHECK(same_value(r2->storage->data[i], ref_binary((em_binary_op)op, vals[k], vals[i])));
            }
            em_tensor_release(r1);
            em_tensor_release(r2);
        }
    }
    em_tensor_release(a);
    em_tensor_release(b);
}

TEST(broadcast_non_contiguous_operands) {
    em_rng_seed(32);
    /* a: [4 x 3] transposed from [3 x 4]; b: [4 x 1] narrowed out of [4 x 3] */
    int64_t s34[2] = {3, 4}, s43[2] = {4, 3};
    em_tensor *a0 = awkward(2, s34), *a = em_transpose(a0, 0, 1);
    em_tensor *b0 = awkward(2, s43), *b = em_narrow(b0, 1, 2, 1);
    /* c: [2 x 4 x 3] with an expanded leading dim */
    int64_t s243[3] = {2, 4, 3};
    em_tensor *c = em_expand(a, 3, s243);
    for (int op = 0; op < EM_BIN_COUNT; op++) {
        CHECK(broadcast_matches((em_binary_op)op, a, b, 2, s43));
        CHECK(broadcast_matches((em_binary_op)op, b, a, 2, s43));
        CHECK(broadcast_matches((em_binary_op)op, c, b, 3, s243));
        CHECK(broadcast_matches((em_binary_op)op, a, c, 3, s243));
    }
    em_tensor *ts[] = {a0, a, b0, b, c};
    for (int i = 0; i < 5; i++) em_tensor_release(ts[i]);
}

TEST(broadcast_large_operands_use_the_threaded_loop) {
    em_rng_seed(33);
    int threads = em_get_num_threads();
    em_set_num_threads(2);
    int64_t s1[2] = {300, 257}, s2[2] = {300, 1}, s3[1] = {257};
    em_tensor *a = awkward(2, s1), *b = awkward(2, s2), *c = awkward(1, s3);
    int ops[] = {EM_BIN_ADD, EM_BIN_MUL, EM_BIN_DIV, EM_BIN_MAXIMUM, EM_BIN_LT};
    for (int i = 0; i < 5; i++) {
        CHECK(broadcast_matches((em_binary_op)ops[i], a, b, 2, s1));
        CHECK(broadcast_matches((em_binary_op)ops[i], c, a, 2, s1));
    }
    /* one long contiguous row, split across threads */
    int64_t n = 100003;
    em_tensor *x = awkward(1, &n), *y = awkward(1, &n);
    CHECK(broadcast_matches(EM_BIN_SUB, x, y, 1, &n));
    em_tensor *one = em_tensor_scalar(0.5f);
    CHECK(broadcast_matches(EM_BIN_POW, x, one, 1, &n));
    /* a long transposed operand */
    em_tensor *at = em_transpose(a, 0, 1);
    int64_t st[2] = {257, 300};
    CHECK(broadcast_matches(EM_BIN_MUL, at, at, 2, st));
    em_set_num_threads(threads);
    em_tensor *ts[] = {a, b, c, x, y, one, at};
    for (int i = 0; i < 7; i++) em_tensor_release(ts[i]);
}

TEST(binary_scalar_both_sides_match_reference) {
    em_rng_seed(34);
    int64_t s[2] = {5, 6};
    em_tensor *a0 = awkward(2, s), *a = em_transpose(a0, 0, 1);
    const float scalars[] = {-1.5f, 0.0f, 0.5f, 2.0f};
    for (int op = 0; op < EM_BIN_COUNT; op++)
        for (int k = 0; k < 4; k++) {
            float sc = scalars[k];
            em_tensor *r1 = em_binary_scalar((em_binary_op)op, a, sc);
            em_tensor *r2 = em_scalar_binary((em_binary_op)op, sc, a);
            CHECK(r1 && r2 && em_same_shape(r1, a) && em_same_shape(r2, a));
            if (!r1 || !r2) continue;
            for (int64_t i = 0; i < 6; i++)
                for (int64_t j = 0; j < 5; j++) {
                    int64_t idx[2] = {i, j};
                    float x = em_tensor_get(a, idx);
                    if (!same_value(em_tensor_get(r1, idx), ref_binary((em_binary_op)op, x, sc)) ||
                        !same_value(em_tensor_get(r2, idx), ref_binary((em_binary_op)op, sc, x))) {
                        printf("    %s with scalar %g at (%lld, %lld)\n",
                               em_binary_name((em_binary_op)op), sc, (long long)i, (long long)j);
                        em_test_failures++;
                    }
                }
            em_tensor_release(r1);
            em_tensor_release(r2);
        }
    em_tensor_release(a0);
    em_tensor_release(a);
}

TEST(broadcast_shape_errors_name_both_shapes) {
    int64_t s1[2] = {2, 3}, s2[1] = {4}, s3[3] = {5, 2, 1}, s4[2] = {3, 2};
    em_tensor *a = em_tensor_zeros(2, s1), *b = em_tensor_zeros(1, s2);
    em_tensor *c = em_tensor_zeros(3, s3), *d = em_tensor_zeros(2, s4);
    CHECK(em_binary(EM_BIN_ADD, a, b) == NULL);
    CHECK_ERROR("add: shapes [2 x 3] and [4] do not broadcast (dim 2: 3 vs 4)");
    CHECK(em_binary(EM_BIN_MUL, c, d) == NULL);
    CHECK_ERROR("mul: shapes [5 x 2 x 1] and [3 x 2] do not broadcast (dim 2: 2 vs 3)");
    CHECK(em_binary(EM_BIN_GE, a, d) == NULL);
    CHECK_ERROR("ge: shapes [2 x 3] and [3 x 2] do not broadcast");
    em_tensor *ts[] = {a, b, c, d};
    for (int i = 0; i < 4; i++) em_tensor_release(ts[i]);
}

TEST(where_broadcasts_three_ways) {
    em_rng_seed(35);
    int64_t sc[3] = {2, 1, 4}, sa[2] = {3, 1}, sb[1] = {4}, so[3] = {2, 3, 4};
    em_tensor *cond = em_randint(0, 2, 3, sc), *a = awkward(2, sa), *b = awkward(1, sb);
    em_tensor *r = em_where(cond, a, b);
    CHECK(r && r->ndim == 3 && r->shape[0] == 2 && r->shape[1] == 3 && r->shape[2] == 4);
    if (r)
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < 3; j++)
                for (int64_t k = 0; k < 4; k++) {
                    int64_t ic[3] = {i, 0, k}, ia[2] = {j, 0}, ib[1] = {k}, io[3] = {i, j, k};
                    float want = em_tensor_get(cond, ic) != 0 ? em_tensor_get(a, ia)
                                                              : em_tensor_get(b, ib);
                    CHECK(em_tensor_get(r, io) == want);
                }
    (void)so;
    int64_t bad[2] = {2, 2}, bad2[1] = {5};
    em_tensor *wrong = em_tensor_zeros(2, bad), *wrong2 = em_tensor_zeros(1, bad2);
    CHECK(em_where(cond, a, wrong) == NULL);
    CHECK_ERROR("where: shapes [3 x 1] and [2 x 2] do not broadcast (dim 1: 3 vs 2)");
    /* a and b broadcast to [3 x 5], which the condition does not fit */
    CHECK(em_where(cond, a, wrong2) == NULL);
    CHECK_ERROR("where: shapes [2 x 1 x 4] and [3 x 5] do not broadcast (dim 3: 4 vs 5)");
    em_tensor *ts[] = {cond, a, b, r, wrong, wrong2};
    for (int i = 0; i < 6; i++) em_tensor_release(ts[i]);
}

TEST(masked_fill_broadcasts_the_mask) {
    em_rng_seed(36);
    int64_t s[2] = {3, 4}, sm[1] = {4};
    em_tensor *a = awkward(2, s), *m = em_randint(0, 2, 1, sm);
    em_tensor *r = em_masked_fill(a, m, -7.0f);
    CHECK(r && em_same_shape(r, a));
    if (r)
        for (int64_t i = 0; i < 12; i++)
            CHECK(r->storage->data[i] == (m->storage->data[i % 4] != 0 ? -7.0f : a->storage->data[i]));
    /* in place, on a transposed view: writes through to the base */
    em_tensor *base = em_tensor_zeros(2, s), *bt = em_transpose(base, 0, 1); /* [4 x 3] */
    int64_t sm2[2] = {4, 1};
    em_tensor *m2 = em_tensor_zeros(2, sm2);
    m2->storage->data[2] = 1.0f;
    CHECK(em_masked_fill_(bt, m2, 5.0f) == EM_OK);
    for (int64_t i = 0; i < 3; i++)
        for (int64_t j = 0; j < 4; j++) CHECK(base->storage->data[i * 4 + j] == (j == 2 ? 5.0f : 0.0f));
    /* a mask larger than the tensor is an error */
    int64_t sbig[3] = {2, 3, 4};
    em_tensor *mbig = em_tensor_zeros(3, sbig);
    CHECK(em_masked_fill(a, mbig, 1.0f) == NULL);
    CHECK_ERROR("masked_fill: mask [2 x 3 x 4] must broadcast to the tensor's shape [3 x 4]");
    em_tensor *ts[] = {a, m, r, base, bt, m2, mbig};
    for (int i = 0; i < 7; i++) em_tensor_release(ts[i]);
}

TEST(inplace_binary_and_copy_broadcast_into_the_destination) {
    em_rng_seed(37);
    int64_t s[2] = {3, 4}, sr[1] = {4}, sc[2] = {3, 1};
    em_tensor *dst = awkward(2, s), *row = awkward(1, sr), *col = awkward(2, sc);
    float before[12];
    memcpy(before, dst->storage->data, sizeof before);
    uint32_t v0 = dst->storage->version;
    for (int op = 0; op < EM_BIN_COUNT; op++) {
        memcpy(dst->storage->data, before, sizeof before);
        CHECK(em_binary_((em_binary_op)op, dst, row) == EM_OK);
        for (int64_t i = 0; i < 12; i++)
            CHECK(same_value(dst->storage->data[i],
                             ref_binary((em_binary_op)op, before[i], row->storage->data[i % 4])));
        memcpy(dst->storage->data, before, sizeof before);
        CHECK(em_binary_scalar_((em_binary_op)op, dst, 1.5f) == EM_OK);
        for (int64_t i = 0; i < 12; i++)
            CHECK(same_value(dst->storage->data[i], ref_binary((em_binary_op)op, before[i], 1.5f)));
    }
    CHECK(dst->storage->version > v0);
    /* copy_ of a column broadcast along rows, into a transposed destination */
    em_tensor *t = em_tensor_zeros(2, s), *tt = em_transpose(t, 0, 1); /* [4 x 3] */
    int64_t s13[2] = {1, 3};
    em_tensor *r13 = awkward(2, s13);
    CHECK(em_copy_(tt, r13) == EM_OK);
    for (int64_t i = 0; i < 3; i++)
        for (int64_t j = 0; j < 4; j++) CHECK(t->storage->data[i * 4 + j] == r13->storage->data[i]);
    /* the source must broadcast into the destination, not the other way */
    CHECK(em_binary_(EM_BIN_ADD, row, dst) == EM_ERR);
    CHECK_ERROR("add_: [3 x 4] cannot be broadcast into [4]");
    CHECK(em_copy_(col, dst) == EM_ERR);
    CHECK_ERROR("copy_: [3 x 4] cannot be broadcast into [3 x 1]");
    em_tensor *ts[] = {dst, row, col, t, tt, r13};
    for (int i = 0; i < 6; i++) em_tensor_release(ts[i]);
}

/* The unary op as libm computes it. */
static float ref_unary(em_unary_op op, float x) {
    switch (op) {
    case EM_UN_NEG: return -x;
    case EM_UN_ABS: return fabsf(x);
    case EM_UN_EXP: return expf(x);
    case EM_UN_LOG: return logf(x);
    case EM_UN_LOG1P: return log1pf(x);
    case EM_UN_SQRT: return sqrtf(x);
    case EM_UN_RSQRT: return 1.0f / sqrtf(x);
    case EM_UN_TANH: return tanhf(x);
    case EM_UN_SIGMOID: return (float)(1.0 / (1.0 + exp(-(double)x)));
    case EM_UN_RELU: return x > 0 ? x : 0.0f;
    case EM_UN_SIGN: return x > 0 ? 1.0f : (x < 0 ? -1.0f : 0.0f);
    case EM_UN_SIN: return sinf(x);
    case EM_UN_COS: return cosf(x);
    case EM_UN_SQUARE: return x * x;
    case EM_UN_RECIPROCAL: return 1.0f / x;
    case EM_UN_FLOOR: return floorf(x);
    case EM_UN_CEIL: return ceilf(x);
    case EM_UN_ROUND: return rintf(x); /* half to even */
    case EM_UN_SOFTPLUS: return (float)log1p(exp((double)x));
    default: return NAN;
    }
}

TEST(unary_ops_match_libm_on_non_contiguous_input) {
    em_rng_seed(38);
    int64_t s[2] = {9, 7};
    em_tensor *base = em_randn(2, s);
    for (int i = 0; i < 63; i++) base->storage->data[i] *= 3.0f;
    base->storage->data[0] = 2.5f; /* round half to even */
    base->storage->data[7] = -0.5f;
    base->storage->data[14] = 0.0f;
    base->storage->data[21] = 40.0f; /* softplus and sigmoid far out */
    base->storage->data[28] = -40.0f;
    em_tensor *a = em_transpose(base, 0, 1);
    for (int op = 0; op < EM_UN_COUNT; op++) {
        em_tensor *r = em_unary((em_unary_op)op, a);
        CHECK(r && em_same_shape(r, a) && em_tensor_is_contiguous(r));
        if (!r) continue;
        for (int64_t i = 0; i < 7; i++)
            for (int64_t j = 0; j < 9; j++) {
                int64_t idx[2] = {i, j};
                float x = em_tensor_get(a, idx), got = em_tensor_get(r, idx);
                float want = ref_unary((em_unary_op)op, x);
                bool ok = isnan(want) ? isnan(got)
                                      : (isinf(want) ? got == want
                                                     : fabsf(got - want) <= 2e-6f * (1 + fabsf(want)));
                if (!ok) {
                    printf("    %s(%g) = %g, want %g\n", em_unary_name((em_unary_op)op), x, got, want);
                    em_test_failures++;
                }
            }
        /* and in place, on a copy */
        em_tensor *c = em_clone(a);
        CHECK(em_unary_((em_unary_op)op, c) == EM_OK);
        float x0 = em_tensor_data(a)[0];
        CHECK(isnan(ref_unary((em_unary_op)op, x0)) ? isnan(c->storage->data[0])
                                                    : fabsf(c->storage->data[0] - r->storage->data[0]) <= 1e-6f);
        em_tensor_release(c);
        em_tensor_release(r);
    }
    em_tensor_release(a);
    em_tensor_release(base);
}

TEST(clamp_leaky_relu_elu_match_reference) {
    em_rng_seed(39);
    int64_t s[2] = {6, 5};
    em_tensor *base = em_randn(2, s), *a = em_transpose(base, 0, 1);
    em_tensor *c = em_clamp(a, -0.5f, 0.75f), *lo = em_clamp(a, -INFINITY, 0.25f);
    em_tensor *lr = em_leaky_relu(a, 0.2f), *el = em_elu(a, 1.5f);
    CHECK(c && lo && lr && el);
    for (int64_t i = 0; i < 5; i++)
        for (int64_t j = 0; j < 6; j++) {
            int64_t idx[2] = {i, j};
            float x = em_tensor_get(a, idx);
            CHECK(em_tensor_get(c, idx) == fminf(fmaxf(x, -0.5f), 0.75f));
            CHECK(em_tensor_get(lo, idx) == fminf(x, 0.25f));
            CHECK(em_tensor_get(lr, idx) == (x < 0 ? 0.2f * x : x));
            CHECK_NEAR(em_tensor_get(el, idx), x > 0 ? x : 1.5 * expm1((double)x), 1e-6);
        }
    CHECK(em_clamp(a, 1.0f, 0.0f) == NULL);
    CHECK_ERROR("clamp: min 1 is greater than max 0");
    em_tensor *cc = em_clone(a);
    CHECK(em_clamp_(cc, -0.5f, 0.75f) == EM_OK);
    for (int64_t i = 0; i < 30; i++) CHECK(cc->storage->data[i] == c->storage->data[i]);
    em_tensor *ts[] = {base, a, c, lo, lr, el, cc};
    for (int i = 0; i < 7; i++) em_tensor_release(ts[i]);
}
