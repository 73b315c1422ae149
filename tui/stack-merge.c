/* Stacks of many targets merged into one prefix tree (LLNL STAT's idea):
 * every thread's stack from the outermost frame inward, a node per
 * (func, file, lineno, frame_type), each labelled with the set of ranks
 * (pids where there is no rank) whose threads pass through it. A branch
 * that only some of its parent's ranks take is where they part. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tui.h"

/* A native frame of the interpreter itself (its library is the python
 * executable or libpython) or of our own agent (the collectives' C
 * wrappers). */
static int
stack_merge_interp(json_t *frame)
{
	const char *file = json_string_value(json_object_get(frame, "file"));
	const char *base;

	if (file == NULL)
		return 0;
	base = strrchr(file, '/');
	base = base != NULL ? base + 1 : file;
	return strncmp(base, "python", 6) == 0 ||
	    strncmp(base, "libpython", 9) == 0 ||
	    strncmp(base, "libprobing", 10) == 0;
}

static int
stack_merge_is_python(json_t *frame)
{
	const char *t = json_string_value(json_object_get(frame, "type"));

	return t != NULL && strcmp(t, "Python") == 0;
}

/* Whether frame i (innermost first) stays when the interpreter's own
 * frames are collapsed: native frames outside the outermost Python frame
 * (thread start-up) and the interpreter's frames (eval loop, calls) go;
 * libraries' frames inside Python frames (what a thread waits in) stay,
 * as does every frame of a thread without Python frames. */
static int
stack_merge_keep(json_t *frames, size_t i, long outer_py)
{
	json_t *f = json_array_get(frames, i);

	if (outer_py < 0 || stack_merge_is_python(f))
		return 1;
	return (long)i < outer_py && !stack_merge_interp(f);
}

/* The child of node matching frame, made when missing. */
static json_t *
stack_merge_child(json_t *node, json_t *frame)
{
	json_t *kids = json_object_get(node, "children"), *k;
	json_t *func = json_object_get(frame, "func");
	json_t *file = json_object_get(frame, "file");
	json_t *line = json_object_get(frame, "lineno");
	int python = stack_merge_is_python(frame);
	size_t i;

	if (!python)
		line = json_null();
	json_array_foreach(kids, i, k)
	{
		if (json_equal(json_object_get(k, "func"), func) &&
		    json_equal(json_object_get(k, "file"), file) &&
		    json_equal(
			json_object_get(k, "lineno"), line ?: json_null()))
			return k;
	}
	k = json_pack("{s:O, s:O, s:O, s:s, s:[], s:[]}", "func",
	    func ?: json_null(), "file", file ?: json_null(), "lineno",
	    line ?: json_null(), "frame_type", python ? "Python" : "Native",
	    "ranks", "children");
	json_array_append_new(kids, k);
	return k;
}

/* Adds label to node's sorted set of ranks. */
static void
stack_merge_label(json_t *node, json_int_t label)
{
	json_t *ranks = json_object_get(node, "ranks");
	size_t i;

	for (i = 0; i < json_array_size(ranks); i++) {
		json_int_t v = json_integer_value(json_array_get(ranks, i));

		if (v == label)
			return;
		if (v > label)
			break;
	}
	json_array_insert_new(ranks, i, json_integer(label));
}

static int
stack_merge_cmp(const void *a, const void *b)
{
	json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	size_t nx = json_array_size(json_object_get(x, "ranks"));
	size_t ny = json_array_size(json_object_get(y, "ranks"));

	if (nx != ny)
		return nx > ny ? -1 : 1;
	return (int)(json_integer_value(
			 json_array_get(json_object_get(x, "ranks"), 0)) -
	    json_integer_value(json_array_get(json_object_get(y, "ranks"), 0)));
}

/* Sorts every level: the largest groups first, then by lowest rank. */
static void
stack_merge_sort(json_t *node)
{
	json_t *kids = json_object_get(node, "children"), **v;
	size_t i, n = json_array_size(kids);

	if (n == 0)
		return;
	v = calloc(n, sizeof *v);
	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(kids, i));
	qsort(v, n, sizeof *v, stack_merge_cmp);
	json_array_clear(kids);
	for (i = 0; i < n; i++) {
		stack_merge_sort(v[i]);
		json_array_append_new(kids, v[i]);
	}
	free(v);
}

json_t *
stack_merge(json_t *threads, json_t *labels, int native_all)
{
	json_t *root = json_pack("{s:[], s:[]}", "ranks", "children");
	json_t *t, *frames, *node, *f;
	json_int_t label;
	long i, n, outer_py;
	size_t k;

	json_array_foreach(threads, k, t)
	{
		label = json_integer_value(json_object_get(labels,
		    json_string_value(json_object_get(t, "target")) ?: ""));
		frames = json_object_get(t, "frames");
		n = (long)json_array_size(frames);
		outer_py = -1;
		for (i = 0; i < n; i++) {
			if (stack_merge_is_python(json_array_get(frames, i)))
				outer_py = i;
		}
		node = root;
		stack_merge_label(node, label);
		for (i = n - 1; i >= 0; i--) {
			f = json_array_get(frames, (size_t)i);
			if (!native_all &&
			    !stack_merge_keep(frames, (size_t)i, outer_py))
				continue;
			node = stack_merge_child(node, f);
			stack_merge_label(node, label);
		}
	}
	stack_merge_sort(root);
	return root;
}

void
stack_merge_ranges(json_t *ranks, char *buf, size_t len)
{
	size_t i, n = json_array_size(ranks), used = 0;
	json_int_t lo, hi, v;

	buf[0] = '\0';
	i = 0;
	while (i < n && used + 1 < len) {
		lo = hi = json_integer_value(json_array_get(ranks, i));
		for (i++; i < n; i++) {
			v = json_integer_value(json_array_get(ranks, i));
			if (v != hi + 1)
				break;
			hi = v;
		}
		used += (size_t)snprintf(buf + used, len - used,
		    lo == hi ? "%s%lld" : "%s%lld-%lld", used ? "," : "",
		    (long long)lo, (long long)hi);
		if (used >= len) {
			used = len - 1;
			break;
		}
	}
}

/* Hands each node under node, at depth, to emit as one line of text,
 * with part set for a branch taken by only some of its parent's ranks. */
static void
stack_merge_level(json_t *node, int depth, stack_merge_emit_fn emit, void *arg)
{
	json_t *kids = json_object_get(node, "children"), *k, *line;
	size_t nparent = json_array_size(json_object_get(node, "ranks"));
	const char *file, *base;
	char ranks[256], text[1400];
	size_t i;
	int part;

	json_array_foreach(kids, i, k)
	{
		part = json_array_size(json_object_get(k, "ranks")) < nparent &&
		    depth > 0;
		stack_merge_ranges(
		    json_object_get(k, "ranks"), ranks, sizeof ranks);
		file = json_string_value(json_object_get(k, "file")) ?: "";
		line = json_object_get(k, "lineno");
		base = strrchr(file, '/');
		if (json_is_integer(line))
			snprintf(text, sizeof text, "[%s] %s (%s:%lld)", ranks,
			    json_string_value(json_object_get(k, "func"))
				?: "??",
			    file, (long long)json_integer_value(line));
		else
			snprintf(text, sizeof text, "[%s] %s [%s]", ranks,
			    json_string_value(json_object_get(k, "func"))
				?: "??",
			    base != NULL ? base + 1 : file);
		emit(arg, depth, part, text);
		stack_merge_level(k, depth + 1, emit, arg);
	}
}

void
stack_merge_lines(json_t *tree, stack_merge_emit_fn emit, void *arg)
{
	stack_merge_level(tree, 0, emit, arg);
}

struct stack_merge_out {
	FILE *f;
	int color;
};

static void
stack_merge_print_line(void *arg, int depth, int part, const char *text)
{
	struct stack_merge_out *o = arg;

	fprintf(o->f, "%*s%s%s%s\n", depth * 2, "",
	    part && o->color ? "\033[1;31m" : "", text,
	    part ? (o->color ? "\033[0m" : "  <-- only these") : "");
}

void
stack_merge_print(FILE *f, json_t *tree, int color)
{
	struct stack_merge_out o = { f, color };

	stack_merge_lines(tree, stack_merge_print_line, &o);
}
