/* Unit tests for tui/stack.c: python.backtrace rows grouped into threads
 * by column name, whatever the column order, and thread states as values. */
#include <string.h>

#include <jansson.h>

#include "tui.h"
#include "unit.h"

/* A result whose columns come in an order no query of ours uses. */
static json_t *
result(int with_target)
{
	json_t *r = json_pack("{s:[s,s,s,s,s,s,s,s,s,s], s:["
			      "[s,i,s,s,s,i,i,s,n,i],"
			      "[s,i,s,s,s,i,i,s,n,i],"
			      "[s,i,s,s,s,i,n,s,n,i],"
			      "[s,i,s,s,s,i,i,s,n,i]]}",
	    "columns", "file", "depth", "func", "frame_type", "thread_name",
	    "thread_id", "lineno", "thread_state", "thread_note", "lib_offset",
	    "rows", "a.py", 0, "f", "Python", "MainThread", 7, 10,
	    "holding the GIL", 0, "b.py", 1, "g", "Python", "MainThread", 7, 20,
	    "holding the GIL", 0, "libc.so.6", 0, "poll", "Native", "io", 8,
	    "idle in a syscall (poll)", 4096, "c.py", 0, "h", "Python", "io", 7,
	    30, "running", 0);

	if (with_target) {
		size_t i;
		json_t *row;

		json_array_insert_new(
		    json_object_get(r, "columns"), 0, json_string("target"));
		json_array_foreach(json_object_get(r, "rows"), i, row)
		    json_array_insert_new(
			row, 0, json_string(i < 1 ? "A" : "B"));
	}
	return r;
}

int
main(void)
{
	json_t *r = result(0), *threads, *t, *f;

	threads = stack_threads(r);
	CHECK(json_array_size(threads) == 3, "a new thread at each change");
	t = json_array_get(threads, 0);
	CHECK(json_integer_value(json_object_get(t, "thread_id")) == 7, "tid");
	CHECK(strcmp(json_string_value(json_object_get(t, "thread_name")),
		  "MainThread") == 0,
	    "name by column name");
	CHECK(json_array_size(json_object_get(t, "frames")) == 2, "frames");
	f = json_array_get(json_object_get(t, "frames"), 1);
	CHECK(strcmp(json_string_value(json_object_get(f, "func")), "g") == 0 &&
		json_integer_value(json_object_get(f, "lineno")) == 20 &&
		json_integer_value(json_object_get(f, "depth")) == 1,
	    "a Python frame");
	f = json_array_get(
	    json_object_get(json_array_get(threads, 1), "frames"), 0);
	CHECK(json_integer_value(json_object_get(f, "offset")) == 4096 &&
		json_object_get(f, "lineno") == NULL,
	    "a native frame has an offset, no lineno");
	CHECK(stack_state(json_string_value(json_object_get(t, "state"))) ==
		STACK_GIL_HOLDER,
	    "the GIL holder as a value");
	json_decref(threads);
	json_decref(r);

	r = result(1);
	threads = stack_threads(r);
	CHECK(
	    json_array_size(threads) == 4, "same tid, new target: new thread");
	CHECK(strcmp(json_string_value(
			 json_object_get(json_array_get(threads, 3), "target")),
		  "B") == 0,
	    "target kept");
	json_decref(threads);
	json_decref(r);

	CHECK(stack_state("waiting for the GIL") == STACK_GIL_WAITING, "waits");
	CHECK(stack_state("idle in a syscall (futex)") == STACK_IDLE, "prefix");
	CHECK(stack_state("running") == STACK_RUNNING, "running");
	CHECK(stack_state("holding the GIL, sort of") == STACK_UNKNOWN,
	    "exact text only");
	CHECK(stack_state(NULL) == STACK_UNKNOWN, "NULL");
	return unit_summary();
}
