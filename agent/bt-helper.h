/* The messages between the agent (bt-native.c) and its unwinding helper
 * (agent/helper/), one per SOCK_SEQPACKET datagram, both sides on the same
 * machine and build.
 *
 * A capture: BTH_BEGIN (with where CPython keeps its frames; the helper
 * rereads the target's mappings) -> BTH_READY; then BTH_CAPTURE naming
 * the threads, and for each, in order, one BTH_RESULT: the helper held it,
 * copied its Python frame chain and unwound its native stack in that one
 * stop, and resumed it. The agent decodes the Python frames afterwards
 * (bt-python.c), so the stop never waits for an agent thread to be
 * scheduled. A helper that ends a reply with BTH_F_EXITING exits after
 * sending it (it could not let go of a thread cleanly any other way). */
#ifndef PROBING_BT_HELPER_H
#define PROBING_BT_HELPER_H

#include <stdint.h>

#define BTH_NATIVE_MAX  128  /* native frames per thread */
#define BTH_PY_MAX      1024 /* Python frames per thread */
#define BTH_TARGETS_MAX 4096 /* threads per BTH_CAPTURE */
#define BTH_NOTE_MAX    160
#define BTH_FD          3   /* the helper's end of the socket */
#define BTH_STOP_MS     500 /* longest wait for a thread to stop */
#define BTH_D_MS        10  /* longest wait for a thread to leave state D */

enum bth_op { BTH_BEGIN = 1, BTH_CAPTURE };
enum bth_kind { BTH_READY = 1, BTH_RESULT };
#define BTH_F_EXITING 1

/* Byte offsets in CPython's structures, -1 when the field does not exist
 * in this version; the frame chain is tstate -> [cframe ->] frame ->
 * previous ... */
struct bth_layout {
	int32_t ts_tid;         /* PyThreadState.native_thread_id */
	int32_t ts_cframe;      /* PyThreadState.cframe (3.11, 3.12) */
	int32_t cframe_current; /* _PyCFrame.current_frame */
	int32_t ts_current;     /* PyThreadState.current_frame (3.13+) */
	int32_t f_previous, f_code, f_instr, f_owner, f_is_entry;
	int32_t pad;
	uint64_t code_mask; /* bits of f_code that address the code object */
};

struct bth_begin {
	int32_t op;
	int32_t pad;
	struct bth_layout layout;
};

struct bth_target {
	int64_t tid;
	uint64_t tstate; /* its PyThreadState, 0 when it has none */
};

/* Sent with only its first n targets. */
struct bth_capture {
	int32_t op;
	int32_t n;
	struct bth_target t[BTH_TARGETS_MAX];
};

/* One Python frame as it was in the held thread. */
struct bth_pyframe {
	uint64_t code, instr;
	uint8_t owner, is_entry;
	uint8_t pad[6];
};

/* Followed in the same datagram by nips uint64_t return addresses
 * (innermost first) and then npy struct bth_pyframe (innermost first). */
struct bth_rep {
	int32_t kind;
	int32_t tid;
	int32_t flags;
	int32_t nips; /* -1: no native frames, note says why */
	int32_t npy;  /* -1: the frames were not copied */
	int32_t pad;
	double stop_us; /* how long the thread was held; < 0: not stopped */
	char note[BTH_NOTE_MAX];
};

#define BTH_REP_MAX                                                   \
	(sizeof(struct bth_rep) + sizeof(uint64_t) * BTH_NATIVE_MAX + \
	    sizeof(struct bth_pyframe) * BTH_PY_MAX)

#endif
