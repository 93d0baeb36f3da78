/* em_idx.h — IDX files, the format of MNIST, Fashion-MNIST, KMNIST and EMNIST.
 *
 * An IDX file is a 4-byte magic 0x00 0x00 <type> <ndims>, then ndims sizes
 * as big-endian uint32, then the data in row-major order. ember reads and
 * writes the unsigned-byte type (0x08) with 1 to 4 dims, plain or gzip
 * (zlib's gz* functions read either). Every malformed file (missing, empty,
 * wrong magic, truncated, trailing bytes, corrupt gzip, sizes that overflow)
 * is an error naming the file and the problem; nothing is allocated from a
 * declared size before the data has actually been read. */
#ifndef EM_IDX_H
#define EM_IDX_H

#include "em_tensor.h"

#define EM_IDX_MAX_DIMS 4
#define EM_IDX_TYPE_UBYTE 0x08

/* Loads an unsigned-byte IDX file as a float tensor shaped like the file's
 * dims ([N x 28 x 28] for images, [N] for labels); each value is
 * byte * scale + shift (scale 1/255 gives [0,1] pixels, shift 1 gives
 * 1-based labels). */
em_tensor *em_idx_load(const char *path, float scale, float shift);

/* Writes t (1..4 dims, every value an integer in 0..255 after rounding) as an
 * unsigned-byte IDX file; gzip-compressed when path ends in ".gz". */
int em_idx_save(const char *path, em_tensor *t);

#endif
