#!/usr/bin/env bash
# valgrind: a short distributed run (sync, 2 workers, 640 images) with the
# server and both workers under valgrind memcheck, built without
# -march=native (valgrind does not know AVX-512) into build-vg/. Fails on any
# memcheck error or definite leak. make valgrind.
source "$(dirname "$0")/lib.sh"
V=(valgrind --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite
   --show-leak-kinds=definite --track-fds=no --quiet)
$B/paramserver --help >/dev/null || fail "no $B/paramserver"
"${V[@]}" --log-file="$TMP/vg.server" $B/paramserver --bind 'tcp://127.0.0.1:*' --workers 2 \
    --epochs 1 --train-limit 640 --test-limit 100 --data-dir "$MNIST_DIR" --db "$TMP/m.db" \
    --out "$TMP/o" --register-timeout 300 >"$TMP/server.log" 2>&1 &
server=$!; pids+=("$server")
wait_for 120 "the server to listen" has_endpoint "$TMP/server.log"
ep=$(endpoint "$TMP/server.log")
for k in 0 1; do
    "${V[@]}" --log-file="$TMP/vg.worker$k" $B/worker --server "$ep" --name "w$k" \
        --data-dir "$MNIST_DIR" --timeout 300 >"$TMP/worker$k.log" 2>&1 &
    w[$k]=$!; pids+=("$!")
done
for p in "$server" "${w[@]}"; do
    wait "$p" || { cat "$TMP"/vg.* "$TMP/server.log"; fail "a process failed under valgrind (exit $?)"; }
done
for f in "$TMP"/vg.*; do
    [ ! -s "$f" ] || { cat "$f"; fail "valgrind reported in $(basename "$f")"; }
done
ok "server and 2 workers ran under memcheck: no errors, no definite leaks"
grep '^summary' "$TMP/server.log"
done_testing
