/* What every Printfarm process uses to take part in discovery: a background
 * registration that Registers its instances with pf-discovery, Heartbeats
 * each lease at the interval the server grants (a third of the TTL),
 * registers again when the server says the lease is gone, and Deregisters on
 * stop; Resolve of a role into addresses; and the LAN beacon: its payload
 * (a versioned text datagram carrying the farm name and the discovery
 * address), the pure parser and formatter, and a listener that waits for the
 * beacon of one farm so an agent needs no address configured.
 *
 * The beacon payload (version 1) is a few "key=value" lines after a magic
 * line, at most PF_BEACON_MAX_BYTES:
 *
 *     PFBEACON 1
 *     farm=printfarm
 *     discovery=10.0.0.5:7500
 *
 * Unknown keys are ignored (later minor additions); another version number is
 * refused. A discovery host of 0.0.0.0 or [::] means "the address this
 * datagram came from" (pf_beacon_listen substitutes it). */
#ifndef PF_DISCOVERY_CLIENT_H
#define PF_DISCOVERY_CLIENT_H

#include <stdint.h>
#include "rpc/client.h"
#include "status.h"

#ifndef PF_VERSION
#define PF_VERSION "0.1.0"
#endif

/* ---- the beacon: pure ---- */

#define PF_BEACON_MAGIC           "PFBEACON"
#define PF_BEACON_VERSION         1
#define PF_BEACON_MAX_BYTES       512
#define PF_BEACON_FARM_MAX        64  /* bytes, [A-Za-z0-9._-] */
#define PF_BEACON_ADDR_MAX        262 /* "[" host(253) "]:" port, NUL included */
#define PF_BEACON_GROUP_DEFAULT   "239.255.70.70"
#define PF_BEACON_PORT_DEFAULT    7570
#define PF_DISCOVERY_FARM_DEFAULT "printfarm"

struct pf_beacon {
    int version;
    char farm[PF_BEACON_FARM_MAX + 1];
    char discovery[PF_BEACON_ADDR_MAX]; /* HOST:PORT as sent */
};

/* True when name is a valid farm name: 1..PF_BEACON_FARM_MAX bytes of
 * [A-Za-z0-9._-]. Pure. */
bool pf_beacon_farm_valid(const char *name);

/* Parses one datagram of len bytes (any bytes: this is what the network
 * hands over). PF_OK fills out; PF_E_INVALID names what is wrong (bad magic,
 * missing or repeated field, bad farm name, bad address, NUL or control
 * bytes, over-long line or datagram); PF_E_UNIMPLEMENTED for another
 * version. Pure and thread-safe; out is written only on PF_OK. */
enum pf_status pf_beacon_parse(const void *data, size_t len, struct pf_beacon *out,
                               struct pf_error *err) PF_MUST_CHECK;

/* Writes the version-1 payload for farm and discovery address into out
 * (out_size >= PF_BEACON_MAX_BYTES is always enough); *len_out gets its
 * length. PF_E_INVALID when the farm name or the address would not parse
 * back. Pure. */
enum pf_status pf_beacon_format(const char *farm, const char *discovery, char *out, size_t out_size,
                                size_t *len_out, struct pf_error *err) PF_MUST_CHECK;

/* The address to dial for beacon b received from IPv4 source src_ip (dotted,
 * may be NULL): b->discovery, or src_ip with b's port when b's host is
 * 0.0.0.0, [::] or empty. out_size >= PF_BEACON_ADDR_MAX. Pure. */
void pf_beacon_dial_address(const struct pf_beacon *b, const char *src_ip, char *out,
                            size_t out_size);

/* ---- the beacon listener ---- */

struct pf_beacon_listen_opts {
    const char *group;     /* IPv4 multicast group; NULL = PF_BEACON_GROUP_DEFAULT */
    int port;              /* 0 = PF_BEACON_PORT_DEFAULT */
    const char *farm;      /* the farm to accept; NULL = PF_DISCOVERY_FARM_DEFAULT */
    const char *interface; /* interface name or IPv4 address to join on; NULL = every
                              multicast-capable interface that is up */
    int64_t timeout_ms;    /* give up after this long; <= 0 = 30 s */
    /* Optional: polled every 100 ms; returning true stops the wait with
     * PF_E_CANCELLED (SIGTERM during start-up). */
    bool (*stop)(void *arg);
    void *stop_arg;
};

/* What the listener saw, for logs and tests. */
struct pf_beacon_listen_stats {
    uint64_t received;   /* datagrams read */
    uint64_t malformed;  /* failed pf_beacon_parse: ignored */
    uint64_t other_farm; /* valid, for another farm: ignored */
};

/* Joins the group and waits for a valid beacon of opts->farm; copies the
 * address to dial into addr_out (addr_size >= PF_BEACON_ADDR_MAX). Datagrams
 * that fail to parse or name another farm are counted in stats (may be NULL)
 * and ignored. PF_E_DEADLINE when none came in time, PF_E_UNAVAILABLE when the
 * socket cannot be set up (the message says why), PF_E_CANCELLED when
 * opts->stop said so. Blocking; thread-safe (no shared state). */
enum pf_status pf_beacon_listen(const struct pf_beacon_listen_opts *opts, char *addr_out,
                                size_t addr_size, struct pf_beacon_listen_stats *stats,
                                struct pf_error *err) PF_MUST_CHECK;

/* ---- registration ---- */

/* Printfarm__V1__InstanceKind values, for callers that do not include the
 * generated header. */
enum pf_discovery_kind {
    PF_DISCOVERY_KIND_SCHEDULER = 1,
    PF_DISCOVERY_KIND_FILES = 2,
    PF_DISCOVERY_KIND_AGENT = 3,
    PF_DISCOVERY_KIND_DISCOVERY = 4,
    PF_DISCOVERY_KIND_WEB = 5,
};

#define PF_DISCOVERY_LABELS_MAX 32

/* One instance this process registers. Strings are borrowed by
 * pf_discovery_client_add, which copies them. kind is a
 * Printfarm__V1__InstanceKind value. labels are "key=value" strings. */
struct pf_discovery_instance {
    int kind;
    const char *id;
    const char *address;
    const char *version; /* NULL = PF_VERSION */
    const char *const *labels;
    size_t label_count;
};

struct pf_discovery_client_opts {
    const char *target;               /* pf-discovery HOST:PORT */
    struct pf_rpc_client_opts client; /* TLS, token (copied) */
    uint32_t ttl_seconds;             /* asked for at Register; 0 = 15 */
    int64_t rpc_timeout_ms;           /* per call; 0 = 5000 */
    const char *component;            /* for logs: "pf-files" */
};

/* The registration thread. Opaque. */
struct pf_discovery_client;

/* Creates a client (no thread, no I/O yet). NULL with err set for a bad target
 * or out of memory. Free with pf_discovery_client_destroy. */
struct pf_discovery_client *pf_discovery_client_create(const struct pf_discovery_client_opts *opts,
                                                       struct pf_error *err);

/* Adds an instance to register (copied). Before pf_discovery_client_start
 * only. PF_E_INVALID for a missing id or address, too many labels. */
enum pf_status pf_discovery_client_add(struct pf_discovery_client *c,
                                       const struct pf_discovery_instance *inst,
                                       struct pf_error *err) PF_MUST_CHECK;

/* Starts the thread: it registers every instance at once (retrying with
 * backoff while pf-discovery is unreachable), heartbeats, and registers again
 * on NOT_FOUND. */
enum pf_status pf_discovery_client_start(struct pf_discovery_client *c,
                                         struct pf_error *err) PF_MUST_CHECK;

/* True when every instance holds a lease (thread-safe). */
bool pf_discovery_client_registered(struct pf_discovery_client *c);

/* Stops the thread and Deregisters every instance that holds a lease (each
 * call bounded by the RPC timeout). Idempotent. */
void pf_discovery_client_stop(struct pf_discovery_client *c);

/* Stops if needed and frees. NULL is ignored. */
void pf_discovery_client_destroy(struct pf_discovery_client *c);

/* The address others should dial for a server listening on listen ("HOST:PORT")
 * and bound to port: listen's host with port; the host name when listen's
 * host is 0.0.0.0, :: or empty. Pure but for gethostname. */
void pf_discovery_advertise(const char *listen, int port, char *out, size_t out_size);

/* An instance id for a server process: "HOSTNAME-PORT" with characters
 * outside [A-Za-z0-9._-] replaced by '-', at most 64 bytes. */
void pf_discovery_default_id(int port, char *out, size_t out_size);

/* What a service's main does: when target is NULL or "" returns PF_OK with
 * *out NULL (discovery off); otherwise creates a client for target, adds one
 * instance (labels: "key=value" strings) and starts it. client (may be NULL)
 * carries TLS and token. On failure *out is NULL and err says why. Free *out
 * with pf_discovery_client_destroy (which deregisters). */
enum pf_status pf_discovery_register_self(const char *target, int kind, const char *id,
                                          const char *address, const char *const *labels,
                                          size_t label_count,
                                          const struct pf_rpc_client_opts *client,
                                          const char *component, struct pf_discovery_client **out,
                                          struct pf_error *err) PF_MUST_CHECK;

/* ---- resolve ---- */

#define PF_DISCOVERY_RESOLVE_MAX 16

/* Calls Discovery/Resolve(role) on ch and copies up to max addresses (healthy
 * first, as the server orders them) into out[i] (each PF_RPC_TARGET_MAX
 * bytes); *count gets how many. The server's status comes back (PF_E_NOT_FOUND
 * when no instance has the role, PF_E_UNAVAILABLE, ...). Blocking. */
enum pf_status pf_discovery_resolve(struct pf_rpc_channel *ch, const char *role, bool healthy_only,
                                    char (*out)[PF_RPC_TARGET_MAX], size_t max, size_t *count,
                                    int64_t timeout_ms, struct pf_error *err) PF_MUST_CHECK;

/* ---- finding the farm (agents) ---- */

struct pf_discovery_find_opts {
    const char *discovery;               /* HOST:PORT, or NULL/"" to listen for the beacon */
    struct pf_beacon_listen_opts beacon; /* when listening; its stop is used for the retries too */
    struct pf_rpc_client_opts client;    /* TLS and token for pf-discovery */
    int64_t retry_ms;                    /* pause between Resolve rounds; 0 = 1000 */
};

/* Finds the scheduler and pf-files of a farm: the discovery address (given,
 * or from the beacon), then Resolve "scheduler-leader" (falling back to
 * "scheduler": every replica, the agent follows leader redirects) and
 * "files", retrying until both answer or beacon.stop says to stop.
 * schedulers gets "HOST:PORT[,HOST:PORT...]", files one HOST:PORT, discovery
 * (may be NULL) the discovery address used; each buffer PF_RPC_TARGET_MAX
 * bytes at least (schedulers: PF_DISCOVERY_RESOLVE_MAX * PF_RPC_TARGET_MAX).
 * PF_E_DEADLINE when no beacon came, PF_E_CANCELLED when stopped. Blocking. */
enum pf_status pf_discovery_find_farm(const struct pf_discovery_find_opts *opts, char *schedulers,
                                      size_t schedulers_size, char *files, size_t files_size,
                                      char *discovery, size_t discovery_size,
                                      struct pf_error *err) PF_MUST_CHECK;

#endif
