/* The messages between the agent (bt-native.c) and its unwinding helper
 * (agent/helper/), one per SOCK_SEQPACKET datagram, both sides on the same
 * machine and build.
 *
 * A capture: BTH_BEGIN (the helper rereads the target's mappings) ->
 * BTH_READY; then per thread BTH_STOP -> BTH_STOPPED (the thread is held:
 * the agent reads its Python frames) -> BTH_GO -> BTH_RESULT (resumed);
 * or BTH_STOP -> BTH_RESULT at once when the thread could not be stopped.
 * BTH_GO's tid names the next thread to stop (0: none), which saves the
 * round trip of its BTH_STOP: the helper goes on with it at once.
 * A helper that ends a reply with BTH_F_EXITING exits after sending it
 * (it could not let go of a thread cleanly any other way). */
#ifndef PROBING_BT_HELPER_H
#define PROBING_BT_HELPER_H

#include <stdint.h>

#define BTH_NATIVE_MAX 128 /* native frames per thread */
#define BTH_NOTE_MAX   160
#define BTH_FD         3   /* the helper's end of the socket */
#define BTH_STOP_MS    500 /* longest wait for a thread to stop */
#define BTH_D_MS       10  /* longest wait for a thread to leave state D */
#define BTH_GO_MS      500 /* longest a thread is held for the agent */

enum bth_op { BTH_BEGIN = 1, BTH_STOP, BTH_GO };
enum bth_kind { BTH_READY = 1, BTH_STOPPED, BTH_RESULT };
#define BTH_F_EXITING 1

struct bth_req {
	int32_t op;
	int32_t tid;
};

struct bth_rep {
	int32_t kind;
	int32_t tid;
	int32_t flags;
	int32_t nips;   /* -1: no native frames, note says why */
	double stop_us; /* how long the thread was held; < 0: not stopped */
	char note[BTH_NOTE_MAX];
	uint64_t ips[BTH_NATIVE_MAX]; /* innermost first */
};

#endif
