/* test_tensor.c — tensor headers, views, creation, joining and indexing, the
 * in-place ops, the random generator and the thread setting:
 * - views (reshape/view, permute, transpose, narrow, select, expand,
 *   squeeze/unsqueeze, contiguous, detach) share storage; clone, contiguous of
 *   a non-contiguous tensor and reshape that cannot view copy;
 * - cat, stack, index_select, gather, scatter_add against naive loops;
 * - creation functions; same seed same numbers, RNG state roundtrip. */
#include <math.h>
#include <stdlib.h>

#include "em_autograd.h"
#include "em_rng.h"
#include "em_storage.h"
#include "test.h"

/* [0, 1, ..., n-1] reshaped to `shape` (contiguous). */
static em_tensor *iota(int ndim, const int64_t *shape) {
    em_tensor *t = em_tensor_empty(ndim, shape);
    for (int64_t i = 0; i < t->numel; i++) t->storage->data[i] = (float)i;
    return t;
}

static bool shape_is(const em_tensor *t, int ndim, const int64_t *shape) {
    if (!t || t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

/* The elements of t in row-major order equal `want`. */
static bool values_are(const em_tensor *t, const float *want, int64_t n) {
    if (!t || t->numel != n) return false;
    float *got = malloc((size_t)(n + 1) * sizeof *got);
    em_tensor_read(t, got);
    bool ok = memcmp(got, want, (size_t)n * sizeof *got) == 0;
    free(got);
    return ok;
}

#define RELEASE_ALL(...)                                                        \
    do {                                                                        \
        em_tensor *list_[] = {__VA_ARGS__};                                     \
        for (size_t i_ = 0; i_ < sizeof list_ / sizeof list_[0]; i_++)          \
            em_tensor_release(list_[i_]);                                       \
    } while (0)

/* ---- views ----------------------------------------------------------- */

TEST(views_share_storage_and_write_through) {
    int64_t s[3] = {2, 3, 4};
    em_tensor *a = iota(3, s);
    int64_t s2[2] = {6, 4}, s4[2] = {4, 6};
    em_tensor *v = em_view(a, 2, s2);
    em_tensor *r = em_reshape(a, 2, s4);
    int perm[3] = {2, 0, 1};
    em_tensor *p = em_permute(a, perm);
    em_tensor *t = em_transpose(a, 0, 2);
    em_tensor *n = em_narrow(a, 2, 1, 2);
    em_tensor *sel = em_select(a, 1, 2);
    em_tensor *u = em_unsqueeze(a, 1);
    em_tensor *sq = em_squeeze(u, 1);
    int64_t se[4] = {5, 2, 3, 4};
    em_tensor *e = em_expand(a, 4, se);
    em_tensor *c = em_contiguous(a);
    em_tensor *d = em_detach(a);
    em_tensor *views[] = {v, r, p, t, n, sel, u, sq, e, c, d};
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
        CHECK(views[i] != NULL);
        if (views[i]) CHECK(views[i]->storage == a->storage);
    }
    CHECK(c == a); /* contiguous of a contiguous tensor is the tensor itself */
    /* geometry */
    int64_t wp[3] = {4, 2, 3}, wt[3] = {4, 3, 2}, wn[3] = {2, 3, 2}, wsel[2] = {2, 4};
    int64_t wu[4] = {2, 1, 3, 4};
    CHECK(shape_is(p, 3, wp) && shape_is(t, 3, wt) && shape_is(n, 3, wn));
    CHECK(shape_is(sel, 2, wsel) && shape_is(u, 4, wu) && shape_is(sq, 3, s));
    CHECK(shape_is(e, 4, se) && e->strides[0] == 0);
    /* values: p[k][i][j] = a[i][j][k], n = a[:, :, 1:3], sel = a[:, 2, :] */
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 3; j++)
            for (int64_t k = 0; k < 4; k++) {
                int64_t ia[3] = {i, j, k}, ip[3] = {k, i, j}, it[3] = {k, j, i};
                float x = em_tensor_get(a, ia);
                CHECK(em_tensor_get(p, ip) == x);
                CHECK(em_tensor_get(t, it) == x);
                if (k >= 1 && k < 3) {
                    int64_t in[3] = {i, j, k - 1};
                    CHECK(em_tensor_get(n, in) == x);
                }
                if (j == 2) {
                    int64_t is[2] = {i, k};
                    CHECK(em_tensor_get(sel, is) == x);
                }
                int64_t ie[4] = {3, i, j, k};
                CHECK(em_tensor_get(e, ie) == x);
            }
    /* a write through a view shows in the base and in the other views */
    CHECK(em_fill_(sel, -1.0f) == EM_OK);
    int64_t i121[3] = {1, 2, 1}, i1112[3] = {1, 1, 2};
    CHECK(em_tensor_get(a, i121) == -1.0f);
    int64_t ip[3] = {1, 1, 2};
    CHECK(em_tensor_get(p, ip) == -1.0f); /* p[1][1][2] = a[1][2][1] */
    CHECK(em_tensor_get(a, i1112) == 18.0f);
    /* detach: no graph, same data */
    CHECK(d->grad_fn == NULL && !d->requires_grad);
    RELEASE_ALL(a, v, r, p, t, n, sel, u, sq, e, c, d);
}

TEST(view_of_non_contiguous_when_strides_allow) {
    int64_t s[2] = {3, 4};
    em_tensor *a = iota(2, s);
    em_tensor *t = em_transpose(a, 0, 1); /* [4 x 3], strides (1, 4) */
    /* splitting a dim keeps a view */
    int64_t split[3] = {2, 2, 3};
    em_tensor *v = em_view(t, 3, split);
    CHECK(v && v->storage == a->storage);
    if (v)
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < 2; j++)
                for (int64_t k = 0; k < 3; k++) {
                    int64_t iv[3] = {i, j, k}, it[2] = {i * 2 + j, k};
                    CHECK(em_tensor_get(v, iv) == em_tensor_get(t, it));
                }
    /* merging dims that are not adjacent in memory cannot be a view */
    int64_t flat = 12;
    CHECK(em_view(t, 1, &flat) == NULL);
    CHECK_ERROR("view: a non-contiguous tensor [4 x 3] cannot be viewed as [12]; use reshape or contiguous()");
    /* ... but reshape copies, in row-major order of the view */
    em_tensor *r = em_reshape(t, 1, &flat);
    CHECK(r && r->storage != a->storage && em_tensor_is_contiguous(r));
    float want[12] = {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11};
    CHECK(values_are(r, want, 12));
    /* a narrow along the first dim of a contiguous tensor is still viewable flat */
    em_tensor *n = em_narrow(a, 0, 1, 2);
    int64_t eight = 8;
    em_tensor *nf = em_view(n, 1, &eight);
    CHECK(nf && nf->storage == a->storage && nf->offset == 4);
    float want_n[8] = {4, 5, 6, 7, 8, 9, 10, 11};
    CHECK(values_are(nf, want_n, 8));
    /* a narrow along the last dim is not */
    em_tensor *n2 = em_narrow(a, 1, 1, 2);
    int64_t six = 6;
    CHECK(em_view(n2, 1, &six) == NULL);
    em_tensor *n2r = em_reshape(n2, 1, &six);
    float want_n2[6] = {1, 2, 5, 6, 9, 10};
    CHECK(values_are(n2r, want_n2, 6) && n2r->storage != a->storage);
    /* -1 is inferred; size-1 dims can be added anywhere */
    int64_t inf[4] = {1, -1, 1, 3};
    em_tensor *vi = em_view(t, 4, inf);
    int64_t want_vi[4] = {1, 4, 1, 3};
    CHECK(shape_is(vi, 4, want_vi) && vi->storage == a->storage);
    RELEASE_ALL(a, t, v, r, n, nf, n2, n2r, vi);
}

TEST(views_of_empty_and_zero_dim_tensors) {
    int64_t s[2] = {0, 3};
    em_tensor *a = em_tensor_zeros(2, s);
    int64_t s2[3] = {3, 0, 5};
    em_tensor *v = em_view(a, 3, s2);
    CHECK(shape_is(v, 3, s2) && v->numel == 0);
    int64_t flat[1] = {-1};
    em_tensor *vf = em_view(a, 1, flat); /* [0] */
    CHECK(vf && vf->ndim == 1 && vf->shape[0] == 0);
    em_tensor_release(vf);
    int64_t bad[2] = {-1, 0};
    CHECK(em_view(a, 2, bad) == NULL); /* -1 could be anything */
    CHECK_ERROR("view: cannot infer the -1 size in [-1 x 0] from 0 elements of [0 x 3]");
    em_tensor *sc = em_tensor_scalar(3.0f);
    int64_t one[2] = {1, 1};
    em_tensor *sv = em_reshape(sc, 2, one);
    CHECK(shape_is(sv, 2, one) && sv->storage->data[0] == 3.0f);
    em_tensor *back = em_reshape(sv, 0, NULL);
    CHECK(back && back->ndim == 0);
    em_tensor *u = em_unsqueeze(sc, 0);
    CHECK(u && u->ndim == 1 && u->shape[0] == 1);
    em_tensor *sa = em_squeeze_all(sv);
    CHECK(sa && sa->ndim == 0);
    RELEASE_ALL(a, v, sc, sv, back, u, sa);
}

TEST(unsqueeze_every_position_of_a_non_contiguous_tensor) {
    int64_t s[2] = {3, 4};
    em_tensor *a = iota(2, s), *t = em_transpose(a, 0, 1);
    for (int d = -3; d <= 2; d++) {
        em_tensor *u = em_unsqueeze(t, d);
        CHECK(u && u->ndim == 3);
        if (!u) continue;
        int pos = d < 0 ? d + 3 : d;
        CHECK(u->shape[pos] == 1);
        em_tensor *c = em_contiguous(u);
        float got[12], want[12];
        em_tensor_read(c, got);
        em_tensor_read(t, want);
        CHECK(memcmp(got, want, sizeof got) == 0);
        /* and back */
        em_tensor *s2 = em_squeeze(u, pos);
        CHECK(s2 && em_same_shape(s2, t));
        RELEASE_ALL(u, c, s2);
    }
    RELEASE_ALL(a, t);
}

TEST(clone_and_contiguous_copy) {
    int64_t s[2] = {3, 4};
    em_tensor *a = iota(2, s);
    em_tensor *c = em_clone(a);
    CHECK(c && c->storage != a->storage && em_same_shape(c, a));
    a->storage->data[0] = 100.0f;
    CHECK(c->storage->data[0] == 0.0f); /* a copy, not a view */
    em_tensor *t = em_transpose(a, 0, 1);
    CHECK(!em_tensor_is_contiguous(t));
    em_tensor *tc = em_contiguous(t);
    CHECK(tc && tc != t && tc->storage != a->storage && em_tensor_is_contiguous(tc));
    float want[12] = {100, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11};
    CHECK(values_are(tc, want, 12));
    /* an expanded tensor's clone owns every element */
    int64_t s1[2] = {1, 4}, se[2] = {3, 4};
    em_tensor *row = iota(2, s1), *e = em_expand(row, 2, se), *ec = em_clone(e);
    CHECK(ec && ec->numel == 12 && ec->strides[0] == 4);
    float want_e[12] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    CHECK(values_are(ec, want_e, 12));
    RELEASE_ALL(a, c, t, tc, row, e, ec);
}

TEST(a_view_keeps_its_storage_alive) {
    int64_t s[2] = {4, 5};
    em_tensor *a = iota(2, s);
    em_storage *st = a->storage;
    CHECK(st->refcount == 1);
    em_tensor *v = em_select(a, 0, 3);
    CHECK(st->refcount == 2);
    em_tensor_release(a);
    CHECK(st->refcount == 1);
    float want[5] = {15, 16, 17, 18, 19};
    CHECK(values_are(v, want, 5));
    em_tensor_release(v);
}

TEST(permute_transpose_expand_squeeze_errors) {
    int64_t s[3] = {2, 3, 4};
    em_tensor *a = em_tensor_zeros(3, s);
    int dup[3] = {0, 0, 1};
    CHECK(em_permute(a, dup) == NULL);
    CHECK_ERROR("permute: dim 1 appears twice");
    int oor[3] = {0, 1, 3};
    CHECK(em_permute(a, oor) == NULL);
    CHECK_ERROR("permute: dim 4 out of range for a tensor of 3 dims (expected -3..3)");
    CHECK(em_transpose(a, 0, -4) == NULL);
    CHECK_ERROR("transpose: dim -4 out of range");
    int64_t se[3] = {2, 5, 4};
    CHECK(em_expand(a, 3, se) == NULL);
    CHECK_ERROR("expand: [2 x 3 x 4] cannot be expanded to [2 x 5 x 4] (dim 2 has size 3, not 1)");
    CHECK(em_expand(a, 2, se) == NULL);
    CHECK_ERROR("expand: cannot expand [2 x 3 x 4] to 2 dims");
    CHECK(em_squeeze(a, 1) == NULL);
    CHECK_ERROR("squeeze: dim 2 has size 3, expected 1");
    CHECK(em_unsqueeze(a, 4) == NULL);
    CHECK_ERROR("unsqueeze: dim 5 out of range for a tensor of 3 dims (expected -4..4)");
    CHECK(em_narrow(a, 2, 3, 2) == NULL);
    CHECK_ERROR("narrow: range 4..5 is out of bounds for dim 3 of size 4");
    CHECK(em_select(a, 0, 2) == NULL);
    CHECK_ERROR("select: index 3 out of range for dim 1 of size 2 (expected 1..2)");
    em_tensor_release(a);
}

/* ---- creation -------------------------------------------------------- */

TEST(creation_functions) {
    int64_t s[2] = {2, 3};
    em_tensor *z = em_tensor_zeros(2, s), *o = em_tensor_ones(2, s), *f = em_tensor_full(2, s, -2.5f);
    float zs[6] = {0}, os[6] = {1, 1, 1, 1, 1, 1}, fs[6] = {-2.5f, -2.5f, -2.5f, -2.5f, -2.5f, -2.5f};
    CHECK(values_are(z, zs, 6) && values_are(o, os, 6) && values_are(f, fs, 6));
    CHECK(shape_is(z, 2, s) && em_tensor_is_contiguous(z));
    em_tensor *sc = em_tensor_scalar(4.0f);
    CHECK(sc && sc->ndim == 0 && sc->numel == 1 && sc->storage->data[0] == 4.0f);
    float data[6] = {1, 2, 3, 4, 5, 6};
    em_tensor *fd = em_tensor_from_data(2, s, data);
    CHECK(values_are(fd, data, 6));
    /* arange: [start, end) by step, also negative and fractional steps */
    em_tensor *r1 = em_tensor_arange(0, 5, 1), *r2 = em_tensor_arange(5, 0, -2);
    em_tensor *r3 = em_tensor_arange(0, 1, 0.25), *r4 = em_tensor_arange(3, 3, 1);
    em_tensor *r5 = em_tensor_arange(3, 0, 1);
    float w1[5] = {0, 1, 2, 3, 4}, w2[3] = {5, 3, 1}, w3[4] = {0, 0.25f, 0.5f, 0.75f};
    CHECK(values_are(r1, w1, 5) && values_are(r2, w2, 3) && values_are(r3, w3, 4));
    CHECK(r4 && r4->numel == 0 && r5 && r5->numel == 0);
    /* linspace: both ends included */
    em_tensor *l1 = em_tensor_linspace(-1, 1, 5), *l2 = em_tensor_linspace(2, 7, 1);
    em_tensor *l3 = em_tensor_linspace(0, 1, 0);
    float wl1[5] = {-1, -0.5f, 0, 0.5f, 1}, wl2[1] = {2};
    CHECK(values_are(l1, wl1, 5) && values_are(l2, wl2, 1) && l3 && l3->numel == 0);
    /* eye, square and not */
    em_tensor *e1 = em_tensor_eye(3, 3), *e2 = em_tensor_eye(2, 4);
    float we1[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1}, we2[8] = {1, 0, 0, 0, 0, 1, 0, 0};
    CHECK(values_are(e1, we1, 9) && values_are(e2, we2, 8));
    /* zero-size and zero-dim shapes */
    int64_t s0[3] = {2, 0, 3};
    em_tensor *z0 = em_tensor_zeros(3, s0);
    CHECK(z0 && z0->numel == 0 && shape_is(z0, 3, s0));
    em_tensor *like = em_tensor_zeros_like(f);
    CHECK(like && em_same_shape(like, f) && like->storage->data[5] == 0.0f);
    RELEASE_ALL(z, o, f, sc, fd, r1, r2, r3, r4, r5, l1, l2, l3, e1, e2, z0, like);
}

TEST(creation_errors) {
    int64_t neg[2] = {2, -3};
    CHECK(em_tensor_zeros(2, neg) == NULL);
    CHECK_ERROR("empty: size of dim 2 must be >= 0, got -3");
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK(em_tensor_ones(9, nine) == NULL);
    CHECK_ERROR("a tensor has at most 8 dims, got 9");
    CHECK(em_tensor_arange(0, 1, 0) == NULL);
    CHECK_ERROR("arange: step must be non-zero");
    CHECK(em_tensor_linspace(0, 1, -1) == NULL);
    CHECK_ERROR("linspace: steps must be >= 0, got -1");
    int64_t s[1] = {3};
    CHECK(em_randint(5, 5, 1, s) == NULL);
    CHECK_ERROR("randint: high 5 must be greater than low 5");
    CHECK(em_normal(1, s, 0.0f, -1.0f) == NULL);
    CHECK_ERROR("normal: std must be >= 0, got -1");
    em_tensor *p = em_tensor_full(1, s, 1.5f);
    CHECK(em_bernoulli(p) == NULL);
    CHECK_ERROR("bernoulli: probabilities must be in [0, 1], got 1.5");
    em_tensor_release(p);
}

/* ---- random numbers -------------------------------------------------- */

static double mean_of(const em_tensor *t) {
    double s = 0;
    for (int64_t i = 0; i < t->numel; i++) s += t->storage->data[i];
    return s / (double)t->numel;
}
static double std_of(const em_tensor *t) {
    double m = mean_of(t), s = 0;
    for (int64_t i = 0; i < t->numel; i++) s += (t->storage->data[i] - m) * (t->storage->data[i] - m);
    return sqrt(s / (double)(t->numel - 1));
}

TEST(random_distributions) {
    em_rng_seed(41);
    int64_t n = 100000;
    em_tensor *u = em_rand(1, &n), *g = em_randn(1, &n), *nm = em_normal(1, &n, 3.0f, 0.5f);
    bool in01 = true;
    for (int64_t i = 0; i < n; i++) in01 &= u->storage->data[i] >= 0.0f && u->storage->data[i] < 1.0f;
    CHECK(in01);
    CHECK(fabs(mean_of(u) - 0.5) < 0.01 && fabs(std_of(u) - sqrt(1.0 / 12)) < 0.01);
    CHECK(fabs(mean_of(g)) < 0.02 && fabs(std_of(g) - 1.0) < 0.02);
    CHECK(fabs(mean_of(nm) - 3.0) < 0.01 && fabs(std_of(nm) - 0.5) < 0.01);
    /* randint covers [low, high) and nothing else */
    em_tensor *ri = em_randint(-3, 4, 1, &n);
    int counts[7] = {0};
    bool ints = true;
    for (int64_t i = 0; i < n; i++) {
        float v = ri->storage->data[i];
        if (v != floorf(v) || v < -3 || v > 3) ints = false;
        else counts[(int)v + 3]++;
    }
    CHECK(ints);
    for (int k = 0; k < 7; k++) CHECK(abs(counts[k] - (int)(n / 7)) < 800);
    /* bernoulli follows p, elementwise */
    int64_t s2[2] = {2, 50000};
    em_tensor *p = em_tensor_empty(2, s2);
    for (int64_t i = 0; i < 100000; i++) p->storage->data[i] = i < 50000 ? 0.2f : 0.9f;
    em_tensor *b = em_bernoulli(p);
    double m0 = 0, m1 = 0;
    bool binary = true;
    for (int64_t i = 0; i < 100000; i++) {
        float v = b->storage->data[i];
        binary &= v == 0.0f || v == 1.0f;
        if (i < 50000) m0 += v; else m1 += v;
    }
    CHECK(binary);
    CHECK(fabs(m0 / 50000 - 0.2) < 0.01 && fabs(m1 / 50000 - 0.9) < 0.01);
    /* p = 0 and p = 1 are exact */
    em_tensor *p0 = em_tensor_zeros(1, &n), *b0 = em_bernoulli(p0);
    em_tensor *p1 = em_tensor_ones(1, &n), *b1 = em_bernoulli(p1);
    CHECK(mean_of(b0) == 0.0 && mean_of(b1) == 1.0);
    RELEASE_ALL(u, g, nm, ri, p, b, p0, b0, p1, b1);
}

TEST(random_in_place_on_a_view) {
    em_rng_seed(42);
    int64_t s[2] = {200, 300};
    em_tensor *a = em_tensor_full(2, s, 7.0f);
    em_tensor *col = em_narrow(a, 1, 100, 100); /* non-contiguous */
    CHECK(em_uniform_(col, -2.0f, -1.0f) == EM_OK);
    bool ok = true;
    for (int64_t i = 0; i < 200; i++)
        for (int64_t j = 0; j < 300; j++) {
            float v = a->storage->data[i * 300 + j];
            if (j >= 100 && j < 200) ok &= v >= -2.0f && v < -1.0f;
            else ok &= v == 7.0f;
        }
    CHECK(ok);
    CHECK(em_normal_(col, 10.0f, 0.1f) == EM_OK);
    em_tensor *c = em_contiguous(col);
    CHECK(fabs(mean_of(c) - 10.0) < 0.01);
    CHECK(a->storage->data[0] == 7.0f);
    RELEASE_ALL(a, col, c);
}

TEST(same_seed_same_numbers_different_seed_different) {
    int64_t n = 1000;
    em_tensor *draws[3][5];
    uint64_t seeds[3] = {7, 7, 8};
    for (int k = 0; k < 3; k++) {
        em_rng_seed(seeds[k]);
        draws[k][0] = em_rand(1, &n);
        draws[k][1] = em_randn(1, &n);
        draws[k][2] = em_randint(0, 1000, 1, &n);
        em_tensor *half = em_tensor_full(1, &n, 0.5f);
        draws[k][3] = em_bernoulli(half);
        em_tensor_release(half);
        draws[k][4] = em_normal(1, &n, 1.0f, 2.0f);
    }
    for (int i = 0; i < 5; i++) {
        CHECK(memcmp(draws[0][i]->storage->data, draws[1][i]->storage->data, n * sizeof(float)) == 0);
        CHECK(memcmp(draws[0][i]->storage->data, draws[2][i]->storage->data, n * sizeof(float)) != 0);
    }
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 5; i++) em_tensor_release(draws[k][i]);
}

TEST(same_seed_same_numbers_at_any_thread_count) {
    int threads = em_get_num_threads();
    int64_t n = 300000;
    em_tensor *r[2];
    for (int k = 0; k < 2; k++) {
        em_set_num_threads(k + 1);
        em_rng_seed(99);
        r[k] = em_randn(1, &n);
    }
    CHECK(memcmp(r[0]->storage->data, r[1]->storage->data, n * sizeof(float)) == 0);
    em_set_num_threads(threads);
    RELEASE_ALL(r[0], r[1]);
}

TEST(rng_state_roundtrip) {
    em_rng_seed(5);
    em_rng_u64();
    uint64_t st[EM_RNG_STATE_WORDS];
    em_rng_get_state(st);
    uint64_t a[4], b[4];
    for (int i = 0; i < 4; i++) a[i] = em_rng_u64();
    double na = em_rng_normal();
    CHECK(em_rng_set_state(st) == EM_OK);
    for (int i = 0; i < 4; i++) b[i] = em_rng_u64();
    double nb = em_rng_normal();
    CHECK(memcmp(a, b, sizeof a) == 0 && na == nb);
    uint64_t zero[EM_RNG_STATE_WORDS] = {0};
    CHECK(em_rng_set_state(zero) == EM_ERR);
    CHECK_ERROR("set_rng_state: the all-zero state is not valid");
    /* a failed set leaves the generator as it was */
    uint64_t c = em_rng_u64();
    CHECK(em_rng_set_state(st) == EM_OK);
    for (int i = 0; i < 4; i++) em_rng_u64();
    em_rng_normal();
    CHECK(em_rng_u64() == c);
    /* below(n) stays below n */
    bool ok = true;
    for (int i = 0; i < 10000; i++) ok &= em_rng_below(3) < 3;
    CHECK(ok);
}

TEST(set_and_get_num_threads) {
    int before = em_get_num_threads();
    CHECK(before >= 1);
    em_set_num_threads(1);
    CHECK(em_get_num_threads() == 1);
    em_set_num_threads(3);
    CHECK(em_get_num_threads() == 3);
    em_set_num_threads(0); /* clamped to 1 */
    CHECK(em_get_num_threads() == 1);
    em_set_num_threads(before);
    CHECK(em_get_num_threads() == before);
}

/* ---- joining and indexing -------------------------------------------- */

TEST(cat_along_every_dim) {
    int64_t sa[3] = {2, 3, 4}, sb[3] = {2, 1, 4}, sc[3] = {2, 0, 4};
    em_tensor *a = iota(3, sa), *b0 = iota(3, sb), *c = em_tensor_zeros(3, sc);
    em_tensor *b = em_binary_scalar(EM_BIN_ADD, b0, 100.0f);
    em_tensor *parts[3] = {a, c, b};
    em_tensor *r = em_cat(3, parts, 1);
    int64_t want[3] = {2, 4, 4};
    CHECK(shape_is(r, 3, want));
    if (r)
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < 4; j++)
                for (int64_t k = 0; k < 4; k++) {
                    int64_t ir[3] = {i, j, k}, ia[3] = {i, j, k}, ib[3] = {i, 0, k};
                    float w = j < 3 ? em_tensor_get(a, ia) : em_tensor_get(b, ib);
                    CHECK(em_tensor_get(r, ir) == w);
                }
    /* last dim via -1, with a non-contiguous piece */
    em_tensor *t = em_transpose(a, 1, 2); /* [2 x 4 x 3] */
    em_tensor *parts2[2] = {t, t};
    em_tensor *r2 = em_cat(2, parts2, -1);
    int64_t want2[3] = {2, 4, 6};
    CHECK(shape_is(r2, 3, want2));
    if (r2)
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < 4; j++)
                for (int64_t k = 0; k < 6; k++) {
                    int64_t ir[3] = {i, j, k}, it[3] = {i, j, k % 3};
                    CHECK(em_tensor_get(r2, ir) == em_tensor_get(t, it));
                }
    /* dim 0 */
    em_tensor *parts3[2] = {a, a};
    em_tensor *r3 = em_cat(2, parts3, 0);
    CHECK(r3 && r3->shape[0] == 4 && r3->storage->data[24] == 0.0f && r3->storage->data[47] == 23.0f);
    /* errors */
    em_tensor *bad[2] = {a, t};
    CHECK(em_cat(2, bad, 0) == NULL);
    CHECK_ERROR("cat: tensor 2 has shape [2 x 4 x 3], which does not match [2 x 3 x 4] except in dim 1");
    CHECK(em_cat(0, bad, 0) == NULL);
    CHECK_ERROR("cat: expected at least one tensor");
    CHECK(em_cat(2, parts3, 3) == NULL);
    CHECK_ERROR("cat: dim 4 out of range");
    RELEASE_ALL(a, b0, b, c, r, t, r2, r3);
}

TEST(stack_inserts_a_new_dim) {
    int64_t s[2] = {2, 3};
    em_tensor *a = iota(2, s), *b = em_binary_scalar(EM_BIN_MUL, a, -1.0f);
    em_tensor *ab[2] = {a, b};
    for (int d = -3; d <= 2; d++) {
        em_tensor *r = em_stack(2, ab, d);
        int pos = d < 0 ? d + 3 : d;
        CHECK(r && r->ndim == 3 && r->shape[pos] == 2);
        if (!r) continue;
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < 3; j++)
                for (int w = 0; w < 2; w++) {
                    int64_t idx[3], k = 0, src[2] = {i, j};
                    for (int q = 0; q < 3; q++) idx[q] = q == pos ? w : src[k++];
                    CHECK(em_tensor_get(r, idx) == (w ? -1.0f : 1.0f) * em_tensor_get(a, src));
                }
        em_tensor_release(r);
    }
    em_tensor *t = em_transpose(a, 0, 1);
    em_tensor *bad[2] = {a, t};
    CHECK(em_stack(2, bad, 0) == NULL);
    CHECK_ERROR("stack: tensor 2 has shape [3 x 2], expected [2 x 3] like the first");
    RELEASE_ALL(a, b, t);
}

TEST(index_select_matches_naive) {
    int64_t s[3] = {4, 3, 5};
    em_tensor *a = iota(3, s);
    int perm[3] = {2, 0, 1};
    em_tensor *p = em_permute(a, perm); /* [5 x 4 x 3], non-contiguous */
    float iv[5] = {3, 0, 3, 1, 2};
    int64_t n5 = 5;
    em_tensor *idx = em_tensor_from_data(1, &n5, iv);
    for (int d = 0; d < 3; d++) {
        em_tensor *src = d == 1 ? a : p;
        int64_t m = src->shape[d];
        em_tensor *ix = m >= 4 ? em_tensor_retain(idx) : em_tensor_arange(m - 1, -1, -1);
        em_tensor *r = em_index_select(src, d, ix);
        CHECK(r && r->ndim == 3 && r->shape[d] == ix->numel);
        if (r) {
            int64_t pos[3] = {0, 0, 0};
            for (int64_t e = 0; e < r->numel; e++) {
                int64_t from[3] = {pos[0], pos[1], pos[2]};
                from[d] = (int64_t)ix->storage->data[pos[d]];
                CHECK(em_tensor_get(r, pos) == em_tensor_get(src, from));
                for (int q = 2; q >= 0; q--) {
                    if (++pos[q] < r->shape[q]) break;
                    pos[q] = 0;
                }
            }
        }
        RELEASE_ALL(ix, r);
    }
    /* an empty index gives an empty dim */
    int64_t zero = 0;
    em_tensor *none = em_tensor_empty(1, &zero);
    em_tensor *rn = em_index_select(a, 1, none);
    CHECK(rn && rn->shape[1] == 0 && rn->numel == 0);
    /* bad indices */
    iv[2] = 4;
    em_tensor *bad = em_tensor_from_data(1, &n5, iv);
    CHECK(em_index_select(a, 0, bad) == NULL);
    CHECK_ERROR("index_select: index 5 out of range (expected 1..4)");
    iv[2] = 0.5f;
    em_tensor *frac = em_tensor_from_data(1, &n5, iv);
    CHECK(em_index_select(a, 0, frac) == NULL);
    CHECK_ERROR("index_select: index 1.5 out of range (expected 1..4)");
    int64_t s2[2] = {2, 2};
    em_tensor *two = em_tensor_zeros(2, s2);
    CHECK(em_index_select(a, 0, two) == NULL);
    CHECK_ERROR("index_select: index must be 1-D, got 2 dims");
    RELEASE_ALL(a, p, idx, none, rn, bad, frac, two);
}

TEST(gather_and_scatter_add_match_naive) {
    em_rng_seed(43);
    int64_t s[3] = {3, 4, 5};
    em_tensor *a = em_randn(3, s);
    for (int d = 0; d < 3; d++) {
        /* index: like a but smaller in the other dims, values in [0, size_d) */
        int64_t si[3] = {3, 4, 5};
        for (int q = 0; q < 3; q++)
            if (q != d) si[q] -= 1;
        si[d] = 6; /* along d the index may be longer than a */
        em_tensor *ix = em_randint(0, s[d], 3, si);
        em_tensor *g = em_gather(a, d, ix);
        CHECK(shape_is(g, 3, si));
        /* scatter_add of src (shaped like ix) into zeros shaped like a */
        em_tensor *src = em_randn(3, si);
        em_tensor *z = em_tensor_zeros(3, s);
        em_tensor *sa = em_scatter_add(z, d, ix, src);
        CHECK(shape_is(sa, 3, s));
        double *want = calloc(60, sizeof *want);
        int64_t pos[3] = {0, 0, 0};
        for (int64_t e = 0; e < ix->numel; e++) {
            int64_t from[3] = {pos[0], pos[1], pos[2]};
            from[d] = (int64_t)em_tensor_get(ix, pos);
            if (g) CHECK(em_tensor_get(g, pos) == em_tensor_get(a, from));
            want[from[0] * 20 + from[1] * 5 + from[2]] += em_tensor_get(src, pos);
            for (int q = 2; q >= 0; q--) {
                if (++pos[q] < si[q]) break;
                pos[q] = 0;
            }
        }
        if (sa)
            for (int64_t i = 0; i < 60; i++) CHECK_NEAR(sa->storage->data[i], want[i], 1e-5);
        CHECK(z->storage->data[0] == 0.0f); /* out of place */
        /* in place into a transposed destination gives the same sums */
        int perm[3] = {0, 2, 1};
        int64_t st[3] = {3, 5, 4};
        em_tensor *zt0 = em_tensor_zeros(3, st), *zt = em_permute(zt0, perm); /* [3 x 4 x 5] */
        CHECK(em_scatter_add_(zt, d, ix, src) == EM_OK);
        for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < 4; j++)
                for (int64_t k = 0; k < 5; k++) {
                    int64_t at[3] = {i, j, k};
                    CHECK_NEAR(em_tensor_get(zt, at), want[i * 20 + j * 5 + k], 1e-5);
                }
        free(want);
        RELEASE_ALL(ix, g, src, z, sa, zt0, zt);
    }
    RELEASE_ALL(a);
}

TEST(gather_scatter_errors) {
    int64_t s[2] = {3, 4};
    em_tensor *a = em_tensor_zeros(2, s);
    int64_t si[2] = {3, 1};
    em_tensor *ix = em_tensor_full(2, si, 4.0f);
    CHECK(em_gather(a, 1, ix) == NULL);
    CHECK_ERROR("gather: index 5 out of range (expected 1..4)");
    int64_t s1[1] = {3};
    em_tensor *ix1 = em_tensor_zeros(1, s1);
    CHECK(em_gather(a, 1, ix1) == NULL);
    CHECK_ERROR("gather: index has 1 dims, expected 2 like the input");
    int64_t sbig[2] = {4, 1};
    em_tensor *ixbig = em_tensor_zeros(2, sbig);
    CHECK(em_gather(a, 1, ixbig) == NULL);
    CHECK_ERROR("gather: index [4 x 1] is larger than the input [3 x 4] in dim 1");
    em_tensor *ok_ix = em_tensor_zeros(2, si);
    int64_t ss[2] = {2, 1};
    em_tensor *small = em_tensor_zeros(2, ss);
    CHECK(em_scatter_add(a, 1, ok_ix, small) == NULL);
    CHECK_ERROR("scatter_add: src [2 x 1] is smaller than index [3 x 1]");
    CHECK(em_scatter_add(a, 2, ok_ix, small) == NULL);
    CHECK_ERROR("scatter_add: dim 3 out of range");
    RELEASE_ALL(a, ix, ix1, ixbig, ok_ix, small);
}

TEST(fill_copy_and_inplace_ops_on_views_bump_the_version) {
    int64_t s[2] = {3, 4};
    em_tensor *a = iota(2, s);
    uint32_t v = a->storage->version;
    em_tensor *col = em_select(a, 1, 2);
    CHECK(em_fill_(col, 9.0f) == EM_OK);
    CHECK(a->storage->version == v + 1);
    float want[12] = {0, 1, 9, 3, 4, 5, 9, 7, 8, 9, 9, 11};
    CHECK(values_are(a, want, 12));
    em_tensor *row = em_narrow(a, 0, 1, 1);
    int64_t s4[1] = {4};
    float src[4] = {-1, -2, -3, -4};
    em_tensor *sr = em_tensor_from_data(1, s4, src);
    CHECK(em_copy_(row, sr) == EM_OK);
    float want2[12] = {0, 1, 9, 3, -1, -2, -3, -4, 8, 9, 9, 11};
    CHECK(values_are(a, want2, 12));
    CHECK(em_binary_scalar_(EM_BIN_MUL, row, 2.0f) == EM_OK);
    CHECK(em_unary_(EM_UN_ABS, row) == EM_OK);
    CHECK(em_clamp_(row, 0.0f, 5.0f) == EM_OK);
    float want3[12] = {0, 1, 9, 3, 2, 4, 5, 5, 8, 9, 9, 11};
    CHECK(values_are(a, want3, 12));
    CHECK(a->storage->version == v + 5);
    /* a copy between same-shaped views of different storage */
    em_tensor *b = em_tensor_zeros(2, s);
    em_tensor *bt = em_transpose(b, 0, 1), *at = em_transpose(a, 0, 1);
    CHECK(em_copy_(bt, at) == EM_OK);
    CHECK(values_are(b, want3, 12));
    RELEASE_ALL(a, col, row, sr, b, bt, at);
}

TEST(inplace_refuses_tensors_that_require_grad) {
    int64_t s[1] = {3};
    em_tensor *w = em_tensor_zeros(1, s);
    em_set_requires_grad(w, true);
    CHECK(em_fill_(w, 1.0f) == EM_ERR);
    CHECK_ERROR("fill_: in-place change of a tensor that requires grad; use an out-of-place op, "
                "or wrap it in ember.no_grad");
    CHECK(em_binary_scalar_(EM_BIN_ADD, w, 1.0f) == EM_ERR);
    CHECK_ERROR("add_: in-place change of a tensor that requires grad");
    CHECK(em_unary_(EM_UN_EXP, w) == EM_ERR);
    CHECK_ERROR("exp_: in-place change");
    CHECK(em_uniform_(w, 0, 1) == EM_ERR);
    CHECK_ERROR("uniform_: in-place change");
    /* allowed with grad mode off (an optimizer step) */
    em_set_grad_enabled(false);
    CHECK(em_fill_(w, 1.0f) == EM_OK);
    em_set_grad_enabled(true);
    CHECK(w->storage->data[2] == 1.0f);
    em_tensor_release(w);
}

TEST(tensor_read_and_get_follow_strides) {
    int64_t s[3] = {2, 3, 4};
    em_tensor *a = iota(3, s);
    int perm[3] = {1, 2, 0};
    em_tensor *p = em_permute(a, perm); /* [3 x 4 x 2] */
    float got[24];
    em_tensor_read(p, got);
    int k = 0;
    bool ok = true;
    for (int64_t i = 0; i < 3; i++)
        for (int64_t j = 0; j < 4; j++)
            for (int64_t l = 0; l < 2; l++) ok &= got[k++] == (float)(l * 12 + i * 4 + j);
    CHECK(ok);
    RELEASE_ALL(a, p);
}

/* The inverse of an odd number modulo 2^64 (Newton's iteration). */
static uint64_t inverse_mod_2_64(uint64_t a) {
    uint64_t x = a;
    for (int i = 0; i < 6; i++) x *= 2 - a * x;
    return x;
}

TEST(rand_stays_below_one_at_the_top_of_the_generator) {
    /* a state whose next xoshiro256** output is all ones: the double draw is
     * 1 - 2^-53, which rounds to 1.0f as a float */
    uint64_t want = UINT64_MAX;
    uint64_t r = want * inverse_mod_2_64(9);   /* rotl(s1 * 5, 7) */
    uint64_t s1x5 = (r >> 7) | (r << 57);      /* rotr by 7 */
    uint64_t st[EM_RNG_STATE_WORDS] = {1, s1x5 * inverse_mod_2_64(5), 2, 3};
    uint64_t saved[EM_RNG_STATE_WORDS];
    em_rng_get_state(saved);
    CHECK(em_rng_set_state(st) == EM_OK);
    CHECK(em_rng_u64() == UINT64_MAX);
    int64_t one = 1;
    CHECK(em_rng_set_state(st) == EM_OK);
    em_tensor *u = em_rand(1, &one);
    CHECK(u && u->storage->data[0] < 1.0f && u->storage->data[0] > 0.99999f);
    CHECK(em_rng_set_state(st) == EM_OK);
    em_tensor *v = em_tensor_zeros(1, &one);
    CHECK(em_uniform_(v, 2.0f, 3.0f) == EM_OK);
    CHECK(v->storage->data[0] < 3.0f && v->storage->data[0] > 2.9999f);
    em_rng_set_state(saved);
    RELEASE_ALL(u, v);
}

TEST(is_contiguous_ignores_the_strides_of_size_one_dims) {
    int64_t s[2] = {3, 4};
    em_tensor *a = iota(2, s);
    em_tensor *t = em_transpose(a, 0, 1);   /* [4 x 3], strides (1, 4) */
    em_tensor *col = em_narrow(t, 1, 2, 1); /* [4 x 1], strides (1, 4): row 2 of a */
    CHECK(!em_tensor_is_contiguous(t));
    CHECK(em_tensor_is_contiguous(col));
    em_tensor *c = em_contiguous(col);
    CHECK(c == col); /* no copy */
    int64_t four = 4;
    em_tensor *v = em_view(col, 1, &four);
    float want[4] = {8, 9, 10, 11};
    CHECK(v && v->storage == a->storage && values_are(v, want, 4));
    /* a transposed [1 x n] is still contiguous */
    em_tensor *row = em_narrow(a, 0, 1, 1), *rt = em_transpose(row, 0, 1);
    CHECK(em_tensor_is_contiguous(rt));
    /* a 0-dim and an empty tensor are */
    em_tensor *sc = em_tensor_scalar(1.0f);
    CHECK(em_tensor_is_contiguous(sc));
    RELEASE_ALL(a, t, col, c, v, row, rt, sc);
}

/* zeros of a large tensor (cleared by every thread, a stretch each) from a
 * recycled block that held other values: every element 0, at 1-3 threads and
 * sizes around the threshold and the thread split */
TEST(zeros_clears_a_recycled_block_at_any_thread_count) {
    const int64_t sizes[] = {262144, 262145, 1000003};
    bool all_zero = true;
    int before = em_get_num_threads();
    for (int threads = 1; threads <= 3; threads++) {
        em_set_num_threads(threads);
        for (int k = 0; k < 3; k++) {
            int64_t n = sizes[k];
            em_tensor *dirty = em_tensor_full(1, &n, 7.0f);
            em_tensor_release(dirty); /* its block goes back to the storage cache */
            em_tensor *z = em_tensor_zeros(1, &n);
            const float *d = em_tensor_data(z);
            for (int64_t i = 0; i < n; i++) all_zero = all_zero && d[i] == 0.0f && !signbit(d[i]);
            em_tensor_release(z);
        }
    }
    em_set_num_threads(before);
    CHECK(all_zero);
}
