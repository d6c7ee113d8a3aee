/* Unit tests for lib/admin.c: a real server on 127.0.0.1:0 (and 0.0.0.0:0, and
 * [::1]:0 when the host has IPv6) spoken to with plain HTTP/1.0 over a socket:
 * /metrics with its content type, /healthz, /readyz both ways, 404 and 405, the
 * request counter, and refusals: bad addresses, a port already in use, no
 * registry. */
#define _GNU_SOURCE /* strcasestr */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <cmocka.h>

#include "admin.h"
#include "log.h"

struct reply {
    int code;
    char *headers; /* status line and headers */
    char *body;
};

static void reply_free(struct reply *r)
{
    free(r->headers);
    free(r->body);
}

/* Sends `request` verbatim to host:port and reads the reply until the server
 * closes the connection (HTTP/1.0). */
static struct reply http_raw(int family, const char *host, int port, const char *request)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET6) {
        struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&ss;
        sa->sin6_family = AF_INET6;
        sa->sin6_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET6, host, &sa->sin6_addr), 1);
        len = sizeof *sa;
    } else {
        struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
        sa->sin_family = AF_INET;
        sa->sin_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET, host, &sa->sin_addr), 1);
        len = sizeof *sa;
    }
    int fd = socket(family, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    assert_int_equal(connect(fd, (struct sockaddr *)&ss, len), 0);
    size_t sent = 0, want = strlen(request);
    while (sent < want) {
        ssize_t n = write(fd, request + sent, want - sent);
        assert_true(n > 0);
        sent += (size_t)n;
    }
    struct pf_buf in;
    pf_buf_init(&in, 1 << 20);
    char chunk[4096];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0)
        assert_int_equal(pf_buf_append(&in, chunk, (size_t)n), PF_OK);
    assert_int_equal(n, 0); /* closed, not timed out */
    close(fd);

    struct reply r = {0};
    char *text = pf_buf_detach(&in, NULL);
    char *split = strstr(text, "\r\n\r\n");
    assert_non_null(split);
    *split = '\0';
    r.body = strdup(split + 4);
    assert_int_equal(sscanf(text, "HTTP/1.%*d %d", &r.code), 1);
    r.headers = text;
    return r;
}

static struct reply http_get(int port, const char *path)
{
    char request[256];
    snprintf(request, sizeof request, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    return http_raw(AF_INET, "127.0.0.1", port, request);
}

static bool has_header(const struct reply *r, const char *line)
{
    /* header names are case-insensitive; libmicrohttpd writes them as given */
    return strcasestr(r->headers, line) != NULL;
}

static atomic_bool ready_flag;
static atomic_int ready_calls;

static bool ready_check(void *arg, struct pf_buf *why)
{
    atomic_fetch_add(&ready_calls, 1);
    if (atomic_load(&ready_flag))
        return true;
    if (pf_buf_printf(why, "%s", (const char *)arg) != PF_OK)
        return false;
    return false;
}

struct fixture {
    struct pf_metrics *metrics;
    struct pf_admin *admin;
    int port;
};

static int start(void **state)
{
    pf_log_init(PF_LOG_ERROR, "test-admin");
    struct fixture *f = calloc(1, sizeof *f);
    f->metrics = pf_metrics_create();
    struct pf_metric *c = pf_metrics_counter(f->metrics, "printfarm_test_total", "a test", NULL);
    pf_metric_add(c, NULL, 7);
    atomic_store(&ready_flag, true);
    struct pf_error err;
    f->admin = pf_admin_start("127.0.0.1:0", f->metrics, ready_check,
                              (void *)"database unreachable", &err);
    if (f->admin == NULL)
        fail_msg("admin did not start: %s", err.msg);
    f->port = pf_admin_port(f->admin);
    *state = f;
    return 0;
}

static int stop(void **state)
{
    struct fixture *f = *state;
    pf_admin_stop(f->admin);
    pf_metrics_destroy(f->metrics);
    free(f);
    return 0;
}

static void test_port_assigned(void **state)
{
    struct fixture *f = *state;
    assert_true(f->port > 0 && f->port <= 65535);
}

static void test_metrics(void **state)
{
    struct fixture *f = *state;
    struct reply r = http_get(f->port, "/metrics");
    assert_int_equal(r.code, 200);
    assert_true(has_header(&r, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert_non_null(strstr(r.body, "# HELP printfarm_test_total a test\n"
                                   "# TYPE printfarm_test_total counter\n"
                                   "printfarm_test_total 7\n"));
    assert_non_null(strstr(r.body, "# TYPE process_start_time_seconds gauge\n"));
    assert_non_null(strstr(r.body, "# TYPE process_open_fds gauge\n"));
    reply_free(&r);
    /* a query string does not change the path */
    r = http_get(f->port, "/metrics?name=x");
    assert_int_equal(r.code, 200);
    reply_free(&r);
}

static void test_healthz(void **state)
{
    struct fixture *f = *state;
    struct reply r = http_get(f->port, "/healthz");
    assert_int_equal(r.code, 200);
    assert_string_equal(r.body, "ok\n");
    assert_true(has_header(&r, "Content-Type: text/plain; charset=utf-8\r\n"));
    reply_free(&r);
}

static void test_readyz(void **state)
{
    struct fixture *f = *state;
    atomic_store(&ready_calls, 0);
    atomic_store(&ready_flag, true);
    struct reply r = http_get(f->port, "/readyz");
    assert_int_equal(r.code, 200);
    assert_string_equal(r.body, "ready\n");
    reply_free(&r);

    atomic_store(&ready_flag, false);
    r = http_get(f->port, "/readyz");
    assert_int_equal(r.code, 503);
    assert_string_equal(r.body, "not ready: database unreachable\n");
    reply_free(&r);
    assert_int_equal(atomic_load(&ready_calls), 2);
    atomic_store(&ready_flag, true);
}

static void test_not_found(void **state)
{
    struct fixture *f = *state;
    static const char *const paths[] = {"/",          "/nope",    "/metrics/",
                                        "/healthz/x", "/METRICS", "/metrics.txt"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        struct reply r = http_get(f->port, paths[i]);
        if (r.code != 404)
            fail_msg("path '%s' gave %d", paths[i], r.code);
        assert_string_equal(r.body, "not found\n");
        reply_free(&r);
    }
}

static void test_method_not_allowed(void **state)
{
    struct fixture *f = *state;
    struct reply r = http_raw(AF_INET, "127.0.0.1", f->port,
                              "POST /metrics HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello");
    assert_int_equal(r.code, 405);
    assert_true(has_header(&r, "Allow: GET, HEAD\r\n"));
    reply_free(&r);
    r = http_raw(AF_INET, "127.0.0.1", f->port, "DELETE /healthz HTTP/1.0\r\n\r\n");
    assert_int_equal(r.code, 405);
    reply_free(&r);
    r = http_raw(AF_INET, "127.0.0.1", f->port, "PUT /nope HTTP/1.0\r\n\r\n");
    assert_int_equal(r.code, 405);
    reply_free(&r);
}

static void test_head(void **state)
{
    struct fixture *f = *state;
    struct reply r = http_raw(AF_INET, "127.0.0.1", f->port, "HEAD /healthz HTTP/1.0\r\n\r\n");
    assert_int_equal(r.code, 200);
    assert_string_equal(r.body, "");
    reply_free(&r);
}

static void test_garbage_request(void **state)
{
    struct fixture *f = *state;
    struct reply r = http_raw(AF_INET, "127.0.0.1", f->port, "\x01\x02 garbage\r\n\r\n");
    assert_int_equal(r.code, 400);
    reply_free(&r);
    /* the server still answers afterwards */
    r = http_get(f->port, "/healthz");
    assert_int_equal(r.code, 200);
    reply_free(&r);
}

static void test_request_counter(void **state)
{
    struct fixture *f = *state;
    struct reply r = http_get(f->port, "/healthz");
    reply_free(&r);
    r = http_get(f->port, "/does-not-exist");
    reply_free(&r);
    r = http_get(f->port, "/metrics");
    assert_int_equal(r.code, 200);
    assert_non_null(
        strstr(r.body, "printfarm_admin_requests_total{path=\"/healthz\",code=\"200\"}"));
    assert_non_null(strstr(r.body, "printfarm_admin_requests_total{path=\"other\",code=\"404\"}"));
    assert_null(strstr(r.body, "does-not-exist"));
    reply_free(&r);
}

static void expect_start_failure(const char *listen, const char *want)
{
    struct pf_metrics *m = pf_metrics_create();
    struct pf_error err;
    pf_error_clear(&err);
    struct pf_admin *a = pf_admin_start(listen, m, NULL, NULL, &err);
    if (a != NULL)
        fail_msg("admin started on '%s'", listen);
    if (strstr(err.msg, want) == NULL)
        fail_msg("message '%s' lacks '%s'", err.msg, want);
    assert_true(err.code != PF_OK);
    pf_metrics_destroy(m);
}

static void test_bad_addresses(void **state)
{
    pf_log_init(PF_LOG_ERROR, "test-admin");
    expect_start_failure("nonsense", "invalid address 'nonsense': missing port");
    expect_start_failure("127.0.0.1:99999", "port must be 0..65535");
    expect_start_failure(":9100", "missing host");
    expect_start_failure("", "missing address");
    expect_start_failure(NULL, "missing address");
    expect_start_failure("no-such-host.invalid:0",
                         "could not listen on 'no-such-host.invalid:0' for the admin server: "
                         "cannot resolve 'no-such-host.invalid'");
    expect_start_failure("192.0.2.1:0", "could not listen on '192.0.2.1:0' for the admin server");
    struct pf_error err;
    assert_null(pf_admin_start("127.0.0.1:0", NULL, NULL, NULL, &err));
    assert_string_equal(err.msg, "the admin server needs a metrics registry");
    pf_admin_stop(NULL);
    assert_int_equal(pf_admin_port(NULL), 0);
}

static void test_port_in_use(void **state)
{
    pf_log_init(PF_LOG_ERROR, "test-admin");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    char listen_addr[64], want[160];
    snprintf(listen_addr, sizeof listen_addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    snprintf(want, sizeof want, "could not listen on '%s' for the admin server: address in use",
             listen_addr);
    expect_start_failure(listen_addr, want);
    close(fd);
}

static void test_any_address(void **state)
{
    struct pf_metrics *m = pf_metrics_create();
    struct pf_error err;
    struct pf_admin *a = pf_admin_start("0.0.0.0:0", m, NULL, NULL, &err);
    if (a == NULL)
        fail_msg("admin did not start: %s", err.msg);
    struct reply r = http_get(pf_admin_port(a), "/readyz");
    assert_int_equal(r.code, 200); /* no callback: always ready */
    assert_string_equal(r.body, "ready\n");
    reply_free(&r);
    pf_admin_stop(a);
    pf_metrics_destroy(m);
}

static void test_ipv6_loopback(void **state)
{
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool have_ipv6 = probe >= 0 && bind(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (probe >= 0)
        close(probe);
    if (!have_ipv6)
        skip();
    struct pf_metrics *m = pf_metrics_create();
    struct pf_error err;
    struct pf_admin *a = pf_admin_start("[::1]:0", m, NULL, NULL, &err);
    if (a == NULL)
        fail_msg("admin did not start: %s", err.msg);
    struct reply r = http_raw(AF_INET6, "::1", pf_admin_port(a), "GET /healthz HTTP/1.0\r\n\r\n");
    assert_int_equal(r.code, 200);
    assert_string_equal(r.body, "ok\n");
    reply_free(&r);
    pf_admin_stop(a);
    pf_metrics_destroy(m);
}

static void test_not_ready_without_reason(void **state)
{
    struct pf_metrics *m = pf_metrics_create();
    struct pf_error err;
    atomic_store(&ready_flag, false);
    struct pf_admin *a = pf_admin_start("127.0.0.1:0", m, ready_check, (void *)"", &err);
    assert_non_null(a);
    struct reply r = http_get(pf_admin_port(a), "/readyz");
    assert_int_equal(r.code, 503);
    assert_string_equal(r.body, "not ready: no reason given\n");
    reply_free(&r);
    atomic_store(&ready_flag, true);
    pf_admin_stop(a);
    pf_metrics_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_port_assigned, start, stop),
        cmocka_unit_test_setup_teardown(test_metrics, start, stop),
        cmocka_unit_test_setup_teardown(test_healthz, start, stop),
        cmocka_unit_test_setup_teardown(test_readyz, start, stop),
        cmocka_unit_test_setup_teardown(test_not_found, start, stop),
        cmocka_unit_test_setup_teardown(test_method_not_allowed, start, stop),
        cmocka_unit_test_setup_teardown(test_head, start, stop),
        cmocka_unit_test_setup_teardown(test_garbage_request, start, stop),
        cmocka_unit_test_setup_teardown(test_request_counter, start, stop),
        cmocka_unit_test(test_bad_addresses),
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_any_address),
        cmocka_unit_test(test_ipv6_loopback),
        cmocka_unit_test(test_not_ready_without_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
