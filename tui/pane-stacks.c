/* The Stacks pane: every thread of the selected process, Python and
 * native frames, the GIL holder first; or, after m, one tree merged over
 * every probed target (stack-merge.c, the tree of backtrace --merge), each
 * frame with the ranks through it. Refreshed on r and every few seconds
 * while it is shown. */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "proto.h"
#include "xmalloc.h"
#include "top.h"

#define PANE_STACKS_EVERY 3000 /* ms between captures while shown */

/* One line of the pane: text and its colour. */
struct pane_stacks_line {
	char *text;
	enum ui_color color;
	int bold;
};

/* The last capture, as lines; owned by the pane. */
struct pane_stacks {
	struct pane_stacks_line *lines;
	int nlines;
	struct ui_list list;
	struct top_target *target;
	double fetched_at; /* clock_ms() */
	int pending;
	unsigned gen;
	char *error;
	struct pane *pane;
	int merged;        /* the merged tree over every target */
	json_t *collected; /* merged mode: {"threads": [...], "labels": {}} */
	int waiting;       /* merged mode: answers still to come */
};

/* What a request carries back: which pane and which generation (and in
 * merged mode, which target). */
struct pane_stacks_req {
	struct pane_stacks *ps;
	unsigned gen;
	struct top_target *t;
};

static void
pane_stacks_clear(struct pane_stacks *ps)
{
	int i;

	for (i = 0; i < ps->nlines; i++)
		free(ps->lines[i].text);
	free(ps->lines);
	ps->lines = NULL;
	ps->nlines = 0;
	free(ps->error);
	ps->error = NULL;
}

static void
pane_stacks_add(
    struct pane_stacks *ps, enum ui_color color, int bold, char *text)
{
	ps->lines =
	    xrealloc(ps->lines, (size_t)(ps->nlines + 1) * sizeof *ps->lines);
	ps->lines[ps->nlines].text = text;
	ps->lines[ps->nlines].color = color;
	ps->lines[ps->nlines].bold = bold;
	ps->nlines++;
}

/* Rank of a thread for ordering: GIL holder, main thread, the rest. */
static int
pane_stacks_rank(json_t *thread, pid_t pid)
{
	if (stack_state(json_string_value(json_object_get(thread, "state"))) ==
	    STACK_GIL_HOLDER)
		return 0;
	if (json_integer_value(json_object_get(thread, "thread_id")) == pid)
		return 1;
	return 2;
}

/* The line of one frame. */
static char *
pane_stacks_frame(json_t *frame, size_t depth)
{
	const char *type = json_string_value(json_object_get(frame, "type"));
	const char *func = json_string_value(json_object_get(frame, "func"));
	const char *file = json_string_value(json_object_get(frame, "file"));
	json_t *d = json_object_get(frame, "depth");
	long long at =
	    json_is_integer(d) ? json_integer_value(d) : (long long)depth;
	char *s;

	if (strcmp(type, "Python") == 0)
		xasprintf(&s, "  %3lld  %-6s %s (%s:%lld)", at, type,
		    func ? func : "?", file ? file : "?",
		    (long long)json_integer_value(
			json_object_get(frame, "lineno")));
	else
		xasprintf(&s, "  %3lld  %-6s %s  %s", at, type,
		    func ? func : "?", file ? file : "");
	return s;
}

/* Turns a python.backtrace result into lines, threads ordered by rank. */
static void
pane_stacks_build(struct pane_stacks *ps, json_t *result, pid_t pid)
{
	json_t *threads = stack_threads(result), *t, *frame;
	const char *name, *state, *note;
	size_t i, k;
	int rank, n = 0;
	char *s;

	for (rank = 0; rank < 3; rank++) {
		json_array_foreach(threads, i, t)
		{
			if (pane_stacks_rank(t, pid) != rank)
				continue;
			n++;
			name = json_string_value(
			    json_object_get(t, "thread_name"));
			state = json_string_value(json_object_get(t, "state"));
			note = json_string_value(json_object_get(t, "note"));
			xasprintf(&s, "Thread %lld %s: %s%s%s",
			    (long long)json_integer_value(
				json_object_get(t, "thread_id")),
			    name ? name : "", state ? state : "",
			    note && *note ? " - " : "", note ? note : "");
			pane_stacks_add(
			    ps, rank == 0 ? UI_RUNNING : UI_TITLE, 1, s);
			json_array_foreach(
			    json_object_get(t, "frames"), k, frame)
			{
				const char *type = json_string_value(
				    json_object_get(frame, "type"));

				pane_stacks_add(ps,
				    strcmp(type, "Python") == 0 ? UI_NORMAL
								: UI_GREY,
				    0, pane_stacks_frame(frame, k));
			}
			pane_stacks_add(ps, UI_NORMAL, 0, xstrdup(""));
		}
	}
	if (n == 0)
		pane_stacks_add(ps, UI_NORMAL, 0, xstrdup("no threads"));
	json_decref(threads);
}

static void
pane_stacks_cb(void *arg, const struct aclient_reply *r)
{
	struct pane_stacks_req *req = arg;
	struct pane_stacks *ps = req->ps;

	if (req->gen != ps->gen) {
		free(req);
		return;
	}
	free(req);
	ps->pending = 0;
	ps->fetched_at = clock_ms();
	pane_stacks_clear(ps);
	if (r->cause != NULL)
		ps->error = xstrdup(r->cause);
	else
		pane_stacks_build(ps, r->body, ps->target->pid);
	top_changed(ps->pane->top);
}

static void
pane_stacks_fetch(struct pane_stacks *ps, struct top *top, struct top_target *t)
{
	struct pane_stacks_req *req;
	json_t *body;
	char *sql;

	if (t == NULL || t->ac == NULL)
		return;
	if (ps->target != t) {
		pane_stacks_clear(ps);
		ps->list.first = 0;
	}
	ps->target = t;
	ps->pending = 1;
	ps->fetched_at = clock_ms();
	req = xcalloc(1, sizeof *req);
	req->ps = ps;
	req->gen = ++ps->gen;
	xasprintf(&sql, "%s ORDER BY thread_id, depth", stack_sql);
	body = json_pack("{s:s}", "sql", sql);
	free(sql);
	aclient_request(t->ac, "POST", PROTO_QUERY, body, top->ctx->timeout_ms,
	    top->ctx->timeout_ms + 3000, pane_stacks_cb, req);
	json_decref(body);
}

static void
pane_stacks_tree_line(void *arg, int depth, int part, const char *text)
{
	struct pane_stacks *ps = arg;
	char *s;

	xasprintf(&s, "%*s%s", depth * 2, "", text);
	pane_stacks_add(ps, part ? UI_RUNNING : UI_NORMAL, part, s);
}

/* One target's answer in merged mode; the tree is made when the last
 * one is in. */
static void
pane_stacks_merge_cb(void *arg, const struct aclient_reply *r)
{
	struct pane_stacks_req *req = arg;
	struct pane_stacks *ps = req->ps;
	json_t *threads, *t, *labels, *rank;
	size_t i;

	if (req->gen != ps->gen) {
		free(req);
		return;
	}
	if (r->cause == NULL) {
		threads = stack_threads(r->body);
		labels = json_object_get(ps->collected, "labels");
		json_array_foreach(threads, i, t)
		{
			json_object_set_new(
			    t, "target", json_string(req->t->ep.name));
			json_array_append(
			    json_object_get(ps->collected, "threads"), t);
		}
		rank = fmt_cell(
		    json_array_get(json_object_get(r->body, "rows"), 0),
		    fmt_col(r->body, "_rank"));
		json_object_set_new(labels, req->t->ep.name,
		    json_integer(json_is_integer(rank)
			    ? json_integer_value(rank)
			    : (json_int_t)req->t->pid));
		json_decref(threads);
	}
	free(req);
	if (--ps->waiting > 0)
		return;
	ps->pending = 0;
	ps->fetched_at = clock_ms();
	pane_stacks_clear(ps);
	t = stack_merge(json_object_get(ps->collected, "threads"),
	    json_object_get(ps->collected, "labels"), 0);
	stack_merge_lines(t, pane_stacks_tree_line, ps);
	if (ps->nlines == 0)
		pane_stacks_add(ps, UI_NORMAL, 0, xstrdup("no threads"));
	json_decref(t);
	top_changed(ps->pane->top);
}

/* Asks every probed target for its stacks at once. */
static void
pane_stacks_fetch_all(struct pane_stacks *ps, struct top *top)
{
	struct pane_stacks_req *req;
	json_t *body = json_pack("{s:s}", "sql", stack_merge_sql);
	int i;

	json_decref(ps->collected);
	ps->collected = json_pack("{s:[], s:{}}", "threads", "labels");
	ps->gen++;
	ps->waiting = 0;
	ps->target = NULL;
	for (i = 0; i < top->ntargets; i++) {
		if (top->targets[i]->ac == NULL)
			continue;
		req = xcalloc(1, sizeof *req);
		req->ps = ps;
		req->gen = ps->gen;
		req->t = top->targets[i];
		ps->waiting++;
		aclient_request(top->targets[i]->ac, "POST", PROTO_QUERY, body,
		    top->ctx->timeout_ms, top->ctx->timeout_ms + 3000,
		    pane_stacks_merge_cb, req);
	}
	ps->pending = ps->waiting > 0;
	ps->fetched_at = clock_ms();
	json_decref(body);
}

static void
pane_stacks_init(struct pane *p)
{
	struct pane_stacks *ps = xcalloc(1, sizeof *ps);

	ps->pane = p;
	p->data = ps;
}

static void
pane_stacks_draw(struct pane *p, WINDOW *win, int y, int h, int w)
{
	struct pane_stacks *ps = p->data;
	struct top_target *t = top_selected(p->top);
	char line[512];
	int i, row;

	if (t == NULL) {
		ui_text(win, y + 1, 2, w - 2, "no targets");
		return;
	}
	if (ps->merged) {
		if (!ps->pending &&
		    clock_ms() - ps->fetched_at > PANE_STACKS_EVERY)
			pane_stacks_fetch_all(ps, p->top);
		wattrset(win, A_BOLD);
		snprintf(line, sizeof line,
		    "Stacks merged over %d targets: [ranks] frame, a branch "
		    "only some take in colour%s",
		    p->top->ntargets, ps->pending ? "  (capturing...)" : "");
		ui_text(win, y, 0, w, line);
		wattrset(win, A_NORMAL);
		goto lines;
	}
	if (!ps->pending &&
	    (ps->target != t ||
		clock_ms() - ps->fetched_at > PANE_STACKS_EVERY))
		pane_stacks_fetch(ps, p->top, t);
	wattrset(win, A_BOLD);
	snprintf(line, sizeof line, "Stacks of %s  %s%s", t->ep.name,
	    t->command ? t->command : "",
	    ps->pending ? "  (capturing...)" : "");
	ui_text(win, y, 0, w, line);
	wattrset(win, A_NORMAL);
	if (t->ac == NULL) {
		ui_text(win, y + 2, 2, w - 2,
		    "not probed: press i in Processes to inject");
		return;
	}
	if (ps->error != NULL) {
		wattrset(win, ui_attr(UI_ERROR));
		ui_text(win, y + 2, 2, w - 2, ps->error);
		wattrset(win, A_NORMAL);
		return;
	}
lines:
	h -= 2;
	ui_list_fit(&ps->list, ps->nlines, h);
	for (row = 0, i = ps->list.first; i < ps->nlines && row < h;
	     i++, row++) {
		wattrset(win,
		    ui_attr(ps->lines[i].color) |
			(ps->lines[i].bold ? A_BOLD : 0));
		ui_text(win, y + 2 + row, 0, w, ps->lines[i].text);
	}
	wattrset(win, A_NORMAL);
}

static int
pane_stacks_key(struct pane *p, int key)
{
	struct pane_stacks *ps = p->data;

	if (key == 'r') {
		if (ps->merged)
			pane_stacks_fetch_all(ps, p->top);
		else
			pane_stacks_fetch(ps, p->top, top_selected(p->top));
		return 1;
	}
	if (key == 'm') {
		ps->merged = !ps->merged;
		ps->gen++; /* answers in flight are for the other mode */
		ps->pending = 0;
		ps->fetched_at = 0;
		ps->target = NULL;
		pane_stacks_clear(ps);
		ps->list.first = 0;
		return 1;
	}
	return ui_list_key(&ps->list, key);
}

static void
pane_stacks_free(struct pane *p)
{
	struct pane_stacks *ps = p->data;

	if (ps == NULL)
		return;
	pane_stacks_clear(ps);
	json_decref(ps->collected);
	free(ps);
	p->data = NULL;
}

const struct pane_type pane_stacks_type = {
	.name = "Stacks",
	.label = "Stacks",
	.hints = "r refresh (also every 3 s)  m merged over every target",
	.init = pane_stacks_init,
	.draw = pane_stacks_draw,
	.key = pane_stacks_key,
	.free = pane_stacks_free,
};
