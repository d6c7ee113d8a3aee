/* Integration tests of the marlin protocol engine (marlin_proto.c) and the
 * serial port code (serial.c) against vprinter, a virtual Marlin printer on a
 * pseudo-terminal: a generated gcode file of a few thousand lines (moves,
 * comments, blank lines, heating) is streamed through a real tty in raw mode,
 * once per fault vprinter can inject, and vprinter's summary (count and FNV
 * of the commands it took, in order) proves the file arrived exactly once and
 * in order. The faults that must end a print (a firmware that stops
 * answering, answers garbage, halts on thermal runaway or resets) must put
 * the engine in the error state with a reason a person understands. Pause,
 * injection, resume and cancel run against it too, and serial.c's own
 * contract (errors naming the port, bounded lines, timeouts, disconnects) is
 * checked on a bare pty. */
#define _GNU_SOURCE /* posix_openpt, ptsname, pipe2, mkstemps */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "marlin_proto.h"
#include "serial.h"
#include "timeutil.h"

#ifndef PF_VPRINTER_PATH
#error "PF_VPRINTER_PATH must name the vprinter binary"
#endif

extern char **environ;

/* Generous: sanitizer builds on a loaded 2-core machine are slow. */
#define STREAM_BUDGET_MS 180000
#define FILE_LINES       3000

/* ---------------------------------------------------------- the printer */

struct vprinter {
    pid_t pid;
    int out; /* its stdout */
    char pty[256];
    char log[64]; /* its stderr */
    char buf[8192];
    size_t len;
};

struct summary {
    unsigned long accepted, m105, unnumbered, rejected;
    uint64_t fnv;
    char last[128];
};

/* Reads vp's stdout until a line end is buffered or the deadline passes. */
static bool read_stdout_line(struct vprinter *vp, int64_t deadline, char *line, size_t cap)
{
    for (;;) {
        char *nl = memchr(vp->buf, '\n', vp->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - vp->buf);
            snprintf(line, cap, "%.*s", (int)n, vp->buf);
            memmove(vp->buf, nl + 1, vp->len - n - 1);
            vp->len -= n + 1;
            return true;
        }
        int64_t left = deadline - pf_time_mono_ms();
        if (left <= 0 || vp->len == sizeof vp->buf)
            return false;
        struct pollfd p = {.fd = vp->out, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        ssize_t got = read(vp->out, vp->buf + vp->len, sizeof vp->buf - vp->len);
        if (got <= 0)
            return false;
        vp->len += (size_t)got;
    }
}

static void vprinter_start(struct vprinter *vp, const char *const *flags)
{
    memset(vp, 0, sizeof *vp);
    int pipefd[2];
    assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
    snprintf(vp->log, sizeof vp->log, "/tmp/vprinter-XXXXXX.log");
    int log = mkstemps(vp->log, 4);
    assert_true(log >= 0);
    const char *argv[24] = {PF_VPRINTER_PATH};
    size_t argc = 1;
    for (; flags != NULL && flags[argc - 1] != NULL; argc++) {
        assert_true(argc < 23);
        argv[argc] = flags[argc - 1];
    }
    argv[argc] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, log, 2);
    int rc = posix_spawn(&vp->pid, PF_VPRINTER_PATH, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    close(log);
    if (rc != 0)
        fail_msg("could not start %s: %s", PF_VPRINTER_PATH, strerror(rc));
    vp->out = pipefd[0];
    if (!read_stdout_line(vp, pf_time_mono_ms() + 20000, vp->pty, sizeof vp->pty))
        fail_msg("vprinter printed no pty path (log %s)", vp->log);
    assert_memory_equal(vp->pty, "/dev/", 5);
}

/* Waits for vprinter's summary (it exits when the host closes the pty) and
 * reaps it. */
static struct summary vprinter_finish(struct vprinter *vp)
{
    struct summary s;
    memset(&s, 0, sizeof s);
    char line[512] = "";
    bool got = read_stdout_line(vp, pf_time_mono_ms() + 20000, line, sizeof line);
    if (!got) {
        kill(vp->pid, SIGTERM);
        got = read_stdout_line(vp, pf_time_mono_ms() + 10000, line, sizeof line);
    }
    int status = 0;
    for (int i = 0; i < 100 && waitpid(vp->pid, &status, WNOHANG) == 0; i++) {
        if (i == 50)
            kill(vp->pid, SIGKILL);
        pf_time_sleep_ms(100);
    }
    close(vp->out);
    if (!got)
        fail_msg("no summary from vprinter (log %s)", vp->log);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("vprinter ended badly, wait status 0x%x (log %s)", (unsigned)status, vp->log);
    char *last = strstr(line, " last=");
    if (last != NULL) {
        snprintf(s.last, sizeof s.last, "%s", last + 6);
        *last = '\0';
    }
    if (sscanf(line, "summary accepted=%lu fnv=%" SCNx64 " m105=%lu unnumbered=%lu rejected=%lu",
               &s.accepted, &s.fnv, &s.m105, &s.unnumbered, &s.rejected) != 5)
        fail_msg("bad summary '%s' (log %s)", line, vp->log);
    unlink(vp->log);
    return s;
}

/* ------------------------------------------------------------ the file */

struct gfile {
    char *text;
    size_t len;
    char **cmds; /* the commands the printer must take, in order */
    size_t count;
};

static uint64_t fnv_add(uint64_t h, const char *cmd)
{
    for (const char *c = cmd; *c; c++) {
        h ^= (uint8_t)*c;
        h *= 0x100000001b3ull;
    }
    h ^= (uint8_t)'\n';
    return h * 0x100000001b3ull;
}

#define FNV_START 0xcbf29ce484222325ull

static uint64_t fnv_cmds(const struct gfile *g, size_t from, size_t to, uint64_t h)
{
    for (size_t i = from; i < to; i++)
        h = fnv_add(h, g->cmds[i]);
    return h;
}

static void add_line(struct gfile *g, size_t *cap, const char *raw, const char *cmd)
{
    size_t n = strlen(raw);
    assert_true(g->len + n + 2 < *cap);
    memcpy(g->text + g->len, raw, n);
    g->len += n;
    g->text[g->len++] = '\n';
    if (cmd != NULL) {
        g->cmds[g->count] = strdup(cmd);
        assert_non_null(g->cmds[g->count]);
        g->count++;
    }
}

/* A slicer-like file: heating, homing, moves with comments, blank and
 * whitespace-only lines, CRLF and tabs, messages with parentheses. */
static void gen_gcode(struct gfile *g, unsigned lines)
{
    size_t cap = (size_t)lines * 96 + 4096;
    g->text = malloc(cap);
    g->cmds = calloc(lines + 32, sizeof *g->cmds);
    assert_non_null(g->text);
    assert_non_null(g->cmds);
    g->len = 0;
    g->count = 0;
    add_line(g, &cap, "; generated by test_marlin_pty", NULL);
    add_line(g, &cap, "M140 S60 ; bed", "M140 S60");
    add_line(g, &cap, "M104 S200", "M104 S200");
    add_line(g, &cap, "M190 S60 ; wait for the bed", "M190 S60");
    add_line(g, &cap, "M109 S200", "M109 S200");
    add_line(g, &cap, "G28 ; home", "G28");
    add_line(g, &cap, "G92 E0", "G92 E0");
    char raw[256], cmd[160];
    for (unsigned i = 0; i < lines; i++) {
        double x = 10 + (i * 7919 % 2000) / 10.0, y = 10 + (i * 104729 % 2000) / 10.0;
        if (i % 50 == 0) {
            snprintf(raw, sizeof raw, ";LAYER:%u", i / 50);
            add_line(g, &cap, raw, NULL);
        } else if (i % 37 == 0) {
            add_line(g, &cap, i % 2 ? "" : "   \t  ", NULL);
        } else if (i % 13 == 0) {
            snprintf(cmd, sizeof cmd, "G1 X%.3f Y%.3f E%.5f", x, y, i * 0.0123);
            snprintf(raw, sizeof raw, "%s ; move %u", cmd, i);
            add_line(g, &cap, raw, cmd);
        } else if (i % 29 == 0) {
            snprintf(cmd, sizeof cmd, "G0 F9000 X%.1f Y%.1f", x, y);
            snprintf(raw, sizeof raw, "\t%s\r", cmd);
            add_line(g, &cap, raw, cmd);
        } else if (i % 97 == 0) {
            snprintf(cmd, sizeof cmd, "M117 Layer %u (of many)", i / 50);
            add_line(g, &cap, cmd, cmd);
        } else {
            snprintf(cmd, sizeof cmd, "G1 X%.3f Y%.3f E%.5f", x, y, i * 0.0123);
            add_line(g, &cap, cmd, cmd);
        }
    }
    add_line(g, &cap, "M104 S0", "M104 S0");
    add_line(g, &cap, "M140 S0", "M140 S0");
    add_line(g, &cap, "M84 ; motors off", "M84");
    add_line(g, &cap, "; end of file", NULL);
}

static void gfile_free(struct gfile *g)
{
    for (size_t i = 0; i < g->count; i++)
        free(g->cmds[i]);
    free(g->cmds);
    free(g->text);
}

/* ------------------------------------------------------------ the host */

struct host {
    struct vprinter vp;
    struct pf_serial *port;
    struct pf_marlin *m;
    struct pf_marlin_text text;
    struct gfile g;
};

static struct pf_marlin_config test_config(unsigned window, int64_t timeout_ms, unsigned probes)
{
    struct pf_marlin_config cfg;
    pf_marlin_config_init(&cfg);
    cfg.window = window;
    cfg.reply_timeout_ms = timeout_ms;
    cfg.probe_attempts = probes;
    return cfg;
}

static void host_open(struct host *h, const char *const *flags, unsigned baud,
                      const struct pf_marlin_config *cfg)
{
    memset(h, 0, sizeof *h);
    vprinter_start(&h->vp, flags);
    struct pf_error err;
    if (pf_serial_open(h->vp.pty, baud, &h->port, &err) != PF_OK)
        fail_msg("pf_serial_open: %s", err.msg);
    if (pf_marlin_create(cfg, &h->m, &err) != PF_OK)
        fail_msg("pf_marlin_create: %s", err.msg);
    gen_gcode(&h->g, FILE_LINES);
}

static void host_start(struct host *h)
{
    struct pf_error err;
    pf_marlin_text_init(&h->text, h->g.text, h->g.len);
    struct pf_marlin_source src = {.next = pf_marlin_text_next, .ctx = &h->text};
    assert_int_equal(pf_marlin_start(h->m, &src, h->g.len, &err), PF_OK);
}

static bool finished(enum pf_marlin_state st)
{
    return st == PF_MARLIN_DONE || st == PF_MARLIN_ERROR || st == PF_MARLIN_CANCELLED;
}

typedef void (*tick_fn)(struct host *h, void *ctx);

/* The agent's loop in miniature: write what the engine hands out, read one
 * line (waiting no longer than the engine's timer), feed it, repeat. */
static void drive(struct host *h, tick_fn tick, void *ctx)
{
    int64_t deadline = pf_time_mono_ms() + STREAM_BUDGET_MS;
    char out[PF_MARLIN_OUT_MAX];
    char line[PF_MARLIN_REPLY_MAX + 2]; /* a longer reply arrives cut and is garbage */
    struct pf_error err;
    while (!finished(pf_marlin_state(h->m))) {
        if (pf_time_mono_ms() > deadline)
            fail_msg("the print did not end in time (state %s)",
                     pf_marlin_state_name(pf_marlin_state(h->m)));
        size_t len;
        for (;;) {
            assert_int_equal(pf_marlin_next_output(h->m, pf_time_mono_ms(), out, sizeof out, &len),
                             PF_OK);
            if (len == 0)
                break;
            enum pf_status st = pf_serial_write_all(h->port, out, len, 5000, &err);
            if (st != PF_OK)
                (void)pf_marlin_set_error(h->m, st, "%s", err.msg);
        }
        if (tick != NULL)
            tick(h, ctx);
        if (finished(pf_marlin_state(h->m)))
            break;
        int64_t wait = pf_marlin_wait_ms(h->m, pf_time_mono_ms());
        int64_t timeout = wait < 0 || wait > 50 ? 50 : wait;
        enum pf_status st =
            pf_serial_read_line(h->port, timeout, line, sizeof line, &len, NULL, &err);
        if (st == PF_OK)
            pf_marlin_feed_reply(h->m, line, len, pf_time_mono_ms(), NULL);
        else if (st != PF_E_DEADLINE)
            (void)pf_marlin_set_error(h->m, st, "%s", err.msg);
    }
}

/* Closes the port (vprinter then exits) and returns its summary. */
static struct summary host_close(struct host *h)
{
    pf_serial_close(h->port);
    h->port = NULL;
    struct summary s = vprinter_finish(&h->vp);
    pf_marlin_destroy(h->m);
    h->m = NULL;
    return s;
}

static struct pf_marlin_stats stats_of(const struct host *h)
{
    struct pf_marlin_stats s;
    pf_marlin_stats(h->m, &s);
    return s;
}

/* Streams the whole file and checks it arrived exactly once, in order. */
static struct pf_marlin_stats stream_ok(const char *const *flags, unsigned baud,
                                        const struct pf_marlin_config *cfg)
{
    struct host h;
    host_open(&h, flags, baud, cfg);
    host_start(&h);
    drive(&h, NULL, NULL);
    if (pf_marlin_state(h.m) != PF_MARLIN_DONE)
        fail_msg("state %s: %s (vprinter log %s)", pf_marlin_state_name(pf_marlin_state(h.m)),
                 pf_marlin_error(h.m)->msg, h.vp.log);
    struct pf_marlin_progress p;
    pf_marlin_progress(h.m, &p);
    assert_int_equal(p.bytes_acked, h.g.len);
    assert_int_equal(p.bytes_total, h.g.len);
    assert_int_equal(p.lines_acked, h.g.count);
    struct pf_marlin_stats st = stats_of(&h);
    struct gfile g = h.g;
    struct summary s = host_close(&h);
    assert_int_equal(s.accepted, g.count);
    assert_int_equal(s.fnv, fnv_cmds(&g, 0, g.count, FNV_START));
    assert_string_equal(s.last, g.cmds[g.count - 1]);
    assert_true(s.m105 >= 1); /* the M105 that closes every print */
    gfile_free(&g);
    return st;
}

/* ------------------------------------------------------ streaming cases */

static void test_clean_115200(void **state)
{
    struct pf_marlin_config cfg = test_config(1, 5000, 3);
    struct pf_marlin_stats s = stream_ok(NULL, 115200, &cfg);
    assert_int_equal(s.resends, 0);
    assert_int_equal(s.garbage_lines, 0);
    assert_int_equal(s.timeouts, 0);
}

static void test_clean_250000_window4(void **state)
{
    struct pf_marlin_config cfg = test_config(4, 5000, 3);
    struct pf_marlin_stats s = stream_ok(NULL, 250000, &cfg);
    assert_int_equal(s.resends, 0);
}

static void test_checksum_errors(void **state)
{
    const char *flags[] = {"--checksum-errors-every", "7", NULL};
    struct pf_marlin_config cfg = test_config(1, 5000, 3);
    struct pf_marlin_stats s = stream_ok(flags, 115200, &cfg);
    assert_true(s.checksum_errors > 100);
    assert_true(s.resends > 100);
    assert_true(s.lines_resent > 100);
}

static void test_checksum_errors_window4(void **state)
{
    const char *flags[] = {"--checksum-errors-every", "13", NULL};
    struct pf_marlin_config cfg = test_config(4, 5000, 3);
    struct pf_marlin_stats s = stream_ok(flags, 250000, &cfg);
    assert_true(s.checksum_errors > 50);
    assert_true(s.resends_ignored > 0); /* the lines in flight behind a bad one */
    assert_true(s.line_number_errors > 0);
}

static void test_resend_requests(void **state)
{
    const char *flags[] = {"--resend-every", "11", NULL};
    struct pf_marlin_config cfg = test_config(1, 5000, 3);
    struct pf_marlin_stats s = stream_ok(flags, 115200, &cfg);
    assert_true(s.resends > 100);
    assert_int_equal(s.checksum_errors, 0);
}

static void test_busy_and_heating(void **state)
{
    const char *flags[] = {"--busy-every", "50", NULL};
    struct pf_marlin_config cfg = test_config(1, 5000, 3);
    struct host h;
    host_open(&h, flags, 115200, &cfg);
    host_start(&h);
    drive(&h, NULL, NULL);
    assert_int_equal(pf_marlin_state(h.m), PF_MARLIN_DONE);
    struct pf_marlin_stats s = stats_of(&h);
    assert_true(s.busy > 60);        /* busy-every plus the heating waits */
    assert_true(s.temp_reports > 6); /* M109/M190 report while heating */
    struct pf_marlin_temps t;
    pf_marlin_temps(h.m, &t);
    /* the file turned both heaters off at the end */
    assert_true(t.tool[0].valid && t.tool[0].has_target);
    assert_float_equal(t.tool[0].target, 0.0, 1e-9);
    assert_float_equal(t.tool[0].actual, 200.0, 1e-9);
    assert_float_equal(t.bed.actual, 60.0, 1e-9);
    struct gfile g = h.g;
    struct summary sum = host_close(&h);
    assert_int_equal(sum.accepted, g.count);
    assert_int_equal(sum.fnv, fnv_cmds(&g, 0, g.count, FNV_START));
    gfile_free(&g);
}

static void test_noise(void **state)
{
    const char *flags[] = {"--noise-every", "5", NULL};
    struct pf_marlin_config cfg = test_config(2, 5000, 3);
    struct pf_marlin_stats s = stream_ok(flags, 115200, &cfg);
    assert_true(s.garbage_lines > 300);
}

static void test_lost_lines(void **state)
{
    const char *flags[] = {"--lose-every", "400", NULL};
    struct pf_marlin_config cfg = test_config(1, 300, 5);
    struct pf_marlin_stats s = stream_ok(flags, 115200, &cfg);
    assert_true(s.timeouts >= 5);
    assert_true(s.probes >= 5);
}

static void test_lost_oks(void **state)
{
    const char *flags[] = {"--lose-ok-every", "350", NULL};
    struct pf_marlin_config cfg = test_config(1, 300, 5);
    struct pf_marlin_stats s = stream_ok(flags, 115200, &cfg);
    assert_true(s.timeouts >= 5);
    assert_true(s.line_number_errors >= 5); /* the repeats refused by number */
}

static void test_auto_report(void **state)
{
    const char *flags[] = {"--report-interval-ms", "5", NULL};
    struct pf_marlin_config cfg = test_config(1, 5000, 3);
    struct host h;
    host_open(&h, flags, 115200, &cfg);
    struct pf_error err;
    assert_int_equal(pf_marlin_inject(h.m, "M155 S1 ; auto-report", &err), PF_OK);
    host_start(&h);
    drive(&h, NULL, NULL);
    assert_int_equal(pf_marlin_state(h.m), PF_MARLIN_DONE);
    /* Reports interleave with the oks all through the print; how many depends
     * on how fast this machine streams, so only "several" is asserted. */
    assert_true(stats_of(&h).temp_reports >= 3);
    struct gfile g = h.g;
    struct summary s = host_close(&h);
    /* the injected M155 went first */
    assert_int_equal(s.accepted, g.count + 1);
    assert_int_equal(s.fnv, fnv_cmds(&g, 0, g.count, fnv_add(FNV_START, "M155 S1")));
    gfile_free(&g);
}

/* Streams until the engine fails and checks the reason. */
static struct summary stream_fails(const char *const *flags, const struct pf_marlin_config *cfg,
                                   const char *reason, struct pf_marlin_progress *progress)
{
    struct host h;
    host_open(&h, flags, 115200, cfg);
    host_start(&h);
    drive(&h, NULL, NULL);
    assert_int_equal(pf_marlin_state(h.m), PF_MARLIN_ERROR);
    const char *msg = pf_marlin_error(h.m)->msg;
    if (reason != NULL && strstr(msg, reason) == NULL)
        fail_msg("reason '%s' does not say '%s'", msg, reason);
    print_message("    reason: %s\n", msg);
    pf_marlin_progress(h.m, progress);
    assert_true(progress->bytes_acked < h.g.len);
    gfile_free(&h.g);
    return host_close(&h);
}

static void test_firmware_dies(void **state)
{
    const char *flags[] = {"--die-after-lines", "200", NULL};
    struct pf_marlin_config cfg = test_config(1, 200, 2);
    struct pf_marlin_progress p;
    struct summary s = stream_fails(flags, &cfg, "stopped answering", &p);
    assert_int_equal(s.accepted, 200);
    assert_int_equal(p.lines_acked, 200);
}

static void test_garbage_only(void **state)
{
    const char *flags[] = {"--garbage-only", NULL};
    struct pf_marlin_config cfg = test_config(1, 200, 2);
    struct pf_marlin_progress p;
    struct summary s = stream_fails(flags, &cfg, NULL, &p);
    assert_int_equal(s.accepted, 0);
    assert_int_equal(p.lines_acked, 0);
}

static void test_thermal_runaway(void **state)
{
    const char *flags[] = {"--thermal-runaway-after", "300", NULL};
    struct pf_marlin_config cfg = test_config(1, 5000, 3);
    struct pf_marlin_progress p;
    struct summary s = stream_fails(flags, &cfg, "Thermal Runaway", &p);
    assert_int_equal(s.accepted, 300);
    assert_true(p.lines_acked < 300); /* its ok never came */
}

static void test_firmware_reset(void **state)
{
    const char *flags[] = {"--reset-after", "150", NULL};
    struct pf_marlin_config cfg = test_config(1, 5000, 3);
    struct pf_marlin_progress p;
    struct summary s = stream_fails(flags, &cfg, "reset during print", &p);
    assert_int_equal(s.accepted, 150);
}

/* -------------------------------------------- pause, inject, resume, cancel */

struct pause_plan {
    enum { BEFORE, PAUSED, INJECTED, RESUMED } step;
    uint64_t at;      /* file commands taken when the pause settled */
    uint64_t written; /* lines written when the command was injected */
};

static void pause_tick(struct host *h, void *ctx)
{
    struct pause_plan *plan = ctx;
    struct pf_marlin_progress p;
    pf_marlin_progress(h->m, &p);
    struct pf_error err;
    switch (plan->step) {
    case BEFORE:
        if (p.lines_sent >= 1000) {
            assert_int_equal(pf_marlin_pause(h->m, &err), PF_OK);
            plan->step = PAUSED;
        }
        break;
    case PAUSED:
        assert_int_equal(pf_marlin_state(h->m), PF_MARLIN_PAUSED);
        if (p.in_flight == 0) {
            /* settled: every line sent was taken, none more goes out */
            assert_int_equal(p.lines_acked, p.lines_sent);
            plan->at = p.lines_acked;
            plan->written = stats_of(h).lines_written;
            assert_int_equal(pf_marlin_inject(h->m, "M117 paused (test)", &err), PF_OK);
            plan->step = INJECTED;
        }
        break;
    case INJECTED:
        if (stats_of(h).lines_written > plan->written && p.in_flight == 0) {
            assert_int_equal(p.lines_sent, plan->at); /* still nothing from the file */
            assert_int_equal(pf_marlin_resume(h->m, &err), PF_OK);
            plan->step = RESUMED;
        }
        break;
    case RESUMED:
        break;
    }
}

static void test_pause_inject_resume(void **state)
{
    struct pf_marlin_config cfg = test_config(3, 5000, 3);
    struct host h;
    host_open(&h, NULL, 115200, &cfg);
    host_start(&h);
    struct pause_plan plan = {.step = BEFORE};
    drive(&h, pause_tick, &plan);
    assert_int_equal(plan.step, RESUMED);
    assert_int_equal(pf_marlin_state(h.m), PF_MARLIN_DONE);
    struct gfile g = h.g;
    struct summary s = host_close(&h);
    uint64_t want = fnv_cmds(&g, 0, plan.at, FNV_START);
    want = fnv_add(want, "M117 paused (test)");
    want = fnv_cmds(&g, plan.at, g.count, want);
    assert_int_equal(s.accepted, g.count + 1);
    assert_int_equal(s.fnv, want);
    gfile_free(&g);
}

static void cancel_tick(struct host *h, void *ctx)
{
    bool *cancelled = ctx;
    struct pf_marlin_progress p;
    pf_marlin_progress(h->m, &p);
    struct pf_error err;
    if (!*cancelled && p.lines_sent >= 500) {
        assert_int_equal(pf_marlin_cancel(h->m, &err), PF_OK);
        assert_int_equal(pf_marlin_state(h->m), PF_MARLIN_CANCELLING);
        *cancelled = true;
    }
}

static void test_cancel(void **state)
{
    struct pf_marlin_config cfg = test_config(2, 5000, 3);
    struct host h;
    host_open(&h, NULL, 115200, &cfg);
    host_start(&h);
    bool cancelled = false;
    drive(&h, cancel_tick, &cancelled);
    assert_int_equal(pf_marlin_state(h.m), PF_MARLIN_CANCELLED);
    struct pf_marlin_progress p;
    pf_marlin_progress(h.m, &p);
    assert_true(p.lines_acked >= 500 && p.lines_acked <= 502);
    struct gfile g = h.g;
    struct summary s = host_close(&h);
    static const char *const cancel_seq[] = {"M104 S0", "M140 S0", "M107", "M84"};
    uint64_t want = fnv_cmds(&g, 0, p.lines_acked, FNV_START);
    for (int i = 0; i < 4; i++)
        want = fnv_add(want, cancel_seq[i]);
    assert_int_equal(s.accepted, p.lines_acked + 4);
    assert_int_equal(s.fnv, want);
    assert_string_equal(s.last, "M84");
    gfile_free(&g);
}

/* ----------------------------------------------------------- serial.c */

/* A bare pty pair: the test plays the printer on the master side. */
static int open_master(char *slave, size_t cap)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    assert_true(master >= 0);
    assert_int_equal(grantpt(master), 0);
    assert_int_equal(unlockpt(master), 0);
    snprintf(slave, cap, "%s", ptsname(master));
    return master;
}

static void write_master(int master, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(master, s, n);
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

static void test_serial_open_errors(void **state)
{
    struct pf_serial *s = (struct pf_serial *)&s;
    struct pf_error err;
    assert_int_equal(pf_serial_open("/dev/ttyNOPE-test", 115200, &s, &err), PF_E_NOT_FOUND);
    assert_null(s);
    assert_non_null(strstr(err.msg, "could not open serial port '/dev/ttyNOPE-test'"));
    assert_non_null(strstr(err.msg, "plugged in"));
    assert_int_equal(pf_serial_open("/dev/null", 115200, &s, &err), PF_E_INVALID);
    assert_non_null(strstr(err.msg, "'/dev/null' is not a serial port"));
    assert_int_equal(pf_serial_open("/dev/null", 12345, &s, &err), PF_E_INVALID);
    assert_non_null(strstr(err.msg, "unsupported baud rate 12345"));
    assert_int_equal(pf_serial_open("", 115200, &s, &err), PF_E_INVALID);
    assert_int_equal(pf_serial_open(NULL, 115200, &s, &err), PF_E_INVALID);
    assert_true(pf_serial_baud_supported(57600));
    assert_true(pf_serial_baud_supported(115200));
    assert_true(pf_serial_baud_supported(250000));
    assert_false(pf_serial_baud_supported(0));
    assert_false(pf_serial_baud_supported(250001));
    if (geteuid() != 0) {
        /* root opens anything; for everyone else a mode-000 node says dialout */
        char path[] = "/tmp/pf-serial-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        assert_int_equal(chmod(path, 0), 0);
        assert_int_equal(pf_serial_open(path, 115200, &s, &err), PF_E_PERMISSION);
        assert_non_null(strstr(err.msg, "permission denied"));
        assert_non_null(strstr(err.msg, "dialout"));
        unlink(path);
    }
    pf_serial_close(NULL);
}

static void test_serial_lock(void **state)
{
    char slave[128];
    int master = open_master(slave, sizeof slave);
    struct pf_serial *a = NULL, *b = (struct pf_serial *)&b;
    struct pf_error err;
    assert_int_equal(pf_serial_open(slave, 250000, &a, &err), PF_OK);
    assert_string_equal(pf_serial_path(a), slave);
    assert_true(pf_serial_fd(a) >= 0);
    assert_int_equal(pf_serial_open(slave, 115200, &b, &err), PF_E_UNAVAILABLE);
    assert_null(b);
    assert_non_null(strstr(err.msg, "in use by another process"));
    pf_serial_close(a);
    assert_int_equal(pf_serial_open(slave, 115200, &b, &err), PF_OK);
    pf_serial_close(b);
    close(master);
}

static void test_serial_lines(void **state)
{
    char slave[128];
    int master = open_master(slave, sizeof slave);
    struct pf_serial *s;
    struct pf_error err;
    assert_int_equal(pf_serial_open(slave, 115200, &s, &err), PF_OK);
    char line[64];
    size_t len = 99;
    bool cut = true;
    /* nothing yet: a timeout, with 0 and with a wait */
    assert_int_equal(pf_serial_read_line(s, 0, line, sizeof line, &len, &cut, &err), PF_E_DEADLINE);
    int64_t t0 = pf_time_mono_ms();
    assert_int_equal(pf_serial_read_line(s, 100, line, sizeof line, &len, &cut, &err),
                     PF_E_DEADLINE);
    assert_true(pf_time_mono_ms() - t0 >= 90);
    assert_non_null(strstr(err.msg, slave));
    /* raw mode: '\r' and binary bytes arrive as sent */
    write_master(master, "ok\r\nT:2", 7);
    assert_int_equal(pf_serial_read_line(s, 1000, line, sizeof line, &len, &cut, &err), PF_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(line, "ok\r", 4);
    assert_false(cut);
    /* a partial line waits for its end */
    assert_int_equal(pf_serial_read_line(s, 50, line, sizeof line, &len, &cut, &err),
                     PF_E_DEADLINE);
    write_master(master, "0.5\n\x01\xff\x00z\n", 9);
    assert_int_equal(pf_serial_read_line(s, 1000, line, sizeof line, &len, &cut, &err), PF_OK);
    assert_string_equal(line, "T:20.5");
    assert_int_equal(pf_serial_read_line(s, 1000, line, sizeof line, &len, &cut, &err), PF_OK);
    assert_int_equal(len, 4);
    assert_memory_equal(line, "\x01\xff\x00z", 4);
    /* a line longer than the caller's buffer is cut, the rest dropped */
    char big[300];
    memset(big, 'A', sizeof big);
    big[sizeof big - 1] = '\n';
    write_master(master, big, sizeof big);
    write_master(master, "ok\n", 3);
    assert_int_equal(pf_serial_read_line(s, 1000, line, sizeof line, &len, &cut, &err), PF_OK);
    assert_true(cut);
    assert_int_equal(len, sizeof line - 1);
    assert_int_equal(pf_serial_read_line(s, 1000, line, sizeof line, &len, &cut, &err), PF_OK);
    assert_string_equal(line, "ok");
    assert_false(cut);
    /* no newline for longer than PF_SERIAL_RX_MAX: handed out cut once, the
     * rest dropped up to the next line end; memory stays bounded */
    char chunk[1024];
    memset(chunk, 'B', sizeof chunk);
    int cut_lines = 0;
    for (int i = 0; i < 3 * PF_SERIAL_RX_MAX / (int)sizeof chunk; i++) {
        write_master(master, chunk, sizeof chunk);
        enum pf_status st = pf_serial_read_line(s, 20, line, sizeof line, &len, &cut, &err);
        if (st == PF_OK) {
            assert_true(cut);
            assert_int_equal(len, sizeof line - 1);
            cut_lines++;
        } else {
            assert_int_equal(st, PF_E_DEADLINE);
        }
    }
    write_master(master, "\nok\n", 4);
    for (;;) {
        assert_int_equal(pf_serial_read_line(s, 1000, line, sizeof line, &len, &cut, &err), PF_OK);
        if (!cut)
            break;
        cut_lines++;
    }
    assert_string_equal(line, "ok");
    assert_int_equal(cut_lines, 1);
    pf_serial_close(s);
    close(master);
}

static void test_serial_write_and_disconnect(void **state)
{
    char slave[128];
    int master = open_master(slave, sizeof slave);
    struct pf_serial *s;
    struct pf_error err;
    assert_int_equal(pf_serial_open(slave, 115200, &s, &err), PF_OK);
    assert_int_equal(pf_serial_write_all(s, "N1 G28*18\n", 10, 1000, &err), PF_OK);
    char got[16] = "";
    for (size_t have = 0; have < 10;) {
        ssize_t n = read(master, got + have, sizeof got - 1 - have);
        assert_true(n > 0);
        have += (size_t)n;
    }
    assert_string_equal(got, "N1 G28*18\n");
    /* nobody reads: the pty fills up and the write gives up in time */
    size_t big = 1 << 20;
    char *data = calloc(1, big);
    assert_non_null(data);
    int64_t t0 = pf_time_mono_ms();
    assert_int_equal(pf_serial_write_all(s, data, big, 200, &err), PF_E_DEADLINE);
    assert_true(pf_time_mono_ms() - t0 < 5000);
    assert_non_null(strstr(err.msg, "timed out"));
    free(data);
    /* the printer goes away */
    close(master);
    char line[64];
    size_t len;
    enum pf_status st = PF_OK;
    for (int i = 0; i < 100 && st == PF_OK; i++)
        st = pf_serial_read_line(s, 1000, line, sizeof line, &len, NULL, &err);
    assert_int_equal(st, PF_E_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "disconnected"));
    assert_int_equal(pf_serial_write_all(s, "M105\n", 5, 1000, &err), PF_E_UNAVAILABLE);
    pf_serial_close(s);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serial_open_errors),
        cmocka_unit_test(test_serial_lock),
        cmocka_unit_test(test_serial_lines),
        cmocka_unit_test(test_serial_write_and_disconnect),
        cmocka_unit_test(test_clean_115200),
        cmocka_unit_test(test_clean_250000_window4),
        cmocka_unit_test(test_checksum_errors),
        cmocka_unit_test(test_checksum_errors_window4),
        cmocka_unit_test(test_resend_requests),
        cmocka_unit_test(test_busy_and_heating),
        cmocka_unit_test(test_noise),
        cmocka_unit_test(test_lost_lines),
        cmocka_unit_test(test_lost_oks),
        cmocka_unit_test(test_auto_report),
        cmocka_unit_test(test_firmware_dies),
        cmocka_unit_test(test_garbage_only),
        cmocka_unit_test(test_thermal_runaway),
        cmocka_unit_test(test_firmware_reset),
        cmocka_unit_test(test_pause_inject_resume),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
