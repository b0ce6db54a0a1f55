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
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
TICK=$(getconf CLK_TCK)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/body; proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fcgi; uwsgi_temp_path $work/uwsgi; scgi_temp_path $work/scgi;
  keepalive_requests 1000000;
  upstream pbx { server 127.0.0.1:18100; keepalive 256; }
  server {
    listen 127.0.0.1:18100;
    location / { default_type text/plain; return 200 "3CX says hello. 3CX says hello. 3CX says hello.\n"; }
  }
  server {
    listen 127.0.0.1:18101;
    location / {
      proxy_pass http://pbx;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$proxy_host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
NGINX
"$NGINX" -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
cat > "$work/pbxgate.toml" <<TOML
[server]
listen = "127.0.0.1:18102"
public_url = "http://localhost:18102"
[entra]
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "bench"
client_secret = "bench"
[pbx]
url = "http://127.0.0.1:18100"
client_id = "bench"
client_secret = "bench"
[store]
url = "sqlite://$work/pbxgate.db"
[log]
level = "warn"
TOML
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
nginx_proxy_workers() { # the worker processes serve both servers; count them all
  pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' '
}
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
# nginx's CPU includes the upstream's share (same workers); upstream alone measured first.
run upstream http://127.0.0.1:18100/provisioning/abc/x.cfg "$(nginx_proxy_workers)"
run nginx http://127.0.0.1:18101/provisioning/abc/x.cfg "$(nginx_proxy_workers)"
run bare-hyper http://127.0.0.1:18103/provisioning/abc/x.cfg "$bp"
run passthrough http://127.0.0.1:18102/provisioning/abc/x.cfg "$pg"
run session http://127.0.0.1:18102/webclient/api/x "$pg" -H "Cookie: $COOKIE"
echo "(nginx row: proxy + upstream; subtract the upstream row for the proxy alone)"
