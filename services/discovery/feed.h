/* The Watch side of one pf-discovery replica: a thread that tails the
 * registry's event stream in Redis (XREAD) and hands each event to the Watch
 * calls open on this replica, so every replica streams the same changes in
 * the same order. The same thread reaps expired entries (every replica does;
 * the script is atomic) and keeps this replica's own DISCOVERY entry alive.
 *
 * Consistency: a new watcher takes a snapshot (instances + stream position X,
 * atomically), sends it, replays the events between X and the feed's
 * position, and only then joins the feed, all without holding a lock across
 * Redis calls; each event reaches a watcher exactly once and in order. Each
 * event carries a version one above the previous; when the feed sees a jump
 * (Redis restarted, or this replica fell further behind than the stream keeps)
 * or Redis is unreachable, it ends every watcher with UNAVAILABLE and a
 * message saying to watch again with send_initial. */
#ifndef PF_DISC_FEED_H
#define PF_DISC_FEED_H

#include "metrics.h"
#include "registry.h"
#include "rpc/server.h"

struct pf_disc_feed_opts {
    struct pf_registry *registry; /* borrowed, outlives the feed */
    struct pf_metrics *metrics;   /* borrowed; may be NULL */
    int64_t reap_interval_ms;     /* 0 = 500 */
};

struct pf_disc_feed;

enum pf_status pf_disc_feed_create(const struct pf_disc_feed_opts *opts, struct pf_disc_feed **out,
                                   struct pf_error *err) PF_MUST_CHECK;
/* Names this replica's own entry (kind DISCOVERY, probed like any other),
 * which the feed thread registers and heartbeats. Before start; copied. */
enum pf_status pf_disc_feed_set_self(struct pf_disc_feed *f, const char *id, const char *address,
                                     struct pf_error *err) PF_MUST_CHECK;
enum pf_status pf_disc_feed_start(struct pf_disc_feed *f, struct pf_error *err) PF_MUST_CHECK;
/* Stops the thread and deregisters the replica's own entry. Call after the
 * RPC server has drained (no watcher is left). */
void pf_disc_feed_stop(struct pf_disc_feed *f);
void pf_disc_feed_destroy(struct pf_disc_feed *f);

/* The per-call state of a Watch: created in on_start (completion-queue
 * thread), filled by pf_disc_feed_watch_begin (a worker), detached in on_close,
 * freed in on_free. */
struct pf_disc_watcher;

struct pf_disc_watcher *pf_disc_watcher_create(struct pf_disc_feed *f, struct pf_rpc_call *call,
                                               int kind, bool send_initial);
/* Worker: snapshot, replay, join the feed; finishes the call on failure. */
void pf_disc_feed_watch_begin(struct pf_disc_watcher *w, struct pf_registry_conn *conn);
/* on_close: the feed stops using the call. */
void pf_disc_watcher_close(struct pf_disc_watcher *w);
/* on_free. NULL is ignored. */
void pf_disc_watcher_destroy(struct pf_disc_watcher *w);

#endif
