/* config: list, read or change the agent's settings live. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config-keys.h"
#include "log.h"
#include "proto.h"
#include "tui.h"

/* Prints every key as a table (several targets: a target column). */
static int
cmd_config_list(struct cmd_ctx *ctx, int fmt)
{
	json_t *all = json_pack("{s:[], s:[]}", "columns", "rows"), *r, *k;
	json_t *cols;
	char *cause = NULL;
	int i, status, failed = 0, answered = 0;
	size_t j;

	if (ctx->ntargets > 1)
		json_array_append_new(
		    json_object_get(all, "columns"), json_string("target"));
	cols = json_pack("[s,s,s,s]", "key", "value", "default", "description");
	json_array_extend(json_object_get(all, "columns"), cols);
	json_decref(cols);
	for (i = 0; i < ctx->ntargets; i++) {
		if (client_request(&ctx->targets[i], ctx->token, "GET",
			PROTO_CONFIG, NULL, ctx->timeout_ms, 0, &r, &status,
			&cause) != 0) {
			failed = cmd_fail(cause);
			free(cause);
			cause = NULL;
			continue;
		}
		answered++;
		json_array_foreach(json_object_get(r, "keys"), j, k)
		{
			json_t *row =
			    json_pack("[O,O,O,O]", json_object_get(k, "key"),
				json_object_get(k, "value"),
				json_object_get(k, "default"),
				json_object_get(k, "help"));

			if (ctx->ntargets > 1)
				json_array_insert_new(
				    row, 0, json_string(ctx->targets[i].name));
			json_array_append_new(
			    json_object_get(all, "rows"), row);
		}
		json_decref(r);
	}
	/* Nothing on stdout when no target answered. */
	if (answered > 0)
		fmt_print(stdout, (enum fmt_kind)fmt, all);
	json_decref(all);
	return failed;
}

/* Prints one key's bare value (prefixed by the target when several). */
static int
cmd_config_get(struct cmd_ctx *ctx, const char *key)
{
	json_t *r, *k;
	char *cause = NULL;
	int i, status, failed = 0;
	size_t j;

	if (config_key_find(key) == NULL) {
		fprintf(stderr,
		    "probing: unknown config key '%s' (see: probing "
		    "config)\n",
		    key);
		return 1;
	}
	for (i = 0; i < ctx->ntargets; i++) {
		if (client_request(&ctx->targets[i], ctx->token, "GET",
			PROTO_CONFIG, NULL, ctx->timeout_ms, 0, &r, &status,
			&cause) != 0) {
			failed = cmd_fail(cause);
			free(cause);
			cause = NULL;
			continue;
		}
		json_array_foreach(json_object_get(r, "keys"), j, k)
		{
			if (strcmp(json_string_value(json_object_get(k, "key")),
				key) != 0)
				continue;
			if (ctx->ntargets > 1)
				printf("%s\t", ctx->targets[i].name);
			printf("%s\n",
			    json_string_value(json_object_get(k, "value")));
		}
		json_decref(r);
	}
	return failed;
}

/* Validates here first (same table as the agent), then applies it. */
static int
cmd_config_set(struct cmd_ctx *ctx, char *arg)
{
	char *eq = strchr(arg, '='), *cause = NULL;
	const struct config_key *k;
	json_t *body, *r;
	double v;
	int i, status, failed = 0;

	*eq = '\0';
	k = config_key_find(arg);
	if (k == NULL) {
		fprintf(stderr,
		    "probing: unknown config key '%s' (see: probing "
		    "config)\n",
		    arg);
		return 1;
	}
	if (config_key_parse(k, eq + 1, &v, &cause) != 0) {
		cmd_fail(cause);
		free(cause);
		return 1;
	}
	body = json_pack("{s:s, s:s}", "key", arg, "value", eq + 1);
	for (i = 0; i < ctx->ntargets; i++) {
		if (client_request(&ctx->targets[i], ctx->token, "POST",
			PROTO_CONFIG, body, ctx->timeout_ms, 0, &r, &status,
			&cause) != 0) {
			failed = cmd_fail(cause);
			free(cause);
			cause = NULL;
			continue;
		}
		json_decref(r);
	}
	json_decref(body);
	return failed;
}

static int
cmd_config_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	int rc, fmt = FMT_TABLE;

	if (cmd_getopt_format(ctx, argc, argv, &fmt) != 0)
		return EXIT_USAGE;
	if (argc - optind > 1)
		return cmd_usage(ctx->entry, "too many arguments");
	if ((rc = cmd_require_targets(ctx)) != 0)
		return rc;
	if (optind == argc)
		return cmd_config_list(ctx, fmt);
	if (strchr(argv[optind], '=') != NULL)
		return cmd_config_set(ctx, argv[optind]);
	return cmd_config_get(ctx, argv[optind]);
}

/* Every key from the table: name, type and range, default, variable, and
 * its one description. */
static void
cmd_config_more(FILE *f)
{
	const struct config_key *k;
	char lo[32], hi[32];
	size_t i;

	fputs("keys:\n", f);
	for (i = 0; i < CONFIG_COUNT; i++) {
		k = &config_keys[i];
		fprintf(f, "  %s", k->name);
		if (k->type == CONFIG_BOOL)
			fputs(" (true or false", f);
		else {
			config_key_format(k, k->min, lo, sizeof lo);
			config_key_format(k, k->max, hi, sizeof hi);
			fprintf(f, " (%s to %s", lo, hi);
		}
		fprintf(f, ", default %s%s%s)\n      %s\n", k->def,
		    k->env != NULL ? ", at start from $" : "",
		    k->env != NULL ? k->env : "", k->help);
	}
}

const struct cmd_entry cmd_config_entry = {
	.name = "config",
	.args = "[-f table|json|csv] [KEY | KEY=VALUE]",
	.help = "list the settings, print one, or change one live",
	.more = cmd_config_more,
	.needs_target = 1,
	.exec = cmd_config_exec,
};
