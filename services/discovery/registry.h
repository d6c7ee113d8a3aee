/* pf-discovery's data in Redis, shared by every replica. Each operation is one
 * Lua script (EVALSHA: one round trip) so that it is atomic and uses Redis'
 * clock, never a replica's:
 *
 *   pf:disc:inst:KIND:ID   hash: the instance (packed printfarm.v1.Instance),
 *                          its address and probe mode, lease id, TTL,
 *                          registered / last-seen / expiry times, last probe
 *                          (health, latency, time, error). PEXPIRE = TTL +
 *                          grace, so Redis drops it even if every replica is
 *                          gone; the logical expiry is the `exp` field.
 *   pf:disc:index          sorted set: member KIND:ID, score = exp (ms).
 *                          Listing and reaping read it instead of SCAN.
 *   pf:disc:events         stream: one entry per ADDED / CHANGED / REMOVED
 *                          with the instance's public fields; Watch on every
 *                          replica tails it (XREAD). Trimmed to about
 *                          events_max entries.
 *   pf:disc:probe          set: the members the prober checks (probe mode not
 *                          off), so a round reads only those.
 *   pf:disc:version        counter: INCR'd in the same script as each XADD,
 *                          so consecutive entries have consecutive versions
 *                          and a reader can tell when it missed some.
 *
 * A Heartbeat is at most one EVALSHA (HMGET, HSET, PEXPIRE inside, one ZADD
 * per script) and adds no stream entry; heartbeats arriving together share
 * one script call. An entry whose `exp` passed is removed, with a REMOVED event,
 * by pf_registry_reap, which every replica runs (atomic, so exactly one does
 * each removal). After a Redis restart (NOSCRIPT) the script is sent once in
 * full with EVAL.
 *
 * Threads: a struct pf_registry_conn is used by one thread at a time; take
 * one from the pool (pf_registry_conn_get/put) or keep a dedicated one
 * (pf_registry_conn_create). Everything else in struct pf_registry is
 * thread-safe. */
#ifndef PF_DISC_REGISTRY_H
#define PF_DISC_REGISTRY_H

#include <stdint.h>
#include "metrics.h"
#include "printfarm/v1/discovery.pb-c.h"
#include "redis.h"
#include "validate.h"

#define PF_DISC_KEY_INSTANCE_PREFIX "pf:disc:inst:"
#define PF_DISC_KEY_INDEX           "pf:disc:index"
#define PF_DISC_KEY_EVENTS          "pf:disc:events"
#define PF_DISC_KEY_VERSION         "pf:disc:version"
#define PF_DISC_KEY_PROBES          "pf:disc:probe"
#define PF_DISC_KEY_PROBER          "pf:disc:prober"
/* pf-scheduler's leader lease (services/scheduler/modules.h,
 * PF_SCHED_LEASE_KEY): its value is "ADVERTISE|instance". */
#define PF_DISC_KEY_SCHED_LEADER "printfarm:scheduler:leader"

#define PF_DISC_STREAM_ID_MAX 48

struct pf_registry_opts {
    const char *redis_url;      /* copied */
    int pool_size;              /* connections for RPC workers; 0 = 4 */
    int64_t grace_ms;           /* Redis keeps an expired entry this much longer; 0 = 60 s */
    long events_max;            /* stream length kept; 0 = 20000 */
    struct pf_metrics *metrics; /* borrowed; may be NULL */
};

struct pf_registry;
struct pf_registry_conn;

/* Parses the URL and makes the pool; connects lazily (Redis may be down at
 * start: operations then fail with PF_E_UNAVAILABLE until it is back). */
enum pf_status pf_registry_create(const struct pf_registry_opts *opts, struct pf_registry **out,
                                  struct pf_error *err) PF_MUST_CHECK;
/* Every connection must have been put back or destroyed. NULL is ignored. */
void pf_registry_destroy(struct pf_registry *reg);

/* A pooled connection (blocks until one is free); give it back with put. */
struct pf_registry_conn *pf_registry_conn_get(struct pf_registry *reg);
void pf_registry_conn_put(struct pf_registry_conn *conn);
/* A dedicated connection for a long-running thread (NULL when out of memory). */
struct pf_registry_conn *pf_registry_conn_create(struct pf_registry *reg, int command_timeout_ms);
void pf_registry_conn_destroy(struct pf_registry_conn *conn);
/* The connection's Redis client, connecting first if needed (NULL with err
 * set when Redis cannot be reached). Owned by conn; stays valid (it
 * reconnects by itself) until the connection is destroyed. For the prober's
 * pf_lease. */
struct pf_redis *pf_registry_conn_redis(struct pf_registry_conn *conn, struct pf_error *err);

/* Whether the last operation of any connection reached Redis, and if not,
 * why (copied into why, may be NULL). For /readyz. Thread-safe. */
bool pf_registry_redis_ok(struct pf_registry *reg, char *why, size_t why_size);

/* "HOST:PORT" of Redis for messages. */
const char *pf_registry_redis_target(const struct pf_registry *reg);

/* ---- instances ---- */

/* Registers (or replaces) inst, which must be valid (pf_disc_validate_instance),
 * with a lease of ttl_ms. lease (PF_DISC_LEASE_MAX bytes) gets the new lease id,
 * *expires_ms the expiry (Unix ms). */
enum pf_status pf_registry_register(struct pf_registry_conn *conn,
                                    const Printfarm__V1__Instance *inst,
                                    enum pf_disc_probe_mode mode, int64_t ttl_ms, char *lease,
                                    int64_t *expires_ms, struct pf_error *err) PF_MUST_CHECK;

/* Extends the lease named by member (from pf_disc_lease_parse) and lease id by
 * its TTL. PF_E_NOT_FOUND when that lease is no longer current. */
enum pf_status pf_registry_heartbeat(struct pf_registry_conn *conn, const char *member,
                                     const char *lease, int64_t *ttl_ms, int64_t *expires_ms,
                                     struct pf_error *err) PF_MUST_CHECK;

/* One heartbeat of a batch: member and lease in, the outcome out. */
#define PF_REGISTRY_HEARTBEAT_BATCH 256
struct pf_heartbeat {
    char member[PF_DISC_MEMBER_MAX];
    char lease[PF_DISC_LEASE_MAX];
    bool current;       /* out: the lease was current and is extended */
    int64_t ttl_ms;     /* out */
    int64_t expires_ms; /* out */
};

/* Heartbeats up to PF_REGISTRY_HEARTBEAT_BATCH leases in one script (one
 * round trip for all). PF_OK means Redis answered; each item says whether
 * its lease was current. */
enum pf_status pf_registry_heartbeat_many(struct pf_registry_conn *conn, struct pf_heartbeat *items,
                                          size_t count, struct pf_error *err) PF_MUST_CHECK;

/* The NOT_FOUND error of a lease that is no longer current. */
enum pf_status pf_registry_lease_gone(const char *lease, struct pf_error *err);

/* Removes the entry if lease is still its lease; *removed (may be NULL) says
 * whether it did. */
enum pf_status pf_registry_deregister(struct pf_registry_conn *conn, const char *member,
                                      const char *lease, bool *removed,
                                      struct pf_error *err) PF_MUST_CHECK;

/* The live instances (of one kind, or every kind for 0), ordered by kind then
 * id, and the position of the event stream at that same instant. */
struct pf_registry_snapshot {
    Printfarm__V1__InstanceStatus **items; /* each freed by pf_registry_status_free */
    size_t count;
    char stream_id[PF_DISC_STREAM_ID_MAX]; /* last event at the snapshot ("0-0": none) */
    uint64_t version;                      /* its version (0: none yet) */
    int64_t now_ms;                        /* Redis' clock */
};

enum pf_status pf_registry_snapshot(struct pf_registry_conn *conn, int kind,
                                    struct pf_registry_snapshot *out,
                                    struct pf_error *err) PF_MUST_CHECK;
void pf_registry_snapshot_release(struct pf_registry_snapshot *s);

/* One live instance; PF_E_NOT_FOUND when absent or expired. *out is freed by
 * pf_registry_status_free. */
enum pf_status pf_registry_get(struct pf_registry_conn *conn, int kind, const char *id,
                               Printfarm__V1__InstanceStatus **out,
                               struct pf_error *err) PF_MUST_CHECK;

/* Frees an InstanceStatus made by this module. NULL is ignored. */
void pf_registry_status_free(Printfarm__V1__InstanceStatus *st);

/* The scheduler leader's advertise address, from its lease key.
 * PF_E_NOT_FOUND when no leader holds the lease. */
enum pf_status pf_registry_scheduler_leader(struct pf_registry_conn *conn, char *out,
                                            size_t out_size, struct pf_error *err) PF_MUST_CHECK;

/* Removes up to limit entries whose lease ran out, each with a REMOVED event.
 * *removed (may be NULL) counts them. */
enum pf_status pf_registry_reap(struct pf_registry_conn *conn, int limit, size_t *removed,
                                struct pf_error *err) PF_MUST_CHECK;

/* ---- probing ---- */

struct pf_probe_target {
    char member[PF_DISC_MEMBER_MAX];
    char address[PF_DISC_ADDRESS_MAX];
    enum pf_disc_probe_mode mode;
};

/* Every live instance to probe (mode off included: the caller skips them).
 * *out is malloc'd (free it); *count may be 0. */
enum pf_status pf_registry_probe_targets(struct pf_registry_conn *conn,
                                         struct pf_probe_target **out, size_t *count,
                                         struct pf_error *err) PF_MUST_CHECK;

struct pf_probe_result {
    char member[PF_DISC_MEMBER_MAX];
    char address[PF_DISC_ADDRESS_MAX]; /* recorded only if the entry still has it */
    int health;                        /* Printfarm__V1__InstanceHealth */
    uint32_t latency_us;
    char error[160];
};

/* Records results (in batches of a few hundred per script); an entry whose
 * health changed gets a CHANGED event. *changed (may be NULL) counts them. */
enum pf_status pf_registry_record_probes(struct pf_registry_conn *conn,
                                         const struct pf_probe_result *results, size_t count,
                                         size_t *changed, struct pf_error *err) PF_MUST_CHECK;

/* ---- the event stream ---- */

struct pf_registry_event {
    char id[PF_DISC_STREAM_ID_MAX];
    uint64_t version;
    int type; /* Printfarm__V1__InstanceEventType */
    int kind;
    Printfarm__V1__InstanceStatus *status; /* the callback's for the call only */
};

/* Called for each event, in order; returning false stops the read early
 * (later events are then read again next time). */
typedef bool (*pf_registry_event_fn)(const struct pf_registry_event *ev, void *arg);

/* The last event's id and version now. */
enum pf_status pf_registry_stream_position(struct pf_registry_conn *conn, char *id,
                                           uint64_t *version, struct pf_error *err) PF_MUST_CHECK;

/* XREAD: events after `after`, waiting up to block_ms when there are none
 * (block_ms 0: do not wait); at most max. Returns PF_OK also when none came. */
enum pf_status pf_registry_read_events(struct pf_registry_conn *conn, const char *after,
                                       int block_ms, int max, pf_registry_event_fn fn, void *arg,
                                       struct pf_error *err) PF_MUST_CHECK;

/* XRANGE: events after `after` up to and including `upto`, all of them. */
enum pf_status pf_registry_event_range(struct pf_registry_conn *conn, const char *after,
                                       const char *upto, pf_registry_event_fn fn, void *arg,
                                       struct pf_error *err) PF_MUST_CHECK;

#endif
