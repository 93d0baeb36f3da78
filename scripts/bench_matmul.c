/* bench_matmul.c — the practical ceiling and our matmul against it, measured
 * in the same run: cblas_sgemm GFLOP/s and em_matmul GFLOP/s at n^3 for
 * n = 128, 512, 1024 (and 2048 for the ceiling), median of repeats.
 * First it names the kernel OpenBLAS runs (its own pick for this processor, or
 * the one OPENBLAS_CORETYPE imposes) and checks that kernel's sgemm against a
 * double-precision loop on small shapes of every transpose pair: a rate is only
 * worth printing for a kernel that computes the right numbers (some older
 * OpenBLAS kernels do not on some processors). Exits 3 if the check fails.
 * Usage: bench_matmul [threads] */
#include <cblas.h>
#include <math.h>
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

/* OpenBLAS's name for the kernel it dispatches to (e.g. "Haswell", "Cooperlake"). */
extern char *openblas_get_corename(void);

/* sgemm on row-major [m x k] @ [k x n] (each side transposed or not) against a
 * double loop; returns the worst |error| / (sqrt(k) * eps * sum |a_i b_i|), the
 * error in units of float round-off's usual growth (below 1 is ordinary). */
static double sgemm_error(int m, int n, int k, int trans_a, int trans_b, unsigned *seed) {
    float *a = malloc(sizeof(float) * (size_t)(m * k)), *b = malloc(sizeof(float) * (size_t)(k * n));
    float *c = malloc(sizeof(float) * (size_t)(m * n));
    for (int i = 0; i < m * k; i++) a[i] = (float)rand_r(seed) / (float)RAND_MAX - 0.5f;
    for (int i = 0; i < k * n; i++) b[i] = (float)rand_r(seed) / (float)RAND_MAX - 0.5f;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                m, n, k, 1.0f, a, trans_a ? m : k, b, trans_b ? k : n, 0.0f, c, n);
    double worst = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0, mag = 0;
            for (int p = 0; p < k; p++) {
                double x = trans_a ? a[p * m + i] : a[i * k + p], y = trans_b ? b[j * k + p] : b[p * n + j];
                s += x * y;
                mag += fabs(x * y);
            }
            double e = fabs((double)c[i * n + j] - s) / (sqrt((double)k) * 0x1p-24 * mag + 1e-30);
            if (!(e <= worst)) worst = e; /* a NaN sticks */
        }
    free(a);
    free(b);
    free(c);
    return worst;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    em_set_num_threads(threads);
    const char *forced = getenv("OPENBLAS_CORETYPE");
    printf("OpenBLAS kernel: %s (%s)\n", openblas_get_corename(),
           forced && *forced ? "set by OPENBLAS_CORETYPE in the environment" : "OpenBLAS's own pick");
    /* shapes around the kernels' block edges and the small-matrix paths */
    static const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {16, 16, 16}, {33, 17, 65}, {64, 128, 200},
                                    {128, 20, 400}, {129, 97, 255}, {200, 3, 300}};
    unsigned seed = 1;
    double worst = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++) {
            double e = sgemm_error(shapes[s][0], shapes[s][1], shapes[s][2], t & 1, t >> 1, &seed);
            if (!(e <= worst)) worst = e;
        }
    /* ordinary round-off stays well below 1 unit; 4 leaves room and still catches a wrong kernel */
    printf("sgemm against a double-precision loop (8 shapes x 4 transpose pairs): worst error %.3f "
           "round-off units%s\n", worst, worst <= 4 ? "" : "  WRONG RESULTS: not timing this kernel");
    if (!(worst <= 4)) return 3;
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
