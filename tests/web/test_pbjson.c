/* Unit tests of services/web/pbjson.c: JSON strings (escaping, invalid
 * UTF-8), enum names, and protobuf messages rendered through descriptors
 * (oneofs, repeated and nested fields, non-finite numbers, size limits). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "pbjson.h"
#include "printfarm/v1/scheduler.pb-c.h"

static char *json_of(const char *text)
{
    static struct pf_buf b;
    pf_buf_release(&b);
    pf_buf_init(&b, 0);
    assert_int_equal(pf_web_json_string(&b, text), PF_OK);
    return b.data;
}

static void test_strings(void **state)
{
    assert_string_equal(json_of("plain"), "\"plain\"");
    assert_string_equal(json_of(NULL), "\"\"");
    assert_string_equal(json_of("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_string_equal(json_of("line\nfeed\t\x01"), "\"line\\u000afeed\\u0009\\u0001\"");
    assert_string_equal(json_of("<script>"), "\"\\u003cscript>\"");
    assert_string_equal(json_of("caf\xc3\xa9 \xe2\x82\xac"), "\"caf\xc3\xa9 \xe2\x82\xac\"");
    /* invalid UTF-8: a lone continuation byte, an overlong lead, a cut sequence */
    assert_string_equal(json_of("a\x80z"), "\"a\\ufffdz\"");
    assert_string_equal(json_of("\xc0\xafz"), "\"\\ufffd\\ufffdz\"");
    assert_string_equal(json_of("x\xe2\x82"), "\"x\\ufffd\\ufffd\"");
    assert_string_equal(json_of("\xf5\x80\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
}

static void test_enum_names(void **state)
{
    char name[64];
    pf_web_json_enum_name(&printfarm__v1__printer_state__descriptor,
                          PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_AWAITING_CLEAR, name,
                          sizeof name);
    assert_string_equal(name, "awaiting_clear");
    pf_web_json_enum_name(&printfarm__v1__event_kind__descriptor,
                          PRINTFARM__V1__EVENT_KIND__EVENT_KIND_ATTEMPT_STARTED, name, sizeof name);
    assert_string_equal(name, "attempt_started");
    pf_web_json_enum_name(&printfarm__v1__printer_state__descriptor, 999, name, sizeof name);
    assert_string_equal(name, "999");
    pf_web_json_enum_name(&printfarm__v1__job_state__descriptor,
                          PRINTFARM__V1__JOB_STATE__JOB_STATE_CANCELLED, name, 4);
    assert_string_equal(name, "can");
}

static void test_message(void **state)
{
    Printfarm__V1__Printer p = PRINTFARM__V1__PRINTER__INIT;
    Printfarm__V1__Temperature t = PRINTFARM__V1__TEMPERATURE__INIT, *tp[1] = {&t};
    p.id = "mk4-01";
    p.state = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING;
    p.progress = 0.5f;
    p.last_seen_unix_ms = 1795825177815;
    t.sensor = "bed";
    t.actual = NAN;
    t.target = 60;
    p.n_temperatures = 1;
    p.temperatures = tp;
    struct pf_buf b;
    pf_buf_init(&b, 0);
    assert_int_equal(pf_web_json_message(&b, &p.base), PF_OK);
    assert_non_null(strstr(b.data, "\"id\":\"mk4-01\""));
    assert_non_null(strstr(b.data, "\"state\":\"printing\""));
    assert_non_null(strstr(b.data, "\"progress\":0.5"));
    assert_non_null(strstr(b.data, "\"last_seen_unix_ms\":1795825177815"));
    assert_non_null(strstr(b.data, "\"temperatures\":[{\"sensor\":\"bed\",\"actual\":null,"
                                   "\"target\":60}]"));
    assert_non_null(strstr(b.data, "\"labels\":[]"));
    assert_non_null(strstr(b.data, "\"capabilities\":null"));
    assert_int_equal(b.data[0], '{');
    assert_int_equal(b.data[b.len - 1], '}');
    pf_buf_release(&b);
}

static void test_oneof(void **state)
{
    Printfarm__V1__UpdateJobRequest r = PRINTFARM__V1__UPDATE_JOB_REQUEST__INIT;
    r.id = "j-1";
    struct pf_buf b;
    pf_buf_init(&b, 0);
    assert_int_equal(pf_web_json_message(&b, &r.base), PF_OK);
    assert_string_equal(b.data, "{\"id\":\"j-1\"}");
    pf_buf_reset(&b);
    r.set_priority_case = PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_PRIORITY_PRIORITY;
    r.priority = -3;
    r.set_hold_case = PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_HOLD_HOLD;
    r.hold = 0;
    assert_int_equal(pf_web_json_message(&b, &r.base), PF_OK);
    assert_string_equal(b.data, "{\"id\":\"j-1\",\"priority\":-3,\"hold\":false}");
    pf_buf_reset(&b);
    assert_int_equal(pf_web_json_message(&b, NULL), PF_OK);
    assert_string_equal(b.data, "null");
    pf_buf_release(&b);
}

static void test_limit(void **state)
{
    Printfarm__V1__Event e = PRINTFARM__V1__EVENT__INIT;
    char text[200];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    e.text = text;
    struct pf_buf b;
    pf_buf_init(&b, 64);
    assert_int_equal(pf_web_json_message(&b, &e.base), PF_E_RESOURCE);
    assert_true(b.len <= 64);
    pf_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings), cmocka_unit_test(test_enum_names),
        cmocka_unit_test(test_message), cmocka_unit_test(test_oneof),
        cmocka_unit_test(test_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
