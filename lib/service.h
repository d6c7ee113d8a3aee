/* What every Printfarm server binary shares: the common flags (--listen,
 * --admin-listen, --log-level, TLS, tokens, message size and send queue
 * limits), logger and metrics set-up, the gRPC server and the admin HTTP
 * server, started and stopped in one order. A service's main.c declares its
 * own flags next to PF_SERVICE_FLAGS, fills a struct pf_service and adds its
 * methods. */
#ifndef PF_SERVICE_H
#define PF_SERVICE_H

#include "admin.h"
#include "config.h"
#include "metrics.h"
#include "rpc/auth.h"
#include "rpc/server.h"

struct pf_service_flags {
    char *listen;
    char *admin_listen;
    char *log_level;
    char *tls_cert;
    char *tls_key;
    char *tls_ca;
    char *tokens;
    uint64_t max_message;
    uint64_t max_queued;
    int64_t shutdown_grace_ms;
};

/* pf_flag initializers for the common flags, to put in a service's flag table. */
#define PF_SERVICE_FLAGS(f, listen_def, admin_def)                                                 \
    {"listen",                                                                                     \
     PF_FLAG_STRING,                                                                               \
     &(f).listen,                                                                                  \
     listen_def,                                                                                   \
     "gRPC address HOST:PORT (port 0 picks a free port)",                                          \
     0,                                                                                            \
     0},                                                                                           \
        {"admin-listen",                                                                           \
         PF_FLAG_STRING,                                                                           \
         &(f).admin_listen,                                                                        \
         admin_def,                                                                                \
         "admin HTTP address for /metrics, /healthz, /readyz",                                     \
         0,                                                                                        \
         0},                                                                                       \
        {"log-level", PF_FLAG_STRING, &(f).log_level, "info", "debug, info, warn or error", 0, 0}, \
        {"tls-cert", PF_FLAG_STRING, &(f).tls_cert, NULL, "PEM certificate: turns TLS on", 0, 0},  \
        {"tls-key", PF_FLAG_STRING, &(f).tls_key, NULL, "PEM private key of --tls-cert", 0, 0},    \
        {"tls-ca",                                                                                 \
         PF_FLAG_STRING,                                                                           \
         &(f).tls_ca,                                                                              \
         NULL,                                                                                     \
         "PEM CA bundle: clients must present a certificate it signed (mutual TLS)",               \
         0,                                                                                        \
         0},                                                                                       \
        {"tokens",                                                                                 \
         PF_FLAG_STRING,                                                                           \
         &(f).tokens,                                                                              \
         NULL,                                                                                     \
         "token file (lines: ROLE NAME TOKEN|sha256:HEX): turns bearer tokens on",                 \
         0,                                                                                        \
         0},                                                                                       \
        {"max-message",                                                                            \
         PF_FLAG_SIZE,                                                                             \
         &(f).max_message,                                                                         \
         "4M",                                                                                     \
         "largest gRPC message accepted or sent",                                                  \
         1024,                                                                                     \
         (int64_t)1 << 30},                                                                        \
        {"max-queued",                                                                             \
         PF_FLAG_SIZE,                                                                             \
         &(f).max_queued,                                                                          \
         "64M",                                                                                    \
         "bytes queued for sending by all calls together; past it calls whose client stopped "     \
         "reading are ended with RESOURCE_EXHAUSTED",                                              \
         (int64_t)1 << 20,                                                                         \
         (int64_t)1 << 40},                                                                        \
    {                                                                                              \
        "shutdown-grace", PF_FLAG_DURATION_MS, &(f).shutdown_grace_ms, "5s",                       \
            "how long in-flight calls may finish after SIGTERM", 0, 3600000                        \
    }

struct pf_service {
    const char *component;
    struct pf_metrics *metrics;
    struct pf_auth *auth;
    struct pf_rpc_server *rpc;
    struct pf_admin *admin;
    const struct pf_service_flags *flags;
};

/* Sets up logging, the metrics registry, tokens and the gRPC server (not
 * listening yet). health_name is the gRPC service name reported by Health. */
enum pf_status pf_service_init(struct pf_service *svc, const char *component,
                               const struct pf_service_flags *flags, const char *health_name,
                               struct pf_error *err) PF_MUST_CHECK;
/* Binds the gRPC and admin ports and logs `event=listening port=N` and
 * `event=admin_listening port=N`. ready may be NULL. */
enum pf_status pf_service_start(struct pf_service *svc, pf_admin_ready_fn ready, void *ready_arg,
                                struct pf_error *err) PF_MUST_CHECK;
/* Serves until SIGTERM/SIGINT, then drains (see pf_rpc_server_run). */
void pf_service_run(struct pf_service *svc);
/* Stops the admin server and frees everything pf_service_init made. */
void pf_service_release(struct pf_service *svc);

/* Parses flags for a binary: on --help prints and returns PF_E_END; on a bad
 * flag prints "PROGRAM: message" to stderr. Returns the exit code to use when
 * not PF_OK (0 for help, 2 for bad flags) in *exit_code. */
enum pf_status pf_service_parse_flags(const struct pf_config *cfg, int argc, char **argv,
                                      int *exit_code) PF_MUST_CHECK;

#endif
