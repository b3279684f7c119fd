#!/usr/bin/env bash
# test_resume: the server is killed with SIGKILL in the middle of a sync run
# with 2 workers and restarted with --resume on the same address. The workers
# notice (no reply, resend, unknown connection), register again under their
# names and resume after their last checkpointed step; the run finishes in the
# same database with a test accuracy within 0.3 points of the same run
# without the crash.
source "$(dirname "$0")/lib.sh"
FLAGS=(--workers 2 --mode sync --epochs 2 --train-limit 30000 --test-limit 5000 --data-dir "$MNIST_DIR" --threads 2)

server() { # server NAME BIND EXTRA...: starts a paramserver in the background
    local name=$1 bind=$2; shift 2
    $B/paramserver --bind "$bind" "${FLAGS[@]}" --db "$TMP/$name.db" --out "$TMP/$name" "$@" \
        >>"$TMP/$name.server.log" 2>&1 &
    srv=$!; pids+=("$srv")
    wait_for 30 "the server to listen" has_endpoint "$TMP/$name.server.log"
}
workers() { # workers NAME: two workers against that server, in the background
    local ep; ep=$(endpoint "$TMP/$1.server.log")
    for k in 0 1; do
        $B/worker --server "$ep" --name "w$k" --data-dir "$MNIST_DIR" --timeout 120 \
            >"$TMP/$1.worker$k.log" 2>&1 &
        wpid[$k]=$!; pids+=("$!")
    done
}
finish() { # finish NAME: waits for the server and workers, all must exit 0
    wait "$srv" || { cat "$TMP/$1.server.log"; fail "$1: the server failed"; }
    for k in 0 1; do wait "${wpid[$k]}" || { cat "$TMP/$1.worker$k.log"; fail "$1: worker $k failed"; }; done
}

server plain 'tcp://127.0.0.1:*' --checkpoint-every 0
workers plain
finish plain
a=$(rows "$TMP/plain.db" 'select final_accuracy from runs')
ok "the run without a crash reaches $a%"

server crash 'tcp://127.0.0.1:*' --checkpoint-every 20
ep=$(endpoint "$TMP/crash.server.log")
workers crash
wait_for 120 "150 steps of each worker" at_least "$TMP/crash.db" 'select min(c) from (select count(*) c from steps group by worker_id)' 150
kill -9 "$srv"
wait "$srv" 2>/dev/null || true
before=$(rows "$TMP/crash.db" 'select count(*) from steps')
ok "server killed with SIGKILL after $before steps"
[ -f "$TMP/crash/checkpoint.safetensors" ] || fail "no checkpoint written"
server crash "$ep" --checkpoint-every 20 --resume
ok "server restarted with --resume on $ep"
finish crash
grep -q "resumed run 1" "$TMP/crash.server.log" || fail "no resume in the server log"
for k in 0 1; do
    grep -q "rejoined as incarnation 1" "$TMP/crash.worker$k.log" || { cat "$TMP/crash.worker$k.log"; fail "worker $k did not rejoin"; }
done
ok "both workers rejoined as incarnation 1 and finished"
[ "$(rows "$TMP/crash.db" 'select count(*) || status from runs')" = 1done ] || fail "runs: $(rows "$TMP/crash.db" 'select * from runs')"
[ "$(rows "$TMP/crash.db" "select count(*) from events where kind = 'resumed'")" = 1 ] || fail "no resumed event"
[ "$(rows "$TMP/crash.db" "select count(*) from workers where incarnation = 1")" = 2 ] || fail "no incarnation-1 worker rows"
ok "one run, done, in the same database, with the resume and the rejoins recorded"
b=$(rows "$TMP/crash.db" 'select final_accuracy from runs')
awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.3) }' ||
    fail "accuracy after the crash $b% is not within 0.3 of $a%"
ok "accuracy after crash and resume $b% is within 0.3 points of $a%"
done_testing
