/* test_safetensors.c — checkpoints: exact round trips of every value kind
 * (through memory and through files), the header layout other readers see,
 * deterministic bytes, name collisions, dtype conversion on load, hostile
 * buffers (each structural error by its message), and atomic saving (a save
 * that fails mid-write keeps the old file and leaves no temp file). Files live
 * in a fresh directory under /tmp. */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "em_safetensors.h"
#include "em_tensor.h"
#include "test.h"

static char scratch_dir[64];

/* Removes the scratch directory and its files when the tests end. */
static void remove_scratch(void) {
    DIR *d = opendir(scratch_dir);
    struct dirent *e;
    char path[512];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", scratch_dir, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
    rmdir(scratch_dir);
}

/* A fresh scratch directory per process (name NULL: the directory itself). */
static const char *scratch(const char *name) {
    static char path[256];
    char *dir = scratch_dir;
    if (!dir[0]) {
        strcpy(dir, "/tmp/ember_test_st_XXXXXX");
        if (!mkdtemp(dir)) return NULL;
        atexit(remove_scratch);
    }
    if (!name) return dir;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

/* A key path from up to 4 keys: strings, or integers written "#3". */
static int mkpath(em_ckpt_key *p, const char *a, const char *b, const char *c) {
    const char *k[3] = {a, b, c};
    int n = 0;
    for (int i = 0; i < 3 && k[i]; i++, n++) {
        p[n].is_index = k[i][0] == '#';
        p[n].index = p[n].is_index ? atoll(k[i] + 1) : 0;
        p[n].name = p[n].is_index ? NULL : k[i];
    }
    return n;
}

static int add(em_checkpoint *ck, const char *a, const char *b, const char *c, em_ckpt_value v) {
    em_ckpt_key p[3];
    int n = mkpath(p, a, b, c);
    return em_checkpoint_add(ck, n, p, &v);
}

/* The leaf at the path, or NULL. */
static const em_ckpt_leaf *find(const em_checkpoint *ck, const char *a, const char *b,
                                const char *c) {
    em_ckpt_key p[3];
    int n = mkpath(p, a, b, c);
    for (int i = 0; i < ck->n_leaves; i++) {
        const em_ckpt_leaf *l = &ck->leaves[i];
        if (l->depth != n) continue;
        int same = 1;
        for (int k = 0; k < n && same; k++) {
            const em_ckpt_key *x = &l->path[k], *y = &p[k];
            same = x->is_index == y->is_index &&
                   (x->is_index ? x->index == y->index : !strcmp(x->name, y->name));
        }
        if (same) return l;
    }
    return NULL;
}

static em_tensor *arange_tensor(int64_t rows, int64_t cols) {
    int64_t shape[2] = {rows, cols};
    em_tensor *t = em_tensor_empty(2, shape);
    for (int64_t i = 0; i < rows * cols; i++) t->storage->data[i] = (float)i * 0.5f - 3.0f;
    return t;
}

static uint64_t header_len(const uint8_t *b) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    return n;
}

TEST(safetensors_round_trip_every_kind_through_memory) {
    em_checkpoint *ck = em_checkpoint_new();
    em_tensor *w = arange_tensor(3, 5);
    em_tensor *wt = em_transpose(w, 0, 1); /* non-contiguous: written contiguously */
    em_tensor *s = em_tensor_scalar(2.5f);
    int64_t zshape[2] = {0, 4};
    em_tensor *z = em_tensor_zeros(2, zshape);
    CHECK(add(ck, "model", "enc.0.weight", NULL, (em_ckpt_value){.kind = EM_CKPT_TENSOR, .tensor = wt}) == EM_OK);
    CHECK(add(ck, "scalar", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_TENSOR, .tensor = s}) == EM_OK);
    CHECK(add(ck, "empty_tensor", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_TENSOR, .tensor = z}) == EM_OK);
    CHECK(add(ck, "step", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_INTEGER, .integer = INT64_MAX}) == EM_OK);
    CHECK(add(ck, "neg", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_INTEGER, .integer = INT64_MIN}) == EM_OK);
    CHECK(add(ck, "lr", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_FLOAT, .number = 0.1}) == EM_OK);
    CHECK(add(ck, "tiny", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_FLOAT, .number = 4.9406564584124654e-324}) == EM_OK);
    CHECK(add(ck, "negzero", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_FLOAT, .number = -0.0}) == EM_OK);
    CHECK(add(ck, "inf", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_FLOAT, .number = -INFINITY}) == EM_OK);
    CHECK(add(ck, "nan", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_FLOAT, .number = NAN}) == EM_OK);
    CHECK(add(ck, "name", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_STRING, .string = "vae \xc3\xa9", .string_len = 6}) == EM_OK);
    CHECK(add(ck, "blob", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_STRING, .string = "a\0\xff", .string_len = 3}) == EM_OK);
    CHECK(add(ck, "flag", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_BOOLEAN, .boolean = true}) == EM_OK);
    CHECK(add(ck, "state", "#1", "m", (em_ckpt_value){.kind = EM_CKPT_FLOAT, .number = 1.5}) == EM_OK);
    CHECK(add(ck, "state", "1", "m", (em_ckpt_value){.kind = EM_CKPT_FLOAT, .number = 2.5}) == EM_OK);
    CHECK(add(ck, "nothing", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_EMPTY_TABLE}) == EM_OK);

    uint8_t *buf = NULL;
    size_t size = 0;
    CHECK(em_safetensors_encode(ck, &buf, &size) == EM_OK);
    uint64_t n = header_len(buf);
    CHECK(n % 8 == 0);
    CHECK(8 + n + (15 + 1 + 0) * 4 == size); /* header + the tensors' floats, nothing else */
    em_checkpoint *back = em_safetensors_load_buffer(buf, size, "mem");
    CHECK(back != NULL);
    if (back) {
        CHECK(!back->flat);
        CHECK(back->n_leaves == ck->n_leaves);
        const em_ckpt_leaf *l = find(back, "model", "enc.0.weight", NULL);
        CHECK(l && l->value.kind == EM_CKPT_TENSOR);
        if (l && l->value.tensor) {
            em_tensor *t = l->value.tensor;
            CHECK(t->ndim == 2 && t->shape[0] == 5 && t->shape[1] == 3);
            int bad = 0;
            for (int i = 0; i < 5; i++)
                for (int j = 0; j < 3; j++)
                    bad += t->storage->data[i * 3 + j] != w->storage->data[j * 5 + i];
            CHECK(bad == 0);
        }
        l = find(back, "scalar", NULL, NULL);
        CHECK(l && l->value.tensor && l->value.tensor->ndim == 0 &&
              l->value.tensor->storage->data[0] == 2.5f);
        l = find(back, "empty_tensor", NULL, NULL);
        CHECK(l && l->value.tensor && l->value.tensor->numel == 0 && l->value.tensor->shape[1] == 4);
        l = find(back, "step", NULL, NULL);
        CHECK(l && l->value.kind == EM_CKPT_INTEGER && l->value.integer == INT64_MAX);
        l = find(back, "neg", NULL, NULL);
        CHECK(l && l->value.kind == EM_CKPT_INTEGER && l->value.integer == INT64_MIN);
        l = find(back, "lr", NULL, NULL);
        CHECK(l && l->value.kind == EM_CKPT_FLOAT && l->value.number == 0.1);
        l = find(back, "tiny", NULL, NULL);
        CHECK(l && l->value.number == 4.9406564584124654e-324);
        l = find(back, "negzero", NULL, NULL);
        CHECK(l && l->value.number == 0.0 && signbit(l->value.number));
        l = find(back, "inf", NULL, NULL);
        CHECK(l && isinf(l->value.number) && l->value.number < 0);
        l = find(back, "nan", NULL, NULL);
        CHECK(l && isnan(l->value.number));
        l = find(back, "name", NULL, NULL);
        CHECK(l && l->value.kind == EM_CKPT_STRING && l->value.string_len == 6 &&
              !memcmp(l->value.string, "vae \xc3\xa9", 6));
        l = find(back, "blob", NULL, NULL);
        CHECK(l && l->value.string_len == 3 && !memcmp(l->value.string, "a\0\xff", 3));
        l = find(back, "flag", NULL, NULL);
        CHECK(l && l->value.kind == EM_CKPT_BOOLEAN && l->value.boolean);
        l = find(back, "state", "#1", "m");
        CHECK(l && l->value.number == 1.5);
        l = find(back, "state", "1", "m");
        CHECK(l && l->value.number == 2.5);
        l = find(back, "nothing", NULL, NULL);
        CHECK(l && l->value.kind == EM_CKPT_EMPTY_TABLE);
    }
    em_checkpoint_free(back);
    free(buf);
    em_checkpoint_free(ck);
    em_tensor_release(wt);
    em_tensor_release(w);
    em_tensor_release(s);
    em_tensor_release(z);
}

TEST(safetensors_header_is_plain_safetensors_with_dotted_names) {
    em_checkpoint *ck = em_checkpoint_new();
    em_tensor *t = arange_tensor(2, 2);
    add(ck, "a.b", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_TENSOR, .tensor = t});
    add(ck, "a", "b", NULL, (em_ckpt_value){.kind = EM_CKPT_TENSOR, .tensor = t});
    add(ck, "__metadata__", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_TENSOR, .tensor = t});
    add(ck, "opt", "#3", "m", (em_ckpt_value){.kind = EM_CKPT_TENSOR, .tensor = t});
    uint8_t *buf = NULL;
    size_t size = 0;
    CHECK(em_safetensors_encode(ck, &buf, &size) == EM_OK);
    if (buf) {
        uint64_t n = header_len(buf);
        char *h = strndup((const char *)buf + 8, n);
        CHECK(strstr(h, "\"__metadata__\":{\"ember.tree\":") == h + 1);
        /* sorted bytewise: ["__metadata__"] < ["a","b"] < ["a.b"] < ["opt",3,"m"] */
        CHECK(strstr(h, "\"__metadata__#2\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}") != NULL);
        CHECK(strstr(h, "\"a.b\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[16,32]}") != NULL);
        CHECK(strstr(h, "\"a.b#2\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[32,48]}") != NULL);
        /* the tree is JSON text inside a JSON string, so its quotes are escaped */
        CHECK(strstr(h, "{\\\"path\\\":[\\\"a.b\\\"],\\\"tensor\\\":\\\"a.b#2\\\"}") != NULL);
        CHECK(strstr(h, "\"opt.3.m\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[48,64]}") != NULL);
        CHECK(h[n - 1] == ' ' || h[n - 1] == '}');
        free(h);
        em_checkpoint *back = em_safetensors_load_buffer(buf, size, "mem");
        CHECK(back && back->n_leaves == 4);
        const em_ckpt_leaf *l = back ? find(back, "a", "b", NULL) : NULL;
        CHECK(l && l->value.tensor && l->value.tensor->storage->data[3] == t->storage->data[3]);
        em_checkpoint_free(back);
    }
    free(buf);
    em_checkpoint_free(ck);
    em_tensor_release(t);
}

TEST(safetensors_same_table_gives_same_bytes) {
    em_checkpoint *a = em_checkpoint_new(), *b = em_checkpoint_new();
    em_tensor *t = arange_tensor(1, 3);
    const char *names[4] = {"z", "m", "a", "q"};
    for (int i = 0; i < 4; i++) {
        add(a, names[i], NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_TENSOR, .tensor = t});
        add(b, names[3 - i], NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_TENSOR, .tensor = t});
    }
    uint8_t *ba = NULL, *bb = NULL;
    size_t sa = 0, sb = 0;
    CHECK(em_safetensors_encode(a, &ba, &sa) == EM_OK);
    CHECK(em_safetensors_encode(b, &bb, &sb) == EM_OK);
    CHECK(sa == sb && ba && bb && !memcmp(ba, bb, sa));
    free(ba);
    free(bb);
    em_checkpoint_free(a);
    em_checkpoint_free(b);
    em_tensor_release(t);
}

TEST(safetensors_save_rejects_bad_paths) {
    em_checkpoint *ck = em_checkpoint_new();
    uint8_t *buf = NULL;
    size_t size = 0;
    add(ck, "x", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_INTEGER, .integer = 1});
    add(ck, "x", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_INTEGER, .integer = 2});
    CHECK(em_safetensors_encode(ck, &buf, &size) == EM_ERR);
    CHECK_ERROR("key path x appears twice");
    em_checkpoint_free(ck);

    ck = em_checkpoint_new();
    add(ck, "x", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_INTEGER, .integer = 1});
    add(ck, "x", "#2", NULL, (em_ckpt_value){.kind = EM_CKPT_INTEGER, .integer = 2});
    CHECK(em_safetensors_encode(ck, &buf, &size) == EM_ERR);
    CHECK_ERROR("key path x holds a value and also the key path x[2]");

    CHECK(add(ck, "ok", "\xff\xfe", NULL, (em_ckpt_value){.kind = EM_CKPT_BOOLEAN}) == EM_ERR);
    CHECK_ERROR("is not UTF-8 text");
    em_ckpt_key deep[EM_CKPT_MAX_DEPTH + 1];
    for (int i = 0; i <= EM_CKPT_MAX_DEPTH; i++) deep[i] = (em_ckpt_key){.is_index = true, .index = i};
    em_ckpt_value v = {.kind = EM_CKPT_BOOLEAN};
    CHECK(em_checkpoint_add(ck, EM_CKPT_MAX_DEPTH + 1, deep, &v) == EM_ERR);
    CHECK_ERROR("key paths are 1 to 64 keys deep, got 65");
    CHECK(em_checkpoint_add(ck, EM_CKPT_MAX_DEPTH, deep, &v) == EM_OK);
    em_checkpoint_free(ck);
}

/* ---- hostile buffers --------------------------------------------------------- */

/* header length + header text (unpadded) + data bytes. */
static uint8_t *craft(const char *header, const void *data, size_t data_len, size_t *size) {
    size_t n = strlen(header);
    *size = 8 + n + data_len;
    uint8_t *b = malloc(*size);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, header, n);
    if (data_len) memcpy(b + 8 + n, data, data_len);
    return b;
}

/* Loading the crafted file fails with a message containing `text`. */
static void expect_error(const char *header, size_t data_len, const char *text, int line) {
    static const uint8_t zeros[256];
    size_t size;
    uint8_t *b = craft(header, zeros, data_len, &size);
    em_checkpoint *ck = em_safetensors_load_buffer(b, size, "bad.st");
    if (ck || !strstr(em_error_message(), text) || !strstr(em_error_message(), "load: bad.st: ")) {
        printf("    line %d: header %s: got %s, expected an error containing \"%s\"\n", line,
               header, ck ? "success" : em_error_message(), text);
        em_test_failures++;
    }
    em_checkpoint_free(ck);
    free(b);
}
#define EXPECT_ERROR(h, d, t) expect_error(h, d, t, __LINE__)

#define ENT(name, dt, shape, b, e) \
    "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

TEST(safetensors_hostile_buffers_are_clear_errors) {
    uint8_t tiny[5] = {1, 2, 3, 4, 5};
    CHECK(em_safetensors_load_buffer(tiny, 0, "bad.st") == NULL);
    CHECK_ERROR("load: bad.st: the file is empty");
    CHECK(em_safetensors_load_buffer(tiny, 5, "bad.st") == NULL);
    CHECK_ERROR("the file is 5 bytes, too short for the 8-byte header length");
    uint8_t huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    CHECK(em_safetensors_load_buffer(huge, 16, "bad.st") == NULL);
    CHECK_ERROR("header length 9223372036854775807 is larger than the file (16 bytes)");

    EXPECT_ERROR("{\"a\":", 0, "the header is not valid JSON");
    EXPECT_ERROR("[1,2]", 0, "the header is an array, expected a JSON object");
    EXPECT_ERROR("{\"a\":[]}", 0, "tensor \"a\": the entry is an array, expected an object");
    EXPECT_ERROR("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor \"a\": missing \"dtype\"");
    EXPECT_ERROR("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"dtype\" is an integer, expected a string");
    EXPECT_ERROR("{" ENT("a", "I8", "[4]", 0, 4) "}", 4, "dtype \"I8\" is not supported");
    EXPECT_ERROR("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing \"shape\"");
    EXPECT_ERROR("{" ENT("a", "F32", "[-1]", 0, 4) "}", 4, "shape[1] is -1, expected a size >= 0");
    EXPECT_ERROR("{" ENT("a", "F32", "[1.5]", 0, 4) "}", 4, "shape[1] is a non-integer number");
    EXPECT_ERROR("{" ENT("a", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 4, "shape has 9 dims, ember supports at most 8");
    EXPECT_ERROR("{" ENT("a", "F32", "[4294967296,4294967296]", 0, 4) "}", 4, "has too many elements");
    EXPECT_ERROR("{" ENT("a", "F32", "[3]", 0, 8) "}", 8, "shape [3] of F32 needs 12 bytes but data_offsets [0, 8] hold 8");
    EXPECT_ERROR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing \"data_offsets\"");
    EXPECT_ERROR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "\"data_offsets\" must be an array [begin, end]");
    EXPECT_ERROR("{" ENT("a", "F32", "[1]", -4, 0) "}", 4, "data_offsets[1] must be an integer >= 0");
    EXPECT_ERROR("{" ENT("a", "F32", "[1]", 8, 4) "}", 8, "the end comes before the begin");
    EXPECT_ERROR("{" ENT("a", "F32", "[2]", 0, 8) "}", 4, "data_offsets [0, 8] lie outside the data region (4 bytes)");
    EXPECT_ERROR("{" ENT("a", "F32", "[2]", 0, 8) "," ENT("b", "F32", "[2]", 4, 12) "}", 12, "tensors \"a\" [0, 8] and \"b\" [4, 12] overlap");
    EXPECT_ERROR("{" ENT("a", "F32", "[1]", 0, 4) "," ENT("b", "F32", "[1]", 8, 12) "}", 12, "a gap of 4 bytes between tensor \"a\" (ends at 4) and tensor \"b\" (starts at 8)");
    EXPECT_ERROR("{" ENT("a", "F32", "[1]", 4, 8) "}", 8, "a gap of 4 bytes at the start of the data region");
    EXPECT_ERROR("{" ENT("a", "F32", "[1]", 0, 4) "}", 8, "the last 4 bytes of the data region belong to no tensor");
    EXPECT_ERROR("{" ENT("a", "F32", "[1]", 0, 4) "," ENT("a", "F32", "[1]", 0, 4) "}", 4, "not valid JSON");
    EXPECT_ERROR("{\"__metadata__\":[]}", 0, "\"__metadata__\" is an array, expected an object");
    EXPECT_ERROR("{\"__metadata__\":{\"k\":1}}", 0, "\"__metadata__\" value of \"k\" is an integer, expected a string");
    EXPECT_ERROR("{\"__metadata__\":{\"a\":\"x\"}," ENT("a", "F32", "[1]", 0, 4) "}", 4, "metadata key \"a\" is also a tensor name");
    /* ember.tree problems */
    EXPECT_ERROR("{\"__metadata__\":{\"ember.tree\":\"{\"}}", 0, "metadata \"ember.tree\" is not valid JSON");
    EXPECT_ERROR("{\"__metadata__\":{\"ember.tree\":\"{\\\"version\\\":2,\\\"leaves\\\":[]}\"}}", 0, "ember.tree version 2 is not supported");
    EXPECT_ERROR("{\"__metadata__\":{\"ember.tree\":\"{\\\"version\\\":1,\\\"leaves\\\":[{\\\"path\\\":[\\\"x\\\"],\\\"tensor\\\":\\\"nope\\\"}]}\"}}", 0, "names the tensor \"nope\", which the file does not have");
    EXPECT_ERROR("{\"__metadata__\":{\"ember.tree\":\"{\\\"version\\\":1,\\\"leaves\\\":[]}\"}," ENT("a", "F32", "[1]", 0, 4) "}", 4, "tensor \"a\" is in the file but not in ember.tree");
    EXPECT_ERROR("{\"__metadata__\":{\"ember.tree\":\"{\\\"version\\\":1,\\\"leaves\\\":[{\\\"path\\\":[\\\"x\\\"],\\\"tensor\\\":\\\"a\\\"},{\\\"path\\\":[\\\"y\\\"],\\\"tensor\\\":\\\"a\\\"}]}\"}," ENT("a", "F32", "[1]", 0, 4) "}", 4, "uses the tensor \"a\" twice");
    EXPECT_ERROR("{\"__metadata__\":{\"ember.tree\":\"{\\\"version\\\":1,\\\"leaves\\\":[{\\\"path\\\":[],\\\"integer\\\":1}]}\"}}", 0, "\"path\" must be an array of 1 to 64 keys");
    EXPECT_ERROR("{\"__metadata__\":{\"ember.tree\":\"{\\\"version\\\":1,\\\"leaves\\\":[{\\\"path\\\":[\\\"x\\\"],\\\"integer\\\":1.5}]}\"}}", 0, "\"integer\" is a non-integer number, expected an integer");
    EXPECT_ERROR("{\"__metadata__\":{\"ember.tree\":\"{\\\"version\\\":1,\\\"leaves\\\":[{\\\"path\\\":[\\\"x\\\"],\\\"integer\\\":1,\\\"boolean\\\":true}]}\"}}", 0, "expected exactly one of tensor");
    EXPECT_ERROR("{\"__metadata__\":{\"ember.tree\":\"{\\\"version\\\":1,\\\"leaves\\\":[{\\\"path\\\":[\\\"x\\\"],\\\"bytes\\\":\\\"zz\\\"}]}\"}}", 0, "\"bytes\" is a string, expected a string of hex digit pairs");
    EXPECT_ERROR("{\"__metadata__\":{\"ember.tree\":\"{\\\"version\\\":1,\\\"leaves\\\":[{\\\"path\\\":[\\\"x\\\"],\\\"integer\\\":1},{\\\"path\\\":[\\\"x\\\",1],\\\"integer\\\":2}]}\"}}", 0, "key path x holds a value and also the key path x[1]");
}

TEST(safetensors_reads_other_dtypes_by_converting) {
    /* F64 [1.5, -2], F16 [1, -2, 65504, 2^-24 (subnormal)], BF16 [3, -inf], I64 [-7, 2^40], I32 [42] */
    uint8_t data[16 + 8 + 4 + 16 + 4];
    double f64[2] = {1.5, -2.0};
    uint16_t f16[4] = {0x3c00, 0xc000, 0x7bff, 0x0001}, bf16[2] = {0x4040, 0xff80};
    int64_t i64[2] = {-7, (int64_t)1 << 40};
    int32_t i32[1] = {42};
    memcpy(data, f64, 16);
    memcpy(data + 16, f16, 8);
    memcpy(data + 24, bf16, 4);
    memcpy(data + 28, i64, 16);
    memcpy(data + 44, i32, 4);
    size_t size;
    uint8_t *b = craft("{\"__metadata__\":{\"format\":\"pt\"}," ENT("d", "F64", "[2]", 0, 16) ","
                       ENT("h", "F16", "[2,2]", 16, 24) "," ENT("bf", "BF16", "[2]", 24, 28) ","
                       ENT("l", "I64", "[2]", 28, 44) "," ENT("i", "I32", "[]", 44, 48) "}",
                       data, sizeof data, &size);
    em_checkpoint *ck = em_safetensors_load_buffer(b, size, "other.st");
    CHECK(ck != NULL);
    if (ck) {
        CHECK(ck->flat && ck->n_leaves == 6);
        const em_ckpt_leaf *l = find(ck, "d", NULL, NULL);
        CHECK(l && l->value.tensor->storage->data[0] == 1.5f && l->value.tensor->storage->data[1] == -2.0f);
        l = find(ck, "h", NULL, NULL);
        CHECK(l && l->value.tensor->shape[0] == 2);
        if (l) {
            float *h = l->value.tensor->storage->data;
            CHECK(h[0] == 1.0f && h[1] == -2.0f && h[2] == 65504.0f && h[3] == 0x1p-24f);
        }
        l = find(ck, "bf", NULL, NULL);
        CHECK(l && l->value.tensor->storage->data[0] == 3.0f && isinf(l->value.tensor->storage->data[1]));
        l = find(ck, "l", NULL, NULL);
        CHECK(l && l->value.tensor->storage->data[0] == -7.0f && l->value.tensor->storage->data[1] == 0x1p40f);
        l = find(ck, "i", NULL, NULL);
        CHECK(l && l->value.tensor->ndim == 0 && l->value.tensor->storage->data[0] == 42.0f);
        l = find(ck, "format", NULL, NULL);
        CHECK(l && l->value.kind == EM_CKPT_STRING && !strcmp(l->value.string, "pt"));
    }
    em_checkpoint_free(ck);
    free(b);
}

/* ---- files --------------------------------------------------------------------- */

/* Names in the scratch directory that contain ".tmp-". */
static int temp_files_left(void) {
    DIR *d = opendir(scratch(NULL));
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp-")) n++;
    if (d) closedir(d);
    return n;
}

TEST(safetensors_files_save_load_and_file_errors) {
    em_checkpoint *ck = em_checkpoint_new();
    em_tensor *t = arange_tensor(4, 3);
    add(ck, "w", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_TENSOR, .tensor = t});
    const char *path = scratch("ok.safetensors");
    CHECK(em_safetensors_save(path, ck) == EM_OK);
    CHECK(em_safetensors_save(path, ck) == EM_OK); /* replacing works too */
    em_checkpoint *back = em_safetensors_load_file(path);
    CHECK(back && back->n_leaves == 1 && back->leaves[0].value.tensor &&
          back->leaves[0].value.tensor->storage->data[11] == t->storage->data[11]);
    em_checkpoint_free(back);
    CHECK(temp_files_left() == 0);

    CHECK(em_safetensors_load_file(scratch("missing.safetensors")) == NULL);
    CHECK_ERROR("missing.safetensors: cannot open: No such file or directory");
    CHECK(em_safetensors_load_file(scratch(NULL)) == NULL);
    CHECK_ERROR("is a directory, not a checkpoint file");
    FILE *f = fopen(scratch("empty.safetensors"), "wb");
    if (f) fclose(f);
    CHECK(em_safetensors_load_file(scratch("empty.safetensors")) == NULL);
    CHECK_ERROR("empty.safetensors: the file is empty");
    CHECK(em_safetensors_save(scratch(NULL), ck) == EM_ERR);
    CHECK_ERROR("is a directory");
    CHECK(em_safetensors_save(scratch("no/such/dir.st"), ck) == EM_ERR);
    CHECK_ERROR("cannot create the temporary file");
    CHECK(temp_files_left() == 0);
    em_checkpoint_free(ck);
    em_tensor_release(t);
}

TEST(safetensors_failed_write_keeps_old_file_and_removes_temp) {
    const char *path = scratch("keep.safetensors");
    em_checkpoint *small = em_checkpoint_new(), *big = em_checkpoint_new();
    em_tensor *t = arange_tensor(2, 2);
    int64_t shape[1] = {1 << 18}; /* 1 MB */
    em_tensor *b = em_tensor_ones(1, shape);
    add(small, "w", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_TENSOR, .tensor = t});
    add(big, "w", NULL, NULL, (em_ckpt_value){.kind = EM_CKPT_TENSOR, .tensor = b});
    CHECK(em_safetensors_save(path, small) == EM_OK);

    /* A file-size limit makes the write fail half way (EFBIG instead of SIGXFSZ). */
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 65536;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    int rc = em_safetensors_save(path, big);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    CHECK(rc == EM_ERR);
    CHECK_ERROR("keep.safetensors: cannot write: File too large");
    CHECK(temp_files_left() == 0);
    em_checkpoint *back = em_safetensors_load_file(path);
    CHECK(back && back->leaves[0].value.tensor && back->leaves[0].value.tensor->numel == 4);
    em_checkpoint_free(back);
    em_checkpoint_free(small);
    em_checkpoint_free(big);
    em_tensor_release(t);
    em_tensor_release(b);
}
