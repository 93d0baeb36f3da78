/* test_rng.c — the block-parallel normal fill (em_randn / normal_) against its
 * naive reference, sequential em_rng_normal() calls: the same numbers, bit for
 * bit, at any size (below, at and across the block boundaries) and thread count. */
#include "em_rng.h"
#include "em_tensor.h"
#include <stdlib.h>

#include "test.h"

static void check_fill(int64_t n, int threads, float mean, float std) {
    em_set_num_threads(threads);
    em_rng_seed(1234 + (uint64_t)n);
    float *want = malloc((size_t)n * sizeof *want);
    for (int64_t i = 0; i < n; i++) want[i] = (float)(mean + std * em_rng_normal());
    uint64_t after_ref[EM_RNG_STATE_WORDS];
    em_rng_get_state(after_ref);

    em_rng_seed(1234 + (uint64_t)n);
    int64_t shape[1] = {n};
    em_tensor *t = em_normal(1, shape, mean, std);
    CHECK(t != NULL);
    int64_t bad = -1;
    for (int64_t i = 0; t && i < n; i++)
        if (memcmp(&t->storage->data[i], &want[i], sizeof(float))) { bad = i; break; }
    if (bad >= 0) printf("    n=%lld threads=%d: first difference at %lld\n", (long long)n, threads, (long long)bad);
    CHECK(bad < 0);
    uint64_t after[EM_RNG_STATE_WORDS];
    em_rng_get_state(after);
    CHECK(!memcmp(after, after_ref, sizeof after)); /* the stream continues where it would */

    em_rng_seed(1234 + (uint64_t)n);
    if (t) {
        CHECK(em_normal_(t, mean, std) == EM_OK);
        CHECK(!memcmp(t->storage->data, want, (size_t)n * sizeof(float)));
    }
    em_tensor_release(t);
    free(want);
}

TEST(rng_normal_fill_matches_sequential_draws) {
    const int64_t sizes[] = {1, 4095, 4096, 8191, 8192, 8193, 20000, 262144};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
        for (int threads = 1; threads <= 2; threads++) check_fill(sizes[k], threads, 0.5f, 2.0f);
    em_set_num_threads(1);
}
