/* Unit tests for shared/proto.c: the HTTP response parser. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "unit.h"

static int
parse(const char *text, int eof, struct proto_response *r)
{
	char *cause = NULL;
	int rc = proto_parse_response(
	    text, strlen(text), eof, (size_t)1 << 20, r, &cause);

	free(cause);
	return rc;
}

int
main(void)
{
	struct proto_response r;
	const char *full = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
	const char *chunked = "HTTP/1.1 404 Not Found\r\ntransfer-encoding: "
			      "chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";

	CHECK(parse(full, 0, &r) == 1 && r.status == 200 &&
		strcmp(r.body, "hello") == 0 && r.body_len == 5,
	    "content-length");
	proto_response_clear(&r);
	CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", 0, &r) ==
		0,
	    "incomplete body waits");
	CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", 1, &r) ==
		-1,
	    "truncated body at eof");
	CHECK(parse("HTTP/1.1 200 OK\r\nContent-Le", 0, &r) == 0,
	    "incomplete header waits");
	CHECK(parse(chunked, 0, &r) == 1 && r.status == 404 &&
		strcmp(r.body, "abcde") == 0,
	    "chunked");
	proto_response_clear(&r);
	CHECK(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r"
		    "\nab",
		  0, &r) == 0,
	    "incomplete chunk waits");
	CHECK(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r"
		    "\n",
		  0, &r) == -1,
	    "bad chunk size");
	CHECK(parse("HTTP/1.0 200 OK\r\n\r\nrest", 1, &r) == 1 &&
		strcmp(r.body, "rest") == 0,
	    "body to eof");
	proto_response_clear(&r);
	CHECK(parse("SMTP 200\r\n\r\n", 1, &r) == -1, "not http");
	CHECK(parse("HTTP/1.1 2x0 OK\r\n\r\n", 1, &r) == -1, "bad status");
	CHECK(
	    parse("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 1, &r) == -1,
	    "negative length");
	CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n",
		  1, &r) == -1,
	    "huge length");
	CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n", 0,
		  &r) == -1,
	    "over the caller's maximum");
	CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", 0, &r) ==
		    0 &&
		r.need == 47,
	    "headers say how much is needed");
	CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabHTTP", 0,
		  &r) == 1 &&
		r.used == 40 && !r.close,
	    "one response of several");
	proto_response_clear(&r);
	CHECK(parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: "
		    "0\r\n\r\n",
		  0, &r) == 1 &&
		r.close,
	    "connection: close");
	proto_response_clear(&r);
	return unit_summary();
}
