/* The admin HTTP server every binary runs on --admin-listen (libmicrohttpd,
 * its own thread): /metrics (Prometheus text), /healthz (process alive) and
 * /readyz (ready to serve, decided by a callback). */
#ifndef PF_ADMIN_H
#define PF_ADMIN_H

#include "metrics.h"

/* Returns true when ready; otherwise writes a short reason into why.
 * Called on the HTTP thread: must be thread-safe and must not block long. */
typedef bool (*pf_admin_ready_fn)(void *arg, struct pf_buf *why);

struct pf_admin;

/* Starts serving on listen ("HOST:PORT"; port 0 picks a free port). metrics is
 * borrowed and must outlive the server. ready may be NULL (always ready). */
struct pf_admin *pf_admin_start(const char *listen, struct pf_metrics *metrics,
                                pf_admin_ready_fn ready, void *ready_arg, struct pf_error *err);
/* The bound port. */
int pf_admin_port(const struct pf_admin *a);
/* Stops the thread and frees the server. NULL is ignored. */
void pf_admin_stop(struct pf_admin *a);

#endif
