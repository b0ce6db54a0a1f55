#!/usr/bin/env bash
# Proxy throughput and latency: nginx as a plain reverse proxy (the baseline) against pbxgate
# on a passthrough route and on a session-checked route, all in front of the same upstream
# (an nginx instance of its own), measured with wrk at several concurrencies. Prints per
# concurrency requests/s, p50/p99, each pbxgate target's ratio to nginx in the same round,
# how pbxgate's requests split over its serving runtimes (pbxgate_serving_requests_total),
# and pbxgate's RSS idle and at its peak (VmHWM, reached under the c256 run).
#
#   bench/proxy.sh [DURATION] [ROUNDS]          (defaults: 3s, 5)
#   CONNS="16 32 64 256"  concurrencies (wrk -c), each measured in turn
#   RUNS=1                whole runs; with several, says in how many the session-checked
#                         route held >= 0.85x nginx at every concurrency
#   BARE=1                also the bare hyper forwarder (examples/bare_proxy.rs), on
#                         tokio's multi-thread runtime and thread-per-core: the floor of
#                         the stack pbxgate is built on
#
# Per concurrency, each target is warmed up once (2 s), then measured in ROUNDS rounds of
# DURATION, every target once per round, the order rotated from round to round: on this
# 2-core VM a single 5 s measurement of the same target varies by up to ±15 % (other load,
# stolen time), and drift lasting seconds touches the targets of one short round alike.
# Each round's ratio is against that round's nginx; per target the table gives the median
# over the rounds of its requests/s, latencies and ratio.
#
# Everything runs on loopback ports 18080-18084; results also go to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-3s}
ROUNDS=${2:-5}
CONNS=${CONNS:-16 32 64 256}
RUNS=${RUNS:-1}
THREADS=2
PBXGATE=${PBXGATE:-./target/release/pbxgate}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin pbxgate --example mint_session --example bare_proxy
source bench/lib.sh
start_upstream 2 18080
start_nginx_proxy 2 18081 18080

write_pbxgate_config 18082 18080
"$PBXGATE" serve --config "$work/pbxgate.toml" 2>"$work/pbxgate.log" &
gateway=$!
pids+=($gateway)
if [ -n "${BARE:-}" ]; then
  ./target/release/examples/bare_proxy 127.0.0.1:18083 http://127.0.0.1:18080 &
  pids+=($!)
  BARE_PER_CORE=1 ./target/release/examples/bare_proxy 127.0.0.1:18084 http://127.0.0.1:18080 &
  pids+=($!)
fi
for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:18082/healthz >/dev/null 2>&1 && curl -fs http://127.0.0.1:18080/ >/dev/null 2>&1 && break
  sleep 0.1
done
COOKIE=$(./target/release/examples/mint_session "$work/pbxgate.toml")
curl -fs -H "Cookie: $COOKIE" http://127.0.0.1:18082/webclient/ >/dev/null || { echo "session route failed" >&2; exit 1; }
# status_kb FIELD: pbxgate's VmRSS or VmHWM, in KiB.
status_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$gateway/status"; }
rss_idle=$(status_kb VmRSS)

# served: pbxgate's requests per serving runtime so far ("0=N 1=M").
served() {
  curl -fs http://127.0.0.1:18082/metrics |
    sed -n 's/^pbxgate_serving_requests_total{runtime="\([0-9]*\)"} \([0-9]*\)$/\1=\2/p' | sort | tr '\n' ' '
}
# split BEFORE AFTER: each runtime's share of the requests in between ("52/48").
split() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    n = split(a, x, " "); split(b, y, " "); total = 0
    for (i = 1; i <= n; i++) { split(x[i], p, "="); split(y[i], q, "="); d[i] = q[2] - p[2]; total += d[i] }
    s = ""; for (i = 1; i <= n; i++) s = s (i > 1 ? "/" : "") sprintf("%.0f", total ? 100 * d[i] / total : 0)
    print s
  }'
}

# url NAME: the URL wrk asks of a target; args NAME: wrk's extra arguments for it.
url() {
  case $1 in
    nginx) echo "http://127.0.0.1:18081/provisioning/abc/x.cfg" ;;
    bare-hyper) echo "http://127.0.0.1:18083/provisioning/abc/x.cfg" ;;
    bare-percore) echo "http://127.0.0.1:18084/provisioning/abc/x.cfg" ;;
    passthrough) echo "http://127.0.0.1:18082/provisioning/abc/x.cfg" ;;
    session) echo "http://127.0.0.1:18082/webclient/api/x" ;;
  esac
}
wrk_for() {
  local name=$1; shift
  if [ "$name" = session ]; then wrk "$@" -H "Cookie: $COOKIE" "$(url "$name")"; else wrk "$@" "$(url "$name")"; fi
}

# run NAME CONNS ROUND -> "NAME CONNS ROUND rps p50_ms p99_ms split"
run() {
  local name=$1 conns=$2 round=$3 before
  before=$(served)
  wrk_for "$name" -t"$THREADS" -c"$conns" -d"$DURATION" --latency > "$work/$name.txt"
  local share=-
  case $name in passthrough | session) share=$(split "$before" "$(served)") ;; esac
  awk -v name="$name" -v conns="$conns" -v round="$round" -v share="$share" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    /Non-2xx/ { bad = $NF }
    END { if (bad > 0) { print "non-2xx answers in " name > "/dev/stderr"; exit 1 }; printf "%s %s %s %.0f %.3f %.3f %s\n", name, conns, round, rps, p50, p99, share }
  ' "$work/$name.txt"
}

# table RESULTS: per concurrency and target, medians over the rounds; each round's ratio is
# against the nginx of the same round.
table() {
  printf '%-5s %-12s %10s %9s %9s %10s %9s   %s\n' conns target req/s p50_ms p99_ms rps_ratio runtimes "ratio per round"
  echo "$1" | awk '
    function median(list,   a, n, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { k = $2 " " $1 }
    !(k in seen) { seen[k] = 1; order[++keys] = k }
    {
      rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $6; share[k] = $7
      by_round[$2, $1, $3] = $4; rounds[k] = rounds[k] " " $3
    }
    END {
      for (t = 1; t <= keys; t++) {
        k = order[t]; split(k, c, " "); ratios = ""; shown = ""
        n = split(rounds[k], r, " ")
        for (i = 1; i <= n; i++) {
          x = by_round[c[1], c[2], r[i]] / by_round[c[1], "nginx", r[i]]
          ratios = ratios " " x; shown = shown sprintf(" %.2f", x)
        }
        printf "%-5s %-12s %10d %9.3f %9.3f %9.2fx %9s  %s\n", c[1], c[2], median(rps[k]), median(p50[k]), median(p99[k]), median(ratios), share[k], shown
      }
    }'
}

mkdir -p bench/results
out="bench/results/proxy-$(date -u +%Y%m%dT%H%M%SZ).txt"
targets=(nginx passthrough session)
[ -z "${BARE:-}" ] || targets=(nginx bare-hyper bare-percore passthrough session)
held=0
for r in $(seq 1 "$RUNS"); do
  results=$(
    for conns in $CONNS; do
      for t in "${targets[@]}"; do wrk_for "$t" -t"$THREADS" -c"$conns" -d2s >/dev/null; done # warm-up
      for round in $(seq 1 "$ROUNDS"); do
        for i in $(seq 0 $((${#targets[@]} - 1))); do
          run "${targets[$(((round - 1 + i) % ${#targets[@]}))]}" "$conns" "$round"
        done
      done
    done
  )
  summary=$(table "$results")
  # The run holds when the session-checked route's median ratio is >= 0.85 at every concurrency.
  worst=$(echo "$summary" | awk '$2 == "session" { r = $6 + 0; if (min == "" || r < min) min = r } END { print min }')
  if awk -v w="$worst" 'BEGIN { exit !(w >= 0.85) }'; then held=$((held + 1)); fi
  {
    echo "run $r of $RUNS: wrk -t$THREADS -d$DURATION x $ROUNDS rounds (order rotated), $(nproc) cores, loopback, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$summary"
    echo "session-checked, lowest ratio to nginx over the concurrencies: ${worst}x"
  } | tee -a "$out"
done
{
  echo "session-checked >= 0.85x nginx at every concurrency in $held of $RUNS runs"
  echo "pbxgate RSS (absolute): idle $((rss_idle / 1024)) MB, peak under the proxy benchmark (VmHWM) $(($(status_kb VmHWM) / 1024)) MB"
} | tee -a "$out"
