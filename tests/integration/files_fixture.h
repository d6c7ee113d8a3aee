/* The pf-files fixture shared by the Files integration suites: a temporary
 * directory per test holding the data directory and the logs, the real
 * pf-files started on free loopback ports (port 0, read back from its log)
 * and stopped with SIGTERM, plus helpers the suites repeat (pseudo-random
 * content, blob paths, assertions that print the pf_error). Include after
 * <cmocka.h>. */
#ifndef PF_TEST_FILES_FIXTURE_H
#define PF_TEST_FILES_FIXTURE_H

#include <limits.h>
#include <stdint.h>
#include <sys/wait.h>
#include "digest.h"
#include "proc.h"
#include "rpc/client.h"

/* Generous: sanitizer builds on a loaded 2-core machine are slow. */
#define PF_FIX_START_MS 60000 /* until pf-files logs its ports */
#define PF_FIX_STOP_MS  60000 /* from SIGTERM to exit */
#define PF_FIX_RPC_MS   120000

/* Temp directories are short; other paths built from them get PATH_MAX. */
#define PF_FIX_DIR_MAX 1024

/* One test's pf-files. Embedded by value; pf_files_server_create, then any
 * number of start/stop cycles on the same data directory, then release. */
struct pf_files_server {
    char binary[PATH_MAX];
    char root[PF_FIX_DIR_MAX];         /* temp dir of this test, removed by release */
    char data_dir[PF_FIX_DIR_MAX + 8]; /* root/data */
    struct pf_proc proc;
    int port;
    int admin_port;
    char target[32]; /* "127.0.0.1:PORT" */
    int starts;
};

/* Makes the temp tree; binary is the pf-files path (copied). */
enum pf_status pf_files_server_create(struct pf_files_server *fs, const char *binary,
                                      struct pf_error *err) PF_MUST_CHECK;
/* Starts pf-files on the data dir with --listen/--admin-listen 127.0.0.1:0
 * and the NULL-terminated extra flags (may be NULL); waits for both ports.
 * The log is root/pf-files.N.log (N counts starts). */
enum pf_status pf_files_server_start(struct pf_files_server *fs, const char *const extra[],
                                     struct pf_error *err) PF_MUST_CHECK;
/* SIGTERM and wait; *wait_status is the waitpid status. */
enum pf_status pf_files_server_stop(struct pf_files_server *fs, int *wait_status,
                                    struct pf_error *err) PF_MUST_CHECK;
/* Kills pf-files if it still runs and removes the temp tree. */
void pf_files_server_release(struct pf_files_server *fs);

/* A channel to the server with opts (may be NULL); fails the test on error.
 * The caller destroys it. */
struct pf_rpc_channel *pf_files_server_channel(const struct pf_files_server *fs,
                                               const struct pf_rpc_client_opts *opts);

/* DATA/blobs/ab/cd/<hex> of digest, and DATA/tmp, DATA/blobs. */
void pf_files_server_blob_path(const struct pf_files_server *fs, const struct pf_digest *d,
                               char *out, size_t size);
void pf_files_server_subdir(const struct pf_files_server *fs, const char *name, char *out,
                            size_t size);

/* Polls until DATA/tmp holds want files (want < 0: any number > 0); false on
 * timeout. */
bool pf_files_server_wait_tmp(const struct pf_files_server *fs, long want, int64_t timeout_ms);

/* Deterministic pseudo-random bytes (xorshift64*) from seed; a new buffer of
 * len bytes the caller frees (len 0 gives a 1-byte buffer). */
uint8_t *pf_fix_random(size_t len, uint64_t seed);

/* Reads a whole file into a new buffer (*len bytes); NULL on error. */
uint8_t *pf_fix_read_file(const char *path, size_t *len);
/* Writes len bytes to path (created or truncated); false on error. */
bool pf_fix_write_file(const char *path, const void *data, size_t len);

/* Starts pf-files or fails the test with the error. */
#define PF_FIX_START(fs, extra)                                                                    \
    do {                                                                                           \
        struct pf_error start_err_;                                                                \
        if (pf_files_server_start((fs), (extra), &start_err_) != PF_OK)                            \
            fail_msg("pf-files did not start: %s", start_err_.msg);                                \
    } while (0)

/* Fails the test unless rc == want, printing the error message; with
 * PF_ITEST_VERBOSE set, also prints every expected error's message. */
#define PF_ASSERT_STATUS(want, rc, err)                                                            \
    do {                                                                                           \
        enum pf_status want_ = (want), got_ = (rc);                                                \
        if (want_ != got_)                                                                         \
            fail_msg("expected %s, got %s: %s", pf_status_name(want_), pf_status_name(got_),       \
                     got_ == PF_OK ? "(no error)" : (err).msg);                                    \
        if (got_ != PF_OK && getenv("PF_ITEST_VERBOSE") != NULL)                                   \
            print_message("  as expected, %s: %s\n", pf_status_name(got_), (err).msg);             \
    } while (0)

/* SIGTERM the server and assert it exits with status 0. */
#define PF_FIX_STOP_OK(fs)                                                                         \
    do {                                                                                           \
        struct pf_error stop_err_;                                                                 \
        int stop_status_ = -1;                                                                     \
        char how_[96];                                                                             \
        if (pf_files_server_stop((fs), &stop_status_, &stop_err_) != PF_OK)                        \
            fail_msg("stopping pf-files: %s", stop_err_.msg);                                      \
        if (!WIFEXITED(stop_status_) || WEXITSTATUS(stop_status_) != 0)                            \
            fail_msg("pf-files ended with %s after SIGTERM; log ends:\n%s",                        \
                     pf_proc_describe(stop_status_, how_, sizeof(how_)),                           \
                     pf_proc_log_tail(&(fs)->proc, 3000));                                         \
    } while (0)

#endif
