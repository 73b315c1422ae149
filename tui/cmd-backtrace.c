/* backtrace: every thread's Python and native stack, read from the
 * python.backtrace table, grouped by stack.c and printed per thread. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"
#include "tui.h"

enum cmd_backtrace_fmt { BT_FMT_TEXT, BT_FMT_JSON };

static const char *const cmd_backtrace_fmts[] = { "text", "json", NULL };

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

/* The label of each target in result: its rank, else its pid. */
static json_t *
cmd_backtrace_labels(json_t *result)
{
	json_t *labels = json_object(), *row, *rank;
	int ct = fmt_col(result, "target"), cr = fmt_col(result, "_rank");
	int cp = fmt_col(result, "_pid");
	const char *target;
	size_t i;

	json_array_foreach(json_object_get(result, "rows"), i, row)
	{
		target = json_string_value(fmt_cell(row, ct)) ?: "";
		if (json_object_get(labels, target) != NULL)
			continue;
		rank = fmt_cell(row, cr);
		json_object_set(labels, target,
		    json_is_integer(rank) ? rank : fmt_cell(row, cp));
	}
	return labels;
}

/* Prints the merged tree of every target's threads. */
static void
cmd_backtrace_merge(json_t *result, json_t *threads, int fmt, int native_all)
{
	json_t *labels = cmd_backtrace_labels(result);
	json_t *tree = stack_merge(threads, labels, native_all);

	if (fmt == BT_FMT_JSON) {
		json_dumpf(
		    json_object_get(tree, "children"), stdout, JSON_INDENT(2));
		fputc('\n', stdout);
	} else {
		stack_merge_print(stdout, tree, fmt_color(stdout));
	}
	json_decref(tree);
	json_decref(labels);
}

static const struct option cmd_backtrace_longopts[] = {
	{ "thread", required_argument, NULL, 'T' },
	{ "format", required_argument, NULL, 'f' },
	{ "merge", no_argument, NULL, 'm' },
	{ "native", required_argument, NULL, 'n' },
	{ NULL, 0, NULL, 0 },
};

static int
cmd_backtrace_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	int c, fmt = BT_FMT_TEXT, failed, merge = 0, native_all = 0;
	long tid = 0;
	char *sql, *end;
	json_t *result, *threads;

	while ((c = cmd_getopt(ctx, argc, argv)) != -1) {
		switch (c) {
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
		case 'm':
			merge = 1;
			break;
		case 'n':
			if (strcmp(optarg, "all") != 0 &&
			    strcmp(optarg, "collapsed") != 0)
				return cmd_usage(ctx->entry,
				    "--native takes all or collapsed, not '%s'",
				    optarg);
			native_all = strcmp(optarg, "all") == 0;
			break;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cmd_usage(ctx->entry, "too many arguments");
	if (tid != 0)
		xasprintf(&sql, "%s WHERE thread_id = %ld",
		    merge ? stack_merge_sql : stack_sql, tid);
	else
		sql = xstrdup(merge ? stack_merge_sql : stack_sql);
	result = cmd_query_run(ctx, sql, &failed);
	free(sql);
	if (result == NULL)
		return 1;
	threads = stack_threads(result);
	if (merge) {
		cmd_backtrace_merge(result, threads, fmt, native_all);
		json_decref(result);
		json_decref(threads);
		return failed ? 1 : 0;
	}
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

/* The query it runs, so that help shows exactly that. */
static void
cmd_backtrace_more(FILE *f)
{
	fprintf(f, "runs this query (probing query can run it too):\n  %s\n",
	    stack_sql);
}

const struct cmd_entry cmd_backtrace_entry = {
	.name = "backtrace",
	.alias = "bt",
	.args = "[--thread TID] [--merge [--native all]] [-f text|json]",
	.help = "show every thread's Python and native stack",
	.detail =
	    "  --thread TID  only this thread (its native id, as in ps -L)\n"
	    "  -f FORMAT     text (default) or json (an array of threads)\n"
	    "  --merge       one tree of every target's stacks, each frame "
	    "with "
	    "the ranks\n"
	    "                (pids where no rank) through it; a branch only "
	    "some take is\n"
	    "                marked; -f json gives the tree\n"
	    "  --native all  with --merge: keep the interpreter's own native "
	    "frames\n"
	    "Works when the process is hung, even with the GIL held forever. "
	    "Native frames\n"
	    "come from a helper that holds one thread at a time with ptrace "
	    "(no signals);\n"
	    "probing.backtrace.native=false turns that off.\n",
	.more = cmd_backtrace_more,
	.opts = "f:T:",
	.longopts = cmd_backtrace_longopts,
	.target = CMD_TARGET_REQUIRED,
	.exec = cmd_backtrace_exec,
};
