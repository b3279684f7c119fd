#!/usr/bin/env bash
# netns-probe: can this machine build the multi-host test's network (network
# namespaces, a veth pair, a bridge, a tbf qdisc)? Exit 0 if so. Leaves
# nothing behind. Used by .ci/run to decide whether to run make check-multihost.
set -u
t=psprobe$$
trap 'ip netns del ${t}a 2>/dev/null; ip netns del ${t}b 2>/dev/null' EXIT
ip netns add ${t}a && ip netns add ${t}b &&
    ip -n ${t}a link add br0 type bridge &&
    ip -n ${t}a link add v0 type veth peer name eth0 netns ${t}b &&
    ip -n ${t}a link set v0 master br0 &&
    ip netns exec ${t}b tc qdisc add dev eth0 root tbf rate 1gbit burst 1mb latency 50ms
