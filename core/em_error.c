/* em_error.c — the thread-local error message of core/. */
#include "em_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char em_error_buffer[1024];

int em_error_set(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(em_error_buffer, sizeof em_error_buffer, fmt, ap);
    va_end(ap);
    return EM_ERR;
}

const char *em_error_message(void) { return em_error_buffer; }

void em_error_clear(void) { em_error_buffer[0] = '\0'; }

char *em_shape_str(char *buf, size_t bufsize, int ndim, const int64_t *shape) {
    size_t used = 0;
    if (bufsize == 0) return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf + used, bufsize - used, "[");
    for (int i = 0; i < ndim && used < bufsize; i++)
        used += (size_t)snprintf(buf + used, bufsize - used, i ? " x %lld" : "%lld",
                                 (long long)shape[i]);
    if (used < bufsize) snprintf(buf + used, bufsize - used, "]");
    return buf;
}
