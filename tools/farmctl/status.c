/* farmctl status: the farm at a glance — each configured scheduler replica
 * and which one leads, pf-files' health, the queue depth by job state, the
 * printers by state, and (when --discovery is given) every instance
 * pf-discovery knows with its probed health. */
#include <stdlib.h>
#include <string.h>

#include "farmctl.h"
#include "grpc/health/v1/health.pb-c.h"
#include "printfarm/v1/discovery.pb-c.h"
#include "printfarm/v1/scheduler.pb-c.h"

static const struct fc_cmd cmd_status = {
    "status",
    "",
    "Shows the scheduler replicas and the leader, pf-files' health, jobs by state,\n"
    "printers by state, and every instance registered with pf-discovery (when\n"
    "--discovery / PRINTFARM_DISCOVERY is set). Exit code 3 when the scheduler or a\n"
    "configured discovery cannot be reached.\n",
    NULL,
};

struct replica {
    const char *address;
    const char *role; /* leader, follower, unreachable, error */
    char error[PF_ERROR_MSG_MAX];
};

/* Asks one replica directly (no redirect) whether it leads. */
static void probe_replica(struct fc_ctx *ctx, struct replica *r)
{
    struct pf_rpc_client_opts o;
    struct pf_error err;
    fc_client_opts(ctx, &o);
    o.max_redirects = -1;
    r->error[0] = '\0';
    struct pf_rpc_channel *ch = pf_rpc_channel_create(r->address, &o, &err);
    if (ch == NULL) {
        r->role = "error";
        snprintf(r->error, sizeof(r->error), "%s", err.msg);
        return;
    }
    Printfarm__V1__ListJobsRequest req = PRINTFARM__V1__LIST_JOBS_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    req.page_size = 1;
    int64_t t = ctx->cfg.timeout_ms < 3000 ? ctx->cfg.timeout_ms : 3000;
    enum pf_status rc =
        pf_rpc_unary(ch, "/printfarm.v1.Scheduler/ListJobs", &req.base,
                     &printfarm__v1__list_jobs_response__descriptor, &reply, t, &err);
    if (rc == PF_OK) {
        r->role = "leader";
        protobuf_c_message_free_unpacked(reply, NULL);
    } else if (strncmp(err.msg, "cannot reach ", 13) == 0 || rc == PF_E_DEADLINE) {
        r->role = "unreachable";
    } else if (rc == PF_E_UNAVAILABLE) {
        r->role = "follower";
    } else {
        r->role = "error";
        snprintf(r->error, sizeof(r->error), "%s", err.msg);
    }
    pf_rpc_channel_destroy(ch);
}

static const char *files_health(struct fc_ctx *ctx)
{
    int rc;
    struct pf_error err;
    struct pf_rpc_channel *ch = fc_files(ctx, &rc);
    if (ch == NULL)
        return "error";
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *r = NULL;
    int64_t t = ctx->cfg.timeout_ms < 3000 ? ctx->cfg.timeout_ms : 3000;
    if (pf_rpc_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                     &grpc__health__v1__health_check_response__descriptor, (ProtobufCMessage **)&r,
                     t, &err) != PF_OK)
        return strncmp(err.msg, "cannot reach ", 13) == 0 ? "unreachable" : "error";
    const char *s = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                        ? "serving"
                        : "not_serving";
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return s;
}

/* counts[value] for an enum of at most 16 values */
struct counts {
    uint64_t n[16];
    uint64_t total;
};

static void json_counts(struct fc_json *j, const ProtobufCEnumDescriptor *d, const struct counts *c)
{
    char b[48];
    fc_json_begin_object(j);
    fc_json_key(j, "total");
    fc_json_uint(j, c->total);
    fc_json_key(j, "by_state");
    fc_json_begin_object(j);
    for (unsigned i = 0; i < d->n_values; i++) {
        int v = d->values[i].value;
        if (v <= 0 || v >= 16)
            continue;
        fc_json_key(j, fc_enum_name(d, v, b, sizeof(b)));
        fc_json_uint(j, c->n[v]);
    }
    fc_json_end_object(j);
    fc_json_end_object(j);
}

static void text_counts(const char *what, const ProtobufCEnumDescriptor *d, const struct counts *c)
{
    char b[48];
    printf("%-11s%llu", what, (unsigned long long)c->total);
    bool any = false;
    for (unsigned i = 0; i < d->n_values; i++) {
        int v = d->values[i].value;
        if (v <= 0 || v >= 16 || c->n[v] == 0)
            continue;
        printf("%s%llu %s", any ? ", " : " (", (unsigned long long)c->n[v],
               fc_enum_name(d, v, b, sizeof(b)));
        any = true;
    }
    printf("%s\n", any ? ")" : "");
}

int fc_cmd_status(struct fc_ctx *ctx, int argc, char **argv)
{
    int first, rc;
    if (!fc_parse(ctx, &cmd_status, argc, argv, NULL, NULL, &first, &rc))
        return rc;
    if (first != argc)
        return fc_usage(&cmd_status, "unexpected argument '%s'", argv[first]);

    struct fc_pages jobs = {0}, printers = {0};
    struct counts jc = {0}, pc = {0};
    rc = fc_list_jobs(ctx, NULL, NULL, 0, 0, &jobs);
    if (rc != FC_EXIT_OK)
        return rc;
    char leader[PF_RPC_TARGET_MAX];
    pf_rpc_channel_target(fc_sched_channel(ctx), leader, sizeof(leader));
    rc = fc_list_printers(ctx, NULL, NULL, 0, &printers);
    if (rc != FC_EXIT_OK) {
        fc_pages_release(&jobs);
        return rc;
    }
    for (size_t p = 0; p < jobs.n; p++) {
        const Printfarm__V1__ListJobsResponse *r = (void *)jobs.pages[p];
        for (size_t i = 0; i < r->n_jobs; i++, jc.total++)
            if (r->jobs[i]->state > 0 && r->jobs[i]->state < 16)
                jc.n[r->jobs[i]->state]++;
    }
    for (size_t p = 0; p < printers.n; p++) {
        const Printfarm__V1__ListPrintersResponse *r = (void *)printers.pages[p];
        for (size_t i = 0; i < r->n_printers; i++, pc.total++)
            if (r->printers[i]->state > 0 && r->printers[i]->state < 16)
                pc.n[r->printers[i]->state]++;
    }
    fc_pages_release(&jobs);
    fc_pages_release(&printers);

    struct replica reps[FC_ADDRS_MAX];
    for (size_t i = 0; i < ctx->cfg.n_sched_addrs; i++) {
        reps[i].address = ctx->cfg.sched_addrs[i];
        probe_replica(ctx, &reps[i]);
    }
    const char *files = files_health(ctx);

    Printfarm__V1__ListInstancesResponse *inst = NULL;
    char disc_error[PF_ERROR_MSG_MAX] = "";
    int disc_rc = FC_EXIT_OK;
    if (ctx->cfg.discovery != NULL) {
        struct pf_error err;
        struct pf_rpc_channel *ch = fc_discovery(ctx, &disc_rc);
        Printfarm__V1__ListInstancesRequest req = PRINTFARM__V1__LIST_INSTANCES_REQUEST__INIT;
        if (ch != NULL &&
            pf_rpc_unary(ch, "/printfarm.v1.Discovery/List", &req.base,
                         &printfarm__v1__list_instances_response__descriptor,
                         (ProtobufCMessage **)&inst, ctx->cfg.timeout_ms, &err) != PF_OK) {
            inst = NULL;
            disc_rc = fc_exit_for(err.code);
            if (strncmp(err.msg, "cannot reach ", 13) == 0)
                disc_rc = FC_EXIT_UNREACHABLE;
            snprintf(disc_error, sizeof(disc_error), "%s", err.msg);
        }
    }

    if (ctx->cfg.json) {
        struct fc_json j;
        fc_json_init(&j, true);
        fc_json_begin_object(&j);
        fc_json_key(&j, "scheduler");
        fc_json_begin_object(&j);
        fc_json_key(&j, "leader");
        fc_json_string(&j, leader);
        fc_json_key(&j, "replicas");
        fc_json_begin_array(&j);
        for (size_t i = 0; i < ctx->cfg.n_sched_addrs; i++) {
            fc_json_begin_object(&j);
            fc_json_key(&j, "address");
            fc_json_string(&j, reps[i].address);
            fc_json_key(&j, "role");
            fc_json_string(&j, reps[i].role);
            fc_json_key(&j, "error");
            fc_json_string(&j, reps[i].error);
            fc_json_end_object(&j);
        }
        fc_json_end_array(&j);
        fc_json_end_object(&j);
        fc_json_key(&j, "files");
        fc_json_begin_object(&j);
        fc_json_key(&j, "address");
        fc_json_string(&j, ctx->cfg.files);
        fc_json_key(&j, "health");
        fc_json_string(&j, files);
        fc_json_end_object(&j);
        fc_json_key(&j, "jobs");
        json_counts(&j, &printfarm__v1__job_state__descriptor, &jc);
        fc_json_key(&j, "printers");
        json_counts(&j, &printfarm__v1__printer_state__descriptor, &pc);
        fc_json_key(&j, "discovery");
        fc_json_begin_object(&j);
        fc_json_key(&j, "configured");
        fc_json_bool(&j, ctx->cfg.discovery != NULL);
        fc_json_key(&j, "address");
        fc_json_string(&j, ctx->cfg.discovery);
        fc_json_key(&j, "error");
        fc_json_string(&j, disc_error);
        fc_json_key(&j, "instances");
        fc_json_begin_array(&j);
        for (size_t i = 0; inst != NULL && i < inst->n_instances; i++)
            fc_json_message(&j, &inst->instances[i]->base);
        fc_json_end_array(&j);
        fc_json_end_object(&j);
        fc_json_end_object(&j);
        rc = fc_json_print(&j, stdout);
    } else {
        printf("scheduler  leader %s\n", leader);
        for (size_t i = 0; i < ctx->cfg.n_sched_addrs; i++)
            printf("           %-22s %s%s%s\n", reps[i].address, reps[i].role,
                   reps[i].error[0] ? ": " : "", reps[i].error);
        printf("files      %s %s\n", ctx->cfg.files, files);
        text_counts("jobs", &printfarm__v1__job_state__descriptor, &jc);
        text_counts("printers", &printfarm__v1__printer_state__descriptor, &pc);
        if (ctx->cfg.discovery == NULL) {
            printf("discovery  not configured (give --discovery HOST:PORT or set "
                   "PRINTFARM_DISCOVERY to list every instance with its health)\n");
        } else if (inst == NULL) {
            printf("discovery  %s: %s\n", ctx->cfg.discovery, disc_error);
        } else {
            printf("discovery  %s: %zu instance(s)\n\n", ctx->cfg.discovery, inst->n_instances);
            static const char *const hdr[] = {"KIND",    "ID",        "ADDRESS", "HEALTH",
                                              "LATENCY", "LAST SEEN", "VERSION", "PROBE ERROR"};
            struct fc_table *t = fc_table_create(8, hdr);
            for (size_t i = 0; i < inst->n_instances; i++) {
                const Printfarm__V1__InstanceStatus *s = inst->instances[i];
                const Printfarm__V1__Instance *in = s->instance;
                char kind[32], health[32], lat[32] = "", seen[48];
                fc_enum_name(&printfarm__v1__instance_kind__descriptor, in ? in->kind : 0, kind,
                             sizeof(kind));
                fc_enum_name(&printfarm__v1__instance_health__descriptor, s->health, health,
                             sizeof(health));
                if (s->latency_us > 0)
                    snprintf(lat, sizeof(lat), "%.1f ms", s->latency_us / 1000.0);
                const char *row[] = {kind,
                                     in ? in->id : "",
                                     in ? in->address : "",
                                     health,
                                     lat,
                                     fc_fmt_age(s->last_seen_unix_ms, seen, sizeof(seen)),
                                     in ? in->version : "",
                                     s->probe_error};
                fc_table_add(t, row);
            }
            fc_table_print(t, stdout);
            fc_table_destroy(t);
        }
    }
    if (inst != NULL)
        protobuf_c_message_free_unpacked(&inst->base, NULL);
    if (disc_rc != FC_EXIT_OK) {
        fc_err("pf-discovery at %s: %s", ctx->cfg.discovery, disc_error);
        return disc_rc;
    }
    return rc;
}
