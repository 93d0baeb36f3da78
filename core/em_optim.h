/* em_optim.h — optimizer updates and gradient clipping over a parameter list.
 *
 * One call per training step updates every parameter in place from its
 * ->grad (parameters whose grad is NULL are skipped), with nothing recorded
 * by autograd. The per-parameter state (moment buffers shaped like the
 * parameter, the step count) belongs to the caller, so each optimizer — a
 * GAN's two, say — keeps its own. Everything is checked before anything is
 * written, so a bad call changes nothing. The math follows PyTorch's
 * torch.optim (the default, single-tensor forms). */
#ifndef EM_OPTIM_H
#define EM_OPTIM_H

#include <stdbool.h>

#include "em_tensor.h"

#define EM_OPTIM_MAX_BUFFERS 3

/* One parameter and its state. */
typedef struct {
    em_tensor *param; /* contiguous; updated in place from param->grad */
    /* Buffers shaped like param (contiguous), NULL where unused:
     *   SGD:     [0] momentum_buffer (when momentum > 0)
     *   Adam(W): [0] exp_avg, [1] exp_avg_sq, [2] max_exp_avg_sq (amsgrad)
     *   RMSprop: [0] square_avg, [1] momentum_buffer (momentum > 0),
     *            [2] grad_avg (centered) */
    em_tensor *buf[EM_OPTIM_MAX_BUFFERS];
    int64_t step; /* updates applied so far; incremented for each update */
} em_optim_slot;

typedef struct {
    double lr, momentum, dampening, weight_decay;
    bool nesterov; /* needs momentum > 0 and dampening == 0 */
} em_sgd_hparams;

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    bool amsgrad;
    bool decoupled; /* AdamW: p *= 1 - lr wd, instead of adding wd p to the gradient */
} em_adam_hparams;

typedef struct {
    double lr, alpha, eps, weight_decay, momentum;
    bool centered;
} em_rmsprop_hparams;

/* SGD: d = g + wd p; with momentum, buf = d on the first step, then
 * buf = momentum buf + (1 - dampening) d, and d = buf (nesterov: d + momentum buf);
 * p -= lr d. */
int em_optim_sgd_step(const em_sgd_hparams *h, int n, em_optim_slot *slots);

/* Adam / AdamW: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2 (amsgrad: vmax = max(vmax, v)),
 * p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
int em_optim_adam_step(const em_adam_hparams *h, int n, em_optim_slot *slots);

/* RMSprop: sq = alpha sq + (1-alpha) g^2; avg = sqrt(sq) (centered: with
 * ga = alpha ga + (1-alpha) g, avg = sqrt(sq - ga^2)) + eps; with momentum,
 * buf = momentum buf + g / avg and p -= lr buf, else p -= lr g / avg. */
int em_optim_rmsprop_step(const em_rmsprop_hparams *h, int n, em_optim_slot *slots);

/* Scales the gradients of params[0..n) together so that their total norm
 * (norm_type > 0, or INFINITY for the max-norm) is at most max_norm; writes
 * the norm before clipping to *total_norm. Non-finite norms leave the
 * gradients unchanged. */
/* The first parameter (0-based) whose gradient holds a NaN or an infinity, or
 * -1 when every gradient is finite (-2: an error, message set); *count gets
 * how many of that gradient's elements are not finite. The optimizers' Lua
 * side calls it before each step, which would otherwise spread the NaN into
 * the parameters and the moment buffers. */
int em_optim_first_nonfinite_grad(int n, em_tensor *const *params, int64_t *count);

int em_optim_clip_grad_norm_(int n, em_tensor *const *params, double max_norm,
                             double norm_type, double *total_norm);
/* Clamps every gradient element into [-clip, clip]. */
int em_optim_clip_grad_value_(int n, em_tensor *const *params, double clip);
/* Clamps every parameter element into [-c, c] (the WGAN critic's weight clipping). */
int em_optim_clip_weights_(int n, em_tensor *const *params, double c);

#endif
