#!/usr/bin/env bash
# test_dataset: --dataset fashion-mnist end to end. Basic mode trains on
# Debian's Fashion-MNIST (gzipped IDX, linked into data/fashion-mnist by
# make data) and records the data set in the database and the plot's
# title; a paramserver with --dataset fashion-mnist tells its worker, and a
# worker whose --data-dir holds other data (MNIST) refuses by the
# fingerprint, then the same worker name with the right data rejoins and
# trains. Unknown data sets and a missing directory are refused clearly.
source "$(dirname "$0")/lib.sh"
FASHION=${FASHION_MNIST_DIR:-data/fashion-mnist}
[ -e "$FASHION/train-images-idx3-ubyte.gz" ] ||
    fail "no Fashion-MNIST in $FASHION: run make data (it links Debian's dataset-fashion-mnist: apt-get install dataset-fashion-mnist)"
W=$B/worker

expect_exit 2 "an unknown --dataset is refused by the worker" -- $W --basic --dataset cifar10
expect_output "--dataset 'cifar10' is not one of mnist, fashion-mnist" "the message lists the data sets"
expect_exit 2 "and by the server" -- $B/paramserver --dataset cifar10
expect_output "--dataset 'cifar10' is not one of mnist, fashion-mnist" "with the same message"
expect_exit 2 "a worker of a server takes the server's data set" -- $W --server tcp://127.0.0.1:1 --dataset mnist
expect_output "with --server the server's --dataset decides" "the message says so"
expect_exit 1 "a data set whose directory is missing is an error" -- \
    env FASHION_MNIST_DIR="$TMP/none" $W --basic --dataset fashion-mnist --db "$TMP/x.db"
expect_output "this worker trains on fashion-mnist, read from $TMP/none" "the message names the data set and the directory"
expect_output "apt-get install dataset-fashion-mnist" "and says how to get it"

# Basic: one epoch of 12,000 images. MNIST reaches about 97% so; Fashion-MNIST,
# a harder data set, about 80%: under 93% shows these are not MNIST's images.
expect_exit 0 "basic mode trains on Fashion-MNIST" -- $W --basic --dataset fashion-mnist --epochs 1 \
    --train-limit 12000 --test-limit 2000 --db "$TMP/b.db" --out "$TMP/b"
acc=$(sed -n 's/^summary: .*test_accuracy=\([0-9.]*\).*/\1/p' "$TMP/cmd.log")
awk -v a="$acc" 'BEGIN { exit !(a >= 65 && a < 93) }' || fail "Fashion-MNIST accuracy $acc% not in [65, 93)"
ok "it learns Fashion-MNIST: $acc% after one epoch (not MNIST's ~97%)"
[ "$(rows "$TMP/b.db" 'select dataset from runs')" = fashion-mnist ] || fail "runs.dataset: $(rows "$TMP/b.db" 'select dataset from runs')"
ok "the database names the data set"
expect_exit 0 "psreport draws the run" -- $B/psreport --db "$TMP/b.db" --out "$TMP/b.png"
grep -aq "dataset.....fashion-mnist" "$TMP/b.png" || fail "the plot's PNG text has no entry dataset=fashion-mnist"
ok "the plot names the data set (in its title, and in its PNG text for this test)"

# Distributed: the server's data set reaches the worker; other data are refused.
$B/paramserver --bind 'tcp://127.0.0.1:*' --workers 1 --dataset fashion-mnist --epochs 1 \
    --train-limit 6000 --test-limit 2000 --db "$TMP/d.db" --out "$TMP/d" --worker-timeout 60 \
    >"$TMP/server.log" 2>&1 &
srv=$!; pids+=("$srv")
wait_for 30 "the server to listen" has_endpoint "$TMP/server.log"
ep=$(endpoint "$TMP/server.log")
expect_exit 1 "a worker whose --data-dir holds MNIST refuses the server's Fashion-MNIST" -- \
    $W --server "$ep" --name w0 --data-dir "$MNIST_DIR" --timeout 30
expect_output "training images in $MNIST_DIR are not the server's fashion-mnist" "the message says the data differ"
expect_exit 0 "the same worker with the data set's default directory rejoins and trains" -- \
    $W --server "$ep" --name w0 --timeout 30
wait "$srv" || { cat "$TMP/server.log"; fail "the server failed"; }
grep -q "data set fashion-mnist" "$TMP/server.log" || fail "the server's log does not name the data set"
[ "$(rows "$TMP/d.db" 'select dataset || status from runs')" = fashion-mnistdone ] || fail "the run: $(rows "$TMP/d.db" 'select dataset, status from runs')"
acc=$(rows "$TMP/d.db" 'select final_accuracy from runs')
awk -v a="$acc" 'BEGIN { exit !(a >= 50 && a < 93) }' || fail "distributed Fashion-MNIST accuracy $acc% not in [50, 93)"
ok "the run is recorded as a Fashion-MNIST run ($acc%)"
done_testing
