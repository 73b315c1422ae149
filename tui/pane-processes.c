/* The Processes pane: one row per target with its state, step times, a
 * sparkline of the recent ones, forward/backward/optimizer time, GPU
 * memory and main-thread frame. Each
 * column says how to show and how to sort a target; < and > move the sort
 * column, I inverts it. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xmalloc.h"
#include "top.h"

/* A column: its title and width (0: what is left); how to write the cell
 * of a target (NULL: the duration at ms, an offset in struct top_target);
 * how to order two targets by it (number; NULL: the duration at ms, or
 * the cell text). Numbers sort biggest first, unless small_first. color,
 * when set, colours the cell; sort_first marks the column sorted by at
 * first; screen_only leaves it out of --batch. Cells are UTF-8, padded and
 * cut by columns on the screen, not by bytes. */
struct pane_processes_col {
	const char *title;
	int width;
	int right;
	void (*cell)(const struct top_target *, char *, size_t);
	double (*number)(const struct top_target *);
	size_t ms;
	int small_first;
	enum ui_color (*color)(const struct top_target *);
	int sort_first;
	int screen_only;
};

/* The duration at offset ms of t. */
static double
pane_processes_ms(const struct top_target *t, size_t ms)
{
	return *(const double *)(const void *)((const char *)t + ms);
}

/* The sort column and the selection; owned by the pane. */
struct pane_processes {
	struct ui_list list;
	int sort_col, sort_rev;
};

static void
pane_processes_endpoint(const struct top_target *t, char *buf, size_t len)
{
	snprintf(buf, len, "%.200s", t->ep.name);
}

/* The command with directories dropped from each word. */
static void
pane_processes_command(const struct top_target *t, char *out, size_t len)
{
	const char *p = t->command ? t->command : "?", *end, *slash;
	size_t off = 0;

	out[0] = '\0';
	while (*p != '\0' && off < len - 1) {
		end = strchr(p, ' ');
		if (end == NULL)
			end = p + strlen(p);
		slash = memrchr(p, '/', (size_t)(end - p));
		if (slash != NULL && slash + 1 < end)
			p = slash + 1;
		off += (size_t)snprintf(out + off, len - off, "%s%.*s",
		    off ? " " : "", (int)(end - p), p);
		if (off >= len)
			off = len - 1;
		p = *end ? end + 1 : end;
	}
}

static void
pane_processes_state(const struct top_target *t, char *buf, size_t len)
{
	snprintf(buf, len, "%s", top_state_names[t->state]);
}

static double
pane_processes_state_n(const struct top_target *t)
{
	return t->state;
}

/* Unknown ranks sort after every known one. */
static double
pane_processes_rank_n(const struct top_target *t)
{
	return t->rank >= 0 ? t->rank : 1e9;
}

static void
pane_processes_rank(const struct top_target *t, char *buf, size_t len)
{
	if (t->rank >= 0)
		snprintf(buf, len, "%d", t->rank);
	else
		snprintf(buf, len, "-");
}

static double
pane_processes_step_n(const struct top_target *t)
{
	return (double)top_target_last_step(t);
}

static void
pane_processes_step(const struct top_target *t, char *buf, size_t len)
{
	if (t->nsteps > 0)
		snprintf(buf, len, "%lld", (long long)top_target_last_step(t));
	else
		snprintf(buf, len, "-");
}

static double
pane_processes_mb_n(const struct top_target *t)
{
	return t->mb;
}

static void
pane_processes_mb(const struct top_target *t, char *buf, size_t len)
{
	if (t->mb >= 0)
		snprintf(buf, len, "%.0f", t->mb);
	else
		snprintf(buf, len, "-");
}

#define PANE_PROCESSES_SPARK_W   10 /* cells of the step-time sparkline */
#define PANE_PROCESSES_SPARK_PER 6  /* steps per cell: 60 steps in all */

/* The recent step times of t, grouped per cell (the slowest of each
 * group, so that a stall shows); how many cells. */
static int
pane_processes_spark_values(const struct top_target *t, double *cells)
{
	double v[TOP_STEPS];
	int n = top_target_step_times(t, v, TOP_STEPS);

	return ui_spark_buckets(
	    v, n, PANE_PROCESSES_SPARK_PER, cells, PANE_PROCESSES_SPARK_W);
}

/* The slowest of the steps the sparkline shows, for sorting. */
static double
pane_processes_spark_n(const struct top_target *t)
{
	double cells[PANE_PROCESSES_SPARK_W];

	return ui_chart_max(cells, pane_processes_spark_values(t, cells));
}

static void
pane_processes_spark(const struct top_target *t, char *buf, size_t len)
{
	double cells[PANE_PROCESSES_SPARK_W];
	int n = pane_processes_spark_values(t, cells);

	if (n == 0)
		snprintf(buf, len, "-");
	else
		ui_spark_text(buf, len, cells, n, t->top->utf8);
}

static enum ui_color
pane_processes_spark_color(const struct top_target *t)
{
	(void)t;
	return UI_SPARK;
}

/* The main thread's frame, or why there is none. */
static void
pane_processes_frame(const struct top_target *t, char *buf, size_t len)
{
	const char *frame = t->frame;

	if (t->state == TOP_UNPROBED)
		frame = "not probed: press i to inject";
	else if ((t->state == TOP_UNREACHABLE || t->state == TOP_EXITED ||
		     frame == NULL) &&
	    t->error != NULL)
		frame = t->error;
	snprintf(buf, len, "%s", frame ? frame : "");
}

/* The colour of t's state. */
static enum ui_color
pane_processes_color(const struct top_target *t)
{
	static const enum ui_color colors[] = {
		[TOP_CONNECTING] = UI_IDLE,
		[TOP_RUNNING] = UI_RUNNING,
		[TOP_IDLE] = UI_IDLE,
		[TOP_HUNG] = UI_HUNG,
		[TOP_UNREACHABLE] = UI_DEAD,
		[TOP_EXITED] = UI_DEAD,
		[TOP_UNPROBED] = UI_GREY,
	};

	return colors[t->state];
}

#define PANE_PROCESSES_MS(name, field)                   \
	{                                                \
		.title = name, .width = 7, .right = 1,   \
		.ms = offsetof(struct top_target, field) \
	}
static const struct pane_processes_col pane_processes_cols[] = {
	{ .title = "PID/ENDPOINT",
	    .width = 21,
	    .cell = pane_processes_endpoint },
	{ .title = "RANK",
	    .width = 4,
	    .right = 1,
	    .cell = pane_processes_rank,
	    .number = pane_processes_rank_n,
	    .small_first = 1,
	    .sort_first = 1 /* rank order, then pid */ },
	{ .title = "COMMAND", .width = 30, .cell = pane_processes_command },
	{ .title = "STATE",
	    .width = 11,
	    .cell = pane_processes_state,
	    .number = pane_processes_state_n,
	    .small_first = 1,
	    .color = pane_processes_color },
	{ .title = "STEP",
	    .width = 7,
	    .right = 1,
	    .cell = pane_processes_step,
	    .number = pane_processes_step_n },
	PANE_PROCESSES_MS("LAST ms", last_ms),
	PANE_PROCESSES_MS("MED ms", median_ms),
	{ .title = "LAST 60",
	    .width = PANE_PROCESSES_SPARK_W,
	    .cell = pane_processes_spark,
	    .number = pane_processes_spark_n,
	    .color = pane_processes_spark_color,
	    .screen_only = 1 },
	PANE_PROCESSES_MS("FWD ms", fwd_ms),
	PANE_PROCESSES_MS("BWD ms", bwd_ms),
	PANE_PROCESSES_MS("OPT ms", opt_ms),
	{ .title = "GPU MB",
	    .width = 7,
	    .right = 1,
	    .cell = pane_processes_mb,
	    .number = pane_processes_mb_n },
	{ .title = "MAIN THREAD (innermost Python frame)",
	    .cell = pane_processes_frame },
};
#define PANE_PROCESSES_NCOLS \
	((int)(sizeof pane_processes_cols / sizeof pane_processes_cols[0]))

/* How to sort: a column and a direction. */
struct pane_processes_order {
	int col, rev;
};

static int
pane_processes_cmp(const void *a, const void *b, void *arg)
{
	const struct top_target *x = *(struct top_target *const *)a;
	const struct top_target *y = *(struct top_target *const *)b;
	const struct pane_processes_order *o = arg;
	const struct pane_processes_col *col = &pane_processes_cols[o->col];
	char cx[256], cy[256];
	double dx, dy;
	int c;

	if (col->number != NULL || col->cell == NULL) {
		dx = col->number ? col->number(x)
				 : pane_processes_ms(x, col->ms);
		dy = col->number ? col->number(y)
				 : pane_processes_ms(y, col->ms);
		c = (dx > dy) - (dx < dy);
		if (!col->small_first)
			c = -c;
	} else if (o->col == 0 && x->ep.kind == ENDPOINT_PID &&
	    y->ep.kind == ENDPOINT_PID)
		c = (x->ep.pid > y->ep.pid) - (x->ep.pid < y->ep.pid);
	else {
		col->cell(x, cx, sizeof cx);
		col->cell(y, cy, sizeof cy);
		c = strcmp(cx, cy);
	}
	if (c == 0 && x->ep.kind == ENDPOINT_PID && y->ep.kind == ENDPOINT_PID)
		c = (x->ep.pid > y->ep.pid) - (x->ep.pid < y->ep.pid);
	if (c == 0)
		c = strcmp(x->ep.name, y->ep.name);
	return o->rev ? -c : c;
}

/* The column sorted by at first. */
static int
pane_processes_first_col(void)
{
	int c;

	for (c = 0; c < PANE_PROCESSES_NCOLS; c++)
		if (pane_processes_cols[c].sort_first)
			return c;
	return 0;
}

/* Orders top's targets by column col. */
static void
pane_processes_sort(struct top *top, int col, int rev)
{
	struct pane_processes_order o = { col, rev };

	if (top->ntargets > 1)
		qsort_r(top->targets, (size_t)top->ntargets,
		    sizeof *top->targets, pane_processes_cmp, &o);
}

/* Appends n bytes of s and pad spaces to buf at *off. */
static void
pane_processes_put(
    char *buf, size_t len, size_t *off, const char *s, size_t n, int pad)
{
	while (n > 0 && *off < len - 1) {
		buf[(*off)++] = *s++;
		n--;
	}
	while (pad-- > 0 && *off < len - 1)
		buf[(*off)++] = ' ';
	buf[*off] = '\0';
}

/* Appends column c's cell (text s) to buf at *off, cut and padded to the
 * column's width in screen columns; x is the cell's first screen column,
 * w the line's width. */
static void
pane_processes_cell(
    char *buf, size_t len, size_t *off, int c, const char *s, int x, int w)
{
	int cw = pane_processes_cols[c].width, cols;
	size_t n;

	if (c == PANE_PROCESSES_NCOLS - 1) {
		pane_processes_put(buf, len, off, s, strlen(s), 0);
		return;
	}
	if (cw == 0)
		cw = w - x > 0 ? w - x : 0;
	n = ui_fit(s, cw, &cols);
	if (pane_processes_cols[c].right) {
		pane_processes_put(buf, len, off, "", 0, cw - cols);
		pane_processes_put(buf, len, off, s, n, 1);
	} else
		pane_processes_put(buf, len, off, s, n, cw - cols + 1);
}

/* Whether column c shows: on the screen, or also in --batch. */
static int
pane_processes_shows(int c, int screen)
{
	return screen || !pane_processes_cols[c].screen_only;
}

static void
pane_processes_header(char *buf, size_t len, int w, int screen)
{
	size_t off = 0;
	int c, x = 0;

	buf[0] = '\0';
	for (c = 0; c < PANE_PROCESSES_NCOLS; c++) {
		if (!pane_processes_shows(c, screen))
			continue;
		pane_processes_cell(
		    buf, len, &off, c, pane_processes_cols[c].title, x, w);
		x += pane_processes_cols[c].width + 1;
	}
}

static void
pane_processes_line(
    const struct top_target *t, char *buf, size_t len, int w, int screen)
{
	char cell[256];
	size_t off = 0;
	int c, x = 0;

	buf[0] = '\0';
	for (c = 0; c < PANE_PROCESSES_NCOLS; c++) {
		if (!pane_processes_shows(c, screen))
			continue;
		if (pane_processes_cols[c].cell != NULL)
			pane_processes_cols[c].cell(t, cell, sizeof cell);
		else
			fmt_ms(cell, sizeof cell,
			    pane_processes_ms(t, pane_processes_cols[c].ms));
		pane_processes_cell(buf, len, &off, c, cell, x, w);
		x += pane_processes_cols[c].width + 1;
	}
}

/* Column c's first screen column. */
static int
pane_processes_x(int c)
{
	int i, x = 0;

	for (i = 0; i < c; i++)
		x += pane_processes_cols[i].width + 1;
	return x;
}

static void
pane_processes_init(struct pane *p)
{
	struct pane_processes *pp = xcalloc(1, sizeof *pp);

	pp->list.select = 1;
	pp->sort_col = pane_processes_first_col();
	p->data = pp;
}

/* The index of the selected target, 0 when none. */
static int
pane_processes_selected(struct top *top)
{
	struct top_target *sel = top_selected(top);
	int i;

	for (i = 0; i < top->ntargets; i++)
		if (top->targets[i] == sel)
			return i;
	return 0;
}

static void
pane_processes_draw(struct pane *p, WINDOW *win, int y, int h, int w)
{
	struct pane_processes *pp = p->data;
	struct top *top = p->top;
	struct top_target *t;
	char line[1024];
	int i, c, row, sx, sw;

	pane_processes_sort(top, pp->sort_col, pp->sort_rev);
	pane_processes_header(line, sizeof line, w, 1);
	wattrset(win, ui_attr(UI_HEADER));
	mvwhline(win, y, 0, ' ', w);
	ui_text(win, y, 0, w, line);
	sx = pane_processes_x(pp->sort_col);
	sw = pane_processes_cols[pp->sort_col].width;
	if (sw == 0)
		sw = w - sx;
	if (sx < w)
		ui_chgat(win, y, sx, sw < w - sx ? sw : w - sx,
		    ui_attr(UI_SELECTED) | A_BOLD);
	wattrset(win, A_NORMAL);
	pp->list.sel = pane_processes_selected(top);
	ui_list_fit(&pp->list, top->ntargets, h - 1);
	if (top->ntargets == 0) {
		ui_text(win, y + 2, 2, w - 2,
		    top->scan ? "no Python process found yet (start one with "
				"PROBING=1, or it appears here to inject)"
			      : "no targets");
		return;
	}
	for (row = 0, i = pp->list.first; i < top->ntargets && row < h - 1;
	     i++, row++) {
		t = top->targets[i];
		pane_processes_line(t, line, sizeof line, w, 1);
		if (i == pp->list.sel) {
			wattrset(win, ui_attr(UI_SELECTED));
			mvwhline(win, y + 1 + row, 0, ' ', w);
		} else
			wattrset(win,
			    t->state == TOP_UNPROBED ? ui_attr(UI_GREY)
						     : (int)A_NORMAL);
		ui_text(win, y + 1 + row, 0, w, line);
		for (c = 0; c < PANE_PROCESSES_NCOLS; c++)
			if (pane_processes_cols[c].color != NULL &&
			    i != pp->list.sel && t->state != TOP_UNPROBED)
				ui_chgat(win, y + 1 + row, pane_processes_x(c),
				    pane_processes_cols[c].width,
				    ui_attr(pane_processes_cols[c].color(t)));
		wattrset(win, A_NORMAL);
	}
}

static int
pane_processes_key(struct pane *p, int key)
{
	struct pane_processes *pp = p->data;
	struct top *top = p->top;

	pp->list.sel = pane_processes_selected(top);
	if (ui_list_key(&pp->list, key)) {
		if (top->ntargets > 0)
			top->sel = top->targets[pp->list.sel];
		return 1;
	}
	switch (key) {
	case '<':
		pp->sort_col = (pp->sort_col + PANE_PROCESSES_NCOLS - 1) %
		    PANE_PROCESSES_NCOLS;
		return 1;
	case '>':
		pp->sort_col = (pp->sort_col + 1) % PANE_PROCESSES_NCOLS;
		return 1;
	case 'I':
		pp->sort_rev = !pp->sort_rev;
		return 1;
	case 'i':
		top_inject(top, top_selected(top));
		return 1;
	case '\r':
	case '\n':
	case KEY_ENTER:
		if (top->ntargets > 0) {
			top->sel = top->targets[pp->list.sel];
			top->detail = 1;
		}
		return 1;
	default:
		return 0;
	}
}

static void
pane_processes_free(struct pane *p)
{
	free(p->data);
	p->data = NULL;
}

void
pane_processes_print(struct top *top, FILE *f)
{
	int counts[TOP_UNPROBED + 1] = { 0 }, i;
	char line[2048], clock[16];
	time_t now = time(NULL);
	struct tm tm;

	pane_processes_sort(top, pane_processes_first_col(), 0);
	for (i = 0; i < top->ntargets; i++)
		counts[top->targets[i]->state]++;
	localtime_r(&now, &tm);
	strftime(clock, sizeof clock, "%H:%M:%S", &tm);
	fprintf(f, "probing top - %s, %d target%s:", clock,
	    top->ntargets - counts[TOP_UNPROBED],
	    top->ntargets - counts[TOP_UNPROBED] == 1 ? "" : "s");
	for (i = 0; i <= TOP_UNPROBED; i++)
		if (counts[i] > 0)
			fprintf(f, " %d %s", counts[i], top_state_names[i]);
	fputs("\n\n", f);
	pane_processes_header(line, sizeof line, 1000, 0);
	fprintf(f, "%s\n", line);
	for (i = 0; i < top->ntargets; i++) {
		pane_processes_line(
		    top->targets[i], line, sizeof line, 1000, 0);
		fprintf(f, "%s\n", line);
	}
	fputc('\n', f);
}

const struct pane_type pane_processes_type = {
	.name = "Processes",
	.label = "Procs",
	.hints = "Enter its charts  < > sort column  I invert  i inject "
		 "into a grey one",
	.init = pane_processes_init,
	.draw = pane_processes_draw,
	.key = pane_processes_key,
	.free = pane_processes_free,
};
