/* Remote unwinding for the helper: libunwind's remote interface over our
 * own accessors. Memory is read with process_vm_readv a page at a time
 * through a cache: pages of read-only file mappings (code, .eh_frame,
 * .eh_frame_hdr) stay cached while the mappings do not change, every other
 * page (stacks, heap) only for the thread stopped now. Unwind tables are
 * found from /proc/PID/maps and the ELF headers in the target's memory
 * (never through the loader, whose lock a stopped thread may hold). */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <libunwind.h>

#include "helper.h"

#define UW_PAGE     4096
#define UW_PAGES    2048 /* cached pages (8 MB) */
#define UW_MAPS_MAX (64 << 20)

/* Not in libunwind.h, exported by libunwind-x86_64: the binary search in
 * an .eh_frame_hdr table that the target holds. */
int _Ux86_64_dwarf_search_unwind_table(unw_addr_space_t, unw_word_t,
    unw_dyn_info_t *, unw_proc_info_t *, int, void *);

/* One line of /proc/PID/maps; path points into uw.maps_lines. */
struct uw_map {
	uint64_t start, end, off, inode;
	int writable, exec;
	const char *path;
	/* exec mappings: the unwind table, found on first use */
	int table_state; /* 0 unknown, 1 found, -1 none */
	uint64_t hdr, table, nfde;
};

struct uw_page {
	uint64_t page; /* address / UW_PAGE; 0 when empty */
	uint32_t gen;  /* 0: kept across stops */
};

static struct {
	pid_t pid;
	unw_addr_space_t as;
	char *maps_text;  /* as read, to compare with the next read */
	char *maps_lines; /* a copy cut into lines; paths point into it */
	size_t maps_len;
	struct uw_map *maps;
	int nmaps;
	struct uw_page pages[UW_PAGES];
	unsigned char (*data)[UW_PAGE];
	uint32_t gen; /* this stop's generation, never 0 */
	const struct user_regs_struct *regs;
} uw;

/* Where libunwind's x86-64 register numbers live in user_regs_struct. */
static const size_t uw_reg_off[] = {
	[UNW_X86_64_RAX] = offsetof(struct user_regs_struct, rax),
	[UNW_X86_64_RDX] = offsetof(struct user_regs_struct, rdx),
	[UNW_X86_64_RCX] = offsetof(struct user_regs_struct, rcx),
	[UNW_X86_64_RBX] = offsetof(struct user_regs_struct, rbx),
	[UNW_X86_64_RSI] = offsetof(struct user_regs_struct, rsi),
	[UNW_X86_64_RDI] = offsetof(struct user_regs_struct, rdi),
	[UNW_X86_64_RBP] = offsetof(struct user_regs_struct, rbp),
	[UNW_X86_64_RSP] = offsetof(struct user_regs_struct, rsp),
	[UNW_X86_64_R8] = offsetof(struct user_regs_struct, r8),
	[UNW_X86_64_R9] = offsetof(struct user_regs_struct, r9),
	[UNW_X86_64_R10] = offsetof(struct user_regs_struct, r10),
	[UNW_X86_64_R11] = offsetof(struct user_regs_struct, r11),
	[UNW_X86_64_R12] = offsetof(struct user_regs_struct, r12),
	[UNW_X86_64_R13] = offsetof(struct user_regs_struct, r13),
	[UNW_X86_64_R14] = offsetof(struct user_regs_struct, r14),
	[UNW_X86_64_R15] = offsetof(struct user_regs_struct, r15),
	[UNW_X86_64_RIP] = offsetof(struct user_regs_struct, rip),
};

/* The mapping that holds addr, or NULL. */
static struct uw_map *
uw_map_at(uint64_t addr)
{
	int lo = 0, hi = uw.nmaps - 1, mid;

	while (lo <= hi) {
		mid = (lo + hi) / 2;
		if (addr < uw.maps[mid].start)
			hi = mid - 1;
		else if (addr >= uw.maps[mid].end)
			lo = mid + 1;
		else
			return &uw.maps[mid];
	}
	return NULL;
}

/* The cached copy of the page at address page * UW_PAGE, or NULL when it
 * cannot be read. */
static const unsigned char *
uw_page_get(uint64_t page)
{
	size_t i = (size_t)((page * 0x9e3779b97f4a7c15ULL) >> 53) % UW_PAGES;
	struct uw_page *p = &uw.pages[i];
	struct iovec local = { uw.data[i], UW_PAGE };
	struct iovec remote = { (void *)(uintptr_t)(page * UW_PAGE), UW_PAGE };
	const struct uw_map *m;

	if (p->page == page && (p->gen == 0 || p->gen == uw.gen))
		return uw.data[i];
	p->page = 0;
	if (process_vm_readv(uw.pid, &local, 1, &remote, 1, 0) != UW_PAGE)
		return NULL;
	m = uw_map_at(page * UW_PAGE);
	p->page = page;
	p->gen = m != NULL && !m->writable && m->inode != 0 ? 0 : uw.gen;
	return uw.data[i];
}

/* Copies n bytes at addr of the target into dst; 0, or -1. */
static int
uw_read(uint64_t addr, void *dst, size_t n)
{
	const unsigned char *pg;
	size_t in, take;

	while (n > 0) {
		pg = uw_page_get(addr / UW_PAGE);
		if (pg == NULL)
			return -1;
		in = (size_t)(addr % UW_PAGE);
		take = UW_PAGE - in < n ? UW_PAGE - in : n;
		memcpy(dst, pg + in, take);
		dst = (char *)dst + take;
		addr += take;
		n -= take;
	}
	return 0;
}

/* Reads an .eh_frame_hdr field of encoding enc (4 or 8 bytes, absolute
 * or relative to where it is); advances *at. 0, or -1. */
static int
uw_hdr_field(uint64_t *at, unsigned char enc, uint64_t *out)
{
	uint32_t v4;
	uint64_t v8, where = *at;

	switch (enc & 0x0f) {
	case 0x03: /* udata4 */
	case 0x0b: /* sdata4 */
		if (uw_read(where, &v4, 4) != 0)
			return -1;
		v8 = (enc & 0x0f) == 0x0b ? (uint64_t)(int64_t)(int32_t)v4 : v4;
		*at += 4;
		break;
	case 0x04: /* udata8 */
	case 0x0c: /* sdata8 */
		if (uw_read(where, &v8, 8) != 0)
			return -1;
		*at += 8;
		break;
	default:
		return -1;
	}
	*out = (enc & 0x70) == 0x10 ? where + v8 : v8; /* pcrel */
	return 0;
}

/* Finds the .eh_frame_hdr search table of the object that m (an exec
 * mapping) belongs to, from the ELF headers at its first mapping. */
static void
uw_find_table(struct uw_map *m)
{
	struct uw_map *b = m;
	Elf64_Ehdr eh;
	Elf64_Phdr ph;
	unsigned char h[4];
	uint64_t lowest = UINT64_MAX, hdr_vaddr = 0, at, ptr, bias;
	int i;

	m->table_state = -1;
	if (m->path == NULL)
		return;
	while (b > uw.maps && b->off != 0 && b[-1].path != NULL &&
	    strcmp(b[-1].path, m->path) == 0)
		b--;
	if (b->off != 0 || uw_read(b->start, &eh, sizeof eh) != 0 ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phnum > 256)
		return;
	for (i = 0; i < eh.e_phnum; i++) {
		if (uw_read(b->start + eh.e_phoff + (uint64_t)i * sizeof ph,
			&ph, sizeof ph) != 0)
			return;
		if (ph.p_type == PT_LOAD && ph.p_vaddr < lowest)
			lowest = ph.p_vaddr;
		else if (ph.p_type == PT_GNU_EH_FRAME)
			hdr_vaddr = ph.p_vaddr;
	}
	if (hdr_vaddr == 0 || lowest == UINT64_MAX)
		return;
	bias = b->start - (lowest & ~(uint64_t)(UW_PAGE - 1));
	m->hdr = bias + hdr_vaddr;
	/* version, eh_frame_ptr enc, fde_count enc, table enc */
	if (uw_read(m->hdr, h, 4) != 0 || h[0] != 1 || h[3] != 0x3b)
		return;
	at = m->hdr + 4;
	if (uw_hdr_field(&at, h[1], &ptr) != 0 ||
	    uw_hdr_field(&at, h[2], &m->nfde) != 0)
		return;
	m->table = at;
	m->table_state = 1;
}

static int
uw_find_proc_info(unw_addr_space_t as, unw_word_t ip, unw_proc_info_t *pi,
    int need_unwind_info, void *arg)
{
	struct uw_map *m = uw_map_at(ip);
	unw_dyn_info_t di;

	if (m == NULL || !m->exec)
		return -UNW_ENOINFO;
	if (m->table_state == 0)
		uw_find_table(m);
	if (m->table_state != 1)
		return -UNW_ENOINFO;
	memset(&di, 0, sizeof di);
	di.start_ip = m->start;
	di.end_ip = m->end;
	di.format = UNW_INFO_FORMAT_REMOTE_TABLE;
	di.u.rti.segbase = m->hdr;
	di.u.rti.table_data = m->table;
	/* entries are two 4-byte fields; the length counts words */
	di.u.rti.table_len = m->nfde * 8 / sizeof(unw_word_t);
	return _Ux86_64_dwarf_search_unwind_table(
	    as, ip, &di, pi, need_unwind_info, arg);
}

/* Only dynamic (JIT-registered) unwind info would come here: none. */
static void
uw_put_unwind_info(unw_addr_space_t as, unw_proc_info_t *pi, void *arg)
{
	(void)as;
	(void)pi;
	(void)arg;
}

static int
uw_get_dyn_info_list_addr(unw_addr_space_t as, unw_word_t *addr, void *arg)
{
	(void)as;
	(void)addr;
	(void)arg;
	return -UNW_ENOINFO;
}

static int
uw_access_mem(
    unw_addr_space_t as, unw_word_t addr, unw_word_t *val, int write, void *arg)
{
	(void)as;
	(void)arg;
	if (write || uw_read(addr, val, sizeof *val) != 0)
		return -UNW_EINVAL;
	return 0;
}

static int
uw_access_reg(unw_addr_space_t as, unw_regnum_t reg, unw_word_t *val, int write,
    void *arg)
{
	(void)as;
	(void)arg;
	if (write || reg < 0 ||
	    (size_t)reg >= sizeof uw_reg_off / sizeof uw_reg_off[0] ||
	    uw.regs == NULL)
		return -UNW_EBADREG;
	memcpy(val, (const char *)uw.regs + uw_reg_off[reg], sizeof *val);
	return 0;
}

static int
uw_access_fpreg(unw_addr_space_t as, unw_regnum_t reg, unw_fpreg_t *val,
    int write, void *arg)
{
	(void)as;
	(void)reg;
	(void)val;
	(void)write;
	(void)arg;
	return -UNW_EBADREG;
}

static int
uw_resume(unw_addr_space_t as, unw_cursor_t *c, void *arg)
{
	(void)as;
	(void)c;
	(void)arg;
	return -UNW_EINVAL;
}

static int
uw_get_proc_name(unw_addr_space_t as, unw_word_t addr, char *buf, size_t len,
    unw_word_t *off, void *arg)
{
	(void)as;
	(void)addr;
	(void)buf;
	(void)len;
	(void)off;
	(void)arg;
	return -UNW_ENOINFO;
}

static unw_accessors_t uw_accessors = {
	.find_proc_info = uw_find_proc_info,
	.put_unwind_info = uw_put_unwind_info,
	.get_dyn_info_list_addr = uw_get_dyn_info_list_addr,
	.access_mem = uw_access_mem,
	.access_reg = uw_access_reg,
	.access_fpreg = uw_access_fpreg,
	.resume = uw_resume,
	.get_proc_name = uw_get_proc_name,
};

int
unwind_init(pid_t pid)
{
	uw.pid = pid;
	uw.gen = 1;
	uw.data = calloc(UW_PAGES, UW_PAGE);
	uw.as = unw_create_addr_space(&uw_accessors, 0);
	if (uw.data == NULL || uw.as == NULL) {
		errno = ENOMEM;
		return -1;
	}
	unw_set_caching_policy(uw.as, UNW_CACHE_GLOBAL);
	return 0;
}

/* Reads the whole of /proc/PID/maps; a malloc'd text or NULL. */
static char *
uw_maps_read(size_t *len)
{
	char path[64], *buf = NULL, *nb;
	size_t cap = 0, n = 0;
	ssize_t got;
	int fd;

	snprintf(path, sizeof path, "/proc/%d/maps", (int)uw.pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	for (;;) {
		if (cap - n < 65536) {
			cap = cap ? cap * 2 : 262144;
			nb = cap <= UW_MAPS_MAX ? realloc(buf, cap + 1) : NULL;
			if (nb == NULL)
				goto fail;
			buf = nb;
		}
		got = read(fd, buf + n, cap - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			goto fail;
		if (got == 0)
			break;
		n += (size_t)got;
	}
	close(fd);
	buf[n] = '\0';
	*len = n;
	return buf;
fail:
	close(fd);
	free(buf);
	return NULL;
}

/* Parses uw.maps_lines (which it cuts into lines) into uw.maps. */
static void
uw_maps_parse(void)
{
	char *line, *next, perms[8];
	struct uw_map *m;
	unsigned long long s, e, off, ino;
	int n = 0, cap = 0, pos;

	free(uw.maps);
	uw.maps = NULL;
	uw.nmaps = 0;
	for (line = uw.maps_lines; line != NULL && *line; line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		pos = 0;
		if (sscanf(line, "%llx-%llx %7s %llx %*s %llu %n", &s, &e,
			perms, &off, &ino, &pos) < 5)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			m = realloc(uw.maps, sizeof *m * (size_t)cap);
			if (m == NULL)
				break;
			uw.maps = m;
		}
		m = &uw.maps[n++];
		memset(m, 0, sizeof *m);
		m->start = s;
		m->end = e;
		m->off = off;
		m->inode = ino;
		m->writable = perms[1] == 'w';
		m->exec = perms[2] == 'x';
		m->path = pos > 0 && line[pos] != '\0' ? line + pos : NULL;
	}
	uw.nmaps = n;
}

void
unwind_refresh(void)
{
	size_t len = 0;
	char *text = uw_maps_read(&len);

	if (text == NULL)
		return; /* keep what we had */
	if (uw.maps_text != NULL && len == uw.maps_len &&
	    memcmp(text, uw.maps_text, len) == 0) {
		free(text);
		return;
	}
	free(uw.maps_text);
	free(uw.maps_lines);
	uw.maps_text = text;
	uw.maps_len = len;
	uw.maps_lines = strdup(text);
	uw_maps_parse();
	memset(uw.pages, 0, sizeof uw.pages);
	unw_flush_cache(uw.as, 0, 0);
}

int
unwind_read(uint64_t addr, void *dst, size_t n)
{
	return uw_read(addr, dst, n);
}

int
unwind_thread(const struct user_regs_struct *regs, uint64_t *ips, int max)
{
	unw_cursor_t cur;
	unw_word_t ip;
	int n = 0;

	uw.gen++;
	if (uw.gen == 0)
		uw.gen = 1;
	uw.regs = regs;
	if (unw_init_remote(&cur, uw.as, NULL) != 0) {
		ips[n++] = regs->rip;
		return n;
	}
	do {
		if (unw_get_reg(&cur, UNW_REG_IP, &ip) != 0 || ip == 0)
			break;
		ips[n++] = ip;
	} while (n < max && unw_step(&cur) > 0);
	uw.regs = NULL;
	return n;
}
