/* Agent streams (printfarm.v1.Scheduler/Connect) and the live state of every
 * printer this replica has heard from. One stream per printer id: a second
 * one while the first is alive is refused with ALREADY_EXISTS. Messages of
 * one stream are handled in order: anything that touches the database (the
 * hello, attempt events, bed cleared) runs on the worker queue while reading
 * is paused, then reading resumes. Attempt events and bed-cleared messages
 * carry a per-agent seq recorded in printers.agent_acked_seq in the same
 * fenced transaction as their effect, so a repeat (seq <= acked) is acked
 * again and changes nothing. Status and progress stay in memory. The registry
 * (printer id -> entry) is guarded by one mutex; entries are kept after a
 * stream ends so the dispatcher knows since when a printer has been away. */
#include <stdio.h>
#include <string.h>
#include "log.h"
#include "modules.h"
#include "policy.h"
#include "rpc/pb.h"
#include "timeutil.h"
#include "validate.h"

#define BUCKETS         4096
#define MAX_ENTRIES     200000
#define MAX_CACHED      100000 /* digests remembered per printer */
#define FENCED_ATTEMPTS 4

struct stream {
    struct pf_sched *s;
    struct pf_rpc_call *call;
    char printer_id[PF_SCHED_PRINTER_ID_MAX + 1];
    bool hello_seen; /* completion-queue thread only */
    bool registered; /* holds a call reference for the registry */
    bool welcomed;   /* under the registry mutex */
    bool auto_clear; /* from the hello's capabilities */
    /* Completion-queue thread only: on the list of streams still waiting for
     * their hello (see hello_deadline_check) while awaiting is true. */
    bool awaiting;
    int64_t opened_at; /* monotonic ms */
    struct stream *await_prev, *await_next;
};

struct entry {
    struct entry *next;
    char id[PF_SCHED_PRINTER_ID_MAX + 1];
    struct stream *stream; /* NULL when no stream */
    struct pf_sched_live live;
    int64_t offline_since; /* monotonic ms */
    int64_t ready_since;
    char (*cached)[65];
    size_t n_cached, cap_cached;
};

struct pf_sched_agents {
    pthread_mutex_t mu;
    struct entry *buckets[BUCKETS];
    size_t n_entries;
    size_t n_streams;
    struct stream awaiting; /* sentinel; completion-queue thread only */
    struct pf_metric *m_streams, *m_attempts, *m_await_clear, *m_messages;
};

static const double await_clear_buckets[] = {5,    15,   30,   60,    120,   300,   600,   1200,
                                             1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800};

/* ---- registry ---- */

static unsigned hash_id(const char *id)
{
    unsigned h = 2166136261u;
    for (; *id != '\0'; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h % BUCKETS;
}

/* Under a->mu. */
static struct entry *find(struct pf_sched_agents *a, const char *id)
{
    for (struct entry *e = a->buckets[hash_id(id)]; e != NULL; e = e->next)
        if (strcmp(e->id, id) == 0)
            return e;
    return NULL;
}

/* Under a->mu. NULL when out of memory or over MAX_ENTRIES. */
static struct entry *find_or_add(struct pf_sched_agents *a, const char *id)
{
    struct entry *e = find(a, id);
    unsigned h;
    if (e != NULL)
        return e;
    if (a->n_entries >= MAX_ENTRIES)
        return NULL;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    snprintf(e->id, sizeof(e->id), "%s", id);
    e->offline_since = INT64_MIN;
    h = hash_id(id);
    e->next = a->buckets[h];
    a->buckets[h] = e;
    a->n_entries++;
    return e;
}

static void cached_set(struct entry *e, Printfarm__V1__Digest **d, size_t n)
{
    e->n_cached = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i] == NULL || d[i]->sha256 == NULL || strlen(d[i]->sha256) != 64)
            continue;
        if (e->n_cached == e->cap_cached) {
            size_t cap = e->cap_cached == 0 ? 16 : e->cap_cached * 2;
            void *p;
            if (cap > MAX_CACHED)
                return;
            p = realloc(e->cached, cap * sizeof(*e->cached));
            if (p == NULL)
                return;
            e->cached = p;
            e->cap_cached = cap;
        }
        memcpy(e->cached[e->n_cached++], d[i]->sha256, 65);
    }
}

static void cached_update(struct entry *e, const Printfarm__V1__CacheUpdate *u)
{
    for (size_t i = 0; i < u->n_removed; i++) {
        const char *d = u->removed[i] != NULL ? u->removed[i]->sha256 : NULL;
        for (size_t j = 0; d != NULL && j < e->n_cached; j++) {
            if (strcmp(e->cached[j], d) == 0) {
                memcpy(e->cached[j], e->cached[e->n_cached - 1], 65);
                e->n_cached--;
                break;
            }
        }
    }
    for (size_t i = 0; i < u->n_added; i++) {
        const char *d = u->added[i] != NULL ? u->added[i]->sha256 : NULL;
        bool have = false;
        if (d == NULL || strlen(d) != 64)
            continue;
        for (size_t j = 0; j < e->n_cached && !have; j++)
            have = strcmp(e->cached[j], d) == 0;
        if (have)
            continue;
        if (e->n_cached == e->cap_cached) {
            size_t cap = e->cap_cached == 0 ? 16 : e->cap_cached * 2;
            void *p;
            if (cap > MAX_CACHED)
                return;
            p = realloc(e->cached, cap * sizeof(*e->cached));
            if (p == NULL)
                return;
            e->cached = p;
            e->cap_cached = cap;
        }
        memcpy(e->cached[e->n_cached++], d, 65);
    }
    e->live.cached_files = (uint32_t)e->n_cached;
}

/* struct pf_sched_live keeps temperatures by sensor: T0, T1, bed, chamber. */
static int sensor_index(const char *sensor)
{
    static const char *const names[] = {"T0", "T1", "bed", "chamber"};
    for (int i = 0; sensor != NULL && i < 4; i++)
        if (strcmp(sensor, names[i]) == 0)
            return i;
    return -1;
}

static bool reported_ready(Printfarm__V1__PrinterState st)
{
    return st == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE ||
           st == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_AWAITING_CLEAR ||
           st == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_UNSPECIFIED;
}

/* ---- the API other modules use ---- */

bool pf_sched_agents_live(struct pf_sched *s, const char *printer_id, struct pf_sched_live *out)
{
    struct pf_sched_agents *a = s->agents;
    bool ok = false;
    if (a == NULL || printer_id == NULL)
        return false;
    pthread_mutex_lock(&a->mu);
    struct entry *e = find(a, printer_id);
    if (e != NULL && e->stream != NULL && e->stream->welcomed) {
        *out = e->live;
        out->connected = true;
        ok = true;
    }
    pthread_mutex_unlock(&a->mu);
    return ok;
}

bool pf_sched_agents_send(struct pf_sched *s, const char *printer_id,
                          const Printfarm__V1__SchedulerMessage *msg, const char *attempt_id)
{
    struct pf_sched_agents *a = s->agents;
    struct pf_rpc_call *call = NULL;

    pthread_mutex_lock(&a->mu);
    struct entry *e = find(a, printer_id);
    if (e != NULL && e->stream != NULL && e->stream->welcomed) {
        call = e->stream->call;
        pf_rpc_call_ref(call);
        if (attempt_id != NULL) {
            snprintf(e->live.attempt_id, sizeof(e->live.attempt_id), "%s", attempt_id);
            e->live.progress = 0;
        }
    }
    pthread_mutex_unlock(&a->mu);
    if (call == NULL)
        return false;
    enum pf_status rc = pf_rpc_call_send_msg(call, &msg->base);
    if (rc == PF_E_RESOURCE)
        pf_rpc_call_finish(call, PF_E_RESOURCE, "agent is not reading its stream");
    pf_rpc_call_unref(call);
    return rc == PF_OK;
}

void pf_sched_agents_cancel(struct pf_sched *s, const char *printer_id, const char *attempt_id,
                            const char *reason)
{
    Printfarm__V1__SchedulerMessage m = PRINTFARM__V1__SCHEDULER_MESSAGE__INIT;
    Printfarm__V1__CancelPrint c = PRINTFARM__V1__CANCEL_PRINT__INIT;
    c.attempt_id = (char *)attempt_id;
    c.reason = (char *)(reason != NULL ? reason : "");
    m.msg_case = PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_CANCEL;
    m.cancel = &c;
    if (!pf_sched_agents_send(s, printer_id, &m, NULL))
        pf_log_info("cancel_not_sent", "printer=%s attempt=%s why=not_connected", printer_id,
                    attempt_id);
}

void pf_sched_agents_reload(struct pf_sched *s, const char *printer_id)
{
    struct pf_sched_agents *a = s->agents;
    pthread_mutex_lock(&a->mu);
    struct entry *e = find(a, printer_id);
    if (e != NULL)
        e->ready_since = pf_time_mono_ms();
    pthread_mutex_unlock(&a->mu);
    pf_sched_dispatch_kick(s);
}

int64_t pf_sched_agents_offline_since(struct pf_sched *s, const char *printer_id)
{
    struct pf_sched_agents *a = s->agents;
    int64_t since = INT64_MIN;
    pthread_mutex_lock(&a->mu);
    struct entry *e = find(a, printer_id);
    if (e != NULL)
        since = e->stream != NULL ? -1 : e->offline_since;
    pthread_mutex_unlock(&a->mu);
    return since;
}

void pf_sched_agents_count(struct pf_sched *s, size_t counts[8], size_t *known)
{
    struct pf_sched_agents *a = s->agents;
    memset(counts, 0, 8 * sizeof(counts[0]));
    pthread_mutex_lock(&a->mu);
    *known = a->n_entries;
    for (size_t b = 0; b < BUCKETS; b++) {
        for (struct entry *e = a->buckets[b]; e != NULL; e = e->next) {
            if (e->stream == NULL || !e->stream->welcomed)
                counts[PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_OFFLINE]++;
            else if ((unsigned)e->live.state < 8)
                counts[e->live.state]++;
        }
    }
    pthread_mutex_unlock(&a->mu);
}

enum pf_status pf_sched_agents_snapshot(struct pf_sched *s, struct pf_sched_agents_snapshot *out,
                                        struct pf_error *err)
{
    struct pf_sched_agents *a = s->agents;
    size_t n = 0, nc = 0;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&a->mu);
    for (size_t b = 0; b < BUCKETS; b++) {
        for (struct entry *e = a->buckets[b]; e != NULL; e = e->next) {
            if (e->stream != NULL && e->stream->welcomed) {
                n++;
                nc += e->n_cached;
            }
        }
    }
    out->printers = calloc(n > 0 ? n : 1, sizeof(*out->printers));
    out->cached = calloc(nc > 0 ? nc : 1, sizeof(*out->cached));
    if (out->printers == NULL || out->cached == NULL) {
        pthread_mutex_unlock(&a->mu);
        pf_sched_agents_snapshot_release(out);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for a printer snapshot");
    }
    for (size_t b = 0; b < BUCKETS; b++) {
        for (struct entry *e = a->buckets[b]; e != NULL; e = e->next) {
            if (e->stream == NULL || !e->stream->welcomed)
                continue;
            struct pf_sched_agent_snap *p = &out->printers[out->n++];
            memcpy(p->id, e->id, sizeof(p->id));
            p->state = e->live.state;
            p->ready_since = e->ready_since;
            p->cached_first = out->n_cached;
            p->n_cached = e->n_cached;
            if (e->n_cached > 0)
                memcpy(out->cached[out->n_cached], e->cached, e->n_cached * sizeof(*e->cached));
            out->n_cached += e->n_cached;
        }
    }
    pthread_mutex_unlock(&a->mu);
    return PF_OK;
}

void pf_sched_agents_snapshot_release(struct pf_sched_agents_snapshot *snap)
{
    free(snap->printers);
    free(snap->cached);
    memset(snap, 0, sizeof(*snap));
}

void pf_sched_agents_end_all(struct pf_sched *s, const char *why)
{
    struct pf_sched_agents *a = s->agents;
    char addr[256];
    if (a == NULL)
        return;
    pf_sched_leader_address(s, addr, sizeof(addr));
    pthread_mutex_lock(&a->mu);
    for (size_t b = 0; b < BUCKETS; b++) {
        for (struct entry *e = a->buckets[b]; e != NULL; e = e->next) {
            if (e->stream == NULL || pf_rpc_call_done(e->stream->call))
                continue;
            if (addr[0] != '\0' && strcmp(addr, s->cfg.advertise) != 0)
                pf_rpc_call_set_trailer(e->stream->call, PF_RPC_LEADER_KEY, addr);
            pf_rpc_call_finish(e->stream->call, PF_E_UNAVAILABLE, why);
        }
    }
    pthread_mutex_unlock(&a->mu);
}

/* ---- fenced transactions ---- */

enum pf_status pf_sched_fenced(struct pf_sched *s, struct pf_pg_conn *conn, pf_sched_tx_body body,
                               void *arg, struct pf_error *err)
{
    enum pf_status rc = PF_E_INTERNAL;
    char state[8];

    for (int attempt = 1; attempt <= FENCED_ATTEMPTS; attempt++) {
        rc = pf_sched_tx_begin(s, conn, err);
        if (rc != PF_OK)
            return rc;
        rc = body(s, conn, arg, err);
        if (rc == PF_OK) {
            rc = pf_sched_tx_commit(s, conn, err);
            if (rc == PF_OK)
                return PF_OK;
            snprintf(state, sizeof(state), "%s", pf_pg_last_sqlstate(conn));
        } else {
            snprintf(state, sizeof(state), "%s", pf_pg_last_sqlstate(conn));
            pf_pg_rollback(conn);
        }
        if (!pf_pg_sqlstate_is_retryable(state))
            return rc;
        pf_log_debug("tx_retry", "attempt=%d sqlstate=%s", attempt, state);
    }
    return rc;
}

void pf_sched_finish_failed(struct pf_sched *s, struct pf_rpc_call *call,
                            const struct pf_error *err)
{
    if (pf_sched_refuse_if_follower(s, call))
        return;
    pf_rpc_call_finish_err(call, err);
}

/* ---- state names ---- */

static const char *const attempt_state_names[] = {"",       "dispatched", "printing", "succeeded",
                                                  "failed", "cancelled",  "lost"};
static const char *const job_state_names[] = {"",     "queued", "held",     "printing",
                                              "done", "failed", "cancelled"};

static int name_index(const char *const *names, size_t n, const char *text)
{
    for (size_t i = 1; text != NULL && i < n; i++)
        if (strcmp(names[i], text) == 0)
            return (int)i;
    return 0;
}

static Printfarm__V1__AttemptState attempt_state_of(const char *text)
{
    return (Printfarm__V1__AttemptState)name_index(attempt_state_names, 7, text);
}

static Printfarm__V1__JobState job_state_of(const char *text)
{
    return (Printfarm__V1__JobState)name_index(job_state_names, 7, text);
}

static bool attempt_active(Printfarm__V1__AttemptState st)
{
    return st == PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_DISPATCHED ||
           st == PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_PRINTING;
}

/* As validate.h's pf_sched_job_state_after: finished states stay; done when
 * every copy succeeded; held stays held; printing when every remaining copy
 * has an attempt; else queued. */
static Printfarm__V1__JobState job_state_after(Printfarm__V1__JobState cur, int64_t count,
                                               int64_t succeeded, int64_t in_progress)
{
    if (cur == PRINTFARM__V1__JOB_STATE__JOB_STATE_DONE ||
        cur == PRINTFARM__V1__JOB_STATE__JOB_STATE_FAILED ||
        cur == PRINTFARM__V1__JOB_STATE__JOB_STATE_CANCELLED)
        return cur;
    if (succeeded >= count)
        return PRINTFARM__V1__JOB_STATE__JOB_STATE_DONE;
    if (cur == PRINTFARM__V1__JOB_STATE__JOB_STATE_HELD)
        return cur;
    if (succeeded + in_progress >= count)
        return PRINTFARM__V1__JOB_STATE__JOB_STATE_PRINTING;
    return PRINTFARM__V1__JOB_STATE__JOB_STATE_QUEUED;
}

/* ---- attempt transitions (inside a fenced transaction) ---- */

/* What to do after the commit. */
struct post {
    bool kick;
    bool run_clearing;
    char clearing_attempt[PF_SCHED_ID_MAX];
    const char *result;         /* for the attempts counter */
    double await_clear_seconds; /* < 0: none */
};

static void post_reset(struct post *p)
{
    memset(p, 0, sizeof(*p));
    p->await_clear_seconds = -1;
}

static enum pf_status add_event(struct pf_pg_conn *conn, Printfarm__V1__EventKind kind,
                                const char *job, const char *printer, const char *attempt,
                                Printfarm__V1__JobState js, Printfarm__V1__PrinterState ps,
                                Printfarm__V1__AttemptState as, const char *text,
                                struct pf_error *err)
{
    struct pf_sched_event ev = {
        .kind = kind,
        .job_id = job,
        .printer_id = printer,
        .attempt_id = attempt,
        .job_state = js,
        .printer_state = ps,
        .attempt_state = as,
        .text = text,
    };
    return pf_sched_event_add(conn, &ev, NULL, err);
}

/* Whether the job has now failed on max_printers distinct printers. */
static enum pf_status job_failed_by_policy(struct pf_sched *s, struct pf_pg_conn *conn,
                                           const char *job_id, int64_t max_att,
                                           int64_t max_printers, bool *failed, struct pf_error *err)
{
    const char *p[1] = {job_id};
    PGresult *res;
    enum pf_status rc = pf_pg_exec(conn,
                                   "SELECT printer_id, state FROM attempts WHERE job_id = $1 "
                                   "AND state IN ('succeeded','failed') ORDER BY printer_id",
                                   1, p, &res, err);
    if (rc != PF_OK)
        return rc;
    int n = PQntuples(res);
    struct pf_policy_attempt *h = calloc(n > 0 ? (size_t)n : 1, sizeof(*h));
    if (h == NULL) {
        PQclear(res);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    uint32_t printer_no = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && strcmp(pf_pg_text(res, i, 0), pf_pg_text(res, i - 1, 0)) != 0)
            printer_no++;
        h[i].job = 0;
        h[i].printer = printer_no;
        h[i].result = attempt_state_of(pf_pg_text(res, i, 1)) ==
                              PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_FAILED
                          ? PF_POLICY_FAILED
                          : PF_POLICY_SUCCEEDED;
        h[i].time = i;
    }
    struct pf_policy_limits farm;
    pf_policy_limits_init(&farm);
    farm.max_attempts_per_printer = (uint32_t)s->cfg.default_max_attempts_per_printer;
    farm.max_printers = (uint32_t)s->cfg.default_max_printers;
    farm.quarantine_after = (uint32_t)s->cfg.quarantine_after;
    struct pf_policy_limits lim =
        pf_policy_limits_for_job(&farm, (uint32_t)max_att, (uint32_t)max_printers);
    *failed = pf_policy_job_failed(h, (size_t)n, &lim, 0);
    free(h);
    PQclear(res);
    return PF_OK;
}

/* The printer's streak over its last (consecutive_failures + 1) decided
 * attempts: a release from quarantine resets the counter to 0, so older
 * failures no longer count. */
static enum pf_status printer_streak(struct pf_sched *s, struct pf_pg_conn *conn,
                                     const char *printer_id, int64_t consecutive, uint32_t *streak,
                                     bool *quarantine, struct pf_error *err)
{
    char limit[24];
    const char *p[2] = {printer_id, limit};
    PGresult *res;
    snprintf(limit, sizeof(limit), "%lld", (long long)(consecutive + 1));
    enum pf_status rc = pf_pg_exec(conn,
                                   "SELECT job_id, state FROM attempts WHERE printer_id = $1 "
                                   "AND state IN ('succeeded','failed') "
                                   "ORDER BY ended_at DESC NULLS LAST, id DESC LIMIT $2::bigint",
                                   2, p, &res, err);
    if (rc != PF_OK)
        return rc;
    int n = PQntuples(res);
    struct pf_policy_attempt *h = calloc(n > 0 ? (size_t)n : 1, sizeof(*h));
    if (h == NULL) {
        PQclear(res);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        uint32_t job = (uint32_t)i;
        for (int j = 0; j < i; j++) {
            if (strcmp(pf_pg_text(res, i, 0), pf_pg_text(res, j, 0)) == 0) {
                job = h[j].job;
                break;
            }
        }
        h[i].job = job;
        h[i].printer = 0;
        h[i].result = attempt_state_of(pf_pg_text(res, i, 1)) ==
                              PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_FAILED
                          ? PF_POLICY_FAILED
                          : PF_POLICY_SUCCEEDED;
        h[i].time = n - i; /* row 0 is the latest */
    }
    struct pf_policy_limits lim;
    pf_policy_limits_init(&lim);
    lim.quarantine_after = (uint32_t)s->cfg.quarantine_after;
    *streak = pf_policy_printer_streak(h, (size_t)n, 0);
    *quarantine = pf_policy_printer_quarantined(h, (size_t)n, &lim, 0);
    free(h);
    PQclear(res);
    return PF_OK;
}

/* One attempt event applied to its attempt. PF_E_INVALID when the attempt is
 * unknown or not this printer's. An attempt no longer active is left alone. */
static enum pf_status attempt_apply(struct pf_sched *s, struct pf_pg_conn *conn,
                                    const char *printer_id, const char *attempt_id,
                                    Printfarm__V1__AttemptEventKind kind, const char *reason,
                                    bool auto_clear, struct post *post, struct pf_error *err)
{
    const char *p[6];
    PGresult *res = NULL;
    enum pf_status rc;
    char text[512];
    Printfarm__V1__AttemptState to;
    const char *counter;
    Printfarm__V1__EventKind ev_kind;

    p[0] = attempt_id;
    rc = pf_pg_exec(conn,
                    "SELECT a.state, a.job_id, a.printer_id, j.state, j.count, j.succeeded, "
                    "j.in_progress, j.max_attempts_per_printer, j.max_printers "
                    "FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.id = $1 "
                    "FOR UPDATE OF a, j",
                    1, p, &res, err);
    if (rc != PF_OK)
        return rc;
    if (PQntuples(res) != 1 || strcmp(pf_pg_text(res, 0, 2), printer_id) != 0) {
        PQclear(res);
        return pf_error_set(err, PF_E_INVALID, "attempt '%s' is not an attempt of printer '%s'",
                            attempt_id, printer_id);
    }
    Printfarm__V1__AttemptState cur = attempt_state_of(pf_pg_text(res, 0, 0));
    char job_id[PF_SCHED_ID_MAX];
    snprintf(job_id, sizeof(job_id), "%s", pf_pg_text(res, 0, 1));
    Printfarm__V1__JobState jstate = job_state_of(pf_pg_text(res, 0, 3));
    int64_t count = 0, succeeded = 0, in_progress = 0, max_att = 0, max_printers = 0;
    if (pf_pg_int64(res, 0, 4, &count, err) != PF_OK ||
        pf_pg_int64(res, 0, 5, &succeeded, err) != PF_OK ||
        pf_pg_int64(res, 0, 6, &in_progress, err) != PF_OK ||
        pf_pg_int64(res, 0, 7, &max_att, err) != PF_OK ||
        pf_pg_int64(res, 0, 8, &max_printers, err) != PF_OK) {
        PQclear(res);
        return err->code;
    }
    PQclear(res);
    if (!attempt_active(cur)) {
        pf_log_info("attempt_event_ignored", "printer=%s attempt=%s state=%s kind=%d", printer_id,
                    attempt_id, attempt_state_names[cur], (int)kind);
        return PF_OK;
    }

    if (kind == PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_STARTED) {
        if (cur != PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_DISPATCHED)
            return PF_OK;
        rc = pf_pg_exec(conn,
                        "UPDATE attempts SET state = 'printing', started_at = clock_timestamp() "
                        "WHERE id = $1",
                        1, p, NULL, err);
        if (rc != PF_OK)
            return rc;
        snprintf(text, sizeof(text), "attempt %s of job %s started on printer %s", attempt_id,
                 job_id, printer_id);
        return add_event(conn, PRINTFARM__V1__EVENT_KIND__EVENT_KIND_ATTEMPT_STARTED, job_id,
                         printer_id, attempt_id, jstate,
                         PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING,
                         PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_PRINTING, text, err);
    }

    int succ_add = 0, fail_add = 0, cancel_add = 0;
    switch (kind) {
    case PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_SUCCEEDED:
        to = PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_SUCCEEDED;
        ev_kind = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_ATTEMPT_SUCCEEDED;
        counter = "succeeded";
        succ_add = 1;
        break;
    case PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_FAILED:
        to = PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_FAILED;
        ev_kind = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_ATTEMPT_FAILED;
        counter = "failed";
        fail_add = 1;
        break;
    case PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_CANCELLED:
        to = PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_CANCELLED;
        ev_kind = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_ATTEMPT_CANCELLED;
        counter = "cancelled";
        cancel_add = 1;
        break;
    default:
        return pf_error_set(err, PF_E_INVALID,
                            "attempt event kind %d is not one of started, "
                            "succeeded, failed, cancelled",
                            (int)kind);
    }

    p[1] = attempt_state_names[to];
    p[2] = reason != NULL ? reason : "";
    rc = pf_pg_exec(conn,
                    "UPDATE attempts SET state = $2, reason = $3, ended_at = clock_timestamp(), "
                    "started_at = coalesce(started_at, clock_timestamp()), "
                    "progress = CASE WHEN $2 = 'succeeded' THEN 1 ELSE progress END WHERE id = $1",
                    3, p, NULL, err);
    if (rc != PF_OK)
        return rc;

    succeeded += succ_add;
    in_progress -= 1;
    Printfarm__V1__JobState jnew = job_state_after(jstate, count, succeeded, in_progress);
    char reason_text[300] = "";
    if (fail_add) {
        bool failed = false;
        rc = job_failed_by_policy(s, conn, job_id, max_att, max_printers, &failed, err);
        if (rc != PF_OK)
            return rc;
        if (failed && (jnew == PRINTFARM__V1__JOB_STATE__JOB_STATE_QUEUED ||
                       jnew == PRINTFARM__V1__JOB_STATE__JOB_STATE_PRINTING ||
                       jnew == PRINTFARM__V1__JOB_STATE__JOB_STATE_HELD)) {
            jnew = PRINTFARM__V1__JOB_STATE__JOB_STATE_FAILED;
            snprintf(reason_text, sizeof(reason_text),
                     "failed on %lld distinct printers (last: %s on %s: %.150s)",
                     (long long)max_printers, attempt_id, printer_id, reason != NULL ? reason : "");
        }
    }
    char sa[8], fa[8], ca[8];
    snprintf(sa, sizeof(sa), "%d", succ_add);
    snprintf(fa, sizeof(fa), "%d", fail_add);
    snprintf(ca, sizeof(ca), "%d", cancel_add);
    const char *jp[6] = {job_id, sa, fa, ca, job_state_names[jnew], reason_text};
    rc = pf_pg_exec(
        conn,
        "UPDATE jobs SET succeeded = succeeded + $2::int, in_progress = in_progress - 1, "
        "failed_attempts = failed_attempts + $3::int, "
        "cancelled_attempts = cancelled_attempts + $4::int, state = $5, "
        "state_reason = CASE WHEN $6 = '' THEN state_reason ELSE $6 END, "
        "updated_at = clock_timestamp() WHERE id = $1",
        6, jp, NULL, err);
    if (rc != PF_OK)
        return rc;

    /* The printer: awaiting clear; its streak and maybe quarantine. */
    const char *pp[1] = {printer_id};
    rc = pf_pg_exec(conn, "SELECT consecutive_failures, quarantined FROM printers WHERE id = $1", 1,
                    pp, &res, err);
    if (rc != PF_OK)
        return rc;
    int64_t consecutive = 0;
    bool was_quarantined = PQntuples(res) == 1 && strcmp(pf_pg_text(res, 0, 1), "t") == 0;
    if (PQntuples(res) == 1 && pf_pg_int64(res, 0, 0, &consecutive, err) != PF_OK) {
        PQclear(res);
        return err->code;
    }
    PQclear(res);
    uint32_t streak = (uint32_t)consecutive;
    bool quarantine = false;
    if (succ_add || fail_add) {
        rc = printer_streak(s, conn, printer_id, consecutive, &streak, &quarantine, err);
        if (rc != PF_OK)
            return rc;
    }
    char st[16], qr[200];
    snprintf(st, sizeof(st), "%u", streak);
    qr[0] = '\0';
    if (quarantine && !was_quarantined)
        snprintf(qr, sizeof(qr), "failed %u consecutive attempts of different jobs", streak);
    const char *up[4] = {printer_id, attempt_id, st, qr};
    rc = pf_pg_exec(conn,
                    "UPDATE printers SET awaiting_clear = true, "
                    "awaiting_clear_since = coalesce(awaiting_clear_since, clock_timestamp()), "
                    "last_attempt_id = $2, consecutive_failures = $3::int, "
                    "quarantined = quarantined OR $4 <> '', "
                    "state_reason = CASE WHEN $4 <> '' THEN $4 ELSE state_reason END "
                    "WHERE id = $1",
                    4, up, NULL, err);
    if (rc != PF_OK)
        return rc;

    Printfarm__V1__PrinterState pstate =
        quarantine || was_quarantined ? PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_QUARANTINED
                                      : PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_AWAITING_CLEAR;
    snprintf(text, sizeof(text), "attempt %s of job %s %s on printer %s%s%.200s", attempt_id,
             job_id, counter, printer_id, reason != NULL && reason[0] != '\0' ? ": " : "",
             reason != NULL ? reason : "");
    rc = add_event(conn, ev_kind, job_id, printer_id, attempt_id, jnew, pstate, to, text, err);
    if (rc != PF_OK)
        return rc;
    if (jnew != jstate && (jnew == PRINTFARM__V1__JOB_STATE__JOB_STATE_DONE ||
                           jnew == PRINTFARM__V1__JOB_STATE__JOB_STATE_FAILED)) {
        bool done = jnew == PRINTFARM__V1__JOB_STATE__JOB_STATE_DONE;
        if (done)
            snprintf(text, sizeof(text), "job %s done: %lld of %lld copies succeeded", job_id,
                     (long long)succeeded, (long long)count);
        else
            snprintf(text, sizeof(text), "job %s %s", job_id, reason_text);
        rc = add_event(conn,
                       done ? PRINTFARM__V1__EVENT_KIND__EVENT_KIND_JOB_DONE
                            : PRINTFARM__V1__EVENT_KIND__EVENT_KIND_JOB_FAILED,
                       job_id, NULL, NULL, jnew, 0, 0, text, err);
        if (rc != PF_OK)
            return rc;
    }
    if (quarantine && !was_quarantined) {
        snprintf(text, sizeof(text), "printer %s quarantined: %s", printer_id, qr);
        rc = add_event(conn, PRINTFARM__V1__EVENT_KIND__EVENT_KIND_PRINTER_QUARANTINED, NULL,
                       printer_id, attempt_id, 0,
                       PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_QUARANTINED, 0, text, err);
        if (rc != PF_OK)
            return rc;
    }
    post->kick = true;
    post->result = counter;
    if (succ_add && auto_clear && !quarantine) {
        post->run_clearing = true;
        snprintf(post->clearing_attempt, sizeof(post->clearing_attempt), "%s", attempt_id);
    }
    return PF_OK;
}

/* Marks an active attempt lost; the caller holds no expectations about the
 * printer. *changed false when it was no longer active. */
static enum pf_status attempt_lose_body(struct pf_pg_conn *conn, const char *attempt_id,
                                        const char *reason, bool *changed, struct pf_error *err)
{
    const char *p[2] = {attempt_id, reason};
    PGresult *res;
    char text[700];
    enum pf_status rc;

    *changed = false;
    rc = pf_pg_exec(conn,
                    "SELECT a.state, a.job_id, a.printer_id, j.state, j.count, j.succeeded, "
                    "j.in_progress FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.id = $1 "
                    "FOR UPDATE OF a, j",
                    1, p, &res, err);
    if (rc != PF_OK)
        return rc;
    if (PQntuples(res) != 1 || !attempt_active(attempt_state_of(pf_pg_text(res, 0, 0)))) {
        PQclear(res);
        return PF_OK;
    }
    char job_id[PF_SCHED_ID_MAX], printer_id[PF_SCHED_ID_MAX];
    snprintf(job_id, sizeof(job_id), "%s", pf_pg_text(res, 0, 1));
    snprintf(printer_id, sizeof(printer_id), "%s", pf_pg_text(res, 0, 2));
    Printfarm__V1__JobState jstate = job_state_of(pf_pg_text(res, 0, 3));
    int64_t count = 0, succeeded = 0, in_progress = 0;
    if (pf_pg_int64(res, 0, 4, &count, err) != PF_OK ||
        pf_pg_int64(res, 0, 5, &succeeded, err) != PF_OK ||
        pf_pg_int64(res, 0, 6, &in_progress, err) != PF_OK) {
        PQclear(res);
        return err->code;
    }
    PQclear(res);
    rc = pf_pg_exec(conn,
                    "UPDATE attempts SET state = 'lost', reason = $2, ended_at = clock_timestamp() "
                    "WHERE id = $1",
                    2, p, NULL, err);
    if (rc != PF_OK)
        return rc;
    Printfarm__V1__JobState jnew = job_state_after(jstate, count, succeeded, in_progress - 1);
    const char *jp[2] = {job_id, job_state_names[jnew]};
    rc = pf_pg_exec(
        conn,
        "UPDATE jobs SET in_progress = in_progress - 1, lost_attempts = lost_attempts + 1, "
        "state = $2, updated_at = clock_timestamp() WHERE id = $1",
        2, jp, NULL, err);
    if (rc != PF_OK)
        return rc;
    snprintf(text, sizeof(text), "attempt %s of job %s on printer %s lost: %.200s", attempt_id,
             job_id, printer_id, reason);
    rc =
        add_event(conn, PRINTFARM__V1__EVENT_KIND__EVENT_KIND_ATTEMPT_LOST, job_id, printer_id,
                  attempt_id, jnew, 0, PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_LOST, text, err);
    if (rc != PF_OK)
        return rc;
    *changed = true;
    return PF_OK;
}

struct lose_ctx {
    const char *attempt_id;
    const char *reason;
    bool changed;
};

static enum pf_status lose_tx(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                              struct pf_error *err)
{
    struct lose_ctx *c = arg;
    const char *p[1] = {c->attempt_id};
    PGresult *res;
    c->changed = false;
    /* Lock the printer first (the order every transaction here keeps), then
     * check it is still away: a hello that wins the lock claims the attempt. */
    enum pf_status rc =
        pf_pg_exec(conn,
                   "SELECT p.id FROM attempts a JOIN printers p ON p.id = a.printer_id "
                   "WHERE a.id = $1 FOR UPDATE OF p",
                   1, p, &res, err);
    if (rc != PF_OK)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return PF_OK;
    }
    bool away = pf_sched_agents_offline_since(s, pf_pg_text(res, 0, 0)) != -1;
    PQclear(res);
    if (!away)
        return PF_OK;
    return attempt_lose_body(conn, c->attempt_id, c->reason, &c->changed, err);
}

enum pf_status pf_sched_attempt_lose(struct pf_sched *s, struct pf_pg_conn *conn,
                                     const char *attempt_id, const char *reason, bool *changed,
                                     struct pf_error *err)
{
    struct lose_ctx c = {.attempt_id = attempt_id, .reason = reason};
    enum pf_status rc = pf_sched_fenced(s, conn, lose_tx, &c, err);
    *changed = rc == PF_OK && c.changed;
    if (*changed) {
        pf_metric_inc1(s->agents->m_attempts, "lost");
        pf_log_info("attempt_lost", "attempt=%s reason=\"%s\"", attempt_id, reason);
    }
    return rc;
}

/* ---- the Connect stream ---- */

static void send_msg(struct pf_rpc_call *call, const Printfarm__V1__SchedulerMessage *m)
{
    if (pf_rpc_call_send_msg(call, &m->base) == PF_E_RESOURCE)
        pf_rpc_call_finish(call, PF_E_RESOURCE, "agent is not reading its stream");
}

static void send_ack(struct pf_rpc_call *call, uint64_t seq)
{
    Printfarm__V1__SchedulerMessage m = PRINTFARM__V1__SCHEDULER_MESSAGE__INIT;
    Printfarm__V1__Ack ack = PRINTFARM__V1__ACK__INIT;
    ack.seq = seq;
    m.msg_case = PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_ACK;
    m.ack = &ack;
    send_msg(call, &m);
}

static void send_cancel(struct pf_rpc_call *call, const char *attempt_id, const char *reason)
{
    Printfarm__V1__SchedulerMessage m = PRINTFARM__V1__SCHEDULER_MESSAGE__INIT;
    Printfarm__V1__CancelPrint c = PRINTFARM__V1__CANCEL_PRINT__INIT;
    c.attempt_id = (char *)attempt_id;
    c.reason = (char *)reason;
    m.msg_case = PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_CANCEL;
    m.cancel = &c;
    send_msg(call, &m);
}

static void send_run_clearing(struct pf_rpc_call *call, const char *attempt_id)
{
    Printfarm__V1__SchedulerMessage m = PRINTFARM__V1__SCHEDULER_MESSAGE__INIT;
    Printfarm__V1__RunClearing rc = PRINTFARM__V1__RUN_CLEARING__INIT;
    rc.attempt_id = (char *)attempt_id;
    m.msg_case = PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_RUN_CLEARING;
    m.run_clearing = &rc;
    send_msg(call, &m);
}

static void apply_post(struct pf_sched *s, struct pf_rpc_call *call, const struct post *post)
{
    if (post->result != NULL)
        pf_metric_inc1(s->agents->m_attempts, post->result);
    if (post->await_clear_seconds >= 0)
        pf_metric_observe(s->agents->m_await_clear, NULL, post->await_clear_seconds);
    if (post->run_clearing)
        send_run_clearing(call, post->clearing_attempt);
    if (post->kick)
        pf_sched_dispatch_kick(s);
}

/* ---- hello ---- */

struct resend {
    char attempt_id[PF_SCHED_ID_MAX], job_id[PF_SCHED_ID_MAX], job_name[256];
    char bundle[65], profile[80], file[65];
    uint64_t size;
};

struct hello_ctx {
    struct stream *st;
    const Printfarm__V1__AgentHello *hello;
    /* outputs, reset by the body */
    uint64_t acked_seq;
    bool have_resend;
    struct resend resend;
    bool have_cancel;
    char cancel_attempt[PF_SCHED_ID_MAX];
    char cancel_reason[160];
    Printfarm__V1__PrinterState live_state;
    char live_attempt[PF_SCHED_ID_MAX];
    struct post post;
};

static enum pf_status hello_tx(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                               struct pf_error *err)
{
    struct hello_ctx *c = arg;
    const Printfarm__V1__AgentHello *h = c->hello;
    const char *id = c->st->printer_id;
    PGresult *res;
    enum pf_status rc;
    char text[300];

    c->acked_seq = 0;
    c->have_resend = false;
    c->have_cancel = false;
    c->live_state = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE;
    c->live_attempt[0] = '\0';
    post_reset(&c->post);

    Printfarm__V1__ExtruderMaterials mats = PRINTFARM__V1__EXTRUDER_MATERIALS__INIT;
    mats.n_items = h->n_materials;
    mats.items = h->materials;
    Printfarm__V1__AgentCapabilities nocaps = PRINTFARM__V1__AGENT_CAPABILITIES__INIT;
    char *caps =
        pf_sched_bytea_msg(h->capabilities != NULL ? &h->capabilities->base : &nocaps.base);
    char *mat = h->n_materials > 0 ? pf_sched_bytea_msg(&mats.base) : NULL;
    if (caps == NULL || (h->n_materials > 0 && mat == NULL)) {
        free(caps);
        free(mat);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    const char *up[5] = {id, h->profile != NULL ? h->profile : "", caps,
                         h->agent_version != NULL ? h->agent_version : "", mat};
    rc = pf_pg_exec(
        conn,
        "INSERT INTO printers AS p (id, profile, capabilities, agent_version, materials, "
        "last_seen) VALUES ($1, $2, $3::bytea, $4, $5::bytea, now()) "
        "ON CONFLICT (id) DO UPDATE SET profile = EXCLUDED.profile, "
        "capabilities = EXCLUDED.capabilities, agent_version = EXCLUDED.agent_version, "
        "materials = CASE WHEN p.materials_set_by_operator THEN p.materials "
        "ELSE EXCLUDED.materials END, last_seen = now() "
        "RETURNING agent_acked_seq, awaiting_clear, quarantined, (xmax = 0)",
        5, up, &res, err);
    free(caps);
    free(mat);
    if (rc != PF_OK)
        return rc;
    int64_t acked = 0;
    if (pf_pg_int64(res, 0, 0, &acked, err) != PF_OK) {
        PQclear(res);
        return err->code;
    }
    bool awaiting = strcmp(pf_pg_text(res, 0, 1), "t") == 0;
    bool quarantined = strcmp(pf_pg_text(res, 0, 2), "t") == 0;
    bool inserted = strcmp(pf_pg_text(res, 0, 3), "t") == 0;
    PQclear(res);
    c->acked_seq = (uint64_t)acked;

    /* The scheduler owns the bed state once it knows the printer (an
     * operator's ConfirmBedClear is not told to the agent, so a reconnecting
     * agent may still think its bed is full); only a printer met for the
     * first time takes the agent's word that its bed is not clear. */
    if (inserted && !h->bed_clear && !awaiting) {
        const char *p1[1] = {id};
        rc = pf_pg_exec(conn,
                        "UPDATE printers SET awaiting_clear = true, "
                        "awaiting_clear_since = clock_timestamp() WHERE id = $1",
                        1, p1, NULL, err);
        if (rc != PF_OK)
            return rc;
        awaiting = true;
    }

    /* Reconcile the attempt the agent reports with the active one here. */
    const char *p1[1] = {id};
    rc = pf_pg_exec(conn,
                    "SELECT a.id, a.state, a.job_id, a.profile, a.file, a.size, j.name, j.bundle "
                    "FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.printer_id = $1 "
                    "AND a.state IN ('dispatched','printing')",
                    1, p1, &res, err);
    if (rc != PF_OK)
        return rc;
    const Printfarm__V1__AgentAttempt *cur = h->current;
    const char *cur_id = cur != NULL && cur->attempt_id != NULL ? cur->attempt_id : "";
    bool handled_current = false;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *aid = pf_pg_text(res, i, 0);
        Printfarm__V1__AttemptState ast = attempt_state_of(pf_pg_text(res, i, 1));
        if (cur_id[0] != '\0' && strcmp(aid, cur_id) == 0) {
            handled_current = true;
            Printfarm__V1__AttemptEventKind k = 0;
            switch (cur->state) {
            case PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_PRINTING:
                if (ast == PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_DISPATCHED)
                    k = PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_STARTED;
                c->live_state = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING;
                snprintf(c->live_attempt, sizeof(c->live_attempt), "%s", aid);
                break;
            case PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_SUCCEEDED:
                k = PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_SUCCEEDED;
                break;
            case PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_FAILED:
                k = PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_FAILED;
                break;
            case PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_CANCELLED:
                k = PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_CANCELLED;
                break;
            default: /* dispatched (downloading) or unspecified: keep it */
                c->live_state = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING;
                snprintf(c->live_attempt, sizeof(c->live_attempt), "%s", aid);
                break;
            }
            if (k != 0) {
                char aid_copy[PF_SCHED_ID_MAX];
                snprintf(aid_copy, sizeof(aid_copy), "%s", aid);
                rc = attempt_apply(s, conn, id, aid_copy, k, cur->reason, c->st->auto_clear,
                                   &c->post, err);
                if (rc != PF_OK) {
                    PQclear(res);
                    return rc;
                }
            }
        } else if (ast == PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_DISPATCHED) {
            /* Recorded, but the StartPrint never reached the agent (a
             * failover between commit and send): send it again. */
            struct resend *r = &c->resend;
            c->have_resend = true;
            snprintf(r->attempt_id, sizeof(r->attempt_id), "%s", aid);
            snprintf(r->job_id, sizeof(r->job_id), "%s", pf_pg_text(res, i, 2));
            snprintf(r->profile, sizeof(r->profile), "%s", pf_pg_text(res, i, 3));
            snprintf(r->file, sizeof(r->file), "%s", pf_pg_text(res, i, 4));
            int64_t size = 0;
            if (pf_pg_int64(res, i, 5, &size, err) != PF_OK) {
                PQclear(res);
                return err->code;
            }
            r->size = (uint64_t)size;
            snprintf(r->job_name, sizeof(r->job_name), "%s", pf_pg_text(res, i, 6));
            snprintf(r->bundle, sizeof(r->bundle), "%s", pf_pg_text(res, i, 7));
            c->live_state = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING;
            snprintf(c->live_attempt, sizeof(c->live_attempt), "%s", aid);
        } else {
            /* Printing here, unknown to the agent: it is gone. */
            char aid_copy[PF_SCHED_ID_MAX];
            bool changed = false;
            snprintf(aid_copy, sizeof(aid_copy), "%s", aid);
            rc = attempt_lose_body(conn, aid_copy, "the agent reconnected without it", &changed,
                                   err);
            if (rc != PF_OK) {
                PQclear(res);
                return rc;
            }
            c->post.kick = true;
        }
    }
    PQclear(res);
    if (!handled_current && cur_id[0] != '\0' && attempt_active(cur->state)) {
        /* The agent runs an attempt this farm no longer wants. */
        c->have_cancel = true;
        snprintf(c->cancel_attempt, sizeof(c->cancel_attempt), "%s", cur_id);
        snprintf(c->cancel_reason, sizeof(c->cancel_reason),
                 "attempt is no longer active in the scheduler");
    }

    Printfarm__V1__PrinterState shown = c->live_state;
    if (quarantined)
        shown = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_QUARANTINED;
    else if (shown == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE && awaiting)
        shown = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_AWAITING_CLEAR;
    snprintf(text, sizeof(text), "printer %s connected (profile %.64s, agent %.64s)", id,
             h->profile != NULL ? h->profile : "",
             h->agent_version != NULL ? h->agent_version : "");
    return add_event(conn, PRINTFARM__V1__EVENT_KIND__EVENT_KIND_PRINTER_CONNECTED, NULL, id, NULL,
                     0, shown, 0, text, err);
}

static enum pf_status hello_db(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                               struct pf_error *err)
{
    return pf_sched_fenced(s, conn, hello_tx, arg, err);
}

static void hello_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct stream *st = pf_rpc_call_user(call);
    struct pf_sched *s = st->s;
    struct pf_sched_agents *a = s->agents;
    Printfarm__V1__AgentMessage *m;
    struct pf_error err;
    struct hello_ctx c;
    uint64_t epoch = 0;

    if (pf_rpc_call_done(call))
        return;
    m = printfarm__v1__agent_message__unpack(NULL, len, data);
    if (m == NULL || m->msg_case != PRINTFARM__V1__AGENT_MESSAGE__MSG_HELLO) {
        pf_rpc_call_finish(call, PF_E_INTERNAL, "hello could not be decoded again");
        goto out;
    }
    memset(&c, 0, sizeof(c));
    c.st = st;
    c.hello = m->hello;
    if (pf_sched_with_db(s, hello_db, &c, &err) != PF_OK) {
        pf_log_warn("agent_hello_failed", "printer=%s error=\"%s\"", st->printer_id, err.msg);
        pf_sched_finish_failed(s, call, &err);
        goto out;
    }
    if (!pf_sched_is_leader(s, &epoch)) {
        pf_sched_refuse_if_follower(s, call);
        goto out;
    }

    Printfarm__V1__SchedulerMessage w = PRINTFARM__V1__SCHEDULER_MESSAGE__INIT;
    Printfarm__V1__Welcome wel = PRINTFARM__V1__WELCOME__INIT;
    wel.scheduler_id = (char *)s->cfg.instance_id;
    wel.epoch = epoch;
    wel.acked_seq = c.acked_seq;
    wel.status_interval_ms = (uint32_t)s->cfg.status_interval_ms;
    w.msg_case = PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_WELCOME;
    w.welcome = &wel;
    send_msg(call, &w);

    pthread_mutex_lock(&a->mu);
    struct entry *e = find(a, st->printer_id);
    if (e != NULL && e->stream == st) {
        st->welcomed = true;
        e->live.connected = true;
        e->live.state = c.live_state;
        snprintf(e->live.attempt_id, sizeof(e->live.attempt_id), "%s", c.live_attempt);
        e->live.last_seen_unix_ms = pf_time_wall_ms();
        e->ready_since = pf_time_mono_ms();
        e->offline_since = INT64_MIN;
    }
    pthread_mutex_unlock(&a->mu);
    pf_log_info("agent_connected", "printer=%s profile=%s acked_seq=%llu attempt=%s",
                st->printer_id, m->hello->profile, (unsigned long long)c.acked_seq,
                c.live_attempt[0] != '\0' ? c.live_attempt : "-");

    apply_post(s, call, &c.post);
    if (c.have_resend) {
        struct resend *r = &c.resend;
        pf_log_info("start_print_resent", "printer=%s attempt=%s", st->printer_id, r->attempt_id);
        pf_sched_send_start_print(s, st->printer_id, r->attempt_id, r->job_id, r->job_name,
                                  r->bundle, r->profile, r->file, r->size);
    }
    if (c.have_cancel) {
        pf_log_info("agent_attempt_cancelled", "printer=%s attempt=%s", st->printer_id,
                    c.cancel_attempt);
        send_cancel(call, c.cancel_attempt, c.cancel_reason);
    }
    pf_sched_dispatch_kick(s);
    pf_rpc_call_read_next(call);
out:
    if (m != NULL)
        printfarm__v1__agent_message__free_unpacked(m, NULL);
}

/* ---- attempt events and bed cleared ---- */

struct event_ctx {
    struct stream *st;
    const Printfarm__V1__AgentMessage *m;
    bool duplicate;
    struct post post;
};

static enum pf_status event_tx(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                               struct pf_error *err)
{
    struct event_ctx *c = arg;
    const char *id = c->st->printer_id;
    const char *p[2] = {id, NULL};
    char seq[24];
    PGresult *res;
    enum pf_status rc;
    int64_t acked = 0;

    c->duplicate = false;
    post_reset(&c->post);
    rc = pf_pg_exec(conn, "SELECT agent_acked_seq FROM printers WHERE id = $1 FOR UPDATE", 1, p,
                    &res, err);
    if (rc != PF_OK)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return pf_error_set(err, PF_E_INTERNAL, "printer '%s' has no row", id);
    }
    rc = pf_pg_int64(res, 0, 0, &acked, err);
    PQclear(res);
    if (rc != PF_OK)
        return rc;
    if (c->m->seq <= (uint64_t)acked) {
        c->duplicate = true;
        return PF_OK;
    }
    if (c->m->msg_case == PRINTFARM__V1__AGENT_MESSAGE__MSG_ATTEMPT_EVENT) {
        const Printfarm__V1__AttemptEvent *ev = c->m->attempt_event;
        rc = attempt_apply(s, conn, id, ev->attempt_id, ev->kind, ev->reason, c->st->auto_clear,
                           &c->post, err);
    } else {
        const Printfarm__V1__BedCleared *b = c->m->bed_cleared;
        char text[200];
        rc = pf_pg_exec(conn,
                        "UPDATE printers p SET awaiting_clear = false, awaiting_clear_since = NULL "
                        "FROM (SELECT awaiting_clear_since AS since FROM printers WHERE id = $1) o "
                        "WHERE p.id = $1 AND p.awaiting_clear "
                        "RETURNING coalesce(extract(epoch FROM clock_timestamp() - o.since), 0)",
                        1, p, &res, err);
        if (rc != PF_OK)
            return rc;
        bool cleared = PQntuples(res) == 1;
        if (cleared)
            c->post.await_clear_seconds = atof(pf_pg_text(res, 0, 0));
        PQclear(res);
        if (cleared) {
            snprintf(text, sizeof(text), "printer %s: bed cleared (%s)", id,
                     b->automatic ? "automatic" : "by hand at the printer");
            rc = add_event(conn, PRINTFARM__V1__EVENT_KIND__EVENT_KIND_BED_CLEARED, NULL, id,
                           b->attempt_id, 0, PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE, 0,
                           text, err);
            if (rc != PF_OK)
                return rc;
            c->post.kick = true;
        }
    }
    if (rc != PF_OK)
        return rc;
    snprintf(seq, sizeof(seq), "%llu", (unsigned long long)c->m->seq);
    p[1] = seq;
    return pf_pg_exec(conn,
                      "UPDATE printers SET agent_acked_seq = $2::bigint, last_seen = now() "
                      "WHERE id = $1",
                      2, p, NULL, err);
}

static enum pf_status event_db(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                               struct pf_error *err)
{
    return pf_sched_fenced(s, conn, event_tx, arg, err);
}

static void event_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct stream *st = pf_rpc_call_user(call);
    struct pf_sched *s = st->s;
    struct pf_sched_agents *a = s->agents;
    Printfarm__V1__AgentMessage *m;
    struct pf_error err;
    struct event_ctx c;

    if (pf_rpc_call_done(call))
        return;
    m = printfarm__v1__agent_message__unpack(NULL, len, data);
    if (m == NULL) {
        pf_rpc_call_finish(call, PF_E_INTERNAL, "message could not be decoded again");
        return;
    }
    memset(&c, 0, sizeof(c));
    c.st = st;
    c.m = m;
    if (pf_sched_with_db(s, event_db, &c, &err) != PF_OK) {
        pf_log_warn("agent_event_failed", "printer=%s seq=%llu error=\"%s\"", st->printer_id,
                    (unsigned long long)m->seq, err.msg);
        pf_sched_finish_failed(s, call, &err);
        goto out;
    }
    send_ack(call, m->seq);
    if (c.duplicate) {
        pf_log_debug("agent_event_duplicate", "printer=%s seq=%llu", st->printer_id,
                     (unsigned long long)m->seq);
    } else if (m->msg_case == PRINTFARM__V1__AGENT_MESSAGE__MSG_ATTEMPT_EVENT) {
        const Printfarm__V1__AttemptEvent *ev = m->attempt_event;
        bool ended = ev->kind == PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_SUCCEEDED ||
                     ev->kind == PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_FAILED ||
                     ev->kind == PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_CANCELLED;
        pf_log_info("attempt_event", "printer=%s attempt=%s kind=%d seq=%llu", st->printer_id,
                    ev->attempt_id, (int)ev->kind, (unsigned long long)m->seq);
        pthread_mutex_lock(&a->mu);
        struct entry *e = find(a, st->printer_id);
        if (e != NULL && e->stream == st) {
            e->live.state = ended ? PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE
                                  : PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING;
            if (ended)
                e->ready_since = pf_time_mono_ms();
        }
        pthread_mutex_unlock(&a->mu);
    } else {
        pthread_mutex_lock(&a->mu);
        struct entry *e = find(a, st->printer_id);
        if (e != NULL)
            e->ready_since = pf_time_mono_ms();
        pthread_mutex_unlock(&a->mu);
    }
    apply_post(s, call, &c.post);
    pf_rpc_call_read_next(call);
out:
    printfarm__v1__agent_message__free_unpacked(m, NULL);
}

/* ---- disconnect ---- */

struct gone {
    struct pf_sched *s;
    char printer_id[PF_SCHED_PRINTER_ID_MAX + 1];
};

static enum pf_status gone_tx(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                              struct pf_error *err)
{
    struct gone *g = arg;
    const char *p[1] = {g->printer_id};
    char text[128];
    enum pf_status rc =
        pf_pg_exec(conn, "UPDATE printers SET last_seen = now() WHERE id = $1", 1, p, NULL, err);
    if (rc != PF_OK)
        return rc;
    snprintf(text, sizeof(text), "printer %s disconnected", g->printer_id);
    return add_event(conn, PRINTFARM__V1__EVENT_KIND__EVENT_KIND_PRINTER_DISCONNECTED, NULL,
                     g->printer_id, NULL, 0, PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_OFFLINE, 0,
                     text, err);
}

static enum pf_status gone_db(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                              struct pf_error *err)
{
    return pf_sched_fenced(s, conn, gone_tx, arg, err);
}

static void gone_work(void *arg)
{
    struct gone *g = arg;
    struct pf_error err;
    if (pf_sched_is_leader(g->s, NULL) &&
        pf_sched_agents_offline_since(g->s, g->printer_id) != -1 &&
        pf_sched_with_db(g->s, gone_db, g, &err) != PF_OK)
        pf_log_warn("disconnect_event_failed", "printer=%s error=\"%s\"", g->printer_id, err.msg);
    free(g);
}

/* ---- reported state changes (paused, error) ---- */

struct state_change {
    struct pf_sched *s;
    char printer_id[PF_SCHED_PRINTER_ID_MAX + 1];
    Printfarm__V1__PrinterState state;
    char error[200];
};

static bool noteworthy(Printfarm__V1__PrinterState st)
{
    return st == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PAUSED ||
           st == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_ERROR;
}

static enum pf_status state_tx(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                               struct pf_error *err)
{
    struct state_change *c = arg;
    bool error = c->state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_ERROR;
    const char *p[2] = {c->printer_id, error ? c->error : ""};
    char text[400];
    static const char *const names[] = {"unspecified", "offline",        "idle",  "printing",
                                        "paused",      "awaiting_clear", "error", "quarantined"};
    enum pf_status rc;

    (void)s;
    /* state_reason says why a printer is in error; a quarantine's reason stays. */
    rc = pf_pg_exec(conn, "UPDATE printers SET state_reason = $2 WHERE id = $1 AND NOT quarantined",
                    2, p, NULL, err);
    if (rc != PF_OK)
        return rc;
    snprintf(text, sizeof(text), "printer %s is %s%s%s", c->printer_id,
             (unsigned)c->state < 8 ? names[c->state] : "unknown", error ? ": " : "",
             error ? c->error : "");
    return add_event(conn, PRINTFARM__V1__EVENT_KIND__EVENT_KIND_PRINTER_STATE_CHANGED, NULL,
                     c->printer_id, NULL, 0, c->state, 0, text, err);
}

static enum pf_status state_db(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                               struct pf_error *err)
{
    return pf_sched_fenced(s, conn, state_tx, arg, err);
}

static void state_work(void *arg)
{
    struct state_change *c = arg;
    struct pf_error err;
    if (pf_sched_is_leader(c->s, NULL) && pf_sched_with_db(c->s, state_db, c, &err) != PF_OK)
        pf_log_warn("state_event_failed", "printer=%s error=\"%s\"", c->printer_id, err.msg);
    free(c);
}

/* Records a reported change into or out of paused or error (printing, idle
 * and awaiting clear already have their attempt and bed events). */
static void record_state_change(struct pf_sched *s, const char *printer_id,
                                Printfarm__V1__PrinterState before,
                                const Printfarm__V1__PrinterStatus *ps)
{
    struct state_change *c;
    if (ps->state == before || (!noteworthy(before) && !noteworthy(ps->state)))
        return;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->s = s;
    snprintf(c->printer_id, sizeof(c->printer_id), "%s", printer_id);
    c->state = ps->state;
    snprintf(c->error, sizeof(c->error), "%s", ps->error != NULL ? ps->error : "");
    if (pf_workq_submit(s->wq, state_work, c) != PF_OK)
        free(c);
}

/* ---- method callbacks (completion-queue thread) ---- */

/* ---- the hello deadline: all on the completion-queue thread ---- */

static void await_add(struct pf_sched_agents *a, struct stream *st)
{
    st->awaiting = true;
    st->opened_at = pf_time_mono_ms();
    st->await_prev = a->awaiting.await_prev;
    st->await_next = &a->awaiting;
    a->awaiting.await_prev->await_next = st;
    a->awaiting.await_prev = st;
}

static void await_remove(struct stream *st)
{
    if (!st->awaiting)
        return;
    st->awaiting = false;
    st->await_prev->await_next = st->await_next;
    st->await_next->await_prev = st->await_prev;
    st->await_prev = st->await_next = NULL;
}

/* Ends every stream open longer than --hello-timeout without a hello. The
 * list is in opening order, so the scan stops at the first young stream. */
static void hello_deadline_check(void *arg)
{
    struct pf_sched *s = arg;
    struct pf_sched_agents *a = s->agents;
    int64_t now = pf_time_mono_ms();
    char why[128];

    snprintf(why, sizeof(why), "no hello within %lld ms of opening the Connect stream",
             (long long)s->cfg.hello_timeout_ms);
    while (a->awaiting.await_next != &a->awaiting) {
        struct stream *st = a->awaiting.await_next;
        if (now - st->opened_at < s->cfg.hello_timeout_ms)
            break;
        await_remove(st);
        pf_log_info("agent_hello_timeout", "timeout_ms=%lld", (long long)s->cfg.hello_timeout_ms);
        pf_rpc_call_finish(st->call, PF_E_DEADLINE, why);
    }
}

static void connect_start(struct pf_rpc_call *call, const uint8_t *req, size_t len)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    struct stream *st;
    (void)req;
    (void)len;
    if (pf_sched_refuse_if_follower(s, call))
        return;
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        pf_rpc_call_finish(call, PF_E_RESOURCE, "out of memory");
        return;
    }
    st->s = s;
    st->call = call;
    pf_rpc_call_set_user(call, st);
    await_add(s->agents, st);
}

static bool first_message(struct pf_sched *s, struct stream *st, struct pf_rpc_call *call,
                          const Printfarm__V1__AgentMessage *m, const uint8_t *msg, size_t len)
{
    struct pf_sched_agents *a = s->agents;
    char why[512];
    struct pf_error err;
    const Printfarm__V1__AgentHello *h;

    if (m->msg_case != PRINTFARM__V1__AGENT_MESSAGE__MSG_HELLO) {
        pf_rpc_call_finish(call, PF_E_INVALID, "the first message on Connect must be a hello");
        return false;
    }
    h = m->hello;
    if (pf_sched_check_printer_id(h->printer_id, "hello.printer_id", &err) != PF_OK ||
        pf_sched_check_profile_name(h->profile, "hello.profile", &err) != PF_OK) {
        pf_rpc_call_finish_err(call, &err);
        return false;
    }
    if (pf_rpc_call_role(call) == PF_ROLE_AGENT &&
        strcmp(pf_rpc_call_principal(call), h->printer_id) != 0) {
        snprintf(why, sizeof(why),
                 "agent token '%.80s' may only connect as printer '%.80s', "
                 "not '%.64s'",
                 pf_rpc_call_principal(call), pf_rpc_call_principal(call), h->printer_id);
        pf_rpc_call_finish(call, PF_E_PERMISSION, why);
        return false;
    }
    st->hello_seen = true;
    snprintf(st->printer_id, sizeof(st->printer_id), "%s", h->printer_id);
    st->auto_clear = h->capabilities != NULL && h->capabilities->auto_clear;

    pthread_mutex_lock(&a->mu);
    struct entry *e = find_or_add(a, st->printer_id);
    if (e == NULL) {
        pthread_mutex_unlock(&a->mu);
        pf_rpc_call_finish(call, PF_E_RESOURCE, "too many printers known to this scheduler");
        return false;
    }
    if (e->stream != NULL && !pf_rpc_call_done(e->stream->call)) {
        pthread_mutex_unlock(&a->mu);
        snprintf(why, sizeof(why),
                 "printer '%s' already has a live stream to this scheduler; only one agent may "
                 "drive it (retry once the other stream has ended)",
                 st->printer_id);
        pf_rpc_call_finish(call, PF_E_EXISTS, why);
        return false;
    }
    e->stream = st;
    st->registered = true;
    pf_rpc_call_ref(call);
    a->n_streams++;
    memset(&e->live, 0, sizeof(e->live));
    e->live.state = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE;
    cached_set(e, h->cached, h->n_cached);
    e->live.cached_files = (uint32_t)e->n_cached;
    pf_metric_set(a->m_streams, NULL, (double)a->n_streams);
    pthread_mutex_unlock(&a->mu);

    pf_rpc_call_defer(call, s->wq, hello_work, msg, len);
    return false;
}

static bool connect_message(struct pf_rpc_call *call, const uint8_t *msg, size_t len)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    struct pf_sched_agents *a = s->agents;
    struct stream *st = pf_rpc_call_user(call);
    Printfarm__V1__AgentMessage *m;
    bool more = true;

    if (st == NULL)
        return false;
    m = printfarm__v1__agent_message__unpack(NULL, len, msg);
    if (m == NULL) {
        pf_rpc_call_finish(call, PF_E_INVALID, "message is not a valid printfarm.v1.AgentMessage");
        return false;
    }
    pf_metric_inc1(a->m_messages, NULL);
    if (!st->hello_seen) {
        await_remove(st);
        more = first_message(s, st, call, m, msg, len);
        goto out;
    }
    switch (m->msg_case) {
    case PRINTFARM__V1__AGENT_MESSAGE__MSG_HELLO:
        pf_rpc_call_finish(call, PF_E_INVALID, "hello may be sent only once per stream");
        more = false;
        break;
    case PRINTFARM__V1__AGENT_MESSAGE__MSG_STATUS: {
        const Printfarm__V1__PrinterStatus *ps = m->status;
        bool kick = false;
        pthread_mutex_lock(&a->mu);
        struct entry *e = find(a, st->printer_id);
        if (e != NULL && e->stream == st) {
            Printfarm__V1__PrinterState before = e->live.state;
            if (ps->state != PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_UNSPECIFIED)
                e->live.state = ps->state;
            if (ps->attempt_id != NULL && ps->attempt_id[0] != '\0')
                snprintf(e->live.attempt_id, sizeof(e->live.attempt_id), "%s", ps->attempt_id);
            e->live.progress = ps->progress;
            if (ps->n_temperatures > 0) {
                memset(e->live.temps, 0, sizeof(e->live.temps));
                e->live.temp_count = 0;
            }
            for (size_t i = 0; i < ps->n_temperatures; i++) {
                int k = sensor_index(ps->temperatures[i]->sensor);
                if (k < 0)
                    continue;
                e->live.temps[k][0] = ps->temperatures[i]->actual;
                e->live.temps[k][1] = ps->temperatures[i]->target;
                if (k + 1 > e->live.temp_count)
                    e->live.temp_count = k + 1;
            }
            e->live.last_seen_unix_ms = pf_time_wall_ms();
            if (!reported_ready(before) && reported_ready(e->live.state)) {
                e->ready_since = pf_time_mono_ms();
                kick = true;
            }
            if (ps->state != PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_UNSPECIFIED)
                record_state_change(s, st->printer_id, before, ps);
        }
        pthread_mutex_unlock(&a->mu);
        if (kick)
            pf_sched_dispatch_kick(s);
        break;
    }
    case PRINTFARM__V1__AGENT_MESSAGE__MSG_CACHE_UPDATE:
        pthread_mutex_lock(&a->mu);
        struct entry *e = find(a, st->printer_id);
        if (e != NULL && e->stream == st)
            cached_update(e, m->cache_update);
        pthread_mutex_unlock(&a->mu);
        break;
    case PRINTFARM__V1__AGENT_MESSAGE__MSG_ATTEMPT_EVENT: {
        const Printfarm__V1__AttemptEvent *ev = m->attempt_event;
        if (ev->kind == PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_PROGRESS) {
            pthread_mutex_lock(&a->mu);
            struct entry *pe = find(a, st->printer_id);
            if (pe != NULL && pe->stream == st) {
                pe->live.progress = ev->progress;
                pe->live.last_seen_unix_ms = pf_time_wall_ms();
            }
            pthread_mutex_unlock(&a->mu);
            break;
        }
        if (ev->kind < PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_STARTED ||
            ev->kind > PRINTFARM__V1__ATTEMPT_EVENT_KIND__ATTEMPT_EVENT_KIND_CANCELLED) {
            pf_rpc_call_finish(call, PF_E_INVALID, "attempt_event.kind is not a known kind");
            more = false;
            break;
        }
        if (ev->attempt_id == NULL || ev->attempt_id[0] == '\0' ||
            strlen(ev->attempt_id) >= PF_SCHED_ID_MAX) {
            pf_rpc_call_finish(call, PF_E_INVALID,
                               "attempt_event.attempt_id is missing or too long");
            more = false;
            break;
        }
        if (m->seq == 0) {
            pf_rpc_call_finish(call, PF_E_INVALID,
                               "attempt events other than progress must carry a seq > 0");
            more = false;
            break;
        }
        pf_rpc_call_defer(call, s->wq, event_work, msg, len);
        more = false;
        break;
    }
    case PRINTFARM__V1__AGENT_MESSAGE__MSG_BED_CLEARED:
        if (m->seq == 0) {
            pf_rpc_call_finish(call, PF_E_INVALID, "bed_cleared must carry a seq > 0");
            more = false;
            break;
        }
        pf_rpc_call_defer(call, s->wq, event_work, msg, len);
        more = false;
        break;
    default:
        pf_rpc_call_finish(call, PF_E_INVALID, "agent message has no content");
        more = false;
        break;
    }
out:
    printfarm__v1__agent_message__free_unpacked(m, NULL);
    return more;
}

static void connect_half_close(struct pf_rpc_call *call)
{
    pf_rpc_call_finish(call, PF_OK, "");
}

static void connect_close(struct pf_rpc_call *call, bool cancelled)
{
    struct stream *st = pf_rpc_call_user(call);
    struct pf_sched_agents *a;
    bool was_welcomed = false;
    (void)cancelled;
    if (st == NULL)
        return;
    a = st->s->agents;
    await_remove(st);
    pthread_mutex_lock(&a->mu);
    struct entry *e = st->hello_seen ? find(a, st->printer_id) : NULL;
    if (e != NULL && e->stream == st) {
        was_welcomed = st->welcomed;
        e->stream = NULL;
        e->live.connected = false;
        e->offline_since = pf_time_mono_ms();
    }
    if (st->registered) {
        a->n_streams--;
        pf_metric_set(a->m_streams, NULL, (double)a->n_streams);
    }
    pthread_mutex_unlock(&a->mu);
    if (was_welcomed) {
        pf_log_info("agent_disconnected", "printer=%s", st->printer_id);
        struct gone *g = calloc(1, sizeof(*g));
        if (g != NULL) {
            g->s = st->s;
            snprintf(g->printer_id, sizeof(g->printer_id), "%s", st->printer_id);
            if (pf_workq_submit(st->s->wq, gone_work, g) != PF_OK)
                free(g);
        }
    }
    if (st->registered) {
        st->registered = false;
        pf_rpc_call_unref(call);
    }
}

static void connect_free(struct pf_rpc_call *call)
{
    free(pf_rpc_call_user(call));
}

enum pf_status pf_sched_agents_create(struct pf_sched *s, struct pf_error *err)
{
    struct pf_sched_agents *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    pthread_mutex_init(&a->mu, NULL);
    a->awaiting.await_prev = a->awaiting.await_next = &a->awaiting;
    a->m_streams = pf_metrics_gauge(s->metrics, "printfarm_scheduler_agent_streams",
                                    "agent streams connected to this replica", NULL);
    a->m_attempts = pf_metrics_counter(s->metrics, "printfarm_scheduler_attempts_total",
                                       "attempts ended, by result", "result");
    a->m_await_clear =
        pf_metrics_histogram(s->metrics, "printfarm_scheduler_awaiting_clear_seconds",
                             "time printers spent awaiting a bed clear", NULL, await_clear_buckets,
                             sizeof(await_clear_buckets) / sizeof(await_clear_buckets[0]));
    a->m_messages = pf_metrics_counter(s->metrics, "printfarm_scheduler_agent_messages_total",
                                       "messages received on agent streams", NULL);
    s->agents = a;
    return PF_OK;
}

enum pf_status pf_sched_agents_register(struct pf_sched *s, struct pf_error *err)
{
    const struct pf_rpc_method m = {
        .path = "/printfarm.v1.Scheduler/Connect",
        .kind = PF_RPC_BIDI,
        .roles = PF_ROLE_AGENT | PF_ROLE_ADMIN,
        .long_lived = true,
        .ctx = s,
        .on_start = connect_start,
        .on_message = connect_message,
        .on_half_close = connect_half_close,
        .on_close = connect_close,
        .on_free = connect_free,
    };
    enum pf_status rc = pf_rpc_server_add(s->rpc, &m, 1, err);
    if (rc == PF_OK && s->cfg.hello_timeout_ms > 0) {
        int64_t every = s->cfg.hello_timeout_ms / 4;
        pf_rpc_server_every(s->rpc,
                            every < 10     ? 10
                            : every > 1000 ? 1000
                                           : every,
                            hello_deadline_check, s);
    }
    return rc;
}

void pf_sched_agents_destroy(struct pf_sched *s)
{
    struct pf_sched_agents *a = s->agents;
    if (a == NULL)
        return;
    for (size_t b = 0; b < BUCKETS; b++) {
        struct entry *e = a->buckets[b];
        while (e != NULL) {
            struct entry *next = e->next;
            free(e->cached);
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&a->mu);
    free(a);
    s->agents = NULL;
}
