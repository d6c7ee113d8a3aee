/* farmctl: wiring only. Reads the global flags that come before the command
 * word, sets up the logger and gRPC, and hands the rest of the command line
 * to the command's file (bundle.c, jobs.c, printers.c, events.c, status.c). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>

#include "farmctl.h"
#include "log.h"

static const struct {
    const char *name;
    int (*run)(struct fc_ctx *ctx, int argc, char **argv);
} commands[] = {
    {"bundle", fc_cmd_bundle}, {"submit", fc_cmd_submit},     {"jobs", fc_cmd_jobs},
    {"job", fc_cmd_job},       {"printers", fc_cmd_printers}, {"printer", fc_cmd_printer},
    {"events", fc_cmd_events}, {"status", fc_cmd_status},
};

static int run(struct fc_ctx *ctx, int argc, char **argv)
{
    /* Global flags before the command word ("+": stop at the first word). */
    optind = 0;
    opterr = 1;
    int c;
    struct option opts[32];
    size_t n = 0;
    for (const struct option *o = fc_global_options; o->name != NULL; o++)
        opts[n++] = *o;
    opts[n++] = (struct option){"help", no_argument, NULL, 'h'};
    opts[n++] = (struct option){"version", no_argument, NULL, 'V'};
    opts[n] = (struct option){NULL, 0, NULL, 0};
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        if (c == 'h') {
            fc_print_help(stdout);
            return FC_EXIT_OK;
        }
        if (c == 'V') {
            printf("farmctl (Printfarm) 0.1.0\n");
            return FC_EXIT_OK;
        }
        if (!fc_config_global_opt(&ctx->cfg, c, optarg))
            return fc_usage(NULL, "bad command line");
    }
    if (optind >= argc)
        return fc_usage(NULL, "missing COMMAND");
    const char *name = argv[optind];
    if (strcmp(name, "help") == 0) {
        if (optind + 1 < argc) {
            /* "help job" -> "job --help" */
            char *sub[4] = {argv[optind + 1], "--help", NULL, NULL};
            if (optind + 2 < argc) {
                sub[1] = argv[optind + 2];
                sub[2] = "--help";
            }
            for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (strcmp(commands[i].name, sub[0]) == 0)
                    return commands[i].run(ctx, optind + 2 < argc ? 3 : 2, sub);
            return fc_usage(NULL, "unknown command '%s'", sub[0]);
        }
        fc_print_help(stdout);
        return FC_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return commands[i].run(ctx, argc - optind, argv + optind);
    return fc_usage(NULL, "unknown command '%s'", name);
}

int main(int argc, char **argv)
{
    static struct fc_ctx ctx;
    enum pf_log_level level = PF_LOG_WARN;
    const char *env = getenv("PRINTFARM_LOG_LEVEL");

    /* The library logs through lib/log: quiet unless asked (--log-level is
     * applied as soon as it is known, below). */
    if (env != NULL && pf_log_level_parse(env, &level) != PF_OK)
        level = PF_LOG_WARN;
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--log-level") == 0 && pf_log_level_parse(argv[i + 1], &level) != PF_OK)
            level = PF_LOG_WARN;
    pf_log_init(level, "farmctl");
    signal(SIGPIPE, SIG_IGN);
    grpc_init();
    int rc = run(&ctx, argc, argv);
    fflush(stdout);
    fc_ctx_release(&ctx);
    grpc_shutdown();
    return rc;
}
