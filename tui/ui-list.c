/* The scrolling and selection every pane of `probing top` shares, after
 * htop's Panel_onKey: the same keys move through processes, modules,
 * stack lines, query rows and the eval transcript. */
#include "top.h"

const char ui_list_help[] =
    "Up/Down PgUp/PgDn Home/End  move in any list (j k too)";

int
ui_list_key(struct ui_list *l, int key)
{
	int page = l->page > 1 ? l->page : 1;
	int *pos = l->select ? &l->sel : &l->first;

	switch (key) {
	case KEY_UP:
	case 'k':
		(*pos)--;
		break;
	case KEY_DOWN:
	case 'j':
		(*pos)++;
		break;
	case KEY_PPAGE:
		*pos -= page;
		break;
	case KEY_NPAGE:
		*pos += page;
		break;
	case KEY_HOME:
		*pos = 0;
		break;
	case KEY_END:
		*pos = l->select ? l->n - 1 : l->n - page;
		if (!l->select)
			l->follow = 1;
		ui_list_fit(l, l->n, l->page);
		return 1;
	default:
		return 0;
	}
	if (!l->select)
		l->follow = 0;
	ui_list_fit(l, l->n, l->page);
	return 1;
}

void
ui_list_fit(struct ui_list *l, int n, int page)
{
	l->n = n;
	l->page = page;
	if (l->select) {
		if (l->sel >= n)
			l->sel = n - 1;
		if (l->sel < 0)
			l->sel = 0;
		if (l->sel < l->first)
			l->first = l->sel;
		if (page > 0 && l->sel >= l->first + page)
			l->first = l->sel - page + 1;
	} else if (l->follow)
		l->first = n - page;
	if (l->first > n - page)
		l->first = n - page;
	if (l->first < 0)
		l->first = 0;
}
