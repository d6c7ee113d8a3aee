/* Integration tests of pf-files under process failure: a client killed in the
 * middle of an upload, the server killed in the middle of one and restarted
 * on the same data directory, and SIGTERM while a slow client is downloading.
 * Nothing partial may ever become visible, temp files must go, and a graceful
 * shutdown must end within its grace period without hanging the client.
 * The killed client is this same executable started again in helper mode
 * (--partial-upload): gRPC is not safe to use in a forked child of a process
 * that already runs gRPC threads, so the child execs instead.
 * Usage: itest_files_crash PF_FILES_BINARY */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "files_client.h"
#include "files_fixture.h"
#include "printfarm/v1/files.pb-c.h"

#define MIB ((size_t)1 << 20)

#define PARTIAL_DECLARED (16 * MIB)
#define PARTIAL_SENT     (3 * MIB)
#define PARTIAL_SEED     11

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

static long tmp_files(const struct itest *t)
{
    char dir[PATH_MAX + 8];
    pf_files_server_subdir(&t->fs, "tmp", dir, sizeof(dir));
    return pf_proc_count_files(dir);
}

static long blob_files(const struct itest *t)
{
    char dir[PATH_MAX + 8];
    pf_files_server_subdir(&t->fs, "blobs", dir, sizeof(dir));
    return pf_proc_count_files(dir);
}

/* Polls until DATA/tmp holds at least bytes bytes. */
static bool wait_tmp_bytes(const char *data_dir, long long bytes, int64_t timeout_ms)
{
    char dir[PATH_MAX + 8];

    snprintf(dir, sizeof(dir), "%s/tmp", data_dir);
    for (int64_t waited = 0; waited < timeout_ms; waited += 20) {
        if (pf_proc_tree_bytes(dir) >= bytes)
            return true;
        pf_proc_sleep_ms(20);
    }
    return false;
}

/* Opens an Upload declaring declared bytes and sends the first sent bytes of
 * data. The caller cancels and destroys *out. */
static enum pf_status begin_partial_upload(struct pf_rpc_channel *ch, const uint8_t *data,
                                           size_t declared, size_t sent, struct pf_rpc_stream **out,
                                           struct pf_error *err)
{
    Printfarm__V1__UploadHeader h = PRINTFARM__V1__UPLOAD_HEADER__INIT;
    Printfarm__V1__UploadRequest req = PRINTFARM__V1__UPLOAD_REQUEST__INIT;
    enum pf_status rc;

    rc = pf_rpc_stream_open(ch, "/printfarm.v1.Files/Upload", -1, out, err);
    if (rc != PF_OK)
        return rc;
    h.size = declared;
    req.part_case = PRINTFARM__V1__UPLOAD_REQUEST__PART_HEADER;
    req.header = &h;
    rc = pf_rpc_stream_send(*out, &req.base, err);
    req.part_case = PRINTFARM__V1__UPLOAD_REQUEST__PART_CHUNK;
    for (size_t off = 0; rc == PF_OK && off < sent; off += PF_FILES_CHUNK) {
        req.chunk.data = (uint8_t *)data + off;
        req.chunk.len = sent - off < PF_FILES_CHUNK ? sent - off : PF_FILES_CHUNK;
        rc = pf_rpc_stream_send(*out, &req.base, err);
    }
    return rc;
}

/* Helper mode: upload PARTIAL_SENT of PARTIAL_DECLARED bytes to target, wait
 * until the server has written them to DATA/tmp, then die by SIGKILL. Exits
 * with 3 (server never wrote them) or 4 (RPC error) otherwise. */
static int partial_upload_main(const char *target, const char *data_dir)
{
    uint8_t *data = pf_fix_random(PARTIAL_DECLARED, PARTIAL_SEED);
    struct pf_rpc_channel *ch;
    struct pf_rpc_stream *s;
    struct pf_error err;

    ch = pf_rpc_channel_create(target, NULL, &err);
    if (ch == NULL || data == NULL ||
        begin_partial_upload(ch, data, PARTIAL_DECLARED, PARTIAL_SENT, &s, &err) != PF_OK) {
        fprintf(stderr, "partial upload failed: %s\n", err.msg);
        return 4;
    }
    if (!wait_tmp_bytes(data_dir, PARTIAL_SENT, 60000)) {
        fprintf(stderr, "the server never wrote %zu bytes to %s/tmp\n", PARTIAL_SENT, data_dir);
        return 3;
    }
    fprintf(stderr, "sent=%zu declared=%zu: killing myself\n", PARTIAL_SENT, PARTIAL_DECLARED);
    raise(SIGKILL);
    return 5;
}

static void test_killed_client_leaves_no_blob(void **state)
{
    struct itest *t = *state;
    uint8_t *data = pf_fix_random(PARTIAL_DECLARED, PARTIAL_SEED);
    struct pf_digest whole, prefix;
    struct pf_proc child;
    struct pf_error err;
    char log_path[PATH_MAX + 32], how[96];
    uint64_t size;
    int status;

    pf_sha256(data, PARTIAL_DECLARED, &whole);
    pf_sha256(data, PARTIAL_SENT, &prefix);
    start(t, NULL);

    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    assert_true(n > 0);
    self[n] = '\0';
    const char *argv[] = {self, "--partial-upload", t->fs.target, t->fs.data_dir, NULL};
    snprintf(log_path, sizeof(log_path), "%s/partial-client.log", t->fs.root);
    PF_ASSERT_STATUS(PF_OK, pf_proc_spawn(&child, argv, log_path, &err), err);
    if (pf_proc_wait(&child, 120000, &status, &err) != PF_OK) {
        pf_proc_kill(&child);
        fail_msg("%s", err.msg);
    }
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        char *tail = pf_proc_log_tail(&child, 400);
        fail_msg("the uploading child ended with %s, not SIGKILL: %s",
                 pf_proc_describe(status, how, sizeof(how)), tail);
    }

    /* The server drops the abandoned upload: no blob, no temp file. (Not
     * always logged as upload_abandoned: gRPC may end a dead call's read like
     * a half-close, and the commit then refuses the short upload.) */
    assert_true(pf_files_server_wait_tmp(&t->fs, 0, 60000));
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, pf_files_stat(t->ch, &whole, PF_FIX_RPC_MS, &size, &err), err);
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, pf_files_stat(t->ch, &prefix, PF_FIX_RPC_MS, &size, &err),
                     err);
    assert_int_equal(blob_files(t), 0);

    /* The server is unharmed: the whole upload now succeeds. */
    struct pf_files_upload_result res;
    PF_ASSERT_STATUS(
        PF_OK,
        pf_files_upload_buffer(t->ch, data, PARTIAL_DECLARED, &whole, PF_FIX_RPC_MS, &res, &err),
        err);
    assert_false(res.existed);

    free(data);
    pf_rpc_channel_destroy(t->ch);
    t->ch = NULL;
    PF_FIX_STOP_OK(&t->fs);
}

static void test_killed_server_cleans_tmp_on_restart(void **state)
{
    struct itest *t = *state;
    size_t declared = 8 * MIB, sent = 2 * MIB;
    uint8_t *data = pf_fix_random(declared, 12);
    struct pf_files_upload_result res;
    struct pf_rpc_stream *s = NULL;
    struct pf_digest whole;
    struct pf_error err;
    char how[96];
    uint64_t size;
    int status;

    pf_sha256(data, declared, &whole);
    start(t, NULL);
    PF_ASSERT_STATUS(PF_OK, begin_partial_upload(t->ch, data, declared, sent, &s, &err), err);
    assert_true(wait_tmp_bytes(t->fs.data_dir, (long long)sent, 60000));

    PF_ASSERT_STATUS(PF_OK, pf_proc_signal(&t->fs.proc, SIGKILL, &err), err);
    PF_ASSERT_STATUS(PF_OK, pf_proc_wait(&t->fs.proc, 60000, &status, &err), err);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        fail_msg("pf-files ended with %s", pf_proc_describe(status, how, sizeof(how)));
    /* The crash left the half-written upload behind. */
    assert_true(tmp_files(t) >= 1);

    /* The client's stream ends with an error, not a hang. */
    pf_rpc_stream_cancel(s);
    pf_rpc_stream_destroy(s);
    pf_rpc_channel_destroy(t->ch);
    t->ch = NULL;

    start(t, NULL);
    assert_int_equal(tmp_files(t), 0);
    assert_int_equal(pf_proc_log_count(&t->fs.proc, " event=store_open .*tmp_removed=1( |$)"), 1);
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, pf_files_stat(t->ch, &whole, PF_FIX_RPC_MS, &size, &err), err);
    assert_int_equal(blob_files(t), 0);
    PF_ASSERT_STATUS(
        PF_OK, pf_files_upload_buffer(t->ch, data, declared, &whole, PF_FIX_RPC_MS, &res, &err),
        err);
    assert_false(res.existed);

    free(data);
    pf_rpc_channel_destroy(t->ch);
    t->ch = NULL;
    PF_FIX_STOP_OK(&t->fs);
}

static void test_cancelled_calls_release_everything(void **state)
{
    struct itest *t = *state;
    size_t len = 16 * MIB;
    uint8_t *data = pf_fix_random(len, 14);
    Printfarm__V1__DownloadRequest req = PRINTFARM__V1__DOWNLOAD_REQUEST__INIT;
    Printfarm__V1__Digest dmsg = PRINTFARM__V1__DIGEST__INIT;
    Printfarm__V1__DownloadResponse *m = NULL;
    char hex[PF_DIGEST_HEX_LEN + 1], path[PATH_MAX + 32];
    struct pf_files_upload_result res;
    struct pf_rpc_stream *s = NULL;
    struct pf_digest d;
    struct pf_error err;
    uint64_t size;

    pf_sha256(data, len, &d);
    start(t, NULL);

    /* An upload the client cancels halfway: no blob, no temp file. */
    PF_ASSERT_STATUS(PF_OK, begin_partial_upload(t->ch, data, len, 2 * MIB, &s, &err), err);
    assert_true(wait_tmp_bytes(t->fs.data_dir, 2 * MIB, 60000));
    pf_rpc_stream_cancel(s);
    pf_rpc_stream_destroy(s);
    assert_true(pf_files_server_wait_tmp(&t->fs, 0, 60000));
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, pf_files_stat(t->ch, &d, PF_FIX_RPC_MS, &size, &err), err);

    /* An upload whose deadline passes. */
    PF_ASSERT_STATUS(PF_E_DEADLINE, pf_files_upload_buffer(t->ch, data, len, &d, 1, &res, &err),
                     err);
    assert_true(pf_files_server_wait_tmp(&t->fs, 0, 60000));
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, pf_files_stat(t->ch, &d, PF_FIX_RPC_MS, &size, &err), err);

    /* A download the client abandons after one message. */
    PF_ASSERT_STATUS(PF_OK, pf_files_upload_buffer(t->ch, data, len, &d, PF_FIX_RPC_MS, &res, &err),
                     err);
    pf_digest_to_hex(&d, hex);
    dmsg.sha256 = hex;
    req.digest = &dmsg;
    PF_ASSERT_STATUS(
        PF_OK, pf_rpc_stream_open(t->ch, "/printfarm.v1.Files/Download", 180000, &s, &err), err);
    PF_ASSERT_STATUS(PF_OK, pf_rpc_stream_send(s, &req.base, &err), err);
    PF_ASSERT_STATUS(PF_OK, pf_rpc_stream_close_send(s, &err), err);
    PF_ASSERT_STATUS(PF_OK,
                     pf_rpc_stream_recv(s, &printfarm__v1__download_response__descriptor,
                                        (ProtobufCMessage **)&m, 60000, &err),
                     err);
    printfarm__v1__download_response__free_unpacked(m, NULL);
    pf_rpc_stream_cancel(s);
    PF_ASSERT_STATUS(PF_E_CANCELLED, pf_rpc_stream_finish(s, &err), err);
    pf_rpc_stream_destroy(s);

    /* The server serves on; at exit (SIGTERM, status 0) a sanitizer build
     * would report anything the cancelled calls leaked. */
    snprintf(path, sizeof(path), "%s/whole.bin", t->fs.root);
    PF_ASSERT_STATUS(PF_OK, pf_files_download_path(t->ch, &d, path, PF_FIX_RPC_MS, &err), err);
    free(data);
    pf_rpc_channel_destroy(t->ch);
    t->ch = NULL;
    PF_FIX_STOP_OK(&t->fs);
}

static void test_sigterm_during_slow_download(void **state)
{
    static const char *const flags[] = {"--shutdown-grace", "2s", NULL};
    struct itest *t = *state;
    size_t len = 32 * MIB;
    uint8_t *data = pf_fix_random(len, 13);
    Printfarm__V1__DownloadRequest req = PRINTFARM__V1__DOWNLOAD_REQUEST__INIT;
    Printfarm__V1__Digest dmsg = PRINTFARM__V1__DIGEST__INIT;
    Printfarm__V1__DownloadResponse *m = NULL;
    char hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_files_upload_result res;
    struct pf_rpc_stream *s;
    struct pf_digest d;
    struct pf_error err;
    uint64_t got = 0, total;
    enum pf_status rc;
    uint64_t size;

    pf_sha256(data, len, &d);
    start(t, flags);
    PF_ASSERT_STATUS(PF_OK, pf_files_upload_buffer(t->ch, data, len, &d, PF_FIX_RPC_MS, &res, &err),
                     err);

    pf_digest_to_hex(&d, hex);
    dmsg.sha256 = hex;
    req.digest = &dmsg;
    /* A whole-call deadline, so a hang fails the test instead of stalling it. */
    PF_ASSERT_STATUS(
        PF_OK, pf_rpc_stream_open(t->ch, "/printfarm.v1.Files/Download", 180000, &s, &err), err);
    PF_ASSERT_STATUS(PF_OK, pf_rpc_stream_send(s, &req.base, &err), err);
    PF_ASSERT_STATUS(PF_OK, pf_rpc_stream_close_send(s, &err), err);
    PF_ASSERT_STATUS(PF_OK,
                     pf_rpc_stream_recv(s, &printfarm__v1__download_response__descriptor,
                                        (ProtobufCMessage **)&m, 60000, &err),
                     err);
    total = m->size;
    got = m->chunk.len;
    assert_int_equal(total, len);
    assert_true(got < len);
    printfarm__v1__download_response__free_unpacked(m, NULL);

    /* The client pauses (reads nothing) while the server shuts down. */
    PF_FIX_STOP_OK(&t->fs);

    /* Then it reads on: it must see the end of the stream or an error. */
    for (;;) {
        m = NULL;
        rc = pf_rpc_stream_recv(s, &printfarm__v1__download_response__descriptor,
                                (ProtobufCMessage **)&m, 60000, &err);
        if (rc != PF_OK)
            break;
        got += m->chunk.len;
        printfarm__v1__download_response__free_unpacked(m, NULL);
    }
    if (rc == PF_E_DEADLINE)
        fail_msg("the download hung after the server exited (%llu of %zu bytes)",
                 (unsigned long long)got, len);
    rc = pf_rpc_stream_finish(s, &err);
    print_message("download after SIGTERM: %llu of %zu bytes, then %s: %s\n",
                  (unsigned long long)got, len, pf_status_name(rc), rc == PF_OK ? "" : err.msg);
    if (rc == PF_OK)
        assert_int_equal(got, len); /* finished inside the grace period: all of it */
    else
        assert_true(got < len);
    pf_rpc_stream_destroy(s);

    /* The server is gone: a new call fails fast instead of hanging. */
    PF_ASSERT_STATUS(PF_E_UNAVAILABLE, pf_files_stat(t->ch, &d, 60000, &size, &err), err);
    assert_true(pf_proc_log_count(&t->fs.proc, " event=rpc_shutdown ") >= 1);
    free(data);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_killed_client_leaves_no_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_server_cleans_tmp_on_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_calls_release_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_during_slow_download, setup, teardown),
    };

    if (argc == 4 && strcmp(argv[1], "--partial-upload") == 0)
        return partial_upload_main(argv[2], argv[3]);
    if (argc < 2) {
        fprintf(stderr, "usage: %s PF_FILES_BINARY\n", argv[0]);
        return 2;
    }
    pf_files_binary = argv[1];
    return cmocka_run_group_tests_name("itest_files_crash", tests, NULL, NULL);
}
