/* The `sim` printer driver: a simulated printer for demos, tests and
 * benchmarks. A print heats for heat_seconds, then runs for the gcode's
 * estimated time (from its slicer comments, else the scheduler's metadata,
 * else 60 s) times the speed factor; progress follows the clock. Faults are
 * injected at a chosen percentage: a plain failure, a dropped link, a thermal
 * runaway, or a print that never ends.
 *
 * The simulated printer has its own memory (state_path), like a printer that
 * prints from its SD card: the print it runs survives an agent restart and is
 * picked up again by the next agent, measured by the wall clock. Every print
 * that ends is appended to the sim log exactly once — before the memory is
 * updated, and after a restart only if the log does not already name the
 * attempt — so the log is the ground truth of what was printed.
 *
 * No thread: every op and poll recomputes the state from the clock under the
 * printer's mutex. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "driver.h"
#include "gcode_meta.h"
#include "log.h"
#include "statefile.h"
#include "timeutil.h"

#define SIM_MAGIC        "pf-sim-printer 1"
#define AMBIENT_C        22.0
#define DEFAULT_NOZZLE_C 215.0
#define DEFAULT_BED_C    60.0
#define DEFAULT_PRINT_S  60
#define COOL_TIME_MS     20000.0

struct sim {
    struct pf_driver base;
    pthread_mutex_t mu;
    struct pf_sim_config cfg;
    char printer_id[PF_DRIVER_ID_MAX];
    char state_path[PATH_MAX]; /* "" = no memory */

    bool connected;
    int64_t down_until_ms; /* link dropped (fault): connect fails until then */
    int64_t error_until_ms;
    char error[PF_DRIVER_TEXT_MAX];

    /* The print running, or the last one (attempt "" = none ever). */
    char attempt_id[PF_DRIVER_ID_MAX];
    char job_id[PF_DRIVER_ID_MAX];
    bool running;
    enum pf_driver_result result;
    char reason[PF_DRIVER_TEXT_MAX];
    int64_t start_ms, heat_ms, print_ms;
    int64_t paused_total_ms, paused_since_ms; /* paused_since 0 = not paused */
    double fault_at;                          /* fraction of the print; < 0 = none */
    int64_t ended_ms;
    double nozzle_target, bed_target;

    int64_t clear_until_ms; /* 0 = not clearing */
    uint32_t clearings;
};

static const struct pf_driver_ops sim_ops;

enum pf_status pf_sim_fault_parse(const char *text, enum pf_sim_fault *out)
{
    static const char *const names[] = {"none", "disconnect", "thermal", "never-finish"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (text != NULL && strcmp(text, names[i]) == 0) {
            *out = (enum pf_sim_fault)i;
            return PF_OK;
        }
    return PF_E_INVALID;
}

/* ---- the printer's memory ---- */

static void save(struct sim *s)
{
    char text[2048];
    struct pf_error err;
    int n;

    if (s->state_path[0] == '\0')
        return;
    n = snprintf(text, sizeof(text),
                 SIM_MAGIC "\nattempt %s\njob %s\nrunning %d\nstart_ms %lld\nheat_ms %lld\n"
                           "print_ms %lld\npaused_total_ms %lld\npaused_since_ms %lld\n"
                           "fault_at %.6f\nresult %s\nended_ms %lld\nnozzle_target %.1f\n"
                           "bed_target %.1f\nreason %s\nend\n",
                 s->attempt_id[0] ? s->attempt_id : "-", s->job_id[0] ? s->job_id : "-",
                 s->running ? 1 : 0, (long long)s->start_ms, (long long)s->heat_ms,
                 (long long)s->print_ms, (long long)s->paused_total_ms,
                 (long long)s->paused_since_ms, s->fault_at, pf_driver_result_name(s->result),
                 (long long)s->ended_ms, s->nozzle_target, s->bed_target, s->reason);
    if (n < 0 || (size_t)n >= sizeof(text) ||
        pf_statefile_write_atomic(s->state_path, text, (size_t)n, &err) != PF_OK)
        pf_log_error("sim_state_write_failed", "printer=%s path=%s error=\"%s\"", s->printer_id,
                     s->state_path, n < 0 || (size_t)n >= sizeof(text) ? "too long" : err.msg);
}

static bool parse_i64(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0')
        return false;
    *out = x;
    return true;
}

static bool parse_double(const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !isfinite(x))
        return false;
    *out = x;
    return true;
}

static bool parse_result(const char *v, enum pf_driver_result *out)
{
    for (int r = PF_DRIVER_RESULT_NONE; r <= PF_DRIVER_RESULT_CANCELLED; r++)
        if (strcmp(v, pf_driver_result_name((enum pf_driver_result)r)) == 0) {
            *out = (enum pf_driver_result)r;
            return true;
        }
    return false;
}

static bool parse_id(const char *v, char *out)
{
    if (strlen(v) >= PF_DRIVER_ID_MAX || strchr(v, ' ') != NULL)
        return false;
    snprintf(out, PF_DRIVER_ID_MAX, "%s", strcmp(v, "-") == 0 ? "" : v);
    return true;
}

/* Reads the printer's memory; PF_E_NOT_FOUND leaves s as a fresh printer. */
static enum pf_status load(struct sim *s, struct pf_error *err)
{
    char *text = NULL, *line, *save_ptr = NULL;
    size_t len, no = 0;
    bool ended = false;
    int64_t running = 0;
    enum pf_status rc;

    rc = pf_statefile_slurp(s->state_path, 16384, &text, &len, err);
    if (rc != PF_OK)
        return rc;
    rc = PF_OK;
    for (line = strtok_r(text, "\n", &save_ptr); line != NULL && rc == PF_OK;
         line = strtok_r(NULL, "\n", &save_ptr)) {
        char *value = strchr(line, ' ');
        bool ok;

        no++;
        if (no == 1) {
            ok = strcmp(line, SIM_MAGIC) == 0;
        } else if (strcmp(line, "end") == 0) {
            ended = true;
            ok = true;
        } else if (value == NULL) {
            ok = false;
        } else {
            *value++ = '\0';
            if (strcmp(line, "attempt") == 0)
                ok = parse_id(value, s->attempt_id);
            else if (strcmp(line, "job") == 0)
                ok = parse_id(value, s->job_id);
            else if (strcmp(line, "running") == 0)
                ok = parse_i64(value, &running);
            else if (strcmp(line, "start_ms") == 0)
                ok = parse_i64(value, &s->start_ms);
            else if (strcmp(line, "heat_ms") == 0)
                ok = parse_i64(value, &s->heat_ms);
            else if (strcmp(line, "print_ms") == 0)
                ok = parse_i64(value, &s->print_ms);
            else if (strcmp(line, "paused_total_ms") == 0)
                ok = parse_i64(value, &s->paused_total_ms);
            else if (strcmp(line, "paused_since_ms") == 0)
                ok = parse_i64(value, &s->paused_since_ms);
            else if (strcmp(line, "fault_at") == 0)
                ok = parse_double(value, &s->fault_at);
            else if (strcmp(line, "result") == 0)
                ok = parse_result(value, &s->result);
            else if (strcmp(line, "ended_ms") == 0)
                ok = parse_i64(value, &s->ended_ms);
            else if (strcmp(line, "nozzle_target") == 0)
                ok = parse_double(value, &s->nozzle_target);
            else if (strcmp(line, "bed_target") == 0)
                ok = parse_double(value, &s->bed_target);
            else if (strcmp(line, "reason") == 0)
                ok = snprintf(s->reason, sizeof(s->reason), "%s", value) >= 0;
            else
                ok = false;
        }
        if (!ok)
            rc = pf_error_set(err, PF_E_DATA_LOSS,
                              "simulated printer memory '%s' is corrupt at line %zu: move it "
                              "away to start with an idle printer",
                              s->state_path, no);
    }
    free(text);
    if (rc == PF_OK && !ended)
        rc = pf_error_set(err, PF_E_DATA_LOSS,
                          "simulated printer memory '%s' was cut short: move it away to start "
                          "with an idle printer",
                          s->state_path);
    s->running = running != 0;
    if (rc == PF_OK && s->running && (s->attempt_id[0] == '\0' || s->print_ms < 0))
        rc = pf_error_set(err, PF_E_DATA_LOSS, "simulated printer memory '%s' names no print",
                          s->state_path);
    return rc;
}

/* ---- the sim log ---- */

/* The result of attempt's line in the log, or PF_DRIVER_RESULT_NONE when the
 * log has none. Read with pread, so the shared O_APPEND descriptor's offset
 * does not matter. */
static enum pf_driver_result log_find(int fd, const char *attempt)
{
    char buf[65536];
    size_t keep = 0, alen = strlen(attempt);
    off_t off = 0;
    bool whole = true; /* buf starts at the start of a line */

    for (;;) {
        ssize_t n = pread(fd, buf + keep, sizeof(buf) - keep - 1, off);
        size_t have, start = 0;

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return PF_DRIVER_RESULT_NONE;
        off += n;
        have = keep + (size_t)n;
        for (size_t i = 0; i < have; i++) {
            if (buf[i] != '\n')
                continue;
            if (whole && i - start > alen && memcmp(buf + start, attempt, alen) == 0 &&
                buf[start + alen] == ' ') {
                size_t sp = i;
                while (buf[sp - 1] != ' ')
                    sp--; /* stops at the space after the attempt id at the latest */
                const char *last = buf + sp - 1;
                size_t wlen = i - sp;

                for (int r = PF_DRIVER_RESULT_SUCCEEDED; r <= PF_DRIVER_RESULT_CANCELLED; r++) {
                    const char *name = pf_driver_result_name((enum pf_driver_result)r);
                    if (strlen(name) == wlen && memcmp(last + 1, name, wlen) == 0)
                        return (enum pf_driver_result)r;
                }
                return PF_DRIVER_RESULT_FAILED;
            }
            whole = true;
            start = i + 1;
        }
        keep = have - start;
        if (keep >= sizeof(buf) / 2) { /* an absurd line: skip it */
            keep = 0;
            whole = false;
        }
        memmove(buf, buf + start, keep);
    }
}

static void log_print(struct sim *s)
{
    char line[3 * PF_DRIVER_ID_MAX + 64];
    int n;

    if (s->cfg.log_fd < 0)
        return;
    n = snprintf(line, sizeof(line), "%s %s %s %s\n", s->attempt_id, s->job_id[0] ? s->job_id : "-",
                 s->printer_id, pf_driver_result_name(s->result));
    if (n > 0 && (size_t)n < sizeof(line) && write(s->cfg.log_fd, line, (size_t)n) != n)
        pf_log_error("sim_log_write_failed", "printer=%s error=\"%s\"", s->printer_id,
                     strerror(errno));
}

/* ---- the clock ---- */

/* Milliseconds of the print that have run (pauses excluded). */
static int64_t run_ms(const struct sim *s, int64_t now)
{
    int64_t paused = s->paused_total_ms + (s->paused_since_ms ? now - s->paused_since_ms : 0);
    int64_t t = now - s->start_ms - paused;
    return t < 0 ? 0 : t;
}

static double progress_at(const struct sim *s, int64_t now)
{
    int64_t t = run_ms(s, now) - s->heat_ms;

    if (t <= 0)
        return 0.0;
    if (s->print_ms <= 0)
        return 1.0;
    return (double)t / (double)s->print_ms;
}

/* Ends the running print: log first, then memory (see the file comment). */
static void end_print(struct sim *s, enum pf_driver_result result, int64_t now, const char *fmt,
                      ...) PF_PRINTF(4, 5);
static void end_print(struct sim *s, enum pf_driver_result result, int64_t now, const char *fmt,
                      ...)
{
    va_list ap;

    s->running = false;
    s->result = result;
    s->ended_ms = now;
    s->paused_since_ms = 0;
    s->reason[0] = '\0';
    if (fmt != NULL) {
        va_start(ap, fmt);
        vsnprintf(s->reason, sizeof(s->reason), fmt, ap);
        va_end(ap);
    }
    log_print(s);
    save(s);
    pf_log_info("sim_print_ended", "printer=%s attempt=%s result=%s", s->printer_id, s->attempt_id,
                pf_driver_result_name(result));
}

/* Moves the simulation to now: finishes prints, injects faults, ends
 * clearing and recovers from errors. */
static void advance(struct sim *s, int64_t now)
{
    if (s->running && s->paused_since_ms == 0) {
        double p = progress_at(s, now);
        enum pf_sim_fault fault = s->cfg.fault;

        if (s->fault_at >= 0 && p >= s->fault_at && fault != PF_SIM_FAULT_NEVER_FINISH) {
            int pct = (int)lround(s->fault_at * 100);
            if (fault == PF_SIM_FAULT_THERMAL) {
                snprintf(s->error, sizeof(s->error),
                         "thermal runaway on T0 at %d%% (injected fault): heater off", pct);
                s->error_until_ms = now + (int64_t)(s->cfg.recover_seconds * 1000);
                end_print(s, PF_DRIVER_RESULT_FAILED, now, "%s", s->error);
            } else if (fault == PF_SIM_FAULT_DISCONNECT) {
                s->connected = false;
                s->down_until_ms = now + (int64_t)(s->cfg.recover_seconds * 1000);
                snprintf(s->error, sizeof(s->error),
                         "lost the link to the printer at %d%% (injected fault)", pct);
                end_print(s, PF_DRIVER_RESULT_FAILED, now, "%s", s->error);
            } else {
                end_print(s, PF_DRIVER_RESULT_FAILED, now, "print failed at %d%% (injected)", pct);
            }
        } else if (p >= 1.0 && !(fault == PF_SIM_FAULT_NEVER_FINISH && s->fault_at >= 0)) {
            end_print(s, PF_DRIVER_RESULT_SUCCEEDED, now, NULL);
        }
    }
    if (s->clear_until_ms != 0 && now >= s->clear_until_ms) {
        s->clear_until_ms = 0;
        s->clearings++;
    }
    if (s->error_until_ms != 0 && now >= s->error_until_ms) {
        s->error_until_ms = 0;
        s->error[0] = '\0';
    }
}

static double ramp(double target, double frac)
{
    return AMBIENT_C + (target - AMBIENT_C) * (frac < 0 ? 0 : frac > 1 ? 1 : frac);
}

static void temps(const struct sim *s, int64_t now, struct pf_driver_status *out)
{
    double nozzle = AMBIENT_C, bed = AMBIENT_C, nt = 0, bt = 0;

    if (s->running) {
        int64_t t = run_ms(s, now);
        double frac = s->heat_ms > 0 ? (double)t / (double)s->heat_ms : 1.0;

        nt = s->nozzle_target;
        bt = s->bed_target;
        nozzle = ramp(nt, frac);
        bed = ramp(bt, frac);
    } else if (s->ended_ms != 0) {
        double k = exp(-(double)(now - s->ended_ms) / COOL_TIME_MS);

        nozzle = AMBIENT_C + (s->nozzle_target - AMBIENT_C) * k;
        bed = AMBIENT_C + (s->bed_target - AMBIENT_C) * k;
    }
    for (uint32_t i = 0; i < s->cfg.extruders && out->temp_count < PF_DRIVER_TEMPS_MAX - 1; i++) {
        struct pf_driver_temp *t = &out->temps[out->temp_count++];
        snprintf(t->sensor, sizeof(t->sensor), "T%u", i);
        t->actual = i == 0 ? nozzle : AMBIENT_C;
        t->target = i == 0 ? nt : 0;
    }
    struct pf_driver_temp *b = &out->temps[out->temp_count++];
    snprintf(b->sensor, sizeof(b->sensor), "bed");
    b->actual = bed;
    b->target = bt;
}

/* ---- ops ---- */

static enum pf_status sim_connect(struct pf_driver *d, struct pf_error *err)
{
    struct sim *s = (struct sim *)d;
    int64_t now = pf_time_wall_ms();
    enum pf_status rc = PF_OK;

    pthread_mutex_lock(&s->mu);
    advance(s, now);
    if (s->down_until_ms > now)
        rc = pf_error_set(err, PF_E_UNAVAILABLE,
                          "simulated printer '%s' does not answer (link down for %lld ms more)",
                          s->printer_id, (long long)(s->down_until_ms - now));
    else
        s->connected = true;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* The print's length in ms: the file's own estimate, else the scheduler's. */
static void plan(struct sim *s, const struct pf_driver_job *job)
{
    struct pf_gcode_meta meta;
    uint32_t seconds = job->estimated_seconds;
    int fd = open(job->path, O_RDONLY | O_CLOEXEC);

    s->nozzle_target = DEFAULT_NOZZLE_C;
    s->bed_target = DEFAULT_BED_C;
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) == 0 && st.st_size > 0) {
            void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (map != MAP_FAILED) {
                if (pf_gcode_meta_parse(map, (size_t)st.st_size, &meta, NULL) == PF_OK) {
                    if (meta.found & PF_GCODE_META_ESTIMATED_SECONDS)
                        seconds = meta.estimated_seconds;
                    if ((meta.found & PF_GCODE_META_FIRST_LAYER_NOZZLE_C) &&
                        meta.first_layer_nozzle_c > 0)
                        s->nozzle_target = meta.first_layer_nozzle_c;
                    if (meta.found & PF_GCODE_META_FIRST_LAYER_BED_C)
                        s->bed_target = meta.first_layer_bed_c;
                }
                munmap(map, (size_t)st.st_size);
            }
        }
        close(fd);
    }
    if (seconds == 0)
        seconds = DEFAULT_PRINT_S;
    s->print_ms = (int64_t)llround((double)seconds * 1000.0 * s->cfg.speed);
    s->heat_ms = (int64_t)llround(s->cfg.heat_seconds * 1000.0);
}

static enum pf_status sim_start(struct pf_driver *d, const struct pf_driver_job *job,
                                struct pf_error *err)
{
    struct sim *s = (struct sim *)d;
    int64_t now = pf_time_wall_ms();
    enum pf_status rc = PF_OK;

    if (access(job->path, R_OK) != 0)
        return pf_error_set(err, errno == ENOENT ? PF_E_NOT_FOUND : PF_E_IO,
                            "cannot read gcode file '%s': %s", job->path, strerror(errno));
    pthread_mutex_lock(&s->mu);
    advance(s, now);
    if (!s->connected) {
        rc = pf_error_set(err, PF_E_PRECONDITION, "simulated printer '%s' is not connected",
                          s->printer_id);
    } else if (s->running || s->clear_until_ms != 0 || s->error_until_ms != 0) {
        rc = pf_error_set(err, PF_E_PRECONDITION, "simulated printer '%s' is busy (%s)",
                          s->printer_id,
                          s->running          ? s->attempt_id
                          : s->clear_until_ms ? "clearing"
                                              : s->error);
    } else {
        snprintf(s->attempt_id, sizeof(s->attempt_id), "%s", job->attempt_id);
        snprintf(s->job_id, sizeof(s->job_id), "%s", job->job_id != NULL ? job->job_id : "");
        plan(s, job);
        s->running = true;
        s->result = PF_DRIVER_RESULT_NONE;
        s->reason[0] = '\0';
        s->start_ms = now;
        s->paused_total_ms = 0;
        s->paused_since_ms = 0;
        s->ended_ms = 0;
        s->fault_at = -1;
        if (s->cfg.fail_at >= 0)
            s->fault_at = s->cfg.fail_at / 100.0;
        else if (s->cfg.fault != PF_SIM_FAULT_NONE)
            s->fault_at = 0.5;
        save(s);
        pf_log_info("sim_print_started",
                    "printer=%s attempt=%s heat_ms=%lld print_ms=%lld fault_at=%.2f", s->printer_id,
                    s->attempt_id, (long long)s->heat_ms, (long long)s->print_ms, s->fault_at);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static enum pf_status sim_cancel(struct pf_driver *d, struct pf_error *err)
{
    struct sim *s = (struct sim *)d;
    int64_t now = pf_time_wall_ms();
    enum pf_status rc = PF_OK;

    pthread_mutex_lock(&s->mu);
    advance(s, now);
    if (!s->running)
        rc = pf_error_set(err, PF_E_PRECONDITION, "nothing is printing on '%s'", s->printer_id);
    else
        end_print(s, PF_DRIVER_RESULT_CANCELLED, now, "cancelled");
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static enum pf_status sim_pause(struct pf_driver *d, struct pf_error *err)
{
    struct sim *s = (struct sim *)d;
    int64_t now = pf_time_wall_ms();
    enum pf_status rc = PF_OK;

    pthread_mutex_lock(&s->mu);
    advance(s, now);
    if (!s->running || s->paused_since_ms != 0) {
        rc = pf_error_set(err, PF_E_PRECONDITION, "'%s' is not printing", s->printer_id);
    } else {
        s->paused_since_ms = now;
        save(s);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static enum pf_status sim_resume(struct pf_driver *d, struct pf_error *err)
{
    struct sim *s = (struct sim *)d;
    int64_t now = pf_time_wall_ms();
    enum pf_status rc = PF_OK;

    pthread_mutex_lock(&s->mu);
    advance(s, now);
    if (!s->running || s->paused_since_ms == 0) {
        rc = pf_error_set(err, PF_E_PRECONDITION, "'%s' is not paused", s->printer_id);
    } else {
        s->paused_total_ms += now - s->paused_since_ms;
        s->paused_since_ms = 0;
        save(s);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static enum pf_status sim_run_clearing(struct pf_driver *d, struct pf_error *err)
{
    struct sim *s = (struct sim *)d;
    int64_t now = pf_time_wall_ms();
    enum pf_status rc = PF_OK;

    pthread_mutex_lock(&s->mu);
    advance(s, now);
    if (!s->connected || s->running || s->clear_until_ms != 0 || s->error_until_ms != 0)
        rc = pf_error_set(err, PF_E_PRECONDITION, "'%s' is not idle: cannot clear the bed",
                          s->printer_id);
    else
        s->clear_until_ms = now + (int64_t)(s->cfg.clear_seconds * 1000) + 1;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void sim_poll(struct pf_driver *d, struct pf_driver_status *out)
{
    struct sim *s = (struct sim *)d;
    int64_t now = pf_time_wall_ms();

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->mu);
    advance(s, now);
    snprintf(out->attempt_id, sizeof(out->attempt_id), "%s", s->attempt_id);
    out->result = s->running ? PF_DRIVER_RESULT_NONE : s->result;
    snprintf(out->reason, sizeof(out->reason), "%s", s->reason);
    if (s->running) {
        double p = progress_at(s, now);
        if (s->fault_at >= 0 && p > s->fault_at)
            p = s->fault_at; /* never-finish stalls here */
        out->progress = (float)(p > 1 ? 1 : p);
        out->elapsed_seconds = (uint32_t)(run_ms(s, now) / 1000);
        int64_t left = s->heat_ms + s->print_ms - run_ms(s, now);
        out->remaining_seconds = left > 0 ? (uint32_t)((left + 999) / 1000) : 0;
    } else if (s->result == PF_DRIVER_RESULT_SUCCEEDED) {
        out->progress = 1.0f;
    }
    if (!s->connected) {
        out->state = PF_DRIVER_DISCONNECTED;
        snprintf(out->error, sizeof(out->error), "%s",
                 s->down_until_ms > now && s->error[0] ? s->error : "not connected");
    } else if (s->error_until_ms != 0) {
        out->state = PF_DRIVER_ERROR;
        snprintf(out->error, sizeof(out->error), "%s", s->error);
    } else if (s->running) {
        out->state = s->paused_since_ms            ? PF_DRIVER_PAUSED
                     : run_ms(s, now) < s->heat_ms ? PF_DRIVER_HEATING
                                                   : PF_DRIVER_PRINTING;
    } else if (s->clear_until_ms != 0) {
        out->state = PF_DRIVER_CLEARING;
    } else {
        out->state = PF_DRIVER_IDLE;
    }
    out->clearings = s->clearings;
    out->clearing_ok = true;
    temps(s, now, out);
    pthread_mutex_unlock(&s->mu);
}

static void sim_caps(struct pf_driver *d, struct pf_driver_caps *out)
{
    struct sim *s = (struct sim *)d;

    memset(out, 0, sizeof(*out));
    snprintf(out->firmware, sizeof(out->firmware), "pf-sim 1");
    out->extruders = s->cfg.extruders;
    out->can_pause = true;
    out->auto_clear = true;
    out->bed_x_mm = 250;
    out->bed_y_mm = 210;
    out->bed_z_mm = 220;
}

static void sim_destroy(struct pf_driver *d)
{
    struct sim *s = (struct sim *)d;

    pthread_mutex_destroy(&s->mu);
    free(s);
}

static const struct pf_driver_ops sim_ops = {
    .name = "sim",
    .connect = sim_connect,
    .start = sim_start,
    .cancel = sim_cancel,
    .pause = sim_pause,
    .resume = sim_resume,
    .run_clearing = sim_run_clearing,
    .poll = sim_poll,
    .caps = sim_caps,
    .destroy = sim_destroy,
};

enum pf_status pf_driver_sim_create(const struct pf_sim_config *cfg, struct pf_driver **out,
                                    struct pf_error *err)
{
    struct sim *s = calloc(1, sizeof(*s));
    enum pf_status rc;

    if (s == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    s->base.ops = &sim_ops;
    pthread_mutex_init(&s->mu, NULL);
    s->cfg = *cfg;
    if (s->cfg.extruders < 1)
        s->cfg.extruders = 1;
    if (s->cfg.extruders > PF_DRIVER_TEMPS_MAX - 1)
        s->cfg.extruders = PF_DRIVER_TEMPS_MAX - 1;
    if (!(s->cfg.speed >= 0))
        s->cfg.speed = 1;
    snprintf(s->printer_id, sizeof(s->printer_id), "%s",
             cfg->printer_id != NULL ? cfg->printer_id : "sim");
    s->cfg.printer_id = s->printer_id;
    snprintf(s->state_path, sizeof(s->state_path), "%s",
             cfg->state_path != NULL ? cfg->state_path : "");
    s->cfg.state_path = s->state_path;
    s->fault_at = -1;
    s->nozzle_target = DEFAULT_NOZZLE_C;
    s->bed_target = DEFAULT_BED_C;
    if (s->state_path[0] != '\0') {
        rc = load(s, err);
        if (rc == PF_E_NOT_FOUND) {
            rc = PF_OK;
        } else if (rc == PF_OK && s->running) {
            /* A print from before the agent restarted: it ended while nobody
             * watched if its time is up; log it unless the log has it. */
            enum pf_driver_result logged =
                s->cfg.log_fd >= 0 ? log_find(s->cfg.log_fd, s->attempt_id) : PF_DRIVER_RESULT_NONE;
            if (logged != PF_DRIVER_RESULT_NONE) {
                s->running = false;
                s->result = logged;
                s->ended_ms = pf_time_wall_ms();
                save(s);
            }
            pf_log_info("sim_print_recovered", "printer=%s attempt=%s running=%d", s->printer_id,
                        s->attempt_id, s->running ? 1 : 0);
        }
        if (rc != PF_OK) {
            sim_destroy(&s->base);
            return rc;
        }
    }
    *out = &s->base;
    return PF_OK;
}
