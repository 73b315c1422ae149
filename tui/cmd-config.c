/* config: list, read or change the agent's settings live. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config-keys.h"
#include "log.h"
#include "proto.h"
#include "tui.h"

/* Adds one target's keys to the table being made (several targets: a
 * first column names the target). */
static int
cmd_config_rows(
    struct cmd_ctx *ctx, const struct endpoint *ep, json_t *r, void *arg)
{
	json_t **all = arg, *result, *k;
	size_t j;

	result = json_pack("{s:[s,s,s,s], s:[]}", "columns", "key", "value",
	    "default", "description", "rows");
	json_array_foreach(json_object_get(r, "keys"), j, k)
	{
		json_array_append_new(json_object_get(result, "rows"),
		    json_pack("[O,O,O,O]", json_object_get(k, "key"),
			json_object_get(k, "value"),
			json_object_get(k, "default"),
			json_object_get(k, "help")));
	}
	cmd_merge_rows(ctx, ep, result, all);
	json_decref(result);
	return 0;
}

/* Prints every key as a table. */
static int
cmd_config_list(struct cmd_ctx *ctx, int fmt)
{
	json_t *all = NULL;
	int failed;

	failed = cmd_each_target(ctx, CMD_EACH_FANOUT, "GET", PROTO_CONFIG,
	    NULL, cmd_config_rows, &all);
	/* Nothing on stdout when no target answered. */
	if (all != NULL)
		fmt_print(stdout, (enum fmt_kind)fmt, all);
	json_decref(all);
	return failed ? 1 : 0;
}

/* Prints the value of the key named arg (prefixed by the target when
 * several). */
static int
cmd_config_value(
    struct cmd_ctx *ctx, const struct endpoint *ep, json_t *r, void *arg)
{
	const char *key = arg;
	json_t *k;
	size_t j;

	json_array_foreach(json_object_get(r, "keys"), j, k)
	{
		if (strcmp(json_string_value(json_object_get(k, "key")), key) !=
		    0)
			continue;
		if (ctx->ntargets > 1)
			printf("%s\t", ep->name);
		printf("%s\n", json_string_value(json_object_get(k, "value")));
	}
	return 0;
}

/* Prints one key's bare value. */
static int
cmd_config_get(struct cmd_ctx *ctx, const char *key)
{
	if (config_key_find(key) == NULL) {
		fprintf(stderr,
		    "probing: unknown config key '%s' (see: probing "
		    "config)\n",
		    key);
		return 1;
	}
	return cmd_each_target(ctx, CMD_EACH_FANOUT, "GET", PROTO_CONFIG, NULL,
		   cmd_config_value, (void *)key) != 0;
}

/* Validates here first (same table as the agent), then applies it. */
static int
cmd_config_set(struct cmd_ctx *ctx, char *arg)
{
	char *eq = strchr(arg, '='), *cause = NULL;
	const struct config_key *k;
	json_t *body;
	double v;
	int failed;

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
	failed = cmd_each_target(
	    ctx, CMD_EACH_FANOUT, "POST", PROTO_CONFIG, body, NULL, NULL);
	json_decref(body);
	return failed ? 1 : 0;
}

static int
cmd_config_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	int fmt = FMT_TABLE;

	if (cmd_getopt_format(ctx, argc, argv, &fmt) != 0)
		return EXIT_USAGE;
	if (argc - optind > 1)
		return cmd_usage(ctx->entry, "too many arguments");
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
	.opts = "f:",
	.target = CMD_TARGET_REQUIRED,
	.exec = cmd_config_exec,
};
