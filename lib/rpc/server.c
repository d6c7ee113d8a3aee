/* The server side of lib/rpc: method registration, the completion-queue loop
 * with its timers, and graceful shutdown. The per-call state machine is in
 * call.c, health in health.c. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <grpc/support/time.h>
#include "log.h"
#include "rpc/internal.h"
#include "rpc/pb.h"
#include "timeutil.h"

#define REQUESTS_PER_METHOD 4
#define GENERIC_REQUESTS    2
#define LOOP_WAKE_MS        100

static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig)
{
    (void)sig;
    g_stop_signal = 1;
}

void pf_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

bool pf_signals_stop_requested(void)
{
    return g_stop_signal != 0;
}

/* Keeps the bytes held for clients that do not read bounded even when no
 * call is sending (completion-queue thread, every 500 ms). */
static void evict_timer(void *arg)
{
    pf_rpc_server_evict_stalled(arg);
}

struct pf_rpc_server *pf_rpc_server_create(const struct pf_rpc_server_opts *opts,
                                           struct pf_error *err)
{
    struct pf_rpc_server *s;
    grpc_server_credentials *creds;

    /* Read the TLS files now, so a bad path fails before anything starts. */
    creds = pf_tls_server_credentials(&opts->tls, err);
    if (creds == NULL)
        return NULL;
    grpc_server_credentials_release(creds);

    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        pf_error_set(err, PF_E_RESOURCE, "out of memory");
        return NULL;
    }
    s->opts = *opts;
    s->listen = strdup(opts->listen != NULL ? opts->listen : "127.0.0.1:0");
    s->name = strdup(opts->name != NULL ? opts->name : "");
    s->opts.tls.cert = opts->tls.cert != NULL ? strdup(opts->tls.cert) : NULL;
    s->opts.tls.key = opts->tls.key != NULL ? strdup(opts->tls.key) : NULL;
    s->opts.tls.ca = opts->tls.ca != NULL ? strdup(opts->tls.ca) : NULL;
    if (s->opts.max_message_bytes == 0)
        s->opts.max_message_bytes = 4 * 1024 * 1024 + 64 * 1024;
    if (s->opts.max_queued_bytes == 0)
        s->opts.max_queued_bytes = 16 * 1024 * 1024;
    if (s->opts.max_total_queued_bytes == 0)
        s->opts.max_total_queued_bytes = 64 * 1024 * 1024;
    if (s->opts.shutdown_grace_ms <= 0)
        s->opts.shutdown_grace_ms = 5000;
    pthread_mutex_init(&s->mu, NULL);
    s->live_list.live_next = s->live_list.live_prev = &s->live_list;
    s->t_shutdown = (struct pf_rpc_tag){TAG_SHUTDOWN, NULL};
    s->generic.m.path = "";
    s->generic.path = strdup("unknown");
    s->port = -1;

    if (opts->metrics != NULL) {
        s->m_calls =
            pf_metrics_counter(opts->metrics, "printfarm_rpc_calls_total",
                               "gRPC calls finished, by method and status code", "method,code");
        s->m_duration = pf_metrics_histogram(opts->metrics, "printfarm_rpc_duration_seconds",
                                             "gRPC call duration, by method and status code",
                                             "method,code", NULL, 0);
        s->m_inflight = pf_metrics_gauge(opts->metrics, "printfarm_rpc_in_flight",
                                         "gRPC calls in progress", NULL);
        s->m_evicted = pf_metrics_counter(
            opts->metrics, "printfarm_rpc_write_evictions_total",
            "calls ended with RESOURCE_EXHAUSTED because the server held too many bytes "
            "for clients that do not read",
            NULL);
    }

    grpc_init();
    grpc_arg args[] = {
        {GRPC_ARG_INTEGER,
         GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         {.integer = (int)s->opts.max_message_bytes}},
        {GRPC_ARG_INTEGER,
         GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         {.integer = (int)s->opts.max_message_bytes}},
        {GRPC_ARG_INTEGER, GRPC_ARG_ALLOW_REUSEPORT, {.integer = 0}},
        {GRPC_ARG_INTEGER,
         GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
         {.integer = 5000}},
        {GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, {.integer = 1}},
        {GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, {.integer = 30000}},
        {GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, {.integer = 10000}},
    };
    grpc_channel_args chargs = {sizeof(args) / sizeof(args[0]), args};
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    pf_rpc_health_register(s);
    pf_rpc_server_every(s, 500, evict_timer, s);
    return s;
}

enum pf_status pf_rpc_server_add(struct pf_rpc_server *s, const struct pf_rpc_method *methods,
                                 size_t count, struct pf_error *err)
{
    struct method_entry *grown;

    if (s->started)
        return pf_error_set(err, PF_E_PRECONDITION, "methods must be added before start");
    grown = realloc(s->methods, (s->method_count + count) * sizeof(*grown));
    if (grown == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    s->methods = grown;
    for (size_t i = 0; i < count; i++) {
        struct method_entry *e = &s->methods[s->method_count];
        bool payload = methods[i].kind == PF_RPC_UNARY || methods[i].kind == PF_RPC_SERVER_STREAM;
        if (methods[i].path == NULL || methods[i].path[0] != '/' || methods[i].on_start == NULL)
            return pf_error_set(err, PF_E_INVALID, "method %zu has no path or on_start", i);
        memset(e, 0, sizeof(*e));
        e->m = methods[i];
        e->path = strdup(methods[i].path);
        e->m.path = e->path;
        e->registered = grpc_server_register_method(
            s->server, e->path, NULL,
            payload ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER : GRPC_SRM_PAYLOAD_NONE, 0);
        if (e->registered == NULL) {
            free(e->path);
            return pf_error_set(err, PF_E_EXISTS, "method '%s' registered twice", methods[i].path);
        }
        s->method_count++;
    }
    return PF_OK;
}

enum pf_status pf_rpc_server_start(struct pf_rpc_server *s, struct pf_error *err)
{
    grpc_server_credentials *creds = pf_tls_server_credentials(&s->opts.tls, err);
    if (creds == NULL)
        return err->code;
    s->port = grpc_server_add_http2_port(s->server, s->listen, creds);
    grpc_server_credentials_release(creds);
    if (s->port == 0)
        return pf_error_set(err, PF_E_UNAVAILABLE,
                            "could not listen on '%s': address in use or not valid", s->listen);
    grpc_server_start(s->server);
    s->started = true;
    pf_rpc_server_set_health(s, "", true);
    if (s->name[0] != '\0')
        pf_rpc_server_set_health(s, s->name, true);
    for (size_t i = 0; i < s->method_count; i++) {
        for (int k = 0; k < REQUESTS_PER_METHOD; k++) {
            struct pf_rpc_call *c = pf_rpc_call_new(s, &s->methods[i]);
            if (c != NULL)
                pf_rpc_call_post(c);
        }
    }
    for (int k = 0; k < GENERIC_REQUESTS; k++) {
        struct pf_rpc_call *c = pf_rpc_call_new(s, &s->generic);
        if (c != NULL)
            pf_rpc_call_post(c);
    }
    return PF_OK;
}

int pf_rpc_server_port(const struct pf_rpc_server *s)
{
    return s->port;
}

void pf_rpc_server_request_stop(struct pf_rpc_server *s)
{
    atomic_store(&s->stop_requested, true);
}

void pf_rpc_server_every(struct pf_rpc_server *s, int64_t interval_ms, void (*fn)(void *arg),
                         void *arg)
{
    struct timer_entry *grown = realloc(s->timers, (s->timer_count + 1) * sizeof(*grown));
    if (grown == NULL)
        return;
    s->timers = grown;
    s->timers[s->timer_count++] =
        (struct timer_entry){interval_ms, pf_time_mono_ms() + interval_ms, fn, arg};
}

static void begin_shutdown(struct pf_rpc_server *s)
{
    s->shutting_down = true;
    pf_log_info("rpc_shutdown", "live_calls=%ld grace_ms=%lld", atomic_load(&s->live),
                (long long)s->opts.shutdown_grace_ms);
    pf_rpc_health_shutdown(s);
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->t_shutdown);
    /* Streams that would never end on their own are told to go elsewhere. */
    pthread_mutex_lock(&s->mu);
    for (struct pf_rpc_call *c = s->live_list.live_next; c != &s->live_list; c = c->live_next) {
        if (c->entry->m.long_lived)
            pf_rpc_call_finish(c, PF_E_UNAVAILABLE, "server shutting down");
    }
    pthread_mutex_unlock(&s->mu);
}

static int64_t run_timers(struct pf_rpc_server *s, int64_t now)
{
    int64_t next = now + LOOP_WAKE_MS;
    for (size_t i = 0; i < s->timer_count; i++) {
        struct timer_entry *t = &s->timers[i];
        if (t->due_ms <= now) {
            t->fn(t->arg);
            t->due_ms = now + t->interval_ms;
        }
        if (t->due_ms < next)
            next = t->due_ms;
    }
    return next;
}

void pf_rpc_server_run(struct pf_rpc_server *s)
{
    int64_t grace_deadline = 0;
    bool cancelled_all = false;
    int64_t next_wake = pf_time_mono_ms() + LOOP_WAKE_MS;

    if (!s->started)
        return;
    for (;;) {
        int64_t now = pf_time_mono_ms();
        int64_t wait_ms = next_wake > now ? next_wake - now : 0;
        gpr_timespec deadline =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(wait_ms, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(s->cq, deadline, NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            struct pf_rpc_tag *t = ev.tag;
            if (t->kind == TAG_SHUTDOWN)
                s->shutdown_done = true;
            else
                pf_rpc_call_event(t, ev.success != 0);
        }
        now = pf_time_mono_ms();
        next_wake = s->shutting_down ? now + LOOP_WAKE_MS : run_timers(s, now);
        if (!s->shutting_down && (atomic_load(&s->stop_requested) || pf_signals_stop_requested())) {
            begin_shutdown(s);
            grace_deadline = now + s->opts.shutdown_grace_ms;
        }
        if (s->shutting_down) {
            if (!cancelled_all && now >= grace_deadline) {
                pf_log_warn("rpc_shutdown_cancel", "live_calls=%ld", atomic_load(&s->live));
                grpc_server_cancel_all_calls(s->server);
                cancelled_all = true;
            }
            if (s->shutdown_done && atomic_load(&s->live) == 0)
                break;
        }
    }
    pf_log_info("rpc_stopped", NULL);
}

void pf_rpc_server_destroy(struct pf_rpc_server *s)
{
    if (s == NULL)
        return;
    if (s->started && !s->shutdown_done) {
        /* Never ran to completion: shut down here, draining the queue. */
        begin_shutdown(s);
        grpc_server_cancel_all_calls(s->server);
        while (!(s->shutdown_done && atomic_load(&s->live) == 0)) {
            grpc_event ev = grpc_completion_queue_next(
                s->cq,
                gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN)),
                NULL);
            if (ev.type != GRPC_OP_COMPLETE)
                continue;
            struct pf_rpc_tag *t = ev.tag;
            if (t->kind == TAG_SHUTDOWN)
                s->shutdown_done = true;
            else
                pf_rpc_call_event(t, ev.success != 0);
        }
    }
    grpc_server_destroy(s->server);
    grpc_completion_queue_shutdown(s->cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    grpc_completion_queue_destroy(s->cq);
    for (size_t i = 0; i < s->method_count; i++)
        free(s->methods[i].path);
    free(s->methods);
    free(s->generic.path);
    for (size_t i = 0; i < s->health_count; i++)
        free(s->health[i].service);
    free(s->health);
    free(s->timers);
    free(s->listen);
    free(s->name);
    free((char *)s->opts.tls.cert);
    free((char *)s->opts.tls.key);
    free((char *)s->opts.tls.ca);
    pthread_mutex_destroy(&s->mu);
    free(s);
    grpc_shutdown();
}
