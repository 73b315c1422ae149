/* query: run SQL in one or many targets and print the rows. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "proto.h"
#include "xmalloc.h"
#include "tui.h"

/* How long past the GIL wait a target may take to answer. */
#define CMD_QUERY_SLACK_MS 5000

/* Runs sql on every target; returns the merged result (a first "target"
 * column when there are several) or NULL after printing the errors. */
json_t *
cmd_query_run(struct cmd_ctx *ctx, const char *sql, int *failed)
{
	json_t *body = json_pack("{s:s}", "sql", sql), *merged = NULL, *r;
	struct fanout_result *res;
	char *cause = NULL, label[320];
	int i, status;

	*failed = 0;
	if (ctx->ntargets == 1) {
		if (client_request(&ctx->targets[0], ctx->token, "POST",
			PROTO_QUERY, body, ctx->timeout_ms, 0, &r, &status,
			&cause) != 0) {
			cmd_fail(cause);
			free(cause);
			*failed = 1;
			r = NULL;
		}
		json_decref(body);
		return r;
	}
	res = xcalloc((size_t)ctx->ntargets, sizeof *res);
	*failed = fanout_request(ctx->targets, ctx->ntargets, ctx->token,
	    "POST", PROTO_QUERY, body, ctx->timeout_ms,
	    ctx->timeout_ms + CMD_QUERY_SLACK_MS, res);
	for (i = 0; i < ctx->ntargets; i++) {
		if (res[i].cause != NULL)
			fprintf(stderr, "probing: %s: %s\n",
			    targets_label(ctx, i, label, sizeof label),
			    res[i].cause);
		else
			fmt_merge_target(
			    &merged, res[i].reply, ctx->targets[i].name);
	}
	fanout_free(res, ctx->ntargets);
	json_decref(body);
	return merged;
}

static int
cmd_query_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	int fmt = FMT_TABLE, failed, rc;
	json_t *result;

	if (cmd_getopt_format(ctx, argc, argv, &fmt) != 0)
		return EXIT_USAGE;
	if (optind + 1 != argc)
		return cmd_usage(ctx->entry,
		    optind >= argc ? "no SQL given"
				   : "give the SQL as one argument (quote it)");
	if ((rc = cmd_require_targets(ctx)) != 0)
		return rc;
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
	.needs_target = 1,
	.exec = cmd_query_exec,
};
