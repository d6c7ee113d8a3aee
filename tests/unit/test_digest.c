/* Unit tests for lib/digest.c: the FIPS 180-2 SHA-256 vectors, streaming equal
 * to one-shot at every split, handle reuse, the hex form, and the strict hex
 * parser against short, long, empty, non-hex and binary input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "digest.h"

#define EMPTY_HEX     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define ABC_HEX       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define TWO_BLOCK_HEX "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
#define MILLION_A_HEX "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"

static void assert_digest_hex(const struct pf_digest *d, const char *want)
{
    char hex[PF_DIGEST_HEX_LEN + 1];
    pf_digest_to_hex(d, hex);
    assert_string_equal(hex, want);
}

static void test_known_vectors(void **state)
{
    struct pf_digest d;
    pf_sha256("", 0, &d);
    assert_digest_hex(&d, EMPTY_HEX);
    pf_sha256(NULL, 0, &d);
    assert_digest_hex(&d, EMPTY_HEX);
    pf_sha256("abc", 3, &d);
    assert_digest_hex(&d, ABC_HEX);
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    pf_sha256(two, strlen(two), &d);
    assert_digest_hex(&d, TWO_BLOCK_HEX);
}

static void test_million_a_streaming(void **state)
{
    struct pf_sha256 *h = pf_sha256_create();
    assert_non_null(h);
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    for (int i = 0; i < 1000; i++)
        pf_sha256_update(h, chunk, sizeof chunk);
    struct pf_digest d;
    pf_sha256_final(h, &d);
    assert_digest_hex(&d, MILLION_A_HEX);
    pf_sha256_destroy(h);
}

static void test_streaming_equals_one_shot(void **state)
{
    unsigned char data[777];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 131 + 7);
    struct pf_digest want;
    pf_sha256(data, sizeof data, &want);

    struct pf_sha256 *h = pf_sha256_create();
    assert_non_null(h);
    /* every split point, and zero-length updates in between */
    for (size_t split = 0; split <= sizeof data; split += 37) {
        pf_sha256_update(h, data, split);
        pf_sha256_update(h, NULL, 0);
        pf_sha256_update(h, data + split, sizeof data - split);
        struct pf_digest got;
        pf_sha256_final(h, &got);
        assert_true(pf_digest_equal(&got, &want));
        pf_sha256_reset(h);
    }
    /* byte by byte */
    for (size_t i = 0; i < sizeof data; i++)
        pf_sha256_update(h, data + i, 1);
    struct pf_digest got;
    pf_sha256_final(h, &got);
    assert_true(pf_digest_equal(&got, &want));
    pf_sha256_destroy(h);
}

static void test_reset_discards_input(void **state)
{
    struct pf_sha256 *h = pf_sha256_create();
    assert_non_null(h);
    pf_sha256_update(h, "garbage", 7);
    pf_sha256_reset(h);
    pf_sha256_update(h, "abc", 3);
    struct pf_digest d;
    pf_sha256_final(h, &d);
    assert_digest_hex(&d, ABC_HEX);
    pf_sha256_destroy(h);
    pf_sha256_destroy(NULL);
}

static void test_hex_round_trip_and_case(void **state)
{
    struct pf_digest d, back;
    struct pf_error err;
    pf_sha256("abc", 3, &d);
    char hex[PF_DIGEST_HEX_LEN + 1];
    pf_digest_to_hex(&d, hex);
    assert_int_equal(strlen(hex), PF_DIGEST_HEX_LEN);
    assert_int_equal(pf_digest_from_hex(hex, strlen(hex), &back, &err), PF_OK);
    assert_true(pf_digest_equal(&d, &back));

    char upper[PF_DIGEST_HEX_LEN + 1];
    for (size_t i = 0; i <= PF_DIGEST_HEX_LEN; i++)
        upper[i] = (char)(hex[i] >= 'a' && hex[i] <= 'f' ? hex[i] - 32 : hex[i]);
    memset(&back, 0, sizeof back);
    assert_int_equal(pf_digest_from_hex(upper, PF_DIGEST_HEX_LEN, &back, NULL), PF_OK);
    assert_true(pf_digest_equal(&d, &back));
    /* output is always lower-case */
    char again[PF_DIGEST_HEX_LEN + 1];
    pf_digest_to_hex(&back, again);
    assert_string_equal(again, ABC_HEX);
}

static void test_equal(void **state)
{
    struct pf_digest a, b;
    pf_sha256("abc", 3, &a);
    pf_sha256("abd", 3, &b);
    assert_true(pf_digest_equal(&a, &a));
    assert_false(pf_digest_equal(&a, &b));
    b = a;
    b.bytes[PF_DIGEST_LEN - 1] ^= 1;
    assert_false(pf_digest_equal(&a, &b));
}

/* Expects text to be refused with a message containing `want`, and out kept. */
static void assert_bad_hex(const char *text, size_t len, const char *want)
{
    struct pf_digest out;
    memset(&out, 0x5a, sizeof out);
    struct pf_error err;
    pf_error_clear(&err);
    assert_int_equal(pf_digest_from_hex(text, len, &out, &err), PF_E_INVALID);
    assert_int_equal(err.code, PF_E_INVALID);
    if (strstr(err.msg, want) == NULL)
        fail_msg("message '%s' lacks '%s'", err.msg, want);
    for (size_t i = 0; i < PF_DIGEST_LEN; i++)
        assert_int_equal(out.bytes[i], 0x5a);
    /* without an error struct too */
    assert_int_equal(pf_digest_from_hex(text, len, &out, NULL), PF_E_INVALID);
}

static void test_malformed_hex(void **state)
{
    const char *good = ABC_HEX;
    assert_bad_hex("", 0, "invalid digest '': expected 64 hex characters, got 0");
    assert_bad_hex(good, 63, "expected 64 hex characters, got 63");
    char long_hex[70];
    snprintf(long_hex, sizeof long_hex, "%s0", good);
    assert_bad_hex(long_hex, 65, "got 65");
    assert_bad_hex("abc", 3, "invalid digest 'abc'");
    /* the quoted prefix is cut and marked */
    assert_bad_hex(good, 63, "invalid digest 'ba7816bf8f01cfea...'");

    char bad[PF_DIGEST_HEX_LEN + 1];
    memcpy(bad, good, sizeof bad);
    bad[10] = 'g';
    assert_bad_hex(bad, 64, "character 11 is not a hex digit");
    memcpy(bad, good, sizeof bad);
    bad[63] = 'G';
    assert_bad_hex(bad, 64, "character 64 is not a hex digit");
    memcpy(bad, good, sizeof bad);
    bad[0] = ' ';
    assert_bad_hex(bad, 64, "character 1 is not a hex digit");
    memcpy(bad, good, sizeof bad);
    bad[31] = '\0'; /* an embedded NUL is not hex either */
    assert_bad_hex(bad, 64, "character 32 is not a hex digit");
    memcpy(bad, good, sizeof bad);
    bad[5] = '\xc3';
    assert_bad_hex(bad, 64, "character 6 is not a hex digit");
    /* "0x" prefix makes it both too long and non-hex */
    char prefixed[70];
    snprintf(prefixed, sizeof prefixed, "0x%s", good);
    assert_bad_hex(prefixed, 66, "got 66");
    snprintf(prefixed, sizeof prefixed, "0x%.62s", good);
    assert_bad_hex(prefixed, 64, "character 2 is not a hex digit");
}

static void test_malformed_hex_message_is_printable(void **state)
{
    const char text[] = "\n\x01'zz";
    struct pf_digest out;
    struct pf_error err;
    assert_int_equal(pf_digest_from_hex(text, sizeof text - 1, &out, &err), PF_E_INVALID);
    assert_string_equal(err.msg, "invalid digest '???zz': expected 64 hex characters, got 5");
}

static void test_null_hex(void **state)
{
    struct pf_digest out;
    struct pf_error err;
    assert_int_equal(pf_digest_from_hex(NULL, 0, &out, &err), PF_E_INVALID);
    assert_string_equal(err.msg, "missing digest: expected 64 hex characters");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_vectors),
        cmocka_unit_test(test_million_a_streaming),
        cmocka_unit_test(test_streaming_equals_one_shot),
        cmocka_unit_test(test_reset_discards_input),
        cmocka_unit_test(test_hex_round_trip_and_case),
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_malformed_hex),
        cmocka_unit_test(test_malformed_hex_message_is_printable),
        cmocka_unit_test(test_null_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
