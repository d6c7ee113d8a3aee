/* Unit tests of the pf-files blob store (services/files/store.c) on a real
 * temporary directory: upload round trips, every way an upload is rejected
 * (and that a rejected or abandoned upload leaves nothing behind), concurrent
 * uploads of the same content, crash leftovers, corruption of stored blobs
 * (including corruption the verification cache must not hide), ranged reads
 * and missing blobs. */
#define _GNU_SOURCE /* nftw */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "digest.h"
#include "log.h"
#include "store.h"

#define THREADS 8

struct fixture {
    char dir[256];
    struct pf_store *store;
};

static char path_buf[1024];
static size_t files_seen;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int count_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    if (flag == FTW_F)
        files_seen++;
    return 0;
}

/* Regular files under dir/sub, recursively. */
static size_t count_files(const struct fixture *f, const char *sub)
{
    snprintf(path_buf, sizeof path_buf, "%s/%s", f->dir, sub);
    files_seen = 0;
    assert_int_equal(nftw(path_buf, count_entry, 16, FTW_PHYS), 0);
    return files_seen;
}

static const char *blob_path(const struct fixture *f, const struct pf_digest *d)
{
    char hex[PF_DIGEST_HEX_LEN + 1];

    pf_digest_to_hex(d, hex);
    snprintf(path_buf, sizeof path_buf, "%s/blobs/%.2s/%.2s/%s", f->dir, hex, hex + 2, hex);
    return path_buf;
}

static void open_store(struct fixture *f, const struct pf_store_limits *lim)
{
    struct pf_error err = {0};

    if (pf_store_open(f->dir, lim, &f->store, &err) != PF_OK)
        fail_msg("pf_store_open: %s", err.msg);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    const char *tmp = getenv("TMPDIR");

    snprintf(f->dir, sizeof f->dir, "%s/pf-test-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir))
        return -1;
    /* A data directory that does not exist yet: pf_store_open creates it. */
    strncat(f->dir, "/data/files", sizeof f->dir - strlen(f->dir) - 1);
    open_store(f, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char *slash;

    pf_store_close(f->store);
    slash = strstr(f->dir, "/data/files");
    *slash = '\0';
    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static enum pf_status put(struct fixture *f, const void *data, size_t len,
                          const struct pf_digest *expected, struct pf_digest *out, bool *existed,
                          struct pf_error *err)
{
    struct pf_store_writer *w;
    enum pf_status rc;

    rc = pf_store_writer_begin(f->store, len, expected, &w, err);
    if (rc != PF_OK)
        return rc;
    rc = pf_store_writer_write(w, data, len, err);
    if (rc != PF_OK) {
        pf_store_writer_abort(w);
        return rc;
    }
    return pf_store_writer_commit(w, out, existed, err);
}

static void put_ok(struct fixture *f, const void *data, size_t len, struct pf_digest *out,
                   bool *existed)
{
    struct pf_error err = {0};

    if (put(f, data, len, NULL, out, existed, &err) != PF_OK)
        fail_msg("put: %s", err.msg);
}

/* Reads the blob from offset to its end in reads of at most cap bytes. No
 * cmocka asserts (threads call it): a broken reader contract is PF_E_INTERNAL. */
static enum pf_status read_from(struct fixture *f, const struct pf_digest *d, uint64_t offset,
                                size_t cap, char *out, size_t *len, struct pf_error *err)
{
    struct pf_store_reader *r;
    enum pf_status rc;
    uint64_t total;
    size_t n;

    *len = 0;
    rc = pf_store_reader_open(f->store, d, offset, &r, &total, err);
    if (rc != PF_OK)
        return rc;
    while ((rc = pf_store_reader_read(r, out + *len, cap, &n, err)) == PF_OK) {
        if (n == 0 || n > cap)
            break;
        *len += n;
    }
    pf_store_reader_close(r);
    if (rc == PF_OK || n != 0 || (rc == PF_E_END && *len != total - offset))
        return PF_E_INTERNAL;
    return rc == PF_E_END ? PF_OK : rc;
}

static char *pattern(size_t len, unsigned seed)
{
    char *p = malloc(len ? len : 1);

    for (size_t i = 0; i < len; i++)
        p[i] = (char)((i * 2654435761u + seed) >> 13);
    return p;
}

/* Flips a byte of the stored blob; with bump, also moves its mtime to a fixed
 * past time so the change is visible whatever the file system's timestamp
 * granularity. */
static void corrupt_blob(struct fixture *f, const struct pf_digest *d, off_t at, bool bump)
{
    int fd = open(blob_path(f, d), O_RDWR);
    unsigned char c;

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &c, 1, at), 1);
    c ^= 0x5a;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    if (bump) {
        struct timespec times[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
        assert_int_equal(futimens(fd, times), 0);
    }
    close(fd);
}

static void assert_msg_contains(const struct pf_error *err, const char *text)
{
    if (!strstr(err->msg, text))
        fail_msg("message '%s' does not contain '%s'", err->msg, text);
}

static void test_roundtrip(void **state)
{
    struct fixture *f = *state;
    const char text[] = "G28 ; home all axes\nG1 X10 Y10 F3000\n";
    char got[sizeof text], hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_digest d, want;
    struct pf_error err = {0};
    bool existed = true;
    uint64_t size;
    size_t len;
    struct stat st;

    put_ok(f, text, sizeof text - 1, &d, &existed);
    pf_sha256(text, sizeof text - 1, &want);
    assert_true(pf_digest_equal(&d, &want));
    assert_false(existed);
    assert_int_equal(stat(blob_path(f, &d), &st), 0);
    assert_int_equal(st.st_size, sizeof text - 1);
    assert_int_equal(count_files(f, "blobs"), 1);
    assert_int_equal(count_files(f, "tmp"), 0);

    assert_int_equal(pf_store_stat(f->store, &d, &size, &err), PF_OK);
    assert_int_equal(size, sizeof text - 1);
    assert_int_equal(read_from(f, &d, 0, 7, got, &len, &err), PF_OK);
    assert_memory_equal(got, text, sizeof text - 1);
    /* A second read is served from the verification cache. */
    assert_int_equal(read_from(f, &d, 0, 1000, got, &len, &err), PF_OK);
    assert_memory_equal(got, text, sizeof text - 1);
    assert_int_equal(pf_store_verify(f->store, &d, &err), PF_OK);
    pf_digest_to_hex(&d, hex);
    assert_string_equal(strrchr(blob_path(f, &d), '/') + 1, hex);
}

static void test_roundtrip_many_chunks(void **state)
{
    struct fixture *f = *state;
    const size_t len = 3 * 1024 * 1024 + 17;
    char *data = pattern(len, 1), *got = malloc(len);
    struct pf_store_writer *w;
    struct pf_error err = {0};
    struct pf_digest d, want;
    bool existed;
    size_t n;

    assert_int_equal(pf_store_writer_begin(f->store, len, NULL, &w, &err), PF_OK);
    for (size_t off = 0; off < len; off += 65536) {
        size_t k = len - off < 65536 ? len - off : 65536;
        assert_int_equal(pf_store_writer_write(w, data + off, k, &err), PF_OK);
    }
    assert_int_equal(pf_store_writer_commit(w, &d, &existed, &err), PF_OK);
    pf_sha256(data, len, &want);
    assert_true(pf_digest_equal(&d, &want));
    assert_int_equal(read_from(f, &d, 0, 100000, got, &n, &err), PF_OK);
    assert_int_equal(n, len);
    assert_memory_equal(got, data, len);
    free(data);
    free(got);
}

static void test_empty_blob(void **state)
{
    struct fixture *f = *state;
    struct pf_store_reader *r;
    struct pf_error err = {0};
    struct pf_digest d, want;
    char hex[PF_DIGEST_HEX_LEN + 1], buf[4], *all;
    uint64_t total = 99;
    bool existed;
    size_t n, len;

    put_ok(f, NULL, 0, &d, &existed);
    pf_digest_to_hex(&d, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    pf_sha256("", 0, &want);
    assert_true(pf_digest_equal(&d, &want));
    assert_int_equal(pf_store_reader_open(f->store, &d, 0, &r, &total, &err), PF_OK);
    assert_int_equal(total, 0);
    assert_int_equal(pf_store_reader_read(r, buf, sizeof buf, &n, &err), PF_E_END);
    assert_int_equal(n, 0);
    pf_store_reader_close(r);
    assert_int_equal(pf_store_read_all(f->store, &d, 10, &all, &len, &err), PF_OK);
    assert_int_equal(len, 0);
    assert_string_equal(all, "");
    free(all);
    assert_int_equal(pf_store_reader_open(f->store, &d, 1, &r, &total, &err), PF_E_OUT_OF_RANGE);
    assert_null(r);
}

static void test_expected_digest_matches(void **state)
{
    struct fixture *f = *state;
    const char text[] = "M104 S215";
    struct pf_digest want, d;
    struct pf_error err = {0};
    bool existed;

    pf_sha256(text, strlen(text), &want);
    assert_int_equal(put(f, text, strlen(text), &want, &d, &existed, &err), PF_OK);
    assert_true(pf_digest_equal(&d, &want));
}

static void test_wrong_expected_digest_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    const char text[] = "M104 S215";
    char want_hex[PF_DIGEST_HEX_LEN + 1], got_hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_digest wrong, actual, d;
    struct pf_error err = {0};
    bool existed;

    pf_sha256("something else", 14, &wrong);
    pf_sha256(text, strlen(text), &actual);
    assert_int_equal(put(f, text, strlen(text), &wrong, &d, &existed, &err), PF_E_INVALID);
    pf_digest_to_hex(&wrong, want_hex);
    pf_digest_to_hex(&actual, got_hex);
    assert_msg_contains(&err, "does not match the declared digest");
    assert_msg_contains(&err, want_hex);
    assert_msg_contains(&err, got_hex);
    assert_int_equal(count_files(f, "blobs"), 0);
    assert_int_equal(count_files(f, "tmp"), 0);
    assert_int_equal(pf_store_stat(f->store, &actual, NULL, &err), PF_E_NOT_FOUND);
}

static void test_fewer_bytes_than_declared(void **state)
{
    struct fixture *f = *state;
    struct pf_store_writer *w;
    struct pf_error err = {0};
    struct pf_digest d;
    bool existed;

    assert_int_equal(pf_store_writer_begin(f->store, 10, NULL, &w, &err), PF_OK);
    assert_int_equal(count_files(f, "tmp"), 1);
    assert_int_equal(pf_store_writer_write(w, "hello", 5, &err), PF_OK);
    assert_int_equal(pf_store_writer_commit(w, &d, &existed, &err), PF_E_INVALID);
    assert_string_equal(err.msg, "received 5 bytes but the header declared 10");
    assert_int_equal(count_files(f, "blobs"), 0);
    assert_int_equal(count_files(f, "tmp"), 0);
}

static void test_more_bytes_than_declared(void **state)
{
    struct fixture *f = *state;
    struct pf_store_writer *w;
    struct pf_error err = {0};
    struct pf_digest d;
    bool existed;

    /* In one chunk. */
    assert_int_equal(pf_store_writer_begin(f->store, 5, NULL, &w, &err), PF_OK);
    assert_int_equal(pf_store_writer_write(w, "hello world", 11, &err), PF_E_INVALID);
    assert_msg_contains(&err, "passes the declared size of 5 bytes");
    pf_store_writer_abort(w);
    assert_int_equal(count_files(f, "tmp"), 0);

    /* Over two chunks; the upload is dead afterwards and the commit cleans up. */
    assert_int_equal(pf_store_writer_begin(f->store, 5, NULL, &w, &err), PF_OK);
    assert_int_equal(pf_store_writer_write(w, "hel", 3, &err), PF_OK);
    assert_int_equal(pf_store_writer_write(w, "lo!", 3, &err), PF_E_INVALID);
    assert_string_equal(err.msg,
                        "chunk of 3 bytes at offset 3 passes the declared size of 5 bytes");
    assert_int_not_equal(pf_store_writer_write(w, "lo", 2, &err), PF_OK);
    assert_int_not_equal(pf_store_writer_commit(w, &d, &existed, &err), PF_OK);
    assert_int_equal(count_files(f, "blobs"), 0);
    assert_int_equal(count_files(f, "tmp"), 0);
}

static void test_blob_over_maximum(void **state)
{
    struct fixture *f = *state;
    struct pf_store_limits lim = {.max_blob_bytes = 100, .max_chunk_bytes = 0};
    struct pf_store_writer *w = (void *)1;
    struct pf_error err = {0};

    pf_store_close(f->store);
    open_store(f, &lim);
    assert_int_equal(pf_store_writer_begin(f->store, 101, NULL, &w, &err), PF_E_RESOURCE);
    assert_null(w);
    assert_string_equal(err.msg, "blob of 101 bytes exceeds the maximum of 100 bytes");
    assert_int_equal(pf_store_writer_begin(f->store, UINT64_MAX, NULL, &w, &err), PF_E_RESOURCE);
    assert_int_equal(count_files(f, "tmp"), 0);
    assert_int_equal(pf_store_writer_begin(f->store, 100, NULL, &w, &err), PF_OK);
    pf_store_writer_abort(w);
}

static void test_chunk_over_maximum(void **state)
{
    struct fixture *f = *state;
    struct pf_store_limits lim = {.max_blob_bytes = 0, .max_chunk_bytes = 16};
    char data[17] = "0123456789abcdef";
    struct pf_store_writer *w;
    struct pf_error err = {0};
    struct pf_digest d;
    bool existed;

    pf_store_close(f->store);
    open_store(f, &lim);
    assert_int_equal(pf_store_writer_begin(f->store, 33, NULL, &w, &err), PF_OK);
    assert_int_equal(pf_store_writer_write(w, data, 16, &err), PF_OK);
    assert_int_equal(pf_store_writer_write(w, data, 17, &err), PF_E_INVALID);
    assert_string_equal(err.msg, "chunk of 17 bytes exceeds the maximum of 16 bytes");
    assert_int_not_equal(pf_store_writer_commit(w, &d, &existed, &err), PF_OK);
    assert_int_equal(count_files(f, "blobs"), 0);
    assert_int_equal(count_files(f, "tmp"), 0);
}

static void test_zero_length_writes(void **state)
{
    struct fixture *f = *state;
    struct pf_store_writer *w;
    struct pf_error err = {0};
    struct pf_digest d, want;
    bool existed;

    assert_int_equal(pf_store_writer_begin(f->store, 2, NULL, &w, &err), PF_OK);
    assert_int_equal(pf_store_writer_write(w, NULL, 0, &err), PF_OK);
    assert_int_equal(pf_store_writer_write(w, "ok", 2, &err), PF_OK);
    assert_int_equal(pf_store_writer_write(w, NULL, 0, &err), PF_OK);
    assert_int_equal(pf_store_writer_commit(w, &d, &existed, &err), PF_OK);
    pf_sha256("ok", 2, &want);
    assert_true(pf_digest_equal(&d, &want));
}

static void test_put_ignores_chunk_limit(void **state)
{
    struct fixture *f = *state;
    struct pf_store_limits lim = {.max_blob_bytes = 100, .max_chunk_bytes = 16};
    char *data = pattern(100, 23), *all;
    struct pf_digest d, want, wrong;
    struct pf_error err = {0};
    bool existed = true;
    size_t len;

    pf_store_close(f->store);
    open_store(f, &lim);
    pf_sha256(data, 100, &want);
    assert_int_equal(pf_store_put(f->store, data, 100, &want, &d, &existed, &err), PF_OK);
    assert_true(pf_digest_equal(&d, &want));
    assert_false(existed);
    assert_int_equal(pf_store_put(f->store, data, 100, NULL, NULL, &existed, &err), PF_OK);
    assert_true(existed);
    assert_int_equal(pf_store_read_all(f->store, &d, 100, &all, &len, &err), PF_OK);
    assert_memory_equal(all, data, 100);
    free(all);
    /* The blob limit still holds, and a wrong digest still stores nothing. */
    assert_int_equal(pf_store_put(f->store, data, 101, NULL, NULL, NULL, &err), PF_E_RESOURCE);
    pf_sha256("other", 5, &wrong);
    assert_int_equal(pf_store_put(f->store, data, 99, &wrong, NULL, NULL, &err), PF_E_INVALID);
    assert_msg_contains(&err, "does not match the declared digest");
    assert_int_equal(count_files(f, "blobs"), 1);
    assert_int_equal(count_files(f, "tmp"), 0);
    free(data);
}

static void test_same_content_in_turn(void **state)
{
    struct fixture *f = *state;
    const char text[] = "G1 Z0.2";
    struct pf_digest d1, d2;
    bool existed1 = true, existed2 = false;

    put_ok(f, text, strlen(text), &d1, &existed1);
    put_ok(f, text, strlen(text), &d2, &existed2);
    assert_false(existed1);
    assert_true(existed2);
    assert_true(pf_digest_equal(&d1, &d2));
    assert_int_equal(count_files(f, "blobs"), 1);
    assert_int_equal(count_files(f, "tmp"), 0);
}

static void test_same_content_two_writers_interleaved(void **state)
{
    struct fixture *f = *state;
    struct pf_store_writer *a, *b;
    struct pf_error err = {0};
    struct pf_digest da, db;
    bool ea = true, eb = false;

    /* Both uploads are in flight before either commits. */
    assert_int_equal(pf_store_writer_begin(f->store, 4, NULL, &a, &err), PF_OK);
    assert_int_equal(pf_store_writer_begin(f->store, 4, NULL, &b, &err), PF_OK);
    assert_int_equal(count_files(f, "tmp"), 2);
    assert_int_equal(pf_store_writer_write(a, "abcd", 4, &err), PF_OK);
    assert_int_equal(pf_store_writer_write(b, "abcd", 4, &err), PF_OK);
    assert_int_equal(pf_store_writer_commit(b, &db, &eb, &err), PF_OK);
    assert_int_equal(pf_store_writer_commit(a, &da, &ea, &err), PF_OK);
    assert_false(eb);
    assert_true(ea);
    assert_true(pf_digest_equal(&da, &db));
    assert_int_equal(count_files(f, "blobs"), 1);
    assert_int_equal(count_files(f, "tmp"), 0);
}

struct upload_thread {
    struct fixture *f;
    pthread_barrier_t *barrier;
    const char *data;
    size_t len;
    enum pf_status rc;
    struct pf_digest digest;
    bool existed;
    struct pf_error err;
};

static void *upload_main(void *arg)
{
    struct upload_thread *t = arg;
    struct pf_store_writer *w;

    t->rc = pf_store_writer_begin(t->f->store, t->len, NULL, &w, &t->err);
    if (t->rc != PF_OK)
        return NULL;
    for (size_t off = 0; off < t->len && t->rc == PF_OK; off += 4096) {
        size_t k = t->len - off < 4096 ? t->len - off : 4096;
        t->rc = pf_store_writer_write(w, t->data + off, k, &t->err);
    }
    if (t->rc != PF_OK) {
        pf_store_writer_abort(w);
        return NULL;
    }
    pthread_barrier_wait(t->barrier); /* all commit at once */
    t->rc = pf_store_writer_commit(w, &t->digest, &t->existed, &t->err);
    return NULL;
}

static void test_same_content_concurrently(void **state)
{
    struct fixture *f = *state;
    const size_t len = 200 * 1024;
    char *data = pattern(len, 7);
    struct upload_thread t[THREADS];
    pthread_t tid[THREADS];
    pthread_barrier_t barrier;
    struct pf_digest want;
    int fresh = 0;

    pf_sha256(data, len, &want);
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        t[i] = (struct upload_thread){.f = f, .barrier = &barrier, .data = data, .len = len};
        assert_int_equal(pthread_create(&tid[i], NULL, upload_main, &t[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(tid[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < THREADS; i++) {
        if (t[i].rc != PF_OK)
            fail_msg("upload %d: %s", i, t[i].err.msg);
        assert_true(pf_digest_equal(&t[i].digest, &want));
        fresh += !t[i].existed;
    }
    assert_int_equal(fresh, 1);
    assert_int_equal(count_files(f, "blobs"), 1);
    assert_int_equal(count_files(f, "tmp"), 0);
    free(data);
}

struct read_thread {
    struct fixture *f;
    const struct pf_digest *digest;
    const char *want;
    size_t len;
    int failures;
};

static void *read_main(void *arg)
{
    struct read_thread *t = arg;
    struct pf_error err = {0};
    char *got = malloc(t->len);
    size_t n;

    for (int i = 0; i < 20; i++) {
        if (read_from(t->f, t->digest, (uint64_t)i, 3000, got, &n, &err) != PF_OK ||
            memcmp(got, t->want + i, n) != 0)
            t->failures++;
    }
    free(got);
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    struct fixture *f = *state;
    const size_t len = 50000;
    char *data = pattern(len, 3);
    struct read_thread t[THREADS];
    pthread_t tid[THREADS];
    struct pf_digest d;
    bool existed;

    put_ok(f, data, len, &d, &existed);
    for (int i = 0; i < THREADS; i++) {
        t[i] = (struct read_thread){.f = f, .digest = &d, .want = data, .len = len};
        assert_int_equal(pthread_create(&tid[i], NULL, read_main, &t[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(tid[i], NULL);
        assert_int_equal(t[i].failures, 0);
    }
    free(data);
}

static void test_abort_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    struct pf_store_writer *w;
    struct pf_error err = {0};

    assert_int_equal(pf_store_writer_begin(f->store, 100, NULL, &w, &err), PF_OK);
    pf_store_writer_abort(w);
    assert_int_equal(pf_store_writer_begin(f->store, 100, NULL, &w, &err), PF_OK);
    assert_int_equal(pf_store_writer_write(w, "half", 4, &err), PF_OK);
    assert_int_equal(count_files(f, "tmp"), 1);
    pf_store_writer_abort(w);
    pf_store_writer_abort(NULL);
    assert_int_equal(count_files(f, "blobs"), 0);
    assert_int_equal(count_files(f, "tmp"), 0);
}

static void test_open_removes_leftovers(void **state)
{
    struct fixture *f = *state;
    struct pf_error err = {0};
    struct pf_digest d;
    bool existed;
    char *all;
    size_t len;

    put_ok(f, "kept", 4, &d, &existed);
    pf_store_close(f->store);
    f->store = NULL;
    for (int i = 0; i < 3; i++) {
        snprintf(path_buf, sizeof path_buf, "%s/tmp/upload-crash%d", f->dir, i);
        FILE *fp = fopen(path_buf, "w");
        assert_non_null(fp);
        fputs("partial upload", fp);
        fclose(fp);
    }
    assert_int_equal(count_files(f, "tmp"), 3);
    open_store(f, NULL);
    assert_int_equal(count_files(f, "tmp"), 0);
    assert_int_equal(pf_store_read_all(f->store, &d, 100, &all, &len, &err), PF_OK);
    assert_string_equal(all, "kept");
    free(all);
}

static void test_second_open_of_same_dir_refused(void **state)
{
    struct fixture *f = *state;
    struct pf_store *other = (void *)1;
    struct pf_store_writer *w;
    struct pf_error err = {0};

    assert_int_equal(pf_store_writer_begin(f->store, 1, NULL, &w, &err), PF_OK);
    assert_int_equal(pf_store_open(f->dir, NULL, &other, &err), PF_E_PRECONDITION);
    assert_null(other);
    assert_msg_contains(&err, "is in use by another store");
    /* The refused open did not clean the first store's upload away. */
    assert_int_equal(count_files(f, "tmp"), 1);
    pf_store_writer_abort(w);
}

static void test_open_bad_directory(void **state)
{
    struct fixture *f = *state;
    struct pf_store *other = (void *)1;
    struct pf_error err = {0};
    FILE *fp;

    assert_int_equal(pf_store_open("", NULL, &other, &err), PF_E_INVALID);
    assert_null(other);
    /* A path through a regular file cannot become a directory. */
    snprintf(path_buf, sizeof path_buf, "%s/plain-file", f->dir);
    fp = fopen(path_buf, "w");
    assert_non_null(fp);
    fclose(fp);
    strncat(path_buf, "/data", sizeof path_buf - strlen(path_buf) - 1);
    assert_int_equal(pf_store_open(path_buf, NULL, &other, &err), PF_E_IO);
    assert_msg_contains(&err, "plain-file");
}

static void test_corrupt_blob_refused_at_open(void **state)
{
    struct fixture *f = *state;
    const size_t len = 10000;
    char *data = pattern(len, 5), *all = (void *)1;
    struct pf_store_reader *r = (void *)1;
    struct pf_error err = {0};
    struct pf_digest d;
    bool existed;
    size_t n;

    put_ok(f, data, len, &d, &existed);
    corrupt_blob(f, &d, 1234, false);
    assert_int_equal(pf_store_reader_open(f->store, &d, 0, &r, NULL, &err), PF_E_DATA_LOSS);
    assert_null(r);
    assert_msg_contains(&err, "is corrupt: its content hashes to");
    /* Also at an offset past the damage: nothing of a corrupt blob is served. */
    assert_int_equal(pf_store_reader_open(f->store, &d, 5000, &r, NULL, &err), PF_E_DATA_LOSS);
    assert_int_equal(pf_store_verify(f->store, &d, &err), PF_E_DATA_LOSS);
    assert_int_equal(pf_store_read_all(f->store, &d, len, &all, &n, &err), PF_E_DATA_LOSS);
    assert_null(all);
    /* stat does not read content: it still reports the blob. */
    assert_int_equal(pf_store_stat(f->store, &d, NULL, &err), PF_OK);
    free(data);
}

static void test_corruption_after_cached_read(void **state)
{
    struct fixture *f = *state;
    const size_t len = 10000;
    char *data = pattern(len, 9), *got = malloc(len);
    struct pf_store_reader *r;
    struct pf_error err = {0};
    struct pf_digest d;
    bool existed;
    size_t n;

    put_ok(f, data, len, &d, &existed);
    assert_int_equal(read_from(f, &d, 0, 4096, got, &n, &err), PF_OK);
    assert_int_equal(read_from(f, &d, 10, 4096, got, &n, &err), PF_OK); /* cached now */
    corrupt_blob(f, &d, len - 1, true);
    assert_int_equal(pf_store_reader_open(f->store, &d, 10, &r, NULL, &err), PF_E_DATA_LOSS);
    assert_int_equal(pf_store_reader_open(f->store, &d, 0, &r, NULL, &err), PF_E_DATA_LOSS);
    free(data);
    free(got);
}

static void test_corruption_while_streaming_a_cached_blob(void **state)
{
    struct fixture *f = *state;
    const size_t len = 10000;
    char *data = pattern(len, 11), *got = malloc(len);
    struct pf_store_reader *r;
    struct pf_error err = {0};
    struct pf_digest d;
    enum pf_status rc;
    size_t n, total = 0;
    bool existed;

    put_ok(f, data, len, &d, &existed);
    assert_int_equal(read_from(f, &d, 0, 4096, got, &n, &err), PF_OK);
    /* Verified from the cache at open; the bytes change before they are read
     * (bit rot looks the same: no metadata moves). The read that would reach
     * the end refuses to hand out the last bytes. */
    assert_int_equal(pf_store_reader_open(f->store, &d, 0, &r, NULL, &err), PF_OK);
    corrupt_blob(f, &d, 0, false);
    while ((rc = pf_store_reader_read(r, got, 4096, &n, &err)) == PF_OK)
        total += n;
    assert_int_equal(rc, PF_E_DATA_LOSS);
    assert_int_equal(n, 0);
    assert_true(total < len);
    assert_msg_contains(&err, "is corrupt");
    assert_int_not_equal(pf_store_reader_read(r, got, 4096, &n, &err), PF_OK);
    pf_store_reader_close(r);
    /* The cache entry is gone: the next open hashes and refuses. */
    assert_int_equal(pf_store_reader_open(f->store, &d, 0, &r, NULL, &err), PF_E_DATA_LOSS);
    free(data);
    free(got);
}

static void test_verify_ignores_cache(void **state)
{
    struct fixture *f = *state;
    char *data = pattern(5000, 13), *got = malloc(5000);
    struct pf_error err = {0};
    struct timespec times[2];
    struct pf_digest d;
    struct stat st;
    bool existed;
    size_t n;
    int fd;

    put_ok(f, data, 5000, &d, &existed);
    assert_int_equal(read_from(f, &d, 0, 4096, got, &n, &err), PF_OK);
    assert_int_equal(stat(blob_path(f, &d), &st), 0);
    corrupt_blob(f, &d, 42, false);
    /* Put the mtime back, as bit rot would leave it. */
    times[0] = st.st_atim;
    times[1] = st.st_mtim;
    fd = open(blob_path(f, &d), O_RDONLY);
    assert_int_equal(futimens(fd, times), 0);
    close(fd);
    assert_int_equal(pf_store_verify(f->store, &d, &err), PF_E_DATA_LOSS);
    free(data);
    free(got);
}

static void test_truncated_blob(void **state)
{
    struct fixture *f = *state;
    char *data = pattern(9000, 15), buf[4096];
    struct pf_store_reader *r;
    struct pf_error err = {0};
    struct pf_digest d;
    enum pf_status rc;
    bool existed;
    size_t n;

    put_ok(f, data, 9000, &d, &existed);
    /* Shortened after the reader opened: the read past the new end fails. */
    assert_int_equal(pf_store_reader_open(f->store, &d, 100, &r, NULL, &err), PF_OK);
    assert_int_equal(truncate(blob_path(f, &d), 5000), 0);
    while ((rc = pf_store_reader_read(r, buf, sizeof buf, &n, &err)) == PF_OK)
        ;
    assert_int_equal(rc, PF_E_DATA_LOSS);
    assert_msg_contains(&err, "ends after 5000 of its 9000 bytes");
    pf_store_reader_close(r);
    /* Shortened before: refused at open. */
    assert_int_equal(pf_store_reader_open(f->store, &d, 0, &r, NULL, &err), PF_E_DATA_LOSS);
    /* Emptied: an empty file is not the empty blob's digest. */
    assert_int_equal(truncate(blob_path(f, &d), 0), 0);
    assert_int_equal(pf_store_reader_open(f->store, &d, 0, &r, NULL, &err), PF_E_DATA_LOSS);
    free(data);
}

static void test_upload_repairs_corrupt_blob(void **state)
{
    struct fixture *f = *state;
    char *data = pattern(3000, 17);
    struct pf_error err = {0};
    struct pf_digest d;
    bool existed = true;

    put_ok(f, data, 3000, &d, &existed);
    corrupt_blob(f, &d, 7, true);
    assert_int_equal(pf_store_verify(f->store, &d, &err), PF_E_DATA_LOSS);
    put_ok(f, data, 3000, &d, &existed);
    assert_false(existed);
    assert_int_equal(pf_store_verify(f->store, &d, &err), PF_OK);
    assert_int_equal(count_files(f, "blobs"), 1);
    assert_int_equal(count_files(f, "tmp"), 0);
    free(data);
}

static void test_offset_reads(void **state)
{
    struct fixture *f = *state;
    const size_t len = 1000;
    const uint64_t offsets[] = {0, 1, 500, 999, 1000};
    char *data = pattern(len, 19), got[1000], hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_store_reader *r = (void *)1;
    struct pf_error err = {0};
    uint64_t total;
    struct pf_digest d;
    bool existed;
    size_t n;

    put_ok(f, data, len, &d, &existed);
    for (size_t i = 0; i < sizeof offsets / sizeof offsets[0]; i++) {
        assert_int_equal(read_from(f, &d, offsets[i], 333, got, &n, &err), PF_OK);
        assert_int_equal(n, len - offsets[i]);
        assert_memory_equal(got, data + offsets[i], n);
    }
    assert_int_equal(pf_store_reader_open(f->store, &d, 1000, &r, &total, &err), PF_OK);
    assert_int_equal(total, 1000);
    assert_int_equal(pf_store_reader_read(r, got, sizeof got, &n, &err), PF_E_END);
    pf_store_reader_close(r);
    assert_int_equal(pf_store_reader_open(f->store, &d, 1001, &r, &total, &err), PF_E_OUT_OF_RANGE);
    assert_null(r);
    pf_digest_to_hex(&d, hex);
    snprintf(path_buf, sizeof path_buf, "offset 1001 is past the end of blob '%s' (1000 bytes)",
             hex);
    assert_string_equal(err.msg, path_buf);
    assert_int_equal(pf_store_reader_open(f->store, &d, UINT64_MAX, &r, &total, &err),
                     PF_E_OUT_OF_RANGE);
    free(data);
}

static void test_not_found(void **state)
{
    struct fixture *f = *state;
    struct pf_store_reader *r = (void *)1;
    struct pf_error err = {0};
    char hex[PF_DIGEST_HEX_LEN + 1], *all = (void *)1;
    struct pf_digest d;
    uint64_t size = 7;
    size_t len;

    pf_sha256("never stored", 12, &d);
    pf_digest_to_hex(&d, hex);
    assert_int_equal(pf_store_stat(f->store, &d, &size, &err), PF_E_NOT_FOUND);
    assert_int_equal(size, 7);
    snprintf(path_buf, sizeof path_buf, "blob '%s' not found", hex);
    assert_string_equal(err.msg, path_buf);
    assert_int_equal(pf_store_reader_open(f->store, &d, 0, &r, NULL, &err), PF_E_NOT_FOUND);
    assert_null(r);
    assert_int_equal(pf_store_verify(f->store, &d, &err), PF_E_NOT_FOUND);
    assert_int_equal(pf_store_read_all(f->store, &d, 100, &all, &len, &err), PF_E_NOT_FOUND);
    assert_null(all);
    /* Same fan-out directory as a stored blob, different name. */
    put_ok(f, "x", 1, &d, NULL);
    d.bytes[31] ^= 1;
    assert_int_equal(pf_store_stat(f->store, &d, NULL, &err), PF_E_NOT_FOUND);
}

static void test_read_all_limit(void **state)
{
    struct fixture *f = *state;
    char *data = pattern(100, 21), *all = (void *)1;
    struct pf_error err = {0};
    struct pf_digest d;
    bool existed;
    size_t len;

    put_ok(f, data, 100, &d, &existed);
    assert_int_equal(pf_store_read_all(f->store, &d, 99, &all, &len, &err), PF_E_RESOURCE);
    assert_null(all);
    assert_msg_contains(&err, "of 100 bytes exceeds the maximum of 99 bytes");
    assert_int_equal(pf_store_read_all(f->store, &d, 100, &all, &len, &err), PF_OK);
    assert_int_equal(len, 100);
    assert_memory_equal(all, data, 100);
    assert_int_equal(all[100], '\0');
    free(all);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_many_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expected_digest_matches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_expected_digest_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fewer_bytes_than_declared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_more_bytes_than_declared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blob_over_maximum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunk_over_maximum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_length_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_ignores_chunk_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_content_in_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_content_two_writers_interleaved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_content_concurrently, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_removes_leftovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_open_of_same_dir_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_bad_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_blob_refused_at_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_after_cached_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_while_streaming_a_cached_blob, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_verify_ignores_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upload_repairs_corrupt_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offset_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_all_limit, setup, teardown),
    };

    /* The corruption tests log a warning each; keep the output for failures. */
    pf_log_init(PF_LOG_ERROR, "test_store");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
