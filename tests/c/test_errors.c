/* test_errors.c — each class of user error in core/ fails with a status and a
 * message naming the function, the argument and the shapes, never a crash:
 * shapes, indices, dims, sizes, memory, in-place writes under autograd and
 * every backward misuse. (Kernel-specific messages are also checked next to
 * their kernels' tests.) */
#include <stdlib.h>

#include "em_autograd.h"
#include "em_rng.h"
#include "test.h"

#define RELEASE_ALL(...)                                                        \
    do {                                                                        \
        em_tensor *list_[] = {__VA_ARGS__};                                     \
        for (size_t i_ = 0; i_ < sizeof list_ / sizeof list_[0]; i_++)          \
            em_tensor_release(list_[i_]);                                       \
    } while (0)

static em_tensor *leaf(int ndim, const int64_t *shape, float value) {
    em_tensor *t = em_tensor_full(ndim, shape, value);
    em_set_requires_grad(t, true);
    return t;
}

TEST(error_matmul_inner_sizes) {
    int64_t sa[2] = {128, 784}, sb[2] = {400, 784};
    em_tensor *a = em_tensor_zeros(2, sa), *b = em_tensor_zeros(2, sb);
    em_error_clear();
    CHECK(em_matmul(a, b) == NULL);
    CHECK(strcmp(em_error_message(),
                 "matmul: [128 x 784] @ [400 x 784]: inner sizes 784 and 400 differ") == 0);
    RELEASE_ALL(a, b);
}

TEST(error_shapes_that_do_not_broadcast) {
    int64_t sa[2] = {2, 3}, sb[2] = {3, 2};
    em_tensor *a = em_tensor_zeros(2, sa), *b = em_tensor_zeros(2, sb);
    CHECK(em_binary(EM_BIN_SUB, a, b) == NULL);
    CHECK(strcmp(em_error_message(),
                 "sub: shapes [2 x 3] and [3 x 2] do not broadcast (dim 1: 2 vs 3)") == 0);
    CHECK(em_copy_(a, b) == EM_ERR);
    CHECK_ERROR("copy_: shapes [2 x 3] and [3 x 2] do not broadcast");
    RELEASE_ALL(a, b);
}

TEST(error_index_out_of_range) {
    int64_t s[2] = {3, 4};
    em_tensor *a = em_tensor_zeros(2, s);
    CHECK(em_select(a, 0, 3) == NULL);
    CHECK_ERROR("select: index 4 out of range for dim 1 of size 3 (expected 1..3)");
    CHECK(em_select(a, -1, -1) == NULL);
    CHECK_ERROR("select: index 0 out of range for dim 2 of size 4 (expected 1..4)");
    CHECK(em_narrow(a, 1, 2, 3) == NULL);
    CHECK_ERROR("narrow: range 3..5 is out of bounds for dim 2 of size 4");
    CHECK(em_narrow(a, 1, 0, -1) == NULL);
    CHECK_ERROR("narrow: range");
    int64_t n2 = 2;
    em_tensor *ix = em_tensor_full(1, &n2, 3.0f);
    CHECK(em_index_select(a, 0, ix) == NULL);
    CHECK_ERROR("index_select: index 4 out of range (expected 1..3)");
    em_tensor *neg = em_tensor_full(1, &n2, -1.0f);
    CHECK(em_index_select(a, 1, neg) == NULL);
    CHECK_ERROR("index_select: index 0 out of range (expected 1..4)");
    int64_t sg[2] = {3, 1};
    em_tensor *gi = em_tensor_full(2, sg, 7.0f);
    CHECK(em_gather(a, 1, gi) == NULL);
    CHECK_ERROR("gather: index 8 out of range (expected 1..4)");
    em_tensor *nan_ix = em_tensor_full(2, sg, NAN);
    CHECK(em_gather(a, 1, nan_ix) == NULL);
    CHECK_ERROR("gather: index nan out of range (expected 1..4)");
    RELEASE_ALL(a, ix, neg, gi, nan_ix);
}

TEST(error_dims_out_of_range) {
    int64_t s[2] = {3, 4};
    em_tensor *a = em_tensor_zeros(2, s);
    int d = 2;
    CHECK(em_reduce(EM_RED_SUM, a, 1, &d, false, 0) == NULL);
    CHECK_ERROR("sum: dim 3 out of range for a tensor of 2 dims (expected -2..2)");
    CHECK(em_transpose(a, 0, 5) == NULL);
    CHECK_ERROR("transpose: dim 6 out of range for a tensor of 2 dims (expected -2..2)");
    CHECK(em_argmax(a, -3, false) == NULL);
    CHECK_ERROR("argmax: dim -3 out of range for a tensor of 2 dims (expected -2..2)");
    em_tensor *parts[1] = {a};
    CHECK(em_cat(1, parts, 2) == NULL);
    CHECK_ERROR("cat: dim 3 out of range");
    em_tensor *s0 = em_tensor_scalar(1.0f);
    CHECK(em_select(s0, 0, 0) == NULL);
    CHECK_ERROR("select: dim 1 out of range for a tensor of 0 dims");
    RELEASE_ALL(a, s0);
}

TEST(error_negative_sizes_and_bad_shapes) {
    int64_t neg[3] = {2, -1, 3};
    CHECK(em_tensor_empty(3, neg) == NULL);
    CHECK_ERROR("empty: size of dim 2 must be >= 0, got -1");
    CHECK(em_randn(3, neg) == NULL);
    CHECK_ERROR("size of dim 2 must be >= 0, got -1");
    int64_t s[2] = {2, 3};
    em_tensor *a = em_tensor_zeros(2, s);
    int64_t bad[2] = {-2, 3};
    CHECK(em_reshape(a, 2, bad) == NULL);
    CHECK_ERROR("reshape: size of dim 1 must be >= 0 or -1, got -2");
    int64_t two[2] = {-1, -1};
    CHECK(em_view(a, 2, two) == NULL);
    CHECK_ERROR("view: only one size may be -1");
    int64_t sneg[2] = {-3, 3};
    CHECK(em_expand(a, 2, sneg) == NULL);
    CHECK_ERROR("expand: [2 x 3] cannot be expanded to [-3 x 3]");
    em_tensor_release(a);
}

TEST(error_reshape_size_mismatch_and_view_of_non_contiguous) {
    int64_t s[2] = {2, 3};
    em_tensor *a = em_tensor_zeros(2, s);
    int64_t four[1] = {4};
    CHECK(em_reshape(a, 1, four) == NULL);
    CHECK(strcmp(em_error_message(),
                 "reshape: shape [4] (4 elements) does not fit [2 x 3] (6 elements)") == 0);
    int64_t inf[2] = {4, -1};
    CHECK(em_view(a, 2, inf) == NULL);
    CHECK_ERROR("view: cannot infer the -1 size in [4 x -1] from 6 elements of [2 x 3]");
    em_tensor *t = em_transpose(a, 0, 1);
    int64_t six[1] = {6};
    CHECK(em_view(t, 1, six) == NULL);
    CHECK(strcmp(em_error_message(), "view: a non-contiguous tensor [3 x 2] cannot be viewed as "
                                     "[6]; use reshape or contiguous()") == 0);
    RELEASE_ALL(a, t);
}

TEST(error_out_of_memory_for_two_to_the_forty_elements) {
    int64_t s[4] = {1024, 1024, 1024, 1024};
    CHECK(em_tensor_zeros(4, s) == NULL);
    CHECK_ERROR("out of memory");
    CHECK(em_randn(4, s) == NULL);
    CHECK_ERROR("out of memory");
    int64_t e[1] = {(int64_t)1 << 40};
    CHECK(em_tensor_full(1, e, 1.0f) == NULL);
    CHECK_ERROR("out of memory: a tensor of 1099511627776 elements");
    CHECK(em_tensor_arange(0, 1e13, 1) == NULL);
    CHECK_ERROR("out of memory");
    /* ... and the core still works afterwards */
    int64_t ok[1] = {4};
    em_tensor *t = em_tensor_ones(1, ok);
    CHECK(t && t->storage->data[3] == 1.0f);
    em_tensor_release(t);
}

TEST(error_inplace_on_a_tensor_that_requires_grad) {
    int64_t s[1] = {3};
    em_tensor *w = leaf(1, s, 1.0f);
    em_tensor *m = em_tensor_zeros(1, s);
    CHECK(em_binary_(EM_BIN_MUL, w, m) == EM_ERR);
    CHECK(strcmp(em_error_message(), "mul_: in-place change of a tensor that requires grad; use "
                                     "an out-of-place op, or wrap it in ember.no_grad") == 0);
    CHECK(em_copy_(w, m) == EM_ERR);
    CHECK_ERROR("copy_: in-place change");
    CHECK(em_masked_fill_(w, m, 0.0f) == EM_ERR);
    CHECK_ERROR("masked_fill_: in-place change");
    CHECK(em_clamp_(w, 0, 1) == EM_ERR);
    CHECK_ERROR("clamp_: in-place change");
    CHECK(em_normal_(w, 0, 1) == EM_ERR);
    CHECK_ERROR("normal_: in-place change");
    CHECK(w->storage->data[0] == 1.0f); /* untouched */
    /* a non-leaf result of an op on w requires grad too */
    em_tensor *y = em_binary_scalar(EM_BIN_MUL, w, 2.0f);
    CHECK(em_fill_(y, 0.0f) == EM_ERR);
    CHECK_ERROR("fill_: in-place change of a tensor that requires grad");
    RELEASE_ALL(w, m, y);
}

TEST(error_backward_of_a_nan_or_inf_loss) {
    int64_t s[1] = {3};
    em_tensor *x = leaf(1, s, 0.0f);
    em_tensor *l = em_unary(EM_UN_LOG, x); /* -inf */
    em_tensor *sum = em_reduce(EM_RED_SUM, l, 0, NULL, false, 0);
    CHECK(em_backward(sum, NULL, false, false) == EM_ERR);
    CHECK(strcmp(em_error_message(), "backward: the loss is inf") == 0);
    em_tensor *zero = em_tensor_scalar(0.0f);
    em_tensor *z = em_binary(EM_BIN_MUL, sum, zero);
    CHECK(z != NULL);
    CHECK(em_backward(z, NULL, false, false) == EM_ERR); /* -inf * 0 = nan */
    CHECK(strcmp(em_error_message(), "backward: the loss is nan") == 0);
    CHECK(x->grad == NULL); /* nothing accumulated */
    RELEASE_ALL(x, l, sum, zero, z);
}

TEST(error_backward_through_a_freed_graph) {
    int64_t s[1] = {3};
    em_tensor *x = leaf(1, s, 2.0f);
    em_tensor *y = em_binary(EM_BIN_MUL, x, x);
    em_tensor *l = em_reduce(EM_RED_SUM, y, 0, NULL, false, 0);
    CHECK(em_backward(l, NULL, false, false) == EM_OK);
    CHECK(x->grad && x->grad->storage->data[0] == 4.0f);
    CHECK(em_backward(l, NULL, false, false) == EM_ERR);
    CHECK(strcmp(em_error_message(),
                 "backward: the graph through 'sum' was already freed by an earlier backward; "
                 "pass retain_graph=true to the first backward") == 0);
    CHECK(x->grad->storage->data[0] == 4.0f); /* unchanged by the failed one */
    /* with retain_graph the second backward works and accumulates */
    em_tensor *y2 = em_binary(EM_BIN_MUL, x, x);
    em_tensor *l2 = em_reduce(EM_RED_SUM, y2, 0, NULL, false, 0);
    CHECK(em_backward(l2, NULL, true, false) == EM_OK);
    CHECK(em_backward(l2, NULL, false, false) == EM_OK);
    CHECK(x->grad->storage->data[0] == 12.0f);
    RELEASE_ALL(x, y, l, y2, l2);
}

TEST(error_backward_of_a_non_scalar_without_a_gradient) {
    int64_t s[2] = {2, 3};
    em_tensor *x = leaf(2, s, 1.0f);
    em_tensor *y = em_binary_scalar(EM_BIN_MUL, x, 3.0f);
    CHECK(em_backward(y, NULL, false, false) == EM_ERR);
    CHECK(strcmp(em_error_message(), "backward: a gradient is needed for a non-scalar tensor "
                                     "[2 x 3] (pass one, or reduce it to a scalar first)") == 0);
    int64_t s2[1] = {6};
    em_tensor *g = em_tensor_ones(1, s2);
    CHECK(em_backward(y, g, false, false) == EM_ERR);
    CHECK_ERROR("backward: gradient shape [6] does not match the tensor's [2 x 3]");
    em_tensor *g2 = em_tensor_ones(2, s);
    CHECK(em_backward(y, g2, false, false) == EM_OK);
    CHECK(x->grad && x->grad->storage->data[5] == 3.0f);
    /* a tensor no parameter led to */
    em_tensor *c = em_tensor_ones(2, s);
    em_tensor *cs = em_reduce(EM_RED_SUM, c, 0, NULL, false, 0);
    CHECK(em_backward(cs, NULL, false, false) == EM_ERR);
    CHECK_ERROR("backward: the tensor does not require grad");
    RELEASE_ALL(x, y, g, g2, c, cs);
}

TEST(error_saved_tensor_modified_in_place) {
    int64_t s[1] = {3};
    em_tensor *x = leaf(1, s, 2.0f);
    em_tensor *h = em_binary_scalar(EM_BIN_ADD, x, 1.0f); /* requires grad: cannot be changed */
    em_tensor *d = em_detach(h);                            /* ... but a detached alias can */
    em_tensor *y = em_unary(EM_UN_EXP, h);                  /* saves h */
    em_tensor *l = em_reduce(EM_RED_SUM, y, 0, NULL, false, 0);
    CHECK(em_binary_scalar_(EM_BIN_ADD, d, 1.0f) == EM_OK);
    CHECK(em_backward(l, NULL, false, false) == EM_ERR);
    CHECK(strcmp(em_error_message(), "backward: a tensor saved by 'exp' was modified in place "
                                     "after it was used; clone it before changing it") == 0);
    CHECK(x->grad == NULL);
    RELEASE_ALL(x, h, d, y, l);
}

TEST(error_requires_grad_on_a_non_leaf) {
    int64_t s[1] = {3};
    em_tensor *x = leaf(1, s, 2.0f);
    em_tensor *y = em_unary(EM_UN_TANH, x);
    CHECK(em_set_requires_grad(y, true) == EM_ERR);
    CHECK(strcmp(em_error_message(), "requires_grad: only a leaf tensor (not the result of an op) "
                                     "can be marked; use detach() first") == 0);
    em_tensor *d = em_detach(y);
    CHECK(em_set_requires_grad(d, true) == EM_OK);
    RELEASE_ALL(x, y, d);
}

TEST(error_grad_of_an_input_that_does_not_require_grad) {
    int64_t s[1] = {3};
    em_tensor *x = leaf(1, s, 2.0f), *c = em_tensor_ones(1, s);
    em_tensor *y = em_binary(EM_BIN_MUL, x, c);
    em_tensor *l = em_reduce(EM_RED_SUM, y, 0, NULL, false, 0);
    em_tensor *inputs[2] = {x, c}, *grads[2];
    CHECK(em_grad(l, NULL, 2, inputs, grads, false, false) == EM_ERR);
    CHECK_ERROR("grad: input 2 does not require grad");
    CHECK(grads[0] == NULL && grads[1] == NULL);
    RELEASE_ALL(x, c, y, l);
}

TEST(error_unknown_op_for_the_debug_hook) {
    CHECK(em_autograd_debug_break("no_such_op") == EM_ERR);
    CHECK_ERROR("debug_break_backward: no op named 'no_such_op'");
    CHECK(em_autograd_debug_break(NULL) == EM_OK);
}

TEST(error_messages_fit_shapes_of_eight_dims) {
    int64_t s[8] = {1000000, 2, 3, 4, 5, 6, 7, 8};
    char buf[EM_SHAPE_STR_MAX];
    em_shape_str(buf, sizeof buf, 8, s);
    CHECK(strcmp(buf, "[1000000 x 2 x 3 x 4 x 5 x 6 x 7 x 8]") == 0);
    em_shape_str(buf, sizeof buf, 0, NULL);
    CHECK(strcmp(buf, "[]") == 0);
    /* a tiny buffer is truncated, never overrun */
    char tiny[6];
    em_shape_str(tiny, sizeof tiny, 8, s);
    CHECK(strlen(tiny) < sizeof tiny);
}
