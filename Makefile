# ember — build, test, run, bench. Every target depends on `deps`, which
# installs the Debian packages that are missing (so a fresh Debian 12 machine
# needs nothing but `make run` or `make test`).

CC      ?= cc
BUILD   ?= build
OPT     ?= -O3 -march=x86-64-v2 -mtune=generic
CFLAGS  ?= $(OPT) -g
# Quiet by default: one line per program or library made; `make V=1` shows every command.
V ?= 0
Q = $(if $(filter 1,$(V)),,@)
# $(call made,WHAT): prints "  made WHAT" (nothing with V=1, where the command shows)
made = $(if $(filter 1,$(V)),,@echo "  made $(1)")
# Flags every build needs; CFLAGS (optimisation, sanitizers) may be overridden.
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -fPIC -fopenmp -fno-math-errno
DEPFLAGS = -MMD -MP
CPPFLAGS += -Icore -Ibindings $(shell pkg-config --cflags lua5.4 2>/dev/null) \
            -I/usr/include/x86_64-linux-gnu/openblas-openmp -I/usr/include/stb $(MPI_CFLAGS)
LDFLAGS ?=
CORE_LIBS = -lopenblas -lz -ljansson -lstb -lm -fopenmp
LUA_LIBS  = $(shell pkg-config --libs lua5.4 2>/dev/null)
EDIT_LIBS = $(shell pkg-config --libs libedit 2>/dev/null)
# Open MPI for ember.dist (data-parallel training); unused at run time without mpirun.
MPI_CFLAGS = $(shell pkg-config --cflags ompi-c 2>/dev/null)
MPI_LIBS = $(shell pkg-config --libs ompi-c 2>/dev/null)
EDIT_CFLAGS = $(shell pkg-config --cflags libedit 2>/dev/null)

CORE_SRC = $(wildcard core/*.c)
BIND_SRC = $(filter-out bindings/ember_main.c,$(wildcard bindings/*.c))
LUA_MODS = $(wildcard bindings/lua/ember/*.lua bindings/lua/ember/*/*.lua)
CORE_OBJ = $(CORE_SRC:%.c=$(BUILD)/%.o)
BIND_OBJ = $(BIND_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/lua_modules.o
TEST_C_SRC = $(wildcard tests/c/*.c)

DEB_PACKAGES = build-essential pkg-config lua5.4 liblua5.4-dev libopenblas-openmp-dev \
               libstb-dev zlib1g-dev libjansson-dev lua-busted libedit-dev tmux \
               gnuplot-nox dataset-fashion-mnist slurm-wlm munge parallel \
               libopenmpi-dev openmpi-bin

.PHONY: all deps test test-slurm test-parallel run bench bench-peer profile sanitize clean fuzz data install uninstall

all: deps $(BUILD)/ember $(BUILD)/ember.so

# ---- dependencies --------------------------------------------------------
deps: $(BUILD)/.deps-ok
$(BUILD)/.deps-ok: scripts/install_deps.sh Makefile
	@sh scripts/install_deps.sh $(DEB_PACKAGES)
	@mkdir -p $(BUILD) && touch $@

# ---- build ---------------------------------------------------------------
# Outputs are written to a temp name and renamed, so that two makes running
# at once in one tree never leave a half-written object or archive.
$(BUILD)/%.o: %.c | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CPPFLAGS) $(BASE_CFLAGS) $(CFLAGS) $(DEPFLAGS) -MF $(@:.o=.d) -MT $@ -c $< -o $@.$$$$.tmp && mv -f $@.$$$$.tmp $@

$(BUILD)/bindings/ember_main.o: bindings/ember_main.c | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CPPFLAGS) $(EDIT_CFLAGS) $(BASE_CFLAGS) $(CFLAGS) $(DEPFLAGS) -MF $(@:.o=.d) -MT $@ -c $< -o $@.$$$$.tmp && mv -f $@.$$$$.tmp $@

# The Lua half of the library is compiled into the binaries (package.preload),
# so `require 'ember'` needs nothing but ember.so on package.cpath.
$(BUILD)/gen/lua_modules.c: scripts/embed_lua.lua $(LUA_MODS) | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(Q)lua5.4 scripts/embed_lua.lua $@.$$$$.tmp $(LUA_MODS) && mv -f $@.$$$$.tmp $@

# The generated file is compiled like the others (make's built-in rule would print it).
$(BUILD)/gen/lua_modules.o: $(BUILD)/gen/lua_modules.c
	$(Q)$(CC) $(CPPFLAGS) $(BASE_CFLAGS) $(CFLAGS) -c $< -o $@.$$$$.tmp && mv -f $@.$$$$.tmp $@

$(BUILD)/libember_core.a: $(CORE_OBJ)
	$(Q)rm -f $@.$$$$.tmp && ar rcs $@.$$$$.tmp $^ && mv -f $@.$$$$.tmp $@
	$(call made,$@)

$(BUILD)/ember.so: $(BIND_OBJ) $(BUILD)/libember_core.a
	$(Q)$(CC) -shared -Wl,-z,nodelete -o $@.$$$$.tmp $(BIND_OBJ) $(BUILD)/libember_core.a $(LDFLAGS) $(CORE_LIBS) $(MPI_LIBS) && mv -f $@.$$$$.tmp $@
	$(call made,$@)

$(BUILD)/ember: $(BUILD)/bindings/ember_main.o $(BIND_OBJ) $(BUILD)/libember_core.a
	$(Q)$(CC) -o $@.$$$$.tmp $^ $(LDFLAGS) $(CORE_LIBS) $(LUA_LIBS) $(EDIT_LIBS) $(MPI_LIBS) -Wl,-E && mv -f $@.$$$$.tmp $@
	$(call made,$@)

$(BUILD)/test_core: $(TEST_C_SRC:%.c=$(BUILD)/%.o) $(BUILD)/libember_core.a
	$(Q)$(CC) -o $@.$$$$.tmp $^ $(LDFLAGS) $(CORE_LIBS) && mv -f $@.$$$$.tmp $@
	$(call made,$@)

$(BUILD)/bench_matmul: $(BUILD)/scripts/bench_matmul.o $(BUILD)/libember_core.a
	$(Q)$(CC) -o $@ $^ $(LDFLAGS) $(CORE_LIBS)
	$(call made,$@)

# ---- test ----------------------------------------------------------------
test: all $(BUILD)/test_core data
	@sh tests/run_all.sh $(BUILD)

# A one-node Slurm cluster and GNU parallel running an emitted sweep (also in `make test`).
test-slurm: all
	@sh tests/slurm/run_slurm_test.sh $(BUILD)/ember

test-parallel: all
	@sh tests/parallel/run_parallel_test.sh $(BUILD)/ember

sanitize:
	$(MAKE) BUILD=build-san OPT="-O1 -fno-omit-frame-pointer" \
	  CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" EMBER_SANITIZE=1 test

# ---- run, bench, data ----------------------------------------------------
# The main demo: train the B1 VAE on Fashion-MNIST (10 epochs) and write its pictures
# (samples, reconstructions, interpolations) into runs/vae, the folder the README's
# examples read; when runs/vae already holds a run, into a new dated folder instead.
run: all
	@out=runs/vae; if [ -e runs/vae ]; then out=runs/vae-$$(date +%Y%m%d-%H%M%S); \
	  echo "runs/vae holds an earlier run: this one goes to $$out"; fi; \
	  $(BUILD)/ember run examples/vae.lua --out $$out

bench: all $(BUILD)/bench_matmul
	@sh scripts/bench.sh $(BUILD)

# ember against PyTorch (python3-torch, installed here: a benchmark peer only) on B1-B4;
# BLAS_KERNEL=own lets OpenBLAS pick its kernel itself (see scripts/bench_peer.sh).
bench-peer: all $(BUILD)/bench_matmul
	@sh scripts/bench_peer.sh $(BUILD)

# Where each benchmark model's step goes (perf; a developer's tool, not installed here).
profile: all
	@sh scripts/profile_models.sh $(BUILD)

# Where `make data` prepares the datasets (every build directory shares them).
DATA_DIR = build/data
data: all
	@command -v npm >/dev/null 2>&1 || sh scripts/install_deps.sh npm
	@sh datasets/prepare.sh $(DATA_DIR)

fuzz: all
	@sh scripts/install_deps.sh clang libclang-rt-14-dev
	@sh scripts/fuzz.sh

# `ember` on the PATH and `require 'ember'` from stock lua5.4 without LUA_CPATH, and
# the prepared datasets in PREFIX/share/ember/data, where the installed ember looks
# (data.data_dirs), so `ember.data.mnist{}` works from any working directory.
PREFIX ?= /usr/local
install: all data
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/lua/5.4
	install -m 755 $(BUILD)/ember $(DESTDIR)$(PREFIX)/bin/ember
	install -m 644 $(BUILD)/ember.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/ember.so
	install -d $(DESTDIR)$(PREFIX)/share/ember/data/mnist
	install -m 644 $(DATA_DIR)/mnist/*.gz $(DESTDIR)$(PREFIX)/share/ember/data/mnist/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/ember $(DESTDIR)$(PREFIX)/lib/lua/5.4/ember.so
	rm -rf $(DESTDIR)$(PREFIX)/share/ember

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
