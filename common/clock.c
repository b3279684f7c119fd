/* clock: monotonic and wall-clock seconds (see clock.h). */
#include "clock.h"

#include <time.h>

static double s_seconds(clockid_t id)
{
    struct timespec ts;
    /* Fails only for an unknown clock id; both ids here exist on Linux. */
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double clock_now(void)
{
    return s_seconds(CLOCK_MONOTONIC);
}

double clock_wall(void)
{
    return s_seconds(CLOCK_REALTIME);
}
