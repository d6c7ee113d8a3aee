/* Unit tests for services/scheduler/validate.c: every request check of the
 * scheduler's unary API, WatchEvents and Connect's hello against valid requests and, field by
 * field, the adversarial ones (empty, over-long, out of range, control characters, invalid UTF-8,
 * repeated entries, unknown enum values), the page tokens (round trip, tampering, truncation,
 * another filter), and the shown job and printer states. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "validate.h"

#define DIGEST_OK "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* Asserts that call (which passes &e_, the error the macro declares) returns
 * PF_E_INVALID with a message containing want. */
#define assert_invalid(call, want)                                                                 \
    do {                                                                                           \
        struct pf_error e_;                                                                        \
        pf_error_clear(&e_);                                                                       \
        enum pf_status rc_ = (call);                                                               \
        if (rc_ != PF_E_INVALID || strstr(e_.msg, (want)) == NULL)                                 \
            fail_msg("%s: got %d '%s', want INVALID containing '%s'", #call, rc_, e_.msg, (want)); \
    } while (0)

/* Asserts that call (passing &e_) returns PF_OK. */
#define assert_ok(call)                                                                            \
    do {                                                                                           \
        struct pf_error e_;                                                                        \
        pf_error_clear(&e_);                                                                       \
        enum pf_status rc_ = (call);                                                               \
        if (rc_ != PF_OK)                                                                          \
            fail_msg("%s: got %d '%s', want OK", #call, rc_, e_.msg);                              \
    } while (0)

static char *repeat(char c, size_t n)
{
    static char buf[8192];
    assert_true(n < sizeof(buf));
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

/* ---- building blocks ---- */

static void test_text_printable(void **state)
{
    assert_true(pf_sched_text_printable(NULL));
    assert_true(pf_sched_text_printable(""));
    assert_true(pf_sched_text_printable("benchy x4 (PETG) — blue"));
    assert_true(pf_sched_text_printable("日本語 😀"));
    assert_false(pf_sched_text_printable("a\nb"));
    assert_false(pf_sched_text_printable("tab\there"));
    assert_false(pf_sched_text_printable("del\x7f"));
    assert_false(pf_sched_text_printable("esc\x1b[31m"));
    assert_false(pf_sched_text_printable("c1 \xc2\x85"));      /* NEL */
    assert_false(pf_sched_text_printable("\xff"));             /* never valid */
    assert_false(pf_sched_text_printable("\xc0\xaf"));         /* overlong '/' */
    assert_false(pf_sched_text_printable("\xe0\x80\xaf"));     /* overlong */
    assert_false(pf_sched_text_printable("\xed\xa0\x80"));     /* surrogate */
    assert_false(pf_sched_text_printable("\xf4\x90\x80\x80")); /* above U+10FFFF */
    assert_false(pf_sched_text_printable("cut \xe6\x97"));     /* truncated */
    assert_false(pf_sched_text_printable("\x80 lone continuation"));
}

static void test_check_text(void **state)
{
    assert_ok(pf_sched_check_text("", "name", 10, true, &e_));
    assert_ok(pf_sched_check_text(NULL, "name", 10, true, &e_));
    assert_ok(pf_sched_check_text("0123456789", "name", 10, false, &e_));
    assert_invalid(pf_sched_check_text("", "name", 10, false, &e_), "name is required");
    assert_invalid(pf_sched_check_text("01234567890", "name", 10, false, &e_),
                   "name '01234567890' is 11 bytes long: at most 10 allowed");
    assert_invalid(pf_sched_check_text("a\x01z", "reason", 10, true, &e_),
                   "reason 'a?z' is not printable");
    /* a long bad value is quoted only in part */
    assert_invalid(pf_sched_check_text(repeat('x', 1000), "name", 200, true, &e_), "...' is 1000");
}

static void test_queue_name(void **state)
{
    assert_ok(pf_sched_check_queue_name("default", "queue", &e_));
    assert_ok(pf_sched_check_queue_name("A-z_0.9", "queue", &e_));
    assert_ok(pf_sched_check_queue_name(repeat('q', 64), "queue", &e_));
    assert_invalid(pf_sched_check_queue_name("", "queue", &e_), "queue is empty");
    assert_invalid(pf_sched_check_queue_name(NULL, "queue", &e_), "queue is empty");
    assert_invalid(pf_sched_check_queue_name(repeat('q', 65), "queue", &e_),
                   "is 65 characters long: at most 64");
    assert_invalid(pf_sched_check_queue_name("has space", "queue", &e_),
                   "queue 'has space' has a character outside [A-Za-z0-9._-] at offset 3");
    assert_invalid(pf_sched_check_queue_name("a/b", "queue", &e_), "outside");
    assert_invalid(pf_sched_check_queue_name("q\n", "queue", &e_), "outside");
    assert_invalid(pf_sched_check_queue_name("ünï", "queue", &e_), "outside");
    assert_invalid(pf_sched_check_queue_name("x';DROP", "queue", &e_), "outside");
}

static void test_ids(void **state)
{
    assert_ok(pf_sched_check_id("j-01JD0000000000000000000000", "id", &e_));
    assert_ok(pf_sched_check_id("anything printable", "id", &e_));
    assert_invalid(pf_sched_check_id("", "id", &e_), "id is required");
    assert_invalid(pf_sched_check_id(NULL, "id", &e_), "id is required");
    assert_invalid(pf_sched_check_id(repeat('j', PF_SCHED_TEXT_ID_MAX + 1), "id", &e_),
                   "bytes long: ids are at most 127");
    assert_invalid(pf_sched_check_id("j-\x01", "id", &e_), "is not a valid id");
    assert_invalid(pf_sched_check_id("j-\xff", "id", &e_), "is not a valid id");

    assert_ok(pf_sched_check_printer_id("mk4-03", "printer_id", &e_));
    assert_ok(pf_sched_check_printer_id(repeat('p', 64), "printer_id", &e_));
    assert_invalid(pf_sched_check_printer_id("", "printer_id", &e_), "printer_id is required");
    assert_invalid(pf_sched_check_printer_id(repeat('p', 65), "printer_id", &e_), "at most 64");
    assert_invalid(pf_sched_check_printer_id("mk4 03", "printer_id", &e_), "outside");
    assert_invalid(pf_sched_check_printer_id(NULL, "hello.printer_id", &e_),
                   "hello.printer_id is required");
    assert_invalid(pf_sched_check_printer_id("mk4\xc3\xa9", "hello.printer_id", &e_), "outside");
    assert_invalid(pf_sched_check_printer_id("mk4/../x", "hello.printer_id", &e_), "outside");
}

/* A hello's profile: the same character set and length as a printer id. */
static void test_profile_name(void **state)
{
    assert_ok(pf_sched_check_profile_name("prusa-mk4_0.4", "hello.profile", &e_));
    assert_ok(pf_sched_check_profile_name(repeat('p', 64), "hello.profile", &e_));
    assert_invalid(pf_sched_check_profile_name("", "hello.profile", &e_), "hello.profile is empty");
    assert_invalid(pf_sched_check_profile_name(NULL, "hello.profile", &e_),
                   "hello.profile is empty");
    assert_invalid(pf_sched_check_profile_name(repeat('p', 65), "hello.profile", &e_),
                   "at most 64");
    assert_invalid(pf_sched_check_profile_name("mk4\n", "hello.profile", &e_), "offset 3");
    assert_invalid(pf_sched_check_profile_name("a:b", "hello.profile", &e_), "outside");
}

static void test_state_mask(void **state)
{
    const int some[] = {1, 3, 3, 6};
    const int odd[] = {0, -1, 32, 2, 31, 1000};
    (void)state;
    assert_int_equal(pf_sched_state_mask(NULL, 0), 0);
    assert_int_equal(pf_sched_state_mask(some, 4), (1u << 1) | (1u << 3) | (1u << 6));
    assert_int_equal(pf_sched_state_mask(odd, 6), (1u << 2) | (1u << 31));
}

static void test_watch_events(void **state)
{
    Printfarm__V1__WatchEventsRequest r = PRINTFARM__V1__WATCH_EVENTS_REQUEST__INIT;
    Printfarm__V1__EventKind kinds[70];
    uint64_t mask = 77;

    assert_ok(pf_sched_check_watch_events(&r, &mask, &e_));
    assert_true(mask == 0);
    assert_ok(pf_sched_check_watch_events(&r, NULL, &e_));

    kinds[0] = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_JOB_SUBMITTED;
    kinds[1] = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_LEADER_ELECTED;
    kinds[2] = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_BED_CLEARED;
    kinds[3] = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_JOB_SUBMITTED; /* repeats are harmless */
    r.kinds = kinds;
    r.n_kinds = 4;
    r.job_id = "j-1";
    r.printer_id = repeat('p', 127);
    r.after = UINT64_MAX;
    r.only_new = true;
    assert_ok(pf_sched_check_watch_events(&r, &mask, &e_));
    assert_true(mask == ((UINT64_C(1) << 1) | (UINT64_C(1) << 30) | (UINT64_C(1) << 16)));

    /* filters over 127 bytes */
    mask = 77;
    r.printer_id = repeat('p', 128);
    assert_invalid(pf_sched_check_watch_events(&r, &mask, &e_), "at most 127 bytes");
    assert_true(mask == 77);
    r.printer_id = "";
    r.job_id = repeat('j', 128);
    assert_invalid(pf_sched_check_watch_events(&r, &mask, &e_), "at most 127 bytes");
    r.job_id = repeat('j', 127);
    assert_ok(pf_sched_check_watch_events(&r, &mask, &e_));

    /* unknown kinds: unspecified, gaps, past the end, negative, huge */
    const int bad[] = {0, 8, 9, 17, 19, 26, 29, 31, 63, 64, -1, 1 << 30};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kinds[1] = (Printfarm__V1__EventKind)bad[i];
        assert_invalid(pf_sched_check_watch_events(&r, &mask, &e_), "kinds[1] = ");
        assert_invalid(pf_sched_check_watch_events(&r, &mask, &e_), "is not a known EventKind");
    }
    mask = 5;
    kinds[1] = (Printfarm__V1__EventKind)8;
    assert_invalid(pf_sched_check_watch_events(&r, &mask, &e_), "kinds[1] = 8");
    assert_true(mask == 5);

    /* every known kind passes; 64 entries is the limit */
    const int known[] = {1,  2,  3,  4,  5,  6,  7,  10, 11, 12, 13,
                         14, 15, 16, 20, 21, 22, 23, 24, 25, 30};
    for (size_t i = 0; i < 64; i++)
        kinds[i] = (Printfarm__V1__EventKind)known[i % (sizeof(known) / sizeof(known[0]))];
    r.n_kinds = 64;
    assert_ok(pf_sched_check_watch_events(&r, &mask, &e_));
    assert_int_equal(__builtin_popcountll(mask), sizeof(known) / sizeof(known[0]));
    r.n_kinds = 65;
    kinds[64] = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_JOB_DONE;
    assert_invalid(pf_sched_check_watch_events(&r, &mask, &e_), "more than 64 kinds");
    for (int k = -2; k < 40; k++) {
        bool want = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            want = want || known[i] == k;
        assert_true(pf_sched_event_kind_known(k) == want);
    }
}

static void test_digest(void **state)
{
    Printfarm__V1__Digest d = PRINTFARM__V1__DIGEST__INIT;
    assert_invalid(pf_sched_check_digest(NULL, "bundle", &e_), "bundle is required");
    assert_invalid(pf_sched_check_digest(&d, "bundle", &e_), "bundle is required");
    d.sha256 = "";
    assert_invalid(pf_sched_check_digest(&d, "bundle", &e_), "bundle is required");
    d.sha256 = DIGEST_OK;
    assert_ok(pf_sched_check_digest(&d, "bundle", &e_));
    d.sha256 = "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_invalid(pf_sched_check_digest(&d, "bundle", &e_), "character 10 is not lower-case hex");
    d.sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde";
    assert_invalid(pf_sched_check_digest(&d, "bundle", &e_), "is 63 characters long");
    d.sha256 = DIGEST_OK "0";
    assert_invalid(pf_sched_check_digest(&d, "bundle", &e_), "is 65 characters long");
    d.sha256 = "g123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_invalid(pf_sched_check_digest(&d, "bundle", &e_), "character 0 is not");
    d.sha256 = "0123456789abcdef0123456789abcdef 123456789abcdef0123456789abcdef";
    assert_invalid(pf_sched_check_digest(&d, "bundle", &e_), "character 32");
}

/* ---- constraints ---- */

struct constraints_fixture {
    Printfarm__V1__JobConstraints c;
    Printfarm__V1__MaterialRequirement mats[PF_SCHED_REQUIREMENTS_MAX + 1];
    Printfarm__V1__MaterialRequirement *mat_ptrs[PF_SCHED_REQUIREMENTS_MAX + 1];
    char *profiles[PF_SCHED_PROFILES_MAX + 1];
    Printfarm__V1__Label labels[PF_SCHED_LABELS_MAX + 1];
    Printfarm__V1__Label *label_ptrs[PF_SCHED_LABELS_MAX + 1];
    char profile_names[PF_SCHED_PROFILES_MAX + 1][16];
};

static void constraints_init(struct constraints_fixture *f)
{
    memset(f, 0, sizeof(*f));
    printfarm__v1__job_constraints__init(&f->c);
    for (int i = 0; i <= PF_SCHED_REQUIREMENTS_MAX; i++) {
        printfarm__v1__material_requirement__init(&f->mats[i]);
        f->mats[i].material = "PLA";
        f->mats[i].colour = "black";
        f->mat_ptrs[i] = &f->mats[i];
    }
    for (int i = 0; i <= PF_SCHED_PROFILES_MAX; i++) {
        snprintf(f->profile_names[i], sizeof(f->profile_names[i]), "prof-%d", i);
        f->profiles[i] = f->profile_names[i];
    }
    for (int i = 0; i <= PF_SCHED_LABELS_MAX; i++) {
        printfarm__v1__label__init(&f->labels[i]);
        f->labels[i].key = "nozzle";
        f->labels[i].value = "0.4";
        f->label_ptrs[i] = &f->labels[i];
    }
    f->c.materials = f->mat_ptrs;
    f->c.profiles = f->profiles;
    f->c.printer_labels = f->label_ptrs;
}

static void test_constraints(void **state)
{
    struct constraints_fixture f;
    constraints_init(&f);

    assert_ok(pf_sched_check_constraints(NULL, "constraints", &e_));
    assert_ok(pf_sched_check_constraints(&f.c, "constraints", &e_));

    f.c.n_materials = PF_SCHED_REQUIREMENTS_MAX;
    f.c.n_profiles = PF_SCHED_PROFILES_MAX;
    f.c.n_printer_labels = PF_SCHED_LABELS_MAX;
    assert_ok(pf_sched_check_constraints(&f.c, "constraints", &e_));

    f.c.n_materials = PF_SCHED_REQUIREMENTS_MAX + 1;
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_),
                   "constraints.materials has 9 requirements: at most 8");
    f.c.n_materials = 2;

    f.mats[1].where_case = PRINTFARM__V1__MATERIAL_REQUIREMENT__WHERE_EXTRUDER;
    f.mats[1].extruder = 7;
    assert_ok(pf_sched_check_constraints(&f.c, "constraints", &e_));
    f.mats[1].extruder = 8;
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_),
                   "constraints.materials[1].extruder 8 is out of range: extruders are 0 to 7");
    f.mats[1].extruder = UINT32_MAX;
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_), "4294967295");
    f.mats[1].extruder = 0;

    f.mats[0].material = repeat('m', 65);
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_),
                   "constraints.materials[0].material");
    f.mats[0].material = "PLA\n";
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_), "not printable");
    f.mats[0].material = "PLA";
    f.mats[0].colour = repeat('c', 65);
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_),
                   "constraints.materials[0].colour");
    f.mats[0].colour = "";
    f.mats[0].material = "";
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_),
                   "constraints.materials[0] requires nothing");
    /* naming an extruder alone is a requirement (that tool must exist) */
    f.mats[0].where_case = PRINTFARM__V1__MATERIAL_REQUIREMENT__WHERE_EXTRUDER;
    assert_ok(pf_sched_check_constraints(&f.c, "constraints", &e_));
    f.mats[0].where_case = 0;
    f.mats[0].material = "PLA";

    f.c.n_profiles = PF_SCHED_PROFILES_MAX + 1;
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_),
                   "constraints.profiles has 17 entries: at most 16");
    f.c.n_profiles = 3;
    f.profiles[2] = "";
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_),
                   "constraints.profiles[2] is empty");
    f.profiles[2] = "prusa mk4";
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_), "outside");
    f.profiles[2] = repeat('p', 65);
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_), "at most 64");
    f.profiles[2] = "prof-0";
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_),
                   "constraints.profiles[2] 'prof-0' is listed twice (also at 0)");
    f.profiles[2] = f.profile_names[2];

    f.c.n_printer_labels = PF_SCHED_LABELS_MAX + 1;
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_),
                   "constraints.printer_labels has 33 entries: at most 32");
    f.c.n_printer_labels = 2;
    f.labels[1].key = "";
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_),
                   "constraints.printer_labels[1] has an empty key");
    f.labels[1].key = NULL;
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_), "has an empty key");
    f.labels[1].key = repeat('k', 65);
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_),
                   "constraints.printer_labels[1].key");
    f.labels[1].key = "k";
    f.labels[1].value = repeat('v', 257);
    assert_invalid(pf_sched_check_constraints(&f.c, "constraints", &e_),
                   "constraints.printer_labels[1].value");
    f.labels[1].value = "";
    assert_ok(pf_sched_check_constraints(&f.c, "constraints", &e_)); /* key only */
}

/* ---- SubmitJob ---- */

static void submit_init(Printfarm__V1__SubmitJobRequest *r, Printfarm__V1__Digest *d)
{
    printfarm__v1__submit_job_request__init(r);
    printfarm__v1__digest__init(d);
    d->sha256 = DIGEST_OK;
    r->bundle = d;
    r->count = 1;
}

static void test_submit(void **state)
{
    Printfarm__V1__SubmitJobRequest r;
    Printfarm__V1__Digest d;
    struct constraints_fixture f;

    submit_init(&r, &d);
    assert_ok(pf_sched_check_submit(&r, &e_));

    /* queue */
    r.queue = "";
    assert_ok(pf_sched_check_submit(&r, &e_));
    r.queue = "prototypes";
    assert_ok(pf_sched_check_submit(&r, &e_));
    r.queue = "bad queue";
    assert_invalid(pf_sched_check_submit(&r, &e_), "queue 'bad queue' has a character");
    r.queue = repeat('q', 65);
    assert_invalid(pf_sched_check_submit(&r, &e_), "at most 64");
    r.queue = NULL;

    /* name */
    r.name = repeat('n', 200);
    assert_ok(pf_sched_check_submit(&r, &e_));
    r.name = repeat('n', 201);
    assert_invalid(pf_sched_check_submit(&r, &e_), "is 201 bytes long: at most 200");
    r.name = "line\nbreak";
    assert_invalid(pf_sched_check_submit(&r, &e_), "name 'line?break' is not printable");
    r.name = "bad \xc3";
    assert_invalid(pf_sched_check_submit(&r, &e_), "not printable");
    r.name = NULL;

    /* bundle */
    r.bundle = NULL;
    assert_invalid(pf_sched_check_submit(&r, &e_), "bundle is required");
    r.bundle = &d;
    d.sha256 = "abc";
    assert_invalid(pf_sched_check_submit(&r, &e_), "bundle 'abc' is 3 characters long");
    d.sha256 = DIGEST_OK;

    /* count */
    r.count = 0;
    assert_invalid(pf_sched_check_submit(&r, &e_), "count 0 is out of range: 1 to 10000");
    r.count = 10001;
    assert_invalid(pf_sched_check_submit(&r, &e_), "count 10001 is out of range: 1 to 10000");
    r.count = UINT32_MAX; /* what a client's -1 becomes on the wire */
    assert_invalid(pf_sched_check_submit(&r, &e_), "count 4294967295 is out of range");
    r.count = 10000;
    assert_ok(pf_sched_check_submit(&r, &e_));
    r.count = 1;

    /* priority */
    r.priority = -1000;
    assert_ok(pf_sched_check_submit(&r, &e_));
    r.priority = 1000;
    assert_ok(pf_sched_check_submit(&r, &e_));
    r.priority = 1001;
    assert_invalid(pf_sched_check_submit(&r, &e_), "priority 1001 is out of range: -1000 to 1000");
    r.priority = -1001;
    assert_invalid(pf_sched_check_submit(&r, &e_), "priority -1001");
    r.priority = INT32_MIN;
    assert_invalid(pf_sched_check_submit(&r, &e_), "priority -2147483648");
    r.priority = 0;

    /* constraints are checked with the submit */
    constraints_init(&f);
    f.c.n_profiles = 1;
    f.profiles[0] = "has space";
    r.constraints = &f.c;
    assert_invalid(pf_sched_check_submit(&r, &e_), "constraints.profiles[0]");
    r.constraints = NULL;

    /* idempotency key */
    r.idempotency_key = repeat('k', 128);
    assert_ok(pf_sched_check_submit(&r, &e_));
    r.idempotency_key = repeat('k', 129);
    assert_invalid(pf_sched_check_submit(&r, &e_), "idempotency_key");
    r.idempotency_key = "k\x7f";
    assert_invalid(pf_sched_check_submit(&r, &e_), "idempotency_key 'k?' is not printable");
    r.idempotency_key = NULL;

    /* failure policy */
    r.max_attempts_per_printer = 100;
    r.max_printers = 1;
    assert_ok(pf_sched_check_submit(&r, &e_));
    r.max_attempts_per_printer = 101;
    assert_invalid(
        pf_sched_check_submit(&r, &e_),
        "max_attempts_per_printer 101 is out of range: 0 (the farm default) or 1 to 100");
    r.max_attempts_per_printer = 0;
    r.max_printers = 1000;
    assert_invalid(pf_sched_check_submit(&r, &e_), "max_printers 1000 is out of range");
}

static void test_profiles_in_bundle(void **state)
{
    Printfarm__V1__Bundle b = PRINTFARM__V1__BUNDLE__INIT;
    Printfarm__V1__BundleFile f1 = PRINTFARM__V1__BUNDLE_FILE__INIT,
                              f2 = PRINTFARM__V1__BUNDLE_FILE__INIT;
    Printfarm__V1__BundleFile *files[2] = {&f1, &f2};
    Printfarm__V1__JobConstraints c = PRINTFARM__V1__JOB_CONSTRAINTS__INIT;
    char *profiles[2] = {"mk4", "mini"};

    f1.profile = "mk4";
    f2.profile = "xl";
    b.files = files;
    b.n_files = 2;
    assert_ok(pf_sched_check_profiles_in_bundle(NULL, &b, &e_));
    assert_ok(pf_sched_check_profiles_in_bundle(&c, &b, &e_));
    c.profiles = profiles;
    c.n_profiles = 1;
    assert_ok(pf_sched_check_profiles_in_bundle(&c, &b, &e_));
    c.n_profiles = 2;
    assert_invalid(pf_sched_check_profiles_in_bundle(&c, &b, &e_),
                   "constraints.profiles[1] 'mini' has no file in the bundle (it has: mk4, xl)");
    b.n_files = 0;
    assert_invalid(pf_sched_check_profiles_in_bundle(&c, &b, &e_), "(it has: no files)");
    assert_invalid(pf_sched_check_profiles_in_bundle(&c, NULL, &e_), "'mk4' has no file");
}

static void test_job_name(void **state)
{
    char out[PF_SCHED_JOB_NAME_MAX + 1];
    pf_sched_job_name("mine", "bundle name", DIGEST_OK, out);
    assert_string_equal(out, "mine");
    pf_sched_job_name("", "bundle name", DIGEST_OK, out);
    assert_string_equal(out, "bundle name");
    pf_sched_job_name(NULL, NULL, DIGEST_OK, out);
    assert_string_equal(out, "bundle 0123456789ab");
    pf_sched_job_name(NULL, "bad\nname", DIGEST_OK, out);
    assert_string_equal(out, "bundle 0123456789ab");
    pf_sched_job_name(NULL, repeat('b', 201), DIGEST_OK, out);
    assert_string_equal(out, "bundle 0123456789ab");
}

/* ---- other requests ---- */

static void test_get_and_cancel(void **state)
{
    Printfarm__V1__GetJobRequest g = PRINTFARM__V1__GET_JOB_REQUEST__INIT;
    Printfarm__V1__CancelJobRequest c = PRINTFARM__V1__CANCEL_JOB_REQUEST__INIT;

    assert_invalid(pf_sched_check_get_job(&g, &e_), "id is required");
    g.id = "j-x";
    assert_ok(pf_sched_check_get_job(&g, &e_));
    g.id = "j-\n";
    assert_invalid(pf_sched_check_get_job(&g, &e_), "is not a valid id");

    assert_invalid(pf_sched_check_cancel_job(&c, &e_), "id is required");
    c.id = "j-x";
    assert_ok(pf_sched_check_cancel_job(&c, &e_));
    c.reason = repeat('r', 500);
    assert_ok(pf_sched_check_cancel_job(&c, &e_));
    c.reason = repeat('r', 501);
    assert_invalid(pf_sched_check_cancel_job(&c, &e_), "reason");
    c.reason = "bad\rreason";
    assert_invalid(pf_sched_check_cancel_job(&c, &e_), "not printable");
}

static void test_list_jobs(void **state)
{
    Printfarm__V1__ListJobsRequest r = PRINTFARM__V1__LIST_JOBS_REQUEST__INIT;
    Printfarm__V1__JobState states[PF_SCHED_STATE_FILTER_MAX + 1];

    assert_ok(pf_sched_check_list_jobs(&r, &e_));
    r.page_size = 1000;
    assert_ok(pf_sched_check_list_jobs(&r, &e_));
    r.page_size = 1001;
    assert_invalid(pf_sched_check_list_jobs(&r, &e_), "page_size 1001 is too large: at most 1000");
    r.page_size = 0;
    r.queue = "no such/queue";
    assert_invalid(pf_sched_check_list_jobs(&r, &e_), "queue");
    r.queue = "";
    states[0] = PRINTFARM__V1__JOB_STATE__JOB_STATE_QUEUED;
    states[1] = PRINTFARM__V1__JOB_STATE__JOB_STATE_CANCELLED;
    r.states = states;
    r.n_states = 2;
    assert_ok(pf_sched_check_list_jobs(&r, &e_));
    states[1] = PRINTFARM__V1__JOB_STATE__JOB_STATE_UNSPECIFIED;
    assert_invalid(pf_sched_check_list_jobs(&r, &e_), "states[1] 0 is not a job state");
    states[1] = (Printfarm__V1__JobState)7;
    assert_invalid(pf_sched_check_list_jobs(&r, &e_), "states[1] 7 is not a job state (1 to 6");
    states[1] = (Printfarm__V1__JobState)-1;
    assert_invalid(pf_sched_check_list_jobs(&r, &e_), "states[1] -1");
    for (int i = 0; i <= PF_SCHED_STATE_FILTER_MAX; i++)
        states[i] = PRINTFARM__V1__JOB_STATE__JOB_STATE_QUEUED;
    r.n_states = PF_SCHED_STATE_FILTER_MAX + 1;
    assert_invalid(pf_sched_check_list_jobs(&r, &e_), "states has 33 entries");
}

static void test_list_printers(void **state)
{
    Printfarm__V1__ListPrintersRequest r = PRINTFARM__V1__LIST_PRINTERS_REQUEST__INIT;
    Printfarm__V1__PrinterState states[2] = {
        PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_OFFLINE,
        PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_QUARANTINED};
    assert_ok(pf_sched_check_list_printers(&r, &e_));
    r.states = states;
    r.n_states = 2;
    assert_ok(pf_sched_check_list_printers(&r, &e_));
    states[0] = (Printfarm__V1__PrinterState)8;
    assert_invalid(pf_sched_check_list_printers(&r, &e_), "states[0] 8 is not a printer state");
    states[0] = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE;
    r.page_size = 5000;
    assert_invalid(pf_sched_check_list_printers(&r, &e_), "page_size 5000");
    r.page_size = 10;
    r.queue = "q q";
    assert_invalid(pf_sched_check_list_printers(&r, &e_), "queue 'q q'");
}

static void test_update_job(void **state)
{
    Printfarm__V1__UpdateJobRequest r = PRINTFARM__V1__UPDATE_JOB_REQUEST__INIT;

    assert_invalid(pf_sched_check_update_job(&r, &e_), "id is required");
    r.id = "j-1";
    assert_invalid(pf_sched_check_update_job(&r, &e_),
                   "nothing to change for job 'j-1': set priority, count, hold or name");
    r.set_hold_case = PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_HOLD_HOLD;
    r.hold = false; /* release is a change even though the value is false */
    assert_ok(pf_sched_check_update_job(&r, &e_));

    r.set_count_case = PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_COUNT_COUNT;
    r.count = 0;
    assert_invalid(pf_sched_check_update_job(&r, &e_), "count 0 is out of range");
    r.count = 10001;
    assert_invalid(pf_sched_check_update_job(&r, &e_), "count 10001");
    r.count = 5;
    assert_ok(pf_sched_check_update_job(&r, &e_));

    r.set_priority_case = PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_PRIORITY_PRIORITY;
    r.priority = 5000;
    assert_invalid(pf_sched_check_update_job(&r, &e_), "priority 5000");
    r.priority = -5;
    assert_ok(pf_sched_check_update_job(&r, &e_));

    r.set_name_case = PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_NAME_NAME;
    r.name = "";
    assert_invalid(pf_sched_check_update_job(&r, &e_), "name is required");
    r.name = repeat('n', 201);
    assert_invalid(pf_sched_check_update_job(&r, &e_), "at most 200");
    r.name = "ok";
    assert_ok(pf_sched_check_update_job(&r, &e_));

    assert_ok(pf_sched_check_new_count("j-1", 5, 3, 2, &e_));
    assert_invalid(pf_sched_check_new_count("j-1", 4, 3, 2, &e_),
                   "count 4 for job 'j-1' is below the copies already succeeded (3) plus "
                   "printing (2)");
}

struct printer_fixture {
    Printfarm__V1__UpdatePrinterRequest r;
    Printfarm__V1__ExtruderMaterials mats;
    Printfarm__V1__ExtruderMaterial mat[PF_SCHED_EXTRUDERS_MAX + 1];
    Printfarm__V1__ExtruderMaterial *mat_ptrs[PF_SCHED_EXTRUDERS_MAX + 1];
    Printfarm__V1__Labels labels;
    Printfarm__V1__Label label[PF_SCHED_LABELS_MAX + 1];
    Printfarm__V1__Label *label_ptrs[PF_SCHED_LABELS_MAX + 1];
    char label_keys[PF_SCHED_LABELS_MAX + 1][8];
    Printfarm__V1__QueueWeights queues;
    Printfarm__V1__QueueWeight queue[PF_SCHED_PRINTER_QUEUES_MAX + 1];
    Printfarm__V1__QueueWeight *queue_ptrs[PF_SCHED_PRINTER_QUEUES_MAX + 1];
    char queue_names[PF_SCHED_PRINTER_QUEUES_MAX + 1][8];
    Printfarm__V1__AvailabilityWindows windows;
    Printfarm__V1__AvailabilityWindow window[PF_SCHED_WINDOWS_MAX + 1];
    Printfarm__V1__AvailabilityWindow *window_ptrs[PF_SCHED_WINDOWS_MAX + 1];
    Printfarm__V1__Weekday days[8];
};

static void printer_init(struct printer_fixture *f)
{
    memset(f, 0, sizeof(*f));
    printfarm__v1__update_printer_request__init(&f->r);
    f->r.id = "mk4-01";
    printfarm__v1__extruder_materials__init(&f->mats);
    printfarm__v1__labels__init(&f->labels);
    printfarm__v1__queue_weights__init(&f->queues);
    printfarm__v1__availability_windows__init(&f->windows);
    for (int i = 0; i <= PF_SCHED_EXTRUDERS_MAX; i++) {
        printfarm__v1__extruder_material__init(&f->mat[i]);
        f->mat[i].extruder = (uint32_t)i;
        f->mat[i].material = "PLA";
        f->mat[i].colour = "#000000";
        f->mat_ptrs[i] = &f->mat[i];
    }
    for (int i = 0; i <= PF_SCHED_LABELS_MAX; i++) {
        printfarm__v1__label__init(&f->label[i]);
        snprintf(f->label_keys[i], sizeof(f->label_keys[i]), "k%d", i);
        f->label[i].key = f->label_keys[i];
        f->label[i].value = "v";
        f->label_ptrs[i] = &f->label[i];
    }
    for (int i = 0; i <= PF_SCHED_PRINTER_QUEUES_MAX; i++) {
        printfarm__v1__queue_weight__init(&f->queue[i]);
        snprintf(f->queue_names[i], sizeof(f->queue_names[i]), "q%d", i);
        f->queue[i].queue = f->queue_names[i];
        f->queue[i].weight = 1;
        f->queue_ptrs[i] = &f->queue[i];
    }
    for (int i = 0; i <= PF_SCHED_WINDOWS_MAX; i++) {
        printfarm__v1__availability_window__init(&f->window[i]);
        f->window[i].start_minute = 480;
        f->window[i].end_minute = 1020;
        f->window_ptrs[i] = &f->window[i];
    }
    for (int i = 0; i < 7; i++)
        f->days[i] = (Printfarm__V1__Weekday)(i + 1);
    f->mats.items = f->mat_ptrs;
    f->labels.items = f->label_ptrs;
    f->queues.items = f->queue_ptrs;
    f->windows.items = f->window_ptrs;
}

static void test_update_printer_basics(void **state)
{
    struct printer_fixture f;
    printer_init(&f);

    assert_invalid(pf_sched_check_update_printer(&f.r, &e_),
                   "nothing to change for printer 'mk4-01'");
    f.r.release_quarantine = true;
    assert_ok(pf_sched_check_update_printer(&f.r, &e_));
    f.r.id = "";
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "id is required");
    f.r.id = "mk4 01";
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "outside");
    f.r.id = "mk4-01";
    f.r.release_quarantine = false;

    /* present and empty clears: valid */
    f.r.materials = &f.mats;
    f.r.labels = &f.labels;
    f.r.queues = &f.queues;
    f.r.windows = &f.windows;
    assert_ok(pf_sched_check_update_printer(&f.r, &e_));
}

static void test_update_printer_materials(void **state)
{
    struct printer_fixture f;
    printer_init(&f);
    f.r.materials = &f.mats;

    f.mats.n_items = PF_SCHED_EXTRUDERS_MAX;
    assert_ok(pf_sched_check_update_printer(&f.r, &e_));
    f.mats.n_items = PF_SCHED_EXTRUDERS_MAX + 1;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "materials has 9 entries");
    f.mats.n_items = 2;
    f.mat[1].extruder = 8;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_),
                   "materials[1].extruder 8 is out of range: extruders are 0 to 7");
    f.mat[1].extruder = 0;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_),
                   "materials[1].extruder 0 is repeated (also at 0)");
    f.mat[1].extruder = 1;
    f.mat[1].material = repeat('m', 65);
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "materials[1].material");
    f.mat[1].material = "";
    f.mat[1].colour = "\x1b";
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "materials[1].colour");
    f.mat[1].colour = "";
    assert_ok(pf_sched_check_update_printer(&f.r, &e_)); /* empty extruder */
}

static void test_update_printer_labels(void **state)
{
    struct printer_fixture f;
    printer_init(&f);
    f.r.labels = &f.labels;

    f.labels.n_items = PF_SCHED_LABELS_MAX;
    assert_ok(pf_sched_check_update_printer(&f.r, &e_));
    f.labels.n_items = PF_SCHED_LABELS_MAX + 1;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "labels has 33 entries");
    f.labels.n_items = 3;
    f.label[2].key = "";
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "labels[2] has an empty key");
    f.label[2].key = "k0";
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_),
                   "labels[2]: key 'k0' is repeated (also at 0)");
    f.label[2].key = repeat('k', 65);
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "labels[2].key");
    f.label[2].key = "k2";
    f.label[2].value = repeat('v', 257);
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "labels[2].value");
}

static void test_update_printer_queues(void **state)
{
    struct printer_fixture f;
    printer_init(&f);
    f.r.queues = &f.queues;

    f.queues.n_items = PF_SCHED_PRINTER_QUEUES_MAX;
    assert_ok(pf_sched_check_update_printer(&f.r, &e_));
    f.queues.n_items = PF_SCHED_PRINTER_QUEUES_MAX + 1;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "queues has 17 entries");
    f.queues.n_items = 2;
    f.queue[1].weight = 0;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_),
                   "queues[1].weight 0 for queue 'q1' is out of range: 1 to 1000");
    f.queue[1].weight = 1001;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "weight 1001");
    f.queue[1].weight = 1000;
    assert_ok(pf_sched_check_update_printer(&f.r, &e_));
    f.queue[1].queue = "q0";
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_),
                   "queues[1]: queue 'q0' is repeated (also at 0)");
    f.queue[1].queue = "";
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "queues[1].queue is empty");
    f.queue[1].queue = "a b";
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "queues[1].queue 'a b'");
}

static void test_update_printer_windows(void **state)
{
    struct printer_fixture f;
    printer_init(&f);
    f.r.windows = &f.windows;

    f.windows.n_items = PF_SCHED_WINDOWS_MAX;
    assert_ok(pf_sched_check_update_printer(&f.r, &e_));
    f.windows.n_items = PF_SCHED_WINDOWS_MAX + 1;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "windows has 33 entries");
    f.windows.n_items = 1;

    f.window[0].days = f.days;
    f.window[0].n_days = 7;
    assert_ok(pf_sched_check_update_printer(&f.r, &e_));
    f.days[3] = PRINTFARM__V1__WEEKDAY__WEEKDAY_UNSPECIFIED;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_),
                   "windows[0].days[3] 0 is not a weekday");
    f.days[3] = (Printfarm__V1__Weekday)8;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "days[3] 8 is not a weekday");
    f.days[3] = PRINTFARM__V1__WEEKDAY__WEEKDAY_THURSDAY;
    f.window[0].n_days = 8;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "days has 8 entries");
    f.window[0].n_days = 0;

    f.window[0].start_minute = 1440;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_),
                   "windows[0].start_minute 1440 is out of range: 0 to 1439");
    f.window[0].start_minute = 1439;
    f.window[0].end_minute = 1441;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_),
                   "windows[0].end_minute 1441 is out of range: 1 to 1440");
    f.window[0].end_minute = 0;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "end_minute 0");
    f.window[0].end_minute = 1439;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "the window is empty");
    f.window[0].end_minute = 60; /* past midnight */
    assert_ok(pf_sched_check_update_printer(&f.r, &e_));

    f.window[0].utc_offset_minutes = 840;
    assert_ok(pf_sched_check_update_printer(&f.r, &e_));
    f.window[0].utc_offset_minutes = -840;
    assert_ok(pf_sched_check_update_printer(&f.r, &e_));
    f.window[0].utc_offset_minutes = 841;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_),
                   "windows[0].utc_offset_minutes 841 is out of range: -840 to 840");
    f.window[0].utc_offset_minutes = -841;
    assert_invalid(pf_sched_check_update_printer(&f.r, &e_), "utc_offset_minutes -841");
}

static void test_confirm(void **state)
{
    Printfarm__V1__ConfirmBedClearRequest r = PRINTFARM__V1__CONFIRM_BED_CLEAR_REQUEST__INIT;
    assert_invalid(pf_sched_check_confirm_bed_clear(&r, &e_), "printer_id is required");
    r.printer_id = "mk4-01";
    assert_ok(pf_sched_check_confirm_bed_clear(&r, &e_));
    r.attempt_id = "a-01";
    assert_ok(pf_sched_check_confirm_bed_clear(&r, &e_));
    r.attempt_id = "a-\t";
    assert_invalid(pf_sched_check_confirm_bed_clear(&r, &e_), "attempt_id");
    r.attempt_id = repeat('a', 128);
    assert_invalid(pf_sched_check_confirm_bed_clear(&r, &e_), "attempt_id");
    r.attempt_id = "";
    r.printer_id = "bad/id";
    assert_invalid(pf_sched_check_confirm_bed_clear(&r, &e_), "printer_id 'bad/id'");
}

/* ---- paging ---- */

static void test_page_size(void **state)
{
    uint32_t n = 0;
    assert_ok(pf_sched_page_size(0, &n, &e_));
    assert_int_equal(n, 100);
    assert_ok(pf_sched_page_size(1, &n, &e_));
    assert_int_equal(n, 1);
    assert_ok(pf_sched_page_size(1000, &n, &e_));
    assert_int_equal(n, 1000);
    assert_invalid(pf_sched_page_size(1001, &n, &e_), "page_size 1001");
    assert_invalid(pf_sched_page_size(UINT32_MAX, &n, &e_), "page_size 4294967295");
}

static void test_page_filter(void **state)
{
    uint64_t a = pf_sched_page_filter("jobs", "", 0);
    assert_true(a == pf_sched_page_filter("jobs", NULL, 0));
    assert_true(a != pf_sched_page_filter("printers", "", 0));
    assert_true(a != pf_sched_page_filter("jobs", "default", 0));
    assert_true(a != pf_sched_page_filter("jobs", "", 1u << 1));
    assert_true(pf_sched_page_filter("jobs", "q", 6) == pf_sched_page_filter("jobs", "q", 6));
}

static void test_page_token_round_trip(void **state)
{
    struct pf_sched_page_key key = {.time_us = 1732741234123456}, got;
    char token[PF_SCHED_PAGE_TOKEN_MAX];
    uint64_t filter = pf_sched_page_filter("jobs", "default", 1u << 1);

    snprintf(key.id, sizeof(key.id), "j-01JDXYZ");
    pf_sched_page_token_encode(filter, &key, token);
    assert_true(strlen(token) < PF_SCHED_PAGE_TOKEN_MAX);
    assert_ok(pf_sched_page_token_decode(token, filter, &got, &e_));
    assert_true(got.time_us == key.time_us);
    assert_string_equal(got.id, key.id);

    /* the longest id, negative and zero times */
    memset(key.id, 'z', PF_SCHED_TEXT_ID_MAX);
    key.id[PF_SCHED_TEXT_ID_MAX] = '\0';
    key.time_us = -1;
    pf_sched_page_token_encode(filter, &key, token);
    assert_int_equal(strlen(token), PF_SCHED_PAGE_TOKEN_MAX - 1);
    assert_ok(pf_sched_page_token_decode(token, filter, &got, &e_));
    assert_true(got.time_us == -1);
    assert_string_equal(got.id, key.id);
    key.time_us = 0;
    key.id[0] = '\0';
    pf_sched_page_token_encode(filter, &key, token);
    assert_ok(pf_sched_page_token_decode(token, filter, &got, &e_));
    assert_string_equal(got.id, "");
}

static void test_page_token_rejects(void **state)
{
    struct pf_sched_page_key key = {.time_us = 42}, got;
    char token[PF_SCHED_PAGE_TOKEN_MAX], bad[PF_SCHED_PAGE_TOKEN_MAX + 8];
    uint64_t filter = pf_sched_page_filter("jobs", "", 0);
    const char *not_issued = "is not a token this server issued";

    snprintf(key.id, sizeof(key.id), "j-1");
    pf_sched_page_token_encode(filter, &key, token);

    assert_invalid(pf_sched_page_token_decode("", filter, &got, &e_), not_issued);
    assert_invalid(pf_sched_page_token_decode(NULL, filter, &got, &e_), not_issued);
    assert_invalid(pf_sched_page_token_decode("garbage", filter, &got, &e_), not_issued);
    assert_invalid(pf_sched_page_token_decode("00", filter, &got, &e_), not_issued);
    assert_invalid(pf_sched_page_token_decode(repeat('a', 5000), filter, &got, &e_), not_issued);

    /* another filter */
    assert_invalid(
        pf_sched_page_token_decode(token, pf_sched_page_filter("jobs", "other", 0), &got, &e_),
        "issued for a different filter");
    assert_invalid(
        pf_sched_page_token_decode(token, pf_sched_page_filter("printers", "", 0), &got, &e_),
        "different filter");

    /* every single-character change is caught */
    size_t len = strlen(token);
    for (size_t i = 0; i < len; i++) {
        snprintf(bad, sizeof(bad), "%s", token);
        bad[i] = bad[i] == '0' ? '1' : '0';
        struct pf_error e;
        assert_int_equal(pf_sched_page_token_decode(bad, filter, &got, &e), PF_E_INVALID);
    }
    /* truncated, extended, upper-cased */
    snprintf(bad, sizeof(bad), "%.*s", (int)len - 2, token);
    assert_invalid(pf_sched_page_token_decode(bad, filter, &got, &e_), not_issued);
    snprintf(bad, sizeof(bad), "%s00", token);
    assert_invalid(pf_sched_page_token_decode(bad, filter, &got, &e_), not_issued);
    snprintf(bad, sizeof(bad), "%s0", token);
    assert_invalid(pf_sched_page_token_decode(bad, filter, &got, &e_), not_issued);
    snprintf(bad, sizeof(bad), "%s", token);
    for (char *p = bad; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    if (strcmp(bad, token) != 0)
        assert_invalid(pf_sched_page_token_decode(bad, filter, &got, &e_), not_issued);
}

/* ---- states ---- */

static void test_job_state_after(void **state)
{
    const Printfarm__V1__JobState Q = PRINTFARM__V1__JOB_STATE__JOB_STATE_QUEUED,
                                  H = PRINTFARM__V1__JOB_STATE__JOB_STATE_HELD,
                                  P = PRINTFARM__V1__JOB_STATE__JOB_STATE_PRINTING,
                                  D = PRINTFARM__V1__JOB_STATE__JOB_STATE_DONE,
                                  F = PRINTFARM__V1__JOB_STATE__JOB_STATE_FAILED,
                                  C = PRINTFARM__V1__JOB_STATE__JOB_STATE_CANCELLED;

    assert_int_equal(pf_sched_job_state_after(Q, false, 3, 0, 0), Q);
    assert_int_equal(pf_sched_job_state_after(Q, true, 3, 0, 0), H);
    assert_int_equal(pf_sched_job_state_after(H, false, 3, 0, 0), Q);
    assert_int_equal(pf_sched_job_state_after(H, false, 3, 1, 2), P);
    assert_int_equal(pf_sched_job_state_after(P, false, 4, 1, 2), Q); /* count raised */
    assert_int_equal(pf_sched_job_state_after(Q, false, 3, 1, 2), P); /* count lowered */
    assert_int_equal(pf_sched_job_state_after(Q, false, 3, 3, 0), D);
    assert_int_equal(pf_sched_job_state_after(H, true, 3, 3, 0), D);  /* done beats held */
    assert_int_equal(pf_sched_job_state_after(P, true, 3, 1, 2), H);  /* held while printing */
    assert_int_equal(pf_sched_job_state_after(F, false, 3, 0, 0), F); /* finished stays */
    assert_int_equal(pf_sched_job_state_after(C, false, 3, 0, 0), C);
    assert_int_equal(pf_sched_job_state_after(D, true, 9, 3, 0), D);
    assert_true(pf_sched_job_state_finished(D));
    assert_true(pf_sched_job_state_finished(F));
    assert_true(pf_sched_job_state_finished(C));
    assert_false(pf_sched_job_state_finished(Q));
    assert_false(pf_sched_job_state_finished(H));
    assert_false(pf_sched_job_state_finished(P));
}

static void test_printer_state_shown(void **state)
{
    const Printfarm__V1__PrinterState
        OFF = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_OFFLINE,
        IDLE = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE,
        PR = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING,
        PA = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PAUSED,
        AC = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_AWAITING_CLEAR,
        ER = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_ERROR,
        QU = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_QUARANTINED,
        UN = PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_UNSPECIFIED;

    assert_int_equal(pf_sched_printer_state_shown(false, false, IDLE, false), OFF);
    assert_int_equal(pf_sched_printer_state_shown(false, false, PR, true), OFF);
    assert_int_equal(pf_sched_printer_state_shown(true, false, UN, false), QU);
    assert_int_equal(pf_sched_printer_state_shown(true, true, PR, true), QU);
    assert_int_equal(pf_sched_printer_state_shown(false, true, PR, true), PR);
    assert_int_equal(pf_sched_printer_state_shown(false, true, PA, false), PA);
    assert_int_equal(pf_sched_printer_state_shown(false, true, ER, true), ER);
    assert_int_equal(pf_sched_printer_state_shown(false, true, IDLE, true), AC);
    assert_int_equal(pf_sched_printer_state_shown(false, true, UN, false), IDLE);
    assert_int_equal(pf_sched_printer_state_shown(false, true, IDLE, false), IDLE);
    /* the database, not the agent, says whether the bed awaits a clear */
    assert_int_equal(pf_sched_printer_state_shown(false, true, AC, false), IDLE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_printable),
        cmocka_unit_test(test_check_text),
        cmocka_unit_test(test_queue_name),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_profile_name),
        cmocka_unit_test(test_state_mask),
        cmocka_unit_test(test_watch_events),
        cmocka_unit_test(test_digest),
        cmocka_unit_test(test_constraints),
        cmocka_unit_test(test_submit),
        cmocka_unit_test(test_profiles_in_bundle),
        cmocka_unit_test(test_job_name),
        cmocka_unit_test(test_get_and_cancel),
        cmocka_unit_test(test_list_jobs),
        cmocka_unit_test(test_list_printers),
        cmocka_unit_test(test_update_job),
        cmocka_unit_test(test_update_printer_basics),
        cmocka_unit_test(test_update_printer_materials),
        cmocka_unit_test(test_update_printer_labels),
        cmocka_unit_test(test_update_printer_queues),
        cmocka_unit_test(test_update_printer_windows),
        cmocka_unit_test(test_confirm),
        cmocka_unit_test(test_page_size),
        cmocka_unit_test(test_page_filter),
        cmocka_unit_test(test_page_token_round_trip),
        cmocka_unit_test(test_page_token_rejects),
        cmocka_unit_test(test_job_state_after),
        cmocka_unit_test(test_printer_state_shown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
