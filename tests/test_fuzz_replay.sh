#!/usr/bin/env bash
# test_fuzz_replay: the fuzzer's corpus and every crasher it ever found, run
# once more through the server's message handler (make fuzz finds them).
source "$(dirname "$0")/lib.sh"
mkdir -p tests/fuzz/crashers
expect_exit 0 "the corpus and the crashers replay without a crash" -- \
    $B/fuzz_replay tests/fuzz/corpus tests/fuzz/crashers
cat "$TMP/cmd.log"
done_testing
