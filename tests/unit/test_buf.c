/* Unit tests for lib/buf.c: growth, NUL termination, the hard maximum (a
 * refused append or printf leaves the buffer byte-for-byte unchanged), reset,
 * detach and release, including binary data and absurd lengths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "buf.h"

static void test_init_is_empty(void **state)
{
    struct pf_buf b;
    pf_buf_init(&b, 100);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.max, 100);
    pf_buf_release(&b);
    pf_buf_release(&b); /* twice is harmless */
}

static void test_append_grows_and_terminates(void **state)
{
    struct pf_buf b;
    pf_buf_init(&b, 0);
    char expect[5000];
    for (size_t i = 0; i < 1000; i++) {
        assert_int_equal(pf_buf_append(&b, "abcde", 5), PF_OK);
        memcpy(expect + i * 5, "abcde", 5);
        assert_int_equal(b.len, (i + 1) * 5);
        assert_true(b.cap > b.len);
        assert_int_equal(b.data[b.len], '\0');
    }
    assert_memory_equal(b.data, expect, 5000);
    /* doubling from 64: the capacity is a power of two */
    assert_int_equal(b.cap & (b.cap - 1), 0);
    pf_buf_release(&b);
    assert_null(b.data);
}

static void test_append_empty_allocates_string(void **state)
{
    struct pf_buf b;
    pf_buf_init(&b, 0);
    assert_int_equal(pf_buf_append(&b, NULL, 0), PF_OK);
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    pf_buf_release(&b);
}

static void test_binary_data(void **state)
{
    struct pf_buf b;
    pf_buf_init(&b, 0);
    const char bin[] = {'a', '\0', 'b', '\xff', '\0'};
    assert_int_equal(pf_buf_append(&b, bin, sizeof bin), PF_OK);
    assert_int_equal(b.len, sizeof bin);
    assert_memory_equal(b.data, bin, sizeof bin);
    assert_int_equal(b.data[sizeof bin], '\0');
    pf_buf_release(&b);
}

static void test_printf(void **state)
{
    struct pf_buf b;
    pf_buf_init(&b, 0);
    assert_int_equal(pf_buf_printf(&b, "%s=%d", "port", 7400), PF_OK);
    assert_string_equal(b.data, "port=7400");
    /* longer than the first allocation */
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(pf_buf_printf(&b, " %s", big), PF_OK);
    assert_int_equal(b.len, 9 + 1 + 299);
    assert_int_equal(strlen(b.data), b.len);
    assert_int_equal(pf_buf_printf(&b, "%s", ""), PF_OK);
    assert_int_equal(b.len, 309);
    pf_buf_release(&b);
}

static void test_max_exact_fit(void **state)
{
    struct pf_buf b;
    pf_buf_init(&b, 10);
    assert_int_equal(pf_buf_append(&b, "0123456789", 10), PF_OK);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    /* the allocation never exceeds max + 1 */
    assert_true(b.cap <= 11);
    assert_int_equal(pf_buf_append(&b, "", 0), PF_OK);
    assert_int_equal(pf_buf_append(&b, "x", 1), PF_E_RESOURCE);
    assert_string_equal(b.data, "0123456789");
    pf_buf_release(&b);
}

static void test_max_refusal_leaves_buffer_unchanged(void **state)
{
    struct pf_buf b;
    pf_buf_init(&b, 100);
    assert_int_equal(pf_buf_append(&b, "hello", 5), PF_OK);
    char *data = b.data;
    size_t cap = b.cap;
    char big[200];
    memset(big, 'y', sizeof big);
    assert_int_equal(pf_buf_append(&b, big, 96), PF_E_RESOURCE);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.len, 5);
    assert_int_equal(b.cap, cap);
    assert_string_equal(b.data, "hello");
    assert_int_equal(pf_buf_append(&b, big, 95), PF_OK);
    assert_int_equal(b.len, 100);
    pf_buf_release(&b);
}

static void test_printf_refusal_leaves_buffer_unchanged(void **state)
{
    struct pf_buf b;
    pf_buf_init(&b, 16);
    assert_int_equal(pf_buf_printf(&b, "%s", "abc"), PF_OK);
    assert_int_equal(pf_buf_printf(&b, "%020d", 5), PF_E_RESOURCE);
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "abc");
    assert_int_equal(pf_buf_printf(&b, "%013d", 5), PF_OK);
    assert_int_equal(b.len, 16);
    assert_int_equal(pf_buf_printf(&b, "%s", "z"), PF_E_RESOURCE);
    assert_int_equal(b.len, 16);
    assert_int_equal(b.data[16], '\0');
    pf_buf_release(&b);
}

static void test_absurd_length_refused(void **state)
{
    struct pf_buf b;
    pf_buf_init(&b, 0);
    assert_int_equal(pf_buf_append(&b, "ab", 2), PF_OK);
    /* the length is checked before the pointer is ever read */
    assert_int_equal(pf_buf_append(&b, "x", SIZE_MAX), PF_E_RESOURCE);
    assert_int_equal(pf_buf_append(&b, "x", SIZE_MAX - 2), PF_E_RESOURCE);
    assert_int_equal(b.len, 2);
    assert_string_equal(b.data, "ab");
    pf_buf_release(&b);
}

static void test_reset_keeps_memory(void **state)
{
    struct pf_buf b;
    pf_buf_init(&b, 0);
    pf_buf_reset(&b); /* on an empty buffer too */
    assert_int_equal(pf_buf_append(&b, "some text", 9), PF_OK);
    char *data = b.data;
    size_t cap = b.cap;
    pf_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    assert_string_equal(b.data, "");
    assert_int_equal(pf_buf_append(&b, "new", 3), PF_OK);
    assert_string_equal(b.data, "new");
    pf_buf_release(&b);
}

static void test_detach(void **state)
{
    struct pf_buf b;
    pf_buf_init(&b, 50);
    assert_int_equal(pf_buf_printf(&b, "digest=%s", "ab12"), PF_OK);
    size_t len = 0;
    char *text = pf_buf_detach(&b, &len);
    assert_string_equal(text, "digest=ab12");
    assert_int_equal(len, 11);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.max, 50);
    free(text);
    /* the buffer is usable again, and max still applies */
    assert_int_equal(pf_buf_append(&b, "x", 1), PF_OK);
    char big[60] = {0};
    assert_int_equal(pf_buf_append(&b, big, 50), PF_E_RESOURCE);
    pf_buf_release(&b);
}

static void test_detach_empty(void **state)
{
    struct pf_buf b;
    pf_buf_init(&b, 0);
    size_t len = 99;
    char *text = pf_buf_detach(&b, &len);
    assert_non_null(text);
    assert_string_equal(text, "");
    assert_int_equal(len, 0);
    free(text);
    text = pf_buf_detach(&b, NULL);
    assert_non_null(text);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_is_empty),
        cmocka_unit_test(test_append_grows_and_terminates),
        cmocka_unit_test(test_append_empty_allocates_string),
        cmocka_unit_test(test_binary_data),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_max_exact_fit),
        cmocka_unit_test(test_max_refusal_leaves_buffer_unchanged),
        cmocka_unit_test(test_printf_refusal_leaves_buffer_unchanged),
        cmocka_unit_test(test_absurd_length_refused),
        cmocka_unit_test(test_reset_keeps_memory),
        cmocka_unit_test(test_detach),
        cmocka_unit_test(test_detach_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
