/* The printfarm.v1.Files gRPC service: request handling on top of the blob
 * store (store.h) and the bundle codec (bundle.h). Handlers run their disk
 * work on the worker queue, never on the completion-queue thread. */
#ifndef PF_FILES_SERVICE_H
#define PF_FILES_SERVICE_H

#include "metrics.h"
#include "rpc/server.h"
#include "store.h"
#include "workq.h"

#define PF_FILES_DOWNLOAD_CHUNK_MAX (1024 * 1024)

struct pf_files_service;

/* store, wq and metrics are borrowed and must outlive the service. */
struct pf_files_service *pf_files_service_create(struct pf_store *store, struct pf_workq *wq,
                                                 struct pf_metrics *metrics);
/* Adds the Files methods to a server (before it starts). */
enum pf_status pf_files_service_register(struct pf_files_service *svc, struct pf_rpc_server *srv,
                                         struct pf_error *err) PF_MUST_CHECK;
void pf_files_service_destroy(struct pf_files_service *svc);

#endif
