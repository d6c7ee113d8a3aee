/* Unit tests of the dispatch solver (services/scheduler/dispatch.c): every hard
 * constraint blocking a pair on its own, strict priority, age order, cases
 * where first-fit would leave a printer idle or pay more and the matching must
 * not, copies, windows, malformed input, and randomised farms checked against
 * a brute-force optimum. Every solve in this file is also checked by an
 * independent verifier: each assignment is feasible (pf_dispatch_check) and
 * priced as pf_dispatch_cost, no printer is used twice, no job beyond its
 * copies, and no band leaves a printer idle that one of its jobs could use
 * (no augmenting path over the full feasibility graph). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dispatch.h"
#include "policy.h"

#define NOW        ((int64_t)1700000000)
#define HOUR       3600
#define MAX_P      24
#define MAX_J      24
#define N_PROFILES 3

enum { PLA = 1, PETG = 2, ABS = 3 };
enum { BLACK = 1, WHITE = 2, RED = 3 };
enum { LABEL_ENCLOSURE = 0, LABEL_HARDENED = 1, LABEL_LAB_A = 2 };

struct farm {
    struct pf_dispatch_printer printers[MAX_P];
    struct pf_dispatch_job jobs[MAX_J];
    struct pf_dispatch_file files[MAX_J][N_PROFILES];
    uint32_t cached[MAX_P][8];
    uint32_t excluded[MAX_J][8];
    struct pf_dispatch_window windows[MAX_P][4];
    struct pf_dispatch_input in;
};

struct ctx {
    struct pf_dispatch *d;
    struct pf_dispatch_params params;
    struct farm f;
    struct pf_dispatch_output out;
};

/* ------------------------------------------------------------------ farm */

static void farm_init(struct farm *f)
{
    memset(f, 0, sizeof(*f));
    f->in.now = NOW;
    f->in.n_profiles = N_PROFILES;
    f->in.printers = f->printers;
    f->in.jobs = f->jobs;
}

/* A usable printer of the profile with PLA/black in T0, serving queue 0. */
static size_t add_printer(struct farm *f, uint16_t profile)
{
    size_t i = f->in.n_printers++;
    struct pf_dispatch_printer *p = &f->printers[i];
    memset(p, 0, sizeof(*p));
    p->id = 100 + (uint32_t)i;
    p->profile = profile;
    p->connected = p->idle = p->bed_clear = true;
    p->n_extruders = 1;
    p->extruders[0] = (struct pf_dispatch_material){PLA, BLACK};
    p->n_queues = 1;
    p->queues[0] = (struct pf_dispatch_queue_weight){0, 1000};
    p->cached = f->cached[i];
    p->windows = f->windows[i];
    return i;
}

/* A queued one-copy job in queue 0 with a 2-hour file for every profile. */
static size_t add_job(struct farm *f, int64_t created)
{
    size_t i = f->in.n_jobs++;
    struct pf_dispatch_job *j = &f->jobs[i];
    memset(j, 0, sizeof(*j));
    j->created_at = created;
    j->state = PF_DISPATCH_JOB_QUEUED;
    j->count = 1;
    for (unsigned q = 0; q < N_PROFILES; q++)
        f->files[i][q] = (struct pf_dispatch_file){1000 + (uint32_t)i * 10 + q, 2 * HOUR};
    j->files = f->files[i];
    j->excluded = f->excluded[i];
    return i;
}

static uint32_t file_of(const struct farm *f, size_t job, uint16_t profile)
{
    return f->files[job][profile].digest;
}

static void insert_sorted(uint32_t *a, size_t *n, uint32_t v)
{
    size_t k = (*n)++;
    while (k > 0 && a[k - 1] > v) {
        a[k] = a[k - 1];
        k--;
    }
    a[k] = v;
}

static void cache(struct farm *f, size_t printer, uint32_t digest)
{
    insert_sorted(f->cached[printer], &f->printers[printer].n_cached, digest);
}

static void exclude(struct farm *f, size_t job, size_t printer)
{
    insert_sorted(f->excluded[job], &f->jobs[job].n_excluded, f->printers[printer].id);
}

static void add_window(struct farm *f, size_t printer, int64_t start, int64_t end)
{
    struct pf_dispatch_printer *p = &f->printers[printer];
    f->windows[printer][p->n_windows++] = (struct pf_dispatch_window){start, end};
}

static void require(struct farm *f, size_t job, uint8_t extruder, uint16_t material,
                    uint16_t colour)
{
    struct pf_dispatch_job *j = &f->jobs[job];
    j->requirements[j->n_requirements++] =
        (struct pf_dispatch_requirement){extruder, {material, colour}};
}

/* ------------------------------------------------------------------ verifier */

static uint32_t remaining_of(const struct pf_dispatch_job *j)
{
    uint64_t done = (uint64_t)j->succeeded + j->in_flight;
    return done >= j->count ? 0 : (uint32_t)(j->count - done);
}

static bool runnable(const struct pf_dispatch_job *j)
{
    return j->state == PF_DISPATCH_JOB_QUEUED && remaining_of(j) > 0;
}

/* Brute force over one band: the best (count, then cost) any assignment of
 * the free printers to band jobs reaches. */
struct brute {
    const struct pf_dispatch_input *in;
    const struct pf_dispatch_params *params;
    const bool *free;
    int32_t priority;
    uint32_t used[MAX_J];
    int best_count;
    int64_t best_cost;
};

static void brute_walk(struct brute *b, size_t p, int count, int64_t cost)
{
    if (p == b->in->n_printers) {
        if (count > b->best_count || (count == b->best_count && cost < b->best_cost)) {
            b->best_count = count;
            b->best_cost = cost;
        }
        return;
    }
    brute_walk(b, p + 1, count, cost);
    if (!b->free[p])
        return;
    for (size_t j = 0; j < b->in->n_jobs; j++) {
        const struct pf_dispatch_job *job = &b->in->jobs[j];
        if (job->priority != b->priority || !runnable(job) || b->used[j] >= remaining_of(job) ||
            pf_dispatch_check(b->in, j, p) != PF_DISPATCH_FEASIBLE)
            continue;
        b->used[j]++;
        brute_walk(b, p + 1, count + 1, cost + pf_dispatch_cost(b->params, b->in, j, p));
        b->used[j]--;
    }
}

/* Checks out against in band by band (see the file comment); with exact, also
 * that each band's count and total cost equal the brute-force optimum. */
static void verify(const struct pf_dispatch_input *in, const struct pf_dispatch_params *params,
                   const struct pf_dispatch_output *out, bool exact)
{
    bool printer_used[MAX_P * 64] = {false};
    uint32_t job_used[MAX_J * 512] = {0};
    assert_true(in->n_printers <= MAX_P * 64 && in->n_jobs <= MAX_J * 512);
    for (size_t i = 0; i < out->n_assignments; i++) {
        const struct pf_dispatch_assignment *a = &out->assignments[i];
        assert_true(a->job < in->n_jobs);
        assert_true(a->printer < in->n_printers);
        assert_int_equal(pf_dispatch_check(in, a->job, a->printer), PF_DISPATCH_FEASIBLE);
        assert_int_equal(a->cost, pf_dispatch_cost(params, in, a->job, a->printer));
        assert_false(printer_used[a->printer]);
        printer_used[a->printer] = true;
        job_used[a->job]++;
        assert_true(job_used[a->job] <= remaining_of(&in->jobs[a->job]));
    }
    /* bands from the highest priority down, replaying which printers are free */
    static bool free_now[MAX_P * 64];
    for (size_t p = 0; p < in->n_printers; p++)
        free_now[p] = true;
    int64_t prev = INT64_MAX;
    for (;;) {
        int64_t prio = INT64_MIN;
        for (size_t j = 0; j < in->n_jobs; j++)
            if (runnable(&in->jobs[j]) && in->jobs[j].priority < prev &&
                in->jobs[j].priority > prio)
                prio = in->jobs[j].priority;
        if (prio == INT64_MIN)
            break;
        prev = prio;
        /* the band's assignments use printers still free */
        int count = 0;
        int64_t cost = 0;
        for (size_t i = 0; i < out->n_assignments; i++) {
            const struct pf_dispatch_assignment *a = &out->assignments[i];
            if (in->jobs[a->job].priority != prio)
                continue;
            assert_true(free_now[a->printer]);
            count++;
            cost += a->cost;
        }
        /* no augmenting path from a free, unassigned printer */
        static uint32_t queue[MAX_P * 64];
        static bool seen[MAX_P * 64];
        for (size_t root = 0; root < in->n_printers; root++) {
            if (!free_now[root] || printer_used[root])
                continue;
            memset(seen, 0, in->n_printers * sizeof(*seen));
            size_t qh = 0, qt = 0;
            queue[qt++] = (uint32_t)root;
            seen[root] = true;
            while (qh < qt) {
                uint32_t x = queue[qh++];
                for (size_t j = 0; j < in->n_jobs; j++) {
                    if (in->jobs[j].priority != prio ||
                        pf_dispatch_check(in, j, x) != PF_DISPATCH_FEASIBLE)
                        continue;
                    if (job_used[j] < remaining_of(&in->jobs[j]))
                        fail_msg("printer %u idle in band %lld but job %zu has a free copy it "
                                 "can reach",
                                 (unsigned)root, (long long)prio, j);
                    for (size_t i = 0; i < out->n_assignments; i++) {
                        uint32_t y = out->assignments[i].printer;
                        if (out->assignments[i].job == j && !seen[y]) {
                            seen[y] = true;
                            queue[qt++] = y;
                        }
                    }
                }
            }
        }
        if (exact) {
            struct brute b;
            memset(&b, 0, sizeof(b));
            b.in = in;
            b.params = params;
            b.free = free_now;
            b.priority = (int32_t)prio;
            b.best_count = -1;
            brute_walk(&b, 0, 0, 0);
            assert_int_equal(count, b.best_count);
            assert_int_equal(cost, b.best_cost);
        }
        for (size_t i = 0; i < out->n_assignments; i++)
            if (in->jobs[out->assignments[i].job].priority == prio)
                free_now[out->assignments[i].printer] = false;
    }
}

static void solve(struct ctx *c)
{
    struct pf_error err;
    pf_error_clear(&err);
    enum pf_status st = pf_dispatch_solve(c->d, &c->f.in, &c->out, &err);
    if (st != PF_OK)
        fail_msg("solve failed: %s", err.msg);
    verify(&c->f.in, &c->params, &c->out, c->f.in.n_printers <= 6 && c->f.in.n_jobs <= 8);
}

/* The printer given job j, or -1; asserts it was given at most one. */
static int printer_of(const struct ctx *c, size_t job)
{
    int found = -1;
    for (size_t i = 0; i < c->out.n_assignments; i++) {
        if (c->out.assignments[i].job == job) {
            assert_int_equal(found, -1);
            found = (int)c->out.assignments[i].printer;
        }
    }
    return found;
}

static size_t copies_of(const struct ctx *c, size_t job)
{
    size_t n = 0;
    for (size_t i = 0; i < c->out.n_assignments; i++)
        n += c->out.assignments[i].job == job;
    return n;
}

static int64_t total_cost(const struct ctx *c)
{
    int64_t sum = 0;
    for (size_t i = 0; i < c->out.n_assignments; i++)
        sum += c->out.assignments[i].cost;
    return sum;
}

static int setup_with(void **state, const struct pf_dispatch_params *params)
{
    struct ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    struct pf_error err;
    if (pf_dispatch_create(params, &c->d, &err) != PF_OK) {
        free(c);
        return -1;
    }
    pf_dispatch_params_init(&c->params);
    if (params != NULL)
        c->params = *params;
    farm_init(&c->f);
    *state = c;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, NULL);
}

/* One candidate per printer and no spreading: the candidate graph is as thin
 * as it gets, so only the repair pass can keep printers busy. */
static int setup_thin(void **state)
{
    struct pf_dispatch_params p;
    pf_dispatch_params_init(&p);
    p.candidates = 1;
    p.shared_candidates = 1;
    p.spread = 1;
    return setup_with(state, &p);
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    pf_dispatch_destroy(c->d);
    free(c);
    return 0;
}

/* ------------------------------------------------------------------ basics */

static void test_empty_inputs(void **state)
{
    struct ctx *c = *state;
    solve(c);
    assert_int_equal(c->out.n_assignments, 0);
    add_job(&c->f, NOW - HOUR);
    solve(c); /* jobs, no printers */
    assert_int_equal(c->out.n_assignments, 0);
    assert_int_equal(c->out.stats.runnable_jobs, 1);
    farm_init(&c->f);
    add_printer(&c->f, 0);
    solve(c); /* printers, no jobs */
    assert_int_equal(c->out.n_assignments, 0);
    assert_int_equal(c->out.stats.usable_printers, 1);
}

static void test_single_pair(void **state)
{
    struct ctx *c = *state;
    add_printer(&c->f, 1);
    add_job(&c->f, NOW - HOUR);
    solve(c);
    assert_int_equal(c->out.n_assignments, 1);
    assert_int_equal(printer_of(c, 0), 0);
    assert_int_equal(c->out.stats.bands, 1);
}

/* ------------------------------------------------------------------ hard constraints */

struct block_case {
    const char *name;
    void (*breaker)(struct farm *f); /* breaks printer 0 / job 0 */
    enum pf_dispatch_verdict verdict;
};

static void b_offline(struct farm *f)
{
    f->printers[0].connected = false;
}
static void b_busy(struct farm *f)
{
    f->printers[0].idle = false;
}
static void b_awaiting_clear(struct farm *f)
{
    f->printers[0].bed_clear = false;
}
static void b_quarantined(struct farm *f)
{
    f->printers[0].quarantined = true;
}
static void b_held(struct farm *f)
{
    f->jobs[0].state = PF_DISPATCH_JOB_HELD;
}
static void b_cancelled(struct farm *f)
{
    f->jobs[0].state = PF_DISPATCH_JOB_CANCELLED;
}
static void b_done(struct farm *f)
{
    f->jobs[0].state = PF_DISPATCH_JOB_DONE;
}
static void b_failed(struct farm *f)
{
    f->jobs[0].state = PF_DISPATCH_JOB_FAILED;
}
static void b_printing(struct farm *f)
{
    f->jobs[0].state = PF_DISPATCH_JOB_PRINTING;
}
static void b_all_succeeded(struct farm *f)
{
    f->jobs[0].count = 3;
    f->jobs[0].succeeded = 3;
}
static void b_all_in_flight(struct farm *f)
{
    f->jobs[0].count = 3;
    f->jobs[0].succeeded = 1;
    f->jobs[0].in_flight = 2;
}
static void b_counters_overflow(struct farm *f)
{
    f->jobs[0].count = 2;
    f->jobs[0].succeeded = UINT32_MAX;
    f->jobs[0].in_flight = UINT32_MAX;
}
static void b_zero_count(struct farm *f)
{
    f->jobs[0].count = 0;
}
static void b_queue_not_served(struct farm *f)
{
    f->jobs[0].queue = 7;
}
static void b_printer_serves_nothing(struct farm *f)
{
    f->printers[0].n_queues = 0;
}
static void b_profile_not_allowed(struct farm *f)
{
    pf_dispatch_bits_set(&f->jobs[0].profiles, 2); /* printer 0 is profile 1 */
}
static void b_no_file(struct farm *f)
{
    f->files[0][1].digest = PF_DISPATCH_NO_FILE;
}
static void b_allowed_but_no_file(struct farm *f)
{
    pf_dispatch_bits_set(&f->jobs[0].profiles, 1);
    f->files[0][1].digest = PF_DISPATCH_NO_FILE;
}
static void b_label_missing(struct farm *f)
{
    pf_dispatch_bits_set(&f->jobs[0].labels, LABEL_HARDENED);
}
static void b_second_label_missing(struct farm *f)
{
    pf_dispatch_bits_set(&f->printers[0].labels, LABEL_ENCLOSURE);
    pf_dispatch_bits_set(&f->jobs[0].labels, LABEL_ENCLOSURE);
    pf_dispatch_bits_set(&f->jobs[0].labels, 200); /* a high id, another word */
}
static void b_material_missing(struct farm *f)
{
    require(f, 0, PF_DISPATCH_ANY_EXTRUDER, PETG, 0);
}
static void b_colour_missing(struct farm *f)
{
    require(f, 0, PF_DISPATCH_ANY_EXTRUDER, PLA, WHITE);
}
static void b_wrong_extruder(struct farm *f)
{
    f->printers[0].n_extruders = 2;
    f->printers[0].extruders[1] = (struct pf_dispatch_material){PETG, RED};
    require(f, 0, 0, PETG, RED); /* loaded, but in T1 */
}
static void b_extruder_absent(struct farm *f)
{
    require(f, 0, 3, 0, 0); /* T3 on a one-extruder printer */
}
static void b_two_needs_one_extruder(struct farm *f)
{
    require(f, 0, PF_DISPATCH_ANY_EXTRUDER, PLA, 0);
    require(f, 0, PF_DISPATCH_ANY_EXTRUDER, PLA, BLACK);
}
static void b_excluded(struct farm *f)
{
    exclude(f, 0, 0);
}
static void b_ends_after_window(struct farm *f)
{
    f->printers[0].needs_hands = true;
    add_window(f, 0, NOW - HOUR, NOW + HOUR); /* the print takes 2 h */
}
static void b_ends_before_window(struct farm *f)
{
    f->printers[0].needs_hands = true;
    add_window(f, 0, NOW + 3 * HOUR, NOW + 8 * HOUR);
}
static void b_ends_at_window_end(struct farm *f)
{
    f->printers[0].needs_hands = true;
    add_window(f, 0, NOW, NOW + 2 * HOUR); /* [start, end): the end is outside */
}
static void b_no_windows(struct farm *f)
{
    f->printers[0].needs_hands = true;
}
static void b_unknown_estimate(struct farm *f)
{
    f->printers[0].needs_hands = true;
    add_window(f, 0, NOW - HOUR, NOW + 10 * HOUR);
    f->files[0][1].est_seconds = 0;
}

static const struct block_case block_cases[] = {
    {"offline", b_offline, PF_DISPATCH_PRINTER_OFFLINE},
    {"busy", b_busy, PF_DISPATCH_PRINTER_BUSY},
    {"awaiting_clear", b_awaiting_clear, PF_DISPATCH_BED_NOT_CLEAR},
    {"quarantined", b_quarantined, PF_DISPATCH_PRINTER_QUARANTINED},
    {"held", b_held, PF_DISPATCH_JOB_NOT_QUEUED},
    {"cancelled", b_cancelled, PF_DISPATCH_JOB_NOT_QUEUED},
    {"done", b_done, PF_DISPATCH_JOB_NOT_QUEUED},
    {"failed", b_failed, PF_DISPATCH_JOB_NOT_QUEUED},
    {"printing", b_printing, PF_DISPATCH_JOB_NOT_QUEUED},
    {"all_succeeded", b_all_succeeded, PF_DISPATCH_NO_COPIES_LEFT},
    {"all_in_flight", b_all_in_flight, PF_DISPATCH_NO_COPIES_LEFT},
    {"counters_overflow", b_counters_overflow, PF_DISPATCH_NO_COPIES_LEFT},
    {"zero_count", b_zero_count, PF_DISPATCH_NO_COPIES_LEFT},
    {"queue_not_served", b_queue_not_served, PF_DISPATCH_QUEUE_NOT_SERVED},
    {"printer_serves_nothing", b_printer_serves_nothing, PF_DISPATCH_QUEUE_NOT_SERVED},
    {"profile_not_allowed", b_profile_not_allowed, PF_DISPATCH_PROFILE_NOT_ALLOWED},
    {"no_file", b_no_file, PF_DISPATCH_NO_FILE_FOR_PROFILE},
    {"allowed_but_no_file", b_allowed_but_no_file, PF_DISPATCH_NO_FILE_FOR_PROFILE},
    {"label_missing", b_label_missing, PF_DISPATCH_LABEL_MISSING},
    {"second_label_missing", b_second_label_missing, PF_DISPATCH_LABEL_MISSING},
    {"material_missing", b_material_missing, PF_DISPATCH_MATERIAL_MISSING},
    {"colour_missing", b_colour_missing, PF_DISPATCH_MATERIAL_MISSING},
    {"wrong_extruder", b_wrong_extruder, PF_DISPATCH_MATERIAL_MISSING},
    {"extruder_absent", b_extruder_absent, PF_DISPATCH_MATERIAL_MISSING},
    {"two_needs_one_extruder", b_two_needs_one_extruder, PF_DISPATCH_MATERIAL_MISSING},
    {"excluded", b_excluded, PF_DISPATCH_EXCLUDED},
    {"ends_after_window", b_ends_after_window, PF_DISPATCH_OUTSIDE_WINDOW},
    {"ends_before_window", b_ends_before_window, PF_DISPATCH_OUTSIDE_WINDOW},
    {"ends_at_window_end", b_ends_at_window_end, PF_DISPATCH_OUTSIDE_WINDOW},
    {"no_windows", b_no_windows, PF_DISPATCH_OUTSIDE_WINDOW},
    {"unknown_estimate", b_unknown_estimate, PF_DISPATCH_OUTSIDE_WINDOW},
};

/* Each rule alone stops the only pair; the same farm unbroken assigns it. */
static void test_each_constraint_blocks(void **state)
{
    struct ctx *c = *state;
    for (size_t i = 0; i < sizeof(block_cases) / sizeof(block_cases[0]); i++) {
        farm_init(&c->f);
        add_printer(&c->f, 1);
        add_job(&c->f, NOW - HOUR);
        solve(c);
        assert_int_equal(c->out.n_assignments, 1);
        block_cases[i].breaker(&c->f);
        solve(c);
        if (c->out.n_assignments != 0)
            fail_msg("case %s: assigned anyway", block_cases[i].name);
        enum pf_dispatch_verdict v = pf_dispatch_check(&c->f.in, 0, 0);
        if (v != block_cases[i].verdict)
            fail_msg("case %s: verdict %s, want %s", block_cases[i].name,
                     pf_dispatch_verdict_name(v), pf_dispatch_verdict_name(block_cases[i].verdict));
    }
}

/* A blocked pair does not block the rest: the other printer gets the job. */
static void test_blocked_printer_other_used(void **state)
{
    struct ctx *c = *state;
    for (size_t i = 0; i < 4; i++) { /* the printer-state cases */
        farm_init(&c->f);
        add_printer(&c->f, 1);
        add_printer(&c->f, 1);
        add_job(&c->f, NOW - HOUR);
        block_cases[i].breaker(&c->f);
        solve(c);
        assert_int_equal(printer_of(c, 0), 1);
    }
}

/* Held, cancelled, done jobs are ignored even when older and of higher
 * priority; the queued one runs. */
static void test_non_queued_jobs_ignored(void **state)
{
    struct ctx *c = *state;
    add_printer(&c->f, 0);
    static const enum pf_dispatch_job_state states[] = {
        PF_DISPATCH_JOB_HELD, PF_DISPATCH_JOB_CANCELLED, PF_DISPATCH_JOB_DONE,
        PF_DISPATCH_JOB_FAILED, PF_DISPATCH_JOB_PRINTING};
    for (size_t i = 0; i < 5; i++) {
        size_t j = add_job(&c->f, NOW - 48 * HOUR);
        c->f.jobs[j].state = states[i];
        c->f.jobs[j].priority = 10;
    }
    size_t q = add_job(&c->f, NOW - HOUR);
    solve(c);
    assert_int_equal(c->out.n_assignments, 1);
    assert_int_equal(printer_of(c, q), 0);
    assert_int_equal(c->out.stats.runnable_jobs, 1);
}

static void test_constraints_met(void **state)
{
    struct ctx *c = *state;
    size_t p = add_printer(&c->f, 2);
    struct pf_dispatch_printer *pr = &c->f.printers[p];
    pr->n_extruders = 3;
    pr->extruders[1] = (struct pf_dispatch_material){PETG, RED};
    pr->extruders[2] = (struct pf_dispatch_material){PLA, WHITE};
    pf_dispatch_bits_set(&pr->labels, LABEL_HARDENED);
    pf_dispatch_bits_set(&pr->labels, LABEL_LAB_A);
    pr->n_queues = 2;
    pr->queues[1] = (struct pf_dispatch_queue_weight){5, 10};
    size_t j = add_job(&c->f, NOW - HOUR);
    struct pf_dispatch_job *jb = &c->f.jobs[j];
    jb->queue = 5;
    pf_dispatch_bits_set(&jb->labels, LABEL_HARDENED);
    pf_dispatch_bits_set(&jb->profiles, 0);
    pf_dispatch_bits_set(&jb->profiles, 2);
    require(&c->f, j, 1, PETG, 0);                         /* T1 holds PETG */
    require(&c->f, j, PF_DISPATCH_ANY_EXTRUDER, PLA, 0);   /* T0 or T2 */
    require(&c->f, j, PF_DISPATCH_ANY_EXTRUDER, 0, WHITE); /* T2 */
    exclude(&c->f, j, p);
    c->f.excluded[j][0] = 999; /* another printer */
    pr->needs_hands = true;
    add_window(&c->f, p, NOW - 10 * HOUR, NOW - 5 * HOUR);
    add_window(&c->f, p, NOW + HOUR, NOW + 3 * HOUR); /* ends at +2h: inside */
    solve(c);
    assert_int_equal(pf_dispatch_check(&c->f.in, j, p), PF_DISPATCH_FEASIBLE);
    assert_int_equal(printer_of(c, j), (int)p);
}

/* ------------------------------------------------------------------ windows */

static void test_windows(void **state)
{
    struct ctx *c = *state;
    size_t hands = add_printer(&c->f, 0);
    c->f.printers[hands].needs_hands = true;
    add_window(&c->f, hands, NOW + 20 * HOUR, NOW + 30 * HOUR); /* tomorrow */
    size_t free_hand = add_printer(&c->f, 0);
    c->f.printers[free_hand].needs_hands = false;
    add_window(&c->f, free_hand, NOW + 100 * HOUR, NOW + 101 * HOUR); /* ignored */
    size_t shortj = add_job(&c->f, NOW - 3 * HOUR);                   /* 2 h: ends tonight */
    size_t longj = add_job(&c->f, NOW - 2 * HOUR);
    c->f.files[longj][0].est_seconds = 22 * HOUR; /* ends tomorrow, inside */
    solve(c);
    assert_int_equal(printer_of(c, longj), (int)hands);
    assert_int_equal(printer_of(c, shortj), (int)free_hand);
    /* a window that closed before the print ends */
    c->f.files[longj][0].est_seconds = 31 * HOUR;
    solve(c);
    assert_int_equal(c->out.n_assignments, 1);
    assert_int_equal(printer_of(c, shortj), (int)free_hand); /* the older one */
    assert_int_equal(printer_of(c, longj), -1);
}

/* Many needs-hands printers and jobs whose estimates mostly miss the window:
 * the solver's sparse window route must find the few that fit. */
static void test_windows_sparse(void **state)
{
    struct ctx *c = *state;
    for (int i = 0; i < 4; i++) {
        size_t p = add_printer(&c->f, 0);
        c->f.printers[p].needs_hands = true;
        add_window(&c->f, p, NOW, NOW + HOUR);
    }
    size_t fits[2] = {0, 0};
    for (int i = 0; i < 20; i++) {
        size_t j = add_job(&c->f, NOW - 20 * HOUR + i * 600);
        c->f.files[j][0].est_seconds = 5 * HOUR;
        if (i == 7 || i == 15)
            c->f.files[j][0].est_seconds = 1800;
        if (i == 7)
            fits[0] = j;
        if (i == 15)
            fits[1] = j;
    }
    solve(c);
    assert_int_equal(c->out.n_assignments, 2);
    assert_true(printer_of(c, fits[0]) >= 0);
    assert_true(printer_of(c, fits[1]) >= 0);
}

/* Printers with many different windows and jobs of many classes: each
 * (class, windows) pair gets its own list of fitting jobs, more than the
 * solver's first table holds. */
static void test_many_window_sets(void **state)
{
    struct ctx *c = *state;
    for (int i = 0; i < MAX_P; i++) {
        size_t p = add_printer(&c->f, 0);
        c->f.printers[p].needs_hands = true;
        pf_dispatch_bits_set(&c->f.printers[p].labels, (unsigned)(i % 4));
        add_window(&c->f, p, NOW + i * 600, NOW + 3 * HOUR + i * 600);
    }
    for (int i = 0; i < MAX_J; i++) {
        size_t j = add_job(&c->f, NOW - i * 700);
        c->f.files[j][0].est_seconds = (uint32_t)(HOUR + i * 500);
        c->f.jobs[j].material = (struct pf_dispatch_material){(uint16_t)(1 + i % 5), 0};
        pf_dispatch_bits_set(&c->f.jobs[j].labels, (unsigned)(i % 4));
    }
    solve(c);
    assert_true(c->out.n_assignments > 0);
    assert_true(c->out.stats.searched > 0);
}

/* ------------------------------------------------------------------ order */

static void test_priority_strictly_first(void **state)
{
    struct ctx *c = *state;
    add_printer(&c->f, 0);
    add_printer(&c->f, 0);
    size_t low = add_job(&c->f, NOW - 100 * HOUR); /* old and cached: cheap */
    cache(&c->f, 0, file_of(&c->f, low, 0));
    cache(&c->f, 1, file_of(&c->f, low, 0));
    size_t high = add_job(&c->f, NOW);
    c->f.jobs[high].priority = 5;
    c->f.jobs[high].count = 2;
    solve(c);
    assert_int_equal(copies_of(c, high), 2);
    assert_int_equal(copies_of(c, low), 0);
    /* negative priorities order too */
    c->f.jobs[high].priority = -1;
    c->f.jobs[low].priority = -7;
    solve(c);
    assert_int_equal(copies_of(c, high), 2);
}

/* A lower band still gets the printers the higher band cannot use. */
static void test_lower_band_gets_leftovers(void **state)
{
    struct ctx *c = *state;
    size_t p0 = add_printer(&c->f, 0);
    size_t p1 = add_printer(&c->f, 0);
    pf_dispatch_bits_set(&c->f.printers[p1].labels, LABEL_ENCLOSURE);
    size_t high = add_job(&c->f, NOW);
    c->f.jobs[high].priority = 9;
    pf_dispatch_bits_set(&c->f.jobs[high].labels, LABEL_ENCLOSURE);
    size_t low = add_job(&c->f, NOW - HOUR);
    solve(c);
    assert_int_equal(printer_of(c, high), (int)p1);
    assert_int_equal(printer_of(c, low), (int)p0);
    assert_int_equal(c->out.stats.bands, 2);
}

/* With printers for both, the higher band must take the one only it can use
 * only if that keeps the most printers busy within the band. */
static void test_priority_band_matching(void **state)
{
    struct ctx *c = *state;
    size_t p0 = add_printer(&c->f, 0);
    size_t p1 = add_printer(&c->f, 0);
    c->f.printers[p1].extruders[0] = (struct pf_dispatch_material){PETG, RED};
    size_t h_any = add_job(&c->f, NOW - 5 * HOUR); /* older, fits both */
    c->f.jobs[h_any].priority = 3;
    size_t h_pla = add_job(&c->f, NOW - HOUR); /* only p0 */
    c->f.jobs[h_pla].priority = 3;
    require(&c->f, h_pla, PF_DISPATCH_ANY_EXTRUDER, PLA, 0);
    size_t low = add_job(&c->f, NOW - 50 * HOUR);
    solve(c);
    assert_int_equal(printer_of(c, h_pla), (int)p0);
    assert_int_equal(printer_of(c, h_any), (int)p1);
    assert_int_equal(printer_of(c, low), -1);
}

static void test_age_within_band(void **state)
{
    struct ctx *c = *state;
    add_printer(&c->f, 0);
    size_t young = add_job(&c->f, NOW - HOUR);
    size_t old = add_job(&c->f, NOW - 3 * HOUR);
    solve(c);
    assert_int_equal(printer_of(c, old), 0);
    assert_int_equal(printer_of(c, young), -1);
    /* one second apart, same age bucket: the older still wins the tie */
    c->f.jobs[young].created_at = NOW - 1000;
    c->f.jobs[old].created_at = NOW - 1001;
    solve(c);
    assert_int_equal(printer_of(c, old), 0);
    /* same second: the lower index */
    c->f.jobs[old].created_at = NOW - 1000;
    solve(c);
    assert_int_equal(printer_of(c, young), 0);
    /* jobs from the future do not underflow the age */
    c->f.jobs[young].created_at = NOW + 1000;
    solve(c);
    assert_int_equal(printer_of(c, old), 0);
}

/* ------------------------------------------------------------------ matching */

/* First-fit gives the oldest job to the first printer and leaves the second
 * idle; the matching keeps both busy. */
static void test_matching_keeps_printers_busy(void **state)
{
    struct ctx *c = *state;
    size_t p0 = add_printer(&c->f, 0); /* PLA black */
    size_t p1 = add_printer(&c->f, 0);
    c->f.printers[p1].extruders[0] = (struct pf_dispatch_material){PETG, BLACK};
    size_t any = add_job(&c->f, NOW - 10 * HOUR); /* fits both, oldest */
    size_t pla = add_job(&c->f, NOW - HOUR);      /* fits p0 only */
    require(&c->f, pla, 0, PLA, 0);
    solve(c);
    assert_int_equal(c->out.n_assignments, 2);
    assert_int_equal(printer_of(c, pla), (int)p0);
    assert_int_equal(printer_of(c, any), (int)p1);
}

/* A chain: each printer's first choice is taken by the one before it. */
static void test_matching_chain(void **state)
{
    struct ctx *c = *state;
    enum { N = 5 };
    size_t p[N], j[N];
    for (int i = 0; i < N; i++)
        p[i] = add_printer(&c->f, 0);
    for (int i = 0; i < N; i++) {
        j[i] = add_job(&c->f, NOW - (N - i) * HOUR); /* j0 oldest */
        pf_dispatch_bits_set(&c->f.jobs[j[i]].labels, (unsigned)(10 + i));
    }
    /* printer i carries labels of jobs i and i+1; printer N-1 only job N-1 */
    for (int i = 0; i < N; i++) {
        pf_dispatch_bits_set(&c->f.printers[p[i]].labels, (unsigned)(10 + i));
        if (i + 1 < N)
            pf_dispatch_bits_set(&c->f.printers[p[i]].labels, (unsigned)(10 + i + 1));
    }
    /* and printer 0 also job N-1, the youngest, so greedy by age from the
     * last printer would strand printer 0 */
    pf_dispatch_bits_set(&c->f.printers[p[0]].labels, 10 + N - 1);
    solve(c);
    assert_int_equal(c->out.n_assignments, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(printer_of(c, j[i]), (int)p[i]);
}

/* Same age: first-fit would hand each printer the other's cached file and pay
 * two downloads; the matching swaps them. */
static void test_matching_beats_greedy_cost(void **state)
{
    struct ctx *c = *state;
    size_t p0 = add_printer(&c->f, 0);
    size_t p1 = add_printer(&c->f, 0);
    size_t a = add_job(&c->f, NOW - HOUR);
    size_t b = add_job(&c->f, NOW - HOUR);
    cache(&c->f, p0, file_of(&c->f, b, 0));
    cache(&c->f, p1, file_of(&c->f, a, 0));
    solve(c);
    assert_int_equal(printer_of(c, a), (int)p1);
    assert_int_equal(printer_of(c, b), (int)p0);
    int64_t best = total_cost(c);
    assert_int_equal(best, 2 * pf_dispatch_cost(NULL, &c->f.in, a, p1));
    assert_true(best <
                pf_dispatch_cost(NULL, &c->f.in, a, p0) + pf_dispatch_cost(NULL, &c->f.in, b, p1));
}

/* Material changes: the printer that last printed the job's colour takes it. */
static void test_avoids_material_change(void **state)
{
    struct ctx *c = *state;
    size_t black = add_printer(&c->f, 0);
    size_t white = add_printer(&c->f, 0);
    c->f.printers[black].last_material = (struct pf_dispatch_material){PLA, BLACK};
    c->f.printers[white].last_material = (struct pf_dispatch_material){PLA, WHITE};
    c->f.printers[white].extruders[0].colour = WHITE;
    size_t jw = add_job(&c->f, NOW - 2 * HOUR);
    c->f.jobs[jw].material = (struct pf_dispatch_material){PLA, WHITE};
    size_t jb = add_job(&c->f, NOW - 2 * HOUR);
    c->f.jobs[jb].material = (struct pf_dispatch_material){PLA, BLACK};
    solve(c);
    assert_int_equal(printer_of(c, jw), (int)white);
    assert_int_equal(printer_of(c, jb), (int)black);
}

static void test_prefers_fewer_failures(void **state)
{
    struct ctx *c = *state;
    size_t shaky = add_printer(&c->f, 0);
    size_t solid = add_printer(&c->f, 0);
    c->f.printers[shaky].recent_failures = 2;
    size_t j = add_job(&c->f, NOW - HOUR);
    solve(c);
    assert_int_equal(printer_of(c, j), (int)solid);
}

static void test_queue_weight(void **state)
{
    struct ctx *c = *state;
    size_t p = add_printer(&c->f, 0);
    c->f.printers[p].n_queues = 2;
    c->f.printers[p].queues[0] = (struct pf_dispatch_queue_weight){0, 100};
    c->f.printers[p].queues[1] = (struct pf_dispatch_queue_weight){1, 900};
    size_t q0 = add_job(&c->f, NOW - HOUR);
    size_t q1 = add_job(&c->f, NOW - HOUR);
    c->f.jobs[q1].queue = 1;
    solve(c);
    assert_int_equal(printer_of(c, q1), (int)p);
    assert_int_equal(printer_of(c, q0), -1);
    /* a much older job of the light queue still wins */
    c->f.jobs[q0].created_at = NOW - 48 * HOUR;
    solve(c);
    assert_int_equal(printer_of(c, q0), (int)p);
}

static void test_cost_model_numbers(void **state)
{
    struct ctx *c = *state;
    size_t p = add_printer(&c->f, 0);
    size_t j = add_job(&c->f, NOW - 3 * HOUR - 5); /* 18 whole buckets */
    int64_t age = (1008 - 18) * 600;
    assert_int_equal(pf_dispatch_cost(NULL, &c->f.in, j, p), age + 600);
    cache(&c->f, p, file_of(&c->f, j, 0));
    assert_int_equal(pf_dispatch_cost(NULL, &c->f.in, j, p), age);
    c->f.printers[p].recent_failures = 9; /* capped at 5 */
    assert_int_equal(pf_dispatch_cost(NULL, &c->f.in, j, p), age + 5 * 1800);
    c->f.printers[p].recent_failures = 0;
    c->f.printers[p].last_material = (struct pf_dispatch_material){PETG, 0};
    c->f.jobs[j].material = (struct pf_dispatch_material){PLA, BLACK};
    assert_int_equal(pf_dispatch_cost(NULL, &c->f.in, j, p), age + 3600);
    c->f.printers[p].last_material = (struct pf_dispatch_material){0, BLACK}; /* unknown type */
    assert_int_equal(pf_dispatch_cost(NULL, &c->f.in, j, p), age);
    c->f.printers[p].n_queues = 2;
    c->f.printers[p].queues[0].weight = 250;
    c->f.printers[p].queues[1] = (struct pf_dispatch_queue_weight){3, 1000};
    assert_int_equal(pf_dispatch_cost(NULL, &c->f.in, j, p), age + 3600 * 750 / 1000);
    c->f.jobs[j].created_at = NOW - 30 * 24 * HOUR; /* past the cap */
    assert_int_equal(pf_dispatch_cost(NULL, &c->f.in, j, p), 3600 * 750 / 1000);
    solve(c);
    assert_int_equal(c->out.assignments[0].cost, 3600 * 750 / 1000);
}

/* ------------------------------------------------------------------ copies */

static void test_copies_respected(void **state)
{
    struct ctx *c = *state;
    for (int i = 0; i < 4; i++)
        add_printer(&c->f, 0);
    size_t two = add_job(&c->f, NOW - 10 * HOUR);
    c->f.jobs[two].count = 2;
    solve(c);
    assert_int_equal(copies_of(c, two), 2);
    assert_int_equal(c->out.n_assignments, 2);
    c->f.jobs[two].count = 5;
    c->f.jobs[two].succeeded = 2;
    c->f.jobs[two].in_flight = 2;
    size_t other = add_job(&c->f, NOW);
    solve(c);
    assert_int_equal(copies_of(c, two), 1);
    assert_int_equal(copies_of(c, other), 1);
    c->f.jobs[two].count = 1000;
    solve(c);
    assert_int_equal(copies_of(c, two), 4); /* older: takes every printer */
}

/* ------------------------------------------------------------------ exclusions */

static void test_exclusion_from_policy(void **state)
{
    struct ctx *c = *state;
    size_t p0 = add_printer(&c->f, 0);
    size_t p1 = add_printer(&c->f, 0);
    size_t j = add_job(&c->f, NOW - HOUR);
    cache(&c->f, p0, file_of(&c->f, j, 0)); /* p0 would be preferred */
    struct pf_policy_attempt h[] = {
        {0, c->f.printers[p0].id, PF_POLICY_FAILED, 10},
    };
    struct pf_policy_limits l;
    pf_policy_limits_init(&l);
    struct pf_error err;
    assert_int_equal(pf_policy_excluded_printers(h, 1, &l, 0, c->f.excluded[j], 8,
                                                 &c->f.jobs[j].n_excluded, &err),
                     PF_OK);
    solve(c);
    assert_int_equal(printer_of(c, j), (int)p1);
    c->f.jobs[j].n_excluded = 0;
    solve(c);
    assert_int_equal(printer_of(c, j), (int)p0);
}

/* ------------------------------------------------------------------ repair */

/* With one candidate per printer every printer lists the oldest job; only the
 * repair pass can find work for the others. */
static void test_thin_candidates_repaired(void **state)
{
    struct ctx *c = *state;
    for (int i = 0; i < 5; i++)
        add_printer(&c->f, 0);
    for (int i = 0; i < 5; i++)
        add_job(&c->f, NOW - (10 - i) * HOUR);
    solve(c);
    assert_int_equal(c->out.n_assignments, 5);
}

/* ------------------------------------------------------------------ input */

static void expect_invalid(struct ctx *c, const char *needle)
{
    struct pf_error err;
    pf_error_clear(&err);
    c->out.n_assignments = 77;
    assert_int_equal(pf_dispatch_solve(c->d, &c->f.in, &c->out, &err), PF_E_INVALID);
    assert_int_equal(c->out.n_assignments, 0);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_invalid_input(void **state)
{
    struct ctx *c = *state;
    struct pf_error err;
    assert_int_equal(pf_dispatch_solve(c->d, NULL, &c->out, &err), PF_E_INVALID);
    assert_int_equal(pf_dispatch_solve(NULL, &c->f.in, &c->out, &err), PF_E_INVALID);
    assert_int_equal(pf_dispatch_solve(c->d, &c->f.in, NULL, &err), PF_E_INVALID);

#define RESET()                                                                                    \
    do {                                                                                           \
        farm_init(&c->f);                                                                          \
        add_printer(&c->f, 0);                                                                     \
        add_printer(&c->f, 1);                                                                     \
        add_job(&c->f, NOW);                                                                       \
        add_job(&c->f, NOW);                                                                       \
    } while (0)

    RESET();
    c->f.in.n_profiles = PF_DISPATCH_BITS_MAX + 1;
    expect_invalid(c, "n_profiles");
    RESET();
    c->f.printers[1].profile = N_PROFILES;
    expect_invalid(c, "printers[1].profile");
    RESET();
    c->f.printers[0].n_extruders = PF_DISPATCH_EXTRUDERS_MAX + 1;
    expect_invalid(c, "printers[0].n_extruders");
    RESET();
    c->f.printers[0].n_queues = PF_DISPATCH_QUEUES_MAX + 1;
    expect_invalid(c, "printers[0].n_queues");
    RESET();
    c->f.printers[1].queues[0].weight = 0;
    expect_invalid(c, "printers[1].queues[0].weight");
    RESET();
    c->f.printers[1].queues[0].weight = PF_DISPATCH_QUEUE_WEIGHT_MAX + 1;
    expect_invalid(c, "weight");
    RESET();
    c->f.cached[0][0] = 5;
    c->f.cached[0][1] = 5;
    c->f.printers[0].n_cached = 2;
    expect_invalid(c, "printers[0].cached is not strictly ascending at entry 1");
    RESET();
    c->f.printers[0].cached = NULL;
    c->f.printers[0].n_cached = 1;
    expect_invalid(c, "printers[0].cached is NULL");
    RESET();
    add_window(&c->f, 1, NOW + 10, NOW);
    expect_invalid(c, "printers[1].windows[0] ends before it starts");
    RESET();
    c->f.printers[1].windows = NULL;
    c->f.printers[1].n_windows = 1;
    expect_invalid(c, "printers[1].windows is NULL");
    RESET();
    c->f.excluded[1][0] = 9;
    c->f.excluded[1][1] = 3;
    c->f.jobs[1].n_excluded = 2;
    expect_invalid(c, "jobs[1].excluded is not strictly ascending");
    RESET();
    c->f.jobs[0].excluded = NULL;
    c->f.jobs[0].n_excluded = 2;
    expect_invalid(c, "jobs[0].excluded is NULL");
    RESET();
    c->f.jobs[1].n_requirements = PF_DISPATCH_REQUIREMENTS_MAX + 1;
    expect_invalid(c, "jobs[1].n_requirements");
    RESET();
    require(&c->f, 0, PF_DISPATCH_EXTRUDERS_MAX, PLA, 0);
    expect_invalid(c, "jobs[0].requirements[0].extruder");
    RESET();
    c->f.jobs[1].files = NULL;
    expect_invalid(c, "jobs[1].files is NULL");
    RESET();
    c->f.in.printers = NULL;
    expect_invalid(c, "printers is NULL");
    RESET();
    c->f.in.jobs = NULL;
    expect_invalid(c, "jobs is NULL");
    RESET();
    c->f.in.n_printers = (size_t)PF_DISPATCH_PRINTERS_MAX + 1;
    expect_invalid(c, "n_printers");
    RESET();
    c->f.in.now = INT64_MAX;
    expect_invalid(c, "now");
    RESET();
    c->f.jobs[1].created_at = INT64_MIN;
    expect_invalid(c, "jobs[1].created_at");
    RESET();
    add_window(&c->f, 0, NOW, PF_DISPATCH_TIME_MAX + 1);
    expect_invalid(c, "printers[0].windows[0] is out of range");
#undef RESET

    /* a held job may come without files */
    farm_init(&c->f);
    add_printer(&c->f, 0);
    add_job(&c->f, NOW);
    c->f.jobs[0].state = PF_DISPATCH_JOB_HELD;
    c->f.jobs[0].files = NULL;
    solve(c);
    assert_int_equal(c->out.n_assignments, 0);
    assert_int_equal(pf_dispatch_check(&c->f.in, 0, 0), PF_DISPATCH_JOB_NOT_QUEUED);
    /* bits beyond the limit are ignored, not written out of bounds */
    struct pf_dispatch_bits bits;
    memset(&bits, 0, sizeof(bits));
    pf_dispatch_bits_set(&bits, PF_DISPATCH_BITS_MAX);
    pf_dispatch_bits_set(&bits, UINT32_MAX);
    assert_false(pf_dispatch_bits_test(&bits, PF_DISPATCH_BITS_MAX));
    for (unsigned k = 0; k < PF_DISPATCH_BITS_MAX / 64; k++)
        assert_int_equal(bits.w[k], 0);
    assert_string_equal(pf_dispatch_verdict_name(PF_DISPATCH_OUTSIDE_WINDOW), "outside_window");
    assert_string_equal(pf_dispatch_verdict_name(PF_DISPATCH_VERDICT_COUNT), "unknown");
}

static void test_invalid_params(void **state)
{
    (void)state;
    struct pf_dispatch *d = (struct pf_dispatch *)1;
    struct pf_error err;
    struct pf_dispatch_params p;
    pf_dispatch_params_init(&p);
    p.candidates = 5000;
    assert_int_equal(pf_dispatch_create(&p, &d, &err), PF_E_INVALID);
    assert_null(d);
    pf_dispatch_params_init(&p);
    p.shared_candidates = p.candidates + 1;
    assert_int_equal(pf_dispatch_create(&p, &d, &err), PF_E_INVALID);
    pf_dispatch_params_init(&p);
    p.age_bucket_seconds = 86400;
    p.age_cap_buckets = 100000;
    assert_int_equal(pf_dispatch_create(&p, &d, &err), PF_E_INVALID);
    assert_non_null(strstr(err.msg, "costs can add up"));
    pf_dispatch_params_init(&p);
    p.candidates = 0;
    assert_int_equal(pf_dispatch_create(&p, &d, &err), PF_E_INVALID);
    pf_dispatch_params_init(&p);
    p.age_bucket_seconds = 0;
    assert_int_equal(pf_dispatch_create(&p, &d, &err), PF_E_INVALID);
    /* NULL means the defaults; no shared candidates at all is allowed */
    assert_int_equal(pf_dispatch_create(NULL, &d, &err), PF_OK);
    pf_dispatch_destroy(d);
    pf_dispatch_params_init(&p);
    p.shared_candidates = 0;
    assert_int_equal(pf_dispatch_create(&p, &d, &err), PF_OK);
    pf_dispatch_destroy(d);
    pf_dispatch_destroy(NULL);
}

/* ------------------------------------------------------------------ random */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return n == 0 ? 0 : (uint32_t)((rng_state >> 33) % n);
}

/* A small random farm: every rule gets exercised somewhere. With dense, most
 * pairs are feasible, which makes printers compete and tests the matching. */
static void random_farm_with(struct farm *f, size_t n_printers, size_t n_jobs, int bands,
                             bool dense)
{
    farm_init(f);
    for (size_t i = 0; i < n_printers; i++) {
        size_t p = add_printer(f, (uint16_t)rnd(N_PROFILES));
        struct pf_dispatch_printer *pr = &f->printers[p];
        pr->n_extruders = (uint8_t)(1 + rnd(2));
        if (dense)
            pr->n_extruders = 2;
        for (unsigned e = 0; e < pr->n_extruders; e++)
            pr->extruders[e] =
                (struct pf_dispatch_material){(uint16_t)(1 + rnd(2)), (uint16_t)(1 + rnd(2))};
        pr->last_material = (struct pf_dispatch_material){(uint16_t)rnd(3), (uint16_t)rnd(3)};
        for (unsigned l = 0; l < 3; l++)
            if (rnd(2))
                pf_dispatch_bits_set(&pr->labels, l);
        pr->queues[0].weight = 1 + rnd(1000);
        if (rnd(3) == 0)
            pr->queues[pr->n_queues++] = (struct pf_dispatch_queue_weight){1, 1 + rnd(1000)};
        pr->recent_failures = rnd(4);
        if (rnd(10) == 0 && !dense)
            pr->quarantined = true;
        if (rnd(10) == 0 && !dense)
            pr->bed_clear = false;
        if (rnd(4) == 0 && !dense) {
            pr->needs_hands = true;
            add_window(f, p, NOW - HOUR, NOW + (int64_t)(1 + rnd(6)) * HOUR);
            if (rnd(2))
                add_window(f, p, NOW + 20 * HOUR, NOW + 30 * HOUR);
        }
    }
    for (size_t i = 0; i < n_jobs; i++) {
        size_t j = add_job(f, NOW - (int64_t)rnd(72 * HOUR));
        struct pf_dispatch_job *jb = &f->jobs[j];
        jb->priority = (int32_t)rnd((uint32_t)bands);
        jb->count = 1 + rnd(3);
        jb->succeeded = rnd(2);
        jb->in_flight = rnd(2);
        if (rnd(8) == 0)
            jb->state = PF_DISPATCH_JOB_HELD;
        jb->queue = rnd(4) == 0 ? 1 : 0;
        jb->material = (struct pf_dispatch_material){(uint16_t)rnd(3), (uint16_t)rnd(3)};
        unsigned nreq = dense ? rnd(2) : rnd(3);
        for (unsigned r = 0; r < nreq; r++)
            require(f, j, rnd(3) == 0 ? (uint8_t)rnd(2) : PF_DISPATCH_ANY_EXTRUDER,
                    (uint16_t)rnd(3), (uint16_t)rnd(3));
        if (rnd(3) == 0 && !dense)
            pf_dispatch_bits_set(&jb->labels, rnd(3));
        if (rnd(4) == 0 && !dense)
            pf_dispatch_bits_set(&jb->profiles, rnd(N_PROFILES));
        for (unsigned q = 0; q < N_PROFILES; q++) {
            if (rnd(5) == 0 && !dense)
                f->files[j][q].digest = PF_DISPATCH_NO_FILE;
            f->files[j][q].est_seconds = rnd(10) == 0 ? 0 : 1800 + rnd(30 * HOUR);
        }
        if (rnd(5) == 0 && n_printers > 0)
            exclude(f, j, rnd((uint32_t)n_printers));
        if (dense) {
            jb->count = 1;
            jb->succeeded = jb->in_flight = 0;
            jb->state = PF_DISPATCH_JOB_QUEUED;
            jb->created_at = NOW - (int64_t)rnd(4) * 1800; /* few distinct ages */
        }
    }
    /* caches: a few files of the jobs, per printer */
    for (size_t p = 0; p < n_printers; p++) {
        for (int k = 0; k < 3 && n_jobs > 0; k++) {
            uint32_t dgst = file_of(f, rnd((uint32_t)n_jobs), f->printers[p].profile);
            bool dup = false;
            for (size_t i = 0; i < f->printers[p].n_cached; i++)
                dup |= f->cached[p][i] == dgst;
            if (!dup && dgst != PF_DISPATCH_NO_FILE)
                cache(f, p, dgst);
        }
    }
}

static void random_farm(struct farm *f, size_t n_printers, size_t n_jobs, int bands)
{
    random_farm_with(f, n_printers, n_jobs, bands, false);
}

/* Small single-band and multi-band farms: each band exactly optimal. */
static void test_random_exact(void **state)
{
    struct ctx *c = *state;
    rng_state = 42;
    for (int round = 0; round < 1500; round++) {
        random_farm(&c->f, 1 + rnd(5), 1 + rnd(7), 1 + (round % 3));
        solve(c); /* verify() compares each band with the brute force */
    }
    for (int round = 0; round < 400; round++) {
        random_farm_with(&c->f, 2 + rnd(5), 2 + rnd(6), 1 + (round % 2), true);
        solve(c);
    }
}

/* The thin candidate graph (K = 1): cost may be worse, but no band leaves a
 * printer idle that it could use (verify checks augmenting paths). */
static void test_random_thin(void **state)
{
    struct ctx *c = *state;
    rng_state = 7;
    for (int round = 0; round < 800; round++) {
        random_farm(&c->f, 1 + rnd(MAX_P), 1 + rnd(MAX_J), 1 + (round % 3));
        struct pf_error err;
        assert_int_equal(pf_dispatch_solve(c->d, &c->f.in, &c->out, &err), PF_OK);
        verify(&c->f.in, &c->params, &c->out, false);
    }
}

/* Bigger farms than the brute force can take, under the sanitizers: the
 * verifier's invariants, determinism, and solver reuse across sizes. */
static void test_random_larger(void **state)
{
    struct ctx *c = *state;
    rng_state = 1234;
    static struct pf_dispatch_assignment first[MAX_P];
    for (int round = 0; round < 300; round++) {
        random_farm(&c->f, 1 + rnd(MAX_P), 1 + rnd(MAX_J), 1 + (round % 4));
        struct pf_error err;
        assert_int_equal(pf_dispatch_solve(c->d, &c->f.in, &c->out, &err), PF_OK);
        verify(&c->f.in, &c->params, &c->out, false);
        size_t n = c->out.n_assignments;
        if (n > 0)
            memcpy(first, c->out.assignments, n * sizeof(*first));
        assert_int_equal(pf_dispatch_solve(c->d, &c->f.in, &c->out, &err), PF_OK);
        assert_int_equal(c->out.n_assignments, n);
        if (n > 0)
            assert_memory_equal(first, c->out.assignments, n * sizeof(*first));
    }
}

/* Many identical printers and jobs: the spread of candidates must still give
 * every printer a distinct job, oldest first. */
static void test_identical_printers_spread(void **state)
{
    struct ctx *c = *state;
    static struct farm big;
    static struct pf_dispatch_printer printers[200];
    static struct pf_dispatch_job jobs[600];
    static struct pf_dispatch_file files[600][1];
    farm_init(&big);
    big.in.n_profiles = 1;
    big.in.printers = printers;
    big.in.jobs = jobs;
    for (size_t i = 0; i < 200; i++) {
        memset(&printers[i], 0, sizeof(printers[i]));
        printers[i].id = (uint32_t)i;
        printers[i].connected = printers[i].idle = printers[i].bed_clear = true;
        printers[i].n_queues = 1;
        printers[i].queues[0] = (struct pf_dispatch_queue_weight){0, 1000};
    }
    for (size_t i = 0; i < 600; i++) {
        memset(&jobs[i], 0, sizeof(jobs[i]));
        jobs[i].state = PF_DISPATCH_JOB_QUEUED;
        jobs[i].count = 1;
        jobs[i].created_at = NOW - 600 * 600 + (int64_t)i * 600; /* distinct buckets */
        files[i][0] = (struct pf_dispatch_file){1 + (uint32_t)i, HOUR};
        jobs[i].files = files[i];
    }
    big.in.n_printers = 200;
    big.in.n_jobs = 600;
    struct pf_error err;
    assert_int_equal(pf_dispatch_solve(c->d, &big.in, &c->out, &err), PF_OK);
    verify(&big.in, &c->params, &c->out, false);
    assert_int_equal(c->out.n_assignments, 200);
    for (size_t i = 0; i < c->out.n_assignments; i++)
        assert_true(c->out.assignments[i].job < 200); /* the 200 oldest */
    assert_int_equal(c->out.stats.repaired, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty_inputs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_pair, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_constraint_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blocked_printer_other_used, setup, teardown),
        cmocka_unit_test_setup_teardown(test_non_queued_jobs_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_constraints_met, setup, teardown),
        cmocka_unit_test_setup_teardown(test_windows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_windows_sparse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_window_sets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priority_strictly_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lower_band_gets_leftovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priority_band_matching, setup, teardown),
        cmocka_unit_test_setup_teardown(test_age_within_band, setup, teardown),
        cmocka_unit_test_setup_teardown(test_matching_keeps_printers_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_matching_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_matching_beats_greedy_cost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_avoids_material_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefers_fewer_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_weight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cost_model_numbers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copies_respected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exclusion_from_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thin_candidates_repaired, setup_thin, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_input, setup, teardown),
        cmocka_unit_test(test_invalid_params),
        cmocka_unit_test_setup_teardown(test_random_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_thin, setup_thin, teardown),
        cmocka_unit_test_setup_teardown(test_random_larger, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identical_printers_spread, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
