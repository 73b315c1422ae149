/* python.backtrace: every thread's merged Python and native frames,
 * captured when the table is scanned. `thread_id = N` is pushed down, so
 * only that thread is looked at. */
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "agent.h"
#include "log.h"

/* The GIL is tried this long before reading frames without it. */
#define TBL_BACKTRACE_GIL_MS 200

enum tbl_backtrace_col {
	COL_FUNC,
	COL_FILE,
	COL_LINENO,
	COL_DEPTH,
	COL_FRAME_TYPE,
	COL_THREAD_ID,
	COL_THREAD_NAME,
	COL_THREAD_STATE,
	COL_THREAD_NOTE,
	COL_LIB_OFFSET,
	COL_THREAD_STOP_US,
};

static const char tbl_backtrace_schema[] =
    "CREATE TABLE x(func TEXT, file TEXT, lineno INTEGER, depth INTEGER, "
    "frame_type TEXT, thread_id INTEGER, thread_name TEXT, "
    "thread_state TEXT, thread_note TEXT, lib_offset INTEGER, thread_stop_us "
    "REAL)";

/* A cursor owns one capture; (t, f) is the current row. A thread with no
 * frame at all still gets one row, with NULL frame columns, so that its
 * state and note are not lost. */
struct tbl_backtrace_cursor {
	sqlite3_vtab_cursor base;
	struct backtrace *bt;
	int t, f;
	sqlite3_int64 rowid;
};

static int
tbl_backtrace_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
    sqlite3_vtab **out, char **err)
{
	sqlite3_vtab *vt;
	int rc;

	(void)aux;
	(void)argc;
	(void)argv;
	(void)err;
	rc = sqlite3_declare_vtab(db, tbl_backtrace_schema);
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
tbl_backtrace_disconnect(sqlite3_vtab *vt)
{
	sqlite3_free(vt);
	return SQLITE_OK;
}

/* Plan 1: thread_id = ? given. */
static int
tbl_backtrace_best_index(sqlite3_vtab *vt, sqlite3_index_info *info)
{
	int i;

	(void)vt;
	info->idxNum = 0;
	info->estimatedCost = 1000;
	for (i = 0; i < info->nConstraint; i++) {
		if (info->aConstraint[i].usable &&
		    info->aConstraint[i].iColumn == COL_THREAD_ID &&
		    info->aConstraint[i].op == SQLITE_INDEX_CONSTRAINT_EQ) {
			info->idxNum = 1;
			info->aConstraintUsage[i].argvIndex = 1;
			info->aConstraintUsage[i].omit = 1;
			info->estimatedCost = 10;
			break;
		}
	}
	return SQLITE_OK;
}

static int
tbl_backtrace_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
	(void)vt;
	return tbl_cursor_open(sizeof(struct tbl_backtrace_cursor), out);
}

static int
tbl_backtrace_close(sqlite3_vtab_cursor *base)
{
	struct tbl_backtrace_cursor *cur = (struct tbl_backtrace_cursor *)base;

	backtrace_free(cur->bt);
	sqlite3_free(cur);
	return SQLITE_OK;
}

/* Skips threads that have no row left to give. */
static void
tbl_backtrace_settle(struct tbl_backtrace_cursor *cur)
{
	while (cur->t < cur->bt->nthreads &&
	    cur->f >= cur->bt->threads[cur->t].nframes &&
	    !(cur->f == 0 && cur->bt->threads[cur->t].nframes == 0)) {
		cur->t++;
		cur->f = 0;
	}
}

static int
tbl_backtrace_filter(sqlite3_vtab_cursor *base, int idx, const char *idxstr,
    int argc, sqlite3_value **argv)
{
	struct tbl_backtrace_cursor *cur = (struct tbl_backtrace_cursor *)base;
	sqlite3_int64 tid = 0;
	char *cause = NULL;
	int gil_ms = request_timeout_ms();

	(void)idxstr;
	if (idx == 1 && argc == 1) {
		if (sqlite3_value_type(argv[0]) != SQLITE_INTEGER)
			tid = -1; /* matches no thread */
		else
			tid = sqlite3_value_int64(argv[0]);
	}
	backtrace_free(cur->bt);
	cur->bt = NULL;
	cur->t = cur->f = 0;
	cur->rowid = 0;
	if (tid < 0) {
		cur->bt = calloc(1, sizeof *cur->bt);
		return cur->bt != NULL ? SQLITE_OK : SQLITE_NOMEM;
	}
	if (gil_ms > TBL_BACKTRACE_GIL_MS)
		gil_ms = TBL_BACKTRACE_GIL_MS;
	cur->bt = backtrace_capture((long)tid, gil_ms, &cause);
	if (cur->bt == NULL) {
		if (tid != 0 && cause != NULL &&
		    strncmp(cause, "no thread", 9) == 0) {
			free(cause);
			cur->bt = calloc(1, sizeof *cur->bt);
			return cur->bt != NULL ? SQLITE_OK : SQLITE_NOMEM;
		}
		sqlite3_free(base->pVtab->zErrMsg);
		base->pVtab->zErrMsg = sqlite3_mprintf("%s", cause_str(cause));
		free(cause);
		return SQLITE_ERROR;
	}
	tbl_backtrace_settle(cur);
	return SQLITE_OK;
}

static int
tbl_backtrace_next(sqlite3_vtab_cursor *base)
{
	struct tbl_backtrace_cursor *cur = (struct tbl_backtrace_cursor *)base;

	if (cur->bt->threads[cur->t].nframes == 0) {
		cur->t++;
		cur->f = 0;
	} else {
		cur->f++;
	}
	cur->rowid++;
	tbl_backtrace_settle(cur);
	return SQLITE_OK;
}

static int
tbl_backtrace_eof(sqlite3_vtab_cursor *base)
{
	struct tbl_backtrace_cursor *cur = (struct tbl_backtrace_cursor *)base;

	return cur->bt == NULL || cur->t >= cur->bt->nthreads;
}

static void
tbl_backtrace_text(sqlite3_context *ctx, const char *s)
{
	if (s != NULL)
		sqlite3_result_text(ctx, s, -1, SQLITE_TRANSIENT);
	else
		sqlite3_result_null(ctx);
}

static int
tbl_backtrace_column(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int col)
{
	struct tbl_backtrace_cursor *cur = (struct tbl_backtrace_cursor *)base;
	const struct backtrace_thread *t = &cur->bt->threads[cur->t];
	const struct backtrace_frame *f =
	    t->nframes > 0 ? &t->frames[cur->f] : NULL;

	switch ((enum tbl_backtrace_col)col) {
	case COL_THREAD_ID:
		sqlite3_result_int64(ctx, t->tid);
		return SQLITE_OK;
	case COL_THREAD_NAME:
		tbl_backtrace_text(ctx, t->name);
		return SQLITE_OK;
	case COL_THREAD_STATE:
		tbl_backtrace_text(ctx, t->state);
		return SQLITE_OK;
	case COL_THREAD_NOTE:
		tbl_backtrace_text(ctx, t->note);
		return SQLITE_OK;
	case COL_THREAD_STOP_US: /* how long the thread was held stopped */
		if (t->stop_us >= 0)
			sqlite3_result_double(ctx, t->stop_us);
		else
			sqlite3_result_null(ctx);
		return SQLITE_OK;
	default:
		break;
	}
	if (f == NULL) {
		sqlite3_result_null(ctx);
		return SQLITE_OK;
	}
	switch ((enum tbl_backtrace_col)col) {
	case COL_FUNC:
		tbl_backtrace_text(ctx, f->func);
		break;
	case COL_FILE:
		tbl_backtrace_text(ctx, f->file);
		break;
	case COL_LINENO:
		if (f->type == BACKTRACE_PYTHON && f->lineno > 0)
			sqlite3_result_int(ctx, f->lineno);
		else
			sqlite3_result_null(ctx);
		break;
	case COL_DEPTH:
		sqlite3_result_int(ctx, cur->f);
		break;
	case COL_FRAME_TYPE:
		tbl_backtrace_text(
		    ctx, f->type == BACKTRACE_PYTHON ? "Python" : "Native");
		break;
	case COL_LIB_OFFSET:
		if (f->type == BACKTRACE_NATIVE)
			sqlite3_result_int64(ctx, (sqlite3_int64)f->offset);
		else
			sqlite3_result_null(ctx);
		break;
	default:
		sqlite3_result_null(ctx);
		break;
	}
	return SQLITE_OK;
}

static int
tbl_backtrace_rowid(sqlite3_vtab_cursor *base, sqlite3_int64 *rowid)
{
	*rowid = ((struct tbl_backtrace_cursor *)base)->rowid;
	return SQLITE_OK;
}

static const sqlite3_module tbl_backtrace_module = {
	.iVersion = 0,
	.xCreate = tbl_backtrace_connect,
	.xConnect = tbl_backtrace_connect,
	.xBestIndex = tbl_backtrace_best_index,
	.xDisconnect = tbl_backtrace_disconnect,
	.xDestroy = tbl_backtrace_disconnect,
	.xOpen = tbl_backtrace_open,
	.xClose = tbl_backtrace_close,
	.xFilter = tbl_backtrace_filter,
	.xNext = tbl_backtrace_next,
	.xEof = tbl_backtrace_eof,
	.xColumn = tbl_backtrace_column,
	.xRowid = tbl_backtrace_rowid,
};

int
tbl_backtrace_register(sqlite3 *db, char **cause)
{
	return tbl_create(
	    db, "backtrace", "backtrace", &tbl_backtrace_module, NULL, cause);
}
