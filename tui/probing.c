/* probing: the program's entry point and global options. */
#include <getopt.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"
#include "tui.h"

/* Reads the first line of path as a token (malloc'd) or exits 1. */
static char *
probing_read_token(const char *path)
{
	char line[1024];
	FILE *f = fopen(path, "re");

	if (f == NULL || fgets(line, sizeof line, f) == NULL) {
		fprintf(stderr, "probing: cannot read token file %s\n", path);
		exit(1);
	}
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	return xstrdup(line);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "target", required_argument, NULL, 't' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "token-file", required_argument, NULL, 'K' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct cmd_ctx ctx = { .timeout_ms = 5000 };
	const struct cmd_entry *e;
	char *end;
	double secs;
	char *token = NULL;
	int c, i, rc;

	setlocale(LC_CTYPE, "");
	ctx.token = getenv("PROBING_AUTH_TOKEN");
	while ((c = getopt_long(argc, argv, "+t:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 't':
			ctx.target_text = optarg;
			break;
		case 'T':
			secs = strtod(optarg, &end);
			if (*optarg == '\0' || *end != '\0' || secs <= 0 ||
			    secs > 86400)
				return cmd_usage(NULL,
				    "invalid --timeout '%s': expected seconds "
				    "(e.g. 5 or 0.5)",
				    optarg);
			ctx.timeout_ms = (int)(secs * 1000);
			break;
		case 'K':
			free(token);
			ctx.token = token = probing_read_token(optarg);
			break;
		case 'h':
			cmd_print_overview(stdout);
			return 0;
		case 'V':
			printf("probing %s\n", PROBING_VERSION);
			return 0;
		default:
			return cmd_usage(
			    NULL, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return cmd_usage(NULL, "no command given (try: probing help)");
	e = cmd_find(argv[optind]);
	if (e == NULL)
		return cmd_usage(NULL,
		    "unknown command '%s' (try: probing help)", argv[optind]);
	for (i = optind + 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0) {
			cmd_print_help(stdout, e);
			return 0;
		}
	}
	ctx.entry = e;
	argc -= optind;
	argv += optind;
	optind = 1;
	rc = cmd_prepare(&ctx, &argc, argv);
	if (rc == 0)
		rc = e->exec(&ctx, argc, argv);
	free(ctx.targets);
	free(ctx.target_ranks);
	free(token);
	return rc;
}
