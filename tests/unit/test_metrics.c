/* Unit tests for lib/metrics.c: the full text rendering against a hand-checked
 * golden file, escaping of help text and label values, cumulative histogram
 * buckets with inclusive upper bounds, the series cap folding into "overflow",
 * number formatting, registration rules (invalid names, labels and buckets give
 * NULL; re-registration returns the same family only for the same shape),
 * misuse that must be ignored, a full output buffer, and concurrent updates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "metrics.h"

static char *render(struct pf_metrics *r)
{
    struct pf_buf out;
    pf_buf_init(&out, 0);
    assert_int_equal(pf_metrics_render(r, &out), PF_OK);
    return pf_buf_detach(&out, NULL);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open golden file '%s'", path);
    struct pf_buf b;
    pf_buf_init(&b, 1 << 20);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(pf_buf_append(&b, chunk, n), PF_OK);
    fclose(f);
    return pf_buf_detach(&b, NULL);
}

static void test_golden(void **state)
{
    struct pf_metrics *r = pf_metrics_create();
    assert_non_null(r);

    struct pf_metric *rpc = pf_metrics_counter(r, "printfarm_rpc_requests_total",
                                               "RPCs handled, by method and code.", "method,code");
    assert_non_null(rpc);
    const char *submit_ok[] = {"SubmitJob", "OK"};
    const char *get_nf[] = {"GetJob", "NOT_FOUND"};
    pf_metric_add(rpc, submit_ok, 1);
    pf_metric_add(rpc, get_nf, 2);
    pf_metric_add(rpc, submit_ok, 2);

    struct pf_metric *printers =
        pf_metrics_gauge(r, "printfarm_printers", "Printers by state.", "state");
    assert_non_null(printers);
    pf_metric_set(printers, (const char *[]){"idle"}, 4);
    pf_metric_set(printers, (const char *[]){"printing"}, 2.5);
    pf_metric_add(printers, (const char *[]){"idle"}, -1);

    assert_non_null(pf_metrics_gauge(r, "printfarm_leader", "1 when this replica leads.", NULL));

    const double bounds[] = {0.005, 0.25, 1};
    struct pf_metric *dispatch = pf_metrics_histogram(
        r, "printfarm_dispatch_seconds", "Time to run one dispatch.", "queue", bounds, 3);
    assert_non_null(dispatch);
    const char *def[] = {"default"};
    pf_metric_observe(dispatch, def, 0.001953125); /* 2^-9: first bucket */
    pf_metric_observe(dispatch, def, 0.25);        /* on a bound: that bucket */
    pf_metric_observe(dispatch, def, 0.5);
    pf_metric_observe(dispatch, def, 4); /* above every bound: +Inf only */
    pf_metric_observe(dispatch, (const char *[]){"rush"}, 0.5);

    assert_non_null(
        pf_metrics_histogram(r, "printfarm_upload_seconds", "Upload duration.", NULL, bounds, 3));

    struct pf_metric *uploads = pf_metrics_counter(
        r, "printfarm_uploads_total",
        "Uploads finished.\nSecond line with a \\ backslash and \"quotes\".", NULL);
    pf_metric_add(uploads, NULL, 7);

    struct pf_metric *esc = pf_metrics_counter(r, "printfarm_escape_total", NULL, "path");
    pf_metric_inc1(esc, "a\"b\\c\nd");

    struct pf_metric *values =
        pf_metrics_gauge(r, "printfarm_values", "Number formatting cases.", "case");
    pf_metric_set(values, (const char *[]){"int"}, 3);
    pf_metric_set(values, (const char *[]){"tenth"}, 0.1);
    pf_metric_set(values, (const char *[]){"third"}, 1.0 / 3.0);
    pf_metric_set(values, (const char *[]){"big"}, 1e20);
    pf_metric_set(values, (const char *[]){"negative"}, -2);
    pf_metric_set(values, (const char *[]){"negative_zero"}, -0.0);
    pf_metric_set(values, (const char *[]){"inf"}, INFINITY);
    pf_metric_set(values, (const char *[]){"negative_inf"}, -INFINITY);
    pf_metric_set(values, (const char *[]){"nan"}, NAN);
    pf_metric_set(values, (const char *[]){"tiny"}, 1e-5);
    pf_metric_set(values, (const char *[]){"large_int"}, 123456789012345.0);

    /* a labelled family never touched renders only its header */
    assert_non_null(
        pf_metrics_gauge(r, "printfarm_jobs", "Jobs by queue and state.", "queue,state"));

    char *got = render(r);
    char *want = read_file(PF_GOLDEN_DIR "/metrics.txt");
    assert_string_equal(got, want);
    free(want);
    free(got);
    pf_metrics_destroy(r);
}

static void test_default_buckets(void **state)
{
    static const double want[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                  0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
    assert_int_equal(pf_metrics_seconds_bucket_count, 16);
    for (size_t i = 0; i < 16; i++)
        assert_true(pf_metrics_seconds_buckets[i] == want[i]);

    struct pf_metrics *r = pf_metrics_create();
    struct pf_metric *h = pf_metrics_histogram(r, "rpc_seconds", "h", NULL, NULL, 0);
    assert_non_null(h);
    pf_metric_observe(h, NULL, 0.0005);
    pf_metric_observe(h, NULL, 100);
    char *text = render(r);
    assert_non_null(strstr(text, "rpc_seconds_bucket{le=\"0.0005\"} 1\n"
                                 "rpc_seconds_bucket{le=\"0.001\"} 1\n"
                                 "rpc_seconds_bucket{le=\"0.0025\"} 1\n"));
    assert_non_null(strstr(text, "rpc_seconds_bucket{le=\"2.5\"} 1\n"));
    assert_non_null(strstr(text, "rpc_seconds_bucket{le=\"60\"} 1\n"
                                 "rpc_seconds_bucket{le=\"+Inf\"} 2\n"
                                 "rpc_seconds_sum 100.0005\n"
                                 "rpc_seconds_count 2\n"));
    free(text);
    pf_metrics_destroy(r);
}

static void test_histogram_edge_observations(void **state)
{
    struct pf_metrics *r = pf_metrics_create();
    const double b[] = {-1, 0, 1};
    struct pf_metric *h = pf_metrics_histogram(r, "h", NULL, NULL, b, 3);
    assert_non_null(h);
    pf_metric_observe(h, NULL, -5);
    pf_metric_observe(h, NULL, 0);
    pf_metric_observe(h, NULL, INFINITY);
    pf_metric_observe(h, NULL, NAN); /* ignored */
    char *text = render(r);
    assert_string_equal(text, "# TYPE h histogram\n"
                              "h_bucket{le=\"-1\"} 1\n"
                              "h_bucket{le=\"0\"} 2\n"
                              "h_bucket{le=\"1\"} 2\n"
                              "h_bucket{le=\"+Inf\"} 3\n"
                              "h_sum +Inf\n"
                              "h_count 3\n");
    free(text);
    pf_metrics_destroy(r);
}

static void test_histogram_without_bounds(void **state)
{
    struct pf_metrics *r = pf_metrics_create();
    const double none[1] = {0};
    struct pf_metric *h = pf_metrics_histogram(r, "only_inf", NULL, "k", none, 0);
    assert_non_null(h);
    pf_metric_observe(h, (const char *[]){"v"}, 3);
    char *text = render(r);
    assert_string_equal(text, "# TYPE only_inf histogram\n"
                              "only_inf_bucket{k=\"v\",le=\"+Inf\"} 1\n"
                              "only_inf_sum{k=\"v\"} 3\n"
                              "only_inf_count{k=\"v\"} 1\n");
    free(text);
    pf_metrics_destroy(r);
}

static void test_overflow_series(void **state)
{
    struct pf_metrics *r = pf_metrics_create();
    struct pf_metric *c = pf_metrics_counter(r, "printfarm_calls_total", "calls", "peer,kind");
    assert_non_null(c);
    char id[32];
    for (int i = 0; i < PF_METRICS_MAX_SERIES + 6; i++) {
        snprintf(id, sizeof id, "peer-%d", i);
        const char *v[] = {id, "x"};
        pf_metric_add(c, v, 1);
    }
    /* a series that existed before the cap keeps counting */
    pf_metric_add(c, (const char *[]){"peer-0", "x"}, 1);
    /* another new one after the cap goes to overflow too */
    pf_metric_add(c, (const char *[]){"late", "y"}, 10);

    char *text = render(r);
    size_t lines = 0;
    for (const char *p = text; *p != '\0'; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 2 + PF_METRICS_MAX_SERIES + 1);
    assert_non_null(strstr(text, "printfarm_calls_total{peer=\"peer-0\",kind=\"x\"} 2\n"));
    assert_non_null(strstr(text, "{peer=\"peer-1023\",kind=\"x\"} 1\n"));
    assert_null(strstr(text, "peer-1024"));
    /* the overflow series comes last: first seen after the cap */
    const char *tail = "printfarm_calls_total{peer=\"overflow\",kind=\"overflow\"} 16\n";
    assert_string_equal(text + strlen(text) - strlen(tail), tail);
    free(text);
    pf_metrics_destroy(r);
}

static void test_invalid_names(void **state)
{
    struct pf_metrics *r = pf_metrics_create();
    static const char *const bad[] = {"", "1abc", "a-b", "a b", "a.b", "caf\xc3\xa9", "a\n", "{x}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (pf_metrics_counter(r, bad[i], "h", NULL) != NULL)
            fail_msg("name '%s' accepted", bad[i]);
        assert_null(pf_metrics_gauge(r, bad[i], "h", NULL));
        assert_null(pf_metrics_histogram(r, bad[i], "h", NULL, NULL, 0));
    }
    assert_null(pf_metrics_counter(r, NULL, "h", NULL));
    assert_null(pf_metrics_counter(NULL, "ok_name", "h", NULL));
    /* valid corner cases */
    assert_non_null(pf_metrics_counter(r, "_x", NULL, NULL));
    assert_non_null(pf_metrics_counter(r, ":a:b_9", NULL, NULL));
    assert_non_null(pf_metrics_counter(r, "A1", NULL, NULL));

    static const char *const bad_labels[] = {"1a", "a-b", "__reserved", "a,a", "a,,b", "a,",
                                             ",a", "a b", "a,b,c,d,e",  "a=b", "é"};
    for (size_t i = 0; i < sizeof bad_labels / sizeof bad_labels[0]; i++) {
        if (pf_metrics_counter(r, "labelled_total", "h", bad_labels[i]) != NULL)
            fail_msg("labels '%s' accepted", bad_labels[i]);
    }
    /* "le" is reserved in histograms only */
    assert_null(pf_metrics_histogram(r, "lat_seconds", "h", "le", NULL, 0));
    assert_null(pf_metrics_histogram(r, "lat_seconds", "h", "a,le", NULL, 0));
    assert_non_null(pf_metrics_counter(r, "le_total", "h", "le"));
    /* spaces around names are allowed, four labels are the maximum */
    assert_non_null(pf_metrics_counter(r, "four_total", "h", "a, b ,c,d"));
    pf_metrics_destroy(r);
}

static void test_invalid_buckets(void **state)
{
    struct pf_metrics *r = pf_metrics_create();
    const double equal[] = {1, 1};
    const double decreasing[] = {2, 1};
    const double with_nan[] = {1, NAN};
    const double with_inf[] = {1, INFINITY};
    double many[PF_METRICS_MAX_BUCKETS + 1];
    for (size_t i = 0; i < sizeof many / sizeof many[0]; i++)
        many[i] = (double)i;
    assert_null(pf_metrics_histogram(r, "h1", NULL, NULL, equal, 2));
    assert_null(pf_metrics_histogram(r, "h2", NULL, NULL, decreasing, 2));
    assert_null(pf_metrics_histogram(r, "h3", NULL, NULL, with_nan, 2));
    assert_null(pf_metrics_histogram(r, "h4", NULL, NULL, with_inf, 2));
    assert_null(pf_metrics_histogram(r, "h5", NULL, NULL, many, PF_METRICS_MAX_BUCKETS + 1));
    assert_non_null(pf_metrics_histogram(r, "h6", NULL, NULL, many, PF_METRICS_MAX_BUCKETS));
    /* nothing half-registered is rendered */
    char *text = render(r);
    assert_null(strstr(text, "h1"));
    assert_non_null(strstr(text, "# TYPE h6 histogram\n"));
    free(text);
    pf_metrics_destroy(r);
}

static void test_reregistration(void **state)
{
    struct pf_metrics *r = pf_metrics_create();
    struct pf_metric *a = pf_metrics_counter(r, "x_total", "first help", "a,b");
    assert_non_null(a);
    assert_ptr_equal(pf_metrics_counter(r, "x_total", "other help", "a,b"), a);
    assert_ptr_equal(pf_metrics_counter(r, "x_total", NULL, " a , b"), a);
    assert_null(pf_metrics_counter(r, "x_total", "h", "b,a"));
    assert_null(pf_metrics_counter(r, "x_total", "h", "a"));
    assert_null(pf_metrics_counter(r, "x_total", "h", NULL));
    assert_null(pf_metrics_gauge(r, "x_total", "h", "a,b"));

    const double b1[] = {1, 2};
    const double b2[] = {1, 3};
    struct pf_metric *h = pf_metrics_histogram(r, "y_seconds", "h", NULL, b1, 2);
    assert_non_null(h);
    assert_ptr_equal(pf_metrics_histogram(r, "y_seconds", "h", NULL, b1, 2), h);
    assert_null(pf_metrics_histogram(r, "y_seconds", "h", NULL, b2, 2));
    assert_null(pf_metrics_histogram(r, "y_seconds", "h", NULL, b1, 1));
    assert_null(pf_metrics_histogram(r, "y_seconds", "h", NULL, NULL, 0));
    struct pf_metric *d = pf_metrics_histogram(r, "z_seconds", "h", NULL, NULL, 0);
    assert_ptr_equal(pf_metrics_histogram(r, "z_seconds", "h", NULL, pf_metrics_seconds_buckets,
                                          pf_metrics_seconds_bucket_count),
                     d);

    /* the family is rendered once, with the first help text */
    char *text = render(r);
    assert_non_null(strstr(text, "# HELP x_total first help\n"));
    assert_null(strstr(text, "other help"));
    free(text);
    pf_metrics_destroy(r);
}

static void test_misuse_is_ignored(void **state)
{
    /* NULL families */
    pf_metric_add(NULL, NULL, 1);
    pf_metric_set(NULL, NULL, 1);
    pf_metric_observe(NULL, NULL, 1);
    pf_metric_inc1(NULL, "x");

    struct pf_metrics *r = pf_metrics_create();
    struct pf_metric *c = pf_metrics_counter(r, "c_total", NULL, NULL);
    struct pf_metric *g = pf_metrics_gauge(r, "g", NULL, NULL);
    struct pf_metric *l = pf_metrics_counter(r, "l_total", NULL, "a,b");
    const double b[] = {1};
    struct pf_metric *h = pf_metrics_histogram(r, "h", NULL, NULL, b, 1);

    pf_metric_add(c, NULL, 2);
    pf_metric_add(c, NULL, -1);    /* counters never go down */
    pf_metric_add(c, NULL, NAN);   /* ignored */
    pf_metric_set(c, NULL, 100);   /* set is for gauges */
    pf_metric_observe(c, NULL, 1); /* observe is for histograms */
    pf_metric_inc1(c, NULL);
    pf_metric_add(c, (const char *[]){"ignored"}, 1); /* values for no labels: ignored */
    pf_metric_add(g, NULL, -3);
    pf_metric_add(g, NULL, NAN);
    pf_metric_observe(g, NULL, 5);
    pf_metric_add(h, NULL, 5);
    pf_metric_set(h, NULL, 5);
    pf_metric_inc1(h, NULL);
    /* missing label values read as "" */
    pf_metric_add(l, NULL, 1);
    pf_metric_add(l, (const char *[]){NULL, "z"}, 1);
    pf_metric_add(l, (const char *[]){"", ""}, 1);

    char *text = render(r);
    assert_string_equal(text, "# TYPE c_total counter\n"
                              "c_total 4\n"
                              "# TYPE g gauge\n"
                              "g -3\n"
                              "# TYPE l_total counter\n"
                              "l_total{a=\"\",b=\"\"} 2\n"
                              "l_total{a=\"\",b=\"z\"} 1\n"
                              "# TYPE h histogram\n"
                              "h_bucket{le=\"1\"} 0\n"
                              "h_bucket{le=\"+Inf\"} 0\n"
                              "h_sum 0\n"
                              "h_count 0\n");
    free(text);
    pf_metrics_destroy(r);
    pf_metrics_destroy(NULL);
}

static void test_label_hash_separation(void **state)
{
    /* ("ab","") and ("a","b") are different series */
    struct pf_metrics *r = pf_metrics_create();
    struct pf_metric *c = pf_metrics_counter(r, "p_total", NULL, "x,y");
    pf_metric_add(c, (const char *[]){"ab", ""}, 1);
    pf_metric_add(c, (const char *[]){"a", "b"}, 2);
    char *text = render(r);
    assert_non_null(strstr(text, "p_total{x=\"ab\",y=\"\"} 1\n"));
    assert_non_null(strstr(text, "p_total{x=\"a\",y=\"b\"} 2\n"));
    free(text);
    pf_metrics_destroy(r);
}

static void test_render_full_buffer(void **state)
{
    struct pf_metrics *r = pf_metrics_create();
    struct pf_metric *c = pf_metrics_counter(r, "a_long_metric_name_total", "help", NULL);
    pf_metric_add(c, NULL, 1);
    struct pf_buf out;
    pf_buf_init(&out, 20);
    assert_int_equal(pf_metrics_render(r, &out), PF_E_RESOURCE);
    assert_true(out.len <= 20);
    pf_buf_release(&out);
    assert_int_equal(pf_metrics_render(NULL, &out), PF_E_INVALID);
    /* appends after what the buffer holds */
    pf_buf_init(&out, 0);
    assert_int_equal(pf_buf_append(&out, "prefix\n", 7), PF_OK);
    assert_int_equal(pf_metrics_render(r, &out), PF_OK);
    assert_true(strncmp(out.data, "prefix\n# HELP a_long_metric_name_total help\n", 44) == 0);
    pf_buf_release(&out);
    pf_metrics_destroy(r);
}

#define THREADS 4
#define ROUNDS  20000

static void *hammer(void *arg)
{
    struct pf_metric **m = arg;
    const char *labels[] = {"odd", "even"};
    for (int i = 0; i < ROUNDS; i++) {
        pf_metric_inc1(m[0], labels[i % 2]);
        pf_metric_observe(m[1], NULL, 0.5);
    }
    return NULL;
}

static void *scrape(void *arg)
{
    struct pf_metrics *r = arg;
    for (int i = 0; i < 50; i++) {
        struct pf_buf out;
        pf_buf_init(&out, 0);
        if (pf_metrics_render(r, &out) != PF_OK)
            abort();
        pf_buf_release(&out);
    }
    return NULL;
}

static void test_concurrent_updates(void **state)
{
    struct pf_metrics *r = pf_metrics_create();
    struct pf_metric *m[2];
    m[0] = pf_metrics_counter(r, "n_total", NULL, "parity");
    const double b[] = {1};
    m[1] = pf_metrics_histogram(r, "d_seconds", NULL, NULL, b, 1);
    pthread_t threads[THREADS + 1];
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&threads[t], NULL, hammer, m), 0);
    assert_int_equal(pthread_create(&threads[THREADS], NULL, scrape, r), 0);
    for (int t = 0; t <= THREADS; t++)
        pthread_join(threads[t], NULL);
    char *text = render(r);
    char want[128];
    snprintf(want, sizeof want, "n_total{parity=\"odd\"} %d\n", THREADS * ROUNDS / 2);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "d_seconds_count %d\n", THREADS * ROUNDS);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "d_seconds_sum %d\n", THREADS * ROUNDS / 2);
    assert_non_null(strstr(text, want));
    free(text);
    pf_metrics_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_default_buckets),
        cmocka_unit_test(test_histogram_edge_observations),
        cmocka_unit_test(test_histogram_without_bounds),
        cmocka_unit_test(test_overflow_series),
        cmocka_unit_test(test_invalid_names),
        cmocka_unit_test(test_invalid_buckets),
        cmocka_unit_test(test_reregistration),
        cmocka_unit_test(test_misuse_is_ignored),
        cmocka_unit_test(test_label_hash_separation),
        cmocka_unit_test(test_render_full_buffer),
        cmocka_unit_test(test_concurrent_updates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
