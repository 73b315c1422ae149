/* The SQLite store: one connection with the schema `python` attached. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "agent.h"
#include "log.h"
#include "proto.h"

/* The connection; every use holds store_lock. */
static sqlite3 *store_db;
static pthread_mutex_t store_lock = PTHREAD_MUTEX_INITIALIZER;
static int store_query_timeout_ms = PROTO_DEFAULT_GIL_MS;
/* Set while the agent itself changes the schema; store_lock held. */
static int store_internal;

/* Built-in virtual tables may not be dropped by users. */
static int
store_authorize(void *unused, int action, const char *a, const char *b,
    const char *db, const char *trigger)
{
	(void)unused;
	(void)a;
	(void)b;
	(void)db;
	(void)trigger;
	return action == SQLITE_DROP_VTABLE && !store_internal ? SQLITE_DENY
							       : SQLITE_OK;
}

int
store_exec_internal(sqlite3 *db, const char *sql, char **cause)
{
	int rc;

	store_internal = 1;
	rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	store_internal = 0;
	if (rc != SQLITE_OK) {
		cause_set(cause, "%s", sqlite3_errmsg(db));
		return -1;
	}
	return 0;
}

int
store_open(char **cause)
{
	int rc;

	rc = sqlite3_open_v2(":memory:", &store_db,
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
	    NULL);
	if (rc != SQLITE_OK) {
		cause_set(cause, "cannot open the sqlite store: %s",
		    sqlite3_errstr(rc));
		return -1;
	}
	rc = sqlite3_exec(
	    store_db, "ATTACH ':memory:' AS python", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		cause_set(cause, "cannot attach the python schema: %s",
		    sqlite3_errmsg(store_db));
		return -1;
	}
	if (tbl_register_all(store_db, cause) != 0)
		return -1;
	sqlite3_set_authorizer(store_db, store_authorize, NULL);
	return 0;
}

int
store_timeout_ms(void)
{
	return store_query_timeout_ms;
}

/* Returns a JSON string for n bytes of text, replacing invalid UTF-8. */
static json_t *
store_text(const char *s, size_t n)
{
	json_t *j = json_stringn(s, n);
	char *copy;
	size_t i;

	if (j != NULL)
		return j;
	copy = malloc(n + 1);
	if (copy == NULL)
		return json_null();
	for (i = 0; i < n; i++)
		copy[i] = (s[i] & 0x80) ? '?' : s[i];
	j = json_stringn(copy, n);
	free(copy);
	return j != NULL ? j : json_null();
}

static const char *const store_type_names[] = {
	[SQLITE_INTEGER] = "INTEGER",
	[SQLITE_FLOAT] = "REAL",
	[SQLITE_TEXT] = "TEXT",
	[SQLITE_BLOB] = "BLOB",
	[SQLITE_NULL] = "NULL",
};

static json_t *
store_value(sqlite3_stmt *st, int i)
{
	const unsigned char *blob;
	char *hex;
	int n, k;
	double d;
	json_t *j;

	switch (sqlite3_column_type(st, i)) {
	case SQLITE_INTEGER:
		return json_integer(sqlite3_column_int64(st, i));
	case SQLITE_FLOAT:
		d = sqlite3_column_double(st, i);
		return (d == d && d - d == 0) ? json_real(d) : json_null();
	case SQLITE_TEXT:
		return store_text((const char *)sqlite3_column_text(st, i),
		    (size_t)sqlite3_column_bytes(st, i));
	case SQLITE_BLOB:
		blob = sqlite3_column_blob(st, i);
		n = sqlite3_column_bytes(st, i);
		hex = malloc((size_t)n * 2 + 4);
		if (hex == NULL)
			return json_null();
		hex[0] = 'x';
		hex[1] = '\'';
		for (k = 0; k < n; k++)
			sprintf(hex + 2 + k * 2, "%02x", blob[k]);
		strcpy(hex + 2 + n * 2, "'");
		j = json_string(hex);
		free(hex);
		return j;
	default:
		return json_null();
	}
}

/* Steps st to the end, filling rows; returns the sqlite result code. */
static int
store_rows(sqlite3_stmt *st, json_t *rows, json_t *types)
{
	int ncol = sqlite3_column_count(st), i, rc, t;
	json_t *row;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row = json_array();
		for (i = 0; i < ncol; i++) {
			t = sqlite3_column_type(st, i);
			if (t != SQLITE_NULL &&
			    strcmp(json_string_value(json_array_get(types, i)),
				"NULL") == 0)
				json_array_set_new(
				    types, i, json_string(store_type_names[t]));
			json_array_append_new(row, store_value(st, i));
		}
		json_array_append_new(rows, row);
	}
	return rc;
}

json_t *
store_query(const char *sql, int timeout_ms, char **cause)
{
	sqlite3_stmt *st = NULL;
	const char *tail = sql, *decl;
	json_t *cols = NULL, *types = NULL, *rows = NULL, *out = NULL;
	int rc, i, ncol;

	pthread_mutex_lock(&store_lock);
	store_query_timeout_ms = timeout_ms;
	if (tbl_python_refresh(store_db, sql, timeout_ms, cause) != 0)
		goto fail;
	/* Run every statement; the result is that of the last one. */
	while (tail != NULL && *tail != '\0') {
		sqlite3_finalize(st);
		st = NULL;
		rc = sqlite3_prepare_v2(store_db, tail, -1, &st, &tail);
		if (rc != SQLITE_OK) {
			cause_set(cause, "%s", sqlite3_errmsg(store_db));
			goto fail;
		}
		if (st == NULL)
			break; /* only whitespace or comments left */
		json_decref(cols);
		json_decref(types);
		json_decref(rows);
		cols = json_array();
		types = json_array();
		rows = json_array();
		ncol = sqlite3_column_count(st);
		for (i = 0; i < ncol; i++) {
			json_array_append_new(cols,
			    store_text(sqlite3_column_name(st, i),
				strlen(sqlite3_column_name(st, i))));
			decl = sqlite3_column_decltype(st, i);
			json_array_append_new(
			    types, json_string(decl != NULL ? decl : "NULL"));
		}
		rc = store_rows(st, rows, types);
		if (rc != SQLITE_DONE) {
			cause_set(cause, "%s", sqlite3_errmsg(store_db));
			goto fail;
		}
	}
	if (cols == NULL) {
		cause_set(cause, "empty query");
		goto fail;
	}
	out = json_pack(
	    "{s:o, s:o, s:o}", "columns", cols, "types", types, "rows", rows);
	cols = types = rows = NULL;
fail:
	sqlite3_finalize(st);
	json_decref(cols);
	json_decref(types);
	json_decref(rows);
	pthread_mutex_unlock(&store_lock);
	return out;
}
