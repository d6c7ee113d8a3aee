/* Benchmark of the dispatch solver (services/scheduler/dispatch.c): builds a
 * farm of 10,000 queued jobs and 1,000 idle printers with a realistic mix of
 * constraints (3 profiles, 5 materials, 4 colours, labels, two queues, 5
 * priority levels, availability windows, cached files, exclusions) plus some
 * rows that must be filtered out (held and finished jobs, offline and busy
 * printers), times rounds of pf_dispatch_solve and prints min/median/max
 * milliseconds per round (wall clock, and the thread's CPU time, which a busy
 * machine disturbs less) against the 50 ms target, judged on the median.
 * --reference also solves once with 1024 candidates per printer (close to the
 * full graph) and reports how far the default candidate graph is from it;
 * --levels 1..5 puts the jobs in fewer priority levels (bigger bands, the
 * harder case); --uniform builds the degenerate farm instead (no constraints
 * at all, identical printers). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dispatch.h"

#define TARGET_MS 50.0

#define N_PROFILES  3
#define N_BUNDLES   2000
#define N_MATERIALS 5
#define N_COLOURS   4
#define N_CACHED    30
#define DAY         86400
#define HOUR        3600

struct bench_farm {
    struct pf_dispatch_printer *printers;
    struct pf_dispatch_job *jobs;
    struct pf_dispatch_file (*bundles)[N_PROFILES];
    uint32_t (*cached)[N_CACHED];
    struct pf_dispatch_window (*windows)[3];
    uint32_t (*excluded)[2];
    struct pf_dispatch_input in;
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return n == 0 ? 0 : (uint32_t)(rng % n);
}

/* 1..N_MATERIALS: PLA, PETG, ABS, ASA, TPU, PLA the most common. */
static uint16_t pick_material(void)
{
    uint32_t r = rnd(100);
    return r < 50 ? 1 : r < 75 ? 2 : r < 85 ? 3 : r < 95 ? 4 : 5;
}

static uint16_t pick_colour(void)
{
    return (uint16_t)(1 + rnd(N_COLOURS));
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (p == NULL) {
        fprintf(stderr, "dispatch_bench: out of memory\n");
        exit(1);
    }
    return p;
}

static void build_farm(struct bench_farm *f, size_t n_jobs, size_t n_printers, bool uniform,
                       unsigned levels)
{
    const int64_t now = 1700000000 - (1700000000 % DAY) + 14 * HOUR; /* 14:00 UTC */
    const int64_t midnight = now - 14 * HOUR;
    size_t extra_jobs = uniform ? 0 : n_jobs / 20, extra_printers = uniform ? 0 : n_printers / 20;
    size_t nj = n_jobs + extra_jobs, np = n_printers + extra_printers;
    f->printers = xcalloc(np, sizeof(*f->printers));
    f->jobs = xcalloc(nj, sizeof(*f->jobs));
    f->bundles = xcalloc(N_BUNDLES, sizeof(*f->bundles));
    f->cached = xcalloc(np, sizeof(*f->cached));
    f->windows = xcalloc(np, sizeof(*f->windows));
    f->excluded = xcalloc(nj, sizeof(*f->excluded));
    f->in.now = now;
    f->in.n_profiles = uniform ? 1 : N_PROFILES;
    f->in.printers = f->printers;
    f->in.n_printers = np;
    f->in.jobs = f->jobs;
    f->in.n_jobs = nj;

    for (uint32_t b = 0; b < N_BUNDLES; b++) {
        uint32_t r = rnd(10);
        uint32_t first = rnd(N_PROFILES);
        for (uint32_t q = 0; q < N_PROFILES; q++) {
            bool has = uniform || r < 7 || (r < 9 ? q != first : q == first);
            /* log-uniform-ish estimate, 20 minutes to 20 hours */
            uint32_t est = 1200;
            for (uint32_t k = rnd(6); k > 0; k--)
                est *= 2;
            est += rnd(est);
            f->bundles[b][q].digest = has ? b * N_PROFILES + q + 1 : PF_DISPATCH_NO_FILE;
            f->bundles[b][q].est_seconds = est;
        }
    }

    for (size_t i = 0; i < np; i++) {
        struct pf_dispatch_printer *p = &f->printers[i];
        p->id = (uint32_t)(1000 + i);
        uint32_t r = rnd(100);
        p->profile = uniform ? 0 : (uint16_t)(r < 40 ? 0 : r < 75 ? 1 : 2);
        p->connected = p->idle = p->bed_clear = true;
        if (i >= n_printers) { /* rows the solver must skip */
            switch (i % 4) {
            case 0:
                p->connected = false;
                break;
            case 1:
                p->idle = false;
                break;
            case 2:
                p->bed_clear = false;
                break;
            default:
                p->quarantined = true;
            }
        }
        p->n_queues = 1;
        p->queues[0] = (struct pf_dispatch_queue_weight){0, 1000};
        p->cached = f->cached[i];
        p->windows = f->windows[i];
        if (uniform) {
            p->n_extruders = 1;
            continue;
        }
        r = rnd(100);
        p->n_extruders = r < 75 ? 1 : r < 95 ? 2 : 4;
        for (unsigned e = 0; e < p->n_extruders; e++)
            p->extruders[e] = (struct pf_dispatch_material){pick_material(), pick_colour()};
        p->last_material = rnd(10) < 7
                               ? p->extruders[0]
                               : (struct pf_dispatch_material){pick_material(), pick_colour()};
        if (rnd(100) < 30)
            pf_dispatch_bits_set(&p->labels, 0); /* enclosure */
        if (rnd(100) < 15)
            pf_dispatch_bits_set(&p->labels, 1); /* hardened nozzle */
        if (rnd(100) < 10)
            pf_dispatch_bits_set(&p->labels, 2);          /* 0.6 mm */
        pf_dispatch_bits_set(&p->labels, rnd(2) ? 3 : 4); /* lab-a or lab-b */
        if (rnd(100) < 30) {
            p->queues[0].weight = 500;
            p->queues[p->n_queues++] = (struct pf_dispatch_queue_weight){1, 200 + rnd(801)};
        }
        r = rnd(100);
        p->recent_failures = r < 85 ? 0 : r < 95 ? 1 : 2 + rnd(2);
        if (rnd(100) < 30) {
            p->needs_hands = true;
            for (int d = 0; d < 3; d++)
                f->windows[i][d] = (struct pf_dispatch_window){midnight + d * DAY + 8 * HOUR,
                                                               midnight + d * DAY + 18 * HOUR};
            p->n_windows = 3;
        }
        for (size_t k = 0; k < N_CACHED; k++)
            f->cached[i][k] = rnd(N_BUNDLES) * N_PROFILES + p->profile + 1;
        qsort(f->cached[i], N_CACHED, sizeof(uint32_t), cmp_u32);
        size_t m = 0;
        for (size_t k = 0; k < N_CACHED; k++)
            if (m == 0 || f->cached[i][k] != f->cached[i][m - 1])
                f->cached[i][m++] = f->cached[i][k];
        p->n_cached = m;
    }

    static const int32_t prio[5] = {100, 50, 10, 0, -10};
    for (size_t i = 0; i < nj; i++) {
        struct pf_dispatch_job *j = &f->jobs[i];
        uint32_t b = rnd(N_BUNDLES);
        j->files = f->bundles[b];
        j->excluded = f->excluded[i];
        j->created_at = now - (int64_t)rnd(3 * DAY);
        j->state = PF_DISPATCH_JOB_QUEUED;
        j->count = 1;
        if (uniform)
            continue;
        if (i >= n_jobs) { /* rows the solver must skip */
            static const enum pf_dispatch_job_state skip[3] = {
                PF_DISPATCH_JOB_HELD, PF_DISPATCH_JOB_CANCELLED, PF_DISPATCH_JOB_DONE};
            j->state = skip[i % 3];
        }
        uint32_t r = rnd(100);
        j->priority = prio[r < 3 ? 0 : r < 10 ? 1 : r < 25 ? 2 : r < 85 ? 3 : 4];
        if (levels < 5)
            j->priority = prio[r % levels];
        r = rnd(100);
        if (r >= 97) {
            j->count = 6 + rnd(45);
            j->succeeded = rnd(3);
            j->in_flight = rnd(3);
        } else if (r >= 85) {
            j->count = 2 + rnd(4);
            j->succeeded = rnd(2);
        }
        r = rnd(100);
        if (r < 45) {
            /* no material requirement */
        } else if (r < 85) {
            j->requirements[j->n_requirements++] = (struct pf_dispatch_requirement){
                PF_DISPATCH_ANY_EXTRUDER, {pick_material(), rnd(10) < 6 ? pick_colour() : 0}};
        } else if (r < 95) {
            j->requirements[j->n_requirements++] =
                (struct pf_dispatch_requirement){0, {pick_material(), pick_colour()}};
        } else {
            j->requirements[j->n_requirements++] =
                (struct pf_dispatch_requirement){PF_DISPATCH_ANY_EXTRUDER, {1, pick_colour()}};
            j->requirements[j->n_requirements++] =
                (struct pf_dispatch_requirement){PF_DISPATCH_ANY_EXTRUDER, {5, 0}};
        }
        j->material = j->n_requirements > 0 ? j->requirements[0].want
                                            : (struct pf_dispatch_material){pick_material(), 0};
        if (rnd(100) < 10)
            pf_dispatch_bits_set(&j->labels, 0);
        if (rnd(100) < 5)
            pf_dispatch_bits_set(&j->labels, 1);
        if (rnd(100) < 5)
            pf_dispatch_bits_set(&j->labels, 3);
        if (rnd(100) < 8)
            pf_dispatch_bits_set(&j->profiles, rnd(N_PROFILES));
        j->queue = rnd(100) < 20 ? 1 : 0;
        if (rnd(100) < 3) {
            uint32_t a = (uint32_t)(1000 + rnd((uint32_t)np)), c = a + 1 + rnd(50);
            f->excluded[i][0] = a;
            f->excluded[i][1] = c;
            j->n_excluded = rnd(2) ? 2 : 1;
        }
    }
}

static void free_farm(struct bench_farm *f)
{
    free(f->printers);
    free(f->jobs);
    free(f->bundles);
    free(f->cached);
    free(f->windows);
    free(f->excluded);
}

static double clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double now_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int64_t total_cost(const struct pf_dispatch_output *out)
{
    int64_t sum = 0;
    for (size_t i = 0; i < out->n_assignments; i++)
        sum += out->assignments[i].cost;
    return sum;
}

static void usage(void)
{
    fprintf(stderr, "usage: dispatch_bench [--rounds N] [--jobs N] [--printers N] "
                    "[--candidates K] [--shared K0] [--levels 1..5] [--reference] "
                    "[--uniform]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    size_t rounds = 20, n_jobs = 10000, n_printers = 1000;
    uint32_t candidates = 0, shared = UINT32_MAX;
    bool reference = false, uniform = false;
    unsigned levels = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc)
            n_jobs = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--printers") == 0 && i + 1 < argc)
            n_printers = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--candidates") == 0 && i + 1 < argc)
            candidates = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--shared") == 0 && i + 1 < argc)
            shared = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--levels") == 0 && i + 1 < argc)
            levels = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--reference") == 0)
            reference = true;
        else if (strcmp(argv[i], "--uniform") == 0)
            uniform = true;
        else
            usage();
    }
    if (rounds == 0 || levels < 1 || levels > 5)
        usage();

    struct bench_farm f;
    memset(&f, 0, sizeof(f));
    build_farm(&f, n_jobs, n_printers, uniform, levels);

    struct pf_dispatch_params params;
    pf_dispatch_params_init(&params);
    if (candidates != 0)
        params.candidates = candidates;
    if (shared != UINT32_MAX)
        params.shared_candidates = shared; /* 0 here means none, not the default */
    struct pf_dispatch *d;
    struct pf_error err;
    if (pf_dispatch_create(&params, &d, &err) != PF_OK) {
        fprintf(stderr, "dispatch_bench: %s\n", err.msg);
        return 1;
    }
    double *ms = xcalloc(rounds, sizeof(*ms)), *cpu = xcalloc(rounds, sizeof(*cpu));
    struct pf_dispatch_output out;
    for (size_t r = 0; r < rounds; r++) {
        double t0 = now_ms(), c0 = clock_ms(CLOCK_THREAD_CPUTIME_ID);
        if (pf_dispatch_solve(d, &f.in, &out, &err) != PF_OK) {
            fprintf(stderr, "dispatch_bench: solve: %s\n", err.msg);
            return 1;
        }
        ms[r] = now_ms() - t0;
        cpu[r] = clock_ms(CLOCK_THREAD_CPUTIME_ID) - c0;
    }
    qsort(ms, rounds, sizeof(*ms), cmp_double);
    qsort(cpu, rounds, sizeof(*cpu), cmp_double);
    double median = rounds % 2 ? ms[rounds / 2] : (ms[rounds / 2 - 1] + ms[rounds / 2]) / 2;
    double cpu_median = rounds % 2 ? cpu[rounds / 2] : (cpu[rounds / 2 - 1] + cpu[rounds / 2]) / 2;

    printf("dispatch_bench: farm=%s jobs=%zu (+%zu not runnable) printers=%zu (+%zu not usable)\n",
           uniform ? "uniform" : "mixed", n_jobs, f.in.n_jobs - n_jobs, n_printers,
           f.in.n_printers - n_printers);
    printf("  runnable=%zu usable=%zu bands=%zu classes=%zu candidates=%zu searched=%zu "
           "repaired=%zu\n",
           out.stats.runnable_jobs, out.stats.usable_printers, out.stats.bands, out.stats.classes,
           out.stats.candidates, out.stats.searched, out.stats.repaired);
    printf("  assignments=%zu total_cost=%lld K=%u K0=%u\n", out.n_assignments,
           (long long)total_cost(&out), params.candidates, params.shared_candidates);
    printf("  rounds=%zu ms/round min=%.2f median=%.2f max=%.2f (thread cpu: min=%.2f "
           "median=%.2f max=%.2f)\n",
           rounds, ms[0], median, ms[rounds - 1], cpu[0], cpu_median, cpu[rounds - 1]);
    size_t over = 0;
    for (size_t r = 0; r < rounds; r++)
        over += ms[r] > TARGET_MS;
    printf("  target <= %.0f ms per round: %s (median %.2f ms; %zu of %zu rounds over)\n",
           TARGET_MS, median <= TARGET_MS ? "met" : "NOT met", median, over, rounds);

    if (reference) {
        size_t n = out.n_assignments;
        int64_t cost = total_cost(&out);
        struct pf_dispatch_params ref = params;
        ref.candidates = 1024;
        struct pf_dispatch *rd;
        if (pf_dispatch_create(&ref, &rd, &err) != PF_OK) {
            fprintf(stderr, "dispatch_bench: %s\n", err.msg);
            return 1;
        }
        struct pf_dispatch_output ro;
        double t0 = now_ms();
        if (pf_dispatch_solve(rd, &f.in, &ro, &err) != PF_OK) {
            fprintf(stderr, "dispatch_bench: reference solve: %s\n", err.msg);
            return 1;
        }
        double t = now_ms() - t0;
        int64_t rcost = total_cost(&ro);
        printf("  reference K=1024: assignments=%zu total_cost=%lld in %.0f ms; default K is "
               "%+.3f%% in cost, %+zd assignments\n",
               ro.n_assignments, (long long)rcost, t,
               rcost ? 100.0 * (double)(cost - rcost) / (double)rcost : 0.0,
               (ssize_t)n - (ssize_t)ro.n_assignments);
        pf_dispatch_destroy(rd);
    }
    free(ms);
    free(cpu);
    pf_dispatch_destroy(d);
    free_farm(&f);
    return 0;
}
