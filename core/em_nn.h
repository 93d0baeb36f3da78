/* em_nn.h — the neural-network layers of the core: 2-D convolution and its
 * transpose, pooling, nearest upsampling, batch normalization, softmax.
 *
 * Images are batched NCHW float32 ([N x C x H x W]). Every function is an
 * autograd op (em_ops.def, "layers") whose backward is written with these
 * same ops, so gradients of gradients work (gradient penalties through conv
 * layers). Inputs may be non-contiguous views; they are made contiguous once.
 * Like the rest of the core: inputs are borrowed, a returned tensor is one new
 * reference, NULL means failure with a message naming the function. */
#ifndef EM_NN_H
#define EM_NN_H

#include "em_tensor.h"

/* Causal masks of a convolution's kernel (PixelCNN, van den Oord et al. 2016).
 * With the kernel's centre at (kh / 2, kw / 2), the taps that exist are a
 * prefix of the kernel in raster order; the rest are not computed at all
 * (the products run over the kept taps only, and their weight gradient is 0):
 *   A  the taps strictly before the centre (rows above, then left of it)
 *   B  as A plus the centre itself
 *   V  every tap in the rows up to and including the centre row (Gated
 *      PixelCNN's vertical stack, before its shift down by one row)
 * mask_groups > 1 splits both channel counts into that many consecutive
 * groups (R, G, B): at the centre tap, weight [a][b] (a indexes dim 0, b dim 1
 * of the weight) is kept iff group(b) < group(a) for A and <= for B, so a
 * colour channel sees the earlier channels of its own pixel. */
typedef enum { EM_MASK_NONE = 0, EM_MASK_A, EM_MASK_B, EM_MASK_V } em_conv_mask;

/* Geometry of a convolution: (height, width) pairs and the group count.
 * output_padding is read by conv_transpose2d only. The same mask given to
 * conv2d, conv_transpose2d and conv2d_weight describes the same linear map
 * (they stay each other's gradients). */
typedef struct em_conv2d_args {
    int64_t stride[2];         /* >= 1 */
    int64_t padding[2];        /* >= 0, zeros added on both sides */
    int64_t dilation[2];       /* >= 1, spacing between kernel taps */
    int64_t output_padding[2]; /* conv_transpose2d: extra rows/cols, < stride */
    int64_t groups;            /* >= 1, divides both channel counts */
    em_conv_mask mask;         /* EM_MASK_NONE: every tap */
    int64_t mask_groups;       /* 0 or 1: no channel groups; > 1 only with A or B */
} em_conv2d_args;

/* stride 1, padding 0, dilation 1, output_padding 0, groups 1, no mask */
em_conv2d_args em_conv2d_defaults(void);

/* y = conv2d(x, w) + b: x [N x C x H x W], w [O x C/groups x kh x kw],
 * b [O] or NULL -> y [N x O x OH x OW] with
 * OH = (H + 2 pad - dil (kh - 1) - 1) / stride + 1 (floor), same for OW.
 * im2col + cblas_sgemm over a chunk of the batch at a time. */
em_tensor *em_conv2d(em_tensor *x, em_tensor *w, em_tensor *b, const em_conv2d_args *a);

/* The transpose (the gradient of conv2d with respect to its input):
 * x [N x C x H x W], w [C x O/groups x kh x kw], b [O] or NULL ->
 * y [N x O x OH x OW], OH = (H - 1) stride - 2 pad + dil (kh - 1) + out_pad + 1.
 * sgemm + col2im. */
em_tensor *em_conv_transpose2d(em_tensor *x, em_tensor *w, em_tensor *b,
                               const em_conv2d_args *a);

/* The gradient of conv2d with respect to its weight: for the input x
 * [N x C x H x W] and the output gradient gy [N x O x OH x OW] of a conv2d
 * with kernel kh x kw and geometry a, returns dw [O x C/groups x kh x kw].
 * Itself differentiable in x and gy. */
em_tensor *em_conv2d_weight(em_tensor *x, em_tensor *gy, int64_t kh, int64_t kw,
                            const em_conv2d_args *a);

/* The 0/1 tensor [D0 x D1 x kh x kw] of the weight entries a mask keeps
 * (conv2d: D0 out, D1 in channels; conv_transpose2d: D0 in, D1 out): what a
 * plain convolution would multiply its weight by to compute the same map. */
em_tensor *em_conv_mask_tensor(int64_t D0, int64_t D1, int64_t kh, int64_t kw,
                               const em_conv2d_args *a);

/* The gated activation unit: tanh(a) * sigmoid(b) for x = [a, b] split in
 * halves along dim 1, x [N x 2C x ...] -> [N x C x ...] (em_gate.c). */
em_tensor *em_gated_tanh(em_tensor *x);

/* Pooling windows: kernel, stride, padding as (height, width) pairs. */
typedef struct em_pool2d_args {
    int64_t kernel[2];      /* >= 1 */
    int64_t stride[2];      /* >= 1 */
    int64_t padding[2];     /* 0 .. kernel / 2 */
    bool count_include_pad; /* avg_pool2d: divide by kh kw (true) or by the
                               number of real (unpadded) elements (false) */
} em_pool2d_args;

/* Max over each window (padding never wins): x [N x C x H x W] ->
 * [N x C x OH x OW], OH = (H + 2 pad - kh) / stride + 1. The position of each
 * maximum is kept; the backward sends the gradient there. */
em_tensor *em_max_pool2d(em_tensor *x, const em_pool2d_args *a);
/* Test hook: true makes em_max_pool2d use its general kernel (the reference
 * its fast paths are compared with). */
extern bool em_pool_force_reference;
/* Mean over each window, same shapes as max_pool2d. */
em_tensor *em_avg_pool2d(em_tensor *x, const em_pool2d_args *a);
/* Nearest-neighbour upsampling by integer factors:
 * x [N x C x H x W] -> [N x C x H sh x W sw]. */
em_tensor *em_upsample_nearest2d(em_tensor *x, int64_t sh, int64_t sw);

/* Batch normalization over dim 1 (channels) of x [N x C] or [N x C x ...]:
 * y = (x - mean) / sqrt(var + eps) * weight + bias, weight/bias [C] or NULL.
 * training (or no running stats given): mean and biased var of the batch,
 * and running_mean/running_var [C] (when given) are updated in place, without
 * grad, as running = (1 - momentum) running + momentum stat, with the unbiased
 * var (PyTorch). Otherwise the running statistics are used. */
em_tensor *em_batch_norm(em_tensor *x, em_tensor *running_mean, em_tensor *running_var,
                         em_tensor *weight, em_tensor *bias, bool training, float momentum,
                         float eps);

/* softmax / log_softmax along dim (0-based, negative from the end), fused and
 * numerically stable (the max is subtracted first). Any shape. */
em_tensor *em_softmax(em_tensor *x, int dim);
em_tensor *em_log_softmax(em_tensor *x, int dim);

#endif
