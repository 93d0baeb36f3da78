/* em_threads.c — the one place that decides thread counts: OpenBLAS's and
 * our OpenMP loops' together, so the two never oversubscribe the cores. */
#include <omp.h>

#include "em_tensor.h"

extern void openblas_set_num_threads(int);

static int current_threads;

void em_set_num_threads(int n) {
    if (n < 1) n = 1;
    current_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int em_get_num_threads(void) {
    if (current_threads == 0) current_threads = omp_get_max_threads();
    return current_threads;
}
