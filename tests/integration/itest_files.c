/* Integration tests of pf-files' data path against the real binary: large
 * round trips, resumed downloads, digest checks, the empty blob, concurrent
 * uploads of the same content, bundles, a blob corrupted on disk, and bad
 * input that must be refused without harming the server. Each test starts its
 * own pf-files on a fresh data directory and ends by stopping it with SIGTERM,
 * asserting exit status 0.
 * Usage: itest_files PF_FILES_BINARY */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "files_client.h"
#include "files_fixture.h"
#include "printfarm/v1/files.pb-c.h"

#define MIB ((size_t)1 << 20)

/* Set once in main from argv. */
static const char *pf_files_binary;

struct itest {
    struct pf_files_server fs;
    struct pf_rpc_channel *ch;
};

static int setup(void **state)
{
    struct itest *t = calloc(1, sizeof(*t));
    struct pf_error err;

    if (t == NULL || pf_files_server_create(&t->fs, pf_files_binary, &err) != PF_OK) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct itest *t = *state;

    pf_rpc_channel_destroy(t->ch);
    pf_files_server_release(&t->fs);
    free(t);
    return 0;
}

static void start(struct itest *t, const char *const extra[])
{
    PF_FIX_START(&t->fs, extra);
    t->ch = pf_files_server_channel(&t->fs, NULL);
}

static void stop(struct itest *t)
{
    pf_rpc_channel_destroy(t->ch);
    t->ch = NULL;
    PF_FIX_STOP_OK(&t->fs);
}

static void assert_same_bytes(const uint8_t *want, size_t want_len, const uint8_t *got,
                              size_t got_len)
{
    if (got == NULL)
        fail_msg("could not read the downloaded file");
    if (got_len != want_len)
        fail_msg("got %zu bytes, want %zu", got_len, want_len);
    for (size_t i = 0; i < want_len; i++) {
        if (want[i] != got[i])
            fail_msg("bytes differ first at offset %zu", i);
    }
}

static void assert_digest(const struct pf_digest *want, const struct pf_digest *got)
{
    char w[PF_DIGEST_HEX_LEN + 1], g[PF_DIGEST_HEX_LEN + 1];
    if (!pf_digest_equal(want, got)) {
        pf_digest_to_hex(want, w);
        pf_digest_to_hex(got, g);
        fail_msg("digest %s, want %s", g, w);
    }
}

static void path_in(const struct itest *t, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", t->fs.root, name);
}

static long files_under(const struct itest *t, const char *sub)
{
    char dir[PATH_MAX + 16];
    pf_files_server_subdir(&t->fs, sub, dir, sizeof(dir));
    return pf_proc_count_files(dir);
}

/* Downloads the whole blob into root/name and returns its bytes. */
static uint8_t *download_to(struct itest *t, const struct pf_digest *d, const char *name,
                            size_t *len)
{
    char path[PATH_MAX + 64];
    struct pf_error err;
    uint64_t received = 0, total = 0;
    int fd;

    path_in(t, name, path, sizeof(path));
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    enum pf_status rc =
        pf_files_download_fd(t->ch, d, 0, fd, PF_FIX_RPC_MS, &received, &total, &err);
    close(fd);
    PF_ASSERT_STATUS(PF_OK, rc, err);
    assert_int_equal(received, total);
    return pf_fix_read_file(path, len);
}

/* ---- round trip ---- */

static void test_roundtrip_64mib(void **state)
{
    struct itest *t = *state;
    size_t len = 64 * MIB, got_len;
    uint8_t *data = pf_fix_random(len, 1), *got;
    struct pf_files_upload_result res;
    struct pf_digest want, got_digest;
    struct pf_error err;
    char blob[PATH_MAX + 128], copy[PATH_MAX + 64];
    struct stat st;
    uint64_t size = 0;

    assert_non_null(data);
    pf_sha256(data, len, &want);
    start(t, NULL);

    PF_ASSERT_STATUS(
        PF_OK, pf_files_upload_buffer(t->ch, data, len, NULL, PF_FIX_RPC_MS, &res, &err), err);
    assert_digest(&want, &res.digest);
    assert_int_equal(res.size, len);
    assert_false(res.existed);

    PF_ASSERT_STATUS(PF_OK, pf_files_stat(t->ch, &want, PF_FIX_RPC_MS, &size, &err), err);
    assert_int_equal(size, len);
    pf_files_server_blob_path(&t->fs, &want, blob, sizeof(blob));
    assert_int_equal(stat(blob, &st), 0);
    assert_int_equal(st.st_size, len);

    got = download_to(t, &want, "download.bin", &got_len);
    assert_same_bytes(data, len, got, got_len);
    pf_sha256(got, got_len, &got_digest);
    assert_digest(&want, &got_digest);

    /* The same bytes again, from a file and with the digest declared. */
    path_in(t, "download.bin", copy, sizeof(copy));
    PF_ASSERT_STATUS(PF_OK, pf_files_upload_path(t->ch, copy, &want, PF_FIX_RPC_MS, &res, &err),
                     err);
    assert_digest(&want, &res.digest);
    assert_true(res.existed);
    assert_int_equal(files_under(t, "blobs"), 1);
    assert_int_equal(files_under(t, "tmp"), 0);

    free(got);
    free(data);
    stop(t);
}

/* ---- resumed downloads ---- */

static void test_resumed_download(void **state)
{
    struct itest *t = *state;
    size_t len = 3 * MIB + 777, got_len;
    uint8_t *data = pf_fix_random(len, 2), *got;
    char path[PATH_MAX + 64], part[PATH_MAX + 80];
    struct pf_files_upload_result res;
    struct pf_digest d;
    struct pf_error err;
    uint64_t received = 0, total = 0;
    struct stat st;
    int fd;

    assert_non_null(data);
    pf_sha256(data, len, &d);
    start(t, NULL);
    PF_ASSERT_STATUS(PF_OK, pf_files_upload_buffer(t->ch, data, len, &d, PF_FIX_RPC_MS, &res, &err),
                     err);

    /* download_fd from an offset delivers exactly the tail. */
    path_in(t, "tail.bin", path, sizeof(path));
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    PF_ASSERT_STATUS(
        PF_OK, pf_files_download_fd(t->ch, &d, 12345, fd, PF_FIX_RPC_MS, &received, &total, &err),
        err);
    close(fd);
    assert_int_equal(total, len);
    assert_int_equal(received, len - 12345);
    got = pf_fix_read_file(path, &got_len);
    assert_same_bytes(data + 12345, len - 12345, got, got_len);
    free(got);

    /* An offset equal to the size is valid and delivers nothing. */
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    PF_ASSERT_STATUS(
        PF_OK, pf_files_download_fd(t->ch, &d, len, fd, PF_FIX_RPC_MS, &received, &total, &err),
        err);
    close(fd);
    assert_int_equal(received, 0);
    assert_int_equal(total, len);

    /* download_path resumes a .part holding a prefix. */
    path_in(t, "resumed.gcode", path, sizeof(path));
    snprintf(part, sizeof(part), "%s.part", path);
    assert_true(pf_fix_write_file(part, data, MIB + 7));
    PF_ASSERT_STATUS(PF_OK, pf_files_download_path(t->ch, &d, path, PF_FIX_RPC_MS, &err), err);
    got = pf_fix_read_file(path, &got_len);
    assert_same_bytes(data, len, got, got_len);
    free(got);
    assert_int_not_equal(stat(part, &st), 0);

    /* A .part whose prefix is wrong is detected and removed, not kept. */
    path_in(t, "bad-prefix.gcode", path, sizeof(path));
    snprintf(part, sizeof(part), "%s.part", path);
    data[100] ^= 0x40;
    assert_true(pf_fix_write_file(part, data, 200));
    data[100] ^= 0x40;
    PF_ASSERT_STATUS(PF_E_DATA_LOSS, pf_files_download_path(t->ch, &d, path, PF_FIX_RPC_MS, &err),
                     err);
    assert_int_not_equal(stat(part, &st), 0);
    assert_int_not_equal(stat(path, &st), 0);
    /* ... and the next attempt starts over and succeeds. */
    PF_ASSERT_STATUS(PF_OK, pf_files_download_path(t->ch, &d, path, PF_FIX_RPC_MS, &err), err);
    got = pf_fix_read_file(path, &got_len);
    assert_same_bytes(data, len, got, got_len);
    free(got);

    /* A .part that is already complete only needs verifying. */
    path_in(t, "complete.gcode", path, sizeof(path));
    snprintf(part, sizeof(part), "%s.part", path);
    assert_true(pf_fix_write_file(part, data, len));
    PF_ASSERT_STATUS(PF_OK, pf_files_download_path(t->ch, &d, path, PF_FIX_RPC_MS, &err), err);
    got = pf_fix_read_file(path, &got_len);
    assert_same_bytes(data, len, got, got_len);
    free(got);
    assert_int_not_equal(stat(part, &st), 0);

    /* A .part longer than the blob cannot be a prefix: start over. */
    path_in(t, "too-long.gcode", path, sizeof(path));
    snprintf(part, sizeof(part), "%s.part", path);
    {
        uint8_t *longer = pf_fix_random(len + 10, 99);
        assert_true(pf_fix_write_file(part, longer, len + 10));
        free(longer);
    }
    PF_ASSERT_STATUS(PF_OK, pf_files_download_path(t->ch, &d, path, PF_FIX_RPC_MS, &err), err);
    got = pf_fix_read_file(path, &got_len);
    assert_same_bytes(data, len, got, got_len);
    free(got);

    free(data);
    stop(t);
}

/* ---- digests ---- */

static void test_wrong_declared_digest(void **state)
{
    struct itest *t = *state;
    size_t len = MIB + 3;
    uint8_t *data = pf_fix_random(len, 3);
    struct pf_files_upload_result res;
    struct pf_digest actual, wrong;
    struct pf_error err;
    uint64_t size;

    pf_sha256(data, len, &actual);
    pf_sha256("not these bytes", 15, &wrong);
    start(t, NULL);

    PF_ASSERT_STATUS(PF_E_INVALID,
                     pf_files_upload_buffer(t->ch, data, len, &wrong, PF_FIX_RPC_MS, &res, &err),
                     err);
    assert_non_null(strstr(err.msg, "INVALID_ARGUMENT"));
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, pf_files_stat(t->ch, &actual, PF_FIX_RPC_MS, &size, &err),
                     err);
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, pf_files_stat(t->ch, &wrong, PF_FIX_RPC_MS, &size, &err), err);
    assert_true(pf_files_server_wait_tmp(&t->fs, 0, 30000));
    assert_int_equal(files_under(t, "blobs"), 0);

    free(data);
    stop(t);
}

static void test_empty_blob(void **state)
{
    static const char empty_hex[] =
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    struct itest *t = *state;
    struct pf_files_upload_result res;
    struct pf_digest d, computed;
    struct pf_error err;
    char path[PATH_MAX + 64], blob[PATH_MAX + 128];
    uint64_t size = 99, received = 99, total = 99;
    struct stat st;
    int fd;

    PF_ASSERT_STATUS(PF_OK, pf_digest_from_hex(empty_hex, PF_DIGEST_HEX_LEN, &d, &err), err);
    pf_sha256("", 0, &computed);
    assert_digest(&d, &computed);
    start(t, NULL);

    PF_ASSERT_STATUS(PF_OK, pf_files_upload_buffer(t->ch, "", 0, &d, PF_FIX_RPC_MS, &res, &err),
                     err);
    assert_digest(&d, &res.digest);
    assert_int_equal(res.size, 0);
    assert_false(res.existed);
    PF_ASSERT_STATUS(PF_OK, pf_files_stat(t->ch, &d, PF_FIX_RPC_MS, &size, &err), err);
    assert_int_equal(size, 0);
    pf_files_server_blob_path(&t->fs, &d, blob, sizeof(blob));
    assert_int_equal(stat(blob, &st), 0);
    assert_int_equal(st.st_size, 0);

    path_in(t, "empty.bin", path, sizeof(path));
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    PF_ASSERT_STATUS(
        PF_OK, pf_files_download_fd(t->ch, &d, 0, fd, PF_FIX_RPC_MS, &received, &total, &err), err);
    close(fd);
    assert_int_equal(received, 0);
    assert_int_equal(total, 0);

    path_in(t, "empty.gcode", path, sizeof(path));
    PF_ASSERT_STATUS(PF_OK, pf_files_download_path(t->ch, &d, path, PF_FIX_RPC_MS, &err), err);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 0);

    /* Uploading it again reports that it existed. */
    PF_ASSERT_STATUS(PF_OK, pf_files_upload_buffer(t->ch, NULL, 0, NULL, PF_FIX_RPC_MS, &res, &err),
                     err);
    assert_true(res.existed);
    stop(t);
}

/* ---- concurrency ---- */

#define UPLOADERS 8

struct uploader {
    struct pf_rpc_channel *ch;
    const uint8_t *data;
    size_t len;
    pthread_barrier_t *barrier;
    enum pf_status rc;
    struct pf_error err;
    struct pf_files_upload_result res;
};

static void *upload_thread(void *arg)
{
    struct uploader *u = arg;
    pthread_barrier_wait(u->barrier);
    u->rc = pf_files_upload_buffer(u->ch, u->data, u->len, NULL, PF_FIX_RPC_MS, &u->res, &u->err);
    return NULL;
}

static void test_concurrent_same_content(void **state)
{
    struct itest *t = *state;
    size_t len = 4 * MIB;
    uint8_t *data = pf_fix_random(len, 4);
    struct uploader u[UPLOADERS];
    pthread_t th[UPLOADERS];
    pthread_barrier_t barrier;
    struct pf_digest want;
    int fresh = 0;

    pf_sha256(data, len, &want);
    start(t, NULL);
    pthread_barrier_init(&barrier, NULL, UPLOADERS);
    for (int i = 0; i < UPLOADERS; i++) {
        u[i] = (struct uploader){.ch = t->ch, .data = data, .len = len, .barrier = &barrier};
        assert_int_equal(pthread_create(&th[i], NULL, upload_thread, &u[i]), 0);
    }
    for (int i = 0; i < UPLOADERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);

    for (int i = 0; i < UPLOADERS; i++) {
        PF_ASSERT_STATUS(PF_OK, u[i].rc, u[i].err);
        assert_digest(&want, &u[i].res.digest);
        assert_int_equal(u[i].res.size, len);
        fresh += !u[i].res.existed;
    }
    /* Exactly one upload stored the blob; the others found it. */
    assert_int_equal(fresh, 1);
    assert_int_equal(files_under(t, "blobs"), 1);
    assert_true(pf_files_server_wait_tmp(&t->fs, 0, 30000));

    free(data);
    stop(t);
}

/* ---- bundles ---- */

static enum pf_status put_bundle(struct pf_rpc_channel *ch, const char *profile,
                                 const struct pf_digest *d, uint64_t size, struct pf_digest *out,
                                 struct pf_error *err)
{
    Printfarm__V1__PutBundleRequest req = PRINTFARM__V1__PUT_BUNDLE_REQUEST__INIT;
    Printfarm__V1__Bundle bundle = PRINTFARM__V1__BUNDLE__INIT;
    Printfarm__V1__BundleFile file = PRINTFARM__V1__BUNDLE_FILE__INIT;
    Printfarm__V1__BundleFile *files[1] = {&file};
    Printfarm__V1__Digest dmsg = PRINTFARM__V1__DIGEST__INIT;
    Printfarm__V1__PutBundleResponse *resp;
    char hex[PF_DIGEST_HEX_LEN + 1];
    enum pf_status rc;

    pf_digest_to_hex(d, hex);
    dmsg.sha256 = hex;
    file.profile = (char *)profile;
    file.digest = &dmsg;
    file.size = size;
    bundle.name = "benchy";
    bundle.n_files = 1;
    bundle.files = files;
    req.bundle = &bundle;
    rc = pf_rpc_unary(ch, "/printfarm.v1.Files/PutBundle", &req.base,
                      &printfarm__v1__put_bundle_response__descriptor, (ProtobufCMessage **)&resp,
                      PF_FIX_RPC_MS, err);
    if (rc != PF_OK)
        return rc;
    if (resp->digest == NULL ||
        pf_digest_from_hex(resp->digest->sha256, strlen(resp->digest->sha256), out, err) != PF_OK)
        rc = pf_error_set(err, PF_E_INTERNAL, "PutBundle reply without a valid digest");
    printfarm__v1__put_bundle_response__free_unpacked(resp, NULL);
    return rc;
}

static enum pf_status get_bundle(struct pf_rpc_channel *ch, const struct pf_digest *d,
                                 Printfarm__V1__GetBundleResponse **resp, struct pf_error *err)
{
    Printfarm__V1__GetBundleRequest req = PRINTFARM__V1__GET_BUNDLE_REQUEST__INIT;
    Printfarm__V1__Digest dmsg = PRINTFARM__V1__DIGEST__INIT;
    char hex[PF_DIGEST_HEX_LEN + 1];

    pf_digest_to_hex(d, hex);
    dmsg.sha256 = hex;
    req.digest = &dmsg;
    return pf_rpc_unary(ch, "/printfarm.v1.Files/GetBundle", &req.base,
                        &printfarm__v1__get_bundle_response__descriptor, (ProtobufCMessage **)resp,
                        PF_FIX_RPC_MS, err);
}

static void test_bundles(void **state)
{
    static const char gcode[] = "; generated by itest_files\nG28\nG1 X10 Y10 F3000\nM84\n";
    struct itest *t = *state;
    size_t len = sizeof(gcode) - 1;
    struct pf_files_upload_result res;
    struct pf_digest gd, bd, bd2, unknown;
    Printfarm__V1__GetBundleResponse *got = NULL;
    char ghex[PF_DIGEST_HEX_LEN + 1];
    struct pf_error err;
    uint64_t size;

    pf_sha256(gcode, len, &gd);
    pf_digest_to_hex(&gd, ghex);
    pf_sha256("no such blob", 12, &unknown);
    start(t, NULL);

    PF_ASSERT_STATUS(PF_E_PRECONDITION, put_bundle(t->ch, "prusa-mk4", &gd, len, &bd, &err), err);
    assert_non_null(strstr(err.msg, ghex)); /* names the missing blob */
    assert_int_equal(files_under(t, "blobs"), 0);

    PF_ASSERT_STATUS(
        PF_OK, pf_files_upload_buffer(t->ch, gcode, len, &gd, PF_FIX_RPC_MS, &res, &err), err);
    PF_ASSERT_STATUS(PF_OK, put_bundle(t->ch, "prusa-mk4", &gd, len, &bd, &err), err);
    /* The manifest is a blob itself, and the same bundle encodes the same. */
    PF_ASSERT_STATUS(PF_OK, pf_files_stat(t->ch, &bd, PF_FIX_RPC_MS, &size, &err), err);
    assert_true(size > 0);
    PF_ASSERT_STATUS(PF_OK, put_bundle(t->ch, "prusa-mk4", &gd, len, &bd2, &err), err);
    assert_digest(&bd, &bd2);
    /* A wrong declared size is refused. */
    PF_ASSERT_STATUS(PF_E_INVALID, put_bundle(t->ch, "prusa-mk4", &gd, len + 1, &bd2, &err), err);

    PF_ASSERT_STATUS(PF_OK, get_bundle(t->ch, &bd, &got, &err), err);
    assert_non_null(got->bundle);
    assert_string_equal(got->bundle->name, "benchy");
    assert_int_equal(got->bundle->n_files, 1);
    assert_string_equal(got->bundle->files[0]->profile, "prusa-mk4");
    assert_string_equal(got->bundle->files[0]->digest->sha256, ghex);
    assert_int_equal(got->bundle->files[0]->size, len);
    printfarm__v1__get_bundle_response__free_unpacked(got, NULL);

    got = NULL;
    PF_ASSERT_STATUS(PF_E_INVALID, get_bundle(t->ch, &gd, &got, &err), err);
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, get_bundle(t->ch, &unknown, &got, &err), err);

    /* A blob that starts like a manifest but is not one. */
    {
        static const char fake[] = "PFBNDL1\n\xff\xff\xff\x01";
        struct pf_digest fd;
        PF_ASSERT_STATUS(
            PF_OK,
            pf_files_upload_buffer(t->ch, fake, sizeof(fake) - 1, NULL, PF_FIX_RPC_MS, &res, &err),
            err);
        fd = res.digest;
        PF_ASSERT_STATUS(PF_E_INVALID, get_bundle(t->ch, &fd, &got, &err), err);
    }
    /* A bundle that breaks the rules: a profile name with a space. */
    PF_ASSERT_STATUS(PF_E_INVALID, put_bundle(t->ch, "prusa mk4", &gd, len, &bd2, &err), err);
    stop(t);
}

static enum pf_status find_missing(struct pf_rpc_channel *ch, const char *const hexes[], size_t n,
                                   Printfarm__V1__FindMissingResponse **resp, struct pf_error *err)
{
    Printfarm__V1__FindMissingRequest req = PRINTFARM__V1__FIND_MISSING_REQUEST__INIT;
    Printfarm__V1__Digest *msgs = calloc(n + 1, sizeof(*msgs));
    Printfarm__V1__Digest **ptrs = calloc(n + 1, sizeof(*ptrs));
    enum pf_status rc;

    assert_non_null(msgs);
    assert_non_null(ptrs);
    for (size_t i = 0; i < n; i++) {
        printfarm__v1__digest__init(&msgs[i]);
        msgs[i].sha256 = (char *)hexes[i];
        ptrs[i] = &msgs[i];
    }
    req.n_digests = n;
    req.digests = ptrs;
    rc = pf_rpc_unary(ch, "/printfarm.v1.Files/FindMissing", &req.base,
                      &printfarm__v1__find_missing_response__descriptor, (ProtobufCMessage **)resp,
                      PF_FIX_RPC_MS, err);
    free(ptrs);
    free(msgs);
    return rc;
}

static void test_find_missing(void **state)
{
    struct itest *t = *state;
    struct pf_files_upload_result res;
    char present[PF_DIGEST_HEX_LEN + 1], absent1[PF_DIGEST_HEX_LEN + 1],
        absent2[PF_DIGEST_HEX_LEN + 1];
    Printfarm__V1__FindMissingResponse *resp = NULL;
    struct pf_digest d;
    struct pf_error err;
    enum { MANY = 10001 };
    const char **many;

    start(t, NULL);
    PF_ASSERT_STATUS(
        PF_OK, pf_files_upload_buffer(t->ch, "G28\n", 4, NULL, PF_FIX_RPC_MS, &res, &err), err);
    pf_digest_to_hex(&res.digest, present);
    pf_sha256("a", 1, &d);
    pf_digest_to_hex(&d, absent1);
    pf_sha256("b", 1, &d);
    pf_digest_to_hex(&d, absent2);

    /* The missing ones, in request order. */
    PF_ASSERT_STATUS(
        PF_OK,
        find_missing(t->ch, (const char *[]){absent2, present, absent1, present}, 4, &resp, &err),
        err);
    assert_int_equal(resp->n_missing, 2);
    assert_string_equal(resp->missing[0]->sha256, absent2);
    assert_string_equal(resp->missing[1]->sha256, absent1);
    printfarm__v1__find_missing_response__free_unpacked(resp, NULL);
    resp = NULL;
    PF_ASSERT_STATUS(PF_OK, find_missing(t->ch, NULL, 0, &resp, &err), err);
    assert_int_equal(resp->n_missing, 0);
    printfarm__v1__find_missing_response__free_unpacked(resp, NULL);
    resp = NULL;

    /* One malformed digest fails the whole call; so do too many. */
    PF_ASSERT_STATUS(PF_E_INVALID,
                     find_missing(t->ch, (const char *[]){present, "not-hex"}, 2, &resp, &err),
                     err);
    many = calloc(MANY, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i < MANY; i++)
        many[i] = present;
    PF_ASSERT_STATUS(PF_E_INVALID, find_missing(t->ch, many, MANY, &resp, &err), err);
    free(many);
    stop(t);
}

/* ---- corruption on disk ---- */

static void flip_byte(const char *path, off_t at)
{
    struct stat st;
    uint8_t b;
    int fd;

    assert_int_equal(stat(path, &st), 0);
    chmod(path, st.st_mode | S_IWUSR);
    fd = open(path, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x01;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
    chmod(path, st.st_mode);
}

static void test_corrupted_blob(void **state)
{
    struct itest *t = *state;
    size_t len = 2 * MIB + 5, got_len;
    uint8_t *data = pf_fix_random(len, 7), *got;
    struct pf_files_upload_result res;
    char blob[PATH_MAX + 128], path[PATH_MAX + 64], part[PATH_MAX + 80];
    struct pf_digest d;
    struct pf_error err;
    uint64_t received = 0, total = 0;
    struct stat st;
    int fd;

    pf_sha256(data, len, &d);
    start(t, NULL);
    PF_ASSERT_STATUS(PF_OK, pf_files_upload_buffer(t->ch, data, len, &d, PF_FIX_RPC_MS, &res, &err),
                     err);
    /* A first download verifies the blob and caches that. */
    got = download_to(t, &d, "first.bin", &got_len);
    assert_same_bytes(data, len, got, got_len);
    free(got);

    pf_files_server_blob_path(&t->fs, &d, blob, sizeof(blob));
    flip_byte(blob, (off_t)(len / 2));

    path_in(t, "corrupt.bin", path, sizeof(path));
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    PF_ASSERT_STATUS(PF_E_DATA_LOSS,
                     pf_files_download_fd(t->ch, &d, 0, fd, PF_FIX_RPC_MS, &received, &total, &err),
                     err);
    assert_true(received < len);
    /* From an offset too: the whole blob is checked, not just the tail. */
    PF_ASSERT_STATUS(
        PF_E_DATA_LOSS,
        pf_files_download_fd(t->ch, &d, MIB, fd, PF_FIX_RPC_MS, &received, &total, &err), err);
    assert_true(MIB + received < len);
    close(fd);

    path_in(t, "corrupt.gcode", path, sizeof(path));
    snprintf(part, sizeof(part), "%s.part", path);
    PF_ASSERT_STATUS(PF_E_DATA_LOSS, pf_files_download_path(t->ch, &d, path, PF_FIX_RPC_MS, &err),
                     err);
    assert_int_not_equal(stat(path, &st), 0);
    assert_int_not_equal(stat(part, &st), 0);

    /* Uploading the right bytes repairs the blob. */
    PF_ASSERT_STATUS(PF_OK, pf_files_upload_buffer(t->ch, data, len, &d, PF_FIX_RPC_MS, &res, &err),
                     err);
    assert_false(res.existed);
    got = download_to(t, &d, "repaired.bin", &got_len);
    assert_same_bytes(data, len, got, got_len);
    free(got);

    free(data);
    stop(t);
}

/* ---- bad input ---- */

/* Sends msgs on a new Upload call and returns the call's final status. */
static enum pf_status upload_messages(struct pf_rpc_channel *ch,
                                      Printfarm__V1__UploadRequest *const msgs[], size_t n,
                                      struct pf_error *err)
{
    Printfarm__V1__UploadResponse *resp = NULL;
    struct pf_rpc_stream *s;
    enum pf_status rc;

    rc = pf_rpc_stream_open(ch, "/printfarm.v1.Files/Upload", PF_FIX_RPC_MS, &s, err);
    if (rc != PF_OK)
        return rc;
    for (size_t i = 0; i < n && rc == PF_OK; i++)
        rc = pf_rpc_stream_send(s, &msgs[i]->base, err);
    if (rc == PF_OK)
        rc = pf_rpc_stream_close_send(s, err);
    if (rc == PF_OK || rc == PF_E_END) {
        rc = pf_rpc_stream_recv(s, &printfarm__v1__upload_response__descriptor,
                                (ProtobufCMessage **)&resp, -1, err);
        if (resp != NULL)
            printfarm__v1__upload_response__free_unpacked(resp, NULL);
        rc = pf_rpc_stream_finish(s, err);
    }
    pf_rpc_stream_destroy(s);
    return rc;
}

/* Sends raw bytes as the one request of method and returns the final status. */
static enum pf_status raw_call(struct pf_rpc_channel *ch, const char *method,
                               const ProtobufCMessageDescriptor *reply_desc, const void *bytes,
                               size_t len, struct pf_error *err)
{
    struct pf_rpc_stream *s;
    enum pf_status rc;

    rc = pf_rpc_stream_open(ch, method, PF_FIX_RPC_MS, &s, err);
    if (rc != PF_OK)
        return rc;
    rc = pf_rpc_stream_send_raw(s, bytes, len, err);
    if (rc == PF_OK)
        rc = pf_rpc_stream_close_send(s, err);
    for (;;) {
        ProtobufCMessage *m = NULL;
        rc = pf_rpc_stream_recv(s, reply_desc, &m, -1, err);
        if (m != NULL)
            protobuf_c_message_free_unpacked(m, NULL);
        if (rc != PF_OK)
            break;
    }
    rc = pf_rpc_stream_finish(s, err);
    pf_rpc_stream_destroy(s);
    return rc;
}

static enum pf_status stat_hex(struct pf_rpc_channel *ch, const char *hex, struct pf_error *err)
{
    Printfarm__V1__StatRequest req = PRINTFARM__V1__STAT_REQUEST__INIT;
    Printfarm__V1__Digest dmsg = PRINTFARM__V1__DIGEST__INIT;
    ProtobufCMessage *resp = NULL;
    enum pf_status rc;

    dmsg.sha256 = (char *)hex;
    req.digest = hex != NULL ? &dmsg : NULL;
    rc = pf_rpc_unary(ch, "/printfarm.v1.Files/Stat", &req.base,
                      &printfarm__v1__stat_response__descriptor, &resp, PF_FIX_RPC_MS, err);
    if (resp != NULL)
        protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static void test_bad_input(void **state)
{
    static const char *const flags[] = {"--max-blob-size", "1M", "--max-chunk-size", "64K", NULL};
    static const uint8_t garbage[] = {0xff, 0xff, 0xff};
    struct itest *t = *state;
    uint8_t *bytes = pf_fix_random(100 * 1024, 8);
    Printfarm__V1__UploadHeader h = PRINTFARM__V1__UPLOAD_HEADER__INIT;
    Printfarm__V1__UploadRequest header = PRINTFARM__V1__UPLOAD_REQUEST__INIT;
    Printfarm__V1__UploadRequest chunk = PRINTFARM__V1__UPLOAD_REQUEST__INIT;
    struct pf_files_upload_result res;
    struct pf_digest d, small;
    struct pf_error err;
    uint64_t received, total, size;
    char path[PATH_MAX + 64];
    int fd;

    start(t, flags);
    header.part_case = PRINTFARM__V1__UPLOAD_REQUEST__PART_HEADER;
    header.header = &h;
    chunk.part_case = PRINTFARM__V1__UPLOAD_REQUEST__PART_CHUNK;
    chunk.chunk.data = bytes;

    /* The first message is a chunk. */
    chunk.chunk.len = 40;
    PF_ASSERT_STATUS(PF_E_INVALID,
                     upload_messages(t->ch, (Printfarm__V1__UploadRequest *[]){&chunk}, 1, &err),
                     err);
    /* More bytes than declared. */
    h.size = 10;
    chunk.chunk.len = 20;
    PF_ASSERT_STATUS(
        PF_E_INVALID,
        upload_messages(t->ch, (Printfarm__V1__UploadRequest *[]){&header, &chunk}, 2, &err), err);
    /* Fewer bytes than declared. */
    h.size = 100;
    chunk.chunk.len = 10;
    PF_ASSERT_STATUS(
        PF_E_INVALID,
        upload_messages(t->ch, (Printfarm__V1__UploadRequest *[]){&header, &chunk}, 2, &err), err);
    /* Two headers. */
    h.size = 10;
    PF_ASSERT_STATUS(
        PF_E_INVALID,
        upload_messages(t->ch, (Printfarm__V1__UploadRequest *[]){&header, &header}, 2, &err), err);
    /* A chunk over --max-chunk-size. */
    h.size = 100 * 1024;
    chunk.chunk.len = 100 * 1024;
    PF_ASSERT_STATUS(
        PF_E_INVALID,
        upload_messages(t->ch, (Printfarm__V1__UploadRequest *[]){&header, &chunk}, 2, &err), err);
    /* A malformed expected digest in the header. */
    {
        Printfarm__V1__Digest bad = PRINTFARM__V1__DIGEST__INIT;
        bad.sha256 = "0123";
        h.expected = &bad;
        h.size = 10;
        chunk.chunk.len = 10;
        PF_ASSERT_STATUS(
            PF_E_INVALID,
            upload_messages(t->ch, (Printfarm__V1__UploadRequest *[]){&header, &chunk}, 2, &err),
            err);
        h.expected = NULL;
    }
    /* A declared size over --max-blob-size. */
    h.size = 2 * MIB;
    chunk.chunk.len = 1024;
    PF_ASSERT_STATUS(
        PF_E_RESOURCE,
        upload_messages(t->ch, (Printfarm__V1__UploadRequest *[]){&header, &chunk}, 2, &err), err);
    /* Bytes that are no protobuf message, streamed and unary. */
    PF_ASSERT_STATUS(PF_E_INVALID,
                     raw_call(t->ch, "/printfarm.v1.Files/Upload",
                              &printfarm__v1__upload_response__descriptor, garbage, sizeof(garbage),
                              &err),
                     err);
    PF_ASSERT_STATUS(PF_E_INVALID,
                     raw_call(t->ch, "/printfarm.v1.Files/Stat",
                              &printfarm__v1__stat_response__descriptor, garbage, sizeof(garbage),
                              &err),
                     err);
    PF_ASSERT_STATUS(PF_E_INVALID,
                     raw_call(t->ch, "/printfarm.v1.Files/Download",
                              &printfarm__v1__download_response__descriptor, garbage,
                              sizeof(garbage), &err),
                     err);
    /* Malformed and missing digests. */
    PF_ASSERT_STATUS(PF_E_INVALID, stat_hex(t->ch, "xyz", &err), err);
    PF_ASSERT_STATUS(
        PF_E_INVALID,
        stat_hex(t->ch, "g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", &err),
        err);
    PF_ASSERT_STATUS(PF_E_INVALID, stat_hex(t->ch, NULL, &err), err);
    /* An unknown method. */
    PF_ASSERT_STATUS(PF_E_UNIMPLEMENTED,
                     raw_call(t->ch, "/printfarm.v1.Files/Delete",
                              &printfarm__v1__stat_response__descriptor, "", 0, &err),
                     err);

    /* Nothing of the above is stored or left behind. */
    assert_int_equal(files_under(t, "blobs"), 0);
    assert_true(pf_files_server_wait_tmp(&t->fs, 0, 30000));

    /* Download past the end and of an unknown blob. */
    pf_sha256(bytes, 40 * 1024, &small);
    PF_ASSERT_STATUS(
        PF_OK, pf_files_upload_buffer(t->ch, bytes, 40 * 1024, &small, PF_FIX_RPC_MS, &res, &err),
        err);
    path_in(t, "out.bin", path, sizeof(path));
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    PF_ASSERT_STATUS(PF_E_OUT_OF_RANGE,
                     pf_files_download_fd(t->ch, &small, 40 * 1024 + 1, fd, PF_FIX_RPC_MS,
                                          &received, &total, &err),
                     err);
    assert_int_equal(received, 0);
    pf_sha256("absent", 6, &d);
    PF_ASSERT_STATUS(PF_E_NOT_FOUND,
                     pf_files_download_fd(t->ch, &d, 0, fd, PF_FIX_RPC_MS, &received, &total, &err),
                     err);
    close(fd);

    /* A small chunk_size is honoured, with contiguous offsets. */
    {
        Printfarm__V1__DownloadRequest req = PRINTFARM__V1__DOWNLOAD_REQUEST__INIT;
        Printfarm__V1__Digest dmsg = PRINTFARM__V1__DIGEST__INIT;
        char hex[PF_DIGEST_HEX_LEN + 1];
        struct pf_rpc_stream *s;
        uint64_t at = 1000;
        size_t messages = 0;

        pf_digest_to_hex(&small, hex);
        dmsg.sha256 = hex;
        req.digest = &dmsg;
        req.offset = at;
        req.chunk_size = 1000;
        PF_ASSERT_STATUS(
            PF_OK,
            pf_rpc_stream_open(t->ch, "/printfarm.v1.Files/Download", PF_FIX_RPC_MS, &s, &err),
            err);
        PF_ASSERT_STATUS(PF_OK, pf_rpc_stream_send(s, &req.base, &err), err);
        PF_ASSERT_STATUS(PF_OK, pf_rpc_stream_close_send(s, &err), err);
        for (;;) {
            Printfarm__V1__DownloadResponse *m = NULL;
            enum pf_status rc = pf_rpc_stream_recv(s, &printfarm__v1__download_response__descriptor,
                                                   (ProtobufCMessage **)&m, 60000, &err);
            if (rc == PF_E_END)
                break;
            PF_ASSERT_STATUS(PF_OK, rc, err);
            assert_int_equal(m->offset, at);
            assert_true(m->chunk.len <= 1000);
            assert_memory_equal(m->chunk.data, bytes + at, m->chunk.len);
            at += m->chunk.len;
            messages++;
            printfarm__v1__download_response__free_unpacked(m, NULL);
        }
        PF_ASSERT_STATUS(PF_OK, pf_rpc_stream_finish(s, &err), err);
        pf_rpc_stream_destroy(s);
        assert_int_equal(at, 40 * 1024);
        assert_int_equal(messages, (40 * 1024 - 1000 + 999) / 1000);
    }

    /* The server still serves. */
    PF_ASSERT_STATUS(PF_OK, pf_files_stat(t->ch, &small, PF_FIX_RPC_MS, &size, &err), err);
    assert_int_equal(size, 40 * 1024);
    {
        size_t got_len;
        uint8_t *got = download_to(t, &small, "again.bin", &got_len);
        assert_same_bytes(bytes, 40 * 1024, got, got_len);
        free(got);
    }
    assert_int_equal(files_under(t, "blobs"), 1);

    free(bytes);
    stop(t);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_64mib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resumed_download, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_declared_digest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_same_content, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bundles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupted_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
    };

    if (argc < 2) {
        fprintf(stderr, "usage: %s PF_FILES_BINARY\n", argv[0]);
        return 2;
    }
    pf_files_binary = argv[1];
    return cmocka_run_group_tests_name("itest_files", tests, NULL, NULL);
}
