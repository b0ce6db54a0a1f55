#!/usr/bin/env bash
# Presence benchmark: N users (default 10,000) in the simulated Graph with a latency per call
# (default 20 ms), synced to the simulated 3CX by the real binary; then one presence tick
# while a tenth of them are in a meeting, a tick with nothing changed, and `pbxgate serve`
# measuring the delay from a meeting's start to the 3CX status write. Results go to
# bench/results/.
#
#   bench/presence.sh [USERS] [LATENCY_MS]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin pbxgate --example bench_presence
mkdir -p bench/results
out="bench/results/presence-$(date -u +%Y%m%dT%H%M%SZ).txt"
./target/release/examples/bench_presence "${1:-10000}" "${2:-20}" target/release/pbxgate | tee "$out"
