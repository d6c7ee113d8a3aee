/* The failure policy of pf-scheduler, pure and free of I/O: from the attempt
 * history it decides whom to blame when prints fail. A job that failed
 * max_attempts_per_printer times on one printer is excluded from that printer;
 * a job that failed on max_printers distinct printers is failed (blame the
 * print); a printer whose last quarantine_after decided attempts all failed,
 * each of a different job, is quarantined (blame the printer). Only
 * PF_POLICY_FAILED counts as a failure. A success ends a printer's streak;
 * cancelled, lost and unfinished attempts are neutral: they neither count nor
 * break a streak, since neither the print nor the printer is to blame.
 *
 * Every function takes the history as an array of records in any order (the
 * latest is the one with the greatest time, ties broken by the later array
 * position), borrows it for the call, allocates nothing and is thread-safe.
 * The job functions look only at records of that job and the printer
 * functions only at records of that printer, so the caller may pass either the
 * farm's whole recent history or just the rows of one job or printer. The
 * cost is O(n * k) for n records and k matching ones (or k streak steps),
 * meant for the tens or hundreds of rows one job or printer has. */
#ifndef PF_POLICY_H
#define PF_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define PF_POLICY_DEFAULT_MAX_ATTEMPTS_PER_PRINTER 1
#define PF_POLICY_DEFAULT_MAX_PRINTERS             2
#define PF_POLICY_DEFAULT_QUARANTINE_AFTER         3
#define PF_POLICY_STREAK_MAX                       1024 /* streaks saturate here */

/* How an attempt ended, numbered as printfarm.v1.AttemptState so the caller
 * may cast. */
enum pf_policy_result {
    PF_POLICY_DISPATCHED = 1,
    PF_POLICY_PRINTING = 2,
    PF_POLICY_SUCCEEDED = 3,
    PF_POLICY_FAILED = 4,
    PF_POLICY_CANCELLED = 5,
    PF_POLICY_LOST = 6,
};

/* One attempt: the caller's numbers for the job and the printer, how it
 * ended, and when (any monotonic unit, e.g. epoch milliseconds of its end). */
struct pf_policy_attempt {
    uint32_t job;
    uint32_t printer;
    enum pf_policy_result result;
    int64_t time;
};

/* Limits in effect. In resolved limits a 0 disables its rule (never exclude,
 * never fail, never quarantine). */
struct pf_policy_limits {
    uint32_t max_attempts_per_printer;
    uint32_t max_printers;
    uint32_t quarantine_after;
};

/* Fills l with the defaults: 1, 2, 3. */
void pf_policy_limits_init(struct pf_policy_limits *l);

/* The limits for one job: the farm's, with the job's own
 * max_attempts_per_printer and max_printers where they are not 0 (0 on a job
 * means "the farm default", as in SubmitJob). */
struct pf_policy_limits pf_policy_limits_for_job(const struct pf_policy_limits *farm,
                                                 uint32_t job_max_attempts_per_printer,
                                                 uint32_t job_max_printers);

/* True when job has failed at least l->max_attempts_per_printer times on
 * printer, so the dispatcher must not give it that printer again. */
bool pf_policy_job_excluded(const struct pf_policy_attempt *h, size_t n,
                            const struct pf_policy_limits *l, uint32_t job, uint32_t printer);

/* True when job has failed on at least l->max_printers distinct printers (a
 * failed attempt on each, whatever max_attempts_per_printer allows): the job
 * is to be marked failed. */
bool pf_policy_job_failed(const struct pf_policy_attempt *h, size_t n,
                          const struct pf_policy_limits *l, uint32_t job);

/* The printers job is excluded from, ascending and without repeats, as the
 * dispatcher wants them (pf_dispatch_job.excluded). out has room for cap
 * entries; *n_out is set to the number written. PF_E_RESOURCE when more than
 * cap printers are excluded (*n_out is then cap and the list truncated). */
enum pf_status pf_policy_excluded_printers(const struct pf_policy_attempt *h, size_t n,
                                           const struct pf_policy_limits *l, uint32_t job,
                                           uint32_t *out, size_t cap, size_t *n_out,
                                           struct pf_error *err) PF_MUST_CHECK;

/* The printer's current streak: walking its decided attempts (succeeded or
 * failed) from the latest back, the number of failures before the first
 * success or the first job already counted, at most PF_POLICY_STREAK_MAX.
 * This is the quarantine counter (Printer.consecutive_failures). */
uint32_t pf_policy_printer_streak(const struct pf_policy_attempt *h, size_t n, uint32_t printer);

/* True when the printer's last l->quarantine_after decided attempts all
 * failed and were of pairwise different jobs, i.e. its streak reached
 * quarantine_after (a limit over PF_POLICY_STREAK_MAX acts as that maximum). A job failing again
 * and again on one printer never quarantines it (that blames the print). */
bool pf_policy_printer_quarantined(const struct pf_policy_attempt *h, size_t n,
                                   const struct pf_policy_limits *l, uint32_t printer);

#endif
