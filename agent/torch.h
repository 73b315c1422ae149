/* Torch tracing: the interfaces between its files. Include <Python.h>
 * first.
 *
 * The files, each using only those listed before it (nothing calls back
 * up; the two upward events go through function pointers handed down):
 *   torch-core.c    state, clock, sampling, names of strings, rows, CUDA
 *   torch-bw.c      backward time from hooks on autograd nodes
 *   torch-fwd.c     the global module forward hooks and module names
 *   torch-optim.c   optimizer step hooks (global ones, or step wrapped)
 *   torch-finder.c  the import finder that notices `import torch`
 *   torch.c         install, remove, config and the setup thread
 *
 * Threads: every function here runs under the GIL (hooks are called by
 * torch with it held; setup runs on a py worker), which guards all the
 * state below, except where a field says otherwise. Rows reference
 * interned names that are never freed. */
#ifndef PROBING_TORCH_H
#define PROBING_TORCH_H

#include <stdint.h>

/* What is wanted and what is in place (torch-core.c). */
struct torch_state {
	int want;             /* tracing wanted (probing.torch.enabled) */
	int installed;        /* hooks in place */
	volatile int child;   /* set in a fork child before anything runs */
	volatile double rate; /* written by a request thread, read whole */
	int rank;             /* RANK of the process, 0 without one */
	PyTypeObject *tensor_type; /* torch.Tensor, once installed */
	uint64_t errors, rows;
};

/* The step clock (torch-core.c): optimizer steps completed (the outermost
 * of nested step calls); before any optimizer step is seen, completed
 * calls of the outermost module (the first one seen: the model, not the
 * loss called after it). */
struct torch_clock {
	int optim_mode;     /* an optimizer step was seen */
	int64_t opt_steps;  /* outermost optimizer steps completed */
	int64_t root_calls; /* calls of the clock module */
	PyObject *root;     /* weakref to the clock module */
	int64_t cur_step;   /* the step decided last */
	int64_t seq;        /* the next row's seq in cur_step */
	int cur_valid, cur_sampled;
	/* Called at every outermost module call when set (torch-optim.c on a
	 * torch without global optimizer hooks: rescan classes). */
	void (*on_root)(void);
};

extern struct torch_state torch_st;
extern struct torch_clock torch_clk;

/* torch-core.c */
double torch_now(void);
/* Python frames on this thread's stack. */
int torch_depth(void);
/* The Python frame running now: the same for the pre- and post-hook of
 * one module call (both called from its _call_impl frame); an identity,
 * never dereferenced by callers. */
const void *torch_frame(void);
/* Whether frame is a caller of the frame running now (still on the
 * stack); walks only as far as it, or the whole stack when it is not. */
int torch_frame_below(const void *frame);
/* The object weak reference wr points to, or NULL when it died; for
 * comparing identity only (no reference is kept). */
PyObject *torch_weak_target(PyObject *wr);
/* Clears a Python error raised inside our code, counting it and logging
 * the first ten; an error that is not an Exception (KeyboardInterrupt,
 * SystemExit) is the user's and stays set: then -1, else 0. */
int torch_swallow(const char *what);
/* A copy of s that lives as long as the process, or NULL. */
const char *torch_intern(const char *s);
/* module.attr (the module itself when attr is NULL), new ref or NULL. */
PyObject *torch_getattr_path(const char *module, const char *attr);
/* Finds the CUDA handles once torch is imported; never initializes CUDA. */
void torch_cuda_load(void);
/* Pushes one row into python.torch_trace for a call that ran from t0 to
 * t1 (torch_now). */
void torch_emit(int64_t step, int64_t seq, const char *name, const char *stage,
    double t0, double t1);
/* The step now. */
int64_t torch_step(void);
/* At every outermost module call m: runs on_root, and before any
 * optimizer step counts m's calls if m is the clock module (the first
 * outermost module seen, replaced when it dies). */
void torch_clock_reroot(PyObject *m);
void torch_clock_tick(PyObject *m);
/* Whether step is traced, decided once per step (numbering its rows from
 * 0): step s when ceil((s+1)*rate) > ceil(s*rate), i.e. exactly rate of
 * the steps, step 0 first, the same steps on every rank. */
int torch_sampled(int64_t step);

/* torch-bw.c */
int torch_bw_init(void);
/* Finds autograd's engine and makes the tensor that carries hooks to
 * nodes, once torch is imported (without them: the slower paths). */
void torch_bw_load(void);
/* After a traced forward of module name in step: hooks on the autograd
 * nodes of its output and first input that time its backward. */
void torch_bw_arm(
    const char *name, int64_t step, PyObject *input, PyObject *output);
/* Forgets the recently hooked nodes (a backward pass is over). */
void torch_bw_forget(void);
/* Drops pending end-of-backward rows (tracing goes off). */
void torch_bw_clear(void);

/* torch-fwd.c */
int torch_fwd_init(void);
/* Registers (on) or removes the forward hooks; 0 or -1 (error cleared). */
int torch_fwd_set(int on);
/* Module calls in flight on this thread. */
int torch_fwd_busy(void);

/* torch-optim.c */
int torch_optim_init(void);
/* Hooks optimizer steps; 0, or -1 with a Python error set. */
int torch_optim_install(void);
void torch_optim_uninstall(void);
/* Whether torch has global optimizer hooks (2.x) and they are used. */
int torch_optim_global(void);

/* torch-dist.c: python.collectives' wrappers on torch.distributed. */
int torch_dist_install(void);
void torch_dist_uninstall(void);

/* torch-finder.c */
int torch_finder_init(void);
/* Puts the finder at the front of sys.meta_path; on_import runs (under
 * the GIL, inside torch's import) once torch's module has executed.
 * 0, or -1 with *cause. */
int torch_finder_add(void (*on_import)(void), char **cause);
void torch_finder_remove(void);

#endif
