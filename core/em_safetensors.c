/* em_safetensors.c — checkpoints in the safetensors format.
 *
 * THE FILE (plain safetensors, readable by any safetensors reader):
 *
 *   bytes 0..7      N, the header length, unsigned 64-bit little-endian
 *   bytes 8..8+N    the header: UTF-8 JSON, padded with spaces to a multiple of 8
 *   the rest        the data region: tensors back to back, raw little-endian
 *
 *   header = {"__metadata__": {"ember.tree": "<tree JSON, as a string>"},
 *             "<tensor name>": {"dtype": "F32", "shape": [400, 784],
 *                               "data_offsets": [begin, end]}, ...}
 *
 * Offsets count from the first byte of the data region; ember writes every
 * tensor as F32, contiguous row-major, in tree order, covering the region
 * exactly (a non-contiguous view is written as its contiguous copy).
 *
 * HOW A NESTED LUA TABLE IS STORED. The table is flattened into leaves, each a
 * key path (its keys from the outermost table in, each a string or an integer)
 * and a value. Tensor leaves become safetensors entries named by joining the
 * path with "." (integer keys in decimal: model.enc.0.weight, optim.state.1.m);
 * when that name is already taken (paths {"a.b"} and {"a","b"} both join to
 * "a.b", or the reserved "__metadata__") the first free of "<name>#2",
 * "<name>#3", ... is used. The names are for other tools only: ember finds
 * every value through the metadata entry "ember.tree", whose string value is
 * this JSON text:
 *
 *   {"version": 1, "leaves": [leaf, ...]}
 *   leaf = {"path": [key, ...], KIND: VALUE} with exactly one KIND:
 *     "tensor":  "<entry name>"          a tensor (each entry used exactly once)
 *     "integer": 200                     a Lua integer (any 64-bit value, exact)
 *     "float":   "0.001"                 a Lua float: the shortest decimal that reads
 *                                        back to the same double, or "inf", "-inf",
 *                                        "nan" (JSON numbers cannot hold those)
 *     "string":  "vae"                   a Lua string that is UTF-8 text without NUL
 *     "bytes":   "ff00"                  any other Lua string, as lowercase hex
 *     "boolean": true
 *     "table":   {}                      an empty table (so {} survives a round trip)
 *   key = a JSON string (a string key) or a JSON integer (an integer key), so
 *   {[1] = x} and {["1"] = x} stay distinct and "enc.0.weight" stays one key.
 *
 * Leaves are sorted by path (integer keys before string keys, integers by
 * value, strings bytewise), so saving the same table twice gives the same bytes.
 *
 * LOADING. A file whose __metadata__ has "ember.tree" loads back into the tree
 * (every entry must be used by exactly one tensor leaf). Any other file — from
 * another tool — loads flat: one leaf per tensor entry, keyed by its name, and
 * one string leaf per __metadata__ key. Entries of dtype F32 are read as they
 * are; F64, F16, BF16, I64 and I32 are converted to float32 (I64/I32 values
 * beyond 2^24 and F64 values lose precision); any other dtype is an error that
 * names it. Every structural problem (header length beyond the file or beyond
 * 100 MB, invalid JSON, ill-typed fields, bad shapes, offsets outside the data
 * region, overlaps, gaps) is an error "load: <file>: <problem>" found before
 * anything large is allocated; tensor memory is bounded by the file's size.
 *
 * SAVING is atomic: the bytes go to "<path>.tmp-<pid>-<n>.<host>" in the same
 * directory, which is flushed, fsync'd and renamed over <path>; then the
 * directory is fsync'd. A crash leaves the previous file intact (and possibly
 * a stray temp file); a failed save removes its temp file. Stray temp files of
 * <path> whose process is gone (same host, pid no longer running) are removed
 * by the next save of <path>; those of another host are left alone, since
 * whether their process still runs cannot be known from here. */
#include "em_safetensors.h"

#include "em_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <locale.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "em_safetensors.c writes tensor bytes as they are in memory: little-endian hosts only"
#endif

#define TREE_KEY "ember.tree"
#define TREE_VERSION 1
#define NAME_SHOWN 120 /* at most this many bytes of a name in a message */

/* ---- building a checkpoint --------------------------------------------- */

em_checkpoint *em_checkpoint_new(void) {
    em_checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck) em_error_set("checkpoint: out of memory");
    return ck;
}

/* Frees a leaf's key path (its names and the array). */
static void free_path(int depth, em_ckpt_key *path) {
    if (!path) return;
    for (int i = 0; i < depth; i++) free((char *)path[i].name);
    free(path);
}

void em_checkpoint_free(em_checkpoint *ck) {
    if (!ck) return;
    for (int i = 0; i < ck->n_leaves; i++) {
        em_ckpt_leaf *l = &ck->leaves[i];
        free_path(l->depth, l->path);
        em_tensor_release(l->value.tensor);
        free(l->value.string);
    }
    free(ck->leaves);
    free(ck);
}

/* Whether s[0..len) is UTF-8 text without NUL bytes (jansson validates). */
static bool is_text(const char *s, size_t len) {
    if (memchr(s, '\0', len)) return false;
    json_t *j = json_stringn(s, len);
    if (!j) return false;
    json_decref(j);
    return true;
}

/* Whether s can follow a "." in Lua syntax (else a path shows it as ["..."]). */
static bool is_identifier(const char *s) {
    if (!*s || (*s >= '0' && *s <= '9')) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

char *em_ckpt_path_str(char *buf, size_t size, int depth, const em_ckpt_key *path) {
    if (size == 0) return buf;
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < depth && n < size; i++) {
        int w;
        if (path[i].is_index)
            w = snprintf(buf + n, size - n, "[%lld]", (long long)path[i].index);
        else if (is_identifier(path[i].name))
            w = snprintf(buf + n, size - n, "%s%s", i ? "." : "", path[i].name);
        else
            w = snprintf(buf + n, size - n, "[\"%s\"]", path[i].name);
        if (w < 0) break;
        n += (size_t)w;
    }
    if (n >= size && size > 4) strcpy(buf + size - 4, "...");
    return buf;
}

/* Appends a leaf; copies keys and strings; takes `value->tensor` with one new
 * reference when retain is set, else takes it over (NULL allowed while loading). */
static int push_leaf(em_checkpoint *ck, int depth, const em_ckpt_key *path,
                     const em_ckpt_value *value, bool retain) {
    if (ck->n_leaves == ck->capacity) {
        int cap = ck->capacity ? ck->capacity * 2 : 16;
        em_ckpt_leaf *l = realloc(ck->leaves, (size_t)cap * sizeof *l);
        if (!l) return em_error_set("checkpoint: out of memory");
        ck->leaves = l;
        ck->capacity = cap;
    }
    em_ckpt_leaf leaf = {.depth = depth, .value = *value};
    leaf.value.string = NULL;
    leaf.path = calloc((size_t)depth, sizeof *leaf.path);
    if (!leaf.path) return em_error_set("checkpoint: out of memory");
    for (int i = 0; i < depth; i++) {
        leaf.path[i].is_index = path[i].is_index;
        leaf.path[i].index = path[i].index;
        if (!path[i].is_index && !(leaf.path[i].name = strdup(path[i].name))) {
            free_path(depth, leaf.path);
            return em_error_set("checkpoint: out of memory");
        }
    }
    if (value->kind == EM_CKPT_STRING) {
        leaf.value.string = malloc(value->string_len + 1);
        if (!leaf.value.string) {
            free_path(depth, leaf.path);
            return em_error_set("checkpoint: out of memory");
        }
        if (value->string_len) memcpy(leaf.value.string, value->string, value->string_len);
        leaf.value.string[value->string_len] = '\0';
    }
    if (value->kind != EM_CKPT_TENSOR) leaf.value.tensor = NULL;
    else if (retain) em_tensor_retain(leaf.value.tensor);
    ck->leaves[ck->n_leaves++] = leaf;
    return EM_OK;
}

int em_checkpoint_add(em_checkpoint *ck, int depth, const em_ckpt_key *path,
                      const em_ckpt_value *value) {
    char where[256];
    if (depth < 1 || depth > EM_CKPT_MAX_DEPTH)
        return em_error_set("save: key paths are 1 to %d keys deep, got %d", EM_CKPT_MAX_DEPTH,
                            depth);
    for (int i = 0; i < depth; i++) {
        if (path[i].is_index) continue;
        if (!path[i].name) return em_error_set("save: key %d of a key path is missing", i + 1);
        if (!is_text(path[i].name, strlen(path[i].name)))
            return em_error_set("save: key path %s: a key is not UTF-8 text",
                                em_ckpt_path_str(where, sizeof where, i + 1, path));
    }
    if (value->kind == EM_CKPT_TENSOR && !value->tensor)
        return em_error_set("save: key path %s: the tensor is missing",
                            em_ckpt_path_str(where, sizeof where, depth, path));
    if (value->kind == EM_CKPT_STRING && !value->string && value->string_len)
        return em_error_set("save: key path %s: the string is missing",
                            em_ckpt_path_str(where, sizeof where, depth, path));
    if ((unsigned)value->kind > EM_CKPT_EMPTY_TABLE)
        return em_error_set("save: key path %s: unknown value kind %d",
                            em_ckpt_path_str(where, sizeof where, depth, path), (int)value->kind);
    return push_leaf(ck, depth, path, value, true);
}

/* ---- ordering leaves, and catching duplicate / conflicting paths ---------- */

/* Key order: integers first (by value), then strings (bytewise). */
static int key_cmp(const em_ckpt_key *a, const em_ckpt_key *b) {
    if (a->is_index != b->is_index) return a->is_index ? -1 : 1;
    if (a->is_index) return (a->index > b->index) - (a->index < b->index);
    return strcmp(a->name, b->name);
}

/* qsort order of leaf pointers: key by key, a path before its extensions. */
static int leaf_ptr_cmp(const void *pa, const void *pb) {
    const em_ckpt_leaf *a = *(const em_ckpt_leaf *const *)pa;
    const em_ckpt_leaf *b = *(const em_ckpt_leaf *const *)pb;
    int n = a->depth < b->depth ? a->depth : b->depth;
    for (int i = 0; i < n; i++) {
        int c = key_cmp(&a->path[i], &b->path[i]);
        if (c) return c;
    }
    return (a->depth > b->depth) - (a->depth < b->depth);
}

/* The leaves in path order (malloc'd array), or NULL + "<fn>: <file>: ..." when
 * two leaves have the same path or one path lies inside another leaf's (a key
 * would have to be a value and a table at once). In sorted order a path's
 * extensions follow it directly, so neighbours are all that need comparing. */
static const em_ckpt_leaf **sorted_leaves(const em_checkpoint *ck, const char *fn,
                                          const char *file) {
    const em_ckpt_leaf **order = malloc(((size_t)ck->n_leaves + 1) * sizeof *order);
    if (!order) {
        em_error_set("%s: %s: out of memory", fn, file);
        return NULL;
    }
    for (int i = 0; i < ck->n_leaves; i++) order[i] = &ck->leaves[i];
    qsort(order, (size_t)ck->n_leaves, sizeof *order, leaf_ptr_cmp);
    for (int i = 0; i + 1 < ck->n_leaves; i++) {
        const em_ckpt_leaf *a = order[i], *b = order[i + 1];
        if (a->depth > b->depth) continue;
        int k = 0;
        while (k < a->depth && key_cmp(&a->path[k], &b->path[k]) == 0) k++;
        if (k < a->depth) continue;
        char pa[256], pb[256];
        em_ckpt_path_str(pa, sizeof pa, a->depth, a->path);
        if (a->depth == b->depth)
            em_error_set("%s: %s: key path %s appears twice", fn, file, pa);
        else
            em_error_set("%s: %s: key path %s holds a value and also the key path %s", fn, file,
                         pa, em_ckpt_path_str(pb, sizeof pb, b->depth, b->path));
        free(order);
        return NULL;
    }
    return order;
}

/* ---- floats as text, independent of the user's locale ---------------------- */

/* The "C" numeric locale (made once), so "0.1" never becomes "0,1". */
static locale_t c_numeric_locale(void) {
    static locale_t loc = (locale_t)0;
    if (!loc) loc = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    return loc;
}

/* The shortest "%.Ng" text (N = 15..17) that reads back as v exactly. */
static int format_double(double v, char *buf, size_t size) {
    if (isnan(v) || isinf(v)) {
        snprintf(buf, size, "%s", isnan(v) ? "nan" : v < 0 ? "-inf" : "inf");
        return EM_OK;
    }
    locale_t loc = c_numeric_locale();
    if (!loc) return em_error_set("save: cannot create the C locale: out of memory");
    locale_t old = uselocale(loc);
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    uselocale(old);
    return EM_OK;
}

/* Parses the whole of s as a double; false when it is not one. */
static bool parse_double(const char *s, double *out) {
    locale_t loc = c_numeric_locale();
    if (!loc || !*s) return false;
    char *end = NULL;
    *out = strtod_l(s, &end, loc);
    return end && *end == '\0';
}

/* ---- saving ------------------------------------------------------------------ */

/* What a save writes: the padded header and the leaves in order. */
typedef struct {
    char *header;      /* header_len bytes, space-padded */
    size_t header_len;
    uint64_t data_len;
    const em_ckpt_leaf **order;
} st_plan;

/* Frees what plan_save made. */
static void plan_free(st_plan *p) {
    free(p->header);
    free(p->order);
}

/* A JSON array of the path's keys. */
static json_t *path_json(const em_ckpt_leaf *l) {
    json_t *a = json_array();
    if (!a) return NULL;
    for (int i = 0; i < l->depth; i++) {
        json_t *k = l->path[i].is_index ? json_integer(l->path[i].index)
                                        : json_string(l->path[i].name);
        if (json_array_append_new(a, k)) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* The entry name for a tensor leaf: its path joined by "." (made unique among
 * the header's keys with "#2", "#3", ...). malloc'd, or NULL when out of memory. */
static char *entry_name(const em_ckpt_leaf *l, const json_t *header) {
    size_t len = 0;
    for (int i = 0; i < l->depth; i++) len += (l->path[i].is_index ? 24 : strlen(l->path[i].name)) + 1;
    char *name = malloc(len + 24);
    if (!name) return NULL;
    size_t n = 0;
    for (int i = 0; i < l->depth; i++) {
        if (i) name[n++] = '.';
        if (l->path[i].is_index)
            n += (size_t)sprintf(name + n, "%lld", (long long)l->path[i].index);
        else {
            size_t k = strlen(l->path[i].name);
            memcpy(name + n, l->path[i].name, k);
            n += k;
        }
    }
    name[n] = '\0';
    for (long k = 2; json_object_get(header, name); k++) sprintf(name + n, "#%ld", k);
    return name;
}

/* The JSON tree leaf for l; a tensor leaf also adds its entry to header at
 * *offset and advances it. NULL + message on failure. */
static json_t *leaf_json(const em_ckpt_leaf *l, json_t *header, uint64_t *offset,
                         const char *file) {
    json_t *jl = json_object();
    json_t *v = NULL;
    const char *kind = NULL;
    char text[64];
    if (!jl || json_object_set_new(jl, "path", path_json(l))) goto oom;
    const em_ckpt_value *val = &l->value;
    switch (val->kind) {
    case EM_CKPT_TENSOR: {
        em_tensor *t = val->tensor;
        uint64_t bytes = (uint64_t)t->numel * sizeof(float);
        if (*offset > (uint64_t)INT64_MAX - bytes) {
            json_decref(jl);
            em_error_set("save: %s: the tensors add up to more than 2^63 bytes", file);
            return NULL;
        }
        json_t *shape = json_array();
        if (!shape) goto oom;
        for (int d = 0; d < t->ndim; d++)
            if (json_array_append_new(shape, json_integer(t->shape[d]))) {
                json_decref(shape);
                goto oom;
            }
        json_t *entry = json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", shape,
                                  "data_offsets", (json_int_t)*offset,
                                  (json_int_t)(*offset + bytes));
        char *name = entry_name(l, header);
        if (!entry || !name || json_object_set_new(header, name, entry)) {
            free(name);
            goto oom;
        }
        *offset += bytes;
        kind = "tensor";
        v = json_string(name);
        free(name);
        break;
    }
    case EM_CKPT_INTEGER: kind = "integer"; v = json_integer(val->integer); break;
    case EM_CKPT_FLOAT:
        if (format_double(val->number, text, sizeof text)) {
            json_decref(jl);
            return NULL;
        }
        kind = "float";
        v = json_string(text);
        break;
    case EM_CKPT_STRING:
        if (is_text(val->string, val->string_len)) {
            kind = "string";
            v = json_stringn(val->string, val->string_len);
        } else {
            kind = "bytes";
            char *hex = malloc(val->string_len * 2 + 1);
            if (!hex) goto oom;
            for (size_t i = 0; i < val->string_len; i++)
                sprintf(hex + 2 * i, "%02x", (unsigned char)val->string[i]);
            hex[val->string_len * 2] = '\0';
            v = json_string(hex);
            free(hex);
        }
        break;
    case EM_CKPT_BOOLEAN: kind = "boolean"; v = json_boolean(val->boolean); break;
    case EM_CKPT_EMPTY_TABLE: kind = "table"; v = json_object(); break;
    }
    if (json_object_set_new(jl, kind, v)) goto oom;
    return jl;
oom:
    json_decref(jl);
    em_error_set("save: %s: out of memory while building the header", file);
    return NULL;
}

/* Validates ck and builds the header. */
static int plan_save(const em_checkpoint *ck, const char *file, st_plan *plan) {
    memset(plan, 0, sizeof *plan);
    plan->order = sorted_leaves(ck, "save", file);
    if (!plan->order) return EM_ERR;
    json_t *header = json_object(), *meta = json_object(), *leaves = json_array();
    json_t *tree = NULL;
    char *tree_text = NULL, *text = NULL;
    int rc = EM_ERR;
    if (!header || !meta || !leaves) {
        json_decref(meta);
        goto oom;
    }
    if (json_object_set_new(header, "__metadata__", meta)) goto oom;
    uint64_t offset = 0;
    for (int i = 0; i < ck->n_leaves; i++) {
        json_t *jl = leaf_json(plan->order[i], header, &offset, file);
        if (!jl) goto done;
        if (json_array_append_new(leaves, jl)) goto oom;
    }
    tree = json_pack("{s:i, s:O}", "version", TREE_VERSION, "leaves", leaves);
    if (!tree || !(tree_text = json_dumps(tree, JSON_COMPACT))) goto oom;
    if (json_object_set_new(meta, TREE_KEY, json_string(tree_text))) goto oom;
    if (!(text = json_dumps(header, JSON_COMPACT))) goto oom;
    size_t len = strlen(text), padded = (len + 7) / 8 * 8;
    if (padded > EM_SAFETENSORS_MAX_HEADER) {
        em_error_set("save: %s: the header would be %zu bytes, over the %llu-byte limit "
                     "(too many values)", file, padded,
                     (unsigned long long)EM_SAFETENSORS_MAX_HEADER);
        goto done;
    }
    if (!(plan->header = malloc(padded))) goto oom;
    memcpy(plan->header, text, len);
    memset(plan->header + len, ' ', padded - len);
    plan->header_len = padded;
    plan->data_len = offset;
    rc = EM_OK;
    goto done;
oom:
    em_error_set("save: %s: out of memory while building the header", file);
done:
    free(text);
    free(tree_text);
    json_decref(tree);
    json_decref(leaves);
    json_decref(header);
    if (rc) plan_free(plan);
    return rc;
}

/* Where the bytes go: a FILE, or a memory buffer of known capacity. */
typedef struct {
    FILE *file;
    uint8_t *buf;
    size_t len;
} st_sink;

/* Appends n bytes; -1 with errno set when the FILE fails. */
static int sink_write(st_sink *s, const void *p, size_t n) {
    if (n == 0) return 0;
    if (s->file) return fwrite(p, 1, n, s->file) == n ? 0 : -1;
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    return 0;
}

/* Writes the planned file; -1 with errno set on a write error, -2 with a
 * message when out of memory. */
static int write_plan(const st_plan *plan, int n, st_sink *s) {
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)plan->header_len >> (8 * i));
    if (sink_write(s, len8, 8) || sink_write(s, plan->header, plan->header_len)) return -1;
    for (int i = 0; i < n; i++) {
        const em_ckpt_leaf *l = plan->order[i];
        if (l->value.kind != EM_CKPT_TENSOR) continue;
        const em_tensor *t = l->value.tensor;
        size_t bytes = (size_t)t->numel * sizeof(float);
        if (t->numel == 0) continue;
        if (em_tensor_is_contiguous(t)) {
            if (sink_write(s, em_tensor_data(t), bytes)) return -1;
        } else {
            float *tmp = malloc(bytes);
            if (!tmp) return -2;
            em_tensor_read(t, tmp);
            int rc = sink_write(s, tmp, bytes);
            free(tmp);
            if (rc) return -1;
        }
    }
    return 0;
}

int em_safetensors_encode(const em_checkpoint *ck, uint8_t **out, size_t *size) {
    st_plan plan;
    if (plan_save(ck, "<memory>", &plan)) return EM_ERR;
    uint64_t total = 8 + plan.header_len + plan.data_len;
    st_sink s = {.file = NULL, .buf = total <= SIZE_MAX ? malloc((size_t)total ? (size_t)total : 1) : NULL};
    if (!s.buf || write_plan(&plan, ck->n_leaves, &s)) {
        free(s.buf);
        plan_free(&plan);
        return em_error_set("save: <memory>: out of memory (%llu bytes)", (unsigned long long)total);
    }
    plan_free(&plan);
    *out = s.buf;
    *size = s.len;
    return EM_OK;
}

/* fsync of the directory holding path, so the rename itself is durable
 * (best effort: some file systems refuse to fsync directories). */
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

/* This host's name for temp file names ("" when unknown; never contains '/'). */
static void host_name(char *buf, size_t size) {
    if (gethostname(buf, size) != 0) buf[0] = 0;
    buf[size - 1] = 0;
    for (char *c = buf; *c; c++)
        if (*c == '/') *c = '_';
}

/* Whether process pid still runs: kill(pid, 0) succeeds (or is refused: it
 * exists) and /proc does not show it as a zombie (a killed saver whose parent
 * never reaped it, as PID 1 of a container may not). */
static bool process_running(long pid) {
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return false;
    char stat_path[64], buf[512];
    snprintf(stat_path, sizeof stat_path, "/proc/%ld/stat", pid);
    FILE *f = fopen(stat_path, "r");
    if (!f) return true; /* no /proc: trust kill */
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = 0;
    const char *close_paren = strrchr(buf, ')'); /* "pid (comm) S ..." */
    if (!close_paren || close_paren[1] != ' ') return true;
    return close_paren[2] != 'Z' && close_paren[2] != 'X';
}

/* Removes "<path>.tmp-<pid>-<n>[.<host>]" files left by saves of path that were
 * killed: only those of this host (or with no host: older ember) whose pid is
 * no longer a running process, and never this process's own. Best effort. */
static void remove_stale_temp_files(const char *path, const char *host) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    DIR *d = opendir(dir);
    if (!d) {
        free(dir);
        return;
    }
    size_t base_len = strlen(base);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *name = e->d_name;
        if (strncmp(name, base, base_len) != 0 || strncmp(name + base_len, ".tmp-", 5) != 0)
            continue;
        const char *p = name + base_len + 5;
        char *end;
        errno = 0;
        long pid = strtol(p, &end, 10);
        if (end == p || *end != '-' || errno || pid <= 0 || pid == (long)getpid()) continue;
        p = end + 1;
        (void)strtoul(p, &end, 10);
        if (end == p) continue;
        if (*end == '.' ? strcmp(end + 1, host) != 0 : *end != 0) continue; /* another host */
        if (process_running(pid)) continue;
        size_t n = strlen(dir) + strlen(name) + 2;
        char *full = malloc(n);
        if (!full) break;
        snprintf(full, n, "%s/%s", dir, name);
        (void)unlink(full);
        free(full);
    }
    closedir(d);
    free(dir);
}

int em_safetensors_save(const char *path, const em_checkpoint *ck) {
    static unsigned tmp_counter;
    struct stat st;
    if (!path || !*path) return em_error_set("save: the file path is empty");
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return em_error_set("save: %s: is a directory", path);
    st_plan plan;
    if (plan_save(ck, path, &plan)) return EM_ERR;

    char host[256];
    host_name(host, sizeof host);
    remove_stale_temp_files(path, host);
    size_t tmp_size = strlen(path) + 64 + strlen(host);
    char *tmp = malloc(tmp_size);
    if (!tmp) {
        plan_free(&plan);
        return em_error_set("save: %s: out of memory", path);
    }
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        snprintf(tmp, tmp_size, "%s.tmp-%ld-%u%s%s", path, (long)getpid(), tmp_counter++,
                 *host ? "." : "", host);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        em_error_set("save: %s: cannot create the temporary file %s: %s", path, tmp,
                     strerror(errno));
        free(tmp);
        plan_free(&plan);
        return EM_ERR;
    }
    FILE *f = fdopen(fd, "wb");
    const char *what = "cannot write";
    int err = 0;
    if (!f) {
        err = errno;
        close(fd);
    } else {
        st_sink s = {.file = f};
        errno = 0;
        int rc = write_plan(&plan, ck->n_leaves, &s);
        if (rc == -2) {
            err = ENOMEM;
        } else if (rc == -1 || fflush(f) != 0) {
            err = errno ? errno : EIO;
        } else if (fsync(fileno(f)) != 0) {
            err = errno;
            what = "cannot sync";
        }
        if (fclose(f) != 0 && !err) err = errno;
        if (!err && rename(tmp, path) != 0) {
            err = errno;
            what = "cannot replace the file";
        }
    }
    plan_free(&plan);
    if (err) {
        unlink(tmp);
        free(tmp);
        return em_error_set("save: %s: %s: %s", path, what, strerror(err));
    }
    free(tmp);
    sync_parent_dir(path);
    return EM_OK;
}

/* ---- loading: where the bytes come from --------------------------------------- */

typedef struct {
    const char *name;   /* the file, for messages */
    const uint8_t *buf; /* the whole file in memory, or NULL ... */
    int fd;             /* ... and then a descriptor to pread from */
    uint64_t size;
} st_source;

/* Reads n bytes at off into dst; EM_ERR + message when the file ends early. */
static int source_read(const st_source *src, uint64_t off, void *dst, size_t n) {
    if (off > src->size || n > src->size - off)
        return em_error_set("load: %s: unexpected end of file at byte %llu", src->name,
                            (unsigned long long)off);
    if (src->buf) {
        if (n) memcpy(dst, src->buf + off, n);
        return EM_OK;
    }
    uint8_t *p = dst;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? (size_t)1 << 30 : n;
        ssize_t got = pread(src->fd, p, chunk, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0)
            return em_error_set("load: %s: read error: %s", src->name, strerror(errno));
        if (got == 0)
            return em_error_set("load: %s: the file shrank while it was read", src->name);
        p += got;
        off += (uint64_t)got;
        n -= (size_t)got;
    }
    return EM_OK;
}

/* ---- loading: the header --------------------------------------------------------- */

enum { DT_F32, DT_F64, DT_F16, DT_BF16, DT_I64, DT_I32, DT_COUNT };
static const struct {
    const char *name;
    int size;
} st_dtypes[DT_COUNT] = {{"F32", 4}, {"F64", 8}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}};

/* One tensor entry of the header, checked. */
typedef struct {
    const char *name; /* the header's key (lives as long as the parsed header) */
    int dtype;
    int ndim;
    int64_t shape[EM_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;
    int uses; /* leaves of the ember tree that name it */
    em_tensor *tensor;
} st_entry;

/* "an array", "a string", ... for messages about a JSON value. */
static const char *json_type_name(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a non-integer number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* Checks one entry against the data region's length (messages name it). */
static int check_entry(const st_source *src, const char *name, json_t *j, uint64_t data_len,
                       st_entry *e) {
    const char *f = src->name;
    int nl = NAME_SHOWN;
    memset(e, 0, sizeof *e);
    e->name = name;
    if (!json_is_object(j))
        return em_error_set("load: %s: tensor \"%.*s\": the entry is %s, expected an object", f,
                            nl, name, json_type_name(j));
    json_t *dt = json_object_get(j, "dtype"), *sh = json_object_get(j, "shape"),
           *off = json_object_get(j, "data_offsets");
    if (!dt) return em_error_set("load: %s: tensor \"%.*s\": missing \"dtype\"", f, nl, name);
    if (!json_is_string(dt))
        return em_error_set("load: %s: tensor \"%.*s\": \"dtype\" is %s, expected a string", f,
                            nl, name, json_type_name(dt));
    e->dtype = -1;
    for (int i = 0; i < DT_COUNT; i++)
        if (!strcmp(json_string_value(dt), st_dtypes[i].name)) e->dtype = i;
    if (e->dtype < 0)
        return em_error_set("load: %s: tensor \"%.*s\": dtype \"%.*s\" is not supported "
                            "(ember reads F32, F64, F16, BF16, I64, I32)",
                            f, nl, name, 32, json_string_value(dt));
    if (!sh) return em_error_set("load: %s: tensor \"%.*s\": missing \"shape\"", f, nl, name);
    if (!json_is_array(sh))
        return em_error_set("load: %s: tensor \"%.*s\": \"shape\" is %s, expected an array", f,
                            nl, name, json_type_name(sh));
    size_t nd = json_array_size(sh);
    if (nd > EM_MAX_DIMS)
        return em_error_set("load: %s: tensor \"%.*s\": shape has %zu dims, ember supports at "
                            "most %d", f, nl, name, nd, EM_MAX_DIMS);
    e->ndim = (int)nd;
    e->numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < nd; i++) {
        json_t *s = json_array_get(sh, i);
        if (!json_is_integer(s) || json_integer_value(s) < 0) {
            if (json_is_integer(s))
                return em_error_set("load: %s: tensor \"%.*s\": shape[%zu] is %lld, expected a "
                                    "size >= 0", f, nl, name, i + 1,
                                    (long long)json_integer_value(s));
            return em_error_set("load: %s: tensor \"%.*s\": shape[%zu] is %s, expected a "
                                "non-negative integer", f, nl, name, i + 1, json_type_name(s));
        }
        e->shape[i] = json_integer_value(s);
        /* the same bound as em_tensor_empty: numel * 8 fits in int64 */
        if (e->shape[i] > 0 && e->numel > INT64_MAX / 8 / e->shape[i]) overflow = true;
        else e->numel *= e->shape[i];
    }
    char shape_text[EM_SHAPE_STR_MAX];
    em_shape_str(shape_text, sizeof shape_text, e->ndim, e->shape);
    if (overflow)
        return em_error_set("load: %s: tensor \"%.*s\": shape %s has too many elements", f, nl,
                            name, shape_text);
    if (!off)
        return em_error_set("load: %s: tensor \"%.*s\": missing \"data_offsets\"", f, nl, name);
    if (!json_is_array(off) || json_array_size(off) != 2)
        return em_error_set("load: %s: tensor \"%.*s\": \"data_offsets\" must be an array "
                            "[begin, end]", f, nl, name);
    for (int i = 0; i < 2; i++) {
        json_t *o = json_array_get(off, (size_t)i);
        if (!json_is_integer(o) || json_integer_value(o) < 0)
            return em_error_set("load: %s: tensor \"%.*s\": data_offsets[%d] must be an integer "
                                ">= 0", f, nl, name, i + 1);
    }
    e->begin = (uint64_t)json_integer_value(json_array_get(off, 0));
    e->end = (uint64_t)json_integer_value(json_array_get(off, 1));
    if (e->begin > e->end)
        return em_error_set("load: %s: tensor \"%.*s\": data_offsets [%llu, %llu]: the end comes "
                            "before the begin", f, nl, name, (unsigned long long)e->begin,
                            (unsigned long long)e->end);
    if (e->end > data_len)
        return em_error_set("load: %s: tensor \"%.*s\": data_offsets [%llu, %llu] lie outside "
                            "the data region (%llu bytes)", f, nl, name,
                            (unsigned long long)e->begin, (unsigned long long)e->end,
                            (unsigned long long)data_len);
    uint64_t need = (uint64_t)e->numel * (uint64_t)st_dtypes[e->dtype].size;
    if (need != e->end - e->begin)
        return em_error_set("load: %s: tensor \"%.*s\": shape %s of %s needs %llu bytes but "
                            "data_offsets [%llu, %llu] hold %llu", f, nl, name, shape_text,
                            st_dtypes[e->dtype].name, (unsigned long long)need,
                            (unsigned long long)e->begin, (unsigned long long)e->end,
                            (unsigned long long)(e->end - e->begin));
    return EM_OK;
}

/* qsort order of entry pointers by (begin, end). */
static int entry_offset_cmp(const void *pa, const void *pb) {
    const st_entry *a = *(const st_entry *const *)pa, *b = *(const st_entry *const *)pb;
    if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
    return (a->end > b->end) - (a->end < b->end);
}

/* The entries must tile the data region: no overlap, no gap, nothing left over. */
static int check_coverage(const st_source *src, st_entry *entries, size_t n, uint64_t data_len) {
    const st_entry **by_offset = malloc((n + 1) * sizeof *by_offset);
    if (!by_offset) return em_error_set("load: %s: out of memory", src->name);
    for (size_t i = 0; i < n; i++) by_offset[i] = &entries[i];
    qsort(by_offset, n, sizeof *by_offset, entry_offset_cmp);
    uint64_t covered = 0;
    const st_entry *prev = NULL;
    int rc = EM_OK;
    int nl = NAME_SHOWN;
    for (size_t i = 0; i < n && rc == EM_OK; i++) {
        const st_entry *e = by_offset[i];
        if (e->begin < covered)
            rc = em_error_set("load: %s: tensors \"%.*s\" [%llu, %llu] and \"%.*s\" [%llu, %llu] "
                              "overlap", src->name, nl, prev->name,
                              (unsigned long long)prev->begin, (unsigned long long)prev->end, nl,
                              e->name, (unsigned long long)e->begin,
                              (unsigned long long)e->end);
        else if (e->begin > covered && prev)
            rc = em_error_set("load: %s: a gap of %llu bytes between tensor \"%.*s\" (ends at "
                              "%llu) and tensor \"%.*s\" (starts at %llu)", src->name,
                              (unsigned long long)(e->begin - covered), nl, prev->name,
                              (unsigned long long)covered, nl, e->name,
                              (unsigned long long)e->begin);
        else if (e->begin > covered)
            rc = em_error_set("load: %s: a gap of %llu bytes at the start of the data region "
                              "(the first tensor \"%.*s\" starts at %llu)", src->name,
                              (unsigned long long)e->begin, nl, e->name,
                              (unsigned long long)e->begin);
        covered = e->end;
        prev = e;
    }
    if (rc == EM_OK && covered != data_len)
        rc = em_error_set("load: %s: the last %llu bytes of the data region belong to no tensor "
                          "(tensors end at %llu, the data region at %llu)", src->name,
                          (unsigned long long)(data_len - covered), (unsigned long long)covered,
                          (unsigned long long)data_len);
    free(by_offset);
    return rc;
}

/* ---- loading: ember's tree, or another tool's flat file ----------------------------- */

/* qsort / bsearch order of entry pointers by name. */
static int entry_name_cmp(const void *pa, const void *pb) {
    return strcmp((*(const st_entry *const *)pa)->name, (*(const st_entry *const *)pb)->name);
}

static const char *const tree_kinds[] = {"tensor", "integer", "float", "string",
                                         "bytes",  "boolean", "table"};
#define N_TREE_KINDS 7

/* The value of one hex digit, or -1. */
static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads one leaf of ember.tree into ck; *entry_of gets the entry index of a
 * tensor leaf (-1 otherwise). `by_name` is the entries sorted by name. */
static int tree_leaf(const st_source *src, json_t *jl, size_t i, const st_entry **by_name,
                     size_t n_entries, em_checkpoint *ck, st_entry *entries, int *entry_of) {
    const char *f = src->name;
    unsigned long long li = (unsigned long long)i + 1;
    *entry_of = -1;
    if (!json_is_object(jl))
        return em_error_set("load: %s: ember.tree leaf %llu is %s, expected an object", f, li,
                            json_type_name(jl));
    json_t *jp = json_object_get(jl, "path");
    if (!json_is_array(jp) || json_array_size(jp) < 1 || json_array_size(jp) > EM_CKPT_MAX_DEPTH)
        return em_error_set("load: %s: ember.tree leaf %llu: \"path\" must be an array of 1 to "
                            "%d keys", f, li, EM_CKPT_MAX_DEPTH);
    em_ckpt_key path[EM_CKPT_MAX_DEPTH];
    int depth = (int)json_array_size(jp);
    for (int k = 0; k < depth; k++) {
        json_t *key = json_array_get(jp, (size_t)k);
        path[k].is_index = json_is_integer(key);
        path[k].index = path[k].is_index ? json_integer_value(key) : 0;
        path[k].name = json_is_string(key) ? json_string_value(key) : NULL;
        if (!path[k].is_index && !path[k].name)
            return em_error_set("load: %s: ember.tree leaf %llu: key %d of the path is %s, "
                                "expected a string or an integer", f, li, k + 1,
                                json_type_name(key));
    }
    int kind = -1;
    json_t *v = NULL;
    for (int k = 0; k < N_TREE_KINDS; k++) {
        json_t *x = json_object_get(jl, tree_kinds[k]);
        if (!x) continue;
        if (kind >= 0) {
            kind = -2;
            break;
        }
        kind = k;
        v = x;
    }
    char where[256];
    em_ckpt_path_str(where, sizeof where, depth, path);
    if (kind < 0)
        return em_error_set("load: %s: ember.tree leaf %s: expected exactly one of tensor, "
                            "integer, float, string, bytes, boolean, table", f, where);
    em_ckpt_value val = {0};
    char *bytes = NULL;
    const char *bad = NULL;
    switch (kind) {
    case 0: { /* tensor */
        val.kind = EM_CKPT_TENSOR;
        if (!json_is_string(v)) { bad = "a string (an entry name)"; break; }
        st_entry key = {.name = json_string_value(v)};
        const st_entry *kp = &key;
        const st_entry **hit = n_entries ? bsearch(&kp, by_name, n_entries, sizeof *by_name,
                                                   entry_name_cmp) : NULL;
        if (!hit)
            return em_error_set("load: %s: ember.tree leaf %s names the tensor \"%.*s\", which "
                                "the file does not have", f, where, NAME_SHOWN, key.name);
        st_entry *e = &entries[*hit - entries];
        if (++e->uses > 1)
            return em_error_set("load: %s: ember.tree uses the tensor \"%.*s\" twice (again at "
                                "%s)", f, NAME_SHOWN, e->name, where);
        *entry_of = (int)(*hit - entries);
        break;
    }
    case 1:
        val.kind = EM_CKPT_INTEGER;
        if (!json_is_integer(v)) { bad = "an integer"; break; }
        val.integer = json_integer_value(v);
        break;
    case 2:
        val.kind = EM_CKPT_FLOAT;
        if (json_is_number(v)) val.number = json_number_value(v);
        else if (!json_is_string(v) || !parse_double(json_string_value(v), &val.number))
            bad = "a number or a string such as \"0.1\", \"inf\", \"nan\"";
        break;
    case 3:
        val.kind = EM_CKPT_STRING;
        if (!json_is_string(v)) { bad = "a string"; break; }
        val.string = (char *)json_string_value(v);
        val.string_len = json_string_length(v);
        break;
    case 4: { /* bytes, as hex */
        val.kind = EM_CKPT_STRING;
        const char *hex = json_is_string(v) ? json_string_value(v) : NULL;
        size_t len = hex ? json_string_length(v) : 0;
        if (!hex || len % 2) { bad = "a string of hex digit pairs"; break; }
        bytes = malloc(len / 2 + 1);
        if (!bytes) return em_error_set("load: %s: out of memory", f);
        for (size_t b = 0; b < len / 2 && !bad; b++) {
            int hi = hex_digit(hex[2 * b]), lo = hex_digit(hex[2 * b + 1]);
            if (hi < 0 || lo < 0) bad = "a string of hex digit pairs";
            else bytes[b] = (char)(hi * 16 + lo);
        }
        val.string = bytes;
        val.string_len = len / 2;
        break;
    }
    case 5:
        val.kind = EM_CKPT_BOOLEAN;
        if (!json_is_boolean(v)) { bad = "true or false"; break; }
        val.boolean = json_is_true(v);
        break;
    case 6:
        val.kind = EM_CKPT_EMPTY_TABLE;
        if (!json_is_object(v) || json_object_size(v)) bad = "{}";
        break;
    }
    if (bad) {
        free(bytes);
        return em_error_set("load: %s: ember.tree leaf %s: \"%s\" is %s, expected %s", f, where,
                            tree_kinds[kind], json_type_name(v), bad);
    }
    int rc = push_leaf(ck, depth, path, &val, false);
    free(bytes);
    if (rc) return em_error_set("load: %s: out of memory", f);
    return EM_OK;
}

/* Builds ck's leaves from the "ember.tree" metadata; entry_of[i] is leaf i's entry. */
static int read_tree(const st_source *src, json_t *tree_text, st_entry *entries, size_t n,
                     em_checkpoint *ck, int **entry_of) {
    const char *f = src->name;
    json_error_t err;
    json_t *tree = json_loadb(json_string_value(tree_text), json_string_length(tree_text),
                              JSON_REJECT_DUPLICATES, &err);
    if (!tree)
        return em_error_set("load: %s: metadata \"ember.tree\" is not valid JSON: %s", f,
                            err.text);
    int rc = EM_ERR;
    const st_entry **by_name = malloc((n + 1) * sizeof *by_name);
    json_t *ver = json_object_get(tree, "version"), *leaves = json_object_get(tree, "leaves");
    if (!by_name) {
        em_error_set("load: %s: out of memory", f);
        goto done;
    }
    for (size_t i = 0; i < n; i++) by_name[i] = &entries[i];
    qsort(by_name, n, sizeof *by_name, entry_name_cmp);
    if (!json_is_integer(ver)) {
        em_error_set("load: %s: ember.tree has no integer \"version\"", f);
        goto done;
    }
    if (json_integer_value(ver) != TREE_VERSION) {
        em_error_set("load: %s: ember.tree version %lld is not supported (this ember reads "
                     "version %d)", f, (long long)json_integer_value(ver), TREE_VERSION);
        goto done;
    }
    if (!json_is_array(leaves)) {
        em_error_set("load: %s: ember.tree has no \"leaves\" array", f);
        goto done;
    }
    size_t nl = json_array_size(leaves);
    if (nl > INT32_MAX / 2 || !(*entry_of = malloc((nl + 1) * sizeof **entry_of))) {
        em_error_set("load: %s: out of memory", f);
        goto done;
    }
    for (size_t i = 0; i < nl; i++)
        if (tree_leaf(src, json_array_get(leaves, i), i, by_name, n, ck, entries,
                      &(*entry_of)[i]))
            goto done;
    for (size_t i = 0; i < n; i++)
        if (entries[i].uses == 0) {
            em_error_set("load: %s: tensor \"%.*s\" is in the file but not in ember.tree", f,
                         NAME_SHOWN, entries[i].name);
            goto done;
        }
    rc = EM_OK;
done:
    free(by_name);
    json_decref(tree);
    return rc;
}

/* Another tool's file: one leaf per tensor, one string leaf per metadata key. */
static int read_flat(const st_source *src, json_t *header, json_t *meta, st_entry *entries,
                     size_t n, em_checkpoint *ck, int **entry_of) {
    size_t nm = meta ? json_object_size(meta) : 0;
    if (!(*entry_of = malloc((n + nm + 1) * sizeof **entry_of)))
        return em_error_set("load: %s: out of memory", src->name);
    ck->flat = true;
    for (size_t i = 0; i < n; i++) {
        em_ckpt_key key = {.name = entries[i].name};
        em_ckpt_value val = {.kind = EM_CKPT_TENSOR};
        if (push_leaf(ck, 1, &key, &val, false))
            return em_error_set("load: %s: out of memory", src->name);
        (*entry_of)[i] = (int)i;
    }
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        if (strcmp(k, "__metadata__") && json_object_get(header, k))
            return em_error_set("load: %s: metadata key \"%.*s\" is also a tensor name",
                                src->name, NAME_SHOWN, k);
        em_ckpt_key key = {.name = k};
        em_ckpt_value val = {.kind = EM_CKPT_STRING, .string = (char *)json_string_value(v),
                             .string_len = json_string_length(v)};
        (*entry_of)[ck->n_leaves] = -1;
        if (push_leaf(ck, 1, &key, &val, false))
            return em_error_set("load: %s: out of memory", src->name);
    }
    return EM_OK;
}

/* ---- loading: tensor data ------------------------------------------------------------ */

/* IEEE half to float, subnormals, infinities and NaNs included. */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
    else bits = sign | ((exp + 112) << 23) | (mant << 13);
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

/* Converts n raw little-endian elements of dtype at p to floats. */
static void convert_to_float(int dtype, const uint8_t *p, size_t n, float *out) {
    for (size_t i = 0; i < n; i++) {
        switch (dtype) {
        case DT_F64: { double d; memcpy(&d, p + 8 * i, 8); out[i] = (float)d; break; }
        case DT_F16: { uint16_t h; memcpy(&h, p + 2 * i, 2); out[i] = half_to_float(h); break; }
        case DT_BF16: {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[i], &bits, 4);
            break;
        }
        case DT_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); out[i] = (float)v; break; }
        case DT_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); out[i] = (float)v; break; }
        default: break;
        }
    }
}

/* Allocates the entry's tensor and reads its data (starting at data_start). */
static int read_entry(const st_source *src, uint64_t data_start, st_entry *e) {
    e->tensor = em_tensor_empty(e->ndim, e->shape);
    if (!e->tensor) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", em_error_message());
        return em_error_set("load: %s: tensor \"%.*s\": %s", src->name, NAME_SHOWN, e->name, msg);
    }
    float *dst = e->tensor->storage->data;
    uint64_t at = data_start + e->begin;
    if (e->dtype == DT_F32) return source_read(src, at, dst, (size_t)e->numel * sizeof(float));
    enum { CHUNK = 1 << 16 };
    static _Thread_local uint8_t raw[CHUNK];
    size_t esize = (size_t)st_dtypes[e->dtype].size, per = CHUNK / esize;
    for (int64_t i = 0; i < e->numel; i += (int64_t)per) {
        size_t k = (size_t)(e->numel - i) < per ? (size_t)(e->numel - i) : per;
        if (source_read(src, at + (uint64_t)i * esize, raw, k * esize)) return EM_ERR;
        convert_to_float(e->dtype, raw, k, dst + i);
    }
    return EM_OK;
}

/* ---- loading: the whole file ------------------------------------------------------------- */

/* The loader behind both the file and the buffer entry points: checks the
 * length, the header and every entry, then the tree (or builds the flat leaves),
 * and only then allocates and reads the tensors. */
static em_checkpoint *load_source(const st_source *src) {
    const char *f = src->name;
    if (src->size == 0) {
        em_error_set("load: %s: the file is empty", f);
        return NULL;
    }
    if (src->size < 8) {
        em_error_set("load: %s: the file is %llu bytes, too short for the 8-byte header length",
                     f, (unsigned long long)src->size);
        return NULL;
    }
    uint8_t len8[8];
    if (source_read(src, 0, len8, 8)) return NULL;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | len8[i];
    if (hlen > src->size - 8) {
        em_error_set("load: %s: header length %llu is larger than the file (%llu bytes): "
                     "truncated or not a safetensors file", f, (unsigned long long)hlen,
                     (unsigned long long)src->size);
        return NULL;
    }
    if (hlen > EM_SAFETENSORS_MAX_HEADER) {
        em_error_set("load: %s: header length %llu exceeds the %llu-byte limit", f,
                     (unsigned long long)hlen, (unsigned long long)EM_SAFETENSORS_MAX_HEADER);
        return NULL;
    }
    if (hlen == 0) {
        em_error_set("load: %s: header length is 0, expected a JSON object", f);
        return NULL;
    }
    uint64_t data_start = 8 + hlen, data_len = src->size - data_start;

    em_checkpoint *ck = NULL;
    st_entry *entries = NULL;
    int *entry_of = NULL;
    json_t *header = NULL;
    size_t n = 0;
    bool ok = false;
    char *owned = NULL;
    const char *htext = (const char *)(src->buf ? src->buf + 8 : NULL);
    if (!htext) {
        if (!(owned = malloc((size_t)hlen))) {
            em_error_set("load: %s: out of memory reading a %llu-byte header", f,
                         (unsigned long long)hlen);
            goto done;
        }
        if (source_read(src, 8, owned, (size_t)hlen)) goto done;
        htext = owned;
    }
    json_error_t err;
    header = json_loadb(htext, (size_t)hlen, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (!header) {
        em_error_set("load: %s: the header is not valid JSON: %s (at byte %d of the header)", f,
                     err.text, err.position);
        goto done;
    }
    if (!json_is_object(header)) {
        em_error_set("load: %s: the header is %s, expected a JSON object", f,
                     json_type_name(header));
        goto done;
    }
    json_t *meta = json_object_get(header, "__metadata__");
    if (meta) {
        if (!json_is_object(meta)) {
            em_error_set("load: %s: \"__metadata__\" is %s, expected an object", f,
                         json_type_name(meta));
            goto done;
        }
        const char *k;
        json_t *v;
        json_object_foreach(meta, k, v) {
            if (!json_is_string(v)) {
                em_error_set("load: %s: \"__metadata__\" value of \"%.*s\" is %s, expected a "
                             "string", f, NAME_SHOWN, k, json_type_name(v));
                goto done;
            }
        }
    }
    size_t n_all = json_object_size(header);
    if (!(entries = calloc(n_all + 1, sizeof *entries))) {
        em_error_set("load: %s: out of memory", f);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(header, key, val) {
        if (!strcmp(key, "__metadata__")) continue;
        if (check_entry(src, key, val, data_len, &entries[n])) goto done;
        n++;
    }
    if (check_coverage(src, entries, n, data_len)) goto done;

    if (!(ck = em_checkpoint_new())) goto done;
    json_t *tree = meta ? json_object_get(meta, TREE_KEY) : NULL;
    if (tree ? read_tree(src, tree, entries, n, ck, &entry_of)
             : read_flat(src, header, meta, entries, n, ck, &entry_of))
        goto done;
    const em_ckpt_leaf **order = sorted_leaves(ck, "load", f);
    if (!order) goto done;
    free(order);

    /* Everything checked: now allocate and read the tensors. */
    for (size_t i = 0; i < n; i++)
        if (read_entry(src, data_start, &entries[i])) goto done;
    for (int i = 0; i < ck->n_leaves; i++) {
        if (entry_of[i] < 0) continue;
        ck->leaves[i].value.tensor = entries[entry_of[i]].tensor;
        entries[entry_of[i]].tensor = NULL;
    }
    ok = true;
done:
    if (entries)
        for (size_t i = 0; i < n; i++) em_tensor_release(entries[i].tensor);
    free(entries);
    free(entry_of);
    json_decref(header);
    free(owned);
    if (!ok) {
        em_checkpoint_free(ck);
        return NULL;
    }
    return ck;
}

em_checkpoint *em_safetensors_load_buffer(const uint8_t *data, size_t size, const char *name) {
    st_source src = {.name = name ? name : "<memory>", .buf = data, .fd = -1, .size = size};
    if (!data && size) {
        em_error_set("load: %s: no data", src.name);
        return NULL;
    }
    static const uint8_t empty[1];
    if (!data) src.buf = empty;
    return load_source(&src);
}

em_checkpoint *em_safetensors_load_file(const char *path) {
    if (!path || !*path) {
        em_error_set("load: the file path is empty");
        return NULL;
    }
    struct stat st;
    int err;
    const char *kind;
    int fd = em_file_open_regular(path, &st, &err, &kind);
    if (fd < 0) {
        if (kind)
            em_error_set("load: %s: is %s, not a checkpoint file", path, kind);
        else
            em_error_set("load: %s: cannot open: %s", path, strerror(err));
        return NULL;
    }
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    st_source src = {.name = path, .buf = NULL, .fd = fd, .size = (uint64_t)st.st_size};
    em_checkpoint *ck = load_source(&src);
    close(fd);
    return ck;
}
