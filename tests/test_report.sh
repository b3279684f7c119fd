#!/usr/bin/env bash
# test_report: psreport on a sample database (tests/make-sample-db.sh): each
# kind of figure is written as a PNG of the expected size, and bad input
# (missing database, unknown run, empty run) is refused with a message.
source "$(dirname "$0")/lib.sh"
R=$B/psreport
tests/make-sample-db.sh "$TMP/s.db"

png_size() { python3 -c 'import struct,sys; b=open(sys.argv[1],"rb").read(24); assert b[:8]==b"\x89PNG\r\n\x1a\n"; print("%dx%d" % struct.unpack(">II", b[16:24]))' "$1"; }

expect_exit 0 "--help works" -- $R --help
expect_exit 0 "a basic run renders" -- $R --db "$TMP/s.db" --run 1 --out "$TMP/basic.png"
[ "$(png_size "$TMP/basic.png")" = 1500x520 ] || fail "basic figure size $(png_size "$TMP/basic.png")"
ok "the basic figure is a 1500x520 PNG"
expect_exit 0 "a distributed run renders" -- $R --db "$TMP/s.db" --run 3 --out "$TMP/dist.png"
png_size "$TMP/dist.png" >/dev/null || fail "distributed figure is not a PNG"
ok "the distributed figure is a PNG"
expect_exit 0 "the comparison renders" -- $R --db "$TMP/s.db" --comparison --out "$TMP/cmp.png"
png_size "$TMP/cmp.png" >/dev/null || fail "comparison figure is not a PNG"
ok "the comparison figure is a PNG"
expect_exit 1 "a missing database is refused" -- $R --db "$TMP/none.db"
expect_output "none.db" "the message names the path"
expect_exit 1 "an unknown run is refused" -- $R --db "$TMP/s.db" --run 99
expect_output "run 99" "the message names the run"
expect_exit 1 "an empty run is refused" -- $R --db "$TMP/s.db" --run 5
done_testing
