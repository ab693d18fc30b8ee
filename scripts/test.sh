#!/usr/bin/env bash
# The test command (README, CI): installs the real servers the remote tests use (by package
# name; idempotent), then runs every test. The tests start and stop their own server processes
# on loopback, so nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-servers.sh
# Here a missing server is a failure, not a skip.
DROPSLOT_REQUIRE_SERVERS=1 cargo test --workspace --locked "$@"
