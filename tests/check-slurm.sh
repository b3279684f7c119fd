#!/usr/bin/env bash
# check-slurm.sh (make check-slurm): deploy/slurm/paramserver.sbatch on a real
# Slurm 22.05 cluster of four hosts made on this machine.
#
# The hosts are network namespaces on a bridge (tests/netns.sh): ctl
# (10.78.0.1) runs slurmctld, node1..node4 (10.78.0.11..14) each run slurmd,
# every daemon in its own UTS namespace with its own hostname (slurmd is
# started with nsenter + unshare --uts: `ip netns exec` remounts /sys, and
# slurmd then fails). munged runs with a key made for the test, its socket in
# the test's folder; nothing of the machine's own (/etc/slurm, /etc/munge) is
# read or changed. The test submits the project's own batch script: with
# --nodes=3 (the server on node1), and with SHARDS=2 --nodes=4 (the head on
# node1, shard 1 on node2); each job must be COMPLETED, with the run in the
# database, its two workers on two hosts other than the servers', and the
# model and the plot in the job's results folder; with shards, both must
# have applied updates. With a hot standby (SHARDS=2 REPLICAS=1 --nodes=4:
# the head on node1, shard 1 on node2, its standby on node3, one worker on
# node4) the job must complete with the standby holding the primary's
# state; then the same job with shard 1's process killed on node2 mid-run
# must complete too, with a failover event and the first job's model byte
# for byte. Then SHARDS=2 on one node must complete too, and SHARDS=3 on 3
# nodes, or SHARDS=2 REPLICAS=1 on 3 (too few), must fail saying why.
# Every daemon is stopped by PID and the namespaces are deleted, also on
# failure.
# Needs root; installs slurmctld, slurmd, slurm-client and munge if missing.
source "$(dirname "$0")/lib.sh"
source tests/netns.sh
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces, Slurm daemons); run: sudo make check-slurm"

pkgs=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "check-slurm: installing ${missing[*]}"
    # Package lists may be missing or stale: update once if the first try fails.
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends "$@"; }
    apt_install "${missing[@]}" >"$TMP/apt.log" 2>&1 ||
        { apt-get update -q >>"$TMP/apt.log" 2>&1 && apt_install "${missing[@]}" >>"$TMP/apt.log" 2>&1; } ||
        { tail -5 "$TMP/apt.log"; fail "cannot install ${missing[*]} (see apt's messages above)"; }
fi
# Debian's packages start the daemons where systemd runs; this test runs its
# own, so it must not find theirs on its ports.
for d in slurmctld slurmd; do
    pgrep -x "$d" >/dev/null && fail "a $d is already running on this machine: stop it first"
done

# until SECONDS COMMAND...: polls COMMAND every 0.2 s; 1 past the deadline.
until_ok() {
    local end=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt "$end" ] || return 1
        sleep 0.2
    done
}

# Daemons get SIGTERM and up to 10 s to stop (each is reaped here), then
# netns.sh's teardown kills what is left and deletes the namespaces.
stop_daemons() {
    local p end=$((SECONDS + 10))
    { for p in "${pids[@]}"; do kill -TERM "$p"; done; } 2>/dev/null || true
    for p in "${pids[@]}"; do
        while [ $SECONDS -lt $end ] && kill -0 "$p" 2>/dev/null &&
            [[ $(ps -o stat= -p "$p") != Z* ]]; do sleep 0.1; done
    done
    teardown
}
trap stop_daemons EXIT

T=$TMP
mkdir -p "$T/munge" "$T/state" "$T/log" "$T/job" "$T/results"
for n in node1 node2 node3 node4; do mkdir -p "$T/spool/$n"; done

# munge: a key for this test only; the socket in the test's folder.
mungekey --create --keyfile "$T/munge/munge.key" || fail "mungekey --create failed"
chmod 600 "$T/munge/munge.key"
munged --foreground --force --key-file="$T/munge/munge.key" --socket="$T/munge/munge.sock" \
    --pid-file="$T/munge/munged.pid" --log-file="$T/log/munged.log" \
    --seed-file="$T/munge/munged.seed" >>"$T/log/munged.log" 2>&1 &
pids+=($!)
wait_for 10 "munged's socket" test -S "$T/munge/munge.sock"
ok "munged runs with the test's key"

# The hosts: a bridge, the controller and four nodes.
ip netns add "$NS_BR" || fail "cannot create network namespaces (ip netns add): needs root"
ip -n "$NS_BR" link add br0 type bridge
ip -n "$NS_BR" link set br0 up
NS_CTL=psctl$tag
NS_NODES=("psn1$tag" "psn2$tag" "psn3$tag" "psn4$tag")
all_ns+=("$NS_CTL" "${NS_NODES[@]}")
host "$NS_CTL" 10.78.0.1
for i in 1 2 3 4; do host "${NS_NODES[i - 1]}" "10.78.0.1$i"; done

export SLURM_CONF=$T/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=pstest
SlurmctldHost=ctl(10.78.0.1)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool/%n
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd-%n.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=30
NodeName=node1 NodeAddr=10.78.0.11 CPUs=2 State=UNKNOWN
NodeName=node2 NodeAddr=10.78.0.12 CPUs=2 State=UNKNOWN
NodeName=node3 NodeAddr=10.78.0.13 CPUs=2 State=UNKNOWN
NodeName=node4 NodeAddr=10.78.0.14 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=node[1-4] Default=YES MaxTime=INFINITE State=UP
EOF

# in_host NS NAME COMMAND...: runs COMMAND in the host's network namespace
# and a UTS namespace of its own whose hostname is NAME. It execs: call it
# in the background (&), so that $! is the daemon itself.
in_host() {
    local ns=$1 name=$2; shift 2
    exec nsenter --net="/run/netns/$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$name" "$@"
}
ctl() { nsenter --net="/run/netns/$NS_CTL" "$@"; }   # Slurm's client commands, on the controller's host

in_host "$NS_CTL" ctl slurmctld -D -i -f "$SLURM_CONF" >"$T/log/slurmctld.out" 2>&1 &
pids+=($!)
for i in 1 2 3 4; do
    in_host "${NS_NODES[i - 1]}" "node$i" slurmd -D -N "node$i" -f "$SLURM_CONF" >"$T/log/slurmd-node$i.out" 2>&1 &
    pids+=($!)
done
idle() { [ "$(ctl sinfo -h -N -t idle -o %N | sort -u | wc -l)" = 4 ]; }
if ! until_ok 60 idle; then
    tail -n 20 "$T"/log/slurm*.log "$T"/log/*.out >&2 || true
    ctl sinfo -N >&2 || true
    fail "the four nodes did not come up idle within 60 s (logs above)"
fi
ok "slurmctld and four slurmd are up, all nodes idle"

# submit NAME STATE SBATCH_FLAGS...: the project's own batch script,
# unchanged, as a job whose results go to $T/NAME; waits for it and checks
# that it ended in STATE (COMPLETED, FAILED). Sets $job and $RESULTS.
submit() {
    start_job "$1" "${@:3}"
    await_job "$1" "$2"
}
# start_job NAME SBATCH_FLAGS...: submits the job; sets $job and $RESULTS.
start_job() {
    local name=$1; shift
    export RESULTS=$T/$name
    mkdir -p "$RESULTS" "$T/job-$name"
    job=$(ctl sbatch --parsable "$@" --chdir="$T/job-$name" --output="$T/job-$name/job-%j.out" \
        deploy/slurm/paramserver.sbatch) || fail "sbatch refused the job"
    job=${job%%;*}
    ok "$name: sbatch $* deploy/slurm/paramserver.sbatch: job $job"
}
# await_job NAME STATE: waits up to 300 s for the job to end, in STATE.
await_job() {
    local name=$1 want=$2 st
    if ! until_ok 300 finished; then
        ctl scontrol show job "$job" >&2 || true
        cat "$T/job-$name"/job-*.out "$RESULTS"/*.log >&2 2>/dev/null || true
        ctl scancel "$job" || true
        fail "$name: job $job did not finish within 300 s (state $(state))"
    fi
    st=$(state)
    if [ "$st" != "$want" ]; then
        ctl scontrol show job "$job" >&2
        cat "$T/job-$name"/job-*.out "$RESULTS"/*.log >&2 2>/dev/null || true
        fail "$name: job $job ended $st, not $want"
    fi
    ok "$name: job $job $want"
    sed 's/^/  job: /' "$T/job-$name/job-$job.out"
}
state() { ctl scontrol show job "$job" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
finished() { case $(state) in PENDING | RUNNING | CONFIGURING | COMPLETING | "") return 1 ;; esac; }

# check_run NAME SERVER_NODES: one finished sync run in the job's database,
# its two workers on two hosts, none of them a server's node (a
# comma-separated list), each with its epoch; the model and the plot there.
check_run() {
    local name=$1 servers=$2 db=$RESULTS/metrics.db hosts n
    [ "$(rows "$db" "select count(*) from runs where mode = 'sync' and status = 'done'")" = 1 ] ||
        fail "$name: the database has no single finished sync run: $(rows "$db" 'select id, mode, status from runs')"
    ok "$name: one finished run in the job's database"
    hosts=$(rows "$db" "select group_concat(distinct host) from workers")
    [ "$(rows "$db" "select count(distinct host) from workers")" = 2 ] || fail "$name: workers' hosts: $hosts, expected two"
    for n in ${servers//,/ }; do
        [ "$(rows "$db" "select count(*) from workers where host = '$n'")" = 0 ] ||
            fail "$name: a worker ran on $n, a server's node: $hosts"
    done
    ok "$name: its two workers ran on two hosts other than the servers' $servers ($hosts)"
    [ "$(rows "$db" "select count(distinct worker_id) from epochs")" = 2 ] || fail "$name: not every worker logged its epoch"
    ok "$name: each worker logged its epoch"
    for f in model_distributed.safetensors distributed_training_results.png; do
        [ -s "$RESULTS/$f" ] || fail "$name: $RESULTS/$f is missing"
    done
    ok "$name: the model and the plot are in the job's results folder"
}

export PS_BIN=$PWD/$B MNIST_DIR
MNIST_DIR=$(cd "$MNIST_DIR" && pwd)
export EPOCHS=1 TRAIN_LIMIT=${SLURM_TRAIN_LIMIT:-6000}
submit one-server COMPLETED --nodes=3
check_run one-server node1

# A server group of two, each on its own node, and two workers after them.
SHARDS=2 submit two-shards COMPLETED --nodes=4
check_run two-shards node1,node2
grep -q "shard 1 on node2 (10.78.0.12:5556)" "$T/job-two-shards/job-$job.out" ||
    fail "two-shards: the job did not place shard 1 on node2 (its output above)"
# both_served NAME: every shard of the job's run applied updates.
both_served() {
    local db=$RESULTS/metrics.db served
    served=$(rows "$db" 'select count(*) from (select shard, max(updates) u from shard_stats group by shard) where u > 0')
    [ "$served" = 2 ] ||
        fail "$1: $served shard(s) applied updates, expected 2: $(rows "$db" 'select shard, max(updates) from shard_stats group by shard')"
}
both_served two-shards
ok "two-shards: shard 1 ran on node2 and both shards applied updates"

# On one node: the head, the shard (on PORT+1) and the workers share it.
SHARDS=2 submit one-node COMPLETED --nodes=1 --ntasks=2
[ "$(rows "$RESULTS/metrics.db" "select count(*) from runs where status = 'done'")" = 1 ] || fail "one-node: no finished run"
both_served one-node
ok "one-node: a finished run on one node; both shards applied updates"

# A hot standby (issue 12): SHARDS=2 REPLICAS=1 on 4 nodes puts the head on
# node1, shard 1 on node2, its standby on node3 and one worker on node4. A
# run long enough for a fail-over in the middle (1 worker, TRAIN_LIMIT
# images).
export TRAIN_LIMIT=${SLURM_STANDBY_TRAIN_LIMIT:-20000}
# check_standby NAME: one finished run, its worker on node4, the standby's
# node and port in the job's output, the standby held the primary's state.
check_standby() {
    local name=$1 db=$RESULTS/metrics.db out=$T/job-$1/job-$job.out
    [ "$(rows "$db" "select count(*) from runs where mode = 'sync' and status = 'done'")" = 1 ] ||
        fail "$name: the database has no single finished sync run: $(rows "$db" 'select id, mode, status from runs')"
    [ "$(rows "$db" "select group_concat(distinct host) from workers")" = node4 ] ||
        fail "$name: the worker ran on $(rows "$db" "select group_concat(distinct host) from workers"), not node4"
    [ "$(rows "$db" "select count(*) from epochs")" = 1 ] || fail "$name: the worker's epoch row is missing"
    [ -s "$RESULTS/model_distributed.safetensors" ] || fail "$name: $RESULTS/model_distributed.safetensors is missing"
    ok "$name: one finished run, its worker on node4 with its epoch; the model saved"
    grep -q "shard 1 on node2 (10.78.0.12:5556)" "$out" && grep -q "standby of shard 1 on node3 (10.78.0.13:5656)" "$out" ||
        fail "$name: the job did not place shard 1 on node2 and its standby on node3 (its output above)"
    grep -q "holds the primary's state" "$RESULTS/standby1.log" ||
        { cat "$RESULTS/standby1.log"; fail "$name: the standby never held shard 1's state (its log above)"; }
    ok "$name: shard 1 on node2, its standby on node3, which held the primary's state"
}
SHARDS=2 REPLICAS=1 submit standby COMPLETED --nodes=4
check_standby standby
both_served standby
[ "$(rows "$RESULTS/metrics.db" "select count(*) from events where kind = 'failover'")" = 0 ] ||
    fail "standby: a failover event in a run where nothing failed"
ok "standby: both shards applied updates; no fail-over"

# The same, with shard 1's process killed (SIGKILL, found by its command
# line among node2's processes) once the standby holds the state and
# training is under way: still COMPLETED, one failover event, and the same
# model as the job without the kill, byte for byte.
SHARDS=2 REPLICAS=1 start_job standby-kill --nodes=4
wait_for 120 "standby-kill: the standby to hold shard 1's state" grep -qs "holds the primary's state" "$RESULTS/standby1.log"
wait_for 120 "standby-kill: training to start" grep -qs "training starts" "$RESULTS/server.log"
sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 1.0 + 2.0 * r / 32768 }')"
grep -q "run over" "$RESULTS/server.log" && fail "standby-kill: the run ended before the kill: raise SLURM_STANDBY_TRAIN_LIMIT"
# shard_pid NS: the pid of `paramserver --shard 1 ...` among NS's processes.
shard_pid() {
    local p
    for p in $(ip netns pids "$1"); do
        [ "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -d' ' -f1-3)" = "$PS_BIN/paramserver --shard 1" ] && echo "$p"
    done
    return 0
}
victim=$(shard_pid "${NS_NODES[1]}")
[[ $victim =~ ^[0-9]+$ ]] || fail "standby-kill: expected one paramserver --shard 1 on node2, found pids '$victim'"
kill -9 "$victim"
ok "standby-kill: shard 1's paramserver (pid $victim on node2) killed"
await_job standby-kill COMPLETED
check_standby standby-kill
grep -q "promoted: serving shard 1 in term 2" "$RESULTS/standby1.log" ||
    { cat "$RESULTS/standby1.log"; fail "standby-kill: the standby did not take over (its log above)"; }
[ "$(rows "$RESULTS/metrics.db" "select count(*) from events where kind = 'failover'")" = 1 ] ||
    fail "standby-kill: $(rows "$RESULTS/metrics.db" "select count(*) from events where kind = 'failover'") failover events, expected 1"
grep -q "shard 1 failed (exit [0-9]*); its standby takes over" "$T/job-standby-kill/job-$job.out" ||
    fail "standby-kill: the job's output does not report shard 1's failure (above)"
ok "standby-kill: the standby on node3 took over; one failover event"
cmp "$T/standby/model_distributed.safetensors" "$RESULTS/model_distributed.safetensors" ||
    fail "standby-kill: the model differs from the job without the kill"
ok "standby-kill: the model is the job's without the kill, byte for byte (stall $(rows "$RESULTS/metrics.db" "select printf('%.2f', max(t2 - t1)) from (select t as t1, lead(t) over (order by step) as t2 from steps)") s)"
export TRAIN_LIMIT=${SLURM_TRAIN_LIMIT:-6000}

# Too few nodes for a node per server and workers: refused, saying why.
SHARDS=3 submit too-few FAILED --nodes=3
grep -q "SHARDS=3 puts each server process on its own node.*needs at least 4 nodes, this job has 3" \
    "$T/job-too-few/job-$job.out" || fail "too-few: the job's output does not say why (above)"
ok "too-few: SHARDS=3 on 3 nodes fails, saying it needs 4"
SHARDS=2 REPLICAS=1 submit too-few-standby FAILED --nodes=3
grep -q "SHARDS=2 REPLICAS=1 (a standby per shard) puts each server process on its own node.*needs at least 4 nodes, this job has 3" \
    "$T/job-too-few-standby/job-$job.out" || fail "too-few-standby: the job's output does not say why (above)"
ok "too-few-standby: SHARDS=2 REPLICAS=1 on 3 nodes fails, saying it needs 4"
done_testing
