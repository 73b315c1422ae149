/* Fixed-size records in a ring, newest kept, each with a rising id. */
#ifndef PROBING_RING_H
#define PROBING_RING_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Every record starts with its id (assigned by ring_push). Writers and
 * readers may be on any thread; lock guards all fields. */
struct ring {
	pthread_mutex_t lock;
	size_t recsize;
	size_t cap;
	uint64_t next_id; /* id of the next record pushed, from 1 */
	uint64_t oldest;  /* id of the oldest record kept */
	char *buf;        /* cap records; record id lives at (id-1) % cap */
};

int ring_init(struct ring *, size_t recsize, size_t cap);
/* Copies rec in, overwriting the oldest when full; returns its id. */
uint64_t ring_push(struct ring *, void *rec);
/* Rewrites record id with rec when it is still kept; 0, or -1 when it
 * was overwritten. */
int ring_update(struct ring *, uint64_t id, void *rec);
/* Changes capacity keeping the newest records that fit; 0 or -1. */
int ring_resize(struct ring *, size_t cap);
/* Returns a malloc'd copy of the records with id > after, oldest first,
 * and their count in *n (NULL with *n = 0 when none or out of memory). */
void *ring_snapshot(struct ring *, uint64_t after, size_t *n);
/* The count of records ever pushed, of those overwritten and the
 * capacity, read together; all 0 for a ring never set up. */
void ring_counts(
    struct ring *, uint64_t *pushed, uint64_t *dropped, size_t *cap);

#endif
