/* The `marlin` printer driver: G-code over a serial port, as Marlin, Prusa
 * and most RepRap firmwares speak it. The protocol itself (line numbers,
 * checksums, ok/Resend/busy, temperature reports, silence probes, the cancel
 * sequence) is the pure engine of marlin_proto.h; the port is serial.h. This
 * file is the glue: one thread per printer moves bytes between the two, and
 * the driver ops (called from session threads) act on the engine under the
 * driver's mutex. The thread never holds the mutex across serial I/O.
 *
 * A print streams the cached gcode file (mapped read-only); the clearing
 * script runs the same way, as a print of its own. Progress is the share of
 * file bytes the firmware acknowledged. Temperatures come from auto-reports
 * (M155, asked for at connect) or, when the firmware has none, from M105
 * polls. A serial port that disappears or a firmware that halts puts the
 * printer in DISCONNECTED or ERROR with the reason, and a print running ends
 * FAILED with that reason; the session reconnects through connect. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "driver.h"
#include "log.h"
#include "marlin_proto.h"
#include "serial.h"
#include "statefile.h"
#include "timeutil.h"

#define READ_SLICE_MS    100
#define WRITE_TIMEOUT_MS 2000
#define TEMP_POLL_MS     3000
#define ERROR_RECOVER_MS 10000
#define CLEARING_MAX     (64 * 1024)
#define OUT_BATCH        8
#define FIRMWARE_WAIT_MS 3000

struct marlin_drv {
    struct pf_driver base;
    pthread_mutex_t mu; /* guards everything below but the serial I/O itself */
    char port_path[256];
    unsigned baud;
    struct pf_marlin_config engine_cfg;
    struct pf_driver_caps caps;
    char *clearing; /* the clearing script, NULL = none */
    size_t clearing_len;

    pthread_t thread;
    bool thread_running;
    atomic_bool stop;
    struct pf_serial *serial; /* owned by the thread while it runs */
    struct pf_marlin *m;

    bool connected;
    char error[PF_DRIVER_TEXT_MAX];
    int64_t error_since_ms; /* 0 = no error */

    /* The print (or clearing run) being streamed. */
    bool job_active;
    bool clearing_active;
    char attempt_id[PF_DRIVER_ID_MAX];
    enum pf_driver_result result;
    char reason[PF_DRIVER_TEXT_MAX];
    void *map;
    size_t map_len;
    struct pf_marlin_text text;
    int64_t started_ms;
    uint32_t clearings;
    bool clearing_ok;
    char clearing_error[PF_DRIVER_TEXT_MAX];

    int64_t last_temp_poll_ms;
    uint64_t resends;
};

static const struct pf_driver_ops marlin_ops;

static void unmap(struct marlin_drv *d)
{
    if (d->map != NULL && d->map != d->clearing)
        munmap(d->map, d->map_len);
    d->map = NULL;
    d->map_len = 0;
}

/* The job (or clearing run) ended: record it. d->mu held. */
static void end_job(struct marlin_drv *d, enum pf_driver_result result, const char *reason)
{
    if (d->clearing_active) {
        d->clearing_active = false;
        d->clearings++;
        d->clearing_ok = result == PF_DRIVER_RESULT_SUCCEEDED;
        snprintf(d->clearing_error, sizeof(d->clearing_error), "%s", reason ? reason : "");
    } else if (d->job_active) {
        d->job_active = false;
        d->result = result;
        snprintf(d->reason, sizeof(d->reason), "%s", reason ? reason : "");
        pf_log_info("marlin_print_ended", "port=%s attempt=%s result=%s", d->port_path,
                    d->attempt_id, pf_driver_result_name(result));
    }
    unmap(d);
}

/* Looks at the engine after every step. d->mu held. */
static void check_engine(struct marlin_drv *d, int64_t now)
{
    enum pf_marlin_state st = pf_marlin_state(d->m);
    struct pf_marlin_stats stats;

    pf_marlin_stats(d->m, &stats);
    d->resends = stats.resends;
    if (st == PF_MARLIN_DONE) {
        end_job(d, PF_DRIVER_RESULT_SUCCEEDED, NULL);
        pf_marlin_reset(d->m);
    } else if (st == PF_MARLIN_CANCELLED) {
        end_job(d, PF_DRIVER_RESULT_CANCELLED, "cancelled");
        pf_marlin_reset(d->m);
    } else if (st == PF_MARLIN_ERROR && d->error_since_ms == 0) {
        const struct pf_error *e = pf_marlin_error(d->m);
        snprintf(d->error, sizeof(d->error), "%s", e->msg);
        d->error_since_ms = now;
        pf_log_error("marlin_error", "port=%s error=\"%s\"", d->port_path, d->error);
        end_job(d, PF_DRIVER_RESULT_FAILED, d->error);
    } else if (st == PF_MARLIN_ERROR && now - d->error_since_ms > ERROR_RECOVER_MS) {
        /* Try again: if the firmware is still halted the probes say so. */
        pf_marlin_reset(d->m);
        d->error_since_ms = 0;
        d->error[0] = '\0';
    }
}

/* Notes the firmware's name from an M115 answer. d->mu held. */
static void note_firmware(struct marlin_drv *d, const char *line, size_t len)
{
    static const char key[] = "FIRMWARE_NAME:";
    char copy[PF_MARLIN_REPLY_MAX + 1];
    char *p, *end;

    if (len > PF_MARLIN_REPLY_MAX)
        len = PF_MARLIN_REPLY_MAX;
    memcpy(copy, line, len);
    copy[len] = '\0';
    p = strstr(copy, key);
    if (p == NULL)
        return;
    p += sizeof(key) - 1;
    end = strstr(p, " SOURCE_CODE_URL");
    if (end == NULL)
        end = strstr(p, " PROTOCOL_VERSION");
    if (end != NULL)
        *end = '\0';
    for (char *c = p; *c; c++)
        if ((unsigned char)*c < 0x20)
            *c = ' ';
    snprintf(d->caps.firmware, sizeof(d->caps.firmware), "%s", p);
}

/* Queues a command of the driver's own; a full queue only delays it. d->mu held. */
static void inject(struct marlin_drv *d, const char *cmd)
{
    struct pf_error err;

    if (pf_marlin_inject(d->m, cmd, &err) != PF_OK)
        pf_log_debug("marlin_inject_skipped", "port=%s cmd=\"%s\" error=\"%s\"", d->port_path, cmd,
                     err.msg);
}

/* The port failed: the printer is gone until connect opens it again. */
static void lost_port(struct marlin_drv *d, const struct pf_error *err)
{
    pthread_mutex_lock(&d->mu);
    d->connected = false;
    snprintf(d->error, sizeof(d->error), "lost the serial link: %.200s", err->msg);
    pf_marlin_set_error(d->m, PF_E_UNAVAILABLE, "%s", d->error);
    end_job(d, PF_DRIVER_RESULT_FAILED, d->error);
    pf_marlin_reset(d->m);
    pthread_mutex_unlock(&d->mu);
    pf_log_error("marlin_disconnected", "port=%s error=\"%s\"", d->port_path, err->msg);
}

static void *marlin_main(void *arg)
{
    struct marlin_drv *d = arg;
    char out[OUT_BATCH][PF_MARLIN_OUT_MAX];
    size_t out_len[OUT_BATCH];
    char line[PF_MARLIN_REPLY_MAX + 1];
    struct pf_error err;

    while (!atomic_load(&d->stop)) {
        size_t n = 0, len;
        int64_t now = pf_time_mono_ms(), wait;
        bool truncated = false;
        enum pf_status rc;

        pthread_mutex_lock(&d->mu);
        if (now - d->last_temp_poll_ms > TEMP_POLL_MS && pf_marlin_state(d->m) != PF_MARLIN_ERROR) {
            struct pf_marlin_temps t;
            pf_marlin_temps(d->m, &t);
            if (t.updated_ms == 0 || now - t.updated_ms > TEMP_POLL_MS)
                inject(d, "M105");
            d->last_temp_poll_ms = now;
        }
        while (n < OUT_BATCH &&
               pf_marlin_next_output(d->m, now, out[n], sizeof(out[n]), &out_len[n]) == PF_OK &&
               out_len[n] > 0)
            n++;
        wait = pf_marlin_wait_ms(d->m, now);
        check_engine(d, now);
        pthread_mutex_unlock(&d->mu);

        for (size_t i = 0; i < n; i++) {
            rc = pf_serial_write_all(d->serial, out[i], out_len[i], WRITE_TIMEOUT_MS, &err);
            if (rc != PF_OK) {
                lost_port(d, &err);
                goto out;
            }
        }
        if (n == OUT_BATCH)
            continue; /* more to write before reading */
        rc =
            pf_serial_read_line(d->serial, wait >= 0 && wait < READ_SLICE_MS ? wait : READ_SLICE_MS,
                                line, sizeof(line), &len, &truncated, &err);
        if (rc == PF_E_DEADLINE)
            continue;
        if (rc != PF_OK) {
            lost_port(d, &err);
            goto out;
        }
        pthread_mutex_lock(&d->mu);
        pf_marlin_feed_reply(d->m, line, len, pf_time_mono_ms(), NULL);
        if (strstr(line, "FIRMWARE_NAME:") != NULL) /* line is NUL-terminated */
            note_firmware(d, line, len);
        check_engine(d, pf_time_mono_ms());
        pthread_mutex_unlock(&d->mu);
    }
out:
    return NULL;
}

/* Stops and joins the thread, closes the port. d->mu not held. */
static void stop_thread(struct marlin_drv *d)
{
    if (!d->thread_running)
        return;
    atomic_store(&d->stop, true);
    pthread_join(d->thread, NULL);
    d->thread_running = false;
    pf_serial_close(d->serial);
    d->serial = NULL;
}

static enum pf_status marlin_connect(struct pf_driver *base, struct pf_error *err)
{
    struct marlin_drv *d = (struct marlin_drv *)base;
    struct pf_serial *serial;
    enum pf_status rc;

    pthread_mutex_lock(&d->mu);
    bool up = d->connected;
    pthread_mutex_unlock(&d->mu);
    if (up)
        return PF_OK;
    stop_thread(d); /* a thread that lost its port */
    rc = pf_serial_open(d->port_path, d->baud, &serial, err);
    if (rc != PF_OK)
        return rc;
    pthread_mutex_lock(&d->mu);
    d->serial = serial;
    pf_marlin_reset(d->m);
    d->connected = true;
    d->error[0] = '\0';
    d->error_since_ms = 0;
    d->last_temp_poll_ms = pf_time_mono_ms();
    inject(d, "M115");    /* firmware name */
    inject(d, "M155 S2"); /* temperature auto-report */
    pthread_mutex_unlock(&d->mu);
    atomic_store(&d->stop, false);
    if (pthread_create(&d->thread, NULL, marlin_main, d) != 0) {
        pthread_mutex_lock(&d->mu);
        d->connected = false;
        pthread_mutex_unlock(&d->mu);
        pf_serial_close(serial);
        d->serial = NULL;
        return pf_error_set(err, PF_E_RESOURCE, "could not start the thread for '%s'",
                            d->port_path);
    }
    d->thread_running = true;
    /* The Hello that follows reports the firmware: give M115 a moment. */
    for (int64_t end = pf_time_mono_ms() + FIRMWARE_WAIT_MS; pf_time_mono_ms() < end;) {
        pthread_mutex_lock(&d->mu);
        bool known = d->caps.firmware[0] != '\0' || !d->connected;
        pthread_mutex_unlock(&d->mu);
        if (known)
            break;
        pf_time_sleep_ms(20);
    }
    pf_log_info("marlin_connected", "port=%s baud=%u firmware=\"%s\"", d->port_path, d->baud,
                d->caps.firmware);
    return PF_OK;
}

static enum pf_status busy(struct marlin_drv *d, struct pf_error *err)
{
    if (!d->connected)
        return pf_error_set(err, PF_E_PRECONDITION, "printer on %s is not connected", d->port_path);
    if (d->job_active || d->clearing_active)
        return pf_error_set(err, PF_E_PRECONDITION, "printer on %s is busy (%s)", d->port_path,
                            d->clearing_active ? "clearing the bed" : d->attempt_id);
    if (pf_marlin_state(d->m) == PF_MARLIN_ERROR)
        return pf_error_set(err, PF_E_PRECONDITION, "printer on %s is in error: %s", d->port_path,
                            d->error);
    return PF_OK;
}

/* Streams data[0..len) as the current job. d->mu held. */
static enum pf_status stream(struct marlin_drv *d, void *data, size_t len, struct pf_error *err)
{
    struct pf_marlin_source src = {.next = pf_marlin_text_next, .ctx = &d->text};

    pf_marlin_text_init(&d->text, data, len);
    d->map = data;
    d->map_len = len;
    return pf_marlin_start(d->m, &src, len, err);
}

static enum pf_status marlin_start(struct pf_driver *base, const struct pf_driver_job *job,
                                   struct pf_error *err)
{
    struct marlin_drv *d = (struct marlin_drv *)base;
    struct stat st;
    void *map;
    enum pf_status rc;
    int fd = open(job->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return pf_error_set(err, errno == ENOENT ? PF_E_NOT_FOUND : PF_E_IO,
                            "cannot open gcode file '%s': %s", job->path, strerror(errno));
    if (fstat(fd, &st) != 0 || st.st_size == 0) {
        close(fd);
        return pf_error_set(err, PF_E_IO, "gcode file '%s' is empty or unreadable", job->path);
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return pf_error_set(err, PF_E_IO, "cannot map '%s': %s", job->path, strerror(errno));
    pthread_mutex_lock(&d->mu);
    rc = busy(d, err);
    if (rc == PF_OK) {
        rc = stream(d, map, (size_t)st.st_size, err);
        if (rc != PF_OK)
            d->map = NULL;
    }
    if (rc == PF_OK) {
        d->job_active = true;
        d->result = PF_DRIVER_RESULT_NONE;
        d->reason[0] = '\0';
        d->started_ms = pf_time_mono_ms();
        snprintf(d->attempt_id, sizeof(d->attempt_id), "%s", job->attempt_id);
        pf_log_info("marlin_print_started", "port=%s attempt=%s bytes=%lld", d->port_path,
                    d->attempt_id, (long long)st.st_size);
    }
    pthread_mutex_unlock(&d->mu);
    if (rc != PF_OK)
        munmap(map, (size_t)st.st_size);
    return rc;
}

static enum pf_status marlin_cancel(struct pf_driver *base, struct pf_error *err)
{
    struct marlin_drv *d = (struct marlin_drv *)base;
    enum pf_status rc;

    pthread_mutex_lock(&d->mu);
    if (!d->job_active)
        rc = pf_error_set(err, PF_E_PRECONDITION, "nothing is printing on %s", d->port_path);
    else
        rc = pf_marlin_cancel(d->m, err);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static enum pf_status marlin_pause(struct pf_driver *base, struct pf_error *err)
{
    struct marlin_drv *d = (struct marlin_drv *)base;

    pthread_mutex_lock(&d->mu);
    enum pf_status rc = d->job_active ? pf_marlin_pause(d->m, err)
                                      : pf_error_set(err, PF_E_PRECONDITION, "not printing");
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static enum pf_status marlin_resume(struct pf_driver *base, struct pf_error *err)
{
    struct marlin_drv *d = (struct marlin_drv *)base;

    pthread_mutex_lock(&d->mu);
    enum pf_status rc = d->job_active ? pf_marlin_resume(d->m, err)
                                      : pf_error_set(err, PF_E_PRECONDITION, "not printing");
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static enum pf_status marlin_run_clearing(struct pf_driver *base, struct pf_error *err)
{
    struct marlin_drv *d = (struct marlin_drv *)base;
    enum pf_status rc;

    if (d->clearing == NULL)
        return pf_error_set(err, PF_E_UNIMPLEMENTED,
                            "no clearing gcode is configured (--clearing-gcode)");
    pthread_mutex_lock(&d->mu);
    rc = busy(d, err);
    if (rc == PF_OK)
        rc = stream(d, d->clearing, d->clearing_len, err);
    if (rc == PF_OK)
        d->clearing_active = true;
    else
        d->map = NULL;
    pthread_mutex_unlock(&d->mu);
    return rc;
}

static void add_temp(struct pf_driver_status *out, const char *name, const struct pf_marlin_temp *t)
{
    struct pf_driver_temp *o;

    if (!t->valid || out->temp_count >= PF_DRIVER_TEMPS_MAX)
        return;
    o = &out->temps[out->temp_count++];
    snprintf(o->sensor, sizeof(o->sensor), "%s", name);
    o->actual = t->actual;
    o->target = t->has_target ? t->target : 0;
}

static void marlin_poll(struct pf_driver *base, struct pf_driver_status *out)
{
    struct marlin_drv *d = (struct marlin_drv *)base;
    struct pf_marlin_progress prog;
    struct pf_marlin_temps temps;
    enum pf_marlin_state st;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&d->mu);
    st = pf_marlin_state(d->m);
    snprintf(out->attempt_id, sizeof(out->attempt_id), "%s", d->attempt_id);
    out->result = d->job_active ? PF_DRIVER_RESULT_NONE : d->result;
    snprintf(out->reason, sizeof(out->reason), "%s", d->reason);
    if (d->job_active) {
        pf_marlin_progress(d->m, &prog);
        out->progress = prog.bytes_total > 0
                            ? (float)((double)prog.bytes_acked / (double)prog.bytes_total)
                            : 0.0f;
        out->elapsed_seconds = (uint32_t)((pf_time_mono_ms() - d->started_ms) / 1000);
        if (out->progress > 0.01f)
            out->remaining_seconds =
                (uint32_t)(out->elapsed_seconds * (1.0f - out->progress) / out->progress);
    } else if (d->result == PF_DRIVER_RESULT_SUCCEEDED) {
        out->progress = 1.0f;
    }
    if (!d->connected) {
        out->state = PF_DRIVER_DISCONNECTED;
        snprintf(out->error, sizeof(out->error), "%s",
                 d->error[0] ? d->error : "serial port not open");
    } else if (st == PF_MARLIN_ERROR) {
        out->state = PF_DRIVER_ERROR;
        snprintf(out->error, sizeof(out->error), "%s", d->error);
    } else if (d->clearing_active) {
        out->state = PF_DRIVER_CLEARING;
    } else if (d->job_active) {
        out->state = st == PF_MARLIN_PAUSED       ? PF_DRIVER_PAUSED
                     : st == PF_MARLIN_CANCELLING ? PF_DRIVER_CANCELLING
                                                  : PF_DRIVER_PRINTING;
    } else {
        out->state = PF_DRIVER_IDLE;
    }
    out->clearings = d->clearings;
    out->clearing_ok = d->clearing_ok;
    snprintf(out->clearing_error, sizeof(out->clearing_error), "%s", d->clearing_error);
    pf_marlin_temps(d->m, &temps);
    for (unsigned i = 0; i < PF_MARLIN_TOOLS_MAX && i < d->caps.extruders; i++) {
        char name[8];
        snprintf(name, sizeof(name), "T%u", i);
        add_temp(out, name, &temps.tool[i]);
    }
    add_temp(out, "bed", &temps.bed);
    add_temp(out, "chamber", &temps.chamber);
    out->serial_resends = d->resends;
    pthread_mutex_unlock(&d->mu);
}

static void marlin_caps(struct pf_driver *base, struct pf_driver_caps *out)
{
    struct marlin_drv *d = (struct marlin_drv *)base;

    pthread_mutex_lock(&d->mu);
    *out = d->caps;
    pthread_mutex_unlock(&d->mu);
}

static void marlin_destroy(struct pf_driver *base)
{
    struct marlin_drv *d = (struct marlin_drv *)base;

    stop_thread(d);
    unmap(d);
    pf_marlin_destroy(d->m);
    free(d->clearing);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static const struct pf_driver_ops marlin_ops = {
    .name = "marlin",
    .connect = marlin_connect,
    .start = marlin_start,
    .cancel = marlin_cancel,
    .pause = marlin_pause,
    .resume = marlin_resume,
    .run_clearing = marlin_run_clearing,
    .poll = marlin_poll,
    .caps = marlin_caps,
    .destroy = marlin_destroy,
};

enum pf_status pf_driver_marlin_create(const struct pf_marlin_driver_config *cfg,
                                       struct pf_driver **out, struct pf_error *err)
{
    struct marlin_drv *d;
    enum pf_status rc;

    if (cfg->port == NULL || cfg->port[0] == '\0' || strlen(cfg->port) >= sizeof(d->port_path))
        return pf_error_set(err, PF_E_INVALID, "the serial port path is empty or too long");
    if (!pf_serial_baud_supported(cfg->baud))
        return pf_error_set(err, PF_E_INVALID, "baud rate %u is not supported", cfg->baud);
    d = calloc(1, sizeof(*d));
    if (d == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    d->base.ops = &marlin_ops;
    pthread_mutex_init(&d->mu, NULL);
    atomic_init(&d->stop, false);
    snprintf(d->port_path, sizeof(d->port_path), "%s", cfg->port);
    d->baud = cfg->baud;
    pf_marlin_config_init(&d->engine_cfg);
    if (cfg->window > 0)
        d->engine_cfg.window = cfg->window;
    if (cfg->reply_timeout_ms > 0)
        d->engine_cfg.reply_timeout_ms = cfg->reply_timeout_ms;
    d->caps.extruders = cfg->extruders > 0 ? cfg->extruders : 1;
    d->caps.can_pause = true;
    d->caps.bed_x_mm = cfg->bed_x_mm;
    d->caps.bed_y_mm = cfg->bed_y_mm;
    d->caps.bed_z_mm = cfg->bed_z_mm;
    if (cfg->clearing_gcode_path != NULL && cfg->clearing_gcode_path[0] != '\0') {
        rc = pf_statefile_slurp(cfg->clearing_gcode_path, CLEARING_MAX, &d->clearing,
                                &d->clearing_len, err);
        if (rc != PF_OK)
            goto out_free;
        d->caps.auto_clear = d->clearing_len > 0;
    }
    rc = pf_marlin_create(&d->engine_cfg, &d->m, err);
    if (rc != PF_OK)
        goto out_free;
    *out = &d->base;
    return PF_OK;
out_free:
    free(d->clearing);
    pthread_mutex_destroy(&d->mu);
    free(d);
    return rc;
}
