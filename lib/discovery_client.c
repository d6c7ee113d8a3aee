/* The client side of pf-discovery: the beacon's payload (pure parser and
 * formatter), the beacon listener, the registration thread and Resolve. See
 * discovery_client.h for the contracts and the beacon format. */
#include "discovery_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "config.h"
#include "log.h"
#include "printfarm/v1/discovery.pb-c.h"
#include "timeutil.h"

#define METHOD_REGISTER   "/printfarm.v1.Discovery/Register"
#define METHOD_HEARTBEAT  "/printfarm.v1.Discovery/Heartbeat"
#define METHOD_DEREGISTER "/printfarm.v1.Discovery/Deregister"
#define METHOD_RESOLVE    "/printfarm.v1.Discovery/Resolve"

#define BEACON_KEY_MAX          32
#define LISTEN_TIMEOUT_MS       30000
#define LISTEN_POLL_MS          100
#define REGISTER_BACKOFF_MS     500
#define REGISTER_BACKOFF_MAX_MS 30000
#define HEARTBEAT_RETRY_MS      1000
#define DEREGISTER_TIMEOUT_MS   2000
#define LEASE_ID_MAX            256

/* ---- the beacon: pure ---- */

static bool farm_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

bool pf_beacon_farm_valid(const char *name)
{
    size_t n = 0;
    if (name == NULL || name[0] == '\0')
        return false;
    for (; name[n] != '\0'; n++) {
        if (n >= PF_BEACON_FARM_MAX || !farm_char(name[n]))
            return false;
    }
    return true;
}

/* A discovery address in a beacon: HOST:PORT with a port in 1..65535. */
static enum pf_status check_address(const char *text, struct pf_error *err)
{
    char host[PF_BEACON_ADDR_MAX];
    int port = 0;
    if (strlen(text) >= PF_BEACON_ADDR_MAX)
        return pf_error_set(err, PF_E_INVALID, "discovery address is longer than %d bytes",
                            PF_BEACON_ADDR_MAX - 1);
    if (pf_config_parse_hostport(text, host, sizeof(host), &port, err) != PF_OK)
        return pf_error_set(err, PF_E_INVALID, "discovery: %.200s", err->msg);
    if (port < 1 || port > 65535)
        return pf_error_set(err, PF_E_INVALID,
                            "discovery address '%.64s' has port %d (want 1..65535)", text, port);
    return PF_OK;
}

enum pf_status pf_beacon_parse(const void *data, size_t len, struct pf_beacon *out,
                               struct pf_error *err)
{
    const char *p = data;
    const char *end;
    struct pf_beacon b;
    bool have_farm = false, have_discovery = false;
    int line_no = 0;

    if (data == NULL || len == 0)
        return pf_error_set(err, PF_E_INVALID, "empty beacon");
    if (len > PF_BEACON_MAX_BYTES)
        return pf_error_set(err, PF_E_INVALID, "beacon of %zu bytes is over the %d-byte limit", len,
                            PF_BEACON_MAX_BYTES);
    /* Printable ASCII and line feeds only: no NUL can hide a field's end. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c != '\n' && (c < 0x20 || c > 0x7e))
            return pf_error_set(err, PF_E_INVALID, "beacon byte %zu is 0x%02x: not printable ASCII",
                                i, c);
    }
    memset(&b, 0, sizeof(b));
    end = p + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        const char *line = p;
        p += n + (nl != NULL ? 1 : 0);
        line_no++;
        if (line_no == 1) {
            size_t magic = strlen(PF_BEACON_MAGIC);
            long version = 0;
            if (n <= magic + 1 || memcmp(line, PF_BEACON_MAGIC " ", magic + 1) != 0)
                return pf_error_set(err, PF_E_INVALID, "not a printfarm beacon (no '%s' line)",
                                    PF_BEACON_MAGIC);
            if (n - magic - 1 > 6)
                return pf_error_set(err, PF_E_INVALID, "beacon version is not a small number");
            for (size_t i = magic + 1; i < n; i++) {
                if (line[i] < '0' || line[i] > '9')
                    return pf_error_set(err, PF_E_INVALID, "beacon version is not a number");
                version = version * 10 + (line[i] - '0');
            }
            if (version != PF_BEACON_VERSION)
                return pf_error_set(err, PF_E_UNIMPLEMENTED,
                                    "beacon version %ld is not supported (this build reads %d)",
                                    version, PF_BEACON_VERSION);
            b.version = (int)version;
            continue;
        }
        if (n == 0)
            continue; /* blank lines (a trailing newline) */
        const char *eq = memchr(line, '=', n);
        if (eq == NULL || eq == line)
            return pf_error_set(err, PF_E_INVALID, "beacon line %d is not key=value", line_no);
        size_t klen = (size_t)(eq - line), vlen = n - klen - 1;
        if (klen > BEACON_KEY_MAX)
            return pf_error_set(err, PF_E_INVALID, "beacon line %d has a key over %d bytes",
                                line_no, BEACON_KEY_MAX);
        const char *value = eq + 1;
        if (klen == 4 && memcmp(line, "farm", 4) == 0) {
            if (have_farm)
                return pf_error_set(err, PF_E_INVALID, "beacon names its farm twice");
            if (vlen == 0 || vlen > PF_BEACON_FARM_MAX)
                return pf_error_set(err, PF_E_INVALID, "beacon farm name must be 1..%d bytes",
                                    PF_BEACON_FARM_MAX);
            memcpy(b.farm, value, vlen);
            b.farm[vlen] = '\0';
            if (!pf_beacon_farm_valid(b.farm))
                return pf_error_set(err, PF_E_INVALID,
                                    "beacon farm name '%s' has characters outside [A-Za-z0-9._-]",
                                    b.farm);
            have_farm = true;
        } else if (klen == 9 && memcmp(line, "discovery", 9) == 0) {
            if (have_discovery)
                return pf_error_set(err, PF_E_INVALID, "beacon names its discovery address twice");
            if (vlen == 0 || vlen >= sizeof(b.discovery))
                return pf_error_set(err, PF_E_INVALID,
                                    "beacon discovery address must be 1..%zu bytes",
                                    sizeof(b.discovery) - 1);
            memcpy(b.discovery, value, vlen);
            b.discovery[vlen] = '\0';
            if (check_address(b.discovery, err) != PF_OK)
                return PF_E_INVALID;
            have_discovery = true;
        }
        /* Other keys: later additions, ignored. */
    }
    if (b.version == 0)
        return pf_error_set(err, PF_E_INVALID, "not a printfarm beacon (no '%s' line)",
                            PF_BEACON_MAGIC);
    if (!have_farm)
        return pf_error_set(err, PF_E_INVALID, "beacon has no farm= line");
    if (!have_discovery)
        return pf_error_set(err, PF_E_INVALID, "beacon has no discovery= line");
    *out = b;
    return PF_OK;
}

enum pf_status pf_beacon_format(const char *farm, const char *discovery, char *out, size_t out_size,
                                size_t *len_out, struct pf_error *err)
{
    int n;
    if (!pf_beacon_farm_valid(farm))
        return pf_error_set(err, PF_E_INVALID,
                            "farm name '%.80s' must be 1..%d characters of [A-Za-z0-9._-]",
                            farm != NULL ? farm : "", PF_BEACON_FARM_MAX);
    if (discovery == NULL || check_address(discovery, err) != PF_OK)
        return pf_error_set(err, PF_E_INVALID, "beacon address '%.80s' is not HOST:PORT",
                            discovery != NULL ? discovery : "");
    for (const char *c = discovery; *c != '\0'; c++) {
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
            return pf_error_set(err, PF_E_INVALID, "beacon address has a non-printable byte");
    }
    n = snprintf(out, out_size, "%s %d\nfarm=%s\ndiscovery=%s\n", PF_BEACON_MAGIC,
                 PF_BEACON_VERSION, farm, discovery);
    if (n < 0 || (size_t)n >= out_size || n > PF_BEACON_MAX_BYTES)
        return pf_error_set(err, PF_E_INVALID, "beacon does not fit in %zu bytes", out_size);
    *len_out = (size_t)n;
    return PF_OK;
}

void pf_beacon_dial_address(const struct pf_beacon *b, const char *src_ip, char *out,
                            size_t out_size)
{
    char host[PF_BEACON_ADDR_MAX];
    int port = 0;
    struct pf_error err;

    snprintf(out, out_size, "%s", b->discovery);
    if (src_ip == NULL || src_ip[0] == '\0')
        return;
    if (pf_config_parse_hostport(b->discovery, host, sizeof(host), &port, &err) != PF_OK)
        return;
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
        snprintf(out, out_size, "%s:%d", src_ip, port);
}

/* ---- the beacon listener ---- */

/* Joins group on one interface (ifindex 0 with addr = any: the kernel's
 * choice). */
static bool join_group(int fd, struct in_addr group, int ifindex, struct in_addr addr)
{
    struct ip_mreqn mreq;
    memset(&mreq, 0, sizeof(mreq));
    mreq.imr_multiaddr = group;
    mreq.imr_address = addr;
    mreq.imr_ifindex = ifindex;
    return setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof(mreq)) == 0;
}

/* Joins on the named interface (a name or an IPv4 address), or on every
 * interface that is up and multicast-capable. */
static enum pf_status join_interfaces(int fd, struct in_addr group, const char *interface,
                                      struct pf_error *err)
{
    struct in_addr any = {.s_addr = htonl(INADDR_ANY)};
    struct ifaddrs *ifs = NULL;
    int joined = 0;

    if (interface != NULL && interface[0] != '\0') {
        struct in_addr a;
        unsigned idx;
        if (inet_pton(AF_INET, interface, &a) == 1) {
            if (join_group(fd, group, 0, a))
                return PF_OK;
        } else if ((idx = if_nametoindex(interface)) != 0) {
            if (join_group(fd, group, (int)idx, any))
                return PF_OK;
        } else {
            return pf_error_set(err, PF_E_UNAVAILABLE, "no network interface '%.64s'", interface);
        }
        return pf_error_set(err, PF_E_UNAVAILABLE, "could not join the beacon group on '%.64s': %s",
                            interface, strerror(errno));
    }
    if (getifaddrs(&ifs) == 0) {
        for (struct ifaddrs *i = ifs; i != NULL; i = i->ifa_next) {
            unsigned idx;
            if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET)
                continue;
            if ((i->ifa_flags & IFF_UP) == 0 || (i->ifa_flags & IFF_MULTICAST) == 0)
                continue;
            idx = if_nametoindex(i->ifa_name);
            if (idx != 0 && join_group(fd, group, (int)idx, any))
                joined++;
        }
        freeifaddrs(ifs);
    }
    if (joined > 0 || join_group(fd, group, 0, any))
        return PF_OK;
    return pf_error_set(
        err, PF_E_UNAVAILABLE,
        "could not join the beacon group: no multicast-capable interface is up (%s)",
        strerror(errno));
}

static enum pf_status open_listener(const struct pf_beacon_listen_opts *o, int *fd_out,
                                    struct pf_error *err)
{
    const char *group_text = o->group != NULL ? o->group : PF_BEACON_GROUP_DEFAULT;
    int port = o->port > 0 ? o->port : PF_BEACON_PORT_DEFAULT;
    struct sockaddr_in sa;
    struct in_addr group;
    int one = 1;
    int fd;

    if (inet_pton(AF_INET, group_text, &group) != 1 || !IN_MULTICAST(ntohl(group.s_addr)))
        return pf_error_set(err, PF_E_INVALID,
                            "beacon group '%.64s' is not an IPv4 multicast address", group_text);
    if (port > 65535)
        return pf_error_set(err, PF_E_INVALID, "beacon port %d is out of range", port);
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return pf_error_set(err, PF_E_UNAVAILABLE, "could not open a UDP socket: %s",
                            strerror(errno));
    /* Several listeners (one per agent process) may share the port. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr = group; /* only datagrams sent to the group */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        pf_error_set(err, PF_E_UNAVAILABLE, "could not bind the beacon port %s:%d: %s", group_text,
                     port, strerror(errno));
        close(fd);
        return PF_E_UNAVAILABLE;
    }
    if (join_interfaces(fd, group, o->interface, err) != PF_OK) {
        close(fd);
        return PF_E_UNAVAILABLE;
    }
    *fd_out = fd;
    return PF_OK;
}

enum pf_status pf_beacon_listen(const struct pf_beacon_listen_opts *opts, char *addr_out,
                                size_t addr_size, struct pf_beacon_listen_stats *stats,
                                struct pf_error *err)
{
    const char *farm = opts->farm != NULL ? opts->farm : PF_DISCOVERY_FARM_DEFAULT;
    int64_t timeout = opts->timeout_ms > 0 ? opts->timeout_ms : LISTEN_TIMEOUT_MS;
    int64_t deadline = pf_time_mono_ms() + timeout;
    struct pf_beacon_listen_stats local = {0};
    enum pf_status rc;
    int fd = -1;

    if (stats == NULL)
        stats = &local;
    if (!pf_beacon_farm_valid(farm))
        return pf_error_set(err, PF_E_INVALID,
                            "farm name '%.80s' must be 1..%d characters of [A-Za-z0-9._-]", farm,
                            PF_BEACON_FARM_MAX);
    rc = open_listener(opts, &fd, err);
    if (rc != PF_OK)
        return rc;
    for (;;) {
        uint8_t buf[PF_BEACON_MAX_BYTES + 1];
        struct sockaddr_in from;
        socklen_t from_len = sizeof(from);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        struct pf_beacon b;
        struct pf_error perr;
        char src[INET_ADDRSTRLEN];
        int64_t left = deadline - pf_time_mono_ms();
        ssize_t n;

        if (opts->stop != NULL && opts->stop(opts->stop_arg)) {
            rc = pf_error_set(err, PF_E_CANCELLED, "stopped while waiting for a beacon");
            break;
        }
        if (left <= 0) {
            rc = pf_error_set(err, PF_E_DEADLINE,
                              "no beacon of farm '%s' within %lld ms (%llu datagrams: %llu "
                              "malformed, %llu for other farms)",
                              farm, (long long)timeout, (unsigned long long)stats->received,
                              (unsigned long long)stats->malformed,
                              (unsigned long long)stats->other_farm);
            break;
        }
        if (poll(&pfd, 1, (int)(left < LISTEN_POLL_MS ? left : LISTEN_POLL_MS)) <= 0)
            continue;
        n = recvfrom(fd, buf, sizeof(buf), MSG_TRUNC, (struct sockaddr *)&from, &from_len);
        if (n < 0)
            continue;
        stats->received++;
        /* MSG_TRUNC makes n the real length: over-long datagrams fail the parse. */
        if (pf_beacon_parse(buf, (size_t)n > sizeof(buf) ? sizeof(buf) : (size_t)n, &b, &perr) !=
            PF_OK) {
            stats->malformed++;
            pf_log_debug("beacon_ignored", "reason=malformed bytes=%zd error=\"%s\"", n, perr.msg);
            continue;
        }
        if (strcmp(b.farm, farm) != 0) {
            stats->other_farm++;
            pf_log_debug("beacon_ignored", "reason=other_farm farm=%s", b.farm);
            continue;
        }
        if (inet_ntop(AF_INET, &from.sin_addr, src, sizeof(src)) == NULL)
            src[0] = '\0';
        pf_beacon_dial_address(&b, src, addr_out, addr_size);
        pf_log_info("beacon_received", "farm=%s discovery=%s from=%s", b.farm, addr_out, src);
        rc = PF_OK;
        break;
    }
    close(fd);
    return rc;
}

/* ---- registration ---- */

struct registration {
    Printfarm__V1__Instance msg;
    Printfarm__V1__Label *label_msgs;
    Printfarm__V1__Label **label_ptrs;
    char *strings; /* every string above lives here */
    char lease[LEASE_ID_MAX];
    bool held;           /* under c->mu for readers; written by the thread */
    int64_t next_at;     /* monotonic ms */
    int64_t interval_ms; /* heartbeat period granted */
    int64_t backoff_ms;  /* next register retry pause */
    bool warned;         /* a failure streak was logged */
};

struct pf_discovery_client {
    struct pf_rpc_channel *ch;
    char target[PF_RPC_TARGET_MAX];
    char component[64];
    uint32_t ttl_seconds;
    int64_t rpc_timeout_ms;
    struct registration *regs;
    size_t count;
    pthread_t thread;
    bool started;
    bool stopped;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop; /* under mu */
};

struct pf_discovery_client *pf_discovery_client_create(const struct pf_discovery_client_opts *opts,
                                                       struct pf_error *err)
{
    struct pf_discovery_client *c;
    char host[256];
    int port;
    pthread_condattr_t ca;

    if (opts == NULL || opts->target == NULL ||
        pf_config_parse_hostport(opts->target, host, sizeof(host), &port, err) != PF_OK) {
        pf_error_set(err, PF_E_INVALID, "--discovery '%.80s' is not HOST:PORT",
                     opts != NULL && opts->target != NULL ? opts->target : "");
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        pf_error_set(err, PF_E_RESOURCE, "out of memory");
        return NULL;
    }
    snprintf(c->target, sizeof(c->target), "%s", opts->target);
    snprintf(c->component, sizeof(c->component), "%s",
             opts->component != NULL ? opts->component : "");
    c->ttl_seconds = opts->ttl_seconds != 0 ? opts->ttl_seconds : 15;
    c->rpc_timeout_ms = opts->rpc_timeout_ms > 0 ? opts->rpc_timeout_ms : 5000;
    c->ch = pf_rpc_channel_create(opts->target, &opts->client, err);
    if (c->ch == NULL) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    return c;
}

/* Copies inst into r with every string in one allocation. */
static enum pf_status copy_instance(struct registration *r,
                                    const struct pf_discovery_instance *inst, struct pf_error *err)
{
    const char *version = inst->version != NULL ? inst->version : PF_VERSION;
    size_t total = strlen(inst->id) + strlen(inst->address) + strlen(version) + 3;
    char *p;

    for (size_t i = 0; i < inst->label_count; i++)
        total += strlen(inst->labels[i]) + 2;
    r->strings = malloc(total);
    r->label_msgs = calloc(inst->label_count + 1, sizeof(*r->label_msgs));
    r->label_ptrs = calloc(inst->label_count + 1, sizeof(*r->label_ptrs));
    if (r->strings == NULL || r->label_msgs == NULL || r->label_ptrs == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    p = r->strings;
    printfarm__v1__instance__init(&r->msg);
    r->msg.kind = (Printfarm__V1__InstanceKind)inst->kind;
#define PUT(dst, src)                                                                              \
    do {                                                                                           \
        size_t n_ = strlen(src) + 1;                                                               \
        memcpy(p, src, n_);                                                                        \
        dst = p;                                                                                   \
        p += n_;                                                                                   \
    } while (0)
    PUT(r->msg.id, inst->id);
    PUT(r->msg.address, inst->address);
    PUT(r->msg.version, version);
    for (size_t i = 0; i < inst->label_count; i++) {
        char *kv;
        char *eq;
        printfarm__v1__label__init(&r->label_msgs[i]);
        PUT(kv, inst->labels[i]);
        eq = strchr(kv, '=');
        r->label_msgs[i].key = kv;
        if (eq != NULL) {
            *eq = '\0';
            r->label_msgs[i].value = eq + 1;
        }
        r->label_ptrs[i] = &r->label_msgs[i];
    }
#undef PUT
    r->msg.labels = r->label_ptrs;
    r->msg.n_labels = inst->label_count;
    return PF_OK;
}

static void registration_release(struct registration *r)
{
    free(r->strings);
    free(r->label_msgs);
    free(r->label_ptrs);
}

enum pf_status pf_discovery_client_add(struct pf_discovery_client *c,
                                       const struct pf_discovery_instance *inst,
                                       struct pf_error *err)
{
    struct registration *grown;
    if (c->started)
        return pf_error_set(err, PF_E_PRECONDITION, "discovery client already started");
    if (inst == NULL || inst->id == NULL || inst->id[0] == '\0' || inst->address == NULL ||
        inst->address[0] == '\0')
        return pf_error_set(err, PF_E_INVALID, "an instance needs an id and an address");
    if (inst->label_count > PF_DISCOVERY_LABELS_MAX)
        return pf_error_set(err, PF_E_INVALID, "an instance has at most %d labels",
                            PF_DISCOVERY_LABELS_MAX);
    grown = realloc(c->regs, (c->count + 1) * sizeof(*grown));
    if (grown == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    c->regs = grown;
    memset(&c->regs[c->count], 0, sizeof(c->regs[c->count]));
    if (copy_instance(&c->regs[c->count], inst, err) != PF_OK) {
        registration_release(&c->regs[c->count]);
        return err->code;
    }
    c->regs[c->count].backoff_ms = REGISTER_BACKOFF_MS;
    c->count++;
    return PF_OK;
}

/* A pause of about ms, spread by +-20 % so many clients do not beat in step. */
static int64_t jitter(int64_t ms)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (uint32_t)pf_time_mono_ms();
    return ms - ms / 5 + (int64_t)(r % (uint32_t)(ms / 5 * 2 + 1));
}

static void do_register(struct pf_discovery_client *c, struct registration *r)
{
    Printfarm__V1__RegisterRequest req = PRINTFARM__V1__REGISTER_REQUEST__INIT;
    Printfarm__V1__RegisterResponse *resp = NULL;
    struct pf_error err;
    int64_t now;

    req.instance = &r->msg;
    req.ttl_seconds = c->ttl_seconds;
    if (pf_rpc_unary(c->ch, METHOD_REGISTER, &req.base,
                     &printfarm__v1__register_response__descriptor, (ProtobufCMessage **)&resp,
                     c->rpc_timeout_ms, &err) != PF_OK) {
        if (!r->warned)
            pf_log_warn("discovery_register_failed",
                        "id=%s discovery=%s retry_ms=%lld error=\"%s\"", r->msg.id, c->target,
                        (long long)r->backoff_ms, err.msg);
        r->warned = true;
        r->next_at = pf_time_mono_ms() + jitter(r->backoff_ms);
        r->backoff_ms = r->backoff_ms * 2 > REGISTER_BACKOFF_MAX_MS ? REGISTER_BACKOFF_MAX_MS
                                                                    : r->backoff_ms * 2;
        return;
    }
    now = pf_time_mono_ms();
    pthread_mutex_lock(&c->mu);
    snprintf(r->lease, sizeof(r->lease), "%s", resp->lease_id);
    r->held = true;
    pthread_mutex_unlock(&c->mu);
    r->interval_ms = (int64_t)(resp->heartbeat_interval_seconds > 0
                                   ? resp->heartbeat_interval_seconds
                                   : (resp->ttl_seconds > 2 ? resp->ttl_seconds / 3 : 1)) *
                     1000;
    if (r->interval_ms <= 0)
        r->interval_ms = 1000;
    r->next_at = now + r->interval_ms;
    r->backoff_ms = REGISTER_BACKOFF_MS;
    r->warned = false;
    pf_log_info("discovery_registered", "id=%s address=%s discovery=%s ttl_s=%u heartbeat_s=%lld",
                r->msg.id, r->msg.address, c->target, resp->ttl_seconds,
                (long long)(r->interval_ms / 1000));
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void do_heartbeat(struct pf_discovery_client *c, struct registration *r)
{
    Printfarm__V1__HeartbeatRequest req = PRINTFARM__V1__HEARTBEAT_REQUEST__INIT;
    Printfarm__V1__HeartbeatResponse *resp = NULL;
    struct pf_error err;
    enum pf_status rc;

    req.lease_id = r->lease;
    rc = pf_rpc_unary(c->ch, METHOD_HEARTBEAT, &req.base,
                      &printfarm__v1__heartbeat_response__descriptor, (ProtobufCMessage **)&resp,
                      c->rpc_timeout_ms, &err);
    if (rc == PF_OK) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        if (r->warned)
            pf_log_info("discovery_heartbeat_recovered", "id=%s", r->msg.id);
        r->warned = false;
        r->next_at = pf_time_mono_ms() + r->interval_ms;
        return;
    }
    if (rc == PF_E_NOT_FOUND) {
        /* The lease ran out (pf-discovery or Redis was away): register again. */
        pf_log_info("discovery_lease_lost", "id=%s error=\"%s\"", r->msg.id, err.msg);
        pthread_mutex_lock(&c->mu);
        r->held = false;
        r->lease[0] = '\0';
        pthread_mutex_unlock(&c->mu);
        r->warned = false;
        r->next_at = pf_time_mono_ms();
        return;
    }
    if (!r->warned)
        pf_log_warn("discovery_heartbeat_failed", "id=%s discovery=%s error=\"%s\"", r->msg.id,
                    c->target, err.msg);
    r->warned = true;
    r->next_at = pf_time_mono_ms() +
                 (r->interval_ms < HEARTBEAT_RETRY_MS ? r->interval_ms : HEARTBEAT_RETRY_MS);
}

static void *client_main(void *arg)
{
    struct pf_discovery_client *c = arg;

    for (;;) {
        int64_t now = pf_time_mono_ms(), next = now + 1000;
        struct timespec ts;

        pthread_mutex_lock(&c->mu);
        bool stop = c->stop;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        for (size_t i = 0; i < c->count; i++) {
            struct registration *r = &c->regs[i];
            if (r->next_at <= now) {
                if (r->held)
                    do_heartbeat(c, r);
                else
                    do_register(c, r);
                now = pf_time_mono_ms();
            }
            if (r->next_at < next)
                next = r->next_at;
        }
        if (next <= now)
            continue;
        ts.tv_sec = 0;
        ts.tv_nsec = 0;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t wait = next - now;
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&c->mu);
        if (!c->stop)
            pthread_cond_timedwait(&c->cv, &c->mu, &ts);
        pthread_mutex_unlock(&c->mu);
    }
    return NULL;
}

enum pf_status pf_discovery_client_start(struct pf_discovery_client *c, struct pf_error *err)
{
    if (c->started)
        return PF_OK;
    if (pthread_create(&c->thread, NULL, client_main, c) != 0)
        return pf_error_set(err, PF_E_RESOURCE, "could not start the discovery thread");
    c->started = true;
    return PF_OK;
}

bool pf_discovery_client_registered(struct pf_discovery_client *c)
{
    bool all = true;
    if (c == NULL)
        return false;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->count; i++)
        all = all && c->regs[i].held;
    pthread_mutex_unlock(&c->mu);
    return all;
}

void pf_discovery_client_stop(struct pf_discovery_client *c)
{
    if (c == NULL || c->stopped)
        return;
    c->stopped = true;
    if (c->started) {
        pthread_mutex_lock(&c->mu);
        c->stop = true;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->thread, NULL);
    }
    for (size_t i = 0; i < c->count; i++) {
        struct registration *r = &c->regs[i];
        Printfarm__V1__DeregisterRequest req = PRINTFARM__V1__DEREGISTER_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct pf_error err;
        int64_t t =
            c->rpc_timeout_ms < DEREGISTER_TIMEOUT_MS ? c->rpc_timeout_ms : DEREGISTER_TIMEOUT_MS;
        if (!r->held)
            continue;
        req.lease_id = r->lease;
        if (pf_rpc_unary(c->ch, METHOD_DEREGISTER, &req.base,
                         &printfarm__v1__deregister_response__descriptor, &resp, t,
                         &err) == PF_OK) {
            protobuf_c_message_free_unpacked(resp, NULL);
            pf_log_info("discovery_deregistered", "id=%s", r->msg.id);
        } else {
            pf_log_warn("discovery_deregister_failed", "id=%s error=\"%s\"", r->msg.id, err.msg);
        }
        r->held = false;
    }
}

void pf_discovery_client_destroy(struct pf_discovery_client *c)
{
    if (c == NULL)
        return;
    pf_discovery_client_stop(c);
    for (size_t i = 0; i < c->count; i++)
        registration_release(&c->regs[i]);
    free(c->regs);
    pf_rpc_channel_destroy(c->ch);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void pf_discovery_advertise(const char *listen, int port, char *out, size_t out_size)
{
    char host[256];
    int unused;
    struct pf_error err;
    if (listen == NULL ||
        pf_config_parse_hostport(listen, host, sizeof(host), &unused, &err) != PF_OK)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0) {
        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "127.0.0.1");
        host[sizeof(host) - 1] = '\0';
    }
    if (strchr(host, ':') != NULL)
        snprintf(out, out_size, "[%.200s]:%d", host, port);
    else
        snprintf(out, out_size, "%.200s:%d", host, port);
}

void pf_discovery_default_id(int port, char *out, size_t out_size)
{
    char host[48];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "host");
    host[sizeof(host) - 1] = '\0';
    for (char *c = host; *c != '\0'; c++) {
        if (!farm_char(*c))
            *c = '-';
    }
    snprintf(out, out_size, "%s-%d", host, port);
}

enum pf_status pf_discovery_register_self(const char *target, int kind, const char *id,
                                          const char *address, const char *const *labels,
                                          size_t label_count,
                                          const struct pf_rpc_client_opts *client,
                                          const char *component, struct pf_discovery_client **out,
                                          struct pf_error *err)
{
    struct pf_discovery_client_opts o = {.target = target, .component = component};
    struct pf_discovery_instance inst = {
        .kind = kind, .id = id, .address = address, .labels = labels, .label_count = label_count};
    struct pf_discovery_client *c;

    *out = NULL;
    if (target == NULL || target[0] == '\0')
        return PF_OK;
    if (client != NULL)
        o.client = *client;
    c = pf_discovery_client_create(&o, err);
    if (c == NULL)
        return err->code;
    if (pf_discovery_client_add(c, &inst, err) != PF_OK ||
        pf_discovery_client_start(c, err) != PF_OK) {
        pf_discovery_client_destroy(c);
        return err->code;
    }
    *out = c;
    return PF_OK;
}

/* ---- resolve ---- */

enum pf_status pf_discovery_resolve(struct pf_rpc_channel *ch, const char *role, bool healthy_only,
                                    char (*out)[PF_RPC_TARGET_MAX], size_t max, size_t *count,
                                    int64_t timeout_ms, struct pf_error *err)
{
    Printfarm__V1__ResolveRequest req = PRINTFARM__V1__RESOLVE_REQUEST__INIT;
    Printfarm__V1__ResolveResponse *resp = NULL;
    enum pf_status rc;

    *count = 0;
    req.role = (char *)role;
    req.healthy_only = healthy_only;
    rc = pf_rpc_unary(ch, METHOD_RESOLVE, &req.base, &printfarm__v1__resolve_response__descriptor,
                      (ProtobufCMessage **)&resp, timeout_ms, err);
    if (rc != PF_OK)
        return rc;
    for (size_t i = 0; i < resp->n_addresses && *count < max; i++) {
        if (strlen(resp->addresses[i]) >= PF_RPC_TARGET_MAX)
            continue;
        snprintf(out[*count], PF_RPC_TARGET_MAX, "%s", resp->addresses[i]);
        (*count)++;
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (*count == 0)
        return pf_error_set(err, PF_E_NOT_FOUND, "discovery resolved role '%.64s' to no address",
                            role);
    return PF_OK;
}

/* ---- finding the farm ---- */

static bool find_stopped(const struct pf_discovery_find_opts *o)
{
    return o->beacon.stop != NULL && o->beacon.stop(o->beacon.stop_arg);
}

enum pf_status pf_discovery_find_farm(const struct pf_discovery_find_opts *opts, char *schedulers,
                                      size_t schedulers_size, char *files, size_t files_size,
                                      char *discovery, size_t discovery_size, struct pf_error *err)
{
    char addr[PF_BEACON_ADDR_MAX];
    char found[PF_DISCOVERY_RESOLVE_MAX][PF_RPC_TARGET_MAX];
    int64_t retry = opts->retry_ms > 0 ? opts->retry_ms : 1000;
    struct pf_rpc_channel *ch;
    bool warned = false;
    enum pf_status rc;

    if (opts->discovery != NULL && opts->discovery[0] != '\0') {
        snprintf(addr, sizeof(addr), "%s", opts->discovery);
    } else {
        struct pf_beacon_listen_stats stats = {0};
        rc = pf_beacon_listen(&opts->beacon, addr, sizeof(addr), &stats, err);
        if (rc != PF_OK)
            return rc;
    }
    if (discovery != NULL && discovery_size > 0)
        snprintf(discovery, discovery_size, "%s", addr);
    ch = pf_rpc_channel_create(addr, &opts->client, err);
    if (ch == NULL)
        return err->code;
    for (;;) {
        size_t n = 0, m = 0, used = 0;
        struct pf_error e1, e2;
        rc = pf_discovery_resolve(ch, "scheduler-leader", false, found, PF_DISCOVERY_RESOLVE_MAX,
                                  &n, 5000, &e1);
        if (rc == PF_E_NOT_FOUND)
            rc = pf_discovery_resolve(ch, "scheduler", false, found, PF_DISCOVERY_RESOLVE_MAX, &n,
                                      5000, &e1);
        if (rc == PF_OK) {
            schedulers[0] = '\0';
            for (size_t i = 0; i < n; i++) {
                int w = snprintf(schedulers + used, schedulers_size - used, "%s%s",
                                 i > 0 ? "," : "", found[i]);
                if (w < 0 || (size_t)w >= schedulers_size - used)
                    break;
                used += (size_t)w;
            }
            rc = pf_discovery_resolve(ch, "files", false, found, 1, &m, 5000, &e2);
            if (rc == PF_OK) {
                snprintf(files, files_size, "%s", found[0]);
                pf_log_info("farm_found", "discovery=%s scheduler=%s files=%s", addr, schedulers,
                            files);
                break;
            }
            e1 = e2;
        }
        if (!warned)
            pf_log_warn("farm_not_resolved", "discovery=%s retry_ms=%lld error=\"%s\"", addr,
                        (long long)retry, e1.msg);
        warned = true;
        for (int64_t slept = 0; slept < retry; slept += 50) {
            if (find_stopped(opts)) {
                pf_rpc_channel_destroy(ch);
                return pf_error_set(err, PF_E_CANCELLED, "stopped while resolving the farm");
            }
            pf_time_sleep_ms(50);
        }
    }
    pf_rpc_channel_destroy(ch);
    return PF_OK;
}
