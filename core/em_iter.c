/* em_iter.c — the broadcasting strided loop behind every elementwise op. */
#include "em_iter.h"

#include <string.h>

typedef struct {
    int ndim;
    int nops;
    int64_t shape[EM_MAX_DIMS];
    int64_t strides[EM_ITER_MAX_OPS][EM_MAX_DIMS];
    float *base[EM_ITER_MAX_OPS];
} iter_plan;

/* Broadcast strides of t against the output shape (right-aligned). */
static void broadcast_strides(const em_tensor *t, int ndim, const int64_t *shape,
                              int64_t *strides) {
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int j = i - lead;
        strides[i] = (j < 0 || t->shape[j] == 1) ? 0 : t->strides[j];
        if (j >= 0 && t->shape[j] != shape[i] && t->shape[j] != 1) strides[i] = 0; /* unreachable */
    }
}

/* Merges dim i-1 into dim i where every operand is contiguous across them, and
 * drops size-1 dims. */
static void coalesce(iter_plan *p) {
    int nd = 0;
    int64_t shape[EM_MAX_DIMS], strides[EM_ITER_MAX_OPS][EM_MAX_DIMS];
    for (int i = 0; i < p->ndim; i++) {
        if (p->shape[i] == 1) continue;
        if (nd > 0) {
            bool mergeable = true;
            for (int k = 0; k < p->nops; k++)
                if (strides[k][nd - 1] != p->strides[k][i] * p->shape[i]) mergeable = false;
            if (mergeable) {
                shape[nd - 1] *= p->shape[i];
                for (int k = 0; k < p->nops; k++) strides[k][nd - 1] = p->strides[k][i];
                continue;
            }
        }
        shape[nd] = p->shape[i];
        for (int k = 0; k < p->nops; k++) strides[k][nd] = p->strides[k][i];
        nd++;
    }
    if (nd == 0) { /* a single element */
        shape[0] = 1;
        for (int k = 0; k < p->nops; k++) strides[k][0] = 1;
        nd = 1;
    }
    p->ndim = nd;
    memcpy(p->shape, shape, sizeof shape);
    memcpy(p->strides, strides, sizeof strides);
}

/* Runs rows [row_begin, row_end) of the outer index space. */
static void run_rows(const iter_plan *p, int64_t row_begin, int64_t row_end, em_row_fn row,
                     const void *ctx) {
    int inner = p->ndim - 1;
    int64_t n = p->shape[inner];
    int64_t s[EM_ITER_MAX_OPS];
    for (int k = 0; k < p->nops; k++) s[k] = p->strides[k][inner];
    for (int64_t r = row_begin; r < row_end; r++) {
        float *ptr[EM_ITER_MAX_OPS];
        int64_t rem = r;
        for (int k = 0; k < p->nops; k++) ptr[k] = p->base[k];
        for (int d = inner - 1; d >= 0; d--) {
            int64_t i = rem % p->shape[d];
            rem /= p->shape[d];
            for (int k = 0; k < p->nops; k++) ptr[k] += i * p->strides[k][d];
        }
        row(n, ptr, s, ctx);
    }
}

void em_iter_run(em_tensor *out, int n_in, em_tensor *const *in, em_row_fn row,
                 const void *ctx) {
    if (out->numel == 0) return;
    iter_plan p;
    p.ndim = out->ndim;
    p.nops = n_in + 1;
    memcpy(p.shape, out->shape, sizeof p.shape);
    memcpy(p.strides[0], out->strides, sizeof out->strides);
    p.base[0] = em_tensor_data(out);
    for (int k = 0; k < n_in; k++) {
        broadcast_strides(in[k], out->ndim, out->shape, p.strides[k + 1]);
        p.base[k + 1] = em_tensor_data(in[k]);
    }
    coalesce(&p);
    int64_t rows = 1;
    for (int d = 0; d < p.ndim - 1; d++) rows *= p.shape[d];
    int64_t n = p.shape[p.ndim - 1];
    int64_t total = rows * n;
    if (total < EM_PARALLEL_MIN) {
        run_rows(&p, 0, rows, row, ctx);
    } else if (rows == 1) {
        /* One long row: split it into chunks, one per thread. */
#pragma omp parallel
        {
            int nt = 1, t = 0;
#ifdef _OPENMP
            extern int omp_get_num_threads(void), omp_get_thread_num(void);
            nt = omp_get_num_threads();
            t = omp_get_thread_num();
#endif
            int64_t chunk = (n + nt - 1) / nt;
            chunk = (chunk + 15) / 16 * 16;
            int64_t b = chunk * t, e = b + chunk < n ? b + chunk : n;
            if (b < e) {
                float *ptr[EM_ITER_MAX_OPS];
                int64_t s[EM_ITER_MAX_OPS];
                for (int k = 0; k < p.nops; k++) {
                    s[k] = p.strides[k][0];
                    ptr[k] = p.base[k] + b * s[k];
                }
                row(e - b, ptr, s, ctx);
            }
        }
    } else {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) run_rows(&p, r, r + 1, row, ctx);
    }
}
