/* test_rng.c — the parallel fills (normal, uniform, bernoulli: each thread draws its
 * stretch of the one stream from a jumped state) against their naive references,
 * sequential em_rng_normal() / em_rng_uniform() calls: the same numbers, bit for bit,
 * at any size (below, at and across the block and split boundaries) and thread
 * count, the stream left where the sequential draws leave it; and the jump itself
 * against stepping the generator. */
#include "em_rng.h"
#include "em_tensor.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* em_rng_jump(s, d) against d steps of the generator, from several states, over
 * the stepping path (d < 256), the polynomial path and its edges. */
TEST(rng_jump_equals_stepping) {
    const uint64_t dists[] = {0, 1, 2, 255, 256, 257, 1000, 4096, 65537, 131072, 1000003};
    for (uint64_t seed = 1; seed <= 3; seed++)
        for (size_t k = 0; k < sizeof dists / sizeof *dists; k++) {
            em_rng_seed(seed * 7919);
            uint64_t jumped[EM_RNG_STATE_WORDS], stepped[EM_RNG_STATE_WORDS];
            em_rng_get_state(jumped);
            em_rng_jump(jumped, dists[k]);
            for (uint64_t i = 0; i < dists[k]; i++) (void)em_rng_u64();
            em_rng_get_state(stepped);
            if (memcmp(jumped, stepped, sizeof jumped))
                printf("    seed %llu: jump by %llu differs from stepping\n", (unsigned long long)seed,
                       (unsigned long long)dists[k]);
            CHECK(!memcmp(jumped, stepped, sizeof jumped));
        }
    /* two jumps compose: 2^40 + 12345 = 2^40 then 12345 (no stepping reference here) */
    uint64_t a[EM_RNG_STATE_WORDS] = {1, 2, 3, 4}, b[EM_RNG_STATE_WORDS] = {1, 2, 3, 4};
    em_rng_jump(a, (1ULL << 40) + 12345);
    em_rng_jump(b, 1ULL << 40);
    em_rng_jump(b, 12345);
    CHECK(!memcmp(a, b, sizeof a));
}

TEST(rng_normal_fill_is_one_stream_at_any_thread_count) {
    /* above the parallel split (8192 values), uneven splits, three threads */
    const int64_t sizes[] = {8191, 8192, 8193, 100003, 300000};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
        for (int threads = 1; threads <= 3; threads++) check_fill(sizes[k], threads, -1.0f, 0.25f);
    em_set_num_threads(1);
}

/* rand / uniform_ / bernoulli against sequential em_rng_uniform() draws */
static void check_one_word_fills(int64_t n, int threads) {
    em_set_num_threads(threads);
    float *want_u = malloc((size_t)n * sizeof *want_u), *want_b = malloc((size_t)n * sizeof *want_b);
    int64_t shape[1] = {n};
    em_tensor *p = em_tensor_empty(1, shape);
    for (int64_t i = 0; i < n; i++) p->storage->data[i] = (float)(i % 7) / 6.0f;
    em_rng_seed(77 + (uint64_t)n);
    for (int64_t i = 0; i < n; i++) {
        float v = (float)(2.0 + 3.0 * em_rng_uniform());
        want_u[i] = v < 5.0f ? v : nextafterf(5.0f, 2.0f);
    }
    for (int64_t i = 0; i < n; i++) want_b[i] = em_rng_uniform() < p->storage->data[i] ? 1.0f : 0.0f;
    uint64_t after_ref[EM_RNG_STATE_WORDS], after[EM_RNG_STATE_WORDS];
    em_rng_get_state(after_ref);

    em_rng_seed(77 + (uint64_t)n);
    em_tensor *u = em_tensor_empty_like(p);
    CHECK(em_uniform_(u, 2.0f, 5.0f) == EM_OK);
    em_tensor *b = em_bernoulli(p);
    CHECK(b != NULL);
    em_rng_get_state(after);
    CHECK(!memcmp(u->storage->data, want_u, (size_t)n * sizeof(float)));
    CHECK(b && !memcmp(b->storage->data, want_b, (size_t)n * sizeof(float)));
    CHECK(!memcmp(after, after_ref, sizeof after));
    em_tensor_release(u);
    em_tensor_release(b);
    em_tensor_release(p);
    free(want_u);
    free(want_b);
}

TEST(rng_uniform_and_bernoulli_fills_are_one_stream_at_any_thread_count) {
    /* below and above the 8-lane cut (4096 per stretch, the last 0..7 one by one), the
     * parallel split (32768), three threads */
    const int64_t sizes[] = {1000, 4095, 4096, 4103, 32767, 32768, 32769, 200001};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
        for (int threads = 1; threads <= 3; threads++) check_one_word_fills(sizes[k], threads);
    em_set_num_threads(1);
}

/* a shard's bernoulli rows are those of the whole batch's draw, and the stream
 * goes on from where the whole draw leaves it (the other rows skipped by jumps) */
TEST(rng_bernoulli_shard_skips_the_other_rows) {
    int64_t full_shape[2] = {8, 5000}, mine[2] = {3, 5000};
    em_tensor *pf = em_tensor_empty(2, full_shape), *pm = em_tensor_empty(2, mine);
    for (int64_t i = 0; i < pf->numel; i++) pf->storage->data[i] = 0.5f;
    for (int64_t i = 0; i < pm->numel; i++) pm->storage->data[i] = 0.5f;
    em_rng_seed(5);
    em_tensor *whole = em_bernoulli(pf);
    uint64_t after_whole[EM_RNG_STATE_WORDS], after_shard[EM_RNG_STATE_WORDS];
    em_rng_get_state(after_whole);
    em_rng_seed(5);
    CHECK(em_rng_set_shard(8, 2, 3) == EM_OK);
    em_tensor *part = em_bernoulli(pm);
    CHECK(em_rng_set_shard(0, 0, 0) == EM_OK);
    em_rng_get_state(after_shard);
    CHECK(whole && part && !memcmp(part->storage->data, whole->storage->data + 2 * 5000,
                                   (size_t)part->numel * sizeof(float)));
    CHECK(!memcmp(after_whole, after_shard, sizeof after_whole));
    em_tensor_release(whole);
    em_tensor_release(part);
    em_tensor_release(pf);
    em_tensor_release(pm);
}
