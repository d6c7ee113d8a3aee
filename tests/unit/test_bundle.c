/* Unit tests of the bundle manifest codec (services/files/bundle.c): encode and
 * decode round trips, the limits at their exact edges, every validation rule
 * broken one at a time with the message it must produce, and hostile bytes
 * (garbage, wrong magic, truncation, valid protobuf carrying an invalid
 * bundle). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bundle.h"
#include "digest.h"

#define MAX_FILES  (PF_BUNDLE_FILES_MAX + 1)
#define MAX_LABELS (PF_BUNDLE_LABELS_MAX + 1)

/* A bundle with all its parts in one struct, so a test can break one field. */
struct fixture {
    Printfarm__V1__Bundle b;
    Printfarm__V1__BundleFile files[MAX_FILES];
    Printfarm__V1__BundleFile *file_ptrs[MAX_FILES];
    Printfarm__V1__Digest digests[MAX_FILES];
    Printfarm__V1__GcodeMetadata meta[MAX_FILES];
    char hex[MAX_FILES][PF_DIGEST_HEX_LEN + 1];
    char profiles[MAX_FILES][PF_BUNDLE_PROFILE_MAX + 2];
    Printfarm__V1__Label labels[MAX_LABELS];
    Printfarm__V1__Label *label_ptrs[MAX_LABELS];
    char keys[MAX_LABELS][PF_BUNDLE_LABEL_KEY_MAX + 2];
    char name[PF_BUNDLE_NAME_MAX + 2];
    char text[PF_BUNDLE_LABEL_VALUE_MAX + PF_BUNDLE_METADATA_TEXT_MAX + 2];
};

static void set_files(struct fixture *f, size_t n)
{
    f->b.n_files = n;
    for (size_t i = 0; i < n; i++) {
        printfarm__v1__bundle_file__init(&f->files[i]);
        printfarm__v1__digest__init(&f->digests[i]);
        printfarm__v1__gcode_metadata__init(&f->meta[i]);
        snprintf(f->profiles[i], sizeof f->profiles[i], "prusa-mk%zu", i);
        for (size_t k = 0; k < PF_DIGEST_HEX_LEN; k++)
            f->hex[i][k] = "0123456789abcdef"[(i * 7 + k) % 16];
        f->hex[i][PF_DIGEST_HEX_LEN] = '\0';
        f->digests[i].sha256 = f->hex[i];
        f->files[i].profile = f->profiles[i];
        f->files[i].digest = &f->digests[i];
        f->files[i].size = 1000 + i;
        f->meta[i].slicer = "PrusaSlicer 2.7.1";
        f->meta[i].estimated_seconds = 3600;
        f->meta[i].filament_mm = 1234.5;
        f->meta[i].filament_g = 3.7;
        f->meta[i].material = "PETG";
        f->meta[i].colour = "#1a2b3c";
        f->meta[i].printer_model = "MK4";
        f->meta[i].nozzle_mm = 0.4;
        f->files[i].metadata = i % 2 == 0 ? &f->meta[i] : NULL;
        f->file_ptrs[i] = &f->files[i];
    }
}

static void set_labels(struct fixture *f, size_t n)
{
    f->b.n_labels = n;
    for (size_t i = 0; i < n; i++) {
        printfarm__v1__label__init(&f->labels[i]);
        snprintf(f->keys[i], sizeof f->keys[i], "key%zu", i);
        f->labels[i].key = f->keys[i];
        f->labels[i].value = i % 2 ? "" : "some value";
        f->label_ptrs[i] = &f->labels[i];
    }
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    printfarm__v1__bundle__init(&f->b);
    strcpy(f->name, "benchy");
    f->b.name = f->name;
    f->b.files = f->file_ptrs;
    f->b.labels = f->label_ptrs;
    set_files(f, 3);
    set_labels(f, 2);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

static void assert_valid(struct fixture *f)
{
    struct pf_error err = {0};

    if (pf_bundle_validate(&f->b, &err) != PF_OK)
        fail_msg("unexpectedly invalid: %s", err.msg);
}

/* Checks that the bundle is rejected, by validate and by encode alike, with
 * exactly the message want, which holds no raw control characters. */
static void assert_invalid(struct fixture *f, const char *want)
{
    struct pf_error err = {0};
    char *out = (void *)1;
    size_t len = 7;

    assert_int_equal(pf_bundle_validate(&f->b, &err), PF_E_INVALID);
    if (strcmp(err.msg, want) != 0)
        fail_msg("message '%s', expected '%s'", err.msg, want);
    for (const char *p = err.msg; *p; p++)
        assert_true((unsigned char)*p >= 0x20 && *p != 0x7f);
    assert_int_equal(pf_bundle_encode(&f->b, &out, &len, &err), PF_E_INVALID);
    assert_string_equal(err.msg, want);
    assert_null(out);
    assert_int_equal(len, 0);
}

static void assert_same_bundle(const Printfarm__V1__Bundle *a, const Printfarm__V1__Bundle *b)
{
    assert_string_equal(a->name, b->name);
    assert_int_equal(a->n_files, b->n_files);
    for (size_t i = 0; i < a->n_files; i++) {
        const Printfarm__V1__BundleFile *x = a->files[i], *y = b->files[i];
        assert_string_equal(x->profile, y->profile);
        assert_string_equal(x->digest->sha256, y->digest->sha256);
        assert_int_equal(x->size, y->size);
        assert_int_equal(x->metadata == NULL, y->metadata == NULL);
        if (x->metadata) {
            assert_string_equal(x->metadata->slicer, y->metadata->slicer);
            assert_string_equal(x->metadata->material, y->metadata->material);
            assert_string_equal(x->metadata->colour, y->metadata->colour);
            assert_string_equal(x->metadata->printer_model, y->metadata->printer_model);
            assert_int_equal(x->metadata->estimated_seconds, y->metadata->estimated_seconds);
            assert_true(x->metadata->filament_mm == y->metadata->filament_mm);
            assert_true(x->metadata->filament_g == y->metadata->filament_g);
            assert_true(x->metadata->nozzle_mm == y->metadata->nozzle_mm);
        }
    }
    assert_int_equal(a->n_labels, b->n_labels);
    for (size_t i = 0; i < a->n_labels; i++) {
        assert_string_equal(a->labels[i]->key, b->labels[i]->key);
        assert_string_equal(a->labels[i]->value, b->labels[i]->value);
    }
}

static void roundtrip(struct fixture *f)
{
    Printfarm__V1__Bundle *back = (void *)1;
    struct pf_error err = {0};
    char *data, *again;
    size_t len, again_len;

    if (pf_bundle_encode(&f->b, &data, &len, &err) != PF_OK)
        fail_msg("encode: %s", err.msg);
    assert_true(len > PF_BUNDLE_MAGIC_LEN);
    assert_true(len <= PF_BUNDLE_ENCODED_MAX);
    assert_memory_equal(data, "PFBNDL1\n", 8);
    if (pf_bundle_decode(data, len, &back, &err) != PF_OK)
        fail_msg("decode: %s", err.msg);
    assert_same_bundle(&f->b, back);
    /* Equal bundles encode to equal bytes: the manifest's digest is stable. */
    assert_int_equal(pf_bundle_encode(back, &again, &again_len, &err), PF_OK);
    assert_int_equal(again_len, len);
    assert_memory_equal(again, data, len);
    printfarm__v1__bundle__free_unpacked(back, NULL);
    free(again);
    free(data);
}

static void test_roundtrip(void **state)
{
    roundtrip(*state);
}

static void test_roundtrip_minimal(void **state)
{
    struct fixture *f = *state;

    set_files(f, 1);
    f->files[0].metadata = NULL;
    set_labels(f, 0);
    roundtrip(f);
}

/* Every limit at its exact maximum is accepted, and the result still fits in
 * PF_BUNDLE_ENCODED_MAX (the read limit for manifests). */
static void test_limits_at_maximum(void **state)
{
    struct fixture *f = *state;
    static char long_text[PF_BUNDLE_METADATA_TEXT_MAX + 1];
    static char long_value[PF_BUNDLE_LABEL_VALUE_MAX + 1];

    memset(f->name, 'n', PF_BUNDLE_NAME_MAX);
    f->name[PF_BUNDLE_NAME_MAX] = '\0';
    memset(long_text, 't', PF_BUNDLE_METADATA_TEXT_MAX);
    memset(long_value, 'v', PF_BUNDLE_LABEL_VALUE_MAX);
    set_files(f, PF_BUNDLE_FILES_MAX);
    for (size_t i = 0; i < PF_BUNDLE_FILES_MAX; i++) {
        memset(f->profiles[i], 'p', PF_BUNDLE_PROFILE_MAX);
        f->profiles[i][0] = (char)('a' + i / 26);
        f->profiles[i][1] = (char)('a' + i % 26);
        f->profiles[i][PF_BUNDLE_PROFILE_MAX] = '\0';
        f->files[i].size = UINT64_MAX;
        f->files[i].metadata = &f->meta[i];
        f->meta[i].slicer = f->meta[i].material = long_text;
        f->meta[i].colour = f->meta[i].printer_model = long_text;
        f->meta[i].estimated_seconds = UINT32_MAX;
        f->meta[i].filament_mm = f->meta[i].filament_g = f->meta[i].nozzle_mm = 1e300;
    }
    set_labels(f, PF_BUNDLE_LABELS_MAX);
    for (size_t i = 0; i < PF_BUNDLE_LABELS_MAX; i++) {
        memset(f->keys[i], 'k', PF_BUNDLE_LABEL_KEY_MAX);
        f->keys[i][0] = (char)('a' + i / 26);
        f->keys[i][1] = (char)('a' + i % 26);
        f->keys[i][PF_BUNDLE_LABEL_KEY_MAX] = '\0';
        f->labels[i].value = long_value;
    }
    assert_valid(f);
    roundtrip(f);
}

static void test_unicode_text_accepted(void **state)
{
    struct fixture *f = *state;

    strcpy(f->name, "Bänchy ✓ — 🚀 v2 ✎");
    f->labels[0].value = "Ünïcödé ok, tabs are not";
    f->meta[0].colour = "grün";
    assert_valid(f);
    roundtrip(f);
}

static void test_name_rules(void **state)
{
    struct fixture *f = *state;

    f->name[0] = '\0';
    assert_invalid(f, "name is empty");
    f->b.name = NULL;
    assert_invalid(f, "name is empty");
    f->b.name = f->name;
    memset(f->name, 'n', PF_BUNDLE_NAME_MAX + 1);
    f->name[PF_BUNDLE_NAME_MAX + 1] = '\0';
    assert_invalid(f, "name is 201 bytes long, over the maximum of 200");
    strcpy(f->name, "two\nlines");
    assert_invalid(f, "name has a control character at byte 3");
    strcpy(f->name, "tab\there");
    assert_invalid(f, "name has a control character at byte 3");
    strcpy(f->name, "del\x7f");
    assert_invalid(f, "name has a control character at byte 3");
    strcpy(f->name, "c1 \xc2\x85 next line");
    assert_invalid(f, "name has a control character at byte 3");
}

static void test_name_not_utf8(void **state)
{
    struct fixture *f = *state;
    const char *bad[] = {
        "ab\xff",             /* never valid */
        "ab\x80",             /* stray continuation */
        "ab\xc0\xaf",         /* overlong '/' */
        "ab\xe0\x80\xaf",     /* overlong, 3 bytes */
        "ab\xed\xa0\x80",     /* surrogate */
        "ab\xe2\x82",         /* truncated */
        "ab\xf4\x90\x80\x80", /* past U+10FFFF */
        "ab\xf0\x8f\xbf\xbf", /* overlong, 4 bytes */
        "ab\xf5\x80\x80\x80", /* past U+10FFFF */
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        strcpy(f->name, bad[i]);
        assert_invalid(f, "name is not valid UTF-8 at byte 2");
    }
}

static void test_file_count_rules(void **state)
{
    struct fixture *f = *state;

    set_files(f, 0);
    assert_invalid(f, "bundle has no files");
    set_files(f, PF_BUNDLE_FILES_MAX + 1);
    assert_invalid(f, "bundle has 65 files, over the maximum of 64");
    set_files(f, 3);
    f->file_ptrs[1] = NULL;
    assert_invalid(f, "files[1] is missing");
}

static void test_profile_rules(void **state)
{
    struct fixture *f = *state;

    f->profiles[2][0] = '\0';
    assert_invalid(f, "files[2].profile is empty");
    f->files[2].profile = NULL;
    assert_invalid(f, "files[2].profile is empty");
    f->files[2].profile = f->profiles[2];
    memset(f->profiles[2], 'p', PF_BUNDLE_PROFILE_MAX + 1);
    f->profiles[2][PF_BUNDLE_PROFILE_MAX + 1] = '\0';
    assert_invalid(f, "files[2].profile 'pppppppppppppppppppppppppppppppppppppppp...' is 65 bytes "
                      "long, over the maximum of 64");
    strcpy(f->profiles[2], "prusa mk4");
    assert_invalid(f, "files[2].profile 'prusa mk4' has a character outside [A-Za-z0-9._-] "
                      "at byte 5");
    strcpy(f->profiles[2], "../etc");
    assert_invalid(f, "files[2].profile '../etc' has a character outside [A-Za-z0-9._-] at "
                      "byte 2");
    strcpy(f->profiles[2], "mk4\x01'x");
    assert_invalid(f, "files[2].profile 'mk4\\x01\\x27x' has a character outside "
                      "[A-Za-z0-9._-] at byte 3");
    strcpy(f->profiles[2], "pr\xc3\xbcsa");
    assert_invalid(f, "files[2].profile 'pr\\xc3\\xbcsa' has a character outside "
                      "[A-Za-z0-9._-] at byte 2");
    strcpy(f->profiles[2], "Prusa_MK4.0-s");
    assert_valid(f);
}

static void test_duplicate_profile(void **state)
{
    struct fixture *f = *state;

    strcpy(f->profiles[0], "mk4");
    strcpy(f->profiles[2], "mk4");
    assert_invalid(f, "files[2].profile 'mk4' appears twice");
    /* Profiles are case-sensitive names. */
    strcpy(f->profiles[2], "MK4");
    assert_valid(f);
}

static void test_digest_rules(void **state)
{
    struct fixture *f = *state;
    char good[PF_DIGEST_HEX_LEN + 1];

    strcpy(good, f->hex[1]);
    f->files[1].digest = NULL;
    assert_invalid(f, "files[1].digest is missing");
    f->files[1].digest = &f->digests[1];
    f->digests[1].sha256 = "";
    assert_invalid(f, "files[1].digest is missing");
    f->digests[1].sha256 = NULL;
    assert_invalid(f, "files[1].digest is missing");
    f->digests[1].sha256 = f->hex[1];
    f->hex[1][63] = '\0';
    assert_invalid(f, "files[1].digest '789abcdef0123456789abcdef0123456789abcde...' is not 64 "
                      "lower-case hex characters");
    strcpy(f->hex[1], good);
    f->hex[1][10] = 'A';
    assert_invalid(f, "files[1].digest '789abcdef0A23456789abcdef0123456789abcde...' is not 64 "
                      "lower-case hex characters");
    strcpy(f->hex[1], good);
    f->hex[1][0] = 'g';
    assert_invalid(f, "files[1].digest 'g89abcdef0123456789abcdef0123456789abcde...' is not 64 "
                      "lower-case hex characters");
    strcpy(f->hex[1], good);
    f->digests[1].sha256 = "short";
    assert_invalid(f, "files[1].digest 'short' is not 64 lower-case hex characters");
    {
        char longer[PF_DIGEST_HEX_LEN + 2];
        snprintf(longer, sizeof longer, "%s0", good);
        f->digests[1].sha256 = longer;
        assert_invalid(f, "files[1].digest '789abcdef0123456789abcdef0123456789abcde...' is not "
                          "64 lower-case hex characters");
    }
    f->digests[1].sha256 = f->hex[1];
    assert_valid(f);
}

static void test_metadata_rules(void **state)
{
    struct fixture *f = *state;

    memset(f->text, 's', PF_BUNDLE_METADATA_TEXT_MAX + 1);
    f->text[PF_BUNDLE_METADATA_TEXT_MAX + 1] = '\0';
    f->meta[2].slicer = f->text;
    assert_invalid(f, "files[2].metadata.slicer is 257 bytes long, over the maximum of 256");
    f->meta[2].slicer = "";
    assert_valid(f);
    f->meta[2].material = "PLA\r";
    assert_invalid(f, "files[2].metadata.material has a control character at byte 3");
    f->meta[2].material = "PLA";
    f->meta[2].printer_model = "\xc3";
    assert_invalid(f, "files[2].metadata.printer_model is not valid UTF-8 at byte 0");
    f->meta[2].printer_model = "MK4";
    f->meta[2].filament_mm = -1;
    assert_invalid(f, "files[2].metadata.filament_mm -1 is not a finite, non-negative number");
    f->meta[2].filament_mm = NAN;
    assert_invalid(f, "files[2].metadata.filament_mm nan is not a finite, non-negative number");
    f->meta[2].filament_mm = 0;
    f->meta[2].nozzle_mm = INFINITY;
    assert_invalid(f, "files[2].metadata.nozzle_mm inf is not a finite, non-negative number");
    f->meta[2].nozzle_mm = 0.6;
    f->meta[2].filament_g = -0.5;
    assert_invalid(f, "files[2].metadata.filament_g -0.5 is not a finite, non-negative number");
    f->meta[2].filament_g = 0;
    assert_valid(f);
}

static void test_label_rules(void **state)
{
    struct fixture *f = *state;

    set_labels(f, PF_BUNDLE_LABELS_MAX + 1);
    assert_invalid(f, "bundle has 33 labels, over the maximum of 32");
    set_labels(f, 3);
    f->keys[1][0] = '\0';
    assert_invalid(f, "labels[1].key is empty");
    f->labels[1].key = NULL;
    assert_invalid(f, "labels[1].key is empty");
    f->labels[1].key = f->keys[1];
    memset(f->keys[1], 'k', PF_BUNDLE_LABEL_KEY_MAX + 1);
    f->keys[1][PF_BUNDLE_LABEL_KEY_MAX + 1] = '\0';
    assert_invalid(f, "labels[1].key is 65 bytes long, over the maximum of 64");
    strcpy(f->keys[1], "key0");
    assert_invalid(f, "labels[1].key 'key0' appears twice");
    strcpy(f->keys[1], "bad\x1bkey");
    assert_invalid(f, "labels[1].key has a control character at byte 3");
    strcpy(f->keys[1], "author");
    memset(f->text, 'v', PF_BUNDLE_LABEL_VALUE_MAX + 1);
    f->text[PF_BUNDLE_LABEL_VALUE_MAX + 1] = '\0';
    f->labels[2].value = f->text;
    assert_invalid(f, "labels[2].value is 257 bytes long, over the maximum of 256");
    f->labels[2].value = "line\nbreak";
    assert_invalid(f, "labels[2].value has a control character at byte 4");
    f->labels[2].value = NULL; /* reads as empty, which a value may be */
    assert_valid(f);
    f->label_ptrs[0] = NULL;
    assert_invalid(f, "labels[0] is missing");
}

static void test_null_bundle(void **state)
{
    struct pf_error err = {0};
    char *out = (void *)1;
    size_t len;

    assert_int_equal(pf_bundle_validate(NULL, &err), PF_E_INVALID);
    assert_string_equal(err.msg, "bundle is missing");
    assert_int_equal(pf_bundle_encode(NULL, &out, &len, &err), PF_E_INVALID);
    assert_null(out);
}

static void assert_not_manifest(const char *data, size_t len, const char *want)
{
    Printfarm__V1__Bundle *b = (void *)1;
    struct pf_error err = {0};

    assert_int_equal(pf_bundle_decode(data, len, &b, &err), PF_E_INVALID);
    assert_null(b);
    if (strcmp(err.msg, want) != 0)
        fail_msg("message '%s', expected '%s'", err.msg, want);
}

static void test_decode_wrong_magic(void **state)
{
    struct fixture *f = *state;
    char *data;
    size_t len;

    assert_not_manifest("", 0, "blob is not a bundle manifest");
    assert_not_manifest("PFBNDL1", 7, "blob is not a bundle manifest");
    assert_not_manifest("G28\nG1 X0\n", 10, "blob is not a bundle manifest");
    assert_int_equal(pf_bundle_encode(&f->b, &data, &len, NULL), PF_OK);
    data[6] = '2';
    assert_not_manifest(data, len, "blob is not a bundle manifest");
    data[6] = '1';
    data[7] = '\r';
    assert_not_manifest(data, len, "blob is not a bundle manifest");
    free(data);
    /* The magic alone is an empty message: it parses, but is no bundle. */
    assert_not_manifest("PFBNDL1\n", 8, "bundle manifest is invalid: name is empty");
}

static void test_decode_garbage(void **state)
{
    char data[512];
    unsigned seed = 12345;

    memcpy(data, PF_BUNDLE_MAGIC, PF_BUNDLE_MAGIC_LEN);
    for (int round = 0; round < 2000; round++) {
        size_t len = PF_BUNDLE_MAGIC_LEN + (size_t)(round % (sizeof data - 8));
        Printfarm__V1__Bundle *b = (void *)1;
        struct pf_error err = {0};
        enum pf_status rc;

        for (size_t i = PF_BUNDLE_MAGIC_LEN; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            data[i] = (char)(seed >> 16);
        }
        rc = pf_bundle_decode(data, len, &b, &err);
        /* Random bytes essentially never make a valid bundle; either way,
         * nothing crashes and the result is consistent. */
        if (rc == PF_OK) {
            assert_int_equal(pf_bundle_validate(b, &err), PF_OK);
            printfarm__v1__bundle__free_unpacked(b, NULL);
        } else {
            assert_int_equal(rc, PF_E_INVALID);
            assert_null(b);
        }
    }
    {
        /* A field header promising more bytes than there are. */
        const char bad[] = "PFBNDL1\n\x0a\x7f"
                           "abc";
        assert_not_manifest(bad, sizeof bad - 1,
                            "blob is not a bundle manifest: its message does not parse");
    }
}

static void test_decode_truncated(void **state)
{
    struct fixture *f = *state;
    char *data;
    size_t len;

    assert_int_equal(pf_bundle_encode(&f->b, &data, &len, NULL), PF_OK);
    for (size_t cut = 0; cut < len; cut++) {
        Printfarm__V1__Bundle *b = (void *)1;
        struct pf_error err = {0};
        char *copy = malloc(cut ? cut : 1); /* exact size: ASan sees any over-read */
        enum pf_status rc;

        memcpy(copy, data, cut);
        rc = pf_bundle_decode(copy, cut, &b, &err);
        /* A cut between two whole fields can leave a shorter bundle that is
         * still valid; a digest names the exact bytes, so the store never
         * serves one. Everything else is refused. */
        if (rc == PF_OK) {
            assert_int_equal(pf_bundle_validate(b, &err), PF_OK);
            printfarm__v1__bundle__free_unpacked(b, NULL);
        } else {
            assert_int_equal(rc, PF_E_INVALID);
        }
        free(copy);
    }
    /* Cutting the last byte lands inside the last label. */
    assert_not_manifest(data, len - 1, "blob is not a bundle manifest: its message does not parse");
    free(data);
}

static void test_decode_rejects_invalid_bundle(void **state)
{
    struct fixture *f = *state;
    size_t packed;
    char *data;

    /* Packed directly, skipping the encoder's validation, as a hostile or
     * older writer could. */
    strcpy(f->profiles[0], "mk4");
    strcpy(f->profiles[1], "mk4");
    packed = printfarm__v1__bundle__get_packed_size(&f->b);
    data = malloc(PF_BUNDLE_MAGIC_LEN + packed);
    memcpy(data, PF_BUNDLE_MAGIC, PF_BUNDLE_MAGIC_LEN);
    printfarm__v1__bundle__pack(&f->b, (uint8_t *)data + PF_BUNDLE_MAGIC_LEN);
    assert_not_manifest(data, PF_BUNDLE_MAGIC_LEN + packed,
                        "bundle manifest is invalid: files[1].profile 'mk4' appears twice");
    free(data);
}

static void test_decode_oversized(void **state)
{
    char *data = calloc(1, PF_BUNDLE_ENCODED_MAX + 1);

    memcpy(data, PF_BUNDLE_MAGIC, PF_BUNDLE_MAGIC_LEN);
    assert_not_manifest(data, PF_BUNDLE_ENCODED_MAX + 1,
                        "blob is not a bundle manifest: 262145 bytes is over the maximum of "
                        "262144");
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_minimal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_at_maximum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unicode_text_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_not_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_count_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_profile_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_profile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_digest_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metadata_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_label_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_bundle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_wrong_magic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_rejects_invalid_bundle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_oversized, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
