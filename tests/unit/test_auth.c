/* Unit tests of lib/rpc/auth: the token file parser (many malformed files)
 * and bearer-token checks, including hashed entries. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include "digest.h"
#include "rpc/auth.h"

static struct pf_auth *parse_ok(const char *text)
{
    struct pf_auth *a = NULL;
    struct pf_error err;
    assert_int_equal(pf_auth_parse(text, strlen(text), "tokens", &a, &err), PF_OK);
    assert_non_null(a);
    return a;
}

static void parse_bad(const char *text, const char *want)
{
    struct pf_auth *a = NULL;
    struct pf_error err;
    assert_int_equal(pf_auth_parse(text, strlen(text), "tokens", &a, &err), PF_E_INVALID);
    assert_null(a);
    if (strstr(err.msg, want) == NULL)
        fail_msg("message '%s' lacks '%s'", err.msg, want);
}

static bool check(const struct pf_auth *a, const char *header, enum pf_role *role,
                  const char **name)
{
    return pf_auth_check(a, header, strlen(header), role, name);
}

static void test_roles_and_names(void **state)
{
    struct pf_auth *a = parse_ok("# farm tokens\n"
                                 "admin root admin-token-0123456789\n"
                                 "\n"
                                 "  operator alice   operator-token-0123456789  \r\n"
                                 "agent printer-7 agent-token-0123456789\n"
                                 "viewer wall viewer-token-0123456789");
    enum pf_role role;
    const char *name;
    assert_int_equal(pf_auth_count(a), 4);
    assert_true(check(a, "Bearer admin-token-0123456789", &role, &name));
    assert_int_equal(role, PF_ROLE_ADMIN);
    assert_string_equal(name, "root");
    assert_true(check(a, "Bearer operator-token-0123456789", &role, &name));
    assert_int_equal(role, PF_ROLE_OPERATOR);
    assert_string_equal(name, "alice");
    assert_true(check(a, "bearer agent-token-0123456789", &role, &name));
    assert_int_equal(role, PF_ROLE_AGENT);
    assert_string_equal(name, "printer-7");
    assert_true(check(a, "Bearer viewer-token-0123456789", &role, &name));
    assert_int_equal(role, PF_ROLE_VIEWER);
    pf_auth_destroy(a);
}

static void test_hashed_entry(void **state)
{
    struct pf_digest d;
    char hex[PF_DIGEST_HEX_LEN + 1];
    char line[200];
    const char *token = "hashed-token-0123456789";
    enum pf_role role;
    const char *name;

    pf_sha256(token, strlen(token), &d);
    pf_digest_to_hex(&d, hex);
    snprintf(line, sizeof(line), "operator bob sha256:%s\n", hex);
    struct pf_auth *a = parse_ok(line);
    assert_true(check(a, "Bearer hashed-token-0123456789", &role, &name));
    assert_string_equal(name, "bob");
    /* The hash itself is not a token. */
    char hdr[120];
    snprintf(hdr, sizeof(hdr), "Bearer sha256:%s", hex);
    assert_false(check(a, hdr, &role, &name));
    pf_auth_destroy(a);
}

static void test_rejected_headers(void **state)
{
    struct pf_auth *a = parse_ok("viewer v viewer-token-0123456789\n");
    enum pf_role role;
    const char *name;
    assert_false(check(a, "", &role, &name));
    assert_false(check(a, "Bearer", &role, &name));
    assert_false(check(a, "Bearer ", &role, &name));
    assert_false(check(a, "viewer-token-0123456789", &role, &name));
    assert_false(check(a, "Basic viewer-token-0123456789", &role, &name));
    assert_false(check(a, "Bearer viewer-token-012345678", &role, &name));
    assert_false(check(a, "Bearer viewer-token-01234567890", &role, &name));
    assert_false(check(a, "Bearer  viewer-token-0123456789", &role, &name));
    pf_auth_destroy(a);
}

static void test_malformed_files(void **state)
{
    parse_bad("king k token-0123456789abcdef\n", "unknown role 'king'");
    parse_bad("admin\n", "expected 'ROLE NAME TOKEN'");
    parse_bad("admin root\n", "expected 'ROLE NAME TOKEN'");
    parse_bad("admin root tok-0123456789abcdef extra\n", "expected 'ROLE NAME TOKEN'");
    parse_bad("admin root short\n", "shorter than 16");
    parse_bad("admin root sha256:abcd\n", "tokens:1");
    parse_bad("admin root sha256:zz\n", "tokens:1");
    parse_bad("viewer a token-0123456789abcdef\nviewer b token-0123456789abcdef\n",
              "tokens:2: the same token appears twice");
    parse_bad("# ok\nviewer a token-0123456789abcdef\nwhat\n", "tokens:3");
    char longname[400];
    memset(longname, 'n', sizeof(longname));
    memcpy(longname, "admin ", 6);
    strcpy(longname + 300, " token-0123456789abcdef");
    parse_bad(longname, "name longer than");
    struct pf_auth *a = NULL;
    struct pf_error err;
    const char nul[] = "admin root tok\0en-0123456789abcdef\n";
    assert_int_equal(pf_auth_parse(nul, sizeof(nul) - 1, "tokens", &a, &err), PF_E_INVALID);
}

static void test_empty_file_has_no_tokens(void **state)
{
    struct pf_auth *a = parse_ok("# nothing\n\n   \n");
    enum pf_role role;
    const char *name;
    assert_int_equal(pf_auth_count(a), 0);
    assert_false(check(a, "Bearer anything-at-all-0123456789", &role, &name));
    pf_auth_destroy(a);
}

static void test_load_missing_file(void **state)
{
    struct pf_auth *a = NULL;
    struct pf_error err;
    assert_int_equal(pf_auth_load("/nonexistent/tokens", &a, &err), PF_E_INVALID);
    assert_non_null(strstr(err.msg, "could not open token file '/nonexistent/tokens'"));
}

static void test_role_names(void **state)
{
    enum pf_role r;
    assert_int_equal(pf_role_parse("operator", &r), PF_OK);
    assert_int_equal(r, PF_ROLE_OPERATOR);
    assert_int_equal(pf_role_parse("Operator", &r), PF_E_INVALID);
    assert_int_equal(pf_role_parse("", &r), PF_E_INVALID);
    assert_string_equal(pf_role_name(PF_ROLE_AGENT), "agent");
    assert_string_equal(pf_role_name(PF_ROLE_NONE), "none");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roles_and_names),
        cmocka_unit_test(test_hashed_entry),
        cmocka_unit_test(test_rejected_headers),
        cmocka_unit_test(test_malformed_files),
        cmocka_unit_test(test_empty_file_has_no_tokens),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_role_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
