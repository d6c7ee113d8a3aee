/* Unit tests of the failure policy (services/scheduler/policy.c): exclusion
 * after N failures on one printer, a job failed after M printers, quarantine
 * after K consecutive failures of different jobs, what resets and what does
 * not break a streak, per-job overrides, disabled rules, and histories given
 * out of order or mixed with other jobs and printers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy.h"

#define J1 11
#define J2 12
#define J3 13
#define J4 14
#define P1 101
#define P2 102
#define P3 103

#define N(a) (sizeof(a) / sizeof((a)[0]))

static struct pf_policy_limits defaults(void)
{
    struct pf_policy_limits l;
    pf_policy_limits_init(&l);
    return l;
}

static void test_defaults_and_overrides(void **state)
{
    (void)state;
    struct pf_policy_limits l = defaults();
    assert_int_equal(l.max_attempts_per_printer, 1);
    assert_int_equal(l.max_printers, 2);
    assert_int_equal(l.quarantine_after, 3);
    struct pf_policy_limits j = pf_policy_limits_for_job(&l, 0, 0);
    assert_memory_equal(&j, &l, sizeof(l));
    j = pf_policy_limits_for_job(&l, 3, 0);
    assert_int_equal(j.max_attempts_per_printer, 3);
    assert_int_equal(j.max_printers, 2);
    j = pf_policy_limits_for_job(&l, 0, 5);
    assert_int_equal(j.max_attempts_per_printer, 1);
    assert_int_equal(j.max_printers, 5);
    assert_int_equal(j.quarantine_after, 3); /* farm-wide only */
}

static void test_empty_history(void **state)
{
    (void)state;
    struct pf_policy_limits l = defaults();
    assert_false(pf_policy_job_excluded(NULL, 0, &l, J1, P1));
    assert_false(pf_policy_job_failed(NULL, 0, &l, J1));
    assert_false(pf_policy_printer_quarantined(NULL, 0, &l, P1));
    assert_int_equal(pf_policy_printer_streak(NULL, 0, P1), 0);
    uint32_t out[4];
    size_t n = 9;
    struct pf_error err;
    assert_int_equal(pf_policy_excluded_printers(NULL, 0, &l, J1, out, 4, &n, &err), PF_OK);
    assert_int_equal(n, 0);
}

static void test_exclusion_after_one(void **state)
{
    (void)state;
    struct pf_policy_limits l = defaults();
    struct pf_policy_attempt h[] = {
        {J1, P1, PF_POLICY_FAILED, 10},
        {J2, P2, PF_POLICY_FAILED, 11},
    };
    assert_true(pf_policy_job_excluded(h, N(h), &l, J1, P1));
    assert_false(pf_policy_job_excluded(h, N(h), &l, J1, P2)); /* another printer */
    assert_false(pf_policy_job_excluded(h, N(h), &l, J2, P1)); /* another job */
    assert_true(pf_policy_job_excluded(h, N(h), &l, J2, P2));
}

static void test_exclusion_after_n(void **state)
{
    (void)state;
    struct pf_policy_limits l = pf_policy_limits_for_job(&(struct pf_policy_limits){1, 2, 3}, 2, 0);
    struct pf_policy_attempt h[] = {
        {J1, P1, PF_POLICY_FAILED, 10},
        {J1, P1, PF_POLICY_SUCCEEDED, 11}, /* successes do not reset the count */
        {J1, P1, PF_POLICY_CANCELLED, 12},
        {J1, P1, PF_POLICY_LOST, 13},
        {J1, P1, PF_POLICY_PRINTING, 14},
    };
    assert_false(pf_policy_job_excluded(h, N(h), &l, J1, P1));
    h[4].result = PF_POLICY_FAILED;
    assert_true(pf_policy_job_excluded(h, N(h), &l, J1, P1));
    /* 0 disables exclusion */
    l.max_attempts_per_printer = 0;
    assert_false(pf_policy_job_excluded(h, N(h), &l, J1, P1));
}

static void test_neutral_results_do_not_exclude(void **state)
{
    (void)state;
    struct pf_policy_limits l = defaults();
    struct pf_policy_attempt h[] = {
        {J1, P1, PF_POLICY_CANCELLED, 10},  {J1, P1, PF_POLICY_LOST, 11},
        {J1, P1, PF_POLICY_DISPATCHED, 12}, {J1, P1, PF_POLICY_PRINTING, 13},
        {J1, P1, PF_POLICY_SUCCEEDED, 14},
    };
    assert_false(pf_policy_job_excluded(h, N(h), &l, J1, P1));
    assert_false(pf_policy_job_failed(h, N(h), &l, J1));
}

static void test_job_failed_after_m_printers(void **state)
{
    (void)state;
    struct pf_policy_limits l = defaults();
    struct pf_policy_attempt h[] = {
        {J1, P1, PF_POLICY_FAILED, 10},
        {J1, P1, PF_POLICY_FAILED, 11}, /* same printer: still one */
        {J2, P2, PF_POLICY_FAILED, 12}, /* another job */
        {J1, P2, PF_POLICY_SUCCEEDED, 13},
    };
    assert_false(pf_policy_job_failed(h, N(h), &l, J1));
    h[3].result = PF_POLICY_FAILED;
    assert_true(pf_policy_job_failed(h, N(h), &l, J1));
    assert_false(pf_policy_job_failed(h, N(h), &l, J2));
    /* a job allowed three printers */
    struct pf_policy_limits three = pf_policy_limits_for_job(&l, 0, 3);
    assert_false(pf_policy_job_failed(h, N(h), &three, J1));
    struct pf_policy_attempt more[] = {
        {J1, P1, PF_POLICY_FAILED, 10},
        {J1, P2, PF_POLICY_FAILED, 11},
        {J1, P3, PF_POLICY_FAILED, 12},
    };
    assert_true(pf_policy_job_failed(more, N(more), &three, J1));
    /* 0 disables failing */
    three.max_printers = 0;
    assert_false(pf_policy_job_failed(more, N(more), &three, J1));
    /* a limit of one fails the job at its first failure */
    three.max_printers = 1;
    assert_true(pf_policy_job_failed(more, 1, &three, J1));
}

static void test_excluded_printers_list(void **state)
{
    (void)state;
    struct pf_policy_limits l = defaults();
    struct pf_policy_attempt h[] = {
        {J1, P3, PF_POLICY_FAILED, 10}, {J1, P1, PF_POLICY_FAILED, 11},
        {J1, P3, PF_POLICY_FAILED, 12}, {J2, P2, PF_POLICY_FAILED, 13},
        {J1, P2, PF_POLICY_LOST, 14},
    };
    uint32_t out[4];
    size_t n = 0;
    struct pf_error err;
    assert_int_equal(pf_policy_excluded_printers(h, N(h), &l, J1, out, 4, &n, &err), PF_OK);
    assert_int_equal(n, 2);
    assert_int_equal(out[0], P1); /* ascending, P3 once */
    assert_int_equal(out[1], P3);
    /* not enough room */
    assert_int_equal(pf_policy_excluded_printers(h, N(h), &l, J1, out, 1, &n, &err), PF_E_RESOURCE);
    assert_int_equal(n, 1);
    assert_non_null(strstr(err.msg, "more than 1"));
    /* with two attempts per printer only P3 is excluded */
    struct pf_policy_limits two = pf_policy_limits_for_job(&l, 2, 0);
    assert_int_equal(pf_policy_excluded_printers(h, N(h), &two, J1, out, 4, &n, &err), PF_OK);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], P3);
    two.max_attempts_per_printer = 0;
    assert_int_equal(pf_policy_excluded_printers(h, N(h), &two, J1, out, 4, &n, &err), PF_OK);
    assert_int_equal(n, 0);
}

static void test_quarantine_after_k_different_jobs(void **state)
{
    (void)state;
    struct pf_policy_limits l = defaults();
    struct pf_policy_attempt h[] = {
        {J1, P1, PF_POLICY_FAILED, 10},
        {J2, P1, PF_POLICY_FAILED, 11},
        {J3, P1, PF_POLICY_FAILED, 12},
    };
    assert_false(pf_policy_printer_quarantined(h, 2, &l, P1));
    assert_int_equal(pf_policy_printer_streak(h, 2, P1), 2);
    assert_true(pf_policy_printer_quarantined(h, 3, &l, P1));
    assert_int_equal(pf_policy_printer_streak(h, 3, P1), 3);
    assert_false(pf_policy_printer_quarantined(h, 3, &l, P2));
    l.quarantine_after = 4;
    assert_false(pf_policy_printer_quarantined(h, 3, &l, P1));
    l.quarantine_after = 0; /* disabled */
    assert_false(pf_policy_printer_quarantined(h, 3, &l, P1));
    l.quarantine_after = 1;
    assert_true(pf_policy_printer_quarantined(h, 1, &l, P1));
}

static void test_success_resets_streak(void **state)
{
    (void)state;
    struct pf_policy_limits l = defaults();
    struct pf_policy_attempt h[] = {
        {J1, P1, PF_POLICY_FAILED, 10},
        {J2, P1, PF_POLICY_FAILED, 11},
        {J4, P1, PF_POLICY_SUCCEEDED, 12},
        {J3, P1, PF_POLICY_FAILED, 13},
    };
    assert_false(pf_policy_printer_quarantined(h, N(h), &l, P1));
    assert_int_equal(pf_policy_printer_streak(h, N(h), P1), 1);
    /* a success on another printer does not reset this one */
    h[2].printer = P2;
    assert_true(pf_policy_printer_quarantined(h, N(h), &l, P1));
}

static void test_same_job_does_not_quarantine(void **state)
{
    (void)state;
    struct pf_policy_limits l = pf_policy_limits_for_job(&(struct pf_policy_limits){1, 2, 3}, 5, 0);
    struct pf_policy_attempt same[] = {
        {J1, P1, PF_POLICY_FAILED, 10},
        {J1, P1, PF_POLICY_FAILED, 11},
        {J1, P1, PF_POLICY_FAILED, 12},
        {J1, P1, PF_POLICY_FAILED, 13},
    };
    assert_false(pf_policy_printer_quarantined(same, N(same), &l, P1));
    assert_int_equal(pf_policy_printer_streak(same, N(same), P1), 1);
    /* the job is to blame instead: excluded there after its own limit */
    assert_false(pf_policy_job_excluded(same, N(same), &l, J1, P1));
    l.max_attempts_per_printer = 4;
    assert_true(pf_policy_job_excluded(same, N(same), &l, J1, P1));
    /* a repeat inside the window of three breaks it: J2, J1, J2 */
    struct pf_policy_attempt mixed[] = {
        {J1, P1, PF_POLICY_FAILED, 9},
        {J2, P1, PF_POLICY_FAILED, 10},
        {J1, P1, PF_POLICY_FAILED, 11},
        {J2, P1, PF_POLICY_FAILED, 12},
    };
    assert_false(pf_policy_printer_quarantined(mixed, N(mixed), &l, P1));
    assert_int_equal(pf_policy_printer_streak(mixed, N(mixed), P1), 2);
    /* but three different ones at the end do quarantine */
    mixed[0].job = J3;
    mixed[1].job = J3;
    assert_true(pf_policy_printer_quarantined(mixed, N(mixed), &l, P1));
}

static void test_neutral_results_keep_streak(void **state)
{
    (void)state;
    struct pf_policy_limits l = defaults();
    struct pf_policy_attempt h[] = {
        {J1, P1, PF_POLICY_FAILED, 10},   {J4, P1, PF_POLICY_CANCELLED, 11},
        {J2, P1, PF_POLICY_FAILED, 12},   {J4, P1, PF_POLICY_LOST, 13},
        {J3, P1, PF_POLICY_FAILED, 14},   {J4, P1, PF_POLICY_DISPATCHED, 15},
        {J4, P1, PF_POLICY_PRINTING, 16},
    };
    assert_true(pf_policy_printer_quarantined(h, N(h), &l, P1));
    assert_int_equal(pf_policy_printer_streak(h, N(h), P1), 3);
}

static void test_history_out_of_order(void **state)
{
    (void)state;
    struct pf_policy_limits l = defaults();
    /* by time: J1 fail (5), success (10), J2 fail (20), J3 fail (30) */
    struct pf_policy_attempt k[] = {
        {J3, P1, PF_POLICY_FAILED, 30},
        {J4, P1, PF_POLICY_SUCCEEDED, 10},
        {J2, P1, PF_POLICY_FAILED, 20},
        {J2, P2, PF_POLICY_FAILED, 25}, /* another printer in between */
        {J1, P1, PF_POLICY_FAILED, 5},
    };
    assert_int_equal(pf_policy_printer_streak(k, N(k), P1), 2);
    assert_false(pf_policy_printer_quarantined(k, N(k), &l, P1));
    /* the success moved to the start: three failures in a row */
    k[1].time = 1;
    assert_true(pf_policy_printer_quarantined(k, N(k), &l, P1));
    /* equal times: the later array position is the later attempt */
    struct pf_policy_attempt tie[] = {
        {J1, P1, PF_POLICY_FAILED, 7},
        {J2, P1, PF_POLICY_FAILED, 7},
        {J3, P1, PF_POLICY_FAILED, 7},
        {J4, P1, PF_POLICY_SUCCEEDED, 7},
    };
    assert_int_equal(pf_policy_printer_streak(tie, N(tie), P1), 0);
    tie[3].result = PF_POLICY_FAILED;
    assert_int_equal(pf_policy_printer_streak(tie, N(tie), P1), 4);
    tie[0].result = PF_POLICY_SUCCEEDED;
    assert_int_equal(pf_policy_printer_streak(tie, N(tie), P1), 3);
}

static void test_long_streak_saturates(void **state)
{
    (void)state;
    static struct pf_policy_attempt h[PF_POLICY_STREAK_MAX + 10];
    for (size_t i = 0; i < N(h); i++)
        h[i] = (struct pf_policy_attempt){(uint32_t)i, P1, PF_POLICY_FAILED, (int64_t)i};
    assert_int_equal(pf_policy_printer_streak(h, N(h), P1), PF_POLICY_STREAK_MAX);
    struct pf_policy_limits l = defaults();
    l.quarantine_after = UINT32_MAX;
    assert_true(pf_policy_printer_quarantined(h, N(h), &l, P1));
    assert_false(pf_policy_printer_quarantined(h, 10, &l, P1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_overrides),
        cmocka_unit_test(test_empty_history),
        cmocka_unit_test(test_exclusion_after_one),
        cmocka_unit_test(test_exclusion_after_n),
        cmocka_unit_test(test_neutral_results_do_not_exclude),
        cmocka_unit_test(test_job_failed_after_m_printers),
        cmocka_unit_test(test_excluded_printers_list),
        cmocka_unit_test(test_quarantine_after_k_different_jobs),
        cmocka_unit_test(test_success_resets_streak),
        cmocka_unit_test(test_same_job_does_not_quarantine),
        cmocka_unit_test(test_neutral_results_keep_streak),
        cmocka_unit_test(test_history_out_of_order),
        cmocka_unit_test(test_long_streak_saturates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
