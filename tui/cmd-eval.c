/* eval: run Python code in the target's __main__ and print its output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "tui.h"

static int
cmd_eval_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	json_t *body, *r;
	const char *out, *err;
	char *cause = NULL;
	int i, rc, status, failed = 0;

	if (cmd_getopt(ctx, argc, argv, "") != -1)
		return EXIT_USAGE;
	if (optind + 1 != argc)
		return cmd_usage(ctx->entry,
		    optind >= argc
			? "no code given"
			: "give the code as one argument (quote it)");
	if ((rc = cmd_require_targets(ctx)) != 0)
		return rc;
	body = json_pack("{s:s}", "code", argv[optind]);
	for (i = 0; i < ctx->ntargets; i++) {
		if (ctx->ntargets > 1)
			printf("== %s ==\n", ctx->targets[i].name);
		if (client_request(&ctx->targets[i], ctx->token, "POST",
			PROTO_EVAL, body, ctx->timeout_ms, 0, &r, &status,
			&cause) != 0) {
			cmd_fail(cause);
			free(cause);
			cause = NULL;
			failed = 1;
			continue;
		}
		out = json_string_value(json_object_get(r, "output"));
		err = json_string_value(json_object_get(r, "error"));
		if (out != NULL)
			fputs(out, stdout);
		fflush(stdout);
		if (err != NULL) {
			fputs(err, stderr);
			failed = 1;
		}
		json_decref(r);
	}
	json_decref(body);
	return failed;
}

const struct cmd_entry cmd_eval_entry = {
	.name = "eval",
	.alias = "e",
	.args = "CODE",
	.help = "run Python in the target's __main__ and print its output",
	.detail = "a bare expression prints its repr; an exception prints its "
		  "traceback on stderr and exits 1\n",
	.needs_target = 1,
	.exec = cmd_eval_exec,
};
