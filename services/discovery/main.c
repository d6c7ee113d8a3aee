/* pf-discovery: wiring only. Parses flags, creates the Redis registry, the
 * worker queue, the event feed, the prober and (with --beacon on) the LAN
 * beacon, starts the gRPC + admin servers and serves until SIGTERM. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include "beacon.h"
#include "config.h"
#include "discovery_client.h"
#include "discovery_service.h"
#include "feed.h"
#include "log.h"
#include "prober.h"
#include "registry.h"
#include "service.h"
#include "timeutil.h"

struct disc_flags {
    struct pf_service_flags common;
    char *redis_url;
    char *advertise;
    char *farm;
    char *beacon;
    char *beacon_group;
    int64_t beacon_port;
    int64_t beacon_interval_ms;
    char *beacon_interface;
    int64_t probe_interval_ms;
    int64_t probe_timeout_ms;
    int64_t probe_concurrency;
    int64_t workers;
};

static bool ready(void *arg, struct pf_buf *why)
{
    struct pf_registry *reg = arg;
    char reason[PF_ERROR_MSG_MAX];
    if (pf_signals_stop_requested()) {
        if (pf_buf_printf(why, "shutting down") != PF_OK)
            return false;
        return false;
    }
    if (pf_registry_redis_ok(reg, reason, sizeof(reason)))
        return true;
    if (pf_buf_printf(why, "%s", reason) != PF_OK)
        return false;
    return false;
}

/* --advertise, or the listen host with the bound port. wildcard_ok keeps
 * 0.0.0.0 (the beacon's "my source address"); otherwise it becomes the host
 * name. */
static void advertise_address(const struct disc_flags *f, int port, bool wildcard_ok, char *out,
                              size_t out_size)
{
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
        if (wildcard_ok) {
            snprintf(out, out_size, "0.0.0.0:%d", port);
            return;
        }
        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "127.0.0.1");
        host[sizeof(host) - 1] = '\0';
    }
    if (strchr(host, ':') != NULL)
        snprintf(out, out_size, "[%.180s]:%d", host, port);
    else
        snprintf(out, out_size, "%.180s:%d", host, port);
}

/* This replica's id in its own DISCOVERY entry: host name and port, with
 * characters outside [A-Za-z0-9._-] replaced. */
static void self_id(int port, char *out, size_t out_size)
{
    char host[48];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "discovery");
    host[sizeof(host) - 1] = '\0';
    for (char *c = host; *c != '\0'; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '-' || *c == '_'))
            *c = '-';
    }
    snprintf(out, out_size, "%s-%d", host, port);
}

int main(int argc, char **argv)
{
    struct disc_flags f = {0};
    const struct pf_flag flags[] = {
        PF_SERVICE_FLAGS(f.common, "127.0.0.1:7500", "127.0.0.1:9510"),
        {"redis-url", PF_FLAG_STRING, &f.redis_url, "redis://127.0.0.1:6379",
         "Redis URL (registry; use the scheduler's, so Resolve sees its leader lease)", 0, 0},
        {"advertise", PF_FLAG_STRING, &f.advertise, NULL,
         "HOST:PORT others dial for this replica (default: listen host, bound port)", 0, 0},
        {"farm", PF_FLAG_STRING, &f.farm, PF_DISCOVERY_FARM_DEFAULT,
         "farm name carried in the beacon (agents accept only their farm's)", 0, 0},
        {"beacon", PF_FLAG_STRING, &f.beacon, "off",
         "on: announce this replica on the LAN by UDP multicast; off", 0, 0},
        {"beacon-group", PF_FLAG_STRING, &f.beacon_group, PF_BEACON_GROUP_DEFAULT,
         "beacon IPv4 multicast group", 0, 0},
        {"beacon-port", PF_FLAG_INT, &f.beacon_port, "7570", "beacon UDP port", 1, 65535},
        {"beacon-interval", PF_FLAG_DURATION_MS, &f.beacon_interval_ms, "2s",
         "time between beacons", 100, 3600000},
        {"beacon-interface", PF_FLAG_STRING, &f.beacon_interface, NULL,
         "interface name or IPv4 address to send beacons on (default: by routing)", 0, 0},
        {"probe-interval", PF_FLAG_DURATION_MS, &f.probe_interval_ms, "2s",
         "how often the active prober checks every instance", 100, 3600000},
        {"probe-timeout", PF_FLAG_DURATION_MS, &f.probe_timeout_ms, "1s",
         "deadline of one health probe", 10, 60000},
        {"probe-concurrency", PF_FLAG_INT, &f.probe_concurrency, "16", "health probes in flight", 1,
         1024},
        {"workers", PF_FLAG_INT, &f.workers, "4", "threads doing Redis work for RPCs", 1, 256},
    };
    const struct pf_config cfg = {
        .program = "pf-discovery",
        .summary = "Printfarm registry of running instances, their health, and the LAN beacon.",
        .flags = flags,
        .flag_count = sizeof(flags) / sizeof(flags[0]),
    };
    struct pf_service svc;
    struct pf_registry *reg = NULL;
    struct pf_workq *wq = NULL;
    struct pf_disc_feed *feed = NULL;
    struct pf_disc_service *disc = NULL;
    struct pf_prober *prober = NULL;
    struct pf_beacon_sender *beacon = NULL;
    struct pf_error err;
    char address[PF_DISC_ADDRESS_MAX], beacon_address[PF_DISC_ADDRESS_MAX];
    char id[PF_DISC_ID_MAX + 1], holder[PF_DISC_ADDRESS_MAX + 32];
    bool beacon_on;
    uint32_t rnd = 0;
    enum pf_status rc = PF_OK;
    int port, exit_code = 1;

    if (pf_service_parse_flags(&cfg, argc, argv, &exit_code) != PF_OK)
        goto out_config;
    exit_code = 2;
    if (strcmp(f.beacon, "on") != 0 && strcmp(f.beacon, "off") != 0) {
        fprintf(stderr, "pf-discovery: --beacon '%s': use on or off\n", f.beacon);
        goto out_config;
    }
    beacon_on = strcmp(f.beacon, "on") == 0;
    if (!pf_beacon_farm_valid(f.farm)) {
        fprintf(stderr, "pf-discovery: --farm '%s': use 1..%d characters of [A-Za-z0-9._-]\n",
                f.farm, PF_BEACON_FARM_MAX);
        goto out_config;
    }
    if (f.advertise != NULL && f.advertise[0] != '\0' &&
        pf_disc_validate_address(f.advertise, "--advertise", &err) != PF_OK) {
        fprintf(stderr, "pf-discovery: %s\n", err.msg);
        goto out_config;
    }
    if (f.probe_timeout_ms > f.probe_interval_ms) {
        fprintf(stderr,
                "pf-discovery: --probe-timeout (%lld ms) must not exceed --probe-interval (%lld "
                "ms)\n",
                (long long)f.probe_timeout_ms, (long long)f.probe_interval_ms);
        goto out_config;
    }
    if (pf_service_init(&svc, "pf-discovery", &f.common, "printfarm.v1.Discovery", &err) != PF_OK) {
        fprintf(stderr, "pf-discovery: %s\n", err.msg);
        goto out_config;
    }
    {
        struct pf_registry_opts ro = {
            .redis_url = f.redis_url, .pool_size = (int)f.workers, .metrics = svc.metrics};
        if (pf_registry_create(&ro, &reg, &err) != PF_OK) {
            fprintf(stderr, "pf-discovery: --redis-url: %s\n", err.msg);
            goto out_service;
        }
    }
    exit_code = 1;
    wq = pf_workq_create((int)f.workers, 65536);
    if (wq == NULL) {
        pf_log_error("startup_failed", "error=\"out of memory\"");
        goto out_registry;
    }
    {
        struct pf_disc_feed_opts fo = {.registry = reg, .metrics = svc.metrics};
        if (pf_disc_feed_create(&fo, &feed, &err) != PF_OK) {
            pf_log_error("startup_failed", "error=\"%s\"", err.msg);
            goto out_modules;
        }
    }
    disc = pf_disc_service_create(reg, feed, wq, svc.metrics);
    if (disc == NULL) {
        pf_log_error("startup_failed", "error=\"out of memory\"");
        goto out_modules;
    }
    if (pf_disc_service_register(disc, svc.rpc, &err) != PF_OK ||
        pf_service_start(&svc, ready, reg, &err) != PF_OK) {
        pf_log_error("startup_failed", "error=\"%s\"", err.msg);
        goto out_modules;
    }
    /* Names that need the bound port. */
    port = pf_rpc_server_port(svc.rpc);
    advertise_address(&f, port, false, address, sizeof(address));
    advertise_address(&f, port, true, beacon_address, sizeof(beacon_address));
    self_id(port, id, sizeof(id));
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)pf_time_mono_ms();
    snprintf(holder, sizeof(holder), "%s|%ld-%08x", address, (long)getpid(), rnd);
    if (pf_disc_validate_address(address, "advertised address", &err) == PF_OK)
        rc = pf_disc_feed_set_self(feed, id, address, &err);
    else
        pf_log_warn("self_not_registered", "error=\"%s\"", err.msg);
    if (rc == PF_OK)
        rc = pf_disc_feed_start(feed, &err);
    if (rc == PF_OK) {
        struct pf_prober_opts po = {
            .registry = reg,
            .metrics = svc.metrics,
            .holder_id = holder,
            .interval_ms = f.probe_interval_ms,
            .timeout_ms = f.probe_timeout_ms,
            .concurrency = (int)f.probe_concurrency,
        };
        /* With mutual TLS on, the farm shares one CA: probes present this
         * replica's certificate and verify the instance with the CA. */
        if (f.common.tls_ca != NULL && f.common.tls_ca[0] != '\0')
            po.client.tls =
                (struct pf_tls_files){f.common.tls_cert, f.common.tls_key, f.common.tls_ca};
        rc = pf_prober_create(&po, &prober, &err);
        if (rc == PF_OK)
            rc = pf_prober_start(prober, &err);
    }
    if (rc == PF_OK && beacon_on) {
        struct pf_beacon_sender_opts bo = {
            .group = f.beacon_group,
            .port = (int)f.beacon_port,
            .interface = f.beacon_interface,
            .interval_ms = f.beacon_interval_ms,
            .farm = f.farm,
            .discovery = beacon_address,
            .metrics = svc.metrics,
        };
        if (strncmp(beacon_address, "127.", 4) == 0 || strncmp(beacon_address, "[::1]", 5) == 0 ||
            strncmp(beacon_address, "localhost:", 10) == 0)
            pf_log_warn("beacon_loopback",
                        "discovery=%s note=\"agents on other hosts cannot dial a loopback "
                        "address: set --listen or --advertise\"",
                        beacon_address);
        rc = pf_beacon_sender_start(&bo, &beacon, &err);
    }
    if (rc != PF_OK) {
        pf_log_error("startup_failed", "error=\"%s\"", err.msg);
        pf_rpc_server_request_stop(svc.rpc);
    } else {
        pf_log_info("discovery_ready", "advertise=%s id=%s redis=%s farm=%s beacon=%s", address, id,
                    pf_registry_redis_target(reg), f.farm, f.beacon);
        exit_code = 0;
    }
    pf_service_run(&svc);
out_modules:
    /* The beacon and the prober first (the lock is handed over at once), then
     * the drained server, then the feed (it deregisters this replica), then
     * the workers and what they used. */
    pf_beacon_sender_stop(beacon);
    pf_prober_destroy(prober);
    pf_rpc_server_destroy(svc.rpc);
    svc.rpc = NULL;
    pf_disc_feed_stop(feed);
    if (wq != NULL)
        pf_workq_destroy(wq);
    pf_disc_service_destroy(disc);
    pf_disc_feed_destroy(feed);
out_registry:
    pf_registry_destroy(reg);
out_service:
    pf_service_release(&svc);
out_config:
    pf_config_release(&cfg);
    pf_log_info("exit", "code=%d", exit_code);
    return exit_code;
}
