#!/usr/bin/env bash
# Idle WebSockets: N of them (default 10,000; each webclient holds one) through nginx and
# then through pbxgate (a session-checked route), both to the same upstream
# (examples/ws_upstream.rs, an echo), opened and held by examples/ws_hold.rs (one
# current-thread task, bare sockets, no per-socket buffers). Prints each proxy's RSS idle and
# with N open, the RSS per connection ((RSS with N - idle RSS) / N) and pbxgate/nginx.
# Target (issue 17): pbxgate <= 1.2x nginx at 10,000.
#
#   bench/ws.sh [N]
#
# Each proxy holds two descriptors per WebSocket (client and upstream side), so the script
# raises its descriptor limit (ulimit -n) to 65536 where it may (a hard limit that high, or
# CAP_SYS_RESOURCE), and otherwise measures as many as the hard limit allows and says so (the
# 2-core box of 2026-12-03: hard limit 20,000, not raisable even as root, so N = 9,800). Loopback ports 18090-18092; results go to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
PBXGATE=${PBXGATE:-./target/release/pbxgate}

hard_before=$(ulimit -Hn)
ulimit -n 65536 2>/dev/null || ulimit -n "$hard_before"
limit=$(ulimit -n)
[ "$limit" = unlimited ] && limit=1048576
asked=$N
if [ "$limit" -lt $((2 * N + 256)) ]; then
  # A proxy needs 2N descriptors and some for itself: measure as many as the box allows.
  N=$(((limit - 256) / 2 / 100 * 100))
  echo "descriptor limit $limit (hard limit $hard_before, not raisable here) is below 2N+256 for N=$asked: measuring N=$N" >&2
fi

command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "needs nginx" >&2; exit 1; }
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin pbxgate --example mint_session --example ws_upstream --example ws_hold
source bench/lib.sh

./target/release/examples/ws_upstream 127.0.0.1:18090 &
pids+=($!)
# nginx as the usual WebSocket reverse proxy (Upgrade and Connection passed on); either
# worker may get every connection, so each may hold all of them.
NGINX_WORKER_CONNECTIONS=$((2 * N + 256)) nginx_instance proxy 2 '
  map $http_upgrade $connection_upgrade { default upgrade; "" close; }
  server {
    listen 127.0.0.1:18091;
    location / {
      proxy_pass http://127.0.0.1:18090;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 1h;
    }
  }' "worker_rlimit_nofile $limit;"

write_pbxgate_config 18092 18090
# Every socket comes from 127.0.0.1 and is idle for the whole measurement.
sed -i "s/^\[server\]$/[server]\nmax_connections = $((N + 100))\nmax_connections_per_client = $((N + 100))\nidle_timeout = \"1h\"/" "$work/pbxgate.toml"
"$PBXGATE" serve --config "$work/pbxgate.toml" 2>"$work/pbxgate.log" &
gateway=$!
pids+=($gateway)
for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:18092/healthz >/dev/null 2>&1 && [ -f "$work/proxy/nginx.pid" ] && break
  sleep 0.1
done
COOKIE=$(./target/release/examples/mint_session "$work/pbxgate.toml")

# rss_kb PID...: their resident memory together, in KiB.
rss_kb() { for p in "$@"; do awk '$1 == "VmRSS:" { print $2 }' "/proc/$p/status"; done | awk '{ s += $1 } END { print s }'; }

# hold NAME PORT PATH [COOKIE] -> "NAME idle_kb open_kb per_conn_kb client_kb", with the
# proxy's processes in $procs.
hold() {
  local name=$1 port=$2 path=$3 cookie=${4:-} idle open client fifo="$work/$1.in"
  sleep 1
  idle=$(rss_kb $procs)
  mkfifo "$fifo"
  ./target/release/examples/ws_hold "127.0.0.1:$port" "$path" "$N" ${cookie:+"$cookie"} <"$fifo" >"$work/$name.out" &
  client=$!
  exec 3>"$fifo"
  for _ in $(seq 1 1200); do
    grep -q '^open' "$work/$name.out" 2>/dev/null && break
    kill -0 "$client" 2>/dev/null || { echo "$name: the client failed" >&2; exit 1; }
    sleep 0.1
  done
  sleep 2 # whatever the proxy does once a socket is open (buffers shrinking, timers)
  open=$(rss_kb $procs)
  local client_kb
  client_kb=$(rss_kb "$client")
  exec 3>&-
  wait "$client"
  awk -v n="$name" -v i="$idle" -v o="$open" -v N="$N" -v c="$client_kb" \
    'BEGIN { printf "%s %d %d %.2f %d\n", n, i, o, (o - i) / N, c }'
}

procs="$(cat "$work/proxy/nginx.pid") $(nginx_workers proxy)"
nginx_row=$(hold nginx 18091 /ws/webclient)
procs=$gateway
pbxgate_row=$(hold pbxgate 18092 /socket/bench "$COOKIE")

mkdir -p bench/results
out="bench/results/ws-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "$N idle WebSockets (asked: $asked), $(nproc) cores, loopback; descriptor limit $(ulimit -n) (hard limit before raising: $hard_before)"
  printf '%-8s %12s %12s %14s %12s\n' proxy idle_rss_MB open_rss_MB KB_per_conn client_rss_MB
  printf '%s\n%s\n' "$nginx_row" "$pbxgate_row" |
    awk '{ printf "%-8s %12.1f %12.1f %14.2f %12.1f\n", $1, $2 / 1024, $3 / 1024, $4, $5 / 1024 }'
  printf '%s\n%s\n' "$nginx_row" "$pbxgate_row" |
    awk '{ per[$1] = $4 } END { printf "pbxgate/nginx per connection: %.2fx (target <= 1.2x)\n", per["pbxgate"] / per["nginx"] }'
} | tee "$out"
