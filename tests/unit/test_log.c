/* Unit tests for lib/log.c: level parsing and filtering, the exact shape of a
 * line (captured by pointing fd 2 at a temporary file), escaping that keeps one
 * event on one line, truncation of over-long lines on a UTF-8 boundary,
 * pf_log_quote, errno preservation, and whole lines from concurrent threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"

#define TS_RE "ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

/* Redirects fd 2 into a temporary file until capture_end. */
struct capture {
    FILE *file;
    int saved_fd;
};

static void capture_begin(struct capture *c)
{
    c->file = tmpfile();
    assert_non_null(c->file);
    fflush(stderr);
    c->saved_fd = dup(STDERR_FILENO);
    assert_true(c->saved_fd >= 0);
    assert_true(dup2(fileno(c->file), STDERR_FILENO) >= 0);
}

/* Restores fd 2 and returns everything written meanwhile (free() it). */
static char *capture_end(struct capture *c)
{
    assert_true(dup2(c->saved_fd, STDERR_FILENO) >= 0);
    close(c->saved_fd);
    /* the lines went through the shared descriptor, so ask it for the size */
    assert_int_equal(fseek(c->file, 0, SEEK_END), 0);
    long size = ftell(c->file);
    assert_true(size >= 0);
    char *text = calloc(1, (size_t)size + 1);
    assert_non_null(text);
    rewind(c->file);
    assert_int_equal(fread(text, 1, (size_t)size, c->file), (size_t)size);
    fclose(c->file);
    return text;
}

static void assert_matches(const char *text, const char *pattern)
{
    regex_t re;
    assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    int rc = regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    if (rc != 0)
        fail_msg("'%s' does not match '%s'", text, pattern);
}

static size_t count_char(const char *text, char c)
{
    size_t n = 0;
    for (; *text != '\0'; text++)
        n += *text == c;
    return n;
}

static int setup(void **state)
{
    pf_log_init(PF_LOG_INFO, "pf-test");
    return 0;
}

static void test_level_parse(void **state)
{
    enum pf_log_level lvl = PF_LOG_ERROR;
    assert_int_equal(pf_log_level_parse("debug", &lvl), PF_OK);
    assert_int_equal(lvl, PF_LOG_DEBUG);
    assert_int_equal(pf_log_level_parse("info", &lvl), PF_OK);
    assert_int_equal(lvl, PF_LOG_INFO);
    assert_int_equal(pf_log_level_parse("warn", &lvl), PF_OK);
    assert_int_equal(lvl, PF_LOG_WARN);
    assert_int_equal(pf_log_level_parse("ERROR", &lvl), PF_OK);
    assert_int_equal(lvl, PF_LOG_ERROR);
    static const char *const bad[] = {"",        "verbose", "inf",    "info ", " info",
                                      "warning", "3",       "debugx", "err"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lvl = PF_LOG_WARN;
        if (pf_log_level_parse(bad[i], &lvl) != PF_E_INVALID)
            fail_msg("level '%s' accepted", bad[i]);
        assert_int_equal(lvl, PF_LOG_WARN);
    }
    assert_int_equal(pf_log_level_parse(NULL, &lvl), PF_E_INVALID);
}

static void test_line_shape(void **state)
{
    struct capture c;
    capture_begin(&c);
    pf_log_info("upload_done", "digest=%s bytes=%d", "ab12", 42);
    char *text = capture_end(&c);
    assert_matches(text, "^" TS_RE " level=info component=pf-test event=upload_done "
                         "digest=ab12 bytes=42\n$");
    free(text);
}

static void test_each_level_name(void **state)
{
    pf_log_init(PF_LOG_DEBUG, "x");
    struct capture c;
    capture_begin(&c);
    pf_log_debug("a", NULL);
    pf_log_info("b", NULL);
    pf_log_warn("c", NULL);
    pf_log_error("d", NULL);
    char *text = capture_end(&c);
    assert_matches(text,
                   "^" TS_RE " level=debug component=x event=a\n" TS_RE
                   " level=info component=x event=b\n" TS_RE
                   " level=warn component=x event=c\n" TS_RE " level=error component=x event=d\n$");
    free(text);
}

static void test_filtering(void **state)
{
    pf_log_init(PF_LOG_WARN, "pf-test");
    assert_false(pf_log_enabled(PF_LOG_DEBUG));
    assert_false(pf_log_enabled(PF_LOG_INFO));
    assert_true(pf_log_enabled(PF_LOG_WARN));
    assert_true(pf_log_enabled(PF_LOG_ERROR));
    struct capture c;
    capture_begin(&c);
    pf_log_debug("hidden", "a=1");
    pf_log_info("hidden", "a=2");
    pf_log_warn("shown", "a=3");
    char *text = capture_end(&c);
    assert_null(strstr(text, "hidden"));
    assert_non_null(strstr(text, "event=shown a=3\n"));
    assert_int_equal(count_char(text, '\n'), 1);
    free(text);
}

static void test_no_component_no_text(void **state)
{
    pf_log_init(PF_LOG_INFO, NULL);
    struct capture c;
    capture_begin(&c);
    pf_log_info("started", NULL);
    pf_log_info("empty", "%s", "");
    char *text = capture_end(&c);
    assert_matches(text,
                   "^" TS_RE " level=info event=started\n" TS_RE " level=info event=empty\n$");
    free(text);
}

static void test_component_is_sanitised(void **state)
{
    pf_log_init(PF_LOG_INFO, "pf files\n=x");
    struct capture c;
    capture_begin(&c);
    pf_log_info("e", NULL);
    char *text = capture_end(&c);
    assert_non_null(strstr(text, " component=pf_files__x event=e\n"));
    free(text);
}

static void test_newlines_escaped(void **state)
{
    struct capture c;
    capture_begin(&c);
    pf_log_error("rpc_failed", "msg=\"%s\" peer=%s", "line one\nline two\r\n\ttab\x01", "p");
    char *text = capture_end(&c);
    assert_int_equal(count_char(text, '\n'), 1);
    assert_non_null(strstr(text, "msg=\"line one\\nline two\\r\\n\\ttab\\x01\" peer=p\n"));
    free(text);
}

static void test_long_line_truncated(void **state)
{
    char *value = malloc(10001);
    assert_non_null(value);
    memset(value, 'v', 10000);
    value[10000] = '\0';
    struct capture c;
    capture_begin(&c);
    pf_log_info("big", "value=%s", value);
    pf_log_info("after", NULL);
    char *text = capture_end(&c);
    assert_int_equal(count_char(text, '\n'), 2);
    char *first_end = strchr(text, '\n');
    size_t first_len = (size_t)(first_end - text) + 1;
    assert_true(first_len <= 4096);
    assert_true(first_len > 4000);
    assert_true(strncmp(first_end - 15, " truncated=true", 15) == 0);
    assert_non_null(strstr(first_end + 1, "event=after\n"));
    free(text);
    free(value);
}

static void test_escapes_never_split(void **state)
{
    /* newlines expand to two characters each; the cut must not leave a lone '\' */
    char *value = malloc(5001);
    assert_non_null(value);
    memset(value, '\n', 5000);
    value[5000] = '\0';
    struct capture c;
    capture_begin(&c);
    pf_log_info("nl", "v=%s", value);
    char *text = capture_end(&c);
    assert_int_equal(count_char(text, '\n'), 1);
    char *mark = strstr(text, " truncated=true\n");
    assert_non_null(mark);
    /* the characters before the mark are whole "\n" pairs */
    char *v = strstr(text, "v=") + 2;
    assert_int_equal((mark - v) % 2, 0);
    for (char *p = v; p < mark; p += 2)
        assert_true(p[0] == '\\' && p[1] == 'n');
    free(text);
    free(value);
}

static void test_utf8_never_split(void **state)
{
    /* "é" is two bytes; try several alignments of the cut */
    for (int shift = 0; shift < 3; shift++) {
        char value[6001];
        size_t n = 0;
        for (int i = 0; i < shift; i++)
            value[n++] = 'a';
        while (n + 2 < sizeof value) {
            value[n++] = '\xc3';
            value[n++] = '\xa9';
        }
        value[n] = '\0';
        struct capture c;
        capture_begin(&c);
        pf_log_info("utf8", "v=%s", value);
        char *text = capture_end(&c);
        char *mark = strstr(text, " truncated=true\n");
        assert_non_null(mark);
        char *v = strstr(text, "v=") + 2 + shift;
        assert_int_equal((mark - v) % 2, 0);
        for (char *p = v; p < mark; p += 2)
            assert_true((unsigned char)p[0] == 0xc3 && (unsigned char)p[1] == 0xa9);
        free(text);
    }
}

static void test_errno_preserved(void **state)
{
    struct capture c;
    capture_begin(&c);
    errno = ENOENT;
    pf_log_warn("open_failed", "path=%s", "/nope");
    assert_int_equal(errno, ENOENT);
    char *text = capture_end(&c);
    free(text);
}

static void test_quote(void **state)
{
    char q[32];
    assert_string_equal(pf_log_quote("hello world", q, sizeof q), "\"hello world\"");
    assert_string_equal(pf_log_quote("say \"hi\" \\o/", q, sizeof q), "\"say \\\"hi\\\" \\\\o/\"");
    assert_string_equal(pf_log_quote("", q, sizeof q), "\"\"");
    assert_string_equal(pf_log_quote(NULL, q, sizeof q), "\"\"");
    /* cut to fit, still closed */
    char small[8];
    assert_string_equal(pf_log_quote("abcdefghij", small, sizeof small), "\"abcde\"");
    /* an escape pair is never split */
    assert_string_equal(pf_log_quote("abcd\"x", small, sizeof small), "\"abcd\"");
    /* nor a UTF-8 character */
    assert_string_equal(pf_log_quote("abcd\xc3\xa9", small, sizeof small), "\"abcd\"");
    char tiny[3];
    assert_string_equal(pf_log_quote("abc", tiny, sizeof tiny), "\"\"");
    assert_string_equal(pf_log_quote("abc", tiny, 2), "\"\"");
    assert_string_equal(pf_log_quote("abc", NULL, 0), "\"\"");
}

static void test_quote_in_a_line(void **state)
{
    char q[64];
    struct capture c;
    capture_begin(&c);
    pf_log_info("job_added", "name=%s", pf_log_quote("benchy \"v2\"\nfinal", q, sizeof q));
    char *text = capture_end(&c);
    assert_non_null(strstr(text, "event=job_added name=\"benchy \\\"v2\\\"\\nfinal\"\n"));
    free(text);
}

#define THREADS 4
#define LINES   250

static void *log_many(void *arg)
{
    long id = (long)(intptr_t)arg;
    char pad[300];
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < LINES; i++)
        pf_log_info("tick", "thread=%ld i=%d pad=%s", id, i, pad);
    return NULL;
}

static void test_concurrent_lines_stay_whole(void **state)
{
    struct capture c;
    capture_begin(&c);
    pthread_t threads[THREADS];
    for (long t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&threads[t], NULL, log_many, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);
    char *text = capture_end(&c);
    assert_int_equal(count_char(text, '\n'), THREADS * LINES);
    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^" TS_RE " level=info component=pf-test event=tick thread=[0-3] "
                             "i=[0-9]+ pad=p{299}$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    char *save = NULL;
    int lines = 0;
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (regexec(&re, line, 0, NULL, 0) != 0)
            fail_msg("mangled line '%s'", line);
        lines++;
    }
    regfree(&re);
    assert_int_equal(lines, THREADS * LINES);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test_setup(test_line_shape, setup),
        cmocka_unit_test_setup(test_each_level_name, setup),
        cmocka_unit_test_setup(test_filtering, setup),
        cmocka_unit_test_setup(test_no_component_no_text, setup),
        cmocka_unit_test_setup(test_component_is_sanitised, setup),
        cmocka_unit_test_setup(test_newlines_escaped, setup),
        cmocka_unit_test_setup(test_long_line_truncated, setup),
        cmocka_unit_test_setup(test_escapes_never_split, setup),
        cmocka_unit_test_setup(test_utf8_never_split, setup),
        cmocka_unit_test_setup(test_errno_preserved, setup),
        cmocka_unit_test(test_quote),
        cmocka_unit_test_setup(test_quote_in_a_line, setup),
        cmocka_unit_test_setup(test_concurrent_lines_stay_whole, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
