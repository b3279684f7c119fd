#!/usr/bin/env bash
# check-fresh.sh (make check-fresh): the README's two commands on a fresh
# Debian 12, first call each.
#
# Builds a minimal Debian 12 root with debootstrap (--variant=minbase, plus
# make, git and ca-certificates: what the README asks a user to have), from
# the mirror in this machine's apt sources, and caches it as a tarball in
# $CHECK_FRESH_CACHE (default /var/cache/paramserver-check-fresh), so later
# runs start in seconds. Copies in this machine's locally added CA
# certificates (/usr/local/share/ca-certificates: a proxy's CA, say) and its
# resolv.conf, so that the Debian archive and the npm registry are reached
# exactly as from this machine. Clones the project's committed HEAD inside
# and runs `make run`, then `make check`, as root, with a clean environment;
# any failure fails this check. A README command that needs a second call is
# a failure: each runs once.
#
# Everything inside runs in its own PID and mount namespaces: the mounts
# (proc, sys, dev) and every process started inside vanish when it ends,
# also on failure, timeout or Ctrl-C; then the root is deleted. Needs root.
# Environment: CHECK_FRESH_CACHE, CHECK_FRESH_TIMEOUT (seconds, default 1500),
# CHECK_FRESH_KEEP=1 keeps the root for a look after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
me=check-fresh
say() { printf '%s: [%s] %s\n' "$me" "$(date +%T)" "$*"; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts); run: sudo make check-fresh"
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
    say "note: uncommitted changes are not tested; this checks the committed HEAD $(git rev-parse --short HEAD)"

suite=bookworm
include=make,git,ca-certificates
cache=${CHECK_FRESH_CACHE:-/var/cache/paramserver-check-fresh}
limit=${CHECK_FRESH_TIMEOUT:-1500}
commands=("make run" "make check")

# The README must show exactly these commands (lines of its quick start).
for c in "${commands[@]}"; do
    grep -Eq "^$c( |$)" README.md || die "README.md has no line starting with '$c': update this script's commands"
done

# The Debian mirror this machine uses (deb822 sources or sources.list).
mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v s="$suite" '
            /^[ \t]*$/ { if (ok && uri) { print uri; exit } ok = 0; uri = ""; next }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
            END { if (ok && uri) print uri }' "$f"
    done
    [ -f /etc/apt/sources.list ] && awk -v s="$suite" '$1 == "deb" && $3 == s { print $2; exit }' /etc/apt/sources.list
    echo http://deb.debian.org/debian
}
url=$(mirror | sed -n 1p)

command -v debootstrap >/dev/null || {
    say "installing debootstrap"
    { DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends debootstrap ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends debootstrap; }
    } >/dev/null 2>&1 || die "cannot install debootstrap (apt-get install debootstrap)"
}
command -v unshare >/dev/null || die "unshare (util-linux) is missing"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/check-fresh.XXXXXX")
root=$work/root
log=$work/log
inner=
cleanup() {
    local rc=$?
    [ -n "$inner" ] && kill -KILL "$inner" 2>/dev/null && wait "$inner" 2>/dev/null
    # The mounts lived in the inner mount namespace, which is gone; refuse to
    # delete anything that is still a mount point.
    if grep -q " $root/" /proc/self/mounts; then
        echo "$me: error: mounts left under $root; not deleting it (umount -R $root)" >&2
    elif [ "${CHECK_FRESH_KEEP:-0}" = 1 ] && [ "$rc" != 0 ]; then
        echo "$me: the root is kept in $root (delete it with: rm -rf $work)" >&2
    else
        rm -rf --one-file-system "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "$me: interrupted" >&2; exit 130' INT TERM

mkdir -p "$root" "$cache"
tarball=$cache/$suite-minbase-${include//,/-}.tar.gz
if [ -f "$tarball" ]; then
    say "unpacking the cached Debian 12 root $tarball"
    tar -C "$root" -xzf "$tarball" || die "cannot unpack $tarball (delete it to build it again)"
else
    say "building a minimal Debian 12 root with debootstrap from $url (about a minute)"
    debootstrap --variant=minbase --include="$include" "$suite" "$root" "$url" >"$log" 2>&1 || {
        tail -n 20 "$log" >&2
        die "debootstrap from $url failed (see above)"
    }
    tar -C "$root" -czf "$tarball.tmp" . && mv -f "$tarball.tmp" "$tarball"
    say "cached it as $tarball"
fi

# What a user's machine has from its network: name resolution, and locally
# added CA certificates.
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
n=0
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] || continue
    cp "$crt" "$root/usr/local/share/ca-certificates/" && n=$((n + 1))
done
say "copied $n local CA certificate(s) from /usr/local/share/ca-certificates"

git bundle create "$root/root/project.bundle" HEAD >/dev/null 2>&1 || die "git bundle of HEAD failed"

# Runs inside the new namespaces: mounts, then chroot.
cat >"$root/root/inside.sh" <<'EOS'
set -e
mount -t proc proc "$ROOT/proc"
mount -t sysfs sys "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
exec chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb CI=true LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -s <<'EOC'
set -e
update-ca-certificates >/dev/null
cd /root
git clone -q project.bundle paramserver
cd paramserver
echo "check-fresh: inside: cloned $(git log -1 --format='%h %s')"
for c in "make run" "make check"; do
    echo "check-fresh: inside: [$(date +%T)] running '$c'"
    start=$SECONDS
    if ! $c; then
        echo "check-fresh: inside: '$c' FAILED on its first call"
        exit 1
    fi
    echo "check-fresh: inside: '$c' passed on its first call in $((SECONDS - start)) s"
done
EOC
EOS

say "running 'make run', then 'make check' inside, first call each (full log: $log)"
start=$SECONDS
: >"$log"
set +e
ROOT=$root timeout --kill-after=10 "$limit" \
    unshare --pid --fork --kill-child --mount --propagation private bash "$root/root/inside.sh" >"$log" 2>&1 &
inner=$!
tail -n +1 -f "$log" --pid="$inner" | grep --line-buffered -E '^check-fresh: inside:|^summary: [0-9]+ test|^== FAIL|^FAIL:|^make: \*\*\*' &
wait "$inner"
rc=$?
inner=
set -e
sleep 0.2
if [ "$rc" != 0 ]; then
    echo "---- last 40 lines of the log ----" >&2
    tail -n 40 "$log" >&2
    cp "$log" "$cache/last-failure.log" 2>/dev/null && echo "(whole log: $cache/last-failure.log)" >&2
    [ "$rc" = 124 ] && die "timed out after $limit s"
    die "a README command failed on a fresh Debian 12 (exit $rc)"
fi
say "passed: 'make run' and 'make check' each worked on its first call on a fresh Debian 12 ($((SECONDS - start)) s)"
