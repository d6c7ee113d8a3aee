/* Unit tests for services/agent/marlin_proto.c, with no serial port: known
 * checksums, line cleaning, reply classification (well-formed and hostile),
 * and the engine driven line by line through numbering, windows, resends,
 * busy, temperatures, fatal errors, resets, timeouts and probes, pause,
 * cancel and injection. Two loops go further: 10k random reply lines that must
 * never crash the engine nor move progress backwards, and a simulated Marlin
 * firmware (line-number and checksum checks, in-order processing) behind a
 * link that corrupts, loses, delays and adds lines, through which whole files
 * must arrive exactly once and in order for many seeds and window sizes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "marlin_proto.h"

/* ------------------------------------------------------------- helpers */

static char out_buf[PF_MARLIN_OUT_MAX];

static struct pf_marlin *engine_with(const struct pf_marlin_config *cfg)
{
    struct pf_marlin *m = NULL;
    struct pf_error err;
    enum pf_status st = pf_marlin_create(cfg, &m, &err);
    if (st != PF_OK)
        fail_msg("pf_marlin_create: %s", err.msg);
    return m;
}

static struct pf_marlin *engine(unsigned window, int64_t timeout_ms, unsigned probes)
{
    struct pf_marlin_config cfg;
    pf_marlin_config_init(&cfg);
    cfg.window = window;
    cfg.reply_timeout_ms = timeout_ms;
    cfg.probe_attempts = probes;
    return engine_with(&cfg);
}

/* The next output as a string ("" when there is none). */
static const char *next(struct pf_marlin *m, int64_t now)
{
    size_t len = 99;
    assert_int_equal(pf_marlin_next_output(m, now, out_buf, sizeof out_buf, &len), PF_OK);
    assert_int_equal(strlen(out_buf), len);
    return out_buf;
}

static const char *numbered(uint32_t n, const char *cmd)
{
    static char line[PF_MARLIN_OUT_MAX];
    size_t len;
    assert_int_equal(pf_marlin_format_line(n, cmd, strlen(cmd), line, sizeof line, &len), PF_OK);
    return line;
}

static void expect_line(struct pf_marlin *m, int64_t now, uint32_t n, const char *cmd)
{
    assert_string_equal(next(m, now), numbered(n, cmd));
}

static void expect_none(struct pf_marlin *m, int64_t now)
{
    assert_string_equal(next(m, now), "");
}

static void feed(struct pf_marlin *m, const char *line, int64_t now)
{
    pf_marlin_feed_reply(m, line, strlen(line), now, NULL);
}

static void start_text(struct pf_marlin *m, struct pf_marlin_text *t, const char *gcode)
{
    struct pf_error err;
    pf_marlin_text_init(t, gcode, strlen(gcode));
    struct pf_marlin_source src = {.next = pf_marlin_text_next, .ctx = t};
    assert_int_equal(pf_marlin_start(m, &src, strlen(gcode), &err), PF_OK);
}

/* Starts a print of gcode and acknowledges the M110 N0 that opens it. */
static void start_synced(struct pf_marlin *m, struct pf_marlin_text *t, const char *gcode,
                         int64_t now)
{
    start_text(m, t, gcode);
    expect_line(m, now, 0, "M110 N0");
    expect_none(m, now); /* the numbering reset goes alone */
    feed(m, "ok", now);
}

/* Expects the numbered M105 that closes every print, answers it and checks
 * that the print is DONE. */
static void finish(struct pf_marlin *m, int64_t now, uint32_t n)
{
    expect_line(m, now, n, "M105");
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    feed(m, "ok T:20.0 /0.0 B:20.0 /0.0", now);
    expect_none(m, now);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_DONE);
}

static bool reason_has(const struct pf_marlin *m, const char *needle)
{
    return strstr(pf_marlin_error(m)->msg, needle) != NULL;
}

static struct pf_marlin_stats stats_of(const struct pf_marlin *m)
{
    struct pf_marlin_stats s;
    pf_marlin_stats(m, &s);
    return s;
}

static struct pf_marlin_progress progress_of(const struct pf_marlin *m)
{
    struct pf_marlin_progress p;
    pf_marlin_progress(m, &p);
    return p;
}

/* ----------------------------------------------------- line preparation */

static void test_checksum_known_lines(void **state)
{
    /* examples from the RepRap wiki and Marlin docs, and OctoPrint's reset */
    assert_int_equal(pf_marlin_checksum("N3 T0", 5), 57);
    assert_int_equal(pf_marlin_checksum("N4 G92 E0", 9), 67);
    assert_int_equal(pf_marlin_checksum("N5 G28", 6), 22);
    assert_int_equal(pf_marlin_checksum("N0 M110 N0", 10), 125);
    assert_int_equal(pf_marlin_checksum("", 0), 0);
    /* the definition, computed here independently */
    const char *s = "N123 G1 X1.5 Y2.5 E0.1";
    uint8_t x = 0;
    for (const char *p = s; *p; p++)
        x = (uint8_t)(x ^ (uint8_t)*p);
    assert_int_equal(pf_marlin_checksum(s, strlen(s)), x);
    assert_int_equal(x, 96);
    /* bytes above 0x7f take part as bytes */
    assert_int_equal(pf_marlin_checksum("\xff\x0f", 2), 0xf0);
}

static void test_format_line(void **state)
{
    char out[PF_MARLIN_OUT_MAX];
    size_t len;
    assert_int_equal(pf_marlin_format_line(3, "T0", 2, out, sizeof out, &len), PF_OK);
    assert_string_equal(out, "N3 T0*57\n");
    assert_int_equal(len, 9);
    assert_int_equal(pf_marlin_format_line(4, "G92 E0", 6, out, sizeof out, &len), PF_OK);
    assert_string_equal(out, "N4 G92 E0*67\n");
    assert_int_equal(pf_marlin_format_line(5, "G28", 3, out, sizeof out, &len), PF_OK);
    assert_string_equal(out, "N5 G28*22\n");
    assert_int_equal(pf_marlin_format_line(0, "M110 N0", 7, out, sizeof out, &len), PF_OK);
    assert_string_equal(out, "N0 M110 N0*125\n");
    /* the largest command at the largest line number fits PF_MARLIN_OUT_MAX */
    char cmd[PF_MARLIN_CMD_MAX];
    memset(cmd, 'X', sizeof cmd);
    assert_int_equal(pf_marlin_format_line(4294967295u, cmd, sizeof cmd, out, sizeof out, &len),
                     PF_OK);
    assert_int_equal(strlen(out), len);
    assert_true(len < PF_MARLIN_OUT_MAX);
    /* too small a buffer is refused, never overrun */
    char small[12];
    assert_int_equal(pf_marlin_format_line(5, "G28 X Y Z", 9, small, sizeof small, &len),
                     PF_E_RESOURCE);
    assert_int_equal(len, 0);
    assert_int_equal(pf_marlin_format_line(5, "G28", 3, small, 4, &len), PF_E_RESOURCE);
}

struct clean_case {
    const char *raw;
    size_t len; /* 0: strlen */
    enum pf_status status;
    const char *want;
};

static void test_clean_line(void **state)
{
    static const struct clean_case cases[] = {
        {"G1 X10 Y20", 0, PF_OK, "G1 X10 Y20"},
        {"G1 X10 ; move to the start", 0, PF_OK, "G1 X10"},
        {";LAYER:0", 0, PF_OK, ""},
        {"; only a comment ; with ; semicolons", 0, PF_OK, ""},
        {"", 0, PF_OK, ""},
        {"      ", 0, PF_OK, ""},
        {"\t \t", 0, PF_OK, ""},
        {"\r", 0, PF_OK, ""},
        {"G28\r", 0, PF_OK, "G28"},
        {"  \tG28 X0\t \r", 0, PF_OK, "G28 X0"},
        {"M117 hello\tworld", 0, PF_OK, "M117 hello world"},
        /* parentheses are not comments for Marlin: kept */
        {"(comment) G1 X1", 0, PF_OK, "(comment) G1 X1"},
        {"G1 X1 (paren) ; semi", 0, PF_OK, "G1 X1 (paren)"},
        {"(only parens)", 0, PF_OK, "(only parens)"},
        /* numbered files: the number and checksum go, the engine numbers */
        {"N10 G1 X5*34", 0, PF_OK, "G1 X5"},
        {"N10", 0, PF_OK, ""},
        {"N7 ;comment", 0, PF_OK, ""},
        {"n3 T0*57", 0, PF_OK, "T0"},
        {"NOZZLE", 0, PF_OK, "NOZZLE"},
        {"N12G1", 0, PF_OK, "N12G1"},
        {"G1 X1*", 0, PF_OK, "G1 X1"},
        {"*57", 0, PF_OK, ""},
        /* bytes above 0x7f (UTF-8 text) pass */
        {"M117 Gr\xc3\xbc\xc3\x9f"
         "e",
         0, PF_OK,
         "M117 Gr\xc3\xbc\xc3\x9f"
         "e"},
        /* control bytes mean a binary or broken file */
        {"G1\0X1", 5, PF_E_INVALID, ""},
        {"\x1b[31mG1", 0, PF_E_INVALID, ""},
        {"G1\rX1", 0, PF_E_INVALID, ""},
        {"G1 X1\x7f", 0, PF_E_INVALID, ""},
        {"G1\x01", 0, PF_E_INVALID, ""},
        /* a control byte inside a comment is not looked at */
        {"G1 ;\x01\x02\x03", 0, PF_OK, "G1"},
    };
    char out[PF_MARLIN_CMD_MAX + 1];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct clean_case *c = &cases[i];
        size_t len = 99;
        struct pf_error err;
        pf_error_clear(&err);
        size_t in_len = c->len ? c->len : strlen(c->raw);
        enum pf_status st = pf_marlin_clean_line(c->raw, in_len, out, sizeof out, &len, &err);
        if (st != c->status)
            fail_msg("case %zu: status %d, want %d (%s)", i, st, c->status, err.msg);
        if (st == PF_OK) {
            if (strcmp(out, c->want) != 0)
                fail_msg("case %zu: '%s', want '%s'", i, out, c->want);
            assert_int_equal(len, strlen(c->want));
        } else {
            assert_int_equal(len, 0);
            assert_true(err.msg[0] != '\0');
        }
    }
}

static void test_clean_line_limits(void **state)
{
    char out[PF_MARLIN_CMD_MAX + 1];
    size_t len;
    struct pf_error err;
    char raw[4096];
    /* exactly the maximum passes, one more is refused with a message */
    memset(raw, 'A', PF_MARLIN_CMD_MAX + 1);
    assert_int_equal(pf_marlin_clean_line(raw, PF_MARLIN_CMD_MAX, out, sizeof out, &len, &err),
                     PF_OK);
    assert_int_equal(len, PF_MARLIN_CMD_MAX);
    assert_int_equal(pf_marlin_clean_line(raw, PF_MARLIN_CMD_MAX + 1, out, sizeof out, &len, &err),
                     PF_E_RESOURCE);
    assert_non_null(strstr(err.msg, "241"));
    /* a huge comment (a slicer's embedded thumbnail) costs nothing */
    size_t big = 1 << 20;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, 'q', big);
    memcpy(huge, "G1 X1 ;", 7);
    assert_int_equal(pf_marlin_clean_line(huge, big, out, sizeof out, &len, &err), PF_OK);
    assert_string_equal(out, "G1 X1");
    free(huge);
    /* leading whitespace does not count against the limit */
    memset(raw, ' ', 1000);
    memset(raw + 1000, 'B', PF_MARLIN_CMD_MAX);
    assert_int_equal(
        pf_marlin_clean_line(raw, 1000 + PF_MARLIN_CMD_MAX, out, sizeof out, &len, &err), PF_OK);
    /* a too small output buffer and NULL input */
    assert_int_equal(pf_marlin_clean_line("G1", 2, out, 10, &len, &err), PF_E_INVALID);
    assert_int_equal(pf_marlin_clean_line(NULL, 5, out, sizeof out, &len, &err), PF_OK);
    assert_int_equal(len, 0);
}

static void test_text_source(void **state)
{
    struct pf_marlin_text t;
    const char *data = "G28\r\n\n;c\nG1 X1";
    pf_marlin_text_init(&t, data, strlen(data));
    const char *line;
    size_t len;
    uint64_t used, total = 0;
    const char *want[] = {"G28\r", "", ";c", "G1 X1"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pf_marlin_text_next(&t, &line, &len, &used, NULL), PF_OK);
        assert_int_equal(len, strlen(want[i]));
        assert_memory_equal(line, want[i], len);
        total += used;
    }
    assert_int_equal(pf_marlin_text_next(&t, &line, &len, &used, NULL), PF_E_END);
    assert_int_equal(total, strlen(data));
    pf_marlin_text_init(&t, NULL, 10);
    assert_int_equal(pf_marlin_text_next(&t, &line, &len, &used, NULL), PF_E_END);
}

/* --------------------------------------------------------- reply parsing */

static struct pf_marlin_reply parse(const char *s)
{
    struct pf_marlin_reply r;
    pf_marlin_parse_reply(s, strlen(s), &r);
    return r;
}

static void test_parse_ok_and_temps(void **state)
{
    struct pf_marlin_reply r = parse("ok");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_OK);
    assert_false(r.has_temps);
    assert_int_equal(parse("ok ").kind, PF_MARLIN_REPLY_OK);
    assert_int_equal(parse("ok\r").kind, PF_MARLIN_REPLY_OK);
    assert_int_equal(parse("  ok  ").kind, PF_MARLIN_REPLY_OK);
    assert_int_equal(parse("ok N10 P15 B3").kind, PF_MARLIN_REPLY_OK); /* ADVANCED_OK */

    r = parse("ok T:210.0 /210.0 B:60.0 /60.0 @:127 B@:0");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_OK);
    assert_true(r.has_temps);
    assert_true(r.temps.tool[0].valid);
    assert_float_equal(r.temps.tool[0].actual, 210.0, 1e-9);
    assert_true(r.temps.tool[0].has_target);
    assert_float_equal(r.temps.tool[0].target, 210.0, 1e-9);
    assert_float_equal(r.temps.bed.actual, 60.0, 1e-9);
    assert_float_equal(r.temps.bed.target, 60.0, 1e-9);
    assert_false(r.temps.tool[1].valid);
    assert_false(r.temps.chamber.valid);

    /* M155 auto-report, no ok */
    r = parse(" T:205.1 /210.0 B:60.2 /60.0 @:80 B@:0");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_TEMPS);
    assert_float_equal(r.temps.tool[0].actual, 205.1, 1e-9);
    assert_float_equal(r.temps.bed.actual, 60.2, 1e-9);

    /* two hotends and a chamber */
    r = parse("T:200.0 /200.0 B:60.0 /60.0 T0:200.0 /200.0 T1:150.5 /0.0 C:35.2 /40 @:0");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_TEMPS);
    assert_float_equal(r.temps.tool[1].actual, 150.5, 1e-9);
    assert_float_equal(r.temps.tool[1].target, 0.0, 1e-9);
    assert_float_equal(r.temps.chamber.actual, 35.2, 1e-9);
    assert_float_equal(r.temps.chamber.target, 40.0, 1e-9);
    /* "T:" is the active tool; T0 given explicitly wins */
    r = parse("T:50 /0 T0:20.0 /0 T1:50 /0");
    assert_float_equal(r.temps.tool[0].actual, 20.0, 1e-9);

    /* Prusa style, with extra fields */
    r = parse("ok T:20.5 /0.0 B:20.8 /0.0 T0:20.5 /0.0 @:0 B@:0 P:0.0 A:29.6");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_OK);
    assert_float_equal(r.temps.bed.actual, 20.8, 1e-9);

    /* M109 wait lines of old and new Marlin, no target */
    r = parse(" T:205.12 E:0 W:?");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_TEMPS);
    assert_float_equal(r.temps.tool[0].actual, 205.12, 1e-9);
    assert_false(r.temps.tool[0].has_target);
    r = parse("T:205.1/210.0 B:60/60");
    assert_true(r.temps.tool[0].has_target);
    assert_float_equal(r.temps.tool[0].target, 210.0, 1e-9);

    /* a disconnected thermistor reads negative */
    r = parse("ok T:-15.00 /0.00 B:-14.5 /0");
    assert_float_equal(r.temps.tool[0].actual, -15.0, 1e-9);

    /* malformed numbers are skipped one by one, never parsed loosely */
    r = parse("T:abc /def B:60.0 /60.0");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_TEMPS);
    assert_false(r.temps.tool[0].valid);
    assert_true(r.temps.bed.valid);
    assert_int_equal(parse("T:nan /inf").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("T:1e3").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("T:99999999 /1").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("T:5000").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("T:").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("T:.").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("T:1.2.3").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("T:1.1234567").kind, PF_MARLIN_REPLY_OTHER);
    r = parse("T:20 /x");
    assert_true(r.temps.tool[0].valid);
    assert_false(r.temps.tool[0].has_target);
    r = parse("ok T:");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_OK);
    assert_false(r.has_temps);
    r = parse("ok T9:20 X:1 :5 T::3 B//4");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_OK);
    assert_false(r.has_temps);
}

static void test_parse_resend(void **state)
{
    struct pf_marlin_reply r = parse("Resend: 12");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_RESEND);
    assert_int_equal(r.resend_line, 12);
    assert_int_equal(parse("Resend:12").resend_line, 12);
    assert_int_equal(parse("resend: 7 ").resend_line, 7);
    assert_int_equal(parse("rs 7").resend_line, 7);
    assert_int_equal(parse("rs N7").kind, PF_MARLIN_REPLY_RESEND);
    assert_int_equal(parse("Resend: 0").resend_line, 0);
    assert_int_equal(parse("Resend: 2147483647").resend_line, 2147483647u);
    const char *bad[] = {
        "RESEND: 5",          "Rs 1",       "RS 1",        "rS 1",        "Resend:",
        "Resend: abc",        "Resend: -1", "Resend: 12x", "Resend: 1 2", "Resend: 99999999999",
        "Resend: 2147483648", "rs",         "rs x",        "Resend: N",   "Resend: 1.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i]).kind != PF_MARLIN_REPLY_OTHER)
            fail_msg("'%s' was taken as a resend", bad[i]);
    }
}

static void test_parse_errors(void **state)
{
    struct pf_marlin_reply r = parse("Error:checksum mismatch, Last Line: 12");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_ERROR);
    assert_int_equal(r.error_kind, PF_MARLIN_ERR_CHECKSUM);
    assert_true(r.has_last_line);
    assert_int_equal(r.last_line, 12);
    r = parse("Error:Line Number is not Last Line Number+1, Last Line: 3");
    assert_int_equal(r.error_kind, PF_MARLIN_ERR_LINE_NUMBER);
    assert_int_equal(r.last_line, 3);
    r = parse("Error:No Checksum with line number, Last Line: 5");
    assert_int_equal(r.error_kind, PF_MARLIN_ERR_LINE_NUMBER);
    r = parse("Error:No Line Number with checksum, Last Line: 5");
    assert_int_equal(r.error_kind, PF_MARLIN_ERR_LINE_NUMBER);
    r = parse("Error:checksum mismatch, Last Line: x");
    assert_int_equal(r.error_kind, PF_MARLIN_ERR_CHECKSUM);
    assert_false(r.has_last_line);
    r = parse("Error:checksum mismatch");
    assert_false(r.has_last_line);
    r = parse("error:checksum mismatch, Last Line: 99999999999");
    assert_false(r.has_last_line);

    r = parse("Error:Printer halted. kill() called!");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_FATAL);
    r = parse("Error: MINTEMP triggered, system stopped! Heater_ID: 0");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_FATAL);
    assert_memory_equal(r.text, "MINTEMP", 7);
    r = parse("Error:Thermal Runaway, system stopped! Heater_ID: 0");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_FATAL);
    assert_memory_equal(r.text, "Thermal Runaway", 15);
    assert_int_equal(parse("Error:MAXTEMP triggered, system stopped! Heater_ID: bed").kind,
                     PF_MARLIN_REPLY_FATAL);
    assert_int_equal(parse("Error:Heating failed, system stopped! Heater_ID: 0").kind,
                     PF_MARLIN_REPLY_FATAL);
    assert_int_equal(
        parse("Error:Printer stopped due to errors. Fix the error and use M999 to restart.").kind,
        PF_MARLIN_REPLY_FATAL);
    assert_int_equal(parse("!! Heater failure").kind, PF_MARLIN_REPLY_FATAL);
    /* noise that happens to start with "!!" is not a fatal error */
    assert_int_equal(parse("!!").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("!!\xd3\xa1\xfe").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("!!#$%&").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("!!abc").kind, PF_MARLIN_REPLY_OTHER);
    /* unknown errors are kept but are not fatal */
    r = parse("Error:Invalid extruder");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_ERROR);
    assert_int_equal(r.error_kind, PF_MARLIN_ERR_OTHER);
    assert_int_equal(parse("Error:").kind, PF_MARLIN_REPLY_ERROR);
}

static void test_parse_other_kinds(void **state)
{
    assert_int_equal(parse("busy: processing").kind, PF_MARLIN_REPLY_BUSY);
    assert_int_equal(parse("echo:busy: processing").kind, PF_MARLIN_REPLY_BUSY);
    assert_int_equal(parse("echo:busy: paused for user").kind, PF_MARLIN_REPLY_BUSY);
    struct pf_marlin_reply r = parse("echo:Unknown command: \"G999\"");
    assert_int_equal(r.kind, PF_MARLIN_REPLY_ECHO);
    assert_memory_equal(r.text, "Unknown", 7);
    assert_int_equal(parse("echo:").kind, PF_MARLIN_REPLY_ECHO);
    assert_int_equal(parse("start").kind, PF_MARLIN_REPLY_START);
    assert_int_equal(parse(" start\r").kind, PF_MARLIN_REPLY_START);
    assert_int_equal(parse("started").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("wait").kind, PF_MARLIN_REPLY_INFO);
    assert_int_equal(parse("SD printing byte 10/100").kind, PF_MARLIN_REPLY_INFO);
    assert_int_equal(parse("Not SD printing").kind, PF_MARLIN_REPLY_INFO);
    assert_int_equal(parse("//action:cancel").kind, PF_MARLIN_REPLY_INFO);
    assert_int_equal(parse("X:0.00 Y:0.00 Z:0.00 E:0.00 Count X:0 Y:0 Z:0").kind,
                     PF_MARLIN_REPLY_INFO);
    assert_int_equal(parse("FIRMWARE_NAME:Marlin 2.1.2").kind, PF_MARLIN_REPLY_INFO);
    assert_int_equal(parse("hello there").kind, PF_MARLIN_REPLY_OTHER);
}

static void test_parse_garbage(void **state)
{
    struct pf_marlin_reply r;
    /* ok with trailing junk: still an ok when "ok" is a word of its own */
    assert_int_equal(parse("ok junk here !@#").kind, PF_MARLIN_REPLY_OK);
    assert_int_equal(parse("okjunk").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("okay").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("o k").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("OK").kind, PF_MARLIN_REPLY_OTHER);
    assert_int_equal(parse("xok").kind, PF_MARLIN_REPLY_OTHER);
    /* control bytes anywhere make the whole line garbage */
    assert_int_equal(parse("ok\x01").kind, PF_MARLIN_REPLY_GARBAGE);
    assert_int_equal(parse("\x13ok").kind, PF_MARLIN_REPLY_GARBAGE);
    assert_int_equal(parse("Resend: 5\x1b").kind, PF_MARLIN_REPLY_GARBAGE);
    pf_marlin_parse_reply("ok\0Resend: 1", 12, &r);
    assert_int_equal(r.kind, PF_MARLIN_REPLY_GARBAGE);
    pf_marlin_parse_reply("\0\0\0", 3, &r);
    assert_int_equal(r.kind, PF_MARLIN_REPLY_GARBAGE);
    /* emptiness */
    assert_int_equal(parse("").kind, PF_MARLIN_REPLY_EMPTY);
    assert_int_equal(parse("     ").kind, PF_MARLIN_REPLY_EMPTY);
    assert_int_equal(parse("\r").kind, PF_MARLIN_REPLY_EMPTY);
    assert_int_equal(parse(" \t \r").kind, PF_MARLIN_REPLY_EMPTY);
    pf_marlin_parse_reply(NULL, 100, &r);
    assert_int_equal(r.kind, PF_MARLIN_REPLY_EMPTY);
    /* the longest line is read; one byte more is garbage, even an ok */
    char line[PF_MARLIN_REPLY_MAX + 2];
    memset(line, 'a', sizeof line);
    memcpy(line, "ok ", 3);
    pf_marlin_parse_reply(line, PF_MARLIN_REPLY_MAX, &r);
    assert_int_equal(r.kind, PF_MARLIN_REPLY_OK);
    assert_false(r.truncated);
    pf_marlin_parse_reply(line, PF_MARLIN_REPLY_MAX + 1, &r);
    assert_int_equal(r.kind, PF_MARLIN_REPLY_GARBAGE);
    assert_true(r.truncated);
    /* high bytes are not control bytes */
    assert_int_equal(parse("echo:\xc3\xa9t\xc3\xa9").kind, PF_MARLIN_REPLY_ECHO);
}

/* --------------------------------------------------------------- engine */

static void test_create_rejects_bad_config(void **state)
{
    struct pf_marlin_config cfg;
    struct pf_marlin *m = (struct pf_marlin *)&cfg; /* must be set to NULL on failure */
    struct pf_error err;
    struct {
        unsigned window, history;
        int64_t timeout;
        unsigned probes, max_resends, garbage;
        const char *probe, *cancel;
    } bad[] = {
        {0, 64, 1000, 3, 10, 100, "M105", "M84"},
        {17, 64, 1000, 3, 10, 100, "M105", "M84"},
        {1, 7, 1000, 3, 10, 100, "M105", "M84"},
        {8, 15, 1000, 3, 10, 100, "M105", "M84"},
        {1, 1025, 1000, 3, 10, 100, "M105", "M84"},
        {1, 64, 0, 3, 10, 100, "M105", "M84"},
        {1, 64, -5, 3, 10, 100, "M105", "M84"},
        {1, 64, 1000, 101, 10, 100, "M105", "M84"},
        {1, 64, 1000, 3, 0, 100, "M105", "M84"},
        {1, 64, 1000, 3, 10, 0, "M105", "M84"},
        {1, 64, 1000, 3, 10, 100, "", "M84"},
        {1, 64, 1000, 3, 10, 100, "; nothing", "M84"},
        {1, 64, 1000, 3, 10, 100, "M1\x01", "M84"},
        {1, 64, 1000, 3, 10, 100, "M110 N0", "M84"},
        {1, 64, 1000, 3, 10, 100, "M105", "M84\nM110 N5"},
        {1, 64, 1000, 3, 10, 100, "M105", "M104 S0\nM\x02"},
        {1, 64, 1000, 3, 10, 100, "M105",
         "M1\nM2\nM3\nM4\nM5\nM6\nM7\nM8\nM9\nM10\nM11\nM12\nM13\nM14\nM15\nM16\nM17"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pf_marlin_config_init(&cfg);
        cfg.window = bad[i].window;
        cfg.history = bad[i].history;
        cfg.reply_timeout_ms = bad[i].timeout;
        cfg.probe_attempts = bad[i].probes;
        cfg.max_resends = bad[i].max_resends;
        cfg.max_garbage_run = bad[i].garbage;
        cfg.probe_command = bad[i].probe;
        cfg.cancel_gcode = bad[i].cancel;
        pf_error_clear(&err);
        if (pf_marlin_create(&cfg, &m, &err) != PF_E_INVALID)
            fail_msg("bad config %zu accepted", i);
        assert_null(m);
        assert_true(err.msg[0] != '\0');
    }
    /* NULL config and NULL strings mean defaults; an empty cancel is fine */
    assert_int_equal(pf_marlin_create(NULL, &m, &err), PF_OK);
    pf_marlin_destroy(m);
    pf_marlin_config_init(&cfg);
    cfg.probe_command = NULL;
    cfg.cancel_gcode = "";
    assert_int_equal(pf_marlin_create(&cfg, &m, &err), PF_OK);
    pf_marlin_destroy(m);
    pf_marlin_destroy(NULL);
}

static void test_stream_basic(void **state)
{
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    const char *gcode = "; header\n"
                        "G28 ; home\n"
                        "\n"
                        "   \n"
                        "M110 N100 ; numbering belongs to the engine\n"
                        "G1 X10 Y10\n"
                        "(note) G1 Z1\r\n"
                        "; trailer\n";
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_IDLE);
    expect_none(m, 0);
    assert_int_equal(pf_marlin_wait_ms(m, 0), -1);
    start_text(m, &t, gcode);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    assert_string_equal(next(m, 0), "N0 M110 N0*125\n");
    expect_none(m, 0);
    assert_int_equal(pf_marlin_wait_ms(m, 10), 990);
    feed(m, "ok", 10);
    assert_string_equal(next(m, 10), "N1 G28*18\n");
    expect_none(m, 10); /* window 1 */
    assert_int_equal(progress_of(m).in_flight, 1);
    feed(m, "ok", 20);
    assert_string_equal(next(m, 20), "N2 G1 X10 Y10*43\n");
    feed(m, "ok", 30);
    expect_line(m, 30, 3, "(note) G1 Z1");
    struct pf_marlin_progress p = progress_of(m);
    assert_int_equal(p.lines_sent, 3);
    assert_int_equal(p.lines_acked, 2);
    assert_int_equal(p.bytes_total, strlen(gcode));
    assert_true(p.bytes_acked < p.bytes_sent);
    feed(m, "ok", 40);
    /* the file is out: a numbered M105 closes it; only its ok (with
     * temperatures) proves the firmware took everything */
    expect_line(m, 40, 4, "M105");
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    p = progress_of(m);
    assert_int_equal(p.lines_acked, 3);
    assert_true(p.bytes_acked < strlen(gcode)); /* the trailer is not counted yet */
    feed(m, "ok", 45);                          /* a plain ok cannot be an M105's */
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    assert_int_equal(stats_of(m).unexpected_oks, 1);
    feed(m, "ok T:200.0 /200.0 B:60.0 /60.0", 50);
    expect_none(m, 50);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_DONE);
    p = progress_of(m);
    assert_int_equal(p.bytes_acked, strlen(gcode));
    assert_int_equal(p.lines_acked, 3);
    assert_int_equal(p.in_flight, 0);
    assert_int_equal(p.file_line, 8);
    struct pf_marlin_temps tt;
    pf_marlin_temps(m, &tt);
    assert_float_equal(tt.tool[0].actual, 200.0, 1e-9);
    struct pf_marlin_stats s = stats_of(m);
    assert_int_equal(s.lines_written, 5);
    assert_int_equal(s.skipped_file_lines, 5);
    assert_int_equal(s.resends, 0);
    assert_int_equal(pf_marlin_error(m)->code, PF_OK);
    pf_marlin_destroy(m);
}

static void test_empty_file_is_done(void **state)
{
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    start_text(m, &t, "; only comments\n\n");
    expect_none(m, 0); /* no M110 when there is nothing to number */
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_DONE);
    assert_int_equal(progress_of(m).bytes_acked, 17);
    /* and a new print may start */
    start_text(m, &t, "G28\n");
    expect_line(m, 0, 0, "M110 N0");
    pf_marlin_destroy(m);
}

static void test_window(void **state)
{
    struct pf_marlin *m = engine(3, 1000, 2);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\nG1 X2\nG1 X3\nG1 X4\nG1 X5\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    expect_line(m, 0, 2, "G1 X2");
    expect_line(m, 0, 3, "G1 X3");
    expect_none(m, 0);
    assert_int_equal(progress_of(m).in_flight, 3);
    feed(m, "ok", 1);
    expect_line(m, 1, 4, "G1 X4");
    expect_none(m, 1);
    feed(m, "ok", 2);
    feed(m, "ok", 2);
    expect_line(m, 2, 5, "G1 X5");
    expect_line(m, 2, 6, "M105");
    expect_none(m, 2);
    feed(m, "ok", 3);
    feed(m, "ok", 3);
    feed(m, "ok T:20 /0", 3);
    expect_none(m, 3);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_DONE);
    assert_int_equal(stats_of(m).unexpected_oks, 0);
    /* an ok with nothing in flight is counted, not trusted */
    feed(m, "ok", 4);
    assert_int_equal(stats_of(m).unexpected_oks, 1);
    pf_marlin_destroy(m);
}

static void test_resend_after_checksum_error(void **state)
{
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    start_synced(m, &t, "G28\nG1 X1\nG1 X2\n", 0);
    expect_line(m, 0, 1, "G28");
    feed(m, "ok", 1);
    expect_line(m, 1, 2, "G1 X1");
    feed(m, "Error:checksum mismatch, Last Line: 1", 2);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    feed(m, "Resend: 2", 2);
    feed(m, "ok", 2);
    expect_line(m, 2, 2, "G1 X1"); /* the same bytes again */
    expect_none(m, 2);
    feed(m, "ok", 3);
    expect_line(m, 3, 3, "G1 X2");
    feed(m, "ok", 4);
    finish(m, 4, 4);
    struct pf_marlin_stats s = stats_of(m);
    assert_int_equal(s.checksum_errors, 1);
    assert_int_equal(s.resends, 1);         /* the Error line and the Resend ask once */
    assert_int_equal(s.resends_ignored, 1); /* the second one */
    assert_int_equal(s.lines_resent, 1);
    assert_int_equal(progress_of(m).lines_acked, 3);
    pf_marlin_destroy(m);
}

static void test_resend_only_and_rs(void **state)
{
    /* firmwares that send only "Resend:" or "rs" with no Error line */
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\nG1 X2\nG1 X3\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    feed(m, "Resend: 1", 1);
    feed(m, "ok", 1);
    expect_line(m, 1, 1, "G1 X1");
    feed(m, "ok", 2);
    expect_line(m, 2, 2, "G1 X2");
    feed(m, "rs 2", 3);
    feed(m, "ok", 3);
    expect_line(m, 3, 2, "G1 X2");
    feed(m, "ok", 4);
    expect_line(m, 4, 3, "G1 X3");
    feed(m, "ok", 5);
    finish(m, 5, 4);
    assert_int_equal(stats_of(m).resends, 2);
    pf_marlin_destroy(m);
}

static void test_resend_from_earlier_line(void **state)
{
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\nG1 X2\nG1 X3\nG1 X4\nG1 X5\nG1 X6\n", 0);
    for (uint32_t n = 1; n <= 5; n++) {
        char cmd[16];
        snprintf(cmd, sizeof cmd, "G1 X%u", n);
        expect_line(m, n, n, cmd);
        if (n < 5)
            feed(m, "ok", n);
    }
    uint64_t acked = progress_of(m).bytes_acked;
    /* the firmware lost lines 3 and 4 and asks from 3: 3, 4, 5 go again */
    feed(m, "Resend: 3", 10);
    feed(m, "ok", 10);
    assert_true(progress_of(m).bytes_acked >= acked); /* never backwards */
    expect_line(m, 10, 3, "G1 X3");
    feed(m, "ok", 11);
    expect_line(m, 11, 4, "G1 X4");
    feed(m, "ok", 12);
    expect_line(m, 12, 5, "G1 X5");
    feed(m, "ok", 13);
    expect_line(m, 13, 6, "G1 X6");
    feed(m, "ok", 14);
    finish(m, 14, 7);
    assert_int_equal(stats_of(m).lines_resent, 3);
    pf_marlin_destroy(m);
}

static void test_resend_forward_skips_accepted(void **state)
{
    /* a resend for a later line means the firmware has everything before it */
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\nG1 X2\nG1 X3\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    feed(m, "Resend: 2", 1); /* "I have 1 already" */
    assert_int_equal(progress_of(m).lines_acked, 1);
    feed(m, "ok", 1);
    expect_line(m, 1, 2, "G1 X2");
    pf_marlin_destroy(m);
}

static void test_resend_not_in_history(void **state)
{
    struct pf_marlin_config cfg;
    pf_marlin_config_init(&cfg);
    cfg.history = 8;
    struct pf_marlin *m = engine_with(&cfg);
    struct pf_marlin_text t;
    char gcode[4096] = "";
    for (int i = 1; i <= 30; i++)
        snprintf(gcode + strlen(gcode), sizeof gcode - strlen(gcode), "G1 X%d\n", i);
    start_synced(m, &t, gcode, 0);
    for (int i = 1; i <= 20; i++) {
        assert_true(next(m, i)[0] == 'N');
        feed(m, "ok", i);
    }
    assert_true(next(m, 21)[0] == 'N'); /* N21 in flight */
    feed(m, "Error:checksum mismatch, Last Line: 2", 22);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING); /* once could be noise */
    feed(m, "Resend: 3", 22);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_ERROR);
    assert_int_equal(pf_marlin_error(m)->code, PF_E_DATA_LOSS);
    assert_true(reason_has(m, "resend line 3"));
    assert_true(reason_has(m, "no longer kept"));
    expect_none(m, 23);
    assert_int_equal(pf_marlin_wait_ms(m, 23), -1);
    pf_marlin_destroy(m);

    /* and a line never sent */
    m = engine_with(&cfg);
    start_synced(m, &t, gcode, 0);
    for (int i = 1; i <= 20; i++) {
        assert_true(next(m, i)[0] == 'N');
        feed(m, "ok", i);
    }
    assert_true(next(m, 21)[0] == 'N');
    feed(m, "Resend: 50", 22);
    feed(m, "ok", 22);
    assert_true(next(m, 22)[0] == 'N');
    feed(m, "Resend: 50", 23);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_ERROR);
    assert_true(reason_has(m, "never sent"));
    pf_marlin_destroy(m);

    /* "Last Line" in an error line is checked the same way */
    m = engine_with(&cfg);
    start_synced(m, &t, gcode, 0);
    for (int i = 1; i <= 20; i++) {
        assert_true(next(m, i)[0] == 'N');
        feed(m, "ok", i);
    }
    assert_true(next(m, 21)[0] == 'N');
    feed(m, "Error:checksum mismatch, Last Line: 2", 22);
    feed(m, "Error:checksum mismatch, Last Line: 2", 22);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_ERROR);
    assert_true(reason_has(m, "no longer kept"));
    pf_marlin_destroy(m);

    /* a single impossible request (noise) is ignored; the line it arrived
     * on is not counted as taken, later ones are */
    m = engine_with(&cfg);
    start_synced(m, &t, gcode, 0);
    for (int i = 1; i <= 20; i++) {
        assert_true(next(m, i)[0] == 'N');
        feed(m, "ok", i);
    }
    expect_line(m, 21, 21, "G1 X21");
    feed(m, "rs 1", 22);
    feed(m, "ok", 22);
    assert_int_equal(progress_of(m).lines_acked, 20);
    expect_line(m, 22, 22, "G1 X22");
    feed(m, "ok", 23);
    assert_int_equal(progress_of(m).lines_acked, 22);
    expect_line(m, 23, 23, "G1 X23");
    feed(m, "Resend: 1", 24); /* and the count starts over after a good ok */
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    assert_int_equal(stats_of(m).resends_ignored, 2);
    pf_marlin_destroy(m);
}

static void test_resend_window_ignores_repeats(void **state)
{
    struct pf_marlin *m = engine(4, 1000, 2);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\nG1 X2\nG1 X3\nG1 X4\nG1 X5\nG1 X6\n", 0);
    for (uint32_t n = 1; n <= 4; n++) {
        char cmd[16];
        snprintf(cmd, sizeof cmd, "G1 X%u", n);
        expect_line(m, 0, n, cmd);
    }
    expect_none(m, 0);
    /* line 1 corrupted: Marlin refuses it and then 2, 3, 4 for their numbers */
    feed(m, "Error:checksum mismatch, Last Line: 0", 1);
    feed(m, "Resend: 1", 1);
    feed(m, "ok", 1);
    expect_line(m, 1, 1, "G1 X1"); /* one slot free: the replay starts */
    expect_none(m, 1);
    for (int i = 0; i < 3; i++) {
        feed(m, "Error:Line Number is not Last Line Number+1, Last Line: 0", 2);
        feed(m, "Resend: 1", 2);
        feed(m, "ok", 2);
    }
    expect_line(m, 2, 2, "G1 X2");
    expect_line(m, 2, 3, "G1 X3");
    expect_line(m, 2, 4, "G1 X4");
    expect_none(m, 2);
    struct pf_marlin_stats s = stats_of(m);
    assert_int_equal(s.resends, 1);
    assert_int_equal(s.resends_ignored, 7);
    assert_int_equal(s.line_number_errors, 3);
    for (int i = 0; i < 4; i++)
        feed(m, "ok", 3);
    expect_line(m, 3, 5, "G1 X5");
    expect_line(m, 3, 6, "G1 X6");
    expect_line(m, 3, 7, "M105");
    feed(m, "ok", 4);
    feed(m, "ok", 4);
    feed(m, "ok T:20 /0", 4);
    expect_none(m, 4);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_DONE);
    assert_int_equal(progress_of(m).lines_acked, 6);
    pf_marlin_destroy(m);
}

static void test_resend_of_sync_line(void **state)
{
    /* the M110 itself is corrupted: the firmware answers in its old numbering */
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    start_text(m, &t, "G28\n");
    expect_line(m, 0, 0, "M110 N0");
    feed(m, "Error:checksum mismatch, Last Line: 4711", 1);
    feed(m, "Resend: 4712", 1);
    feed(m, "ok", 1);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    expect_line(m, 1, 0, "M110 N0");
    feed(m, "ok", 2);
    expect_line(m, 2, 1, "G28");
    pf_marlin_destroy(m);
}

static void test_numbering_reset_not_taken(void **state)
{
    /* the firmware asks for a line past anything sent since M110 N0: it never
     * took the reset, so everything goes again from the M110 */
    struct pf_marlin *m = engine(2, 1000, 2);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\nG1 X2\nG1 X3\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    expect_line(m, 0, 2, "G1 X2");
    feed(m, "Error:Line Number is not Last Line Number+1, Last Line: 4711", 1);
    feed(m, "Resend: 4712", 1);
    feed(m, "ok", 1);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    assert_int_equal(progress_of(m).lines_acked, 0);
    expect_line(m, 1, 0, "M110 N0");
    expect_none(m, 1); /* alone, behind the refused line 2 */
    feed(m, "Error:Line Number is not Last Line Number+1, Last Line: 4711", 2);
    feed(m, "Resend: 4712", 2);
    feed(m, "ok", 2);
    expect_none(m, 2);
    feed(m, "ok", 3);
    expect_line(m, 3, 1, "G1 X1");
    expect_line(m, 3, 2, "G1 X2");
    pf_marlin_destroy(m);

    /* the M110's ok came while probing: it is sent again rather than trusted */
    m = engine(1, 1000, 2);
    start_text(m, &t, "G1 X1\n");
    expect_line(m, 0, 0, "M110 N0");
    assert_string_equal(next(m, 1000), "M105\n");
    feed(m, "ok", 1001); /* the M110's, or a garbled probe's? */
    expect_none(m, 1001);
    feed(m, "ok T:20 /0", 1002);
    expect_line(m, 1002, 0, "M110 N0");
    feed(m, "ok", 1003);
    expect_line(m, 1003, 1, "G1 X1");
    pf_marlin_destroy(m);
}

static void test_end_of_file_needs_the_closing_m105(void **state)
{
    /* the last line's ok was the probe's in truth (a garbled probe answers a
     * plain ok): the closing M105 is refused for its number, and the lost
     * line goes again before the print is done */
    struct pf_marlin *m = engine(1, 1000, 3);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\nG1 X2\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    feed(m, "ok", 1);
    expect_line(m, 1, 2, "G1 X2");
    assert_string_equal(next(m, 1001), "M105\n");
    feed(m, "echo:Unknown command: \"M1?5\"", 1500);
    feed(m, "ok", 1500); /* taken for G1 X2's */
    expect_none(m, 1500);
    assert_string_equal(next(m, 2500), "M105\n");
    feed(m, "ok T:20 /0", 2501);
    expect_line(m, 2501, 3, "M105");
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    feed(m, "Error:Line Number is not Last Line Number+1, Last Line: 1", 2502);
    feed(m, "Resend: 2", 2502);
    feed(m, "ok", 2502);
    expect_line(m, 2502, 2, "G1 X2");
    feed(m, "ok", 2503);
    expect_line(m, 2503, 3, "M105");
    /* the first probe's answer is still unaccounted for, so this ok might be
     * it: the M105 goes again, and the firmware refusing it as a repeat is
     * the proof */
    feed(m, "ok T:20 /0", 2504);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    expect_line(m, 2504, 3, "M105");
    feed(m, "Error:Line Number is not Last Line Number+1, Last Line: 3", 2505);
    feed(m, "Resend: 4", 2505);
    feed(m, "ok", 2505);
    expect_none(m, 2505);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_DONE);
    assert_int_equal(progress_of(m).lines_acked, 2);
    pf_marlin_destroy(m);

    /* stray oks (noise, a firmware's extra ok) cannot finish a print either */
    m = engine(2, 1000, 3);
    start_synced(m, &t, "G1 X1\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    expect_line(m, 0, 2, "M105");
    feed(m, "ok", 1);
    feed(m, "ok", 1);
    feed(m, "ok", 1);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    feed(m, "ok T:20 /0", 2);
    expect_none(m, 2);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_DONE);
    assert_int_equal(stats_of(m).unexpected_oks, 2);
    pf_marlin_destroy(m);
}

static void test_resend_streak_limit(void **state)
{
    struct pf_marlin_config cfg;
    pf_marlin_config_init(&cfg);
    cfg.max_resends = 3;
    struct pf_marlin *m = engine_with(&cfg);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\n", 0);
    for (int i = 0; i < 3; i++) {
        expect_line(m, i, 1, "G1 X1");
        feed(m, "Error:checksum mismatch, Last Line: 0", i);
        feed(m, "Resend: 1", i);
        feed(m, "ok", i);
    }
    expect_line(m, 3, 1, "G1 X1");
    feed(m, "Error:checksum mismatch, Last Line: 0", 4);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_ERROR);
    assert_true(reason_has(m, "refused line 1 4 times"));
    assert_true(reason_has(m, "checksum mismatch"));
    pf_marlin_destroy(m);
}

static void test_busy_keeps_waiting(void **state)
{
    struct pf_marlin *m = engine(1, 1000, 1);
    struct pf_marlin_text t;
    start_synced(m, &t, "G28\nG1 X1\n", 0);
    expect_line(m, 0, 1, "G28");
    /* homing takes 10 s; busy every 900 ms keeps the host from probing */
    int64_t now = 0;
    for (int i = 0; i < 11; i++) {
        now += 900;
        expect_none(m, now);
        feed(m, "echo:busy: processing", now);
        assert_int_equal(pf_marlin_wait_ms(m, now), 1000);
    }
    feed(m, "busy: processing", now);
    expect_none(m, now + 999);
    feed(m, "ok", now + 999);
    expect_line(m, now + 999, 2, "G1 X1");
    struct pf_marlin_stats s = stats_of(m);
    assert_int_equal(s.busy, 12);
    assert_int_equal(s.probes, 0);
    assert_int_equal(s.timeouts, 0);
    pf_marlin_destroy(m);
}

static void test_temperatures(void **state)
{
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_temps tt;
    pf_marlin_temps(m, &tt);
    assert_false(tt.tool[0].valid);
    assert_int_equal(tt.updated_ms, 0);
    struct pf_error err;
    assert_int_equal(pf_marlin_inject(m, "M105", &err), PF_OK);
    expect_line(m, 5, 0, "M110 N0");
    feed(m, "ok", 6);
    expect_line(m, 6, 1, "M105");
    feed(m, "ok T:210.0 /210.0 B:60.0 /60.0 @:127 B@:0", 7);
    pf_marlin_temps(m, &tt);
    assert_float_equal(tt.tool[0].actual, 210.0, 1e-9);
    assert_float_equal(tt.bed.target, 60.0, 1e-9);
    assert_int_equal(tt.updated_ms, 7);
    assert_int_equal(progress_of(m).in_flight, 0);
    /* auto-report between oks: folded in, nothing acknowledged */
    assert_int_equal(pf_marlin_inject(m, "M155 S2", &err), PF_OK);
    expect_line(m, 8, 2, "M155 S2");
    feed(m, " T:205.1 /210.0 B:60.2 /60.0 @:80 B@:0", 9);
    assert_int_equal(progress_of(m).in_flight, 1);
    feed(m, "T0:100.0 /0.0 T1:50.5 /200.0 B:61 /60", 10);
    pf_marlin_temps(m, &tt);
    assert_float_equal(tt.tool[0].actual, 100.0, 1e-9);
    assert_float_equal(tt.tool[1].actual, 50.5, 1e-9);
    assert_float_equal(tt.tool[1].target, 200.0, 1e-9);
    assert_float_equal(tt.bed.actual, 61.0, 1e-9);
    /* a report that only names the bed leaves the hotends alone */
    feed(m, "B:62.5 /60", 11);
    pf_marlin_temps(m, &tt);
    assert_float_equal(tt.bed.actual, 62.5, 1e-9);
    assert_float_equal(tt.tool[0].actual, 100.0, 1e-9);
    feed(m, "ok", 12);
    assert_int_equal(progress_of(m).in_flight, 0);
    assert_int_equal(stats_of(m).temp_reports, 4);
    pf_marlin_destroy(m);
}

static void test_fatal_errors(void **state)
{
    static const struct {
        const char *line, *reason;
    } cases[] = {
        {"Error:Printer halted. kill() called!", "kill() called"},
        {"Error:Thermal Runaway, system stopped! Heater_ID: 0", "Thermal Runaway"},
        {"Error: MINTEMP triggered, system stopped! Heater_ID: 0", "MINTEMP"},
        {"Error:MAXTEMP triggered, system stopped! Heater_ID: bed", "MAXTEMP"},
        {"!! Heater failure", "Heater failure"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct pf_marlin *m = engine(1, 1000, 2);
        struct pf_marlin_text t;
        struct pf_error err;
        start_synced(m, &t, "G1 X1\nG1 X2\n", 0);
        expect_line(m, 0, 1, "G1 X1");
        feed(m, cases[i].line, 1);
        assert_int_equal(pf_marlin_state(m), PF_MARLIN_ERROR);
        assert_int_equal(pf_marlin_error(m)->code, PF_E_ABORTED);
        if (!reason_has(m, cases[i].reason))
            fail_msg("reason '%s' lacks '%s'", pf_marlin_error(m)->msg, cases[i].reason);
        assert_true(reason_has(m, "firmware halted the printer"));
        /* the first reason stays; nothing goes out any more */
        feed(m, "Error:Printer halted. kill() called!", 2);
        assert_true(reason_has(m, cases[i].reason));
        feed(m, "ok", 2);
        feed(m, "start", 2);
        expect_none(m, 100000);
        assert_int_equal(pf_marlin_state(m), PF_MARLIN_ERROR);
        assert_int_equal(pf_marlin_inject(m, "M105", &err), PF_E_PRECONDITION);
        assert_int_equal(
            pf_marlin_start(m, &(struct pf_marlin_source){pf_marlin_text_next, &t}, 0, &err),
            PF_E_PRECONDITION);
        assert_int_equal(pf_marlin_pause(m, &err), PF_E_PRECONDITION);
        assert_int_equal(pf_marlin_cancel(m, &err), PF_E_PRECONDITION);
        /* temperatures still count after an error */
        feed(m, "T:300.0 /0", 3);
        struct pf_marlin_temps tt;
        pf_marlin_temps(m, &tt);
        assert_float_equal(tt.tool[0].actual, 300.0, 1e-9);
        /* reset: idle again, numbering starts over */
        pf_marlin_reset(m);
        assert_int_equal(pf_marlin_state(m), PF_MARLIN_IDLE);
        assert_int_equal(pf_marlin_error(m)->code, PF_OK);
        assert_int_equal(pf_marlin_inject(m, "M999", &err), PF_OK);
        expect_line(m, 4, 0, "M110 N0");
        pf_marlin_destroy(m);
    }
}

static void test_non_fatal_error_continues(void **state)
{
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    start_synced(m, &t, "T5\nG1 X1\n", 0);
    expect_line(m, 0, 1, "T5");
    feed(m, "Error:Invalid extruder", 1);
    feed(m, "echo:Unknown command: \"T5\"", 1);
    feed(m, "ok", 1);
    expect_line(m, 1, 2, "G1 X1");
    struct pf_marlin_stats s = stats_of(m);
    assert_int_equal(s.firmware_errors, 1);
    assert_int_equal(s.echo_lines, 1);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    pf_marlin_destroy(m);
}

static void test_firmware_reset(void **state)
{
    /* during a print: fatal */
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    struct pf_error err;
    start_synced(m, &t, "G1 X1\nG1 X2\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    feed(m, "start", 1);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_ERROR);
    assert_true(reason_has(m, "printer reset during print"));
    pf_marlin_destroy(m);

    /* while paused too */
    m = engine(1, 1000, 2);
    start_synced(m, &t, "G1 X1\nG1 X2\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    assert_int_equal(pf_marlin_pause(m, &err), PF_OK);
    feed(m, "ok", 1);
    feed(m, "start", 1);
    assert_true(reason_has(m, "reset during print"));
    pf_marlin_destroy(m);

    /* before the first file line the print has not begun on the printer: a
     * board that resets as its port opens only restarts the numbering */
    m = engine(1, 1000, 2);
    start_text(m, &t, "G1 X1\n");
    expect_line(m, 0, 0, "M110 N0"); /* lost in the reboot */
    feed(m, "start", 1500);
    feed(m, "echo:Marlin 2.1.2", 1500);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    expect_line(m, 1500, 0, "M110 N0");
    feed(m, "ok", 1501);
    expect_line(m, 1501, 1, "G1 X1");
    feed(m, "ok", 1502);
    finish(m, 1502, 2);
    pf_marlin_destroy(m);

    /* idle: numbering starts over, the lost command is dropped */
    m = engine(1, 1000, 2);
    assert_int_equal(pf_marlin_inject(m, "M105", &err), PF_OK);
    expect_line(m, 0, 0, "M110 N0");
    feed(m, "ok", 0);
    expect_line(m, 0, 1, "M105");
    feed(m, "start", 1);
    feed(m, "echo:Marlin 2.1.2", 1);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_IDLE);
    assert_int_equal(progress_of(m).in_flight, 0);
    assert_int_equal(pf_marlin_wait_ms(m, 1), -1);
    assert_int_equal(pf_marlin_inject(m, "M115", &err), PF_OK);
    expect_line(m, 2, 0, "M110 N0");
    feed(m, "ok", 3);
    expect_line(m, 3, 1, "M115");
    pf_marlin_destroy(m);
}

static void test_timeout_stopped_answering(void **state)
{
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\nG1 X2\n", 0);
    expect_line(m, 100, 1, "G1 X1");
    assert_int_equal(pf_marlin_wait_ms(m, 100), 1000);
    assert_int_equal(pf_marlin_wait_ms(m, 600), 500);
    expect_none(m, 1099);
    assert_string_equal(next(m, 1100), "M105\n");
    expect_none(m, 1100); /* nothing new while the probe is out */
    assert_int_equal(pf_marlin_wait_ms(m, 1100), 1000);
    expect_none(m, 2099);
    assert_string_equal(next(m, 2100), "M105\n");
    expect_none(m, 2100);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    expect_none(m, 3100);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_ERROR);
    assert_int_equal(pf_marlin_error(m)->code, PF_E_DEADLINE);
    assert_true(reason_has(m, "firmware stopped answering"));
    assert_true(reason_has(m, "2 probe(s) with M105"));
    struct pf_marlin_stats s = stats_of(m);
    assert_int_equal(s.timeouts, 3);
    assert_int_equal(s.probes, 2);
    pf_marlin_destroy(m);

    /* a custom probe; one probe, then the error */
    struct pf_marlin_config cfg;
    pf_marlin_config_init(&cfg);
    cfg.probe_command = "M113 ; keepalive";
    cfg.reply_timeout_ms = 50;
    cfg.probe_attempts = 1;
    m = engine_with(&cfg);
    start_synced(m, &t, "G1 X1\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    assert_string_equal(next(m, 50), "M113\n");
    expect_none(m, 100);
    assert_true(reason_has(m, "stopped answering"));
    pf_marlin_destroy(m);
}

static void test_timeout_lost_line(void **state)
{
    /* line 2 never reached the firmware: the probe's ok brings it back */
    struct pf_marlin *m = engine(1, 1000, 3);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\nG1 X2\nG1 X3\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    feed(m, "ok", 1);
    expect_line(m, 1, 2, "G1 X2");
    assert_string_equal(next(m, 1001), "M105\n");
    feed(m, "ok T:20.0 /0.0 B:20.0 /0.0 @:0 B@:0", 1002);
    expect_line(m, 1002, 2, "G1 X2");
    feed(m, "ok", 1003);
    expect_line(m, 1003, 3, "G1 X3");
    feed(m, "ok", 1004);
    finish(m, 1004, 4);
    struct pf_marlin_stats s = stats_of(m);
    assert_int_equal(s.timeouts, 1);
    assert_int_equal(s.lines_resent, 1);
    pf_marlin_destroy(m);
}

static void test_timeout_lost_ok(void **state)
{
    /* line 2 ran but its ok was lost: sent again, refused by number, skipped */
    struct pf_marlin *m = engine(1, 1000, 3);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\nG1 X2\nG1 X3\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    feed(m, "ok", 1);
    expect_line(m, 1, 2, "G1 X2");
    assert_string_equal(next(m, 1001), "M105\n");
    feed(m, "ok T:20.0 /0.0", 1002);
    expect_line(m, 1002, 2, "G1 X2");
    feed(m, "Error:Line Number is not Last Line Number+1, Last Line: 2", 1003);
    feed(m, "Resend: 3", 1003);
    feed(m, "ok", 1003);
    expect_line(m, 1003, 3, "G1 X3");
    assert_int_equal(progress_of(m).lines_acked, 2);
    feed(m, "ok", 1004);
    finish(m, 1004, 4);
    pf_marlin_destroy(m);
}

static void test_timeout_slow_ok(void **state)
{
    /* line 2 takes longer than the timeout and Marlin sends no busy */
    struct pf_marlin *m = engine(1, 1000, 3);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\nG4 S2\nG1 X3\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    feed(m, "ok", 1);
    expect_line(m, 1, 2, "G4 S2");
    assert_string_equal(next(m, 1001), "M105\n");
    feed(m, "ok", 2001); /* G4's own ok */
    assert_int_equal(progress_of(m).lines_acked, 2);
    expect_none(m, 2001); /* the probe is still out */
    feed(m, "ok T:20.0 /0.0", 2002);
    expect_line(m, 2002, 3, "G1 X3");
    feed(m, "ok", 2003);
    finish(m, 2003, 4);
    assert_int_equal(stats_of(m).lines_resent, 0);
    pf_marlin_destroy(m);
}

static void test_probe_answered_with_plain_ok(void **state)
{
    /* a probe whose ok carries no temperatures (M113) counts once nothing
     * else is in flight */
    struct pf_marlin_config cfg;
    pf_marlin_config_init(&cfg);
    cfg.probe_command = "M113";
    cfg.reply_timeout_ms = 100;
    struct pf_marlin *m = engine_with(&cfg);
    struct pf_error err;
    assert_int_equal(pf_marlin_inject(m, "M400", &err), PF_OK);
    expect_line(m, 0, 0, "M110 N0");
    feed(m, "ok", 0);
    expect_line(m, 0, 1, "M400");
    assert_string_equal(next(m, 100), "M113\n");
    feed(m, "ok", 150); /* M400's */
    assert_int_equal(pf_marlin_wait_ms(m, 150), 100);
    feed(m, "ok", 160); /* the probe's */
    assert_int_equal(pf_marlin_wait_ms(m, 160), -1);
    assert_int_equal(pf_marlin_inject(m, "M105", &err), PF_OK);
    expect_line(m, 170, 2, "M105");
    pf_marlin_destroy(m);
}

static void test_garbage_is_counted(void **state)
{
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    start_synced(m, &t, "G1 X1\nG1 X2\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    feed(m, "", 1);
    feed(m, "      ", 1);
    pf_marlin_feed_reply(m, "\x00\xff\x13ok", 5, 1, NULL);
    char longline[2000];
    memset(longline, 'o', sizeof longline);
    pf_marlin_feed_reply(m, longline, sizeof longline, 1, NULL);
    feed(m, "okjunk", 1);
    feed(m, "ok then junk", 1); /* the ok for line 1 */
    expect_line(m, 1, 2, "G1 X2");
    struct pf_marlin_stats s = stats_of(m);
    assert_int_equal(s.empty_lines, 2);
    assert_int_equal(s.garbage_lines, 2);
    assert_int_equal(s.long_lines, 1);
    assert_int_equal(s.other_lines, 1);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    pf_marlin_destroy(m);
}

static void test_garbage_run_and_silence(void **state)
{
    /* only garbage: a run of it fails with a hint at the baud rate */
    struct pf_marlin_config cfg;
    pf_marlin_config_init(&cfg);
    cfg.max_garbage_run = 5;
    struct pf_marlin *m = engine_with(&cfg);
    struct pf_marlin_text t;
    start_text(m, &t, "G1 X1\n");
    expect_line(m, 0, 0, "M110 N0");
    for (int i = 0; i < 4; i++)
        pf_marlin_feed_reply(m, "\xf0\x80\x01", 3, 1, NULL);
    feed(m, "echo:hi", 1); /* a good line ends the run */
    for (int i = 0; i < 4; i++)
        pf_marlin_feed_reply(m, "\xf0\x80\x01", 3, 1, NULL);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PRINTING);
    pf_marlin_feed_reply(m, "\xf0\x80\x01", 3, 1, NULL);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_ERROR);
    assert_int_equal(pf_marlin_error(m)->code, PF_E_IO);
    assert_true(reason_has(m, "baud"));
    pf_marlin_destroy(m);

    /* garbage is not an answer: the silence still ends in "stopped answering" */
    m = engine(1, 100, 1);
    start_text(m, &t, "G1 X1\n");
    expect_line(m, 0, 0, "M110 N0");
    for (int64_t now = 10; now < 1000 && pf_marlin_state(m) != PF_MARLIN_ERROR; now += 10) {
        pf_marlin_feed_reply(m, "\x01\x02", 2, now, NULL);
        feed(m, "random words", now); /* unknown lines are no answer either */
        (void)next(m, now);
    }
    assert_true(reason_has(m, "stopped answering"));
    assert_true(reason_has(m, "unreadable"));
    pf_marlin_destroy(m);
}

static void test_pause_resume_inject(void **state)
{
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    struct pf_error err;
    assert_int_equal(pf_marlin_pause(m, &err), PF_E_PRECONDITION);
    assert_int_equal(pf_marlin_resume(m, &err), PF_E_PRECONDITION);
    start_synced(m, &t, "G1 X1\nG1 X2\nG1 X3\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    /* injected commands go before further file lines */
    assert_int_equal(pf_marlin_inject(m, "M105 ; poll", &err), PF_OK);
    feed(m, "ok", 1);
    expect_line(m, 1, 2, "M105");
    feed(m, "ok T:20 /0", 2);
    expect_line(m, 2, 3, "G1 X2");
    assert_int_equal(pf_marlin_pause(m, &err), PF_OK);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PAUSED);
    assert_int_equal(pf_marlin_pause(m, &err), PF_E_PRECONDITION);
    feed(m, "ok", 3);
    expect_none(m, 3); /* no file line while paused */
    assert_int_equal(pf_marlin_wait_ms(m, 3), -1);
    assert_int_equal(pf_marlin_inject(m, "G91", &err), PF_OK);
    assert_int_equal(pf_marlin_inject(m, "G1 Z10", &err), PF_OK);
    expect_line(m, 4, 4, "G91");
    feed(m, "ok", 5);
    expect_line(m, 5, 5, "G1 Z10");
    feed(m, "ok", 6);
    expect_none(m, 6);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_PAUSED);
    assert_int_equal(pf_marlin_resume(m, &err), PF_OK);
    expect_line(m, 7, 6, "G1 X3");
    feed(m, "ok", 8);
    finish(m, 8, 7);
    assert_int_equal(progress_of(m).lines_acked, 3);
    assert_int_equal(progress_of(m).bytes_acked, 18);

    /* bad injections */
    assert_int_equal(pf_marlin_inject(m, "", &err), PF_E_INVALID);
    assert_int_equal(pf_marlin_inject(m, "  ; just a comment", &err), PF_E_INVALID);
    assert_int_equal(pf_marlin_inject(m, "M110 N5", &err), PF_E_INVALID);
    assert_int_equal(pf_marlin_inject(m, "G1\x01", &err), PF_E_INVALID);
    assert_int_equal(pf_marlin_inject(m, NULL, &err), PF_E_INVALID);
    for (int i = 0; i < PF_MARLIN_INJECT_MAX; i++)
        assert_int_equal(pf_marlin_inject(m, "M105", &err), PF_OK);
    assert_int_equal(pf_marlin_inject(m, "M105", &err), PF_E_RESOURCE);
    pf_marlin_destroy(m);
}

static void test_cancel(void **state)
{
    struct pf_marlin *m = engine(2, 1000, 2);
    struct pf_marlin_text t;
    struct pf_error err;
    assert_int_equal(pf_marlin_cancel(m, &err), PF_E_PRECONDITION);
    start_synced(m, &t, "G1 X1\nG1 X2\nG1 X3\nG1 X4\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    expect_line(m, 0, 2, "G1 X2");
    assert_int_equal(pf_marlin_inject(m, "M105", &err), PF_OK); /* dropped by cancel */
    assert_int_equal(pf_marlin_cancel(m, &err), PF_OK);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_CANCELLING);
    assert_int_equal(pf_marlin_cancel(m, &err), PF_OK); /* idempotent */
    expect_none(m, 1);
    /* a resend of a file line still goes first */
    feed(m, "ok", 1);
    feed(m, "Resend: 2", 1);
    feed(m, "ok", 1);
    expect_line(m, 1, 2, "G1 X2");
    expect_line(m, 1, 3, "M104 S0");
    feed(m, "ok", 2);
    expect_line(m, 2, 4, "M140 S0");
    feed(m, "ok", 3);
    expect_line(m, 3, 5, "M107");
    feed(m, "ok", 4);
    expect_line(m, 4, 6, "M84");
    feed(m, "ok", 5);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_CANCELLING);
    feed(m, "ok", 6);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_CANCELLED);
    expect_none(m, 7);
    assert_int_equal(progress_of(m).lines_acked, 2);
    assert_int_equal(pf_marlin_cancel(m, &err), PF_E_PRECONDITION);
    pf_marlin_destroy(m);

    /* a custom sequence, and an empty one */
    struct pf_marlin_config cfg;
    pf_marlin_config_init(&cfg);
    cfg.cancel_gcode = "M104 S0 ; hotend off\n\nG28 X\n";
    m = engine_with(&cfg);
    start_synced(m, &t, "G1 X1\nG1 X2\n", 0);
    expect_line(m, 0, 1, "G1 X1");
    assert_int_equal(pf_marlin_pause(m, &err), PF_OK);
    assert_int_equal(pf_marlin_cancel(m, &err), PF_OK);
    feed(m, "ok", 1);
    expect_line(m, 1, 2, "M104 S0");
    feed(m, "ok", 2);
    expect_line(m, 2, 3, "G28 X");
    feed(m, "ok", 3);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_CANCELLED);
    pf_marlin_destroy(m);

    cfg.cancel_gcode = "";
    m = engine_with(&cfg);
    start_synced(m, &t, "G1 X1\n", 0);
    assert_int_equal(pf_marlin_cancel(m, &err), PF_OK);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_CANCELLED);
    pf_marlin_destroy(m);
}

static enum pf_status failing_source(void *ctx, const char **line, size_t *len, uint64_t *consumed,
                                     struct pf_error *err)
{
    int *calls = ctx;
    if ((*calls)++ < 2) {
        *line = "G1 X1";
        *len = 5;
        *consumed = 6;
        return PF_OK;
    }
    return pf_error_set(err, PF_E_IO, "disk read failed");
}

static void test_bad_file(void **state)
{
    struct pf_marlin *m = engine(1, 1000, 2);
    struct pf_error err;
    int calls = 0;
    struct pf_marlin_source src = {.next = failing_source, .ctx = &calls};
    assert_int_equal(pf_marlin_start(m, &src, 0, &err), PF_OK);
    assert_int_equal(pf_marlin_start(m, &src, 0, &err), PF_E_PRECONDITION);
    expect_line(m, 0, 0, "M110 N0");
    feed(m, "ok", 0);
    expect_line(m, 0, 1, "G1 X1");
    feed(m, "ok", 0);
    expect_line(m, 0, 2, "G1 X1");
    feed(m, "ok", 0);
    expect_none(m, 0);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_ERROR);
    assert_int_equal(pf_marlin_error(m)->code, PF_E_IO);
    assert_true(reason_has(m, "disk read failed"));
    assert_true(reason_has(m, "after line 2"));
    pf_marlin_destroy(m);

    /* a binary line stops the print and names the line */
    m = engine(1, 1000, 2);
    struct pf_marlin_text t;
    static const char binary[] = "G28\n;ok\nG1 \x00\x01\x02\nG1 X2\n";
    pf_marlin_text_init(&t, binary, sizeof binary - 1);
    src = (struct pf_marlin_source){.next = pf_marlin_text_next, .ctx = &t};
    assert_int_equal(pf_marlin_start(m, &src, sizeof binary - 1, &err), PF_OK);
    expect_line(m, 0, 0, "M110 N0");
    feed(m, "ok", 0);
    expect_line(m, 0, 1, "G28");
    feed(m, "ok", 0);
    expect_none(m, 0);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_ERROR);
    assert_int_equal(pf_marlin_error(m)->code, PF_E_INVALID);
    assert_true(reason_has(m, "gcode line 3"));
    assert_true(reason_has(m, "0x00"));
    pf_marlin_destroy(m);

    /* so does a command longer than the limit */
    m = engine(1, 1000, 2);
    char *longfile = malloc(1000);
    assert_non_null(longfile);
    memset(longfile, 'X', 999);
    longfile[999] = '\0';
    start_text(m, &t, longfile);
    expect_none(m, 0);
    assert_true(reason_has(m, "gcode line 1"));
    free(longfile);
    pf_marlin_destroy(m);

    assert_int_equal(pf_marlin_start(m = engine(1, 1000, 2), NULL, 0, &err), PF_E_INVALID);
    pf_marlin_destroy(m);
}

static void test_set_error_and_next_output_args(void **state)
{
    struct pf_marlin *m = engine(1, 1000, 2);
    char small[16];
    size_t len = 5;
    assert_int_equal(pf_marlin_next_output(m, 0, small, sizeof small, &len), PF_E_INVALID);
    assert_int_equal(len, 0);
    assert_int_equal(
        pf_marlin_set_error(m, PF_E_UNAVAILABLE, "serial port '%s' vanished", "/dev/ttyACM0"),
        PF_E_UNAVAILABLE);
    assert_int_equal(pf_marlin_state(m), PF_MARLIN_ERROR);
    assert_string_equal(pf_marlin_error(m)->msg, "serial port '/dev/ttyACM0' vanished");
    (void)pf_marlin_set_error(m, PF_E_IO, "second");
    assert_string_equal(pf_marlin_error(m)->msg, "serial port '/dev/ttyACM0' vanished");
    assert_string_equal(pf_marlin_state_name(PF_MARLIN_ERROR), "error");
    assert_string_equal(pf_marlin_state_name(PF_MARLIN_CANCELLING), "cancelling");
    assert_string_equal(pf_marlin_state_name((enum pf_marlin_state)99), "unknown");
    pf_marlin_destroy(m);
}

/* ------------------------------------------------------- random replies */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static unsigned rnd_below(unsigned n)
{
    return (unsigned)(rnd() % n);
}

static void test_random_replies_never_crash(void **state)
{
    static const char *const pieces[] = {
        "ok",    "ok ",  "Resend: ", "rs ",        "Error:", "echo:", "busy: processing",
        "T:",    " /",   "B:",       "start",      "!!",     "N",     "Last Line: ",
        "1",     "0",    "99",       "4294967296", "-",      ".",     "checksum mismatch",
        "kill(", "\x01", "\xff",     " ",          "\r",     "@:",    "T0:",
    };
    char gcode[64 * 1024] = "";
    for (int i = 0; i < 3000; i++)
        snprintf(gcode + strlen(gcode), sizeof gcode - strlen(gcode), "G1 X%d ; c\n", i);
    for (uint64_t seed = 1; seed <= 4; seed++) {
        rng_state = seed * 0x9e3779b97f4a7c15ull;
        struct pf_marlin_config cfg;
        pf_marlin_config_init(&cfg);
        cfg.window = 1 + rnd_below(PF_MARLIN_WINDOW_MAX);
        cfg.history = 2 * cfg.window + rnd_below(20);
        cfg.reply_timeout_ms = 50;
        cfg.probe_attempts = 100;
        cfg.max_garbage_run = 1000000;
        cfg.max_resends = 1000000;
        struct pf_marlin *m = engine_with(&cfg);
        struct pf_marlin_text t;
        start_text(m, &t, gcode);
        struct pf_marlin_progress last = progress_of(m);
        int64_t now = 0;
        for (int i = 0; i < 10000; i++) {
            char line[700];
            size_t len = 0;
            if (rnd_below(3) == 0) {
                /* raw random bytes, sometimes too long */
                len = rnd_below(rnd_below(10) == 0 ? sizeof line : 40);
                for (size_t k = 0; k < len; k++)
                    line[k] = (char)rnd();
            } else {
                /* plausible pieces glued at random */
                int parts = 1 + (int)rnd_below(5);
                for (int p = 0; p < parts; p++) {
                    const char *s = pieces[rnd_below(sizeof pieces / sizeof pieces[0])];
                    size_t n = strlen(s);
                    if (len + n < sizeof line) {
                        memcpy(line + len, s, n);
                        len += n;
                    }
                }
            }
            now += rnd_below(30);
            pf_marlin_feed_reply(m, line, len, now, NULL);
            if (rnd_below(4) == 0) {
                struct pf_error err;
                enum pf_status ignored = PF_OK; /* refusals are fine here */
                if (rnd_below(2) == 0)
                    ignored = pf_marlin_inject(m, "M105", &err);
                else if (rnd_below(50) == 0)
                    ignored = pf_marlin_pause(m, &err);
                else if (rnd_below(50) == 0)
                    ignored = pf_marlin_resume(m, &err);
                (void)ignored;
            }
            size_t olen;
            do {
                assert_int_equal(pf_marlin_next_output(m, now, out_buf, sizeof out_buf, &olen),
                                 PF_OK);
                assert_true(olen < PF_MARLIN_OUT_MAX);
                if (olen > 0)
                    assert_int_equal(out_buf[olen - 1], '\n');
            } while (olen > 0);
            struct pf_marlin_progress p = progress_of(m);
            assert_true(p.bytes_acked >= last.bytes_acked);
            assert_true(p.lines_acked >= last.lines_acked);
            assert_true(p.bytes_sent >= last.bytes_sent);
            assert_true(p.bytes_acked <= strlen(gcode));
            assert_true(p.in_flight <= cfg.window);
            last = p;
            if (pf_marlin_state(m) == PF_MARLIN_ERROR) {
                assert_true(pf_marlin_error(m)->msg[0] != '\0');
                pf_marlin_reset(m);
                start_text(m, &t, gcode);
                last = progress_of(m);
            } else if (pf_marlin_state(m) == PF_MARLIN_DONE) {
                start_text(m, &t, gcode);
                last = progress_of(m);
            }
        }
        pf_marlin_destroy(m);
    }
}

/* ----------------------------------------- a simulated Marlin on a bad link */

#define SIM_QUEUE 4096
#define SIM_LINE  300

struct sim_msg {
    int64_t at; /* delivery time */
    char text[SIM_LINE];
};

struct sim_queue {
    struct sim_msg msgs[SIM_QUEUE];
    size_t head, len;
};

struct sim {
    /* the link */
    struct sim_queue to_fw, to_host;
    unsigned corrupt_pct, lose_pct, lose_reply_pct, noise_pct, slow_pct, busy_pct;
    /* the firmware */
    long last_n;
    int64_t busy_until; /* processing a slow command until then */
    const char **want;  /* the file's commands, in order */
    size_t want_count;
    size_t accepted;
    size_t confirmations;
    bool mismatch;
};

static void sim_push(struct sim_queue *q, int64_t at, const char *text, size_t len)
{
    assert_true(q->len < SIM_QUEUE);
    struct sim_msg *msg = &q->msgs[(q->head + q->len) % SIM_QUEUE];
    if (len >= SIM_LINE)
        len = SIM_LINE - 1;
    memcpy(msg->text, text, len);
    msg->text[len] = '\0';
    msg->at = at;
    q->len++;
}

static struct sim_msg *sim_front(struct sim_queue *q)
{
    return q->len > 0 ? &q->msgs[q->head] : NULL;
}

static void sim_pop(struct sim_queue *q)
{
    q->head = (q->head + 1) % SIM_QUEUE;
    q->len--;
}

static void sim_reply(struct sim *s, int64_t at, const char *text)
{
    if (rnd_below(100) < s->noise_pct) {
        char junk[20];
        size_t n = 1 + rnd_below(sizeof junk);
        for (size_t i = 0; i < n; i++)
            junk[i] = (char)(1 + rnd_below(255));
        for (size_t i = 0; i < n; i++)
            junk[i] = junk[i] == '\n' ? '\x01' : junk[i];
        sim_push(&s->to_host, at, junk, n);
    }
    if (rnd_below(100) < s->lose_reply_pct)
        return;
    sim_push(&s->to_host, at, text, strlen(text));
}

static void sim_resend(struct sim *s, int64_t at, const char *why)
{
    char line[128];
    snprintf(line, sizeof line, "Error:%s, Last Line: %ld", why, s->last_n);
    sim_reply(s, at, line);
    snprintf(line, sizeof line, "Resend: %ld", s->last_n + 1);
    sim_reply(s, at, line);
    sim_reply(s, at, "ok");
}

/* Marlin's queue.cpp, as far as line numbers and checksums go. */
static void sim_process(struct sim *s, const char *line, int64_t now)
{
    size_t len = strlen(line);
    while (len > 0 && line[len - 1] == '\n')
        len--;
    const char *star = NULL; /* Marlin takes the last '*' (strrchr) */
    for (size_t i = 0; i < len; i++) {
        if (line[i] == '*')
            star = line + i;
    }
    const char *cmd = line;
    size_t cmd_len = len;
    if (len > 0 && line[0] == 'N') {
        char *end;
        long n = strtol(line + 1, &end, 10);
        bool m110 = strncmp(end, " M110", 5) == 0;
        if (n != s->last_n + 1 && !m110) {
            sim_resend(s, now, "Line Number is not Last Line Number+1");
            return;
        }
        if (star == NULL) {
            sim_resend(s, now, "No Checksum with line number");
            return;
        }
        long cs = strtol(star + 1, NULL, 10);
        if (cs != pf_marlin_checksum(line, (size_t)(star - line))) {
            sim_resend(s, now, "checksum mismatch");
            return;
        }
        s->last_n = n;
        cmd = *end == ' ' ? end + 1 : end;
        cmd_len = (size_t)(star - cmd);
        if (m110) {
            const char *p = cmd + 4;
            while (*p == ' ')
                p++;
            if (*p == 'N')
                p++;
            s->last_n = strtol(p, NULL, 10);
            sim_reply(s, now, "ok");
            return;
        }
        /* an accepted file command: it must be the next one (M105 is the
         * engine's own end-of-file confirmation; the file has none) */
        if (cmd_len == 4 && memcmp(cmd, "M105", 4) == 0) {
            s->confirmations++;
        } else if (s->accepted >= s->want_count || strlen(s->want[s->accepted]) != cmd_len ||
                   memcmp(s->want[s->accepted], cmd, cmd_len) != 0)
            s->mismatch = true;
        else
            s->accepted++;
    } else if (star != NULL) {
        sim_resend(s, now, "No Line Number with checksum");
        return;
    }
    int64_t done = now;
    if (rnd_below(100) < s->slow_pct) {
        done = now + 1500; /* longer than the host's timeout, and no busy */
        s->busy_until = done;
    } else if (rnd_below(100) < s->busy_pct) {
        for (int i = 1; i <= 3; i++)
            sim_reply(s, now + 400 * i, "echo:busy: processing");
        done = now + 1300;
        s->busy_until = done;
    }
    if (cmd_len >= 4 && memcmp(cmd, "M105", 4) == 0)
        sim_reply(s, done, "ok T:20.0 /0.0 B:21.0 /0.0 @:0 B@:0");
    else
        sim_reply(s, done, "ok");
}

static void sim_send(struct sim *s, const char *line, size_t len, int64_t now)
{
    if (rnd_below(100) < s->lose_pct)
        return;
    char copy[SIM_LINE];
    memcpy(copy, line, len);
    copy[len] = '\0';
    if (rnd_below(100) < s->corrupt_pct && len > 1) {
        size_t at = rnd_below((unsigned)len - 1);
        char c;
        do
            c = (char)(copy[at] ^ (char)(1 + rnd_below(255)));
        while (c == '\n' || c == '\0' || c == '*'); /* a '*' could fake a checksum */
        copy[at] = c;
    }
    sim_push(&s->to_fw, now + 1, copy, len);
}

static void run_sim(uint64_t seed, unsigned window, unsigned corrupt, unsigned lose,
                    unsigned lose_reply, unsigned noise, unsigned slow, unsigned busy)
{
    static struct sim s;
    static const char *want[2000];
    static char storage[2000][32];
    static char gcode[2000 * 48];
    memset(&s, 0, sizeof s);
    rng_state = seed * 0x2545f4914f6cdd1dull + 1;
    size_t g = 0;
    for (int i = 0; i < 2000; i++) {
        snprintf(storage[i], sizeof storage[i], "G1 X%d Y%d", i, (int)rnd_below(200));
        want[i] = storage[i];
        g += (size_t)snprintf(gcode + g, sizeof gcode - g, "%s%s\n", storage[i],
                              i % 7 == 0 ? " ; comment" : "");
    }
    s.want = want;
    s.want_count = 2000;
    s.last_n = 4711; /* whatever an earlier session left */
    s.corrupt_pct = corrupt;
    s.lose_pct = lose;
    s.lose_reply_pct = lose_reply;
    s.noise_pct = noise;
    s.slow_pct = slow;
    s.busy_pct = busy;

    struct pf_marlin_config cfg;
    pf_marlin_config_init(&cfg);
    cfg.window = window;
    cfg.reply_timeout_ms = 1000;
    cfg.probe_attempts = 8;
    cfg.max_resends = 50;
    struct pf_marlin *m = engine_with(&cfg);
    struct pf_marlin_text t;
    start_text(m, &t, gcode);
    int64_t now = 0;
    struct pf_marlin_progress last = progress_of(m);
    for (int steps = 0; steps < 2000000; steps++) {
        enum pf_marlin_state st = pf_marlin_state(m);
        if (st == PF_MARLIN_DONE || st == PF_MARLIN_ERROR)
            break;
        size_t len;
        char out[PF_MARLIN_OUT_MAX];
        assert_int_equal(pf_marlin_next_output(m, now, out, sizeof out, &len), PF_OK);
        if (len > 0) {
            sim_send(&s, out, len, now);
            continue;
        }
        /* the firmware takes the next line once it is free */
        struct sim_msg *in = sim_front(&s.to_fw);
        if (in != NULL && in->at <= now && s.busy_until <= now) {
            char line[SIM_LINE];
            memcpy(line, in->text, sizeof line);
            sim_pop(&s.to_fw);
            sim_process(&s, line, now);
            continue;
        }
        struct sim_msg *reply = sim_front(&s.to_host);
        if (reply != NULL && reply->at <= now) {
            pf_marlin_feed_reply(m, reply->text, strlen(reply->text), now, NULL);
            sim_pop(&s.to_host);
            struct pf_marlin_progress p = progress_of(m);
            assert_true(p.bytes_acked >= last.bytes_acked);
            assert_true(p.lines_acked >= last.lines_acked);
            last = p;
            continue;
        }
        /* nothing to do now: jump to the next event */
        int64_t wake = now + 100000;
        if (in != NULL)
            wake = in->at > s.busy_until ? in->at : s.busy_until;
        if (reply != NULL && reply->at < wake)
            wake = reply->at;
        int64_t w = pf_marlin_wait_ms(m, now);
        if (w >= 0 && now + w < wake)
            wake = now + w;
        now = wake > now ? wake : now + 1;
    }
    if (pf_marlin_state(m) != PF_MARLIN_DONE)
        fail_msg("seed %llu window %u: state %s (%s) after %zu lines", (unsigned long long)seed,
                 window, pf_marlin_state_name(pf_marlin_state(m)), pf_marlin_error(m)->msg,
                 s.accepted);
    if (s.mismatch || s.accepted != 2000)
        fail_msg("seed %llu window %u: %zu lines accepted, out of order: %d",
                 (unsigned long long)seed, window, s.accepted, s.mismatch);
    struct pf_marlin_progress p = progress_of(m);
    assert_int_equal(p.bytes_acked, strlen(gcode));
    assert_int_equal(p.lines_acked, 2000);
    /* the faults asked for did happen and were dealt with */
    struct pf_marlin_stats st = stats_of(m);
    if (getenv("PF_SIM_VERBOSE") != NULL)
        print_message("seed %llu w%u: written %llu resent %llu resends %llu ignored %llu "
                      "cs %llu ln %llu timeouts %llu busy %llu garbage %llu unexpected %llu\n",
                      (unsigned long long)seed, window, (unsigned long long)st.lines_written,
                      (unsigned long long)st.lines_resent, (unsigned long long)st.resends,
                      (unsigned long long)st.resends_ignored,
                      (unsigned long long)st.checksum_errors,
                      (unsigned long long)st.line_number_errors, (unsigned long long)st.timeouts,
                      (unsigned long long)st.busy, (unsigned long long)st.garbage_lines,
                      (unsigned long long)st.unexpected_oks);
    assert_true(corrupt == 0 || st.resends > 0);
    assert_true(lose + slow == 0 || st.timeouts > 0);
    assert_true(busy == 0 || st.busy > 0);
    assert_true(noise == 0 || st.garbage_lines > 0);
    assert_true(st.lines_written >= 2001);
    if (s.confirmations != 1)
        fail_msg("seed %llu: the closing M105 was taken %zu times", (unsigned long long)seed,
                 s.confirmations);
    pf_marlin_destroy(m);
}

static void test_sim_clean_link(void **state)
{
    for (unsigned w = 1; w <= 8; w *= 2)
        run_sim(w, w, 0, 0, 0, 0, 0, 0);
}

static void test_sim_corruption(void **state)
{
    for (uint64_t seed = 1; seed <= 6; seed++)
        run_sim(seed, seed % 2 ? 1 : 4, 5, 0, 0, 0, 0, 0);
}

static void test_sim_lost_lines_and_replies(void **state)
{
    for (uint64_t seed = 1; seed <= 6; seed++)
        run_sim(seed, seed % 3 == 0 ? 3 : 1, 0, 1, 1, 0, 0, 0);
}

static void test_sim_slow_busy_noise(void **state)
{
    for (uint64_t seed = 1; seed <= 6; seed++)
        run_sim(seed, seed % 2 ? 1 : 2, 0, 0, 0, 3, 1, 2);
}

static void test_sim_everything(void **state)
{
    /* PF_SIM_SEEDS=N runs N seeds instead of 10, for a soak */
    const char *env = getenv("PF_SIM_SEEDS");
    uint64_t seeds = env != NULL ? strtoull(env, NULL, 10) : 10;
    for (uint64_t seed = 1; seed <= seeds; seed++)
        run_sim(seed + 100, 1 + (unsigned)(seed % 4), 3, 1, 1, 2, 1, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checksum_known_lines),
        cmocka_unit_test(test_format_line),
        cmocka_unit_test(test_clean_line),
        cmocka_unit_test(test_clean_line_limits),
        cmocka_unit_test(test_text_source),
        cmocka_unit_test(test_parse_ok_and_temps),
        cmocka_unit_test(test_parse_resend),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_other_kinds),
        cmocka_unit_test(test_parse_garbage),
        cmocka_unit_test(test_create_rejects_bad_config),
        cmocka_unit_test(test_stream_basic),
        cmocka_unit_test(test_empty_file_is_done),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_resend_after_checksum_error),
        cmocka_unit_test(test_resend_only_and_rs),
        cmocka_unit_test(test_resend_from_earlier_line),
        cmocka_unit_test(test_resend_forward_skips_accepted),
        cmocka_unit_test(test_resend_not_in_history),
        cmocka_unit_test(test_resend_window_ignores_repeats),
        cmocka_unit_test(test_resend_of_sync_line),
        cmocka_unit_test(test_numbering_reset_not_taken),
        cmocka_unit_test(test_end_of_file_needs_the_closing_m105),
        cmocka_unit_test(test_resend_streak_limit),
        cmocka_unit_test(test_busy_keeps_waiting),
        cmocka_unit_test(test_temperatures),
        cmocka_unit_test(test_fatal_errors),
        cmocka_unit_test(test_non_fatal_error_continues),
        cmocka_unit_test(test_firmware_reset),
        cmocka_unit_test(test_timeout_stopped_answering),
        cmocka_unit_test(test_timeout_lost_line),
        cmocka_unit_test(test_timeout_lost_ok),
        cmocka_unit_test(test_timeout_slow_ok),
        cmocka_unit_test(test_probe_answered_with_plain_ok),
        cmocka_unit_test(test_garbage_is_counted),
        cmocka_unit_test(test_garbage_run_and_silence),
        cmocka_unit_test(test_pause_resume_inject),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_bad_file),
        cmocka_unit_test(test_set_error_and_next_output_args),
        cmocka_unit_test(test_random_replies_never_crash),
        cmocka_unit_test(test_sim_clean_link),
        cmocka_unit_test(test_sim_corruption),
        cmocka_unit_test(test_sim_lost_lines_and_replies),
        cmocka_unit_test(test_sim_slow_busy_noise),
        cmocka_unit_test(test_sim_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
