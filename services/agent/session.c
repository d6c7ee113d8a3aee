/* A printer's session with the scheduler (see session.h).
 *
 * Threads. The session thread owns the Connect stream: it sends and receives,
 * polls the driver (every TICK_MS, connected or not), turns what changed into
 * messages, and flushes the evbuf. A download thread exists while a
 * StartPrint's file is fetched; when the file is verified it records the
 * attempt and starts the driver itself, under the session lock, so the
 * session thread never sees an attempt recorded but not yet handed to the
 * printer. s->mu guards everything mutable except the stream pointer, which
 * has its own lock so pf_session_request_stop can cancel a blocked call.
 *
 * Durability rule: a numbered message is pushed into the evbuf and the state
 * file (with its seq and payload) is written before the message can be sent,
 * all under s->mu; sending happens later, from the evbuf, on the session
 * thread. So a seq the scheduler has seen is never reused after a crash, and
 * what the state file says about an attempt is never behind what the
 * scheduler was told. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include "backoff.h"
#include "digest.h"
#include "evbuf.h"
#include "log.h"
#include "printfarm/v1/scheduler.pb-c.h"
#include "session.h"
#include "statefile.h"
#include "timeutil.h"

#define CONNECT_METHOD       "/printfarm.v1.Scheduler/Connect"
#define TICK_MS              200
#define PROGRESS_EVERY_MS    5000
#define DRIVER_RETRY_BASE_MS 1000
#define DRIVER_RETRY_MAX_MS  30000
#define MAX_REDIRECTS_IN_ROW 3
#define CACHED_MAX           4096
#define EVENT_MAX_BYTES      (PF_STATEFILE_EVENT_MAX)
#define REASON_MAX           200
#define CLEARING_WAIT_MS     (10 * 60 * 1000)

/* evbuf types: the AgentMessage oneof field numbers. */
enum {
    MSG_STATUS = 3,
    MSG_ATTEMPT_EVENT = 4,
    MSG_BED_CLEARED = 5,
    MSG_CACHE_UPDATE = 6,
};

/* One StartPrint's fetch, on its own detached thread. The session points at
 * the current one (s->dl); a cancelled one is unlinked and left to finish on
 * its own. The thread frees it. */
struct download {
    struct pf_session *s;
    atomic_bool cancel; /* read by the cache between tries */
    bool cancelled;     /* under s->mu: discard the result */
    char attempt_id[PF_STATEFILE_ID_MAX];
    char job_id[PF_STATEFILE_ID_MAX];
    struct pf_digest file;
    uint64_t size;
    uint32_t estimated_seconds;
};

struct pf_session {
    char printer_id[PF_STATEFILE_ID_MAX];
    char profile[PF_STATEFILE_ID_MAX];
    char state_path[PATH_MAX];
    char **seeds;
    size_t seed_count, seed_index;
    struct pf_rpc_client_opts client;
    struct pf_rpc_channel *files;
    struct pf_cache *cache;
    struct pf_driver *driver;
    struct pf_session_material materials[PF_SESSION_MATERIALS_MAX];
    size_t material_count;
    int64_t hello_timeout_ms;
    const struct pf_session_metrics *m;

    pthread_t thread;
    bool thread_started;
    atomic_bool stop;

    pthread_mutex_t stream_mu; /* guards stream (for a cancel from another thread) */
    struct pf_rpc_stream *stream;
    struct pf_rpc_channel *ch; /* session thread only */
    atomic_bool connected;

    pthread_mutex_t mu; /* guards everything below */
    struct pf_statefile *st;
    struct pf_evbuf *ev;
    struct download *dl;         /* the download of the attempt being prepared, or NULL */
    unsigned dl_threads;         /* download threads still running */
    pthread_cond_t dl_cv;        /* a download thread ended */
    struct pf_driver_status drv; /* the last poll */
    bool drv_valid;
    unsigned drv_gen; /* bumped when a print starts: polls taken before are stale */
    int64_t status_interval_ms;
    int64_t next_status_ms;
    Printfarm__V1__PrinterState reported_state;
    char reported_error[PF_DRIVER_TEXT_MAX];
    int64_t last_progress_ms;
    float last_progress;
    uint32_t clearings_seen;
    bool clearing_pending;
    char clearing_attempt[PF_STATEFILE_ID_MAX];
    char oneshot_error[2 * PF_DRIVER_TEXT_MAX]; /* sent once as an ERROR status */
    struct pf_backoff driver_backoff;
    int64_t driver_retry_ms;
    uint64_t resends_seen;
    uint64_t dropped_seen;
    uint64_t cache_generation;
    struct pf_digest *reported; /* digests the scheduler knows we hold, sorted */
    size_t reported_count;
    bool pinned;
    struct pf_digest pinned_file;

    struct pf_backoff backoff; /* session thread only */
    uint64_t rng;
};

/* ---- small helpers ---- */

void pf_session_metrics_init(struct pf_session_metrics *m, struct pf_metrics *r)
{
    memset(m, 0, sizeof(*m));
    if (r == NULL)
        return;
    m->printer_state = pf_metrics_gauge(
        r, "printfarm_agent_printer_state",
        "State of each printer (printfarm.v1.PrinterState number: 2 idle, 3 printing, "
        "4 paused, 5 awaiting_clear, 6 error)",
        "printer");
    m->printers = pf_metrics_gauge(r, "printfarm_agent_printers",
                                   "Printers of this process in each state", "state");
    m->temperature =
        pf_metrics_gauge(r, "printfarm_agent_temperature_celsius",
                         "Printer temperatures (kind: actual or target)", "printer,sensor,kind");
    m->progress = pf_metrics_gauge(r, "printfarm_agent_progress_ratio",
                                   "Progress of the print running, 0 to 1", "printer");
    m->connected = pf_metrics_gauge(r, "printfarm_agent_sessions_connected",
                                    "Printers with a live, welcomed scheduler stream", NULL);
    m->reconnects = pf_metrics_counter(r, "printfarm_agent_reconnects_total",
                                       "Scheduler streams opened after the first", NULL);
    m->redirects = pf_metrics_counter(r, "printfarm_agent_leader_redirects_total",
                                      "printfarm-leader redirects followed", NULL);
    m->prints = pf_metrics_counter(r, "printfarm_agent_prints_total",
                                   "Attempts ended on the printer by result", "result");
    m->serial_resends = pf_metrics_counter(r, "printfarm_agent_serial_resends_total",
                                           "Lines the firmware asked to be sent again", "printer");
    m->events_sent = pf_metrics_counter(r, "printfarm_agent_messages_sent_total",
                                        "Messages sent to the scheduler by kind", "kind");
    m->telemetry_dropped =
        pf_metrics_counter(r, "printfarm_agent_telemetry_dropped_total",
                           "Status messages dropped while disconnected (buffer full)", NULL);
}

static const char *printer_state_name(Printfarm__V1__PrinterState st)
{
    switch (st) {
    case PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE:
        return "idle";
    case PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING:
        return "printing";
    case PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PAUSED:
        return "paused";
    case PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_AWAITING_CLEAR:
        return "awaiting_clear";
    case PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_ERROR:
        return "error";
    case PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_OFFLINE:
        return "offline";
    default:
        return "unknown";
    }
}

static const char *quote(const char *text, char *buf, size_t size)
{
    return pf_log_quote(text, buf, size);
}

/* Ids from the scheduler become file records and log fields: printable,
 * no spaces, bounded. */
static bool valid_id(const char *id)
{
    size_t n = id != NULL ? strlen(id) : 0;

    if (n == 0 || n >= PF_STATEFILE_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] <= ' ' || id[i] == 0x7f || id[i] == '"' || id[i] == '\\')
            return false;
    return true;
}

static Printfarm__V1__AttemptState attempt_state_pb(enum pf_statefile_attempt_state s)
{
    switch (s) {
    case PF_ATTEMPT_STARTING:
        return PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_DISPATCHED;
    case PF_ATTEMPT_PRINTING:
        return PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_PRINTING;
    case PF_ATTEMPT_SUCCEEDED:
        return PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_SUCCEEDED;
    case PF_ATTEMPT_FAILED:
        return PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_FAILED;
    case PF_ATTEMPT_CANCELLED:
        return PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_CANCELLED;
    default:
        return PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_UNSPECIFIED;
    }
}

static bool running(enum pf_statefile_attempt_state s)
{
    return s == PF_ATTEMPT_STARTING || s == PF_ATTEMPT_PRINTING;
}

/* ---- the state file (s->mu held) ---- */

/* Writes the state file with the evbuf's seq and unacknowledged events. */
static enum pf_status save_state(struct pf_session *s, struct pf_error *err)
{
    struct pf_evbuf_entry e;
    size_t n = 0;
    enum pf_status rc;

    s->st->last_seq = pf_evbuf_last_seq(s->ev);
    for (size_t i = 0; n < PF_STATEFILE_EVENTS_MAX && pf_evbuf_state_at(s->ev, i, &e); i++) {
        if (e.len > PF_STATEFILE_EVENT_MAX)
            continue;
        s->st->events[n].seq = e.seq;
        s->st->events[n].type = e.type;
        s->st->events[n].len = e.len;
        memcpy(s->st->events[n].data, e.data, e.len);
        n++;
    }
    s->st->event_count = n;
    rc = pf_statefile_write(s->state_path, s->st, err);
    if (rc != PF_OK)
        pf_log_error("state_write_failed", "printer=%s path=%s error=\"%s\"", s->printer_id,
                     s->state_path, err->msg);
    return rc;
}

/* ---- outgoing messages (s->mu held) ---- */

static void push_state_msg(struct pf_session *s, int type, const ProtobufCMessage *msg)
{
    uint8_t buf[EVENT_MAX_BYTES];
    size_t len = protobuf_c_message_get_packed_size(msg);
    struct pf_error err;
    uint64_t seq = 0;

    if (len > sizeof(buf) || len == 0) {
        pf_log_error("event_too_large", "printer=%s bytes=%zu", s->printer_id, len);
        return;
    }
    protobuf_c_message_pack(msg, buf);
    if (pf_evbuf_push_state(s->ev, type, buf, len, &seq, &err) != PF_OK) {
        /* The attempt's outcome is still in the state file and goes out in
         * the next Hello; say loudly that this report could not be queued. */
        pf_log_error("event_buffer_full", "printer=%s error=\"%s\"", s->printer_id, err.msg);
        return;
    }
    (void)save_state(s, &err);
}

static void push_attempt_event(struct pf_session *s, const char *attempt_id,
                               Printfarm__V1__AttemptEventKind kind, const char *reason,
                               float progress)
{
    Printfarm__V1__AttemptEvent ev = PRINTFARM__V1__ATTEMPT_EVENT__INIT;
    char r[REASON_MAX + 1], q[REASON_MAX + 8];

    snprintf(r, sizeof(r), "%s", reason != NULL ? reason : "");
    ev.attempt_id = (char *)attempt_id;
    ev.kind = kind;
    ev.reason = r;
    ev.progress = progress;
    ev.time_unix_ms = pf_time_wall_ms();
    if (kind == PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_PROGRESS) {
        uint8_t buf[EVENT_MAX_BYTES];
        size_t len = protobuf_c_message_get_packed_size(&ev.base);
        if (len <= sizeof(buf)) {
            protobuf_c_message_pack(&ev.base, buf);
            if (pf_evbuf_push_telemetry(s->ev, MSG_ATTEMPT_EVENT, buf, len) != PF_OK)
                pf_log_warn("progress_not_buffered", "printer=%s", s->printer_id);
        }
        return;
    }
    pf_log_info(
        "attempt_event", "printer=%s attempt=%s kind=%s reason=%s", s->printer_id, attempt_id,
        protobuf_c_enum_descriptor_get_value(&printfarm__v1__attempt_event_kind__descriptor, kind)
            ->name,
        quote(r, q, sizeof(q)));
    push_state_msg(s, MSG_ATTEMPT_EVENT, &ev.base);
}

/* The printer's state as the scheduler names it. */
static Printfarm__V1__PrinterState map_state(const struct pf_session *s, const char **error)
{
    const struct pf_driver_status *d = &s->drv;

    *error = "";
    if (!s->drv_valid)
        return PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_ERROR;
    switch (d->state) {
    case PF_DRIVER_DISCONNECTED:
    case PF_DRIVER_ERROR:
        *error = d->error[0] ? d->error : "printer fault";
        return PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_ERROR;
    case PF_DRIVER_HEATING:
    case PF_DRIVER_PRINTING:
    case PF_DRIVER_CANCELLING:
        return PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING;
    case PF_DRIVER_PAUSED:
        return PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PAUSED;
    case PF_DRIVER_CLEARING:
        return PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_AWAITING_CLEAR;
    case PF_DRIVER_IDLE:
        break;
    }
    if (s->dl != NULL)
        return PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING; /* preparing the file */
    return s->st->bed_clear ? PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE
                            : PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_AWAITING_CLEAR;
}

/* The attempt the printer is busy with (downloading or printing), or NULL. */
static const char *busy_attempt(const struct pf_session *s)
{
    if (s->dl != NULL)
        return s->dl->attempt_id;
    if (running(s->st->current.state))
        return s->st->current.id;
    return NULL;
}

static void push_status(struct pf_session *s)
{
    Printfarm__V1__PrinterStatus ps = PRINTFARM__V1__PRINTER_STATUS__INIT;
    Printfarm__V1__Temperature temps[PF_DRIVER_TEMPS_MAX];
    Printfarm__V1__Temperature *tp[PF_DRIVER_TEMPS_MAX];
    uint8_t buf[4096];
    const char *error, *busy;
    size_t len;

    ps.state = map_state(s, &error);
    if (s->oneshot_error[0] != '\0') {
        ps.state = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_ERROR;
        error = s->oneshot_error;
    }
    ps.error = (char *)error;
    busy = busy_attempt(s);
    ps.attempt_id = (char *)(busy != NULL ? busy : "");
    if (busy != NULL && s->dl == NULL) {
        ps.progress = s->drv.progress;
        ps.elapsed_seconds = s->drv.elapsed_seconds;
        ps.remaining_seconds = s->drv.remaining_seconds;
    }
    for (size_t i = 0; i < s->drv.temp_count && i < PF_DRIVER_TEMPS_MAX; i++) {
        printfarm__v1__temperature__init(&temps[i]);
        temps[i].sensor = (char *)s->drv.temps[i].sensor;
        temps[i].actual = s->drv.temps[i].actual;
        temps[i].target = s->drv.temps[i].target;
        tp[i] = &temps[i];
    }
    ps.n_temperatures = s->drv_valid ? s->drv.temp_count : 0;
    ps.temperatures = tp;
    len = protobuf_c_message_get_packed_size(&ps.base);
    if (len > sizeof(buf))
        return;
    protobuf_c_message_pack(&ps.base, buf);
    if (pf_evbuf_push_telemetry(s->ev, MSG_STATUS, buf, len) != PF_OK)
        pf_log_warn("status_not_buffered", "printer=%s", s->printer_id);
    s->oneshot_error[0] = '\0';
}

/* ---- attempts (s->mu held) ---- */

static void unpin_file(struct pf_session *s)
{
    if (s->pinned) {
        pf_cache_unpin(s->cache, &s->pinned_file);
        s->pinned = false;
    }
}

static const char *result_word(enum pf_statefile_attempt_state st)
{
    return pf_statefile_state_name(st);
}

/* The current attempt ended on the printer. */
static void finish_attempt(struct pf_session *s, enum pf_statefile_attempt_state result,
                           const char *reason, float progress, bool printed)
{
    struct pf_statefile_attempt *a = &s->st->current;
    Printfarm__V1__AttemptEventKind kind =
        result == PF_ATTEMPT_SUCCEEDED
            ? PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_SUCCEEDED
        : result == PF_ATTEMPT_CANCELLED
            ? PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_CANCELLED
            : PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_FAILED;

    a->state = result;
    a->progress = progress < 0 ? 0 : progress > 1 ? 1 : progress;
    a->ended_unix_ms = pf_time_wall_ms();
    snprintf(a->reason, sizeof(a->reason), "%s", reason != NULL ? reason : "");
    pf_statefile_remember_done(s->st);
    if (printed)
        s->st->bed_clear = false;
    if (s->m != NULL)
        pf_metric_inc1(s->m->prints, result_word(result));
    unpin_file(s);
    push_attempt_event(s, a->id, kind, a->reason, a->progress);
}

static enum pf_statefile_attempt_state from_driver(enum pf_driver_result r)
{
    switch (r) {
    case PF_DRIVER_RESULT_SUCCEEDED:
        return PF_ATTEMPT_SUCCEEDED;
    case PF_DRIVER_RESULT_CANCELLED:
        return PF_ATTEMPT_CANCELLED;
    default:
        return PF_ATTEMPT_FAILED;
    }
}

/* Brings the recorded attempt in line with the printer's last poll. */
static void reconcile(struct pf_session *s)
{
    struct pf_statefile_attempt *a = &s->st->current;
    const struct pf_driver_status *d = &s->drv;

    if (!running(a->state) || !s->drv_valid)
        return;
    if (strcmp(d->attempt_id, a->id) == 0) {
        if (d->result != PF_DRIVER_RESULT_NONE) {
            char reason[PF_STATEFILE_REASON_MAX];
            /* A cancel keeps the scheduler's reason; other ends the printer's. */
            snprintf(reason, sizeof(reason), "%s",
                     d->result == PF_DRIVER_RESULT_CANCELLED && a->reason[0] ? a->reason
                                                                             : d->reason);
            finish_attempt(s, from_driver(d->result), reason, d->progress, true);
        } else if (a->state == PF_ATTEMPT_STARTING) {
            /* Recorded and started, but the agent stopped before saying so. */
            struct pf_error err;
            a->state = PF_ATTEMPT_PRINTING;
            (void)save_state(s, &err);
            push_attempt_event(s, a->id,
                               PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_STARTED, NULL,
                               d->progress);
        }
        return;
    }
    if (d->state == PF_DRIVER_DISCONNECTED)
        return; /* cannot tell yet */
    if (a->state == PF_ATTEMPT_STARTING)
        finish_attempt(s, PF_ATTEMPT_FAILED,
                       "the agent stopped before the printer started this attempt; nothing was "
                       "printed",
                       0, false);
    else
        finish_attempt(s, PF_ATTEMPT_FAILED,
                       "the agent restarted during the print and the printer is no longer "
                       "printing this attempt",
                       a->progress, true);
}

/* Re-reports what this agent knows of attempt id (a repeated StartPrint or a
 * CancelPrint for an attempt not running). */
static void report_known(struct pf_session *s, const char *id,
                         enum pf_statefile_attempt_state known)
{
    const struct pf_statefile_attempt *a = &s->st->current;
    bool is_current = strcmp(a->id, id) == 0;
    const char *reason = is_current ? a->reason : "";
    float progress = is_current ? a->progress : 0;

    switch (known) {
    case PF_ATTEMPT_STARTING:
    case PF_ATTEMPT_PRINTING:
        push_attempt_event(s, id, PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_STARTED,
                           NULL, s->drv.progress);
        break;
    case PF_ATTEMPT_SUCCEEDED:
        push_attempt_event(s, id, PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_SUCCEEDED,
                           NULL, 1.0f);
        break;
    case PF_ATTEMPT_CANCELLED:
        push_attempt_event(s, id, PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_CANCELLED,
                           reason[0] ? reason : "cancelled", progress);
        break;
    default:
        push_attempt_event(s, id, PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_FAILED,
                           reason[0] ? reason : "failed", progress);
        break;
    }
}

/* ---- the download thread ---- */

/* Called with s->mu held once the file of dl is verified (path): records the
 * attempt, then hands it to the printer. */
static void start_attempt(struct pf_session *s, struct download *dl, const char *path,
                          const char *hex)
{
    struct pf_statefile_attempt *a = &s->st->current;
    struct pf_statefile_attempt prev = *a;
    char reason[PF_ERROR_MSG_MAX + 64];
    struct pf_driver_job job;
    struct pf_error err;

    memset(a, 0, sizeof(*a));
    snprintf(a->id, sizeof(a->id), "%s", dl->attempt_id);
    snprintf(a->job_id, sizeof(a->job_id), "%s", dl->job_id);
    snprintf(a->file_hex, sizeof(a->file_hex), "%s", hex);
    a->state = PF_ATTEMPT_STARTING;
    a->started_unix_ms = pf_time_wall_ms();
    s->pinned = true;
    s->pinned_file = dl->file;
    if (save_state(s, &err) != PF_OK) {
        *a = prev;
        unpin_file(s);
        snprintf(reason, sizeof(reason), "could not record the attempt in the state file: %s",
                 err.msg);
        push_attempt_event(s, dl->attempt_id,
                           PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_FAILED, reason, 0);
        return;
    }
    job = (struct pf_driver_job){.attempt_id = dl->attempt_id,
                                 .job_id = dl->job_id,
                                 .path = path,
                                 .size = dl->size,
                                 .estimated_seconds = dl->estimated_seconds};
    if (pf_driver_start(s->driver, &job, &err) != PF_OK) {
        snprintf(reason, sizeof(reason), "the printer did not start the print: %s", err.msg);
        finish_attempt(s, PF_ATTEMPT_FAILED, reason, 0, false);
        return;
    }
    a->state = PF_ATTEMPT_PRINTING;
    s->st->bed_clear = false;
    s->drv_gen++;
    s->drv_valid = false;
    pf_log_info("attempt_started", "printer=%s attempt=%s job=%s digest=%s", s->printer_id,
                dl->attempt_id, dl->job_id, hex);
    push_attempt_event(s, dl->attempt_id,
                       PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_STARTED, NULL, 0);
    s->last_progress_ms = pf_time_mono_ms();
    s->last_progress = 0;
    s->next_status_ms = 0; /* tell the new state at once */
}

/* A StartPrint means the scheduler holds the bed for clear; if the clearing
 * script it asked for is still running, the print waits for it to end. */
static void wait_clearing_done(struct pf_session *s, const atomic_bool *cancel)
{
    int64_t deadline = pf_time_mono_ms() + CLEARING_WAIT_MS;
    struct pf_driver_status d;

    for (;;) {
        pf_driver_poll(s->driver, &d);
        if (d.state != PF_DRIVER_CLEARING || atomic_load(cancel) || pf_time_mono_ms() > deadline)
            return;
        pf_time_sleep_ms(50);
    }
}

static void *download_main(void *arg)
{
    struct download *dl = arg;
    struct pf_session *s = dl->s;
    char path[PATH_MAX], hex[PF_DIGEST_HEX_LEN + 1], reason[PF_ERROR_MSG_MAX + 64];
    struct pf_error err;
    enum pf_status rc;

    /* dl's fields other than cancelled are not written after the thread
     * starts, so reading them without the lock is safe. */
    pf_digest_to_hex(&dl->file, hex);
    rc = pf_cache_fetch(s->cache, s->files, &dl->file, dl->size, &dl->cancel, path, sizeof(path),
                        &err);
    if (rc == PF_OK)
        wait_clearing_done(s, &dl->cancel);

    pthread_mutex_lock(&s->mu);
    if (dl->cancelled) {
        if (rc == PF_OK)
            pf_cache_unpin(s->cache, &dl->file);
    } else if (rc != PF_OK) {
        struct pf_statefile_attempt *a = &s->st->current;

        snprintf(reason, sizeof(reason), "could not fetch file %.16s…: %s", hex, err.msg);
        pf_log_error("attempt_fetch_failed", "printer=%s attempt=%s digest=%s error=\"%s\"",
                     s->printer_id, dl->attempt_id, hex, err.msg);
        memset(a, 0, sizeof(*a));
        snprintf(a->id, sizeof(a->id), "%s", dl->attempt_id);
        snprintf(a->job_id, sizeof(a->job_id), "%s", dl->job_id);
        snprintf(a->file_hex, sizeof(a->file_hex), "%s", hex);
        finish_attempt(s, PF_ATTEMPT_FAILED, reason, 0, false);
    } else {
        start_attempt(s, dl, path, hex);
    }
    if (s->dl == dl)
        s->dl = NULL;
    s->dl_threads--;
    pthread_cond_broadcast(&s->dl_cv);
    pthread_mutex_unlock(&s->mu);
    free(dl);
    return NULL;
}

/* ---- commands from the scheduler (s->mu held) ---- */

static void on_start_print(struct pf_session *s, const Printfarm__V1__StartPrint *sp)
{
    enum pf_statefile_attempt_state known;
    const char *busy;
    struct pf_digest file;
    char reason[PF_STATEFILE_ID_MAX + 64];
    struct download *dl;
    pthread_attr_t attr;
    pthread_t thread;

    if (!valid_id(sp->attempt_id)) {
        pf_log_error("start_print_rejected", "printer=%s reason=\"attempt id is not valid\"",
                     s->printer_id);
        return;
    }
    if (s->dl != NULL && strcmp(s->dl->attempt_id, sp->attempt_id) == 0) {
        pf_log_info("start_print_repeat", "printer=%s attempt=%s state=downloading", s->printer_id,
                    sp->attempt_id);
        return;
    }
    known = pf_statefile_lookup(s->st, sp->attempt_id);
    if (known != PF_ATTEMPT_NONE) {
        pf_log_info("start_print_repeat", "printer=%s attempt=%s state=%s", s->printer_id,
                    sp->attempt_id, pf_statefile_state_name(known));
        report_known(s, sp->attempt_id, known);
        return;
    }
    busy = busy_attempt(s);
    if (busy != NULL) {
        snprintf(reason, sizeof(reason), "the printer is busy with attempt %s", busy);
        pf_log_warn("start_print_refused", "printer=%s attempt=%s busy_with=%s", s->printer_id,
                    sp->attempt_id, busy);
        push_attempt_event(s, sp->attempt_id,
                           PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_FAILED, reason, 0);
        return;
    }
    if (sp->file == NULL || sp->file->sha256 == NULL ||
        pf_digest_from_hex(sp->file->sha256, strlen(sp->file->sha256), &file, NULL) != PF_OK ||
        (sp->job_id != NULL && sp->job_id[0] != '\0' && !valid_id(sp->job_id))) {
        push_attempt_event(s, sp->attempt_id,
                           PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_FAILED,
                           "StartPrint names no valid file digest or job id", 0);
        return;
    }
    dl = calloc(1, sizeof(*dl));
    if (dl == NULL) {
        push_attempt_event(s, sp->attempt_id,
                           PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_FAILED,
                           "out of memory preparing the download", 0);
        return;
    }
    dl->s = s;
    atomic_init(&dl->cancel, false);
    snprintf(dl->attempt_id, sizeof(dl->attempt_id), "%s", sp->attempt_id);
    snprintf(dl->job_id, sizeof(dl->job_id), "%s", sp->job_id != NULL ? sp->job_id : "");
    dl->file = file;
    dl->size = sp->size;
    dl->estimated_seconds = sp->metadata != NULL ? sp->metadata->estimated_seconds : 0;
    pf_log_info("start_print", "printer=%s attempt=%s job=%s digest=%.16s size=%llu", s->printer_id,
                sp->attempt_id, dl->job_id, sp->file->sha256, (unsigned long long)sp->size);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&thread, &attr, download_main, dl) != 0) {
        pthread_attr_destroy(&attr);
        free(dl);
        push_attempt_event(s, sp->attempt_id,
                           PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_FAILED,
                           "could not start a download thread", 0);
        return;
    }
    pthread_attr_destroy(&attr);
    s->dl = dl;
    s->dl_threads++;
    s->next_status_ms = 0;
}

static void on_cancel(struct pf_session *s, const Printfarm__V1__CancelPrint *cp)
{
    struct pf_statefile_attempt *a = &s->st->current;
    const char *reason = cp->reason != NULL && cp->reason[0] ? cp->reason : "cancelled";
    enum pf_statefile_attempt_state known;
    struct pf_error err;

    if (!valid_id(cp->attempt_id))
        return;
    pf_log_info("cancel_print", "printer=%s attempt=%s", s->printer_id, cp->attempt_id);
    if (s->dl != NULL && strcmp(s->dl->attempt_id, cp->attempt_id) == 0) {
        /* Not on the printer yet: it never will be. */
        struct download *dl = s->dl;

        dl->cancelled = true;
        atomic_store(&dl->cancel, true);
        s->dl = NULL; /* the thread ends on its own and frees dl */
        memset(a, 0, sizeof(*a));
        snprintf(a->id, sizeof(a->id), "%s", dl->attempt_id);
        snprintf(a->job_id, sizeof(a->job_id), "%s", dl->job_id);
        finish_attempt(s, PF_ATTEMPT_CANCELLED, reason, 0, false);
        return;
    }
    if (running(a->state) && strcmp(a->id, cp->attempt_id) == 0) {
        if (pf_driver_cancel(s->driver, &err) != PF_OK) {
            pf_log_warn("cancel_failed", "printer=%s attempt=%s error=\"%s\"", s->printer_id, a->id,
                        err.msg);
            /* Not running on the printer after all: the next poll settles it. */
        }
        snprintf(a->reason, sizeof(a->reason), "%s", reason);
        return; /* the poll sees CANCELLED and reports it */
    }
    known = pf_statefile_lookup(s->st, cp->attempt_id);
    if (known != PF_ATTEMPT_NONE) {
        report_known(s, cp->attempt_id, known);
        return;
    }
    /* Never seen here: record it as cancelled, so a late StartPrint for it
     * is answered instead of printed. */
    {
        struct pf_statefile_attempt keep = *a;

        memset(a, 0, sizeof(*a));
        snprintf(a->id, sizeof(a->id), "%s", cp->attempt_id);
        a->state = PF_ATTEMPT_CANCELLED;
        snprintf(a->reason, sizeof(a->reason), "%s (it never ran on this printer)", reason);
        pf_statefile_remember_done(s->st);
        push_attempt_event(s, a->id,
                           PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_CANCELLED,
                           a->reason, 0);
        *a = keep;
        (void)save_state(s, &err);
    }
}

static void on_pause_resume(struct pf_session *s, const char *attempt_id, bool pause)
{
    struct pf_statefile_attempt *a = &s->st->current;
    struct pf_error err;
    enum pf_status rc;

    if (!running(a->state) || attempt_id == NULL || strcmp(a->id, attempt_id) != 0) {
        pf_log_warn(pause ? "pause_ignored" : "resume_ignored",
                    "printer=%s attempt=%s reason=\"not the attempt printing\"", s->printer_id,
                    attempt_id != NULL ? attempt_id : "");
        return;
    }
    rc = pause ? pf_driver_pause(s->driver, &err) : pf_driver_resume(s->driver, &err);
    if (rc != PF_OK)
        pf_log_warn(pause ? "pause_failed" : "resume_failed", "printer=%s error=\"%s\"",
                    s->printer_id, err.msg);
    else
        pf_log_info(pause ? "paused" : "resumed", "printer=%s attempt=%s", s->printer_id, a->id);
    s->next_status_ms = 0;
}

static void on_run_clearing(struct pf_session *s, const Printfarm__V1__RunClearing *rc_msg)
{
    struct pf_error err;

    if (rc_msg->attempt_id != NULL && rc_msg->attempt_id[0] != '\0' &&
        !valid_id(rc_msg->attempt_id))
        return;
    if (busy_attempt(s) != NULL) {
        snprintf(s->oneshot_error, sizeof(s->oneshot_error),
                 "bed clearing refused: the printer is busy with attempt %s", busy_attempt(s));
    } else if (pf_driver_run_clearing(s->driver, &err) != PF_OK) {
        snprintf(s->oneshot_error, sizeof(s->oneshot_error), "bed clearing failed: %s", err.msg);
    } else {
        s->clearing_pending = true;
        snprintf(s->clearing_attempt, sizeof(s->clearing_attempt), "%s",
                 rc_msg->attempt_id != NULL ? rc_msg->attempt_id : "");
        pf_log_info("clearing_started", "printer=%s attempt=%s", s->printer_id,
                    s->clearing_attempt);
        s->next_status_ms = 0;
        return;
    }
    pf_log_warn("clearing_failed", "printer=%s error=\"%s\"", s->printer_id, s->oneshot_error);
    s->next_status_ms = 0;
}

static void on_message(struct pf_session *s, const Printfarm__V1__SchedulerMessage *m)
{
    switch (m->msg_case) {
    case PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_ACK:
        pf_evbuf_ack(s->ev, m->ack->seq);
        break;
    case PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_WELCOME:
        if (pf_evbuf_welcome(s->ev, m->welcome->acked_seq)) {
            struct pf_error err;
            pf_log_warn("seq_renumbered",
                        "printer=%s acked_seq=%llu reason=\"the scheduler recorded more than "
                        "this agent's state file knows\"",
                        s->printer_id, (unsigned long long)m->welcome->acked_seq);
            (void)save_state(s, &err);
        }
        if (m->welcome->status_interval_ms > 0)
            s->status_interval_ms = m->welcome->status_interval_ms;
        break;
    case PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_START_PRINT:
        on_start_print(s, m->start_print);
        break;
    case PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_CANCEL:
        on_cancel(s, m->cancel);
        break;
    case PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_PAUSE:
        on_pause_resume(s, m->pause->attempt_id, true);
        break;
    case PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_RESUME:
        on_pause_resume(s, m->resume->attempt_id, false);
        break;
    case PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_RUN_CLEARING:
        on_run_clearing(s, m->run_clearing);
        break;
    default:
        pf_log_warn("unknown_message", "printer=%s case=%d", s->printer_id, (int)m->msg_case);
        break;
    }
}

/* ---- the periodic tick (s->mu held) ---- */

static int cmp_digest(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(struct pf_digest));
}

/* Sends CacheUpdate when the set of held blobs differs from what was told. */
static void check_cache(struct pf_session *s)
{
    uint64_t gen = pf_cache_generation(s->cache);
    struct pf_digest *now;
    size_t n, i = 0, j = 0, na = 0, nr = 0;
    Printfarm__V1__CacheUpdate cu = PRINTFARM__V1__CACHE_UPDATE__INIT;
    Printfarm__V1__Digest *added_msgs, *removed_msgs, **added, **removed;
    char(*hex)[PF_DIGEST_HEX_LEN + 1];

    if (gen == s->cache_generation)
        return;
    s->cache_generation = gen;
    now = calloc(CACHED_MAX, sizeof(*now));
    if (now == NULL)
        return;
    n = pf_cache_list(s->cache, now, CACHED_MAX);
    if (n > CACHED_MAX)
        n = CACHED_MAX;
    qsort(now, n, sizeof(*now), cmp_digest);
    added_msgs = calloc(n + s->reported_count + 1, sizeof(*added_msgs));
    added = calloc(n + s->reported_count + 1, sizeof(*added));
    hex = calloc(n + s->reported_count + 1, sizeof(*hex));
    removed_msgs = added_msgs + n;
    removed = added + n;
    if (added_msgs == NULL || added == NULL || hex == NULL)
        goto out_free;
    while (i < n || j < s->reported_count) {
        int c = i == n ? 1 : j == s->reported_count ? -1 : cmp_digest(&now[i], &s->reported[j]);
        Printfarm__V1__Digest *d;

        if (c == 0) {
            i++;
            j++;
            continue;
        }
        if (c < 0) {
            d = &added_msgs[na];
            added[na++] = d;
            pf_digest_to_hex(&now[i++], hex[na + nr - 1]);
        } else {
            d = &removed_msgs[nr];
            removed[nr++] = d;
            pf_digest_to_hex(&s->reported[j++], hex[na + nr - 1]);
        }
        printfarm__v1__digest__init(d);
        d->sha256 = hex[na + nr - 1];
    }
    if (na + nr > 0) {
        size_t len;
        uint8_t *buf;

        cu.n_added = na;
        cu.added = added;
        cu.n_removed = nr;
        cu.removed = removed;
        len = protobuf_c_message_get_packed_size(&cu.base);
        buf = malloc(len);
        if (buf != NULL) {
            protobuf_c_message_pack(&cu.base, buf);
            if (pf_evbuf_push_telemetry(s->ev, MSG_CACHE_UPDATE, buf, len) != PF_OK)
                pf_log_warn("cache_update_not_buffered", "printer=%s", s->printer_id);
            free(buf);
        }
    }
    free(s->reported);
    s->reported = now;
    s->reported_count = n;
    now = NULL;
out_free:
    free(now);
    free(added_msgs);
    free(added);
    free(hex);
}

static void update_metrics(struct pf_session *s, Printfarm__V1__PrinterState old,
                           Printfarm__V1__PrinterState now)
{
    const char *labels[3];

    if (s->m == NULL)
        return;
    if (old != now) {
        if (old != PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_UNSPECIFIED)
            pf_metric_add(s->m->printers, (const char *[]){printer_state_name(old)}, -1);
        pf_metric_add(s->m->printers, (const char *[]){printer_state_name(now)}, 1);
    }
    pf_metric_set(s->m->printer_state, (const char *[]){s->printer_id}, now);
    pf_metric_set(s->m->progress, (const char *[]){s->printer_id}, s->drv.progress);
    for (size_t i = 0; i < s->drv.temp_count; i++) {
        labels[0] = s->printer_id;
        labels[1] = s->drv.temps[i].sensor;
        labels[2] = "actual";
        pf_metric_set(s->m->temperature, labels, s->drv.temps[i].actual);
        labels[2] = "target";
        pf_metric_set(s->m->temperature, labels, s->drv.temps[i].target);
    }
    if (s->drv.serial_resends > s->resends_seen) {
        pf_metric_add(s->m->serial_resends, (const char *[]){s->printer_id},
                      (double)(s->drv.serial_resends - s->resends_seen));
        s->resends_seen = s->drv.serial_resends;
    }
    if (pf_evbuf_dropped(s->ev) > s->dropped_seen) {
        pf_metric_add(s->m->telemetry_dropped, NULL,
                      (double)(pf_evbuf_dropped(s->ev) - s->dropped_seen));
        s->dropped_seen = pf_evbuf_dropped(s->ev);
    }
}

/* Polls the driver and turns what changed into messages. Takes s->mu. */
static void tick(struct pf_session *s)
{
    struct pf_driver_status d;
    int64_t now = pf_time_mono_ms();
    Printfarm__V1__PrinterState state;
    const char *error;
    struct pf_error err;
    unsigned gen;

    pthread_mutex_lock(&s->mu);
    gen = s->drv_gen;
    pthread_mutex_unlock(&s->mu);
    pf_driver_poll(s->driver, &d);
    if (d.state == PF_DRIVER_DISCONNECTED && now >= s->driver_retry_ms) {
        if (pf_driver_connect(s->driver, &err) != PF_OK) {
            s->driver_retry_ms =
                now + pf_backoff_next(&s->driver_backoff, pf_backoff_random(&s->rng)) + 100;
            pf_log_warn("printer_connect_failed", "printer=%s error=\"%s\"", s->printer_id,
                        err.msg);
        } else {
            pf_backoff_reset(&s->driver_backoff);
            pf_log_info("printer_connected", "printer=%s", s->printer_id);
        }
        pf_driver_poll(s->driver, &d);
    }

    pthread_mutex_lock(&s->mu);
    if (gen != s->drv_gen) {
        /* A print started while this poll ran: it describes the printer before
         * the print, and would look like the print vanished. Poll again. */
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->drv = d;
    s->drv_valid = true;
    reconcile(s);

    if (s->clearing_pending && d.clearings != s->clearings_seen && d.state != PF_DRIVER_CLEARING) {
        s->clearing_pending = false;
        if (d.clearing_ok) {
            Printfarm__V1__BedCleared bc = PRINTFARM__V1__BED_CLEARED__INIT;
            s->st->bed_clear = true;
            bc.automatic = true;
            bc.attempt_id = s->clearing_attempt;
            pf_log_info("bed_cleared", "printer=%s attempt=%s", s->printer_id, s->clearing_attempt);
            push_state_msg(s, MSG_BED_CLEARED, &bc.base);
        } else {
            snprintf(s->oneshot_error, sizeof(s->oneshot_error), "bed clearing failed: %s",
                     d.clearing_error);
        }
        s->next_status_ms = 0;
    }
    s->clearings_seen = d.clearings;

    if (s->st->current.state == PF_ATTEMPT_PRINTING) {
        float p = d.progress;
        s->st->current.progress = p;
        if (now - s->last_progress_ms >= PROGRESS_EVERY_MS && p != s->last_progress) {
            push_attempt_event(s, s->st->current.id,
                               PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_PROGRESS, NULL,
                               p);
            s->last_progress_ms = now;
            s->last_progress = p;
        }
    }

    state = map_state(s, &error);
    if (state != s->reported_state || strcmp(error, s->reported_error) != 0 ||
        s->oneshot_error[0] != '\0')
        s->next_status_ms = 0;
    if (now >= s->next_status_ms) {
        if (state != s->reported_state)
            pf_log_info("printer_state", "printer=%s state=%s driver=%s", s->printer_id,
                        printer_state_name(state), pf_driver_state_name(d.state));
        update_metrics(s, s->reported_state, state);
        s->reported_state = state;
        snprintf(s->reported_error, sizeof(s->reported_error), "%s", error);
        push_status(s);
        s->next_status_ms = now + s->status_interval_ms;
    }
    check_cache(s);
    pthread_mutex_unlock(&s->mu);
}

/* ---- the stream ---- */

/* Wraps one buffered entry as an AgentMessage: field 1 seq, field `type` the
 * packed inner message. */
static size_t frame(const struct pf_evbuf_entry *e, uint8_t *out)
{
    size_t n = 0;
    uint64_t v;

    if (e->seq != 0) {
        out[n++] = 0x08;
        for (v = e->seq; v >= 0x80; v >>= 7)
            out[n++] = (uint8_t)(v | 0x80);
        out[n++] = (uint8_t)v;
    }
    out[n++] = (uint8_t)((e->type << 3) | 2);
    for (v = e->len; v >= 0x80; v >>= 7)
        out[n++] = (uint8_t)(v | 0x80);
    out[n++] = (uint8_t)v;
    memcpy(out + n, e->data, e->len);
    return n + e->len;
}

static const char *type_name(int type)
{
    switch (type) {
    case MSG_STATUS:
        return "status";
    case MSG_ATTEMPT_EVENT:
        return "attempt_event";
    case MSG_BED_CLEARED:
        return "bed_cleared";
    case MSG_CACHE_UPDATE:
        return "cache_update";
    default:
        return "other";
    }
}

/* Sends every entry not yet sent on this stream. */
static enum pf_status flush(struct pf_session *s, struct pf_rpc_stream *stream,
                            struct pf_error *err)
{
    uint8_t *buf = NULL;
    size_t cap = 0;
    enum pf_status rc = PF_OK;

    for (;;) {
        struct pf_evbuf_entry e;
        uint64_t id;
        size_t len;
        int type;

        pthread_mutex_lock(&s->mu);
        if (!pf_evbuf_next(s->ev, &e)) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        if (cap < e.len + 32) {
            uint8_t *grown = realloc(buf, e.len + 32);
            if (grown == NULL) {
                pthread_mutex_unlock(&s->mu);
                rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
                break;
            }
            buf = grown;
            cap = e.len + 32;
        }
        len = frame(&e, buf);
        id = e.id;
        type = e.type;
        pthread_mutex_unlock(&s->mu);

        rc = pf_rpc_stream_send_raw(stream, buf, len, err);
        if (rc != PF_OK)
            break;
        if (s->m != NULL)
            pf_metric_inc1(s->m->events_sent, type_name(type));
        pthread_mutex_lock(&s->mu);
        pf_evbuf_sent(s->ev, id);
        pthread_mutex_unlock(&s->mu);
    }
    free(buf);
    return rc;
}

static enum pf_status send_hello(struct pf_session *s, struct pf_rpc_stream *stream,
                                 struct pf_error *err)
{
    Printfarm__V1__AgentMessage msg = PRINTFARM__V1__AGENT_MESSAGE__INIT;
    Printfarm__V1__AgentHello hello = PRINTFARM__V1__AGENT_HELLO__INIT;
    Printfarm__V1__AgentCapabilities caps = PRINTFARM__V1__AGENT_CAPABILITIES__INIT;
    Printfarm__V1__AgentAttempt cur = PRINTFARM__V1__AGENT_ATTEMPT__INIT;
    Printfarm__V1__ExtruderMaterial mats[PF_SESSION_MATERIALS_MAX];
    Printfarm__V1__ExtruderMaterial *matp[PF_SESSION_MATERIALS_MAX];
    struct pf_driver_caps dc;
    struct pf_digest *held = calloc(CACHED_MAX, sizeof(*held));
    Printfarm__V1__Digest *dmsgs = calloc(CACHED_MAX, sizeof(*dmsgs));
    Printfarm__V1__Digest **dptrs = calloc(CACHED_MAX, sizeof(*dptrs));
    char(*hex)[PF_DIGEST_HEX_LEN + 1] = calloc(CACHED_MAX, sizeof(*hex));
    char attempt_id[PF_STATEFILE_ID_MAX], reason[PF_STATEFILE_REASON_MAX];
    size_t n_held;
    enum pf_status rc;

    if (held == NULL || dmsgs == NULL || dptrs == NULL || hex == NULL) {
        rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
        goto out_free;
    }
    pf_driver_caps(s->driver, &dc);
    caps.driver = (char *)s->driver->ops->name;
    caps.firmware = dc.firmware;
    caps.extruders = dc.extruders;
    caps.can_pause = dc.can_pause;
    caps.auto_clear = dc.auto_clear;
    caps.bed_x_mm = dc.bed_x_mm;
    caps.bed_y_mm = dc.bed_y_mm;
    caps.bed_z_mm = dc.bed_z_mm;
    for (size_t i = 0; i < s->material_count; i++) {
        printfarm__v1__extruder_material__init(&mats[i]);
        mats[i].extruder = s->materials[i].extruder;
        mats[i].material = s->materials[i].material;
        mats[i].colour = s->materials[i].colour;
        matp[i] = &mats[i];
    }
    n_held = pf_cache_list(s->cache, held, CACHED_MAX);
    if (n_held > CACHED_MAX)
        n_held = CACHED_MAX;
    for (size_t i = 0; i < n_held; i++) {
        printfarm__v1__digest__init(&dmsgs[i]);
        pf_digest_to_hex(&held[i], hex[i]);
        dmsgs[i].sha256 = hex[i];
        dptrs[i] = &dmsgs[i];
    }

    hello.printer_id = s->printer_id;
    hello.profile = s->profile;
    hello.capabilities = &caps;
    hello.n_materials = s->material_count;
    hello.materials = matp;
    hello.n_cached = n_held;
    hello.cached = dptrs;
    hello.agent_version = (char *)PF_AGENT_VERSION;

    pthread_mutex_lock(&s->mu);
    if (s->dl != NULL) {
        snprintf(attempt_id, sizeof(attempt_id), "%s", s->dl->attempt_id);
        cur.state = PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_DISPATCHED;
    } else if (s->st->current.state != PF_ATTEMPT_NONE) {
        snprintf(attempt_id, sizeof(attempt_id), "%s", s->st->current.id);
        cur.state = attempt_state_pb(s->st->current.state);
        cur.progress =
            s->st->current.state == PF_ATTEMPT_PRINTING ? s->drv.progress : s->st->current.progress;
        snprintf(reason, sizeof(reason), "%s", s->st->current.reason);
        cur.reason = reason;
    } else {
        attempt_id[0] = '\0';
    }
    hello.bed_clear = s->st->bed_clear;
    hello.last_seq = pf_evbuf_last_seq(s->ev);
    s->cache_generation = pf_cache_generation(s->cache);
    pthread_mutex_unlock(&s->mu);
    if (attempt_id[0] != '\0') {
        cur.attempt_id = attempt_id;
        hello.current = &cur;
    }

    /* What Hello says we hold is what CacheUpdate diffs against. */
    qsort(held, n_held, sizeof(*held), cmp_digest);
    pthread_mutex_lock(&s->mu);
    free(s->reported);
    s->reported = held;
    s->reported_count = n_held;
    held = NULL;
    pthread_mutex_unlock(&s->mu);

    msg.msg_case = PRINTFARM__V1__AGENT_MESSAGE__MSG_HELLO;
    msg.hello = &hello;
    rc = pf_rpc_stream_send(stream, &msg.base, err);
    if (rc == PF_OK)
        pf_log_info("hello_sent",
                    "printer=%s attempt=%s attempt_state=%d last_seq=%llu cached=%zu bed_clear=%d",
                    s->printer_id, attempt_id, (int)cur.state, (unsigned long long)hello.last_seq,
                    n_held, hello.bed_clear ? 1 : 0);
out_free:
    free(held);
    free(dmsgs);
    free(dptrs);
    free(hex);
    return rc;
}

static void set_stream(struct pf_session *s, struct pf_rpc_stream *stream)
{
    pthread_mutex_lock(&s->stream_mu);
    s->stream = stream;
    pthread_mutex_unlock(&s->stream_mu);
}

/* Sleeps ms while ticking, returning early on stop. */
static void idle_wait(struct pf_session *s, int64_t ms)
{
    int64_t end = pf_time_mono_ms() + ms;

    while (!atomic_load(&s->stop)) {
        int64_t left = end - pf_time_mono_ms();
        if (left <= 0)
            break;
        pf_time_sleep_ms(left < TICK_MS ? left : TICK_MS);
        tick(s);
    }
}

static void current_target(struct pf_session *s, char *out, size_t size)
{
    pf_rpc_channel_target(s->ch, out, size);
}

/* Points the channel at the next configured replica. A fresh channel: a
 * replica that was down must not stay behind gRPC's own reconnect backoff. */
static void next_seed(struct pf_session *s)
{
    struct pf_rpc_channel *ch;
    struct pf_error err;

    s->seed_index = (s->seed_index + 1) % s->seed_count;
    ch = pf_rpc_channel_create(s->seeds[s->seed_index], &s->client, &err);
    if (ch == NULL) {
        pf_log_error("channel_failed", "printer=%s target=%s error=\"%s\"", s->printer_id,
                     s->seeds[s->seed_index], err.msg);
        return;
    }
    pf_rpc_channel_destroy(s->ch);
    s->ch = ch;
}

/* One stream: Hello, wait for Welcome, then serve until it ends. Returns
 * true when a Welcome arrived. *leader gets a redirect target, if any. */
static bool run_stream(struct pf_session *s, char *leader, size_t leader_size, struct pf_error *err)
{
    struct pf_rpc_stream *stream = NULL;
    bool welcomed = false;
    int64_t hello_deadline;
    enum pf_status rc;

    leader[0] = '\0';
    rc = pf_rpc_stream_open(s->ch, CONNECT_METHOD, 0, &stream, err);
    if (rc != PF_OK)
        return false;
    set_stream(s, stream);
    if (atomic_load(&s->stop))
        pf_rpc_stream_cancel(stream);
    rc = send_hello(s, stream, err);
    hello_deadline = pf_time_mono_ms() + s->hello_timeout_ms;
    while (rc == PF_OK && !atomic_load(&s->stop)) {
        Printfarm__V1__SchedulerMessage *m = NULL;

        if (welcomed) {
            tick(s);
            rc = flush(s, stream, err);
            if (rc != PF_OK)
                break;
        } else if (pf_time_mono_ms() > hello_deadline) {
            rc = pf_error_set(err, PF_E_DEADLINE, "no Welcome within %lld ms of the Hello",
                              (long long)s->hello_timeout_ms);
            pf_rpc_stream_cancel(stream);
            break;
        } else {
            tick(s); /* keep the printer watched while the scheduler thinks */
        }
        rc = pf_rpc_stream_recv(stream, &printfarm__v1__scheduler_message__descriptor,
                                (ProtobufCMessage **)&m, TICK_MS, err);
        if (rc == PF_E_DEADLINE) {
            rc = PF_OK;
            continue;
        }
        if (rc != PF_OK)
            break;
        if (!welcomed && m->msg_case != PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_WELCOME) {
            pf_log_warn("message_before_welcome", "printer=%s case=%d", s->printer_id,
                        (int)m->msg_case);
        }
        pthread_mutex_lock(&s->mu);
        on_message(s, m);
        pthread_mutex_unlock(&s->mu);
        if (!welcomed && m->msg_case == PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_WELCOME) {
            char target[PF_RPC_TARGET_MAX];
            welcomed = true;
            atomic_store(&s->connected, true);
            if (s->m != NULL)
                pf_metric_add(s->m->connected, NULL, 1);
            pf_backoff_reset(&s->backoff);
            current_target(s, target, sizeof(target));
            pf_log_info(
                "scheduler_connected",
                "printer=%s target=%s scheduler=%s epoch=%llu acked_seq=%llu", s->printer_id,
                target, m->welcome->scheduler_id != NULL ? m->welcome->scheduler_id : "",
                (unsigned long long)m->welcome->epoch, (unsigned long long)m->welcome->acked_seq);
        }
        protobuf_c_message_free_unpacked(&m->base, NULL);
    }
    if (welcomed) {
        atomic_store(&s->connected, false);
        if (s->m != NULL)
            pf_metric_add(s->m->connected, NULL, -1);
    }
    if (rc == PF_E_END || rc == PF_OK || rc == PF_E_DEADLINE || rc == PF_E_INVALID) {
        struct pf_error fin;
        if (rc != PF_E_END)
            pf_rpc_stream_cancel(stream);
        if (pf_rpc_stream_finish(stream, &fin) != PF_OK && rc != PF_E_DEADLINE &&
            rc != PF_E_INVALID)
            *err = fin;
        else if (rc == PF_E_END || rc == PF_OK)
            pf_error_set(err, PF_E_UNAVAILABLE, "the scheduler ended the stream");
        snprintf(leader, leader_size, "%s", pf_rpc_stream_leader(stream));
    }
    set_stream(s, NULL);
    pf_rpc_stream_destroy(stream);
    return welcomed;
}

static void *session_main(void *arg)
{
    struct pf_session *s = arg;
    char leader[PF_RPC_TARGET_MAX], target[PF_RPC_TARGET_MAX];
    struct pf_error err;
    unsigned redirects = 0;
    bool first = true;

    while (!atomic_load(&s->stop)) {
        bool welcomed;

        if (!first && s->m != NULL)
            pf_metric_add(s->m->reconnects, NULL, 1);
        first = false;
        pf_error_clear(&err);
        welcomed = run_stream(s, leader, sizeof(leader), &err);
        if (atomic_load(&s->stop))
            break;
        current_target(s, target, sizeof(target));
        if (welcomed)
            redirects = 0;
        if (leader[0] != '\0' && strcmp(leader, target) != 0 && redirects < MAX_REDIRECTS_IN_ROW) {
            struct pf_error rerr;
            redirects++;
            pf_log_info("leader_redirect", "printer=%s from=%s to=%s", s->printer_id, target,
                        leader);
            if (s->m != NULL)
                pf_metric_add(s->m->redirects, NULL, 1);
            if (pf_rpc_channel_retarget(s->ch, leader, &rerr) == PF_OK)
                continue; /* at once: the leader is known */
            pf_log_error("retarget_failed", "printer=%s to=%s error=\"%s\"", s->printer_id, leader,
                         rerr.msg);
        }
        redirects = 0;
        {
            int64_t delay = pf_backoff_next(&s->backoff, pf_backoff_random(&s->rng));
            pf_log_warn("scheduler_disconnected",
                        "printer=%s target=%s code=%s error=\"%s\" retry_in_ms=%lld", s->printer_id,
                        target, pf_status_name(err.code), err.msg, (long long)delay);
            /* A replica that is gone or a follower without a leader: try the
             * next address. */
            if (!welcomed || err.code == PF_E_UNAVAILABLE)
                next_seed(s);
            idle_wait(s, delay);
        }
    }
    return NULL;
}

/* ---- configuration ---- */

enum pf_status pf_session_parse_materials(const char *text, struct pf_session_material *out,
                                          size_t max, size_t *count, struct pf_error *err)
{
    size_t n = 0;
    const char *p = text;

    *count = 0;
    if (text == NULL)
        return PF_OK;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        char entry[160], *eq, *colon, *num_end;
        struct pf_session_material *m;
        unsigned long ext;

        while (len > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0 || len >= sizeof(entry))
            return pf_error_set(err, PF_E_INVALID, "entry %zu is empty or too long", n + 1);
        memcpy(entry, p, len);
        entry[len] = '\0';
        eq = strchr(entry, '=');
        if (eq == NULL)
            return pf_error_set(err, PF_E_INVALID,
                                "'%s' is not EXTRUDER=MATERIAL[:COLOUR] (like 0=PLA:black)", entry);
        *eq = '\0';
        errno = 0;
        ext = strtoul(entry, &num_end, 10);
        if (entry[0] < '0' || entry[0] > '9' || *num_end != '\0' || errno != 0 || ext > 15)
            return pf_error_set(err, PF_E_INVALID, "extruder '%s' is not a number in 0..15", entry);
        colon = strchr(eq + 1, ':');
        if (colon != NULL)
            *colon = '\0';
        if (eq[1] == '\0' || strlen(eq + 1) >= sizeof(out[0].material) ||
            (colon != NULL && (colon[1] == '\0' || strlen(colon + 1) >= sizeof(out[0].colour))))
            return pf_error_set(err, PF_E_INVALID,
                                "extruder %lu: the material and colour must be 1..%zu bytes", ext,
                                sizeof(out[0].material) - 1);
        for (size_t i = 0; i < n; i++)
            if (out[i].extruder == ext)
                return pf_error_set(err, PF_E_INVALID, "extruder %lu is listed twice", ext);
        if (n >= max)
            return pf_error_set(err, PF_E_INVALID, "more than %zu materials", max);
        m = &out[n++];
        m->extruder = (uint32_t)ext;
        snprintf(m->material, sizeof(m->material), "%s", eq + 1);
        snprintf(m->colour, sizeof(m->colour), "%s", colon != NULL ? colon + 1 : "");
        if (end == NULL)
            break;
        p = end + 1;
    }
    *count = n;
    return PF_OK;
}

/* ---- lifecycle ---- */

enum pf_status pf_session_create(const struct pf_session_config *cfg, struct pf_session **out,
                                 struct pf_error *err)
{
    struct pf_session *s;
    enum pf_status rc;

    if (cfg->scheduler_count == 0 || !valid_id(cfg->printer_id) || cfg->state_path == NULL ||
        cfg->material_count > PF_SESSION_MATERIALS_MAX)
        return pf_error_set(err, PF_E_INVALID,
                            "a session needs a scheduler address, a printer id without spaces "
                            "(under %d bytes), a state file and at most %d materials",
                            PF_STATEFILE_ID_MAX, PF_SESSION_MATERIALS_MAX);
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->stream_mu, NULL);
    pthread_cond_init(&s->dl_cv, NULL);
    snprintf(s->printer_id, sizeof(s->printer_id), "%s", cfg->printer_id);
    snprintf(s->profile, sizeof(s->profile), "%s", cfg->profile != NULL ? cfg->profile : "");
    snprintf(s->state_path, sizeof(s->state_path), "%s", cfg->state_path);
    s->client = *cfg->client;
    s->files = cfg->files;
    s->cache = cfg->cache;
    s->driver = cfg->driver;
    s->m = cfg->metrics;
    if (cfg->material_count > 0)
        memcpy(s->materials, cfg->materials, cfg->material_count * sizeof(s->materials[0]));
    s->material_count = cfg->material_count;
    s->hello_timeout_ms = cfg->hello_timeout_ms > 0 ? cfg->hello_timeout_ms : 15000;
    s->status_interval_ms = cfg->status_interval_ms > 0 ? cfg->status_interval_ms : 1000;
    pf_backoff_init(&s->backoff, cfg->backoff_base_ms > 0 ? cfg->backoff_base_ms : 500,
                    cfg->backoff_max_ms > 0 ? cfg->backoff_max_ms : 30000);
    pf_backoff_init(&s->driver_backoff, DRIVER_RETRY_BASE_MS, DRIVER_RETRY_MAX_MS);
    if (getrandom(&s->rng, sizeof(s->rng), 0) != sizeof(s->rng))
        s->rng = (uint64_t)pf_time_mono_ms() ^ (uint64_t)(uintptr_t)s;
    s->seeds = calloc(cfg->scheduler_count, sizeof(*s->seeds));
    s->st = malloc(sizeof(*s->st));
    s->ev = pf_evbuf_create(cfg->max_events > 0 ? cfg->max_events : 1024,
                            cfg->max_telemetry > 0 ? cfg->max_telemetry : 32, EVENT_MAX_BYTES);
    if (s->seeds == NULL || s->st == NULL || s->ev == NULL) {
        rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
        goto out_destroy;
    }
    s->seed_count = cfg->scheduler_count;
    for (size_t i = 0; i < cfg->scheduler_count; i++) {
        s->seeds[i] = strdup(cfg->schedulers[i]);
        if (s->seeds[i] == NULL) {
            rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
            goto out_destroy;
        }
    }
    s->ch = pf_rpc_channel_create(s->seeds[0], &s->client, err);
    if (s->ch == NULL) {
        rc = err->code;
        goto out_destroy;
    }

    rc = pf_statefile_read(s->state_path, s->st, err);
    if (rc == PF_E_NOT_FOUND) {
        pf_log_info("state_new", "printer=%s path=%s", s->printer_id, s->state_path);
        rc = save_state(s, err); /* fail now if the directory is not writable */
    }
    if (rc != PF_OK)
        goto out_destroy;
    pf_evbuf_set_last_seq(s->ev, s->st->last_seq);
    for (size_t i = 0; i < s->st->event_count; i++) {
        const struct pf_statefile_event *e = &s->st->events[i];
        if (pf_evbuf_restore_state(s->ev, e->seq, e->type, e->data, e->len, err) != PF_OK)
            pf_log_warn("event_not_restored", "printer=%s seq=%llu error=\"%s\"", s->printer_id,
                        (unsigned long long)e->seq, err->msg);
    }
    pf_log_info("state_loaded",
                "printer=%s attempt=%s attempt_state=%s last_seq=%llu pending_events=%zu "
                "bed_clear=%d",
                s->printer_id, s->st->current.id, pf_statefile_state_name(s->st->current.state),
                (unsigned long long)s->st->last_seq, s->st->event_count, s->st->bed_clear ? 1 : 0);
    if (running(s->st->current.state) && s->st->current.file_hex[0] != '\0') {
        if (pf_digest_from_hex(s->st->current.file_hex, 64, &s->pinned_file, NULL) == PF_OK &&
            pf_cache_pin(s->cache, &s->pinned_file))
            s->pinned = true;
    }
    /* Reconcile the recorded attempt with the printer before anything is said. */
    {
        struct pf_error derr;
        if (pf_driver_connect(s->driver, &derr) != PF_OK)
            pf_log_warn("printer_connect_failed", "printer=%s error=\"%s\"", s->printer_id,
                        derr.msg);
    }
    tick(s);
    *out = s;
    return PF_OK;

out_destroy:
    pf_session_destroy(s);
    return rc;
}

enum pf_status pf_session_start(struct pf_session *s, struct pf_error *err)
{
    if (pthread_create(&s->thread, NULL, session_main, s) != 0)
        return pf_error_set(err, PF_E_RESOURCE, "could not start the session thread of '%s'",
                            s->printer_id);
    s->thread_started = true;
    return PF_OK;
}

void pf_session_request_stop(struct pf_session *s)
{
    atomic_store(&s->stop, true);
    pthread_mutex_lock(&s->stream_mu);
    if (s->stream != NULL)
        pf_rpc_stream_cancel(s->stream);
    pthread_mutex_unlock(&s->stream_mu);
}

void pf_session_stop(struct pf_session *s)
{
    pf_session_request_stop(s);
    if (s->thread_started) {
        pthread_join(s->thread, NULL);
        s->thread_started = false;
    }
    /* Downloads notice the cancel between tries (at most one try long). */
    pthread_mutex_lock(&s->mu);
    if (s->dl != NULL) {
        s->dl->cancelled = true;
        atomic_store(&s->dl->cancel, true);
        s->dl = NULL;
    }
    while (s->dl_threads > 0)
        pthread_cond_wait(&s->dl_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

void pf_session_destroy(struct pf_session *s)
{
    if (s == NULL)
        return;
    pf_session_stop(s);
    if (s->pinned)
        pf_cache_unpin(s->cache, &s->pinned_file);
    pf_rpc_channel_destroy(s->ch);
    for (size_t i = 0; s->seeds != NULL && i < s->seed_count; i++)
        free(s->seeds[i]);
    free(s->seeds);
    free(s->reported);
    pf_evbuf_destroy(s->ev);
    free(s->st);
    pthread_cond_destroy(&s->dl_cv);
    pthread_mutex_destroy(&s->stream_mu);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

bool pf_session_connected(struct pf_session *s)
{
    return atomic_load(&s->connected);
}
