/* The wire protocol: route names, limits and the HTTP response parser. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "proto.h"

/* Finds the end of the header block; returns the body offset or 0. */
static size_t
proto_header_end(const char *buf, size_t len)
{
	size_t i;

	for (i = 0; i + 3 < len; i++) {
		if (memcmp(buf + i, "\r\n\r\n", 4) == 0)
			return i + 4;
	}
	return 0;
}

/* Looks up header name in the block [buf, end); returns its value or NULL. */
static const char *
proto_header(const char *buf, const char *end, const char *name, size_t *vlen)
{
	size_t nlen = strlen(name);
	const char *line = memchr(buf, '\n', (size_t)(end - buf)), *eol;

	while (line != NULL && line + 1 < end) {
		line++;
		eol = memchr(line, '\n', (size_t)(end - line));
		if (eol == NULL)
			eol = end;
		if ((size_t)(eol - line) > nlen && line[nlen] == ':' &&
		    strncasecmp(line, name, nlen) == 0) {
			line += nlen + 1;
			while (line < eol && (*line == ' ' || *line == '\t'))
				line++;
			*vlen = (size_t)(eol - line);
			while (*vlen > 0 &&
			    isspace((unsigned char)line[*vlen - 1]))
				(*vlen)--;
			return line;
		}
		line = eol;
	}
	return NULL;
}

/* Decodes a chunked body; 1 done, 0 incomplete, -1 malformed. */
static int
proto_dechunk(
    const char *p, const char *end, struct proto_response *out, char **cause)
{
	char *body = NULL, *grown;
	size_t total = 0, size;
	const char *eol;
	char *num_end;

	for (;;) {
		eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			goto incomplete;
		if (!isxdigit((unsigned char)*p))
			goto bad;
		size = strtoul(p, &num_end, 16);
		if (num_end > eol || size > PROTO_MAX_ANSWER ||
		    total + size > PROTO_MAX_ANSWER)
			goto bad;
		p = eol + 1;
		if (size == 0)
			break;
		if ((size_t)(end - p) < size + 2)
			goto incomplete;
		grown = realloc(body, total + size + 1);
		if (grown == NULL)
			goto bad;
		body = grown;
		memcpy(body + total, p, size);
		total += size;
		p += size + 2;
	}
	if (body == NULL && (body = malloc(1)) == NULL)
		goto bad;
	body[total] = '\0';
	out->body = body;
	out->body_len = total;
	return 1;
incomplete:
	free(body);
	return 0;
bad:
	free(body);
	cause_set(cause, "malformed chunked body in http response");
	return -1;
}

int
proto_parse_response(const char *buf, size_t len, int eof, size_t max,
    struct proto_response *out, char **cause)
{
	const char *hend, *v;
	size_t off, vlen, clen;
	int status;

	memset(out, 0, sizeof *out);
	off = proto_header_end(buf, len);
	if (off == 0) {
		if (!eof)
			return 0;
		cause_set(cause, "truncated http response (%zu bytes)", len);
		return -1;
	}
	if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ' ||
	    !isdigit((unsigned char)buf[9]) ||
	    !isdigit((unsigned char)buf[10]) ||
	    !isdigit((unsigned char)buf[11])) {
		cause_set(cause, "malformed http status line");
		return -1;
	}
	status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	hend = buf + off;
	v = proto_header(buf, hend, "Connection", &vlen);
	out->close = v != NULL && vlen == 5 && strncasecmp(v, "close", 5) == 0;
	v = proto_header(buf, hend, "Transfer-Encoding", &vlen);
	if (v != NULL && vlen == 7 && strncasecmp(v, "chunked", 7) == 0) {
		int r;

		r = proto_dechunk(hend, buf + len, out, cause);
		if (r == 0 && eof) {
			cause_set(cause, "truncated chunked http response");
			return -1;
		}
		out->status = status;
		out->used = len;
		out->close = 1; /* what follows the chunks is not read */
		return r;
	}
	v = proto_header(buf, hend, "Content-Length", &vlen);
	if (v != NULL) {
		char *e;

		if (vlen == 0 || !isdigit((unsigned char)*v))
			goto bad_length;
		clen = strtoul(v, &e, 10);
		if (e != v + vlen)
			goto bad_length;
		if (clen > max) {
			cause_set(
			    cause, "answer larger than %zu MB", max >> 20);
			return -1;
		}
		if (len - off < clen) {
			out->need = off + clen;
			if (!eof)
				return 0;
			cause_set(cause, "truncated http response body");
			return -1;
		}
	} else {
		out->close = 1;
		if (!eof)
			return 0;
		clen = len - off;
		if (clen > max) {
			cause_set(
			    cause, "answer larger than %zu MB", max >> 20);
			return -1;
		}
	}
	out->body = malloc(clen + 1);
	if (out->body == NULL) {
		cause_set(cause, "out of memory reading response");
		return -1;
	}
	memcpy(out->body, hend, clen);
	out->body[clen] = '\0';
	out->body_len = clen;
	out->status = status;
	out->used = off + clen;
	return 1;
bad_length:
	cause_set(cause, "malformed content-length in http response");
	return -1;
}

void
proto_response_clear(struct proto_response *r)
{
	free(r->body);
	r->body = NULL;
	r->body_len = 0;
}
