#!/usr/bin/env bash
# make bench-models: training speed of every model of the catalogue in basic
# mode (worker --basic --model M, one epoch), with 1 and 2 threads, as the
# README's "Models" table gives it.
#
# The machine is shared: each round runs every model and thread count one
# after the other (interleaved), and each figure is the median of RUNS rounds
# (default 3). Training images per epoch: TRAIN_LIMIT (default 10000; widecnn,
# ~20x the compute per image, a tenth of it). Compare ratios across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
limit=${TRAIN_LIMIT:-10000}
build=${BUILD:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
models=$("$build/worker" --help | sed -n '/^Models/,$s/^  \([a-z0-9]*\) .*/\1/p')
[ -n "$models" ] || { echo "bench-models: $build/worker --help lists no models" >&2; exit 1; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$runs"); do
    for m in $models; do
        n=$limit
        [ "$m" = widecnn ] && n=$((limit / 10))
        for t in 1 2; do
            "$build/worker" --basic --model "$m" --data-dir "${MNIST_DIR:-data}" --epochs 1 --threads "$t" --train-limit "$n" \
                --test-limit 1000 --db "$tmp/bench.db" --out "$tmp" |
                sed -n 's/.*images_per_second=\([0-9.]*\).*/\1/p' >>"$tmp/$m.$t"
            [ -s "$tmp/$m.$t" ] || { echo "bench-models: worker --model $m failed" >&2; exit 1; }
        done
    done
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

printf '%-14s %10s %12s %12s %12s %8s %12s\n' model parameters "MFLOP/image" "1 thread" \
    "2 threads" "2 vs 1" "GFLOP/s (2)"
for m in $models; do
    # parameters from the model's --help line, FLOPs from the catalogue (bench_model)
    p=$("$build/worker" --help | sed -n "s/^  $m .*(\([0-9,]*\) parameters)/\1/p")
    f=$("$build/bench_model" "${MNIST_DIR:-data}" 1 1 1 "$m" | sed -n 's/.*mflop=\([0-9.]*\).*/\1/p')
    a=$(median <"$tmp/$m.1")
    b=$(median <"$tmp/$m.2")
    awk -v m="$m" -v p="$p" -v f="$f" -v a="$a" -v b="$b" 'BEGIN {
        printf "%-14s %10s %12.1f %12.0f %12.0f %7.2fx %12.1f\n", m, p, f, a, b, b / a, b * f / 1e3 }'
done
echo "(images/s: median of $runs rounds of one epoch on $limit training images, widecnn $((limit / 10));"
echo " training FLOPs per image: forward + backward, 2 per multiply-add)"
