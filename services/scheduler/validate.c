/* Pure request checks, page tokens and shown states of the scheduler's unary
 * API. See validate.h for the rules; messages quote at most a short prefix of
 * a bad value so a megabyte-long name cannot fill a log line. */
#include <stdio.h>
#include <string.h>
#include "digest.h"
#include "validate.h"

#define QUOTE_MAX 40 /* bytes of a bad value quoted in a message */

/* ---- building blocks ---- */

/* Length of one UTF-8 sequence at p (at most `left` bytes), 0 when invalid
 * (overlong, surrogate, above U+10FFFF, truncated). *cp gets the code point. */
static size_t utf8_seq(const unsigned char *p, size_t left, uint32_t *cp)
{
    unsigned char c = p[0];
    size_t n;
    uint32_t v, min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2, v = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3, v = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (p[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return n;
}

bool pf_sched_text_printable(const char *text)
{
    const unsigned char *p = (const unsigned char *)(text != NULL ? text : "");
    size_t left = strlen((const char *)p);

    while (left > 0) {
        uint32_t cp;
        size_t n = utf8_seq(p, left, &cp);
        if (n == 0 || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0))
            return false;
        p += n;
        left -= n;
    }
    return true;
}

/* A printable prefix of text for a message: control bytes become '?', and
 * the copy is cut at QUOTE_MAX bytes (on a character boundary) with "...". */
static const char *quote(const char *text, char out[QUOTE_MAX + 4])
{
    const unsigned char *p = (const unsigned char *)(text != NULL ? text : "");
    size_t left = strlen((const char *)p), o = 0;

    while (left > 0) {
        uint32_t cp;
        size_t n = utf8_seq(p, left, &cp);
        if (n == 0 || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) {
            n = n == 0 ? 1 : n;
            if (o + 1 > QUOTE_MAX)
                break;
            out[o++] = '?';
        } else {
            if (o + n > QUOTE_MAX)
                break;
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
        left -= n;
    }
    if (left > 0) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

enum pf_status pf_sched_check_text(const char *text, const char *field, size_t max,
                                   bool allow_empty, struct pf_error *err)
{
    char q[QUOTE_MAX + 4];
    size_t len = text != NULL ? strlen(text) : 0;

    if (len == 0) {
        if (allow_empty)
            return PF_OK;
        return pf_error_set(err, PF_E_INVALID, "%s is required", field);
    }
    if (len > max)
        return pf_error_set(err, PF_E_INVALID, "%s '%s' is %zu bytes long: at most %zu allowed",
                            field, quote(text, q), len, max);
    if (!pf_sched_text_printable(text))
        return pf_error_set(err, PF_E_INVALID,
                            "%s '%s' is not printable text: control characters and invalid "
                            "utf-8 are not allowed",
                            field, quote(text, q));
    return PF_OK;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

/* [A-Za-z0-9._-]{1,max}: queue and profile names. */
static enum pf_status check_name(const char *name, const char *field, size_t max,
                                 struct pf_error *err)
{
    char q[QUOTE_MAX + 4];
    size_t len = name != NULL ? strlen(name) : 0;

    if (len == 0)
        return pf_error_set(err, PF_E_INVALID,
                            "%s is empty: give 1 to %zu characters of "
                            "[A-Za-z0-9._-]",
                            field, max);
    if (len > max)
        return pf_error_set(err, PF_E_INVALID,
                            "%s '%s' is %zu characters long: at most %zu allowed", field,
                            quote(name, q), len, max);
    for (size_t i = 0; i < len; i++) {
        if (!name_char(name[i]))
            return pf_error_set(err, PF_E_INVALID,
                                "%s '%s' has a character outside [A-Za-z0-9._-] at offset %zu",
                                field, quote(name, q), i);
    }
    return PF_OK;
}

enum pf_status pf_sched_check_queue_name(const char *queue, const char *field, struct pf_error *err)
{
    return check_name(queue, field, PF_SCHED_QUEUE_NAME_MAX, err);
}

enum pf_status pf_sched_check_id(const char *id, const char *field, struct pf_error *err)
{
    char q[QUOTE_MAX + 4];
    size_t len = id != NULL ? strlen(id) : 0;

    if (len == 0)
        return pf_error_set(err, PF_E_INVALID, "%s is required", field);
    if (len > PF_SCHED_TEXT_ID_MAX)
        return pf_error_set(err, PF_E_INVALID, "%s '%s' is %zu bytes long: ids are at most %d",
                            field, quote(id, q), len, PF_SCHED_TEXT_ID_MAX);
    if (!pf_sched_text_printable(id))
        return pf_error_set(err, PF_E_INVALID,
                            "%s '%s' is not a valid id: control characters "
                            "and invalid utf-8 are not allowed",
                            field, quote(id, q));
    return PF_OK;
}

enum pf_status pf_sched_check_printer_id(const char *id, const char *field, struct pf_error *err)
{
    if (id == NULL || id[0] == '\0')
        return pf_error_set(err, PF_E_INVALID, "%s is required", field);
    return check_name(id, field, PF_SCHED_PRINTER_NAME_MAX, err);
}

enum pf_status pf_sched_check_profile_name(const char *profile, const char *field,
                                           struct pf_error *err)
{
    return check_name(profile, field, PF_SCHED_PROFILE_NAME_MAX, err);
}

enum pf_status pf_sched_check_digest(const Printfarm__V1__Digest *d, const char *field,
                                     struct pf_error *err)
{
    char q[QUOTE_MAX + 4];

    if (d == NULL || d->sha256 == NULL || d->sha256[0] == '\0')
        return pf_error_set(err, PF_E_INVALID, "%s is required (64 lower-case hex characters)",
                            field);
    size_t len = strlen(d->sha256);
    if (len != PF_DIGEST_HEX_LEN)
        return pf_error_set(err, PF_E_INVALID,
                            "%s '%s' is %zu characters long: a digest is 64 lower-case hex "
                            "characters",
                            field, quote(d->sha256, q), len);
    for (size_t i = 0; i < len; i++) {
        char c = d->sha256[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return pf_error_set(err, PF_E_INVALID,
                                "%s '%s' is not a digest: character %zu is not lower-case hex",
                                field, quote(d->sha256, q), i);
    }
    return PF_OK;
}

static enum pf_status check_label(const Printfarm__V1__Label *l, const char *field, size_t i,
                                  struct pf_error *err)
{
    char f[96];

    if (l == NULL || l->key == NULL || l->key[0] == '\0')
        return pf_error_set(err, PF_E_INVALID, "%s[%zu] has an empty key", field, i);
    snprintf(f, sizeof(f), "%s[%zu].key", field, i);
    if (pf_sched_check_text(l->key, f, PF_SCHED_LABEL_KEY_MAX, false, err) != PF_OK)
        return err->code;
    snprintf(f, sizeof(f), "%s[%zu].value", field, i);
    return pf_sched_check_text(l->value, f, PF_SCHED_LABEL_VALUE_MAX, true, err);
}

static enum pf_status check_labels(Printfarm__V1__Label *const *labels, size_t n, const char *field,
                                   bool unique_keys, struct pf_error *err)
{
    char q[QUOTE_MAX + 4];

    if (n > PF_SCHED_LABELS_MAX)
        return pf_error_set(err, PF_E_INVALID, "%s has %zu entries: at most %d allowed", field, n,
                            PF_SCHED_LABELS_MAX);
    for (size_t i = 0; i < n; i++) {
        if (check_label(labels[i], field, i, err) != PF_OK)
            return err->code;
        for (size_t j = 0; unique_keys && j < i; j++) {
            if (strcmp(labels[j]->key, labels[i]->key) == 0)
                return pf_error_set(err, PF_E_INVALID,
                                    "%s[%zu]: key '%s' is repeated (also at %zu)", field, i,
                                    quote(labels[i]->key, q), j);
        }
    }
    return PF_OK;
}

enum pf_status pf_sched_check_constraints(const Printfarm__V1__JobConstraints *c, const char *field,
                                          struct pf_error *err)
{
    char f[96], q[QUOTE_MAX + 4];

    if (c == NULL)
        return PF_OK;
    if (c->n_materials > PF_SCHED_REQUIREMENTS_MAX)
        return pf_error_set(err, PF_E_INVALID,
                            "%s.materials has %zu requirements: at most %d allowed", field,
                            c->n_materials, PF_SCHED_REQUIREMENTS_MAX);
    for (size_t i = 0; i < c->n_materials; i++) {
        const Printfarm__V1__MaterialRequirement *m = c->materials[i];
        bool has_extruder = m->where_case == PRINTFARM__V1__MATERIAL_REQUIREMENT__WHERE_EXTRUDER;
        if (has_extruder && m->extruder >= PF_SCHED_EXTRUDERS_MAX)
            return pf_error_set(err, PF_E_INVALID,
                                "%s.materials[%zu].extruder %u is out of range: extruders are 0 "
                                "to %d",
                                field, i, m->extruder, PF_SCHED_EXTRUDERS_MAX - 1);
        snprintf(f, sizeof(f), "%s.materials[%zu].material", field, i);
        if (pf_sched_check_text(m->material, f, PF_SCHED_MATERIAL_MAX, true, err) != PF_OK)
            return err->code;
        snprintf(f, sizeof(f), "%s.materials[%zu].colour", field, i);
        if (pf_sched_check_text(m->colour, f, PF_SCHED_MATERIAL_MAX, true, err) != PF_OK)
            return err->code;
        if (!has_extruder && (m->material == NULL || m->material[0] == '\0') &&
            (m->colour == NULL || m->colour[0] == '\0'))
            return pf_error_set(err, PF_E_INVALID,
                                "%s.materials[%zu] requires nothing: give a material, a colour "
                                "or an extruder",
                                field, i);
    }
    if (c->n_profiles > PF_SCHED_PROFILES_MAX)
        return pf_error_set(err, PF_E_INVALID, "%s.profiles has %zu entries: at most %d allowed",
                            field, c->n_profiles, PF_SCHED_PROFILES_MAX);
    for (size_t i = 0; i < c->n_profiles; i++) {
        snprintf(f, sizeof(f), "%s.profiles[%zu]", field, i);
        if (check_name(c->profiles[i], f, PF_SCHED_PROFILE_NAME_MAX, err) != PF_OK)
            return err->code;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->profiles[j], c->profiles[i]) == 0)
                return pf_error_set(err, PF_E_INVALID, "%s '%s' is listed twice (also at %zu)", f,
                                    quote(c->profiles[i], q), j);
        }
    }
    snprintf(f, sizeof(f), "%s.printer_labels", field);
    return check_labels(c->printer_labels, c->n_printer_labels, f, false, err);
}

static enum pf_status check_policy(uint32_t v, const char *field, struct pf_error *err)
{
    if (v > PF_SCHED_POLICY_MAX)
        return pf_error_set(err, PF_E_INVALID,
                            "%s %u is out of range: 0 (the farm default) or 1 to %d", field, v,
                            PF_SCHED_POLICY_MAX);
    return PF_OK;
}

static enum pf_status check_count(uint32_t count, const char *field, struct pf_error *err)
{
    if (count < 1 || count > PF_SCHED_COUNT_MAX)
        return pf_error_set(err, PF_E_INVALID, "%s %u is out of range: 1 to %d copies", field,
                            count, PF_SCHED_COUNT_MAX);
    return PF_OK;
}

static enum pf_status check_priority(int32_t priority, struct pf_error *err)
{
    if (priority < PF_SCHED_PRIORITY_MIN || priority > PF_SCHED_PRIORITY_MAX)
        return pf_error_set(err, PF_E_INVALID, "priority %d is out of range: %d to %d", priority,
                            PF_SCHED_PRIORITY_MIN, PF_SCHED_PRIORITY_MAX);
    return PF_OK;
}

/* ---- requests ---- */

enum pf_status pf_sched_check_submit(const Printfarm__V1__SubmitJobRequest *req,
                                     struct pf_error *err)
{
    if (req->queue != NULL && req->queue[0] != '\0' &&
        pf_sched_check_queue_name(req->queue, "queue", err) != PF_OK)
        return err->code;
    if (pf_sched_check_text(req->name, "name", PF_SCHED_JOB_NAME_MAX, true, err) != PF_OK)
        return err->code;
    if (pf_sched_check_digest(req->bundle, "bundle", err) != PF_OK)
        return err->code;
    if (check_count(req->count, "count", err) != PF_OK)
        return err->code;
    if (check_priority(req->priority, err) != PF_OK)
        return err->code;
    if (pf_sched_check_constraints(req->constraints, "constraints", err) != PF_OK)
        return err->code;
    if (pf_sched_check_text(req->idempotency_key, "idempotency_key", PF_SCHED_IDEMPOTENCY_KEY_MAX,
                            true, err) != PF_OK)
        return err->code;
    if (check_policy(req->max_attempts_per_printer, "max_attempts_per_printer", err) != PF_OK)
        return err->code;
    return check_policy(req->max_printers, "max_printers", err);
}

enum pf_status pf_sched_check_profiles_in_bundle(const Printfarm__V1__JobConstraints *c,
                                                 const Printfarm__V1__Bundle *bundle,
                                                 struct pf_error *err)
{
    char q[QUOTE_MAX + 4], have[160];

    if (c == NULL)
        return PF_OK;
    for (size_t i = 0; i < c->n_profiles; i++) {
        bool found = false;
        for (size_t j = 0; bundle != NULL && j < bundle->n_files && !found; j++) {
            const char *p = bundle->files[j] != NULL ? bundle->files[j]->profile : NULL;
            found = p != NULL && strcmp(p, c->profiles[i]) == 0;
        }
        if (found)
            continue;
        size_t o = 0;
        have[0] = '\0';
        for (size_t j = 0; bundle != NULL && j < bundle->n_files && o < sizeof(have); j++) {
            const char *p = bundle->files[j] != NULL ? bundle->files[j]->profile : NULL;
            int n =
                snprintf(have + o, sizeof(have) - o, "%s%s", o > 0 ? ", " : "", p != NULL ? p : "");
            o = n < 0 ? sizeof(have) : o + (size_t)n;
        }
        return pf_error_set(err, PF_E_INVALID,
                            "constraints.profiles[%zu] '%s' has no file in the bundle (it has: "
                            "%s)",
                            i, quote(c->profiles[i], q), have[0] != '\0' ? have : "no files");
    }
    return PF_OK;
}

void pf_sched_job_name(const char *requested, const char *bundle_name, const char *bundle_hex,
                       char *out)
{
    if (requested != NULL && requested[0] != '\0') {
        snprintf(out, PF_SCHED_JOB_NAME_MAX + 1, "%s", requested);
        return;
    }
    if (bundle_name != NULL && bundle_name[0] != '\0' &&
        strlen(bundle_name) <= PF_SCHED_JOB_NAME_MAX && pf_sched_text_printable(bundle_name)) {
        snprintf(out, PF_SCHED_JOB_NAME_MAX + 1, "%s", bundle_name);
        return;
    }
    snprintf(out, PF_SCHED_JOB_NAME_MAX + 1, "bundle %.12s", bundle_hex != NULL ? bundle_hex : "");
}

enum pf_status pf_sched_check_get_job(const Printfarm__V1__GetJobRequest *req, struct pf_error *err)
{
    return pf_sched_check_id(req->id, "id", err);
}

static enum pf_status check_states(const int *states, size_t n, int max, const char *what,
                                   struct pf_error *err)
{
    if (n > PF_SCHED_STATE_FILTER_MAX)
        return pf_error_set(err, PF_E_INVALID, "states has %zu entries: at most %d allowed", n,
                            PF_SCHED_STATE_FILTER_MAX);
    for (size_t i = 0; i < n; i++) {
        if (states[i] < 1 || states[i] > max)
            return pf_error_set(err, PF_E_INVALID,
                                "states[%zu] %d is not a %s state (1 to %d; 0 is unspecified)", i,
                                states[i], what, max);
    }
    return PF_OK;
}

enum pf_status pf_sched_check_list_jobs(const Printfarm__V1__ListJobsRequest *req,
                                        struct pf_error *err)
{
    uint32_t size;

    if (req->queue != NULL && req->queue[0] != '\0' &&
        pf_sched_check_queue_name(req->queue, "queue", err) != PF_OK)
        return err->code;
    if (check_states((const int *)req->states, req->n_states,
                     PRINTFARM__V1__JOB_STATE__JOB_STATE_CANCELLED, "job", err) != PF_OK)
        return err->code;
    return pf_sched_page_size(req->page_size, &size, err);
}

enum pf_status pf_sched_check_update_job(const Printfarm__V1__UpdateJobRequest *req,
                                         struct pf_error *err)
{
    bool any = false;

    if (pf_sched_check_id(req->id, "id", err) != PF_OK)
        return err->code;
    if (req->set_priority_case == PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_PRIORITY_PRIORITY) {
        any = true;
        if (check_priority(req->priority, err) != PF_OK)
            return err->code;
    }
    if (req->set_count_case == PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_COUNT_COUNT) {
        any = true;
        if (check_count(req->count, "count", err) != PF_OK)
            return err->code;
    }
    if (req->set_hold_case == PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_HOLD_HOLD)
        any = true;
    if (req->set_name_case == PRINTFARM__V1__UPDATE_JOB_REQUEST__SET_NAME_NAME) {
        any = true;
        if (pf_sched_check_text(req->name, "name", PF_SCHED_JOB_NAME_MAX, false, err) != PF_OK)
            return err->code;
    }
    if (!any)
        return pf_error_set(err, PF_E_INVALID,
                            "nothing to change for job '%.*s': set priority, count, hold or name",
                            PF_SCHED_TEXT_ID_MAX, req->id);
    return PF_OK;
}

enum pf_status pf_sched_check_new_count(const char *job_id, uint32_t count, int64_t succeeded,
                                        int64_t in_progress, struct pf_error *err)
{
    if ((int64_t)count < succeeded + in_progress)
        return pf_error_set(err, PF_E_INVALID,
                            "count %u for job '%s' is below the copies already succeeded (%lld) "
                            "plus printing (%lld)",
                            count, job_id, (long long)succeeded, (long long)in_progress);
    return PF_OK;
}

enum pf_status pf_sched_check_cancel_job(const Printfarm__V1__CancelJobRequest *req,
                                         struct pf_error *err)
{
    if (pf_sched_check_id(req->id, "id", err) != PF_OK)
        return err->code;
    return pf_sched_check_text(req->reason, "reason", PF_SCHED_REASON_MAX, true, err);
}

enum pf_status pf_sched_check_list_printers(const Printfarm__V1__ListPrintersRequest *req,
                                            struct pf_error *err)
{
    uint32_t size;

    if (req->queue != NULL && req->queue[0] != '\0' &&
        pf_sched_check_queue_name(req->queue, "queue", err) != PF_OK)
        return err->code;
    if (check_states((const int *)req->states, req->n_states,
                     PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_QUARANTINED, "printer",
                     err) != PF_OK)
        return err->code;
    return pf_sched_page_size(req->page_size, &size, err);
}

static enum pf_status check_materials(const Printfarm__V1__ExtruderMaterials *m,
                                      struct pf_error *err)
{
    char f[64];

    if (m->n_items > PF_SCHED_EXTRUDERS_MAX)
        return pf_error_set(err, PF_E_INVALID, "materials has %zu entries: at most %d extruders",
                            m->n_items, PF_SCHED_EXTRUDERS_MAX);
    for (size_t i = 0; i < m->n_items; i++) {
        const Printfarm__V1__ExtruderMaterial *e = m->items[i];
        if (e->extruder >= PF_SCHED_EXTRUDERS_MAX)
            return pf_error_set(err, PF_E_INVALID,
                                "materials[%zu].extruder %u is out of range: extruders are 0 to "
                                "%d",
                                i, e->extruder, PF_SCHED_EXTRUDERS_MAX - 1);
        for (size_t j = 0; j < i; j++) {
            if (m->items[j]->extruder == e->extruder)
                return pf_error_set(err, PF_E_INVALID,
                                    "materials[%zu].extruder %u is repeated (also at %zu)", i,
                                    e->extruder, j);
        }
        snprintf(f, sizeof(f), "materials[%zu].material", i);
        if (pf_sched_check_text(e->material, f, PF_SCHED_MATERIAL_MAX, true, err) != PF_OK)
            return err->code;
        snprintf(f, sizeof(f), "materials[%zu].colour", i);
        if (pf_sched_check_text(e->colour, f, PF_SCHED_MATERIAL_MAX, true, err) != PF_OK)
            return err->code;
    }
    return PF_OK;
}

static enum pf_status check_queues(const Printfarm__V1__QueueWeights *qs, struct pf_error *err)
{
    char f[64], q[QUOTE_MAX + 4];

    if (qs->n_items > PF_SCHED_PRINTER_QUEUES_MAX)
        return pf_error_set(err, PF_E_INVALID, "queues has %zu entries: at most %d allowed",
                            qs->n_items, PF_SCHED_PRINTER_QUEUES_MAX);
    for (size_t i = 0; i < qs->n_items; i++) {
        const Printfarm__V1__QueueWeight *w = qs->items[i];
        snprintf(f, sizeof(f), "queues[%zu].queue", i);
        if (pf_sched_check_queue_name(w->queue, f, err) != PF_OK)
            return err->code;
        if (w->weight < 1 || w->weight > PF_SCHED_QUEUE_WEIGHT_MAX)
            return pf_error_set(err, PF_E_INVALID,
                                "queues[%zu].weight %u for queue '%s' is out of range: 1 to %d", i,
                                w->weight, w->queue, PF_SCHED_QUEUE_WEIGHT_MAX);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(qs->items[j]->queue, w->queue) == 0)
                return pf_error_set(err, PF_E_INVALID,
                                    "queues[%zu]: queue '%s' is repeated (also at %zu)", i,
                                    quote(w->queue, q), j);
        }
    }
    return PF_OK;
}

static enum pf_status check_windows(const Printfarm__V1__AvailabilityWindows *ws,
                                    struct pf_error *err)
{
    if (ws->n_items > PF_SCHED_WINDOWS_MAX)
        return pf_error_set(err, PF_E_INVALID, "windows has %zu entries: at most %d allowed",
                            ws->n_items, PF_SCHED_WINDOWS_MAX);
    for (size_t i = 0; i < ws->n_items; i++) {
        const Printfarm__V1__AvailabilityWindow *w = ws->items[i];
        if (w->n_days > 7)
            return pf_error_set(err, PF_E_INVALID, "windows[%zu].days has %zu entries: at most 7",
                                i, w->n_days);
        for (size_t d = 0; d < w->n_days; d++) {
            int day = (int)w->days[d];
            if (day < PRINTFARM__V1__WEEKDAY__WEEKDAY_MONDAY ||
                day > PRINTFARM__V1__WEEKDAY__WEEKDAY_SUNDAY)
                return pf_error_set(err, PF_E_INVALID,
                                    "windows[%zu].days[%zu] %d is not a weekday (1 = monday to "
                                    "7 = sunday)",
                                    i, d, day);
        }
        if (w->start_minute >= PF_SCHED_MINUTES_PER_DAY)
            return pf_error_set(err, PF_E_INVALID,
                                "windows[%zu].start_minute %u is out of range: 0 to %d", i,
                                w->start_minute, PF_SCHED_MINUTES_PER_DAY - 1);
        if (w->end_minute < 1 || w->end_minute > PF_SCHED_MINUTES_PER_DAY)
            return pf_error_set(err, PF_E_INVALID,
                                "windows[%zu].end_minute %u is out of range: 1 to %d", i,
                                w->end_minute, PF_SCHED_MINUTES_PER_DAY);
        if (w->end_minute == w->start_minute)
            return pf_error_set(err, PF_E_INVALID,
                                "windows[%zu] starts and ends at minute %u: the window is empty", i,
                                w->start_minute);
        if (w->utc_offset_minutes < -PF_SCHED_UTC_OFFSET_MAX ||
            w->utc_offset_minutes > PF_SCHED_UTC_OFFSET_MAX)
            return pf_error_set(
                err, PF_E_INVALID, "windows[%zu].utc_offset_minutes %d is out of range: %d to %d",
                i, w->utc_offset_minutes, -PF_SCHED_UTC_OFFSET_MAX, PF_SCHED_UTC_OFFSET_MAX);
    }
    return PF_OK;
}

enum pf_status pf_sched_check_update_printer(const Printfarm__V1__UpdatePrinterRequest *req,
                                             struct pf_error *err)
{
    if (pf_sched_check_printer_id(req->id, "id", err) != PF_OK)
        return err->code;
    if (req->materials == NULL && req->labels == NULL && req->queues == NULL &&
        req->windows == NULL && !req->release_quarantine)
        return pf_error_set(err, PF_E_INVALID,
                            "nothing to change for printer '%.*s': set materials, labels, queues, "
                            "windows or release_quarantine",
                            PF_SCHED_TEXT_ID_MAX, req->id);
    if (req->materials != NULL && check_materials(req->materials, err) != PF_OK)
        return err->code;
    if (req->labels != NULL &&
        check_labels(req->labels->items, req->labels->n_items, "labels", true, err) != PF_OK)
        return err->code;
    if (req->queues != NULL && check_queues(req->queues, err) != PF_OK)
        return err->code;
    if (req->windows != NULL && check_windows(req->windows, err) != PF_OK)
        return err->code;
    return PF_OK;
}

enum pf_status pf_sched_check_confirm_bed_clear(const Printfarm__V1__ConfirmBedClearRequest *req,
                                                struct pf_error *err)
{
    if (pf_sched_check_printer_id(req->printer_id, "printer_id", err) != PF_OK)
        return err->code;
    if (req->attempt_id != NULL && req->attempt_id[0] != '\0')
        return pf_sched_check_id(req->attempt_id, "attempt_id", err);
    return PF_OK;
}

/* ---- paging ----
 * A token is the hex of: version (1 byte), filter (8, big-endian), time_us
 * (8, big-endian), id length (1), id, and the first 4 bytes of the SHA-256 of
 * everything before them. The checksum only catches tokens this server did
 * not write; a token grants nothing, it only says where a listing resumes. */

#define TOKEN_VERSION 1
#define TOKEN_FIXED   (1 + 8 + 8 + 1)
#define TOKEN_SUM     4

enum pf_status pf_sched_page_size(uint32_t requested, uint32_t *out, struct pf_error *err)
{
    if (requested > PF_SCHED_PAGE_SIZE_MAX)
        return pf_error_set(err, PF_E_INVALID, "page_size %u is too large: at most %d", requested,
                            PF_SCHED_PAGE_SIZE_MAX);
    *out = requested == 0 ? PF_SCHED_PAGE_SIZE_DEFAULT : requested;
    return PF_OK;
}

uint32_t pf_sched_state_mask(const int *states, size_t n)
{
    uint32_t mask = 0;
    for (size_t i = 0; i < n; i++) {
        if (states[i] > 0 && states[i] < 32)
            mask |= 1u << states[i];
    }
    return mask;
}

uint64_t pf_sched_page_filter(const char *kind, const char *queue, uint32_t state_mask)
{
    struct pf_digest d;
    uint8_t buf[PF_SCHED_QUEUE_NAME_MAX * 2 + 64];
    int n = snprintf((char *)buf, sizeof(buf), "%s\n%s\n%08x", kind != NULL ? kind : "",
                     queue != NULL ? queue : "", state_mask);
    uint64_t v = 0;

    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(buf))
        n = (int)sizeof(buf) - 1;
    pf_sha256(buf, (size_t)n, &d);
    for (int i = 0; i < 8; i++)
        v = v << 8 | d.bytes[i];
    return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

void pf_sched_page_token_encode(uint64_t filter, const struct pf_sched_page_key *key, char *out)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t raw[TOKEN_FIXED + PF_SCHED_TEXT_ID_MAX + TOKEN_SUM];
    size_t idlen = strnlen(key->id, PF_SCHED_TEXT_ID_MAX);
    size_t n = 0;
    struct pf_digest d;

    raw[n++] = TOKEN_VERSION;
    put_u64(raw + n, filter);
    n += 8;
    put_u64(raw + n, (uint64_t)key->time_us);
    n += 8;
    raw[n++] = (uint8_t)idlen;
    memcpy(raw + n, key->id, idlen);
    n += idlen;
    pf_sha256(raw, n, &d);
    memcpy(raw + n, d.bytes, TOKEN_SUM);
    n += TOKEN_SUM;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

enum pf_status pf_sched_page_token_decode(const char *token, uint64_t filter,
                                          struct pf_sched_page_key *out, struct pf_error *err)
{
    uint8_t raw[TOKEN_FIXED + PF_SCHED_TEXT_ID_MAX + TOKEN_SUM];
    size_t len = token != NULL ? strnlen(token, PF_SCHED_PAGE_TOKEN_MAX) : 0;
    size_t n = len / 2;
    struct pf_digest d;

    if (len == 0 || len >= PF_SCHED_PAGE_TOKEN_MAX || len % 2 != 0 || n < TOKEN_FIXED + TOKEN_SUM)
        goto bad;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(token[2 * i]), lo = hexval(token[2 * i + 1]);
        if (hi < 0 || lo < 0)
            goto bad;
        raw[i] = (uint8_t)(hi << 4 | lo);
    }
    if (raw[0] != TOKEN_VERSION || (size_t)raw[TOKEN_FIXED - 1] + TOKEN_FIXED + TOKEN_SUM != n)
        goto bad;
    pf_sha256(raw, n - TOKEN_SUM, &d);
    if (memcmp(d.bytes, raw + n - TOKEN_SUM, TOKEN_SUM) != 0)
        goto bad;
    if (get_u64(raw + 1) != filter)
        return pf_error_set(err, PF_E_INVALID,
                            "page_token was issued for a different filter: repeat the first "
                            "request's queue and states, or start again without a token");
    out->time_us = (int64_t)get_u64(raw + 9);
    size_t idlen = raw[TOKEN_FIXED - 1];
    memcpy(out->id, raw + TOKEN_FIXED, idlen);
    out->id[idlen] = '\0';
    if (strlen(out->id) != idlen) /* a NUL inside */
        goto bad;
    return PF_OK;
bad:
    return pf_error_set(err, PF_E_INVALID,
                        "page_token is not a token this server issued: pass next_page_token "
                        "from the previous response unchanged");
}

/* ---- states ---- */

bool pf_sched_job_state_finished(Printfarm__V1__JobState state)
{
    return state == PRINTFARM__V1__JOB_STATE__JOB_STATE_DONE ||
           state == PRINTFARM__V1__JOB_STATE__JOB_STATE_FAILED ||
           state == PRINTFARM__V1__JOB_STATE__JOB_STATE_CANCELLED;
}

Printfarm__V1__JobState pf_sched_job_state_after(Printfarm__V1__JobState current, bool held,
                                                 int64_t count, int64_t succeeded,
                                                 int64_t in_progress)
{
    if (pf_sched_job_state_finished(current))
        return current;
    if (succeeded >= count)
        return PRINTFARM__V1__JOB_STATE__JOB_STATE_DONE;
    if (held)
        return PRINTFARM__V1__JOB_STATE__JOB_STATE_HELD;
    if (succeeded + in_progress >= count)
        return PRINTFARM__V1__JOB_STATE__JOB_STATE_PRINTING;
    return PRINTFARM__V1__JOB_STATE__JOB_STATE_QUEUED;
}

Printfarm__V1__PrinterState pf_sched_printer_state_shown(bool quarantined, bool connected,
                                                         Printfarm__V1__PrinterState live,
                                                         bool awaiting_clear)
{
    if (quarantined)
        return PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_QUARANTINED;
    if (!connected)
        return PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_OFFLINE;
    if (live == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING ||
        live == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PAUSED ||
        live == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_ERROR)
        return live;
    if (awaiting_clear)
        return PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_AWAITING_CLEAR;
    return PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_IDLE;
}

/* ---- WatchEvents ---- */

bool pf_sched_event_kind_known(int kind)
{
    return (kind >= 1 && kind <= 7) || (kind >= 10 && kind <= 16) || (kind >= 20 && kind <= 25) ||
           kind == 30;
}

enum pf_status pf_sched_check_watch_events(const Printfarm__V1__WatchEventsRequest *req,
                                           uint64_t *kinds, struct pf_error *err)
{
    uint64_t mask = 0;

    if ((req->job_id != NULL && strlen(req->job_id) > PF_SCHED_WATCH_FILTER_ID_MAX) ||
        (req->printer_id != NULL && strlen(req->printer_id) > PF_SCHED_WATCH_FILTER_ID_MAX))
        return pf_error_set(err, PF_E_INVALID, "job_id and printer_id filters are at most %d bytes",
                            PF_SCHED_WATCH_FILTER_ID_MAX);
    if (req->n_kinds > PF_SCHED_WATCH_KINDS_MAX)
        return pf_error_set(err, PF_E_INVALID, "kinds filter lists more than %d kinds",
                            PF_SCHED_WATCH_KINDS_MAX);
    for (size_t i = 0; i < req->n_kinds; i++) {
        if (!pf_sched_event_kind_known((int)req->kinds[i]))
            return pf_error_set(err, PF_E_INVALID, "kinds[%zu] = %d is not a known EventKind", i,
                                (int)req->kinds[i]);
        mask |= (uint64_t)1 << req->kinds[i];
    }
    if (kinds != NULL)
        *kinds = mask;
    return PF_OK;
}
