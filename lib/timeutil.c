/* Clocks for the whole tree: CLOCK_MONOTONIC for durations, timers and
 * deadlines (it never jumps), CLOCK_REALTIME only for timestamps people read
 * and records stored across restarts. */
#include "timeutil.h"

#include <errno.h>
#include <time.h>

static int64_t clock_ms(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t pf_time_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

int64_t pf_time_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

double pf_time_mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void pf_time_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec left = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    /* nanosleep writes the time still to sleep when a signal interrupts it. */
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}
