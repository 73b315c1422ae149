/* The SQL pane: a prompt with history, run against the selected target
 * or all of them (then a first column names the target), the result in a
 * grid that scrolls both ways, errors shown inline. */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "proto.h"
#include "xmalloc.h"
#include "top.h"

#define PANE_SQL_MAX_COL_W 48

/* The pane's state: the input line, the running query and the result. */
struct pane_sql {
	struct ui_line line;
	int all;        /* run against every target */
	int grid_focus; /* arrows scroll the grid */
	unsigned gen;
	int waiting; /* replies still to come */
	int nreq;
	json_t **replies; /* per request: result or NULL */
	char **errors;    /* per request: cause or NULL */
	struct top_target **req_targets;
	double started; /* clock_ms() */

	json_t *result; /* {"columns": [...], "rows": [...]} or NULL */
	char **msgs;    /* errors to show */
	int nmsgs;
	double took_ms;
	struct ui_list rows; /* the grid's rows */
	int col0;
	int *widths;
	int ncols;
};

/* What a request carries back. */
struct pane_sql_req {
	struct pane_sql *ps;
	struct top *top;
	unsigned gen;
	int idx;
};

static void
pane_sql_clear_result(struct pane_sql *ps)
{
	int i;

	json_decref(ps->result);
	ps->result = NULL;
	for (i = 0; i < ps->nmsgs; i++)
		free(ps->msgs[i]);
	free(ps->msgs);
	ps->msgs = NULL;
	ps->nmsgs = 0;
	free(ps->widths);
	ps->widths = NULL;
	ps->ncols = 0;
	ps->rows.first = ps->col0 = 0;
}

static void
pane_sql_clear_pending(struct pane_sql *ps)
{
	int i;

	for (i = 0; i < ps->nreq; i++) {
		json_decref(ps->replies[i]);
		free(ps->errors[i]);
	}
	free(ps->replies);
	free(ps->errors);
	free(ps->req_targets);
	ps->replies = NULL;
	ps->errors = NULL;
	ps->req_targets = NULL;
	ps->nreq = 0;
}

/* Adds the message "a: b" to show. */
static void
pane_sql_msg(struct pane_sql *ps, const char *a, const char *b)
{
	char *s;

	xasprintf(&s, "%s: %s", a, b);
	ps->msgs =
	    xrealloc(ps->msgs, (size_t)(ps->nmsgs + 1) * sizeof *ps->msgs);
	ps->msgs[ps->nmsgs++] = s;
}

/* Column widths of the result, capped. */
static void
pane_sql_widths(struct pane_sql *ps)
{
	json_t *cols = json_object_get(ps->result, "columns");
	json_t *rows = json_object_get(ps->result, "rows"), *row;
	size_t i, j;
	char *s;
	int n;

	ps->ncols = (int)json_array_size(cols);
	ps->widths = xcalloc((size_t)ps->ncols + 1, sizeof *ps->widths);
	for (j = 0; j < (size_t)ps->ncols; j++)
		ps->widths[j] = (int)strlen(
		    json_string_value(json_array_get(cols, j)) ?: "");
	json_array_foreach(rows, i, row)
	{
		if (i > 2000)
			break;
		for (j = 0; j < (size_t)ps->ncols; j++) {
			s = fmt_value(json_array_get(row, j));
			n = (int)strlen(s);
			if (n > ps->widths[j])
				ps->widths[j] = n;
			free(s);
		}
	}
	for (j = 0; j < (size_t)ps->ncols; j++)
		if (ps->widths[j] > PANE_SQL_MAX_COL_W)
			ps->widths[j] = PANE_SQL_MAX_COL_W;
}

/* All replies are in: merge them into one grid. */
static void
pane_sql_merge(struct pane_sql *ps)
{
	json_t *merged = NULL;
	int i, several = ps->all;

	pane_sql_clear_result(ps);
	for (i = 0; i < ps->nreq; i++) {
		if (ps->errors[i] != NULL) {
			if (several)
				pane_sql_msg(ps, ps->req_targets[i]->ep.name,
				    ps->errors[i]);
			else
				pane_sql_msg(ps, "error", ps->errors[i]);
			continue;
		}
		if (!several) {
			merged = json_incref(ps->replies[i]);
			continue;
		}
		fmt_merge_target(
		    &merged, ps->replies[i], ps->req_targets[i]->ep.name);
	}
	ps->result = merged;
	ps->took_ms = clock_ms() - ps->started;
	if (merged != NULL)
		pane_sql_widths(ps);
	pane_sql_clear_pending(ps);
}

static void
pane_sql_cb(void *arg, const struct aclient_reply *r)
{
	struct pane_sql_req *req = arg;
	struct pane_sql *ps = req->ps;

	if (req->gen == ps->gen) {
		if (r->cause != NULL)
			ps->errors[req->idx] = xstrdup(r->cause);
		else
			ps->replies[req->idx] = json_incref(r->body);
		if (--ps->waiting == 0)
			pane_sql_merge(ps);
		top_changed(req->top);
	}
	free(req);
}

static void
pane_sql_run(struct pane *p)
{
	struct pane_sql *ps = p->data;
	struct top *top = p->top;
	struct top_target *t, *sel = top_selected(top);
	struct pane_sql_req *req;
	json_t *body;
	int i, n = 0;

	pane_sql_clear_pending(ps);
	pane_sql_clear_result(ps);
	ps->gen++;
	ps->waiting = 0;
	ps->replies = xcalloc((size_t)top->ntargets + 1, sizeof *ps->replies);
	ps->errors = xcalloc((size_t)top->ntargets + 1, sizeof *ps->errors);
	ps->req_targets =
	    xcalloc((size_t)top->ntargets + 1, sizeof *ps->req_targets);
	for (i = 0; i < top->ntargets; i++) {
		t = top->targets[i];
		if (t->ac == NULL || (!ps->all && t != sel))
			continue;
		if (ps->all && t->state == TOP_EXITED)
			continue;
		ps->req_targets[n++] = t;
	}
	ps->nreq = n;
	if (n == 0) {
		pane_sql_msg(ps, "error",
		    sel != NULL && sel->ac == NULL
			? "the selected process is not probed"
			: "no target to query");
		return;
	}
	ps->started = clock_ms();
	body = json_pack("{s:s}", "sql", ps->line.buf);
	for (i = 0; i < n; i++) {
		req = xcalloc(1, sizeof *req);
		req->ps = ps;
		req->top = top;
		req->gen = ps->gen;
		req->idx = i;
		ps->waiting++;
		aclient_request(ps->req_targets[i]->ac, "POST", PROTO_QUERY,
		    body, top->ctx->timeout_ms, top->ctx->timeout_ms + 3000,
		    pane_sql_cb, req);
	}
	json_decref(body);
	ui_line_clear(&ps->line);
}

static void
pane_sql_init(struct pane *p)
{
	p->data = xcalloc(1, sizeof(struct pane_sql));
}

/* Draws the grid from (y, 0), h rows, w columns. */
static void
pane_sql_grid(struct pane_sql *ps, WINDOW *win, int y, int h, int w)
{
	json_t *cols = json_object_get(ps->result, "columns");
	json_t *rows = json_object_get(ps->result, "rows");
	int nrows = (int)json_array_size(rows), r, c, x;
	char *s;

	ui_list_fit(&ps->rows, nrows, h - 1);
	if (ps->col0 >= ps->ncols)
		ps->col0 = ps->ncols - 1;
	if (ps->col0 < 0)
		ps->col0 = 0;
	wattrset(win, ui_attr(UI_HEADER));
	mvwhline(win, y, 0, ' ', w);
	for (c = ps->col0, x = 0; c < ps->ncols && x < w; c++) {
		ui_text(win, y, x, w - x,
		    json_string_value(json_array_get(cols, (size_t)c)) ?: "");
		x += ps->widths[c] + 2;
	}
	wattrset(win, A_NORMAL);
	for (r = 0; r < h - 1 && ps->rows.first + r < nrows; r++) {
		json_t *row =
		    json_array_get(rows, (size_t)ps->rows.first + (size_t)r);

		for (c = ps->col0, x = 0; c < ps->ncols && x < w; c++) {
			json_t *v = json_array_get(row, (size_t)c);
			int cw = ps->widths[c], n;

			s = fmt_value(v);
			n = (int)strlen(s);
			if (json_is_number(v) && n < cw)
				ui_text(win, y + 1 + r, x + cw - n,
				    w - x - (cw - n), s);
			else {
				if (json_is_null(v))
					wattrset(win, A_DIM);
				ui_text(win, y + 1 + r, x,
				    cw < w - x ? cw : w - x,
				    json_is_null(v) ? "NULL" : s);
				wattrset(win, A_NORMAL);
			}
			free(s);
			x += cw + 2;
		}
	}
}

static void
pane_sql_draw(struct pane *p, WINDOW *win, int y, int h, int w)
{
	struct pane_sql *ps = p->data;
	struct top_target *sel = top_selected(p->top);
	char prompt[128], info[256];
	int i, yy;

	snprintf(prompt, sizeof prompt, "sql [%.60s]> ",
	    ps->all ? "all" : (sel ? sel->ep.name : "-"));
	ui_line_draw(&ps->line, win, y, w, prompt);
	yy = y + 1;
	if (ps->waiting > 0) {
		snprintf(info, sizeof info, "running on %d target%s...",
		    ps->waiting, ps->waiting == 1 ? "" : "s");
		ui_text(win, yy++, 0, w, info);
	}
	wattrset(win, ui_attr(UI_ERROR));
	for (i = 0; i < ps->nmsgs && yy < y + h - 2; i++)
		ui_text(win, yy++, 0, w, ps->msgs[i]);
	wattrset(win, A_NORMAL);
	if (ps->result == NULL) {
		if (ps->nmsgs == 0 && ps->waiting == 0)
			ui_text(win, yy + 1, 2, w - 2,
			    "type SQL and Enter, e.g. SELECT module, "
			    "COUNT(*) FROM python.torch_trace GROUP BY module");
		return;
	}
	snprintf(info, sizeof info, "%zu row%s, %d column%s, %.0f ms%s",
	    json_array_size(json_object_get(ps->result, "rows")),
	    json_array_size(json_object_get(ps->result, "rows")) == 1 ? ""
								      : "s",
	    ps->ncols, ps->ncols == 1 ? "" : "s", ps->took_ms,
	    ps->grid_focus ? "  [grid: arrows scroll, Tab back to the prompt]"
			   : "  [Tab: scroll the grid]");
	wattrset(win, A_DIM);
	ui_text(win, yy++, 0, w, info);
	wattrset(win, A_NORMAL);
	pane_sql_grid(ps, win, yy, y + h - yy, w);
}

static int
pane_sql_key(struct pane *p, int key)
{
	struct pane_sql *ps = p->data;

	if (key == '\t') {
		ps->grid_focus = !ps->grid_focus && ps->result != NULL;
		return 1;
	}
	if (key == KEY_F(7)) {
		ps->all = !ps->all;
		return 1;
	}
	if (key == KEY_PPAGE || key == KEY_NPAGE)
		return ui_list_key(&ps->rows, key);
	if (ps->grid_focus) {
		switch (key) {
		case KEY_LEFT:
			ps->col0--;
			return 1;
		case KEY_RIGHT:
			ps->col0++;
			return 1;
		case KEY_HOME:
			ps->col0 = 0;
			return ui_list_key(&ps->rows, key);
		default:
			if (ui_list_key(&ps->rows, key))
				return 1;
			ps->grid_focus = 0;
			break;
		}
	}
	if (ui_line_key(&ps->line, key))
		pane_sql_run(p);
	return 1;
}

static void
pane_sql_free(struct pane *p)
{
	struct pane_sql *ps = p->data;

	if (ps == NULL)
		return;
	pane_sql_clear_pending(ps);
	pane_sql_clear_result(ps);
	ui_line_free(&ps->line);
	free(ps);
	p->data = NULL;
}

const struct pane_type pane_sql_type = {
	.name = "SQL",
	.label = "SQL",
	.hints = "Enter run  Up/Down history  F7 selected/all targets  Tab "
		 "grid (arrows scroll)  PgUp/PgDn rows",
	.text_input = 1,
	.init = pane_sql_init,
	.draw = pane_sql_draw,
	.key = pane_sql_key,
	.free = pane_sql_free,
};
