/* metrics: the agent's /metrics text (Prometheus format), as a Prometheus
 * server would scrape it. Several targets are merged family by family,
 * each sample labelled with target="..." so that no two series collide. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "xmalloc.h"
#include "tui.h"

/* One metric family: its HELP and TYPE lines and every target's samples.
 * All strings are owned. */
struct cmd_metrics_family {
	char *name;
	char *head;
	char *samples;
	size_t len;
};

struct cmd_metrics {
	struct cmd_metrics_family *f;
	int n;
};

static struct cmd_metrics_family *
cmd_metrics_family(struct cmd_metrics *m, const char *name, size_t nlen)
{
	struct cmd_metrics_family *f;
	int i;

	for (i = 0; i < m->n; i++)
		if (strlen(m->f[i].name) == nlen &&
		    strncmp(m->f[i].name, name, nlen) == 0)
			return &m->f[i];
	m->f = xrealloc(m->f, (size_t)(m->n + 1) * sizeof *m->f);
	f = &m->f[m->n++];
	memset(f, 0, sizeof *f);
	xasprintf(&f->name, "%.*s", (int)nlen, name);
	f->head = xstrdup("");
	f->samples = xstrdup("");
	return f;
}

static void
cmd_metrics_append(char **s, size_t *len, const char *add, size_t n)
{
	size_t old = len != NULL ? *len : strlen(*s);

	*s = xrealloc(*s, old + n + 1);
	memcpy(*s + old, add, n);
	(*s)[old + n] = '\0';
	if (len != NULL)
		*len = old + n;
}

/* Appends [line, end) and a newline. */
static void
cmd_metrics_line(char **s, size_t *len, const char *line, const char *end)
{
	cmd_metrics_append(s, len, line, (size_t)(end - line));
	cmd_metrics_append(s, len, "\n", 1);
}

/* Files the lines of one target's text under their families, adding
 * target="name" to each sample. */
static void
cmd_metrics_add(struct cmd_metrics *m, const char *text, const char *target)
{
	struct cmd_metrics_family *f = NULL;
	const char *line, *end, *name, *brace;
	char *label = NULL;
	size_t nlen;

	xasprintf(&label, "target=\"%s\",", target);
	for (line = text; *line != '\0'; line = *end ? end + 1 : end) {
		end = strchr(line, '\n');
		if (end == NULL)
			end = line + strlen(line);
		if (strncmp(line, "# HELP ", 7) == 0 ||
		    strncmp(line, "# TYPE ", 7) == 0) {
			name = line + 7;
			nlen = strcspn(name, " \n");
			f = cmd_metrics_family(m, name, nlen);
			if (strstr(f->head,
				strncmp(line, "# HELP ", 7) == 0
				    ? "# HELP "
				    : "# TYPE ") == NULL)
				cmd_metrics_line(&f->head, NULL, line, end);
			continue;
		}
		if (f == NULL || *line == '#' || line == end)
			continue;
		brace = memchr(line, '{', (size_t)(end - line));
		if (brace == NULL) {
			cmd_metrics_line(&f->samples, &f->len, line, end);
			continue;
		}
		cmd_metrics_append(
		    &f->samples, &f->len, line, (size_t)(brace - line) + 1);
		cmd_metrics_append(&f->samples, &f->len, label, strlen(label));
		cmd_metrics_line(&f->samples, &f->len, brace + 1, end);
	}
	free(label);
}

static void
cmd_metrics_print(struct cmd_metrics *m)
{
	int i;

	for (i = 0; i < m->n; i++) {
		fputs(m->f[i].head, stdout);
		fputs(m->f[i].samples, stdout);
		free(m->f[i].name);
		free(m->f[i].head);
		free(m->f[i].samples);
	}
	free(m->f);
}

/* Prints one target's text, or adds it to the merge when several. */
static int
cmd_metrics_one(
    struct cmd_ctx *ctx, const struct endpoint *ep, json_t *r, void *arg)
{
	struct cmd_metrics *m = arg;

	if (!json_is_string(r)) {
		fprintf(stderr,
		    "probing: %s sent JSON, not metrics text (an older "
		    "agent?)\n",
		    ep->name);
		return 1;
	}
	if (ctx->ntargets == 1)
		fputs(json_string_value(r), stdout);
	else
		cmd_metrics_add(m, json_string_value(r), ep->name);
	return 0;
}

static int
cmd_metrics_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	struct cmd_metrics m = { NULL, 0 };
	int failed;

	if (cmd_getopt(ctx, argc, argv) != -1)
		return EXIT_USAGE;
	if (optind != argc)
		return cmd_usage(ctx->entry, "too many arguments");
	failed = cmd_each_target(
	    ctx, 0, "GET", PROTO_METRICS, NULL, cmd_metrics_one, &m);
	cmd_metrics_print(&m);
	return failed ? 1 : 0;
}

const struct cmd_entry cmd_metrics_entry = {
	.name = "metrics",
	.args = "",
	.help = "print the target's metrics in Prometheus text format",
	.detail = "the same text a Prometheus server gets from GET /metrics on "
		  "the agent's TCP port\n"
		  "(PROBING_PORT; with PROBING_AUTH_TOKEN set, scrape it "
		  "with authorization:\n"
		  "credentials); several targets are merged, each sample "
		  "labelled target=\"...\"\n",
	.opts = "",
	.target = CMD_TARGET_REQUIRED,
	.exec = cmd_metrics_exec,
};
