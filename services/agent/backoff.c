/* Exponential backoff with full jitter (see backoff.h): the arithmetic only,
 * no clock and no sleeping, so the unit tests check every bound. */
#include "backoff.h"

void pf_backoff_init(struct pf_backoff *b, int64_t base_ms, int64_t max_ms)
{
    b->base_ms = base_ms < 1 ? 1 : base_ms;
    b->max_ms = max_ms < b->base_ms ? b->base_ms : max_ms;
    b->attempts = 0;
}

void pf_backoff_reset(struct pf_backoff *b)
{
    b->attempts = 0;
}

int64_t pf_backoff_ceiling(const struct pf_backoff *b)
{
    int64_t ceiling = b->base_ms;

    /* Doubling stops as soon as the maximum is reached, so it never overflows. */
    for (unsigned i = 0; i < b->attempts && ceiling < b->max_ms; i++)
        ceiling = ceiling > b->max_ms / 2 ? b->max_ms : ceiling * 2;
    return ceiling < b->max_ms ? ceiling : b->max_ms;
}

int64_t pf_backoff_next(struct pf_backoff *b, uint64_t random)
{
    int64_t ceiling = pf_backoff_ceiling(b);

    if (b->attempts < 64)
        b->attempts++;
    return (int64_t)(random % ((uint64_t)ceiling + 1));
}

uint64_t pf_backoff_random(uint64_t *state)
{
    uint64_t x = *state != 0 ? *state : 0x9e3779b97f4a7c15ULL;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dULL;
}
