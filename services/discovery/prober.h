/* The health prober: one active across every pf-discovery replica, chosen by
 * a lock with a TTL in Redis (a pf_lease on pf:disc:prober). The active one
 * checks every registered instance each interval — grpc.health.v1.Health/Check
 * (service "") on its address, or GET /healthz for instances labelled
 * probe=http (agents' admin port); probe=off is skipped — with a deadline,
 * and records SERVING / NOT_SERVING / UNREACHABLE with the round trip in
 * the registry (a CHANGED event when the health changed). Probes run
 * concurrently on a small thread pool, so one round takes about one timeout
 * however many instances are dead. If the active replica dies its lock
 * expires and another takes over within about a lock TTL. */
#ifndef PF_DISC_PROBER_H
#define PF_DISC_PROBER_H

#include "metrics.h"
#include "registry.h"
#include "rpc/client.h"

struct pf_prober_opts {
    struct pf_registry *registry;     /* borrowed */
    struct pf_metrics *metrics;       /* borrowed; may be NULL */
    const char *holder_id;            /* this replica in the lock ("ADDRESS|pid-random"), copied */
    int64_t interval_ms;              /* a round starts this often */
    int64_t timeout_ms;               /* deadline of one probe */
    int concurrency;                  /* probes in flight; 0 = 16 */
    struct pf_rpc_client_opts client; /* TLS for gRPC probes (copied by the channels) */
};

struct pf_prober;

enum pf_status pf_prober_create(const struct pf_prober_opts *opts, struct pf_prober **out,
                                struct pf_error *err) PF_MUST_CHECK;
enum pf_status pf_prober_start(struct pf_prober *p, struct pf_error *err) PF_MUST_CHECK;
/* Stops probing and releases the lock so another replica takes over at once. */
void pf_prober_stop(struct pf_prober *p);
void pf_prober_destroy(struct pf_prober *p);

/* True while this replica is the active prober (thread-safe). */
bool pf_prober_active(struct pf_prober *p);

/* The lock's TTL for a probe interval: max(3 s, 3 intervals). Pure. */
int64_t pf_prober_lock_ttl_ms(int64_t interval_ms);

#endif
