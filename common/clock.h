/* clock: the two clocks every program here reads, in seconds as a double:
 * a monotonic one for durations and deadlines, the wall clock for
 * timestamps that are stored or shown. */
#ifndef CLOCK_H
#define CLOCK_H

/* Seconds on a monotonic clock (for durations and deadlines). */
double clock_now(void);
/* Seconds since the epoch (for timestamps). */
double clock_wall(void);

#endif
