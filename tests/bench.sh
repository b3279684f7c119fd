#!/usr/bin/env bash
# make bench: training speed of basic mode with 1 and 2 threads next to
# PyTorch's and the OpenBLAS sgemm ceiling, measured in the same run; then
# images/s at batch 16, 32, 64, 128, and where a step's time goes (per-stage
# profile, 1 and 2 threads).
#
# The machine is shared: every round runs ours, PyTorch and sgemm one after
# the other (interleaved), and each figure is the median of RUNS rounds
# (default 3) of one epoch on TRAIN_LIMIT images (default 30000). Compare the
# ratios, not the absolute numbers, across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
limit=${TRAIN_LIMIT:-30000}
data=${MNIST_DIR:-data}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
py=${PYTORCH_PYTHON:-/usr/bin/python3}
have_torch=0
"$py" -c 'import torch' 2>/dev/null && have_torch=1

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$runs"); do
    for t in 1 2; do
        build/worker --basic --epochs 1 --threads "$t" --train-limit "$limit" --test-limit 1000 \
            --db "$tmp/bench.db" --out "$tmp" |
            sed -n 's/.*images_per_second=\([0-9.]*\).*/\1/p' >>"$tmp/ours$t"
        # PyTorch's loop feeds pre-normalised tensors, without the original
        # script's DataLoader: PyTorch's compute speed, not ~48 s/epoch.
        if [ "$have_torch" = 1 ]; then
            "$py" tests/pytorch_train.py "$data" 1 1 "$limit" "$t" |
                sed -n 's/.*images_per_second=\([0-9.]*\).*/\1/p' >>"$tmp/torch$t"
        fi
        build/bench_sgemm "$t" | sed -n 's/.*gflops=\([0-9.]*\).*/\1/p' >>"$tmp/sgemm$t"
    done
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

printf '%-8s %10s %9s %8s %14s %9s %10s\n' threads images/s GFLOP/s "of sgemm" "sgemm GFLOP/s" \
    PyTorch "ours/PyT"
best_torch=0
for t in 1 2; do
    ips=$(median <"$tmp/ours$t")
    sg=$(median <"$tmp/sgemm$t")
    pt=0
    [ "$have_torch" = 1 ] && pt=$(median <"$tmp/torch$t")
    best_torch=$(awk -v a="$best_torch" -v b="$pt" 'BEGIN { print (b > a ? b : a) }')
    awk -v t="$t" -v ips="$ips" -v sg="$sg" -v pt="$pt" 'BEGIN {
        gf = ips * 15.4e6 / 1e9
        printf "%-8d %10.0f %9.1f %7.0f%% %14.1f %9s %10s\n", t, ips, gf, 100 * gf / sg, sg,
            (pt > 0 ? sprintf("%.0f", pt) : "-"), (pt > 0 ? sprintf("%.2fx", ips / pt) : "-") }'
done
awk -v a="$(median <"$tmp/ours1")" -v b="$(median <"$tmp/ours2")" \
    -v c="$(median <"$tmp/sgemm1")" -v d="$(median <"$tmp/sgemm2")" \
    'BEGIN { printf "2 threads vs 1: %.2fx (sgemm: %.2fx)\n", b / a, d / c }'
if [ "$have_torch" = 1 ]; then
    awk -v o="$(median <"$tmp/ours2")" -v b="$best_torch" \
        'BEGIN { printf "2 threads vs PyTorch best thread count: %.2fx\n", o / b }'
else
    echo "(PyTorch not installed: apt-get install python3-torch to compare)"
fi
echo "(training: forward + backward = 15.4 MFLOP per image; sgemm: 2048^3, OpenBLAS;"
echo " effective GFLOP/s counts the direct convolution's flops, so > 100% of sgemm is possible)"

echo
echo "images/s by batch size (bench_model: engine_step, median of 3 passes of 10000 images):"
printf '%-8s' threads
for b in 16 32 64 128; do printf '%10s' "batch $b"; done
echo
for t in 1 2; do
    printf '%-8d' "$t"
    for b in 16 32 64 128; do
        build/bench_model "$data" "$t" "$b" 10000 |
            sed -n 's/.*images_per_second=\([0-9.]*\).*/\1/p' >"$tmp/b$t-$b"
        printf '%10s' "$(cat "$tmp/b$t-$b")"
    done
    echo
done
printf '%-8s' "2 vs 1"
for b in 16 32 64 128; do
    printf '%10s' "$(awk -v a="$(cat "$tmp/b1-$b")" -v b="$(cat "$tmp/b2-$b")" \
        'BEGIN { printf "%.2fx", b / a }')"
done
echo

echo
for t in 1 2; do
    build/bench_model "$data" "$t" 64 10000 profile | tail -n +2
done
