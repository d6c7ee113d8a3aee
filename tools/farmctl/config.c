/* farmctl's configuration: global flags (accepted before or after the command
 * word), their PRINTFARM_* variables, and a small key=value file
 * (--config, PRINTFARM_CONFIG, ./farmctl.conf, then
 * ${XDG_CONFIG_HOME:-~/.config}/printfarm/farmctl.conf), plus the help text
 * and the per-command option parsing every command goes through. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "discovery_client.h"
#include "farmctl.h"
#include "timeutil.h"

enum {
    G_SCHEDULER = 1000,
    G_FILES,
    G_DISCOVERY,
    G_TOKEN,
    G_TLS_CA,
    G_TLS_CERT,
    G_TLS_KEY,
    G_TLS_SERVER_NAME,
    G_TIMEOUT,
    G_CONFIG,
    G_JSON,
    G_LOG_LEVEL,
    G_FARM,
    G_BEACON_GROUP,
    G_BEACON_PORT,
};

const struct option fc_global_options[] = {
    {"scheduler", required_argument, NULL, G_SCHEDULER},
    {"files", required_argument, NULL, G_FILES},
    {"discovery", required_argument, NULL, G_DISCOVERY},
    {"token", required_argument, NULL, G_TOKEN},
    {"tls-ca", required_argument, NULL, G_TLS_CA},
    {"tls-cert", required_argument, NULL, G_TLS_CERT},
    {"tls-key", required_argument, NULL, G_TLS_KEY},
    {"tls-server-name", required_argument, NULL, G_TLS_SERVER_NAME},
    {"timeout", required_argument, NULL, G_TIMEOUT},
    {"config", required_argument, NULL, G_CONFIG},
    {"json", no_argument, NULL, G_JSON},
    {"log-level", required_argument, NULL, G_LOG_LEVEL},
    {"farm", required_argument, NULL, G_FARM},
    {"beacon-group", required_argument, NULL, G_BEACON_GROUP},
    {"beacon-port", required_argument, NULL, G_BEACON_PORT},
    {NULL, 0, NULL, 0},
};

/* The settings that have a variable and a config-file key, in help order. */
struct setting {
    const char *name; /* flag, file key; variable PRINTFARM_<NAME> */
    size_t offset;    /* char * in struct fc_config */
    const char *def;
    const char *help;
};

#define OFF(f) offsetof(struct fc_config, f)
static const struct setting settings[] = {
    {"scheduler", OFF(scheduler), "127.0.0.1:7400",
     "scheduler replicas HOST:PORT[,HOST:PORT...], tried in turn; the leader redirect is followed"},
    {"files", OFF(files), "127.0.0.1:7300", "pf-files HOST:PORT (uploads)"},
    {"discovery", OFF(discovery), NULL, "pf-discovery HOST:PORT (farmctl status lists instances)"},
    {"token", OFF(token), NULL, "bearer token (operator role to change things, viewer to look)"},
    {"tls-ca", OFF(tls_ca), NULL, "PEM CA bundle: turns TLS on and verifies the servers"},
    {"tls-cert", OFF(tls_cert), NULL, "PEM client certificate (mutual TLS)"},
    {"tls-key", OFF(tls_key), NULL, "PEM private key of --tls-cert"},
    {"tls-server-name", OFF(tls_server_name), NULL, "TLS name to expect from the servers"},
    {"timeout", OFF(timeout), "10s", "deadline of each call (ms, s, m suffixes)"},
    {"log-level", OFF(log_level), "warn", "library log lines on stderr: debug, info, warn, error"},
    {"farm", OFF(farm), NULL,
     "find the farm of this name on the LAN by pf-discovery's beacon (through --discovery when "
     "given) and use the scheduler, pf-files and pf-discovery it names where not set"},
    {"beacon-group", OFF(beacon_group), PF_BEACON_GROUP_DEFAULT,
     "IPv4 multicast group of the beacon (--farm)"},
    {"beacon-port", OFF(beacon_port), "7570", "UDP port of the beacon (--farm)"},
};
#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))

static char **slot(struct fc_config *cfg, const struct setting *s)
{
    return (char **)((char *)cfg + s->offset);
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = v != NULL ? strdup(v) : NULL;
}

bool fc_config_global_opt(struct fc_config *cfg, int key, const char *value)
{
    switch (key) {
    case G_SCHEDULER:
        set_str(&cfg->scheduler, value);
        return true;
    case G_FILES:
        set_str(&cfg->files, value);
        return true;
    case G_DISCOVERY:
        set_str(&cfg->discovery, value);
        return true;
    case G_TOKEN:
        set_str(&cfg->token, value);
        return true;
    case G_TLS_CA:
        set_str(&cfg->tls_ca, value);
        return true;
    case G_TLS_CERT:
        set_str(&cfg->tls_cert, value);
        return true;
    case G_TLS_KEY:
        set_str(&cfg->tls_key, value);
        return true;
    case G_TLS_SERVER_NAME:
        set_str(&cfg->tls_server_name, value);
        return true;
    case G_TIMEOUT:
        set_str(&cfg->timeout, value);
        return true;
    case G_CONFIG:
        set_str(&cfg->config, value);
        return true;
    case G_JSON:
        cfg->json = true;
        return true;
    case G_LOG_LEVEL:
        set_str(&cfg->log_level, value);
        return true;
    case G_FARM:
        set_str(&cfg->farm, value);
        return true;
    case G_BEACON_GROUP:
        set_str(&cfg->beacon_group, value);
        return true;
    case G_BEACON_PORT:
        set_str(&cfg->beacon_port, value);
        return true;
    default:
        return false;
    }
}

/* ---- the config file ---- */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* Picks the file: --config/PRINTFARM_CONFIG (must exist), ./farmctl.conf,
 * then the user's one. "" when none. */
static int find_file(struct fc_config *cfg)
{
    const char *explicit_path = cfg->config;
    if (explicit_path == NULL || explicit_path[0] == '\0')
        explicit_path = getenv("PRINTFARM_CONFIG");
    if (explicit_path != NULL && explicit_path[0] != '\0') {
        if (access(explicit_path, R_OK) != 0) {
            fc_err("cannot read the config file '%s': %s", explicit_path, strerror(errno));
            return FC_EXIT_USAGE;
        }
        snprintf(cfg->config_path, sizeof(cfg->config_path), "%s", explicit_path);
        return FC_EXIT_OK;
    }
    if (access("farmctl.conf", R_OK) == 0) {
        snprintf(cfg->config_path, sizeof(cfg->config_path), "farmctl.conf");
        return FC_EXIT_OK;
    }
    char path[512];
    const char *xdg = getenv("XDG_CONFIG_HOME");
    const char *home = getenv("HOME");
    if (xdg != NULL && xdg[0] == '/')
        snprintf(path, sizeof(path), "%s/printfarm/farmctl.conf", xdg);
    else if (home != NULL && home[0] != '\0')
        snprintf(path, sizeof(path), "%s/.config/printfarm/farmctl.conf", home);
    else
        path[0] = '\0';
    if (path[0] != '\0' && access(path, R_OK) == 0)
        snprintf(cfg->config_path, sizeof(cfg->config_path), "%s", path);
    return FC_EXIT_OK;
}

/* Reads key = value lines into the settings still unset. */
static int read_file(struct fc_config *cfg, bool *file_set)
{
    FILE *f = fopen(cfg->config_path, "r");
    if (f == NULL) {
        fc_err("cannot read the config file '%s': %s", cfg->config_path, strerror(errno));
        return FC_EXIT_USAGE;
    }
    char line[1024];
    int lineno = 0, rc = FC_EXIT_OK;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            fc_err("%s:%d: line too long (1023 bytes at most)", cfg->config_path, lineno);
            rc = FC_EXIT_USAGE;
            break;
        }
        char *s = trim(line);
        if (s[0] == '\0' || s[0] == '#' || s[0] == ';')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            fc_err("%s:%d: expected KEY = VALUE, got '%.60s'", cfg->config_path, lineno, s);
            rc = FC_EXIT_USAGE;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        for (char *p = key; *p; p++)
            *p = *p == '_' ? '-' : (char)tolower((unsigned char)*p);
        size_t vlen = strlen(value);
        if (vlen >= 2 && (value[0] == '"' || value[0] == '\'') && value[vlen - 1] == value[0]) {
            value[vlen - 1] = '\0';
            value++;
        }
        const struct setting *hit = NULL;
        for (size_t i = 0; i < N_SETTINGS; i++)
            if (strcmp(settings[i].name, key) == 0)
                hit = &settings[i];
        if (hit == NULL) {
            char known[256];
            size_t used = 0;
            for (size_t i = 0; i < N_SETTINGS && used < sizeof(known); i++)
                used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s",
                                         i > 0 ? ", " : "", settings[i].name);
            fc_err("%s:%d: unknown key '%.60s' (known: %s)", cfg->config_path, lineno, key, known);
            rc = FC_EXIT_USAGE;
            break;
        }
        if (*slot(cfg, hit) == NULL && value[0] != '\0') {
            set_str(slot(cfg, hit), value);
            file_set[hit - settings] = true;
        }
    }
    fclose(f);
    return rc;
}

static int split_addrs(struct fc_config *cfg)
{
    char *copy = strdup(cfg->scheduler), *save = NULL;
    int rc = FC_EXIT_OK;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        char *t = trim(tok), host[256];
        int port;
        struct pf_error err;
        if (t[0] == '\0')
            continue;
        if (pf_config_parse_hostport(t, host, sizeof(host), &port, &err) != PF_OK || port == 0) {
            fc_err("bad scheduler address '%s': expected HOST:PORT", t);
            rc = FC_EXIT_USAGE;
            break;
        }
        if (cfg->n_sched_addrs == FC_ADDRS_MAX) {
            fc_err("too many scheduler addresses (%d at most)", FC_ADDRS_MAX);
            rc = FC_EXIT_USAGE;
            break;
        }
        cfg->sched_addrs[cfg->n_sched_addrs++] = strdup(t);
    }
    free(copy);
    if (rc == FC_EXIT_OK && cfg->n_sched_addrs == 0) {
        fc_err("no scheduler address: give --scheduler HOST:PORT");
        rc = FC_EXIT_USAGE;
    }
    return rc;
}

static int check_hostport(const char *what, const char *v)
{
    char host[256];
    int port;
    struct pf_error err;
    if (pf_config_parse_hostport(v, host, sizeof(host), &port, &err) != PF_OK || port == 0) {
        fc_err("bad %s address '%s': expected HOST:PORT", what, v);
        return FC_EXIT_USAGE;
    }
    return FC_EXIT_OK;
}

int fc_config_resolve(struct fc_config *cfg)
{
    bool file_set[N_SETTINGS] = {false};
    /* Variables fill what flags left unset; an empty variable is unset. */
    for (size_t i = 0; i < N_SETTINGS; i++) {
        char env[64];
        pf_config_env_name(settings[i].name, env, sizeof(env));
        const char *v = getenv(env);
        if (*slot(cfg, &settings[i]) == NULL && v != NULL && v[0] != '\0')
            set_str(slot(cfg, &settings[i]), v);
    }
    int rc = find_file(cfg);
    if (rc != FC_EXIT_OK)
        return rc;
    if (cfg->config_path[0] != '\0' && (rc = read_file(cfg, file_set)) != FC_EXIT_OK)
        return rc;
    if (cfg->farm != NULL) {
        cfg->farm_fill_scheduler = cfg->scheduler == NULL;
        cfg->farm_fill_files = cfg->files == NULL;
        cfg->farm_fill_discovery = cfg->discovery == NULL;
        if (!pf_beacon_farm_valid(cfg->farm)) {
            fc_err("bad farm name '%s': letters, digits, '.', '_' and '-' only", cfg->farm);
            return FC_EXIT_USAGE;
        }
    }
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (*slot(cfg, &settings[i]) == NULL && settings[i].def != NULL)
            set_str(slot(cfg, &settings[i]), settings[i].def);
    uint32_t bport;
    if (!fc_parse_u32(cfg->beacon_port, 1, 65535, &bport)) {
        fc_err("bad beacon port '%s': expected 1..65535", cfg->beacon_port);
        return FC_EXIT_USAGE;
    }
    cfg->beacon_port_num = (int)bport;
    if (pf_config_parse_duration_ms(cfg->timeout, &cfg->timeout_ms) != PF_OK ||
        cfg->timeout_ms <= 0) {
        fc_err("bad timeout '%s': expected a duration such as 500ms, 10s or 2m", cfg->timeout);
        return FC_EXIT_USAGE;
    }
    if ((rc = split_addrs(cfg)) != FC_EXIT_OK || (rc = check_hostport("files", cfg->files)) != 0)
        return rc;
    if (cfg->discovery != NULL && (rc = check_hostport("discovery", cfg->discovery)) != 0)
        return rc;
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        fc_err("--tls-cert and --tls-key go together: give both or neither");
        return FC_EXIT_USAGE;
    }
    return FC_EXIT_OK;
}

/* The lookup's deadline, polled by lib/discovery_client while it retries. */
static bool farm_deadline_passed(void *arg)
{
    return pf_time_mono_ms() >= *(const int64_t *)arg;
}

int fc_config_find_farm(struct fc_config *cfg)
{
    if (cfg->farm == NULL || cfg->farm_found)
        return FC_EXIT_OK;
    if (!cfg->farm_fill_scheduler && !cfg->farm_fill_files && !cfg->farm_fill_discovery) {
        cfg->farm_found = true; /* everything was given: nothing to find */
        return FC_EXIT_OK;
    }
    int64_t deadline = pf_time_mono_ms() + cfg->timeout_ms;
    bool by_beacon = cfg->farm_fill_discovery;
    struct pf_discovery_find_opts fo = {
        .discovery = by_beacon ? NULL : cfg->discovery,
        .beacon = {.group = cfg->beacon_group,
                   .port = cfg->beacon_port_num,
                   .farm = cfg->farm,
                   .timeout_ms = cfg->timeout_ms,
                   .stop = farm_deadline_passed,
                   .stop_arg = &deadline},
        .retry_ms = 250,
    };
    fo.client.tls = (struct pf_tls_files){cfg->tls_cert, cfg->tls_key, cfg->tls_ca};
    fo.client.token = cfg->token;
    fo.client.server_name = cfg->tls_server_name;
    fo.client.keepalive_ms = -1;
    char scheds[PF_DISCOVERY_RESOLVE_MAX * PF_RPC_TARGET_MAX], files[PF_RPC_TARGET_MAX],
        disc[PF_RPC_TARGET_MAX] = "";
    struct pf_error err;
    enum pf_status rc = pf_discovery_find_farm(&fo, scheds, sizeof(scheds), files, sizeof(files),
                                               disc, sizeof(disc), &err);
    /* The beacon wait ends by its timeout or by the deadline, whichever
     * is polled first: either way no beacon came when disc is still empty. */
    if ((rc == PF_E_DEADLINE || rc == PF_E_CANCELLED) && by_beacon && disc[0] == '\0') {
        fc_err("no beacon of farm '%s' heard on %s:%d within %lld ms — is pf-discovery running "
               "with --beacon on this LAN, and the farm name right? (or give --scheduler and "
               "--files)",
               cfg->farm, cfg->beacon_group, cfg->beacon_port_num, (long long)cfg->timeout_ms);
        return FC_EXIT_UNREACHABLE;
    }
    if (rc == PF_E_CANCELLED) {
        fc_err("pf-discovery at %s named no scheduler and pf-files of farm '%s' within %lld ms — "
               "are they running and registered with it (their --discovery flag)?",
               by_beacon ? disc : cfg->discovery, cfg->farm, (long long)cfg->timeout_ms);
        return FC_EXIT_UNREACHABLE;
    }
    if (rc != PF_OK) {
        fc_err("could not find farm '%s': %s", cfg->farm, err.msg);
        return FC_EXIT_UNREACHABLE;
    }
    if (cfg->farm_fill_scheduler) {
        set_str(&cfg->scheduler, scheds);
        for (size_t i = 0; i < cfg->n_sched_addrs; i++)
            free(cfg->sched_addrs[i]);
        cfg->n_sched_addrs = 0;
        if (split_addrs(cfg) != FC_EXIT_OK)
            return FC_EXIT_UNREACHABLE;
    }
    if (cfg->farm_fill_files)
        set_str(&cfg->files, files);
    if (cfg->farm_fill_discovery)
        set_str(&cfg->discovery, disc);
    cfg->farm_found = true;
    return FC_EXIT_OK;
}

void fc_config_release(struct fc_config *cfg)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        set_str(slot(cfg, &settings[i]), NULL);
    set_str(&cfg->config, NULL);
    for (size_t i = 0; i < cfg->n_sched_addrs; i++)
        free(cfg->sched_addrs[i]);
    cfg->n_sched_addrs = 0;
}

/* ---- help ---- */

void fc_print_help(FILE *out)
{
    fprintf(
        out,
        "usage: farmctl [GLOBAL FLAGS] COMMAND [ARGS] [FLAGS]\n"
        "The Printfarm operator's command line: submit prints, watch and steer the queue "
        "and the printers.\n"
        "\n"
        "commands:\n"
        "  bundle create OUT --profile NAME=FILE.gcode ...   build a bundle file (one gcode per "
        "printer profile)\n"
        "  bundle show FILE                                  what a bundle file holds\n"
        "  submit FILE.gcode|BUNDLE [--count N] [--priority P] [--material M] [--colour C]\n"
        "         [--queue Q] [--profile NAME] [--idempotency-key K] ...  upload and queue a "
        "print; prints the job id\n"
        "  jobs [--queue Q] [--state S,...] [--limit N]     list jobs, newest first\n"
        "  job show|cancel|hold|release ID                   one job (cancel: [--running] "
        "[--reason R])\n"
        "  job priority ID P  |  job count ID N              change a job\n"
        "  printers [--queue Q] [--state S,...]             list printers\n"
        "  printer show|clear|release ID                     one printer; clear: the bed is empty; "
        "release: end quarantine\n"
        "  printer materials ID [--extruder N] MATERIAL[:COLOUR]   what is loaded\n"
        "  events [--after N] [--follow] [--job ID] [--printer ID] [--kind K,...]   the event "
        "log\n"
        "  status                                            leader, queue depth, printers, "
        "instances\n"
        "  help [COMMAND]                                    this text, or a command's\n"
        "\n"
        "global flags (also after the command; each has a PRINTFARM_* variable and a key in the "
        "config file):\n");
    for (size_t i = 0; i < N_SETTINGS; i++) {
        char env[64], left[64];
        pf_config_env_name(settings[i].name, env, sizeof(env));
        snprintf(left, sizeof(left), "--%s VALUE", settings[i].name);
        fprintf(out, "  %-26s %s (env %s%s%s)\n", left, settings[i].help, env,
                settings[i].def ? ", default: " : "", settings[i].def ? settings[i].def : "");
    }
    fprintf(out,
            "  %-26s config file (env PRINTFARM_CONFIG; else ./farmctl.conf, else\n"
            "  %-26s ${XDG_CONFIG_HOME:-~/.config}/printfarm/farmctl.conf): KEY = VALUE lines,\n"
            "  %-26s keys as the flags above without dashes (scheduler = 10.0.0.5:7400)\n"
            "  %-26s output for scripts (stable field names: the .proto names)\n"
            "  %-26s this text\n",
            "--config FILE", "", "", "--json", "-h, --help");
    fprintf(
        out,
        "\n"
        "Precedence: flag, then variable, then config file, then default.\n"
        "\n"
        "exit codes:\n"
        "  0  done\n"
        "  1  a server refused or failed the request (not found, bad token, wrong state, ...),\n"
        "     or a local file could not be read\n"
        "  2  usage error: bad command line, flag or config file\n"
        "  3  a service could not be reached (or the schedulers have no leader right now)\n");
}

void fc_print_cmd_help(const struct fc_cmd *cmd, FILE *out)
{
    fprintf(out, "usage: farmctl %s %s\n%s", cmd->name, cmd->synopsis, cmd->help);
    fprintf(out, "Global flags (--scheduler, --files, --token, --json, ...): farmctl --help\n");
}

int fc_usage(const struct fc_cmd *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "farmctl: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (cmd != NULL)
        fprintf(stderr, "usage: farmctl %s %s\n(farmctl %s --help for more)\n", cmd->name,
                cmd->synopsis, cmd->name);
    else
        fprintf(stderr, "(farmctl --help lists the commands)\n");
    return FC_EXIT_USAGE;
}

/* ---- command option parsing ---- */

#define OPTS_MAX 48

bool fc_parse(struct fc_ctx *ctx, const struct fc_cmd *cmd, int argc, char **argv, fc_opt_fn fn,
              void *arg, int *first, int *exit_code)
{
    struct option all[OPTS_MAX];
    size_t n = 0;
    for (const struct option *o = cmd->opts; o != NULL && o->name != NULL && n < OPTS_MAX - 16; o++)
        all[n++] = *o;
    for (const struct option *o = fc_global_options; o->name != NULL; o++)
        all[n++] = *o;
    all[n++] = (struct option){"help", no_argument, NULL, 'h'};
    all[n] = (struct option){NULL, 0, NULL, 0};

    /* Negative numbers ("job priority ID -5") are arguments, not options:
     * hidden from getopt behind placeholders, restored after it permuted argv. */
    static char placeholder[OPTS_MAX][2];
    char *hidden[OPTS_MAX];
    size_t n_hidden = 0;
    for (int i = 1; i < argc && n_hidden < OPTS_MAX; i++) {
        const char *a = argv[i];
        if (a[0] == '-' && isdigit((unsigned char)a[1]) &&
            strspn(a + 1, "0123456789") == strlen(a + 1)) {
            hidden[n_hidden] = argv[i];
            argv[i] = placeholder[n_hidden++];
        }
    }

    char prog[96];
    snprintf(prog, sizeof(prog), "farmctl %s", cmd->name);
    char *saved = argv[0];
    argv[0] = prog; /* getopt's messages name the command */
    optind = 0;     /* GNU: full re-initialisation */
    opterr = 1;
    int c;
    *exit_code = FC_EXIT_OK;
    char shortopts[64] = "h";
    size_t ns = 1;
    for (size_t i = 0; i < n && ns + 3 < sizeof(shortopts); i++)
        if (all[i].flag == NULL && all[i].val < 128 && isalpha(all[i].val) && all[i].val != 'h') {
            shortopts[ns++] = (char)all[i].val;
            if (all[i].has_arg == required_argument)
                shortopts[ns++] = ':';
            shortopts[ns] = '\0';
        }
    while ((c = getopt_long(argc, argv, shortopts, all, NULL)) != -1) {
        if (c == 'h') {
            argv[0] = saved;
            fc_print_cmd_help(cmd, stdout);
            *exit_code = FC_EXIT_OK;
            return false;
        }
        if (c == '?' || c == ':') {
            argv[0] = saved;
            fc_usage(cmd, "bad command line");
            *exit_code = FC_EXIT_USAGE;
            return false;
        }
        const char *value = optarg;
        for (size_t k = 0; value != NULL && k < n_hidden; k++)
            if (value == placeholder[k])
                value = hidden[k]; /* "--priority -5" */
        if (fc_config_global_opt(&ctx->cfg, c, value))
            continue;
        int rc = fn != NULL ? fn(arg, c, value) : FC_EXIT_USAGE;
        if (rc != FC_EXIT_OK) {
            argv[0] = saved;
            *exit_code = rc;
            return false;
        }
    }
    argv[0] = saved;
    for (int i = 1; i < argc; i++)
        for (size_t k = 0; k < n_hidden; k++)
            if (argv[i] == placeholder[k])
                argv[i] = hidden[k];
    *first = optind;
    int rc = fc_config_resolve(&ctx->cfg);
    if (rc != FC_EXIT_OK) {
        fprintf(stderr, "(farmctl --help lists the global flags, variables and config file)\n");
        *exit_code = rc;
        return false;
    }
    return true;
}

bool fc_parse_u32(const char *text, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    if (text == NULL || !isdigit((unsigned char)text[0]))
        return false;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = (uint32_t)v;
    return true;
}

bool fc_parse_i32(const char *text, int32_t *out)
{
    char *end;
    errno = 0;
    if (text == NULL || text[0] == '\0')
        return false;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < INT32_MIN || v > INT32_MAX)
        return false;
    *out = (int32_t)v;
    return true;
}
