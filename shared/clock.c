/* The one clock: every "now" and every deadline goes through here, so a
 * change of clock (or a fake one in a test) is made in one place. */
#include <time.h>

#include "clock.h"

double
clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

double
clock_wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
clock_left_ms(double deadline)
{
	double left = deadline - clock_ms();

	return left > 0 ? (int)(left + 0.999) : 0;
}

struct timespec
clock_abstime(int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ms < 0)
		ms = 0;
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}
