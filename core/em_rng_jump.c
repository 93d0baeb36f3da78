/* em_rng_jump.c — jumping xoshiro256**'s state ahead by any number of steps in
 * O(log d), so that several threads can each draw their own stretch of ONE stream:
 * thread t starts where the sequential draws would reach word a_t, and the words,
 * hence every random tensor, are the same at any thread count.
 *
 * The state update s -> T s is linear over GF(2) (xors, shifts and rotations of the
 * 256 state bits), so T^d = r(T) with r(x) = x^d mod P(x), P the characteristic
 * polynomial of T (degree 256; primitive, since the period is 2^256 - 1). P is found
 * once by Berlekamp-Massey from 512 bits of one state bit's sequence (its minimal
 * polynomial is P for any nonzero start), x^d mod P by square-and-multiply, and
 * r(T) s = sum over r's set bits i of T^i s by 256 steps of the generator — the same
 * scheme as the published jump() for the fixed distance 2^128. */
#include <pthread.h>
#include <string.h>

#include "em_rng.h"
#include "em_xoshiro.h"

#define POLY_WORDS 4 /* a residue mod P: degree < 256 */
#define BM_WORDS 9   /* Berlekamp-Massey's polynomials: degree <= 512 */
#define BM_BITS 512  /* sequence bits: twice the degree */

static uint64_t charpoly_low[POLY_WORDS]; /* P(x) - x^256 */
static pthread_once_t charpoly_once = PTHREAD_ONCE_INIT;

static inline int bit(const uint64_t *p, int i) { return (int)((p[i >> 6] >> (i & 63)) & 1u); }

/* P from the sequence of state bit 0 of s[0], by Berlekamp-Massey over GF(2). */
static void find_charpoly(void) {
    uint8_t seq[BM_BITS];
    uint64_t s[4] = {0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL, 0x94d049bb133111ebULL,
                     0x2545f4914f6cdd1dULL};
    for (int n = 0; n < BM_BITS; n++) {
        seq[n] = (uint8_t)(s[0] & 1u);
        em_xoshiro_step(s);
    }
    /* connection polynomial C (c_0 = 1): seq[n] = sum_{i=1..L} c_i seq[n - i] */
    uint64_t C[BM_WORDS] = {1}, B[BM_WORDS] = {1}, T[BM_WORDS];
    int L = 0, m = 1;
    for (int n = 0; n < BM_BITS; n++) {
        int d = seq[n];
        for (int i = 1; i <= L; i++) d ^= bit(C, i) & seq[n - i];
        if (!d) {
            m++;
            continue;
        }
        memcpy(T, C, sizeof T);
        for (int i = BM_WORDS * 64 - 1 - m; i >= 0; i--) /* C ^= B x^m */
            if (bit(B, i)) C[(i + m) >> 6] ^= 1ULL << ((i + m) & 63);
        if (2 * L <= n) {
            L = n + 1 - L;
            memcpy(B, T, sizeof B);
            m = 1;
        } else {
            m++;
        }
    }
    /* P(x) = x^L C(1/x): coefficient j of P is c_{L-j}; L is 256 for xoshiro256 */
    memset(charpoly_low, 0, sizeof charpoly_low);
    for (int j = 0; j < L && j < 256; j++)
        if (bit(C, L - j)) charpoly_low[j >> 6] |= 1ULL << (j & 63);
}

/* a = a x mod P */
static inline void times_x(uint64_t *a) {
    uint64_t top = a[3] >> 63;
    a[3] = (a[3] << 1) | (a[2] >> 63);
    a[2] = (a[2] << 1) | (a[1] >> 63);
    a[1] = (a[1] << 1) | (a[0] >> 63);
    a[0] <<= 1;
    uint64_t mask = 0 - top;
    for (int w = 0; w < POLY_WORDS; w++) a[w] ^= charpoly_low[w] & mask;
}

/* out = a b mod P (out may alias neither) */
static void mulmod(uint64_t *out, const uint64_t *a, const uint64_t *b) {
    uint64_t r[POLY_WORDS] = {0};
    for (int i = 255; i >= 0; i--) {
        times_x(r);
        uint64_t mask = 0 - (uint64_t)bit(b, i);
        for (int w = 0; w < POLY_WORDS; w++) r[w] ^= a[w] & mask;
    }
    memcpy(out, r, sizeof r);
}

/* The last few distances' residues x^d mod P, per thread: a fill jumps by the
 * same distances call after call (the same tensor sizes every step; an 8-lane
 * fill 7 times by one distance), and the residue is most of a jump's 12 us. */
#define JUMP_CACHE 4
static _Thread_local struct {
    uint64_t d; /* 0: empty (d = 0 never reaches the residue) */
    uint64_t r[POLY_WORDS];
} jump_cache[JUMP_CACHE];
static _Thread_local int jump_next;

void em_rng_jump(uint64_t s[EM_RNG_STATE_WORDS], uint64_t d) {
    if (d == 0) return;
    if (d < 256) { /* stepping is cheaper than the polynomial */
        for (uint64_t i = 0; i < d; i++) em_xoshiro_step(s);
        return;
    }
    pthread_once(&charpoly_once, find_charpoly);
    uint64_t r[POLY_WORDS] = {1}, sq[POLY_WORDS];
    int slot = -1;
    for (int i = 0; i < JUMP_CACHE; i++)
        if (jump_cache[i].d == d) slot = i;
    if (slot >= 0) {
        memcpy(r, jump_cache[slot].r, sizeof r);
    } else {
        for (int b = 63 - __builtin_clzll(d); b >= 0; b--) { /* r = x^d mod P */
            mulmod(sq, r, r);
            memcpy(r, sq, sizeof r);
            if ((d >> b) & 1u) times_x(r);
        }
        jump_cache[jump_next].d = d;
        memcpy(jump_cache[jump_next].r, r, sizeof r);
        jump_next = (jump_next + 1) % JUMP_CACHE;
    }
    uint64_t acc[EM_RNG_STATE_WORDS] = {0}, t[EM_RNG_STATE_WORDS];
    memcpy(t, s, sizeof t);
    for (int i = 0; i < 256; i++) { /* acc = r(T) s = sum of T^i s over r's bits */
        if (bit(r, i))
            for (int w = 0; w < EM_RNG_STATE_WORDS; w++) acc[w] ^= t[w];
        em_xoshiro_step(t);
    }
    memcpy(s, acc, sizeof acc);
}
