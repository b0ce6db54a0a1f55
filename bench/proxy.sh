#!/usr/bin/env bash
# Proxy throughput and latency: nginx as a plain reverse proxy (the baseline) against pbxgate
# on a passthrough route and on a session-checked route, all in front of the same upstream
# (an nginx instance of its own), measured with wrk in one invocation. Prints requests/s,
# p50/p99 and pbxgate/nginx ratios.
#
#   bench/proxy.sh [DURATION] [CONNECTIONS] [ROUNDS]      (defaults: 5s, 64, 3)
#
# Each round measures every target once, in turn, so that drift in what else the machine
# is doing touches them alike; the table gives per target the median over the rounds and
# the median of its per-round ratios to that round's nginx.
#
# A bare hyper forwarder (examples/bare_proxy.rs) is measured too: the floor of the
# hyper stack pbxgate is built on, to tell its own overhead from the stack's; once on
# tokio's multi-thread runtime and once thread-per-core (as pbxgate serves).
#
# Everything runs on loopback ports 18080-18084; results also go to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-5s}
CONNS=${2:-64}
ROUNDS=${3:-3}
THREADS=2

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet --bin pbxgate --example mint_session --example bare_proxy
source bench/lib.sh
start_upstream 2 18080
start_nginx_proxy 2 18081 18080

write_pbxgate_config 18082 18080
./target/release/pbxgate serve --config "$work/pbxgate.toml" 2>"$work/pbxgate.log" &
pids+=($!)
./target/release/examples/bare_proxy 127.0.0.1:18083 http://127.0.0.1:18080 &
pids+=($!)
BARE_PER_CORE=1 ./target/release/examples/bare_proxy 127.0.0.1:18084 http://127.0.0.1:18080 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:18082/healthz >/dev/null 2>&1 && curl -fs http://127.0.0.1:18080/ >/dev/null 2>&1 && break
  sleep 0.1
done
COOKIE=$(./target/release/examples/mint_session "$work/pbxgate.toml")
curl -fs -H "Cookie: $COOKIE" http://127.0.0.1:18082/webclient/ >/dev/null || { echo "session route failed" >&2; exit 1; }

# run NAME URL [HEADER] -> "rps p50_ms p99_ms"
run() {
  local name=$1 url=$2; shift 2
  wrk -t"$THREADS" -c"$CONNS" -d2s "$@" "$url" >/dev/null # warm-up
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" "$url" > "$work/$name.txt"
  awk -v name="$name" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    /Non-2xx/ { bad = $NF }
    END { if (bad > 0) { print "non-2xx answers in " name > "/dev/stderr"; exit 1 }; printf "%s %.0f %.3f %.3f\n", name, rps, p50, p99 }
  ' "$work/$name.txt"
}

results=$(
  for round in $(seq 1 "$ROUNDS"); do
    run nginx "http://127.0.0.1:18081/provisioning/abc/x.cfg"
    run bare-hyper "http://127.0.0.1:18083/provisioning/abc/x.cfg"
    run bare-percore "http://127.0.0.1:18084/provisioning/abc/x.cfg"
    run passthrough "http://127.0.0.1:18082/provisioning/abc/x.cfg"
    run session "http://127.0.0.1:18082/webclient/api/x" -H "Cookie: $COOKIE"
  done
)
mkdir -p bench/results
out="bench/results/proxy-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "wrk -t$THREADS -c$CONNS -d$DURATION x $ROUNDS rounds, $(nproc) cores, loopback, load $(cut -d' ' -f1-3 /proc/loadavg)"
  printf '%-12s %10s %9s %9s %10s %12s   %s\n' target req/s p50_ms p99_ms rps_ratio p99_delta_ms "ratio per round"
  echo "$results" | awk '
    function median(list,   a, n, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    $1 == "nginx" { base_rps = $2; base_p99 = $4 }
    !($1 in seen) { seen[$1] = 1; order[++targets] = $1 }
    {
      rps[$1] = rps[$1] " " $2; p50[$1] = p50[$1] " " $3; p99[$1] = p99[$1] " " $4
      ratio[$1] = ratio[$1] " " $2 / base_rps; delta[$1] = delta[$1] " " $4 - base_p99
      shown[$1] = shown[$1] sprintf(" %.2f", $2 / base_rps)
    }
    END {
      for (t = 1; t <= targets; t++) {
        k = order[t]
        printf "%-12s %10d %9.3f %9.3f %9.2fx %+12.3f  %s\n", k, median(rps[k]), median(p50[k]), median(p99[k]), median(ratio[k]), median(delta[k]), shown[k]
      }
    }'
} | tee "$out"
