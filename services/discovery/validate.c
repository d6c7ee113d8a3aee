/* pf-discovery's pure rules: registrations, names in Redis, roles, filters.
 * No I/O; see validate.h. */
#include "validate.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"

static const char *const kind_names[] = {NULL, "scheduler", "files", "agent", "discovery", "web"};

const char *pf_disc_kind_name(int kind)
{
    if (kind < 1 || kind > PF_DISC_KIND_MAX)
        return NULL;
    return kind_names[kind];
}

int pf_disc_kind_from_name(const char *name, size_t len)
{
    for (int k = 1; k <= PF_DISC_KIND_MAX; k++) {
        if (strlen(kind_names[k]) == len && memcmp(kind_names[k], name, len) == 0)
            return k;
    }
    return 0;
}

static bool id_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static bool label_key_char(char c)
{
    return id_char(c) || c == '/';
}

bool pf_disc_id_valid(const char *id)
{
    size_t n = 0;
    if (id == NULL || id[0] == '\0')
        return false;
    for (; id[n] != '\0'; n++) {
        if (n >= PF_DISC_ID_MAX || !id_char(id[n]))
            return false;
    }
    return true;
}

/* The first control byte (or DEL) of text, or -1. */
static long control_at(const char *text)
{
    for (long i = 0; text[i] != '\0'; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f)
            return i;
    }
    return -1;
}

/* A printable rendering of a byte for messages. */
static void show_char(char c, char *out, size_t out_size)
{
    unsigned char u = (unsigned char)c;
    if (u >= 0x20 && u < 0x7f && u != '\'')
        snprintf(out, out_size, "'%c'", c);
    else
        snprintf(out, out_size, "byte 0x%02x", u);
}

static enum pf_status check_id(const char *id, struct pf_error *err)
{
    size_t n = strlen(id);
    char shown[16];
    if (n == 0)
        return pf_error_set(err, PF_E_INVALID, "instance.id is required");
    if (n > PF_DISC_ID_MAX)
        return pf_error_set(err, PF_E_INVALID, "instance.id is %zu bytes: at most %d", n,
                            PF_DISC_ID_MAX);
    for (size_t i = 0; i < n; i++) {
        if (!id_char(id[i])) {
            show_char(id[i], shown, sizeof(shown));
            return pf_error_set(err, PF_E_INVALID,
                                "instance.id '%.64s' has %s at byte %zu: use [A-Za-z0-9._-]",
                                control_at(id) >= 0 ? "(unprintable)" : id, shown, i);
        }
    }
    return PF_OK;
}

enum pf_status pf_disc_validate_address(const char *address, const char *field,
                                        struct pf_error *err)
{
    char host[PF_DISC_ADDRESS_MAX];
    struct pf_error cause;
    size_t n = address != NULL ? strlen(address) : 0;
    int port = 0;

    if (n == 0)
        return pf_error_set(err, PF_E_INVALID, "%s is required (HOST:PORT)", field);
    if (n >= PF_DISC_ADDRESS_MAX)
        return pf_error_set(err, PF_E_INVALID, "%s is %zu bytes: at most %d", field, n,
                            PF_DISC_ADDRESS_MAX - 1);
    if (control_at(address) >= 0)
        return pf_error_set(err, PF_E_INVALID, "%s has a control character", field);
    if (pf_config_parse_hostport(address, host, sizeof(host), &port, &cause) != PF_OK)
        return pf_error_set(err, PF_E_INVALID, "%s: %s", field, cause.msg);
    if (strlen(host) > PF_DISC_HOST_MAX)
        return pf_error_set(err, PF_E_INVALID, "%s host is over %d bytes", field, PF_DISC_HOST_MAX);
    if (port < 1)
        return pf_error_set(err, PF_E_INVALID, "%s '%.80s' has port 0: register the bound port",
                            field, address);
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
        return pf_error_set(err, PF_E_INVALID,
                            "%s '%.80s' is not dialable: register a host others can reach", field,
                            address);
    return PF_OK;
}

const char *pf_disc_probe_mode_name(enum pf_disc_probe_mode mode)
{
    switch (mode) {
    case PF_DISC_PROBE_HTTP:
        return "http";
    case PF_DISC_PROBE_OFF:
        return "off";
    case PF_DISC_PROBE_GRPC:
    default:
        return "grpc";
    }
}

bool pf_disc_probe_mode_parse(const char *text, enum pf_disc_probe_mode *out)
{
    if (text == NULL || text[0] == '\0' || strcmp(text, "grpc") == 0)
        *out = PF_DISC_PROBE_GRPC;
    else if (strcmp(text, "http") == 0)
        *out = PF_DISC_PROBE_HTTP;
    else if (strcmp(text, "off") == 0)
        *out = PF_DISC_PROBE_OFF;
    else
        return false;
    return true;
}

static enum pf_status check_labels(const Printfarm__V1__Instance *inst,
                                   enum pf_disc_probe_mode *mode, struct pf_error *err)
{
    char shown[16];
    *mode = PF_DISC_PROBE_GRPC;
    if (inst->n_labels > PF_DISC_LABELS_MAX)
        return pf_error_set(err, PF_E_INVALID, "instance.labels has %zu labels: at most %d",
                            inst->n_labels, PF_DISC_LABELS_MAX);
    for (size_t i = 0; i < inst->n_labels; i++) {
        const Printfarm__V1__Label *l = inst->labels[i];
        size_t kn = l->key != NULL ? strlen(l->key) : 0;
        size_t vn = l->value != NULL ? strlen(l->value) : 0;
        if (kn == 0)
            return pf_error_set(err, PF_E_INVALID, "instance.labels[%zu].key is required", i);
        if (kn > PF_DISC_LABEL_KEY_MAX)
            return pf_error_set(err, PF_E_INVALID,
                                "instance.labels[%zu].key is %zu bytes: at most %d", i, kn,
                                PF_DISC_LABEL_KEY_MAX);
        for (size_t j = 0; j < kn; j++) {
            if (!label_key_char(l->key[j])) {
                show_char(l->key[j], shown, sizeof(shown));
                return pf_error_set(err, PF_E_INVALID,
                                    "instance.labels[%zu].key has %s at byte %zu: use "
                                    "[A-Za-z0-9._/-]",
                                    i, shown, j);
            }
        }
        if (vn > PF_DISC_LABEL_VALUE_MAX)
            return pf_error_set(err, PF_E_INVALID,
                                "instance.labels[%zu].value ('%s') is %zu bytes: at most %d", i,
                                l->key, vn, PF_DISC_LABEL_VALUE_MAX);
        if (vn > 0 && control_at(l->value) >= 0)
            return pf_error_set(err, PF_E_INVALID,
                                "instance.labels[%zu].value ('%s') has a control character", i,
                                l->key);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(inst->labels[j]->key, l->key) == 0)
                return pf_error_set(err, PF_E_INVALID,
                                    "instance.labels[%zu].key '%s' repeats labels[%zu]", i, l->key,
                                    j);
        }
        if (strcmp(l->key, "probe") == 0 && !pf_disc_probe_mode_parse(l->value, mode))
            return pf_error_set(err, PF_E_INVALID,
                                "instance.labels[%zu] probe='%.40s': use grpc, http or off", i,
                                l->value);
    }
    return PF_OK;
}

enum pf_status pf_disc_validate_instance(const Printfarm__V1__Instance *inst,
                                         enum pf_disc_probe_mode *mode, struct pf_error *err)
{
    enum pf_disc_probe_mode m = PF_DISC_PROBE_GRPC;
    size_t vn;
    enum pf_status rc;

    if (inst == NULL)
        return pf_error_set(err, PF_E_INVALID, "instance is required");
    if (inst->kind == PRINTFARM__V1__INSTANCE_KIND__INSTANCE_KIND_UNSPECIFIED)
        return pf_error_set(
            err, PF_E_INVALID,
            "instance.kind is required (scheduler, files, agent, discovery or web)");
    if (pf_disc_kind_name((int)inst->kind) == NULL)
        return pf_error_set(err, PF_E_INVALID, "instance.kind %d is not a known InstanceKind",
                            (int)inst->kind);
    rc = check_id(inst->id != NULL ? inst->id : "", err);
    if (rc != PF_OK)
        return rc;
    rc = pf_disc_validate_address(inst->address, "instance.address", err);
    if (rc != PF_OK)
        return rc;
    vn = inst->version != NULL ? strlen(inst->version) : 0;
    if (vn > PF_DISC_VERSION_MAX)
        return pf_error_set(err, PF_E_INVALID, "instance.version is %zu bytes: at most %d", vn,
                            PF_DISC_VERSION_MAX);
    if (vn > 0 && control_at(inst->version) >= 0)
        return pf_error_set(err, PF_E_INVALID, "instance.version has a control character");
    rc = check_labels(inst, &m, err);
    if (rc != PF_OK)
        return rc;
    if (mode != NULL)
        *mode = m;
    return PF_OK;
}

enum pf_status pf_disc_ttl(uint32_t asked, uint32_t *granted, struct pf_error *err)
{
    if (asked == 0) {
        *granted = PF_DISC_TTL_DEFAULT_S;
        return PF_OK;
    }
    if (asked < PF_DISC_TTL_MIN_S || asked > PF_DISC_TTL_MAX_S)
        return pf_error_set(err, PF_E_INVALID,
                            "ttl_seconds %" PRIu32 " is outside %d..%d (0 means %d)", asked,
                            PF_DISC_TTL_MIN_S, PF_DISC_TTL_MAX_S, PF_DISC_TTL_DEFAULT_S);
    *granted = asked;
    return PF_OK;
}

void pf_disc_member(int kind, const char *id, char *out, size_t out_size)
{
    const char *name = pf_disc_kind_name(kind);
    snprintf(out, out_size, "%s:%s", name != NULL ? name : "unknown", id);
}

bool pf_disc_member_parse(const char *member, size_t len, int *kind, char *id, size_t id_size)
{
    const char *colon = memchr(member, ':', len);
    size_t idlen;
    if (colon == NULL)
        return false;
    *kind = pf_disc_kind_from_name(member, (size_t)(colon - member));
    idlen = len - (size_t)(colon - member) - 1;
    if (*kind == 0 || idlen == 0 || idlen > PF_DISC_ID_MAX || idlen >= id_size)
        return false;
    memcpy(id, colon + 1, idlen);
    id[idlen] = '\0';
    return pf_disc_id_valid(id);
}

void pf_disc_lease_format(int kind, const char *id, const char *nonce, char *out, size_t out_size)
{
    const char *name = pf_disc_kind_name(kind);
    snprintf(out, out_size, "%s/%s/%s", name != NULL ? name : "unknown", id, nonce);
}

enum pf_status pf_disc_lease_parse(const char *lease, char *member, size_t member_size,
                                   struct pf_error *err)
{
    const char *slash1, *slash2;
    char id[PF_DISC_ID_MAX + 1];
    size_t n = lease != NULL ? strlen(lease) : 0;
    int kind;

    if (n == 0)
        return pf_error_set(err, PF_E_INVALID, "lease_id is required");
    if (n >= PF_DISC_LEASE_MAX)
        goto out_bad;
    slash1 = strchr(lease, '/');
    if (slash1 == NULL)
        goto out_bad;
    slash2 = strchr(slash1 + 1, '/');
    if (slash2 == NULL || strlen(slash2 + 1) != PF_DISC_NONCE_LEN)
        goto out_bad;
    for (const char *p = slash2 + 1; *p != '\0'; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            goto out_bad;
    }
    kind = pf_disc_kind_from_name(lease, (size_t)(slash1 - lease));
    if (kind == 0 || slash2 - slash1 - 1 <= 0 || slash2 - slash1 - 1 > PF_DISC_ID_MAX)
        goto out_bad;
    memcpy(id, slash1 + 1, (size_t)(slash2 - slash1 - 1));
    id[slash2 - slash1 - 1] = '\0';
    if (!pf_disc_id_valid(id))
        goto out_bad;
    pf_disc_member(kind, id, member, member_size);
    return PF_OK;
out_bad:
    return pf_error_set(err, PF_E_INVALID,
                        "lease_id '%.100s' is not a lease this service grants (Register returns "
                        "one)",
                        control_at(lease) >= 0 ? "(unprintable)" : lease);
}

bool pf_disc_labels_match(const Printfarm__V1__Instance *inst, Printfarm__V1__Label *const *want,
                          size_t n_want)
{
    for (size_t i = 0; i < n_want; i++) {
        bool found = false;
        for (size_t j = 0; j < inst->n_labels && !found; j++) {
            const Printfarm__V1__Label *l = inst->labels[j];
            if (strcmp(l->key, want[i]->key) != 0)
                continue;
            found = want[i]->value == NULL || want[i]->value[0] == '\0' ||
                    strcmp(l->value, want[i]->value) == 0;
        }
        if (!found)
            return false;
    }
    return true;
}

enum pf_status pf_disc_validate_filter(Printfarm__V1__Label *const *want, size_t n_want,
                                       struct pf_error *err)
{
    if (n_want > PF_DISC_LABELS_MAX)
        return pf_error_set(err, PF_E_INVALID, "labels filter has %zu labels: at most %d", n_want,
                            PF_DISC_LABELS_MAX);
    for (size_t i = 0; i < n_want; i++) {
        if (want[i]->key == NULL || want[i]->key[0] == '\0')
            return pf_error_set(err, PF_E_INVALID, "labels[%zu].key is required", i);
        if (strlen(want[i]->key) > PF_DISC_LABEL_KEY_MAX ||
            strlen(want[i]->value) > PF_DISC_LABEL_VALUE_MAX)
            return pf_error_set(err, PF_E_INVALID, "labels[%zu] is longer than a label may be", i);
    }
    return PF_OK;
}

int pf_disc_health_rank(int health)
{
    switch (health) {
    case PRINTFARM__V1__INSTANCE_HEALTH__INSTANCE_HEALTH_SERVING:
        return 0;
    case PRINTFARM__V1__INSTANCE_HEALTH__INSTANCE_HEALTH_NOT_SERVING:
        return 2;
    case PRINTFARM__V1__INSTANCE_HEALTH__INSTANCE_HEALTH_UNREACHABLE:
        return 3;
    default:
        return 1;
    }
}

enum pf_status pf_disc_role_parse(const char *role, struct pf_disc_role *out, struct pf_error *err)
{
    size_t n = role != NULL ? strlen(role) : 0;
    memset(out, 0, sizeof(*out));
    if (n == 0)
        return pf_error_set(err, PF_E_INVALID,
                            "role is required: scheduler-leader, scheduler, files, discovery, web "
                            "or agent/PRINTER_ID");
    if (strcmp(role, "scheduler-leader") == 0) {
        out->type = PF_DISC_ROLE_LEADER;
        out->kind = PRINTFARM__V1__INSTANCE_KIND__INSTANCE_KIND_SCHEDULER;
        return PF_OK;
    }
    if (strncmp(role, "agent/", 6) == 0) {
        if (!pf_disc_id_valid(role + 6))
            return pf_error_set(err, PF_E_INVALID,
                                "role '%.80s': the printer id must be 1..%d characters of "
                                "[A-Za-z0-9._-]",
                                control_at(role) >= 0 ? "(unprintable)" : role, PF_DISC_ID_MAX);
        out->type = PF_DISC_ROLE_AGENT;
        out->kind = PRINTFARM__V1__INSTANCE_KIND__INSTANCE_KIND_AGENT;
        memcpy(out->id, role + 6, strlen(role + 6) + 1);
        return PF_OK;
    }
    int kind = pf_disc_kind_from_name(role, n);
    if (kind != 0 && kind != PRINTFARM__V1__INSTANCE_KIND__INSTANCE_KIND_AGENT) {
        out->type = PF_DISC_ROLE_KIND;
        out->kind = kind;
        return PF_OK;
    }
    return pf_error_set(err, PF_E_INVALID,
                        "role '%.80s' is not known: use scheduler-leader, scheduler, files, "
                        "discovery, web or agent/PRINTER_ID",
                        control_at(role) >= 0 ? "(unprintable)" : role);
}

bool pf_disc_leader_address(const char *value, char *out, size_t out_size)
{
    const char *bar;
    size_t n;
    if (value == NULL || out_size == 0)
        return false;
    bar = strchr(value, '|');
    n = bar != NULL ? (size_t)(bar - value) : strlen(value);
    if (n == 0 || n >= out_size)
        return false;
    memcpy(out, value, n);
    out[n] = '\0';
    return true;
}

/* "MS-SEQ" -> (ms, seq); false when malformed. */
static bool parse_stream_id(const char *s, uint64_t *ms, uint64_t *seq)
{
    char *end;
    if (s == NULL || s[0] < '0' || s[0] > '9')
        return false;
    *ms = strtoull(s, &end, 10);
    if (*end != '-' || end[1] < '0' || end[1] > '9')
        return false;
    *seq = strtoull(end + 1, &end, 10);
    return *end == '\0';
}

int pf_disc_stream_id_cmp(const char *a, const char *b)
{
    uint64_t am = 0, as = 0, bm = 0, bs = 0;
    bool aok = parse_stream_id(a, &am, &as), bok = parse_stream_id(b, &bm, &bs);
    if (!aok || !bok)
        return (int)aok - (int)bok;
    if (am != bm)
        return am < bm ? -1 : 1;
    if (as != bs)
        return as < bs ? -1 : 1;
    return 0;
}
