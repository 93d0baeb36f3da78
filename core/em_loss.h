/* em_loss.h — the losses that need a fused kernel for speed or numerical
 * stability: BCE-with-logits, cross-entropy (log-softmax + NLL in one pass),
 * NLL over log-probabilities (em_loss.c) and PixelCNN++'s discretized mixture
 * of logistics with its sampler (em_loss_dmol.c). The other losses (MSE, L1, BCE on
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

/* ---- discretized mixture of logistics (PixelCNN++, Salimans et al. 2017) ----
 *
 * Data x [N x C x H x W], C = 1 or 3: images of `bins` levels (256 for 8-bit)
 * scaled to [-1, 1], level b at 2b / (bins - 1) - 1 (x = pixel / 127.5 - 1).
 * Parameters params [N x P x H x W], K = nr_mix components, channel-first
 * blocks along P (k = 0..K-1, c = 0..C-1 the colour channel):
 *
 *   C = 1, P = 3K:   [0, K)    logits      w_k
 *                    [K, 2K)   means       mu_k
 *                    [2K, 3K)  log-scales  s_k
 *   C = 3, P = 10K:  [0, K)             logits w_k
 *                    [K + cK + k]       means mu_{c,k}       (c = R, G, B: 3K)
 *                    [4K + cK + k]      log-scales s_{c,k}   (3K)
 *                    [7K + iK + k]      raw coefficients a_{i,k}, i = 0, 1, 2 (3K)
 *
 * (the reference code's interleaved per-channel groups [means_c, log-scales_c,
 * coeffs_c] are reordered here into one block per kind.) The coefficients are
 * c_i = tanh(a_i), as in the reference, and make the channels autoregressive:
 *   mean_R = mu_R,  mean_G = mu_G + c_0 x_R,  mean_B = mu_B + c_1 x_R + c_2 x_G.
 * Log-scales are clamped below at -7 (zero gradient below it). Each sub-pixel's
 * probability under a logistic (mean m, scale e^s) is the mass of its bin,
 * half-width h = 1 / (bins - 1) around x:
 *   lowest level (x < -1 + h):  log sigmoid((x - m + h) / e^s)     (all mass below)
 *   highest level (x > 1 - h):  log(1 - sigmoid((x - m - h) / e^s)) (all mass above)
 *   otherwise:                  log(sigmoid((x - m + h) / e^s) - sigmoid((x - m - h) / e^s))
 *     or, where that difference is <= 1e-5, the log density at the bin centre
 *     times the bin width: t - s - 2 softplus(t) - log((bins - 1) / 2),
 *     t = (x - m) / e^s (log(127.5) for 256 levels, as the reference).
 * The per-position NLL (nats) is -logsumexp_k(log_softmax(w)_k + sum_c log p_{c,k}).
 * Computed in double; one position per loop step in parallel (deterministic). */

/* The NLL per position [N x H x W] (summed over the C channels), folded by
 * `red` ('mean' divides by N*H*W). nr_mix <= 0 infers K from P; bins in
 * [2, 65536]. x must lie in [-1, 1] and is data: it must not require grad (no
 * gradient in x). Differentiable in params by a fused kernel; a second
 * derivative (the gradient's own gradient) is refused with a message. */
em_tensor *em_loss_dmol(em_tensor *params, em_tensor *x, int nr_mix, int bins, em_reduction red);

/* Draws x [N x C x H x W] from the mixture given by params (the layout above;
 * channels 1 or 3, nr_mix <= 0 inferred from P): per position a component by
 * Gumbel-max over the logits, then each channel by the logistic's inverse CDF
 * m + e^s (log u - log(1 - u)), the RGB coefficients applied to the channels
 * drawn before, each clamped to [-1, 1]. The uniforms u (clamped to
 * [1e-5, 1 - 1e-5], as the reference) are one em_rand tensor
 * [N x (K + C) x H x W] drawn first: planes 0..K-1 feed the Gumbel noise, planes
 * K..K+C-1 the channels', so a seed gives the same samples at any thread count.
 * quantize rounds every channel to the nearest of `bins` levels before it
 * enters the next channel's mean, so the draw follows the distribution
 * em_loss_dmol scores with the same bins (up to the clamp of u and the loss's
 * tiny-probability approximation); without it values are continuous and the
 * clamped continuous values feed the next channel, as in the reference. Not
 * differentiable (the result records no graph). */
em_tensor *em_sample_dmol(em_tensor *params, int nr_mix, int channels, int bins, bool quantize);

#endif
