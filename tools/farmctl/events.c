/* farmctl events: the scheduler's numbered event log through WatchEvents.
 * Without --follow it prints what is stored and stops once the stream has
 * been quiet for --wait; with --follow it runs until Ctrl-C, reconnecting
 * (to the new leader after a failover) from the last seq it printed, so no
 * event is missed or printed twice. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "farmctl.h"
#include "printfarm/v1/scheduler.pb-c.h"

#define KINDS_MAX 32

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

struct events_opts {
    uint64_t after;
    bool follow, only_new;
    const char *job, *printer;
    int kinds[KINDS_MAX];
    size_t n_kinds;
    int64_t wait_ms;
};

enum { E_AFTER = 1, E_FOLLOW = 'f', E_JOB = 3, E_PRINTER, E_KIND, E_WAIT, E_NEW };

static const struct option events_options[] = {
    {"after", required_argument, NULL, E_AFTER}, {"follow", no_argument, NULL, E_FOLLOW},
    {"job", required_argument, NULL, E_JOB},     {"printer", required_argument, NULL, E_PRINTER},
    {"kind", required_argument, NULL, E_KIND},   {"wait", required_argument, NULL, E_WAIT},
    {"new", no_argument, NULL, E_NEW},           {NULL, 0, NULL, 0},
};

static const struct fc_cmd cmd_events = {
    "events",
    "[--after N] [--follow] [--new] [--job ID] [--printer ID] [--kind K[,K...]] [--wait D]",
    "Prints the event log, oldest first: one line per event (with --json one object per\n"
    "line). Stops when the stored events are printed (the stream quiet for --wait), or\n"
    "with --follow keeps printing new ones until Ctrl-C.\n"
    "  --after N        only events with seq > N (a cursor: the last seq you saw)\n"
    "  --follow, -f     keep watching (resumes across a scheduler failover)\n"
    "  --new            only events from now on\n"
    "  --job ID, --printer ID   only events about this job / printer\n"
    "  --kind K,...     only these kinds (job_submitted, attempt_succeeded, bed_cleared, ...)\n"
    "  --wait D         quiet time that ends the replay without --follow (default 1s)\n",
    events_options,
};

static int events_opt(void *arg, int key, const char *v)
{
    struct events_opts *o = arg;
    char *end;
    switch (key) {
    case E_AFTER:
        o->after = strtoull(v, &end, 10);
        if (v[0] < '0' || v[0] > '9' || *end != '\0')
            return fc_usage(&cmd_events, "--after takes a seq number, not '%s'", v);
        return FC_EXIT_OK;
    case E_FOLLOW:
        o->follow = true;
        return FC_EXIT_OK;
    case E_NEW:
        o->only_new = true;
        return FC_EXIT_OK;
    case E_JOB:
        o->job = v;
        return FC_EXIT_OK;
    case E_PRINTER:
        o->printer = v;
        return FC_EXIT_OK;
    case E_WAIT:
        if (pf_config_parse_duration_ms(v, &o->wait_ms) != PF_OK || o->wait_ms <= 0)
            return fc_usage(&cmd_events, "--wait takes a duration (500ms, 2s), not '%s'", v);
        return FC_EXIT_OK;
    case E_KIND: {
        char *copy = strdup(v), *save = NULL;
        int rc = FC_EXIT_OK;
        for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
            int k;
            if (o->n_kinds == KINDS_MAX ||
                !fc_enum_parse(&printfarm__v1__event_kind__descriptor, t, &k)) {
                rc = fc_usage(&cmd_events, "unknown event kind '%s'", t);
                break;
            }
            o->kinds[o->n_kinds++] = k;
        }
        free(copy);
        return rc;
    }
    }
    return FC_EXIT_USAGE;
}

static void print_event(struct fc_ctx *ctx, const Printfarm__V1__Event *e)
{
    if (ctx->cfg.json) {
        struct fc_json j;
        fc_json_init(&j, false);
        fc_json_message(&j, &e->base);
        (void)fc_json_print(&j, stdout);
        return;
    }
    char t[48], k[48];
    fc_fmt_time(e->time_unix_ms, t, sizeof(t));
    fc_enum_name(&printfarm__v1__event_kind__descriptor, e->kind, k, sizeof(k));
    printf("%-6llu %s  %-20s %s\n", (unsigned long long)e->seq, t, k, e->text);
    fflush(stdout);
}

/* One WatchEvents stream from o->after; returns PF_OK when it ended because
 * the replay went quiet (no --follow) or on Ctrl-C, else the stream's error
 * in err (*leader set from the trailers). */
static enum pf_status watch_once(struct fc_ctx *ctx, struct events_opts *o, char *leader,
                                 size_t leader_size, struct pf_error *err)
{
    struct pf_rpc_stream *s = NULL;
    Printfarm__V1__WatchEventsRequest req = PRINTFARM__V1__WATCH_EVENTS_REQUEST__INIT;
    req.after = o->after;
    req.only_new = o->only_new;
    req.n_kinds = o->n_kinds;
    req.kinds = (Printfarm__V1__EventKind *)o->kinds;
    req.job_id = (char *)(o->job ? o->job : "");
    req.printer_id = (char *)(o->printer ? o->printer : "");
    leader[0] = '\0';

    enum pf_status rc = pf_rpc_stream_open(fc_sched_channel(ctx),
                                           "/printfarm.v1.Scheduler/WatchEvents", 0, &s, err);
    if (rc == PF_OK)
        rc = pf_rpc_stream_send(s, &req.base, err);
    if (rc == PF_OK)
        rc = pf_rpc_stream_close_send(s, err);
    bool got_any = false;
    int64_t quiet_ms = 0;
    while (rc == PF_OK) {
        ProtobufCMessage *m = NULL;
        rc = pf_rpc_stream_recv(s, &printfarm__v1__event__descriptor, &m, 200, err);
        if (rc == PF_OK) {
            const Printfarm__V1__Event *e = (const Printfarm__V1__Event *)m;
            if (e->seq > o->after) {
                print_event(ctx, e);
                o->after = e->seq;
            }
            o->only_new = false; /* a reconnect resumes from the cursor */
            got_any = true;
            quiet_ms = 0;
            protobuf_c_message_free_unpacked(m, NULL);
            continue;
        }
        if (rc == PF_E_DEADLINE) {
            quiet_ms += 200;
            rc = PF_OK;
            if (interrupted)
                break;
            /* the first event may take longer than the gap between later ones */
            if (!o->follow && quiet_ms >= (got_any ? o->wait_ms : 3 * o->wait_ms))
                break;
            continue;
        }
    }
    if (rc == PF_OK) {
        pf_rpc_stream_destroy(s);
        return PF_OK;
    }
    if (rc == PF_E_END)
        rc = pf_rpc_stream_finish(s, err);
    if (s != NULL) {
        snprintf(leader, leader_size, "%s", pf_rpc_stream_leader(s));
        pf_rpc_stream_destroy(s);
    }
    if (rc == PF_OK)
        rc = pf_error_set(err, PF_E_UNAVAILABLE, "WatchEvents: the scheduler ended the stream");
    return rc;
}

int fc_cmd_events(struct fc_ctx *ctx, int argc, char **argv)
{
    struct events_opts o = {.wait_ms = 1000};
    int first, rc;
    if (!fc_parse(ctx, &cmd_events, argc, argv, events_opt, &o, &first, &rc))
        return rc;
    if (first != argc)
        return fc_usage(&cmd_events, "unexpected argument '%s'", argv[first]);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int failures = 0;
    for (;;) {
        /* A cheap unary call finds the leader (lib/rpc follows the redirect
         * and retargets the channel), and says clearly when nothing answers. */
        Printfarm__V1__ListJobsRequest probe = PRINTFARM__V1__LIST_JOBS_REQUEST__INIT;
        ProtobufCMessage *reply = NULL;
        probe.page_size = 1;
        rc = fc_sched_call(ctx, "/printfarm.v1.Scheduler/ListJobs", &probe.base,
                           &printfarm__v1__list_jobs_response__descriptor, &reply);
        if (reply != NULL)
            protobuf_c_message_free_unpacked(reply, NULL);
        if (rc != FC_EXIT_OK) {
            if (!o.follow || rc != FC_EXIT_UNREACHABLE || interrupted || ++failures > 30)
                return interrupted ? FC_EXIT_OK : rc;
            sleep(1);
            continue;
        }
        char leader[PF_RPC_TARGET_MAX], target[PF_RPC_TARGET_MAX];
        struct pf_error err;
        enum pf_status st = watch_once(ctx, &o, leader, sizeof(leader), &err);
        if (st == PF_OK || interrupted)
            return FC_EXIT_OK;
        pf_rpc_channel_target(fc_sched_channel(ctx), target, sizeof(target));
        if (st == PF_E_UNAVAILABLE && leader[0] != '\0') {
            struct pf_error rerr;
            if (pf_rpc_channel_retarget(fc_sched_channel(ctx), leader, &rerr) != PF_OK)
                return fc_report(ctx, "the scheduler", target, &rerr);
            failures = 0;
            continue;
        }
        if (!o.follow || (st != PF_E_UNAVAILABLE && st != PF_E_DEADLINE) || ++failures > 30)
            return fc_report(ctx, "the scheduler", target, &err);
        if (!ctx->cfg.json)
            fprintf(stderr, "farmctl: the event stream ended (%s); reconnecting from seq %llu\n",
                    pf_status_name(st), (unsigned long long)o.after);
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
}
