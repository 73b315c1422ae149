/* The detail view of `probing top`: the selected target's step time and
 * allocated memory over its recent steps, as two column charts over the
 * current pane. Enter on a process opens it; Esc, Enter or q closes it,
 * Left/Right show another target, m its modules. It keeps no state of its
 * own: top->detail says it is open, top->sel which target it shows. */
#include <stdio.h>
#include <string.h>

#include "top.h"

#define UI_DETAIL_AXIS  10 /* columns of the value labels left of a chart */
#define UI_DETAIL_MAX_H 12 /* rows of one chart at most */

const char ui_detail_hints[] =
    "Esc/Enter/q close  Left/Right other target  m its modules";

/* One chart: a bold title line, then h rows of columns with the largest
 * value labelled at the top and zero at the bottom (no rows when every
 * value is zero); label formats a value for the axis. Returns the rows
 * used. */
static int
ui_detail_chart(struct top *top, WINDOW *win, int y, int h, int w,
    const char *title, const double *v, int n,
    void (*label)(char *, size_t, double))
{
	char line[256], top_label[32];
	double hi = ui_chart_max(v, n);
	int cw = w - UI_DETAIL_AXIS;

	wattrset(win, A_BOLD);
	ui_text(win, y, 0, w, title);
	wattrset(win, A_NORMAL);
	if (n == 0 || cw <= 0) {
		ui_text(win, y + 1, 2, w - 2, "no steps traced yet");
		return 2;
	}
	if (hi <= 0)
		return 1; /* all zero: the title says so */
	label(top_label, sizeof top_label, hi);
	snprintf(line, sizeof line, "%*s ", UI_DETAIL_AXIS - 2, top_label);
	ui_text(win, y + 1, 0, UI_DETAIL_AXIS, line);
	snprintf(line, sizeof line, "%*s ", UI_DETAIL_AXIS - 2, "0");
	ui_text(win, y + h, 0, UI_DETAIL_AXIS, line);
	wattrset(win, ui_attr(UI_SPARK));
	ui_chart(win, y + 1, UI_DETAIL_AXIS, h, cw, v, n, top->utf8);
	wattrset(win, A_NORMAL);
	return h + 1;
}

static void
ui_detail_ms(char *buf, size_t len, double secs)
{
	char ms[24];

	fmt_ms(ms, sizeof ms, secs);
	snprintf(buf, len, "%s ms", ms);
}

static void
ui_detail_mb(char *buf, size_t len, double mb)
{
	snprintf(buf, len, "%.0f MB", mb);
}

void
ui_detail_draw(struct top *top, WINDOW *win, int y, int h, int w)
{
	struct top_target *t = top_selected(top);
	double times[TOP_STEPS], mbs[TOP_STEPS];
	char line[512], title[256], last[32], med[32], hi[48];
	int nt, nm, ch, used;

	if (t == NULL) {
		ui_text(win, y + 1, 2, w - 2, "no targets");
		return;
	}
	nt = top_target_step_times(t, times, TOP_STEPS);
	nm = top_target_step_mbs(t, mbs, TOP_STEPS);
	wattrset(win, A_BOLD);
	snprintf(line, sizeof line, "Charts of %s  %s", t->ep.name,
	    t->command ? t->command : "");
	ui_text(win, y, 0, w, line);
	wattrset(win, A_NORMAL);
	fmt_ms(last, sizeof last, t->last_ms);
	fmt_ms(med, sizeof med, t->median_ms);
	snprintf(line, sizeof line, "%s, step %lld, last %s ms, median %s ms",
	    top_state_names[t->state], (long long)top_target_last_step(t), last,
	    med);
	ui_text(win, y + 1, 0, w, line);
	ch = (h - 3) / 2 - 2;
	if (ch > UI_DETAIL_MAX_H)
		ch = UI_DETAIL_MAX_H;
	if (ch < 1)
		ch = 1;
	/* Each chart shows the newest steps that fit its width. */
	if (nt > w - UI_DETAIL_AXIS && w > UI_DETAIL_AXIS) {
		memmove(times, times + nt - (w - UI_DETAIL_AXIS),
		    (size_t)(w - UI_DETAIL_AXIS) * sizeof *times);
		nt = w - UI_DETAIL_AXIS;
	}
	if (nm > w - UI_DETAIL_AXIS && w > UI_DETAIL_AXIS) {
		memmove(mbs, mbs + nm - (w - UI_DETAIL_AXIS),
		    (size_t)(w - UI_DETAIL_AXIS) * sizeof *mbs);
		nm = w - UI_DETAIL_AXIS;
	}
	ui_detail_ms(hi, sizeof hi, ui_chart_max(times, nt));
	snprintf(title, sizeof title,
	    "Step time over the last %d steps (one column a step, max %s)", nt,
	    hi);
	used = ui_detail_chart(
	    top, win, y + 3, ch, w, title, times, nt, ui_detail_ms);
	if (nm > 0 && ui_chart_max(mbs, nm) <= 0)
		snprintf(title, sizeof title,
		    "Allocated memory over the last %d steps: 0 MB (no CUDA "
		    "memory allocated)",
		    nm);
	else {
		ui_detail_mb(hi, sizeof hi, ui_chart_max(mbs, nm));
		snprintf(title, sizeof title,
		    "Allocated memory over the last %d steps (torch.cuda, max "
		    "%s)",
		    nm, hi);
	}
	ui_detail_chart(
	    top, win, y + 4 + used, ch, w, title, mbs, nm, ui_detail_mb);
}

/* Selects the target d places away from the selected one, if any. */
static void
ui_detail_move(struct top *top, int d)
{
	struct top_target *t = top_selected(top);
	int i;

	for (i = 0; i < top->ntargets; i++)
		if (top->targets[i] == t)
			break;
	i += d;
	if (i >= 0 && i < top->ntargets)
		top->sel = top->targets[i];
}

int
ui_detail_key(struct top *top, int key)
{
	if ((key >= KEY_F(1) && key <= KEY_F(12)) ||
	    (key >= '1' && key <= '9') || key == '?')
		return 0; /* help, quit and pane keys work as anywhere */
	switch (key) {
	case 27:
	case 'q':
	case '\r':
	case '\n':
	case KEY_ENTER:
		top->detail = 0;
		break;
	case KEY_LEFT:
	case KEY_RIGHT:
		ui_detail_move(top, key == KEY_LEFT ? -1 : 1);
		break;
	case 'm':
		top->detail = 0;
		top->all_modules = 0;
		top->current = TOP_PANE_MODULES;
		break;
	default:
		break; /* the pane under it does not get its keys */
	}
	return 1;
}
