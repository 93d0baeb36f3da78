/* em_iter.h — strided, broadcasting iteration over up to 4 operands.
 *
 * Operand 0 is the output (its shape is the iteration shape); the others are
 * broadcast to it (stride 0 on broadcast dims). Dims that are contiguous for
 * every operand are merged, then a row function runs over the innermost dim;
 * rows are split across threads when the work is large. */
#ifndef EM_ITER_H
#define EM_ITER_H

#include "em_tensor.h"

#define EM_ITER_MAX_OPS 4

/* A row: n elements; p[k] points at operand k's first element, s[k] its stride. */
typedef void (*em_row_fn)(int64_t n, float *const *p, const int64_t *s, const void *ctx);

/* Runs `row` over out's shape with the inputs broadcast to it. The inputs'
 * shapes must already be known to broadcast (em_broadcast_shape). */
void em_iter_run(em_tensor *out, int n_in, em_tensor *const *in, em_row_fn row,
                 const void *ctx);

/* Elements below which a loop stays on one thread. */
#define EM_PARALLEL_MIN 32768

#endif
