#!/usr/bin/env bash
# test_install: make install into a fresh PREFIX puts the programs, docs,
# systemd units, example settings, the Slurm script and MNIST where they are
# expected, the units pass `systemd-analyze verify` against the installed
# binaries, and make uninstall removes them again.
source "$(dirname "$0")/lib.sh"
P=$TMP/prefix
expect_exit 0 "make install PREFIX=$P" -- make --no-print-directory install PREFIX="$P" B="$B"
for f in bin/paramserver bin/worker bin/psreport share/doc/paramserver/README.md \
         lib/systemd/system/paramserver.service lib/systemd/system/worker@.service \
         lib/systemd/system/paramserver-shard@.service share/paramserver/paramserver-shard.env \
         share/paramserver/paramserver.env share/paramserver/worker.env \
         share/paramserver/paramserver.sbatch share/paramserver/data/train-images-idx3-ubyte; do
    [ -e "$P/$f" ] || fail "$P/$f is missing"
done
ok "everything is installed"
for u in paramserver.service paramserver-shard@.service; do
    grep -q "$P/bin/paramserver" "$P/lib/systemd/system/$u" || fail "$u: not rewritten for PREFIX"
done
ok "the units point at PREFIX's binaries"
if command -v systemd-analyze >/dev/null; then
    expect_exit 0 "systemd-analyze verify accepts the units" -- \
        systemd-analyze verify "$P/lib/systemd/system/paramserver.service" "$P/lib/systemd/system/worker@.service" \
        "$P/lib/systemd/system/paramserver-shard@.service"
    [ ! -s "$TMP/cmd.log" ] || { cat "$TMP/cmd.log"; fail "systemd-analyze verify printed warnings"; }
    ok "with no warnings"
else
    echo "skip - systemd-analyze is not installed"
fi
bash -n "$P/share/paramserver/paramserver.sbatch" || fail "the Slurm script does not parse"
ok "the Slurm script parses"
expect_exit 0 "make uninstall" -- make --no-print-directory uninstall PREFIX="$P" B="$B"
[ -z "$(find "$P" -type f)" ] || fail "left behind: $(find "$P" -type f)"
ok "make uninstall removes every file"
done_testing
