/* C functions for ctypes.PyDLL that keep the GIL: hung C calls. */
#include <time.h>

void hold_gil_forever(void);
void hold_gil_for(double seconds);
void hold_gil_sleep(void);
int hold_gil_inner(int sleep);

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

/* Loops forever, spinning or sleeping 10 ms at a time; not inlined, so
 * that native stacks show two frames of this library. */
__attribute__((noinline)) int
hold_gil_inner(int sleep)
{
	volatile unsigned long n = 0;
	struct timespec ts = { 0, 10 * 1000 * 1000 };

	for (;;) {
		if (sleep)
			nanosleep(&ts, NULL);
		else
			n++;
	}
	return (int)n;
}

/* Never returns; spins. */
void
hold_gil_forever(void)
{
	volatile int r = hold_gil_inner(0);

	(void)r;
}

/* Never returns; sleeps, so it holds the GIL without burning a CPU. */
void
hold_gil_sleep(void)
{
	volatile int r = hold_gil_inner(1);

	(void)r;
}
