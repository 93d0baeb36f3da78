/* em_lstm.c — the fused LSTM cell (em_lstm.h): one pass over the gate
 * pre-activations for the five activations and both state updates, a fused
 * backward when the gradient is not being recorded, and the same gradient
 * composed of ordinary ops when it is (create_graph).
 *
 * The fused loops compute the same float products, in the same order, as the
 * composed path and as the op-by-op reference (sigmoid, tanh, mul, add), so
 * the three agree bit for bit (tested). Every element depends on its own
 * inputs only, so the result does not depend on the thread count. */
#include <math.h>
#include <stdlib.h>

#include "em_autograd.h"
#include "em_fastmath.h"
#include "em_lstm.h"

#define PAR_MIN 32768
#define REL(t) em_tensor_release(t)

/* The same expression as the unary op's sigmoid (em_elementwise.c). */

/* t itself (retained) when each row has unit stride, else a contiguous copy
 * (recorded, so gradients still reach t). */
static em_tensor *unit_rows(em_tensor *t) {
    if (t->strides[1] == 1 || t->shape[1] <= 1) return em_tensor_retain(t);
    return em_contiguous(t);
}

/* ---- forward --------------------------------------------------------- */

/* h and c (rows of H) from the gate rows a (stride as) and c_prev rows (stride
 * cs). ws, when given, receives i, f, g, o, tanh(c) per row ([N x 5H]): all
 * the fused backward reads, so it runs no transcendental function. */
static void forward_rows(int64_t N, int64_t H, const float *gates, int64_t as, const float *cp,
                         int64_t cs, float *h, float *c, float *ws) {
#pragma omp parallel for schedule(static) if (N * 4 * H > PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
        const float *a = gates + n * as, *cpr = cp + n * cs;
        float *hr = h + n * H, *cr = c + n * H;
        if (ws) {
            float *w = ws + n * 5 * H;
            for (int64_t j = 0; j < H; j++) {
                const float i = em_sigmoidf(a[j]), f = em_sigmoidf(a[H + j]);
                const float g = tanhf(a[2 * H + j]), o = em_sigmoidf(a[3 * H + j]);
                const float cn = f * cpr[j] + i * g;
                const float tc = tanhf(cn);
                cr[j] = cn;
                hr[j] = o * tc;
                w[j] = i;
                w[H + j] = f;
                w[2 * H + j] = g;
                w[3 * H + j] = o;
                w[4 * H + j] = tc;
            }
        } else {
            for (int64_t j = 0; j < H; j++) {
                const float i = em_sigmoidf(a[j]), f = em_sigmoidf(a[H + j]);
                const float g = tanhf(a[2 * H + j]), o = em_sigmoidf(a[3 * H + j]);
                const float cn = f * cpr[j] + i * g;
                cr[j] = cn;
                hr[j] = o * tanhf(cn);
            }
        }
    }
}

em_tensor *em_lstm_pointwise(em_tensor *gates, em_tensor *c_prev) {
    if (!gates || !c_prev) return NULL;
    char sg[EM_SHAPE_STR_MAX], sc[EM_SHAPE_STR_MAX];
    if (gates->ndim != 2 || gates->shape[1] == 0 || gates->shape[1] % 4 != 0) {
        em_error_set("lstm_pointwise: gates %s must be 2-D [N x 4H], its width a positive "
                     "multiple of 4 (blocks i, f, g, o)",
                     em_shape_str(sg, sizeof sg, gates->ndim, gates->shape));
        return NULL;
    }
    const int64_t N = gates->shape[0], H = gates->shape[1] / 4;
    if (c_prev->ndim != 2 || c_prev->shape[0] != N || c_prev->shape[1] != H) {
        em_error_set("lstm_pointwise: c_prev %s must be [%lld x %lld] (N x H for gates %s)",
                     em_shape_str(sc, sizeof sc, c_prev->ndim, c_prev->shape), (long long)N,
                     (long long)H, em_shape_str(sg, sizeof sg, gates->ndim, gates->shape));
        return NULL;
    }
    em_tensor *gv = unit_rows(gates);
    em_tensor *cv = gv ? unit_rows(c_prev) : NULL;
    int64_t oshape[3] = {2, N, H}, wshape[2] = {N, 5 * H};
    em_tensor *out = cv ? em_tensor_empty(3, oshape) : NULL;
    /* the backward's workspace, only when a node will be recorded */
    const bool recording = out && em_grad_enabled() && (gv->requires_grad || cv->requires_grad);
    em_tensor *ws = out && recording ? em_tensor_empty(2, wshape) : NULL;
    if (!out || (recording && !ws)) {
        REL(gv);
        REL(cv);
        REL(out);
        return NULL;
    }
    float *h = em_tensor_data(out);
    forward_rows(N, H, em_tensor_data(gv), gv->strides[0], em_tensor_data(cv), cv->strides[0], h,
                 h + N * H, ws ? em_tensor_data(ws) : NULL);
    em_tensor *in[2] = {gv, cv};
    em_node *node = em_record(EM_OP_lstm_pointwise, out, 2, in);
    if (node) {
        em_node_save(node, gv);
        em_node_save(node, cv);
        em_node_save(node, ws);
    }
    REL(gv);
    REL(cv);
    REL(ws);
    return out;
}

/* ---- backward -------------------------------------------------------- */

/* With dc = g_c + g_h o (1 - tanh(c)^2):
 *   d gates_i = dc g i (1 - i),   d gates_f = dc c_prev f (1 - f),
 *   d gates_g = dc i (1 - g^2),   d gates_o = g_h tanh(c) o (1 - o),
 *   d c_prev  = dc f.
 * Fused: one pass over the workspace, no transcendental function, every
 * product as the composed path forms it. */
static int fused_backward(em_node *nd, em_tensor *grad, em_tensor **gin) {
    em_tensor *cp = nd->saved[1], *ws = nd->saved[2];
    const int64_t N = cp->shape[0], H = cp->shape[1], cs = cp->strides[0];
    const bool need_gates = em_edge_needs_grad(nd, 0), need_c = em_edge_needs_grad(nd, 1);
    int64_t gshape[2] = {N, 4 * H};
    if (!need_gates && !need_c) return EM_OK;
    em_tensor *gc = em_contiguous(grad);
    em_tensor *da = gc && need_gates ? em_tensor_empty(2, gshape) : NULL;
    em_tensor *dcp = gc && need_c ? em_tensor_empty(2, cp->shape) : NULL;
    if (!gc || (need_gates && !da) || (need_c && !dcp)) {
        REL(gc);
        REL(da);
        REL(dcp);
        return EM_ERR;
    }
    const float *G = em_tensor_data(gc), *W = em_tensor_data(ws), *C = em_tensor_data(cp);
    float *DA = da ? em_tensor_data(da) : NULL, *DC = dcp ? em_tensor_data(dcp) : NULL;
#pragma omp parallel for schedule(static) if (N * 4 * H > PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
        const float *gh = G + n * H, *gcr = G + (N + n) * H, *w = W + n * 5 * H;
        const float *cpr = C + n * cs;
        const float *wi = w, *wf = w + H, *wg = w + 2 * H, *wo = w + 3 * H, *wt = w + 4 * H;
        if (DA) {
            float *ai = DA + n * 4 * H, *af = ai + H, *ag = ai + 2 * H, *ao = ai + 3 * H;
            float *dc_out = DC ? DC + n * H : NULL;
            if (dc_out) {
#pragma omp simd
                for (int64_t j = 0; j < H; j++) {
                    const float dc = gcr[j] + (gh[j] * wo[j]) * (1.0f - wt[j] * wt[j]);
                    ai[j] = (dc * wg[j]) * (wi[j] * (1.0f - wi[j]));
                    af[j] = (dc * cpr[j]) * (wf[j] * (1.0f - wf[j]));
                    ag[j] = (dc * wi[j]) * (1.0f - wg[j] * wg[j]);
                    ao[j] = (gh[j] * wt[j]) * (wo[j] * (1.0f - wo[j]));
                    dc_out[j] = dc * wf[j];
                }
            } else {
#pragma omp simd
                for (int64_t j = 0; j < H; j++) {
                    const float dc = gcr[j] + (gh[j] * wo[j]) * (1.0f - wt[j] * wt[j]);
                    ai[j] = (dc * wg[j]) * (wi[j] * (1.0f - wi[j]));
                    af[j] = (dc * cpr[j]) * (wf[j] * (1.0f - wf[j]));
                    ag[j] = (dc * wi[j]) * (1.0f - wg[j] * wg[j]);
                    ao[j] = (gh[j] * wt[j]) * (wo[j] * (1.0f - wo[j]));
                }
            }
        } else {
            float *dc_out = DC + n * H;
#pragma omp simd
            for (int64_t j = 0; j < H; j++)
                dc_out[j] = (gcr[j] + (gh[j] * wo[j]) * (1.0f - wt[j] * wt[j])) * wf[j];
        }
    }
    REL(gc);
    gin[0] = da;
    gin[1] = dcp;
    return EM_OK;
}

/* Temporaries of the composed backward, released together. */
typedef struct {
    em_tensor *items[40];
    int n;
} temps;

static em_tensor *keep(temps *t, em_tensor *x) {
    t->items[t->n++] = x;
    return x;
}

/* The same gradient with recording ops (create_graph): the activations and
 * the new cell state are recomputed from the saved inputs, so that their
 * dependence on gates and c_prev is part of the recorded graph. */
static int composed_backward(em_node *nd, em_tensor *grad, em_tensor **gin) {
    em_tensor *gates = nd->saved[0], *cp = nd->saved[1];
    const int64_t H = cp->shape[1];
    temps t = {{0}, 0};
    em_tensor *gh = keep(&t, em_select(grad, 0, 0)), *gc = keep(&t, em_select(grad, 0, 1));
    em_tensor *pre[4];
    for (int k = 0; k < 4; k++) pre[k] = keep(&t, em_narrow(gates, 1, k * H, H));
    if (!gh || !gc || !pre[0] || !pre[1] || !pre[2] || !pre[3]) {
        for (int k = 0; k < t.n; k++) REL(t.items[k]);
        return EM_ERR;
    }
    em_tensor *i = keep(&t, em_unary(EM_UN_SIGMOID, pre[0]));
    em_tensor *f = keep(&t, em_unary(EM_UN_SIGMOID, pre[1]));
    em_tensor *g = keep(&t, em_unary(EM_UN_TANH, pre[2]));
    em_tensor *o = keep(&t, em_unary(EM_UN_SIGMOID, pre[3]));
    em_tensor *fc = keep(&t, em_binary(EM_BIN_MUL, f, cp));
    em_tensor *ig = keep(&t, em_binary(EM_BIN_MUL, i, g));
    em_tensor *c = keep(&t, em_binary(EM_BIN_ADD, fc, ig));
    em_tensor *tc = keep(&t, em_unary(EM_UN_TANH, c));
    /* dc = gc + (gh o) (1 - tc tc) */
    em_tensor *gho = keep(&t, em_binary(EM_BIN_MUL, gh, o));
    em_tensor *tc2 = keep(&t, em_binary(EM_BIN_MUL, tc, tc));
    em_tensor *dtanh = keep(&t, em_scalar_binary(EM_BIN_SUB, 1.0f, tc2));
    em_tensor *through_h = keep(&t, em_binary(EM_BIN_MUL, gho, dtanh));
    em_tensor *dc = keep(&t, em_binary(EM_BIN_ADD, gc, through_h));
    int rc = dc ? EM_OK : EM_ERR;
    if (rc == EM_OK && em_edge_needs_grad(nd, 0)) {
        /* (dc g) (i (1 - i)) */
        em_tensor *dcg = keep(&t, em_binary(EM_BIN_MUL, dc, g));
        em_tensor *i1 = keep(&t, em_scalar_binary(EM_BIN_SUB, 1.0f, i));
        em_tensor *si = keep(&t, em_binary(EM_BIN_MUL, i, i1));
        em_tensor *di = keep(&t, em_binary(EM_BIN_MUL, dcg, si));
        /* (dc c_prev) (f (1 - f)) */
        em_tensor *dcc = keep(&t, em_binary(EM_BIN_MUL, dc, cp));
        em_tensor *f1 = keep(&t, em_scalar_binary(EM_BIN_SUB, 1.0f, f));
        em_tensor *sf = keep(&t, em_binary(EM_BIN_MUL, f, f1));
        em_tensor *df = keep(&t, em_binary(EM_BIN_MUL, dcc, sf));
        /* (dc i) (1 - g g) */
        em_tensor *dci = keep(&t, em_binary(EM_BIN_MUL, dc, i));
        em_tensor *g2 = keep(&t, em_binary(EM_BIN_MUL, g, g));
        em_tensor *g1 = keep(&t, em_scalar_binary(EM_BIN_SUB, 1.0f, g2));
        em_tensor *dg = keep(&t, em_binary(EM_BIN_MUL, dci, g1));
        /* (gh tc) (o (1 - o)) */
        em_tensor *ght = keep(&t, em_binary(EM_BIN_MUL, gh, tc));
        em_tensor *o1 = keep(&t, em_scalar_binary(EM_BIN_SUB, 1.0f, o));
        em_tensor *so = keep(&t, em_binary(EM_BIN_MUL, o, o1));
        em_tensor *dout = keep(&t, em_binary(EM_BIN_MUL, ght, so));
        if (di && df && dg && dout) {
            em_tensor *parts[4] = {di, df, dg, dout};
            gin[0] = em_cat(4, parts, 1);
        }
        if (!gin[0]) rc = EM_ERR;
    }
    if (rc == EM_OK && em_edge_needs_grad(nd, 1))
        if (!(gin[1] = em_binary(EM_BIN_MUL, dc, f))) rc = EM_ERR;
    for (int k = 0; k < t.n; k++) REL(t.items[k]);
    return rc;
}

/* saved: gates and c_prev (each with unit-stride rows), the workspace [N x 5H] */
int em_backward_lstm_pointwise(em_node *n, em_tensor *g, em_tensor **gin) {
    return em_grad_enabled() ? composed_backward(n, g, gin) : fused_backward(n, g, gin);
}

/* ---- one step ---------------------------------------------------------- */

em_tensor *em_lstm_cell(em_tensor *x, em_tensor *h, em_tensor *c, em_tensor *w_ih,
                        em_tensor *w_hh, em_tensor *b_ih, em_tensor *b_hh) {
    if (!x || !h || !c || !w_ih || !w_hh) return NULL;
    char a[EM_SHAPE_STR_MAX], b[EM_SHAPE_STR_MAX];
    if (x->ndim != 2) {
        em_error_set("lstm_cell: input %s must be 2-D [batch x input_size]",
                     em_shape_str(a, sizeof a, x->ndim, x->shape));
        return NULL;
    }
    const int64_t N = x->shape[0], I = x->shape[1];
    if (w_ih->ndim != 2 || w_ih->shape[0] == 0 || w_ih->shape[0] % 4 != 0) {
        em_error_set("lstm_cell: w_ih %s must be 2-D [4*hidden_size x input_size]",
                     em_shape_str(a, sizeof a, w_ih->ndim, w_ih->shape));
        return NULL;
    }
    const int64_t H = w_ih->shape[0] / 4;
    if (w_ih->shape[1] != I) {
        em_error_set("lstm_cell: w_ih %s does not fit input %s (expected [%lld x %lld])",
                     em_shape_str(a, sizeof a, w_ih->ndim, w_ih->shape),
                     em_shape_str(b, sizeof b, x->ndim, x->shape), (long long)(4 * H),
                     (long long)I);
        return NULL;
    }
    if (w_hh->ndim != 2 || w_hh->shape[0] != 4 * H || w_hh->shape[1] != H) {
        em_error_set("lstm_cell: w_hh %s must be [%lld x %lld] (4*hidden_size x hidden_size, "
                     "with hidden_size %lld from w_ih %s)",
                     em_shape_str(a, sizeof a, w_hh->ndim, w_hh->shape), (long long)(4 * H),
                     (long long)H, (long long)H,
                     em_shape_str(b, sizeof b, w_ih->ndim, w_ih->shape));
        return NULL;
    }
    em_tensor *const states[2] = {h, c};
    for (int k = 0; k < 2; k++) {
        const em_tensor *s = states[k];
        if (s->ndim != 2 || s->shape[0] != N || s->shape[1] != H) {
            em_error_set("lstm_cell: %s %s must be [%lld x %lld] (batch x hidden_size)",
                         k ? "c" : "h", em_shape_str(a, sizeof a, s->ndim, s->shape),
                         (long long)N, (long long)H);
            return NULL;
        }
    }
    em_tensor *const biases[2] = {b_ih, b_hh};
    for (int k = 0; k < 2; k++) {
        const em_tensor *s = biases[k];
        if (s && (s->ndim != 1 || s->shape[0] != 4 * H)) {
            em_error_set("lstm_cell: %s %s must be [%lld] (4*hidden_size)", k ? "b_hh" : "b_ih",
                         em_shape_str(a, sizeof a, s->ndim, s->shape), (long long)(4 * H));
            return NULL;
        }
    }
    em_tensor *gx = em_linear(x, w_ih, b_ih);
    em_tensor *gh = gx ? em_linear(h, w_hh, b_hh) : NULL;
    em_tensor *gates = em_binary(EM_BIN_ADD, gx, gh);
    em_tensor *out = em_lstm_pointwise(gates, c);
    REL(gx);
    REL(gh);
    REL(gates);
    return out;
}
