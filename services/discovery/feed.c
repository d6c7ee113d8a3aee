/* The replica's event feed: tails pf:disc:events and fans events out to the
 * Watch calls of this replica; also reaps expired entries and keeps the
 * replica's own entry registered. See feed.h for the consistency rules. */
#include "feed.h"

#include "discovery_client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "log.h"
#include "rpc/pb.h"
#include "timeutil.h"

#define READ_BLOCK_MS   250
#define READ_MAX        512
#define RETRY_MS        500
#define REAP_DEFAULT_MS 500
#define REAP_LIMIT      500
#define SELF_TTL_MS     15000
#define CATCH_UP_ROUNDS 50
#define SYNC_WAIT_MS    3000

struct pf_disc_watcher {
    struct pf_disc_feed *feed;
    struct pf_rpc_call *call;
    int kind; /* 0 = every kind */
    bool send_initial;
    /* under feed->mu: */
    bool listed;
    bool closed;
    bool dead;                         /* finished by the feed: send nothing more */
    char after[PF_DISC_STREAM_ID_MAX]; /* the feed delivers events after this id */
    struct pf_disc_watcher *prev, *next;
};

struct pf_disc_feed {
    struct pf_registry *registry;
    int64_t reap_interval_ms;
    char *self_id;
    char *self_address;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t synced_cv; /* signalled when the feed (re)synchronises */
    /* under mu: */
    bool synced;
    char position[PF_DISC_STREAM_ID_MAX];
    uint64_t version;
    struct pf_disc_watcher head;
    size_t watchers;
    bool gap; /* set by the event callback */
    /* the thread's own: */
    char self_lease[PF_DISC_LEASE_MAX];
    int64_t self_next;
    struct pf_metric *m_watchers, *m_events, *m_resets, *m_reaped;
};

enum pf_status pf_disc_feed_create(const struct pf_disc_feed_opts *opts, struct pf_disc_feed **out,
                                   struct pf_error *err)
{
    struct pf_disc_feed *f = calloc(1, sizeof(*f));
    *out = NULL;
    if (f == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    f->registry = opts->registry;
    f->reap_interval_ms = opts->reap_interval_ms > 0 ? opts->reap_interval_ms : REAP_DEFAULT_MS;
    pthread_mutex_init(&f->mu, NULL);
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&f->synced_cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    f->head.next = f->head.prev = &f->head;
    atomic_init(&f->stop, false);
    f->m_watchers = pf_metrics_gauge(opts->metrics, "printfarm_discovery_watchers",
                                     "Watch streams open on this replica", NULL);
    f->m_events = pf_metrics_counter(opts->metrics, "printfarm_discovery_events_total",
                                     "registry events read from the stream, by type", "type");
    f->m_resets = pf_metrics_counter(
        opts->metrics, "printfarm_discovery_feed_resets_total",
        "times this replica ended its watchers (redis unreachable or events missed)", NULL);
    f->m_reaped = pf_metrics_counter(opts->metrics, "printfarm_discovery_expired_total",
                                     "entries this replica removed when their lease ran out", NULL);
    *out = f;
    return PF_OK;
}

enum pf_status pf_disc_feed_set_self(struct pf_disc_feed *f, const char *id, const char *address,
                                     struct pf_error *err)
{
    char *i = strdup(id), *a = strdup(address);
    if (i == NULL || a == NULL) {
        free(i);
        free(a);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    free(f->self_id);
    free(f->self_address);
    f->self_id = i;
    f->self_address = a;
    return PF_OK;
}

void pf_disc_feed_destroy(struct pf_disc_feed *f)
{
    if (f == NULL)
        return;
    pf_disc_feed_stop(f);
    free(f->self_id);
    free(f->self_address);
    pthread_cond_destroy(&f->synced_cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* ---- watchers ---- */

struct pf_disc_watcher *pf_disc_watcher_create(struct pf_disc_feed *f, struct pf_rpc_call *call,
                                               int kind, bool send_initial)
{
    struct pf_disc_watcher *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->feed = f;
    w->call = call;
    w->kind = kind;
    w->send_initial = send_initial;
    return w;
}

static void list_remove(struct pf_disc_feed *f, struct pf_disc_watcher *w)
{
    if (!w->listed)
        return;
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->listed = false;
    f->watchers--;
    pf_metric_set(f->m_watchers, NULL, (double)f->watchers);
}

void pf_disc_watcher_close(struct pf_disc_watcher *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->feed->mu);
    w->closed = true;
    list_remove(w->feed, w);
    pthread_mutex_unlock(&w->feed->mu);
}

void pf_disc_watcher_destroy(struct pf_disc_watcher *w)
{
    free(w);
}

/* Sends packed bytes to a watcher; a watcher that stopped reading is ended.
 * False when the watcher can take nothing more. */
static bool send_bytes(struct pf_disc_watcher *w, const uint8_t *data, size_t len)
{
    enum pf_status rc = pf_rpc_call_send(w->call, data, len);
    if (rc == PF_OK)
        return true;
    if (rc == PF_E_RESOURCE)
        pf_rpc_call_finish(w->call, PF_E_RESOURCE,
                           "watcher is not reading its events: watch again with send_initial");
    return false;
}

static bool send_event(struct pf_disc_watcher *w, int type, Printfarm__V1__InstanceStatus *st,
                       bool initial_done)
{
    Printfarm__V1__InstanceEvent ev = PRINTFARM__V1__INSTANCE_EVENT__INIT;
    enum pf_status rc;
    ev.type = (Printfarm__V1__InstanceEventType)type;
    ev.instance = st;
    ev.initial_done = initial_done;
    rc = pf_rpc_call_send_msg(w->call, &ev.base);
    if (rc == PF_E_RESOURCE)
        pf_rpc_call_finish(w->call, PF_E_RESOURCE,
                           "watcher is not reading its events: watch again with send_initial");
    return rc == PF_OK;
}

/* Ends every listed watcher with UNAVAILABLE (under mu). */
static void end_all_locked(struct pf_disc_feed *f, const char *msg)
{
    bool any = false;
    for (struct pf_disc_watcher *w = f->head.next; w != &f->head; w = w->next) {
        if (!w->dead) {
            pf_rpc_call_finish(w->call, PF_E_UNAVAILABLE, msg);
            w->dead = true;
            any = true;
        }
    }
    if (any)
        pf_metric_add(f->m_resets, NULL, 1);
}

/* Replay during a watcher's start: events between its snapshot and the feed. */
struct replay {
    struct pf_disc_watcher *w;
    char last[PF_DISC_STREAM_ID_MAX];
    uint64_t version;
    bool gap;
    bool failed;
};

static bool replay_event(const struct pf_registry_event *ev, void *arg)
{
    struct replay *r = arg;
    if (r->version != 0 && ev->version != r->version + 1) {
        r->gap = true;
        return false;
    }
    r->version = ev->version;
    snprintf(r->last, sizeof(r->last), "%s", ev->id);
    if (r->w->kind != 0 && r->w->kind != ev->kind)
        return true;
    if (!send_event(r->w, ev->type, ev->status, false)) {
        r->failed = true;
        return false;
    }
    return true;
}

static void begin_fail(struct pf_disc_watcher *w, const struct pf_error *err)
{
    char msg[PF_ERROR_MSG_MAX + 64];
    if (err->code == PF_E_UNAVAILABLE)
        snprintf(msg, sizeof(msg), "discovery registry is unavailable: %s", err->msg);
    else
        snprintf(msg, sizeof(msg), "%s", err->msg);
    pf_rpc_call_finish(w->call, err->code, msg);
}

void pf_disc_feed_watch_begin(struct pf_disc_watcher *w, struct pf_registry_conn *conn)
{
    struct pf_disc_feed *f = w->feed;
    struct pf_registry_snapshot snap;
    struct pf_error err;
    struct replay r;

    if (pf_rpc_call_done(w->call))
        return;
    if (pf_registry_snapshot(conn, w->kind, &snap, &err) != PF_OK) {
        begin_fail(w, &err);
        return;
    }
    if (w->send_initial) {
        for (size_t i = 0; i < snap.count; i++) {
            if (!send_event(w, PRINTFARM__V1__INSTANCE_EVENT_TYPE__INSTANCE_EVENT_TYPE_ADDED,
                            snap.items[i], i + 1 == snap.count))
                goto out_release;
        }
        if (snap.count == 0) {
            Printfarm__V1__InstanceEvent ev = PRINTFARM__V1__INSTANCE_EVENT__INIT;
            ev.initial_done = true;
            if (pf_rpc_call_send_msg(w->call, &ev.base) != PF_OK)
                goto out_release;
        }
    }
    memset(&r, 0, sizeof(r));
    r.w = w;
    snprintf(r.last, sizeof(r.last), "%s", snap.stream_id);
    r.version = snap.version;
    for (int round = 0; round < CATCH_UP_ROUNDS; round++) {
        char upto[PF_DISC_STREAM_ID_MAX];
        pthread_mutex_lock(&f->mu);
        if (!f->synced) {
            /* Redis just came back: the feed resynchronises within a retry. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += SYNC_WAIT_MS / 1000;
            while (!f->synced && !atomic_load(&f->stop) &&
                   pthread_cond_timedwait(&f->synced_cv, &f->mu, &ts) == 0) {
            }
        }
        if (!f->synced) {
            pthread_mutex_unlock(&f->mu);
            pf_error_set(&err, PF_E_UNAVAILABLE,
                         "this replica's event feed is reconnecting to redis at %s: watch again",
                         pf_registry_redis_target(f->registry));
            begin_fail(w, &err);
            goto out_release;
        }
        if (pf_disc_stream_id_cmp(f->position, r.last) <= 0) {
            /* The feed has not passed our position: from here it delivers. */
            if (!w->closed && !pf_rpc_call_done(w->call)) {
                snprintf(w->after, sizeof(w->after), "%s", r.last);
                w->next = f->head.next;
                w->prev = &f->head;
                f->head.next->prev = w;
                f->head.next = w;
                w->listed = true;
                f->watchers++;
                pf_metric_set(f->m_watchers, NULL, (double)f->watchers);
            }
            pthread_mutex_unlock(&f->mu);
            goto out_release;
        }
        snprintf(upto, sizeof(upto), "%s", f->position);
        pthread_mutex_unlock(&f->mu);
        if (pf_registry_event_range(conn, r.last, upto, replay_event, &r, &err) != PF_OK) {
            begin_fail(w, &err);
            goto out_release;
        }
        if (r.failed)
            goto out_release;
        if (r.gap || strcmp(r.last, upto) != 0) {
            pf_rpc_call_finish(w->call, PF_E_UNAVAILABLE,
                               "registry events were trimmed while this watch started: watch "
                               "again with send_initial");
            goto out_release;
        }
    }
    pf_rpc_call_finish(w->call, PF_E_UNAVAILABLE,
                       "registry changes too fast for this watch to catch up: watch again");
out_release:
    pf_registry_snapshot_release(&snap);
}

/* ---- the thread ---- */

static bool feed_event(const struct pf_registry_event *ev, void *arg)
{
    struct pf_disc_feed *f = arg;
    Printfarm__V1__InstanceEvent msg = PRINTFARM__V1__INSTANCE_EVENT__INIT;
    static const char *const type_names[] = {"unspecified", "added", "changed", "removed"};
    uint8_t *bytes = NULL;
    size_t len = 0;
    struct pf_error err;

    pthread_mutex_lock(&f->mu);
    if (ev->version != f->version + 1) {
        f->gap = true;
        pthread_mutex_unlock(&f->mu);
        pf_log_warn("feed_gap", "expected_version=%llu got=%llu id=%s",
                    (unsigned long long)(f->version + 1), (unsigned long long)ev->version, ev->id);
        return false;
    }
    msg.type = (Printfarm__V1__InstanceEventType)ev->type;
    msg.instance = ev->status;
    if (f->watchers > 0 && pf_pb_pack(&msg.base, &bytes, &len, &err) != PF_OK)
        bytes = NULL;
    for (struct pf_disc_watcher *w = f->head.next; w != &f->head && bytes != NULL; w = w->next) {
        if (w->dead || (w->kind != 0 && w->kind != ev->kind) ||
            pf_disc_stream_id_cmp(ev->id, w->after) <= 0)
            continue;
        if (!send_bytes(w, bytes, len))
            w->dead = true;
    }
    snprintf(f->position, sizeof(f->position), "%s", ev->id);
    f->version = ev->version;
    pthread_mutex_unlock(&f->mu);
    free(bytes);
    pf_metric_inc1(f->m_events, ev->type >= 0 && ev->type <= 3 ? type_names[ev->type] : "other");
    return true;
}

/* Registers (or heartbeats) this replica's own DISCOVERY entry. */
static void keep_self(struct pf_disc_feed *f, struct pf_registry_conn *conn)
{
    Printfarm__V1__Instance inst = PRINTFARM__V1__INSTANCE__INIT;
    struct pf_error err;
    int64_t now = pf_time_mono_ms(), ttl, exp;
    char member[PF_DISC_MEMBER_MAX];

    if (f->self_id == NULL || now < f->self_next)
        return;
    f->self_next = now + SELF_TTL_MS / 3;
    if (f->self_lease[0] != '\0' &&
        pf_disc_lease_parse(f->self_lease, member, sizeof(member), &err) == PF_OK) {
        enum pf_status rc = pf_registry_heartbeat(conn, member, f->self_lease, &ttl, &exp, &err);
        if (rc == PF_OK || rc == PF_E_UNAVAILABLE)
            return;
        f->self_lease[0] = '\0';
    }
    inst.kind = PRINTFARM__V1__INSTANCE_KIND__INSTANCE_KIND_DISCOVERY;
    inst.id = f->self_id;
    inst.address = f->self_address;
    inst.version = (char *)PF_VERSION;
    if (pf_registry_register(conn, &inst, PF_DISC_PROBE_GRPC, SELF_TTL_MS, f->self_lease, &exp,
                             &err) != PF_OK) {
        f->self_lease[0] = '\0';
        f->self_next = now + RETRY_MS;
    }
}

static void reset(struct pf_disc_feed *f, const char *msg)
{
    pthread_mutex_lock(&f->mu);
    f->synced = false;
    end_all_locked(f, msg);
    pthread_mutex_unlock(&f->mu);
}

static void pause_ms(struct pf_disc_feed *f, int64_t ms)
{
    for (int64_t slept = 0; slept < ms && !atomic_load(&f->stop); slept += 50)
        pf_time_sleep_ms(50);
}

static void *feed_main(void *arg)
{
    struct pf_disc_feed *f = arg;
    struct pf_registry_conn *conn = pf_registry_conn_create(f->registry, 3000);
    int64_t next_reap = 0;
    char msg[PF_ERROR_MSG_MAX + 96];
    struct pf_error err;

    if (conn == NULL) {
        pf_log_error("feed_failed", "error=\"out of memory\"");
        return NULL;
    }
    while (!atomic_load(&f->stop)) {
        bool synced;
        int64_t now = pf_time_mono_ms();
        char position[PF_DISC_STREAM_ID_MAX];

        keep_self(f, conn);
        if (now >= next_reap) {
            size_t removed = 0;
            next_reap = now + f->reap_interval_ms;
            if (pf_registry_reap(conn, REAP_LIMIT, &removed, &err) == PF_OK && removed > 0) {
                pf_metric_add(f->m_reaped, NULL, (double)removed);
                pf_log_info("instances_expired", "count=%zu", removed);
                if (removed == REAP_LIMIT)
                    next_reap = now; /* more are due */
            }
        }
        pthread_mutex_lock(&f->mu);
        synced = f->synced;
        snprintf(position, sizeof(position), "%s", f->position);
        pthread_mutex_unlock(&f->mu);
        if (!synced) {
            uint64_t version = 0;
            if (pf_registry_stream_position(conn, position, &version, &err) != PF_OK) {
                pause_ms(f, RETRY_MS);
                continue;
            }
            pthread_mutex_lock(&f->mu);
            snprintf(f->position, sizeof(f->position), "%s", position);
            f->version = version;
            f->gap = false;
            f->synced = true;
            pthread_cond_broadcast(&f->synced_cv);
            pthread_mutex_unlock(&f->mu);
            pf_log_info("feed_synced", "position=%s version=%llu", position,
                        (unsigned long long)version);
        }
        if (pf_registry_read_events(conn, position, READ_BLOCK_MS, READ_MAX, feed_event, f, &err) !=
            PF_OK) {
            snprintf(msg, sizeof(msg), "discovery registry is unavailable: %s: watch again",
                     err.msg);
            reset(f, msg);
            pause_ms(f, RETRY_MS);
            continue;
        }
        pthread_mutex_lock(&f->mu);
        bool gap = f->gap;
        pthread_mutex_unlock(&f->mu);
        if (gap)
            reset(f, "this replica missed registry events (redis restarted, or it fell behind "
                     "the stream): watch again with send_initial");
    }
    if (f->self_lease[0] != '\0') {
        char member[PF_DISC_MEMBER_MAX];
        if (pf_disc_lease_parse(f->self_lease, member, sizeof(member), &err) == PF_OK &&
            pf_registry_deregister(conn, member, f->self_lease, NULL, &err) != PF_OK)
            pf_log_warn("self_deregister_failed", "error=\"%s\"", err.msg);
    }
    pf_registry_conn_destroy(conn);
    return NULL;
}

enum pf_status pf_disc_feed_start(struct pf_disc_feed *f, struct pf_error *err)
{
    if (pthread_create(&f->thread, NULL, feed_main, f) != 0)
        return pf_error_set(err, PF_E_RESOURCE, "could not start the event feed thread");
    f->started = true;
    return PF_OK;
}

void pf_disc_feed_stop(struct pf_disc_feed *f)
{
    if (f == NULL || !f->started)
        return;
    atomic_store(&f->stop, true);
    pthread_join(f->thread, NULL);
    f->started = false;
}
