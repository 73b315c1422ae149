/* A minimal test harness: CHECK lines and a closing summary line. */
#ifndef PROBING_UNIT_H
#define PROBING_UNIT_H

#include <stdio.h>

static int unit_passed, unit_failed;

#define CHECK(cond, name)                                                     \
	do {                                                                  \
		if (cond) {                                                   \
			unit_passed++;                                        \
		} else {                                                      \
			unit_failed++;                                        \
			printf("not ok - %s (%s:%d: %s)\n", (name), __FILE__, \
			    __LINE__, #cond);                                 \
		}                                                             \
	} while (0)

static int
unit_summary(void)
{
	printf("%d passed, %d failed\n", unit_passed, unit_failed);
	return unit_failed != 0;
}

#endif
