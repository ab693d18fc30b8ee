#!/usr/bin/env bash
# Quick figures for the core pipeline on the local-directory remote (no peers; the full
# comparison suite is a separate piece of work). Prints:
#   1. burst: 5,000 files of 16 KiB in 50 directories moved into a running daemon's drop folder:
#      seconds until the last one is published (content verified by SHA-256);
#   2. restart: `run --once` over the same tree with nothing changed (scan against the ledger);
#   3. large file: a 1 GiB file uploaded by `run --once`, wall time and peak RSS;
#   4. idle: CPU used by the daemon over 10 s with nothing changing.
# Usage: benches/core.sh [path/to/dropslot]   (default: target/release/dropslot; build it first)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$here/target}/release/dropslot}
work=$(mktemp -d /tmp/dropslot-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; cp "$work/daemon.log" /tmp/last-bench-daemon.log 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
mkdir drop staging
cat > dropslot.toml <<TOML
[upload]
slots = 8
[metrics]
log_interval = "2s"
TOML

python3 - <<'PY'
import os
for d in range(50):
    os.makedirs(f"staging/d{d}")
    for i in range(100):
        with open(f"staging/d{d}/f{i}.bin", "wb") as f:
            f.write(os.urandom(16384))
PY

"$bin" run > daemon.log 2>&1 &
daemon=$!
until grep -q "scan finished" daemon.log; do sleep 0.05; done

sync  # the generated files' dirty pages are not the daemon's cost
start=$(date +%s.%N)
for d in staging/*; do mv "$d" drop/; done
python3 - "$start" <<'PY'
import hashlib, os, sys, time
start = float(sys.argv[1])
files = [os.path.join(r, f)[len("drop/"):] for r, _, fs in os.walk("drop") for f in fs]
pending = set(files)
while pending:
    pending = {p for p in pending if not os.path.exists("uploaded/" + p)}
    time.sleep(0.1)
took = time.time() - start
bad = sum(hashlib.sha256(open("drop/" + p, "rb").read()).digest() != hashlib.sha256(open("uploaded/" + p, "rb").read()).digest() for p in files)
print(f"burst: {len(files)} files of 16 KiB published in {took:.2f} s ({len(files)/took:.0f} files/s), content mismatches: {bad}")
PY

# Idle: nothing changes for 10 s.
t0=$(awk '{print $14+$15}' /proc/$daemon/stat)
sleep 10
t1=$(awk '{print $14+$15}' /proc/$daemon/stat)
echo "idle: $(( t1 - t0 )) clock ticks of CPU in 10 s ($(getconf CLK_TCK) ticks = 1 s)"
kill -TERM $daemon; wait $daemon || true

/usr/bin/time -f "%e %M" -o once.time "$bin" run --once > once.log 2>&1
read -r secs rss < once.time
echo "restart: run --once over 5,000 unchanged files: ${secs} s, peak RSS $((rss / 1024)) MiB, uploaded: $(grep -o 'uploaded_files=[0-9]*' once.log | tail -1)"

head -c 1073741824 /dev/urandom > drop/large.bin
/usr/bin/time -f "%e %M" -o large.time "$bin" run --once > large.log 2>&1
read -r secs rss < large.time
same=$(cmp -s drop/large.bin uploaded/large.bin && echo equal || echo DIFFERENT)
echo "large: 1 GiB file in ${secs} s, peak RSS $((rss / 1024)) MiB, content $same"
