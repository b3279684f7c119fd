#!/usr/bin/env bash
# test_portable: the programs built by default run on any x86-64 CPU, not
# only on the one that built them. Runs them under qemu-user emulating an
# Intel Westmere (2010: SSE4.2, no AVX, no F16C, no FMA), where any AVX
# instruction outside a run-time dispatch kills the program with SIGILL:
# the worker trains a few batches in basic mode, the paramserver starts, and
# the wire tests run (float16 conversion without F16C included).
# A `make NATIVE=1` build fails this test on a CPU with AVX, as it should.
source "$(dirname "$0")/lib.sh"
[ "$(uname -m)" = x86_64 ] || { echo "skip: not an x86-64 machine"; exit 0; }
# ASan reserves terabytes of shadow address space, which qemu-user cannot
# host: the sanitizer builds (make asan) are checked natively only.
if ldd "$B/paramserver" 2>/dev/null | grep -q libasan; then
    echo "skip: $B is a sanitizer build (qemu-user cannot host ASan's shadow memory)"
    exit 0
fi
command -v qemu-x86_64 >/dev/null || fail "qemu-x86_64 is missing (apt-get install qemu-user; deploy/install-deps.sh installs it)"
Q=(timeout 240 qemu-x86_64 -cpu Westmere)

expect_exit 0 "the paramserver prints its help on a Westmere" -- "${Q[@]}" $B/paramserver --help
expect_exit 0 "the worker trains 2 batches on a Westmere" -- "${Q[@]}" $B/worker --basic --threads 1 \
    --data-dir "$MNIST_DIR" --epochs 1 --batch-size 32 --train-limit 64 --test-limit 32 \
    --db "$TMP/m.db" --out "$TMP/model"
expect_output "^summary: epochs=1 " "it prints its summary"
[ -s "$TMP/model/model_basic.safetensors" ] || fail "no model saved"
ok "it saved its model"
expect_exit 0 "the wire tests pass on a Westmere" -- "${Q[@]}" $B/tests/test_wire
done_testing
