/* One request sent to many targets at once: a private event base, at most
 * FANOUT_INFLIGHT connections open, each target with its own deadline.
 * Results come back in the targets' order; a failure is one target's, the
 * others' answers still count. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "xmalloc.h"
#include "top.h"

#define FANOUT_INFLIGHT 64

struct fanout;

/* One target's request; owned by the fanout. */
struct fanout_slot {
	struct fanout *fo;
	struct aclient *ac;
	int index;
};

struct fanout {
	struct event_base *base;
	const struct endpoint *eps;
	int n, next, running;
	const char *token, *method, *path;
	json_t *body;
	int gil_ms, timeout_ms;
	struct fanout_slot *slots;
	struct fanout_result *out;
};

static void fanout_start_next(struct fanout *);

/* Frees a finished target's client outside its own callback and starts the
 * next target. */
static void
fanout_reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fanout_slot *s = arg;

	(void)fd;
	(void)what;
	aclient_free(s->ac);
	s->ac = NULL;
	s->fo->running--;
	fanout_start_next(s->fo);
}

static void
fanout_done_cb(void *arg, const struct aclient_reply *r)
{
	struct fanout_slot *s = arg;
	struct fanout_result *res = &s->fo->out[s->index];
	const struct timeval now = { 0, 0 };

	res->status = r->status;
	if (r->refused && s->fo->eps[s->index].kind == ENDPOINT_PID)
		client_no_agent(
		    s->fo->eps[s->index].pid, ECONNREFUSED, &res->cause);
	else if (r->cause != NULL)
		res->cause = xstrdup(r->cause);
	else
		res->reply = json_incref(r->body);
	event_base_once(s->fo->base, -1, EV_TIMEOUT, fanout_reap_cb, s, &now);
}

static void
fanout_start_next(struct fanout *fo)
{
	struct fanout_slot *s;

	while (fo->running < FANOUT_INFLIGHT && fo->next < fo->n) {
		s = &fo->slots[fo->next];
		s->fo = fo;
		s->index = fo->next++;
		s->ac = aclient_new(fo->base, &fo->eps[s->index], fo->token);
		fo->running++;
		aclient_request(s->ac, fo->method, fo->path, fo->body,
		    fo->gil_ms, fo->timeout_ms, fanout_done_cb, s);
	}
}

int
fanout_request(const struct endpoint *eps, int n, const char *token,
    const char *method, const char *path, json_t *body, int gil_ms,
    int timeout_ms, struct fanout_result *out)
{
	struct fanout fo = {
		.eps = eps,
		.n = n,
		.token = token,
		.method = method,
		.path = path,
		.body = body,
		.gil_ms = gil_ms,
		.timeout_ms = timeout_ms,
		.out = out,
	};
	struct sigaction ign = { .sa_handler = SIG_IGN }, old;
	int i, failed = 0;

	memset(out, 0, (size_t)n * sizeof *out);
	fo.base = event_base_new();
	if (fo.base == NULL) {
		for (i = 0; i < n; i++)
			out[i].cause = xstrdup("cannot start an event loop");
		return n;
	}
	fo.slots = xcalloc((size_t)n + 1, sizeof *fo.slots);
	/* A target that closes while we write must not kill us with
	 * SIGPIPE (bufferevents write(2), not send(MSG_NOSIGNAL)). */
	sigaction(SIGPIPE, &ign, &old);
	fanout_start_next(&fo);
	event_base_dispatch(fo.base);
	sigaction(SIGPIPE, &old, NULL);
	for (i = 0; i < n; i++) {
		aclient_free(fo.slots[i].ac);
		if (out[i].reply == NULL && out[i].cause == NULL)
			out[i].cause = xstrdup("no answer");
		failed += out[i].cause != NULL;
	}
	free(fo.slots);
	event_base_free(fo.base);
	return failed;
}

void
fanout_free(struct fanout_result *out, int n)
{
	int i;

	for (i = 0; out != NULL && i < n; i++) {
		json_decref(out[i].reply);
		free(out[i].cause);
	}
	free(out);
}
