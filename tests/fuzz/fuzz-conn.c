/* libFuzzer harness for the connection limiter and the gate (agent/conn.c):
 * a byte stream drives admissions and releases from a few peers and the
 * limits must hold at every step; the rest is fed to the gate as the head
 * of a TCP request, which may pass only with the exact token. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

pid_t agent_pid;

static struct conn_table fuzz_table;

/* Checks the limits and the counts against a shadow of the slots. */
static void
fuzz_check(const struct conn_table *t, const int shadow[CONN_KINDS][5])
{
	char peer[8];
	int k, p, total, all = 0;

	for (k = 0; k < CONN_KINDS; k++) {
		total = 0;
		for (p = 0; p < 5; p++) {
			snprintf(peer, sizeof peer, "p%d", p);
			if (conn_count(t, k, peer) != shadow[k][p] ||
			    (k != CONN_UNIX && shadow[k][p] > t->max_peer))
				abort();
			total += shadow[k][p];
		}
		if (total != conn_count(t, k, NULL) || total > t->cap[k])
			abort();
		all += total;
	}
	if (all > conn_capacity(t))
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int shadow[CONN_KINDS][5] = { { 0 } }, held[CONN_MAX], nheld = 0, i, j,
	    k, p;
	const char *why = NULL;
	char peer[8], *head;
	size_t n;

	if (size < 2)
		return 0;
	conn_table_init(&fuzz_table, (long)(data[0] | data[1] << 8) * 4);
	if (conn_capacity(&fuzz_table) > CONN_MAX - 2)
		abort();
	for (n = 2; n + 1 < size && data[n] != 0xff; n += 2) {
		k = (data[n + 1] & 3) % CONN_KINDS;
		p = (data[n + 1] >> 2) % 5;
		snprintf(peer, sizeof peer, "p%d", p);
		if (data[n] & 1 && nheld > 0) {
			j = data[n + 1] % nheld;
			i = held[j];
			shadow[fuzz_table.slots[i].kind]
			      [fuzz_table.slots[i].peer[1] - '0']--;
			conn_release(&fuzz_table, i);
			held[j] = held[nheld - 1];
			nheld--;
		} else {
			i = conn_admit(&fuzz_table, k, peer, &why);
			if (i >= 0) {
				held[nheld++] = i;
				shadow[k][p]++;
			} else if (why == NULL)
				abort();
		}
		fuzz_check(&fuzz_table, shadow);
	}
	if (n >= size)
		return 0;
	/* The gate: only the exact token passes. */
	n = size - n;
	head = malloc(n);
	memcpy(head, data + size - n, n);
	if (conn_gate_check(head, n, 0, "t0k3n") == CONN_GATE_PASS &&
	    memmem(head, n, "t0k3n", 5) == NULL)
		abort();
	if (conn_gate_check(head, n, 1, NULL) == CONN_GATE_PASS)
		abort();
	free(head);
	return 0;
}
