/* pf-scheduler's shared context and the internal interfaces between its
 * modules:
 *   leader.c      the Redis lease, the PostgreSQL epoch, follower redirects;
 *   agents.c      Connect streams and the live state of every printer;
 *   dispatcher.c  dispatch rounds (snapshot -> dispatch.c -> attempts -> StartPrint);
 *   api.c         the unary RPCs (jobs, printers) and their validation;
 *   events.c      event rows, WatchEvents streams;
 *   tx.c          fenced transactions;
 *   main.c        wiring only.
 * Blocking work (libpq, hiredis, calls to pf-files) runs on the worker queue
 * or the leader thread, never on the completion-queue thread. */
#ifndef PF_SCHED_H
#define PF_SCHED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "metrics.h"
#include "pg.h"
#include "printfarm/v1/scheduler.pb-c.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "workq.h"

#define PF_SCHED_ID_MAX 128 /* job, printer, attempt ids; queue names */

struct pf_sched_config {
    const char *database_url;
    const char *redis_url;
    const char *files_addr;  /* pf-files HOST:PORT, to verify and read bundles */
    const char *advertise;   /* HOST:PORT clients should use for this replica */
    const char *instance_id; /* unique per process: "HOST:PORT/pid-random" */
    int64_t lease_ttl_ms;
    int64_t lease_renew_ms;
    int64_t lost_grace_ms;    /* offline printer's attempt becomes lost after */
    int64_t hello_timeout_ms; /* a Connect stream with no hello ends after; 0 = never */
    int64_t dispatch_interval_ms;
    int64_t status_interval_ms;               /* asked of agents in Welcome */
    int64_t default_max_attempts_per_printer; /* farm defaults of the failure policy */
    int64_t default_max_printers;
    int64_t quarantine_after;
    struct pf_rpc_client_opts files_opts; /* TLS/token for pf-files */
};

struct pf_sched_leader;
struct pf_sched_agents;
struct pf_sched_events;
struct pf_sched_dispatcher;

struct pf_sched {
    struct pf_sched_config cfg;
    struct pf_pg_pool *pool;
    struct pf_workq *wq;
    struct pf_metrics *metrics;
    struct pf_rpc_server *rpc;
    struct pf_rpc_channel *files;
    struct pf_sched_leader *leader;
    struct pf_sched_agents *agents;
    struct pf_sched_events *events;
    struct pf_sched_dispatcher *dispatcher;
};

/* ---- leader.c ---- */

/* True when this replica holds the lease and has fenced its epoch; *epoch
 * (may be NULL) gets the epoch. Thread-safe, cheap. */
bool pf_sched_is_leader(struct pf_sched *s, uint64_t *epoch);
/* On a follower, finishes the call with UNAVAILABLE and the leader's address
 * in trailing metadata `printfarm-leader` (when known) and returns true; on
 * the leader returns false and does nothing. Every RPC handler calls it first. */
bool pf_sched_refuse_if_follower(struct pf_sched *s, struct pf_rpc_call *call);
/* Gives up leadership at once (a transaction found a newer epoch). */
void pf_sched_step_down(struct pf_sched *s, const char *why);

/* ---- tx.c: fenced transactions ---- */

/* BEGIN, then reads leader_epoch FOR SHARE and compares it with this
 * replica's epoch: PF_E_ABORTED "leadership lost" (and a step-down) when it
 * differs or this replica is not the leader. On success the caller runs its
 * statements and ends with pf_sched_tx_commit or pf_pg_rollback. */
enum pf_status pf_sched_tx_begin(struct pf_sched *s, struct pf_pg_conn *conn,
                                 struct pf_error *err) PF_MUST_CHECK;
/* Commits; then publishes events written in the transaction to watchers. */
enum pf_status pf_sched_tx_commit(struct pf_sched *s, struct pf_pg_conn *conn,
                                  struct pf_error *err) PF_MUST_CHECK;

/* An event to append inside a fenced transaction. Strings may be NULL. */
struct pf_sched_event {
    Printfarm__V1__EventKind kind;
    const char *job_id;
    const char *printer_id;
    const char *attempt_id;
    Printfarm__V1__JobState job_state;
    Printfarm__V1__PrinterState printer_state;
    Printfarm__V1__AttemptState attempt_state;
    const char *text; /* one line for people */
};

/* Appends an event with the next gapless sequence number (*seq, may be NULL). */
enum pf_status pf_sched_event_add(struct pf_pg_conn *conn, const struct pf_sched_event *ev,
                                  uint64_t *seq, struct pf_error *err) PF_MUST_CHECK;

/* New ids: prefix + 26-character ULID-like text (time-ordered, random tail):
 * "j-01JD...", "a-01JD...". out must hold PF_SCHED_ID_MAX bytes. */
void pf_sched_new_id(const char *prefix, char *out);

/* Runs fn with a pooled connection on the calling (worker) thread; PF_E_UNAVAILABLE
 * when no connection is free within a few seconds. */
typedef enum pf_status (*pf_sched_db_fn)(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                         struct pf_error *err);
enum pf_status pf_sched_with_db(struct pf_sched *s, pf_sched_db_fn fn, void *arg,
                                struct pf_error *err) PF_MUST_CHECK;

/* ---- events.c ---- */

/* Wakes WatchEvents streams: events up to seq are committed. Thread-safe. */
void pf_sched_events_published(struct pf_sched *s, uint64_t seq);

/* ---- dispatcher.c ---- */

/* Asks for a dispatch round soon (a printer became ready, jobs changed).
 * Thread-safe, never blocks. */
void pf_sched_dispatch_kick(struct pf_sched *s);

/* ---- agents.c: what the API needs from the live printer registry ---- */

/* Live state of a connected printer, copied out. */
struct pf_sched_live {
    bool connected;
    Printfarm__V1__PrinterState state; /* as the agent last reported */
    char attempt_id[PF_SCHED_ID_MAX];
    float progress;
    double temps[4][2]; /* T0, T1, bed, chamber: actual, target */
    int temp_count;
    int64_t last_seen_unix_ms;
    uint32_t cached_files;
};

/* False when the printer has no live stream on this replica. */
bool pf_sched_agents_live(struct pf_sched *s, const char *printer_id, struct pf_sched_live *out);
/* Sends CancelPrint for attempt_id to its printer's stream (if connected). */
void pf_sched_agents_cancel(struct pf_sched *s, const char *printer_id, const char *attempt_id,
                            const char *reason);
/* The operator's settings of a printer changed in the database (materials,
 * labels, queues, windows, quarantine, bed clear): reload them. */
void pf_sched_agents_reload(struct pf_sched *s, const char *printer_id);

#endif
