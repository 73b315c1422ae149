/* A C function for ctypes.PyDLL that keeps the GIL: a hung C call. */
#include <time.h>

void hold_gil_forever(void);
void hold_gil_for(double seconds);

/* Spins for seconds of wall time without releasing the GIL. */
void
hold_gil_for(double seconds)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do
		clock_gettime(CLOCK_MONOTONIC, &t);
	while ((double)(t.tv_sec - t0.tv_sec) +
		(double)(t.tv_nsec - t0.tv_nsec) / 1e9 <
	    seconds);
}

/* Never returns. */
void
hold_gil_forever(void)
{
	volatile unsigned long n = 0;

	for (;;)
		n++;
}
