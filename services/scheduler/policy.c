/* The failure policy (see policy.h for the rules). The history is an
 * unsorted array, and nothing here allocates: counting distinct printers
 * compares each failure with the earlier ones, and walking a printer's attempts
 * from the latest back repeatedly selects the greatest (time, position) below
 * the previous one, which costs O(n) per step for the few steps a streak
 * takes. */
#include "policy.h"

void pf_policy_limits_init(struct pf_policy_limits *l)
{
    l->max_attempts_per_printer = PF_POLICY_DEFAULT_MAX_ATTEMPTS_PER_PRINTER;
    l->max_printers = PF_POLICY_DEFAULT_MAX_PRINTERS;
    l->quarantine_after = PF_POLICY_DEFAULT_QUARANTINE_AFTER;
}

struct pf_policy_limits pf_policy_limits_for_job(const struct pf_policy_limits *farm,
                                                 uint32_t job_max_attempts_per_printer,
                                                 uint32_t job_max_printers)
{
    struct pf_policy_limits l = *farm;
    if (job_max_attempts_per_printer != 0)
        l.max_attempts_per_printer = job_max_attempts_per_printer;
    if (job_max_printers != 0)
        l.max_printers = job_max_printers;
    return l;
}

static bool is_failure_of(const struct pf_policy_attempt *a, uint32_t job)
{
    return a->job == job && a->result == PF_POLICY_FAILED;
}

static uint32_t failures_on(const struct pf_policy_attempt *h, size_t n, uint32_t job,
                            uint32_t printer)
{
    uint32_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (is_failure_of(&h[i], job) && h[i].printer == printer)
            count++;
    return count;
}

/* True when record i is the first failure of job on its printer. */
static bool first_failure_on_printer(const struct pf_policy_attempt *h, size_t i, uint32_t job)
{
    for (size_t k = 0; k < i; k++)
        if (is_failure_of(&h[k], job) && h[k].printer == h[i].printer)
            return false;
    return true;
}

bool pf_policy_job_excluded(const struct pf_policy_attempt *h, size_t n,
                            const struct pf_policy_limits *l, uint32_t job, uint32_t printer)
{
    if (l->max_attempts_per_printer == 0)
        return false;
    return failures_on(h, n, job, printer) >= l->max_attempts_per_printer;
}

bool pf_policy_job_failed(const struct pf_policy_attempt *h, size_t n,
                          const struct pf_policy_limits *l, uint32_t job)
{
    if (l->max_printers == 0)
        return false;
    uint32_t printers = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_failure_of(&h[i], job) || !first_failure_on_printer(h, i, job))
            continue;
        if (++printers >= l->max_printers)
            return true;
    }
    return false;
}

enum pf_status pf_policy_excluded_printers(const struct pf_policy_attempt *h, size_t n,
                                           const struct pf_policy_limits *l, uint32_t job,
                                           uint32_t *out, size_t cap, size_t *n_out,
                                           struct pf_error *err)
{
    *n_out = 0;
    if (l->max_attempts_per_printer == 0)
        return PF_OK;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_failure_of(&h[i], job) || !first_failure_on_printer(h, i, job) ||
            failures_on(h, n, job, h[i].printer) < l->max_attempts_per_printer)
            continue;
        if (count == cap) {
            *n_out = count;
            return pf_error_set(err, PF_E_RESOURCE,
                                "job %u is excluded from more than %zu printers", job, cap);
        }
        /* insert in order; each printer arrives once (its first failure) */
        size_t k = count++;
        while (k > 0 && out[k - 1] > h[i].printer) {
            out[k] = out[k - 1];
            k--;
        }
        out[k] = h[i].printer;
        *n_out = count;
    }
    return PF_OK;
}

/* (time, position) order: true when record a (at ia) is later than b (at ib). */
static bool later(const struct pf_policy_attempt *h, size_t ia, size_t ib)
{
    return h[ia].time > h[ib].time || (h[ia].time == h[ib].time && ia > ib);
}

static bool decided(enum pf_policy_result r)
{
    return r == PF_POLICY_SUCCEEDED || r == PF_POLICY_FAILED;
}

/* The latest decided attempt of printer earlier than record `before` (SIZE_MAX:
 * no bound); SIZE_MAX when there is none. */
static size_t previous_decided(const struct pf_policy_attempt *h, size_t n, uint32_t printer,
                               size_t before)
{
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (h[i].printer != printer || !decided(h[i].result))
            continue;
        if (before != SIZE_MAX && !later(h, before, i))
            continue;
        if (best == SIZE_MAX || later(h, i, best))
            best = i;
    }
    return best;
}

/* The streak, stopping early once it reaches limit (0: no limit) or
 * PF_POLICY_STREAK_MAX. */
static uint32_t streak(const struct pf_policy_attempt *h, size_t n, uint32_t printer,
                       uint32_t limit)
{
    uint32_t jobs[PF_POLICY_STREAK_MAX];
    uint32_t count = 0;
    size_t cur = SIZE_MAX;
    if (limit == 0 || limit > PF_POLICY_STREAK_MAX)
        limit = PF_POLICY_STREAK_MAX;
    while (count < limit) {
        cur = previous_decided(h, n, printer, cur);
        if (cur == SIZE_MAX || h[cur].result != PF_POLICY_FAILED)
            break;
        for (uint32_t k = 0; k < count; k++)
            if (jobs[k] == h[cur].job)
                return count;
        jobs[count++] = h[cur].job;
    }
    return count;
}

uint32_t pf_policy_printer_streak(const struct pf_policy_attempt *h, size_t n, uint32_t printer)
{
    return streak(h, n, printer, 0);
}

bool pf_policy_printer_quarantined(const struct pf_policy_attempt *h, size_t n,
                                   const struct pf_policy_limits *l, uint32_t printer)
{
    if (l->quarantine_after == 0)
        return false;
    uint32_t limit =
        l->quarantine_after < PF_POLICY_STREAK_MAX ? l->quarantine_after : PF_POLICY_STREAK_MAX;
    return streak(h, n, printer, limit) >= limit;
}
