#!/usr/bin/env bash
# The benchmark suite against rclone, lsyncd and magic-folder (see docs/benchmarks.md).
#
#   benches/run.sh [--quick] [SCENARIO...]     e.g. benches/run.sh 1 3    or    benches/run.sh --quick
#
# Installs what it needs by package name: the test servers (scripts/test-servers.sh: moto,
# nginx-extras, tahoe-lafs), rclone, lsyncd, rsync and GNU time from Debian, magic-folder
# 24.3.0 from PyPI (in a venv under ${PEERS_DIR:-~/.cache/dropslot-peers}, pinned by
# benches/magic-folder-constraints.txt). Then runs `cargo bench --bench peers`, which prints
# markdown tables; a copy goes to benches/results/<time>.md. The full run takes about an hour on
# 2 cores (most of it waiting for the peers); --quick is a smoke run of a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_DIR=${PEERS_DIR:-$HOME/.cache/dropslot-peers}
export PEERS_DIR

scripts/test-servers.sh
missing=()
for tool in rclone lsyncd rsync; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x "$PEERS_DIR/mf-venv/bin/magic-folder" ]; then
  python3 -m venv "$PEERS_DIR/mf-venv"
  "$PEERS_DIR/mf-venv/bin/pip" install -q -c benches/magic-folder-constraints.txt magic-folder==24.3.0
fi

mkdir -p benches/results
out=benches/results/$(date +%Y%m%d-%H%M%S).md
cargo bench --bench peers -- "$@" | tee "$out"
echo "results: $out"
