/* What every fuzz target of tests/fuzz shares: the libFuzzer entry point each
 * target defines (libFuzzer calls it in the clang fuzz build, replay_main.c in
 * the normal builds) and FUZZ_CHECK, the oracle that turns a broken promise
 * of the code under test into a crash the fuzzer reports and keeps. */
#ifndef PF_FUZZ_H
#define PF_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Runs one input through the target. data is borrowed for the call; the
 * return value is always 0 (libFuzzer's convention). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz check failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A NUL-terminated heap copy of data[0..len) (owned by the caller: free it);
 * aborts when out of memory, which only a leak in a target could cause. */
static inline char *fuzz_strndup(const uint8_t *data, size_t len)
{
    char *s = malloc(len + 1);
    FUZZ_CHECK(s != NULL);
    for (size_t i = 0; i < len; i++)
        s[i] = (char)data[i];
    s[len] = '\0';
    return s;
}

#endif
