/* em_idx.c — reading and writing unsigned-byte IDX files (plain or gzip).
 *
 * The reader never trusts the header: it reads the data into a byte buffer
 * that grows only as bytes actually arrive, checks the count against the
 * declared sizes (and, for plain files, the file length before reading), and
 * only then makes the float tensor. */
#include "em_idx.h"

#include "em_file.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Larger declared data is refused as corrupt or hostile: 16 GiB of bytes. */
#define IDX_MAX_DATA_BYTES ((int64_t)1 << 34)
#define IDX_READ_CHUNK ((int64_t)1 << 26)

/* ---- the byte stream: plain bytes, or gzip members decompressed ----------------
 *
 * zlib's gzread would do, except that it silently ignores bytes after the last
 * gzip member, while a plain file with bytes after its data is refused. This
 * reader drives inflate itself so it knows where each member ends: another
 * member may follow (as gzip(1) allows), anything else is an error. */
#define STREAM_IN_BYTES (1 << 18)

typedef struct {
    int fd;
    bool gz;              /* gzip members, else the file's bytes as they are */
    bool member_open;     /* inside a gzip member (inflate initialised for it) */
    bool file_end;        /* read() returned 0 */
    bool finished;        /* no more data: the end of the input, or an error */
    int64_t raw_read;     /* bytes read from the file so far */
    int64_t file_size;
    const char *problem;  /* why the stream ended early, or NULL */
    char problem_buf[160];
    z_stream zs;
    unsigned char in[STREAM_IN_BYTES];
} idx_stream;

/* Refills the input buffer (keeping unconsumed bytes); false at the file's end. */
static bool stream_fill(idx_stream *s) {
    if (s->file_end) return false;
    if (s->zs.avail_in > 0 && s->zs.next_in != s->in) memmove(s->in, s->zs.next_in, s->zs.avail_in);
    s->zs.next_in = s->in;
    for (;;) {
        ssize_t r = read(s->fd, s->in + s->zs.avail_in, STREAM_IN_BYTES - s->zs.avail_in);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(s->problem_buf, sizeof s->problem_buf, "%s", strerror(errno));
            s->problem = s->problem_buf;
            s->finished = true;
            return false;
        }
        if (r == 0) {
            s->file_end = true;
            return false;
        }
        s->zs.avail_in += (uInt)r;
        s->raw_read += r;
        return true;
    }
}

/* Starts the stream on fd: gzip when the file begins with the gzip magic. */
static bool stream_open(idx_stream *s, int fd, int64_t file_size) {
    memset(s, 0, sizeof *s);
    s->fd = fd;
    s->file_size = file_size;
    s->zs.next_in = s->in;
    while (s->zs.avail_in < 2 && stream_fill(s)) {
    }
    if (s->problem) return false;
    s->gz = s->zs.avail_in >= 2 && s->in[0] == 0x1f && s->in[1] == 0x8b;
    return true;
}

/* Reads up to n bytes into buf; returns the count (short only at the end of
 * the data or on an error, which stream_problem then names). */
static int64_t stream_read(idx_stream *s, unsigned char *buf, int64_t n) {
    int64_t got = 0;
    while (got < n && !s->finished) {
        if (!s->gz) { /* plain: the buffered bytes, then the file */
            if (s->zs.avail_in == 0 && !stream_fill(s)) {
                s->finished = true;
                break;
            }
            int64_t k = n - got < (int64_t)s->zs.avail_in ? n - got : (int64_t)s->zs.avail_in;
            memcpy(buf + got, s->zs.next_in, (size_t)k);
            s->zs.next_in += k;
            s->zs.avail_in -= (uInt)k;
            got += k;
            continue;
        }
        if (!s->member_open) { /* at the start, or after a member: another one? */
            while (s->zs.avail_in < 2 && stream_fill(s)) {
            }
            if (s->problem) break;
            if (s->zs.avail_in == 0) { /* the input ends where a member ended */
                s->finished = true;
                break;
            }
            if (s->zs.avail_in < 2 || s->zs.next_in[0] != 0x1f || s->zs.next_in[1] != 0x8b) {
                int64_t trailing = s->file_size - (s->raw_read - (int64_t)s->zs.avail_in);
                snprintf(s->problem_buf, sizeof s->problem_buf,
                         "%lld bytes after the end of the gzip stream that are not another "
                         "gzip member (a damaged file, or data appended to it)",
                         (long long)trailing);
                s->problem = s->problem_buf;
                s->finished = true;
                break;
            }
            if (inflateInit2(&s->zs, 16 + MAX_WBITS) != Z_OK) {
                s->problem = "out of memory for the gzip decoder";
                s->finished = true;
                break;
            }
            s->member_open = true;
        }
        if (s->zs.avail_in == 0) stream_fill(s);
        if (s->problem) break;
        int64_t want = n - got < ((int64_t)1 << 30) ? n - got : ((int64_t)1 << 30);
        s->zs.next_out = buf + got;
        s->zs.avail_out = (uInt)want;
        uInt in_before = s->zs.avail_in;
        int rc = inflate(&s->zs, Z_NO_FLUSH);
        int64_t produced = want - (int64_t)s->zs.avail_out;
        got += produced;
        if (rc == Z_STREAM_END) {
            inflateEnd(&s->zs);
            s->member_open = false;
        } else if ((rc == Z_OK || rc == Z_BUF_ERROR) && produced == 0 &&
                   s->zs.avail_in == in_before && s->file_end) {
            /* no progress and no more input: the member was cut short */
            s->problem = "the gzip stream ends early (truncated .gz file)";
            s->finished = true;
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            snprintf(s->problem_buf, sizeof s->problem_buf, "%s",
                     rc == Z_MEM_ERROR ? "out of memory for the gzip decoder"
                     : s->zs.msg       ? s->zs.msg
                                       : "corrupt gzip data");
            s->problem = s->problem_buf;
            s->finished = true;
        }
    }
    return got;
}

/* Why the stream ended early, as a message fragment, or NULL when it is fine. */
static const char *stream_problem(const idx_stream *s) { return s->problem; }

static void stream_close(idx_stream *s) {
    if (s->member_open) inflateEnd(&s->zs);
    close(s->fd);
    free(s);
}

/* Reads the whole data section (declared bytes) into a buffer that grows as
 * data arrives; also reads one byte more to detect trailing data. Returns the
 * buffer (caller frees) or NULL with a message. */
static unsigned char *read_data(idx_stream *f, const char *path, int64_t declared, const char *dims) {
    int64_t want = declared + 1;
    int64_t cap = want < ((int64_t)1 << 24) ? want : ((int64_t)1 << 24);
    unsigned char *buf = malloc((size_t)cap);
    if (!buf) {
        em_error_set("idx_load: '%s': out of memory", path);
        return NULL;
    }
    int64_t got = 0;
    for (;;) {
        int64_t r = stream_read(f, buf + got, cap - got);
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
    const char *problem = stream_problem(f);
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
    struct stat st;
    int fd = em_file_open_regular_or_fail("idx_load", path, &st);
    if (fd < 0) return NULL;
    if (st.st_size == 0) {
        em_error_set("idx_load: '%s' is empty (0 bytes)", path);
        close(fd);
        return NULL;
    }
    idx_stream *f = malloc(sizeof *f);
    if (!f) {
        em_error_set("idx_load: '%s': out of memory", path);
        close(fd);
        return NULL;
    }
    if (!stream_open(f, fd, (int64_t)st.st_size)) {
        em_error_set("idx_load: cannot read '%s': %s", path, stream_problem(f));
        stream_close(f);
        return NULL;
    }

    em_tensor *out = NULL;
    unsigned char *data = NULL;
    unsigned char head[4 + 4 * EM_IDX_MAX_DIMS];
    const char *problem;
    int64_t got = stream_read(f, head, 4);
    if (got < 4) {
        problem = stream_problem(f);
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
    got = stream_read(f, head + 4, 4 * ndim);
    if (got < 4 * ndim) {
        problem = stream_problem(f);
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
    if (!f->gz && (int64_t)st.st_size != header_bytes + declared) {
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
    stream_close(f);
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
