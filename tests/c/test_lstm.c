/* test_lstm.c — the fused LSTM cell (em_lstm.h): its forward bit for bit
 * equal to the same cell made of ordinary ops (sigmoid, tanh, mul, add) and
 * close to a double-precision loop; its fused backward bit for bit equal to
 * the composed one (create_graph) and close to the loop's derivative; the
 * same bits at 1 and 2 threads on a batch large enough for the threaded loop;
 * inputs with strided rows (a select of an earlier result, an expanded
 * state, a transposed gate matrix); and every bad argument by its message. */
#include <math.h>
#include <stdlib.h>

#include "em_autograd.h"
#include "em_lstm.h"
#include "em_rng.h"
#include "test.h"

#define REL(t) em_tensor_release(t)

static float *values(const em_tensor *t) {
    float *v = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    em_tensor_read(t, v);
    return v;
}

/* a and b hold the same floats, bit for bit. */
static bool same_bits(const em_tensor *a, const em_tensor *b) {
    if (!a || !b || a->numel != b->numel) return false;
    float *va = values(a), *vb = values(b);
    bool same = memcmp(va, vb, (size_t)a->numel * sizeof(float)) == 0;
    free(va);
    free(vb);
    return same;
}

static em_tensor *randn2(int64_t a, int64_t b) {
    int64_t s[2] = {a, b};
    return em_randn(2, s);
}

/* The cell made of ordinary ops: [2 x N x H] (h, c). */
static em_tensor *cell_by_ops(em_tensor *gates, em_tensor *cp) {
    int64_t H = cp->shape[1];
    em_tensor *pre[4], *act[4];
    for (int k = 0; k < 4; k++) {
        pre[k] = em_narrow(gates, 1, k * H, H);
        act[k] = em_unary(k == 2 ? EM_UN_TANH : EM_UN_SIGMOID, pre[k]);
    }
    em_tensor *fc = em_binary(EM_BIN_MUL, act[1], cp), *ig = em_binary(EM_BIN_MUL, act[0], act[2]);
    em_tensor *c = em_binary(EM_BIN_ADD, fc, ig);
    em_tensor *tc = em_unary(EM_UN_TANH, c);
    em_tensor *h = em_binary(EM_BIN_MUL, act[3], tc);
    em_tensor *hc[2] = {h, c};
    em_tensor *out = em_stack(2, hc, 0);
    for (int k = 0; k < 4; k++) {
        REL(pre[k]);
        REL(act[k]);
    }
    REL(fc); REL(ig); REL(c); REL(tc); REL(h);
    return out;
}

static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Forward and backward in double precision from row-major copies: y [2 x N x H],
 * and for the output gradient gy the gradients da [N x 4H], dcp [N x H]. */
static void naive_cell(const float *a, const float *cp, const float *gy, int64_t N, int64_t H,
                       double *y, double *da, double *dcp) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < H; j++) {
            const float *r = a + n * 4 * H;
            double i = sig(r[j]), f = sig(r[H + j]), g = tanh(r[2 * H + j]), o = sig(r[3 * H + j]);
            double c = f * cp[n * H + j] + i * g, tc = tanh(c);
            y[n * H + j] = o * tc;
            y[(N + n) * H + j] = c;
            double gh = gy[n * H + j], gc = gy[(N + n) * H + j];
            double dc = gc + gh * o * (1 - tc * tc);
            double *d = da + n * 4 * H;
            d[j] = dc * g * i * (1 - i);
            d[H + j] = dc * cp[n * H + j] * f * (1 - f);
            d[2 * H + j] = dc * i * (1 - g * g);
            d[3 * H + j] = gh * tc * o * (1 - o);
            dcp[n * H + j] = dc * f;
        }
}

static void check_close_d(const em_tensor *t, const double *ref, double tol) {
    CHECK(t != NULL);
    if (!t) return;
    float *v = values(t);
    double worst = 0;
    for (int64_t k = 0; k < t->numel; k++) {
        double d = fabs(v[k] - ref[k]) / (1.0 + fabs(ref[k]));
        if (!(d <= worst)) worst = d;
    }
    CHECK_NEAR(worst, 0.0, tol);
    free(v);
}

/* How the inputs are laid out in memory. */
enum layout { CONTIGUOUS, STRIDED };

/* gates [N x 4H] and c_prev [N x H] as leaves; STRIDED: gates is a transposed
 * view (copied by the op) and c_prev the c half of an earlier [2 x N x H] result
 * (rows read in place). */
static void make_inputs(int64_t N, int64_t H, enum layout l, em_tensor **gates, em_tensor **cp,
                        em_tensor **owners) {
    if (l == CONTIGUOUS) {
        *gates = randn2(N, 4 * H);
        *cp = randn2(N, H);
        owners[0] = owners[1] = NULL;
        em_set_requires_grad(*gates, true);
        em_set_requires_grad(*cp, true);
        return;
    }
    em_tensor *gt = randn2(4 * H, N);
    int64_t s3[3] = {2, N, H};
    em_tensor *prev = em_randn(3, s3);
    em_set_requires_grad(gt, true);
    em_set_requires_grad(prev, true);
    *gates = em_transpose(gt, 0, 1);
    *cp = em_select(prev, 0, 1);
    owners[0] = gt;
    owners[1] = prev;
}

static void check_cell(int64_t N, int64_t H, enum layout l) {
    em_rng_seed((uint64_t)(N * 131 + H * 7 + l));
    em_tensor *gates, *cp, *owners[2];
    make_inputs(N, H, l, &gates, &cp, owners);
    int64_t s3[3] = {2, N, H};
    em_tensor *gy = em_randn(3, s3);

    em_tensor *out = em_lstm_pointwise(gates, cp);
    em_tensor *ref = cell_by_ops(gates, cp);
    CHECK(out && out->ndim == 3 && out->shape[0] == 2 && out->shape[1] == N && out->shape[2] == H);
    CHECK(same_bits(out, ref));

    float *av = values(gates), *cv = values(cp), *gv = values(gy);
    double *y = malloc((size_t)(2 * N * H) * sizeof(double));
    double *da = malloc((size_t)(4 * N * H) * sizeof(double));
    double *dcp = malloc((size_t)(N * H) * sizeof(double));
    naive_cell(av, cv, gv, N, H, y, da, dcp);
    check_close_d(out, y, 1e-6);

    /* the fused backward (nothing recorded) and the composed one agree bit for bit */
    em_tensor *in[2] = {gates, cp}, *fused[2], *composed[2];
    CHECK(em_grad(out, gy, 2, in, fused, true, false) == EM_OK);
    CHECK(em_grad(out, gy, 2, in, composed, true, true) == EM_OK);
    for (int k = 0; k < 2; k++) {
        CHECK(same_bits(fused[k], composed[k]));
        CHECK(composed[k] && composed[k]->requires_grad); /* recorded: differentiable */
    }
    check_close_d(fused[0], da, 1e-5);
    check_close_d(fused[1], dcp, 1e-5);
    /* and the op-built cell's own gradient is the same up to rounding */
    em_tensor *by_ops[2];
    CHECK(em_grad(ref, gy, 2, in, by_ops, false, false) == EM_OK);
    check_close_d(by_ops[0], da, 1e-5);
    for (int k = 0; k < 2; k++) {
        REL(fused[k]);
        REL(composed[k]);
        REL(by_ops[k]);
    }
    free(av); free(cv); free(gv); free(y); free(da); free(dcp);
    REL(out); REL(ref); REL(gy); REL(gates); REL(cp); REL(owners[0]); REL(owners[1]);
}

TEST(lstm_pointwise_matches_ops_and_naive_loop) {
    check_cell(1, 1, CONTIGUOUS);
    check_cell(3, 5, CONTIGUOUS);
    check_cell(2, 7, STRIDED);
    check_cell(1, 3, STRIDED);
    check_cell(5, 2, CONTIGUOUS);
}

/* An expanded state (every row the same memory, row stride 0) is read in place. */
TEST(lstm_pointwise_expanded_state) {
    em_rng_seed(3);
    int64_t N = 4, H = 3, one[2] = {1, 3}, full[2] = {4, 3};
    em_tensor *gates = randn2(N, 4 * H), *c1 = em_randn(2, one);
    em_set_requires_grad(c1, true);
    em_tensor *cp = em_expand(c1, 2, full);
    CHECK(cp && cp->strides[0] == 0);
    em_tensor *out = em_lstm_pointwise(gates, cp), *ref = cell_by_ops(gates, cp);
    CHECK(same_bits(out, ref));
    int64_t s3[3] = {2, N, H};
    em_tensor *gy = em_randn(3, s3), *g1 = NULL, *g2 = NULL;
    CHECK(em_grad(out, gy, 1, &c1, &g1, true, false) == EM_OK); /* cp's node is shared */
    CHECK(em_grad(ref, gy, 1, &c1, &g2, false, false) == EM_OK);
    CHECK(g1 && g1->shape[0] == 1 && g1->shape[1] == H);
    if (g1 && g2) {
        float *a = values(g1), *b = values(g2);
        for (int j = 0; j < H; j++) CHECK_NEAR(a[j], b[j], 1e-6);
        free(a);
        free(b);
    }
    REL(gates); REL(c1); REL(cp); REL(out); REL(ref); REL(gy); REL(g1); REL(g2);
}

/* Only one input needing a gradient: the other slot stays empty. */
TEST(lstm_pointwise_one_input_needs_grad) {
    em_rng_seed(4);
    int64_t N = 3, H = 4, s3[3] = {2, 3, 4};
    for (int which = 0; which < 2; which++) {
        em_tensor *gates = randn2(N, 4 * H), *cp = randn2(N, H);
        em_tensor *leaf = which ? cp : gates;
        em_set_requires_grad(leaf, true);
        em_tensor *gy = em_randn(3, s3), *fused = NULL, *composed = NULL;
        em_tensor *out = em_lstm_pointwise(gates, cp);
        CHECK(em_grad(out, gy, 1, &leaf, &fused, true, false) == EM_OK);
        CHECK(em_grad(out, gy, 1, &leaf, &composed, false, true) == EM_OK);
        CHECK(same_bits(fused, composed));
        REL(gates); REL(cp); REL(gy); REL(fused); REL(composed); REL(out);
    }
    /* nothing requires grad: no node, no workspace */
    em_tensor *gates = randn2(N, 4 * H), *cp = randn2(N, H);
    em_tensor *out = em_lstm_pointwise(gates, cp);
    CHECK(out && out->grad_fn == NULL && !out->requires_grad);
    REL(gates); REL(cp); REL(out);
}

/* A batch over the threaded loop's threshold: the same bits at 1 and 2 threads. */
TEST(lstm_pointwise_same_bits_at_any_thread_count) {
    int threads = em_get_num_threads();
    int64_t N = 67, H = 131, s3[3] = {2, 67, 131};
    em_tensor *res[2][3];
    for (int k = 0; k < 2; k++) {
        em_set_num_threads(k + 1);
        em_rng_seed(9);
        em_tensor *gates = randn2(N, 4 * H), *cp = randn2(N, H), *gy = em_randn(3, s3);
        em_set_requires_grad(gates, true);
        em_set_requires_grad(cp, true);
        res[k][0] = em_lstm_pointwise(gates, cp);
        em_tensor *in[2] = {gates, cp};
        CHECK(em_grad(res[k][0], gy, 2, in, &res[k][1], false, false) == EM_OK);
        REL(gates); REL(cp); REL(gy);
    }
    em_set_num_threads(threads);
    for (int j = 0; j < 3; j++) {
        CHECK(same_bits(res[0][j], res[1][j]));
        REL(res[0][j]);
        REL(res[1][j]);
    }
}

TEST(lstm_pointwise_bad_arguments) {
    int64_t a[2] = {3, 10}, b[2] = {3, 8}, c[2] = {2, 2}, d1 = 8, z[2] = {3, 0};
    em_tensor *g10 = em_tensor_zeros(2, a), *g8 = em_tensor_zeros(2, b);
    em_tensor *c22 = em_tensor_zeros(2, c), *v8 = em_tensor_zeros(1, &d1);
    em_tensor *g0 = em_tensor_zeros(2, z);
    CHECK(em_lstm_pointwise(g10, c22) == NULL);
    CHECK(strcmp(em_error_message(), "lstm_pointwise: gates [3 x 10] must be 2-D [N x 4H], its "
                                     "width a positive multiple of 4 (blocks i, f, g, o)") == 0);
    CHECK(em_lstm_pointwise(v8, c22) == NULL);
    CHECK_ERROR("lstm_pointwise: gates [8] must be 2-D [N x 4H]");
    CHECK(em_lstm_pointwise(g0, c22) == NULL);
    CHECK_ERROR("lstm_pointwise: gates [3 x 0] must be 2-D [N x 4H]");
    CHECK(em_lstm_pointwise(g8, c22) == NULL);
    CHECK(strcmp(em_error_message(),
                 "lstm_pointwise: c_prev [2 x 2] must be [3 x 2] (N x H for gates [3 x 8])") == 0);
    CHECK(em_lstm_pointwise(g8, v8) == NULL);
    CHECK_ERROR("lstm_pointwise: c_prev [8] must be [3 x 2]");
    em_error_clear();
    CHECK(em_lstm_pointwise(NULL, c22) == NULL);
    CHECK(em_lstm_pointwise(g8, NULL) == NULL);
    CHECK(strcmp(em_error_message(), "") == 0); /* a NULL input keeps the earlier message */
    REL(g10); REL(g8); REL(c22); REL(v8); REL(g0);
}

TEST(lstm_cell_matches_linear_and_pointwise) {
    em_rng_seed(6);
    int64_t N = 3, I = 5, H = 4;
    em_tensor *x = randn2(N, I), *h = randn2(N, H), *c = randn2(N, H);
    em_tensor *wi = randn2(4 * H, I), *wh = randn2(4 * H, H);
    int64_t four = 4 * H;
    em_tensor *bi = em_randn(1, &four), *bh = em_randn(1, &four);
    em_tensor *out = em_lstm_cell(x, h, c, wi, wh, bi, bh);
    em_tensor *gx = em_linear(x, wi, bi), *gh = em_linear(h, wh, bh);
    em_tensor *gates = em_binary(EM_BIN_ADD, gx, gh);
    em_tensor *ref = em_lstm_pointwise(gates, c);
    CHECK(same_bits(out, ref));
    REL(out); REL(ref);
    /* no biases: the products alone */
    out = em_lstm_cell(x, h, c, wi, wh, NULL, NULL);
    em_tensor *px = em_linear(x, wi, NULL), *ph = em_linear(h, wh, NULL);
    em_tensor *g2 = em_binary(EM_BIN_ADD, px, ph);
    ref = em_lstm_pointwise(g2, c);
    CHECK(same_bits(out, ref));
    REL(out); REL(ref); REL(px); REL(ph); REL(g2);
    REL(gx); REL(gh); REL(gates); REL(x); REL(h); REL(c); REL(wi); REL(wh); REL(bi); REL(bh);
}

TEST(lstm_cell_bad_arguments) {
    int64_t N = 3, I = 5, H = 4, four = 16, three = 3;
    em_tensor *x = randn2(N, I), *h = randn2(N, H), *c = randn2(N, H);
    em_tensor *wi = randn2(4 * H, I), *wh = randn2(4 * H, H), *b = em_randn(1, &four);
    em_tensor *v = em_randn(1, &three), *w10 = randn2(10, I), *wi6 = randn2(4 * H, 6);
    em_tensor *wh5 = randn2(4 * H, 5), *h2 = randn2(2, H), *b15 = em_randn(1, &three);
    CHECK(em_lstm_cell(v, h, c, wi, wh, b, b) == NULL);
    CHECK(strcmp(em_error_message(), "lstm_cell: input [3] must be 2-D [batch x input_size]") == 0);
    CHECK(em_lstm_cell(x, h, c, w10, wh, b, b) == NULL);
    CHECK(strcmp(em_error_message(),
                 "lstm_cell: w_ih [10 x 5] must be 2-D [4*hidden_size x input_size]") == 0);
    CHECK(em_lstm_cell(x, h, c, wi6, wh, b, b) == NULL);
    CHECK(strcmp(em_error_message(),
                 "lstm_cell: w_ih [16 x 6] does not fit input [3 x 5] (expected [16 x 5])") == 0);
    CHECK(em_lstm_cell(x, h, c, wi, wh5, b, b) == NULL);
    CHECK(strcmp(em_error_message(),
                 "lstm_cell: w_hh [16 x 5] must be [16 x 4] (4*hidden_size x hidden_size, with "
                 "hidden_size 4 from w_ih [16 x 5])") == 0);
    CHECK(em_lstm_cell(x, h2, c, wi, wh, b, b) == NULL);
    CHECK(strcmp(em_error_message(),
                 "lstm_cell: h [2 x 4] must be [3 x 4] (batch x hidden_size)") == 0);
    CHECK(em_lstm_cell(x, h, v, wi, wh, b, b) == NULL);
    CHECK(strcmp(em_error_message(), "lstm_cell: c [3] must be [3 x 4] (batch x hidden_size)") == 0);
    CHECK(em_lstm_cell(x, h, c, wi, wh, b15, b) == NULL);
    CHECK(strcmp(em_error_message(), "lstm_cell: b_ih [3] must be [16] (4*hidden_size)") == 0);
    CHECK(em_lstm_cell(x, h, c, wi, wh, NULL, b15) == NULL);
    CHECK(strcmp(em_error_message(), "lstm_cell: b_hh [3] must be [16] (4*hidden_size)") == 0);
    REL(x); REL(h); REL(c); REL(wi); REL(wh); REL(b); REL(v); REL(w10); REL(wi6); REL(wh5);
    REL(h2); REL(b15);
}
