/* A read-only SQLite virtual table over a ring, described by a column
 * table. Queries read a snapshot; `id > N` is pushed down so live views
 * fetch only new rows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "agent.h"
#include "log.h"

struct tbl_ring_vtab {
	sqlite3_vtab base;
	const struct tbl_ring_desc *desc;
};

struct tbl_ring_cursor {
	sqlite3_vtab_cursor base;
	const struct tbl_ring_desc *desc;
	char *rows;
	size_t n, i;
};

/* Columns, then the hidden-by-convention `id` column last. */
static int
tbl_ring_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
    sqlite3_vtab **out, char **err)
{
	const struct tbl_ring_desc *desc = aux;
	struct tbl_ring_vtab *vt;
	char sql[1024];
	size_t len;
	int i, rc;

	(void)argc;
	(void)argv;
	len = (size_t)snprintf(sql, sizeof sql, "CREATE TABLE x(");
	for (i = 0; i < desc->ncols; i++)
		len += (size_t)snprintf(sql + len, sizeof sql - len, "%s %s, ",
		    desc->cols[i].name, desc->cols[i].sqltype);
	snprintf(sql + len, sizeof sql - len, "id INTEGER)");
	rc = sqlite3_declare_vtab(db, sql);
	if (rc != SQLITE_OK)
		return rc;
	vt = sqlite3_malloc(sizeof *vt);
	if (vt == NULL)
		return SQLITE_NOMEM;
	memset(vt, 0, sizeof *vt);
	vt->desc = desc;
	*out = &vt->base;
	(void)err;
	return SQLITE_OK;
}

static int
tbl_ring_disconnect(sqlite3_vtab *vt)
{
	sqlite3_free(vt);
	return SQLITE_OK;
}

/* Uses a lower bound on id when there is one (plan 1). */
static int
tbl_ring_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info)
{
	const struct tbl_ring_desc *desc = ((struct tbl_ring_vtab *)vtab)->desc;
	const struct sqlite3_index_constraint *c;
	int i;

	info->idxNum = 0;
	info->estimatedCost = 1000000;
	for (i = 0; i < info->nConstraint; i++) {
		c = &info->aConstraint[i];
		if (!c->usable || c->iColumn != desc->ncols)
			continue;
		if (c->op == SQLITE_INDEX_CONSTRAINT_GT ||
		    c->op == SQLITE_INDEX_CONSTRAINT_GE) {
			info->idxNum =
			    c->op == SQLITE_INDEX_CONSTRAINT_GT ? 1 : 2;
			info->aConstraintUsage[i].argvIndex = 1;
			info->estimatedCost = 1000;
			break;
		}
	}
	if (info->nOrderBy == 1 && info->aOrderBy[0].iColumn == desc->ncols &&
	    !info->aOrderBy[0].desc)
		info->orderByConsumed = 1;
	return SQLITE_OK;
}

int
tbl_cursor_open(size_t size, sqlite3_vtab_cursor **out)
{
	void *cur = sqlite3_malloc64(size);

	if (cur == NULL)
		return SQLITE_NOMEM;
	memset(cur, 0, size);
	*out = cur;
	return SQLITE_OK;
}

int
tbl_create(sqlite3 *db, const char *table, const char *modname,
    const sqlite3_module *module, void *aux, char **cause)
{
	char sql[160];
	int rc;

	rc = sqlite3_create_module(db, modname, module, aux);
	if (rc == SQLITE_OK) {
		snprintf(sql, sizeof sql,
		    "CREATE VIRTUAL TABLE python.%s USING %s", table, modname);
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	}
	if (rc != SQLITE_OK) {
		cause_set(cause, "cannot create table python.%s: %s", table,
		    sqlite3_errmsg(db));
		return -1;
	}
	return 0;
}

static int
tbl_ring_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out)
{
	int rc = tbl_cursor_open(sizeof(struct tbl_ring_cursor), out);

	if (rc == SQLITE_OK)
		((struct tbl_ring_cursor *)*out)->desc =
		    ((struct tbl_ring_vtab *)vtab)->desc;
	return rc;
}

static int
tbl_ring_close(sqlite3_vtab_cursor *base)
{
	struct tbl_ring_cursor *cur = (struct tbl_ring_cursor *)base;

	free(cur->rows);
	sqlite3_free(cur);
	return SQLITE_OK;
}

static int
tbl_ring_filter(sqlite3_vtab_cursor *base, int idx, const char *idxstr,
    int argc, sqlite3_value **argv)
{
	struct tbl_ring_cursor *cur = (struct tbl_ring_cursor *)base;
	sqlite3_int64 after = 0;

	(void)idxstr;
	if (idx != 0 && argc == 1) {
		after = sqlite3_value_int64(argv[0]);
		if (idx == 2)
			after--;
		if (after < 0)
			after = 0;
	}
	free(cur->rows);
	cur->rows = ring_snapshot(cur->desc->ring, (uint64_t)after, &cur->n);
	cur->i = 0;
	return SQLITE_OK;
}

static int
tbl_ring_next(sqlite3_vtab_cursor *base)
{
	((struct tbl_ring_cursor *)base)->i++;
	return SQLITE_OK;
}

static int
tbl_ring_eof(sqlite3_vtab_cursor *base)
{
	struct tbl_ring_cursor *cur = (struct tbl_ring_cursor *)base;

	return cur->i >= cur->n;
}

static int
tbl_ring_column(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int col)
{
	struct tbl_ring_cursor *cur = (struct tbl_ring_cursor *)base;
	const struct tbl_ring_desc *desc = cur->desc;
	const char *rec = cur->rows + cur->i * desc->ring->recsize;
	const struct tbl_col *c;
	int64_t i64;
	int32_t i32;
	double f;
	const char *s;

	if (col == desc->ncols) {
		memcpy(&i64, rec, sizeof i64);
		sqlite3_result_int64(ctx, i64);
		return SQLITE_OK;
	}
	c = &desc->cols[col];
	switch (c->kind) {
	case TBL_I64:
		memcpy(&i64, rec + c->offset, sizeof i64);
		sqlite3_result_int64(ctx, i64);
		break;
	case TBL_I32:
		memcpy(&i32, rec + c->offset, sizeof i32);
		sqlite3_result_int(ctx, i32);
		break;
	case TBL_F64:
		memcpy(&f, rec + c->offset, sizeof f);
		sqlite3_result_double(ctx, f);
		break;
	case TBL_STR:
		memcpy(&s, rec + c->offset, sizeof s);
		if (s != NULL)
			sqlite3_result_text(ctx, s, -1, SQLITE_TRANSIENT);
		else
			sqlite3_result_null(ctx);
		break;
	}
	return SQLITE_OK;
}

static int
tbl_ring_rowid(sqlite3_vtab_cursor *base, sqlite3_int64 *rowid)
{
	struct tbl_ring_cursor *cur = (struct tbl_ring_cursor *)base;
	int64_t id;

	memcpy(&id, cur->rows + cur->i * cur->desc->ring->recsize, sizeof id);
	*rowid = id;
	return SQLITE_OK;
}

static const sqlite3_module tbl_ring_module = {
	.iVersion = 0,
	.xCreate = tbl_ring_connect,
	.xConnect = tbl_ring_connect,
	.xBestIndex = tbl_ring_best_index,
	.xDisconnect = tbl_ring_disconnect,
	.xDestroy = tbl_ring_disconnect,
	.xOpen = tbl_ring_open,
	.xClose = tbl_ring_close,
	.xFilter = tbl_ring_filter,
	.xNext = tbl_ring_next,
	.xEof = tbl_ring_eof,
	.xColumn = tbl_ring_column,
	.xRowid = tbl_ring_rowid,
};

int
tbl_ring_register(sqlite3 *db, const struct tbl_ring_desc *desc, char **cause)
{
	char modname[64];

	snprintf(modname, sizeof modname, "ring_%s", desc->name);
	return tbl_create(
	    db, desc->name, modname, &tbl_ring_module, (void *)desc, cause);
}
