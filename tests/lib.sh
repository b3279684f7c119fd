# lib.sh: helpers for the shell tests (sourced). Each test prints what it
# checks; `fail` prints both sides and exits 1. TMP is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
TMP=$(mktemp -d)
pids=()   # processes a test starts in the background: killed on exit
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
: "${MNIST_DIR:=data}"
B=${BUILD:-build}   # where the programs are: build, or build-asan for make asan
checks=0

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { checks=$((checks + 1)); echo "ok - $*"; }

# expect_exit CODE DESCRIPTION -- command...: runs the command, checks its
# exit status, leaves its output in $TMP/cmd.log.
expect_exit() {
    local want=$1 what=$2; shift 3
    set +e; "$@" >"$TMP/cmd.log" 2>&1; local got=$?; set -e
    [ "$got" -eq "$want" ] || { cat "$TMP/cmd.log" >&2; fail "$what: exit $got, expected $want"; }
    ok "$what"
}

# expect_output PATTERN DESCRIPTION: the last command's output matches.
expect_output() {
    grep -Eq -- "$1" "$TMP/cmd.log" || { cat "$TMP/cmd.log" >&2; fail "$2: output lacks /$1/"; }
    ok "$2"
}

done_testing() { echo "$checks checks passed"; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s until it
# succeeds; fails the test past the deadline.
wait_for() {
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || fail "timed out after ${secs}s waiting for: $what"
        sleep 0.1
    done
}

# The endpoint a paramserver started with --bind tcp://127.0.0.1:* logged.
endpoint() { sed -n 's/.*listening on \(tcp:[^ ]*\).*/\1/p' "$1" | head -1; }
has_endpoint() { [ -n "$(endpoint "$1")" ]; }
# rows DB QUERY: the query's result, 0 if the database cannot be read yet.
rows() { sqlite3 "$1" "$2" 2>/dev/null || echo 0; }
at_least() { [ "$(rows "$1" "$2")" -ge "$3" ]; }   # at_least DB QUERY N
gone() { ! kill -0 "$1" 2>/dev/null; }
