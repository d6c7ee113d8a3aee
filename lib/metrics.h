/* Metrics registry rendered in the Prometheus text exposition format (0.0.4):
 * counters, gauges and histograms, each with optional labels. The registry is
 * one of the two allowed process globals (created in main, passed down).
 * Every operation is thread-safe (a mutex per family). The number of label
 * combinations per family is capped (PF_METRICS_MAX_SERIES); further
 * combinations are folded into one series whose label values are "overflow". */
#ifndef PF_METRICS_H
#define PF_METRICS_H

#include "buf.h"

#define PF_METRICS_MAX_LABELS  4
#define PF_METRICS_MAX_SERIES  1024
#define PF_METRICS_MAX_BUCKETS 24

struct pf_metrics;
struct pf_metric; /* one family: a counter, gauge or histogram with its label names */

struct pf_metrics *pf_metrics_create(void);
/* Frees the registry and every family it returned. */
void pf_metrics_destroy(struct pf_metrics *r);

/* Registers a family. `labels` is a comma-separated list of label names
 * ("method,code") or NULL. Names must be valid Prometheus names. The returned
 * family is owned by the registry. Registering the same name twice returns the
 * existing family if type and labels agree, else NULL. */
struct pf_metric *pf_metrics_counter(struct pf_metrics *r, const char *name, const char *help,
                                     const char *labels);
struct pf_metric *pf_metrics_gauge(struct pf_metrics *r, const char *name, const char *help,
                                   const char *labels);
/* buckets: strictly increasing upper bounds (the +Inf bucket is implicit);
 * NULL selects pf_metrics_seconds_buckets. */
struct pf_metric *pf_metrics_histogram(struct pf_metrics *r, const char *name, const char *help,
                                       const char *labels, const double *buckets,
                                       size_t bucket_count);

/* Default latency buckets, 0.5 ms .. 60 s. */
extern const double pf_metrics_seconds_buckets[];
extern const size_t pf_metrics_seconds_bucket_count;

/* `values` has one string per label name (NULL when the family has no labels).
 * Values are escaped on output. A NULL family is ignored, so callers need not
 * check registration results on every hot path. */
void pf_metric_add(struct pf_metric *m, const char *const *values,
                   double delta); /* counter, gauge */
void pf_metric_set(struct pf_metric *m, const char *const *values, double value); /* gauge */
void pf_metric_observe(struct pf_metric *m, const char *const *values,
                       double value); /* histogram */

/* Convenience for families with exactly one label (or none: label NULL). */
void pf_metric_inc1(struct pf_metric *m, const char *label);

/* Appends the whole registry in text format, families in registration order and
 * series in first-seen order (so output is deterministic for golden tests).
 * PF_E_RESOURCE when out's maximum is reached; out then holds a partial text. */
enum pf_status pf_metrics_render(struct pf_metrics *r, struct pf_buf *out) PF_MUST_CHECK;

#endif
