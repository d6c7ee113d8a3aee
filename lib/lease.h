/* The leader lease, and locks with a TTL, in Redis. One key holds the id of
 * its holder (a string the caller chooses, e.g. "HOST:PORT|instance-uuid", so
 * followers can read where the leader is) and expires after a TTL unless the
 * holder extends it: acquire is SET key id NX PX ttl, renew a Lua
 * compare-and-extend, release a Lua compare-and-delete.
 *
 * The first part is pure arithmetic over struct pf_lease_state, with no
 * server: whether we may still act as holder at time t, and when to try
 * again. All times are monotonic milliseconds (pf_time_mono_ms). A lease
 * counts from the moment its acquire or renew request was *sent*, since Redis
 * starts the TTL no earlier, and ends a safety margin before the TTL runs out
 * to allow for clock-rate drift and pauses: we stop acting as holder before
 * Redis can hand the key to anyone else. Redis is not the safety net for
 * exactly-once (the PostgreSQL epoch is); the lease only keeps leaders few.
 *
 * The second part, struct pf_lease, runs the commands and keeps the state. A
 * generic lock with a TTL, such as pf-discovery's single active prober, is the
 * same thing under another key: one mechanism, one set of names. */
#ifndef PF_LEASE_H
#define PF_LEASE_H

#include <stdint.h>
#include "redis.h"
#include "status.h"

#define PF_LEASE_ID_MAX     256 /* bytes of an id or key, NUL included */
#define PF_LEASE_TTL_MIN_MS 30
#define PF_LEASE_TTL_MAX_MS (24LL * 3600 * 1000)

/* ---- pure part ---- */

/* What one contender knows about the lease. Embedded by value; no pointers. */
struct pf_lease_state {
    char holder[PF_LEASE_ID_MAX]; /* last known holder's id, ours while held; "" = unknown */
    bool held;                    /* our last acquire/renew succeeded and nothing said otherwise */
    int64_t acquired_at;          /* when the request that won the lease was sent */
    int64_t renewed_at;           /* when the last successful acquire/renew was sent */
    int64_t expires_at;           /* renewed_at + ttl: Redis keeps the key until about then */
    int64_t last_attempt_at;      /* when the last acquire/renew was sent, whatever came of it */
    bool attempted;               /* false until the first attempt */
    int64_t ttl_ms;               /* the TTL set in Redis */
    int64_t margin_ms;            /* we stop acting as holder this long before expires_at */
};

/* The rule itself: a lease last renewed (request sent) at renewed_at may be
 * acted on at time now when now < renewed_at + ttl_ms - margin_ms. False for
 * a nonsensical ttl/margin (ttl <= 0, margin < 0, margin >= ttl). Saturating:
 * no overflow for any inputs. */
bool pf_lease_valid_at(int64_t renewed_at, int64_t ttl_ms, int64_t margin_ms, int64_t now);

/* Starts a state with no holder known. ttl_ms must be in
 * PF_LEASE_TTL_MIN_MS..PF_LEASE_TTL_MAX_MS and margin_ms in 0..ttl_ms/2:
 * otherwise PF_E_INVALID and s is left unchanged. */
enum pf_status pf_lease_state_init(struct pf_lease_state *s, int64_t ttl_ms, int64_t margin_ms,
                                   struct pf_error *err) PF_MUST_CHECK;

/* Records that an acquire or renew request is being sent at sent_at. */
void pf_lease_state_attempted(struct pf_lease_state *s, int64_t sent_at);

/* Records that the request sent at sent_at won the lease for id (acquire, or
 * a renew of a lease we did not think we held). Already held: holder becomes
 * id and the times move as for pf_lease_state_renewed. id longer than the
 * holder field is cut. */
void pf_lease_state_acquired(struct pf_lease_state *s, const char *id, int64_t sent_at);

/* Records a successful renew sent at sent_at. Time never runs backwards: an
 * older sent_at than the last success changes nothing, and neither does a
 * renew of a lease not held (use pf_lease_state_acquired for that). */
void pf_lease_state_renewed(struct pf_lease_state *s, int64_t sent_at);

/* Records that we do not hold the lease; holder is who does (NULL or "" =
 * unknown or nobody). */
void pf_lease_state_lost(struct pf_lease_state *s, const char *holder);

/* True when we hold the lease and may act as holder at now. */
bool pf_lease_state_is_holder(const struct pf_lease_state *s, int64_t now);

/* The instant we stop acting as holder (renewed_at + ttl - margin);
 * INT64_MIN when not held. */
int64_t pf_lease_state_valid_until(const struct pf_lease_state *s);

/* The renew period: (ttl - margin) / 3, so a holder gets about three tries
 * before its lease lapses. Followers try to acquire at the same period. */
int64_t pf_lease_state_period_ms(const struct pf_lease_state *s);

/* When to send the next acquire (not held) or renew (held): one period after
 * the last success (held) or the last attempt (not held), but after a failed
 * attempt no sooner than a retry step (period / 4, at least 1 ms) after it;
 * now when nothing was attempted yet. Never before the last attempt. */
int64_t pf_lease_state_next_attempt_at(const struct pf_lease_state *s, int64_t now);

/* ---- Redis part ---- */

/* A lease (or lock) on one key for one contender. Embedded by value; holds
 * no resources, so it needs no release of its own besides pf_lease_release,
 * which gives the lease up in Redis. */
struct pf_lease {
    struct pf_redis *redis; /* borrowed: must outlive the lease; one thread at a time */
    char key[PF_LEASE_ID_MAX];
    char id[PF_LEASE_ID_MAX];
    struct pf_lease_state state;
    char extend_sha[41]; /* SCRIPT LOAD results, "" until loaded */
    char release_sha[41];
};

/* Sets up l for contender id on key (both non-empty, shorter than
 * PF_LEASE_ID_MAX) with ttl/margin as in pf_lease_state_init. No I/O. */
enum pf_status pf_lease_init(struct pf_lease *l, struct pf_redis *redis, const char *key,
                             const char *id, int64_t ttl_ms, int64_t margin_ms,
                             struct pf_error *err) PF_MUST_CHECK;

/* SET key id NX PX ttl. *won tells whether we hold the lease now (also when
 * the key already held our own id, e.g. after an earlier reply was lost: it
 * is then extended). When someone else holds it, l->state.holder is their id.
 * A Redis failure returns its status and leaves held/holder as they were. */
enum pf_status pf_lease_acquire(struct pf_lease *l, bool *won, struct pf_error *err) PF_MUST_CHECK;

/* Compare-and-extend: sets the TTL again only if the key still holds our id.
 * *held tells whether it did; when it did not, the state becomes not held
 * (with the new holder's id when there is one). A Redis failure leaves the
 * state as it was: pf_lease_state_is_holder keeps deciding by time. */
enum pf_status pf_lease_renew(struct pf_lease *l, bool *held, struct pf_error *err) PF_MUST_CHECK;

/* Renews when the state says held, acquires otherwise; the state tells the
 * outcome. For the holder's timer loop. */
enum pf_status pf_lease_refresh(struct pf_lease *l, struct pf_error *err) PF_MUST_CHECK;

/* Compare-and-delete: deletes the key only if it holds our id. *released
 * (may be NULL) tells whether it did. The state is not held afterwards, even
 * when Redis could not be reached (the key then expires by itself). */
enum pf_status pf_lease_release(struct pf_lease *l, bool *released,
                                struct pf_error *err) PF_MUST_CHECK;

/* GET key: copies the current holder's id into out. PF_E_NOT_FOUND when no one
 * holds it, PF_E_OUT_OF_RANGE when it does not fit in out_size. For followers
 * looking for the leader. */
enum pf_status pf_lease_read_holder(struct pf_redis *redis, const char *key, char *out,
                                    size_t out_size, struct pf_error *err) PF_MUST_CHECK;

#endif
