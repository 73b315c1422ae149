/* The screen of `probing top`: curses set-up and teardown (also on crash
 * signals), the title, tabs, key bar, help overlay, key dispatch and
 * resizing. The panes come from one table (TOP_PANES in top.h): their
 * order, F-keys, digits, tabs, key bar entries and help all follow it. */
#include <sys/ioctl.h>

#include <langinfo.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "xmalloc.h"
#include "top.h"

#define TOP_PANE_TYPE(id, type) [id] = &type,
static const struct pane_type *const ui_panes[TOP_NPANES] = { TOP_PANES(
    TOP_PANE_TYPE) };

static void ui_do_help(struct top *);
static void ui_do_first(struct top *);
static void ui_do_quit(struct top *);

/* A key every pane shares: its F-key (or 0), a key that works outside
 * input lines (or 0), one that works only inside them (or 0); what the key
 * bar says next to the F-key (NULL: not there), how the help names the
 * keys and what it says they do, and what they do. Dispatch,
 * key bar and help are all made from this table and TOP_PANES. */
static const struct ui_binding {
	int fkey, plain, in_text;
	const char *bar;
	const char *keys;
	const char *help;
	void (*fn)(struct top *);
} ui_bindings[] = {
	{ KEY_F(1), '?', 0, "Help", "F1 or ?", "this help (any key closes it)",
	    ui_do_help },
	{ 0, 0, 27, NULL, "Esc", "back to the first pane from an input line",
	    ui_do_first },
	{ KEY_F(10), 'q', 0, "Quit", "q, F10, Ctrl-C", "quit", ui_do_quit },
};
#define UI_NBINDINGS (sizeof ui_bindings / sizeof ui_bindings[0])

static int ui_started;
static struct event *ui_stdin_ev;

/* Restores the terminal; safe to call more than once. */
void
ui_stop(void)
{
	if (!ui_started)
		return;
	ui_started = 0;
	curs_set(1);
	endwin();
}

/* A crash: give the terminal back, then die of the same signal. */
static void
ui_crash(int sig)
{
	if (ui_started) {
		ui_started = 0;
		endwin();
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Reads every pending key. Readable with no key means the terminal hung
 * up (an SSH session that dropped): quit rather than spin on it. */
static void
ui_stdin_cb(evutil_socket_t fd, short what, void *arg)
{
	struct top *top = arg;
	struct pollfd pfd = { fd, POLLIN, 0 };
	int ch, keys = 0;

	(void)what;
	while ((ch = getch()) != ERR) {
		ui_key(top, ch);
		keys++;
	}
	if (keys == 0 && poll(&pfd, 1, 0) == 1 &&
	    (pfd.revents & (POLLHUP | POLLERR | POLLNVAL | POLLIN)) != 0)
		event_base_loopbreak(top->base);
}

int
ui_start(struct top *top, char **cause)
{
	static const int crash[] = { SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL };
	struct sigaction sa;
	const char *cs;
	size_t i;
	int p;

	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
		*cause = xstrdup("top needs a terminal (use --batch for text "
				 "output)");
		return -1;
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = ui_crash;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof crash / sizeof crash[0]; i++)
		sigaction(crash[i], &sa, NULL);
	atexit(ui_stop);
	cs = nl_langinfo(CODESET);
	top->utf8 = cs != NULL && strcmp(cs, "UTF-8") == 0;
	if (getenv("ESCDELAY") == NULL)
		set_escdelay(25);
	if (initscr() == NULL) {
		*cause = xstrdup("cannot start curses on this terminal");
		return -1;
	}
	ui_started = 1;
	cbreak();
	noecho();
	nonl();
	keypad(stdscr, TRUE);
	nodelay(stdscr, TRUE);
	curs_set(0);
	top->color = ui_colors_init();
	for (p = 0; p < TOP_NPANES; p++) {
		top->panes[p].type = ui_panes[p];
		top->panes[p].top = top;
		ui_panes[p]->init(&top->panes[p]);
	}
	ui_stdin_ev = event_new(
	    top->base, STDIN_FILENO, EV_READ | EV_PERSIST, ui_stdin_cb, top);
	event_add(ui_stdin_ev, NULL);
	ui_draw(top);
	return 0;
}

void
ui_end(struct top *top)
{
	int p;

	if (ui_stdin_ev != NULL)
		event_free(ui_stdin_ev);
	ui_stdin_ev = NULL;
	for (p = 0; p < TOP_NPANES; p++)
		if (top->panes[p].type != NULL)
			top->panes[p].type->free(&top->panes[p]);
	memset(top->panes, 0, sizeof top->panes);
	ui_stop();
}

static void
ui_title(struct top *top, int w)
{
	int counts[TOP_UNPROBED + 1] = { 0 }, i, x;
	char buf[512], part[64], clock[16];
	time_t now = time(NULL);
	struct tm tm;

	for (i = 0; i < top->ntargets; i++)
		counts[top->targets[i]->state]++;
	localtime_r(&now, &tm);
	strftime(clock, sizeof clock, "%H:%M:%S", &tm);
	snprintf(buf, sizeof buf, " probing top  %s  %d target%s:", clock,
	    top->ntargets - counts[TOP_UNPROBED],
	    top->ntargets - counts[TOP_UNPROBED] == 1 ? "" : "s");
	for (i = 0; i <= TOP_UNPROBED; i++) {
		if (counts[i] == 0)
			continue;
		snprintf(
		    part, sizeof part, " %d %s", counts[i], top_state_names[i]);
		strncat(buf, part, sizeof buf - strlen(buf) - 1);
	}
	attrset(ui_attr(UI_TITLE));
	mvhline(0, 0, ' ', w);
	ui_text(stdscr, 0, 0, w, buf);
	snprintf(buf, sizeof buf, "every %.2gs ", top->interval_ms / 1000.0);
	x = w - (int)strlen(buf);
	if (x > 60)
		ui_text(stdscr, 0, x, w - x, buf);
	attrset(A_NORMAL);
}

static void
ui_tabs(struct top *top, int w)
{
	char buf[64];
	int p, x = 1, n;

	move(1, 0);
	clrtoeol();
	for (p = 0; p < TOP_NPANES && x < w; p++) {
		n = snprintf(
		    buf, sizeof buf, " %d %s ", p + 1, ui_panes[p]->name);
		attrset(p == top->current ? ui_attr(UI_SELECTED) | A_BOLD
					  : A_NORMAL);
		ui_text(stdscr, 1, x, w - x, buf);
		x += n + 1;
	}
	attrset(A_NORMAL);
}

/* One key bar entry at *x: the key highlighted, then what it does. */
static void
ui_keybar_entry(int y, int *x, int w, const char *key, const char *what)
{
	if (*x >= w)
		return;
	attrset(ui_attr(UI_KEY));
	ui_text(stdscr, y, *x, w - *x, key);
	*x += (int)strlen(key);
	attrset(ui_attr(UI_KEYTEXT));
	ui_text(stdscr, y, *x, w - *x, what);
	*x += (int)strlen(what) + 1;
}

/* The key bar entries of the bindings before (after 0) or after (1) the
 * panes' F-keys. */
static void
ui_keybar_bindings(int y, int *x, int w, int after)
{
	char key[16];
	size_t b;

	for (b = 0; b < UI_NBINDINGS; b++) {
		if (ui_bindings[b].bar == NULL ||
		    (ui_bindings[b].fkey > KEY_F(TOP_PANE_FKEY_FIRST)) != after)
			continue;
		snprintf(key, sizeof key, "F%d", ui_bindings[b].fkey - KEY_F0);
		ui_keybar_entry(y, x, w, key, ui_bindings[b].bar);
	}
}

/* The key bar, htop style: the F-keys in order, then the pane's keys. */
static void
ui_keybar(struct top *top, int y, int w)
{
	char key[16];
	int x = 0, p;

	move(y, 0);
	clrtoeol();
	ui_keybar_bindings(y, &x, w, 0);
	for (p = 0; p < TOP_NPANES; p++) {
		snprintf(key, sizeof key, "F%d", TOP_PANE_FKEY_FIRST + p);
		ui_keybar_entry(y, &x, w, key, ui_panes[p]->label);
	}
	ui_keybar_bindings(y, &x, w, 1);
	attrset(A_DIM);
	if (x + 2 < w)
		ui_text(stdscr, y, x + 1, w - x - 1,
		    top->detail ? ui_detail_hints
				: ui_panes[top->current]->hints);
	attrset(A_NORMAL);
}

/* The help line naming the pane keys: "F2..F6, 1..5    Processes, ...". */
static void
ui_help_panes(char *buf, size_t len)
{
	size_t off;
	int p;

	snprintf(buf, len, "F%d..F%d, 1..%d", TOP_PANE_FKEY_FIRST,
	    TOP_PANE_FKEY_FIRST + TOP_NPANES - 1, TOP_NPANES);
	off = strlen(buf);
	while (off < 16 && off < len - 1)
		buf[off++] = ' ';
	buf[off] = '\0';
	for (p = 0; p < TOP_NPANES && off < len; p++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s",
		    p ? ", " : "", ui_panes[p]->name);
}

static void
ui_help(int h, int w)
{
	char lines[UI_NBINDINGS + 3][256];
	int bw = w > 124 ? 120 : w - 4, bh, y0, x0, i, n = 0, line = 0;
	size_t b;

	ui_help_panes(lines[n++], sizeof lines[0]);
	snprintf(lines[n++], sizeof lines[0], "%-16s%s", "",
	    "(digits, ? and q work outside input lines)");
	for (b = 0; b < UI_NBINDINGS; b++)
		snprintf(lines[n++], sizeof lines[0], "%-16s%s",
		    ui_bindings[b].keys, ui_bindings[b].help);
	snprintf(lines[n++], sizeof lines[0], "%s", ui_list_help);
	bh = n + 3 + 2 * TOP_NPANES + 2;
	if (bh > h - 2)
		bh = h - 2;
	if (bw < 20 || bh < 5)
		return;
	y0 = (h - bh) / 2;
	x0 = (w - bw) / 2;
	attrset(ui_attr(UI_SELECTED));
	for (i = 0; i < bh; i++)
		mvhline(y0 + i, x0, ' ', bw);
	attrset(ui_attr(UI_SELECTED) | A_BOLD);
	ui_text(stdscr, y0, x0 + 2, bw - 4, "probing top: keys");
	attrset(ui_attr(UI_SELECTED));
	for (i = 0; i < n && line < bh - 2; i++)
		ui_text(stdscr, y0 + 2 + line++, x0 + 2, bw - 4, lines[i]);
	line++;
	for (i = 0; i < TOP_NPANES && line < bh - 3; i++) {
		attrset(ui_attr(UI_SELECTED) | A_BOLD);
		ui_text(
		    stdscr, y0 + 2 + line++, x0 + 2, bw - 4, ui_panes[i]->name);
		attrset(ui_attr(UI_SELECTED));
		ui_text(stdscr, y0 + 2 + line++, x0 + 4, bw - 6,
		    ui_panes[i]->hints);
	}
	attrset(A_NORMAL);
}

void
ui_draw(struct top *top)
{
	struct pane *p;
	int h, w;

	if (!ui_started)
		return;
	getmaxyx(stdscr, h, w);
	erase();
	if (h < 6 || w < 20) {
		ui_text(stdscr, 0, 0, w, "terminal too small");
		refresh();
		return;
	}
	ui_title(top, w);
	ui_tabs(top, w);
	p = &top->panes[top->current];
	if (top->detail)
		ui_detail_draw(top, stdscr, 2, h - 4, w);
	else
		p->type->draw(p, stdscr, 2, h - 4, w);
	attrset(A_NORMAL);
	if (top->status[0] != '\0') {
		attrset(top->status_err ? ui_attr(UI_ERROR) : (int)A_BOLD);
		ui_text(stdscr, h - 2, 0, w, top->status);
		attrset(A_NORMAL);
	}
	ui_keybar(top, h - 1, w);
	if (top->help)
		ui_help(h, w);
	refresh();
}

void
ui_resize(struct top *top)
{
	struct winsize ws;
	int p, h, w;

	if (!ui_started)
		return;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 &&
	    ws.ws_col > 0)
		resize_term(ws.ws_row, ws.ws_col); /* no KEY_RESIZE pushed */
	getmaxyx(stdscr, h, w);
	for (p = 0; p < TOP_NPANES; p++)
		if (top->panes[p].type->resize != NULL)
			top->panes[p].type->resize(&top->panes[p], h - 4, w);
	clear();
	ui_draw(top);
}

/* The pane key shows, or -1: F2 on, or 1 on outside an input line. */
static int
ui_pane_for_key(int key, int text)
{
	int p;

	for (p = 0; p < TOP_NPANES; p++)
		if (key == KEY_F(TOP_PANE_FKEY_FIRST + p) ||
		    (!text && key == '1' + p))
			return p;
	return -1;
}

static void
ui_do_help(struct top *top)
{
	top->help = 1;
}

static void
ui_do_first(struct top *top)
{
	top->current = 0;
}

static void
ui_do_quit(struct top *top)
{
	event_base_loopbreak(top->base);
}

/* The shared binding for key, or NULL. */
static const struct ui_binding *
ui_binding_for_key(int key, int text)
{
	size_t b;

	for (b = 0; b < UI_NBINDINGS; b++)
		if ((ui_bindings[b].fkey != 0 && key == ui_bindings[b].fkey) ||
		    (!text && ui_bindings[b].plain != 0 &&
			key == ui_bindings[b].plain) ||
		    (text && ui_bindings[b].in_text != 0 &&
			key == ui_bindings[b].in_text))
			return &ui_bindings[b];
	return NULL;
}

void
ui_key(struct top *top, int key)
{
	struct pane *p = &top->panes[top->current];
	const struct ui_binding *b;
	int text = p->type->text_input, to;

	if (key == KEY_RESIZE) {
		ui_draw(top);
		return;
	}
	if (top->help) {
		top->help = 0;
		ui_draw(top);
		return;
	}
	if (top->detail && ui_detail_key(top, key)) {
		ui_draw(top);
		return;
	}
	if ((b = ui_binding_for_key(key, text)) != NULL)
		b->fn(top);
	else if ((to = ui_pane_for_key(key, text)) >= 0) {
		top->current = to;
		top->detail = 0;
	} else
		p->type->key(p, key);
	ui_draw(top);
}
