/* printfarm.v1.Discovery: Register, Heartbeat, Deregister, List, Watch and
 * Resolve over the Redis registry. Every handler hands its Redis work to the
 * worker queue; Watch streams come from the replica's event feed. */
#ifndef PF_DISC_SERVICE_H
#define PF_DISC_SERVICE_H

#include "feed.h"
#include "metrics.h"
#include "registry.h"
#include "rpc/server.h"
#include "workq.h"

struct pf_disc_service;

/* All borrowed; they outlive the service. */
struct pf_disc_service *pf_disc_service_create(struct pf_registry *registry,
                                               struct pf_disc_feed *feed, struct pf_workq *wq,
                                               struct pf_metrics *metrics);
void pf_disc_service_destroy(struct pf_disc_service *svc);

/* Adds the six methods to srv (before it starts). */
enum pf_status pf_disc_service_register(struct pf_disc_service *svc, struct pf_rpc_server *srv,
                                        struct pf_error *err) PF_MUST_CHECK;

#endif
