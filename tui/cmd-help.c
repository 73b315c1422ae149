/* help: the overview, one command's help, or the man page. */
#include <stdio.h>
#include <string.h>

#include "tui.h"

static int
cmd_help_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	const struct cmd_entry *e;

	(void)ctx;
	if (argc > 2)
		return cmd_usage(&cmd_help_entry, "too many arguments");
	if (argc < 2) {
		cmd_print_overview(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--man") == 0) {
		cmd_print_man(stdout);
		return 0;
	}
	e = cmd_find(argv[1]);
	if (e == NULL)
		return cmd_usage(
		    &cmd_help_entry, "unknown command '%s'", argv[1]);
	cmd_print_help(stdout, e);
	return 0;
}

const struct cmd_entry cmd_help_entry = {
	.name = "help",
	.args = "[COMMAND | --man]",
	.help = "show help for probing or one command (--man: the man page)",
	.exec = cmd_help_exec,
};
