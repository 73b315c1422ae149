/* The Modules pane: python.torch_trace per module for the selected
 * process or for all of them, with a sparkline of recent step times and,
 * on the screen, a bar per module as long as its share of the time. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"
#include "top.h"

#define PANE_MODULES_NAME_W 44
#define PANE_MODULES_BAR_W  30 /* a module with all the time fills it */

/* Scroll position; owned by the pane. */
struct pane_modules {
	struct ui_list list;
};

static int
pane_modules_cmp(const void *a, const void *b)
{
	const struct top_module *x = a, *y = b;
	double dx = x->fwd + x->bwd, dy = y->fwd + y->bwd;

	if (dx != dy)
		return dx < dy ? 1 : -1;
	return strcmp(x->name, y->name);
}

/* Modules of t, or of every target when t is NULL; sorted by time.
 * Returns a malloc'd array of *n copies whose names are borrowed. */
static struct top_module *
pane_modules_collect(
    struct top *top, struct top_target *t, int *n, double *compute)
{
	struct top_module *out = NULL, *m;
	int i, j, k, count = 0;

	*compute = 0;
	for (i = 0; i < top->ntargets; i++) {
		struct top_target *c = top->targets[i];

		if (t != NULL && c != t)
			continue;
		*compute += c->compute;
		for (j = 0; j < c->nmods; j++) {
			m = NULL;
			for (k = 0; k < count; k++)
				if (strcmp(out[k].name, c->mods[j].name) == 0)
					m = &out[k];
			if (m == NULL) {
				out = xrealloc(
				    out, (size_t)(count + 1) * sizeof *out);
				m = &out[count++];
				*m = c->mods[j];
				continue;
			}
			m->calls += c->mods[j].calls;
			m->nbwd += c->mods[j].nbwd;
			m->fwd += c->mods[j].fwd;
			m->bwd += c->mods[j].bwd;
			m->mb = fmax(m->mb, c->mods[j].mb);
		}
	}
	if (count > 0)
		qsort(out, (size_t)count, sizeof *out, pane_modules_cmp);
	*n = count;
	return out;
}

static void
pane_modules_header(char *buf, size_t len)
{
	snprintf(buf, len, "%-*s %9s %9s %9s %7s %8s", PANE_MODULES_NAME_W,
	    "MODULE", "CALLS", "FWD ms", "BWD ms", "SHARE", "MB");
}

static void
pane_modules_line(
    const struct top_module *m, double compute, char *buf, size_t len)
{
	char fwd[32], bwd[32], share[16];

	fmt_ms(fwd, sizeof fwd, m->calls ? m->fwd / (double)m->calls : -1);
	fmt_ms(bwd, sizeof bwd, m->nbwd ? m->bwd / (double)m->nbwd : -1);
	if (compute > 0)
		snprintf(share, sizeof share, "%.1f%%",
		    100 * (m->fwd + m->bwd) / compute);
	else
		snprintf(share, sizeof share, "-");
	snprintf(buf, len, "%-*.*s %9lld %9s %9s %7s %8.0f",
	    PANE_MODULES_NAME_W, PANE_MODULES_NAME_W, m->name,
	    (long long)m->calls, fwd, bwd, share, m->mb);
}

/* Draws a sparkline of t's recent step times at (y, x), w wide. */
static void
pane_modules_spark(struct top *top, const struct top_target *t, WINDOW *win,
    int y, int x, int w)
{
	double v[TOP_STEPS];
	int n;

	if (w <= 0)
		return;
	n = top_target_step_times(t, v, w < TOP_STEPS ? w : TOP_STEPS);
	wattrset(win, ui_attr(UI_SPARK));
	ui_spark(win, y, x, w, v, n, top->utf8);
	wattrset(win, A_NORMAL);
}

static void
pane_modules_init(struct pane *p)
{
	p->data = xcalloc(1, sizeof(struct pane_modules));
}

static void
pane_modules_draw(struct pane *p, WINDOW *win, int y, int h, int w)
{
	struct pane_modules *pm = p->data;
	struct top *top = p->top;
	struct top_target *t = top_selected(top);
	struct top_module *mods;
	char line[512], last[32], med[32];
	double compute;
	int n, i, row, x;

	if (t == NULL) {
		ui_text(win, y + 1, 2, w - 2, "no targets");
		return;
	}
	wattrset(win, A_BOLD);
	if (top->all_modules)
		snprintf(line, sizeof line, "Modules of all %d targets",
		    top->ntargets);
	else
		snprintf(line, sizeof line, "Modules of %s  %s", t->ep.name,
		    t->command ? t->command : "");
	ui_text(win, y, 0, w, line);
	wattrset(win, A_NORMAL);
	fmt_ms(last, sizeof last, t->last_ms);
	fmt_ms(med, sizeof med, t->median_ms);
	snprintf(line, sizeof line, "step ms %s: last %s, median %s  ",
	    t->ep.name, last, med);
	ui_text(win, y + 1, 0, w, line);
	x = (int)strlen(line);
	pane_modules_spark(top, t, win, y + 1, x, w - x - 1);
	mods = pane_modules_collect(
	    top, top->all_modules ? NULL : t, &n, &compute);
	pane_modules_header(line, sizeof line);
	wattrset(win, ui_attr(UI_HEADER));
	mvwhline(win, y + 3, 0, ' ', w);
	ui_text(win, y + 3, 0, w, line);
	x = (int)strlen(line) + 1;
	if (w - x > PANE_MODULES_BAR_W)
		ui_text(win, y + 3, x, w - x, "TIME SHARE");
	wattrset(win, A_NORMAL);
	h -= 4;
	ui_list_fit(&pm->list, n, h);
	if (n == 0)
		ui_text(win, y + 5, 2, w - 2,
		    t->state == TOP_UNPROBED
			? "not probed: press i in Processes to inject"
			: "no torch module calls traced yet");
	for (row = 0, i = pm->list.first; i < n && row < h; i++, row++) {
		pane_modules_line(&mods[i], compute, line, sizeof line);
		ui_text(win, y + 4 + row, 0, w, line);
		if (compute > 0 && w - x > PANE_MODULES_BAR_W) {
			wattrset(win, ui_attr(UI_SPARK));
			ui_bar(win, y + 4 + row, x, PANE_MODULES_BAR_W,
			    (mods[i].fwd + mods[i].bwd) / compute, top->utf8);
			wattrset(win, A_NORMAL);
		}
	}
	free(mods);
}

static int
pane_modules_key(struct pane *p, int key)
{
	struct pane_modules *pm = p->data;
	struct top *top = p->top;
	struct top_target *t = top_selected(top);
	int i;

	if (ui_list_key(&pm->list, key))
		return 1;
	switch (key) {
	case 'a':
		top->all_modules = !top->all_modules;
		return 1;
	case KEY_LEFT:
	case KEY_RIGHT:
		for (i = 0; i < top->ntargets; i++)
			if (top->targets[i] == t)
				break;
		i += key == KEY_LEFT ? -1 : 1;
		if (i >= 0 && i < top->ntargets)
			top->sel = top->targets[i];
		return 1;
	default:
		return 0;
	}
}

static void
pane_modules_free(struct pane *p)
{
	free(p->data);
	p->data = NULL;
}

void
pane_modules_print(struct top *top, FILE *f)
{
	struct top_module *mods;
	struct top_target *t;
	char line[512], last[32], med[32];
	double compute;
	int i, j, n;

	for (i = 0; i < top->ntargets; i++) {
		t = top->targets[i];
		if (t->ac == NULL)
			continue;
		mods = pane_modules_collect(top, t, &n, &compute);
		fmt_ms(last, sizeof last, t->last_ms);
		fmt_ms(med, sizeof med, t->median_ms);
		fprintf(f, "Modules of %s (%s): step ms last %s, median %s\n",
		    t->ep.name, t->command ? t->command : "?", last, med);
		pane_modules_header(line, sizeof line);
		fprintf(f, "%s\n", line);
		for (j = 0; j < n; j++) {
			pane_modules_line(&mods[j], compute, line, sizeof line);
			fprintf(f, "%s\n", line);
		}
		fputc('\n', f);
		free(mods);
	}
}

const struct pane_type pane_modules_type = {
	.name = "Modules",
	.label = "Modules",
	.hints = "a selected/all targets  Left/Right other target",
	.init = pane_modules_init,
	.draw = pane_modules_draw,
	.key = pane_modules_key,
	.free = pane_modules_free,
};
