/* pf-beacon-listen: the agent side of LAN discovery as a test tool. Waits for
 * the beacon of one farm (pf_beacon_listen), prints what it heard, and with
 * --resolve ROLE dials the discovery address it learned and prints the
 * addresses Resolve gives. Output (stdout, one line each):
 *   stats received=N malformed=N other_farm=N
 *   discovery=HOST:PORT
 *   resolve ROLE=ADDR[,ADDR...]
 * Exit 0 when a beacon came (and Resolve worked), 3 when none came in time,
 * 4 when Resolve failed, 1 on a set-up error, 2 on bad flags. */
#include <stdio.h>
#include <string.h>
#include "config.h"
#include "discovery_client.h"
#include "log.h"
#include "service.h"

int main(int argc, char **argv)
{
    char *farm = NULL, *group = NULL, *interface = NULL, *role = NULL, *log_level = NULL;
    int64_t port = 0, timeout_ms = 0;
    const struct pf_flag flags[] = {
        {"farm", PF_FLAG_STRING, &farm, PF_DISCOVERY_FARM_DEFAULT, "farm to accept", 0, 0},
        {"group", PF_FLAG_STRING, &group, PF_BEACON_GROUP_DEFAULT, "multicast group", 0, 0},
        {"port", PF_FLAG_INT, &port, "7570", "UDP port", 1, 65535},
        {"interface", PF_FLAG_STRING, &interface, NULL, "interface to join on", 0, 0},
        {"timeout", PF_FLAG_DURATION_MS, &timeout_ms, "10s", "how long to wait", 1, 3600000},
        {"resolve", PF_FLAG_STRING, &role, NULL, "then Resolve this role through discovery", 0, 0},
        {"log-level", PF_FLAG_STRING, &log_level, "info", "debug, info, warn or error", 0, 0},
    };
    const struct pf_config cfg = {
        .program = "pf-beacon-listen",
        .summary = "Waits for a Printfarm discovery beacon (test tool).",
        .flags = flags,
        .flag_count = sizeof(flags) / sizeof(flags[0]),
    };
    struct pf_beacon_listen_opts o = {0};
    struct pf_beacon_listen_stats stats = {0};
    char addr[PF_BEACON_ADDR_MAX];
    enum pf_log_level level;
    struct pf_error err;
    enum pf_status rc;
    int exit_code = 2;

    if (pf_service_parse_flags(&cfg, argc, argv, &exit_code) != PF_OK)
        goto out;
    if (pf_log_level_parse(log_level, &level) != PF_OK) {
        fprintf(stderr, "pf-beacon-listen: bad --log-level\n");
        goto out;
    }
    pf_log_init(level, "pf-beacon-listen");
    o.farm = farm;
    o.group = group;
    o.port = (int)port;
    o.interface = interface;
    o.timeout_ms = timeout_ms;
    rc = pf_beacon_listen(&o, addr, sizeof(addr), &stats, &err);
    printf("stats received=%llu malformed=%llu other_farm=%llu\n",
           (unsigned long long)stats.received, (unsigned long long)stats.malformed,
           (unsigned long long)stats.other_farm);
    if (rc != PF_OK) {
        fprintf(stderr, "pf-beacon-listen: %s\n", err.msg);
        exit_code = rc == PF_E_DEADLINE ? 3 : 1;
        goto out;
    }
    printf("discovery=%s\n", addr);
    fflush(stdout);
    exit_code = 0;
    if (role != NULL && role[0] != '\0') {
        struct pf_rpc_client_opts co = {0};
        char found[PF_DISCOVERY_RESOLVE_MAX][PF_RPC_TARGET_MAX];
        size_t n = 0;
        struct pf_rpc_channel *ch = pf_rpc_channel_create(addr, &co, &err);
        if (ch == NULL || pf_discovery_resolve(ch, role, false, found, PF_DISCOVERY_RESOLVE_MAX, &n,
                                               5000, &err) != PF_OK) {
            fprintf(stderr, "pf-beacon-listen: resolve %s: %s\n", role, err.msg);
            exit_code = 4;
        } else {
            printf("resolve %s=", role);
            for (size_t i = 0; i < n; i++)
                printf("%s%s", i > 0 ? "," : "", found[i]);
            printf("\n");
        }
        if (ch != NULL)
            pf_rpc_channel_destroy(ch);
    }
out:
    pf_config_release(&cfg);
    return exit_code;
}
