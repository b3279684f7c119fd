# paramserver: a parameter server that trains SimpleConvNet on MNIST, in C.
# One GNU Makefile. `make` builds the programs into build/; `make check` runs
# the tests; `make run` trains with a server and workers; `make basic` trains
# in one process; `make bench` measures speed. See README.md.

CC       ?= cc
# The default build runs on any x86-64 CPU: our hot loops pick AVX2/FMA code at
# run time (common/dispatch.h), OpenBLAS picks its own. `make NATIVE=1` builds
# for this machine's CPU only.
ifeq ($(NATIVE),1)
CFLAGS   ?= -O3 -march=native -g
else
CFLAGS   ?= -O3 -g
endif
# What the code needs is added with override, so that `make CFLAGS=...`
# changes optimisation and sanitizers but keeps these.
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -pthread -MMD -MP
override CPPFLAGS += -Icommon -Iproto -I$(B)/proto
LDLIBS   += -lopenblas -lsqlite3 -ljansson -lz -lm -pthread
NET_LIBS := -lczmq -lzmq -lprotobuf-c
PREFIX   ?= /usr/local
DESTDIR  ?=
B        := build
MNIST_DIR ?= data
export MNIST_DIR

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(B)/obj/%.o)
WORKER_SRC := $(wildcard worker/*.c)
WORKER_OBJ := $(WORKER_SRC:%.c=$(B)/obj/%.o)
SERVER_SRC := $(wildcard server/*.c)
SERVER_OBJ := $(SERVER_SRC:%.c=$(B)/obj/%.o)
PROTO_OBJ  := $(B)/obj/proto/ps.pb-c.o $(B)/obj/proto/wire.o
REPORT_SRC := $(wildcard report/*.c)
REPORT_OBJ := $(REPORT_SRC:%.c=$(B)/obj/%.o)
TEST_SRC   := $(wildcard tests/test_*.c)
TEST_BIN   := $(TEST_SRC:tests/%.c=$(B)/tests/%)
TEST_SH    := $(wildcard tests/test_*.sh)
CAIRO_CFLAGS := $(shell pkg-config --cflags cairo 2>/dev/null)
CAIRO_LIBS   := $(shell pkg-config --libs cairo 2>/dev/null)
override CPPFLAGS += $(CAIRO_CFLAGS)

PROGRAMS := $(B)/paramserver $(B)/worker $(B)/psreport

.PHONY: bench-models study bench-portable cairo-check valgrind bench-net bench-shards bench-replication check-multihost check-slurm check-fresh fuzz fuzz-safetensors fuzz-gate asan all deps data check check-pytorch bench bench-ps basic run install uninstall clean
all: $(PROGRAMS)

deps:
	@deploy/install-deps.sh

data:
	@deploy/fetch-mnist.sh "$(MNIST_DIR)"

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# These kernels want one FMA per product (see common/kgemm.c, common/conv1.c).
$(B)/obj/common/kgemm.o $(B)/obj/common/conv1.o: override CFLAGS += -ffp-contract=fast

$(B)/libcommon.a: $(COMMON_OBJ)
	$(AR) rcs $@ $^

# The wire format: protoc-c generates the C code from proto/ps.proto.
$(B)/proto/ps.pb-c.c $(B)/proto/ps.pb-c.h: proto/ps.proto
	@mkdir -p $(B)/proto
	protoc-c --proto_path=proto --c_out=$(B)/proto $<

$(B)/obj/proto/ps.pb-c.o: $(B)/proto/ps.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(B)/libproto.a: $(PROTO_OBJ)
	$(AR) rcs $@ $^

# Everything that includes the generated header waits for it.
$(B)/obj/proto/wire.o $(SERVER_OBJ) $(WORKER_OBJ): $(B)/proto/ps.pb-c.h

$(B)/paramserver: $(SERVER_OBJ) $(B)/libproto.a $(B)/libcommon.a
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(NET_LIBS) $(LDLIBS)

$(B)/worker: $(WORKER_OBJ) $(B)/libproto.a $(B)/libcommon.a
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(NET_LIBS) $(LDLIBS)

# psreport draws with cairo; without its development files, say what to do.
$(REPORT_OBJ): | cairo-check
cairo-check:
	@pkg-config --exists cairo 2>/dev/null || { echo "cairo's development files are missing:" \
	    "run 'make deps' (or: apt-get install pkg-config libcairo2-dev)" >&2; exit 1; }

$(B)/psreport: $(REPORT_OBJ) $(B)/libcommon.a
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(CAIRO_LIBS) -lpng $(LDLIBS)

# psreport writes its version into every plot's PNG text: the tree it was
# built from, as git describes it.
PS_VERSION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
$(B)/obj/report/psreport.o: override CPPFLAGS += -DPS_VERSION='"$(PS_VERSION)"'

# The plot module's own test links the report objects it tests.
$(B)/tests/test_plot: tests/test_plot.c $(B)/obj/report/plot.o $(B)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Ireport $(CFLAGS) $(filter-out %.h,$^) -o $@ -lcmocka $(CAIRO_LIBS) -lpng $(LDLIBS)

# The gate's own test links the gate it tests.
$(B)/tests/test_gate: tests/test_gate.c $(B)/obj/server/gate.o $(B)/libproto.a $(B)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Iserver $(CFLAGS) $(filter-out %.h,$^) -o $@ -lcmocka $(NET_LIBS) $(LDLIBS)

# The group attack test also links the server's units (its checkpoint case).
$(B)/tests/test_group_attack: tests/test_group_attack.c $(B)/obj/tests/proc.o $(filter-out %/main.o,$(SERVER_OBJ)) $(B)/libproto.a $(B)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Iserver $(CFLAGS) $(filter-out %.h,$^) -o $@ -lcmocka $(NET_LIBS) $(LDLIBS)

# The checkpoint's and the lr schedule's tests link the server's units (all but main.c).
$(B)/tests/test_checkpoint $(B)/tests/test_lr_schedule: $(B)/tests/%: tests/%.c $(filter-out %/main.o,$(SERVER_OBJ)) $(B)/libproto.a $(B)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Iserver $(CFLAGS) $(filter-out %.h,$^) -o $@ -lcmocka $(NET_LIBS) $(LDLIBS)

# Tests: one cmocka program per tests/test_*.c, linked with the common
# library and tests/proc.c (running the programs as processes, for the tests
# that do); programs are tested as programs by the tests/test_*.sh scripts.
$(B)/tests/%: tests/%.c $(B)/obj/tests/proc.o $(B)/libproto.a $(B)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DFIXTURE_DIR='"$(FIXTURE_DIR)"' $(CFLAGS) $(filter-out %.h,$^) -o $@ -lcmocka $(NET_LIBS) $(LDLIBS)

FIXTURE_DIR ?= $(abspath tests/fixtures)

# The layer engine's test also reads the PyTorch fixtures too big to commit
# (mlp 22 MB, widecnn 114 MB), made here when PyTorch is there (else
# test_layers skips them and says so).
GEN_FIXTURES := $(B)/fixtures/mlp_pytorch_ref.safetensors $(B)/fixtures/widecnn_pytorch_ref.safetensors
$(B)/tests/test_layers: override CPPFLAGS += -DGEN_FIXTURE_DIR='"$(abspath $(B)/fixtures)"'
$(GEN_FIXTURES): tests/fixtures/make_model_fixtures.py tests/pytorch_model.py
	@if $(PYTORCH_PYTHON) -c 'import torch, numpy' 2>/dev/null; then \
	    $(PYTORCH_PYTHON) tests/fixtures/make_model_fixtures.py "$(MNIST_DIR)" $(B)/fixtures \
	        $(patsubst $(B)/fixtures/%_pytorch_ref.safetensors,%,$@); \
	else echo "$@: not made ($(PYTORCH_PYTHON) has no torch); test_layers skips it"; fi

# The server's message handler under the fuzzer: tests/fuzz/. make check
# replays the corpus and the crashers (fuzz_replay); make fuzz runs libFuzzer
# (clang, ASan + UBSan; persistent harness, dictionary tests/fuzz/server.dict)
# for FUZZ_SECONDS and keeps new crashers; new inputs it finds stay in
# build-fuzz/corpus (merge them into tests/fuzz/corpus with -merge=1).
FUZZ_SRC := tests/fuzz/fuzz_server.c $(filter-out server/main.c,$(SERVER_SRC))
$(B)/fuzz_replay: tests/fuzz/fuzz_replay.c $(FUZZ_SRC) $(B)/libproto.a $(B)/libcommon.a
	$(CC) $(CPPFLAGS) -Iserver $(CFLAGS) $(filter-out %.h,$^) -o $@ $(NET_LIBS) $(LDLIBS)

FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -O2 -march=native -g -fsanitize=address,undefined -fno-omit-frame-pointer \
    -fsanitize-coverage-ignorelist=$(abspath tests/fuzz/coverage-ignore.txt) \
    -fsanitize-ignorelist=$(abspath tests/fuzz/asan-ignore.txt)
fuzz:
	$(MAKE) B=build-fuzz CC=clang CFLAGS="$(FUZZ_FLAGS) -fsanitize=fuzzer-no-link" \
	    build-fuzz/libproto.a build-fuzz/libcommon.a
	clang $(CPPFLAGS:$(B)/%=build-fuzz/%) -Ibuild-fuzz/proto -Iserver $(FUZZ_FLAGS) -fsanitize=fuzzer \
	    $(FUZZ_SRC) build-fuzz/libproto.a build-fuzz/libcommon.a -o build-fuzz/fuzz_server \
	    $(NET_LIBS) $(LDLIBS)
	mkdir -p build-fuzz/corpus tests/fuzz/crashers
	cp tests/fuzz/corpus/* build-fuzz/corpus/
	build-fuzz/fuzz_server -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -dict=tests/fuzz/server.dict -artifact_prefix=tests/fuzz/crashers/ build-fuzz/corpus

# The safetensors reader under the fuzzer (model files and checkpoints come
# from disk, and could come from anywhere): make check replays
# tests/fuzz/corpus-safetensors with fuzz_replay.c's main; make
# fuzz-safetensors runs libFuzzer for FUZZ_SECONDS, adds what it learns to
# build-fuzz/corpus-safetensors and keeps crashers in
# tests/fuzz/crashers-safetensors/.
ST_FUZZ_SRC := tests/fuzz/fuzz_safetensors.c
$(B)/fuzz_replay_safetensors: tests/fuzz/fuzz_replay.c $(ST_FUZZ_SRC) $(B)/libproto.a $(B)/libcommon.a
	$(CC) $(CPPFLAGS) $(CFLAGS) $(filter-out %.h,$^) -o $@ $(NET_LIBS) $(LDLIBS)

fuzz-safetensors:
	$(MAKE) B=build-fuzz CC=clang CFLAGS="$(FUZZ_FLAGS) -fsanitize=fuzzer-no-link" build-fuzz/libcommon.a
	clang $(CPPFLAGS:$(B)/%=build-fuzz/%) $(FUZZ_FLAGS) -fsanitize=fuzzer \
	    $(ST_FUZZ_SRC) build-fuzz/libcommon.a -o build-fuzz/fuzz_safetensors $(LDLIBS)
	mkdir -p build-fuzz/corpus-safetensors tests/fuzz/crashers-safetensors
	cp tests/fuzz/corpus-safetensors/* build-fuzz/corpus-safetensors/
	build-fuzz/fuzz_safetensors -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -dict=tests/fuzz/safetensors.dict \
	    -artifact_prefix=tests/fuzz/crashers-safetensors/ build-fuzz/corpus-safetensors

# The gate's ZMTP parser and framer under the fuzzer (tests/fuzz/fuzz_gate.c:
# the bytes a peer sends on one connection, each message echoed back):
# fuzz_replay_gate replays tests/fuzz/corpus-gate and the crashers without
# libFuzzer; make fuzz-gate runs libFuzzer for FUZZ_SECONDS, adds what it
# learns to build-fuzz/corpus-gate and keeps crashers in
# tests/fuzz/crashers-gate/.
$(B)/fuzz_replay_gate: tests/fuzz/fuzz_replay.c tests/fuzz/fuzz_gate.c server/gate.c $(B)/libproto.a $(B)/libcommon.a
	$(CC) $(CPPFLAGS) -Iserver $(CFLAGS) $(filter-out server/gate.c,$(filter-out %.h,$^)) -o $@ $(NET_LIBS) $(LDLIBS)

fuzz-gate:
	$(MAKE) B=build-fuzz CC=clang CFLAGS="$(FUZZ_FLAGS) -fsanitize=fuzzer-no-link" \
	    build-fuzz/libproto.a build-fuzz/libcommon.a
	clang $(CPPFLAGS:$(B)/%=build-fuzz/%) -Ibuild-fuzz/proto -Iserver $(FUZZ_FLAGS) -fsanitize=fuzzer \
	    tests/fuzz/fuzz_gate.c build-fuzz/libproto.a build-fuzz/libcommon.a -o build-fuzz/fuzz_gate \
	    $(NET_LIBS) $(LDLIBS)
	mkdir -p build-fuzz/corpus-gate tests/fuzz/crashers-gate
	cp tests/fuzz/corpus-gate/* build-fuzz/corpus-gate/
	build-fuzz/fuzz_gate -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    -dict=tests/fuzz/gate.dict -artifact_prefix=tests/fuzz/crashers-gate/ build-fuzz/corpus-gate

# The whole suite again, built with AddressSanitizer and UBSan into
# build-asan/ (any report fails the test that triggered it).
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
asan:
	LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp) UBSAN_OPTIONS=print_stacktrace=1 TEST_TIME_SCALE=4 \
	    $(MAKE) B=build-asan CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" check

# Optional: trains every model of the catalogue briefly (worker --basic
# --model M, 2,000 images, 1 epoch), loads each file into its PyTorch module
# (tests/pytorch_model.py) with load_state_dict(strict=True) and checks that
# PyTorch's test accuracy on 1,000 images is ours (within one image); then
# the same for the saved runs' models in results/. Needs Debian's
# python3-torch (not installed by deploy/install-deps.sh: 1 GB).
PYTORCH_PYTHON ?= /usr/bin/python3
CHECK_PYTORCH_DIR := $(B)/check-pytorch
check-pytorch: all data
	@for m in $$($(B)/worker --help | sed -n '/^Models/,$$s/^  \([a-z0-9]*\) .*/\1/p'); do \
	    $(B)/worker --basic --model $$m --epochs 1 --train-limit 2000 --test-limit 1000 \
	        --db $(CHECK_PYTORCH_DIR)/metrics.db --out $(CHECK_PYTORCH_DIR)/$$m >/dev/null || exit 1; \
	    echo "$$m:"; $(PYTORCH_PYTHON) tests/pytorch_check.py $(CHECK_PYTORCH_DIR)/$$m/model_basic.safetensors \
	        "$(MNIST_DIR)" 1000 || exit 1; done
	@for f in results/model_basic.safetensors results/model_distributed.safetensors; do \
	    if [ -f $$f ]; then echo "$$f:"; $(PYTORCH_PYTHON) tests/pytorch_check.py $$f "$(MNIST_DIR)" || exit 1; \
	    else echo "$$f: not there (make basic / make run first)"; fi; done

$(B)/bench_sgemm: tests/bench_sgemm.c $(B)/libcommon.a
	$(CC) $(CPPFLAGS) $(CFLAGS) $(filter-out %.h,$^) -o $@ $(LDLIBS)

$(B)/bench_model: tests/bench_model.c $(B)/libcommon.a
	$(CC) $(CPPFLAGS) $(CFLAGS) $(filter-out %.h,$^) -o $@ $(LDLIBS)

$(B)/bench_ps_client: tests/bench_ps_client.c $(B)/libproto.a $(B)/libcommon.a
	$(CC) $(CPPFLAGS) $(CFLAGS) $(filter-out %.h,$^) -o $@ $(NET_LIBS) $(LDLIBS)

# The README's two commands on a fresh Debian 12 made with debootstrap, first
# call each (root; about 10 minutes, 1 the first time for debootstrap).
check-fresh:
	@tests/check-fresh.sh

# The targets below need the Debian packages and MNIST. They install them
# first, in this make, and do their work in a second make: that one reads
# this Makefile again, so what it asks pkg-config (cairo's flags) is looked
# up after deps installed it. That is what makes `make run` and `make check`
# work on their first call on a fresh machine.
NEEDS_DEPS := check check-multihost check-slurm valgrind basic run study bench bench-models bench-portable bench-ps bench-net bench-shards bench-replication
ifneq ($(DEPS_READY),1)
$(NEEDS_DEPS): deps data
	@$(MAKE) --no-print-directory DEPS_READY=1 $@
else
check: all $(TEST_BIN) $(GEN_FIXTURES) $(B)/bench_ps_client $(B)/fuzz_replay $(B)/fuzz_replay_safetensors $(B)/fuzz_replay_gate
	@$(MAKE) --no-print-directory format-check
	@BUILD=$(B) tests/run-tests.sh $(TEST_BIN) $(TEST_SH)

# Server and workers in separate network namespaces joined by a shaped
# bridge: one server host, then a group of 2 shards on 2 hosts (needs root;
# .ci/run runs it when it can).
check-multihost: all
	@BUILD=$(B) tests/multihost.sh

# The Slurm batch script on a real Slurm cluster of three namespaced hosts
# (needs root; .ci/run runs it when it can).
check-slurm: all
	@BUILD=$(B) tests/check-slurm.sh

# A short distributed run under valgrind memcheck, built into build-vg/.
valgrind:
	$(MAKE) B=build-vg CFLAGS="-O1 -g" all
	BUILD=build-vg tests/valgrind.sh

basic: all
	$(B)/worker --basic --data-dir "$(MNIST_DIR)"
	$(B)/psreport

# The distributed study: a paramserver (SHARDS=N: a group of N server
# processes) and WORKERS workers (default 2) on this machine,
# MODE=sync|async|ssp, MODEL=simpleconvnet|lenet5|mlp|widecnn; see
# deploy/run-local.sh.
run: all
	BUILD=$(B) deploy/run-local.sh

# The study as one command: the sweep in study/$(STUDY).conf (default:
# 13 runs of 5 epochs; STUDY=quick: 7 short runs), every run into
# results/study/study.db, the report in results/study/study.md.
STUDY ?= default
study: all
	BUILD=$(B) study/run-study.sh study/$(STUDY).conf

bench: all $(B)/bench_sgemm $(B)/bench_model
	@tests/bench.sh

# Every model's training speed in basic mode, 1 and 2 threads (README, Models).
bench-models: all $(B)/bench_model
	@BUILD=$(B) tests/bench-models.sh

# The portable build against a NATIVE=1 build (into build-native/).
bench-portable: all
	$(MAKE) --no-print-directory B=build-native NATIVE=1 all
	@tests/bench-portable.sh

bench-ps: all $(B)/bench_ps_client
	@BUILD=$(B) tests/bench-ps.sh

# The same short sync run across separate hosts on a shaped link, for each
# compression setting (needs root: network namespaces).
bench-net: all
	@BUILD=$(B) tests/bench-net.sh

# Sync training with S = 1, 2, 4 server hosts and 4 worker hosts, every link
# shaped to 100 Mbit/s, then the loopback figures against basic mode (needs
# root: network namespaces).
bench-shards: all
	@BUILD=$(B) tests/bench-shards.sh

# What a hot standby costs a loopback sync step, and the fail-over stall
# (median of 5 kills of a shard's primary); see tests/bench-replication.sh.
bench-replication: all
	@BUILD=$(B) tests/bench-replication.sh
endif

# Binaries, docs, systemd units (paths rewritten for PREFIX), example
# settings, the Slurm script, and MNIST when data/ has it, where the units
# and the script expect them.
UNITDIR ?= $(PREFIX)/lib/systemd/system
SHAREDIR := $(PREFIX)/share/paramserver
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/doc/paramserver \
	    $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SHAREDIR)/data
	install -m 755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 README.md LICENSE $(DESTDIR)$(PREFIX)/share/doc/paramserver/
	for u in paramserver.service paramserver-shard@.service worker@.service; do \
	    sed -e 's|/usr/local/bin|$(PREFIX)/bin|g; s|/usr/local/share|$(PREFIX)/share|g' \
	        deploy/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u && chmod 644 $(DESTDIR)$(UNITDIR)/$$u; done
	install -m 644 deploy/systemd/paramserver.env deploy/systemd/paramserver-shard.env \
	    deploy/systemd/worker.env $(DESTDIR)$(SHAREDIR)/
	install -m 755 deploy/slurm/paramserver.sbatch $(DESTDIR)$(SHAREDIR)/
	if [ -f "$(MNIST_DIR)/train-images-idx3-ubyte" ]; then \
	    install -m 644 $(MNIST_DIR)/*-ubyte $(DESTDIR)$(SHAREDIR)/data/; fi

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(notdir $(PROGRAMS)))
	rm -f $(DESTDIR)$(UNITDIR)/paramserver.service $(DESTDIR)$(UNITDIR)/paramserver-shard@.service \
	    $(DESTDIR)$(UNITDIR)/worker@.service
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/paramserver $(DESTDIR)$(SHAREDIR)

# The style of .clang-format: lists each C file that clang-format would change
# (with the count of lines) and fails if there is one; changes nothing.
# `clang-format -i FILE` applies it. Not yet part of `make check`.
FORMAT_SRC := $(wildcard common/*.[ch] proto/*.[ch] server/*.[ch] worker/*.[ch] report/*.[ch] \
    tests/*.[ch] tests/fuzz/*.c)
CLANG_FORMAT ?= clang-format
.PHONY: format-check
format-check:
	@command -v $(CLANG_FORMAT) >/dev/null || { echo "format-check: $(CLANG_FORMAT) is not" \
	    "installed: run 'make deps' (or: apt-get install clang-format)" >&2; exit 1; }
	@bad=0; for f in $(FORMAT_SRC); do \
	    out=$$($(CLANG_FORMAT) --style=file "$$f") || { echo "format-check: $(CLANG_FORMAT) failed on $$f" >&2; exit 1; }; \
	    n=$$(printf '%s\n' "$$out" | diff "$$f" - | grep -c '^<'); \
	    if [ "$$n" -ne 0 ]; then echo "$$f: $$n lines differ from .clang-format"; bad=$$((bad + 1)); fi; \
	done; \
	if [ $$bad -ne 0 ]; then echo "format-check: $$bad files differ; 'clang-format -i FILE' reformats one" >&2; exit 1; fi

clean:
	rm -rf $(B) build-asan build-fuzz build-vg build-native

-include $(shell find $(B) -name '*.d' 2>/dev/null)
