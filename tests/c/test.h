/* test.h — a tiny test framework for core/'s C tests: TEST(name) registers a
 * test (constructor), CHECK* record failures with file:line, and test_main.c
 * runs everything and prints "N passed, M failed". */
#ifndef EM_TEST_H
#define EM_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "em_error.h"

typedef void (*em_test_fn)(void);
void em_test_register(const char *name, em_test_fn fn);
extern int em_test_failures; /* failures in the current test */

#define TEST(name)                                                           \
    static void test_##name(void);                                           \
    __attribute__((constructor)) static void register_##name(void) {         \
        em_test_register(#name, test_##name);                                \
    }                                                                        \
    static void test_##name(void)

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            printf("    %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);      \
            em_test_failures++;                                                      \
        }                                                                            \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                        \
    do {                                                                             \
        double a_ = (a), b_ = (b);                                                   \
        if (!(fabs(a_ - b_) <= (tol) * (1.0 + fabs(b_)))) {                          \
            printf("    %s:%d: %s = %.7g, expected %.7g (tol %g)\n", __FILE__, __LINE__, \
                   #a, a_, b_, (double)(tol));                                       \
            em_test_failures++;                                                      \
        }                                                                            \
    } while (0)

/* The last core error message contains `text`. */
#define CHECK_ERROR(text)                                                            \
    do {                                                                             \
        if (!strstr(em_error_message(), (text))) {                                   \
            printf("    %s:%d: error \"%s\" does not contain \"%s\"\n", __FILE__,     \
                   __LINE__, em_error_message(), (text));                            \
            em_test_failures++;                                                      \
        }                                                                            \
    } while (0)

#endif
