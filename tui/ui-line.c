/* The input line of `probing top`'s SQL and Eval panes: UTF-8 editing,
 * Emacs-style ^A ^E ^U, and a history walked with Up and Down. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"
#include "top.h"

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
ui_line_clear(struct ui_line *l)
{
	l->len = l->pos = 0;
	l->buf[0] = '\0';
}

void
ui_line_free(struct ui_line *l)
{
	int i;

	for (i = 0; i < l->nhist; i++)
		free(l->hist[i]);
	l->nhist = 0;
}
