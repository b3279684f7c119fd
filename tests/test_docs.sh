#!/usr/bin/env bash
# test_docs: the flags are documented in two places, each program's --help
# and README.md, and this test keeps them in step: every flag a program's
# --help lists is in README.md (as `--flag`), and every flag in README's
# flag tables (the rows of "### paramserver flags" and of the worker's table
# under "## Basic mode") is one the program knows.
source "$(dirname "$0")/lib.sh"

flags_of_help() { "$B/$1" --help 2>&1 | grep -oE -- '(^|[ ,[])--[a-z][a-z0-9-]*' | grep -oE -- '--[a-z0-9-]+' | sort -u; }
# Flags in the table rows of README's section whose heading matches $1.
flags_of_table() {
    awk -v h="$1" '/^#/ { inside = ($0 ~ h) } inside && /^\| `-/' README.md |
        cut -d'|' -f2 | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u
}

for prog in paramserver worker psreport; do
    missing=()
    for f in $(flags_of_help "$prog"); do
        grep -qF -- "\`$f" README.md || missing+=("$f")
    done
    ((${#missing[@]} == 0)) || fail "README.md does not document $prog's ${missing[*]}"
    ok "README.md documents every flag of $prog --help ($(flags_of_help "$prog" | wc -l))"
done

check_table() { # PROGRAM HEADING
    local f unknown=() known
    known=$(flags_of_help "$1")
    [ -n "$(flags_of_table "$2")" ] || fail "README.md has no flag table under a heading matching '$2'"
    for f in $(flags_of_table "$2"); do
        grep -qxF -- "$f" <<<"$known" || unknown+=("$f")
    done
    ((${#unknown[@]} == 0)) || fail "README's table under '$2' lists ${unknown[*]}, which $1 --help does not know"
    ok "every flag in README's table under '$2' is one $1 knows"
}
check_table paramserver '^### paramserver flags'
check_table worker '^## Basic mode'
done_testing
