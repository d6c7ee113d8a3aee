/* Pure checks and decisions of the scheduler's API (api.c, and the request
 * of WatchEvents in events.c and the hello of Connect in agents.c): request
 * validation with messages that name the field and the value, the opaque page
 * tokens of ListJobs / ListPrinters, and the state a job or printer is shown
 * in. Nothing here does I/O, takes a lock or allocates, so every rule is unit
 * tested on its own (tests/unit/test_sched_validate.c) and api.c can run the
 * checks on the completion-queue thread before any work is queued.
 *
 * Every check returns PF_OK or PF_E_INVALID (INVALID_ARGUMENT) with a
 * lower-case message that names the field and quotes (a prefix of) the bad
 * value. Requests are borrowed for the call; the functions are thread-safe. */
#ifndef PF_SCHED_VALIDATE_H
#define PF_SCHED_VALIDATE_H

#include <stdbool.h>
#include <stdint.h>
#include "printfarm/v1/files.pb-c.h"
#include "printfarm/v1/scheduler.pb-c.h"
#include "status.h"

/* Limits of the API, as documented in scheduler.proto and the issue. */
#define PF_SCHED_QUEUE_NAME_MAX      64
#define PF_SCHED_JOB_NAME_MAX        200
#define PF_SCHED_COUNT_MAX           10000
#define PF_SCHED_PRIORITY_MIN        (-1000)
#define PF_SCHED_PRIORITY_MAX        1000
#define PF_SCHED_REQUIREMENTS_MAX    8
#define PF_SCHED_EXTRUDERS_MAX       8
#define PF_SCHED_MATERIAL_MAX        64 /* material and colour names */
#define PF_SCHED_PROFILES_MAX        16
#define PF_SCHED_PROFILE_NAME_MAX    64
#define PF_SCHED_LABELS_MAX          32
#define PF_SCHED_LABEL_KEY_MAX       64
#define PF_SCHED_LABEL_VALUE_MAX     256
#define PF_SCHED_IDEMPOTENCY_KEY_MAX 128
#define PF_SCHED_POLICY_MAX          100 /* max_attempts_per_printer, max_printers */
#define PF_SCHED_REASON_MAX          500
#define PF_SCHED_PRINTER_QUEUES_MAX  16
#define PF_SCHED_QUEUE_WEIGHT_MAX    1000
#define PF_SCHED_WINDOWS_MAX         32
#define PF_SCHED_UTC_OFFSET_MAX      840 /* minutes: ±14 h */
#define PF_SCHED_MINUTES_PER_DAY     1440
#define PF_SCHED_PAGE_SIZE_DEFAULT   100
#define PF_SCHED_PAGE_SIZE_MAX       1000
#define PF_SCHED_STATE_FILTER_MAX    32  /* entries in a states filter */
#define PF_SCHED_ATTEMPTS_SHOWN      100 /* GetJob: newest attempts returned */
#define PF_SCHED_DEFAULT_QUEUE       "default"
#define PF_SCHED_TEXT_ID_MAX         127 /* bytes of a job or attempt id */
#define PF_SCHED_PRINTER_NAME_MAX    64  /* printer ids: [A-Za-z0-9._-], as agents choose them */
#define PF_SCHED_PAGE_TOKEN_MAX      (2 * (1 + 8 + 8 + 1 + PF_SCHED_TEXT_ID_MAX + 4) + 1)
#define PF_SCHED_WATCH_KINDS_MAX     64  /* entries in a WatchEvents kinds filter */
#define PF_SCHED_WATCH_FILTER_ID_MAX 127 /* bytes of a WatchEvents job_id/printer_id filter */

/* ---- building blocks (exported for the unit tests and api.c) ---- */

/* True when text is well-formed UTF-8 with no control characters (C0, DEL,
 * C1). NULL counts as empty, which is printable. */
bool pf_sched_text_printable(const char *text);

/* A free-text field: at most max bytes, printable UTF-8, and non-empty unless
 * allow_empty. field names it in the message ("name", "reason"). */
enum pf_status pf_sched_check_text(const char *text, const char *field, size_t max,
                                   bool allow_empty, struct pf_error *err) PF_MUST_CHECK;

/* A queue name: 1..64 characters of [A-Za-z0-9._-]. */
enum pf_status pf_sched_check_queue_name(const char *queue, const char *field,
                                         struct pf_error *err) PF_MUST_CHECK;

/* An id of a job or attempt as a request names it: non-empty, at most
 * PF_SCHED_TEXT_ID_MAX bytes, printable UTF-8. Whether it exists is the
 * database's answer (NOT_FOUND), not this one's. */
enum pf_status pf_sched_check_id(const char *id, const char *field,
                                 struct pf_error *err) PF_MUST_CHECK;

/* A printer id: 1..64 characters of [A-Za-z0-9._-] (what an agent may use). */
enum pf_status pf_sched_check_printer_id(const char *id, const char *field,
                                         struct pf_error *err) PF_MUST_CHECK;

/* A printer profile name (a hello's profile, a constraint's profile): 1..64
 * characters of [A-Za-z0-9._-]. */
enum pf_status pf_sched_check_profile_name(const char *profile, const char *field,
                                           struct pf_error *err) PF_MUST_CHECK;

/* A bundle digest: present, exactly 64 lower-case hex characters. */
enum pf_status pf_sched_check_digest(const Printfarm__V1__Digest *d, const char *field,
                                     struct pf_error *err) PF_MUST_CHECK;

/* Job constraints (NULL is "no constraints"): at most 8 material requirements
 * with extruder < 8 and material/colour of at most 64 printable bytes, not
 * both empty unless an extruder is named; at most 16 distinct profiles of
 * [A-Za-z0-9._-]{1,64}; at most 32 printer labels with non-empty keys. field
 * prefixes the messages ("constraints"). */
enum pf_status pf_sched_check_constraints(const Printfarm__V1__JobConstraints *c, const char *field,
                                          struct pf_error *err) PF_MUST_CHECK;

/* ---- one check per request ---- */

/* SubmitJob: queue (empty means the default), name, bundle, count 1..10000,
 * priority -1000..1000, constraints, idempotency_key <= 128 bytes, failure
 * policy 0 (farm default) or 1..100. */
enum pf_status pf_sched_check_submit(const Printfarm__V1__SubmitJobRequest *req,
                                     struct pf_error *err) PF_MUST_CHECK;

/* SubmitJob against the bundle read from pf-files: every profile the
 * constraints list must have a file in the bundle (PF_E_INVALID naming the
 * profile and the profiles the bundle has). */
enum pf_status pf_sched_check_profiles_in_bundle(const Printfarm__V1__JobConstraints *c,
                                                 const Printfarm__V1__Bundle *bundle,
                                                 struct pf_error *err) PF_MUST_CHECK;

/* The job name to store: the request's name, else the bundle's name when it
 * is a valid job name, else "bundle " + the first 12 hex of the digest. out
 * must hold PF_SCHED_JOB_NAME_MAX + 1 bytes. */
void pf_sched_job_name(const char *requested, const char *bundle_name, const char *bundle_hex,
                       char *out);

enum pf_status pf_sched_check_get_job(const Printfarm__V1__GetJobRequest *req,
                                      struct pf_error *err) PF_MUST_CHECK;

/* ListJobs: queue (empty or a valid name), states 1..6 (at most 32 entries),
 * page_size <= 1000. The page token is checked by pf_sched_page_token_decode. */
enum pf_status pf_sched_check_list_jobs(const Printfarm__V1__ListJobsRequest *req,
                                        struct pf_error *err) PF_MUST_CHECK;

/* UpdateJob: a valid id and at least one field set; count 1..10000, priority
 * -1000..1000, name non-empty. Whether the count stays above the copies done
 * is pf_sched_check_new_count's business once the row is read. */
enum pf_status pf_sched_check_update_job(const Printfarm__V1__UpdateJobRequest *req,
                                         struct pf_error *err) PF_MUST_CHECK;

/* UpdateJob's count against the stored counters: PF_E_INVALID when the new
 * count is below succeeded + in_progress. */
enum pf_status pf_sched_check_new_count(const char *job_id, uint32_t count, int64_t succeeded,
                                        int64_t in_progress, struct pf_error *err) PF_MUST_CHECK;

enum pf_status pf_sched_check_cancel_job(const Printfarm__V1__CancelJobRequest *req,
                                         struct pf_error *err) PF_MUST_CHECK;

/* ListPrinters: queue, states 1..7, page_size, as ListJobs. */
enum pf_status pf_sched_check_list_printers(const Printfarm__V1__ListPrintersRequest *req,
                                            struct pf_error *err) PF_MUST_CHECK;

/* UpdatePrinter: a valid id and at least one group or release_quarantine;
 * materials (at most 8, extruder < 8 and not repeated, names <= 64), labels
 * (at most 32, keys non-empty, <= 64 and not repeated, values <= 256), queues
 * (at most 16 valid, distinct names with weight 1..1000), windows (at most 32;
 * days 1..7, start 0..1439, end 1..1440 and not equal to start, offset
 * -840..840). */
enum pf_status pf_sched_check_update_printer(const Printfarm__V1__UpdatePrinterRequest *req,
                                             struct pf_error *err) PF_MUST_CHECK;

enum pf_status pf_sched_check_confirm_bed_clear(const Printfarm__V1__ConfirmBedClearRequest *req,
                                                struct pf_error *err) PF_MUST_CHECK;

/* WatchEvents: job_id and printer_id filters of at most 127 bytes (empty
 * means all), at most 64 kinds, each a known EventKind. On PF_OK *kinds (may
 * be NULL) is the filter as a bit mask, bit k for EventKind k (0 = all); on
 * error it is left unchanged. */
enum pf_status pf_sched_check_watch_events(const Printfarm__V1__WatchEventsRequest *req,
                                           uint64_t *kinds, struct pf_error *err) PF_MUST_CHECK;

/* True for an EventKind value the proto defines (UNSPECIFIED excluded). */
bool pf_sched_event_kind_known(int kind);

/* ---- paging ---- */

/* The page size to use: 0 means PF_SCHED_PAGE_SIZE_DEFAULT; above
 * PF_SCHED_PAGE_SIZE_MAX is PF_E_INVALID. */
enum pf_status pf_sched_page_size(uint32_t requested, uint32_t *out,
                                  struct pf_error *err) PF_MUST_CHECK;

/* A listing's states filter as a bit mask, bit s for state s; values outside
 * 1..31 are ignored (the checks refuse them before this is used). */
uint32_t pf_sched_state_mask(const int *states, size_t n);

/* A number that identifies one listing and its filter ("jobs", the queue and
 * the set of states as a bit mask 1 << state), so a token issued for one
 * filter is refused for another. */
uint64_t pf_sched_page_filter(const char *kind, const char *queue, uint32_t state_mask);

/* The position after the last row of a page: (time_us, id) for jobs (newest
 * first), (0, id) for printers (by id). */
struct pf_sched_page_key {
    int64_t time_us;
    char id[PF_SCHED_TEXT_ID_MAX + 1];
};

/* Writes the opaque token (lower-case hex, with a checksum) for key under
 * filter into out (PF_SCHED_PAGE_TOKEN_MAX bytes). */
void pf_sched_page_token_encode(uint64_t filter, const struct pf_sched_page_key *key, char *out);

/* Reads a token written by pf_sched_page_token_encode for the same filter.
 * PF_E_INVALID "page_token is not a token this server issued" for anything
 * malformed or corrupted, and "...for a different filter" when the filter
 * differs. An empty token is not valid here (it means "first page"). */
enum pf_status pf_sched_page_token_decode(const char *token, uint64_t filter,
                                          struct pf_sched_page_key *out,
                                          struct pf_error *err) PF_MUST_CHECK;

/* ---- states ---- */

/* The state a job is in after its counters or hold flag change: done when
 * succeeded >= count; otherwise held when held; otherwise printing when every
 * remaining copy has an attempt (succeeded + in_progress >= count); otherwise
 * queued. Finished states (done, failed, cancelled) are never left: pass them
 * as current and they come back unchanged. */
Printfarm__V1__JobState pf_sched_job_state_after(Printfarm__V1__JobState current, bool held,
                                                 int64_t count, int64_t succeeded,
                                                 int64_t in_progress);

/* True for done, failed and cancelled. */
bool pf_sched_job_state_finished(Printfarm__V1__JobState state);

/* The state ListPrinters shows: quarantined (stored) first; then offline when
 * no agent stream is connected; then the agent's printing, paused or error;
 * then awaiting_clear (stored); else idle. */
Printfarm__V1__PrinterState pf_sched_printer_state_shown(bool quarantined, bool connected,
                                                         Printfarm__V1__PrinterState live,
                                                         bool awaiting_clear);

#endif
