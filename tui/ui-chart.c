/* Small charts for the screen of `probing top`: a one-row sparkline, a
 * horizontal bar and a several-row column chart, drawn with Unicode block
 * characters when the locale's codeset is UTF-8 and with ASCII otherwise
 * (top->utf8, set by ui_start from nl_langinfo(CODESET)). Every chart
 * starts at zero, so heights compare honestly; they only draw, they keep
 * nothing. */
#include <math.h>
#include <stdio.h>

#include "top.h"

/* Eighths of a cell, bottom up and left to right; index 0 is empty. */
static const char *const ui_chart_up[] = { " ", "\u2581", "\u2582", "\u2583",
	"\u2584", "\u2585", "\u2586", "\u2587", "\u2588" };
static const char *const ui_chart_right[] = { " ", "\u258f", "\u258e", "\u258d",
	"\u258c", "\u258b", "\u258a", "\u2589", "\u2588" };
static const char ui_chart_up_ascii[] = " _.-:=+*#";
static const char ui_chart_right_ascii[] = " ..--==+#";

/* Writes the eighths e (0..8) of one cell at (y, x). */
static void
ui_chart_cell(WINDOW *win, int y, int x, int e, int utf8, int up)
{
	if (e < 0)
		e = 0;
	if (e > 8)
		e = 8;
	if (utf8)
		mvwaddstr(win, y, x, (up ? ui_chart_up : ui_chart_right)[e]);
	else
		mvwaddch(win, y, x,
		    (chtype)(up ? ui_chart_up_ascii : ui_chart_right_ascii)[e]);
}

double
ui_chart_max(const double *v, int n)
{
	double hi = 0;
	int i;

	for (i = 0; i < n; i++)
		hi = fmax(hi, v[i]);
	return hi;
}

int
ui_spark_buckets(const double *v, int n, int per, double *out, int max)
{
	int i, k = 0, skip;

	if (per < 1)
		per = 1;
	skip = n > max * per ? n - max * per : 0;
	/* Whole buckets only, so the newest step always ends the last. */
	skip += (n - skip) % per;
	for (i = skip; i < n; i += per) {
		out[k] = ui_chart_max(v + i, per);
		k++;
	}
	return k;
}

void
ui_spark_text(char *buf, size_t len, const double *v, int n, int utf8)
{
	double hi = ui_chart_max(v, n);
	size_t off = 0;
	int i, e;

	buf[0] = '\0';
	for (i = 0; i < n; i++) {
		e = hi > 0 ? 1 + (int)(v[i] / hi * 7.999) : 1;
		off += (size_t)snprintf(buf + off, len - off, "%s",
		    utf8 ? ui_chart_up[e]
			 : (char[]){ ui_chart_up_ascii[e], 0 });
		if (off >= len)
			break;
	}
}

void
ui_spark(WINDOW *win, int y, int x, int w, const double *v, int n, int utf8)
{
	char buf[TOP_STEPS * 4];
	int skip = n > w ? n - w : 0;

	if (w <= 0)
		return;
	if (n - skip > TOP_STEPS)
		skip = n - TOP_STEPS;
	ui_spark_text(buf, sizeof buf, v + skip, n - skip, utf8);
	mvwaddstr(win, y, x, buf);
}

void
ui_bar(WINDOW *win, int y, int x, int w, double frac, int utf8)
{
	int e, i;

	if (!(frac > 0))
		return;
	e = (int)lround(fmin(frac, 1) * w * 8);
	if (e == 0)
		e = 1; /* a module that ran at all shows */
	for (i = 0; i < w && e > 0; i++, e -= 8)
		ui_chart_cell(win, y, x + i, e, utf8, 0);
}

void
ui_chart(
    WINDOW *win, int y, int x, int h, int w, const double *v, int n, int utf8)
{
	double hi = ui_chart_max(v, n);
	int i, r, e, skip = n > w ? n - w : 0;

	if (h <= 0)
		return;
	for (i = skip; i < n; i++) {
		e = hi > 0 ? (int)lround(v[i] / hi * h * 8) : 0;
		if (e == 0 && v[i] > 0)
			e = 1;
		for (r = 0; r < h; r++)
			ui_chart_cell(win, y + h - 1 - r, x + i - skip,
			    e - r * 8, utf8, 1);
	}
}
