/* The agent's small state file: the attempt it is running or last ran, the
 * attempts it finished recently, the highest message seq it has used, the
 * state changes not yet acknowledged by the scheduler, and whether the bed is
 * known to be clear. It is what makes StartPrint idempotent across restarts:
 * the attempt is written here before the printer is told to start, so an
 * agent killed at any point never starts that attempt again and reports it
 * truthfully in its next Hello.
 *
 * Format: UTF-8 text, one `key value...` record per line, first line
 * `pf-agent-state 1`, last line `end` (a file without it was cut short).
 * Strings are percent-encoded (space, '%' and control bytes), binary event
 * payloads are hex. Written atomically: a temporary file, fsync, rename over
 * the old one, fsync of the directory. The parser is pure and strict: any
 * line it does not understand makes the whole file corrupt (PF_E_DATA_LOSS
 * with the line number), because guessing here could print a job twice. */
#ifndef PF_AGENT_STATEFILE_H
#define PF_AGENT_STATEFILE_H

#include <stdint.h>
#include "buf.h"
#include "status.h"

#define PF_STATEFILE_ID_MAX     128 /* attempt and job ids, NUL included */
#define PF_STATEFILE_REASON_MAX 256
#define PF_STATEFILE_DONE_MAX   16  /* finished attempts remembered besides the current one */
#define PF_STATEFILE_EVENTS_MAX 32  /* unacknowledged state changes kept across restarts */
#define PF_STATEFILE_EVENT_MAX  512 /* bytes of one event payload */
#define PF_STATEFILE_FILE_MAX   (512 * 1024)

enum pf_statefile_attempt_state {
    PF_ATTEMPT_NONE = 0,
    PF_ATTEMPT_STARTING, /* recorded; the printer was (or was about to be) told to start */
    PF_ATTEMPT_PRINTING, /* the printer confirmed it started */
    PF_ATTEMPT_SUCCEEDED,
    PF_ATTEMPT_FAILED,
    PF_ATTEMPT_CANCELLED,
};

struct pf_statefile_attempt {
    char id[PF_STATEFILE_ID_MAX]; /* "" = none */
    char job_id[PF_STATEFILE_ID_MAX];
    enum pf_statefile_attempt_state state;
    float progress;                       /* 0..1 */
    char file_hex[65];                    /* the gcode blob's digest, "" if unknown */
    int64_t started_unix_ms;              /* 0 = not yet */
    int64_t ended_unix_ms;                /* 0 = not yet */
    char reason[PF_STATEFILE_REASON_MAX]; /* why it failed or was cancelled */
};

struct pf_statefile_done {
    char id[PF_STATEFILE_ID_MAX];
    enum pf_statefile_attempt_state state; /* SUCCEEDED, FAILED or CANCELLED */
};

struct pf_statefile_event {
    uint64_t seq;
    int type;
    size_t len;
    uint8_t data[PF_STATEFILE_EVENT_MAX];
};

/* The whole file. About 20 KiB: allocate it, do not put it on a stack. */
struct pf_statefile {
    uint64_t last_seq;
    bool bed_clear;
    struct pf_statefile_attempt current;
    size_t done_count; /* newest last */
    struct pf_statefile_done done[PF_STATEFILE_DONE_MAX];
    size_t event_count; /* oldest first, seqs increasing */
    struct pf_statefile_event events[PF_STATEFILE_EVENTS_MAX];
};

/* An empty state: no attempt, seq 0, bed clear. */
void pf_statefile_init(struct pf_statefile *st);

/* Appends the text form of st to out. PF_E_INVALID when a field breaks a
 * rule the parser enforces (an id with no characters but a state, a state
 * out of range, too many entries), so nothing unreadable is ever written. */
enum pf_status pf_statefile_format(const struct pf_statefile *st, struct pf_buf *out,
                                   struct pf_error *err) PF_MUST_CHECK;
/* Parses text[0..len) into *st (overwritten). PF_E_DATA_LOSS with "line N:
 * what" for anything malformed, unknown, out of range or cut short. Pure. */
enum pf_status pf_statefile_parse(const char *text, size_t len, struct pf_statefile *st,
                                  struct pf_error *err) PF_MUST_CHECK;

/* Reads path. PF_E_NOT_FOUND (and *st empty) when it does not exist;
 * PF_E_DATA_LOSS naming the file when it is corrupt; PF_E_IO when it cannot
 * be read. */
enum pf_status pf_statefile_read(const char *path, struct pf_statefile *st,
                                 struct pf_error *err) PF_MUST_CHECK;
/* Writes st to path atomically (see above). */
enum pf_status pf_statefile_write(const char *path, const struct pf_statefile *st,
                                  struct pf_error *err) PF_MUST_CHECK;

/* Replaces path with text[0..len) atomically and durably: path.tmp, fsync,
 * rename, fsync of the directory. For other small files of the agent too. */
enum pf_status pf_statefile_write_atomic(const char *path, const void *text, size_t len,
                                         struct pf_error *err) PF_MUST_CHECK;
/* Reads a whole small file (at most max bytes) into a new NUL-terminated
 * buffer (*out, free() it). PF_E_NOT_FOUND when absent, PF_E_RESOURCE when
 * larger than max. */
enum pf_status pf_statefile_slurp(const char *path, size_t max, char **out, size_t *len,
                                  struct pf_error *err) PF_MUST_CHECK;

/* Records that the current attempt ended: moves it into done (dropping the
 * oldest when full) while keeping it as current, so Hello still reports it. */
void pf_statefile_remember_done(struct pf_statefile *st);
/* The state of attempt id if it is current or remembered as done, else
 * PF_ATTEMPT_NONE. */
enum pf_statefile_attempt_state pf_statefile_lookup(const struct pf_statefile *st, const char *id);

/* "starting", "printing", "succeeded", ...; "none" for PF_ATTEMPT_NONE. */
const char *pf_statefile_state_name(enum pf_statefile_attempt_state s);

#endif
