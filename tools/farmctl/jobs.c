/* farmctl jobs / job show|cancel|hold|release|priority|count: the queue as
 * ListJobs, GetJob, UpdateJob and CancelJob show and change it. */
#include <stdlib.h>
#include <string.h>

#include "farmctl.h"
#include "printfarm/v1/scheduler.pb-c.h"

#define STATES_MAX 8

void fc_pages_release(struct fc_pages *p)
{
    for (size_t i = 0; i < p->n; i++)
        protobuf_c_message_free_unpacked(p->pages[i], NULL);
    free(p->pages);
    p->pages = NULL;
    p->n = 0;
}

static bool push_page(struct fc_pages *p, ProtobufCMessage *m)
{
    ProtobufCMessage **n = realloc(p->pages, (p->n + 1) * sizeof(*n));
    if (n == NULL)
        return false;
    p->pages = n;
    p->pages[p->n++] = m;
    return true;
}

int fc_list_jobs(struct fc_ctx *ctx, const char *queue, const int *states, size_t n_states,
                 size_t limit, struct fc_pages *out)
{
    char token[512] = "";
    size_t total = 0;
    memset(out, 0, sizeof(*out));
    for (;;) {
        Printfarm__V1__ListJobsRequest req = PRINTFARM__V1__LIST_JOBS_REQUEST__INIT;
        req.queue = (char *)(queue ? queue : "");
        req.n_states = n_states;
        req.states = (Printfarm__V1__JobState *)states;
        req.page_size = 1000;
        if (limit > 0 && limit - total < 1000)
            req.page_size = (uint32_t)(limit - total);
        req.page_token = token;
        Printfarm__V1__ListJobsResponse *r = NULL;
        int rc =
            fc_sched_call(ctx, "/printfarm.v1.Scheduler/ListJobs", &req.base,
                          &printfarm__v1__list_jobs_response__descriptor, (ProtobufCMessage **)&r);
        if (rc != FC_EXIT_OK) {
            fc_pages_release(out);
            return rc;
        }
        if (!push_page(out, &r->base)) {
            protobuf_c_message_free_unpacked(&r->base, NULL);
            fc_pages_release(out);
            fc_err("out of memory");
            return FC_EXIT_FAILED;
        }
        total += r->n_jobs;
        if (r->next_page_token == NULL || r->next_page_token[0] == '\0' ||
            (limit > 0 && total >= limit) || r->n_jobs == 0)
            return FC_EXIT_OK;
        snprintf(token, sizeof(token), "%s", r->next_page_token);
    }
}

/* "queued,printing" -> states; false after printing the usage error. */
static bool parse_states(const struct fc_cmd *cmd, const ProtobufCEnumDescriptor *d,
                         const char *text, int *states, size_t *n)
{
    char *copy = strdup(text), *save = NULL;
    bool ok = true;
    for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        int v;
        if (*n == STATES_MAX || !fc_enum_parse(d, t, &v)) {
            char names[256] = "", b[48];
            size_t len = 0;
            for (unsigned i = 0; i < d->n_values; i++)
                if (d->values[i].value != 0)
                    len +=
                        (size_t)snprintf(names + len, sizeof(names) - len, "%s%s", len ? ", " : "",
                                         fc_enum_name(d, d->values[i].value, b, sizeof(b)));
            fc_usage(cmd, "unknown state '%s' (states: %s)", t, names);
            ok = false;
            break;
        }
        states[(*n)++] = v;
    }
    free(copy);
    return ok;
}

static const char *job_state(int s, char *b, size_t n)
{
    return fc_enum_name(&printfarm__v1__job_state__descriptor, s, b, n);
}

/* ---------------------------------------------------------------- jobs */

struct list_opts {
    const char *queue;
    int states[STATES_MAX];
    size_t n_states;
    uint32_t limit;
};

enum { L_QUEUE = 1, L_STATE, L_LIMIT };

static const struct option list_options[] = {
    {"queue", required_argument, NULL, L_QUEUE},
    {"state", required_argument, NULL, L_STATE},
    {"limit", required_argument, NULL, L_LIMIT},
    {NULL, 0, NULL, 0},
};

static const struct fc_cmd cmd_jobs = {
    "jobs",
    "[--queue Q] [--state S[,S...]] [--limit N]",
    "Lists jobs, newest first: every job unless filtered.\n"
    "  --queue Q        only this queue\n"
    "  --state S,...    only these states: queued, held, printing, done, failed, cancelled\n"
    "  --limit N        at most N jobs (default: all)\n",
    list_options,
};

static int list_opt(void *arg, int key, const char *v)
{
    struct list_opts *o = arg;
    switch (key) {
    case L_QUEUE:
        o->queue = v;
        return FC_EXIT_OK;
    case L_STATE:
        return parse_states(&cmd_jobs, &printfarm__v1__job_state__descriptor, v, o->states,
                            &o->n_states)
                   ? FC_EXIT_OK
                   : FC_EXIT_USAGE;
    case L_LIMIT:
        if (!fc_parse_u32(v, 1, 1000000, &o->limit))
            return fc_usage(&cmd_jobs, "--limit takes a positive number, not '%s'", v);
        return FC_EXIT_OK;
    }
    return FC_EXIT_USAGE;
}

int fc_cmd_jobs(struct fc_ctx *ctx, int argc, char **argv)
{
    struct list_opts o = {0};
    struct fc_pages pages;
    int first, rc;
    if (!fc_parse(ctx, &cmd_jobs, argc, argv, list_opt, &o, &first, &rc))
        return rc;
    if (first != argc)
        return fc_usage(&cmd_jobs, "unexpected argument '%s'", argv[first]);
    rc = fc_list_jobs(ctx, o.queue, o.states, o.n_states, o.limit, &pages);
    if (rc != FC_EXIT_OK)
        return rc;
    if (ctx->cfg.json) {
        struct fc_json j;
        fc_json_init(&j, true);
        fc_json_begin_object(&j);
        fc_json_key(&j, "jobs");
        fc_json_begin_array(&j);
        for (size_t p = 0; p < pages.n; p++) {
            const Printfarm__V1__ListJobsResponse *r = (void *)pages.pages[p];
            for (size_t i = 0; i < r->n_jobs; i++)
                fc_json_message(&j, &r->jobs[i]->base);
        }
        fc_json_end_array(&j);
        fc_json_end_object(&j);
        rc = fc_json_print(&j, stdout);
    } else {
        static const char *const hdr[] = {"ID",     "NAME",   "QUEUE",  "STATE",    "PRIORITY",
                                          "COPIES", "ACTIVE", "FAILED", "MATERIAL", "SUBMITTED"};
        struct fc_table *t = fc_table_create(10, hdr);
        size_t n = 0;
        for (size_t p = 0; p < pages.n; p++) {
            const Printfarm__V1__ListJobsResponse *r = (void *)pages.pages[p];
            for (size_t i = 0; i < r->n_jobs; i++, n++) {
                const Printfarm__V1__Job *jb = r->jobs[i];
                char st[32], pri[16], copies[32], act[16], fail[16], mat[160] = "", age[48];
                snprintf(pri, sizeof(pri), "%d", jb->priority);
                snprintf(copies, sizeof(copies), "%u/%u", jb->succeeded, jb->count);
                snprintf(act, sizeof(act), "%u", jb->in_progress);
                snprintf(fail, sizeof(fail), "%u", jb->failed_attempts + jb->lost_attempts);
                if (jb->constraints != NULL && jb->constraints->n_materials > 0) {
                    const Printfarm__V1__MaterialRequirement *m = jb->constraints->materials[0];
                    snprintf(mat, sizeof(mat), "%s%s%s", m->material, m->colour[0] ? ":" : "",
                             m->colour);
                }
                const char *row[] = {jb->id,    jb->name,
                                     jb->queue, job_state(jb->state, st, sizeof(st)),
                                     pri,       copies,
                                     act,       fail,
                                     mat,       fc_fmt_age(jb->created_unix_ms, age, sizeof(age))};
                fc_table_add(t, row);
            }
        }
        if (n == 0)
            printf("no jobs%s (submit one: farmctl submit FILE.gcode --profile NAME)\n",
                   o.n_states || o.queue ? " match" : "");
        else
            fc_table_print(t, stdout);
        fc_table_destroy(t);
    }
    fc_pages_release(&pages);
    return rc;
}

/* ---------------------------------------------------------------- job */

static void print_job(const Printfarm__V1__Job *j, FILE *out)
{
    char b[64], t1[48], t2[48];
    fprintf(out, "job %s\n", j->id);
    fprintf(out, "  name:       %s\n", j->name);
    fprintf(out, "  queue:      %s\n", j->queue);
    fprintf(out, "  state:      %s%s%s\n", job_state(j->state, b, sizeof(b)),
            j->state_reason[0] ? " — " : "", j->state_reason);
    fprintf(out, "  copies:     %u of %u done, %u printing, %u failed, %u lost, %u cancelled\n",
            j->succeeded, j->count, j->in_progress, j->failed_attempts, j->lost_attempts,
            j->cancelled_attempts);
    fprintf(out, "  priority:   %d\n", j->priority);
    fprintf(out, "  bundle:     %s\n", j->bundle && j->bundle->sha256 ? j->bundle->sha256 : "-");
    if (j->constraints != NULL) {
        const Printfarm__V1__JobConstraints *c = j->constraints;
        for (size_t i = 0; i < c->n_materials; i++) {
            const Printfarm__V1__MaterialRequirement *m = c->materials[i];
            char ext[32] = "any extruder";
            if (m->where_case == PRINTFARM__V1__MATERIAL_REQUIREMENT__WHERE_EXTRUDER)
                snprintf(ext, sizeof(ext), "extruder %u", m->extruder);
            fprintf(out, "  needs:      %s %s (%s)\n", m->material[0] ? m->material : "any",
                    m->colour[0] ? m->colour : "any colour", ext);
        }
        for (size_t i = 0; i < c->n_profiles; i++)
            fprintf(out, "  profile:    %s\n", c->profiles[i]);
        for (size_t i = 0; i < c->n_printer_labels; i++)
            fprintf(out, "  label:      %s%s%s\n", c->printer_labels[i]->key,
                    c->printer_labels[i]->value[0] ? "=" : "", c->printer_labels[i]->value);
    }
    fprintf(out, "  policy:     %u failure(s) per printer, %u printer(s)\n",
            j->max_attempts_per_printer, j->max_printers);
    for (size_t i = 0; i < j->n_excluded_printers; i++)
        fprintf(out, "  excluded:   %s\n", j->excluded_printers[i]);
    if (j->idempotency_key[0])
        fprintf(out, "  key:        %s\n", j->idempotency_key);
    fprintf(out, "  submitted:  %s%s%s\n", fc_fmt_time(j->created_unix_ms, t1, sizeof(t1)),
            j->submitted_by[0] ? " by " : "", j->submitted_by);
    fprintf(out, "  updated:    %s\n", fc_fmt_time(j->updated_unix_ms, t2, sizeof(t2)));
}

static const struct fc_cmd cmd_job_show = {"job show", "ID",
                                           "Shows one job and its attempts, newest first.\n", NULL};
static const struct fc_cmd cmd_job_hold = {
    "job hold", "ID", "Holds a job: no new attempts start (running ones finish).\n", NULL};
static const struct fc_cmd cmd_job_release = {"job release", "ID",
                                              "Releases a held job back into the queue.\n", NULL};
static const struct fc_cmd cmd_job_priority = {
    "job priority", "ID PRIORITY", "Sets a job's priority (higher runs first; negative allowed).\n",
    NULL};
static const struct fc_cmd cmd_job_count = {
    "job count", "ID COUNT",
    "Sets how many copies a job prints (not below those done or printing).\n", NULL};

struct cancel_opts {
    const char *reason;
    bool running;
};
enum { C_REASON = 1, C_RUNNING };
static const struct option cancel_options[] = {
    {"reason", required_argument, NULL, C_REASON},
    {"running", no_argument, NULL, C_RUNNING},
    {NULL, 0, NULL, 0},
};
static const struct fc_cmd cmd_job_cancel = {
    "job cancel", "ID [--running] [--reason TEXT]",
    "Cancels a job: no new attempts start.\n"
    "  --running        also stop the attempts printing now\n"
    "  --reason TEXT    recorded with the job and its event\n",
    cancel_options};

static int cancel_opt(void *arg, int key, const char *v)
{
    struct cancel_opts *o = arg;
    if (key == C_REASON)
        o->reason = v;
    else if (key == C_RUNNING)
        o->running = true;
    else
        return FC_EXIT_USAGE;
    return FC_EXIT_OK;
}

static int print_job_reply(struct fc_ctx *ctx, const Printfarm__V1__Job *job, const char *what)
{
    if (ctx->cfg.json) {
        struct fc_json j;
        fc_json_init(&j, true);
        fc_json_begin_object(&j);
        fc_json_key(&j, "job");
        fc_json_message(&j, job ? &job->base : NULL);
        fc_json_end_object(&j);
        return fc_json_print(&j, stdout);
    }
    if (job != NULL) {
        char b[32];
        printf("job %s %s: %s, priority %d, %u of %u done\n", job->id, what,
               job_state(job->state, b, sizeof(b)), job->priority, job->succeeded, job->count);
    }
    return FC_EXIT_OK;
}

static int job_show(struct fc_ctx *ctx, const char *id)
{
    Printfarm__V1__GetJobRequest req = PRINTFARM__V1__GET_JOB_REQUEST__INIT;
    Printfarm__V1__GetJobResponse *r = NULL;
    req.id = (char *)id;
    int rc = fc_sched_call(ctx, "/printfarm.v1.Scheduler/GetJob", &req.base,
                           &printfarm__v1__get_job_response__descriptor, (ProtobufCMessage **)&r);
    if (rc != FC_EXIT_OK)
        return rc;
    if (ctx->cfg.json) {
        struct fc_json j;
        fc_json_init(&j, true);
        fc_json_message(&j, &r->base);
        rc = fc_json_print(&j, stdout);
    } else {
        if (r->job != NULL)
            print_job(r->job, stdout);
        if (r->n_attempts == 0) {
            printf("\nno attempts yet\n");
        } else {
            static const char *const hdr[] = {"ATTEMPT",  "PRINTER", "STATE", "PROFILE",
                                              "PROGRESS", "STARTED", "ENDED", "REASON"};
            struct fc_table *t = fc_table_create(8, hdr);
            for (size_t i = 0; i < r->n_attempts; i++) {
                const Printfarm__V1__Attempt *a = r->attempts[i];
                char st[32], pr[16], s1[48], s2[48];
                snprintf(pr, sizeof(pr), "%.0f%%", (double)a->progress * 100);
                const char *row[] = {a->id,
                                     a->printer_id,
                                     fc_enum_name(&printfarm__v1__attempt_state__descriptor,
                                                  a->state, st, sizeof(st)),
                                     a->profile,
                                     pr,
                                     fc_fmt_time(a->started_unix_ms, s1, sizeof(s1)),
                                     fc_fmt_time(a->ended_unix_ms, s2, sizeof(s2)),
                                     a->reason};
                fc_table_add(t, row);
            }
            printf("\n");
            fc_table_print(t, stdout);
            fc_table_destroy(t);
        }
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

static int job_update(struct fc_ctx *ctx, Printfarm__V1__UpdateJobRequest *req, const char *what)
{
    Printfarm__V1__UpdateJobResponse *r = NULL;
    int rc =
        fc_sched_call(ctx, "/printfarm.v1.Scheduler/UpdateJob", &req->base,
                      &printfarm__v1__update_job_response__descriptor, (ProtobufCMessage **)&r);
    if (rc != FC_EXIT_OK)
        return rc;
    rc = print_job_reply(ctx, r->job, what);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

int fc_cmd_job(struct fc_ctx *ctx, int argc, char **argv)
{
    static const struct {
        const char *verb;
        const struct fc_cmd *cmd;
        int nargs;
    } verbs[] = {
        {"show", &cmd_job_show, 1},         {"cancel", &cmd_job_cancel, 1},
        {"hold", &cmd_job_hold, 1},         {"release", &cmd_job_release, 1},
        {"priority", &cmd_job_priority, 2}, {"count", &cmd_job_count, 2},
    };
    const struct fc_cmd *cmd = NULL;
    int nargs = 0;
    for (size_t i = 0; argc >= 2 && i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (strcmp(argv[1], verbs[i].verb) == 0) {
            cmd = verbs[i].cmd;
            nargs = verbs[i].nargs;
        }
    if (cmd == NULL)
        return fc_usage(NULL, "job: expected show, cancel, hold, release, priority or count%s%s",
                        argc >= 2 ? "; got " : "", argc >= 2 ? argv[1] : "");
    struct cancel_opts co = {0};
    int first, rc;
    if (!fc_parse(ctx, cmd, argc - 1, argv + 1, cmd == &cmd_job_cancel ? cancel_opt : NULL, &co,
                  &first, &rc))
        return rc;
    char **args = argv + 1 + first;
    int n = argc - 1 - first;
    if (n != nargs)
        return fc_usage(cmd, n < nargs ? "missing %s" : "too many arguments (expected %s)",
                        nargs == 1 ? "the job ID" : "the job ID and a number");
    const char *id = args[0];

    if (cmd == &cmd_job_show)
        return job_show(ctx, id);
    if (cmd == &cmd_job_cancel) {
        Printfarm__V1__CancelJobRequest req = PRINTFARM__V1__CANCEL_JOB_REQUEST__INIT;
        Printfarm__V1__CancelJobResponse *r = NULL;
        req.id = (char *)id;
        req.reason = (char *)(co.reason ? co.reason : "cancelled with farmctl");
        req.cancel_running = co.running;
        rc =
            fc_sched_call(ctx, "/printfarm.v1.Scheduler/CancelJob", &req.base,
                          &printfarm__v1__cancel_job_response__descriptor, (ProtobufCMessage **)&r);
        if (rc != FC_EXIT_OK)
            return rc;
        rc = print_job_reply(ctx, r->job, "cancelled");
        protobuf_c_message_free_unpacked(&r->base, NULL);
        return rc;
    }
    Printfarm__V1__UpdateJobRequest req = PRINTFARM__V1__UPDATE_JOB_REQUEST__INIT;
    req.id = (char *)id;
    if (cmd == &cmd_job_hold || cmd == &cmd_job_release) {
        req.set_hold_case = PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_HOLD_HOLD;
        req.hold = cmd == &cmd_job_hold;
        return job_update(ctx, &req, cmd == &cmd_job_hold ? "held" : "released");
    }
    if (cmd == &cmd_job_priority) {
        if (!fc_parse_i32(args[1], &req.priority))
            return fc_usage(cmd, "PRIORITY is an integer, not '%s'", args[1]);
        req.set_priority_case = PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_PRIORITY_PRIORITY;
        return job_update(ctx, &req, "updated");
    }
    if (!fc_parse_u32(args[1], 1, 10000, &req.count))
        return fc_usage(cmd, "COUNT is 1..10000, not '%s'", args[1]);
    req.set_count_case = PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_COUNT_COUNT;
    return job_update(ctx, &req, "updated");
}
