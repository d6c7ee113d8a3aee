/* The dispatch solver (see dispatch.h for the contract and the cost model). A
 * round sorts the runnable jobs into priority bands and solves the bands from
 * the top while printers remain free. A band groups its jobs into classes of
 * identical constraints, tests every (class, free printer) pair once through
 * a packed filter, lets each printer list its candidate jobs by a lazy merge
 * of its feasible classes in cost order, then runs one Dijkstra search per
 * node of the scarcer side over the residual graph of the candidate edges
 * (successive shortest paths with potentials, the sink labelled as soon as a
 * free unit is seen so that it bounds the search), and finally Kuhn-style
 * augmenting searches over the full feasibility graph for printers still
 * idle. All per-round memory comes from one arena that keeps its peak size
 * between rounds. */
#include "dispatch.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define NIL   UINT32_MAX       /* no row / no job / not yet searched */
#define DUMMY (UINT32_MAX - 1) /* a row that stays idle this band */

#define DEFAULT_CANDIDATES           12
#define DEFAULT_SHARED_CANDIDATES    3
#define DEFAULT_SPREAD               0 /* candidates - shared_candidates */
#define DEFAULT_AGE_BUCKET_SECONDS   600
#define DEFAULT_AGE_CAP_BUCKETS      1008
#define DEFAULT_MATERIAL_CHANGE_COST 3600
#define DEFAULT_FILE_MISSING_COST    600
#define DEFAULT_FAILURE_COST         1800
#define DEFAULT_FAILURES_CAP         5
#define DEFAULT_QUEUE_WEIGHT_COST    3600
#define CANDIDATES_MAX               1024
#define PAIR_COST_MAX                (((int64_t)1 << 31) - 1)
/* Potentials drift by at most (searches * 2 * U) over a band; bounding that
 * by 2^60 keeps every distance below 2^61, so that twice it fits a heap key. */
#define POTENTIAL_BOUND ((int64_t)1 << 60)
/* A fit list is gathered from the estimate index (then sorted back into age
 * order) when fewer than one member in SPARSE_FACTOR fits, else by a pass. */
#define SPARSE_FACTOR 8

#define ARENA_MIN_BLOCK ((size_t)64 * 1024)

/* ------------------------------------------------------------------ arena */

struct arena_block {
    struct arena_block *prev;
    size_t size;
    size_t used;
    _Alignas(max_align_t) unsigned char data[];
};

struct arena {
    struct arena_block *top;
    size_t total; /* bytes in all blocks now */
    size_t peak;  /* largest total seen */
};

struct arena_mark {
    struct arena_block *block;
    size_t used;
};

/* n * size bytes aligned for any type, uninitialised; NULL on overflow or
 * when memory runs out. */
static void *arena_alloc(struct arena *a, size_t n, size_t size)
{
    size_t bytes;
    if (__builtin_mul_overflow(n, size, &bytes) || bytes > SIZE_MAX / 2)
        return NULL;
    bytes = (bytes + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
    struct arena_block *b = a->top;
    if (b == NULL || b->size - b->used < bytes) {
        size_t want = b ? b->size * 2 : ARENA_MIN_BLOCK;
        if (want < bytes)
            want = bytes;
        struct arena_block *nb = malloc(sizeof(*nb) + want);
        if (nb == NULL)
            return NULL;
        nb->prev = b;
        nb->size = want;
        nb->used = 0;
        a->top = nb;
        a->total += want;
        if (a->total > a->peak)
            a->peak = a->total;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += bytes;
    return p;
}

static void *arena_zalloc(struct arena *a, size_t n, size_t size)
{
    void *p = arena_alloc(a, n, size);
    if (p != NULL && n > 0)
        memset(p, 0, n * size);
    return p;
}

static struct arena_mark arena_mark(const struct arena *a)
{
    return (struct arena_mark){a->top, a->top ? a->top->used : 0};
}

static void arena_release(struct arena *a, struct arena_mark m)
{
    while (a->top != m.block) {
        struct arena_block *prev = a->top->prev;
        a->total -= a->top->size;
        free(a->top);
        a->top = prev;
    }
    if (a->top != NULL)
        a->top->used = m.used;
}

/* Empties the arena, leaving one block as large as the peak so that a round
 * of the same size allocates nothing. */
static void arena_reset(struct arena *a)
{
    if (a->top != NULL && a->top->prev == NULL && a->top->size >= a->peak) {
        a->top->used = 0;
        return;
    }
    arena_release(a, (struct arena_mark){NULL, 0});
    if (a->peak > 0) {
        struct arena_block *b = malloc(sizeof(*b) + a->peak);
        if (b != NULL) {
            b->prev = NULL;
            b->size = a->peak;
            b->used = 0;
            a->top = b;
            a->total = a->peak;
        }
    }
}

/* Grows a heap buffer to hold need elements (kept across rounds). */
static bool reserve(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 256;
    while (n < need) {
        if (n > SIZE_MAX / 2 / elem)
            return false;
        n *= 2;
    }
    void *p = realloc(*buf, n * elem);
    if (p == NULL)
        return false;
    *buf = p;
    *cap = n;
    return true;
}

/* ------------------------------------------------------------------ heap */

struct heap_entry {
    int64_t key;
    uint32_t tie;
    uint32_t node;
};

struct heap {
    struct heap_entry *a;
    size_t n;
    size_t cap;
};

static inline bool heap_less(const struct heap_entry *x, const struct heap_entry *y)
{
    return x->key < y->key || (x->key == y->key && x->tie < y->tie);
}

/* A 4-ary min-heap on (key, tie), for merging candidate streams: shallower
 * than a binary heap, and the four children of a node fit a cache line. */
static bool heap_push(struct heap *h, int64_t key, uint32_t tie, uint32_t node)
{
    if (h->n == h->cap && !reserve((void **)&h->a, &h->cap, h->n + 1, sizeof(*h->a)))
        return false;
    struct heap_entry e = {key, tie, node};
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 4;
        if (!heap_less(&e, &h->a[parent]))
            break;
        h->a[i] = h->a[parent];
        i = parent;
    }
    h->a[i] = e;
    return true;
}

static void heap_sift_down(struct heap *h, size_t i)
{
    struct heap_entry e = h->a[i];
    size_t n = h->n;
    for (;;) {
        size_t c = 4 * i + 1;
        if (c >= n)
            break;
        size_t best = c, end = c + 4 < n ? c + 4 : n;
        for (size_t k = c + 1; k < end; k++)
            if (heap_less(&h->a[k], &h->a[best]))
                best = k;
        if (!heap_less(&h->a[best], &e))
            break;
        h->a[i] = h->a[best];
        i = best;
    }
    h->a[i] = e;
}

/* Appends without ordering; heap_build must run before the next pop. */
static bool heap_append(struct heap *h, int64_t key, uint32_t tie, uint32_t node)
{
    if (h->n == h->cap && !reserve((void **)&h->a, &h->cap, h->n + 1, sizeof(*h->a)))
        return false;
    h->a[h->n++] = (struct heap_entry){key, tie, node};
    return true;
}

/* Orders appended entries in linear time (Floyd). */
static void heap_build(struct heap *h)
{
    if (h->n < 2)
        return;
    for (size_t i = (h->n - 2) / 4 + 1; i-- > 0;)
        heap_sift_down(h, i);
}

static bool heap_pop(struct heap *h, struct heap_entry *out)
{
    if (h->n == 0)
        return false;
    *out = h->a[0];
    h->a[0] = h->a[--h->n];
    if (h->n > 1)
        heap_sift_down(h, 0);
    return true;
}

/* The search queue of the matching: a 4-ary min-heap of (key, node) where the
 * key is a distance times two, plus one for every node but the sink, so that
 * the sink pops first among equal distances. Distances are non-negative
 * (reduced costs are) and below 2^61, so the key fits. */
struct qentry {
    uint64_t key;
    uint32_t node;
    uint32_t pad;
};

struct qheap {
    struct qentry *a;
    size_t n;
    size_t cap;
};

static bool qheap_push(struct qheap *h, uint64_t key, uint32_t node)
{
    if (h->n == h->cap && !reserve((void **)&h->a, &h->cap, h->n + 1, sizeof(*h->a)))
        return false;
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 4;
        if (h->a[parent].key <= key)
            break;
        h->a[i] = h->a[parent];
        i = parent;
    }
    h->a[i].key = key;
    h->a[i].node = node;
    h->a[i].pad = 0;
    return true;
}

static bool qheap_pop(struct qheap *h, struct qentry *out)
{
    if (h->n == 0)
        return false;
    *out = h->a[0];
    struct qentry last = h->a[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 4 * i + 1;
        if (c >= n)
            break;
        size_t best = c, end = c + 4 < n ? c + 4 : n;
        for (size_t k = c + 1; k < end; k++)
            if (h->a[k].key < h->a[best].key)
                best = k;
        if (h->a[best].key >= last.key)
            break;
        h->a[i] = h->a[best];
        i = best;
    }
    if (n > 0)
        h->a[i] = last;
    return true;
}

/* ------------------------------------------------------------------ rules */

static uint32_t remaining(const struct pf_dispatch_job *j)
{
    uint64_t done = (uint64_t)j->succeeded + j->in_flight;
    return done >= j->count ? 0 : (uint32_t)(j->count - done);
}

static bool printer_usable(const struct pf_dispatch_printer *p)
{
    return p->connected && p->idle && p->bed_clear && !p->quarantined;
}

static bool job_runnable(const struct pf_dispatch_job *j)
{
    return j->state == PF_DISPATCH_JOB_QUEUED && remaining(j) > 0;
}

static uint32_t queue_weight(const struct pf_dispatch_printer *p, uint32_t queue)
{
    for (unsigned i = 0; i < p->n_queues; i++)
        if (p->queues[i].queue == queue)
            return p->queues[i].weight;
    return 0;
}

static uint32_t queue_weight_max(const struct pf_dispatch_printer *p)
{
    uint32_t m = 0;
    for (unsigned i = 0; i < p->n_queues; i++)
        if (p->queues[i].weight > m)
            m = p->queues[i].weight;
    return m;
}

static bool bits_empty(const struct pf_dispatch_bits *b)
{
    for (unsigned k = 0; k < PF_DISPATCH_BITS_MAX / 64; k++)
        if (b->w[k] != 0)
            return false;
    return true;
}

static bool bits_subset(const struct pf_dispatch_bits *need, const struct pf_dispatch_bits *have)
{
    for (unsigned k = 0; k < PF_DISPATCH_BITS_MAX / 64; k++)
        if ((need->w[k] & ~have->w[k]) != 0)
            return false;
    return true;
}

static bool material_matches(const struct pf_dispatch_material *want,
                             const struct pf_dispatch_material *have)
{
    return (want->material == 0 || want->material == have->material) &&
           (want->colour == 0 || want->colour == have->colour);
}

/* Gives each of the n requirements its own extruder (backtracking; n and the
 * extruder count are at most 8, and requirements naming an extruder come first
 * in canonical order, so the search is tiny). */
static bool assign_requirements(const struct pf_dispatch_requirement *r, unsigned n,
                                const struct pf_dispatch_printer *p, unsigned taken)
{
    if (n == 0)
        return true;
    for (unsigned e = 0; e < p->n_extruders; e++) {
        if ((taken >> e & 1) != 0)
            continue;
        if (r->extruder != PF_DISPATCH_ANY_EXTRUDER && r->extruder != e)
            continue;
        if (!material_matches(&r->want, &p->extruders[e]))
            continue;
        if (assign_requirements(r + 1, n - 1, p, taken | 1u << e))
            return true;
    }
    return false;
}

static bool is_excluded(const struct pf_dispatch_job *j, uint32_t printer_id)
{
    size_t lo = 0, hi = j->n_excluded;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (j->excluded[mid] < printer_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < j->n_excluded && j->excluded[lo] == printer_id;
}

static bool is_cached(const struct pf_dispatch_printer *p, uint32_t digest)
{
    size_t lo = 0, hi = p->n_cached;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->cached[mid] < digest)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < p->n_cached && p->cached[lo] == digest;
}

/* The print, started now, ends inside one of the printer's windows. */
static bool fits_window(const struct pf_dispatch_printer *p, int64_t now, uint32_t est)
{
    if (!p->needs_hands)
        return true;
    if (est == 0)
        return false;
    int64_t end = now + est;
    for (size_t i = 0; i < p->n_windows; i++)
        if (p->windows[i].start <= end && end < p->windows[i].end)
            return true;
    return false;
}

static bool material_differs(const struct pf_dispatch_material *a,
                             const struct pf_dispatch_material *b)
{
    return (a->material != 0 && b->material != 0 && a->material != b->material) ||
           (a->colour != 0 && b->colour != 0 && a->colour != b->colour);
}

static int64_t age_cost(const struct pf_dispatch_params *pp, int64_t now, int64_t created)
{
    int64_t bucket = pp->age_bucket_seconds ? pp->age_bucket_seconds : 1;
    int64_t wait = now - created; /* times are validated, no overflow */
    int64_t buckets = wait <= 0 ? 0 : wait / bucket;
    if (buckets > pp->age_cap_buckets)
        buckets = pp->age_cap_buckets;
    return ((int64_t)pp->age_cap_buckets - buckets) * bucket;
}

/* The terms of the cost that depend on the job only through its class:
 * material change, the printer's failures, the queue weight. */
static int64_t class_cost(const struct pf_dispatch_params *pp,
                          const struct pf_dispatch_material *job_material,
                          const struct pf_dispatch_printer *p, uint32_t weight)
{
    int64_t cost = 0;
    if (material_differs(job_material, &p->last_material))
        cost += pp->material_change_cost;
    uint32_t failures =
        p->recent_failures < pp->failures_cap ? p->recent_failures : pp->failures_cap;
    cost += (int64_t)pp->failure_cost * failures;
    uint32_t wmax = queue_weight_max(p);
    if (wmax == 0)
        cost += pp->queue_weight_cost;
    else if (weight < wmax)
        cost += (int64_t)pp->queue_weight_cost * (wmax - weight) / wmax;
    return cost;
}

/* ------------------------------------------------------------------ params */

void pf_dispatch_params_init(struct pf_dispatch_params *p)
{
    p->candidates = DEFAULT_CANDIDATES;
    p->shared_candidates = DEFAULT_SHARED_CANDIDATES;
    p->spread = DEFAULT_SPREAD;
    p->age_bucket_seconds = DEFAULT_AGE_BUCKET_SECONDS;
    p->age_cap_buckets = DEFAULT_AGE_CAP_BUCKETS;
    p->material_change_cost = DEFAULT_MATERIAL_CHANGE_COST;
    p->file_missing_cost = DEFAULT_FILE_MISSING_COST;
    p->failure_cost = DEFAULT_FAILURE_COST;
    p->failures_cap = DEFAULT_FAILURES_CAP;
    p->queue_weight_cost = DEFAULT_QUEUE_WEIGHT_COST;
}

static void params_fill(struct pf_dispatch_params *out, const struct pf_dispatch_params *in)
{
    if (in == NULL)
        pf_dispatch_params_init(out);
    else
        *out = *in;
}

/* The saturation threshold per copy: spread, or by default K - K0, so that
 * identical printers form groups of about K - K0 sharing as many jobs and the
 * candidate jobs of a band number about as many as its printers. */
static uint32_t spread_of(const struct pf_dispatch_params *pp)
{
    if (pp->spread != 0)
        return pp->spread;
    return pp->candidates > pp->shared_candidates ? pp->candidates - pp->shared_candidates : 1;
}

/* ------------------------------------------------------------------ solver */

struct pf_dispatch {
    struct pf_dispatch_params params;
    struct arena arena;
    struct heap heap;          /* candidate merges */
    struct qheap queue;        /* matching searches */
    struct row_class *row_cls; /* feasible classes of every row of a band */
    size_t row_cls_cap;
    uint32_t *sparse; /* members of the fit lists of a band */
    size_t sparse_cap;
    struct fit_list *fits; /* a band's fit lists */
    size_t fits_cap;
    uint32_t *fit_tab; /* hash table of fit list indices */
    size_t fit_tab_cap;
    struct edge *cached; /* cached-file candidates of one printer */
    size_t cached_cap;
};

enum pf_status pf_dispatch_create(const struct pf_dispatch_params *params, struct pf_dispatch **out,
                                  struct pf_error *err)
{
    *out = NULL;
    struct pf_dispatch_params pp;
    params_fill(&pp, params);
    if (pp.candidates == 0 || pp.candidates > CANDIDATES_MAX)
        return pf_error_set(err, PF_E_INVALID, "dispatch candidates %u is not in 1..%u",
                            pp.candidates, CANDIDATES_MAX);
    if (pp.age_bucket_seconds == 0)
        return pf_error_set(err, PF_E_INVALID, "dispatch age_bucket_seconds is 0");
    if (pp.shared_candidates > pp.candidates)
        return pf_error_set(err, PF_E_INVALID,
                            "dispatch shared_candidates %u is over candidates %u",
                            pp.shared_candidates, pp.candidates);
    uint64_t max_cost = (uint64_t)pp.age_bucket_seconds * pp.age_cap_buckets +
                        pp.material_change_cost + pp.file_missing_cost +
                        (uint64_t)pp.failure_cost * pp.failures_cap + pp.queue_weight_cost;
    if (max_cost > (uint64_t)PAIR_COST_MAX)
        return pf_error_set(err, PF_E_INVALID,
                            "dispatch costs can add up to %llu, over the maximum %lld",
                            (unsigned long long)max_cost, (long long)PAIR_COST_MAX);
    struct pf_dispatch *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "could not allocate the dispatch solver");
    d->params = pp;
    *out = d;
    return PF_OK;
}

void pf_dispatch_destroy(struct pf_dispatch *d)
{
    if (d == NULL)
        return;
    arena_release(&d->arena, (struct arena_mark){NULL, 0});
    free(d->heap.a);
    free(d->queue.a);
    free(d->row_cls);
    free(d->sparse);
    free(d->fits);
    free(d->fit_tab);
    free(d->cached);
    free(d);
}

/* ------------------------------------------------------------------ checks */

static bool time_ok(int64_t t)
{
    return t >= -PF_DISPATCH_TIME_MAX && t <= PF_DISPATCH_TIME_MAX;
}

static bool ascending(const uint32_t *a, size_t n, size_t *at)
{
    for (size_t i = 1; i < n; i++) {
        if (a[i] <= a[i - 1]) {
            *at = i;
            return false;
        }
    }
    return true;
}

static enum pf_status validate_printer(const struct pf_dispatch_input *in, size_t i,
                                       struct pf_error *err)
{
    const struct pf_dispatch_printer *p = &in->printers[i];
    size_t at;
    if (p->profile >= in->n_profiles)
        return pf_error_set(err, PF_E_INVALID,
                            "printers[%zu].profile %u is not below n_profiles %zu", i, p->profile,
                            in->n_profiles);
    if (p->n_extruders > PF_DISPATCH_EXTRUDERS_MAX)
        return pf_error_set(err, PF_E_INVALID, "printers[%zu].n_extruders %u is over %d", i,
                            p->n_extruders, PF_DISPATCH_EXTRUDERS_MAX);
    if (p->n_queues > PF_DISPATCH_QUEUES_MAX)
        return pf_error_set(err, PF_E_INVALID, "printers[%zu].n_queues %u is over %d", i,
                            p->n_queues, PF_DISPATCH_QUEUES_MAX);
    for (unsigned q = 0; q < p->n_queues; q++)
        if (p->queues[q].weight == 0 || p->queues[q].weight > PF_DISPATCH_QUEUE_WEIGHT_MAX)
            return pf_error_set(err, PF_E_INVALID,
                                "printers[%zu].queues[%u].weight %u is not in 1..%d", i, q,
                                p->queues[q].weight, PF_DISPATCH_QUEUE_WEIGHT_MAX);
    if (p->n_cached > 0 && p->cached == NULL)
        return pf_error_set(err, PF_E_INVALID, "printers[%zu].cached is NULL with n_cached %zu", i,
                            p->n_cached);
    if (!ascending(p->cached, p->n_cached, &at))
        return pf_error_set(err, PF_E_INVALID,
                            "printers[%zu].cached is not strictly ascending at entry %zu", i, at);
    if (p->n_windows > 0 && p->windows == NULL)
        return pf_error_set(err, PF_E_INVALID, "printers[%zu].windows is NULL with n_windows %zu",
                            i, p->n_windows);
    for (size_t w = 0; w < p->n_windows; w++)
        if (!time_ok(p->windows[w].start) || !time_ok(p->windows[w].end))
            return pf_error_set(err, PF_E_INVALID, "printers[%zu].windows[%zu] is out of range", i,
                                w);
    for (size_t w = 0; w < p->n_windows; w++)
        if (p->windows[w].end < p->windows[w].start)
            return pf_error_set(err, PF_E_INVALID,
                                "printers[%zu].windows[%zu] ends before it starts", i, w);
    return PF_OK;
}

static enum pf_status validate_job(const struct pf_dispatch_input *in, size_t i,
                                   struct pf_error *err)
{
    const struct pf_dispatch_job *j = &in->jobs[i];
    size_t at;
    if (j->n_requirements > PF_DISPATCH_REQUIREMENTS_MAX)
        return pf_error_set(err, PF_E_INVALID, "jobs[%zu].n_requirements %u is over %d", i,
                            j->n_requirements, PF_DISPATCH_REQUIREMENTS_MAX);
    for (unsigned r = 0; r < j->n_requirements; r++) {
        uint8_t e = j->requirements[r].extruder;
        if (e != PF_DISPATCH_ANY_EXTRUDER && e >= PF_DISPATCH_EXTRUDERS_MAX)
            return pf_error_set(err, PF_E_INVALID,
                                "jobs[%zu].requirements[%u].extruder %u is over %d", i, r, e,
                                PF_DISPATCH_EXTRUDERS_MAX - 1);
    }
    if (j->n_excluded > 0 && j->excluded == NULL)
        return pf_error_set(err, PF_E_INVALID, "jobs[%zu].excluded is NULL with n_excluded %zu", i,
                            j->n_excluded);
    if (!ascending(j->excluded, j->n_excluded, &at))
        return pf_error_set(err, PF_E_INVALID,
                            "jobs[%zu].excluded is not strictly ascending at entry %zu", i, at);
    if (!time_ok(j->created_at))
        return pf_error_set(err, PF_E_INVALID, "jobs[%zu].created_at %lld is out of range", i,
                            (long long)j->created_at);
    if (job_runnable(j) && in->n_profiles > 0 && j->files == NULL)
        return pf_error_set(err, PF_E_INVALID, "jobs[%zu].files is NULL for a queued job", i);
    return PF_OK;
}

enum pf_status pf_dispatch_validate(const struct pf_dispatch_input *in, struct pf_error *err)
{
    if (in == NULL)
        return pf_error_set(err, PF_E_INVALID, "dispatch input is NULL");
    if (!time_ok(in->now))
        return pf_error_set(err, PF_E_INVALID, "now %lld is out of range", (long long)in->now);
    if (in->n_profiles > PF_DISPATCH_BITS_MAX)
        return pf_error_set(err, PF_E_INVALID, "n_profiles %zu is over %d", in->n_profiles,
                            PF_DISPATCH_BITS_MAX);
    if (in->n_printers > PF_DISPATCH_PRINTERS_MAX)
        return pf_error_set(err, PF_E_INVALID, "n_printers %zu is over %u", in->n_printers,
                            PF_DISPATCH_PRINTERS_MAX);
    if (in->n_jobs > PF_DISPATCH_JOBS_MAX)
        return pf_error_set(err, PF_E_INVALID, "n_jobs %zu is over %u", in->n_jobs,
                            PF_DISPATCH_JOBS_MAX);
    if (in->n_printers > 0 && in->printers == NULL)
        return pf_error_set(err, PF_E_INVALID, "printers is NULL with n_printers %zu",
                            in->n_printers);
    if (in->n_jobs > 0 && in->jobs == NULL)
        return pf_error_set(err, PF_E_INVALID, "jobs is NULL with n_jobs %zu", in->n_jobs);
    for (size_t i = 0; i < in->n_printers; i++) {
        enum pf_status st = validate_printer(in, i, err);
        if (st != PF_OK)
            return st;
    }
    for (size_t i = 0; i < in->n_jobs; i++) {
        enum pf_status st = validate_job(in, i, err);
        if (st != PF_OK)
            return st;
    }
    return PF_OK;
}

enum pf_dispatch_verdict pf_dispatch_check(const struct pf_dispatch_input *in, size_t job,
                                           size_t printer)
{
    const struct pf_dispatch_printer *p = &in->printers[printer];
    const struct pf_dispatch_job *j = &in->jobs[job];
    if (!p->connected)
        return PF_DISPATCH_PRINTER_OFFLINE;
    if (!p->idle)
        return PF_DISPATCH_PRINTER_BUSY;
    if (!p->bed_clear)
        return PF_DISPATCH_BED_NOT_CLEAR;
    if (p->quarantined)
        return PF_DISPATCH_PRINTER_QUARANTINED;
    if (j->state != PF_DISPATCH_JOB_QUEUED)
        return PF_DISPATCH_JOB_NOT_QUEUED;
    if (remaining(j) == 0)
        return PF_DISPATCH_NO_COPIES_LEFT;
    if (queue_weight(p, j->queue) == 0)
        return PF_DISPATCH_QUEUE_NOT_SERVED;
    if (!bits_empty(&j->profiles) && !pf_dispatch_bits_test(&j->profiles, p->profile))
        return PF_DISPATCH_PROFILE_NOT_ALLOWED;
    if (j->files == NULL || p->profile >= in->n_profiles ||
        j->files[p->profile].digest == PF_DISPATCH_NO_FILE)
        return PF_DISPATCH_NO_FILE_FOR_PROFILE;
    if (!bits_subset(&j->labels, &p->labels))
        return PF_DISPATCH_LABEL_MISSING;
    if (!assign_requirements(j->requirements, j->n_requirements, p, 0))
        return PF_DISPATCH_MATERIAL_MISSING;
    if (is_excluded(j, p->id))
        return PF_DISPATCH_EXCLUDED;
    if (!fits_window(p, in->now, j->files[p->profile].est_seconds))
        return PF_DISPATCH_OUTSIDE_WINDOW;
    return PF_DISPATCH_FEASIBLE;
}

int64_t pf_dispatch_cost(const struct pf_dispatch_params *params,
                         const struct pf_dispatch_input *in, size_t job, size_t printer)
{
    struct pf_dispatch_params pp;
    params_fill(&pp, params);
    const struct pf_dispatch_printer *p = &in->printers[printer];
    const struct pf_dispatch_job *j = &in->jobs[job];
    int64_t cost = age_cost(&pp, in->now, j->created_at);
    cost += class_cost(&pp, &j->material, p, queue_weight(p, j->queue));
    bool has_file = j->files != NULL && p->profile < in->n_profiles &&
                    j->files[p->profile].digest != PF_DISPATCH_NO_FILE;
    if (!has_file || !is_cached(p, j->files[p->profile].digest))
        cost += pp.file_missing_cost;
    return cost;
}

const char *pf_dispatch_verdict_name(enum pf_dispatch_verdict v)
{
    static const char *const names[PF_DISPATCH_VERDICT_COUNT] = {
        [PF_DISPATCH_FEASIBLE] = "feasible",
        [PF_DISPATCH_PRINTER_OFFLINE] = "printer_offline",
        [PF_DISPATCH_PRINTER_BUSY] = "printer_busy",
        [PF_DISPATCH_BED_NOT_CLEAR] = "bed_not_clear",
        [PF_DISPATCH_PRINTER_QUARANTINED] = "printer_quarantined",
        [PF_DISPATCH_JOB_NOT_QUEUED] = "job_not_queued",
        [PF_DISPATCH_NO_COPIES_LEFT] = "no_copies_left",
        [PF_DISPATCH_QUEUE_NOT_SERVED] = "queue_not_served",
        [PF_DISPATCH_PROFILE_NOT_ALLOWED] = "profile_not_allowed",
        [PF_DISPATCH_NO_FILE_FOR_PROFILE] = "no_file_for_profile",
        [PF_DISPATCH_LABEL_MISSING] = "label_missing",
        [PF_DISPATCH_MATERIAL_MISSING] = "material_missing",
        [PF_DISPATCH_EXCLUDED] = "excluded",
        [PF_DISPATCH_OUTSIDE_WINDOW] = "outside_window",
    };
    if ((unsigned)v >= PF_DISPATCH_VERDICT_COUNT)
        return "unknown";
    return names[v];
}

/* ------------------------------------------------------------------ round state */

/* A runnable job; the array of them is sorted into dispatch order (priority
 * down, then age, then input index), and a band is a run of equal priority. */
struct rjob {
    const struct pf_dispatch_job *job;
    int64_t created;
    int64_t age; /* age cost */
    uint32_t index;
    int32_t priority;
    uint32_t remaining;
};

/* The constraints that make jobs interchangeable for feasibility and for the
 * class-level cost terms. Built on zeroed memory field by field, so padding is
 * zero and the bytes can be hashed and compared. */
struct sig_requirement {
    uint16_t extruder;
    uint16_t material;
    uint16_t colour;
    uint16_t zero;
};

struct signature {
    uint32_t queue;
    uint16_t material;
    uint16_t colour;
    uint32_t n_requirements;
    uint32_t zero;
    struct sig_requirement req[PF_DISPATCH_REQUIREMENTS_MAX];
    struct pf_dispatch_bits labels;
    struct pf_dispatch_bits profiles; /* allowed and with a file */
};

/* A job and its estimate for one profile, for window queries. */
struct est_entry {
    uint32_t est;
    uint32_t job;
};

/* Bloom-style summaries of materials, for a quick rejection before the
 * exact requirement check: a bit per material, colour and pair (mod 64). */
struct material_masks {
    uint64_t material;
    uint64_t colour;
    uint64_t pair;
};

struct job_class {
    struct signature sig;
    struct material_masks need;
    const struct pf_dispatch_job *rep; /* a member, for its requirements */
    uint64_t hash;
    uint32_t start; /* members in band->class_jobs[start .. start + n), oldest first */
    uint32_t n;
    uint32_t front; /* members before it are saturated (listed by enough printers) */
    uint32_t repair_done;
    struct est_entry **est; /* per profile, members sorted by estimate; lazily built */
};

/* What build_rows tests first, packed per class in profile order so that the
 * scan of one printer's profile stays in cache. */
struct class_filter {
    struct material_masks need;
    uint64_t labels0; /* labels below 64 */
    uint32_t cls;
    uint32_t queue;
    uint8_t high_labels; /* also requires labels of 64 and above */
    uint8_t n_requirements;
    uint8_t pad[6];
};

/* A feasible class of a row, with the class-level cost terms. */
struct row_class {
    uint32_t cls;
    uint32_t pad;
    int64_t cost;
};

struct edge {
    uint32_t job; /* band offset */
    uint32_t pad;
    int64_t cost;
};

/* A printer free at the start of a band with at least one feasible class. */
struct row {
    uint32_t printer; /* index into in->printers */
    uint32_t usable;  /* index into the round's usable list */
    size_t cls_start;
    uint32_t cls_n;
    uint32_t edge_n;
    size_t edge_start;
    uint32_t match; /* band offset of its job, DUMMY, or NIL before its search */
    uint32_t next;  /* rows assigned to the same job */
    uint32_t prev;
    uint32_t seen; /* repair epoch */
    int64_t match_cost;
};

/* (digest, profile) -> band jobs whose file it is: the cached-file route. */
struct digest_node {
    uint32_t digest;
    uint32_t job;
    uint32_t profile;
    uint32_t next;
};

enum stream_state { STREAM_COLD, STREAM_READY, STREAM_DROPPED };

/* The members of a class whose print ends inside a set of windows (those of
 * one or more printers with the same windows and profile), oldest first, in
 * d->sparse[start .. start + n). Shared by every printer with that set. */
struct fit_list {
    uint64_t hash;
    const struct pf_dispatch_window *windows; /* of the first printer, to compare */
    size_t n_windows;
    uint32_t cls;
    uint32_t profile;
    uint32_t start;
    uint32_t n;
    uint32_t front; /* members before it are saturated */
    uint32_t pad;
};

/* Candidate-merge stream: the members of one class a printer may take. */
struct stream {
    uint32_t cls;
    uint32_t pos;
    uint32_t fit; /* index of its fit list (printers with windows), or NIL */
    uint32_t pad;
    int64_t base; /* class-level cost for this printer */
    enum stream_state state;
};

struct band {
    struct pf_dispatch *d;
    const struct pf_dispatch_params *pp;
    const struct pf_dispatch_input *in;
    const struct rjob *jobs; /* this band's jobs, oldest first */
    uint32_t n;
    /* per band job */
    uint32_t *cls;
    uint32_t *cap;
    uint32_t *used;
    uint32_t *subs;
    uint32_t *head; /* first row assigned to it */
    uint32_t *listed;
    uint32_t *seen; /* repair epoch */
    uint32_t *from; /* repair: the row that reached it */
    /* classes */
    struct job_class *classes;
    uint32_t n_classes;
    uint32_t *class_jobs;
    uint32_t *prof_start; /* classes by profile */
    struct class_filter *prof_cls;
    uint32_t *cls_mark; /* per class: stamp of the printer being listed */
    int64_t *cls_cost;
    /* rows and edges */
    struct row *rows;
    uint32_t n_rows;
    struct edge *edges;
    size_t n_edges;
    uint32_t stamp;
    /* cached-file index */
    struct digest_node *dnodes;
    uint32_t *dtab;
    uint32_t dmask;
    uint32_t spread; /* saturation threshold per copy */
    uint32_t *queue;
    size_t sparse_n; /* entries of d->sparse in use */
    uint32_t n_fits;
    uint32_t fit_mask; /* d->fit_tab holds fit_mask + 1 slots */
    size_t repaired;
    size_t searched;
};

static uint64_t mix(uint64_t h, uint64_t w)
{
    h ^= w;
    h *= 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
}

static uint64_t signature_hash(const struct signature *s)
{
    _Static_assert(sizeof(struct signature) % 8 == 0, "signature hashes as words");
    uint64_t h = 0x243f6a8885a308d3ull;
    const unsigned char *b = (const unsigned char *)s;
    for (size_t i = 0; i < sizeof(*s); i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = mix(h, w);
    }
    return h;
}

static bool req_before(const struct sig_requirement *a, const struct sig_requirement *b)
{
    if (a->extruder != b->extruder)
        return a->extruder < b->extruder;
    if (a->material != b->material)
        return a->material < b->material;
    return a->colour < b->colour;
}

static void signature_of(struct signature *s, const struct pf_dispatch_job *j, size_t n_profiles)
{
    memset(s, 0, sizeof(*s));
    s->queue = j->queue;
    s->material = j->material.material;
    s->colour = j->material.colour;
    s->n_requirements = j->n_requirements;
    for (unsigned i = 0; i < j->n_requirements; i++) {
        struct sig_requirement r = {j->requirements[i].extruder, j->requirements[i].want.material,
                                    j->requirements[i].want.colour, 0};
        unsigned k = i;
        while (k > 0 && req_before(&r, &s->req[k - 1])) {
            s->req[k] = s->req[k - 1];
            k--;
        }
        s->req[k] = r;
    }
    for (unsigned k = 0; k < PF_DISPATCH_BITS_MAX / 64; k++)
        s->labels.w[k] = j->labels.w[k];
    bool any_profile = bits_empty(&j->profiles);
    for (size_t q = 0; q < n_profiles; q++)
        if (j->files[q].digest != PF_DISPATCH_NO_FILE &&
            (any_profile || pf_dispatch_bits_test(&j->profiles, (unsigned)q)))
            pf_dispatch_bits_set(&s->profiles, (unsigned)q);
}

/* The class's requirements back in the public form, canonical order. */
static bool class_requirements_met(const struct job_class *c, const struct pf_dispatch_printer *p)
{
    struct pf_dispatch_requirement r[PF_DISPATCH_REQUIREMENTS_MAX];
    unsigned n = c->sig.n_requirements; /* validated: at most the maximum */
    if (n > PF_DISPATCH_REQUIREMENTS_MAX)
        n = PF_DISPATCH_REQUIREMENTS_MAX;
    for (unsigned i = 0; i < n; i++) {
        r[i].extruder = (uint8_t)c->sig.req[i].extruder;
        r[i].want.material = c->sig.req[i].material;
        r[i].want.colour = c->sig.req[i].colour;
    }
    return assign_requirements(r, n, p, 0);
}

static void mask_add(struct material_masks *m, const struct pf_dispatch_material *x)
{
    if (x->material != 0)
        m->material |= (uint64_t)1 << (x->material & 63);
    if (x->colour != 0)
        m->colour |= (uint64_t)1 << (x->colour & 63);
    if (x->material != 0 && x->colour != 0)
        m->pair |= (uint64_t)1 << ((x->material * 31u + x->colour) & 63);
}

static const struct pf_dispatch_printer *row_printer(const struct band *b, uint32_t r)
{
    return &b->in->printers[b->rows[r].printer];
}

static bool saturated(const struct band *b, uint32_t j)
{
    return b->subs[j] >= (uint64_t)b->spread * b->cap[j];
}

/* Job-level rules of one pair whose class is feasible: exclusion, window. */
static bool job_ok(const struct band *b, uint32_t j, const struct pf_dispatch_printer *p)
{
    const struct pf_dispatch_job *job = b->jobs[j].job;
    if (job->n_excluded > 0 && is_excluded(job, p->id))
        return false;
    return !p->needs_hands || fits_window(p, b->in->now, job->files[p->profile].est_seconds);
}

static int64_t file_cost(const struct band *b, uint32_t j, const struct pf_dispatch_printer *p)
{
    if (p->n_cached > 0 && is_cached(p, b->jobs[j].job->files[p->profile].digest))
        return 0;
    return b->pp->file_missing_cost;
}

static void row_link(struct band *b, uint32_t r, uint32_t j, int64_t cost)
{
    struct row *row = &b->rows[r];
    row->match = j;
    row->match_cost = cost;
    row->prev = NIL;
    row->next = b->head[j];
    if (row->next != NIL)
        b->rows[row->next].prev = r;
    b->head[j] = r;
    b->used[j]++;
}

static void row_unlink(struct band *b, uint32_t r)
{
    struct row *row = &b->rows[r];
    if (row->match >= b->n)
        return;
    if (row->prev != NIL)
        b->rows[row->prev].next = row->next;
    else
        b->head[row->match] = row->next;
    if (row->next != NIL)
        b->rows[row->next].prev = row->prev;
    b->used[row->match]--;
    row->match = NIL;
}

/* ------------------------------------------------------------------ classes */

static enum pf_status build_classes(struct band *b, struct pf_error *err)
{
    struct arena *a = &b->d->arena;
    size_t n_profiles = b->in->n_profiles;
    b->classes = arena_alloc(a, b->n, sizeof(*b->classes));
    b->cls = arena_alloc(a, b->n, sizeof(*b->cls));
    size_t tab_size = 16;
    while (tab_size < 2 * (size_t)b->n)
        tab_size *= 2;
    uint32_t *tab = arena_alloc(a, tab_size, sizeof(*tab));
    if (b->classes == NULL || b->cls == NULL || tab == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for %u job classes", b->n);
    memset(tab, 0xff, tab_size * sizeof(*tab));
    b->n_classes = 0;
    for (uint32_t j = 0; j < b->n; j++) {
        struct job_class *c = &b->classes[b->n_classes];
        signature_of(&c->sig, b->jobs[j].job, n_profiles);
        uint64_t h = signature_hash(&c->sig);
        size_t slot = (size_t)h & (tab_size - 1);
        while (tab[slot] != NIL) {
            struct job_class *o = &b->classes[tab[slot]];
            if (o->hash == h && memcmp(&o->sig, &c->sig, sizeof(c->sig)) == 0)
                break;
            slot = (slot + 1) & (tab_size - 1);
        }
        if (tab[slot] == NIL) {
            c->hash = h;
            c->rep = b->jobs[j].job;
            memset(&c->need, 0, sizeof(c->need));
            for (unsigned i = 0; i < c->rep->n_requirements; i++)
                mask_add(&c->need, &c->rep->requirements[i].want);
            c->n = 0;
            c->front = 0;
            c->repair_done = 0;
            c->est = NULL;
            tab[slot] = b->n_classes++;
        }
        b->cls[j] = tab[slot];
        b->classes[tab[slot]].n++;
    }
    /* members, oldest first */
    b->class_jobs = arena_alloc(a, b->n, sizeof(*b->class_jobs));
    b->cls_mark = arena_zalloc(a, b->n_classes, sizeof(*b->cls_mark));
    b->cls_cost = arena_alloc(a, b->n_classes, sizeof(*b->cls_cost));
    b->prof_start = arena_zalloc(a, n_profiles + 1, sizeof(*b->prof_start));
    if (b->class_jobs == NULL || b->cls_mark == NULL || b->cls_cost == NULL ||
        b->prof_start == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for %u job classes", b->n);
    uint32_t off = 0;
    for (uint32_t c = 0; c < b->n_classes; c++) {
        b->classes[c].start = off;
        off += b->classes[c].n;
        b->classes[c].n = 0;
    }
    for (uint32_t j = 0; j < b->n; j++) {
        struct job_class *c = &b->classes[b->cls[j]];
        b->class_jobs[c->start + c->n++] = j;
    }
    /* classes by profile */
    size_t total = 0;
    for (uint32_t c = 0; c < b->n_classes; c++)
        for (size_t q = 0; q < n_profiles; q++)
            if (pf_dispatch_bits_test(&b->classes[c].sig.profiles, (unsigned)q)) {
                b->prof_start[q + 1]++;
                total++;
            }
    for (size_t q = 0; q < n_profiles; q++)
        b->prof_start[q + 1] += b->prof_start[q];
    b->prof_cls = arena_alloc(a, total, sizeof(*b->prof_cls));
    uint32_t *fill = arena_alloc(a, n_profiles + 1, sizeof(*fill));
    if ((b->prof_cls == NULL && total > 0) || fill == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for %u job classes", b->n);
    memcpy(fill, b->prof_start, (n_profiles + 1) * sizeof(*fill));
    for (uint32_t c = 0; c < b->n_classes; c++) {
        const struct job_class *k = &b->classes[c];
        struct class_filter f;
        memset(&f, 0, sizeof(f));
        f.need = k->need;
        f.labels0 = k->sig.labels.w[0];
        f.cls = c;
        f.queue = k->sig.queue;
        for (unsigned w = 1; w < PF_DISPATCH_BITS_MAX / 64; w++)
            f.high_labels |= k->sig.labels.w[w] != 0;
        f.n_requirements = (uint8_t)k->sig.n_requirements;
        for (size_t q = 0; q < n_profiles; q++)
            if (pf_dispatch_bits_test(&k->sig.profiles, (unsigned)q))
                b->prof_cls[fill[q]++] = f;
    }
    return PF_OK;
}

static int cmp_est(const void *x, const void *y)
{
    const struct est_entry *a = x, *b = y;
    if (a->est != b->est)
        return a->est < b->est ? -1 : 1;
    return (a->job > b->job) - (a->job < b->job);
}

/* The members of class c sorted by their estimate for profile q. */
static const struct est_entry *class_estimates(struct band *b, uint32_t c, uint16_t q)
{
    struct job_class *k = &b->classes[c];
    if (k->est == NULL) {
        k->est = arena_zalloc(&b->d->arena, b->in->n_profiles, sizeof(*k->est));
        if (k->est == NULL)
            return NULL;
    }
    if (k->est[q] == NULL) {
        struct est_entry *e = arena_alloc(&b->d->arena, k->n, sizeof(*e));
        if (e == NULL)
            return NULL;
        for (uint32_t i = 0; i < k->n; i++) {
            uint32_t j = b->class_jobs[k->start + i];
            e[i].est = b->jobs[j].job->files[q].est_seconds;
            e[i].job = j;
        }
        qsort(e, k->n, sizeof(*e), cmp_est);
        k->est[q] = e;
    }
    return k->est[q];
}

static uint32_t est_lower_bound(const struct est_entry *e, uint32_t n, int64_t v)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if ((int64_t)e[mid].est < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ------------------------------------------------------------------ rows */

static int cmp_rows(const void *x, const void *y)
{
    const struct row *a = x, *b = y;
    if (a->cls_n != b->cls_n)
        return a->cls_n < b->cls_n ? -1 : 1;
    return (a->printer > b->printer) - (a->printer < b->printer);
}

static enum pf_status build_rows(struct band *b, const uint32_t *usable, const bool *taken,
                                 size_t n_usable, struct pf_error *err)
{
    struct pf_dispatch *d = b->d;
    b->rows = arena_alloc(&d->arena, n_usable, sizeof(*b->rows));
    if (b->rows == NULL && n_usable > 0)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for %zu printers", n_usable);
    b->n_rows = 0;
    size_t n_rc = 0;
    for (size_t u = 0; u < n_usable; u++) {
        if (taken[u])
            continue;
        const struct pf_dispatch_printer *p = &b->in->printers[usable[u]];
        struct material_masks have = {0, 0, 0};
        for (unsigned e = 0; e < p->n_extruders; e++)
            mask_add(&have, &p->extruders[e]);
        const uint64_t labels0 = p->labels.w[0];
        const uint32_t lo = b->prof_start[p->profile], hi = b->prof_start[p->profile + 1];
        if (!reserve((void **)&d->row_cls, &d->row_cls_cap, n_rc + (hi - lo), sizeof(*d->row_cls)))
            return pf_error_set(err, PF_E_RESOURCE, "out of memory for feasible classes");
        size_t start = n_rc;
        for (uint32_t k = lo; k < hi; k++) {
            const struct class_filter *f = &b->prof_cls[k];
            if (((f->need.material & ~have.material) | (f->need.colour & ~have.colour) |
                 (f->need.pair & ~have.pair) | (f->labels0 & ~labels0)) != 0)
                continue;
            const struct job_class *c = &b->classes[f->cls];
            if (f->high_labels && !bits_subset(&c->sig.labels, &p->labels))
                continue;
            uint32_t w = queue_weight(p, f->queue);
            if (w == 0 || (f->n_requirements > 0 && !class_requirements_met(c, p)))
                continue;
            d->row_cls[n_rc].cls = f->cls;
            d->row_cls[n_rc].pad = 0;
            d->row_cls[n_rc].cost = class_cost(b->pp, &c->rep->material, p, w);
            n_rc++;
        }
        if (n_rc == start)
            continue;
        struct row *r = &b->rows[b->n_rows++];
        r->printer = usable[u];
        r->usable = (uint32_t)u;
        r->cls_start = start;
        r->cls_n = (uint32_t)(n_rc - start);
        r->edge_start = 0;
        r->edge_n = 0;
        r->match = NIL;
        r->next = r->prev = NIL;
        r->seen = 0;
        r->match_cost = 0;
    }
    /* the most constrained printers list their candidates first */
    qsort(b->rows, b->n_rows, sizeof(*b->rows), cmp_rows);
    return PF_OK;
}

/* ------------------------------------------------------------------ candidates */

static uint64_t digest_hash(uint32_t d)
{
    return mix(0x452821e638d01377ull, d);
}

static enum pf_status build_digest_index(struct band *b, struct pf_error *err)
{
    b->dnodes = NULL;
    b->dtab = NULL;
    bool any_cache = false;
    for (uint32_t r = 0; r < b->n_rows && !any_cache; r++)
        any_cache = row_printer(b, r)->n_cached > 0;
    if (!any_cache)
        return PF_OK;
    size_t n_profiles = b->in->n_profiles;
    size_t count = 0;
    for (uint32_t j = 0; j < b->n; j++)
        for (size_t q = 0; q < n_profiles; q++)
            if (pf_dispatch_bits_test(&b->classes[b->cls[j]].sig.profiles, (unsigned)q))
                count++;
    size_t tab_size = 16;
    while (tab_size < 2 * count)
        tab_size *= 2;
    b->dnodes = arena_alloc(&b->d->arena, count, sizeof(*b->dnodes));
    b->dtab = arena_alloc(&b->d->arena, tab_size, sizeof(*b->dtab));
    if ((b->dnodes == NULL && count > 0) || b->dtab == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for the file index");
    memset(b->dtab, 0xff, tab_size * sizeof(*b->dtab));
    b->dmask = (uint32_t)(tab_size - 1);
    /* youngest first, each prepended: every chain ends up oldest first */
    uint32_t k = 0;
    for (uint32_t j = b->n; j-- > 0;) {
        const struct pf_dispatch_job *job = b->jobs[j].job;
        for (size_t q = 0; q < n_profiles; q++) {
            if (!pf_dispatch_bits_test(&b->classes[b->cls[j]].sig.profiles, (unsigned)q))
                continue;
            struct digest_node *nd = &b->dnodes[k];
            nd->digest = job->files[q].digest;
            nd->job = j;
            nd->profile = (uint32_t)q;
            uint32_t slot = (uint32_t)digest_hash(nd->digest) & b->dmask;
            while (b->dtab[slot] != NIL && b->dnodes[b->dtab[slot]].digest != nd->digest)
                slot = (slot + 1) & b->dmask;
            nd->next = b->dtab[slot];
            b->dtab[slot] = k++;
        }
    }
    return PF_OK;
}

static uint32_t digest_lookup(const struct band *b, uint32_t digest)
{
    uint32_t slot = (uint32_t)digest_hash(digest) & b->dmask;
    while (b->dtab[slot] != NIL) {
        if (b->dnodes[b->dtab[slot]].digest == digest)
            return b->dtab[slot];
        slot = (slot + 1) & b->dmask;
    }
    return NIL;
}

/* Moves s to its next member that printer p may take and has not listed;
 * with skip_saturated also past members listed by enough printers. */
static bool stream_settle(struct band *b, struct stream *s, const struct pf_dispatch_printer *p,
                          bool skip_saturated)
{
    struct job_class *c = &b->classes[s->cls];
    struct fit_list *f = s->fit == NIL ? NULL : &b->d->fits[s->fit];
    const uint32_t *members = f ? b->d->sparse + f->start : b->class_jobs + c->start;
    uint32_t n = f ? f->n : c->n;
    uint32_t *front = f ? &f->front : &c->front;
    if (skip_saturated) {
        while (*front < n && saturated(b, members[*front]))
            (*front)++;
        if (s->pos < *front)
            s->pos = *front;
    }
    for (; s->pos < n; s->pos++) {
        uint32_t j = members[s->pos];
        if (b->listed[j] != b->stamp && !(skip_saturated && saturated(b, j)) && job_ok(b, j, p))
            return true;
    }
    return false;
}

static uint32_t stream_job(const struct band *b, const struct stream *s)
{
    if (s->fit == NIL)
        return b->class_jobs[b->classes[s->cls].start + s->pos];
    return b->d->sparse[b->d->fits[s->fit].start + s->pos];
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return (a > b) - (a < b);
}

static uint64_t windows_hash(uint32_t cls, const struct pf_dispatch_printer *p)
{
    uint64_t h = mix(mix(mix(0x13198a2e03707344ull, cls), p->profile), p->n_windows);
    for (size_t w = 0; w < p->n_windows; w++)
        h = mix(mix(h, (uint64_t)p->windows[w].start), (uint64_t)p->windows[w].end);
    return h;
}

static bool fit_list_matches(const struct fit_list *f, uint64_t h, uint32_t cls,
                             const struct pf_dispatch_printer *p)
{
    return f->hash == h && f->cls == cls && f->profile == p->profile &&
           f->n_windows == p->n_windows &&
           memcmp(f->windows, p->windows, p->n_windows * sizeof(*p->windows)) == 0;
}

static bool fit_tab_insert(struct band *b, uint32_t idx)
{
    struct pf_dispatch *d = b->d;
    if ((size_t)(b->n_fits + 1) * 2 > (size_t)b->fit_mask + 1) {
        size_t cap = ((size_t)b->fit_mask + 1) * 2;
        if (!reserve((void **)&d->fit_tab, &d->fit_tab_cap, cap, sizeof(*d->fit_tab)))
            return false;
        b->fit_mask = (uint32_t)(cap - 1);
        memset(d->fit_tab, 0xff, cap * sizeof(*d->fit_tab));
        for (uint32_t i = 0; i < b->n_fits; i++) {
            uint32_t slot = (uint32_t)d->fits[i].hash & b->fit_mask;
            while (d->fit_tab[slot] != NIL)
                slot = (slot + 1) & b->fit_mask;
            d->fit_tab[slot] = i;
        }
    }
    uint32_t slot = (uint32_t)d->fits[idx].hash & b->fit_mask;
    while (d->fit_tab[slot] != NIL)
        slot = (slot + 1) & b->fit_mask;
    d->fit_tab[slot] = idx;
    return true;
}

/* The fit list of class cls for printer p's windows and profile, built on
 * first use: from the estimate index when few members fit (sorted back into
 * age order), else by one pass over the class. NIL when memory runs out. */
static uint32_t fit_list_get(struct band *b, uint32_t cls, const struct pf_dispatch_printer *p)
{
    struct pf_dispatch *d = b->d;
    uint64_t h = windows_hash(cls, p);
    for (uint32_t slot = (uint32_t)h & b->fit_mask; d->fit_tab[slot] != NIL;
         slot = (slot + 1) & b->fit_mask)
        if (fit_list_matches(&d->fits[d->fit_tab[slot]], h, cls, p))
            return d->fit_tab[slot];

    const struct job_class *c = &b->classes[cls];
    const struct est_entry *e = class_estimates(b, cls, p->profile);
    if (e == NULL ||
        !reserve((void **)&d->fits, &d->fits_cap, (size_t)b->n_fits + 1, sizeof(*d->fits)))
        return NIL;
    int64_t now = b->in->now;
    size_t fit = 0;
    for (size_t w = 0; w < p->n_windows; w++) {
        int64_t lo = p->windows[w].start - now, hi = p->windows[w].end - now;
        if (lo < 1)
            lo = 1;
        if (hi > lo)
            fit += est_lower_bound(e, c->n, hi) - est_lower_bound(e, c->n, lo);
    }
    size_t room = fit < c->n ? fit : c->n;
    if (!reserve((void **)&d->sparse, &d->sparse_cap, b->sparse_n + room, sizeof(*d->sparse)))
        return NIL;
    size_t at = b->sparse_n, m = at;
    if (fit > 0 && fit * SPARSE_FACTOR < c->n) {
        for (size_t w = 0; w < p->n_windows; w++) {
            int64_t lo = p->windows[w].start - now, hi = p->windows[w].end - now;
            if (lo < 1)
                lo = 1;
            if (hi <= lo)
                continue;
            uint32_t end = est_lower_bound(e, c->n, hi);
            for (uint32_t i = est_lower_bound(e, c->n, lo); i < end; i++)
                d->sparse[m++] = e[i].job;
        }
        qsort(d->sparse + at, m - at, sizeof(*d->sparse), cmp_u32);
        size_t k = at;
        for (size_t i = at; i < m; i++) /* overlapping windows list a member twice */
            if (k == at || d->sparse[i] != d->sparse[k - 1])
                d->sparse[k++] = d->sparse[i];
        m = k;
    } else if (fit > 0) {
        for (uint32_t i = 0; i < c->n; i++) {
            uint32_t j = b->class_jobs[c->start + i];
            if (fits_window(p, now, b->jobs[j].job->files[p->profile].est_seconds))
                d->sparse[m++] = j;
        }
    }
    struct fit_list *f = &d->fits[b->n_fits];
    memset(f, 0, sizeof(*f));
    f->hash = h;
    f->windows = p->windows;
    f->n_windows = p->n_windows;
    f->cls = cls;
    f->profile = p->profile;
    f->start = (uint32_t)at;
    f->n = (uint32_t)(m - at);
    b->sparse_n = m;
    if (!fit_tab_insert(b, b->n_fits))
        return NIL;
    return b->n_fits++;
}

/* Prepares the stream of class s->cls for printer p: a printer with windows
 * walks the fit list of its windows. *usable is false when no member can end
 * inside them (the class is then dropped for p). */
static enum pf_status stream_init(struct band *b, struct stream *s,
                                  const struct pf_dispatch_printer *p, bool *usable,
                                  struct pf_error *err)
{
    s->pos = 0;
    s->fit = NIL;
    *usable = true;
    if (!p->needs_hands)
        return PF_OK;
    s->fit = fit_list_get(b, s->cls, p);
    if (s->fit == NIL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for window candidates");
    *usable = b->d->fits[s->fit].n > 0;
    return PF_OK;
}

static bool edge_before(const struct edge *a, const struct edge *b)
{
    return a->cost < b->cost || (a->cost == b->cost && a->job < b->job);
}

static void add_edge(struct band *b, struct row *row, uint32_t j, int64_t cost)
{
    b->edges[b->n_edges].job = j;
    b->edges[b->n_edges].pad = 0;
    b->edges[b->n_edges].cost = cost;
    b->n_edges++;
    row->edge_n++;
    b->listed[j] = b->stamp;
    b->subs[j]++;
}

static int64_t stream_key(const struct band *b, const struct stream *s, uint32_t j)
{
    return b->jobs[j].age + s->base + b->pp->file_missing_cost;
}

/* Lists row r's candidate jobs (see dispatch.h): the cheapest feasible jobs
 * whose file it caches, then a merge of its feasible classes in cost order. */
static enum pf_status list_candidates(struct band *b, uint32_t r, struct stream *streams,
                                      struct pf_error *err)
{
    struct pf_dispatch *d = b->d;
    struct row *row = &b->rows[r];
    const struct pf_dispatch_printer *p = row_printer(b, r);
    const uint32_t K = b->pp->candidates, K0 = b->pp->shared_candidates;
    struct row_class *rcs = d->row_cls + row->cls_start;
    struct heap *h = &d->heap;
    enum pf_status st;

    b->stamp++;
    row->edge_start = b->n_edges;
    row->edge_n = 0;
    for (uint32_t i = 0; i < row->cls_n; i++) {
        b->cls_mark[rcs[i].cls] = b->stamp;
        b->cls_cost[rcs[i].cls] = rcs[i].cost;
    }

    if (p->n_cached > 0 && b->dtab != NULL) {
        /* the K cheapest feasible jobs whose file p caches, kept sorted by
         * (cost, job) in d->cached; job-level rules only for contenders */
        if (!reserve((void **)&d->cached, &d->cached_cap, K, sizeof(*d->cached)))
            return pf_error_set(err, PF_E_RESOURCE, "out of memory for cached candidates");
        size_t n = 0;
        for (size_t i = 0; i < p->n_cached; i++) {
            for (uint32_t k = digest_lookup(b, p->cached[i]); k != NIL; k = b->dnodes[k].next) {
                uint32_t j = b->dnodes[k].job;
                if (b->dnodes[k].profile != p->profile)
                    continue;
                /* oldest first: once the age alone loses, so does the rest */
                if (n == K && b->jobs[j].age >= d->cached[K - 1].cost)
                    break;
                if (b->cls_mark[b->cls[j]] != b->stamp)
                    continue;
                int64_t cost = b->jobs[j].age + b->cls_cost[b->cls[j]];
                struct edge e = {j, 0, cost};
                if ((n == K && !edge_before(&e, &d->cached[K - 1])) || !job_ok(b, j, p))
                    continue;
                size_t at = n < K ? n++ : K - 1;
                while (at > 0 && edge_before(&e, &d->cached[at - 1])) {
                    d->cached[at] = d->cached[at - 1];
                    at--;
                }
                d->cached[at] = e;
            }
        }
        for (size_t i = 0; i < n; i++)
            add_edge(b, row, d->cached[i].job, d->cached[i].cost);
    }

    /* one stream per feasible class, prepared lazily: a stream enters the
     * merge keyed by its oldest member, a lower bound, and is set up
     * (windows, job-level rules) only when that bound comes first, so classes
     * that cannot contribute cost one heap entry. Keys assume the file is
     * not cached (those that are came through the cached route above, up to
     * K); the edge gets the exact cost. */
    h->n = 0;
    for (uint32_t i = 0; i < row->cls_n; i++) {
        struct stream *s = &streams[i];
        s->cls = rcs[i].cls;
        s->pos = 0;
        s->fit = NIL;
        s->pad = 0;
        s->base = rcs[i].cost;
        s->state = STREAM_COLD;
        uint32_t first = b->class_jobs[b->classes[s->cls].start];
        if (!heap_append(h, stream_key(b, s, first), first, i))
            goto out_of_memory;
    }
    heap_build(h);
    uint32_t picked = 0;
    bool room = false; /* past K0 and the unsaturated jobs: take any */
    for (;;) {
        struct heap_entry top;
        while (picked < K && heap_pop(h, &top)) {
            struct stream *s = &streams[top.node];
            bool skip = !room && picked >= K0;
            if (s->state == STREAM_COLD) {
                bool usable;
                st = stream_init(b, s, p, &usable, err);
                if (st != PF_OK)
                    return st;
                s->state = usable ? STREAM_READY : STREAM_DROPPED;
                if (usable && stream_settle(b, s, p, skip) &&
                    !heap_push(h, stream_key(b, s, stream_job(b, s)), stream_job(b, s), top.node))
                    goto out_of_memory;
                continue;
            }
            uint32_t j = stream_job(b, s);
            if (skip && saturated(b, j)) {
                if (stream_settle(b, s, p, true) &&
                    !heap_push(h, stream_key(b, s, stream_job(b, s)), stream_job(b, s), top.node))
                    goto out_of_memory;
                continue;
            }
            /* the key assumed the file missing; a cached one costs less */
            add_edge(b, row, j, top.key - b->pp->file_missing_cost + file_cost(b, j, p));
            picked++;
            s->pos++;
            if (stream_settle(b, s, p, !room && picked >= K0) &&
                !heap_push(h, stream_key(b, s, stream_job(b, s)), stream_job(b, s), top.node))
                goto out_of_memory;
        }
        if (picked >= K || room)
            break;
        /* room left: the cheapest remaining jobs, listed by others or not */
        room = true;
        h->n = 0;
        for (uint32_t i = 0; i < row->cls_n; i++) {
            struct stream *s = &streams[i];
            s->pos = 0;
            if (s->state == STREAM_COLD) {
                uint32_t first = b->class_jobs[b->classes[s->cls].start];
                if (!heap_append(h, stream_key(b, s, first), first, i))
                    goto out_of_memory;
            } else if (s->state == STREAM_READY && stream_settle(b, s, p, false) &&
                       !heap_append(h, stream_key(b, s, stream_job(b, s)), stream_job(b, s), i)) {
                goto out_of_memory;
            }
        }
        heap_build(h);
    }
    /* forget the classes the windows rule out, for the repair pass */
    uint32_t keep = 0;
    for (uint32_t i = 0; i < row->cls_n; i++)
        if (streams[i].state != STREAM_DROPPED)
            rcs[keep++] = rcs[i];
    row->cls_n = keep;
    return PF_OK;

out_of_memory:
    return pf_error_set(err, PF_E_RESOURCE, "out of memory while listing candidates");
}

/* ------------------------------------------------------------------ matching */

/* Per node of the residual graph: potential, tentative distance, the search
 * that labelled (2 * gen) or settled (2 * gen + 1) it, and its predecessor. */
struct ssp_node {
    int64_t pi;
    int64_t dist;
    uint32_t mark;
    uint32_t pred;
};

/* The graph one band's matching runs on. Left nodes are the roots of the
 * searches and take one right node each, or stay idle at cost U; right nodes
 * have capacities. Row side: left = printers, right = jobs. Job side, used
 * when a band's copies are fewer than its printers (so that searches start
 * from the scarce side and rarely fail): left = one node per copy, right =
 * printers of capacity 1. Node numbers: left 0..nl-1, right nl..nl+nr-1, the
 * sink T = nl+nr. Between free right nodes at equal distance the one of lower
 * tie rank (the older job, the more constrained printer) wins. */
struct ssp {
    struct qheap *heap;
    uint32_t nl;
    uint32_t nr;
    const struct edge *edges; /* edge.job is a right index */
    const size_t *l_start;
    const uint32_t *l_len;
    const uint32_t *r_cap;
    const uint32_t *r_tie;
    uint32_t *r_used;
    uint32_t *r_head;  /* first left node assigned to it */
    uint32_t *l_match; /* right index, DUMMY, or NIL before its search */
    uint32_t *l_next;  /* left nodes assigned to the same right node */
    uint32_t *l_prev;
    int64_t *l_cost;
    struct ssp_node *node;
    int64_t *pred_cost; /* cost of the edge from pred, for right nodes */
    uint32_t *settled;
    uint32_t gen;
    int64_t big;     /* U: the cost of leaving a left node idle */
    size_t searched; /* nodes settled, over all searches */
};

static void ssp_link(struct ssp *s, uint32_t l, uint32_t r, int64_t cost)
{
    s->l_match[l] = r;
    s->l_cost[l] = cost;
    s->l_prev[l] = NIL;
    s->l_next[l] = s->r_head[r];
    if (s->l_next[l] != NIL)
        s->l_prev[s->l_next[l]] = l;
    s->r_head[r] = l;
    s->r_used[r]++;
}

static void ssp_unlink(struct ssp *s, uint32_t l)
{
    uint32_t r = s->l_match[l];
    if (r >= s->nr)
        return;
    if (s->l_prev[l] != NIL)
        s->l_next[s->l_prev[l]] = s->l_next[l];
    else
        s->r_head[r] = s->l_next[l];
    if (s->l_next[l] != NIL)
        s->l_prev[s->l_next[l]] = s->l_prev[l];
    s->r_used[r]--;
    s->l_match[l] = NIL;
}

/* Labels v with distance nd through from, unless it is settled, already
 * labelled no worse, or worse than the sink's label sink_d (it would be
 * popped after the sink, which ends the search). False when memory runs out. */
static inline bool ssp_relax(struct ssp *s, uint32_t v, int64_t nd, uint32_t from, int64_t cost,
                             int64_t sink_d)
{
    struct ssp_node *n = &s->node[v];
    uint32_t lab = 2 * s->gen;
    if (n->mark == lab + 1 || (n->mark == lab && nd >= n->dist) || nd > sink_d)
        return true;
    n->mark = lab;
    n->dist = nd;
    n->pred = from;
    s->pred_cost[v] = cost;
    return qheap_push(s->heap, (uint64_t)nd << 1 | 1, v);
}

/* Labels the sink through node v (a right node with a free unit, or a left
 * node's idle edge) if that beats its label *sink_d; on a tie between right
 * nodes the lower rank wins, so that equal costs go to the older job. */
static inline bool ssp_relax_sink(struct ssp *s, uint32_t v, int64_t nd, int64_t *sink_d)
{
    const uint32_t L = s->nl, T = L + s->nr;
    struct ssp_node *t = &s->node[T];
    if (nd > *sink_d)
        return true;
    if (nd == *sink_d && t->mark == 2 * s->gen &&
        (t->pred < L || v < L || s->r_tie[t->pred - L] <= s->r_tie[v - L]))
        return true;
    t->mark = 2 * s->gen;
    t->dist = nd;
    t->pred = v;
    *sink_d = nd;
    return qheap_push(s->heap, (uint64_t)nd << 1, T);
}

/* Applies the shortest path just found: each left node on it moves to the
 * right node its predecessor points at; the last one either takes a free
 * unit or goes idle. */
static void ssp_augment(struct ssp *s, uint32_t root)
{
    const uint32_t L = s->nl, T = L + s->nr;
    uint32_t v = s->node[T].pred, r;
    if (v < L) {
        /* the path ends on left node v's idle edge */
        r = s->l_match[v];
        ssp_unlink(s, v);
        s->l_match[v] = DUMMY;
        if (v == root)
            return;
    } else {
        r = v - L;
    }
    for (;;) {
        uint32_t x = s->node[L + r].pred;
        uint32_t old = s->l_match[x];
        ssp_unlink(s, x);
        ssp_link(s, x, r, s->pred_cost[L + r]);
        if (x == root)
            return;
        r = old;
    }
}

/* One Hungarian step: a Dijkstra search from left node root over reduced
 * costs to the sink (a right node with a free unit, or some left node's idle
 * edge), then the potential update that keeps every residual reduced cost
 * non-negative (settled nodes move by their distance minus the sink's). */
static enum pf_status ssp_search(struct ssp *s, uint32_t root, struct pf_error *err)
{
    const uint32_t L = s->nl, T = L + s->nr;
    struct ssp_node *node = s->node;
    uint32_t n_settled = 0;
    int64_t sink_d = INT64_MAX;
    s->heap->n = 0;
    s->gen++;
    const uint32_t settled_mark = 2 * s->gen + 1;
    /* a fresh root has no incoming residual edge: lift its potential so that
     * its outgoing edges have non-negative reduced costs */
    int64_t lift = node[T].pi - s->big;
    for (uint32_t i = 0; i < s->l_len[root]; i++) {
        const struct edge *e = &s->edges[s->l_start[root] + i];
        if (node[L + e->job].pi - e->cost > lift)
            lift = node[L + e->job].pi - e->cost;
    }
    node[root].pi = lift;
    if (!ssp_relax(s, root, 0, NIL, 0, sink_d))
        goto out_of_memory;
    struct qentry top;
    while (qheap_pop(s->heap, &top)) {
        uint32_t x = top.node;
        int64_t dx = (int64_t)(top.key >> 1);
        if (node[x].mark == settled_mark || dx != node[x].dist)
            continue;
        node[x].mark = settled_mark;
        s->settled[n_settled++] = x;
        if (x == T)
            break;
        bool ok = true;
        const int64_t pix = node[x].pi;
        if (x < L) {
            uint32_t m = s->l_match[x];
            ok = ssp_relax_sink(s, x, dx + s->big + pix - node[T].pi, &sink_d);
            const struct edge *e = &s->edges[s->l_start[x]], *end = e + s->l_len[x];
            for (; e < end && ok; e++) {
                uint32_t v = L + e->job;
                if (e->job == m || node[v].mark == settled_mark)
                    continue;
                int64_t nd = dx + e->cost + pix - node[v].pi;
                if (nd > sink_d || (node[v].mark == settled_mark - 1 && nd >= node[v].dist))
                    continue;
                ok = ssp_relax(s, v, nd, x, e->cost, sink_d);
                /* a free unit: label the sink now, so that it bounds the search */
                if (ok && s->r_used[e->job] < s->r_cap[e->job])
                    ok = ssp_relax_sink(s, v, nd + node[v].pi - node[T].pi, &sink_d);
            }
        } else {
            uint32_t r = x - L;
            if (s->r_used[r] < s->r_cap[r]) {
                ok = ssp_relax_sink(s, x, dx + pix - node[T].pi, &sink_d);
            } else {
                for (uint32_t y = s->r_head[r]; y != NIL && ok; y = s->l_next[y])
                    ok = ssp_relax(s, y, dx - s->l_cost[y] + pix - node[y].pi, x, 0, sink_d);
            }
        }
        if (!ok)
            goto out_of_memory;
    }
    if (node[T].mark != settled_mark)
        return pf_error_set(err, PF_E_INTERNAL, "dispatch search found no sink");
    s->searched += n_settled;
    int64_t dt = node[T].dist;
    for (uint32_t i = 0; i < n_settled; i++) {
        struct ssp_node *n = &node[s->settled[i]];
        n->pi += n->dist - dt;
    }
    ssp_augment(s, root);
    return PF_OK;

out_of_memory:
    return pf_error_set(err, PF_E_RESOURCE, "out of memory in a dispatch search");
}

/* Allocates s for nl left and nr right nodes (left nodes start unsearched). */
static bool ssp_alloc(struct arena *a, struct ssp *s, uint32_t nl, uint32_t nr)
{
    size_t nodes = (size_t)nl + nr + 1;
    s->nl = nl;
    s->nr = nr;
    s->gen = 0;
    s->r_used = arena_zalloc(a, nr, sizeof(*s->r_used));
    s->r_head = arena_alloc(a, nr, sizeof(*s->r_head));
    s->l_match = arena_alloc(a, nl, sizeof(*s->l_match));
    s->l_next = arena_alloc(a, nl, sizeof(*s->l_next));
    s->l_prev = arena_alloc(a, nl, sizeof(*s->l_prev));
    s->l_cost = arena_alloc(a, nl, sizeof(*s->l_cost));
    s->node = arena_zalloc(a, nodes, sizeof(*s->node));
    s->pred_cost = arena_alloc(a, nodes, sizeof(*s->pred_cost));
    s->settled = arena_alloc(a, nodes, sizeof(*s->settled));
    if (!s->r_used || !s->r_head || !s->l_match || !s->l_next || !s->l_prev || !s->l_cost ||
        !s->node || !s->pred_cost || !s->settled)
        return false;
    for (uint32_t r = 0; r < nr; r++)
        s->r_head[r] = NIL;
    for (uint32_t l = 0; l < nl; l++) {
        s->l_match[l] = NIL;
        s->l_next[l] = s->l_prev[l] = NIL;
    }
    return true;
}

/* U: more than any alternating path can save, so that the matching first
 * maximises the number of assignments. */
static enum pf_status ssp_choose_big(struct ssp *s, const struct edge *edges, size_t n_edges,
                                     struct pf_error *err)
{
    int64_t maxc = 0;
    for (size_t i = 0; i < n_edges; i++)
        if (edges[i].cost > maxc)
            maxc = edges[i].cost;
    /* an alternating path has at most 2 * nl + 1 edges */
    int64_t big, bound;
    int64_t factor = 2 * (int64_t)s->nl + 2;
    if (__builtin_mul_overflow(factor, maxc + 1, &big) ||
        __builtin_mul_overflow(big, 2 * ((int64_t)s->nl + 1), &bound) || bound > POTENTIAL_BOUND)
        return pf_error_set(err, PF_E_RESOURCE,
                            "a band of %u searches with costs up to %lld is too large to solve",
                            s->nl, (long long)maxc);
    s->big = big;
    return PF_OK;
}

/* The band's matching: builds the graph from the side with fewer units,
 * runs one search per left node, and records the result on the rows. */
static enum pf_status match_band(struct band *b, struct pf_error *err)
{
    struct arena *a = &b->d->arena;
    struct ssp s;
    memset(&s, 0, sizeof(s));
    s.heap = &b->d->queue;
    uint64_t copies = 0;
    for (uint32_t j = 0; j < b->n; j++)
        copies += b->cap[j];
    bool job_side = copies < b->n_rows;
    uint32_t *left_job = NULL;
    if (!job_side) {
        size_t *start = arena_alloc(a, b->n_rows, sizeof(*start));
        uint32_t *len = arena_alloc(a, b->n_rows, sizeof(*len));
        uint32_t *tie = arena_alloc(a, b->n, sizeof(*tie));
        if (!start || !len || !tie || !ssp_alloc(a, &s, b->n_rows, b->n))
            goto out_of_memory;
        for (uint32_t r = 0; r < b->n_rows; r++) {
            start[r] = b->rows[r].edge_start;
            len[r] = b->rows[r].edge_n;
        }
        for (uint32_t j = 0; j < b->n; j++)
            tie[j] = j;
        s.edges = b->edges;
        s.l_start = start;
        s.l_len = len;
        s.r_cap = b->cap;
        s.r_tie = tie;
    } else {
        /* transpose the candidate edges: job -> printers that listed it */
        size_t *jstart = arena_zalloc(a, (size_t)b->n + 1, sizeof(*jstart));
        struct edge *t = arena_alloc(a, b->n_edges, sizeof(*t));
        size_t *start = arena_alloc(a, copies, sizeof(*start));
        uint32_t *len = arena_alloc(a, copies, sizeof(*len));
        uint32_t *ones = arena_alloc(a, b->n_rows, sizeof(*ones));
        uint32_t *tie = arena_alloc(a, b->n_rows, sizeof(*tie));
        left_job = arena_alloc(a, copies, sizeof(*left_job));
        if (!jstart || (!t && b->n_edges) || !start || !len || !ones || !tie || !left_job ||
            !ssp_alloc(a, &s, (uint32_t)copies, b->n_rows))
            goto out_of_memory;
        for (size_t i = 0; i < b->n_edges; i++)
            jstart[b->edges[i].job + 1]++;
        for (uint32_t j = 0; j < b->n; j++)
            jstart[j + 1] += jstart[j];
        for (uint32_t r = 0; r < b->n_rows; r++) {
            for (uint32_t i = 0; i < b->rows[r].edge_n; i++) {
                const struct edge *e = &b->edges[b->rows[r].edge_start + i];
                struct edge *te = &t[jstart[e->job]++];
                te->job = r;
                te->pad = 0;
                te->cost = e->cost;
            }
            ones[r] = 1;
            tie[r] = r;
        }
        /* jstart[j] now ends job j; copies of a job share its edges */
        uint32_t l = 0;
        for (uint32_t j = 0; j < b->n; j++) {
            size_t begin = j == 0 ? 0 : jstart[j - 1];
            for (uint32_t k = 0; k < b->cap[j]; k++, l++) {
                start[l] = begin;
                len[l] = (uint32_t)(jstart[j] - begin);
                left_job[l] = j;
            }
        }
        s.edges = t;
        s.l_start = start;
        s.l_len = len;
        s.r_cap = ones;
        s.r_tie = tie;
    }
    enum pf_status st = ssp_choose_big(&s, b->edges, b->n_edges, err);
    for (uint32_t l = 0; l < s.nl && st == PF_OK; l++)
        st = ssp_search(&s, l, err);
    if (st != PF_OK)
        return st;
    b->searched = s.searched;
    for (uint32_t r = 0; r < b->n_rows; r++) {
        b->rows[r].match = DUMMY;
        b->rows[r].next = b->rows[r].prev = NIL;
    }
    for (uint32_t l = 0; l < s.nl; l++) {
        uint32_t m = s.l_match[l];
        if (m >= s.nr)
            continue;
        if (job_side)
            row_link(b, m, left_job[l], s.l_cost[l]);
        else
            row_link(b, l, m, s.l_cost[l]);
    }
    return PF_OK;

out_of_memory:
    return pf_error_set(err, PF_E_RESOURCE, "out of memory for the matching of %u jobs", b->n);
}

/* ------------------------------------------------------------------ repair */

static int64_t pair_cost(const struct band *b, uint32_t r, uint32_t j)
{
    const struct pf_dispatch_printer *p = row_printer(b, r);
    const struct job_class *c = &b->classes[b->cls[j]];
    return b->jobs[j].age + class_cost(b->pp, &c->rep->material, p, queue_weight(p, c->sig.queue)) +
           file_cost(b, j, p);
}

static void repair_augment(struct band *b, uint32_t j, uint32_t root)
{
    for (;;) {
        uint32_t x = b->from[j];
        uint32_t old = b->rows[x].match;
        row_unlink(b, x);
        row_link(b, x, j, pair_cost(b, x, j));
        if (x == root)
            return;
        j = old;
    }
}

/* Visits job j from row x in a repair search: true when j has a free copy
 * (and the path is applied); otherwise queues the rows holding j. */
static bool repair_visit(struct band *b, uint32_t j, uint32_t x, uint32_t root, uint32_t epoch,
                         uint32_t *qt)
{
    b->seen[j] = epoch;
    b->from[j] = x;
    if (b->used[j] < b->cap[j]) {
        repair_augment(b, j, root);
        return true;
    }
    for (uint32_t y = b->head[j]; y != NIL; y = b->rows[y].next) {
        if (b->rows[y].seen != epoch) {
            b->rows[y].seen = epoch;
            b->queue[(*qt)++] = y;
        }
    }
    return false;
}

/* A breadth-first search for an augmenting path from idle row root over every
 * feasible pair of the band (not only the candidates). Jobs and rows reached
 * keep their epoch mark after a failed search: nothing reachable from them
 * leads to a free copy, and that stays true until the matching changes. A
 * printer with windows walks only its fit lists. */
static bool repair_from(struct band *b, uint32_t root, uint32_t epoch)
{
    uint32_t qh = 0, qt = 0;
    b->queue[qt++] = root;
    b->rows[root].seen = epoch;
    while (qh < qt) {
        uint32_t x = b->queue[qh++];
        const struct row *row = &b->rows[x];
        const struct pf_dispatch_printer *p = row_printer(b, x);
        for (uint32_t i = 0; i < row->cls_n; i++) {
            uint32_t cls = b->d->row_cls[row->cls_start + i].cls;
            struct job_class *c = &b->classes[cls];
            if (c->repair_done == epoch)
                continue;
            uint32_t fit = p->needs_hands ? fit_list_get(b, cls, p) : NIL;
            if (fit != NIL) {
                /* d->sparse does not move while the list is walked */
                const struct fit_list *f = &b->d->fits[fit];
                const uint32_t *members = b->d->sparse + f->start;
                for (uint32_t k = 0; k < f->n; k++) {
                    uint32_t j = members[k];
                    if (b->seen[j] != epoch && job_ok(b, j, p) &&
                        repair_visit(b, j, x, root, epoch, &qt))
                        return true;
                }
                continue;
            }
            bool all = true;
            for (uint32_t k = 0; k < c->n; k++) {
                uint32_t j = b->class_jobs[c->start + k];
                if (b->seen[j] == epoch)
                    continue;
                if (!job_ok(b, j, p)) {
                    all = false;
                    continue;
                }
                if (repair_visit(b, j, x, root, epoch, &qt))
                    return true;
            }
            if (all)
                c->repair_done = epoch;
        }
    }
    return false;
}

/* ------------------------------------------------------------------ bands */

static enum pf_status band_arrays(struct band *b, struct pf_error *err)
{
    struct arena *a = &b->d->arena;
    size_t n = b->n;
    b->cap = arena_alloc(a, n, sizeof(*b->cap));
    b->used = arena_zalloc(a, n, sizeof(*b->used));
    b->subs = arena_zalloc(a, n, sizeof(*b->subs));
    b->head = arena_alloc(a, n, sizeof(*b->head));
    b->listed = arena_zalloc(a, n, sizeof(*b->listed));
    b->seen = arena_zalloc(a, n, sizeof(*b->seen));
    b->from = arena_alloc(a, n, sizeof(*b->from));
    b->queue = arena_alloc(a, b->n_rows, sizeof(*b->queue));
    b->edges = arena_alloc(a, (size_t)b->n_rows * 2 * b->pp->candidates, sizeof(*b->edges));
    if (!b->cap || !b->used || !b->subs || !b->head || !b->listed || !b->seen || !b->from ||
        !b->queue || !b->edges)
        return pf_error_set(err, PF_E_RESOURCE,
                            "out of memory for a band of %u jobs and %u printers", b->n, b->n_rows);
    for (uint32_t j = 0; j < b->n; j++) {
        b->cap[j] = b->jobs[j].remaining < b->n_rows ? b->jobs[j].remaining : b->n_rows;
        b->head[j] = NIL;
    }
    /* fit lists start empty each band */
    b->sparse_n = 0;
    b->n_fits = 0;
    if (!reserve((void **)&b->d->fit_tab, &b->d->fit_tab_cap, 64, sizeof(*b->d->fit_tab)))
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for window lists");
    b->fit_mask = 63;
    memset(b->d->fit_tab, 0xff, 64 * sizeof(*b->d->fit_tab));
    return PF_OK;
}

static enum pf_status solve_band(struct pf_dispatch *d, const struct pf_dispatch_input *in,
                                 const struct rjob *jobs, uint32_t n, const uint32_t *usable,
                                 bool *taken, size_t n_usable, struct pf_dispatch_output *out,
                                 struct pf_dispatch_assignment *assignments, struct pf_error *err)
{
    struct arena_mark mark = arena_mark(&d->arena);
    struct band b;
    memset(&b, 0, sizeof(b));
    b.d = d;
    b.pp = &d->params;
    b.spread = spread_of(&d->params);
    b.in = in;
    b.jobs = jobs;
    b.n = n;
    enum pf_status st = build_classes(&b, err);
    if (st == PF_OK)
        st = build_rows(&b, usable, taken, n_usable, err);
    if (st != PF_OK || b.n_rows == 0)
        goto out_release;
    st = band_arrays(&b, err);
    if (st == PF_OK)
        st = build_digest_index(&b, err);
    uint32_t max_cls = 0;
    for (uint32_t r = 0; r < b.n_rows; r++)
        if (b.rows[r].cls_n > max_cls)
            max_cls = b.rows[r].cls_n;
    struct stream *streams = arena_alloc(&d->arena, max_cls, sizeof(*streams));
    if (st == PF_OK && streams == NULL)
        st = pf_error_set(err, PF_E_RESOURCE, "out of memory for candidate streams");
    for (uint32_t r = 0; r < b.n_rows && st == PF_OK; r++)
        st = list_candidates(&b, r, streams, err);
    if (st == PF_OK)
        st = match_band(&b, err);
    if (st != PF_OK)
        goto out_release;
    uint32_t epoch = 1;
    for (uint32_t r = 0; r < b.n_rows; r++) {
        if (b.rows[r].match == DUMMY && repair_from(&b, r, epoch)) {
            b.repaired++;
            epoch++;
        }
    }
    for (uint32_t r = 0; r < b.n_rows; r++) {
        const struct row *row = &b.rows[r];
        if (row->match >= b.n)
            continue;
        struct pf_dispatch_assignment *a = &assignments[out->n_assignments++];
        a->job = jobs[row->match].index;
        a->printer = row->printer;
        a->cost = row->match_cost;
        taken[row->usable] = true;
    }
    out->stats.bands++;
    out->stats.classes += b.n_classes;
    out->stats.candidates += b.n_edges;
    out->stats.repaired += b.repaired;
    out->stats.searched += b.searched;

out_release:
    arena_release(&d->arena, mark);
    return st;
}

/* Sorts jobs into dispatch order. The common case (creation times within
 * 2^32 seconds of each other) is an LSD radix sort on a 64-bit key, stable so
 * that equal keys keep input order; otherwise qsort with cmp_rjobs. */
static int cmp_rjobs(const void *x, const void *y);

static bool sort_jobs(struct arena *a, struct rjob *jobs, size_t n)
{
    if (n < 2)
        return true;
    int64_t lo = jobs[0].created, hi = jobs[0].created;
    for (size_t i = 1; i < n; i++) {
        if (jobs[i].created < lo)
            lo = jobs[i].created;
        if (jobs[i].created > hi)
            hi = jobs[i].created;
    }
    if ((uint64_t)hi - (uint64_t)lo > UINT32_MAX) {
        qsort(jobs, n, sizeof(*jobs), cmp_rjobs);
        return true;
    }
    uint64_t *key = arena_alloc(a, n, sizeof(*key)), *key2 = arena_alloc(a, n, sizeof(*key2));
    uint32_t *idx = arena_alloc(a, n, sizeof(*idx)), *idx2 = arena_alloc(a, n, sizeof(*idx2));
    struct rjob *tmp = arena_alloc(a, n, sizeof(*tmp));
    if (!key || !key2 || !idx || !idx2 || !tmp)
        return false;
    for (size_t i = 0; i < n; i++) {
        /* priority descending: flip the biased value; then age ascending */
        uint32_t prio = (uint32_t)INT32_MAX - (uint32_t)jobs[i].priority;
        key[i] = (uint64_t)prio << 32 | (uint64_t)(jobs[i].created - lo);
        idx[i] = (uint32_t)i;
    }
    for (unsigned shift = 0; shift < 64; shift += 8) {
        size_t count[257] = {0};
        for (size_t i = 0; i < n; i++)
            count[(key[i] >> shift & 0xff) + 1]++;
        if (count[(key[0] >> shift & 0xff) + 1] == n)
            continue; /* every key has this byte */
        for (unsigned k = 0; k < 256; k++)
            count[k + 1] += count[k];
        for (size_t i = 0; i < n; i++) {
            size_t at = count[key[i] >> shift & 0xff]++;
            key2[at] = key[i];
            idx2[at] = idx[i];
        }
        uint64_t *tk = key;
        key = key2;
        key2 = tk;
        uint32_t *ti = idx;
        idx = idx2;
        idx2 = ti;
    }
    for (size_t i = 0; i < n; i++)
        tmp[i] = jobs[idx[i]];
    memcpy(jobs, tmp, n * sizeof(*jobs));
    return true;
}

static int cmp_rjobs(const void *x, const void *y)
{
    const struct rjob *a = x, *b = y;
    if (a->priority != b->priority)
        return a->priority > b->priority ? -1 : 1;
    if (a->created != b->created)
        return a->created < b->created ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

enum pf_status pf_dispatch_solve(struct pf_dispatch *d, const struct pf_dispatch_input *in,
                                 struct pf_dispatch_output *out, struct pf_error *err)
{
    if (out == NULL)
        return pf_error_set(err, PF_E_INVALID, "dispatch output is NULL");
    memset(out, 0, sizeof(*out));
    if (d == NULL)
        return pf_error_set(err, PF_E_INVALID, "dispatch solver is NULL");
    enum pf_status st = pf_dispatch_validate(in, err);
    if (st != PF_OK)
        return st;
    arena_reset(&d->arena);

    size_t n_usable = 0, n_runnable = 0;
    for (size_t i = 0; i < in->n_printers; i++)
        n_usable += printer_usable(&in->printers[i]) && in->printers[i].n_queues > 0;
    for (size_t i = 0; i < in->n_jobs; i++)
        n_runnable += job_runnable(&in->jobs[i]);
    out->stats.usable_printers = n_usable;
    out->stats.runnable_jobs = n_runnable;
    if (n_usable == 0 || n_runnable == 0)
        return PF_OK;

    uint32_t *usable = arena_alloc(&d->arena, n_usable, sizeof(*usable));
    bool *taken = arena_zalloc(&d->arena, n_usable, sizeof(*taken));
    struct rjob *jobs = arena_alloc(&d->arena, n_runnable, sizeof(*jobs));
    struct pf_dispatch_assignment *assignments =
        arena_alloc(&d->arena, n_usable, sizeof(*assignments));
    if (!usable || !taken || !jobs || !assignments)
        return pf_error_set(err, PF_E_RESOURCE,
                            "out of memory for a round of %zu jobs and %zu printers", n_runnable,
                            n_usable);
    size_t k = 0;
    for (size_t i = 0; i < in->n_printers; i++)
        if (printer_usable(&in->printers[i]) && in->printers[i].n_queues > 0)
            usable[k++] = (uint32_t)i;
    k = 0;
    for (size_t i = 0; i < in->n_jobs; i++) {
        const struct pf_dispatch_job *j = &in->jobs[i];
        if (!job_runnable(j))
            continue;
        jobs[k].job = j;
        jobs[k].created = j->created_at;
        jobs[k].age = age_cost(&d->params, in->now, j->created_at);
        jobs[k].index = (uint32_t)i;
        jobs[k].priority = j->priority;
        jobs[k].remaining = remaining(j);
        k++;
    }
    if (!sort_jobs(&d->arena, jobs, n_runnable))
        return pf_error_set(err, PF_E_RESOURCE, "out of memory sorting %zu jobs", n_runnable);

    size_t b0 = 0;
    while (b0 < n_runnable && out->n_assignments < n_usable) {
        size_t b1 = b0 + 1;
        while (b1 < n_runnable && jobs[b1].priority == jobs[b0].priority)
            b1++;
        st = solve_band(d, in, jobs + b0, (uint32_t)(b1 - b0), usable, taken, n_usable, out,
                        assignments, err);
        if (st != PF_OK) {
            memset(out, 0, sizeof(*out));
            return st;
        }
        b0 = b1;
    }
    out->assignments = assignments;
    return PF_OK;
}
