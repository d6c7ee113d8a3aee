/* A fixed pool of worker threads for blocking work (disk, libpq, hiredis), so
 * the gRPC completion-queue thread never blocks. Jobs run in FIFO order. */
#ifndef PF_WORKQ_H
#define PF_WORKQ_H

#include "status.h"

typedef void (*pf_work_fn)(void *arg);

struct pf_workq;

/* threads >= 1; max_queued bounds waiting jobs (0 = unlimited). */
struct pf_workq *pf_workq_create(int threads, size_t max_queued);
/* Queues fn(arg). PF_E_RESOURCE when the queue is full, PF_E_UNAVAILABLE after
 * shutdown began; fn is then not called and arg stays the caller's. */
enum pf_status pf_workq_submit(struct pf_workq *q, pf_work_fn fn, void *arg) PF_MUST_CHECK;
/* Runs every queued job, joins the threads and frees the pool. Must not be
 * called from one of the pool's own jobs (it would wait for itself). NULL is
 * ignored. */
void pf_workq_destroy(struct pf_workq *q);

#endif
