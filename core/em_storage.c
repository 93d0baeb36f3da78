/* em_storage.c — storages and the size-bucketed block cache.
 *
 * Block sizes are rounded up to one of four steps per power of two (so at most
 * 25% slack); each bucket keeps a stack of free blocks, all buckets together
 * holding at most the cache limit in bytes (so the burst of frees of a full
 * garbage collection is kept for the next steps, not handed back to malloc).
 * Blocks below EM_CACHE_MIN_BYTES go straight to malloc, which handles small
 * sizes well. A request larger than the machine's RAM fails at once. */
#include "em_storage.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EM_CACHE_MIN_BYTES ((size_t)16384)
#define EM_CACHE_BUCKETS 256
#define EM_ALIGN 64

typedef struct {
    int count, cap;
    void **blocks; /* grown on demand; the byte limit bounds the cache */
} em_bucket;

static em_bucket cache_buckets[EM_CACHE_BUCKETS];
static size_t cache_limit = (size_t)512 << 20;
static em_cache_stats stats;

/* Rounds bytes up to a bucket size; returns the bucket index (or -1 for sizes
 * that are not cached) and the rounded size in *rounded. */
static int bucket_of(size_t bytes, size_t *rounded) {
    if (bytes < EM_CACHE_MIN_BYTES) {
        *rounded = (bytes + EM_ALIGN - 1) / EM_ALIGN * EM_ALIGN;
        if (*rounded == 0) *rounded = EM_ALIGN;
        /* decided on the rounded size, which release sees as the capacity:
         * a malloc'd block must never land in a (64-aligned) bucket */
        if (*rounded < EM_CACHE_MIN_BYTES) return -1;
        bytes = *rounded;
    }
    int octave = 63 - __builtin_clzll((unsigned long long)bytes); /* 2^octave <= bytes */
    size_t base = (size_t)1 << octave;
    size_t step = base / 4;
    size_t r = (bytes + step - 1) / step * step;
    if (r == base * 2) { octave++; base *= 2; step = base / 4; r = base; }
    int sub = (int)((r - base) / step); /* 0..3 */
    *rounded = r;
    int idx = octave * 4 + sub;
    return idx < EM_CACHE_BUCKETS ? idx : -1;
}

static void *block_alloc(size_t bytes, int bucket) {
    if (bucket >= 0 && cache_buckets[bucket].count > 0) {
        em_bucket *b = &cache_buckets[bucket];
        stats.hits++;
        stats.cached_bytes -= bytes;
        return b->blocks[--b->count];
    }
    void *p = NULL;
    if (bucket < 0) { /* small: malloc's own alignment (16) is plenty */
        p = malloc(bytes);
        return p;
    }
    stats.misses++; /* a miss of the cache: only sizes it holds count */
    if (posix_memalign(&p, EM_ALIGN, bytes) != 0) {
        /* Give the cache back to the system and try once more. */
        em_storage_cache_clear();
        if (posix_memalign(&p, EM_ALIGN, bytes) != 0) return NULL;
    }
    return p;
}

/* Frees one cached block of another bucket, largest sizes first; false when
 * there is none. Cached blocks are unused, so any of them may go: evicting keeps
 * the cache following the sizes the program uses now, not those it used once. */
static bool evict_one(int keep_bucket) {
    for (int i = EM_CACHE_BUCKETS - 1; i >= 0; i--) {
        em_bucket *b = &cache_buckets[i];
        if (i == keep_bucket || b->count == 0) continue;
        size_t base = (size_t)1 << (i / 4); /* bucket i holds base + (i % 4) * base / 4 */
        free(b->blocks[--b->count]);
        stats.cached_bytes -= base + (size_t)(i % 4) * (base / 4);
        return true;
    }
    return false;
}

static void block_free(void *p, size_t bytes, int bucket) {
    if (bucket >= 0 && bytes <= cache_limit)
        while (stats.cached_bytes + bytes > cache_limit && evict_one(bucket)) {}
    if (bucket >= 0 && stats.cached_bytes + bytes <= cache_limit) {
        em_bucket *b = &cache_buckets[bucket];
        if (b->count == b->cap) {
            int cap = b->cap ? 2 * b->cap : 8;
            void **blocks = realloc(b->blocks, (size_t)cap * sizeof *blocks);
            if (!blocks) {
                free(p);
                return;
            }
            b->blocks = blocks;
            b->cap = cap;
        }
        b->blocks[b->count++] = p;
        stats.cached_bytes += bytes;
        return;
    }
    free(p);
}

/* Bytes of physical memory (0 when unknown): no tensor can be larger, and
 * asking malloc anyway misbehaves under overcommit or a sanitizer. */
static uint64_t physical_memory_bytes(void) {
    static uint64_t bytes;
    if (!bytes) {
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        if (pages > 0 && page > 0) bytes = (uint64_t)pages * (uint64_t)page;
    }
    return bytes;
}

em_storage *em_storage_new(int64_t numel) {
    if (numel < 0) {
        em_error_set("storage: negative size %lld", (long long)numel);
        return NULL;
    }
    if ((uint64_t)numel > (SIZE_MAX / 2) / sizeof(float)) {
        em_error_set("out of memory: a tensor of %lld elements is too large to allocate",
                     (long long)numel);
        return NULL;
    }
    uint64_t ram = physical_memory_bytes();
    if (ram && (uint64_t)numel * sizeof(float) > ram) {
        em_error_set("out of memory: a tensor of %lld elements needs %.1f GiB, more than this "
                     "machine's %.1f GiB of memory", (long long)numel,
                     (double)numel * sizeof(float) / (1024.0 * 1024.0 * 1024.0),
                     (double)ram / (1024.0 * 1024.0 * 1024.0));
        return NULL;
    }
    em_storage *s = malloc(sizeof *s);
    if (!s) {
        em_error_set("out of memory: cannot allocate a storage header");
        return NULL;
    }
    size_t bytes = (size_t)numel * sizeof(float);
    size_t rounded;
    int bucket = bucket_of(bytes, &rounded);
    s->data = block_alloc(rounded, bucket);
    if (!s->data) {
        free(s);
        em_error_set("out of memory: cannot allocate %.1f MiB for a tensor of %lld elements",
                     (double)bytes / (1024.0 * 1024.0), (long long)numel);
        return NULL;
    }
    s->refcount = 1;
    s->version = 0;
    s->accounted = false;
    s->numel = numel;
    s->capacity = rounded;
    stats.live_bytes += rounded;
    return s;
}

void em_storage_retain(em_storage *s) { s->refcount++; }

void em_storage_release(em_storage *s) {
    if (!s || --s->refcount > 0) return;
    size_t rounded;
    int bucket = bucket_of(s->capacity, &rounded);
    stats.live_bytes -= s->capacity;
    block_free(s->data, s->capacity, bucket);
    free(s);
}

em_cache_stats em_storage_cache_stats(void) { return stats; }

void em_storage_cache_set_limit(size_t bytes) {
    cache_limit = bytes;
    if (stats.cached_bytes > cache_limit) em_storage_cache_clear();
}

void em_storage_cache_clear(void) {
    for (int i = 0; i < EM_CACHE_BUCKETS; i++) {
        em_bucket *b = &cache_buckets[i];
        while (b->count > 0) free(b->blocks[--b->count]);
    }
    stats.cached_bytes = 0;
}
