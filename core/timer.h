/* core/timer.h — clocks. ar_now(): monotonic seconds for measuring durations;
 * ar_wall(): unix time in seconds (for logs). Header-only, depends on libc. */
#ifndef ANYREF_CORE_TIMER_H
#define ANYREF_CORE_TIMER_H

#include <time.h>

static inline double ar_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline double ar_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
