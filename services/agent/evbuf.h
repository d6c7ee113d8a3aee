/* The agent's outgoing message buffer: what a session has produced but the
 * scheduler has not yet acknowledged (state changes) or not yet received
 * (telemetry). State changes — attempt events and bed-cleared reports, the
 * AgentMessages that carry a seq — get the next sequence number here, are
 * kept until an Ack or Welcome.acked_seq covers them, are resent from the
 * start after every reconnect, and are never dropped: when max_state of them
 * wait, a new one is refused with a clear error instead. Telemetry (status,
 * progress) is sent once and forgotten; while disconnected at most
 * max_telemetry wait and the oldest is dropped first. Entries are opaque
 * bytes with a caller-chosen type, in the order they were produced. Pure
 * (no I/O) and not thread-safe: the owning session locks around it. */
#ifndef PF_AGENT_EVBUF_H
#define PF_AGENT_EVBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "status.h"

enum pf_evbuf_class {
    PF_EVBUF_STATE,     /* has a seq; kept until acknowledged */
    PF_EVBUF_TELEMETRY, /* seq 0; dropped once sent, oldest first when full */
};

/* A view of one buffered message. data is borrowed from the buffer and valid
 * until the next call that changes it. */
struct pf_evbuf_entry {
    uint64_t id; /* unique within the buffer, for pf_evbuf_sent */
    uint64_t seq;
    enum pf_evbuf_class cls;
    int type; /* the caller's tag */
    const void *data;
    size_t len;
};

struct pf_evbuf;

/* max_state >= 1 and max_telemetry >= 1 entries; max_bytes bounds one entry.
 * NULL when memory runs out. Free with pf_evbuf_destroy. */
struct pf_evbuf *pf_evbuf_create(size_t max_state, size_t max_telemetry, size_t max_bytes);
void pf_evbuf_destroy(struct pf_evbuf *b);

/* The highest seq handed out (persisted by the caller); the next state
 * change gets one more. Set at start from the state file; it never goes
 * backwards (a smaller value is ignored). */
uint64_t pf_evbuf_last_seq(const struct pf_evbuf *b);
void pf_evbuf_set_last_seq(struct pf_evbuf *b, uint64_t seq);
/* The highest seq the scheduler acknowledged. */
uint64_t pf_evbuf_acked_seq(const struct pf_evbuf *b);

/* Appends a state change with seq = last_seq + 1 (written to *seq). data is
 * copied. PF_E_RESOURCE (nothing changes, no seq used) when max_state
 * unacknowledged state changes are already held; PF_E_INVALID when len is 0
 * or over max_bytes. */
enum pf_status pf_evbuf_push_state(struct pf_evbuf *b, int type, const void *data, size_t len,
                                   uint64_t *seq, struct pf_error *err) PF_MUST_CHECK;
/* Re-adds a state change read back from the state file with its own seq
 * (which must be above every seq held; last_seq is raised to it). Ignored
 * (PF_OK) when seq is already acknowledged. Same limits as push_state. */
enum pf_status pf_evbuf_restore_state(struct pf_evbuf *b, uint64_t seq, int type, const void *data,
                                      size_t len, struct pf_error *err) PF_MUST_CHECK;
/* Appends telemetry; when max_telemetry are held the oldest is dropped first
 * (counted in pf_evbuf_dropped). PF_E_INVALID when len is 0 or over
 * max_bytes. Never drops a state change. */
enum pf_status pf_evbuf_push_telemetry(struct pf_evbuf *b, int type, const void *data,
                                       size_t len) PF_MUST_CHECK;

/* Everything up to and including seq is durably recorded: those state
 * changes are dropped. A seq beyond last_seq is clamped to it (a scheduler
 * cannot acknowledge what was never sent). */
void pf_evbuf_ack(struct pf_evbuf *b, uint64_t seq);
/* After a reconnect: every unacknowledged state change is to be sent again. */
void pf_evbuf_rewind(struct pf_evbuf *b);
/* A Welcome: acknowledges up to acked_seq and rewinds. When the scheduler has
 * recorded more than this agent ever numbered (its state file was lost), the
 * held state changes are renumbered from acked_seq + 1 and last_seq moves up,
 * so they are not mistaken for repeats; returns true then (persist it). */
bool pf_evbuf_welcome(struct pf_evbuf *b, uint64_t acked_seq);

/* The oldest entry not yet sent on this connection: false when none. */
bool pf_evbuf_next(const struct pf_evbuf *b, struct pf_evbuf_entry *out);
/* Entry id went out: telemetry is dropped, a state change is kept (marked
 * sent) until acknowledged. An id no longer held is ignored. */
void pf_evbuf_sent(struct pf_evbuf *b, uint64_t id);

/* Held entries of a class, and the i-th state change (oldest first; false
 * when i is out of range), for persisting them. */
size_t pf_evbuf_count(const struct pf_evbuf *b, enum pf_evbuf_class cls);
bool pf_evbuf_state_at(const struct pf_evbuf *b, size_t i, struct pf_evbuf_entry *out);
/* Telemetry entries dropped because the buffer was full, since creation. */
uint64_t pf_evbuf_dropped(const struct pf_evbuf *b);

#endif
