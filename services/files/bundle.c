/* Validation and the byte format of bundle manifests, and the request checks
 * of the Files API (see bundle.h). A manifest is user input twice over: once
 * in a PutBundle request and again when read back from disk, so both paths
 * run the same validation, and every message names the field and index that
 * broke a rule while quoting user text only in escaped, truncated form. */
#include "bundle.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"

/* Field paths such as "files[63].metadata.printer_model" fit in this. */
#define FIELD_MAX 64
/* User text quoted in a message: at most this many source bytes. */
#define QUOTE_SRC_MAX 40
#define QUOTE_BUF     (QUOTE_SRC_MAX * 4 + 4)

/* Writes s as printable ASCII for a message: other bytes as \xNN, the text cut
 * at QUOTE_SRC_MAX bytes with "..." appended. buf holds QUOTE_BUF bytes. */
static const char *quote(const char *s, char *buf)
{
    size_t o = 0, i;

    for (i = 0; s[i] != '\0' && i < QUOTE_SRC_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, QUOTE_BUF - o, "\\x%02x", c);
    }
    if (s[i] != '\0') {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* Length of the UTF-8 sequence at s (1..4), or 0 when it is malformed:
 * truncated, overlong, a surrogate or past U+10FFFF. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f))
            return 0; /* overlong, surrogate */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
            return 0; /* overlong, past U+10FFFF */
        return 4;
    }
    return 0;
}

/* A text field: at most max bytes of UTF-8 without C0, DEL or C1 controls;
 * empty allowed only when may_be_empty. NULL counts as empty. */
static enum pf_status check_text(const char *s, size_t max, bool may_be_empty, const char *field,
                                 struct pf_error *err)
{
    const unsigned char *u = (const unsigned char *)(s ? s : "");
    size_t len = strlen((const char *)u), i = 0, n;

    if (len == 0 && !may_be_empty)
        return pf_error_set(err, PF_E_INVALID, "%s is empty", field);
    if (len > max)
        return pf_error_set(err, PF_E_INVALID, "%s is %zu bytes long, over the maximum of %zu",
                            field, len, max);
    while (i < len) {
        if (u[i] < 0x20 || u[i] == 0x7f || (u[i] == 0xc2 && u[i + 1] >= 0x80 && u[i + 1] <= 0x9f))
            return pf_error_set(err, PF_E_INVALID, "%s has a control character at byte %zu", field,
                                i);
        n = utf8_seq(u + i);
        if (n == 0)
            return pf_error_set(err, PF_E_INVALID, "%s is not valid UTF-8 at byte %zu", field, i);
        i += n;
    }
    return PF_OK;
}

static bool profile_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static enum pf_status check_profile(const char *profile, const char *field, struct pf_error *err)
{
    char q[QUOTE_BUF];
    size_t len, i;

    len = strlen(profile);
    if (len == 0)
        return pf_error_set(err, PF_E_INVALID, "%s is empty", field);
    if (len > PF_BUNDLE_PROFILE_MAX)
        return pf_error_set(err, PF_E_INVALID, "%s '%s' is %zu bytes long, over the maximum of %d",
                            field, quote(profile, q), len, PF_BUNDLE_PROFILE_MAX);
    for (i = 0; i < len; i++) {
        if (!profile_char(profile[i]))
            return pf_error_set(err, PF_E_INVALID,
                                "%s '%s' has a character outside [A-Za-z0-9._-] at byte %zu", field,
                                quote(profile, q), i);
    }
    return PF_OK;
}

static enum pf_status check_digest(const Printfarm__V1__Digest *d, const char *field,
                                   struct pf_error *err)
{
    const char *hex = d && d->sha256 ? d->sha256 : "";
    char q[QUOTE_BUF];
    size_t i;

    if (!d || hex[0] == '\0')
        return pf_error_set(err, PF_E_INVALID, "%s is missing", field);
    for (i = 0; hex[i] != '\0'; i++) {
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
            break;
    }
    if (i != PF_DIGEST_HEX_LEN || hex[i] != '\0')
        return pf_error_set(err, PF_E_INVALID, "%s '%s' is not 64 lower-case hex characters", field,
                            quote(hex, q));
    return PF_OK;
}

static enum pf_status check_amount(double v, const char *field, struct pf_error *err)
{
    if (!isfinite(v) || v < 0)
        return pf_error_set(err, PF_E_INVALID, "%s %g is not a finite, non-negative number", field,
                            v);
    return PF_OK;
}

static enum pf_status check_metadata(const Printfarm__V1__GcodeMetadata *m, size_t i,
                                     struct pf_error *err)
{
    const struct {
        const char *name;
        const char *value;
    } texts[] = {
        {"slicer", m->slicer},
        {"material", m->material},
        {"colour", m->colour},
        {"printer_model", m->printer_model},
    };
    const struct {
        const char *name;
        double value;
    } amounts[] = {
        {"filament_mm", m->filament_mm},
        {"filament_g", m->filament_g},
        {"nozzle_mm", m->nozzle_mm},
    };
    char field[FIELD_MAX];
    enum pf_status rc;

    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        snprintf(field, sizeof field, "files[%zu].metadata.%s", i, texts[k].name);
        rc = check_text(texts[k].value, PF_BUNDLE_METADATA_TEXT_MAX, true, field, err);
        if (rc != PF_OK)
            return rc;
    }
    for (size_t k = 0; k < sizeof amounts / sizeof amounts[0]; k++) {
        snprintf(field, sizeof field, "files[%zu].metadata.%s", i, amounts[k].name);
        rc = check_amount(amounts[k].value, field, err);
        if (rc != PF_OK)
            return rc;
    }
    return PF_OK;
}

static enum pf_status check_files(const Printfarm__V1__Bundle *b, struct pf_error *err)
{
    char field[FIELD_MAX], q[QUOTE_BUF];
    enum pf_status rc;

    if (b->n_files == 0)
        return pf_error_set(err, PF_E_INVALID, "bundle has no files");
    if (b->n_files > PF_BUNDLE_FILES_MAX)
        return pf_error_set(err, PF_E_INVALID, "bundle has %zu files, over the maximum of %d",
                            b->n_files, PF_BUNDLE_FILES_MAX);
    for (size_t i = 0; i < b->n_files; i++) {
        const Printfarm__V1__BundleFile *f = b->files[i];
        if (!f)
            return pf_error_set(err, PF_E_INVALID, "files[%zu] is missing", i);
        snprintf(field, sizeof field, "files[%zu].profile", i);
        rc = check_profile(f->profile ? f->profile : "", field, err);
        if (rc != PF_OK)
            return rc;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(b->files[j]->profile, f->profile) == 0)
                return pf_error_set(err, PF_E_INVALID, "%s '%s' appears twice", field,
                                    quote(f->profile, q));
        }
        snprintf(field, sizeof field, "files[%zu].digest", i);
        rc = check_digest(f->digest, field, err);
        if (rc != PF_OK)
            return rc;
        if (f->metadata) {
            rc = check_metadata(f->metadata, i, err);
            if (rc != PF_OK)
                return rc;
        }
    }
    return PF_OK;
}

static enum pf_status check_labels(const Printfarm__V1__Bundle *b, struct pf_error *err)
{
    char field[FIELD_MAX], q[QUOTE_BUF];
    enum pf_status rc;

    if (b->n_labels > PF_BUNDLE_LABELS_MAX)
        return pf_error_set(err, PF_E_INVALID, "bundle has %zu labels, over the maximum of %d",
                            b->n_labels, PF_BUNDLE_LABELS_MAX);
    for (size_t i = 0; i < b->n_labels; i++) {
        const Printfarm__V1__Label *l = b->labels[i];
        if (!l)
            return pf_error_set(err, PF_E_INVALID, "labels[%zu] is missing", i);
        snprintf(field, sizeof field, "labels[%zu].key", i);
        rc = check_text(l->key, PF_BUNDLE_LABEL_KEY_MAX, false, field, err);
        if (rc != PF_OK)
            return rc;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(b->labels[j]->key, l->key) == 0)
                return pf_error_set(err, PF_E_INVALID, "%s '%s' appears twice", field,
                                    quote(l->key, q));
        }
        snprintf(field, sizeof field, "labels[%zu].value", i);
        rc = check_text(l->value, PF_BUNDLE_LABEL_VALUE_MAX, true, field, err);
        if (rc != PF_OK)
            return rc;
    }
    return PF_OK;
}

enum pf_status pf_bundle_validate(const Printfarm__V1__Bundle *b, struct pf_error *err)
{
    enum pf_status rc;

    if (!b)
        return pf_error_set(err, PF_E_INVALID, "bundle is missing");
    rc = check_text(b->name, PF_BUNDLE_NAME_MAX, false, "name", err);
    if (rc != PF_OK)
        return rc;
    rc = check_files(b, err);
    if (rc != PF_OK)
        return rc;
    return check_labels(b, err);
}

enum pf_status pf_bundle_encode(const Printfarm__V1__Bundle *b, char **out, size_t *len,
                                struct pf_error *err)
{
    enum pf_status rc;
    size_t packed;
    char *data;

    *out = NULL;
    *len = 0;
    rc = pf_bundle_validate(b, err);
    if (rc != PF_OK)
        return rc;
    packed = printfarm__v1__bundle__get_packed_size(b);
    if (packed > PF_BUNDLE_ENCODED_MAX - PF_BUNDLE_MAGIC_LEN)
        return pf_error_set(err, PF_E_INVALID,
                            "bundle encodes to %zu bytes, over the maximum of %d", packed,
                            PF_BUNDLE_ENCODED_MAX - PF_BUNDLE_MAGIC_LEN);
    data = malloc(PF_BUNDLE_MAGIC_LEN + packed);
    if (!data)
        return pf_error_set(err, PF_E_INTERNAL, "out of memory encoding a bundle");
    memcpy(data, PF_BUNDLE_MAGIC, PF_BUNDLE_MAGIC_LEN);
    printfarm__v1__bundle__pack(b, (uint8_t *)data + PF_BUNDLE_MAGIC_LEN);
    /* protobuf-c keeps what it did not understand (unknown fields, even
     * with field number 0 from an overlong tag) and packs it back as is; a
     * manifest that would not decode must never be stored (found by
     * fuzzing: tests/fuzz/regressions/files_rpc/put-bundle-unknown-field-0). */
    Printfarm__V1__Bundle *back = NULL;
    struct pf_error why;
    if (pf_bundle_decode(data, PF_BUNDLE_MAGIC_LEN + packed, &back, &why) != PF_OK) {
        free(data);
        return pf_error_set(err, PF_E_INVALID, "bundle does not encode to a valid manifest (%s)",
                            why.msg);
    }
    printfarm__v1__bundle__free_unpacked(back, NULL);
    *out = data;
    *len = PF_BUNDLE_MAGIC_LEN + packed;
    return PF_OK;
}

enum pf_status pf_bundle_decode(const char *data, size_t len, Printfarm__V1__Bundle **out,
                                struct pf_error *err)
{
    Printfarm__V1__Bundle *b;
    struct pf_error why;

    *out = NULL;
    if (len < PF_BUNDLE_MAGIC_LEN || memcmp(data, PF_BUNDLE_MAGIC, PF_BUNDLE_MAGIC_LEN) != 0)
        return pf_error_set(err, PF_E_INVALID, "blob is not a bundle manifest");
    if (len > PF_BUNDLE_ENCODED_MAX)
        return pf_error_set(err, PF_E_INVALID,
                            "blob is not a bundle manifest: %zu bytes is over the maximum of %d",
                            len, PF_BUNDLE_ENCODED_MAX);
    b = printfarm__v1__bundle__unpack(NULL, len - PF_BUNDLE_MAGIC_LEN,
                                      (const uint8_t *)data + PF_BUNDLE_MAGIC_LEN);
    if (!b)
        return pf_error_set(err, PF_E_INVALID,
                            "blob is not a bundle manifest: its message does not parse");
    if (pf_bundle_validate(b, &why) != PF_OK) {
        printfarm__v1__bundle__free_unpacked(b, NULL);
        return pf_error_set(err, PF_E_INVALID, "bundle manifest is invalid: %s", why.msg);
    }
    *out = b;
    return PF_OK;
}

/* ---- request checks of the Files API ---- */

enum pf_status pf_files_check_digest(const Printfarm__V1__Digest *d, const char *field,
                                     struct pf_digest *out, struct pf_error *err)
{
    if (d == NULL || d->sha256 == NULL || d->sha256[0] == '\0')
        return pf_error_set(err, PF_E_INVALID, "%s is required (64 hex characters)", field);
    if (pf_digest_from_hex(d->sha256, strlen(d->sha256), out, err) != PF_OK)
        return pf_error_set(err, PF_E_INVALID, "%s: %.200s", field, err->msg);
    for (const char *p = d->sha256; *p != '\0'; p++) {
        if (*p >= 'A' && *p <= 'F')
            return pf_error_set(err, PF_E_INVALID,
                                "%s '%.64s' has upper-case hex: digests are lower case", field,
                                d->sha256);
    }
    return PF_OK;
}

enum pf_status pf_files_check_find_missing(const Printfarm__V1__FindMissingRequest *req,
                                           struct pf_error *err)
{
    if (req->n_digests > PF_FILES_FIND_MISSING_MAX)
        return pf_error_set(err, PF_E_INVALID, "%zu digests asked at once: at most %d per call",
                            req->n_digests, PF_FILES_FIND_MISSING_MAX);
    for (size_t i = 0; i < req->n_digests; i++) {
        struct pf_digest d;
        char field[32];
        snprintf(field, sizeof(field), "digests[%zu]", i);
        if (pf_files_check_digest(req->digests[i], field, &d, err) != PF_OK)
            return err->code;
    }
    return PF_OK;
}

bool pf_files_upload_chunk(const uint8_t *data, size_t len, const uint8_t **chunk,
                           size_t *chunk_len)
{
    uint64_t n = 0;
    size_t i = 1;
    if (len < 2 || data[0] != 0x12)
        return false;
    /* At most 5 length bytes, as protobuf-c reads them: a longer (or
     * overflowing) prefix is a malformed message for the generic decoder to
     * refuse, not a chunk. */
    for (int shift = 0; i < len && shift < 35; shift += 7) {
        uint8_t b = data[i++];
        n |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            if (n != len - i)
                return false;
            *chunk = data + i;
            *chunk_len = (size_t)n;
            return true;
        }
    }
    return false;
}
