/* The one clock of the program and the agent: monotonic milliseconds for
 * measuring and deadlines, wall time for comparing with recorded times, and
 * absolute times for pthread timed waits. */
#ifndef PROBING_CLOCK_H
#define PROBING_CLOCK_H

#include <time.h>

/* CLOCK_MONOTONIC in milliseconds. */
double clock_ms(void);
/* CLOCK_REALTIME in seconds, the clock the agent stamps rows with. */
double clock_wall(void);
/* Milliseconds left before deadline (a clock_ms value), never below 0. */
int clock_left_ms(double deadline);
/* The CLOCK_REALTIME instant ms milliseconds from now, as
 * pthread_cond_timedwait and sem_timedwait want it. */
struct timespec clock_abstime(int ms);

#endif
