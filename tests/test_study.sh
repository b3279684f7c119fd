#!/usr/bin/env bash
# test_study: make study's driver (study/run-study.sh) on the quick sweep
# with a tiny train limit: every run finishes and has its row in study.md,
# and the plot is drawn (test_plot tests the drawing itself);
# a bad sweep file is refused with the line at fault; runs that fail (here:
# a deadline no run can meet) are recorded as failed and the sweep goes on.
source "$(dirname "$0")/lib.sh"
export BUILD=$B

OUT=$TMP/quick STUDY_TRAIN_LIMIT=600 study/run-study.sh study/quick.conf >"$TMP/quick.log" 2>&1 ||
    { cat "$TMP/quick.log"; fail "the quick study failed"; }
grep -q '\[9/9\]' "$TMP/quick.log" || fail "no progress line for the last of 9 runs"
md=$TMP/quick/study.md
[ "$(grep -c '^| \(basic\|sync\|async\|ssp\|independent\) | [124] | none | done |' "$md")" = 9 ] || { cat "$md"; fail "study.md lacks a row per run"; }
grep -q '^| basic | 1 | none | done | [0-9.]* |' "$md" || { cat "$md"; fail "no finished basic row"; }
grep -q '^| sync | 2 | none | done | [0-9.]* |' "$md" || { cat "$md"; fail "no finished sync row"; }
grep -q '^| independent | 4 | none | done | [0-9.]* |' "$md" || { cat "$md"; fail "no finished independent row"; }
grep -q "sync runs' lr: linear: lr 0.01 at the first update" "$md" || { cat "$md"; fail "study.md does not say how the sync runs' lr was scaled"; }
[ "$(rows "$TMP/quick/study.db" "select count(*) from runs where status = 'done'")" = 9 ] ||
    fail "the database does not hold 9 finished runs"
[ "$(head -c 8 "$TMP/quick/simpleconvnet.png" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ] ||
    fail "no plot simpleconvnet.png"
ok "the quick sweep (basic; sync, async, ssp, independent x 2, 4 workers) ran 9 runs into one database and study.md has a row for each"

sed 's/^modes .*/modes sync bogus/' study/quick.conf >"$TMP/bad.conf"
expect_exit 1 "a sweep file with an unknown mode is refused" -- study/run-study.sh "$TMP/bad.conf"
expect_output "modes: 'bogus' is not a mode" "and the message names the value"
printf 'models simpleconvnet\nwrokers 1\n' >"$TMP/typo.conf"
expect_exit 1 "a misspelt setting is refused" -- study/run-study.sh "$TMP/typo.conf"
expect_output "typo.conf:2: unknown setting 'wrokers'" "with the file and line"

# Runs of 3 epochs of 60,000 images cannot finish in 1 s.
sed 's/^workers .*/workers 1 2/; s/^modes .*/modes sync/; s/^epochs .*/epochs 3/; s/^train_limit .*/train_limit 60000/' \
    study/quick.conf >"$TMP/two.conf"
OUT=$TMP/late STUDY_RUN_TIMEOUT=1 study/run-study.sh "$TMP/two.conf" >"$TMP/late.log" 2>&1 ||
    { cat "$TMP/late.log"; fail "the sweep stopped at a failed run"; }
[ "$(rows "$TMP/late/study.db" "select count(*) from study_runs where status = 'failed'")" = 2 ] ||
    { cat "$TMP/late.log"; fail "runs past their deadline were not recorded as failed"; }
grep -q 'Failed runs' "$TMP/late/study.md" || fail "study.md does not list the failed runs"
ok "runs past their deadline are recorded as failed, and the sweep goes on"
done_testing
