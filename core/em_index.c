/* em_index.c — cat, stack, index_select, gather, scatter_add, masked_fill and
 * their gradients. Index tensors hold 0-based indices as floats; every index
 * is checked against the size it addresses. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "em_autograd.h"

/* ---- cat / stack ----------------------------------------------------- */

em_tensor *em_cat(int n, em_tensor *const *ts, int dim) {
    char a[EM_SHAPE_STR_MAX], b[EM_SHAPE_STR_MAX];
    if (n <= 0) {
        em_error_set("cat: expected at least one tensor");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!ts[i]) return NULL;
    const em_tensor *first = ts[0];
    int d = em_normalize_dim("cat", dim, first->ndim);
    if (d < 0) return NULL;
    int64_t shape[EM_MAX_DIMS];
    memcpy(shape, first->shape, sizeof shape);
    shape[d] = 0;
    for (int i = 0; i < n; i++) {
        const em_tensor *t = ts[i];
        bool ok = t->ndim == first->ndim;
        for (int k = 0; ok && k < t->ndim; k++)
            if (k != d && t->shape[k] != first->shape[k]) ok = false;
        if (!ok) {
            em_error_set("cat: tensor %d has shape %s, which does not match %s except in dim %d",
                         i + 1, em_shape_str(a, sizeof a, t->ndim, t->shape),
                         em_shape_str(b, sizeof b, first->ndim, first->shape), d + 1);
            return NULL;
        }
        shape[d] += t->shape[d];
    }
    em_tensor *out = em_tensor_empty(first->ndim, shape);
    if (!out) return NULL;
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    int64_t pos = 0;
    int rc = EM_OK;
    for (int i = 0; i < n && rc == EM_OK; i++) {
        if (ts[i]->shape[d] == 0) continue;
        em_tensor *region = em_narrow(out, d, pos, ts[i]->shape[d]);
        rc = region ? em_copy_(region, ts[i]) : EM_ERR;
        em_tensor_release(region);
        pos += ts[i]->shape[d];
    }
    em_set_grad_enabled(was);
    if (rc) {
        em_tensor_release(out);
        return NULL;
    }
    em_node *node = em_record(EM_OP_cat, out, n, ts);
    if (node) node->iarg[0] = d;
    return out;
}

int em_backward_cat(em_node *n, em_tensor *g, em_tensor **gin) {
    int d = (int)n->iarg[0];
    int64_t pos = 0;
    for (int i = 0; i < n->n_edges; i++) {
        int64_t len = n->edges[i].shape[d];
        if (em_edge_needs_grad(n, i)) {
            gin[i] = em_narrow(g, d, pos, len);
            if (!gin[i]) return EM_ERR;
        }
        pos += len;
    }
    return EM_OK;
}

em_tensor *em_stack(int n, em_tensor *const *ts, int dim) {
    char a[EM_SHAPE_STR_MAX], b[EM_SHAPE_STR_MAX];
    if (n <= 0) {
        em_error_set("stack: expected at least one tensor");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (!ts[i]) return NULL;
        if (!em_same_shape(ts[i], ts[0])) {
            em_error_set("stack: tensor %d has shape %s, expected %s like the first", i + 1,
                         em_shape_str(a, sizeof a, ts[i]->ndim, ts[i]->shape),
                         em_shape_str(b, sizeof b, ts[0]->ndim, ts[0]->shape));
            return NULL;
        }
    }
    em_tensor **u = calloc((size_t)n, sizeof *u);
    if (!u) {
        em_error_set("stack: out of memory");
        return NULL;
    }
    em_tensor *out = NULL;
    int i;
    for (i = 0; i < n; i++)
        if (!(u[i] = em_unsqueeze(ts[i], dim))) break;
    if (i == n) out = em_cat(n, u, dim < 0 ? dim : dim);
    for (int k = 0; k < n; k++) em_tensor_release(u[k]);
    free(u);
    return out;
}

/* ---- index checks ---------------------------------------------------- */

/* Validates that every index is an integer in [0, size); fn/what name it. */
static int check_indices(const char *fn, const em_tensor *index, int64_t size) {
    int64_t n = index->numel;
    float *buf = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!buf) return em_error_set("%s: out of memory", fn);
    em_tensor_read(index, buf);
    for (int64_t i = 0; i < n; i++) {
        float v = buf[i];
        if (!(v >= 0 && v < (float)size) || v != floorf(v)) {
            free(buf);
            return em_error_set("%s: index %g out of range (expected 1..%lld)", fn, (double)v + 1,
                                (long long)size);
        }
    }
    free(buf);
    return EM_OK;
}

/* ---- index_select / index_add ---------------------------------------- */

em_tensor *em_index_select(em_tensor *a, int dim, em_tensor *index) {
    if (!a || !index) return NULL;
    int d = em_normalize_dim("index_select", dim, a->ndim);
    if (d < 0) return NULL;
    if (index->ndim > 1) {
        em_error_set("index_select: index must be 1-D, got %d dims", index->ndim);
        return NULL;
    }
    if (check_indices("index_select", index, a->shape[d])) return NULL;
    int64_t shape[EM_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[d] = index->numel;
    em_tensor *out = em_tensor_empty(a->ndim, shape);
    if (!out) return NULL;
    float *idx = malloc((size_t)(index->numel ? index->numel : 1) * sizeof(float));
    em_tensor_read(index, idx);
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    int rc = EM_OK;
    for (int64_t i = 0; i < index->numel && rc == EM_OK; i++) {
        em_tensor *src = em_select(a, d, (int64_t)idx[i]);
        em_tensor *dst = em_select(out, d, i);
        rc = (src && dst) ? em_copy_(dst, src) : EM_ERR;
        em_tensor_release(src);
        em_tensor_release(dst);
    }
    em_set_grad_enabled(was);
    free(idx);
    if (rc) {
        em_tensor_release(out);
        return NULL;
    }
    em_tensor *in[2] = {a, NULL};
    em_node *node = em_record(EM_OP_index_select, out, 2, in);
    if (node) {
        node->iarg[0] = d;
        em_node_save(node, index);
    }
    return out;
}

/* zeros(shape) with the slices of src added at `index` along dim d. */
static em_tensor *index_add(em_tensor *src, int d, em_tensor *index, int ndim,
                            const int64_t *shape) {
    if (!src) return NULL;
    em_tensor *out = em_tensor_zeros(ndim, shape);
    if (!out) return NULL;
    float *idx = malloc((size_t)(index->numel ? index->numel : 1) * sizeof(float));
    em_tensor_read(index, idx);
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    int rc = EM_OK;
    for (int64_t i = 0; i < index->numel && rc == EM_OK; i++) {
        em_tensor *s = em_select(src, d, i);
        em_tensor *dst = em_select(out, d, (int64_t)idx[i]);
        rc = (s && dst) ? em_binary_(EM_BIN_ADD, dst, s) : EM_ERR;
        em_tensor_release(s);
        em_tensor_release(dst);
    }
    em_set_grad_enabled(was);
    free(idx);
    if (rc) {
        em_tensor_release(out);
        return NULL;
    }
    em_tensor *in[2] = {src, NULL};
    em_node *node = em_record(EM_OP_index_add, out, 2, in);
    if (node) {
        node->iarg[0] = d;
        em_node_save(node, index);
    }
    return out;
}

int em_backward_index_select(em_node *n, em_tensor *g, em_tensor **gin) {
    gin[0] = index_add(g, (int)n->iarg[0], n->saved[0], n->edges[0].ndim, n->edges[0].shape);
    return gin[0] ? EM_OK : EM_ERR;
}

int em_backward_index_add(em_node *n, em_tensor *g, em_tensor **gin) {
    gin[0] = em_index_select(g, (int)n->iarg[0], n->saved[0]);
    return gin[0] ? EM_OK : EM_ERR;
}

/* ---- gather / scatter_add -------------------------------------------- */

/* Checks index's shape against a's for gather/scatter (all dims but d no
 * larger than a's) and its values against a's size along d. */
static int check_gather(const char *fn, const em_tensor *a, int d, const em_tensor *index) {
    char sa[EM_SHAPE_STR_MAX], si[EM_SHAPE_STR_MAX];
    if (index->ndim != a->ndim)
        return em_error_set("%s: index has %d dims, expected %d like the input", fn, index->ndim,
                            a->ndim);
    for (int k = 0; k < a->ndim; k++)
        if (k != d && index->shape[k] > a->shape[k])
            return em_error_set("%s: index %s is larger than the input %s in dim %d", fn,
                                em_shape_str(si, sizeof si, index->ndim, index->shape),
                                em_shape_str(sa, sizeof sa, a->ndim, a->shape), k + 1);
    return check_indices(fn, index, a->shape[d]);
}

/* Walks every element of index (row-major), calling visit with the offset
 * into `base` tensor b (strides of b, with index value on dim d) and the
 * offset into `other` (same position, strides of other). */
static void gather_walk(const em_tensor *index, int d, const em_tensor *b, const em_tensor *other,
                        float *bdata, float *odata, bool scatter) {
    int64_t pos[EM_MAX_DIMS] = {0};
    const float *id = em_tensor_data(index);
    for (int64_t e = 0; e < index->numel; e++) {
        int64_t ioff = 0, boff = 0, ooff = 0;
        for (int k = 0; k < index->ndim; k++) {
            ioff += pos[k] * index->strides[k];
            ooff += pos[k] * other->strides[k];
            if (k != d) boff += pos[k] * b->strides[k];
        }
        boff += (int64_t)id[ioff] * b->strides[d];
        if (scatter) bdata[boff] += odata[ooff];
        else odata[ooff] = bdata[boff];
        for (int k = index->ndim - 1; k >= 0; k--) {
            if (++pos[k] < index->shape[k]) break;
            pos[k] = 0;
        }
    }
}

em_tensor *em_gather(em_tensor *a, int dim, em_tensor *index) {
    if (!a || !index) return NULL;
    int d = em_normalize_dim("gather", dim, a->ndim);
    if (d < 0 || check_gather("gather", a, d, index)) return NULL;
    em_tensor *out = em_tensor_empty(index->ndim, index->shape);
    if (!out) return NULL;
    gather_walk(index, d, a, out, em_tensor_data(a), out->storage->data, false);
    em_tensor *in[2] = {a, NULL};
    em_node *node = em_record(EM_OP_gather, out, 2, in);
    if (node) {
        node->iarg[0] = d;
        em_node_save(node, index);
    }
    return out;
}

int em_scatter_add_(em_tensor *t, int dim, em_tensor *index, em_tensor *src) {
    char si[EM_SHAPE_STR_MAX], ss[EM_SHAPE_STR_MAX];
    if (em_check_inplace("scatter_add_", t)) return EM_ERR;
    int d = em_normalize_dim("scatter_add", dim, t->ndim);
    if (d < 0 || check_gather("scatter_add", t, d, index)) return EM_ERR;
    if (src->ndim != index->ndim) return em_error_set("scatter_add: src and index dims differ");
    for (int k = 0; k < src->ndim; k++)
        if (src->shape[k] < index->shape[k])
            return em_error_set("scatter_add: src %s is smaller than index %s",
                                em_shape_str(ss, sizeof ss, src->ndim, src->shape),
                                em_shape_str(si, sizeof si, index->ndim, index->shape));
    gather_walk(index, d, t, src, em_tensor_data(t), em_tensor_data(src), true);
    t->storage->version++;
    return EM_OK;
}

em_tensor *em_scatter_add(em_tensor *a, int dim, em_tensor *index, em_tensor *src) {
    if (!a || !index || !src) return NULL;
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    em_tensor *out = em_clone(a);
    int rc = out ? em_scatter_add_(out, dim, index, src) : EM_ERR;
    em_set_grad_enabled(was);
    if (rc) {
        em_tensor_release(out);
        return NULL;
    }
    em_tensor *in[3] = {a, NULL, src};
    em_node *node = em_record(EM_OP_scatter_add, out, 3, in);
    if (node) {
        node->iarg[0] = em_normalize_dim("scatter_add", dim, a->ndim);
        em_node_save(node, index);
    }
    return out;
}

int em_backward_gather(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *z = em_tensor_zeros(n->edges[0].ndim, n->edges[0].shape);
    gin[0] = em_scatter_add(z, (int)n->iarg[0], n->saved[0], g);
    em_tensor_release(z);
    return gin[0] ? EM_OK : EM_ERR;
}

int em_backward_scatter_add(em_node *n, em_tensor *g, em_tensor **gin) {
    if (em_edge_needs_grad(n, 0)) gin[0] = em_tensor_retain(g);
    if (em_edge_needs_grad(n, 2)) {
        gin[2] = em_gather(g, (int)n->iarg[0], n->saved[0]);
        if (!gin[2]) return EM_ERR;
        if (gin[2]->ndim != n->edges[2].ndim ||
            memcmp(gin[2]->shape, n->edges[2].shape, sizeof(int64_t) * (size_t)gin[2]->ndim)) {
            em_tensor_release(gin[2]);
            gin[2] = NULL;
            return em_error_set("gradient of src needs src and index of the same shape");
        }
    }
    return EM_OK;
}

/* ---- masked_fill ----------------------------------------------------- */

em_tensor *em_masked_fill(em_tensor *a, em_tensor *mask, float value) {
    if (!a || !mask) return NULL;
    em_tensor *v = em_tensor_scalar(value);
    em_tensor *out = v ? em_where(mask, v, a) : NULL;
    em_tensor_release(v);
    if (out && !em_same_shape(out, a)) {
        char s1[EM_SHAPE_STR_MAX], s2[EM_SHAPE_STR_MAX];
        em_error_set("masked_fill: mask %s must broadcast to the tensor's shape %s",
                     em_shape_str(s1, sizeof s1, mask->ndim, mask->shape),
                     em_shape_str(s2, sizeof s2, a->ndim, a->shape));
        em_tensor_release(out);
        return NULL;
    }
    return out;
}

int em_masked_fill_(em_tensor *t, em_tensor *mask, float value) {
    if (em_check_inplace("masked_fill_", t)) return EM_ERR;
    bool was = em_grad_enabled();
    em_set_grad_enabled(false);
    em_tensor *filled = em_masked_fill(t, mask, value);
    em_set_grad_enabled(was);
    if (!filled) return EM_ERR;
    int rc = em_copy_(t, filled);
    em_tensor_release(filled);
    return rc;
}
