/* The scheduler's unary RPCs (printfarm.v1.Scheduler): SubmitJob, GetJob,
 * ListJobs, UpdateJob, CancelJob, ListPrinters, UpdatePrinter and
 * ConfirmBedClear. WatchEvents (events.c) and Connect (agents.c) are
 * registered by their own modules. */
#ifndef PF_SCHED_API_H
#define PF_SCHED_API_H

#include "sched.h"

/* Adds the eight methods to s->rpc (before pf_rpc_server_start). Viewers may
 * call GetJob, ListJobs and ListPrinters; operators and admins every method;
 * agent tokens none (PERMISSION_DENIED). Each handler answers UNAVAILABLE with
 * the leader trailer on a follower, checks its request on the
 * completion-queue thread (bad input never reaches the database), and does
 * its database and pf-files work on s->wq. s is borrowed and must outlive the
 * server; the methods keep no state of their own. */
enum pf_status pf_sched_api_register(struct pf_sched *s, struct pf_error *err) PF_MUST_CHECK;

#endif
