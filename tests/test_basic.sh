#!/usr/bin/env bash
# test_basic: the worker program in basic mode, end to end. Trains on the
# first 24,000 MNIST training images for one epoch and checks it learns
# (>= 95% test accuracy), that it saved a model PyTorch's names and shapes
# would accept, that the metrics database holds the run, and that bad flags
# and bad data are refused with a message and a non-zero exit; --model.
source "$(dirname "$0")/lib.sh"
W=$B/worker

expect_exit 0 "--help works" -- $W --help
expect_output "--train-limit" "--help lists the flags"
expect_exit 2 "neither --basic nor --server is refused" -- $W
expect_output "exactly one of --basic or --server" "the message says what to give"
expect_exit 2 "a bad --epochs is refused" -- $W --basic --epochs 0
expect_output "--epochs '0' is not a whole number from 1" "the message names the flag and range"
expect_exit 2 "a non-numeric --lr is refused" -- $W --basic --lr fast
expect_exit 1 "a missing data directory is an error" -- $W --basic --data-dir "$TMP/nowhere" --db "$TMP/m.db"
expect_output "nowhere/train-images-idx3-ubyte" "the message names the missing file"
mkdir -p "$TMP/bad"
head -c 1000 "$MNIST_DIR/train-images-idx3-ubyte" >"$TMP/bad/train-images-idx3-ubyte"
cp "$MNIST_DIR/train-labels-idx1-ubyte" "$TMP/bad/"
expect_exit 1 "a truncated images file is an error" -- $W --basic --data-dir "$TMP/bad" --db "$TMP/m.db"
expect_output "truncated" "the message says truncated"

expect_exit 0 "basic mode trains 1 epoch on 24,000 images" -- \
    $W --basic --data-dir "$MNIST_DIR" --epochs 1 --train-limit 24000 --db "$TMP/m.db" --out "$TMP/model"
tail -3 "$TMP/cmd.log"
acc=$(sed -n 's/^summary: .*test_accuracy=\([0-9.]*\).*/\1/p' "$TMP/cmd.log")
[ -n "$acc" ] || fail "no summary line"
awk -v a="$acc" 'BEGIN { exit !(a >= 95.0) }' || fail "test accuracy $acc% < 95%"
ok "test accuracy $acc% >= 95%"
[ "$(tail -1 "$TMP/cmd.log" | cut -d: -f1)" = summary ] || fail "the last line is not the summary"
ok "the last line is the summary"

f="$TMP/model/model_basic.safetensors"
[ -s "$f" ] || fail "no model file"
hdr=$(python3 - "$f" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
print(" ".join(f"{k}:{v['dtype']}:{v['shape']}" for k, v in h.items() if k != "__metadata__").replace(" ", ""))
PY
)
want='conv1.weight:F32:[32,1,3,3]conv1.bias:F32:[32]conv2.weight:F32:[64,32,3,3]conv2.bias:F32:[64]fc1.weight:F32:[128,1600]fc1.bias:F32:[128]fc2.weight:F32:[10,128]fc2.bias:F32:[10]'
[ "$(echo "$hdr" | tr -d ' ')" = "$want" ] || fail "model tensors: $hdr"
ok "the model file has PyTorch's state_dict names, dtypes and shapes"

q() { sqlite3 "$TMP/m.db" "$1"; }
[ "$(q "select mode||','||status||','||workers from runs")" = "basic,done,1" ] || fail "runs row"
[ "$(q "select count(*) from steps")" = 375 ] || fail "steps rows: $(q 'select count(*) from steps')"
[ "$(q "select count(*) from epochs where test_accuracy >= 95")" = 1 ] || fail "epochs row"
ok "the database holds the run, 375 steps and the epoch"
[ "$(q "pragma journal_mode")" = wal ] || fail "not WAL"
ok "the database is in WAL mode"

expect_exit 0 "psreport renders the run" -- $B/psreport --db "$TMP/m.db" --out "$TMP/r.png"
[ "$(head -c 8 "$TMP/r.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "not a PNG"
ok "the report is a PNG"
expect_exit 2 "an unknown --model is refused" -- $W --basic --model lenet
expect_output "is not one of simpleconvnet, lenet5, mlp, widecnn" "the message lists the models"
expect_exit 0 "--model lenet5 trains" -- $W --basic --model lenet5 --data-dir "$MNIST_DIR" \
    --epochs 1 --train-limit 2000 --test-limit 500 --db "$TMP/l.db" --out "$TMP/lenet5"
head -c 1200 "$TMP/lenet5/model_basic.safetensors" | grep -q '"model":"lenet5".*"fc3.weight":{"dtype":"F32","shape":\[10,84\]' ||
    fail "the lenet5 file lacks its model name or fc3.weight [10,84]"
[ "$(sqlite3 "$TMP/l.db" "select detail from events where kind = 'model'")" = lenet5 ] || fail "model event"
ok "its file has LeNet-5's tensors and names the model, as does the database"
done_testing
