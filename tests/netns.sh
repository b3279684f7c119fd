# netns.sh: separate "hosts" on this machine for the multi-host test, make
# bench-net, make bench-shards and make check-slurm (sourced after lib.sh).
# One network namespace per host, joined by veth pairs to a bridge in a
# namespace of its own, so the machine's own network is not touched; each
# host's link shaped with tc tbf (rate $RATE, default 1gbit; burst $BURST,
# default 1mb; latency 50ms), from the host to the bridge and, with
# BOTH_WAYS=1, also from the bridge to the host (a full-duplex link, so that
# many senders to one host share its link as on a switch port).
# netns_up [SERVERS [WORKERS]] (default 1 2) creates the server hosts
# 10.77.0.1.. (${NS_S[@]}; $NS_SRV is the first) and the worker hosts
# 10.77.0.101.. (${NS_W[@]}); everything is removed on exit.
RATE=${RATE:-1gbit} BURST=${BURST:-1mb} BOTH_WAYS=${BOTH_WAYS:-0}
tag=$$
NS_BR=psbr$tag NS_SRV=pssrv0$tag
NS_S=() NS_W=()
all_ns=("$NS_BR")
teardown() {
    local ns
    for ns in "${all_ns[@]}"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    cleanup
}
trap teardown EXIT

# host NAME ADDRESS: a namespace with eth0 = ADDRESS/24 on the bridge.
host() {
    local ns=$1 addr=$2 shape=(root tbf rate "$RATE" burst "$BURST" latency 50ms)
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "v$ns" type veth peer name eth0 netns "$ns"
    ip link set "v$ns" netns "$NS_BR"
    ip -n "$NS_BR" link set "v$ns" master br0 up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip netns exec "$ns" tc qdisc add dev eth0 "${shape[@]}" ||
        fail "tc refused 'tbf rate $RATE burst $BURST' on $ns (RATE or BURST wrong?)"
    if [ "$BOTH_WAYS" = 1 ]; then
        ip netns exec "$NS_BR" tc qdisc add dev "v$ns" "${shape[@]}" ||
            fail "tc refused 'tbf rate $RATE burst $BURST' on the bridge's side of $ns"
    fi
}
netns_up() {
    local servers=${1:-1} workers=${2:-2} i
    ((servers >= 1 && servers <= 99 && workers >= 0 && workers <= 99)) ||
        fail "netns_up: $servers server hosts and $workers worker hosts: each must be 1..99 (0..99 workers)"
    ip netns add "$NS_BR" || fail "cannot create network namespaces (ip netns add): needs root"
    ip -n "$NS_BR" link add br0 type bridge
    ip -n "$NS_BR" link set br0 up
    for ((i = 0; i < servers; i++)); do
        NS_S+=("pssrv$i$tag") && all_ns+=("pssrv$i$tag")
        host "pssrv$i$tag" "10.77.0.$((1 + i))"
    done
    for ((i = 0; i < workers; i++)); do
        NS_W+=("psw$i$tag") && all_ns+=("psw$i$tag")
        host "psw$i$tag" "10.77.0.$((101 + i))"
    done
}

# listening LOG PID WHAT: waits up to 30 s for the paramserver PID (WHAT, for
# messages) to log its endpoint in LOG; fails at once, with its log, if it
# exits first.
listening() {
    local log=$1 pid=$2 what=$3 end=$((SECONDS + 30))
    until [ -f "$log" ] && has_endpoint "$log"; do
        gone "$pid" && { cat "$log" >&2; fail "$what exited before it listened (its log above)"; }
        [ $SECONDS -lt $end ] || { cat "$log" >&2; fail "$what did not listen within 30 s (its log above)"; }
        sleep 0.1
    done
}
