/* em_rng.c — the one generator (xoshiro256**, em_xoshiro.h) and the random tensors. */
#include "em_rng.h"

#include <math.h>
#include <immintrin.h>
#include <omp.h>
#include <stdbool.h>
#include <string.h>

#include "em_autograd.h"
#include "em_fastmath.h"
#include "em_tensor.h"
#include "em_xoshiro.h"

static uint64_t rng_state[EM_RNG_STATE_WORDS] = {
    0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL, 0x94d049bb133111ebULL, 0x2545f4914f6cdd1dULL};

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void em_rng_seed(uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < EM_RNG_STATE_WORDS; i++) rng_state[i] = splitmix64(&x);
}

uint64_t em_rng_u64(void) { return em_xoshiro_next(rng_state); }

static inline double uniform_of(uint64_t w) { return (double)(w >> 11) * 0x1.0p-53; }

double em_rng_uniform(void) { return uniform_of(em_rng_u64()); }

/* Calls fn(ctx, state, first, count) over [0, n) items of words_per_item words
 * each, where state is the generator as it would be after first * words_per_item
 * sequential words; fn draws its items' words from it in order. Afterwards the
 * global state is where n * words_per_item sequential draws leave it. With at least
 * parallel_min items and 2 threads the items are split into one stretch per thread
 * (a jump costs about as much as drawing 10k words: 12 us); the numbers do not
 * depend on the split. */
typedef void (*stretch_fn)(void *ctx, uint64_t *state, int64_t first, int64_t count);
#define WORDS_PARALLEL_MIN 32768 /* one-word draws (uniform, bernoulli) */
#define NORMAL_PARALLEL_MIN 8192 /* normals: two words and Box-Muller each */
static void draw_stretches(int64_t n, int words_per_item, int64_t parallel_min, stretch_fn fn,
                           void *ctx) {
    int threads = em_get_num_threads();
    if (n < parallel_min || threads < 2 || omp_in_parallel()) {
        uint64_t s[EM_RNG_STATE_WORDS];
        memcpy(s, rng_state, sizeof s);
        fn(ctx, s, 0, n);
        memcpy(rng_state, s, sizeof s);
        return;
    }
    uint64_t start[EM_RNG_STATE_WORDS], end[EM_RNG_STATE_WORDS];
    memcpy(start, rng_state, sizeof start);
#pragma omp parallel num_threads(threads)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t a = n * t / nt, b = n * (t + 1) / nt;
        uint64_t s[EM_RNG_STATE_WORDS];
        memcpy(s, start, sizeof s);
        em_rng_jump(s, (uint64_t)a * (uint64_t)words_per_item);
        fn(ctx, s, a, b - a);
        if (t == nt - 1) memcpy(end, s, sizeof end);
    }
    memcpy(rng_state, end, sizeof end);
}

double em_rng_normal(void) {
    /* Box-Muller on (0,1] x [0,1): one value per call keeps the state simple. */
    uint64_t w1 = em_rng_u64();
    uint64_t w2 = em_rng_u64();
    return em_box_muller_z(w1, w2);
}

uint64_t em_rng_below(uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do r = em_rng_u64();
    while (r >= limit);
    return r % n;
}

void em_rng_get_state(uint64_t state[EM_RNG_STATE_WORDS]) {
    for (int i = 0; i < EM_RNG_STATE_WORDS; i++) state[i] = rng_state[i];
}

int em_rng_set_state(const uint64_t state[EM_RNG_STATE_WORDS]) {
    if (!(state[0] | state[1] | state[2] | state[3]))
        return em_error_set("set_rng_state: the all-zero state is not valid");
    for (int i = 0; i < EM_RNG_STATE_WORDS; i++) rng_state[i] = state[i];
    return EM_OK;
}

/* ---- random tensors -------------------------------------------------- */

static struct {
    int64_t global, offset, rows; /* rows == 0: no shard */
} shard;

int em_rng_set_shard(int64_t global_rows, int64_t offset, int64_t rows) {
    if (rows == 0) {
        shard.global = shard.offset = shard.rows = 0;
        return EM_OK;
    }
    if (rows < 0 || offset < 0 || global_rows < 1 || offset + rows > global_rows)
        return em_error_set("rng shard: rows %lld..%lld are not within a batch of %lld",
                            (long long)offset + 1, (long long)(offset + rows),
                            (long long)global_rows);
    shard.global = global_rows;
    shard.offset = offset;
    shard.rows = rows;
    return EM_OK;
}

/* Whether a tensor of this shape is one rank's rows of a sharded batch (and
 * the global batch is larger: else it is drawn as it is). */
static bool is_shard(int ndim, const int64_t *shape) {
    return shard.rows > 0 && ndim >= 1 && shape[0] == shard.rows && shard.global > shard.rows;
}

/* The global batch's shape for a shard of this shape. */
static void global_shape(int ndim, const int64_t *shape, int64_t *out) {
    for (int i = 0; i < ndim; i++) out[i] = shape[i];
    out[0] = shard.global;
}

/* A new tensor of shape holding rows [offset, offset + rows) of full. */
static em_tensor *own_rows(em_tensor *full, int ndim, const int64_t *shape) {
    em_tensor *t = full ? em_tensor_empty(ndim, shape) : NULL;
    if (t) {
        int64_t per_row = shard.rows ? t->numel / shard.rows : 0;
        memcpy(t->storage->data, full->storage->data + shard.offset * per_row,
               (size_t)t->numel * sizeof(float));
    }
    em_tensor_release(full);
    return t;
}

/* ---- eight lanes at once (AVX-512) ----------------------------------------
 * A stretch of at least LANES_MIN values is cut into 8 equal sub-stretches, one
 * per 64-bit lane: lane j starts where the sequential draws reach its first
 * word (a jump of 2 per words from lane j - 1) and steps xoshiro256** with the
 * other lanes in one vector; the values are made from the 8 lanes' words as they
 * lie (Box-Muller on 8 lanes for normals). The words, hence the values, are the
 * sequential ones. perf on B4 put the scalar word loop at 11% of the step. */
#define LANES 8
#define LANES_MIN 4096 /* items: below, 7 jumps (a few us) outweigh the vector words */
#define LANE_BLOCK 256 /* normals per lane per batch (one-word items: 512): 8 lanes x 512 words = 32 KiB */

/* iw[8 t + j] = lane j's next word, t < nwords; lanes[w][j] is lane j's state word w */
__attribute__((target("avx512f"))) static void xoshiro8_words(uint64_t lanes[4][LANES], uint64_t *iw,
                                                              int64_t nwords) {
    __m512i s0 = _mm512_loadu_si512(lanes[0]), s1 = _mm512_loadu_si512(lanes[1]);
    __m512i s2 = _mm512_loadu_si512(lanes[2]), s3 = _mm512_loadu_si512(lanes[3]);
    for (int64_t t = 0; t < nwords; t++) {
        /* rotl(s1 * 5, 7) * 9, the products as shifts and adds (mod 2^64) */
        __m512i r = _mm512_rol_epi64(_mm512_add_epi64(_mm512_slli_epi64(s1, 2), s1), 7);
        _mm512_storeu_si512(iw + LANES * t, _mm512_add_epi64(_mm512_slli_epi64(r, 3), r));
        __m512i shifted = _mm512_slli_epi64(s1, 17); /* em_xoshiro_step, lane by lane */
        s2 = _mm512_xor_si512(s2, s0);
        s3 = _mm512_xor_si512(s3, s1);
        s1 = _mm512_xor_si512(s1, s2);
        s0 = _mm512_xor_si512(s0, s3);
        s2 = _mm512_xor_si512(s2, shifted);
        s3 = _mm512_rol_epi64(s3, 45);
    }
    _mm512_storeu_si512(lanes[0], s0);
    _mm512_storeu_si512(lanes[1], s1);
    _mm512_storeu_si512(lanes[2], s2);
    _mm512_storeu_si512(lanes[3], s3);
}

/* Draws items [first, first + count) of words_per_item words each on 8 lanes:
 * lane j takes items first + j per + [0, per), per = count / 8, starting by a jump
 * to its first word; batch by batch, consume(ctx, iw, at, per, len) gets lane j's
 * next len items' words at iw[8 (words_per_item i + w) + j] for its items at +
 * j per + i. Returns the items drawn, 8 per: the rest are left to the caller, with *s
 * where the last lane ended (the state after item first + 8 per - 1); 0 (all left,
 * *s untouched) below LANES_MIN items or without AVX-512. */
typedef void (*lanes_fn)(void *ctx, const uint64_t *iw, int64_t at, int64_t per, int64_t len);
static int64_t draw_lanes(uint64_t *s, int64_t first, int64_t count, int words_per_item, lanes_fn consume,
                          void *ctx) {
    if (count < LANES_MIN || em_fastmath_level() < EM_FASTMATH_AVX512) return 0; /* all to the caller */
    const int64_t per = count / LANES;
    uint64_t lanes[4][LANES], t[EM_RNG_STATE_WORDS];
    memcpy(t, s, sizeof t);
    for (int j = 0; j < LANES; j++) {
        for (int w = 0; w < 4; w++) lanes[w][j] = t[w];
        if (j < LANES - 1) em_rng_jump(t, (uint64_t)words_per_item * (uint64_t)per);
    }
    uint64_t iw[2 * LANE_BLOCK * LANES];
    const int64_t block = 2 * LANE_BLOCK / words_per_item; /* items per lane per batch */
    for (int64_t b0 = 0; b0 < per; b0 += block) {
        int64_t len = per - b0 < block ? per - b0 : block;
        xoshiro8_words(lanes, iw, words_per_item * len);
        consume(ctx, iw, first + b0, per, len);
    }
    for (int w = 0; w < 4; w++) s[w] = lanes[w][LANES - 1];
    return LANES * per;
}

/* A float from [lo, hi) of one word: a double draw within 2^-25 of the top rounds to
 * hi itself as a float, so that case steps back to the float below hi. */
static inline float uniform_float(uint64_t w, float lo, float hi) {
    float v = (float)(lo + (hi - lo) * uniform_of(w));
    return (v < hi || lo == hi) ? v : nextafterf(hi, lo);
}

typedef struct {
    float *d;
    float lo, hi;
} uniform_fill;

static void uniform_lanes(void *ctx, const uint64_t *iw, int64_t at, int64_t per, int64_t len) {
    const uniform_fill *f = ctx;
    for (int l = 0; l < LANES; l++)
        for (int64_t i = 0; i < len; i++) f->d[at + l * per + i] = uniform_float(iw[LANES * i + l], f->lo, f->hi);
}

static void uniform_stretch(void *ctx, uint64_t *s, int64_t first, int64_t count) {
    const uniform_fill *f = ctx;
    int64_t done = draw_lanes(s, first, count, 1, uniform_lanes, ctx);
    for (int64_t i = first + done; i < first + count; i++)
        f->d[i] = uniform_float(em_xoshiro_next(s), f->lo, f->hi);
}

static em_tensor *uniform_tensor(int ndim, const int64_t *shape, float lo, float hi) {
    if (is_shard(ndim, shape)) {
        int64_t g[EM_MAX_DIMS];
        global_shape(ndim, shape, g);
        return own_rows(uniform_tensor(ndim, g, lo, hi), ndim, shape);
    }
    em_tensor *c = em_tensor_empty(ndim, shape);
    if (!c) return NULL;
    uniform_fill f = {c->storage->data, lo, hi};
    draw_stretches(c->numel, 1, WORDS_PARALLEL_MIN, uniform_stretch, &f);
    return c;
}

int em_uniform_(em_tensor *t, float lo, float hi) {
    if (em_check_inplace("uniform_", t)) return EM_ERR;
    if (!(lo <= hi)) return em_error_set("uniform_: low %g is greater than high %g", lo, hi);
    em_tensor *c = uniform_tensor(t->ndim, t->shape, lo, hi);
    if (!c) return EM_ERR;
    int rc = em_copy_(t, c);
    em_tensor_release(c);
    return rc;
}

/* n draws of mean + std * N(0, 1) into d, the same numbers as n sequential
 * em_rng_normal() calls: each thread draws its stretch's words in order from a
 * jumped state, and Box-Muller's log/sqrt/cos runs over batches of them by
 * em_box_muller (em_fastmath.c: its own vectorized log and cos where the
 * float result provably equals glibc's, glibc's expression elsewhere), so the
 * result depends neither on the thread count nor on the CPU. */
#define NORMAL_BLOCK 4096 /* values per batch of words (a thread's buffer: 64 KiB) */
typedef struct {
    float *d;
    float mean, std;
} normal_fill;

static void normal_lanes(void *ctx, const uint64_t *iw, int64_t at, int64_t per, int64_t len) {
    const normal_fill *f = ctx;
    em_box_muller_lanes8(len, f->d + at, per, iw, f->mean, f->std);
}

static void normal_stretch_serial(const normal_fill *f, uint64_t *s, int64_t first, int64_t count);

static void normal_stretch(void *ctx, uint64_t *s, int64_t first, int64_t count) {
    int64_t done = draw_lanes(s, first, count, 2, normal_lanes, ctx);
    normal_stretch_serial(ctx, s, first + done, count - done); /* all, or the last 0..7 */
}

static void normal_stretch_serial(const normal_fill *f, uint64_t *s, int64_t first, int64_t count) {
    uint64_t words[2 * NORMAL_BLOCK];
    for (int64_t b0 = 0; b0 < count; b0 += NORMAL_BLOCK) {
        int64_t len = count - b0 < NORMAL_BLOCK ? count - b0 : NORMAL_BLOCK;
        for (int64_t i = 0; i < 2 * len; i++) words[i] = em_xoshiro_next(s);
        em_box_muller(len, f->d + first + b0, words, f->mean, f->std);
    }
}

static void fill_normal(float *d, int64_t n, float mean, float std) {
    normal_fill f = {d, mean, std};
    draw_stretches(n, 2, NORMAL_PARALLEL_MIN, normal_stretch, &f);
}

static em_tensor *normal_tensor(int ndim, const int64_t *shape, float mean, float std) {
    if (is_shard(ndim, shape)) {
        int64_t g[EM_MAX_DIMS];
        global_shape(ndim, shape, g);
        return own_rows(normal_tensor(ndim, g, mean, std), ndim, shape);
    }
    em_tensor *c = em_tensor_empty(ndim, shape);
    if (c) fill_normal(c->storage->data, c->numel, mean, std);
    return c;
}

int em_normal_(em_tensor *t, float mean, float std) {
    if (em_check_inplace("normal_", t)) return EM_ERR;
    if (!(std >= 0)) return em_error_set("normal_: std must be >= 0, got %g", std);
    em_tensor *c = normal_tensor(t->ndim, t->shape, mean, std);
    if (!c) return EM_ERR;
    int rc = em_copy_(t, c);
    em_tensor_release(c);
    return rc;
}

em_tensor *em_rand(int ndim, const int64_t *shape) { return uniform_tensor(ndim, shape, 0.0f, 1.0f); }

em_tensor *em_normal(int ndim, const int64_t *shape, float mean, float std) {
    if (!(std >= 0)) {
        em_error_set("normal: std must be >= 0, got %g", std);
        return NULL;
    }
    return normal_tensor(ndim, shape, mean, std);
}

em_tensor *em_randn(int ndim, const int64_t *shape) { return em_normal(ndim, shape, 0.0f, 1.0f); }

em_tensor *em_randint(int64_t low, int64_t high, int ndim, const int64_t *shape) {
    if (high <= low) {
        em_error_set("randint: high %lld must be greater than low %lld", (long long)high,
                     (long long)low);
        return NULL;
    }
    if (is_shard(ndim, shape)) {
        int64_t g[EM_MAX_DIMS];
        global_shape(ndim, shape, g);
        return own_rows(em_randint(low, high, ndim, g), ndim, shape);
    }
    em_tensor *t = em_tensor_empty(ndim, shape);
    if (t)
        for (int64_t i = 0; i < t->numel; i++)
            t->storage->data[i] = (float)(low + (int64_t)em_rng_below((uint64_t)(high - low)));
    return t;
}

/* the 8 lanes' item i at once: their probabilities gathered (lane l's at at + l per + i),
 * uniform_of(word) < p as doubles, 1 or 0 scattered back; a branch per item (GCC keeps
 * the scalar form's) mispredicted on random outcomes was 75% of a fill */
__attribute__((target("avx512f,avx512dq"))) static void bernoulli_lanes(void *ctx, const uint64_t *iw,
                                                                       int64_t at, int64_t per, int64_t len) {
    float *base = (float *)ctx + at;
    const __m512i where = _mm512_mullo_epi64(_mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7), _mm512_set1_epi64(per));
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < len; i++) {
        __m512i w = _mm512_loadu_si512(iw + LANES * i);
        __m512d u = _mm512_mul_pd(_mm512_cvtepu64_pd(_mm512_srli_epi64(w, 11)), _mm512_set1_pd(0x1.0p-53));
        __m512d p = _mm512_cvtps_pd(_mm512_i64gather_ps(where, base + i, 4));
        __mmask8 hit = _mm512_cmp_pd_mask(u, p, _CMP_LT_OQ);
        _mm512_i64scatter_ps(base + i, where, _mm512_castps512_ps256(_mm512_maskz_mov_ps(hit, one)), 4);
    }
}

/* buf holds probabilities in, 0 / 1 draws out */
static void bernoulli_stretch(void *ctx, uint64_t *s, int64_t first, int64_t count) {
    float *buf = ctx;
    int64_t done = draw_lanes(s, first, count, 1, bernoulli_lanes, ctx);
    for (int64_t i = first + done; i < first + count; i++)
        buf[i] = uniform_of(em_xoshiro_next(s)) < buf[i] ? 1.0f : 0.0f;
}

em_tensor *em_bernoulli(em_tensor *p) {
    if (!p) return NULL;
    em_tensor *t = em_tensor_empty(p->ndim, p->shape);
    if (!t) return NULL;
    float *buf = t->storage->data;
    em_tensor_read(p, buf);
    /* the check counts bad probabilities on every thread (a dropout mask is the size of
     * its layer), then names the first */
    const int64_t n = t->numel;
    int64_t bad = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : bad) if (n > WORDS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) bad += !(buf[i] >= 0.0f && buf[i] <= 1.0f);
    for (int64_t i = 0; bad && i < n; i++) {
        float q = buf[i];
        if (!(q >= 0.0f && q <= 1.0f)) {
            em_tensor_release(t);
            em_error_set("bernoulli: probabilities must be in [0, 1], got %g", (double)q);
            return NULL;
        }
    }
    /* a shard: the draws of the rows before and after this rank's are skipped */
    int64_t per_row = is_shard(p->ndim, p->shape) ? t->numel / shard.rows : 0;
    if (per_row) em_rng_jump(rng_state, (uint64_t)(shard.offset * per_row));
    draw_stretches(t->numel, 1, WORDS_PARALLEL_MIN, bernoulli_stretch, buf);
    if (per_row)
        em_rng_jump(rng_state, (uint64_t)((shard.global - shard.offset - shard.rows) * per_row));
    return t;
}
