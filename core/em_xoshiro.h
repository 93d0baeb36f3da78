/* em_xoshiro.h — xoshiro256** (Blackman & Vigna) on a caller's state: the one
 * definition of its state update, used by the generator (em_rng.c) and by its
 * jump-ahead (em_rng_jump.c), which needs the update without the output. */
#ifndef EM_XOSHIRO_H
#define EM_XOSHIRO_H

#include <stdint.h>

static inline uint64_t em_xoshiro_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* the linear state update s -> T s (over GF(2)) */
static inline void em_xoshiro_step(uint64_t *s) {
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = em_xoshiro_rotl(s[3], 45);
}

/* the next output word, and the state stepped */
static inline uint64_t em_xoshiro_next(uint64_t *s) {
    uint64_t result = em_xoshiro_rotl(s[1] * 5, 7) * 9;
    em_xoshiro_step(s);
    return result;
}

#endif
