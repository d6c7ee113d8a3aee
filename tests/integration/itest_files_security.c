/* Integration tests of pf-files' security and operations surface against the
 * real binary: TLS with a private CA and a self-signed certificate, mutual
 * TLS, bearer tokens with roles (plain and sha256: entries), the
 * grpc.health.v1 service, and the admin port's /metrics (checked line by
 * line as Prometheus text), /healthz and /readyz. Certificates are made at
 * test time by tests/certs/mkcerts.sh.
 * Usage: itest_files_security PF_FILES_BINARY MKCERTS_SH */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "files_client.h"
#include "files_fixture.h"
#include "grpc/health/v1/health.pb-c.h"
#include "printfarm/v1/files.pb-c.h"

#define MIB ((size_t)1 << 20)

#define OPERATOR_TOKEN "op-token-0123456789abcdef"
#define VIEWER_TOKEN   "viewer-token-0123456789abcdef"
#define ADMIN_TOKEN    "admin-token-0123456789abcdef"

/* Set once in main from argv and the group setup. */
static const char *pf_files_binary;
static const char *mkcerts_script;
static char certs_dir[PATH_MAX];

struct itest {
    struct pf_files_server fs;
    struct pf_rpc_channel *ch;
};

static int group_setup(void **state)
{
    char log_path[PATH_MAX + 32];
    struct pf_error err;
    struct stat st;

    (void)state;
    if (stat(mkcerts_script, &st) != 0) {
        fprintf(stderr, "certificate generator '%s' is missing\n", mkcerts_script);
        return -1;
    }
    if (pf_proc_mkdtemp("pf-itest-certs", certs_dir, sizeof(certs_dir), &err) != PF_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    snprintf(log_path, sizeof(log_path), "%s/mkcerts.log", certs_dir);
    const char *argv[] = {"/bin/sh", mkcerts_script, certs_dir, NULL};
    if (pf_proc_run(argv, log_path, 120000, &err) != PF_OK) {
        fprintf(stderr, "mkcerts.sh: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pf_proc_rmtree(certs_dir);
    return 0;
}

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

static void cert(const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", certs_dir, name);
}

static void stop(struct itest *t)
{
    pf_rpc_channel_destroy(t->ch);
    t->ch = NULL;
    PF_FIX_STOP_OK(&t->fs);
}

/* An upload, stat and download of small content through ch; fails the test
 * unless all succeed. */
static void assert_serves(struct pf_rpc_channel *ch, uint64_t seed)
{
    size_t len = 100 * 1024 + (size_t)seed;
    uint8_t *data = pf_fix_random(len, seed);
    struct pf_files_upload_result res;
    struct pf_digest d;
    struct pf_error err;
    uint64_t size;

    pf_sha256(data, len, &d);
    PF_ASSERT_STATUS(PF_OK, pf_files_upload_buffer(ch, data, len, &d, PF_FIX_RPC_MS, &res, &err),
                     err);
    PF_ASSERT_STATUS(PF_OK, pf_files_stat(ch, &d, PF_FIX_RPC_MS, &size, &err), err);
    assert_int_equal(size, len);
    free(data);
}

/* Stat of an absent blob: returns the status (NOT_FOUND when the call got
 * through). */
static enum pf_status probe(struct pf_rpc_channel *ch, struct pf_error *err)
{
    struct pf_digest d;
    uint64_t size;
    pf_sha256("probe", 5, &d);
    return pf_files_stat(ch, &d, 60000, &size, err);
}

static struct pf_rpc_channel *channel(const struct itest *t, const struct pf_rpc_client_opts *o)
{
    return pf_files_server_channel(&t->fs, o);
}

/* ---- TLS ---- */

static void test_tls_private_ca(void **state)
{
    struct itest *t = *state;
    char server_pem[PATH_MAX + 16], server_key[PATH_MAX + 16], ca[PATH_MAX + 16],
        other_ca[PATH_MAX + 16];
    struct pf_rpc_client_opts opts = {0};
    struct pf_rpc_channel *plain, *wrong;
    struct pf_error err;

    cert("server.pem", server_pem, sizeof(server_pem));
    cert("server.key", server_key, sizeof(server_key));
    cert("ca.pem", ca, sizeof(ca));
    cert("selfsigned.pem", other_ca, sizeof(other_ca));
    const char *const flags[] = {"--tls-cert", server_pem, "--tls-key", server_key, NULL};
    PF_FIX_START(&t->fs, flags);
    assert_true(pf_proc_log_count(&t->fs.proc, " event=listening .*tls=") >= 1);

    opts.tls.ca = ca;
    t->ch = channel(t, &opts);
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, probe(t->ch, &err), err);
    assert_serves(t->ch, 1);

    /* Plaintext to the TLS port fails as UNAVAILABLE. */
    plain = channel(t, NULL);
    PF_ASSERT_STATUS(PF_E_UNAVAILABLE, probe(plain, &err), err);
    pf_rpc_channel_destroy(plain);

    /* A client that trusts another CA refuses the server. */
    opts.tls.ca = other_ca;
    wrong = channel(t, &opts);
    PF_ASSERT_STATUS(PF_E_UNAVAILABLE, probe(wrong, &err), err);
    pf_rpc_channel_destroy(wrong);

    /* The server still serves TLS clients after the failed handshakes. */
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, probe(t->ch, &err), err);
    stop(t);
}

static void test_tls_self_signed(void **state)
{
    struct itest *t = *state;
    char pem[PATH_MAX + 16], key[PATH_MAX + 16];
    struct pf_rpc_client_opts opts = {0};
    struct pf_error err;

    cert("selfsigned.pem", pem, sizeof(pem));
    cert("selfsigned.key", key, sizeof(key));
    const char *const flags[] = {"--tls-cert", pem, "--tls-key", key, NULL};
    PF_FIX_START(&t->fs, flags);
    opts.tls.ca = pem;
    t->ch = channel(t, &opts);
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, probe(t->ch, &err), err);
    assert_serves(t->ch, 2);
    stop(t);
}

static void test_mutual_tls(void **state)
{
    struct itest *t = *state;
    char server_pem[PATH_MAX + 16], server_key[PATH_MAX + 16], ca[PATH_MAX + 16],
        client_pem[PATH_MAX + 16], client_key[PATH_MAX + 16];
    struct pf_rpc_client_opts opts = {0};
    struct pf_rpc_channel *anon, *plain;
    struct pf_error err;

    cert("server.pem", server_pem, sizeof(server_pem));
    cert("server.key", server_key, sizeof(server_key));
    cert("ca.pem", ca, sizeof(ca));
    cert("client.pem", client_pem, sizeof(client_pem));
    cert("client.key", client_key, sizeof(client_key));
    const char *const flags[] = {"--tls-cert", server_pem, "--tls-key", server_key,
                                 "--tls-ca",   ca,         NULL};
    PF_FIX_START(&t->fs, flags);

    /* TLS without a client certificate is refused. */
    opts.tls.ca = ca;
    anon = channel(t, &opts);
    PF_ASSERT_STATUS(PF_E_UNAVAILABLE, probe(anon, &err), err);
    pf_rpc_channel_destroy(anon);
    plain = channel(t, NULL);
    PF_ASSERT_STATUS(PF_E_UNAVAILABLE, probe(plain, &err), err);
    pf_rpc_channel_destroy(plain);

    /* With the client certificate everything works. */
    opts.tls.cert = client_pem;
    opts.tls.key = client_key;
    t->ch = channel(t, &opts);
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, probe(t->ch, &err), err);
    assert_serves(t->ch, 3);
    stop(t);
}

/* ---- tokens ---- */

static enum pf_status health_check(struct pf_rpc_channel *ch, const char *service, int *serving,
                                   struct pf_error *err)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *resp;
    enum pf_status rc;

    req.service = (char *)service;
    rc = pf_rpc_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                      &grpc__health__v1__health_check_response__descriptor,
                      (ProtobufCMessage **)&resp, 60000, err);
    if (rc != PF_OK)
        return rc;
    *serving = resp->status;
    grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
    return PF_OK;
}

static enum pf_status put_bundle(struct pf_rpc_channel *ch, const struct pf_digest *d,
                                 struct pf_error *err)
{
    Printfarm__V1__PutBundleRequest req = PRINTFARM__V1__PUT_BUNDLE_REQUEST__INIT;
    Printfarm__V1__Bundle bundle = PRINTFARM__V1__BUNDLE__INIT;
    Printfarm__V1__BundleFile file = PRINTFARM__V1__BUNDLE_FILE__INIT;
    Printfarm__V1__BundleFile *files[1] = {&file};
    Printfarm__V1__Digest dmsg = PRINTFARM__V1__DIGEST__INIT;
    ProtobufCMessage *resp = NULL;
    char hex[PF_DIGEST_HEX_LEN + 1];
    enum pf_status rc;

    pf_digest_to_hex(d, hex);
    dmsg.sha256 = hex;
    file.profile = "prusa-mk4";
    file.digest = &dmsg;
    bundle.name = "token-test";
    bundle.n_files = 1;
    bundle.files = files;
    req.bundle = &bundle;
    rc = pf_rpc_unary(ch, "/printfarm.v1.Files/PutBundle", &req.base,
                      &printfarm__v1__put_bundle_response__descriptor, &resp, 60000, err);
    if (resp != NULL)
        protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static struct pf_rpc_channel *token_channel(const struct itest *t, const char *token)
{
    struct pf_rpc_client_opts opts = {0};
    opts.token = token;
    return channel(t, &opts);
}

static void test_tokens(void **state)
{
    struct itest *t = *state;
    char tokens[PATH_MAX + 16], text[512], admin_hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_rpc_channel *none, *wrong, *verbatim, *viewer, *op, *admin;
    struct pf_files_upload_result res;
    struct pf_digest admin_digest, d;
    struct pf_error err;
    uint8_t *data = pf_fix_random(5000, 21);
    uint64_t size;
    int serving = -1;

    pf_sha256(ADMIN_TOKEN, strlen(ADMIN_TOKEN), &admin_digest);
    pf_digest_to_hex(&admin_digest, admin_hex);
    snprintf(text, sizeof(text),
             "# roles for itest_files_security\n"
             "operator op1 " OPERATOR_TOKEN "\n"
             "viewer v1 " VIEWER_TOKEN "\n"
             "admin a1 sha256:%s\n",
             admin_hex);
    snprintf(tokens, sizeof(tokens), "%s/tokens", t->fs.root);
    assert_true(pf_fix_write_file(tokens, text, strlen(text)));
    const char *const flags[] = {"--tokens", tokens, NULL};
    PF_FIX_START(&t->fs, flags);
    pf_sha256(data, 5000, &d);

    none = channel(t, NULL);
    PF_ASSERT_STATUS(PF_E_UNAUTHENTICATED, probe(none, &err), err);
    PF_ASSERT_STATUS(PF_E_UNAUTHENTICATED,
                     pf_files_upload_buffer(none, data, 5000, &d, 60000, &res, &err), err);
    /* Health answers without a token (probes carry none). */
    PF_ASSERT_STATUS(PF_OK, health_check(none, "", &serving, &err), err);
    assert_int_equal(serving, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);

    wrong = token_channel(t, "wrong-token-0123456789abcdef");
    PF_ASSERT_STATUS(PF_E_UNAUTHENTICATED, probe(wrong, &err), err);
    /* The hashed entry is not itself a token. */
    snprintf(text, sizeof(text), "sha256:%s", admin_hex);
    verbatim = token_channel(t, text);
    PF_ASSERT_STATUS(PF_E_UNAUTHENTICATED, probe(verbatim, &err), err);
    pf_rpc_channel_destroy(verbatim);
    verbatim = token_channel(t, admin_hex);
    PF_ASSERT_STATUS(PF_E_UNAUTHENTICATED, probe(verbatim, &err), err);

    viewer = token_channel(t, VIEWER_TOKEN);
    PF_ASSERT_STATUS(PF_E_PERMISSION,
                     pf_files_upload_buffer(viewer, data, 5000, &d, 60000, &res, &err), err);
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, pf_files_stat(viewer, &d, 60000, &size, &err), err);
    PF_ASSERT_STATUS(PF_E_PERMISSION, put_bundle(viewer, &d, &err), err);

    op = token_channel(t, OPERATOR_TOKEN);
    PF_ASSERT_STATUS(PF_OK, pf_files_upload_buffer(op, data, 5000, &d, 60000, &res, &err), err);
    assert_false(res.existed);
    PF_ASSERT_STATUS(PF_OK, pf_files_stat(viewer, &d, 60000, &size, &err), err);
    assert_int_equal(size, 5000);
    PF_ASSERT_STATUS(PF_OK, put_bundle(op, &d, &err), err);

    admin = token_channel(t, ADMIN_TOKEN);
    assert_serves(admin, 4);
    PF_ASSERT_STATUS(PF_OK, pf_files_upload_buffer(admin, data, 5000, &d, 60000, &res, &err), err);
    assert_true(res.existed);
    /* A viewer downloads. */
    {
        char path[PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s/viewer.bin", t->fs.root);
        PF_ASSERT_STATUS(PF_OK, pf_files_download_path(viewer, &d, path, 60000, &err), err);
    }

    pf_rpc_channel_destroy(none);
    pf_rpc_channel_destroy(wrong);
    pf_rpc_channel_destroy(verbatim);
    pf_rpc_channel_destroy(viewer);
    pf_rpc_channel_destroy(op);
    pf_rpc_channel_destroy(admin);
    free(data);
    stop(t);
}

/* ---- health ---- */

static void test_health(void **state)
{
    struct itest *t = *state;
    struct pf_error err;
    int serving = -1;

    PF_FIX_START(&t->fs, NULL);
    t->ch = channel(t, NULL);
    PF_ASSERT_STATUS(PF_OK, health_check(t->ch, "", &serving, &err), err);
    assert_int_equal(serving, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    serving = -1;
    PF_ASSERT_STATUS(PF_OK, health_check(t->ch, "printfarm.v1.Files", &serving, &err), err);
    assert_int_equal(serving, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, health_check(t->ch, "printfarm.v1.Nope", &serving, &err), err);
    PF_ASSERT_STATUS(PF_E_NOT_FOUND, health_check(t->ch, "printfarm.v1.Scheduler", &serving, &err),
                     err);
    stop(t);
}

/* ---- admin HTTP ---- */

static bool name_start(char c)
{
    return isalpha((unsigned char)c) || c == '_' || c == ':';
}

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == ':';
}

/* Parses `name{label="value",...} value [timestamp]`; false when malformed. */
static bool parse_sample(const char *line, char *name, size_t name_size, double *value)
{
    const char *p = line;
    size_t n = 0;
    char *end;

    if (!name_start(*p))
        return false;
    while (name_char(*p)) {
        if (n + 1 < name_size)
            name[n++] = *p;
        p++;
    }
    name[n] = '\0';
    if (*p == '{') {
        p++;
        while (*p != '}') {
            if (!name_start(*p))
                return false;
            while (name_char(*p))
                p++;
            if (*p++ != '=' || *p++ != '"')
                return false;
            while (*p != '"') {
                if (*p == '\0')
                    return false;
                if (*p == '\\') {
                    p++;
                    if (*p != '\\' && *p != '"' && *p != 'n')
                        return false;
                }
                p++;
            }
            p++;
            if (*p == ',')
                p++;
            else if (*p != '}')
                return false;
        }
        p++;
    }
    if (*p != ' ')
        return false;
    while (*p == ' ')
        p++;
    *value = strtod(p, &end);
    if (end == p)
        return false;
    p = end;
    if (*p == ' ') { /* optional timestamp */
        strtoll(p + 1, &end, 10);
        if (end == p + 1)
            return false;
        p = end;
    }
    return *p == '\0';
}

/* Checks the exposition line by line; returns the sum of the samples of want
 * (NAN when none). */
static double check_exposition(char *text, const char *want)
{
    double sum = NAN;
    int line_no = 0;
    char *save = NULL;
    size_t len = strlen(text);

    if (len == 0 || text[len - 1] != '\n')
        fail_msg("/metrics does not end with a newline");
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char name[128];
        double v = 0;

        line_no++;
        if (line[0] == '#') {
            if (strncmp(line, "# HELP ", 7) != 0 && strncmp(line, "# TYPE ", 7) != 0)
                fail_msg("/metrics line %d is an unknown comment: '%s'", line_no, line);
            continue;
        }
        if (!parse_sample(line, name, sizeof(name), &v))
            fail_msg("/metrics line %d is not `name{labels} value`: '%s'", line_no, line);
        if (strcmp(name, want) == 0)
            sum = isnan(sum) ? v : sum + v;
    }
    if (line_no < 5)
        fail_msg("/metrics has only %d lines", line_no);
    return sum;
}

static void test_admin_metrics(void **state)
{
    struct itest *t = *state;
    size_t uploaded = 3 * MIB + 11;
    uint8_t *data = pf_fix_random(uploaded, 31);
    struct pf_files_upload_result res;
    struct pf_error err;
    char *body = NULL;
    size_t len;
    int status = 0;
    double bytes_in, stored, bytes_out;

    PF_FIX_START(&t->fs, NULL);
    t->ch = channel(t, NULL);
    PF_ASSERT_STATUS(
        PF_OK, pf_files_upload_buffer(t->ch, data, uploaded, NULL, PF_FIX_RPC_MS, &res, &err), err);
    /* A refused upload counts as an error. */
    PF_ASSERT_STATUS(
        PF_E_INVALID,
        pf_files_upload_buffer(t->ch, data, 10, &res.digest, PF_FIX_RPC_MS, &res, &err), err);
    {
        char path[PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s/metrics.bin", t->fs.root);
        pf_sha256(data, uploaded, &res.digest);
        PF_ASSERT_STATUS(PF_OK, pf_files_download_path(t->ch, &res.digest, path, 60000, &err), err);
    }

    PF_ASSERT_STATUS(
        PF_OK, pf_proc_http_get(t->fs.admin_port, "/metrics", 60000, &status, &body, &len, &err),
        err);
    assert_int_equal(status, 200);
    bytes_in = check_exposition(body, "printfarm_files_bytes_in_total");
    free(body);
    if (isnan(bytes_in) || bytes_in < (double)uploaded)
        fail_msg("printfarm_files_bytes_in_total is %g, want >= %zu", bytes_in, uploaded);

    PF_ASSERT_STATUS(
        PF_OK, pf_proc_http_get(t->fs.admin_port, "/metrics", 60000, &status, &body, &len, &err),
        err);
    stored = check_exposition(body, "printfarm_files_blobs_stored_total");
    free(body);
    assert_true(stored >= 1);
    PF_ASSERT_STATUS(
        PF_OK, pf_proc_http_get(t->fs.admin_port, "/metrics", 60000, &status, &body, &len, &err),
        err);
    bytes_out = check_exposition(body, "printfarm_files_bytes_out_total");
    free(body);
    assert_true(bytes_out >= (double)uploaded);
    PF_ASSERT_STATUS(
        PF_OK, pf_proc_http_get(t->fs.admin_port, "/metrics", 60000, &status, &body, &len, &err),
        err);
    assert_true(check_exposition(body, "printfarm_files_errors_total") >= 1);
    free(body);

    PF_ASSERT_STATUS(
        PF_OK, pf_proc_http_get(t->fs.admin_port, "/healthz", 60000, &status, &body, &len, &err),
        err);
    assert_int_equal(status, 200);
    free(body);
    PF_ASSERT_STATUS(
        PF_OK, pf_proc_http_get(t->fs.admin_port, "/readyz", 60000, &status, &body, &len, &err),
        err);
    assert_int_equal(status, 200);
    free(body);
    PF_ASSERT_STATUS(
        PF_OK,
        pf_proc_http_get(t->fs.admin_port, "/no-such-page", 60000, &status, &body, &len, &err),
        err);
    assert_int_equal(status, 404);
    free(body);

    free(data);
    stop(t);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tls_private_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_self_signed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mutual_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_metrics, setup, teardown),
    };

    if (argc < 3) {
        fprintf(stderr, "usage: %s PF_FILES_BINARY MKCERTS_SH\n", argv[0]);
        return 2;
    }
    pf_files_binary = argv[1];
    mkcerts_script = argv[2];
    return cmocka_run_group_tests_name("itest_files_security", tests, group_setup, group_teardown);
}
