#!/usr/bin/env bash
# test_report: psreport on a sample database (tests/make-sample-db.sh): each
# kind of figure is written as a PNG of the expected size whose pixels are
# not uniform and which carries the run's metadata as text chunks; bad input
# (missing database, unknown run, empty run) is refused with a message. The
# layout itself is tested in C (test_plot).
source "$(dirname "$0")/lib.sh"
R=$B/psreport
tests/make-sample-db.sh "$TMP/s.db"

# pnginfo FILE: "size WxH", "rows N" (distinct scanlines after filtering: a
# uniform image has at most a handful) and one "text KEY=VALUE" line per iTXt
# chunk; fails on a bad signature or CRC.
pnginfo() {
    python3 - "$1" <<'PY'
import struct, sys, zlib
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
i, idat, texts = 8, b"", []
while i < len(b):
    n, = struct.unpack(">I", b[i:i + 4]); t = b[i + 4:i + 8]; d = b[i + 8:i + 8 + n]
    assert struct.unpack(">I", b[i + 8 + n:i + 12 + n])[0] == zlib.crc32(t + d), "bad CRC"
    if t == b"IHDR": w, h = struct.unpack(">II", d[:8])
    if t == b"IDAT": idat += d
    if t == b"iTXt":
        k, rest = d.split(b"\0", 1)
        texts.append((k.decode(), rest[2:].split(b"\0", 2)[2].decode()))
    i += 12 + n
raw = zlib.decompress(idat); stride = 1 + 4 * w
print("size %dx%d" % (w, h))
print("rows %d" % len({raw[r * stride:(r + 1) * stride] for r in range(h)}))
for k, v in texts: print("text %s=%s" % (k, v))
PY
}

# check_png FILE SIZE: the size, pixels that are not uniform, and the text
# entries every figure carries.
check_png() {
    pnginfo "$1" >"$TMP/info" || fail "$1 is not a valid PNG"
    grep -qx "size $2" "$TMP/info" || fail "$1: $(grep size "$TMP/info"), expected $2"
    ok "$(basename "$1") is a $2 PNG"
    [ "$(sed -n 's/^rows //p' "$TMP/info")" -gt 100 ] || fail "$1 looks uniform: $(grep rows "$TMP/info")"
    ok "$(basename "$1") is not uniform ($(sed -n "s/^rows //p" "$TMP/info") distinct rows)"
    grep -q "^text Software=psreport .* (paramserver)$" "$TMP/info" || fail "$1: no Software text"
    grep -qx "text Source=$TMP/s.db" "$TMP/info" || fail "$1: no Source text"
    ok "$(basename "$1") names the program, its version and the database"
}
has_text() {   # has_text KEY=VALUE
    grep -qxF "text $1" "$TMP/info" || { cat "$TMP/info" >&2; fail "no text chunk '$1'"; }
    ok "text chunk $1"
}

expect_exit 0 "--help works" -- $R --help
expect_exit 0 "a basic run renders" -- $R --db "$TMP/s.db" --run 1 --out "$TMP/basic.png"
check_png "$TMP/basic.png" 1500x520
has_text "run id=1"
has_text "mode=basic"
has_text "workers=1"
has_text "hyperparameters=epochs=5 batch_size=64 lr=0.01 momentum=0.9 seed=42 threads=2 train_limit=0"
has_text "final accuracy=99.15%"

expect_exit 0 "a distributed run renders" -- $R --db "$TMP/s.db" --run 4 --out "$TMP/dist.png"
check_png "$TMP/dist.png" 1650x520
has_text "run id=4"
has_text "mode=ssp"
has_text "workers=4"
has_text "hyperparameters=epochs=3 batch_size=64 lr=0.01 momentum=0.9 seed=42 threads=2 train_limit=0 staleness=3"

expect_exit 0 "the comparison renders" -- $R --db "$TMP/s.db" --comparison --out "$TMP/cmp.png"
check_png "$TMP/cmp.png" 1500x540
has_text "runs=1 2 3 4"
has_text "run 2=mode=sync workers=2 epochs=5 batch_size=64 lr=0.01 momentum=0.9 seed=42 threads=2 train_limit=0 final_accuracy=99.11% status=done"

expect_exit 1 "a missing database is refused" -- $R --db "$TMP/none.db"
expect_output "none.db" "the message names the path"
expect_exit 1 "an unknown run is refused" -- $R --db "$TMP/s.db" --run 99
expect_output "run 99" "the message names the run"
expect_exit 1 "an empty run is refused" -- $R --db "$TMP/s.db" --run 5
done_testing
