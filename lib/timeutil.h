/* Clocks: monotonic milliseconds for durations and timers, wall-clock
 * milliseconds since the epoch for records people read. */
#ifndef PF_TIMEUTIL_H
#define PF_TIMEUTIL_H

#include <stdint.h>

int64_t pf_time_mono_ms(void);
int64_t pf_time_wall_ms(void);
double pf_time_mono_seconds(void);
/* Sleeps ms milliseconds (restarts on EINTR). */
void pf_time_sleep_ms(int64_t ms);

#endif
