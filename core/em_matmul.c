/* em_matmul.c — matrix products through cblas_sgemm, and the fused Linear
 * (x @ w^T + b). A 2-D operand whose rows or columns have unit stride goes to
 * BLAS as it is (transposed if need be); only other layouts are copied. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "em_autograd.h"

/* How a [rows x cols] view can be handed to BLAS without a copy. */
typedef struct {
    const float *data;
    CBLAS_TRANSPOSE trans;
    int64_t ld;
} blas_operand;

static bool blas_view(const float *base, int64_t rows, int64_t cols, int64_t rs, int64_t cs,
                      blas_operand *op) {
    op->data = base;
    if ((cs == 1 || cols == 1) && (rs >= (cols > 1 ? cols : 1) || rows == 1)) {
        op->trans = CblasNoTrans;
        op->ld = rows == 1 ? (cols > 1 ? cols : 1) : rs;
        if (op->ld < cols) op->ld = cols;
        return true;
    }
    if ((rs == 1 || rows == 1) && (cs >= (rows > 1 ? rows : 1) || cols == 1)) {
        op->trans = CblasTrans;
        op->ld = cols == 1 ? (rows > 1 ? rows : 1) : cs;
        if (op->ld < rows) op->ld = rows;
        return true;
    }
    return false;
}

/* C[m x n] = alpha A[m x k] B[k x n] + beta C, for strided A and B views; C is
 * contiguous with leading dim n. Copies an operand only when BLAS can't read it. */
static int gemm_strided(const float *a, int64_t ars, int64_t acs, const float *b, int64_t brs,
                        int64_t bcs, float *c, int64_t m, int64_t n, int64_t k, float beta) {
    if (m == 0 || n == 0) return EM_OK;
    if (k == 0) {
        if (beta == 0.0f) memset(c, 0, (size_t)(m * n) * sizeof(float));
        return EM_OK;
    }
    blas_operand A, B;
    float *acopy = NULL, *bcopy = NULL;
    if (!blas_view(a, m, k, ars, acs, &A)) {
        acopy = malloc((size_t)(m * k) * sizeof(float));
        if (!acopy) return em_error_set("matmul: out of memory copying a strided operand");
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < k; j++) acopy[i * k + j] = a[i * ars + j * acs];
        A = (blas_operand){acopy, CblasNoTrans, k};
    }
    if (!blas_view(b, k, n, brs, bcs, &B)) {
        bcopy = malloc((size_t)(k * n) * sizeof(float));
        if (!bcopy) {
            free(acopy);
            return em_error_set("matmul: out of memory copying a strided operand");
        }
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < n; j++) bcopy[i * n + j] = b[i * brs + j * bcs];
        B = (blas_operand){bcopy, CblasNoTrans, n};
    }
    /* beta = 0: zero C here and let BLAS add into it (beta = 1). OpenBLAS's own beta pass
     * is a slower store loop (7.5% of B1's samples in perf); its kernels compute
     * C = alpha * AB + C after either, so the values are the same (a BLAS that writes
     * alpha * AB without reading C could give -0 where this gives +0). */
    if (beta == 0.0f) {
        memset(c, 0, (size_t)(m * n) * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, A.trans, B.trans, (int)m, (int)n, (int)k, 1.0f, A.data, (int)A.ld,
                B.data, (int)B.ld, beta, c, (int)n);
    free(acopy);
    free(bcopy);
    return EM_OK;
}

em_tensor *em_matmul(em_tensor *a, em_tensor *b) {
    if (!a || !b) return NULL;
    char sa[EM_SHAPE_STR_MAX], sb[EM_SHAPE_STR_MAX];
    if (a->ndim == 0 || b->ndim == 0) {
        em_error_set("matmul: both operands need at least 1 dim, got %s @ %s",
                     em_shape_str(sa, sizeof sa, a->ndim, a->shape),
                     em_shape_str(sb, sizeof sb, b->ndim, b->shape));
        return NULL;
    }
    /* inner sizes, checked here so the message shows the shapes as given */
    int64_t ka = a->shape[a->ndim - 1], kb = b->shape[b->ndim == 1 ? 0 : b->ndim - 2];
    if (ka != kb) {
        em_error_set("matmul: %s @ %s: inner sizes %lld and %lld differ",
                     em_shape_str(sa, sizeof sa, a->ndim, a->shape),
                     em_shape_str(sb, sizeof sb, b->ndim, b->shape), (long long)ka, (long long)kb);
        return NULL;
    }
    /* 1-D operands: treat as a row (left) or column (right) and drop it after. */
    if (a->ndim == 1 || b->ndim == 1) {
        em_tensor *a2 = a->ndim == 1 ? em_unsqueeze(a, 0) : em_tensor_retain(a);
        em_tensor *b2 = b->ndim == 1 ? em_unsqueeze(b, -1) : em_tensor_retain(b);
        em_tensor *r = (a2 && b2) ? em_matmul(a2, b2) : NULL;
        em_tensor *s1 = (r && a->ndim == 1) ? em_squeeze(r, -2) : em_tensor_retain(r);
        em_tensor *s2 = (s1 && b->ndim == 1) ? em_squeeze(s1, -1) : em_tensor_retain(s1);
        em_tensor_release(a2);
        em_tensor_release(b2);
        em_tensor_release(r);
        em_tensor_release(s1);
        return s2;
    }
    int64_t m = a->shape[a->ndim - 2], k = a->shape[a->ndim - 1];
    int64_t k2 = b->shape[b->ndim - 2], n = b->shape[b->ndim - 1];
    if (k != k2) {
        em_error_set("matmul: %s @ %s: inner sizes %lld and %lld differ",
                     em_shape_str(sa, sizeof sa, a->ndim, a->shape),
                     em_shape_str(sb, sizeof sb, b->ndim, b->shape), (long long)k, (long long)k2);
        return NULL;
    }
    /* Batch dims broadcast. */
    int64_t batch_shape[EM_MAX_DIMS];
    int abd = a->ndim - 2, bbd = b->ndim - 2;
    int nb = abd > bbd ? abd : bbd;
    for (int i = 0; i < nb; i++) {
        int ia = i - (nb - abd), ib = i - (nb - bbd);
        int64_t x = ia >= 0 ? a->shape[ia] : 1, y = ib >= 0 ? b->shape[ib] : 1;
        if (x != y && x != 1 && y != 1) {
            em_error_set("matmul: %s @ %s: batch dims do not broadcast",
                         em_shape_str(sa, sizeof sa, a->ndim, a->shape),
                         em_shape_str(sb, sizeof sb, b->ndim, b->shape));
            return NULL;
        }
        batch_shape[i] = x == 1 ? y : x;
    }
    int64_t oshape[EM_MAX_DIMS];
    memcpy(oshape, batch_shape, (size_t)nb * sizeof(int64_t));
    oshape[nb] = m;
    oshape[nb + 1] = n;
    em_tensor *out = em_tensor_empty(nb + 2, oshape);
    if (!out) return NULL;
    int64_t batches = 1;
    for (int i = 0; i < nb; i++) batches *= batch_shape[i];
    const float *ad = em_tensor_data(a), *bd = em_tensor_data(b);
    float *od = out->storage->data;
    for (int64_t bi = 0; bi < batches; bi++) {
        int64_t rem = bi, aoff = 0, boff = 0;
        for (int i = nb - 1; i >= 0; i--) {
            int64_t idx = rem % batch_shape[i];
            rem /= batch_shape[i];
            int ia = i - (nb - abd), ib = i - (nb - bbd);
            if (ia >= 0 && a->shape[ia] != 1) aoff += idx * a->strides[ia];
            if (ib >= 0 && b->shape[ib] != 1) boff += idx * b->strides[ib];
        }
        if (gemm_strided(ad + aoff, a->strides[a->ndim - 2], a->strides[a->ndim - 1], bd + boff,
                         b->strides[b->ndim - 2], b->strides[b->ndim - 1], od + bi * m * n, m, n,
                         k, 0.0f)) {
            em_tensor_release(out);
            return NULL;
        }
    }
    em_tensor *in[2] = {a, b};
    em_node *node = em_record(EM_OP_matmul, out, 2, in);
    if (node) {
        em_node_save(node, a);
        em_node_save(node, b);
    }
    return out;
}

int em_backward_matmul(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *a = n->saved[0], *b = n->saved[1];
    int rc = EM_OK;
    if (em_edge_needs_grad(n, 0)) { /* g @ b^T, reduced over broadcast batch dims */
        em_tensor *bt = em_transpose(b, -1, -2);
        em_tensor *ga = em_matmul(g, bt);
        gin[0] = em_sum_to_shape(ga, n->edges[0].ndim, n->edges[0].shape);
        em_tensor_release(bt);
        em_tensor_release(ga);
        if (!gin[0]) rc = EM_ERR;
    }
    if (em_edge_needs_grad(n, 1)) { /* a^T @ g */
        em_tensor *at = em_transpose(a, -1, -2);
        em_tensor *gb = em_matmul(at, g);
        gin[1] = em_sum_to_shape(gb, n->edges[1].ndim, n->edges[1].shape);
        em_tensor_release(at);
        em_tensor_release(gb);
        if (!gin[1]) rc = EM_ERR;
    }
    return rc;
}

em_tensor *em_linear(em_tensor *x, em_tensor *w, em_tensor *bias) {
    if (!x || !w) return NULL;
    char sx[EM_SHAPE_STR_MAX], sw[EM_SHAPE_STR_MAX];
    if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1]) {
        em_error_set("linear: input %s does not fit weight %s (expected [... x %lld])",
                     em_shape_str(sx, sizeof sx, x->ndim, x->shape),
                     em_shape_str(sw, sizeof sw, w->ndim, w->shape),
                     (long long)(w->ndim == 2 ? w->shape[1] : -1));
        return NULL;
    }
    int64_t out_f = w->shape[0], in_f = w->shape[1];
    if (bias && (bias->ndim != 1 || bias->shape[0] != out_f)) {
        em_error_set("linear: bias %s does not fit weight %s (expected [%lld])",
                     em_shape_str(sx, sizeof sx, bias->ndim, bias->shape),
                     em_shape_str(sw, sizeof sw, w->ndim, w->shape), (long long)out_f);
        return NULL;
    }
    em_tensor *xc = em_tensor_is_contiguous(x) ? em_tensor_retain(x) : em_detach(x);
    if (xc != x && xc) { /* a contiguous copy without recording */
        bool was = em_grad_enabled();
        em_set_grad_enabled(false);
        em_tensor *c = em_contiguous(xc);
        em_set_grad_enabled(was);
        em_tensor_release(xc);
        xc = c;
    }
    if (!xc) return NULL;
    int64_t rows = 1; /* all dims of x but the last (numel / in_f fails for in_f = 0) */
    for (int d = 0; d < x->ndim - 1; d++) rows *= x->shape[d];
    int64_t oshape[EM_MAX_DIMS];
    memcpy(oshape, x->shape, sizeof oshape);
    oshape[x->ndim - 1] = out_f;
    em_tensor *out = em_tensor_empty(x->ndim, oshape);
    if (!out) {
        em_tensor_release(xc);
        return NULL;
    }
    float *o = out->storage->data;
    float beta = 0.0f;
    if (bias) {
        em_tensor *bc = em_contiguous(bias);
        if (!bc) {
            em_tensor_release(xc);
            em_tensor_release(out);
            return NULL;
        }
        const float *bd = em_tensor_data(bc);
        for (int64_t r = 0; r < rows; r++) memcpy(o + r * out_f, bd, (size_t)out_f * sizeof(float));
        em_tensor_release(bc);
        beta = 1.0f;
    }
    /* out[rows x out] = x[rows x in] @ w^T */
    if (rows > 0 && out_f > 0) {
        if (in_f == 0) {
            if (!bias) memset(o, 0, (size_t)(rows * out_f) * sizeof(float));
        } else {
            if (gemm_strided(em_tensor_data(xc), in_f, 1, em_tensor_data(w), w->strides[1],
                             w->strides[0], o, rows, out_f, in_f, beta)) {
                em_tensor_release(xc);
                em_tensor_release(out);
                return NULL;
            }
        }
    }
    em_tensor_release(xc);
    em_tensor *in[3] = {x, w, bias};
    em_node *node = em_record(EM_OP_linear, out, bias ? 3 : 2, in);
    if (node) {
        em_node_save(node, x);
        em_node_save(node, w);
    }
    return out;
}

int em_backward_linear(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *x = n->saved[0], *w = n->saved[1];
    int64_t in_f = w->shape[1], out_f = w->shape[0];
    int64_t rows = 1; /* explicit, since -1 cannot be inferred when a size is 0 */
    for (int d = 0; d < x->ndim - 1; d++) rows *= x->shape[d];
    int64_t g2shape[2] = {rows, out_f}, x2shape[2] = {rows, in_f};
    em_tensor *g2 = em_reshape(g, 2, g2shape);
    int rc = g2 ? EM_OK : EM_ERR;
    if (rc == EM_OK && em_edge_needs_grad(n, 0)) { /* dx = g @ w */
        em_tensor *dx = em_matmul(g2, w);
        gin[0] = em_reshape(dx, x->ndim, x->shape);
        em_tensor_release(dx);
        if (!gin[0]) rc = EM_ERR;
    }
    if (rc == EM_OK && em_edge_needs_grad(n, 1)) { /* dw = g^T @ x */
        em_tensor *x2 = em_reshape(x, 2, x2shape);
        em_tensor *gt = em_transpose(g2, 0, 1);
        gin[1] = em_matmul(gt, x2);
        em_tensor_release(x2);
        em_tensor_release(gt);
        if (!gin[1]) rc = EM_ERR;
    }
    if (rc == EM_OK && n->n_edges > 2 && em_edge_needs_grad(n, 2)) { /* db = sum over rows */
        int d0 = 0;
        gin[2] = em_reduce(EM_RED_SUM, g2, 1, &d0, false, 0);
        if (!gin[2]) rc = EM_ERR;
    }
    em_tensor_release(g2);
    return rc;
}
