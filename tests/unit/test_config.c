/* Unit tests for lib/config.c: precedence (flag > PRINTFARM_* environment >
 * default), every value type with its range checks, the exact error messages
 * an operator sees, --help output, unknown and abbreviated flags, positional
 * arguments, repeated parsing in one process, and the size, duration and
 * HOST:PORT parsers against malformed and overflowing input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"

static char *listen_addr;
static char *token;
static int64_t port;
static bool verbose;
static uint64_t max_size;
static int64_t timeout_ms;

static const struct pf_flag flags[] = {
    {"listen", PF_FLAG_STRING, &listen_addr, "0.0.0.0:7400", "gRPC address", 0, 0},
    {"port", PF_FLAG_INT, &port, "7400", "a port", 1, 65535},
    {"verbose", PF_FLAG_BOOL, &verbose, "false", "say more", 0, 0},
    {"max-size", PF_FLAG_SIZE, &max_size, "64M", "largest upload", 1, 1 << 30},
    {"timeout", PF_FLAG_DURATION_MS, &timeout_ms, "5s", "how long to wait", 1, 3600 * 1000},
    {"token", PF_FLAG_STRING, &token, NULL, "bearer token", 0, 0},
};

static const struct pf_config cfg = {
    .program = "pf-test",
    .summary = "a program for tests",
    .flags = flags,
    .flag_count = sizeof flags / sizeof flags[0],
};

static const char *const env_names[] = {"PRINTFARM_LISTEN",  "PRINTFARM_PORT",
                                        "PRINTFARM_VERBOSE", "PRINTFARM_MAX_SIZE",
                                        "PRINTFARM_TIMEOUT", "PRINTFARM_TOKEN"};

static int reset(void **state)
{
    for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++)
        unsetenv(env_names[i]);
    pf_config_release(&cfg);
    port = -1;
    verbose = false;
    max_size = 0;
    timeout_ms = -1;
    return 0;
}

/* Parses a NULL-terminated list of arguments after the program name. getopt
 * permutes argv, so the list is copied first. */
static enum pf_status parse_args(struct pf_error *err, int *positional, const char *first, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"pf-test";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && argc < 31; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    FILE *out = fopen("/dev/null", "w");
    assert_non_null(out);
    enum pf_status st = pf_config_parse(&cfg, argc, argv, out, positional, err);
    fclose(out);
    return st;
}

static void expect_error(const char *want, const char *first, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"pf-test";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && argc < 31; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    struct pf_error err;
    pf_error_clear(&err);
    listen_addr = NULL;
    port = -42;
    enum pf_status st = pf_config_parse(&cfg, argc, argv, stdout, NULL, &err);
    if (st != PF_E_INVALID)
        fail_msg("expected invalid for '%s', got %d (%s)", first ? first : "", st, err.msg);
    assert_string_equal(err.msg, want);
    /* a failed parse writes no destination */
    assert_null(listen_addr);
    assert_int_equal(port, -42);
}

static void test_defaults(void **state)
{
    struct pf_error err;
    assert_int_equal(parse_args(&err, NULL, NULL), PF_OK);
    assert_string_equal(listen_addr, "0.0.0.0:7400");
    assert_null(token);
    assert_int_equal(port, 7400);
    assert_false(verbose);
    assert_int_equal(max_size, 64u << 20);
    assert_int_equal(timeout_ms, 5000);
}

static void test_flags_both_forms(void **state)
{
    struct pf_error err;
    assert_int_equal(parse_args(&err, NULL, "--listen", "127.0.0.1:1", "--port=81", "--verbose",
                                "--max-size", "1G", "--timeout=250ms", "--token", "s3cret", NULL),
                     PF_OK);
    assert_string_equal(listen_addr, "127.0.0.1:1");
    assert_string_equal(token, "s3cret");
    assert_int_equal(port, 81);
    assert_true(verbose);
    assert_int_equal(max_size, 1u << 30);
    assert_int_equal(timeout_ms, 250);
}

static void test_last_flag_wins(void **state)
{
    struct pf_error err;
    assert_int_equal(
        parse_args(&err, NULL, "--port=1", "--port=2", "--listen=a:1", "--listen=b:2", NULL),
        PF_OK);
    assert_int_equal(port, 2);
    assert_string_equal(listen_addr, "b:2");
}

static void test_env_then_flag_precedence(void **state)
{
    struct pf_error err;
    setenv("PRINTFARM_PORT", "9000", 1);
    setenv("PRINTFARM_LISTEN", "10.0.0.1:5", 1);
    setenv("PRINTFARM_VERBOSE", "yes", 1);
    setenv("PRINTFARM_MAX_SIZE", "2KiB", 1);
    setenv("PRINTFARM_TIMEOUT", "1m", 1);
    assert_int_equal(parse_args(&err, NULL, NULL), PF_OK);
    assert_int_equal(port, 9000);
    assert_string_equal(listen_addr, "10.0.0.1:5");
    assert_true(verbose);
    assert_int_equal(max_size, 2048);
    assert_int_equal(timeout_ms, 60000);
    pf_config_release(&cfg);

    /* a flag beats the environment, including --verbose=false */
    assert_int_equal(parse_args(&err, NULL, "--port", "9001", "--verbose=false", NULL), PF_OK);
    assert_int_equal(port, 9001);
    assert_false(verbose);
    assert_string_equal(listen_addr, "10.0.0.1:5");
}

static void test_empty_env_is_unset(void **state)
{
    struct pf_error err;
    setenv("PRINTFARM_PORT", "", 1);
    setenv("PRINTFARM_LISTEN", "", 1);
    assert_int_equal(parse_args(&err, NULL, NULL), PF_OK);
    assert_int_equal(port, 7400);
    assert_string_equal(listen_addr, "0.0.0.0:7400");
}

static void test_empty_flag_value(void **state)
{
    struct pf_error err;
    /* an empty string is a value for a string flag ... */
    assert_int_equal(parse_args(&err, NULL, "--listen=", NULL), PF_OK);
    assert_string_equal(listen_addr, "");
    pf_config_release(&cfg);
    /* ... and not a number */
    expect_error("invalid value '' for --port: not a number", "--port=", NULL);
}

static void test_bool_forms(void **state)
{
    static const struct {
        const char *arg;
        bool want;
    } cases[] = {
        {"--verbose", true},     {"--verbose=true", true}, {"--verbose=1", true},
        {"--verbose=YES", true}, {"--verbose=on", true},   {"--verbose=false", false},
        {"--verbose=0", false},  {"--verbose=no", false},  {"--verbose=Off", false},
    };
    struct pf_error err;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        verbose = !cases[i].want;
        assert_int_equal(parse_args(&err, NULL, cases[i].arg, NULL), PF_OK);
        assert_int_equal(verbose, cases[i].want);
        pf_config_release(&cfg);
    }
    expect_error("invalid value 'maybe' for --verbose: not a boolean (use true or false)",
                 "--verbose=maybe", NULL);
    expect_error("invalid value '' for --verbose: not a boolean (use true or false)",
                 "--verbose=", NULL);
    setenv("PRINTFARM_VERBOSE", "2", 1);
    expect_error("invalid value '2' in PRINTFARM_VERBOSE for --verbose: not a boolean (use true "
                 "or false)",
                 NULL);
}

static void test_int_errors(void **state)
{
    expect_error("invalid value 'abc' for --port: not a number", "--port", "abc", NULL);
    expect_error("invalid value '12abc' for --port: not a number", "--port=12abc", NULL);
    expect_error("invalid value ' 5' for --port: not a number", "--port= 5", NULL);
    expect_error("invalid value '0x10' for --port: not a number", "--port=0x10", NULL);
    expect_error("invalid value '1.5' for --port: not a number", "--port=1.5", NULL);
    expect_error("invalid value '-' for --port: not a number", "--port=-", NULL);
    expect_error("invalid value '0' for --port: must be between 1 and 65535", "--port=0", NULL);
    expect_error("invalid value '-5' for --port: must be between 1 and 65535", "--port=-5", NULL);
    expect_error("invalid value '65536' for --port: must be between 1 and 65535", "--port=65536",
                 NULL);
    expect_error("invalid value '99999999999999999999' for --port: number too large",
                 "--port=99999999999999999999", NULL);
    expect_error("invalid value '9223372036854775808' for --port: number too large",
                 "--port=9223372036854775808", NULL);
    setenv("PRINTFARM_PORT", "x", 1);
    expect_error("invalid value 'x' in PRINTFARM_PORT for --port: not a number", NULL);
    setenv("PRINTFARM_PORT", "70000", 1);
    expect_error("invalid value '70000' in PRINTFARM_PORT for --port: must be between 1 and 65535",
                 NULL);
}

static void test_int_limits_unchecked(void **state)
{
    int64_t v = 0;
    const struct pf_flag f[] = {{"n", PF_FLAG_INT, &v, NULL, "n", 0, 0}};
    const struct pf_config c = {"p", "s", f, 1};
    char *argv[] = {"p", "--n=-9223372036854775808", NULL};
    struct pf_error err;
    assert_int_equal(pf_config_parse(&c, 2, argv, stdout, NULL, &err), PF_OK);
    assert_true(v == INT64_MIN);
    char *argv2[] = {"p", "--n=+9223372036854775807", NULL};
    assert_int_equal(pf_config_parse(&c, 2, argv2, stdout, NULL, &err), PF_OK);
    assert_true(v == INT64_MAX);
    char *argv3[] = {"p", NULL};
    assert_int_equal(pf_config_parse(&c, 1, argv3, stdout, NULL, &err), PF_OK);
    assert_int_equal(v, 0); /* no default: zero */
}

static void test_size_and_duration_flag_errors(void **state)
{
    expect_error("invalid value '2G' for --max-size: must be between 1 and 1073741824 bytes",
                 "--max-size=2G", NULL);
    expect_error("invalid value '0' for --max-size: must be between 1 and 1073741824 bytes",
                 "--max-size=0", NULL);
    expect_error("invalid value '1.5M' for --max-size: not a size (use a number of bytes with an "
                 "optional K, M, G or T suffix)",
                 "--max-size=1.5M", NULL);
    expect_error("invalid value '2h' for --timeout: must be between 1ms and 3600000ms",
                 "--timeout=2h", NULL);
    expect_error("invalid value '0s' for --timeout: must be between 1ms and 3600000ms",
                 "--timeout=0s", NULL);
    expect_error("invalid value 'soon' for --timeout: not a duration (use a number with ms, s, m "
                 "or h)",
                 "--timeout", "soon", NULL);
    setenv("PRINTFARM_TIMEOUT", "5x", 1);
    expect_error("invalid value '5x' in PRINTFARM_TIMEOUT for --timeout: not a duration (use a "
                 "number with ms, s, m or h)",
                 NULL);
}

static void test_unknown_flags(void **state)
{
    expect_error("unknown flag '--foo' (see --help)", "--foo", NULL);
    expect_error("unknown flag '--foo' (see --help)", "--foo=bar", NULL);
    expect_error("unknown flag '-x' (see --help)", "-x", NULL);
    expect_error("unknown flag '-p' (see --help)", "-p", "80", NULL);
    /* the error names the first bad flag even after good ones */
    expect_error("unknown flag '--bogus' (see --help)", "--port=80", "--bogus", NULL);
    /* abbreviations are refused, even unambiguous ones */
    expect_error("unknown flag '--verb' (see --help)", "--verb", NULL);
    expect_error("unknown flag '--po' (see --help)", "--po", "80", NULL);
    expect_error("unknown flag '--max' (see --help)", "--max=1K", NULL);
    expect_error("unknown flag '--hel' (see --help)", "--hel", NULL);
    /* a prefix of two flags (timeout, token) */
    expect_error("unknown flag '--t' (see --help)", "--t", NULL);
    expect_error("unknown flag '--PORT' (see --help)", "--PORT=1", NULL);
    expect_error("flag '--help' takes no value", "--help=yes", NULL);
}

static void test_missing_value(void **state)
{
    expect_error("missing value for --port", "--port", NULL);
    expect_error("missing value for --listen", "--verbose", "--listen", NULL);
}

static void test_positional(void **state)
{
    expect_error("unexpected argument 'extra' (see --help)", "extra", NULL);
    expect_error("unexpected argument 'x' (see --help)", "--port=5", "--", "x", NULL);
    /* --verbose takes its value only with '=' */
    expect_error("unexpected argument 'false' (see --help)", "--verbose", "false", NULL);

    struct pf_error err;
    char *argv[] = {"pf-test", "job", "--port=5", "list", "--", "--not-a-flag", NULL};
    int index = -1;
    assert_int_equal(pf_config_parse(&cfg, 6, argv, stdout, &index, &err), PF_OK);
    assert_int_equal(port, 5);
    assert_int_equal(index, 3);
    assert_string_equal(argv[index], "job");
    assert_string_equal(argv[index + 1], "list");
    assert_string_equal(argv[index + 2], "--not-a-flag");
}

static void test_help(void **state)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    assert_non_null(out);
    char *argv[] = {"pf-test", "--port=abc", "--help", NULL};
    struct pf_error err;
    port = -42;
    assert_int_equal(pf_config_parse(&cfg, 3, argv, out, NULL, &err), PF_E_END);
    fclose(out);
    assert_int_equal(port, -42);
    const char *want =
        "usage: pf-test [flags]\n"
        "a program for tests\n"
        "\n"
        "flags:\n"
        "  --listen VALUE       gRPC address (env PRINTFARM_LISTEN, default: 0.0.0.0:7400)\n"
        "  --port N             a port (env PRINTFARM_PORT, default: 7400)\n"
        "  --verbose            say more (env PRINTFARM_VERBOSE, default: false)\n"
        "  --max-size SIZE      largest upload (env PRINTFARM_MAX_SIZE, default: 64M)\n"
        "  --timeout DURATION   how long to wait (env PRINTFARM_TIMEOUT, default: 5s)\n"
        "  --token VALUE        bearer token (env PRINTFARM_TOKEN)\n"
        "  -h, --help           print this help and exit\n";
    assert_string_equal(text, want);
    free(text);

    /* -h, and help with positional arguments allowed */
    text = NULL;
    out = open_memstream(&text, &size);
    char *argv2[] = {"pf-test", "-h", NULL};
    int index;
    assert_int_equal(pf_config_parse(&cfg, 2, argv2, out, &index, &err), PF_E_END);
    fclose(out);
    assert_true(strncmp(text, "usage: pf-test [flags] [ARG...]\n", 32) == 0);
    free(text);
}

static void test_repeated_parse(void **state)
{
    struct pf_error err;
    for (int i = 0; i < 5; i++) {
        char arg[32];
        snprintf(arg, sizeof arg, "--port=%d", 100 + i);
        assert_int_equal(parse_args(&err, NULL, arg, "--token", "t", NULL), PF_OK);
        assert_int_equal(port, 100 + i);
        assert_string_equal(token, "t");
        pf_config_release(&cfg);
        assert_null(token);
        assert_null(listen_addr);
        /* a failure in between does not disturb the next parse */
        assert_int_equal(parse_args(&err, NULL, "--nope", NULL), PF_E_INVALID);
    }
}

static void test_bad_default_is_internal(void **state)
{
    int64_t v;
    const struct pf_flag f[] = {{"n", PF_FLAG_INT, &v, "lots", "n", 0, 0}};
    const struct pf_config c = {"p", "s", f, 1};
    char *argv[] = {"p", NULL};
    struct pf_error err;
    assert_int_equal(pf_config_parse(&c, 1, argv, stdout, NULL, &err), PF_E_INTERNAL);
    assert_string_equal(err.msg, "invalid value 'lots' in the default of --n: not a number");
    char *argv2[] = {"p", "--n=3", NULL};
    assert_int_equal(pf_config_parse(&c, 2, argv2, stdout, NULL, &err), PF_OK);
    assert_int_equal(v, 3);
}

static void test_env_name(void **state)
{
    char out[64];
    pf_config_env_name("admin-listen", out, sizeof out);
    assert_string_equal(out, "PRINTFARM_ADMIN_LISTEN");
    pf_config_env_name("tls-ca", out, sizeof out);
    assert_string_equal(out, "PRINTFARM_TLS_CA");
    pf_config_env_name("sim.printers", out, sizeof out);
    assert_string_equal(out, "PRINTFARM_SIM_PRINTERS");
    pf_config_env_name("", out, sizeof out);
    assert_string_equal(out, "PRINTFARM_");
    pf_config_env_name("admin-listen", out, 12);
    assert_string_equal(out, "PRINTFARM_A");
    pf_config_env_name("x", out, 1);
    assert_string_equal(out, "");
}

static void test_parse_size(void **state)
{
    static const struct {
        const char *text;
        uint64_t want;
    } good[] = {
        {"0", 0},
        {"1048576", 1048576},
        {"64K", 64 << 10},
        {"64k", 64 << 10},
        {"1KiB", 1024},
        {"512M", 512u << 20},
        {"3MiB", 3u << 20},
        {"1G", 1u << 30},
        {"5GiB", 5ull << 30},
        {"2T", 2ull << 40},
        {"7B", 7},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183G", 17179869183ull << 30},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t v = 1;
        assert_int_equal(pf_config_parse_size(good[i].text, &v), PF_OK);
        assert_true(v == good[i].want);
    }
    static const char *const bad[] = {"",    "K",  "-1",  "+1",  "1.5G", "1X",
                                      "1 K", " 1", "1K ", "1KB", "1kib", "0x10",
                                      "1GG", "G1", "1e3", "1Ki", "1iB"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 42;
        if (pf_config_parse_size(bad[i], &v) != PF_E_INVALID)
            fail_msg("size '%s' accepted", bad[i]);
        assert_int_equal(v, 42);
    }
    static const char *const huge[] = {"18446744073709551616", "17179869184G", "16777216T",
                                       "99999999999999999999999K"};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        uint64_t v = 42;
        if (pf_config_parse_size(huge[i], &v) != PF_E_OUT_OF_RANGE)
            fail_msg("size '%s' not out of range", huge[i]);
        assert_int_equal(v, 42);
    }
    uint64_t v;
    assert_int_equal(pf_config_parse_size(NULL, &v), PF_E_INVALID);
}

static void test_parse_duration(void **state)
{
    static const struct {
        const char *text;
        int64_t want;
    } good[] = {
        {"250ms", 250}, {"2s", 2000}, {"1m", 60000}, {"1h", 3600000},
        {"42", 42},     {"0", 0},     {"0s", 0},     {"2562047788015h", 2562047788015ll * 3600000},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t v = -1;
        assert_int_equal(pf_config_parse_duration_ms(good[i].text, &v), PF_OK);
        assert_true(v == good[i].want);
    }
    static const char *const bad[] = {"",   "s",  "ms",   "1.5s", "-1s",  "+1s", "1d",  "1 s",
                                      "1S", "1H", "1sec", "s1",   "1ms2", " 1s", "1mss"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 42;
        if (pf_config_parse_duration_ms(bad[i], &v) != PF_E_INVALID)
            fail_msg("duration '%s' accepted", bad[i]);
        assert_int_equal(v, 42);
    }
    static const char *const huge[] = {"9223372036854775808", "2562047788016h", "9223372036854776s",
                                       "99999999999999999999999ms"};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        int64_t v = 42;
        if (pf_config_parse_duration_ms(huge[i], &v) != PF_E_OUT_OF_RANGE)
            fail_msg("duration '%s' not out of range", huge[i]);
        assert_int_equal(v, 42);
    }
    int64_t v;
    assert_int_equal(pf_config_parse_duration_ms(NULL, &v), PF_E_INVALID);
}

static void test_hostport_good(void **state)
{
    static const struct {
        const char *text;
        const char *host;
        int port;
    } good[] = {
        {"127.0.0.1:7400", "127.0.0.1", 7400},
        {"[::1]:7400", "::1", 7400},
        {"localhost:0", "localhost", 0},
        {"0.0.0.0:65535", "0.0.0.0", 65535},
        {"[fe80::1%eth0]:80", "fe80::1%eth0", 80},
        {"scheduler.farm.local:00080", "scheduler.farm.local", 80},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char host[64];
        int p = -1;
        struct pf_error err;
        assert_int_equal(pf_config_parse_hostport(good[i].text, host, sizeof host, &p, &err),
                         PF_OK);
        assert_string_equal(host, good[i].host);
        assert_int_equal(p, good[i].port);
    }
}

static void expect_bad_hostport(const char *text, const char *want)
{
    char host[16] = "untouched";
    int p = -7;
    struct pf_error err;
    pf_error_clear(&err);
    assert_int_equal(pf_config_parse_hostport(text, host, sizeof host, &p, &err), PF_E_INVALID);
    assert_string_equal(err.msg, want);
    assert_string_equal(host, "untouched");
    assert_int_equal(p, -7);
    assert_int_equal(pf_config_parse_hostport(text, host, sizeof host, &p, NULL), PF_E_INVALID);
}

static void test_hostport_bad(void **state)
{
    expect_bad_hostport(NULL, "missing address: expected HOST:PORT");
    expect_bad_hostport("", "missing address: expected HOST:PORT");
    expect_bad_hostport("127.0.0.1",
                        "invalid address '127.0.0.1': missing port (expected HOST:PORT)");
    expect_bad_hostport("127.0.0.1:",
                        "invalid address '127.0.0.1:': missing port (expected HOST:PORT)");
    expect_bad_hostport(":7400", "invalid address ':7400': missing host (use 0.0.0.0 for every "
                                 "interface)");
    expect_bad_hostport("[]:80",
                        "invalid address '[]:80': missing host (use 0.0.0.0 for every interface)");
    expect_bad_hostport("[::1]", "invalid address '[::1]': expected ':PORT' after ']'");
    expect_bad_hostport("[::1]7400", "invalid address '[::1]7400': expected ':PORT' after ']'");
    expect_bad_hostport("[::1:7400", "invalid address '[::1:7400': missing ']'");
    expect_bad_hostport("::1:7400", "invalid address '::1:7400': put an IPv6 address in "
                                    "brackets, as in [::1]:7400");
    expect_bad_hostport("host:65536", "invalid address 'host:65536': port must be 0..65535");
    expect_bad_hostport("host:99999999999999999999999",
                        "invalid address 'host:99999999999999999999999': port must be 0..65535");
    expect_bad_hostport("host:-1", "invalid address 'host:-1': port is not a number");
    expect_bad_hostport("host:+80", "invalid address 'host:+80': port is not a number");
    expect_bad_hostport("host:abc", "invalid address 'host:abc': port is not a number");
    expect_bad_hostport("host:80 ", "invalid address 'host:80 ': port is not a number");
    expect_bad_hostport("ho st:80", "invalid address 'ho st:80': bad character in host");
    expect_bad_hostport("a/b:80", "invalid address 'a/b:80': bad character in host");
    expect_bad_hostport("[a]b]:80", "invalid address '[a]b]:80': expected ':PORT' after ']'");
    /* the host buffer above holds 15 characters */
    expect_bad_hostport("a-very-long-host-name:80",
                        "invalid address 'a-very-long-host-name:80': host too long");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, reset, reset),
        cmocka_unit_test_setup_teardown(test_flags_both_forms, reset, reset),
        cmocka_unit_test_setup_teardown(test_last_flag_wins, reset, reset),
        cmocka_unit_test_setup_teardown(test_env_then_flag_precedence, reset, reset),
        cmocka_unit_test_setup_teardown(test_empty_env_is_unset, reset, reset),
        cmocka_unit_test_setup_teardown(test_empty_flag_value, reset, reset),
        cmocka_unit_test_setup_teardown(test_bool_forms, reset, reset),
        cmocka_unit_test_setup_teardown(test_int_errors, reset, reset),
        cmocka_unit_test_setup_teardown(test_int_limits_unchecked, reset, reset),
        cmocka_unit_test_setup_teardown(test_size_and_duration_flag_errors, reset, reset),
        cmocka_unit_test_setup_teardown(test_unknown_flags, reset, reset),
        cmocka_unit_test_setup_teardown(test_missing_value, reset, reset),
        cmocka_unit_test_setup_teardown(test_positional, reset, reset),
        cmocka_unit_test_setup_teardown(test_help, reset, reset),
        cmocka_unit_test_setup_teardown(test_repeated_parse, reset, reset),
        cmocka_unit_test_setup_teardown(test_bad_default_is_internal, reset, reset),
        cmocka_unit_test(test_env_name),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_hostport_good),
        cmocka_unit_test(test_hostport_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
