/* The table of commands and everything derived from it: help, usage
 * errors and the man page. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config-keys.h"
#include "log.h"
#include "xmalloc.h"
#include "tui.h"

const struct cmd_entry *const cmd_table[] = {
	&cmd_inject_entry,
	&cmd_query_entry,
	&cmd_eval_entry,
	&cmd_evals_entry,
	&cmd_repl_entry,
	&cmd_backtrace_entry,
	&cmd_hang_entry,
	&cmd_config_entry,
	&cmd_tables_entry,
	&cmd_metrics_entry,
	&cmd_trace_entry,
	&cmd_list_entry,
	&cmd_top_entry,
	&cmd_completion_entry,
	&cmd_help_entry,
	NULL,
};

static const char cmd_global_usage[] =
    "usage: probing [-t TARGET] [--timeout SECONDS] COMMAND [ARGS]\n";

static const char cmd_global_detail[] =
    "  -t, --target TARGET   a pid, host:port, job:PID (every rank of its "
    "job),\n"
    "                        @FILE (a target per line), or a "
    "comma-separated list\n"
    "      --timeout SECONDS the longest a request may take in the agent: "
    "the wait\n"
    "                        for the GIL, a query, an eval (then "
    "stopped; default 5)\n"
    "      --token-file FILE bearer token for host:port targets (default: "
    "$PROBING_AUTH_TOKEN)\n"
    "  -h, --help            this help; probing help COMMAND for one "
    "command\n"
    "  -V, --version         print the version\n";

/* How long past the GIL wait a target of a fan-out may take to answer. */
#define CMD_FANOUT_SLACK_MS 5000

/* How the usage line shows each kind of target. */
static const char *const cmd_target_usage[] = {
	[CMD_TARGET_NONE] = "",
	[CMD_TARGET_REQUIRED] = "-t TARGET ",
	[CMD_TARGET_OPTIONAL] = "[-t TARGET] ",
};

const struct cmd_entry *
cmd_find(const char *name)
{
	size_t i;

	for (i = 0; cmd_table[i] != NULL; i++) {
		if (strcmp(cmd_table[i]->name, name) == 0 ||
		    (cmd_table[i]->alias != NULL &&
			strcmp(cmd_table[i]->alias, name) == 0))
			return cmd_table[i];
	}
	return NULL;
}

void
cmd_print_help(FILE *f, const struct cmd_entry *e)
{
	fprintf(f, "usage: probing %s%s %s\n", cmd_target_usage[e->target],
	    e->name, e->args);
	fprintf(f, "%s\n", e->help);
	if (e->alias != NULL)
		fprintf(f, "alias: %s\n", e->alias);
	if ((e->detail != NULL && *e->detail != '\0') || e->more != NULL)
		fputc('\n', f);
	if (e->detail != NULL)
		fputs(e->detail, f);
	if (e->more != NULL)
		e->more(f);
}

void
cmd_print_overview(FILE *f)
{
	size_t i;

	fputs(cmd_global_usage, f);
	fputs("\nLook inside a running Python / PyTorch process.\n\n"
	      "commands:\n",
	    f);
	for (i = 0; cmd_table[i] != NULL; i++)
		fprintf(
		    f, "  %-9s %s\n", cmd_table[i]->name, cmd_table[i]->help);
	fprintf(f, "\noptions:\n%s", cmd_global_detail);
	fputs("\nexit status: 0 ok, 1 failure, 2 usage error\n", f);
}

int
cmd_usage(const struct cmd_entry *e, const char *fmt, ...)
{
	va_list ap;

	fputs("probing: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (e != NULL)
		fprintf(stderr, "usage: probing %s%s %s\n",
		    cmd_target_usage[e->target], e->name, e->args);
	else
		fputs(cmd_global_usage, stderr);
	return EXIT_USAGE;
}

int
cmd_fail(const char *cause)
{
	fprintf(stderr, "probing: %s\n", cause_str(cause));
	return 1;
}

int
cmd_parse_format(
    const struct cmd_entry *e, const char *arg, const char *const *allowed)
{
	int i;

	for (i = 0; allowed[i] != NULL; i++) {
		if (strcmp(allowed[i], arg) == 0)
			return i;
	}
	cmd_usage(e, "unknown format '%s'", arg);
	return -1;
}

/* Writes s with roff's special characters escaped. */
static void
cmd_man_text(FILE *f, const char *s)
{
	int bol = 1;

	for (; *s != '\0'; s++) {
		if (bol && (*s == '.' || *s == '\''))
			fputs("\\&", f);
		if (*s == '\\')
			fputs("\\e", f);
		else if (*s == '-')
			fputs("\\-", f);
		else
			fputc(*s, f);
		bol = *s == '\n';
	}
}

/* e's more help, escaped for roff. */
static void
cmd_man_more(FILE *f, const struct cmd_entry *e)
{
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);

	if (m == NULL)
		return;
	e->more(m);
	fclose(m);
	cmd_man_text(f, text);
	free(text);
}

void
cmd_print_man(FILE *f)
{
	size_t i;
	const struct cmd_entry *e;

	fprintf(f, ".TH PROBING 1 \"\" \"probing %s\" \"User Commands\"\n",
	    PROBING_VERSION);
	fputs(
	    ".SH NAME\nprobing \\- look inside a running Python / PyTorch "
	    "process\n.SH SYNOPSIS\n.B probing\n[\\fB\\-t\\fR \\fITARGET\\fR] "
	    "\\fICOMMAND\\fR [\\fIARGS\\fR]\n.SH DESCRIPTION\n"
	    "probing attaches to a Python process (injected with ptrace, or "
	    "started with PROBING=1) and answers SQL queries over live "
	    "in-process tables, runs Python in it, and shows its stacks.\n"
	    ".SH OPTIONS\n.nf\n",
	    f);
	cmd_man_text(f, cmd_global_detail);
	fputs(".fi\n.SH COMMANDS\n", f);
	for (i = 0; (e = cmd_table[i]) != NULL; i++) {
		fprintf(f, ".TP\n.B %s ", e->name);
		cmd_man_text(f, e->args);
		fputc('\n', f);
		cmd_man_text(f, e->help);
		fputc('\n', f);
		if ((e->detail != NULL && *e->detail != '\0') ||
		    e->more != NULL) {
			fputs(".nf\n", f);
			if (e->detail != NULL)
				cmd_man_text(f, e->detail);
			if (e->more != NULL)
				cmd_man_more(f, e);
			fputs(".fi\n", f);
		}
	}
	fputs(".SH ENVIRONMENT\n.TP\n.B PROBING\n"
	      "0 or unset: off; 1 (followed): this process; 2 (nested): this "
	      "process and its Python children; regex:PATTERN or NAME.py: "
	      "only matching scripts\n"
	      ".TP\n.B PROBING_AUTH_TOKEN\nbearer token required on TCP (with "
	      "none set, TCP stays closed); also sent by the client\n",
	    f);
	for (i = 0; i < CONFIG_COUNT; i++) {
		if (config_keys[i].env == NULL)
			continue;
		fprintf(f, ".TP\n.B %s\nthe initial ", config_keys[i].env);
		cmd_man_text(f, config_keys[i].name);
		fputs(" (see config above)\n", f);
	}
	fputs(".TP\n.B NO_COLOR\ndisables colour in output\n"
	      ".SH EXIT STATUS\n0 success, 1 failure, 2 usage error.\n"
	      ".SH FILES\n$XDG_RUNTIME_DIR/probing/PID.log, else "
	      "/tmp/probing\\-UID/PID.log: the agent's log (removed when the "
	      "process exits); PID.init next to it: inject \\-D settings\n",
	    f);
}

int
cmd_getopt(struct cmd_ctx *ctx, int argc, char **argv)
{
	const struct cmd_entry *e = ctx->entry;
	char full[64];
	int c;

	snprintf(full, sizeof full, "+:%s", e->opts != NULL ? e->opts : "");
	c = getopt_long(argc, argv, full, e->longopts, NULL);
	if (c == ':') {
		cmd_usage(e, "option %s needs a value", argv[optind - 1]);
		return '?';
	}
	if (c == '?') {
		if (optopt != 0)
			cmd_usage(e, "unknown option -%c", optopt);
		else
			cmd_usage(e, "unknown option %s", argv[optind - 1]);
	}
	return c;
}

int
cmd_getopt_format(struct cmd_ctx *ctx, int argc, char **argv, int *fmt)
{
	int c;

	while ((c = cmd_getopt(ctx, argc, argv)) != -1) {
		if (c != 'f')
			return -1;
		if ((*fmt = cmd_parse_format(ctx->entry, optarg, fmt_names)) <
		    0)
			return -1;
	}
	return 0;
}

/* Parses ctx->target_text into ctx->targets; 0, or the usage exit code. */
static int
cmd_parse_targets(struct cmd_ctx *ctx)
{
	char *cause = NULL;
	int rc, usage;

	if (targets_parse(ctx, ctx->target_text, &ctx->targets,
		&ctx->target_ranks, &ctx->ntargets, &usage, &cause) != 0) {
		rc = usage ? cmd_usage(ctx->entry, "%s", cause_str(cause))
			   : cmd_fail(cause_str(cause));
		free(cause);
		return rc;
	}
	return 0;
}

/* The long options of e with --target added; malloc'd. */
static struct option *
cmd_longopts(const struct cmd_entry *e)
{
	static const struct option target = { "target", required_argument, NULL,
		't' };
	struct option *all;
	size_t n = 0;

	while (e->longopts != NULL && e->longopts[n].name != NULL)
		n++;
	all = xcalloc(n + 2, sizeof *all);
	if (n > 0)
		memcpy(all, e->longopts, n * sizeof *all);
	all[n] = target;
	return all;
}

/* True when argv[i] is a -t or --target option by itself (not bundled
 * with other short options). */
static int
cmd_is_target_opt(const char *arg)
{
	return strncmp(arg, "-t", 2) == 0 ||
	    (strncmp(arg, "--t", 3) == 0 &&
		strncmp("--target", arg, strcspn(arg, "=")) == 0);
}

int
cmd_prepare(struct cmd_ctx *ctx, int *argc, char **argv)
{
	const struct cmd_entry *e = ctx->entry;
	struct option *longopts;
	char optstring[64];
	int c, at, i, j;

	if (e->opts != NULL) {
		snprintf(optstring, sizeof optstring, "+:t:%s", e->opts);
		longopts = cmd_longopts(e);
		opterr = 0;
		optind = 1;
		for (;;) {
			at = optind;
			c = getopt_long(*argc, argv, optstring, longopts, NULL);
			if (c == -1)
				break;
			if (c == ':' && optopt == 't') {
				free(longopts);
				opterr = 1;
				return cmd_usage(e, "option %s needs a value",
				    argv[optind - 1]);
			}
			if (c != 't' || at >= *argc ||
			    !cmd_is_target_opt(argv[at]))
				continue; /* the command reports what is wrong */
			ctx->target_text = optarg;
			for (i = at, j = optind; j <= *argc; i++, j++)
				argv[i] = argv[j];
			*argc -= optind - at;
			optind = at;
		}
		free(longopts);
		opterr = 1;
		optind = 1;
	}
	if (ctx->target_text == NULL) {
		if (e->target == CMD_TARGET_REQUIRED)
			return cmd_usage(e,
			    "no target: give -t PID, -t HOST:PORT, -t job:PID "
			    "or -t @FILE");
		return 0;
	}
	if (e->target == CMD_TARGET_NONE)
		return cmd_usage(e, "%s takes no target", e->name);
	return cmd_parse_targets(ctx);
}

int
cmd_merge_rows(
    struct cmd_ctx *ctx, const struct endpoint *ep, json_t *table, void *arg)
{
	json_t **merged = arg;

	if (ctx->ntargets == 1)
		*merged = json_incref(table);
	else
		fmt_merge_target(merged, table, ep->name);
	return 0;
}

int
cmd_each_target(struct cmd_ctx *ctx, int flags, const char *method,
    const char *path, json_t *body, cmd_each_fn fn, void *arg)
{
	struct fanout_result *res = NULL;
	char *cause = NULL;
	json_t *r = NULL;
	char label[320];
	int i, status, failed = 0;

	if ((flags & CMD_EACH_FANOUT) && ctx->ntargets > 1) {
		res = xcalloc((size_t)ctx->ntargets, sizeof *res);
		fanout_request(ctx->targets, ctx->ntargets, ctx->token, method,
		    path, body, ctx->timeout_ms,
		    ctx->timeout_ms + CMD_FANOUT_SLACK_MS, res);
	}
	for (i = 0; i < ctx->ntargets && !client_interrupted; i++) {
		if (res != NULL) {
			r = json_incref(res[i].reply);
			if (res[i].cause != NULL)
				cause = xstrdup(res[i].cause);
		} else if (client_request(&ctx->targets[i], ctx->token, method,
			       path, body, ctx->timeout_ms, 0, &r, &status,
			       &cause) != 0)
			r = NULL;
		if (r == NULL) {
			if (ctx->ntargets > 1)
				fprintf(stderr, "probing: %s: %s\n",
				    targets_label(ctx, i, label, sizeof label),
				    cause_str(cause));
			else
				cmd_fail(cause);
			free(cause);
			cause = NULL;
			failed++;
			continue;
		}
		if (fn != NULL && fn(ctx, &ctx->targets[i], r, arg) != 0)
			failed++;
		json_decref(r);
	}
	fanout_free(res, res != NULL ? ctx->ntargets : 0);
	return failed;
}
