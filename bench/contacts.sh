#!/usr/bin/env bash
# Contact-sync benchmark: USERS users × CONTACTS contacts (default 2,000 × 50) plus a shared
# mailbox of SHARED contacts (default 5,000) in the simulated Graph with a latency per call
# (default 20 ms), the simulated 3CX, and the real `pbxgate sync contacts --once`. Prints the
# first sync and a no-change incremental run; results go to bench/results/.
#
#   bench/contacts.sh [USERS] [CONTACTS] [SHARED] [LATENCY_MS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin pbxgate --example bench_contacts
mkdir -p bench/results
out="bench/results/contacts-$(date -u +%Y%m%dT%H%M%SZ).txt"
./target/release/examples/bench_contacts "${1:-2000}" "${2:-50}" "${3:-5000}" "${4:-20}" \
    target/release/pbxgate | tee "$out"
