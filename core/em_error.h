/* em_error.h — how core/ reports a user's mistake.
 *
 * core/ never prints, exits or aborts. A fallible function returns a status:
 * functions that make a tensor return it or NULL; functions that act in place
 * return 0 (EM_OK) or -1 (EM_ERR). In both cases a thread-local message names
 * the function and the shapes, e.g.
 *   "matmul: [128 x 784] @ [400 x 784]: inner sizes 784 and 400 differ".
 * bindings/ turn that message into a Lua error. */
#ifndef EM_ERROR_H
#define EM_ERROR_H

#include <stddef.h>
#include <stdint.h>

enum { EM_OK = 0, EM_ERR = -1 };

/* Sets the thread-local message (printf-style). Always returns EM_ERR so that
 * `return em_error_set(...)` reads naturally; NULL-returning functions use
 * `em_error_set(...); return NULL;`. */
int em_error_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The last message set on this thread ("" when none). */
const char *em_error_message(void);
void em_error_clear(void);

/* Writes "[2 x 3 x 4]" (or "[]" for a scalar) into buf; returns buf. */
char *em_shape_str(char *buf, size_t bufsize, int ndim, const int64_t *shape);
#define EM_SHAPE_STR_MAX 200

#endif
