/* Unit tests for the pure half of lib/lease.c: when a holder may act, when to
 * renew or retry, and the state transitions, with no Redis. Adversarial
 * inputs are mandatory: nonsensical TTLs and margins, times at the int64
 * limits, time running backwards, over-long ids, and a randomized run that
 * checks the invariant the lease exists for: we never believe in the lease
 * past the moment Redis could give it to someone else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "lease.h"

static struct pf_lease_state make_state(int64_t ttl, int64_t margin)
{
    struct pf_lease_state s;
    struct pf_error err;
    assert_int_equal(pf_lease_state_init(&s, ttl, margin, &err), PF_OK);
    return s;
}

static void test_valid_at_window(void **state)
{
    (void)state;
    assert_true(pf_lease_valid_at(1000, 300, 50, 1000));
    assert_true(pf_lease_valid_at(1000, 300, 50, 1249));
    assert_false(pf_lease_valid_at(1000, 300, 50, 1250));
    assert_false(pf_lease_valid_at(1000, 300, 50, 1300));
    assert_false(pf_lease_valid_at(1000, 300, 50, 99999));
    /* no margin: valid up to the TTL, exclusive */
    assert_true(pf_lease_valid_at(0, 300, 0, 299));
    assert_false(pf_lease_valid_at(0, 300, 0, 300));
    /* a clock reading before the renew is still inside the lease */
    assert_true(pf_lease_valid_at(1000, 300, 50, 10));
    assert_true(pf_lease_valid_at(1000, 300, 50, -5000));
}

static void test_valid_at_rejects_nonsense(void **state)
{
    (void)state;
    assert_false(pf_lease_valid_at(0, 0, 0, 0));
    assert_false(pf_lease_valid_at(0, -1, 0, -100));
    assert_false(pf_lease_valid_at(0, 300, -1, 0));
    assert_false(pf_lease_valid_at(0, 300, 300, 0));
    assert_false(pf_lease_valid_at(0, 300, 301, 0));
    assert_false(pf_lease_valid_at(0, INT64_MIN, 0, INT64_MIN));
    assert_false(pf_lease_valid_at(0, 300, INT64_MIN, 0));
}

static void test_valid_at_saturates(void **state)
{
    (void)state;
    /* renewed near the top of the clock: the deadline saturates, no wrap */
    assert_true(pf_lease_valid_at(INT64_MAX - 10, 1000, 0, INT64_MAX - 1));
    assert_false(pf_lease_valid_at(INT64_MAX - 10, 1000, 0, INT64_MAX));
    assert_true(pf_lease_valid_at(INT64_MAX, INT64_MAX, 0, 0));
    /* at the bottom of the clock */
    assert_true(pf_lease_valid_at(INT64_MIN, 300, 0, INT64_MIN));
    assert_true(pf_lease_valid_at(INT64_MIN, 300, 0, INT64_MIN + 299));
    assert_false(pf_lease_valid_at(INT64_MIN, 300, 0, INT64_MIN + 300));
    assert_false(pf_lease_valid_at(INT64_MIN, 300, 0, 0));
}

static void test_state_init_validates(void **state)
{
    (void)state;
    struct pf_lease_state s;
    struct pf_error err;
    memset(&s, 0x5a, sizeof s);
    struct pf_lease_state before = s;

    assert_int_equal(pf_lease_state_init(&s, PF_LEASE_TTL_MIN_MS - 1, 0, &err), PF_E_INVALID);
    assert_non_null(strstr(err.msg, "lease TTL"));
    assert_int_equal(pf_lease_state_init(&s, 0, 0, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_state_init(&s, -300, 0, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_state_init(&s, PF_LEASE_TTL_MAX_MS + 1, 0, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_state_init(&s, INT64_MAX, 0, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_state_init(&s, 300, -1, &err), PF_E_INVALID);
    assert_non_null(strstr(err.msg, "safety margin"));
    assert_int_equal(pf_lease_state_init(&s, 300, 151, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_state_init(&s, 300, 300, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_state_init(&s, 300, INT64_MAX, &err), PF_E_INVALID);
    assert_int_equal(pf_lease_state_init(NULL, 300, 0, &err), PF_E_INVALID);
    assert_memory_equal(&s, &before, sizeof s);                     /* failures left it alone */
    assert_int_equal(pf_lease_state_init(&s, 300, 0, NULL), PF_OK); /* NULL err is fine */

    assert_int_equal(pf_lease_state_init(&s, 300, 150, &err), PF_OK);
    assert_int_equal(pf_lease_state_init(&s, PF_LEASE_TTL_MIN_MS, 0, &err), PF_OK);
    assert_int_equal(pf_lease_state_init(&s, PF_LEASE_TTL_MAX_MS, 0, &err), PF_OK);
    assert_false(s.held);
    assert_false(s.attempted);
    assert_string_equal(s.holder, "");
}

static void test_fresh_state_holds_nothing(void **state)
{
    (void)state;
    struct pf_lease_state s = make_state(300, 50);
    assert_false(pf_lease_state_is_holder(&s, 0));
    assert_false(pf_lease_state_is_holder(&s, 100));
    assert_true(pf_lease_state_valid_until(&s) == INT64_MIN);
    /* nothing tried yet: try now */
    assert_int_equal(pf_lease_state_next_attempt_at(&s, 777), 777);
    assert_int_equal(pf_lease_state_period_ms(&s), (300 - 50) / 3);
}

static void test_acquired_window(void **state)
{
    (void)state;
    struct pf_lease_state s = make_state(300, 50);
    pf_lease_state_acquired(&s, "10.0.0.1:7400|abc", 1000);
    assert_true(s.held);
    assert_string_equal(s.holder, "10.0.0.1:7400|abc");
    assert_int_equal(s.acquired_at, 1000);
    assert_int_equal(s.renewed_at, 1000);
    assert_int_equal(s.expires_at, 1300);
    assert_int_equal(pf_lease_state_valid_until(&s), 1250);
    assert_true(pf_lease_state_is_holder(&s, 1000));
    assert_true(pf_lease_state_is_holder(&s, 1249));
    assert_false(pf_lease_state_is_holder(&s, 1250));
    assert_false(pf_lease_state_is_holder(&s, 1299)); /* Redis still has it; we stopped */
    assert_false(pf_lease_state_is_holder(&s, 5000));
}

static void test_renewed_moves_forward_only(void **state)
{
    (void)state;
    struct pf_lease_state s = make_state(300, 0);
    pf_lease_state_acquired(&s, "me", 1000);
    pf_lease_state_renewed(&s, 1100);
    assert_int_equal(s.renewed_at, 1100);
    assert_int_equal(s.expires_at, 1400);
    assert_int_equal(s.acquired_at, 1000);
    assert_true(pf_lease_state_is_holder(&s, 1399));
    /* a late reply for an older request must not shorten or lengthen it */
    pf_lease_state_renewed(&s, 1050);
    assert_int_equal(s.renewed_at, 1100);
    assert_int_equal(s.expires_at, 1400);
    pf_lease_state_renewed(&s, 1100);
    assert_int_equal(s.renewed_at, 1100);
    pf_lease_state_renewed(&s, INT64_MIN);
    assert_int_equal(s.renewed_at, 1100);
}

static void test_renewed_when_not_held_changes_nothing(void **state)
{
    (void)state;
    struct pf_lease_state s = make_state(300, 0);
    pf_lease_state_lost(&s, "other");
    pf_lease_state_renewed(&s, 1000);
    assert_false(s.held);
    assert_false(pf_lease_state_is_holder(&s, 1000));
    assert_string_equal(s.holder, "other");
    assert_true(s.attempted);
    assert_int_equal(s.last_attempt_at, 1000);
}

static void test_acquired_when_held_is_a_renewal(void **state)
{
    (void)state;
    struct pf_lease_state s = make_state(300, 0);
    pf_lease_state_acquired(&s, "me", 1000);
    pf_lease_state_acquired(&s, "me", 1200);
    assert_int_equal(s.acquired_at, 1000);
    assert_int_equal(s.renewed_at, 1200);
    pf_lease_state_acquired(&s, "me", 900); /* older: no effect on times */
    assert_int_equal(s.renewed_at, 1200);
    assert_int_equal(s.acquired_at, 1000);
}

static void test_lost(void **state)
{
    (void)state;
    struct pf_lease_state s = make_state(300, 0);
    pf_lease_state_acquired(&s, "me", 1000);
    pf_lease_state_lost(&s, "other-host:7400|u2");
    assert_false(s.held);
    assert_false(pf_lease_state_is_holder(&s, 1001)); /* inside the old window, still not */
    assert_string_equal(s.holder, "other-host:7400|u2");
    assert_true(pf_lease_state_valid_until(&s) == INT64_MIN);
    pf_lease_state_lost(&s, NULL);
    assert_string_equal(s.holder, "");
    pf_lease_state_lost(&s, "");
    assert_string_equal(s.holder, "");
}

static void test_long_id_is_cut(void **state)
{
    (void)state;
    char id[PF_LEASE_ID_MAX * 2];
    memset(id, 'x', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    struct pf_lease_state s = make_state(300, 0);
    pf_lease_state_acquired(&s, id, 0);
    assert_int_equal(strlen(s.holder), PF_LEASE_ID_MAX - 1);
    pf_lease_state_lost(&s, id);
    assert_int_equal(strlen(s.holder), PF_LEASE_ID_MAX - 1);
    pf_lease_state_acquired(&s, NULL, 10);
    assert_string_equal(s.holder, "");
}

static void test_period(void **state)
{
    (void)state;
    struct pf_lease_state s = make_state(300, 0);
    assert_int_equal(pf_lease_state_period_ms(&s), 100);
    s = make_state(PF_LEASE_TTL_MIN_MS, PF_LEASE_TTL_MIN_MS / 2);
    assert_int_equal(pf_lease_state_period_ms(&s), 5);
    s = make_state(10000, 1000);
    assert_int_equal(pf_lease_state_period_ms(&s), 3000);
    /* a hand-broken state still yields a positive period */
    s.ttl_ms = 1;
    s.margin_ms = 1;
    assert_int_equal(pf_lease_state_period_ms(&s), 1);
}

static void test_next_attempt_holder(void **state)
{
    (void)state;
    struct pf_lease_state s = make_state(300, 0); /* period 100, retry 25 */
    pf_lease_state_acquired(&s, "me", 1000);
    assert_int_equal(pf_lease_state_next_attempt_at(&s, 1000), 1100);
    assert_int_equal(pf_lease_state_next_attempt_at(&s, 1050), 1100);
    /* the renew at 1100 fails (no success recorded): retry 25 ms later */
    pf_lease_state_attempted(&s, 1100);
    assert_int_equal(pf_lease_state_next_attempt_at(&s, 1100), 1125);
    pf_lease_state_attempted(&s, 1125);
    assert_int_equal(pf_lease_state_next_attempt_at(&s, 1130), 1150);
    /* a success puts it back on the period */
    pf_lease_state_renewed(&s, 1150);
    assert_int_equal(pf_lease_state_next_attempt_at(&s, 1150), 1250);
    /* a renew attempted early (before the period) schedules from the success */
    pf_lease_state_attempted(&s, 1160);
    assert_int_equal(pf_lease_state_next_attempt_at(&s, 1160), 1250);
}

static void test_next_attempt_follower(void **state)
{
    (void)state;
    struct pf_lease_state s = make_state(300, 0);
    pf_lease_state_attempted(&s, 5000);
    pf_lease_state_lost(&s, "leader");
    assert_int_equal(pf_lease_state_next_attempt_at(&s, 5000), 5100);
    assert_int_equal(pf_lease_state_next_attempt_at(&s, 9999), 5100); /* overdue: caller goes now */
    pf_lease_state_attempted(&s, 5100);
    assert_int_equal(pf_lease_state_next_attempt_at(&s, 5100), 5200);
}

static void test_next_attempt_never_before_last(void **state)
{
    (void)state;
    struct pf_lease_state s = make_state(300, 0);
    pf_lease_state_attempted(&s, 1000);
    pf_lease_state_attempted(&s, 500); /* time never runs backwards */
    assert_int_equal(s.last_attempt_at, 1000);
    assert_true(pf_lease_state_next_attempt_at(&s, 0) > 1000);
    /* at the top of the clock nothing wraps */
    pf_lease_state_acquired(&s, "me", INT64_MAX - 5);
    assert_true(pf_lease_state_next_attempt_at(&s, INT64_MAX - 5) == INT64_MAX);
    assert_true(pf_lease_state_valid_until(&s) == INT64_MAX);
    assert_true(s.expires_at == INT64_MAX);
}

/* A holder renewing on schedule keeps the lease through many periods. */
static void test_renewing_on_schedule_keeps_it(void **state)
{
    (void)state;
    struct pf_lease_state s = make_state(300, 50);
    int64_t now = 0;
    pf_lease_state_acquired(&s, "me", now);
    for (int i = 0; i < 1000; i++) {
        int64_t next = pf_lease_state_next_attempt_at(&s, now);
        assert_true(next > now);
        for (int64_t t = now; t < next; t += 7)
            assert_true(pf_lease_state_is_holder(&s, t));
        now = next;
        assert_true(pf_lease_state_is_holder(&s, now));
        pf_lease_state_renewed(&s, now);
    }
}

/* Randomized: whatever happens, we stop acting as holder no later than the
 * earliest moment Redis could let another contender in (the send time of our
 * last success plus the TTL), and the next attempt is never in the past of
 * the last one. */
static void test_randomized_invariants(void **state)
{
    (void)state;
    unsigned seed = 12345;
    for (int run = 0; run < 200; run++) {
        int64_t ttl = PF_LEASE_TTL_MIN_MS + rand_r(&seed) % 5000;
        int64_t margin = rand_r(&seed) % (ttl / 2 + 1);
        struct pf_lease_state s = make_state(ttl, margin);
        int64_t now = rand_r(&seed) % 100000;
        int64_t last_success = INT64_MIN;
        for (int step = 0; step < 200; step++) {
            now += rand_r(&seed) % (ttl / 2 + 1);
            int action = rand_r(&seed) % 4;
            if (action == 0) {
                pf_lease_state_acquired(&s, "me", now);
                last_success = now > last_success ? now : last_success;
            } else if (action == 1) {
                bool was_held = s.held;
                pf_lease_state_renewed(&s, now);
                if (was_held)
                    last_success = now > last_success ? now : last_success;
            } else if (action == 2) {
                pf_lease_state_attempted(&s, now);
            } else {
                pf_lease_state_lost(&s, "other");
            }
            for (int64_t probe = now; probe < now + ttl + 10; probe += ttl / 7 + 1) {
                if (pf_lease_state_is_holder(&s, probe)) {
                    assert_true(s.held);
                    assert_true(probe < last_success + ttl);
                    assert_true(probe < s.expires_at);
                }
            }
            if (s.attempted)
                assert_true(pf_lease_state_next_attempt_at(&s, now) > s.last_attempt_at);
            if (s.held)
                assert_true(pf_lease_state_valid_until(&s) <= s.expires_at);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_at_window),
        cmocka_unit_test(test_valid_at_rejects_nonsense),
        cmocka_unit_test(test_valid_at_saturates),
        cmocka_unit_test(test_state_init_validates),
        cmocka_unit_test(test_fresh_state_holds_nothing),
        cmocka_unit_test(test_acquired_window),
        cmocka_unit_test(test_renewed_moves_forward_only),
        cmocka_unit_test(test_renewed_when_not_held_changes_nothing),
        cmocka_unit_test(test_acquired_when_held_is_a_renewal),
        cmocka_unit_test(test_lost),
        cmocka_unit_test(test_long_id_is_cut),
        cmocka_unit_test(test_period),
        cmocka_unit_test(test_next_attempt_holder),
        cmocka_unit_test(test_next_attempt_follower),
        cmocka_unit_test(test_next_attempt_never_before_last),
        cmocka_unit_test(test_renewing_on_schedule_keeps_it),
        cmocka_unit_test(test_randomized_invariants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
