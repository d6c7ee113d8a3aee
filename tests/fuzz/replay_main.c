/* The main of the fuzz targets in the normal builds: runs every file of the
 * directories (or files) named on the command line through
 * LLVMFuzzerTestOneInput, so the committed seed corpus and every crash ever
 * found (tests/fuzz/regressions/TARGET/) replay under gcc, ASan and UBSan in
 * ctest. A crash, a sanitizer report or a FUZZ_CHECK failure fails the test;
 * so does finding no input at all, which would prove nothing. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#define PATH_MAX_LEN 4096

/* Reads the whole file at path into a heap buffer (*data, *len; the caller
 * frees it). Returns 0, or -1 with a message printed. */
static int read_file(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;

    if (f == NULL) {
        fprintf(stderr, "replay: could not open '%s': %s\n", path, strerror(errno));
        return -1;
    }
    for (;;) {
        if (n == cap) {
            size_t grown = cap == 0 ? 4096 : cap * 2;
            uint8_t *p = realloc(buf, grown);
            if (p == NULL) {
                fprintf(stderr, "replay: out of memory reading '%s'\n", path);
                free(buf);
                fclose(f);
                return -1;
            }
            buf = p;
            cap = grown;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "replay: could not read '%s'\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    *data = buf;
    *len = n;
    return 0;
}

static int run_one(const char *path, unsigned *count)
{
    uint8_t *data;
    size_t len;
    if (read_file(path, &data, &len) != 0)
        return -1;
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
    /* A private copy of exactly len bytes, so ASan sees any over-read. */
    uint8_t *exact = malloc(len > 0 ? len : 1);
    if (exact == NULL) {
        free(data);
        return -1;
    }
    if (len > 0)
        memcpy(exact, data, len);
    free(data);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    (*count)++;
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file of dir, in name order (hidden files skipped). */
static int run_dir(const char *dir, unsigned *count)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;

    if (d == NULL) {
        fprintf(stderr, "replay: could not open directory '%s': %s\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap == 0 ? 64 : cap * 2;
            char **p = realloc(names, cap * sizeof(*names));
            if (p == NULL) {
                rc = -1;
                break;
            }
            names = p;
        }
        names[n] = strdup(e->d_name);
        if (names[n] == NULL) {
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), compare_names);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char path[PATH_MAX_LEN];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            rc = run_one(path, count);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    unsigned count = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            /* A target without regressions yet has no directory: fine. */
            fprintf(stderr, "replay: '%s' does not exist: skipped\n", argv[i]);
            continue;
        }
        int rc = S_ISDIR(st.st_mode) ? run_dir(argv[i], &count) : run_one(argv[i], &count);
        if (rc != 0)
            return 1;
    }
    if (count == 0) {
        fprintf(stderr, "replay: no input found in the paths given\n");
        return 1;
    }
    printf("replay: %u input(s) ran clean\n", count);
    return 0;
}
