/* libFuzzer harness: the client's HTTP response parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_response r;
	char *cause = NULL;
	int eof;

	for (eof = 0; eof <= 1; eof++) {
		if (proto_parse_response(
			(const char *)data, size, eof, 65536, &r, &cause) == 1)
			proto_response_clear(&r);
		free(cause);
		cause = NULL;
	}
	return 0;
}
