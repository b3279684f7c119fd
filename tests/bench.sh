#!/usr/bin/env bash
# make bench: training speed of basic mode with 1 and 2 threads next to the
# OpenBLAS sgemm ceiling measured with the same thread count in the same run.
# Each figure is the median of RUNS runs (default 3) of one epoch on
# TRAIN_LIMIT images (default 30000); the machine is shared, so compare the
# ratios, not the absolute numbers, across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
limit=${TRAIN_LIMIT:-30000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

printf '%-8s %12s %10s %14s %10s\n' threads images/s GFLOP/s "sgemm GFLOP/s" "of sgemm"
for t in 1 2; do
    ips=$(for r in $(seq "$runs"); do
        build/worker --basic --epochs 1 --threads "$t" --train-limit "$limit" --test-limit 1000 \
            --db "$tmp/bench.db" --out "$tmp" | sed -n 's/.*images_per_second=\([0-9.]*\).*/\1/p'
    done | median)
    sg=$(for r in $(seq "$runs"); do
        build/bench_sgemm "$t" | sed -n 's/.*gflops=\([0-9.]*\).*/\1/p'
    done | median)
    awk -v t="$t" -v ips="$ips" -v sg="$sg" 'BEGIN {
        gf = ips * 15.4e6 / 1e9
        printf "%-8d %12.0f %10.1f %14.1f %9.0f%%\n", t, ips, gf, sg, 100 * gf / sg }'
done
echo "(training: forward + backward = 15.4 MFLOP per image; sgemm: 2048^3, OpenBLAS)"

# PyTorch on the same machine and data, when Debian's python3-torch is there
# (not installed by install-deps: 1 GB). Its loop feeds pre-normalised
# tensors, without the original script's DataLoader, so this is PyTorch's
# compute speed, not the original script's ~48 s/epoch.
py=${PYTORCH_PYTHON:-/usr/bin/python3}
if "$py" -c 'import torch' 2>/dev/null; then
    for t in 1 2; do
        ips=$(for r in $(seq "$runs"); do
            "$py" tests/pytorch_train.py "${MNIST_DIR:-data}" 1 1 "$limit" "$t" | sed -n 's/.*images_per_second=\([0-9.]*\).*/\1/p'
        done | median)
        echo "pytorch threads=$t images/s=$ips"
    done
else
    echo "(PyTorch not installed: apt-get install python3-torch to compare)"
fi
