/* The start-up and shut-down sequence every Printfarm server shares: flags,
 * logger, metrics, tokens, gRPC server, admin HTTP server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "service.h"

enum pf_status pf_service_parse_flags(const struct pf_config *cfg, int argc, char **argv,
                                      int *exit_code)
{
    struct pf_error err;
    enum pf_status rc = pf_config_parse(cfg, argc, argv, stdout, NULL, &err);
    if (rc == PF_E_END) {
        *exit_code = 0;
    } else if (rc != PF_OK) {
        fprintf(stderr, "%s: %s\n", cfg->program, err.msg);
        *exit_code = 2;
    }
    return rc;
}

enum pf_status pf_service_init(struct pf_service *svc, const char *component,
                               const struct pf_service_flags *flags, const char *health_name,
                               struct pf_error *err)
{
    enum pf_log_level level;
    enum pf_status rc;

    memset(svc, 0, sizeof(*svc));
    svc->component = component;
    svc->flags = flags;
    if (pf_log_level_parse(flags->log_level, &level) != PF_OK)
        return pf_error_set(err, PF_E_INVALID,
                            "invalid --log-level '%s': use debug, info, warn or error",
                            flags->log_level);
    pf_log_init(level, component);
    pf_signals_install();
    svc->metrics = pf_metrics_create();
    if (svc->metrics == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    if (flags->tokens != NULL && flags->tokens[0] != '\0') {
        rc = pf_auth_load(flags->tokens, &svc->auth, err);
        if (rc != PF_OK)
            goto out_release;
        pf_log_info("tokens_loaded", "file=%s count=%zu", flags->tokens, pf_auth_count(svc->auth));
    }
    struct pf_rpc_server_opts opts = {
        .listen = flags->listen,
        .tls = {flags->tls_cert, flags->tls_key, flags->tls_ca},
        .auth = svc->auth,
        .max_message_bytes = flags->max_message,
        .max_total_queued_bytes = flags->max_queued,
        .shutdown_grace_ms = flags->shutdown_grace_ms,
        .metrics = svc->metrics,
        .name = health_name,
    };
    svc->rpc = pf_rpc_server_create(&opts, err);
    if (svc->rpc == NULL) {
        rc = err->code;
        goto out_release;
    }
    return PF_OK;
out_release:
    pf_service_release(svc);
    return rc;
}

enum pf_status pf_service_start(struct pf_service *svc, pf_admin_ready_fn ready, void *ready_arg,
                                struct pf_error *err)
{
    enum pf_status rc = pf_rpc_server_start(svc->rpc, err);
    if (rc != PF_OK)
        return rc;
    pf_log_info("listening", "address=%s port=%d tls=%s tokens=%s", svc->flags->listen,
                pf_rpc_server_port(svc->rpc),
                svc->flags->tls_cert != NULL ? (svc->flags->tls_ca != NULL ? "mutual" : "on")
                                             : "off",
                svc->auth != NULL ? "on" : "off");
    if (svc->flags->admin_listen != NULL && svc->flags->admin_listen[0] != '\0') {
        svc->admin = pf_admin_start(svc->flags->admin_listen, svc->metrics, ready, ready_arg, err);
        if (svc->admin == NULL)
            return err->code;
    }
    return PF_OK;
}

void pf_service_run(struct pf_service *svc)
{
    pf_rpc_server_run(svc->rpc);
}

void pf_service_release(struct pf_service *svc)
{
    pf_admin_stop(svc->admin);
    svc->admin = NULL;
    pf_rpc_server_destroy(svc->rpc);
    svc->rpc = NULL;
    pf_auth_destroy(svc->auth);
    svc->auth = NULL;
    pf_metrics_destroy(svc->metrics);
    svc->metrics = NULL;
}
