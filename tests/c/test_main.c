/* test_main.c — runs every registered C test (optionally those whose name
 * contains argv[1]) and prints "N passed, M failed". */
#include <stdlib.h>

#include "test.h"

#define MAX_TESTS 2048

static struct {
    const char *name;
    em_test_fn fn;
} tests[MAX_TESTS];
static int n_tests;
int em_test_failures;

void em_test_register(const char *name, em_test_fn fn) {
    if (n_tests < MAX_TESTS) {
        tests[n_tests].name = name;
        tests[n_tests].fn = fn;
        n_tests++;
    }
}

int main(int argc, char **argv) {
    int passed = 0, failed = 0;
    for (int i = 0; i < n_tests; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1])) continue;
        em_test_failures = 0;
        em_error_clear();
        tests[i].fn();
        if (em_test_failures) {
            printf("not ok - %s\n", tests[i].name);
            failed++;
        } else {
            printf("ok - %s\n", tests[i].name);
            passed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
