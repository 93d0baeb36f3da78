/* em_image.c — image grids, upscaling and PNG input/output (libstb). */
#include "em_image.h"

#include "em_file.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stb_image.h>
#include <stb_image_write.h>

em_tensor *em_image_grid(em_tensor *images, int nrow, int padding, float pad_value) {
    char s[EM_SHAPE_STR_MAX];
    if (!images) return NULL;
    if (images->ndim != 4) {
        em_error_set("make_grid: images %s must be 4-D [N x C x H x W]",
                     em_shape_str(s, sizeof s, images->ndim, images->shape));
        return NULL;
    }
    int64_t n = images->shape[0], c = images->shape[1], h = images->shape[2],
            w = images->shape[3];
    if (n < 1 || c < 1 || h < 1 || w < 1) {
        em_error_set("make_grid: images %s: every size must be at least 1",
                     em_shape_str(s, sizeof s, images->ndim, images->shape));
        return NULL;
    }
    if (nrow < 1) {
        em_error_set("make_grid: nrow = %d, expected at least 1", nrow);
        return NULL;
    }
    if (padding < 0 || padding > 4096) {
        em_error_set("make_grid: padding = %d, expected 0..4096", padding);
        return NULL;
    }
    int64_t cols = n < nrow ? n : nrow;
    int64_t rows = (n + cols - 1) / cols;
    int64_t gh = rows * (h + padding) + padding, gw = cols * (w + padding) + padding;
    if (gh > (1 << 16) || gw > (1 << 16)) {
        em_error_set("make_grid: a %lld x %lld grid is too large (at most 65536 pixels a side)",
                     (long long)gh, (long long)gw);
        return NULL;
    }
    em_tensor *src = em_contiguous(images);
    if (!src) return NULL;
    int64_t shape[3] = {c, gh, gw};
    em_tensor *out = em_tensor_full(3, shape, pad_value);
    if (!out) {
        em_tensor_release(src);
        return NULL;
    }
    const float *in = em_tensor_data(src);
    float *o = out->storage->data;
#pragma omp parallel for if (n * c * h * w > 65536) schedule(static)
    for (int64_t k = 0; k < n; k++) {
        int64_t y0 = padding + (k / cols) * (h + padding);
        int64_t x0 = padding + (k % cols) * (w + padding);
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t y = 0; y < h; y++)
                memcpy(o + (ch * gh + y0 + y) * gw + x0, in + ((k * c + ch) * h + y) * w,
                       (size_t)w * sizeof(float));
    }
    em_tensor_release(src);
    return out;
}

em_tensor *em_image_upscale(em_tensor *img, int factor) {
    char s[EM_SHAPE_STR_MAX];
    if (!img) return NULL;
    if (img->ndim < 2) {
        em_error_set("upscale: image %s must have at least 2 dims [.. x H x W]",
                     em_shape_str(s, sizeof s, img->ndim, img->shape));
        return NULL;
    }
    if (factor < 1 || factor > 64) {
        em_error_set("upscale: factor %d, expected an integer in 1..64", factor);
        return NULL;
    }
    int nd = img->ndim;
    int64_t h = img->shape[nd - 2], w = img->shape[nd - 1];
    int64_t shape[EM_MAX_DIMS];
    memcpy(shape, img->shape, sizeof shape);
    shape[nd - 2] = h * factor;
    shape[nd - 1] = w * factor;
    em_tensor *src = em_contiguous(img);
    if (!src) return NULL;
    em_tensor *out = em_tensor_empty(nd, shape);
    if (!out) {
        em_tensor_release(src);
        return NULL;
    }
    int64_t planes = (h * w != 0) ? img->numel / (h * w) : 0;
    int64_t ow = w * factor;
    const float *in = em_tensor_data(src);
    float *o = out->storage->data;
#pragma omp parallel for if (out->numel > 65536) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        for (int64_t y = 0; y < h; y++) {
            float *line = o + (p * h * factor + y * factor) * ow;
            const float *src_line = in + (p * h + y) * w;
            for (int64_t x = 0; x < w; x++)
                for (int f = 0; f < factor; f++) line[x * factor + f] = src_line[x];
            for (int f = 1; f < factor; f++) memcpy(line + f * ow, line, (size_t)ow * sizeof(float));
        }
    }
    em_tensor_release(src);
    return out;
}

/* stb's write callback: appends to the FILE, remembering a failed write. */
typedef struct {
    FILE *file;
    int failed;
} png_sink;

static void png_write(void *context, void *data, int size) {
    png_sink *sink = context;
    if (!sink->failed && fwrite(data, 1, (size_t)size, sink->file) != (size_t)size)
        sink->failed = errno ? errno : EIO;
}

int em_image_save_png(const char *path, em_tensor *img, float lo, float hi) {
    char s[EM_SHAPE_STR_MAX];
    if (!path || !*path) return em_error_set("save_png: expected a file name, got an empty string");
    if (!img) return em_error_set("save_png: expected an image tensor");
    int64_t c, h, w;
    if (img->ndim == 2) {
        c = 1, h = img->shape[0], w = img->shape[1];
    } else if (img->ndim == 3) {
        c = img->shape[0], h = img->shape[1], w = img->shape[2];
    } else {
        return em_error_set("save_png: image %s must be [C x H x W] or [H x W]",
                            em_shape_str(s, sizeof s, img->ndim, img->shape));
    }
    if (c != 1 && c != 3 && c != 4)
        return em_error_set("save_png: image %s has %lld channels, expected 1 (grey), 3 (RGB) "
                            "or 4 (RGBA)", em_shape_str(s, sizeof s, img->ndim, img->shape),
                            (long long)c);
    if (h < 1 || w < 1 || h > (1 << 16) || w > (1 << 16))
        return em_error_set("save_png: image %s: height and width must be in 1..65536",
                            em_shape_str(s, sizeof s, img->ndim, img->shape));
    if (!(isfinite(lo) && isfinite(hi) && lo < hi))
        return em_error_set("save_png: range [%g, %g] must be finite with low < high", lo, hi);
    em_tensor *src = em_contiguous(img);
    if (!src) return EM_ERR;
    const float *in = em_tensor_data(src);
    int64_t plane = h * w;
    unsigned char *px = malloc((size_t)(plane * c));
    if (!px) {
        em_tensor_release(src);
        return em_error_set("save_png: out of memory for a %lld x %lld image", (long long)h,
                            (long long)w);
    }
    int64_t nan_at = -1;
    float scale = 255.0f / (hi - lo);
    for (int64_t ch = 0; ch < c; ch++)
        for (int64_t i = 0; i < plane; i++) {
            float v = in[ch * plane + i];
            if (isnan(v)) {
                if (nan_at < 0) nan_at = ch * plane + i;
                v = lo;
            }
            float b = (v - lo) * scale;
            b = b < 0.0f ? 0.0f : (b > 255.0f ? 255.0f : b);
            px[i * c + ch] = (unsigned char)(b + 0.5f);
        }
    em_tensor_release(src);
    if (nan_at >= 0) {
        free(px);
        return em_error_set("save_png: the image holds NaN (first at element %lld); not writing "
                            "'%s'", (long long)nan_at + 1, path);
    }
    errno = 0;
    FILE *f = fopen(path, "wb");
    if (!f) {
        int e = errno;
        free(px);
        return em_error_set("save_png: cannot write '%s': %s", path, strerror(e));
    }
    png_sink sink = {f, 0};
    int ok = stbi_write_png_to_func(png_write, &sink, (int)w, (int)h, (int)c, px, (int)(w * c));
    free(px);
    int closed = fclose(f);
    if (!ok || sink.failed || closed != 0)
        return em_error_set("save_png: writing '%s' failed: %s", path,
                            sink.failed ? strerror(sink.failed) : "PNG encoder error");
    return EM_OK;
}

em_tensor *em_image_load(const char *path) {
    if (!path || !*path) {
        em_error_set("load_image: expected a file name, got an empty string");
        return NULL;
    }
    struct stat st;
    int fd = em_file_open_regular_or_fail("load_image", path, &st);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        em_error_set("load_image: cannot open '%s': %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    int w = 0, h = 0, comp = 0;
    if (!stbi_info_from_file(f, &w, &h, &comp)) {
        em_error_set("load_image: '%s' is not an image stb_image can read (%s)", path,
                     stbi_failure_reason() ? stbi_failure_reason() : "unknown format");
        fclose(f);
        return NULL;
    }
    int want = comp <= 2 ? 1 : 3;
    unsigned char *px = stbi_load_from_file(f, &w, &h, &comp, want);
    fclose(f);
    if (!px) {
        em_error_set("load_image: cannot decode '%s': %s", path,
                     stbi_failure_reason() ? stbi_failure_reason() : "unknown error");
        return NULL;
    }
    int64_t shape[3] = {want, h, w};
    em_tensor *out = em_tensor_empty(3, shape);
    if (out) {
        float *o = out->storage->data;
        int64_t plane = (int64_t)h * w;
        for (int64_t ch = 0; ch < want; ch++)
            for (int64_t i = 0; i < plane; i++) o[ch * plane + i] = px[i * want + ch] / 255.0f;
    }
    stbi_image_free(px);
    return out;
}
