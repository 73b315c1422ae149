/* Unit tests for agent/ring.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ring.h"
#include "unit.h"

struct rec {
	uint64_t id;
	int value;
};

/* Checks a snapshot holds values first..last in order. */
static int
holds(struct ring *r, uint64_t after, int first, int last)
{
	size_t n, i;
	struct rec *s = ring_snapshot(r, after, &n);
	int ok = (int)n == last - first + 1;

	for (i = 0; ok && i < n; i++)
		ok = s[i].value == first + (int)i &&
		    s[i].id == (uint64_t)(first + (int)i);
	free(s);
	return ok;
}

int
main(void)
{
	struct ring r;
	struct rec x;
	size_t n;
	int i;

	CHECK(ring_init(&r, sizeof x, 4) == 0, "init");
	CHECK(ring_snapshot(&r, 0, &n) == NULL && n == 0, "empty");
	for (i = 1; i <= 3; i++) {
		x.value = i;
		CHECK(ring_push(&r, &x) == (uint64_t)i, "ids rise from 1");
	}
	CHECK(holds(&r, 0, 1, 3), "partly full");
	for (i = 4; i <= 10; i++) {
		x.value = i;
		ring_push(&r, &x);
	}
	CHECK(holds(&r, 0, 7, 10), "keeps the newest");
	CHECK(holds(&r, 8, 9, 10), "after a cursor");
	CHECK(holds(&r, 10, 1, 0), "nothing new");
	CHECK(holds(&r, 2, 7, 10), "cursor older than the ring");
	CHECK(ring_resize(&r, 2) == 0 && holds(&r, 0, 9, 10),
	    "shrink keeps the newest");
	CHECK(ring_resize(&r, 8) == 0 && holds(&r, 0, 9, 10),
	    "grow keeps what there is");
	for (i = 11; i <= 16; i++) {
		x.value = i;
		ring_push(&r, &x);
	}
	CHECK(holds(&r, 0, 9, 16), "fills after growing");
	free(r.buf);
	return unit_summary();
}
