/* em_idx.c — reading and writing unsigned-byte IDX files (plain or gzip).
 *
 * The reader never trusts the header: it reads the data into a byte buffer
 * that grows only as bytes actually arrive, checks the count against the
 * declared sizes (and, for plain files, the file length before reading), and
 * only then makes the float tensor. */
#include "em_idx.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Larger declared data is refused as corrupt or hostile: 16 GiB of bytes. */
#define IDX_MAX_DATA_BYTES ((int64_t)1 << 34)
#define IDX_READ_CHUNK ((int64_t)1 << 26)

/* Reads up to n bytes; returns the count read (short at end of stream or on
 * error; the caller asks gzerror which). */
static int64_t gz_read_up_to(gzFile f, unsigned char *buf, int64_t n) {
    int64_t got = 0;
    while (got < n) {
        int64_t want = n - got < IDX_READ_CHUNK ? n - got : IDX_READ_CHUNK;
        int r = gzread(f, buf + got, (unsigned)want);
        if (r <= 0) break;
        got += r;
    }
    return got;
}

/* The zlib error of f as a message fragment, or NULL when the stream is fine. */
static const char *gz_problem(gzFile f) {
    int err = Z_OK;
    const char *msg = gzerror(f, &err);
    if (err == Z_OK) return NULL;
    if (err == Z_BUF_ERROR) return "the gzip stream ends early (truncated .gz file)";
    if (err == Z_ERRNO) return strerror(errno);
    if (!msg || !*msg) return "corrupt gzip data";
    /* gzerror prefixes the name zlib knows ("<fd:3>: "); the caller names the file */
    if (!strncmp(msg, "<fd:", 4) && strstr(msg, ": ")) msg = strstr(msg, ": ") + 2;
    return msg;
}

/* Reads the whole data section (declared bytes) into a buffer that grows as
 * data arrives; also reads one byte more to detect trailing data. Returns the
 * buffer (caller frees) or NULL with a message. */
static unsigned char *read_data(gzFile f, const char *path, int64_t declared, const char *dims) {
    int64_t want = declared + 1;
    int64_t cap = want < ((int64_t)1 << 24) ? want : ((int64_t)1 << 24);
    unsigned char *buf = malloc((size_t)cap);
    if (!buf) {
        em_error_set("idx_load: '%s': out of memory", path);
        return NULL;
    }
    int64_t got = 0;
    for (;;) {
        int64_t r = gz_read_up_to(f, buf + got, cap - got);
        got += r;
        if (got < cap || cap == want) break; /* end of stream or all we want */
        int64_t ncap = cap * 2 < want ? cap * 2 : want;
        unsigned char *nb = realloc(buf, (size_t)ncap);
        if (!nb) {
            free(buf);
            em_error_set("idx_load: '%s': out of memory", path);
            return NULL;
        }
        buf = nb;
        cap = ncap;
    }
    const char *problem = gz_problem(f);
    if (problem) {
        em_error_set("idx_load: '%s': %s (after %lld data bytes)", path, problem, (long long)got);
        free(buf);
        return NULL;
    }
    if (got < declared) {
        em_error_set("idx_load: '%s': truncated: the header declares %s = %lld data bytes, "
                     "the file holds %lld",
                     path, dims, (long long)declared, (long long)got);
        free(buf);
        return NULL;
    }
    if (got > declared) {
        em_error_set("idx_load: '%s': bytes after the %lld data bytes its header declares (%s): "
                     "the sizes do not match the file length",
                     path, (long long)declared, dims);
        free(buf);
        return NULL;
    }
    return buf;
}

em_tensor *em_idx_load(const char *path, float scale, float shift) {
    if (!path || !*path) {
        em_error_set("idx_load: expected a file name, got an empty string");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        em_error_set("idx_load: cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        em_error_set("idx_load: '%s' is not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size == 0) {
        em_error_set("idx_load: '%s' is empty (0 bytes)", path);
        close(fd);
        return NULL;
    }
    gzFile f = gzdopen(fd, "rb");
    if (!f) {
        em_error_set("idx_load: cannot read '%s': %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    gzbuffer(f, 1 << 18);

    em_tensor *out = NULL;
    unsigned char *data = NULL;
    unsigned char head[4 + 4 * EM_IDX_MAX_DIMS];
    const char *problem;
    int64_t got = gz_read_up_to(f, head, 4);
    if (got < 4) {
        problem = gz_problem(f);
        if (problem)
            em_error_set("idx_load: '%s': %s", path, problem);
        else
            em_error_set("idx_load: '%s': truncated header (%lld of the 4 magic bytes)", path,
                         (long long)got);
        goto done;
    }
    if (head[0] != 0 || head[1] != 0) {
        em_error_set("idx_load: '%s': wrong magic %02x %02x %02x %02x (expected 00 00 08 "
                     "<ndims>: not an IDX file, or a compressed file without a .gz reader?)",
                     path, head[0], head[1], head[2], head[3]);
        goto done;
    }
    if (head[2] != EM_IDX_TYPE_UBYTE) {
        em_error_set("idx_load: '%s': data type 0x%02x is not supported (expected 0x08, "
                     "unsigned bytes)", path, head[2]);
        goto done;
    }
    int ndim = head[3];
    if (ndim < 1 || ndim > EM_IDX_MAX_DIMS) {
        em_error_set("idx_load: '%s': %d dims in the header (expected 1 to %d)", path, ndim,
                     EM_IDX_MAX_DIMS);
        goto done;
    }
    got = gz_read_up_to(f, head + 4, 4 * ndim);
    if (got < 4 * ndim) {
        problem = gz_problem(f);
        if (problem)
            em_error_set("idx_load: '%s': %s", path, problem);
        else
            em_error_set("idx_load: '%s': truncated header (%lld of the %d size bytes)", path,
                         (long long)got, 4 * ndim);
        goto done;
    }
    int64_t shape[EM_IDX_MAX_DIMS];
    int64_t declared = 1;
    bool too_big = false;
    for (int i = 0; i < ndim; i++) {
        const unsigned char *p = head + 4 + 4 * i;
        shape[i] = ((int64_t)p[0] << 24) | ((int64_t)p[1] << 16) | ((int64_t)p[2] << 8) | p[3];
        if (shape[i] != 0 && declared > IDX_MAX_DATA_BYTES / shape[i]) too_big = true;
        else declared *= shape[i];
    }
    char dims[EM_SHAPE_STR_MAX];
    em_shape_str(dims, sizeof dims, ndim, shape);
    if (too_big) {
        em_error_set("idx_load: '%s': the header declares sizes %s, more than %lld bytes of data "
                     "(a corrupt or hostile header)", path, dims, (long long)IDX_MAX_DATA_BYTES);
        goto done;
    }
    int64_t header_bytes = 4 + 4 * ndim;
    if (gzdirect(f) && (int64_t)st.st_size != header_bytes + declared) {
        int64_t held = (int64_t)st.st_size - header_bytes;
        if (held < declared)
            em_error_set("idx_load: '%s': truncated: the header declares %s = %lld data bytes, "
                         "the file holds %lld", path, dims, (long long)declared, (long long)held);
        else
            em_error_set("idx_load: '%s': %lld bytes after the %lld data bytes its header "
                         "declares (%s): the sizes do not match the file length",
                         path, (long long)(held - declared), (long long)declared, dims);
        goto done;
    }
    data = read_data(f, path, declared, dims);
    if (!data) goto done;
    out = em_tensor_empty(ndim, shape);
    if (!out) goto done;
    float *o = out->storage->data;
    const unsigned char *d = data;
#pragma omp parallel for if (declared > 262144) schedule(static)
    for (int64_t i = 0; i < declared; i++) o[i] = (float)d[i] * scale + shift;
done:
    free(data);
    gzclose(f);
    return out;
}

int em_idx_save(const char *path, em_tensor *t) {
    char s[EM_SHAPE_STR_MAX];
    if (!path || !*path) return em_error_set("idx_save: expected a file name, got an empty string");
    if (!t) return em_error_set("idx_save: expected a tensor");
    if (t->ndim < 1 || t->ndim > EM_IDX_MAX_DIMS)
        return em_error_set("idx_save: tensor %s must have 1 to %d dims",
                            em_shape_str(s, sizeof s, t->ndim, t->shape), EM_IDX_MAX_DIMS);
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] > 0xffffffffLL)
            return em_error_set("idx_save: size %lld of %s does not fit IDX's 32 bits",
                                (long long)t->shape[i], em_shape_str(s, sizeof s, t->ndim, t->shape));
    int64_t n = t->numel;
    float *values = malloc((size_t)(n ? n : 1) * sizeof(float));
    unsigned char *bytes = malloc((size_t)(n ? n : 1));
    if (!values || !bytes) {
        free(values);
        free(bytes);
        return em_error_set("idx_save: out of memory for %lld values", (long long)n);
    }
    em_tensor_read(t, values);
    for (int64_t i = 0; i < n; i++) {
        float r = nearbyintf(values[i]);
        if (!(r >= 0.0f && r <= 255.0f)) {
            em_error_set("idx_save: element %lld is %g, expected a value in 0..255 (IDX stores "
                         "unsigned bytes)", (long long)i + 1, values[i]);
            free(values);
            free(bytes);
            return EM_ERR;
        }
        bytes[i] = (unsigned char)r;
    }
    free(values);
    unsigned char head[4 + 4 * EM_IDX_MAX_DIMS] = {0, 0, EM_IDX_TYPE_UBYTE, (unsigned char)t->ndim};
    for (int i = 0; i < t->ndim && i < EM_IDX_MAX_DIMS; i++) {
        uint32_t v = (uint32_t)t->shape[i];
        unsigned char *p = head + 4 + 4 * i;
        p[0] = (unsigned char)(v >> 24);
        p[1] = (unsigned char)(v >> 16);
        p[2] = (unsigned char)(v >> 8);
        p[3] = (unsigned char)v;
    }
    size_t len = strlen(path);
    bool gz = len > 3 && !strcmp(path + len - 3, ".gz");
    errno = 0;
    gzFile f = gzopen(path, gz ? "wb9" : "wbT");
    if (!f) {
        free(bytes);
        return em_error_set("idx_save: cannot write '%s': %s", path, strerror(errno));
    }
    int rc = EM_OK;
    if (gzwrite(f, head, (unsigned)(4 + 4 * t->ndim)) != 4 + 4 * t->ndim) rc = EM_ERR;
    for (int64_t off = 0; rc == EM_OK && off < n; off += IDX_READ_CHUNK) {
        unsigned chunk = (unsigned)(n - off < IDX_READ_CHUNK ? n - off : IDX_READ_CHUNK);
        if (gzwrite(f, bytes + off, chunk) != (int)chunk) rc = EM_ERR;
    }
    int cerr = gzclose(f);
    free(bytes);
    if (rc != EM_OK || cerr != Z_OK)
        return em_error_set("idx_save: writing '%s' failed: %s", path,
                            errno ? strerror(errno) : "zlib error");
    return EM_OK;
}
