/* Dispatch rounds of pf-scheduler, on their own thread, on the leader only:
 * when kicked (a printer became ready, jobs changed) and every
 * --dispatch-interval. A round snapshots the ready printers (connected and
 * welcomed here, idle as reported, no active attempt, bed clear, not
 * quarantined) with their operator settings from PostgreSQL, loads the
 * runnable jobs, their bundles (from pf-files, cached by digest: bundles are
 * immutable) and their exclusions (failure policy over the failed attempts),
 * interns every string, and runs the pure solver (dispatch.h). It then
 * records every assignment in ONE fenced transaction (attempt rows, job
 * counters, events) and only after the commit sends StartPrint on each
 * printer's stream: a crash between the two is repaired by the hello
 * reconciliation, which resends StartPrint for an attempt still dispatched.
 * Each round also sweeps active attempts whose printer has been away longer
 * than --lost-grace and marks them lost, which re-queues their copy. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "dispatch.h"
#include "log.h"
#include "modules.h"
#include "policy.h"
#include "printfarm/v1/files.pb-c.h"
#include "timeutil.h"

#define BUNDLE_CACHE_MAX   1024
#define JOBS_PER_ROUND     10000
#define GAUGES_EVERY_MS    5000
#define SWEEP_EVERY_MS     250
#define BUNDLE_TIMEOUT_MS  5000
#define WINDOW_DAYS_BEFORE 1
#define WINDOW_DAYS_AFTER  8
#define WINDOWS_MAX        32 /* weekly windows of one printer (as the API allows) */
#define WINDOW_CAP         (WINDOWS_MAX * (WINDOW_DAYS_BEFORE + WINDOW_DAYS_AFTER + 1))
#define FAILURES_PER_PAIR  100 /* records per (job, printer): the most any limit needs */

struct cache_slot {
    struct pf_sched_bundle *b;
    uint64_t used;
};

struct pf_sched_dispatcher {
    pthread_t thread;
    bool started;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool kicked; /* under mu */
    struct pf_dispatch *solver;
    pthread_mutex_t cache_mu;
    struct cache_slot cache[BUNDLE_CACHE_MAX];
    uint64_t cache_tick;
    int64_t last_gauges;
    int64_t last_sweep;
    struct pf_metric *m_latency, *m_round, *m_jobs, *m_printers, *m_dispatched, *m_rounds;
};

/* ---- bundle cache ---- */

void pf_sched_bundle_release(struct pf_sched_bundle *b)
{
    if (b != NULL && atomic_fetch_sub(&b->refs, 1) == 1) {
        printfarm__v1__bundle__free_unpacked(b->bundle, NULL);
        free(b);
    }
}

const Printfarm__V1__BundleFile *pf_sched_bundle_file(const struct pf_sched_bundle *b,
                                                      const char *profile)
{
    for (size_t i = 0; i < b->bundle->n_files; i++) {
        const Printfarm__V1__BundleFile *f = b->bundle->files[i];
        if (f != NULL && f->profile != NULL && strcmp(f->profile, profile) == 0 &&
            f->digest != NULL && f->digest->sha256 != NULL)
            return f;
    }
    return NULL;
}

/* The cached bundle with this digest (a reference), or NULL. */
static struct pf_sched_bundle *bundle_cached(struct pf_sched *s, const char *digest)
{
    struct pf_sched_dispatcher *d = s->dispatcher;
    struct pf_sched_bundle *b = NULL;
    pthread_mutex_lock(&d->cache_mu);
    for (size_t i = 0; i < BUNDLE_CACHE_MAX && b == NULL; i++) {
        if (d->cache[i].b != NULL && strcmp(d->cache[i].b->digest, digest) == 0) {
            d->cache[i].used = ++d->cache_tick;
            b = d->cache[i].b;
            atomic_fetch_add(&b->refs, 1);
        }
    }
    pthread_mutex_unlock(&d->cache_mu);
    return b;
}

enum pf_status pf_sched_bundle_get(struct pf_sched *s, const char *digest,
                                   struct pf_sched_bundle **out, struct pf_error *err)
{
    struct pf_sched_dispatcher *d = s->dispatcher;
    Printfarm__V1__GetBundleRequest req = PRINTFARM__V1__GET_BUNDLE_REQUEST__INIT;
    Printfarm__V1__Digest dg = PRINTFARM__V1__DIGEST__INIT;
    Printfarm__V1__GetBundleResponse *reply = NULL;
    struct pf_sched_bundle *b;
    enum pf_status rc;

    *out = bundle_cached(s, digest);
    if (*out != NULL)
        return PF_OK;

    dg.sha256 = (char *)digest;
    req.digest = &dg;
    rc = pf_rpc_unary(s->files, "/printfarm.v1.Files/GetBundle", &req.base,
                      &printfarm__v1__get_bundle_response__descriptor, (ProtobufCMessage **)&reply,
                      BUNDLE_TIMEOUT_MS, err);
    if (rc != PF_OK)
        return rc;
    if (reply->bundle == NULL) {
        protobuf_c_message_free_unpacked(&reply->base, NULL);
        return pf_error_set(err, PF_E_INTERNAL, "pf-files returned no bundle for '%s'", digest);
    }
    b = calloc(1, sizeof(*b));
    if (b == NULL) {
        protobuf_c_message_free_unpacked(&reply->base, NULL);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    snprintf(b->digest, sizeof(b->digest), "%s", digest);
    b->bundle = reply->bundle; /* sub-messages are allocated one by one: detach it */
    reply->bundle = NULL;
    protobuf_c_message_free_unpacked(&reply->base, NULL);
    atomic_init(&b->refs, 2); /* the cache's and the caller's */

    pthread_mutex_lock(&d->cache_mu);
    size_t victim = BUNDLE_CACHE_MAX;
    for (size_t i = 0; i < BUNDLE_CACHE_MAX; i++) {
        if (d->cache[i].b != NULL && strcmp(d->cache[i].b->digest, digest) == 0) {
            /* Another thread fetched it meanwhile: use theirs. */
            atomic_fetch_add(&d->cache[i].b->refs, 1);
            *out = d->cache[i].b;
            pthread_mutex_unlock(&d->cache_mu);
            atomic_store(&b->refs, 1);
            pf_sched_bundle_release(b);
            return PF_OK;
        }
        /* An empty slot, else the least recently used one. */
        if (victim == BUNDLE_CACHE_MAX ||
            (d->cache[victim].b != NULL &&
             (d->cache[i].b == NULL || d->cache[i].used < d->cache[victim].used)))
            victim = i;
    }
    struct pf_sched_bundle *old = d->cache[victim].b;
    d->cache[victim].b = b;
    d->cache[victim].used = ++d->cache_tick;
    pthread_mutex_unlock(&d->cache_mu);
    pf_sched_bundle_release(old);
    *out = b;
    return PF_OK;
}

/* ---- StartPrint ---- */

bool pf_sched_send_start_print(struct pf_sched *s, const char *printer_id, const char *attempt_id,
                               const char *job_id, const char *job_name, const char *bundle,
                               const char *profile, const char *file, uint64_t size)
{
    Printfarm__V1__SchedulerMessage m = PRINTFARM__V1__SCHEDULER_MESSAGE__INIT;
    Printfarm__V1__StartPrint sp = PRINTFARM__V1__START_PRINT__INIT;
    Printfarm__V1__Digest fd = PRINTFARM__V1__DIGEST__INIT, bd = PRINTFARM__V1__DIGEST__INIT;
    struct pf_sched_bundle *b = NULL;
    struct pf_error err;
    bool sent;

    sp.attempt_id = (char *)attempt_id;
    sp.job_id = (char *)job_id;
    sp.job_name = (char *)job_name;
    fd.sha256 = (char *)file;
    bd.sha256 = (char *)bundle;
    sp.file = &fd;
    sp.bundle = &bd;
    sp.size = size;
    sp.profile = (char *)profile;
    if (pf_sched_bundle_get(s, bundle, &b, &err) == PF_OK) {
        const Printfarm__V1__BundleFile *f = pf_sched_bundle_file(b, profile);
        if (f != NULL)
            sp.metadata = f->metadata;
    } else {
        pf_log_warn("bundle_unavailable", "bundle=%s error=\"%s\"", bundle, err.msg);
    }
    m.msg_case = PRINTFARM__V1__SCHEDULER_MESSAGE__MSG_START_PRINT;
    m.start_print = &sp;
    sent = pf_sched_agents_send(s, printer_id, &m, attempt_id);
    pf_sched_bundle_release(b);
    return sent;
}

/* ---- interning ---- */

struct intern {
    char **keys;
    uint32_t *ids;
    size_t cap, n;
    uint32_t limit; /* ids handed out are 1..limit-1 (0 = none) */
};

static void intern_release(struct intern *t)
{
    for (size_t i = 0; i < t->cap; i++)
        free(t->keys[i]);
    free(t->keys);
    free(t->ids);
    memset(t, 0, sizeof(*t));
}

static uint64_t hash_str(const char *k)
{
    uint64_t h = 1469598103934665603ull;
    for (; *k != '\0'; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ull;
    return h;
}

/* The id of key (inserting it when add); 0 when absent, over the limit or
 * out of memory. */
static uint32_t intern_id(struct intern *t, const char *key, bool add)
{
    if (key == NULL)
        return 0;
    if (t->n * 2 >= t->cap) {
        if (!add && t->cap > 0)
            goto lookup;
        size_t cap = t->cap == 0 ? 64 : t->cap * 2;
        char **keys = calloc(cap, sizeof(*keys));
        uint32_t *ids = calloc(cap, sizeof(*ids));
        if (keys == NULL || ids == NULL) {
            free(keys);
            free(ids);
            return 0;
        }
        for (size_t i = 0; i < t->cap; i++) {
            if (t->keys[i] == NULL)
                continue;
            size_t j = hash_str(t->keys[i]) & (cap - 1);
            while (keys[j] != NULL)
                j = (j + 1) & (cap - 1);
            keys[j] = t->keys[i];
            ids[j] = t->ids[i];
        }
        free(t->keys);
        free(t->ids);
        t->keys = keys;
        t->ids = ids;
        t->cap = cap;
    }
lookup:;
    size_t j = hash_str(key) & (t->cap - 1);
    while (t->keys[j] != NULL) {
        if (strcmp(t->keys[j], key) == 0)
            return t->ids[j];
        j = (j + 1) & (t->cap - 1);
    }
    if (!add || t->n + 1 >= t->limit)
        return 0;
    t->keys[j] = strdup(key);
    if (t->keys[j] == NULL)
        return 0;
    t->ids[j] = (uint32_t)++t->n;
    return t->ids[j];
}

/* Case-insensitive variant for materials and colours; "" is 0 (any). */
static uint32_t intern_ci(struct intern *t, const char *key, bool add)
{
    char low[128];
    size_t i;
    if (key == NULL || key[0] == '\0')
        return 0;
    for (i = 0; key[i] != '\0' && i + 1 < sizeof(low); i++)
        low[i] = (char)tolower((unsigned char)key[i]);
    low[i] = '\0';
    return intern_id(t, low, add);
}

/* ---- one round ---- */

struct ready {
    char id[PF_SCHED_PRINTER_ID_MAX + 1];
    char profile[80];
    int64_t ready_since;
};

struct job_row {
    char id[PF_SCHED_ID_MAX];
    char name[256];
    char bundle[65];
    struct pf_sched_bundle *b;
    int64_t created_ms; /* wall clock */
    bool usable;
};

struct assignment {
    const struct job_row *job;
    const struct ready *printer;
    const char *profile;
    char file[65];
    uint64_t size;
    /* filled by the transaction */
    char attempt_id[PF_SCHED_ID_MAX];
    bool recorded;
};

struct commit_ctx {
    struct assignment *as;
    size_t n;
    uint64_t epoch;
    size_t recorded;
};

static char *text_array(const char *const *items, size_t n)
{
    struct pf_buf b;
    pf_buf_init(&b, 0);
    if (pf_buf_append(&b, "{", 1) != PF_OK)
        goto out_fail;
    for (size_t i = 0; i < n; i++) {
        if (pf_buf_append(&b, i > 0 ? ",\"" : "\"", i > 0 ? 2 : 1) != PF_OK)
            goto out_fail;
        for (const char *c = items[i]; *c != '\0'; c++) {
            if ((*c == '"' || *c == '\\') && pf_buf_append(&b, "\\", 1) != PF_OK)
                goto out_fail;
            if (pf_buf_append(&b, c, 1) != PF_OK)
                goto out_fail;
        }
        if (pf_buf_append(&b, "\"", 1) != PF_OK)
            goto out_fail;
    }
    if (pf_buf_append(&b, "}", 1) != PF_OK)
        goto out_fail;
    return pf_buf_detach(&b, NULL);
out_fail:
    pf_buf_release(&b);
    return NULL;
}

static enum pf_status commit_tx(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                struct pf_error *err)
{
    struct commit_ctx *c = arg;
    enum pf_status rc;
    char epoch[24], size[24], text[400];
    PGresult *res;

    (void)s;
    c->recorded = 0;
    snprintf(epoch, sizeof(epoch), "%llu", (unsigned long long)c->epoch);
    for (size_t i = 0; i < c->n; i++) {
        struct assignment *a = &c->as[i];
        const char *pp[1] = {a->printer->id};
        a->recorded = false;
        /* The printer row lock keeps it ready until the commit. */
        rc = pf_pg_exec(conn,
                        "SELECT 1 FROM printers p WHERE p.id = $1 AND NOT p.quarantined "
                        "AND NOT p.awaiting_clear AND NOT EXISTS (SELECT 1 FROM attempts a "
                        "WHERE a.printer_id = p.id AND a.state IN ('dispatched','printing')) "
                        "FOR UPDATE OF p",
                        1, pp, &res, err);
        if (rc != PF_OK)
            return rc;
        bool ok = PQntuples(res) == 1;
        PQclear(res);
        if (!ok)
            continue;
        const char *jp[1] = {a->job->id};
        rc = pf_pg_exec(conn,
                        "UPDATE jobs SET in_progress = in_progress + 1, "
                        "state = CASE WHEN count - succeeded - in_progress - 1 <= 0 "
                        "THEN 'printing' ELSE 'queued' END, updated_at = clock_timestamp() "
                        "WHERE id = $1 AND state IN ('queued','printing') "
                        "AND count > succeeded + in_progress RETURNING state",
                        1, jp, &res, err);
        if (rc != PF_OK)
            return rc;
        ok = PQntuples(res) == 1;
        Printfarm__V1__JobState js = ok && strcmp(pf_pg_text(res, 0, 0), "printing") == 0
                                         ? PRINTFARM__V1__JOB_STATE__JOB_STATE_PRINTING
                                         : PRINTFARM__V1__JOB_STATE__JOB_STATE_QUEUED;
        PQclear(res);
        if (!ok)
            continue;
        pf_sched_new_id("a-", a->attempt_id);
        snprintf(size, sizeof(size), "%llu", (unsigned long long)a->size);
        const char *ip[7] = {a->attempt_id, a->job->id, a->printer->id, a->profile,
                             a->file,       size,       epoch};
        rc = pf_pg_exec(conn,
                        "INSERT INTO attempts (id, job_id, printer_id, state, profile, file, size, "
                        "epoch) VALUES ($1, $2, $3, 'dispatched', $4, $5, $6::bigint, $7::bigint)",
                        7, ip, NULL, err);
        if (rc != PF_OK)
            return rc;
        snprintf(text, sizeof(text), "attempt %s of job %s dispatched to printer %s (%s)",
                 a->attempt_id, a->job->id, a->printer->id, a->profile);
        struct pf_sched_event ev = {
            .kind = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_ATTEMPT_DISPATCHED,
            .job_id = a->job->id,
            .printer_id = a->printer->id,
            .attempt_id = a->attempt_id,
            .job_state = js,
            .printer_state = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING,
            .attempt_state = PRINTFARM__V1__ATTEMPT_STATE__ATTEMPT_STATE_DISPATCHED,
            .text = text,
        };
        rc = pf_sched_event_add(conn, &ev, NULL, err);
        if (rc != PF_OK)
            return rc;
        a->recorded = true;
        c->recorded++;
    }
    return PF_OK;
}

/* Weekly windows -> epoch-second intervals around now. */
static size_t expand_windows(const Printfarm__V1__AvailabilityWindows *w, int64_t now,
                             struct pf_dispatch_window *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; w != NULL && i < w->n_items; i++) {
        const Printfarm__V1__AvailabilityWindow *aw = w->items[i];
        int64_t off = (int64_t)aw->utc_offset_minutes * 60;
        int64_t local_day = (now + off) / 86400;
        for (int64_t d = local_day - WINDOW_DAYS_BEFORE; d <= local_day + WINDOW_DAYS_AFTER; d++) {
            int weekday = (int)(((d % 7) + 7 + 3) % 7) + 1; /* 1970-01-01 was a Thursday */
            bool today = aw->n_days == 0;
            for (size_t k = 0; k < aw->n_days && !today; k++)
                today = (int)aw->days[k] == weekday;
            if (!today || n == cap)
                continue;
            int64_t midnight = d * 86400 - off;
            int64_t start = midnight + (int64_t)aw->start_minute * 60;
            int64_t end = midnight + (int64_t)aw->end_minute * 60;
            if (end <= start)
                end += 86400;
            out[n].start = start;
            out[n].end = end;
            n++;
        }
    }
    return n;
}

struct round {
    struct pf_sched *s;
    struct pf_pg_conn *conn;
    struct pf_sched_agents_snapshot snap;
    struct ready *ready;
    size_t n_ready;
    struct pf_dispatch_printer *printers;
    struct job_row *jobs;
    struct pf_dispatch_job *djobs;
    size_t n_jobs;
    struct pf_dispatch_file *files;     /* n_jobs * n_profiles */
    uint32_t *excluded;                 /* pool for every job's list */
    uint32_t *cached;                   /* pool for every printer's list */
    struct pf_dispatch_window *windows; /* pool */
    struct intern profiles, materials, labels, queues, digests, printer_ids, job_ids;
    struct assignment *as;
};

static void round_release(struct round *r)
{
    pf_sched_agents_snapshot_release(&r->snap);
    for (size_t i = 0; r->jobs != NULL && i < r->n_jobs; i++)
        pf_sched_bundle_release(r->jobs[i].b);
    free(r->ready);
    free(r->printers);
    free(r->jobs);
    free(r->djobs);
    free(r->files);
    free(r->excluded);
    free(r->cached);
    free(r->windows);
    free(r->as);
    intern_release(&r->profiles);
    intern_release(&r->materials);
    intern_release(&r->labels);
    intern_release(&r->queues);
    intern_release(&r->digests);
    intern_release(&r->printer_ids);
    intern_release(&r->job_ids);
}

static int cmp_snap(const void *a, const void *b)
{
    return strcmp(((const struct pf_sched_agent_snap *)a)->id,
                  ((const struct pf_sched_agent_snap *)b)->id);
}

/* The snapshot entry of a printer (the snapshot is sorted by id). */
static const struct pf_sched_agent_snap *snap_find(const struct round *r, const char *id)
{
    struct pf_sched_agent_snap key;
    snprintf(key.id, sizeof(key.id), "%s", id);
    return bsearch(&key, r->snap.printers, r->snap.n, sizeof(key), cmp_snap);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Active attempts whose printer has been away longer than the grace. */
static void sweep_lost(struct round *r)
{
    struct pf_sched *s = r->s;
    PGresult *res;
    struct pf_error err;
    int64_t now = pf_time_mono_ms();
    int64_t since_leader = pf_sched_leader_since(s);

    if (pf_pg_exec(r->conn,
                   "SELECT id, printer_id FROM attempts WHERE state IN ('dispatched','printing')",
                   0, NULL, &res, &err) != PF_OK) {
        pf_log_warn("lost_sweep_failed", "error=\"%s\"", err.msg);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t off = pf_sched_agents_offline_since(s, pf_pg_text(res, i, 1));
        if (off == -1)
            continue;
        int64_t since = off == INT64_MIN || off < since_leader ? since_leader : off;
        if (now - since < s->cfg.lost_grace_ms)
            continue;
        bool changed = false;
        char reason[160];
        snprintf(reason, sizeof(reason), "printer %s was away longer than %lld ms",
                 pf_pg_text(res, i, 1), (long long)s->cfg.lost_grace_ms);
        if (pf_sched_attempt_lose(s, r->conn, pf_pg_text(res, i, 0), reason, &changed, &err) !=
            PF_OK)
            pf_log_warn("attempt_lose_failed", "attempt=%s error=\"%s\"", pf_pg_text(res, i, 0),
                        err.msg);
        else if (changed)
            pf_sched_dispatch_kick(s);
    }
    PQclear(res);
}

static void update_gauges(struct round *r)
{
    struct pf_sched *s = r->s;
    struct pf_sched_dispatcher *d = s->dispatcher;
    static const char *const jstates[] = {"queued", "held",   "printing",
                                          "done",   "failed", "cancelled"};
    static const char *const pstates[] = {"unspecified", "offline",        "idle",  "printing",
                                          "paused",      "awaiting_clear", "error", "quarantined"};
    PGresult *res;
    struct pf_error err;
    size_t counts[8], known;
    int64_t now = pf_time_mono_ms();

    if (now - d->last_gauges < GAUGES_EVERY_MS)
        return;
    d->last_gauges = now;
    if (pf_pg_exec(r->conn, "SELECT state, count(*) FROM jobs GROUP BY state", 0, NULL, &res,
                   &err) == PF_OK) {
        for (size_t k = 0; k < 6; k++) {
            double v = 0;
            for (int i = 0; i < PQntuples(res); i++)
                if (strcmp(pf_pg_text(res, i, 0), jstates[k]) == 0)
                    v = atof(pf_pg_text(res, i, 1));
            const char *l[1] = {jstates[k]};
            pf_metric_set(d->m_jobs, l, v);
        }
        PQclear(res);
    }
    pf_sched_agents_count(s, counts, &known);
    for (size_t k = 1; k < 8; k++) {
        const char *l[1] = {pstates[k]};
        pf_metric_set(d->m_printers, l, (double)counts[k]);
    }
}

static enum pf_status load_printers(struct round *r, struct pf_error *err)
{
    const char **ids = calloc(r->snap.n > 0 ? r->snap.n : 1, sizeof(*ids));
    char *arr;
    PGresult *res;
    enum pf_status rc;
    int64_t now = pf_time_wall_ms() / 1000;

    if (ids == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    for (size_t i = 0; i < r->snap.n; i++)
        ids[i] = r->snap.printers[i].id;
    arr = text_array(ids, r->snap.n);
    free(ids);
    if (arr == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    const char *p[1] = {arr};
    rc = pf_pg_exec(r->conn,
                    "SELECT p.id, p.profile, p.labels, p.materials, p.queues, p.windows, "
                    "p.capabilities, p.consecutive_failures FROM printers p "
                    "WHERE p.id = ANY($1::text[]) AND NOT p.quarantined AND NOT p.awaiting_clear "
                    "AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.printer_id = p.id "
                    "AND a.state IN ('dispatched','printing')) ORDER BY p.id",
                    1, p, &res, err);
    free(arr);
    if (rc != PF_OK)
        return rc;
    int n = PQntuples(res);
    r->ready = calloc(n > 0 ? (size_t)n : 1, sizeof(*r->ready));
    r->printers = calloc(n > 0 ? (size_t)n : 1, sizeof(*r->printers));
    r->cached = calloc(r->snap.n_cached > 0 ? r->snap.n_cached : 1, sizeof(*r->cached));
    r->windows = calloc((size_t)(n > 0 ? n : 1) * WINDOW_CAP, sizeof(*r->windows));
    if (r->ready == NULL || r->printers == NULL || r->cached == NULL || r->windows == NULL) {
        PQclear(res);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    size_t n_windows = 0;
    for (int i = 0; i < n; i++) {
        const char *id = pf_pg_text(res, i, 0);
        const struct pf_sched_agent_snap *sp = snap_find(r, id);
        if (sp == NULL ||
            !(sp->state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE ||
              sp->state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_AWAITING_CLEAR ||
              sp->state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_UNSPECIFIED))
            continue;
        uint32_t prof = intern_id(&r->profiles, pf_pg_text(res, i, 1), true);
        if (prof == 0) {
            pf_log_warn("dispatch_printer_skipped", "printer=%s why=too_many_profiles", id);
            continue;
        }
        size_t k = r->n_ready++;
        struct ready *rd = &r->ready[k];
        struct pf_dispatch_printer *dp = &r->printers[k];
        snprintf(rd->id, sizeof(rd->id), "%s", id);
        snprintf(rd->profile, sizeof(rd->profile), "%s", pf_pg_text(res, i, 1));
        rd->ready_since = sp->ready_since;
        dp->id = (uint32_t)k;
        dp->profile = (uint16_t)prof;
        dp->connected = true;
        dp->idle = true;
        dp->bed_clear = true;
        dp->quarantined = false;
        int64_t cf = 0;
        if (pf_pg_int64(res, i, 7, &cf, err) == PF_OK)
            dp->recent_failures = (uint32_t)cf;

        Printfarm__V1__Labels *labels = (Printfarm__V1__Labels *)pf_sched_bytea_unpack(
            &printfarm__v1__labels__descriptor, pf_pg_text(res, i, 2));
        for (size_t j = 0; labels != NULL && j < labels->n_items; j++) {
            char kv[400];
            snprintf(kv, sizeof(kv), "%s=%s", labels->items[j]->key, labels->items[j]->value);
            pf_dispatch_bits_set(&dp->labels, intern_id(&r->labels, kv, true));
            pf_dispatch_bits_set(&dp->labels, intern_id(&r->labels, labels->items[j]->key, true));
        }
        if (labels != NULL)
            protobuf_c_message_free_unpacked(&labels->base, NULL);

        Printfarm__V1__ExtruderMaterials *mats =
            (Printfarm__V1__ExtruderMaterials *)pf_sched_bytea_unpack(
                &printfarm__v1__extruder_materials__descriptor, pf_pg_text(res, i, 3));
        Printfarm__V1__AgentCapabilities *caps =
            (Printfarm__V1__AgentCapabilities *)pf_sched_bytea_unpack(
                &printfarm__v1__agent_capabilities__descriptor, pf_pg_text(res, i, 6));
        uint32_t n_ext = caps != NULL ? caps->extruders : 0;
        for (size_t j = 0; mats != NULL && j < mats->n_items; j++)
            if (mats->items[j]->extruder + 1 > n_ext)
                n_ext = mats->items[j]->extruder + 1;
        if (n_ext == 0)
            n_ext = 1;
        if (n_ext > PF_DISPATCH_EXTRUDERS_MAX)
            n_ext = PF_DISPATCH_EXTRUDERS_MAX;
        dp->n_extruders = (uint8_t)n_ext;
        for (size_t j = 0; mats != NULL && j < mats->n_items; j++) {
            uint32_t e = mats->items[j]->extruder;
            if (e >= n_ext)
                continue;
            dp->extruders[e].material =
                (uint16_t)intern_ci(&r->materials, mats->items[j]->material, true);
            dp->extruders[e].colour =
                (uint16_t)intern_ci(&r->materials, mats->items[j]->colour, true);
        }
        if (mats != NULL)
            protobuf_c_message_free_unpacked(&mats->base, NULL);

        Printfarm__V1__QueueWeights *qs = (Printfarm__V1__QueueWeights *)pf_sched_bytea_unpack(
            &printfarm__v1__queue_weights__descriptor, pf_pg_text(res, i, 4));
        if (qs == NULL || qs->n_items == 0) {
            dp->n_queues = 1;
            dp->queues[0].queue = intern_id(&r->queues, "default", true);
            dp->queues[0].weight = 1;
        } else {
            for (size_t j = 0; j < qs->n_items && dp->n_queues < PF_DISPATCH_QUEUES_MAX; j++) {
                uint32_t q = intern_id(&r->queues, qs->items[j]->queue, true);
                uint32_t w = qs->items[j]->weight;
                if (q == 0 || w == 0)
                    continue;
                if (w > PF_DISPATCH_QUEUE_WEIGHT_MAX)
                    w = PF_DISPATCH_QUEUE_WEIGHT_MAX;
                dp->queues[dp->n_queues].queue = q;
                dp->queues[dp->n_queues].weight = w;
                dp->n_queues++;
            }
        }
        if (qs != NULL)
            protobuf_c_message_free_unpacked(&qs->base, NULL);

        Printfarm__V1__AvailabilityWindows *ws =
            (Printfarm__V1__AvailabilityWindows *)pf_sched_bytea_unpack(
                &printfarm__v1__availability_windows__descriptor, pf_pg_text(res, i, 5));
        bool auto_clear = caps != NULL && caps->auto_clear;
        if (!auto_clear && ws != NULL && ws->n_items > 0) {
            dp->needs_hands = true;
            dp->windows = &r->windows[n_windows];
            dp->n_windows = expand_windows(ws, now, &r->windows[n_windows], WINDOW_CAP);
            n_windows += dp->n_windows;
        }
        if (ws != NULL)
            protobuf_c_message_free_unpacked(&ws->base, NULL);
        if (caps != NULL)
            protobuf_c_message_free_unpacked(&caps->base, NULL);

        /* Its cache is mapped once the jobs' digests are known (map_caches). */
    }
    PQclear(res);
    return PF_OK;
}

static enum pf_status load_jobs(struct round *r, struct pf_error *err)
{
    PGresult *res;
    char limit[16];
    const char *p[1] = {limit};
    enum pf_status rc;

    snprintf(limit, sizeof(limit), "%d", JOBS_PER_ROUND);
    rc = pf_pg_exec(r->conn,
                    "SELECT id, queue, name, bundle, count, priority, constraints, "
                    "extract(epoch FROM created_at)::bigint, succeeded, in_progress, "
                    "max_attempts_per_printer, max_printers, "
                    "(extract(epoch FROM created_at) * 1000)::bigint FROM jobs "
                    "WHERE state IN ('queued','printing') AND count > succeeded + in_progress "
                    "ORDER BY priority DESC, created_at LIMIT $1::int",
                    1, p, &res, err);
    if (rc != PF_OK)
        return rc;
    int n = PQntuples(res);
    size_t np = r->profiles.n; /* profile ids are 1..np; index 0 unused */
    r->jobs = calloc(n > 0 ? (size_t)n : 1, sizeof(*r->jobs));
    r->djobs = calloc(n > 0 ? (size_t)n : 1, sizeof(*r->djobs));
    r->files = calloc((size_t)(n > 0 ? n : 1) * (np + 1), sizeof(*r->files));
    if (r->jobs == NULL || r->djobs == NULL || r->files == NULL) {
        PQclear(res);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    /* Profile names by id, to look files up in bundles. */
    const char **pname = calloc(np + 1, sizeof(*pname));
    if (pname == NULL) {
        PQclear(res);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    for (size_t i = 0; i < r->profiles.cap; i++)
        if (r->profiles.keys[i] != NULL)
            pname[r->profiles.ids[i]] = r->profiles.keys[i];

    bool files_down = false;
    for (int i = 0; i < n; i++) {
        struct job_row *j = &r->jobs[r->n_jobs];
        struct pf_dispatch_job *dj = &r->djobs[r->n_jobs];
        struct pf_dispatch_file *files = &r->files[r->n_jobs * (np + 1)];
        int64_t count = 0, prio = 0, created = 0, succ = 0, inprog = 0;
        struct pf_error jerr;
        memset(j, 0, sizeof(*j));
        memset(dj, 0, sizeof(*dj));
        snprintf(j->id, sizeof(j->id), "%s", pf_pg_text(res, i, 0));
        snprintf(j->name, sizeof(j->name), "%s", pf_pg_text(res, i, 2));
        snprintf(j->bundle, sizeof(j->bundle), "%s", pf_pg_text(res, i, 3));
        if (pf_pg_int64(res, i, 4, &count, &jerr) != PF_OK ||
            pf_pg_int64(res, i, 5, &prio, &jerr) != PF_OK ||
            pf_pg_int64(res, i, 7, &created, &jerr) != PF_OK ||
            pf_pg_int64(res, i, 8, &succ, &jerr) != PF_OK ||
            pf_pg_int64(res, i, 9, &inprog, &jerr) != PF_OK)
            continue;
        dj->queue = intern_id(&r->queues, pf_pg_text(res, i, 1), false);
        if (dj->queue == 0)
            continue; /* no ready printer serves its queue */
        if (files_down) {
            j->b = bundle_cached(r->s, j->bundle);
            if (j->b == NULL)
                continue;
        } else if (pf_sched_bundle_get(r->s, j->bundle, &j->b, &jerr) != PF_OK) {
            pf_log_warn("dispatch_bundle_unavailable", "job=%s bundle=%s error=\"%s\"", j->id,
                        j->bundle, jerr.msg);
            /* One failure to reach pf-files is enough for this round: the
             * other jobs use the bundles already cached. */
            files_down = jerr.code == PF_E_UNAVAILABLE || jerr.code == PF_E_DEADLINE;
            continue;
        }
        if (pf_pg_int64(res, i, 12, &j->created_ms, &jerr) != PF_OK)
            j->created_ms = 0;
        dj->priority = (int32_t)prio;
        dj->created_at = created;
        dj->state = PF_DISPATCH_JOB_QUEUED;
        dj->count = (uint32_t)count;
        dj->succeeded = (uint32_t)succ;
        dj->in_flight = (uint32_t)inprog;
        dj->files = files;

        bool usable = true;
        bool any_file = false;
        for (size_t pid = 1; pid <= np; pid++) {
            const Printfarm__V1__BundleFile *f = pf_sched_bundle_file(j->b, pname[pid]);
            if (f == NULL)
                continue;
            files[pid].digest = intern_id(&r->digests, f->digest->sha256, true);
            files[pid].est_seconds = f->metadata != NULL ? f->metadata->estimated_seconds : 0;
            any_file = any_file || files[pid].digest != 0;
        }
        if (!any_file)
            usable = false;
        Printfarm__V1__JobConstraints *c = (Printfarm__V1__JobConstraints *)pf_sched_bytea_unpack(
            &printfarm__v1__job_constraints__descriptor, pf_pg_text(res, i, 6));
        if (c != NULL) {
            for (size_t k = 0; k < c->n_profiles; k++) {
                uint32_t pid = intern_id(&r->profiles, c->profiles[k], false);
                if (pid != 0)
                    pf_dispatch_bits_set(&dj->profiles, pid);
            }
            if (c->n_profiles > 0) {
                bool any = false;
                for (size_t w = 0; w < PF_DISPATCH_BITS_MAX / 64; w++)
                    any = any || dj->profiles.w[w] != 0;
                if (!any)
                    usable = false; /* none of its profiles is among the ready printers */
            }
            for (size_t k = 0; k < c->n_printer_labels && usable; k++) {
                const Printfarm__V1__Label *l = c->printer_labels[k];
                char kv[400];
                if (l->value != NULL && l->value[0] != '\0')
                    snprintf(kv, sizeof(kv), "%s=%s", l->key, l->value);
                else
                    snprintf(kv, sizeof(kv), "%s", l->key);
                uint32_t id = intern_id(&r->labels, kv, false);
                if (id == 0)
                    usable = false; /* no ready printer carries it */
                else
                    pf_dispatch_bits_set(&dj->labels, id);
            }
            for (size_t k = 0; k < c->n_materials && usable; k++) {
                const Printfarm__V1__MaterialRequirement *m = c->materials[k];
                if (dj->n_requirements == PF_DISPATCH_REQUIREMENTS_MAX) {
                    usable = false;
                    break;
                }
                struct pf_dispatch_requirement *rq = &dj->requirements[dj->n_requirements++];
                rq->extruder =
                    m->where_case == PRINTFARM__V1__MATERIAL_REQUIREMENT__WHERE_EXTRUDER
                        ? (uint8_t)(m->extruder < PF_DISPATCH_EXTRUDERS_MAX ? m->extruder : 0xfe)
                        : PF_DISPATCH_ANY_EXTRUDER;
                bool want_mat = m->material != NULL && m->material[0] != '\0';
                bool want_col = m->colour != NULL && m->colour[0] != '\0';
                rq->want.material = (uint16_t)intern_ci(&r->materials, m->material, false);
                rq->want.colour = (uint16_t)intern_ci(&r->materials, m->colour, false);
                if ((want_mat && rq->want.material == 0) || (want_col && rq->want.colour == 0) ||
                    rq->extruder == 0xfe)
                    usable = false; /* nobody has it loaded */
                if (k == 0)
                    dj->material = rq->want;
            }
            protobuf_c_message_free_unpacked(&c->base, NULL);
        }
        if (!usable) {
            pf_sched_bundle_release(j->b);
            j->b = NULL;
            continue;
        }
        j->usable = true;
        r->n_jobs++;
    }
    free(pname);
    PQclear(res);
    return PF_OK;
}

static enum pf_status load_exclusions(struct round *r, struct pf_error *err)
{
    if (r->n_jobs == 0)
        return PF_OK;
    const char **ids = calloc(r->n_jobs, sizeof(*ids));
    if (ids == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    for (size_t i = 0; i < r->n_jobs; i++) {
        ids[i] = r->jobs[i].id;
        (void)intern_id(&r->job_ids, r->jobs[i].id, true); /* id = index + 1 */
    }
    char *arr = text_array(ids, r->n_jobs);
    free(ids);
    if (arr == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    const char *p[1] = {arr};
    PGresult *res;
    enum pf_status rc = pf_pg_exec(r->conn,
                                   "SELECT a.job_id, a.printer_id, count(*), "
                                   "j.max_attempts_per_printer, j.max_printers "
                                   "FROM attempts a JOIN jobs j ON j.id = a.job_id "
                                   "WHERE a.state = 'failed' AND a.job_id = ANY($1::text[]) "
                                   "GROUP BY 1, 2, 4, 5 ORDER BY 1",
                                   1, p, &res, err);
    free(arr);
    if (rc != PF_OK)
        return rc;
    int n = PQntuples(res);
    size_t n_records = 0;
    for (int i = 0; i < n; i++) {
        int64_t cnt = 0;
        if (pf_pg_int64(res, i, 2, &cnt, err) == PF_OK)
            n_records += (size_t)(cnt < FAILURES_PER_PAIR ? cnt : FAILURES_PER_PAIR);
    }
    r->excluded = calloc(n > 0 ? (size_t)n : 1, sizeof(*r->excluded));
    struct pf_policy_attempt *h = calloc(n_records > 0 ? n_records : 1, sizeof(*h));
    if (r->excluded == NULL || h == NULL) {
        free(h);
        PQclear(res);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    for (size_t i = 0; i < r->n_ready; i++)
        (void)intern_id(&r->printer_ids, r->ready[i].id, true); /* id = index + 1 */
    struct pf_policy_limits farm;
    pf_policy_limits_init(&farm);
    farm.max_attempts_per_printer = (uint32_t)r->s->cfg.default_max_attempts_per_printer;
    farm.max_printers = (uint32_t)r->s->cfg.default_max_printers;
    farm.quarantine_after = (uint32_t)r->s->cfg.quarantine_after;
    size_t used = 0, hused = 0;
    int i = 0;
    while (i < n) {
        const char *job = pf_pg_text(res, i, 0);
        struct pf_policy_attempt *jh = &h[hused];
        size_t nh = 0;
        int64_t max_att = 0, max_pr = 0;
        if (pf_pg_int64(res, i, 3, &max_att, err) != PF_OK ||
            pf_pg_int64(res, i, 4, &max_pr, err) != PF_OK)
            max_att = max_pr = 0; /* 0: the farm defaults */
        for (; i < n && strcmp(pf_pg_text(res, i, 0), job) == 0; i++) {
            uint32_t pid = intern_id(&r->printer_ids, pf_pg_text(res, i, 1), false);
            int64_t cnt = 0;
            if (pid == 0 || pf_pg_int64(res, i, 2, &cnt, err) != PF_OK)
                continue;
            /* One record per failure, up to the most any limit needs. */
            for (int64_t k = 0; k < cnt && k < FAILURES_PER_PAIR; k++) {
                jh[nh] = (struct pf_policy_attempt){
                    .job = 0, .printer = pid - 1, .result = PF_POLICY_FAILED, .time = (int64_t)nh};
                nh++;
            }
        }
        hused += nh;
        uint32_t jno = intern_id(&r->job_ids, job, false);
        size_t ji = jno > 0 ? jno - 1 : r->n_jobs;
        if (ji >= r->n_jobs || nh == 0)
            continue;
        struct pf_policy_limits lim =
            pf_policy_limits_for_job(&farm, (uint32_t)max_att, (uint32_t)max_pr);
        size_t got = 0;
        struct pf_error perr;
        if (pf_policy_excluded_printers(jh, nh, &lim, 0, &r->excluded[used], (size_t)n - used, &got,
                                        &perr) != PF_OK)
            r->djobs[ji].state = PF_DISPATCH_JOB_HELD; /* truncated: sit this round out */
        r->djobs[ji].excluded = &r->excluded[used];
        r->djobs[ji].n_excluded = got;
        used += got;
    }
    free(h);
    PQclear(res);
    return PF_OK;
}

/* Each ready printer's cache, as ids of the digests some job uses. */
static void map_caches(struct round *r)
{
    uint32_t *pool = r->cached;
    size_t used = 0;
    for (size_t k = 0; k < r->n_ready; k++) {
        const struct pf_sched_agent_snap *sp = snap_find(r, r->ready[k].id);
        struct pf_dispatch_printer *dp = &r->printers[k];
        dp->cached = &pool[used];
        dp->n_cached = 0;
        if (sp == NULL)
            continue;
        for (size_t c = 0; c < sp->n_cached; c++) {
            uint32_t id = intern_id(&r->digests, r->snap.cached[sp->cached_first + c], false);
            if (id != 0)
                pool[used + dp->n_cached++] = id;
        }
        qsort(&pool[used], dp->n_cached, sizeof(uint32_t), cmp_u32);
        /* Drop repeats: the solver wants a strictly ascending list. */
        size_t w = 0;
        for (size_t c = 0; c < dp->n_cached; c++)
            if (w == 0 || pool[used + w - 1] != pool[used + c])
                pool[used + w++] = pool[used + c];
        dp->n_cached = w;
        used += w;
    }
}

static void run_round(struct pf_sched *s)
{
    struct pf_sched_dispatcher *d = s->dispatcher;
    struct round r;
    struct pf_error err;
    double t0 = pf_time_mono_seconds();
    uint64_t epoch = 0;

    memset(&r, 0, sizeof(r));
    r.s = s;
    r.profiles.limit = PF_DISPATCH_BITS_MAX;
    r.labels.limit = PF_DISPATCH_BITS_MAX;
    r.materials.limit = 65535;
    r.queues.limit = UINT32_MAX;
    r.digests.limit = UINT32_MAX;
    r.printer_ids.limit = UINT32_MAX;
    r.job_ids.limit = UINT32_MAX;
    if (!pf_sched_is_leader(s, &epoch))
        return;
    if (pf_pg_pool_checkout(s->pool, 2000, &r.conn, &err) != PF_OK) {
        pf_log_warn("dispatch_no_database", "error=\"%s\"", err.msg);
        return;
    }
    if (pf_time_mono_ms() - d->last_sweep >= SWEEP_EVERY_MS) {
        d->last_sweep = pf_time_mono_ms();
        sweep_lost(&r);
    }
    update_gauges(&r);
    if (pf_sched_agents_snapshot(s, &r.snap, &err) != PF_OK)
        goto out_fail;
    if (r.snap.n == 0)
        goto out;
    qsort(r.snap.printers, r.snap.n, sizeof(r.snap.printers[0]), cmp_snap);
    if (load_printers(&r, &err) != PF_OK)
        goto out_fail;
    if (r.n_ready == 0)
        goto out;
    if (load_jobs(&r, &err) != PF_OK)
        goto out_fail;
    if (r.n_jobs == 0)
        goto out;
    if (load_exclusions(&r, &err) != PF_OK)
        goto out_fail;
    map_caches(&r);

    struct pf_dispatch_input in = {
        .now = pf_time_wall_ms() / 1000,
        .n_profiles = r.profiles.n + 1,
        .printers = r.printers,
        .n_printers = r.n_ready,
        .jobs = r.djobs,
        .n_jobs = r.n_jobs,
    };
    struct pf_dispatch_output out;
    if (pf_dispatch_solve(d->solver, &in, &out, &err) != PF_OK)
        goto out_fail;
    if (out.n_assignments == 0)
        goto out;

    r.as = calloc(out.n_assignments, sizeof(*r.as));
    if (r.as == NULL) {
        pf_error_set(&err, PF_E_RESOURCE, "out of memory");
        goto out_fail;
    }
    size_t na = 0;
    for (size_t i = 0; i < out.n_assignments; i++) {
        const struct pf_dispatch_assignment *as = &out.assignments[i];
        struct assignment *a = &r.as[na];
        a->job = &r.jobs[as->job];
        a->printer = &r.ready[as->printer];
        const Printfarm__V1__BundleFile *f = pf_sched_bundle_file(a->job->b, a->printer->profile);
        if (f == NULL)
            continue;
        a->profile = a->printer->profile;
        snprintf(a->file, sizeof(a->file), "%s", f->digest->sha256);
        a->size = f->size;
        na++;
    }
    struct commit_ctx cc = {.as = r.as, .n = na, .epoch = epoch};
    if (pf_sched_fenced(s, r.conn, commit_tx, &cc, &err) != PF_OK)
        goto out_fail;
    /* Recorded: now tell the printers. */
    int64_t now = pf_time_mono_ms(), wall = pf_time_wall_ms();
    for (size_t i = 0; i < na; i++) {
        struct assignment *a = &r.as[i];
        if (!a->recorded)
            continue;
        bool sent =
            pf_sched_send_start_print(s, a->printer->id, a->attempt_id, a->job->id, a->job->name,
                                      a->job->bundle, a->profile, a->file, a->size);
        pf_log_info("attempt_dispatched", "attempt=%s job=%s printer=%s profile=%s sent=%s",
                    a->attempt_id, a->job->id, a->printer->id, a->profile, sent ? "yes" : "no");
        if (sent && a->printer->ready_since > 0) {
            /* Waiting for work is not dispatch latency: count from the later
             * of "printer ready" and "job submitted". */
            int64_t waited = now - a->printer->ready_since;
            int64_t age = wall - a->job->created_ms;
            if (age >= 0 && age < waited)
                waited = age;
            pf_metric_observe(d->m_latency, NULL, (double)waited / 1000.0);
        }
    }
    pf_metric_add(d->m_dispatched, NULL, (double)cc.recorded);
    goto out;
out_fail:
    pf_log_warn("dispatch_round_failed", "error=\"%s\"", err.msg);
out:
    pf_metric_inc1(d->m_rounds, NULL);
    pf_metric_observe(d->m_round, NULL, pf_time_mono_seconds() - t0);
    pf_pg_pool_checkin(s->pool, r.conn);
    r.conn = NULL;
    round_release(&r);
}

/* ---- the thread ---- */

void pf_sched_dispatch_kick(struct pf_sched *s)
{
    struct pf_sched_dispatcher *d = s->dispatcher;
    if (d == NULL)
        return;
    pthread_mutex_lock(&d->mu);
    d->kicked = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void *dispatcher_main(void *arg)
{
    struct pf_sched *s = arg;
    struct pf_sched_dispatcher *d = s->dispatcher;

    while (!atomic_load(&d->stop)) {
        struct timespec ts;
        int64_t period = s->cfg.dispatch_interval_ms;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += period / 1000;
        ts.tv_nsec += (period % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&d->mu);
        while (!d->kicked && !atomic_load(&d->stop)) {
            if (pthread_cond_timedwait(&d->cv, &d->mu, &ts) == ETIMEDOUT)
                break;
        }
        d->kicked = false;
        pthread_mutex_unlock(&d->mu);
        if (atomic_load(&d->stop))
            break;
        if (pf_sched_is_leader(s, NULL))
            run_round(s);
    }
    return NULL;
}

enum pf_status pf_sched_dispatcher_create(struct pf_sched *s, struct pf_error *err)
{
    struct pf_sched_dispatcher *d = calloc(1, sizeof(*d));
    pthread_condattr_t ca;
    if (d == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    if (pf_dispatch_create(NULL, &d->solver, err) != PF_OK) {
        free(d);
        return err->code;
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_mutex_init(&d->cache_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&d->stop, false);
    d->last_gauges = INT64_MIN / 2;
    d->last_sweep = INT64_MIN / 2;
    d->m_latency = pf_metrics_histogram(
        s->metrics, "printfarm_scheduler_dispatch_latency_seconds",
        "time from a printer becoming ready to its StartPrint being sent", NULL, NULL, 0);
    d->m_round = pf_metrics_histogram(s->metrics, "printfarm_scheduler_dispatch_round_seconds",
                                      "duration of one dispatch round", NULL, NULL, 0);
    d->m_jobs = pf_metrics_gauge(s->metrics, "printfarm_scheduler_jobs", "jobs by state", "state");
    d->m_printers = pf_metrics_gauge(s->metrics, "printfarm_scheduler_printers",
                                     "printers known to this replica, by state", "state");
    d->m_dispatched =
        pf_metrics_counter(s->metrics, "printfarm_scheduler_attempts_dispatched_total",
                           "attempts recorded and sent to printers", NULL);
    d->m_rounds = pf_metrics_counter(s->metrics, "printfarm_scheduler_dispatch_rounds_total",
                                     "dispatch rounds run", NULL);
    s->dispatcher = d;
    return PF_OK;
}

enum pf_status pf_sched_dispatcher_start(struct pf_sched *s, struct pf_error *err)
{
    struct pf_sched_dispatcher *d = s->dispatcher;
    if (pthread_create(&d->thread, NULL, dispatcher_main, s) != 0)
        return pf_error_set(err, PF_E_RESOURCE, "could not start the dispatcher thread");
    d->started = true;
    return PF_OK;
}

void pf_sched_dispatcher_stop(struct pf_sched *s)
{
    struct pf_sched_dispatcher *d = s->dispatcher;
    if (d == NULL || !d->started)
        return;
    atomic_store(&d->stop, true);
    pf_sched_dispatch_kick(s);
    pthread_join(d->thread, NULL);
    d->started = false;
}

void pf_sched_dispatcher_destroy(struct pf_sched *s)
{
    struct pf_sched_dispatcher *d = s->dispatcher;
    if (d == NULL)
        return;
    pf_sched_dispatcher_stop(s);
    for (size_t i = 0; i < BUNDLE_CACHE_MAX; i++)
        pf_sched_bundle_release(d->cache[i].b);
    pf_dispatch_destroy(d->solver);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    pthread_mutex_destroy(&d->cache_mu);
    free(d);
    s->dispatcher = NULL;
}
