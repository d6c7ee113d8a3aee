/* The dispatch solver of pf-scheduler, pure and free of I/O: from a snapshot of
 * the farm (printers, jobs, the exclusions the failure policy decided, and the
 * time) it computes one round of assignments job -> printer. It keeps no state
 * between rounds; the scheduler decides when a round runs (a printer became
 * ready, jobs changed, a timer) and writes the attempts it returns. Strings
 * never reach it: the caller interns materials, colours, labels, profiles,
 * queues and digests to small integers while it reads the SQL rows, so every
 * hard constraint is an integer comparison or a bitset test.
 *
 * Hard constraints (all must hold for a job to start on a printer): the
 * printer is connected, idle, its bed confirmed clear, not quarantined, and
 * serves the job's queue; the job is queued with copies left (count -
 * succeeded - in_flight > 0); the job's allowed profiles (if any) include the
 * printer's profile and its bundle has a file for that profile; the printer
 * carries every label the job requires; each material requirement is met by
 * a distinct extruder (the named one, or any one when the job names none);
 * the printer is not in the job's exclusion list; and, when the printer needs
 * hands to clear its bed, the print (estimated from that profile's file) ends
 * inside one of the printer's availability windows.
 *
 * Cost model: every feasible pair (job j, printer p) costs, in points where
 * one point is about one second of waiting,
 *
 *   cost = age(j) + material(j,p) + file(j,p) + failures(p) + queue(j,p)
 *
 *   age       bucket * (cap - min(cap, floor((now - created_at) / bucket))):
 *             older is cheaper, in whole buckets (age_bucket_seconds,
 *             default 10 minutes) up to age_cap_buckets (default 7 days);
 *   material  material_change_cost (default 3600, an hour of waiting) when
 *             the job's material differs from the printer's last-used one
 *             (type or colour; an unknown side never differs);
 *   file      file_missing_cost (default 600) unless the printer's cache
 *             holds the job's file for its profile;
 *   failures  failure_cost (default 1800) * min(recent_failures, failures_cap);
 *   queue     queue_weight_cost (default 3600) * (wmax - w) / wmax, where w is
 *             the printer's weight for the job's queue and wmax its largest
 *             weight: a printer leans towards the queues it serves most.
 *
 * Priority is not a cost but a strict order: jobs are split into bands of
 * equal priority, solved from the highest band down, and only printers left
 * free by one band enter the next, so a lower-priority job never takes a
 * printer that a higher-priority job could use in the same round. Inside a
 * band the solver computes a minimum-cost maximum-cardinality matching (a job
 * with k copies left takes up to k printers): as many printers as possible
 * get work, and among those matchings the total cost is least. It is the
 * Hungarian method as successive shortest paths: one Dijkstra search with
 * potentials per node of the scarcer side (per printer, or per job copy when
 * the band has fewer copies than free printers), each node also owning a
 * "stay idle" edge of prohibitive cost. Cost ties go to the older job. Age
 * counts in whole buckets so that jobs submitted minutes apart are equal on
 * age and the other terms (material, cache) decide between them.
 *
 * Approximation, stated honestly: the matching is exact over a candidate
 * graph, not over every feasible pair. Jobs with identical constraints are
 * grouped into classes, so feasibility is computed per (class, printer); then
 * each printer lists up to `candidates` jobs (K, default 12): its
 * `shared_candidates` cheapest (K0, default 3), then its cheapest jobs that
 * fewer than `spread` * copies printers have listed so far (default K - K0,
 * so that a thousand identical printers form groups of about K - K0 sharing
 * as many jobs, rather than all naming the same few), then, if it still has
 * room, its cheapest remaining ones; plus up to K feasible jobs whose file it
 * already caches. Printers with the fewest feasible classes list first. When
 * every printer has at most K feasible jobs in a band the result is the exact
 * optimum; on the benchmark farm (bench/dispatch_bench.c) the default graph
 * costs under 0.1% more than one of K = 1024. Whatever K, a repair pass then
 * searches augmenting paths over the full feasibility graph of the band, so
 * no printer is left idle that a job of the band could use, directly or by
 * moving other printers of the band (those repairs add printers without
 * re-optimising cost; stats.repaired counts them).
 *
 * Ownership and threads: input structs and the arrays they point to are
 * borrowed for the duration of a call. A struct pf_dispatch is a heap handle
 * holding reusable scratch memory and the last round's output; use it from
 * one thread at a time (one per thread for parallel solves). */
#ifndef PF_DISPATCH_H
#define PF_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define PF_DISPATCH_EXTRUDERS_MAX    8   /* extruders (tools) of one printer */
#define PF_DISPATCH_REQUIREMENTS_MAX 8   /* material requirements of one job */
#define PF_DISPATCH_QUEUES_MAX       16  /* queues one printer serves */
#define PF_DISPATCH_BITS_MAX         256 /* label ids and profile ids are below this */
#define PF_DISPATCH_QUEUE_WEIGHT_MAX 1000
#define PF_DISPATCH_PRINTERS_MAX     (1u << 20)
#define PF_DISPATCH_JOBS_MAX         (1u << 24)
#define PF_DISPATCH_TIME_MAX         ((int64_t)1 << 40) /* |epoch seconds|, ~35,000 years */
#define PF_DISPATCH_ANY_EXTRUDER     0xff               /* a requirement any extruder may meet */
#define PF_DISPATCH_NO_FILE          0u                 /* digest id: no file for this profile */

/* A set of small ids (labels, profiles). Zero-initialise, then set bits. */
struct pf_dispatch_bits {
    uint64_t w[PF_DISPATCH_BITS_MAX / 64];
};

/* Adds id to b. An id at or above PF_DISPATCH_BITS_MAX is ignored, which
 * would silently drop a constraint: the caller's interner must refuse to hand
 * out such ids. */
static inline void pf_dispatch_bits_set(struct pf_dispatch_bits *b, unsigned id)
{
    if (id < PF_DISPATCH_BITS_MAX)
        b->w[id / 64] |= (uint64_t)1 << (id % 64);
}

/* True when id is in b. */
static inline bool pf_dispatch_bits_test(const struct pf_dispatch_bits *b, unsigned id)
{
    return id < PF_DISPATCH_BITS_MAX && (b->w[id / 64] >> (id % 64) & 1) != 0;
}

/* A material type and colour, interned by the caller case-insensitively
 * ("PLA", "#000000"); 0 means unknown, or "any" in a requirement. */
struct pf_dispatch_material {
    uint16_t material;
    uint16_t colour;
};

/* One material a job needs loaded: on the named extruder (tool number, T0 =
 * 0), or on any extruder with PF_DISPATCH_ANY_EXTRUDER. A 0 material or colour
 * matches anything. Each requirement of a job takes its own extruder. */
struct pf_dispatch_requirement {
    uint8_t extruder;
    struct pf_dispatch_material want;
};

/* A queue a printer serves, and its weight 1..PF_DISPATCH_QUEUE_WEIGHT_MAX. */
struct pf_dispatch_queue_weight {
    uint32_t queue;
    uint32_t weight;
};

/* A time an operator is around, [start, end) in epoch seconds. The caller
 * expands the printer's weekly windows into these for the next few days. */
struct pf_dispatch_window {
    int64_t start;
    int64_t end;
};

/* One printer, as one row of the printers table plus its live state. */
struct pf_dispatch_printer {
    uint32_t id;      /* the caller's number for it; job exclusions name it */
    uint16_t profile; /* below pf_dispatch_input.n_profiles */
    bool connected;   /* an agent stream is up */
    bool idle;        /* not printing, paused or in error */
    bool bed_clear;   /* false while awaiting_clear */
    bool quarantined;
    bool needs_hands; /* prints are removed by hand: windows apply */
    uint8_t n_extruders;
    struct pf_dispatch_material extruders[PF_DISPATCH_EXTRUDERS_MAX]; /* loaded now */
    struct pf_dispatch_material last_material;                        /* of its last print */
    struct pf_dispatch_bits labels; /* see pf_dispatch_job.labels */
    uint8_t n_queues;
    struct pf_dispatch_queue_weight queues[PF_DISPATCH_QUEUES_MAX];
    uint32_t recent_failures;
    const uint32_t *cached; /* digest ids in its file cache, strictly ascending */
    size_t n_cached;
    /* Availability windows, consulted only when needs_hands. An empty list
     * means nobody is ever around, so nothing fits: a printer whose profile
     * needs hands but has no windows configured ("always available") must be
     * passed with needs_hands false. */
    const struct pf_dispatch_window *windows;
    size_t n_windows;
};

/* Job states, numbered as printfarm.v1.JobState so the caller may cast. Only
 * PF_DISPATCH_JOB_QUEUED is runnable. */
enum pf_dispatch_job_state {
    PF_DISPATCH_JOB_QUEUED = 1,
    PF_DISPATCH_JOB_HELD = 2,
    PF_DISPATCH_JOB_PRINTING = 3,
    PF_DISPATCH_JOB_DONE = 4,
    PF_DISPATCH_JOB_FAILED = 5,
    PF_DISPATCH_JOB_CANCELLED = 6,
};

/* The file a job's bundle holds for one profile: its interned digest
 * (PF_DISPATCH_NO_FILE when the bundle has none for that profile) and the
 * slicer's estimated print time. An estimate of 0 (unknown) never fits an
 * availability window; the caller may substitute a default. */
struct pf_dispatch_file {
    uint32_t digest;
    uint32_t est_seconds;
};

/* One job, as one row of the jobs table joined with its bundle's files. */
struct pf_dispatch_job {
    uint32_t queue;
    int32_t priority;   /* higher runs first */
    int64_t created_at; /* epoch seconds; ties go to the lower index */
    enum pf_dispatch_job_state state;
    uint32_t count;
    uint32_t succeeded;
    uint32_t in_flight; /* attempts dispatched or printing */
    uint8_t n_requirements;
    struct pf_dispatch_requirement requirements[PF_DISPATCH_REQUIREMENTS_MAX];
    struct pf_dispatch_material material; /* what it prints with, for the change cost */
    /* Labels the printer must carry. The caller interns one id per required
     * "key=value" (or "key" alone when the value is empty) and sets on each
     * printer the ids of both its "key=value" and its "key". */
    struct pf_dispatch_bits labels;
    struct pf_dispatch_bits profiles;     /* allowed profiles; empty allows all */
    const struct pf_dispatch_file *files; /* n_profiles entries, by profile id */
    const uint32_t *excluded;             /* printer ids, strictly ascending */
    size_t n_excluded;
};

/* One round's snapshot. */
struct pf_dispatch_input {
    int64_t now;       /* epoch seconds */
    size_t n_profiles; /* at most PF_DISPATCH_BITS_MAX */
    const struct pf_dispatch_printer *printers;
    size_t n_printers;
    const struct pf_dispatch_job *jobs;
    size_t n_jobs;
};

/* Tuning; see the cost model above. Start from pf_dispatch_params_init and
 * change what you need. */
struct pf_dispatch_params {
    uint32_t candidates;           /* K, default 12 */
    uint32_t shared_candidates;    /* K0, default 3 */
    uint32_t spread;               /* default (0): candidates - shared_candidates */
    uint32_t age_bucket_seconds;   /* default 600 */
    uint32_t age_cap_buckets;      /* default 1008 */
    uint32_t material_change_cost; /* default 3600 */
    uint32_t file_missing_cost;    /* default 600 */
    uint32_t failure_cost;         /* default 1800 */
    uint32_t failures_cap;         /* default 5 */
    uint32_t queue_weight_cost;    /* default 3600 */
};

/* One decision: start a copy of jobs[job] on printers[printer]. */
struct pf_dispatch_assignment {
    uint32_t job;     /* index into pf_dispatch_input.jobs */
    uint32_t printer; /* index into pf_dispatch_input.printers */
    int64_t cost;     /* as pf_dispatch_cost */
};

/* What a round did, for logs and metrics. */
struct pf_dispatch_stats {
    size_t runnable_jobs;
    size_t usable_printers;
    size_t bands;      /* priority bands solved (stops when printers run out) */
    size_t classes;    /* job classes over the bands solved */
    size_t candidates; /* edges of the candidate graphs */
    size_t repaired;   /* assignments added by the repair pass */
    size_t searched;   /* nodes settled by the matching's searches: its work */
};

/* One round's result. assignments points into the solver: it stays valid
 * until the next pf_dispatch_solve or pf_dispatch_destroy on that solver. The
 * higher bands come first; each printer appears at most once and each job at
 * most its remaining copies times. */
struct pf_dispatch_output {
    const struct pf_dispatch_assignment *assignments;
    size_t n_assignments;
    struct pf_dispatch_stats stats;
};

/* Why a pair cannot be assigned (pf_dispatch_check), first failing rule. */
enum pf_dispatch_verdict {
    PF_DISPATCH_FEASIBLE = 0,
    PF_DISPATCH_PRINTER_OFFLINE,
    PF_DISPATCH_PRINTER_BUSY,
    PF_DISPATCH_BED_NOT_CLEAR,
    PF_DISPATCH_PRINTER_QUARANTINED,
    PF_DISPATCH_JOB_NOT_QUEUED,
    PF_DISPATCH_NO_COPIES_LEFT,
    PF_DISPATCH_QUEUE_NOT_SERVED,
    PF_DISPATCH_PROFILE_NOT_ALLOWED,
    PF_DISPATCH_NO_FILE_FOR_PROFILE,
    PF_DISPATCH_LABEL_MISSING,
    PF_DISPATCH_MATERIAL_MISSING,
    PF_DISPATCH_EXCLUDED,
    PF_DISPATCH_OUTSIDE_WINDOW,
    PF_DISPATCH_VERDICT_COUNT
};

/* The solver: opaque, see pf_dispatch_create. */
struct pf_dispatch;

/* Fills p with every default. */
void pf_dispatch_params_init(struct pf_dispatch_params *p);

/* Creates a solver. params may be NULL (defaults); it is copied.
 * PF_E_INVALID when a parameter is out of range: candidates must be in
 * 1..1024, shared_candidates at most candidates, age_bucket_seconds not 0, and
 * the largest possible pair cost below 2^31. PF_E_RESOURCE when memory runs
 * out. On success *out is owned by the caller,
 * freed by pf_dispatch_destroy; on failure *out is NULL. */
enum pf_status pf_dispatch_create(const struct pf_dispatch_params *params, struct pf_dispatch **out,
                                  struct pf_error *err) PF_MUST_CHECK;

/* Frees the solver and the last output. NULL is a no-op. */
void pf_dispatch_destroy(struct pf_dispatch *d);

/* Checks that in is well formed: counts within the limits above, non-NULL
 * arrays where counts are non-zero, ids in range, times within
 * PF_DISPATCH_TIME_MAX, cached and excluded lists strictly ascending, windows
 * not ending before they start, queue weights in
 * 1..PF_DISPATCH_QUEUE_WEIGHT_MAX. Files are checked for runnable jobs only,
 * so rows of held or finished jobs may leave files NULL. PF_E_INVALID names
 * the first field at fault ("jobs[12].excluded is not strictly ascending at
 * entry 3"). */
enum pf_status pf_dispatch_validate(const struct pf_dispatch_input *in,
                                    struct pf_error *err) PF_MUST_CHECK;

/* Computes one round: validates in (as pf_dispatch_validate), then fills *out
 * (see struct pf_dispatch_output for how long it lives). Deterministic: the
 * same input gives the same output. PF_E_INVALID for a malformed input,
 * PF_E_RESOURCE when memory runs out or a band is too large for the cost
 * range; *out is then empty. Per band the work is about J + P * C class tests
 * + P * K log C for listing + one search per printer (or copy), for J jobs, P
 * free printers and C job classes; a search usually stops after a few nodes,
 * but when many printers compete for the same jobs it can visit the whole
 * matched part of the graph. The solver keeps its scratch memory between
 * rounds. */
enum pf_status pf_dispatch_solve(struct pf_dispatch *d, const struct pf_dispatch_input *in,
                                 struct pf_dispatch_output *out,
                                 struct pf_error *err) PF_MUST_CHECK;

/* The hard constraints of one pair, for tests and for telling an operator why
 * a job waits: PF_DISPATCH_FEASIBLE or the first rule broken, in the order of
 * enum pf_dispatch_verdict. in must be valid and the indices in range. */
enum pf_dispatch_verdict pf_dispatch_check(const struct pf_dispatch_input *in, size_t job,
                                           size_t printer);

/* The cost of a pair under params (NULL: defaults; otherwise valid as
 * pf_dispatch_create requires), whether feasible or not; the solver reports
 * exactly this for each assignment. */
int64_t pf_dispatch_cost(const struct pf_dispatch_params *params,
                         const struct pf_dispatch_input *in, size_t job, size_t printer);

/* A stable lower-case name for a verdict ("outside_window"), for logs. */
const char *pf_dispatch_verdict_name(enum pf_dispatch_verdict v);

#endif
