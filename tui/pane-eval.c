/* The Eval pane: a Python input line with history, run in the selected
 * process's __main__; output and tracebacks shown below it. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "xmalloc.h"
#include "top.h"

#define PANE_EVAL_MAX_LINES 2000

/* One line of the transcript. */
struct pane_eval_line {
	char *text;
	enum ui_color color;
};

/* The input line and the transcript, newest last; owned by the pane. */
struct pane_eval {
	struct ui_line line;
	struct pane_eval_line *lines;
	int nlines;
	struct ui_list list; /* follows the newest lines until scrolled */
	int waiting;
};

/* What a request carries back. */
struct pane_eval_req {
	struct pane_eval *pe;
	struct top *top;
};

/* Appends text, one transcript line per newline. */
static void
pane_eval_add(struct pane_eval *pe, enum ui_color color, const char *text)
{
	const char *p = text, *nl;
	int i;

	while (*p != '\0') {
		nl = strchr(p, '\n');
		if (pe->nlines == PANE_EVAL_MAX_LINES) {
			free(pe->lines[0].text);
			memmove(pe->lines, pe->lines + 1,
			    (size_t)(pe->nlines - 1) * sizeof *pe->lines);
			pe->nlines--;
		}
		pe->lines = xrealloc(
		    pe->lines, (size_t)(pe->nlines + 1) * sizeof *pe->lines);
		i = pe->nlines++;
		pe->lines[i].color = color;
		if (nl != NULL) {
			pe->lines[i].text = xmalloc((size_t)(nl - p) + 1);
			memcpy(pe->lines[i].text, p, (size_t)(nl - p));
			pe->lines[i].text[nl - p] = '\0';
			p = nl + 1;
		} else {
			pe->lines[i].text = xstrdup(p);
			p += strlen(p);
		}
	}
	pe->list.follow = 1;
}

static void
pane_eval_cb(void *arg, const struct aclient_reply *r)
{
	struct pane_eval_req *req = arg;
	struct pane_eval *pe = req->pe;
	const char *out, *err;
	char *msg;

	pe->waiting--;
	if (r->cause != NULL) {
		xasprintf(&msg, "error: %s", r->cause);
		pane_eval_add(pe, UI_ERROR, msg);
		free(msg);
	} else {
		out = json_string_value(json_object_get(r->body, "output"));
		err = json_string_value(json_object_get(r->body, "error"));
		if (out != NULL)
			pane_eval_add(pe, UI_NORMAL, out);
		if (err != NULL)
			pane_eval_add(pe, UI_ERROR, err);
	}
	top_changed(req->top);
	free(req);
}

static void
pane_eval_run(struct pane *p)
{
	struct pane_eval *pe = p->data;
	struct top *top = p->top;
	struct top_target *t = top_selected(top);
	struct pane_eval_req *req;
	json_t *body;
	char *echo;

	xasprintf(&echo, "%s>>> %s", t ? t->ep.name : "", pe->line.buf);
	pane_eval_add(pe, UI_TITLE, echo);
	free(echo);
	if (t == NULL || t->ac == NULL) {
		pane_eval_add(
		    pe, UI_ERROR, "error: the selected process is not probed");
		goto out;
	}
	req = xcalloc(1, sizeof *req);
	req->pe = pe;
	req->top = top;
	pe->waiting++;
	body = json_pack("{s:s}", "code", pe->line.buf);
	aclient_request(t->ac, "POST", PROTO_EVAL, body, top->ctx->timeout_ms,
	    top->ctx->timeout_ms + 3000, pane_eval_cb, req);
	json_decref(body);
out:
	ui_line_clear(&pe->line);
}

static void
pane_eval_init(struct pane *p)
{
	struct pane_eval *pe = xcalloc(1, sizeof *pe);

	pe->list.follow = 1;
	p->data = pe;
}

static void
pane_eval_draw(struct pane *p, WINDOW *win, int y, int h, int w)
{
	struct pane_eval *pe = p->data;
	struct top_target *t = top_selected(p->top);
	char prompt[128];
	int rows = h - 2, i, row;

	snprintf(prompt, sizeof prompt, "python [%.60s]%s>>> ",
	    t ? t->ep.name : "-", pe->waiting ? " (running)" : "");
	ui_line_draw(&pe->line, win, y, w, prompt);
	if (pe->nlines == 0) {
		ui_text(win, y + 2, 2, w - 2,
		    "Python in the target's __main__: an expression prints its "
		    "repr, e.g. sum(p.numel() for p in model.parameters())");
		return;
	}
	ui_list_fit(&pe->list, pe->nlines, rows);
	for (row = 0, i = pe->list.first; i < pe->nlines && row < rows;
	     i++, row++) {
		wattrset(win, ui_attr(pe->lines[i].color));
		ui_text(win, y + 2 + row, 0, w, pe->lines[i].text);
	}
	wattrset(win, A_NORMAL);
}

static int
pane_eval_key(struct pane *p, int key)
{
	struct pane_eval *pe = p->data;

	if (key == KEY_PPAGE || key == KEY_NPAGE)
		return ui_list_key(&pe->list, key);
	if (ui_line_key(&pe->line, key))
		pane_eval_run(p);
	return 1;
}

static void
pane_eval_free(struct pane *p)
{
	struct pane_eval *pe = p->data;
	int i;

	if (pe == NULL)
		return;
	for (i = 0; i < pe->nlines; i++)
		free(pe->lines[i].text);
	free(pe->lines);
	ui_line_free(&pe->line);
	free(pe);
	p->data = NULL;
}

const struct pane_type pane_eval_type = {
	.name = "Eval",
	.label = "Eval",
	.hints = "Enter run  Up/Down history  PgUp/PgDn scroll output  Esc "
		 "back",
	.text_input = 1,
	.init = pane_eval_init,
	.draw = pane_eval_draw,
	.key = pane_eval_key,
	.free = pane_eval_free,
};
