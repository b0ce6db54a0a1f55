#!/usr/bin/env bash
# Instructions per proxied request, under callgrind: repeatable even on a busy machine, so
# it decides per-change comparisons where wall-clock wrk numbers are noise.
#
#   bench/callgrind.sh [SECONDS]       (default 20; needs valgrind, nginx, wrk; release build)
#
# The upstream is nginx answering from memory (as in bench/proxy.sh). Each target runs under
# callgrind with collection off during start-up and one warm-up request; then wrk -t1 -c8
# drives it for SECONDS and the instructions collected are divided by the requests wrk saw
# completed. Targets: nginx as the same plain reverse proxy as in bench/proxy.sh (one
# process: master_process off), bare hyper (examples/bare_proxy), pbxgate passthrough,
# pbxgate with a valid session; each with its ratio to nginx's count.
#
# Callgrind counts user-space instructions only: the kernel's share (the same syscalls for
# every target here) is in bench/cpu.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
source bench/lib.sh
start_upstream 1 18090

write_pbxgate_config 18092 18090

wait_up() { for _ in $(seq 1 600); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "$1 not up" >&2; exit 1; }

# measure NAME URL [HEADER]: the target already runs under callgrind as $target_pid.
measure() {
  local name=$1 url=$2; shift 2
  curl -fs "$@" "$url" >/dev/null
  callgrind_control -i on "$target_pid" >/dev/null
  local n
  n=$(wrk -t1 -c8 -d"${SECS}s" --timeout 10s "$@" "$url" | awk '/requests in/ { print $1 }')
  callgrind_control -i off "$target_pid" >/dev/null
  callgrind_control -d "$target_pid" >/dev/null
  kill -TERM "$target_pid"; wait "$target_pid" 2>/dev/null || true
  local ir
  ir=$(cat "$work"/cg."$name".out* | awk '/^totals:/ { s += $2 } END { print s }')
  local per
  per=$(echo "$ir / $n" | bc -l)
  [ "$name" = nginx ] && nginx_per=$per
  printf '%-12s %9d req %12d Ir %8.0f Ir/req %6.2fx nginx\n' "$name" "$n" "$ir" "$per" \
    "$(echo "$per / $nginx_per" | bc -l)"
}

run_cg() { # NAME CMD...
  local name=$1; shift
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.$name.out" "$@" \
    2>"$work/$name.vg.log" &
  target_pid=$!
}

nginx_conf cgproxy 1 "$(nginx_proxy_servers 18091 18090)" "master_process off;"
run_cg nginx "$NGINX" -c "$work/cgproxy/nginx.conf" -g 'daemon off;'
wait_up http://127.0.0.1:18091/provisioning/abc/x.cfg
measure nginx http://127.0.0.1:18091/provisioning/abc/x.cfg

run_cg bare ./target/release/examples/bare_proxy 127.0.0.1:18093 http://127.0.0.1:18090
wait_up http://127.0.0.1:18093/provisioning/abc/x.cfg
measure bare http://127.0.0.1:18093/provisioning/abc/x.cfg

COOKIE=""
for name in passthrough session; do
  run_cg "$name" ./target/release/pbxgate serve --config "$work/pbxgate.toml"
  wait_up http://127.0.0.1:18092/healthz
  if [ -z "$COOKIE" ]; then
    COOKIE=$(./target/release/examples/mint_session "$work/pbxgate.toml")
  fi
  if [ "$name" = passthrough ]; then
    measure passthrough http://127.0.0.1:18092/provisioning/abc/x.cfg
  else
    measure session http://127.0.0.1:18092/webclient/api/x -H "Cookie: $COOKIE"
  fi
done
