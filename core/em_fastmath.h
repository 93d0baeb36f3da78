/* em_fastmath.h — elementwise transcendental kernels written as polynomials, so
 * one algorithm runs as an AVX2+FMA (or AVX-512) loop chosen at run time and as a scalar
 * loop (fma) with the same numbers bit for bit on every x86-64 machine. */
#ifndef EM_FASTMATH_H
#define EM_FASTMATH_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

/* The one scalar sigmoid of every kernel (the sigmoid op, the fused LSTM cell
 * and gated unit, BCE-with-logits' backward), so a fused path and the same
 * computation made of ops agree bit for bit. */
static inline float em_sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* log(1 + exp(-|x|)), within 0.52 ulp of the exact value (computed in double
 * precision; tested within 1 ulp); NaN for NaN. The scalar reference of the
 * vector loops. */
float em_log1p_exp_neg_abs(float x);

/* BCE with logits of n contiguous elements: out[i] = max(x, 0) - x t +
 * log(1 + exp(-|x|)) (the softplus term from em_log1p_exp_neg_abs). */
void em_fast_bce_with_logits(int64_t n, float *out, const float *x, const float *t);

/* Box-Muller from generator words: out[i] = (float)(mean + std * (sqrt(-2 log u1)
 * cos(2 pi u2))) with u1 = 1 - (w[2i] >> 11) 2^-53, u2 = (w[2i+1] >> 11) 2^-53, the
 * double-precision expression of em_rng_normal with glibc's log and cos, bit for
 * bit: the vector loop evaluates its own log and cos (within a few ulp) and keeps
 * a lane only when the value's error bound cannot reach a float rounding
 * boundary, recomputing the rare others (about 1 in 10^7) by the expression. */
void em_box_muller(int64_t n, float *out, const uint64_t *words, float mean, float std);
/* The same transform over eight lanes' interleaved words (lane j's word t at
 * iw[8 t + j], so lane j's pair i is iw[16 i + j], iw[16 i + 8 + j]): lane j's
 * value i into out[j stride + i], i < n (em_rng's 8-lane normal fills). */
void em_box_muller_lanes8(int64_t n, float *out, int64_t stride, const uint64_t *iw, float mean,
                          float std);
/* the reference's N(0, 1) value in double, glibc's log and cos: em_rng_normal's */
double em_box_muller_z(uint64_t w1, uint64_t w2);
/* the lanes the last em_box_muller calls on this thread recomputed (tests) */
int64_t em_box_muller_fallbacks(void);

/* The widest loops that run: the CPU's (AVX-512 = F + DQ, AVX2 = AVX2 + FMA)
 * up to a cap that tests lower to compare the loops (every level gives the
 * same bits). BCE and Box-Muller have AVX-512 loops; Adam's update (em_optim.c)
 * and the 8-lane normal fills (em_rng.c) follow the same level. */
enum { EM_FASTMATH_SCALAR = 0, EM_FASTMATH_AVX2 = 1, EM_FASTMATH_AVX512 = 2 };
int em_fastmath_level(void);
void em_fastmath_cap_level(int level);
/* Whether the AVX2+FMA loops run (level >= AVX2); em_fastmath_use_simd(false)
 * caps at the scalar loops, (true) lifts the cap. */
bool em_fastmath_simd(void);
void em_fastmath_use_simd(bool on);

#endif
