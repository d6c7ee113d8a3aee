/* The outgoing message buffer of a session (see evbuf.h): one array of
 * entries in production order. The array is small (a few hundred entries at
 * most), so removal by memmove is simpler and as fast as any list. */
#include <stdlib.h>
#include <string.h>
#include "evbuf.h"

struct slot {
    uint64_t id;
    uint64_t seq;
    enum pf_evbuf_class cls;
    int type;
    bool sent;
    void *data;
    size_t len;
};

struct pf_evbuf {
    struct slot *slots;
    size_t count, cap;
    size_t max_state, max_telemetry, max_bytes;
    size_t state_count, telemetry_count;
    uint64_t next_id;
    uint64_t last_seq, acked_seq;
    uint64_t dropped;
};

struct pf_evbuf *pf_evbuf_create(size_t max_state, size_t max_telemetry, size_t max_bytes)
{
    struct pf_evbuf *b;

    if (max_state < 1 || max_telemetry < 1 || max_bytes < 1)
        return NULL;
    b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->cap = max_state + max_telemetry;
    b->slots = calloc(b->cap, sizeof(*b->slots));
    if (b->slots == NULL) {
        free(b);
        return NULL;
    }
    b->max_state = max_state;
    b->max_telemetry = max_telemetry;
    b->max_bytes = max_bytes;
    b->next_id = 1;
    return b;
}

void pf_evbuf_destroy(struct pf_evbuf *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->count; i++)
        free(b->slots[i].data);
    free(b->slots);
    free(b);
}

uint64_t pf_evbuf_last_seq(const struct pf_evbuf *b)
{
    return b->last_seq;
}

void pf_evbuf_set_last_seq(struct pf_evbuf *b, uint64_t seq)
{
    if (seq > b->last_seq)
        b->last_seq = seq;
}

uint64_t pf_evbuf_acked_seq(const struct pf_evbuf *b)
{
    return b->acked_seq;
}

static void remove_at(struct pf_evbuf *b, size_t i)
{
    if (b->slots[i].cls == PF_EVBUF_STATE)
        b->state_count--;
    else
        b->telemetry_count--;
    free(b->slots[i].data);
    memmove(&b->slots[i], &b->slots[i + 1], (b->count - i - 1) * sizeof(b->slots[0]));
    b->count--;
}

static enum pf_status check_len(const struct pf_evbuf *b, size_t len, struct pf_error *err)
{
    if (len == 0 || len > b->max_bytes)
        return pf_error_set(err, PF_E_INVALID,
                            "a buffered message of %zu bytes is outside 1..%zu bytes", len,
                            b->max_bytes);
    return PF_OK;
}

/* Appends a copy of data; the caller checked the class limits. */
static enum pf_status append(struct pf_evbuf *b, enum pf_evbuf_class cls, uint64_t seq, int type,
                             const void *data, size_t len, struct pf_error *err)
{
    struct slot *s;
    void *copy = malloc(len);

    if (copy == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory buffering a message");
    memcpy(copy, data, len);
    s = &b->slots[b->count++];
    *s = (struct slot){
        .id = b->next_id++, .seq = seq, .cls = cls, .type = type, .data = copy, .len = len};
    if (cls == PF_EVBUF_STATE)
        b->state_count++;
    else
        b->telemetry_count++;
    return PF_OK;
}

static enum pf_status state_full(const struct pf_evbuf *b, struct pf_error *err)
{
    uint64_t oldest = 0;

    for (size_t i = 0; i < b->count; i++)
        if (b->slots[i].cls == PF_EVBUF_STATE) {
            oldest = b->slots[i].seq;
            break;
        }
    return pf_error_set(err, PF_E_RESOURCE,
                        "event buffer full: %zu state changes (seq %llu..%llu) are not yet "
                        "acknowledged by the scheduler; no more can be recorded until it is "
                        "reachable again",
                        b->state_count, (unsigned long long)oldest,
                        (unsigned long long)b->last_seq);
}

enum pf_status pf_evbuf_push_state(struct pf_evbuf *b, int type, const void *data, size_t len,
                                   uint64_t *seq, struct pf_error *err)
{
    enum pf_status rc = check_len(b, len, err);

    if (rc != PF_OK)
        return rc;
    if (b->state_count >= b->max_state)
        return state_full(b, err);
    rc = append(b, PF_EVBUF_STATE, b->last_seq + 1, type, data, len, err);
    if (rc != PF_OK)
        return rc;
    b->last_seq++;
    if (seq != NULL)
        *seq = b->last_seq;
    return PF_OK;
}

enum pf_status pf_evbuf_restore_state(struct pf_evbuf *b, uint64_t seq, int type, const void *data,
                                      size_t len, struct pf_error *err)
{
    enum pf_status rc = check_len(b, len, err);

    if (rc != PF_OK)
        return rc;
    if (seq == 0)
        return pf_error_set(err, PF_E_INVALID, "a state change cannot have seq 0");
    if (seq <= b->acked_seq)
        return PF_OK;
    for (size_t i = 0; i < b->count; i++)
        if (b->slots[i].cls == PF_EVBUF_STATE && b->slots[i].seq >= seq)
            return pf_error_set(err, PF_E_INVALID,
                                "state change seq %llu restored after seq %llu: out of order",
                                (unsigned long long)seq, (unsigned long long)b->slots[i].seq);
    if (b->state_count >= b->max_state)
        return state_full(b, err);
    rc = append(b, PF_EVBUF_STATE, seq, type, data, len, err);
    if (rc == PF_OK && seq > b->last_seq)
        b->last_seq = seq;
    return rc;
}

enum pf_status pf_evbuf_push_telemetry(struct pf_evbuf *b, int type, const void *data, size_t len)
{
    if (check_len(b, len, NULL) != PF_OK)
        return PF_E_INVALID;
    if (b->telemetry_count >= b->max_telemetry) {
        for (size_t i = 0; i < b->count; i++)
            if (b->slots[i].cls == PF_EVBUF_TELEMETRY) {
                remove_at(b, i);
                b->dropped++;
                break;
            }
    }
    return append(b, PF_EVBUF_TELEMETRY, 0, type, data, len, NULL);
}

void pf_evbuf_ack(struct pf_evbuf *b, uint64_t seq)
{
    if (seq > b->last_seq)
        seq = b->last_seq;
    if (seq <= b->acked_seq)
        return;
    b->acked_seq = seq;
    for (size_t i = 0; i < b->count;) {
        if (b->slots[i].cls == PF_EVBUF_STATE && b->slots[i].seq <= seq)
            remove_at(b, i);
        else
            i++;
    }
}

void pf_evbuf_rewind(struct pf_evbuf *b)
{
    for (size_t i = 0; i < b->count; i++)
        if (b->slots[i].cls == PF_EVBUF_STATE)
            b->slots[i].sent = false;
}

bool pf_evbuf_welcome(struct pf_evbuf *b, uint64_t acked_seq)
{
    bool renumbered = false;

    if (acked_seq > b->last_seq) {
        uint64_t seq = acked_seq;

        for (size_t i = 0; i < b->count; i++)
            if (b->slots[i].cls == PF_EVBUF_STATE)
                b->slots[i].seq = ++seq;
        b->last_seq = seq;
        b->acked_seq = acked_seq;
        renumbered = true;
    } else {
        pf_evbuf_ack(b, acked_seq);
    }
    pf_evbuf_rewind(b);
    return renumbered;
}

static void view(const struct slot *s, struct pf_evbuf_entry *out)
{
    *out = (struct pf_evbuf_entry){
        .id = s->id, .seq = s->seq, .cls = s->cls, .type = s->type, .data = s->data, .len = s->len};
}

bool pf_evbuf_next(const struct pf_evbuf *b, struct pf_evbuf_entry *out)
{
    for (size_t i = 0; i < b->count; i++)
        if (!b->slots[i].sent) {
            view(&b->slots[i], out);
            return true;
        }
    return false;
}

void pf_evbuf_sent(struct pf_evbuf *b, uint64_t id)
{
    for (size_t i = 0; i < b->count; i++) {
        if (b->slots[i].id != id)
            continue;
        if (b->slots[i].cls == PF_EVBUF_TELEMETRY)
            remove_at(b, i);
        else
            b->slots[i].sent = true;
        return;
    }
}

size_t pf_evbuf_count(const struct pf_evbuf *b, enum pf_evbuf_class cls)
{
    return cls == PF_EVBUF_STATE ? b->state_count : b->telemetry_count;
}

bool pf_evbuf_state_at(const struct pf_evbuf *b, size_t i, struct pf_evbuf_entry *out)
{
    for (size_t k = 0; k < b->count; k++) {
        if (b->slots[k].cls != PF_EVBUF_STATE)
            continue;
        if (i-- == 0) {
            view(&b->slots[k], out);
            return true;
        }
    }
    return false;
}

uint64_t pf_evbuf_dropped(const struct pf_evbuf *b)
{
    return b->dropped;
}
