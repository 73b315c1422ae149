/* The list of built-in tables, each registered into the store at start. */
#include <stddef.h>

#include "agent.h"

static int (*const tbl_registrars[])(sqlite3 *, char **) = {
	tbl_torch_trace_register,
	tbl_backtrace_register,
	tbl_process_register,
	tbl_collectives_register,
};

int
tbl_register_all(sqlite3 *db, char **cause)
{
	size_t i;

	for (i = 0; i < sizeof tbl_registrars / sizeof tbl_registrars[0]; i++) {
		if (tbl_registrars[i](db, cause) != 0)
			return -1;
	}
	return 0;
}
