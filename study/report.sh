#!/usr/bin/env bash
# report.sh: study.md from a study database (run-study.sh calls it; run it
# again on a finished database to rewrite the report). Per model one
# Markdown table, one row per configuration in the order they ran:
#   accuracy      the final model's test accuracy (the server's, or basic's;
#                 independent: the mean of the workers' own models)
#   train s       the run's training seconds (runs.train_seconds)
#   images/s      training images processed by all workers / train s
#   comm          push + pull time over the workers' epoch time (the rest
#                 is compute and, in sync/ssp, waiting for the others)
#   staleness     the server's mean staleness of applied updates (versions
#                 between the pull a gradient was computed on and its apply)
#   bytes/image   bytes sent + received by all workers per training image
# Usage: study/report.sh DB [CONF]
set -euo pipefail
db=${1:?usage: study/report.sh DB [CONF]}
conf=${2:-}
[ -r "$db" ] || { echo "report.sh: cannot read $db" >&2; exit 1; }

echo "# Study: $(sqlite3 "$db" "select count(*) from study_runs") runs"
echo
[ -n "$conf" ] && echo "Sweep: \`$conf\`; machine: $(uname -n), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')."
echo "Data set: $(sqlite3 "$db" "select coalesce(max(dataset), '?') from runs"); sync runs' lr:" \
    "$(sqlite3 "$db" "select coalesce(group_concat(x, '; '), 'not scaled (--lr-scaling none)')
                      from (select distinct r.workers || ' workers, ' || e.detail as x
                            from events e join runs r on r.id = e.run_id
                            where e.kind = 'lr_scaling' order by r.workers)")."
echo "Columns: see study/report.sh (independent: each worker trains its own model, nothing averaged;"
echo "its accuracy is the mean of the workers' models). Reproduce with \`make study\`."
for model in $(sqlite3 "$db" "select distinct model from study_runs order by id"); do
    echo
    echo "## $model"
    echo
    sqlite3 "$db" "select 'Each run: ' || coalesce(max(epochs), '?') || ' epochs of the first ' ||
                          coalesce(max(train_limit), '?') || ' training images.'
                   from study_runs where model = '$model'"
    echo
    echo "| mode | workers | compress | status | accuracy % | train s | images/s | comm % | staleness | bytes/image |"
    echo "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"
    sqlite3 -separator '|' "$db" "
      select s.mode, s.workers, s.compress, s.status,
             coalesce(printf('%.2f', r.final_accuracy), '-'),
             coalesce(printf('%.1f', r.train_seconds), '-'),
             coalesce(printf('%.0f', (select sum(images) from epochs where run_id = r.id) / r.train_seconds), '-'),
             case when s.mode = 'basic' then '-' else coalesce(printf('%.1f',
                 100.0 * (select sum(push_seconds + pull_seconds) / sum(epoch_seconds)
                          from epochs where run_id = r.id)), '-') end,
             case when s.mode = 'basic' then '-' else coalesce(printf('%.2f',
                 (select mean_staleness from server_stats where run_id = r.id
                  order by t desc limit 1)), '-') end,
             case when s.mode = 'basic' then '-' else coalesce(printf('%.0f',
                 (select 1.0 * sum(bytes_sent + bytes_received) / sum(images)
                  from epochs where run_id = r.id)), '-') end
      from study_runs s left join runs r on r.id = s.run_id
      where s.model = '$model' order by s.id" |
        awk -F'|' '{ printf "|"; for (i = 1; i <= NF; i++) printf " %s |", $i; print "" }'
done
failed=$(sqlite3 "$db" "select count(*) from study_runs where status <> 'done'")
if [ "$failed" != 0 ]; then
    echo
    echo "Failed runs (logs):"
    sqlite3 "$db" "select '- ' || model || ' ' || mode || ' ' || workers || ' ' || compress || ': ' || log
                   from study_runs where status <> 'done' order by id"
fi
