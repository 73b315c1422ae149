/* The Processes pane: one row per target with its state, step times,
 * forward/backward/optimizer time, GPU memory and main-thread frame. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xmalloc.h"
#include "top.h"

/* Columns; the last one takes what is left of the width. */
static const struct {
	const char *title;
	int width;
	int right;
} pane_processes_cols[] = {
	{ "PID/ENDPOINT", 21, 0 },
	{ "COMMAND", 30, 0 },
	{ "STATE", 11, 0 },
	{ "STEP", 7, 1 },
	{ "LAST ms", 8, 1 },
	{ "MED ms", 8, 1 },
	{ "FWD ms", 8, 1 },
	{ "BWD ms", 8, 1 },
	{ "OPT ms", 8, 1 },
	{ "GPU MB", 8, 1 },
	{ "MAIN THREAD (innermost Python frame)", 0, 0 },
};
#define PANE_PROCESSES_NCOLS \
	((int)(sizeof pane_processes_cols / sizeof pane_processes_cols[0]))

/* Scroll position; owned by the pane. */
struct pane_processes {
	int first;
};

/* Appends column c's cell (text s) to buf at *off. */
static void
pane_processes_cell(
    char *buf, size_t len, size_t *off, int c, const char *s, int w)
{
	int cw = pane_processes_cols[c].width, n;
	char cut[256];

	if (*off >= len - 1)
		return;
	if (cw == 0)
		cw = w - (int)*off > 0 ? w - (int)*off : 0;
	snprintf(cut, sizeof cut, "%s", s);
	if ((int)strlen(cut) > cw && cw > 0 && c != PANE_PROCESSES_NCOLS - 1)
		cut[cw] = '\0';
	if (pane_processes_cols[c].right)
		n = snprintf(buf + *off, len - *off, "%*s ", cw, cut);
	else if (c == PANE_PROCESSES_NCOLS - 1)
		n = snprintf(buf + *off, len - *off, "%s", cut);
	else
		n = snprintf(buf + *off, len - *off, "%-*s ", cw, cut);
	if (n > 0)
		*off += (size_t)n < len - *off ? (size_t)n : len - *off - 1;
}

void
pane_processes_header(char *buf, size_t len, int w)
{
	size_t off = 0;
	int c;

	buf[0] = '\0';
	for (c = 0; c < PANE_PROCESSES_NCOLS; c++)
		pane_processes_cell(
		    buf, len, &off, c, pane_processes_cols[c].title, w);
}

/* The command with directories dropped from each word. */
static void
pane_processes_command(const char *cmd, char *out, size_t len)
{
	const char *p = cmd, *end, *slash;
	size_t off = 0;

	out[0] = '\0';
	while (p != NULL && *p != '\0' && off < len - 1) {
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

void
pane_processes_line(struct top_target *t, char *buf, size_t len, int w)
{
	char cell[256], cmd[256];
	const char *frame;
	size_t off = 0;
	int c;

	buf[0] = '\0';
	for (c = 0; c < PANE_PROCESSES_NCOLS; c++) {
		switch (c) {
		case 0:
			snprintf(cell, sizeof cell, "%.200s", t->ep.name);
			break;
		case 1:
			pane_processes_command(
			    t->command ? t->command : "?", cmd, sizeof cmd);
			snprintf(cell, sizeof cell, "%s", cmd);
			break;
		case 2:
			snprintf(
			    cell, sizeof cell, "%s", top_state_names[t->state]);
			break;
		case 3:
			if (t->nsteps > 0)
				snprintf(cell, sizeof cell, "%lld",
				    (long long)t
					->steps[(t->first + t->nsteps - 1) %
					    TOP_STEPS]
					.step);
			else
				snprintf(cell, sizeof cell, "-");
			break;
		case 4:
			top_fmt_ms(cell, sizeof cell, t->last_ms);
			break;
		case 5:
			top_fmt_ms(cell, sizeof cell, t->median_ms);
			break;
		case 6:
			top_fmt_ms(cell, sizeof cell, t->fwd_ms);
			break;
		case 7:
			top_fmt_ms(cell, sizeof cell, t->bwd_ms);
			break;
		case 8:
			top_fmt_ms(cell, sizeof cell, t->opt_ms);
			break;
		case 9:
			if (t->mb >= 0)
				snprintf(cell, sizeof cell, "%.0f", t->mb);
			else
				snprintf(cell, sizeof cell, "-");
			break;
		default:
			frame = t->frame;
			if (t->state == TOP_UNPROBED)
				frame = "not probed: press i to inject";
			else if ((t->state == TOP_UNREACHABLE ||
				     t->state == TOP_EXITED || frame == NULL) &&
			    t->error != NULL)
				frame = t->error;
			snprintf(cell, sizeof cell, "%s", frame ? frame : "");
			break;
		}
		pane_processes_cell(buf, len, &off, c, cell, w);
	}
}

static enum ui_color
pane_processes_color(enum top_state s)
{
	switch (s) {
	case TOP_RUNNING:
		return UI_RUNNING;
	case TOP_IDLE:
	case TOP_CONNECTING:
		return UI_IDLE;
	case TOP_HUNG:
		return UI_HUNG;
	case TOP_EXITED:
	case TOP_UNREACHABLE:
		return UI_DEAD;
	default:
		return UI_GREY;
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
	p->data = xcalloc(1, sizeof(struct pane_processes));
}

static void
pane_processes_draw(struct pane *p, WINDOW *win, int y, int h, int w)
{
	struct pane_processes *pp = p->data;
	struct top *top = p->top;
	struct top_target *sel, *t;
	char line[1024];
	int i, row, sx, sw, selidx = 0;

	top_sort(top);
	sel = top_selected(top);
	pane_processes_header(line, sizeof line, w);
	wattrset(win, ui_attr(UI_HEADER));
	mvwhline(win, y, 0, ' ', w);
	ui_text(win, y, 0, w, line);
	sx = pane_processes_x(top->sort_col);
	sw = pane_processes_cols[top->sort_col].width;
	if (sw == 0)
		sw = w - sx;
	if (sx < w)
		ui_chgat(win, y, sx, sw < w - sx ? sw : w - sx,
		    ui_attr(UI_SELECTED) | A_BOLD);
	wattrset(win, A_NORMAL);
	for (i = 0; i < top->ntargets; i++)
		if (top->targets[i] == sel)
			selidx = i;
	h -= 1;
	if (selidx < pp->first)
		pp->first = selidx;
	if (h > 0 && selidx >= pp->first + h)
		pp->first = selidx - h + 1;
	if (pp->first > top->ntargets - 1)
		pp->first = 0;
	if (top->ntargets == 0) {
		ui_text(win, y + 2, 2, w - 2,
		    top->scan ? "no Python process found yet (start one with "
				"PROBING=1, or it appears here to inject)"
			      : "no targets");
		return;
	}
	for (row = 0, i = pp->first; i < top->ntargets && row < h; i++, row++) {
		t = top->targets[i];
		pane_processes_line(t, line, sizeof line, w);
		if (t == sel) {
			wattrset(win, ui_attr(UI_SELECTED));
			mvwhline(win, y + 1 + row, 0, ' ', w);
		} else
			wattrset(win,
			    t->state == TOP_UNPROBED ? ui_attr(UI_GREY)
						     : (int)A_NORMAL);
		ui_text(win, y + 1 + row, 0, w, line);
		if (t != sel && t->state != TOP_UNPROBED)
			ui_chgat(win, y + 1 + row, pane_processes_x(2),
			    pane_processes_cols[2].width,
			    ui_attr(pane_processes_color(t->state)));
		wattrset(win, A_NORMAL);
	}
}

static int
pane_processes_key(struct pane *p, int key)
{
	struct top *top = p->top;
	struct top_target *sel = top_selected(top);
	int i, idx = 0;

	for (i = 0; i < top->ntargets; i++)
		if (top->targets[i] == sel)
			idx = i;
	switch (key) {
	case KEY_UP:
	case 'k':
		idx--;
		break;
	case KEY_DOWN:
	case 'j':
		idx++;
		break;
	case KEY_PPAGE:
		idx -= 10;
		break;
	case KEY_NPAGE:
		idx += 10;
		break;
	case KEY_HOME:
		idx = 0;
		break;
	case KEY_END:
		idx = top->ntargets - 1;
		break;
	case '<':
		top->sort_col = (top->sort_col + PANE_PROCESSES_NCOLS - 1) %
		    PANE_PROCESSES_NCOLS;
		return 1;
	case '>':
		top->sort_col = (top->sort_col + 1) % PANE_PROCESSES_NCOLS;
		return 1;
	case 'I':
		top->sort_rev = !top->sort_rev;
		return 1;
	case 'i':
		top_inject(top, sel);
		return 1;
	case '\r':
	case '\n':
	case KEY_ENTER:
		top->current = TOP_PANE_MODULES;
		top->all_modules = 0;
		return 1;
	default:
		return 0;
	}
	if (idx >= top->ntargets)
		idx = top->ntargets - 1;
	if (idx < 0)
		idx = 0;
	if (top->ntargets > 0)
		top->sel = top->targets[idx];
	return 1;
}

static void
pane_processes_resize(struct pane *p, int h, int w)
{
	(void)p;
	(void)h;
	(void)w;
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
	pane_processes_header(line, sizeof line, 1000);
	fprintf(f, "%s\n", line);
	for (i = 0; i < top->ntargets; i++) {
		pane_processes_line(top->targets[i], line, sizeof line, 1000);
		fprintf(f, "%s\n", line);
	}
	fputc('\n', f);
}

const struct pane_type pane_processes_type = {
	.name = "Processes",
	.fkey = 2,
	.hints = "Up/Down select  Enter its modules  < > sort column  I "
		 "invert  i inject into a grey one",
	.init = pane_processes_init,
	.draw = pane_processes_draw,
	.key = pane_processes_key,
	.resize = pane_processes_resize,
	.free = pane_processes_free,
};
