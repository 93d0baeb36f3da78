/* em_elementwise.c — unary, binary (broadcasting), scalar, clamp, where and
 * the activations, their in-place forms, fill/copy, and their backward. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "em_autograd.h"
#include "em_fastmath.h"
#include "em_iter.h"

/* ---- row kernels ----------------------------------------------------- */

static inline float softplus_f(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

#define UNARY_OPS(X)                                                                  \
    X(NEG, -x) X(ABS, fabsf(x)) X(EXP, expf(x)) X(LOG, logf(x)) X(LOG1P, log1pf(x))  \
    X(SQRT, sqrtf(x)) X(RSQRT, 1.0f / sqrtf(x)) X(TANH, tanhf(x))                     \
    X(SIGMOID, em_sigmoidf(x)) X(RELU, x < 0.0f ? 0.0f : x)                             \
    X(SIGN, (float)((x > 0.0f) - (x < 0.0f))) X(SIN, sinf(x)) X(COS, cosf(x))         \
    X(SQUARE, x * x) X(RECIPROCAL, 1.0f / x) X(FLOOR, floorf(x)) X(CEIL, ceilf(x))    \
    X(ROUND, nearbyintf(x)) X(SOFTPLUS, softplus_f(x))

#define DEFINE_UNARY_ROW(NAME, EXPR)                                                     \
    static void row_un_##NAME(int64_t n, float *const *p, const int64_t *s, const void *c) { \
        float *o = p[0];                                                                 \
        const float *a = p[1];                                                           \
        if (s[0] == 1 && s[1] == 1) {                                                    \
            for (int64_t i = 0; i < n; i++) { float x = a[i]; o[i] = (EXPR); }           \
        } else {                                                                         \
            for (int64_t i = 0; i < n; i++) { float x = a[i * s[1]]; o[i * s[0]] = (EXPR); } \
        }                                                                                \
    }
UNARY_OPS(DEFINE_UNARY_ROW)

static const em_row_fn unary_rows[EM_UN_COUNT] = {
#define UNARY_ENTRY(NAME, EXPR) [EM_UN_##NAME] = row_un_##NAME,
    UNARY_OPS(UNARY_ENTRY)
};
static const char *const unary_names[EM_UN_COUNT] = {
#define UNARY_NAME(NAME, EXPR) [EM_UN_##NAME] = #NAME,
    UNARY_OPS(UNARY_NAME)
};

static inline float max_f(float a, float b) { return (a != a || a > b) ? a : b; }
static inline float min_f(float a, float b) { return (a != a || a < b) ? a : b; }

#define BINARY_OPS(X)                                                                   \
    X(ADD, x + y) X(SUB, x - y) X(MUL, x * y) X(DIV, x / y) X(POW, powf(x, y))          \
    X(MAXIMUM, max_f(x, y)) X(MINIMUM, min_f(x, y)) X(EQ, (float)(x == y))              \
    X(NE, (float)(x != y)) X(LT, (float)(x < y)) X(LE, (float)(x <= y))                 \
    X(GT, (float)(x > y)) X(GE, (float)(x >= y))

/* Binary rows: p = {out, a, b}; fast paths for contiguous and scalar b. */
#define DEFINE_BINARY_ROW(NAME, EXPR)                                                        \
    static void row_bin_##NAME(int64_t n, float *const *p, const int64_t *s, const void *c) { \
        float *o = p[0];                                                                     \
        const float *a = p[1], *b = p[2];                                                    \
        if (s[0] == 1 && s[1] == 1 && s[2] == 1) {                                           \
            for (int64_t i = 0; i < n; i++) { float x = a[i], y = b[i]; o[i] = (EXPR); }     \
        } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {                                    \
            const float y = b[0];                                                            \
            for (int64_t i = 0; i < n; i++) { float x = a[i]; o[i] = (EXPR); }               \
        } else {                                                                             \
            for (int64_t i = 0; i < n; i++) {                                                \
                float x = a[i * s[1]], y = b[i * s[2]];                                      \
                o[i * s[0]] = (EXPR);                                                        \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
    /* a op s: p = {out, a}, ctx = &s */                                                     \
    static void row_bs_##NAME(int64_t n, float *const *p, const int64_t *s, const void *c) {  \
        float *o = p[0];                                                                     \
        const float *a = p[1];                                                               \
        const float y = *(const float *)c;                                                   \
        if (s[0] == 1 && s[1] == 1) {                                                        \
            for (int64_t i = 0; i < n; i++) { float x = a[i]; o[i] = (EXPR); }               \
        } else {                                                                             \
            for (int64_t i = 0; i < n; i++) { float x = a[i * s[1]]; o[i * s[0]] = (EXPR); } \
        }                                                                                    \
    }                                                                                        \
    /* s op a */                                                                             \
    static void row_sb_##NAME(int64_t n, float *const *p, const int64_t *s, const void *c) {  \
        float *o = p[0];                                                                     \
        const float *b = p[1];                                                               \
        const float x = *(const float *)c;                                                   \
        if (s[0] == 1 && s[1] == 1) {                                                        \
            for (int64_t i = 0; i < n; i++) { float y = b[i]; o[i] = (EXPR); }               \
        } else {                                                                             \
            for (int64_t i = 0; i < n; i++) { float y = b[i * s[1]]; o[i * s[0]] = (EXPR); } \
        }                                                                                    \
    }
BINARY_OPS(DEFINE_BINARY_ROW)

static const em_row_fn binary_rows[EM_BIN_COUNT] = {
#define BIN_ENTRY(NAME, EXPR) [EM_BIN_##NAME] = row_bin_##NAME,
    BINARY_OPS(BIN_ENTRY)
};
static const em_row_fn bs_rows[EM_BIN_COUNT] = {
#define BS_ENTRY(NAME, EXPR) [EM_BIN_##NAME] = row_bs_##NAME,
    BINARY_OPS(BS_ENTRY)
};
static const em_row_fn sb_rows[EM_BIN_COUNT] = {
#define SB_ENTRY(NAME, EXPR) [EM_BIN_##NAME] = row_sb_##NAME,
    BINARY_OPS(SB_ENTRY)
};
static const char *const binary_names[EM_BIN_COUNT] = {
#define BIN_NAME(NAME, EXPR) [EM_BIN_##NAME] = #NAME,
    BINARY_OPS(BIN_NAME)
};

/* Lower-case op names for messages ("add", "maximum"). */
static const char *lower(const char *upper, char *buf) {
    size_t i = 0;
    for (; upper[i] && i < 31; i++) buf[i] = (char)(upper[i] | 0x20);
    buf[i] = '\0';
    return buf;
}
static _Thread_local char name_buf[32];
const char *em_unary_name(em_unary_op op) { return lower(unary_names[op], name_buf); }
const char *em_binary_name(em_binary_op op) { return lower(binary_names[op], name_buf); }

static bool is_comparison(em_binary_op op) { return op >= EM_BIN_EQ; }

/* ---- broadcasting ---------------------------------------------------- */

static int broadcast_shapes(const char *fn, int an, const int64_t *ash, int bn,
                            const int64_t *bsh, int64_t *out) {
    int n = an > bn ? an : bn;
    for (int i = 0; i < n; i++) {
        int ia = i - (n - an), ib = i - (n - bn);
        int64_t sa = ia >= 0 ? ash[ia] : 1, sb = ib >= 0 ? bsh[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char a[EM_SHAPE_STR_MAX], b[EM_SHAPE_STR_MAX];
            em_error_set("%s: shapes %s and %s do not broadcast (dim %d: %lld vs %lld)", fn,
                         em_shape_str(a, sizeof a, an, ash), em_shape_str(b, sizeof b, bn, bsh),
                         i + 1, (long long)sa, (long long)sb);
            return -1;
        }
        out[i] = sa == 1 ? sb : sa;
    }
    return n;
}

int em_broadcast_shape(const char *fn, const em_tensor *a, const em_tensor *b, int64_t *out) {
    return broadcast_shapes(fn, a->ndim, a->shape, b->ndim, b->shape, out);
}

/* ---- forward --------------------------------------------------------- */

em_tensor *em_unary(em_unary_op op, em_tensor *a) {
    if (!a) return NULL;
    em_tensor *out = em_tensor_empty(a->ndim, a->shape);
    if (!out) return NULL;
    em_iter_run(out, 1, &a, unary_rows[op], NULL);
    if (op == EM_UN_SIGN || op == EM_UN_FLOOR || op == EM_UN_CEIL || op == EM_UN_ROUND) return out;
    em_node *node = em_record(EM_OP_unary, out, 1, &a);
    if (node) {
        node->iarg[0] = op;
        em_node_save(node, a);
        /* ops whose gradient reads the output keep a graph-free alias of it */
        if (op == EM_UN_EXP || op == EM_UN_SQRT || op == EM_UN_RSQRT || op == EM_UN_TANH ||
            op == EM_UN_SIGMOID || op == EM_UN_RECIPROCAL) {
            em_tensor *alias = em_detach(out);
            em_node_save(node, alias);
            em_tensor_release(alias);
        }
    }
    return out;
}

em_tensor *em_binary(em_binary_op op, em_tensor *a, em_tensor *b) {
    if (!a || !b) return NULL;
    int64_t shape[EM_MAX_DIMS];
    int nd = em_broadcast_shape(em_binary_name(op), a, b, shape);
    if (nd < 0) return NULL;
    em_tensor *out = em_tensor_empty(nd, shape);
    if (!out) return NULL;
    em_tensor *in[2] = {a, b};
    em_iter_run(out, 2, in, binary_rows[op], NULL);
    if (is_comparison(op)) return out;
    em_node *node = em_record(EM_OP_binary, out, 2, in);
    if (node) {
        node->iarg[0] = op;
        if (op != EM_BIN_ADD && op != EM_BIN_SUB) {
            em_node_save(node, a);
            em_node_save(node, b);
        }
    }
    return out;
}

em_tensor *em_binary_scalar(em_binary_op op, em_tensor *a, float s) {
    if (!a) return NULL;
    em_tensor *out = em_tensor_empty(a->ndim, a->shape);
    if (!out) return NULL;
    em_iter_run(out, 1, &a, bs_rows[op], &s);
    if (is_comparison(op)) return out;
    em_node *node = em_record(EM_OP_binary_scalar, out, 1, &a);
    if (node) {
        node->iarg[0] = op;
        node->farg[0] = s;
        em_node_save(node, a);
    }
    return out;
}

em_tensor *em_scalar_binary(em_binary_op op, float s, em_tensor *a) {
    if (!a) return NULL;
    em_tensor *out = em_tensor_empty(a->ndim, a->shape);
    if (!out) return NULL;
    em_iter_run(out, 1, &a, sb_rows[op], &s);
    if (is_comparison(op)) return out;
    em_node *node = em_record(EM_OP_scalar_binary, out, 1, &a);
    if (node) {
        node->iarg[0] = op;
        node->farg[0] = s;
        em_node_save(node, a);
    }
    return out;
}

typedef struct { float lo, hi; } clamp_ctx;

static void row_clamp(int64_t n, float *const *p, const int64_t *s, const void *c) {
    const clamp_ctx *k = c;
    for (int64_t i = 0; i < n; i++) {
        float x = p[1][i * s[1]];
        p[0][i * s[0]] = x < k->lo ? k->lo : (x > k->hi ? k->hi : x);
    }
}

em_tensor *em_clamp(em_tensor *a, float lo, float hi) {
    if (!a) return NULL;
    if (lo > hi) {
        em_error_set("clamp: min %g is greater than max %g", lo, hi);
        return NULL;
    }
    em_tensor *out = em_tensor_empty(a->ndim, a->shape);
    if (!out) return NULL;
    clamp_ctx k = {lo, hi};
    em_iter_run(out, 1, &a, row_clamp, &k);
    em_node *node = em_record(EM_OP_clamp, out, 1, &a);
    if (node) {
        node->farg[0] = lo;
        node->farg[1] = hi;
        em_node_save(node, a);
    }
    return out;
}

static void row_where(int64_t n, float *const *p, const int64_t *s, const void *c) {
    for (int64_t i = 0; i < n; i++)
        p[0][i * s[0]] = p[1][i * s[1]] != 0.0f ? p[2][i * s[2]] : p[3][i * s[3]];
}

em_tensor *em_where(em_tensor *cond, em_tensor *a, em_tensor *b) {
    if (!cond || !a || !b) return NULL;
    int64_t s1[EM_MAX_DIMS], s2[EM_MAX_DIMS];
    int n1 = em_broadcast_shape("where", a, b, s1);
    if (n1 < 0) return NULL;
    int n2 = broadcast_shapes("where", cond->ndim, cond->shape, n1, s1, s2);
    if (n2 < 0) return NULL;
    em_tensor *out = em_tensor_empty(n2, s2);
    if (!out) return NULL;
    em_tensor *in[3] = {cond, a, b};
    em_iter_run(out, 3, in, row_where, NULL);
    em_node *node = em_record(EM_OP_where, out, 3, in);
    if (node) em_node_save(node, cond);
    return out;
}

/* x < 0 as a range test on x's bits (-0, NaNs and positives fall outside), for
 * branch-free selects: GCC (trapping math) branches on a float compare instead. */
static inline bool below_zero_bits(uint32_t bits) { return bits - 0x80000001u < 0x7f800000u; }
/* x > 0 likewise. */
static inline bool above_zero_bits(uint32_t bits) { return bits - 1u < 0x7f800000u; }
/* The float with these bits. */
static inline float float_of(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
static inline uint32_t bits_of(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

static void row_leaky(int64_t n, float *const *p, const int64_t *s, const void *c) {
    float slope = *(const float *)c;
    if (s[0] == 1 && s[1] == 1) { /* x * (slope or 1): one multiply, vectorized */
        /* 1 read through a volatile: seen as the constant 1, GCC turns x * 1 back into
         * x and the multiply into a branch again */
        static volatile float one = 1.0f;
        const uint32_t slope_bits = bits_of(slope), one_bits = bits_of(one);
        const float *x = p[1];
        const uint32_t *xb = (const uint32_t *)(const void *)x;
        float *o = p[0];
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
            o[i] = x[i] * float_of(below_zero_bits(xb[i]) ? slope_bits : one_bits);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float x = p[1][i * s[1]];
        p[0][i * s[0]] = x < 0.0f ? x * slope : x;
    }
}

em_tensor *em_leaky_relu(em_tensor *a, float slope) {
    if (!a) return NULL;
    em_tensor *out = em_tensor_empty(a->ndim, a->shape);
    if (!out) return NULL;
    em_iter_run(out, 1, &a, row_leaky, &slope);
    em_node *node = em_record(EM_OP_leaky_relu, out, 1, &a);
    if (node) {
        node->farg[0] = slope;
        em_node_save(node, a);
    }
    return out;
}

static void row_elu(int64_t n, float *const *p, const int64_t *s, const void *c) {
    float alpha = *(const float *)c;
    for (int64_t i = 0; i < n; i++) {
        float x = p[1][i * s[1]];
        p[0][i * s[0]] = x > 0.0f ? x : alpha * expm1f(x);
    }
}

em_tensor *em_elu(em_tensor *a, float alpha) {
    if (!a) return NULL;
    em_tensor *out = em_tensor_empty(a->ndim, a->shape);
    if (!out) return NULL;
    em_iter_run(out, 1, &a, row_elu, &alpha);
    em_node *node = em_record(EM_OP_elu, out, 1, &a);
    if (node) {
        node->farg[0] = alpha;
        em_node_save(node, a);
    }
    return out;
}

/* ---- in place -------------------------------------------------------- */

int em_check_inplace(const char *fn, em_tensor *t) {
    if (t->requires_grad && em_grad_enabled())
        return em_error_set("%s: in-place change of a tensor that requires grad; use an "
                            "out-of-place op, or wrap it in ember.no_grad", fn);
    return EM_OK;
}

/* src must broadcast to dst's shape (dst keeps its shape). */
static int check_broadcast_into(const char *fn, em_tensor *dst, em_tensor *src) {
    int64_t shape[EM_MAX_DIMS];
    int nd = em_broadcast_shape(fn, dst, src, shape);
    if (nd < 0) return EM_ERR;
    if (nd != dst->ndim || memcmp(shape, dst->shape, (size_t)nd * sizeof(int64_t))) {
        char a[EM_SHAPE_STR_MAX], b[EM_SHAPE_STR_MAX];
        return em_error_set("%s: %s cannot be broadcast into %s", fn,
                            em_shape_str(a, sizeof a, src->ndim, src->shape),
                            em_shape_str(b, sizeof b, dst->ndim, dst->shape));
    }
    return EM_OK;
}

static void row_copy(int64_t n, float *const *p, const int64_t *s, const void *c) {
    if (s[0] == 1 && s[1] == 1) {
        memmove(p[0], p[1], (size_t)n * sizeof(float));
    } else {
        for (int64_t i = 0; i < n; i++) p[0][i * s[0]] = p[1][i * s[1]];
    }
}

int em_copy_(em_tensor *dst, em_tensor *src) {
    if (em_check_inplace("copy_", dst) || check_broadcast_into("copy_", dst, src)) return EM_ERR;
    em_iter_run(dst, 1, &src, row_copy, NULL);
    dst->storage->version++;
    return EM_OK;
}

static void row_fill(int64_t n, float *const *p, const int64_t *s, const void *c) {
    float v = *(const float *)c;
    for (int64_t i = 0; i < n; i++) p[0][i * s[0]] = v;
}

int em_fill_(em_tensor *t, float value) {
    if (em_check_inplace("fill_", t)) return EM_ERR;
    em_iter_run(t, 0, NULL, row_fill, &value);
    t->storage->version++;
    return EM_OK;
}

int em_binary_(em_binary_op op, em_tensor *dst, em_tensor *src) {
    char name[40];
    snprintf(name, sizeof name, "%s_", em_binary_name(op));
    if (em_check_inplace(name, dst) || check_broadcast_into(name, dst, src)) return EM_ERR;
    em_tensor *in[2] = {dst, src};
    em_iter_run(dst, 2, in, binary_rows[op], NULL);
    dst->storage->version++;
    return EM_OK;
}

int em_binary_scalar_(em_binary_op op, em_tensor *dst, float s) {
    char name[40];
    snprintf(name, sizeof name, "%s_", em_binary_name(op));
    if (em_check_inplace(name, dst)) return EM_ERR;
    em_iter_run(dst, 1, &dst, bs_rows[op], &s);
    dst->storage->version++;
    return EM_OK;
}

int em_unary_(em_unary_op op, em_tensor *t) {
    char name[40];
    snprintf(name, sizeof name, "%s_", em_unary_name(op));
    if (em_check_inplace(name, t)) return EM_ERR;
    em_iter_run(t, 1, &t, unary_rows[op], NULL);
    t->storage->version++;
    return EM_OK;
}

int em_clamp_(em_tensor *t, float lo, float hi) {
    if (em_check_inplace("clamp_", t)) return EM_ERR;
    if (lo > hi) return em_error_set("clamp_: min %g is greater than max %g", lo, hi);
    clamp_ctx k = {lo, hi};
    em_iter_run(t, 1, &t, row_clamp, &k);
    t->storage->version++;
    return EM_OK;
}

/* ---- backward -------------------------------------------------------- */
/* Backward code chains ops freely: every op returns NULL for a NULL input, so
 * only the final result needs checking; temporaries are released at the end. */

#define REL(t) em_tensor_release(t)

static em_tensor *mul(em_tensor *a, em_tensor *b) { return em_binary(EM_BIN_MUL, a, b); }
static em_tensor *muls(em_tensor *a, float s) { return em_binary_scalar(EM_BIN_MUL, a, s); }

/* g * f, released f; the usual shape of a unary gradient. */
static em_tensor *times(em_tensor *g, em_tensor *f) {
    em_tensor *r = mul(g, f);
    REL(f);
    return r;
}

/* relu, tanh and sigmoid backward in one pass when nothing records (the usual
 * training step): the same products as the op-built path below, in the same
 * order, so the same bits, without two or three temporaries. NULL when the
 * shapes or layouts are not the simple case. x: the input; y: the output. */
static em_tensor *fused_unary_backward(em_unary_op op, em_tensor *g, em_tensor *x, em_tensor *y) {
    if (em_grad_enabled() || !em_same_shape(g, x) || !em_tensor_is_contiguous(g) ||
        !em_tensor_is_contiguous(x) || (y && (!em_same_shape(y, x) || !em_tensor_is_contiguous(y))))
        return NULL;
    em_tensor *r = em_tensor_empty(x->ndim, x->shape);
    if (!r) return NULL;
    const float *gd = em_tensor_data(g), *xd = em_tensor_data(x), *yd = y ? em_tensor_data(y) : NULL;
    float *rd = em_tensor_data(r);
    const int64_t m = x->numel;
    switch (op) {
    case EM_UN_RELU: { /* g * (x > 0) */
        /* The factor 1 or 0 made from integers: x > 0 as a range test on x's bits
         * (0 < bits <= +inf's; NaNs and negatives fall outside), then one unconditional
         * multiply. Written as `g * (x > 0 ? 1 : 0)`, GCC (trapping math) neither
         * vectorized the float compare nor the multiply it made conditional, and
         * branched on every element: 3x slower than the two passes it replaces. */
        const uint32_t *xb = (const uint32_t *)(const void *)xd;
#pragma omp parallel for simd schedule(static) if (m > EM_PARALLEL_MIN)
        for (int64_t i = 0; i < m; i++) {
            uint32_t bits = (xb[i] - 1u < 0x7f800000u) ? 0x3f800000u : 0u; /* 1.0f or 0.0f */
            float factor;
            memcpy(&factor, &bits, sizeof factor);
            rd[i] = gd[i] * factor;
        }
        break;
    }
    case EM_UN_TANH: /* g * (1 - y y) */
#pragma omp parallel for simd schedule(static) if (m > EM_PARALLEL_MIN)
        for (int64_t i = 0; i < m; i++) rd[i] = gd[i] * (1.0f - yd[i] * yd[i]);
        break;
    case EM_UN_SIGMOID: /* g * (y (1 - y)) */
#pragma omp parallel for simd schedule(static) if (m > EM_PARALLEL_MIN)
        for (int64_t i = 0; i < m; i++) rd[i] = gd[i] * (yd[i] * (1.0f - yd[i]));
        break;
    default:
        em_tensor_release(r);
        return NULL;
    }
    return r;
}

int em_backward_unary(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *x = n->saved[0];
    em_unary_op fop = (em_unary_op)n->iarg[0];
    if (fop == EM_UN_RELU || ((fop == EM_UN_TANH || fop == EM_UN_SIGMOID) && n->n_saved > 1)) {
        em_tensor *r = fused_unary_backward(fop, g, x, fop == EM_UN_RELU ? NULL : n->saved[1]);
        if (r) {
            gin[0] = r;
            return EM_OK;
        }
    }
    /* The output, recomputed (differentiably) when recording, else the alias. */
    em_tensor *y = NULL;
    if (n->n_saved > 1) y = em_grad_enabled() ? em_unary((em_unary_op)n->iarg[0], x)
                                              : em_tensor_retain(n->saved[1]);
    em_tensor *r = NULL, *t1 = NULL, *t2 = NULL;
    switch ((em_unary_op)n->iarg[0]) {
    case EM_UN_NEG: r = em_unary(EM_UN_NEG, g); break;
    case EM_UN_ABS: r = times(g, em_unary(EM_UN_SIGN, x)); break;
    case EM_UN_EXP: r = mul(g, y); break;
    case EM_UN_LOG: r = em_binary(EM_BIN_DIV, g, x); break;
    case EM_UN_LOG1P:
        t1 = em_binary_scalar(EM_BIN_ADD, x, 1.0f);
        r = em_binary(EM_BIN_DIV, g, t1);
        break;
    case EM_UN_SQRT: /* g / (2 y) */
        t1 = muls(y, 2.0f);
        r = em_binary(EM_BIN_DIV, g, t1);
        break;
    case EM_UN_RSQRT: /* -0.5 g y^3 */
        t1 = em_binary_scalar(EM_BIN_POW, y, 3.0f);
        t2 = muls(t1, -0.5f);
        r = mul(g, t2);
        break;
    case EM_UN_TANH: /* g (1 - y^2) */
        t1 = mul(y, y);
        t2 = em_scalar_binary(EM_BIN_SUB, 1.0f, t1);
        r = mul(g, t2);
        break;
    case EM_UN_SIGMOID: /* g y (1 - y) */
        t1 = em_scalar_binary(EM_BIN_SUB, 1.0f, y);
        t2 = mul(y, t1);
        r = mul(g, t2);
        break;
    case EM_UN_RELU: r = times(g, em_binary_scalar(EM_BIN_GT, x, 0.0f)); break;
    case EM_UN_SIN: r = times(g, em_unary(EM_UN_COS, x)); break;
    case EM_UN_COS:
        t1 = em_unary(EM_UN_SIN, x);
        t2 = muls(t1, -1.0f);
        r = mul(g, t2);
        break;
    case EM_UN_SQUARE: r = times(g, muls(x, 2.0f)); break;
    case EM_UN_RECIPROCAL: /* -g y^2 */
        t1 = mul(y, y);
        t2 = muls(t1, -1.0f);
        r = mul(g, t2);
        break;
    case EM_UN_SOFTPLUS: r = times(g, em_unary(EM_UN_SIGMOID, x)); break;
    default: r = NULL; em_error_set("no gradient"); break;
    }
    REL(t1);
    REL(t2);
    REL(y);
    gin[0] = r;
    return r ? EM_OK : EM_ERR;
}

int em_backward_binary(em_node *n, em_tensor *g, em_tensor **gin) {
    const em_edge *ea = &n->edges[0], *eb = &n->edges[1];
    em_tensor *a = n->n_saved ? n->saved[0] : NULL, *b = n->n_saved ? n->saved[1] : NULL;
    em_tensor *ga = NULL, *gb = NULL, *t1 = NULL, *t2 = NULL, *t3 = NULL;
    bool need_a = em_edge_needs_grad(n, 0), need_b = em_edge_needs_grad(n, 1);
    switch ((em_binary_op)n->iarg[0]) {
    case EM_BIN_ADD:
        if (need_a) ga = em_tensor_retain(g);
        if (need_b) gb = em_tensor_retain(g);
        break;
    case EM_BIN_SUB:
        if (need_a) ga = em_tensor_retain(g);
        if (need_b) gb = em_unary(EM_UN_NEG, g);
        break;
    case EM_BIN_MUL:
        if (need_a) ga = mul(g, b);
        if (need_b) gb = mul(g, a);
        break;
    case EM_BIN_DIV: /* ga = g / b, gb = -g a / b^2 */
        if (need_a) ga = em_binary(EM_BIN_DIV, g, b);
        if (need_b) {
            t1 = mul(b, b);
            t2 = em_binary(EM_BIN_DIV, a, t1);
            t3 = mul(g, t2);
            gb = em_unary(EM_UN_NEG, t3);
        }
        break;
    case EM_BIN_POW: /* ga = g b a^(b-1) (0 where b == 0: a^0 is constant, also at
                      * a = 0 where b a^(b-1) would be 0 * inf), gb = g a^b log a
                      * (0 where a <= 0) */
        if (need_a) {
            t1 = em_binary_scalar(EM_BIN_SUB, b, 1.0f);
            t2 = em_binary(EM_BIN_POW, a, t1);
            REL(t1);
            t1 = mul(t2, b);
            REL(t2);
            em_tensor *nonzero = em_binary_scalar(EM_BIN_NE, b, 0.0f);
            em_tensor *zero = em_tensor_scalar(0.0f);
            t2 = em_where(nonzero, t1, zero);
            ga = mul(g, t2);
            REL(nonzero); REL(zero);
            REL(t1);
            REL(t2);
            t1 = t2 = NULL;
        }
        if (need_b) {
            em_tensor *pos = em_binary_scalar(EM_BIN_GT, a, 0.0f);
            em_tensor *one = em_tensor_scalar(1.0f);
            em_tensor *safe_a = em_where(pos, a, one); /* 1 where a <= 0: log 1 = 0 */
            REL(one);
            em_tensor *loga = em_unary(EM_UN_LOG, safe_a);
            em_tensor *p = em_binary(EM_BIN_POW, a, b);
            t1 = mul(p, loga);
            t2 = mul(t1, pos);
            gb = mul(g, t2);
            REL(pos); REL(safe_a); REL(loga); REL(p);
        }
        break;
    case EM_BIN_MAXIMUM:
    case EM_BIN_MINIMUM: { /* to the larger (smaller) input; split in half at ties, as PyTorch */
        em_binary_op pick = n->iarg[0] == EM_BIN_MAXIMUM ? EM_BIN_GT : EM_BIN_LT;
        em_tensor *wins = em_binary(pick, a, b);
        em_tensor *tie = em_binary(EM_BIN_EQ, a, b);
        em_tensor *half_tie = muls(tie, 0.5f);
        em_tensor *mask = em_binary(EM_BIN_ADD, wins, half_tie);
        if (need_a) ga = mul(g, mask);
        if (need_b) {
            t1 = em_scalar_binary(EM_BIN_SUB, 1.0f, mask);
            gb = mul(g, t1);
        }
        REL(wins); REL(tie); REL(half_tie); REL(mask);
        break;
    }
    default: em_error_set("no gradient"); break;
    }
    REL(t1); REL(t2); REL(t3);
    int rc = EM_OK;
    if (need_a) {
        gin[0] = ga ? em_sum_to_shape(ga, ea->ndim, ea->shape) : NULL;
        if (!gin[0]) rc = EM_ERR;
    }
    if (need_b) {
        gin[1] = gb ? em_sum_to_shape(gb, eb->ndim, eb->shape) : NULL;
        if (!gin[1]) rc = EM_ERR;
    }
    REL(ga);
    REL(gb);
    return rc;
}

int em_backward_binary_scalar(em_node *n, em_tensor *g, em_tensor **gin) {
    float s = n->farg[0];
    em_tensor *a = n->saved[0], *r = NULL, *t1 = NULL;
    switch ((em_binary_op)n->iarg[0]) {
    case EM_BIN_ADD: case EM_BIN_SUB: r = em_tensor_retain(g); break;
    case EM_BIN_MUL: r = muls(g, s); break;
    case EM_BIN_DIV: r = muls(g, 1.0f / s); break;
    case EM_BIN_POW: /* g s a^(s-1); 0 for s == 0 (a^0 is constant; 0 * 0^-1 would be NaN) */
        if (s == 0.0f) {
            r = em_tensor_zeros_like(g);
            break;
        }
        t1 = em_binary_scalar(EM_BIN_POW, a, s - 1.0f);
        r = times(g, muls(t1, s));
        break;
    case EM_BIN_MAXIMUM: r = times(g, em_binary_scalar(EM_BIN_GE, a, s)); break;
    case EM_BIN_MINIMUM: r = times(g, em_binary_scalar(EM_BIN_LE, a, s)); break;
    default: em_error_set("no gradient"); break;
    }
    REL(t1);
    gin[0] = r;
    return r ? EM_OK : EM_ERR;
}

int em_backward_scalar_binary(em_node *n, em_tensor *g, em_tensor **gin) {
    float s = n->farg[0];
    em_tensor *a = n->saved[0], *r = NULL, *t1 = NULL, *t2 = NULL;
    switch ((em_binary_op)n->iarg[0]) {
    case EM_BIN_ADD: r = em_tensor_retain(g); break;
    case EM_BIN_SUB: r = em_unary(EM_UN_NEG, g); break;
    case EM_BIN_MUL: r = muls(g, s); break;
    case EM_BIN_DIV: /* -g s / a^2 */
        t1 = mul(a, a);
        t2 = em_scalar_binary(EM_BIN_DIV, -s, t1);
        r = mul(g, t2);
        break;
    case EM_BIN_POW: /* g s^a ln s */
        t1 = em_scalar_binary(EM_BIN_POW, s, a);
        r = times(g, muls(t1, s > 0 ? logf(s) : 0.0f));
        break;
    case EM_BIN_MAXIMUM: r = times(g, em_binary_scalar(EM_BIN_GE, a, s)); break;
    case EM_BIN_MINIMUM: r = times(g, em_binary_scalar(EM_BIN_LE, a, s)); break;
    default: em_error_set("no gradient"); break;
    }
    REL(t1);
    REL(t2);
    gin[0] = r;
    return r ? EM_OK : EM_ERR;
}

int em_backward_clamp(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *x = n->saved[0];
    em_tensor *lo = em_binary_scalar(EM_BIN_GE, x, n->farg[0]);
    em_tensor *hi = em_binary_scalar(EM_BIN_LE, x, n->farg[1]);
    em_tensor *inside = mul(lo, hi);
    gin[0] = mul(g, inside);
    REL(lo); REL(hi); REL(inside);
    return gin[0] ? EM_OK : EM_ERR;
}

int em_backward_where(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *cond = n->saved[0];
    em_tensor *zero = em_tensor_scalar(0.0f);
    int rc = EM_OK;
    for (int i = 1; i <= 2; i++) {
        if (!em_edge_needs_grad(n, i)) continue;
        em_tensor *w = i == 1 ? em_where(cond, g, zero) : em_where(cond, zero, g);
        gin[i] = em_sum_to_shape(w, n->edges[i].ndim, n->edges[i].shape);
        REL(w);
        if (!gin[i]) rc = EM_ERR;
    }
    REL(zero);
    return rc;
}

int em_backward_leaky_relu(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *x = n->saved[0];
    /* Not recording, simple layouts: one pass, g * (x > 0 ? f1 : f0) with the two factors
     * the op-built path below computes ((1 - slope) pos + slope for pos = 1 and 0). */
    if (!em_grad_enabled() && em_same_shape(g, x) && em_tensor_is_contiguous(g) &&
        em_tensor_is_contiguous(x)) {
        em_tensor *r = em_tensor_empty(x->ndim, x->shape);
        if (!r) return EM_ERR;
        const float slope = n->farg[0], keep = 1.0f - slope;
        const uint32_t f1 = bits_of(1.0f * keep + slope), f0 = bits_of(0.0f * keep + slope);
        const float *gd = em_tensor_data(g), *xd = em_tensor_data(x);
        const uint32_t *xb = (const uint32_t *)(const void *)xd;
        float *rd = em_tensor_data(r);
        const int64_t m = x->numel;
#pragma omp parallel for simd schedule(static) if (m > EM_PARALLEL_MIN)
        for (int64_t i = 0; i < m; i++) rd[i] = gd[i] * float_of(above_zero_bits(xb[i]) ? f1 : f0);
        gin[0] = r;
        return EM_OK;
    }
    em_tensor *pos = em_binary_scalar(EM_BIN_GT, x, 0.0f);
    /* slope + (1 - slope) * pos */
    em_tensor *t1 = muls(pos, 1.0f - n->farg[0]);
    em_tensor *f = em_binary_scalar(EM_BIN_ADD, t1, n->farg[0]);
    gin[0] = mul(g, f);
    REL(pos); REL(t1); REL(f);
    return gin[0] ? EM_OK : EM_ERR;
}

int em_backward_elu(em_node *n, em_tensor *g, em_tensor **gin) {
    em_tensor *x = n->saved[0];
    em_tensor *pos = em_binary_scalar(EM_BIN_GT, x, 0.0f);
    em_tensor *ex = em_unary(EM_UN_EXP, x);
    em_tensor *neg = muls(ex, n->farg[0]); /* alpha e^x for x <= 0 */
    em_tensor *one = em_tensor_scalar(1.0f);
    em_tensor *f = em_where(pos, one, neg);
    gin[0] = mul(g, f);
    REL(pos); REL(ex); REL(neg); REL(one); REL(f);
    return gin[0] ? EM_OK : EM_ERR;
}
