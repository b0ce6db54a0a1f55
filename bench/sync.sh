#!/usr/bin/env bash
# Users-sync benchmark: N users (default 10,000) in the simulated Graph with a latency per
# call (default 20 ms), the simulated 3CX, and the real `pbxgate sync users --once`.
# Prints the first full sync and a no-change incremental run; results go to bench/results/.
#
#   bench/sync.sh [USERS] [LATENCY_MS]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin pbxgate --example bench_sync
mkdir -p bench/results
out="bench/results/sync-$(date -u +%Y%m%dT%H%M%SZ).txt"
./target/release/examples/bench_sync "${1:-10000}" "${2:-20}" target/release/pbxgate | tee "$out"
