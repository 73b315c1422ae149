/* tables: every table a query can read, with its columns. */
#include <stdio.h>
#include <stdlib.h>

#include "tui.h"

static const char cmd_tables_sql[] =
    "SELECT 'python.' || m.name AS \"table\", p.name AS \"column\", "
    "p.type AS type "
    "FROM python.sqlite_master m, pragma_table_info(m.name, 'python') p "
    "WHERE m.type IN ('table', 'view') "
    "UNION ALL "
    "SELECT m.name, p.name, p.type "
    "FROM main.sqlite_master m, pragma_table_info(m.name, 'main') p "
    "WHERE m.type IN ('table', 'view')";

static int
cmd_tables_exec(struct cmd_ctx *ctx, int argc, char **argv)
{
	int fmt = FMT_TABLE, failed;
	json_t *result;

	if (cmd_getopt_format(ctx, argc, argv, &fmt) != 0)
		return EXIT_USAGE;
	if (optind != argc)
		return cmd_usage(ctx->entry, "too many arguments");
	result = cmd_query_run(ctx, cmd_tables_sql, &failed);
	if (result != NULL) {
		fmt_print(stdout, (enum fmt_kind)fmt, result);
		json_decref(result);
	}
	return failed ? 1 : 0;
}

/* The query it runs, so that help shows exactly that. */
static void
cmd_tables_more(FILE *f)
{
	fprintf(f, "runs this query (probing query can run it too):\n  %s\n",
	    cmd_tables_sql);
}

const struct cmd_entry cmd_tables_entry = {
	.name = "tables",
	.args = "[-f table|json|csv]",
	.help = "list the tables a query can read and their columns",
	.more = cmd_tables_more,
	.opts = "f:",
	.target = CMD_TARGET_REQUIRED,
	.exec = cmd_tables_exec,
};
