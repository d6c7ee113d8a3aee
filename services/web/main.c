/* pf-web: the operator's web page and its JSON + SSE API, a gateway that
 * reads and acts on the farm through gRPC with each operator's own token.
 * main.c only wires: flags, logger, metrics, admin server, HTTP server. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "web.h"

static struct pf_web_config cfg;

static const struct pf_flag flags[] = {
    {"listen", PF_FLAG_STRING, &cfg.listen, "0.0.0.0:8080",
     "HTTP address HOST:PORT of the page and API (port 0 picks a free port)", 0, 0},
    {"admin-listen", PF_FLAG_STRING, &cfg.admin_listen, "127.0.0.1:9800",
     "admin HTTP address for /metrics, /healthz, /readyz", 0, 0},
    {"log-level", PF_FLAG_STRING, &cfg.log_level, "info", "debug, info, warn or error", 0, 0},
    {"tls-cert", PF_FLAG_STRING, &cfg.tls_cert, NULL, "PEM certificate: serves HTTPS on --listen",
     0, 0},
    {"tls-key", PF_FLAG_STRING, &cfg.tls_key, NULL, "PEM private key of --tls-cert", 0, 0},
    {"tls-ca", PF_FLAG_STRING, &cfg.tls_ca, NULL,
     "PEM CA bundle of the gRPC servers: turns TLS on towards them", 0, 0},
    {"grpc-cert", PF_FLAG_STRING, &cfg.grpc_cert, NULL,
     "PEM client certificate shown to the gRPC servers (mutual TLS)", 0, 0},
    {"grpc-key", PF_FLAG_STRING, &cfg.grpc_key, NULL, "PEM private key of --grpc-cert", 0, 0},
    {"tls-server-name", PF_FLAG_STRING, &cfg.tls_server_name, NULL,
     "TLS name to expect from the gRPC servers", 0, 0},
    {"scheduler", PF_FLAG_STRING, &cfg.scheduler, "127.0.0.1:7400",
     "pf-scheduler HOST:PORT[,HOST:PORT...] (any replicas: the leader redirect is followed)", 0, 0},
    {"files", PF_FLAG_STRING, &cfg.files, "127.0.0.1:7300", "pf-files HOST:PORT", 0, 0},
    {"discovery", PF_FLAG_STRING, &cfg.discovery, NULL,
     "pf-discovery HOST:PORT for the farm health view (optional)", 0, 0},
    {"max-upload", PF_FLAG_SIZE, &cfg.max_upload, "256M",
     "largest request body (all gcode files of one submit)", 1024, (int64_t)1 << 32},
    {"timeout", PF_FLAG_DURATION_MS, &cfg.timeout_ms, "15s", "deadline of each gRPC call", 100,
     600000},
    {"session-idle", PF_FLAG_DURATION_MS, &cfg.session_idle_ms, "12h",
     "a login ends after this long without a request", 1000, (int64_t)30 * 24 * 3600000},
    {"max-sessions", PF_FLAG_INT, &cfg.max_sessions, "1024",
     "logins kept at once (the least recently used is dropped)", 1, 100000},
    {"max-streams", PF_FLAG_INT, &cfg.max_streams, "200", "event streams (SSE) open at once", 1,
     10000},
};

static const struct pf_config config = {
    "pf-web",
    "the farm's web page and JSON/SSE API, a gateway to pf-scheduler, pf-files and pf-discovery",
    flags,
    sizeof flags / sizeof flags[0],
};

static bool ready(void *arg, struct pf_buf *why)
{
    struct pf_web *w = arg;
    if (atomic_load(&w->stopping)) {
        if (pf_buf_printf(why, "shutting down") != PF_OK)
            return false;
        return false;
    }
    return true;
}

/* Splits --scheduler "A,B,C" into w->sched_targets; the session channels
 * start at the first one. */
static enum pf_status parse_schedulers(struct pf_web *w, const char *list)
{
    const char *p = list;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        char host[256];
        int port;
        struct pf_error err;
        if (w->n_sched == PF_WEB_SCHED_MAX || len == 0 || len >= PF_RPC_TARGET_MAX) {
            fprintf(stderr, "pf-web: --scheduler takes 1 to %d HOST:PORT separated by commas\n",
                    PF_WEB_SCHED_MAX);
            return PF_E_INVALID;
        }
        memcpy(w->sched_targets[w->n_sched], p, len);
        w->sched_targets[w->n_sched][len] = '\0';
        if (pf_config_parse_hostport(w->sched_targets[w->n_sched], host, sizeof host, &port,
                                     &err) != PF_OK) {
            fprintf(stderr, "pf-web: --scheduler: %s\n", err.msg);
            return PF_E_INVALID;
        }
        w->n_sched++;
        p += len;
        if (*p == ',')
            p++;
    }
    if (w->n_sched == 0) {
        fprintf(stderr, "pf-web: --scheduler needs at least one HOST:PORT\n");
        return PF_E_INVALID;
    }
    return PF_OK;
}

int main(int argc, char **argv)
{
    struct pf_error err;
    pf_error_clear(&err);
    int rc = 1;
    enum pf_status st = pf_config_parse(&config, argc, argv, stdout, NULL, &err);
    if (st == PF_E_END)
        return 0;
    if (st != PF_OK) {
        fprintf(stderr, "pf-web: %s\n", err.msg);
        return 2;
    }
    enum pf_log_level level;
    if (pf_log_level_parse(cfg.log_level, &level) != PF_OK) {
        fprintf(stderr, "pf-web: --log-level takes debug, info, warn or error, not '%s'\n",
                cfg.log_level);
        goto out_config;
    }
    if ((cfg.tls_cert == NULL) != (cfg.tls_key == NULL) ||
        (cfg.grpc_cert == NULL) != (cfg.grpc_key == NULL)) {
        fprintf(stderr, "pf-web: --tls-cert/--tls-key and --grpc-cert/--grpc-key go in pairs\n");
        goto out_config;
    }
    pf_log_init(level, "web");
    static struct pf_web w;
    if (parse_schedulers(&w, cfg.scheduler) != PF_OK)
        goto out_config;
    signal(SIGPIPE, SIG_IGN);

    sigset_t stop_sigs;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGTERM);
    sigaddset(&stop_sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_sigs, NULL); /* every thread inherits this */

    w.cfg = &cfg;
    w.https = cfg.tls_cert != NULL;
    pthread_mutex_init(&w.lock, NULL);
    w.sessions = calloc((size_t)cfg.max_sessions, sizeof *w.sessions);
    w.metrics = pf_metrics_create();
    if (w.sessions == NULL || w.metrics == NULL) {
        fprintf(stderr, "pf-web: out of memory\n");
        goto out_web;
    }
    w.requests = pf_metrics_counter(w.metrics, "printfarm_web_http_requests_total",
                                    "HTTP requests by route group and status code", "route,code");
    w.sessions_g =
        pf_metrics_gauge(w.metrics, "printfarm_web_sessions", "logged-in sessions", NULL);
    w.streams_g =
        pf_metrics_gauge(w.metrics, "printfarm_web_event_streams", "open SSE event streams", NULL);
    w.upstream_err = pf_metrics_counter(w.metrics, "printfarm_web_upstream_errors_total",
                                        "gRPC calls that failed on the server side", "service");

    struct pf_admin *admin = pf_admin_start(cfg.admin_listen, w.metrics, ready, &w, &err);
    if (admin == NULL) {
        pf_log_error("start_failed", "error=\"%s\"", err.msg);
        goto out_web;
    }
    struct pf_web_http *http = pf_web_http_start(&w, &err);
    if (http == NULL) {
        pf_log_error("start_failed", "error=\"%s\"", err.msg);
        pf_admin_stop(admin);
        goto out_web;
    }
    pf_log_info("started", "scheduler=%s files=%s discovery=%s", cfg.scheduler, cfg.files,
                cfg.discovery ? cfg.discovery : "-");
    int sig = 0;
    sigwait(&stop_sigs, &sig);
    pf_log_info("stopping", "signal=%d", sig);
    atomic_store(&w.stopping, true);
    pf_web_http_stop(http);
    pf_admin_stop(admin);
    rc = 0;
out_web:
    if (w.sessions != NULL) {
        for (int64_t i = 0; i < cfg.max_sessions; i++) {
            struct pf_web_session *s = w.sessions[i];
            if (s != NULL) {
                pf_web_session_end(&w, s);
                s->refs++;
                pf_web_session_put(&w, s);
            }
        }
        free(w.sessions);
    }
    for (size_t i = 0; i < PF_WEB_BUNDLE_CACHE; i++)
        free(w.bundles[i].json);
    pf_metrics_destroy(w.metrics);
    pthread_mutex_destroy(&w.lock);
out_config:
    pf_config_release(&config);
    return rc;
}
