/* em_tensor.c — tensor headers: lifetime, creation, inspection and views. */
#include "em_tensor.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "em_autograd.h"
#include "em_storage.h"

/* ---- lifetime -------------------------------------------------------- */

/* A header over `storage` (retained) with the given shape and strides. */
static em_tensor *header_new(em_storage *storage, int ndim, const int64_t *shape,
                             const int64_t *strides, int64_t offset) {
    em_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        em_error_set("out of memory: cannot allocate a tensor header");
        return NULL;
    }
    t->refcount = 1;
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->strides[i] = strides[i];
        t->numel *= shape[i];
    }
    t->offset = offset;
    t->storage = storage;
    em_storage_retain(storage);
    return t;
}

em_tensor *em_tensor_retain(em_tensor *t) {
    if (t) t->refcount++;
    return t;
}

void em_tensor_release(em_tensor *t) {
    if (!t || --t->refcount > 0) return;
    em_storage_release(t->storage);
    em_tensor_release(t->grad);
    em_node_release(t->grad_fn);
    free(t);
}

size_t em_tensor_storage_bytes(const em_tensor *t) { return t->storage->capacity; }

/* ---- creation -------------------------------------------------------- */

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

/* Validates a shape: 0..8 dims, sizes >= 0, product without overflow. */
static int check_shape(const char *fn, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > EM_MAX_DIMS)
        return em_error_set("%s: a tensor has at most %d dims, got %d", fn, EM_MAX_DIMS, ndim);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return em_error_set("%s: size of dim %d must be >= 0, got %lld", fn, i + 1,
                                (long long)shape[i]);
        if (shape[i] > 0 && n > INT64_MAX / 8 / shape[i])
            return em_error_set("out of memory: %s: the shape overflows", fn);
        n *= shape[i];
    }
    return EM_OK;
}

em_tensor *em_tensor_empty(int ndim, const int64_t *shape) {
    if (check_shape("empty", ndim, shape)) return NULL;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= shape[i];
    em_storage *s = em_storage_new(numel);
    if (!s) return NULL;
    int64_t strides[EM_MAX_DIMS];
    contiguous_strides(ndim, shape, strides);
    em_tensor *t = header_new(s, ndim, shape, strides, 0);
    em_storage_release(s);
    return t;
}

em_tensor *em_tensor_full(int ndim, const int64_t *shape, float value) {
    em_tensor *t = em_tensor_empty(ndim, shape);
    if (!t) return NULL;
    float *d = t->storage->data;
    int64_t n = t->numel;
    if (value == 0.0f) {
        /* a large block is cleared by every thread, a stretch each: perf on B3
         * found the gradients' zeros (12.8 MB a step) cleared by one thread while
         * the other waited */
#pragma omp parallel if (n > 262144)
        {
            int64_t nt = omp_get_num_threads(), t_id = omp_get_thread_num();
            int64_t lo = n * t_id / nt, hi = n * (t_id + 1) / nt;
            memset(d + lo, 0, (size_t)(hi - lo) * sizeof(float));
        }
    } else {
#pragma omp parallel for if (n > 262144) schedule(static)
        for (int64_t i = 0; i < n; i++) d[i] = value;
    }
    return t;
}

em_tensor *em_tensor_zeros(int ndim, const int64_t *shape) {
    return em_tensor_full(ndim, shape, 0.0f);
}

em_tensor *em_tensor_ones(int ndim, const int64_t *shape) {
    return em_tensor_full(ndim, shape, 1.0f);
}

em_tensor *em_tensor_from_data(int ndim, const int64_t *shape, const float *data) {
    em_tensor *t = em_tensor_empty(ndim, shape);
    if (t && t->numel) memcpy(t->storage->data, data, (size_t)t->numel * sizeof(float));
    return t;
}

em_tensor *em_tensor_scalar(float value) { return em_tensor_full(0, NULL, value); }

em_tensor *em_tensor_arange(double start, double end, double step) {
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step)) {
        em_error_set("arange: step must be non-zero and bounds finite (start %g, end %g, step %g)",
                     start, end, step);
        return NULL;
    }
    double count = ceil((end - start) / step);
    if (count < 0) count = 0;
    if (count > 1e12) {
        em_error_set("out of memory: arange: %g elements", count);
        return NULL;
    }
    int64_t n = (int64_t)count;
    em_tensor *t = em_tensor_empty(1, &n);
    if (!t) return NULL;
    for (int64_t i = 0; i < n; i++) t->storage->data[i] = (float)(start + (double)i * step);
    return t;
}

em_tensor *em_tensor_linspace(double start, double end, int64_t steps) {
    if (steps < 0) {
        em_error_set("linspace: steps must be >= 0, got %lld", (long long)steps);
        return NULL;
    }
    em_tensor *t = em_tensor_empty(1, &steps);
    if (!t) return NULL;
    for (int64_t i = 0; i < steps; i++)
        t->storage->data[i] = steps == 1 ? (float)start
                                         : (float)(start + (end - start) * (double)i / (double)(steps - 1));
    return t;
}

em_tensor *em_tensor_eye(int64_t rows, int64_t cols) {
    int64_t shape[2] = {rows, cols};
    em_tensor *t = em_tensor_zeros(2, shape);
    if (!t) return NULL;
    for (int64_t i = 0; i < rows && i < cols; i++) t->storage->data[i * cols + i] = 1.0f;
    return t;
}

em_tensor *em_tensor_empty_like(const em_tensor *t) { return em_tensor_empty(t->ndim, t->shape); }
em_tensor *em_tensor_zeros_like(const em_tensor *t) { return em_tensor_zeros(t->ndim, t->shape); }

/* ---- inspection ------------------------------------------------------ */

bool em_tensor_is_contiguous(const em_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 1) continue;
        if (t->strides[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

int em_normalize_dim(const char *fn, int dim, int ndim) {
    int d = dim < 0 ? dim + ndim : dim;
    if (d < 0 || d >= ndim || ndim == 0) {
        em_error_set("%s: dim %d out of range for a tensor of %d dims (expected %d..%d)", fn,
                     dim >= 0 ? dim + 1 : dim, ndim, ndim ? -ndim : 0, ndim);
        return -1;
    }
    return d;
}

bool em_same_shape(const em_tensor *a, const em_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

void em_tensor_read(const em_tensor *t, float *out) {
    if (t->numel == 0) return;
    const float *base = em_tensor_data(t);
    if (em_tensor_is_contiguous(t)) {
        memcpy(out, base, (size_t)t->numel * sizeof(float));
        return;
    }
    int64_t idx[EM_MAX_DIMS] = {0};
    int64_t off = 0;
    for (int64_t k = 0; k < t->numel; k++) {
        out[k] = base[off];
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) {
                off += t->strides[d];
                break;
            }
            off -= t->strides[d] * (t->shape[d] - 1);
            idx[d] = 0;
        }
    }
}

float em_tensor_get(const em_tensor *t, const int64_t *index) {
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++) off += index[d] * t->strides[d];
    return em_tensor_data(t)[off];
}

/* ---- views ----------------------------------------------------------- */

/* A view of t with new geometry, recorded as `op` when t needs grad. */
static em_tensor *make_view(em_tensor *t, int ndim, const int64_t *shape,
                            const int64_t *strides, int64_t offset, em_op_id op,
                            em_node **node_out) {
    if (node_out) *node_out = NULL;
    em_tensor *v = header_new(t->storage, ndim, shape, strides, offset);
    if (!v) return NULL;
    em_node *node = em_record(op, v, 1, &t);
    if (node_out) *node_out = node;
    return v;
}

/* Resolves a -1 in a requested shape against numel. */
static int infer_shape(const char *fn, const em_tensor *t, int ndim, const int64_t *in,
                       int64_t *out) {
    char a[EM_SHAPE_STR_MAX], b[EM_SHAPE_STR_MAX];
    if (ndim < 0 || ndim > EM_MAX_DIMS)
        return em_error_set("%s: a tensor has at most %d dims, got %d", fn, EM_MAX_DIMS, ndim);
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        out[i] = in[i];
        if (in[i] == -1) {
            if (infer >= 0) return em_error_set("%s: only one size may be -1", fn);
            infer = i;
        } else if (in[i] < 0) {
            return em_error_set("%s: size of dim %d must be >= 0 or -1, got %lld", fn, i + 1,
                                (long long)in[i]);
        } else {
            known *= in[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || t->numel % known != 0)
            return em_error_set("%s: cannot infer the -1 size in %s from %lld elements of %s", fn,
                                em_shape_str(a, sizeof a, ndim, in), (long long)t->numel,
                                em_shape_str(b, sizeof b, t->ndim, t->shape));
        out[infer] = t->numel / known;
        known *= out[infer];
    }
    if (known != t->numel)
        return em_error_set("%s: shape %s (%lld elements) does not fit %s (%lld elements)", fn,
                            em_shape_str(a, sizeof a, ndim, out), (long long)known,
                            em_shape_str(b, sizeof b, t->ndim, t->shape), (long long)t->numel);
    return EM_OK;
}

/* Strides that view t with `shape` without copying, if possible (as PyTorch's
 * computeStride): groups of old dims that are contiguous among themselves. */
static bool view_strides(const em_tensor *t, int ndim, const int64_t *shape, int64_t *strides) {
    if (t->numel == 0 || em_tensor_is_contiguous(t)) {
        contiguous_strides(ndim, shape, strides);
        return true;
    }
    int view_d = ndim - 1;
    int64_t chunk_base_stride = t->ndim ? t->strides[t->ndim - 1] : 1;
    int64_t tensor_numel = 1, view_numel = 1;
    for (int tensor_d = t->ndim - 1; tensor_d >= 0; tensor_d--) {
        tensor_numel *= t->shape[tensor_d];
        if (tensor_d == 0 || (t->shape[tensor_d - 1] != 1 &&
                              t->strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                strides[view_d] = view_numel * chunk_base_stride;
                view_numel *= shape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return false;
            if (tensor_d > 0) {
                chunk_base_stride = t->strides[tensor_d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

em_tensor *em_view(em_tensor *t, int ndim, const int64_t *shape) {
    int64_t sh[EM_MAX_DIMS], st[EM_MAX_DIMS];
    if (infer_shape("view", t, ndim, shape, sh)) return NULL;
    if (!view_strides(t, ndim, sh, st)) {
        char a[EM_SHAPE_STR_MAX];
        em_error_set("view: a non-contiguous tensor %s cannot be viewed as %s; use reshape or contiguous()",
                     em_shape_str(a, sizeof a, t->ndim, t->shape),
                     em_shape_str((char[EM_SHAPE_STR_MAX]){0}, EM_SHAPE_STR_MAX, ndim, sh));
        return NULL;
    }
    return make_view(t, ndim, sh, st, t->offset, EM_OP_view, NULL);
}

em_tensor *em_reshape(em_tensor *t, int ndim, const int64_t *shape) {
    int64_t sh[EM_MAX_DIMS], st[EM_MAX_DIMS];
    if (infer_shape("reshape", t, ndim, shape, sh)) return NULL;
    if (view_strides(t, ndim, sh, st)) return make_view(t, ndim, sh, st, t->offset, EM_OP_view, NULL);
    em_tensor *c = em_contiguous(t);
    if (!c) return NULL;
    em_tensor *v = em_view(c, ndim, sh);
    em_tensor_release(c);
    return v;
}

em_tensor *em_permute(em_tensor *t, const int *dims) {
    int64_t sh[EM_MAX_DIMS], st[EM_MAX_DIMS];
    bool seen[EM_MAX_DIMS] = {false};
    int norm[EM_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) {
        int d = em_normalize_dim("permute", dims[i], t->ndim);
        if (d < 0) return NULL;
        if (seen[d]) {
            em_error_set("permute: dim %d appears twice", d + 1);
            return NULL;
        }
        seen[d] = true;
        norm[i] = d;
        sh[i] = t->shape[d];
        st[i] = t->strides[d];
    }
    em_node *node;
    em_tensor *v = make_view(t, t->ndim, sh, st, t->offset, EM_OP_permute, &node);
    if (node)
        for (int i = 0; i < t->ndim; i++) node->iarg[i] = norm[i];
    return v;
}

em_tensor *em_transpose(em_tensor *t, int dim0, int dim1) {
    int d0 = em_normalize_dim("transpose", dim0, t->ndim);
    int d1 = d0 < 0 ? -1 : em_normalize_dim("transpose", dim1, t->ndim);
    if (d0 < 0 || d1 < 0) return NULL;
    int perm[EM_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return em_permute(t, perm);
}

em_tensor *em_narrow(em_tensor *t, int dim, int64_t start, int64_t length) {
    int d = em_normalize_dim("narrow", dim, t->ndim);
    if (d < 0) return NULL;
    if (start < 0 || length < 0 || start + length > t->shape[d]) {
        em_error_set("narrow: range %lld..%lld is out of bounds for dim %d of size %lld",
                     (long long)start + 1, (long long)(start + length), d + 1,
                     (long long)t->shape[d]);
        return NULL;
    }
    int64_t sh[EM_MAX_DIMS];
    memcpy(sh, t->shape, sizeof sh);
    sh[d] = length;
    em_node *node;
    em_tensor *v = make_view(t, t->ndim, sh, t->strides, t->offset + start * t->strides[d],
                             EM_OP_narrow, &node);
    if (node) {
        node->iarg[0] = d;
        node->iarg[1] = start;
    }
    return v;
}

em_tensor *em_select(em_tensor *t, int dim, int64_t index) {
    int d = em_normalize_dim("select", dim, t->ndim);
    if (d < 0) return NULL;
    if (index < 0 || index >= t->shape[d]) {
        em_error_set("select: index %lld out of range for dim %d of size %lld (expected 1..%lld)",
                     (long long)index + 1, d + 1, (long long)t->shape[d], (long long)t->shape[d]);
        return NULL;
    }
    int64_t sh[EM_MAX_DIMS], st[EM_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (i == d) continue;
        sh[k] = t->shape[i];
        st[k++] = t->strides[i];
    }
    em_node *node;
    em_tensor *v = make_view(t, t->ndim - 1, sh, st, t->offset + index * t->strides[d],
                             EM_OP_select, &node);
    if (node) {
        node->iarg[0] = d;
        node->iarg[1] = index;
    }
    return v;
}

em_tensor *em_expand(em_tensor *t, int ndim, const int64_t *shape) {
    char a[EM_SHAPE_STR_MAX], b[EM_SHAPE_STR_MAX];
    if (ndim < t->ndim || ndim > EM_MAX_DIMS) {
        em_error_set("expand: cannot expand %s to %d dims",
                     em_shape_str(a, sizeof a, t->ndim, t->shape), ndim);
        return NULL;
    }
    int64_t sh[EM_MAX_DIMS], st[EM_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int j = i - lead;
        int64_t want = shape[i];
        if (j < 0) {
            if (want < 0) {
                em_error_set("expand: -1 is not allowed for a new leading dim %d", i + 1);
                return NULL;
            }
            sh[i] = want;
            st[i] = 0;
        } else if (want == -1 || want == t->shape[j]) {
            sh[i] = t->shape[j];
            st[i] = t->strides[j];
        } else if (t->shape[j] == 1 && want >= 0) {
            sh[i] = want;
            st[i] = 0;
        } else {
            em_error_set("expand: %s cannot be expanded to %s (dim %d has size %lld, not 1)",
                         em_shape_str(a, sizeof a, t->ndim, t->shape),
                         em_shape_str(b, sizeof b, ndim, shape), i + 1, (long long)t->shape[j]);
            return NULL;
        }
    }
    return make_view(t, ndim, sh, st, t->offset, EM_OP_expand, NULL);
}

em_tensor *em_squeeze(em_tensor *t, int dim) {
    int d = em_normalize_dim("squeeze", dim, t->ndim);
    if (d < 0) return NULL;
    if (t->shape[d] != 1) {
        em_error_set("squeeze: dim %d has size %lld, expected 1", d + 1, (long long)t->shape[d]);
        return NULL;
    }
    int64_t sh[EM_MAX_DIMS], st[EM_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++)
        if (i != d) {
            sh[k] = t->shape[i];
            st[k++] = t->strides[i];
        }
    return make_view(t, k, sh, st, t->offset, EM_OP_view, NULL);
}

em_tensor *em_squeeze_all(em_tensor *t) {
    int64_t sh[EM_MAX_DIMS], st[EM_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] != 1) {
            sh[k] = t->shape[i];
            st[k++] = t->strides[i];
        }
    return make_view(t, k, sh, st, t->offset, EM_OP_view, NULL);
}

em_tensor *em_unsqueeze(em_tensor *t, int dim) {
    int d = dim < 0 ? dim + t->ndim + 1 : dim;
    if (d < 0 || d > t->ndim || t->ndim >= EM_MAX_DIMS) {
        em_error_set("unsqueeze: dim %d out of range for a tensor of %d dims (expected %d..%d)",
                     dim >= 0 ? dim + 1 : dim, t->ndim, -(t->ndim + 1), t->ndim + 1);
        return NULL;
    }
    int64_t sh[EM_MAX_DIMS], st[EM_MAX_DIMS];
    int k = 0;
    for (int i = 0; i <= t->ndim; i++) {
        if (i == d) {
            sh[k] = 1;
            st[k++] = (i < t->ndim) ? t->strides[i] * t->shape[i] : 1;
        }
        if (i < t->ndim) {
            sh[k] = t->shape[i];
            st[k++] = t->strides[i];
        }
    }
    return make_view(t, t->ndim + 1, sh, st, t->offset, EM_OP_view, NULL);
}

/* Copies t's elements into a new contiguous tensor (no autograd record). */
static em_tensor *copy_contiguous(em_tensor *t) {
    em_tensor *c = em_tensor_empty(t->ndim, t->shape);
    if (!c) return NULL;
    if (em_copy_(c, t) != EM_OK) {
        em_tensor_release(c);
        return NULL;
    }
    return c;
}

em_tensor *em_clone(em_tensor *t) {
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    em_tensor *c = copy_contiguous(t);
    em_set_grad_enabled(was);
    if (c) em_record(EM_OP_clone, c, 1, &t);
    return c;
}

em_tensor *em_contiguous(em_tensor *t) {
    if (em_tensor_is_contiguous(t)) return em_tensor_retain(t);
    return em_clone(t);
}

em_tensor *em_detach(em_tensor *t) {
    return header_new(t->storage, t->ndim, t->shape, t->strides, t->offset);
}

/* ---- backward of the views ------------------------------------------- */

int em_backward_view(em_node *n, em_tensor *g, em_tensor **gin) {
    gin[0] = em_reshape(g, n->edges[0].ndim, n->edges[0].shape);
    return gin[0] ? EM_OK : EM_ERR;
}

int em_backward_permute(em_node *n, em_tensor *g, em_tensor **gin) {
    int inverse[EM_MAX_DIMS];
    for (int i = 0; i < g->ndim; i++) inverse[n->iarg[i]] = i;
    gin[0] = em_permute(g, inverse);
    return gin[0] ? EM_OK : EM_ERR;
}

/* out = zeros(shape) with g placed at [start, start + g.shape[dim]) along dim. */
static em_tensor *pad_narrow(em_tensor *g, int dim, int64_t start, int ndim,
                             const int64_t *shape) {
    em_tensor *out = em_tensor_zeros(ndim, shape);
    if (!out) return NULL;
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    em_tensor *region = em_narrow(out, dim, start, g->shape[dim]);
    int rc = region ? em_copy_(region, g) : EM_ERR;
    em_tensor_release(region);
    em_set_grad_enabled(was);
    if (rc) {
        em_tensor_release(out);
        return NULL;
    }
    em_node *node = em_record(EM_OP_pad_narrow, out, 1, &g);
    if (node) {
        node->iarg[0] = dim;
        node->iarg[1] = start;
    }
    return out;
}

int em_backward_narrow(em_node *n, em_tensor *g, em_tensor **gin) {
    gin[0] = pad_narrow(g, (int)n->iarg[0], n->iarg[1], n->edges[0].ndim, n->edges[0].shape);
    return gin[0] ? EM_OK : EM_ERR;
}

int em_backward_pad_narrow(em_node *n, em_tensor *g, em_tensor **gin) {
    gin[0] = em_narrow(g, (int)n->iarg[0], n->iarg[1], n->edges[0].shape[n->iarg[0]]);
    return gin[0] ? EM_OK : EM_ERR;
}

int em_backward_select(em_node *n, em_tensor *g, em_tensor **gin) {
    int d = (int)n->iarg[0];
    em_tensor *u = em_unsqueeze(g, d);
    if (!u) return EM_ERR;
    gin[0] = pad_narrow(u, d, n->iarg[1], n->edges[0].ndim, n->edges[0].shape);
    em_tensor_release(u);
    return gin[0] ? EM_OK : EM_ERR;
}

int em_backward_expand(em_node *n, em_tensor *g, em_tensor **gin) {
    gin[0] = em_sum_to_shape(g, n->edges[0].ndim, n->edges[0].shape);
    return gin[0] ? EM_OK : EM_ERR;
}

int em_backward_clone(em_node *n, em_tensor *g, em_tensor **gin) {
    gin[0] = em_tensor_retain(g);
    return EM_OK;
}
