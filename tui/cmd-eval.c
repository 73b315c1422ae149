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

/* Prints one target's output (its traceback, or that it was stopped, on
 * stderr); 1 if it raised or was stopped. */
static int
cmd_eval_print(
    struct cmd_ctx *ctx, const struct endpoint *ep, json_t *r, void *arg)
{
	const char *out = json_string_value(json_object_get(r, "output"));
	const char *err = json_string_value(json_object_get(r, "error"));
	json_t *after = json_object_get(r, "interrupted_after");

	(void)arg;
	if (ctx->ntargets > 1)
		printf("== %s ==\n", ep->name);
	if (out != NULL)
		fputs(out, stdout);
	fflush(stdout);
	if (json_is_number(after)) {
		fprintf(stderr, "probing: interrupted after %.1f s\n",
		    json_number_value(after));
		return 1;
	}
	if (err != NULL)
		fputs(err, stderr);
	return err != NULL;
}

static int
cmd_eval_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	json_t *body;
	int failed;

	if (cmd_getopt(ctx, argc, argv) != -1)
		return EXIT_USAGE;
	if (optind + 1 != argc)
		return cmd_usage(ctx->entry,
		    optind >= argc
			? "no code given"
			: "give the code as one argument (quote it)");
	body = json_pack("{s:s}", "code", argv[optind]);
	client_catch_sigint();
	failed = cmd_each_target(
	    ctx, 0, "POST", PROTO_EVAL, body, cmd_eval_print, NULL);
	json_decref(body);
	return failed ? 1 : 0;
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
	.opts = "",
	.target = CMD_TARGET_REQUIRED,
	.exec = cmd_eval_exec,
};
