/* maps.c - read a process's /proc/PID/maps and tell libc and the loader apart */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "injector.h"

/* Classify a mapped file by its base name. */
static enum maps_kind
maps_kind(const char *path)
{
	const char *b = strrchr(path, '/');

	b = b != NULL ? b + 1 : path;
	if (strncmp(b, "libc.so", 7) == 0 || strncmp(b, "ld-musl-", 8) == 0 ||
	    (strncmp(b, "libc-", 5) == 0 && strstr(b, ".so") != NULL))
		return MAPS_LIBC;
	if (strncmp(b, "ld-", 3) == 0 && strstr(b, ".so") != NULL)
		return MAPS_LDSO;
	if (strncmp(b, "libdl.so", 8) == 0 ||
	    (strncmp(b, "libdl-", 6) == 0 && strstr(b, ".so") != NULL))
		return MAPS_LIBDL;
	return MAPS_OTHER;
}

/* Free a mapping list; an empty one is a no-op. */
void
maps_free(struct maps *maps)
{
	size_t i;

	for (i = 0; i < maps->n; i++)
		free(maps->v[i].path);
	free(maps->v);
	maps->v = NULL;
	maps->n = 0;
}

/* Parse one line of the maps file into m; returns 0, or -1 to skip it. */
static int
maps_parse(char *line, struct maps_entry *m)
{
	unsigned long long start, end, off, ino;
	unsigned dmaj, dmin;
	char perms[5], *p;
	int n, len;

	if (sscanf(line, "%llx-%llx %4s %llx %x:%x %llu %n", &start, &end,
		perms, &off, &dmaj, &dmin, &ino, &n) < 7)
		return -1;
	p = line + n;
	len = (int)strcspn(p, "\n");
	p[len] = '\0';
	memset(m, 0, sizeof *m);
	m->start = start;
	m->end = end;
	m->offset = off;
	m->inode = ino;
	memcpy(m->perms, perms, sizeof m->perms);
	if (len > 10 && strcmp(p + len - 10, " (deleted)") == 0) {
		p[len - 10] = '\0';
		m->deleted = 1;
	}
	m->path = p;
	return 0;
}

/* Read /proc/PID/maps into maps. Returns 0 or -1 with *cause set. */
int
maps_read(pid_t pid, struct maps *maps, char **cause)
{
	char fn[64], *line = NULL;
	struct maps_entry *m, *v;
	size_t cap = 0, alloc = 0;
	FILE *f;

	maps->v = NULL;
	maps->n = 0;
	snprintf(fn, sizeof fn, "/proc/%d/maps", (int)pid);
	f = fopen(fn, "re");
	if (f == NULL) {
		if (errno == ENOENT)
			cause_set(cause, "no such process: %d", (int)pid);
		else if (errno == EACCES || errno == EPERM)
			cause_set(cause, INJECTOR_EPERM, (int)pid);
		else
			cause_set(
			    cause, "cannot read %s: %s", fn, strerror(errno));
		return -1;
	}
	while (getline(&line, &cap, f) > 0) {
		if (maps->n == alloc) {
			alloc = alloc != 0 ? alloc * 2 : 64;
			v = realloc(maps->v, alloc * sizeof *v);
			if (v == NULL)
				goto nomem;
			maps->v = v;
		}
		m = &maps->v[maps->n];
		if (maps_parse(line, m) < 0)
			continue;
		m->path = strdup(m->path);
		if (m->path == NULL)
			goto nomem;
		maps->n++;
		if (m->path[0] == '/')
			m->kind = maps_kind(m->path);
	}
	if (ferror(f)) {
		cause_set(cause, "cannot read %s: %s", fn, strerror(errno));
		goto fail;
	}
	if (maps->n == 0) {
		cause_set(cause, "pid %d has exited", (int)pid);
		goto fail;
	}
	free(line);
	fclose(f);
	return 0;
nomem:
	cause_set(cause, "pid %d: out of memory", (int)pid);
fail:
	free(line);
	fclose(f);
	maps_free(maps);
	return -1;
}

/* Return the mapping that holds addr, or NULL. */
const struct maps_entry *
maps_find(const struct maps *maps, uint64_t addr)
{
	size_t lo = 0, hi = maps->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (addr < maps->v[mid].start)
			hi = mid;
		else if (addr >= maps->v[mid].end)
			lo = mid + 1;
		else
			return &maps->v[mid];
	}
	return NULL;
}

/* Return the first mapping of the given kind, or NULL. */
const struct maps_entry *
maps_first(const struct maps *maps, enum maps_kind kind)
{
	size_t i;

	for (i = 0; i < maps->n; i++) {
		if (maps->v[i].kind == kind)
			return &maps->v[i];
	}
	return NULL;
}
