/* python.process: one row describing this process and its place in the
 * job (identity.c), read when the table is scanned. */
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "agent.h"
#include "log.h"

/* The GIL is tried this long before reading the identity without it. */
#define TBL_PROCESS_GIL_MS 200

/* The columns, in order; each is the identity_json key of the same name. */
static const struct {
	const char *name, *type;
} tbl_process_cols[] = {
	{ "pid", "INTEGER" },
	{ "host", "TEXT" },
	{ "rank", "INTEGER" },
	{ "local_rank", "INTEGER" },
	{ "world_size", "INTEGER" },
	{ "local_world_size", "INTEGER" },
	{ "group_rank", "INTEGER" },
	{ "job", "TEXT" },
	{ "backend", "TEXT" },
	{ "master_addr", "TEXT" },
	{ "master_port", "INTEGER" },
	{ "python", "TEXT" },
	{ "torch", "TEXT" },
	{ "endpoint", "TEXT" },
	{ "start_time", "REAL" },
	{ "source", "TEXT" },
};
#define TBL_PROCESS_NCOLS \
	(int)(sizeof tbl_process_cols / sizeof tbl_process_cols[0])

/* A cursor owns the row it read: identity_json's object. */
struct tbl_process_cursor {
	sqlite3_vtab_cursor base;
	json_t *row;
	int done;
};

static int
tbl_process_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
    sqlite3_vtab **out, char **err)
{
	sqlite3_vtab *vt;
	sqlite3_str *s = sqlite3_str_new(db);
	char *schema;
	int i, rc;

	(void)aux;
	(void)argc;
	(void)argv;
	(void)err;
	sqlite3_str_appendall(s, "CREATE TABLE x(");
	for (i = 0; i < TBL_PROCESS_NCOLS; i++)
		sqlite3_str_appendf(s, "%s%s %s", i ? ", " : "",
		    tbl_process_cols[i].name, tbl_process_cols[i].type);
	sqlite3_str_appendall(s, ")");
	schema = sqlite3_str_finish(s);
	if (schema == NULL)
		return SQLITE_NOMEM;
	rc = sqlite3_declare_vtab(db, schema);
	sqlite3_free(schema);
	if (rc != SQLITE_OK)
		return rc;
	vt = sqlite3_malloc(sizeof *vt);
	if (vt == NULL)
		return SQLITE_NOMEM;
	memset(vt, 0, sizeof *vt);
	*out = vt;
	return SQLITE_OK;
}

static int
tbl_process_disconnect(sqlite3_vtab *vt)
{
	sqlite3_free(vt);
	return SQLITE_OK;
}

static int
tbl_process_best_index(sqlite3_vtab *vt, sqlite3_index_info *info)
{
	(void)vt;
	info->estimatedCost = 1;
	info->estimatedRows = 1;
	return SQLITE_OK;
}

static int
tbl_process_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
	(void)vt;
	return tbl_cursor_open(sizeof(struct tbl_process_cursor), out);
}

static int
tbl_process_close(sqlite3_vtab_cursor *base)
{
	json_decref(((struct tbl_process_cursor *)base)->row);
	sqlite3_free(base);
	return SQLITE_OK;
}

static int
tbl_process_filter(sqlite3_vtab_cursor *base, int idx, const char *idxstr,
    int argc, sqlite3_value **argv)
{
	struct tbl_process_cursor *cur = (struct tbl_process_cursor *)base;
	struct identity *id = malloc(sizeof *id);
	int gil_ms = request_timeout_ms();

	(void)idx;
	(void)idxstr;
	(void)argc;
	(void)argv;
	if (id == NULL)
		return SQLITE_NOMEM;
	if (gil_ms > TBL_PROCESS_GIL_MS)
		gil_ms = TBL_PROCESS_GIL_MS;
	identity_read(id, gil_ms);
	json_decref(cur->row);
	cur->row = identity_json(id);
	free(id);
	cur->done = 0;
	return cur->row != NULL ? SQLITE_OK : SQLITE_NOMEM;
}

static int
tbl_process_next(sqlite3_vtab_cursor *base)
{
	((struct tbl_process_cursor *)base)->done = 1;
	return SQLITE_OK;
}

static int
tbl_process_eof(sqlite3_vtab_cursor *base)
{
	return ((struct tbl_process_cursor *)base)->done;
}

static int
tbl_process_column(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int col)
{
	struct tbl_process_cursor *cur = (struct tbl_process_cursor *)base;
	json_t *v = col >= 0 && col < TBL_PROCESS_NCOLS
	    ? json_object_get(cur->row, tbl_process_cols[col].name)
	    : NULL;

	if (json_is_integer(v))
		sqlite3_result_int64(ctx, json_integer_value(v));
	else if (json_is_real(v))
		sqlite3_result_double(ctx, json_real_value(v));
	else if (json_is_string(v))
		sqlite3_result_text(
		    ctx, json_string_value(v), -1, SQLITE_TRANSIENT);
	else
		sqlite3_result_null(ctx);
	return SQLITE_OK;
}

static int
tbl_process_rowid(sqlite3_vtab_cursor *base, sqlite3_int64 *rowid)
{
	(void)base;
	*rowid = 1;
	return SQLITE_OK;
}

static const sqlite3_module tbl_process_module = {
	.iVersion = 0,
	.xCreate = tbl_process_connect,
	.xConnect = tbl_process_connect,
	.xBestIndex = tbl_process_best_index,
	.xDisconnect = tbl_process_disconnect,
	.xDestroy = tbl_process_disconnect,
	.xOpen = tbl_process_open,
	.xClose = tbl_process_close,
	.xFilter = tbl_process_filter,
	.xNext = tbl_process_next,
	.xEof = tbl_process_eof,
	.xColumn = tbl_process_column,
	.xRowid = tbl_process_rowid,
};

int
tbl_process_register(sqlite3 *db, char **cause)
{
	return tbl_create(
	    db, "process", "process", &tbl_process_module, NULL, cause);
}
