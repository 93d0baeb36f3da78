/* em_storage.h — refcounted float buffers behind tensors, with a size-bucketed
 * cache so a steady loop of same-shaped ops reuses blocks instead of calling
 * malloc/free (and page-faulting fresh mmap'd memory) for big buffers.
 * Lifetime functions are called from one thread (the Lua state's). */
#ifndef EM_STORAGE_H
#define EM_STORAGE_H

#include "em_tensor.h"

/* A storage of `numel` floats, uninitialised; NULL + message when out of memory. */
em_storage *em_storage_new(int64_t numel);
void em_storage_retain(em_storage *s);
void em_storage_release(em_storage *s);

/* Cache statistics and control (for tests, bench and ember.memory()). */
typedef struct em_cache_stats {
    size_t cached_bytes;  /* free blocks held for reuse */
    size_t live_bytes;    /* blocks handed out to storages */
    uint64_t hits, misses;
} em_cache_stats;
em_cache_stats em_storage_cache_stats(void);
void em_storage_cache_set_limit(size_t bytes); /* 0 disables the cache */
void em_storage_cache_clear(void);

#endif
