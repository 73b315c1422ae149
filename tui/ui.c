/* The screen of `probing top`: curses set-up and teardown (also on crash
 * signals), colours (off with NO_COLOR), the title, tabs, key bar, help
 * overlay, key dispatch, resizing, and the input line the SQL and Eval
 * panes share. */
#include <sys/ioctl.h>

#include <langinfo.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "xmalloc.h"
#include "top.h"

static int ui_started;
static struct event *ui_stdin_ev;
static int ui_attrs[UI_SPARK + 1];

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

int
ui_attr(enum ui_color c)
{
	return ui_attrs[c];
}

static void
ui_colors(struct top *top)
{
	const char *nc = getenv("NO_COLOR");
	int grey;

	top->color = has_colors() && (nc == NULL || *nc == '\0');
	ui_attrs[UI_NORMAL] = A_NORMAL;
	ui_attrs[UI_HEADER] = A_REVERSE;
	ui_attrs[UI_SELECTED] = A_REVERSE | A_BOLD;
	ui_attrs[UI_RUNNING] = A_BOLD;
	ui_attrs[UI_IDLE] = A_NORMAL;
	ui_attrs[UI_HUNG] = A_BOLD | A_UNDERLINE;
	ui_attrs[UI_DEAD] = A_DIM;
	ui_attrs[UI_GREY] = A_DIM;
	ui_attrs[UI_ERROR] = A_BOLD;
	ui_attrs[UI_KEY] = A_REVERSE;
	ui_attrs[UI_KEYTEXT] = A_NORMAL;
	ui_attrs[UI_TITLE] = A_BOLD;
	ui_attrs[UI_SPARK] = A_NORMAL;
	if (!top->color)
		return;
	start_color();
	use_default_colors();
	grey = COLORS >= 256 ? 244 : COLOR_WHITE;
	init_pair(1, COLOR_BLACK, COLOR_GREEN);
	init_pair(2, COLOR_BLACK, COLOR_CYAN);
	init_pair(3, COLOR_GREEN, -1);
	init_pair(4, COLOR_YELLOW, -1);
	init_pair(5, COLOR_RED, -1);
	init_pair(6, COLOR_MAGENTA, -1);
	init_pair(7, grey, -1);
	init_pair(8, COLOR_CYAN, -1);
	init_pair(9, COLOR_WHITE, COLOR_BLUE);
	ui_attrs[UI_HEADER] = COLOR_PAIR(1);
	ui_attrs[UI_SELECTED] = COLOR_PAIR(2);
	ui_attrs[UI_RUNNING] = COLOR_PAIR(3);
	ui_attrs[UI_IDLE] = COLOR_PAIR(4);
	ui_attrs[UI_HUNG] = COLOR_PAIR(5) | A_BOLD;
	ui_attrs[UI_DEAD] = COLOR_PAIR(6);
	ui_attrs[UI_GREY] =
	    COLORS >= 256 ? COLOR_PAIR(7) : COLOR_PAIR(7) | A_DIM;
	ui_attrs[UI_ERROR] = COLOR_PAIR(5) | A_BOLD;
	ui_attrs[UI_KEY] = COLOR_PAIR(2);
	ui_attrs[UI_TITLE] = COLOR_PAIR(9) | A_BOLD;
	ui_attrs[UI_SPARK] = COLOR_PAIR(8);
}

/* Bytes of s that fill at most w columns (one per code point). */
static size_t
ui_fit(const char *s, int w, int *cols)
{
	size_t i = 0;
	int n = 0;

	while (s[i] != '\0') {
		if (((unsigned char)s[i] & 0xc0) != 0x80) {
			if (n == w)
				break;
			n++;
		}
		i++;
	}
	if (cols != NULL)
		*cols = n;
	return i;
}

void
ui_text(WINDOW *win, int y, int x, int w, const char *s)
{
	size_t n;
	char buf[4096];
	size_t i, j;

	if (w <= 0 || s == NULL)
		return;
	n = ui_fit(s, w, NULL);
	/* Control characters would move the cursor: show them as spaces. */
	for (i = j = 0; i < n && j < sizeof buf - 1; i++)
		buf[j++] = (unsigned char)s[i] < 0x20 ? ' ' : s[i];
	buf[j] = '\0';
	mvwaddstr(win, y, x, buf);
}

void
ui_chgat(WINDOW *win, int y, int x, int n, int attr)
{
	mvwchgat(win, y, x, n, (attr_t)attr & ~A_COLOR,
	    (short)PAIR_NUMBER(attr), NULL);
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
	ui_colors(top);
	for (p = 0; p < TOP_NPANES; p++) {
		static const struct pane_type *const types[TOP_NPANES] = {
			&pane_processes_type, &pane_modules_type,
			&pane_stacks_type, &pane_sql_type, &pane_eval_type
		};
		top->panes[p].type = types[p];
		top->panes[p].top = top;
		types[p]->init(&top->panes[p]);
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
		n = snprintf(buf, sizeof buf, " %d %s ", p + 1,
		    top->panes[p].type->name);
		attrset(p == top->current ? ui_attr(UI_SELECTED) | A_BOLD
					  : A_NORMAL);
		ui_text(stdscr, 1, x, w - x, buf);
		x += n + 1;
	}
	attrset(A_NORMAL);
}

/* The key bar, htop style: the key highlighted, then what it does. */
static void
ui_keybar(struct top *top, int y, int w)
{
	static const char *const keys[][2] = { { "F1", "Help" },
		{ "F2", "Procs" }, { "F3", "Modules" }, { "F4", "Stacks" },
		{ "F5", "SQL" }, { "F6", "Eval" }, { "F10", "Quit" } };
	const char *hints = top->panes[top->current].type->hints;
	size_t i;
	int x = 0, n;

	move(y, 0);
	clrtoeol();
	for (i = 0; i < sizeof keys / sizeof keys[0] && x < w; i++) {
		attrset(ui_attr(UI_KEY));
		n = (int)strlen(keys[i][0]);
		ui_text(stdscr, y, x, w - x, keys[i][0]);
		x += n;
		attrset(ui_attr(UI_KEYTEXT));
		ui_text(stdscr, y, x, w - x, keys[i][1]);
		x += (int)strlen(keys[i][1]) + 1;
	}
	attrset(A_DIM);
	if (x + 2 < w)
		ui_text(stdscr, y, x + 1, w - x - 1, hints);
	attrset(A_NORMAL);
}

static void
ui_help(struct top *top, int h, int w)
{
	static const char *const global[] = {
		"F1 or ?         this help (any key closes it)",
		"F2..F6, 1..5    Processes, Modules, Stacks, SQL, Eval",
		"                (digits, ? and q work outside input lines)",
		"Esc             back to Processes from SQL or Eval",
		"q, F10, Ctrl-C  quit",
		"",
	};
	int bw = w > 124 ? 120 : w - 4, bh, y0, x0, i, line = 0;
	size_t k;

	bh = (int)(sizeof global / sizeof global[0]) + 2 * TOP_NPANES + 4;
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
	for (k = 0; k < sizeof global / sizeof global[0] && line < bh - 2; k++)
		ui_text(stdscr, y0 + 2 + line++, x0 + 2, bw - 4, global[k]);
	for (i = 0; i < TOP_NPANES && line < bh - 3; i++) {
		attrset(ui_attr(UI_SELECTED) | A_BOLD);
		ui_text(stdscr, y0 + 2 + line++, x0 + 2, bw - 4,
		    top->panes[i].type->name);
		attrset(ui_attr(UI_SELECTED));
		ui_text(stdscr, y0 + 2 + line++, x0 + 4, bw - 6,
		    top->panes[i].type->hints);
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
	p->type->draw(p, stdscr, 2, h - 4, w);
	attrset(A_NORMAL);
	if (top->status[0] != '\0') {
		attrset(top->status_err ? ui_attr(UI_ERROR) : (int)A_BOLD);
		ui_text(stdscr, h - 2, 0, w, top->status);
		attrset(A_NORMAL);
	}
	ui_keybar(top, h - 1, w);
	if (top->help)
		ui_help(top, h, w);
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
		top->panes[p].type->resize(&top->panes[p], h - 4, w);
	clear();
	ui_draw(top);
}

void
ui_key(struct top *top, int key)
{
	struct pane *p = &top->panes[top->current];
	int text = p->type->text_input;

	if (key == KEY_RESIZE) {
		ui_draw(top);
		return;
	}
	if (top->help) {
		top->help = 0;
		ui_draw(top);
		return;
	}
	if (key == KEY_F(1) || (key == '?' && !text))
		top->help = 1;
	else if (key >= KEY_F(2) && key <= KEY_F(6))
		top->current = key - KEY_F(2);
	else if (!text && key >= '1' && key <= '5')
		top->current = key - '1';
	else if (key == KEY_F(10) || (key == 'q' && !text)) {
		event_base_loopbreak(top->base);
		return;
	} else if (key == 27 && text)
		top->current = TOP_PANE_PROCS;
	else
		p->type->key(p, key);
	ui_draw(top);
}

/* The input line ---------------------------------------------------- */

static void
ui_line_set(struct ui_line *l, const char *s)
{
	snprintf(l->buf, sizeof l->buf, "%s", s);
	l->len = l->pos = strlen(l->buf);
}

int
ui_line_key(struct ui_line *l, int key)
{
	size_t n;

	switch (key) {
	case KEY_LEFT:
		while (l->pos > 0 &&
		    ((unsigned char)l->buf[--l->pos] & 0xc0) == 0x80)
			;
		return 0;
	case KEY_RIGHT:
		while (l->pos < l->len &&
		    ((unsigned char)l->buf[++l->pos] & 0xc0) == 0x80)
			;
		return 0;
	case KEY_HOME:
	case 1: /* ^A */
		l->pos = 0;
		return 0;
	case KEY_END:
	case 5: /* ^E */
		l->pos = l->len;
		return 0;
	case 21: /* ^U */
		l->len = l->pos = 0;
		l->buf[0] = '\0';
		return 0;
	case KEY_BACKSPACE:
	case 127:
	case 8:
		if (l->pos == 0)
			return 0;
		n = 1;
		while (l->pos - n > 0 &&
		    ((unsigned char)l->buf[l->pos - n] & 0xc0) == 0x80)
			n++;
		memmove(
		    l->buf + l->pos - n, l->buf + l->pos, l->len - l->pos + 1);
		l->pos -= n;
		l->len -= n;
		return 0;
	case KEY_DC:
		if (l->pos < l->len) {
			n = 1;
			while (l->pos + n < l->len &&
			    ((unsigned char)l->buf[l->pos + n] & 0xc0) == 0x80)
				n++;
			memmove(l->buf + l->pos, l->buf + l->pos + n,
			    l->len - l->pos - n + 1);
			l->len -= n;
		}
		return 0;
	case KEY_UP:
		if (l->hpos > 0)
			ui_line_set(l, l->hist[--l->hpos]);
		return 0;
	case KEY_DOWN:
		if (l->hpos < l->nhist - 1)
			ui_line_set(l, l->hist[++l->hpos]);
		else {
			l->hpos = l->nhist;
			ui_line_set(l, "");
		}
		return 0;
	case '\r':
	case '\n':
	case KEY_ENTER:
		if (l->len == 0)
			return 0;
		if (l->nhist == 0 ||
		    strcmp(l->hist[l->nhist - 1], l->buf) != 0) {
			if (l->nhist ==
			    (int)(sizeof l->hist / sizeof l->hist[0])) {
				free(l->hist[0]);
				memmove(l->hist, l->hist + 1,
				    (size_t)(l->nhist - 1) * sizeof *l->hist);
				l->nhist--;
			}
			l->hist[l->nhist++] = xstrdup(l->buf);
		}
		l->hpos = l->nhist;
		return 1;
	default:
		if (key < 32 || key > 255 || l->len + 1 >= sizeof l->buf)
			return 0;
		memmove(
		    l->buf + l->pos + 1, l->buf + l->pos, l->len - l->pos + 1);
		l->buf[l->pos++] = (char)key;
		l->len++;
		return 0;
	}
}

void
ui_line_draw(struct ui_line *l, WINDOW *win, int y, int w, const char *prompt)
{
	int pw = (int)strlen(prompt), cols, start = 0, x;
	size_t off = 0;

	attrset(A_BOLD);
	ui_text(win, y, 0, w, prompt);
	attrset(A_NORMAL);
	/* Scroll so the cursor stays visible. */
	ui_fit(l->buf, 1 << 20, &cols);
	{
		char save = l->buf[l->pos];
		int before;

		l->buf[l->pos] = '\0';
		ui_fit(l->buf, 1 << 20, &before);
		l->buf[l->pos] = save;
		if (before > w - pw - 2)
			start = before - (w - pw - 2);
		x = pw + before - start;
	}
	while (start > 0 && l->buf[off] != '\0') {
		off++;
		while (((unsigned char)l->buf[off] & 0xc0) == 0x80)
			off++;
		start--;
	}
	ui_text(win, y, pw, w - pw, l->buf + off);
	if (x < w)
		mvwchgat(win, y, x, 1, A_REVERSE, 0, NULL);
}

void
ui_line_free(struct ui_line *l)
{
	int i;

	for (i = 0; i < l->nhist; i++)
		free(l->hist[i]);
	l->nhist = 0;
}
