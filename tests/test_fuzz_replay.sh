#!/usr/bin/env bash
# test_fuzz_replay: the fuzzers' corpora and every crasher they ever found,
# run once more: the server's message handler (make fuzz), the
# safetensors reader (make fuzz-safetensors) and the gate (make fuzz-gate).
# Every file must be replayed:
# an empty or missing corpus fails the test instead of passing it. Nothing is
# written into the source tree.
source "$(dirname "$0")/lib.sh"

# replay PROGRAM CORPUS CRASHERS: runs PROGRAM on both directories (CRASHERS
# may be absent) and checks that it replayed every file there, at least one.
replay() {
    local prog=$1 corpus=$2 crashers=$3 dirs=("$2") files
    [ -d "$crashers" ] && dirs+=("$crashers")
    files=$(find "${dirs[@]}" -maxdepth 1 -type f ! -name '.*' | wc -l)
    [ "$files" -gt 0 ] || fail "$corpus holds no inputs: nothing to replay"
    expect_exit 0 "$(basename "$prog"): the corpus and the crashers replay without a crash" -- \
        "$prog" "${dirs[@]}"
    expect_output "replayed $files inputs without a crash" \
        "$(basename "$prog"): all $files inputs of ${dirs[*]} were replayed"
}

replay "$B/fuzz_replay" tests/fuzz/corpus tests/fuzz/crashers
replay "$B/fuzz_replay_safetensors" tests/fuzz/corpus-safetensors tests/fuzz/crashers-safetensors
replay "$B/fuzz_replay_gate" tests/fuzz/corpus-gate tests/fuzz/crashers-gate

# The test itself must fail on an empty corpus.
mkdir "$TMP/empty"
set +e
( replay "$B/fuzz_replay_safetensors" "$TMP/empty" "$TMP/none" ) >"$TMP/self.log" 2>&1
rc=$?
set -e
[ "$rc" -ne 0 ] && grep -q "holds no inputs" "$TMP/self.log" ||
    { cat "$TMP/self.log" >&2; fail "an empty corpus did not fail the replay"; }
ok "an empty corpus fails the replay"
done_testing
