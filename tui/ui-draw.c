/* Colours and text for the screen of `probing top`: the colour pairs
 * (attributes only with NO_COLOR or a terminal without colours) and
 * writing UTF-8 text clipped to a width. The floor the panes and ui.c
 * draw with. */
#include <stdlib.h>

#include "top.h"

static int ui_attrs[UI_NCOLORS];

int
ui_attr(enum ui_color c)
{
	return ui_attrs[c];
}

int
ui_colors_init(void)
{
	const char *nc = getenv("NO_COLOR");
	int grey, color = has_colors() && (nc == NULL || *nc == '\0');

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
	if (!color)
		return 0;
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
	return 1;
}

size_t
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
