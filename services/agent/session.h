/* One printer's session with the scheduler: a thread that keeps a Connect
 * stream open (Hello, Welcome, then status at an interval and every state
 * change as a numbered event), carries out the scheduler's commands on the
 * printer's driver, and survives anything the network or the scheduler does.
 *
 * - Reconnects with exponential backoff and full jitter on any stream end;
 *   follows the `printfarm-leader` redirect of a follower at once; when the
 *   replica it talks to is gone, tries the next address of --scheduler.
 * - Events produced while disconnected wait in an evbuf (state changes never
 *   dropped, oldest telemetry first) and go out after the next Welcome, which
 *   also says what the scheduler already recorded.
 * - StartPrint is idempotent by attempt id: an attempt that is current or
 *   already finished is reported, never started again. A new one is
 *   downloaded into the cache (on its own thread), verified, written to the
 *   state file, and only then handed to the driver.
 * - At start the state file is read and the attempt in it reconciled with
 *   what the printer says, so an agent restarted mid-print reports the truth.
 *
 * Lifecycle: pf_session_create (reads the state file) → pf_session_start →
 * pf_session_stop → pf_session_destroy. Thread-safe where noted. */
#ifndef PF_AGENT_SESSION_H
#define PF_AGENT_SESSION_H

#include <stdint.h>
#include "cache.h"
#include "driver.h"
#include "metrics.h"
#include "rpc/client.h"

#define PF_SESSION_MATERIALS_MAX 16
#define PF_AGENT_VERSION         "0.1.0"

struct pf_session_material {
    uint32_t extruder;
    char material[64];
    char colour[64];
};

/* Metric families shared by every session of a process (created by
 * pf_session_metrics_init; any may be NULL). */
struct pf_session_metrics {
    struct pf_metric *printer_state;     /* gauge {printer}: PrinterState number */
    struct pf_metric *printers;          /* gauge {state}: printers in each state */
    struct pf_metric *temperature;       /* gauge {printer,sensor,kind}: actual / target */
    struct pf_metric *progress;          /* gauge {printer} */
    struct pf_metric *connected;         /* gauge: sessions with a live stream */
    struct pf_metric *reconnects;        /* counter */
    struct pf_metric *redirects;         /* counter */
    struct pf_metric *prints;            /* counter {result} */
    struct pf_metric *serial_resends;    /* counter {printer} */
    struct pf_metric *events_sent;       /* counter {kind} */
    struct pf_metric *telemetry_dropped; /* counter */
};

void pf_session_metrics_init(struct pf_session_metrics *m, struct pf_metrics *registry);

struct pf_session_config {
    const char *printer_id;
    const char *profile;
    /* Scheduler replicas to try, in order ("HOST:PORT"); at least one. */
    const char *const *schedulers;
    size_t scheduler_count;
    const struct pf_rpc_client_opts *client; /* TLS, token (copied by the channel) */
    struct pf_rpc_channel *files;            /* borrowed, shared */
    struct pf_cache *cache;                  /* borrowed, shared */
    struct pf_driver *driver;                /* borrowed; outlives the session */
    const char *state_path;                  /* the state file */
    const struct pf_session_material *materials;
    size_t material_count;
    int64_t status_interval_ms;               /* until a Welcome says otherwise */
    int64_t backoff_base_ms;                  /* reconnect backoff; 0 = 500 ms */
    int64_t backoff_max_ms;                   /* 0 = 30 s */
    int64_t hello_timeout_ms;                 /* wait for Welcome; 0 = 15 s */
    size_t max_events;                        /* unacknowledged state changes held; 0 = 1024 */
    size_t max_telemetry;                     /* telemetry held while disconnected; 0 = 32 */
    const struct pf_session_metrics *metrics; /* borrowed; NULL = none */
};

struct pf_session;

/* Parses "0=PLA:black,1=PETG:white" (EXTRUDER=MATERIAL[:COLOUR], comma
 * separated, blanks around entries ignored) into out[0..max). PF_E_INVALID
 * naming the entry for a bad extruder number (0..15), an empty or over-long
 * (63 bytes) material or colour, a repeated extruder or too many entries.
 * Pure. */
enum pf_status pf_session_parse_materials(const char *text, struct pf_session_material *out,
                                          size_t max, size_t *count,
                                          struct pf_error *err) PF_MUST_CHECK;

/* Copies the config, reads the state file (PF_E_DATA_LOSS when it is corrupt:
 * the agent must not guess what it was printing) and reconciles the attempt
 * in it with the driver. Nothing runs yet. */
enum pf_status pf_session_create(const struct pf_session_config *cfg, struct pf_session **out,
                                 struct pf_error *err) PF_MUST_CHECK;
/* Starts the session thread. */
enum pf_status pf_session_start(struct pf_session *s, struct pf_error *err) PF_MUST_CHECK;
/* Asks the thread to end (thread-safe, returns at once). */
void pf_session_request_stop(struct pf_session *s);
/* Requests a stop and waits for the session's threads. */
void pf_session_stop(struct pf_session *s);
/* Stops if needed and frees. NULL is ignored. */
void pf_session_destroy(struct pf_session *s);

/* True while a stream is open and welcomed. Thread-safe. */
bool pf_session_connected(struct pf_session *s);

#endif
