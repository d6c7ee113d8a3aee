/* The leader lease and TTL locks: pure arithmetic over struct pf_lease_state
 * first (saturating, so no input overflows), then the Redis commands that
 * feed it. Renew and release are Lua scripts so that "is it still ours?" and
 * the change happen atomically in Redis; they are loaded once with SCRIPT
 * LOAD and called with EVALSHA, loading again when Redis answers NOSCRIPT
 * (its script cache empties on restart). Request times are taken just before
 * sending, so the lease we believe in never outlasts the one Redis keeps. */
#include "lease.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

/* ---- pure part ---- */

static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t sum;
    if (__builtin_add_overflow(a, b, &sum))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return sum;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static void copy_id(char *dst, const char *src)
{
    snprintf(dst, PF_LEASE_ID_MAX, "%s", src != NULL ? src : "");
}

bool pf_lease_valid_at(int64_t renewed_at, int64_t ttl_ms, int64_t margin_ms, int64_t now)
{
    if (ttl_ms <= 0 || margin_ms < 0 || margin_ms >= ttl_ms)
        return false;
    return now < sat_add(renewed_at, ttl_ms - margin_ms);
}

enum pf_status pf_lease_state_init(struct pf_lease_state *s, int64_t ttl_ms, int64_t margin_ms,
                                   struct pf_error *err)
{
    if (s == NULL)
        return pf_error_set(err, PF_E_INVALID, "no lease state");
    if (ttl_ms < PF_LEASE_TTL_MIN_MS || ttl_ms > PF_LEASE_TTL_MAX_MS)
        return pf_error_set(err, PF_E_INVALID, "lease TTL %lld ms is not in %d..%lld ms",
                            (long long)ttl_ms, PF_LEASE_TTL_MIN_MS, (long long)PF_LEASE_TTL_MAX_MS);
    if (margin_ms < 0 || margin_ms > ttl_ms / 2)
        return pf_error_set(err, PF_E_INVALID,
                            "lease safety margin %lld ms is not in 0..%lld ms (half the TTL)",
                            (long long)margin_ms, (long long)(ttl_ms / 2));
    memset(s, 0, sizeof *s);
    s->ttl_ms = ttl_ms;
    s->margin_ms = margin_ms;
    return PF_OK;
}

void pf_lease_state_attempted(struct pf_lease_state *s, int64_t sent_at)
{
    if (!s->attempted || sent_at > s->last_attempt_at)
        s->last_attempt_at = sent_at;
    s->attempted = true;
}

void pf_lease_state_acquired(struct pf_lease_state *s, const char *id, int64_t sent_at)
{
    pf_lease_state_attempted(s, sent_at);
    copy_id(s->holder, id);
    if (s->held) {
        pf_lease_state_renewed(s, sent_at);
        return;
    }
    s->held = true;
    s->acquired_at = sent_at;
    s->renewed_at = sent_at;
    s->expires_at = sat_add(sent_at, s->ttl_ms);
}

void pf_lease_state_renewed(struct pf_lease_state *s, int64_t sent_at)
{
    pf_lease_state_attempted(s, sent_at);
    if (!s->held || sent_at <= s->renewed_at)
        return;
    s->renewed_at = sent_at;
    s->expires_at = sat_add(sent_at, s->ttl_ms);
}

void pf_lease_state_lost(struct pf_lease_state *s, const char *holder)
{
    s->held = false;
    copy_id(s->holder, holder);
}

bool pf_lease_state_is_holder(const struct pf_lease_state *s, int64_t now)
{
    return s->held && pf_lease_valid_at(s->renewed_at, s->ttl_ms, s->margin_ms, now);
}

int64_t pf_lease_state_valid_until(const struct pf_lease_state *s)
{
    if (!s->held)
        return INT64_MIN;
    return sat_add(s->renewed_at, s->ttl_ms - s->margin_ms);
}

int64_t pf_lease_state_period_ms(const struct pf_lease_state *s)
{
    int64_t period = (s->ttl_ms - s->margin_ms) / 3;
    return period > 0 ? period : 1;
}

int64_t pf_lease_state_next_attempt_at(const struct pf_lease_state *s, int64_t now)
{
    if (!s->attempted)
        return now;
    int64_t period = pf_lease_state_period_ms(s);
    int64_t retry = max64(period / 4, 1);
    int64_t planned = sat_add(s->held ? s->renewed_at : s->last_attempt_at, period);
    return max64(planned, sat_add(s->last_attempt_at, retry));
}

/* ---- Redis part ---- */

/* KEYS[1] lease key, ARGV[1] our id, ARGV[2] TTL in ms: 1 when extended. */
static const char extend_script[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                    "end\n"
                                    "return 0\n";

/* KEYS[1] lease key, ARGV[1] our id: 1 when deleted. */
static const char release_script[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                     "  return redis.call('DEL', KEYS[1])\n"
                                     "end\n"
                                     "return 0\n";

static bool id_ok(const char *s)
{
    return s != NULL && s[0] != '\0' && strlen(s) < PF_LEASE_ID_MAX;
}

enum pf_status pf_lease_init(struct pf_lease *l, struct pf_redis *redis, const char *key,
                             const char *id, int64_t ttl_ms, int64_t margin_ms,
                             struct pf_error *err)
{
    if (l == NULL || redis == NULL)
        return pf_error_set(err, PF_E_INVALID, "no lease or no redis client");
    if (!id_ok(key))
        return pf_error_set(err, PF_E_INVALID, "lease key must be 1..%d bytes",
                            PF_LEASE_ID_MAX - 1);
    if (!id_ok(id))
        return pf_error_set(err, PF_E_INVALID, "lease holder id must be 1..%d bytes",
                            PF_LEASE_ID_MAX - 1);
    struct pf_lease_state state;
    enum pf_status st = pf_lease_state_init(&state, ttl_ms, margin_ms, err);
    if (st != PF_OK)
        return st;
    memset(l, 0, sizeof *l);
    l->redis = redis;
    copy_id(l->key, key);
    copy_id(l->id, id);
    l->state = state;
    return PF_OK;
}

/* Runs one of the scripts with KEYS[1] = l->key and the given ARGV, loading
 * it first when sha is empty or Redis forgot it. */
static enum pf_status run_script(struct pf_lease *l, const char *script, char sha[41],
                                 const char *const *args, int nargs, long long *result,
                                 struct pf_error *err)
{
    enum pf_status st;
    for (int round = 0; round < 2; round++) {
        if (sha[0] == '\0') {
            const char *const load[] = {"SCRIPT", "LOAD", script};
            char *text;
            size_t len;
            st = pf_redis_command_string(l->redis, 3, load, NULL, &text, &len, err);
            if (st != PF_OK)
                return st;
            if (len != 40) {
                free(text);
                return pf_error_set(err, PF_E_INTERNAL,
                                    "redis at %s answered SCRIPT LOAD with no SHA1",
                                    pf_redis_target(l->redis));
            }
            memcpy(sha, text, 41);
            free(text);
        }
        const char *argv[6] = {"EVALSHA", sha, "1", l->key};
        for (int i = 0; i < nargs && i < 2; i++)
            argv[4 + i] = args[i];
        struct pf_error cause;
        st = pf_redis_command_integer(l->redis, 4 + nargs, argv, NULL, result, &cause);
        if (st == PF_E_NOT_FOUND) { /* NOSCRIPT */
            sha[0] = '\0';
            continue;
        }
        if (st != PF_OK && err != NULL)
            *err = cause;
        return st;
    }
    return pf_error_set(err, PF_E_INTERNAL, "redis at %s keeps forgetting the lease script",
                        pf_redis_target(l->redis));
}

/* Compare-and-extend; *extended tells whether the key held our id. */
static enum pf_status extend(struct pf_lease *l, bool *extended, struct pf_error *err)
{
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", (long long)l->state.ttl_ms);
    const char *const args[] = {l->id, ttl};
    long long result = 0;
    enum pf_status st = run_script(l, extend_script, l->extend_sha, args, 2, &result, err);
    *extended = st == PF_OK && result == 1;
    return st;
}

/* Notes that the lease is not ours, naming the holder when Redis says. */
static void note_lost(struct pf_lease *l)
{
    char holder[PF_LEASE_ID_MAX];
    struct pf_error ignored;
    if (pf_lease_read_holder(l->redis, l->key, holder, sizeof holder, &ignored) != PF_OK)
        holder[0] = '\0';
    pf_lease_state_lost(&l->state, holder);
}

enum pf_status pf_lease_acquire(struct pf_lease *l, bool *won, struct pf_error *err)
{
    *won = false;
    int64_t sent = pf_time_mono_ms();
    pf_lease_state_attempted(&l->state, sent);
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", (long long)l->state.ttl_ms);
    const char *const set[] = {"SET", l->key, l->id, "NX", "PX", ttl};
    redisReply *reply;
    enum pf_status st = pf_redis_command(l->redis, 6, set, NULL, &reply, err);
    if (st != PF_OK)
        return st;
    int type = reply->type;
    if (type != REDIS_REPLY_STATUS && type != REDIS_REPLY_NIL)
        st = pf_redis_reply_expect(reply, REDIS_REPLY_STATUS, "SET", err);
    freeReplyObject(reply);
    if (st != PF_OK)
        return st;
    if (type == REDIS_REPLY_STATUS) {
        pf_lease_state_acquired(&l->state, l->id, sent);
        *won = true;
        return PF_OK;
    }
    /* Taken: by someone else, or by us when an earlier reply never came. */
    char holder[PF_LEASE_ID_MAX];
    st = pf_lease_read_holder(l->redis, l->key, holder, sizeof holder, err);
    if (st == PF_E_NOT_FOUND) { /* expired in between: try again next time */
        pf_lease_state_lost(&l->state, NULL);
        return PF_OK;
    }
    if (st != PF_OK)
        return st;
    if (strcmp(holder, l->id) != 0) {
        pf_lease_state_lost(&l->state, holder);
        return PF_OK;
    }
    bool extended;
    st = extend(l, &extended, err);
    if (st != PF_OK)
        return st;
    if (extended) {
        pf_lease_state_acquired(&l->state, l->id, sent);
        *won = true;
    } else {
        note_lost(l);
    }
    return PF_OK;
}

enum pf_status pf_lease_renew(struct pf_lease *l, bool *held, struct pf_error *err)
{
    *held = false;
    int64_t sent = pf_time_mono_ms();
    pf_lease_state_attempted(&l->state, sent);
    bool extended;
    enum pf_status st = extend(l, &extended, err);
    if (st != PF_OK)
        return st;
    if (extended) {
        if (l->state.held)
            pf_lease_state_renewed(&l->state, sent);
        else
            pf_lease_state_acquired(&l->state, l->id, sent);
    } else {
        note_lost(l);
    }
    *held = extended;
    return PF_OK;
}

enum pf_status pf_lease_refresh(struct pf_lease *l, struct pf_error *err)
{
    bool ok;
    if (l->state.held)
        return pf_lease_renew(l, &ok, err);
    return pf_lease_acquire(l, &ok, err);
}

enum pf_status pf_lease_release(struct pf_lease *l, bool *released, struct pf_error *err)
{
    if (released != NULL)
        *released = false;
    pf_lease_state_lost(&l->state, NULL);
    const char *const args[] = {l->id};
    long long result = 0;
    enum pf_status st = run_script(l, release_script, l->release_sha, args, 1, &result, err);
    if (st == PF_OK && released != NULL)
        *released = result == 1;
    return st;
}

enum pf_status pf_lease_read_holder(struct pf_redis *redis, const char *key, char *out,
                                    size_t out_size, struct pf_error *err)
{
    if (out == NULL || out_size == 0 || !id_ok(key))
        return pf_error_set(err, PF_E_INVALID, "bad lease key or output buffer");
    out[0] = '\0';
    const char *const get[] = {"GET", key};
    char *text;
    size_t len;
    enum pf_status st = pf_redis_command_string(redis, 2, get, NULL, &text, &len, err);
    if (st == PF_E_NOT_FOUND)
        return pf_error_set(err, PF_E_NOT_FOUND, "no one holds '%s'", key);
    if (st != PF_OK)
        return st;
    if (memchr(text, '\0', len) != NULL)
        st = pf_error_set(err, PF_E_INTERNAL, "the holder id in '%s' is not text", key);
    else if (len >= out_size)
        st = pf_error_set(err, PF_E_OUT_OF_RANGE, "the holder id in '%s' is %zu bytes, over %zu",
                          key, len, out_size - 1);
    else
        memcpy(out, text, len + 1);
    free(text);
    return st;
}
