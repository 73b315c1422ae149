/* top: a live view of one or many probed processes: the command, the
 * targets and the polling rounds that keep their numbers fresh. */
#include <sys/types.h>
#include <sys/wait.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "proto.h"
#include "xmalloc.h"
#include "top.h"

#define TOP_FRAME_EVERY  5.0  /* seconds between main-thread frame looks */
#define TOP_SCAN_EVERY   2.0  /* seconds between rescans without -t */
#define TOP_HUNG_FLOOR   1.0  /* never call a process hung sooner */
#define TOP_POLL_TIMEOUT 4000 /* ms a polling request may take */
#define TOP_STEP_ROWS    256

const char *const top_state_names[] = { "connecting", "running", "idle", "hung",
	"unreachable", "exited", "unprobed" };

/* The view lives for the whole program; signal-free code reads it. */
static struct top top_view;
static double top_last_scan;

double
top_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double
top_wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void
top_fmt_ms(char *buf, size_t len, double secs)
{
	double ms = secs * 1000;

	if (secs < 0 || !isfinite(secs))
		snprintf(buf, len, "-");
	else if (ms < 10)
		snprintf(buf, len, "%.2f", ms);
	else if (ms < 1000)
		snprintf(buf, len, "%.1f", ms);
	else
		snprintf(buf, len, "%.0f", ms);
}

void
top_set_status(struct top *top, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(top->status, sizeof top->status, fmt, ap);
	va_end(ap);
	top->status_err = err;
	top->status_until = top_now() + 8;
	top_changed(top);
}

struct top_target *
top_selected(struct top *top)
{
	int i;

	for (i = 0; i < top->ntargets; i++)
		if (top->targets[i] == top->sel)
			return top->sel;
	top->sel = top->ntargets > 0 ? top->targets[0] : NULL;
	return top->sel;
}

/* Numbers of a target for sorting, per Processes column. */
static double
top_sort_value(const struct top_target *t, int col)
{
	switch (col) {
	case 2:
		return t->state;
	case 3:
		return t->nsteps
		    ? (double)t->steps[(t->first + t->nsteps - 1) % TOP_STEPS]
			  .step
		    : -1;
	case 4:
		return t->last_ms;
	case 5:
		return t->median_ms;
	case 6:
		return t->fwd_ms;
	case 7:
		return t->bwd_ms;
	case 8:
		return t->opt_ms;
	case 9:
		return t->mb;
	default:
		return 0;
	}
}

static int
top_cmp(const void *a, const void *b)
{
	const struct top_target *x = *(struct top_target *const *)a;
	const struct top_target *y = *(struct top_target *const *)b;
	int col = top_view.sort_col, c = 0;
	double dx, dy;

	if (col == 0) {
		if (x->ep.kind == ENDPOINT_PID && y->ep.kind == ENDPOINT_PID)
			c = (x->ep.pid > y->ep.pid) - (x->ep.pid < y->ep.pid);
		else
			c = strcmp(x->ep.name, y->ep.name);
	} else if (col == 1)
		c = strcmp(
		    x->command ? x->command : "", y->command ? y->command : "");
	else if (col == 10)
		c = strcmp(x->frame ? x->frame : "", y->frame ? y->frame : "");
	else {
		dx = top_sort_value(x, col);
		dy = top_sort_value(y, col);
		c = (dx > dy) - (dx < dy);
		if (col != 2)
			c = -c; /* numbers: biggest first */
	}
	if (c == 0)
		c = strcmp(x->ep.name, y->ep.name);
	return top_view.sort_rev ? -c : c;
}

void
top_sort(struct top *top)
{
	if (top->ntargets > 1)
		qsort(top->targets, (size_t)top->ntargets, sizeof *top->targets,
		    top_cmp);
}

static void
top_redraw_cb(evutil_socket_t fd, short what, void *arg)
{
	struct top *top = arg;

	(void)fd;
	(void)what;
	top->dirty = 0;
	ui_draw(top);
}

/* Marks the screen stale; it is redrawn a little later, once for many
 * replies. */
void
top_changed(struct top *top)
{
	struct timeval tv = { 0, 30000 };

	if (top->batch || top->dirty || top->redraw == NULL)
		return;
	top->dirty = 1;
	evtimer_add(top->redraw, &tv);
}

/* Targets ------------------------------------------------------------ */

static struct top_target *
top_add(struct top *top, const struct endpoint *ep, int probed)
{
	struct top_target *t = xcalloc(1, sizeof *t);

	t->ep = *ep;
	t->state = probed ? TOP_CONNECTING : TOP_UNPROBED;
	t->pid = ep->kind == ENDPOINT_PID ? ep->pid : 0;
	if (ep->kind == ENDPOINT_PID)
		t->command = cmd_list_cmdline(ep->pid);
	if (probed)
		t->ac = aclient_new(top->base, ep, top->ctx->token);
	t->last_ms = t->median_ms = t->median_gap = -1;
	t->fwd_ms = t->bwd_ms = t->opt_ms = t->mb = -1;
	top->targets = xrealloc(
	    top->targets, (size_t)(top->ntargets + 1) * sizeof *top->targets);
	top->targets[top->ntargets++] = t;
	return t;
}

static void
top_target_free(struct top_target *t)
{
	int i;

	if (t == NULL)
		return;
	aclient_free(t->ac);
	for (i = 0; i < t->nmods; i++)
		free(t->mods[i].name);
	free(t->mods);
	free(t->command);
	free(t->frame);
	free(t->error);
	free(t);
}

static void
top_set_error(struct top_target *t, const char *cause)
{
	free(t->error);
	t->error = cause != NULL ? xstrdup(cause) : NULL;
}

/* True when pid is gone or a zombie. */
static int
top_pid_gone(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return 1;
	p = fgets(buf, sizeof buf, f);
	fclose(f);
	if (p == NULL)
		return 1;
	p = strrchr(buf, ')');
	return p != NULL && (p[2] == 'Z' || p[2] == 'X');
}

/* The median of n values (sorted in place); -1 for none. */
static int
top_dcmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double
top_median(double *v, int n)
{
	if (n == 0)
		return -1;
	qsort(v, (size_t)n, sizeof *v, top_dcmp);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Recomputes the derived numbers and the state of t. */
static void
top_derive(struct top_target *t)
{
	double dts[TOP_STEPS], gaps[TOP_STEPS], last_end = 0, now;
	const struct top_step *s, *prev = NULL;
	int i, ndt = 0;

	t->last_ms = t->median_ms = t->median_gap = -1;
	for (i = 0; i < t->nsteps; i++) {
		s = &t->steps[(t->first + i) % TOP_STEPS];
		if (s->end <= 0)
			continue;
		if (prev != NULL && s->step > prev->step &&
		    s->end > prev->end) {
			gaps[ndt] = s->end - prev->end;
			dts[ndt] = gaps[ndt] / (double)(s->step - prev->step);
			ndt++;
		}
		prev = s;
		last_end = s->end;
	}
	if (ndt > 0)
		t->last_ms = dts[ndt - 1];
	else if (prev != NULL)
		t->last_ms = prev->fwd + prev->bwd + prev->opt;
	t->median_ms = ndt > 0 ? top_median(dts, ndt) : t->last_ms;
	t->median_gap = ndt > 0 ? top_median(gaps, ndt) : -1;
	if (prev != NULL) {
		t->fwd_ms = prev->fwd;
		t->bwd_ms = prev->bwd;
		t->opt_ms = prev->opt;
		t->mb = prev->mb;
	}
	if (t->state == TOP_EXITED || t->state == TOP_UNREACHABLE ||
	    t->state == TOP_UNPROBED || !t->healthy)
		return;
	if (last_end <= 0) {
		t->state = TOP_IDLE;
		return;
	}
	now = t->reply_at > 0 ? t->reply_at : top_wall();
	if (t->median_gap > 0 &&
	    now - last_end > fmax(5 * t->median_gap, TOP_HUNG_FLOOR))
		t->state = TOP_HUNG;
	else
		t->state = TOP_RUNNING;
}

/* Adds the numbers of one step group to t's ring. */
static void
top_merge_step(struct top_target *t, json_t *row)
{
	struct top_step *s = NULL;
	int64_t step = json_integer_value(json_array_get(row, 0));
	double end = json_number_value(json_array_get(row, 4));
	int i;

	for (i = t->nsteps - 1; i >= 0; i--) {
		struct top_step *c = &t->steps[(t->first + i) % TOP_STEPS];

		if (c->step == step) {
			s = c;
			break;
		}
		if (c->step < step)
			break;
	}
	if (s == NULL) {
		if (t->nsteps > 0 &&
		    step <
			t->steps[(t->first + t->nsteps - 1) % TOP_STEPS].step)
			return; /* out of order and too old: drop it */
		if (t->nsteps == TOP_STEPS)
			t->first = (t->first + 1) % TOP_STEPS;
		else
			t->nsteps++;
		s = &t->steps[(t->first + t->nsteps - 1) % TOP_STEPS];
		memset(s, 0, sizeof *s);
		s->step = step;
	}
	s->fwd += json_number_value(json_array_get(row, 1));
	s->bwd += json_number_value(json_array_get(row, 2));
	s->opt += json_number_value(json_array_get(row, 3));
	if (end > s->end)
		s->end = end;
	s->mb = fmax(s->mb, json_number_value(json_array_get(row, 5)));
}

static struct top_module *
top_module_get(struct top_target *t, const char *name)
{
	int i;

	for (i = 0; i < t->nmods; i++)
		if (strcmp(t->mods[i].name, name) == 0)
			return &t->mods[i];
	t->mods = xrealloc(t->mods, (size_t)(t->nmods + 1) * sizeof *t->mods);
	memset(&t->mods[t->nmods], 0, sizeof *t->mods);
	t->mods[t->nmods].name = xstrdup(name);
	return &t->mods[t->nmods++];
}

/* Polling rounds: health, steps, modules, frame ---------------------- */

static void top_poll_steps(struct top *, struct top_target *);
static void top_poll_frame(struct top *, struct top_target *);
static void top_batch_check(struct top *);

/* Ends t's round. */
static void
top_round_done(struct top *top, struct top_target *t)
{
	t->busy = 0;
	top_derive(t);
	top_changed(top);
	if (top->batch)
		top_batch_check(top);
}

/* A request of t's failed: decide between exited and unreachable. */
static void
top_failed(struct top *top, struct top_target *t, const struct aclient_reply *r)
{
	top_set_error(t, r->cause);
	if (r->status == 401 || r->status == 403)
		t->state = TOP_UNREACHABLE; /* it refuses us */
	else if (r->status == 0) {
		if (t->ep.kind == ENDPOINT_PID && top_pid_gone(t->ep.pid)) {
			t->state = TOP_EXITED;
			top_set_error(t, "the process exited");
		} else if (r->refused && t->healthy &&
		    t->ep.kind == ENDPOINT_TCP)
			t->state = TOP_EXITED;
		else
			t->state = TOP_UNREACHABLE;
	}
	top_round_done(top, t);
}

static void
top_frame_cb(void *arg, const struct aclient_reply *r)
{
	struct top_target *t = arg;
	json_t *row;
	const char *file, *slash;
	char *s;

	if (r->cause != NULL) {
		top_failed(&top_view, t, r);
		return;
	}
	row = json_array_get(json_object_get(r->body, "rows"), 0);
	free(t->frame);
	t->frame = NULL;
	if (row != NULL) {
		file = json_string_value(json_array_get(row, 1));
		slash = file != NULL ? strrchr(file, '/') : NULL;
		xasprintf(&s, "%s (%s:%lld)",
		    json_string_value(json_array_get(row, 0)) ?: "?",
		    slash ? slash + 1 : (file ? file : "?"),
		    (long long)json_integer_value(json_array_get(row, 2)));
		t->frame = s;
	}
	top_round_done(&top_view, t);
}

static void
top_poll_frame(struct top *top, struct top_target *t)
{
	json_t *body;
	char sql[256];

	if (!top->batch && top_now() - t->frame_at < TOP_FRAME_EVERY &&
	    t->frame_at > 0) {
		top_round_done(top, t);
		return;
	}
	t->frame_at = top_now();
	snprintf(sql, sizeof sql,
	    "SELECT func, file, lineno FROM python.backtrace WHERE "
	    "thread_id = %d AND frame_type = 'Python' ORDER BY depth LIMIT 1",
	    (int)t->pid);
	body = json_pack("{s:s}", "sql", sql);
	aclient_request(t->ac, "POST", PROTO_QUERY, body, top->ctx->timeout_ms,
	    TOP_POLL_TIMEOUT, top_frame_cb, t);
	json_decref(body);
}

static void
top_mods_cb(void *arg, const struct aclient_reply *r)
{
	struct top_target *t = arg;
	struct top_module *m;
	json_t *rows, *row;
	const char *name, *stage;
	int64_t n;
	double d;
	size_t i;

	if (r->cause != NULL) {
		top_failed(&top_view, t, r);
		return;
	}
	rows = json_object_get(r->body, "rows");
	json_array_foreach(rows, i, row)
	{
		name = json_string_value(json_array_get(row, 0));
		stage = json_string_value(json_array_get(row, 1));
		if (name == NULL || stage == NULL)
			continue;
		n = json_integer_value(json_array_get(row, 2));
		d = json_number_value(json_array_get(row, 3));
		if (strchr(name, '.') == NULL || strcmp(stage, "step") == 0)
			t->compute += d; /* roots and the optimizer */
		if (strcmp(stage, "step") == 0)
			continue;
		m = top_module_get(t, name);
		if (strcmp(stage, "forward") == 0) {
			m->calls += n;
			m->fwd += d;
		} else if (strcmp(stage, "backward") == 0) {
			m->nbwd += n;
			m->bwd += d;
		}
		m->mb = fmax(m->mb, json_number_value(json_array_get(row, 4)));
	}
	t->cursor = t->bound;
	top_poll_frame(&top_view, t);
}

static void
top_steps_cb(void *arg, const struct aclient_reply *r)
{
	struct top *top = &top_view;
	struct top_target *t = arg;
	json_t *rows, *row, *body;
	char sql[512];
	int64_t id, bound = t->cursor;
	size_t i;

	if (r->cause != NULL) {
		top_failed(top, t, r);
		return;
	}
	t->reply_at = top_wall();
	top_set_error(t, NULL);
	if (t->state == TOP_CONNECTING || t->state == TOP_UNREACHABLE ||
	    t->state == TOP_EXITED)
		t->state = TOP_IDLE; /* it answers again; top_derive decides */
	rows = json_object_get(r->body, "rows");
	for (i = json_array_size(rows); i-- > 0;) {
		row = json_array_get(rows, i);
		top_merge_step(t, row);
		id = json_integer_value(json_array_get(row, 6));
		if (id > bound)
			bound = id;
	}
	if (bound == t->cursor) {
		top_poll_frame(top, t);
		return;
	}
	t->bound = bound;
	snprintf(sql, sizeof sql,
	    "SELECT module, stage, COUNT(*), SUM(duration), MAX(allocated) "
	    "FROM python.torch_trace WHERE id > %lld AND id <= %lld "
	    "GROUP BY module, stage",
	    (long long)t->cursor, (long long)bound);
	body = json_pack("{s:s}", "sql", sql);
	aclient_request(t->ac, "POST", PROTO_QUERY, body, top->ctx->timeout_ms,
	    TOP_POLL_TIMEOUT, top_mods_cb, t);
	json_decref(body);
}

/* Asks for the steps since the cursor, aggregated per step, newest
 * TOP_STEP_ROWS only: the root modules' forward and backward time, the
 * optimizer's, when the step ended and the highest id. */
static void
top_poll_steps(struct top *top, struct top_target *t)
{
	json_t *body;
	char sql[1024];

	snprintf(sql, sizeof sql,
	    "SELECT step, "
	    "SUM(CASE WHEN stage = 'forward' AND instr(module, '.') = 0 "
	    "THEN duration ELSE 0 END), "
	    "SUM(CASE WHEN stage = 'backward' AND instr(module, '.') = 0 "
	    "THEN duration ELSE 0 END), "
	    "SUM(CASE WHEN stage = 'step' THEN duration ELSE 0 END), "
	    "COALESCE(MAX(CASE WHEN stage = 'step' THEN time END), 0), "
	    "MAX(allocated), MAX(id) FROM python.torch_trace WHERE id > %lld "
	    "GROUP BY step ORDER BY step DESC LIMIT %d",
	    (long long)t->cursor, TOP_STEP_ROWS);
	body = json_pack("{s:s}", "sql", sql);
	aclient_request(t->ac, "POST", PROTO_QUERY, body, top->ctx->timeout_ms,
	    TOP_POLL_TIMEOUT, top_steps_cb, t);
	json_decref(body);
}

/* The command line of a TCP target, asked once; then the round goes on. */
static void
top_argv_cb(void *arg, const struct aclient_reply *r)
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
	top_poll_steps(&top_view, t);
}

static void
top_health_cb(void *arg, const struct aclient_reply *r)
{
	struct top *top = &top_view;
	struct top_target *t = arg;
	json_t *body;

	if (r->cause != NULL) {
		top_failed(top, t, r);
		return;
	}
	t->healthy = 1;
	t->pid = (pid_t)json_integer_value(json_object_get(r->body, "pid"));
	if (t->command == NULL) {
		body = json_pack("{s:s}", "code",
		    "import sys as _s; print('python', *_s.argv)");
		aclient_request(t->ac, "POST", PROTO_EVAL, body,
		    top->ctx->timeout_ms, TOP_POLL_TIMEOUT, top_argv_cb, t);
		json_decref(body);
		return;
	}
	top_poll_steps(top, t);
}

/* Starts a polling round on t unless one is running. */
static void
top_poll(struct top *top, struct top_target *t)
{
	if (t->ac == NULL || t->busy)
		return;
	if (t->state == TOP_EXITED && t->ep.kind == ENDPOINT_PID)
		return;
	t->busy = 1;
	if (!t->healthy || t->state == TOP_UNREACHABLE ||
	    t->state == TOP_EXITED)
		aclient_request(t->ac, "GET", PROTO_HEALTH, NULL,
		    top->ctx->timeout_ms, TOP_POLL_TIMEOUT, top_health_cb, t);
	else
		top_poll_steps(top, t);
}

/* Scanning local processes ------------------------------------------- */

static struct top_target *
top_find_pid(struct top *top, pid_t pid)
{
	int i;

	for (i = 0; i < top->ntargets; i++)
		if (top->targets[i]->ep.kind == ENDPOINT_PID &&
		    top->targets[i]->ep.pid == pid)
			return top->targets[i];
	return NULL;
}

/* True when pid runs a Python interpreter we may look at. */
static int
top_is_python(pid_t pid)
{
	char path[64], comm[64];
	FILE *f;
	int ok;

	if (pid == getpid())
		return 0;
	snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return 0;
	ok = fgets(comm, sizeof comm, f) != NULL &&
	    strncmp(comm, "python", 6) == 0;
	fclose(f);
	snprintf(path, sizeof path, "/proc/%d/mem", (int)pid);
	return ok && access(path, R_OK) == 0;
}

static void
top_scan(struct top *top)
{
	struct endpoint ep = { .kind = ENDPOINT_PID };
	struct top_target *t;
	struct dirent *de;
	pid_t *pids, pid;
	DIR *d;
	int n, i, j;

	top_last_scan = top_now();
	for (i = 0; i < top->ntargets; i++)
		top->targets[i]->seen = 0;
	pids = cmd_list_pids(&n);
	for (i = 0; i < n; i++) {
		t = top_find_pid(top, pids[i]);
		if (t != NULL && t->ac == NULL) {
			t->ac = aclient_new(top->base, &t->ep, top->ctx->token);
			t->state = TOP_CONNECTING;
		}
		if (t == NULL) {
			ep.pid = pids[i];
			snprintf(ep.name, sizeof ep.name, "%d", (int)pids[i]);
			t = top_add(top, &ep, 1);
		}
		t->seen = 1;
	}
	free(pids);
	d = opendir("/proc");
	while (d != NULL && (de = readdir(d)) != NULL) {
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		pid = (pid_t)atoi(de->d_name);
		t = top_find_pid(top, pid);
		if (t != NULL) {
			t->seen = 1;
			continue;
		}
		if (!top_is_python(pid))
			continue;
		ep.pid = pid;
		snprintf(ep.name, sizeof ep.name, "%d", (int)pid);
		top_add(top, &ep, 0)->seen = 1;
	}
	if (d != NULL)
		closedir(d);
	/* Unprobed processes that went away leave the list. */
	for (i = j = 0; i < top->ntargets; i++) {
		t = top->targets[i];
		if (t->ac == NULL && (!t->seen || top_pid_gone(t->ep.pid))) {
			if (top->sel == t)
				top->sel = NULL;
			top_target_free(t);
			continue;
		}
		top->targets[j++] = t;
	}
	top->ntargets = j;
	top_changed(top);
}

/* Injection into an unprobed process, by running this program --------- */

struct top_inject {
	struct top *top;
	pid_t child, target;
	int fd;
	char out[512];
	size_t len;
	struct event *ev;
};

static void
top_inject_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct top_inject *ij = arg;
	ssize_t n;
	int st = 0;
	char *nl;

	(void)what;
	n = read(fd, ij->out + ij->len, sizeof ij->out - 1 - ij->len);
	if (n > 0) {
		ij->len += (size_t)n;
		if (ij->len < sizeof ij->out - 1)
			return;
	} else if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	ij->out[ij->len] = '\0';
	while (ij->len > 0 && ij->out[ij->len - 1] == '\n')
		ij->out[--ij->len] = '\0';
	nl = strrchr(ij->out, '\n');
	waitpid(ij->child, &st, 0);
	top_set_status(ij->top, !(WIFEXITED(st) && WEXITSTATUS(st) == 0), "%s",
	    nl ? nl + 1 : (ij->len ? ij->out : "inject finished"));
	event_free(ij->ev);
	close(ij->fd);
	top_scan(ij->top);
	free(ij);
}

void
top_inject(struct top *top, struct top_target *t)
{
	struct top_inject *ij;
	char pidtext[32];
	int fds[2];
	pid_t child;

	if (t == NULL || t->ac != NULL || t->ep.kind != ENDPOINT_PID) {
		top_set_status(top, 1, "select an unprobed process to inject");
		return;
	}
	if (pipe2(fds, O_CLOEXEC) != 0) {
		top_set_status(top, 1, "cannot inject: %s", strerror(errno));
		return;
	}
	snprintf(pidtext, sizeof pidtext, "%d", (int)t->ep.pid);
	child = fork();
	if (child < 0) {
		top_set_status(top, 1, "cannot inject: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if (child == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, 0);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		execl("/proc/self/exe", "probing", "-t", pidtext, "inject",
		    (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	ij = xcalloc(1, sizeof *ij);
	ij->top = top;
	ij->child = child;
	ij->target = t->ep.pid;
	ij->fd = fds[0];
	ij->ev = event_new(
	    top->base, fds[0], EV_READ | EV_PERSIST, top_inject_read_cb, ij);
	event_add(ij->ev, NULL);
	top_set_status(top, 0, "injecting into %d ...", (int)t->ep.pid);
}

/* The loop ----------------------------------------------------------- */

/* --bench-frames N (hidden): times N full redraws, alternating the
 * Processes and Modules panes so that most of the screen changes each
 * time; the figures are printed once the terminal is restored. */
static double top_bench_mean, top_bench_max;

static void
top_bench(struct top *top)
{
	double t0, dt, sum = 0;
	int i;

	for (i = 0; i < top->bench_frames; i++) {
		top->current = i % 2 ? TOP_PANE_MODULES : TOP_PANE_PROCS;
		t0 = top_now();
		ui_draw(top);
		dt = top_now() - t0;
		sum += dt;
		if (dt > top_bench_max)
			top_bench_max = dt;
	}
	top_bench_mean = sum / top->bench_frames;
	event_base_loopbreak(top->base);
}

static void
top_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct top *top = arg;
	static int ticks;
	int i;

	(void)fd;
	(void)what;
	if (top->bench_frames > 0 && ++ticks > 3) {
		top_bench(top);
		return;
	}
	if (top->scan && top_now() - top_last_scan >= TOP_SCAN_EVERY)
		top_scan(top);
	for (i = 0; i < top->ntargets; i++) {
		top_poll(top, top->targets[i]);
		top_derive(top->targets[i]);
	}
	if (top->status[0] != '\0' && top_now() > top->status_until)
		top->status[0] = '\0';
	top_changed(top);
}

/* --batch: prints once every target has finished its round. */
static void
top_batch_check(struct top *top)
{
	struct timeval tv;
	int i;

	for (i = 0; i < top->ntargets; i++)
		if (top->targets[i]->busy)
			return;
	top_sort(top);
	pane_processes_print(top, stdout);
	pane_modules_print(top, stdout);
	fflush(stdout);
	if (++top->done_iterations >= top->iterations) {
		event_base_loopbreak(top->base);
		return;
	}
	tv.tv_sec = top->interval_ms / 1000;
	tv.tv_usec = (top->interval_ms % 1000) * 1000;
	evtimer_add(top->tick, &tv);
}

static void
top_batch_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct top *top = arg;
	int i, any = 0;

	(void)fd;
	(void)what;
	if (top->scan)
		top_scan(top);
	for (i = 0; i < top->ntargets; i++) {
		top_poll(top, top->targets[i]);
		any |= top->targets[i]->busy;
	}
	if (!any)
		top_batch_check(top);
}

static void
top_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct top *top = arg;

	(void)what;
	if (sig == SIGWINCH)
		ui_resize(top);
	else
		event_base_loopbreak(top->base);
}

/* Parses a positive number of seconds into ms; -1 if it is not one. */
static int
top_parse_secs(const char *text)
{
	char *end;
	double v = strtod(text, &end);

	if (*text == '\0' || *end != '\0' || !(v >= 0.05) || v > 3600)
		return -1;
	return (int)(v * 1000);
}

static int
cmd_top_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "target", required_argument, NULL, 't' },
		{ "batch", no_argument, NULL, 'b' },
		{ "iterations", required_argument, NULL, 'n' },
		{ "interval", required_argument, NULL, 'd' },
		{ "bench-frames", required_argument, NULL, 'B' },
		{ NULL, 0, NULL, 0 },
	};
	struct top *top = &top_view;
	struct event *sigs[4] = { NULL, NULL, NULL, NULL };
	static const int signos[] = { SIGINT, SIGTERM, SIGHUP, SIGWINCH };
	char *cause = NULL, *end;
	int c, i, rc = 0;

	top->ctx = ctx;
	top->interval_ms = 1000;
	top->iterations = 1;
	while (
	    (c = getopt_long(argc, argv, "+t:bn:d:", longopts, NULL)) != -1) {
		switch (c) {
		case 't':
			ctx->target_text = optarg;
			break;
		case 'b':
			top->batch = 1;
			break;
		case 'n':
			top->iterations = (int)strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' ||
			    top->iterations < 1)
				return cmd_usage(ctx->entry,
				    "invalid --iterations '%s': expected a "
				    "positive number",
				    optarg);
			break;
		case 'd':
			top->interval_ms = top_parse_secs(optarg);
			if (top->interval_ms < 0)
				return cmd_usage(ctx->entry,
				    "invalid --interval '%s': expected seconds "
				    "(0.05 to 3600)",
				    optarg);
			break;
		case 'B':
			top->bench_frames = atoi(optarg);
			break;
		case ':':
			return cmd_usage(ctx->entry, "option %s needs a value",
			    argv[optind - 1]);
		default:
			return cmd_usage(ctx->entry, "unknown option '%s'",
			    argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cmd_usage(ctx->entry, "too many arguments");
	if (ctx->target_text != NULL) {
		if ((rc = cmd_require_targets(ctx)) != 0)
			return rc;
	} else
		top->scan = 1;
	signal(SIGPIPE, SIG_IGN);
	top->base = event_base_new();
	if (top->base == NULL)
		return cmd_fail("cannot start the event loop");
	for (i = 0; i < ctx->ntargets; i++)
		top_add(top, &ctx->targets[i], 1);
	if (top->batch) {
		top->tick = evtimer_new(top->base, top_batch_tick_cb, top);
		event_active(top->tick, 0, 0);
		event_base_dispatch(top->base);
		goto out;
	}
	top->tick = event_new(top->base, -1, EV_PERSIST, top_tick_cb, top);
	top->redraw = evtimer_new(top->base, top_redraw_cb, top);
	for (i = 0; i < 4; i++) {
		sigs[i] =
		    evsignal_new(top->base, signos[i], top_signal_cb, top);
		event_add(sigs[i], NULL);
	}
	if (ui_start(top, &cause) != 0) {
		rc = cmd_fail(cause);
		free(cause);
		goto out;
	}
	{
		struct timeval tv = { top->interval_ms / 1000,
			(top->interval_ms % 1000) * 1000 };

		event_add(top->tick, &tv);
	}
	event_active(top->tick, 0, 0);
	event_base_dispatch(top->base);
	ui_end(top);
	if (top->bench_frames > 0)
		fprintf(stderr, "frames %d mean_ms %.3f max_ms %.3f\n",
		    top->bench_frames, top_bench_mean * 1000,
		    top_bench_max * 1000);
out:
	for (i = 0; i < 4; i++)
		if (sigs[i] != NULL)
			event_free(sigs[i]);
	for (i = 0; i < top->ntargets; i++)
		top_target_free(top->targets[i]);
	free(top->targets);
	if (top->redraw != NULL)
		event_free(top->redraw);
	if (top->tick != NULL)
		event_free(top->tick);
	event_base_free(top->base);
	return rc;
}

const struct cmd_entry cmd_top_entry = {
	.name = "top",
	.args = "[--batch] [--iterations N] [--interval SECONDS]",
	.help = "watch one or many processes live: steps, modules, stacks, "
		"SQL, eval",
	.detail =
	    "  -t TARGETS          pids and host:port, comma-separated; "
	    "without it every\n"
	    "                      local probed process, and unprobed "
	    "Python ones to inject\n"
	    "  -b, --batch         print the Processes and Modules panes "
	    "as text and exit\n"
	    "  -n, --iterations N  with --batch: print N times (default "
	    "1)\n"
	    "  -d, --interval SECS seconds between refreshes (default 1)\n"
	    "keys: F1 or ? help, F2..F6 panes, q or F10 quits; states: "
	    "running, idle,\n"
	    "hung (no step for 5x the median step time, at least 1 s), "
	    "exited, unreachable\n",
	.exec = cmd_top_exec,
};
