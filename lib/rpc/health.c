/* grpc.health.v1.Health on every server: Check answers from a table of
 * service names; Watch streams the status of one name and every change to it.
 * Health needs no token, so probes and container health checks work when
 * tokens are on. */
#include <stdlib.h>
#include <string.h>
#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "rpc/internal.h"
#include "rpc/pb.h"

#define ST(x)               GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__##x
#define MAX_HEALTH_SERVICES 64
#define MAX_SERVICE_NAME    200

/* With s->mu held: the status of a name, ST(SERVICE_UNKNOWN) if unknown. */
static int lookup_locked(struct pf_rpc_server *s, const char *service)
{
    for (size_t i = 0; i < s->health_count; i++) {
        if (strcmp(s->health[i].service, service) == 0)
            return s->health[i].serving ? ST(SERVING) : ST(NOT_SERVING);
    }
    return ST(SERVICE_UNKNOWN);
}

static void send_status(struct pf_rpc_call *call, int status)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = status;
    if (pf_rpc_call_send_msg(call, &resp.base) == PF_E_RESOURCE)
        pf_rpc_call_finish(call, PF_E_RESOURCE, "health watcher is not reading");
}

/* With s->mu held. */
static void notify_locked(struct pf_rpc_server *s)
{
    for (struct health_watch *w = s->watches; w != NULL; w = w->next) {
        int st = lookup_locked(s, w->service);
        if (st != w->last_sent) {
            w->last_sent = st;
            send_status(w->call, st);
        }
    }
}

void pf_rpc_server_set_health(struct pf_rpc_server *s, const char *service, bool serving)
{
    pthread_mutex_lock(&s->mu);
    size_t i;
    for (i = 0; i < s->health_count; i++) {
        if (strcmp(s->health[i].service, service) == 0)
            break;
    }
    if (i == s->health_count) {
        struct health_entry *grown;
        if (s->health_count >= MAX_HEALTH_SERVICES)
            goto out_unlock;
        grown = realloc(s->health, (s->health_count + 1) * sizeof(*grown));
        if (grown == NULL)
            goto out_unlock;
        s->health = grown;
        s->health[i].service = strdup(service);
        s->health_count++;
    }
    s->health[i].serving = serving && !s->shutting_down;
    notify_locked(s);
out_unlock:
    pthread_mutex_unlock(&s->mu);
}

void pf_rpc_health_shutdown(struct pf_rpc_server *s)
{
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->health_count; i++)
        s->health[i].serving = false;
    notify_locked(s);
    pthread_mutex_unlock(&s->mu);
}

static enum pf_status parse_request(const uint8_t *req, size_t len, char *service,
                                    struct pf_error *err)
{
    ProtobufCMessage *msg;
    enum pf_status rc =
        pf_pb_unpack(&grpc__health__v1__health_check_request__descriptor, req, len, &msg, err);
    if (rc != PF_OK)
        return rc;
    const char *name = ((Grpc__Health__V1__HealthCheckRequest *)msg)->service;
    if (strlen(name) > MAX_SERVICE_NAME) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return pf_error_set(err, PF_E_INVALID, "service name longer than %d bytes",
                            MAX_SERVICE_NAME);
    }
    strcpy(service, name);
    protobuf_c_message_free_unpacked(msg, NULL);
    return PF_OK;
}

static void check_start(struct pf_rpc_call *call, const uint8_t *req, size_t len)
{
    struct pf_rpc_server *s = pf_rpc_call_ctx(call);
    struct pf_error err;
    char service[MAX_SERVICE_NAME + 1];

    if (parse_request(req, len, service, &err) != PF_OK) {
        pf_rpc_call_finish_err(call, &err);
        return;
    }
    pthread_mutex_lock(&s->mu);
    int st = lookup_locked(s, service);
    pthread_mutex_unlock(&s->mu);
    if (st == ST(SERVICE_UNKNOWN)) {
        pf_error_set(&err, PF_E_NOT_FOUND, "unknown service '%s'", service);
        pf_rpc_call_finish_err(call, &err);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = st;
    pf_rpc_call_reply(call, &resp.base);
}

static void watch_start(struct pf_rpc_call *call, const uint8_t *req, size_t len)
{
    struct pf_rpc_server *s = pf_rpc_call_ctx(call);
    struct pf_error err;
    char service[MAX_SERVICE_NAME + 1];
    struct health_watch *w;

    if (parse_request(req, len, service, &err) != PF_OK) {
        pf_rpc_call_finish_err(call, &err);
        return;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL || (w->service = strdup(service)) == NULL) {
        free(w);
        pf_rpc_call_finish(call, PF_E_RESOURCE, "out of memory");
        return;
    }
    w->call = call;
    pf_rpc_call_ref(call);
    pf_rpc_call_set_user(call, w);
    pthread_mutex_lock(&s->mu);
    w->last_sent = lookup_locked(s, service);
    w->next = s->watches;
    s->watches = w;
    send_status(call, w->last_sent);
    pthread_mutex_unlock(&s->mu);
}

static void watch_close(struct pf_rpc_call *call, bool cancelled)
{
    struct pf_rpc_server *s = pf_rpc_call_ctx(call);
    struct health_watch *w = pf_rpc_call_user(call);
    if (w == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    for (struct health_watch **p = &s->watches; *p != NULL; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    pf_rpc_call_set_user(call, NULL);
    free(w->service);
    free(w);
    pf_rpc_call_unref(call);
}

void pf_rpc_health_register(struct pf_rpc_server *s)
{
    struct pf_error err;
    const struct pf_rpc_method methods[] = {
        {.path = "/grpc.health.v1.Health/Check",
         .kind = PF_RPC_UNARY,
         .ctx = s,
         .on_start = check_start},
        {.path = "/grpc.health.v1.Health/Watch",
         .kind = PF_RPC_SERVER_STREAM,
         .long_lived = true,
         .ctx = s,
         .on_start = watch_start,
         .on_close = watch_close},
    };
    if (pf_rpc_server_add(s, methods, 2, &err) != PF_OK)
        pf_log_error("health_register_failed", "error=\"%s\"", err.msg);
}
