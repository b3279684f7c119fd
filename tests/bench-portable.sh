#!/usr/bin/env bash
# make bench-portable: the default (portable, run-time dispatched) build's
# training speed against a `make NATIVE=1` build (-march=native) of the same
# code, in one run. Runs alternate between the two builds so that the shared
# machine's load hits both alike; each figure is the median of RUNS (default
# 5) one-epoch basic runs on TRAIN_LIMIT images (default 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
limit=${TRAIN_LIMIT:-20000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
speed() {
    "$1/worker" --basic --epochs 1 --threads "$2" --train-limit "$limit" --test-limit 1000 \
        --db "$tmp/bench.db" --out "$tmp" | sed -n 's/.*images_per_second=\([0-9.]*\).*/\1/p'
}
printf '%-8s %16s %16s %10s\n' threads "portable img/s" "native img/s" "portable/native"
for t in 1 2; do
    for r in $(seq "$runs"); do
        echo "p $(speed build "$t")"
        echo "n $(speed build-native "$t")"
    done >"$tmp/t$t"
    p=$(awk '$1 == "p" { print $2 }' "$tmp/t$t" | median)
    n=$(awk '$1 == "n" { print $2 }' "$tmp/t$t" | median)
    awk -v t="$t" -v p="$p" -v n="$n" 'BEGIN { printf "%-8d %16.0f %16.0f %9.1f%%\n", t, p, n, 100 * p / n }'
done
