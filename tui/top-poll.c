/* The polling round of `probing top` on one target: health (once, or
 * after a failure), the command line of a TCP target (once), the steps
 * and module totals traced since the cursor, and now and then the main
 * thread's innermost Python frame. Replies are read by column name. A
 * round ends in top_poll_done, which tells the owner through
 * top->round_done. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "proto.h"
#include "xmalloc.h"
#include "top.h"

#define TOP_FRAME_EVERY  5000  /* ms between main-thread frame looks */
#define TOP_POLL_TIMEOUT 4000  /* ms a polling request may take */
#define TOP_POLL_ID_MS   10000 /* ms between asking a rank-less target */
#define TOP_STEP_ROWS    256

/* Asks target t a query; cb gets t. */
static void
top_poll_query(struct top_target *t, const char *sql, aclient_cb cb)
{
	json_t *body = json_pack("{s:s}", "sql", sql);

	aclient_request(t->ac, "POST", PROTO_QUERY, body,
	    t->top->ctx->timeout_ms, TOP_POLL_TIMEOUT, cb, t);
	json_decref(body);
}

/* Ends t's round. */
static void
top_poll_done(struct top_target *t)
{
	struct top *top = t->top;

	t->busy = 0;
	top_target_derive(t);
	top_changed(top);
	if (top->round_done != NULL)
		top->round_done(top, t);
}

/* A request of t's failed: decide between exited and unreachable. */
static void
top_poll_failed(struct top_target *t, const struct aclient_reply *r)
{
	top_target_set_error(t, r->cause);
	if (r->status == 401 || r->status == 403)
		t->state = TOP_UNREACHABLE; /* it refuses us */
	else if (r->status == 0) {
		if (t->ep.kind == ENDPOINT_PID && top_pid_gone(t->ep.pid)) {
			t->state = TOP_EXITED;
			top_target_set_error(t, "the process exited");
		} else if (r->refused && t->healthy &&
		    t->ep.kind == ENDPOINT_TCP)
			t->state = TOP_EXITED;
		else
			t->state = TOP_UNREACHABLE;
	}
	top_poll_done(t);
}

static void
top_poll_frame_cb(void *arg, const struct aclient_reply *r)
{
	struct top_target *t = arg;
	json_t *row;
	const char *file, *slash, *func;
	char *s;

	if (r->cause != NULL) {
		top_poll_failed(t, r);
		return;
	}
	row = json_array_get(json_object_get(r->body, "rows"), 0);
	free(t->frame);
	t->frame = NULL;
	if (row != NULL) {
		func =
		    json_string_value(fmt_cell(row, fmt_col(r->body, "func")));
		file =
		    json_string_value(fmt_cell(row, fmt_col(r->body, "file")));
		slash = file != NULL ? strrchr(file, '/') : NULL;
		xasprintf(&s, "%s (%s:%lld)", func ? func : "?",
		    slash ? slash + 1 : (file ? file : "?"),
		    (long long)json_integer_value(
			fmt_cell(row, fmt_col(r->body, "lineno"))));
		t->frame = s;
	}
	top_poll_done(t);
}

/* Asks for the main thread's innermost Python frame when it is due (every
 * time in --batch); otherwise ends the round. */
static void
top_poll_frame(struct top_target *t)
{
	char sql[256];

	if (!t->top->batch && t->frame_at > 0 &&
	    clock_ms() - t->frame_at < TOP_FRAME_EVERY) {
		top_poll_done(t);
		return;
	}
	t->frame_at = clock_ms();
	snprintf(sql, sizeof sql,
	    "SELECT func, file, lineno FROM python.backtrace WHERE "
	    "thread_id = %d AND frame_type = 'Python' ORDER BY depth LIMIT 1",
	    (int)t->pid);
	top_poll_query(t, sql, top_poll_frame_cb);
}

static void
top_poll_mods_cb(void *arg, const struct aclient_reply *r)
{
	struct top_target *t = arg;
	struct top_module *m;
	json_t *rows, *row;
	const char *name, *stage;
	int cname, cstage, ccalls, csecs, cmb;
	int64_t n;
	double d;
	size_t i;

	if (r->cause != NULL) {
		top_poll_failed(t, r);
		return;
	}
	cname = fmt_col(r->body, "module");
	cstage = fmt_col(r->body, "stage");
	ccalls = fmt_col(r->body, "calls");
	csecs = fmt_col(r->body, "secs");
	cmb = fmt_col(r->body, "mb");
	rows = json_object_get(r->body, "rows");
	json_array_foreach(rows, i, row)
	{
		name = json_string_value(fmt_cell(row, cname));
		stage = json_string_value(fmt_cell(row, cstage));
		if (name == NULL || stage == NULL)
			continue;
		n = json_integer_value(fmt_cell(row, ccalls));
		d = json_number_value(fmt_cell(row, csecs));
		if (strchr(name, '.') == NULL || strcmp(stage, "step") == 0)
			t->compute += d; /* roots and the optimizer */
		if (strcmp(stage, "step") == 0)
			continue;
		m = top_target_module(t, name);
		if (strcmp(stage, "forward") == 0) {
			m->calls += n;
			m->fwd += d;
		} else if (strcmp(stage, "backward") == 0) {
			m->nbwd += n;
			m->bwd += d;
		}
		m->mb = fmax(m->mb, json_number_value(fmt_cell(row, cmb)));
	}
	t->cursor = t->bound;
	top_poll_frame(t);
}

/* Asks for the module totals of the rows the steps reply covered. */
static void
top_poll_mods(struct top_target *t)
{
	char sql[512];

	snprintf(sql, sizeof sql,
	    "SELECT module, stage, COUNT(*) AS calls, SUM(duration) AS secs, "
	    "MAX(allocated) AS mb FROM python.torch_trace "
	    "WHERE id > %lld AND id <= %lld GROUP BY module, stage",
	    (long long)t->cursor, (long long)t->bound);
	top_poll_query(t, sql, top_poll_mods_cb);
}

static void
top_poll_steps_cb(void *arg, const struct aclient_reply *r)
{
	struct top_target *t = arg;
	json_t *rows, *row;
	int cstep, cfwd, cbwd, copt, cend, cmb, clast;
	int64_t id, bound = t->cursor;
	size_t i;

	if (r->cause != NULL) {
		top_poll_failed(t, r);
		return;
	}
	t->reply_at = clock_wall();
	top_target_set_error(t, NULL);
	if (t->state == TOP_CONNECTING || t->state == TOP_UNREACHABLE ||
	    t->state == TOP_EXITED)
		t->state = TOP_IDLE; /* it answers again; derive decides */
	cstep = fmt_col(r->body, "step");
	cfwd = fmt_col(r->body, "fwd");
	cbwd = fmt_col(r->body, "bwd");
	copt = fmt_col(r->body, "opt");
	cend = fmt_col(r->body, "ended");
	cmb = fmt_col(r->body, "mb");
	clast = fmt_col(r->body, "last_id");
	rows = json_object_get(r->body, "rows");
	for (i = json_array_size(rows); i-- > 0;) {
		row = json_array_get(rows, i);
		top_target_merge_step(t,
		    json_integer_value(fmt_cell(row, cstep)),
		    json_number_value(fmt_cell(row, cfwd)),
		    json_number_value(fmt_cell(row, cbwd)),
		    json_number_value(fmt_cell(row, copt)),
		    json_number_value(fmt_cell(row, cend)),
		    json_number_value(fmt_cell(row, cmb)));
		id = json_integer_value(fmt_cell(row, clast));
		if (id > bound)
			bound = id;
	}
	if (bound == t->cursor) {
		top_poll_frame(t);
		return;
	}
	t->bound = bound;
	top_poll_mods(t);
}

/* Asks for the steps since the cursor, aggregated per step, newest
 * TOP_STEP_ROWS only: the root modules' forward and backward time, the
 * optimizer's, when the step ended and the highest id. */
static void
top_poll_steps(struct top_target *t)
{
	char sql[1024];

	snprintf(sql, sizeof sql,
	    "SELECT step, "
	    "SUM(CASE WHEN stage = 'forward' AND instr(module, '.') = 0 "
	    "THEN duration ELSE 0 END) AS fwd, "
	    "SUM(CASE WHEN stage = 'backward' AND instr(module, '.') = 0 "
	    "THEN duration ELSE 0 END) AS bwd, "
	    "SUM(CASE WHEN stage = 'step' THEN duration ELSE 0 END) AS opt, "
	    "COALESCE(MAX(CASE WHEN stage = 'step' THEN time END), 0) "
	    "AS ended, MAX(allocated) AS mb, MAX(id) AS last_id "
	    "FROM python.torch_trace WHERE id > %lld "
	    "GROUP BY step ORDER BY step DESC LIMIT %d",
	    (long long)t->cursor, TOP_STEP_ROWS);
	top_poll_query(t, sql, top_poll_steps_cb);
}

/* The command line of a TCP target, asked once; then the round goes on. */
static void
top_poll_argv_cb(void *arg, const struct aclient_reply *r)
{
	struct top_target *t = arg;
	const char *out;

	if (r->cause == NULL) {
		out = json_string_value(json_object_get(r->body, "output"));
		if (out != NULL && *out != '\0') {
			free(t->command);
			t->command = xstrdup(out);
			t->command[strcspn(t->command, "\n")] = '\0';
		}
	}
	top_poll_steps(t);
}

static void
top_poll_health_cb(void *arg, const struct aclient_reply *r)
{
	struct top_target *t = arg;
	json_t *body;

	if (r->cause != NULL) {
		top_poll_failed(t, r);
		return;
	}
	t->healthy = 1;
	t->id_at = clock_ms();
	t->pid = (pid_t)json_integer_value(json_object_get(r->body, "pid"));
	if (json_is_integer(json_object_get(r->body, "rank")))
		t->rank =
		    (int)json_integer_value(json_object_get(r->body, "rank"));
	if (t->command == NULL) {
		body = json_pack("{s:s}", "code",
		    "import sys as _s; print('python', *_s.argv)");
		aclient_request(t->ac, "POST", PROTO_EVAL, body,
		    t->top->ctx->timeout_ms, TOP_POLL_TIMEOUT, top_poll_argv_cb,
		    t);
		json_decref(body);
		return;
	}
	top_poll_steps(t);
}

void
top_poll(struct top *top, struct top_target *t)
{
	if (t->ac == NULL || t->busy)
		return;
	if (t->state == TOP_EXITED && t->ep.kind == ENDPOINT_PID)
		return;
	t->busy = 1;
	/* Who it is in its job, asked again now and then until it says:
	 * a job may join its group long after start. */
	if (!t->healthy || t->state == TOP_UNREACHABLE ||
	    t->state == TOP_EXITED ||
	    (t->rank < 0 && clock_ms() - t->id_at > TOP_POLL_ID_MS))
		aclient_request(t->ac, "GET", PROTO_IDENTITY, NULL,
		    top->ctx->timeout_ms, TOP_POLL_TIMEOUT, top_poll_health_cb,
		    t);
	else
		top_poll_steps(t);
}
