# netns.sh: separate "hosts" on this machine for the multi-host test and
# make bench-net (sourced after lib.sh). One network namespace per host,
# joined by veth pairs to a bridge in a namespace of its own, so the
# machine's own network is not touched; each host's link shaped with tc tbf
# (rate $RATE, default 1gbit, burst 1mb, latency 50ms). netns_up creates
# the server host 10.77.0.1 ($NS_SRV) and worker hosts 10.77.0.2.. (${NS_W[@]});
# everything is removed on exit.
RATE=${RATE:-1gbit}
tag=$$
NS_BR=psbr$tag NS_SRV=pssrv$tag
NS_W=(psw0$tag psw1$tag)
all_ns=("$NS_BR" "$NS_SRV" "${NS_W[@]}")
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
    local ns=$1 addr=$2
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "v$ns" type veth peer name eth0 netns "$ns"
    ip link set "v$ns" netns "$NS_BR"
    ip -n "$NS_BR" link set "v$ns" master br0 up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$RATE" burst 1mb latency 50ms
}
netns_up() {
    ip netns add "$NS_BR" || fail "cannot create network namespaces (ip netns add): needs root"
    ip -n "$NS_BR" link add br0 type bridge
    ip -n "$NS_BR" link set br0 up
    host "$NS_SRV" 10.77.0.1
    host "${NS_W[0]}" 10.77.0.2
    host "${NS_W[1]}" 10.77.0.3
}
