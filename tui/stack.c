/* Stacks as threads: the rows of python.backtrace (one per frame, read by
 * column name) grouped into one object per thread, and the thread states
 * the agent reports turned into values. Used by `backtrace` and the Stacks
 * pane of `top` (and meant for merging stacks across ranks). */
#include <string.h>

#include "tui.h"

const char stack_sql[] =
    "SELECT thread_id, thread_name, thread_state, thread_note, depth, "
    "frame_type, func, file, lineno, lib_offset FROM python.backtrace";

const char stack_merge_sql[] =
    "SELECT p.rank AS _rank, p.pid AS _pid, b.thread_id, b.thread_name, "
    "b.thread_state, b.thread_note, b.depth, b.frame_type, b.func, b.file, "
    "b.lineno, b.lib_offset FROM python.backtrace b, python.process p";

/* The thread_state texts the agent writes (agent/backtrace.c), the one
 * place the client knows them. A text ending in "*" is a prefix. */
static const struct {
	const char *text;
	enum stack_state state;
} stack_states[] = {
	{ "holding the GIL", STACK_GIL_HOLDER },
	{ "waiting for the GIL", STACK_GIL_WAITING },
	{ "running", STACK_RUNNING },
	{ "idle in a syscall*", STACK_IDLE },
};

enum stack_state
stack_state(const char *text)
{
	size_t i, n;

	if (text == NULL)
		return STACK_UNKNOWN;
	for (i = 0; i < sizeof stack_states / sizeof stack_states[0]; i++) {
		n = strlen(stack_states[i].text);
		if (stack_states[i].text[n - 1] == '*'
			? strncmp(text, stack_states[i].text, n - 1) == 0
			: strcmp(text, stack_states[i].text) == 0)
			return stack_states[i].state;
	}
	return STACK_UNKNOWN;
}

/* Column positions in a result row (a "target" column comes first when
 * the rows come from several targets). */
struct stack_cols {
	int target, tid, name, state, note, depth, type, func, file, lineno,
	    offset;
};

static const char *
stack_str(json_t *row, int col)
{
	json_t *v = fmt_cell(row, col);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* One frame object: type, func, file, depth, and lineno (Python) or
 * offset (native); NULL for the row of a thread without frames. */
static json_t *
stack_frame(json_t *row, const struct stack_cols *c)
{
	const char *type = stack_str(row, c->type);
	json_t *frame, *v;
	int python;

	if (type == NULL)
		return NULL;
	frame = json_pack("{s:s, s:O, s:O}", "type", type, "func",
	    fmt_cell(row, c->func) ?: json_null(), "file",
	    fmt_cell(row, c->file) ?: json_null());
	if (frame == NULL)
		return NULL;
	python = strcmp(type, "Python") == 0;
	v = fmt_cell(row, python ? c->lineno : c->offset);
	json_object_set(
	    frame, python ? "lineno" : "offset", v != NULL ? v : json_null());
	v = fmt_cell(row, c->depth);
	if (v != NULL)
		json_object_set(frame, "depth", v);
	return frame;
}

json_t *
stack_threads(json_t *result)
{
	json_t *rows = json_object_get(result, "rows");
	json_t *threads = json_array(), *cur = NULL, *row, *frame;
	struct stack_cols c;
	const char *target, *prev_target = NULL;
	json_int_t tid, prev_tid = -1;
	size_t i;

	c.target = fmt_col(result, "target");
	c.tid = fmt_col(result, "thread_id");
	c.name = fmt_col(result, "thread_name");
	c.state = fmt_col(result, "thread_state");
	c.note = fmt_col(result, "thread_note");
	c.depth = fmt_col(result, "depth");
	c.type = fmt_col(result, "frame_type");
	c.func = fmt_col(result, "func");
	c.file = fmt_col(result, "file");
	c.lineno = fmt_col(result, "lineno");
	c.offset = fmt_col(result, "lib_offset");
	json_array_foreach(rows, i, row)
	{
		tid = json_integer_value(fmt_cell(row, c.tid));
		target = stack_str(row, c.target);
		if (cur == NULL || tid != prev_tid ||
		    (target != NULL && prev_target != NULL &&
			strcmp(target, prev_target) != 0)) {
			cur = json_object();
			if (target != NULL)
				json_object_set_new(
				    cur, "target", json_string(target));
			json_object_set_new(
			    cur, "thread_id", json_integer(tid));
			json_object_set(cur, "thread_name",
			    fmt_cell(row, c.name) ?: json_null());
			json_object_set(cur, "state",
			    fmt_cell(row, c.state) ?: json_null());
			json_object_set(
			    cur, "note", fmt_cell(row, c.note) ?: json_null());
			json_object_set_new(cur, "frames", json_array());
			json_array_append_new(threads, cur);
			prev_tid = tid;
			prev_target = target;
		}
		frame = stack_frame(row, &c);
		if (frame != NULL)
			json_array_append_new(
			    json_object_get(cur, "frames"), frame);
	}
	return threads;
}
