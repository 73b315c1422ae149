/* evals: the evals running in a target (`probing eval`, API evals, repl
 * statements), and --cancel ID to stop one. An eval whose thread is
 * inside a C call that does not return cannot be stopped before the call
 * returns; this is where it shows, with its thread. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proto.h"
#include "tui.h"

/* Asks target 0 to stop eval id; returns the exit status. */
static int
cmd_evals_cancel(struct cmd_ctx *ctx, long id)
{
	json_t *body = json_pack("{s:I}", "id", (json_int_t)id), *r;
	char *cause = NULL;
	int status, rc;

	if (client_request(&ctx->targets[0], ctx->token, "POST",
		PROTO_EVAL_INTERRUPT, body, ctx->timeout_ms, 0, &r, &status,
		&cause) != 0) {
		json_decref(body);
		rc = cmd_fail(cause);
		free(cause);
		return rc;
	}
	json_decref(body);
	if (json_is_true(json_object_get(r, "interrupted")))
		printf("eval %ld: KeyboardInterrupt raised; it stops at its "
		       "next bytecode\n",
		    id);
	else {
		fprintf(stderr, "probing: no running eval %ld in %s\n", id,
		    ctx->targets[0].name);
		json_decref(r);
		return 1;
	}
	json_decref(r);
	return 0;
}

static const struct option cmd_evals_longopts[] = {
	{ "cancel", required_argument, NULL, 'c' },
	{ NULL, 0, NULL, 0 },
};

static int
cmd_evals_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	json_t *merged = NULL;
	char *end;
	long cancel = 0;
	int c, failed, fmt = FMT_TABLE;

	while ((c = cmd_getopt(ctx, argc, argv)) != -1) {
		if (c == 'f') {
			fmt = cmd_parse_format(ctx->entry, optarg, fmt_names);
			if (fmt < 0)
				return EXIT_USAGE;
		} else if (c == 'c') {
			cancel = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || cancel <= 0)
				return cmd_usage(
				    ctx->entry, "invalid eval id '%s'", optarg);
		} else
			return EXIT_USAGE;
	}
	if (optind != argc)
		return cmd_usage(ctx->entry, "too many arguments");
	if (cancel != 0) {
		if (ctx->ntargets != 1)
			return cmd_usage(
			    ctx->entry, "--cancel needs exactly one target");
		return cmd_evals_cancel(ctx, cancel);
	}
	failed = cmd_each_target(ctx, CMD_EACH_FANOUT, "GET", PROTO_EVALS, NULL,
	    cmd_merge_rows, &merged);
	if (merged != NULL) {
		fmt_print(stdout, (enum fmt_kind)fmt, merged);
		json_decref(merged);
	}
	return failed ? 1 : 0;
}

const struct cmd_entry cmd_evals_entry = {
	.name = "evals",
	.args = "[-f table|json|csv] [--cancel ID]",
	.help = "list the evals running in the target, or stop one",
	.detail = "  -c, --cancel ID  raise KeyboardInterrupt in eval ID (it "
		  "lands at its next bytecode:\n"
		  "                   inside a C call, when that call "
		  "returns)\n"
		  "state: waiting for the GIL, running, or interrupted, inside "
		  "a call that has not returned\n",
	.opts = "f:c:",
	.longopts = cmd_evals_longopts,
	.target = CMD_TARGET_REQUIRED,
	.exec = cmd_evals_exec,
};
