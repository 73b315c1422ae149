/* python.<name> tables registered from Python with @probing.table: each
 * query calls the function under the GIL and reads a snapshot of its rows.
 *
 * A table's columns are the union of its rows' dict keys (or the columns
 * given at registration), so they can change from one query to the next.
 * SQLite fixes a virtual table's columns when it is created; so before a
 * query runs (tbl_python_refresh, from store_query) every table the SQL
 * names is called once, and re-created when its columns or their types
 * changed. That call's rows are what the query reads. A table reached
 * without being named (through a view) is called when it is scanned and
 * keeps the columns it has. A query that lists tables (sqlite_master,
 * pragma table_info, ...) calls those not made yet, or registered again
 * since, to learn their columns; one that raises is then left out.
 *
 * Threads and locks: tbl_python_lock guards the list's links and each
 * entry's version; entries are never freed. fn and columns are touched
 * only with the GIL. decl, cols, snap and gen are touched only under the
 * store's lock (refresh and the virtual table callbacks run inside
 * store_query). Registering never takes the store's lock: a query holds it
 * while it waits for the GIL, and registering holds the GIL. */
#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <Python.h>
#include <sqlite3.h>

#include "agent.h"
#include "log.h"

#define TBL_PYTHON_MODULE   "python_table"
#define TBL_PYTHON_NAME_MAX 63

enum tbl_python_type { TP_NULL, TP_INT, TP_REAL, TP_TEXT, TP_BLOB };

struct tbl_python_val {
	enum tbl_python_type type;
	union {
		int64_t i;
		double d;
		struct {
			char *p;
			size_t n;
		} s;
	} u;
};

/* The rows of one call. Shared by the entry and open cursors; refs is
 * changed only under the store's lock. */
struct tbl_python_snap {
	int refs;
	int ncols;
	char **cols;
	size_t nrows;
	struct tbl_python_val *cells; /* nrows * ncols */
};

/* The columns a table was created with: names and declared types. */
struct tbl_python_cols {
	int n;
	char **names;
	enum tbl_python_type *types; /* TP_NULL: no declared type */
};

struct tbl_python {
	char name[TBL_PYTHON_NAME_MAX + 1];
	PyObject *fn;      /* GIL */
	PyObject *columns; /* GIL: a tuple of str, or NULL */
	unsigned version;  /* bumped by each registration; tbl_python_lock */
	int removed;       /* by untable; tbl_python_lock */
	/* The store's lock: */
	unsigned made_version;       /* version its table was made for */
	char *decl;                  /* the CREATE TABLE text, NULL before */
	struct tbl_python_cols cols; /* what decl declares */
	struct tbl_python_snap *snap;
	unsigned gen; /* the query snap was taken for */
	struct tbl_python *next;
};

static pthread_mutex_t tbl_python_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t tbl_python_once = PTHREAD_ONCE_INIT;
static struct tbl_python *tbl_python_list;
static unsigned tbl_python_gen;  /* the store's lock: one per query */
static int tbl_python_module_ok; /* the store's lock */

static const char *const tbl_python_type_names[] = {
	[TP_NULL] = "",
	[TP_INT] = "INTEGER",
	[TP_REAL] = "REAL",
	[TP_TEXT] = "TEXT",
	[TP_BLOB] = "BLOB",
};

static void
tbl_python_atfork_child(void)
{
	pthread_mutex_init(&tbl_python_lock, NULL);
}

static void
tbl_python_init_once(void)
{
	pthread_atfork(NULL, NULL, tbl_python_atfork_child);
}

/* Any thread: the entry for name, or NULL. */
static struct tbl_python *
tbl_python_find(const char *name)
{
	struct tbl_python *t;

	pthread_mutex_lock(&tbl_python_lock);
	for (t = tbl_python_list; t != NULL; t = t->next) {
		if (strcasecmp(t->name, name) == 0)
			break;
	}
	pthread_mutex_unlock(&tbl_python_lock);
	return t;
}

/* Returns 0 if name is a plain SQL identifier we accept, else -1. */
static int
tbl_python_check_name(const char *name, char **cause)
{
	size_t i, n = strlen(name);

	if (n == 0 || n > TBL_PYTHON_NAME_MAX ||
	    !(isalpha((unsigned char)name[0]) || name[0] == '_'))
		goto bad;
	for (i = 1; i < n; i++) {
		if (!isalnum((unsigned char)name[i]) && name[i] != '_')
			goto bad;
	}
	if (strncasecmp(name, "sqlite_", 7) == 0)
		goto bad;
	if (store_is_builtin(name)) {
		cause_set(cause,
		    "python.%s is a built-in table of the agent: register the "
		    "function under another name",
		    name);
		return -1;
	}
	return 0;
bad:
	cause_set(cause,
	    "bad table name '%s': use letters, digits and _ (at most %d, "
	    "not starting with a digit or sqlite_)",
	    name, TBL_PYTHON_NAME_MAX);
	return -1;
}

int
tbl_python_add(const char *name, PyObject *fn, PyObject *columns, char **cause)
{
	struct tbl_python *t;
	PyObject *cols = NULL, *old_fn, *old_cols, *item;
	Py_ssize_t i;
	int fresh = 0;

	pthread_once(&tbl_python_once, tbl_python_init_once);
	if (tbl_python_check_name(name, cause) != 0)
		return -1;
	if (!PyCallable_Check(fn)) {
		cause_set(cause,
		    "python.%s: the table function is not callable", name);
		return -1;
	}
	if (columns != NULL && columns != Py_None) {
		cols = PySequence_Tuple(columns);
		if (cols == NULL || PyTuple_GET_SIZE(cols) == 0 ||
		    PyUnicode_Check(columns))
			goto bad_cols;
		for (i = 0; i < PyTuple_GET_SIZE(cols); i++) {
			item = PyTuple_GET_ITEM(cols, i);
			if (!PyUnicode_Check(item) ||
			    PyUnicode_AsUTF8(item) == NULL)
				goto bad_cols;
		}
	}
	t = tbl_python_find(name);
	if (t == NULL) {
		t = calloc(1, sizeof *t);
		if (t == NULL)
			goto nomem;
		snprintf(t->name, sizeof t->name, "%s", name);
		fresh = 1;
	}
	old_fn = t->fn;
	old_cols = t->columns;
	t->fn = Py_NewRef(fn);
	t->columns = cols;
	pthread_mutex_lock(&tbl_python_lock);
	t->version++;
	t->removed = 0;
	if (fresh) {
		t->next = tbl_python_list;
		tbl_python_list = t;
	}
	pthread_mutex_unlock(&tbl_python_lock);
	Py_XDECREF(old_fn);
	Py_XDECREF(old_cols);
	return 0;
nomem:
	Py_XDECREF(cols);
	cause_set(cause, "out of memory");
	return -1;
bad_cols:
	PyErr_Clear();
	Py_XDECREF(cols);
	cause_set(cause,
	    "python.%s: columns= must be a non-empty list of "
	    "column names (str)",
	    name);
	return -1;
}

int
tbl_python_remove(const char *name, char **cause)
{
	struct tbl_python *t = tbl_python_find(name);
	PyObject *fn, *cols;

	if (store_is_builtin(name)) {
		cause_set(cause,
		    "python.%s is a built-in table of the agent and cannot be "
		    "removed",
		    name);
		return -1;
	}
	pthread_mutex_lock(&tbl_python_lock);
	if (t == NULL || t->removed) {
		pthread_mutex_unlock(&tbl_python_lock);
		cause_set(cause, "no user table python.%s", name);
		return -1;
	}
	t->removed = 1;
	t->version++;
	fn = t->fn;
	cols = t->columns;
	t->fn = t->columns = NULL;
	pthread_mutex_unlock(&tbl_python_lock);
	Py_XDECREF(fn);
	Py_XDECREF(cols);
	return 0;
}

static void
tbl_python_snap_unref(struct tbl_python_snap *s)
{
	size_t i;
	int c;

	if (s == NULL || --s->refs > 0)
		return;
	for (i = 0; i < s->nrows * (size_t)s->ncols; i++) {
		if (s->cells[i].type == TP_TEXT || s->cells[i].type == TP_BLOB)
			free(s->cells[i].u.s.p);
	}
	for (c = 0; c < s->ncols; c++)
		free(s->cols[c]);
	free(s->cols);
	free(s->cells);
	free(s);
}

static void
tbl_python_cols_clear(struct tbl_python_cols *c)
{
	int i;

	for (i = 0; i < c->n; i++)
		free(c->names[i]);
	free(c->names);
	free(c->types);
	memset(c, 0, sizeof *c);
}

/* GIL: sets *cause from the pending Python exception and clears it. */
static void
tbl_python_exc(const struct tbl_python *t, char **cause)
{
	PyObject *type, *value, *tb, *s;
	const char *msg = NULL, *tname = "error";

	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	if (type != NULL && PyType_Check(type))
		tname = ((PyTypeObject *)type)->tp_name;
	s = value != NULL ? PyObject_Str(value) : NULL;
	if (s != NULL)
		msg = PyUnicode_AsUTF8(s);
	PyErr_Clear();
	if (msg != NULL && *msg != '\0')
		cause_set(cause, "python.%s: %s: %s", t->name, tname, msg);
	else
		cause_set(cause, "python.%s: %s", t->name, tname);
	Py_XDECREF(s);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
}

/* GIL: copies s's UTF-8 into out as text; -1 with an exception set. */
static int
tbl_python_text(PyObject *s, struct tbl_python_val *out)
{
	PyObject *b = PyUnicode_AsEncodedString(s, "utf-8", "backslashreplace");

	if (b == NULL)
		return -1;
	out->u.s.n = (size_t)PyBytes_GET_SIZE(b);
	out->u.s.p = malloc(out->u.s.n + 1);
	if (out->u.s.p == NULL) {
		Py_DECREF(b);
		PyErr_NoMemory();
		return -1;
	}
	memcpy(out->u.s.p, PyBytes_AS_STRING(b), out->u.s.n + 1);
	out->type = TP_TEXT;
	Py_DECREF(b);
	return 0;
}

/* GIL: converts one Python value; numbers stay numbers, None is NULL,
 * bytes are a blob, anything else is its str(). -1 with an exception. */
static int
tbl_python_value(PyObject *v, struct tbl_python_val *out)
{
	PyObject *n, *s;
	int overflow, rc;
	long long ll;
	char *p;
	Py_ssize_t len;

	if (v == Py_None)
		return 0;
	if (PyBool_Check(v)) {
		out->type = TP_INT;
		out->u.i = v == Py_True;
		return 0;
	}
	if (PyLong_Check(v) || PyFloat_Check(v) || PyUnicode_Check(v) ||
	    PyBytes_Check(v) || PyByteArray_Check(v))
		n = Py_NewRef(v);
	else if (PyIndex_Check(v) && (n = PyNumber_Index(v)) != NULL)
		;
	else if (PyErr_Clear(),
	    Py_TYPE(v)->tp_as_number != NULL &&
		Py_TYPE(v)->tp_as_number->nb_float != NULL &&
		(n = PyNumber_Float(v)) != NULL)
		;
	else {
		PyErr_Clear();
		s = PyObject_Str(v);
		if (s == NULL)
			return -1;
		rc = tbl_python_text(s, out);
		Py_DECREF(s);
		return rc;
	}
	rc = 0;
	if (PyLong_Check(n)) {
		ll = PyLong_AsLongLongAndOverflow(n, &overflow);
		if (overflow == 0 && !(ll == -1 && PyErr_Occurred())) {
			out->type = TP_INT;
			out->u.i = ll;
		} else {
			PyErr_Clear();
			out->type = TP_REAL;
			out->u.d = PyLong_AsDouble(n);
			if (out->u.d == -1.0 && PyErr_Occurred()) {
				PyErr_Clear();
				s = PyObject_Str(n);
				rc = s != NULL ? tbl_python_text(s, out) : -1;
				Py_XDECREF(s);
			}
		}
	} else if (PyFloat_Check(n)) {
		out->type = TP_REAL;
		out->u.d = PyFloat_AS_DOUBLE(n);
	} else if (PyUnicode_Check(n)) {
		rc = tbl_python_text(n, out);
	} else {
		if (PyBytes_Check(n)) {
			p = PyBytes_AS_STRING(n);
			len = PyBytes_GET_SIZE(n);
		} else {
			p = PyByteArray_AS_STRING(n);
			len = PyByteArray_GET_SIZE(n);
		}
		out->u.s.p = malloc((size_t)len + 1);
		if (out->u.s.p == NULL) {
			PyErr_NoMemory();
			rc = -1;
		} else {
			memcpy(out->u.s.p, p, (size_t)len);
			out->u.s.n = (size_t)len;
			out->type = TP_BLOB;
		}
	}
	Py_DECREF(n);
	return rc;
}

struct tbl_python_call {
	struct tbl_python *t;
	struct tbl_python_snap *snap;
};

/* GIL: the column index of key in names (a dict str -> int), adding it
 * when add is set. -1 with an exception set, or -2 when absent. */
static Py_ssize_t
tbl_python_col(PyObject *names, PyObject *key, int add)
{
	PyObject *k = PyUnicode_Check(key) ? Py_NewRef(key) : PyObject_Str(key);
	PyObject *i;
	Py_ssize_t r;

	if (k == NULL)
		return -1;
	i = PyDict_GetItemWithError(names, k);
	if (i != NULL)
		r = PyLong_AsSsize_t(i);
	else if (PyErr_Occurred())
		r = -1;
	else if (!add)
		r = -2;
	else {
		r = PyDict_GET_SIZE(names);
		i = PyLong_FromSsize_t(r);
		if (i == NULL || PyDict_SetItem(names, k, i) != 0)
			r = -1;
		Py_XDECREF(i);
	}
	Py_DECREF(k);
	return r;
}

/* GIL, on a py worker: calls the table's function and converts its rows. */
static int
tbl_python_call_run(void *arg, char **cause)
{
	struct tbl_python_call *c = arg;
	struct tbl_python *t = c->t;
	struct tbl_python_snap *s = NULL;
	PyObject *res = NULL, *rows = NULL, *names = NULL, *row, *k, *v;
	Py_ssize_t i, j, pos, col, nrows, value_col = 0;
	int fixed = t->columns != NULL;

	if (t->fn == NULL) {
		cause_set(cause, "python.%s has no function", t->name);
		return -1;
	}
	res = PyObject_CallNoArgs(t->fn);
	if (res == NULL)
		goto pyfail;
	rows = res == Py_None ? PyList_New(0) : PySequence_List(res);
	if (rows == NULL)
		goto pyfail;
	nrows = PyList_GET_SIZE(rows);
	names = PyDict_New();
	if (names == NULL)
		goto pyfail;
	if (fixed) {
		for (i = 0; i < PyTuple_GET_SIZE(t->columns); i++) {
			if (tbl_python_col(
				names, PyTuple_GET_ITEM(t->columns, i), 1) < 0)
				goto pyfail;
		}
	} else {
		for (i = 0; i < nrows; i++) {
			row = PyList_GET_ITEM(rows, i);
			if (PyDict_Check(row)) {
				pos = 0;
				while (PyDict_Next(row, &pos, &k, &v)) {
					/* str(k) may run code that changes
					 * the dict: hold what is used. */
					Py_INCREF(k);
					col = tbl_python_col(names, k, 1);
					Py_DECREF(k);
					if (col < 0)
						goto pyfail;
				}
			} else if (PyTuple_Check(row) || PyList_Check(row)) {
				cause_set(cause,
				    "python.%s: row %zd is a %s: rows are "
				    "dicts, or give @table(..., columns=[...])",
				    t->name, i, Py_TYPE(row)->tp_name);
				goto fail;
			} else {
				k = PyUnicode_FromString("value");
				value_col = k != NULL
				    ? tbl_python_col(names, k, 1)
				    : -1;
				Py_XDECREF(k);
				if (value_col < 0)
					goto pyfail;
			}
		}
	}
	s = calloc(1, sizeof *s);
	if (s == NULL)
		goto nomem;
	s->refs = 1;
	s->ncols = (int)PyDict_GET_SIZE(names);
	s->cols = calloc((size_t)s->ncols + 1, sizeof *s->cols);
	s->cells =
	    calloc((size_t)nrows * (size_t)s->ncols + 1, sizeof *s->cells);
	if (s->cols == NULL || s->cells == NULL)
		goto nomem;
	pos = 0;
	while (PyDict_Next(names, &pos, &k, &v)) {
		col = PyLong_AsSsize_t(v);
		s->cols[col] =
		    strdup(PyUnicode_AsUTF8(k) ? PyUnicode_AsUTF8(k) : "?");
		if (s->cols[col] == NULL)
			goto nomem;
	}
	for (i = 0; i < nrows; i++) {
		struct tbl_python_val *cells = s->cells + i * s->ncols;

		row = PyList_GET_ITEM(rows, i);
		s->nrows = (size_t)i + 1; /* so a failure frees what is made */
		if (PyDict_Check(row)) {
			pos = 0;
			while (PyDict_Next(row, &pos, &k, &v)) {
				Py_INCREF(k);
				Py_INCREF(v);
				col = tbl_python_col(names, k, 0);
				if (col >= 0 && cells[col].type == TP_NULL &&
				    tbl_python_value(v, &cells[col]) != 0)
					col = -1;
				Py_DECREF(k);
				Py_DECREF(v);
				if (col == -1)
					goto pyfail;
			}
		} else if (fixed && (PyTuple_Check(row) || PyList_Check(row))) {
			for (j = 0;
			     j < PySequence_Fast_GET_SIZE(row) && j < s->ncols;
			     j++) {
				v = Py_NewRef(PySequence_Fast_GET_ITEM(row, j));
				col = tbl_python_value(v, &cells[j]);
				Py_DECREF(v);
				if (col != 0)
					goto pyfail;
			}
		} else if (tbl_python_value(row, &cells[value_col]) != 0)
			goto pyfail;
	}
	s->nrows = (size_t)nrows;
	c->snap = s;
	Py_DECREF(names);
	Py_DECREF(rows);
	Py_DECREF(res);
	return 0;
nomem:
	cause_set(cause, "python.%s: out of memory", t->name);
	goto fail;
pyfail:
	tbl_python_exc(t, cause);
fail:
	PyErr_Clear();
	tbl_python_snap_unref(s);
	Py_XDECREF(names);
	Py_XDECREF(rows);
	Py_XDECREF(res);
	return -1;
}

/* Store lock held: calls t's function; a new snapshot or NULL. */
static struct tbl_python_snap *
tbl_python_fetch(struct tbl_python *t, int timeout_ms, char **cause)
{
	struct tbl_python_call c = { t, NULL };
	char *why = NULL;

	if (py_run_bounded(tbl_python_call_run, &c, timeout_ms, &why) != 0) {
		/* The function's own error names the table already. */
		if (why != NULL && strncmp(why, "python.", 7) != 0)
			cause_set(cause, "python.%s: %s", t->name, why);
		else if (cause != NULL) {
			*cause = why;
			why = NULL;
		}
		free(why);
		return NULL;
	}
	return c.snap;
}

/* The declared type of column c over a snapshot's values. */
static enum tbl_python_type
tbl_python_coltype(const struct tbl_python_snap *s, int c)
{
	enum tbl_python_type t = TP_NULL, v;
	size_t i;

	for (i = 0; i < s->nrows; i++) {
		v = s->cells[i * (size_t)s->ncols + (size_t)c].type;
		if (v == TP_NULL || v == t)
			continue;
		if (t == TP_NULL)
			t = v;
		else if ((t == TP_INT && v == TP_REAL) ||
		    (t == TP_REAL && v == TP_INT))
			t = TP_REAL;
		else
			return TP_NULL; /* mixed: no declared type */
	}
	return t;
}

/* The columns for a snapshot (or, without one, the registered names);
 * 0 or -1 when out of memory. */
static int
tbl_python_cols_make(const struct tbl_python_snap *s, char **names, int n,
    struct tbl_python_cols *out)
{
	int i;

	memset(out, 0, sizeof *out);
	if (s != NULL) {
		names = s->cols;
		n = s->ncols;
	}
	out->names = calloc((size_t)n + 1, sizeof *out->names);
	out->types = calloc((size_t)n + 1, sizeof *out->types);
	if (out->names == NULL || out->types == NULL)
		goto fail;
	for (i = 0; i < n; i++) {
		out->names[i] = strdup(names[i]);
		if (out->names[i] == NULL)
			goto fail;
		out->n = i + 1;
		out->types[i] = s != NULL ? tbl_python_coltype(s, i) : TP_NULL;
	}
	return 0;
fail:
	tbl_python_cols_clear(out);
	return -1;
}

/* The CREATE TABLE text for cols (sqlite3_malloc'd), or NULL. */
static char *
tbl_python_decl(const struct tbl_python_cols *cols)
{
	sqlite3_str *str = sqlite3_str_new(NULL);
	int i;

	sqlite3_str_appendall(str, "CREATE TABLE x(");
	for (i = 0; i < cols->n; i++)
		sqlite3_str_appendf(str, "%s\"%w\" %s", i ? ", " : "",
		    cols->names[i], tbl_python_type_names[cols->types[i]]);
	if (cols->n == 0)
		sqlite3_str_appendall(str, "\"value\"");
	sqlite3_str_appendall(str, ")");
	return sqlite3_str_finish(str);
}

/* Store lock held: makes python.<name> declare cols (taken over). */
static int
tbl_python_make(sqlite3 *db, struct tbl_python *t, struct tbl_python_cols *cols,
    unsigned version, char **cause)
{
	char *decl = tbl_python_decl(cols), *sql = NULL;
	sqlite3_stmt *st = NULL;
	int exists = 0, rc = -1;

	if (decl == NULL)
		goto nomem;
	if (t->decl != NULL && strcmp(t->decl, decl) == 0) {
		t->made_version = version;
		tbl_python_cols_clear(cols);
		sqlite3_free(decl);
		return 0;
	}
	if (t->decl == NULL) {
		/* Not ours yet: it must not take a built-in table's name. */
		if (sqlite3_prepare_v2(db,
			"SELECT 1 FROM python.sqlite_master WHERE name = ?1 "
			"COLLATE NOCASE",
			-1, &st, NULL) != SQLITE_OK)
			goto sqlfail;
		sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
		exists = sqlite3_step(st) == SQLITE_ROW;
		sqlite3_finalize(st);
		if (exists) {
			cause_set(cause,
			    "python.%s is a table of the agent: register the "
			    "function under another name",
			    t->name);
			goto out;
		}
	} else {
		sql = sqlite3_mprintf("DROP TABLE python.%s", t->name);
		if (sql == NULL)
			goto nomem;
		if (store_exec_internal(db, sql, cause) != 0)
			goto out;
		sqlite3_free(sql);
		sqlite3_free(t->decl);
		t->decl = NULL;
		tbl_python_cols_clear(&t->cols);
	}
	t->decl = decl;
	t->cols = *cols;
	memset(cols, 0, sizeof *cols);
	decl = NULL;
	sql = sqlite3_mprintf("CREATE VIRTUAL TABLE python.%s USING %s",
	    t->name, TBL_PYTHON_MODULE);
	if (sql == NULL)
		goto nomem;
	if (store_exec_internal(db, sql, cause) != 0) {
		sqlite3_free(t->decl);
		t->decl = NULL;
		tbl_python_cols_clear(&t->cols);
		goto out;
	}
	t->made_version = version;
	rc = 0;
	goto out;
sqlfail:
	cause_set(cause, "%s", sqlite3_errmsg(db));
	goto out;
nomem:
	cause_set(cause, "out of memory");
out:
	sqlite3_free(sql);
	sqlite3_free(decl);
	tbl_python_cols_clear(cols);
	return rc;
}

/* Does sql mention name as a whole word (case-insensitive)? */
static int
tbl_python_mentions(const char *sql, const char *name)
{
	size_t n = strlen(name);
	const char *p = sql;

	while ((p = strcasestr(p, name)) != NULL) {
		if ((p == sql ||
			!(isalnum((unsigned char)p[-1]) || p[-1] == '_' ||
			    p[-1] == '$')) &&
		    !(isalnum((unsigned char)p[n]) || p[n] == '_' ||
			p[n] == '$'))
			return 1;
		p += n;
	}
	return 0;
}

static int
tbl_python_lists_tables(const char *sql)
{
	static const char *const words[] = { "sqlite_master", "sqlite_schema",
		"table_info", "table_xinfo", "table_list" };
	size_t i;

	for (i = 0; i < sizeof words / sizeof *words; i++) {
		if (strcasestr(sql, words[i]) != NULL)
			return 1;
	}
	return 0;
}

/* A table's virtual table: the columns it was declared with. */
struct tbl_python_vtab {
	sqlite3_vtab base;
	struct tbl_python *t;
	struct tbl_python_cols cols;
};

/* A scan: the snapshot it reads and where each column is in it. */
struct tbl_python_cursor {
	sqlite3_vtab_cursor base;
	struct tbl_python_snap *snap;
	int *map; /* vtab column -> snapshot column, or -1 */
	size_t row;
};

/* xCreate and xConnect: declares what the entry's decl says. */
static int
tbl_python_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
    sqlite3_vtab **out, char **err)
{
	struct tbl_python *t = argc >= 3 ? tbl_python_find(argv[2]) : NULL;
	struct tbl_python_vtab *vt;
	int rc;

	(void)aux;
	if (t == NULL || t->decl == NULL) {
		*err = sqlite3_mprintf(
		    "python.%s is not registered", argc >= 3 ? argv[2] : "?");
		return SQLITE_ERROR;
	}
	rc = sqlite3_declare_vtab(db, t->decl);
	if (rc != SQLITE_OK)
		return rc;
	vt = sqlite3_malloc(sizeof *vt);
	if (vt == NULL)
		return SQLITE_NOMEM;
	memset(vt, 0, sizeof *vt);
	vt->t = t;
	if (tbl_python_cols_make(NULL, t->cols.names, t->cols.n, &vt->cols) !=
	    0) {
		sqlite3_free(vt);
		return SQLITE_NOMEM;
	}
	memcpy(vt->cols.types, t->cols.types,
	    (size_t)t->cols.n * sizeof *vt->cols.types);
	*out = &vt->base;
	return SQLITE_OK;
}

static int
tbl_python_disconnect(sqlite3_vtab *base)
{
	struct tbl_python_vtab *vt = (struct tbl_python_vtab *)base;

	tbl_python_cols_clear(&vt->cols);
	sqlite3_free(vt);
	return SQLITE_OK;
}

static int
tbl_python_best_index(sqlite3_vtab *vt, sqlite3_index_info *info)
{
	(void)vt;
	info->estimatedCost = 1000000;
	return SQLITE_OK;
}

static int
tbl_python_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
	(void)vt;
	return tbl_cursor_open(sizeof(struct tbl_python_cursor), out);
}

static int
tbl_python_close(sqlite3_vtab_cursor *base)
{
	struct tbl_python_cursor *cur = (struct tbl_python_cursor *)base;

	tbl_python_snap_unref(cur->snap);
	free(cur->map);
	sqlite3_free(cur);
	return SQLITE_OK;
}

/* Reads this query's snapshot, calling the function when the query did
 * not name the table (a view over it). */
static int
tbl_python_filter(sqlite3_vtab_cursor *base, int idx, const char *idxstr,
    int argc, sqlite3_value **argv)
{
	struct tbl_python_cursor *cur = (struct tbl_python_cursor *)base;
	struct tbl_python_vtab *vt = (struct tbl_python_vtab *)base->pVtab;
	struct tbl_python *t = vt->t;
	struct tbl_python_snap *s;
	char *cause = NULL;
	int i, c;

	(void)idx;
	(void)idxstr;
	(void)argc;
	(void)argv;
	if (t->snap == NULL || t->gen != tbl_python_gen) {
		s = tbl_python_fetch(t, request_timeout_ms(), &cause);
		if (s == NULL) {
			sqlite3_free(vt->base.zErrMsg);
			vt->base.zErrMsg =
			    sqlite3_mprintf("%s", cause_str(cause));
			free(cause);
			return SQLITE_ERROR;
		}
		tbl_python_snap_unref(t->snap);
		t->snap = s;
		t->gen = tbl_python_gen;
	}
	tbl_python_snap_unref(cur->snap);
	cur->snap = t->snap;
	cur->snap->refs++;
	free(cur->map);
	cur->map = calloc((size_t)vt->cols.n + 1, sizeof *cur->map);
	if (cur->map == NULL)
		return SQLITE_NOMEM;
	for (i = 0; i < vt->cols.n; i++) {
		cur->map[i] = -1;
		for (c = 0; c < cur->snap->ncols; c++) {
			if (strcmp(vt->cols.names[i], cur->snap->cols[c]) ==
			    0) {
				cur->map[i] = c;
				break;
			}
		}
	}
	cur->row = 0;
	return SQLITE_OK;
}

static int
tbl_python_next(sqlite3_vtab_cursor *base)
{
	((struct tbl_python_cursor *)base)->row++;
	return SQLITE_OK;
}

static int
tbl_python_eof(sqlite3_vtab_cursor *base)
{
	struct tbl_python_cursor *cur = (struct tbl_python_cursor *)base;

	return cur->snap == NULL || cur->row >= cur->snap->nrows;
}

static int
tbl_python_column(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int col)
{
	struct tbl_python_cursor *cur = (struct tbl_python_cursor *)base;
	struct tbl_python_vtab *vt = (struct tbl_python_vtab *)base->pVtab;
	const struct tbl_python_val *v;
	int c = col < vt->cols.n ? cur->map[col] : -1;

	if (c < 0) {
		sqlite3_result_null(ctx);
		return SQLITE_OK;
	}
	v = &cur->snap->cells[cur->row * (size_t)cur->snap->ncols + (size_t)c];
	switch (v->type) {
	case TP_NULL:
		sqlite3_result_null(ctx);
		break;
	case TP_INT:
		if (vt->cols.types[col] == TP_REAL)
			sqlite3_result_double(ctx, (double)v->u.i);
		else
			sqlite3_result_int64(ctx, v->u.i);
		break;
	case TP_REAL:
		sqlite3_result_double(ctx, v->u.d);
		break;
	case TP_TEXT:
		sqlite3_result_text64(
		    ctx, v->u.s.p, v->u.s.n, SQLITE_TRANSIENT, SQLITE_UTF8);
		break;
	case TP_BLOB:
		sqlite3_result_blob64(
		    ctx, v->u.s.p, v->u.s.n, SQLITE_TRANSIENT);
		break;
	}
	return SQLITE_OK;
}

static int
tbl_python_rowid(sqlite3_vtab_cursor *base, sqlite3_int64 *rowid)
{
	*rowid = (sqlite3_int64)((struct tbl_python_cursor *)base)->row + 1;
	return SQLITE_OK;
}

static const sqlite3_module tbl_python_module = {
	.iVersion = 0,
	.xCreate = tbl_python_connect,
	.xConnect = tbl_python_connect,
	.xBestIndex = tbl_python_best_index,
	.xDisconnect = tbl_python_disconnect,
	.xDestroy = tbl_python_disconnect,
	.xOpen = tbl_python_open,
	.xClose = tbl_python_close,
	.xFilter = tbl_python_filter,
	.xNext = tbl_python_next,
	.xEof = tbl_python_eof,
	.xColumn = tbl_python_column,
	.xRowid = tbl_python_rowid,
};

/* Store lock held: drops the SQLite table of an untabled entry. */
static int
tbl_python_drop(sqlite3 *db, struct tbl_python *t, char **cause)
{
	char *sql;
	int rc;

	if (t->decl == NULL)
		return 0;
	sql = sqlite3_mprintf("DROP TABLE python.\"%w\"", t->name);
	if (sql == NULL) {
		cause_set(cause, "out of memory");
		return -1;
	}
	rc = store_exec_internal(db, sql, cause);
	sqlite3_free(sql);
	if (rc != 0)
		return -1;
	sqlite3_free(t->decl);
	t->decl = NULL;
	tbl_python_cols_clear(&t->cols);
	return 0;
}

/* Refreshes one table; 0, or -1 with *cause when the query must fail. */
static int
tbl_python_refresh_one(
    sqlite3 *db, struct tbl_python *t, int named, int timeout_ms, char **cause)
{
	struct tbl_python_snap *s;
	struct tbl_python_cols cols;
	char *ignored = NULL;
	unsigned version;

	pthread_mutex_lock(&tbl_python_lock);
	version = t->version;
	pthread_mutex_unlock(&tbl_python_lock);
	if (!named && t->decl != NULL && t->made_version == version)
		return 0;
	/* Only listed, a table is called to learn its columns; an error
	 * then leaves it out of the list. */
	s = tbl_python_fetch(t, timeout_ms, named ? cause : &ignored);
	if (s == NULL) {
		free(ignored);
		return named ? -1 : 0;
	}
	if (tbl_python_cols_make(s, NULL, 0, &cols) != 0) {
		cause_set(cause, "out of memory");
		tbl_python_snap_unref(s);
		return -1;
	}
	if (tbl_python_make(db, t, &cols, version, named ? cause : &ignored) !=
	    0) {
		free(ignored);
		tbl_python_snap_unref(s);
		return named ? -1 : 0;
	}
	if (named) {
		tbl_python_snap_unref(t->snap);
		t->snap = s;
		t->gen = tbl_python_gen;
	} else
		tbl_python_snap_unref(s);
	return 0;
}

int
tbl_python_refresh(sqlite3 *db, const char *sql, int timeout_ms, char **cause)
{
	struct tbl_python *t, *head;
	int listing, named, removed;

	tbl_python_gen++;
	pthread_mutex_lock(&tbl_python_lock);
	head = tbl_python_list;
	pthread_mutex_unlock(&tbl_python_lock);
	if (head == NULL)
		return 0;
	if (!tbl_python_module_ok) {
		if (sqlite3_create_module_v2(db, TBL_PYTHON_MODULE,
			&tbl_python_module, NULL, NULL) != SQLITE_OK) {
			cause_set(cause, "cannot add python tables: %s",
			    sqlite3_errmsg(db));
			return -1;
		}
		tbl_python_module_ok = 1;
	}
	listing = tbl_python_lists_tables(sql);
	for (t = head; t != NULL; t = t->next) {
		/* Last query's rows are not needed any more. */
		tbl_python_snap_unref(t->snap);
		t->snap = NULL;
		pthread_mutex_lock(&tbl_python_lock);
		removed = t->removed;
		pthread_mutex_unlock(&tbl_python_lock);
		if (removed) {
			if (tbl_python_drop(db, t, cause) != 0)
				return -1;
			continue;
		}
		named = tbl_python_mentions(sql, t->name);
		if (!named && !listing)
			continue;
		if (tbl_python_refresh_one(db, t, named, timeout_ms, cause) !=
		    0)
			return -1;
	}
	return 0;
}
