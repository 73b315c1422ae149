/* Fixed-size records in a ring, newest kept, each with a rising id. */
#include <stdlib.h>
#include <string.h>

#include "ring.h"

int
ring_init(struct ring *r, size_t recsize, size_t cap)
{
	pthread_mutex_init(&r->lock, NULL);
	r->recsize = recsize;
	r->cap = cap;
	r->next_id = 1;
	r->oldest = 1;
	r->buf = calloc(cap, recsize);
	return r->buf != NULL ? 0 : -1;
}

uint64_t
ring_push(struct ring *r, void *rec)
{
	uint64_t id;

	pthread_mutex_lock(&r->lock);
	id = r->next_id++;
	memcpy(rec, &id, sizeof id);
	memcpy(r->buf + ((id - 1) % r->cap) * r->recsize, rec, r->recsize);
	if (id - r->oldest >= r->cap)
		r->oldest = id - r->cap + 1;
	pthread_mutex_unlock(&r->lock);
	return id;
}

/* Copies records [first, last] (ids) into dst, oldest first. */
static void
ring_copy(const struct ring *r, uint64_t first, uint64_t last, char *dst)
{
	uint64_t id;

	for (id = first; id <= last; id++) {
		memcpy(
		    dst, r->buf + ((id - 1) % r->cap) * r->recsize, r->recsize);
		dst += r->recsize;
	}
}

int
ring_resize(struct ring *r, size_t cap)
{
	uint64_t last, first;
	char *buf;

	buf = calloc(cap, r->recsize);
	if (buf == NULL)
		return -1;
	pthread_mutex_lock(&r->lock);
	last = r->next_id - 1;
	if (last >= cap && last - cap + 1 > r->oldest)
		r->oldest = last - cap + 1;
	/* Place each kept record where its id maps in the new ring. */
	for (first = r->oldest; first <= last; first++)
		memcpy(buf + ((first - 1) % cap) * r->recsize,
		    r->buf + ((first - 1) % r->cap) * r->recsize, r->recsize);
	free(r->buf);
	r->buf = buf;
	r->cap = cap;
	pthread_mutex_unlock(&r->lock);
	return 0;
}

void *
ring_snapshot(struct ring *r, uint64_t after, size_t *n)
{
	uint64_t last, first;
	char *out = NULL;

	pthread_mutex_lock(&r->lock);
	last = r->next_id - 1;
	first = r->oldest;
	if (after >= first)
		first = after + 1;
	*n = first <= last ? (size_t)(last - first + 1) : 0;
	if (*n > 0 && (out = malloc(*n * r->recsize)) != NULL)
		ring_copy(r, first, last, out);
	else
		*n = 0;
	pthread_mutex_unlock(&r->lock);
	return out;
}

void
ring_counts(struct ring *r, uint64_t *pushed, uint64_t *dropped, size_t *cap)
{
	*pushed = *dropped = 0;
	*cap = 0;
	if (r->buf == NULL)
		return;
	pthread_mutex_lock(&r->lock);
	*pushed = r->next_id - 1;
	*dropped = r->oldest - 1;
	*cap = r->cap;
	pthread_mutex_unlock(&r->lock);
}

int
ring_update(struct ring *r, uint64_t id, void *rec)
{
	int rc = -1;

	pthread_mutex_lock(&r->lock);
	if (r->cap > 0 && id >= r->oldest && id < r->next_id) {
		memcpy(rec, &id, sizeof id);
		memcpy(
		    r->buf + ((id - 1) % r->cap) * r->recsize, rec, r->recsize);
		rc = 0;
	}
	pthread_mutex_unlock(&r->lock);
	return rc;
}
