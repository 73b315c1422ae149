/* python.torch_trace: one row per traced module call or optimizer step. */
#include <stddef.h>

#include "agent.h"
#include "log.h"

struct ring tbl_torch_trace_ring;

static const struct tbl_col tbl_torch_trace_cols[] = {
	{ "step", "INTEGER", TBL_I64, offsetof(struct torch_trace_rec, step) },
	{ "seq", "INTEGER", TBL_I64, offsetof(struct torch_trace_rec, seq) },
	{ "module", "TEXT", TBL_STR, offsetof(struct torch_trace_rec, module) },
	{ "stage", "TEXT", TBL_STR, offsetof(struct torch_trace_rec, stage) },
	{ "allocated", "REAL", TBL_F64,
	    offsetof(struct torch_trace_rec, allocated) },
	{ "duration", "REAL", TBL_F64,
	    offsetof(struct torch_trace_rec, duration) },
	{ "time", "REAL", TBL_F64, offsetof(struct torch_trace_rec, time) },
	{ "thread_id", "INTEGER", TBL_I64,
	    offsetof(struct torch_trace_rec, thread_id) },
	{ "rank", "INTEGER", TBL_I64, offsetof(struct torch_trace_rec, rank) },
};

static const struct tbl_ring_desc tbl_torch_trace_desc = { "torch_trace",
	tbl_torch_trace_cols,
	sizeof tbl_torch_trace_cols / sizeof tbl_torch_trace_cols[0],
	&tbl_torch_trace_ring };

static int
tbl_torch_trace_resize(double v, char **cause)
{
	if (ring_resize(&tbl_torch_trace_ring, (size_t)v) != 0) {
		cause_set(cause,
		    "cannot resize the ring to %.0f rows: out of "
		    "memory",
		    v);
		return -1;
	}
	return 0;
}

int
tbl_torch_trace_register(sqlite3 *db, char **cause)
{
	if (ring_init(&tbl_torch_trace_ring, sizeof(struct torch_trace_rec),
		(size_t)config_get(CONFIG_BUFFER_SIZE)) != 0) {
		cause_set(cause, "cannot allocate the torch_trace ring");
		return -1;
	}
	config_on_change(CONFIG_BUFFER_SIZE, tbl_torch_trace_resize);
	return tbl_ring_register(db, &tbl_torch_trace_desc, cause);
}
