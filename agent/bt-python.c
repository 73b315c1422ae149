/* Python frames of any thread of this process, read through
 * process_vm_readv on our own pid, so that a bad pointer is an error for
 * that thread, never a crash; no GIL needed.
 *
 * Two steps: bt_py_snap copies a thread's frame chain (code object and
 * instruction of each frame) without allocating or locking, so it can run
 * while that thread is held stopped, and the copy is one consistent moment;
 * bt_py_decode turns the copies into names and lines afterwards, caching
 * decoded code objects for the capture. The layouts are CPython's own
 * (pycore_frame.h), 3.11 to 3.15. */
#define Py_BUILD_CORE 1
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <Python.h>
#include <internal/pycore_runtime.h>
#include <internal/pycore_interp.h>
#include <internal/pycore_frame.h>
#if PY_VERSION_HEX >= 0x030E0000
#include <internal/pycore_interpframe_structs.h>
#endif

#include "agent.h"
#include "bt-helper.h"

#define BT_STR_MAX    1024 /* characters of a name or file kept */
#define BT_CODE_CACHE 512  /* code objects decoded once per capture */
#define BT_TSTATE_MAX 4096 /* thread states indexed per interpreter */

/* A decoded code object, valid for one capture. */
struct bt_code {
	uintptr_t addr;
	char *func, *file;
	unsigned char *table;
	size_t tablelen;
	int firstlineno, firsttraceable;
};

/* One capture's reader; owned by the capturing thread. */
struct bt_py {
	int read_pipe[2]; /* fallback reader when process_vm_readv is denied */
	struct bt_code codes[BT_CODE_CACHE];
	int ncodes;
	long *tids; /* native thread id of tstates[i] */
	uintptr_t *tstates;
	int ntstates;
};

/* Reads n bytes at remote address src of our own process into dst; returns
 * 0, or -1 when any byte cannot be read. Never faults, never allocates. */
static int
bt_read(struct bt_py *r, void *dst, uintptr_t src, size_t n)
{
	static int use_pipe;
	struct iovec local = { dst, n }, remote = { (void *)src, n };
	ssize_t got;

	if (src == 0 || n == 0)
		return src == 0 ? -1 : 0;
	if (!use_pipe) {
		got = process_vm_readv(agent_pid, &local, 1, &remote, 1, 0);
		if (got == (ssize_t)n)
			return 0;
		if (got >= 0 || (errno != ENOSYS && errno != EPERM))
			return -1;
		use_pipe = 1;
	}
	/* write(2) from a bad address fails with EFAULT instead of faulting;
	 * chunks stay below the pipe's capacity. */
	if (r->read_pipe[0] < 0 && pipe2(r->read_pipe, O_CLOEXEC) != 0)
		return -1;
	while (n > 0) {
		size_t chunk = n > 4096 ? 4096 : n;

		if (write(r->read_pipe[1], (void *)src, chunk) !=
		    (ssize_t)chunk)
			return -1;
		if (read(r->read_pipe[0], dst, chunk) != (ssize_t)chunk)
			return -1;
		dst = (char *)dst + chunk;
		src += chunk;
		n -= chunk;
	}
	return 0;
}
/* Appends code point c to the UTF-8 buffer out (of size cap) at *len. */
static void
bt_utf8_put(char *out, size_t cap, size_t *len, uint32_t c)
{
	char b[4];
	size_t n;

	if (c < 0x80) {
		b[0] = (char)c;
		n = 1;
	} else if (c < 0x800) {
		b[0] = (char)(0xc0 | (c >> 6));
		b[1] = (char)(0x80 | (c & 0x3f));
		n = 2;
	} else if (c < 0x10000) {
		if (c >= 0xd800 && c <= 0xdfff)
			c = 0xfffd; /* lone surrogate */
		b[0] = (char)(0xe0 | (c >> 12));
		b[1] = (char)(0x80 | ((c >> 6) & 0x3f));
		b[2] = (char)(0x80 | (c & 0x3f));
		n = 3;
	} else {
		if (c > 0x10ffff)
			c = 0xfffd;
		b[0] = (char)(0xf0 | (c >> 18));
		b[1] = (char)(0x80 | ((c >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((c >> 6) & 0x3f));
		b[3] = (char)(0x80 | (c & 0x3f));
		n = 4;
	}
	if (*len + n < cap) {
		memcpy(out + *len, b, n);
		*len += n;
	}
}

/* Reads the str object at addr as malloc'd UTF-8; NULL if unreadable. */
static char *
bt_read_str(struct bt_py *w, uintptr_t addr)
{
	PyCompactUnicodeObject u;
	PyTypeObject *type;
	uintptr_t data;
	size_t len, kind, i, outlen = 0, cap;
	unsigned char *raw = NULL;
	char *out;
	uint32_t c;

	if (bt_read(w, &u, addr, sizeof u) != 0)
		return NULL;
	type = Py_TYPE((PyObject *)&u);
	if (type != &PyUnicode_Type)
		return NULL;
	len = (size_t)u._base.length;
	if (len > BT_STR_MAX)
		len = BT_STR_MAX;
	kind = u._base.state.kind;
	if (kind != 1 && kind != 2 && kind != 4)
		return NULL;
	if (u._base.state.compact && u._base.state.ascii)
		data = addr + sizeof(PyASCIIObject);
	else if (u._base.state.compact)
		data = addr + sizeof(PyCompactUnicodeObject);
	else if (bt_read(w, &data, addr + offsetof(PyUnicodeObject, data.any),
		     sizeof data) != 0)
		return NULL;
	raw = malloc(len * kind + 1);
	cap = len * 4 + 1;
	out = malloc(cap);
	if (raw == NULL || out == NULL || bt_read(w, raw, data, len * kind)) {
		free(raw);
		free(out);
		return NULL;
	}
	for (i = 0; i < len; i++) {
		if (kind == 1)
			c = raw[i];
		else if (kind == 2)
			c = ((uint16_t *)(void *)raw)[i];
		else
			c = ((uint32_t *)(void *)raw)[i];
		bt_utf8_put(out, cap, &outlen, c);
	}
	out[outlen] = '\0';
	free(raw);
	return out;
}

/* Reads the bytes object at addr; returns a malloc'd copy or NULL. */
static unsigned char *
bt_read_bytes(struct bt_py *w, uintptr_t addr, size_t *len)
{
	PyBytesObject b;
	unsigned char *out;

	if (bt_read(w, &b, addr, offsetof(PyBytesObject, ob_sval)) != 0 ||
	    Py_TYPE((PyObject *)&b) != &PyBytes_Type || Py_SIZE(&b) < 0 ||
	    Py_SIZE(&b) > (1 << 24))
		return NULL;
	*len = (size_t)Py_SIZE(&b);
	out = malloc(*len + 1);
	if (out == NULL ||
	    bt_read(w, out, addr + offsetof(PyBytesObject, ob_sval), *len)) {
		free(out);
		return NULL;
	}
	return out;
}

/* Location table decoding (3.11+: InternalDocs/locations.md), reading
 * only inside [p, end). */
static unsigned int
bt_varint(const unsigned char **p, const unsigned char *end)
{
	unsigned int v = 0, shift = 0, b;

	do {
		if (*p >= end || shift > 28)
			return v;
		b = *(*p)++;
		v |= (b & 63) << shift;
		shift += 6;
	} while (b & 64);
	return v;
}

static int
bt_svarint(const unsigned char **p, const unsigned char *end)
{
	unsigned int u = bt_varint(p, end);

	return (u & 1) ? -(int)(u >> 1) : (int)(u >> 1);
}

/* The line of the instruction at byte offset addrq, or 0 if it has none:
 * what PyCode_Addr2Line computes, done on a copy of co_linetable. */
static int
bt_addr2line(const struct bt_code *c, int addrq)
{
	const unsigned char *p = c->table, *end = c->table + c->tablelen;
	const unsigned char *q;
	int line = c->firstlineno, start = 0, stop, code, delta;

	if (addrq < 0)
		return c->firstlineno;
	while (p < end) {
		code = (*p >> 3) & 15;
		stop = start + ((*p & 7) + 1) * (int)sizeof(_Py_CODEUNIT);
		q = p + 1;
		switch (code) {
		case 13: /* no column */
		case 14: /* long form */
			delta = bt_svarint(&q, end);
			break;
		case 11:
		case 12:
			delta = code - 10;
			break;
		default: /* 15 no location, 10 and short forms: same line */
			delta = 0;
			break;
		}
		line += delta;
		if (addrq >= start && addrq < stop)
			return code == 15 ? 0 : line;
		start = stop;
		do
			p++;
		while (p < end && (*p & 128) == 0);
	}
	return 0;
}

/* The decoded code object at addr, from the cache or read now. */
static struct bt_code *
bt_code_get(struct bt_py *w, uintptr_t addr)
{
	PyCodeObject co;
	struct bt_code *c;
	int i;

	for (i = 0; i < w->ncodes; i++)
		if (w->codes[i].addr == addr)
			return &w->codes[i];
	if (bt_read(w, &co, addr, sizeof co) != 0 ||
	    Py_TYPE((PyObject *)&co) != &PyCode_Type)
		return NULL;
	if (w->ncodes == BT_CODE_CACHE) {
		/* Full: reuse the oldest entry (rare, deep varied stacks). */
		free(w->codes[0].func);
		free(w->codes[0].file);
		free(w->codes[0].table);
		memmove(&w->codes[0], &w->codes[1],
		    sizeof w->codes[0] * (BT_CODE_CACHE - 1));
		w->ncodes--;
	}
	c = &w->codes[w->ncodes];
	memset(c, 0, sizeof *c);
	c->addr = addr;
	c->func = bt_read_str(w, (uintptr_t)co.co_qualname);
	if (c->func == NULL)
		c->func = bt_read_str(w, (uintptr_t)co.co_name);
	c->file = bt_read_str(w, (uintptr_t)co.co_filename);
	c->table = bt_read_bytes(w, (uintptr_t)co.co_linetable, &c->tablelen);
	c->firstlineno = co.co_firstlineno;
	c->firsttraceable = co._co_firsttraceable;
	if (c->func == NULL || c->file == NULL) {
		free(c->func);
		free(c->file);
		free(c->table);
		return NULL;
	}
	w->ncodes++;
	return c;
}

struct bt_py *
bt_py_new(void)
{
	struct bt_py *r = calloc(1, sizeof *r);

	if (r != NULL)
		r->read_pipe[0] = r->read_pipe[1] = -1;
	return r;
}

void
bt_py_free(struct bt_py *r)
{
	int i;

	if (r == NULL)
		return;
	for (i = 0; i < r->ncodes; i++) {
		free(r->codes[i].func);
		free(r->codes[i].file);
		free(r->codes[i].table);
	}
	if (r->read_pipe[0] >= 0) {
		close(r->read_pipe[0]);
		close(r->read_pipe[1]);
	}
	free(r->tids);
	free(r->tstates);
	free(r);
}

/* Appends one thread state to the index; -1 when out of memory. */
static int
bt_py_index_add(struct bt_py *r, long tid, uintptr_t ts, int *cap)
{
	long *t;
	uintptr_t *s;

	if (r->ntstates == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		t = realloc(r->tids, sizeof *t * (size_t)*cap);
		if (t != NULL)
			r->tids = t;
		s = realloc(r->tstates, sizeof *s * (size_t)*cap);
		if (s != NULL)
			r->tstates = s;
		if (t == NULL || s == NULL)
			return -1;
	}
	r->tids[r->ntstates] = tid;
	r->tstates[r->ntstates++] = ts;
	return 0;
}

void
bt_py_index(struct bt_py *r)
{
	PyThreadState ts;
	uintptr_t ia, ta;
	int ni = 0, nt, cap = 0;

	r->ntstates = 0;
	if (py_layout_check(NULL) != 0)
		return; /* not laid out as built for: read nothing */
	if (bt_read(r, &ia, (uintptr_t)&_PyRuntime.interpreters.head,
		sizeof ia) != 0)
		return;
	/* An interpreter's two fields, not a copy of it: PyInterpreterState
	 * is 100 to 380 KB (3.12's the largest), too much for the stack of
	 * the thread that captures. */
	for (; ia != 0 && ni < 64; ni++) {
		if (bt_read(r, &ta,
			ia + offsetof(PyInterpreterState, threads.head),
			sizeof ta) != 0)
			return;
		nt = 0;
		for (; ta != 0 && nt < BT_TSTATE_MAX;
		     ta = (uintptr_t)ts.next, nt++) {
			if (bt_read(r, &ts, ta, sizeof ts) != 0)
				break;
			if (bt_py_index_add(
				r, (long)ts.native_thread_id, ta, &cap) != 0)
				return;
		}
		if (bt_read(r, &ia, ia + offsetof(PyInterpreterState, next),
			sizeof ia) != 0)
			return;
	}
}

/* The code object a frame runs and its instruction pointer: 3.13 renamed
 * both (instr_ptr is the current instruction, prev_instr the one before,
 * but _PyInterpreterFrame_LASTI computes the same index from each); 3.14
 * tags the low bits of the code reference. */
#if PY_VERSION_HEX >= 0x030E0000
#define BT_FRAME_CODE(f)  ((uintptr_t)(f).f_executable.bits & ~(uintptr_t)7)
#define BT_FRAME_INSTR(f) ((uintptr_t)(f).instr_ptr)
#elif PY_VERSION_HEX >= 0x030D0000
#define BT_FRAME_CODE(f)  ((uintptr_t)(f).f_executable)
#define BT_FRAME_INSTR(f) ((uintptr_t)(f).instr_ptr)
#else
#define BT_FRAME_CODE(f)  ((uintptr_t)(f).f_code)
#define BT_FRAME_INSTR(f) ((uintptr_t)(f).prev_instr)
#endif

/* The innermost frame of thread state ts (copied into our memory), or 0. */
static uintptr_t
bt_first_frame(struct bt_py *r, const PyThreadState *ts)
{
#if PY_VERSION_HEX >= 0x030D0000
	(void)r;
	return (uintptr_t)ts->current_frame;
#else
	_PyCFrame cf;

	if (bt_read(r, &cf, (uintptr_t)ts->cframe, sizeof cf) != 0)
		return 0;
	return (uintptr_t)cf.current_frame;
#endif
}

int
bt_py_snap(struct bt_py *r, long tid, struct bt_pyraw *raw, int max)
{
	PyThreadState ts;
	_PyInterpreterFrame f;
	uintptr_t fa, code0;
	int i, n = 0;

	for (i = 0; i < r->ntstates; i++)
		if (r->tids[i] == tid)
			break;
	if (i == r->ntstates || bt_read(r, &ts, r->tstates[i], sizeof ts) ||
	    (long)ts.native_thread_id != tid)
		return -1;
	for (fa = bt_first_frame(r, &ts); fa != 0 && n < max;
	     fa = (uintptr_t)f.previous) {
		if (bt_read(r, &f, fa, sizeof f) != 0)
			break;
#if PY_VERSION_HEX >= 0x030C0000
		/* Owned by the C stack or the interpreter (3.14 renamed it):
		 * the shim an eval call puts below its first frame. */
		if (f.owner > FRAME_OWNED_BY_FRAME_OBJECT) {
			if (n > 0)
				raw[n - 1].flags |= BT_PYRAW_ENTRY;
			continue;
		}
#endif
		code0 =
		    BT_FRAME_CODE(f) + offsetof(PyCodeObject, co_code_adaptive);
		raw[n].code = BT_FRAME_CODE(f);
		raw[n].lasti =
		    (int)(((intptr_t)BT_FRAME_INSTR(f) - (intptr_t)code0) /
			(intptr_t)sizeof(_Py_CODEUNIT));
		raw[n].flags = f.owner == FRAME_OWNED_BY_GENERATOR
		    ? BT_PYRAW_GENERATOR
		    : 0;
#if PY_VERSION_HEX < 0x030C0000
		if (f.is_entry)
			raw[n].flags |= BT_PYRAW_ENTRY;
#endif
		n++;
	}
	return n;
}

int
bt_py_decode(
    struct bt_py *r, const struct bt_pyraw *raw, int n, struct bt_pyframe *out)
{
	struct bt_code *c;
	int i, k = 0;

	for (i = 0; i < n; i++) {
		c = bt_code_get(r, raw[i].code);
		/* Skipped: freed since, or not a code object; or incomplete
		 * (not started yet). An entry mark moves to the frame before. */
		if (c == NULL ||
		    (!(raw[i].flags & BT_PYRAW_GENERATOR) &&
			raw[i].lasti < c->firsttraceable)) {
			if ((raw[i].flags & BT_PYRAW_ENTRY) && k > 0)
				out[k - 1].entry = 1;
			continue;
		}
		out[k].func = c->func;
		out[k].file = c->file;
		out[k].lineno = c->table != NULL
		    ? bt_addr2line(c, raw[i].lasti * (int)sizeof(_Py_CODEUNIT))
		    : 0;
		out[k].entry = (raw[i].flags & BT_PYRAW_ENTRY) != 0;
		k++;
	}
	return k;
}

uintptr_t
bt_py_tstate(struct bt_py *r, long tid)
{
	int i;

	for (i = 0; i < r->ntstates; i++)
		if (r->tids[i] == tid)
			return r->tstates[i];
	return 0;
}

void
bt_py_layout(struct bth_layout *l)
{
	memset(l, 0, sizeof *l);
	l->ts_tid = (int32_t)offsetof(PyThreadState, native_thread_id);
#if PY_VERSION_HEX >= 0x030D0000
	l->ts_cframe = -1;
	l->cframe_current = -1;
	l->ts_current = (int32_t)offsetof(PyThreadState, current_frame);
	l->f_code = (int32_t)offsetof(_PyInterpreterFrame, f_executable);
	l->f_instr = (int32_t)offsetof(_PyInterpreterFrame, instr_ptr);
#else
	l->ts_cframe = (int32_t)offsetof(PyThreadState, cframe);
	l->cframe_current = (int32_t)offsetof(_PyCFrame, current_frame);
	l->ts_current = -1;
	l->f_code = (int32_t)offsetof(_PyInterpreterFrame, f_code);
	l->f_instr = (int32_t)offsetof(_PyInterpreterFrame, prev_instr);
#endif
	l->f_previous = (int32_t)offsetof(_PyInterpreterFrame, previous);
	l->f_owner = (int32_t)offsetof(_PyInterpreterFrame, owner);
#if PY_VERSION_HEX < 0x030C0000
	l->f_is_entry = (int32_t)offsetof(_PyInterpreterFrame, is_entry);
#else
	l->f_is_entry = -1;
#endif
#if PY_VERSION_HEX >= 0x030E0000
	l->code_mask = ~(uint64_t)7; /* a tagged reference */
#else
	l->code_mask = ~(uint64_t)0;
#endif
}

int
bt_py_from_helper(
    const struct bth_pyframe *f, int n, struct bt_pyraw *raw, int max)
{
	uintptr_t code0;
	int i, k = 0;

	for (i = 0; i < n && k < max; i++) {
#if PY_VERSION_HEX >= 0x030C0000
		/* Owned by the C stack or the interpreter (3.14 renamed it):
		 * the shim an eval call puts below its first frame. */
		if (f[i].owner > FRAME_OWNED_BY_FRAME_OBJECT) {
			if (k > 0)
				raw[k - 1].flags |= BT_PYRAW_ENTRY;
			continue;
		}
#endif
		code0 = (uintptr_t)f[i].code +
		    offsetof(PyCodeObject, co_code_adaptive);
		raw[k].code = (uintptr_t)f[i].code;
		raw[k].lasti = (int)(((intptr_t)f[i].instr - (intptr_t)code0) /
		    (intptr_t)sizeof(_Py_CODEUNIT));
		raw[k].flags = f[i].owner == FRAME_OWNED_BY_GENERATOR
		    ? BT_PYRAW_GENERATOR
		    : 0;
		if (f[i].is_entry)
			raw[k].flags |= BT_PYRAW_ENTRY;
		k++;
	}
	return k;
}
