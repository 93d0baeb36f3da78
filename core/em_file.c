/* em_file.c — see em_file.h: open for reading, refusing (without blocking)
 * anything but a regular file. */
#include "em_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "em_error.h"

const char *em_file_kind(mode_t mode) {
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a named pipe (FIFO)";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    return "a special file";
}

int em_file_open_regular(const char *path, struct stat *st, int *err, const char **kind) {
    *err = 0;
    *kind = NULL;
    /* O_NONBLOCK: opening a FIFO without a writer returns at once instead of
     * waiting for one; for a regular file the flag changes nothing. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    if (fstat(fd, st) != 0) {
        *err = errno;
        close(fd);
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        *kind = em_file_kind(st->st_mode);
        close(fd);
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        *err = errno;
        close(fd);
        return -1;
    }
    return fd;
}

int em_file_open_regular_or_fail(const char *fn, const char *path, struct stat *st) {
    int err;
    const char *kind;
    int fd = em_file_open_regular(path, st, &err, &kind);
    if (fd >= 0) return fd;
    if (kind) return em_error_set("%s: '%s' is not a regular file (it is %s)", fn, path, kind);
    return em_error_set("%s: cannot open '%s': %s", fn, path, strerror(err));
}
