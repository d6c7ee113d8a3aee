/* The pf-files fixture of the Files integration suites (see files_fixture.h):
 * temp tree, start/stop of the real binary, and content helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "files_fixture.h"

enum pf_status pf_files_server_create(struct pf_files_server *fs, const char *binary,
                                      struct pf_error *err)
{
    enum pf_status rc;

    memset(fs, 0, sizeof(*fs));
    pf_proc_init(&fs->proc);
    snprintf(fs->binary, sizeof(fs->binary), "%s", binary);
    rc = pf_proc_mkdtemp("pf-itest-files", fs->root, sizeof(fs->root), err);
    if (rc != PF_OK)
        return rc;
    snprintf(fs->data_dir, sizeof(fs->data_dir), "%s/data", fs->root);
    return PF_OK;
}

enum pf_status pf_files_server_start(struct pf_files_server *fs, const char *const extra[],
                                     struct pf_error *err)
{
    const char *argv[48];
    char log_path[PATH_MAX + 32];
    size_t n = 0;
    enum pf_status rc;

    argv[n++] = fs->binary;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--admin-listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--data-dir";
    argv[n++] = fs->data_dir;
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (n >= sizeof(argv) / sizeof(argv[0]) - 1)
            return pf_error_set(err, PF_E_INVALID, "too many pf-files flags");
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    fs->starts++;
    snprintf(log_path, sizeof(log_path), "%s/pf-files.%d.log", fs->root, fs->starts);
    rc = pf_proc_spawn(&fs->proc, argv, log_path, err);
    if (rc != PF_OK)
        return rc;
    rc = pf_proc_wait_port(&fs->proc, "listening", PF_FIX_START_MS, &fs->port, err);
    if (rc == PF_OK)
        rc = pf_proc_wait_port(&fs->proc, "admin_listening", PF_FIX_START_MS, &fs->admin_port, err);
    if (rc != PF_OK) {
        pf_proc_kill(&fs->proc);
        return rc;
    }
    snprintf(fs->target, sizeof(fs->target), "127.0.0.1:%d", fs->port);
    return PF_OK;
}

enum pf_status pf_files_server_stop(struct pf_files_server *fs, int *wait_status,
                                    struct pf_error *err)
{
    return pf_proc_stop(&fs->proc, PF_FIX_STOP_MS, wait_status, err);
}

void pf_files_server_release(struct pf_files_server *fs)
{
    pf_proc_kill(&fs->proc);
    if (getenv("PF_ITEST_KEEP") != NULL)
        fprintf(stderr, "kept %s\n", fs->root);
    else
        pf_proc_rmtree(fs->root);
}

struct pf_rpc_channel *pf_files_server_channel(const struct pf_files_server *fs,
                                               const struct pf_rpc_client_opts *opts)
{
    struct pf_error err;
    struct pf_rpc_channel *ch = pf_rpc_channel_create(fs->target, opts, &err);
    if (ch == NULL)
        fail_msg("channel to %s: %s", fs->target, err.msg);
    return ch;
}

void pf_files_server_blob_path(const struct pf_files_server *fs, const struct pf_digest *d,
                               char *out, size_t size)
{
    char hex[PF_DIGEST_HEX_LEN + 1];
    pf_digest_to_hex(d, hex);
    snprintf(out, size, "%s/blobs/%.2s/%.2s/%s", fs->data_dir, hex, hex + 2, hex);
}

void pf_files_server_subdir(const struct pf_files_server *fs, const char *name, char *out,
                            size_t size)
{
    snprintf(out, size, "%s/%s", fs->data_dir, name);
}

bool pf_files_server_wait_tmp(const struct pf_files_server *fs, long want, int64_t timeout_ms)
{
    char tmp[PATH_MAX + 8];

    pf_files_server_subdir(fs, "tmp", tmp, sizeof(tmp));
    for (int64_t waited = 0;; waited += 20) {
        long n = pf_proc_count_files(tmp);
        if (want < 0 ? n > 0 : n == want)
            return true;
        if (waited >= timeout_ms)
            return false;
        pf_proc_sleep_ms(20);
    }
}

uint8_t *pf_fix_random(size_t len, uint64_t seed)
{
    uint8_t *buf = malloc(len > 0 ? len : 1);
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;

    if (buf == NULL)
        return NULL;
    for (size_t i = 0; i < len; i += 8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t v = x * 0x2545F4914F6CDD1Dull;
        size_t n = len - i < 8 ? len - i : 8;
        memcpy(buf + i, &v, n);
    }
    return buf;
}

uint8_t *pf_fix_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long size;

    *len = 0;
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out_close;
    buf = malloc((size_t)size + 1);
    if (buf == NULL)
        goto out_close;
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
        goto out_close;
    }
    *len = (size_t)size;
out_close:
    fclose(f);
    return buf;
}

bool pf_fix_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    bool ok;

    if (f == NULL)
        return false;
    ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}
