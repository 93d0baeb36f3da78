/* test_storage.c — storages and the size-bucketed block cache: sizes and
 * alignment, reuse of freed blocks (hits) in a steady loop, a burst of frees
 * kept for the next burst of allocations, the byte limit, clearing, the live /
 * cached byte counts, refcounts and versions, and out-of-memory failures that
 * are errors, not crashes. */
#include <stdint.h>
#include <stdlib.h>

#include "em_storage.h"
#include "test.h"

#define DEFAULT_LIMIT ((size_t)512 << 20)

TEST(storage_sizes_and_alignment) {
    const int64_t sizes[] = {0, 1, 15, 16, 4095, 4096, 4097, 262144, 262145, 1000003};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        em_storage *s = em_storage_new(sizes[i]);
        CHECK(s != NULL);
        if (!s) continue;
        size_t bytes = (size_t)sizes[i] * sizeof(float);
        CHECK(s->numel == sizes[i] && s->refcount == 1 && s->version == 0 && !s->accounted);
        CHECK(s->capacity >= bytes && s->capacity > 0);
        /* at most 25% slack once cached (>= 16 KiB), 64-byte steps below */
        if (bytes >= 16384) CHECK(s->capacity <= bytes + bytes / 4);
        else CHECK(s->capacity - bytes <= 64);
        /* cached blocks are cache-line aligned; small ones have malloc's 16 */
        CHECK(((uintptr_t)s->data % (bytes >= 16384 ? 64 : 16)) == 0);
        if (sizes[i] > 0) { /* the whole block is writable */
            s->data[0] = 1.0f;
            s->data[sizes[i] - 1] = 2.0f;
        }
        em_storage_release(s);
    }
}

TEST(storage_cache_reuses_a_freed_block) {
    em_storage_cache_clear();
    em_storage *a = em_storage_new(262144);
    void *block = a->data;
    em_cache_stats before = em_storage_cache_stats();
    em_storage_release(a);
    em_cache_stats mid = em_storage_cache_stats();
    CHECK(mid.cached_bytes == before.cached_bytes + (size_t)262144 * 4);
    CHECK(mid.live_bytes + (size_t)262144 * 4 == before.live_bytes);
    /* the same size, and a size in the same bucket, get the block back */
    em_storage *b = em_storage_new(262144 - 100);
    em_cache_stats after = em_storage_cache_stats();
    CHECK(b->data == block);
    CHECK(after.hits == mid.hits + 1 && after.misses == mid.misses);
    CHECK(after.cached_bytes == before.cached_bytes);
    em_storage_release(b);
}

TEST(storage_steady_loop_hits_the_cache) {
    em_storage_cache_clear();
    /* warm up: one block of each size a "step" uses */
    const int64_t step_sizes[] = {100000, 262144, 5000, 70000};
    for (int k = 0; k < 4; k++) em_storage_release(em_storage_new(step_sizes[k]));
    em_cache_stats before = em_storage_cache_stats();
    for (int it = 0; it < 200; it++) {
        em_storage *s[4];
        for (int k = 0; k < 4; k++) s[k] = em_storage_new(step_sizes[k]);
        for (int k = 0; k < 4; k++) em_storage_release(s[k]);
    }
    em_cache_stats after = em_storage_cache_stats();
    CHECK(after.misses == before.misses);          /* 5000 floats = 20 KB: cached too */
    CHECK(after.hits == before.hits + 200 * 4);
    CHECK(after.live_bytes == before.live_bytes);
}

TEST(storage_cache_keeps_a_burst_of_frees) {
    /* a garbage collection frees many same-sized tensors at once; the next
     * burst of allocations must find them all in the cache */
    em_storage_cache_clear();
    enum { N = 100 };
    em_storage *s[N];
    for (int i = 0; i < N; i++) s[i] = em_storage_new(262144);
    for (int i = 0; i < N; i++) em_storage_release(s[i]);
    em_cache_stats mid = em_storage_cache_stats();
    CHECK(mid.cached_bytes >= (size_t)N * 262144 * 4);
    for (int i = 0; i < N; i++) s[i] = em_storage_new(262144);
    em_cache_stats after = em_storage_cache_stats();
    CHECK(after.hits == mid.hits + N && after.misses == mid.misses);
    for (int i = 0; i < N; i++) em_storage_release(s[i]);
    em_storage_cache_clear();
}

TEST(storage_cache_limit_and_clear) {
    em_storage_cache_clear();
    CHECK(em_storage_cache_stats().cached_bytes == 0);
    /* limit 0 disables caching */
    em_storage_cache_set_limit(0);
    em_storage *a = em_storage_new(262144);
    em_storage_release(a);
    CHECK(em_storage_cache_stats().cached_bytes == 0);
    em_cache_stats s0 = em_storage_cache_stats();
    em_storage *b = em_storage_new(262144);
    CHECK(em_storage_cache_stats().misses == s0.misses + 1);
    em_storage_release(b);
    /* a limit of 3 MiB keeps at most three 1 MiB blocks */
    em_storage_cache_set_limit((size_t)3 << 20);
    em_storage *c[5];
    for (int i = 0; i < 5; i++) c[i] = em_storage_new(262144);
    for (int i = 0; i < 5; i++) em_storage_release(c[i]);
    CHECK(em_storage_cache_stats().cached_bytes == (size_t)3 << 20);
    /* lowering the limit below what is held empties the cache */
    em_storage_cache_set_limit((size_t)1 << 20);
    CHECK(em_storage_cache_stats().cached_bytes == 0);
    em_storage_cache_set_limit(DEFAULT_LIMIT);
    em_storage *d = em_storage_new(262144);
    em_storage_release(d);
    CHECK(em_storage_cache_stats().cached_bytes == (size_t)1 << 20);
    em_storage_cache_clear();
    CHECK(em_storage_cache_stats().cached_bytes == 0);
}

TEST(storage_small_blocks_bypass_the_cache) {
    em_storage_cache_clear();
    em_cache_stats before = em_storage_cache_stats();
    em_storage *s = em_storage_new(100); /* 400 bytes */
    em_storage_release(s);
    em_cache_stats after = em_storage_cache_stats();
    CHECK(after.cached_bytes == 0);
    CHECK(after.live_bytes == before.live_bytes);
}

TEST(storage_refcount_through_tensors_and_views) {
    int64_t shape[2] = {64, 64};
    em_tensor *t = em_tensor_zeros(2, shape);
    em_storage *s = t->storage;
    em_cache_stats live0 = em_storage_cache_stats();
    em_tensor *v = em_transpose(t, 0, 1);
    em_tensor *w = em_select(v, 0, 3);
    CHECK(s->refcount == 3);
    CHECK(em_tensor_storage_bytes(w) == s->capacity && s->capacity == 64 * 64 * 4);
    em_tensor_release(t);
    em_tensor_release(v);
    CHECK(s->refcount == 1);
    CHECK(em_storage_cache_stats().live_bytes == live0.live_bytes); /* still alive */
    em_tensor_release(w); /* the last one frees the storage */
    CHECK(em_storage_cache_stats().live_bytes + 64 * 64 * 4 == live0.live_bytes);
}

TEST(storage_out_of_memory_is_an_error_not_a_crash) {
    em_storage *s = em_storage_new((int64_t)1 << 40);
    CHECK(s == NULL);
    CHECK_ERROR("out of memory");
    s = em_storage_new(INT64_MAX / 2);
    CHECK(s == NULL);
    CHECK_ERROR("out of memory");
    s = em_storage_new(-5);
    CHECK(s == NULL);
    CHECK_ERROR("storage: negative size -5");
    /* through the tensor functions: 2^40 elements, and a shape whose product overflows */
    int64_t big[4] = {1024, 1024, 1024, 1024};
    CHECK(em_tensor_zeros(4, big) == NULL);
    CHECK_ERROR("out of memory: a tensor of 1099511627776 elements");
    int64_t huge[3] = {(int64_t)1 << 30, (int64_t)1 << 30, (int64_t)1 << 30};
    CHECK(em_tensor_empty(3, huge) == NULL);
    CHECK_ERROR("out of memory: empty: the shape overflows");
    /* nothing leaked into the counters */
    em_storage *ok = em_storage_new(10);
    CHECK(ok != NULL);
    em_storage_release(ok);
}

/* A cache full of sizes no longer used makes room for the size in use now. */
TEST(storage_cache_evicts_stale_sizes) {
    em_storage_cache_clear();
    em_storage_cache_set_limit((size_t)1 << 20); /* 1 MiB */
    em_storage *old[8];
    for (int i = 0; i < 8; i++) old[i] = em_storage_new(32768); /* 128 KiB each: 1 MiB */
    for (int i = 0; i < 8; i++) em_storage_release(old[i]);
    CHECK(em_storage_cache_stats().cached_bytes == (size_t)1 << 20);
    em_storage *s = em_storage_new(20000); /* another bucket (~80 KiB) */
    em_storage_release(s);                 /* must evict to be cached */
    em_cache_stats before = em_storage_cache_stats();
    s = em_storage_new(20000);
    em_cache_stats after = em_storage_cache_stats();
    CHECK(after.hits == before.hits + 1);
    CHECK(after.misses == before.misses);
    CHECK(after.cached_bytes <= (size_t)1 << 20);
    em_storage_release(s);
    em_storage_cache_set_limit((size_t)512 << 20);
    em_storage_cache_clear();
}
