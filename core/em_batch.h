/* em_batch.h — assembling mini-batches for data loaders: a random
 * permutation from the shared generator, a row gather that copies the rows a
 * permutation slice names into one contiguous batch, and a per-sample random
 * horizontal flip. Index tensors hold 0-based row numbers as floats (exact up
 * to 2^24 rows). None of these record autograd nodes: batches are data. */
#ifndef EM_BATCH_H
#define EM_BATCH_H

#include "em_tensor.h"

/* The largest row count an index tensor can address exactly (float32). */
#define EM_BATCH_MAX_ROWS ((int64_t)1 << 24)

/* A random permutation of 0..n-1 as a float tensor [n] (Fisher-Yates on the
 * shared generator, so ember.manual_seed makes it reproducible). */
em_tensor *em_randperm(int64_t n);

/* out[i] = src[index[start + i]] for i < count: src [N x ...] (any strides),
 * index 1-D [M] with 0 <= start, start + count <= M; out [count x ...],
 * contiguous. Every index is checked (an integer in 0..N-1) before copying. */
em_tensor *em_gather_rows(em_tensor *src, em_tensor *index, int64_t start, int64_t count);

/* A copy of x [N x ... x W] in which each sample (along dim 0) is mirrored
 * along its last dim with probability p, drawn per sample in order. */
em_tensor *em_random_hflip(em_tensor *x, double p);

#endif
