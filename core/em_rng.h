/* em_rng.h — the one seedable generator (xoshiro256**, seeded by splitmix64)
 * behind every random op, dropout, reparameterization, shuffling and init.
 * Every draw is the next word(s) of one stream, so a seed gives the same numbers at
 * any thread count (large fills split the stream between threads by jumping). */
#ifndef EM_RNG_H
#define EM_RNG_H

#include <stdint.h>

#define EM_RNG_STATE_WORDS 4

void em_rng_seed(uint64_t seed);
uint64_t em_rng_u64(void);
double em_rng_uniform(void);          /* [0, 1) with 53 random bits */
double em_rng_normal(void);           /* N(0, 1) */
uint64_t em_rng_below(uint64_t n);    /* uniform in [0, n), unbiased; n > 0 */
void em_rng_get_state(uint64_t state[EM_RNG_STATE_WORDS]);
/* Fails (EM_ERR) on the all-zero state, which xoshiro cannot leave. */
int em_rng_set_state(const uint64_t state[EM_RNG_STATE_WORDS]);
/* Advances a state by d steps, as d em_rng_u64() calls would, in O(log d)
 * (em_rng_jump.c): the large fills draw their stretches of the one stream in
 * parallel from jumped states, so their numbers stay those of sequential draws. */
void em_rng_jump(uint64_t state[EM_RNG_STATE_WORDS], uint64_t d);

/* Data-parallel draws. While a shard is set, a random tensor whose first dim
 * is `rows` (this rank's rows of a global batch of `global_rows`) is drawn as
 * the whole global batch would be, and rows [offset, offset + rows) are kept:
 * every rank then consumes the generator alike and gets the very numbers one
 * process would give those rows (reparameterization noise, dropout masks,
 * binarization). Tensors of any other first dim are drawn whole, the same on
 * every rank. rows = 0 ends the shard. */
int em_rng_set_shard(int64_t global_rows, int64_t offset, int64_t rows);

#endif
