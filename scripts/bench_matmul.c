/* bench_matmul.c — the practical ceiling and our matmul against it, measured
 * in the same run: cblas_sgemm GFLOP/s and em_matmul GFLOP/s at n^3 for
 * n = 128, 512, 1024 (and 2048 for the ceiling), median of repeats.
 * Usage: bench_matmul [threads] */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "em_tensor.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Times sgemm and em_matmul on the same n x n operands, alternating them
 * `reps` times so machine noise hits both alike; returns the medians of each
 * and of the per-pair ratio sgemm_time / ember_time. */
static void time_pair(int64_t n, int reps, double *sgemm_s, double *ember_s, double *ratio) {
    int64_t shape[2] = {n, n};
    em_tensor *a = em_randn(2, shape), *b = em_randn(2, shape);
    em_tensor *c = em_tensor_zeros(2, shape);
    double ts[128], te[128], tr[128];
    for (int r = -2; r < reps; r++) { /* the first two warm up */
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f,
                    a->storage->data, (int)n, b->storage->data, (int)n, 0.0f, c->storage->data,
                    (int)n);
        double t1 = now();
        em_tensor *d = em_matmul(a, b);
        double t2 = now();
        em_tensor_release(d);
        if (r >= 0) {
            ts[r] = t1 - t0;
            te[r] = t2 - t1;
            tr[r] = ts[r] / te[r];
        }
    }
    qsort(ts, (size_t)reps, sizeof ts[0], cmp_double);
    qsort(te, (size_t)reps, sizeof te[0], cmp_double);
    qsort(tr, (size_t)reps, sizeof tr[0], cmp_double);
    *sgemm_s = ts[reps / 2];
    *ember_s = te[reps / 2];
    *ratio = tr[reps / 2];
    em_tensor_release(a);
    em_tensor_release(b);
    em_tensor_release(c);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    em_set_num_threads(threads);
    printf("matmul (threads %d, median of repeats; GFLOP/s = 2 n^3 / time)\n", threads);
    printf("%6s %14s %14s %8s\n", "n", "sgemm GFLOP/s", "ember GFLOP/s", "ember/sgemm (median of pairs)");
    int64_t sizes[] = {128, 512, 1024, 2048};
    for (int i = 0; i < 4; i++) {
        int64_t n = sizes[i];
        int reps = n <= 128 ? 101 : n <= 512 ? 41 : n <= 1024 ? 21 : 7;
        double ts, te, ratio;
        time_pair(n, reps, &ts, &te, &ratio);
        double flop = 2.0 * (double)n * (double)n * (double)n;
        printf("%6lld %14.1f %14.1f %8.3f%s\n", (long long)n, flop / ts / 1e9, flop / te / 1e9,
               ratio, n == 2048 ? "   (2048: the practical ceiling)" : "");
    }
    return 0;
}
