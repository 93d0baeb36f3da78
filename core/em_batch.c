/* em_batch.c — batch assembly for data loaders: randperm, the row gather
 * (one memcpy per row, rows in parallel) and the random horizontal flip. */
#include "em_batch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "em_autograd.h"
#include "em_rng.h"

em_tensor *em_randperm(int64_t n) {
    if (n < 0 || n > EM_BATCH_MAX_ROWS) {
        em_error_set("randperm: n = %lld, expected 0 <= n <= %lld", (long long)n,
                     (long long)EM_BATCH_MAX_ROWS);
        return NULL;
    }
    int64_t shape[1] = {n};
    em_tensor *out = em_tensor_empty(1, shape);
    if (!out) return NULL;
    float *p = out->storage->data;
    for (int64_t i = 0; i < n; i++) p[i] = (float)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)em_rng_below((uint64_t)i + 1);
        float tmp = p[i];
        p[i] = p[j];
        p[j] = tmp;
    }
    return out;
}

/* Refuses sources that are on the autograd tape: a gather here is not recorded. */
static int check_not_differentiable(const char *fn, const em_tensor *t) {
    if (em_grad_enabled() && t->requires_grad)
        return em_error_set("%s: the source requires grad; batches are data (use index_select "
                            "for a differentiable gather, or run under no_grad)", fn);
    return EM_OK;
}

em_tensor *em_gather_rows(em_tensor *src, em_tensor *index, int64_t start, int64_t count) {
    char a[EM_SHAPE_STR_MAX], b[EM_SHAPE_STR_MAX];
    if (!src || !index) {
        em_error_set("gather_rows: expected a source and an index tensor");
        return NULL;
    }
    if (src->ndim < 1) {
        em_error_set("gather_rows: source %s must have at least 1 dim (rows first)",
                     em_shape_str(a, sizeof a, src->ndim, src->shape));
        return NULL;
    }
    if (index->ndim != 1) {
        em_error_set("gather_rows: index %s must be 1-D",
                     em_shape_str(a, sizeof a, index->ndim, index->shape));
        return NULL;
    }
    if (start < 0 || count < 0 || start > index->shape[0] - count) {
        em_error_set("gather_rows: rows %lld..%lld are outside the index %s", (long long)start,
                     (long long)(start + count - 1),
                     em_shape_str(a, sizeof a, index->ndim, index->shape));
        return NULL;
    }
    if (check_not_differentiable("gather_rows", src)) return NULL;
    int64_t nrows = src->shape[0];
    const float *idx = em_tensor_data(index);
    int64_t istride = index->strides[0];
    for (int64_t i = 0; i < count; i++) {
        float v = idx[(start + i) * istride];
        if (!(v >= 0.0f && v < (float)nrows && v == floorf(v))) {
            em_error_set("gather_rows: index entry %lld is %g, expected a row number in 0..%lld "
                         "of the source %s", (long long)(start + i + 1), v, (long long)nrows - 1,
                         em_shape_str(b, sizeof b, src->ndim, src->shape));
            return NULL;
        }
    }
    em_tensor *csrc = em_contiguous(src);
    if (!csrc) return NULL;
    int64_t shape[EM_MAX_DIMS];
    memcpy(shape, src->shape, sizeof shape);
    shape[0] = count;
    em_tensor *out = em_tensor_empty(src->ndim, shape);
    if (!out) {
        em_tensor_release(csrc);
        return NULL;
    }
    int64_t row = nrows ? csrc->numel / nrows : 0;
    const float *s = em_tensor_data(csrc);
    float *o = out->storage->data;
#pragma omp parallel for if (count * row > (1 << 20)) schedule(static)
    for (int64_t i = 0; i < count; i++) {
        int64_t r = (int64_t)idx[(start + i) * istride];
        memcpy(o + i * row, s + r * row, (size_t)row * sizeof(float));
    }
    em_tensor_release(csrc);
    return out;
}

em_tensor *em_random_hflip(em_tensor *x, double p) {
    char a[EM_SHAPE_STR_MAX];
    if (!x) return NULL;
    if (x->ndim < 2) {
        em_error_set("random_hflip: input %s must have at least 2 dims [N x ... x W]",
                     em_shape_str(a, sizeof a, x->ndim, x->shape));
        return NULL;
    }
    if (!(p >= 0.0 && p <= 1.0)) {
        em_error_set("random_hflip: probability %g must be in [0, 1]", p);
        return NULL;
    }
    if (check_not_differentiable("random_hflip", x)) return NULL;
    int64_t n = x->shape[0];
    unsigned char *flip = malloc((size_t)(n ? n : 1));
    if (!flip) {
        em_error_set("random_hflip: out of memory");
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) flip[i] = em_rng_uniform() < p;
    em_tensor *out = em_clone(x);
    if (out && out->grad_fn) { /* em_clone records only when x needs grad, refused above */
        em_tensor_release(out);
        out = NULL;
        em_error_set("random_hflip: unexpected autograd record");
    }
    if (!out) {
        free(flip);
        return NULL;
    }
    int64_t w = x->shape[x->ndim - 1];
    int64_t per_sample = n ? out->numel / n : 0;
    int64_t lines = w ? per_sample / w : 0;
    float *o = em_tensor_data(out);
#pragma omp parallel for if (out->numel > 65536) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        if (!flip[i]) continue;
        for (int64_t l = 0; l < lines; l++) {
            float *line = o + i * per_sample + l * w;
            for (int64_t j = 0, k = w - 1; j < k; j++, k--) {
                float tmp = line[j];
                line[j] = line[k];
                line[k] = tmp;
            }
        }
    }
    free(flip);
    return out;
}
