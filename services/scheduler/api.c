/* The scheduler's unary RPCs: jobs (SubmitJob, GetJob, ListJobs, UpdateJob,
 * CancelJob) and printers (ListPrinters, UpdatePrinter, ConfirmBedClear).
 *
 * Every handler follows one path. On the completion-queue thread: refuse on a
 * follower (UNAVAILABLE + `printfarm-leader`), decode the request and run the
 * pure checks of validate.c, so bad input is answered before any work is
 * queued and never reaches the database. On a worker (pf_rpc_call_defer): the
 * pf-files call (SubmitJob only, with no database connection held), then one
 * pooled connection for the reads and one fenced transaction (pf_sched_fenced:
 * pf_sched_tx_begin .. pf_sched_tx_commit, run again after a deadlock) that
 * writes the change together with its event. Conditions that depend on stored
 * state are checked inside that transaction on rows locked FOR UPDATE, and any
 * failure rolls it back, so a refused call changes nothing. What talks to
 * agents or other modules (CancelPrint, reloads, dispatch kicks) happens only
 * after the commit succeeded. A transaction that finds this replica is no
 * longer the leader is answered as a follower answers.
 *
 * Replies are built from PGresult text without copying: the messages point
 * into the results, which are cleared only after pf_rpc_call_reply has packed
 * them. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api.h"
#include "buf.h"
#include "digest.h"
#include "log.h"
#include "modules.h"
#include "policy.h"
#include "printfarm/v1/files.pb-c.h"
#include "rpc/auth.h"
#include "rpc/pb.h"
#include "validate.h"

#define FILES_TIMEOUT_MS 5000
#define PRINTER_BATCH    500
#define READ_ROLES       (PF_ROLE_VIEWER | PF_ROLE_OPERATOR | PF_ROLE_ADMIN)
#define WRITE_ROLES      (PF_ROLE_OPERATOR | PF_ROLE_ADMIN)
#define TEXT_MAX         320 /* event texts */

_Static_assert(PF_SCHED_PRINTER_NAME_MAX == PF_SCHED_PRINTER_ID_MAX,
               "validate.h and modules.h disagree on printer ids");
_Static_assert(PF_SCHED_TEXT_ID_MAX < PF_SCHED_ID_MAX, "ids must fit PF_SCHED_ID_MAX");

/* ---- states as stored ---- */

static const char *const job_states[] = {"",     "queued", "held",     "printing",
                                         "done", "failed", "cancelled"};
static const char *const attempt_states[] = {"",       "dispatched", "printing", "succeeded",
                                             "failed", "cancelled",  "lost"};
#define N_JOB_STATES     (sizeof(job_states) / sizeof(job_states[0]))
#define N_ATTEMPT_STATES (sizeof(attempt_states) / sizeof(attempt_states[0]))

static int state_parse(const char *const *names, size_t n, const char *text)
{
    for (size_t i = 1; text != NULL && i < n; i++) {
        if (strcmp(names[i], text) == 0)
            return (int)i;
    }
    return 0;
}

static const char *job_state_text(Printfarm__V1__JobState st)
{
    return (size_t)st < N_JOB_STATES ? job_states[st] : "";
}

/* ---- errors and metrics ---- */

static void count_error(struct pf_sched *s, const char *method, enum pf_status code)
{
    if (s->metrics == NULL)
        return;
    struct pf_metric *m = pf_metrics_counter(s->metrics, "printfarm_scheduler_api_errors_total",
                                             "scheduler API calls that failed, by method and "
                                             "status code",
                                             "method,code");
    const char *labels[2] = {method, pf_rpc_code_name(pf_rpc_code_from_status(code))};
    pf_metric_add(m, labels, 1);
}

static void count_event(struct pf_sched *s, const char *name, const char *help)
{
    if (s->metrics != NULL)
        pf_metric_add(pf_metrics_counter(s->metrics, name, help, NULL), NULL, 1);
}

/* Ends the call with err. A transaction that was refused because this replica
 * lost leadership is answered as a follower answers: UNAVAILABLE with the
 * leader in trailing metadata, so clients retry there. */
static void fail(struct pf_rpc_call *call, const char *method, const struct pf_error *err)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    struct pf_error e = *err;

    if (e.code == PF_E_ABORTED && !pf_sched_is_leader(s, NULL)) {
        count_error(s, method, PF_E_UNAVAILABLE);
        if (pf_sched_refuse_if_follower(s, call))
            return;
        pf_error_set(&e, PF_E_UNAVAILABLE, "this scheduler replica is no longer the leader: %.180s",
                     err->msg);
        pf_rpc_call_finish_err(call, &e);
        return;
    }
    count_error(s, method, e.code);
    if (e.code == PF_E_INTERNAL || e.code == PF_E_IO || e.code == PF_E_UNAVAILABLE) {
        char q[PF_ERROR_MSG_MAX + 8];
        pf_log_warn("api_call_failed", "method=%s code=%s msg=%s", method, pf_status_name(e.code),
                    pf_log_quote(e.msg, q, sizeof(q)));
    }
    pf_rpc_call_finish_err(call, &e);
}

/* The caller's token name for records, "" when tokens are off. */
static const char *principal(struct pf_rpc_call *call)
{
    const char *p = pf_rpc_call_principal(call);
    return p != NULL ? p : "";
}

/* The caller as a person reads it in an event or a reason. */
static const char *who(struct pf_rpc_call *call)
{
    const char *p = principal(call);
    return p[0] != '\0' ? p : "an operator";
}

/* The caller for a log line: the token name, "-" when tokens are off. */
static const char *log_who(struct pf_rpc_call *call)
{
    const char *p = principal(call);
    return p[0] != '\0' ? p : "-";
}

/* ---- reading rows ---- */

struct row {
    const PGresult *res;
    int row;
    enum pf_status rc;
    struct pf_error *err;
};

/* The text at col, "" for NULL. The pointer belongs to the result; protobuf-c
 * messages take char * but only read it. */
static char *col_text(struct row *r, int col)
{
    const char *t = pf_pg_text(r->res, r->row, col);
    return (char *)(t != NULL ? t : "");
}

static int64_t col_int(struct row *r, int col)
{
    int64_t v = 0;
    if (r->rc == PF_OK)
        r->rc = pf_pg_int64(r->res, r->row, col, &v, r->err);
    return v;
}

static uint32_t col_u32(struct row *r, int col)
{
    int64_t v = col_int(r, col);
    return v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static bool col_bool(struct row *r, int col)
{
    const char *t = pf_pg_text(r->res, r->row, col);
    return t != NULL && t[0] == 't';
}

/* ---- jobs ---- */

#define JOB_COLUMNS                                                                                \
    "j.id, j.queue, j.name, j.bundle, j.count, j.priority, j.constraints, j.state, "               \
    "j.state_reason, coalesce(j.idempotency_key, ''), j.max_attempts_per_printer, "                \
    "j.max_printers, j.succeeded, j.in_progress, j.failed_attempts, j.lost_attempts, "             \
    "j.cancelled_attempts, j.submitted_by, (extract(epoch FROM j.created_at) * 1000)::bigint, "    \
    "(extract(epoch FROM j.updated_at) * 1000)::bigint, "                                          \
    "(extract(epoch FROM j.created_at) * 1000000)::bigint, j.request_digest"

enum job_col {
    JC_ID,
    JC_QUEUE,
    JC_NAME,
    JC_BUNDLE,
    JC_COUNT,
    JC_PRIORITY,
    JC_CONSTRAINTS,
    JC_STATE,
    JC_REASON,
    JC_KEY,
    JC_MAX_ATTEMPTS,
    JC_MAX_PRINTERS,
    JC_SUCCEEDED,
    JC_IN_PROGRESS,
    JC_FAILED,
    JC_LOST,
    JC_CANCELLED,
    JC_SUBMITTED_BY,
    JC_CREATED_MS,
    JC_UPDATED_MS,
    JC_CREATED_US,
    JC_DIGEST,
};

struct job_msg {
    Printfarm__V1__Job job;
    Printfarm__V1__Digest bundle;
    Printfarm__V1__JobConstraints *constraints; /* unpacked; NULL when none */
    char **excluded;                            /* into job_list.excluded_res */
};

/* Jobs built from rows of one result, with their excluded printers. */
struct job_list {
    size_t n;
    struct job_msg *items;
    Printfarm__V1__Job **ptrs;
    PGresult *excluded_res;
};

static void job_list_release(struct job_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->items[i].constraints != NULL)
            protobuf_c_message_free_unpacked(&l->items[i].constraints->base, NULL);
        free(l->items[i].excluded);
    }
    free(l->items);
    free(l->ptrs);
    PQclear(l->excluded_res);
    memset(l, 0, sizeof(*l));
}

static enum pf_status job_from_row(const PGresult *res, int rowno, struct job_msg *m,
                                   struct pf_error *err)
{
    struct row r = {res, rowno, PF_OK, err};

    printfarm__v1__job__init(&m->job);
    printfarm__v1__digest__init(&m->bundle);
    m->job.id = col_text(&r, JC_ID);
    m->job.queue = col_text(&r, JC_QUEUE);
    m->job.name = col_text(&r, JC_NAME);
    m->bundle.sha256 = col_text(&r, JC_BUNDLE);
    m->job.bundle = &m->bundle;
    m->job.count = col_u32(&r, JC_COUNT);
    m->job.priority = (int32_t)col_int(&r, JC_PRIORITY);
    m->constraints = (Printfarm__V1__JobConstraints *)pf_sched_bytea_unpack(
        &printfarm__v1__job_constraints__descriptor, pf_pg_text(res, rowno, JC_CONSTRAINTS));
    m->job.constraints = m->constraints;
    m->job.state = state_parse(job_states, N_JOB_STATES, col_text(&r, JC_STATE));
    m->job.state_reason = col_text(&r, JC_REASON);
    m->job.idempotency_key = col_text(&r, JC_KEY);
    m->job.max_attempts_per_printer = col_u32(&r, JC_MAX_ATTEMPTS);
    m->job.max_printers = col_u32(&r, JC_MAX_PRINTERS);
    m->job.succeeded = col_u32(&r, JC_SUCCEEDED);
    m->job.in_progress = col_u32(&r, JC_IN_PROGRESS);
    m->job.failed_attempts = col_u32(&r, JC_FAILED);
    m->job.lost_attempts = col_u32(&r, JC_LOST);
    m->job.cancelled_attempts = col_u32(&r, JC_CANCELLED);
    m->job.submitted_by = col_text(&r, JC_SUBMITTED_BY);
    m->job.created_unix_ms = col_int(&r, JC_CREATED_MS);
    m->job.updated_unix_ms = col_int(&r, JC_UPDATED_MS);
    return r.rc;
}

/* Appends `"text"` to a PostgreSQL array literal. */
static enum pf_status array_add(struct pf_buf *b, const char *text)
{
    enum pf_status rc = pf_buf_append(b, b->len > 1 ? ",\"" : "\"", b->len > 1 ? 2 : 1);
    for (const char *p = text; rc == PF_OK && *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            rc = pf_buf_append(b, "\\", 1);
        if (rc == PF_OK)
            rc = pf_buf_append(b, p, 1);
    }
    return rc == PF_OK ? pf_buf_append(b, "\"", 1) : rc;
}

/* The printers each job may no longer use: those it failed on at least
 * max_attempts_per_printer times (the failure policy's exclusion rule). */
static enum pf_status load_exclusions(struct pf_pg_conn *conn, struct job_list *l,
                                      struct pf_error *err)
{
    struct pf_buf ids;
    const char *params[1];
    enum pf_status rc = PF_OK;
    size_t *counts;

    if (l->n == 0)
        return PF_OK;
    pf_buf_init(&ids, 0);
    if (pf_buf_append(&ids, "{", 1) != PF_OK)
        rc = PF_E_RESOURCE;
    for (size_t i = 0; rc == PF_OK && i < l->n; i++)
        rc = array_add(&ids, l->items[i].job.id);
    if (rc == PF_OK)
        rc = pf_buf_append(&ids, "}", 1);
    if (rc != PF_OK) {
        pf_buf_release(&ids);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory listing job ids");
    }
    params[0] = ids.data;
    rc = pf_pg_exec(conn,
                    "SELECT a.job_id, a.printer_id FROM attempts a JOIN jobs j ON j.id = a.job_id "
                    "WHERE a.job_id = ANY($1::text[]) AND a.state = 'failed' "
                    "GROUP BY a.job_id, a.printer_id, j.max_attempts_per_printer "
                    "HAVING count(*) >= j.max_attempts_per_printer "
                    "ORDER BY a.job_id, a.printer_id",
                    1, params, &l->excluded_res, err);
    pf_buf_release(&ids);
    if (rc != PF_OK)
        return rc;
    int rows = PQntuples(l->excluded_res);
    if (rows == 0)
        return PF_OK;
    counts = calloc(l->n, sizeof(*counts));
    if (counts == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    for (size_t i = 0; i < l->n; i++) {
        for (int k = 0; k < rows; k++) {
            if (strcmp(PQgetvalue(l->excluded_res, k, 0), l->items[i].job.id) == 0)
                counts[i]++;
        }
        if (counts[i] == 0)
            continue;
        l->items[i].excluded = calloc(counts[i], sizeof(char *));
        if (l->items[i].excluded == NULL) {
            free(counts);
            return pf_error_set(err, PF_E_RESOURCE, "out of memory");
        }
        for (int k = 0; k < rows; k++) {
            if (strcmp(PQgetvalue(l->excluded_res, k, 0), l->items[i].job.id) == 0)
                l->items[i].excluded[l->items[i].job.n_excluded_printers++] =
                    PQgetvalue(l->excluded_res, k, 1);
        }
        l->items[i].job.excluded_printers = l->items[i].excluded;
    }
    free(counts);
    return PF_OK;
}

/* Builds the first n rows of res (JOB_COLUMNS) into l. res must outlive l. */
static enum pf_status job_list_load(struct pf_pg_conn *conn, const PGresult *res, size_t n,
                                    struct job_list *l, struct pf_error *err)
{
    memset(l, 0, sizeof(*l));
    if (n == 0)
        return PF_OK;
    l->items = calloc(n, sizeof(*l->items));
    l->ptrs = calloc(n, sizeof(*l->ptrs));
    if (l->items == NULL || l->ptrs == NULL) {
        job_list_release(l);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for %zu jobs", n);
    }
    for (size_t i = 0; i < n; i++) {
        l->n = i + 1;
        if (job_from_row(res, (int)i, &l->items[i], err) != PF_OK) {
            job_list_release(l);
            return err->code;
        }
        l->ptrs[i] = &l->items[i].job;
    }
    if (load_exclusions(conn, l, err) != PF_OK) {
        job_list_release(l);
        return err->code;
    }
    return PF_OK;
}

/* Reads one job (JOB_COLUMNS) by id: PF_E_NOT_FOUND naming it when absent.
 * *out is the caller's (PQclear). */
static enum pf_status select_job(struct pf_pg_conn *conn, const char *id, bool for_update,
                                 PGresult **out, struct pf_error *err)
{
    const char *params[1] = {id};
    const char *sql = for_update ? "SELECT " JOB_COLUMNS " FROM jobs j WHERE j.id = $1 FOR UPDATE"
                                 : "SELECT " JOB_COLUMNS " FROM jobs j WHERE j.id = $1";
    enum pf_status rc = pf_pg_exec(conn, sql, 1, params, out, err);
    if (rc != PF_OK)
        return rc;
    if (PQntuples(*out) == 0) {
        PQclear(*out);
        *out = NULL;
        return pf_error_set(err, PF_E_NOT_FOUND, "job '%s' does not exist", id);
    }
    return PF_OK;
}

/* Replies with resp after pointing its job field (*slot) at the first row of
 * res (JOB_COLUMNS); *slot is reset before returning. */
static enum pf_status reply_one_job(struct pf_rpc_call *call, struct pf_pg_conn *conn,
                                    const PGresult *res, ProtobufCMessage *resp,
                                    Printfarm__V1__Job **slot, struct pf_error *err)
{
    struct job_list l;
    if (job_list_load(conn, res, 1, &l, err) != PF_OK)
        return err->code;
    *slot = l.ptrs[0];
    pf_rpc_call_reply(call, resp);
    *slot = NULL;
    job_list_release(&l);
    return PF_OK;
}

/* ---- printers ---- */

#define PRINTER_SELECT                                                                             \
    "SELECT p.id, p.profile, p.labels, p.materials, p.queues, p.windows, p.capabilities, "         \
    "p.agent_version, p.quarantined, p.state_reason, p.consecutive_failures, p.awaiting_clear, "   \
    "coalesce(p.last_attempt_id, ''), "                                                            \
    "coalesce((extract(epoch FROM p.last_seen) * 1000)::bigint, 0), coalesce(act.id, ''), "        \
    "coalesce(act.job_id, ''), coalesce(la.job_id, '') FROM printers p "                           \
    "LEFT JOIN LATERAL (SELECT a.id, a.job_id FROM attempts a WHERE a.printer_id = p.id "          \
    "AND a.state IN ('dispatched', 'printing') LIMIT 1) act ON true "                              \
    "LEFT JOIN attempts la ON la.id = p.last_attempt_id "

enum printer_col {
    PC_ID,
    PC_PROFILE,
    PC_LABELS,
    PC_MATERIALS,
    PC_QUEUES,
    PC_WINDOWS,
    PC_CAPABILITIES,
    PC_AGENT_VERSION,
    PC_QUARANTINED,
    PC_REASON,
    PC_FAILURES,
    PC_AWAITING_CLEAR,
    PC_LAST_ATTEMPT,
    PC_LAST_SEEN_MS,
    PC_ACTIVE_ATTEMPT,
    PC_ACTIVE_JOB,
    PC_LAST_JOB,
};

#define N_TEMPS 4
static const char *const temp_sensors[N_TEMPS] = {"T0", "T1", "bed", "chamber"};

struct printer_msg {
    Printfarm__V1__Printer p;
    Printfarm__V1__Labels *labels;
    Printfarm__V1__ExtruderMaterials *materials;
    Printfarm__V1__QueueWeights *queues;
    Printfarm__V1__AvailabilityWindows *windows;
    Printfarm__V1__AgentCapabilities *caps;
    Printfarm__V1__Temperature temps[N_TEMPS];
    Printfarm__V1__Temperature *temp_ptrs[N_TEMPS];
    char attempt_id[PF_SCHED_ID_MAX];
};

static void printer_msg_release(struct printer_msg *m)
{
    if (m->labels != NULL)
        protobuf_c_message_free_unpacked(&m->labels->base, NULL);
    if (m->materials != NULL)
        protobuf_c_message_free_unpacked(&m->materials->base, NULL);
    if (m->queues != NULL)
        protobuf_c_message_free_unpacked(&m->queues->base, NULL);
    if (m->windows != NULL)
        protobuf_c_message_free_unpacked(&m->windows->base, NULL);
    if (m->caps != NULL)
        protobuf_c_message_free_unpacked(&m->caps->base, NULL);
    memset(m, 0, sizeof(*m));
}

/* Builds one printer from a PRINTER_SELECT row (stored settings) and its live
 * agent state. res must outlive m. */
static enum pf_status printer_from_row(struct pf_sched *s, const PGresult *res, int rowno,
                                       struct printer_msg *m, struct pf_error *err)
{
    struct row r = {res, rowno, PF_OK, err};
    struct pf_sched_live live;
    bool connected;
    const char *active = col_text(&r, PC_ACTIVE_ATTEMPT), *last = col_text(&r, PC_LAST_ATTEMPT);

    memset(m, 0, sizeof(*m));
    printfarm__v1__printer__init(&m->p);
    m->p.id = col_text(&r, PC_ID);
    m->p.profile = col_text(&r, PC_PROFILE);
    m->labels = (Printfarm__V1__Labels *)pf_sched_bytea_unpack(&printfarm__v1__labels__descriptor,
                                                               pf_pg_text(res, rowno, PC_LABELS));
    if (m->labels != NULL) {
        m->p.labels = m->labels->items;
        m->p.n_labels = m->labels->n_items;
    }
    m->materials = (Printfarm__V1__ExtruderMaterials *)pf_sched_bytea_unpack(
        &printfarm__v1__extruder_materials__descriptor, pf_pg_text(res, rowno, PC_MATERIALS));
    if (m->materials != NULL) {
        m->p.materials = m->materials->items;
        m->p.n_materials = m->materials->n_items;
    }
    m->queues = (Printfarm__V1__QueueWeights *)pf_sched_bytea_unpack(
        &printfarm__v1__queue_weights__descriptor, pf_pg_text(res, rowno, PC_QUEUES));
    if (m->queues != NULL) {
        m->p.queues = m->queues->items;
        m->p.n_queues = m->queues->n_items;
    }
    m->windows = (Printfarm__V1__AvailabilityWindows *)pf_sched_bytea_unpack(
        &printfarm__v1__availability_windows__descriptor, pf_pg_text(res, rowno, PC_WINDOWS));
    if (m->windows != NULL) {
        m->p.windows = m->windows->items;
        m->p.n_windows = m->windows->n_items;
    }
    m->caps = (Printfarm__V1__AgentCapabilities *)pf_sched_bytea_unpack(
        &printfarm__v1__agent_capabilities__descriptor, pf_pg_text(res, rowno, PC_CAPABILITIES));
    m->p.capabilities = m->caps;
    m->p.agent_version = col_text(&r, PC_AGENT_VERSION);
    m->p.state_reason = col_text(&r, PC_REASON);
    m->p.consecutive_failures = col_u32(&r, PC_FAILURES);
    m->p.last_seen_unix_ms = col_int(&r, PC_LAST_SEEN_MS);

    memset(&live, 0, sizeof(live));
    connected = pf_sched_agents_live(s, m->p.id, &live) && live.connected;
    m->p.state = pf_sched_printer_state_shown(col_bool(&r, PC_QUARANTINED), connected, live.state,
                                              col_bool(&r, PC_AWAITING_CLEAR));
    /* The attempt: what the agent reports, else the active one in the
     * database, else the last one it ran. */
    if (connected && live.attempt_id[0] != '\0') {
        snprintf(m->attempt_id, sizeof(m->attempt_id), "%s", live.attempt_id);
        m->p.current_attempt_id = m->attempt_id;
        m->p.current_job_id = strcmp(live.attempt_id, active) == 0 ? col_text(&r, PC_ACTIVE_JOB)
                              : strcmp(live.attempt_id, last) == 0 ? col_text(&r, PC_LAST_JOB)
                                                                   : "";
    } else if (active[0] != '\0') {
        m->p.current_attempt_id = (char *)active;
        m->p.current_job_id = col_text(&r, PC_ACTIVE_JOB);
    } else {
        m->p.current_attempt_id = (char *)last;
        m->p.current_job_id = col_text(&r, PC_LAST_JOB);
    }
    if (connected) {
        m->p.progress = live.progress;
        m->p.cached_files = live.cached_files;
        if (live.last_seen_unix_ms > 0)
            m->p.last_seen_unix_ms = live.last_seen_unix_ms;
        for (int i = 0; i < live.temp_count && i < N_TEMPS; i++) {
            printfarm__v1__temperature__init(&m->temps[i]);
            m->temps[i].sensor = (char *)temp_sensors[i];
            m->temps[i].actual = live.temps[i][0];
            m->temps[i].target = live.temps[i][1];
            m->temp_ptrs[m->p.n_temperatures++] = &m->temps[i];
        }
        m->p.temperatures = m->temp_ptrs;
    }
    if (r.rc != PF_OK)
        printer_msg_release(m);
    return r.rc;
}

/* A printer with no queues serves "default" with weight 1 (modules.h). */
static bool printer_serves(const struct printer_msg *m, const char *queue)
{
    if (m->p.n_queues == 0)
        return strcmp(queue, PF_SCHED_DEFAULT_QUEUE) == 0;
    for (size_t i = 0; i < m->p.n_queues; i++) {
        if (m->p.queues[i]->queue != NULL && strcmp(m->p.queues[i]->queue, queue) == 0)
            return true;
    }
    return false;
}

/* Replies with one printer read fresh from the database. slot is the
 * response's printer field. */
static enum pf_status reply_printer(struct pf_rpc_call *call, struct pf_pg_conn *conn,
                                    const char *id, ProtobufCMessage *resp,
                                    Printfarm__V1__Printer **slot, struct pf_error *err)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    const char *params[1] = {id};
    struct printer_msg m;
    PGresult *res;
    enum pf_status rc;

    rc = pf_pg_exec(conn, PRINTER_SELECT "WHERE p.id = $1", 1, params, &res, err);
    if (rc != PF_OK)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return pf_error_set(err, PF_E_NOT_FOUND, "printer '%s' does not exist", id);
    }
    rc = printer_from_row(s, res, 0, &m, err);
    if (rc == PF_OK) {
        *slot = &m.p;
        pf_rpc_call_reply(call, resp);
        *slot = NULL;
        printer_msg_release(&m);
    }
    PQclear(res);
    return rc;
}

/* ---- the generic handler ---- */

typedef enum pf_status (*check_fn)(const ProtobufCMessage *req, struct pf_error *err);

/* The completion-queue part of every method: follower check, decode, pure
 * checks, then hand the request bytes to a worker. */
static void start(struct pf_rpc_call *call, const uint8_t *data, size_t len,
                  const ProtobufCMessageDescriptor *desc, check_fn check, pf_rpc_work_fn work,
                  const char *method)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    ProtobufCMessage *req;
    struct pf_error err;
    enum pf_status rc;

    if (pf_sched_refuse_if_follower(s, call))
        return;
    rc = pf_pb_unpack(desc, data, len, &req, &err);
    if (rc == PF_OK) {
        rc = check(req, &err);
        protobuf_c_message_free_unpacked(req, NULL);
    }
    if (rc != PF_OK) {
        fail(call, method, &err);
        return;
    }
    pf_rpc_call_defer(call, s->wq, work, data, len);
}

/* The worker's decode of a request the completion-queue thread already
 * checked. false when the call is over or the bytes do not decode (then the
 * call is finished). */
static bool decode(struct pf_rpc_call *call, const uint8_t *data, size_t len,
                   const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                   const char *method)
{
    struct pf_error err;
    if (pf_rpc_call_done(call))
        return false;
    if (pf_pb_unpack(desc, data, len, out, &err) != PF_OK) {
        fail(call, method, &err);
        return false;
    }
    return true;
}

/* ---- SubmitJob ---- */

static enum pf_status add_job_event(struct pf_pg_conn *conn, Printfarm__V1__EventKind kind,
                                    const char *job_id, Printfarm__V1__JobState state,
                                    const char *text, struct pf_error *err)
{
    struct pf_sched_event ev = {.kind = kind, .job_id = job_id, .job_state = state, .text = text};
    return pf_sched_event_add(conn, &ev, NULL, err);
}

struct submit {
    struct pf_rpc_call *call;
    const Printfarm__V1__SubmitJobRequest *req;
    const char *queue;
    char digest[PF_DIGEST_HEX_LEN + 1]; /* of the packed request */
    char name[PF_SCHED_JOB_NAME_MAX + 1];
    char *constraints; /* bytea parameter (packed JobConstraints) */
    bool replied;      /* a duplicate was found and answered */
    char id[PF_SCHED_ID_MAX];
    PGresult *row; /* the inserted job (JOB_COLUMNS) */
};

static enum pf_status check_submit(const ProtobufCMessage *req, struct pf_error *err)
{
    return pf_sched_check_submit((const Printfarm__V1__SubmitJobRequest *)req, err);
}

/* Looks the idempotency key up. When a job has it: the same request is
 * answered with that job and duplicate = true (a->replied); a different one
 * is PF_E_EXISTS. */
static enum pf_status submit_find_key(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                      struct pf_error *err)
{
    struct submit *a = arg;
    const char *params[1] = {a->req->idempotency_key};
    Printfarm__V1__SubmitJobResponse resp = PRINTFARM__V1__SUBMIT_JOB_RESPONSE__INIT;
    PGresult *res;
    enum pf_status rc;

    rc = pf_pg_exec(conn, "SELECT " JOB_COLUMNS " FROM jobs j WHERE j.idempotency_key = $1", 1,
                    params, &res, err);
    if (rc != PF_OK)
        return rc;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return PF_OK;
    }
    if (strcmp(PQgetvalue(res, 0, JC_DIGEST), a->digest) != 0) {
        rc = pf_error_set(err, PF_E_EXISTS,
                          "idempotency key '%s' was used for a different request (job %s)",
                          a->req->idempotency_key, PQgetvalue(res, 0, JC_ID));
        PQclear(res);
        return rc;
    }
    resp.duplicate = true;
    rc = reply_one_job(a->call, conn, res, &resp.base, &resp.job, err);
    if (rc == PF_OK) {
        a->replied = true;
        count_event(s, "printfarm_scheduler_jobs_duplicate_total",
                    "SubmitJob retries answered with the job their idempotency key created");
    }
    PQclear(res);
    return rc;
}

/* The insert, as a body for pf_sched_fenced (run again after a deadlock, so
 * it starts by dropping what a previous run left). */
static enum pf_status submit_tx(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                struct pf_error *err)
{
    struct submit *a = arg;
    const Printfarm__V1__SubmitJobRequest *req = a->req;
    Printfarm__V1__JobState state = req->hold ? PRINTFARM__V1__JOB_STATE__JOB_STATE_HELD
                                              : PRINTFARM__V1__JOB_STATE__JOB_STATE_QUEUED;
    char count[16], prio[16], max_att[24], max_pr[24], text[TEXT_MAX];
    char reason[PF_SCHED_REASON_MAX + 1] = "", qn[PF_SCHED_JOB_NAME_MAX + 8];
    int64_t def_att = s->cfg.default_max_attempts_per_printer > 0
                          ? s->cfg.default_max_attempts_per_printer
                          : PF_POLICY_DEFAULT_MAX_ATTEMPTS_PER_PRINTER;
    int64_t def_pr = s->cfg.default_max_printers > 0 ? s->cfg.default_max_printers
                                                     : PF_POLICY_DEFAULT_MAX_PRINTERS;
    enum pf_status rc;

    PQclear(a->row);
    a->row = NULL;
    pf_sched_new_id("j-", a->id);
    snprintf(count, sizeof(count), "%u", req->count);
    snprintf(prio, sizeof(prio), "%d", req->priority);
    snprintf(max_att, sizeof(max_att), "%" PRId64,
             req->max_attempts_per_printer > 0 ? (int64_t)req->max_attempts_per_printer : def_att);
    snprintf(max_pr, sizeof(max_pr), "%" PRId64,
             req->max_printers > 0 ? (int64_t)req->max_printers : def_pr);
    if (req->hold)
        snprintf(reason, sizeof(reason), "held at submission by %s", who(a->call));

    const char *qparams[1] = {a->queue};
    rc = pf_pg_exec(conn, "INSERT INTO queues (name) VALUES ($1) ON CONFLICT DO NOTHING", 1,
                    qparams, NULL, err);
    if (rc != PF_OK)
        return rc;
    const char *params[14] = {
        a->id,          a->queue,
        a->name,        req->bundle->sha256,
        count,          prio,
        a->constraints, job_state_text(state),
        reason,         req->idempotency_key != NULL ? req->idempotency_key : "",
        a->digest,      max_att,
        max_pr,         principal(a->call)};
    rc = pf_pg_exec(conn,
                    "INSERT INTO jobs AS j (id, queue, name, bundle, count, priority, "
                    "constraints, state, state_reason, idempotency_key, request_digest, "
                    "max_attempts_per_printer, max_printers, submitted_by) "
                    "VALUES ($1, $2, $3, $4, $5::int, $6::int, $7::bytea, $8, $9, "
                    "NULLIF($10, ''), $11, $12::int, $13::int, $14) RETURNING " JOB_COLUMNS,
                    14, params, &a->row, err);
    if (rc != PF_OK)
        return rc;
    snprintf(text, sizeof(text), "job %s submitted by %s: %u x bundle %.12s to queue %s%s",
             pf_log_quote(a->name, qn, sizeof(qn)), who(a->call), req->count, req->bundle->sha256,
             a->queue, req->hold ? ", held" : "");
    return add_job_event(conn, PRINTFARM__V1__EVENT_KIND__EVENT_KIND_JOB_SUBMITTED, a->id, state,
                         text, err);
}

static enum pf_status submit_insert(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                    struct pf_error *err)
{
    struct submit *a = arg;
    Printfarm__V1__SubmitJobResponse resp = PRINTFARM__V1__SUBMIT_JOB_RESPONSE__INIT;
    enum pf_status rc = pf_sched_fenced(s, conn, submit_tx, a, err);

    if (rc != PF_OK)
        return rc;
    count_event(s, "printfarm_scheduler_jobs_submitted_total", "jobs added by SubmitJob");
    pf_log_info("job_submitted", "job=%s queue=%s count=%u bundle=%s by=%s", a->id, a->queue,
                a->req->count, a->req->bundle->sha256, log_who(a->call));
    if (!a->req->hold)
        pf_sched_dispatch_kick(s);
    /* The job exists now; should the answer be lost, a retry with the same
     * idempotency key finds it. */
    return reply_one_job(a->call, conn, a->row, &resp.base, &resp.job, err);
}

/* GetBundle from pf-files, with precise statuses for the caller. */
static enum pf_status fetch_bundle(struct pf_sched *s, struct pf_rpc_call *call, const char *hex,
                                   Printfarm__V1__GetBundleResponse **out, struct pf_error *err)
{
    Printfarm__V1__GetBundleRequest req = PRINTFARM__V1__GET_BUNDLE_REQUEST__INIT;
    Printfarm__V1__Digest d = PRINTFARM__V1__DIGEST__INIT;
    int64_t timeout = FILES_TIMEOUT_MS, left = pf_rpc_call_deadline_left_ms(call);
    struct pf_error e;
    enum pf_status rc;

    if (s->files == NULL)
        return pf_error_set(err, PF_E_UNAVAILABLE,
                            "pf-files is not configured on this scheduler (--files): bundle %.12s "
                            "cannot be verified",
                            hex);
    if (left < timeout)
        timeout = left > 0 ? left : 1;
    d.sha256 = (char *)hex;
    req.digest = &d;
    rc = pf_rpc_unary(s->files, "/printfarm.v1.Files/GetBundle", &req.base,
                      &printfarm__v1__get_bundle_response__descriptor, (ProtobufCMessage **)out,
                      timeout, &e);
    switch (rc) {
    case PF_OK:
        return PF_OK;
    case PF_E_NOT_FOUND:
        return pf_error_set(err, PF_E_PRECONDITION,
                            "bundle %s is not stored in pf-files: upload it first", hex);
    case PF_E_UNAVAILABLE:
    case PF_E_DEADLINE:
    case PF_E_CANCELLED:
    case PF_E_UNAUTHENTICATED:
    case PF_E_PERMISSION:
        return pf_error_set(err, PF_E_UNAVAILABLE,
                            "pf-files could not be asked for bundle %.12s, try again later: %.160s",
                            hex, e.msg);
    case PF_E_DATA_LOSS:
    case PF_E_INVALID:
        return pf_error_set(err, PF_E_PRECONDITION, "pf-files cannot serve bundle %.12s: %.180s",
                            hex, e.msg);
    default:
        return pf_error_set(err, PF_E_INTERNAL, "pf-files failed to return bundle %.12s: %.180s",
                            hex, e.msg);
    }
}

static void submit_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    Printfarm__V1__SubmitJobRequest *req;
    Printfarm__V1__GetBundleResponse *bundle = NULL;
    Printfarm__V1__JobConstraints no_constraints = PRINTFARM__V1__JOB_CONSTRAINTS__INIT;
    struct submit a = {.call = call};
    struct pf_digest d;
    struct pf_error err;
    uint8_t *packed;
    size_t packed_len;

    if (!decode(call, data, len, &printfarm__v1__submit_job_request__descriptor,
                (ProtobufCMessage **)&req, "SubmitJob"))
        return;
    a.req = req;
    a.queue = req->queue != NULL && req->queue[0] != '\0' ? req->queue : PF_SCHED_DEFAULT_QUEUE;
    /* The request as protobuf-c packs it (fields in number order), so a retry
     * hashes the same however the client's library ordered its bytes. */
    if (pf_pb_pack(&req->base, &packed, &packed_len, &err) != PF_OK)
        goto out_fail;
    pf_sha256(packed, packed_len, &d);
    free(packed);
    pf_digest_to_hex(&d, a.digest);

    if (req->idempotency_key != NULL && req->idempotency_key[0] != '\0') {
        if (pf_sched_with_db(s, submit_find_key, &a, &err) != PF_OK)
            goto out_fail;
        if (a.replied)
            goto out;
    }
    if (fetch_bundle(s, call, req->bundle->sha256, &bundle, &err) != PF_OK)
        goto out_fail;
    if (pf_sched_check_profiles_in_bundle(req->constraints, bundle->bundle, &err) != PF_OK)
        goto out_fail;
    pf_sched_job_name(req->name, bundle->bundle != NULL ? bundle->bundle->name : NULL,
                      req->bundle->sha256, a.name);
    a.constraints = pf_sched_bytea_msg(req->constraints != NULL ? &req->constraints->base
                                                                : &no_constraints.base);
    if (a.constraints == NULL) {
        pf_error_set(&err, PF_E_RESOURCE, "out of memory packing constraints");
        goto out_fail;
    }

    enum pf_status rc = pf_sched_with_db(s, submit_insert, &a, &err);
    if (rc == PF_E_EXISTS && req->idempotency_key != NULL && req->idempotency_key[0] != '\0') {
        /* A concurrent submit with the same key won the unique constraint. */
        rc = pf_sched_with_db(s, submit_find_key, &a, &err);
        if (rc == PF_OK && !a.replied)
            rc = pf_error_set(&err, PF_E_ABORTED,
                              "idempotency key '%s' is being used by a concurrent request: retry",
                              req->idempotency_key);
    }
    if (rc != PF_OK)
        goto out_fail;
    goto out;
out_fail:
    fail(call, "SubmitJob", &err);
out:
    PQclear(a.row);
    free(a.constraints);
    if (bundle != NULL)
        protobuf_c_message_free_unpacked(&bundle->base, NULL);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void submit_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    start(call, data, len, &printfarm__v1__submit_job_request__descriptor, check_submit,
          submit_work, "SubmitJob");
}

/* ---- GetJob ---- */

#define ATTEMPT_COLUMNS                                                                            \
    "id, job_id, printer_id, state, profile, file, progress, reason, epoch, "                      \
    "(extract(epoch FROM dispatched_at) * 1000)::bigint, "                                         \
    "coalesce((extract(epoch FROM started_at) * 1000)::bigint, 0), "                               \
    "coalesce((extract(epoch FROM ended_at) * 1000)::bigint, 0)"

struct attempt_msg {
    Printfarm__V1__Attempt a;
    Printfarm__V1__Digest file;
};

static enum pf_status check_get_job(const ProtobufCMessage *req, struct pf_error *err)
{
    return pf_sched_check_get_job((const Printfarm__V1__GetJobRequest *)req, err);
}

static enum pf_status get_job_db(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                 struct pf_error *err)
{
    struct pf_rpc_call *call = ((void **)arg)[0];
    const Printfarm__V1__GetJobRequest *req = ((void **)arg)[1];
    Printfarm__V1__GetJobResponse resp = PRINTFARM__V1__GET_JOB_RESPONSE__INIT;
    const char *params[1] = {req->id};
    PGresult *jres = NULL, *ares = NULL;
    struct attempt_msg *atts = NULL;
    Printfarm__V1__Attempt **aptrs = NULL;
    struct job_list l = {0};
    enum pf_status rc;

    rc = select_job(conn, req->id, false, &jres, err);
    if (rc != PF_OK)
        return rc;
    rc = pf_pg_exec(conn,
                    "SELECT " ATTEMPT_COLUMNS " FROM attempts WHERE job_id = $1 "
                    "ORDER BY dispatched_at DESC, id DESC LIMIT 100",
                    1, params, &ares, err);
    if (rc != PF_OK)
        goto out;
    int n = PQntuples(ares);
    if (n > 0) {
        atts = calloc((size_t)n, sizeof(*atts));
        aptrs = calloc((size_t)n, sizeof(*aptrs));
        if (atts == NULL || aptrs == NULL) {
            rc = pf_error_set(err, PF_E_RESOURCE, "out of memory for %d attempts", n);
            goto out;
        }
    }
    for (int i = 0; i < n && rc == PF_OK; i++) {
        struct row r = {ares, i, PF_OK, err};
        Printfarm__V1__Attempt *a = &atts[i].a;
        printfarm__v1__attempt__init(a);
        printfarm__v1__digest__init(&atts[i].file);
        a->id = col_text(&r, 0);
        a->job_id = col_text(&r, 1);
        a->printer_id = col_text(&r, 2);
        a->state = state_parse(attempt_states, N_ATTEMPT_STATES, col_text(&r, 3));
        a->profile = col_text(&r, 4);
        atts[i].file.sha256 = col_text(&r, 5);
        a->file = &atts[i].file;
        a->progress = strtof(col_text(&r, 6), NULL);
        a->reason = col_text(&r, 7);
        a->epoch = (uint64_t)col_int(&r, 8);
        a->dispatched_unix_ms = col_int(&r, 9);
        a->started_unix_ms = col_int(&r, 10);
        a->ended_unix_ms = col_int(&r, 11);
        aptrs[i] = a;
        rc = r.rc;
    }
    if (rc != PF_OK)
        goto out;
    rc = job_list_load(conn, jres, 1, &l, err);
    if (rc != PF_OK)
        goto out;
    resp.job = l.ptrs[0];
    resp.n_attempts = (size_t)n;
    resp.attempts = aptrs;
    pf_rpc_call_reply(call, &resp.base);
    job_list_release(&l);
out:
    free(atts);
    free(aptrs);
    PQclear(ares);
    PQclear(jres);
    return rc;
}

static void get_job_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    Printfarm__V1__GetJobRequest *req;
    struct pf_error err;

    if (!decode(call, data, len, &printfarm__v1__get_job_request__descriptor,
                (ProtobufCMessage **)&req, "GetJob"))
        return;
    void *arg[2] = {call, req};
    if (pf_sched_with_db(s, get_job_db, arg, &err) != PF_OK)
        fail(call, "GetJob", &err);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void get_job_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    start(call, data, len, &printfarm__v1__get_job_request__descriptor, check_get_job, get_job_work,
          "GetJob");
}

/* ---- ListJobs ---- */

static uint64_t list_jobs_filter(const Printfarm__V1__ListJobsRequest *req)
{
    return pf_sched_page_filter("jobs", req->queue,
                                pf_sched_state_mask((const int *)req->states, req->n_states));
}

static enum pf_status check_list_jobs(const ProtobufCMessage *msg, struct pf_error *err)
{
    const Printfarm__V1__ListJobsRequest *req = (const Printfarm__V1__ListJobsRequest *)msg;
    struct pf_sched_page_key key;

    if (pf_sched_check_list_jobs(req, err) != PF_OK)
        return err->code;
    if (req->page_token != NULL && req->page_token[0] != '\0')
        return pf_sched_page_token_decode(req->page_token, list_jobs_filter(req), &key, err);
    return PF_OK;
}

static enum pf_status list_jobs_db(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                   struct pf_error *err)
{
    struct pf_rpc_call *call = ((void **)arg)[0];
    const Printfarm__V1__ListJobsRequest *req = ((void **)arg)[1];
    Printfarm__V1__ListJobsResponse resp = PRINTFARM__V1__LIST_JOBS_RESPONSE__INIT;
    uint64_t filter = list_jobs_filter(req);
    struct pf_sched_page_key key = {0};
    char states[128] = "", after_us[24], limit[16], token[PF_SCHED_PAGE_TOKEN_MAX];
    bool has_key = req->page_token != NULL && req->page_token[0] != '\0';
    uint32_t size;
    struct job_list l;
    PGresult *res;
    enum pf_status rc;

    if (pf_sched_page_size(req->page_size, &size, err) != PF_OK)
        return err->code;
    if (has_key && pf_sched_page_token_decode(req->page_token, filter, &key, err) != PF_OK)
        return err->code;
    for (size_t i = 0; i < req->n_states; i++) {
        size_t o = strlen(states);
        snprintf(states + o, sizeof(states) - o, "%s%s", o > 0 ? "," : "",
                 job_state_text(req->states[i]));
    }
    snprintf(after_us, sizeof(after_us), "%" PRId64, key.time_us);
    snprintf(limit, sizeof(limit), "%u", size + 1);
    const char *params[5] = {req->queue != NULL ? req->queue : "", states,
                             has_key ? after_us : NULL, has_key ? key.id : NULL, limit};
    rc = pf_pg_exec(conn,
                    "SELECT " JOB_COLUMNS " FROM jobs j "
                    "WHERE ($1 = '' OR j.queue = $1) "
                    "AND ($2 = '' OR j.state = ANY(string_to_array($2, ','))) "
                    "AND ($3::bigint IS NULL OR (j.created_at, j.id) < "
                    "(timestamptz 'epoch' + $3::bigint * interval '1 microsecond', $4::text)) "
                    "ORDER BY j.created_at DESC, j.id DESC LIMIT $5::int",
                    5, params, &res, err);
    if (rc != PF_OK)
        return rc;
    size_t rows = (size_t)PQntuples(res);
    size_t n = rows > size ? size : rows;
    rc = job_list_load(conn, res, n, &l, err);
    if (rc == PF_OK) {
        if (rows > size) {
            struct pf_sched_page_key next = {0};
            struct row r = {res, (int)n - 1, PF_OK, err};
            next.time_us = col_int(&r, JC_CREATED_US);
            snprintf(next.id, sizeof(next.id), "%s", col_text(&r, JC_ID));
            rc = r.rc;
            pf_sched_page_token_encode(filter, &next, token);
            resp.next_page_token = token;
        }
        if (rc == PF_OK) {
            resp.n_jobs = l.n;
            resp.jobs = l.ptrs;
            pf_rpc_call_reply(call, &resp.base);
        }
        job_list_release(&l);
    }
    PQclear(res);
    return rc;
}

static void list_jobs_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    Printfarm__V1__ListJobsRequest *req;
    struct pf_error err;

    if (!decode(call, data, len, &printfarm__v1__list_jobs_request__descriptor,
                (ProtobufCMessage **)&req, "ListJobs"))
        return;
    void *arg[2] = {call, req};
    if (pf_sched_with_db(s, list_jobs_db, arg, &err) != PF_OK)
        fail(call, "ListJobs", &err);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void list_jobs_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    start(call, data, len, &printfarm__v1__list_jobs_request__descriptor, check_list_jobs,
          list_jobs_work, "ListJobs");
}

/* ---- UpdateJob ---- */

static enum pf_status check_update_job(const ProtobufCMessage *req, struct pf_error *err)
{
    return pf_sched_check_update_job((const Printfarm__V1__UpdateJobRequest *)req, err);
}

struct update_job {
    struct pf_rpc_call *call;
    const Printfarm__V1__UpdateJobRequest *req;
    PGresult *cur; /* the row before (FOR UPDATE) */
    PGresult *res; /* the row after; NULL when nothing changed */
    bool kick;
};

static enum pf_status update_job_tx(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                    struct pf_error *err)
{
    struct update_job *u = arg;
    const Printfarm__V1__UpdateJobRequest *req = u->req;
    struct pf_rpc_call *call = u->call;
    char text[TEXT_MAX], prio[16], count[16], reason[PF_SCHED_REASON_MAX + 1];
    char qn[PF_SCHED_JOB_NAME_MAX + 8];
    bool set_prio =
        req->set_priority_case == PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_PRIORITY_PRIORITY;
    bool set_count = req->set_count_case == PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_COUNT_COUNT;
    bool set_hold = req->set_hold_case == PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_HOLD_HOLD;
    bool set_name = req->set_name_case == PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_NAME_NAME;
    enum pf_status rc;

    PQclear(u->cur);
    PQclear(u->res);
    u->cur = u->res = NULL;
    u->kick = false;
    rc = select_job(conn, req->id, true, &u->cur, err);
    if (rc != PF_OK)
        return rc;

    struct row r = {u->cur, 0, PF_OK, err};
    Printfarm__V1__JobState state = state_parse(job_states, N_JOB_STATES, col_text(&r, JC_STATE));
    int64_t old_count = col_int(&r, JC_COUNT), old_prio = col_int(&r, JC_PRIORITY);
    int64_t succeeded = col_int(&r, JC_SUCCEEDED), in_progress = col_int(&r, JC_IN_PROGRESS);
    const char *old_name = col_text(&r, JC_NAME), *old_reason = col_text(&r, JC_REASON);
    if (r.rc != PF_OK)
        return r.rc;
    if (pf_sched_job_state_finished(state))
        return pf_error_set(err, PF_E_PRECONDITION,
                            "job '%s' is %s: a finished job cannot be changed", req->id,
                            job_state_text(state));
    if (set_count &&
        pf_sched_check_new_count(req->id, req->count, succeeded, in_progress, err) != PF_OK)
        return err->code;
    int64_t new_count = set_count ? (int64_t)req->count : old_count;
    int64_t new_prio = set_prio ? (int64_t)req->priority : old_prio;
    const char *new_name = set_name ? req->name : old_name;
    bool was_held = state == PRINTFARM__V1__JOB_STATE__JOB_STATE_HELD;
    bool held = set_hold ? (bool)req->hold : was_held;
    Printfarm__V1__JobState new_state =
        pf_sched_job_state_after(state, held, new_count, succeeded, in_progress);
    bool fields_changed =
        new_count != old_count || new_prio != old_prio || strcmp(new_name, old_name) != 0;
    if (!fields_changed && new_state == state)
        return PF_OK; /* a repeated call: the job stays as it is */

    if (new_state == PRINTFARM__V1__JOB_STATE__JOB_STATE_HELD)
        snprintf(reason, sizeof(reason), was_held ? "%s" : "held by %s",
                 was_held ? old_reason : who(call));
    else
        reason[0] = '\0';
    snprintf(prio, sizeof(prio), "%" PRId64, new_prio);
    snprintf(count, sizeof(count), "%" PRId64, new_count);
    const char *params[6] = {req->id, prio, count, new_name, job_state_text(new_state), reason};
    rc = pf_pg_exec(conn,
                    "UPDATE jobs AS j SET priority = $2::int, count = $3::int, name = $4, "
                    "state = $5, state_reason = $6, updated_at = clock_timestamp() "
                    "WHERE j.id = $1 RETURNING " JOB_COLUMNS,
                    6, params, &u->res, err);
    if (rc != PF_OK)
        return rc;
    if (fields_changed) {
        snprintf(text, sizeof(text), "job %s updated by %s: priority %" PRId64 ", count %" PRId64,
                 pf_log_quote(new_name, qn, sizeof(qn)), who(call), new_prio, new_count);
        rc = add_job_event(conn, PRINTFARM__V1__EVENT_KIND__EVENT_KIND_JOB_UPDATED, req->id,
                           new_state, text, err);
        if (rc != PF_OK)
            return rc;
    }
    /* A state change gets its own event; queued <-> printing only follows a
     * count change, which the update event above already records. */
    if (new_state != state) {
        Printfarm__V1__EventKind kind = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_UNSPECIFIED;
        const char *verb = "";
        if (new_state == PRINTFARM__V1__JOB_STATE__JOB_STATE_HELD) {
            kind = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_JOB_HELD;
            verb = "held";
        } else if (new_state == PRINTFARM__V1__JOB_STATE__JOB_STATE_DONE) {
            kind = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_JOB_DONE;
            verb = "done (count lowered to the copies printed)";
        } else if (was_held) {
            kind = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_JOB_RELEASED;
            verb = "released";
        }
        if (kind != PRINTFARM__V1__EVENT_KIND__EVENT_KIND_UNSPECIFIED) {
            snprintf(text, sizeof(text), "job %s %s by %s", req->id, verb, who(call));
            rc = add_job_event(conn, kind, req->id, new_state, text, err);
            if (rc != PF_OK)
                return rc;
        }
    }
    u->kick = new_state == PRINTFARM__V1__JOB_STATE__JOB_STATE_QUEUED &&
              (was_held || new_prio != old_prio || new_count > old_count);
    return PF_OK;
}

static enum pf_status update_job_db(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                    struct pf_error *err)
{
    struct update_job *u = arg;
    Printfarm__V1__UpdateJobResponse resp = PRINTFARM__V1__UPDATE_JOB_RESPONSE__INIT;
    enum pf_status rc = pf_sched_fenced(s, conn, update_job_tx, u, err);

    if (rc == PF_OK) {
        if (u->res != NULL)
            pf_log_info("job_updated", "job=%s state=%s priority=%s count=%s by=%s", u->req->id,
                        PQgetvalue(u->res, 0, JC_STATE), PQgetvalue(u->res, 0, JC_PRIORITY),
                        PQgetvalue(u->res, 0, JC_COUNT), log_who(u->call));
        if (u->kick)
            pf_sched_dispatch_kick(s);
        rc = reply_one_job(u->call, conn, u->res != NULL ? u->res : u->cur, &resp.base, &resp.job,
                           err);
    }
    PQclear(u->cur);
    PQclear(u->res);
    u->cur = u->res = NULL;
    return rc;
}

static void update_job_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    Printfarm__V1__UpdateJobRequest *req;
    struct pf_error err;

    if (!decode(call, data, len, &printfarm__v1__update_job_request__descriptor,
                (ProtobufCMessage **)&req, "UpdateJob"))
        return;
    struct update_job u = {.call = call, .req = req};
    if (pf_sched_with_db(s, update_job_db, &u, &err) != PF_OK)
        fail(call, "UpdateJob", &err);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void update_job_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    start(call, data, len, &printfarm__v1__update_job_request__descriptor, check_update_job,
          update_job_work, "UpdateJob");
}

/* ---- CancelJob ---- */

struct cancel_job {
    struct pf_rpc_call *call;
    const Printfarm__V1__CancelJobRequest *req;
    char reason[PF_SCHED_REASON_MAX + 1];
    PGresult *cur, *res; /* before; after (NULL when it was cancelled already) */
    /* Attempts to stop on their printers once the transaction committed. */
    size_t n_stop;
    char (*stop_attempt)[PF_SCHED_ID_MAX];
    char (*stop_printer)[PF_SCHED_ID_MAX];
};

static enum pf_status check_cancel_job(const ProtobufCMessage *req, struct pf_error *err)
{
    return pf_sched_check_cancel_job((const Printfarm__V1__CancelJobRequest *)req, err);
}

static void cancel_job_reset(struct cancel_job *c)
{
    PQclear(c->cur);
    PQclear(c->res);
    free(c->stop_attempt);
    free(c->stop_printer);
    c->cur = c->res = NULL;
    c->stop_attempt = c->stop_printer = NULL;
    c->n_stop = 0;
}

static enum pf_status collect_active(struct pf_pg_conn *conn, struct cancel_job *c,
                                     struct pf_error *err)
{
    const char *params[1] = {c->req->id};
    PGresult *res;
    enum pf_status rc = pf_pg_exec(conn,
                                   "SELECT id, printer_id FROM attempts WHERE job_id = $1 "
                                   "AND state IN ('dispatched', 'printing') ORDER BY id",
                                   1, params, &res, err);
    if (rc != PF_OK)
        return rc;
    size_t n = (size_t)PQntuples(res);
    if (n > 0) {
        c->stop_attempt = calloc(n, sizeof(*c->stop_attempt));
        c->stop_printer = calloc(n, sizeof(*c->stop_printer));
        if (c->stop_attempt == NULL || c->stop_printer == NULL) {
            PQclear(res);
            return pf_error_set(err, PF_E_RESOURCE, "out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            snprintf(c->stop_attempt[i], PF_SCHED_ID_MAX, "%s", PQgetvalue(res, (int)i, 0));
            snprintf(c->stop_printer[i], PF_SCHED_ID_MAX, "%s", PQgetvalue(res, (int)i, 1));
        }
        c->n_stop = n;
    }
    PQclear(res);
    return PF_OK;
}

static enum pf_status cancel_job_tx(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                    struct pf_error *err)
{
    struct cancel_job *c = arg;
    const Printfarm__V1__CancelJobRequest *req = c->req;
    char text[TEXT_MAX], qr[PF_SCHED_REASON_MAX + 8];
    enum pf_status rc;

    cancel_job_reset(c);
    rc = select_job(conn, req->id, true, &c->cur, err);
    if (rc != PF_OK)
        return rc;
    Printfarm__V1__JobState state =
        state_parse(job_states, N_JOB_STATES, PQgetvalue(c->cur, 0, JC_STATE));
    if (state == PRINTFARM__V1__JOB_STATE__JOB_STATE_DONE ||
        state == PRINTFARM__V1__JOB_STATE__JOB_STATE_FAILED)
        return pf_error_set(err, PF_E_PRECONDITION,
                            "job '%s' is already %s: it cannot be cancelled", req->id,
                            job_state_text(state));
    /* A repeated cancel changes nothing, but with cancel_running it asks the
     * printers again, in case the first call's CancelPrint never went out. */
    if (req->cancel_running && (rc = collect_active(conn, c, err)) != PF_OK)
        return rc;
    if (state == PRINTFARM__V1__JOB_STATE__JOB_STATE_CANCELLED)
        return PF_OK;
    const char *params[2] = {req->id, c->reason};
    rc = pf_pg_exec(conn,
                    "UPDATE jobs AS j SET state = 'cancelled', state_reason = $2, "
                    "updated_at = clock_timestamp() WHERE j.id = $1 RETURNING " JOB_COLUMNS,
                    2, params, &c->res, err);
    if (rc != PF_OK)
        return rc;
    snprintf(text, sizeof(text), "job %s cancelled by %s: %s%s", req->id, who(c->call),
             pf_log_quote(c->reason, qr, 200),
             c->n_stop > 0 ? " (stopping its running attempts)" : "");
    return add_job_event(conn, PRINTFARM__V1__EVENT_KIND__EVENT_KIND_JOB_CANCELLED, req->id,
                         PRINTFARM__V1__JOB_STATE__JOB_STATE_CANCELLED, text, err);
}

static enum pf_status cancel_job_db(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                    struct pf_error *err)
{
    struct cancel_job *c = arg;
    Printfarm__V1__CancelJobResponse resp = PRINTFARM__V1__CANCEL_JOB_RESPONSE__INIT;
    enum pf_status rc = pf_sched_fenced(s, conn, cancel_job_tx, c, err);

    if (rc == PF_OK) {
        if (c->res != NULL)
            pf_log_info("job_cancelled", "job=%s running=%zu by=%s", c->req->id, c->n_stop,
                        log_who(c->call));
        for (size_t i = 0; i < c->n_stop; i++)
            pf_sched_agents_cancel(s, c->stop_printer[i], c->stop_attempt[i], c->reason);
        rc = reply_one_job(c->call, conn, c->res != NULL ? c->res : c->cur, &resp.base, &resp.job,
                           err);
    }
    cancel_job_reset(c);
    return rc;
}

static void cancel_job_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    Printfarm__V1__CancelJobRequest *req;
    struct pf_error err;

    if (!decode(call, data, len, &printfarm__v1__cancel_job_request__descriptor,
                (ProtobufCMessage **)&req, "CancelJob"))
        return;
    struct cancel_job c = {.call = call, .req = req};
    if (req->reason != NULL && req->reason[0] != '\0')
        snprintf(c.reason, sizeof(c.reason), "%s", req->reason);
    else
        snprintf(c.reason, sizeof(c.reason), "cancelled by %s", who(call));
    if (pf_sched_with_db(s, cancel_job_db, &c, &err) != PF_OK)
        fail(call, "CancelJob", &err);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void cancel_job_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    start(call, data, len, &printfarm__v1__cancel_job_request__descriptor, check_cancel_job,
          cancel_job_work, "CancelJob");
}

/* ---- ListPrinters ---- */

static uint64_t list_printers_filter(const Printfarm__V1__ListPrintersRequest *req)
{
    return pf_sched_page_filter("printers", req->queue,
                                pf_sched_state_mask((const int *)req->states, req->n_states));
}

static enum pf_status check_list_printers(const ProtobufCMessage *msg, struct pf_error *err)
{
    const Printfarm__V1__ListPrintersRequest *req = (const Printfarm__V1__ListPrintersRequest *)msg;
    struct pf_sched_page_key key;

    if (pf_sched_check_list_printers(req, err) != PF_OK)
        return err->code;
    if (req->page_token != NULL && req->page_token[0] != '\0')
        return pf_sched_page_token_decode(req->page_token, list_printers_filter(req), &key, err);
    return PF_OK;
}

struct printer_page {
    struct printer_msg *items; /* size + 1 */
    Printfarm__V1__Printer **ptrs;
    size_t n;
    PGresult **results;
    size_t n_results;
};

static void printer_page_release(struct printer_page *pg)
{
    for (size_t i = 0; i < pg->n; i++)
        printer_msg_release(&pg->items[i]);
    for (size_t i = 0; i < pg->n_results; i++)
        PQclear(pg->results[i]);
    free(pg->items);
    free(pg->ptrs);
    free(pg->results);
}

static enum pf_status list_printers_db(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                       struct pf_error *err)
{
    struct pf_rpc_call *call = ((void **)arg)[0];
    const Printfarm__V1__ListPrintersRequest *req = ((void **)arg)[1];
    Printfarm__V1__ListPrintersResponse resp = PRINTFARM__V1__LIST_PRINTERS_RESPONSE__INIT;
    uint64_t filter = list_printers_filter(req);
    uint32_t mask = pf_sched_state_mask((const int *)req->states, req->n_states);
    struct pf_sched_page_key key = {0};
    struct printer_page pg = {0};
    char limit[16], token[PF_SCHED_PAGE_TOKEN_MAX];
    const char *after = "";
    uint32_t size;
    enum pf_status rc = PF_OK;

    if (pf_sched_page_size(req->page_size, &size, err) != PF_OK)
        return err->code;
    if (req->page_token != NULL && req->page_token[0] != '\0') {
        if (pf_sched_page_token_decode(req->page_token, filter, &key, err) != PF_OK)
            return err->code;
        after = key.id;
    }
    pg.items = calloc((size_t)size + 1, sizeof(*pg.items));
    pg.ptrs = calloc((size_t)size + 1, sizeof(*pg.ptrs));
    if (pg.items == NULL || pg.ptrs == NULL) {
        printer_page_release(&pg);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for %u printers", size);
    }
    snprintf(limit, sizeof(limit), "%d", PRINTER_BATCH);
    /* Filters on the live state cannot run in SQL: read in batches by id and
     * keep the matching ones until the page (plus one, to know whether there
     * is a next page) is full. */
    while (pg.n <= size) {
        PGresult *res, **grown;
        const char *params[2] = {after, limit};
        rc = pf_pg_exec(conn, PRINTER_SELECT "WHERE p.id > $1 ORDER BY p.id LIMIT $2::int", 2,
                        params, &res, err);
        if (rc != PF_OK)
            break;
        grown = realloc(pg.results, (pg.n_results + 1) * sizeof(*grown));
        if (grown == NULL) {
            PQclear(res);
            rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
            break;
        }
        pg.results = grown;
        pg.results[pg.n_results++] = res;
        int rows = PQntuples(res);
        for (int i = 0; i < rows && pg.n <= size; i++) {
            struct printer_msg *m = &pg.items[pg.n];
            rc = printer_from_row(s, res, i, m, err);
            if (rc != PF_OK)
                break;
            bool keep =
                (req->queue == NULL || req->queue[0] == '\0' || printer_serves(m, req->queue)) &&
                (mask == 0 || (m->p.state < 32 && (mask & (1u << m->p.state)) != 0));
            if (keep) {
                pg.ptrs[pg.n] = &m->p;
                pg.n++;
            } else {
                printer_msg_release(m);
            }
        }
        if (rc != PF_OK || rows < PRINTER_BATCH)
            break;
        after = PQgetvalue(res, rows - 1, PC_ID);
    }
    if (rc == PF_OK) {
        if (pg.n > size) {
            struct pf_sched_page_key next = {0};
            snprintf(next.id, sizeof(next.id), "%s", pg.items[size - 1].p.id);
            pf_sched_page_token_encode(filter, &next, token);
            resp.next_page_token = token;
        }
        resp.n_printers = pg.n > size ? size : pg.n;
        resp.printers = pg.ptrs;
        pf_rpc_call_reply(call, &resp.base);
    }
    printer_page_release(&pg);
    return rc;
}

static void list_printers_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    Printfarm__V1__ListPrintersRequest *req;
    struct pf_error err;

    if (!decode(call, data, len, &printfarm__v1__list_printers_request__descriptor,
                (ProtobufCMessage **)&req, "ListPrinters"))
        return;
    void *arg[2] = {call, req};
    if (pf_sched_with_db(s, list_printers_db, arg, &err) != PF_OK)
        fail(call, "ListPrinters", &err);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void list_printers_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    start(call, data, len, &printfarm__v1__list_printers_request__descriptor, check_list_printers,
          list_printers_work, "ListPrinters");
}

/* ---- UpdatePrinter ---- */

#define N_GROUPS 4
static const char *const group_names[N_GROUPS] = {"materials", "labels", "queues", "windows"};

struct update_printer {
    struct pf_rpc_call *call;
    const Printfarm__V1__UpdatePrinterRequest *req;
    char *blobs[N_GROUPS]; /* bytea parameters of the groups present, else NULL */
    char what[96];         /* the groups present, for the event and the log */
};

static enum pf_status check_update_printer(const ProtobufCMessage *req, struct pf_error *err)
{
    return pf_sched_check_update_printer((const Printfarm__V1__UpdatePrinterRequest *)req, err);
}

static enum pf_status update_printer_tx(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                        struct pf_error *err)
{
    struct update_printer *u = arg;
    const Printfarm__V1__UpdatePrinterRequest *req = u->req;
    const char *idp[1] = {req->id};
    char text[TEXT_MAX];
    PGresult *cur;
    enum pf_status rc;

    rc = pf_pg_exec(conn, "SELECT quarantined FROM printers WHERE id = $1 FOR UPDATE", 1, idp, &cur,
                    err);
    if (rc != PF_OK)
        return rc;
    bool exists = PQntuples(cur) == 1;
    bool quarantined = exists && PQgetvalue(cur, 0, 0)[0] == 't';
    PQclear(cur);
    if (!exists)
        return pf_error_set(err, PF_E_NOT_FOUND,
                            "printer '%s' does not exist (printers appear when their agent first "
                            "connects)",
                            req->id);
    if (req->release_quarantine && !quarantined)
        return pf_error_set(err, PF_E_PRECONDITION,
                            "printer '%s' is not quarantined: there is nothing to release",
                            req->id);
    const char *params[6] = {req->id,     u->blobs[0], u->blobs[1],
                             u->blobs[2], u->blobs[3], req->release_quarantine ? "true" : "false"};
    rc = pf_pg_exec(conn,
                    "UPDATE printers SET materials = coalesce($2::bytea, materials), "
                    "materials_set_by_operator = materials_set_by_operator "
                    "OR $2::bytea IS NOT NULL, "
                    "labels = coalesce($3::bytea, labels), queues = coalesce($4::bytea, queues), "
                    "windows = coalesce($5::bytea, windows), "
                    "quarantined = quarantined AND NOT $6::bool, "
                    "consecutive_failures = CASE WHEN $6::bool THEN 0 "
                    "ELSE consecutive_failures END, "
                    "state_reason = CASE WHEN $6::bool THEN '' ELSE state_reason END "
                    "WHERE id = $1",
                    6, params, NULL, err);
    /* Queues a printer serves are queues of the farm from now on. */
    for (size_t i = 0; rc == PF_OK && req->queues != NULL && i < req->queues->n_items; i++) {
        const char *qp[1] = {req->queues->items[i]->queue};
        rc = pf_pg_exec(conn, "INSERT INTO queues (name) VALUES ($1) ON CONFLICT DO NOTHING", 1, qp,
                        NULL, err);
    }
    if (rc == PF_OK && u->what[0] != '\0') {
        struct pf_sched_event ev = {.kind = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_PRINTER_UPDATED,
                                    .printer_id = req->id,
                                    .text = text};
        snprintf(text, sizeof(text), "printer %s updated by %s: %s", req->id, who(u->call),
                 u->what);
        rc = pf_sched_event_add(conn, &ev, NULL, err);
    }
    if (rc == PF_OK && req->release_quarantine) {
        struct pf_sched_event ev = {.kind = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_PRINTER_RELEASED,
                                    .printer_id = req->id,
                                    .text = text};
        snprintf(text, sizeof(text), "printer %s released from quarantine by %s", req->id,
                 who(u->call));
        rc = pf_sched_event_add(conn, &ev, NULL, err);
    }
    return rc;
}

static enum pf_status update_printer_db(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                        struct pf_error *err)
{
    struct update_printer *u = arg;
    Printfarm__V1__UpdatePrinterResponse resp = PRINTFARM__V1__UPDATE_PRINTER_RESPONSE__INIT;
    enum pf_status rc = pf_sched_fenced(s, conn, update_printer_tx, u, err);

    if (rc != PF_OK)
        return rc;
    pf_log_info("printer_updated", "printer=%s groups=\"%s\" released=%s by=%s", u->req->id,
                u->what, u->req->release_quarantine ? "true" : "false", log_who(u->call));
    pf_sched_agents_reload(s, u->req->id);
    pf_sched_dispatch_kick(s);
    return reply_printer(u->call, conn, u->req->id, &resp.base, &resp.printer, err);
}

static void update_printer_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    Printfarm__V1__UpdatePrinterRequest *req;
    struct pf_error err;

    if (!decode(call, data, len, &printfarm__v1__update_printer_request__descriptor,
                (ProtobufCMessage **)&req, "UpdatePrinter"))
        return;
    struct update_printer u = {.call = call, .req = req};
    const ProtobufCMessage *groups[N_GROUPS] = {
        req->materials != NULL ? &req->materials->base : NULL,
        req->labels != NULL ? &req->labels->base : NULL,
        req->queues != NULL ? &req->queues->base : NULL,
        req->windows != NULL ? &req->windows->base : NULL,
    };
    enum pf_status rc = PF_OK;
    for (int i = 0; i < N_GROUPS && rc == PF_OK; i++) {
        if (groups[i] == NULL)
            continue;
        u.blobs[i] = pf_sched_bytea_msg(groups[i]);
        if (u.blobs[i] == NULL)
            rc = pf_error_set(&err, PF_E_RESOURCE, "out of memory packing %s", group_names[i]);
        size_t o = strlen(u.what);
        snprintf(u.what + o, sizeof(u.what) - o, "%s%s", o > 0 ? ", " : "", group_names[i]);
    }
    if (rc == PF_OK)
        rc = pf_sched_with_db(s, update_printer_db, &u, &err);
    if (rc != PF_OK)
        fail(call, "UpdatePrinter", &err);
    for (int i = 0; i < N_GROUPS; i++)
        free(u.blobs[i]);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void update_printer_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    start(call, data, len, &printfarm__v1__update_printer_request__descriptor, check_update_printer,
          update_printer_work, "UpdatePrinter");
}

/* ---- ConfirmBedClear ---- */

struct confirm {
    struct pf_rpc_call *call;
    const Printfarm__V1__ConfirmBedClearRequest *req;
    bool cleared;  /* the bed was awaiting a clear and is clear now */
    double waited; /* seconds it was awaiting, < 0 when unknown */
    char last[PF_SCHED_ID_MAX];
};

static enum pf_status check_confirm(const ProtobufCMessage *req, struct pf_error *err)
{
    return pf_sched_check_confirm_bed_clear((const Printfarm__V1__ConfirmBedClearRequest *)req,
                                            err);
}

static enum pf_status confirm_tx(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                 struct pf_error *err)
{
    struct confirm *c = arg;
    const Printfarm__V1__ConfirmBedClearRequest *req = c->req;
    const char *params[1] = {req->printer_id};
    struct pf_sched_live live;
    char text[TEXT_MAX], active[PF_SCHED_ID_MAX];
    PGresult *cur;
    enum pf_status rc;

    c->cleared = false;
    c->waited = -1;
    c->last[0] = '\0';
    rc = pf_pg_exec(conn,
                    "SELECT p.awaiting_clear, coalesce(p.last_attempt_id, ''), "
                    "coalesce((SELECT a.id FROM attempts a WHERE a.printer_id = p.id "
                    "AND a.state IN ('dispatched', 'printing') LIMIT 1), ''), "
                    "coalesce(extract(epoch FROM clock_timestamp() - p.awaiting_clear_since)"
                    "::float8, -1) FROM printers p WHERE p.id = $1 FOR UPDATE",
                    1, params, &cur, err);
    if (rc != PF_OK)
        return rc;
    if (PQntuples(cur) == 0) {
        PQclear(cur);
        return pf_error_set(err, PF_E_NOT_FOUND, "printer '%s' does not exist", req->printer_id);
    }
    bool awaiting = PQgetvalue(cur, 0, 0)[0] == 't';
    snprintf(c->last, sizeof(c->last), "%s", PQgetvalue(cur, 0, 1));
    snprintf(active, sizeof(active), "%s", PQgetvalue(cur, 0, 2));
    c->waited = strtod(PQgetvalue(cur, 0, 3), NULL);
    PQclear(cur);

    if (active[0] != '\0')
        return pf_error_set(err, PF_E_PRECONDITION,
                            "printer '%s' is printing attempt %s: its bed can be cleared once "
                            "the print ends",
                            req->printer_id, active);
    memset(&live, 0, sizeof(live));
    if (pf_sched_agents_live(s, req->printer_id, &live) && live.connected &&
        (live.state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING ||
         live.state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PAUSED))
        return pf_error_set(
            err, PF_E_PRECONDITION,
            "printer '%s' is %s: its bed can be cleared once the print ends", req->printer_id,
            live.state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PAUSED ? "paused"
                                                                             : "printing");
    if (req->attempt_id != NULL && req->attempt_id[0] != '\0' &&
        strcmp(req->attempt_id, c->last) != 0)
        return pf_error_set(err, PF_E_PRECONDITION,
                            "attempt_id '%s' is not the last finished attempt of printer '%s' "
                            "(%s): look at the printer again",
                            req->attempt_id, req->printer_id,
                            c->last[0] != '\0' ? c->last : "it has none");
    if (!awaiting)
        return PF_OK; /* already clear: nothing changes (a retry, or a second operator) */
    rc = pf_pg_exec(conn,
                    "UPDATE printers SET awaiting_clear = false, awaiting_clear_since = NULL "
                    "WHERE id = $1",
                    1, params, NULL, err);
    if (rc != PF_OK)
        return rc;
    struct pf_sched_event ev = {
        .kind = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_BED_CLEARED,
        .printer_id = req->printer_id,
        .attempt_id = c->last[0] != '\0' ? c->last : NULL,
        .printer_state = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE,
        .text = text,
    };
    snprintf(text, sizeof(text), "bed of printer %s cleared by %s%s%s", req->printer_id,
             who(c->call), c->last[0] != '\0' ? " after attempt " : "", c->last);
    rc = pf_sched_event_add(conn, &ev, NULL, err);
    c->cleared = rc == PF_OK;
    return rc;
}

static enum pf_status confirm_db(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                 struct pf_error *err)
{
    struct confirm *c = arg;
    Printfarm__V1__ConfirmBedClearResponse resp = PRINTFARM__V1__CONFIRM_BED_CLEAR_RESPONSE__INIT;
    enum pf_status rc = pf_sched_fenced(s, conn, confirm_tx, c, err);

    if (rc != PF_OK)
        return rc;
    if (c->cleared) {
        pf_log_info("bed_cleared", "printer=%s attempt=%s auto=false by=%s", c->req->printer_id,
                    c->last[0] != '\0' ? c->last : "-", log_who(c->call));
        if (s->metrics != NULL && c->waited >= 0)
            pf_metric_observe(
                pf_metrics_histogram(s->metrics, "printfarm_scheduler_awaiting_clear_seconds",
                                     "time printers spent awaiting a bed clear", NULL, NULL, 0),
                NULL, c->waited);
        pf_sched_agents_reload(s, c->req->printer_id);
        pf_sched_dispatch_kick(s);
    }
    return reply_printer(c->call, conn, c->req->printer_id, &resp.base, &resp.printer, err);
}

static void confirm_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_sched *s = pf_rpc_call_ctx(call);
    Printfarm__V1__ConfirmBedClearRequest *req;
    struct pf_error err;

    if (!decode(call, data, len, &printfarm__v1__confirm_bed_clear_request__descriptor,
                (ProtobufCMessage **)&req, "ConfirmBedClear"))
        return;
    struct confirm c = {.call = call, .req = req};
    if (pf_sched_with_db(s, confirm_db, &c, &err) != PF_OK)
        fail(call, "ConfirmBedClear", &err);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void confirm_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    start(call, data, len, &printfarm__v1__confirm_bed_clear_request__descriptor, check_confirm,
          confirm_work, "ConfirmBedClear");
}

/* ---- registration ---- */

enum pf_status pf_sched_api_register(struct pf_sched *s, struct pf_error *err)
{
    const struct pf_rpc_method methods[] = {
        {.path = "/printfarm.v1.Scheduler/SubmitJob",
         .roles = WRITE_ROLES,
         .on_start = submit_start},
        {.path = "/printfarm.v1.Scheduler/GetJob", .roles = READ_ROLES, .on_start = get_job_start},
        {.path = "/printfarm.v1.Scheduler/ListJobs",
         .roles = READ_ROLES,
         .on_start = list_jobs_start},
        {.path = "/printfarm.v1.Scheduler/UpdateJob",
         .roles = WRITE_ROLES,
         .on_start = update_job_start},
        {.path = "/printfarm.v1.Scheduler/CancelJob",
         .roles = WRITE_ROLES,
         .on_start = cancel_job_start},
        {.path = "/printfarm.v1.Scheduler/ListPrinters",
         .roles = READ_ROLES,
         .on_start = list_printers_start},
        {.path = "/printfarm.v1.Scheduler/UpdatePrinter",
         .roles = WRITE_ROLES,
         .on_start = update_printer_start},
        {.path = "/printfarm.v1.Scheduler/ConfirmBedClear",
         .roles = WRITE_ROLES,
         .on_start = confirm_start},
    };
    struct pf_rpc_method all[sizeof(methods) / sizeof(methods[0])];

    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        all[i] = methods[i];
        all[i].kind = PF_RPC_UNARY;
        all[i].ctx = s;
    }
    return pf_rpc_server_add(s->rpc, all, sizeof(all) / sizeof(all[0]), err);
}
