/* The lifecycle of pf-scheduler's threaded modules (leader, agents,
 * dispatcher, events) and the calls between them that the unary API does not
 * need; main.c wires them in this order: create every module, register the
 * RPC methods, start the gRPC server, start the leader and dispatcher threads,
 * serve, then stop the threads and destroy the modules in reverse order.
 *
 * Stored lists (printers.materials, labels, queues, windows, capabilities) are
 * packed protobuf messages: ExtruderMaterials, Labels, QueueWeights,
 * AvailabilityWindows (the wrapper messages of UpdatePrinterRequest) and
 * AgentCapabilities; jobs.constraints is a packed JobConstraints. NULL or an
 * empty value is an empty list. A printer with no queues serves "default"
 * with weight 1. */
#ifndef PF_SCHED_MODULES_H
#define PF_SCHED_MODULES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "buf.h"
#include "printfarm/v1/files.pb-c.h"
#include "sched.h"

#define PF_SCHED_LEASE_KEY      "printfarm:scheduler:leader"
#define PF_SCHED_PRINTER_ID_MAX 64 /* agent printer ids: 1..64 of [A-Za-z0-9._-] */

/* ---- leader.c ---- */

/* Allocates s->leader (no I/O). */
enum pf_status pf_sched_leader_create(struct pf_sched *s, struct pf_error *err) PF_MUST_CHECK;
/* Starts the lease thread; s->cfg.advertise and instance_id must be final. */
enum pf_status pf_sched_leader_start(struct pf_sched *s, struct pf_error *err) PF_MUST_CHECK;
/* Steps down (releasing the lease) and joins the thread. Idempotent. */
void pf_sched_leader_stop(struct pf_sched *s);
void pf_sched_leader_destroy(struct pf_sched *s);
/* For /readyz: the database answered recently and this replica is leader or
 * knows who is. Thread-safe, never blocks. */
bool pf_sched_leader_ready(struct pf_sched *s, struct pf_buf *why);
/* The advertise address of the current leader as this replica knows it (its
 * own when leader), or "" when unknown. */
void pf_sched_leader_address(struct pf_sched *s, char *out, size_t out_size);
/* Monotonic ms at which this replica last became leader (0 if never). */
int64_t pf_sched_leader_since(struct pf_sched *s);

/* ---- agents.c ---- */

enum pf_status pf_sched_agents_create(struct pf_sched *s, struct pf_error *err) PF_MUST_CHECK;
/* Adds printfarm.v1.Scheduler/Connect to s->rpc. */
enum pf_status pf_sched_agents_register(struct pf_sched *s, struct pf_error *err) PF_MUST_CHECK;
/* Ends every agent stream with UNAVAILABLE and the leader trailer (if known).
 * Thread-safe. */
void pf_sched_agents_end_all(struct pf_sched *s, const char *why);
void pf_sched_agents_destroy(struct pf_sched *s);

/* A connected, welcomed printer as the dispatcher sees it. */
struct pf_sched_agent_snap {
    char id[PF_SCHED_PRINTER_ID_MAX + 1];
    Printfarm__V1__PrinterState state; /* as last reported */
    int64_t ready_since;               /* monotonic ms it last became ready */
    size_t cached_first, n_cached;     /* its digests in the snapshot's cached array */
};

struct pf_sched_agents_snapshot {
    struct pf_sched_agent_snap *printers;
    size_t n;
    char (*cached)[65]; /* hex digests of every printer's cache, one block per printer */
    size_t n_cached;
};

/* Copies the connected, welcomed printers. Free with _snapshot_release. */
enum pf_status pf_sched_agents_snapshot(struct pf_sched *s, struct pf_sched_agents_snapshot *out,
                                        struct pf_error *err) PF_MUST_CHECK;
void pf_sched_agents_snapshot_release(struct pf_sched_agents_snapshot *snap);
/* Sends msg on the printer's welcomed stream; false when it has none. When
 * attempt_id is not NULL the live state records it as the printer's attempt. */
bool pf_sched_agents_send(struct pf_sched *s, const char *printer_id,
                          const Printfarm__V1__SchedulerMessage *msg, const char *attempt_id);
/* -1 while the printer has a stream (welcomed, or with its hello being
 * reconciled: that hello claims or drops the printer's attempts itself);
 * otherwise the monotonic ms since which it has none (INT64_MIN when never
 * seen by this replica). */
int64_t pf_sched_agents_offline_since(struct pf_sched *s, const char *printer_id);
/* Counts of connected printers by reported state (index PrinterState). */
void pf_sched_agents_count(struct pf_sched *s, size_t counts[8], size_t *known);

/* Marks the attempt lost (when it is still active and its printer has no
 * welcomed stream): job in_progress - 1, lost_attempts + 1, event. Runs a
 * fenced transaction on conn. *changed says whether it did. */
enum pf_status pf_sched_attempt_lose(struct pf_sched *s, struct pf_pg_conn *conn,
                                     const char *attempt_id, const char *reason, bool *changed,
                                     struct pf_error *err) PF_MUST_CHECK;

/* A transaction body for pf_sched_fenced: runs statements on conn; it must
 * not begin, commit or roll back, and must be safe to run again (reset its
 * outputs at the start). */
typedef enum pf_status (*pf_sched_tx_body)(struct pf_sched *s, struct pf_pg_conn *conn, void *arg,
                                           struct pf_error *err);
/* pf_sched_tx_begin + body + pf_sched_tx_commit, rolled back on failure and
 * run again (up to 4 times) after a deadlock or serialization failure. */
enum pf_status pf_sched_fenced(struct pf_sched *s, struct pf_pg_conn *conn, pf_sched_tx_body body,
                               void *arg, struct pf_error *err) PF_MUST_CHECK;
/* Finishes call after a failed fenced operation: UNAVAILABLE with the leader
 * trailer when this replica is no longer leader, else err as it is. */
void pf_sched_finish_failed(struct pf_sched *s, struct pf_rpc_call *call,
                            const struct pf_error *err);

/* ---- dispatcher.c ---- */

enum pf_status pf_sched_dispatcher_create(struct pf_sched *s, struct pf_error *err) PF_MUST_CHECK;
enum pf_status pf_sched_dispatcher_start(struct pf_sched *s, struct pf_error *err) PF_MUST_CHECK;
void pf_sched_dispatcher_stop(struct pf_sched *s);
void pf_sched_dispatcher_destroy(struct pf_sched *s);

/* A bundle read from pf-files, shared (bundles are immutable). */
struct pf_sched_bundle {
    char digest[65];
    Printfarm__V1__Bundle *bundle;
    atomic_int refs;
};
/* The bundle with this digest, from the cache or pf-files (blocking: worker
 * or dispatcher thread only). Release with pf_sched_bundle_release. */
enum pf_status pf_sched_bundle_get(struct pf_sched *s, const char *digest,
                                   struct pf_sched_bundle **out,
                                   struct pf_error *err) PF_MUST_CHECK;
void pf_sched_bundle_release(struct pf_sched_bundle *b);
/* The bundle's file for profile, or NULL. */
const Printfarm__V1__BundleFile *pf_sched_bundle_file(const struct pf_sched_bundle *b,
                                                      const char *profile);

/* Sends StartPrint for an attempt already recorded (its gcode metadata from
 * the bundle cache when it can be had). Blocking (bundle read): worker or
 * dispatcher thread. False when the printer has no welcomed stream. */
bool pf_sched_send_start_print(struct pf_sched *s, const char *printer_id, const char *attempt_id,
                               const char *job_id, const char *job_name, const char *bundle,
                               const char *profile, const char *file, uint64_t size);

/* ---- events.c ---- */

enum pf_status pf_sched_events_create(struct pf_sched *s, struct pf_error *err) PF_MUST_CHECK;
/* Adds printfarm.v1.Scheduler/WatchEvents to s->rpc. */
enum pf_status pf_sched_events_register(struct pf_sched *s, struct pf_error *err) PF_MUST_CHECK;
/* Ends every watcher with UNAVAILABLE and the leader trailer. Thread-safe. */
void pf_sched_events_end_all(struct pf_sched *s, const char *why);
void pf_sched_events_destroy(struct pf_sched *s);

/* ---- api.c ---- */

enum pf_status pf_sched_api_register(struct pf_sched *s, struct pf_error *err) PF_MUST_CHECK;

/* ---- bytea helpers (text-format libpq parameters and results) ---- */

/* "\x0a0b..." for len bytes; heap string the caller frees, NULL when out of
 * memory. */
static inline char *pf_sched_bytea_param(const uint8_t *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char *out = malloc(2 * len + 3);
    if (out == NULL)
        return NULL;
    out[0] = '\\';
    out[1] = 'x';
    for (size_t i = 0; i < len; i++) {
        out[2 + 2 * i] = hex[data[i] >> 4];
        out[3 + 2 * i] = hex[data[i] & 15];
    }
    out[2 + 2 * len] = '\0';
    return out;
}

/* Packs msg as a bytea parameter (caller frees); NULL when out of memory. */
static inline char *pf_sched_bytea_msg(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len + 1);
    char *out;
    if (buf == NULL)
        return NULL;
    protobuf_c_message_pack(msg, buf);
    out = pf_sched_bytea_param(buf, len);
    free(buf);
    return out;
}

static inline int pf_sched_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Unpacks a bytea text value ("\x..." hex) as a message of desc; NULL for
 * SQL NULL, an empty value or bytes that do not decode. Free with
 * protobuf_c_message_free_unpacked. */
static inline ProtobufCMessage *pf_sched_bytea_unpack(const ProtobufCMessageDescriptor *desc,
                                                      const char *text)
{
    size_t n;
    uint8_t *buf;
    ProtobufCMessage *msg;

    if (text == NULL || text[0] != '\\' || text[1] != 'x')
        return NULL;
    n = strlen(text + 2) / 2;
    if (n == 0)
        return NULL;
    buf = malloc(n);
    if (buf == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int hi = pf_sched_hexval(text[2 + 2 * i]), lo = pf_sched_hexval(text[3 + 2 * i]);
        if (hi < 0 || lo < 0) {
            free(buf);
            return NULL;
        }
        buf[i] = (uint8_t)(hi << 4 | lo);
    }
    msg = protobuf_c_message_unpack(desc, NULL, n, buf);
    free(buf);
    return msg;
}

#endif
