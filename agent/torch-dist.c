/* python.collectives: C wrappers on the torch.distributed functions, one
 * row per collective or point-to-point call this rank issues from Python.
 *
 * Each wrapped name in torch.distributed and in its distributed_c10d
 * module is replaced by a callable of ours that keeps the original (as
 * __wrapped__, and every other attribute read through to it), writes a
 * "running" row, calls the original and rewrites the row with its
 * duration and "done", "failed" or, for async_op / isend / irecv, "issued"
 * (the work was queued; its end is not watched). Only the outermost call
 * is recorded (all_gather_object calls all_gather inside). seq is the
 * group's own sequence number where torch keeps one (the same on every
 * rank), else a count of our own. Code that bound a function before the
 * wrappers went in (`from torch.distributed import all_reduce`) and
 * collectives issued from C++ (DDP's reducer) are not seen here.
 *
 * init_process_group is wrapped too: once it returns, this rank's
 * endpoint is published in the job's store (job-store.c); so it is when
 * the wrappers go in after it, or at the first collective when they went
 * in while it ran.
 *
 * Threads: everything runs under the GIL; rows go through the ring's lock. */
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <Python.h>

#include "agent.h"
#include "clock.h"
#include "log.h"
#include "torch.h"

/* What a wrapped function takes: where its tensor (or list of tensors)
 * and its group are among the positional arguments (-1: none). */
struct torch_dist_op {
	const char *name;
	int tensor_pos;
	int group_pos;
	int async; /* always asynchronous (isend, irecv) */
	int init;  /* init_process_group */
};

static const struct torch_dist_op torch_dist_ops[] = {
	{ "all_reduce", 0, 2, 0, 0 },
	{ "broadcast", 0, 2, 0, 0 },
	{ "reduce", 0, 3, 0, 0 },
	{ "all_gather", 1, 2, 0, 0 },
	{ "all_gather_into_tensor", 1, 2, 0, 0 },
	{ "_all_gather_base", 1, 2, 0, 0 },
	{ "gather", 0, 3, 0, 0 },
	{ "scatter", 0, 3, 0, 0 },
	{ "reduce_scatter", 0, 3, 0, 0 },
	{ "reduce_scatter_tensor", 1, 3, 0, 0 },
	{ "_reduce_scatter_base", 1, 3, 0, 0 },
	{ "all_to_all", 1, 2, 0, 0 },
	{ "all_to_all_single", 1, 4, 0, 0 },
	{ "barrier", -1, 0, 0, 0 },
	{ "monitored_barrier", -1, 0, 0, 0 },
	{ "send", 0, 2, 0, 0 },
	{ "recv", 0, 2, 0, 0 },
	{ "isend", 0, 2, 1, 0 },
	{ "irecv", 0, 2, 1, 0 },
	{ "all_gather_object", -1, 2, 0, 0 },
	{ "broadcast_object_list", -1, 2, 0, 0 },
	{ "gather_object", -1, 3, 0, 0 },
	{ "scatter_object_list", -1, 3, 0, 0 },
	{ "init_process_group", -1, -1, 0, 1 },
};
#define TORCH_DIST_NOPS (sizeof torch_dist_ops / sizeof torch_dist_ops[0])

/* The wrapper object: owns a reference to the original. */
struct torch_dist_fn {
	PyObject_HEAD vectorcallfunc vectorcall;
	PyObject *orig;
	const struct torch_dist_op *op;
};

static PyTypeObject torch_dist_fn_type;

static struct {
	PyObject *c10d; /* torch.distributed.distributed_c10d */
	PyObject *dist; /* torch.distributed */
	PyObject *s_tensor, *s_group, *s_async, *s_numel, *s_esize, *s_dtype,
	    *s_size, *s_seq, *s_default, *s_names, *s_world, *s_pgnames,
	    *s_rank;
	int installed;
	int published;   /* a publication was started */
	int64_t own_seq; /* for groups without a sequence number */
	PyObject *dtype; /* the last tensor's dtype, and its name */
	const char *dtype_name;
} torch_dist;

/* What never changes for a group (its name, size and this rank in it),
 * kept for the last group seen: [0] the call's, [1] the default one. Held
 * by a weak reference: a strong one would keep a destroyed group's
 * sockets open. GIL. */
static struct torch_dist_pg {
	PyObject *ref; /* weakref to the group, or NULL */
	const char *name;
	long size, rank;
} torch_dist_pgs[2];

static __thread int torch_dist_depth;
static __thread long torch_dist_tid;

/* The argument called name or at position pos; borrowed or NULL. */
static PyObject *
torch_dist_arg(PyObject *const *args, size_t nargs, PyObject *kwnames, int pos,
    PyObject *sname)
{
	Py_ssize_t i, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

	if (pos >= 0 && (size_t)pos < nargs)
		return args[pos];
	for (i = 0; i < nkw; i++) {
		if (PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, i), sname) == 0)
			return args[nargs + (size_t)i];
	}
	return NULL;
}

/* numel, bytes and dtype of a tensor or a list of them. */
static void
torch_dist_tensor(PyObject *t, struct collectives_rec *rec)
{
	PyObject *items = NULL, *n, *e, *d, *ds;
	Py_ssize_t i, count = 1;

	if (t == NULL || t == Py_None)
		return;
	if (PyList_Check(t) || PyTuple_Check(t)) {
		items = PySequence_Fast(t, "");
		if (items == NULL) {
			PyErr_Clear();
			return;
		}
		count = PySequence_Fast_GET_SIZE(items);
	}
	for (i = 0; i < count; i++) {
		PyObject *x = items ? PySequence_Fast_GET_ITEM(items, i) : t;

		if (x == NULL || Py_TYPE(x) != torch_st.tensor_type)
			continue;
		n = PyObject_CallMethodNoArgs(x, torch_dist.s_numel);
		e = PyObject_CallMethodNoArgs(x, torch_dist.s_esize);
		if (n != NULL && e != NULL) {
			long long nn = PyLong_AsLongLong(n);

			rec->numel += nn;
			rec->bytes += nn * PyLong_AsLongLong(e);
		}
		Py_XDECREF(n);
		Py_XDECREF(e);
		if (rec->dtype == NULL &&
		    (d = PyObject_GetAttr(x, torch_dist.s_dtype)) != NULL) {
			/* torch's dtypes live as long as torch: the last one's
			 * name is kept with a reference to it */
			if (d != torch_dist.dtype) {
				ds = PyObject_Str(d);
				if (ds != NULL &&
				    PyUnicode_AsUTF8(ds) != NULL) {
					Py_XSETREF(
					    torch_dist.dtype, Py_NewRef(d));
					torch_dist.dtype_name =
					    torch_intern(PyUnicode_AsUTF8(ds));
				}
				Py_XDECREF(ds);
			}
			if (d == torch_dist.dtype)
				rec->dtype = torch_dist.dtype_name;
			Py_DECREF(d);
		}
		PyErr_Clear();
	}
	Py_XDECREF(items);
}

/* The group's name from torch's table of names (1.13: _pg_names, 2.x:
 * _world.pg_names), interned; NULL when unknown. */
static const char *
torch_dist_group_name(PyObject *pg)
{
	PyObject *names = PyObject_GetAttr(torch_dist.c10d, torch_dist.s_names);
	PyObject *world, *v, *s;
	const char *r = NULL;

	if (names == NULL) {
		PyErr_Clear();
		world = PyObject_GetAttr(torch_dist.c10d, torch_dist.s_world);
		names = world != NULL
		    ? PyObject_GetAttr(world, torch_dist.s_pgnames)
		    : NULL;
		Py_XDECREF(world);
	}
	v = names != NULL && PyDict_Check(names) ? PyDict_GetItem(names, pg)
						 : NULL;
	s = v != NULL ? PyObject_Str(v) : NULL;
	if (s != NULL && PyUnicode_AsUTF8(s) != NULL)
		r = torch_intern(PyUnicode_AsUTF8(s));
	Py_XDECREF(s);
	Py_XDECREF(names);
	PyErr_Clear();
	return r;
}

/* The group's sequence number, or -1. */
static int64_t
torch_dist_seq(PyObject *pg)
{
	PyObject *v = PyObject_CallMethodNoArgs(pg, torch_dist.s_seq);
	int64_t r = v != NULL ? PyLong_AsLongLong(v) : -1;

	Py_XDECREF(v);
	PyErr_Clear();
	return r;
}

static long
torch_dist_call_long(PyObject *obj, PyObject *name)
{
	PyObject *v = PyObject_CallMethodNoArgs(obj, name);
	long r = v != NULL ? PyLong_AsLong(v) : -1;

	Py_XDECREF(v);
	PyErr_Clear();
	return r;
}

/* The caller's file:line, interned. */
static const char *
torch_dist_site(void)
{
	PyFrameObject *f = PyEval_GetFrame();
	PyCodeObject *code;
	const char *file;
	char buf[1024];

	if (f == NULL)
		return NULL;
	code = PyFrame_GetCode(f);
	file = PyUnicode_AsUTF8(code->co_filename);
	snprintf(buf, sizeof buf, "%s:%d", file ? file : "?",
	    PyFrame_GetLineNumber(f));
	Py_DECREF(code);
	PyErr_Clear();
	return torch_intern(buf);
}

/* Whether c was filled for pg, which is alive. */
static int
torch_dist_pg_is(const struct torch_dist_pg *c, PyObject *pg)
{
	PyObject *o;
	int same;

	if (c->ref == NULL)
		return 0;
#if PY_VERSION_HEX >= 0x030D0000
	if (PyWeakref_GetRef(c->ref, &o) < 0) {
		PyErr_Clear();
		return 0;
	}
	same = o == pg;
	Py_XDECREF(o);
#else
	o = PyWeakref_GetObject(c->ref);
	same = o == pg;
#endif
	return same;
}

/* pg's name, size and this rank in it: asked of torch once per group. */
static const struct torch_dist_pg *
torch_dist_pg_facts(struct torch_dist_pg *c, PyObject *pg)
{
	const char *name;
	long size, rank;
	PyObject *ref;

	if (torch_dist_pg_is(c, pg))
		return c;
	name = torch_dist_group_name(pg);
	size = torch_dist_call_long(pg, torch_dist.s_size);
	rank = torch_dist_call_long(pg, torch_dist.s_rank);
	ref = PyWeakref_NewRef(pg, NULL);
	PyErr_Clear();
	Py_CLEAR(c->ref);
	c->ref = ref;
	c->name = name;
	c->size = size;
	c->rank = rank;
	return c;
}

/* Fills what is known before the call. */
static void
torch_dist_begin(const struct torch_dist_op *op, PyObject *const *args,
    size_t nargs, PyObject *kwnames, struct collectives_rec *rec)
{
	PyObject *pg = torch_dist_arg(
	    args, nargs, kwnames, op->group_pos, torch_dist.s_group);
	const struct torch_dist_pg *facts;
	PyObject *def = NULL;
	int64_t seq;

	if (pg == NULL || pg == Py_None) {
		def = PyObject_CallMethodNoArgs(
		    torch_dist.c10d, torch_dist.s_default);
		PyErr_Clear();
		pg = def;
	}
	memset(rec, 0, sizeof *rec);
	rec->op = op->name;
	rec->group_size = -1;
	rec->seq = -1;
	rec->rank = -1;
	if (pg != NULL && pg != Py_None) {
		facts = torch_dist_pg_facts(&torch_dist_pgs[0], pg);
		rec->group = facts->name;
		rec->group_size = facts->size;
		seq = torch_dist_seq(pg);
		rec->seq = seq >= 0 ? seq + 1 : ++torch_dist.own_seq;
	}
	if (def == NULL) {
		def = PyObject_CallMethodNoArgs(
		    torch_dist.c10d, torch_dist.s_default);
		PyErr_Clear();
	}
	if (def != NULL && def != Py_None)
		rec->rank = torch_dist_pg_facts(&torch_dist_pgs[1], def)->rank;
	Py_XDECREF(def);
	if (op->tensor_pos >= 0)
		torch_dist_tensor(torch_dist_arg(args, nargs, kwnames,
				      op->tensor_pos, torch_dist.s_tensor),
		    rec);
	rec->site = torch_dist_site();
	if (torch_dist_tid == 0)
		torch_dist_tid = (long)syscall(SYS_gettid);
	rec->thread_id = torch_dist_tid;
	rec->state = "running";
	rec->start = clock_wall();
}

static PyObject *
torch_dist_fn_call(
    PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
	struct torch_dist_fn *fn = (struct torch_dist_fn *)self;
	size_t nargs = PyVectorcall_NARGS(nargsf);
	struct collectives_rec rec;
	PyObject *r, *a;
	uint64_t id = 0;
	double t0;

	if (fn->op->init) {
		r = PyObject_Vectorcall(fn->orig, args, nargsf, kwnames);
		if (r != NULL && !torch_st.child) {
			torch_dist.published = 1;
			jobstore_publish_async();
		}
		return r;
	}
	if (torch_dist_depth > 0 || torch_st.child)
		return PyObject_Vectorcall(fn->orig, args, nargsf, kwnames);
	/* The group was made before the wrappers went in. */
	if (!torch_dist.published) {
		torch_dist.published = 1;
		jobstore_publish_async();
	}
	torch_dist_begin(fn->op, args, nargs, kwnames, &rec);
	id = ring_push(&tbl_collectives_ring, &rec);
	t0 = clock_ms();
	torch_dist_depth++;
	r = PyObject_Vectorcall(fn->orig, args, nargsf, kwnames);
	torch_dist_depth--;
	rec.duration = (clock_ms() - t0) / 1000.0;
	a = torch_dist_arg(args, nargs, kwnames, -1, torch_dist.s_async);
	if (r == NULL)
		rec.state = "failed";
	else if (fn->op->async || (a != NULL && PyObject_IsTrue(a) == 1))
		rec.state = "issued";
	else
		rec.state = "done";
	ring_update(&tbl_collectives_ring, id, &rec);
	return r;
}

static PyObject *
torch_dist_fn_getattro(PyObject *self, PyObject *name)
{
	struct torch_dist_fn *fn = (struct torch_dist_fn *)self;

	if (PyUnicode_CompareWithASCIIString(name, "__wrapped__") == 0)
		return Py_NewRef(fn->orig);
	return PyObject_GetAttr(fn->orig, name);
}

static PyObject *
torch_dist_fn_repr(PyObject *self)
{
	return PyObject_Repr(((struct torch_dist_fn *)self)->orig);
}

static void
torch_dist_fn_dealloc(PyObject *self)
{
	Py_XDECREF(((struct torch_dist_fn *)self)->orig);
	Py_TYPE(self)->tp_free(self);
}

static int
torch_dist_fn_ready(void)
{
	static int ready;

	if (ready)
		return 0;
	torch_dist_fn_type.tp_name = "probing.collective";
	torch_dist_fn_type.tp_basicsize = sizeof(struct torch_dist_fn);
	torch_dist_fn_type.tp_flags =
	    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL;
	torch_dist_fn_type.tp_vectorcall_offset =
	    offsetof(struct torch_dist_fn, vectorcall);
	torch_dist_fn_type.tp_call = PyVectorcall_Call;
	torch_dist_fn_type.tp_getattro = torch_dist_fn_getattro;
	torch_dist_fn_type.tp_repr = torch_dist_fn_repr;
	torch_dist_fn_type.tp_dealloc = torch_dist_fn_dealloc;
	if (PyType_Ready(&torch_dist_fn_type) != 0)
		return -1;
	ready = 1;
	return 0;
}

#define TORCH_DIST_STR(field, text)                                          \
	do {                                                                 \
		if (torch_dist.field == NULL &&                              \
		    (torch_dist.field = PyUnicode_InternFromString(text)) == \
			NULL)                                                \
			return -1;                                           \
	} while (0)

static int
torch_dist_strings(void)
{
	TORCH_DIST_STR(s_tensor, "tensor");
	TORCH_DIST_STR(s_group, "group");
	TORCH_DIST_STR(s_async, "async_op");
	TORCH_DIST_STR(s_numel, "numel");
	TORCH_DIST_STR(s_esize, "element_size");
	TORCH_DIST_STR(s_dtype, "dtype");
	TORCH_DIST_STR(s_size, "size");
	TORCH_DIST_STR(s_seq, "_get_sequence_number_for_group");
	TORCH_DIST_STR(s_default, "_get_default_group");
	TORCH_DIST_STR(s_names, "_pg_names");
	TORCH_DIST_STR(s_world, "_world");
	TORCH_DIST_STR(s_pgnames, "pg_names");
	TORCH_DIST_STR(s_rank, "rank");
	return 0;
}

/* Wraps op's function in mod (once; an attribute that is not there or is
 * ours already is left alone). */
static void
torch_dist_wrap(PyObject *mod, const struct torch_dist_op *op)
{
	PyObject *orig = PyObject_GetAttrString(mod, op->name);
	struct torch_dist_fn *fn;

	if (orig == NULL || Py_TYPE(orig) == &torch_dist_fn_type ||
	    !PyCallable_Check(orig)) {
		Py_XDECREF(orig);
		PyErr_Clear();
		return;
	}
	fn = PyObject_New(struct torch_dist_fn, &torch_dist_fn_type);
	if (fn == NULL) {
		Py_DECREF(orig);
		PyErr_Clear();
		return;
	}
	fn->vectorcall = torch_dist_fn_call;
	fn->orig = orig;
	fn->op = op;
	if (PyObject_SetAttrString(mod, op->name, (PyObject *)fn) != 0)
		PyErr_Clear();
	Py_DECREF(fn);
}

/* Puts the original back where our wrapper still is. */
static void
torch_dist_unwrap(PyObject *mod, const struct torch_dist_op *op)
{
	PyObject *cur = PyObject_GetAttrString(mod, op->name);

	if (cur != NULL && Py_TYPE(cur) == &torch_dist_fn_type &&
	    PyObject_SetAttrString(
		mod, op->name, ((struct torch_dist_fn *)cur)->orig) != 0)
		PyErr_Clear();
	Py_XDECREF(cur);
	PyErr_Clear();
}

int
torch_dist_install(void)
{
	PyObject *avail;
	size_t i;
	int initialized = 0;

	if (torch_dist.installed)
		return 0;
	if (torch_dist_fn_ready() != 0 || torch_dist_strings() != 0)
		goto fail;
	if (torch_dist.dist == NULL)
		torch_dist.dist = torch_getattr_path("torch.distributed", NULL);
	if (torch_dist.dist == NULL)
		goto fail;
	avail = PyObject_CallMethod(torch_dist.dist, "is_available", NULL);
	if (avail != Py_True) {
		Py_XDECREF(avail);
		PyErr_Clear();
		return 0;
	}
	Py_DECREF(avail);
	if (torch_dist.c10d == NULL)
		torch_dist.c10d =
		    PyObject_GetAttrString(torch_dist.dist, "distributed_c10d");
	if (torch_dist.c10d == NULL)
		goto fail;
	for (i = 0; i < TORCH_DIST_NOPS; i++) {
		torch_dist_wrap(torch_dist.dist, &torch_dist_ops[i]);
		torch_dist_wrap(torch_dist.c10d, &torch_dist_ops[i]);
	}
	torch_dist.installed = 1;
	avail = PyObject_CallMethod(torch_dist.dist, "is_initialized", NULL);
	initialized = avail == Py_True;
	Py_XDECREF(avail);
	PyErr_Clear();
	if (initialized) {
		torch_dist.published = 1;
		jobstore_publish_async();
	}
	log_info("torch: collectives wrapped (%zu functions)", TORCH_DIST_NOPS);
	return 0;
fail:
	torch_swallow("wrapping torch.distributed");
	PyErr_Clear();
	return -1;
}

void
torch_dist_uninstall(void)
{
	size_t i;

	if (!torch_dist.installed)
		return;
	for (i = 0; i < TORCH_DIST_NOPS; i++) {
		torch_dist_unwrap(torch_dist.dist, &torch_dist_ops[i]);
		torch_dist_unwrap(torch_dist.c10d, &torch_dist_ops[i]);
	}
	for (i = 0; i < 2; i++)
		Py_CLEAR(torch_dist_pgs[i].ref);
	torch_dist.installed = 0;
}
