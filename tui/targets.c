/* The -t text turned into endpoints: pids, host:port, comma lists, a host
 * file (@FILE, one target per line) and job:TARGET, every rank of that
 * target's job.
 *
 * A job's ranks are found two ways and merged: the members the target's
 * agent read from the job's own rendezvous store (by pid on this host,
 * else over TCP with the token), and, when the store does not name every
 * rank, the local agents whose identity names the same job (asked all at
 * once). Ranks come out in rank order; ranks the job has
 * but nobody found are named on stderr. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "proto.h"
#include "xmalloc.h"
#include "tui.h"

/* How long a rank's agent may take to say who it is. */
#define TARGETS_ID_MS 3000

struct targets {
	struct endpoint *v;
	int *rank; /* parallel to v: the rank, -1 unless from a job */
	int n;
};

/* Adds ep; one found again through a job or a host file is dropped, one
 * given twice by hand is kept (commands that want one target say so). */
static void
targets_add(struct targets *t, const struct endpoint *ep, int rank)
{
	int i;

	for (i = 0; rank >= 0 && i < t->n; i++) {
		if (strcmp(t->v[i].name, ep->name) == 0)
			return;
	}
	t->v = xrealloc(t->v, (size_t)(t->n + 1) * sizeof *t->v);
	t->rank = xrealloc(t->rank, (size_t)(t->n + 1) * sizeof *t->rank);
	t->v[t->n] = *ep;
	t->rank[t->n++] = rank;
}

/* Reads FILE: one target per line; blank lines and # comments skipped. */
static int
targets_file(struct targets *t, const char *path, int *usage, char **cause)
{
	FILE *f = fopen(path, "re");
	char line[1024], *s, *e, *why = NULL;
	struct endpoint ep;
	int lineno = 0, before = t->n;

	if (f == NULL) {
		cause_set(cause, "cannot read host file %s: %s", path,
		    strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		lineno++;
		s = line + strspn(line, " \t");
		if ((e = strchr(s, '#')) != NULL)
			*e = '\0';
		e = s + strlen(s);
		while (e > s &&
		    (e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t' ||
			e[-1] == '\r'))
			*--e = '\0';
		if (*s == '\0')
			continue;
		if (endpoint_parse(s, &ep, &why) != 0) {
			cause_set(
			    cause, "%s:%d: %s", path, lineno, cause_str(why));
			free(why);
			fclose(f);
			*usage = 1;
			return -1;
		}
		targets_add(t, &ep, -1);
	}
	fclose(f);
	if (t->n == before) {
		cause_set(cause, "host file %s names no target", path);
		*usage = 1;
		return -1;
	}
	return 0;
}

static int
targets_int(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_integer(v) ? (int)json_integer_value(v) : -1;
}

/* Adds the local agents of job; returns how many. */
static int
targets_local(struct targets *t, struct cmd_ctx *ctx, const char *job)
{
	struct fanout_result *res;
	struct endpoint *eps;
	pid_t *pids;
	int n, i, found = 0;
	const char *j;

	pids = procs_probed(&n);
	if (n == 0) {
		free(pids);
		return 0;
	}
	eps = xcalloc((size_t)n, sizeof *eps);
	res = xcalloc((size_t)n, sizeof *res);
	for (i = 0; i < n; i++) {
		eps[i].kind = ENDPOINT_PID;
		eps[i].pid = pids[i];
		snprintf(eps[i].name, sizeof eps[i].name, "%d", (int)pids[i]);
	}
	fanout_request(eps, n, NULL, "GET", PROTO_IDENTITY, NULL,
	    ctx->timeout_ms, TARGETS_ID_MS, res);
	for (i = 0; i < n; i++) {
		j = json_string_value(json_object_get(res[i].reply, "job"));
		if (j == NULL || strcmp(j, job) != 0 ||
		    targets_int(res[i].reply, "rank") < 0)
			continue;
		targets_add(t, &eps[i], targets_int(res[i].reply, "rank"));
		found++;
	}
	fanout_free(res, n);
	free(eps);
	free(pids);
	return found;
}

/* Adds the members the agent read from the job's store that are not
 * local: {"members": [{rank, host, addr, port, pid}]}. A member on this
 * host is reached by pid when its socket is in our network namespace,
 * else over TCP at addr:port. */
static void
targets_store(struct targets *t, json_t *members)
{
	char host[256], ep_text[300], *why = NULL;
	struct endpoint ep;
	json_t *m;
	size_t i;
	int k, have;

	if (gethostname(host, sizeof host - 1) != 0)
		host[0] = '\0';
	host[sizeof host - 1] = '\0';
	json_array_foreach(members, i, m)
	{
		int rank = targets_int(m, "rank");
		const char *h = json_string_value(json_object_get(m, "host"));

		for (have = 0, k = 0; k < t->n; k++)
			have |= t->rank[k] == rank;
		if (have || h == NULL)
			continue;
		/* Same host name is not enough: a rank in another network
		 * namespace (a container) has its socket out of our reach. */
		if (strcmp(h, host) == 0 && targets_int(m, "pid") > 0 &&
		    (targets_int(m, "port") <= 0 ||
			client_probe_pid(targets_int(m, "pid"), NULL) == 1))
			snprintf(ep_text, sizeof ep_text, "%d",
			    targets_int(m, "pid"));
		else if (targets_int(m, "port") > 0)
			snprintf(ep_text, sizeof ep_text, "%s:%d",
			    json_string_value(json_object_get(m, "addr")) ?: h,
			    targets_int(m, "port"));
		else
			continue;
		if (endpoint_parse(ep_text, &ep, &why) == 0)
			targets_add(t, &ep, rank);
		free(why);
		why = NULL;
	}
}

/* Sorts the job's ranks (the first of t from index from on) by rank. */
static void
targets_sort(struct targets *t, int from)
{
	int i, k, r;
	struct endpoint e;

	for (i = from + 1; i < t->n; i++) {
		for (k = i; k > from && t->rank[k - 1] > t->rank[k]; k--) {
			e = t->v[k];
			t->v[k] = t->v[k - 1];
			t->v[k - 1] = e;
			r = t->rank[k];
			t->rank[k] = t->rank[k - 1];
			t->rank[k - 1] = r;
		}
	}
}

/* Names on stderr the ranks below world_size that nobody found. */
static void
targets_missing(const struct targets *t, int from, const char *job, int world)
{
	char buf[512];
	json_t *miss = json_array();
	int r, k, have;

	for (r = 0; r < world && r < 1 << 20; r++) {
		for (have = 0, k = from; k < t->n; k++)
			have |= t->rank[k] == r;
		if (!have)
			json_array_append_new(miss, json_integer(r));
	}
	if (json_array_size(miss) > 0) {
		stack_merge_ranges(miss, buf, sizeof buf);
		fprintf(stderr,
		    "probing: job %s: no agent found for rank%s %s of %d\n",
		    job, json_array_size(miss) > 1 ? "s" : "", buf, world);
	}
	json_decref(miss);
}

/* Adds every rank of the job of the target text. */
static int
targets_job(struct targets *t, struct cmd_ctx *ctx, const char *text,
    int *usage, char **cause)
{
	struct endpoint ep;
	json_t *id = NULL, *members = NULL;
	const char *job;
	int status, from = t->n, world;
	char *why = NULL;

	if (endpoint_parse(text, &ep, &why) != 0) {
		cause_set(cause, "job:%s: %s", text, cause_str(why));
		free(why);
		*usage = 1;
		return -1;
	}
	if (client_request(&ep, ctx->token, "GET", PROTO_JOB, NULL,
		ctx->timeout_ms, 0, &id, &status, cause) != 0)
		return -1;
	job = json_string_value(json_object_get(id, "job"));
	if (job == NULL) {
		cause_set(cause,
		    "%s is not in a distributed job: no torch.distributed "
		    "group and none of TORCHELASTIC_RUN_ID, SLURM_JOB_ID, "
		    "MASTER_ADDR/MASTER_PORT in its environment",
		    ep.name);
		json_decref(id);
		return -1;
	}
	if (targets_int(id, "rank") >= 0 && ep.kind == ENDPOINT_TCP)
		targets_add(t, &ep, targets_int(id, "rank"));
	world = targets_int(id, "world_size");
	members = json_object_get(id, "members");
	/* The local agents are asked only when the store does not name
	 * every rank: one of them wedged with its GIL held (the very case
	 * `hang` is for) would make every lookup wait TARGETS_ID_MS. */
	if (world <= 0 || (int)json_array_size(members) < world)
		targets_local(t, ctx, job);
	targets_store(t, members);
	if (json_is_string(json_object_get(id, "store_error")))
		fprintf(stderr, "probing: job %s: %s\n", job,
		    json_string_value(json_object_get(id, "store_error")));
	targets_sort(t, from);
	if (t->n == from) {
		cause_set(cause, "job %s: no rank with an agent found", job);
		json_decref(id);
		return -1;
	}
	targets_missing(t, from, job, world);
	json_decref(id);
	return 0;
}

int
targets_parse(struct cmd_ctx *ctx, const char *text, struct endpoint **out,
    int **ranks, int *n, int *usage, char **cause)
{
	struct targets t = { 0 };
	struct endpoint ep;
	char *copy = xstrdup(text), *item, *save = NULL;
	int rc = 0;

	*usage = 0;
	for (item = strtok_r(copy, ",", &save); item != NULL && rc == 0;
	     item = strtok_r(NULL, ",", &save)) {
		if (strncmp(item, "job:", 4) == 0)
			rc = targets_job(&t, ctx, item + 4, usage, cause);
		else if (item[0] == '@' && item[1] != '\0')
			rc = targets_file(&t, item + 1, usage, cause);
		else if ((rc = endpoint_parse(item, &ep, cause)) == 0)
			targets_add(&t, &ep, -1);
		else
			*usage = 1;
	}
	free(copy);
	if (rc == 0 && t.n == 0) {
		cause_set(cause, "no target in '%s'", text);
		*usage = 1;
		rc = -1;
	}
	if (rc != 0) {
		free(t.v);
		free(t.rank);
		return -1;
	}
	*out = t.v;
	*ranks = t.rank;
	*n = t.n;
	return 0;
}

const char *
targets_label(const struct cmd_ctx *ctx, int i, char *buf, size_t size)
{
	if (ctx->target_ranks != NULL && ctx->target_ranks[i] >= 0)
		snprintf(buf, size, "rank %d (%s)", ctx->target_ranks[i],
		    ctx->targets[i].name);
	else
		snprintf(buf, size, "%s", ctx->targets[i].name);
	return buf;
}
