# probing: build, test, install. `make help` lists the targets.

PREFIX  ?= /usr/local
PYTHON  ?= /usr/bin/python3
# One agent is built per interpreter named here: make PYTHONS="python3.11 python3.13".
PYTHONS ?= $(PYTHON)
PROBING_ROOTS ?= /var/cache/probing-roots
CC      ?= cc
VERSION := 0.1.0

PYVER   := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
PYINC   := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)
PYSITE  ?= $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)

WARN    := -Wall -Wextra -Wformat=2 -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wpointer-arith -Wwrite-strings -Werror
CFLAGS  ?= -O2 -g
# The agent is never built with sanitizers: it lives in someone else's
# process. SANITIZE applies to the program and the C tests.
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -Ishared \
           -DPROBING_VERSION='"$(VERSION)"'
CLI_CFLAGS := $(ALL_CFLAGS) $(SANITIZE)
LDFLAGS ?=

DEPS_PKGS := libevent-dev libsqlite3-dev python3-dev liblzma-dev libjansson-dev \
             libunwind-dev libncurses-dev libedit-dev pkg-config \
             python3-torch python3-pytest python3-pexpect tmux gdb \
             clang libclang-rt-14-dev hyperfine xxd psmisc valgrind iproute2 strace curl \
             imagemagick fonts-dejavu-core prometheus zsh

B := .build
SHARED_SRC := $(wildcard shared/*.c)
AGENT_SRC  := $(wildcard agent/*.c)
INJ_SRC    := $(wildcard injector/*.c)
TUI_SRC    := $(wildcard tui/*.c)

SHARED_OBJ     := $(SHARED_SRC:%.c=$(B)/%.o)
SHARED_PIC_OBJ := $(SHARED_SRC:%.c=$(B)/pic/%.o)
AGENT_OBJ      := $(AGENT_SRC:%.c=$(B)/py$(PYVER)/%.o) $(B)/py$(PYVER)/agent/eval-helper-src.o \
                  $(B)/py$(PYVER)/agent/bt-helper-bin.o
HELPER_SRC     := $(wildcard agent/helper/*.c)
INJ_OBJ        := $(INJ_SRC:%.c=$(B)/%.o)
TUI_OBJ        := $(TUI_SRC:%.c=$(B)/%.o)

AGENT_SO := agent/libprobing-$(PYVER).so
AGENT_LIBS := -levent_pthreads -levent -ljansson -lsqlite3 -lunwind -lpthread
TUI_LIBS := -levent -ljansson -lncursesw -ledit -lm

.PHONY: all agent agents deps deps-check test test-venv unit e2e demo install install-agent asan lint \
        bench-instr format format-check bench screenshots fuzz clean help \
        roots install-root matrix bench-matrix deps-matrix

all: deps-check probing agents tests-bin

help:
	@echo "make [all]      build ./probing, the agent and the test programs"
	@echo "make test       install missing Debian packages, build, run every test"
	@echo "make demo       run the bundled demo workload and look at it"
	@echo "make install    PREFIX=$(PREFIX) PYTHONS=\"$(PYTHONS)\" (an agent for each)"
	@echo "make roots      Debian roots for other Pythons under PROBING_ROOTS=$(PROBING_ROOTS)"
	@echo "make install-root ROOT=DIR   build and install probing inside a root"
	@echo "make matrix     the end-to-end suite in every root and Python, and torch 2.13"
	@echo "make asan       the whole suite under ASan and UBSan"
	@echo "make bench      the benchmarks under tests/bench/ (bench-instr: instruction counts)"
	@echo "make lint | format | format-check | fuzz | screenshots | deps | clean"

# Installs what is missing, from Debian's archive only.
deps:
	@missing=""; for p in $(DEPS_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq >/dev/null 2>&1 || true; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || \
	    { echo "probing: apt-get install$$missing failed" >&2; exit 1; }; \
	fi

# What building (not testing) needs; when one is missing the build stops
# with the apt-get line that fixes it (also under pip install).
PROBING_BUILD_PKGS ?= libevent-dev libsqlite3-dev libjansson-dev libunwind-dev \
                      liblzma-dev libncurses-dev libedit-dev xxd
deps-check:
	@missing=""; for p in $(PROBING_BUILD_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || \
	    missing="$$missing $$p"; done; \
	[ -f "$(PYINC)/Python.h" ] || missing="$$missing python$(PYVER)-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "probing: cannot build: missing Debian packages:$$missing" >&2; \
	  echo "probing: fix with: apt-get install$$missing" >&2; exit 1; fi

$(B)/%.o: %.c $(wildcard shared/*.h tui/*.h injector/*.h)
	@mkdir -p $(@D)
	$(CC) $(CLI_CFLAGS) -Iinjector -c -o $@ $<

$(B)/pic/%.o: %.c $(wildcard shared/*.h)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -fPIC -fvisibility=hidden -c -o $@ $<

$(B)/py$(PYVER)/%.o: %.c $(wildcard shared/*.h agent/*.h) Makefile
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DNDEBUG -fPIC -fvisibility=hidden -I$(PYINC) -c -o $@ $<

$(B)/py$(PYVER)/agent/eval-helper-src.c: agent/eval-helper.py
	@mkdir -p $(@D)
	{ echo 'const char eval_helper_source[] = {'; xxd -i < $<; echo ', 0 };'; } > $@

$(B)/py$(PYVER)/agent/eval-helper-src.o: $(B)/py$(PYVER)/agent/eval-helper-src.c
	$(CC) -fPIC -fvisibility=hidden -c -o $@ $<

# The unwinding helper: a static program the agent execs from memory
# (agent/bt-native.c), so it is inside the agent .so wherever that goes.
$(B)/probing-unwind: $(HELPER_SRC) agent/helper/helper.h agent/bt-helper.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -static -s -o $@ $(HELPER_SRC) -lunwind-x86_64 -lunwind -llzma

$(B)/py$(PYVER)/agent/bt-helper-bin.o: $(B)/probing-unwind
	@mkdir -p $(@D)
	printf '.section .rodata\n.balign 16\n.globl bt_helper_elf\n.hidden bt_helper_elf\nbt_helper_elf:\n.incbin "%s"\n.globl bt_helper_elf_end\n.hidden bt_helper_elf_end\nbt_helper_elf_end:\n.section .note.GNU-stack,"",@progbits\n' $< | \
	  $(CC) -c -x assembler -o $@ -

# The agent does not link libpython: it uses the interpreter it is loaded
# in, so Python's symbols stay undefined; every other symbol must come
# from a library it links (checked below, since -z defs cannot tell the
# two apart). Nothing in it may end the job: xmalloc.o is not linked,
# asserts are compiled out (Python's inline functions have some), and the
# link fails on abort, exit, __assert_fail or PyErr_Print.
AGENT_SHARED_OBJ := $(filter-out $(B)/pic/shared/xmalloc.o,$(SHARED_PIC_OBJ))
$(AGENT_SO): $(AGENT_OBJ) $(AGENT_SHARED_OBJ)
	$(CC) -shared -o $@ $^ $(LDFLAGS) $(AGENT_LIBS)
	@nm -D --undefined-only $@ | awk '{print $$NF}' | sed 's/@.*//' | \
	  grep -v -e '^_\{0,1\}Py' -e '^__gmon_start__$$' -e '^_ITM_' -e '^__cxa_finalize$$' | \
	  sort -u > $(B)/agent-undef.txt; \
	nm -D --defined-only $$(ldd $@ | grep -o '/[^ ]*') 2>/dev/null | \
	  awk '{print $$NF}' | sed 's/@.*//' | sort -u > $(B)/agent-defs.txt; \
	missing=$$(comm -23 $(B)/agent-undef.txt $(B)/agent-defs.txt); \
	if [ -n "$$missing" ]; then echo "probing: $@ uses symbols no linked library defines:" $$missing >&2; rm -f $@; exit 1; fi
	@bad=$$(nm -D --undefined-only $@ | awk '{print $$NF}' | sed 's/@.*//' | \
	  grep -x -e abort -e __assert_fail -e exit -e PyErr_Print); \
	if [ -n "$$bad" ]; then echo "probing: the agent must never end the job, but calls:" $$bad >&2; rm -f $@; exit 1; fi

# One agent per interpreter in PYTHONS, each built by a make of its own.
agents:
	@for p in $(PYTHONS); do \
	  command -v $$p >/dev/null || { echo "probing: no interpreter $$p (from PYTHONS=$(PYTHONS))" >&2; exit 1; }; \
	  $(MAKE) --no-print-directory agent PYTHON=$$p PYTHONS=$$p || exit 1; done

agent:
	@[ -n "$(PYVER)" ] || { echo "probing: cannot run $(PYTHON)" >&2; exit 1; }
	@[ -f "$(PYINC)/Python.h" ] || { echo "probing: no Python.h for python$(PYVER) in $(PYINC) (apt-get install python$(PYVER)-dev)" >&2; exit 1; }
	@if $(PYTHON) -c 'import sys; sys.exit("t" not in sys.abiflags)'; then echo "probing: $(PYTHON) is a free-threaded build (python$(PYVER)t), which probing does not support" >&2; exit 1; fi
	@$(MAKE) --no-print-directory $(AGENT_SO)

probing: $(TUI_OBJ) $(INJ_OBJ) $(SHARED_OBJ)
	$(CC) -o $@ $^ $(LDFLAGS) $(TUI_LIBS) $(SANITIZE)

# Test programs.
UNIT_SRC := $(wildcard tests/unit/test-*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
tests-bin: $(UNIT_BIN) $(B)/tests/embed-host $(B)/tests/inj-payload.so $(B)/tests/hold-gil.so \
           $(B)/tests/errno-spin.so

$(B)/tests/test-%: tests/unit/test-%.c $(SHARED_OBJ) $(INJ_OBJ) $(B)/agent-test/ring.o
	@mkdir -p $(@D)
	$(CC) $(CLI_CFLAGS) -Iinjector -Iagent -o $@ $^ -ljansson -lm -ldl -lpthread

# Tests of tui/ modules link just those objects.
$(B)/tests/test-stack: tests/unit/test-stack.c $(B)/tui/stack.o $(B)/tui/fmt.o $(SHARED_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CLI_CFLAGS) -Itui -o $@ $^ -ljansson -lm

$(B)/tests/test-ui-list: tests/unit/test-ui-list.c $(B)/tui/ui-list.o
	@mkdir -p $(@D)
	$(CC) $(CLI_CFLAGS) -Itui -o $@ $^

$(B)/agent-test/ring.o: agent/ring.c agent/ring.h
	@mkdir -p $(@D)
	$(CC) $(CLI_CFLAGS) -c -o $@ $<

$(B)/tests/embed-host: tests/workloads/embed-host.c
	@mkdir -p $(@D)
	$(CC) -O2 -g -I$(PYINC) -o $@ $< -L$(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))') -lpython$(PYVER) -Wl,-rpath,$(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')

$(B)/tests/inj-payload.so: tests/workloads/inj-payload.c
	@mkdir -p $(@D)
	$(CC) -O2 -g -shared -fPIC -o $@ $<

$(B)/tests/hold-gil.so: tests/workloads/hold-gil.c
	@mkdir -p $(@D)
	$(CC) -O2 -g -shared -fPIC -o $@ $<

$(B)/tests/errno-spin.so: tests/workloads/errno-spin.c
	@mkdir -p $(@D)
	$(CC) -O2 -g -shared -fPIC -o $@ $<

test: deps
	@$(MAKE) --no-print-directory all test-venv
	@tests/run

# Test-only Python packages go into a venv under the build folder, never
# system-wide: perfetto (its trace processor reads `probing trace` output;
# tests/e2e/trace_reader.py falls back to a schema check offline).
TEST_PY_PKGS := perfetto
test-venv: $(B)/venv/.done
$(B)/venv/.done:
	@rm -rf $(B)/venv && $(PYTHON) -m venv $(B)/venv
	@$(B)/venv/bin/pip install -q $(TEST_PY_PKGS) >$(B)/venv/pip.log 2>&1 || \
	  echo "note: cannot install $(TEST_PY_PKGS) (see $(B)/venv/pip.log): the trace tests check the schema only"
	@touch $@

unit: all
	@tests/run unit

e2e: all test-venv
	@tests/run e2e

# The sanitizer flags travel in the environment so that the `make install`
# the end-to-end tests run builds the same way.
asan: deps
	@$(MAKE) --no-print-directory clean
	@export CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	  SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=all" \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1; \
	  $(MAKE) --no-print-directory all && tests/run unit e2e; rc=$$?; \
	  $(MAKE) --no-print-directory clean; exit $$rc

demo: deps
	@$(MAKE) --no-print-directory all
	@tests/workloads/demo.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@for b in tests/bench/bench-*.py; do $(PYTHON) $$b || exit 1; done

# Instruction counts under valgrind: slow, but untouched by a noisy machine.
bench-instr: deps
	@$(MAKE) --no-print-directory all
	@$(PYTHON) tests/bench/instr-torch.py

FUZZ := $(B)/fuzz/fuzz-proto $(B)/fuzz/fuzz-endpoint $(B)/fuzz/fuzz-request $(B)/fuzz/fuzz-conn
FUZZ_CC := clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
           -DPROBING_VERSION='"$(VERSION)"' -Ishared -Iagent
$(B)/fuzz/fuzz-proto $(B)/fuzz/fuzz-endpoint: $(B)/fuzz/fuzz-%: tests/fuzz/fuzz-%.c $(SHARED_SRC)
	@mkdir -p $(@D)
	$(FUZZ_CC) -o $@ $^
$(B)/fuzz/fuzz-request: tests/fuzz/fuzz-request.c agent/server.c agent/request.c agent/conn.c agent/config.c $(SHARED_SRC)
	@mkdir -p $(@D)
	$(FUZZ_CC) -o $@ $^ -levent_pthreads -levent -ljansson -lpthread
$(B)/fuzz/fuzz-conn: tests/fuzz/fuzz-conn.c agent/conn.c $(SHARED_SRC)
	@mkdir -p $(@D)
	$(FUZZ_CC) -o $@ $^ -levent -lpthread
# Runs each harness for FUZZ_SECONDS (default 20) from its seed corpus.
fuzz: $(FUZZ)
	@for f in $(FUZZ); do n=$${f##*/}; c=tests/fuzz/corpus-$${n#fuzz-}; \
	  mkdir -p $(B)/corpus/$$n; [ -d $$c ] && cp -n $$c/* $(B)/corpus/$$n/ 2>/dev/null; \
	  $$f -max_total_time=$${FUZZ_SECONDS:-20} -timeout=10 $(B)/corpus/$$n >$(B)/fuzz/$$n.log 2>&1 \
	    && echo "ok - $$n: $$(grep -o 'stat::number_of_executed_units: *[0-9]*' $(B)/fuzz/$$n.log | grep -o '[0-9]*$$' || tail -1 $(B)/fuzz/$$n.log)" \
	    || { echo "not ok - $$n (see $(B)/fuzz/$$n.log)"; tail -30 $(B)/fuzz/$$n.log; exit 1; }; done

FORMAT_SRC := $(wildcard shared/*.[ch] agent/*.[ch] agent/helper/*.[ch] injector/*.[ch] tui/*.[ch] tests/unit/*.c tests/fuzz/*.c tests/workloads/*.c)
format:
	clang-format -i $(FORMAT_SRC)
format-check:
	@clang-format --dry-run --Werror $(FORMAT_SRC)

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability \
	  --suppress=missingIncludeSystem --inline-suppr --include=/usr/include/x86_64-linux-gnu/sys/queue.h \
	  -Ishared -Iagent -Itui -Iinjector shared agent injector tui
	clang-tidy --quiet $(SHARED_SRC) $(INJ_SRC) $(TUI_SRC) -- $(ALL_CFLAGS) -Iinjector
	clang-tidy --quiet $(AGENT_SRC) -- $(ALL_CFLAGS) -Iagent -I$(PYINC)
	clang-tidy --quiet $(HELPER_SRC) -- $(ALL_CFLAGS)

screenshots: all
	@tests/e2e/screenshots.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 probing $(DESTDIR)$(PREFIX)/bin/probing
	./probing help --man > $(DESTDIR)$(PREFIX)/share/man/man1/probing.1
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
	  $(DESTDIR)$(PREFIX)/share/zsh/site-functions
	./probing completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/probing
	./probing completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_probing
	@for p in $(PYTHONS); do \
	  $(MAKE) --no-print-directory install-agent PYTHON=$$p PYTHONS=$$p || exit 1; done

# The agent of one PYTHON beside the others, and the package in its site.
install-agent: agent
	install -d $(DESTDIR)$(PREFIX)/lib/probing $(DESTDIR)$(PYSITE)/probing
	install -m 755 $(AGENT_SO) $(DESTDIR)$(PREFIX)/lib/probing/
	install -m 644 agent/python/probing/*.py $(DESTDIR)$(PYSITE)/probing/
	install -m 755 $(AGENT_SO) $(DESTDIR)$(PYSITE)/probing/
	install -m 644 agent/python/probing.pth $(DESTDIR)$(PYSITE)/probing.pth

# Other Pythons and torch versions, each in a Debian root (see README).
deps-matrix:
	@command -v debootstrap >/dev/null || { apt-get update -qq >/dev/null 2>&1 || true; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }

roots: deps-matrix
	@PROBING_ROOTS=$(PROBING_ROOTS) tests/matrix/roots.sh

install-root:
	@[ -n "$(ROOT)" ] || { echo "usage: make install-root ROOT=DIR" >&2; exit 2; }
	@tests/matrix/install-root.sh $(ROOT)

matrix: roots
	@PROBING_ROOTS=$(PROBING_ROOTS) tests/matrix/matrix.sh

# The matrix's figures (after make matrix): README "Other Pythons".
bench-matrix:
	@PROBING_ROOTS=$(PROBING_ROOTS) tests/matrix/bench.sh

clean:
	rm -rf $(B) probing agent/libprobing-*.so
