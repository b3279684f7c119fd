#!/usr/bin/env bash
# multihost: the paramserver and its workers on separate "hosts": one network
# namespace each, joined by veth pairs to a bridge that lives in a namespace
# of its own (the machine's own network is not touched), each link shaped
# with tc tbf (rate 1gbit burst 1mb latency 50ms; RATE to change; see
# tests/netns.sh). Short sync runs, each with 2 worker hosts: one with the
# server on one host, one with a server group of 2 shards, the head (shard
# 0) and shard 1 on two hosts. Each must finish with a learnt model and both
# workers' rows in the database; in the second both shards must have served
# pushes. Then the hot standby (issue 12) across hosts: the same group with
# a standby of shard 1 on a third server host, --failover-timeout 1, and
# shard 1's primary lost once training is under way, (a) killed (SIGKILL),
# (b) cut off (its link to the bridge down for longer than the timeout, then
# up again: it must exit 3, fenced; with STANDBY_REJOIN=1, started again as
# its systemd unit does, with --resume, it must become the standby, which
# fails for now: see rejoin). Each run must finish (every
# other process exits 0) with one failover event, both workers' epochs and
# a model file identical byte for byte to the group run without a standby
# (cmp on the whole file: its metadata, the mode, version and accuracy, is
# equal when the weights are); no step may wait more than the timeout + 1
# s, and the longest pause is printed.
# Namespaces and processes are removed on every exit.
# Needs root and `ip netns`; run by `make check-multihost` and by .ci/run.
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "skip - needs root for network namespaces"; exit 0; }
source "$(dirname "$0")/netns.sh"
netns_up 3 2
ok "5 hosts on a bridge (3 for servers, 2 for workers), links shaped to $RATE"
head=tcp://10.77.0.1:5555   # the server, or the head of a group

# run_group NAME SHARDS [FAULT]: a sync run of 1 epoch with the head on
# 10.77.0.1, shards 1..SHARDS-1 on 10.77.0.2.., the workers on their two
# hosts; checks that every process exits 0, and the model and the database
# rows. A group trains on 40,000 images (--checkpoint-every 10). FAULT
# (kill or partition): shard 1 has a standby on 10.77.0.3, and its primary
# is lost during training (see fault); it must exit 137 (kill) or 3
# (partition: fenced, then restarted as the standby, which exits 0), and
# the standby, which finishes the run as shard 1, 0.
run_group() {
    local name=$1 shards=$2 fault=${3:-} i k server group=() spid=() wpid=() want log limit=20000
    local db=$TMP/$name.db
    ((shards > 1)) && group=(--shards "$shards" --failover-timeout 1 --checkpoint-every 10) && limit=40000
    ip netns exec "${NS_S[0]}" "$B"/paramserver --bind "$head" "${group[@]}" --workers 2 --mode sync \
        --epochs 1 --train-limit "$limit" --data-dir "$MNIST_DIR" \
        --db "$db" --out "$TMP/$name" --register-timeout 60 >"$TMP/$name.server.log" 2>&1 &
    server=$! && pids+=("$server")
    listening "$TMP/$name.server.log" "$server" "$name: the server (head)"
    for ((i = 1; i < shards; i++)); do
        start_shard "$name" "$i" "$TMP/$name.shard$i.log"
        spid[i]=$shard
    done
    [ -n "$fault" ] && start_standby "$name"
    for k in 0 1; do
        ip netns exec "${NS_W[$k]}" "$B"/worker --server "$head" --name "host$k" \
            --data-dir "$MNIST_DIR" --timeout 60 >"$TMP/$name.worker$k.log" 2>&1 &
        wpid[k]=$! && pids+=("$!")
    done
    [ -n "$fault" ] && fault "$name" "$fault" "${spid[1]}" && spid[1]=$primary
    wait "$server" || { cat "$TMP/$name.server.log"; fail "$name: the server (head) failed"; }
    for ((i = 1; i < shards; i++)); do
        wait_for 30 "$name: shard $i to exit after the head" gone "${spid[i]}"
        want=0 log=$TMP/$name.shard$i.log
        [ "$i" = 1 ] && [ -n "$fault" ] && want=$fault_exit log=$primary_log
        exits "${spid[i]}" "$want" "$name: shard $i" "$log"
    done
    if [ -n "$fault" ]; then
        wait_for 30 "$name: the standby to exit after the head" gone "$standby"
        exits "$standby" 0 "$name: the standby (shard 1 after the fail-over)" "$TMP/$name.standby.log"
    fi
    for k in 0 1; do
        wait "${wpid[k]}" || { cat "$TMP/$name.worker$k.log"; fail "$name: worker $k failed"; }
    done
    grep '^summary' "$TMP/$name.server.log"
    grep -q "registered: host0 on" "$TMP/$name.server.log" && grep -q "registered: host1 on" "$TMP/$name.server.log" ||
        fail "$name: the workers did not register from their hosts"
    acc=$(rows "$db" 'select final_accuracy from runs')
    awk -v a="$acc" 'BEGIN { exit !(a >= 90) }' || fail "$name: accuracy $acc% < 90%"
    ok "$name: a sync run with $shards server host(s) and 2 worker hosts finished: $acc%"
    [ "$(rows "$db" 'select count(distinct worker_id) from epochs')" = 2 ] || fail "$name: epoch rows"
    [ "$(rows "$db" 'select count(*) from steps')" -ge 300 ] || fail "$name: step rows"
    ok "$name: the database holds both workers' steps and epochs"
    sqlite3 -separator ' ' "$db" "select 'worker', worker_id, 'comm ms/step', printf('%.2f', 1000.0 * (push_seconds + pull_seconds) / (images / 64.0)), 'bytes/step', (bytes_sent + bytes_received) / (images / 64) from epochs"
}

# start_shard NAME I LOG: shard I on its host, as its systemd unit starts it
# (--resume when its checkpoint is there). Sets $shard.
start_shard() {
    local ckpt=$TMP/$1.shard$2.ckpt resume=()
    [ -f "$ckpt" ] && resume=(--resume)
    ip netns exec "${NS_S[$2]}" "$B"/paramserver --shard "$2" --head "$head" \
        --bind "tcp://10.77.0.$((1 + $2)):5555" --checkpoint "$ckpt" "${resume[@]}" >"$3" 2>&1 &
    shard=$! && pids+=("$!")
}

# exits PID CODE WHAT LOG: the process PID (a child) exited with CODE.
exits() {
    local got=0
    wait "$1" || got=$?
    [ "$got" = "$2" ] || { cat "$4"; fail "$3 exited $got, expected $2 (its log above)"; }
}

# start_standby NAME: the standby of shard 1 on the third server host;
# waits until it holds the primary's state. Sets $standby.
start_standby() {
    local log=$TMP/$1.standby.log end=$((SECONDS + 60))
    ip netns exec "${NS_S[2]}" "$B"/paramserver --replica-of tcp://10.77.0.2:5555 \
        --bind tcp://10.77.0.3:5555 --out "$TMP/$1.standby" --register-timeout 60 >"$log" 2>&1 &
    standby=$! && pids+=("$!")
    until grep -qs "holds the primary's state" "$log"; do
        gone "$standby" && { cat "$log"; fail "$1: the standby exited before it held the state (its log above)"; }
        [ $SECONDS -lt $end ] || { cat "$log"; fail "$1: the standby did not hold the state within 60 s"; }
        sleep 0.1
    done
    ok "$1: shard 1's standby on 10.77.0.3 holds its primary's state"
}

# fault NAME KIND PRIMARY: once training is under way (a random 1.0 to 2.5
# s after the head said it starts; training lasts 7 s or more), shard 1's
# primary (PRIMARY, checked to be in its host's namespace) is lost: kill
# sends it SIGKILL; partition takes its link down at the bridge (no FIN, no
# reset: a cable pulled) until its standby was promoted and at least 2 s
# (the failover timeout + 1 s) have passed, then up again (and with
# STANDBY_REJOIN=1 the primary rejoins: see rejoin). Sets $primary, the
# process to wait for as shard 1 besides the standby, $primary_log, its
# log, and $fault_exit, its expected status.
fault() {
    local name=$1 kind=$2 pid=$3 delay down
    wait_for 60 "$name: training to start" grep -q "training starts" "$TMP/$name.server.log"
    delay=$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 1.0 + 1.5 * r / 32768 }')
    sleep "$delay"
    grep -q "run over" "$TMP/$name.server.log" && fail "$name: the run ended before the fault: raise --train-limit"
    [ "$(ip netns identify "$pid")" = "${NS_S[1]}" ] ||
        fail "$name: process $pid is not in shard 1's host ${NS_S[1]} but in '$(ip netns identify "$pid")'"
    primary=$pid primary_log=$TMP/$name.shard1.log
    if [ "$kind" = kill ]; then
        kill -9 "$pid"
        fault_exit=137
        ok "$name: $delay s into training, shard 1's primary (pid $pid on 10.77.0.2) killed"
    else
        down=$EPOCHREALTIME
        ip -n "$NS_BR" link set "v${NS_S[1]}" down
        until grep -q "promoted" "$TMP/$name.standby.log" && since "$down" 2; do
            since "$down" 60 && { ip -n "$NS_BR" link set "v${NS_S[1]}" up; fail "$name: the standby was not promoted within 60 s of the partition"; }
            sleep 0.1
        done
        ip -n "$NS_BR" link set "v${NS_S[1]}" up
        ok "$name: $delay s into training, shard 1's host cut off for $(awk -v a="$down" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s; the standby was promoted"
        fault_exit=3
        [ "${STANDBY_REJOIN:-0}" = 1 ] && rejoin "$name" "$pid"
    fi
    return 0
}

# rejoin NAME PID (with STANDBY_REJOIN=1; off until the lead fixes what it
# shows, see below): shard 1's cut-off primary PID, back on the network,
# must exit 3 (fenced); started again as its systemd unit would (with
# --resume: its checkpoint is there), it must become the new primary's
# standby while training goes on. Sets $primary to it and $fault_exit to 0.
# Found failing in 2 of 4 runs: the new primary's first TCP SYN to it was
# lost (its socket in SYN-SENT for 1 s, Linux's first retransmission at
# 1 s), the primary gave the standby up after --failover-timeout (1 s) ("took
# no state"), the head dropped it, and it went on pinging, refused ("this is
# not the standby the head knows for that shard"), never exiting nor joining
# again, then exited 1 30 s after the run's end ("the head ... has not
# answered for 30 s").
rejoin() {
    local name=$1 log=$TMP/$1.shard1.log
    wait_for 30 "$name: the cut-off primary to exit" gone "$2"
    exits "$2" 3 "$name: the cut-off primary" "$log"
    [ -f "$TMP/$name.shard1.ckpt" ] || fail "$name: shard 1 wrote no checkpoint (the head has --checkpoint-every 10)"
    start_shard "$name" 1 "$TMP/$name.shard1.again.log"
    primary=$shard fault_exit=0 primary_log=$TMP/$name.shard1.again.log
    local end=$((SECONDS + 30))
    until grep -q "holds the primary's state" "$TMP/$name.shard1.again.log"; do
        ((SECONDS < end)) && ! gone "$shard" ||
            { cat "$TMP/$name.shard1.again.log"; fail "$name: restarted, the old primary did not become the standby within 30 s (its log above)"; }
        sleep 0.1
    done
    grep -q "run over" "$TMP/$name.server.log" && fail "$name: the run ended before the old primary was the standby: raise --train-limit"
    ok "$name: restarted with --resume as its unit does, it is the new primary's standby while training goes on"
}

# since T SECONDS: at least SECONDS have passed since T (an $EPOCHREALTIME).
since() { awk -v t="$1" -v s="$2" -v now="$EPOCHREALTIME" 'BEGIN { exit !(now - t >= s) }'; }

# check_failover NAME: the run of NAME failed over once, and its model is
# the reference run's (two-shards), byte for byte; prints the stall.
check_failover() {
    local name=$1 db=$TMP/$1.db stall step
    grep -q "promoted: serving shard 1 in term 2" "$TMP/$name.standby.log" ||
        { cat "$TMP/$name.standby.log"; fail "$name: the standby did not take over shard 1 (its log above)"; }
    [ "$(rows "$db" "select count(*) from events where kind = 'failover'")" = 1 ] ||
        fail "$name: $(rows "$db" "select count(*) from events where kind = 'failover'") failover events, expected 1"
    ok "$name: the standby took over shard 1; one failover event"
    cmp "$TMP/two-shards/model_distributed.safetensors" "$TMP/$name/model_distributed.safetensors" ||
        fail "$name: the model differs from the run without a fault ($TMP/two-shards)"
    ok "$name: the model file is identical, byte for byte, to the run without a standby or fault"
    read -r stall step < <(rows "$db" "select printf('%.2f %.3f', max(d), avg(d)) from (select lead(t) over (partition by worker_id order by step) - t as d from steps)")
    awk -v s="$stall" 'BEGIN { exit !(s <= 2.0) }' ||
        fail "$name: a step waited $stall s, more than --failover-timeout + 1 s (2 s)"
    ok "$name: stall (the longest pause between two steps) $stall s, mean step $step s, --failover-timeout 1"
}

run_group one-server 1
run_group two-shards 2
db=$TMP/two-shards.db
# Every shard served: its shard_stats rows count the updates it applied.
served=$(rows "$db" 'select count(*) from (select shard, max(updates) u from shard_stats group by shard) where u > 0')
[ "$served" = 2 ] ||
    fail "two-shards: $served shard(s) applied updates, expected 2: $(rows "$db" 'select shard, max(updates) from shard_stats group by shard')"
ok "two-shards: both shards applied updates ($(rows "$db" "select group_concat(shard || ':' || u, ' ') from (select shard, max(updates) u from shard_stats group by shard)"))"

run_group standby-kill 2 kill
check_failover standby-kill
run_group standby-partition 2 partition
fenced=$(grep -m1 "fenced" "$TMP/standby-partition.shard1.log") ||
    { cat "$TMP/standby-partition.shard1.log"; fail "standby-partition: the old primary's log does not say it was fenced (above)"; }
ok "standby-partition: the old primary came back and exited 3: ${fenced#*] }"
check_failover standby-partition
# With STANDBY_REJOIN=1 (off until the lead fixes it, server/group.c): a
# shard that ends a run as a standby must not keep the checkpoint of its
# time as primary; else the unit's next start resumes from it, is refused
# ("the checkpoint ... is of run 1, not the head's run") and is restarted
# every 5 s.
if [ "${STANDBY_REJOIN:-0}" = 1 ] && [ -e "$TMP/standby-partition.shard1.ckpt" ]; then
    fail "standby-partition: the former primary ended the run as the standby and left its checkpoint $TMP/standby-partition.shard1.ckpt"
fi
done_testing
