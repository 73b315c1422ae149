/* The Stacks pane: every thread of the selected process, Python and
 * native frames, the GIL holder first; refreshed on r and every few
 * seconds while it is shown. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "xmalloc.h"
#include "top.h"

#define PANE_STACKS_EVERY 3.0

/* One line of the pane: text and its colour. */
struct pane_stacks_line {
	char *text;
	enum ui_color color;
	int bold;
};

/* The last capture, as lines; owned by the pane. */
struct pane_stacks {
	struct pane_stacks_line *lines;
	int nlines, first;
	struct top_target *target;
	double fetched_at;
	int pending;
	unsigned gen;
	char *error;
	struct pane *pane;
};

/* What a request carries back: which pane and which generation. */
struct pane_stacks_req {
	struct pane_stacks *ps;
	unsigned gen;
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
pane_stacks_rank(json_t *row, pid_t pid)
{
	const char *state = json_string_value(json_array_get(row, 2));

	if (state != NULL && strstr(state, "GIL") != NULL &&
	    strstr(state, "holding") != NULL)
		return 0;
	if (json_integer_value(json_array_get(row, 0)) == pid)
		return 1;
	return 2;
}

/* Turns rows (ordered by thread, then depth) into lines. */
static void
pane_stacks_build(struct pane_stacks *ps, json_t *rows, pid_t pid)
{
	json_t *row, *first;
	size_t i, j, n = json_array_size(rows);
	int rank, threads = 0;
	long long tid;
	const char *type, *file, *note;
	char *s;

	for (rank = 0; rank < 3; rank++) {
		for (i = 0; i < n; i = j) {
			first = json_array_get(rows, i);
			tid = json_integer_value(json_array_get(first, 0));
			for (j = i; j < n &&
			     json_integer_value(json_array_get(
				 json_array_get(rows, j), 0)) == tid;
			     j++)
				;
			if (pane_stacks_rank(first, pid) != rank)
				continue;
			threads++;
			note = json_string_value(json_array_get(first, 3));
			xasprintf(&s, "Thread %lld %s: %s%s%s", tid,
			    json_string_value(json_array_get(first, 1)) ?: "",
			    json_string_value(json_array_get(first, 2)) ?: "",
			    note && *note ? " - " : "", note ? note : "");
			pane_stacks_add(
			    ps, rank == 0 ? UI_RUNNING : UI_TITLE, 1, s);
			for (; i < j; i++) {
				row = json_array_get(rows, i);
				type =
				    json_string_value(json_array_get(row, 5));
				if (type == NULL)
					continue;
				file =
				    json_string_value(json_array_get(row, 7));
				if (strcmp(type, "Python") == 0)
					xasprintf(&s,
					    "  %3lld  %-6s %s (%s:%lld)",
					    (long long)json_integer_value(
						json_array_get(row, 4)),
					    type,
					    json_string_value(
						json_array_get(row, 6))
						?: "?",
					    file ? file : "?",
					    (long long)json_integer_value(
						json_array_get(row, 8)));
				else
					xasprintf(&s, "  %3lld  %-6s %s  %s",
					    (long long)json_integer_value(
						json_array_get(row, 4)),
					    type,
					    json_string_value(
						json_array_get(row, 6))
						?: "?",
					    file ? file : "");
				pane_stacks_add(ps,
				    strcmp(type, "Python") == 0 ? UI_NORMAL
								: UI_GREY,
				    0, s);
			}
			pane_stacks_add(ps, UI_NORMAL, 0, xstrdup(""));
		}
	}
	if (threads == 0)
		pane_stacks_add(ps, UI_NORMAL, 0, xstrdup("no threads"));
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
	ps->fetched_at = top_now();
	pane_stacks_clear(ps);
	if (r->cause != NULL)
		ps->error = xstrdup(r->cause);
	else
		pane_stacks_build(
		    ps, json_object_get(r->body, "rows"), ps->target->pid);
	top_changed(ps->pane->top);
}

static void
pane_stacks_fetch(struct pane_stacks *ps, struct top *top, struct top_target *t)
{
	struct pane_stacks_req *req;
	json_t *body;

	if (t == NULL || t->ac == NULL)
		return;
	if (ps->target != t) {
		pane_stacks_clear(ps);
		ps->first = 0;
	}
	ps->target = t;
	ps->pending = 1;
	ps->fetched_at = top_now();
	req = xcalloc(1, sizeof *req);
	req->ps = ps;
	req->gen = ++ps->gen;
	body = json_pack("{s:s}", "sql",
	    "SELECT thread_id, thread_name, thread_state, thread_note, depth, "
	    "frame_type, func, file, lineno FROM python.backtrace "
	    "ORDER BY thread_id, depth");
	aclient_request(t->ac, "POST", PROTO_QUERY, body, top->ctx->timeout_ms,
	    top->ctx->timeout_ms + 3000, pane_stacks_cb, req);
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
	if (!ps->pending &&
	    (ps->target != t || top_now() - ps->fetched_at > PANE_STACKS_EVERY))
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
	h -= 2;
	if (ps->first > ps->nlines - h)
		ps->first = ps->nlines - h;
	if (ps->first < 0)
		ps->first = 0;
	for (row = 0, i = ps->first; i < ps->nlines && row < h; i++, row++) {
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

	switch (key) {
	case 'r':
		pane_stacks_fetch(ps, p->top, top_selected(p->top));
		return 1;
	case KEY_UP:
		ps->first--;
		return 1;
	case KEY_DOWN:
		ps->first++;
		return 1;
	case KEY_PPAGE:
		ps->first -= 20;
		return 1;
	case KEY_NPAGE:
		ps->first += 20;
		return 1;
	case KEY_HOME:
		ps->first = 0;
		return 1;
	case KEY_END:
		ps->first = ps->nlines;
		return 1;
	default:
		return 0;
	}
}

static void
pane_stacks_resize(struct pane *p, int h, int w)
{
	(void)p;
	(void)h;
	(void)w;
}

static void
pane_stacks_free(struct pane *p)
{
	struct pane_stacks *ps = p->data;

	if (ps == NULL)
		return;
	pane_stacks_clear(ps);
	free(ps);
	p->data = NULL;
}

const struct pane_type pane_stacks_type = {
	.name = "Stacks",
	.fkey = 4,
	.hints = "r refresh (also every 3 s)  Up/Down PgUp/PgDn Home/End "
		 "scroll",
	.init = pane_stacks_init,
	.draw = pane_stacks_draw,
	.key = pane_stacks_key,
	.resize = pane_stacks_resize,
	.free = pane_stacks_free,
};
