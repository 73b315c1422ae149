/* hang: says in words why a job is stuck, from every rank's collectives,
 * stacks and steps.
 *
 * Two samples, --interval apart. A rank waits when its latest Python
 * collective is the same running call in both and has run --min-wait
 * seconds, or when a thread with
 * Python frames sits in torch.distributed's or c10d/gloo/NCCL code in
 * both and its step did not move (DDP's reducer calls the process group
 * from C++, unseen by the wrappers). The collective most waiting ranks
 * are in is named (op, seq, group, call site); every rank that answered
 * but is not in it is named with its innermost Python frame and thread
 * state; ranks that did not answer or were not found are listed. Exit
 * status 1 when a hang is named, 0 when nothing looks hung. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "proto.h"
#include "xmalloc.h"
#include "tui.h"

static const char cmd_hang_sql[] =
    "SELECT p.rank, p.pid, p.world_size, "
    "(SELECT MAX(step) FROM python.torch_trace) AS step, c.seq, c.op, "
    "c.group_name, c.group_size, c.state, c.start, c.site, "
    "c.thread_id AS coll_tid FROM python.process p LEFT JOIN "
    "(SELECT * FROM python.collectives ORDER BY start DESC LIMIT 1) c";

/* What one sample says of one target; owns its JSON. */
struct cmd_hang_sample {
	json_t *info;    /* cmd_hang_sql's row as an object, NULL if none */
	json_t *threads; /* stack_threads' shape */
	char *cause;     /* why the target did not answer */
};

struct cmd_hang_rank {
	struct cmd_hang_sample s[2];
	int rank;
	int waiting, native;
};

/* The row of a one-row result as an object. */
static json_t *
cmd_hang_row(json_t *result)
{
	json_t *cols = json_object_get(result, "columns");
	json_t *row = json_array_get(json_object_get(result, "rows"), 0);
	json_t *obj, *c;
	size_t i;

	if (row == NULL)
		return NULL;
	obj = json_object();
	json_array_foreach(cols, i, c)
	    json_object_set(obj, json_string_value(c), json_array_get(row, i));
	return obj;
}

static void
cmd_hang_sample(struct cmd_ctx *ctx, struct cmd_hang_rank *r, int k)
{
	struct fanout_result *a = xcalloc((size_t)ctx->ntargets, sizeof *a);
	struct fanout_result *b = xcalloc((size_t)ctx->ntargets, sizeof *b);
	json_t *q1 = json_pack("{s:s}", "sql", cmd_hang_sql);
	json_t *q2 = json_pack("{s:s}", "sql", stack_sql);
	int i, wait = ctx->timeout_ms + 5000;

	fanout_request(ctx->targets, ctx->ntargets, ctx->token, "POST",
	    PROTO_QUERY, q1, ctx->timeout_ms, wait, a);
	fanout_request(ctx->targets, ctx->ntargets, ctx->token, "POST",
	    PROTO_QUERY, q2, ctx->timeout_ms, wait, b);
	for (i = 0; i < ctx->ntargets; i++) {
		struct cmd_hang_sample *s = &r[i].s[k];

		if (a[i].cause != NULL || b[i].cause != NULL) {
			s->cause = xstrdup(a[i].cause ?: b[i].cause);
			continue;
		}
		s->info = cmd_hang_row(a[i].reply);
		s->threads = stack_threads(b[i].reply);
	}
	fanout_free(a, ctx->ntargets);
	fanout_free(b, ctx->ntargets);
	json_decref(q1);
	json_decref(q2);
}

static json_int_t
cmd_hang_int(json_t *obj, const char *key, json_int_t def)
{
	json_t *v = json_object_get(obj, key);

	return json_is_integer(v) ? json_integer_value(v) : def;
}

static const char *
cmd_hang_str(json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

/* Whether a frame is communication code: torch.distributed's Python, or
 * native c10d, gloo or NCCL. */
static int
cmd_hang_comm_frame(json_t *f)
{
	const char *func = cmd_hang_str(f, "func") ?: "";
	const char *file = cmd_hang_str(f, "file") ?: "";
	const char *type = cmd_hang_str(f, "type") ?: "";

	if (strcmp(type, "Python") == 0)
		return strstr(file, "torch/distributed/") != NULL;
	return strstr(func, "c10d::") != NULL ||
	    strstr(func, "gloo::") != NULL || strstr(func, "nccl") != NULL;
}

/* Whether thread t has Python frames and is in communication code. */
static int
cmd_hang_thread_in_comm(json_t *t)
{
	json_t *f;
	size_t k;
	int python = 0, comm = 0;

	json_array_foreach(json_object_get(t, "frames"), k, f)
	{
		python |= strcmp(cmd_hang_str(f, "type") ?: "", "Python") == 0;
		comm |= cmd_hang_comm_frame(f);
	}
	return python && comm;
}

/* Whether a thread with Python frames is in communication code. */
static int
cmd_hang_in_comm(json_t *threads)
{
	json_t *t;
	size_t i;

	json_array_foreach(threads, i, t)
	{
		if (cmd_hang_thread_in_comm(t))
			return 1;
	}
	return 0;
}

/* From the stack of a thread in communication code: the outermost
 * torch.distributed function it is in (op) and the frame that called it
 * (site, file:line), into w. */
static void
cmd_hang_stack_op(json_t *threads, json_t *w)
{
	json_t *t, *f, *op = NULL;
	const char *file;
	char site[1024];
	size_t i, k;

	json_array_foreach(threads, i, t)
	{
		if (!cmd_hang_thread_in_comm(t))
			continue;
		json_array_foreach(json_object_get(t, "frames"), k, f)
		{
			if (strcmp(cmd_hang_str(f, "type") ?: "", "Python") !=
			    0)
				continue;
			file = cmd_hang_str(f, "file") ?: "";
			if (strstr(file, "torch/distributed/") != NULL) {
				op = f;
				continue;
			}
			if (op == NULL)
				continue;
			snprintf(site, sizeof site, "%s:%lld", file,
			    (long long)cmd_hang_int(f, "lineno", 0));
			json_object_set(w, "op", json_object_get(op, "func"));
			json_object_set_new(w, "site", json_string(site));
			return;
		}
	}
}

/* Decides whether r waits, from its two samples: the same Python
 * collective running in both and for at least min_wait seconds, or a
 * thread in communication code in both with no step and no new Python
 * collective between. */
static void
cmd_hang_classify(struct cmd_hang_rank *r, double min_wait)
{
	json_t *a = r->s[0].info, *b = r->s[1].info;
	const char *st = cmd_hang_str(b, "state");

	r->rank = (int)cmd_hang_int(b, "rank", cmd_hang_int(b, "pid", -1));
	if (a == NULL || b == NULL)
		return;
	if (st != NULL && strcmp(st, "running") == 0 &&
	    cmd_hang_int(a, "seq", -1) == cmd_hang_int(b, "seq", -2) &&
	    json_equal(
		json_object_get(a, "start"), json_object_get(b, "start")) &&
	    clock_wall() - json_number_value(json_object_get(b, "start")) >=
		min_wait) {
		r->waiting = 1;
		return;
	}
	/* No step and no new Python collective between the samples. */
	if (cmd_hang_in_comm(r->s[0].threads) &&
	    cmd_hang_in_comm(r->s[1].threads) &&
	    cmd_hang_int(a, "step", -1) == cmd_hang_int(b, "step", -1) &&
	    json_equal(json_object_get(a, "start") ?: json_null(),
		json_object_get(b, "start") ?: json_null())) {
		r->waiting = 1;
		/* the stacks say it waits: its running Python collective,
		 * when it has one, is what it waits in */
		r->native = st == NULL || strcmp(st, "running") != 0;
	}
}

/* The thread to show for r: the one that issued collectives, else the
 * first (the main thread). */
static json_t *
cmd_hang_thread(const struct cmd_hang_rank *r)
{
	json_t *threads = r->s[1].threads, *t;
	json_int_t tid = cmd_hang_int(r->s[1].info, "coll_tid", 0);
	size_t i;

	json_array_foreach(threads, i, t)
	{
		if (tid != 0 && cmd_hang_int(t, "thread_id", 0) == tid)
			return t;
	}
	return json_array_get(threads, 0);
}

/* {func, file, lineno, state, thread_id} of where r is. */
static json_t *
cmd_hang_where(const struct cmd_hang_rank *r)
{
	json_t *t = cmd_hang_thread(r), *f, *w;
	size_t i;

	w = json_pack("{s:O, s:O}", "thread_id",
	    json_object_get(t, "thread_id") ?: json_null(), "state",
	    json_object_get(t, "state") ?: json_null());
	json_array_foreach(json_object_get(t, "frames"), i, f)
	{
		if (strcmp(cmd_hang_str(f, "type") ?: "", "Python") != 0)
			continue;
		json_object_set(w, "func", json_object_get(f, "func"));
		json_object_set(w, "file", json_object_get(f, "file"));
		json_object_set(w, "lineno", json_object_get(f, "lineno"));
		break;
	}
	return w;
}

/* The collective most waiting ranks are in, by (group, seq, op). */
static json_t *
cmd_hang_collective(struct cmd_hang_rank *r, int n)
{
	json_t *best = NULL, *c;
	int i, k, count, most = 0;

	for (i = 0; i < n; i++) {
		if (!r[i].waiting || r[i].native)
			continue;
		c = r[i].s[1].info;
		for (count = 0, k = 0; k < n; k++)
			count += r[k].waiting && !r[k].native &&
			    cmd_hang_int(r[k].s[1].info, "seq", -1) ==
				cmd_hang_int(c, "seq", -2) &&
			    json_equal(json_object_get(r[k].s[1].info, "op"),
				json_object_get(c, "op"));
		if (count > most) {
			most = count;
			best = c;
		}
	}
	return best;
}

/* The diagnosis as JSON. */
static json_t *
cmd_hang_diagnose(struct cmd_ctx *ctx, struct cmd_hang_rank *r, double min_wait)
{
	json_t *out = json_object(), *waiting = json_array();
	json_t *odd = json_array(), *gone = json_array(), *missing;
	json_t *coll, *w;
	int i, k, world = -1, have, answered = 0;
	double now = clock_wall();

	for (i = 0; i < ctx->ntargets; i++) {
		cmd_hang_classify(&r[i], min_wait);
		if (r[i].s[1].info != NULL)
			world = (int)cmd_hang_int(
			    r[i].s[1].info, "world_size", world);
	}
	coll = cmd_hang_collective(r, ctx->ntargets);
	for (i = 0; i < ctx->ntargets; i++) {
		if (r[i].s[1].cause != NULL || r[i].s[1].info == NULL) {
			w = json_pack("{s:s, s:s}", "target",
			    ctx->targets[i].name, "error",
			    r[i].s[1].cause ?: "no answer");
			/* its rank, when the job's store or identity named it */
			if (ctx->target_ranks != NULL &&
			    ctx->target_ranks[i] >= 0)
				json_object_set_new(w, "rank",
				    json_integer(ctx->target_ranks[i]));
			json_array_append_new(gone, w);
			continue;
		}
		answered++;
		if (r[i].waiting &&
		    (coll == NULL || r[i].native ||
			cmd_hang_int(r[i].s[1].info, "seq", -1) ==
			    cmd_hang_int(coll, "seq", -2))) {
			json_array_append_new(waiting, json_integer(r[i].rank));
			continue;
		}
		w = cmd_hang_where(&r[i]);
		json_object_set_new(w, "rank", json_integer(r[i].rank));
		json_object_set_new(
		    w, "target", json_string(ctx->targets[i].name));
		json_object_set_new(w, "stepping",
		    json_boolean(cmd_hang_int(r[i].s[1].info, "step", -1) >
			cmd_hang_int(r[i].s[0].info, "step", -1)));
		json_array_append_new(odd, w);
	}
	missing = json_array();
	for (k = 0; k < world && k < 1 << 20; k++) {
		for (have = 0, i = 0; i < ctx->ntargets; i++)
			have |= (r[i].s[1].info != NULL && r[i].rank == k) ||
			    (ctx->target_ranks != NULL &&
				ctx->target_ranks[i] == k);
		if (!have)
			json_array_append_new(missing, json_integer(k));
	}
	json_object_set_new(out, "hung",
	    json_boolean(json_array_size(waiting) > 0 &&
		(json_array_size(odd) > 0 || json_array_size(gone) > 0 ||
		    json_array_size(missing) > 0 ||
		    (size_t)answered == json_array_size(waiting))));
	for (i = 0; coll == NULL && i < ctx->ntargets; i++) {
		json_t *c;

		if (!r[i].waiting || !r[i].native)
			continue;
		c = json_object();
		cmd_hang_stack_op(r[i].s[1].threads, c);
		if (json_object_get(c, "op") != NULL) {
			json_object_set_new(c, "from", json_string("stacks"));
			json_object_set_new(out, "collective", c);
		} else
			json_decref(c);
		break;
	}
	if (coll != NULL) {
		json_t *c = json_pack("{s:O, s:O, s:O, s:O, s:O}", "op",
		    json_object_get(coll, "op"), "seq",
		    json_object_get(coll, "seq"), "group",
		    json_object_get(coll, "group_name"), "group_size",
		    json_object_get(coll, "group_size"), "site",
		    json_object_get(coll, "site"));

		if (json_is_number(json_object_get(coll, "start")))
			json_object_set_new(c, "waited",
			    json_real(now -
				json_number_value(
				    json_object_get(coll, "start"))));
		json_object_set_new(out, "collective", c);
	}
	json_object_set_new(out, "waiting", waiting);
	json_object_set_new(out, "not_waiting", odd);
	json_object_set_new(out, "no_answer", gone);
	json_object_set_new(out, "not_found", missing);
	return out;
}

static void
cmd_hang_print(FILE *f, json_t *d)
{
	json_t *c = json_object_get(d, "collective"), *w, *v;
	char ranks[512], who[560];
	size_t i;

	stack_merge_ranges(json_object_get(d, "waiting"), ranks, sizeof ranks);
	snprintf(who, sizeof who, "%s %s %s",
	    json_array_size(json_object_get(d, "waiting")) > 1 ? "ranks"
							       : "rank",
	    ranks,
	    json_array_size(json_object_get(d, "waiting")) > 1 ? "wait"
							       : "waits");
	if (!json_is_true(json_object_get(d, "hung"))) {
		fprintf(f,
		    "no hang: no rank has waited in a collective while "
		    "another was elsewhere\n");
	} else if (c != NULL && json_object_get(c, "from") != NULL) {
		fprintf(f,
		    "hang: %s in %s called at %s (seen in "
		    "their stacks: the call began before probing came)\n",
		    who, cmd_hang_str(c, "op") ?: "?",
		    cmd_hang_str(c, "site") ?: "?");
	} else if (c != NULL) {
		fprintf(f,
		    "hang: %s in %s (group %s of %lld, "
		    "seq %lld) called at %s",
		    who, cmd_hang_str(c, "op") ?: "?",
		    cmd_hang_str(c, "group") ?: "?",
		    (long long)cmd_hang_int(c, "group_size", -1),
		    (long long)cmd_hang_int(c, "seq", -1),
		    cmd_hang_str(c, "site") ?: "?");
		v = json_object_get(c, "waited");
		if (json_is_number(v))
			fprintf(f, ", for %.1f s", json_number_value(v));
		fputc('\n', f);
	} else {
		fprintf(f,
		    "hang: %s in torch.distributed / "
		    "c10d code (a collective issued from C++, e.g. "
		    "DDP's reducer)\n",
		    who);
	}
	json_array_foreach(json_object_get(d, "not_waiting"), i, w)
	{
		fprintf(f, "  rank %lld (%s) is not in it: ",
		    (long long)cmd_hang_int(w, "rank", -1),
		    cmd_hang_str(w, "target"));
		if (cmd_hang_str(w, "func") != NULL)
			fprintf(f, "%s (%s:%lld)", cmd_hang_str(w, "func"),
			    cmd_hang_str(w, "file") ?: "?",
			    (long long)cmd_hang_int(w, "lineno", 0));
		else
			fprintf(f, "no Python frame");
		fprintf(f, ", thread %lld %s, %s\n",
		    (long long)cmd_hang_int(w, "thread_id", 0),
		    cmd_hang_str(w, "state") ?: "",
		    json_is_true(json_object_get(w, "stepping"))
			? "still stepping"
			: "not stepping");
	}
	json_array_foreach(json_object_get(d, "no_answer"), i, w)
	{
		if (json_is_integer(json_object_get(w, "rank")))
			fprintf(f, "  rank %d (%s) did not answer: %s\n",
			    (int)json_integer_value(json_object_get(w, "rank")),
			    cmd_hang_str(w, "target"),
			    cmd_hang_str(w, "error"));
		else
			fprintf(f, "  %s did not answer: %s\n",
			    cmd_hang_str(w, "target"),
			    cmd_hang_str(w, "error"));
	}
	if (json_array_size(json_object_get(d, "not_found")) > 0) {
		stack_merge_ranges(
		    json_object_get(d, "not_found"), ranks, sizeof ranks);
		fprintf(f, "  no agent found for rank%s %s\n",
		    json_array_size(json_object_get(d, "not_found")) > 1 ? "s"
									 : "",
		    ranks);
	}
}

static const struct option cmd_hang_longopts[] = {
	{ "interval", required_argument, NULL, 'i' },
	{ "min-wait", required_argument, NULL, 'w' },
	{ "format", required_argument, NULL, 'f' },
	{ NULL, 0, NULL, 0 },
};

static int
cmd_hang_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	static const char *const fmts[] = { "text", "json", NULL };
	struct cmd_hang_rank *r;
	double interval = 1.0, min_wait = 5.0;
	char *end;
	int c, fmt = 0, i, k, hung;
	json_t *d;

	while ((c = cmd_getopt(ctx, argc, argv)) != -1) {
		switch (c) {
		case 'f':
			if ((fmt = cmd_parse_format(ctx->entry, optarg, fmts)) <
			    0)
				return EXIT_USAGE;
			break;
		case 'i':
			interval = strtod(optarg, &end);
			if (*optarg == '\0' || *end != '\0' || interval < 0.1 ||
			    interval > 600)
				return cmd_usage(ctx->entry,
				    "--interval takes seconds from 0.1 to 600, "
				    "not '%s'",
				    optarg);
			break;
		case 'w':
			min_wait = strtod(optarg, &end);
			if (*optarg == '\0' || *end != '\0' || min_wait < 0 ||
			    min_wait > 86400)
				return cmd_usage(ctx->entry,
				    "--min-wait takes seconds from 0 to 86400, "
				    "not '%s'",
				    optarg);
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cmd_usage(ctx->entry, "too many arguments");
	r = xcalloc((size_t)ctx->ntargets, sizeof *r);
	cmd_hang_sample(ctx, r, 0);
	usleep((useconds_t)(interval * 1e6));
	cmd_hang_sample(ctx, r, 1);
	d = cmd_hang_diagnose(ctx, r, min_wait);
	hung = json_is_true(json_object_get(d, "hung"));
	if (fmt == 1) {
		json_dumpf(d, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
	} else
		cmd_hang_print(stdout, d);
	json_decref(d);
	for (i = 0; i < ctx->ntargets; i++) {
		for (k = 0; k < 2; k++) {
			json_decref(r[i].s[k].info);
			json_decref(r[i].s[k].threads);
			free(r[i].s[k].cause);
		}
	}
	free(r);
	return hung ? 1 : 0;
}

const struct cmd_entry cmd_hang_entry = {
	.name = "hang",
	.args = "[--interval SECONDS] [--min-wait SECONDS] [-f text|json]",
	.help = "say which rank a hung job waits for, and where it is",
	.detail =
	    "  --interval S  seconds between the two samples (default 1)\n"
	    "  --min-wait S  a collective running this long counts as a wait "
	    "(default 5)\n"
	    "  -f FORMAT     text (default) or json\n"
	    "Give every rank: -t job:PID. Exit status 1 when it names a "
	    "hang, 0 when\n"
	    "nothing looks hung.\n",
	.opts = "f:i:w:",
	.longopts = cmd_hang_longopts,
	.target = CMD_TARGET_REQUIRED,
	.exec = cmd_hang_exec,
};
