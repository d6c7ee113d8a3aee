/* pf-agent: wiring only. Parses flags, opens the file cache, creates one
 * driver and one scheduler session per printer (one for --driver marlin, or
 * --sim-printers N simulated ones), serves /metrics and /healthz on the admin
 * port, and runs until SIGTERM/SIGINT. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include "admin.h"
#include "cache.h"
#include "config.h"
#include "discovery_client.h"
#include "driver.h"
#include "log.h"
#include "metrics.h"
#include "rpc/server.h"
#include "service.h"
#include "session.h"
#include "statefile.h"
#include "timeutil.h"

#define SCHEDULERS_MAX 16

struct agent_flags {
    char *scheduler;
    char *files;
    char *printer_id;
    char *profile;
    char *driver;
    char *serial_port;
    int64_t baud;
    int64_t marlin_window;
    char *clearing_gcode;
    int64_t extruders;
    int64_t sim_printers;
    char *sim_speed;
    char *sim_heat_seconds;
    char *sim_fail_at;
    char *sim_fault;
    char *sim_log;
    char *materials;
    char *cache_dir;
    uint64_t cache_size;
    char *state_dir;
    int64_t status_interval_ms;
    int64_t reconnect_max_ms;
    int64_t download_timeout_ms;
    char *token;
    char *tls_ca;
    char *tls_cert;
    char *tls_key;
    char *tls_server_name;
    char *admin_listen;
    char *log_level;
    char *discovery;
    bool discovery_beacon;
    char *farm;
    char *beacon_group;
    int64_t beacon_port;
    int64_t beacon_timeout_ms;
};

struct printer {
    char id[PF_STATEFILE_ID_MAX];
    struct pf_driver *driver;
    struct pf_session *session;
    int lock_fd;
};

struct agent {
    struct printer *printers;
    size_t count;
};

static bool ready(void *arg, struct pf_buf *why)
{
    const struct agent *a = arg;
    size_t connected = 0;

    if (pf_signals_stop_requested()) {
        if (pf_buf_printf(why, "shutting down") != PF_OK)
            return false;
        return false;
    }
    for (size_t i = 0; i < a->count; i++)
        if (a->printers[i].session != NULL && pf_session_connected(a->printers[i].session))
            connected++;
    if (connected == a->count)
        return true;
    if (pf_buf_printf(why, "%zu of %zu printers connected to the scheduler", connected, a->count) !=
        PF_OK)
        return false;
    return false;
}

static bool stop_requested(void *arg)
{
    (void)arg;
    return pf_signals_stop_requested();
}

static bool parse_number(const char *flag, const char *text, double min, double max, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(v) || v < min || v > max) {
        fprintf(stderr, "pf-agent: --%s '%s' is not a number in %g..%g\n", flag, text, min, max);
        return false;
    }
    *out = v;
    return true;
}

/* Splits "a:1,b:2" into at most max trimmed entries (pointers into text). */
static size_t split_list(char *text, char **out, size_t max)
{
    size_t n = 0;
    char *save = NULL;

    for (char *tok = strtok_r(text, ",", &save); tok != NULL && n < max;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (*tok != '\0')
            out[n++] = tok;
    }
    return n;
}

static enum pf_status mkdir_p(const char *path, struct pf_error *err)
{
    char tmp[PATH_MAX];

    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return pf_error_set(err, PF_E_IO, "could not create '%s': %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return pf_error_set(err, PF_E_IO, "could not create '%s': %s", tmp, strerror(errno));
    return PF_OK;
}

/* One agent per printer: a second process with the same state directory and
 * printer id would print jobs twice, so it is refused. */
static int lock_printer(const char *state_dir, const char *id, struct pf_error *err)
{
    char path[PATH_MAX];
    int fd;

    snprintf(path, sizeof(path), "%s/%s.lock", state_dir, id);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        pf_error_set(err, PF_E_IO, "could not open '%s': %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        pf_error_set(err, PF_E_UNAVAILABLE,
                     "printer '%s' is already served by another pf-agent (lock '%s' is held)", id,
                     path);
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    struct agent_flags f = {0};
    const struct pf_flag flags[] = {
        {"scheduler", PF_FLAG_STRING, &f.scheduler, "127.0.0.1:7400",
         "scheduler replicas HOST:PORT[,HOST:PORT...]: tried in turn, leader redirects followed", 0,
         0},
        {"files", PF_FLAG_STRING, &f.files, "127.0.0.1:7300", "pf-files HOST:PORT", 0, 0},
        {"printer-id", PF_FLAG_STRING, &f.printer_id, NULL,
         "this printer's id, unique in the farm (default: the host name); with --sim-printers N "
         "the printers are ID-001..ID-N",
         0, 0},
        {"profile", PF_FLAG_STRING, &f.profile, "generic",
         "printer profile: which gcode of a bundle this printer prints", 0, 0},
        {"driver", PF_FLAG_STRING, &f.driver, "sim", "printer driver: sim or marlin", 0, 0},
        {"serial-port", PF_FLAG_STRING, &f.serial_port, "/dev/ttyACM0",
         "marlin: the printer's serial device", 0, 0},
        {"baud", PF_FLAG_INT, &f.baud, "115200", "marlin: serial baud rate", 9600, 1000000},
        {"marlin-window", PF_FLAG_INT, &f.marlin_window, "1",
         "marlin: numbered lines in flight (1 is safe everywhere)", 1, 16},
        {"clearing-gcode", PF_FLAG_STRING, &f.clearing_gcode, NULL,
         "marlin: file of gcode that pushes a finished print off the bed (enables RunClearing)", 0,
         0},
        {"extruders", PF_FLAG_INT, &f.extruders, "1", "extruders of the printer", 1, 7},
        {"sim-printers", PF_FLAG_INT, &f.sim_printers, "1",
         "sim: simulated printers hosted by this process, each with its own stream", 1, 10000},
        {"sim-speed", PF_FLAG_STRING, &f.sim_speed, "1",
         "sim: time factor applied to the gcode's estimated time (0.001 for tests)", 0, 0},
        {"sim-heat-seconds", PF_FLAG_STRING, &f.sim_heat_seconds, "3",
         "sim: heating time before each print, in seconds", 0, 0},
        {"sim-fail-at", PF_FLAG_STRING, &f.sim_fail_at, "-1",
         "sim: percent of a print at which it fails (or the fault happens); -1 = never", 0, 0},
        {"sim-fault", PF_FLAG_STRING, &f.sim_fault, "none",
         "sim: injected fault: none, disconnect, thermal or never-finish", 0, 0},
        {"sim-log", PF_FLAG_STRING, &f.sim_log, NULL,
         "sim: append one line per finished print: ATTEMPT JOB PRINTER RESULT", 0, 0},
        {"materials", PF_FLAG_STRING, &f.materials, NULL,
         "loaded materials: EXTRUDER=MATERIAL[:COLOUR],... (\"0=PLA:black,1=PETG:white\")", 0, 0},
        {"cache-dir", PF_FLAG_STRING, &f.cache_dir, NULL,
         "gcode file cache directory (default: STATE-DIR/cache)", 0, 0},
        {"cache-size", PF_FLAG_SIZE, &f.cache_size, "2G",
         "cache size limit; least recently used files are evicted (0 = none)", 0, 0},
        {"state-dir", PF_FLAG_STRING, &f.state_dir, "./data/agent",
         "directory of the state files (what each printer is printing)", 0, 0},
        {"status-interval", PF_FLAG_DURATION_MS, &f.status_interval_ms, "1s",
         "status report interval until the scheduler asks for another", 50, 3600000},
        {"reconnect-max", PF_FLAG_DURATION_MS, &f.reconnect_max_ms, "30s",
         "longest wait between reconnects to the scheduler", 100, 3600000},
        {"download-timeout", PF_FLAG_DURATION_MS, &f.download_timeout_ms, "10m",
         "give up fetching a file after this long", 1000, 86400000},
        {"token", PF_FLAG_STRING, &f.token, NULL,
         "bearer token (agent role, issued for this printer id)", 0, 0},
        {"tls-ca", PF_FLAG_STRING, &f.tls_ca, NULL, "PEM CA bundle to verify the servers", 0, 0},
        {"tls-cert", PF_FLAG_STRING, &f.tls_cert, NULL, "PEM client certificate (mutual TLS)", 0,
         0},
        {"tls-key", PF_FLAG_STRING, &f.tls_key, NULL, "PEM private key of --tls-cert", 0, 0},
        {"tls-server-name", PF_FLAG_STRING, &f.tls_server_name, NULL,
         "TLS name to expect from the servers (tests)", 0, 0},
        {"admin-listen", PF_FLAG_STRING, &f.admin_listen, "127.0.0.1:9500",
         "admin HTTP address for /metrics, /healthz, /readyz (empty = off)", 0, 0},
        {"log-level", PF_FLAG_STRING, &f.log_level, "info", "debug, info, warn or error", 0, 0},
        {"discovery", PF_FLAG_STRING, &f.discovery, NULL,
         "pf-discovery HOST:PORT: register there (empty: off); with an empty --scheduler, also "
         "where to look up the scheduler and pf-files",
         0, 0},
        {"discovery-beacon", PF_FLAG_BOOL, &f.discovery_beacon, "false",
         "find the farm on the LAN: pf-discovery's beacon, then the scheduler and pf-files from "
         "it (also when --scheduler is empty); --scheduler and --files are then ignored",
         0, 0},
        {"farm", PF_FLAG_STRING, &f.farm, PF_DISCOVERY_FARM_DEFAULT,
         "farm name whose beacon to accept", 0, 0},
        {"beacon-group", PF_FLAG_STRING, &f.beacon_group, PF_BEACON_GROUP_DEFAULT,
         "beacon IPv4 multicast group", 0, 0},
        {"beacon-port", PF_FLAG_INT, &f.beacon_port, "7570", "beacon UDP port", 1, 65535},
        {"beacon-timeout", PF_FLAG_DURATION_MS, &f.beacon_timeout_ms, "60s",
         "how long to wait for the beacon before giving up", 100, 86400000},
    };
    const struct pf_config cfg = {
        .program = "pf-agent",
        .summary = "Printfarm agent: drives printers and streams their events to the scheduler.",
        .flags = flags,
        .flag_count = sizeof(flags) / sizeof(flags[0]),
    };
    struct pf_session_material materials[PF_SESSION_MATERIALS_MAX];
    size_t material_count = 0;
    char *schedulers[SCHEDULERS_MAX];
    size_t scheduler_count;
    char hostname[64], base_id[PF_STATEFILE_ID_MAX - 8], cache_dir[PATH_MAX];
    struct pf_sim_config sim = {0};
    struct pf_rpc_client_opts client = {0};
    struct pf_session_metrics sm;
    struct pf_metrics *metrics = NULL;
    struct pf_admin *admin = NULL;
    struct pf_rpc_channel *files = NULL;
    struct pf_cache *cache = NULL;
    struct agent agent = {0};
    enum pf_log_level level;
    struct pf_error err;
    struct pf_discovery_client *disc = NULL;
    char disc_addr[PF_BEACON_ADDR_MAX] = "", admin_addr[PF_RPC_TARGET_MAX];
    /* From pf-discovery; schedulers[] points into it until the end. */
    char found_schedulers[PF_DISCOVERY_RESOLVE_MAX * PF_RPC_TARGET_MAX];
    char found_files[PF_RPC_TARGET_MAX];
    bool is_sim, find_farm, logging = false;
    int sim_log_fd = -1;
    int exit_code = 1;

    if (pf_service_parse_flags(&cfg, argc, argv, &exit_code) != PF_OK)
        goto out_config;
    exit_code = 2;
    if (pf_log_level_parse(f.log_level, &level) != PF_OK) {
        fprintf(stderr, "pf-agent: --log-level '%s': use debug, info, warn or error\n",
                f.log_level);
        goto out_config;
    }
    is_sim = strcmp(f.driver, "sim") == 0;
    if (!is_sim && strcmp(f.driver, "marlin") != 0) {
        fprintf(stderr, "pf-agent: --driver '%s': use sim or marlin\n", f.driver);
        goto out_config;
    }
    if (!is_sim && f.sim_printers != 1) {
        fprintf(stderr, "pf-agent: --sim-printers needs --driver sim\n");
        goto out_config;
    }
    if (pf_sim_fault_parse(f.sim_fault, &sim.fault) != PF_OK) {
        fprintf(stderr,
                "pf-agent: --sim-fault '%s': use none, disconnect, thermal or "
                "never-finish\n",
                f.sim_fault);
        goto out_config;
    }
    if (!parse_number("sim-speed", f.sim_speed, 0, 1e6, &sim.speed) ||
        !parse_number("sim-heat-seconds", f.sim_heat_seconds, 0, 86400, &sim.heat_seconds) ||
        !parse_number("sim-fail-at", f.sim_fail_at, -1, 100, &sim.fail_at))
        goto out_config;
    if (f.materials != NULL &&
        pf_session_parse_materials(f.materials, materials, PF_SESSION_MATERIALS_MAX,
                                   &material_count, &err) != PF_OK) {
        fprintf(stderr, "pf-agent: --materials: %s\n", err.msg);
        goto out_config;
    }
    /* Without a scheduler address the farm is found through pf-discovery. */
    find_farm = f.discovery_beacon || f.scheduler == NULL || f.scheduler[0] == '\0';
    if (!find_farm) {
        scheduler_count = split_list(f.scheduler, schedulers, SCHEDULERS_MAX);
        if (scheduler_count == 0) {
            fprintf(stderr, "pf-agent: --scheduler names no address\n");
            goto out_config;
        }
    }
    if (f.discovery != NULL && f.discovery[0] != '\0')
        snprintf(disc_addr, sizeof(disc_addr), "%s", f.discovery);
    if (f.printer_id == NULL || f.printer_id[0] == '\0') {
        if (gethostname(hostname, sizeof(hostname)) != 0)
            snprintf(hostname, sizeof(hostname), "printer");
        hostname[sizeof(hostname) - 1] = '\0';
        snprintf(base_id, sizeof(base_id), "%s", hostname);
    } else if (strlen(f.printer_id) >= sizeof(base_id)) {
        fprintf(stderr, "pf-agent: --printer-id is longer than %zu bytes\n", sizeof(base_id) - 1);
        goto out_config;
    } else {
        memcpy(base_id, f.printer_id, strlen(f.printer_id) + 1);
    }
    snprintf(cache_dir, sizeof(cache_dir), "%s", f.cache_dir ? f.cache_dir : f.state_dir);
    if (f.cache_dir == NULL)
        strncat(cache_dir, "/cache", sizeof(cache_dir) - strlen(cache_dir) - 1);

    exit_code = 1;
    pf_log_init(level, "pf-agent");
    logging = true;
    pf_signals_install();
    metrics = pf_metrics_create();
    if (metrics == NULL) {
        pf_log_error("startup_failed", "error=\"out of memory\"");
        goto out_config;
    }
    pf_session_metrics_init(&sm, metrics);
    if (mkdir_p(f.state_dir, &err) != PF_OK) {
        pf_log_error("startup_failed", "error=\"%s\"", err.msg);
        goto out_metrics;
    }
    client.tls = (struct pf_tls_files){f.tls_cert, f.tls_key, f.tls_ca};
    client.token = f.token;
    client.server_name = f.tls_server_name;
    if (find_farm) {
        struct pf_discovery_find_opts fo = {
            .discovery = f.discovery,
            .beacon = {.group = f.beacon_group,
                       .port = (int)f.beacon_port,
                       .farm = f.farm,
                       .timeout_ms = f.beacon_timeout_ms,
                       .stop = stop_requested},
            .client = client,
        };
        if (f.discovery == NULL || f.discovery[0] == '\0')
            pf_log_info("beacon_listening", "farm=%s group=%s port=%lld timeout_ms=%lld", f.farm,
                        f.beacon_group, (long long)f.beacon_port, (long long)f.beacon_timeout_ms);
        if (pf_discovery_find_farm(&fo, found_schedulers, sizeof(found_schedulers), found_files,
                                   sizeof(found_files), disc_addr, sizeof(disc_addr),
                                   &err) != PF_OK) {
            pf_log_error("startup_failed", "error=\"could not find the farm: %s\"", err.msg);
            goto out_metrics;
        }
        /* Flag strings belong to the config (pf_config_release frees them). */
        free(f.files);
        f.files = strdup(found_files);
        scheduler_count = split_list(found_schedulers, schedulers, SCHEDULERS_MAX);
        if (f.files == NULL || scheduler_count == 0) {
            pf_log_error("startup_failed", "error=\"out of memory\"");
            goto out_metrics;
        }
    }
    files = pf_rpc_channel_create(f.files, &client, &err);
    if (files == NULL) {
        pf_log_error("startup_failed", "error=\"%s\"", err.msg);
        goto out_metrics;
    }
    {
        struct pf_cache_config cc = {.dir = cache_dir,
                                     .max_bytes = f.cache_size,
                                     .download_timeout_ms = f.download_timeout_ms,
                                     .metrics = metrics};
        if (pf_cache_open(&cc, &cache, &err) != PF_OK) {
            pf_log_error("startup_failed", "error=\"%s\"", err.msg);
            goto out_files;
        }
    }
    if (is_sim && f.sim_log != NULL) {
        sim_log_fd = open(f.sim_log, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (sim_log_fd < 0) {
            pf_log_error("startup_failed", "error=\"could not open --sim-log '%s': %s\"", f.sim_log,
                         strerror(errno));
            goto out_cache;
        }
    }

    agent.count = is_sim ? (size_t)f.sim_printers : 1;
    agent.printers = calloc(agent.count, sizeof(*agent.printers));
    if (agent.printers == NULL) {
        pf_log_error("startup_failed", "error=\"out of memory\"");
        goto out_cache;
    }
    for (size_t i = 0; i < agent.count; i++)
        agent.printers[i].lock_fd = -1;
    for (size_t i = 0; i < agent.count; i++) {
        struct printer *p = &agent.printers[i];
        char state_path[PATH_MAX], sim_path[PATH_MAX];
        struct pf_session_config sc;
        enum pf_status rc;

        if (is_sim && f.sim_printers > 1)
            snprintf(p->id, sizeof(p->id), "%s-%03u", base_id, (unsigned)(i + 1) % 100000u);
        else
            snprintf(p->id, sizeof(p->id), "%s", base_id);
        p->lock_fd = lock_printer(f.state_dir, p->id, &err);
        if (p->lock_fd < 0) {
            pf_log_error("startup_failed", "printer=%s error=\"%s\"", p->id, err.msg);
            goto out_printers;
        }
        snprintf(state_path, sizeof(state_path), "%s/%s.state", f.state_dir, p->id);
        if (is_sim) {
            sim.printer_id = p->id;
            snprintf(sim_path, sizeof(sim_path), "%s/%s.sim", f.state_dir, p->id);
            sim.state_path = sim_path;
            sim.extruders = (uint32_t)f.extruders;
            sim.clear_seconds = 2 * (sim.speed < 1 ? sim.speed : 1) + 0.2;
            sim.recover_seconds = 5;
            sim.log_fd = sim_log_fd;
            rc = pf_driver_sim_create(&sim, &p->driver, &err);
        } else {
            struct pf_marlin_driver_config mc = {.port = f.serial_port,
                                                 .baud = (unsigned)f.baud,
                                                 .window = (unsigned)f.marlin_window,
                                                 .clearing_gcode_path = f.clearing_gcode,
                                                 .extruders = (uint32_t)f.extruders};
            rc = pf_driver_marlin_create(&mc, &p->driver, &err);
        }
        if (rc != PF_OK) {
            pf_log_error("startup_failed", "printer=%s error=\"%s\"", p->id, err.msg);
            goto out_printers;
        }
        sc = (struct pf_session_config){
            .printer_id = p->id,
            .profile = f.profile,
            .schedulers = (const char *const *)schedulers,
            .scheduler_count = scheduler_count,
            .client = &client,
            .files = files,
            .cache = cache,
            .driver = p->driver,
            .state_path = state_path,
            .materials = materials,
            .material_count = material_count,
            .status_interval_ms = f.status_interval_ms,
            .backoff_max_ms = f.reconnect_max_ms,
            .metrics = &sm,
        };
        if (pf_session_create(&sc, &p->session, &err) != PF_OK) {
            pf_log_error("startup_failed", "printer=%s error=\"%s\"", p->id, err.msg);
            goto out_printers;
        }
    }
    if (f.admin_listen != NULL && f.admin_listen[0] != '\0') {
        admin = pf_admin_start(f.admin_listen, metrics, ready, &agent, &err);
        if (admin == NULL) {
            pf_log_error("startup_failed", "error=\"%s\"", err.msg);
            goto out_printers;
        }
        pf_log_info("admin_listening", "port=%d", pf_admin_port(admin));
    }
    for (size_t i = 0; i < agent.count; i++)
        if (pf_session_start(agent.printers[i].session, &err) != PF_OK) {
            pf_log_error("startup_failed", "error=\"%s\"", err.msg);
            goto out_admin;
        }
    if (disc_addr[0] != '\0' && admin != NULL) {
        /* Agents have no gRPC port: pf-discovery probes their /healthz. */
        static const char *const labels[] = {"probe=http"};
        struct pf_discovery_client_opts dopts = {
            .target = disc_addr, .client = client, .component = "pf-agent"};
        pf_discovery_advertise(f.admin_listen, pf_admin_port(admin), admin_addr,
                               sizeof(admin_addr));
        disc = pf_discovery_client_create(&dopts, &err);
        for (size_t i = 0; disc != NULL && i < agent.count; i++) {
            struct pf_discovery_instance inst = {.kind = PF_DISCOVERY_KIND_AGENT,
                                                 .id = agent.printers[i].id,
                                                 .address = admin_addr,
                                                 .labels = labels,
                                                 .label_count = 1};
            if (pf_discovery_client_add(disc, &inst, &err) != PF_OK)
                break;
        }
        if (disc == NULL || pf_discovery_client_start(disc, &err) != PF_OK) {
            pf_log_error("startup_failed", "error=\"--discovery: %s\"", err.msg);
            goto out_admin;
        }
    } else if (disc_addr[0] != '\0') {
        pf_log_warn("discovery_register_skipped",
                    "reason=\"no admin port: pf-discovery probes agents on it\"");
    }
    pf_log_info("agent_ready", "printers=%zu driver=%s profile=%s scheduler=%s files=%s",
                agent.count, f.driver, f.profile, schedulers[0], f.files);
    while (!pf_signals_stop_requested())
        pf_time_sleep_ms(100);
    pf_log_info("agent_stopping", NULL);
    exit_code = 0;

out_admin:
    pf_discovery_client_destroy(disc); /* deregisters */
    for (size_t i = 0; i < agent.count; i++)
        if (agent.printers[i].session != NULL)
            pf_session_request_stop(agent.printers[i].session);
    pf_admin_stop(admin);
out_printers:
    for (size_t i = 0; agent.printers != NULL && i < agent.count; i++) {
        struct printer *p = &agent.printers[i];
        pf_session_destroy(p->session);
        pf_driver_destroy(p->driver);
        if (p->lock_fd >= 0)
            close(p->lock_fd);
    }
    free(agent.printers);
out_cache:
    if (sim_log_fd >= 0)
        close(sim_log_fd);
    pf_cache_close(cache);
out_files:
    pf_rpc_channel_destroy(files);
out_metrics:
    pf_metrics_destroy(metrics);
out_config:
    pf_config_release(&cfg);
    if (logging)
        pf_log_info("exit", "code=%d", exit_code);
    return exit_code;
}
