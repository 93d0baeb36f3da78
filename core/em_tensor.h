/* em_tensor.h — the tensor of ember's core: float32, row-major, up to 8 dims.
 *
 * A tensor is a small refcounted header {shape, strides, offset} over a
 * refcounted storage; views (reshape of contiguous data, permute, transpose,
 * narrow, select, expand, squeeze, unsqueeze) are new headers sharing the storage.
 * Indices and dims are 0-based here (bindings/ convert from Lua's 1-based);
 * a negative dim counts from the end.
 *
 * Ownership: every function returning em_tensor* hands the caller one reference
 * (release it with em_tensor_release) or returns NULL with a message set
 * (em_error.h). Inputs are borrowed, never consumed. */
#ifndef EM_TENSOR_H
#define EM_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "em_error.h"

#define EM_MAX_DIMS 8

typedef struct em_storage {
    int refcount;
    uint32_t version; /* bumped by every in-place write; autograd checks it */
    int64_t numel;    /* floats usable */
    size_t capacity;  /* bytes actually held (bucket size) */
    bool accounted;   /* set by a host once it told its GC about these bytes */
    float *data;
} em_storage;

struct em_node;

typedef struct em_tensor {
    int refcount;
    int ndim;
    int64_t shape[EM_MAX_DIMS];
    int64_t strides[EM_MAX_DIMS]; /* in elements; 0 for an expanded dim */
    int64_t offset;               /* in elements, into storage->data */
    int64_t numel;
    em_storage *storage;
    /* autograd (em_autograd.h) */
    bool requires_grad;      /* a leaf the user marked, or an op result on one */
    bool retains_grad;       /* a non-leaf that keeps .grad after backward */
    struct em_tensor *grad;  /* accumulated gradient (leaves), or NULL */
    struct em_node *grad_fn; /* the op that made it, NULL for a leaf */
    int pending_grads;       /* during a backward walk: gradients still to reach this leaf */
} em_tensor;

/* ---- lifetime -------------------------------------------------------- */
em_tensor *em_tensor_retain(em_tensor *t);
void em_tensor_release(em_tensor *t); /* NULL is fine */
/* Bytes of storage owned by t (what the Lua GC should be told). */
size_t em_tensor_storage_bytes(const em_tensor *t);

/* ---- creation -------------------------------------------------------- */
/* Uninitialised contiguous tensor. Sizes must be >= 0; a total over the
 * allocator's reach fails with an out-of-memory message. */
em_tensor *em_tensor_empty(int ndim, const int64_t *shape);
em_tensor *em_tensor_zeros(int ndim, const int64_t *shape);
em_tensor *em_tensor_ones(int ndim, const int64_t *shape);
em_tensor *em_tensor_full(int ndim, const int64_t *shape, float value);
em_tensor *em_tensor_from_data(int ndim, const int64_t *shape, const float *data);
em_tensor *em_tensor_scalar(float value); /* 0-dim */
em_tensor *em_tensor_arange(double start, double end, double step); /* [start, end) */
em_tensor *em_tensor_linspace(double start, double end, int64_t steps);
em_tensor *em_tensor_eye(int64_t rows, int64_t cols);
/* Same shape as t (contiguous), uninitialised / zero. */
em_tensor *em_tensor_empty_like(const em_tensor *t);
em_tensor *em_tensor_zeros_like(const em_tensor *t);

/* ---- inspection ------------------------------------------------------ */
bool em_tensor_is_contiguous(const em_tensor *t);
/* Pointer to element 0 of t's view (storage->data + offset). */
static inline float *em_tensor_data(const em_tensor *t) {
    return t->storage->data + t->offset;
}
/* Normalises a possibly negative dim against ndim; -1 with a message when out
 * of range. `fn` names the caller for the message. */
int em_normalize_dim(const char *fn, int dim, int ndim);
bool em_same_shape(const em_tensor *a, const em_tensor *b);
/* Copies t's elements, in row-major order, into out (t->numel floats). */
void em_tensor_read(const em_tensor *t, float *out);
/* Value at a multi-index (0-based, in range). */
float em_tensor_get(const em_tensor *t, const int64_t *index);

/* ---- views (share storage; differentiable) ----------------------------- */
/* One size may be -1 (inferred). view fails on non-viewable strides;
 * reshape copies when it must. */
em_tensor *em_view(em_tensor *t, int ndim, const int64_t *shape);
em_tensor *em_reshape(em_tensor *t, int ndim, const int64_t *shape);
em_tensor *em_permute(em_tensor *t, const int *dims);
em_tensor *em_transpose(em_tensor *t, int dim0, int dim1);
em_tensor *em_narrow(em_tensor *t, int dim, int64_t start, int64_t length);
em_tensor *em_select(em_tensor *t, int dim, int64_t index);
em_tensor *em_expand(em_tensor *t, int ndim, const int64_t *shape); /* -1 keeps */
em_tensor *em_squeeze(em_tensor *t, int dim);     /* dim must have size 1 */
em_tensor *em_squeeze_all(em_tensor *t);
em_tensor *em_unsqueeze(em_tensor *t, int dim);   /* dim in [-(ndim+1), ndim] */
em_tensor *em_contiguous(em_tensor *t); /* t itself (retained) when already so */
em_tensor *em_clone(em_tensor *t);
/* A new header over the same storage, cut from the graph (no grad_fn). */
em_tensor *em_detach(em_tensor *t);

/* ---- elementwise ----------------------------------------------------- */
typedef enum {
    EM_UN_NEG, EM_UN_ABS, EM_UN_EXP, EM_UN_LOG, EM_UN_LOG1P, EM_UN_SQRT,
    EM_UN_RSQRT, EM_UN_TANH, EM_UN_SIGMOID, EM_UN_RELU, EM_UN_SIGN,
    EM_UN_SIN, EM_UN_COS, EM_UN_SQUARE, EM_UN_RECIPROCAL, EM_UN_FLOOR,
    EM_UN_CEIL, EM_UN_ROUND, EM_UN_SOFTPLUS, EM_UN_COUNT
} em_unary_op;
const char *em_unary_name(em_unary_op op);
em_tensor *em_unary(em_unary_op op, em_tensor *a);

typedef enum {
    EM_BIN_ADD, EM_BIN_SUB, EM_BIN_MUL, EM_BIN_DIV, EM_BIN_POW, EM_BIN_MAXIMUM,
    EM_BIN_MINIMUM, EM_BIN_EQ, EM_BIN_NE, EM_BIN_LT, EM_BIN_LE, EM_BIN_GT,
    EM_BIN_GE, EM_BIN_COUNT
} em_binary_op;
const char *em_binary_name(em_binary_op op);
/* NumPy/PyTorch broadcasting: shapes aligned from the right, sizes equal or 1. */
em_tensor *em_binary(em_binary_op op, em_tensor *a, em_tensor *b);
/* a op s, and s op a (for s - a, s / a, s ^ a). */
em_tensor *em_binary_scalar(em_binary_op op, em_tensor *a, float s);
em_tensor *em_scalar_binary(em_binary_op op, float s, em_tensor *a);
/* Broadcast shape of a and b into out (returns its ndim, or -1 + message). */
int em_broadcast_shape(const char *fn, const em_tensor *a, const em_tensor *b,
                       int64_t *out);

em_tensor *em_clamp(em_tensor *a, float lo, float hi); /* +-INFINITY for none */
em_tensor *em_where(em_tensor *cond, em_tensor *a, em_tensor *b); /* cond != 0 */
em_tensor *em_leaky_relu(em_tensor *a, float slope);
em_tensor *em_elu(em_tensor *a, float alpha);

/* ---- reductions ------------------------------------------------------ */
typedef enum {
    EM_RED_SUM, EM_RED_MEAN, EM_RED_MAX, EM_RED_MIN, EM_RED_VAR, EM_RED_STD,
    EM_RED_LOGSUMEXP, EM_RED_PROD, EM_RED_COUNT
} em_reduce_op;
const char *em_reduce_name(em_reduce_op op);
/* Reduces over the listed dims (ndims == 0: all dims). var/std use the given
 * correction (1 = unbiased, as PyTorch's default). */
em_tensor *em_reduce(em_reduce_op op, em_tensor *a, int ndims, const int *dims,
                     bool keepdim, int correction);
/* Index (0-based, as float) of the max/min along dim. */
em_tensor *em_argmax(em_tensor *a, int dim, bool keepdim);
em_tensor *em_argmin(em_tensor *a, int dim, bool keepdim);
/* Sums a broadcast gradient back down to `shape` (the autograd helper). */
em_tensor *em_sum_to_shape(em_tensor *g, int ndim, const int64_t *shape);

/* ---- linear algebra -------------------------------------------------- */
/* 1-D/2-D/batched (N-D, batch dims broadcast) matrix product via cblas_sgemm;
 * a transposed operand (unit stride on the row dim) is passed to BLAS as
 * transposed, without a copy. */
em_tensor *em_matmul(em_tensor *a, em_tensor *b);
/* x @ w^T + bias for x [.. x in], w [out x in], bias [out] or NULL. */
em_tensor *em_linear(em_tensor *x, em_tensor *w, em_tensor *bias);

/* ---- joining, splitting, indexing ------------------------------------ */
em_tensor *em_cat(int n, em_tensor *const *ts, int dim);
em_tensor *em_stack(int n, em_tensor *const *ts, int dim);
/* index: 1-D tensor of 0-based indices (stored as floats). */
em_tensor *em_index_select(em_tensor *a, int dim, em_tensor *index);
/* out[i][j] = a[i][index[i][j]] (dim 1), index same ndim as a. */
em_tensor *em_gather(em_tensor *a, int dim, em_tensor *index);
/* a with src added at index along dim (out of place). */
em_tensor *em_scatter_add(em_tensor *a, int dim, em_tensor *index, em_tensor *src);
em_tensor *em_masked_fill(em_tensor *a, em_tensor *mask, float value);

/* ---- in place (not on tensors that need grad; bump storage version) ---- */
int em_fill_(em_tensor *t, float value);
int em_copy_(em_tensor *dst, em_tensor *src); /* src broadcasts to dst */
int em_binary_(em_binary_op op, em_tensor *dst, em_tensor *src); /* dst op= src */
int em_binary_scalar_(em_binary_op op, em_tensor *dst, float s);
int em_unary_(em_unary_op op, em_tensor *t);
int em_clamp_(em_tensor *t, float lo, float hi);
int em_masked_fill_(em_tensor *t, em_tensor *mask, float value);
int em_scatter_add_(em_tensor *t, int dim, em_tensor *index, em_tensor *src);
/* Refuses in-place writes that would corrupt autograd (fn names the caller). */
int em_check_inplace(const char *fn, em_tensor *t);

/* ---- random (one generator, em_rng.h) -------------------------------- */
em_tensor *em_rand(int ndim, const int64_t *shape);   /* U[0,1) */
em_tensor *em_randn(int ndim, const int64_t *shape);  /* N(0,1) */
em_tensor *em_normal(int ndim, const int64_t *shape, float mean, float std);
em_tensor *em_randint(int64_t low, int64_t high, int ndim, const int64_t *shape);
em_tensor *em_bernoulli(em_tensor *p); /* 0/1 with probabilities p */
int em_uniform_(em_tensor *t, float lo, float hi);
int em_normal_(em_tensor *t, float mean, float std);

/* ---- threads --------------------------------------------------------- */
/* The one place that decides threads: OpenBLAS and our OpenMP loops. */
void em_set_num_threads(int n);
int em_get_num_threads(void);

#endif
