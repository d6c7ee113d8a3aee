/* Unit tests for services/discovery/validate.c, pf-discovery's pure rules:
 * what a registration may contain (with the field named in every refusal),
 * TTLs, lease ids, member names, Resolve roles, label filters, the leader
 * lease's value and stream id order. Adversarial cases: empty, over-long,
 * control bytes, wrong charsets, boundary lengths, malformed leases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "validate.h"

#define KIND(x) PRINTFARM__V1__INSTANCE_KIND__INSTANCE_KIND_##x

struct fixture {
    Printfarm__V1__Instance inst;
    Printfarm__V1__Label labels[40];
    Printfarm__V1__Label *ptrs[40];
};

static void make(struct fixture *f, int kind, const char *id, const char *address)
{
    printfarm__v1__instance__init(&f->inst);
    f->inst.kind = (Printfarm__V1__InstanceKind)kind;
    f->inst.id = (char *)id;
    f->inst.address = (char *)address;
    f->inst.version = (char *)"1.0";
    f->inst.labels = f->ptrs;
    f->inst.n_labels = 0;
}

static void add_label(struct fixture *f, const char *key, const char *value)
{
    size_t i = f->inst.n_labels++;
    printfarm__v1__label__init(&f->labels[i]);
    f->labels[i].key = (char *)key;
    f->labels[i].value = (char *)value;
    f->ptrs[i] = &f->labels[i];
}

static void expect_invalid(struct fixture *f, const char *field)
{
    struct pf_error err;
    enum pf_status rc = pf_disc_validate_instance(&f->inst, NULL, &err);
    if (rc != PF_E_INVALID)
        fail_msg("accepted (rc %d) id='%s' address='%s'", rc, f->inst.id, f->inst.address);
    if (strstr(err.msg, field) == NULL)
        fail_msg("message \"%s\" does not name \"%s\"", err.msg, field);
}

static void test_valid_instances(void **state)
{
    struct fixture f;
    enum pf_disc_probe_mode mode;
    struct pf_error err;
    char id64[65];
    (void)state;
    make(&f, KIND(FILES), "files-1", "127.0.0.1:7300");
    assert_int_equal(pf_disc_validate_instance(&f.inst, &mode, &err), PF_OK);
    assert_int_equal(mode, PF_DISC_PROBE_GRPC);
    make(&f, KIND(AGENT), "printer_7.a-B", "[::1]:9500");
    add_label(&f, "probe", "http");
    add_label(&f, "zone/room", "lab 2 (north)");
    add_label(&f, "empty", "");
    assert_int_equal(pf_disc_validate_instance(&f.inst, &mode, &err), PF_OK);
    assert_int_equal(mode, PF_DISC_PROBE_HTTP);
    memset(id64, 'x', 64);
    id64[64] = '\0';
    make(&f, KIND(WEB), id64, "farm.example.com:443");
    add_label(&f, "probe", "off");
    assert_int_equal(pf_disc_validate_instance(&f.inst, &mode, &err), PF_OK);
    assert_int_equal(mode, PF_DISC_PROBE_OFF);
    make(&f, KIND(SCHEDULER), "s", "h:65535");
    f.inst.version = (char *)"";
    for (int i = 0; i < PF_DISC_LABELS_MAX; i++) {
        static char keys[PF_DISC_LABELS_MAX][8];
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        add_label(&f, keys[i], "v");
    }
    assert_int_equal(pf_disc_validate_instance(&f.inst, NULL, &err), PF_OK);
}

static void test_invalid_kind_and_id(void **state)
{
    struct fixture f;
    char id65[66];
    (void)state;
    assert_int_equal(pf_disc_validate_instance(NULL, NULL, &(struct pf_error){0}), PF_E_INVALID);
    make(&f, 0, "a", "h:1");
    expect_invalid(&f, "instance.kind is required");
    make(&f, 6, "a", "h:1");
    expect_invalid(&f, "instance.kind 6");
    make(&f, -1, "a", "h:1");
    expect_invalid(&f, "instance.kind");
    make(&f, KIND(FILES), "", "h:1");
    expect_invalid(&f, "instance.id is required");
    memset(id65, 'x', 65);
    id65[65] = '\0';
    make(&f, KIND(FILES), id65, "h:1");
    expect_invalid(&f, "instance.id is 65 bytes");
    const char *bad_ids[] = {"a b", "a/b", "a:b", "a\nb", "caf\xc3\xa9", "a*", "..\x01", "a=b"};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        make(&f, KIND(FILES), bad_ids[i], "h:1");
        expect_invalid(&f, "instance.id");
    }
}

static void test_invalid_addresses(void **state)
{
    struct fixture f;
    char huge[400];
    (void)state;
    const char *bad[] = {"",         "host",      "host:",  ":7300",
                         "h:0",      "h:65536",   "h:-1",   "h:7x",
                         "::1:7300", "[::1]7300", "[::1",   "a b:1",
                         "h\n:1",    "0.0.0.0:1", "[::]:1", "h:99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        make(&f, KIND(FILES), "a", bad[i]);
        expect_invalid(&f, "instance.address");
    }
    memset(huge, 'h', sizeof(huge));
    snprintf(huge + sizeof(huge) - 4, 4, ":1");
    make(&f, KIND(FILES), "a", huge);
    expect_invalid(&f, "instance.address");
}

static void test_invalid_labels_and_version(void **state)
{
    struct fixture f;
    char value257[258], key65[66], version65[66];
    (void)state;
    memset(value257, 'v', 257);
    value257[257] = '\0';
    memset(key65, 'k', 65);
    key65[65] = '\0';
    memset(version65, '1', 65);
    version65[65] = '\0';

    make(&f, KIND(FILES), "a", "h:1");
    add_label(&f, "k", value257);
    expect_invalid(&f, "instance.labels[0].value ('k') is 257 bytes");
    make(&f, KIND(FILES), "a", "h:1");
    add_label(&f, "ok", "v");
    add_label(&f, key65, "v");
    expect_invalid(&f, "instance.labels[1].key is 65 bytes");
    make(&f, KIND(FILES), "a", "h:1");
    add_label(&f, "", "v");
    expect_invalid(&f, "instance.labels[0].key is required");
    make(&f, KIND(FILES), "a", "h:1");
    add_label(&f, "a b", "v");
    expect_invalid(&f, "instance.labels[0].key has ' '");
    make(&f, KIND(FILES), "a", "h:1");
    add_label(&f, "k", "line\nbreak");
    expect_invalid(&f, "control character");
    make(&f, KIND(FILES), "a", "h:1");
    add_label(&f, "k", "x");
    add_label(&f, "k", "y");
    expect_invalid(&f, "repeats labels[0]");
    make(&f, KIND(FILES), "a", "h:1");
    add_label(&f, "probe", "ping");
    expect_invalid(&f, "probe='ping'");
    make(&f, KIND(FILES), "a", "h:1");
    for (int i = 0; i < 33; i++) {
        static char keys[33][8];
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        add_label(&f, keys[i], "v");
    }
    expect_invalid(&f, "instance.labels has 33 labels");
    make(&f, KIND(FILES), "a", "h:1");
    f.inst.version = version65;
    expect_invalid(&f, "instance.version is 65 bytes");
    make(&f, KIND(FILES), "a", "h:1");
    f.inst.version = (char *)"1.0\x7f";
    expect_invalid(&f, "instance.version");
}

static void test_ttl(void **state)
{
    uint32_t t = 0;
    struct pf_error err;
    (void)state;
    assert_int_equal(pf_disc_ttl(0, &t, &err), PF_OK);
    assert_int_equal(t, PF_DISC_TTL_DEFAULT_S);
    assert_int_equal(pf_disc_ttl(1, &t, &err), PF_OK);
    assert_int_equal(t, 1);
    assert_int_equal(pf_disc_ttl(3600, &t, &err), PF_OK);
    assert_int_equal(pf_disc_ttl(3601, &t, &err), PF_E_INVALID);
    assert_non_null(strstr(err.msg, "ttl_seconds 3601"));
    assert_int_equal(pf_disc_ttl(UINT32_MAX, &t, &err), PF_E_INVALID);
}

static void test_leases_and_members(void **state)
{
    char lease[PF_DISC_LEASE_MAX], member[PF_DISC_MEMBER_MAX], id[PF_DISC_ID_MAX + 1];
    struct pf_error err;
    int kind = 0;
    (void)state;
    pf_disc_lease_format(KIND(AGENT), "printer-1", "0123456789abcdef", lease, sizeof(lease));
    assert_string_equal(lease, "agent/printer-1/0123456789abcdef");
    assert_int_equal(pf_disc_lease_parse(lease, member, sizeof(member), &err), PF_OK);
    assert_string_equal(member, "agent:printer-1");
    assert_true(pf_disc_member_parse(member, strlen(member), &kind, id, sizeof(id)));
    assert_int_equal(kind, KIND(AGENT));
    assert_string_equal(id, "printer-1");

    assert_int_equal(pf_disc_lease_parse("", member, sizeof(member), &err), PF_E_INVALID);
    assert_non_null(strstr(err.msg, "lease_id is required"));
    assert_int_equal(pf_disc_lease_parse(NULL, member, sizeof(member), &err), PF_E_INVALID);
    const char *bad[] = {"agent",
                         "agent/p",
                         "agent/p/",
                         "agent//0123456789abcdef",
                         "/p/0123456789abcdef",
                         "robot/p/0123456789abcdef",
                         "agent/p q/0123456789abcdef",
                         "agent/p/0123456789abcde",
                         "agent/p/0123456789abcdef0",
                         "agent/p/0123456789ABCDEF",
                         "agent/p/0123456789abcdeg",
                         "agent/p/x/0123456789abcdef",
                         "agent/p/0123456789abcdef\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (pf_disc_lease_parse(bad[i], member, sizeof(member), &err) != PF_E_INVALID)
            fail_msg("accepted lease '%s'", bad[i]);
        assert_non_null(strstr(err.msg, "not a lease"));
    }
    assert_false(pf_disc_member_parse("agent", 5, &kind, id, sizeof(id)));
    assert_false(pf_disc_member_parse("agent:", 6, &kind, id, sizeof(id)));
    assert_false(pf_disc_member_parse("robot:x", 7, &kind, id, sizeof(id)));
    assert_false(pf_disc_member_parse("agent:a b", 9, &kind, id, sizeof(id)));
    assert_true(pf_disc_member_parse("files:f", 7, &kind, id, sizeof(id)));
    assert_int_equal(kind, KIND(FILES));
}

static void test_roles(void **state)
{
    struct pf_disc_role r;
    struct pf_error err;
    (void)state;
    assert_int_equal(pf_disc_role_parse("scheduler-leader", &r, &err), PF_OK);
    assert_int_equal(r.type, PF_DISC_ROLE_LEADER);
    assert_int_equal(pf_disc_role_parse("files", &r, &err), PF_OK);
    assert_int_equal(r.type, PF_DISC_ROLE_KIND);
    assert_int_equal(r.kind, KIND(FILES));
    assert_int_equal(pf_disc_role_parse("discovery", &r, &err), PF_OK);
    assert_int_equal(r.kind, KIND(DISCOVERY));
    assert_int_equal(pf_disc_role_parse("agent/p-1", &r, &err), PF_OK);
    assert_int_equal(r.type, PF_DISC_ROLE_AGENT);
    assert_string_equal(r.id, "p-1");
    const char *bad[] = {"",
                         "agent",
                         "agent/",
                         "agent/a b",
                         "Files",
                         "files ",
                         "leader",
                         "scheduler-leader\n",
                         "agent/../x/y"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (pf_disc_role_parse(bad[i], &r, &err) != PF_E_INVALID)
            fail_msg("accepted role '%s'", bad[i]);
    }
    assert_int_equal(pf_disc_role_parse(NULL, &r, &err), PF_E_INVALID);
}

static void test_label_filters(void **state)
{
    struct fixture f;
    Printfarm__V1__Label w1 = PRINTFARM__V1__LABEL__INIT, w2 = PRINTFARM__V1__LABEL__INIT;
    Printfarm__V1__Label *want[2] = {&w1, &w2};
    struct pf_error err;
    (void)state;
    make(&f, KIND(FILES), "a", "h:1");
    add_label(&f, "zone", "a");
    add_label(&f, "role", "leader");
    assert_true(pf_disc_labels_match(&f.inst, want, 0));
    w1.key = (char *)"zone";
    w1.value = (char *)"a";
    assert_true(pf_disc_labels_match(&f.inst, want, 1));
    w1.value = (char *)"";
    assert_true(pf_disc_labels_match(&f.inst, want, 1));
    w1.value = (char *)"b";
    assert_false(pf_disc_labels_match(&f.inst, want, 1));
    w1.value = (char *)"a";
    w2.key = (char *)"missing";
    assert_false(pf_disc_labels_match(&f.inst, want, 2));
    assert_int_equal(pf_disc_validate_filter(want, 2, &err), PF_OK);
    w2.key = (char *)"";
    assert_int_equal(pf_disc_validate_filter(want, 2, &err), PF_E_INVALID);
}

static void test_misc(void **state)
{
    char out[64];
    (void)state;
    assert_true(pf_disc_leader_address("10.0.0.1:7400|10.0.0.1:7400|123-abc", out, sizeof(out)));
    assert_string_equal(out, "10.0.0.1:7400");
    assert_true(pf_disc_leader_address("h:1", out, sizeof(out)));
    assert_string_equal(out, "h:1");
    assert_false(pf_disc_leader_address("|x", out, sizeof(out)));
    assert_false(pf_disc_leader_address("", out, sizeof(out)));
    assert_false(pf_disc_leader_address(NULL, out, sizeof(out)));
    assert_false(pf_disc_leader_address("hhhhhhhhhh:1", out, 4));

    assert_true(pf_disc_stream_id_cmp("1-0", "1-1") < 0);
    assert_true(pf_disc_stream_id_cmp("2-0", "1-9") > 0);
    assert_true(pf_disc_stream_id_cmp("10-0", "9-0") > 0);
    assert_int_equal(pf_disc_stream_id_cmp("5-5", "5-5"), 0);
    assert_true(pf_disc_stream_id_cmp("0-0", "1795819364271-0") < 0);
    assert_true(pf_disc_stream_id_cmp("junk", "0-0") < 0);
    assert_true(pf_disc_stream_id_cmp("1-0", "") > 0);

    assert_true(pf_disc_health_rank(2) < pf_disc_health_rank(1));
    assert_true(pf_disc_health_rank(1) < pf_disc_health_rank(3));
    assert_true(pf_disc_health_rank(3) < pf_disc_health_rank(4));
    assert_string_equal(pf_disc_kind_name(KIND(WEB)), "web");
    assert_null(pf_disc_kind_name(0));
    assert_null(pf_disc_kind_name(99));
    assert_int_equal(pf_disc_kind_from_name("agent", 5), KIND(AGENT));
    assert_int_equal(pf_disc_kind_from_name("agen", 4), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_instances),
        cmocka_unit_test(test_invalid_kind_and_id),
        cmocka_unit_test(test_invalid_addresses),
        cmocka_unit_test(test_invalid_labels_and_version),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_leases_and_members),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_label_filters),
        cmocka_unit_test(test_misc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
