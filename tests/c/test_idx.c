/* test_idx.c — IDX files (valid and every malformed kind), batch assembly
 * (randperm, gather_rows, random_hflip against naive loops) and images
 * (grid, upscale, PNG round trip and its errors). Files live in a fresh
 * directory under /tmp. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "em_batch.h"
#include "em_idx.h"
#include "em_image.h"
#include "em_rng.h"
#include "em_tensor.h"
#include "test.h"

/* A fresh scratch directory per process, and a path inside it. */
static const char *scratch(const char *name) {
    static char dir[64];
    static char path[256];
    if (!dir[0]) {
        strcpy(dir, "/tmp/ember_test_idx_XXXXXX");
        if (!mkdtemp(dir)) return NULL;
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static void write_bytes(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(b, 1, n, f);
    fclose(f);
}

static void write_gz(const char *path, const unsigned char *b, size_t n) {
    gzFile f = gzopen(path, "wb6");
    if (!f) return;
    gzwrite(f, b, (unsigned)n);
    gzclose(f);
}

/* An IDX image file of n 2x3 images with byte value (i*7 + k) % 256. */
static size_t make_idx(unsigned char *buf, int n) {
    unsigned char head[16] = {0, 0, 8, 3, 0, 0, 0, (unsigned char)n, 0, 0, 0, 2, 0, 0, 0, 3};
    memcpy(buf, head, 16);
    for (int i = 0; i < n * 6; i++) buf[16 + i] = (unsigned char)((i * 7) % 256);
    return 16 + (size_t)n * 6;
}

TEST(idx_load_plain_and_gzip) {
    unsigned char buf[256];
    size_t len = make_idx(buf, 5);
    const char *plain = scratch("ok.idx");
    write_bytes(plain, buf, len);
    em_tensor *t = em_idx_load(plain, 1.0f, 0.0f);
    CHECK(t != NULL);
    if (!t) return;
    CHECK(t->ndim == 3 && t->shape[0] == 5 && t->shape[1] == 2 && t->shape[2] == 3);
    for (int i = 0; i < 30; i++) CHECK_NEAR(t->storage->data[i], (i * 7) % 256, 0);
    em_tensor_release(t);

    const char *gz = scratch("ok.idx.gz");
    write_gz(gz, buf, len);
    t = em_idx_load(gz, 1.0f / 255.0f, 0.0f);
    CHECK(t != NULL);
    if (!t) return;
    CHECK(t->shape[0] == 5);
    CHECK_NEAR(t->storage->data[29], (29 * 7 % 256) / 255.0, 1e-6);
    em_tensor_release(t);
}

TEST(idx_labels_shift) {
    unsigned char buf[] = {0, 0, 8, 1, 0, 0, 0, 4, 0, 9, 3, 1};
    const char *p = scratch("labels.idx");
    write_bytes(p, buf, sizeof buf);
    em_tensor *t = em_idx_load(p, 1.0f, 1.0f);
    CHECK(t && t->ndim == 1 && t->shape[0] == 4);
    if (!t) return;
    CHECK_NEAR(t->storage->data[0], 1, 0);
    CHECK_NEAR(t->storage->data[1], 10, 0);
    em_tensor_release(t);
}

TEST(idx_save_roundtrip) {
    float v[6] = {0, 1, 2, 253, 254, 255};
    int64_t shape[2] = {2, 3};
    em_tensor *t = em_tensor_from_data(2, shape, v);
    const char *p = scratch("saved.idx.gz");
    CHECK(em_idx_save(p, t) == EM_OK);
    em_tensor *back = em_idx_load(p, 1.0f, 0.0f);
    CHECK(back && back->ndim == 2 && back->shape[1] == 3);
    if (back)
        for (int i = 0; i < 6; i++) CHECK_NEAR(back->storage->data[i], v[i], 0);
    em_tensor_release(back);
    /* out-of-range values are refused */
    float bad[2] = {3, 256.4f};
    int64_t s1[1] = {2};
    em_tensor *b = em_tensor_from_data(1, s1, bad);
    CHECK(em_idx_save(scratch("bad.idx"), b) == EM_ERR);
    CHECK_ERROR("element 2 is 256.4, expected a value in 0..255");
    CHECK(em_idx_save("/nonexistent-dir/x.idx", t) == EM_ERR);
    CHECK_ERROR("cannot write '/nonexistent-dir/x.idx'");
    em_tensor_release(b);
    em_tensor_release(t);
}

TEST(idx_missing_and_empty) {
    CHECK(em_idx_load("/nonexistent/train-images-idx3-ubyte.gz", 1, 0) == NULL);
    CHECK_ERROR("cannot open '/nonexistent/train-images-idx3-ubyte.gz': No such file");
    const char *p = scratch("empty.idx");
    write_bytes(p, (const unsigned char *)"", 0);
    CHECK(em_idx_load(p, 1, 0) == NULL);
    CHECK_ERROR("is empty (0 bytes)");
    CHECK(em_idx_load("/tmp", 1, 0) == NULL);
    CHECK_ERROR("'/tmp' is not a regular file");
}

TEST(idx_wrong_magic_type_dims) {
    unsigned char buf[256];
    size_t len = make_idx(buf, 2);
    const char *p = scratch("magic.idx");
    buf[0] = 0x1f; /* not 00 00 */
    write_bytes(p, buf, len);
    CHECK(em_idx_load(p, 1, 0) == NULL);
    CHECK_ERROR("wrong magic 1f 00 08 03");
    buf[0] = 0;
    buf[2] = 0x0d; /* float data */
    write_bytes(p, buf, len);
    CHECK(em_idx_load(p, 1, 0) == NULL);
    CHECK_ERROR("data type 0x0d is not supported");
    buf[2] = 8;
    buf[3] = 0;
    write_bytes(p, buf, len);
    CHECK(em_idx_load(p, 1, 0) == NULL);
    CHECK_ERROR("0 dims in the header (expected 1 to 4)");
    buf[3] = 5;
    write_bytes(p, buf, len);
    CHECK(em_idx_load(p, 1, 0) == NULL);
    CHECK_ERROR("5 dims in the header");
    /* a header cut inside the sizes */
    buf[3] = 3;
    write_bytes(p, buf, 9);
    CHECK(em_idx_load(p, 1, 0) == NULL);
    CHECK_ERROR("truncated header (5 of the 12 size bytes)");
    write_bytes(p, buf, 3);
    CHECK(em_idx_load(p, 1, 0) == NULL);
    CHECK_ERROR("truncated header (3 of the 4 magic bytes)");
}

TEST(idx_truncated_and_trailing) {
    unsigned char buf[256];
    size_t len = make_idx(buf, 4); /* 24 data bytes */
    const char *p = scratch("short.idx");
    write_bytes(p, buf, len - 5);
    CHECK(em_idx_load(p, 1, 0) == NULL);
    CHECK_ERROR("truncated: the header declares [4 x 2 x 3] = 24 data bytes, the file holds 19");
    const char *g = scratch("short.idx.gz");
    write_gz(g, buf, len - 5);
    CHECK(em_idx_load(g, 1, 0) == NULL);
    CHECK_ERROR("truncated: the header declares [4 x 2 x 3] = 24 data bytes, the file holds 19");
    /* dims that do not match the size: more data than declared */
    buf[7] = 3;
    write_bytes(p, buf, len);
    CHECK(em_idx_load(p, 1, 0) == NULL);
    CHECK_ERROR("6 bytes after the 18 data bytes its header declares ([3 x 2 x 3])");
    write_gz(g, buf, len);
    CHECK(em_idx_load(g, 1, 0) == NULL);
    CHECK_ERROR("bytes after the 18 data bytes its header declares ([3 x 2 x 3])");
}

TEST(idx_hostile_sizes) {
    /* 4 dims of 0xffffffff: the product overflows 64 bits many times over */
    unsigned char buf[20] = {0, 0, 8, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                             0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const char *p = scratch("huge.idx");
    write_bytes(p, buf, sizeof buf);
    CHECK(em_idx_load(p, 1, 0) == NULL);
    CHECK_ERROR("more than 17179869184 bytes of data (a corrupt or hostile header)");
    /* 1 GB declared in a tiny gzip file: refused as truncated, without a 1 GB buffer */
    unsigned char big[12] = {0, 0, 8, 1, 0x40, 0, 0, 0, 1, 2, 3, 4};
    const char *g = scratch("big.idx.gz");
    write_gz(g, big, sizeof big);
    CHECK(em_idx_load(g, 1, 0) == NULL);
    CHECK_ERROR("declares [1073741824] = 1073741824 data bytes, the file holds 4");
}

TEST(idx_gzip_corrupt) {
    unsigned char buf[4096];
    size_t len = make_idx(buf, 200); /* 1200 data bytes */
    const char *g = scratch("corrupt.idx.gz");
    write_gz(g, buf, len);
    FILE *f = fopen(g, "rb");
    unsigned char z[8192];
    size_t zn = f ? fread(z, 1, sizeof z, f) : 0;
    if (f) fclose(f);
    CHECK(zn > 40);
    /* flip bits in the middle of the deflate stream */
    unsigned char bad[8192];
    memcpy(bad, z, zn);
    for (size_t i = zn / 2; i < zn / 2 + 8; i++) bad[i] ^= 0x5a;
    write_bytes(g, bad, zn);
    CHECK(em_idx_load(g, 1, 0) == NULL);
    CHECK(strstr(em_error_message(), "corrupt.idx.gz") != NULL);
    CHECK(strstr(em_error_message(), "idx_load") != NULL);
    /* a wrong CRC in the trailer */
    memcpy(bad, z, zn);
    bad[zn - 6] ^= 0xff;
    write_bytes(g, bad, zn);
    CHECK(em_idx_load(g, 1, 0) == NULL);
    CHECK_ERROR("incorrect data check");
    /* the .gz file cut short */
    write_bytes(g, z, zn - 20);
    CHECK(em_idx_load(g, 1, 0) == NULL);
    CHECK_ERROR("the gzip stream ends early (truncated .gz file)");
}

/* Bytes after the last gzip member are refused, as bytes after a plain file's
 * data are; another member after the first is read on (gzip -d does too). */
TEST(idx_gzip_trailing_bytes_and_members) {
    unsigned char buf[4096];
    size_t len = make_idx(buf, 200); /* 1200 data bytes */
    char g[256], a[256], b[256]; /* scratch() reuses one buffer */
    snprintf(g, sizeof g, "%s", scratch("trail.idx.gz"));
    snprintf(a, sizeof a, "%s", scratch("part_a.gz"));
    snprintf(b, sizeof b, "%s", scratch("part_b.gz"));
    write_gz(g, buf, len);
    FILE *f = fopen(g, "rb");
    unsigned char z[8192];
    size_t zn = f ? fread(z, 1, sizeof z, f) : 0;
    if (f) fclose(f);
    CHECK(zn > 40);
    em_tensor *t = em_idx_load(g, 1, 0);
    CHECK(t != NULL);
    em_tensor_release(t);
    unsigned char more[8192 + 16];
    memcpy(more, z, zn);
    memcpy(more + zn, "junk\n", 5);
    write_bytes(g, more, zn + 5);
    CHECK(em_idx_load(g, 1, 0) == NULL);
    CHECK_ERROR("5 bytes after the end of the gzip stream that are not another gzip member");
    more[zn] = 0x1f; /* one byte that could start a member, but no more */
    write_bytes(g, more, zn + 1);
    CHECK(em_idx_load(g, 1, 0) == NULL);
    CHECK_ERROR("1 bytes after the end of the gzip stream");
    /* the same bytes as two members: the header + 100 bytes, then the rest */
    write_gz(a, buf, 16 + 100);
    write_gz(b, buf + 116, len - 116);
    unsigned char za[8192], zb[8192];
    f = fopen(a, "rb");
    size_t na = f ? fread(za, 1, sizeof za, f) : 0;
    if (f) fclose(f);
    f = fopen(b, "rb");
    size_t nb = f ? fread(zb, 1, sizeof zb, f) : 0;
    if (f) fclose(f);
    memcpy(more, za, na);
    memcpy(more + na, zb, nb);
    write_bytes(g, more, na + nb);
    em_tensor *two = em_idx_load(g, 1, 0);
    CHECK(two != NULL);
    if (two) {
        const float *d = em_tensor_data(two);
        bool same = two->numel == (int64_t)(len - 16);
        for (int64_t i = 0; same && i < two->numel; i++) same = d[i] == (float)buf[16 + i];
        CHECK(same);
        em_tensor_release(two);
    }
}

/* ---- batch assembly -------------------------------------------------- */

TEST(batch_randperm_is_permutation_and_seeded) {
    em_rng_seed(7);
    em_tensor *a = em_randperm(1000);
    em_rng_seed(7);
    em_tensor *b = em_randperm(1000);
    CHECK(a && b);
    if (!a || !b) return;
    static char seen[1000];
    memset(seen, 0, sizeof seen);
    int same = 1, moved = 0;
    for (int i = 0; i < 1000; i++) {
        int v = (int)a->storage->data[i];
        CHECK(v >= 0 && v < 1000 && v == a->storage->data[i]);
        if (v >= 0 && v < 1000) seen[v]++;
        same &= a->storage->data[i] == b->storage->data[i];
        moved += v != i;
    }
    for (int i = 0; i < 1000; i++) CHECK(seen[i] == 1);
    CHECK(same);
    CHECK(moved > 900);
    em_tensor_release(a);
    em_tensor_release(b);
    CHECK(em_randperm(-1) == NULL);
    CHECK_ERROR("randperm: n = -1");
}

TEST(batch_gather_rows_matches_naive) {
    /* awkward shapes: rows of 1 (labels), of 5x3, a non-contiguous source, count 1 */
    int64_t shape[3] = {7, 5, 3};
    em_tensor *src = em_tensor_arange(0, 105, 1);
    em_tensor *src3 = em_view(src, 3, shape);
    float idxv[6] = {6, 0, 3, 3, 1, 5};
    int64_t s1[1] = {6};
    em_tensor *index = em_tensor_from_data(1, s1, idxv);
    em_tensor *out = em_gather_rows(src3, index, 1, 4); /* rows 0, 3, 3, 1 */
    CHECK(out && out->ndim == 3 && out->shape[0] == 4 && out->shape[1] == 5);
    if (out) {
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 15; k++)
                CHECK_NEAR(out->storage->data[i * 15 + k], idxv[1 + i] * 15 + k, 0);
    }
    em_tensor_release(out);
    /* non-contiguous: the transpose of a [5 x 7] matrix */
    int64_t s2[2] = {5, 7};
    em_tensor *flat = em_tensor_arange(0, 35, 1);
    em_tensor *m = em_view(flat, 2, s2);
    em_tensor *mt = em_transpose(m, 0, 1); /* [7 x 5] */
    out = em_gather_rows(mt, index, 0, 6);
    CHECK(out && out->shape[0] == 6 && out->shape[1] == 5);
    if (out)
        for (int i = 0; i < 6; i++)
            for (int k = 0; k < 5; k++)
                CHECK_NEAR(out->storage->data[i * 5 + k], k * 7 + idxv[i], 0);
    em_tensor_release(out);
    /* 1-D labels, count 1 and count 0 */
    em_tensor *labels = em_tensor_arange(10, 17, 1);
    out = em_gather_rows(labels, index, 5, 1);
    CHECK(out && out->ndim == 1 && out->shape[0] == 1 && out->storage->data[0] == 15);
    em_tensor_release(out);
    out = em_gather_rows(labels, index, 6, 0);
    CHECK(out && out->shape[0] == 0);
    em_tensor_release(out);
    /* errors */
    CHECK(em_gather_rows(labels, index, 4, 3) == NULL);
    CHECK_ERROR("rows 4..6 are outside the index [6]");
    float badv[2] = {1, 7};
    int64_t s3[1] = {2};
    em_tensor *bad = em_tensor_from_data(1, s3, badv);
    CHECK(em_gather_rows(labels, bad, 0, 2) == NULL);
    CHECK_ERROR("index entry 2 is 7, expected a row number in 0..6");
    em_tensor_release(bad);
    em_tensor_release(labels);
    em_tensor_release(mt);
    em_tensor_release(m);
    em_tensor_release(flat);
    em_tensor_release(index);
    em_tensor_release(src3);
    em_tensor_release(src);
}

TEST(batch_random_hflip) {
    int64_t shape[4] = {3, 2, 2, 5};
    em_tensor *flat = em_tensor_arange(0, 60, 1);
    em_tensor *x = em_view(flat, 4, shape);
    em_tensor *all = em_random_hflip(x, 1.0);
    em_tensor *none = em_random_hflip(x, 0.0);
    CHECK(all && none);
    if (all && none)
        for (int i = 0; i < 60; i++) {
            int col = i % 5, line = i / 5;
            CHECK_NEAR(all->storage->data[i], line * 5 + (4 - col), 0);
            CHECK_NEAR(none->storage->data[i], i, 0);
        }
    /* odd width 1: nothing moves */
    int64_t s1[2] = {4, 1};
    em_tensor *thin = em_tensor_ones(2, s1);
    em_tensor *f = em_random_hflip(thin, 1.0);
    CHECK(f && f->storage->data[3] == 1);
    em_tensor_release(f);
    CHECK(em_random_hflip(x, 1.5) == NULL);
    CHECK_ERROR("probability 1.5 must be in [0, 1]");
    em_tensor_release(thin);
    em_tensor_release(all);
    em_tensor_release(none);
    em_tensor_release(x);
    em_tensor_release(flat);
}

/* ---- images ---------------------------------------------------------- */

TEST(image_grid_matches_naive) {
    /* 5 images of 1 x 2 x 3, 2 per row, padding 1: [1 x 3*3+1 x 2*4+1] */
    int64_t shape[4] = {5, 1, 2, 3};
    em_tensor *base = em_tensor_arange(0, 30, 1);
    em_tensor *imgs = em_view(base, 4, shape);
    em_tensor *g = em_image_grid(imgs, 2, 1, -1.0f);
    CHECK(g && g->ndim == 3 && g->shape[0] == 1 && g->shape[1] == 10 && g->shape[2] == 9);
    if (g) {
        for (int y = 0; y < 10; y++)
            for (int x = 0; x < 9; x++) {
                float want = -1.0f;
                int gy = y - 1, gx = x - 1;
                if (gy >= 0 && gx >= 0 && gy % 3 < 2 && gx % 4 < 3) {
                    int k = (gy / 3) * 2 + gx / 4;
                    if (k < 5) want = (float)(k * 6 + (gy % 3) * 3 + gx % 4);
                }
                CHECK_NEAR(g->storage->data[y * 9 + x], want, 0);
            }
    }
    em_tensor_release(g);
    /* nrow larger than N: one row */
    g = em_image_grid(imgs, 8, 0, 0.0f);
    CHECK(g && g->shape[1] == 2 && g->shape[2] == 15);
    em_tensor_release(g);
    CHECK(em_image_grid(base, 8, 2, 0.0f) == NULL);
    CHECK_ERROR("make_grid: images [30] must be 4-D [N x C x H x W]");
    em_tensor_release(imgs);
    em_tensor_release(base);
}

TEST(image_upscale_matches_naive) {
    int64_t shape[3] = {2, 2, 3};
    em_tensor *flat = em_tensor_arange(0, 12, 1);
    em_tensor *img = em_view(flat, 3, shape);
    em_tensor *u = em_image_upscale(img, 3);
    CHECK(u && u->shape[0] == 2 && u->shape[1] == 6 && u->shape[2] == 9);
    if (u)
        for (int c = 0; c < 2; c++)
            for (int y = 0; y < 6; y++)
                for (int x = 0; x < 9; x++)
                    CHECK_NEAR(u->storage->data[(c * 6 + y) * 9 + x], c * 6 + (y / 3) * 3 + x / 3, 0);
    em_tensor_release(u);
    CHECK(em_image_upscale(img, 0) == NULL);
    CHECK_ERROR("factor 0");
    em_tensor_release(img);
    em_tensor_release(flat);
}

TEST(image_png_roundtrip_and_errors) {
    /* an RGB gradient in [-1, 1] saved with range [-1, 1] */
    int64_t shape[3] = {3, 4, 5};
    em_tensor *img = em_tensor_empty(3, shape);
    for (int i = 0; i < 60; i++) img->storage->data[i] = -1.0f + 2.0f * (float)i / 59.0f;
    const char *p = scratch("rgb.png");
    CHECK(em_image_save_png(p, img, -1.0f, 1.0f) == EM_OK);
    em_tensor *back = em_image_load(p);
    CHECK(back && back->ndim == 3 && back->shape[0] == 3 && back->shape[1] == 4 &&
          back->shape[2] == 5);
    if (back)
        for (int i = 0; i < 60; i++)
            CHECK_NEAR(back->storage->data[i], (float)i / 59.0f, 0.5 / 255 + 1e-6);
    em_tensor_release(back);
    /* grey [H x W], values clamped */
    int64_t s2[2] = {2, 2};
    float v[4] = {-5, 0.5f, 1, 9};
    em_tensor *grey = em_tensor_from_data(2, s2, v);
    CHECK(em_image_save_png(p, grey, 0, 1) == EM_OK);
    back = em_image_load(p);
    CHECK(back && back->shape[0] == 1 && back->shape[1] == 2);
    if (back) {
        CHECK_NEAR(back->storage->data[0], 0, 0);
        CHECK_NEAR(back->storage->data[1], 128 / 255.0, 1e-6);
        CHECK_NEAR(back->storage->data[3], 1, 0);
    }
    em_tensor_release(back);
    /* errors */
    CHECK(em_image_save_png("/nonexistent-dir/a.png", grey, 0, 1) == EM_ERR);
    CHECK_ERROR("save_png: cannot write '/nonexistent-dir/a.png': No such file or directory");
    int64_t s5[3] = {5, 2, 2};
    em_tensor *five = em_tensor_zeros(3, s5);
    CHECK(em_image_save_png(p, five, 0, 1) == EM_ERR);
    CHECK_ERROR("has 5 channels, expected 1 (grey), 3 (RGB) or 4 (RGBA)");
    grey->storage->data[2] = NAN;
    CHECK(em_image_save_png(p, grey, 0, 1) == EM_ERR);
    CHECK_ERROR("the image holds NaN (first at element 3)");
    CHECK(em_image_save_png(p, img, 1, 1) == EM_ERR);
    CHECK_ERROR("range [1, 1] must be finite with low < high");
    CHECK(em_image_load("/nonexistent.png") == NULL);
    CHECK_ERROR("load_image: cannot open '/nonexistent.png'");
    const char *junk = scratch("junk.png");
    write_bytes(junk, (const unsigned char *)"not a picture", 13);
    CHECK(em_image_load(junk) == NULL);
    CHECK_ERROR("is not an image stb_image can read");
    em_tensor_release(five);
    em_tensor_release(grey);
    em_tensor_release(img);
}
