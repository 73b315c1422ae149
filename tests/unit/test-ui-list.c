/* Unit tests for tui/ui-list.c: the scrolling and selection every pane of
 * top shares. */
#include "top.h"
#include "unit.h"

int
main(void)
{
	struct ui_list sel = { .select = 1 }, scroll = { 0 };

	ui_list_fit(&sel, 100, 10);
	CHECK(ui_list_key(&sel, KEY_DOWN) && sel.sel == 1, "down");
	CHECK(ui_list_key(&sel, 'k') && sel.sel == 0, "k is up");
	CHECK(ui_list_key(&sel, KEY_UP) && sel.sel == 0, "stops at the top");
	CHECK(ui_list_key(&sel, KEY_NPAGE) && sel.sel == 10 && sel.first == 1,
	    "a page down, selection in view");
	CHECK(ui_list_key(&sel, KEY_END) && sel.sel == 99 && sel.first == 90,
	    "end");
	CHECK(ui_list_key(&sel, KEY_DOWN) && sel.sel == 99, "stops at the end");
	CHECK(ui_list_key(&sel, KEY_HOME) && sel.sel == 0 && sel.first == 0,
	    "home");
	CHECK(!ui_list_key(&sel, 'x'), "other keys are the pane's");
	ui_list_fit(&sel, 5, 10);
	CHECK(sel.sel == 0 && sel.first == 0, "fewer items than rows");
	sel.sel = 40;
	ui_list_fit(&sel, 5, 10);
	CHECK(sel.sel == 4, "selection clamped when items go");

	ui_list_fit(&scroll, 50, 20);
	CHECK(ui_list_key(&scroll, KEY_NPAGE) && scroll.first == 20, "pgdn");
	CHECK(ui_list_key(&scroll, KEY_NPAGE) && scroll.first == 30,
	    "no scrolling past the end");
	CHECK(ui_list_key(&scroll, KEY_PPAGE) && scroll.first == 10, "pgup");
	CHECK(ui_list_key(&scroll, KEY_HOME) && scroll.first == 0, "home");
	CHECK(ui_list_key(&scroll, KEY_END) && scroll.first == 30 &&
		scroll.follow,
	    "end follows");
	ui_list_fit(&scroll, 60, 20);
	CHECK(scroll.first == 40, "new items stay in view after End");
	CHECK(ui_list_key(&scroll, KEY_UP) && scroll.first == 39 &&
		!scroll.follow,
	    "scrolling back stops following");
	ui_list_fit(&scroll, 70, 20);
	CHECK(scroll.first == 39, "and the view stays put");
	return unit_summary();
}
