/* elf.c - find symbols in a 64-bit ELF file's .dynsym or .symtab */

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "log.h"
#include "injector.h"

/* Map the ELF file at path and check its header; returns 0 or -1. */
int
elf_open(struct elf_file *ef, const char *path, char **cause)
{
	const Elf64_Ehdr *eh;
	struct stat sb;
	void *p;
	int fd;

	ef->data = NULL;
	ef->size = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		cause_set(cause, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &sb) < 0 || sb.st_size < (off_t)sizeof(Elf64_Ehdr)) {
		cause_set(cause, "%s is not an ELF file", path);
		close(fd);
		return -1;
	}
	p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		cause_set(cause, "cannot map %s: %s", path, strerror(errno));
		return -1;
	}
	eh = p;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_machine != EM_X86_64) {
		munmap(p, (size_t)sb.st_size);
		cause_set(cause, "%s is not an x86-64 ELF file", path);
		return -1;
	}
	ef->data = p;
	ef->size = (size_t)sb.st_size;
	return 0;
}

/* Unmap an ELF file; a closed or never opened one is a no-op. */
void
elf_close(struct elf_file *ef)
{
	if (ef->data != NULL)
		munmap((void *)ef->data, ef->size);
	ef->data = NULL;
	ef->size = 0;
}

/* Return the section header table, or NULL when it is missing or bad. */
static const Elf64_Shdr *
elf_sections(const struct elf_file *ef, size_t *n)
{
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)ef->data;

	if (eh->e_shoff == 0 || eh->e_shentsize != sizeof(Elf64_Shdr) ||
	    eh->e_shoff > ef->size ||
	    eh->e_shnum > (ef->size - eh->e_shoff) / sizeof(Elf64_Shdr))
		return NULL;
	*n = eh->e_shnum;
	return (const Elf64_Shdr *)(ef->data + eh->e_shoff);
}

/* Whether section s lies inside the file. */
static int
elf_section_ok(const struct elf_file *ef, const Elf64_Shdr *s)
{
	return s->sh_type != SHT_NOBITS && s->sh_offset <= ef->size &&
	    s->sh_size <= ef->size - s->sh_offset;
}

/*
 * Look name up in one symbol table section. Prefers a defined function or
 * object whose version is the default one (not hidden); returns 0 with
 * *value set, -1 when not found.
 */
static int
elf_lookup(const struct elf_file *ef, const Elf64_Shdr *sh, size_t nsh,
    size_t idx, const char *name, uint64_t *value)
{
	const Elf64_Shdr *sym = &sh[idx], *str, *ver = NULL;
	const Elf64_Sym *syms;
	const Elf64_Half *versym = NULL;
	const char *strtab;
	size_t i, nsyms, nlen = strlen(name);
	int found = 0;

	if (!elf_section_ok(ef, sym) || sym->sh_entsize != sizeof(Elf64_Sym) ||
	    sym->sh_link >= nsh)
		return -1;
	str = &sh[sym->sh_link];
	if (!elf_section_ok(ef, str))
		return -1;
	syms = (const Elf64_Sym *)(ef->data + sym->sh_offset);
	nsyms = sym->sh_size / sizeof(Elf64_Sym);
	strtab = (const char *)(ef->data + str->sh_offset);
	if (sym->sh_type == SHT_DYNSYM) {
		for (i = 0; i < nsh; i++) {
			if (sh[i].sh_type == SHT_GNU_versym &&
			    sh[i].sh_link == idx &&
			    elf_section_ok(ef, &sh[i]) &&
			    sh[i].sh_size / sizeof(Elf64_Half) >= nsyms) {
				ver = &sh[i];
				break;
			}
		}
		if (ver != NULL)
			versym =
			    (const Elf64_Half *)(ef->data + ver->sh_offset);
	}
	for (i = 1; i < nsyms; i++) {
		const Elf64_Sym *s = &syms[i];
		int type = ELF64_ST_TYPE(s->st_info);

		if (s->st_shndx == SHN_UNDEF || s->st_value == 0)
			continue;
		if (type != STT_FUNC && type != STT_OBJECT)
			continue;
		if (s->st_name >= str->sh_size ||
		    nlen >= str->sh_size - s->st_name ||
		    memcmp(strtab + s->st_name, name, nlen + 1) != 0)
			continue;
		if (versym == NULL || (versym[i] & 0x8000) == 0) {
			*value = s->st_value;
			return 0;
		}
		if (!found) {
			*value = s->st_value;
			found = 1;
		}
	}
	return found ? 0 : -1;
}

/*
 * Find the link-time value of symbol name, in .dynsym first, then .symtab.
 * Returns 0 with *value set, or -1.
 */
int
elf_symbol(const struct elf_file *ef, const char *name, uint64_t *value)
{
	static const uint32_t order[] = { SHT_DYNSYM, SHT_SYMTAB };
	const Elf64_Shdr *sh;
	size_t i, j, n;

	sh = elf_sections(ef, &n);
	if (sh == NULL)
		return -1;
	for (j = 0; j < sizeof(order) / sizeof(order[0]); j++) {
		for (i = 0; i < n; i++) {
			if (sh[i].sh_type == order[j] &&
			    elf_lookup(ef, sh, n, i, name, value) == 0)
				return 0;
		}
	}
	return -1;
}

/*
 * Give the virtual address and file offset of the first PT_LOAD segment, to
 * turn a mapping's start into the object's load base. Returns 0 or -1.
 */
int
elf_first_load(const struct elf_file *ef, uint64_t *vaddr, uint64_t *offset)
{
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)ef->data;
	const Elf64_Phdr *ph;
	size_t i;

	if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phoff > ef->size ||
	    eh->e_phnum > (ef->size - eh->e_phoff) / sizeof(Elf64_Phdr))
		return -1;
	ph = (const Elf64_Phdr *)(ef->data + eh->e_phoff);
	for (i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type == PT_LOAD) {
			*vaddr = ph[i].p_vaddr;
			*offset = ph[i].p_offset;
			return 0;
		}
	}
	return -1;
}
