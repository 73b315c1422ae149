/* backtrace: every thread's Python and native stack, read from the
 * python.backtrace table and printed per thread. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"
#include "tui.h"

enum cmd_backtrace_fmt { BT_FMT_TEXT, BT_FMT_JSON };

static const char *const cmd_backtrace_fmts[] = { "text", "json", NULL };

static const char cmd_backtrace_sql[] =
    "SELECT thread_id, thread_name, thread_state, thread_note, depth, "
    "frame_type, func, file, lineno, lib_offset FROM python.backtrace";

/* Column positions in a result row, found by name (a "target" column
 * comes first when there are several targets). */
struct cmd_backtrace_cols {
	int target, tid, name, state, note, depth, type, func, file, lineno,
	    offset;
};

static int
cmd_backtrace_col(json_t *columns, const char *name)
{
	size_t i;
	json_t *c;

	json_array_foreach(columns, i, c)
	{
		if (json_is_string(c) &&
		    strcmp(json_string_value(c), name) == 0)
			return (int)i;
	}
	return -1;
}

static json_t *
cmd_backtrace_get(json_t *row, int i)
{
	return i >= 0 ? json_array_get(row, (size_t)i) : NULL;
}

static const char *
cmd_backtrace_str(json_t *row, int i)
{
	json_t *v = cmd_backtrace_get(row, i);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Turns result rows into [{target?, thread_id, thread_name, state, note,
 * frames: [...]}], threads in the order the rows give them. */
static json_t *
cmd_backtrace_threads(json_t *result)
{
	json_t *columns = json_object_get(result, "columns");
	json_t *rows = json_object_get(result, "rows");
	json_t *threads = json_array(), *cur = NULL, *row, *frame, *v;
	struct cmd_backtrace_cols c;
	const char *target, *type, *prev_target = NULL;
	json_int_t tid, prev_tid = -1;
	size_t i;

	c.target = cmd_backtrace_col(columns, "target");
	c.tid = cmd_backtrace_col(columns, "thread_id");
	c.name = cmd_backtrace_col(columns, "thread_name");
	c.state = cmd_backtrace_col(columns, "thread_state");
	c.note = cmd_backtrace_col(columns, "thread_note");
	c.depth = cmd_backtrace_col(columns, "depth");
	c.type = cmd_backtrace_col(columns, "frame_type");
	c.func = cmd_backtrace_col(columns, "func");
	c.file = cmd_backtrace_col(columns, "file");
	c.lineno = cmd_backtrace_col(columns, "lineno");
	c.offset = cmd_backtrace_col(columns, "lib_offset");
	json_array_foreach(rows, i, row)
	{
		tid = json_integer_value(cmd_backtrace_get(row, c.tid));
		target = cmd_backtrace_str(row, c.target);
		if (cur == NULL || tid != prev_tid ||
		    (target != NULL && prev_target != NULL &&
			strcmp(target, prev_target) != 0)) {
			cur = json_object();
			if (target != NULL)
				json_object_set_new(
				    cur, "target", json_string(target));
			json_object_set_new(
			    cur, "thread_id", json_integer(tid));
			json_object_set(
			    cur, "thread_name", cmd_backtrace_get(row, c.name));
			json_object_set(
			    cur, "state", cmd_backtrace_get(row, c.state));
			json_object_set(
			    cur, "note", cmd_backtrace_get(row, c.note));
			json_object_set_new(cur, "frames", json_array());
			json_array_append_new(threads, cur);
			prev_tid = tid;
			prev_target = target;
		}
		type = cmd_backtrace_str(row, c.type);
		if (type == NULL)
			continue; /* a thread without frames */
		frame = json_pack("{s:s, s:O, s:O}", "type", type, "func",
		    cmd_backtrace_get(row, c.func), "file",
		    cmd_backtrace_get(row, c.file));
		if (frame == NULL)
			continue;
		if (strcmp(type, "Python") == 0) {
			v = cmd_backtrace_get(row, c.lineno);
			json_object_set(
			    frame, "lineno", v != NULL ? v : json_null());
		} else {
			v = cmd_backtrace_get(row, c.offset);
			json_object_set(
			    frame, "offset", v != NULL ? v : json_null());
		}
		json_array_append_new(json_object_get(cur, "frames"), frame);
	}
	return threads;
}

static void
cmd_backtrace_print_text(FILE *f, json_t *threads)
{
	json_t *t, *fr, *name, *v;
	const char *file, *base, *s;
	size_t i, k;

	json_array_foreach(threads, i, t)
	{
		if (i > 0)
			fputc('\n', f);
		if ((s = json_string_value(json_object_get(t, "target"))))
			fprintf(f, "[%s] ", s);
		name = json_object_get(t, "thread_name");
		fprintf(f, "thread %lld",
		    (long long)json_integer_value(
			json_object_get(t, "thread_id")));
		if (json_is_string(name))
			fprintf(f, " \"%s\"", json_string_value(name));
		if ((s = json_string_value(json_object_get(t, "state"))))
			fprintf(f, ": %s", s);
		fputc('\n', f);
		if ((s = json_string_value(json_object_get(t, "note"))))
			fprintf(f, "    (%s)\n", s);
		json_array_foreach(json_object_get(t, "frames"), k, fr)
		{
			file = json_string_value(json_object_get(fr, "file"));
			if (file == NULL)
				file = "";
			fprintf(f, "    %s ",
			    json_string_value(json_object_get(fr, "func")));
			if (strcmp(
				json_string_value(json_object_get(fr, "type")),
				"Python") == 0) {
				v = json_object_get(fr, "lineno");
				if (json_is_integer(v))
					fprintf(f, "(%s:%lld)\n", file,
					    (long long)json_integer_value(v));
				else
					fprintf(f, "(%s)\n", file);
			} else {
				base = strrchr(file, '/');
				base = base != NULL ? base + 1 : file;
				fprintf(f, "[%s+0x%llx]\n", *base ? base : "??",
				    (unsigned long long)json_integer_value(
					json_object_get(fr, "offset")));
			}
		}
	}
}

static int
cmd_backtrace_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "thread", required_argument, NULL, 'T' },
		{ "format", required_argument, NULL, 'f' },
		{ "target", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	int c, fmt = BT_FMT_TEXT, failed, rc;
	long tid = 0;
	char *sql, *end;
	json_t *result, *threads;

	while (
	    (c = getopt_long(argc, argv, "+:t:f:T:", longopts, NULL)) != -1) {
		switch (c) {
		case 't':
			ctx->target_text = optarg;
			break;
		case 'f':
			fmt = cmd_parse_format(
			    ctx->entry, optarg, cmd_backtrace_fmts);
			if (fmt < 0)
				return EXIT_USAGE;
			break;
		case 'T':
			tid = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || tid <= 0)
				return cmd_usage(ctx->entry,
				    "--thread needs a thread id, not '%s'",
				    optarg);
			break;
		case ':':
			return cmd_usage(ctx->entry, "option %s needs a value",
			    argv[optind - 1]);
		default:
			return cmd_usage(
			    ctx->entry, "unknown option %s", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cmd_usage(ctx->entry, "too many arguments");
	if ((rc = cmd_require_targets(ctx)) != 0)
		return rc;
	if (tid != 0)
		xasprintf(
		    &sql, "%s WHERE thread_id = %ld", cmd_backtrace_sql, tid);
	else
		sql = xstrdup(cmd_backtrace_sql);
	result = cmd_query_run(ctx, sql, &failed);
	free(sql);
	if (result == NULL)
		return 1;
	threads = cmd_backtrace_threads(result);
	json_decref(result);
	if (tid != 0 && json_array_size(threads) == 0 && !failed) {
		json_decref(threads);
		fprintf(stderr, "probing: no thread %ld in the target\n", tid);
		return 1;
	}
	if (fmt == BT_FMT_JSON) {
		json_dumpf(threads, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
	} else {
		cmd_backtrace_print_text(stdout, threads);
	}
	json_decref(threads);
	return failed ? 1 : 0;
}

const struct cmd_entry cmd_backtrace_entry = {
	.name = "backtrace",
	.alias = "bt",
	.args = "[--thread TID] [-f text|json]",
	.help = "show every thread's Python and native stack",
	.detail =
	    "  --thread TID  only this thread (its native id, as in ps -L)\n"
	    "  -f FORMAT     text (default) or json (an array of threads)\n"
	    "Works when the process is hung, even with the GIL held forever. "
	    "Native frames\n"
	    "come from a signal sent to each thread; "
	    "probing.backtrace.native=false turns\n"
	    "that off. The same data: probing query \"SELECT * FROM "
	    "python.backtrace\"\n",
	.needs_target = 1,
	.exec = cmd_backtrace_exec,
};
