/* Unit tests for pf-agent's pure modules: backoff (bounds, jitter spread,
 * overflow), evbuf (state changes never dropped, oldest telemetry dropped
 * first, ack trimming, resend after reconnect, renumbering after a lost state
 * file), statefile (round trip, atomic write and read back, missing file,
 * many corrupt files each rejected with a line number), and the --materials
 * parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "backoff.h"
#include "evbuf.h"
#include "session.h"
#include "statefile.h"

/* ---- backoff ---- */

static void test_backoff_ceiling_doubles_to_max(void **state)
{
    struct pf_backoff b;

    pf_backoff_init(&b, 100, 1000);
    assert_int_equal(pf_backoff_ceiling(&b), 100);
    int64_t expect[] = {100, 200, 400, 800, 1000, 1000, 1000};
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        assert_int_equal(pf_backoff_ceiling(&b), expect[i]);
        (void)pf_backoff_next(&b, 0);
    }
    pf_backoff_reset(&b);
    assert_int_equal(pf_backoff_ceiling(&b), 100);
}

static void test_backoff_full_jitter_bounds(void **state)
{
    struct pf_backoff b;
    uint64_t rng = 12345;

    pf_backoff_init(&b, 50, 30000);
    for (int round = 0; round < 200; round++) {
        int64_t ceiling = pf_backoff_ceiling(&b);
        int64_t d = pf_backoff_next(&b, pf_backoff_random(&rng));
        assert_true(d >= 0);
        assert_true(d <= ceiling);
        assert_true(ceiling <= 30000);
    }
    /* the extremes of the random number map onto the extremes of the window */
    pf_backoff_init(&b, 100, 100);
    assert_int_equal(pf_backoff_next(&b, 100), 100);
    assert_int_equal(pf_backoff_next(&b, 101), 0);
    assert_int_equal(pf_backoff_next(&b, UINT64_MAX), (int64_t)(UINT64_MAX % 101));
}

static void test_backoff_jitter_spreads(void **state)
{
    struct pf_backoff b;
    uint64_t rng = 7;
    int buckets[10] = {0};

    /* 10,000 agents retrying once at the maximum: spread over the window */
    for (int i = 0; i < 10000; i++) {
        pf_backoff_init(&b, 1000, 1000);
        int64_t d = pf_backoff_next(&b, pf_backoff_random(&rng));
        buckets[d * 10 / 1001]++;
    }
    for (int i = 0; i < 10; i++) {
        assert_true(buckets[i] > 800);
        assert_true(buckets[i] < 1200);
    }
}

static void test_backoff_no_overflow_and_bad_input(void **state)
{
    struct pf_backoff b;

    pf_backoff_init(&b, 1, INT64_MAX);
    for (int i = 0; i < 1000; i++)
        (void)pf_backoff_next(&b, UINT64_MAX);
    assert_true(pf_backoff_ceiling(&b) > 0);
    assert_true(pf_backoff_ceiling(&b) <= INT64_MAX);
    pf_backoff_init(&b, -5, -10); /* nonsense reads as 1..1 */
    assert_int_equal(pf_backoff_ceiling(&b), 1);
    assert_true(pf_backoff_next(&b, 99) <= 1);
    pf_backoff_init(&b, 500, 100); /* max below base: base wins */
    assert_int_equal(pf_backoff_ceiling(&b), 500);
    uint64_t zero = 0;
    assert_true(pf_backoff_random(&zero) != 0); /* a zero state still moves */
    assert_true(zero != 0);
}

/* ---- evbuf ---- */

static void push_t(struct pf_evbuf *b, const char *text)
{
    assert_int_equal(pf_evbuf_push_telemetry(b, 3, text, strlen(text)), PF_OK);
}

static uint64_t push_s(struct pf_evbuf *b, const char *text)
{
    uint64_t seq = 0;
    struct pf_error err;
    assert_int_equal(pf_evbuf_push_state(b, 4, text, strlen(text), &seq, &err), PF_OK);
    return seq;
}

/* Takes the next unsent entry's text (and marks it sent); "" when none. */
static const char *take(struct pf_evbuf *b, char *out, size_t size)
{
    struct pf_evbuf_entry e;
    if (!pf_evbuf_next(b, &e)) {
        out[0] = '\0';
        return out;
    }
    snprintf(out, size, "%.*s", (int)e.len, (const char *)e.data);
    pf_evbuf_sent(b, e.id);
    return out;
}

static void test_evbuf_seq_and_order(void **state)
{
    struct pf_evbuf *b = pf_evbuf_create(8, 8, 64);
    char t[64];

    pf_evbuf_set_last_seq(b, 41);
    push_t(b, "status1");
    assert_int_equal(push_s(b, "started"), 42);
    push_t(b, "status2");
    assert_int_equal(push_s(b, "done"), 43);
    assert_int_equal(pf_evbuf_last_seq(b), 43);
    assert_string_equal(take(b, t, sizeof t), "status1");
    assert_string_equal(take(b, t, sizeof t), "started");
    assert_string_equal(take(b, t, sizeof t), "status2");
    assert_string_equal(take(b, t, sizeof t), "done");
    assert_string_equal(take(b, t, sizeof t), "");
    /* telemetry is gone once sent; state waits for its ack */
    assert_int_equal(pf_evbuf_count(b, PF_EVBUF_TELEMETRY), 0);
    assert_int_equal(pf_evbuf_count(b, PF_EVBUF_STATE), 2);
    pf_evbuf_set_last_seq(b, 10); /* never backwards */
    assert_int_equal(pf_evbuf_last_seq(b), 43);
    pf_evbuf_destroy(b);
}

static void test_evbuf_overflow_keeps_state_changes(void **state)
{
    struct pf_evbuf *b = pf_evbuf_create(3, 2, 64);
    struct pf_error err;
    uint64_t seq = 99;
    char t[64];

    push_s(b, "s1");
    push_t(b, "t1");
    push_s(b, "s2");
    push_t(b, "t2");
    push_s(b, "s3");
    /* the fourth state change is refused, clearly, and uses no seq */
    assert_int_equal(pf_evbuf_push_state(b, 4, "s4", 2, &seq, &err), PF_E_RESOURCE);
    assert_int_equal(seq, 99);
    assert_non_null(strstr(err.msg, "event buffer full"));
    assert_non_null(strstr(err.msg, "seq 1..3"));
    assert_int_equal(pf_evbuf_last_seq(b), 3);
    /* telemetry keeps flowing: the oldest telemetry goes, state stays */
    push_t(b, "t3");
    push_t(b, "t4");
    assert_int_equal(pf_evbuf_dropped(b), 2);
    assert_int_equal(pf_evbuf_count(b, PF_EVBUF_STATE), 3);
    assert_string_equal(take(b, t, sizeof t), "s1");
    assert_string_equal(take(b, t, sizeof t), "s2");
    assert_string_equal(take(b, t, sizeof t), "s3");
    assert_string_equal(take(b, t, sizeof t), "t3");
    assert_string_equal(take(b, t, sizeof t), "t4");
    /* an ack frees room */
    pf_evbuf_ack(b, 1);
    assert_int_equal(pf_evbuf_push_state(b, 4, "s4", 2, &seq, &err), PF_OK);
    assert_int_equal(seq, 4);
    pf_evbuf_destroy(b);
}

static void test_evbuf_ack_trims_and_rewind_resends(void **state)
{
    struct pf_evbuf *b = pf_evbuf_create(16, 4, 64);
    struct pf_evbuf_entry e;
    char t[64];

    for (int i = 0; i < 5; i++) {
        char s[8];
        snprintf(s, sizeof s, "s%d", i + 1);
        push_s(b, s);
    }
    while (take(b, t, sizeof t)[0] != '\0')
        ;
    pf_evbuf_ack(b, 2);
    assert_int_equal(pf_evbuf_acked_seq(b), 2);
    assert_int_equal(pf_evbuf_count(b, PF_EVBUF_STATE), 3);
    pf_evbuf_ack(b, 1); /* an older ack changes nothing */
    assert_int_equal(pf_evbuf_count(b, PF_EVBUF_STATE), 3);
    pf_evbuf_ack(b, 1000); /* beyond what was numbered: clamped */
    assert_int_equal(pf_evbuf_acked_seq(b), 5);
    assert_int_equal(pf_evbuf_count(b, PF_EVBUF_STATE), 0);

    push_s(b, "s6");
    push_s(b, "s7");
    push_t(b, "t1");
    assert_string_equal(take(b, t, sizeof t), "s6");
    assert_string_equal(take(b, t, sizeof t), "s7");
    /* disconnected before any ack: after the reconnect both go again */
    pf_evbuf_rewind(b);
    assert_string_equal(take(b, t, sizeof t), "s6");
    assert_true(pf_evbuf_next(b, &e));
    assert_int_equal(e.seq, 7);
    /* the Welcome says 6 was recorded */
    assert_false(pf_evbuf_welcome(b, 6));
    assert_string_equal(take(b, t, sizeof t), "s7");
    assert_string_equal(take(b, t, sizeof t), "t1");
    assert_string_equal(take(b, t, sizeof t), "");
    pf_evbuf_sent(b, 123456); /* unknown id: ignored */
    pf_evbuf_destroy(b);
}

static void test_evbuf_welcome_renumbers_after_lost_state(void **state)
{
    struct pf_evbuf *b = pf_evbuf_create(16, 4, 64);
    struct pf_evbuf_entry e;

    push_s(b, "a"); /* seq 1 after a lost state file */
    push_s(b, "b"); /* seq 2 */
    assert_true(pf_evbuf_welcome(b, 50));
    assert_int_equal(pf_evbuf_last_seq(b), 52);
    assert_true(pf_evbuf_state_at(b, 0, &e));
    assert_int_equal(e.seq, 51);
    assert_true(pf_evbuf_state_at(b, 1, &e));
    assert_int_equal(e.seq, 52);
    assert_false(pf_evbuf_state_at(b, 2, &e));
    assert_int_equal(push_s(b, "c"), 53);
    pf_evbuf_destroy(b);
}

static void test_evbuf_restore_and_bad_input(void **state)
{
    struct pf_evbuf *b = pf_evbuf_create(2, 1, 8);
    struct pf_error err;
    uint64_t seq;

    assert_null(pf_evbuf_create(0, 1, 1));
    assert_null(pf_evbuf_create(1, 0, 1));
    assert_int_equal(pf_evbuf_push_state(b, 4, "", 0, &seq, &err), PF_E_INVALID);
    assert_int_equal(pf_evbuf_push_state(b, 4, "123456789", 9, &seq, &err), PF_E_INVALID);
    assert_int_equal(pf_evbuf_push_telemetry(b, 3, "123456789", 9), PF_E_INVALID);
    assert_int_equal(pf_evbuf_restore_state(b, 0, 4, "x", 1, &err), PF_E_INVALID);
    assert_int_equal(pf_evbuf_restore_state(b, 7, 4, "x", 1, &err), PF_OK);
    assert_int_equal(pf_evbuf_last_seq(b), 7);
    assert_int_equal(pf_evbuf_restore_state(b, 5, 4, "y", 1, &err), PF_E_INVALID); /* order */
    assert_int_equal(pf_evbuf_restore_state(b, 9, 4, "y", 1, &err), PF_OK);
    assert_int_equal(pf_evbuf_restore_state(b, 10, 4, "z", 1, &err), PF_E_RESOURCE);
    pf_evbuf_ack(b, 9);
    assert_int_equal(pf_evbuf_restore_state(b, 8, 4, "x", 1, &err), PF_OK); /* acked: ignored */
    assert_int_equal(pf_evbuf_count(b, PF_EVBUF_STATE), 0);
    assert_int_equal(push_s(b, "n"), 10);
    pf_evbuf_destroy(b);
    pf_evbuf_destroy(NULL);
}

/* ---- statefile ---- */

static struct pf_statefile *sample(void)
{
    struct pf_statefile *st = calloc(1, sizeof(*st));
    pf_statefile_init(st);
    st->last_seq = 17;
    st->bed_clear = false;
    snprintf(st->current.id, sizeof st->current.id, "a-01JD5");
    snprintf(st->current.job_id, sizeof st->current.job_id, "j-01JD4");
    st->current.state = PF_ATTEMPT_FAILED;
    st->current.progress = 0.5f;
    memset(st->current.file_hex, 'a', 64);
    st->current.file_hex[64] = '\0';
    st->current.started_unix_ms = 1700000000000;
    st->current.ended_unix_ms = 1700000060000;
    snprintf(st->current.reason, sizeof st->current.reason,
             "thermal runaway: 100%% - \"heater\"\twith\nnewline");
    pf_statefile_remember_done(st);
    snprintf(st->done[st->done_count].id, sizeof st->done[0].id, "-");
    st->done[st->done_count++].state = PF_ATTEMPT_SUCCEEDED;
    st->event_count = 2;
    st->events[0].seq = 16;
    st->events[0].type = 4;
    st->events[0].len = 3;
    memcpy(st->events[0].data, "\x00\x01\xff", 3);
    st->events[1].seq = 17;
    st->events[1].type = 5;
    st->events[1].len = 1;
    st->events[1].data[0] = 'x';
    return st;
}

static void test_statefile_round_trip(void **state)
{
    struct pf_statefile *st = sample(), *back = calloc(1, sizeof(*back));
    struct pf_error err;
    struct pf_buf b;

    pf_buf_init(&b, PF_STATEFILE_FILE_MAX);
    assert_int_equal(pf_statefile_format(st, &b, &err), PF_OK);
    assert_int_equal(pf_statefile_parse(b.data, b.len, back, &err), PF_OK);
    assert_int_equal(back->last_seq, 17);
    assert_false(back->bed_clear);
    assert_string_equal(back->current.id, "a-01JD5");
    assert_string_equal(back->current.job_id, "j-01JD4");
    assert_int_equal(back->current.state, PF_ATTEMPT_FAILED);
    assert_true(back->current.progress > 0.49f && back->current.progress < 0.51f);
    assert_string_equal(back->current.file_hex, st->current.file_hex);
    assert_int_equal(back->current.started_unix_ms, 1700000000000);
    assert_int_equal(back->current.ended_unix_ms, 1700000060000);
    assert_string_equal(back->current.reason, st->current.reason);
    assert_int_equal(back->done_count, 2);
    assert_string_equal(back->done[0].id, "a-01JD5");
    assert_string_equal(back->done[1].id, "-");
    assert_int_equal(back->event_count, 2);
    assert_memory_equal(back->events[0].data, "\x00\x01\xff", 3);
    assert_int_equal(back->events[1].type, 5);
    assert_int_equal(pf_statefile_lookup(back, "a-01JD5"), PF_ATTEMPT_FAILED);
    assert_int_equal(pf_statefile_lookup(back, "-"), PF_ATTEMPT_SUCCEEDED);
    assert_int_equal(pf_statefile_lookup(back, "a-other"), PF_ATTEMPT_NONE);
    assert_int_equal(pf_statefile_lookup(back, ""), PF_ATTEMPT_NONE);
    pf_buf_release(&b);
    free(st);
    free(back);
}

static void test_statefile_empty_state_round_trip(void **state)
{
    struct pf_statefile *st = calloc(1, sizeof(*st)), *back = calloc(1, sizeof(*back));
    struct pf_error err;
    struct pf_buf b;

    pf_statefile_init(st);
    pf_buf_init(&b, 0);
    assert_int_equal(pf_statefile_format(st, &b, &err), PF_OK);
    assert_string_equal(b.data, "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nend\n");
    assert_int_equal(pf_statefile_parse(b.data, b.len, back, &err), PF_OK);
    assert_int_equal(back->current.state, PF_ATTEMPT_NONE);
    assert_true(back->bed_clear);
    pf_buf_release(&b);
    free(st);
    free(back);
}

static void test_statefile_done_list_is_bounded(void **state)
{
    struct pf_statefile *st = calloc(1, sizeof(*st));

    pf_statefile_init(st);
    for (int i = 0; i < PF_STATEFILE_DONE_MAX + 5; i++) {
        snprintf(st->current.id, sizeof st->current.id, "a-%d", i);
        st->current.state = PF_ATTEMPT_SUCCEEDED;
        pf_statefile_remember_done(st);
        pf_statefile_remember_done(st); /* twice: no duplicate */
    }
    assert_int_equal(st->done_count, PF_STATEFILE_DONE_MAX);
    assert_int_equal(pf_statefile_lookup(st, "a-0"), PF_ATTEMPT_NONE); /* forgotten */
    assert_int_equal(pf_statefile_lookup(st, "a-5"), PF_ATTEMPT_SUCCEEDED);
    st->current.state = PF_ATTEMPT_PRINTING; /* not final: not remembered */
    snprintf(st->current.id, sizeof st->current.id, "a-live");
    pf_statefile_remember_done(st);
    assert_int_equal(pf_statefile_lookup(st, "a-live"), PF_ATTEMPT_PRINTING);
    assert_string_equal(st->done[PF_STATEFILE_DONE_MAX - 1].id, "a-20");
    free(st);
}

static void test_statefile_refuses_to_write_nonsense(void **state)
{
    struct pf_statefile *st = sample();
    struct pf_error err;
    struct pf_buf b;

    pf_buf_init(&b, 0);
    st->current.progress = 1.5f;
    assert_int_equal(pf_statefile_format(st, &b, &err), PF_E_INVALID);
    st->current.progress = 0.5f;
    st->current.id[0] = '\0';
    assert_int_equal(pf_statefile_format(st, &b, &err), PF_E_INVALID);
    free(st);
    st = sample();
    st->events[1].seq = 16; /* not increasing */
    assert_int_equal(pf_statefile_format(st, &b, &err), PF_E_INVALID);
    pf_buf_release(&b);
    free(st);
}

static void test_statefile_corrupt_texts(void **state)
{
    static const char *const bad[] = {
        "",
        "pf-agent-state 2\nlast_seq 0\nbed_clear 1\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\n",                  /* no end */
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nend",               /* no final newline */
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nend\nlast_seq 1\n", /* after end */
        "pf-agent-state 1\nbed_clear 1\nend\n",                         /* no last_seq */
        "pf-agent-state 1\nlast_seq 0\nend\n",                          /* no bed_clear */
        "pf-agent-state 1\nlast_seq -1\nbed_clear 1\nend\n",
        "pf-agent-state 1\nlast_seq 01\nbed_clear 1\nend\n",
        "pf-agent-state 1\nlast_seq 99999999999999999999999\nbed_clear 1\nend\n",
        "pf-agent-state 1\nlast_seq 1\nlast_seq 2\nbed_clear 1\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 2\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nmystery 1\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\n\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nattempt a j printing 0.5 0 0 -\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nattempt - j printing 0.5 0 0 - -\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nattempt a j flying 0.5 0 0 - -\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nattempt a j printing 1.5 0 0 - -\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nattempt a j printing nan 0 0 - -\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nattempt a j printing .5 0 0 - -\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nattempt a j printing 0.5 x 0 - -\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nattempt a j printing 0.5 0 0 abc -\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nattempt a%zz j printing 0.5 0 0 - -\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nattempt a%00 j printing 0.5 0 0 - -\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nattempt a j printing 0 0 0 - -\n"
        "attempt b j printing 0 0 0 - -\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\ndone a printing\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\ndone a\nend\n",
        "pf-agent-state 1\nlast_seq 5\nbed_clear 1\nevent 0 4 00\nend\n",
        "pf-agent-state 1\nlast_seq 5\nbed_clear 1\nevent 3 4 0\nend\n",
        "pf-agent-state 1\nlast_seq 5\nbed_clear 1\nevent 3 4 zz\nend\n",
        "pf-agent-state 1\nlast_seq 5\nbed_clear 1\nevent 3 4 \nend\n",
        "pf-agent-state 1\nlast_seq 5\nbed_clear 1\nevent 3 4 00\nevent 3 4 00\nend\n",
        "pf-agent-state 1\nlast_seq 2\nbed_clear 1\nevent 3 4 00\nend\n", /* above last_seq */
        "pf-agent-state 1\nlast_seq 5\nbed_clear 1\nevent 3 99999 00\nend\n",
        "pf-agent-state 1\nlast_seq 0\nbed_clear 1\nend 1\nend\n",
        "pf-agent-state 1\nlast_seq 0 1\nbed_clear 1\nend\n",
    };
    struct pf_statefile *st = calloc(1, sizeof(*st));
    struct pf_error err;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pf_error_clear(&err);
        enum pf_status rc = pf_statefile_parse(bad[i], strlen(bad[i]), st, &err);
        if (rc != PF_E_DATA_LOSS)
            fail_msg("case %zu parsed (rc %d): %s", i, rc, bad[i]);
        assert_non_null(strstr(err.msg, "line "));
        /* a rejected file leaves nothing half-read behind */
        assert_int_equal(st->current.state == PF_ATTEMPT_NONE || rc != PF_OK, 1);
    }
    /* NUL bytes, very long lines and binary junk */
    char junk[9000];
    memset(junk, 'x', sizeof junk);
    junk[sizeof junk - 1] = '\n';
    assert_int_equal(pf_statefile_parse(junk, sizeof junk, st, &err), PF_E_DATA_LOSS);
    const char nul[] = "pf-agent-state 1\nlast_seq 0\0\nbed_clear 1\nend\n";
    assert_int_equal(pf_statefile_parse(nul, sizeof nul - 1, st, &err), PF_E_DATA_LOSS);
    assert_int_equal(pf_statefile_parse(NULL, 0, st, &err), PF_E_DATA_LOSS);
    free(st);
}

static void test_statefile_files(void **state)
{
    char dir[] = "/tmp/pf-agent-unit-XXXXXX";
    char path[256], tmp[300];
    struct pf_statefile *st = sample(), *back = calloc(1, sizeof(*back));
    struct pf_error err;
    FILE *f;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/p1.state", dir);
    /* missing: NOT_FOUND and an empty state */
    back->last_seq = 5;
    assert_int_equal(pf_statefile_read(path, back, &err), PF_E_NOT_FOUND);
    assert_int_equal(back->last_seq, 0);
    assert_true(back->bed_clear);
    /* atomic write, then read back; no temporary file left behind */
    assert_int_equal(pf_statefile_write(path, st, &err), PF_OK);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(pf_statefile_read(path, back, &err), PF_OK);
    assert_string_equal(back->current.id, "a-01JD5");
    /* overwrite */
    st->last_seq = 30;
    assert_int_equal(pf_statefile_write(path, st, &err), PF_OK);
    assert_int_equal(pf_statefile_read(path, back, &err), PF_OK);
    assert_int_equal(back->last_seq, 30);
    /* a stale .tmp from a crash mid-write does not matter */
    f = fopen(tmp, "w");
    fputs("garbage", f);
    fclose(f);
    assert_int_equal(pf_statefile_read(path, back, &err), PF_OK);
    assert_int_equal(pf_statefile_write(path, st, &err), PF_OK);
    /* a corrupt file: a clear error naming the file and the line */
    f = fopen(path, "w");
    fputs("pf-agent-state 1\nlast_seq 3\nbed_clear 1\nattempt a-1 j printing 0.2 0 0\n", f);
    fclose(f);
    assert_int_equal(pf_statefile_read(path, back, &err), PF_E_DATA_LOSS);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "line 4"));
    assert_int_equal(back->current.state, PF_ATTEMPT_NONE);
    /* a cut-short file (the crash that atomic writes prevent) */
    f = fopen(path, "w");
    fputs("pf-agent-state 1\nlast_seq 3\nbed_clear 1\n", f);
    fclose(f);
    assert_int_equal(pf_statefile_read(path, back, &err), PF_E_DATA_LOSS);
    assert_non_null(strstr(err.msg, "cut short"));
    /* a directory that is not there: the write fails cleanly */
    char nodir[300];
    snprintf(nodir, sizeof nodir, "%s/missing/p.state", dir);
    assert_int_equal(pf_statefile_write(nodir, st, &err), PF_E_IO);
    /* too large a file */
    f = fopen(path, "w");
    for (int i = 0; i < PF_STATEFILE_FILE_MAX / 10 + 10; i++)
        fputs("xxxxxxxxx\n", f);
    fclose(f);
    assert_int_equal(pf_statefile_read(path, back, &err), PF_E_RESOURCE);
    unlink(path);
    unlink(tmp);
    rmdir(dir);
    free(st);
    free(back);
}

/* ---- --materials ---- */

static void test_materials_parse(void **state)
{
    struct pf_session_material m[4];
    struct pf_error err;
    size_t n;

    assert_int_equal(pf_session_parse_materials("0=PLA:black, 1=PETG:white", m, 4, &n, &err),
                     PF_OK);
    assert_int_equal(n, 2);
    assert_int_equal(m[0].extruder, 0);
    assert_string_equal(m[0].material, "PLA");
    assert_string_equal(m[0].colour, "black");
    assert_int_equal(m[1].extruder, 1);
    assert_string_equal(m[1].colour, "white");
    assert_int_equal(pf_session_parse_materials("3=ASA", m, 4, &n, &err), PF_OK);
    assert_int_equal(n, 1);
    assert_string_equal(m[0].colour, "");
    assert_int_equal(pf_session_parse_materials(NULL, m, 4, &n, &err), PF_OK);
    assert_int_equal(n, 0);
    static const char *const bad[] = {
        "PLA",
        "=PLA",
        "x=PLA",
        "16=PLA",
        "-1=PLA",
        "0=",
        "0=PLA:",
        "0=PLA,0=PETG",
        ",",
        "0=PLA,,1=PETG",
        "0=PLA,1=PLA,2=PLA,3=PLA,4=PLA",
        "0=PLAPLAPLAPLAPLAPLAPLAPLAPLAPLAPLAPLAPLAPLAPLAPLAPLAPLAPLAPLAPLAPLA",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (pf_session_parse_materials(bad[i], m, 4, &n, &err) != PF_E_INVALID)
            fail_msg("materials '%s' accepted", bad[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_ceiling_doubles_to_max),
        cmocka_unit_test(test_backoff_full_jitter_bounds),
        cmocka_unit_test(test_backoff_jitter_spreads),
        cmocka_unit_test(test_backoff_no_overflow_and_bad_input),
        cmocka_unit_test(test_evbuf_seq_and_order),
        cmocka_unit_test(test_evbuf_overflow_keeps_state_changes),
        cmocka_unit_test(test_evbuf_ack_trims_and_rewind_resends),
        cmocka_unit_test(test_evbuf_welcome_renumbers_after_lost_state),
        cmocka_unit_test(test_evbuf_restore_and_bad_input),
        cmocka_unit_test(test_statefile_round_trip),
        cmocka_unit_test(test_statefile_empty_state_round_trip),
        cmocka_unit_test(test_statefile_done_list_is_bounded),
        cmocka_unit_test(test_statefile_refuses_to_write_nonsense),
        cmocka_unit_test(test_statefile_corrupt_texts),
        cmocka_unit_test(test_statefile_files),
        cmocka_unit_test(test_materials_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
