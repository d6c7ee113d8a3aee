/* Exponential backoff with full jitter for pf-agent's reconnects and download
 * retries: the n-th retry waits a uniformly random time in [0, min(max,
 * base * 2^n)], which spreads a farm of agents that lost the same scheduler
 * over the whole window instead of having them knock at once. Pure: the
 * caller supplies the random numbers, so tests pin every bound. Embedded by
 * value; not thread-safe (one owner). */
#ifndef PF_AGENT_BACKOFF_H
#define PF_AGENT_BACKOFF_H

#include <stdint.h>

struct pf_backoff {
    int64_t base_ms;   /* ceiling of the first retry, > 0 */
    int64_t max_ms;    /* ceiling never exceeds this, >= base_ms */
    unsigned attempts; /* retries since the last reset */
};

/* base_ms < 1 reads as 1; max_ms < base_ms reads as base_ms. */
void pf_backoff_init(struct pf_backoff *b, int64_t base_ms, int64_t max_ms);
/* After a success: the next retry starts from base again. */
void pf_backoff_reset(struct pf_backoff *b);
/* The ceiling the next call to pf_backoff_next draws under:
 * min(max, base * 2^attempts), without overflow. */
int64_t pf_backoff_ceiling(const struct pf_backoff *b);
/* The delay before the next retry, in [0, ceiling] chosen by random (any
 * 64-bit value, e.g. from pf_backoff_random); counts one more attempt. */
int64_t pf_backoff_next(struct pf_backoff *b, uint64_t random);

/* A small xorshift64* generator for the jitter: *state must be non-zero (a
 * zero state is replaced by a constant). Not for anything secret. */
uint64_t pf_backoff_random(uint64_t *state);

#endif
