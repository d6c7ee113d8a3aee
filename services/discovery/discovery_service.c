/* printfarm.v1.Discovery handlers. Unary methods run on the worker queue with
 * a pooled registry connection; Watch hands its start to a worker and then
 * lives on the replica's event feed (feed.c). Authorization by role is the
 * one described in discovery_service.proto. */
#include "discovery_service.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "rpc/auth.h"
#include "rpc/pb.h"

#define KIND_AGENT     PRINTFARM__V1__INSTANCE_KIND__INSTANCE_KIND_AGENT
#define KIND_WEB       PRINTFARM__V1__INSTANCE_KIND__INSTANCE_KIND_WEB
#define KIND_SCHEDULER PRINTFARM__V1__INSTANCE_KIND__INSTANCE_KIND_SCHEDULER
#define HEALTH(x)      PRINTFARM__V1__INSTANCE_HEALTH__INSTANCE_HEALTH_##x

#define HB_QUEUE_MAX 65536

struct hb_item {
    struct pf_rpc_call *call; /* referenced while queued */
    struct pf_heartbeat hb;
};

struct pf_disc_service {
    struct pf_registry *registry;
    struct pf_disc_feed *feed;
    struct pf_workq *wq;
    pthread_mutex_t hb_mu;
    struct hb_item *hb_queue; /* under hb_mu */
    size_t hb_len, hb_cap;    /* under hb_mu */
    bool hb_draining;         /* under hb_mu: a drain job is queued or running */
    struct pf_metric *m_errors, *m_registrations, *m_heartbeats, *m_deregistrations;
};

struct pf_disc_service *pf_disc_service_create(struct pf_registry *registry,
                                               struct pf_disc_feed *feed, struct pf_workq *wq,
                                               struct pf_metrics *metrics)
{
    struct pf_disc_service *svc = calloc(1, sizeof(*svc));
    if (svc == NULL)
        return NULL;
    svc->registry = registry;
    svc->feed = feed;
    svc->wq = wq;
    pthread_mutex_init(&svc->hb_mu, NULL);
    svc->m_errors =
        pf_metrics_counter(metrics, "printfarm_discovery_errors_total",
                           "Discovery calls that failed, by method and status code", "method,code");
    svc->m_registrations = pf_metrics_counter(metrics, "printfarm_discovery_registrations_total",
                                              "successful Register calls", NULL);
    svc->m_heartbeats = pf_metrics_counter(metrics, "printfarm_discovery_heartbeats_total",
                                           "successful Heartbeat calls", NULL);
    svc->m_deregistrations = pf_metrics_counter(
        metrics, "printfarm_discovery_deregistrations_total", "Deregister calls", NULL);
    return svc;
}

void pf_disc_service_destroy(struct pf_disc_service *svc)
{
    if (svc == NULL)
        return;
    /* The workers are gone (pf_workq_destroy ran every drain job). */
    free(svc->hb_queue);
    pthread_mutex_destroy(&svc->hb_mu);
    free(svc);
}

/* Finishes a failed call; Redis being away reads as the registry being away. */
static void fail(struct pf_rpc_call *call, const char *method, const struct pf_error *err)
{
    struct pf_disc_service *svc = pf_rpc_call_ctx(call);
    const char *labels[2] = {method, pf_rpc_code_name(pf_rpc_code_from_status(err->code))};
    char msg[PF_ERROR_MSG_MAX + 64];

    if (pf_rpc_call_done(call))
        return;
    pf_metric_add(svc->m_errors, labels, 1);
    if (err->code == PF_E_UNAVAILABLE)
        snprintf(msg, sizeof(msg), "discovery registry is unavailable: %s", err->msg);
    else
        snprintf(msg, sizeof(msg), "%s", err->msg);
    pf_rpc_call_finish(call, err->code, msg);
}

static const char *health_name(int h)
{
    switch (h) {
    case HEALTH(SERVING):
        return "SERVING";
    case HEALTH(NOT_SERVING):
        return "NOT_SERVING";
    case HEALTH(UNREACHABLE):
        return "UNREACHABLE";
    default:
        return "UNKNOWN";
    }
}

/* May the caller write the entry kind/id (Register, Heartbeat, Deregister)? */
static enum pf_status may_write(struct pf_rpc_call *call, int kind, const char *id,
                                struct pf_error *err)
{
    enum pf_role role = pf_rpc_call_role(call);
    const char *name = pf_rpc_call_principal(call);

    switch (role) {
    case PF_ROLE_NONE: /* tokens off */
    case PF_ROLE_ADMIN:
        return PF_OK;
    case PF_ROLE_OPERATOR:
        if (kind == KIND_AGENT || kind == KIND_WEB)
            return PF_OK;
        return pf_error_set(err, PF_E_PERMISSION,
                            "operator token '%s' may register agent and web instances only, not "
                            "%s",
                            name, pf_disc_kind_name(kind));
    case PF_ROLE_AGENT:
        if (kind == KIND_AGENT && strcmp(id, name) == 0)
            return PF_OK;
        return pf_error_set(err, PF_E_PERMISSION,
                            "agent token '%s' may register only agent '%s', not %s '%s'", name,
                            name, pf_disc_kind_name(kind), id);
    default:
        return pf_error_set(err, PF_E_PERMISSION, "this token may not register instances");
    }
}

/* Checks the lease id and that the caller may use it; member gets its entry. */
static enum pf_status lease_for_write(struct pf_rpc_call *call, const char *lease, char *member,
                                      size_t member_size, struct pf_error *err)
{
    char id[PF_DISC_ID_MAX + 1];
    int kind = 0;
    enum pf_status rc = pf_disc_lease_parse(lease, member, member_size, err);
    if (rc != PF_OK)
        return rc;
    if (!pf_disc_member_parse(member, strlen(member), &kind, id, sizeof(id)))
        return pf_error_set(err, PF_E_INVALID, "lease_id is malformed");
    return may_write(call, kind, id, err);
}

/* ---- Register, Heartbeat, Deregister ---- */

static void register_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_disc_service *svc = pf_rpc_call_ctx(call);
    Printfarm__V1__RegisterRequest *req;
    Printfarm__V1__RegisterResponse resp = PRINTFARM__V1__REGISTER_RESPONSE__INIT;
    struct pf_registry_conn *conn;
    enum pf_disc_probe_mode mode;
    char lease[PF_DISC_LEASE_MAX];
    struct pf_error err;
    int64_t expires = 0;
    uint32_t ttl = 0;

    if (pf_pb_unpack(&printfarm__v1__register_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK) {
        fail(call, "Register", &err);
        return;
    }
    if (pf_disc_validate_instance(req->instance, &mode, &err) != PF_OK ||
        pf_disc_ttl(req->ttl_seconds, &ttl, &err) != PF_OK ||
        may_write(call, (int)req->instance->kind, req->instance->id, &err) != PF_OK)
        goto out_fail;
    conn = pf_registry_conn_get(svc->registry);
    enum pf_status rc =
        pf_registry_register(conn, req->instance, mode, (int64_t)ttl * 1000, lease, &expires, &err);
    pf_registry_conn_put(conn);
    if (rc != PF_OK)
        goto out_fail;
    pf_metric_add(svc->m_registrations, NULL, 1);
    pf_log_debug("instance_registered", "kind=%s id=%s address=%s ttl_s=%u",
                 pf_disc_kind_name((int)req->instance->kind), req->instance->id,
                 req->instance->address, ttl);
    resp.lease_id = lease;
    resp.ttl_seconds = ttl;
    resp.heartbeat_interval_seconds = ttl >= 3 ? ttl / 3 : 1;
    pf_rpc_call_reply(call, &resp.base);
    printfarm__v1__register_request__free_unpacked(req, NULL);
    return;
out_fail:
    printfarm__v1__register_request__free_unpacked(req, NULL);
    fail(call, "Register", &err);
}

/* Heartbeats are parsed and checked on the completion-queue thread (no I/O),
 * then queued; one worker job at a time drains the queue in batches of up to
 * PF_REGISTRY_HEARTBEAT_BATCH, one script call per batch. Under load the
 * queue fills while a batch is in Redis, so each round trip serves many
 * heartbeats and workers are woken once per batch, not once per call. */

static void heartbeat_reply(struct pf_rpc_call *call, const struct pf_heartbeat *hb)
{
    struct pf_disc_service *svc = pf_rpc_call_ctx(call);
    Printfarm__V1__HeartbeatResponse resp = PRINTFARM__V1__HEARTBEAT_RESPONSE__INIT;
    struct pf_error err;
    if (!hb->current) {
        pf_registry_lease_gone(hb->lease, &err);
        fail(call, "Heartbeat", &err);
        return;
    }
    pf_metric_add(svc->m_heartbeats, NULL, 1);
    resp.ttl_seconds = (uint32_t)(hb->ttl_ms / 1000);
    resp.expires_unix_ms = hb->expires_ms;
    pf_rpc_call_reply(call, &resp.base);
}

static void heartbeat_drain(void *arg)
{
    struct pf_disc_service *svc = arg;
    struct pf_heartbeat *items = malloc(PF_REGISTRY_HEARTBEAT_BATCH * sizeof(*items));
    struct pf_rpc_call **calls = malloc(PF_REGISTRY_HEARTBEAT_BATCH * sizeof(*calls));

    for (;;) {
        struct pf_registry_conn *conn;
        struct pf_error err;
        size_t n;
        enum pf_status rc;

        pthread_mutex_lock(&svc->hb_mu);
        if (svc->hb_len == 0) {
            svc->hb_draining = false;
            pthread_mutex_unlock(&svc->hb_mu);
            break;
        }
        if (items == NULL || calls == NULL) {
            /* Out of memory: fail what is queued rather than lose it. */
            struct hb_item *q = svc->hb_queue;
            size_t len = svc->hb_len;
            svc->hb_queue = NULL;
            svc->hb_len = svc->hb_cap = 0;
            svc->hb_draining = false;
            pthread_mutex_unlock(&svc->hb_mu);
            for (size_t i = 0; i < len; i++) {
                pf_rpc_call_finish(q[i].call, PF_E_RESOURCE, "out of memory");
                pf_rpc_call_unref(q[i].call);
            }
            free(q);
            break;
        }
        n = svc->hb_len < PF_REGISTRY_HEARTBEAT_BATCH ? svc->hb_len : PF_REGISTRY_HEARTBEAT_BATCH;
        for (size_t i = 0; i < n; i++) {
            calls[i] = svc->hb_queue[i].call;
            items[i] = svc->hb_queue[i].hb;
        }
        memmove(svc->hb_queue, svc->hb_queue + n, (svc->hb_len - n) * sizeof(*svc->hb_queue));
        svc->hb_len -= n;
        pthread_mutex_unlock(&svc->hb_mu);

        conn = pf_registry_conn_get(svc->registry);
        rc = pf_registry_heartbeat_many(conn, items, n, &err);
        pf_registry_conn_put(conn);
        for (size_t i = 0; i < n; i++) {
            if (rc == PF_OK)
                heartbeat_reply(calls[i], &items[i]);
            else
                fail(calls[i], "Heartbeat", &err);
            pf_rpc_call_unref(calls[i]);
        }
    }
    free(items);
    free(calls);
}

static void heartbeat_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_disc_service *svc = pf_rpc_call_ctx(call);
    Printfarm__V1__HeartbeatRequest *req;
    struct hb_item item;
    struct pf_error err;
    bool submit = false;
    enum pf_status rc;

    if (pf_pb_unpack(&printfarm__v1__heartbeat_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK) {
        fail(call, "Heartbeat", &err);
        return;
    }
    memset(&item, 0, sizeof(item));
    rc = lease_for_write(call, req->lease_id, item.hb.member, sizeof(item.hb.member), &err);
    if (rc == PF_OK)
        memcpy(item.hb.lease, req->lease_id, strlen(req->lease_id) + 1); /* parse checked it */
    printfarm__v1__heartbeat_request__free_unpacked(req, NULL);
    if (rc != PF_OK) {
        fail(call, "Heartbeat", &err);
        return;
    }
    item.call = call;
    pthread_mutex_lock(&svc->hb_mu);
    if (svc->hb_len == svc->hb_cap) {
        size_t cap = svc->hb_cap == 0 ? 256 : svc->hb_cap * 2;
        struct hb_item *grown =
            cap <= HB_QUEUE_MAX ? realloc(svc->hb_queue, cap * sizeof(*grown)) : NULL;
        if (grown == NULL) {
            pthread_mutex_unlock(&svc->hb_mu);
            pf_rpc_call_finish(call, PF_E_RESOURCE,
                               "too many heartbeats waiting for redis: retry shortly");
            return;
        }
        svc->hb_queue = grown;
        svc->hb_cap = cap;
    }
    pf_rpc_call_ref(call);
    svc->hb_queue[svc->hb_len++] = item;
    if (!svc->hb_draining) {
        svc->hb_draining = true;
        submit = true;
    }
    pthread_mutex_unlock(&svc->hb_mu);
    if (submit && pf_workq_submit(svc->wq, heartbeat_drain, svc) != PF_OK) {
        /* The queue of worker jobs is full or shutting down: fail the batch. */
        pthread_mutex_lock(&svc->hb_mu);
        struct hb_item *q = svc->hb_queue;
        size_t n = svc->hb_len;
        svc->hb_queue = NULL;
        svc->hb_len = svc->hb_cap = 0;
        svc->hb_draining = false;
        pthread_mutex_unlock(&svc->hb_mu);
        for (size_t i = 0; i < n; i++) {
            pf_rpc_call_finish(q[i].call, PF_E_UNAVAILABLE, "discovery is overloaded or stopping");
            pf_rpc_call_unref(q[i].call);
        }
        free(q);
    }
}

static void deregister_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_disc_service *svc = pf_rpc_call_ctx(call);
    Printfarm__V1__DeregisterRequest *req;
    Printfarm__V1__DeregisterResponse resp = PRINTFARM__V1__DEREGISTER_RESPONSE__INIT;
    struct pf_registry_conn *conn;
    char member[PF_DISC_MEMBER_MAX];
    struct pf_error err;
    bool removed = false;
    enum pf_status rc;

    if (pf_pb_unpack(&printfarm__v1__deregister_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK) {
        fail(call, "Deregister", &err);
        return;
    }
    rc = lease_for_write(call, req->lease_id, member, sizeof(member), &err);
    if (rc == PF_OK) {
        conn = pf_registry_conn_get(svc->registry);
        rc = pf_registry_deregister(conn, member, req->lease_id, &removed, &err);
        pf_registry_conn_put(conn);
    }
    printfarm__v1__deregister_request__free_unpacked(req, NULL);
    if (rc != PF_OK) {
        fail(call, "Deregister", &err);
        return;
    }
    pf_metric_add(svc->m_deregistrations, NULL, 1);
    if (removed)
        pf_log_debug("instance_deregistered", "member=%s", member);
    pf_rpc_call_reply(call, &resp.base);
}

/* ---- List ---- */

static enum pf_status check_kind(int kind, const char *field, struct pf_error *err)
{
    if (kind != 0 && pf_disc_kind_name(kind) == NULL)
        return pf_error_set(err, PF_E_INVALID, "%s %d is not a known InstanceKind", field, kind);
    return PF_OK;
}

static void list_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_disc_service *svc = pf_rpc_call_ctx(call);
    Printfarm__V1__ListInstancesRequest *req;
    Printfarm__V1__ListInstancesResponse resp = PRINTFARM__V1__LIST_INSTANCES_RESPONSE__INIT;
    struct pf_registry_snapshot snap;
    struct pf_registry_conn *conn;
    struct pf_error err;
    enum pf_status rc;

    if (pf_pb_unpack(&printfarm__v1__list_instances_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK) {
        fail(call, "List", &err);
        return;
    }
    if (check_kind((int)req->kind, "kind", &err) != PF_OK ||
        pf_disc_validate_filter(req->labels, req->n_labels, &err) != PF_OK) {
        printfarm__v1__list_instances_request__free_unpacked(req, NULL);
        fail(call, "List", &err);
        return;
    }
    conn = pf_registry_conn_get(svc->registry);
    rc = pf_registry_snapshot(conn, (int)req->kind, &snap, &err);
    pf_registry_conn_put(conn);
    if (rc != PF_OK) {
        printfarm__v1__list_instances_request__free_unpacked(req, NULL);
        fail(call, "List", &err);
        return;
    }
    resp.instances = snap.items;
    for (size_t i = 0; i < snap.count; i++) {
        if (pf_disc_labels_match(snap.items[i]->instance, req->labels, req->n_labels))
            resp.instances[resp.n_instances++] = snap.items[i];
        else
            pf_registry_status_free(snap.items[i]);
    }
    snap.count = resp.n_instances; /* the kept ones are compacted at the front */
    pf_rpc_call_reply(call, &resp.base);
    pf_registry_snapshot_release(&snap);
    printfarm__v1__list_instances_request__free_unpacked(req, NULL);
}

/* ---- Resolve ---- */

static int resolve_cmp(const void *a, const void *b)
{
    const Printfarm__V1__InstanceStatus *x = *(Printfarm__V1__InstanceStatus *const *)a;
    const Printfarm__V1__InstanceStatus *y = *(Printfarm__V1__InstanceStatus *const *)b;
    int rx = pf_disc_health_rank((int)x->health), ry = pf_disc_health_rank((int)y->health);
    if (rx != ry)
        return rx < ry ? -1 : 1;
    return strcmp(x->instance->id, y->instance->id);
}

static bool has_label(const Printfarm__V1__Instance *inst, const char *key, const char *value)
{
    for (size_t i = 0; i < inst->n_labels; i++) {
        if (strcmp(inst->labels[i]->key, key) == 0 && strcmp(inst->labels[i]->value, value) == 0)
            return true;
    }
    return false;
}

/* Sends addresses + instances of items[0..n) (healthy_only already applied). */
static void resolve_reply(struct pf_rpc_call *call, Printfarm__V1__InstanceStatus **items, size_t n)
{
    Printfarm__V1__ResolveResponse resp = PRINTFARM__V1__RESOLVE_RESPONSE__INIT;
    struct pf_error err;
    resp.addresses = calloc(n + 1, sizeof(*resp.addresses));
    if (resp.addresses == NULL) {
        pf_error_set(&err, PF_E_RESOURCE, "out of memory");
        fail(call, "Resolve", &err);
        return;
    }
    for (size_t i = 0; i < n; i++)
        resp.addresses[i] = items[i]->instance->address;
    resp.n_addresses = n;
    resp.instances = items;
    resp.n_instances = n;
    pf_rpc_call_reply(call, &resp.base);
    free(resp.addresses);
}

/* "scheduler-leader": the address in the scheduler's lease, with the
 * registered scheduler that has it; without a lease, a scheduler labelled
 * role=leader. */
static void resolve_leader(struct pf_rpc_call *call, struct pf_registry_conn *conn,
                           bool healthy_only)
{
    Printfarm__V1__Instance bare = PRINTFARM__V1__INSTANCE__INIT;
    Printfarm__V1__InstanceStatus bare_st = PRINTFARM__V1__INSTANCE_STATUS__INIT;
    Printfarm__V1__InstanceStatus *chosen = NULL;
    struct pf_registry_snapshot snap;
    char addr[PF_DISC_ADDRESS_MAX];
    struct pf_error err, lease_err;
    enum pf_status lease_rc;

    lease_rc = pf_registry_scheduler_leader(conn, addr, sizeof(addr), &lease_err);
    if (lease_rc != PF_OK && lease_rc != PF_E_NOT_FOUND) {
        fail(call, "Resolve", &lease_err);
        return;
    }
    if (pf_registry_snapshot(conn, KIND_SCHEDULER, &snap, &err) != PF_OK) {
        fail(call, "Resolve", &err);
        return;
    }
    for (size_t i = 0; i < snap.count && chosen == NULL; i++) {
        const Printfarm__V1__Instance *inst = snap.items[i]->instance;
        if (lease_rc == PF_OK ? strcmp(inst->address, addr) == 0
                              : has_label(inst, "role", "leader"))
            chosen = snap.items[i];
    }
    if (chosen == NULL && lease_rc == PF_OK) {
        /* The leader did not register (no --discovery): its address alone. */
        bare.kind = KIND_SCHEDULER;
        bare.address = addr;
        bare_st.instance = &bare;
        bare_st.health = HEALTH(UNKNOWN);
        chosen = &bare_st;
    }
    if (chosen == NULL) {
        fail(call, "Resolve", &lease_err);
    } else if (healthy_only && chosen->health != HEALTH(SERVING)) {
        pf_error_set(&err, PF_E_NOT_FOUND, "the scheduler leader at %s is %s%s%s",
                     chosen->instance->address, health_name((int)chosen->health),
                     chosen->probe_error[0] != '\0' ? ": " : "", chosen->probe_error);
        fail(call, "Resolve", &err);
    } else {
        resolve_reply(call, &chosen, 1);
    }
    pf_registry_snapshot_release(&snap);
}

static void resolve_work(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_disc_service *svc = pf_rpc_call_ctx(call);
    Printfarm__V1__ResolveRequest *req;
    struct pf_registry_conn *conn;
    struct pf_disc_role role;
    struct pf_error err;
    bool healthy_only;

    if (pf_pb_unpack(&printfarm__v1__resolve_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK) {
        fail(call, "Resolve", &err);
        return;
    }
    enum pf_status rc = pf_disc_role_parse(req->role, &role, &err);
    healthy_only = req->healthy_only;
    printfarm__v1__resolve_request__free_unpacked(req, NULL);
    if (rc != PF_OK) {
        fail(call, "Resolve", &err);
        return;
    }
    conn = pf_registry_conn_get(svc->registry);
    if (role.type == PF_DISC_ROLE_LEADER) {
        resolve_leader(call, conn, healthy_only);
    } else if (role.type == PF_DISC_ROLE_AGENT) {
        Printfarm__V1__InstanceStatus *st = NULL;
        if (pf_registry_get(conn, role.kind, role.id, &st, &err) != PF_OK) {
            fail(call, "Resolve", &err);
        } else if (healthy_only && st->health != HEALTH(SERVING)) {
            pf_error_set(&err, PF_E_NOT_FOUND, "agent '%s' is %s", role.id,
                         health_name((int)st->health));
            fail(call, "Resolve", &err);
        } else {
            resolve_reply(call, &st, 1);
        }
        pf_registry_status_free(st);
    } else {
        struct pf_registry_snapshot snap;
        if (pf_registry_snapshot(conn, role.kind, &snap, &err) != PF_OK) {
            fail(call, "Resolve", &err);
        } else {
            size_t n = 0, total = snap.count;
            qsort(snap.items, snap.count, sizeof(*snap.items), resolve_cmp);
            while (n < snap.count && (!healthy_only || snap.items[n]->health == HEALTH(SERVING)))
                n++;
            if (n == 0) {
                pf_error_set(&err, PF_E_NOT_FOUND, "%s %s instance is registered%s",
                             total == 0 ? "no" : "no SERVING", pf_disc_kind_name(role.kind),
                             total == 0 ? "" : " (some are, but none passes its health check)");
                fail(call, "Resolve", &err);
            } else {
                resolve_reply(call, snap.items, n);
            }
            pf_registry_snapshot_release(&snap);
        }
    }
    pf_registry_conn_put(conn);
}

/* ---- Watch ---- */

static void watch_begin_work(struct pf_rpc_call *call, const uint8_t *unused, size_t unused_len)
{
    struct pf_disc_service *svc = pf_rpc_call_ctx(call);
    struct pf_disc_watcher *w = pf_rpc_call_user(call);
    struct pf_registry_conn *conn = pf_registry_conn_get(svc->registry);
    (void)unused;
    (void)unused_len;
    pf_disc_feed_watch_begin(w, conn);
    pf_registry_conn_put(conn);
}

static void watch_start(struct pf_rpc_call *call, const uint8_t *data, size_t len)
{
    struct pf_disc_service *svc = pf_rpc_call_ctx(call);
    Printfarm__V1__WatchInstancesRequest *req;
    struct pf_disc_watcher *w;
    struct pf_error err;

    if (pf_pb_unpack(&printfarm__v1__watch_instances_request__descriptor, data, len,
                     (ProtobufCMessage **)&req, &err) != PF_OK) {
        fail(call, "Watch", &err);
        return;
    }
    int kind = (int)req->kind;
    bool send_initial = req->send_initial;
    printfarm__v1__watch_instances_request__free_unpacked(req, NULL);
    if (check_kind(kind, "kind", &err) != PF_OK) {
        fail(call, "Watch", &err);
        return;
    }
    w = pf_disc_watcher_create(svc->feed, call, kind, send_initial);
    if (w == NULL) {
        pf_rpc_call_finish(call, PF_E_RESOURCE, "out of memory");
        return;
    }
    pf_rpc_call_set_user(call, w);
    pf_rpc_call_defer(call, svc->wq, watch_begin_work, NULL, 0);
}

static void watch_close(struct pf_rpc_call *call, bool cancelled)
{
    (void)cancelled;
    pf_disc_watcher_close(pf_rpc_call_user(call));
}

static void watch_free(struct pf_rpc_call *call)
{
    pf_disc_watcher_destroy(pf_rpc_call_user(call));
}

#define DEFER_UNARY(name, work)                                                                    \
    static void name(struct pf_rpc_call *call, const uint8_t *req, size_t len)                     \
    {                                                                                              \
        struct pf_disc_service *svc = pf_rpc_call_ctx(call);                                       \
        pf_rpc_call_defer(call, svc->wq, work, req, len);                                          \
    }
DEFER_UNARY(register_start, register_work)
DEFER_UNARY(deregister_start, deregister_work)
DEFER_UNARY(list_start, list_work)
DEFER_UNARY(resolve_start, resolve_work)

enum pf_status pf_disc_service_register(struct pf_disc_service *svc, struct pf_rpc_server *srv,
                                        struct pf_error *err)
{
    const unsigned writers = PF_ROLE_AGENT | PF_ROLE_OPERATOR | PF_ROLE_ADMIN;
    const struct pf_rpc_method methods[] = {
        {.path = "/printfarm.v1.Discovery/Register",
         .kind = PF_RPC_UNARY,
         .roles = writers,
         .ctx = svc,
         .on_start = register_start},
        {.path = "/printfarm.v1.Discovery/Heartbeat",
         .kind = PF_RPC_UNARY,
         .roles = writers,
         .ctx = svc,
         .on_start = heartbeat_start},
        {.path = "/printfarm.v1.Discovery/Deregister",
         .kind = PF_RPC_UNARY,
         .roles = writers,
         .ctx = svc,
         .on_start = deregister_start},
        {.path = "/printfarm.v1.Discovery/List",
         .kind = PF_RPC_UNARY,
         .roles = PF_ROLES_ANY,
         .ctx = svc,
         .on_start = list_start},
        {.path = "/printfarm.v1.Discovery/Watch",
         .kind = PF_RPC_SERVER_STREAM,
         .roles = PF_ROLES_ANY,
         .long_lived = true,
         .ctx = svc,
         .on_start = watch_start,
         .on_close = watch_close,
         .on_free = watch_free},
        {.path = "/printfarm.v1.Discovery/Resolve",
         .kind = PF_RPC_UNARY,
         .roles = PF_ROLES_ANY,
         .ctx = svc,
         .on_start = resolve_start},
    };
    return pf_rpc_server_add(srv, methods, sizeof(methods) / sizeof(methods[0]), err);
}
