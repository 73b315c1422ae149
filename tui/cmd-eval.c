/* eval: run Python code in the target's __main__ and print its output.
 *
 * The code runs until it ends, --timeout passes or Ctrl-C: the agent then
 * raises KeyboardInterrupt in it (Ctrl-C closes the connection, which
 * the agent takes as the same). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proto.h"
#include "tui.h"

static int
cmd_eval_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	json_t *body, *r, *after;
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
	client_catch_sigint();
	for (i = 0; i < ctx->ntargets && !client_interrupted; i++) {
		if (client_request(&ctx->targets[i], ctx->token, "POST",
			PROTO_EVAL, body, ctx->timeout_ms, 0, &r, &status,
			&cause) != 0) {
			if (ctx->ntargets > 1)
				fprintf(stderr, "probing: %s: %s\n",
				    ctx->targets[i].name, cause_str(cause));
			else
				cmd_fail(cause);
			free(cause);
			cause = NULL;
			failed = 1;
			continue;
		}
		if (ctx->ntargets > 1)
			printf("== %s ==\n", ctx->targets[i].name);
		out = json_string_value(json_object_get(r, "output"));
		err = json_string_value(json_object_get(r, "error"));
		after = json_object_get(r, "interrupted_after");
		if (out != NULL)
			fputs(out, stdout);
		fflush(stdout);
		if (json_is_number(after)) {
			fprintf(stderr, "probing: interrupted after %.1f s\n",
			    json_number_value(after));
			failed = 1;
		} else if (err != NULL) {
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
	.detail =
	    "a bare expression prints its repr; an exception prints its "
	    "traceback on stderr and exits 1\n"
	    "the code is stopped (KeyboardInterrupt at its next bytecode) "
	    "after --timeout or on Ctrl-C; one inside a C call that does "
	    "not return is listed by: probing evals\n",
	.needs_target = 1,
	.exec = cmd_eval_exec,
};
