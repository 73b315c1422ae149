/* The numbers of one target of `probing top`: its ring of recent steps,
 * its per-module totals, and the state derived from them (running, idle,
 * hung). The floor of the model: it calls nothing above it, and tells the
 * view about changes only through the top->changed hook. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "xmalloc.h"
#include "top.h"

#define TOP_HUNG_FLOOR 1.0 /* never call a process hung sooner (seconds) */

const char *const top_state_names[] = { "connecting", "running", "idle", "hung",
	"unreachable", "exited", "unprobed" };

void
top_changed(struct top *top)
{
	if (top->changed != NULL)
		top->changed(top);
}

void
top_set_status(struct top *top, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(top->status, sizeof top->status, fmt, ap);
	va_end(ap);
	top->status_err = err;
	top->status_until = clock_ms() + 8000;
	top_changed(top);
}

struct top_target *
top_target_new(struct top *top, const struct endpoint *ep, int probed)
{
	struct top_target *t = xcalloc(1, sizeof *t);

	t->top = top;
	t->ep = *ep;
	t->state = probed ? TOP_CONNECTING : TOP_UNPROBED;
	t->pid = ep->kind == ENDPOINT_PID ? ep->pid : 0;
	t->rank = -1;
	if (ep->kind == ENDPOINT_PID)
		t->command = procs_cmdline(ep->pid);
	if (probed)
		t->ac = aclient_new(top->base, ep, top->ctx->token);
	t->last_ms = t->median_ms = t->median_gap = -1;
	t->fwd_ms = t->bwd_ms = t->opt_ms = t->mb = -1;
	top->targets = xrealloc(
	    top->targets, (size_t)(top->ntargets + 1) * sizeof *top->targets);
	top->targets[top->ntargets++] = t;
	return t;
}

void
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

void
top_target_set_error(struct top_target *t, const char *cause)
{
	free(t->error);
	t->error = cause != NULL ? xstrdup(cause) : NULL;
}

int
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

static const struct top_step *
top_target_step(const struct top_target *t, int i)
{
	return &t->steps[(t->first + i) % TOP_STEPS];
}

int64_t
top_target_last_step(const struct top_target *t)
{
	return t->nsteps > 0 ? top_target_step(t, t->nsteps - 1)->step : -1;
}

/* Walks the ended steps in order; fills gaps (seconds between ends) and
 * per-step times (gap / steps between them); returns how many. *last gets
 * the newest ended step, or NULL. */
static int
top_target_gaps(const struct top_target *t, double *gaps, double *dts,
    const struct top_step **last)
{
	const struct top_step *s, *prev = NULL;
	int i, n = 0;

	for (i = 0; i < t->nsteps; i++) {
		s = top_target_step(t, i);
		if (s->end <= 0)
			continue;
		if (prev != NULL && s->step > prev->step &&
		    s->end > prev->end) {
			gaps[n] = s->end - prev->end;
			dts[n] = gaps[n] / (double)(s->step - prev->step);
			n++;
		}
		prev = s;
	}
	*last = prev;
	return n;
}

int
top_target_step_times(const struct top_target *t, double *out, int max)
{
	double gaps[TOP_STEPS], dts[TOP_STEPS];
	const struct top_step *last;
	int n = top_target_gaps(t, gaps, dts, &last), skip;

	skip = n > max ? n - max : 0;
	memcpy(out, dts + skip, (size_t)(n - skip) * sizeof *out);
	return n - skip;
}

int
top_target_step_mbs(const struct top_target *t, double *out, int max)
{
	int i, skip = t->nsteps > max ? t->nsteps - max : 0;

	for (i = skip; i < t->nsteps; i++)
		out[i - skip] = top_target_step(t, i)->mb;
	return t->nsteps - skip;
}

static int
top_dcmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The median of n values (sorted in place); -1 for none. */
static double
top_median(double *v, int n)
{
	if (n == 0)
		return -1;
	qsort(v, (size_t)n, sizeof *v, top_dcmp);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void
top_target_derive(struct top_target *t)
{
	double dts[TOP_STEPS], gaps[TOP_STEPS], now;
	const struct top_step *prev;
	int ndt = top_target_gaps(t, gaps, dts, &prev);

	t->last_ms = t->median_ms = t->median_gap = -1;
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
	if (prev == NULL) {
		t->state = TOP_IDLE;
		return;
	}
	now = t->reply_at > 0 ? t->reply_at : clock_wall();
	if (t->median_gap > 0 &&
	    now - prev->end > fmax(5 * t->median_gap, TOP_HUNG_FLOOR))
		t->state = TOP_HUNG;
	else
		t->state = TOP_RUNNING;
}

void
top_target_merge_step(struct top_target *t, int64_t step, double fwd,
    double bwd, double opt, double end, double mb)
{
	struct top_step *s = NULL, *c;
	int i;

	for (i = t->nsteps - 1; i >= 0; i--) {
		c = &t->steps[(t->first + i) % TOP_STEPS];
		if (c->step == step) {
			s = c;
			break;
		}
		if (c->step < step)
			break;
	}
	if (s == NULL) {
		if (t->nsteps > 0 && step < top_target_last_step(t))
			return; /* out of order and too old: drop it */
		if (t->nsteps == TOP_STEPS)
			t->first = (t->first + 1) % TOP_STEPS;
		else
			t->nsteps++;
		s = &t->steps[(t->first + t->nsteps - 1) % TOP_STEPS];
		memset(s, 0, sizeof *s);
		s->step = step;
	}
	s->fwd += fwd;
	s->bwd += bwd;
	s->opt += opt;
	if (end > s->end)
		s->end = end;
	s->mb = fmax(s->mb, mb);
}

struct top_module *
top_target_module(struct top_target *t, const char *name)
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
