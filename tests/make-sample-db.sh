#!/usr/bin/env bash
# Writes a sample metrics database (the schema of common/metrics.h, version 1)
# with made-up but realistic figures, so psreport can be exercised without
# training anything. The data are deterministic (awk with a fixed seed).
#
#   run 1  basic  1 worker,  5 epochs, 4690 steps, loss decaying with noise
#   run 2  sync   2 workers, 5 epochs, 2345 steps each
#   run 3  async  3 workers, 5 epochs, worker 2 slower than the others
#   run 4  ssp    4 workers, staleness 3, 3 epochs
#   run 5  sync   status 'failed', no steps and no epochs (the empty-run case)
#
# usage: tests/make-sample-db.sh OUT.db     (OUT.db is replaced if it exists)
set -euo pipefail

if [ $# -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    echo "usage: $0 OUT.db" >&2
    exit 2
fi
out=$1
command -v sqlite3 >/dev/null || { echo "$0: needs the sqlite3 command-line tool" >&2; exit 1; }
rm -f "$out" "$out-wal" "$out-shm"

{
cat <<'EOF'
PRAGMA journal_mode=WAL;
PRAGMA user_version = 1;
CREATE TABLE runs(
 id INTEGER PRIMARY KEY, mode TEXT, started_at REAL, ended_at REAL, host TEXT,
 workers INTEGER, epochs INTEGER, batch_size INTEGER, lr REAL, momentum REAL,
 seed INTEGER, threads INTEGER, train_limit INTEGER, staleness INTEGER, dataset TEXT,
 status TEXT, final_accuracy REAL, train_seconds REAL);
CREATE TABLE workers(
 run_id INTEGER NOT NULL, worker_id INTEGER NOT NULL, name TEXT, host TEXT,
 shard_size INTEGER, threads INTEGER, incarnation INTEGER NOT NULL, joined_at REAL,
 PRIMARY KEY(run_id, worker_id, incarnation));
CREATE TABLE steps(
 run_id INTEGER NOT NULL, worker_id INTEGER NOT NULL, step INTEGER, epoch INTEGER,
 loss REAL, t REAL);
CREATE INDEX steps_run_worker ON steps(run_id, worker_id);
CREATE TABLE epochs(
 run_id INTEGER NOT NULL, worker_id INTEGER NOT NULL, epoch INTEGER, train_loss REAL,
 test_accuracy REAL, epoch_seconds REAL, compute_seconds REAL, push_seconds REAL,
 pull_seconds REAL, wait_seconds REAL, images INTEGER, bytes_sent INTEGER,
 bytes_received INTEGER, t REAL);
CREATE INDEX epochs_run_worker ON epochs(run_id, worker_id);
CREATE TABLE server_stats(
 run_id INTEGER NOT NULL, t REAL, updates_applied INTEGER, version INTEGER,
 mean_staleness REAL, max_staleness INTEGER);
CREATE INDEX server_stats_run ON server_stats(run_id);
CREATE TABLE events(
 run_id INTEGER NOT NULL, t REAL, worker_id INTEGER, kind TEXT, detail TEXT);
CREATE INDEX events_run ON events(run_id);
EOF

awk 'BEGIN {
    srand(42);
    print "BEGIN;";
    t0 = 1732780800;   # 2024-11-28 08:00 UTC
    # id mode workers epochs batch lr staleness seconds_per_step final
    run(1, "basic", 1, 5, 64, 0.01, 0, 0.021, 0);
    run(2, "sync",  2, 5, 64, 0.01, 0, 0.026, 0);
    run(3, "async", 3, 5, 64, 0.01, 0, 0.016, 0);
    run(4, "ssp",   4, 3, 64, 0.01, 3, 0.012, 0);
    printf "INSERT INTO runs VALUES(5,\"sync\",%.3f,%.3f,\"node1\",2,5,64,0.01,0.9,42,2,0,0,\"data\",\"failed\",NULL,NULL);\n", t0 + 9000, t0 + 9003;
    print "COMMIT;";
}
function gauss() { return sqrt(-2 * log(1 - rand())) * cos(6.283185307 * rand()); }
# The loss a worker sees after it has taken k steps of a run whose model has
# seen g updates in all: fast early drop, slow tail, multiplicative noise.
function loss(g) {
    base = 0.035 + 2.0 * exp(-g / 120) + 0.22 * exp(-g / 900) + 0.05 * exp(-g / 4000);
    return base * exp(0.45 * gauss());
}
function run(id, mode, nw, ne, bs, lr, stal, sps, fin,    w, e, k, steps_per, start, tw, acc, slow, g, secs, T, last) {
    start = t0 + id * 2000;
    steps_per = int(60000 / nw / bs + 0.999);
    T = 0;
    for (w = 0; w < nw; w++) {
        slow = (mode == "async" && w == 2) ? 1.35 : 1 + 0.04 * w;
        printf "INSERT INTO workers VALUES(%d,%d,\"worker-%d\",\"node%d\",%d,%d,0,%.3f);\n",
            id, w, w, w + 1, int(60000 / nw), 2, start + 0.2 * w;
        tw = 0.5; k = 0;
        for (e = 1; e <= ne; e++) {
            sum = 0; ts = tw;
            for (i = 0; i < steps_per; i++) {
                k++;
                g = (mode == "basic") ? k : k * nw;
                tw += sps * slow * (1 + 0.1 * (rand() - 0.5));
                l = loss(g); sum += l;
                printf "INSERT INTO steps VALUES(%d,%d,%d,%d,%.6f,%.4f);\n", id, w, k, e, l, tw;
            }
            # accuracy climbs towards ~99.2 (async a little lower, slower worker lower still)
            acc = 99.25 - 1.3 * exp(-(e - 1) / 1.4) - (mode == "async" ? 0.15 : 0) \
                  - (mode == "ssp" ? 0.08 : 0) - 0.05 * (slow > 1.2) + 0.06 * gauss();
            if (acc > 99.4) acc = 99.4;
            secs = tw - ts;
            tw += 1.2;   # evaluation time
            printf "INSERT INTO epochs VALUES(%d,%d,%d,%.6f,%.4f,%.3f,%.3f,%.3f,%.3f,%.3f,%d,%d,%d,%.4f);\n",
                id, w, e, sum / steps_per, acc, secs, secs * 0.7, secs * 0.1, secs * 0.1,
                secs * 0.1, (steps_per * bs > 60000 / nw ? int(60000 / nw) : steps_per * bs),
                (mode == "basic") ? 0 : steps_per * 1738000, (mode == "basic") ? 0 : steps_per * 1738000, tw;
            if (w == 0 && e == ne) last = acc;
        }
        if (tw > T) T = tw;
    }
    if (mode != "basic")
        for (s = 1; s <= 20; s++)
            printf "INSERT INTO server_stats VALUES(%d,%.3f,%d,%d,%.3f,%d);\n",
                id, T * s / 20, s * 500, s * 500, (mode == "sync") ? 0 : 0.8 + rand(), (mode == "sync") ? 0 : 3;
    printf "INSERT INTO events VALUES(%d,0,-1,\"start\",\"sample run\");\n", id;
    printf "INSERT INTO runs VALUES(%d,\"%s\",%.3f,%.3f,\"node0\",%d,%d,%d,%g,0.9,42,%d,0,%d,\"data\",\"done\",%.4f,%.3f);\n",
        id, mode, start, start + T + 2, nw, ne, bs, lr, 2, stal, last, T;
}'
} | sqlite3 "$out" >/dev/null

echo "$out"
