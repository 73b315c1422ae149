/* query: run SQL in one or many targets and print the rows. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "proto.h"
#include "xmalloc.h"
#include "tui.h"

/* Runs sql on every target; returns the merged result (a first "target"
 * column when there are several) or NULL after printing the errors. */
json_t *
cmd_query_run(struct cmd_ctx *ctx, const char *sql, int *failed)
{
	json_t *body = json_pack("{s:s}", "sql", sql), *merged = NULL;

	*failed = cmd_each_target(ctx, CMD_EACH_FANOUT, "POST", PROTO_QUERY,
	    body, cmd_merge_rows, &merged);
	json_decref(body);
	return merged;
}

static int
cmd_query_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	int fmt = FMT_TABLE, failed;
	json_t *result;

	if (cmd_getopt_format(ctx, argc, argv, &fmt) != 0)
		return EXIT_USAGE;
	if (optind + 1 != argc)
		return cmd_usage(ctx->entry,
		    optind >= argc ? "no SQL given"
				   : "give the SQL as one argument (quote it)");
	result = cmd_query_run(ctx, argv[optind], &failed);
	if (result != NULL) {
		fmt_print(stdout, (enum fmt_kind)fmt, result);
		json_decref(result);
	}
	return failed ? 1 : 0;
}

const struct cmd_entry cmd_query_entry = {
	.name = "query",
	.alias = "q",
	.args = "[-f table|json|csv] SQL",
	.help = "run SQL over the target's live tables",
	.detail = "  -f FORMAT   table (default), json (an array of objects) "
		  "or csv\n"
		  "tables: python.torch_trace, python.backtrace and any "
		  "@probing.table; see: probing tables\n",
	.opts = "f:",
	.target = CMD_TARGET_REQUIRED,
	.exec = cmd_query_exec,
};
