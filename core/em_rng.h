/* em_rng.h — the one seedable generator (xoshiro256**, seeded by splitmix64)
 * behind every random op, dropout, reparameterization, shuffling and init.
 * Draws are sequential, so a seed gives the same numbers at any thread count. */
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

#endif
