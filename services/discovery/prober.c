/* The prober thread: contends for the prober lock, and while it holds it
 * runs a round every interval — probes on a thread pool, then the results
 * written to the registry in a few scripts. gRPC channels are kept per
 * address between rounds while probes succeed; a failed probe drops its
 * channel so the next round dials afresh (a gRPC channel in reconnect
 * backoff would report a recovered instance as unreachable for minutes). */
#include "prober.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "config.h"
#include "grpc/health/v1/health.pb-c.h"
#include "lease.h"
#include "log.h"
#include "timeutil.h"
#include "workq.h"

#define TICK_MS             50
#define CONCURRENCY_DEFAULT 16
#define HEALTH_CHECK        "/grpc.health.v1.Health/Check"
#define HEALTH(x)           PRINTFARM__V1__INSTANCE_HEALTH__INSTANCE_HEALTH_##x

/* A gRPC channel kept for one address. */
struct chan_entry {
    char address[PF_DISC_ADDRESS_MAX];
    struct pf_rpc_channel *ch; /* NULL: dial afresh */
    atomic_bool failed;        /* a probe on it failed this round */
};

/* Open-addressing map address -> entry; used by the prober thread only. */
struct chan_map {
    struct chan_entry **slots;
    size_t cap; /* power of two, or 0 */
    size_t count;
};

struct probe_job {
    struct pf_prober *p;
    struct pf_probe_target target;
    struct chan_entry *entry; /* gRPC only */
    struct pf_probe_result result;
};

struct pf_prober {
    struct pf_registry *registry;
    char holder[PF_LEASE_ID_MAX];
    int64_t interval_ms, timeout_ms;
    int concurrency;
    struct pf_rpc_client_opts client;
    char *tls_cert, *tls_key, *tls_ca; /* copies behind client.tls */
    struct pf_workq *wq;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    atomic_bool active;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t pending; /* under mu: jobs of the round still running */
    /* the thread's own: */
    struct chan_map chans;
    struct probe_job *jobs;
    size_t job_count;
    bool round_open;
    int64_t round_started;
    struct pf_metric *m_active, *m_probes, *m_round_seconds, *m_targets;
};

int64_t pf_prober_lock_ttl_ms(int64_t interval_ms)
{
    int64_t ttl = interval_ms > INT64_MAX / 3 ? INT64_MAX : interval_ms * 3;
    if (ttl < 3000)
        ttl = 3000;
    if (ttl > PF_LEASE_TTL_MAX_MS)
        ttl = PF_LEASE_TTL_MAX_MS;
    return ttl;
}

/* ---- the channel map ---- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static struct chan_entry **map_slot(struct chan_map *m, const char *address)
{
    size_t i = (size_t)hash_str(address) & (m->cap - 1);
    while (m->slots[i] != NULL && strcmp(m->slots[i]->address, address) != 0)
        i = (i + 1) & (m->cap - 1);
    return &m->slots[i];
}

static void entry_destroy(struct chan_entry *e)
{
    if (e == NULL)
        return;
    if (e->ch != NULL)
        pf_rpc_channel_destroy(e->ch);
    free(e);
}

static void map_release(struct chan_map *m)
{
    for (size_t i = 0; i < m->cap; i++)
        entry_destroy(m->slots[i]);
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

/* The entry for address in next, moved from prev when it was there. */
static struct chan_entry *map_take(struct chan_map *next, struct chan_map *prev,
                                   const char *address)
{
    struct chan_entry **slot = map_slot(next, address), *e = NULL;
    if (*slot != NULL)
        return *slot;
    if (prev->cap > 0) {
        struct chan_entry **old = map_slot(prev, address);
        if (*old != NULL) {
            /* Remove with backward-shift deletion so later probes still find theirs. */
            size_t i = (size_t)(old - prev->slots), j = i;
            e = *old;
            prev->slots[i] = NULL;
            for (;;) {
                j = (j + 1) & (prev->cap - 1);
                if (prev->slots[j] == NULL)
                    break;
                size_t home = (size_t)hash_str(prev->slots[j]->address) & (prev->cap - 1);
                if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
                    prev->slots[i] = prev->slots[j];
                    prev->slots[j] = NULL;
                    i = j;
                }
            }
            prev->count--;
        }
    }
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            return NULL;
        snprintf(e->address, sizeof(e->address), "%s", address);
    }
    atomic_store(&e->failed, false);
    *slot = e;
    next->count++;
    return e;
}

/* ---- one probe ---- */

/* Copies text into out (cut to fit, always terminated). */
static void copy_text(char *out, size_t out_size, const char *text)
{
    size_t n = text != NULL ? strnlen(text, out_size - 1) : 0;
    if (n > 0)
        memcpy(out, text, n);
    out[n] = '\0';
}

static void set_result(struct probe_job *j, int health, int64_t started_us, const char *error)
{
    struct timespec ts;
    int64_t now_us;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    j->result.health = health;
    j->result.latency_us =
        health == HEALTH(SERVING) && now_us > started_us
            ? (uint32_t)(now_us - started_us > UINT32_MAX ? UINT32_MAX : now_us - started_us)
            : 0;
    copy_text(j->result.error, sizeof(j->result.error), error);
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void probe_grpc(struct probe_job *j)
{
    struct pf_prober *p = j->p;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    struct pf_error err;
    int64_t t0 = now_us();
    enum pf_status rc;

    if (j->entry == NULL || j->entry->ch == NULL) {
        set_result(j, HEALTH(UNREACHABLE), t0, "could not open a channel");
        return;
    }
    rc = pf_rpc_unary(j->entry->ch, HEALTH_CHECK, &req.base,
                      &grpc__health__v1__health_check_response__descriptor,
                      (ProtobufCMessage **)&resp, p->timeout_ms, &err);
    if (rc == PF_OK) {
        bool serving =
            resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        set_result(j, serving ? HEALTH(SERVING) : HEALTH(NOT_SERVING), t0,
                   serving ? "" : "health check answered NOT_SERVING");
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return;
    }
    atomic_store(&j->entry->failed, true);
    if (rc == PF_E_UNAVAILABLE || rc == PF_E_DEADLINE || rc == PF_E_CANCELLED)
        set_result(j, HEALTH(UNREACHABLE), t0, err.msg);
    else
        set_result(j, HEALTH(NOT_SERVING), t0, err.msg);
}

/* Connects with a deadline; returns the socket or -1 with why set. */
static int connect_deadline(const char *host, int port, int64_t deadline_ms, char *why,
                            size_t why_size)
{
    struct addrinfo hints, *res = NULL;
    char port_text[8];
    int fd = -1, gai;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port_text, sizeof(port_text), "%d", port);
    gai = getaddrinfo(host, port_text, &hints, &res);
    if (gai != 0) {
        snprintf(why, why_size, "could not resolve '%.64s': %.64s", host, gai_strerror(gai));
        return -1;
    }
    for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
        struct pollfd pfd;
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        int64_t left;
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (errno != EINPROGRESS) {
            snprintf(why, why_size, "connect: %s", strerror(errno));
            goto out_next;
        }
        left = deadline_ms - pf_time_mono_ms();
        pfd.fd = fd;
        pfd.events = POLLOUT;
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
            snprintf(why, why_size, "no connection within the probe timeout");
            goto out_next;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
            snprintf(why, why_size, "connect: %s", strerror(soerr != 0 ? soerr : errno));
            goto out_next;
        }
        break;
    out_next:
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static void probe_http(struct probe_job *j)
{
    char host[PF_DISC_ADDRESS_MAX], why[160], req[PF_DISC_ADDRESS_MAX + 96], buf[256];
    int64_t t0 = now_us(), deadline = pf_time_mono_ms() + j->p->timeout_ms;
    size_t got = 0;
    struct pf_error err;
    int port = 0, fd, status = 0;

    if (pf_config_parse_hostport(j->target.address, host, sizeof(host), &port, &err) != PF_OK) {
        set_result(j, HEALTH(UNREACHABLE), t0, err.msg);
        return;
    }
    fd = connect_deadline(host, port, deadline, why, sizeof(why));
    if (fd < 0) {
        set_result(j, HEALTH(UNREACHABLE), t0, why);
        return;
    }
    int n =
        snprintf(req, sizeof(req), "GET /healthz HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n",
                 j->target.address);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        set_result(j, HEALTH(UNREACHABLE), t0, "could not send the health request");
        return;
    }
    while (got < sizeof(buf) - 1 && memchr(buf, '\n', got) == NULL) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - pf_time_mono_ms();
        ssize_t r;
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    if (sscanf(buf, "HTTP/%*d.%*d %d", &status) != 1) {
        set_result(j, HEALTH(UNREACHABLE), t0,
                   got == 0 ? "no HTTP answer within the probe timeout" : "not an HTTP answer");
        return;
    }
    if (status == 200) {
        set_result(j, HEALTH(SERVING), t0, "");
    } else {
        snprintf(why, sizeof(why), "/healthz answered HTTP %d", status);
        set_result(j, HEALTH(NOT_SERVING), t0, why);
    }
}

static void probe_run(void *arg)
{
    struct probe_job *j = arg;
    struct pf_prober *p = j->p;
    if (j->target.mode == PF_DISC_PROBE_HTTP)
        probe_http(j);
    else
        probe_grpc(j);
    pthread_mutex_lock(&p->mu);
    if (--p->pending == 0)
        pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- rounds ---- */

static void round_start(struct pf_prober *p, struct pf_registry_conn *conn)
{
    struct pf_probe_target *targets = NULL;
    struct chan_map next = {0};
    struct pf_error err;
    size_t count = 0, n = 0;

    p->round_started = pf_time_mono_ms();
    if (pf_registry_probe_targets(conn, &targets, &count, &err) != PF_OK) {
        pf_log_warn("probe_round_failed", "error=\"%s\"", err.msg);
        return;
    }
    pf_metric_set(p->m_targets, NULL, (double)count);
    p->jobs = calloc(count + 1, sizeof(*p->jobs));
    next.cap = 16;
    while (next.cap < count * 2)
        next.cap *= 2;
    next.slots = calloc(next.cap, sizeof(*next.slots));
    if (p->jobs == NULL || next.slots == NULL) {
        free(p->jobs);
        p->jobs = NULL;
        free(next.slots);
        free(targets);
        pf_log_error("probe_round_failed", "error=\"out of memory\"");
        return;
    }
    for (size_t i = 0; i < count; i++) {
        struct probe_job *j = &p->jobs[n];
        if (targets[i].mode == PF_DISC_PROBE_OFF)
            continue;
        j->p = p;
        j->target = targets[i];
        copy_text(j->result.member, sizeof(j->result.member), targets[i].member);
        copy_text(j->result.address, sizeof(j->result.address), targets[i].address);
        if (targets[i].mode == PF_DISC_PROBE_GRPC) {
            j->entry = map_take(&next, &p->chans, targets[i].address);
            if (j->entry != NULL && j->entry->ch == NULL) {
                j->entry->ch = pf_rpc_channel_create(targets[i].address, &p->client, &err);
                if (j->entry->ch == NULL)
                    pf_log_debug("probe_channel_failed", "address=%s error=\"%s\"",
                                 targets[i].address, err.msg);
            }
        }
        n++;
    }
    free(targets);
    /* Addresses no longer registered lose their channels. */
    map_release(&p->chans);
    p->chans = next;
    p->job_count = n;
    p->round_open = true;
    pthread_mutex_lock(&p->mu);
    p->pending = n;
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n; i++) {
        if (pf_workq_submit(p->wq, probe_run, &p->jobs[i]) != PF_OK)
            probe_run(&p->jobs[i]); /* never full (unbounded); only after shutdown */
    }
}

static void round_finish(struct pf_prober *p, struct pf_registry_conn *conn, bool record)
{
    struct pf_probe_result *results;
    struct pf_error err;
    size_t changed = 0, serving = 0;

    results = calloc(p->job_count + 1, sizeof(*results));
    for (size_t i = 0; i < p->job_count; i++) {
        static const char *const names[] = {"unspecified", "unknown", "serving", "not_serving",
                                            "unreachable"};
        int h = p->jobs[i].result.health;
        pf_metric_inc1(p->m_probes, h >= 0 && h <= 4 ? names[h] : "unknown");
        if (h == HEALTH(SERVING))
            serving++;
        if (results != NULL)
            results[i] = p->jobs[i].result;
        struct chan_entry *e = p->jobs[i].entry;
        if (e != NULL && atomic_load(&e->failed) && e->ch != NULL) {
            pf_rpc_channel_destroy(e->ch);
            e->ch = NULL;
        }
    }
    if (record && results != NULL && p->job_count > 0) {
        if (pf_registry_record_probes(conn, results, p->job_count, &changed, &err) != PF_OK)
            pf_log_warn("probe_record_failed", "error=\"%s\"", err.msg);
        else if (changed > 0)
            pf_log_info("health_changed", "instances=%zu", changed);
    }
    pf_metric_observe(p->m_round_seconds, NULL,
                      (double)(pf_time_mono_ms() - p->round_started) / 1000.0);
    pf_log_debug("probe_round", "probed=%zu serving=%zu changed=%zu ms=%lld", p->job_count, serving,
                 changed, (long long)(pf_time_mono_ms() - p->round_started));
    free(results);
    free(p->jobs);
    p->jobs = NULL;
    p->job_count = 0;
    p->round_open = false;
}

static void *prober_main(void *arg)
{
    struct pf_prober *p = arg;
    struct pf_registry_conn *conn = pf_registry_conn_create(p->registry, 2000);
    int64_t ttl = pf_prober_lock_ttl_ms(p->interval_ms), next_round = 0;
    struct pf_lease lease;
    bool lease_ready = false, was_active = false;
    struct pf_error err;

    if (conn == NULL) {
        pf_log_error("prober_failed", "error=\"out of memory\"");
        return NULL;
    }
    while (!atomic_load(&p->stop)) {
        int64_t now = pf_time_mono_ms();
        bool active;

        if (!lease_ready) {
            struct pf_redis *r = pf_registry_conn_redis(conn, &err);
            if (r != NULL && pf_lease_init(&lease, r, PF_DISC_KEY_PROBER, p->holder, ttl, ttl / 5,
                                           &err) == PF_OK)
                lease_ready = true;
        }
        if (lease_ready && now >= pf_lease_state_next_attempt_at(&lease.state, now)) {
            if (pf_lease_refresh(&lease, &err) != PF_OK)
                pf_log_debug("prober_lock_failed", "error=\"%s\"", err.msg);
        }
        now = pf_time_mono_ms();
        active = lease_ready && pf_lease_state_is_holder(&lease.state, now);
        if (active != was_active) {
            if (active)
                pf_log_info("prober_active", "lock=%s ttl_ms=%lld", PF_DISC_KEY_PROBER,
                            (long long)ttl);
            else
                pf_log_info("prober_standby", "holder=\"%s\"", lease.state.holder);
            was_active = active;
            pf_metric_set(p->m_active, NULL, active ? 1 : 0);
            atomic_store(&p->active, active);
            if (active)
                next_round = now;
        }
        if (p->round_open) {
            pthread_mutex_lock(&p->mu);
            bool done = p->pending == 0;
            pthread_mutex_unlock(&p->mu);
            if (done) {
                round_finish(p, conn, active);
                next_round = p->round_started + p->interval_ms;
            }
        } else if (active && now >= next_round) {
            round_start(p, conn);
            if (!p->round_open)
                next_round = now + p->interval_ms;
        }
        /* Sleep a tick, or until the round's last probe is done. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&p->mu);
        if (!(p->round_open && p->pending == 0))
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        pthread_mutex_unlock(&p->mu);
    }
    if (p->round_open) {
        pthread_mutex_lock(&p->mu);
        while (p->pending > 0)
            pthread_cond_wait(&p->cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
        round_finish(p, conn, false);
    }
    if (lease_ready && lease.state.held) {
        bool released = false;
        if (pf_lease_release(&lease, &released, &err) != PF_OK)
            pf_log_warn("prober_release_failed", "error=\"%s\"", err.msg);
        else if (released)
            pf_log_info("prober_released", NULL);
    }
    atomic_store(&p->active, false);
    map_release(&p->chans);
    pf_registry_conn_destroy(conn);
    return NULL;
}

/* ---- lifecycle ---- */

static char *dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

enum pf_status pf_prober_create(const struct pf_prober_opts *opts, struct pf_prober **out,
                                struct pf_error *err)
{
    struct pf_prober *p = calloc(1, sizeof(*p));
    pthread_condattr_t ca;

    *out = NULL;
    if (p == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    p->registry = opts->registry;
    snprintf(p->holder, sizeof(p->holder), "%s", opts->holder_id);
    p->interval_ms = opts->interval_ms > 0 ? opts->interval_ms : 2000;
    p->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 1000;
    p->concurrency = opts->concurrency > 0 ? opts->concurrency : CONCURRENCY_DEFAULT;
    p->client = opts->client;
    p->tls_cert = dup_or_null(opts->client.tls.cert);
    p->tls_key = dup_or_null(opts->client.tls.key);
    p->tls_ca = dup_or_null(opts->client.tls.ca);
    p->client.tls.cert = p->tls_cert;
    p->client.tls.key = p->tls_key;
    p->client.tls.ca = p->tls_ca;
    p->client.token = NULL; /* Health needs none */
    p->client.max_redirects = -1;
    p->client.keepalive_ms = -1;
    p->wq = pf_workq_create(p->concurrency, 0);
    if (p->wq == NULL) {
        pf_prober_destroy(p);
        return pf_error_set(err, PF_E_RESOURCE, "could not start the probe threads");
    }
    atomic_init(&p->stop, false);
    atomic_init(&p->active, false);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->m_active = pf_metrics_gauge(opts->metrics, "printfarm_discovery_prober_active",
                                   "1 while this replica runs the health probes", NULL);
    p->m_probes = pf_metrics_counter(opts->metrics, "printfarm_discovery_probes_total",
                                     "health probes by result", "result");
    p->m_round_seconds =
        pf_metrics_histogram(opts->metrics, "printfarm_discovery_probe_round_duration_seconds",
                             "time to probe every instance once", NULL, NULL, 0);
    p->m_targets = pf_metrics_gauge(opts->metrics, "printfarm_discovery_probe_targets",
                                    "instances in the last probe round", NULL);
    pf_metric_set(p->m_active, NULL, 0);
    *out = p;
    return PF_OK;
}

enum pf_status pf_prober_start(struct pf_prober *p, struct pf_error *err)
{
    if (pthread_create(&p->thread, NULL, prober_main, p) != 0)
        return pf_error_set(err, PF_E_RESOURCE, "could not start the prober thread");
    p->started = true;
    return PF_OK;
}

void pf_prober_stop(struct pf_prober *p)
{
    if (p == NULL || !p->started)
        return;
    atomic_store(&p->stop, true);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    p->started = false;
}

bool pf_prober_active(struct pf_prober *p)
{
    return p != NULL && atomic_load(&p->active);
}

void pf_prober_destroy(struct pf_prober *p)
{
    if (p == NULL)
        return;
    pf_prober_stop(p);
    if (p->wq != NULL) {
        pf_workq_destroy(p->wq);
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
    }
    free(p->tls_cert);
    free(p->tls_key);
    free(p->tls_ca);
    free(p);
}
