/* The metrics registry and its rendering in the Prometheus text exposition
 * format 0.0.4. Families live in a list in registration order; each family keeps
 * its series in first-seen order (a list) plus a small hash table for lookup, so
 * output is deterministic and updates cost one hash and a short chain walk under
 * the family's mutex. Label cardinality is capped per family: past
 * PF_METRICS_MAX_SERIES, new label combinations are counted in one series whose
 * values are all "overflow", so a bug or a hostile client can grow the output
 * by one line, not without bound. Lock order: registry, then family. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERIES_HASH_SIZE 256
#define OVERFLOW_VALUE   "overflow"

const double pf_metrics_seconds_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
const size_t pf_metrics_seconds_bucket_count =
    sizeof pf_metrics_seconds_buckets / sizeof pf_metrics_seconds_buckets[0];

enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM };

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

/* One label combination of a family. The label values are stored after the
 * bucket counts in the same allocation. */
struct series {
    struct series *next;      /* first-seen order */
    struct series *hash_next; /* chain in the family's table */
    uint32_t hash;
    const char *values[PF_METRICS_MAX_LABELS];
    double value; /* counter, gauge */
    double sum;   /* histogram */
    uint64_t count;
    uint64_t buckets[]; /* histogram: bucket_count + 1 (+Inf), not cumulative */
};

struct pf_metric {
    struct pf_metric *next; /* registration order */
    enum kind kind;
    char *name;
    char *help;
    size_t label_count;
    char *label_names[PF_METRICS_MAX_LABELS];
    size_t bucket_count;
    double bounds[PF_METRICS_MAX_BUCKETS];

    pthread_mutex_t lock; /* guards everything below */
    struct series *first, *last;
    size_t series_count; /* not counting the overflow series */
    struct series *overflow;
    struct series *table[SERIES_HASH_SIZE];
};

struct pf_metrics {
    pthread_mutex_t lock; /* guards the family list */
    struct pf_metric *first, *last;
};

struct pf_metrics *pf_metrics_create(void)
{
    struct pf_metrics *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

static void family_free(struct pf_metric *m)
{
    struct series *s = m->first;
    while (s != NULL) {
        struct series *next = s->next;
        free(s);
        s = next;
    }
    for (size_t i = 0; i < m->label_count; i++)
        free(m->label_names[i]);
    pthread_mutex_destroy(&m->lock);
    free(m->help);
    free(m->name);
    free(m);
}

void pf_metrics_destroy(struct pf_metrics *r)
{
    if (r == NULL)
        return;
    struct pf_metric *m = r->first;
    while (m != NULL) {
        struct pf_metric *next = m->next;
        family_free(m);
        m = next;
    }
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static bool valid_metric_name(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return false;
    for (const char *p = name; *p != '\0'; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        bool digit = c >= '0' && c <= '9';
        if (!alpha && !(digit && p != name))
            return false;
    }
    return true;
}

static bool valid_label_name(const char *name, size_t len)
{
    if (len == 0 || (len >= 2 && name[0] == '_' && name[1] == '_'))
        return false; /* names starting with __ are reserved by Prometheus */
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        bool digit = c >= '0' && c <= '9';
        if (!alpha && !(digit && i > 0))
            return false;
    }
    return true;
}

/* Splits "a,b" into names[] (heap copies); returns the count or -1 when the
 * list is invalid. Spaces around names are ignored. */
static int parse_label_names(const char *labels, enum kind kind, char *names[PF_METRICS_MAX_LABELS])
{
    int count = 0;
    if (labels == NULL || labels[0] == '\0')
        return 0;
    const char *p = labels;
    for (;;) {
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, ", ");
        const char *name = p;
        p += len;
        while (*p == ' ')
            p++;
        if (count == PF_METRICS_MAX_LABELS || !valid_label_name(name, len) ||
            (kind == KIND_HISTOGRAM && len == 2 && memcmp(name, "le", 2) == 0))
            goto out_free_names;
        for (int i = 0; i < count; i++) {
            if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
                goto out_free_names;
        }
        names[count] = strndup(name, len);
        if (names[count] == NULL)
            goto out_free_names;
        count++;
        if (*p == '\0')
            return count;
        if (*p != ',')
            goto out_free_names;
        p++;
    }

out_free_names:
    for (int i = 0; i < count; i++)
        free(names[i]);
    return -1;
}

static bool same_shape(const struct pf_metric *m, enum kind kind, char *const *names, size_t count,
                       const double *bounds, size_t bucket_count)
{
    if (m->kind != kind || m->label_count != count)
        return false;
    for (size_t i = 0; i < count; i++) {
        if (strcmp(m->label_names[i], names[i]) != 0)
            return false;
    }
    if (kind != KIND_HISTOGRAM)
        return true;
    if (m->bucket_count != bucket_count)
        return false;
    for (size_t i = 0; i < bucket_count; i++) {
        if (m->bounds[i] != bounds[i])
            return false;
    }
    return true;
}

static struct series *series_new(const struct pf_metric *m, const char *const *values,
                                 uint32_t hash)
{
    size_t nbuckets = m->kind == KIND_HISTOGRAM ? m->bucket_count + 1 : 0;
    size_t lens[PF_METRICS_MAX_LABELS];
    size_t size = sizeof(struct series) + nbuckets * sizeof(uint64_t);
    for (size_t i = 0; i < m->label_count; i++) {
        lens[i] = strlen(values[i]);
        size += lens[i] + 1;
    }
    struct series *s = calloc(1, size);
    if (s == NULL)
        return NULL;
    char *text = (char *)&s->buckets[nbuckets];
    for (size_t i = 0; i < m->label_count; i++) {
        memcpy(text, values[i], lens[i] + 1);
        s->values[i] = text;
        text += lens[i] + 1;
    }
    s->hash = hash;
    return s;
}

static void series_link(struct pf_metric *m, struct series *s)
{
    if (m->last != NULL)
        m->last->next = s;
    else
        m->first = s;
    m->last = s;
}

/* Registers (or finds) a family; NULL when the arguments are invalid, memory
 * runs out, or the name is taken by a family of another shape. */
static struct pf_metric *family_register(struct pf_metrics *r, enum kind kind, const char *name,
                                         const char *help, const char *labels,
                                         const double *buckets, size_t bucket_count)
{
    if (r == NULL || !valid_metric_name(name))
        return NULL;
    if (kind == KIND_HISTOGRAM) {
        if (buckets == NULL) {
            buckets = pf_metrics_seconds_buckets;
            bucket_count = pf_metrics_seconds_bucket_count;
        }
        if (bucket_count > PF_METRICS_MAX_BUCKETS)
            return NULL;
        for (size_t i = 0; i < bucket_count; i++) {
            if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1])))
                return NULL;
        }
    } else {
        bucket_count = 0;
    }
    char *names[PF_METRICS_MAX_LABELS];
    int count = parse_label_names(labels, kind, names);
    if (count < 0)
        return NULL;

    struct pf_metric *m = NULL;
    pthread_mutex_lock(&r->lock);
    for (struct pf_metric *it = r->first; it != NULL; it = it->next) {
        if (strcmp(it->name, name) == 0) {
            if (same_shape(it, kind, names, (size_t)count, buckets, bucket_count))
                m = it;
            goto out_free_names;
        }
    }
    m = calloc(1, sizeof *m);
    if (m == NULL)
        goto out_free_names;
    m->kind = kind;
    m->name = strdup(name);
    m->help = help != NULL ? strdup(help) : NULL;
    if (m->name == NULL || (help != NULL && m->help == NULL) ||
        pthread_mutex_init(&m->lock, NULL) != 0)
        goto out_free_family;
    m->label_count = (size_t)count;
    memcpy(m->label_names, names, (size_t)count * sizeof names[0]);
    count = 0; /* the family owns the names now */
    m->bucket_count = bucket_count;
    if (bucket_count > 0)
        memcpy(m->bounds, buckets, bucket_count * sizeof buckets[0]);
    if (m->label_count == 0) {
        /* An unlabelled family always renders, at zero until first touched. */
        struct series *s = series_new(m, NULL, 0);
        if (s == NULL) {
            family_free(m);
            m = NULL;
            goto out_unlock;
        }
        series_link(m, s);
        m->table[0] = s;
        m->series_count = 1;
    }
    if (r->last != NULL)
        r->last->next = m;
    else
        r->first = m;
    r->last = m;
    goto out_unlock;

out_free_family:
    free(m->help);
    free(m->name);
    free(m);
    m = NULL;
out_free_names:
    for (int i = 0; i < count; i++)
        free(names[i]);
out_unlock:
    pthread_mutex_unlock(&r->lock);
    return m;
}

struct pf_metric *pf_metrics_counter(struct pf_metrics *r, const char *name, const char *help,
                                     const char *labels)
{
    return family_register(r, KIND_COUNTER, name, help, labels, NULL, 0);
}

struct pf_metric *pf_metrics_gauge(struct pf_metrics *r, const char *name, const char *help,
                                   const char *labels)
{
    return family_register(r, KIND_GAUGE, name, help, labels, NULL, 0);
}

struct pf_metric *pf_metrics_histogram(struct pf_metrics *r, const char *name, const char *help,
                                       const char *labels, const double *buckets,
                                       size_t bucket_count)
{
    return family_register(r, KIND_HISTOGRAM, name, help, labels, buckets, bucket_count);
}

static uint32_t hash_values(const char *const *values, size_t count)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < count; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p != '\0'; p++) {
            h ^= *p;
            h *= 16777619u;
        }
        h ^= 0xff; /* separator: ("ab","") and ("a","b") differ */
        h *= 16777619u;
    }
    return h;
}

/* Finds or creates the series for values; called with m->lock held. NULL only
 * when memory runs out. */
static struct series *series_find(struct pf_metric *m, const char *const *given)
{
    if (m->label_count == 0)
        return m->first;
    const char *values[PF_METRICS_MAX_LABELS];
    for (size_t i = 0; i < m->label_count; i++)
        values[i] = (given != NULL && given[i] != NULL) ? given[i] : "";
    uint32_t hash = hash_values(values, m->label_count);
    struct series **slot = &m->table[hash % SERIES_HASH_SIZE];
    for (struct series *s = *slot; s != NULL; s = s->hash_next) {
        if (s->hash != hash)
            continue;
        size_t i = 0;
        while (i < m->label_count && strcmp(s->values[i], values[i]) == 0)
            i++;
        if (i == m->label_count)
            return s;
    }
    if (m->series_count >= PF_METRICS_MAX_SERIES) {
        if (m->overflow == NULL) {
            const char *overflow[PF_METRICS_MAX_LABELS];
            for (size_t i = 0; i < m->label_count; i++)
                overflow[i] = OVERFLOW_VALUE;
            m->overflow = series_new(m, overflow, 0);
            if (m->overflow != NULL)
                series_link(m, m->overflow);
        }
        return m->overflow;
    }
    struct series *s = series_new(m, values, hash);
    if (s == NULL)
        return NULL;
    s->hash_next = *slot;
    *slot = s;
    series_link(m, s);
    m->series_count++;
    return s;
}

void pf_metric_add(struct pf_metric *m, const char *const *values, double delta)
{
    if (m == NULL || m->kind == KIND_HISTOGRAM || isnan(delta))
        return;
    if (m->kind == KIND_COUNTER && delta < 0)
        return; /* a counter only goes up */
    pthread_mutex_lock(&m->lock);
    struct series *s = series_find(m, values);
    if (s != NULL)
        s->value += delta;
    pthread_mutex_unlock(&m->lock);
}

void pf_metric_set(struct pf_metric *m, const char *const *values, double value)
{
    if (m == NULL || m->kind != KIND_GAUGE)
        return;
    pthread_mutex_lock(&m->lock);
    struct series *s = series_find(m, values);
    if (s != NULL)
        s->value = value;
    pthread_mutex_unlock(&m->lock);
}

void pf_metric_observe(struct pf_metric *m, const char *const *values, double value)
{
    if (m == NULL || m->kind != KIND_HISTOGRAM || isnan(value))
        return;
    size_t bucket = 0;
    while (bucket < m->bucket_count && value > m->bounds[bucket])
        bucket++;
    pthread_mutex_lock(&m->lock);
    struct series *s = series_find(m, values);
    if (s != NULL) {
        s->buckets[bucket]++;
        s->sum += value;
        s->count++;
    }
    pthread_mutex_unlock(&m->lock);
}

void pf_metric_inc1(struct pf_metric *m, const char *label)
{
    const char *values[1] = {label};
    pf_metric_add(m, label != NULL ? values : NULL, 1);
}

/* Output with a sticky status: after the first failure nothing more is written. */
struct writer {
    struct pf_buf *buf;
    enum pf_status st;
};

static void put(struct writer *w, const char *text, size_t len)
{
    if (w->st == PF_OK)
        w->st = pf_buf_append(w->buf, text, len);
}

static void puts_(struct writer *w, const char *text)
{
    put(w, text, strlen(text));
}

/* Writes text escaping '\\' and '\n', and '"' too when in a label value. */
static void put_escaped(struct writer *w, const char *text, bool label_value)
{
    const char *run = text;
    for (const char *p = text; *p != '\0'; p++) {
        const char *esc = NULL;
        if (*p == '\\')
            esc = "\\\\";
        else if (*p == '\n')
            esc = "\\n";
        else if (*p == '"' && label_value)
            esc = "\\\"";
        if (esc == NULL)
            continue;
        put(w, run, (size_t)(p - run));
        puts_(w, esc);
        run = p + 1;
    }
    puts_(w, run);
}

/* Integers print as integers, other values in the shortest of %.15g and %.17g
 * that reads back to the same double. */
static void format_number(double v, char *out, size_t size)
{
    if (isnan(v)) {
        snprintf(out, size, "NaN");
    } else if (isinf(v)) {
        snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
    } else if (v == 0) {
        snprintf(out, size, "0"); /* also -0 */
    } else if (v == trunc(v) && fabs(v) < 1e15) {
        snprintf(out, size, "%.0f", v);
    } else {
        snprintf(out, size, "%.15g", v);
        if (strtod(out, NULL) != v)
            snprintf(out, size, "%.17g", v);
    }
}

static void put_labels(struct writer *w, const struct pf_metric *m, const struct series *s,
                       const char *le)
{
    if (m->label_count == 0 && le == NULL)
        return;
    puts_(w, "{");
    for (size_t i = 0; i < m->label_count; i++) {
        if (i > 0)
            puts_(w, ",");
        puts_(w, m->label_names[i]);
        puts_(w, "=\"");
        put_escaped(w, s->values[i], true);
        puts_(w, "\"");
    }
    if (le != NULL) {
        puts_(w, m->label_count > 0 ? ",le=\"" : "le=\"");
        puts_(w, le);
        puts_(w, "\"");
    }
    puts_(w, "}");
}

static void put_sample(struct writer *w, const struct pf_metric *m, const char *suffix,
                       const struct series *s, const char *le, const char *value)
{
    puts_(w, m->name);
    puts_(w, suffix);
    put_labels(w, m, s, le);
    puts_(w, " ");
    puts_(w, value);
    puts_(w, "\n");
}

static void render_family(struct writer *w, struct pf_metric *m)
{
    if (m->help != NULL && m->help[0] != '\0') {
        puts_(w, "# HELP ");
        puts_(w, m->name);
        puts_(w, " ");
        put_escaped(w, m->help, false);
        puts_(w, "\n");
    }
    puts_(w, "# TYPE ");
    puts_(w, m->name);
    puts_(w, " ");
    puts_(w, kind_names[m->kind]);
    puts_(w, "\n");

    char number[40], le[40];
    for (const struct series *s = m->first; s != NULL; s = s->next) {
        if (m->kind != KIND_HISTOGRAM) {
            format_number(s->value, number, sizeof number);
            put_sample(w, m, "", s, NULL, number);
            continue;
        }
        uint64_t cumulative = 0;
        for (size_t i = 0; i <= m->bucket_count; i++) {
            cumulative += s->buckets[i];
            if (i < m->bucket_count)
                format_number(m->bounds[i], le, sizeof le);
            else
                snprintf(le, sizeof le, "+Inf");
            snprintf(number, sizeof number, "%llu", (unsigned long long)cumulative);
            put_sample(w, m, "_bucket", s, le, number);
        }
        format_number(s->sum, number, sizeof number);
        put_sample(w, m, "_sum", s, NULL, number);
        snprintf(number, sizeof number, "%llu", (unsigned long long)s->count);
        put_sample(w, m, "_count", s, NULL, number);
    }
}

enum pf_status pf_metrics_render(struct pf_metrics *r, struct pf_buf *out)
{
    struct writer w = {.buf = out, .st = PF_OK};
    if (r == NULL)
        return PF_E_INVALID;
    pthread_mutex_lock(&r->lock);
    for (struct pf_metric *m = r->first; m != NULL && w.st == PF_OK; m = m->next) {
        pthread_mutex_lock(&m->lock);
        render_family(&w, m);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return w.st;
}
