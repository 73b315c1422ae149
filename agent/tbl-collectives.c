/* python.collectives: one row per torch.distributed call from Python. */
#include <stddef.h>

#include "agent.h"
#include "log.h"

struct ring tbl_collectives_ring;

#define TBL_COLL_CAP 10000

static const struct tbl_col tbl_collectives_cols[] = {
	{ "seq", "INTEGER", TBL_I64, offsetof(struct collectives_rec, seq) },
	{ "op", "TEXT", TBL_STR, offsetof(struct collectives_rec, op) },
	{ "group_name", "TEXT", TBL_STR,
	    offsetof(struct collectives_rec, group) },
	{ "group_size", "INTEGER", TBL_I64,
	    offsetof(struct collectives_rec, group_size) },
	{ "numel", "INTEGER", TBL_I64,
	    offsetof(struct collectives_rec, numel) },
	{ "dtype", "TEXT", TBL_STR, offsetof(struct collectives_rec, dtype) },
	{ "bytes", "INTEGER", TBL_I64,
	    offsetof(struct collectives_rec, bytes) },
	{ "state", "TEXT", TBL_STR, offsetof(struct collectives_rec, state) },
	{ "start", "REAL", TBL_F64, offsetof(struct collectives_rec, start) },
	{ "duration", "REAL", TBL_F64,
	    offsetof(struct collectives_rec, duration) },
	{ "site", "TEXT", TBL_STR, offsetof(struct collectives_rec, site) },
	{ "thread_id", "INTEGER", TBL_I64,
	    offsetof(struct collectives_rec, thread_id) },
	{ "rank", "INTEGER", TBL_I64, offsetof(struct collectives_rec, rank) },
};

static const struct tbl_ring_desc tbl_collectives_desc = { "collectives",
	tbl_collectives_cols,
	sizeof tbl_collectives_cols / sizeof tbl_collectives_cols[0],
	&tbl_collectives_ring };

int
tbl_collectives_register(sqlite3 *db, char **cause)
{
	if (ring_init(&tbl_collectives_ring, sizeof(struct collectives_rec),
		TBL_COLL_CAP) != 0) {
		cause_set(cause, "cannot allocate the collectives ring");
		return -1;
	}
	return tbl_ring_register(db, &tbl_collectives_desc, cause);
}
