#!/usr/bin/env bash
# CPU time per proxied request (user + system, from /proc), for each proxy in front of the
# same upstream: a figure that other load on the machine disturbs far less than req/s, and
# that, unlike callgrind, counts the kernel's share (syscalls, wake-ups between threads).
#
#   bench/cpu.sh [SECONDS] [CONNECTIONS]      (defaults: 8, 32; release build)
#
# Env: TOKIO_WORKER_THREADS applies to pbxgate and bare_proxy as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
CONNS=${2:-32}
TICK=$(getconf CLK_TCK)
source bench/lib.sh
start_upstream 2 18100
start_nginx_proxy 2 18101 18100
write_pbxgate_config 18102 18100
./target/release/pbxgate serve --config "$work/pbxgate.toml" 2>"$work/pbxgate.log" &
pg=$!; pids+=($pg)
./target/release/examples/bare_proxy 127.0.0.1:18103 http://127.0.0.1:18100 &
bp=$!; pids+=($bp)
for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:18102/healthz >/dev/null 2>&1 && curl -fs http://127.0.0.1:18101/ >/dev/null 2>&1 && break
  sleep 0.1
done
COOKIE=$(./target/release/examples/mint_session "$work/pbxgate.toml")
sleep 1
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done; echo $t; }

# run NAME URL "PIDS" [HEADER]
run() {
  local name=$1 url=$2 procs=$3; shift 3
  wrk -t1 -c"$CONNS" -d1s "$@" "$url" >/dev/null
  # shellcheck disable=SC2086
  local before; before=$(ticks $procs)
  local n; n=$(wrk -t1 -c"$CONNS" -d"${SECS}s" "$@" "$url" | awk '/requests in/ { print $1 }')
  # shellcheck disable=SC2086
  local after; after=$(ticks $procs)
  awk -v name="$name" -v n="$n" -v t=$((after - before)) -v hz="$TICK" -v s="$SECS" \
    'BEGIN { printf "%-12s %8d req/s %7.1f us CPU/req\n", name, n / s, t / hz * 1e6 / n }'
}
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
# The proxies' own CPU (the upstream's is not counted); the upstream's alone for scale.
run upstream http://127.0.0.1:18100/provisioning/abc/x.cfg "$(nginx_workers upstream)"
run nginx http://127.0.0.1:18101/provisioning/abc/x.cfg "$(nginx_workers proxy)"
run bare-hyper http://127.0.0.1:18103/provisioning/abc/x.cfg "$bp"
run passthrough http://127.0.0.1:18102/provisioning/abc/x.cfg "$pg"
run session http://127.0.0.1:18102/webclient/api/x "$pg" -H "Cookie: $COOKIE"
