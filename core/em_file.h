/* em_file.h — opening a file to read without ever blocking on it.
 *
 * open(2) of a named pipe with no writer blocks until one appears, and so does
 * a read from some devices: a loader that opens first and checks the file type
 * after would hang on such a path. em_file_open_regular opens with O_NONBLOCK
 * (which cannot block), checks with fstat that the object is a regular file,
 * and only then hands back a normal (blocking) descriptor. */
#ifndef EM_FILE_H
#define EM_FILE_H

#include <sys/stat.h>

/* Opens path read-only. Returns the descriptor (close-on-exec, blocking mode)
 * and fills *st; or -1 with *err set to the open error (errno value, *kind
 * NULL), or, for an object that is not a regular file, *err = 0 and *kind its
 * description ("a directory", "a named pipe (FIFO)", ...). */
int em_file_open_regular(const char *path, struct stat *st, int *err, const char **kind);

/* em_file_open_regular with the message set on failure (and -1 returned):
 * "<fn>: cannot open '<path>': <reason>" or "<fn>: '<path>' is not a regular
 * file (it is a named pipe (FIFO))". */
int em_file_open_regular_or_fail(const char *fn, const char *path, struct stat *st);

/* "a regular file", "a directory", "a named pipe (FIFO)", "a socket",
 * "a character device", "a block device" or "a special file" for a st_mode. */
const char *em_file_kind(mode_t mode);

#endif
