# lib.sh: helpers for the shell tests (sourced). Each test prints what it
# checks; `fail` prints both sides and exits 1. TMP is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
: "${MNIST_DIR:=data}"
checks=0

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { checks=$((checks + 1)); echo "ok - $*"; }

# expect_exit CODE DESCRIPTION -- command...: runs the command, checks its
# exit status, leaves its output in $TMP/out.
expect_exit() {
    local want=$1 what=$2; shift 3
    set +e; "$@" >"$TMP/out" 2>&1; local got=$?; set -e
    [ "$got" -eq "$want" ] || { cat "$TMP/out" >&2; fail "$what: exit $got, expected $want"; }
    ok "$what"
}

# expect_output PATTERN DESCRIPTION: the last command's output matches.
expect_output() {
    grep -Eq -- "$1" "$TMP/out" || { cat "$TMP/out" >&2; fail "$2: output lacks /$1/"; }
    ok "$2"
}

done_testing() { echo "$checks checks passed"; }
