/* em_safetensors.h — checkpoints: a tree of named values (tensors, integers,
 * floats, strings, booleans) saved to and loaded from safetensors files.
 *
 * A checkpoint is a flat list of leaves; each leaf has a key path (string or
 * integer keys, outermost first) and a value. bindings/ turn a nested Lua
 * table into leaves and back; the file layout (how paths and non-tensor values
 * are stored so that other safetensors readers still see plain F32 entries) is
 * documented at the top of em_safetensors.c.
 *
 * Saving is atomic (temp file in the same directory, fsync, rename, fsync of
 * the directory). Loading checks every byte of a hostile file before it
 * allocates anything large; problems come back as NULL / EM_ERR with a message
 * "load: <file>: <problem>". */
#ifndef EM_SAFETENSORS_H
#define EM_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "em_tensor.h"

/* Limits: a header larger than this is refused (as the reference reader does),
 * and key paths are at most this deep. */
#define EM_SAFETENSORS_MAX_HEADER ((uint64_t)100000000)
#define EM_CKPT_MAX_DEPTH 64

typedef enum {
    EM_CKPT_TENSOR,
    EM_CKPT_INTEGER,
    EM_CKPT_FLOAT,
    EM_CKPT_STRING, /* any bytes; stored as text when UTF-8 without NUL, else as hex */
    EM_CKPT_BOOLEAN,
    EM_CKPT_EMPTY_TABLE
} em_ckpt_kind;

/* One step of a key path: an integer key, or a string key (UTF-8, no NUL). */
typedef struct {
    bool is_index;
    int64_t index;
    const char *name;
} em_ckpt_key;

/* A value; which field counts depends on kind. */
typedef struct {
    em_ckpt_kind kind;
    em_tensor *tensor; /* a reference owned by the checkpoint */
    int64_t integer;
    double number;
    bool boolean;
    char *string;      /* string_len bytes plus a terminating NUL */
    size_t string_len;
} em_ckpt_value;

typedef struct {
    int depth;         /* 1..EM_CKPT_MAX_DEPTH */
    em_ckpt_key *path; /* depth keys, owned by the checkpoint */
    em_ckpt_value value;
} em_ckpt_leaf;

typedef struct em_checkpoint {
    int n_leaves;
    int capacity;
    em_ckpt_leaf *leaves;
    bool flat; /* loaded from a file without ember's layout (another tool's) */
} em_checkpoint;

/* ---- building and inspecting -------------------------------------------- */
em_checkpoint *em_checkpoint_new(void);
void em_checkpoint_free(em_checkpoint *ck); /* NULL is fine; releases tensors */
/* Adds a leaf at path (depth keys; keys and strings are copied, a tensor is
 * retained). EM_ERR + message for a bad depth, a key that is not UTF-8 text, or
 * out of memory. Duplicate / conflicting paths are caught when saving. */
int em_checkpoint_add(em_checkpoint *ck, int depth, const em_ckpt_key *path,
                      const em_ckpt_value *value);
/* Writes a path in Lua syntax (optim.state[1].m, model["enc.0.weight"]) into
 * buf, truncated to size; returns buf. */
char *em_ckpt_path_str(char *buf, size_t size, int depth, const em_ckpt_key *path);

/* ---- files ---------------------------------------------------------------- */
/* Saves ck to path atomically: the previous file survives any failure or crash;
 * a failed save removes its temp file. */
int em_safetensors_save(const char *path, const em_checkpoint *ck);
/* The same bytes into a malloc'd buffer (*out, *size), for tests and tools. */
int em_safetensors_encode(const em_checkpoint *ck, uint8_t **out, size_t *size);
/* Loads a safetensors file (ember's or another tool's). */
em_checkpoint *em_safetensors_load_file(const char *path);
/* Loads from memory; `name` stands for the file in messages. */
em_checkpoint *em_safetensors_load_buffer(const uint8_t *data, size_t size, const char *name);

#endif
