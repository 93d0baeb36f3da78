/* em_loss.h — the losses that need a fused kernel for speed or numerical
 * stability: BCE-with-logits, cross-entropy (log-softmax + NLL in one pass)
 * and NLL over log-probabilities. The other losses (MSE, L1, BCE on
 * probabilities, Gaussian KL and NLL, the adversarial losses) are
 * compositions of differentiable ops in bindings/lua/ember/losses.lua.
 *
 * Class labels are 0-based here, stored as floats in a 1-D tensor [N]
 * (bindings/ convert from Lua's 1..K). Every loss is differentiable, and its
 * gradient is itself differentiable (create_graph). */
#ifndef EM_LOSS_H
#define EM_LOSS_H

#include "em_tensor.h"

/* How a loss folds its per-element (or per-sample) values. */
typedef enum {
    EM_REDUCTION_NONE, /* the unreduced values */
    EM_REDUCTION_MEAN, /* their mean (weighted mean for a class-weighted loss) */
    EM_REDUCTION_SUM   /* their sum */
} em_reduction;

/* Shared by the loss kernels (em_loss.c, em_loss_dmol.c). em_loss_reduce folds
 * per-element values `per` (one reference, consumed) by `red`; the mean divides
 * by `divisor` when it is > 0, else by the number of elements. NULL in, NULL
 * out. em_loss_check_reduction fails on a value outside the enum. */
em_tensor *em_loss_reduce(em_tensor *per, em_reduction red, double divisor);
int em_loss_check_reduction(const char *fn, em_reduction red);

/* Binary cross-entropy on logits, elementwise
 *   max(x, 0) - x t + log1p(exp(-|x|))
 * for logits x and targets t of the same shape (any shape); finite for any
 * finite x. Differentiable in both x and t. */
em_tensor *em_loss_bce_with_logits(em_tensor *logits, em_tensor *target, em_reduction red);

/* Cross-entropy of logits [N x K] against labels [N] (0-based class indices):
 *   loss_i = (1 - s) w[y_i] (lse_i - x[i, y_i]) + (s / K) sum_k w[k] (lse_i - x[i, k])
 * with lse_i = log sum_k exp(x[i, k]), label smoothing s in [0, 1] and class
 * weights w [K] (NULL: all ones). The mean divides by sum_i w[y_i] (N without
 * weights), as PyTorch does. Differentiable in the logits. */
em_tensor *em_loss_cross_entropy(em_tensor *logits, em_tensor *labels, em_tensor *weight,
                                 float label_smoothing, em_reduction red);

/* Negative log-likelihood of log-probabilities [N x K] at labels [N]:
 *   loss_i = -w[y_i] x[i, y_i]
 * weights w [K] or NULL; the mean divides by sum_i w[y_i]. */
em_tensor *em_loss_nll(em_tensor *logprobs, em_tensor *labels, em_tensor *weight,
                       em_reduction red);

#endif
