/* query: run SQL in one or many targets and print the rows. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "proto.h"
#include "tui.h"

/* Runs sql on every target; returns the merged result (a first "target"
 * column when there are several) or NULL after printing the errors. */
json_t *
cmd_query_run(struct cmd_ctx *ctx, const char *sql, int *failed)
{
	json_t *body = json_pack("{s:s}", "sql", sql), *merged = NULL, *r;
	char *cause = NULL;
	int i, status;

	*failed = 0;
	for (i = 0; i < ctx->ntargets; i++) {
		if (client_request(&ctx->targets[i], ctx->token, "POST",
			PROTO_QUERY, body, ctx->timeout_ms, 0, &r, &status,
			&cause) != 0) {
			if (ctx->ntargets > 1)
				fprintf(stderr, "probing: %s: %s\n",
				    ctx->targets[i].name, cause);
			else
				cmd_fail(cause);
			free(cause);
			cause = NULL;
			(*failed)++;
			continue;
		}
		if (ctx->ntargets == 1) {
			merged = r;
			break;
		}
		fmt_merge_target(&merged, r, ctx->targets[i].name);
		json_decref(r);
	}
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
