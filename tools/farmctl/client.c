/* farmctl's connections: channels to the scheduler replicas (tried in turn;
 * lib/rpc follows the leader redirect), pf-files and pf-discovery, and the
 * one place where a failed call becomes a message a person can act on and
 * an exit code a script can rely on. */
#define _GNU_SOURCE /* strcasestr */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "farmctl.h"

void fc_client_opts(const struct fc_ctx *ctx, struct pf_rpc_client_opts *out)
{
    memset(out, 0, sizeof(*out));
    out->tls.ca = ctx->cfg.tls_ca;
    out->tls.cert = ctx->cfg.tls_cert;
    out->tls.key = ctx->cfg.tls_key;
    out->token = ctx->cfg.token;
    out->server_name = ctx->cfg.tls_server_name;
    out->keepalive_ms = -1; /* short-lived calls */
    out->max_message_bytes = 64u * 1024 * 1024;
}

int fc_exit_for(enum pf_status code)
{
    switch (code) {
    case PF_OK:
        return FC_EXIT_OK;
    case PF_E_UNAVAILABLE:
    case PF_E_DEADLINE:
        return FC_EXIT_UNREACHABLE;
    default:
        return FC_EXIT_FAILED;
    }
}

/* Splits lib/rpc's "METHOD at TARGET: REST" (or "cannot reach METHOD at
 * TARGET: REST"); rest points into msg. */
static const char *detail(const char *msg, char *target, size_t tsize)
{
    const char *at = strstr(msg, " at ");
    target[0] = '\0';
    if (at == NULL)
        return msg;
    const char *colon = strstr(at + 4, ": ");
    if (colon == NULL)
        return msg;
    size_t n = (size_t)(colon - (at + 4));
    if (n >= tsize)
        n = tsize - 1;
    memcpy(target, at + 4, n);
    target[n] = '\0';
    return colon + 2;
}

/* A short reason for a connection failure from gRPC's long text. */
static const char *reach_reason(const char *text, int64_t timeout_ms, char *buf, size_t size)
{
    if (strcasestr(text, "connection refused") != NULL)
        return "connection refused";
    if (strcasestr(text, "deadline") != NULL) {
        snprintf(buf, size, "no answer within %lld ms", (long long)timeout_ms);
        return buf;
    }
    if (strcasestr(text, "handshake") != NULL || strcasestr(text, "ssl") != NULL ||
        strcasestr(text, "tls") != NULL)
        return "the TLS handshake failed (check --tls-ca, --tls-cert, --tls-key and whether the "
               "server uses TLS)";
    if (strcasestr(text, "dns") != NULL || strcasestr(text, "resolve") != NULL)
        return "the host name does not resolve";
    if (strcasestr(text, "no route") != NULL)
        return "no route to host";
    return text;
}

int fc_report(const struct fc_ctx *ctx, const char *service, const char *target,
              const struct pf_error *err)
{
    char t[PF_RPC_TARGET_MAX], buf[96];
    const char *rest = detail(err->msg, t, sizeof(t));
    if (t[0] != '\0')
        target = t;
    bool unreachable = strncmp(err->msg, "cannot reach ", 13) == 0 ||
                       (err->code == PF_E_DEADLINE && strstr(rest, "DEADLINE") != NULL);
    const char *hint = "";
    if (strcmp(service, "the scheduler") == 0)
        hint = " — is the farm running? (try: ./farm up)";
    else if (strcmp(service, "pf-files") == 0)
        hint = " — is pf-files running? (--files / PRINTFARM_FILES)";
    else if (strcmp(service, "pf-discovery") == 0)
        hint = " — is pf-discovery running? (--discovery / PRINTFARM_DISCOVERY)";

    if (unreachable) {
        fc_err("cannot reach %s at %s: %s%s", service, target,
               reach_reason(rest, ctx->cfg.timeout_ms, buf, sizeof(buf)), hint);
        return FC_EXIT_UNREACHABLE;
    }
    if (err->code == PF_E_UNAVAILABLE && strcasestr(rest, "DNS resolution failed") != NULL) {
        fc_err("cannot reach %s at %s: the host name does not resolve from here — when a "
               "follower redirected there, the leader's --advertise address must be reachable "
               "from this machine",
               service, target);
        return FC_EXIT_UNREACHABLE;
    }
    switch (err->code) {
    case PF_E_UNAUTHENTICATED:
        fc_err("%s at %s refused the request: %s — check the token (--token, PRINTFARM_TOKEN or "
               "token = in farmctl.conf)",
               service, target, rest);
        return FC_EXIT_FAILED;
    case PF_E_PERMISSION:
        fc_err("%s at %s refused the request: %s — this token's role may not do this (operator "
               "or admin needed to change things)",
               service, target, rest);
        return FC_EXIT_FAILED;
    case PF_E_UNAVAILABLE:
        fc_err("%s at %s is not available: %s — the schedulers may be electing a leader; retry "
               "in a few seconds",
               service, target, rest);
        return FC_EXIT_UNREACHABLE;
    case PF_E_DEADLINE:
        fc_err("%s at %s did not answer within %lld ms: %s", service, target,
               (long long)ctx->cfg.timeout_ms, rest);
        return FC_EXIT_UNREACHABLE;
    default:
        fc_err("%s at %s: %s", service, target, rest);
        return fc_exit_for(err->code);
    }
}

static bool is_connect_failure(const struct pf_error *err)
{
    return strncmp(err->msg, "cannot reach ", 13) == 0 || err->code == PF_E_DEADLINE;
}

/* Worth trying the next replica: this one could not be reached, has no
 * leader, or redirected to a leader address that does not work from here. */
static bool try_next(const struct pf_error *err)
{
    return is_connect_failure(err) || err->code == PF_E_UNAVAILABLE;
}

static enum pf_status open_sched(struct fc_ctx *ctx, size_t i, struct pf_error *err)
{
    struct pf_rpc_client_opts o;
    if (ctx->sched != NULL && ctx->sched_index == i)
        return PF_OK;
    pf_rpc_channel_destroy(ctx->sched);
    ctx->sched = NULL;
    fc_client_opts(ctx, &o);
    ctx->sched = pf_rpc_channel_create(ctx->cfg.sched_addrs[i], &o, err);
    ctx->sched_index = i;
    return ctx->sched != NULL ? PF_OK : err->code;
}

int fc_sched_call(struct fc_ctx *ctx, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply)
{
    struct pf_error err, first_err, other_err;
    size_t n = ctx->cfg.n_sched_addrs;
    size_t start = ctx->sched != NULL ? ctx->sched_index : 0;
    bool have_first = false, have_other = false;
    size_t other_index = 0;

    *reply = NULL;
    int found = fc_config_find_farm(&ctx->cfg);
    if (found != FC_EXIT_OK)
        return found;
    n = ctx->cfg.n_sched_addrs;
    for (size_t k = 0; k < n; k++) {
        size_t i = (start + k) % n;
        if (open_sched(ctx, i, &err) != PF_OK) {
            fc_err("%s", err.msg);
            return FC_EXIT_USAGE;
        }
        enum pf_status rc =
            pf_rpc_unary(ctx->sched, method, req, reply_desc, reply, ctx->cfg.timeout_ms, &err);
        if (rc == PF_OK)
            return FC_EXIT_OK;
        if (!have_first) {
            first_err = err;
            have_first = true;
        }
        if (!try_next(&err))
            return fc_report(ctx, "the scheduler", ctx->cfg.sched_addrs[i], &err);
        if (!is_connect_failure(&err) && !have_other) {
            other_err = err;
            other_index = i;
            have_other = true;
        }
    }
    /* A replica answered but could not help (no leader, or a redirect that
     * does not work from here): that says more than the unreachable ones. */
    if (have_other)
        return fc_report(ctx, "the scheduler", ctx->cfg.sched_addrs[other_index], &other_err);
    /* every address failed to connect */
    if (n > 1) {
        char all[512];
        size_t len = 0;
        all[0] = '\0';
        for (size_t i = 0; i < n && len < sizeof(all); i++)
            len += (size_t)snprintf(all + len, sizeof(all) - len, "%s%s", i ? ", " : "",
                                    ctx->cfg.sched_addrs[i]);
        char t[PF_RPC_TARGET_MAX], buf[96];
        const char *rest = detail(first_err.msg, t, sizeof(t));
        fc_err("cannot reach the scheduler at %s: %s — is the farm running? (try: ./farm up)", all,
               reach_reason(rest, ctx->cfg.timeout_ms, buf, sizeof(buf)));
        return FC_EXIT_UNREACHABLE;
    }
    return fc_report(ctx, "the scheduler", ctx->cfg.sched_addrs[0], &first_err);
}

struct pf_rpc_channel *fc_sched_channel(struct fc_ctx *ctx)
{
    return ctx->sched;
}

static struct pf_rpc_channel *open_other(struct fc_ctx *ctx, struct pf_rpc_channel **slot,
                                         const char *target, int *exit_code)
{
    struct pf_rpc_client_opts o;
    struct pf_error err;
    if (*slot != NULL)
        return *slot;
    fc_client_opts(ctx, &o);
    *slot = pf_rpc_channel_create(target, &o, &err);
    if (*slot == NULL) {
        fc_err("%s", err.msg);
        *exit_code = FC_EXIT_USAGE;
    }
    return *slot;
}

struct pf_rpc_channel *fc_files(struct fc_ctx *ctx, int *exit_code)
{
    if ((*exit_code = fc_config_find_farm(&ctx->cfg)) != FC_EXIT_OK)
        return NULL;
    return open_other(ctx, &ctx->files, ctx->cfg.files, exit_code);
}

struct pf_rpc_channel *fc_discovery(struct fc_ctx *ctx, int *exit_code)
{
    if ((*exit_code = fc_config_find_farm(&ctx->cfg)) != FC_EXIT_OK)
        return NULL;
    return open_other(ctx, &ctx->disc, ctx->cfg.discovery, exit_code);
}

void fc_ctx_release(struct fc_ctx *ctx)
{
    pf_rpc_channel_destroy(ctx->sched);
    pf_rpc_channel_destroy(ctx->files);
    pf_rpc_channel_destroy(ctx->disc);
    ctx->sched = ctx->files = ctx->disc = NULL;
    fc_config_release(&ctx->cfg);
}
