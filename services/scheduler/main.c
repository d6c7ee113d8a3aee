/* pf-scheduler: wiring only. Parses flags, applies the schema migrations,
 * creates the modules (leader, agents, events, dispatcher, API), starts the
 * gRPC + admin servers, then the leader and dispatcher threads, and serves
 * until SIGTERM. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include "config.h"
#include "discovery_client.h"
#include "lease.h"
#include "log.h"
#include "modules.h"
#include "schema.h"
#include "service.h"
#include "timeutil.h"

struct sched_flags {
    struct pf_service_flags common;
    char *database_url;
    char *redis_url;
    char *files;
    char *advertise;
    char *token;
    char *discovery;
    int64_t lease_ttl_ms;
    int64_t lease_renew_ms;
    int64_t lost_grace_ms;
    int64_t hello_timeout_ms;
    int64_t dispatch_interval_ms;
    int64_t status_interval_ms;
    int64_t max_attempts_per_printer;
    int64_t max_printers;
    int64_t quarantine_after;
    int64_t workers;
    int64_t db_pool;
};

static bool ready(void *arg, struct pf_buf *why)
{
    struct pf_sched *s = arg;
    if (pf_signals_stop_requested()) {
        if (pf_buf_printf(why, "shutting down") != PF_OK)
            return false;
        return false;
    }
    return pf_sched_leader_ready(s, why);
}

/* Applies the migrations, retrying while the database cannot be reached (it
 * may start after us under compose) until a stop is requested. */
static enum pf_status migrate(struct pf_sched *s, struct pf_error *err)
{
    int64_t pause = 200;
    for (;;) {
        struct pf_pg_conn *conn;
        enum pf_status rc = pf_pg_pool_checkout(s->pool, 5000, &conn, err);
        if (rc == PF_OK) {
            rc = pf_pg_migrate(conn, pf_sched_migrations, pf_sched_migration_count, err);
            pf_pg_pool_checkin(s->pool, conn);
        }
        if (rc != PF_E_UNAVAILABLE)
            return rc;
        pf_log_warn("database_unavailable", "error=\"%s\" retry_ms=%lld", err->msg,
                    (long long)pause);
        for (int64_t slept = 0; slept < pause; slept += 50) {
            if (pf_signals_stop_requested())
                return rc;
            pf_time_sleep_ms(50);
        }
        if (pause < 5000)
            pause *= 2;
    }
}

/* --advertise, or the listen host with the bound port (the host name when
 * listening on every interface). */
static void advertise_address(const struct sched_flags *f, int port, char *out, size_t out_size)
{
    /* out_size is at least sizeof(host) + 8 */
    char host[200];
    int unused;
    struct pf_error err;
    if (f->advertise != NULL && f->advertise[0] != '\0') {
        snprintf(out, out_size, "%s", f->advertise);
        return;
    }
    if (pf_config_parse_hostport(f->common.listen, host, sizeof(host), &unused, &err) != PF_OK)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0) {
        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "127.0.0.1");
        host[sizeof(host) - 1] = '\0';
    }
    if (strchr(host, ':') != NULL)
        snprintf(out, out_size, "[%.180s]:%d", host, port);
    else
        snprintf(out, out_size, "%.180s:%d", host, port);
}

int main(int argc, char **argv)
{
    struct sched_flags f = {0};
    const struct pf_flag flags[] = {
        PF_SERVICE_FLAGS(f.common, "127.0.0.1:7400", "127.0.0.1:9400"),
        {"database-url", PF_FLAG_STRING, &f.database_url, "postgresql://127.0.0.1:5432/printfarm",
         "PostgreSQL libpq URL", 0, 0},
        {"redis-url", PF_FLAG_STRING, &f.redis_url, "redis://127.0.0.1:6379",
         "Redis URL (leader lease)", 0, 0},
        {"files", PF_FLAG_STRING, &f.files, "127.0.0.1:7300", "pf-files HOST:PORT", 0, 0},
        {"advertise", PF_FLAG_STRING, &f.advertise, NULL,
         "HOST:PORT clients should use for this replica (default: listen host, bound port)", 0, 0},
        {"token", PF_FLAG_STRING, &f.token, NULL, "bearer token this replica sends to pf-files", 0,
         0},
        {"lease-ttl", PF_FLAG_DURATION_MS, &f.lease_ttl_ms, "1500ms", "leader lease time to live",
         PF_LEASE_TTL_MIN_MS, 3600000},
        {"lease-renew", PF_FLAG_DURATION_MS, &f.lease_renew_ms, "300ms",
         "how often the leader renews (and followers try) the lease", 10, 1200000},
        {"lost-grace", PF_FLAG_DURATION_MS, &f.lost_grace_ms, "30s",
         "how long an attempt waits for its disconnected agent before it is lost", 0, 86400000},
        {"hello-timeout", PF_FLAG_DURATION_MS, &f.hello_timeout_ms, "10s",
         "a Connect stream that sends no hello this long after opening ends with "
         "DEADLINE_EXCEEDED (0: wait forever)",
         0, 3600000},
        {"dispatch-interval", PF_FLAG_DURATION_MS, &f.dispatch_interval_ms, "1s",
         "dispatch round period (rounds also run when kicked)", 10, 3600000},
        {"status-interval", PF_FLAG_DURATION_MS, &f.status_interval_ms, "1s",
         "how often agents send status while nothing changes", 100, 3600000},
        {"max-attempts-per-printer", PF_FLAG_INT, &f.max_attempts_per_printer, "1",
         "farm default: failures of a job on one printer before it is excluded there", 1, 100},
        {"max-printers", PF_FLAG_INT, &f.max_printers, "2",
         "farm default: distinct printers a job may fail on before it is failed", 1, 100},
        {"quarantine-after", PF_FLAG_INT, &f.quarantine_after, "3",
         "consecutive failures of different jobs that quarantine a printer", 1, 1000},
        {"workers", PF_FLAG_INT, &f.workers, "8", "threads doing database work", 1, 256},
        {"db-pool", PF_FLAG_INT, &f.db_pool, "8", "PostgreSQL connections in the pool", 1, 1000},
        {"discovery", PF_FLAG_STRING, &f.discovery, NULL,
         "pf-discovery HOST:PORT to register with (empty: do not register)", 0, 0},
    };
    const struct pf_config cfg = {
        .program = "pf-scheduler",
        .summary = "Printfarm print queue, dispatcher and agent hub (one leader among replicas).",
        .flags = flags,
        .flag_count = sizeof(flags) / sizeof(flags[0]),
    };
    struct pf_service svc;
    struct pf_sched s;
    struct pf_error err;
    char advertise[200], instance[PF_LEASE_ID_MAX], disc_id[80];
    struct pf_discovery_client *disc = NULL;
    int exit_code = 1;
    bool threads = false;

    memset(&s, 0, sizeof(s));
    if (pf_service_parse_flags(&cfg, argc, argv, &exit_code) != PF_OK)
        goto out_config;
    exit_code = 2;
    if (f.lease_renew_ms * 2 > f.lease_ttl_ms) {
        fprintf(stderr,
                "pf-scheduler: --lease-renew (%lld ms) must be at most half of --lease-ttl "
                "(%lld ms)\n",
                (long long)f.lease_renew_ms, (long long)f.lease_ttl_ms);
        goto out_config;
    }
    if (pf_service_init(&svc, "pf-scheduler", &f.common, "printfarm.v1.Scheduler", &err) != PF_OK) {
        fprintf(stderr, "pf-scheduler: %s\n", err.msg);
        goto out_config;
    }
    exit_code = 1;
    s.cfg = (struct pf_sched_config){
        .database_url = f.database_url,
        .redis_url = f.redis_url,
        .files_addr = f.files,
        .advertise = "",
        .instance_id = "",
        .lease_ttl_ms = f.lease_ttl_ms,
        .lease_renew_ms = f.lease_renew_ms,
        .lost_grace_ms = f.lost_grace_ms,
        .hello_timeout_ms = f.hello_timeout_ms,
        .dispatch_interval_ms = f.dispatch_interval_ms,
        .status_interval_ms = f.status_interval_ms,
        .default_max_attempts_per_printer = f.max_attempts_per_printer,
        .default_max_printers = f.max_printers,
        .quarantine_after = f.quarantine_after,
        .files_opts = {.token = f.token},
    };
    s.metrics = svc.metrics;
    s.rpc = svc.rpc;
    if (pf_pg_pool_create(f.database_url, (int)f.db_pool, 5000, &s.pool, &err) != PF_OK) {
        pf_log_error("startup_failed", "error=\"%s\"", err.msg);
        goto out_service;
    }
    s.wq = pf_workq_create((int)f.workers, 16384);
    if (s.wq == NULL) {
        pf_log_error("startup_failed", "error=\"out of memory\"");
        goto out_modules;
    }
    s.files = pf_rpc_channel_create(f.files, &s.cfg.files_opts, &err);
    if (s.files == NULL) {
        pf_log_error("startup_failed", "error=\"%s\"", err.msg);
        goto out_modules;
    }
    if (migrate(&s, &err) != PF_OK) {
        pf_log_error("migration_failed", "error=\"%s\"", err.msg);
        goto out_modules;
    }
    if (pf_sched_leader_create(&s, &err) != PF_OK || pf_sched_agents_create(&s, &err) != PF_OK ||
        pf_sched_events_create(&s, &err) != PF_OK ||
        pf_sched_dispatcher_create(&s, &err) != PF_OK || pf_sched_api_register(&s, &err) != PF_OK ||
        pf_sched_agents_register(&s, &err) != PF_OK ||
        pf_sched_events_register(&s, &err) != PF_OK ||
        pf_service_start(&svc, ready, &s, &err) != PF_OK) {
        pf_log_error("startup_failed", "error=\"%s\"", err.msg);
        goto out_modules;
    }
    advertise_address(&f, pf_rpc_server_port(svc.rpc), advertise, sizeof(advertise));
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)pf_time_mono_ms();
    snprintf(instance, sizeof(instance), "%.200s|%ld-%08x", advertise, (long)getpid(), rnd);
    s.cfg.advertise = advertise;
    s.cfg.instance_id = instance;
    pf_discovery_default_id(pf_rpc_server_port(svc.rpc), disc_id, sizeof(disc_id));
    if (pf_discovery_register_self(f.discovery, PF_DISCOVERY_KIND_SCHEDULER, disc_id, advertise,
                                   NULL, 0, &s.cfg.files_opts, "pf-scheduler", &disc,
                                   &err) != PF_OK) {
        pf_log_error("startup_failed", "error=\"--discovery: %s\"", err.msg);
        pf_rpc_server_request_stop(svc.rpc);
    }
    if (pf_sched_leader_start(&s, &err) != PF_OK || pf_sched_dispatcher_start(&s, &err) != PF_OK) {
        pf_log_error("startup_failed", "error=\"%s\"", err.msg);
        pf_rpc_server_request_stop(svc.rpc);
    }
    threads = true;
    pf_log_info("scheduler_ready", "advertise=%s instance=%s lease_ttl_ms=%lld lost_grace_ms=%lld",
                advertise, instance, (long long)f.lease_ttl_ms, (long long)f.lost_grace_ms);
    pf_service_run(&svc);
    exit_code = 0;
out_modules:
    pf_discovery_client_destroy(disc); /* deregisters */
    /* Threads first (the leader hands the lease over), then the server is
     * drained, then the workers, then what they used. */
    if (threads) {
        pf_sched_leader_stop(&s);
        pf_sched_dispatcher_stop(&s);
    }
    pf_rpc_server_destroy(svc.rpc);
    svc.rpc = NULL;
    s.rpc = NULL;
    if (s.wq != NULL)
        pf_workq_destroy(s.wq);
    pf_sched_dispatcher_destroy(&s);
    pf_sched_events_destroy(&s);
    pf_sched_agents_destroy(&s);
    pf_sched_leader_destroy(&s);
    if (s.files != NULL)
        pf_rpc_channel_destroy(s.files);
    pf_pg_pool_destroy(s.pool);
out_service:
    pf_service_release(&svc);
out_config:
    pf_config_release(&cfg);
    pf_log_info("exit", "code=%d", exit_code);
    return exit_code;
}
