/* Fuzz target: the host side of the Marlin serial protocol
 * (services/agent/marlin_proto.c) fed by a hostile printer. The input is the
 * printer's side of a session: byte 0 picks the engine's settings, the rest
 * is split at '\n' into reply lines. A line starting with 0x01 is a control
 * step instead (its next byte: pause, resume, cancel, inject, a silence
 * longer than the reply timeout, a reset, a new print). Every reply line also
 * goes through the pure pieces: pf_marlin_parse_reply and
 * pf_marlin_clean_line (then pf_marlin_format_line).
 *
 * Oracles: the header's promises. Progress never moves backwards between
 * resets and never passes the file; no more lines in flight than the window;
 * every numbered line handed out carries the right checksum and fits
 * PF_MARLIN_OUT_MAX; after a reset no line of the forgotten print goes out
 * again, whatever the printer asks; a classified reply's text points into
 * its line. */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "marlin_proto.h"

#define CONTROL 0x01

static const char gcode[] = "; a small print\n"
                            "G28 ; home\n"
                            "M104 S200\n"
                            "G1 X10 Y10 F3000\n"
                            "\n"
                            "N7 G1 X20*55\n"
                            "M110 N0\n"
                            "G1 X30 E1.5 ; extrude\n"
                            "M107";

struct session {
    struct pf_marlin *m;
    struct pf_marlin_text text[2]; /* the print's source and a spare for the next start */
    unsigned current;              /* index of the print's source in text */
    struct pf_marlin_progress last;
    unsigned window;
    int64_t now;
    bool forgotten; /* reset since the last print started: none of its lines may go out */
};

/* Commands only the file has (M107 is in the cancel sequence too). */
static const char *const file_only[] = {"G28", "M104 S200", "G1 X10 Y10 F3000", "G1 X20",
                                        "G1 X30 E1.5"};

/* Checks one line handed out by the engine (s NULL: from format_line). */
static void check_output(const struct session *s, const char *out, size_t len)
{
    FUZZ_CHECK(len < PF_MARLIN_OUT_MAX && out[len] == '\0' && strlen(out) == len);
    FUZZ_CHECK(len >= 2 && out[len - 1] == '\n');
    if (out[0] != 'N')
        return; /* an unnumbered probe */
    const char *star = memchr(out, '*', len);
    FUZZ_CHECK(star != NULL);
    unsigned declared = (unsigned)strtoul(star + 1, NULL, 10);
    FUZZ_CHECK(declared == pf_marlin_checksum(out, (size_t)(star - out)));
    const char *cmd = memchr(out, ' ', (size_t)(star - out));
    if (s == NULL || !s->forgotten || cmd == NULL)
        return;
    cmd++;
    for (size_t i = 0; i < sizeof(file_only) / sizeof(file_only[0]); i++) {
        size_t n = strlen(file_only[i]);
        FUZZ_CHECK(!((size_t)(star - cmd) == n && memcmp(cmd, file_only[i], n) == 0));
    }
}

static void check_progress(struct session *s)
{
    struct pf_marlin_progress p;
    pf_marlin_progress(s->m, &p);
    FUZZ_CHECK(p.bytes_acked <= p.bytes_sent);
    FUZZ_CHECK(p.bytes_sent <= sizeof(gcode) - 1);
    FUZZ_CHECK(p.lines_acked <= p.lines_sent);
    FUZZ_CHECK(p.in_flight <= s->window);
    FUZZ_CHECK(p.bytes_acked >= s->last.bytes_acked);
    FUZZ_CHECK(p.lines_acked >= s->last.lines_acked);
    s->last = p;
}

/* Hands out everything the engine wants to write now. */
static void drain(struct session *s)
{
    char out[PF_MARLIN_OUT_MAX];
    for (int i = 0; i < 4 * PF_MARLIN_WINDOW_MAX + PF_MARLIN_INJECT_MAX; i++) {
        size_t len = 0;
        FUZZ_CHECK(pf_marlin_next_output(s->m, s->now, out, sizeof(out), &len) == PF_OK);
        if (len == 0)
            break;
        check_output(s, out, len);
    }
    check_progress(s);
}

/* Starts a print from the spare source: a refused start (a print is still
 * running) must leave the running print's source alone. */
static void start_print(struct session *s)
{
    unsigned spare = s->current ^ 1;
    struct pf_marlin_source src = {.next = pf_marlin_text_next, .ctx = &s->text[spare]};
    struct pf_error err;
    pf_marlin_text_init(&s->text[spare], gcode, sizeof(gcode) - 1);
    enum pf_status rc = pf_marlin_start(s->m, &src, sizeof(gcode) - 1, &err);
    FUZZ_CHECK(rc == PF_OK || rc == PF_E_PRECONDITION);
    if (rc == PF_OK) {
        s->current = spare;
        s->forgotten = false;
        memset(&s->last, 0, sizeof(s->last));
    }
}

/* Pause, resume, cancel and inject may be refused in the state the fuzzer
 * drove the engine to: that is fine, only crashes and broken promises count. */
static void may_refuse(enum pf_status rc)
{
    FUZZ_CHECK(rc == PF_OK || rc == PF_E_PRECONDITION || rc == PF_E_RESOURCE);
}

static void control(struct session *s, uint8_t op)
{
    struct pf_error err;
    switch (op % 7) {
    case 0:
        may_refuse(pf_marlin_pause(s->m, &err));
        break;
    case 1:
        may_refuse(pf_marlin_resume(s->m, &err));
        break;
    case 2:
        may_refuse(pf_marlin_cancel(s->m, &err));
        break;
    case 3:
        may_refuse(pf_marlin_inject(s->m, "M105", &err));
        break;
    case 4:
        s->now += 31000; /* past the default reply timeout */
        break;
    case 5:
        pf_marlin_reset(s->m);
        s->forgotten = true;
        memset(&s->last, 0, sizeof(s->last));
        break;
    default:
        start_print(s);
        break;
    }
}

/* The pure pieces over one reply line. */
static void pure_pieces(const char *line, size_t len)
{
    struct pf_marlin_reply r;
    char cmd[PF_MARLIN_CMD_MAX + 1], out[PF_MARLIN_OUT_MAX];
    size_t cmd_len = 0, out_len = 0;
    struct pf_error err;

    pf_marlin_parse_reply(line, len, &r);
    FUZZ_CHECK(r.kind <= PF_MARLIN_REPLY_INFO);
    if (r.text_len > 0)
        FUZZ_CHECK(r.text >= line && r.text + r.text_len <= line + len);
    if (pf_marlin_clean_line(line, len, cmd, sizeof(cmd), &cmd_len, &err) == PF_OK) {
        FUZZ_CHECK(cmd_len <= PF_MARLIN_CMD_MAX && strlen(cmd) == cmd_len);
        if (cmd_len > 0 &&
            pf_marlin_format_line(4294967295u, cmd, cmd_len, out, sizeof(out), &out_len) == PF_OK)
            check_output(NULL, out, out_len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pf_marlin_config cfg;
    struct session s = {.now = 1000};
    struct pf_error err;

    if (size == 0)
        return 0;
    pf_marlin_config_init(&cfg);
    cfg.window = 1 + (data[0] & 7);
    cfg.history = PF_MARLIN_HISTORY_MIN + 2 * cfg.window + (data[0] >> 3); /* >= 2 windows */
    cfg.max_garbage_run = 5;
    s.window = cfg.window;
    FUZZ_CHECK(pf_marlin_create(&cfg, &s.m, &err) == PF_OK);
    start_print(&s);
    drain(&s);

    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        if (len >= 2 && (uint8_t)p[0] == CONTROL) {
            control(&s, (uint8_t)p[1]);
        } else {
            struct pf_marlin_reply r;
            pure_pieces(p, len);
            s.now += 10;
            pf_marlin_feed_reply(s.m, p, len, s.now, &r);
            if (r.text_len > 0)
                FUZZ_CHECK(r.text >= p && r.text + r.text_len <= p + len);
        }
        drain(&s);
        FUZZ_CHECK(pf_marlin_wait_ms(s.m, s.now) >= -1);
        FUZZ_CHECK(pf_marlin_state_name(pf_marlin_state(s.m)) != NULL);
        p += len + 1;
    }
    pf_marlin_destroy(s.m);
    return 0;
}
