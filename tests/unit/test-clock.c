/* Unit tests for shared/clock.c. */
#include <time.h>

#include "clock.h"
#include "unit.h"

int
main(void)
{
	double t0 = clock_ms(), t1;
	struct timespec now, at;

	t1 = clock_ms();
	CHECK(t1 >= t0, "monotonic");
	CHECK(clock_left_ms(t1 - 5) == 0, "a past deadline has 0 left");
	CHECK(clock_left_ms(clock_ms() + 1000) > 900 &&
		clock_left_ms(clock_ms() + 1000) <= 1000,
	    "a deadline 1 s away");
	CHECK(clock_wall() > 1.6e9, "wall time in seconds since 1970");
	clock_gettime(CLOCK_REALTIME, &now);
	at = clock_abstime(1999);
	CHECK(at.tv_nsec >= 0 && at.tv_nsec < 1000000000L, "normalised");
	CHECK((at.tv_sec - now.tv_sec) * 1000 +
		    (at.tv_nsec - now.tv_nsec) / 1000000 >=
		1999,
	    "abstime is ms from now");
	at = clock_abstime(-5);
	CHECK(at.tv_sec >= now.tv_sec, "negative is now");
	return unit_summary();
}
