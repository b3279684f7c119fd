#!/usr/bin/env bash
# test_study: make study's driver (study/run-study.sh) on the quick sweep
# with a tiny train limit: every run of both models finishes and has its
# row in study.md, and a plot per model is drawn (test_plot tests the
# drawing itself); a model this build lacks, or one without its train limit,
# is refused;
# a bad sweep file is refused with the line at fault; runs that fail (here:
# a deadline no run can meet) are recorded as failed and the sweep goes on.
source "$(dirname "$0")/lib.sh"
export BUILD=$B

OUT=$TMP/quick STUDY_TRAIN_LIMIT=600 study/run-study.sh study/quick.conf >"$TMP/quick.log" 2>&1 ||
    { cat "$TMP/quick.log"; fail "the quick study failed"; }
grep -q '\[18/18\]' "$TMP/quick.log" || fail "no progress line for the last of 18 runs"
md=$TMP/quick/study.md
[ "$(grep -c '^| \(basic\|sync\|async\|ssp\|independent\) | [124] | none | done |' "$md")" = 18 ] || { cat "$md"; fail "study.md lacks a row per run"; }
[ "$(grep -c '^## \(simpleconvnet\|lenet5\)$' "$md")" = 2 ] || { cat "$md"; fail "study.md lacks a table per model"; }
grep -q '^| basic | 1 | none | done | [0-9.]* |' "$md" || { cat "$md"; fail "no finished basic row"; }
grep -q '^| sync | 2 | none | done | [0-9.]* |' "$md" || { cat "$md"; fail "no finished sync row"; }
grep -q '^| independent | 4 | none | done | [0-9.]* |' "$md" || { cat "$md"; fail "no finished independent row"; }
grep -q "sync runs' lr: 2 workers, linear: lr 0.01 at the first update, ramped to 0.02 .*; 4 workers, linear: .* ramped to 0.04" "$md" || { cat "$md"; fail "study.md does not say how the sync runs' lr was scaled"; }
[ "$(rows "$TMP/quick/study.db" "select count(*) from runs where status = 'done'")" = 18 ] ||
    fail "the database does not hold 18 finished runs"
[ "$(rows "$TMP/quick/study.db" "select count(*) from runs where model = 'lenet5' and mode <> 'basic'")" = 8 ] ||
    fail "the distributed runs of lenet5 are not recorded as lenet5's"
for m in simpleconvnet lenet5; do
    [ "$(head -c 8 "$TMP/quick/$m.png" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ] || fail "no plot $m.png"
done
ok "the quick sweep (2 models x basic; sync, async, ssp, independent x 2, 4 workers) ran 18 runs into one database and study.md has a row for each"

sed 's/^modes .*/modes sync bogus/' study/quick.conf >"$TMP/bad.conf"
expect_exit 1 "a sweep file with an unknown mode is refused" -- study/run-study.sh "$TMP/bad.conf"
expect_output "modes: 'bogus' is not a mode" "and the message names the value"
sed 's/^models .*/models simpleconvnet nosuchnet/' study/quick.conf >"$TMP/model.conf"
expect_exit 1 "a model this build lacks is refused" -- study/run-study.sh "$TMP/model.conf"
expect_output "models: 'nosuchnet' is not a model this build has .simpleconvnet lenet5" "naming the models it has"
sed 's/^train_limit .*/train_limit simpleconvnet=600/' study/quick.conf >"$TMP/limit.conf"
expect_exit 1 "a per-model train limit missing for a model is refused" -- study/run-study.sh "$TMP/limit.conf"
expect_output "train_limit has no lenet5=N" "naming the model"
printf 'models simpleconvnet\nwrokers 1\n' >"$TMP/typo.conf"
expect_exit 1 "a misspelt setting is refused" -- study/run-study.sh "$TMP/typo.conf"
expect_output "typo.conf:2: unknown setting 'wrokers'" "with the file and line"

# Runs of 3 epochs of 60,000 images cannot finish in 1 s.
sed 's/^models .*/models simpleconvnet/; s/^workers .*/workers 1 2/; s/^modes .*/modes sync/; s/^epochs .*/epochs 3/; s/^train_limit .*/train_limit 60000/' \
    study/quick.conf >"$TMP/two.conf"
OUT=$TMP/late STUDY_RUN_TIMEOUT=1 study/run-study.sh "$TMP/two.conf" >"$TMP/late.log" 2>&1 ||
    { cat "$TMP/late.log"; fail "the sweep stopped at a failed run"; }
[ "$(rows "$TMP/late/study.db" "select count(*) from study_runs where status = 'failed'")" = 2 ] ||
    { cat "$TMP/late.log"; fail "runs past their deadline were not recorded as failed"; }
grep -q 'Failed runs' "$TMP/late/study.md" || fail "study.md does not list the failed runs"
ok "runs past their deadline are recorded as failed, and the sweep goes on"
done_testing
