/* WatchEvents streams of pf-scheduler. Each stream keeps a cursor (the last
 * seq it has passed); a pump on the worker queue pages events after the
 * cursor out of PostgreSQL (500 at a time, by seq), sends those that match
 * the stream's filters, and when it has caught up goes idle until
 * pf_sched_events_published (called by tx.c after every commit that wrote
 * events) says there is more. Event numbers commit in order (tx.c), so a
 * stream that has seen seq N has seen everything before it. A client that
 * reads slowly holds the pump back (it waits for the stream's queue to drain
 * before the next page); one that stops reading for STALL_MS is ended with
 * RESOURCE_EXHAUSTED, naming the cursor to resume from. */
#include <stdio.h>
#include <string.h>
#include "log.h"
#include "modules.h"
#include "rpc/pb.h"
#include "timeutil.h"
#include "validate.h"

#define PAGE          500
#define QUEUE_HIGH    (256 * 1024) /* bytes queued on a stream before the pump waits */
#define STALL_MS      10000
#define FILTER_ID_MAX (PF_SCHED_WATCH_FILTER_ID_MAX + 1)

struct watcher {
    struct pf_sched *s;
    struct pf_rpc_call *call;
    struct watcher *prev, *next; /* under ev->mu while listed */
    bool listed;
    atomic_bool ready; /* the start cursor is known */
    bool only_new;
    bool pumping;          /* a pump is queued or running; under ev->mu */
    bool waiting_writable; /* under ev->mu */
    int64_t stalled_since;
    atomic_uint_fast64_t cursor; /* written by the pump only */
    uint64_t kinds;              /* bit per EventKind; 0 = all */
    char job_id[FILTER_ID_MAX];
    char printer_id[FILTER_ID_MAX];
};

struct pf_sched_events {
    pthread_mutex_t mu;
    struct watcher head;
    uint64_t published; /* under mu */
    size_t n;
    struct pf_metric *m_watchers, *m_sent;
};

static void list_remove(struct pf_sched_events *ev, struct watcher *w)
{
    if (!w->listed)
        return;
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->listed = false;
    ev->n--;
    pf_metric_set(ev->m_watchers, NULL, (double)ev->n);
}

static bool matches(const struct watcher *w, const PGresult *res, int row)
{
    int64_t kind = atoll(pf_pg_text(res, row, 2));
    if (w->kinds != 0 && (kind < 0 || kind >= 64 || (w->kinds >> kind & 1) == 0))
        return false;
    if (w->job_id[0] != '\0' && strcmp(w->job_id, pf_pg_text(res, row, 3)) != 0)
        return false;
    if (w->printer_id[0] != '\0' && strcmp(w->printer_id, pf_pg_text(res, row, 4)) != 0)
        return false;
    return true;
}

struct page {
    struct watcher *w;
    int rows;
    bool stop; /* the stream ended or was finished */
};

static enum pf_status page_db(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                              struct pf_error *err)
{
    struct page *pg = arg;
    struct watcher *w = pg->w;
    char after[24], limit[16];
    const char *p[2] = {after, limit};
    PGresult *res;
    enum pf_status rc;

    (void)s;
    pg->rows = 0;
    if (!atomic_load(&w->ready)) {
        if (w->only_new) {
            int64_t last = 0;
            rc = pf_pg_exec_int64(conn, "SELECT last FROM event_seq WHERE id = 1", 0, NULL, &last,
                                  err);
            if (rc != PF_OK)
                return rc;
            atomic_store(&w->cursor, (uint64_t)last);
        }
        atomic_store(&w->ready, true);
    }
    snprintf(after, sizeof(after), "%llu", (unsigned long long)atomic_load(&w->cursor));
    snprintf(limit, sizeof(limit), "%d", PAGE);
    rc = pf_pg_exec(conn,
                    "SELECT seq, (extract(epoch FROM time) * 1000)::bigint, kind, job_id, "
                    "printer_id, attempt_id, job_state, printer_state, attempt_state, text "
                    "FROM events WHERE seq > $1::bigint ORDER BY seq LIMIT $2::int",
                    2, p, &res, err);
    if (rc != PF_OK)
        return rc;
    pg->rows = PQntuples(res);
    for (int i = 0; i < pg->rows; i++) {
        int64_t seq = 0, t = 0;
        if (pf_pg_int64(res, i, 0, &seq, err) != PF_OK) {
            PQclear(res);
            return err->code;
        }
        if (matches(w, res, i)) {
            Printfarm__V1__Event e = PRINTFARM__V1__EVENT__INIT;
            if (pf_pg_int64(res, i, 1, &t, err) != PF_OK)
                t = 0;
            e.seq = (uint64_t)seq;
            e.time_unix_ms = t;
            e.kind = (Printfarm__V1__EventKind)atoi(pf_pg_text(res, i, 2));
            e.job_id = (char *)pf_pg_text(res, i, 3);
            e.printer_id = (char *)pf_pg_text(res, i, 4);
            e.attempt_id = (char *)pf_pg_text(res, i, 5);
            e.job_state = (Printfarm__V1__JobState)atoi(pf_pg_text(res, i, 6));
            e.printer_state = (Printfarm__V1__PrinterState)atoi(pf_pg_text(res, i, 7));
            e.attempt_state = (Printfarm__V1__AttemptState)atoi(pf_pg_text(res, i, 8));
            e.text = (char *)pf_pg_text(res, i, 9);
            rc = pf_rpc_call_send_msg(w->call, &e.base);
            if (rc == PF_E_RESOURCE) {
                char msg[160];
                snprintf(msg, sizeof(msg),
                         "event watcher fell behind (too many unread events): resume with "
                         "after=%llu",
                         (unsigned long long)atomic_load(&w->cursor));
                pf_rpc_call_finish(w->call, PF_E_RESOURCE, msg);
            }
            if (rc != PF_OK) {
                pg->stop = true;
                break;
            }
            pf_metric_inc1(w->s->events->m_sent, NULL);
        }
        atomic_store(&w->cursor, (uint64_t)seq);
    }
    PQclear(res);
    return PF_OK;
}

static void pump(struct pf_rpc_call *call, const uint8_t *unused, size_t unused_len)
{
    struct watcher *w = pf_rpc_call_user(call);
    struct pf_sched *s = w->s;
    struct pf_sched_events *ev = s->events;
    struct pf_error err;
    (void)unused;
    (void)unused_len;

    for (;;) {
        struct page pg = {.w = w};
        if (pf_rpc_call_done(call))
            break;
        if (pf_rpc_call_queued_bytes(call) > QUEUE_HIGH) {
            pthread_mutex_lock(&ev->mu);
            w->waiting_writable = true;
            w->stalled_since = pf_time_mono_ms();
            w->pumping = false;
            pthread_mutex_unlock(&ev->mu);
            return;
        }
        if (pf_sched_with_db(s, page_db, &pg, &err) != PF_OK) {
            pf_log_warn("watch_events_failed", "error=\"%s\"", err.msg);
            pf_sched_finish_failed(s, call, &err);
            break;
        }
        if (pg.stop)
            break;
        if (pg.rows == PAGE)
            continue;
        pthread_mutex_lock(&ev->mu);
        if (ev->published > atomic_load(&w->cursor)) {
            pthread_mutex_unlock(&ev->mu);
            continue;
        }
        w->pumping = false;
        pthread_mutex_unlock(&ev->mu);
        return;
    }
    pthread_mutex_lock(&ev->mu);
    w->pumping = false;
    pthread_mutex_unlock(&ev->mu);
}

void pf_sched_events_published(struct pf_sched *s, uint64_t seq)
{
    struct pf_sched_events *ev = s->events;
    if (ev == NULL)
        return;
    pthread_mutex_lock(&ev->mu);
    if (seq > ev->published)
        ev->published = seq;
    for (struct watcher *w = ev->head.next; w != &ev->head; w = w->next) {
        if (w->pumping || w->waiting_writable || !atomic_load(&w->ready) ||
            atomic_load(&w->cursor) >= seq)
            continue;
        w->pumping = true;
        pf_rpc_call_defer(w->call, s->wq, pump, NULL, 0);
    }
    pthread_mutex_unlock(&ev->mu);
}

void pf_sched_events_end_all(struct pf_sched *s, const char *why)
{
    struct pf_sched_events *ev = s->events;
    char addr[256];
    if (ev == NULL)
        return;
    pf_sched_leader_address(s, addr, sizeof(addr));
    pthread_mutex_lock(&ev->mu);
    for (struct watcher *w = ev->head.next; w != &ev->head; w = w->next) {
        if (pf_rpc_call_done(w->call))
            continue;
        if (addr[0] != '\0' && strcmp(addr, s->cfg.advertise) != 0)
            pf_rpc_call_set_trailer(w->call, PF_RPC_LEADER_KEY, addr);
        pf_rpc_call_finish(w->call, PF_E_UNAVAILABLE, why);
    }
    pthread_mutex_unlock(&ev->mu);
}

/* ---- method callbacks (completion-queue thread) ---- */

static void watch_start(struct pf_rpc_call *call, const uint8_t *req, size_t len)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    struct pf_sched_events *ev = s->events;
    Printfarm__V1__WatchEventsRequest *r = NULL;
    struct watcher *w;
    struct pf_error err;
    uint64_t kinds = 0;

    if (pf_sched_refuse_if_follower(s, call))
        return;
    if (pf_pb_unpack(&printfarm__v1__watch_events_request__descriptor, req, len,
                     (ProtobufCMessage **)&r, &err) != PF_OK) {
        pf_rpc_call_finish_err(call, &err);
        return;
    }
    if (pf_sched_check_watch_events(r, &kinds, &err) != PF_OK) {
        pf_rpc_call_finish_err(call, &err);
        goto out;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        pf_rpc_call_finish(call, PF_E_RESOURCE, "out of memory");
        goto out;
    }
    w->kinds = kinds;
    w->s = s;
    w->call = call;
    w->only_new = r->only_new;
    atomic_init(&w->cursor, r->only_new ? 0 : r->after);
    atomic_init(&w->ready, false);
    snprintf(w->job_id, sizeof(w->job_id), "%s", r->job_id);
    snprintf(w->printer_id, sizeof(w->printer_id), "%s", r->printer_id);
    pf_rpc_call_set_user(call, w);
    pthread_mutex_lock(&ev->mu);
    w->next = ev->head.next;
    w->prev = &ev->head;
    ev->head.next->prev = w;
    ev->head.next = w;
    w->listed = true;
    ev->n++;
    pf_metric_set(ev->m_watchers, NULL, (double)ev->n);
    w->pumping = true;
    pthread_mutex_unlock(&ev->mu);
    pf_rpc_call_defer(call, s->wq, pump, NULL, 0);
out:
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void watch_writable(struct pf_rpc_call *call)
{
    struct watcher *w = pf_rpc_call_user(call);
    struct pf_sched_events *ev;
    bool go = false;
    if (w == NULL)
        return;
    ev = w->s->events;
    pthread_mutex_lock(&ev->mu);
    if (w->waiting_writable && !w->pumping && w->listed) {
        w->waiting_writable = false;
        w->pumping = true;
        go = true;
    }
    pthread_mutex_unlock(&ev->mu);
    if (go)
        pf_rpc_call_defer(call, w->s->wq, pump, NULL, 0);
}

static void watch_close(struct pf_rpc_call *call, bool cancelled)
{
    struct watcher *w = pf_rpc_call_user(call);
    (void)cancelled;
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->s->events->mu);
    list_remove(w->s->events, w);
    pthread_mutex_unlock(&w->s->events->mu);
}

static void watch_free(struct pf_rpc_call *call)
{
    free(pf_rpc_call_user(call));
}

/* Ends watchers that stopped reading (completion-queue thread, every second). */
static void stall_check(void *arg)
{
    struct pf_sched *s = arg;
    struct pf_sched_events *ev = s->events;
    int64_t now = pf_time_mono_ms();
    char msg[160];
    pthread_mutex_lock(&ev->mu);
    for (struct watcher *w = ev->head.next; w != &ev->head; w = w->next) {
        if (!w->waiting_writable || now - w->stalled_since < STALL_MS)
            continue;
        snprintf(msg, sizeof(msg), "event watcher read nothing for %d s: resume with after=%llu",
                 STALL_MS / 1000, (unsigned long long)atomic_load(&w->cursor));
        pf_rpc_call_finish(w->call, PF_E_RESOURCE, msg);
    }
    pthread_mutex_unlock(&ev->mu);
}

enum pf_status pf_sched_events_create(struct pf_sched *s, struct pf_error *err)
{
    struct pf_sched_events *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    pthread_mutex_init(&ev->mu, NULL);
    ev->head.next = ev->head.prev = &ev->head;
    ev->m_watchers = pf_metrics_gauge(s->metrics, "printfarm_scheduler_event_watchers",
                                      "WatchEvents streams open on this replica", NULL);
    ev->m_sent = pf_metrics_counter(s->metrics, "printfarm_scheduler_events_sent_total",
                                    "events sent to watchers", NULL);
    s->events = ev;
    return PF_OK;
}

enum pf_status pf_sched_events_register(struct pf_sched *s, struct pf_error *err)
{
    const struct pf_rpc_method m = {
        .path = "/printfarm.v1.Scheduler/WatchEvents",
        .kind = PF_RPC_SERVER_STREAM,
        .roles = PF_ROLES_ANY,
        .long_lived = true,
        .ctx = s,
        .on_start = watch_start,
        .on_writable = watch_writable,
        .on_close = watch_close,
        .on_free = watch_free,
    };
    enum pf_status rc = pf_rpc_server_add(s->rpc, &m, 1, err);
    if (rc == PF_OK)
        pf_rpc_server_every(s->rpc, 1000, stall_check, s);
    return rc;
}

void pf_sched_events_destroy(struct pf_sched *s)
{
    struct pf_sched_events *ev = s->events;
    if (ev == NULL)
        return;
    pthread_mutex_destroy(&ev->mu);
    free(ev);
    s->events = NULL;
}
