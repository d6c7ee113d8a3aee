/* Unit tests for the LAN beacon's pure half in lib/discovery_client.c:
 * pf_beacon_parse must take any bytes the network hands over and either
 * return a complete, valid beacon or a clear error; pf_beacon_format must
 * write only what parses back; pf_beacon_dial_address substitutes the
 * sender's address for a wildcard host. Adversarial inputs are mandatory:
 * truncations of a valid beacon at every length, every single-byte
 * corruption, NULs, control bytes, over-long fields and datagrams, repeated
 * and missing fields, other versions, bad addresses and farm names, and a
 * random-bytes run that only checks the parser never accepts garbage
 * silently or crashes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "discovery_client.h"

static const char good[] = "PFBEACON 1\nfarm=printfarm\ndiscovery=10.0.0.5:7500\n";

static enum pf_status parse(const char *text, struct pf_beacon *b, struct pf_error *err)
{
    return pf_beacon_parse(text, strlen(text), b, err);
}

static void expect_invalid(const char *text, const char *needle)
{
    struct pf_beacon b;
    struct pf_error err;
    memset(&b, 0x5a, sizeof(b));
    enum pf_status rc = parse(text, &b, &err);
    if (rc == PF_OK)
        fail_msg("accepted: \"%s\"", text);
    if (needle != NULL && strstr(err.msg, needle) == NULL)
        fail_msg("\"%s\": message \"%s\" lacks \"%s\"", text, err.msg, needle);
    /* out is untouched on failure */
    assert_int_equal(((unsigned char *)&b)[0], 0x5a);
}

static void test_parses_a_good_beacon(void **state)
{
    struct pf_beacon b;
    struct pf_error err;
    (void)state;
    assert_int_equal(parse(good, &b, &err), PF_OK);
    assert_int_equal(b.version, 1);
    assert_string_equal(b.farm, "printfarm");
    assert_string_equal(b.discovery, "10.0.0.5:7500");
    /* no trailing newline, fields in another order, unknown keys, blank lines */
    assert_int_equal(parse("PFBEACON 1\ndiscovery=h:1\nzone=lab\n\nfarm=a.b_c-9", &b, &err), PF_OK);
    assert_string_equal(b.farm, "a.b_c-9");
    assert_string_equal(b.discovery, "h:1");
    assert_int_equal(parse("PFBEACON 1\nfarm=f\ndiscovery=[fe80::1]:7500\n", &b, &err), PF_OK);
    assert_string_equal(b.discovery, "[fe80::1]:7500");
    assert_int_equal(parse("PFBEACON 1\nfarm=f\ndiscovery=0.0.0.0:7500\n", &b, &err), PF_OK);
}

static void test_format_round_trips(void **state)
{
    char buf[PF_BEACON_MAX_BYTES + 1];
    struct pf_beacon b;
    struct pf_error err;
    size_t len = 0;
    char farm[PF_BEACON_FARM_MAX + 1], addr[PF_BEACON_ADDR_MAX];
    (void)state;
    assert_int_equal(pf_beacon_format("printfarm", "10.0.0.5:7500", buf, sizeof(buf), &len, &err),
                     PF_OK);
    assert_int_equal(len, strlen(good));
    assert_memory_equal(buf, good, len);
    /* the longest legal fields still fit in one datagram */
    memset(farm, 'f', PF_BEACON_FARM_MAX);
    farm[PF_BEACON_FARM_MAX] = '\0';
    addr[0] = '[';
    memset(addr + 1, 'a', 253);
    snprintf(addr + 254, sizeof(addr) - 254, "]:65535");
    assert_int_equal(pf_beacon_format(farm, addr, buf, sizeof(buf), &len, &err), PF_OK);
    assert_true(len <= PF_BEACON_MAX_BYTES);
    assert_int_equal(pf_beacon_parse(buf, len, &b, &err), PF_OK);
    assert_string_equal(b.farm, farm);
    assert_string_equal(b.discovery, addr);
}

static void test_format_refuses_what_would_not_parse(void **state)
{
    char buf[PF_BEACON_MAX_BYTES + 1], small[16];
    struct pf_error err;
    size_t len;
    (void)state;
    assert_int_equal(pf_beacon_format("", "h:1", buf, sizeof(buf), &len, &err), PF_E_INVALID);
    assert_int_equal(pf_beacon_format(NULL, "h:1", buf, sizeof(buf), &len, &err), PF_E_INVALID);
    assert_int_equal(pf_beacon_format("a b", "h:1", buf, sizeof(buf), &len, &err), PF_E_INVALID);
    assert_int_equal(pf_beacon_format("f\n", "h:1", buf, sizeof(buf), &len, &err), PF_E_INVALID);
    assert_int_equal(pf_beacon_format("f", "h", buf, sizeof(buf), &len, &err), PF_E_INVALID);
    assert_int_equal(pf_beacon_format("f", "h:0", buf, sizeof(buf), &len, &err), PF_E_INVALID);
    assert_int_equal(pf_beacon_format("f", "h:1\nfarm=x", buf, sizeof(buf), &len, &err),
                     PF_E_INVALID);
    assert_int_equal(pf_beacon_format("f", NULL, buf, sizeof(buf), &len, &err), PF_E_INVALID);
    assert_int_equal(pf_beacon_format("f", "h:1", small, sizeof(small), &len, &err), PF_E_INVALID);
}

static void test_rejects_malformed_beacons(void **state)
{
    char big[PF_BEACON_MAX_BYTES + 64];
    (void)state;
    expect_invalid("", "empty");
    expect_invalid("\n", "not a printfarm beacon");
    expect_invalid("PFBEACON", "not a printfarm beacon");
    expect_invalid("PFBEACON ", "not a printfarm beacon");
    expect_invalid("PFBEACON1\nfarm=f\ndiscovery=h:1", "not a printfarm beacon");
    expect_invalid("pfbeacon 1\nfarm=f\ndiscovery=h:1", "not a printfarm beacon");
    expect_invalid(" PFBEACON 1\nfarm=f\ndiscovery=h:1", "not a printfarm beacon");
    expect_invalid("farm=f\nPFBEACON 1\ndiscovery=h:1", "not a printfarm beacon");
    expect_invalid("PFBEACON x\nfarm=f\ndiscovery=h:1", "not a number");
    expect_invalid("PFBEACON -1\nfarm=f\ndiscovery=h:1", "not a number");
    expect_invalid("PFBEACON 1 \nfarm=f\ndiscovery=h:1", "not a number");
    expect_invalid("PFBEACON 99999999999999999999\nfarm=f\ndiscovery=h:1", "small number");
    expect_invalid("PFBEACON 1\nfarm=f", "no discovery");
    expect_invalid("PFBEACON 1\ndiscovery=h:1", "no farm");
    expect_invalid("PFBEACON 1\nfarm=f\nfarm=g\ndiscovery=h:1", "twice");
    expect_invalid("PFBEACON 1\nfarm=f\ndiscovery=h:1\ndiscovery=h:2", "twice");
    expect_invalid("PFBEACON 1\nfarm=\ndiscovery=h:1", "farm name");
    expect_invalid("PFBEACON 1\nfarm=a b\ndiscovery=h:1", "farm name");
    expect_invalid("PFBEACON 1\nfarm=a/b\ndiscovery=h:1", "farm name");
    expect_invalid("PFBEACON 1\nfarm=f\ndiscovery=", "discovery");
    expect_invalid("PFBEACON 1\nfarm=f\ndiscovery=host", "discovery");
    expect_invalid("PFBEACON 1\nfarm=f\ndiscovery=host:", "discovery");
    expect_invalid("PFBEACON 1\nfarm=f\ndiscovery=host:0", "port 0");
    expect_invalid("PFBEACON 1\nfarm=f\ndiscovery=host:65536", "discovery");
    expect_invalid("PFBEACON 1\nfarm=f\ndiscovery=host:-1", "discovery");
    expect_invalid("PFBEACON 1\nfarm=f\ndiscovery=::1:80", "discovery");
    expect_invalid("PFBEACON 1\nfarm=f\ndiscovery=[::1:80", "discovery");
    expect_invalid("PFBEACON 1\nfarm=f\ndiscovery=:80", "discovery");
    expect_invalid("PFBEACON 1\nfarm=f\ndiscovery=a b:80", "bad character");
    expect_invalid("PFBEACON 1\nfarm=f\r\ndiscovery=h:1", "printable");
    expect_invalid("PFBEACON 1\nfarm=f\ndiscovery=h:1\t", "printable");
    expect_invalid("PFBEACON 1\nfarm=f\n=value\ndiscovery=h:1", "key=value");
    expect_invalid("PFBEACON 1\nfarm=f\njunk\ndiscovery=h:1", "key=value");
    expect_invalid("PFBEACON 1\nfarm=f\nkeykeykeykeykeykeykeykeykeykeykeyk=1\ndiscovery=h:1",
                   "key over");
    expect_invalid("PFBEACON 1\nfarm=ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
                   "fffff\ndiscovery=h:1",
                   "farm name");
    /* an over-long datagram, however well-formed its start */
    snprintf(big, sizeof(big), "%s", good);
    memset(big + strlen(good), 'x', sizeof(big) - strlen(good) - 1);
    big[sizeof(big) - 1] = '\0';
    expect_invalid(big, "over the");
}

static void test_refuses_other_versions(void **state)
{
    struct pf_beacon b;
    struct pf_error err;
    (void)state;
    assert_int_equal(parse("PFBEACON 2\nfarm=f\ndiscovery=h:1\n", &b, &err), PF_E_UNIMPLEMENTED);
    assert_non_null(strstr(err.msg, "version 2"));
    assert_int_equal(parse("PFBEACON 0\nfarm=f\ndiscovery=h:1\n", &b, &err), PF_E_UNIMPLEMENTED);
    assert_int_equal(parse("PFBEACON 01\nfarm=f\ndiscovery=h:1\n", &b, &err), PF_OK);
}

static void test_nul_and_binary_bytes(void **state)
{
    static const char with_nul[] = "PFBEACON 1\nfarm=f\0evil\ndiscovery=h:1\n";
    static const uint8_t binary[] = {0x00, 0xff, 0x10, 0x80, 'P', 'F'};
    struct pf_beacon b;
    struct pf_error err;
    (void)state;
    assert_int_equal(pf_beacon_parse(with_nul, sizeof(with_nul) - 1, &b, &err), PF_E_INVALID);
    assert_non_null(strstr(err.msg, "0x00"));
    assert_int_equal(pf_beacon_parse(binary, sizeof(binary), &b, &err), PF_E_INVALID);
    assert_int_equal(pf_beacon_parse(NULL, 5, &b, &err), PF_E_INVALID);
    assert_int_equal(pf_beacon_parse(good, 0, &b, &err), PF_E_INVALID);
}

/* Every prefix of a valid beacon either fails or (once both fields are
 * complete) parses to the same fields. */
static void test_every_truncation(void **state)
{
    size_t n = strlen(good);
    (void)state;
    for (size_t len = 0; len < n; len++) {
        struct pf_beacon b;
        struct pf_error err;
        char *copy = malloc(len + 1); /* exact size, so ASan sees over-reads */
        memcpy(copy, good, len);
        if (pf_beacon_parse(copy, len, &b, &err) == PF_OK) {
            assert_string_equal(b.farm, "printfarm");
            /* a cut port is still a valid (different) port: only the host is fixed */
            assert_memory_equal(b.discovery, "10.0.0.5:", 9);
        }
        free(copy);
    }
}

/* Every single-byte change either fails or gives a beacon that is fully
 * valid by the rules (never a half-parsed one). */
static void test_every_byte_corruption(void **state)
{
    size_t n = strlen(good);
    static const uint8_t values[] = {0x00, '\n', '=', ' ', ':', 'A', '0', 0x7f, 0x80, 0xff, '['};
    (void)state;
    for (size_t i = 0; i < n; i++) {
        for (size_t v = 0; v < sizeof(values); v++) {
            uint8_t *copy = malloc(n);
            struct pf_beacon b;
            struct pf_error err;
            memcpy(copy, good, n);
            copy[i] = values[v];
            if (pf_beacon_parse(copy, n, &b, &err) == PF_OK) {
                assert_true(pf_beacon_farm_valid(b.farm));
                assert_true(strlen(b.discovery) > 0 && strlen(b.discovery) < PF_BEACON_ADDR_MAX);
                assert_int_equal(b.version, 1);
            } else {
                assert_true(err.msg[0] != '\0');
            }
            free(copy);
        }
    }
}

/* Random datagrams: no crash, no silent acceptance of junk (random bytes
 * essentially never form a valid beacon; if one does, it must be valid). */
static void test_random_datagrams(void **state)
{
    uint32_t seed = 12345;
    (void)state;
    for (int round = 0; round < 20000; round++) {
        size_t len;
        uint8_t *buf;
        struct pf_beacon b;
        struct pf_error err;
        seed = seed * 1103515245u + 12345u;
        len = (seed >> 8) % (PF_BEACON_MAX_BYTES + 40);
        buf = malloc(len + 1);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            /* half the rounds start like a beacon to reach deeper branches */
            buf[i] = (uint8_t)(seed >> 16);
        }
        if (round % 2 == 0 && len > sizeof("PFBEACON 1\n"))
            memcpy(buf, "PFBEACON 1\n", sizeof("PFBEACON 1\n") - 1);
        if (pf_beacon_parse(buf, len, &b, &err) == PF_OK) {
            assert_true(pf_beacon_farm_valid(b.farm));
            assert_true(b.discovery[0] != '\0');
        }
        free(buf);
    }
}

static void test_farm_names(void **state)
{
    char longest[PF_BEACON_FARM_MAX + 2];
    (void)state;
    assert_true(pf_beacon_farm_valid("printfarm"));
    assert_true(pf_beacon_farm_valid("Lab-2.west_A"));
    assert_false(pf_beacon_farm_valid(""));
    assert_false(pf_beacon_farm_valid(NULL));
    assert_false(pf_beacon_farm_valid("a b"));
    assert_false(pf_beacon_farm_valid("caf\xc3\xa9"));
    memset(longest, 'x', sizeof(longest));
    longest[PF_BEACON_FARM_MAX] = '\0';
    assert_true(pf_beacon_farm_valid(longest));
    longest[PF_BEACON_FARM_MAX] = 'x';
    longest[PF_BEACON_FARM_MAX + 1] = '\0';
    assert_false(pf_beacon_farm_valid(longest));
}

static void test_dial_address(void **state)
{
    struct pf_beacon b;
    struct pf_error err;
    char out[PF_BEACON_ADDR_MAX];
    (void)state;
    assert_int_equal(parse("PFBEACON 1\nfarm=f\ndiscovery=0.0.0.0:7500\n", &b, &err), PF_OK);
    pf_beacon_dial_address(&b, "192.168.1.20", out, sizeof(out));
    assert_string_equal(out, "192.168.1.20:7500");
    pf_beacon_dial_address(&b, NULL, out, sizeof(out));
    assert_string_equal(out, "0.0.0.0:7500");
    assert_int_equal(parse("PFBEACON 1\nfarm=f\ndiscovery=[::]:7501\n", &b, &err), PF_OK);
    pf_beacon_dial_address(&b, "10.1.1.1", out, sizeof(out));
    assert_string_equal(out, "10.1.1.1:7501");
    assert_int_equal(parse("PFBEACON 1\nfarm=f\ndiscovery=farm-host:7500\n", &b, &err), PF_OK);
    pf_beacon_dial_address(&b, "10.1.1.1", out, sizeof(out));
    assert_string_equal(out, "farm-host:7500");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parses_a_good_beacon),
        cmocka_unit_test(test_format_round_trips),
        cmocka_unit_test(test_format_refuses_what_would_not_parse),
        cmocka_unit_test(test_rejects_malformed_beacons),
        cmocka_unit_test(test_refuses_other_versions),
        cmocka_unit_test(test_nul_and_binary_bytes),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_every_byte_corruption),
        cmocka_unit_test(test_random_datagrams),
        cmocka_unit_test(test_farm_names),
        cmocka_unit_test(test_dial_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
