# paramserver: a parameter server that trains SimpleConvNet on MNIST, in C.
# One GNU Makefile. `make` builds the programs into build/; `make check` runs
# the tests; `make run` trains with a server and workers; `make basic` trains
# in one process; `make bench` measures speed. See README.md.

CC       ?= cc
CFLAGS   ?= -O3 -march=native -g
# What the code needs is added with override, so that `make CFLAGS=...`
# changes optimisation and sanitizers but keeps these.
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -pthread -MMD -MP
override CPPFLAGS += -Icommon -Iproto -I$(B)/proto
LDLIBS   += -lopenblas -lsqlite3 -lz -lm -pthread
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

.PHONY: valgrind bench-net check-multihost fuzz asan all deps data check check-pytorch bench bench-ps basic run install uninstall clean
all: $(PROGRAMS)

deps:
	@deploy/install-deps.sh

data:
	@deploy/fetch-mnist.sh "$(MNIST_DIR)"

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

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

$(B)/psreport: $(REPORT_OBJ) $(B)/libcommon.a
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(CAIRO_LIBS) -lpng $(LDLIBS)

# Tests: one cmocka program per tests/test_*.c, linked with the common
# library; programs are tested as programs by the tests/test_*.sh scripts.
$(B)/tests/%: tests/%.c $(B)/libproto.a $(B)/libcommon.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DFIXTURE_DIR='"$(FIXTURE_DIR)"' $(CFLAGS) $(filter-out %.h,$^) -o $@ -lcmocka $(NET_LIBS) $(LDLIBS)

FIXTURE_DIR ?= $(abspath tests/fixtures)

# The server's message handler under the fuzzer: tests/fuzz/. make check
# replays the corpus and the crashers (fuzz_replay); make fuzz runs libFuzzer
# (clang, ASan + UBSan; persistent harness, dictionary tests/fuzz/server.dict)
# for FUZZ_SECONDS and keeps new crashers; new inputs it finds stay in
# build-fuzz/corpus (merge them into tests/fuzz/corpus with -merge=1).
FUZZ_SRC := tests/fuzz/fuzz_server.c server/server.c server/gate.c
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


check: deps data all $(TEST_BIN) $(B)/bench_ps_client $(B)/fuzz_replay
	@BUILD=$(B) tests/run-tests.sh $(TEST_BIN) $(TEST_SH)

# Server and workers in separate network namespaces joined by a shaped
# bridge (needs root; .ci/run runs it when it can).
check-multihost: deps data all
	@BUILD=$(B) tests/multihost.sh

# A short distributed run under valgrind memcheck (build-vg/: no
# -march=native, which valgrind cannot decode).
valgrind: deps data
	$(MAKE) B=build-vg CFLAGS="-O1 -g" all
	BUILD=build-vg tests/valgrind.sh

# The whole suite again, built with AddressSanitizer and UBSan into
# build-asan/ (any report fails the test that triggered it).
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
asan:
	LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp) UBSAN_OPTIONS=print_stacktrace=1 \
	    $(MAKE) B=build-asan CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" check

# Optional: loads the saved models into PyTorch's SimpleConvNet with
# load_state_dict(strict=True) and compares PyTorch's test accuracy with ours.
# Needs Debian's python3-torch (not installed by deploy/install-deps.sh: 1 GB).
PYTORCH_PYTHON ?= /usr/bin/python3
check-pytorch: data
	@for f in results/model_basic.safetensors results/model_distributed.safetensors; do \
	    if [ -f $$f ]; then echo "$$f:"; $(PYTORCH_PYTHON) tests/pytorch_check.py $$f "$(MNIST_DIR)" || exit 1; \
	    else echo "$$f: not there (make basic / make run first)"; fi; done

basic: deps data all
	$(B)/worker --basic --data-dir "$(MNIST_DIR)"
	$(B)/psreport

# The distributed study: a paramserver and WORKERS workers (default 2) on
# this machine, MODE=sync|async|ssp; see deploy/run-local.sh.
run: deps data all
	deploy/run-local.sh

$(B)/bench_sgemm: tests/bench_sgemm.c $(B)/libcommon.a
	$(CC) $(CPPFLAGS) $(CFLAGS) $(filter-out %.h,$^) -o $@ $(LDLIBS)

$(B)/bench_ps_client: tests/bench_ps_client.c $(B)/libproto.a $(B)/libcommon.a
	$(CC) $(CPPFLAGS) $(CFLAGS) $(filter-out %.h,$^) -o $@ $(NET_LIBS) $(LDLIBS)

bench: deps data all $(B)/bench_sgemm
	@tests/bench.sh

# Binaries, docs, systemd units (paths rewritten for PREFIX), example
# settings, the Slurm script, and MNIST when data/ has it, where the units
# and the script expect them.
UNITDIR ?= $(PREFIX)/lib/systemd/system
SHAREDIR := $(PREFIX)/share/paramserver
bench-ps: deps data all $(B)/bench_ps_client
	@BUILD=$(B) tests/bench-ps.sh

# The same short sync run across separate hosts on a shaped link, for each
# compression setting (needs root: network namespaces).
bench-net: deps data all
	@BUILD=$(B) tests/bench-net.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/doc/paramserver \
	    $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SHAREDIR)/data
	install -m 755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 README.md LICENSE $(DESTDIR)$(PREFIX)/share/doc/paramserver/
	for u in paramserver.service worker@.service; do \
	    sed -e 's|/usr/local/bin|$(PREFIX)/bin|g; s|/usr/local/share|$(PREFIX)/share|g' \
	        deploy/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u && chmod 644 $(DESTDIR)$(UNITDIR)/$$u; done
	install -m 644 deploy/systemd/paramserver.env deploy/systemd/worker.env $(DESTDIR)$(SHAREDIR)/
	install -m 755 deploy/slurm/paramserver.sbatch $(DESTDIR)$(SHAREDIR)/
	if [ -f "$(MNIST_DIR)/train-images-idx3-ubyte" ]; then \
	    install -m 644 $(MNIST_DIR)/*-ubyte $(DESTDIR)$(SHAREDIR)/data/; fi

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(notdir $(PROGRAMS)))
	rm -f $(DESTDIR)$(UNITDIR)/paramserver.service $(DESTDIR)$(UNITDIR)/worker@.service
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/paramserver $(DESTDIR)$(SHAREDIR)

clean:
	rm -rf $(B) build-asan build-fuzz build-vg

-include $(shell find $(B) -name '*.d' 2>/dev/null)
