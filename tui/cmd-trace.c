/* trace: the recent python.torch_trace rows as Chrome trace-event JSON
 * (the format Perfetto and chrome://tracing open): one process per target,
 * one track per thread, a slice per step with the module calls and the
 * optimizer step nested under it.
 *
 * Slices on one track must nest. Rows come from hooks whose clocks are
 * read a few microseconds apart (a backward that ends as the next one
 * starts), so when a slice starts inside another and ends after it, the
 * earlier one is cut to end where the later one starts (its own inner
 * slices ended before that); args.trimmed_us says by how much. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "proto.h"
#include "xmalloc.h"
#include "tui.h"

/* One slice. name points into the query result, which outlives it. */
struct cmd_trace_ev {
	double ts, end; /* microseconds since the epoch */
	long long tid, step, seq;
	const char *name;
	const char *stage; /* NULL for a step slice */
	double mb;
	double trimmed;
	const char *state; /* a collective's, else NULL */
	long long bytes;
};

static const char cmd_trace_sql[] =
    "SELECT step, seq, module, stage, allocated, duration, time, "
    "thread_id, rank FROM python.torch_trace";

static const char cmd_trace_coll_sql[] =
    "SELECT op, state, start, duration, thread_id, seq, bytes "
    "FROM python.collectives";

static int
cmd_trace_cmp(const void *a, const void *b)
{
	const struct cmd_trace_ev *x = a, *y = b;

	if (x->tid != y->tid)
		return x->tid < y->tid ? -1 : 1;
	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	if (x->end != y->end)
		return x->end > y->end ? -1 : 1;
	return (x->stage != NULL) - (y->stage != NULL);
}

/* Trims slices that cross the end of an enclosing one (see the top). */
static void
cmd_trace_nest(struct cmd_trace_ev *ev, size_t n)
{
	size_t *stack = xcalloc(n + 1, sizeof *stack), depth = 0, i;
	struct cmd_trace_ev *top;

	for (i = 0; i < n; i++) {
		if (i > 0 && ev[i].tid != ev[i - 1].tid)
			depth = 0;
		while (depth > 0) {
			top = &ev[stack[depth - 1]];
			if (ev[i].ts >= top->end) {
				depth--;
				continue;
			}
			if (ev[i].end > top->end) {
				top->trimmed += top->end - ev[i].ts;
				top->end = ev[i].ts;
				depth--;
				continue;
			}
			break;
		}
		stack[depth++] = i;
	}
	free(stack);
}

/* Adds a step slice per (thread, step) spanning that step's rows. */
static size_t
cmd_trace_steps(struct cmd_trace_ev *ev, size_t n)
{
	size_t i, j, m = n;

	for (i = 0; i < n; i++) {
		for (j = n; j < m; j++)
			if (ev[j].tid == ev[i].tid && ev[j].step == ev[i].step)
				break;
		if (j == m) {
			ev[m] = ev[i];
			ev[m].stage = NULL;
			ev[m].name = NULL;
			ev[m].trimmed = 0;
			m++;
			continue;
		}
		if (ev[i].ts < ev[j].ts)
			ev[j].ts = ev[i].ts;
		if (ev[i].end > ev[j].end)
			ev[j].end = ev[i].end;
		if (ev[i].mb > ev[j].mb)
			ev[j].mb = ev[i].mb;
	}
	return m;
}

/* Reads the collectives of result (rows of cmd_trace_coll_sql) into ev;
 * returns how many. A running one lasts until now. */
static size_t
cmd_trace_collectives(struct cmd_trace_ev *ev, json_t *result)
{
	json_t *rows = json_object_get(result, "rows"), *row;
	size_t i;
	double now = clock_wall(), dur;

	json_array_foreach(rows, i, row)
	{
		memset(&ev[i], 0, sizeof ev[i]);
		ev[i].name = json_string_value(json_array_get(row, 0));
		ev[i].state = json_string_value(json_array_get(row, 1));
		ev[i].ts = json_number_value(json_array_get(row, 2)) * 1e6;
		dur = json_number_value(json_array_get(row, 3));
		if (ev[i].state != NULL && strcmp(ev[i].state, "running") == 0)
			dur = now - ev[i].ts / 1e6;
		ev[i].end = ev[i].ts + (dur > 0 ? dur : 0) * 1e6;
		ev[i].tid = json_integer_value(json_array_get(row, 4));
		ev[i].seq = json_integer_value(json_array_get(row, 5));
		ev[i].bytes = json_integer_value(json_array_get(row, 6));
		ev[i].stage = "collective";
		ev[i].step = -1;
		if (ev[i].name == NULL)
			ev[i].name = "?";
		if (ev[i].state == NULL)
			ev[i].state = "?";
	}
	return json_array_size(rows);
}

/* The events of one target appended to out; returns how many rows.
 * coll is its python.collectives rows or NULL; target names a host:port
 * target in the process name, or is NULL; rank is -1 when unknown. */
static size_t
cmd_trace_target(json_t *out, json_t *result, json_t *coll, long long pid,
    const char *target, long long rank)
{
	json_t *rows = json_object_get(result, "rows"), *row, *e;
	size_t n = json_array_size(rows), m, i;
	size_t ncoll = json_array_size(json_object_get(coll, "rows"));
	struct cmd_trace_ev *ev = xcalloc(2 * n + ncoll + 1, sizeof *ev);
	char label[512], step[64];
	long long last_tid = -1;

	json_array_foreach(rows, i, row)
	{
		double dur = json_number_value(json_array_get(row, 5));
		double t = json_number_value(json_array_get(row, 6));

		ev[i].step = json_integer_value(json_array_get(row, 0));
		ev[i].seq = json_integer_value(json_array_get(row, 1));
		ev[i].name = json_string_value(json_array_get(row, 2));
		ev[i].stage = json_string_value(json_array_get(row, 3));
		ev[i].mb = json_number_value(json_array_get(row, 4));
		ev[i].tid = json_integer_value(json_array_get(row, 7));
		ev[i].end = t * 1e6;
		ev[i].ts = (t - dur) * 1e6;
		if (ev[i].name == NULL)
			ev[i].name = "?";
		if (ev[i].stage == NULL)
			ev[i].stage = "?";
		if (rank < 0 && i == 0 &&
		    json_is_integer(json_array_get(row, 8)))
			rank = json_integer_value(json_array_get(row, 8));
	}
	if (rank < 0)
		rank = 0;
	if (target != NULL)
		snprintf(label, sizeof label, "rank %lld (pid %lld, %s)", rank,
		    pid, target);
	else
		snprintf(
		    label, sizeof label, "rank %lld (pid %lld)", rank, pid);
	json_array_append_new(out,
	    json_pack("{s:s, s:s, s:I, s:I, s:{s:s}}", "ph", "M", "name",
		"process_name", "pid", pid, "tid", (json_int_t)0, "args",
		"name", label));
	json_array_append_new(out,
	    json_pack("{s:s, s:s, s:I, s:I, s:{s:I}}", "ph", "M", "name",
		"process_sort_index", "pid", pid, "tid", (json_int_t)0, "args",
		"sort_index", (json_int_t)rank));
	m = cmd_trace_steps(ev, n);
	if (coll != NULL)
		m += cmd_trace_collectives(ev + m, coll);
	qsort(ev, m, sizeof *ev, cmd_trace_cmp);
	cmd_trace_nest(ev, m);
	for (i = 0; i < m; i++) {
		if (ev[i].tid != last_tid) {
			snprintf(label, sizeof label, "thread %lld", ev[i].tid);
			json_array_append_new(out,
			    json_pack("{s:s, s:s, s:I, s:I, s:{s:s}}", "ph",
				"M", "name", "thread_name", "pid", pid, "tid",
				ev[i].tid, "args", "name", label));
			last_tid = ev[i].tid;
		}
		if (ev[i].stage == NULL) {
			snprintf(step, sizeof step, "step %lld", ev[i].step);
			e = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:f, "
				      "s:{s:I, s:f}}",
			    "ph", "X", "name", step, "cat", "train_step", "pid",
			    pid, "tid", ev[i].tid, "ts", ev[i].ts, "dur",
			    ev[i].end - ev[i].ts, "args", "step", ev[i].step,
			    "allocated_mb", ev[i].mb);
		} else if (ev[i].state != NULL) {
			e = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:f, "
				      "s:{s:I, s:s, s:I}}",
			    "ph", "X", "name", ev[i].name, "cat", "collective",
			    "pid", pid, "tid", ev[i].tid, "ts", ev[i].ts, "dur",
			    ev[i].end - ev[i].ts, "args", "seq", ev[i].seq,
			    "state", ev[i].state, "bytes", ev[i].bytes);
		} else {
			e = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:f, "
				      "s:{s:I, s:I, s:f}}",
			    "ph", "X", "name", ev[i].name, "cat", ev[i].stage,
			    "pid", pid, "tid", ev[i].tid, "ts", ev[i].ts, "dur",
			    ev[i].end - ev[i].ts, "args", "step", ev[i].step,
			    "seq", ev[i].seq, "allocated_mb", ev[i].mb);
			if (ev[i].trimmed > 0)
				json_object_set_new(json_object_get(e, "args"),
				    "trimmed_us", json_real(ev[i].trimmed));
		}
		json_array_append_new(out, e);
	}
	free(ev);
	return n;
}

/* The pid and rank a target reports in /identity (rank -1 when it does
 * not know; pid targets keep their pid). */
static void
cmd_trace_who(struct cmd_ctx *ctx, const struct endpoint *ep, int index,
    long long *pid, long long *rank)
{
	json_t *r, *v;
	char *cause = NULL;
	int status;

	*pid = ep->kind == ENDPOINT_PID ? (long long)ep->pid : 0;
	*rank = -1;
	if (client_request(ep, ctx->token, "GET", PROTO_IDENTITY, NULL,
		ctx->timeout_ms, 0, &r, &status, &cause) == 0) {
		v = json_object_get(r, "pid");
		if (*pid == 0 && json_is_integer(v))
			*pid = json_integer_value(v);
		v = json_object_get(r, "rank");
		if (json_is_integer(v))
			*rank = json_integer_value(v);
		json_decref(r);
	}
	free(cause);
	if (*pid <= 0)
		*pid = 1000000 + index;
}

/* Fails early, before asking any target, when path cannot be written;
 * leaves an existing file as it is and no new one behind. */
static int
cmd_trace_writable(const char *path)
{
	struct stat sb;
	int existed = stat(path, &sb) == 0;
	FILE *f = fopen(path, "a");

	if (f == NULL) {
		fprintf(stderr, "probing: cannot write %s: %s\n", path,
		    strerror(errno));
		return -1;
	}
	fclose(f);
	if (!existed)
		unlink(path);
	return 0;
}

static int
cmd_trace_write(const char *path, json_t *doc)
{
	FILE *f = path != NULL ? fopen(path, "w") : stdout;
	int rc;

	if (f == NULL) {
		fprintf(stderr, "probing: cannot write %s: %s\n", path,
		    strerror(errno));
		return 1;
	}
	rc = json_dumpf(doc, f, JSON_COMPACT);
	fputc('\n', f);
	if (fflush(f) != 0 || ferror(f))
		rc = -1;
	if (path != NULL && fclose(f) != 0)
		rc = -1;
	if (rc != 0) {
		fprintf(stderr, "probing: cannot write %s: %s\n",
		    path != NULL ? path : "the output", strerror(errno));
		return 1;
	}
	return 0;
}

/* The target's python.collectives rows since the first torch_trace row
 * of result (all of them without --steps), or NULL: an agent without the
 * table, or a failed query, just gives a trace without collectives. */
static json_t *
cmd_trace_coll(
    struct cmd_ctx *ctx, const struct endpoint *ep, json_t *result, long steps)
{
	json_t *first = json_array_get(json_object_get(result, "rows"), 0);
	json_t *body, *r = NULL;
	char *sql = NULL, *cause = NULL;
	int status;

	if (steps > 0 && first != NULL)
		xasprintf(&sql, "%s WHERE start >= %.6f ORDER BY id",
		    cmd_trace_coll_sql,
		    json_number_value(json_array_get(first, 6)) -
			json_number_value(json_array_get(first, 5)));
	else if (steps > 0)
		return NULL;
	else
		xasprintf(&sql, "%s ORDER BY id", cmd_trace_coll_sql);
	body = json_pack("{s:s}", "sql", sql);
	free(sql);
	if (client_request(ep, ctx->token, "POST", PROTO_QUERY, body,
		ctx->timeout_ms, 0, &r, &status, &cause) != 0)
		r = NULL;
	free(cause);
	json_decref(body);
	return r;
}

/* What cmd_trace_one adds to: the events, how many rows they hold, and
 * --steps. */
struct cmd_trace_acc {
	json_t *events;
	size_t rows;
	long steps;
};

/* Adds one target's rows (and its collectives) to the trace as its own
 * process. */
static int
cmd_trace_one(
    struct cmd_ctx *ctx, const struct endpoint *ep, json_t *r, void *arg)
{
	struct cmd_trace_acc *acc = arg;
	int i = (int)(ep - ctx->targets);
	long long pid, rank;
	json_t *coll = cmd_trace_coll(ctx, ep, r, acc->steps);

	if (json_array_size(json_object_get(r, "rows")) == 0 &&
	    json_array_size(json_object_get(coll, "rows")) == 0)
		fprintf(stderr,
		    "probing: %s: no torch_trace rows (no torch module ran "
		    "yet, or probing.torch.enabled is off); the trace is "
		    "empty\n",
		    ep->name);
	else {
		cmd_trace_who(ctx, ep, i, &pid, &rank);
		acc->rows += cmd_trace_target(acc->events, r, coll, pid,
		    ep->kind == ENDPOINT_PID ? NULL : ep->name, rank);
	}
	json_decref(coll);
	return 0;
}

static const struct option cmd_trace_longopts[] = {
	{ "steps", required_argument, NULL, 'S' },
	{ "output", required_argument, NULL, 'o' },
	{ NULL, 0, NULL, 0 },
};

static int
cmd_trace_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	struct cmd_trace_acc acc = { json_array(), 0, 0 };
	const char *path = NULL;
	long steps = 0;
	char *end, *sql = NULL;
	json_t *events = acc.events, *doc, *body;
	int c, rc, failed;

	while ((c = cmd_getopt(ctx, argc, argv)) != -1) {
		switch (c) {
		case 'o':
			path = optarg;
			break;
		case 'S':
			steps = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || steps < 1 ||
			    steps > 1000000000L) {
				json_decref(events);
				return cmd_usage(ctx->entry,
				    "--steps needs a positive number of "
				    "steps, not '%s'",
				    optarg);
			}
			break;
		default:
			json_decref(events);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		json_decref(events);
		return cmd_usage(ctx->entry, "too many arguments");
	}
	if (path != NULL && cmd_trace_writable(path) != 0) {
		json_decref(events);
		return 1;
	}
	if (steps > 0)
		xasprintf(&sql,
		    "%s WHERE step > (SELECT MAX(step) FROM "
		    "python.torch_trace) - %ld ORDER BY id",
		    cmd_trace_sql, steps);
	else
		xasprintf(&sql, "%s ORDER BY id", cmd_trace_sql);
	body = json_pack("{s:s}", "sql", sql);
	free(sql);
	acc.steps = steps;
	failed = cmd_each_target(ctx, CMD_EACH_FANOUT, "POST", PROTO_QUERY,
	    body, cmd_trace_one, &acc);
	json_decref(body);
	if (failed == ctx->ntargets) {
		json_decref(events);
		return 1;
	}
	doc = json_pack("{s:o, s:s, s:{s:s, s:s, s:I}}", "traceEvents", events,
	    "displayTimeUnit", "ms", "otherData", "tool", "probing", "version",
	    PROBING_VERSION, "rows", (json_int_t)acc.rows);
	rc = cmd_trace_write(path, doc);
	json_decref(doc);
	return rc != 0 ? rc : failed ? 1 : 0;
}

const struct cmd_entry cmd_trace_entry = {
	.name = "trace",
	.args = "[-o FILE] [--steps N]",
	.help = "write the recent torch_trace rows as a Chrome trace (open "
		"it in Perfetto)",
	.detail = "  -o, --output FILE  write there instead of stdout\n"
		  "  --steps N          only the last N steps (default: every "
		  "row the ring holds)\n"
		  "one process per target (named by rank and pid), one track "
		  "per thread, a slice per\n"
		  "step with forward, backward and optimizer calls nested "
		  "under it; open the file at\n"
		  "https://ui.perfetto.dev or chrome://tracing\n",
	.opts = "o:",
	.longopts = cmd_trace_longopts,
	.target = CMD_TARGET_REQUIRED,
	.exec = cmd_trace_exec,
};
