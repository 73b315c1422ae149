/* The table of commands and everything derived from it: help, usage
 * errors and the man page. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config-keys.h"
#include "log.h"
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
	fprintf(f, "usage: probing %s%s%s %s\n",
	    e->needs_target ? "-t TARGET " : "", e->name, "", e->args);
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
		    e->needs_target ? "-t TARGET " : "", e->name, e->args);
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
cmd_getopt(struct cmd_ctx *ctx, int argc, char **argv, const char *opts)
{
	char full[64];
	int c;

	snprintf(full, sizeof full, "+:t:%s", opts);
	while ((c = getopt(argc, argv, full)) == 't')
		ctx->target_text = optarg;
	if (c == ':')
		cmd_usage(ctx->entry, "option -%c needs a value", optopt);
	else if (c == '?')
		cmd_usage(ctx->entry, "unknown option -%c", optopt);
	return c;
}

int
cmd_getopt_format(struct cmd_ctx *ctx, int argc, char **argv, int *fmt)
{
	int c;

	while ((c = cmd_getopt(ctx, argc, argv, "f:")) != -1) {
		if (c != 'f')
			return -1;
		if ((*fmt = cmd_parse_format(ctx->entry, optarg, fmt_names)) <
		    0)
			return -1;
	}
	return 0;
}

int
cmd_require_targets(struct cmd_ctx *ctx)
{
	char *cause = NULL;
	int rc, usage;

	if (ctx->target_text == NULL)
		return cmd_usage(ctx->entry,
		    "no target: give -t PID, -t HOST:PORT, -t job:PID or "
		    "-t @FILE");
	if (ctx->targets != NULL)
		return 0;
	if (targets_parse(ctx, ctx->target_text, &ctx->targets,
		&ctx->target_ranks, &ctx->ntargets, &usage, &cause) != 0) {
		rc = usage ? cmd_usage(ctx->entry, "%s", cause_str(cause))
			   : cmd_fail(cause_str(cause));
		free(cause);
		return rc;
	}
	return 0;
}
