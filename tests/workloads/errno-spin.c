/* errno-spin.c - a C function for ctypes that shows errno changed under it */
#include <errno.h>
#include <time.h>

int errno_spin(double seconds);

/*
 * Sets errno to 0, spins for seconds of wall time (clock_gettime is the
 * vDSO's: it never touches errno) and returns errno, which only a change
 * made from outside can have moved.
 */
int
errno_spin(double seconds)
{
	struct timespec t0, t;

	errno = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do
		clock_gettime(CLOCK_MONOTONIC, &t);
	while ((double)(t.tv_sec - t0.tv_sec) +
		(double)(t.tv_nsec - t0.tv_nsec) / 1e9 <
	    seconds);
	return errno;
}
